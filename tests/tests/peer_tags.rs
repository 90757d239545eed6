//! A replica's request to the replica holding an agent crosses the network
//! in plain HTTP with a peer tag. Someone on that network who takes a hop
//! off the wire (and keeps it from arriving) must not be able to use its
//! tag for another request: other headers or another body are refused,
//! counted and logged by the holder.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::Request;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::any;
use borealis_tests::postgres::Schema;
use borealis_tests::servers::serve;
use borealis_tests::{AgentProcess, RelayOptions, RelayProcess, eventually};
use http_body_util::BodyExt;

const ADMIN_TOKEN: &str = "peer-tags-admin-token-0123456789";

/// A hop as it was taken off the wire: the path and query, the headers, the
/// body and its trailers.
#[derive(Clone)]
struct Hop {
    path: String,
    headers: HeaderMap,
    body: Bytes,
    trailers: HeaderMap,
}

/// A listener that takes every hop sent to it and answers 502 (the hop
/// never reaches the holder), as someone on the network between replicas.
async fn interceptor() -> (SocketAddr, Arc<Mutex<Vec<Hop>>>) {
    let taken: Arc<Mutex<Vec<Hop>>> = Arc::default();
    let keep = taken.clone();
    let addr = serve(Router::new().fallback(any(move |request: Request| {
        let keep = keep.clone();
        async move {
            let (parts, body) = request.into_parts();
            let collected = body.collect().await.unwrap();
            let trailers = collected.trailers().cloned().unwrap_or_default();
            let path = parts.uri.path_and_query().unwrap().to_string();
            keep.lock().unwrap().push(Hop { path, headers: parts.headers, body: collected.to_bytes(), trailers });
            StatusCode::BAD_GATEWAY
        }
    })))
    .await;
    (addr, taken)
}

/// A destination that records each complete request: its path, its
/// `x-test` and `x-added` headers, and its body.
async fn destination() -> (SocketAddr, Arc<Mutex<Vec<(String, String, String)>>>) {
    let seen: Arc<Mutex<Vec<(String, String, String)>>> = Arc::default();
    let keep = seen.clone();
    let addr = serve(Router::new().fallback(any(move |headers: HeaderMap, request: Request| {
        let keep = keep.clone();
        async move {
            let path = request.uri().path().to_owned();
            // Only a body that arrived whole is a request.
            let Ok(body) = request.into_body().collect().await else { return StatusCode::BAD_REQUEST };
            let header = |name: &str| headers.get(name).map(|v| v.to_str().unwrap().to_owned()).unwrap_or_default();
            let (test, added) = (header("x-test"), header("x-added"));
            let body = String::from_utf8_lossy(&body.to_bytes()).into_owned();
            keep.lock().unwrap().push((path, format!("{test}|{added}"), body));
            StatusCode::OK
        }
    })))
    .await;
    (addr, seen)
}

fn replica(schema: &Schema, name: &str, peer_url: Option<&str>) -> RelayProcess {
    let mut args: Vec<String> =
        ["--database-url", &schema.database_url(), "--replica-name", name].map(String::from).to_vec();
    if let Some(url) = peer_url {
        args.extend(["--peer-url".to_owned(), url.to_owned()]);
    }
    RelayProcess::start(RelayOptions {
        extra_args: args,
        env: vec![("BOREALIS_ADMIN_TOKEN".into(), ADMIN_TOKEN.into())],
        ..Default::default()
    })
}

/// Sends `hop` to `holder` as taken, but for `header` and `body` if given.
async fn send_again(
    holder: &str,
    hop: &Hop,
    header: Option<(&str, &str)>,
    body: Option<&'static str>,
) -> (u16, String) {
    let mut headers = hop.headers.clone();
    for framing in ["host", "content-length", "transfer-encoding"] {
        headers.remove(framing);
    }
    if let Some((name, value)) = header {
        headers.insert(axum::http::HeaderName::from_bytes(name.as_bytes()).unwrap(), value.parse().unwrap());
    }
    let data = body.map_or_else(|| hop.body.clone(), |body| Bytes::from_static(body.as_bytes()));
    // The body and its trailers, as frames of no declared length: a body
    // of known length would go with a content-length, without trailers.
    let trailers = std::future::ready(Some(Ok(hop.trailers.clone())));
    let mut whole = std::pin::pin!(http_body_util::Full::new(data).with_trailers(trailers));
    let mut frames = Vec::new();
    while let Some(frame) = whole.frame().await {
        frames.push(frame);
    }
    let body = reqwest::Body::wrap(http_body_util::StreamBody::new(futures_util::stream::iter(frames)));
    let reply =
        reqwest::Client::new().post(format!("{holder}{}", hop.path)).headers(headers).body(body).send().await.unwrap();
    (reply.status().as_u16(), reply.text().await.unwrap())
}

/// Asks `forwarder` to POST `body` to `url` through `agent`, with `x-test: original`.
async fn post_through(forwarder: &str, agent: &str, url: &str, body: &'static str) -> u16 {
    let reply = reqwest::Client::new()
        .post(format!("{forwarder}/api/v1/proxy"))
        .query(&[("agent", agent), ("url", url)])
        .bearer_auth(ADMIN_TOKEN)
        .header("x-test", "original")
        .body(body)
        .send()
        .await
        .unwrap();
    reply.status().as_u16()
}

async fn refused(relay: &RelayProcess, reason: &str) -> f64 {
    relay.metric(&format!("borealis_peer_tags_refused_total{{reason=\"{reason}\"}}")).await
}

#[tokio::test(flavor = "multi_thread")]
async fn a_tag_taken_off_the_wire_carries_no_other_headers_or_body() {
    let schema = Schema::new();
    let (wire, taken) = interceptor().await;
    let (destination, seen) = destination().await;
    // The holder's peer URL leads to the interceptor: every hop to it is taken.
    let holder = replica(&schema, "holder", Some(&format!("http://{wire}")));
    let forwarder = replica(&schema, "forwarder", None);
    let (client_id, secret) = holder.create_agent("tagged");
    let agent = AgentProcess::start(&holder.agents_url, &client_id, &secret, &["--allow", "127.0.0.0/8"]);
    agent.wait_connected(Duration::from_secs(20)).await;

    // A hop taken: the forwarder's caller gets the interceptor's 502.
    let take = |path: &'static str, body: &'static str| {
        let (forwarder, wire_taken) = (forwarder.http_url.clone(), taken.clone());
        let url = format!("http://{destination}{path}");
        async move {
            let before = wire_taken.lock().unwrap().len();
            // Until the forwarder has seen the holder's session, it answers
            // that no instance is connected; then its hop is taken.
            eventually("a hop to the holder is taken", Duration::from_secs(20), || async {
                let status = post_through(&forwarder, "tagged", &url, body).await;
                let hops = wire_taken.lock().unwrap();
                (hops.len() > before).then(|| {
                    assert_eq!((status, hops.len()), (502, before + 1), "one hop taken, the interceptor's 502");
                    hops.last().cloned().unwrap()
                })
            })
            .await
        }
    };
    let first = take("/one", "original body").await;
    assert!(first.headers.contains_key("x-borealis-peer"));
    assert!(first.trailers.contains_key("x-borealis-peer-body-tag"), "the body's tag trails it");

    // Within the tag's 10 s: a changed header is refused, and counted.
    let (status, said) = send_again(&holder.http_url, &first, Some(("x-test", "forged")), None).await;
    assert_eq!(status, 401, "{said}");
    assert!(said.contains("peer tag refused"), "{said}");
    assert_eq!(refused(&holder, "bad-signature").await, 1.0);
    // A header added on the way is not passed on: the hop as sent, with
    // one more header, reaches the destination as sent.
    let (status, said) = send_again(&holder.http_url, &first, Some(("x-added", "injected")), None).await;
    assert_eq!(status, 200, "{said}");
    assert_eq!(
        seen.lock().unwrap().clone(),
        vec![("/one".to_owned(), "original|".to_owned(), "original body".to_owned())]
    );
    // Once used, the tag is refused.
    let (status, _) = send_again(&holder.http_url, &first, None, None).await;
    assert_eq!(status, 401);
    assert_eq!(refused(&holder, "replayed").await, 1.0);

    // Another hop, sent again with another body of the same length: the
    // holder checks the body's tag before the body's end goes on, so the
    // destination never receives it.
    let second = take("/two", "second body").await;
    let (status, said) = send_again(&holder.http_url, &second, None, Some("forged body")).await;
    assert_ne!(status, 200, "{said}");
    assert_eq!(refused(&holder, "body").await, 1.0);
    assert_eq!(seen.lock().unwrap().len(), 1, "the changed body never reached the destination");

    // Each refusal is logged with the peer's address and the reason.
    for reason in ["bad-signature", "replayed", "body"] {
        let line = holder.wait_log_line(&["peer tag refused", reason]).await;
        assert!(line.contains("127.0.0.1"), "{line}");
    }
}
