//! One session's replicated state: its record, its producer cursors and its hot events.

use std::collections::{BTreeMap, HashMap, VecDeque};

use bytes::Bytes;

use super::fingerprint::{fingerprint, Fingerprint};
use super::frame::render_event_frame;
use crate::api::{AppendResult, NewEvent, ServiceError, SessionRecord};

/// Most producer cursors a session keeps (semantics.md §4.1); beyond it the least recently
/// appended producer is forgotten.
pub const PRODUCER_CURSORS_MAX: usize = 10_000;

/// What a session remembers about one producer: its latest accepted event.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ProducerCursor {
    /// `L`: the producer seq of the producer's latest accepted event.
    pub producer_seq: u64,
    /// `S`: the session seq assigned to that event.
    pub seq: u64,
    /// `F`: the content fingerprint of that event.
    pub fingerprint: Fingerprint,
}

/// Producer cursors with a recency index, so that the least recently appended producer (the
/// smallest `S`) is found and removed in O(log n).
#[derive(Debug, Default)]
pub(crate) struct ProducerCursors {
    by_producer: HashMap<String, ProducerCursor>,
    /// `S` → producer id. Every `S` is the seq of a distinct event, so keys never collide.
    by_seq: BTreeMap<u64, String>,
}

impl ProducerCursors {
    pub(crate) fn len(&self) -> usize {
        self.by_producer.len()
    }

    pub(crate) fn get(&self, producer_id: &str) -> Option<&ProducerCursor> {
        self.by_producer.get(producer_id)
    }

    /// Set (or with `None`, remove) a producer's cursor; returns the previous cursor.
    pub(crate) fn replace(
        &mut self,
        producer_id: &str,
        cursor: Option<ProducerCursor>,
    ) -> Option<ProducerCursor> {
        let previous = self.by_producer.remove(producer_id);
        if let Some(previous) = previous {
            self.by_seq.remove(&previous.seq);
        }
        if let Some(cursor) = cursor {
            if let Some(displaced) = self.by_seq.insert(cursor.seq, producer_id.to_owned()) {
                debug_assert!(
                    false,
                    "producers {displaced} and {producer_id} share seq {}",
                    cursor.seq
                );
                self.by_producer.remove(&displaced);
            }
            self.by_producer.insert(producer_id.to_owned(), cursor);
        }
        debug_assert_eq!(self.by_producer.len(), self.by_seq.len());
        previous
    }

    /// Remove the producer whose cursor has the smallest `S`.
    pub(crate) fn evict_least_recent(&mut self) -> Option<(String, ProducerCursor)> {
        let (_, producer_id) = self.by_seq.pop_first()?;
        let cursor = self.by_producer.remove(&producer_id)?;
        Some((producer_id, cursor))
    }

    /// Cursors in ascending `S` (least recently appended first): a deterministic order.
    pub(crate) fn iter_by_seq(&self) -> impl Iterator<Item = (&str, &ProducerCursor)> {
        self.by_seq.values().filter_map(|producer_id| {
            self.by_producer
                .get(producer_id)
                .map(|cursor| (producer_id.as_str(), cursor))
        })
    }
}

/// The accepted part of an append: per-event results and the seqs of the newly stored events.
#[derive(Debug)]
pub(crate) struct AppendApplied {
    pub(crate) results: Vec<AppendResult>,
    /// Seqs stored by this append (empty when every event was a dedupe).
    pub(crate) new_seqs: std::ops::RangeInclusive<u64>,
    /// Frame bytes added to the hot store.
    pub(crate) added_bytes: u64,
}

/// A cursor change made while deciding a batch, recorded so that a rejection can restore the
/// cursors exactly (the batch's working copy, semantics.md §4.2).
struct CursorUndo {
    producer_id: String,
    previous: Option<ProducerCursor>,
}

/// One session of a group.
#[derive(Debug)]
pub(crate) struct SessionState {
    /// The record; `last_seq` and `archived_seq` are maintained here.
    pub(crate) record: SessionRecord,
    pub(crate) cursors: ProducerCursors,
    /// Frames of seqs `archived_seq + 1 ..= last_seq`, in order.
    pub(crate) hot_events: VecDeque<Bytes>,
    /// Sum of the frame lengths in `hot_events`.
    pub(crate) hot_bytes: u64,
    /// `inserted_at` of the latest event, kept after eviction so timestamps stay non-decreasing.
    pub(crate) last_inserted_at_us: Option<i64>,
}

impl SessionState {
    pub(crate) fn new(record: SessionRecord) -> SessionState {
        SessionState {
            record,
            cursors: ProducerCursors::default(),
            hot_events: VecDeque::new(),
            hot_bytes: 0,
            last_inserted_at_us: None,
        }
    }

    /// Run the decision procedure of semantics.md §4 (steps 1–6) for `events` in order. On the
    /// first rejection every cursor change is undone and nothing else has been touched.
    pub(crate) fn append(
        &mut self,
        events: &[NewEvent],
        expected_seq: Option<u64>,
        stamp_us: i64,
    ) -> Result<AppendApplied, ServiceError> {
        let mut undo: Vec<CursorUndo> = Vec::new();
        match self.decide(events, expected_seq, &mut undo) {
            Ok(results) => Ok(self.store(events, results, stamp_us)),
            Err(error) => {
                for change in undo.into_iter().rev() {
                    self.cursors.replace(&change.producer_id, change.previous);
                }
                Err(error)
            }
        }
    }

    /// Steps 2–5 per event, updating cursors (with undo records) as step 6 would.
    fn decide(
        &mut self,
        events: &[NewEvent],
        expected_seq: Option<u64>,
        undo: &mut Vec<CursorUndo>,
    ) -> Result<Vec<AppendResult>, ServiceError> {
        let pre_batch_last_seq = self.record.last_seq;
        let mut last_seq = pre_batch_last_seq;
        let mut expected_seq_checked = false;
        let mut results = Vec::with_capacity(events.len());
        for event in events {
            let content_fingerprint = fingerprint(event);
            let cursor = self.cursors.get(&event.producer_id).copied();
            if let Some(cursor) = cursor {
                if cursor.producer_seq == event.producer_seq
                    && cursor.fingerprint == content_fingerprint
                {
                    results.push(AppendResult {
                        seq: cursor.seq,
                        last_seq,
                        deduped: true,
                    });
                    continue;
                }
            }
            // Step 4 runs once, at the first event that is not a dedupe, against the pre-batch
            // `last_seq`; a batch made only of dedupes never checks it.
            if !expected_seq_checked {
                expected_seq_checked = true;
                if let Some(expected) = expected_seq {
                    if expected != pre_batch_last_seq {
                        return Err(ServiceError::ExpectedSeqConflict {
                            expected,
                            current: pre_batch_last_seq,
                        });
                    }
                }
            }
            check_producer_seq(event, cursor.as_ref())?;
            last_seq += 1;
            let new_cursor = ProducerCursor {
                producer_seq: event.producer_seq,
                seq: last_seq,
                fingerprint: content_fingerprint,
            };
            let previous = self.cursors.replace(&event.producer_id, Some(new_cursor));
            undo.push(CursorUndo {
                producer_id: event.producer_id.clone(),
                previous,
            });
            while self.cursors.len() > PRODUCER_CURSORS_MAX {
                let Some((producer_id, evicted)) = self.cursors.evict_least_recent() else {
                    break;
                };
                undo.push(CursorUndo {
                    producer_id,
                    previous: Some(evicted),
                });
            }
            results.push(AppendResult {
                seq: last_seq,
                last_seq,
                deduped: false,
            });
        }
        Ok(results)
    }

    /// Store the accepted new events (those not deduped) as frames sharing one `inserted_at`.
    fn store(
        &mut self,
        events: &[NewEvent],
        results: Vec<AppendResult>,
        stamp_us: i64,
    ) -> AppendApplied {
        let first_new_seq = self.record.last_seq + 1;
        let inserted_at_us = self
            .last_inserted_at_us
            .map_or(stamp_us, |previous| previous.max(stamp_us));
        let mut added_bytes = 0_u64;
        for (event, result) in events.iter().zip(&results) {
            if result.deduped {
                continue;
            }
            debug_assert_eq!(result.seq, self.record.last_seq + 1, "seqs are contiguous");
            let frame = render_event_frame(result.seq, event, inserted_at_us);
            added_bytes += frame.len() as u64;
            self.hot_events.push_back(frame);
            self.record.last_seq = result.seq;
        }
        if self.record.last_seq >= first_new_seq {
            self.last_inserted_at_us = Some(inserted_at_us);
        }
        self.hot_bytes += added_bytes;
        self.debug_check_invariants();
        AppendApplied {
            results,
            new_seqs: first_new_seq..=self.record.last_seq,
            added_bytes,
        }
    }

    /// `archived_seq := max(archived_seq, min(upto, last_seq))`, then evict hot events up to it
    /// (semantics.md §8). Returns the frame bytes released.
    pub(crate) fn acknowledge_archived(&mut self, upto: u64) -> u64 {
        let target = upto.min(self.record.last_seq);
        if target <= self.record.archived_seq {
            return 0;
        }
        let evicted_count = target - self.record.archived_seq;
        let mut released_bytes = 0_u64;
        for _ in 0..evicted_count {
            match self.hot_events.pop_front() {
                Some(frame) => released_bytes += frame.len() as u64,
                None => break,
            }
        }
        self.record.archived_seq = target;
        self.hot_bytes -= released_bytes;
        self.debug_check_invariants();
        released_bytes
    }

    /// The frame of `seq` if it is still hot.
    pub(crate) fn hot_event(&self, seq: u64) -> Option<&Bytes> {
        let offset = seq.checked_sub(self.record.archived_seq + 1)?;
        self.hot_events.get(usize::try_from(offset).ok()?)
    }

    pub(crate) fn debug_check_invariants(&self) {
        debug_assert!(self.record.archived_seq <= self.record.last_seq);
        debug_assert_eq!(
            self.record.last_seq,
            self.record.archived_seq + self.hot_events.len() as u64,
            "last_seq == archived_seq + hot events count"
        );
        debug_assert!(self.cursors.len() <= PRODUCER_CURSORS_MAX);
    }
}

/// Step 5 of semantics.md §4: the producer sequence table.
fn check_producer_seq(
    event: &NewEvent,
    cursor: Option<&ProducerCursor>,
) -> Result<(), ServiceError> {
    let got = event.producer_seq;
    let expected = match cursor {
        None => 1,
        Some(cursor) if got == cursor.producer_seq => {
            return Err(ServiceError::ProducerReplayConflict)
        }
        Some(cursor) => cursor.producer_seq.saturating_add(1),
    };
    if got == expected {
        Ok(())
    } else {
        Err(ServiceError::ProducerSeqConflict {
            producer_id: event.producer_id.clone(),
            expected,
            got,
        })
    }
}
