//! `ANY /internal/v1/forward?agent=ID&url=U`: a peer replica's request for
//! an agent whose session this replica holds (see [`crate::peer`]).
//! Authenticated by the peer's tag, not the admin token.

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
use crate::peer::{FAILURE_HEADER, LIMIT_HEADER, TAG_HEADER, TIMEOUT_HEADER, encode_failure, strip_hop_headers};

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
    let presented = parts.headers.get(TAG_HEADER).and_then(|v| v.to_str().ok()).unwrap_or_default();
    let hop = PeerHop {
        from: "",
        to: &state.replica.id,
        method: parts.method.as_str(),
        agent: &query.agent,
        url: &query.url,
    };
    let peer = match state.auth.peer_key().verify(presented, &hop) {
        Ok(tag) if state.peer_nonces.first_use(&tag) => tag.from,
        Ok(_) => return refused("peer tag refused: it was used before"),
        Err(err) => return refused(&format!("peer tag refused: {err}")),
    };
    let number = |name: &str| parts.headers.get(name).and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
    // The caller's time limit, bounded all the same.
    let timeout =
        number(TIMEOUT_HEADER).map(Duration::from_millis).unwrap_or(state.config.request_timeout).min(MAX_HOP_TIMEOUT);
    let limit = number(LIMIT_HEADER).unwrap_or(state.config.max_body_bytes).min(state.config.max_body_bytes);
    state.metrics.peer_forwarded.get_or_create(&PeerLabels { direction: "received" }).inc();
    tracing::debug!(peer, agent = &query.agent, "request from a peer replica");
    let mut headers = end_to_end(&parts.headers);
    strip_hop_headers(&mut headers);
    let outbound = Outbound {
        method: parts.method,
        url: query.url,
        headers,
        body: body.map_err(|e| -> forward::BoxError { Box::new(e) }).boxed_unsync(),
        timeout,
        limit,
    };
    match state.forwarder.send_here(&query.agent, outbound).await {
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
