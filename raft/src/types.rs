//! Plain data carried by the Raft core: identifiers, log entries, persistent and volatile state.

use std::sync::Arc;

/// Identifier of a voter. `0` ([`NO_NODE`]) means "none".
pub type NodeId = u64;
/// A Raft term.
pub type Term = u64;
/// A position in the replicated log; the first real entry has index 1.
pub type Index = u64;

/// The "no node" identifier (no vote cast, no leader known).
pub const NO_NODE: NodeId = 0;

/// What an entry carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EntryKind {
    /// An application command.
    Normal,
    /// The empty entry a new leader appends to commit an entry of its own term.
    Noop,
}

/// One replicated log entry. `data` is reference counted so that handing the same entry to the
/// persistence path and to several followers does not copy it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// Term of the leader that created the entry.
    pub term: Term,
    /// Position of the entry in the log.
    pub index: Index,
    /// Application command or leader no-op.
    pub kind: EntryKind,
    /// Opaque application payload (empty for [`EntryKind::Noop`]).
    pub data: Arc<[u8]>,
}

impl Entry {
    /// Builds an application entry.
    pub fn normal(term: Term, index: Index, data: impl Into<Arc<[u8]>>) -> Entry {
        Entry {
            term,
            index,
            kind: EntryKind::Normal,
            data: data.into(),
        }
    }

    /// Builds a leader no-op entry.
    pub fn noop(term: Term, index: Index) -> Entry {
        Entry {
            term,
            index,
            kind: EntryKind::Noop,
            data: Arc::from(Vec::new()),
        }
    }

    /// Size used for the per-message byte limit: payload plus a fixed header estimate.
    pub fn size_bytes(&self) -> u64 {
        const ENTRY_HEADER_BYTES: u64 = 24;
        ENTRY_HEADER_BYTES + self.data.len() as u64
    }
}

/// State that must be durable before the messages that depend on it are sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct HardState {
    /// Latest term this node has seen.
    pub term: Term,
    /// Candidate voted for in `term` ([`NO_NODE`] if none).
    pub vote: NodeId,
    /// Highest index known committed. Persisting it is an optimisation; it may lag.
    pub commit: Index,
}

/// Role of a node in its group.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Role {
    /// Follows a leader (or waits for one).
    Follower,
    /// Asks for pre-votes without raising its term.
    PreCandidate,
    /// Asks for votes in a raised term.
    Candidate,
    /// Accepts proposals and replicates them.
    Leader,
}

/// Volatile state reported when it changes, for routing and metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SoftState {
    /// Current role.
    pub role: Role,
    /// Known leader ([`NO_NODE`] if none).
    pub leader: NodeId,
}

/// Identity of a snapshot: the last log entry it covers and the voters at that point.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SnapshotMeta {
    /// Index of the last entry the snapshot covers.
    pub index: Index,
    /// Term of that entry.
    pub term: Term,
    /// Voters of the group (static membership; carried for the receiver's benefit).
    pub voters: Vec<NodeId>,
}

/// A state machine snapshot: metadata plus opaque application bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snapshot {
    /// What the snapshot covers.
    pub meta: SnapshotMeta,
    /// Opaque serialized state machine.
    pub data: Arc<[u8]>,
}

impl Snapshot {
    /// Builds a snapshot from its parts.
    pub fn new(meta: SnapshotMeta, data: impl Into<Arc<[u8]>>) -> Snapshot {
        Snapshot {
            meta,
            data: data.into(),
        }
    }
}

/// A confirmed linearizable read: once the application has applied up to `index`, it may serve
/// the read identified by `ctx`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReadState {
    /// The caller's context passed to `read_index`.
    pub ctx: u64,
    /// Commit index at the time leadership was confirmed.
    pub index: Index,
}
