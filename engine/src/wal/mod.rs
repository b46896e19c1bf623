//! The write-ahead log of one shard, shared by all Raft groups that live on that shard.
//!
//! # Shape
//! - A directory (`<raft_data_dir>/shard-<n>/`) of append-only **segment files**
//!   `<sequence:020>.wal`, each preallocated by writing zeros so that batch writes overwrite
//!   allocated blocks instead of extending the file (ext4 serialises extending direct writes).
//!   The next segment is prepared in the background while the current one fills.
//! - **Records** ([`WalRecord`]) are framed with a length and a crc32c; the byte layout is in
//!   `docs/format.md`, section "Write-ahead log".
//! - **Group commit**: [`Wal::append`] only buffers. A flusher task on the same executor takes
//!   everything buffered while the previous write was running, writes it as ONE aligned direct
//!   write (re-writing the partially filled last 4 KiB block) and calls ONE fdatasync. Waiters
//!   of [`Wal::sync`] resolve only after that fdatasync returned OK.
//! - **Fail-stop**: a failed write or fdatasync poisons the log. Every later `append` and `sync`
//!   returns [`WalError::Failed`], [`Wal::failure`] describes the failure (path and OS error
//!   text) so that readiness can report `storage_failed`. An fdatasync is never retried: after a
//!   failure the kernel may have dropped the dirty pages, so a retry could "succeed" on lost data.
//! - **Recovery** at [`Wal::open`]: every record of every segment is verified in order and
//!   handed to the caller; the log ends at the first torn or corrupt record of the last written
//!   segment. Corruption followed by later valid data (in a later segment) refuses to start with
//!   [`WalError::Corrupt`], because a sealed segment is fully synced before the next one is
//!   written, so damage there is not a torn write but lost acknowledged data.
//!
//! # Log sequence numbers
//! An [`Lsn`] is a logical byte position: the number of record-frame bytes appended to this
//! shard's log since it was created. Segment headers and the zero padding at the end of a full
//! segment do not count, so LSNs are continuous across segments and every segment header stores
//! the LSN of its first record. A record is identified by its *end* LSN (what [`Wal::append`]
//! returns); LSN 0 is the empty log. Byte `lsn` of segment `s` lives at file offset
//! `SEGMENT_HEADER_BYTES + (lsn - s.first_lsn)`.
//!
//! # Reading back
//! Sealed segments never change, and their `(sequence, first_lsn, end_lsn)` are known
//! ([`Wal::segments`]), so a range of records can be read by mapping the covering segments
//! (memmap2) and decoding frames from an LSN the caller remembered (the Raft log store keeps
//! `index → end LSN` per group from the `lsn` argument of [`Wal::open_with_lsns`] and from
//! [`Wal::append`]). [`Wal::read_records`] implements the simple form of this.
//!
//! # Threading
//! [`Wal`] is `!Send`: it lives on one glommio executor. Clones share the same log. When the
//! last clone is dropped the flusher writes what is buffered and stops; call [`Wal::close`] to
//! wait for that and see its result.

mod record;
mod recovery;
mod segment;
#[cfg(test)]
mod tests;
mod writer;

use std::fmt;
use std::path::{Path, PathBuf};
use std::rc::Rc;

pub use record::{
    decode_frame, encode_record, frame_bytes, FrameDecode, ENTRY_PAYLOAD_BYTES_MAX,
    FRAME_HEADER_BYTES, RECORD_BYTES_MAX,
};
pub use segment::{segment_infos, SegmentInfo, SEGMENT_HEADER_BYTES};

/// A log sequence number: a logical byte position in the shard's log (see the module doc).
pub type Lsn = u64;

/// Default size of one segment file: 64 MiB.
pub const SEGMENT_BYTES_MAX_DEFAULT: u64 = 64 << 20;
/// Smallest accepted `segment_bytes_max` (small segments are useful in tests).
pub const SEGMENT_BYTES_MAX_MIN: u64 = 64 << 10;
/// Largest accepted `segment_bytes_max`.
pub const SEGMENT_BYTES_MAX_MAX: u64 = 1 << 30;
/// Default bound on bytes appended but not yet durable: 16 MiB.
pub const PENDING_BYTES_MAX_DEFAULT: u64 = 16 << 20;
/// Direct IO granularity. Every write starts and ends on this boundary.
pub const BLOCK_BYTES: u64 = 4096;

const _: () = assert!(SEGMENT_BYTES_MAX_MIN.is_multiple_of(BLOCK_BYTES));
const _: () = assert!(SEGMENT_BYTES_MAX_DEFAULT.is_multiple_of(BLOCK_BYTES));
const _: () = assert!(PENDING_BYTES_MAX_DEFAULT >= RECORD_BYTES_MAX);

/// How the log is opened.
#[derive(Clone, Debug)]
pub struct WalOptions {
    /// Directory of this shard's segments (created if missing).
    pub dir: PathBuf,
    /// Size of a new segment file; rounded up to [`BLOCK_BYTES`]. Between
    /// [`SEGMENT_BYTES_MAX_MIN`] and [`SEGMENT_BYTES_MAX_MAX`].
    pub segment_bytes_max: u64,
    /// Bound on bytes appended but not yet durable; [`Wal::append`] returns
    /// [`WalError::Full`] beyond it. At least [`RECORD_BYTES_MAX`].
    pub pending_bytes_max: u64,
    /// Injected failures, for tests of the fail-stop path.
    pub fault: Option<FaultPlan>,
}

impl WalOptions {
    /// Options with the defaults for `dir`.
    pub fn new(dir: PathBuf) -> Self {
        Self {
            dir,
            segment_bytes_max: SEGMENT_BYTES_MAX_DEFAULT,
            pending_bytes_max: PENDING_BYTES_MAX_DEFAULT,
            fault: None,
        }
    }

    fn validate(&self) -> Result<(), WalError> {
        if !(SEGMENT_BYTES_MAX_MIN..=SEGMENT_BYTES_MAX_MAX).contains(&self.segment_bytes_max) {
            return Err(WalError::InvalidOptions(format!(
                "segment_bytes_max {} outside {SEGMENT_BYTES_MAX_MIN}..={SEGMENT_BYTES_MAX_MAX}",
                self.segment_bytes_max
            )));
        }
        if self.pending_bytes_max < RECORD_BYTES_MAX {
            return Err(WalError::InvalidOptions(format!(
                "pending_bytes_max {} below RECORD_BYTES_MAX {RECORD_BYTES_MAX}",
                self.pending_bytes_max
            )));
        }
        Ok(())
    }

    /// The size a new segment file gets.
    fn segment_file_bytes(&self) -> u64 {
        self.segment_bytes_max.div_ceil(BLOCK_BYTES) * BLOCK_BYTES
    }
}

/// Failures to inject, counted from 1 over the batch writes / fdatasyncs of one [`Wal`]
/// (segment preparation is not counted). The operation fails with an injected OS error
/// instead of being issued, and the log poisons itself exactly as for a real failure.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FaultPlan {
    /// Fail the n-th batch fdatasync.
    pub fail_fdatasync_number: Option<u64>,
    /// Fail the n-th batch write.
    pub fail_write_number: Option<u64>,
}

impl FaultPlan {
    /// Fail the `n`-th fdatasync (1-based).
    pub fn fail_fdatasync(n: u64) -> Self {
        Self {
            fail_fdatasync_number: Some(n),
            fail_write_number: None,
        }
    }
}

/// One record of the log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum WalRecord {
    /// A Raft log entry of `group` (single-node mode is a group with one voter).
    Entry {
        /// Raft group id.
        group: u32,
        /// Term of the entry.
        term: u64,
        /// Raft log index of the entry.
        index: u64,
        /// The entry's command bytes (opaque here).
        payload: bytes::Bytes,
    },
    /// The persistent Raft state of `group`.
    HardState {
        /// Raft group id.
        group: u32,
        /// Current term.
        term: u64,
        /// Node voted for in `term` (0 = none).
        vote: u64,
        /// Highest index known committed.
        commit: u64,
    },
    /// `group` installed a snapshot received from its leader, covering the log up to `index`
    /// (of `term`): every entry of the group written before this record is void. The snapshot's
    /// data lives in the group's snapshot file, written and synced before this record.
    SnapshotInstalled {
        /// Raft group id.
        group: u32,
        /// Last log index the snapshot covers.
        index: u64,
        /// Term of that entry.
        term: u64,
    },
}

/// What recovery found.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RecoveryReport {
    /// Records delivered to the callback.
    pub records: u64,
    /// Bytes after the valid end that were not delivered (torn or stale tail, including unused
    /// or torn later segments), counting up to the last non-zero byte.
    pub discarded_bytes: u64,
    /// Segment files holding the recovered log.
    pub segments: u32,
    /// End LSN of the last valid record (the log continues from here).
    pub last_lsn: Lsn,
}

/// A fatal storage failure that poisoned the log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StorageFailure {
    /// The file whose operation failed.
    pub path: PathBuf,
    /// The operation and the OS error text, e.g. `fdatasync: Input/output error (os error 5)`.
    pub error: String,
}

impl fmt::Display for StorageFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.path.display(), self.error)
    }
}

/// Errors of the write-ahead log.
#[derive(Debug, thiserror::Error)]
pub enum WalError {
    /// The log is poisoned by an earlier write or fdatasync failure. The node must stop
    /// accepting writes and report `storage_failed`; only a restart (with recovery) helps.
    #[error("write-ahead log failed: {0}")]
    Failed(StorageFailure),
    /// Too many bytes are buffered; await [`Wal::wait_for_space`] and retry.
    #[error("write-ahead log buffer full")]
    Full,
    /// The log was closed (or its last handle dropped).
    #[error("write-ahead log closed")]
    Closed,
    /// The record can never fit (bigger than a segment or [`RECORD_BYTES_MAX`]).
    #[error("record of {record_bytes} bytes exceeds the maximum of {record_bytes_max} bytes")]
    RecordTooLarge {
        /// Framed size of the rejected record.
        record_bytes: u64,
        /// Largest framed size accepted.
        record_bytes_max: u64,
    },
    /// An IO operation failed outside the batch path (open, recovery, preparation, release).
    #[error("{op} {path}: {source}")]
    Io {
        /// Present-tense operation, e.g. "open segment".
        op: &'static str,
        /// File or directory.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// Recovery found damage that is not a torn tail; the node must not start on this log.
    #[error("corrupt write-ahead log {path} at offset {offset}: {reason}")]
    Corrupt {
        /// Segment file.
        path: PathBuf,
        /// File offset of the damage.
        offset: u64,
        /// What is wrong.
        reason: String,
    },
    /// Options out of range.
    #[error("invalid write-ahead log options: {0}")]
    InvalidOptions(String),
}

impl WalError {
    fn io(op: &'static str, path: &Path, source: impl Into<std::io::Error>) -> Self {
        WalError::Io {
            op,
            path: path.to_path_buf(),
            source: source.into(),
        }
    }
}

/// Counters of one open log (for tests, benchmarks and ops).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct WalStats {
    /// End of the last appended record.
    pub appended_lsn: Lsn,
    /// End of the last record handed to the kernel by a completed write.
    pub written_lsn: Lsn,
    /// End of the last record covered by a completed fdatasync.
    pub durable_lsn: Lsn,
    /// Batch writes issued.
    pub write_count: u64,
    /// Batch fdatasyncs issued.
    pub fdatasync_count: u64,
    /// Bytes passed to batch writes, including the re-written partial block and padding.
    pub write_bytes_total: u64,
}

/// One shard's write-ahead log. Cheap to clone; clones are the same log.
#[derive(Clone)]
pub struct Wal {
    handle: Rc<writer::Handle>,
}

impl fmt::Debug for Wal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Wal").field("stats", &self.stats()).finish()
    }
}

impl Wal {
    /// Opens (or creates) the log in `options.dir`, calls `on_record` with every recovered
    /// record in log order, repairs the tail, and spawns the flusher on the current executor.
    pub async fn open(
        options: WalOptions,
        mut on_record: impl FnMut(WalRecord),
    ) -> Result<(Wal, RecoveryReport), WalError> {
        Self::open_with_lsns(options, |_, record| on_record(record)).await
    }

    /// Like [`Wal::open`], but the callback also gets each record's end LSN.
    pub async fn open_with_lsns(
        options: WalOptions,
        on_record: impl FnMut(Lsn, WalRecord),
    ) -> Result<(Wal, RecoveryReport), WalError> {
        options.validate()?;
        let recovered = recovery::recover(&options, on_record).await?;
        let report = recovered.report.clone();
        let handle = writer::start(options, recovered).await?;
        Ok((
            Wal {
                handle: Rc::new(handle),
            },
            report,
        ))
    }

    /// Buffers `record` and returns its end LSN. Does not wait for the disk: call
    /// [`Wal::sync`] with the returned LSN before acknowledging anything that depends on it.
    pub fn append(&self, record: &WalRecord) -> Result<Lsn, WalError> {
        self.handle.shared.append(record)
    }

    /// Resolves once every record up to `lsn` is durable (group commit: many callers share one
    /// fdatasync). Returns [`WalError::Failed`] if the log is poisoned before that.
    pub async fn sync(&self, lsn: Lsn) -> Result<(), WalError> {
        self.handle.shared.sync(lsn).await
    }

    /// End LSN of the last durable record.
    pub fn durable_lsn(&self) -> Lsn {
        self.handle.shared.stats().durable_lsn
    }

    /// The failure that poisoned the log, if any.
    pub fn failure(&self) -> Option<StorageFailure> {
        self.handle.shared.failure()
    }

    /// Resolves when buffered bytes dropped to half of `pending_bytes_max` (or the log failed
    /// or closed, so that callers do not wait forever; their next `append` reports why).
    pub async fn wait_for_space(&self) {
        self.handle.shared.wait_for_space().await
    }

    /// Flushes what is buffered, stops the flusher and reports the first failure, if any.
    /// Later `append` calls return [`WalError::Closed`].
    pub async fn close(&self) -> Result<(), WalError> {
        self.handle.shared.close().await
    }

    /// Counters and positions.
    pub fn stats(&self) -> WalStats {
        self.handle.shared.stats()
    }

    /// Sealed and current segments, oldest first.
    pub fn segments(&self) -> Vec<SegmentInfo> {
        self.handle.shared.segments()
    }

    /// Deletes sealed segments whose records all end at or before `lsn` (and are durable),
    /// oldest first, then syncs the directory. Returns how many were deleted. The segment being
    /// written is never deleted.
    pub async fn release_segments_before(&self, lsn: Lsn) -> Result<u32, WalError> {
        self.handle.shared.release_segments_before(lsn).await
    }

    /// Reads the durable records whose end LSN lies in `(from, to]`, in order, from the segment
    /// files. `from` must be 0 or the end LSN of a record. Intended for followers catching up;
    /// uses blocking reads of the files (page cache), so keep ranges small.
    pub fn read_records(&self, from: Lsn, to: Lsn) -> Result<Vec<(Lsn, WalRecord)>, WalError> {
        self.handle.shared.read_records(from, to)
    }
}
