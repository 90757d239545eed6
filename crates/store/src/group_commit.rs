//! Group commit: every write goes through one task, which commits all the
//! writes that queued while the previous commit ran in one transaction, so
//! a burst of callbacks costs one fsync, not one each. A caller hears back
//! only after the commit that holds its write, so an acknowledged write is
//! as durable as with one transaction per write.
//!
//! Writers also stop contending for SQLite's write lock, which they would
//! otherwise wait for by sleeping in its busy handler.

use sqlx::sqlite::{SqliteArguments, SqliteQueryResult};
use sqlx::{Execute, Executor, SqlStr, Sqlite, SqlitePool};
use tokio::sync::{mpsc, oneshot};

/// Most writes in one transaction: a bound on how long the first waits.
const MAX_GROUP: usize = 256;

type Outcome = Result<SqliteQueryResult, sqlx::Error>;

struct Write {
    sql: SqlStr,
    arguments: SqliteArguments,
    done: oneshot::Sender<Outcome>,
}

impl Write {
    /// The statement, rebuilt for each execution (a failed group is retried write by write).
    fn query(&self) -> sqlx::query::Query<'static, Sqlite, SqliteArguments> {
        sqlx::query_with(self.sql.clone(), self.arguments.clone())
    }
}

/// The handle that queues writes. Cheap to clone.
#[derive(Clone)]
pub(crate) struct GroupCommit {
    queue: mpsc::Sender<Write>,
}

impl GroupCommit {
    /// Starts the writing task on the current runtime.
    pub(crate) fn start(pool: SqlitePool) -> Self {
        let (queue, writes) = mpsc::channel(4 * MAX_GROUP);
        tokio::spawn(write_groups(pool, writes));
        Self { queue }
    }

    /// Executes one statement and returns once it is committed.
    pub(crate) async fn execute(&self, mut query: sqlx::query::Query<'_, Sqlite, SqliteArguments>) -> Outcome {
        let arguments = query.take_arguments().map_err(sqlx::Error::Encode)?.unwrap_or_default();
        let (done, outcome) = oneshot::channel();
        let write = Write { sql: query.sql(), arguments, done };
        self.queue.send(write).await.map_err(|_| sqlx::Error::PoolClosed)?;
        outcome.await.map_err(|_| sqlx::Error::PoolClosed)?
    }
}

async fn write_groups(pool: SqlitePool, mut writes: mpsc::Receiver<Write>) {
    let mut group = Vec::with_capacity(MAX_GROUP);
    while writes.recv_many(&mut group, MAX_GROUP).await > 0 {
        let outcomes = match group.len() {
            1 => None,
            _ => commit_together(&pool, &group).await,
        };
        let outcomes = match outcomes {
            Some(outcomes) => outcomes,
            None => one_by_one(&pool, &group).await,
        };
        for (write, outcome) in group.drain(..).zip(outcomes) {
            let _ = write.done.send(outcome);
        }
    }
}

/// All writes in one transaction, or `None` with nothing committed if any
/// of them failed (each then gets its own answer from [`one_by_one`]).
async fn commit_together(pool: &SqlitePool, group: &[Write]) -> Option<Vec<Outcome>> {
    let mut connection = pool.acquire().await.ok()?;
    connection.execute("BEGIN IMMEDIATE").await.ok()?;
    let mut outcomes = Vec::with_capacity(group.len());
    for write in group {
        match connection.execute(write.query()).await {
            Ok(done) => outcomes.push(Ok(done)),
            Err(_) => {
                let _ = connection.execute("ROLLBACK").await;
                return None;
            }
        }
    }
    if connection.execute("COMMIT").await.is_err() {
        let _ = connection.execute("ROLLBACK").await;
        return None;
    }
    Some(outcomes)
}

/// Each write in its own transaction, with its own outcome.
async fn one_by_one(pool: &SqlitePool, group: &[Write]) -> Vec<Outcome> {
    let mut outcomes = Vec::with_capacity(group.len());
    for write in group {
        outcomes.push(pool.execute(write.query()).await);
    }
    outcomes
}
