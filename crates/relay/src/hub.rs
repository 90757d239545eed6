//! Live agent sessions, grouped into pools by identifier, and the offers
//! waiting for an agent to take them.
//!
//! To forward a request the relay picks the least-loaded live instance of the
//! identifier. A small request whose body is whole goes down one of the
//! instance's lanes ([`crate::lane`]) when it has one with room. Otherwise,
//! if that instance has a standby `Forward` call idle, the request goes down
//! it at once; else the relay sends an `Offer` on the control stream and
//! waits for the agent to open a call for it. An offer whose instance dies
//! before taking it goes to another instance: nothing was sent upstream yet.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, SystemTime};

use borealis_core::team::AgentRef;
use borealis_protocol::lanes::{LaneSet, LaneViolation};
use borealis_protocol::v1::{self, relay_control};
use prometheus_client::metrics::counter::Counter;
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tokio_util::task::task_tracker::TaskTrackerToken;
use tonic::{Status, Streaming};

use crate::lane::{Lane, LaneBroken, LaneTicket, Outgoing};
use crate::metrics::{AgentLabels, DispatchLabels, Metrics};

/// Most standby calls the relay keeps for one session, whatever it asks.
pub const MAX_STANDBY_CALLS: u32 = 64;

pub type ControlSender = mpsc::Sender<Result<v1::RelayControl, Status>>;
/// Frames to the agent on one `Forward` call. Boxed, so that the channel's
/// first block of slots stays small on the many calls that sit idle.
pub type FrameSender = mpsc::Sender<Box<v1::RelayFrame>>;

/// A frame to the agent on a `Forward` call.
pub fn relay_frame(request_id: &str, frame: v1::relay_frame::Frame) -> Box<v1::RelayFrame> {
    Box::new(v1::RelayFrame { request_id: request_id.to_owned(), frame: Some(frame) })
}

/// One connected agent instance.
pub struct Session {
    pub id: String,
    pub info: SessionInfo,
    pub connected_at: SystemTime,
    last_heartbeat_ms: AtomicI64,
    in_flight: AtomicUsize,
    draining: AtomicBool,
    control: ControlSender,
    /// Idle standby calls, each waiting for a request.
    standby: Mutex<Vec<ForwardCall>>,
    /// The lanes granted, and those open.
    lanes: Mutex<SessionLanes>,
    /// Where the next small request starts looking for a lane with room.
    lane_turn: AtomicUsize,
    /// Fires when the session ends, for whatever reason.
    pub closed: CancellationToken,
    /// Fires when the relay gives up on an agent that stopped answering:
    /// its requests in flight fail at once. (A session that ends in order
    /// lets its requests finish on their own calls.)
    pub lost: CancellationToken,
}

/// What an agent instance said about itself, and where it came from.
pub struct SessionInfo {
    /// The agent, within the team of its credential.
    pub agent: AgentRef,
    pub client_id: String,
    pub instance: String,
    pub version: String,
    pub remote_addr: Option<SocketAddr>,
    pub capacity: u32,
    /// How many standby calls this session may keep open (as granted in
    /// `Welcome`).
    pub standby_calls: u32,
    /// How many lanes this session may open (as granted in `Welcome`).
    pub lanes: u32,
    /// The allow-list the agent reported; `None`: it did not say.
    pub allow_list: Option<borealis_store::ReportedAllowList>,
    /// The agent's connection, closed when the relay gives up on the session.
    pub connection: Option<crate::serve::ConnectionHandle>,
}

impl Session {
    pub fn heartbeat(&self) {
        self.last_heartbeat_ms.store(borealis_store::unix_ms(SystemTime::now()), Ordering::Relaxed);
    }

    pub fn last_heartbeat(&self) -> SystemTime {
        borealis_store::from_unix_ms(self.last_heartbeat_ms.load(Ordering::Relaxed))
    }

    pub fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::Relaxed)
    }

    /// No new work for this session: its standby calls are closed.
    pub fn set_draining(&self) {
        self.draining.store(true, Ordering::Relaxed);
        self.release_standby();
    }

    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Relaxed)
    }

    fn available(&self) -> bool {
        !self.is_draining() && !self.closed.is_cancelled()
    }

    /// Ends the session, telling the agent why with a gRPC status.
    pub fn kick(&self, status: Status) {
        let _ = self.control.try_send(Err(status));
        self.closed.cancel();
    }

    /// Ends a session the agent stopped answering on: its requests in
    /// flight fail at once (they wait on `lost`), and its connection is
    /// closed, so an agent that can still hear learns it now rather than
    /// from its own timer.
    pub fn lose(&self, status: Status) {
        self.lost.cancel();
        for lane in self.open_lanes() {
            lane.end(LaneBroken::Lost("the agent stopped answering heartbeats".into()));
        }
        self.kick(status);
        if let Some(connection) = &self.info.connection {
            connection.close();
        }
    }

    pub async fn send(&self, msg: relay_control::Msg) -> bool {
        self.control.send(Ok(v1::RelayControl { msg: Some(msg) })).await.is_ok()
    }

    /// Sends `msg` if the control queue has room; for messages that must
    /// not wait (cancel, drain).
    fn send_now(&self, msg: relay_control::Msg) {
        let _ = self.control.try_send(Ok(v1::RelayControl { msg: Some(msg) }));
    }

    /// Keeps an agent's standby call until a request needs it. Checked under
    /// the same lock that [`Session::release_standby`] takes after the
    /// session stops being available, so no call is kept past that.
    fn park(&self, call: ForwardCall) -> Result<(), Status> {
        let mut standby = self.standby.lock().expect("standby lock");
        let refusal = if !self.available() {
            Status::unavailable("this session is draining or closed")
        } else if standby.len() >= self.info.standby_calls as usize {
            Status::resource_exhausted(format!("this session may keep {} standby calls", self.info.standby_calls))
        } else {
            standby.push(call);
            return Ok(());
        };
        drop(standby);
        call.discard();
        Err(refusal)
    }

    /// An idle standby call whose agent side is still open.
    fn take_standby(&self) -> Option<ForwardCall> {
        loop {
            let call = self.standby.lock().expect("standby lock").pop()?;
            if !call.is_closed() {
                return Some(call);
            }
        }
    }

    /// Closes every idle standby call: the agent is told to end each.
    fn release_standby(&self) {
        let released = std::mem::take(&mut *self.standby.lock().expect("standby lock"));
        drop(released);
    }

    pub fn standby_idle(&self) -> usize {
        self.standby.lock().expect("standby lock").len()
    }

    /// Opens lane `index` of this session, if it was granted and is not
    /// open: the lane, and the queue its writer sends from.
    pub fn open_lane(&self, index: u32) -> Result<(Arc<Lane>, mpsc::UnboundedReceiver<Outgoing>), LaneViolation> {
        let mut lanes = self.lanes.lock().expect("lanes lock");
        lanes.granted.open(index)?;
        let (lane, outgoing) = Lane::new(index, self.info.agent.to_string(), self.id.clone());
        lanes.open.push(lane.clone());
        Ok((lane, outgoing))
    }

    /// A lane ended: no request goes down it any more, and its index may
    /// be opened again.
    pub fn close_lane(&self, lane: &Arc<Lane>) {
        let mut lanes = self.lanes.lock().expect("lanes lock");
        lanes.open.retain(|open| !Arc::ptr_eq(open, lane));
        lanes.granted.close(lane.index);
    }

    pub fn open_lanes(&self) -> Vec<Arc<Lane>> {
        self.lanes.lock().expect("lanes lock").open.clone()
    }

    pub fn lanes_open(&self) -> usize {
        self.lanes.lock().expect("lanes lock").open.len()
    }

    fn has_open_lane(&self) -> bool {
        self.lanes_open() > 0
    }

    /// Sends a small request down a lane with room, taking them in turn;
    /// leaves the head when no lane has room (or none is open).
    fn send_on_lane(&self, request_id: &str, head: &mut Option<v1::RequestHead>) -> Option<LaneTicket> {
        let lanes = self.lanes.lock().expect("lanes lock");
        let count = lanes.open.len();
        let start = self.lane_turn.fetch_add(1, Ordering::Relaxed);
        (0..count).find_map(|i| lanes.open[(start + i) % count].send(request_id, head))
    }
}

/// A session's lanes: those granted (each opened at most once at a time)
/// and those open.
struct SessionLanes {
    granted: LaneSet,
    open: Vec<Arc<Lane>>,
}

/// How far the agent's answer on a call has got, which decides how the call
/// is closed and what may still arrive on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Answer {
    /// Not finished (or given up on): closing the call sends `Cancel`
    /// first, and whatever the agent sends after it is read and dropped.
    Open,
    /// The caller has every byte the response's `Content-Length` declared
    /// and stopped reading: the agent's `ResponseEnd` may still come, and
    /// nothing else.
    BodyReceived,
    /// The agent sent its final frame (`ResponseEnd`, `Failure`, or a
    /// complete `ResponseHead`): any frame after it breaks the protocol.
    Done,
}

/// One `Forward` call from the relay's side. However it ends (complete,
/// failed, abandoned by the caller, or a standby call never used), it closes
/// in the order HTTP/2 needs: a `Cancel` first if the exchange did not
/// finish, then the agent's side is read to its end, and only then is ours
/// ended, in the background.
///
/// Ending ours first makes the server reset the stream; the agent's
/// end-of-stream then arrives on a closed stream and h2 resets again. h2
/// counts those resets and closes the connection, the whole tunnel, after
/// 1024 of them (its rapid-reset guard).
///
/// A call on which the agent broke the protocol ([`ForwardCall::violated`])
/// ends, in the same order, with `INVALID_ARGUMENT` naming the violation.
pub struct ForwardCall {
    inbound: Option<Streaming<v1::AgentFrame>>,
    outbound: Option<FrameSender>,
    /// The request on this call; empty for a standby call not yet used.
    pub request_id: String,
    /// The identifier and session the call belongs to, for logs.
    pub agent_id: String,
    pub session_id: String,
    /// How far the agent's answer has got.
    pub answer: Answer,
    /// The status the relay ends its side with; `OK` when unset.
    verdict: Arc<OnceLock<Status>>,
    /// A frame read after the answer was done, checked when the call closes.
    stray: Option<v1::AgentFrame>,
    /// Where the call goes to be read to its end once it is dropped.
    closer: Closer,
}

/// The hub's end for calls whose request is done: each is read to its end
/// (or for 10 s) by a task the hub owns, not one spawned by `Drop`.
#[derive(Clone)]
pub struct Closer(mpsc::UnboundedSender<Closing>);

/// What is left of a dropped call.
struct Closing {
    inbound: Streaming<v1::AgentFrame>,
    outbound: FrameSender,
    answer: Answer,
    stray: Option<v1::AgentFrame>,
    verdict: Arc<OnceLock<Status>>,
    agent_id: String,
    session_id: String,
    request_id: String,
}

impl ForwardCall {
    pub fn new(
        request_id: String,
        agent_id: String,
        session_id: String,
        inbound: Streaming<v1::AgentFrame>,
        outbound: FrameSender,
        closer: Closer,
    ) -> Self {
        Self {
            closer,
            inbound: Some(inbound),
            outbound: Some(outbound),
            request_id,
            agent_id,
            session_id,
            answer: Answer::Open,
            verdict: Arc::default(),
            stray: None,
        }
    }

    pub fn inbound(&mut self) -> &mut Streaming<v1::AgentFrame> {
        self.inbound.as_mut().expect("present until drop")
    }

    /// Where to send this call's frames to the agent.
    pub fn sender(&self) -> FrameSender {
        self.outbound.clone().expect("present until drop")
    }

    /// The status the relay's side of the call ends with, once it ends:
    /// set when the agent broke the protocol.
    pub fn verdict(&self) -> Arc<OnceLock<Status>> {
        self.verdict.clone()
    }

    /// The agent sent its final frame.
    pub fn finish(&mut self) {
        self.answer = Answer::Done;
    }

    /// The caller has the whole body its `Content-Length` declared.
    pub fn body_received(&mut self) {
        if self.answer == Answer::Open && self.verdict.get().is_none() {
            self.answer = Answer::BodyReceived;
        }
    }

    /// The agent broke the tunnel protocol on this call: logged at warn with
    /// the agent, session and request, and the call is cancelled and ends
    /// with `INVALID_ARGUMENT` naming `reason`.
    pub fn violated(&mut self, reason: &str) {
        self.answer = Answer::Open;
        violation(&self.agent_id, &self.session_id, &self.request_id, reason, &self.verdict);
    }

    /// Whether the agent's side is gone (its stream was reset or closed).
    fn is_closed(&self) -> bool {
        self.outbound.as_ref().is_none_or(|o| o.is_closed())
    }

    /// For a finished exchange: if the agent's side has already ended, ends
    /// ours now, sparing the background task of `drop`.
    pub fn close_if_ended(&mut self) {
        use futures_util::FutureExt;
        match self.inbound().message().now_or_never() {
            Some(Ok(None)) => {
                self.inbound = None;
                self.outbound = None;
            }
            // Checked when the call closes, like any frame after the end.
            Some(Ok(Some(frame))) => self.stray = Some(frame),
            _ => {}
        }
    }

    /// Drops a call that was refused with a status: the status ends it.
    fn discard(mut self) {
        self.inbound = None;
        self.outbound = None;
    }
}

/// Logs a protocol violation and sets the status its call ends with.
fn violation(agent_id: &str, session_id: &str, request_id: &str, reason: &str, verdict: &OnceLock<Status>) {
    // The reason may quote what the agent sent: a `&str` value is escaped.
    tracing::warn!(
        agent = agent_id,
        session = session_id,
        request = request_id,
        reason,
        "agent broke the tunnel protocol"
    );
    let _ = verdict.set(Status::invalid_argument(format!("protocol violation: {reason}")));
}

/// Whether `frame` may still arrive once the answer has got to `answer`;
/// `None` when it may, else what is wrong with it.
fn after_answer(answer: Answer, end_pending: &mut bool, request_id: &str, frame: &v1::AgentFrame) -> Option<String> {
    use v1::agent_frame::Frame;
    match answer {
        Answer::Open => None,
        Answer::BodyReceived
            if *end_pending && frame.request_id == request_id && matches!(frame.frame, Some(Frame::ResponseEnd(_))) =>
        {
            *end_pending = false;
            None
        }
        Answer::BodyReceived | Answer::Done => {
            Some(format!("{} after the end of the answer", frame_name(frame.frame.as_ref())))
        }
    }
}

/// The name of an agent frame's kind, for logs and statuses.
pub fn frame_name(frame: Option<&v1::agent_frame::Frame>) -> &'static str {
    use v1::agent_frame::Frame;
    match frame {
        Some(Frame::Accept(_)) => "Accept",
        Some(Frame::Standby(_)) => "Standby",
        Some(Frame::ResponseHead(_)) => "ResponseHead",
        Some(Frame::ResponseBody(_)) => "ResponseBody",
        Some(Frame::ResponseEnd(_)) => "ResponseEnd",
        Some(Frame::Failure(_)) => "Failure",
        None => "a frame with no content",
    }
}

fn cancel_frame(request_id: &str) -> Box<v1::RelayFrame> {
    let cancel = v1::Cancel { request_id: request_id.to_owned(), reason: v1::ErrorCode::Cancelled as i32 };
    relay_frame(request_id, v1::relay_frame::Frame::Cancel(cancel))
}

impl Drop for ForwardCall {
    fn drop(&mut self) {
        let (Some(inbound), Some(outbound)) = (self.inbound.take(), self.outbound.take()) else { return };
        if self.answer == Answer::Open {
            let _ = outbound.try_send(cancel_frame(&self.request_id));
        }
        let _ = self.closer.0.send(Closing {
            inbound,
            outbound,
            answer: self.answer,
            stray: self.stray.take(),
            verdict: self.verdict.clone(),
            agent_id: std::mem::take(&mut self.agent_id),
            session_id: std::mem::take(&mut self.session_id),
            request_id: self.request_id.clone(),
        });
    }
}

impl Closing {
    /// Reads what the agent still sends on the call, checking each frame
    /// against the rules for frames after the answer, for 10 s at most.
    async fn finish(self) {
        let Closing { mut inbound, outbound, answer, stray, verdict, agent_id, session_id, request_id } = self;
        let rest = async {
            let mut end_pending = answer == Answer::BodyReceived;
            let mut next = stray;
            loop {
                let frame = match next.take() {
                    Some(frame) => frame,
                    None => match inbound.message().await {
                        Ok(Some(frame)) => frame,
                        _ => break,
                    },
                };
                // After a violation, or a cancel, the rest is dropped unread.
                if verdict.get().is_some() {
                    continue;
                }
                if let Some(reason) = after_answer(answer, &mut end_pending, &request_id, &frame) {
                    violation(&agent_id, &session_id, &request_id, &reason, &verdict);
                    let _ = outbound.try_send(cancel_frame(&request_id));
                }
            }
        };
        let _ = tokio::time::timeout(Duration::from_secs(10), rest).await;
        drop(outbound);
    }
}

struct Pending {
    session: Arc<Session>,
    accept: oneshot::Sender<ForwardCall>,
}

/// Counts a request against its session (and the relay) while it lives.
pub struct Lease {
    session: Arc<Session>,
    /// Counts the request in the hub's, which drain waits for.
    _request: TaskTrackerToken,
}

impl Lease {
    pub fn session(&self) -> &Arc<Session> {
        &self.session
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        self.session.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A request's head is taken only when it goes down a lane, which ends the
/// dispatch.
const TAKEN_ONLY_BY_A_LANE: &str = "the head is taken only by a lane";

/// How a dispatched request travels.
pub enum Dispatched {
    /// Down a lane; its response may come back on a `Forward` call instead
    /// (a divert), taken through `diverted`.
    Lane(LaneDispatch),
    /// On a call of its own, which gets the head first.
    Call(Box<ForwardCall>, v1::RequestHead),
}

/// A request sent down a lane.
pub struct LaneDispatch {
    pub ticket: LaneTicket,
    /// The agent's `Forward` call for the response, if it diverts it.
    pub diverted: oneshot::Receiver<ForwardCall>,
    /// Keeps the way open for that call while the request lives.
    _open: OpenDivert,
}

/// Removes a lane request's entry for a divert from the hub once the
/// request is done: a call for it later is refused as for an expired offer.
struct OpenDivert {
    hub: Arc<Hub>,
    request_id: String,
}

impl Drop for OpenDivert {
    fn drop(&mut self) {
        self.hub.pending.lock().expect("hub lock").remove(&self.request_id);
    }
}

#[derive(Debug, thiserror::Error)]
pub enum DispatchError {
    #[error("no instance of agent {0:?} is connected")]
    NoInstance(String),
    #[error("agent {0:?} did not take the request in time")]
    NotTaken(String),
    #[error("the relay is shutting down")]
    Draining,
}

pub struct Hub {
    pub relay_instance_id: String,
    pools: Mutex<HashMap<AgentRef, Vec<Arc<Session>>>>,
    pending: Mutex<HashMap<String, Pending>>,
    rotation: AtomicUsize,
    /// Request ids are this relay's instance id and a sequence number:
    /// unique without a random draw per request.
    next_request: AtomicU64,
    /// Requests in flight through any agent (as tokens), which drain waits for.
    requests: TaskTracker,
    /// Session watchdogs and closing calls.
    tasks: TaskTracker,
    closer: Closer,
    /// Ends the closer's loop at shutdown.
    stop: CancellationToken,
    draining: AtomicBool,
    metrics: Arc<Metrics>,
    /// Requests handed over down standby calls and as offers: looked up
    /// once, not per request.
    by_standby: Counter,
    by_offer: Counter,
    by_lane: Counter,
    /// Most lanes a session may open (`agent_lanes`).
    max_lanes: u32,
}

impl Hub {
    pub fn new(metrics: Arc<Metrics>, max_lanes: u32) -> Arc<Self> {
        let dispatches = |way| metrics.agent_dispatches.get_or_create(&DispatchLabels { way }).clone();
        let (by_standby, by_offer, by_lane) = (dispatches("standby"), dispatches("offer"), dispatches("lane"));
        let (closing, mut closings) = mpsc::unbounded_channel::<Closing>();
        let (tasks, stop) = (TaskTracker::new(), CancellationToken::new());
        let (owner, ended) = (tasks.clone(), stop.clone());
        tasks.spawn(async move {
            loop {
                tokio::select! {
                    closing = closings.recv() => match closing {
                        Some(closing) => { owner.spawn(closing.finish()); }
                        None => return,
                    },
                    () = ended.cancelled() => return,
                }
            }
        });
        Arc::new(Self {
            relay_instance_id: uuid::Uuid::new_v4().to_string(),
            pools: Mutex::default(),
            pending: Mutex::default(),
            rotation: AtomicUsize::new(0),
            next_request: AtomicU64::new(1),
            requests: TaskTracker::new(),
            tasks,
            closer: Closer(closing),
            stop,
            draining: AtomicBool::new(false),
            metrics,
            by_standby,
            by_offer,
            by_lane,
            max_lanes,
        })
    }

    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Relaxed)
    }

    /// How many lanes a session is granted when its hello asks for `asked`.
    pub fn lanes_for(&self, asked: u32) -> u32 {
        LaneSet::grant(asked.min(self.max_lanes)).granted()
    }

    pub fn register(&self, info: SessionInfo, control: ControlSender) -> Arc<Session> {
        let granted = LaneSet::grant(info.lanes);
        let session = Arc::new(Session {
            id: uuid::Uuid::new_v4().to_string(),
            info,
            connected_at: SystemTime::now(),
            last_heartbeat_ms: AtomicI64::new(borealis_store::unix_ms(SystemTime::now())),
            in_flight: AtomicUsize::new(0),
            draining: AtomicBool::new(false),
            control,
            standby: Mutex::default(),
            lanes: Mutex::new(SessionLanes { granted, open: Vec::new() }),
            lane_turn: AtomicUsize::new(0),
            closed: CancellationToken::new(),
            lost: CancellationToken::new(),
        });
        let mut pools = self.pools.lock().expect("hub lock");
        let pool = pools.entry(session.info.agent.clone()).or_default();
        pool.push(session.clone());
        self.gauge(&session.info.agent).set(pool.len() as i64);
        session
    }

    pub fn unregister(&self, session: &Arc<Session>) {
        session.closed.cancel();
        session.release_standby();
        let mut pools = self.pools.lock().expect("hub lock");
        if let Some(pool) = pools.get_mut(&session.info.agent) {
            pool.retain(|s| !Arc::ptr_eq(s, session));
            self.gauge(&session.info.agent).set(pool.len() as i64);
            if pool.is_empty() {
                pools.remove(&session.info.agent);
            }
        }
    }

    fn gauge(&self, agent: &AgentRef) -> prometheus_client::metrics::gauge::Gauge {
        self.metrics.agent_sessions.get_or_create(&AgentLabels::of(agent)).clone()
    }

    /// Whether an instance of `agent` here takes new work (one that is
    /// draining does not: another replica may hold one that does).
    pub fn has_instance(&self, agent: &AgentRef) -> bool {
        self.pools.lock().expect("hub lock").get(agent).is_some_and(|pool| pool.iter().any(|s| s.available()))
    }

    /// Asks the agents of `sessions` to finish what they are doing and
    /// connect again (through the balancer, to whichever replica it picks);
    /// they take no new work here meanwhile.
    pub fn ask_to_leave(&self, sessions: &[Arc<Session>], reason: &str, grace: Duration) {
        let drain =
            v1::Drain { reason: reason.to_owned(), grace_ms: grace.as_millis().min(u128::from(u32::MAX)) as u32 };
        for session in sessions {
            session.send_now(relay_control::Msg::Drain(drain.clone()));
            session.set_draining();
        }
    }

    /// The live sessions of `agent`.
    pub fn instances(&self, agent: &AgentRef) -> Vec<Arc<Session>> {
        self.pools.lock().expect("hub lock").get(agent).cloned().unwrap_or_default()
    }

    /// All live sessions, by agent.
    pub fn sessions(&self) -> HashMap<AgentRef, Vec<Arc<Session>>> {
        self.pools.lock().expect("hub lock").clone()
    }

    /// Ends every session `ends` picks, telling each agent `status`.
    /// Returns how many.
    fn end_where(&self, status: &Status, ends: impl Fn(&Session) -> bool) -> usize {
        let ending: Vec<Arc<Session>> =
            self.pools.lock().expect("hub lock").values().flatten().filter(|s| ends(s)).cloned().collect();
        for session in &ending {
            session.kick(status.clone());
            self.unregister(session);
        }
        ending.len()
    }

    /// Ends every session of `agent` (revocation). Returns how many.
    pub fn disconnect(&self, agent: &AgentRef, status: Status) -> usize {
        self.end_where(&status, |session| session.info.agent == *agent)
    }

    /// Ends the sessions older than `listed_at` whose credential is not
    /// among `active`, the credentials live at `listed_at`: those revoked
    /// through another relay replica. Returns how many.
    pub fn end_revoked(&self, active: &HashSet<String>, listed_at: SystemTime) -> usize {
        self.end_where(&Status::unauthenticated("the credential was revoked"), |session| {
            session.connected_at < listed_at && !active.contains(&session.info.client_id)
        })
    }

    /// Picks the least-loaded available instance, rotating among equals so
    /// that a pool shares even a sequential load.
    fn pick(&self, agent: &AgentRef, skip: &[String]) -> Option<Arc<Session>> {
        let pools = self.pools.lock().expect("hub lock");
        let pool = pools.get(agent)?;
        let start = self.rotation.fetch_add(1, Ordering::Relaxed);
        let mut best: Option<&Arc<Session>> = None;
        for i in 0..pool.len() {
            let candidate = &pool[(start + i) % pool.len()];
            if !candidate.available() || skip.contains(&candidate.id) {
                continue;
            }
            if best.is_none_or(|b| candidate.in_flight() < b.in_flight()) {
                best = Some(candidate);
            }
        }
        best.cloned()
    }

    /// Hands a request to an instance of `agent`: down a lane if `small`
    /// and the instance has one with room, else down an idle standby call if
    /// it has one, else as an offer, waiting until it is taken and trying
    /// the next instance when one is lost on the way. Returns the request's
    /// id with how it travels.
    pub async fn dispatch(
        self: &Arc<Self>,
        agent: &AgentRef,
        head: v1::RequestHead,
        small: bool,
        take_within: Duration,
    ) -> Result<(Lease, String, Dispatched), DispatchError> {
        let timeout_ms = head.timeout_ms;
        let mut head = Some(head);
        if self.is_draining() {
            return Err(DispatchError::Draining);
        }
        let deadline = tokio::time::Instant::now() + take_within;
        let mut tried = Vec::new();
        loop {
            let session = self.pick(agent, &tried).ok_or_else(|| DispatchError::NoInstance(agent.to_string()))?;
            session.in_flight.fetch_add(1, Ordering::Relaxed);
            let lease = Lease { session: session.clone(), _request: self.requests.token() };
            let request_id =
                format!("{}-{}", self.relay_instance_id, self.next_request.fetch_add(1, Ordering::Relaxed));
            if small && session.has_open_lane() {
                // The way for a divert is open before the request can reach
                // the agent, which may open its call before its answer says so.
                let (accept, diverted) = oneshot::channel();
                let pending = Pending { session: session.clone(), accept };
                self.pending.lock().expect("hub lock").insert(request_id.clone(), pending);
                let open = OpenDivert { hub: self.clone(), request_id: request_id.clone() };
                if let Some(ticket) = session.send_on_lane(&request_id, &mut head) {
                    self.by_lane.inc();
                    let lane = LaneDispatch { ticket, diverted, _open: open };
                    return Ok((lease, request_id, Dispatched::Lane(lane)));
                }
            }
            if let Some(mut call) = session.take_standby() {
                call.request_id = request_id.clone();
                self.by_standby.inc();
                return Ok((
                    lease,
                    request_id,
                    Dispatched::Call(Box::new(call), head.take().expect(TAKEN_ONLY_BY_A_LANE)),
                ));
            }
            let (accept, taken) = oneshot::channel();
            self.pending
                .lock()
                .expect("hub lock")
                .insert(request_id.clone(), Pending { session: session.clone(), accept });
            let offer = relay_control::Msg::Offer(v1::Offer { request_id: request_id.clone(), timeout_ms });
            let outcome = tokio::select! {
                sent = session.send(offer) => if sent {
                    tokio::select! {
                        call = taken => call.ok(),
                        () = session.closed.cancelled() => None,
                        () = tokio::time::sleep_until(deadline) => {
                            self.pending.lock().expect("hub lock").remove(&request_id);
                            // The agent may still be working on it: tell it to stop.
                            let cancel = v1::Cancel { request_id, reason: v1::ErrorCode::Timeout as i32 };
                            session.send_now(relay_control::Msg::Cancel(cancel));
                            return Err(DispatchError::NotTaken(agent.to_string()));
                        }
                    }
                } else { None },
                () = tokio::time::sleep_until(deadline) => {
                    self.pending.lock().expect("hub lock").remove(&request_id);
                    return Err(DispatchError::NotTaken(agent.to_string()));
                }
            };
            match outcome {
                Some(call) => {
                    self.by_offer.inc();
                    return Ok((
                        lease,
                        request_id,
                        Dispatched::Call(Box::new(call), head.take().expect(TAKEN_ONLY_BY_A_LANE)),
                    ));
                }
                None => {
                    self.pending.lock().expect("hub lock").remove(&request_id);
                    tracing::debug!(agent = %agent, session = %session.id, "instance lost before taking an offer; trying another");
                    tried.push(session.id.clone());
                }
            }
        }
    }

    /// Hands an agent's `Forward` call to the request waiting for it, if the
    /// offer is still open and was made to this agent's session.
    pub fn take(&self, session_id: &str, agent: &AgentRef, call: ForwardCall) -> Result<(), Status> {
        let request_id = call.request_id.clone();
        let mut pending = self.pending.lock().expect("hub lock");
        let refusal = match pending.get(&request_id) {
            None => Some(Status::not_found(format!("no open offer {request_id}: it expired or was taken"))),
            Some(p) if p.session.id != session_id || p.session.info.agent != *agent => {
                Some(Status::permission_denied(format!("offer {request_id} was not made to this session")))
            }
            Some(_) => None,
        };
        if let Some(status) = refusal {
            drop(pending);
            call.discard();
            return Err(status);
        }
        let waiting = pending.remove(&request_id).expect("checked above");
        drop(pending);
        waiting.accept.send(call).map_err(|call| {
            call.discard();
            Status::cancelled("the request was abandoned before it was taken")
        })
    }

    /// Keeps an agent's standby call for the next request to its session.
    pub fn park(&self, session_id: &str, agent: &AgentRef, call: ForwardCall) -> Result<(), Status> {
        // Sessions are marked draining when the relay drains; this also
        // covers one that registered while it began.
        if self.is_draining() {
            call.discard();
            return Err(Status::unavailable("the relay is shutting down"));
        }
        match self.session(agent, session_id) {
            Ok(session) => session.park(call),
            Err(status) => {
                call.discard();
                Err(status)
            }
        }
    }

    /// The live session `session_id` of `agent`.
    pub fn session(&self, agent: &AgentRef, session_id: &str) -> Result<Arc<Session>, Status> {
        self.pools
            .lock()
            .expect("hub lock")
            .get(agent)
            .and_then(|pool| pool.iter().find(|s| s.id == session_id).cloned())
            .ok_or_else(|| Status::not_found(format!("agent {agent} has no live session {session_id}")))
    }

    /// Shutdown, first half: refuse new work, tell agents to drain, and wait
    /// up to `grace` for requests in flight.
    pub async fn drain(&self, grace: Duration) {
        self.draining.store(true, Ordering::Relaxed);
        let sessions: Vec<Arc<Session>> = self.sessions().into_values().flatten().collect();
        self.ask_to_leave(&sessions, "relay shutting down", grace);
        self.requests.close();
        if tokio::time::timeout(grace, self.requests.wait()).await.is_err() {
            tracing::warn!(in_flight = self.requests.len(), "shutdown grace over with requests in flight");
        }
    }

    /// Shutdown, second half: end every session. The grace is over, so
    /// what is still unanswered on a lane fails now.
    pub fn close_all(&self) {
        for session in self.sessions().into_values().flatten() {
            for lane in session.open_lanes() {
                lane.end(LaneBroken::Lost("the relay shut down".into()));
            }
        }
        self.end_where(&Status::unavailable("relay shut down"), |_| true);
    }

    /// Where calls go to be closed; every `ForwardCall` takes one.
    pub fn closer(&self) -> Closer {
        self.closer.clone()
    }

    /// Runs a session's task (its watchdog) as one the hub owns.
    pub fn spawn_session_task(&self, task: impl std::future::Future<Output = ()> + Send + 'static) {
        self.tasks.spawn(task);
    }

    /// Shutdown, last: waits for session tasks and closing calls (each ends
    /// within 10 s once its session is closed).
    pub async fn close(&self) {
        self.stop.cancel();
        self.tasks.close();
        self.tasks.wait().await;
    }
}
