//! The store on PostgreSQL, for relay replicas sharing one database. Every
//! write is one statement that holds against writers in other processes: a
//! compare-and-set (`UPDATE ... WHERE state = ...`), an upsert, or an insert
//! a unique index arbitrates (a team's idempotency keys, one running
//! deployment per application in a team); target order comes from a sequence. Snapshot reads are one
//! `REPEATABLE READ READ ONLY` transaction. This backend alone knows
//! Postgres's error codes ([`error`]).

/// The database's clock, in milliseconds since the epoch, as SQL: the one
/// clock every replica's heartbeat and lease times are read on.
macro_rules! db_now_ms {
    () => {
        "(extract(epoch from clock_timestamp()) * 1000)::bigint"
    };
}

mod audit;
mod cluster;
mod console;
mod credentials;
mod deployments;
mod error;
mod identities;
mod providers;
mod runs;
mod secrets;
mod settings;
mod store;

pub use store::PostgresStore;

#[cfg(test)]
mod tests;
