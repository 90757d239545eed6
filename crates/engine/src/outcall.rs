//! One outbound call, made the same way by every caller: webhook attempts,
//! Flagger hooks, rollout drivers and metric-provider queries. A call is
//! built from its parts, stamped (`webhook-id`, and a signature when
//! signed), sent direct or through an agent, and its reply read up to a
//! bound, all within one timeout. A call that gets no reply ends in a
//! [`Failure`] that says whether the request left and whether another try
//! may pass.

use std::time::{Duration, SystemTime};

use borealis_core::team::AgentRef;
use bytes::Bytes;
use futures_util::StreamExt;
use http::{HeaderMap, HeaderName, HeaderValue};
use http_body_util::BodyExt;

use crate::signing::Stamp;
use crate::transport::{self, Transport};
pub use crate::transport::{Failure, Sent};

/// How much of a reply's body a caller wants.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Keep {
    /// Its first bytes, for the record; the rest is not read.
    Prefix(usize),
    /// All of it, at most this many bytes (more is a read error).
    Whole(usize),
}

/// What came back.
#[derive(Debug, Clone)]
pub struct Reply {
    pub status: u16,
    /// `Retry-After`, in seconds or as a date.
    pub retry_after: Option<Duration>,
    /// The body as kept (invalid UTF-8 replaced), or why it could not be read.
    pub body: Result<String, String>,
}

/// One outbound call.
pub struct Outcall {
    /// The agent it goes through; direct when none.
    pub agent: Option<AgentRef>,
    pub method: http::Method,
    pub url: String,
    pub headers: HeaderMap,
    pub body: Bytes,
    /// For the whole exchange: sending, the reply's head and its body.
    pub timeout: Duration,
    pub keep: Keep,
}

impl Outcall {
    /// A call from rendered text: a method or header that cannot be sent
    /// is a failure of its own, before anything leaves.
    pub fn from_parts(
        agent: Option<AgentRef>,
        (method, url): (&str, &str),
        headers: &[(String, String)],
        body: Option<&str>,
        (timeout, keep): (Duration, Keep),
    ) -> Result<Self, Failure> {
        let method = http::Method::from_bytes(method.as_bytes())
            .map_err(|_| Failure::unsendable(format!("invalid method {method:?}")))?;
        let mut map = HeaderMap::new();
        for (name, value) in headers {
            match (HeaderName::from_bytes(name.as_bytes()), HeaderValue::from_str(value)) {
                (Ok(name), Ok(value)) => {
                    map.append(name, value);
                }
                _ => return Err(Failure::unsendable(format!("header {name:?} cannot be sent"))),
            }
        }
        Ok(Self {
            agent,
            method,
            url: url.to_owned(),
            headers: map,
            body: Bytes::from(body.unwrap_or_default().to_owned()),
            timeout,
            keep,
        })
    }

    /// A JSON `POST` of `body`.
    pub fn post_json(
        agent: Option<AgentRef>,
        url: &str,
        body: &serde_json::Value,
        (timeout, keep): (Duration, Keep),
    ) -> Self {
        let mut headers = HeaderMap::new();
        headers.insert(http::header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
        Self {
            agent,
            method: http::Method::POST,
            url: url.to_owned(),
            headers,
            body: Bytes::from(body.to_string()),
            timeout,
            keep,
        }
    }

    /// Carries `stamp`: `webhook-id`, and when signed the timestamp and
    /// the signature over this call's body.
    pub fn stamped(mut self, stamp: &Stamp) -> Self {
        stamp.apply(&mut self.headers);
        self
    }

    /// Sends it through `transport` (bodies either way at most `limit`
    /// bytes) and reads what comes back.
    pub async fn send(self, transport: &dyn Transport, limit: u64) -> Result<Reply, Failure> {
        let Outcall { agent, method, url, headers, body, timeout, keep } = self;
        let request = transport::Request { method, url, headers, body, timeout, limit };
        let exchange = async {
            let response = transport.send(agent.as_ref(), request).await?;
            let status = response.status().as_u16();
            let retry_after = retry_after(response.headers());
            let body = read(response.into_body(), keep).await;
            Ok(Reply { status, retry_after, body })
        };
        tokio::time::timeout(timeout, exchange).await.unwrap_or_else(|_| {
            Err(Failure {
                detail: format!("no complete answer within {}", humantime::format_duration(timeout)),
                retryable: true,
                sent: Sent::Yes,
            })
        })
    }
}

async fn read(body: transport::Body, keep: Keep) -> Result<String, String> {
    let bytes = match keep {
        Keep::Whole(limit) => {
            transport::read_body(body, limit).await.map_err(|e| format!("the reply could not be read: {e}"))?
        }
        Keep::Prefix(limit) => {
            // What arrived before the body broke off is kept: it is a record.
            let mut stream = body.into_data_stream();
            let mut prefix = Vec::new();
            while prefix.len() < limit {
                match stream.next().await {
                    Some(Ok(chunk)) => prefix.extend_from_slice(&chunk),
                    _ => break,
                }
            }
            prefix.truncate(limit);
            Bytes::from(prefix)
        }
    };
    Ok(String::from_utf8_lossy(&bytes).into_owned())
}

/// `Retry-After` in seconds or as an HTTP date.
fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    let value = headers.get(http::header::RETRY_AFTER)?.to_str().ok()?.trim();
    if let Ok(seconds) = value.parse::<u64>() {
        return Some(Duration::from_secs(seconds));
    }
    let at = httpdate::parse_http_date(value).ok()?;
    Some(at.duration_since(SystemTime::now()).unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parts_that_cannot_be_sent_fail_before_anything_leaves() {
        let limits = (Duration::from_secs(1), Keep::Prefix(0));
        let bad_method = Outcall::from_parts(None, ("GE T", "http://x/"), &[], None, limits).err().unwrap();
        assert_eq!(bad_method, Failure::unsendable("invalid method \"GE T\"".into()));
        let bad_header = Outcall::from_parts(None, ("POST", "http://x/"), &[("a b".into(), "v".into())], None, limits)
            .err()
            .unwrap();
        assert_eq!((bad_header.sent, bad_header.retryable), (Sent::No, false));
        assert!(bad_header.detail.contains("\"a b\""), "{bad_header}");
        let ok = Outcall::from_parts(None, ("PUT", "http://x/"), &[("x-a".into(), "1".into())], Some("b"), limits)
            .ok()
            .unwrap();
        assert_eq!((ok.method, ok.headers["x-a"].to_str().unwrap(), &ok.body[..]), (http::Method::PUT, "1", &b"b"[..]));
    }

    #[test]
    fn retry_after_reads_seconds_and_dates() {
        let mut headers = HeaderMap::new();
        assert_eq!(retry_after(&headers), None);
        headers.insert(http::header::RETRY_AFTER, HeaderValue::from_static("7"));
        assert_eq!(retry_after(&headers), Some(Duration::from_secs(7)));
        headers.insert(http::header::RETRY_AFTER, HeaderValue::from_static("Wed, 21 Oct 2015 07:28:00 GMT"));
        assert_eq!(retry_after(&headers), Some(Duration::ZERO), "a date passed means now");
        headers.insert(http::header::RETRY_AFTER, HeaderValue::from_static("soon"));
        assert_eq!(retry_after(&headers), None);
    }

    #[tokio::test]
    async fn a_prefix_stops_reading_and_whole_refuses_more() {
        let text = || transport::full(Bytes::from_static(b"0123456789"));
        assert_eq!(read(text(), Keep::Prefix(4)).await, Ok("0123".into()));
        assert_eq!(read(text(), Keep::Prefix(64)).await, Ok("0123456789".into()));
        assert_eq!(read(text(), Keep::Whole(64)).await, Ok("0123456789".into()));
        assert!(read(text(), Keep::Whole(4)).await.unwrap_err().contains("larger than 4 bytes"));
    }
}
