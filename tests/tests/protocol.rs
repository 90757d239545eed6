//! The tunnel contract (`docs/tunnel-protocol.md`), rule by rule: a raw
//! gRPC client plays the agent, breaks one rule, and sees the documented
//! refusal: a gRPC status, a caller-side `502 agent-protocol-error`, a warn
//! line in the relay's log.

use std::time::Duration;

use borealis_protocol::v1::{
    self, agent_control, agent_frame, relay_control, relay_frame, tunnel_client::TunnelClient,
};
use borealis_protocol::{MAX_CHUNK_BYTES, MAX_FRAME_BYTES, MAX_INLINE_BODY_BYTES, MAX_NAME_BYTES, PROTOCOL_VERSION};
use borealis_tests::{RelayOptions, RelayProcess, eventually};
use bytes::Bytes;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::task::AbortOnDropHandle;
use tonic::transport::Channel;
use tonic::{Code, Status, Streaming};

/// The identifier the raw agent serves.
const AGENT: &str = "raw";
/// The destination named in requests: the raw agent never calls it.
const DESTINATION: &str = "http://destination.invalid/hook";
/// The relay's heartbeat interval in these tests (`RelayProcess` sets 1 s).
const INTERVAL: Duration = Duration::from_secs(1);

/// A relay, agent `raw` registered, and a connection to its agents' listener.
struct Raw {
    relay: RelayProcess,
    channel: Channel,
    token: String,
}

impl Raw {
    async fn start() -> Self {
        Self::start_with(RelayOptions::default()).await
    }

    async fn start_with(options: RelayOptions) -> Self {
        let relay = RelayProcess::start(options);
        let (client_id, secret) = relay.create_agent(AGENT);
        let token = token(&relay, &client_id, &secret).await["access_token"].as_str().unwrap().to_owned();
        let channel = Channel::from_shared(relay.agents_url.clone()).unwrap().connect().await.unwrap();
        Self { relay, channel, token }
    }

    fn client(&self) -> TunnelClient<Channel> {
        // No encoding limit on our side: some tests send frames the relay must refuse.
        TunnelClient::new(self.channel.clone()).max_encoding_message_size(usize::MAX)
    }

    fn authorized<T>(&self, message: T) -> tonic::Request<T> {
        with_token(&self.token, message)
    }

    /// Opens `Control` with `first` queued; the sender sends more.
    async fn control(
        &self,
        first: Vec<v1::AgentControl>,
    ) -> Result<(mpsc::Sender<v1::AgentControl>, Streaming<v1::RelayControl>), Status> {
        let (tx, rx) = mpsc::channel(16);
        for message in first {
            tx.send(message).await.unwrap();
        }
        let inbound = self.client().control(self.authorized(ReceiverStream::new(rx))).await?.into_inner();
        Ok((tx, inbound))
    }

    /// `Control` with `hello` as its first message: the relay's answer to it.
    async fn hello(&self, hello: v1::Hello) -> Result<Session, Status> {
        let (tx, mut inbound) = self.control(vec![hello_message(hello)]).await?;
        let welcome = match within(inbound.message()).await? {
            Some(v1::RelayControl { msg: Some(relay_control::Msg::Welcome(welcome)) }) => welcome,
            other => panic!("expected Welcome, got {other:?}"),
        };
        Ok(Session { tx, inbound, welcome, beats: None })
    }

    /// A session that sends heartbeats as the contract asks.
    async fn session(&self, hello: v1::Hello) -> Session {
        let mut session = self.hello(hello).await.expect("the relay welcomes a proper hello");
        session.beat();
        session
    }

    /// Opens `Forward` with `first` as its first frame.
    async fn forward(
        &self,
        first: v1::AgentFrame,
    ) -> Result<(mpsc::Sender<v1::AgentFrame>, Streaming<v1::RelayFrame>), Status> {
        let (tx, rx) = mpsc::channel(16);
        tx.send(first).await.unwrap();
        let inbound = self.client().forward(self.authorized(ReceiverStream::new(rx))).await?.into_inner();
        Ok((tx, inbound))
    }

    /// A request through the agent, sent by a caller in the background.
    fn call(&self, query: &str) -> tokio::task::JoinHandle<Reply> {
        let url = format!("{}/api/v1/proxy?agent={AGENT}&url={DESTINATION}{query}", self.relay.http_url);
        let admin = self.relay.admin_token();
        tokio::spawn(async move {
            let response = match reqwest::Client::new().get(url).bearer_auth(admin).send().await {
                Ok(response) => response,
                // Broken off before the head reached us.
                Err(err) => return Reply { status: 0, slug: None, body: Err(err.to_string()) },
            };
            let status = response.status().as_u16();
            let slug = response.headers().get("borealis-error").map(|v| v.to_str().unwrap().to_owned());
            let body = response.bytes().await.map_err(|e| e.to_string());
            Reply { status, slug, body }
        })
    }

    /// A caller's request, offered to `session` and accepted: the call, its
    /// request id and head, and the caller's reply to come.
    async fn take(&self, session: &mut Session, query: &str) -> Taken {
        let reply = self.call(query);
        let offer = session.next_offer().await;
        let (tx, mut rx) = self.forward(accept(&offer.request_id, &session.welcome.session_id)).await.unwrap();
        match within(rx.message()).await.unwrap() {
            Some(v1::RelayFrame { request_id, frame: Some(relay_frame::Frame::RequestHead(head)) }) => {
                assert_eq!(request_id, offer.request_id, "the head names the offered request");
                assert_eq!(head.url, DESTINATION);
            }
            other => panic!("expected RequestHead, got {other:?}"),
        }
        Taken { request_id: offer.request_id, tx, rx, reply }
    }

    /// The first line of the relay's log at warn with every one of `needles`.
    async fn warned(&self, needles: &[&str]) -> String {
        eventually(&format!("a warn line with {needles:?}"), Duration::from_secs(5), || async move {
            self.relay
                .log()
                .lines()
                .find(|line| line.contains("WARN") && needles.iter().all(|n| line.contains(n)))
                .map(str::to_owned)
        })
        .await
    }
}

/// `POST /oauth/token` on the agents' listener: the reply's JSON.
async fn token(relay: &RelayProcess, client_id: &str, secret: &str) -> serde_json::Value {
    let form = [("grant_type", "client_credentials"), ("client_id", client_id), ("client_secret", secret)];
    let reply = reqwest::Client::new()
        .post(format!("{}{}", relay.agents_url, borealis_protocol::TOKEN_PATH))
        .form(&form)
        .send()
        .await
        .unwrap();
    assert_eq!(reply.status(), 200);
    reply.json().await.unwrap()
}

fn with_token<T>(token: &str, message: T) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request.metadata_mut().insert(borealis_protocol::AUTHORIZATION, format!("Bearer {token}").parse().unwrap());
    request
}

/// Waits at most 15 s: a test that would hang fails instead.
async fn within<F: std::future::Future>(future: F) -> F::Output {
    tokio::time::timeout(Duration::from_secs(15), future).await.expect("timed out")
}

fn hello() -> v1::Hello {
    v1::Hello {
        agent_id: String::new(),
        version: "protocol-test".into(),
        capacity: 4,
        instance: "raw-client".into(),
        protocol_version: PROTOCOL_VERSION,
        standby_calls: 0,
        allow_list: None,
        lanes: 0,
    }
}

fn hello_message(hello: v1::Hello) -> v1::AgentControl {
    v1::AgentControl { msg: Some(agent_control::Msg::Hello(hello)) }
}

fn frame(request_id: &str, frame: agent_frame::Frame) -> v1::AgentFrame {
    v1::AgentFrame { request_id: request_id.to_owned(), frame: Some(frame) }
}

fn accept(request_id: &str, session_id: &str) -> v1::AgentFrame {
    frame(request_id, agent_frame::Frame::Accept(v1::Accept { session_id: session_id.to_owned() }))
}

fn standby(session_id: &str) -> v1::AgentFrame {
    frame("", agent_frame::Frame::Standby(v1::Standby { session_id: session_id.to_owned() }))
}

fn response_head(status: u32, body: &[u8], complete: bool) -> agent_frame::Frame {
    agent_frame::Frame::ResponseHead(v1::ResponseHead {
        status,
        headers: vec![v1::Header { name: "x-raw".into(), value: Bytes::from_static(b"yes") }],
        body: Bytes::copy_from_slice(body),
        complete,
    })
}

fn chunk(size: usize) -> agent_frame::Frame {
    agent_frame::Frame::ResponseBody(v1::BodyChunk { data: Bytes::from(vec![b'x'; size]) })
}

fn end() -> agent_frame::Frame {
    agent_frame::Frame::ResponseEnd(v1::End {})
}

/// What the caller of the proxy got.
struct Reply {
    /// 0 when the response broke off before its head arrived.
    status: u16,
    slug: Option<String>,
    /// The body, or why it broke off.
    body: Result<Bytes, String>,
}

impl std::fmt::Debug for Reply {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let body = match &self.body {
            Ok(bytes) if bytes.len() > 200 => format!("{} bytes", bytes.len()),
            Ok(bytes) => format!("{:?}", String::from_utf8_lossy(bytes)),
            Err(err) => format!("broken off: {err}"),
        };
        write!(f, "Reply {{ status: {}, slug: {:?}, body: {body} }}", self.status, self.slug)
    }
}

impl Reply {
    /// The head was passed on, so the status could not change: the response
    /// broke off (the caller may not even have seen the head yet).
    fn assert_broken_off(&self) {
        assert!(matches!(self.status, 0 | 200) && self.body.is_err(), "{self:?}");
    }
}

/// A live session of the raw agent.
struct Session {
    tx: mpsc::Sender<v1::AgentControl>,
    inbound: Streaming<v1::RelayControl>,
    welcome: v1::Welcome,
    beats: Option<AbortOnDropHandle<()>>,
}

impl Session {
    /// Beats every quarter interval from now on.
    fn beat(&mut self) {
        let tx = self.tx.clone();
        self.beats = Some(AbortOnDropHandle::new(tokio::spawn(async move {
            for sequence in 1.. {
                let beat = v1::Heartbeat { sequence, in_flight: 0 };
                if tx.send(v1::AgentControl { msg: Some(agent_control::Msg::Heartbeat(beat)) }).await.is_err() {
                    return;
                }
                tokio::time::sleep(INTERVAL / 4).await;
            }
        })));
    }

    /// The relay's next control message that is not a heartbeat.
    async fn next(&mut self) -> Result<Option<relay_control::Msg>, Status> {
        loop {
            match within(self.inbound.message()).await? {
                Some(v1::RelayControl { msg: Some(relay_control::Msg::Heartbeat(_)) }) => {}
                Some(v1::RelayControl { msg }) => return Ok(msg),
                None => return Ok(None),
            }
        }
    }

    async fn next_offer(&mut self) -> v1::Offer {
        match self.next().await {
            Ok(Some(relay_control::Msg::Offer(offer))) => offer,
            other => panic!("expected an offer, got {other:?}"),
        }
    }

    async fn send(&self, msg: agent_control::Msg) {
        self.tx.send(v1::AgentControl { msg: Some(msg) }).await.unwrap();
    }
}

/// Closes our side of a call and reads the relay's to its end: the status it
/// ends with, and whether it sent `Cancel` first.
async fn close(tx: mpsc::Sender<v1::AgentFrame>, mut rx: Streaming<v1::RelayFrame>) -> (Status, bool) {
    drop(tx);
    let mut cancelled = false;
    loop {
        match within(rx.message()).await {
            Ok(Some(v1::RelayFrame { frame: Some(relay_frame::Frame::Cancel(_)), .. })) => cancelled = true,
            Ok(Some(_)) => {}
            Ok(None) => return (Status::ok(""), cancelled),
            Err(status) => return (status, cancelled),
        }
    }
}

/// A request the raw agent has taken.
struct Taken {
    request_id: String,
    tx: mpsc::Sender<v1::AgentFrame>,
    rx: Streaming<v1::RelayFrame>,
    reply: tokio::task::JoinHandle<Reply>,
}

impl Taken {
    async fn send(&self, frame: agent_frame::Frame) {
        self.send_as(&self.request_id.clone(), frame).await;
    }

    async fn send_as(&self, request_id: &str, frame: agent_frame::Frame) {
        self.tx.send(self::frame(request_id, frame)).await.unwrap();
    }

    async fn reply(&mut self) -> Reply {
        within(&mut self.reply).await.unwrap()
    }

    /// Ends our side of the call without a word.
    fn end_our_side(&mut self) {
        self.tx = mpsc::channel(1).0;
    }

    async fn close(self) -> (Status, bool) {
        close(self.tx, self.rx).await
    }

    /// The caller got `502 agent-protocol-error`; the relay cancelled the
    /// call, ended it with `INVALID_ARGUMENT` naming `reason`, and logged it.
    async fn expect_protocol_error(mut self, raw: &Raw, reason: &str) {
        let reply = self.reply().await;
        assert_eq!((reply.status, reply.slug.as_deref()), (502, Some("agent-protocol-error")), "{reply:?}");
        let problem: serde_json::Value = serde_json::from_slice(reply.body.as_ref().unwrap()).unwrap();
        let detail = problem["detail"].as_str().unwrap();
        assert!(detail.contains(reason), "the problem names the violation: {detail}");
        self.expect_call_ended(raw, reason).await;
    }

    /// The relay cancelled the call, ended it with `INVALID_ARGUMENT` naming
    /// `reason`, and logged the violation with the agent, session and request.
    async fn expect_call_ended(self, raw: &Raw, reason: &str) {
        let request_id = self.request_id.clone();
        let (status, cancelled) = self.close().await;
        assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
        assert!(status.message().starts_with("protocol violation: "), "{status:?}");
        assert!(status.message().contains(reason), "{status:?}");
        assert!(cancelled, "the relay sends Cancel before it ends the call");
        let line = raw.warned(&["agent broke the tunnel protocol", &request_id]).await;
        assert!(line.contains("agent=\"raw\"") && line.contains("session="), "{line}");
    }
}

// ------------------------------------------------------------------ auth

#[tokio::test(flavor = "multi_thread")]
async fn the_token_reply_has_the_documented_fields() {
    let relay = RelayProcess::start(RelayOptions::default());
    let (client_id, secret) = relay.create_agent(AGENT);
    let reply = token(&relay, &client_id, &secret).await;
    assert!(reply["access_token"].as_str().is_some_and(|t| !t.is_empty()), "{reply}");
    assert_eq!(reply["token_type"], "Bearer");
    assert_eq!(reply["expires_in"], 86_400);
    assert_eq!(reply["scope"], "agent:tunnel");
}

#[tokio::test(flavor = "multi_thread")]
async fn calls_without_an_agent_token_are_refused() {
    let raw = Raw::start().await;
    // No token, and one that is not ours.
    let bare = raw.client().control(tonic::Request::new(tokio_stream::iter(vec![hello_message(hello())]))).await;
    assert_eq!(bare.unwrap_err().code(), Code::Unauthenticated);
    let forged = with_token("not-a-token", tokio_stream::iter(vec![standby("s")]));
    assert_eq!(raw.client().forward(forged).await.unwrap_err().code(), Code::Unauthenticated);
    raw.warned(&["authentication failed", "agent_token", "peer=127.0.0.1"]).await;

    // A callback client's token is a valid token, for the wrong purpose.
    let (client_id, secret) = raw.relay.create_client("ci");
    let callback = token(&raw.relay, &client_id, &secret).await["access_token"].as_str().unwrap().to_owned();
    let request = with_token(&callback, tokio_stream::iter(vec![hello_message(hello())]));
    let refused = raw.client().control(request).await.err().unwrap();
    assert_eq!(refused.code(), Code::PermissionDenied, "{refused:?}");
    let line = raw.warned(&["refused an agent's call", "PermissionDenied"]).await;
    assert!(line.contains(&client_id) && line.contains("peer=\"127.0.0.1:"), "{line}");
    assert!(!line.contains(&callback), "the token is never logged: {line}");
}

// ----------------------------------------------------------------- hello

#[tokio::test(flavor = "multi_thread")]
async fn a_hello_of_another_protocol_version_is_refused_and_logged() {
    let raw = Raw::start().await;
    for version in [1, PROTOCOL_VERSION + 1] {
        let status = raw.hello(v1::Hello { protocol_version: version, ..hello() }).await.err().unwrap();
        assert_eq!(status.code(), Code::FailedPrecondition, "{status:?}");
        assert!(status.message().contains(&format!("this relay speaks {PROTOCOL_VERSION}")), "{status:?}");
    }
    let line = raw.warned(&["refused an agent's call", "FailedPrecondition", "call=\"Control\""]).await;
    assert!(line.contains("agent=\"raw\"") && line.contains("peer=\"127.0.0.1:"), "{line}");
    assert!(line.contains("client_id=\"agt_"), "{line}");
    assert!(!raw.relay.log().contains(&raw.token), "the token is never logged");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_hello_for_another_identifier_is_refused_and_logged() {
    let raw = Raw::start().await;
    raw.relay.create_agent("other");
    let status = raw.hello(v1::Hello { agent_id: "other".into(), ..hello() }).await.err().unwrap();
    assert_eq!(status.code(), Code::PermissionDenied, "{status:?}");
    assert!(status.message().contains("belongs to agent \"raw\""), "{status:?}");
    let line = raw.warned(&["refused an agent's call", "PermissionDenied"]).await;
    assert!(line.contains("agent=\"raw\"") && line.contains("peer=\"127.0.0.1:"), "{line}");

    // The credential's own identifier, named or left empty, is welcomed.
    let named = raw.hello(v1::Hello { agent_id: AGENT.into(), ..hello() }).await.unwrap();
    assert_eq!(named.welcome.agent_id, AGENT);
    let empty = raw.hello(hello()).await.unwrap();
    assert_eq!(empty.welcome.agent_id, AGENT, "empty means the credential's identifier");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_hello_with_capacity_zero_is_refused() {
    let raw = Raw::start().await;
    let status = raw.hello(v1::Hello { capacity: 0, ..hello() }).await.err().unwrap();
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    assert!(status.message().contains("capacity"), "{status:?}");
    raw.warned(&["refused an agent's call", "InvalidArgument", "capacity"]).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn names_over_the_limit_are_refused() {
    let raw = Raw::start().await;
    let long = "x".repeat(MAX_NAME_BYTES + 1);
    for hello in [
        v1::Hello { instance: long.clone(), ..hello() },
        v1::Hello { version: long.clone(), ..hello() },
        v1::Hello { agent_id: long.clone(), ..hello() },
    ] {
        let status = raw.hello(hello).await.err().unwrap();
        assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
        assert!(status.message().contains(&format!("at most {MAX_NAME_BYTES}")), "{status:?}");
    }
    let at_limit = "x".repeat(MAX_NAME_BYTES);
    raw.hello(v1::Hello { instance: at_limit, ..hello() }).await.expect("a name at the limit is taken");

    let session = raw.session(hello()).await;
    let refused = raw.forward(accept(&long, &session.welcome.session_id)).await.err().unwrap();
    assert_eq!(refused.code(), Code::InvalidArgument, "{refused:?}");
    let refused = raw.forward(standby(&long)).await.err().unwrap();
    assert_eq!(refused.code(), Code::InvalidArgument, "{refused:?}");
}

/// An allow-list reported in `Hello` is bounded in rules and in each
/// rule's length; within them it is taken and shown with the instance.
#[tokio::test(flavor = "multi_thread")]
async fn a_reported_allow_list_over_its_bounds_is_refused() {
    let raw = Raw::start().await;
    let many = v1::AllowList { rules: vec!["api.internal".into(); 1025], any: false };
    let status = raw.hello(v1::Hello { allow_list: Some(many), ..hello() }).await.err().unwrap();
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    assert!(status.message().contains("at most 1024"), "{status:?}");
    let long = v1::AllowList { rules: vec!["x".repeat(MAX_NAME_BYTES + 1)], any: false };
    let status = raw.hello(v1::Hello { allow_list: Some(long), ..hello() }).await.err().unwrap();
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    assert!(status.message().contains("allow_list"), "{status:?}");

    let reported = v1::AllowList { rules: vec!["api.internal:443".into(), "10.0.0.0/8".into()], any: false };
    let _session = raw.session(v1::Hello { allow_list: Some(reported), ..hello() }).await;
    let agents: borealis_api::AgentList = raw.relay.get_as("/api/v1/agents").await;
    let instance = &agents.agents[0].instances[0];
    let shown = instance.allow_list.as_ref().expect("the reported list is shown");
    assert_eq!(shown.rules, ["api.internal:443", "10.0.0.0/8"]);
}

#[tokio::test(flavor = "multi_thread")]
async fn the_first_control_message_must_be_hello() {
    let raw = Raw::start().await;
    let beat = v1::AgentControl { msg: Some(agent_control::Msg::Heartbeat(v1::Heartbeat::default())) };
    let status = raw.control(vec![beat]).await.err().unwrap();
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    assert!(status.message().contains("must be hello"), "{status:?}");

    // A stream that ends before its hello.
    let (tx, rx) = mpsc::channel::<v1::AgentControl>(1);
    drop(tx);
    let status = raw.client().control(raw.authorized(ReceiverStream::new(rx))).await.err().unwrap();
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    raw.warned(&["refused an agent's call", "InvalidArgument", "before hello"]).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn no_hello_within_ten_seconds_is_refused() {
    let raw = Raw::start().await;
    let status = raw.control(Vec::new()).await.err().unwrap();
    assert_eq!(status.code(), Code::DeadlineExceeded, "{status:?}");
    // The relay says which bound it applied, and logs the refusal.
    assert!(status.message().contains("no hello within 10s"), "{status:?}");
    raw.warned(&["refused an agent's call", "DeadlineExceeded", "no hello within 10s"]).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_second_hello_ends_the_session() {
    let raw = Raw::start().await;
    let mut session = raw.session(hello()).await;
    session.send(agent_control::Msg::Hello(hello())).await;
    let status = session.next().await.err().unwrap();
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    assert!(status.message().contains("a second Hello"), "{status:?}");
    raw.warned(&["agent broke the tunnel protocol", "a second Hello"]).await;
    eventually("the session is gone", Duration::from_secs(5), || async {
        raw.relay.instances(AGENT).await.is_empty().then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn an_empty_or_oversized_control_message_ends_the_session() {
    let raw = Raw::start().await;
    let mut session = raw.session(hello()).await;
    session.tx.send(v1::AgentControl { msg: None }).await.unwrap();
    let status = session.next().await.unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    assert!(status.message().contains("no content"), "{status:?}");

    let mut session = raw.session(hello()).await;
    let huge = v1::Hello { instance: "x".repeat(MAX_FRAME_BYTES), ..hello() };
    session.send(agent_control::Msg::Hello(huge)).await;
    let status = session.next().await.unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    assert!(status.message().contains(&format!("over {MAX_FRAME_BYTES} bytes")), "{status:?}");
    raw.warned(&["agent broke the tunnel protocol", "a control message over"]).await;
}

// ------------------------------------------------------------ heartbeats

#[tokio::test(flavor = "multi_thread")]
async fn the_relay_answers_each_beat_and_drops_a_silent_agent() {
    let raw = Raw::start().await;
    let mut session = raw.hello(hello()).await.unwrap();
    assert_eq!(session.welcome.heartbeat_interval_ms, INTERVAL.as_millis() as u32);
    // The relay sends no beat of its own: it answers ours, with our sequence.
    session.send(agent_control::Msg::Heartbeat(v1::Heartbeat { sequence: 41, in_flight: 0 })).await;
    match within(session.inbound.message()).await.unwrap() {
        Some(v1::RelayControl { msg: Some(relay_control::Msg::Heartbeat(beat)) }) => assert_eq!(beat.sequence, 41),
        other => panic!("expected the answer to our beat, got {other:?}"),
    }
    // The relay's record of our last beat (it answered it, so it is noted).
    let instances = raw.relay.instances(AGENT).await;
    assert_eq!(instances.len(), 1, "{instances:?}");
    let last_beat = borealis_tests::api_time(&instances[0]["lastHeartbeat"]);
    // Silent from now on: lost after 2¾ intervals, the connection closed.
    let ended = within(session.inbound.message()).await;
    assert!(ended.is_err(), "the session ends with an error: {ended:?}");
    let lost = raw.relay.wait_log_line(&["agent disconnected", "heartbeats stopped"]).await;
    // Both instants are the relay's own: when it noted the beat, when it
    // declared the session lost.
    let after = borealis_tests::between(last_beat, borealis_tests::log_time(&lost));
    assert!(after >= INTERVAL * 5 / 2 && after < INTERVAL * 4, "dropped {after:?} after the last beat: {lost}");
}

// ------------------------------------------------------------ standby calls

#[tokio::test(flavor = "multi_thread")]
async fn standby_calls_are_granted_up_to_what_was_asked_and_the_relays_most() {
    let raw = Raw::start().await;
    let greedy = raw.session(v1::Hello { standby_calls: 1000, ..hello() }).await;
    assert_eq!(greedy.welcome.standby_calls, 64);
    let none = raw.session(hello()).await;
    assert_eq!(none.welcome.standby_calls, 0);
    let refused = raw.forward(standby(&none.welcome.session_id)).await.err().unwrap();
    assert_eq!(refused.code(), Code::ResourceExhausted, "{refused:?}");

    let one = raw.session(v1::Hello { standby_calls: 1, ..hello() }).await;
    assert_eq!(one.welcome.standby_calls, 1);
    let _kept = raw.forward(standby(&one.welcome.session_id)).await.unwrap();
    let refused = raw.forward(standby(&one.welcome.session_id)).await.err().unwrap();
    assert_eq!(refused.code(), Code::ResourceExhausted, "{refused:?}");
    raw.warned(&["refused an agent's call", "ResourceExhausted", "call=\"Forward\""]).await;
}

// ------------------------------------------------------------------ lanes

/// One lane of a raw session: what we send, and the relay's side.
struct RawLane {
    tx: mpsc::Sender<v1::AgentLane>,
    rx: Streaming<v1::RelayLane>,
    /// Requests read but not yet handed out by `next_request`.
    ready: std::collections::VecDeque<v1::LaneRequest>,
}

impl Raw {
    /// Opens `Lane` with `first` as its first message.
    async fn lane(&self, first: v1::AgentLane) -> Result<RawLane, Status> {
        let (tx, rx) = mpsc::channel(16);
        tx.send(first).await.unwrap();
        let rx = self.client().lane(self.authorized(ReceiverStream::new(rx))).await?.into_inner();
        Ok(RawLane { tx, rx, ready: Default::default() })
    }

    async fn open_lane(&self, session: &Session, lane: u32) -> Result<RawLane, Status> {
        self.lane(lane_open(&session.welcome.session_id, lane)).await
    }
}

impl RawLane {
    async fn next_request(&mut self) -> v1::LaneRequest {
        while self.ready.is_empty() {
            match within(self.rx.message()).await {
                Ok(Some(message)) => self.ready.extend(message.requests),
                other => panic!("expected a lane request, got {other:?}"),
            }
        }
        self.ready.pop_front().unwrap()
    }

    async fn answer(&self, answers: Vec<v1::LaneAnswer>) {
        self.tx.send(v1::AgentLane { open: None, answers }).await.unwrap();
    }

    /// How the relay ends its side: the status after whatever it still sends.
    async fn ending(&mut self) -> Status {
        loop {
            match within(self.rx.message()).await {
                Ok(Some(_)) => {}
                Ok(None) => return Status::ok(""),
                Err(status) => return status,
            }
        }
    }
}

fn lane_open(session_id: &str, lane: u32) -> v1::AgentLane {
    v1::AgentLane { open: Some(v1::LaneOpen { session_id: session_id.to_owned(), lane }), answers: Vec::new() }
}

fn lane_response(id: u64, body: &[u8]) -> v1::LaneAnswer {
    let agent_frame::Frame::ResponseHead(head) = response_head(200, body, true) else { unreachable!() };
    v1::LaneAnswer { id, answer: Some(v1::lane_answer::Answer::Response(head)) }
}

/// Lanes are granted up to four, and none by a relay told to serve none
/// (as a relay from before lanes answers): that agent is served on
/// `Forward` calls as before.
#[tokio::test(flavor = "multi_thread")]
async fn lanes_are_granted_up_to_four_and_none_where_the_relay_serves_none() {
    let raw = Raw::start().await;
    let asking = raw.session(v1::Hello { lanes: 8, ..hello() }).await;
    assert_eq!(asking.welcome.lanes, 4);
    let none = raw.session(hello()).await;
    assert_eq!(none.welcome.lanes, 0, "an agent that asks none gets none");

    let raw =
        Raw::start_with(RelayOptions { extra_args: vec!["--agent-lanes".into(), "0".into()], ..Default::default() })
            .await;
    let asking = raw.session(v1::Hello { lanes: 8, standby_calls: 1, ..hello() }).await;
    assert_eq!(asking.welcome.lanes, 0);
    assert_eq!(asking.welcome.standby_calls, 1, "the rest of the hello is served as ever");
    let refused = raw.open_lane(&asking, 0).await.err().unwrap();
    assert_eq!(refused.code(), Code::InvalidArgument, "{refused:?}");
    assert!(refused.message().contains("lane 0 is unknown: this session has no lanes"), "{refused:?}");
    let (tx, mut rx) = raw.forward(standby(&asking.welcome.session_id)).await.unwrap();
    raw.relay.wait_standby_idle(AGENT, 1).await;
    let mut reply = raw.call("");
    let Some(v1::RelayFrame { request_id, frame: Some(relay_frame::Frame::RequestHead(_)) }) =
        within(rx.message()).await.unwrap()
    else {
        panic!("expected the request down the standby call")
    };
    tx.send(frame(&request_id, response_head(200, b"no lanes", true))).await.unwrap();
    assert_eq!(within(&mut reply).await.unwrap().body.unwrap(), Bytes::from_static(b"no lanes"));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_lane_opens_once_as_a_granted_lane_of_a_live_session() {
    let raw = Raw::start().await;
    let session = raw.session(v1::Hello { lanes: 2, ..hello() }).await;
    let unknown = raw.open_lane(&session, 2).await.err().unwrap();
    assert_eq!(unknown.code(), Code::InvalidArgument, "{unknown:?}");
    assert!(unknown.message().contains("lane 2 is unknown: this session has lanes 0 to 1"), "{unknown:?}");
    let _first = raw.open_lane(&session, 0).await.unwrap();
    let twice = raw.open_lane(&session, 0).await.err().unwrap();
    assert_eq!(twice.code(), Code::InvalidArgument, "{twice:?}");
    assert!(twice.message().contains("lane 0 is open already"), "{twice:?}");
    let nowhere = raw.lane(lane_open("no-such-session", 1)).await.err().unwrap();
    assert_eq!(nowhere.code(), Code::NotFound, "{nowhere:?}");
    let unopened = raw.lane(v1::AgentLane::default()).await.err().unwrap();
    assert_eq!(unopened.code(), Code::InvalidArgument, "{unopened:?}");
    assert!(unopened.message().contains("LaneOpen"), "{unopened:?}");
    raw.warned(&["refused an agent's call", "call=\"Lane\"", "open already"]).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn small_requests_come_down_a_lane_and_are_answered_in_any_order() {
    let raw = Raw::start().await;
    let session = raw.session(v1::Hello { lanes: 1, ..hello() }).await;
    let mut lane = raw.open_lane(&session, 0).await.unwrap();
    raw.relay.wait_agent_field(AGENT, "lanesOpen", 1).await;
    let (mut first, mut second) = (raw.call("%3Fn%3D1"), raw.call("%3Fn%3D2"));
    let (a, b) = (lane.next_request().await, lane.next_request().await);
    assert_ne!(a.id, b.id);
    for request in [&a, &b] {
        let head = request.head.as_ref().unwrap();
        assert!(head.url.starts_with(DESTINATION), "{head:?}");
        assert!(!head.has_body && !request.request_id.is_empty(), "{request:?}");
    }
    // Answered in one message, the later one first.
    let body = |r: &v1::LaneRequest| r.head.as_ref().unwrap().url.rsplit('=').next().unwrap().to_owned();
    lane.answer(vec![lane_response(b.id, body(&b).as_bytes()), lane_response(a.id, body(&a).as_bytes())]).await;
    let (first, second) = (within(&mut first).await.unwrap(), within(&mut second).await.unwrap());
    assert_eq!((first.status, first.body.unwrap()), (200, Bytes::from_static(b"1")));
    assert_eq!((second.status, second.body.unwrap()), (200, Bytes::from_static(b"2")));
}

#[tokio::test(flavor = "multi_thread")]
async fn an_answer_to_a_request_the_lane_did_not_send_ends_the_lane() {
    let raw = Raw::start().await;
    let session = raw.session(v1::Hello { lanes: 1, ..hello() }).await;
    let mut lane = raw.open_lane(&session, 0).await.unwrap();
    lane.answer(vec![lane_response(7, b"unasked")]).await;
    let status = lane.ending().await;
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    assert!(status.message().contains("request 7, which this lane did not send"), "{status:?}");
    raw.warned(&["agent broke the tunnel protocol", "did not send"]).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_second_answer_ends_the_lane_and_fails_what_is_outstanding_on_it() {
    let raw = Raw::start().await;
    let session = raw.session(v1::Hello { lanes: 1, ..hello() }).await;
    let mut lane = raw.open_lane(&session, 0).await.unwrap();
    raw.relay.wait_agent_field(AGENT, "lanesOpen", 1).await;
    let mut answered = raw.call("&n=1");
    let first = lane.next_request().await;
    let mut waiting = raw.call("&n=2");
    let _second = lane.next_request().await;
    lane.answer(vec![lane_response(first.id, b"once")]).await;
    assert_eq!(within(&mut answered).await.unwrap().body.unwrap(), Bytes::from_static(b"once"));
    lane.answer(vec![lane_response(first.id, b"twice")]).await;
    let status = lane.ending().await;
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    assert!(status.message().contains(&format!("a second answer to request {}", first.id)), "{status:?}");
    let failed = within(&mut waiting).await.unwrap();
    assert_eq!((failed.status, failed.slug.as_deref()), (502, Some("agent-protocol-error")), "{failed:?}");
    // The lane may be opened again, and serves.
    let mut again = raw.open_lane(&session, 0).await.unwrap();
    raw.relay.wait_agent_field(AGENT, "lanesOpen", 1).await;
    let mut reply = raw.call("");
    let request = again.next_request().await;
    assert_eq!(request.id, 1, "a new lane counts from 1");
    again.answer(vec![lane_response(request.id, b"again")]).await;
    assert_eq!(within(&mut reply).await.unwrap().body.unwrap(), Bytes::from_static(b"again"));
}

#[tokio::test(flavor = "multi_thread")]
async fn an_oversized_or_incomplete_answer_ends_the_lane() {
    let raw = Raw::start().await;
    let session = raw.session(v1::Hello { lanes: 2, ..hello() }).await;
    let answers = |answers: Vec<v1::LaneAnswer>| v1::AgentLane { open: None, answers };
    fn incomplete(id: u64) -> v1::LaneAnswer {
        let agent_frame::Frame::ResponseHead(head) = response_head(200, b"", false) else { unreachable!() };
        v1::LaneAnswer { id, answer: Some(v1::lane_answer::Answer::Response(head)) }
    }
    type Answers = fn(u64) -> Vec<v1::LaneAnswer>;
    let cases: [(u32, Answers, &str); 3] = [
        // One message over the relay's limit of 4 MiB.
        (0, |id| (0..70).map(|_| lane_response(id, &[b'x'; MAX_INLINE_BODY_BYTES])).collect(), "over the limit"),
        // An answer whose body is over a lane's 64 KiB.
        (1, |id| vec![lane_response(id, &[b'x'; MAX_INLINE_BODY_BYTES + 1])], "over the 65536 a lane takes"),
        // A response that is not whole.
        (0, |id| vec![incomplete(id)], "is not complete"),
    ];
    for (index, message, expected) in cases {
        let mut lane = raw.open_lane(&session, index).await.unwrap();
        raw.relay.wait_agent_field(AGENT, "lanesOpen", 1).await;
        let mut reply = raw.call("");
        let request = lane.next_request().await;
        lane.tx.send(answers(message(request.id))).await.unwrap();
        let status = lane.ending().await;
        assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
        assert!(status.message().contains(expected), "{expected}: {status:?}");
        let failed = within(&mut reply).await.unwrap();
        assert_eq!((failed.status, failed.slug.as_deref()), (502, Some("agent-protocol-error")), "{failed:?}");
        raw.relay.wait_agent_field(AGENT, "lanesOpen", 0).await;
    }
}

/// A response too large for a lane comes on a `Forward` call that the
/// agent opens with `Accept` naming the request: before or after its
/// `Divert` answer. The relay sends no head down it: the agent has the request.
#[tokio::test(flavor = "multi_thread")]
async fn a_diverted_response_comes_on_a_call_opened_for_it() {
    let raw = Raw::start().await;
    let session = raw.session(v1::Hello { lanes: 1, ..hello() }).await;
    let mut lane = raw.open_lane(&session, 0).await.unwrap();
    raw.relay.wait_agent_field(AGENT, "lanesOpen", 1).await;
    let divert = |id| v1::LaneAnswer { id, answer: Some(v1::lane_answer::Answer::Divert(v1::Divert {})) };
    for call_first in [false, true] {
        let mut reply = raw.call("");
        let request = lane.next_request().await;
        if !call_first {
            lane.answer(vec![divert(request.id)]).await;
        }
        let (tx, rx) = raw.forward(accept(&request.request_id, &session.welcome.session_id)).await.unwrap();
        if call_first {
            lane.answer(vec![divert(request.id)]).await;
        }
        tx.send(frame(&request.request_id, response_head(200, b"", false))).await.unwrap();
        tx.send(frame(&request.request_id, chunk(MAX_CHUNK_BYTES))).await.unwrap();
        tx.send(frame(&request.request_id, chunk(10))).await.unwrap();
        tx.send(frame(&request.request_id, end())).await.unwrap();
        let reply = within(&mut reply).await.unwrap();
        assert_eq!((reply.status, reply.body.unwrap().len()), (200, MAX_CHUNK_BYTES + 10), "call first: {call_first}");
        let (status, cancelled) = close(tx, rx).await;
        assert_eq!(status.code(), Code::Ok, "{status:?}");
        assert!(!cancelled);
    }
    // A call for a request that was answered is refused, as for an expired offer.
    let mut reply = raw.call("");
    let request = lane.next_request().await;
    lane.answer(vec![lane_response(request.id, b"whole")]).await;
    assert_eq!(within(&mut reply).await.unwrap().body.unwrap(), Bytes::from_static(b"whole"));
    let late = raw.forward(accept(&request.request_id, &session.welcome.session_id)).await.err().unwrap();
    assert_eq!(late.code(), Code::NotFound, "{late:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_standby_call_names_a_live_session_and_no_request() {
    let raw = Raw::start().await;
    let session = raw.session(v1::Hello { standby_calls: 4, ..hello() }).await;
    let refused = raw.forward(standby("no-such-session")).await.err().unwrap();
    assert_eq!(refused.code(), Code::NotFound, "{refused:?}");
    let named =
        frame("r-1", agent_frame::Frame::Standby(v1::Standby { session_id: session.welcome.session_id.clone() }));
    let refused = raw.forward(named).await.err().unwrap();
    assert_eq!(refused.code(), Code::InvalidArgument, "{refused:?}");
    assert!(refused.message().contains("must be empty"), "{refused:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_request_down_a_standby_call_is_named_by_its_head() {
    let raw = Raw::start().await;
    let session = raw.session(v1::Hello { standby_calls: 1, ..hello() }).await;
    let (tx, mut rx) = raw.forward(standby(&session.welcome.session_id)).await.unwrap();
    raw.relay.wait_standby_idle(AGENT, 1).await;
    let mut reply = raw.call("");
    let request_id = match within(rx.message()).await.unwrap() {
        Some(v1::RelayFrame { request_id, frame: Some(relay_frame::Frame::RequestHead(head)) }) => {
            assert_eq!(head.url, DESTINATION);
            assert!(!request_id.is_empty());
            request_id
        }
        other => panic!("expected RequestHead, got {other:?}"),
    };
    tx.send(frame(&request_id, response_head(200, b"via standby", true))).await.unwrap();
    let reply = within(&mut reply).await.unwrap();
    assert_eq!((reply.status, reply.body.unwrap()), (200, Bytes::from_static(b"via standby")));
    let (status, cancelled) = close(tx, rx).await;
    assert_eq!(status.code(), Code::Ok, "{status:?}");
    assert!(!cancelled, "a finished call is not cancelled");
}

#[tokio::test(flavor = "multi_thread")]
async fn after_the_agent_drains_its_standby_calls_are_closed_and_no_work_comes() {
    let raw = Raw::start().await;
    let session = raw.session(v1::Hello { standby_calls: 2, ..hello() }).await;
    let (tx, mut rx) = raw.forward(standby(&session.welcome.session_id)).await.unwrap();
    raw.relay.wait_standby_idle(AGENT, 1).await;
    session.send(agent_control::Msg::Drain(v1::Drain { reason: "test".into(), grace_ms: 1000 })).await;
    match within(rx.message()).await.unwrap() {
        Some(v1::RelayFrame { request_id, frame: Some(relay_frame::Frame::Cancel(_)) }) => {
            assert!(request_id.is_empty())
        }
        other => panic!("expected Cancel on the idle standby call, got {other:?}"),
    }
    // We end our side; the relay then ends its own, with OK.
    drop(tx);
    assert!(within(rx.message()).await.unwrap().is_none());

    let refused = raw.forward(standby(&session.welcome.session_id)).await.err().unwrap();
    assert_eq!(refused.code(), Code::Unavailable, "{refused:?}");
    let reply = within(raw.call("")).await.unwrap();
    assert_eq!((reply.status, reply.slug.as_deref()), (503, Some("agent-unavailable")), "{reply:?}");
}

// ------------------------------------------------------------------ offers

#[tokio::test(flavor = "multi_thread")]
async fn an_offer_comes_with_its_deadline_and_the_head_with_the_relays_limits() {
    let raw = Raw::start_with(RelayOptions {
        extra_args: vec!["--max-body-bytes".into(), "1000".into()],
        ..RelayOptions::default()
    })
    .await;
    let mut session = raw.session(hello()).await;
    let reply = raw.call("&timeout=7s");
    let offer = session.next_offer().await;
    assert_eq!(offer.timeout_ms, 7000);
    let (tx, mut rx) = raw.forward(accept(&offer.request_id, &session.welcome.session_id)).await.unwrap();
    let request = match within(rx.message()).await.unwrap() {
        Some(v1::RelayFrame { frame: Some(relay_frame::Frame::RequestHead(head)), .. }) => head,
        other => panic!("expected RequestHead, got {other:?}"),
    };
    assert_eq!((request.method.as_str(), request.url.as_str()), ("GET", DESTINATION));
    assert_eq!((request.timeout_ms, request.max_response_bytes), (7000, 1000));
    assert!(!request.has_body && request.body.is_empty());
    let mut taken = Taken { request_id: offer.request_id, tx, rx, reply };
    // Over max_response_bytes, though under the inline limit.
    taken.send(response_head(200, &[b'x'; 1001], true)).await;
    let _ = taken.reply().await;
    taken.expect_call_ended(&raw, "over max_response_bytes").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn an_offer_not_taken_in_time_is_cancelled_and_refused_later() {
    let raw = Raw::start().await;
    let mut session = raw.session(hello()).await;
    let reply = raw.call("&timeout=2s");
    let offer = session.next_offer().await;
    match session.next().await.unwrap() {
        Some(relay_control::Msg::Cancel(cancel)) => {
            assert_eq!(cancel.request_id, offer.request_id);
            assert_eq!(cancel.reason, v1::ErrorCode::Timeout as i32);
        }
        other => panic!("expected Cancel, got {other:?}"),
    }
    let reply = within(reply).await.unwrap();
    assert_eq!((reply.status, reply.slug.as_deref()), (504, Some("agent-unavailable")), "{reply:?}");
    // The relay's own record of how long the request took (its latency
    // histogram holds this one request): the request's 2 s timeout, not the
    // 10 s it gives an offer to be taken otherwise.
    let series = "{mode=\"agent\"}";
    assert_eq!(raw.relay.metric(&format!("borealis_forward_latency_seconds_count{series}")).await, 1.0);
    let took = raw.relay.metric(&format!("borealis_forward_latency_seconds_sum{series}")).await;
    assert!((2.0..5.0).contains(&took), "the take time is the request's timeout when shorter: {took} s");
    let unavailable = "borealis_forwarded_requests_total{mode=\"agent\",outcome=\"agent-unavailable\"}";
    assert_eq!(raw.relay.metric(unavailable).await, 1.0);
    let refused = raw.forward(accept(&offer.request_id, &session.welcome.session_id)).await.err().unwrap();
    assert_eq!(refused.code(), Code::NotFound, "{refused:?}");
    raw.warned(&["refused an agent's call", "NotFound", &offer.request_id]).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn an_accept_names_an_open_offer_of_its_own_session() {
    let raw = Raw::start().await;
    let mut session = raw.session(hello()).await;
    let refused = raw.forward(accept("no-such-request", &session.welcome.session_id)).await.err().unwrap();
    assert_eq!(refused.code(), Code::NotFound, "{refused:?}");

    let reply = raw.call("");
    let offer = session.next_offer().await;
    let other = raw.session(hello()).await;
    let refused = raw.forward(accept(&offer.request_id, &other.welcome.session_id)).await.err().unwrap();
    assert_eq!(refused.code(), Code::PermissionDenied, "{refused:?}");
    // Still open for the session it was made to.
    let (tx, mut rx) = raw.forward(accept(&offer.request_id, &session.welcome.session_id)).await.unwrap();
    assert!(matches!(
        within(rx.message()).await.unwrap(),
        Some(v1::RelayFrame { frame: Some(relay_frame::Frame::RequestHead(_)), .. })
    ));
    tx.send(frame(&offer.request_id, response_head(204, b"", true))).await.unwrap();
    assert_eq!(within(reply).await.unwrap().status, 204);
}

#[tokio::test(flavor = "multi_thread")]
async fn the_first_forward_frame_must_be_accept_or_standby() {
    let raw = Raw::start().await;
    let refused = raw.forward(frame("r", end())).await.err().unwrap();
    assert_eq!(refused.code(), Code::InvalidArgument, "{refused:?}");
    raw.warned(&["refused an agent's call", "call=\"Forward\"", "accept or standby"]).await;
}

// ------------------------------------------------------ the agent's answer

#[tokio::test(flavor = "multi_thread")]
async fn an_inline_body_over_the_limit_is_a_protocol_error() {
    let raw = Raw::start().await;
    let mut session = raw.session(hello()).await;
    let at_limit = raw.take(&mut session, "").await;
    at_limit.send(response_head(200, &vec![b'x'; MAX_INLINE_BODY_BYTES], true)).await;
    let mut at_limit = at_limit;
    assert_eq!(at_limit.reply().await.body.unwrap().len(), MAX_INLINE_BODY_BYTES);

    let over = raw.take(&mut session, "").await;
    over.send(response_head(200, &vec![b'x'; MAX_INLINE_BODY_BYTES + 1], true)).await;
    over.expect_protocol_error(&raw, "an inline body of 65537 bytes").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_body_in_a_head_that_is_not_complete_is_a_protocol_error() {
    let raw = Raw::start().await;
    let mut session = raw.session(hello()).await;
    let taken = raw.take(&mut session, "").await;
    taken.send(response_head(200, b"early", false)).await;
    taken.expect_protocol_error(&raw, "not complete").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn an_invalid_status_is_a_protocol_error() {
    let raw = Raw::start().await;
    let mut session = raw.session(hello()).await;
    let taken = raw.take(&mut session, "").await;
    taken.send(response_head(42, b"", true)).await;
    taken.expect_protocol_error(&raw, "the invalid status 42").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_frame_for_another_request_is_a_protocol_error() {
    let raw = Raw::start().await;
    let mut session = raw.session(hello()).await;
    let taken = raw.take(&mut session, "").await;
    taken.send_as("someone-else", response_head(200, b"", true)).await;
    taken.expect_protocol_error(&raw, "a frame for request \"someone-else\"").await;

    // Mid-body too: the caller's body breaks off.
    let mut taken = raw.take(&mut session, "").await;
    taken.send(response_head(200, b"", false)).await;
    taken.send_as("", chunk(10)).await;
    let reply = taken.reply().await;
    reply.assert_broken_off();
    taken.expect_call_ended(&raw, "a frame for request \"\"").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn ending_the_call_without_answering_is_a_protocol_error() {
    let raw = Raw::start().await;
    let mut session = raw.session(hello()).await;
    let mut taken = raw.take(&mut session, "").await;
    taken.end_our_side();
    taken.expect_protocol_error(&raw, "ended the call without answering").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn an_accept_or_standby_after_the_first_frame_is_a_protocol_error() {
    let raw = Raw::start().await;
    let mut session = raw.session(hello()).await;
    let taken = raw.take(&mut session, "").await;
    let again = accept(&taken.request_id, &session.welcome.session_id).frame.unwrap();
    taken.send(again).await;
    taken.expect_protocol_error(&raw, "Accept instead of ResponseHead or Failure").await;

    let taken = raw.take(&mut session, "").await;
    taken.send(standby(&session.welcome.session_id).frame.unwrap()).await;
    taken.expect_protocol_error(&raw, "Standby instead of ResponseHead or Failure").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_second_response_head_is_a_protocol_error() {
    let raw = Raw::start().await;
    let mut session = raw.session(hello()).await;
    let mut taken = raw.take(&mut session, "").await;
    taken.send(response_head(200, b"", false)).await;
    taken.send(response_head(500, b"", false)).await;
    taken.send(end()).await;
    // The caller has the first head's status already: its body breaks off.
    let reply = taken.reply().await;
    reply.assert_broken_off();
    taken.expect_call_ended(&raw, "ResponseHead in the middle of the response body").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_chunk_over_64_kib_is_a_protocol_error() {
    let raw = Raw::start().await;
    let mut session = raw.session(hello()).await;
    let mut taken = raw.take(&mut session, "").await;
    taken.send(response_head(200, b"", false)).await;
    taken.send(chunk(MAX_CHUNK_BYTES)).await;
    taken.send(chunk(200 * 1024)).await;
    taken.send(end()).await;
    let reply = taken.reply().await;
    reply.assert_broken_off();
    taken.expect_call_ended(&raw, "a ResponseBody chunk of 204800 bytes").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_frame_over_the_frame_limit_is_a_protocol_error() {
    let raw = Raw::start().await;
    let mut session = raw.session(hello()).await;
    let taken = raw.take(&mut session, "").await;
    let huge = v1::Header { name: "x-huge".into(), value: Bytes::from(vec![b'h'; MAX_FRAME_BYTES]) };
    let frame = agent_frame::Frame::ResponseHead(v1::ResponseHead {
        status: 200,
        headers: vec![huge],
        body: Bytes::new(),
        complete: true,
    });
    taken.send(frame).await;
    taken.expect_protocol_error(&raw, &format!("a frame over the limit of {MAX_FRAME_BYTES} bytes")).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_frame_after_the_end_of_the_answer_is_a_protocol_error() {
    let raw = Raw::start().await;
    let mut session = raw.session(hello()).await;
    // After a complete head: the caller has its whole answer.
    let mut taken = raw.take(&mut session, "").await;
    taken.send(response_head(200, b"whole", true)).await;
    taken.send(end()).await;
    let reply = taken.reply().await;
    assert_eq!((reply.status, reply.body.unwrap()), (200, Bytes::from_static(b"whole")));
    taken.expect_call_ended(&raw, "ResponseEnd after the end of the answer").await;

    // After ResponseEnd.
    let mut taken = raw.take(&mut session, "").await;
    taken.send(response_head(200, b"", false)).await;
    taken.send(chunk(5)).await;
    taken.send(end()).await;
    taken.send(chunk(5)).await;
    let reply = taken.reply().await;
    assert_eq!((reply.status, reply.body.unwrap().len()), (200, 5));
    taken.expect_call_ended(&raw, "ResponseBody after the end of the answer").await;

    // After a Failure.
    let mut taken = raw.take(&mut session, "").await;
    taken.send(agent_frame::Frame::Failure(v1::Failure::new(v1::ErrorCode::ConnectFailed, "refused"))).await;
    taken.send(end()).await;
    assert_eq!(taken.reply().await.status, 502);
    taken.expect_call_ended(&raw, "ResponseEnd after the end of the answer").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_proper_streamed_answer_ends_the_call_cleanly() {
    let raw = Raw::start().await;
    let mut session = raw.session(hello()).await;
    let mut taken = raw.take(&mut session, "").await;
    taken.send(response_head(201, b"", false)).await;
    for _ in 0..3 {
        taken.send(chunk(MAX_CHUNK_BYTES)).await;
    }
    taken.send(end()).await;
    let reply = taken.reply().await;
    assert_eq!((reply.status, reply.body.unwrap().len()), (201, 3 * MAX_CHUNK_BYTES));
    let (status, cancelled) = taken.close().await;
    assert_eq!(status.code(), Code::Ok, "{status:?}");
    assert!(!cancelled);
    assert!(!raw.relay.log().contains("agent broke the tunnel protocol"));
}

#[tokio::test(flavor = "multi_thread")]
async fn failure_codes_reach_the_caller_as_documented() {
    use v1::ErrorCode::*;
    let raw = Raw::start().await;
    let mut session = raw.session(hello()).await;
    let table = [
        (DestinationNotAllowed as i32, 403, "destination-not-allowed"),
        (ConnectFailed as i32, 502, "connect-failed"),
        (Timeout as i32, 504, "timeout"),
        (Cancelled as i32, 502, "cancelled"),
        (BodyTooLarge as i32, 413, "body-too-large"),
        (Internal as i32, 502, "agent-failed"),
        (InvalidRequest as i32, 400, "invalid-request"),
        (UpstreamFailed as i32, 502, "upstream-failed"),
        (Unspecified as i32, 502, "agent-failed"),
        // A code from a newer agent reads as internal.
        (99, 502, "agent-failed"),
    ];
    for (code, status, slug) in table {
        let mut taken = raw.take(&mut session, "").await;
        taken.send(agent_frame::Frame::Failure(v1::Failure { code, message: "from the raw agent".into() })).await;
        let reply = taken.reply().await;
        assert_eq!((reply.status, reply.slug.as_deref()), (status, Some(slug)), "code {code}: {reply:?}");
        let (ended, cancelled) = taken.close().await;
        assert_eq!(ended.code(), Code::Ok, "code {code}: {ended:?}");
        assert!(!cancelled, "a failure ends the exchange: nothing to cancel");
    }
}

// ------------------------------------------------------ the relay's request

#[tokio::test(flavor = "multi_thread")]
async fn the_relay_sends_end_to_end_headers_and_bodies_in_bounded_frames() {
    let raw = Raw::start().await;
    let mut session = raw.session(hello()).await;
    let url = format!("{}/api/v1/proxy?agent={AGENT}&url={DESTINATION}", raw.relay.http_url);
    let admin = raw.relay.admin_token();
    let send = |body: Vec<u8>| {
        let (url, admin) = (url.clone(), admin.clone());
        tokio::spawn(async move {
            let response = reqwest::Client::new()
                .post(url)
                .bearer_auth(admin)
                .header("connection", "x-private")
                .header("x-private", "1")
                .header("keep-alive", "timeout=5")
                .header("x-kept", "yes")
                .body(body)
                .send()
                .await
                .unwrap();
            response.status().as_u16()
        })
    };

    // A small body travels in the head.
    let reply = send(b"small".to_vec());
    let offer = session.next_offer().await;
    let (tx, mut rx) = raw.forward(accept(&offer.request_id, &session.welcome.session_id)).await.unwrap();
    let request = match within(rx.message()).await.unwrap() {
        Some(v1::RelayFrame { frame: Some(relay_frame::Frame::RequestHead(head)), .. }) => head,
        other => panic!("expected RequestHead, got {other:?}"),
    };
    let names: Vec<&str> = request.headers.iter().map(|h| h.name.as_str()).collect();
    for dropped in ["host", "connection", "keep-alive", "x-private", "authorization"] {
        assert!(!names.contains(&dropped), "{dropped} is not passed on: {names:?}");
    }
    assert!(names.contains(&"x-kept") && names.contains(&"content-length"), "{names:?}");
    assert_eq!(request.method, "POST");
    assert!(!request.has_body);
    assert_eq!(request.body, Bytes::from_static(b"small"));
    tx.send(frame(&offer.request_id, response_head(200, b"", true))).await.unwrap();
    assert_eq!(within(reply).await.unwrap(), 200);

    // A larger one follows in chunks of at most 64 KiB, then RequestEnd.
    let size = 3 * MAX_CHUNK_BYTES + 10;
    let reply = send(vec![b'b'; size]);
    let offer = session.next_offer().await;
    let (tx, mut rx) = raw.forward(accept(&offer.request_id, &session.welcome.session_id)).await.unwrap();
    let mut received = 0;
    let mut has_body = false;
    loop {
        let frame = within(rx.message()).await.unwrap().expect("the relay keeps its side open");
        assert_eq!(frame.request_id, offer.request_id, "every frame carries the request id");
        match frame.frame {
            Some(relay_frame::Frame::RequestHead(head)) => {
                assert!(head.has_body && head.body.is_empty());
                has_body = true;
            }
            Some(relay_frame::Frame::RequestBody(chunk)) => {
                assert!(has_body && chunk.data.len() <= MAX_CHUNK_BYTES, "{}", chunk.data.len());
                received += chunk.data.len();
            }
            Some(relay_frame::Frame::RequestEnd(_)) => break,
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(received, size);
    tx.send(frame(&offer.request_id, response_head(200, b"", true))).await.unwrap();
    assert_eq!(within(reply).await.unwrap(), 200);
}

/// A relay that stops while a request on a lane is unanswered (the agent
/// never answers) waits out its grace, fails that request, and exits: an
/// agent cannot hold its shutdown.
#[tokio::test(flavor = "multi_thread")]
async fn a_relay_stops_though_a_lane_request_is_never_answered() {
    // The test relay's grace is 10 s.
    let mut raw = Raw::start().await;
    let session = raw.session(v1::Hello { lanes: 1, ..hello() }).await;
    let mut lane = raw.open_lane(&session, 0).await.unwrap();
    raw.relay.wait_agent_field(AGENT, "lanesOpen", 1).await;
    let mut reply = raw.call("");
    let _unanswered = lane.next_request().await;
    let started = std::time::Instant::now();
    let status = tokio::task::block_in_place(|| raw.relay.terminate(Duration::from_secs(60)));
    assert!(status.success(), "{status}");
    // The grace, then at most 10 s for the agent to end its side.
    assert!(started.elapsed() < Duration::from_secs(25), "stopped after {:?}", started.elapsed());
    let failed = within(&mut reply).await.unwrap();
    assert!(matches!(failed.status, 0 | 502 | 503), "{failed:?}");
}
