//! Write-ahead log commit throughput: appends/s and fdatasyncs/s with 1 and 64 concurrent
//! appenders of 256-byte records, next to the raw floor (one 4 KiB write + fdatasync into a
//! pre-zeroed file) measured in the same run. Plain-text output; about 15 s.
//!
//! `cargo bench -p starcite-benches --bench wal_commit` (set `WAL_BENCH_DIR` to measure another
//! file system; the default is the system temp directory).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::PathBuf;
use std::rc::Rc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use glommio::io::OpenOptions;
use starcite_engine::wal::{Wal, WalOptions, WalRecord};

const RECORD_PAYLOAD_BYTES: usize = 256;
const PHASE_DURATION: Duration = Duration::from_secs(3);
const FLOOR_FILE_BYTES: u64 = 4 << 20;
const BLOCK_BYTES: u64 = 4096;

fn main() {
    let base = std::env::var_os("WAL_BENCH_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(std::env::temp_dir);
    let root = tempfile::tempdir_in(base).expect("create bench directory");
    let root_path = root.path().to_path_buf();
    glommio::LocalExecutorBuilder::new(glommio::Placement::Unbound)
        .make()
        .expect("make executor")
        .run(async move {
            println!("wal_commit: {RECORD_PAYLOAD_BYTES}-byte records, {PHASE_DURATION:?} per phase, dir {}", root_path.display());
            fsync_floor(&root_path.join("floor")).await;
            for appenders in [1u32, 64] {
                commit(&root_path.join(format!("wal-{appenders}")), appenders).await;
            }
        });
}

/// One 4 KiB direct write + fdatasync, over and over, into a pre-zeroed file.
async fn fsync_floor(path: &std::path::Path) {
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .dma_open(path)
        .await
        .expect("open floor file");
    let mut offset = 0;
    while offset < FLOOR_FILE_BYTES {
        let buffer = file.alloc_dma_buffer(1 << 20);
        file.write_at(buffer, offset).await.expect("zero fill");
        offset += 1 << 20;
    }
    file.fdatasync().await.expect("fdatasync");
    let mut latencies = Vec::new();
    let started = Instant::now();
    let mut offset = 0;
    while started.elapsed() < PHASE_DURATION {
        let mut buffer = file.alloc_dma_buffer(BLOCK_BYTES as usize);
        buffer.as_bytes_mut().fill(0xab);
        let one = Instant::now();
        file.write_at(buffer, offset).await.expect("write");
        file.fdatasync().await.expect("fdatasync");
        latencies.push(one.elapsed());
        offset = (offset + BLOCK_BYTES) % FLOOR_FILE_BYTES;
    }
    let elapsed = started.elapsed();
    latencies.sort();
    println!(
        "fsync floor (4 KiB write + fdatasync): {:.0} fsyncs/s, p50 {:?}, p99 {:?}",
        latencies.len() as f64 / elapsed.as_secs_f64(),
        latencies[latencies.len() / 2],
        latencies[latencies.len() * 99 / 100],
    );
    file.close().await.expect("close");
}

/// `appenders` tasks, each appending one record and awaiting its sync in a loop.
async fn commit(dir: &std::path::Path, appenders: u32) {
    let (wal, _) = Wal::open(WalOptions::new(dir.to_path_buf()), |_| {})
        .await
        .expect("open wal");
    let payload = Bytes::from(vec![0x5a; RECORD_PAYLOAD_BYTES]);
    let deadline = Instant::now() + PHASE_DURATION;
    let latencies = Rc::new(std::cell::RefCell::new(Vec::new()));
    let before = wal.stats();
    let started = Instant::now();
    let mut tasks = Vec::new();
    for appender in 0..appenders {
        let wal = wal.clone();
        let payload = payload.clone();
        let latencies = latencies.clone();
        tasks.push(glommio::spawn_local(async move {
            let mut index = 0;
            while Instant::now() < deadline {
                let record = WalRecord::Entry {
                    group: appender,
                    term: 1,
                    index,
                    payload: payload.clone(),
                };
                index += 1;
                let one = Instant::now();
                let lsn = loop {
                    match wal.append(&record) {
                        Ok(lsn) => break lsn,
                        Err(starcite_engine::wal::WalError::Full) => wal.wait_for_space().await,
                        Err(error) => panic!("append: {error}"),
                    }
                };
                wal.sync(lsn).await.expect("sync");
                latencies.borrow_mut().push(one.elapsed());
            }
        }));
    }
    for task in tasks {
        task.await;
    }
    let elapsed = started.elapsed();
    let after = wal.stats();
    wal.close().await.expect("close");
    let mut latencies = latencies.borrow_mut();
    latencies.sort();
    let appends = latencies.len() as f64;
    let fsyncs = (after.fdatasync_count - before.fdatasync_count) as f64;
    println!(
        "wal group commit, {appenders:>2} appender(s): {:.0} appends/s, {:.0} fsyncs/s, {:.1} records/fsync, commit p50 {:?}, p99 {:?}",
        appends / elapsed.as_secs_f64(),
        fsyncs / elapsed.as_secs_f64(),
        appends / fsyncs.max(1.0),
        latencies[latencies.len() / 2],
        latencies[latencies.len() * 99 / 100],
    );
}
