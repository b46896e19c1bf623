//! Tests of the extensions beyond Figure 2: pre-vote, check-quorum and the leader lease,
//! leadership transfer, ReadIndex reads, snapshot transfer, asynchronous persistence,
//! restart, and determinism.

mod harness;

use harness::Network;
use starcite_raft::{Config, Message, MessageBody, ReadState, Role, Storage};

/// PreVote: a partitioned node keeps campaigning without raising its term, so when it
/// rejoins it does not depose the healthy leader.
#[test]
fn pre_vote_keeps_partitioned_node_from_disrupting_leader() {
    let mut network = Network::new(&[1, 2, 3]);
    network.elect(1);
    let term = network.node(1).term();
    network.isolate(3);
    network.tick_all(100);
    assert_eq!(
        network.node(3).term(),
        term,
        "pre-vote never raises the term"
    );
    assert_eq!(network.node(3).role(), Role::PreCandidate);
    network.heal();
    network.tick_all(30);
    assert_eq!(network.node(1).role(), Role::Leader);
    assert_eq!(network.node(1).term(), term);
    assert_eq!(network.node(3).leader_id(), 1);
}

/// Without pre-vote the same partition raises the term and forces an election, which is
/// what pre-vote prevents.
#[test]
fn without_pre_vote_partitioned_node_raises_its_term() {
    let mut network = Network::with_config(&[1, 2, 3], |c| Config {
        pre_vote: false,
        check_quorum: false,
        ..c
    });
    network.elect(1);
    let term = network.node(1).term();
    network.isolate(3);
    network.tick_all(100);
    assert!(network.node(3).term() > term);
}

/// Leader lease: followers that heard from a live leader ignore a vote request, even a
/// real (non pre-) one with a higher term.
#[test]
fn followers_with_live_leader_ignore_vote_requests() {
    let mut network = Network::new(&[1, 2, 3]);
    network.elect(1);
    network.tick_all(2);
    let term = network.node(1).term();
    network.inject(Message {
        from: 3,
        to: 2,
        term: term + 1,
        body: MessageBody::RequestVote {
            last_log_index: 100,
            last_log_term: term,
            force: false,
        },
    });
    assert_eq!(network.node(2).term(), term);
    assert_eq!(network.node(2).leader_id(), 1);
}

/// CheckQuorum: a leader that hears from no quorum within an election timeout steps down.
#[test]
fn check_quorum_leader_without_quorum_steps_down() {
    let mut network = Network::new(&[1, 2, 3]);
    network.elect(1);
    network.isolate(1);
    network.tick(1, 25);
    assert_eq!(network.node(1).role(), Role::Follower);
    assert!(network.node_mut(1).propose(b"x".to_vec()).is_err());
}

/// CheckQuorum: a leader with a quorum stays leader indefinitely.
#[test]
fn check_quorum_leader_with_quorum_stays() {
    let mut network = Network::new(&[1, 2, 3]);
    network.elect(1);
    network.isolate(3);
    network.tick_all(100);
    assert_eq!(network.node(1).role(), Role::Leader);
}

/// Leadership transfer to an up-to-date follower: it campaigns at once and wins, skipping
/// the pre-vote and overriding the lease.
#[test]
fn transfer_leader_to_up_to_date_follower() {
    let mut network = Network::new(&[1, 2, 3]);
    network.elect(1);
    network.propose(1, b"a");
    network.node_mut(1).transfer_leader(2).expect("transfer");
    network.settle();
    assert_eq!(network.node(2).role(), Role::Leader);
    assert_eq!(network.node(1).role(), Role::Follower);
    assert_eq!(network.node(1).leader_id(), 2);
    network.propose(2, b"b");
    network.tick_all(2);
    assert_eq!(network.applied_data(1), vec![b"a".to_vec(), b"b".to_vec()]);
}

/// Leadership transfer to a lagging follower: the leader first brings it up to date, and
/// rejects proposals meanwhile.
#[test]
fn transfer_leader_catches_up_lagging_target_and_blocks_proposals() {
    let mut network = Network::new(&[1, 2, 3]);
    network.elect(1);
    network.isolate(3);
    for value in 0u8..10 {
        network.propose(1, &[value]);
    }
    network.heal();
    network.cut_links.insert((1, 3));
    network.node_mut(1).transfer_leader(3).expect("transfer");
    network.settle();
    assert!(matches!(
        network.node_mut(1).propose(b"x".to_vec()),
        Err(starcite_raft::RaftError::TransferInProgress { target: 3 })
    ));
    network.heal();
    network.tick(1, 1);
    assert_eq!(network.node(3).role(), Role::Leader);
    assert_eq!(network.node(3).last_index(), network.node(1).last_index());
}

/// A transfer that cannot finish is abandoned after an election timeout; proposals resume.
#[test]
fn transfer_leader_aborts_after_election_timeout() {
    let mut network = Network::new(&[1, 2, 3]);
    network.elect(1);
    network.isolate(3);
    network.node_mut(1).transfer_leader(3).expect("transfer");
    assert_eq!(network.node(1).transfer_target(), Some(3));
    network.tick(1, 10);
    assert_eq!(network.node(1).transfer_target(), None);
    assert_eq!(network.node(1).role(), Role::Leader);
    network.propose(1, b"after");
}

/// ReadIndex on the leader: the read is released after a quorum of heartbeat responses, at
/// the commit index recorded when it arrived.
#[test]
fn read_index_on_leader_confirms_with_heartbeat_quorum() {
    let mut network = Network::new(&[1, 2, 3]);
    network.elect(1);
    let index = network.propose(1, b"a");
    network.node_mut(1).read_index(42).expect("read");
    assert!(network.read_states[&1].is_empty());
    network.settle();
    assert_eq!(network.read_states[&1], vec![ReadState { ctx: 42, index }]);
}

/// ReadIndex: a leader cut off from its quorum never confirms a read.
#[test]
fn read_index_on_isolated_leader_is_never_confirmed() {
    let mut network = Network::with_config(&[1, 2, 3], |c| Config {
        check_quorum: false,
        ..c
    });
    network.elect(1);
    network.isolate(1);
    network.node_mut(1).read_index(7).expect("read");
    network.tick(1, 30);
    assert!(network.read_states[&1].is_empty());
}

/// ReadIndex: reads wait until the new leader committed an entry of its own term.
#[test]
fn read_index_waits_for_commit_in_current_term() {
    let mut network = Network::new(&[1, 2, 3]);
    network.drop_filter = Some(|m: &Message| matches!(m.body, MessageBody::AppendResponse { .. }));
    network.elect(1);
    assert_eq!(network.node(1).commit_index(), 0);
    network.node_mut(1).read_index(1).expect("read");
    network.settle();
    network.tick(1, 1);
    assert!(network.read_states[&1].is_empty());
    network.drop_filter = None;
    network.tick(1, 2);
    let commit = network.node(1).commit_index();
    assert_eq!(
        network.read_states[&1],
        vec![ReadState {
            ctx: 1,
            index: commit
        }]
    );
}

/// ReadIndex on a follower: forwarded to the leader; the answer carries the leader's index.
#[test]
fn read_index_on_follower_is_forwarded_to_leader() {
    let mut network = Network::new(&[1, 2, 3]);
    network.elect(1);
    let index = network.propose(1, b"a");
    network.node_mut(2).read_index(9).expect("read");
    network.settle();
    assert_eq!(network.read_states[&2], vec![ReadState { ctx: 9, index }]);
    assert!(network.read_states[&1].is_empty());
}

/// Snapshot: a follower behind the leader's compacted log receives the snapshot in bounded
/// chunks, installs it, and then catches up by appends.
#[test]
fn lagging_follower_installs_chunked_snapshot() {
    let mut network = Network::with_config(&[1, 2, 3], |c| Config {
        snapshot_chunk_bytes_max: 10,
        ..c
    });
    network.elect(1);
    network.isolate(3);
    for value in 0u8..10 {
        network.propose(1, &[value]);
    }
    network.snapshot_and_compact(1, vec![5u8; 35]);
    let snapshot_index = network.node(1).applied_index();
    assert!(network.node(1).storage().first_index() > 1);
    network.propose(1, b"after");
    network.heal();
    let before = network.trace.len();
    network.tick_all(3);
    let chunks: Vec<usize> = network.trace[before..]
        .iter()
        .filter_map(|m| match &m.body {
            MessageBody::InstallSnapshot { data, .. } => Some(data.len()),
            _ => None,
        })
        .collect();
    assert_eq!(chunks, vec![10, 10, 10, 5]);
    let follower = network.node(3);
    assert_eq!(follower.storage().first_index(), snapshot_index + 1);
    assert_eq!(follower.last_index(), network.node(1).last_index());
    assert_eq!(follower.commit_index(), network.node(1).commit_index());
    assert_eq!(network.applied_data(3), vec![b"after".to_vec()]);
    assert_eq!(
        network.node(1).peer_progress(3).map(|p| p.match_index),
        Some(follower.last_index())
    );
}

/// Snapshot: a lost chunk is resent after an election timeout and the transfer completes.
#[test]
fn lost_snapshot_chunk_is_resent() {
    let mut network = Network::with_config(&[1, 2, 3], |c| Config {
        snapshot_chunk_bytes_max: 10,
        ..c
    });
    network.elect(1);
    network.isolate(3);
    for value in 0u8..5 {
        network.propose(1, &[value]);
    }
    network.snapshot_and_compact(1, vec![5u8; 25]);
    network.heal();
    network.drop_filter =
        Some(|m: &Message| matches!(m.body, MessageBody::InstallSnapshot { offset: 10, .. }));
    network.tick_all(2);
    assert!(network.node(3).last_index() < network.node(1).last_index());
    network.drop_filter = None;
    network.tick_all(12);
    assert_eq!(network.node(3).last_index(), network.node(1).last_index());
}

/// Asynchronous persistence: a leader replicates before its own write is durable but counts
/// itself only once it is; with one follower down, commit waits for the leader's persist.
#[test]
fn leader_counts_itself_only_after_persist() {
    let mut network = Network::new(&[1, 2, 3]);
    network.elect(1);
    network.isolate(3);
    network.hold_persistence.insert(1);
    let index = network.node_mut(1).propose(b"a".to_vec()).expect("propose");
    network.settle();
    assert_eq!(
        network.node(2).last_index(),
        index,
        "sent before the leader's persist"
    );
    assert!(network.node(1).commit_index() < index);
    network.release(1);
    network.settle();
    assert_eq!(network.node(1).commit_index(), index);
}

/// Asynchronous persistence: a follower's acknowledgement is sent only after its persist.
#[test]
fn follower_acknowledges_only_after_persist() {
    let mut network = Network::new(&[1, 2, 3]);
    network.elect(1);
    network.isolate(3);
    network.hold_persistence.insert(2);
    let index = network.propose(1, b"a");
    assert!(network.node(1).commit_index() < index);
    network.release(2);
    network.settle();
    assert_eq!(network.node(1).commit_index(), index);
}

/// Restart: a voter restarted from its persisted state rejoins and catches up, and its
/// state machine is rebuilt from the log.
#[test]
fn restarted_voter_rejoins_and_catches_up() {
    let mut network = Network::new(&[1, 2, 3]);
    network.elect(1);
    network.propose(1, b"a");
    network.restart(2);
    network.propose(1, b"b");
    network.tick_all(3);
    assert_eq!(network.node(2).last_index(), network.node(1).last_index());
    assert_eq!(network.applied_data(2), vec![b"a".to_vec(), b"b".to_vec()]);
    assert_eq!(network.node(1).role(), Role::Leader);
}

/// Restart of a whole single-voter group: the log and commit survive, and the node leads
/// again.
#[test]
fn single_voter_restarts_and_leads_again() {
    let mut network = Network::new(&[1]);
    network.elect(1);
    network.propose(1, b"a");
    network.restart(1);
    network.elect(1);
    assert_eq!(network.applied_data(1), vec![b"a".to_vec()]);
    network.propose(1, b"b");
    assert_eq!(network.applied_data(1), vec![b"a".to_vec(), b"b".to_vec()]);
}

/// Determinism: the same seeds and inputs produce the same message trace.
#[test]
fn same_inputs_produce_same_trace() {
    let run = || {
        let mut network = Network::new(&[1, 2, 3]);
        network.tick_all(40);
        for value in 0u8..5 {
            if let Some(&leader) = network.leaders().first() {
                network.propose(leader, &[value]);
            }
        }
        network.tick_all(5);
        network.trace
    };
    assert_eq!(run(), run());
}
