//! The Borealis benchmark: it starts an echo server, a relay and an agent as
//! real processes and drives them with a load generator of its own.
//!
//! - [`load`]: keep-alive HTTP/1.1 load at a fixed concurrency for a fixed
//!   time, latency in an HDR histogram.
//! - [`echo`]: the echo server (`borealis-bench echo`), streaming both ways.
//! - [`procs`]: the processes, their CPU time and resident memory.
//! - [`rathole`]: rathole's server and client, the reference for `forward`.
//! - [`scenarios`]: `forward`, `stream`, `runs`, `cluster` and `agents`, with
//!   their targets.
//! - [`drain`]: pending webhook runs left by a crash, and how fast the next
//!   relay calls them.
//! - [`postgres`]: the PostgreSQL server of `cluster` (relay replicas on one
//!   database), a fresh schema per case.
//! - [`sim`]: simulated agents, many sessions from one process.
//! - [`report`]: the table, `bench/results/latest.md` and `latest.json`.

pub mod drain;
pub mod echo;
pub mod load;
pub mod postgres;
pub mod procs;
pub mod rathole;
pub mod report;
pub mod scenarios;
pub mod sim;
