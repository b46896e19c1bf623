//! The archive tier of a node (archive.md): the per-shard archiver loop that copies committed
//! events to the adapter and acknowledges them through Raft, the cold half of the read path,
//! the read cache and the memory budget's reclamation.
//!
//! Files by concern:
//! - `pool`: the worker threads that run the blocking adapter, fed over a bounded queue.
//! - `cache`: the read cache keyed by `(session, chunk_start)`, LRU under a hard cap.
//! - `flush`: the per-shard loop (selection, batches, backoff, ack).
//! - `read`: the hot/cold merge of `read(session, cursor, limit)` (archive.md §6).
//! - `progress`: lag and last write error, shared with the ops API (`/ops/status`).
//!
//! One [`Archive`] is shared by every shard of the node; the archiver loop and the cold reads
//! of a shard run on its executor and only await the worker threads.

mod cache;
mod flush;
mod pool;
mod progress;
mod read;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::Instant;

use bytes::Bytes;
use starcite_archive::{ArchiveError, ArchivedEvent, SessionCatalog};

use crate::api::{ServiceError, SessionRecord};
use crate::config::ArchiveSettings;
use crate::metrics;
use crate::time::format_timestamp;

pub(crate) use flush::run_shard_archiver;
pub use pool::{ARCHIVE_JOB_QUEUE_MAX, ARCHIVE_WORKER_THREADS_COUNT};
pub use progress::{ArchiveProgress, ArchiveProgressSnapshot, ARCHIVE_LAST_ERROR_BYTES_MAX};
pub(crate) use read::{hot_view, read_merged};

use cache::ReadCache;
use pool::{PoolError, WorkerPool};

/// Sessions of a node whose archive write is in flight at once (archive.md §2).
pub const ARCHIVE_SESSIONS_IN_FLIGHT_MAX: usize = 8;

/// Missing sub-ranges one cold read fetches at most; a read of `limit` events has at most
/// `limit / 2 + 1` of them, and reads are bounded by the API's limit of 1,000 events.
pub const COLD_READ_RANGES_MAX: usize = 1024;

/// Why an adapter call (write or read) did not succeed.
#[derive(Debug, thiserror::Error)]
pub enum ArchiveCallError {
    /// The adapter refused or failed.
    #[error(transparent)]
    Adapter(#[from] ArchiveError),
    /// The worker threads could not run it.
    #[error(transparent)]
    Pool(#[from] PoolError),
}

/// Per-shard lag, summed into the node-wide gauges.
#[derive(Default)]
struct ShardLag {
    lag_events: AtomicU64,
    pending_sessions: AtomicU64,
}

/// The archive tier shared by every shard of a node.
pub(crate) struct Archive {
    settings: ArchiveSettings,
    pool: WorkerPool,
    cache: Mutex<ReadCache>,
    /// Sessions whose write is running, node-wide.
    sessions_in_flight: AtomicUsize,
    /// Applied writes since start, for the budget check every N of them.
    applied_writes: AtomicU64,
    shard_lag: Vec<ShardLag>,
    /// `B` (`STARCITE_EVENT_STORE_MAX_SIZE`).
    budget_bytes: u64,
}

impl Archive {
    /// Start the worker threads for `settings.adapter`.
    pub(crate) fn start(
        settings: ArchiveSettings,
        shard_count: u32,
        budget_bytes: u64,
    ) -> std::io::Result<Archive> {
        let pool = WorkerPool::start(settings.adapter.clone())?;
        metrics::global().set_archive_adapter(settings.adapter.name());
        metrics::global().set_archive_cache_bytes(0);
        Ok(Archive {
            cache: Mutex::new(ReadCache::new(
                settings.read_cache_max_bytes,
                settings.read_cache_compressed,
            )),
            pool,
            sessions_in_flight: AtomicUsize::new(0),
            applied_writes: AtomicU64::new(0),
            shard_lag: (0..shard_count).map(|_| ShardLag::default()).collect(),
            budget_bytes,
            settings,
        })
    }

    pub(crate) fn settings(&self) -> &ArchiveSettings {
        &self.settings
    }

    fn cache(&self) -> MutexGuard<'_, ReadCache> {
        // The cache holds no invariant a panicking holder could break half-way that matters
        // more than serving reads; the adapter stays the source of truth.
        self.cache
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// `C`, the read cache's bytes.
    pub(crate) fn cache_bytes(&self) -> u64 {
        self.cache().bytes()
    }

    /// Reserve one of the node's [`ARCHIVE_SESSIONS_IN_FLIGHT_MAX`] write slots.
    fn try_acquire_session_slot(&self) -> bool {
        self.sessions_in_flight
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |count| {
                (count < ARCHIVE_SESSIONS_IN_FLIGHT_MAX).then_some(count + 1)
            })
            .is_ok()
    }

    fn release_session_slot(&self) {
        self.sessions_in_flight.fetch_sub(1, Ordering::AcqRel);
    }

    /// Write `events` of one session through the adapter, recording the write metrics; on
    /// success the events go into the read cache.
    async fn write_events(
        &self,
        session_id: &str,
        events: Vec<(u64, Bytes)>,
    ) -> Result<u64, ArchiveCallError> {
        let started = Instant::now();
        let archived: Vec<ArchivedEvent> = events
            .iter()
            .map(|(seq, json)| ArchivedEvent {
                seq: *seq,
                json: json.clone(),
            })
            .collect();
        let owned_session_id = session_id.to_string();
        let result = self
            .pool
            .run(move |adapter| adapter.write_events(&owned_session_id, &archived))
            .await
            .map_err(ArchiveCallError::from)
            .and_then(|written| written.map_err(ArchiveCallError::from));
        let written = *result.as_ref().unwrap_or(&0);
        metrics::global().archive_write(started.elapsed(), written, result.is_err());
        let error_text = result.as_ref().err().map(|error| error.to_string());
        self.settings.progress.record_write(error_text);
        if result.is_ok() {
            self.cache_insert(session_id, &events);
        }
        result
    }

    fn cache_insert(&self, session_id: &str, events: &[(u64, Bytes)]) {
        let mut cache = self.cache();
        cache.insert(session_id, events);
        metrics::global().set_archive_cache_bytes(cache.bytes());
    }

    /// The archived events of `from_seq ..= to_seq` (archive.md §8): cached events plus one
    /// adapter read per missing contiguous sub-range, whose results are cached.
    pub(crate) async fn cold_read(
        &self,
        session_id: &str,
        from_seq: u64,
        to_seq: u64,
    ) -> Result<BTreeMap<u64, Bytes>, ServiceError> {
        let mut events = self.cache().lookup(session_id, from_seq, to_seq);
        let missing = missing_ranges(&events, from_seq, to_seq);
        metrics::global().archive_cache_request(missing.is_empty());
        for (range_from, range_to) in missing {
            let started = Instant::now();
            let owned_session_id = session_id.to_string();
            let result = self
                .pool
                .run(move |adapter| adapter.read_events(&owned_session_id, range_from, range_to))
                .await
                .map_err(ArchiveCallError::from)
                .and_then(|read| read.map_err(ArchiveCallError::from));
            metrics::global().archive_read(started.elapsed(), result.is_err());
            let read = result.map_err(|error| {
                tracing::warn!("archive read failed for session {session_id}: {error}");
                ServiceError::ArchiveReadUnavailable
            })?;
            let read: Vec<(u64, Bytes)> = read
                .into_iter()
                .filter(|event| (range_from..=range_to).contains(&event.seq))
                .map(|event| (event.seq, event.json))
                .collect();
            self.cache_insert(session_id, &read);
            events.extend(read);
        }
        Ok(events)
    }

    /// Queue the catalog copy of a new session (http-api.md §3 step 6): best effort, attempted
    /// once, never retried; a failure is logged at `warn`.
    pub(crate) fn submit_catalog(&self, record: &SessionRecord) {
        let catalog = SessionCatalog {
            id: record.id.clone(),
            title: record.title.clone(),
            creator_principal: record
                .creator_principal
                .as_ref()
                .and_then(|principal| serde_json::to_value(principal).ok()),
            metadata: record.metadata.clone(),
            created_at: format_timestamp(record.created_at_us),
        };
        let session_id = record.id.clone();
        let submitted = self.pool.try_submit(move |adapter| {
            if let Err(error) = adapter.write_catalog(&catalog) {
                tracing::warn!("archive catalog write failed for session {session_id}: {error}");
            }
        });
        if let Err(error) = submitted {
            tracing::warn!(
                "archive catalog write skipped for session {}: {error}",
                record.id
            );
        }
    }

    /// Called after each applied append: every `capacity_check_interval_writes` of them, if
    /// `U + C > B`, evict cache entries until `U + C ≤ B × (1 − reclaim fraction)` (archive.md
    /// §8 rule 2).
    pub(crate) fn note_applied_write(&self, unarchived_bytes: u64) {
        let interval = self.settings.capacity_check_interval_writes.max(1);
        let count = self.applied_writes.fetch_add(1, Ordering::Relaxed) + 1;
        if !count.is_multiple_of(interval) {
            return;
        }
        let mut cache = self.cache();
        if unarchived_bytes.saturating_add(cache.bytes()) <= self.budget_bytes {
            return;
        }
        let keep_fraction = (1.0 - self.settings.read_cache_reclaim_fraction).clamp(0.0, 1.0);
        let total_target = (self.budget_bytes as f64 * keep_fraction) as u64;
        cache.evict_until(total_target.saturating_sub(unarchived_bytes));
        metrics::global().set_archive_cache_bytes(cache.bytes());
    }

    /// Record one shard's lag and publish the node-wide sums.
    fn report_lag(&self, shard_index: u32, lag_events: u64, pending_sessions: u64) {
        if let Some(lag) = self.shard_lag.get(shard_index as usize) {
            lag.lag_events.store(lag_events, Ordering::Relaxed);
            lag.pending_sessions
                .store(pending_sessions, Ordering::Relaxed);
        }
        let (lag_events, pending_sessions) =
            self.shard_lag
                .iter()
                .fold((0, 0), |(events, sessions), lag| {
                    (
                        events + lag.lag_events.load(Ordering::Relaxed),
                        sessions + lag.pending_sessions.load(Ordering::Relaxed),
                    )
                });
        metrics::global().set_archive_lag(lag_events, pending_sessions);
        self.settings.progress.set_lag(lag_events, pending_sessions);
    }
}

/// The contiguous sub-ranges of `from_seq ..= to_seq` with no event in `present`, ascending
/// (present `{1,2,5}` of `1..=6` → `(3,4)`, `(6,6)`), at most [`COLD_READ_RANGES_MAX`].
fn missing_ranges(present: &BTreeMap<u64, Bytes>, from_seq: u64, to_seq: u64) -> Vec<(u64, u64)> {
    let mut ranges = Vec::new();
    let mut next = from_seq;
    for seq in present.range(from_seq..=to_seq).map(|(seq, _)| *seq) {
        if seq > next {
            ranges.push((next, seq - 1));
        }
        next = seq + 1;
    }
    if next <= to_seq {
        ranges.push((next, to_seq));
    }
    if ranges.len() > COLD_READ_RANGES_MAX {
        // Too fragmented to fetch piecewise: one read of the whole span replaces the pieces.
        let first = ranges.first().map_or(from_seq, |range| range.0);
        let last = ranges.last().map_or(to_seq, |range| range.1);
        ranges = vec![(first, last)];
    }
    ranges
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::sync::Arc;

    use starcite_archive::ArchiveAdapter;

    use super::*;

    /// Serves seqs 1..=6 of any session and records every read range.
    #[derive(Default)]
    struct RecordingAdapter {
        reads: Mutex<Vec<(u64, u64)>>,
    }

    impl ArchiveAdapter for RecordingAdapter {
        fn name(&self) -> &'static str {
            "local"
        }

        fn write_events(&self, _: &str, events: &[ArchivedEvent]) -> Result<u64, ArchiveError> {
            Ok(events.len() as u64)
        }

        fn read_events(
            &self,
            _: &str,
            from_seq: u64,
            to_seq: u64,
        ) -> Result<Vec<ArchivedEvent>, ArchiveError> {
            self.reads.lock().unwrap().push((from_seq, to_seq));
            Ok((from_seq..=to_seq.min(6))
                .map(|seq| ArchivedEvent {
                    seq,
                    json: Bytes::from(format!("{{\"seq\":{seq}}}")),
                })
                .collect())
        }

        fn write_catalog(&self, _: &SessionCatalog) -> Result<(), ArchiveError> {
            Ok(())
        }
    }

    /// archive.md §8: cached `{1,2,5}` of `1..6` → adapter reads `(3,4)` and `(6,6)`; the
    /// repeated read makes no adapter call.
    #[test]
    fn cold_read_fetches_only_the_missing_sub_ranges() {
        let adapter = Arc::new(RecordingAdapter::default());
        let archive = Archive::start(ArchiveSettings::new(adapter.clone()), 1, 1 << 30).unwrap();
        let cached: Vec<(u64, Bytes)> = [1, 2, 5]
            .into_iter()
            .map(|seq| (seq, Bytes::from(format!("{{\"seq\":{seq}}}"))))
            .collect();
        archive.cache_insert("s", &cached);
        let events = futures_lite::future::block_on(archive.cold_read("s", 1, 6)).unwrap();
        assert_eq!(
            events.keys().copied().collect::<Vec<_>>(),
            [1, 2, 3, 4, 5, 6]
        );
        assert_eq!(*adapter.reads.lock().unwrap(), [(3, 4), (6, 6)]);
        let again = futures_lite::future::block_on(archive.cold_read("s", 1, 6)).unwrap();
        assert_eq!(again, events);
        assert_eq!(adapter.reads.lock().unwrap().len(), 2);
    }

    #[test]
    fn missing_ranges_are_the_contiguous_gaps() {
        let present: BTreeMap<u64, Bytes> = [1, 2, 5]
            .into_iter()
            .map(|seq| (seq, Bytes::new()))
            .collect();
        assert_eq!(missing_ranges(&present, 1, 6), vec![(3, 4), (6, 6)]);
        assert_eq!(missing_ranges(&present, 1, 2), vec![]);
        assert_eq!(missing_ranges(&BTreeMap::new(), 3, 9), vec![(3, 9)]);
    }
}
