//! The one error type of the archive adapters.

use std::path::PathBuf;

/// Why an archive operation failed. Every variant names the operation and what to look at.
#[derive(Debug, thiserror::Error)]
pub enum ArchiveError {
    /// The adapter's configuration is unusable (for example a malformed S3 endpoint).
    #[error("invalid archive configuration: {message}")]
    Config { message: String },

    /// A local file system operation failed.
    #[error("failed to {operation} {path}: {source}")]
    Io {
        operation: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    /// The caller passed an event that cannot be archived (the archive stores only well-formed frames
    /// in ascending seq order).
    #[error("cannot archive event seq {seq}: {reason}")]
    InvalidEvent { seq: u64, reason: String },

    /// The caller passed a catalog record that cannot be stored.
    #[error("cannot archive catalog record of session {session_id:?}: {reason}")]
    InvalidCatalog { session_id: String, reason: String },

    /// Stored data is not a valid archive line or chunk (`contract/archive.md` §3 "Line validity").
    #[error("invalid archived data at {location} line {line_number}: {reason}")]
    InvalidLine {
        /// The file path, object key or table row the line came from.
        location: String,
        /// 1-based line number inside the chunk (the seq for rows of a table).
        line_number: u64,
        reason: String,
    },

    /// A read range covers more chunks than one read may fetch.
    #[error(
        "read range {from_seq}..={to_seq} covers {chunk_count} chunks, more than the maximum of {chunk_count_max} per read"
    )]
    RangeTooLarge {
        from_seq: u64,
        to_seq: u64,
        chunk_count: u64,
        chunk_count_max: u64,
    },

    /// No TCP connection to the storage service could be opened.
    #[error("failed to connect to {endpoint}: {source}")]
    Connect {
        endpoint: String,
        #[source]
        source: std::io::Error,
    },

    /// Sending a request or receiving its response failed (including TLS failures).
    #[error("{operation} failed: {source}")]
    Transport {
        operation: String,
        #[source]
        source: std::io::Error,
    },

    /// A request did not complete within its time limit.
    #[error("{operation} timed out after {timeout_ms} ms")]
    Timeout { operation: String, timeout_ms: u64 },

    /// The server's response could not be understood or exceeded a size bound.
    #[error("invalid response to {operation}: {reason}")]
    InvalidResponse { operation: String, reason: String },

    /// The request could not be signed (SigV4).
    #[error("failed to sign {operation}: {message}")]
    Signature { operation: String, message: String },

    /// The storage service rejected the credentials or the signature: check the access key id, secret
    /// access key and session token.
    #[error(
        "{operation} was rejected by the storage service: HTTP {status} {code}: {message} (check the S3 access key id, secret access key and session token)"
    )]
    Authentication {
        operation: String,
        status: u16,
        code: String,
        message: String,
    },

    /// The storage service answered with an unexpected HTTP status.
    #[error("{operation} failed: HTTP {status} {code}: {message}")]
    Http {
        operation: String,
        status: u16,
        /// The S3 error code (`NoSuchBucket`, …), empty when the response carried none.
        code: String,
        message: String,
    },

    /// A conditional write kept conflicting with concurrent writers until the retries ran out.
    #[error(
        "{operation} still conflicted with a concurrent writer after {attempt_count} attempts"
    )]
    WriteConflict {
        operation: String,
        attempt_count: u32,
    },

    /// A Postgres operation failed.
    #[error("failed to {operation}: {source}")]
    Postgres {
        operation: &'static str,
        #[source]
        source: ::postgres::Error,
    },

    /// Every pooled Postgres connection stayed busy for the whole checkout timeout.
    #[error("no Postgres connection became free within {waited_ms} ms (pool size {pool_size})")]
    PoolTimeout { waited_ms: u64, pool_size: u32 },
}
