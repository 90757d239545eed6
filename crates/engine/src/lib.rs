//! The Borealis engine: webhook runs and deployments, and every call they
//! make. It names no HTTP server, gRPC or agent session: calls leave through
//! a [`transport::Transport`] the relay implements, and the relay's edges
//! turn the engine's typed errors into replies.
//!
//! Layout:
//! - [`runs`]: webhook runs: calls, retries, callbacks, deadlines, resume.
//! - [`deployments`]: targets as a DAG, constraints, strategies, drivers,
//!   Flagger hooks, metric analysis.
//! - [`outcall`]: one outbound call, the same for every caller.
//! - [`transport`]: the way out, implemented by the relay.
//! - [`signing`]: Standard Webhooks headers on every outgoing call.
//! - [`vault`]: secrets, encrypted at rest, and the scrubber that masks them.
//! - [`cluster`]: this replica among those sharing the database: identity,
//!   leases, heartbeat, the change feed.
//! - [`clock`]: the wall clock schedules read (a manual one in tests).
//! - [`metrics`]: what the engine counts.

pub mod clock;
pub mod cluster;
pub mod deployments;
pub mod metrics;
pub mod outcall;
pub mod plan;
pub mod runs;
pub mod signing;
pub mod transport;
pub mod vault;
