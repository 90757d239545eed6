//! [`Store`] on SQLite: one file in the data directory, WAL mode, and
//! `synchronous = FULL` so that what was acknowledged survives a crash.
//! Writes are committed in groups ([`GroupCommit`]); reads go to the pool.

use std::collections::HashMap;
use std::path::Path;
use std::str::FromStr;
use std::time::{Duration, SystemTime};

use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteRow, SqliteSynchronous};
use sqlx::{Row, SqlitePool};

use crate::group_commit::{GroupCommit, Query};
use crate::*;

#[derive(Clone)]
pub struct SqliteStore {
    /// Reads; and the connections the writes are committed on.
    pool: SqlitePool,
    writes: GroupCommit,
}

static MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

/// The tables whose rows an Idempotency-Key can name.
#[derive(Clone, Copy)]
enum Keyed {
    Runs,
    Deployments,
}

impl SqliteStore {
    /// After a unique violation: whether `key` was the reason, as the error
    /// that names the row it created.
    async fn key_used(&self, table: Keyed, key: Option<&IdempotencyKey>) -> Result<Option<StoreError>, StoreError> {
        let Some(key) = key else { return Ok(None) };
        let query = match table {
            Keyed::Runs => "SELECT id, request_hash FROM webhook_runs WHERE idempotency_key = ?",
            Keyed::Deployments => "SELECT id, request_hash FROM deployments WHERE idempotency_key = ?",
        };
        let row = sqlx::query(query).bind(&key.key).fetch_optional(&self.pool).await?;
        Ok(row.map(|row| {
            let hash: Option<String> = row.get("request_hash");
            StoreError::IdempotencyKeyUsed {
                id: row.get("id"),
                same_request: hash.as_deref() == Some(key.request_hash.as_str()),
            }
        }))
    }
}

impl SqliteStore {
    /// Opens (creating if needed) `borealis.db` in `data_dir`, readable by its owner only.
    pub async fn open_in(data_dir: &Path) -> Result<Self, StoreError> {
        let path = data_dir.join("borealis.db");
        let store = Self::open_sqlite(SqliteConnectOptions::new().filename(&path)).await?;
        for file in [path.clone(), path.with_extension("db-wal"), path.with_extension("db-shm")] {
            use std::os::unix::fs::PermissionsExt;
            let _ = std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600));
        }
        Ok(store)
    }

    /// Opens a database by URL (`sqlite://PATH` or `sqlite::memory:`).
    pub async fn open(url: &str) -> Result<Self, StoreError> {
        if !url.starts_with("sqlite:") {
            return Err(StoreError::InvalidUrl {
                url: url.to_owned(),
                reason: "only sqlite: URLs are supported by this build".into(),
            });
        }
        let options = SqliteConnectOptions::from_str(url)
            .map_err(|e| StoreError::InvalidUrl { url: url.to_owned(), reason: e.to_string() })?;
        Self::open_sqlite(options).await
    }

    async fn open_sqlite(options: SqliteConnectOptions) -> Result<Self, StoreError> {
        let options = options
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full)
            .busy_timeout(Duration::from_secs(5))
            .foreign_keys(true);
        // Each connection to `:memory:` is its own database: keep one.
        let in_memory = options.get_filename() == Path::new(":memory:");
        let pool =
            SqlitePoolOptions::new().max_connections(if in_memory { 1 } else { 8 }).connect_with(options).await?;
        MIGRATIONS.run(&pool).await?;
        Ok(Self { writes: GroupCommit::start(pool.clone()), pool })
    }
}

fn credential_from(row: &SqliteRow) -> Credential {
    Credential {
        client_id: row.get("client_id"),
        kind: CredentialKind::parse(row.get("kind")),
        subject: row.get("subject"),
        secret_hash: row.get("secret_hash"),
        created_at: from_unix_ms(row.get("created_at")),
        revoked_at: row.get::<Option<i64>, _>("revoked_at").map(from_unix_ms),
    }
}

fn time(row: &SqliteRow, column: &str) -> Option<SystemTime> {
    row.get::<Option<i64>, _>(column).map(from_unix_ms)
}

fn run_from(row: &SqliteRow) -> RunRecord {
    RunRecord {
        id: row.get("id"),
        callback_id: row.get("callback_id"),
        webhook: row.get("webhook"),
        environment: row.get("environment"),
        spec: row.get("spec"),
        request: row.get("request"),
        state: RunState::parse(row.get("state")).unwrap_or(RunState::Failed),
        attempts: row.get::<i64, _>("attempts") as u32,
        next_attempt_at: time(row, "next_attempt_at"),
        deadline_at: time(row, "deadline_at"),
        success: row.get::<Option<i64>, _>("success").map(|s| s != 0),
        md_message: row.get("md_message"),
        reason: row.get("reason"),
        callback_at: time(row, "callback_at"),
        created_at: from_unix_ms(row.get("created_at")),
        updated_at: from_unix_ms(row.get("updated_at")),
        finished_at: time(row, "finished_at"),
    }
}

fn deployment_from(row: &SqliteRow) -> DeploymentRecord {
    DeploymentRecord {
        id: row.get("id"),
        application: row.get("application"),
        file: row.get("file"),
        context: row.get("context"),
        state: row.get("state"),
        reason: row.get("reason"),
        created_at: from_unix_ms(row.get("created_at")),
        updated_at: from_unix_ms(row.get("updated_at")),
        finished_at: time(row, "finished_at"),
    }
}

fn run_query(id: &str) -> Query<'_> {
    sqlx::query("SELECT * FROM webhook_runs WHERE id = ?").bind(id)
}

// The reads a deployment's view is made of. Those also made alone
// (record, targets, journal) serve both.

fn deployment_query(id: &str) -> Query<'_> {
    sqlx::query("SELECT * FROM deployments WHERE id = ?").bind(id)
}

fn targets_query(id: &str) -> Query<'_> {
    sqlx::query("SELECT * FROM deployment_targets WHERE deployment_id = ? ORDER BY rowid").bind(id)
}

fn target_from(row: &SqliteRow) -> TargetRecord {
    TargetRecord {
        target: row.get("target"),
        state: row.get("state"),
        step: row.get("step"),
        reason: row.get("reason"),
        updated_at: from_unix_ms(row.get("updated_at")),
    }
}

fn journal_query(id: &str) -> Query<'_> {
    sqlx::query("SELECT key, value FROM deployment_journal WHERE deployment_id = ?").bind(id)
}

fn pair_from(row: &SqliteRow) -> (String, String) {
    (row.get(0), row.get(1))
}

fn events_query(id: &str) -> Query<'_> {
    sqlx::query("SELECT * FROM deployment_events WHERE deployment_id = ? ORDER BY id").bind(id)
}

fn event_from(row: &SqliteRow) -> EventRecord {
    EventRecord {
        at: from_unix_ms(row.get("at")),
        target: row.get("target"),
        kind: row.get("kind"),
        message: row.get("message"),
    }
}

fn pending_approvals_query(id: &str) -> Query<'_> {
    sqlx::query("SELECT target, step_key FROM approvals WHERE deployment_id = ? AND state = 'pending'").bind(id)
}

fn now_ms() -> i64 {
    unix_ms(SystemTime::now())
}

#[async_trait::async_trait]
impl Store for SqliteStore {
    async fn setting_or_init(&self, key: &str, init: Vec<u8>) -> Result<Vec<u8>, StoreError> {
        self.writes
            .execute(
                sqlx::query("INSERT INTO settings (key, value) VALUES (?, ?) ON CONFLICT (key) DO NOTHING")
                    .bind(key)
                    .bind(init),
            )
            .await?;
        let row = sqlx::query("SELECT value FROM settings WHERE key = ?").bind(key).fetch_one(&self.pool).await?;
        Ok(row.get("value"))
    }

    async fn create_credential(
        &self,
        kind: CredentialKind,
        subject: &str,
        client_id: &str,
        secret_hash: &[u8],
    ) -> Result<Credential, StoreError> {
        let now = SystemTime::now();
        let result = self.writes.execute(sqlx::query(
            "INSERT INTO credentials (client_id, kind, subject, secret_hash, created_at) VALUES (?, ?, ?, ?, ?)",
        )
        .bind(client_id)
        .bind(kind.as_str())
        .bind(subject)
        .bind(secret_hash)
        .bind(unix_ms(now)))
        .await;
        match result {
            Ok(_) => Ok(Credential {
                client_id: client_id.to_owned(),
                kind,
                subject: subject.to_owned(),
                secret_hash: secret_hash.to_vec(),
                created_at: now,
                revoked_at: None,
            }),
            Err(sqlx::Error::Database(db)) if db.is_unique_violation() => Err(StoreError::Conflict(format!(
                "{} {subject:?} already has credentials; revoke them first",
                kind.as_str()
            ))),
            Err(err) => Err(err.into()),
        }
    }

    async fn credential(&self, client_id: &str) -> Result<Option<Credential>, StoreError> {
        let row = sqlx::query("SELECT * FROM credentials WHERE client_id = ?")
            .bind(client_id)
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.map(|row| credential_from(&row)))
    }

    async fn active_credential(&self, kind: CredentialKind, subject: &str) -> Result<Option<Credential>, StoreError> {
        let row = sqlx::query("SELECT * FROM credentials WHERE kind = ? AND subject = ? AND revoked_at IS NULL")
            .bind(kind.as_str())
            .bind(subject)
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.map(|row| credential_from(&row)))
    }

    async fn active_credentials(&self, kind: CredentialKind) -> Result<Vec<Credential>, StoreError> {
        let rows = sqlx::query("SELECT * FROM credentials WHERE kind = ? AND revoked_at IS NULL ORDER BY subject")
            .bind(kind.as_str())
            .fetch_all(&self.pool)
            .await?;
        Ok(rows.iter().map(credential_from).collect())
    }

    async fn revoke(&self, kind: CredentialKind, subject: &str) -> Result<bool, StoreError> {
        let done = self
            .writes
            .execute(
                sqlx::query(
                    "UPDATE credentials SET revoked_at = ? WHERE kind = ? AND subject = ? AND revoked_at IS NULL",
                )
                .bind(now_ms())
                .bind(kind.as_str())
                .bind(subject),
            )
            .await?;
        Ok(done.rows_affected() > 0)
    }

    async fn put_secret(&self, name: &str, nonce: &[u8], ciphertext: &[u8]) -> Result<(), StoreError> {
        self.writes.execute(sqlx::query(
            "INSERT INTO secrets (name, nonce, ciphertext, updated_at) VALUES (?, ?, ?, ?) \
             ON CONFLICT (name) DO UPDATE SET nonce = excluded.nonce, ciphertext = excluded.ciphertext, updated_at = excluded.updated_at",
        )
        .bind(name)
        .bind(nonce)
        .bind(ciphertext)
        .bind(now_ms()))
        .await?;
        Ok(())
    }

    async fn secrets(&self) -> Result<Vec<EncryptedSecret>, StoreError> {
        let rows = sqlx::query("SELECT * FROM secrets ORDER BY name").fetch_all(&self.pool).await?;
        Ok(rows
            .iter()
            .map(|row| EncryptedSecret {
                name: row.get("name"),
                nonce: row.get("nonce"),
                ciphertext: row.get("ciphertext"),
                updated_at: from_unix_ms(row.get("updated_at")),
            })
            .collect())
    }

    async fn delete_secret(&self, name: &str) -> Result<bool, StoreError> {
        let done = self.writes.execute(sqlx::query("DELETE FROM secrets WHERE name = ?").bind(name)).await?;
        Ok(done.rows_affected() > 0)
    }

    async fn insert_provider(&self, provider: &MetricProvider) -> Result<(), StoreError> {
        let headers = serde_json::to_string(&provider.headers).expect("headers serialize");
        let result = self
            .writes
            .execute(
                sqlx::query(
                    "INSERT INTO metric_providers (name, kind, url, agent, headers, created_at) VALUES (?, ?, ?, ?, ?, ?)",
                )
                .bind(&provider.name)
                .bind(&provider.kind)
                .bind(&provider.url)
                .bind(&provider.agent)
                .bind(headers)
                .bind(unix_ms(provider.created_at)),
            )
            .await;
        match result {
            Ok(_) => Ok(()),
            Err(sqlx::Error::Database(db)) if db.is_unique_violation() => {
                Err(StoreError::Conflict(format!("a metric provider named {:?} exists already", provider.name)))
            }
            Err(other) => Err(other.into()),
        }
    }

    async fn providers(&self) -> Result<Vec<MetricProvider>, StoreError> {
        let rows = sqlx::query("SELECT * FROM metric_providers ORDER BY name").fetch_all(&self.pool).await?;
        Ok(rows.iter().map(provider_row).collect())
    }

    async fn provider(&self, name: &str) -> Result<Option<MetricProvider>, StoreError> {
        let row =
            sqlx::query("SELECT * FROM metric_providers WHERE name = ?").bind(name).fetch_optional(&self.pool).await?;
        Ok(row.as_ref().map(provider_row))
    }

    async fn delete_provider(&self, name: &str) -> Result<bool, StoreError> {
        let done = self.writes.execute(sqlx::query("DELETE FROM metric_providers WHERE name = ?").bind(name)).await?;
        Ok(done.rows_affected() > 0)
    }

    async fn insert_run(&self, run: &NewRun) -> Result<(), StoreError> {
        let now = now_ms();
        let result = self.writes.execute(sqlx::query(
            "INSERT INTO webhook_runs (id, callback_id, webhook, environment, spec, state, next_attempt_at, created_at, updated_at, \
             idempotency_key, request_hash) VALUES (?, ?, ?, ?, ?, 'pending', ?, ?, ?, ?, ?)",
        )
        .bind(&run.id)
        .bind(&run.callback_id)
        .bind(&run.webhook)
        .bind(&run.environment)
        .bind(&run.spec)
        .bind(now)
        .bind(now)
        .bind(now)
        .bind(run.idempotency.as_ref().map(|k| &k.key))
        .bind(run.idempotency.as_ref().map(|k| &k.request_hash)))
        .await;
        match result {
            Ok(_) => Ok(()),
            Err(sqlx::Error::Database(db)) if db.is_unique_violation() => Err(self
                .key_used(Keyed::Runs, run.idempotency.as_ref())
                .await?
                .unwrap_or(StoreError::Database(sqlx::Error::Database(db)))),
            Err(err) => Err(err.into()),
        }
    }

    async fn run(&self, id: &str) -> Result<Option<RunRecord>, StoreError> {
        let row = run_query(id).fetch_optional(&self.pool).await?;
        Ok(row.map(|row| run_from(&row)))
    }

    async fn run_by_callback(&self, callback_id: &str) -> Result<Option<RunRecord>, StoreError> {
        let row = sqlx::query("SELECT * FROM webhook_runs WHERE callback_id = ?")
            .bind(callback_id)
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.map(|row| run_from(&row)))
    }

    async fn runs(&self, limit: u32) -> Result<Vec<RunRecord>, StoreError> {
        let rows = sqlx::query("SELECT * FROM webhook_runs ORDER BY created_at DESC, id LIMIT ?")
            .bind(i64::from(limit))
            .fetch_all(&self.pool)
            .await?;
        Ok(rows.iter().map(run_from).collect())
    }

    async fn unfinished_runs(&self) -> Result<Vec<RunRecord>, StoreError> {
        let rows = sqlx::query("SELECT * FROM webhook_runs WHERE finished_at IS NULL").fetch_all(&self.pool).await?;
        Ok(rows.iter().map(run_from).collect())
    }

    async fn run_view(&self, id: &str) -> Result<Option<RunView>, StoreError> {
        // One read transaction, as in `deployment_view`: the attempt log
        // matches the run's state.
        let mut tx = self.pool.begin().await?;
        let Some(run) = run_query(id).fetch_optional(&mut *tx).await? else { return Ok(None) };
        let attempts = sqlx::query("SELECT * FROM webhook_attempts WHERE run_id = ? ORDER BY number")
            .bind(id)
            .fetch_all(&mut *tx)
            .await?
            .iter()
            .map(|row| Attempt {
                number: row.get::<i64, _>("number") as u32,
                started_at: from_unix_ms(row.get("started_at")),
                latency_ms: row.get::<i64, _>("latency_ms") as u64,
                status: row.get::<Option<i64>, _>("status").map(|s| s as u16),
                error: row.get("error"),
                reply: row.get("reply"),
            })
            .collect();
        tx.rollback().await?;
        Ok(Some(RunView { run: run_from(&run), attempts }))
    }

    async fn start_attempt(&self, id: &str, number: u32, request: &str) -> Result<bool, StoreError> {
        let done = self.writes.execute(sqlx::query(
            "UPDATE webhook_runs SET state = 'calling', attempts = ?, request = ?, next_attempt_at = NULL, updated_at = ? \
             WHERE id = ? AND state = 'pending'",
        )
        .bind(i64::from(number))
        .bind(request)
        .bind(now_ms())
        .bind(id))
        .await?;
        Ok(done.rows_affected() == 1)
    }

    async fn record_attempt(&self, run_id: &str, attempt: &Attempt) -> Result<(), StoreError> {
        self.writes.execute(sqlx::query(
            "INSERT INTO webhook_attempts (run_id, number, started_at, latency_ms, status, error, reply) VALUES (?, ?, ?, ?, ?, ?, ?) \
             ON CONFLICT (run_id, number) DO NOTHING",
        )
        .bind(run_id)
        .bind(i64::from(attempt.number))
        .bind(unix_ms(attempt.started_at))
        .bind(attempt.latency_ms as i64)
        .bind(attempt.status.map(i64::from))
        .bind(&attempt.error)
        .bind(&attempt.reply))
        .await?;
        Ok(())
    }

    async fn retry_at(&self, id: &str, at: SystemTime, reason: &str) -> Result<bool, StoreError> {
        let done = self
            .writes
            .execute(
                sqlx::query(
                    "UPDATE webhook_runs SET state = 'pending', next_attempt_at = ?, reason = ?, updated_at = ? \
             WHERE id = ? AND state = 'calling'",
                )
                .bind(unix_ms(at))
                .bind(reason)
                .bind(now_ms())
                .bind(id),
            )
            .await?;
        Ok(done.rows_affected() == 1)
    }

    async fn await_callback(&self, id: &str, deadline: SystemTime, reason: Option<&str>) -> Result<bool, StoreError> {
        let done = self
            .writes
            .execute(
                sqlx::query(
                    "UPDATE webhook_runs SET state = 'awaiting_callback', deadline_at = ?, reason = ?, updated_at = ? \
             WHERE id = ? AND state = 'calling'",
                )
                .bind(unix_ms(deadline))
                .bind(reason)
                .bind(now_ms())
                .bind(id),
            )
            .await?;
        Ok(done.rows_affected() == 1)
    }

    async fn finish(&self, id: &str, from: &[RunState], outcome: &Outcome) -> Result<bool, StoreError> {
        let now = now_ms();
        let states: Vec<&str> = from.iter().map(|s| s.as_str()).collect();
        let placeholders = vec!["?"; states.len()].join(", ");
        let sql = format!(
            "UPDATE webhook_runs SET state = ?, success = ?, md_message = ?, reason = ?, callback_at = ?, \
             next_attempt_at = NULL, finished_at = ?, updated_at = ? WHERE id = ? AND state IN ({placeholders})"
        );
        // Only `?` placeholders are interpolated; every value is bound.
        let mut query = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(outcome.state.as_str())
            .bind(outcome.success.map(i64::from))
            .bind(&outcome.md_message)
            .bind(&outcome.reason)
            .bind(outcome.by_callback.then_some(now))
            .bind(now)
            .bind(now)
            .bind(id);
        for state in states {
            query = query.bind(state);
        }
        Ok(self.writes.execute(query).await?.rows_affected() == 1)
    }

    async fn insert_deployment(
        &self,
        id: &str,
        application: &str,
        file: &str,
        context: &str,
        idempotency: Option<&IdempotencyKey>,
    ) -> Result<(), StoreError> {
        let now = now_ms();
        let result = self.writes.execute(sqlx::query(
            "INSERT INTO deployments (id, application, file, context, state, created_at, updated_at, idempotency_key, request_hash) \
             VALUES (?, ?, ?, ?, 'running', ?, ?, ?, ?)",
        )
        .bind(id)
        .bind(application)
        .bind(file)
        .bind(context)
        .bind(now)
        .bind(now)
        .bind(idempotency.map(|k| &k.key))
        .bind(idempotency.map(|k| &k.request_hash)))
        .await;
        match result {
            Ok(_) => Ok(()),
            Err(sqlx::Error::Database(db)) if db.is_unique_violation() => {
                if let Some(used) = self.key_used(Keyed::Deployments, idempotency).await? {
                    return Err(used);
                }
                let running: Option<String> =
                    sqlx::query("SELECT id FROM deployments WHERE application = ? AND finished_at IS NULL")
                        .bind(application)
                        .fetch_optional(&self.pool)
                        .await?
                        .map(|row| row.get("id"));
                Err(StoreError::Conflict(format!(
                    "deployment {} of application {application:?} is still in progress; one deployment per application runs at a time",
                    running.unwrap_or_default()
                )))
            }
            Err(err) => Err(err.into()),
        }
    }

    async fn deployment(&self, id: &str) -> Result<Option<DeploymentRecord>, StoreError> {
        let row = deployment_query(id).fetch_optional(&self.pool).await?;
        Ok(row.map(|row| deployment_from(&row)))
    }

    async fn deployment_view(&self, id: &str) -> Result<Option<DeploymentView>, StoreError> {
        // One read transaction: in WAL mode every read in it sees the same
        // commit, so no write lands between two parts of the view.
        let mut tx = self.pool.begin().await?;
        let Some(record) = deployment_query(id).fetch_optional(&mut *tx).await? else { return Ok(None) };
        let targets = targets_query(id).fetch_all(&mut *tx).await?.iter().map(target_from).collect();
        let journal = journal_query(id).fetch_all(&mut *tx).await?.iter().map(pair_from).collect();
        let runs = sqlx::query(
            "SELECT * FROM webhook_runs WHERE id IN (SELECT value FROM deployment_journal WHERE deployment_id = ?)",
        )
        .bind(id)
        .fetch_all(&mut *tx)
        .await?
        .iter()
        .map(run_from)
        .collect();
        let pending_approvals = pending_approvals_query(id).fetch_all(&mut *tx).await?.iter().map(pair_from).collect();
        let events = events_query(id).fetch_all(&mut *tx).await?.iter().map(event_from).collect();
        tx.rollback().await?;
        Ok(Some(DeploymentView { record: deployment_from(&record), targets, journal, runs, pending_approvals, events }))
    }

    async fn deployments(&self, limit: u32) -> Result<Vec<(DeploymentRecord, Vec<TargetRecord>)>, StoreError> {
        let mut tx = self.pool.begin().await?;
        let records = sqlx::query("SELECT * FROM deployments ORDER BY created_at DESC, id LIMIT ?")
            .bind(i64::from(limit))
            .fetch_all(&mut *tx)
            .await?;
        let mut listed: Vec<(DeploymentRecord, Vec<TargetRecord>)> =
            records.iter().map(|row| (deployment_from(row), Vec::new())).collect();
        let position: HashMap<String, usize> =
            listed.iter().enumerate().map(|(i, (record, _))| (record.id.clone(), i)).collect();
        // The targets of all listed deployments in one query, not one each.
        let targets = sqlx::query(
            "SELECT * FROM deployment_targets WHERE deployment_id IN \
             (SELECT id FROM deployments ORDER BY created_at DESC, id LIMIT ?) ORDER BY rowid",
        )
        .bind(i64::from(limit))
        .fetch_all(&mut *tx)
        .await?;
        tx.rollback().await?;
        for row in &targets {
            if let Some(&i) = position.get(row.get::<&str, _>("deployment_id")) {
                listed[i].1.push(target_from(row));
            }
        }
        Ok(listed)
    }

    async fn unfinished_deployments(&self) -> Result<Vec<DeploymentRecord>, StoreError> {
        let rows = sqlx::query("SELECT * FROM deployments WHERE finished_at IS NULL").fetch_all(&self.pool).await?;
        Ok(rows.iter().map(deployment_from).collect())
    }

    async fn finish_deployment(&self, id: &str, state: &str, reason: Option<&str>) -> Result<(), StoreError> {
        let now = now_ms();
        self.writes.execute(sqlx::query("UPDATE deployments SET state = ?, reason = ?, finished_at = ?, updated_at = ? WHERE id = ? AND finished_at IS NULL")
            .bind(state)
            .bind(reason)
            .bind(now)
            .bind(now)
            .bind(id))
            .await?;
        Ok(())
    }

    async fn set_target(
        &self,
        id: &str,
        target: &str,
        state: &str,
        step: Option<&str>,
        reason: Option<&str>,
    ) -> Result<(), StoreError> {
        self.writes.execute(sqlx::query(
            "INSERT INTO deployment_targets (deployment_id, target, state, step, reason, updated_at) VALUES (?, ?, ?, ?, ?, ?) \
             ON CONFLICT (deployment_id, target) DO UPDATE SET state = excluded.state, step = excluded.step, \
             reason = excluded.reason, updated_at = excluded.updated_at",
        )
        .bind(id)
        .bind(target)
        .bind(state)
        .bind(step)
        .bind(reason)
        .bind(now_ms()))
        .await?;
        Ok(())
    }

    async fn targets(&self, id: &str) -> Result<Vec<TargetRecord>, StoreError> {
        Ok(targets_query(id).fetch_all(&self.pool).await?.iter().map(target_from).collect())
    }

    async fn journal(&self, id: &str) -> Result<Vec<(String, String)>, StoreError> {
        Ok(journal_query(id).fetch_all(&self.pool).await?.iter().map(pair_from).collect())
    }

    async fn put_journal(&self, id: &str, key: &str, value: &str) -> Result<(), StoreError> {
        self.writes.execute(sqlx::query("INSERT INTO deployment_journal (deployment_id, key, value, recorded_at) VALUES (?, ?, ?, ?) ON CONFLICT DO NOTHING")
            .bind(id)
            .bind(key)
            .bind(value)
            .bind(now_ms()))
            .await?;
        Ok(())
    }

    async fn replace_journal(&self, id: &str, key: &str, value: &str) -> Result<(), StoreError> {
        self.writes
            .execute(
                sqlx::query(
                    "INSERT INTO deployment_journal (deployment_id, key, value, recorded_at) VALUES (?, ?, ?, ?) \
             ON CONFLICT (deployment_id, key) DO UPDATE SET value = excluded.value, recorded_at = excluded.recorded_at",
                )
                .bind(id)
                .bind(key)
                .bind(value)
                .bind(now_ms()),
            )
            .await?;
        Ok(())
    }

    async fn add_event(&self, id: &str, target: Option<&str>, kind: &str, message: &str) -> Result<(), StoreError> {
        self.writes
            .execute(
                sqlx::query(
                    "INSERT INTO deployment_events (deployment_id, at, target, kind, message) VALUES (?, ?, ?, ?, ?)",
                )
                .bind(id)
                .bind(now_ms())
                .bind(target)
                .bind(kind)
                .bind(message),
            )
            .await?;
        Ok(())
    }

    async fn request_approval(&self, id: &str, target: &str, step_key: &str) -> Result<ApprovalState, StoreError> {
        self.writes.execute(sqlx::query(
            "INSERT INTO approvals (deployment_id, step_key, target, state, requested_at) VALUES (?, ?, ?, 'pending', ?) ON CONFLICT DO NOTHING",
        )
        .bind(id)
        .bind(step_key)
        .bind(target)
        .bind(now_ms()))
        .await?;
        Ok(self.approval(id, step_key).await?.unwrap_or(ApprovalState::Pending))
    }

    async fn approval(&self, id: &str, step_key: &str) -> Result<Option<ApprovalState>, StoreError> {
        let row = sqlx::query("SELECT state FROM approvals WHERE deployment_id = ? AND step_key = ?")
            .bind(id)
            .bind(step_key)
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.map(|row| ApprovalState::parse(row.get("state"))))
    }

    async fn decide_approvals(
        &self,
        id: &str,
        target: &str,
        decision: ApprovalState,
        decisions: bool,
    ) -> Result<u64, StoreError> {
        let done = self.writes.execute(sqlx::query(
            "UPDATE approvals SET state = ?, decided_at = ? WHERE deployment_id = ? AND target = ? AND state = 'pending' \
             AND (substr(step_key, -length(?)) = ?) = ?",
        )
        .bind(decision.as_str())
        .bind(now_ms())
        .bind(id)
        .bind(target)
        .bind(DECISION_SUFFIX)
        .bind(DECISION_SUFFIX)
        .bind(decisions))
        .await?;
        Ok(done.rows_affected())
    }

    async fn cancel_approval(&self, id: &str, step_key: &str) -> Result<(), StoreError> {
        self.writes.execute(sqlx::query("UPDATE approvals SET state = 'cancelled', decided_at = ? WHERE deployment_id = ? AND step_key = ? AND state = 'pending'")
            .bind(now_ms())
            .bind(id)
            .bind(step_key))
            .await?;
        Ok(())
    }

    async fn ping(&self) -> Result<(), StoreError> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    async fn close(&self) {
        self.pool.close().await;
    }
}

fn provider_row(row: &SqliteRow) -> MetricProvider {
    let headers: String = row.get("headers");
    MetricProvider {
        name: row.get("name"),
        kind: row.get("kind"),
        url: row.get("url"),
        agent: row.get("agent"),
        headers: serde_json::from_str(&headers).unwrap_or_default(),
        created_at: from_unix_ms(row.get("created_at")),
    }
}
