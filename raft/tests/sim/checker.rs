//! Safety properties of Raft, checked incrementally as the simulation runs.
//!
//! Every observation is checked when it is made, so a violation names the step that caused it.
//! Entries are identified by a hash of their payload; client values are unique, so equal
//! hashes mean equal commands.

use std::collections::BTreeMap;
use std::fmt;

/// Raft group identifier.
pub type GroupId = u32;
/// Raft node identifier.
pub type NodeId = u64;
/// Raft term.
pub type Term = u64;
/// Raft log index.
pub type Index = u64;

/// A broken safety or liveness property.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    /// Which property broke, e.g. `election safety`.
    pub property: &'static str,
    /// What was observed.
    pub detail: String,
}

impl fmt::Display for Violation {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(formatter, "{}: {}", self.property, self.detail)
    }
}

fn violation(property: &'static str, detail: String) -> Result<(), Violation> {
    Err(Violation { property, detail })
}

/// What a node's log holds at one index, as seen by the leader completeness check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogSlot {
    /// The index is covered by the node's snapshot.
    Compacted,
    /// An entry of this term with this payload hash.
    Entry { term: Term, hash: u64 },
    /// The log is shorter.
    Missing,
}

/// An entry written to some node's log: its term and payload, and the term of its predecessor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct WrittenEntry {
    hash: u64,
    previous_term: Option<Term>,
}

/// Everything the checker knows about one group.
#[derive(Debug, Default)]
struct GroupHistory {
    /// Election safety: the single leader of each term.
    leader_by_term: BTreeMap<Term, NodeId>,
    /// Log matching: the content every log must have at (index, term).
    written: BTreeMap<(Index, Term), WrittenEntry>,
    /// State machine safety: the command applied at each index, with its term.
    applied: BTreeMap<Index, (Term, u64)>,
    /// Acknowledged proposals: index → payload hash.
    acknowledged: BTreeMap<Index, u64>,
    /// State machine digest after applying each index (also checks received snapshots).
    digests: BTreeMap<Index, u64>,
}

/// The incremental checker for all groups of one run.
#[derive(Debug, Default)]
pub struct Checker {
    groups: BTreeMap<GroupId, GroupHistory>,
}

impl Checker {
    /// A checker that has seen nothing.
    pub fn new() -> Checker {
        Checker::default()
    }

    fn group(&mut self, group: GroupId) -> &mut GroupHistory {
        self.groups.entry(group).or_default()
    }

    /// Election safety: at most one leader per term.
    pub fn observe_leader(
        &mut self,
        group: GroupId,
        node: NodeId,
        term: Term,
    ) -> Result<(), Violation> {
        let history = self.group(group);
        match history.leader_by_term.get(&term) {
            Some(&leader) if leader != node => violation(
                "election safety",
                format!("group {group} term {term} has leaders {leader} and {node}"),
            ),
            Some(_) => Ok(()),
            None => {
                history.leader_by_term.insert(term, node);
                Ok(())
            }
        }
    }

    /// Leader completeness: a new leader's log holds every entry known to be committed in an
    /// earlier term. `slot` looks up the leader's log.
    pub fn observe_new_leader(
        &mut self,
        group: GroupId,
        node: NodeId,
        term: Term,
        slot: impl Fn(Index) -> LogSlot,
    ) -> Result<(), Violation> {
        let history = self.group(group);
        for (&index, &(entry_term, hash)) in &history.applied {
            if entry_term >= term {
                continue;
            }
            match slot(index) {
                LogSlot::Compacted => {}
                LogSlot::Entry { term: found, hash: found_hash }
                    if found == entry_term && found_hash == hash => {}
                other => {
                    return violation(
                        "leader completeness",
                        format!(
                            "group {group}: leader {node} of term {term} has {other:?} at committed index {index} (term {entry_term})"
                        ),
                    )
                }
            }
        }
        Ok(())
    }

    /// Log matching: two logs with an entry of the same index and term agree on it and, by
    /// induction, on everything before it.
    pub fn observe_written(
        &mut self,
        group: GroupId,
        node: NodeId,
        index: Index,
        term: Term,
        hash: u64,
        previous_term: Option<Term>,
    ) -> Result<(), Violation> {
        let history = self.group(group);
        let entry = WrittenEntry {
            hash,
            previous_term,
        };
        match history.written.get(&(index, term)) {
            None => {
                history.written.insert((index, term), entry);
                Ok(())
            }
            Some(known) => {
                let same_hash = known.hash == hash;
                // A log starting right after a snapshot does not know its predecessor's term.
                let same_previous = known.previous_term.is_none()
                    || previous_term.is_none()
                    || known.previous_term == previous_term;
                if same_hash && same_previous {
                    if known.previous_term.is_none() {
                        history.written.insert((index, term), entry);
                    }
                    Ok(())
                } else {
                    violation(
                        "log matching",
                        format!(
                            "group {group}: node {node} wrote {entry:?} at index {index} term {term}, another log has {known:?}"
                        ),
                    )
                }
            }
        }
    }

    /// State machine safety: every node applies the same command at the same index. Returns
    /// whether this is the first time any node applies `index`.
    pub fn observe_applied(
        &mut self,
        group: GroupId,
        node: NodeId,
        index: Index,
        term: Term,
        hash: u64,
    ) -> Result<bool, Violation> {
        let history = self.group(group);
        match history.applied.get(&index) {
            None => {
                history.applied.insert(index, (term, hash));
                Ok(true)
            }
            Some(&known) if known == (term, hash) => Ok(false),
            Some(&known) => violation(
                "state machine safety",
                format!(
                    "group {group}: node {node} applied (term {term}, hash {hash:#x}) at index {index}, another node applied (term {}, hash {:#x})",
                    known.0, known.1
                ),
            )
            .map(|()| false),
        }
    }

    /// State machine safety for whole states: every node's state after index `index` is the
    /// same, whether reached by applying entries or by installing a snapshot.
    pub fn observe_state(
        &mut self,
        group: GroupId,
        node: NodeId,
        index: Index,
        digest: u64,
    ) -> Result<(), Violation> {
        let history = self.group(group);
        match history.digests.get(&index) {
            None => {
                history.digests.insert(index, digest);
                Ok(())
            }
            Some(&known) if known == digest => Ok(()),
            Some(&known) => violation(
                "state machine safety",
                format!("group {group}: node {node} has state {digest:#x} after index {index}, another node {known:#x}"),
            ),
        }
    }

    /// Durability: an entry is committed only once a quorum of voters has it durable, and a
    /// durable entry that is committed is never lost. `durable_count` is how many voters hold
    /// (`index`, `term`) in durable storage (or in a durable snapshot covering it).
    pub fn check_committed_durable(
        group: GroupId,
        index: Index,
        term: Term,
        durable_count: usize,
        voter_count: usize,
    ) -> Result<(), Violation> {
        if durable_count < voter_count / 2 + 1 {
            return violation(
                "committed entry durable on a quorum",
                format!("group {group}: index {index} (term {term}) was applied but is durable on only {durable_count} of {voter_count} voters"),
            );
        }
        Ok(())
    }

    /// Records a proposal acknowledged to its client (applied by the leader that proposed it).
    pub fn observe_acknowledged(&mut self, group: GroupId, index: Index, hash: u64) {
        self.group(group).acknowledged.insert(index, hash);
    }

    /// The highest index of an acknowledged proposal of `group`, if any.
    pub fn acknowledged_index_max(&self, group: GroupId) -> Index {
        self.groups
            .get(&group)
            .and_then(|history| history.acknowledged.keys().next_back().copied())
            .unwrap_or(0)
    }

    /// Linearizable reads: a read returns state that includes every write acknowledged before
    /// the read started.
    pub fn observe_read(
        &self,
        group: GroupId,
        node: NodeId,
        acknowledged_before_start: Index,
        returned_applied_index: Index,
    ) -> Result<(), Violation> {
        if returned_applied_index < acknowledged_before_start {
            return violation(
                "linearizable read",
                format!(
                    "group {group}: read on node {node} saw applied index {returned_applied_index}, but index {acknowledged_before_start} was acknowledged before it started"
                ),
            );
        }
        Ok(())
    }

    /// Durability of acknowledged proposals: each one is applied at its index (checked at the
    /// end of a run, when every node has caught up). `applied_index` is the lowest applied
    /// index over all members of the group.
    pub fn check_acknowledged_applied(
        &self,
        group: GroupId,
        applied_index: Index,
    ) -> Result<(), Violation> {
        let Some(history) = self.groups.get(&group) else {
            return Ok(());
        };
        for (&index, &hash) in &history.acknowledged {
            if index > applied_index {
                return violation(
                    "acknowledged write lost",
                    format!("group {group}: acknowledged index {index} not applied everywhere (lowest applied {applied_index})"),
                );
            }
            match history.applied.get(&index) {
                Some(&(_, applied_hash)) if applied_hash == hash => {}
                other => {
                    return violation(
                        "acknowledged write lost",
                        format!("group {group}: acknowledged hash {hash:#x} at index {index}, applied {other:?}"),
                    )
                }
            }
        }
        Ok(())
    }
}
