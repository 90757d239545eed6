//! Lanes: small exchanges batched on a session's long-lived `Lane` calls,
//! through a real relay and agent. Many at once, each answered with its own
//! body; large and streamed ones on calls of their own beside them;
//! cancels, deadlines and a dying agent; agents and relays without lanes.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use borealis_tests::{AgentProcess, RelayOptions, RelayProcess, eventually, servers};
use bytes::Bytes;
use futures_util::StreamExt;

const BY_LANE: &str = "borealis_agent_dispatches_total{way=\"lane\"}";
const BY_STANDBY: &str = "borealis_agent_dispatches_total{way=\"standby\"}";
const BY_OFFER: &str = "borealis_agent_dispatches_total{way=\"offer\"}";

/// A relay, agent `lanes` registered, and one instance of it connected.
struct Setup {
    relay: RelayProcess,
    client_id: String,
    secret: String,
    allow: String,
    agent: AgentProcess,
}

impl Setup {
    async fn start(upstream: std::net::SocketAddr, relay_args: &[&str], agent_args: &[&str]) -> Self {
        let options =
            RelayOptions { extra_args: relay_args.iter().map(|a| a.to_string()).collect(), ..Default::default() };
        let relay = RelayProcess::start(options);
        let (client_id, secret) = relay.create_agent("lanes");
        let allow = upstream.to_string();
        let setup = Self {
            agent: Self::agent_for(&relay, &client_id, &secret, &allow, agent_args),
            relay,
            client_id,
            secret,
            allow,
        };
        setup.agent.wait_connected(Duration::from_secs(10)).await;
        setup
    }

    fn agent_for(relay: &RelayProcess, client_id: &str, secret: &str, allow: &str, args: &[&str]) -> AgentProcess {
        let mut all = vec!["--allow", allow];
        all.extend_from_slice(args);
        AgentProcess::start(&relay.agents_url, client_id, secret, &all)
    }

    /// Another instance of the same agent.
    async fn another_instance(&self) -> AgentProcess {
        let agent = Self::agent_for(&self.relay, &self.client_id, &self.secret, &self.allow, &[]);
        agent.wait_connected(Duration::from_secs(10)).await;
        agent
    }

    fn proxy(&self, client: &reqwest::Client, method: reqwest::Method, url: &str) -> reqwest::RequestBuilder {
        client
            .request(method, format!("{}/api/v1/proxy", self.relay.http_url))
            .query(&[("url", url), ("agent", "lanes")])
            .header("proxy-authorization", format!("Bearer {}", self.relay.admin_token()))
    }

    /// Waits until the relay counts `open` lanes of the agent open.
    async fn wait_lanes(&self, open: usize) {
        eventually(&format!("{open} lanes open"), Duration::from_secs(10), || async {
            let instances = self.relay.instances("lanes").await;
            let lanes: u64 = instances.iter().map(|i| i["lanesOpen"].as_u64().unwrap_or(0)).sum();
            (lanes == open as u64).then_some(())
        })
        .await;
    }

    fn no_violations(&self) {
        let log = self.relay.log();
        assert!(!log.contains("broke the tunnel protocol"), "no protocol violation: {log}");
    }
}

fn digest(bytes: &[u8]) -> Vec<u8> {
    ring::digest::digest(&ring::digest::SHA256, bytes).as_ref().to_vec()
}

/// A body of `n` bytes that differs from request to request.
fn body_of(request: usize, n: usize) -> Bytes {
    let mut state = (request as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..n)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state as u8
        })
        .collect::<Vec<u8>>()
        .into()
}

#[tokio::test(flavor = "multi_thread")]
async fn ten_thousand_small_requests_at_64_at_once_each_get_their_own_answer() {
    const REQUESTS: usize = 10_000;
    let (upstream, _) = servers::upstream().await;
    let setup = Setup::start(upstream, &[], &[]).await;
    setup.wait_lanes(4).await;
    let client = reqwest::Client::new();
    let echo = format!("http://{upstream}/echo");
    let started = Instant::now();
    let checked = futures_util::stream::iter(0..REQUESTS)
        .map(|i| {
            // Mostly small, some at the lanes' 64 KiB limit.
            let size = if i % 500 == 0 { 64 * 1024 } else { (i * 37) % 4096 };
            let body = body_of(i, size);
            let expected = digest(&body);
            let request =
                setup.proxy(&client, reqwest::Method::POST, &echo).header("x-request", i.to_string()).body(body);
            async move {
                let response = request.send().await.unwrap_or_else(|e| panic!("request {i}: {e}"));
                assert_eq!(response.status(), 200, "request {i}");
                let body = response.bytes().await.unwrap();
                assert_eq!(digest(&body), expected, "request {i} got another request's body ({} bytes)", body.len());
            }
        })
        .buffer_unordered(64)
        .count()
        .await;
    println!("{checked} requests in {:?}", started.elapsed());
    assert_eq!(checked, REQUESTS);
    assert_eq!(setup.relay.metric(BY_LANE).await, REQUESTS as f64, "every one went down a lane");
    setup.agent.wait_metric("borealis_agent_requests_total{outcome=\"2xx\"}", REQUESTS as f64).await;
    setup.no_violations();
}

#[tokio::test(flavor = "multi_thread")]
async fn small_requests_pass_a_streamed_upload_in_progress() {
    const MIB: usize = 1024 * 1024;
    let (upstream, _) = servers::upstream().await;
    let setup = Setup::start(upstream, &[], &[]).await;
    setup.wait_lanes(4).await;
    let client = reqwest::Client::new();

    // 100 MiB, streamed: the second half waits until the small ones are done,
    // so the upload is in progress for as long as they run.
    let pulled = Arc::new(AtomicUsize::new(0));
    let small_done = Arc::new(tokio::sync::Notify::new());
    let chunks = {
        let (pulled, small_done) = (pulled.clone(), small_done.clone());
        futures_util::stream::unfold(0usize, move |sent| {
            let (pulled, small_done) = (pulled.clone(), small_done.clone());
            async move {
                if sent == 100 {
                    return None;
                }
                if sent == 50 {
                    small_done.notified().await;
                }
                pulled.fetch_add(1, Ordering::SeqCst);
                Some((Ok::<_, std::io::Error>(Bytes::from(vec![b'u'; MIB])), sent + 1))
            }
        })
    };
    let sink = format!("http://{upstream}/sink");
    let upload = setup.proxy(&client, reqwest::Method::POST, &sink).body(reqwest::Body::wrap_stream(chunks)).send();
    let upload = tokio::spawn(async move { upload.await.map(|r| async move { (r.status(), r.text().await) }) });
    eventually("half the upload sent", Duration::from_secs(30), || async {
        (pulled.load(Ordering::SeqCst) >= 50).then_some(())
    })
    .await;

    let echo = format!("http://{upstream}/echo");
    let small = (0..50).map(|i| {
        let request = setup.proxy(&client, reqwest::Method::POST, &echo).body(body_of(i, 512));
        async move { request.send().await.unwrap().bytes().await.unwrap() }
    });
    let answers = tokio::time::timeout(Duration::from_secs(30), futures_util::future::join_all(small))
        .await
        .expect("the small requests finish while the upload waits for them");
    for (i, answer) in answers.iter().enumerate() {
        assert_eq!(answer, &body_of(i, 512), "small request {i}");
    }
    assert!(!upload.is_finished(), "the upload was still in progress");
    assert_eq!(pulled.load(Ordering::SeqCst), 50, "the upload was held at its half while they ran");
    small_done.notify_one();
    let (status, text) = upload.await.unwrap().unwrap().await;
    assert_eq!(status, 200);
    assert_eq!(text.unwrap(), (100 * MIB).to_string(), "the whole upload arrived");
    assert_eq!(setup.relay.metric(BY_LANE).await, 50.0, "the small ones went down lanes");
    let calls = setup.relay.metric(BY_STANDBY).await + setup.relay.metric(BY_OFFER).await;
    assert_eq!(calls, 1.0, "the upload took a call of its own");
    setup.no_violations();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_cancelled_or_late_request_on_a_lane_is_dropped_and_the_lane_serves_on() {
    let (upstream, _) = servers::upstream().await;
    let (silent, mut closed) = servers::silent().await;
    let setup = Setup::start(upstream, &[], &["--allow", &silent.to_string()]).await;
    setup.wait_lanes(4).await;
    let never = format!("http://{silent}/never");

    // The caller gives up: the relay cancels on the lane, the agent drops
    // the destination's connection.
    let impatient = reqwest::Client::builder().timeout(Duration::from_millis(500)).build().unwrap();
    let gave_up = setup.proxy(&impatient, reqwest::Method::GET, &never).send().await;
    assert!(gave_up.unwrap_err().is_timeout());
    tokio::time::timeout(Duration::from_secs(5), closed.recv())
        .await
        .expect("the agent closed the destination's connection");
    setup.agent.wait_metric("borealis_agent_requests_total{outcome=\"cancelled\"}", 1.0).await;

    // The deadline passes: 504, and the destination's call is dropped too.
    let client = reqwest::Client::new();
    let started = Instant::now();
    let late = setup.proxy(&client, reqwest::Method::GET, &never).query(&[("timeout", "1s")]).send().await.unwrap();
    assert_eq!(late.status(), 504);
    assert_eq!(late.headers()["borealis-error"], "timeout");
    assert!(started.elapsed() < Duration::from_secs(5), "answered at the deadline: {:?}", started.elapsed());
    tokio::time::timeout(Duration::from_secs(5), closed.recv())
        .await
        .expect("the agent closed the late call's connection");

    // The lanes go on.
    let fast = format!("http://{upstream}/fast");
    for i in 0..8 {
        let response = setup.proxy(&client, reqwest::Method::GET, &fast).send().await.unwrap();
        assert_eq!(response.text().await.unwrap(), "fast", "request {i}");
    }
    assert_eq!(setup.relay.metric(BY_LANE).await, 10.0, "all ten went down lanes");
    setup.no_violations();
}

#[tokio::test(flavor = "multi_thread")]
async fn requests_on_the_lanes_of_an_agent_that_dies_fail_at_once_and_the_others_finish() {
    let (upstream, held) = servers::upstream().await;
    let setup = Setup::start(upstream, &[], &[]).await;
    let second = setup.another_instance().await;
    setup.wait_lanes(8).await;
    let client = reqwest::Client::new();
    let hold = format!("http://{upstream}/hold");
    let requests: Vec<_> = (0..8)
        .map(|_| {
            let request = setup.proxy(&client, reqwest::Method::GET, &hold).send();
            tokio::spawn(async move {
                let response = request.await.unwrap();
                let slug = response.headers().get("borealis-error").map(|v| v.to_str().unwrap().to_owned());
                (response.status().as_u16(), slug, Instant::now())
            })
        })
        .collect();
    eventually("all eight at the destination", Duration::from_secs(10), || async {
        (held.active() == 8).then_some(())
    })
    .await;

    let killed_at = Instant::now();
    drop(second);
    // Those of the dead instance fail while the destination still holds them all.
    eventually("a request of the dead instance answered", Duration::from_secs(10), || async {
        requests.iter().any(|r| r.is_finished()).then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let released_at = Instant::now();
    held.release();
    let (mut served, mut failed) = (0, Vec::new());
    for request in requests {
        let (status, slug, at) = request.await.unwrap();
        if status == 200 {
            served += 1;
            continue;
        }
        assert_eq!((status, slug.as_deref()), (502, Some("agent-lost")));
        assert!(at < released_at, "failed before the destination answered");
        failed.push(at.duration_since(killed_at));
    }
    println!("{served} served by the live instance; failed after {failed:?}");
    assert!(!failed.is_empty() && served > 0, "both instances had some: {served} served, {} failed", failed.len());
    assert_eq!(served + failed.len(), 8);
    // At once: well before the relay could miss a heartbeat (2¾ s of 1 s beats).
    assert!(failed.iter().all(|after| *after < Duration::from_secs(2)), "{failed:?}");
}

/// The new agent against a relay that serves no lanes (as one from before
/// lanes), and an agent that opens none (as one from before lanes) against
/// the new relay: each serves small requests on `Forward` calls.
#[tokio::test(flavor = "multi_thread")]
async fn agents_and_relays_without_lanes_still_serve() {
    let (upstream, _) = servers::upstream().await;
    let fast = format!("http://{upstream}/fast");
    let client = reqwest::Client::new();
    for (relay_args, agent_args) in [(&["--agent-lanes", "0"][..], &[][..]), (&[][..], &["--lanes", "0"][..])] {
        let setup = Setup::start(upstream, relay_args, agent_args).await;
        let instance = &setup.relay.instances("lanes").await[0];
        assert_eq!(instance["lanes"], 0, "none granted: {relay_args:?} {agent_args:?}");
        for i in 0..20 {
            let response = setup.proxy(&client, reqwest::Method::GET, &fast).send().await.unwrap();
            assert_eq!(response.text().await.unwrap(), "fast", "request {i}");
        }
        assert_eq!(setup.relay.metric(BY_LANE).await, 0.0);
        let calls = setup.relay.metric(BY_STANDBY).await + setup.relay.metric(BY_OFFER).await;
        assert_eq!(calls, 20.0, "{relay_args:?} {agent_args:?}");
    }
}

/// A response too large for a lane (or of unknown length) is diverted to a
/// call of its own, and arrives whole.
#[tokio::test(flavor = "multi_thread")]
async fn a_large_or_streamed_response_to_a_small_request_comes_on_a_call_of_its_own() {
    let (upstream, _) = servers::upstream().await;
    let setup = Setup::start(upstream, &[], &[]).await;
    setup.wait_lanes(4).await;
    let client = reqwest::Client::new();
    for path in ["bytes/5000000", "chunked/300000", "chunked/10", "bytes/65537"] {
        let url = format!("http://{upstream}/{path}");
        let response = setup.proxy(&client, reqwest::Method::GET, &url).send().await.unwrap();
        assert_eq!(response.status(), 200, "{path}");
        let expected: usize = path.rsplit('/').next().unwrap().parse().unwrap();
        let body = response.bytes().await.unwrap();
        assert_eq!(body.len(), expected, "{path}");
        assert!(body.iter().all(|b| *b == b'x'), "{path}");
    }
    assert_eq!(setup.relay.metric(BY_LANE).await, 4.0, "the requests went down lanes");
    assert_eq!(
        setup.relay.metric(BY_STANDBY).await + setup.relay.metric(BY_OFFER).await,
        0.0,
        "no call was dispatched"
    );
    setup.agent.wait_metric("borealis_agent_requests_total{outcome=\"2xx\"}", 4.0).await;
    setup.no_violations();
}
