//! Messages exchanged between members of one group.

use crate::types::{Entry, Index, NodeId, SnapshotMeta, Term};

/// A message between two members of the same group. `term` is the sender's term (for a granted
/// pre-vote response: the term the pre-vote was asked for).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    /// Sender.
    pub from: NodeId,
    /// Receiver.
    pub to: NodeId,
    /// Sender's term (see the type doc for pre-votes).
    pub term: Term,
    /// What the message says.
    pub body: MessageBody,
}

/// Where a follower's log diverges, sent with a rejected append so that the leader can skip a
/// whole term of entries per round trip instead of one entry.
///
/// `index` is the largest index in the follower's log that is ≤ the rejected `prev_log_index`
/// and whose term is ≤ the leader's `prev_log_term` (or the follower's last index when the
/// follower's log is shorter); `term` is the follower's term at `index`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RejectHint {
    /// Candidate match position in the follower's log.
    pub index: Index,
    /// Follower's term at `index`.
    pub term: Term,
}

/// The content of a [`Message`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MessageBody {
    /// A candidate asks for a vote in `Message::term`.
    RequestVote {
        /// Index of the candidate's last entry.
        last_log_index: Index,
        /// Term of the candidate's last entry.
        last_log_term: Term,
        /// Set by a leadership transfer: voters ignore their leader lease.
        force: bool,
    },
    /// Answer to [`MessageBody::RequestVote`].
    RequestVoteResponse {
        /// Whether the vote was granted.
        granted: bool,
    },
    /// A pre-candidate asks whether it could win an election in `Message::term` (its term + 1)
    /// without raising any term.
    PreVote {
        /// Index of the pre-candidate's last entry.
        last_log_index: Index,
        /// Term of the pre-candidate's last entry.
        last_log_term: Term,
    },
    /// Answer to [`MessageBody::PreVote`].
    PreVoteResponse {
        /// Whether the pre-vote was granted.
        granted: bool,
    },
    /// Leader replicates entries following `prev_log_index`.
    Append {
        /// Index of the entry just before `entries`.
        prev_log_index: Index,
        /// Term of that entry.
        prev_log_term: Term,
        /// Entries to append (may be empty: a probe).
        entries: Vec<Entry>,
        /// Leader's commit index.
        commit: Index,
    },
    /// Answer to [`MessageBody::Append`].
    AppendResponse {
        /// On success: the follower's log matches the leader's up to this index.
        /// On rejection: the `prev_log_index` that was rejected.
        index: Index,
        /// `None` on success; where to retry on rejection.
        reject: Option<RejectHint>,
    },
    /// Leader liveness and commit propagation. Kept small so that a multi-Raft layer can
    /// coalesce it across groups.
    Heartbeat {
        /// Leader's commit index, capped at what the receiver is known to have.
        commit: Index,
        /// Read-index round this heartbeat confirms, echoed in the response.
        read_context: Option<u64>,
    },
    /// Answer to [`MessageBody::Heartbeat`].
    HeartbeatResponse {
        /// Echo of the heartbeat's `read_context`.
        read_context: Option<u64>,
    },
    /// Leadership transfer: the receiver campaigns at once.
    TimeoutNow,
    /// One chunk of a snapshot.
    InstallSnapshot {
        /// What the whole snapshot covers.
        meta: SnapshotMeta,
        /// Byte offset of `data` in the snapshot.
        offset: u64,
        /// Chunk bytes (at most `snapshot_chunk_bytes_max`).
        data: Vec<u8>,
        /// Whether this is the last chunk.
        done: bool,
    },
    /// Answer to one [`MessageBody::InstallSnapshot`] chunk.
    InstallSnapshotResponse {
        /// Index of the snapshot being transferred.
        snapshot_index: Index,
        /// Offset of the next chunk the receiver expects.
        next_offset: u64,
        /// The whole snapshot has been received and persisted.
        done: bool,
    },
    /// A follower asks the leader to confirm a linearizable read.
    ReadIndexRequest {
        /// Follower-local read context.
        ctx: u64,
    },
    /// The leader's answer: serve `ctx` once applied ≥ `index`.
    ReadIndexResponse {
        /// Echo of the request's context.
        ctx: u64,
        /// Leader commit index confirmed for this read.
        index: Index,
    },
}

impl MessageBody {
    /// Whether this body is sent only by a leader of `Message::term`.
    pub fn is_from_leader(&self) -> bool {
        matches!(
            self,
            MessageBody::Append { .. }
                | MessageBody::Heartbeat { .. }
                | MessageBody::InstallSnapshot { .. }
                | MessageBody::TimeoutNow
                | MessageBody::ReadIndexResponse { .. }
        )
    }
}
