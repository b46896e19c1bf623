//! The `postgres` archive end to end against a real PostgreSQL server, with the schema created
//! by `MIGRATE_ON_BOOT`: the archiver catches up and reads replay from the archive, before and
//! after a restart.

mod archive_support;

use archive_support::{assert_archived_and_readable, load_sessions, start_postgres};
use starcite_tests::{Server, ServerOptions};

/// Three sessions of 600 events are archived to Postgres and replay from cursor 0.
#[test]
fn postgres_archive_catches_up_and_replays_from_cursor_zero() {
    let url = start_postgres();
    let mut server = Server::start_with(
        ServerOptions::default()
            .with("STARCITE_ARCHIVE_FLUSH_INTERVAL_MS", "200")
            .with("STARCITE_ARCHIVE_ADAPTER", "postgres")
            .with("DATABASE_URL", &url)
            .with("MIGRATE_ON_BOOT", "true"),
    );
    let ids = load_sessions(&server, "pg", 3, 600);
    assert_archived_and_readable(&server, &ids, 600);
    server.restart();
    assert_archived_and_readable(&server, &ids, 600);
}
