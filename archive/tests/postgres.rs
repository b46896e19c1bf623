//! The archive suite against the `postgres` adapter on a real PostgreSQL server: `initdb` and
//! `pg_ctl start` (as user `postgres` when running as root) on a free loopback port in a temp dir, one
//! fresh database per test run, stopped when the test process exits.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod suite;

use std::sync::OnceLock;

use starcite_archive::{ArchiveAdapter, PostgresAdapter, PostgresConfig};
use suite::{services, Harness};

const DATABASE: &str = "starcite_archive_test";
/// Starts one server for this test binary and returns the URL of a fresh database.
fn database_url() -> &'static str {
    static URL: OnceLock<String> = OnceLock::new();
    URL.get_or_init(|| {
        let port = services::start_postgres("starcite-postgres-");
        let mut admin = postgres::Client::connect(
            &format!("host=127.0.0.1 port={port} user=postgres dbname=postgres"),
            postgres::NoTls,
        )
        .unwrap();
        admin
            .batch_execute(&format!("CREATE DATABASE {DATABASE}"))
            .unwrap();
        format!("postgres://postgres@127.0.0.1:{port}/{DATABASE}")
    })
}

fn client() -> postgres::Client {
    postgres::Client::connect(database_url(), postgres::NoTls).unwrap()
}

struct PostgresHarness {
    adapter: PostgresAdapter,
}

fn harness() -> PostgresHarness {
    let mut config = PostgresConfig::new(database_url());
    config.pool_size = 4;
    PostgresHarness {
        adapter: PostgresAdapter::connect(config).unwrap(),
    }
}

impl Harness for PostgresHarness {
    fn adapter(&self) -> &dyn ArchiveAdapter {
        &self.adapter
    }

    fn stored_catalog(&self, session_id: &str) -> Option<serde_json::Value> {
        let row = client()
            .query_opt(
                r#"SELECT json_build_object('id', id, 'title', title, 'creator_principal', creator_principal,
                     'metadata', metadata,
                     'created_at', to_char(created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"'))::text
                   FROM sessions WHERE id = $1"#,
                &[&session_id],
            )
            .unwrap()?;
        Some(serde_json::from_str(row.get::<_, &str>(0)).unwrap())
    }

    fn store_raw_event(&self, session_id: &str, seq: u64, event_json: &str) {
        // Timestamps without a zone are UTC, as archived timestamps always are.
        client()
            .execute(
                "INSERT INTO events (session_id, seq, type, payload, actor, source, metadata, refs, idempotency_key, inserted_at, producer_id, producer_seq)
                 SELECT $1, $2, e->>'type', e->'payload', e->>'actor', e->>'source', e->'metadata', e->'refs', e->>'idempotency_key',
                        (e->>'inserted_at')::timestamp AT TIME ZONE 'UTC', e->>'producer_id', (e->>'producer_seq')::bigint
                 FROM (SELECT $3::text::jsonb AS e) AS input",
                &[&session_id, &i64::try_from(seq).unwrap(), &event_json],
            )
            .unwrap();
    }

    fn invalid_data_kinds(&self) -> Vec<&'static str> {
        // The schema makes most invalid lines unrepresentable; what remains is JSON of the wrong shape.
        vec!["metadata-not-object", "refs-not-object"]
    }

    fn store_invalid_data(&self, session_id: &str, kind: &str) {
        let (seq, metadata, refs) = match kind {
            "metadata-not-object" => (1_i64, "[1]", "{}"),
            "refs-not-object" => (1, "{}", "\"text\""),
            other => panic!("unknown invalid data kind {other}"),
        };
        client()
            .execute(
                "INSERT INTO events (session_id, seq, type, payload, actor, metadata, refs, inserted_at)
                 VALUES ($1, $2, 't', '{}', 'a', $3::text::jsonb, $4::text::jsonb, now())",
                &[&session_id, &seq, &metadata, &refs],
            )
            .unwrap();
    }
}

suite::archive_suite!(harness());

/// The tables have exactly the contract's columns, types and nullability, the two indexes exist, and
/// the migration is recorded once however often the adapter boots.
#[test]
fn schema_matches_the_contract() {
    let _first = harness();
    let _second = harness();
    let mut client = client();
    fn client_columns(client: &mut postgres::Client, table: &str) -> Vec<(String, String, String)> {
        client
            .query(
                "SELECT column_name::text, data_type::text, is_nullable::text FROM information_schema.columns
                 WHERE table_schema = 'public' AND table_name = $1 ORDER BY ordinal_position",
                &[&table],
            )
            .unwrap()
            .iter()
            .map(|row| (row.get(0), row.get(1), row.get(2)))
            .collect()
    }
    let expected = |rows: &[(&str, &str, &str)]| -> Vec<(String, String, String)> {
        rows.iter()
            .map(|(name, kind, nullable)| {
                (
                    (*name).to_owned(),
                    (*kind).to_owned(),
                    (*nullable).to_owned(),
                )
            })
            .collect()
    };
    assert_eq!(
        client_columns(&mut client, "events"),
        expected(&[
            ("session_id", "text", "NO"),
            ("seq", "bigint", "NO"),
            ("type", "text", "NO"),
            ("payload", "jsonb", "NO"),
            ("actor", "text", "NO"),
            ("source", "text", "YES"),
            ("metadata", "jsonb", "NO"),
            ("refs", "jsonb", "NO"),
            ("idempotency_key", "text", "YES"),
            ("inserted_at", "timestamp with time zone", "NO"),
            ("producer_id", "text", "YES"),
            ("producer_seq", "bigint", "YES"),
        ])
    );
    assert_eq!(
        client_columns(&mut client, "sessions"),
        expected(&[
            ("id", "text", "NO"),
            ("title", "text", "YES"),
            ("metadata", "jsonb", "NO"),
            ("created_at", "timestamp with time zone", "NO"),
            ("creator_principal", "jsonb", "YES"),
        ])
    );
    assert_eq!(
        client_columns(&mut client, "starcite_schema_migrations"),
        expected(&[
            ("version", "bigint", "NO"),
            ("applied_at", "timestamp with time zone", "NO")
        ])
    );
    let indexes: Vec<String> = client
        .query(
            "SELECT indexname::text FROM pg_indexes WHERE schemaname = 'public' ORDER BY indexname",
            &[],
        )
        .unwrap()
        .iter()
        .map(|row| row.get(0))
        .collect();
    for index in [
        "events_pkey",
        "events_session_producer_idx",
        "sessions_metadata_gin",
        "sessions_pkey",
    ] {
        assert!(
            indexes.iter().any(|name| name == index),
            "missing index {index}: {indexes:?}"
        );
    }
    let versions: Vec<i64> = client
        .query("SELECT version FROM starcite_schema_migrations", &[])
        .unwrap()
        .iter()
        .map(|row| row.get(0))
        .collect();
    assert_eq!(versions, vec![1]);
}

/// Stored timestamps keep microseconds, and a NULL source is omitted from the frame.
#[test]
fn columns_hold_the_event_fields() {
    let harness = harness();
    let session = suite::session_id("columns");
    let written = suite::events(1..=3, "columns");
    assert_eq!(harness.adapter.write_events(&session, &written).unwrap(), 3);
    let rows = client()
        .query(
            "SELECT seq, source, idempotency_key, producer_id, producer_seq, extract(microseconds FROM inserted_at)::bigint
             FROM events WHERE session_id = $1 ORDER BY seq",
            &[&session],
        )
        .unwrap();
    let first: (
        i64,
        Option<String>,
        Option<String>,
        Option<String>,
        Option<i64>,
        i64,
    ) = (
        rows[0].get(0),
        rows[0].get(1),
        rows[0].get(2),
        rows[0].get(3),
        rows[0].get(4),
        rows[0].get(5),
    );
    assert_eq!(
        first,
        (
            1,
            None,
            None,
            Some("producer-ä".to_owned()),
            Some(1),
            12_123_456
        )
    );
    let third_source: Option<String> = rows[2].get(1);
    assert_eq!(third_source.as_deref(), Some("agent"));
    let read = harness.adapter.read_events(&session, 1, 1).unwrap();
    assert!(!std::str::from_utf8(&read[0].json)
        .unwrap()
        .contains("\"source\""));
}

/// With every pooled connection busy, a checkout gives up after the checkout timeout.
#[test]
fn pool_checkout_times_out() {
    let mut config = PostgresConfig::new(database_url());
    config.pool_size = 1;
    config.checkout_timeout = std::time::Duration::from_millis(300);
    let adapter = PostgresAdapter::connect(config).unwrap();
    let session = suite::session_id("pool");
    let mut blocker = client();
    let mut transaction = blocker.transaction().unwrap();
    // Holds the row lock on seq 1 so that the adapter's insert of seq 1 waits, holding its connection.
    transaction
        .execute(
            "INSERT INTO events (session_id, seq, type, payload, actor, inserted_at) VALUES ($1, 1, 't', '{}', 'a', now())",
            &[&session],
        )
        .unwrap();
    std::thread::scope(|scope| {
        let writer = scope.spawn(|| adapter.write_events(&session, &suite::events(1..=1, "x")));
        std::thread::sleep(std::time::Duration::from_millis(300));
        let error = adapter.read_events(&session, 1, 1).unwrap_err();
        assert!(
            matches!(
                error,
                starcite_archive::ArchiveError::PoolTimeout { pool_size: 1, .. }
            ),
            "{error}"
        );
        transaction.rollback().unwrap();
        assert_eq!(writer.join().unwrap().unwrap(), 1);
    });
}
