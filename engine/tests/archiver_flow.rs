//! The archiver, the hot/cold read path and the memory budget through a real node with the
//! `local` adapter in a temporary directory (archive.md §2, §6, §8).

#![allow(clippy::unwrap_used)]

mod shard_support;

use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use shard_support::{append_one, create_request, data_dir, event, test_config, TestNode};
use starcite_archive::{ArchiveAdapter, ArchiveError, ArchivedEvent, LocalAdapter, SessionCatalog};
use starcite_engine::api::{AppendRequest, Service, ServiceError};
use starcite_engine::config::{ArchiveSettings, EngineConfig};
use starcite_engine::EngineHandle;

/// How long a test waits for the archiver to catch up.
const CATCH_UP_DEADLINE: Duration = Duration::from_secs(30);

/// A local adapter that fails writes while `down` is set or while `failures_left` > 0, and
/// counts what it newly stored.
struct FlakyAdapter {
    inner: LocalAdapter,
    failures_left: AtomicU32,
    down: AtomicBool,
    failed_writes: AtomicU32,
    stored_count: AtomicU64,
}

impl FlakyAdapter {
    fn new(root: &Path, failures: u32) -> Arc<FlakyAdapter> {
        Arc::new(FlakyAdapter {
            inner: LocalAdapter::open(root).unwrap(),
            failures_left: AtomicU32::new(failures),
            down: AtomicBool::new(false),
            failed_writes: AtomicU32::new(0),
            stored_count: AtomicU64::new(0),
        })
    }

    fn refuse(&self) -> bool {
        let counted_failure = self
            .failures_left
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |left| {
                left.checked_sub(1)
            })
            .is_ok();
        counted_failure || self.down.load(Ordering::Acquire)
    }
}

impl ArchiveAdapter for FlakyAdapter {
    fn name(&self) -> &'static str {
        "local"
    }

    fn write_events(
        &self,
        session_id: &str,
        events: &[ArchivedEvent],
    ) -> Result<u64, ArchiveError> {
        if self.refuse() {
            self.failed_writes.fetch_add(1, Ordering::AcqRel);
            return Err(ArchiveError::Config {
                message: "injected failure".into(),
            });
        }
        let stored = self.inner.write_events(session_id, events)?;
        self.stored_count.fetch_add(stored, Ordering::AcqRel);
        Ok(stored)
    }

    fn read_events(
        &self,
        session_id: &str,
        from_seq: u64,
        to_seq: u64,
    ) -> Result<Vec<ArchivedEvent>, ArchiveError> {
        self.inner.read_events(session_id, from_seq, to_seq)
    }

    fn write_catalog(&self, session: &SessionCatalog) -> Result<(), ArchiveError> {
        self.inner.write_catalog(session)
    }
}

fn archive_config(path: &Path, adapter: Arc<dyn ArchiveAdapter>) -> EngineConfig {
    let mut config = test_config(path, 2);
    config.archive_flush_interval_ms = 50;
    let mut settings = ArchiveSettings::new(adapter);
    settings.batch_events_max = 100;
    settings.retry_max_ms = 50;
    config.archive = Some(settings);
    config
}

fn batch(session_id: &str, producer_seq_first: u64, count: u64) -> AppendRequest {
    AppendRequest {
        session_id: session_id.to_string(),
        events: (0..count)
            .map(|offset| event("p", producer_seq_first + offset, offset as i64))
            .collect(),
        expected_seq: None,
    }
}

/// Append `count` events to `session_id` in batches of 50.
async fn append_events(engine: &EngineHandle, session_id: &str, count: u64) {
    let mut next = 1;
    while next <= count {
        let size = (count - next + 1).min(50);
        engine.append(batch(session_id, next, size)).await.unwrap();
        next += size;
    }
}

/// Wait until every session shows `archived_seq == last_seq`.
async fn wait_archived(engine: &EngineHandle, session_ids: &[String]) {
    let deadline = Instant::now() + CATCH_UP_DEADLINE;
    for session_id in session_ids {
        loop {
            let record = engine.get_session(session_id).await.unwrap();
            assert!(record.archived_seq <= record.last_seq);
            if record.archived_seq == record.last_seq {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "session {session_id} stuck at archived_seq {} of {}",
                record.archived_seq,
                record.last_seq
            );
            glommio::timer::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// Read the whole session from cursor 0 in pages of `page` and check it is exactly 1..=N.
async fn assert_full_read(engine: &EngineHandle, session_id: &str, expected_count: u64, page: u32) {
    let mut cursor = 0;
    loop {
        let read = engine.read_events(session_id, cursor, page).await.unwrap();
        if read.events.is_empty() {
            break;
        }
        for (offset, frame) in read.events.iter().enumerate() {
            let value: serde_json::Value = serde_json::from_slice(frame).unwrap();
            assert_eq!(
                value["seq"],
                cursor + 1 + offset as u64,
                "session {session_id}"
            );
        }
        cursor += read.events.len() as u64;
    }
    assert_eq!(cursor, expected_count, "session {session_id}");
}

/// Every event reaches the archive, `archived_seq == last_seq`, the hot store empties, and
/// reads from cursor 0 return 1..N through the cache and the adapter, also after a restart.
#[test]
fn events_are_archived_and_read_back_contiguously() {
    let (_dir, path) = data_dir();
    let archive_root = path.join("archive");
    let sessions: Vec<String> = (0..4).map(|n| format!("arch-{n}")).collect();
    let adapter: Arc<dyn ArchiveAdapter> = Arc::new(LocalAdapter::open(&archive_root).unwrap());
    let node = TestNode::start(archive_config(&path, adapter)).unwrap();
    let ids = sessions.clone();
    node.run(0, move |engine| async move {
        for session_id in &ids {
            engine
                .create_session(create_request(session_id))
                .await
                .unwrap();
            append_events(&engine, session_id, 300).await;
        }
        wait_archived(&engine, &ids).await;
        assert_eq!(engine.unarchived_bytes(), 0);
        for session_id in &ids {
            assert_full_read(&engine, session_id, 300, 1000).await;
            assert_full_read(&engine, session_id, 300, 7).await;
        }
    });
    node.stop().unwrap();

    let adapter: Arc<dyn ArchiveAdapter> = Arc::new(LocalAdapter::open(&archive_root).unwrap());
    let node = TestNode::start(archive_config(&path, adapter)).unwrap();
    let ids = sessions.clone();
    node.run(1, move |engine| async move {
        assert_eq!(engine.unarchived_bytes(), 0);
        for session_id in &ids {
            assert_full_read(&engine, session_id, 300, 1000).await;
        }
        // Appends after the restart continue the same sessions and get archived as well.
        engine.append(append_one(&ids[0], "q", 1, 1)).await.unwrap();
        wait_archived(&engine, &ids).await;
        assert_full_read(&engine, &ids[0], 301, 1000).await;
    });
    node.stop().unwrap();
}

/// An adapter that fails N times then succeeds: no ack while it fails, then `archived_seq`
/// reaches `last_seq` and every event is stored exactly once.
#[test]
fn failing_adapter_delays_the_ack_without_losing_or_duplicating() {
    let (_dir, path) = data_dir();
    let adapter = FlakyAdapter::new(&path.join("archive"), 3);
    let node = TestNode::start(archive_config(&path, adapter.clone())).unwrap();
    let observed = adapter.clone();
    node.run(0, move |engine| async move {
        engine
            .create_session(create_request("flaky"))
            .await
            .unwrap();
        append_events(&engine, "flaky", 120).await;
        let deadline = Instant::now() + CATCH_UP_DEADLINE;
        while observed.failures_left.load(Ordering::Acquire) > 0 {
            assert_eq!(engine.get_session("flaky").await.unwrap().archived_seq, 0);
            assert!(Instant::now() < deadline, "the adapter was never called");
            glommio::timer::sleep(Duration::from_millis(5)).await;
        }
        wait_archived(&engine, &["flaky".to_string()]).await;
        assert_full_read(&engine, "flaky", 120, 1000).await;
    });
    node.stop().unwrap();
    assert_eq!(adapter.failed_writes.load(Ordering::Acquire), 3);
    assert_eq!(adapter.stored_count.load(Ordering::Acquire), 120);
    let stored = adapter.read_events("flaky", 1, 120).unwrap();
    let seqs: Vec<u64> = stored.iter().map(|event| event.seq).collect();
    assert_eq!(seqs, (1..=120).collect::<Vec<u64>>());
}

/// The read cache never holds more than its cap, and reads stay complete when most of the
/// archive is not cached.
#[test]
fn read_cache_cap_is_respected() {
    let (_dir, path) = data_dir();
    let adapter: Arc<dyn ArchiveAdapter> =
        Arc::new(LocalAdapter::open(path.join("archive")).unwrap());
    let mut config = archive_config(&path, adapter);
    if let Some(settings) = config.archive.as_mut() {
        settings.read_cache_max_bytes = 4096;
        settings.read_cache_compressed = false;
    }
    let node = TestNode::start(config).unwrap();
    node.run(0, |engine| async move {
        let ids: Vec<String> = (0..3).map(|n| format!("cap-{n}")).collect();
        for session_id in &ids {
            engine
                .create_session(create_request(session_id))
                .await
                .unwrap();
            append_events(&engine, session_id, 200).await;
            assert!(engine.archive_cache_bytes() <= 4096);
        }
        wait_archived(&engine, &ids).await;
        for session_id in &ids {
            assert_full_read(&engine, session_id, 200, 13).await;
            assert!(engine.archive_cache_bytes() <= 4096);
        }
        assert!(engine.archive_cache_bytes() > 0);
    });
    node.stop().unwrap();
}

/// With a 1 KiB budget and the adapter down, appends get `Backpressure` once `U ≥ B`; after the
/// adapter recovers the acks drop `U` and appends are accepted again; nothing is lost.
#[test]
fn budget_backpressure_recovers_after_acks() {
    let (_dir, path) = data_dir();
    let adapter = FlakyAdapter::new(&path.join("archive"), 0);
    adapter.down.store(true, Ordering::Release);
    let mut config = archive_config(&path, adapter.clone());
    config.event_store_max_bytes = 1024;
    let node = TestNode::start(config).unwrap();
    let control = adapter.clone();
    node.run(0, move |engine| async move {
        engine
            .create_session(create_request("budget"))
            .await
            .unwrap();
        let mut accepted = 0u64;
        let refusal = loop {
            match engine
                .append(append_one("budget", "p", accepted + 1, 7))
                .await
            {
                Ok(_) => accepted += 1,
                Err(error) => break error,
            }
            assert!(accepted < 1000, "budget never reached");
        };
        assert_eq!(refusal, ServiceError::Backpressure { retry_after_s: 1 });
        assert!(engine.unarchived_bytes() >= 1024);
        control.down.store(false, Ordering::Release);
        let deadline = Instant::now() + CATCH_UP_DEADLINE;
        loop {
            match engine
                .append(append_one("budget", "p", accepted + 1, 7))
                .await
            {
                Ok(_) => break,
                Err(ServiceError::Backpressure { .. }) => {
                    assert!(Instant::now() < deadline, "appends never recovered");
                    glommio::timer::sleep(Duration::from_millis(20)).await;
                }
                Err(error) => panic!("unexpected error {error:?}"),
            }
        }
        accepted += 1;
        wait_archived(&engine, &["budget".to_string()]).await;
        assert_full_read(&engine, "budget", accepted, 1000).await;
    });
    node.stop().unwrap();
}
