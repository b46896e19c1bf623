//! The archiver's progress as `/ops/status` reports it (ops.md §4 `archive`): a small shared
//! cell that the archiver of every shard writes and the ops API reads from any thread.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

/// Longest `last_error` text kept; adapter errors quote server messages, which are not ours to
/// bound.
pub const ARCHIVE_LAST_ERROR_BYTES_MAX: usize = 1024;

/// Archive progress of one node, shared between its archiver and its ops API.
#[derive(Debug)]
pub struct ArchiveProgress {
    adapter: &'static str,
    lag_events: AtomicU64,
    pending_sessions: AtomicU64,
    last_error: Mutex<Option<String>>,
}

/// One reading of [`ArchiveProgress`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ArchiveProgressSnapshot {
    /// `local`, `s3` or `postgres`.
    pub adapter: &'static str,
    /// Σ (`last_seq` − `archived_seq`) over the sessions of the groups this node leads.
    pub lag_events: u64,
    /// Sessions with unarchived events in the groups this node leads.
    pub pending_sessions: u64,
    /// The most recent archive write error on this node; `None` after a successful write.
    pub last_error: Option<String>,
}

impl ArchiveProgress {
    /// No lag and no error yet, for the adapter named `adapter`.
    pub fn new(adapter: &'static str) -> ArchiveProgress {
        ArchiveProgress {
            adapter,
            lag_events: AtomicU64::new(0),
            pending_sessions: AtomicU64::new(0),
            last_error: Mutex::new(None),
        }
    }

    /// The current values.
    pub fn snapshot(&self) -> ArchiveProgressSnapshot {
        ArchiveProgressSnapshot {
            adapter: self.adapter,
            lag_events: self.lag_events.load(Ordering::Relaxed),
            pending_sessions: self.pending_sessions.load(Ordering::Relaxed),
            last_error: self.last_error_slot().clone(),
        }
    }

    /// The node-wide lag after a tick of one shard's archiver.
    pub fn set_lag(&self, lag_events: u64, pending_sessions: u64) {
        self.lag_events.store(lag_events, Ordering::Relaxed);
        self.pending_sessions
            .store(pending_sessions, Ordering::Relaxed);
    }

    /// Record the outcome of one adapter write: an error replaces `last_error`, a success
    /// clears it.
    pub fn record_write(&self, error: Option<String>) {
        *self.last_error_slot() = error.map(|mut text| {
            truncate_at_char_boundary(&mut text, ARCHIVE_LAST_ERROR_BYTES_MAX);
            text
        });
    }

    fn last_error_slot(&self) -> std::sync::MutexGuard<'_, Option<String>> {
        // A plain value: a holder that panicked cannot have left it half-written.
        self.last_error
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// Cut `text` to at most `bytes_max` bytes without splitting a character.
fn truncate_at_char_boundary(text: &mut String, bytes_max: usize) {
    if text.len() <= bytes_max {
        return;
    }
    let mut end = bytes_max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text.truncate(end);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_success_clears_the_last_error() {
        let progress = ArchiveProgress::new("s3");
        progress.set_lag(7, 2);
        progress.record_write(Some("HTTP 403".into()));
        let snapshot = progress.snapshot();
        assert_eq!(snapshot.adapter, "s3");
        assert_eq!((snapshot.lag_events, snapshot.pending_sessions), (7, 2));
        assert_eq!(snapshot.last_error.as_deref(), Some("HTTP 403"));
        progress.record_write(None);
        assert_eq!(progress.snapshot().last_error, None);
    }

    #[test]
    fn long_errors_are_cut_on_a_character_boundary() {
        let progress = ArchiveProgress::new("local");
        progress.record_write(Some("é".repeat(ARCHIVE_LAST_ERROR_BYTES_MAX)));
        let kept = progress.snapshot().last_error.unwrap_or_default();
        assert_eq!(kept.len(), ARCHIVE_LAST_ERROR_BYTES_MAX);
        assert!(kept.chars().all(|character| character == 'é'));
    }
}
