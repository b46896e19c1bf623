//! Helpers for testing storage implementations against the contract of
//! [`crate::Storage`] and [`crate::LogStore`].

mod conformance;

pub use conformance::run_conformance;
