//! Tests named after the rules of Figure 2 of the Raft paper ("In Search of an Understandable
//! Consensus Algorithm"), the Figure 8 scenario, and the replication refinements (pipelining,
//! fast backtracking).

mod harness;

use harness::{config, Network};
use starcite_raft::{
    Config, Entry, EntryKind, LogStore, MemoryStorage, Message, MessageBody, NodeId, ProgressState,
    RawNode, Ready, RejectHint, Role, Storage,
};

fn message(from: NodeId, to: NodeId, term: u64, body: MessageBody) -> Message {
    Message {
        from,
        to,
        term,
        body,
    }
}

fn plain_config(id: NodeId, voters: &[NodeId]) -> Config {
    Config {
        pre_vote: false,
        check_quorum: false,
        ..config(id, voters)
    }
}

fn node(id: NodeId, voters: &[NodeId]) -> RawNode<MemoryStorage> {
    RawNode::new(plain_config(id, voters), MemoryStorage::new()).expect("node")
}

/// Takes a ready and persists it as an application would.
fn persist(node: &mut RawNode<MemoryStorage>) -> Ready {
    let ready = node.ready();
    let storage = node.storage_mut();
    if let Some(snapshot) = ready.snapshot.clone() {
        storage.apply_snapshot(snapshot).expect("snapshot");
    }
    storage.append(&ready.entries).expect("append");
    if let Some(hard_state) = ready.hard_state {
        storage.set_hard_state(hard_state).expect("hard state");
    }
    if let Some((index, term)) = ready.persist_point() {
        node.on_persisted(index, term);
    }
    ready
}

fn append(prev: (u64, u64), entries: Vec<Entry>, commit: u64) -> MessageBody {
    MessageBody::Append {
        prev_log_index: prev.0,
        prev_log_term: prev.1,
        entries,
        commit,
    }
}

fn entries(first_index: u64, terms: &[u64]) -> Vec<Entry> {
    terms
        .iter()
        .enumerate()
        .map(|(offset, &term)| Entry::normal(term, first_index + offset as u64, vec![1u8]))
        .collect()
}

fn all_messages(ready: &Ready) -> Vec<Message> {
    ready
        .messages
        .iter()
        .chain(ready.persisted_messages.iter())
        .cloned()
        .collect()
}

// ---- All servers ----

/// Figure 2, "Rules for Servers / All Servers": a message with a higher term makes the
/// receiver adopt the term and become follower.
#[test]
fn all_servers_adopt_higher_term_and_become_follower() {
    let mut network = Network::with_config(&[1, 2, 3], |c| Config {
        pre_vote: false,
        check_quorum: false,
        ..c
    });
    network.elect(1);
    let term = network.node(1).term();
    network.inject(message(
        2,
        1,
        term + 5,
        MessageBody::RequestVoteResponse { granted: false },
    ));
    assert_eq!(network.node(1).role(), Role::Follower);
    assert_eq!(network.node(1).term(), term + 5);
}

/// Figure 2, "Rules for Servers / All Servers": committed entries are applied in log order,
/// and every server applies the same entries.
#[test]
fn all_servers_apply_committed_entries_in_order() {
    let mut network = Network::new(&[1, 2, 3]);
    network.elect(1);
    for value in 0u8..20 {
        network.propose(1, &[value]);
    }
    network.tick_all(2);
    let expected: Vec<Vec<u8>> = (0u8..20).map(|value| vec![value]).collect();
    for id in [1, 2, 3] {
        assert_eq!(network.applied_data(id), expected, "node {id}");
        let indexes: Vec<u64> = network.applied[&id].iter().map(|e| e.index).collect();
        assert!(indexes.windows(2).all(|pair| pair[1] == pair[0] + 1));
    }
}

// ---- AppendEntries receiver ----

/// Figure 2, AppendEntries receiver rule 1: reply false if term < currentTerm.
#[test]
fn follower_rejects_append_with_stale_term() {
    let mut follower = node(2, &[1, 2, 3]);
    follower
        .step(message(
            3,
            2,
            4,
            MessageBody::Heartbeat {
                commit: 0,
                read_context: None,
            },
        ))
        .expect("step");
    persist(&mut follower);
    follower
        .step(message(1, 2, 3, append((0, 0), entries(1, &[3]), 0)))
        .expect("step");
    let ready = persist(&mut follower);
    assert_eq!(
        follower.last_index(),
        0,
        "stale entries must not be appended"
    );
    assert_eq!(follower.leader_id(), 3);
    assert!(
        all_messages(&ready).iter().all(|m| m.term == 4),
        "any answer carries the newer term"
    );
}

/// Figure 2, AppendEntries receiver rule 2: reply false if the log does not contain an entry
/// at prevLogIndex whose term matches prevLogTerm; the rejection carries a hint.
#[test]
fn follower_rejects_append_when_prev_entry_does_not_match() {
    let mut follower = node(2, &[1, 2, 3]);
    follower
        .step(message(1, 2, 1, append((5, 1), entries(6, &[1]), 0)))
        .expect("step");
    let ready = persist(&mut follower);
    assert_eq!(
        ready.messages,
        vec![message(
            2,
            1,
            1,
            MessageBody::AppendResponse {
                index: 5,
                reject: Some(RejectHint { index: 0, term: 0 })
            }
        )]
    );
    assert_eq!(follower.last_index(), 0);
}

/// Figure 2, AppendEntries receiver rules 3 and 4: a conflicting entry and all that follow it
/// are deleted, then new entries are appended (in the log and in storage).
#[test]
fn follower_truncates_conflicting_suffix_and_appends_new_entries() {
    let mut follower = node(2, &[1, 2, 3]);
    follower
        .step(message(1, 2, 1, append((0, 0), entries(1, &[1, 1, 1]), 0)))
        .expect("step");
    persist(&mut follower);
    assert_eq!(follower.storage().last_index(), 3);
    follower
        .step(message(3, 2, 2, append((1, 1), entries(2, &[2]), 0)))
        .expect("step");
    let ready = persist(&mut follower);
    assert_eq!(follower.last_index(), 2);
    assert_eq!(follower.storage().last_index(), 2);
    assert_eq!(follower.storage().term(2).expect("term"), 2);
    assert_eq!(
        ready.persisted_messages,
        vec![message(
            2,
            3,
            2,
            MessageBody::AppendResponse {
                index: 2,
                reject: None
            }
        )],
        "the acknowledgement waits for persistence"
    );
    assert!(ready.messages.is_empty());
}

/// Figure 2, AppendEntries receiver rule 5: commitIndex = min(leaderCommit, index of last
/// new entry).
#[test]
fn follower_sets_commit_to_min_of_leader_commit_and_last_new_entry() {
    let mut follower = node(2, &[1, 2, 3]);
    follower
        .step(message(1, 2, 1, append((0, 0), entries(1, &[1, 1, 1]), 10)))
        .expect("step");
    assert_eq!(follower.commit_index(), 3);
    let mut other = node(3, &[1, 2, 3]);
    other
        .step(message(1, 3, 1, append((0, 0), entries(1, &[1, 1, 1]), 0)))
        .expect("step");
    other
        .step(message(1, 3, 1, append((1, 1), entries(2, &[1]), 3)))
        .expect("step");
    assert_eq!(other.commit_index(), 2, "bounded by the last new entry");
}

// ---- RequestVote receiver ----

/// Figure 2, RequestVote receiver rule 2: vote for at most one candidate per term, and the
/// vote is acknowledged only after it is persisted.
#[test]
fn follower_grants_at_most_one_vote_per_term() {
    let mut voter = node(1, &[1, 2, 3]);
    let vote = |granted| MessageBody::RequestVoteResponse { granted };
    let request = MessageBody::RequestVote {
        last_log_index: 0,
        last_log_term: 0,
        force: false,
    };
    voter.step(message(2, 1, 1, request.clone())).expect("step");
    let ready = persist(&mut voter);
    assert!(
        ready.messages.is_empty(),
        "vote responses wait for persistence"
    );
    assert_eq!(ready.persisted_messages, vec![message(1, 2, 1, vote(true))]);
    assert_eq!(voter.storage().hard_state().vote, 2);
    voter.step(message(3, 1, 1, request.clone())).expect("step");
    let ready = persist(&mut voter);
    assert_eq!(
        ready.persisted_messages,
        vec![message(1, 3, 1, vote(false))]
    );
    // The same candidate asking again gets the same answer.
    voter.step(message(2, 1, 1, request)).expect("step");
    let ready = persist(&mut voter);
    assert_eq!(ready.persisted_messages, vec![message(1, 2, 1, vote(true))]);
}

/// Figure 2, RequestVote receiver rule 2 (§5.4.1): deny the vote when the candidate's log is
/// less up to date.
#[test]
fn follower_rejects_vote_for_candidate_with_stale_log() {
    let mut voter = node(1, &[1, 2, 3]);
    voter
        .step(message(3, 1, 2, append((0, 0), entries(1, &[1, 2]), 0)))
        .expect("step");
    persist(&mut voter);
    for (last_log_index, last_log_term) in [(5, 1), (1, 2)] {
        voter
            .step(message(
                2,
                1,
                3,
                MessageBody::RequestVote {
                    last_log_index,
                    last_log_term,
                    force: false,
                },
            ))
            .expect("step");
        let ready = persist(&mut voter);
        assert_eq!(
            ready.persisted_messages,
            vec![message(
                1,
                2,
                3,
                MessageBody::RequestVoteResponse { granted: false }
            )]
        );
    }
}

// ---- Followers and candidates ----

/// Figure 2, Followers: with no contact for an election timeout, become candidate: raise the
/// term, vote for self, and request votes (after persisting the vote).
#[test]
fn follower_starts_election_after_election_timeout() {
    let mut follower = node(1, &[1, 2, 3]);
    for _ in 0..20 {
        follower.tick();
    }
    assert_eq!(follower.role(), Role::Candidate);
    assert_eq!(follower.term(), 1);
    assert_eq!(follower.vote(), 1);
    let ready = persist(&mut follower);
    assert_eq!(ready.hard_state.map(|hs| (hs.term, hs.vote)), Some((1, 1)));
    let targets: Vec<NodeId> = ready.persisted_messages.iter().map(|m| m.to).collect();
    assert_eq!(targets, vec![2, 3]);
}

/// §5.2: election timeouts are randomized in [election_ticks, 2 * election_ticks).
#[test]
fn election_timeout_is_randomized_within_range() {
    let mut seen = std::collections::BTreeSet::new();
    for seed in 0..64 {
        let config = Config {
            seed,
            ..plain_config(1, &[1, 2, 3])
        };
        let mut node = RawNode::new(config, MemoryStorage::new()).expect("node");
        let mut ticks = 0;
        while node.role() == Role::Follower {
            node.tick();
            ticks += 1;
        }
        assert!((10..20).contains(&ticks), "timeout {ticks} out of range");
        seen.insert(ticks);
    }
    assert!(seen.len() > 3, "timeouts must vary with the seed: {seen:?}");
}

/// Figure 2, Candidates: votes from a majority make the candidate leader.
#[test]
fn candidate_becomes_leader_with_majority_votes() {
    let mut candidate = node(1, &[1, 2, 3, 4, 5]);
    for _ in 0..20 {
        candidate.tick();
    }
    persist(&mut candidate);
    let vote = MessageBody::RequestVoteResponse { granted: true };
    candidate
        .step(message(2, 1, 1, vote.clone()))
        .expect("step");
    assert_eq!(candidate.role(), Role::Candidate);
    candidate.step(message(3, 1, 1, vote)).expect("step");
    assert_eq!(candidate.role(), Role::Leader);
}

/// Figure 2, Candidates: an AppendEntries from a leader of the same term makes a candidate a
/// follower.
#[test]
fn candidate_steps_down_on_append_from_leader_of_same_term() {
    let mut candidate = node(1, &[1, 2, 3]);
    for _ in 0..20 {
        candidate.tick();
    }
    assert_eq!(candidate.role(), Role::Candidate);
    candidate
        .step(message(2, 1, 1, append((0, 0), Vec::new(), 0)))
        .expect("step");
    assert_eq!(candidate.role(), Role::Follower);
    assert_eq!(candidate.leader_id(), 2);
    assert_eq!(candidate.term(), 1);
}

/// Figure 2, All Servers applied to candidates: a higher term ends the candidacy.
#[test]
fn candidate_steps_down_on_higher_term() {
    let mut candidate = node(1, &[1, 2, 3]);
    for _ in 0..20 {
        candidate.tick();
    }
    candidate
        .step(message(
            2,
            1,
            7,
            MessageBody::RequestVoteResponse { granted: false },
        ))
        .expect("step");
    assert_eq!(candidate.role(), Role::Follower);
    assert_eq!(candidate.term(), 7);
}

/// Figure 2, Candidates: if the election timeout elapses (split vote), start a new election.
#[test]
fn candidate_starts_new_election_after_split_vote() {
    let mut candidate = node(1, &[1, 2, 3]);
    for _ in 0..20 {
        candidate.tick();
    }
    assert_eq!(candidate.term(), 1);
    for _ in 0..20 {
        candidate.tick();
    }
    assert_eq!(candidate.role(), Role::Candidate);
    assert_eq!(candidate.term(), 2);
}

/// A majority of rejections ends the candidacy early.
#[test]
fn candidate_becomes_follower_on_majority_rejection() {
    let mut candidate = node(1, &[1, 2, 3]);
    for _ in 0..20 {
        candidate.tick();
    }
    let reject = MessageBody::RequestVoteResponse { granted: false };
    candidate
        .step(message(2, 1, 1, reject.clone()))
        .expect("step");
    candidate.step(message(3, 1, 1, reject)).expect("step");
    assert_eq!(candidate.role(), Role::Follower);
}

// ---- Leaders ----

/// Figure 2, Leaders: on election, append a no-op of the new term, and send heartbeats each
/// heartbeat interval.
#[test]
fn leader_appends_noop_and_sends_heartbeats() {
    let mut network = Network::new(&[1, 2, 3]);
    network.elect(1);
    let leader = network.node(1);
    let last = leader.last_index();
    let noop = leader
        .storage()
        .entries(last, last + 1, u64::MAX)
        .expect("entries");
    assert_eq!(noop[0].kind, EntryKind::Noop);
    assert_eq!(noop[0].term, leader.term());
    let before = network.trace.len();
    network.tick(1, 1);
    let heartbeats = network.trace[before..]
        .iter()
        .filter(|m| matches!(m.body, MessageBody::Heartbeat { .. }))
        .count();
    assert_eq!(heartbeats, 2);
}

/// Figure 2, Leaders: an entry replicated on a majority is committed and applied, even when
/// a minority is unreachable.
#[test]
fn leader_commits_entry_replicated_on_majority() {
    let mut network = Network::new(&[1, 2, 3]);
    network.elect(1);
    network.isolate(3);
    let index = network.propose(1, b"x");
    assert_eq!(network.node(1).commit_index(), index);
    assert_eq!(network.applied_data(1), vec![b"x".to_vec()]);
    assert!(network.applied_data(3).is_empty());
}

/// §5.4.2 and Figure 2, Leaders: a leader commits by counting replicas only for an entry of
/// its current term; an older entry on a majority stays uncommitted until then.
#[test]
fn leader_only_commits_current_term_by_counting() {
    let mut leader = node(1, &[1, 2, 3]);
    leader
        .step(message(2, 1, 1, append((0, 0), entries(1, &[1, 1]), 1)))
        .expect("step");
    persist(&mut leader);
    for _ in 0..20 {
        leader.tick();
    }
    persist(&mut leader);
    leader
        .step(message(
            3,
            1,
            2,
            MessageBody::RequestVoteResponse { granted: true },
        ))
        .expect("step");
    assert_eq!(leader.role(), Role::Leader);
    persist(&mut leader);
    assert_eq!(leader.last_index(), 3, "no-op of term 2 at index 3");
    let ack = |index| MessageBody::AppendResponse {
        index,
        reject: None,
    };
    leader.step(message(3, 1, 2, ack(2))).expect("step");
    assert_eq!(
        leader.commit_index(),
        1,
        "index 2 is of term 1: not counted"
    );
    leader.step(message(3, 1, 2, ack(3))).expect("step");
    assert_eq!(leader.commit_index(), 3);
}

/// Figure 8 of the paper: an entry of an old term stored on a majority can still be
/// overwritten, so a leader must not commit it by counting. The leader of term 3 replicates
/// index 2 (term 1) to a majority but cannot commit it; the later leader overwrites it.
#[test]
fn figure_8_old_term_entry_on_majority_is_not_committed() {
    let mut network = Network::with_config(&[1, 2, 3, 4, 5], |c| Config {
        pre_vote: false,
        check_quorum: false,
        max_entries_bytes_per_msg: 1,
        ..c
    });
    // (a) S1 leads term 1; "x" at index 2 reaches only S2.
    network.elect(1);
    for other in [3, 4, 5] {
        network.cut_links.insert((1, other));
        network.cut_links.insert((other, 1));
    }
    let x_index = network.propose(1, b"x");
    assert_eq!(x_index, 2);
    assert_eq!(network.node(2).last_index(), 2);
    // (b) S1 crashes; S5 wins term 2 with S3 and S4 and stores an entry only locally.
    network.heal();
    network.isolate(1);
    network.restart(1);
    network.cut_links.insert((5, 2));
    network.cut_links.insert((2, 5));
    network.drop_filter =
        Some(|m: &Message| m.from == 5 && matches!(m.body, MessageBody::Append { .. }));
    network.elect(5);
    network.propose(5, b"y");
    // (c) S5 crashes; S1 wins term 3 and replicates index 2 (term 1) to S3, a majority with
    // S1 and S2, while its own term-3 entry does not get through.
    network.heal();
    network.isolate(5);
    network.restart(5);
    network.drop_filter = Some(|m: &Message| {
        m.from == 1
            && matches!(&m.body, MessageBody::Append { entries, .. }
                if entries.iter().any(|entry| entry.term >= 3))
    });
    network.elect(1);
    let term = network.node(1).term();
    assert!(term >= 3);
    // S3 and S4 lack index 2; their answer to a probe at index 2 (the probe itself carried
    // the dropped term-3 entry) sends S1 back to index 2.
    for id in [3, 4] {
        let reject = Some(RejectHint { index: 1, term: 1 });
        network.inject(message(
            id,
            1,
            term,
            MessageBody::AppendResponse { index: 2, reject },
        ));
    }
    for id in [2, 3, 4] {
        assert_eq!(network.node(id).storage().term(2).expect("term"), 1);
    }
    assert_eq!(network.node(1).commit_index(), 1, "index 2 must not commit");
    // (d) S1 crashes; S5 wins with S2, S3, S4 and overwrites index 2.
    network.heal();
    network.drop_filter = None;
    network.isolate(1);
    network.restart(1);
    network.elect(5);
    network.propose(5, b"z");
    for id in [2, 3, 4, 5] {
        assert!(!network.applied_data(id).contains(&b"x".to_vec()));
        assert_eq!(network.node(id).storage().term(2).expect("term"), 2);
    }
    assert_eq!(network.applied_data(5), vec![b"y".to_vec(), b"z".to_vec()]);
}

/// Safety: a voter that restarts keeps its term and vote and does not vote twice.
#[test]
fn restarted_voter_keeps_its_vote() {
    let mut network = Network::with_config(&[1, 2, 3], |c| Config {
        pre_vote: false,
        check_quorum: false,
        ..c
    });
    network.inject(message(
        2,
        1,
        1,
        MessageBody::RequestVote {
            last_log_index: 0,
            last_log_term: 0,
            force: false,
        },
    ));
    network.restart(1);
    assert_eq!(network.node(1).term(), 1);
    assert_eq!(network.node(1).vote(), 2);
    let before = network.trace.len();
    network.inject(message(
        3,
        1,
        1,
        MessageBody::RequestVote {
            last_log_index: 0,
            last_log_term: 0,
            force: false,
        },
    ));
    assert!(network.trace[before..]
        .iter()
        .all(|m| m.body != MessageBody::RequestVoteResponse { granted: true }));
}

// ---- Replication refinements ----

/// Fast backtracking: a follower with a long divergent suffix is repaired in a few round
/// trips, not one per entry.
#[test]
fn leader_backtracks_over_a_divergent_suffix_in_few_round_trips() {
    let mut network = Network::with_config(&[1, 2, 3], |c| Config {
        check_quorum: false,
        ..c
    });
    network.elect(1);
    network.propose(1, b"committed");
    network.isolate(1);
    for value in 0u8..50 {
        network.node_mut(1).propose(vec![value]).expect("propose");
    }
    network.settle();
    network.heal();
    network.isolate(1);
    network.tick_all(25);
    let first = *network
        .leaders()
        .iter()
        .find(|&&id| id != 1)
        .expect("new leader");
    network.propose(first, b"new");
    for value in 0u8..5 {
        network.propose(first, &[value]);
    }
    // A second leader starts probing 1 at its own last index, inside the divergent suffix.
    let leader = if first == 2 { 3 } else { 2 };
    network
        .node_mut(first)
        .transfer_leader(leader)
        .expect("transfer");
    network.settle();
    assert_eq!(network.node(leader).role(), Role::Leader);
    network.heal();
    let before = network.trace.len();
    network.tick_all(3);
    let rejections = network.trace[before..]
        .iter()
        .filter(|m| {
            m.from == 1
                && matches!(
                    m.body,
                    MessageBody::AppendResponse {
                        reject: Some(_),
                        ..
                    }
                )
        })
        .count();
    assert!((1..=3).contains(&rejections), "{rejections} rejections");
    assert_eq!(
        network.node(1).last_index(),
        network.node(leader).last_index()
    );
    let mut expected = vec![b"committed".to_vec(), b"new".to_vec()];
    expected.extend((0u8..5).map(|value| vec![value]));
    assert_eq!(network.applied_data(1), expected);
}

/// Pipelining: a follower in replicate state receives at most `max_inflight_msgs` appends
/// while none is acknowledged, each within the per-message byte limit.
#[test]
fn pipelining_window_bounds_unacknowledged_appends() {
    let mut network = Network::with_config(&[1, 2, 3], |c| Config {
        max_inflight_msgs: 4,
        max_entries_bytes_per_msg: 100,
        ..c
    });
    network.elect(1);
    network.propose(1, b"warm up");
    assert_eq!(
        network.node(1).peer_progress(2).map(|p| p.state),
        Some(ProgressState::Replicate)
    );
    network.cut_links.insert((2, 1));
    let before = network.trace.len();
    for _ in 0..20 {
        network.node_mut(1).propose(vec![7u8; 50]).expect("propose");
    }
    network.settle();
    let appends: Vec<&Message> = network.trace[before..]
        .iter()
        .filter(|m| m.from == 1 && m.to == 2 && matches!(m.body, MessageBody::Append { .. }))
        .collect();
    assert_eq!(appends.len(), 4, "window of 4");
    for append in &appends {
        let MessageBody::Append { entries, .. } = &append.body else {
            unreachable!()
        };
        let bytes: u64 = entries.iter().map(Entry::size_bytes).sum();
        assert!(entries.len() == 1 || bytes <= 100);
    }
    assert_eq!(
        network.node(1).peer_progress(2).map(|p| p.inflight_count),
        Some(4)
    );
    network.heal();
    network.tick_all(5);
    assert_eq!(network.node(2).last_index(), network.node(1).last_index());
    assert_eq!(
        network.node(2).commit_index(),
        network.node(1).commit_index()
    );
}
