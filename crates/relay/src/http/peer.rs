//! `ANY /internal/v1/forward?agent=ID&url=U`: a peer replica's request for
//! an agent whose session this replica holds (see [`crate::peer`]).
//! Authenticated by the peer's tag, not the admin token: the tag covers the
//! headers passed on and the body (its own tag, in a trailer), and each
//! refusal is counted and logged (see [`crate::peer`]).

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::response::{IntoResponse, Response};
use borealis_egress::headers::end_to_end;
use http::HeaderValue;
use http_body_util::BodyExt;

use super::AppState;
use super::problem::Problem;
use crate::auth::PeerHop;
use crate::forward::{self, Outbound};
use crate::metrics::PeerLabels;
use crate::peer::{
    BODY_HEADER, BodySigner, EMPTY_BODY, FAILURE_HEADER, HEADERS_HEADER, LENGTH_HEADER, LIMIT_HEADER, TAG_HEADER,
    TIMEOUT_HEADER, TRAILED_BODY, VerifiedBody, covered_url, encode_failure, named_headers, record_refusal,
    refusal_reason, strip_hop_headers,
};

#[derive(Debug, serde::Deserialize)]
pub struct PeerQuery {
    pub agent: String,
    pub url: String,
}

/// The longest time limit a peer's request may carry.
const MAX_HOP_TIMEOUT: Duration = Duration::from_secs(24 * 3600);

/// A tag this replica does not accept. Also the answer to a peer that took
/// a stale record (a replica restarted on the same address has a new id)
/// for this one, so it crosses the hop as "not connected here": the sender
/// looks the holder up again, and a webhook retries.
fn refused(detail: &str) -> Response {
    let mut response = Problem::new(http::StatusCode::UNAUTHORIZED, "unauthorized", detail.to_owned()).into_response();
    let failure = encode_failure(crate::forward::ForwardFailure::AgentNotConnected);
    response.headers_mut().insert(FAILURE_HEADER, HeaderValue::try_from(failure).expect("ASCII"));
    response
}

pub async fn forward(State(state): State<Arc<AppState>>, request: Request) -> Response {
    let (parts, body) = request.into_parts();
    let query = match axum::extract::Query::<PeerQuery>::try_from_uri(&parts.uri) {
        Ok(query) => query.0,
        Err(err) => return Problem::bad_request("invalid-query", err.body_text()).into_response(),
    };
    let peer_addr = parts.extensions.get::<crate::serve::RemoteAddr>().map(|addr| addr.0);
    let refuse = |reason: &'static str, detail: &str| {
        record_refusal(&state.metrics, peer_addr, reason, detail);
        refused(&format!("peer tag refused: {detail}"))
    };
    let header = |name: &str| parts.headers.get(name).and_then(|v| v.to_str().ok());
    let Some(presented) = header(TAG_HEADER) else { return refuse("missing", "no tag") };
    let (names, body_kind) = (header(HEADERS_HEADER).unwrap_or_default(), header(BODY_HEADER).unwrap_or_default());
    if ![EMPTY_BODY, TRAILED_BODY].contains(&body_kind) {
        return refuse("malformed", "it does not say what its body is");
    }
    // The headers the tag names, with the request's own content-length
    // back; any other header was added on the way and is dropped.
    let mut received = end_to_end(&parts.headers);
    if let Some(length) = received.get(LENGTH_HEADER).cloned() {
        received.insert(http::header::CONTENT_LENGTH, length);
    }
    strip_hop_headers(&mut received);
    let headers = named_headers(&received, names);
    // The hop's own limits, as sent, are covered too.
    let limits = format!("{},{}", header(TIMEOUT_HEADER).unwrap_or_default(), header(LIMIT_HEADER).unwrap_or_default());
    let covered = covered_url(&query.url, names, &headers, body_kind, &limits);
    let hop =
        PeerHop { from: "", to: &state.replica.id, method: parts.method.as_str(), agent: &query.agent, url: &covered };
    let peer = match state.auth.peer_key().verify(presented, &hop) {
        Ok(tag) if state.peer_nonces.first_use(&tag, state.replica.now()) => tag.from,
        Ok(_) => return refuse("replayed", "it was used before"),
        Err(err) => return refuse(refusal_reason(&err), &err.to_string()),
    };
    let body = if body_kind == EMPTY_BODY {
        // Whatever came with it is not the request's: the tag says none.
        forward::full(bytes::Bytes::new())
    } else {
        let signer = BodySigner {
            key: state.auth.peer_key(),
            from: peer.clone(),
            to: state.replica.id.clone(),
            agent: query.agent.clone(),
            head_tag: presented.to_owned(),
        };
        let body = body.map_err(|e| -> forward::BoxError { Box::new(e) }).boxed_unsync();
        VerifiedBody::new(body, signer, state.metrics.clone(), peer_addr).boxed_unsync()
    };
    let number = |name: &str| parts.headers.get(name).and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
    // The caller's time limit, bounded all the same.
    let timeout =
        number(TIMEOUT_HEADER).map(Duration::from_millis).unwrap_or(state.config.request_timeout).min(MAX_HOP_TIMEOUT);
    let limit = number(LIMIT_HEADER).unwrap_or(state.config.max_body_bytes).min(state.config.max_body_bytes);
    state.metrics.peer_forwarded.get_or_create(&PeerLabels { direction: "received" }).inc();
    tracing::debug!(peer, agent = &query.agent, "request from a peer replica");
    let outbound = Outbound { method: parts.method, url: query.url, headers, body, timeout, limit };
    match state.forwarder.send_here(&crate::peer::parse_hop_agent(&query.agent), outbound).await {
        Ok(mut reply) => {
            // The destination's reply must not pass for the hop's own failure.
            strip_hop_headers(reply.headers_mut());
            reply.map(Body::new)
        }
        Err(err) => {
            let failure = encode_failure(err.failure);
            let mut response = Problem::from(err).into_response();
            response.headers_mut().insert(FAILURE_HEADER, HeaderValue::try_from(failure).expect("ASCII"));
            response
        }
    }
}
