//! The agent's lanes: long-lived `Lane` calls that carry a session's small
//! exchanges. One task per lane reads the relay's requests and runs them
//! side by side as futures of its own (no task per request); each answer
//! goes to the lane's writer, which sends whatever is ready as one message.
//! A response too large or streamed for a lane is diverted: the answer says
//! so, and the response goes down a `Forward` call opened for it.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use borealis_protocol::v1::{self, ErrorCode, agent_frame, lane_answer::Answer};
use futures_util::StreamExt;
use futures_util::stream::FuturesUnordered;
use prost::Message;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::Agent;
use crate::forward::{Failure, InFlight, Report, done, frame, open_call, read_relay_frames, respond};
use crate::link::SessionLink;
use crate::upstream::{self, Answered, Deadline, Stop};

/// How long a lane that could not be opened or broke waits before it is
/// opened again.
const REOPEN_AFTER: Duration = Duration::from_secs(1);

/// Keeps lane `index` of the session open until the session drains or ends.
/// A lane runs until the relay ends it (its session over, its requests
/// answered) or its call breaks; the requests on it finish either way, as
/// those on `Forward` calls do.
pub async fn keep_lane(agent: Arc<Agent>, link: Arc<SessionLink>, index: u32) {
    loop {
        if run_lane(&agent, &link, index).await == LaneEnd::Closed {
            return;
        }
        tokio::select! {
            () = tokio::time::sleep(REOPEN_AFTER) => {}
            () = link.draining.cancelled() => return,
        }
        if link.draining.is_cancelled() {
            return;
        }
    }
}

#[derive(Debug, PartialEq, Eq)]
enum LaneEnd {
    /// The relay ended it in order (its session is over), or ours is.
    Closed,
    /// Refused or broken: worth opening again while the session lives.
    Broken,
}

/// One lane, from opening it to its end.
async fn run_lane(agent: &Arc<Agent>, link: &Arc<SessionLink>, index: u32) -> LaneEnd {
    let (answers, queued) = mpsc::unbounded_channel::<v1::LaneAnswer>();
    let open = v1::AgentLane {
        open: Some(v1::LaneOpen { session_id: link.session_id.clone(), lane: index }),
        answers: Vec::new(),
    };
    let batches = borealis_protocol::batch::batched(queued, v1::LaneAnswer::encoded_len, |answers| v1::AgentLane {
        open: None,
        answers,
    });
    let mut request = tonic::Request::new(futures_util::stream::once(std::future::ready(open)).chain(batches));
    link.authorize(&mut request);
    let mut client = link.client();
    let opened = tokio::select! {
        opened = client.lane(request) => opened,
        () = link.ended.cancelled() => return LaneEnd::Closed,
    };
    let mut inbound = match opened {
        Ok(response) => response.into_inner(),
        Err(status) => {
            tracing::warn!(lane = index, code = ?status.code(), reason = status.message(), "the relay did not open a lane");
            return LaneEnd::Broken;
        }
    };
    let mut work = FuturesUnordered::new();
    let mut cancels: HashMap<u64, CancellationToken> = HashMap::new();
    let mut end = None;
    loop {
        tokio::select! {
            message = inbound.message(), if end.is_none() => match message {
                Ok(Some(message)) => {
                    for request in message.requests {
                        let cancel = CancellationToken::new();
                        cancels.insert(request.id, cancel.clone());
                        work.push(serve(agent.clone(), link.clone(), request, cancel));
                    }
                    for cancel in message.cancels {
                        if let Some(token) = cancels.get(&cancel.id) {
                            token.cancel();
                        }
                    }
                }
                Ok(None) => end = Some(LaneEnd::Closed),
                Err(status) => {
                    tracing::warn!(lane = index, code = ?status.code(), reason = status.message(), "the relay ended a lane");
                    // Nothing more can be answered on it.
                    for token in cancels.values() {
                        token.cancel();
                    }
                    end = Some(LaneEnd::Broken);
                }
            },
            Some(answer) = work.next() => {
                cancels.remove(&answer.id);
                let _ = answers.send(answer);
            }
        }
        if let Some(end) = end.take_if(|_| work.is_empty()) {
            // Ends our side: the writer sends what is queued, then ends.
            return end;
        }
    }
}

/// Serves one request of a lane, and gives its answer. A response that
/// does not fit a lane goes down a `Forward` call of its own ([`divert`]).
async fn serve(
    agent: Arc<Agent>,
    link: Arc<SessionLink>,
    request: v1::LaneRequest,
    cancel: CancellationToken,
) -> v1::LaneAnswer {
    let v1::LaneRequest { id, request_id, head } = request;
    let started = Instant::now();
    let in_flight = InFlight::new(&agent);
    let head = head.unwrap_or_default();
    let mut report = Report::of(&head);
    let deadline = Deadline::in_ms(head.timeout_ms);
    let outcome = if head.has_body {
        Err(Stop::Failed(ErrorCode::InvalidRequest, "a request on a lane carries its whole body in its head".into()))
    } else {
        upstream::call(&agent, head, None, &cancel, deadline).await
    };
    let answer = match outcome {
        Ok(mut answered) => {
            report.status = Some(answered.status);
            if answered.fits_the_head() {
                match answered.read_into_head(&cancel, deadline).await {
                    Ok(()) => Answer::Response(std::mem::take(&mut answered.head)),
                    Err(stop) => failed(stop, &mut report),
                }
            } else {
                let diverted = Diverted { agent: agent.clone(), link, request_id, answered, deadline, in_flight };
                tokio::spawn(diverted.send(report, started));
                return v1::LaneAnswer { id, answer: Some(Answer::Divert(v1::Divert {})) };
            }
        }
        Err(stop) => failed(stop, &mut report),
    };
    drop(in_flight);
    done(&agent, &request_id, report, started);
    v1::LaneAnswer { id, answer: Some(answer) }
}

/// The answer for a request that stopped. Every request on a lane is
/// answered, a cancelled one too.
fn failed(stop: Stop, report: &mut Report) -> Answer {
    let failure = match &stop {
        Stop::Cancelled => v1::Failure::new(ErrorCode::Cancelled, "cancelled by the relay"),
        Stop::Failed(code, message) => v1::Failure::new(*code, message.clone()),
    };
    report.failure = Some(Failure::from(stop));
    Answer::Failure(failure)
}

/// A response on its way down a `Forward` call of its own.
struct Diverted {
    agent: Arc<Agent>,
    link: Arc<SessionLink>,
    request_id: String,
    answered: Answered,
    deadline: Deadline,
    in_flight: InFlight,
}

impl Diverted {
    /// Opens the call with `Accept` naming the request, and streams the
    /// response down it as any call does; the relay's cancel comes on it.
    async fn send(self, mut report: Report, started: Instant) {
        let Diverted { agent, link, request_id, answered, deadline, in_flight } = self;
        let accept = frame(&request_id, agent_frame::Frame::Accept(v1::Accept { session_id: link.session_id.clone() }));
        match open_call(&link, accept).await {
            Err(status) => {
                report.failure = Some(Failure { error: "refused", detail: Some(status.message().to_owned()) });
            }
            Ok((frames, inbound)) => {
                let (cancel, finished) = (CancellationToken::new(), CancellationToken::new());
                let reader = read_relay_frames(inbound, None, cancel.clone(), finished.clone());
                let work = async {
                    let sent =
                        respond(&request_id, answered, &frames, &cancel, &finished, deadline, &mut report.status).await;
                    finished.cancel();
                    drop(frames);
                    sent
                };
                report.failure = tokio::join!(work, reader).0.err();
            }
        }
        drop(in_flight);
        done(&agent, &request_id, report, started);
    }
}
