//! The store on SQLite: one file in the data directory, WAL mode, and
//! `synchronous = FULL` so that what was acknowledged survives a crash.
//! Writes are committed in groups ([`group_commit`]); reads go to the pool.
//! One file per aggregate implements its trait; this backend alone knows
//! sqlx and SQLite's error codes ([`error`]).

mod audit;
mod cluster;
mod console;
mod credentials;
mod deployments;
mod error;
mod group_commit;
mod identities;
mod providers;
mod runs;
mod secrets;
mod settings;
mod store;

pub use store::SqliteStore;

#[cfg(test)]
mod tests {
    use std::path::Path;
    use std::time::SystemTime;

    use super::SqliteStore;
    use crate::conformance::Harness;
    use crate::deployments::{DeploymentStore, TargetState};
    use crate::error::StoreError;

    /// A database file in a directory of its own, removed with it.
    struct TempSqlite(tempfile::TempDir);

    impl TempSqlite {
        fn new() -> Self {
            Self(tempfile::tempdir().unwrap())
        }
    }

    #[async_trait::async_trait]
    impl Harness for TempSqlite {
        type Store = SqliteStore;

        async fn open(&self) -> SqliteStore {
            SqliteStore::open_in(self.0.path()).await.unwrap()
        }

        async fn prepared_statements(&self, store: &SqliteStore) -> usize {
            crate::conformance::prepared_statements(store.pool()).await
        }
    }

    crate::conformance_suite!(TempSqlite::new());

    /// A database made before targets had a position keeps their rowid
    /// order, and a target added after goes last.
    #[tokio::test]
    async fn migration_6_backfills_target_positions_from_rowid() {
        let dir = tempfile::tempdir().unwrap();
        let options =
            sqlx::sqlite::SqliteConnectOptions::new().filename(dir.path().join("borealis.db")).create_if_missing(true);
        let old = sqlx::SqlitePool::connect_with(options).await.unwrap();
        super::store::MIGRATIONS.run_to(5, &old).await.unwrap();
        for (deployment, target) in [("d", "b"), ("e", "x"), ("d", "a"), ("d", "c")] {
            sqlx::query("INSERT OR IGNORE INTO deployments (id, application, file, context, state, created_at, updated_at) VALUES (?, ?, '', '{}', 'running', 0, 0)")
                .bind(deployment)
                .bind(deployment)
                .execute(&old)
                .await
                .unwrap();
            sqlx::query(
                "INSERT INTO deployment_targets (deployment_id, target, state, updated_at) VALUES (?, ?, 'waiting', 0)",
            )
            .bind(deployment)
            .bind(target)
            .execute(&old)
            .await
            .unwrap();
        }
        old.close().await;

        let store = SqliteStore::open_in(dir.path()).await.unwrap();
        // A target is written by the replica holding the deployment's lease.
        let file = sqlx::sqlite::SqliteConnectOptions::new().filename(dir.path().join("borealis.db"));
        let lease = sqlx::SqlitePool::connect_with(file).await.unwrap();
        sqlx::query("UPDATE deployments SET lease_owner = 'r'").execute(&lease).await.unwrap();
        lease.close().await;
        store.set_target("d", "r", "a", TargetState::Running, None, None).await.unwrap();
        store.set_target("d", "r", "0", TargetState::Waiting, None, None).await.unwrap();
        let names = |targets: Vec<crate::TargetRecord>| targets.into_iter().map(|t| t.target).collect::<Vec<_>>();
        assert_eq!(names(store.targets("d").await.unwrap()), ["b", "a", "c", "0"]);
        assert_eq!(names(store.targets("e").await.unwrap()), ["x"]);
    }

    /// A database from before objects had teams: everything in it is team
    /// `default`'s, read through the traits, the secrets with their uses
    /// (their table is rebuilt).
    #[tokio::test]
    async fn migration_17_puts_what_was_stored_in_team_default() {
        let dir = tempfile::tempdir().unwrap();
        let options =
            sqlx::sqlite::SqliteConnectOptions::new().filename(dir.path().join("borealis.db")).create_if_missing(true);
        let old = sqlx::SqlitePool::connect_with(options).await.unwrap();
        super::store::MIGRATIONS.run_to(16, &old).await.unwrap();
        let rows = crate::conformance::stored_before_teams(|text| format!("CAST('{text}' AS BLOB)"));
        sqlx::raw_sql(sqlx::AssertSqlSafe(rows)).execute(&old).await.unwrap();
        old.close().await;

        let store = SqliteStore::open_in(dir.path()).await.unwrap();
        crate::conformance::what_was_stored_before_teams_is_the_default_teams(&store).await;
    }

    #[tokio::test]
    async fn open_picks_the_backend_by_scheme() {
        let dir = tempfile::tempdir().unwrap();
        let store = crate::open(None, dir.path()).await.unwrap();
        store.setting_or_init("k", b"v".to_vec()).await.unwrap();
        assert!(dir.path().join("borealis.db").exists(), "no URL: the data directory's file");
        let memory = crate::open(Some("sqlite::memory:"), Path::new("/nonexistent")).await.unwrap();
        assert_eq!(memory.setting_or_init("k", b"m".to_vec()).await.unwrap(), b"m");

        let err = crate::open(Some("mysql://user:secret@db/borealis"), dir.path()).await.err().unwrap();
        assert!(matches!(err, StoreError::UnsupportedScheme { ref scheme, .. } if scheme == "mysql"), "{err}");
        let message = err.to_string();
        assert!(message.contains("\"mysql\"") && message.contains("sqlite, postgres"), "{message}");
        assert!(!message.contains("secret"), "the URL is not echoed: {message}");
        let err = crate::open(Some("/var/lib/borealis.db"), dir.path()).await.err().unwrap();
        assert!(matches!(err, StoreError::InvalidUrl(_)), "{err}");
    }

    /// Fills `store` with `count` pending runs in one statement: run `i`
    /// falls due `i` ms after `base`, its id is [`crate::conformance::backlog_id`]`(i)`.
    async fn fill_pending(store: &SqliteStore, count: i64, base: i64) {
        // Numbers only are formatted in; then statistics for the planner.
        let script = format!(
            "WITH RECURSIVE n(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM n WHERE i + 1 < {count}) \
             INSERT INTO webhook_runs (id, callback_id, webhook, spec, state, next_attempt_at, created_at, updated_at) \
             SELECT printf('r%06d', (i * 7919) % 100003), 'cb-' || i, 'w', '{{}}', 'pending', {base} + i, {base}, {base} \
             FROM n; ANALYZE;"
        );
        sqlx::raw_sql(sqlx::AssertSqlSafe(script)).execute(&store.pool).await.unwrap();
    }

    /// SQLite's plan for `sql` (binds as the claim makes them), one step a line.
    async fn plan(store: &SqliteStore, sql: &str, binds: &[Bind<'_>]) -> String {
        let explain = format!("EXPLAIN QUERY PLAN {sql}");
        let mut query = sqlx::query(sqlx::AssertSqlSafe(explain));
        for bind in binds {
            query = match *bind {
                Bind::Text(text) => query.bind(text.to_owned()),
                Bind::Int(int) => query.bind(int),
            };
        }
        let rows = query.fetch_all(&store.pool).await.unwrap();
        rows.iter().map(|row| sqlx::Row::get::<String, _>(row, "detail")).collect::<Vec<_>>().join("\n")
    }

    enum Bind<'a> {
        Text(&'a str),
        Int(i64),
    }

    /// Claiming costs the same whatever the backlog: on 20 000 pending runs
    /// the claim of one run finds it by its primary key, and the due ones
    /// are read through the partial index on the due time; neither scans.
    #[tokio::test]
    async fn claims_use_the_primary_key_and_the_due_index() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open_in(dir.path()).await.unwrap();
        let now = crate::time::unix_ms(SystemTime::now());
        fill_pending(&store, 20_000, now - 10_000).await;

        let one = [Bind::Text("a"), Bind::Int(now + 60_000), Bind::Int(now), Bind::Text("r000007"), Bind::Int(now)];
        let one = plan(&store, super::runs::CLAIM_ONE, &one).await;
        assert!(one.contains("USING INDEX sqlite_autoindex_webhook_runs_1 (id=?)"), "by the primary key:\n{one}");
        assert!(!one.contains("SCAN"), "{one}");
        let due = plan(&store, super::runs::DUE, &[Bind::Int(now), Bind::Int(64)]).await;
        assert!(due.contains("USING INDEX webhook_runs_due (next_attempt_at<?)"), "by the due index:\n{due}");
        assert!(!due.contains("SCAN") && !due.contains("TEMP B-TREE"), "no scan, no sort: {due}");
    }

    /// The sweep for lapsed leases reads only runs under way or finished
    /// with an attempt unrecorded: on 20 000 pending runs neither of its
    /// queries scans the table.
    #[tokio::test]
    async fn the_lapsed_lease_sweep_reads_its_partial_indexes() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open_in(dir.path()).await.unwrap();
        let now = crate::time::unix_ms(SystemTime::now());
        fill_pending(&store, 20_000, now - 10_000).await;
        let binds = [Bind::Int(now), Bind::Int(64)];

        let calling = plan(&store, super::runs::LAPSED_CALLING, &binds).await;
        assert!(calling.contains("INDEX webhook_runs_calling"), "by the calling index:\n{calling}");
        assert!(!calling.contains("SCAN webhook_runs\n") && !calling.ends_with("SCAN webhook_runs"), "{calling}");
        let unrecorded = plan(&store, super::runs::LAPSED_UNRECORDED, &binds).await;
        assert!(unrecorded.contains("INDEX webhook_runs_unrecorded"), "by the unrecorded index:\n{unrecorded}");
        assert!(!unrecorded.contains("SCAN"), "{unrecorded}");
    }

    /// A person's bindings are read through the index on their subject,
    /// their own and each of their groups', among 20 000 others': no scan.
    #[tokio::test]
    async fn bindings_of_reads_the_subject_index() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open_in(dir.path()).await.unwrap();
        let script = "WITH RECURSIVE n(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM n WHERE i + 1 < 20000) \
             INSERT INTO role_bindings (id, team, subject_kind, subject, role, created_at, created_by) \
             SELECT printf('b%05d', i), 'default', CASE i % 2 WHEN 0 THEN 'user' ELSE 'group' END, \
             'subject-' || i, 'viewer', 0, 'admin:admin' FROM n; ANALYZE;";
        sqlx::raw_sql(script).execute(&store.pool).await.unwrap();
        let groups = ["subject-1".to_owned(), "subject-3".to_owned()];
        let json = crate::rows::names_json(&groups);
        let read = plan(&store, super::identities::BINDINGS_OF, &[Bind::Text("subject-0"), Bind::Text(&json)]).await;
        assert!(read.contains("INDEX role_bindings_by_subject"), "by the subject index:\n{read}");
        assert!(!read.contains("SCAN role_bindings"), "{read}");
        let found = crate::IdentityStore::bindings_of(&store, "subject-0", &groups).await.unwrap();
        let ids: Vec<String> = found.into_iter().map(|b| b.id).collect();
        assert_eq!(ids, ["b00001", "b00003", "b00000"], "groups' before the person's in one team and role");
    }

    /// From 100 000 pending runs (some not yet due), claims take the
    /// earliest due first.
    #[tokio::test]
    async fn a_large_backlog_is_claimed_earliest_first() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open_in(dir.path()).await.unwrap();
        let now = SystemTime::now();
        fill_pending(&store, 100_000, crate::time::unix_ms(now) - 90_000).await;
        crate::conformance::a_large_backlog_is_claimed_earliest_first(&store, now).await;
    }

    /// A full disk, a read-only database and a held lock may pass on
    /// another try: `Unavailable` (a caller answers 503), not `Backend`.
    #[tokio::test]
    async fn full_and_read_only_are_unavailable() {
        let dir = tempfile::tempdir().unwrap();
        let options =
            sqlx::sqlite::SqliteConnectOptions::new().filename(dir.path().join("f.db")).create_if_missing(true);
        let mut connection = sqlx::ConnectOptions::connect(&options).await.unwrap();
        let mut run =
            async |sql: &str| sqlx::raw_sql(sqlx::AssertSqlSafe(sql.to_owned())).execute(&mut connection).await;
        run("CREATE TABLE t (v BLOB); PRAGMA max_page_count = 8").await.unwrap();
        let full = loop {
            if let Err(err) = run("INSERT INTO t VALUES (zeroblob(4096))").await {
                break super::error::db(err);
            }
        };
        assert!(matches!(full, StoreError::Unavailable(_)), "full: {full:?}");
        run("DELETE FROM t; PRAGMA query_only = 1").await.unwrap();
        let read_only = super::error::db(run("INSERT INTO t VALUES (1)").await.unwrap_err());
        assert!(matches!(read_only, StoreError::Unavailable(_)), "read-only: {read_only:?}");
        let broken = super::error::db(run("SELECT * FROM missing").await.unwrap_err());
        assert!(matches!(broken, StoreError::Backend(_)), "a bug stays a bug: {broken:?}");
    }
}
