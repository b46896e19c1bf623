//! Three engines in one process, each with its own data directory and executors, connected by
//! the in-process Raft transport: election, replication, follower loss and restart, catch-up by
//! log and by snapshot, and a full restart after several snapshots.

#![allow(clippy::unwrap_used)]

mod shard_support;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use shard_support::{append_one, create_request, test_config, TestNode};
use starcite_engine::api::{EventBatch, Service, ServiceError, SessionRecord};
use starcite_engine::config::RaftCluster;
use starcite_engine::placement::group_of;
use starcite_engine::raftlog::InProcessNetwork;
use starcite_raft::Role;

const SHARDS: u32 = 2;
const GROUPS: u32 = 16;
const NODE_IDS: [u64; 3] = [1, 2, 3];
/// How long a test waits for the cluster to reach an expected state.
const DEADLINE: Duration = Duration::from_secs(30);

struct Cluster {
    network: Arc<InProcessNetwork>,
    dirs: Vec<PathBuf>,
    nodes: Vec<Option<TestNode>>,
    snapshot_entries: u64,
    _root: tempfile::TempDir,
}

fn node_config(
    dir: &Path,
    node_id: u64,
    network: &Arc<InProcessNetwork>,
    snapshot_entries: u64,
) -> starcite_engine::config::EngineConfig {
    let mut config = test_config(dir, SHARDS);
    config.num_groups = GROUPS;
    config.node_name = format!("node{node_id}@localhost");
    config.raft_heartbeat_ms = 20;
    config.raft_election_timeout_ms = 200;
    config.raft_snapshot_entries = snapshot_entries;
    config.cluster = Some(RaftCluster {
        node_id,
        group_voters: Arc::new(vec![NODE_IDS.to_vec(); GROUPS as usize]),
        transport: network.clone(),
    });
    config
}

impl Cluster {
    fn start(snapshot_entries: u64) -> Cluster {
        let root = tempfile::tempdir().unwrap();
        let dirs: Vec<PathBuf> = NODE_IDS
            .iter()
            .map(|id| root.path().join(format!("node{id}")))
            .collect();
        let mut cluster = Cluster {
            network: InProcessNetwork::new(),
            dirs,
            nodes: vec![None, None, None],
            snapshot_entries,
            _root: root,
        };
        for position in 0..NODE_IDS.len() {
            cluster.restart(position);
        }
        cluster
    }

    /// Starts (or restarts) the node at `position` on its directory.
    fn restart(&mut self, position: usize) {
        let node_id = NODE_IDS[position];
        let config = node_config(
            &self.dirs[position],
            node_id,
            &self.network,
            self.snapshot_entries,
        );
        let node = TestNode::start(config).unwrap();
        self.network.attach(node.raft_inbox());
        self.nodes[position] = Some(node);
    }

    /// Stops the node at `position` as a crash would look to the others.
    fn kill(&mut self, position: usize) {
        self.network.detach(NODE_IDS[position]);
        if let Some(node) = self.nodes[position].take() {
            node.stop().unwrap();
        }
    }

    fn node(&self, position: usize) -> &TestNode {
        self.nodes[position].as_ref().unwrap()
    }

    /// Position of the node whose member leads `group`, waiting for an election.
    fn leader_of(&self, group: u32) -> usize {
        let started = Instant::now();
        loop {
            for (position, node) in self.nodes.iter().enumerate() {
                let Some(node) = node else { continue };
                let status = node.run(group % SHARDS, move |engine| async move {
                    engine.raft_status(group)
                });
                if status.is_some_and(|(role, ..)| role == Role::Leader) {
                    return position;
                }
            }
            assert!(started.elapsed() < DEADLINE, "no leader for group {group}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Runs a write on the group's leader, retrying while leadership moves. Writes carry
    /// producer seqs, so a retry of a write that did commit dedupes.
    fn write<T: Send + 'static>(
        &self,
        session_id: &str,
        attempt: impl Fn(
                starcite_engine::EngineHandle,
            )
                -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<T, ServiceError>>>>
            + Send
            + Sync
            + Clone
            + 'static,
    ) -> T {
        let group = group_of(session_id, GROUPS);
        let started = Instant::now();
        loop {
            let leader = self.leader_of(group);
            let attempt = attempt.clone();
            let result = self.node(leader).run(group % SHARDS, attempt);
            match result {
                Ok(value) => return value,
                Err(ServiceError::RaftUnavailable | ServiceError::RaftTimeout) => {
                    assert!(
                        started.elapsed() < DEADLINE,
                        "write to {session_id} never committed"
                    );
                    std::thread::sleep(Duration::from_millis(20));
                }
                Err(error) => panic!("write to {session_id} failed: {error:?}"),
            }
        }
    }

    fn create(&self, session_id: &str) {
        let id = session_id.to_string();
        self.write(session_id, move |engine| {
            let id = id.clone();
            Box::pin(async move {
                match engine.create_session(create_request(&id)).await {
                    Ok(_) | Err(ServiceError::SessionExists) => Ok(()),
                    Err(error) => Err(error),
                }
            })
        });
    }

    fn append(&self, session_id: &str, producer_seq: u64) {
        let id = session_id.to_string();
        self.write(session_id, move |engine| {
            let id = id.clone();
            Box::pin(async move {
                engine
                    .append(append_one(&id, "p", producer_seq, producer_seq as i64))
                    .await
                    .map(|_| ())
            })
        });
    }

    /// Waits until the node at `position` reads `count` events of `session_id` (a linearizable
    /// read: on a follower through ReadIndex) and returns its view.
    fn read_all(
        &self,
        position: usize,
        session_id: &str,
        count: u64,
    ) -> (SessionRecord, EventBatch) {
        let started = Instant::now();
        loop {
            let id = session_id.to_string();
            let view = self.node(position).run(0, move |engine| async move {
                let record = engine.get_session(&id).await?;
                let batch = engine.read_events(&id, 0, 1000).await?;
                Ok::<_, ServiceError>((record, batch))
            });
            if let Ok((record, batch)) = view {
                if record.last_seq == count {
                    assert_eq!(batch.events.len() as u64, count);
                    return (record, batch);
                }
            }
            assert!(
                started.elapsed() < DEADLINE,
                "node {position} never read {count} events of {session_id}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Every running node reads the same `count` events of `session_id`.
    fn assert_identical(&self, session_id: &str, count: u64) {
        let views: Vec<_> = (0..NODE_IDS.len())
            .filter(|&position| self.nodes[position].is_some())
            .map(|position| self.read_all(position, session_id, count))
            .collect();
        for view in &views[1..] {
            assert_eq!(view, &views[0]);
        }
        let batch = &views[0].1;
        assert_eq!((batch.first_seq, batch.last_seq), (1, count));
        for (offset, frame) in batch.events.iter().enumerate() {
            let text = std::str::from_utf8(frame).unwrap();
            assert!(text.contains(&format!("\"seq\":{}", offset + 1)), "{text}");
        }
    }

    fn follower_of(&self, session_id: &str) -> usize {
        let leader = self.leader_of(group_of(session_id, GROUPS));
        (leader + 1) % NODE_IDS.len()
    }
}

/// Elect, replicate to all three, lose a follower and keep writing with the remaining quorum,
/// restart it and see it catch up by log.
#[test]
fn replicates_and_follower_catches_up_by_log() {
    let mut cluster = Cluster::start(2048);
    cluster.create("alpha");
    for seq in 1..=10 {
        cluster.append("alpha", seq);
    }
    cluster.assert_identical("alpha", 10);

    let follower = cluster.follower_of("alpha");
    cluster.kill(follower);
    for seq in 11..=25 {
        cluster.append("alpha", seq);
    }
    cluster.restart(follower);
    cluster.assert_identical("alpha", 25);
}

/// With a snapshot every 8 entries, a follower that misses many entries is brought up to date
/// by InstallSnapshot, and keeps following afterwards.
#[test]
fn lagging_follower_catches_up_by_snapshot() {
    let mut cluster = Cluster::start(8);
    cluster.create("beta");
    cluster.append("beta", 1);
    cluster.assert_identical("beta", 1);
    let follower = cluster.follower_of("beta");
    cluster.kill(follower);
    for seq in 2..=60 {
        cluster.append("beta", seq);
    }
    cluster.restart(follower);
    cluster.assert_identical("beta", 60);
    cluster.append("beta", 61);
    cluster.assert_identical("beta", 61);
}

/// cluster.md §4.1: append N events, force at least two snapshots, restart all replicas, read
/// 1..N intact on every replica.
#[test]
fn every_event_survives_snapshots_and_full_restart() {
    let mut cluster = Cluster::start(8);
    cluster.create("gamma");
    for seq in 1..=40 {
        cluster.append("gamma", seq);
    }
    cluster.assert_identical("gamma", 40);
    for position in 0..NODE_IDS.len() {
        cluster.kill(position);
    }
    for position in 0..NODE_IDS.len() {
        cluster.restart(position);
    }
    cluster.assert_identical("gamma", 40);
    cluster.append("gamma", 41);
    cluster.assert_identical("gamma", 41);
}
