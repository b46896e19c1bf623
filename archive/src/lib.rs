//! Starcite archive adapters: the cold tier of the event log.
//!
//! Committed events are copied here by the group leader's archiver and read back when a reader asks for
//! seqs that the hot store has already evicted. One adapter is active per cluster, chosen by
//! `STARCITE_ARCHIVE_ADAPTER`:
//!
//! | adapter | storage | module |
//! | --- | --- | --- |
//! | `local` | NDJSON chunk files under a directory | [`local`] |
//! | `s3` | the same chunks as S3 objects, written with conditional PUTs | [`s3`] |
//! | `postgres` | the `events` and `sessions` tables | [`postgres`] |
//!
//! The layout, the idempotency rules and the schema are those of the archive contract
//! (`contract/archive.md` §3–§5 and §7); [`format`] holds the parts that `local` and `s3` share.
//!
//! # Blocking API
//!
//! Every adapter method blocks on disk or network IO (up to the adapter's own timeouts). The engine runs
//! adapters on dedicated threads and talks to them through a channel; they must never be called on an
//! async executor (the `postgres` client drives its own small runtime, which cannot run inside another).

pub mod error;
pub mod format;
pub mod local;
pub mod postgres;
pub mod s3;

use bytes::Bytes;

pub use error::ArchiveError;
pub use local::LocalAdapter;
pub use postgres::{PostgresAdapter, PostgresConfig};
pub use s3::{S3Adapter, S3Config, S3Credentials};

/// One committed event as the archive stores and returns it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ArchivedEvent {
    /// The event's position in its session, starting at 1.
    pub seq: u64,
    /// The event frame of `contract/tail.md` §3 as compact JSON on one line, without `session_id`.
    ///
    /// On write this must be the frame exactly as the tail sends it (its `seq` equal to [`Self::seq`],
    /// `inserted_at` in the written form `YYYY-MM-DDTHH:MM:SS.ffffffZ`). On read it is re-rendered: keys
    /// in the frame's order, `inserted_at` in the written form. The `local` and `s3` adapters return
    /// the nested values (`payload`, `metadata`, `refs`) byte for byte as written; `postgres` returns them
    /// equal as JSON values (object key order may differ, numbers keep every digit).
    pub json: Bytes,
}

/// The catalog copy of a session (`contract/archive.md` §1 `put_session`).
#[derive(Clone, Debug, PartialEq)]
pub struct SessionCatalog {
    /// The session id.
    pub id: String,
    /// The session title, `None` when the session has none.
    pub title: Option<String>,
    /// `{"tenant_id","id","type"}` of the creator, `None` when the session has none.
    pub creator_principal: Option<serde_json::Value>,
    /// The session metadata object.
    pub metadata: serde_json::Map<String, serde_json::Value>,
    /// The create command's stamp in the written form `YYYY-MM-DDTHH:MM:SS.ffffffZ`.
    pub created_at: String,
}

/// One cold-storage backend (`contract/archive.md` §1).
///
/// Implementations are shared between threads and every method blocks; see the crate documentation.
pub trait ArchiveAdapter: Send + Sync {
    /// The adapter's name as in `STARCITE_ARCHIVE_ADAPTER` and the `adapter` metric label:
    /// `local`, `s3` or `postgres`.
    fn name(&self) -> &'static str;

    /// Stores `events` of one session (strictly ascending seqs) and returns how many seqs were newly
    /// stored.
    ///
    /// Idempotent on `(session_id, seq)`: a seq that is already stored keeps its stored event and is not
    /// counted. An error means nothing may be assumed stored; retrying the same events is always safe.
    fn write_events(&self, session_id: &str, events: &[ArchivedEvent])
        -> Result<u64, ArchiveError>;

    /// Returns the stored events of `[from_seq, to_seq]` in ascending seq order; missing seqs are
    /// simply absent. Any transport failure or invalid stored data is an error.
    fn read_events(
        &self,
        session_id: &str,
        from_seq: u64,
        to_seq: u64,
    ) -> Result<Vec<ArchivedEvent>, ArchiveError>;

    /// Stores the catalog copy of a session if none is stored yet (the first write wins; writing a
    /// second, different record for the same id succeeds and changes nothing). This is the contract's
    /// `put_session`.
    fn write_catalog(&self, session: &SessionCatalog) -> Result<(), ArchiveError>;
}
