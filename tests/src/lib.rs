//! Test harness: the real `borealis-relay`, `borealis-agent` and `borealis`
//! binaries as processes, and small HTTP servers on port 0 to stand for the
//! systems behind them.
//!
//! Binaries are taken from the cargo target dir next to the test executable;
//! `scripts/test.sh` builds them before running the tests.

pub mod balancer;
mod client;
pub mod console;
pub mod deployer;
pub mod external;
pub mod module_graph;
pub mod postgres;
pub mod process;
pub mod prometheus;
pub mod receiver;
pub mod servers;
mod temp_dir;
mod time;
mod tls;

pub use client::{connect_from, token_reply};
pub use process::{AgentProcess, Cli, Logged, RelayOptions, RelayProcess, cli, rss_kib};
pub use temp_dir::TempDir;
pub use time::{PATIENCE, api_time, api_time_of, between, eventually, log_time};
pub use tls::{generate_tls, install_crypto};
