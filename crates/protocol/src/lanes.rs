//! Lanes: many small exchanges on one long-lived call. What each side may
//! send and must check, as pure code (no I/O): the relay's book of the
//! requests a lane has outstanding, the rules an answer must meet, and the
//! batches either side writes. The relay and the agent drive these with
//! the messages they read; tests drive them with none.

use std::collections::BTreeSet;
use std::fmt;

use crate::v1;

/// Most lanes the relay takes for one session, whatever the agent asks.
pub const MAX_LANES: u32 = 4;

/// Most requests outstanding on one lane: beyond it a request takes a
/// `Forward` call instead, so that a lane's memory stays bounded.
pub const MAX_OUTSTANDING: usize = 256;

/// Largest message a batching writer makes; one exchange larger than this
/// never travels on a lane (a lane's body is at most
/// [`crate::MAX_INLINE_BODY_BYTES`]).
pub const MAX_BATCH_BYTES: usize = 1024 * 1024;

/// How a lane's peer broke its rules: the lane ends with
/// `INVALID_ARGUMENT` naming it, and its outstanding requests fail.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LaneViolation {
    /// `LaneOpen.lane` outside what `Welcome.lanes` granted.
    UnknownLane { lane: u32, granted: u32 },
    /// The same lane opened twice in one session.
    LaneOpenTwice { lane: u32 },
    /// The first message opened nothing, or a later one opened again.
    MisplacedOpen,
    /// An answer to an id this lane never sent.
    NotSent { id: u64 },
    /// A second answer to one request.
    AnsweredTwice { id: u64 },
    /// An answer with neither a response, a failure nor a divert.
    EmptyAnswer { id: u64 },
    /// A response that is not complete: a lane carries whole responses only.
    IncompleteResponse { id: u64 },
    /// A body over [`crate::MAX_INLINE_BODY_BYTES`].
    Oversized { id: u64, bytes: usize },
}

impl fmt::Display for LaneViolation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::UnknownLane { lane, granted: 0 } => write!(f, "lane {lane} is unknown: this session has no lanes"),
            Self::UnknownLane { lane, granted } => {
                write!(f, "lane {lane} is unknown: this session has lanes 0 to {}", granted - 1)
            }
            Self::LaneOpenTwice { lane } => write!(f, "lane {lane} is open already"),
            Self::MisplacedOpen => f.write_str("a lane's first message, and only it, carries LaneOpen"),
            Self::NotSent { id } => write!(f, "an answer to request {id}, which this lane did not send"),
            Self::AnsweredTwice { id } => write!(f, "a second answer to request {id}"),
            Self::EmptyAnswer { id } => write!(f, "the answer to request {id} holds no response, failure or divert"),
            Self::IncompleteResponse { id } => {
                write!(f, "the response to request {id} is not complete: a larger one diverts to a Forward call")
            }
            Self::Oversized { id, bytes } => write!(
                f,
                "the response to request {id} carries {bytes} bytes of body, over the {} a lane takes",
                crate::MAX_INLINE_BODY_BYTES
            ),
        }
    }
}

impl std::error::Error for LaneViolation {}

/// Which lanes of a session are open, for checking a `LaneOpen`.
#[derive(Debug, Default)]
pub struct LaneSet {
    granted: u32,
    open: Vec<bool>,
}

impl LaneSet {
    /// `requested` is `Hello.lanes`; the lanes granted (for `Welcome.lanes`)
    /// are at most [`MAX_LANES`].
    pub fn grant(requested: u32) -> Self {
        let granted = requested.min(MAX_LANES);
        Self { granted, open: vec![false; granted as usize] }
    }

    pub fn granted(&self) -> u32 {
        self.granted
    }

    /// Opens `lane`, if the session was granted it and it is not open.
    pub fn open(&mut self, lane: u32) -> Result<(), LaneViolation> {
        let granted = self.granted;
        let slot = self.open.get_mut(lane as usize).ok_or(LaneViolation::UnknownLane { lane, granted })?;
        if *slot {
            return Err(LaneViolation::LaneOpenTwice { lane });
        }
        *slot = true;
        Ok(())
    }

    /// A lane ended: it may be opened again (an agent reconnecting a lane).
    pub fn close(&mut self, lane: u32) {
        if let Some(slot) = self.open.get_mut(lane as usize) {
            *slot = false;
        }
    }
}

/// The relay's book of one lane: the ids it sent, those not yet answered.
/// Ids count up from 1, so an answer to an id at or past the next is one
/// never sent, and one below it that is not outstanding was answered before;
/// nothing is kept for answered requests.
#[derive(Debug)]
pub struct LaneBook {
    next: u64,
    outstanding: BTreeSet<u64>,
    limit: usize,
}

impl Default for LaneBook {
    fn default() -> Self {
        Self::new(MAX_OUTSTANDING)
    }
}

impl LaneBook {
    pub fn new(limit: usize) -> Self {
        Self { next: 1, outstanding: BTreeSet::new(), limit }
    }

    /// The id for a new request on this lane; `None` when the lane holds
    /// its limit (the request takes a `Forward` call instead).
    pub fn send(&mut self) -> Option<u64> {
        if self.outstanding.len() >= self.limit {
            return None;
        }
        let id = self.next;
        self.next += 1;
        self.outstanding.insert(id);
        Some(id)
    }

    /// Records the answer to `id`.
    pub fn settle(&mut self, id: u64) -> Result<(), LaneViolation> {
        if self.outstanding.remove(&id) {
            return Ok(());
        }
        if id == 0 || id >= self.next {
            Err(LaneViolation::NotSent { id })
        } else {
            Err(LaneViolation::AnsweredTwice { id })
        }
    }

    pub fn outstanding(&self) -> usize {
        self.outstanding.len()
    }

    /// The lane ended: every request still outstanding fails, and none may
    /// be answered any more.
    pub fn end(&mut self) -> Vec<u64> {
        std::mem::take(&mut self.outstanding).into_iter().collect()
    }
}

/// What an answer says, once it has passed [`check_answer`].
#[derive(Debug, Clone, PartialEq)]
pub enum Settled {
    Response(v1::ResponseHead),
    Failure(v1::Failure),
    /// The response comes on a `Forward` call.
    Divert,
}

/// Checks one answer against the lane's book and the lane's rules; the
/// book records it as answered only when it passes.
pub fn check_answer(book: &mut LaneBook, answer: v1::LaneAnswer) -> Result<(u64, Settled), LaneViolation> {
    use v1::lane_answer::Answer;
    let id = answer.id;
    let settled = match answer.answer {
        None => return Err(LaneViolation::EmptyAnswer { id }),
        Some(Answer::Response(head)) if !head.complete => return Err(LaneViolation::IncompleteResponse { id }),
        Some(Answer::Response(head)) if head.body.len() > crate::MAX_INLINE_BODY_BYTES => {
            return Err(LaneViolation::Oversized { id, bytes: head.body.len() });
        }
        Some(Answer::Response(head)) => Settled::Response(head),
        Some(Answer::Failure(failure)) => Settled::Failure(failure),
        Some(Answer::Divert(_)) => Settled::Divert,
    };
    book.settle(id)?;
    Ok((id, settled))
}

/// Whether a request may travel on a lane: a whole body small enough to
/// ride in its head.
pub fn fits_a_lane(body_len: Option<usize>) -> bool {
    body_len.is_some_and(|len| len <= crate::MAX_INLINE_BODY_BYTES)
}

/// A batching writer's gathering of what is ready: items are added while
/// the message stays under [`MAX_BATCH_BYTES`]; the first item always goes
/// in, so that one large item still travels (alone).
#[derive(Debug)]
pub struct Batch<T> {
    items: Vec<T>,
    bytes: usize,
    limit: usize,
}

impl<T> Default for Batch<T> {
    fn default() -> Self {
        Self::new(MAX_BATCH_BYTES)
    }
}

impl<T> Batch<T> {
    pub fn new(limit: usize) -> Self {
        Self { items: Vec::new(), bytes: 0, limit }
    }

    /// Adds `item` of `bytes` encoded bytes; gives it back when the batch
    /// is full (send this one, then start the next with it).
    pub fn offer(&mut self, item: T, bytes: usize) -> Result<(), T> {
        if !self.items.is_empty() && self.bytes + bytes > self.limit {
            return Err(item);
        }
        self.bytes += bytes;
        self.items.push(item);
        Ok(())
    }

    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// The items gathered, in order; the batch is empty again.
    pub fn take(&mut self) -> Vec<T> {
        self.bytes = 0;
        std::mem::take(&mut self.items)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use v1::lane_answer::Answer;

    fn response(body: usize, complete: bool) -> Option<Answer> {
        Some(Answer::Response(v1::ResponseHead {
            status: 200,
            headers: Vec::new(),
            body: vec![7; body].into(),
            complete,
        }))
    }

    #[test]
    fn a_session_gets_at_most_four_lanes_each_opened_once() {
        let mut lanes = LaneSet::grant(16);
        assert_eq!(lanes.granted(), MAX_LANES);
        assert_eq!(lanes.open(0), Ok(()));
        assert_eq!(lanes.open(0), Err(LaneViolation::LaneOpenTwice { lane: 0 }));
        let unknown = lanes.open(4).unwrap_err();
        assert_eq!(unknown.to_string(), "lane 4 is unknown: this session has lanes 0 to 3");
        lanes.close(0);
        assert_eq!(lanes.open(0), Ok(()), "a lane that ended may open again");
        assert_eq!(LaneSet::grant(0).open(0), Err(LaneViolation::UnknownLane { lane: 0, granted: 0 }));
    }

    #[test]
    fn each_request_is_answered_once_and_only_what_was_sent() {
        let mut book = LaneBook::new(2);
        let (a, b) = (book.send().unwrap(), book.send().unwrap());
        assert_eq!((a, b), (1, 2));
        assert_eq!(book.send(), None, "full: the next request takes a Forward call");
        assert_eq!(book.settle(b), Ok(()));
        assert_eq!(book.settle(b), Err(LaneViolation::AnsweredTwice { id: 2 }));
        assert_eq!(book.settle(3), Err(LaneViolation::NotSent { id: 3 }));
        assert_eq!(book.settle(0), Err(LaneViolation::NotSent { id: 0 }));
        assert_eq!(book.send(), Some(3), "room again");
        assert_eq!(book.end(), [1, 3], "what was outstanding fails when the lane ends");
        assert_eq!(book.settle(1), Err(LaneViolation::AnsweredTwice { id: 1 }), "nothing is answered after the end");
        assert_eq!(book.outstanding(), 0);
    }

    #[test]
    fn an_answer_is_whole_small_and_says_something() {
        let mut book = LaneBook::default();
        for _ in 0..4 {
            book.send();
        }
        let ok = check_answer(&mut book, v1::LaneAnswer { id: 1, answer: response(10, true) }).unwrap();
        assert!(matches!(ok, (1, Settled::Response(ref head)) if head.body.len() == 10));
        let divert = v1::LaneAnswer { id: 2, answer: Some(Answer::Divert(v1::Divert {})) };
        assert_eq!(check_answer(&mut book, divert).unwrap(), (2, Settled::Divert));

        let partial = check_answer(&mut book, v1::LaneAnswer { id: 3, answer: response(10, false) });
        assert_eq!(partial, Err(LaneViolation::IncompleteResponse { id: 3 }));
        let big = crate::MAX_INLINE_BODY_BYTES + 1;
        let oversized = check_answer(&mut book, v1::LaneAnswer { id: 3, answer: response(big, true) }).unwrap_err();
        assert_eq!(oversized, LaneViolation::Oversized { id: 3, bytes: big });
        assert!(oversized.to_string().contains("over the 65536 a lane takes"), "{oversized}");
        assert_eq!(
            check_answer(&mut book, v1::LaneAnswer { id: 4, answer: None }),
            Err(LaneViolation::EmptyAnswer { id: 4 })
        );
        assert_eq!(book.outstanding(), 2, "a refused answer settles nothing");
    }

    #[test]
    fn only_whole_small_bodies_ride_a_lane() {
        assert!(fits_a_lane(Some(0)));
        assert!(fits_a_lane(Some(crate::MAX_INLINE_BODY_BYTES)));
        assert!(!fits_a_lane(Some(crate::MAX_INLINE_BODY_BYTES + 1)));
        assert!(!fits_a_lane(None), "a streamed body keeps a call of its own");
    }

    #[test]
    fn a_batch_gathers_what_fits_and_always_takes_one() {
        let mut batch = Batch::new(100);
        assert_eq!(batch.offer("a", 60), Ok(()));
        assert_eq!(batch.offer("b", 40), Ok(()));
        assert_eq!(batch.offer("c", 1), Err("c"), "full");
        assert_eq!(batch.take(), ["a", "b"]);
        assert!(batch.is_empty());
        assert_eq!(batch.offer("huge", 500), Ok(()), "one item always travels, alone");
        assert_eq!(batch.offer("d", 1), Err("d"));
    }
}
