//! The archive schema (`contract/archive.md` §7) and its migrations.
//!
//! Each migration runs once, in a transaction that records its version in
//! `starcite_schema_migrations`. An advisory lock serialises nodes that boot at the same time.

use postgres::Client;

use crate::ArchiveError;

/// Key of the advisory lock held while migrating (an arbitrary constant: "starcite" in ASCII).
const MIGRATION_LOCK_KEY: i64 = 0x7374_6172_6369_7465;

const MIGRATIONS_TABLE: &str = "CREATE TABLE IF NOT EXISTS starcite_schema_migrations (
  version    bigint      PRIMARY KEY,
  applied_at timestamptz NOT NULL
)";

/// Version 1: the `events` and `sessions` tables with exactly the contract's columns and indexes.
const SCHEMA_VERSION_1: &str = "
CREATE TABLE IF NOT EXISTS events (
  session_id      text        NOT NULL,
  seq             bigint      NOT NULL,
  type            text        NOT NULL,
  payload         jsonb       NOT NULL,
  actor           text        NOT NULL,
  source          text        NULL,
  metadata        jsonb       NOT NULL DEFAULT '{}',
  refs            jsonb       NOT NULL DEFAULT '{}',
  idempotency_key text        NULL,
  inserted_at     timestamptz NOT NULL,
  producer_id     text        NULL,
  producer_seq    bigint      NULL,
  PRIMARY KEY (session_id, seq)
);
CREATE INDEX IF NOT EXISTS events_session_producer_idx ON events (session_id, producer_id, producer_seq);

CREATE TABLE IF NOT EXISTS sessions (
  id                text        PRIMARY KEY,
  title             text        NULL,
  metadata          jsonb       NOT NULL DEFAULT '{}',
  created_at        timestamptz NOT NULL,
  creator_principal jsonb       NULL
);
CREATE INDEX IF NOT EXISTS sessions_metadata_gin ON sessions USING gin (metadata);
";

/// Every migration in order: (version, SQL).
const MIGRATIONS: &[(i64, &str)] = &[(1, SCHEMA_VERSION_1)];

/// Applies the migrations that are not recorded yet.
pub(crate) fn migrate(client: &mut Client) -> Result<(), ArchiveError> {
    let failed = |operation| move |source| ArchiveError::Postgres { operation, source };
    let mut transaction = client
        .transaction()
        .map_err(failed("begin the migration transaction"))?;
    transaction
        .execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK_KEY])
        .map_err(failed("take the migration lock"))?;
    transaction
        .batch_execute(MIGRATIONS_TABLE)
        .map_err(failed("create starcite_schema_migrations"))?;
    for (version, sql) in MIGRATIONS {
        let applied = transaction
            .query_opt(
                "SELECT 1 FROM starcite_schema_migrations WHERE version = $1",
                &[version],
            )
            .map_err(failed("read starcite_schema_migrations"))?
            .is_some();
        if applied {
            continue;
        }
        transaction
            .batch_execute(sql)
            .map_err(failed("apply a schema migration"))?;
        transaction
            .execute(
                "INSERT INTO starcite_schema_migrations (version, applied_at) VALUES ($1, now())",
                &[version],
            )
            .map_err(failed("record a schema migration"))?;
    }
    transaction
        .commit()
        .map_err(failed("commit the schema migrations"))
}
