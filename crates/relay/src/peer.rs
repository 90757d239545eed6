//! Requests for agents whose sessions another replica holds. The replica
//! that receives such a request finds the holder in the store's session
//! records and sends the request to the holder's internal route
//! ([`FORWARD_PATH`], tagged with a [`PeerKey`] tag), which forwards it
//! down its own session and streams the reply back. Bodies stream both
//! ways; the deadline travels in a header; a caller that goes away closes
//! the hop's connection, which the holder reads as a cancel. One holder is
//! asked, once: nothing is sent to an agent twice.

use std::collections::BTreeMap;
use std::sync::Arc;

use borealis_egress::headers::end_to_end;
use borealis_egress::reqwest;
use borealis_protocol::v1::ErrorCode;
use borealis_store::Store;
use futures_util::TryStreamExt;
use futures_util::future::BoxFuture;
use http::HeaderValue;
use http_body_util::BodyExt;

use crate::auth::{PeerHop, PeerKey};
use crate::cluster::Replica;
use crate::forward::{ForwardError, ForwardFailure, Outbound, PeerRoute, Reply, failed, streamed};
use crate::metrics::{Metrics, PeerLabels};

/// How much longer than the request's time limit the forwarding replica
/// waits for the holder's answer, which carries the holder's own timeout.
const HOP_GRACE: std::time::Duration = std::time::Duration::from_secs(1);

/// The holder's route for requests from its peers.
pub const FORWARD_PATH: &str = "/internal/v1/forward";
/// The sending replica's tag.
pub const TAG_HEADER: &str = "x-borealis-peer";
/// What is left of the request's time limit, in milliseconds.
pub const TIMEOUT_HEADER: &str = "x-borealis-timeout-ms";
/// The largest body either way, in bytes.
pub const LIMIT_HEADER: &str = "x-borealis-max-body-bytes";
/// On a reply that is the holder's failure, not the destination's answer:
/// the failure, as [`encode_failure`] writes it.
pub const FAILURE_HEADER: &str = "x-borealis-forward-failure";

/// Removes the headers of the hop itself: from a request before it goes to
/// the destination, and from the destination's reply before it crosses back.
pub fn strip_hop_headers(headers: &mut http::HeaderMap) {
    for name in [TAG_HEADER, TIMEOUT_HEADER, LIMIT_HEADER, FAILURE_HEADER] {
        headers.remove(name);
    }
}

pub struct Peers {
    replica: Arc<Replica>,
    store: Arc<dyn Store>,
    key: PeerKey,
    client: reqwest::Client,
    metrics: Arc<Metrics>,
    /// Holders found lately, by agent: the lookup is two reads, too many
    /// for every request. An entry is dropped when its holder cannot be
    /// reached or says it no longer holds the agent.
    holders: std::sync::Mutex<std::collections::HashMap<String, (Holder, std::time::Instant)>>,
}

/// A replica holding an agent's session: its id and internal URL.
#[derive(Clone)]
struct Holder {
    id: String,
    url: String,
}

/// How long a holder found in the store is used without looking again.
const HOLDER_TTL: std::time::Duration = std::time::Duration::from_secs(1);

impl Peers {
    pub fn new(
        replica: Arc<Replica>,
        store: Arc<dyn Store>,
        key: PeerKey,
        metrics: Arc<Metrics>,
    ) -> Result<Self, reqwest::Error> {
        let client = reqwest::Client::builder()
            .no_proxy()
            .redirect(reqwest::redirect::Policy::none())
            .connect_timeout(std::time::Duration::from_secs(5))
            .tcp_nodelay(true)
            .build()?;
        Ok(Self { replica, store, key, client, metrics, holders: Default::default() })
    }

    /// The holder of `agent_id`'s sessions, from the cache while it is fresh.
    async fn holder_cached(&self, agent_id: &str) -> Result<Option<Holder>, borealis_store::StoreError> {
        if let Some((holder, at)) = self.holders.lock().expect("holders lock").get(agent_id)
            && at.elapsed() < HOLDER_TTL
        {
            return Ok(Some(holder.clone()));
        }
        let found = self.holder(agent_id).await?;
        let mut holders = self.holders.lock().expect("holders lock");
        match &found {
            Some(holder) => {
                holders.insert(agent_id.to_owned(), (holder.clone(), std::time::Instant::now()));
            }
            None => {
                holders.remove(agent_id);
            }
        }
        Ok(found)
    }

    fn forget(&self, agent_id: &str) {
        self.holders.lock().expect("holders lock").remove(agent_id);
    }

    /// The live replica holding most sessions of `agent_id`, if another
    /// replica holds any.
    async fn holder(&self, agent_id: &str) -> Result<Option<Holder>, borealis_store::StoreError> {
        let since = self.replica.alive_since();
        let mut held: BTreeMap<String, usize> = BTreeMap::new();
        for session in self.store.sessions(Some(agent_id), since).await? {
            if session.replica_id != self.replica.id {
                *held.entry(session.replica_id).or_default() += 1;
            }
        }
        if held.is_empty() {
            return Ok(None);
        }
        let replicas = self.store.replicas(since).await?;
        Ok(replicas
            .into_iter()
            .filter_map(|r| Some((held.get(&r.id).copied()?, Holder { url: r.peer_url?, id: r.id })))
            .max_by_key(|(count, _)| *count)
            .map(|(_, holder)| holder))
    }

    async fn forward(&self, holder: &Holder, agent_id: &str, outbound: Outbound) -> Result<Reply, ForwardError> {
        let Outbound { method, url, mut headers, body, timeout, limit } = outbound;
        let peer = &holder.url;
        let mut target = reqwest::Url::parse(&format!("{peer}{FORWARD_PATH}"))
            .map_err(|e| ForwardError::new(ForwardFailure::Internal, format!("peer URL {peer:?}: {e}")))?;
        target.query_pairs_mut().append_pair("agent", agent_id).append_pair("url", &url);
        let hop =
            PeerHop { from: &self.replica.id, to: &holder.id, method: method.as_str(), agent: agent_id, url: &url };
        let tag = HeaderValue::try_from(self.key.mint(&hop)).expect("a tag is ASCII");
        headers.insert(TAG_HEADER, tag);
        headers.insert(TIMEOUT_HEADER, HeaderValue::from(timeout.as_millis() as u64));
        headers.insert(LIMIT_HEADER, HeaderValue::from(limit));
        let mut request = self.client.request(method, target).headers(headers);
        if !http_body::Body::is_end_stream(&body) {
            request = request.body(reqwest::Body::wrap_stream(body.into_data_stream()));
        }
        self.metrics.peer_forwarded.get_or_create(&PeerLabels { direction: "sent" }).inc();
        // The holder keeps the deadline and answers a typed timeout; this
        // one, a little later, only covers a holder that stopped answering.
        let response = match tokio::time::timeout(timeout + HOP_GRACE, request.send()).await {
            Err(_) => {
                let detail = format!("the replica holding agent {agent_id:?} did not answer within {timeout:?}");
                return Err(failed(ErrorCode::Timeout, detail));
            }
            Ok(Err(err)) => {
                // The holder is gone (it died, and its records have not
                // lapsed yet): the agent reconnects to a live replica.
                let detail = format!("the replica holding agent {agent_id:?} cannot be reached ({err})");
                return Err(ForwardError::new(ForwardFailure::AgentNotConnected, detail));
            }
            Ok(Ok(response)) => response,
        };
        if let Some(failure) = response.headers().get(FAILURE_HEADER).and_then(|v| v.to_str().ok()) {
            // The holder's own failure (it strips this header from every
            // destination's reply), its problem read up to a bound.
            let failure = decode_failure(failure);
            let body =
                crate::forward::read_body(streamed(response.bytes_stream().map_err(std::io::Error::other)), 16 << 10)
                    .await
                    .unwrap_or_default();
            let problem: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
            let detail = problem["detail"].as_str().unwrap_or("the replica holding the agent failed").to_owned();
            return Err(ForwardError::new(failure, detail));
        }
        let mut reply = http::Response::builder().status(response.status());
        if let Some(map) = reply.headers_mut() {
            *map = end_to_end(response.headers());
        }
        let download = response.bytes_stream().map_err(std::io::Error::other);
        Ok(reply.body(streamed(download)).expect("status and headers come from a valid response"))
    }
}

impl PeerRoute for Peers {
    fn send<'a>(
        &'a self,
        agent_id: &'a str,
        outbound: Outbound,
    ) -> BoxFuture<'a, Result<Result<Reply, ForwardError>, Outbound>> {
        Box::pin(async move {
            let peer = match self.holder_cached(agent_id).await {
                Ok(Some(peer)) => peer,
                Ok(None) => return Err(outbound),
                Err(err) => {
                    let detail = format!("the agents' sessions cannot be read: {err}");
                    return Ok(Err(ForwardError::new(ForwardFailure::Internal, detail)));
                }
            };
            let result = self.forward(&peer, agent_id, outbound).await;
            if let Err(err) = &result
                && matches!(err.failure, ForwardFailure::AgentNotConnected | ForwardFailure::UnknownAgent)
            {
                // The holder is gone, or holds no instance any more: look again next time.
                self.forget(agent_id);
            }
            Ok(result)
        })
    }
}

/// A failure as it crosses the hop.
pub fn encode_failure(failure: ForwardFailure) -> String {
    match failure {
        ForwardFailure::Code(code) => format!("code:{}", code as i32),
        ForwardFailure::UnknownAgent => "unknown-agent".into(),
        ForwardFailure::AgentNotConnected => "agent-not-connected".into(),
        ForwardFailure::Draining => "draining".into(),
        ForwardFailure::NotTaken => "not-taken".into(),
        ForwardFailure::AgentFailed => "agent-failed".into(),
        ForwardFailure::AgentLost => "agent-lost".into(),
        ForwardFailure::AgentProtocol => "agent-protocol".into(),
        ForwardFailure::Internal => "internal".into(),
    }
}

pub fn decode_failure(text: &str) -> ForwardFailure {
    match text {
        "unknown-agent" => ForwardFailure::UnknownAgent,
        "agent-not-connected" => ForwardFailure::AgentNotConnected,
        "draining" => ForwardFailure::Draining,
        "not-taken" => ForwardFailure::NotTaken,
        "agent-failed" => ForwardFailure::AgentFailed,
        "agent-lost" => ForwardFailure::AgentLost,
        "agent-protocol" => ForwardFailure::AgentProtocol,
        other => match other.strip_prefix("code:").and_then(|n| n.parse::<i32>().ok()) {
            Some(code) => ForwardFailure::Code(ErrorCode::try_from(code).unwrap_or(ErrorCode::Internal)),
            None => ForwardFailure::Internal,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failures_cross_the_hop_unchanged() {
        let all = [
            ForwardFailure::Code(ErrorCode::Timeout),
            ForwardFailure::Code(ErrorCode::DestinationNotAllowed),
            ForwardFailure::UnknownAgent,
            ForwardFailure::AgentNotConnected,
            ForwardFailure::Draining,
            ForwardFailure::NotTaken,
            ForwardFailure::AgentFailed,
            ForwardFailure::AgentLost,
            ForwardFailure::AgentProtocol,
            ForwardFailure::Internal,
        ];
        for failure in all {
            assert_eq!(decode_failure(&encode_failure(failure)), failure);
        }
        assert_eq!(decode_failure("nonsense"), ForwardFailure::Internal);
    }
}
