//! One session with the relay: hello, welcome, heartbeats, offers, standby
//! calls, lanes, drain.

use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use borealis_protocol::v1::{self, agent_control, relay_control};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tonic::transport::Channel;

use crate::connect::fetch_token;
use crate::forward::StandbyPool;
use crate::link::{SessionLink, authorize, tunnel_client};
use crate::{Agent, AgentError};

/// How a session ended, when it was not an error.
#[derive(Debug)]
pub enum SessionEnd {
    /// The agent is shutting down.
    Shutdown,
    /// The relay asked agents to go elsewhere (it is shutting down).
    Drained,
}

/// Maps a failed call to the relay: a refusal of who we are is final, the
/// rest is worth another try.
pub fn status_error(status: tonic::Status) -> AgentError {
    use tonic::Code;
    match status.code() {
        Code::Unauthenticated => AgentError::TokenRejected(status.message().to_owned()),
        Code::PermissionDenied | Code::FailedPrecondition => AgentError::Rejected(status.message().to_owned()),
        Code::Unimplemented => AgentError::NotTheTunnel(format!(
            "the server at --relay does not serve the agents' tunnel: {}",
            status.message()
        )),
        _ => AgentError::Unreachable(format!("{}: {}", status.code(), status.message())),
    }
}

fn control(msg: agent_control::Msg) -> v1::AgentControl {
    v1::AgentControl { msg: Some(msg) }
}

/// Runs one session on a connected channel until it ends. `up_since` is set
/// when the relay welcomes the session.
pub async fn run_session(
    agent: &Arc<Agent>,
    channel: Channel,
    stop: &CancellationToken,
    up_since: &mut Option<Instant>,
) -> Result<SessionEnd, AgentError> {
    let config = &agent.config;
    let token = fetch_token(&channel, &config.client_id, &config.client_secret).await?;
    let (to_relay, outbound) = mpsc::channel(64);
    let hello = v1::Hello {
        agent_id: config.agent_id.clone().unwrap_or_default(),
        version: env!("CARGO_PKG_VERSION").into(),
        capacity: u32::try_from(config.max_concurrency).unwrap_or(u32::MAX),
        instance: config.instance.clone(),
        protocol_version: borealis_protocol::PROTOCOL_VERSION,
        standby_calls: config.standby_calls,
        allow_list: Some(allow_report(&config.allow_list())),
        lanes: config.lanes,
    };
    to_relay
        .send(control(agent_control::Msg::Hello(hello)))
        .await
        .map_err(|_| AgentError::Internal("control queue closed".into()))?;
    let mut request = tonic::Request::new(ReceiverStream::new(outbound));
    authorize(&mut request, &token.value);
    let mut inbound = tunnel_client(channel.clone()).control(request).await.map_err(status_error)?.into_inner();

    let welcome = match inbound.message().await.map_err(status_error)? {
        Some(v1::RelayControl { msg: Some(relay_control::Msg::Welcome(welcome)) }) => welcome,
        _ => return Err(AgentError::Unreachable("the relay did not send welcome".into())),
    };
    let ended = CancellationToken::new();
    let link = Arc::new(SessionLink {
        channel,
        session_id: welcome.session_id.clone(),
        token: RwLock::new(token),
        cancels: Mutex::default(),
        draining: ended.child_token(),
        ended,
    });
    let mut standby = StandbyPool::start(agent, &link, welcome.standby_calls);
    // A relay from before lanes grants none: every request then comes on a
    // `Forward` call.
    let lanes: Vec<_> = (0..welcome.lanes.min(config.lanes))
        .map(|index| tokio::spawn(crate::lane::keep_lane(agent.clone(), link.clone(), index)))
        .collect();
    let interval = Duration::from_millis(u64::from(welcome.heartbeat_interval_ms.max(100)));
    tracing::info!(
        agent = welcome.agent_id.as_str(),
        session = welcome.session_id.as_str(),
        relay = welcome.relay_instance_id.as_str(),
        "connected to the relay"
    );
    *up_since = Some(Instant::now());
    agent.metrics.connected.set(1);
    agent.metrics.sessions.inc();
    let _connected = scopeguard(|| {
        agent.metrics.connected.set(0);
    });

    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_heard = Instant::now();
    let mut sequence = 0u64;
    // Set once the agent is stopping: done when the session has drained.
    let mut drained: Option<std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>> = None;
    // When the grace of a shutdown ends: the lanes are waited for within it too.
    let mut grace_ends = None;
    let outcome: Result<SessionEnd, AgentError> = async {
        loop {
            tokio::select! {
                msg = inbound.message() => {
                    last_heard = Instant::now();
                    match msg.map_err(status_error)? {
                        Some(v1::RelayControl { msg: Some(relay_control::Msg::Offer(offer)) }) => {
                            standby.grow(&link);
                            let cancel = CancellationToken::new();
                            link.cancels.lock().expect("cancels lock").insert(offer.request_id.clone(), cancel.clone());
                            tokio::spawn(crate::forward::handle_offer(agent.clone(), link.clone(), offer, cancel));
                        }
                        Some(v1::RelayControl { msg: Some(relay_control::Msg::Cancel(cancel)) }) => {
                            if let Some(token) = link.cancels.lock().expect("cancels lock").get(&cancel.request_id) {
                                token.cancel();
                            }
                        }
                        Some(v1::RelayControl { msg: Some(relay_control::Msg::Drain(drain)) }) => {
                            tracing::info!(reason = drain.reason.as_str(), "relay is draining; requests in flight finish, then reconnecting");
                            agent.metrics.drains.inc();
                            return Ok(SessionEnd::Drained);
                        }
                        Some(_) => {}
                        None => return Err(AgentError::Unreachable("the relay closed the session".into())),
                    }
                }
                _ = ticker.tick() => {
                    if last_heard.elapsed() > interval * 3 {
                        return Err(AgentError::Unreachable("the relay stopped answering heartbeats".into()));
                    }
                    sequence += 1;
                    let beat = v1::Heartbeat { sequence, in_flight: agent.metrics.in_flight.get() as u32 };
                    if to_relay.send(control(agent_control::Msg::Heartbeat(beat))).await.is_err() {
                        return Err(AgentError::Unreachable("control stream closed".into()));
                    }
                    let due = Instant::now() >= link.token.read().expect("token lock").refresh_at;
                    if due {
                        let fresh = fetch_token(&link.channel, &config.client_id, &config.client_secret).await?;
                        *link.token.write().expect("token lock") = fresh;
                    }
                }
                () = stop.cancelled(), if drained.is_none() => {
                    let grace_ends = *grace_ends.insert(tokio::time::Instant::now() + config.shutdown_grace);
                    link.draining.cancel();
                    let drain = v1::Drain { reason: "agent shutting down".into(), grace_ms: config.shutdown_grace.as_millis() as u32 };
                    let _ = to_relay.send(control(agent_control::Msg::Drain(drain))).await;
                    // On the drain the relay closes our standby calls; a request
                    // it sent down one just before still arrives first, and is
                    // then waited for with the rest. Meanwhile this loop goes on
                    // beating, so the relay keeps the session while it drains.
                    let (standby_closed, agent) = (standby.closed(), agent.clone());
                    drained = Some(Box::pin(async move {
                        let _ = tokio::time::timeout_at(grace_ends, standby_closed).await;
                        agent.wait_idle(grace_ends.saturating_duration_since(tokio::time::Instant::now())).await;
                    }));
                }
                () = async { drained.as_mut().expect("enabled only when set").await }, if drained.is_some() => {
                    return Ok(SessionEnd::Shutdown);
                }
            }
        }
    }
    .await;
    match outcome {
        // Ended in order: the relay closes the standby calls itself, after
        // any request it sent down one, which is then served.
        Ok(_) => link.draining.cancel(),
        // Lost: nothing more comes down them.
        Err(_) => link.ended.cancel(),
    }
    if let Ok(SessionEnd::Shutdown) = outcome {
        // The session ends here; the relay then ends each lane once every
        // request it sent down it is answered (one it sent before it read
        // our drain among them), and the process may exit after that.
        drop(to_relay);
        let ends = grace_ends.unwrap_or_else(|| tokio::time::Instant::now() + config.shutdown_grace);
        let _ = tokio::time::timeout_at(ends, futures_util::future::join_all(lanes)).await;
    }
    outcome
}

/// Runs `f` when dropped.
fn scopeguard(f: impl FnOnce()) -> impl Drop {
    struct Guard<F: FnOnce()>(Option<F>);
    impl<F: FnOnce()> Drop for Guard<F> {
        fn drop(&mut self) {
            if let Some(f) = self.0.take() {
                f();
            }
        }
    }
    Guard(Some(f))
}

/// The allow-list as the relay reads it in `Hello`, for its dry runs.
fn allow_report(list: &borealis_egress::AllowList) -> v1::AllowList {
    v1::AllowList { rules: list.rules().iter().map(ToString::to_string).collect(), any: list.is_any() }
}
