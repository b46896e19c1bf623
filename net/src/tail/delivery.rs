//! The delivery procedure of tail.md §4 and the slow-consumer rules of §5, without IO.
//!
//! [`Delivery`] holds the connection state of tail.md §2 (`cursor`, `mode`, `buffer`). The socket
//! side asks it for the next [`Step`], performs that step (a read, a body fetch, a `last_seq`
//! check, or a wait), and reports the outcome back. Every frame the socket sends is reported with
//! [`Delivery::on_sent`], which is where strict contiguity (G1, G2) is asserted.
//!
//! [`ReadRetry`] decides, for a failed read, whether the tail closes now or retries later
//! (tail.md §6).

use std::collections::BTreeSet;

use starcite_engine::api::ServiceError;

/// Events asked for by one replay read (tail.md §4 step 2). One batch is the most event bodies a
/// connection holds at a time (tail.md §5).
pub const REPLAY_BATCH_EVENTS: u32 = 1000;

/// Pause before re-reading when a replay pass came back empty although a notification further
/// ahead is buffered: the read path has not caught up with the notification yet, and re-reading at
/// once would spin.
pub const GAP_REREAD_DELAY_MS: u64 = 20;

/// First pause after a transient read failure (tail.md §6).
pub const RETRY_DELAY_INITIAL_MS: u64 = 100;

/// Longest pause between two attempts of a failing read (tail.md §6).
pub const RETRY_DELAY_MAX_MS: u64 = 1000;

/// How long reads may fail with transient errors before the tail closes (tail.md §6).
pub const RETRY_WINDOW_MS: u64 = 10_000;

const _: () = assert!(RETRY_DELAY_INITIAL_MS <= RETRY_DELAY_MAX_MS);
const _: () = assert!(RETRY_DELAY_MAX_MS < RETRY_WINDOW_MS);

/// `mode` of tail.md §2.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Reading stored events in batches; notifications are only buffered.
    Replay,
    /// Delivering events one notification at a time.
    Live,
}

/// Why a replay pass started; the `reason` label of `starcite_tail_replays_total`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReplayReason {
    /// The first pass of a connection.
    Initial,
    /// A notification arrived further ahead than `cursor + 1`.
    Gap,
    /// Notifications were lost because a buffer was full (tail.md §5).
    Overflow,
    /// The periodic `last_seq` check found undelivered events.
    Catchup,
    /// A notified event's body could not be fetched.
    LookupFailed,
}

impl ReplayReason {
    /// The metric label.
    pub fn label(self) -> &'static str {
        match self {
            ReplayReason::Initial => "initial",
            ReplayReason::Gap => "gap",
            ReplayReason::Overflow => "overflow",
            ReplayReason::Catchup => "catchup",
            ReplayReason::LookupFailed => "lookup_failed",
        }
    }
}

/// What the socket side should do next.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Step {
    /// Read up to [`REPLAY_BATCH_EVENTS`] events after `cursor`, after waiting `delay_ms`.
    /// `starts_pass` is set when this read begins a new replay pass.
    Replay {
        /// Read events with `seq > cursor`.
        cursor: u64,
        /// The reason, when this read begins a replay pass.
        starts_pass: Option<ReplayReason>,
        /// Wait this long before reading (0 almost always).
        delay_ms: u64,
    },
    /// Fetch the bodies of the `count` notified events `cursor + 1 ..= cursor + count`.
    FetchBody {
        /// Read events with `seq > cursor`.
        cursor: u64,
        /// Contiguous notified events to fetch, at least 1.
        count: u32,
    },
    /// Read the session's `last_seq` (catch-up check, tail.md §4 step 6).
    CheckLastSeq,
    /// Nothing to do until a notification arrives or a timer fires.
    Wait,
}

/// What became of a notification handed to [`Delivery::on_notification`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NotificationOutcome {
    /// Already delivered (`seq <= cursor`) or already buffered.
    Ignored,
    /// Added to the buffer.
    Buffered,
    /// The buffer was full: it was cleared and a replay from `cursor` follows (tail.md §5).
    Overflowed,
}

/// A read result that breaks the read contract (events must start at `cursor + 1`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("read after cursor {cursor} returned events starting at seq {first_seq}")]
pub struct ReadOutOfOrder {
    /// The cursor the read was issued with.
    pub cursor: u64,
    /// The first seq the read returned.
    pub first_seq: u64,
}

impl ReadOutOfOrder {
    /// The close reason this maps to: an ordered-replay gap.
    pub fn code(&self) -> &'static str {
        ServiceError::EventGapDetected.code()
    }
}

/// Connection state of tail.md §2 and the rules that move it.
#[derive(Debug)]
pub struct Delivery {
    /// Highest seq delivered on this connection.
    cursor: u64,
    mode: Mode,
    /// Seqs of pending commit notifications; duplicates collapse.
    buffer: BTreeSet<u64>,
    buffer_events_max: usize,
    /// Set when a replay pass must be counted; taken by the first read of the pass.
    pass_reason: Option<ReplayReason>,
    /// A catch-up check is due at the next idle moment.
    catchup_due: bool,
    /// The last replay read was empty and no step was taken since: re-reading at once for a gap
    /// would only return nothing again.
    replay_came_back_empty: bool,
    /// Delay to apply before the next replay read.
    pending_delay_ms: u64,
}

impl Delivery {
    /// A connection that has delivered up to `cursor` and starts with the initial replay.
    /// `buffer_events_max` is `STARCITE_TAIL_BUFFER_EVENTS` (at least 1 is used).
    pub fn new(cursor: u64, buffer_events_max: usize) -> Self {
        Delivery {
            cursor,
            mode: Mode::Replay,
            buffer: BTreeSet::new(),
            buffer_events_max: buffer_events_max.max(1),
            pass_reason: Some(ReplayReason::Initial),
            catchup_due: false,
            replay_came_back_empty: false,
            pending_delay_ms: 0,
        }
    }

    /// Highest seq delivered so far.
    pub fn cursor(&self) -> u64 {
        self.cursor
    }

    /// Current mode.
    pub fn mode(&self) -> Mode {
        self.mode
    }

    /// Buffered notifications (for tests and debugging).
    pub fn buffered_count(&self) -> usize {
        self.buffer.len()
    }

    /// Decide what to do next (tail.md §4 steps 2–4 and 6).
    pub fn next_step(&mut self) -> Step {
        if self.mode == Mode::Live {
            self.drop_delivered_notifications();
            let next_seq = self.cursor + 1;
            // Only a gap seen right at the end of a pass waits before re-reading.
            let replay_came_back_empty = std::mem::take(&mut self.replay_came_back_empty);
            match self.buffer.first().copied() {
                Some(seq) if seq == next_seq => {
                    return Step::FetchBody {
                        cursor: self.cursor,
                        count: self.contiguous_buffered_count(),
                    };
                }
                Some(_) => {
                    // Step 4: never send past a gap; re-read from the cursor instead.
                    if replay_came_back_empty {
                        self.pending_delay_ms = GAP_REREAD_DELAY_MS;
                    }
                    self.enter_replay(ReplayReason::Gap);
                }
                None if self.catchup_due => return Step::CheckLastSeq,
                None => return Step::Wait,
            }
        }
        Step::Replay {
            cursor: self.cursor,
            starts_pass: self.pass_reason.take(),
            delay_ms: std::mem::take(&mut self.pending_delay_ms),
        }
    }

    /// A commit notification for `seq` arrived (tail.md §4 steps 4 and 5, §5).
    pub fn on_notification(&mut self, seq: u64) -> NotificationOutcome {
        if seq <= self.cursor || self.buffer.contains(&seq) {
            return NotificationOutcome::Ignored;
        }
        if self.buffer.len() >= self.buffer_events_max {
            self.drop_delivered_notifications();
        }
        if self.buffer.len() >= self.buffer_events_max {
            self.buffer.clear();
            self.enter_replay(ReplayReason::Overflow);
            return NotificationOutcome::Overflowed;
        }
        self.buffer.insert(seq);
        NotificationOutcome::Buffered
    }

    /// The subscription dropped notifications because its own buffer was full (tail.md §5).
    pub fn on_subscription_overflow(&mut self) {
        self.buffer.clear();
        self.enter_replay(ReplayReason::Overflow);
    }

    /// The catch-up interval elapsed (tail.md §4 step 6). A replay in progress reads everything
    /// anyway, so the check only matters in live mode.
    pub fn on_catchup_due(&mut self) {
        self.catchup_due = self.mode == Mode::Live;
    }

    /// The catch-up check read `last_seq`.
    pub fn on_last_seq(&mut self, last_seq: u64) {
        self.catchup_due = false;
        if last_seq > self.cursor {
            self.enter_replay(ReplayReason::Catchup);
        }
    }

    /// A replay read returned `count` events starting at `first_seq`. With events, the caller
    /// sends them in order; without, the pass ends and the tail switches to live (step 3).
    pub fn on_replay_read(&mut self, first_seq: u64, count: usize) -> Result<(), ReadOutOfOrder> {
        if count == 0 {
            // Step 3: the next `next_step` drops delivered notifications and either delivers from
            // the buffer, waits, or goes back to replay for a gap.
            self.mode = Mode::Live;
            self.replay_came_back_empty = true;
            return Ok(());
        }
        self.check_starts_at_cursor(first_seq)
    }

    /// A body fetch returned `count` events starting at `first_seq`. With events, the caller
    /// sends them in order; without, the body could not be fetched and a replay follows.
    pub fn on_fetch_read(&mut self, first_seq: u64, count: usize) -> Result<(), ReadOutOfOrder> {
        if count == 0 {
            self.enter_replay(ReplayReason::LookupFailed);
            return Ok(());
        }
        self.check_starts_at_cursor(first_seq)
    }

    /// The event `seq` was handed to the socket.
    pub fn on_sent(&mut self, seq: u64) {
        // G1 and G2: every frame is exactly the one after the previous frame.
        debug_assert_eq!(seq, self.cursor + 1, "tail frames must be contiguous");
        self.cursor = seq;
        self.buffer.remove(&seq);
        self.replay_came_back_empty = false;
    }

    fn check_starts_at_cursor(&self, first_seq: u64) -> Result<(), ReadOutOfOrder> {
        if first_seq == self.cursor + 1 {
            Ok(())
        } else {
            Err(ReadOutOfOrder {
                cursor: self.cursor,
                first_seq,
            })
        }
    }

    /// Switch to replay, remembering why when a new pass starts.
    fn enter_replay(&mut self, reason: ReplayReason) {
        self.catchup_due = false;
        if self.mode == Mode::Live {
            self.mode = Mode::Replay;
            self.pass_reason = Some(reason);
        }
    }

    fn drop_delivered_notifications(&mut self) {
        self.buffer = self.buffer.split_off(&(self.cursor + 1));
    }

    /// How many buffered notifications follow the cursor without a hole, at most one batch.
    fn contiguous_buffered_count(&self) -> u32 {
        let first_seq = self.cursor + 1;
        let run_count = (first_seq..)
            .zip(self.buffer.range(first_seq..))
            .take_while(|&(expected, &seq)| seq == expected)
            .take(REPLAY_BATCH_EVENTS as usize)
            .count();
        // The run is at most REPLAY_BATCH_EVENTS long, so it fits in u32.
        u32::try_from(run_count).unwrap_or(REPLAY_BATCH_EVENTS)
    }
}

/// What to do about a failed read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReadFailure {
    /// Close with 1011 and this error code as the reason.
    Close(&'static str),
    /// Try again after this many milliseconds.
    RetryAfterMs(u64),
}

/// The retry rule of tail.md §6: `session_not_found`, `archive_read_unavailable` and
/// `event_gap_detected` close at once; other errors (`raft_unavailable`, `raft_timeout`, and
/// anything unexpected) are retried after 100 ms doubling up to 1 s, and close only once reads
/// have failed continuously for [`RETRY_WINDOW_MS`].
#[derive(Clone, Debug, Default)]
pub struct ReadRetry {
    /// When the current run of failures started, in the caller's milliseconds.
    failing_since_ms: Option<u64>,
    next_delay_ms: u64,
}

impl ReadRetry {
    /// A read succeeded: the failure run is over.
    pub fn on_success(&mut self) {
        self.failing_since_ms = None;
        self.next_delay_ms = 0;
    }

    /// A read failed at `now_ms` (any monotonic millisecond clock).
    pub fn on_error(&mut self, error: &ServiceError, now_ms: u64) -> ReadFailure {
        match error {
            ServiceError::SessionNotFound
            | ServiceError::ArchiveReadUnavailable
            | ServiceError::EventGapDetected => return ReadFailure::Close(error.code()),
            _ => {}
        }
        let failing_since_ms = *self.failing_since_ms.get_or_insert(now_ms);
        let failing_ms = now_ms.saturating_sub(failing_since_ms);
        if failing_ms >= RETRY_WINDOW_MS {
            return ReadFailure::Close(error.code());
        }
        let delay_ms = if self.next_delay_ms == 0 {
            RETRY_DELAY_INITIAL_MS
        } else {
            self.next_delay_ms
        };
        self.next_delay_ms = (delay_ms * 2).min(RETRY_DELAY_MAX_MS);
        // The last attempt happens when the window ends, so the close comes after 10 s, not 11.
        ReadFailure::RetryAfterMs(delay_ms.min(RETRY_WINDOW_MS - failing_ms))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BUFFER: usize = 8;

    /// Runs replay reads of `delivery` against a log whose `last_seq` is `last_seq`, sending what
    /// they return, until the next step is something else (which is consumed); returns the sent
    /// seqs.
    fn replay_to_end(delivery: &mut Delivery, last_seq: u64) -> Vec<u64> {
        let mut sent = Vec::new();
        while let Step::Replay { cursor, .. } = delivery.next_step() {
            let count = last_seq
                .saturating_sub(cursor)
                .min(u64::from(REPLAY_BATCH_EVENTS));
            delivery
                .on_replay_read(cursor + 1, count as usize)
                .expect("in order");
            for seq in cursor + 1..=cursor + count {
                delivery.on_sent(seq);
                sent.push(seq);
            }
        }
        sent
    }

    fn send_fetched(delivery: &mut Delivery, cursor: u64, count: u32) {
        delivery
            .on_fetch_read(cursor + 1, count as usize)
            .expect("in order");
        for seq in cursor + 1..=cursor + u64::from(count) {
            delivery.on_sent(seq);
        }
    }

    #[test]
    fn initial_replay_reads_from_the_cursor_and_counts_one_initial_pass() {
        let mut delivery = Delivery::new(5, BUFFER);
        assert_eq!(
            delivery.next_step(),
            Step::Replay {
                cursor: 5,
                starts_pass: Some(ReplayReason::Initial),
                delay_ms: 0
            }
        );
        delivery.on_replay_read(6, 2).expect("in order");
        delivery.on_sent(6);
        delivery.on_sent(7);
        assert_eq!(
            delivery.next_step(),
            Step::Replay {
                cursor: 7,
                starts_pass: None,
                delay_ms: 0
            }
        );
        delivery.on_replay_read(0, 0).expect("empty");
        assert_eq!(delivery.next_step(), Step::Wait);
        assert_eq!(delivery.mode(), Mode::Live);
        assert_eq!(delivery.cursor(), 7);
    }

    #[test]
    fn live_notification_for_the_next_seq_fetches_its_body() {
        let mut delivery = Delivery::new(0, BUFFER);
        replay_to_end(&mut delivery, 3);
        assert_eq!(delivery.on_notification(4), NotificationOutcome::Buffered);
        assert_eq!(
            delivery.next_step(),
            Step::FetchBody {
                cursor: 3,
                count: 1
            }
        );
        send_fetched(&mut delivery, 3, 1);
        assert_eq!(delivery.next_step(), Step::Wait);
        assert_eq!(delivery.cursor(), 4);
    }

    #[test]
    fn live_notification_at_or_below_the_cursor_is_ignored() {
        let mut delivery = Delivery::new(0, BUFFER);
        replay_to_end(&mut delivery, 3);
        assert_eq!(delivery.on_notification(2), NotificationOutcome::Ignored);
        assert_eq!(delivery.on_notification(3), NotificationOutcome::Ignored);
        assert_eq!(delivery.next_step(), Step::Wait);
    }

    #[test]
    fn duplicate_notifications_collapse_and_are_sent_once() {
        let mut delivery = Delivery::new(0, BUFFER);
        replay_to_end(&mut delivery, 0);
        assert_eq!(delivery.on_notification(1), NotificationOutcome::Buffered);
        assert_eq!(delivery.on_notification(1), NotificationOutcome::Ignored);
        assert_eq!(delivery.buffered_count(), 1);
        assert_eq!(
            delivery.next_step(),
            Step::FetchBody {
                cursor: 0,
                count: 1
            }
        );
        send_fetched(&mut delivery, 0, 1);
        assert_eq!(delivery.on_notification(1), NotificationOutcome::Ignored);
        assert_eq!(delivery.next_step(), Step::Wait);
    }

    #[test]
    fn live_notification_past_a_gap_is_never_sent_and_triggers_a_replay() {
        let mut delivery = Delivery::new(0, BUFFER);
        replay_to_end(&mut delivery, 3);
        assert_eq!(delivery.on_notification(6), NotificationOutcome::Buffered);
        assert_eq!(
            delivery.next_step(),
            Step::Replay {
                cursor: 3,
                starts_pass: Some(ReplayReason::Gap),
                delay_ms: 0
            }
        );
        // The replay finds 4..=6; 6 is then already delivered and its notification dropped.
        delivery.on_replay_read(4, 3).expect("in order");
        for seq in 4..=6 {
            delivery.on_sent(seq);
        }
        delivery.on_replay_read(0, 0).expect("empty");
        assert_eq!(delivery.next_step(), Step::Wait);
        assert_eq!(delivery.buffered_count(), 0);
    }

    #[test]
    fn gap_after_an_empty_replay_rereads_after_a_pause() {
        let mut delivery = Delivery::new(0, BUFFER);
        replay_to_end(&mut delivery, 3);
        delivery.on_notification(6);
        assert!(matches!(
            delivery.next_step(),
            Step::Replay { delay_ms: 0, .. }
        ));
        // The read path does not show 4..=6 yet.
        delivery.on_replay_read(0, 0).expect("empty");
        assert_eq!(
            delivery.next_step(),
            Step::Replay {
                cursor: 3,
                starts_pass: Some(ReplayReason::Gap),
                delay_ms: GAP_REREAD_DELAY_MS
            }
        );
    }

    #[test]
    fn contiguous_buffered_notifications_are_fetched_together_up_to_the_hole() {
        let mut delivery = Delivery::new(0, BUFFER);
        replay_to_end(&mut delivery, 2);
        for seq in [3, 4, 5, 7] {
            delivery.on_notification(seq);
        }
        assert_eq!(
            delivery.next_step(),
            Step::FetchBody {
                cursor: 2,
                count: 3
            }
        );
        send_fetched(&mut delivery, 2, 3);
        // 7 is past the hole at 6.
        assert!(matches!(
            delivery.next_step(),
            Step::Replay {
                cursor: 5,
                starts_pass: Some(ReplayReason::Gap),
                ..
            }
        ));
    }

    #[test]
    fn partial_fetch_delivers_what_came_and_fetches_the_rest() {
        let mut delivery = Delivery::new(0, BUFFER);
        replay_to_end(&mut delivery, 0);
        delivery.on_notification(1);
        delivery.on_notification(2);
        assert_eq!(
            delivery.next_step(),
            Step::FetchBody {
                cursor: 0,
                count: 2
            }
        );
        send_fetched(&mut delivery, 0, 1);
        assert_eq!(
            delivery.next_step(),
            Step::FetchBody {
                cursor: 1,
                count: 1
            }
        );
    }

    #[test]
    fn body_fetch_that_finds_nothing_falls_back_to_replay() {
        let mut delivery = Delivery::new(0, BUFFER);
        replay_to_end(&mut delivery, 0);
        delivery.on_notification(1);
        assert_eq!(
            delivery.next_step(),
            Step::FetchBody {
                cursor: 0,
                count: 1
            }
        );
        delivery.on_fetch_read(0, 0).expect("empty");
        assert_eq!(
            delivery.next_step(),
            Step::Replay {
                cursor: 0,
                starts_pass: Some(ReplayReason::LookupFailed),
                delay_ms: 0
            }
        );
    }

    /// G4: notifications that arrive while replaying are buffered and delivered exactly once,
    /// after the replayed events.
    #[test]
    fn notifications_during_replay_are_delivered_once_after_the_replayed_events() {
        let mut delivery = Delivery::new(0, BUFFER);
        let mut sent = Vec::new();
        assert!(matches!(
            delivery.next_step(),
            Step::Replay { cursor: 0, .. }
        ));
        // Events 1..=3 are stored; 4 and 5 commit while the batch is being sent.
        delivery.on_replay_read(1, 3).expect("in order");
        for seq in 1..=3 {
            delivery.on_sent(seq);
            sent.push(seq);
        }
        assert_eq!(delivery.on_notification(4), NotificationOutcome::Buffered);
        assert_eq!(delivery.on_notification(5), NotificationOutcome::Buffered);
        assert_eq!(delivery.mode(), Mode::Replay);
        // The next replay read already sees 4 and 5.
        assert!(matches!(
            delivery.next_step(),
            Step::Replay { cursor: 3, .. }
        ));
        delivery.on_replay_read(4, 2).expect("in order");
        for seq in 4..=5 {
            delivery.on_sent(seq);
            sent.push(seq);
        }
        // The notification for 4 arrives late (duplicate of a replayed event).
        assert_eq!(delivery.on_notification(4), NotificationOutcome::Ignored);
        delivery.on_notification(6);
        assert!(matches!(
            delivery.next_step(),
            Step::Replay { cursor: 5, .. }
        ));
        delivery.on_replay_read(0, 0).expect("empty");
        // 6 was committed after the last read: delivered from the buffer.
        assert_eq!(
            delivery.next_step(),
            Step::FetchBody {
                cursor: 5,
                count: 1
            }
        );
        send_fetched(&mut delivery, 5, 1);
        sent.push(6);
        assert_eq!(sent, vec![1, 2, 3, 4, 5, 6]);
        assert_eq!(delivery.next_step(), Step::Wait);
    }

    /// G5: a cursor above `last_seq` is accepted; frames start once `last_seq` exceeds it.
    #[test]
    fn cursor_beyond_last_seq_waits_then_delivers_from_cursor_plus_one() {
        let mut delivery = Delivery::new(10, BUFFER);
        assert!(replay_to_end(&mut delivery, 4).is_empty());
        assert_eq!(delivery.next_step(), Step::Wait);
        for seq in 5..=10 {
            assert_eq!(delivery.on_notification(seq), NotificationOutcome::Ignored);
        }
        delivery.on_catchup_due();
        assert_eq!(delivery.next_step(), Step::CheckLastSeq);
        delivery.on_last_seq(10);
        assert_eq!(delivery.next_step(), Step::Wait);
        delivery.on_notification(11);
        assert_eq!(
            delivery.next_step(),
            Step::FetchBody {
                cursor: 10,
                count: 1
            }
        );
    }

    #[test]
    fn catchup_finding_undelivered_events_replays() {
        let mut delivery = Delivery::new(0, BUFFER);
        replay_to_end(&mut delivery, 2);
        delivery.on_catchup_due();
        assert_eq!(delivery.next_step(), Step::CheckLastSeq);
        // The notification for 3 was lost.
        delivery.on_last_seq(3);
        assert_eq!(
            delivery.next_step(),
            Step::Replay {
                cursor: 2,
                starts_pass: Some(ReplayReason::Catchup),
                delay_ms: 0
            }
        );
    }

    #[test]
    fn catchup_is_not_checked_while_replaying() {
        let mut delivery = Delivery::new(0, BUFFER);
        delivery.on_catchup_due();
        assert!(matches!(delivery.next_step(), Step::Replay { .. }));
        delivery.on_replay_read(0, 0).expect("empty");
        assert_eq!(delivery.next_step(), Step::Wait);
    }

    #[test]
    fn full_buffer_clears_and_replays_from_the_cursor() {
        let mut delivery = Delivery::new(0, 3);
        replay_to_end(&mut delivery, 0);
        // Far-ahead notifications while replaying (the gap replay keeps the mode at replay).
        delivery.on_notification(5);
        assert!(matches!(delivery.next_step(), Step::Replay { .. }));
        assert_eq!(delivery.on_notification(6), NotificationOutcome::Buffered);
        assert_eq!(delivery.on_notification(7), NotificationOutcome::Buffered);
        assert_eq!(delivery.on_notification(8), NotificationOutcome::Overflowed);
        assert_eq!(delivery.buffered_count(), 0);
        assert_eq!(delivery.mode(), Mode::Replay);
        assert_eq!(delivery.cursor(), 0);
    }

    #[test]
    fn full_buffer_in_live_mode_starts_an_overflow_pass() {
        let mut delivery = Delivery::new(0, 2);
        replay_to_end(&mut delivery, 0);
        delivery.on_notification(1);
        delivery.on_notification(2);
        assert_eq!(delivery.on_notification(3), NotificationOutcome::Overflowed);
        assert_eq!(
            delivery.next_step(),
            Step::Replay {
                cursor: 0,
                starts_pass: Some(ReplayReason::Overflow),
                delay_ms: 0
            }
        );
    }

    #[test]
    fn delivered_notifications_do_not_count_against_the_buffer() {
        let mut delivery = Delivery::new(0, 2);
        delivery.on_notification(1);
        delivery.on_notification(2);
        assert!(matches!(delivery.next_step(), Step::Replay { .. }));
        delivery.on_replay_read(1, 2).expect("in order");
        delivery.on_sent(1);
        delivery.on_sent(2);
        assert_eq!(delivery.on_notification(3), NotificationOutcome::Buffered);
        assert_eq!(delivery.on_notification(4), NotificationOutcome::Buffered);
    }

    #[test]
    fn subscription_overflow_clears_and_replays() {
        let mut delivery = Delivery::new(0, BUFFER);
        replay_to_end(&mut delivery, 0);
        delivery.on_notification(1);
        delivery.on_subscription_overflow();
        assert_eq!(delivery.buffered_count(), 0);
        assert_eq!(
            delivery.next_step(),
            Step::Replay {
                cursor: 0,
                starts_pass: Some(ReplayReason::Overflow),
                delay_ms: 0
            }
        );
    }

    #[test]
    fn read_that_does_not_start_after_the_cursor_is_rejected() {
        let mut delivery = Delivery::new(4, BUFFER);
        assert!(matches!(delivery.next_step(), Step::Replay { .. }));
        let error = delivery.on_replay_read(7, 1).expect_err("out of order");
        assert_eq!(
            error,
            ReadOutOfOrder {
                cursor: 4,
                first_seq: 7
            }
        );
        assert_eq!(error.code(), "event_gap_detected");
        assert_eq!(
            delivery.on_fetch_read(4, 1),
            Err(ReadOutOfOrder {
                cursor: 4,
                first_seq: 4
            })
        );
    }

    #[test]
    fn fetched_body_batches_are_capped_at_one_replay_batch() {
        let mut delivery = Delivery::new(0, 5000);
        replay_to_end(&mut delivery, 0);
        for seq in 1..=1500 {
            delivery.on_notification(seq);
        }
        assert_eq!(
            delivery.next_step(),
            Step::FetchBody {
                cursor: 0,
                count: REPLAY_BATCH_EVENTS
            }
        );
    }

    #[test]
    #[should_panic(expected = "contiguous")]
    #[cfg(debug_assertions)]
    fn sending_out_of_order_trips_the_contiguity_assertion() {
        let mut delivery = Delivery::new(0, BUFFER);
        delivery.on_sent(2);
    }

    #[test]
    fn permanent_read_errors_close_at_once() {
        for error in [
            ServiceError::SessionNotFound,
            ServiceError::ArchiveReadUnavailable,
            ServiceError::EventGapDetected,
        ] {
            let mut retry = ReadRetry::default();
            assert_eq!(retry.on_error(&error, 0), ReadFailure::Close(error.code()));
        }
    }

    #[test]
    fn transient_read_errors_back_off_and_close_after_the_window() {
        let mut retry = ReadRetry::default();
        let error = ServiceError::RaftUnavailable;
        let mut now_ms = 1_000;
        let mut delays_ms = Vec::new();
        loop {
            match retry.on_error(&error, now_ms) {
                ReadFailure::RetryAfterMs(delay_ms) => {
                    delays_ms.push(delay_ms);
                    now_ms += delay_ms;
                }
                ReadFailure::Close(code) => {
                    assert_eq!(code, "raft_unavailable");
                    break;
                }
            }
        }
        assert_eq!(&delays_ms[..5], &[100, 200, 400, 800, 1000]);
        assert!(delays_ms[5..].iter().all(|&delay_ms| delay_ms <= 1000));
        assert_eq!(now_ms - 1_000, RETRY_WINDOW_MS);
    }

    #[test]
    fn a_success_resets_the_retry_window() {
        let mut retry = ReadRetry::default();
        let error = ServiceError::RaftTimeout;
        assert_eq!(retry.on_error(&error, 0), ReadFailure::RetryAfterMs(100));
        assert_eq!(retry.on_error(&error, 9_999), ReadFailure::RetryAfterMs(1));
        retry.on_success();
        assert_eq!(
            retry.on_error(&error, 15_000),
            ReadFailure::RetryAfterMs(100)
        );
        assert_eq!(
            retry.on_error(&error, 25_000),
            ReadFailure::Close("raft_timeout")
        );
    }
}
