//! A deterministic simulator for the multi-Raft core: a seeded PRNG drives a faulty network,
//! crashing nodes with an asynchronous disk, clients, and an incremental safety checker.

#![allow(dead_code)]

pub mod checker;
pub mod cluster;
pub mod network;
pub mod node;
pub mod prng;
pub mod runner;
pub mod trace;
