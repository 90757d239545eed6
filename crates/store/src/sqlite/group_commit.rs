//! Group commit: every write goes through one task, which commits all the
//! writes that queued while the previous commit ran in one transaction, so
//! a burst of callbacks costs one fsync, not one each. A caller hears back
//! only after the commit that holds its write, so an acknowledged write is
//! as durable as with one transaction per write.
//!
//! Writers also stop contending for SQLite's write lock, which they would
//! otherwise wait for by sleeping in its busy handler.

use std::sync::{Arc, Mutex};

use sqlx::pool::PoolConnection;
use sqlx::sqlite::{SqliteArguments, SqliteQueryResult};
use sqlx::{Execute, Executor, SqlStr, Sqlite, SqlitePool};
use tokio::sync::{mpsc, oneshot};

/// Most writes in one transaction: a bound on how long the first waits.
const MAX_GROUP: usize = 256;

pub(crate) type Query<'q> = sqlx::query::Query<'q, Sqlite, SqliteArguments>;

type Outcome = Result<SqliteQueryResult, sqlx::Error>;

struct Write {
    sql: SqlStr,
    arguments: SqliteArguments,
    /// Whether the connection keeps the statement prepared, as the query
    /// asked: a statement whose text varies (a multi-row insert) must not.
    persistent: bool,
    done: oneshot::Sender<Outcome>,
}

impl Write {
    /// Runs the statement on `connection`, inside whatever transaction it is
    /// in. It is rebuilt for each run: a failed group is retried write by write.
    async fn apply(&self, connection: &mut PoolConnection<Sqlite>) -> Outcome {
        connection.execute(sqlx::query_with(self.sql.clone(), self.arguments.clone()).persistent(self.persistent)).await
    }
}

/// The handle that queues writes. Cheap to clone.
#[derive(Clone)]
pub(crate) struct GroupCommit {
    queue: mpsc::Sender<Write>,
    /// Why the last commit failed when the disk refused it (full,
    /// read-only, I/O); cleared by the next commit that lands.
    fault: Arc<Mutex<Option<String>>>,
}

impl GroupCommit {
    /// Starts the writing task on the current runtime.
    pub(crate) fn start(pool: SqlitePool) -> Self {
        let (queue, writes) = mpsc::channel(4 * MAX_GROUP);
        let fault = Arc::new(Mutex::new(None));
        tokio::spawn(write_groups(pool, writes, fault.clone()));
        Self { queue, fault }
    }

    /// Why writes fail now, if the last commit failed on the disk (full,
    /// read-only, I/O), for readiness: reads may still pass meanwhile.
    pub(crate) fn fault(&self) -> Option<String> {
        self.fault.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone()
    }

    /// Executes one statement and returns once it is committed.
    pub(crate) async fn execute(&self, mut query: Query<'_>) -> Outcome {
        let arguments = query.take_arguments().map_err(sqlx::Error::Encode)?.unwrap_or_default();
        let persistent = Execute::persistent(&query);
        let (done, outcome) = oneshot::channel();
        self.queue
            .send(Write { sql: query.sql(), arguments, persistent, done })
            .await
            .map_err(|_| sqlx::Error::PoolClosed)?;
        outcome.await.map_err(|_| sqlx::Error::PoolClosed)?
    }
}

async fn write_groups(pool: SqlitePool, mut writes: mpsc::Receiver<Write>, fault: Arc<Mutex<Option<String>>>) {
    let mut group = Vec::with_capacity(MAX_GROUP);
    while writes.recv_many(&mut group, MAX_GROUP).await > 0 {
        let outcomes: Vec<Outcome> = match commit(&pool, &group).await {
            Ok(done) => done.into_iter().map(Ok).collect(),
            Err(err) if group.len() == 1 => vec![Err(err)],
            // Nothing was committed: each write gets its own answer.
            Err(_) => {
                let mut outcomes = Vec::with_capacity(group.len());
                for write in &group {
                    outcomes.push(commit(&pool, std::slice::from_ref(write)).await.map(|mut one| one.remove(0)));
                }
                outcomes
            }
        };
        let landed = outcomes.iter().any(Result::is_ok);
        let refused =
            outcomes.iter().find_map(|outcome| outcome.as_ref().err().filter(|err| super::error::is_disk_fault(err)));
        match (landed, refused) {
            (true, _) => *fault.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = None,
            (false, Some(err)) => {
                *fault.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = Some(err.to_string());
            }
            (false, None) => {}
        }
        for (write, outcome) in group.drain(..).zip(outcomes) {
            let _ = write.done.send(outcome);
        }
    }
}

/// Commits `writes` in one transaction, or none of them. A lone write
/// runs on its own, without the statements that open and close one.
async fn commit(pool: &SqlitePool, writes: &[Write]) -> Result<Vec<SqliteQueryResult>, sqlx::Error> {
    let mut connection = pool.acquire().await?;
    if let [write] = writes {
        return Ok(vec![write.apply(&mut connection).await?]);
    }
    connection.execute("BEGIN IMMEDIATE").await?;
    let mut outcomes = Vec::with_capacity(writes.len());
    for write in writes {
        match write.apply(&mut connection).await {
            Ok(done) => outcomes.push(done),
            Err(err) => {
                let _ = connection.execute("ROLLBACK").await;
                return Err(err);
            }
        }
    }
    if let Err(err) = connection.execute("COMMIT").await {
        let _ = connection.execute("ROLLBACK").await;
        return Err(err);
    }
    Ok(outcomes)
}
