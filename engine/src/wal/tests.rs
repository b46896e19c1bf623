//! Tests of the whole log on a real directory: reopen, group commit, fail-stop, bounds,
//! rollover, release and tail repair.

#![allow(clippy::unwrap_used)]

use std::cell::RefCell;
use std::future::Future;
use std::path::Path;
use std::rc::Rc;

use bytes::Bytes;

use super::*;

fn run<T>(future: impl Future<Output = T>) -> T {
    glommio::LocalExecutorBuilder::new(glommio::Placement::Unbound)
        .make()
        .unwrap()
        .run(future)
}

fn entry(index: u64, payload_bytes: usize) -> WalRecord {
    WalRecord::Entry {
        group: (index % 3) as u32,
        term: 1 + index / 100,
        index,
        payload: Bytes::from(vec![(index % 251) as u8; payload_bytes]),
    }
}

fn small_options(dir: &Path) -> WalOptions {
    WalOptions {
        segment_bytes_max: SEGMENT_BYTES_MAX_MIN,
        ..WalOptions::new(dir.to_path_buf())
    }
}

async fn reopen(options: WalOptions) -> (Wal, RecoveryReport, Vec<WalRecord>) {
    let mut records = Vec::new();
    let (wal, report) = Wal::open(options, |r| records.push(r)).await.unwrap();
    (wal, report, records)
}

#[test]
fn reopen_recovers_every_synced_record() {
    let dir = tempfile::tempdir().unwrap();
    run(async {
        let (wal, report, records) = reopen(small_options(dir.path())).await;
        assert_eq!(report, RecoveryReport::default());
        assert!(records.is_empty());
        let mut expected = Vec::new();
        for index in 0..50 {
            let record = if index % 10 == 9 {
                WalRecord::HardState {
                    group: 1,
                    term: index,
                    vote: 2,
                    commit: index - 1,
                }
            } else {
                entry(index, 100)
            };
            let lsn = wal.append(&record).unwrap();
            expected.push(record);
            wal.sync(lsn).await.unwrap();
            assert_eq!(wal.durable_lsn(), lsn);
        }
        let last = wal.stats().appended_lsn;
        wal.close().await.unwrap();
        assert!(matches!(wal.append(&entry(0, 1)), Err(WalError::Closed)));

        let (wal, report, records) = reopen(small_options(dir.path())).await;
        assert_eq!(records, expected);
        assert_eq!(report.records, 50);
        assert_eq!(report.discarded_bytes, 0);
        assert_eq!(report.last_lsn, last);
        assert_eq!(wal.durable_lsn(), last);
        wal.close().await.unwrap();
    });
}

#[test]
fn group_commit_shares_fdatasyncs_between_concurrent_appenders() {
    let dir = tempfile::tempdir().unwrap();
    run(async {
        let (wal, _, _) = reopen(WalOptions::new(dir.path().to_path_buf())).await;
        const APPENDERS: u64 = 64;
        const RECORDS_EACH: u64 = 20;
        let mut tasks = Vec::new();
        for appender in 0..APPENDERS {
            let wal = wal.clone();
            tasks.push(glommio::spawn_local(async move {
                for n in 0..RECORDS_EACH {
                    let lsn = wal.append(&entry(appender * 1000 + n, 256)).unwrap();
                    wal.sync(lsn).await.unwrap();
                }
            }));
        }
        for task in tasks {
            task.await;
        }
        let stats = wal.stats();
        assert_eq!(stats.durable_lsn, stats.appended_lsn);
        assert!(
            stats.fdatasync_count * 4 <= APPENDERS * RECORDS_EACH,
            "{} fdatasyncs for {} records",
            stats.fdatasync_count,
            APPENDERS * RECORDS_EACH
        );
        assert_eq!(stats.write_count, stats.fdatasync_count);

        // Appends without waiting in between go out together.
        let before = wal.stats().fdatasync_count;
        let mut lsn = 0;
        for index in 0..500 {
            lsn = wal.append(&entry(index, 256)).unwrap();
        }
        wal.sync(lsn).await.unwrap();
        assert!(wal.stats().fdatasync_count - before <= 2);
        wal.close().await.unwrap();
    });
}

#[test]
fn failed_fdatasync_poisons_the_log() {
    let dir = tempfile::tempdir().unwrap();
    run(async {
        let options = WalOptions {
            fault: Some(FaultPlan::fail_fdatasync(2)),
            ..small_options(dir.path())
        };
        let (wal, _, _) = reopen(options).await;
        let first = wal.append(&entry(1, 10)).unwrap();
        wal.sync(first).await.unwrap();
        let second = wal.append(&entry(2, 10)).unwrap();
        let error = wal.sync(second).await.unwrap_err();
        assert!(matches!(error, WalError::Failed(_)), "{error}");
        let failure = wal.failure().unwrap();
        assert!(failure.error.contains("fdatasync"), "{failure}");
        assert!(failure.path.starts_with(dir.path()));
        // Never carries on: later appends and syncs fail, durable data stays acknowledged.
        assert!(matches!(
            wal.append(&entry(3, 10)),
            Err(WalError::Failed(_))
        ));
        assert!(matches!(wal.sync(second).await, Err(WalError::Failed(_))));
        wal.sync(first).await.unwrap();
        assert_eq!(wal.durable_lsn(), first);
        assert!(matches!(wal.close().await, Err(WalError::Failed(_))));
        wal.wait_for_space().await;
    });
}

#[test]
fn failed_write_poisons_the_log() {
    let dir = tempfile::tempdir().unwrap();
    run(async {
        let options = WalOptions {
            fault: Some(FaultPlan {
                fail_write_number: Some(1),
                fail_fdatasync_number: None,
            }),
            ..small_options(dir.path())
        };
        let (wal, _, _) = reopen(options).await;
        let lsn = wal.append(&entry(1, 10)).unwrap();
        assert!(matches!(wal.sync(lsn).await, Err(WalError::Failed(_))));
        assert!(wal.failure().unwrap().error.contains("write"));
        assert_eq!(wal.durable_lsn(), 0);
    });
}

#[test]
fn pending_bound_returns_full_until_space_frees() {
    let dir = tempfile::tempdir().unwrap();
    run(async {
        let options = WalOptions {
            pending_bytes_max: RECORD_BYTES_MAX,
            ..WalOptions::new(dir.path().to_path_buf())
        };
        let (wal, _, _) = reopen(options).await;
        // The flusher cannot run between these appends (no await), so everything stays pending.
        let mut accepted = 0u64;
        let error = loop {
            match wal.append(&entry(accepted, 64 << 10)) {
                Ok(_) => accepted += 1,
                Err(error) => break error,
            }
            assert!(accepted < 1000, "bound never hit");
        };
        assert!(matches!(error, WalError::Full), "{error}");
        assert!(accepted * (64 << 10) <= RECORD_BYTES_MAX);
        wal.wait_for_space().await;
        let lsn = wal.append(&entry(accepted, 64 << 10)).unwrap();
        wal.sync(lsn).await.unwrap();
        wal.close().await.unwrap();
    });
}

#[test]
fn oversized_record_is_rejected() {
    let dir = tempfile::tempdir().unwrap();
    run(async {
        let (wal, _, _) = reopen(small_options(dir.path())).await;
        let error = wal.append(&entry(1, 70 << 10)).unwrap_err();
        assert!(matches!(error, WalError::RecordTooLarge { .. }), "{error}");
        wal.close().await.unwrap();
    });
}

#[test]
fn rollover_release_and_read_back() {
    let dir = tempfile::tempdir().unwrap();
    run(async {
        let (wal, _, _) = reopen(small_options(dir.path())).await;
        let lsns = Rc::new(RefCell::new(Vec::new()));
        let mut expected = Vec::new();
        for index in 0..400 {
            let record = entry(index, 700 + (index as usize * 37) % 900);
            let lsn = wal.append(&record).unwrap();
            lsns.borrow_mut().push(lsn);
            expected.push(record);
            if index % 7 == 0 {
                wal.sync(lsn).await.unwrap();
            }
        }
        let last = wal.stats().appended_lsn;
        wal.sync(last).await.unwrap();
        let segments = wal.segments();
        assert!(segments.len() >= 4, "{segments:?}");
        for pair in segments.windows(2) {
            assert_eq!(pair[0].end_lsn, Some(pair[1].first_lsn));
        }

        // Read back a range that crosses segments.
        let lsns = lsns.borrow().clone();
        let read = wal.read_records(lsns[99], lsns[299]).unwrap();
        assert_eq!(read.len(), 200);
        assert_eq!(read[0], (lsns[100], expected[100].clone()));
        assert_eq!(read[199], (lsns[299], expected[299].clone()));

        // Release everything before record 200; the segment holding it stays.
        let released = wal.release_segments_before(lsns[199]).await.unwrap();
        assert!(released >= 1);
        let first_kept = wal.segments()[0].first_lsn;
        assert!(first_kept <= lsns[199]);
        wal.close().await.unwrap();

        let mut recovered = Vec::new();
        let (wal, report) =
            Wal::open_with_lsns(small_options(dir.path()), |lsn, r| recovered.push((lsn, r)))
                .await
                .unwrap();
        assert_eq!(report.last_lsn, last);
        let skip = lsns.iter().position(|&l| l > first_kept).unwrap();
        let expected_tail: Vec<_> = lsns[skip..]
            .iter()
            .copied()
            .zip(expected[skip..].iter().cloned())
            .collect();
        assert_eq!(recovered, expected_tail);
        // The log continues at the same LSN.
        let next = wal.append(&entry(1000, 10)).unwrap();
        assert_eq!(next, last + frame_bytes(&entry(1000, 10)));
        wal.close().await.unwrap();
    });
}

/// A torn record in the tail is dropped, and an intact older record right behind it must not
/// come back after new records of exactly the torn record's size fill its place.
#[test]
fn torn_tail_is_zeroed_so_stale_records_never_return() {
    let dir = tempfile::tempdir().unwrap();
    run(async {
        let (wal, _, _) = reopen(small_options(dir.path())).await;
        let a = entry(1, 300);
        let b = entry(2, 5000);
        let c = entry(3, 300);
        let a_end = wal.append(&a).unwrap();
        wal.append(&b).unwrap();
        let c_end = wal.append(&c).unwrap();
        wal.sync(c_end).await.unwrap();
        wal.close().await.unwrap();
        drop(wal);

        // Damage B: C stays intact behind it.
        let segment = &segment_infos(dir.path()).unwrap()[0];
        let mut bytes = std::fs::read(&segment.path).unwrap();
        let b_offset = (SEGMENT_HEADER_BYTES + a_end) as usize;
        bytes[b_offset + 100] ^= 0xff;
        std::fs::write(&segment.path, &bytes).unwrap();

        let (wal, report, records) = reopen(small_options(dir.path())).await;
        assert_eq!(records, vec![a.clone()]);
        assert_eq!(report.last_lsn, a_end);
        assert_eq!(report.discarded_bytes, c_end - a_end);
        // D has B's size, so it ends exactly where C starts.
        let d = entry(4, 5000);
        let d_end = wal.append(&d).unwrap();
        wal.sync(d_end).await.unwrap();
        wal.close().await.unwrap();
        drop(wal);

        let (wal, report, records) = reopen(small_options(dir.path())).await;
        assert_eq!(records, vec![a, d]);
        assert_eq!(report.discarded_bytes, 0);
        wal.close().await.unwrap();
    });
}

/// Damage in a segment that is followed by valid data is lost acknowledged data, not a torn
/// write, so recovery refuses to start.
#[test]
fn corruption_in_a_sealed_segment_refuses_to_start() {
    let dir = tempfile::tempdir().unwrap();
    run(async {
        let (wal, _, _) = reopen(small_options(dir.path())).await;
        for index in 0..200 {
            let lsn = wal.append(&entry(index, 1000)).unwrap();
            wal.sync(lsn).await.unwrap();
        }
        wal.close().await.unwrap();
        drop(wal);
        let segment = &segment_infos(dir.path()).unwrap()[0];
        let mut bytes = std::fs::read(&segment.path).unwrap();
        bytes[SEGMENT_HEADER_BYTES as usize + 5000] ^= 1;
        std::fs::write(&segment.path, &bytes).unwrap();
        let error = Wal::open(small_options(dir.path()), |_| {})
            .await
            .unwrap_err();
        assert!(matches!(error, WalError::Corrupt { .. }), "{error}");
    });
}

#[test]
fn dropping_the_last_handle_flushes_and_stops() {
    let dir = tempfile::tempdir().unwrap();
    run(async {
        let (wal, _, _) = reopen(small_options(dir.path())).await;
        let lsn = wal.append(&entry(1, 10)).unwrap();
        let stats_wal = wal.clone();
        drop(wal);
        stats_wal.sync(lsn).await.unwrap();
        stats_wal.close().await.unwrap();
        let (_, report, _) = reopen(small_options(dir.path())).await;
        assert_eq!(report.records, 1);
    });
}

/// Recovery treats file content as untrusted: random bytes after a valid header, random
/// headers, and random files never panic; they recover a (possibly empty) log or refuse.
#[test]
fn recovery_never_panics_on_random_content() {
    use rand::{Rng, SeedableRng};
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    for round in 0..40 {
        let dir = tempfile::tempdir().unwrap();
        let header = segment::SegmentHeader {
            sequence: 1,
            first_lsn: rng.gen_range(0..1 << 40),
        };
        let mut bytes = vec![0u8; rng.gen_range(0..20_000)];
        rng.fill(&mut bytes[..]);
        if round % 4 != 0 && bytes.len() >= 64 {
            bytes[..64].copy_from_slice(&header.encode());
            // Some valid records first, so decoding gets past the start.
            let mut records = Vec::new();
            for index in 0..rng.gen_range(0..5) {
                record::encode_record(&entry(index, rng.gen_range(0..300)), &mut records);
            }
            let end = (64 + records.len()).min(bytes.len());
            bytes[64..end].copy_from_slice(&records[..end - 64]);
        }
        std::fs::write(segment::segment_path(dir.path(), 1), &bytes).unwrap();
        run(async {
            if let Ok((wal, _)) = Wal::open(small_options(dir.path()), |_| {}).await {
                let lsn = wal.append(&entry(1, 10)).unwrap();
                wal.sync(lsn).await.unwrap();
                wal.close().await.unwrap();
            }
        });
    }
}
