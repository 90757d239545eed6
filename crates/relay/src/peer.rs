//! Requests for agents whose sessions another replica holds. The replica
//! that receives such a request finds the holder in the store's session
//! records and sends the request to the holder's internal route
//! ([`FORWARD_PATH`], tagged with a [`PeerKey`] tag), which forwards it
//! down its own session and streams the reply back. Bodies stream both
//! ways; the deadline travels in a header; a caller that goes away closes
//! the hop's connection, which the holder reads as a cancel. One holder is
//! asked, once: nothing is sent to an agent twice.
//!
//! # What a hop's tag covers
//!
//! The hop may cross a network in plain HTTP, so its [`PeerKey`] tag binds
//! all of the request the holder passes on, and each tag is accepted once,
//! within [`PEER_TAG_TTL`](crate::auth::PEER_TAG_TTL):
//! - the head tag ([`TAG_HEADER`]) covers the sending and receiving
//!   replicas, the method, the agent, the URL, the names of the request's
//!   end-to-end headers ([`HEADERS_HEADER`]) with a SHA-256 of their names
//!   and values, and whether a body follows ([`BODY_HEADER`]). The holder
//!   passes on only the headers named, so a header added on the way is
//!   dropped and one changed or removed fails the tag. `content-length`
//!   crosses as [`LENGTH_HEADER`] (a body goes chunked, to carry its
//!   trailer) and is covered as the request's own header;
//! - a body is streamed, so its digest cannot be in the head: the sender
//!   hashes it as it goes and, after the last chunk, sends a second tag in
//!   the [`BODY_TAG_TRAILER`] trailer, over the body's SHA-256 and the head
//!   tag's, under the same key. The holder hashes what it receives and keeps
//!   back the body's last [`HOLD_BACK`] bytes (all of a smaller body) until
//!   that tag verifies; if it does not, or is missing, the body fails, so
//!   the destination never receives a complete request that was changed.
//!   Limit: for a body over [`HOLD_BACK`], a changed request's beginning
//!   may reach the destination before the request is cut off (an
//!   incomplete body: a `content-length` short, or no last chunk). Give
//!   replicas `https://` peer URLs where the network between them is not
//!   trusted: then nothing on the hop can be read or changed at all.
//!
//! A refused tag is counted (`borealis_peer_tags_refused_total{reason}`) and
//! logged with the peer's address, at most once per 10 s with how many went
//! unlogged ([`record_refusal`]). It is not limited per address: a MAC of 256
//! bits cannot be guessed, and a limit would let whoever shares a replica's
//! address (a NAT) stop that replica's hops.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, ready};
use std::time::Instant;

use borealis_core::team::AgentRef;
use borealis_egress::headers::end_to_end;
use borealis_egress::reqwest;
use borealis_protocol::v1::ErrorCode;
use borealis_store::ClusterStore;
use bytes::Bytes;
use futures_util::TryStreamExt;
use futures_util::future::BoxFuture;
use http::{HeaderMap, HeaderValue};
use http_body::Frame;
use ring::digest;

use crate::auth::{AuthError, PeerHop, PeerKey};
use crate::forward::{BoxError, ForwardError, ForwardFailure, Outbound, PeerRoute, Reply, failed, streamed};
use crate::metrics::{Metrics, PeerLabels, PeerRefusalLabels};
use borealis_engine::cluster::Replica;

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
/// The names of the request's headers the tag covers: sorted, comma-separated.
pub const HEADERS_HEADER: &str = "x-borealis-peer-headers";
/// The request's `content-length`, off the hop's own framing.
pub const LENGTH_HEADER: &str = "x-borealis-content-length";
/// What the tag says of the body: [`EMPTY_BODY`], or [`TRAILED_BODY`] (its
/// tag follows in the [`BODY_TAG_TRAILER`] trailer).
pub const BODY_HEADER: &str = "x-borealis-peer-body";
pub const EMPTY_BODY: &str = "empty";
pub const TRAILED_BODY: &str = "trailer";
/// The trailer after a body's last chunk: a tag over the body's SHA-256.
pub const BODY_TAG_TRAILER: &str = "x-borealis-peer-body-tag";
/// How many bytes of a body's end the holder keeps back until the body's
/// tag verifies (all of a body up to this size).
pub const HOLD_BACK: usize = 64 << 10;

/// Removes the headers of the hop itself: from a request before it goes to
/// the destination, and from the destination's reply before it crosses back.
pub fn strip_hop_headers(headers: &mut http::HeaderMap) {
    for name in [
        TAG_HEADER,
        TIMEOUT_HEADER,
        LIMIT_HEADER,
        FAILURE_HEADER,
        HEADERS_HEADER,
        LENGTH_HEADER,
        BODY_HEADER,
        BODY_TAG_TRAILER,
    ] {
        headers.remove(name);
    }
}

/// The names of `headers`, sorted and comma-separated, as [`HEADERS_HEADER`] says them.
pub fn header_names(headers: &HeaderMap) -> String {
    headers.keys().map(|name| name.as_str()).collect::<BTreeSet<_>>().into_iter().collect::<Vec<_>>().join(",")
}

/// The headers of `headers` that `names` lists, in its order.
pub fn named_headers(headers: &HeaderMap, names: &str) -> HeaderMap {
    let mut kept = HeaderMap::new();
    for name in names.split(',').filter_map(|name| http::HeaderName::from_bytes(name.as_bytes()).ok()) {
        for value in headers.get_all(&name) {
            kept.append(name.clone(), value.clone());
        }
    }
    kept
}

/// What the tag's MAC takes for "the URL": the URL, then the header names,
/// a SHA-256 of each named header's `name: value` lines, what the body is,
/// and the hop's own time and size limits (`timeout_ms,max_body_bytes` as
/// sent). The parts after the URL hold no newline of their own (names and
/// values cannot), so no two requests read the same.
pub fn covered_url(url: &str, names: &str, headers: &HeaderMap, body: &str, limits: &str) -> String {
    let mut sha = digest::Context::new(&digest::SHA256);
    for name in names.split(',').filter(|name| !name.is_empty()) {
        for value in headers.get_all(name) {
            for part in [name.as_bytes(), b": ", value.as_bytes(), b"\n"] {
                sha.update(part);
            }
        }
    }
    format!("{url}\nheaders:{names}\nheaders-sha256:{}\nbody:{body}\nlimits:{limits}", hex(sha.finish().as_ref()))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The hop a body's tag is for: the head tag's hop with no method (no
/// request has none, so a body's tag never passes for a head's) and, for
/// the URL, the SHA-256 of the head tag and of the body.
fn body_hop<'a>(from: &'a str, to: &'a str, agent: &'a str, bound: &'a str) -> PeerHop<'a> {
    PeerHop { from, to, method: "", agent, url: bound }
}

/// An agent as a hop names it (and its tags cover it): `TEAM/NAME`;
/// neither part can hold a `/`.
pub fn hop_agent(agent: &AgentRef) -> String {
    format!("{}/{}", agent.team, agent.name)
}

/// The agent a hop names; a bare name (a replica from before teams) is of
/// team `default`.
pub fn parse_hop_agent(text: &str) -> AgentRef {
    match text.split_once('/') {
        Some((team, name)) => AgentRef::new(team, name),
        None => AgentRef::new(borealis_store::DEFAULT_TEAM, text),
    }
}

fn body_binding(head_tag: &str, body: digest::Digest) -> String {
    let head = digest::digest(&digest::SHA256, head_tag.as_bytes());
    format!("body-of:{}\nbody-sha256:{}", hex(head.as_ref()), hex(body.as_ref()))
}

/// Who signs or checks one hop's body.
#[derive(Clone)]
pub struct BodySigner {
    pub key: PeerKey,
    pub from: String,
    pub to: String,
    pub agent: String,
    /// The head's tag, as sent.
    pub head_tag: String,
}

impl BodySigner {
    fn mint(&self, body: digest::Digest) -> String {
        let bound = body_binding(&self.head_tag, body);
        self.key.mint(&body_hop(&self.from, &self.to, &self.agent, &bound))
    }

    fn verify(&self, presented: &str, body: digest::Digest) -> Result<(), AuthError> {
        let bound = body_binding(&self.head_tag, body);
        let tag = self.key.verify(presented, &body_hop("", &self.to, &self.agent, &bound))?;
        if tag.from != self.from {
            return Err(AuthError::BadSignature);
        }
        Ok(())
    }
}

/// A hop's body as the sender streams it: its chunks, hashed as they go,
/// then a trailer with the body's tag. In a mutex only so that it is
/// `Sync`, as the HTTP client wants; only ever borrowed mutably.
struct SignedBody {
    inner: Mutex<crate::forward::Body>,
    sha: Option<digest::Context>,
    signer: BodySigner,
}

impl http_body::Body for SignedBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        loop {
            let Some(sha) = this.sha.as_mut() else { return Poll::Ready(None) };
            let inner = this.inner.get_mut().expect("a body's lock is never poisoned");
            match ready!(Pin::new(inner).poll_frame(cx)) {
                Some(Ok(frame)) => {
                    // The caller's own trailers do not cross the hop.
                    if let Ok(data) = frame.into_data() {
                        sha.update(&data);
                        return Poll::Ready(Some(Ok(Frame::data(data))));
                    }
                }
                Some(Err(err)) => return Poll::Ready(Some(Err(err))),
                None => {
                    let body = this.sha.take().expect("checked above").finish();
                    let tag = HeaderValue::try_from(this.signer.mint(body)).expect("a tag is ASCII");
                    let mut trailers = HeaderMap::new();
                    trailers.insert(BODY_TAG_TRAILER, tag);
                    return Poll::Ready(Some(Ok(Frame::trailers(trailers))));
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.sha.is_none()
    }
}

/// A hop's body as the holder receives it: passed on as it arrives but for
/// its last [`HOLD_BACK`] bytes, which follow once the trailer's tag
/// verifies over what arrived; a body whose tag fails or is missing ends
/// in an error, so the request it is part of is never completed.
pub struct VerifiedBody {
    inner: crate::forward::Body,
    sha: digest::Context,
    held: VecDeque<Bytes>,
    held_bytes: usize,
    verified: bool,
    failed: bool,
    signer: BodySigner,
    metrics: Arc<Metrics>,
    peer: Option<SocketAddr>,
}

impl VerifiedBody {
    pub fn new(
        inner: crate::forward::Body,
        signer: BodySigner,
        metrics: Arc<Metrics>,
        peer: Option<SocketAddr>,
    ) -> Self {
        let sha = digest::Context::new(&digest::SHA256);
        Self { inner, sha, held: VecDeque::new(), held_bytes: 0, verified: false, failed: false, signer, metrics, peer }
    }

    fn refuse(&mut self, detail: &str) -> BoxError {
        self.failed = true;
        record_refusal(&self.metrics, self.peer, "body", detail);
        format!("peer body refused: {detail}").into()
    }

    /// The next chunk that may go on: any once the body verified, else one
    /// that leaves at least [`HOLD_BACK`] bytes held.
    fn release(&mut self) -> Option<Bytes> {
        let front = self.held.front()?.len();
        if !self.verified && self.held_bytes - front < HOLD_BACK {
            return None;
        }
        self.held_bytes -= front;
        self.held.pop_front()
    }
}

impl http_body::Body for VerifiedBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        loop {
            if this.failed {
                return Poll::Ready(None);
            }
            if let Some(data) = this.release() {
                return Poll::Ready(Some(Ok(Frame::data(data))));
            }
            if this.verified {
                return Poll::Ready(None);
            }
            let frame = match ready!(Pin::new(&mut this.inner).poll_frame(cx)) {
                Some(Ok(frame)) => frame,
                Some(Err(err)) => return Poll::Ready(Some(Err(err))),
                None => return Poll::Ready(Some(Err(this.refuse("the body ended without its tag")))),
            };
            match frame.into_data() {
                Ok(data) => {
                    this.sha.update(&data);
                    this.held_bytes += data.len();
                    this.held.push_back(data);
                }
                Err(frame) => {
                    let trailers = frame.into_trailers().unwrap_or_default();
                    let presented = trailers.get(BODY_TAG_TRAILER).and_then(|v| v.to_str().ok()).unwrap_or_default();
                    match this.signer.verify(presented, this.sha.clone().finish()) {
                        Ok(()) => this.verified = true,
                        Err(err) => return Poll::Ready(Some(Err(this.refuse(&format!("its tag: {err}"))))),
                    }
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.failed || (self.verified && self.held.is_empty())
    }
}

/// The name a refusal is counted under.
pub fn refusal_reason(err: &AuthError) -> &'static str {
    match err {
        AuthError::BadSignature => "bad-signature",
        AuthError::Expired => "expired",
        _ => "malformed",
    }
}

/// By reason: when a refusal was last logged, and how many were not since.
static REFUSALS_LOGGED: Mutex<BTreeMap<&'static str, (Instant, u64)>> = Mutex::new(BTreeMap::new());

/// Counts a refused peer tag (`reason`: "missing", "malformed",
/// "bad-signature", "expired", "replayed", "body") and logs it with the
/// peer's address: at most once per 10 s for each reason, saying how many
/// went unlogged meanwhile.
pub fn record_refusal(metrics: &Metrics, peer: Option<SocketAddr>, reason: &'static str, detail: &str) {
    metrics.peer_tags_refused.get_or_create(&PeerRefusalLabels { reason }).inc();
    let mut logged = REFUSALS_LOGGED.lock().expect("refusals lock");
    let now = Instant::now();
    let unlogged = match logged.get_mut(reason) {
        Some((at, unlogged)) if now.duration_since(*at) < std::time::Duration::from_secs(10) => {
            *unlogged += 1;
            return;
        }
        Some((_, unlogged)) => *unlogged,
        None => 0,
    };
    logged.insert(reason, (now, 0));
    drop(logged);
    let peer = peer.map_or_else(|| "-".to_owned(), |p| p.to_string());
    tracing::warn!(%peer, reason, detail, unlogged, "peer tag refused (logged once per 10 s)");
}

pub struct Peers {
    replica: Arc<Replica>,
    store: Arc<dyn ClusterStore>,
    key: PeerKey,
    client: reqwest::Client,
    metrics: Arc<Metrics>,
    /// Holders found lately, by agent: the lookup is two reads, too many
    /// for every request. An entry is dropped when its holder cannot be
    /// reached or says it no longer holds the agent.
    holders: std::sync::Mutex<std::collections::HashMap<AgentRef, (Holder, std::time::Instant)>>,
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
        store: Arc<dyn ClusterStore>,
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

    /// The holder of `agent`'s sessions, from the cache while it is fresh.
    async fn holder_cached(&self, agent: &AgentRef) -> Result<Option<Holder>, borealis_store::StoreError> {
        if let Some((holder, at)) = self.holders.lock().expect("holders lock").get(agent)
            && at.elapsed() < HOLDER_TTL
        {
            return Ok(Some(holder.clone()));
        }
        let found = self.holder(agent).await?;
        let mut holders = self.holders.lock().expect("holders lock");
        match &found {
            Some(holder) => {
                holders.insert(agent.clone(), (holder.clone(), std::time::Instant::now()));
            }
            None => {
                holders.remove(agent);
            }
        }
        Ok(found)
    }

    fn forget(&self, agent: &AgentRef) {
        self.holders.lock().expect("holders lock").remove(agent);
    }

    /// The replica to ask for `agent`, if another replica holds a
    /// session of it: one seen within a lease before one seen longer ago (a
    /// replica cut from the database still serves its agents until they
    /// move, and is asked when no other has one), and among those the one
    /// holding the agent's newest session (an agent that moved is most
    /// likely where it connected last).
    async fn holder(&self, agent: &AgentRef) -> Result<Option<Holder>, borealis_store::StoreError> {
        // Records stay until their replica is forgotten, three leases on.
        let recorded_since = self.replica.now() - 3 * self.replica.lease;
        let mut newest: BTreeMap<String, std::time::SystemTime> = BTreeMap::new();
        for session in self.store.sessions(Some((&agent.team, &agent.name)), recorded_since).await? {
            if session.replica_id != self.replica.id {
                let at = newest.entry(session.replica_id).or_insert(session.connected_at);
                *at = (*at).max(session.connected_at);
            }
        }
        if newest.is_empty() {
            return Ok(None);
        }
        let alive_since = self.replica.alive_since();
        let replicas = self.store.replicas(recorded_since).await?;
        Ok(replicas
            .into_iter()
            .filter_map(|r| {
                let rank = (r.seen_at >= alive_since, *newest.get(&r.id)?);
                Some((rank, Holder { url: r.peer_url?, id: r.id }))
            })
            .max_by_key(|(rank, _)| *rank)
            .map(|(_, holder)| holder))
    }

    async fn forward(&self, holder: &Holder, agent: &AgentRef, outbound: Outbound) -> Result<Reply, ForwardError> {
        let agent_id = &agent.name;
        let hop_agent = hop_agent(agent);
        let Outbound { method, url, headers, body, timeout, limit } = outbound;
        let peer = &holder.url;
        let mut target = reqwest::Url::parse(&format!("{peer}{FORWARD_PATH}"))
            .map_err(|e| ForwardError::new(ForwardFailure::Internal, format!("peer URL {peer:?}: {e}")))?;
        target.query_pairs_mut().append_pair("agent", &hop_agent).append_pair("url", &url);
        // What the holder passes on, and so what the tag covers: the
        // end-to-end headers, none of the hop's own.
        let mut headers = end_to_end(&headers);
        strip_hop_headers(&mut headers);
        let empty = http_body::Body::is_end_stream(&body);
        let names = header_names(&headers);
        let limits = format!("{},{limit}", timeout.as_millis());
        let covered = covered_url(&url, &names, &headers, if empty { EMPTY_BODY } else { TRAILED_BODY }, &limits);
        let hop = PeerHop {
            from: &self.replica.id,
            to: &holder.id,
            method: method.as_str(),
            agent: &hop_agent,
            url: &covered,
        };
        let head_tag = self.key.mint(&hop);
        if let Some(length) = headers.remove(http::header::CONTENT_LENGTH) {
            headers.insert(LENGTH_HEADER, length);
        }
        headers.insert(HEADERS_HEADER, HeaderValue::try_from(names).expect("header names are a header value"));
        headers.insert(BODY_HEADER, HeaderValue::from_static(if empty { EMPTY_BODY } else { TRAILED_BODY }));
        headers.insert(TAG_HEADER, HeaderValue::try_from(head_tag.as_str()).expect("a tag is ASCII"));
        headers.insert(TIMEOUT_HEADER, HeaderValue::from(timeout.as_millis() as u64));
        headers.insert(LIMIT_HEADER, HeaderValue::from(limit));
        if !empty {
            headers.insert(http::header::TRAILER, HeaderValue::from_static(BODY_TAG_TRAILER));
        }
        let mut request = self.client.request(method, target).headers(headers);
        if !empty {
            let signer = BodySigner {
                key: self.key.clone(),
                from: self.replica.id.clone(),
                to: holder.id.clone(),
                agent: hop_agent.clone(),
                head_tag,
            };
            let sha = Some(digest::Context::new(&digest::SHA256));
            request = request.body(reqwest::Body::wrap(SignedBody { inner: Mutex::new(body), sha, signer }));
        }
        self.metrics.peer_forwarded.get_or_create(&PeerLabels { direction: "sent" }).inc();
        // The holder keeps the deadline and answers a typed timeout; this
        // one, a little later, only covers a holder that stopped answering.
        let response = match tokio::time::timeout(timeout + HOP_GRACE, request.send()).await {
            Err(_) => {
                let detail = format!("the replica holding agent {agent_id:?} did not answer within {timeout:?}");
                return Err(failed(ErrorCode::Timeout, detail));
            }
            Ok(Err(err)) if err.is_connect() => {
                // The holder is gone (it died, and its records have not
                // lapsed yet), and nothing was sent: the agent reconnects
                // to a live replica.
                let cause = borealis_egress::client::root_cause(&err);
                let detail = format!("the replica holding agent {agent_id:?} cannot be reached ({cause})");
                return Err(ForwardError::new(ForwardFailure::AgentNotConnected, detail));
            }
            Ok(Err(err)) => {
                // The request went to the holder, which went away before it
                // answered: it may have reached the destination.
                let cause = borealis_egress::client::root_cause(&err);
                let detail = format!(
                    "the replica holding agent {agent_id:?} went away after the request was sent to it ({cause}); \
                     the destination may have received it"
                );
                return Err(ForwardError::new(ForwardFailure::AgentLost, detail));
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
        agent: &'a AgentRef,
        outbound: Outbound,
    ) -> BoxFuture<'a, Result<Result<Reply, ForwardError>, Outbound>> {
        Box::pin(async move {
            let peer = match self.holder_cached(agent).await {
                Ok(Some(peer)) => peer,
                Ok(None) => return Err(outbound),
                Err(err) => {
                    let detail = format!("the agents' sessions cannot be read: {err}");
                    return Ok(Err(ForwardError::new(ForwardFailure::Internal, detail)));
                }
            };
            let result = self.forward(&peer, agent, outbound).await;
            if let Err(err) = &result
                && matches!(err.failure, ForwardFailure::AgentNotConnected | ForwardFailure::UnknownAgent)
            {
                // The holder is gone, or holds no instance any more: look again next time.
                self.forget(agent);
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
    use http_body_util::BodyExt;

    use super::*;

    async fn signer() -> BodySigner {
        let store = Arc::new(borealis_store::SqliteStore::open("sqlite::memory:").await.unwrap());
        let auth = crate::auth::Authority::new(
            store.clone(),
            store.as_ref(),
            Some(&borealis_core::Secret::new("admin")),
            None,
        )
        .await
        .unwrap();
        BodySigner {
            key: auth.peer_key(),
            from: "a/1".into(),
            to: "b/2".into(),
            agent: "rna".into(),
            head_tag: "peer:head".into(),
        }
    }

    /// What the sender puts on the hop for `body`: its data, its trailers.
    async fn signed(signer: &BodySigner, body: &'static str) -> (Bytes, HeaderMap) {
        let body = SignedBody {
            inner: Mutex::new(crate::forward::full(body)),
            sha: Some(digest::Context::new(&digest::SHA256)),
            signer: signer.clone(),
        };
        let mut body = std::pin::pin!(body);
        let data = body.frame().await.unwrap().unwrap().into_data().unwrap();
        let trailers = body.frame().await.unwrap().unwrap().into_trailers().unwrap();
        assert!(body.frame().await.is_none());
        (data, trailers)
    }

    fn received(
        signer: &BodySigner,
        data: &[u8],
        trailers: Option<&HeaderMap>,
        metrics: &Arc<Metrics>,
    ) -> VerifiedBody {
        let mut frames = vec![Frame::data(Bytes::copy_from_slice(data))];
        frames.extend(trailers.map(|trailers| Frame::trailers(trailers.clone())));
        let stream = futures_util::stream::iter(frames.into_iter().map(Ok::<_, BoxError>));
        let inner = http_body_util::StreamBody::new(stream).boxed_unsync();
        VerifiedBody::new(inner, signer.clone(), metrics.clone(), None)
    }

    fn refused(metrics: &Metrics, reason: &'static str) -> u64 {
        metrics.peer_tags_refused.get_or_create(&PeerRefusalLabels { reason }).get()
    }

    #[test]
    fn the_tag_covers_each_header_passed_on_and_added_ones_are_dropped() {
        let mut headers = HeaderMap::new();
        headers.insert("content-type", HeaderValue::from_static("application/json"));
        headers.append("x-test", HeaderValue::from_static("one"));
        headers.append("x-test", HeaderValue::from_static("two"));
        let names = header_names(&headers);
        assert_eq!(names, "content-type,x-test");
        let covered = covered_url("http://10.0.0.1/x", &names, &headers, TRAILED_BODY, "1000,10");

        let mut added = headers.clone();
        added.insert("authorization", HeaderValue::from_static("Bearer forged"));
        let passed_on = named_headers(&added, &names);
        assert!(!passed_on.contains_key("authorization"), "a header added on the way is dropped");
        assert_eq!(covered_url("http://10.0.0.1/x", &names, &passed_on, TRAILED_BODY, "1000,10"), covered);

        let mut changed = headers.clone();
        changed.insert("x-test", HeaderValue::from_static("one"));
        let mut removed = headers.clone();
        removed.remove("content-type");
        for other in [changed, removed] {
            assert_ne!(covered_url("http://10.0.0.1/x", &names, &other, TRAILED_BODY, "1000,10"), covered);
        }
        assert_ne!(covered_url("http://10.0.0.1/x", &names, &headers, EMPTY_BODY, "1000,10"), covered);
        assert_ne!(
            covered_url("http://10.0.0.1/x", &names, &headers, TRAILED_BODY, "1,10"),
            covered,
            "a shortened timeout"
        );
    }

    #[tokio::test]
    async fn a_body_crosses_with_its_tag_and_a_changed_or_untagged_one_fails() {
        let signer = signer().await;
        let metrics = Arc::new(Metrics::default());
        let (data, trailers) = signed(&signer, "hello world").await;
        assert_eq!(data, "hello world");
        assert!(trailers.contains_key(BODY_TAG_TRAILER));

        let body = received(&signer, &data, Some(&trailers), &metrics).collect().await.unwrap().to_bytes();
        assert_eq!(body, "hello world");

        let other_hop = BodySigner { head_tag: "peer:another".into(), ..signer.clone() };
        for (signer, data, trailers) in [
            (&signer, &b"hello wORLD"[..], Some(&trailers)),
            (&signer, &data[..], None),
            (&other_hop, &data[..], Some(&trailers)),
        ] {
            let err = received(signer, data, trailers, &metrics).collect().await.expect_err("refused");
            assert!(err.to_string().starts_with("peer body refused"), "{err}");
        }
        assert_eq!(refused(&metrics, "body"), 3);
    }

    #[tokio::test]
    async fn the_end_of_a_body_is_held_back_until_its_tag_verifies() {
        let signer = signer().await;
        let metrics = Arc::new(Metrics::default());
        let (first, second) = (Bytes::from(vec![b'a'; 10 << 10]), Bytes::from(vec![b'b'; 100 << 10]));
        let mut sha = digest::Context::new(&digest::SHA256);
        sha.update(&first);
        sha.update(&second);
        let mut trailers = HeaderMap::new();
        trailers.insert(BODY_TAG_TRAILER, HeaderValue::try_from(signer.mint(sha.finish())).unwrap());

        let (send, frames) = tokio::sync::mpsc::channel::<Result<Frame<Bytes>, BoxError>>(4);
        let inner = http_body_util::StreamBody::new(tokio_stream::wrappers::ReceiverStream::new(frames));
        let mut body = VerifiedBody::new(inner.boxed_unsync(), signer, metrics, None);
        /// The size of the next chunk let through within 100 ms, if any.
        async fn next(body: &mut VerifiedBody) -> Option<usize> {
            let frame = tokio::time::timeout(std::time::Duration::from_millis(100), body.frame()).await;
            frame.ok().flatten().map(|frame| frame.unwrap().into_data().unwrap().len())
        }
        send.send(Ok(Frame::data(first))).await.unwrap();
        assert_eq!(next(&mut body).await, None, "a body under HOLD_BACK bytes is all held");
        send.send(Ok(Frame::data(second))).await.unwrap();
        assert_eq!(next(&mut body).await, Some(10 << 10), "what is more than HOLD_BACK from the end goes on");
        assert_eq!(next(&mut body).await, None, "the last HOLD_BACK bytes wait for the tag");
        send.send(Ok(Frame::trailers(trailers))).await.unwrap();
        assert_eq!(next(&mut body).await, Some(100 << 10));
        assert!(body.frame().await.is_none());
    }

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
