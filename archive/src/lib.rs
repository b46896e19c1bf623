//! Starcite archive adapters (local, S3, Postgres).
