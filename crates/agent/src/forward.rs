//! One forwarded request: take the offer (or receive it on a standby call),
//! check the destination, call it, and stream the reply back, stopping as
//! soon as the relay cancels or the deadline passes.

use std::sync::Arc;
use std::time::{Duration, Instant};

use borealis_egress::reqwest;
use borealis_protocol::MAX_CHUNK_BYTES;
use borealis_protocol::v1::{self, ErrorCode, agent_frame, relay_frame};
use bytes::Bytes;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;

use crate::Agent;
use crate::link::SessionLink;
use crate::upstream::{self, Answered, Deadline, Stop};

pub(crate) type Frames = mpsc::Sender<v1::AgentFrame>;

pub(crate) fn frame(request_id: &str, frame: agent_frame::Frame) -> v1::AgentFrame {
    v1::AgentFrame { request_id: request_id.to_owned(), frame: Some(frame) }
}

fn failure(request_id: &str, code: ErrorCode, message: impl Into<String>) -> v1::AgentFrame {
    frame(request_id, agent_frame::Frame::Failure(v1::Failure::new(code, message)))
}

/// Counts a request in flight while it lives; shutdown waits for none.
pub(crate) struct InFlight(Arc<Agent>);

impl InFlight {
    pub(crate) fn new(agent: &Arc<Agent>) -> Self {
        agent.metrics.in_flight.inc();
        Self(agent.clone())
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.metrics.in_flight.dec();
        self.0.idle.notify_waiters();
    }
}

/// Why a request did not complete.
pub(crate) struct Failure {
    /// A failure code's slug, or `cancelled`, `relay-gone`, `refused`.
    pub(crate) error: &'static str,
    pub(crate) detail: Option<String>,
}

impl Failure {
    pub(crate) fn bare(error: &'static str) -> Self {
        Self { error, detail: None }
    }
}

impl From<Stop> for Failure {
    fn from(stop: Stop) -> Self {
        match stop {
            Stop::Cancelled => Failure::bare("cancelled"),
            Stop::Failed(code, message) => Failure { error: code.slug(), detail: Some(message) },
        }
    }
}

/// How one request went: its log line and its metrics label.
#[derive(Default)]
pub(crate) struct Report {
    pub(crate) method: Option<String>,
    pub(crate) url: Option<String>,
    /// The destination's status, once its reply head arrived.
    pub(crate) status: Option<u16>,
    pub(crate) failure: Option<Failure>,
}

impl Report {
    /// What a request's head says, before anything is done with it.
    pub(crate) fn of(head: &v1::RequestHead) -> Self {
        Self { method: Some(head.method.clone()), url: Some(loggable_url(&head.url)), ..Self::default() }
    }
}

/// One line per request at info, which a relay's log line for the same
/// request id can be matched with. Its strings carry what the relay sent,
/// so they are `&str` values (escaped in text).
pub(crate) fn done(agent: &Agent, request_id: &str, report: Report, started: Instant) {
    let (error, detail) = match &report.failure {
        Some(failure) => (Some(failure.error), failure.detail.as_deref()),
        None => (None, None),
    };
    tracing::info!(
        request = request_id,
        method = report.method.as_deref(),
        url = report.url.as_deref(),
        status = report.status,
        error,
        detail,
        elapsed_ms = started.elapsed().as_millis() as u64,
        "request done"
    );
    match (error, report.status) {
        (Some(error), _) => agent.metrics.count(error),
        (None, Some(status)) => agent.metrics.count(format!("{}xx", status / 100)),
        (None, None) => agent.metrics.count("internal"),
    }
}

/// The URL as logged: without user info, query and fragment, where
/// templated secrets usually sit (the agent cannot know which values are
/// secret). A query is shown as `?…`.
pub(crate) fn loggable_url(raw: &str) -> String {
    let Ok(mut url) = url::Url::parse(raw) else {
        return "(not a URL)".into();
    };
    let _ = url.set_username("");
    let _ = url.set_password(None);
    url.set_fragment(None);
    let had_query = url.query().is_some();
    url.set_query(None);
    let mut shown = String::from(url);
    if had_query {
        shown.push_str("?…");
    }
    shown
}

/// Opens a `Forward` call whose first frame is `first`.
pub(crate) async fn open_call(
    link: &SessionLink,
    first: v1::AgentFrame,
) -> Result<(Frames, tonic::Streaming<v1::RelayFrame>), tonic::Status> {
    let (frames, outbound) = mpsc::channel::<v1::AgentFrame>(16);
    let _ = frames.send(first).await;
    let mut call = tonic::Request::new(ReceiverStream::new(outbound));
    link.authorize(&mut call);
    let inbound = link.client().forward(call).await?.into_inner();
    Ok((frames, inbound))
}

/// Takes an offer: opens the request's own call, naming the offer.
pub async fn handle_offer(agent: Arc<Agent>, link: Arc<SessionLink>, offer: v1::Offer, cancel: CancellationToken) {
    let request_id = offer.request_id;
    let started = Instant::now();
    let in_flight = InFlight::new(&agent);
    let accept = frame(&request_id, agent_frame::Frame::Accept(v1::Accept { session_id: link.session_id.clone() }));
    let report = match open_call(&link, accept).await {
        Err(status) => Report {
            failure: Some(Failure { error: "refused", detail: Some(status.message().to_owned()) }),
            ..Report::default()
        },
        Ok((frames, mut inbound)) => match inbound.message().await {
            Ok(Some(v1::RelayFrame { frame: Some(relay_frame::Frame::RequestHead(head)), .. })) => {
                serve(&agent, &request_id, head, frames, inbound, cancel).await
            }
            _ => Report { failure: Some(Failure::bare("relay-gone")), ..Report::default() },
        },
    };
    drop(in_flight);
    link.cancels.lock().expect("cancels lock").remove(&request_id);
    done(&agent, &request_id, report, started);
}

/// The standby calls of one session: a few at the start, one more each time
/// a request comes as an offer (none was idle), up to what both the relay
/// granted and `--standby-calls` allow.
pub struct StandbyPool {
    slots: Arc<Semaphore>,
    kept: u32,
    most: u32,
}

impl StandbyPool {
    /// Starts keeping calls for the session. A relay that keeps none grants
    /// none; every request then comes as an offer.
    pub fn start(agent: &Arc<Agent>, link: &Arc<SessionLink>, granted: u32) -> Self {
        let most = granted.min(agent.config.standby_calls);
        let kept = most.min(borealis_protocol::STANDBY_CALLS_AT_START);
        let slots = Arc::new(Semaphore::new(kept as usize));
        if most > 0 {
            tokio::spawn(keep_standby(agent.clone(), link.clone(), slots.clone()));
        }
        Self { slots, kept, most }
    }

    /// A request came as an offer: keep one more call, unless draining.
    pub fn grow(&mut self, link: &SessionLink) {
        if self.kept < self.most && !link.draining.is_cancelled() {
            self.kept += 1;
            self.slots.add_permits(1);
        }
    }

    /// Done once every call has ended unused or taken its request (which
    /// is then counted in flight).
    pub fn closed(&self) -> impl Future<Output = ()> + Send + 'static {
        let (slots, kept) = (self.slots.clone(), self.kept);
        async move {
            let _ = slots.acquire_many(kept).await;
        }
    }
}

/// Keeps `slots` standby calls open for the session until it drains or
/// ends: whenever one takes a request, another is opened in its place.
async fn keep_standby(agent: Arc<Agent>, link: Arc<SessionLink>, slots: Arc<Semaphore>) {
    loop {
        let slot = tokio::select! {
            slot = slots.clone().acquire_owned() => slot.expect("the standby slots are never closed"),
            () = link.draining.cancelled() => return,
        };
        tokio::spawn(stand_by(agent.clone(), link.clone(), slot));
    }
}

/// How long a standby call the relay refused keeps its slot, so that the
/// keeper does not spin against a relay that keeps refusing.
const STANDBY_RETRY: Duration = Duration::from_secs(1);

/// One standby call: opened in advance, it waits for the relay to send a
/// request down it, then serves that request like any other. Its slot is
/// given back as soon as the request arrives (counted in flight first, so
/// that a drain waiting for both misses nothing).
async fn stand_by(agent: Arc<Agent>, link: Arc<SessionLink>, slot: OwnedSemaphorePermit) {
    let standby = v1::AgentFrame {
        request_id: String::new(),
        frame: Some(agent_frame::Frame::Standby(v1::Standby { session_id: link.session_id.clone() })),
    };
    let opened = tokio::select! {
        opened = open_call(&link, standby) => opened,
        () = link.ended.cancelled() => return,
    };
    let (frames, mut inbound) = match opened {
        Ok(call) => call,
        Err(status) => {
            tracing::debug!(
                code = format!("{:?}", status.code()).as_str(),
                reason = status.message(),
                "the relay did not take a standby call"
            );
            tokio::select! {
                () = tokio::time::sleep(STANDBY_RETRY) => {}
                () = link.draining.cancelled() => {}
            }
            return;
        }
    };
    let first = tokio::select! {
        first = inbound.message() => first,
        () = link.ended.cancelled() => return,
    };
    match first {
        Ok(Some(v1::RelayFrame { request_id, frame: Some(relay_frame::Frame::RequestHead(head)) })) => {
            let started = Instant::now();
            let in_flight = InFlight::new(&agent);
            drop(slot);
            let report = serve(&agent, &request_id, head, frames, inbound, CancellationToken::new()).await;
            drop(in_flight);
            done(&agent, &request_id, report, started);
        }
        // Closed unused (a cancel, or the relay ending its side): end ours
        // first, then read theirs to its end, the order HTTP/2 needs.
        Ok(Some(_)) | Ok(None) => {
            drop(frames);
            let rest = async { while let Ok(Some(_)) = inbound.message().await {} };
            let _ = tokio::time::timeout(CLOSE_WAIT, rest).await;
        }
        Err(_) => {}
    }
}

/// Serves one request whose head has arrived on its call.
async fn serve(
    agent: &Arc<Agent>,
    request_id: &str,
    head: v1::RequestHead,
    frames: Frames,
    inbound: tonic::Streaming<v1::RelayFrame>,
    cancel: CancellationToken,
) -> Report {
    let mut report = Report::of(&head);
    let deadline = Deadline::in_ms(head.timeout_ms);
    // Request body: fed from the relay's frames by a reader that also
    // watches for cancel, so a cancel arriving mid-response is seen at once.
    // Both run in this task, side by side.
    let (body_tx, body_rx) = mpsc::channel::<Result<Bytes, std::io::Error>>(8);
    let finished = CancellationToken::new();
    let reader = read_relay_frames(inbound, head.has_body.then_some(body_tx), cancel.clone(), finished.clone());
    let work = async {
        let upload = head.has_body.then(|| reqwest::Body::wrap_stream(ReceiverStream::new(body_rx)));
        let ended = match upstream::call(agent, head, upload, &cancel, deadline).await {
            Ok(answered) => {
                respond(request_id, answered, &frames, &cancel, &finished, deadline, &mut report.status).await
            }
            Err(stop) => Err(tell(&frames, request_id, stop).await),
        };
        // Close our side and let the relay end the call: dropping it instead
        // would reset the stream and could discard our last frames unread.
        finished.cancel();
        drop(frames);
        ended
    };
    report.failure = tokio::join!(work, reader).0.err();
    report
}

/// How long to wait for the relay to close a finished call.
const CLOSE_WAIT: Duration = Duration::from_secs(5);

/// Tells the relay of a failure (a cancel it knows of), and says how the
/// request ended.
async fn tell(frames: &Frames, request_id: &str, stop: Stop) -> Failure {
    if let Stop::Failed(code, message) = &stop {
        let _ = frames.send(failure(request_id, *code, message.clone())).await;
    }
    stop.into()
}

/// Sends the destination's response down a call: whole in the head when it
/// is small and of known length, else the head, the body in frames, and
/// the end.
pub(crate) async fn respond(
    request_id: &str,
    mut answered: Answered,
    frames: &Frames,
    cancel: &CancellationToken,
    finished: &CancellationToken,
    deadline: Deadline,
    status_seen: &mut Option<u16>,
) -> Result<(), Failure> {
    *status_seen = Some(answered.status);
    if answered.fits_the_head() {
        if let Err(stop) = answered.read_into_head(cancel, deadline).await {
            return Err(tell(frames, request_id, stop).await);
        }
        finished.cancel();
    }
    let head = std::mem::take(&mut answered.head);
    let complete = head.complete;
    if frames.send(frame(request_id, agent_frame::Frame::ResponseHead(head))).await.is_err() {
        return Err(Failure::bare("relay-gone"));
    }
    if complete {
        return Ok(());
    }
    loop {
        let chunk = match answered.next_chunk(cancel, deadline).await {
            Ok(Some(chunk)) => chunk,
            Ok(None) => break,
            Err(stop) => return Err(tell(frames, request_id, stop).await),
        };
        if !send_chunks(frames, request_id, chunk, cancel).await {
            return Err(Failure::bare("cancelled"));
        }
    }
    finished.cancel();
    let _ = frames.send(frame(request_id, agent_frame::Frame::ResponseEnd(v1::End {}))).await;
    Ok(())
}

/// Sends a body chunk as frames of at most [`MAX_CHUNK_BYTES`]. False when
/// the relay is gone or cancelled.
async fn send_chunks(frames: &Frames, request_id: &str, chunk: Bytes, cancel: &CancellationToken) -> bool {
    let mut offset = 0;
    while offset < chunk.len() {
        let end = (offset + MAX_CHUNK_BYTES).min(chunk.len());
        let piece =
            frame(request_id, agent_frame::Frame::ResponseBody(v1::BodyChunk { data: chunk.slice(offset..end) }));
        tokio::select! {
            sent = frames.send(piece) => if sent.is_err() { return false },
            () = cancel.cancelled() => return false,
        }
        offset = end;
    }
    true
}

/// Reads the relay's side of the call: body chunks into `body`, and cancel
/// (explicit, or the relay's stream ending before we finished).
pub(crate) async fn read_relay_frames(
    mut inbound: tonic::Streaming<v1::RelayFrame>,
    mut body: Option<mpsc::Sender<Result<Bytes, std::io::Error>>>,
    cancel: CancellationToken,
    finished: CancellationToken,
) {
    let close_wait = async {
        finished.cancelled().await;
        tokio::time::sleep(CLOSE_WAIT).await;
    };
    tokio::pin!(close_wait);
    loop {
        let frame = tokio::select! {
            frame = inbound.message() => frame,
            () = cancel.cancelled() => return,
            () = &mut close_wait => return,
        };
        match frame {
            Ok(Some(v1::RelayFrame { frame: Some(relay_frame::Frame::RequestBody(chunk)), .. })) => {
                if let Some(tx) = &body
                    && tx.send(Ok(chunk.data)).await.is_err()
                {
                    body = None;
                }
            }
            Ok(Some(v1::RelayFrame { frame: Some(relay_frame::Frame::RequestEnd(_)), .. })) => body = None,
            Ok(Some(v1::RelayFrame { frame: Some(relay_frame::Frame::Cancel(_)), .. })) => break,
            Ok(Some(_)) => {}
            Ok(None) | Err(_) => {
                if finished.is_cancelled() {
                    return;
                }
                if let Some(tx) = body.take() {
                    let _ = tx.send(Err(std::io::Error::other("the relay broke off the request body"))).await;
                }
                break;
            }
        }
    }
    cancel.cancel();
}

#[cfg(test)]
mod tests {
    use super::loggable_url;

    #[test]
    fn logged_urls_drop_user_info_query_and_fragment() {
        assert_eq!(loggable_url("https://u:p@ci.internal:8443/hook?token=s3cret#x"), "https://ci.internal:8443/hook?…");
        assert_eq!(loggable_url("http://10.0.0.1/a/b"), "http://10.0.0.1/a/b");
        assert_eq!(loggable_url("not a url\n"), "(not a URL)");
    }
}
