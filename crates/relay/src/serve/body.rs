//! Request bodies that must arrive in time.
//!
//! A request whose body never comes holds its connection (and on HTTP/1.1
//! its descriptor) with a request in flight, where the idle watchdog cannot
//! see it. So every request body is read under a [`BodyPolicy`]:
//! - [`BodyPolicy::Whole`], the default: the body is complete within the
//!   bound of the request's head (the API's small bodies, forms, the token
//!   endpoint);
//! - [`BodyPolicy::Streamed`], for routes that stream (the proxy, the peer
//!   hop): no wait for the next bytes longer than the bound, and after the
//!   first bound spent waiting, at least [`MIN_STREAM_RATE`] on average over
//!   the time spent waiting for the client (time the relay spent not asking,
//!   because the destination was slow, does not count);
//! - [`BodyPolicy::Unbounded`], for the agents' gRPC calls, which stream
//!   for as long as the session lives and are authenticated on their head.
//!
//! A body that misses its bound fails; on HTTP/1.1 the connection is closed
//! at once (it cannot carry another request anyway), on HTTP/2 only the
//! stream ends, so other clients multiplexed on a balancer's connection go
//! on. Routes choose their policy with [`stream_bodies`] or
//! [`unbounded_bodies`], before anything reads the body.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::extract::Request;
use axum::middleware::Next;
use axum::response::Response;
use bytes::Bytes;
use prometheus_client::metrics::counter::Counter;
use tokio::time::{Instant, Sleep};

use borealis_serve::Activity;

/// The least a streamed body must average, over the time spent waiting
/// for it, once the first bound has been spent.
pub const MIN_STREAM_RATE: u64 = 1024;

/// How a request body must arrive.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyPolicy {
    Whole = 0,
    Streamed = 1,
    Unbounded = 2,
}

/// A request's body policy, which its route may change before reading.
#[derive(Clone)]
pub struct BodyControl(Arc<AtomicU8>);

impl BodyControl {
    fn set(&self, policy: BodyPolicy) {
        self.0.store(policy as u8, Ordering::Relaxed);
    }

    fn get(&self) -> BodyPolicy {
        match self.0.load(Ordering::Relaxed) {
            0 => BodyPolicy::Whole,
            1 => BodyPolicy::Streamed,
            _ => BodyPolicy::Unbounded,
        }
    }
}

/// Route layer: this route's bodies stream (`axum::middleware::from_fn`).
pub async fn stream_bodies(request: Request, next: Next) -> Response {
    if let Some(control) = request.extensions().get::<BodyControl>() {
        control.set(BodyPolicy::Streamed);
    }
    next.run(request).await
}

/// Route layer: this route's bodies live as long as the call.
pub async fn unbounded_bodies(request: Request, next: Next) -> Response {
    if let Some(control) = request.extensions().get::<BodyControl>() {
        control.set(BodyPolicy::Unbounded);
    }
    next.run(request).await
}

/// Why a body failed its bound.
#[derive(Debug, thiserror::Error)]
#[error("the request body did not arrive in time: {0}")]
pub struct BodyTimeout(&'static str);

/// What a timed-out body does besides failing.
pub struct OnTimeout {
    /// The HTTP/1.1 connection to close; `None` on HTTP/2.
    pub close: Option<Arc<Activity>>,
    pub counter: Counter,
}

/// A request body read under its [`BodyControl`]'s policy.
pub struct TimedBody<B> {
    inner: B,
    control: BodyControl,
    bound: Duration,
    start: Instant,
    /// When the consumer began waiting for bytes that have not come.
    waiting_since: Option<Instant>,
    /// Time spent waiting before `waiting_since`.
    waited: Duration,
    received: u64,
    /// Made the first time the body waits: most bodies never do (a GET has
    /// none, a small one came with its head), so they cost no timer.
    timer: Option<Pin<Box<Sleep>>>,
    on_timeout: OnTimeout,
    /// Timed out: the body has ended, in error, once.
    failed: bool,
}

impl<B> TimedBody<B> {
    pub fn new(inner: B, bound: Duration, on_timeout: OnTimeout) -> (Self, BodyControl) {
        let control = BodyControl(Arc::new(AtomicU8::new(BodyPolicy::Whole as u8)));
        let start = Instant::now();
        let body = Self {
            inner,
            control: control.clone(),
            bound,
            start,
            waiting_since: None,
            waited: Duration::ZERO,
            received: 0,
            timer: None,
            on_timeout,
            failed: false,
        };
        (body, control)
    }

    /// When the body misses its bound if nothing more arrives, by policy.
    fn deadline(&self, policy: BodyPolicy, waiting_since: Instant) -> Option<Instant> {
        match policy {
            BodyPolicy::Unbounded => None,
            BodyPolicy::Whole => Some(self.start + self.bound),
            BodyPolicy::Streamed => {
                let next_bytes = waiting_since + self.bound;
                // The average over the time waited falls below the rate at
                // `waited + (t - waiting_since) - bound > received / rate`.
                let earned = Duration::from_secs_f64(self.received as f64 / MIN_STREAM_RATE as f64);
                let rate = (waiting_since + self.bound + earned).checked_sub(self.waited);
                Some(rate.map_or(next_bytes, |rate| rate.min(next_bytes)))
            }
        }
    }

    fn timed_out(&mut self, why: &'static str) -> Poll<Option<Result<http_body::Frame<Bytes>, axum::Error>>> {
        self.failed = true;
        self.on_timeout.counter.inc();
        if let Some(connection) = &self.on_timeout.close {
            connection.close();
        }
        Poll::Ready(Some(Err(axum::Error::new(BodyTimeout(why)))))
    }
}

impl<B> http_body::Body for TimedBody<B>
where
    B: http_body::Body<Data = Bytes> + Unpin,
    B::Error: Into<axum::BoxError>,
{
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        let this = &mut *self;
        if this.failed {
            return Poll::Ready(None);
        }
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(frame) => {
                if let Some(since) = this.waiting_since.take() {
                    this.waited += since.elapsed();
                }
                if let Some(Ok(data)) = &frame {
                    this.received += data.data_ref().map_or(0, |d| d.len() as u64);
                }
                Poll::Ready(frame.map(|f| f.map_err(axum::Error::new)))
            }
            Poll::Pending => {
                let policy = this.control.get();
                let since = *this.waiting_since.get_or_insert_with(Instant::now);
                let Some(deadline) = this.deadline(policy, since) else { return Poll::Pending };
                if Instant::now() >= deadline {
                    return this.timed_out(match policy {
                        BodyPolicy::Whole => "it was not complete within the bound of its head",
                        _ => "it came too slowly",
                    });
                }
                let timer = match this.timer.take() {
                    Some(mut timer) => {
                        timer.as_mut().reset(deadline);
                        this.timer.insert(timer)
                    }
                    None => this.timer.insert(Box::pin(tokio::time::sleep_until(deadline))),
                };
                match timer.as_mut().poll(cx) {
                    Poll::Ready(()) => this.timed_out("it came too slowly"),
                    Poll::Pending => Poll::Pending,
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.failed || self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;

    type Chunk = Result<http_body::Frame<Bytes>, std::convert::Infallible>;
    type Chunks = tokio::sync::mpsc::Sender<Chunk>;
    type Fed = TimedBody<http_body_util::StreamBody<tokio_stream::wrappers::ReceiverStream<Chunk>>>;

    /// A body fed by the test, read under `policy` with a 30 s bound.
    fn fed(policy: BodyPolicy) -> (Chunks, Fed, Counter) {
        let (tx, rx) = tokio::sync::mpsc::channel(8);
        let inner = http_body_util::StreamBody::new(tokio_stream::wrappers::ReceiverStream::new(rx));
        let counter = Counter::default();
        let (body, control) =
            TimedBody::new(inner, Duration::from_secs(30), OnTimeout { close: None, counter: counter.clone() });
        control.set(policy);
        (tx, body, counter)
    }

    fn chunk(n: usize) -> Chunk {
        Ok(http_body::Frame::data(Bytes::from(vec![b'x'; n])))
    }

    #[tokio::test(start_paused = true)]
    async fn a_whole_body_must_be_complete_within_the_bound() {
        let (tx, mut body, counter) = fed(BodyPolicy::Whole);
        tx.send(chunk(10)).await.unwrap();
        assert!(body.frame().await.unwrap().is_ok());
        let started = Instant::now();
        let err = body.frame().await.unwrap().unwrap_err();
        assert!(err.to_string().contains("did not arrive in time"), "{err}");
        assert_eq!(started.elapsed(), Duration::from_secs(30));
        assert_eq!(counter.get(), 1);
        assert!(body.frame().await.is_none(), "a timed-out body has ended");
        assert_eq!(counter.get(), 1, "and is counted once");
    }

    #[tokio::test(start_paused = true)]
    async fn a_streamed_body_may_take_long_while_it_keeps_coming() {
        let (tx, mut body, counter) = fed(BodyPolicy::Streamed);
        let feeder = tokio::spawn(async move {
            // 4 KiB every 2 s for 100 s: 2 KiB/s, above the floor.
            for _ in 0..50 {
                tokio::time::sleep(Duration::from_secs(2)).await;
                tx.send(chunk(4096)).await.unwrap();
            }
        });
        let mut got = 0;
        for _ in 0..50 {
            got += body.frame().await.unwrap().unwrap().into_data().unwrap().len();
        }
        assert_eq!(got, 50 * 4096);
        assert_eq!(counter.get(), 0);
        feeder.await.unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn a_streamed_body_that_trickles_or_stops_fails() {
        let (tx, mut body, counter) = fed(BodyPolicy::Streamed);
        let _feeder = tokio::spawn(async move {
            // 10 bytes every 5 s: under the floor once the first 30 s are spent.
            loop {
                tokio::time::sleep(Duration::from_secs(5)).await;
                if tx.send(chunk(10)).await.is_err() {
                    break;
                }
            }
        });
        let started = Instant::now();
        let failed = loop {
            match body.frame().await.unwrap() {
                Ok(_) => continue,
                Err(err) => break err,
            }
        };
        assert!(failed.to_string().contains("too slowly"), "{failed}");
        let took = started.elapsed();
        assert!(took > Duration::from_secs(30) && took < Duration::from_secs(40), "{took:?}");
        assert_eq!(counter.get(), 1);

        let (_tx, mut body, _) = fed(BodyPolicy::Streamed);
        let started = Instant::now();
        assert!(body.frame().await.unwrap().is_err());
        assert_eq!(started.elapsed(), Duration::from_secs(30), "no bytes at all for the bound");
    }

    #[tokio::test(start_paused = true)]
    async fn an_unbounded_body_waits_as_long_as_it_takes() {
        let (tx, mut body, _) = fed(BodyPolicy::Unbounded);
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_secs(3600)).await;
            tx.send(chunk(1)).await.unwrap();
        });
        assert!(body.frame().await.unwrap().is_ok());
    }
}
