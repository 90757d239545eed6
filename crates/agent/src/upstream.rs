//! The destination call every request makes, however it came (a `Forward`
//! call or a lane): the head checked, the destination called under
//! `--max-concurrency`, and its response read whole or piece by piece, with
//! the relay's cancel and the deadline watched throughout.

use std::sync::Arc;
use std::time::{Duration, Instant};

use borealis_egress::headers::end_to_end;
use borealis_egress::reqwest;
use borealis_protocol::MAX_INLINE_BODY_BYTES;
use borealis_protocol::v1::{self, ErrorCode};
use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue};
use tokio::sync::OwnedSemaphorePermit;
use tokio_util::sync::CancellationToken;

use crate::Agent;

/// Why a request stopped before it completed.
#[derive(Debug)]
pub enum Stop {
    /// The relay cancelled it (or went away): it is told nothing.
    Cancelled,
    /// A failure the relay is told of.
    Failed(ErrorCode, String),
}

/// The relay's deadline for a request, from its `timeout_ms`.
#[derive(Clone, Copy)]
pub struct Deadline(Option<tokio::time::Instant>);

impl Deadline {
    /// `0`: no deadline.
    pub fn in_ms(timeout_ms: u64) -> Self {
        Self((timeout_ms > 0).then(|| tokio::time::Instant::now() + Duration::from_millis(timeout_ms)))
    }

    pub async fn reached(self) {
        match self.0 {
            Some(at) => tokio::time::sleep_until(at).await,
            None => std::future::pending().await,
        }
    }
}

/// A destination that answered: its response, the head to send back, and
/// the `--max-concurrency` slot the request holds until it is done.
pub struct Answered {
    response: reqwest::Response,
    pub head: v1::ResponseHead,
    pub status: u16,
    /// Largest body the response may have.
    limit: u64,
    /// Body bytes read so far.
    read: u64,
    _permit: OwnedSemaphorePermit,
}

/// Checks `head`, then calls its destination with `upload` as the body (or
/// the head's inline body when `None`).
pub async fn call(
    agent: &Arc<Agent>,
    head: v1::RequestHead,
    upload: Option<reqwest::Body>,
    cancel: &CancellationToken,
    deadline: Deadline,
) -> Result<Answered, Stop> {
    let url = agent.egress.check_url(&head.url).map_err(|err| Stop::Failed(err.code(), err.to_string()))?;
    let invalid = |message: String| Stop::Failed(ErrorCode::InvalidRequest, message);
    if head.has_body && !head.body.is_empty() {
        return Err(invalid("a head with body frames to follow carries a body too".into()));
    }
    let method = http::Method::from_bytes(head.method.as_bytes())
        .map_err(|_| invalid(format!("invalid method {:?}", head.method)))?;
    let mut headers = HeaderMap::with_capacity(head.headers.len());
    for header in &head.headers {
        match (HeaderName::from_bytes(header.name.as_bytes()), HeaderValue::from_bytes(&header.value)) {
            (Ok(name), Ok(value)) => {
                headers.append(name, value);
            }
            _ => return Err(invalid(format!("invalid header {:?}", header.name))),
        }
    }
    let headers = end_to_end(&headers);

    let permit = tokio::select! {
        permit = agent.limiter.clone().acquire_owned() => permit.expect("the limiter is never closed"),
        () = cancel.cancelled() => return Err(Stop::Cancelled),
        () = deadline.reached() => return Err(Stop::Failed(ErrorCode::Timeout, "the agent was at --max-concurrency until the deadline".into())),
    };
    let body = match upload {
        Some(body) => Some(body),
        None => (!head.body.is_empty()).then(|| reqwest::Body::from(head.body)),
    };
    let started = Instant::now();
    let response = tokio::select! {
        response = agent.egress.send(method, url.clone(), headers, body) => response,
        () = cancel.cancelled() => return Err(Stop::Cancelled),
        () = deadline.reached() => {
            let destination = borealis_egress::client::destination(&url);
            return Err(Stop::Failed(ErrorCode::Timeout, format!("{destination} did not answer before the deadline")));
        }
    };
    let response = response.map_err(|err| Stop::Failed(err.code(), err.to_string()))?;
    agent.metrics.latency.observe(started.elapsed().as_secs_f64());
    let status = response.status().as_u16();
    let limit = if head.max_response_bytes == 0 {
        agent.config.max_body_bytes
    } else {
        head.max_response_bytes.min(agent.config.max_body_bytes)
    };
    if let Some(length) = response.content_length().filter(|&length| length > limit) {
        return Err(Stop::Failed(
            ErrorCode::BodyTooLarge,
            format!("the response body ({length} bytes) is larger than {limit} bytes"),
        ));
    }
    let head = v1::ResponseHead {
        status: u32::from(status),
        headers: end_to_end(response.headers())
            .iter()
            .map(|(name, value)| v1::Header { name: name.to_string(), value: Bytes::copy_from_slice(value.as_bytes()) })
            .collect(),
        body: Bytes::new(),
        complete: false,
    };
    Ok(Answered { response, head, status, limit, read: 0, _permit: permit })
}

impl Answered {
    /// Whether the body is small and of known length, so that it is read
    /// whole and sent in the head.
    pub fn fits_the_head(&self) -> bool {
        self.response.content_length().is_some_and(|length| length <= MAX_INLINE_BODY_BYTES as u64)
    }

    /// The next piece of the body; `None` at its end.
    pub async fn next_chunk(&mut self, cancel: &CancellationToken, deadline: Deadline) -> Result<Option<Bytes>, Stop> {
        let chunk = tokio::select! {
            chunk = self.response.chunk() => chunk,
            () = cancel.cancelled() => return Err(Stop::Cancelled),
            () = deadline.reached() => return Err(Stop::Failed(ErrorCode::Timeout, "the response did not finish before the deadline".into())),
        };
        let chunk = chunk.map_err(|err| {
            let cause = borealis_egress::client::root_cause(&err);
            Stop::Failed(ErrorCode::UpstreamFailed, format!("the destination broke off the response: {cause}"))
        })?;
        self.read += chunk.as_ref().map_or(0, |c| c.len() as u64);
        if self.read > self.limit {
            let message = format!("the response body is larger than {} bytes", self.limit);
            return Err(Stop::Failed(ErrorCode::BodyTooLarge, message));
        }
        Ok(chunk)
    }

    /// Reads the whole (small) body into the head, which is then complete.
    pub async fn read_into_head(&mut self, cancel: &CancellationToken, deadline: Deadline) -> Result<(), Stop> {
        let mut whole = bytes::BytesMut::new();
        while let Some(chunk) = self.next_chunk(cancel, deadline).await? {
            whole.extend_from_slice(&chunk);
        }
        self.head.body = whole.freeze();
        self.head.complete = true;
        Ok(())
    }
}
