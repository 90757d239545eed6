//! Inputs the fuzz targets (fuzz/, README: Fuzzing) found, replayed
//! against the real relay where the fix belongs in code the fuzz target
//! cannot reach on its own.
//!
//! A fake agent speaks the tunnel by hand, so it can send what a real agent
//! never would.

use std::time::Duration;

use borealis_protocol::v1::{
    self, agent_control, agent_frame, relay_control, relay_frame, tunnel_client::TunnelClient,
};
use borealis_tests::{RelayOptions, RelayProcess};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

fn with_token<T>(message: T, token: &str) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request.metadata_mut().insert(borealis_protocol::AUTHORIZATION, format!("Bearer {token}").parse().unwrap());
    request
}

/// Found by fuzz/fuzz_targets/tunnel_frames.rs (input
/// fuzz/corpus/tunnel_frames/crash-status-over-16-bits): proxy.rs reads an
/// agent's status as `head.status as u16`, so 65736 is answered as 200 OK.
/// Fixed in `borealis_egress::headers::agent_response_head`; proxy.rs is to
/// call it, and then this test passes.
#[tokio::test(flavor = "multi_thread")]
async fn an_agent_status_over_16_bits_is_refused_not_truncated() {
    let relay = RelayProcess::start(RelayOptions::default());
    let (client_id, secret) = relay.create_agent("fake-agent");
    let http = reqwest::Client::new();
    let token: serde_json::Value = http
        .post(format!("{}{}", relay.agents_url, borealis_protocol::TOKEN_PATH))
        .form(&[("grant_type", "client_credentials"), ("client_id", &client_id), ("client_secret", &secret)])
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let token = token["access_token"].as_str().expect("a token").to_owned();

    let channel = tonic::transport::Endpoint::from_shared(relay.agents_url.clone()).unwrap().connect().await.unwrap();
    let mut client = TunnelClient::new(channel);
    let (to_relay, from_agent) = mpsc::channel(8);
    let hello = v1::Hello {
        agent_id: String::new(),
        version: "fake".into(),
        capacity: 1,
        instance: "fake-1".into(),
        protocol_version: borealis_protocol::PROTOCOL_VERSION,
        standby_calls: 0,
        allow_list: None,
        lanes: 0,
    };
    to_relay.send(v1::AgentControl { msg: Some(agent_control::Msg::Hello(hello)) }).await.unwrap();
    let mut control = client.control(with_token(ReceiverStream::new(from_agent), &token)).await.unwrap().into_inner();
    let session_id = match control.message().await.unwrap().and_then(|m| m.msg) {
        Some(relay_control::Msg::Welcome(welcome)) => welcome.session_id,
        other => panic!("expected a welcome, got {other:?}"),
    };
    // Heartbeats, so that the session outlives the exchange on a slow machine.
    let beats = to_relay.clone();
    tokio::spawn(async move {
        for sequence in 1.. {
            let beat = v1::Heartbeat { sequence, in_flight: 0 };
            if beats.send(v1::AgentControl { msg: Some(agent_control::Msg::Heartbeat(beat)) }).await.is_err() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
    });

    let proxied = tokio::spawn(
        http.get(format!("{}/api/v1/proxy", relay.http_url))
            .query(&[("url", "http://private.internal/"), ("agent", "fake-agent")])
            .header("proxy-authorization", format!("Bearer {}", relay.admin_token()))
            .send(),
    );
    let request_id = loop {
        match control.message().await.unwrap().and_then(|m| m.msg) {
            Some(relay_control::Msg::Offer(offer)) => break offer.request_id,
            Some(relay_control::Msg::Heartbeat(_)) => continue,
            other => panic!("expected an offer, got {other:?}"),
        }
    };
    let (frames, from_agent) = mpsc::channel(8);
    let accept = v1::Accept { session_id };
    frames
        .send(v1::AgentFrame { request_id: request_id.clone(), frame: Some(agent_frame::Frame::Accept(accept)) })
        .await
        .unwrap();
    let mut call = client.forward(with_token(ReceiverStream::new(from_agent), &token)).await.unwrap().into_inner();
    match call.message().await.unwrap().and_then(|f| f.frame) {
        Some(relay_frame::Frame::RequestHead(_)) => {}
        other => panic!("expected a request head, got {other:?}"),
    }
    let head = v1::ResponseHead { status: 65736, headers: Vec::new(), body: Default::default(), complete: true };
    frames.send(v1::AgentFrame { request_id, frame: Some(agent_frame::Frame::ResponseHead(head)) }).await.unwrap();

    let reply = tokio::time::timeout(Duration::from_secs(10), proxied).await.unwrap().unwrap().unwrap();
    assert_eq!(
        reply.status(),
        reqwest::StatusCode::BAD_GATEWAY,
        "status 65736 from an agent was answered as {}",
        reply.status()
    );
}
