//! Lanes from the relay's side: a long-lived `Lane` call of one session that
//! carries many small exchanges, batched both ways.
//!
//! A request whose body is whole and small goes down a lane of its session
//! with room (taken in turn) as a `LaneRequest` and waits for its `LaneAnswer`; its
//! caller's task waits on a oneshot, so a small request costs no task and no
//! call of its own. The lane's reader (one task per lane) checks each
//! answer against the lane's book ([`borealis_protocol::lanes`]) and hands
//! it to its waiter. Its writer is the call's response stream, which sends
//! whatever is queued as one message.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use borealis_protocol::lanes::{LaneBook, LaneViolation, Settled, check_answer};
use borealis_protocol::v1;
use tokio::sync::{Notify, mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use tonic::{Status, Streaming};

/// What the relay sends on a lane, batched by its writer.
pub enum Outgoing {
    Request(v1::LaneRequest),
    Cancel(v1::LaneCancel),
}

impl Outgoing {
    /// Its encoded size, for the batch's limit.
    pub fn encoded_len(&self) -> usize {
        use prost::Message;
        match self {
            Self::Request(request) => request.encoded_len(),
            Self::Cancel(cancel) => cancel.encoded_len(),
        }
    }
}

/// The message of one batch, noting on `lane` the requests it writes.
pub fn relay_lane(lane: &Lane, batch: Vec<Outgoing>) -> v1::RelayLane {
    let mut message = v1::RelayLane::default();
    for item in batch {
        match item {
            Outgoing::Request(request) => {
                lane.written.fetch_max(request.id, Ordering::Relaxed);
                message.requests.push(request);
            }
            Outgoing::Cancel(cancel) => message.cancels.push(cancel),
        }
    }
    message
}

/// Why a lane's requests could not be answered on it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LaneBroken {
    /// The agent broke a lane rule: the reason, as the lane's status says.
    Violation(String),
    /// The agent's side ended, or the connection failed, with requests
    /// unanswered.
    Lost(String),
}

/// The ids a lane has outstanding, and who waits for each answer.
struct Book {
    book: LaneBook,
    waiters: HashMap<u64, oneshot::Sender<Settled>>,
}

/// One open lane of a session.
pub struct Lane {
    pub index: u32,
    /// For logs.
    pub agent_id: String,
    pub session_id: String,
    book: Mutex<Book>,
    queue: mpsc::UnboundedSender<Outgoing>,
    /// Fires when the lane ends, however: nothing more goes down it, and
    /// its outstanding requests have failed.
    pub ended: CancellationToken,
    broken: OnceLock<LaneBroken>,
    /// Signalled when the lane's last outstanding request is answered.
    quiet: Notify,
    /// The highest id handed to the transport: an answer to a later one
    /// answers what the agent cannot have read, however it guessed the id.
    written: AtomicU64,
}

impl Lane {
    /// A lane just opened, and the queue its writer sends from.
    pub fn new(index: u32, agent_id: String, session_id: String) -> (Arc<Self>, mpsc::UnboundedReceiver<Outgoing>) {
        let (queue, outgoing) = mpsc::unbounded_channel();
        let lane = Self {
            index,
            agent_id,
            session_id,
            book: Mutex::new(Book { book: LaneBook::default(), waiters: HashMap::new() }),
            queue,
            ended: CancellationToken::new(),
            broken: OnceLock::new(),
            quiet: Notify::new(),
            written: AtomicU64::new(0),
        };
        (Arc::new(lane), outgoing)
    }

    /// Sends a request down this lane, taking its head; leaves the head
    /// when the lane has ended or holds its most outstanding requests.
    pub fn send(self: &Arc<Self>, request_id: &str, head: &mut Option<v1::RequestHead>) -> Option<LaneTicket> {
        let mut book = self.book.lock().expect("lane lock");
        if self.ended.is_cancelled() || head.is_none() {
            return None;
        }
        let id = book.book.send()?;
        let (answer, answered) = oneshot::channel();
        book.waiters.insert(id, answer);
        drop(book);
        let request = v1::LaneRequest { id, request_id: request_id.to_owned(), head: head.take() };
        // The queue is bounded by the book: at most one request and one
        // cancel per outstanding id.
        let _ = self.queue.send(Outgoing::Request(request));
        Some(LaneTicket { lane: self.clone(), id, answered, settled: false })
    }

    pub fn outstanding(&self) -> usize {
        self.book.lock().expect("lane lock").book.outstanding()
    }

    /// A waiter gave up on `id` (its caller went away, or its deadline
    /// passed): the agent is told to stop. The id stays outstanding until
    /// the agent answers it, as it must.
    fn give_up(&self, id: u64) {
        let waiting = self.book.lock().expect("lane lock").waiters.remove(&id).is_some();
        if waiting && !self.ended.is_cancelled() {
            let cancel = v1::LaneCancel { id, reason: v1::ErrorCode::Cancelled as i32 };
            let _ = self.queue.send(Outgoing::Cancel(cancel));
        }
    }

    /// An answer kept the lane's rules but its response cannot be served
    /// (an invalid status or header): its request fails, the lane goes on.
    pub fn violated_by_answer(&self, id: u64, reason: &str) {
        // The reason may quote what the agent sent: a `&str` value is escaped.
        tracing::warn!(
            agent = self.agent_id.as_str(),
            session = self.session_id.as_str(),
            lane = self.index,
            id,
            reason,
            "agent broke the tunnel protocol"
        );
    }

    /// Why the lane ended early, if it did.
    pub fn broken(&self) -> Option<&LaneBroken> {
        self.broken.get()
    }

    /// Ends the lane: its waiters fail with `why` (a lane that ended with
    /// nothing outstanding fails none), and nothing more is sent down it.
    pub fn end(&self, why: LaneBroken) {
        let mut book = self.book.lock().expect("lane lock");
        let _ = self.broken.set(why);
        self.ended.cancel();
        book.book.end();
        // Dropped senders: each waiter reads `broken`.
        book.waiters.clear();
        drop(book);
        self.quiet.notify_waiters();
    }

    /// For a session that is over: ends the lane once nothing is
    /// outstanding on it. Decided under the book's lock, so a request sent
    /// meanwhile either counts as outstanding or finds the lane ended (and
    /// takes another way).
    pub async fn wind_down(&self) {
        loop {
            let notified = self.quiet.notified();
            {
                let book = self.book.lock().expect("lane lock");
                if book.book.outstanding() == 0 {
                    self.ended.cancel();
                    return;
                }
            }
            notified.await;
        }
    }

    /// Takes one message of the agent's: each answer goes to its waiter.
    /// A broken rule is returned; what came before it in the message stands.
    pub fn take(&self, message: v1::AgentLane) -> Result<(), LaneViolation> {
        if message.open.is_some() {
            return Err(LaneViolation::MisplacedOpen);
        }
        let written = self.written.load(Ordering::Relaxed);
        let mut book = self.book.lock().expect("lane lock");
        for answer in message.answers {
            if answer.id > written {
                return Err(LaneViolation::NotSent { id: answer.id });
            }
            let (id, settled) = check_answer(&mut book.book, answer)?;
            // No waiter: its caller gave up, and the answer is dropped.
            if let Some(waiter) = book.waiters.remove(&id) {
                let _ = waiter.send(settled);
            }
        }
        let quiet = book.book.outstanding() == 0;
        drop(book);
        if quiet {
            self.quiet.notify_waiters();
        }
        Ok(())
    }
}

/// A request sent down a lane, waiting for its answer. Dropped before the
/// answer came, it cancels the request on the lane.
pub struct LaneTicket {
    lane: Arc<Lane>,
    pub id: u64,
    answered: oneshot::Receiver<Settled>,
    settled: bool,
}

impl LaneTicket {
    /// The agent's answer, or why the lane cannot give one.
    pub async fn answer(&mut self) -> Result<Settled, LaneBroken> {
        let answer = (&mut self.answered).await;
        self.settled = true;
        answer.map_err(|_| self.lane.broken().cloned().unwrap_or_else(|| LaneBroken::Lost("the lane ended".into())))
    }

    pub fn lane(&self) -> &Arc<Lane> {
        &self.lane
    }

    /// The response came on the divert's call before the answer said so:
    /// nobody waits for the answer, which settles the book when it comes.
    pub fn forget(&mut self) {
        self.settled = true;
        self.lane.book.lock().expect("lane lock").waiters.remove(&self.id);
    }
}

impl Drop for LaneTicket {
    fn drop(&mut self) {
        if !self.settled {
            self.lane.give_up(self.id);
        }
    }
}

/// Reads the agent's side of a lane until it ends, handing each answer to
/// its waiter. Returns why the lane ended, and the status the relay's side
/// ends with when the agent broke a rule.
pub async fn read_answers(lane: &Lane, inbound: &mut Streaming<v1::AgentLane>) -> (LaneBroken, Option<Status>) {
    loop {
        let message = tokio::select! {
            message = inbound.message() => message,
            // Ended by the relay (its session is over or was lost): nothing more is read.
            () = lane.ended.cancelled() => return (LaneBroken::Lost("the lane ended".into()), None),
        };
        let violation = match message {
            Ok(Some(message)) => match lane.take(message) {
                Ok(()) => continue,
                Err(violation) => violation.to_string(),
            },
            Ok(None) => return (LaneBroken::Lost("the agent ended the lane".into()), None),
            Err(status) if status.code() == tonic::Code::OutOfRange => {
                format!("a lane message over the limit of {} bytes", borealis_protocol::MAX_FRAME_BYTES)
            }
            Err(_) => return (LaneBroken::Lost("the connection was lost".into()), None),
        };
        // The reason may quote what the agent sent: a `&str` value is escaped.
        tracing::warn!(
            agent = lane.agent_id.as_str(),
            session = lane.session_id.as_str(),
            lane = lane.index,
            reason = violation.as_str(),
            "agent broke the tunnel protocol"
        );
        let status = Status::invalid_argument(format!("protocol violation: {violation}"));
        return (LaneBroken::Violation(violation), Some(status));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head() -> v1::RequestHead {
        v1::RequestHead { method: "GET".into(), url: "http://x/".into(), ..Default::default() }
    }

    fn answer(id: u64) -> v1::AgentLane {
        let failure = v1::Failure::new(v1::ErrorCode::Timeout, "late");
        v1::AgentLane {
            open: None,
            answers: vec![v1::LaneAnswer { id, answer: Some(v1::lane_answer::Answer::Failure(failure)) }],
        }
    }

    #[tokio::test]
    async fn an_answer_reaches_its_waiter_and_a_given_up_one_is_cancelled() {
        let (lane, mut outgoing) = Lane::new(0, "a".into(), "s".into());
        let mut first = lane.send("r-1", &mut Some(head())).unwrap();
        let second = lane.send("r-2", &mut Some(head())).unwrap();
        assert_eq!(lane.take(answer(1)), Err(LaneViolation::NotSent { id: 1 }), "not yet written");
        let written = relay_lane(&lane, vec![outgoing.recv().await.unwrap(), outgoing.recv().await.unwrap()]);
        assert_eq!(
            written.requests.iter().map(|r| (r.id, r.request_id.as_str())).collect::<Vec<_>>(),
            [(1, "r-1"), (2, "r-2")]
        );
        drop(second);
        assert!(matches!(outgoing.recv().await, Some(Outgoing::Cancel(c)) if c.id == 2));
        lane.take(answer(1)).unwrap();
        assert!(matches!(first.answer().await, Ok(Settled::Failure(_))));
        assert_eq!(lane.outstanding(), 1, "a cancelled request is outstanding until answered");
        lane.take(answer(2)).unwrap();
        assert_eq!(lane.outstanding(), 0);
        assert_eq!(lane.take(answer(2)), Err(LaneViolation::AnsweredTwice { id: 2 }));
    }

    #[tokio::test]
    async fn an_ended_lane_fails_its_waiters_and_takes_no_more() {
        let (lane, _outgoing) = Lane::new(1, "a".into(), "s".into());
        let mut waiting = lane.send("r-1", &mut Some(head())).unwrap();
        lane.end(LaneBroken::Lost("the connection was lost".into()));
        assert_eq!(waiting.answer().await.err(), Some(LaneBroken::Lost("the connection was lost".into())));
        let mut head = Some(head());
        assert!(lane.send("r-2", &mut head).is_none());
        assert!(head.is_some(), "the head is left for another way");
    }

    #[tokio::test]
    async fn a_lane_winds_down_once_quiet_and_then_takes_nothing() {
        let (lane, mut outgoing) = Lane::new(0, "a".into(), "s".into());
        let _waiting = lane.send("r-1", &mut Some(head())).unwrap();
        let _ = relay_lane(&lane, vec![outgoing.recv().await.unwrap()]);
        let winding = tokio::spawn({
            let lane = lane.clone();
            async move { lane.wind_down().await }
        });
        tokio::task::yield_now().await;
        assert!(!lane.ended.is_cancelled(), "one is outstanding");
        lane.take(answer(1)).unwrap();
        winding.await.unwrap();
        assert!(lane.ended.is_cancelled());
        assert!(lane.send("r-2", &mut Some(head())).is_none(), "an ended lane takes nothing");
    }
}
