//! The `postgres` adapter (`contract/archive.md` §7): the `events` and `sessions` tables.
//!
//! Built on the synchronous `postgres` crate, which drives its own small runtime: call it only from
//! dedicated threads, never from an async executor. Connections come from a bounded [`pool`];
//! [`schema`] holds the tables and the migrations run at boot.
//!
//! JSON columns are `jsonb`, which keeps values but not text: on read, `payload`, `metadata` and `refs`
//! come back as equal JSON values with object keys in `jsonb` order. Numbers keep every digit (`jsonb`
//! stores them as `numeric`, and this crate parses them with serde_json's arbitrary precision).
//! Timestamps are `timestamptz` with microsecond precision and are read back in the written form.

mod pool;
mod schema;

use std::time::Duration;

use postgres::types::ToSql;
use serde_json::value::RawValue;

use crate::format::{self, EventFrame};
use crate::{ArchiveAdapter, ArchiveError, ArchivedEvent, SessionCatalog};
use pool::Pool;

/// `DB_POOL_SIZE` default.
pub const DEFAULT_POOL_SIZE: u32 = 10;

/// How long a request waits for a free pooled connection.
pub const CHECKOUT_TIMEOUT: Duration = Duration::from_secs(5);

/// Server-side limit of one statement (`statement_timeout`).
pub const STATEMENT_TIMEOUT: Duration = Duration::from_secs(30);

/// Limit for opening one connection.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Most rows in one `INSERT` statement.
const INSERT_ROWS_PER_STATEMENT_MAX: usize = 5000;

/// Bind parameters per inserted row (`session_id` is one shared parameter, `$1`).
const INSERT_PARAMETERS_PER_ROW_COUNT: usize = 11;

/// The protocol's limit on bind parameters per statement.
const STATEMENT_PARAMETERS_COUNT_MAX: usize = 65_535;

// The row parameters plus the shared `$1` must fit one statement.
const _: () = assert!(
    INSERT_ROWS_PER_STATEMENT_MAX * INSERT_PARAMETERS_PER_ROW_COUNT
        < STATEMENT_PARAMETERS_COUNT_MAX
);

const INSERT_PREFIX: &str = "INSERT INTO events (session_id, seq, type, payload, actor, source, metadata, refs, idempotency_key, inserted_at, producer_id, producer_seq) VALUES ";

const INSERT_SUFFIX: &str = " ON CONFLICT (session_id, seq) DO NOTHING";

/// `to_char` renders `inserted_at` in the written form directly, independent of the session time zone.
const READ_SQL: &str = r#"SELECT seq, type, payload::text, actor, source, metadata::text, refs::text, idempotency_key,
       to_char(inserted_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"'), producer_id, producer_seq
FROM events WHERE session_id = $1 AND seq BETWEEN $2 AND $3 ORDER BY seq"#;

const CATALOG_SQL: &str = "INSERT INTO sessions (id, title, metadata, created_at, creator_principal) \
VALUES ($1, $2, $3::text::jsonb, $4::text::timestamptz, $5::text::jsonb) ON CONFLICT (id) DO NOTHING";

/// Configuration of the Postgres adapter (`contract/config.md` §4.3).
#[derive(Clone, Debug)]
pub struct PostgresConfig {
    /// `DATABASE_URL` or `STARCITE_POSTGRES_URL` (`postgres://…` or key=value form).
    pub url: String,
    /// `DB_POOL_SIZE`: most open connections.
    pub pool_size: u32,
    /// `MIGRATE_ON_BOOT`: create or upgrade the schema when the adapter is built.
    pub migrate_on_boot: bool,
    pub checkout_timeout: Duration,
    pub statement_timeout: Duration,
    pub connect_timeout: Duration,
}

impl PostgresConfig {
    /// The contract's defaults for `url`.
    pub fn new(url: impl Into<String>) -> PostgresConfig {
        PostgresConfig {
            url: url.into(),
            pool_size: DEFAULT_POOL_SIZE,
            migrate_on_boot: true,
            checkout_timeout: CHECKOUT_TIMEOUT,
            statement_timeout: STATEMENT_TIMEOUT,
            connect_timeout: CONNECT_TIMEOUT,
        }
    }
}

/// The `postgres` archive adapter.
pub struct PostgresAdapter {
    pool: Pool,
}

impl std::fmt::Debug for PostgresAdapter {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The URL may hold a password; nothing of it is printed.
        formatter
            .debug_struct("PostgresAdapter")
            .finish_non_exhaustive()
    }
}

impl PostgresAdapter {
    /// Builds the pool and, with `migrate_on_boot`, migrates the schema (which needs the database to
    /// be reachable now). Without it, connections open on first use.
    pub fn connect(config: PostgresConfig) -> Result<PostgresAdapter, ArchiveError> {
        if config.pool_size == 0 {
            return Err(ArchiveError::Config {
                message: "the Postgres pool size must be at least 1".to_owned(),
            });
        }
        let mut connection_config: postgres::Config =
            config
                .url
                .parse()
                .map_err(|source| ArchiveError::Postgres {
                    operation: "parse the Postgres connection URL",
                    source,
                })?;
        let statement_timeout_option = format!(
            "-c statement_timeout={}",
            config.statement_timeout.as_millis()
        );
        let options = match connection_config.get_options() {
            Some(existing) if !existing.is_empty() => {
                format!("{existing} {statement_timeout_option}")
            }
            _ => statement_timeout_option,
        };
        connection_config.options(&options);
        if connection_config.get_connect_timeout().is_none() {
            connection_config.connect_timeout(config.connect_timeout);
        }
        let pool = Pool::new(connection_config, config.pool_size, config.checkout_timeout);
        if config.migrate_on_boot {
            let mut client = pool.connect()?;
            schema::migrate(&mut client)?;
        }
        Ok(PostgresAdapter { pool })
    }
}

/// The bind values of one `events` row (all but `session_id`).
struct EventRow<'a> {
    seq: i64,
    event_type: &'a str,
    payload: &'a str,
    actor: &'a str,
    source: Option<&'a str>,
    metadata: &'a str,
    refs: &'a str,
    idempotency_key: Option<&'a str>,
    inserted_at: &'a str,
    producer_id: Option<&'a str>,
    producer_seq: Option<i64>,
}

impl<'a> EventRow<'a> {
    fn new(frame: &'a EventFrame) -> Result<EventRow<'a>, ArchiveError> {
        let bigint = |value: u64, name: &str| {
            i64::try_from(value).map_err(|_| ArchiveError::InvalidEvent {
                seq: frame.seq,
                reason: format!("{name} {value} does not fit a Postgres bigint"),
            })
        };
        Ok(EventRow {
            seq: bigint(frame.seq, "seq")?,
            event_type: &frame.event_type,
            payload: frame.payload.get(),
            actor: &frame.actor,
            source: frame.source.as_deref(),
            metadata: frame.metadata.get(),
            refs: frame.refs.get(),
            idempotency_key: frame.idempotency_key.as_deref(),
            inserted_at: &frame.inserted_at,
            producer_id: frame.producer_id.as_deref(),
            producer_seq: frame
                .producer_seq
                .map(|value| bigint(value, "producer_seq"))
                .transpose()?,
        })
    }

    fn push_parameters<'b>(&'b self, parameters: &mut Vec<&'b (dyn ToSql + Sync)>) {
        parameters.extend_from_slice(&[
            &self.seq,
            &self.event_type,
            &self.payload,
            &self.actor,
            &self.source,
            &self.metadata,
            &self.refs,
            &self.idempotency_key,
            &self.inserted_at,
            &self.producer_id,
            &self.producer_seq,
        ]);
    }
}

/// The multi-row insert for `row_count` rows.
fn insert_sql(row_count: usize) -> String {
    let mut sql = String::with_capacity(INSERT_PREFIX.len() + row_count * 96 + INSERT_SUFFIX.len());
    sql.push_str(INSERT_PREFIX);
    for row_index in 0..row_count {
        let first = 2 + row_index * INSERT_PARAMETERS_PER_ROW_COUNT;
        if row_index > 0 {
            sql.push_str(", ");
        }
        // JSON and timestamps travel as text and are cast by the server, which keeps every digit of
        // JSON numbers and the full microsecond precision.
        sql.push_str(&format!(
            "($1, ${}, ${}, ${}::text::jsonb, ${}, ${}, ${}::text::jsonb, ${}::text::jsonb, ${}, ${}::text::timestamptz, ${}, ${})",
            first,
            first + 1,
            first + 2,
            first + 3,
            first + 4,
            first + 5,
            first + 6,
            first + 7,
            first + 8,
            first + 9,
            first + 10,
        ));
    }
    sql.push_str(INSERT_SUFFIX);
    sql
}

/// Re-renders `jsonb` text output (`{"a": 1}`) as compact JSON.
fn compact_json(text: &str) -> Result<Box<RawValue>, String> {
    let value: serde_json::Value = serde_json::from_str(text).map_err(|error| error.to_string())?;
    RawValue::from_string(value.to_string()).map_err(|error| error.to_string())
}

/// Builds the event frame of one `events` row.
fn frame_from_row(row: &postgres::Row, session_id: &str) -> Result<EventFrame, ArchiveError> {
    let column_error = |source| ArchiveError::Postgres {
        operation: "decode an events row",
        source,
    };
    let seq: i64 = row.try_get(0).map_err(column_error)?;
    let invalid = |reason: String| ArchiveError::InvalidLine {
        location: format!("Postgres events row of session {session_id:?}"),
        line_number: u64::try_from(seq).unwrap_or(0),
        reason,
    };
    let json_column = |index: usize, name: &str| -> Result<Box<RawValue>, ArchiveError> {
        let text: String = row.try_get(index).map_err(column_error)?;
        compact_json(&text).map_err(|reason| invalid(format!("{name}: {reason}")))
    };
    let producer_seq: Option<i64> = row.try_get(10).map_err(column_error)?;
    let frame = EventFrame {
        seq: u64::try_from(seq).map_err(|_| invalid(format!("negative seq {seq}")))?,
        event_type: row.try_get(1).map_err(column_error)?,
        payload: json_column(2, "payload")?,
        actor: row.try_get(3).map_err(column_error)?,
        producer_id: row.try_get(9).map_err(column_error)?,
        producer_seq: producer_seq
            .map(|value| {
                u64::try_from(value).map_err(|_| invalid(format!("negative producer_seq {value}")))
            })
            .transpose()?,
        source: row.try_get(4).map_err(column_error)?,
        metadata: json_column(5, "metadata")?,
        refs: json_column(6, "refs")?,
        idempotency_key: row.try_get(7).map_err(column_error)?,
        inserted_at: row.try_get(8).map_err(column_error)?,
    };
    // The same checks as for an archived line: seq ≥ 1, metadata and refs objects, a valid timestamp.
    let rendered = frame
        .render()
        .map_err(|error| invalid(format!("cannot render the event: {error}")))?;
    let mut checked = EventFrame::parse(&rendered).map_err(invalid)?;
    checked.normalize_inserted_at().map_err(invalid)?;
    Ok(checked)
}

impl PostgresAdapter {
    /// Run `operation` on a pooled connection. A pooled connection may have been closed by the
    /// server since it was opened (a PostgreSQL restart), which shows only when it is used:
    /// then `operation` runs again on another connection. Each such failure discards one
    /// dead connection, so `pool size + 1` attempts always reach a newly opened one.
    fn with_open_connection<T>(
        &self,
        mut operation: impl FnMut(&mut postgres::Client) -> Result<T, ArchiveError>,
    ) -> Result<T, ArchiveError> {
        let attempts_max = self.pool.size_max().saturating_add(1);
        let mut attempt = 1;
        loop {
            let mut client = self.pool.checkout()?;
            match operation(&mut client) {
                Err(error) if attempt < attempts_max && connection_lost(&client, &error) => {
                    attempt += 1;
                }
                result => return result,
            }
        }
    }
}

/// Whether `error` came from the connection itself (closed, or its socket failed) rather than
/// from the statement.
fn connection_lost(client: &postgres::Client, error: &ArchiveError) -> bool {
    let ArchiveError::Postgres { source, .. } = error else {
        return false;
    };
    let socket_failed =
        std::error::Error::source(source).is_some_and(|inner| inner.is::<std::io::Error>());
    client.is_closed() || source.is_closed() || socket_failed
}

impl ArchiveAdapter for PostgresAdapter {
    fn name(&self) -> &'static str {
        "postgres"
    }

    fn write_events(
        &self,
        session_id: &str,
        events: &[ArchivedEvent],
    ) -> Result<u64, ArchiveError> {
        let frames = format::validate_batch(events)?;
        if frames.is_empty() {
            return Ok(0);
        }
        let rows = frames
            .iter()
            .map(EventRow::new)
            .collect::<Result<Vec<_>, _>>()?;
        let failed = |operation| move |source| ArchiveError::Postgres { operation, source };
        // The transaction commits all rows or none, so running it again is safe.
        self.with_open_connection(|client| {
            let mut transaction = client
                .transaction()
                .map_err(failed("begin the events transaction"))?;
            let mut inserted_count = 0;
            for statement_rows in rows.chunks(INSERT_ROWS_PER_STATEMENT_MAX) {
                let sql = insert_sql(statement_rows.len());
                let mut parameters: Vec<&(dyn ToSql + Sync)> =
                    Vec::with_capacity(1 + statement_rows.len() * INSERT_PARAMETERS_PER_ROW_COUNT);
                parameters.push(&session_id);
                for row in statement_rows {
                    row.push_parameters(&mut parameters);
                }
                inserted_count += transaction
                    .execute(sql.as_str(), &parameters)
                    .map_err(failed("insert events"))?;
            }
            transaction
                .commit()
                .map_err(failed("commit the events transaction"))?;
            Ok(inserted_count)
        })
    }

    fn read_events(
        &self,
        session_id: &str,
        from_seq: u64,
        to_seq: u64,
    ) -> Result<Vec<ArchivedEvent>, ArchiveError> {
        let from_seq = i64::try_from(from_seq).unwrap_or(i64::MAX);
        let to_seq = i64::try_from(to_seq).unwrap_or(i64::MAX);
        if from_seq > to_seq {
            return Ok(Vec::new());
        }
        let rows = self.with_open_connection(|client| {
            client
                .query(READ_SQL, &[&session_id, &from_seq, &to_seq])
                .map_err(|source| ArchiveError::Postgres {
                    operation: "read events",
                    source,
                })
        })?;
        rows.iter()
            .map(|row| {
                let frame = frame_from_row(row, session_id)?;
                let json = frame.render().map_err(|error| ArchiveError::InvalidLine {
                    location: format!("Postgres events row of session {session_id:?}"),
                    line_number: frame.seq,
                    reason: format!("cannot render the event: {error}"),
                })?;
                Ok(ArchivedEvent {
                    seq: frame.seq,
                    json,
                })
            })
            .collect()
    }

    fn write_catalog(&self, session: &SessionCatalog) -> Result<(), ArchiveError> {
        format::validate_catalog(session)?;
        let invalid = |error: serde_json::Error| ArchiveError::InvalidCatalog {
            session_id: session.id.clone(),
            reason: error.to_string(),
        };
        let metadata = serde_json::to_string(&session.metadata).map_err(invalid)?;
        let creator_principal = session
            .creator_principal
            .as_ref()
            .map(serde_json::to_string)
            .transpose()
            .map_err(invalid)?;
        let mut client = self.pool.checkout()?;
        client
            .execute(
                CATALOG_SQL,
                &[
                    &session.id,
                    &session.title,
                    &metadata,
                    &session.created_at,
                    &creator_principal,
                ],
            )
            .map_err(|source| ArchiveError::Postgres {
                operation: "insert the session catalog record",
                source,
            })?;
        Ok(())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn insert_statements_number_their_parameters_per_row() {
        let sql = insert_sql(2);
        assert!(sql.contains("($1, $2, $3, $4::text::jsonb, $5, $6, $7::text::jsonb, $8::text::jsonb, $9, $10::text::timestamptz, $11, $12)"));
        assert!(sql.contains("($1, $13, $14, $15::text::jsonb,"));
        assert!(sql.ends_with("$22, $23) ON CONFLICT (session_id, seq) DO NOTHING"));
    }

    #[test]
    fn jsonb_text_is_compacted_without_losing_digits() {
        let compact =
            compact_json(r#"{"b": [1, 2.50], "a": 123456789012345678901234567890}"#).unwrap();
        assert_eq!(
            compact.get(),
            r#"{"a":123456789012345678901234567890,"b":[1,2.50]}"#
        );
    }
}
