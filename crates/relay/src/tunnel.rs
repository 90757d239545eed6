//! The `Tunnel` gRPC service that agents call.

use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use borealis_protocol::v1::{self, agent_control, agent_frame, relay_control, tunnel_server::Tunnel};
use borealis_protocol::{MAX_FRAME_BYTES, MAX_NAME_BYTES};
use borealis_store::{CredentialKind, ReportedAllowList};
use futures_util::{Stream, StreamExt};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status, Streaming};

use crate::auth::{self, AuthError, Claims};
use crate::hub::{ForwardCall, MAX_STANDBY_CALLS, SessionInfo};
use crate::serve::{ConnectionHandle, RemoteAddr};
use crate::state::AppState;

/// How long an agent has to say hello, or to open a call's first frame.
const FIRST_FRAME_TIMEOUT: Duration = Duration::from_secs(10);

/// How long the lanes of a session that is over (revoked, or its agent
/// gone in order) may still carry its unanswered requests.
const LANE_WIND_DOWN: Duration = Duration::from_secs(10);

type BoxStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send>>;

pub struct TunnelService {
    pub state: Arc<AppState>,
}

impl TunnelService {
    fn claims<T>(&self, call: &str, request: &Request<T>) -> Result<Claims, Status> {
        let peer = request.extensions().get::<RemoteAddr>().map(|r| r.0.ip());
        // Counted and logged; an agent whose token is refused stops
        // anyway, so the answer does not change with the limit.
        let refused = |detail: String| {
            let _limited = self.state.auth_guard.failed(peer, "agent_token", None, &detail);
            Status::unauthenticated(detail)
        };
        let token = auth::bearer(
            request
                .metadata()
                .get(borealis_protocol::AUTHORIZATION)
                .map(|v| {
                    // tonic metadata values are http header values underneath.
                    http::HeaderValue::from_bytes(v.as_bytes()).unwrap_or(http::HeaderValue::from_static(""))
                })
                .as_ref(),
        )
        .ok_or_else(|| refused("missing bearer token: get one from POST /oauth/token".into()))?
        .to_owned();
        let claims = self.state.auth.verify(&token).map_err(|e| refused(e.to_string()))?;
        if !claims.is_agent() {
            let status = Status::permission_denied("this token was not issued to an agent credential");
            log_refusal(call, &self::peer(request), Some(&claims), &status);
            return Err(status);
        }
        Ok(claims)
    }
}

/// The peer of a call, as logged.
fn peer<T>(request: &Request<T>) -> String {
    request.extensions().get::<RemoteAddr>().map_or_else(|| "-".to_owned(), |r| r.0.to_string())
}

/// Logs a refused `Control` or `Forward` call at warn: the reason, the peer
/// and the credential (never the token). Failed authentication is logged by
/// the auth guard instead, with the peer.
fn log_refusal(call: &str, peer: &str, claims: Option<&Claims>, status: &Status) {
    // The reason may quote what the agent sent: a `&str` value is escaped.
    tracing::warn!(
        call,
        peer,
        agent = claims.map(|c| c.sub.as_str()),
        client_id = claims.map(|c| c.client_id.as_str()),
        code = format!("{:?}", status.code()).as_str(),
        reason = status.message(),
        "refused an agent's call"
    );
}

/// Fails unless each of the peer's `(what, value)` names and ids is at most
/// [`MAX_NAME_BYTES`] long.
/// Most rules a `Hello.allow_list` may hold.
const MAX_ALLOW_RULES: usize = 1024;

/// The allow-list a `Hello` reports, within its bounds.
fn reported_allow_list(list: Option<&v1::AllowList>) -> Result<Option<ReportedAllowList>, Status> {
    let Some(list) = list else { return Ok(None) };
    if list.rules.len() > MAX_ALLOW_RULES {
        return Err(Status::invalid_argument(format!(
            "Hello.allow_list has {} rules; at most {MAX_ALLOW_RULES} are allowed",
            list.rules.len()
        )));
    }
    for rule in &list.rules {
        check_lengths(&[("a rule of Hello.allow_list", rule)])?;
    }
    Ok(Some(ReportedAllowList { rules: list.rules.clone(), any: list.any }))
}

fn check_lengths(fields: &[(&str, &str)]) -> Result<(), Status> {
    for (what, value) in fields {
        if value.len() > MAX_NAME_BYTES {
            return Err(Status::invalid_argument(format!(
                "{what} is {} bytes long; at most {MAX_NAME_BYTES} are allowed",
                value.len()
            )));
        }
    }
    Ok(())
}

/// Every heartbeat interval, ends the sessions whose credential was revoked
/// through another relay replica sharing the store. A revocation made here
/// ends them at once ([`crate::hub::Hub::disconnect`]).
pub async fn sweep_revoked(state: Arc<AppState>, stop: CancellationToken) {
    // Sessions start with a checked credential: the first look is one
    // interval in, not at start-up.
    let every = state.config.heartbeat_interval;
    let mut ticker = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = ticker.tick() => {}
            () = state.revocations.notified() => {}
            () = stop.cancelled() => return,
        }
        let listed_at = SystemTime::now();
        match state.store.active_credentials(CredentialKind::Agent, None).await {
            Ok(active) => {
                let active = active.into_iter().map(|c| c.client_id).collect();
                let ended = state.hub.end_revoked(&active, listed_at);
                if ended > 0 {
                    tracing::info!(sessions_closed = ended, "ended sessions of revoked agent credentials");
                }
            }
            Err(err) => tracing::warn!(error = %err, "could not check agent credentials for revocation"),
        }
    }
}

async fn first_frame<T>(inbound: &mut Streaming<T>, what: &str) -> Result<T, Status> {
    match tokio::time::timeout(FIRST_FRAME_TIMEOUT, inbound.message()).await {
        Ok(Ok(Some(frame))) => Ok(frame),
        Ok(Ok(None)) => Err(Status::invalid_argument(format!("stream ended before {what}"))),
        Ok(Err(status)) => Err(status),
        Err(_) => Err(Status::deadline_exceeded(format!("no {what} within {FIRST_FRAME_TIMEOUT:?}"))),
    }
}

#[tonic::async_trait]
impl Tunnel for TunnelService {
    type ControlStream = BoxStream<v1::RelayControl>;
    type ForwardStream = BoxStream<v1::RelayFrame>;
    type LaneStream = BoxStream<v1::RelayLane>;

    async fn control(
        &self,
        request: Request<Streaming<v1::AgentControl>>,
    ) -> Result<Response<Self::ControlStream>, Status> {
        let claims = self.claims("Control", &request)?;
        let peer = peer(&request);
        self.open_session(&claims, request)
            .await
            .inspect_err(|status| log_refusal("Control", &peer, Some(&claims), status))
    }

    async fn forward(
        &self,
        request: Request<Streaming<v1::AgentFrame>>,
    ) -> Result<Response<Self::ForwardStream>, Status> {
        let claims = self.claims("Forward", &request)?;
        let peer = peer(&request);
        self.open_call(&claims, request)
            .await
            .inspect_err(|status| log_refusal("Forward", &peer, Some(&claims), status))
    }

    async fn lane(&self, request: Request<Streaming<v1::AgentLane>>) -> Result<Response<Self::LaneStream>, Status> {
        let claims = self.claims("Lane", &request)?;
        let peer = peer(&request);
        self.open_lane(&claims, request).await.inspect_err(|status| log_refusal("Lane", &peer, Some(&claims), status))
    }
}

impl TunnelService {
    /// A `Control` call: checks the hello, registers the session and
    /// serves it until it ends.
    async fn open_session(
        &self,
        claims: &Claims,
        request: Request<Streaming<v1::AgentControl>>,
    ) -> Result<Response<BoxStream<v1::RelayControl>>, Status> {
        let state = &self.state;
        if state.hub.is_draining() {
            return Err(Status::unavailable("relay is shutting down; reconnect later"));
        }
        if crate::placement::refuses_agents(state) {
            return Err(Status::unavailable(
                "this relay replica cannot reach its database; connect to another replica (through the balancer)",
            ));
        }
        match state.auth.ensure_active(claims).await {
            Ok(()) => {}
            Err(err @ (AuthError::Revoked | AuthError::InvalidClient)) => {
                return Err(Status::unauthenticated(err.to_string()));
            }
            Err(err) => return Err(Status::unavailable(err.to_string())),
        }
        let remote_addr = request.extensions().get::<RemoteAddr>().map(|r| r.0);
        let connection = request.extensions().get::<ConnectionHandle>().cloned();
        let mut inbound = request.into_inner();
        let hello = match first_frame(&mut inbound, "hello").await?.msg {
            Some(agent_control::Msg::Hello(hello)) => hello,
            _ => return Err(Status::invalid_argument("the first control message must be hello")),
        };
        // First: what the other fields mean depends on the version.
        if hello.protocol_version != borealis_protocol::PROTOCOL_VERSION {
            return Err(Status::failed_precondition(format!(
                "agent speaks tunnel protocol {}, this relay speaks {}",
                hello.protocol_version,
                borealis_protocol::PROTOCOL_VERSION
            )));
        }
        check_lengths(&[
            ("Hello.agent_id", &hello.agent_id),
            ("Hello.version", &hello.version),
            ("Hello.instance", &hello.instance),
        ])?;
        // Empty: the credential's identifier.
        if !hello.agent_id.is_empty() && hello.agent_id != claims.sub {
            return Err(Status::permission_denied(format!(
                "this credential belongs to agent {:?}; it cannot serve agent {:?}",
                claims.sub, hello.agent_id
            )));
        }
        let allow_list = reported_allow_list(hello.allow_list.as_ref())?;
        if hello.capacity == 0 {
            return Err(Status::invalid_argument(
                "Hello.capacity is 0: an instance that can run no request cannot serve (send 1 or more)",
            ));
        }

        let (control, outbound) = mpsc::channel(256);
        let info = SessionInfo {
            agent: claims.agent(),
            client_id: claims.client_id.clone(),
            instance: hello.instance.clone(),
            version: hello.version.clone(),
            remote_addr,
            capacity: hello.capacity,
            standby_calls: hello.standby_calls.min(MAX_STANDBY_CALLS),
            lanes: state.hub.lanes_for(hello.lanes),
            allow_list,
            connection,
        };
        let session = state.hub.register(info, control);
        // Recorded for the other replicas, so a request for this agent that
        // reaches one of them comes here.
        if let Err(err) = state.store.put_session(&crate::placement::record(&state.replica, &session)).await {
            tracing::warn!(session = %session.id, error = %err, "could not record the agent's session for the other replicas; recording it again at the next heartbeat");
        }
        // The instance name and version are the agent's words: a `&str` value is escaped.
        tracing::info!(agent = %session.info.agent, session = %session.id, instance = session.info.instance.as_str(),
            version = session.info.version.as_str(), remote = remote_addr.map(tracing::field::display), "agent connected");
        let interval = state.config.heartbeat_interval;
        session
            .send(relay_control::Msg::Welcome(v1::Welcome {
                session_id: session.id.clone(),
                relay_instance_id: state.hub.relay_instance_id.clone(),
                heartbeat_interval_ms: interval.as_millis() as u32,
                agent_id: session.info.agent.name.clone(),
                standby_calls: session.info.standby_calls,
                lanes: session.info.lanes,
            }))
            .await;

        let hub = state.hub.clone();
        let store = state.store.clone();
        let watched = session.clone();
        state.hub.spawn_session_task(async move {
            let session = watched;
            // Checked every quarter interval: a session silent for 2¾
            // intervals is lost, so it is always declared lost within three
            // intervals of the last beat it sent.
            let mut watchdog = tokio::time::interval(interval / 4);
            watchdog.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let reason = loop {
                tokio::select! {
                    msg = inbound.message() => match msg {
                        Ok(Some(v1::AgentControl { msg: Some(agent_control::Msg::Heartbeat(beat)) })) => {
                            session.heartbeat();
                            let reply = v1::Heartbeat { sequence: beat.sequence, in_flight: session.in_flight() as u32 };
                            session.send(relay_control::Msg::Heartbeat(reply)).await;
                        }
                        Ok(Some(v1::AgentControl { msg: Some(agent_control::Msg::Drain(_)) })) => {
                            tracing::info!(agent = %session.info.agent, session = %session.id, "agent is draining");
                            session.set_draining();
                        }
                        Ok(Some(v1::AgentControl { msg })) => {
                            let reason = match msg {
                                Some(_) => "a second Hello on the control stream",
                                None => "a control message with no content",
                            };
                            tracing::warn!(agent = %session.info.agent, session = %session.id, reason, "agent broke the tunnel protocol");
                            session.kick(Status::invalid_argument(format!("protocol violation: {reason}")));
                            break "protocol violation";
                        }
                        Ok(None) => break "agent closed the session",
                        Err(status) if status.code() == tonic::Code::OutOfRange => {
                            let reason = format!("a control message over {MAX_FRAME_BYTES} bytes");
                            tracing::warn!(agent = %session.info.agent, session = %session.id, reason = reason.as_str(), "agent broke the tunnel protocol");
                            session.kick(Status::invalid_argument(format!("protocol violation: {reason}")));
                            break "protocol violation";
                        }
                        Err(_) => break "connection lost",
                    },
                    _ = watchdog.tick() => {
                        let silent = SystemTime::now().duration_since(session.last_heartbeat()).unwrap_or_default();
                        if silent > interval * 11 / 4 {
                            session.lose(Status::deadline_exceeded("no heartbeat for almost three intervals"));
                            break "heartbeats stopped";
                        }
                    }
                    () = session.closed.cancelled() => break "session ended by the relay",
                }
            };
            hub.unregister(&session);
            if let Err(err) = store.remove_session(&session.id).await {
                tracing::warn!(session = %session.id, error = %err, "could not remove the agent's session record; it lapses with this replica");
            }
            tracing::info!(agent = %session.info.agent, session = %session.id, reason, "agent disconnected");
        });

        // Deliver what is queued (a final status from `kick` included), and
        // end the stream once the session is closed and nothing is left.
        let stream =
            futures_util::stream::unfold((outbound, session.closed.clone()), |(mut queue, closed)| async move {
                let item = tokio::select! {
                    biased;
                    item = queue.recv() => item,
                    () = closed.cancelled() => queue.try_recv().ok(),
                };
                item.map(|item| (item, (queue, closed)))
            });
        Ok(Response::new(Box::pin(stream)))
    }

    /// A `Lane` call: binds it to the session and lane its `LaneOpen` names,
    /// then reads the agent's answers (a task the hub owns) while the
    /// response stream writes the lane's requests, batched. The relay ends
    /// its side once the session is over and nothing is outstanding, or at
    /// once when the lane breaks.
    async fn open_lane(
        &self,
        claims: &Claims,
        request: Request<Streaming<v1::AgentLane>>,
    ) -> Result<Response<BoxStream<v1::RelayLane>>, Status> {
        use borealis_protocol::lanes::LaneViolation;
        let mut inbound = request.into_inner();
        let first = first_frame(&mut inbound, "LaneOpen").await?;
        let violation = |v: LaneViolation| Status::invalid_argument(format!("protocol violation: {v}"));
        let Some(open) = first.open else { return Err(violation(LaneViolation::MisplacedOpen)) };
        if let Some(answer) = first.answers.first() {
            return Err(violation(LaneViolation::NotSent { id: answer.id }));
        }
        check_lengths(&[("LaneOpen.session_id", &open.session_id)])?;
        let session = self.state.hub.session(&claims.agent(), &open.session_id)?;
        if session.closed.is_cancelled() {
            return Err(Status::not_found(format!("session {} is over", open.session_id)));
        }
        let (lane, outgoing) = session.open_lane(open.lane).map_err(violation)?;
        let session_closed = session.closed.clone();
        let verdict = Arc::new(std::sync::OnceLock::new());
        let (reader_lane, reader_verdict) = (lane.clone(), verdict.clone());
        self.state.hub.spawn_session_task(async move {
            let (lane, session) = (reader_lane, session);
            use crate::lane::LaneBroken::Lost;
            // A session that is over keeps its lanes while their requests
            // are answered, for a while: then what is left fails.
            let over_too_long = async {
                session.closed.cancelled().await;
                tokio::time::sleep(LANE_WIND_DOWN).await;
            };
            let (why, status) = tokio::select! {
                ended = crate::lane::read_answers(&lane, &mut inbound) => ended,
                () = session.lost.cancelled() => (Lost("the agent stopped answering heartbeats".into()), None),
                () = over_too_long => (Lost("the session ended with requests unanswered".into()), None),
            };
            if let Some(status) = status {
                let _ = reader_verdict.set(status);
            }
            let unanswered = lane.outstanding();
            if unanswered > 0 {
                tracing::info!(agent = %session.info.agent, session = %session.id, lane = lane.index, unanswered,
                    reason = ?why, "a lane ended with requests unanswered; they fail");
            }
            lane.end(why);
            session.close_lane(&lane);
            // The agent's side is read to its end (or for 10 s), so that
            // ours ends first only when the lane broke.
            let rest = async { while let Ok(Some(_)) = inbound.message().await {} };
            let _ = tokio::time::timeout(Duration::from_secs(10), rest).await;
        });
        // Ours ends when the lane does: once the session is over and every
        // request on the lane is answered, or at once when it breaks.
        let over = {
            let (lane, session_closed) = (lane.clone(), session_closed);
            async move {
                let session_over = async {
                    session_closed.cancelled().await;
                    lane.wind_down().await;
                };
                tokio::select! {
                    () = lane.ended.cancelled() => {}
                    () = session_over => {}
                }
            }
        };
        let written = lane.clone();
        let messages = borealis_protocol::batch::batched(outgoing, crate::lane::Outgoing::encoded_len, move |batch| {
            crate::lane::relay_lane(&written, batch)
        })
        .map(Ok)
        .take_until(over);
        let verdict = futures_util::stream::once(async move { verdict.get().cloned() })
            .filter_map(|status| std::future::ready(status.map(Err)));
        Ok(Response::new(Box::pin(messages.chain(verdict))))
    }

    /// A `Forward` call: binds it to the offer its `Accept` names, or keeps
    /// it as a standby call of the session its `Standby` names.
    async fn open_call(
        &self,
        claims: &Claims,
        request: Request<Streaming<v1::AgentFrame>>,
    ) -> Result<Response<BoxStream<v1::RelayFrame>>, Status> {
        let mut inbound = request.into_inner();
        let first = first_frame(&mut inbound, "accept or standby").await?;
        let (accept, session_id) = match first.frame {
            Some(agent_frame::Frame::Accept(accept)) => (true, accept.session_id),
            Some(agent_frame::Frame::Standby(standby)) => (false, standby.session_id),
            _ => return Err(Status::invalid_argument("the first forward frame must be accept or standby")),
        };
        check_lengths(&[("request_id", &first.request_id), ("session_id", &session_id)])?;
        if !accept && !first.request_id.is_empty() {
            return Err(Status::invalid_argument(
                "a standby call has no request yet: the request_id of its Standby frame must be empty",
            ));
        }
        let (outbound, frames) = mpsc::channel(16);
        let call = ForwardCall::new(
            first.request_id,
            claims.agent().to_string(),
            session_id.clone(),
            inbound,
            outbound,
            self.state.hub.closer(),
        );
        let verdict = call.verdict();
        if accept {
            self.state.hub.take(&session_id, &claims.agent(), call)?;
        } else {
            self.state.hub.park(&session_id, &claims.agent(), call)?;
        }
        // The relay's side ends once the call is closed (see `ForwardCall`),
        // with the status a protocol violation set, if any.
        let frames = ReceiverStream::new(frames).map(|frame| Ok(*frame));
        let verdict = futures_util::stream::once(async move { verdict.get().cloned() })
            .filter_map(|status| std::future::ready(status.map(Err)));
        Ok(Response::new(Box::pin(frames.chain(verdict))))
    }
}
