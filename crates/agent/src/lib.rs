//! The Borealis agent.
//!
//! The agent runs inside a private network. It dials out to the relay, holds
//! one control stream and a few lanes. A small request (its whole body in its
//! head) comes down a lane, batched with others; any other gets a call of its
//! own (opened in advance as a standby call, or for an offer). It performs the HTTP request
//! against the private destination (only if its allow-list permits), and
//! streams the reply back.
//!
//! Reconnects: network trouble is retried forever. The n-th delay is random
//! in `[b, 2b)` with `b = min(200 ms·2ⁿ, cap)/2` (equal jitter, seeded per
//! process so a fleet does not reconnect in lockstep), so no delay reaches
//! the cap. The cap is `--max-backoff`, except for
//! [`RECENT_OUTAGE`](reconnect::RECENT_OUTAGE) (5 minutes) after a session
//! that was up ended: then it is [`RECENT_CAP`](reconnect::RECENT_CAP)
//! (2 s), so an outage that heals, however long it lasted, is served again
//! within seconds. A session that held 10 s, or was drained, starts the
//! delays over; after a drain the first attempt is made at once (the relay
//! asked the agent to move, and it should be away as briefly as it can). One connect attempt gives up after
//! [`CONNECT_TIMEOUT`](connect::CONNECT_TIMEOUT) (3 s), so an attempt that a
//! dead link stalled does not hold up the first one after the heal. Every
//! delay is logged: `retry_in_ms`, `attempt`, message `reconnecting`.
//!
//! Logging: strings the relay chose (ids, URLs, reasons, its error
//! messages) are logged as `&str` values or with `?`, never with `%`; see
//! `borealis_logging`.
//!
//! Layout:
//! - [`config`]: settings and their validation.
//! - [`run`]: the reconnect loop; [`reconnect`]: its delays.
//! - [`connect`]: the channel to the relay (TLS, proxy) and its token.
//! - [`session`]: one session: hello, welcome, heartbeats, offers, standby calls, drain.
//! - [`link`]: what a session's forwarding tasks share (its channel, token, cancels).
//! - [`forward`]: one request on a `Forward` call (offered, or down a standby call).
//! - [`lane`]: a session's lanes, which carry small requests batched.
//! - [`upstream`]: the destination call either makes.
//! - [`agent`]: what every part of a running agent shares; [`error`]: how it fails.
//!
//! No module depends on itself through others (`tests/tests/module_graph.rs`):
//! the root only wires the modules together, and defines nothing they use.
//! - [`health`]: `/healthz`, `/readyz` and `/metrics` on `--health-listen`.

pub mod agent;
pub mod config;
pub mod connect;
pub mod error;
pub mod forward;
pub mod health;
pub mod lane;
pub mod link;
pub mod metrics;
pub mod reconnect;
pub mod session;
pub mod upstream;

use std::future::Future;
use std::sync::Arc;
use std::time::Instant;

use borealis_egress::{Egress, EgressOptions, Policy};
use tokio::net::TcpListener;
use tokio::sync::{Notify, Semaphore};
use tokio_util::sync::CancellationToken;

pub use agent::Agent;
pub use config::AgentConfig;
pub use error::AgentError;

use crate::metrics::Metrics;
use crate::reconnect::Reconnect;
use crate::session::SessionEnd;

/// Runs the agent until `shutdown` completes or the relay refuses its
/// credentials (an error: the process should exit non-zero).
pub async fn run(
    config: AgentConfig,
    health: Option<TcpListener>,
    shutdown: impl Future<Output = ()>,
) -> Result<(), AgentError> {
    config.validate().map_err(|e| AgentError::Config(e.0))?;
    borealis_egress::client::install_crypto_provider();
    let egress = Egress::new(Policy::AllowList(config.allow_list()), EgressOptions::default())
        .map_err(|e| AgentError::Internal(e.to_string()))?;
    let endpoint = connect::endpoint(&config)?;
    let agent = Arc::new(Agent {
        limiter: Arc::new(Semaphore::new(config.max_concurrency)),
        config,
        egress,
        metrics: Metrics::default(),
        idle: Notify::new(),
    });
    let stop = CancellationToken::new();
    let health_task = health.map(|listener| tokio::spawn(health::serve(listener, agent.clone(), stop.clone())));

    let relay = agent.config.relay.clone();
    let stopper = stop.clone();
    let sessions = async {
        let mut reconnect = Reconnect::new(agent.config.max_backoff);
        let mut token_retry = false;
        loop {
            let mut up_since = None;
            let result = match connect::connect(&endpoint).await {
                Ok(channel) => session::run_session(&agent, channel, &stop, &mut up_since).await,
                Err(err) => {
                    Err(AgentError::Unreachable(format!("{relay}: {}", borealis_egress::client::root_cause(&err))))
                }
            };
            if let Some(since) = up_since {
                let drained = matches!(result, Ok(SessionEnd::Drained));
                if reconnect.session_ended(since, drained, Instant::now()) {
                    token_retry = false;
                }
            }
            match result {
                Ok(SessionEnd::Shutdown) => return Ok(()),
                // The relay asked us to go elsewhere (it stops, lost its
                // database, or holds too many agents): the balancer picks
                // another replica, at once, so the agent is not away.
                Ok(SessionEnd::Drained) => {
                    tracing::info!("reconnecting at once after the relay's drain");
                    continue;
                }
                Err(AgentError::TokenRejected(reason)) if !token_retry => {
                    // A fresh token settles it: the next attempt fetches one,
                    // and a revoked credential is refused at that point.
                    tracing::warn!(reason = reason.as_str(), "the relay refused our token; fetching a new one");
                    token_retry = true;
                    continue;
                }
                Err(AgentError::TokenRejected(reason)) => return Err(AgentError::Rejected(reason)),
                Err(err) if !err.is_retryable() => return Err(err),
                Err(err) => tracing::warn!(error = err.to_string().as_str(), "session ended"),
            }
            let (delay, attempt) = reconnect.next_delay(Instant::now());
            tracing::info!(retry_in_ms = delay.as_millis() as u64, attempt, "reconnecting");
            tokio::select! {
                () = tokio::time::sleep(delay) => {}
                () = stop.cancelled() => return Ok(()),
            }
        }
    };
    let result = tokio::select! {
        result = sessions => result,
        () = async { shutdown.await; stopper.cancel(); std::future::pending::<()>().await } => Ok(()),
    };
    stop.cancel();
    if let Some(task) = health_task {
        let _ = task.await;
    }
    result
}
