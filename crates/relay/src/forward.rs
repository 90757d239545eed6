//! Forwarding one request, direct (under the address guard) or through an
//! agent, with the reply streamed back. Bodies flow in bounded chunks both
//! ways. Failures are [`ForwardError`]s: what went wrong, whose fault it is
//! and whether another try may help; the HTTP edge turns them into replies.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use borealis_core::team::AgentRef;
use borealis_egress::Egress;
use borealis_egress::headers::end_to_end;
use borealis_engine::transport::{Failure as CallFailure, Request, Sent, Transport};
use borealis_protocol::v1::{self, ErrorCode, agent_frame, relay_frame};
use borealis_protocol::{Fault, MAX_CHUNK_BYTES, MAX_FRAME_BYTES, MAX_INLINE_BODY_BYTES, v1::Failure};
use borealis_store::{CredentialKind, CredentialStore};
use bytes::Bytes;
use futures_util::{Stream, StreamExt, TryStreamExt};
use http::{HeaderMap, HeaderValue};
use http_body_util::BodyExt;
use tokio_util::task::AbortOnDropHandle;

use crate::hub::{
    DispatchError, Dispatched, ForwardCall, FrameSender, Hub, LaneDispatch, Lease, Session, frame_name,
    relay_frame as frame,
};
use crate::lane::LaneBroken;
use borealis_protocol::lanes::Settled;

/// How long an agent may take to pick up an offer.
const TAKE_WITHIN: Duration = Duration::from_secs(10);

pub use borealis_engine::transport::{Body, BoxError, full, read_body};

/// A body read from `stream` as it goes.
pub fn streamed(stream: impl Stream<Item = Result<Bytes, std::io::Error>> + Send + 'static) -> Body {
    let frames = stream.map_ok(http_body::Frame::data).map_err(|e| -> BoxError { Box::new(e) });
    http_body_util::StreamBody::new(frames).boxed_unsync()
}

/// The reply a forwarded request got: the destination's status and headers.
pub type Reply = http::Response<Body>;

/// Why a request could not be forwarded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ForwardFailure {
    /// A failure in the tunnel's terms: the relay's own checks, direct
    /// mode, or the agent's report of one.
    Code(ErrorCode),
    /// No credential of that agent identifier exists.
    UnknownAgent,
    /// Registered, but no instance is connected now.
    AgentNotConnected,
    /// The relay is shutting down and takes no new work.
    Draining,
    /// No instance took the request in time.
    NotTaken,
    /// The agent failed on its own side (its internal error).
    AgentFailed,
    /// The agent went away, or stopped answering heartbeats, mid-exchange.
    AgentLost,
    /// The agent broke the tunnel protocol.
    AgentProtocol,
    /// The relay's own state could not be read.
    Internal,
}

/// A request that could not be forwarded: what went wrong, and a message for
/// whoever sent it.
#[derive(Debug, thiserror::Error)]
#[error("{detail}")]
pub struct ForwardError {
    pub failure: ForwardFailure,
    pub detail: String,
}

impl ForwardError {
    pub fn new(failure: ForwardFailure, detail: impl Into<String>) -> Self {
        Self { failure, detail: detail.into() }
    }

    /// A stable name, used in metrics, logs and problem types.
    pub fn slug(&self) -> &'static str {
        match self.failure {
            ForwardFailure::Code(code) => code.slug(),
            ForwardFailure::UnknownAgent => "unknown-agent",
            ForwardFailure::AgentNotConnected | ForwardFailure::Draining | ForwardFailure::NotTaken => {
                "agent-unavailable"
            }
            ForwardFailure::AgentFailed => "agent-failed",
            ForwardFailure::AgentLost => "agent-lost",
            ForwardFailure::AgentProtocol => "agent-protocol-error",
            ForwardFailure::Internal => "internal",
        }
    }

    /// Whose fault it is. The path through an agent counts as upstream: the
    /// agent is the gateway.
    pub fn fault(&self) -> Fault {
        match self.failure {
            ForwardFailure::Code(code) => code.fault(),
            ForwardFailure::UnknownAgent => Fault::Caller,
            ForwardFailure::Internal => Fault::Internal,
            _ => Fault::Upstream,
        }
    }

    /// Whether another try may succeed (what webhook retries go by). An agent
    /// that is not connected may connect before the next try; one that is
    /// not registered will not. A request cut off by a lost agent may pass on
    /// another try, and `webhook-id` lets a receiver drop a repeat.
    pub fn retryable(&self) -> bool {
        self.fault() != Fault::Caller
    }

    /// Whether the request certainly did not leave for the destination: no
    /// instance took it, a replica holding the agent could not be reached
    /// or refused it, or the destination refused the connection.
    pub fn not_sent(&self) -> bool {
        matches!(
            self.failure,
            ForwardFailure::UnknownAgent
                | ForwardFailure::AgentNotConnected
                | ForwardFailure::Draining
                | ForwardFailure::NotTaken
                | ForwardFailure::Code(
                    ErrorCode::ConnectFailed | ErrorCode::DestinationNotAllowed | ErrorCode::InvalidRequest
                )
        )
    }

    /// Whether the path broke after the request left (the agent, or the
    /// replica holding it, went away mid-exchange): the destination may
    /// have received it, and only it knows.
    pub fn cut_off(&self) -> bool {
        self.failure == ForwardFailure::AgentLost
    }
}

/// A failure of a forwarded request, in the tunnel's terms.
pub fn failed(code: ErrorCode, detail: String) -> ForwardError {
    ForwardError::new(ForwardFailure::Code(code), detail)
}

/// A failure that happened on the agent's side. `Internal` from the agent is
/// its own fault, never the relay's.
fn agent_failed(code: ErrorCode, detail: String) -> ForwardError {
    match code {
        ErrorCode::Internal | ErrorCode::Unspecified => ForwardError::new(ForwardFailure::AgentFailed, detail),
        other => failed(other, detail),
    }
}

/// Why the exchange with an agent broke off `when`. A session lost to its
/// heartbeats has `lost` cancelled before its streams end, so whichever a
/// call notices first, the cause reads the same.
fn lost_detail(lost: &tokio_util::sync::CancellationToken, who: &str, when: &str) -> String {
    if lost.is_cancelled() {
        format!("{who} was lost {when} (it stopped answering heartbeats)")
    } else {
        format!("{who} went away {when}")
    }
}

fn agent_lost(detail: String) -> ForwardError {
    ForwardError::new(ForwardFailure::AgentLost, detail)
}

/// The agent broke the tunnel protocol on `call`. The call is cancelled and
/// ends with `INVALID_ARGUMENT`, and the violation is logged at warn
/// ([`ForwardCall::violated`]). Retryable, as for a lost agent: another
/// instance may answer properly.
fn protocol_error(call: &mut ForwardCall, reason: String) -> ForwardError {
    call.violated(&reason);
    let detail = format!("agent {:?} broke the tunnel protocol: {reason}", call.agent_id);
    ForwardError::new(ForwardFailure::AgentProtocol, detail)
}

/// The agent's next frame on a call, with the rules every frame follows
/// checked.
enum Read {
    Frame(agent_frame::Frame),
    /// A frame that breaks the protocol whatever comes before it.
    Violation(String),
    /// The agent ended its side of the call (or reset it).
    Ended,
    /// The connection failed.
    Lost,
}

async fn read(call: &mut ForwardCall) -> Read {
    match call.inbound().message().await {
        Ok(Some(frame)) if frame.request_id != call.request_id => {
            let theirs = crate::throttle::shortened(&frame.request_id, 80);
            Read::Violation(format!("a frame for request {theirs:?} on the call of request {}", call.request_id))
        }
        Ok(Some(v1::AgentFrame { frame: Some(frame), .. })) => Read::Frame(frame),
        Ok(Some(v1::AgentFrame { frame: None, .. })) => Read::Violation("a frame with no content".into()),
        // tonic reads a reset from the client as the end of its stream.
        Ok(None) => Read::Ended,
        Err(status) if status.code() == tonic::Code::OutOfRange => {
            Read::Violation(format!("a frame over the limit of {MAX_FRAME_BYTES} bytes"))
        }
        Err(_) => Read::Lost,
    }
}

/// One request on its way out, direct or through an agent.
pub struct Outbound {
    pub method: http::Method,
    pub url: String,
    pub headers: HeaderMap,
    pub body: Body,
    pub timeout: Duration,
    /// Largest body either way, in bytes.
    pub limit: u64,
}

/// What forwarding needs: direct mode's guarded client, the agents'
/// sessions, and the credentials that tell an unknown agent from a
/// disconnected one.
pub struct Forwarder {
    egress: Egress,
    hub: Arc<Hub>,
    credentials: Arc<dyn CredentialStore>,
    /// The way to agents whose sessions other replicas hold, when the
    /// database is shared.
    peers: Option<Arc<dyn PeerRoute>>,
}

/// Where a request goes when no instance of its agent is connected here.
pub trait PeerRoute: Send + Sync {
    /// Sends `outbound` to a replica that holds a session of `agent`, if
    /// one does; gives it back untouched when none does (nothing was sent).
    fn send<'a>(
        &'a self,
        agent: &'a AgentRef,
        outbound: Outbound,
    ) -> futures_util::future::BoxFuture<'a, Result<Result<Reply, ForwardError>, Outbound>>;
}

impl Forwarder {
    pub fn new(
        egress: Egress,
        hub: Arc<Hub>,
        credentials: Arc<dyn CredentialStore>,
        peers: Option<Arc<dyn PeerRoute>>,
    ) -> Self {
        Self { egress, hub, credentials, peers }
    }

    /// The destination policy of direct mode.
    pub fn direct_policy(&self) -> &borealis_egress::Policy {
        self.egress.policy()
    }

    /// Sends a request direct (`agent` is `None`) or through an agent,
    /// connected here or to another replica.
    pub async fn send(&self, agent: Option<&AgentRef>, outbound: Outbound) -> Result<Reply, ForwardError> {
        send(self, agent, outbound, true).await
    }

    /// Sends a request through an agent connected to this replica only: a
    /// peer's request, which must not hop again.
    pub async fn send_here(&self, agent: &AgentRef, outbound: Outbound) -> Result<Reply, ForwardError> {
        send(self, Some(agent), outbound, false).await
    }
}

/// The engine's calls leave the way any forwarded request does.
#[async_trait::async_trait]
impl Transport for Forwarder {
    async fn send(&self, agent: Option<&AgentRef>, request: Request) -> Result<Reply, CallFailure> {
        let Request { method, url, headers, body, timeout, limit } = request;
        let outbound = Outbound { method, url, headers, body: full(body), timeout, limit };
        Forwarder::send(self, agent, outbound).await.map_err(|err| {
            let sent = if err.not_sent() {
                Sent::No
            } else if err.cut_off() {
                Sent::CutOff
            } else {
                Sent::Yes
            };
            CallFailure { retryable: err.retryable(), sent, detail: err.detail }
        })
    }
}

async fn send(
    state: &Forwarder,
    agent: Option<&AgentRef>,
    mut outbound: Outbound,
    may_hop: bool,
) -> Result<Reply, ForwardError> {
    // A body of known size goes out with its length, not chunked: not every
    // destination reads chunked requests.
    if !outbound.headers.contains_key(http::header::CONTENT_LENGTH)
        && let Some(length) = http_body::Body::size_hint(&outbound.body).exact()
        && length > 0
    {
        outbound.headers.insert(http::header::CONTENT_LENGTH, HeaderValue::from(length));
    }
    match agent {
        None => direct(state, outbound).await,
        Some(agent) if may_hop && !state.hub.has_instance(agent) => match &state.peers {
            Some(peers) => match peers.send(agent, outbound).await {
                Ok(result) => result,
                Err(outbound) => via_agent(state, agent, outbound).await,
            },
            None => via_agent(state, agent, outbound).await,
        },
        Some(agent) => via_agent(state, agent, outbound).await,
    }
}

pub fn too_large(what: &str, limit: u64) -> ForwardError {
    failed(
        ErrorCode::BodyTooLarge,
        format!("the {what} body is larger than the limit of {limit} bytes (max_body_bytes)"),
    )
}

async fn direct(state: &Forwarder, outbound: Outbound) -> Result<Reply, ForwardError> {
    let Outbound { method, url, headers, body, timeout, limit } = outbound;
    let url = state.egress.check_url(&url).map_err(|e| failed(e.code(), e.to_string()))?;
    let over = Arc::new(AtomicBool::new(false));
    let upload = (!http_body::Body::is_end_stream(&body))
        .then(|| borealis_egress::reqwest::Body::wrap_stream(limited(body.into_data_stream(), limit, over.clone())));
    let sent = tokio::time::timeout(timeout, state.egress.send(method, url.clone(), headers, upload)).await;
    let response = match sent {
        Err(_) => {
            let destination = borealis_egress::client::destination(&url);
            return Err(failed(ErrorCode::Timeout, format!("{destination} did not answer within {timeout:?}")));
        }
        Ok(Err(_)) if over.load(Ordering::Relaxed) => return Err(too_large("request", limit)),
        Ok(Err(err)) => return Err(failed(err.code(), err.to_string())),
        Ok(Ok(response)) => response,
    };
    let mut reply = http::Response::builder().status(response.status());
    if let Some(map) = reply.headers_mut() {
        *map = end_to_end(response.headers());
    }
    let download = limited(response.bytes_stream(), limit, Arc::new(AtomicBool::new(false)));
    Ok(reply.body(streamed(download)).expect("status and headers come from a valid response"))
}

/// Passes chunks through until more than `limit` bytes went by, then fails.
fn limited<E: std::fmt::Display>(
    stream: impl Stream<Item = Result<Bytes, E>> + Send + 'static,
    limit: u64,
    over: Arc<AtomicBool>,
) -> impl Stream<Item = Result<Bytes, std::io::Error>> + Send + 'static {
    let mut seen = 0u64;
    stream.map(move |chunk| {
        let chunk = chunk.map_err(|e| std::io::Error::other(e.to_string()))?;
        seen += chunk.len() as u64;
        if seen > limit {
            over.store(true, Ordering::Relaxed);
            return Err(std::io::Error::other(format!("body larger than {limit} bytes")));
        }
        Ok(chunk)
    })
}

async fn via_agent(state: &Forwarder, agent: &AgentRef, outbound: Outbound) -> Result<Reply, ForwardError> {
    let agent_id = agent.name.as_str();
    let Outbound { method, url, headers, body, timeout, limit } = outbound;
    // Checked here too, so a malformed URL never costs an offer; the
    // destination policy is the agent's.
    borealis_egress::client::parse_url(&url).map_err(|e| failed(e.code(), e.to_string()))?;
    let exchange = Exchange { agent_id, deadline: tokio::time::Instant::now() + timeout, timeout, limit };
    // A small body of known length is read before the dispatch and travels
    // in the head: one frame instead of three, no upload task, and the
    // request may take a lane.
    let (inline, body) = match http_body::Body::size_hint(&body).exact() {
        Some(length) if borealis_protocol::lanes::fits_a_lane(usize::try_from(length).ok()) => {
            let collected = tokio::time::timeout_at(exchange.deadline, body.collect())
                .await
                .map_err(|_| exchange.timed_out())?
                .map_err(|_| failed(ErrorCode::Cancelled, "the request body was cut off".into()))?;
            let inline = collected.to_bytes();
            if inline.len() as u64 > limit {
                return Err(too_large("request", limit));
            }
            (inline, None)
        }
        _ => (Bytes::new(), Some(body)),
    };
    let head = v1::RequestHead {
        method: method.to_string(),
        url,
        headers: headers
            .iter()
            .map(|(name, value)| v1::Header { name: name.to_string(), value: Bytes::copy_from_slice(value.as_bytes()) })
            .collect(),
        timeout_ms: timeout.as_millis() as u64,
        max_response_bytes: limit,
        has_body: body.is_some(),
        body: inline,
    };
    let small = body.is_none();
    let (lease, request_id, dispatched) = match state.hub.dispatch(agent, head, small, TAKE_WITHIN.min(timeout)).await {
        Ok(dispatched) => dispatched,
        Err(err) => return Err(dispatch_error(state, agent, err).await),
    };
    let started = Instant::now();
    let result: Result<Reply, ForwardError> = async {
        match dispatched {
            Dispatched::Call(call, head) => exchange.on_call(*call, lease, Some((head, body))).await,
            Dispatched::Lane(on_lane) => match exchange.on_lane(on_lane, lease.session()).await? {
                LaneEnd::Answered(reply) => Ok(reply),
                LaneEnd::Diverted(call) => exchange.on_call(*call, lease, None).await,
            },
        }
    }
    .await;
    // One line per request, with the id the agent logs it under too.
    let elapsed_ms = started.elapsed().as_millis() as u64;
    match &result {
        Ok(response) => tracing::info!(
            request = request_id.as_str(),
            agent = agent_id,
            status = response.status().as_u16(),
            elapsed_ms,
            "forwarded through an agent"
        ),
        Err(err) => tracing::info!(
            request = request_id.as_str(),
            agent = agent_id,
            error = err.slug(),
            detail = err.detail.as_str(),
            elapsed_ms,
            "forwarded through an agent"
        ),
    }
    result
}

/// How a request on a lane ended there.
enum LaneEnd {
    /// With its answer: a whole response, or a failure turned into an error.
    Answered(Reply),
    /// The agent sends the response on a `Forward` call of its own.
    Diverted(Box<ForwardCall>),
}

/// The parts of one request through an agent that its steps share.
struct Exchange<'a> {
    agent_id: &'a str,
    deadline: tokio::time::Instant,
    timeout: Duration,
    limit: u64,
}

impl Exchange<'_> {
    fn timed_out(&self) -> ForwardError {
        failed(ErrorCode::Timeout, format!("agent {:?} did not answer within {:?}", self.agent_id, self.timeout))
    }

    /// The agent's `Failure` as an error. Its timer started after this
    /// one: its timeout, read once this deadline passed, is this deadline's.
    fn failure(&self, failure: &Failure) -> ForwardError {
        if failure.error_code() == ErrorCode::Timeout && tokio::time::Instant::now() >= self.deadline {
            return self.timed_out();
        }
        agent_failed(failure.error_code(), format!("agent {:?}: {}", self.agent_id, failure.message))
    }

    /// Waits for the answer to a request sent down a lane (or for the call
    /// of its divert, whichever comes first).
    async fn on_lane(&self, on_lane: LaneDispatch, session: &Session) -> Result<LaneEnd, ForwardError> {
        let mut on_lane = on_lane;
        let LaneDispatch { ticket, diverted, .. } = &mut on_lane;
        let lost = |detail: String| agent_lost(format!("agent {:?} {detail} before answering", self.agent_id));
        let answer = tokio::select! {
            answer = ticket.answer() => answer,
            Ok(call) = &mut *diverted => {
                ticket.forget();
                return Ok(LaneEnd::Diverted(Box::new(call)));
            }
            () = tokio::time::sleep_until(self.deadline) => return Err(self.timed_out()),
            () = session.lost.cancelled() => return Err(lost("was lost (it stopped answering heartbeats)".into())),
        };
        match answer {
            Ok(Settled::Response(head)) => {
                let reply = response_head(&head, self.limit).map_err(|reason| {
                    // The lane stays: the answer was whole and in order,
                    // only its head cannot be served.
                    ticket.lane().violated_by_answer(ticket.id, &reason);
                    ForwardError::new(
                        ForwardFailure::AgentProtocol,
                        format!("agent {:?} broke the tunnel protocol: {reason}", self.agent_id),
                    )
                })?;
                Ok(LaneEnd::Answered(reply.body(full(head.body)).expect("status and headers were validated")))
            }
            Ok(Settled::Failure(failure)) => Err(self.failure(&failure)),
            Ok(Settled::Divert) => {
                let take_within = tokio::time::Instant::now() + TAKE_WITHIN;
                tokio::select! {
                    call = &mut *diverted => call.map(|call| LaneEnd::Diverted(Box::new(call))).map_err(|_| lost("went away".into())),
                    () = tokio::time::sleep_until(take_within.min(self.deadline)) => Err(if take_within < self.deadline {
                        ForwardError::new(ForwardFailure::AgentProtocol, format!(
                            "agent {:?} diverted the response but opened no call for it within {TAKE_WITHIN:?}", self.agent_id))
                    } else {
                        self.timed_out()
                    }),
                    () = session.lost.cancelled() => Err(lost("was lost (it stopped answering heartbeats)".into())),
                }
            }
            Err(LaneBroken::Violation(reason)) => Err(ForwardError::new(
                ForwardFailure::AgentProtocol,
                format!("agent {:?} broke the tunnel protocol on its lane: {reason}", self.agent_id),
            )),
            Err(LaneBroken::Lost(detail)) => {
                Err(agent_lost(format!("agent {:?} went away before answering: {detail}", self.agent_id)))
            }
        }
    }

    /// Sends the request down a call of its own when `request` is given (a
    /// diverted call has it already), then reads the agent's answer: a head
    /// and a body streamed as the caller reads it, or a failure.
    async fn on_call(
        &self,
        mut call: ForwardCall,
        lease: Lease,
        request: Option<(v1::RequestHead, Option<Body>)>,
    ) -> Result<Reply, ForwardError> {
        let session = lease.session().clone();
        let lost = || agent_lost(lost_detail(&session.lost, &format!("agent {:?}", self.agent_id), "before answering"));
        let (mut upload, mut upload_error) = (None, None);
        if let Some((head, body)) = request {
            let request_id = call.request_id.clone();
            let head = frame(&request_id, relay_frame::Frame::RequestHead(head));
            call.sender().send(head).await.map_err(|_| lost())?;
            if let Some(body) = body {
                let (failed, error) = tokio::sync::oneshot::channel();
                let task = tokio::spawn(upload_body(body, call.sender(), request_id, self.limit, failed));
                (upload, upload_error) = (Some(AbortOnDropHandle::new(task)), Some(error));
            }
        }
        let upload_failed = async {
            match upload_error.as_mut() {
                Some(error) => match error.await {
                    Ok(problem) => problem,
                    Err(_) => std::future::pending().await,
                },
                None => std::future::pending().await,
            }
        };
        let first = tokio::select! {
            read = read(&mut call) => read,
            problem = upload_failed => return Err(problem),
            () = tokio::time::sleep_until(self.deadline) => return Err(self.timed_out()),
            () = session.lost.cancelled() => return Err(lost()),
        };
        let head = match first {
            Read::Frame(agent_frame::Frame::ResponseHead(head)) => head,
            Read::Frame(agent_frame::Frame::Failure(failure)) => {
                // Ended by the agent: nothing to cancel when the call closes.
                call.finish();
                drop(call);
                return Err(self.failure(&failure));
            }
            Read::Frame(other) => {
                let reason = format!("{} instead of ResponseHead or Failure", frame_name(Some(&other)));
                return Err(protocol_error(&mut call, reason));
            }
            Read::Violation(reason) => return Err(protocol_error(&mut call, reason)),
            Read::Ended => return Err(protocol_error(&mut call, "it ended the call without answering".into())),
            Read::Lost => return Err(lost()),
        };
        if !head.complete && !head.body.is_empty() {
            return Err(protocol_error(&mut call, "a body in a ResponseHead that is not complete".into()));
        }
        let reply = match response_head(&head, self.limit) {
            Ok(reply) => reply,
            Err(reason) => return Err(protocol_error(&mut call, reason)),
        };
        if head.complete {
            call.finish();
            call.close_if_ended();
            return Ok(reply.body(full(head.body)).expect("status and headers were validated"));
        }
        let expected = reply
            .headers_ref()
            .and_then(|h| h.get(http::header::CONTENT_LENGTH))
            .and_then(|v| v.to_str().ok()?.parse().ok());
        let body = ResponseBody { call, _lease: lease, _upload: upload, received: 0, expected, limit: self.limit };
        Ok(reply.body(streamed(body.into_stream())).expect("status and headers were validated"))
    }
}

/// The reply a `ResponseHead` describes, with its rules checked: a status of
/// 100 to 999, valid headers, and an inline body within both the inline
/// limit and `limit`. Else what is wrong with it.
fn response_head(head: &v1::ResponseHead, limit: u64) -> Result<http::response::Builder, String> {
    if !(100..=999).contains(&head.status) {
        return Err(format!("the invalid status {}", head.status));
    }
    if head.body.len() > MAX_INLINE_BODY_BYTES {
        return Err(format!("an inline body of {} bytes, over the limit of {MAX_INLINE_BODY_BYTES}", head.body.len()));
    }
    if head.body.len() as u64 > limit {
        return Err(format!("an inline body of {} bytes, over max_response_bytes ({limit})", head.body.len()));
    }
    let (status, headers) = borealis_egress::headers::agent_response_head(head.status, &head.headers)
        .map_err(|_| format!("the invalid status {}", head.status))?;
    let mut reply = http::Response::builder().status(status);
    if let Some(map) = reply.headers_mut() {
        *map = headers;
    }
    Ok(reply)
}

/// Why no agent took the request. A connected session proves the credential
/// is live (revocation ends sessions), so the store is asked only when no
/// instance is connected, to tell "not registered" from "not connected".
/// An agent that is not connected may connect before the next try; one
/// that is not registered will not.
async fn dispatch_error(state: &Forwarder, agent: &AgentRef, err: DispatchError) -> ForwardError {
    let failure = match err {
        DispatchError::NoInstance(_) => {
            match state.credentials.active_credential(CredentialKind::Agent, &agent.team, &agent.name).await {
                Err(err) => {
                    return ForwardError::new(
                        ForwardFailure::Internal,
                        format!("the agent credentials cannot be read: {err}"),
                    );
                }
                Ok(None) => {
                    // Another team's agent of that name is not said to exist.
                    let (name, team) = (&agent.name, &agent.team);
                    let detail = format!(
                        "agent {name:?} is not registered in team {team:?} (borealis agents create {name} --team {team})"
                    );
                    return ForwardError::new(ForwardFailure::UnknownAgent, detail);
                }
                Ok(Some(_)) => ForwardFailure::AgentNotConnected,
            }
        }
        DispatchError::Draining => ForwardFailure::Draining,
        DispatchError::NotTaken(_) => ForwardFailure::NotTaken,
    };
    ForwardError::new(failure, err.to_string())
}

async fn upload_body(
    body: Body,
    outbound: FrameSender,
    request_id: String,
    limit: u64,
    report: tokio::sync::oneshot::Sender<ForwardError>,
) {
    let mut chunks = body.into_data_stream();
    let mut sent = 0u64;
    while let Some(chunk) = chunks.next().await {
        let Ok(chunk) = chunk else {
            // The caller broke off its upload: the request cannot complete.
            let _ = report.send(failed(ErrorCode::Cancelled, "the request body was cut off".into()));
            return;
        };
        sent += chunk.len() as u64;
        if sent > limit {
            let _ = report.send(too_large("request", limit));
            return;
        }
        let mut offset = 0;
        while offset < chunk.len() {
            let end = (offset + MAX_CHUNK_BYTES).min(chunk.len());
            let piece = v1::BodyChunk { data: chunk.slice(offset..end) };
            if outbound.send(frame(&request_id, relay_frame::Frame::RequestBody(piece))).await.is_err() {
                return;
            }
            offset = end;
        }
    }
    let _ = outbound.send(frame(&request_id, relay_frame::Frame::RequestEnd(v1::End {}))).await;
}

/// The agent's response body, read frame by frame as the caller reads.
struct ResponseBody {
    call: ForwardCall,
    _lease: Lease,
    _upload: Option<AbortOnDropHandle<()>>,
    received: u64,
    /// The body's declared length: the caller may stop reading once it has
    /// it all, before the agent's end frame is read.
    expected: Option<u64>,
    limit: u64,
}

impl Drop for ResponseBody {
    fn drop(&mut self) {
        if self.expected == Some(self.received) {
            self.call.body_received();
        }
    }
}

impl ResponseBody {
    fn into_stream(self) -> impl Stream<Item = Result<Bytes, std::io::Error>> + Send + 'static {
        futures_util::stream::unfold(Some(self), |state| async move {
            let mut body = state?;
            let broken = |msg: String| Some((Err(std::io::Error::other(msg)), None));
            // Disjoint fields: the call is read while the lease's session is watched.
            let lost = &body._lease.session().lost;
            let read = tokio::select! {
                read = read(&mut body.call) => read,
                () = lost.cancelled() => return broken(lost_detail(lost, "agent", "mid-response")),
            };
            // The caller has the status already: a violation now breaks the body off.
            let violated = |body: &mut ResponseBody, reason: String| {
                let detail = format!("agent broke the tunnel protocol mid-response: {reason}");
                body.call.violated(&reason);
                broken(detail)
            };
            match read {
                Read::Frame(agent_frame::Frame::ResponseBody(chunk)) => {
                    if chunk.data.len() > MAX_CHUNK_BYTES {
                        let reason = format!(
                            "a ResponseBody chunk of {} bytes, over the limit of {MAX_CHUNK_BYTES}",
                            chunk.data.len()
                        );
                        return violated(&mut body, reason);
                    }
                    body.received += chunk.data.len() as u64;
                    if body.received > body.limit {
                        let reason = format!("more response body than max_response_bytes ({})", body.limit);
                        return violated(&mut body, reason);
                    }
                    Some((Ok(chunk.data), Some(body)))
                }
                Read::Frame(agent_frame::Frame::ResponseEnd(_)) => {
                    body.call.finish();
                    None
                }
                Read::Frame(agent_frame::Frame::Failure(Failure { message, .. })) => {
                    body.call.finish();
                    broken(format!("agent broke off the response: {message}"))
                }
                Read::Frame(other) => {
                    let reason = format!("{} in the middle of the response body", frame_name(Some(&other)));
                    violated(&mut body, reason)
                }
                Read::Violation(reason) => violated(&mut body, reason),
                Read::Ended => violated(&mut body, "it ended the call before ResponseEnd".into()),
                Read::Lost => broken(lost_detail(&body._lease.session().lost, "agent", "mid-response")),
            }
        })
    }
}
