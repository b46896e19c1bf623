//! The local Raft members behind `starcite_raft_groups{role}`, `starcite_raft_term_max` and
//! `starcite_raft_leader_changes_total`.
//!
//! Every shard's driver reports a member whenever its role, known leader or term changes; the
//! gauges are computed from the latest report of each member when rendered, so that members on
//! different shards never overwrite each other's counts.

use std::collections::HashMap;
use std::sync::Mutex;

use starcite_raft::{NodeId, Role, NO_NODE};

/// Most members tracked: one per group, and a node hosts at most `STARCITE_NUM_GROUPS`
/// (≤ 65,536) groups. Reports of further groups are ignored.
pub const RAFT_MEMBERS_MAX: usize = 65_536;

/// Slot of a role in `RAFT_ROLES` (`leader`, `follower`, `candidate`, `down`).
const ROLE_LEADER: usize = 0;
const ROLE_FOLLOWER: usize = 1;
const ROLE_CANDIDATE: usize = 2;
const ROLE_DOWN: usize = 3;

/// The latest report of one member.
#[derive(Clone, Copy, Debug)]
struct MemberReport {
    /// Slot in `RAFT_ROLES`.
    role_slot: usize,
    term: u64,
    /// The last term in which this member knew a leader: a new leader is a new term.
    leader_term: Option<u64>,
}

/// The latest report of every local member, by group id.
#[derive(Default)]
pub(super) struct RaftMembers {
    members: Mutex<HashMap<u32, MemberReport>>,
}

/// Counts by role and the highest term, as rendered.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(super) struct RaftMembersSummary {
    pub by_role: [u64; 4],
    pub term_max: u64,
}

impl RaftMembers {
    /// Records the state of the member of `group_id`; returns whether it observed a leader it
    /// had not known before (a leader change).
    pub(super) fn observe(&self, group_id: u32, role: Role, term: u64, leader: NodeId) -> bool {
        let role_slot = match role {
            Role::Leader => ROLE_LEADER,
            Role::Follower => ROLE_FOLLOWER,
            Role::PreCandidate | Role::Candidate => ROLE_CANDIDATE,
        };
        let mut members = self
            .members
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if members.len() >= RAFT_MEMBERS_MAX && !members.contains_key(&group_id) {
            return false;
        }
        let report = members.entry(group_id).or_insert(MemberReport {
            role_slot,
            term,
            leader_term: None,
        });
        report.role_slot = role_slot;
        report.term = report.term.max(term);
        let new_leader = leader != NO_NODE && report.leader_term.is_none_or(|known| term > known);
        if new_leader {
            report.leader_term = Some(term);
        }
        new_leader
    }

    /// Counts by role and the highest term; `None` before any member reported. With
    /// `storage_failed` every member counts as `down`.
    pub(super) fn summary(&self, storage_failed: bool) -> Option<RaftMembersSummary> {
        let members = self
            .members
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if members.is_empty() {
            return None;
        }
        let mut summary = RaftMembersSummary::default();
        for report in members.values() {
            let slot = if storage_failed {
                ROLE_DOWN
            } else {
                report.role_slot
            };
            summary.by_role[slot] += 1;
            summary.term_max = summary.term_max.max(report.term);
        }
        Some(summary)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roles_of_members_on_any_shard_add_up() {
        let members = RaftMembers::default();
        assert_eq!(members.summary(false), None);
        members.observe(0, Role::Leader, 3, 1);
        members.observe(1, Role::Follower, 5, 2);
        members.observe(2, Role::Candidate, 7, NO_NODE);
        members.observe(3, Role::PreCandidate, 2, NO_NODE);
        let summary = members.summary(false);
        assert_eq!(
            summary,
            Some(RaftMembersSummary {
                by_role: [1, 1, 2, 0],
                term_max: 7
            })
        );
        // A member that changes role moves between counts instead of being counted twice.
        members.observe(2, Role::Leader, 7, 1);
        assert_eq!(
            members.summary(false).map(|s| s.by_role),
            Some([2, 1, 1, 0])
        );
        assert_eq!(members.summary(true).map(|s| s.by_role), Some([0, 0, 0, 4]));
    }

    #[test]
    fn a_leader_change_is_a_new_leader_in_a_later_term() {
        let members = RaftMembers::default();
        assert!(!members.observe(0, Role::Follower, 1, NO_NODE));
        assert!(members.observe(0, Role::Follower, 1, 2));
        // Losing and finding the same leader of the same term again is no change.
        assert!(!members.observe(0, Role::PreCandidate, 1, NO_NODE));
        assert!(!members.observe(0, Role::Follower, 1, 2));
        assert!(members.observe(0, Role::Leader, 2, 1));
        assert!(members.observe(1, Role::Leader, 1, 1));
    }
}
