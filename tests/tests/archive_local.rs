//! The default `local` archive end to end on one node (archive.md §2, §6): the archiver catches
//! up, the hot store empties, and `/events` and tails from cursor 0 return exactly 1..N, also
//! after a restart.

mod archive_support;

use archive_support::{append_events, assert_archived_and_readable, load_sessions};
use starcite_tests::{Server, ServerOptions};

const SESSION_COUNT: usize = 10;
const EVENTS_PER_SESSION: u64 = 2000;

/// 2,000 events in each of 10 sessions reach `<data_dir>/archive` with zero configuration
/// beyond a short flush interval; every read path returns them contiguously before and after
/// a restart, and appends after the restart are archived too.
#[test]
fn local_archive_catches_up_and_replays_from_cursor_zero() {
    let mut server = Server::start_with(
        ServerOptions::default().with("STARCITE_ARCHIVE_FLUSH_INTERVAL_MS", "200"),
    );
    let ids = load_sessions(&server, "local", SESSION_COUNT, EVENTS_PER_SESSION);
    assert_archived_and_readable(&server, &ids, EVENTS_PER_SESSION);
    let chunk = server
        .data_dir
        .join("archive/events/v1")
        .read_dir()
        .unwrap()
        .count();
    assert_eq!(chunk, SESSION_COUNT, "one events directory per session");

    server.restart();
    assert_archived_and_readable(&server, &ids, EVENTS_PER_SESSION);
    let mut client = server.client();
    append_events(&mut client, &ids[0], "q", 1, 10, 32);
    assert_archived_and_readable(&server, &ids[..1], EVENTS_PER_SESSION + 10);
}
