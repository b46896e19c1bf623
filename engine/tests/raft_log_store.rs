//! The Raft core's storage conformance suite against the WAL-backed log store.
//!
//! The suite is synchronous and its `reopen` must crash and restart the store, while the WAL
//! lives on a glommio executor. So each store's WAL runs on its own executor thread that serves
//! appends over a channel and makes every record durable before answering (the literal
//! `LogStore` contract); `reopen` closes that thread and opens the directory again, replaying
//! the recovered records through the same `GroupReplay` the shards use.

#![allow(clippy::unwrap_used)]

use std::path::PathBuf;

use starcite_engine::raftlog::snapshot_file::{read_snapshot_file, snapshot_dir};
use starcite_engine::raftlog::{GroupReplay, RecordLog, WalLogStore};
use starcite_engine::wal::{Lsn, Wal, WalError, WalOptions, WalRecord};

const GROUP: u32 = 3;

enum Request {
    Append(WalRecord, flume::Sender<Result<Lsn, WalError>>),
    Close,
}

/// A WAL on its own executor thread; every append returns once durable.
struct ThreadWal {
    dir: PathBuf,
    requests: flume::Sender<Request>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl ThreadWal {
    /// Opens the log in `dir` and returns it with the recovered records.
    fn open(dir: PathBuf) -> (ThreadWal, Vec<(Lsn, WalRecord)>) {
        let (requests, receiver) = flume::unbounded::<Request>();
        let (recovered_sender, recovered_receiver) = flume::bounded(1);
        let wal_dir = dir.clone();
        let thread = glommio::LocalExecutorBuilder::new(glommio::Placement::Unbound)
            .spawn(move || async move {
                let mut recovered = Vec::new();
                let mut options = WalOptions::new(wal_dir);
                options.segment_bytes_max = 1 << 20;
                let (wal, _) =
                    Wal::open_with_lsns(options, |lsn, record| recovered.push((lsn, record)))
                        .await
                        .unwrap();
                recovered_sender.send(recovered).unwrap();
                while let Ok(request) = receiver.recv_async().await {
                    match request {
                        Request::Append(record, reply) => {
                            let result = match wal.append(&record) {
                                Ok(lsn) => wal.sync(lsn).await.map(|()| lsn),
                                Err(error) => Err(error),
                            };
                            let _ = reply.send(result);
                        }
                        Request::Close => break,
                    }
                }
                wal.close().await.unwrap();
            })
            .unwrap();
        let recovered = recovered_receiver.recv().unwrap();
        let wal = ThreadWal {
            dir,
            requests,
            thread: Some(std::thread::spawn(move || thread.join().unwrap())),
        };
        (wal, recovered)
    }

    fn close(mut self) -> PathBuf {
        self.requests.send(Request::Close).unwrap();
        if let Some(thread) = self.thread.take() {
            thread.join().unwrap();
        }
        self.dir.clone()
    }
}

impl RecordLog for ThreadWal {
    fn append(&self, record: &WalRecord) -> Result<Lsn, WalError> {
        let (reply, receiver) = flume::bounded(1);
        self.requests
            .send(Request::Append(record.clone(), reply))
            .unwrap();
        receiver.recv().unwrap()
    }
}

/// Builds the group's store from what is durable in `dir`.
fn open_store(dir: PathBuf) -> WalLogStore<ThreadWal> {
    let snapshots = snapshot_dir(&dir);
    let snapshot = read_snapshot_file(&snapshots, GROUP).unwrap();
    let (wal, recovered) = ThreadWal::open(dir);
    let mut replay = GroupReplay::new(GROUP, snapshot.map(|snapshot| snapshot.meta));
    for (lsn, record) in recovered {
        replay.on_record(lsn, record).unwrap();
    }
    replay.finish(wal, snapshots).unwrap()
}

#[test]
fn wal_log_store_passes_conformance() {
    let root = tempfile::tempdir().unwrap();
    let mut next = 0;
    starcite_raft::testing::run_conformance(
        || {
            next += 1;
            open_store(root.path().join(format!("store-{next}")))
        },
        |store| {
            let dir = store.into_log().close();
            open_store(dir)
        },
    );
}
