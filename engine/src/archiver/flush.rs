//! The archiver loop of one shard (archive.md §2): every flush interval, for each group whose
//! member on this shard leads, pick the sessions with unarchived events that are neither in
//! flight nor backing off, write a batch of each through the worker threads and, once the
//! adapter confirmed it, commit `ack_archived` through Raft.
//!
//! A tick queues its sessions and starts as many as the node's write slots allow; each finished
//! write starts the next queued one. Every session with a backlog thus gets a batch per tick,
//! not only the first [`ARCHIVE_SESSIONS_IN_FLIGHT_MAX`](super::ARCHIVE_SESSIONS_IN_FLIGHT_MAX)
//! of them.

use std::cell::RefCell;
use std::collections::{HashMap, HashSet, VecDeque};
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_lite::future;
use rand::Rng;
use starcite_raft::Role;

use super::Archive;
use crate::shard::{propose_ack_archived, Shard};

/// First backoff delay after a failed write; doubles per consecutive failure.
const BACKOFF_BASE_MS: u64 = 1000;

/// Relative jitter of a backoff delay (±20 %).
const BACKOFF_JITTER_FRACTION: f64 = 0.2;

/// Consecutive failures beyond which the delay no longer grows (2^30 s exceeds any cap).
const BACKOFF_DOUBLINGS_MAX: u32 = 30;

/// Sessions one shard's tick queues for a write slot; the rest are picked again by the next
/// tick.
pub const ARCHIVE_QUEUED_SESSIONS_MAX: usize = 4096;

/// A session whose last write failed.
struct Backoff {
    failures: u32,
    retry_at: Instant,
}

/// The loop's memory between ticks. All three hold only sessions of this shard's groups that
/// have unarchived events; entries of sessions that no longer need archiving are dropped on
/// every tick.
#[derive(Default)]
struct ShardArchiver {
    backoff: HashMap<String, Backoff>,
    in_flight: HashSet<String>,
    /// Picked by the last tick, waiting for a write slot (at most
    /// [`ARCHIVE_QUEUED_SESSIONS_MAX`]).
    queued: VecDeque<Candidate>,
}

/// One session picked by a tick.
struct Candidate {
    group_id: u32,
    session_id: String,
    archived_seq: u64,
}

/// Run the archiver of `shard` until the node shuts down. The first tick comes one interval
/// after start.
pub(crate) async fn run_shard_archiver(shard: Rc<Shard>, archive: Arc<Archive>) {
    let interval = Duration::from_millis(shard.node.config.archive_flush_interval_ms.max(1));
    let shutdown = shard.node.shutdown.clone();
    let state = Rc::new(RefCell::new(ShardArchiver::default()));
    loop {
        let stopped = future::or(
            async {
                glommio::timer::sleep(interval).await;
                false
            },
            async {
                shutdown.wait().await;
                true
            },
        )
        .await;
        if stopped || shard.closing.get() {
            return;
        }
        tick(&shard, &archive, &state);
    }
}

fn tick(shard: &Rc<Shard>, archive: &Arc<Archive>, state: &Rc<RefCell<ShardArchiver>>) {
    let (candidates, lag_events) = select_candidates(shard);
    archive.report_lag(shard.shard_index, lag_events, candidates.len() as u64);
    let now = Instant::now();
    {
        let mut state_now = state.borrow_mut();
        let wanted: HashSet<&str> = candidates
            .iter()
            .map(|candidate| candidate.session_id.as_str())
            .collect();
        state_now
            .backoff
            .retain(|session_id, _| wanted.contains(session_id.as_str()));
        // The queue is rebuilt from this tick's view (fresh `archived_seq`s); sessions still
        // queued from the last tick are simply picked again.
        let ShardArchiver {
            backoff,
            in_flight,
            queued,
        } = &mut *state_now;
        queued.clear();
        queued.extend(
            candidates
                .into_iter()
                .filter(|candidate| !in_flight.contains(&candidate.session_id))
                .filter(|candidate| {
                    backoff
                        .get(&candidate.session_id)
                        .is_none_or(|backoff| backoff.retry_at <= now)
                })
                .take(ARCHIVE_QUEUED_SESSIONS_MAX),
        );
    }
    start_queued(shard, archive, state);
}

/// Start queued sessions while the node has free write slots.
fn start_queued(shard: &Rc<Shard>, archive: &Arc<Archive>, state: &Rc<RefCell<ShardArchiver>>) {
    let batch_events_max = archive.settings().batch_events_max.max(1);
    loop {
        let Some(candidate) = state.borrow_mut().queued.pop_front() else {
            return;
        };
        let events = shard.with_group(candidate.group_id, |group| {
            group.hot_events(
                &candidate.session_id,
                candidate.archived_seq + 1,
                candidate.archived_seq.saturating_add(batch_events_max),
            )
        });
        if events.is_empty() {
            continue;
        }
        if !archive.try_acquire_session_slot() {
            // Every slot of the node is busy: the next finished write (or tick) goes on.
            state.borrow_mut().queued.push_front(candidate);
            return;
        }
        state
            .borrow_mut()
            .in_flight
            .insert(candidate.session_id.clone());
        // The task may run before this loop continues; it borrows the state itself.
        glommio::spawn_local(archive_session(
            shard.clone(),
            archive.clone(),
            state.clone(),
            candidate,
            events,
        ))
        .detach();
    }
}

/// The sessions with unarchived events of every group this shard's member leads, and their
/// total lag in events.
fn select_candidates(shard: &Shard) -> (Vec<Candidate>, u64) {
    let groups = shard.groups.borrow();
    let mut candidates = Vec::new();
    let mut lag_events = 0;
    for group in groups.iter().filter(|group| group.member) {
        let leads = matches!(shard.raft_status(group.group_id), Some((Role::Leader, ..)));
        if !leads {
            continue;
        }
        for record in group.state.unarchived_sessions() {
            debug_assert!(record.archived_seq <= record.last_seq);
            lag_events += record.last_seq - record.archived_seq;
            candidates.push(Candidate {
                group_id: group.group_id,
                session_id: record.id.clone(),
                archived_seq: record.archived_seq,
            });
        }
    }
    (candidates, lag_events)
}

/// Write one batch, then ack the contiguous run it confirmed, or back the session off.
async fn archive_session(
    shard: Rc<Shard>,
    archive: Arc<Archive>,
    state: Rc<RefCell<ShardArchiver>>,
    candidate: Candidate,
    events: Vec<(u64, Bytes)>,
) {
    let Candidate {
        group_id,
        session_id,
        archived_seq,
    } = candidate;
    let upto = contiguous_end(archived_seq, &events);
    let written = archive.write_events(&session_id, events).await;
    archive.release_session_slot();
    // This session stays in flight until its ack is settled; the freed slot serves the queue.
    start_queued(&shard, &archive, &state);
    match written {
        Ok(_) => {
            state.borrow_mut().backoff.remove(&session_id);
            if upto > archived_seq {
                let acked = propose_ack_archived(&shard, group_id, session_id.clone(), upto).await;
                match acked {
                    Ok(acked_seq) => {
                        debug_assert!(acked_seq >= upto, "ack of {upto} left {acked_seq}")
                    }
                    // The next tick rewrites the same events; the adapter keeps them once.
                    Err(error) => {
                        tracing::warn!("archive ack failed for session {session_id}: {error}")
                    }
                }
            }
        }
        Err(error) => {
            tracing::warn!("archive write failed for session {session_id}: {error}");
            let retry_max_ms = archive.settings().retry_max_ms;
            let mut state_now = state.borrow_mut();
            let failures = state_now
                .backoff
                .get(&session_id)
                .map_or(1, |backoff| backoff.failures.saturating_add(1));
            let delay = backoff_delay(failures, retry_max_ms, rand::thread_rng().gen());
            state_now.backoff.insert(
                session_id.clone(),
                Backoff {
                    failures,
                    retry_at: Instant::now() + delay,
                },
            );
        }
    }
    state.borrow_mut().in_flight.remove(&session_id);
}

/// The last seq of the run `archived_seq + 1, archived_seq + 2, …` at the start of `events`.
fn contiguous_end(archived_seq: u64, events: &[(u64, Bytes)]) -> u64 {
    let mut upto = archived_seq;
    for (seq, _) in events {
        if *seq != upto + 1 {
            break;
        }
        upto = *seq;
    }
    upto
}

/// `min(retry_max, 1000 ms × 2^(failures − 1))` ± 20 %, with `unit` uniform in `[0, 1)`.
fn backoff_delay(failures: u32, retry_max_ms: u64, unit: f64) -> Duration {
    let doublings = failures.saturating_sub(1).min(BACKOFF_DOUBLINGS_MAX);
    let base_ms = BACKOFF_BASE_MS
        .saturating_mul(1 << doublings)
        .min(retry_max_ms);
    let factor = 1.0 - BACKOFF_JITTER_FRACTION + 2.0 * BACKOFF_JITTER_FRACTION * unit;
    Duration::from_millis((base_ms as f64 * factor) as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_the_cap_with_jitter() {
        assert_eq!(backoff_delay(1, 60_000, 0.5), Duration::from_millis(1000));
        assert_eq!(backoff_delay(3, 60_000, 0.5), Duration::from_millis(4000));
        assert_eq!(
            backoff_delay(40, 60_000, 0.5),
            Duration::from_millis(60_000)
        );
        assert_eq!(backoff_delay(1, 60_000, 0.0), Duration::from_millis(800));
        assert!(backoff_delay(1, 60_000, 0.999_999) <= Duration::from_millis(1200));
    }

    #[test]
    fn ack_covers_only_the_contiguous_run() {
        let event = |seq| (seq, Bytes::new());
        assert_eq!(contiguous_end(4, &[event(5), event(6), event(8)]), 6);
        assert_eq!(contiguous_end(4, &[event(6)]), 4);
    }
}
