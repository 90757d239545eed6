//! The way out: the engine hands each call to a [`Transport`], which the
//! relay implements (direct under its address guard, through an agent
//! connected here, or through the replica that holds the agent). The engine
//! knows only what a call needs and what a failure means for it.

use std::time::Duration;

use borealis_core::team::AgentRef;
use bytes::Bytes;
use http::HeaderMap;
use http_body_util::BodyExt;

/// Whether a call that got no answer reached the destination.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sent {
    /// It never left (no agent took it, a hop was refused, the connection
    /// was refused, or it could not be built): retried like any other
    /// failure.
    No,
    /// The path broke after it left (an agent or the replica holding it
    /// went away): it may have arrived, so with no retries left a run's
    /// callback may still decide it.
    CutOff,
    /// It reached the destination, which failed to answer in time or in full.
    Yes,
}

/// A call that got no reply.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{detail}")]
pub struct Failure {
    pub detail: String,
    /// Whether another try may pass.
    pub retryable: bool,
    pub sent: Sent,
}

impl Failure {
    /// A call that could not be made as asked: no try will make it.
    pub fn unsendable(detail: String) -> Self {
        Self { detail, retryable: false, sent: Sent::No }
    }
}

/// A body either way: any stream of bytes, boxed.
pub type Body = http_body_util::combinators::UnsyncBoxBody<Bytes, BoxError>;
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// A reply's head, with its body still to read.
pub type Response = http::Response<Body>;

/// A body of bytes in memory.
pub fn full(bytes: impl Into<Bytes>) -> Body {
    http_body_util::Full::new(bytes.into()).map_err(|never| match never {}).boxed_unsync()
}

/// Reads `body` whole, failing once it is larger than `limit` bytes.
pub async fn read_body(mut body: Body, limit: usize) -> Result<Bytes, String> {
    let mut read = bytes::BytesMut::new();
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| e.to_string())?;
        if let Ok(data) = frame.into_data() {
            if read.len() + data.len() > limit {
                return Err(format!("the body is larger than {limit} bytes"));
            }
            read.extend_from_slice(&data);
        }
    }
    Ok(read.freeze())
}

/// One request as the engine sends it: whole, with its bounds.
#[derive(Debug, Clone)]
pub struct Request {
    pub method: http::Method,
    pub url: String,
    pub headers: HeaderMap,
    pub body: Bytes,
    /// For the whole exchange.
    pub timeout: Duration,
    /// Largest body either way, in bytes.
    pub limit: u64,
}

/// Carries the engine's calls out.
#[async_trait::async_trait]
pub trait Transport: Send + Sync {
    /// Sends `request` through `agent`, or direct when there is none. A
    /// call that gets no reply says whether it left and whether another
    /// try may pass.
    async fn send(&self, agent: Option<&AgentRef>, request: Request) -> Result<Response, Failure>;
}
