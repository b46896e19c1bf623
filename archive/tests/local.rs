//! The archive suite against the `local` adapter, plus checks of its file layout.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod suite;

use std::fs;

use starcite_archive::{ArchiveAdapter, LocalAdapter};
use suite::Harness;

struct LocalHarness {
    adapter: LocalAdapter,
    _directory: tempfile::TempDir,
}

fn harness() -> LocalHarness {
    let directory = tempfile::tempdir().unwrap();
    let adapter = LocalAdapter::open(directory.path().join("archive")).unwrap();
    LocalHarness {
        adapter,
        _directory: directory,
    }
}

impl LocalHarness {
    fn store_chunk(&self, session_id: &str, chunk_start: u64, body: &str) {
        let path = self.adapter.chunk_path(session_id, chunk_start);
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(path, body).unwrap();
    }
}

impl Harness for LocalHarness {
    fn adapter(&self) -> &dyn ArchiveAdapter {
        &self.adapter
    }

    fn stored_catalog(&self, session_id: &str) -> Option<serde_json::Value> {
        let body = fs::read(self.adapter.catalog_path(session_id)).ok()?;
        Some(serde_json::from_slice(&body).unwrap())
    }

    fn store_raw_event(&self, session_id: &str, seq: u64, event_json: &str) {
        self.store_chunk(
            session_id,
            starcite_archive::format::chunk_start(seq),
            event_json,
        );
    }

    fn invalid_data_kinds(&self) -> Vec<&'static str> {
        suite::INVALID_CHUNK_KINDS.to_vec()
    }

    fn store_invalid_data(&self, session_id: &str, kind: &str) {
        self.store_chunk(session_id, 1, &suite::invalid_chunk_body(kind));
    }
}

suite::archive_suite!(harness());

/// The files are exactly those of `contract/archive.md` §4: one NDJSON file per 256-event chunk, lines
/// ascending, no trailing newline, no temp files left behind, catalog under `sessions/v1`.
#[test]
fn files_follow_the_contract_layout() {
    let harness = harness();
    let adapter = &harness.adapter;
    let written = suite::events(1..=257, "layout");
    assert_eq!(adapter.write_events("ses-1", &written).unwrap(), 257);
    let directory = adapter.root().join("events/v1/c2VzLTE");
    let mut names: Vec<String> = fs::read_dir(&directory)
        .unwrap()
        .map(|entry| entry.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    assert_eq!(names, vec!["1.ndjson", "257.ndjson"]);
    let first = fs::read_to_string(directory.join("1.ndjson")).unwrap();
    assert!(!first.ends_with('\n'));
    let lines: Vec<&str> = first.split('\n').collect();
    assert_eq!(lines.len(), 256);
    for (index, line) in lines.iter().enumerate() {
        assert_eq!(line.as_bytes(), &written[index].json[..]);
    }
    let second = fs::read_to_string(directory.join("257.ndjson")).unwrap();
    assert_eq!(second.as_bytes(), &written[256].json[..]);

    adapter
        .write_catalog(&suite::catalog("ses-1", Some("t")))
        .unwrap();
    let catalog = fs::read_to_string(adapter.root().join("sessions/v1/c2VzLTE.json")).unwrap();
    assert!(
        catalog.starts_with(r#"{"id":"ses-1","title":"t","creator_principal":"#),
        "{catalog}"
    );
    assert!(
        catalog.ends_with(r#","created_at":"2026-01-05T10:11:12.000001Z"}"#),
        "{catalog}"
    );
}

/// Temp files left by a crash and other stray names in an events directory are not chunks: reads
/// ignore them and writes carry on.
#[test]
fn stray_files_are_ignored() {
    let harness = harness();
    let adapter = &harness.adapter;
    let written = suite::events(1..=3, "kept");
    adapter.write_events("stray", &written).unwrap();
    let directory = adapter.session_events_directory("stray");
    fs::write(directory.join(".1.ndjson.tmp-0123456789abcdef"), "garbage").unwrap();
    fs::write(directory.join("01.ndjson"), "garbage").unwrap();
    fs::write(directory.join("2.ndjson"), "garbage").unwrap();
    fs::write(directory.join("notes.txt"), "garbage").unwrap();
    suite::assert_same_events(
        adapter,
        &adapter.read_events("stray", 1, 300).unwrap(),
        &written,
    );
    assert_eq!(
        adapter
            .write_events("stray", &suite::events(4..=5, "more"))
            .unwrap(),
        2
    );
    assert_eq!(adapter.read_events("stray", 1, 300).unwrap().len(), 5);
}
