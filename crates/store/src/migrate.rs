//! Copies a single relay's SQLite state into an empty PostgreSQL database,
//! so that an installation can grow into replicas: `borealis-relay migrate
//! --from sqlite://PATH --to postgres://URL`.
//!
//! Everything durable is copied, table by table, as stored: settings (the
//! token signing key, so issued tokens stay valid), teams, credentials with
//! their hashes and revocations, secrets as encrypted (the same secret key
//! reads them), metric providers, webhook runs with their attempts and
//! deadlines, deployments with targets, journal, events, approvals and
//! their votes, service accounts (token hashes), role bindings, people's
//! personal tokens (hashes) and the audit trail. Console sessions are not
//! (whoever was signed in signs in again); nor are leases: a copied attempt
//! under way is taken over as cut off by the first replica, as after a crash. The source is read in one snapshot; the
//! target is written in one transaction, so a failed copy leaves it empty.

use sqlx::{Row, postgres::PgArguments, query::Query};

use crate::error::StoreError;
use crate::postgres::PostgresStore;
use crate::sqlite::SqliteStore;

/// How a column is stored: SQLite keeps booleans as integers.
#[derive(Clone, Copy)]
enum Kind {
    Text,
    Int,
    Bytes,
    Bool,
}

use Kind::{Bool, Bytes, Int, Text};

/// One table: its name, its columns in order, and how its rows are ordered.
struct Table {
    name: &'static str,
    columns: &'static [(&'static str, Kind)],
    order: &'static str,
    /// Identity columns Postgres generates, inserted as they were.
    identity: Option<&'static str>,
    /// What a row the target's own migrations made (team `default`) does
    /// with the copied one.
    on_conflict: &'static str,
}

/// Parents before children, as the foreign keys need.
const TABLES: &[Table] = &[
    Table {
        name: "teams",
        columns: &[("name", Text), ("created_at", Int), ("forbid_self_approval", Bool)],
        order: "name",
        identity: None,
        // The target's `default` keeps its creation, and takes the source's rule.
        on_conflict: " ON CONFLICT (name) DO UPDATE SET forbid_self_approval = excluded.forbid_self_approval",
    },
    Table {
        name: "settings",
        columns: &[("key", Text), ("value", Bytes)],
        order: "key",
        identity: None,
        on_conflict: "",
    },
    Table {
        name: "credentials",
        columns: &[
            ("client_id", Text),
            ("kind", Text),
            ("team", Text),
            ("subject", Text),
            ("secret_hash", Bytes),
            ("created_at", Int),
            ("revoked_at", Int),
        ],
        order: "created_at, client_id",
        identity: None,
        on_conflict: "",
    },
    Table {
        name: "secrets",
        columns: &[
            ("team", Text),
            ("name", Text),
            ("nonce", Bytes),
            ("ciphertext", Bytes),
            ("updated_at", Int),
            ("uses", Text),
        ],
        order: "team, name",
        identity: None,
        on_conflict: "",
    },
    Table {
        name: "metric_providers",
        columns: &[
            ("team", Text),
            ("name", Text),
            ("kind", Text),
            ("url", Text),
            ("agent", Text),
            ("headers", Text),
            ("created_at", Int),
        ],
        order: "team, name",
        identity: None,
        on_conflict: "",
    },
    Table {
        name: "webhook_runs",
        columns: &[
            ("id", Text),
            ("team", Text),
            ("callback_id", Text),
            ("webhook", Text),
            ("environment", Text),
            ("spec", Text),
            ("request", Text),
            ("state", Text),
            ("attempts", Int),
            ("next_attempt_at", Int),
            ("deadline_at", Int),
            ("success", Bool),
            ("md_message", Text),
            ("reason", Text),
            ("callback_at", Int),
            ("created_at", Int),
            ("updated_at", Int),
            ("finished_at", Int),
            ("idempotency_key", Text),
            ("request_hash", Text),
            ("watched", Bool),
            ("request_attempt", Int),
        ],
        order: "created_at, id",
        identity: None,
        on_conflict: "",
    },
    Table {
        name: "webhook_attempts",
        columns: &[
            ("run_id", Text),
            ("number", Int),
            ("started_at", Int),
            ("latency_ms", Int),
            ("status", Int),
            ("error", Text),
            ("reply", Text),
        ],
        order: "run_id, number",
        identity: None,
        on_conflict: "",
    },
    Table {
        name: "deployments",
        columns: &[
            ("id", Text),
            ("team", Text),
            ("application", Text),
            ("file", Text),
            ("context", Text),
            ("state", Text),
            ("reason", Text),
            ("created_at", Int),
            ("updated_at", Int),
            ("finished_at", Int),
            ("idempotency_key", Text),
            ("request_hash", Text),
            ("abort_reason", Text),
            ("abort_rollback", Bool),
            ("abort_requested_at", Int),
            ("abort_requested_by", Text),
        ],
        order: "created_at, id",
        identity: None,
        on_conflict: "",
    },
    Table {
        name: "deployment_targets",
        columns: &[
            ("deployment_id", Text),
            ("target", Text),
            ("state", Text),
            ("step", Text),
            ("reason", Text),
            ("updated_at", Int),
            ("position", Int),
        ],
        order: "position",
        identity: Some("position"),
        on_conflict: "",
    },
    Table {
        name: "deployment_journal",
        columns: &[("deployment_id", Text), ("key", Text), ("value", Text), ("recorded_at", Int)],
        order: "deployment_id, key",
        identity: None,
        on_conflict: "",
    },
    Table {
        name: "deployment_events",
        columns: &[
            ("id", Int),
            ("deployment_id", Text),
            ("at", Int),
            ("target", Text),
            ("kind", Text),
            ("message", Text),
        ],
        order: "id",
        identity: Some("id"),
        on_conflict: "",
    },
    Table {
        name: "approvals",
        columns: &[
            ("deployment_id", Text),
            ("step_key", Text),
            ("target", Text),
            ("state", Text),
            ("requested_at", Int),
            ("decided_at", Int),
            ("decided_by", Text),
        ],
        order: "deployment_id, step_key",
        identity: None,
        on_conflict: "",
    },
    Table {
        name: "approval_votes",
        columns: &[
            ("deployment_id", Text),
            ("step_key", Text),
            ("voter_id", Text),
            ("voter_name", Text),
            ("voted_at", Int),
            ("seq", Int),
        ],
        order: "deployment_id, seq",
        identity: Some("seq"),
        on_conflict: "",
    },
    Table {
        name: "service_accounts",
        columns: &[
            ("id", Text),
            ("team", Text),
            ("name", Text),
            ("roles", Text),
            ("secret_hash", Bytes),
            ("created_at", Int),
            ("created_by", Text),
            ("expires_at", Int),
            ("revoked_at", Int),
        ],
        order: "id",
        identity: None,
        on_conflict: "",
    },
    Table {
        name: "role_bindings",
        columns: &[
            ("id", Text),
            ("team", Text),
            ("subject_kind", Text),
            ("subject", Text),
            ("role", Text),
            ("created_at", Int),
            ("created_by", Text),
        ],
        order: "id",
        identity: None,
        on_conflict: "",
    },
    Table {
        name: "personal_tokens",
        columns: &[
            ("id", Text),
            ("subject", Text),
            ("name", Text),
            ("groups", Text),
            ("description", Text),
            ("secret_hash", Bytes),
            ("created_at", Int),
            ("expires_at", Int),
            ("revoked_at", Int),
        ],
        order: "id",
        identity: None,
        on_conflict: "",
    },
    Table {
        name: "audit_log",
        columns: &[
            ("seq", Int),
            ("time", Int),
            ("actor_kind", Text),
            ("actor_id", Text),
            ("actor_name", Text),
            ("team", Text),
            ("action", Text),
            ("object", Text),
            ("outcome", Text),
            ("status", Int),
            ("source_address", Text),
            ("request_id", Text),
        ],
        order: "seq",
        identity: Some("seq"),
        on_conflict: "",
    },
];

/// The tables whose rows make a database "in use".
const IN_USE: &[&str] = &[
    "settings",
    "credentials",
    "secrets",
    "metric_providers",
    "webhook_runs",
    "deployments",
    "service_accounts",
    "role_bindings",
    "personal_tokens",
];

#[derive(Debug, thiserror::Error)]
pub enum MigrateError {
    /// The target holds data already: nothing was copied.
    #[error(
        "the target database is not empty ({0}); migrate copies into an empty one only, so that nothing is overwritten or mixed"
    )]
    TargetNotEmpty(String),
    /// `--from` names no SQLite database (a typo): nothing was created.
    #[error("no SQLite database at {path} ({reason}); nothing was created or copied")]
    SourceMissing { path: String, reason: String },
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Opens the relay database to copy from, which must exist: a path with a
/// typo is refused, naming it, before anything could create an empty
/// database there (opening a store creates a missing file). The probe opens
/// the file read-only and without `create_if_missing`, and reads its schema,
/// so a file that is no SQLite database is refused the same way.
pub async fn open_source(url: &str) -> Result<SqliteStore, MigrateError> {
    use std::str::FromStr;
    let options = sqlx::sqlite::SqliteConnectOptions::from_str(url)
        .map_err(|e| StoreError::InvalidUrl(format!("{url:?}: {e}")))?
        .create_if_missing(false)
        .read_only(true);
    let path = options.get_filename().display().to_string();
    let probe = async {
        use sqlx::ConnectOptions;
        let mut connection = options.connect().await?;
        sqlx::query("SELECT count(*) FROM sqlite_master").fetch_one(&mut connection).await?;
        sqlx::Connection::close(connection).await
    };
    if let Err(err) = probe.await {
        let reason = match &err {
            sqlx::Error::Database(db) => db.message().to_owned(),
            other => other.to_string(),
        };
        return Err(MigrateError::SourceMissing { path, reason });
    }
    Ok(SqliteStore::open(url).await?)
}

/// How many rows of each table were copied, in copy order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Copied(pub Vec<(&'static str, u64)>);

impl Copied {
    pub fn rows(&self, table: &str) -> u64 {
        self.0.iter().find(|(name, _)| *name == table).map(|(_, n)| *n).unwrap_or_default()
    }
}

/// A value read from SQLite, as Postgres takes it.
enum Value {
    Text(Option<String>),
    Int(Option<i64>),
    Bytes(Option<Vec<u8>>),
    Bool(Option<bool>),
}

fn read(row: &sqlx::sqlite::SqliteRow, column: &str, kind: Kind) -> Result<Value, StoreError> {
    let backend = |e: sqlx::Error| StoreError::Backend(Box::new(e));
    Ok(match kind {
        Text => Value::Text(row.try_get(column).map_err(backend)?),
        Int => Value::Int(row.try_get(column).map_err(backend)?),
        Bytes => Value::Bytes(row.try_get(column).map_err(backend)?),
        Bool => Value::Bool(row.try_get::<Option<i64>, _>(column).map_err(backend)?.map(|v| v != 0)),
    })
}

fn bind(query: Query<'_, sqlx::Postgres, PgArguments>, value: Value) -> Query<'_, sqlx::Postgres, PgArguments> {
    match value {
        // Text SQLite took with a NUL, as PostgreSQL can store it.
        Value::Text(v) => query.bind(v.map(|v| crate::text::storable(&v).into_owned())),
        Value::Int(v) => query.bind(v),
        Value::Bytes(v) => query.bind(v),
        Value::Bool(v) => query.bind(v),
    }
}

/// Copies `from` into `to`, which must be empty. Returns what was copied.
pub async fn sqlite_to_postgres(from: &SqliteStore, to: &PostgresStore) -> Result<Copied, MigrateError> {
    let pg = |e: sqlx::Error| StoreError::Backend(Box::new(e));
    let mut used = Vec::new();
    for table in IN_USE {
        let sql = format!("SELECT count(*) AS n FROM {table}");
        let n: i64 = sqlx::query(sqlx::AssertSqlSafe(sql)).fetch_one(to.pool()).await.map_err(pg)?.get("n");
        if n > 0 {
            used.push(format!("{table}: {n} rows"));
        }
    }
    if !used.is_empty() {
        return Err(MigrateError::TargetNotEmpty(used.join(", ")));
    }
    let mut source = from.pool().begin_with("BEGIN DEFERRED").await.map_err(pg)?;
    let mut target = to.pool().begin().await.map_err(pg)?;
    let mut copied = Vec::new();
    for table in TABLES {
        let names: Vec<&str> = table.columns.iter().map(|(name, _)| *name).collect();
        let select = format!("SELECT {} FROM {} ORDER BY {}", names.join(", "), table.name, table.order);
        let rows = sqlx::query(sqlx::AssertSqlSafe(select)).fetch_all(&mut *source).await.map_err(pg)?;
        let placeholders: Vec<String> = (1..=names.len()).map(|i| format!("${i}")).collect();
        let overriding = if table.identity.is_some() { " OVERRIDING SYSTEM VALUE" } else { "" };
        let insert = format!(
            "INSERT INTO {} ({}){overriding} VALUES ({}){}",
            table.name,
            names.join(", "),
            placeholders.join(", "),
            table.on_conflict
        );
        for row in &rows {
            let mut query = sqlx::query(sqlx::AssertSqlSafe(insert.clone()));
            for (column, kind) in table.columns {
                query = bind(query, read(row, column, *kind)?);
            }
            query.execute(&mut *target).await.map_err(pg)?;
        }
        if let Some(column) = table.identity {
            // The next generated value follows the copied ones.
            let reset = format!(
                "SELECT setval(pg_get_serial_sequence('{name}', '{column}'), COALESCE(MAX({column}), 0) + 1, false) FROM {name}",
                name = table.name
            );
            sqlx::query(sqlx::AssertSqlSafe(reset)).execute(&mut *target).await.map_err(pg)?;
        }
        copied.push((table.name, rows.len() as u64));
    }
    target.commit().await.map_err(pg)?;
    source.rollback().await.map_err(pg)?;
    Ok(Copied(copied))
}
