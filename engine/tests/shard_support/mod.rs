//! Shared harness of the shard tests: start a real node (glommio executors, unpinned, in a
//! temporary directory) whose serve loops run closures sent from the test thread.

#![allow(dead_code, clippy::unwrap_used)]

use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use futures_lite::future;
use serde_json::{json, Map, Value};
use starcite_engine::api::{AppendRequest, CreateSession, NewEvent};
use starcite_engine::config::EngineConfig;
use starcite_engine::{start, EngineError, EngineHandle, NodeHandle};

/// How long a test waits for one job before failing (never asserts latency, only liveness).
const JOB_DEADLINE: Duration = Duration::from_secs(60);

type Job = Box<dyn FnOnce(EngineHandle) -> Pin<Box<dyn Future<Output = ()>>> + Send>;

/// A running node plus one job queue per shard.
pub struct TestNode {
    node: Option<NodeHandle>,
    jobs: Vec<flume::Sender<Job>>,
}

/// Settings for a test node rooted at `dir`.
pub fn test_config(dir: &Path, shards: u32) -> EngineConfig {
    let mut config = EngineConfig::single_node(dir.to_path_buf());
    config.shards = shards;
    config.pin_shards = false;
    config.num_groups = 16;
    config.wal_segment_bytes_max = 1 << 20;
    config
}

impl TestNode {
    /// Start a node with `config`.
    pub fn start(config: EngineConfig) -> Result<TestNode, EngineError> {
        let (senders, receivers): (Vec<_>, Vec<_>) = (0..config.shards)
            .map(|_| flume::unbounded::<Job>())
            .unzip();
        let receivers = Arc::new(receivers);
        let node = start(config, move |handle: EngineHandle| {
            let jobs = receivers[handle.shard_index() as usize].clone();
            async move {
                let shutdown = handle.shutdown_signal();
                loop {
                    let job = future::or(async { jobs.recv_async().await.ok() }, async {
                        shutdown.wait().await;
                        None
                    })
                    .await;
                    let Some(job) = job else { break };
                    glommio::spawn_local(job(handle.clone())).detach();
                }
            }
        })?;
        Ok(TestNode {
            node: Some(node),
            jobs: senders,
        })
    }

    /// Run `body` on shard `shard`'s executor and return its result.
    pub fn run<T, Fut>(
        &self,
        shard: u32,
        body: impl FnOnce(EngineHandle) -> Fut + Send + 'static,
    ) -> T
    where
        T: Send + 'static,
        Fut: Future<Output = T> + 'static,
    {
        let (result_sender, result_receiver) = flume::bounded(1);
        let job: Job = Box::new(move |handle| {
            Box::pin(async move {
                let _ = result_sender.send(body(handle).await);
            })
        });
        self.jobs[shard as usize].send(job).unwrap();
        result_receiver
            .recv_timeout(JOB_DEADLINE)
            .unwrap_or_else(|error| panic!("job on shard {shard} did not finish: {error}"))
    }

    /// Where the Raft transport delivers this node's envelopes.
    pub fn raft_inbox(&self) -> starcite_engine::raftlog::RaftInbox {
        self.node.as_ref().unwrap().raft_inbox()
    }

    /// Shut down and wait; returns the node's stop result.
    pub fn stop(mut self) -> Result<(), EngineError> {
        let node = self.node.take().unwrap();
        node.shutdown();
        node.join()
    }
}

/// A create request with a title and one metadata key.
pub fn create_request(id: &str) -> CreateSession {
    let mut metadata = Map::new();
    metadata.insert("tenant_id".into(), json!("acme"));
    CreateSession {
        id: id.to_string(),
        title: Some(format!("title {id}")),
        creator_principal: None,
        metadata,
    }
}

/// One event of `producer_id` with `producer_seq` and a payload `{"n": payload}`.
pub fn event(producer_id: &str, producer_seq: u64, payload: i64) -> NewEvent {
    let mut body = Map::new();
    body.insert("n".into(), Value::from(payload));
    NewEvent {
        event_type: "note".into(),
        payload: body,
        actor: "agent:test".into(),
        source: None,
        metadata: Map::new(),
        refs: Map::new(),
        idempotency_key: None,
        producer_id: producer_id.to_string(),
        producer_seq,
    }
}

/// A single-event append.
pub fn append_one(
    session_id: &str,
    producer_id: &str,
    producer_seq: u64,
    payload: i64,
) -> AppendRequest {
    AppendRequest {
        session_id: session_id.to_string(),
        events: vec![event(producer_id, producer_seq, payload)],
        expected_seq: None,
    }
}

/// A temporary data directory.
pub fn data_dir() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("data");
    (dir, path)
}

/// Session ids owned by shard `shard` of a node with `shards` shards and 16 groups.
pub fn ids_on_shard(prefix: &str, shard: u32, shards: u32, count: usize) -> Vec<String> {
    (0..)
        .map(|n| format!("{prefix}-{n}"))
        .filter(|id| starcite_engine::placement::group_of(id, 16) % shards == shard)
        .take(count)
        .collect()
}
