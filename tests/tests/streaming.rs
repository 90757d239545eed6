//! Concurrency, cancellation and bounded memory through the tunnel.

use std::time::{Duration, Instant};

use borealis_tests::{AgentProcess, RelayOptions, RelayProcess, rss_kib, servers};
use futures_util::StreamExt;

async fn relay_with_agent(allow: &str, agent_args: &[&str]) -> (RelayProcess, AgentProcess) {
    let relay = RelayProcess::start(RelayOptions::default());
    let (client_id, secret) = relay.create_agent("test-rna");
    let mut args = vec!["--allow", allow];
    args.extend_from_slice(agent_args);
    let agent = AgentProcess::start(&relay.agents_url, &client_id, &secret, &args);
    agent.wait_connected(Duration::from_secs(10)).await;
    (relay, agent)
}

fn via_agent(relay: &RelayProcess, client: &reqwest::Client, url: &str) -> reqwest::RequestBuilder {
    method_via_agent(relay, client, reqwest::Method::GET, url)
}

fn method_via_agent(
    relay: &RelayProcess,
    client: &reqwest::Client,
    method: reqwest::Method,
    url: &str,
) -> reqwest::RequestBuilder {
    client
        .request(method, format!("{}/api/v1/proxy", relay.http_url))
        .query(&[("url", url), ("agent", "test-rna")])
        .header("proxy-authorization", format!("Bearer {}", relay.admin_token()))
}

#[tokio::test(flavor = "multi_thread")]
async fn a_stalled_request_does_not_delay_a_hundred_others() {
    let (upstream, state) = servers::upstream().await;
    let (relay, agent) = relay_with_agent(&upstream.to_string(), &[]).await;
    let client = reqwest::Client::new();

    // Held at the upstream until the test lets it go, however long that is.
    let stalled = tokio::spawn(via_agent(&relay, &client, &format!("http://{upstream}/hold")).send());
    borealis_tests::eventually("the stalled request reaches the upstream", Duration::ZERO, || async {
        (state.active() == 1).then_some(())
    })
    .await;

    let fast: Vec<_> = (0..100)
        .map(|_| {
            let request = via_agent(&relay, &client, &format!("http://{upstream}/fast"));
            tokio::spawn(async move { request.send().await.unwrap().text().await.unwrap() })
        })
        .collect();
    // The stalled call holds its stream until it is released; had the
    // others waited on it, they would never finish.
    let all = async {
        for task in fast {
            assert_eq!(task.await.unwrap(), "fast");
        }
    };
    tokio::time::timeout(borealis_tests::PATIENCE, all)
        .await
        .expect("the 100 requests never finished beside the stalled one");
    assert!(!stalled.is_finished(), "the stalled request is still waiting");
    assert_eq!(state.active(), 1, "the stalled request is still in flight at the upstream");
    assert_eq!(state.hits(), 101);
    // The agent still holds the stalled one (it counts the others done a
    // moment after their callers have the replies).
    agent.wait_metric("borealis_agent_in_flight", 1.0).await;

    state.release();
    let reply = stalled.await.unwrap().unwrap();
    assert_eq!(reply.text().await.unwrap(), "released");
}

#[tokio::test(flavor = "multi_thread")]
async fn cancelling_a_proxied_request_closes_the_upstream_connection() {
    let (drip, mut closed) = servers::drip().await;
    let (relay, agent) = relay_with_agent(&drip.to_string(), &[]).await;
    let client = reqwest::Client::new();

    let response = via_agent(&relay, &client, &format!("http://{drip}/")).send().await.unwrap();
    assert_eq!(response.status(), 200);
    let mut body = response.bytes_stream();
    let first = body.next().await.unwrap().unwrap();
    assert!(first.starts_with(b"drip"), "{first:?}");
    assert!(closed.try_recv().is_err(), "the endpoint is still streaming");

    drop(body);
    let observed = Instant::now();
    tokio::time::timeout(Duration::from_secs(5), closed.recv())
        .await
        .expect("the endpoint sees its connection closed after the caller cancels")
        .unwrap();
    println!("upstream saw the close {:?} after the cancel", observed.elapsed());
    borealis_tests::eventually("agent has nothing in flight", Duration::from_secs(5), || async {
        (agent.metric("borealis_agent_in_flight").await == 0.0).then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_256_mib_body_streams_with_flat_memory() {
    const SIZE: u64 = 256 * 1024 * 1024;
    const LIMIT_KIB: u64 = 64 * 1024;
    let (upstream, _) = servers::upstream().await;
    let (relay, agent) = relay_with_agent(&upstream.to_string(), &[]).await;
    let client = reqwest::Client::new();

    // Warm up both processes (pools, buffers) before the baseline.
    let warm = via_agent(&relay, &client, &format!("http://{upstream}/bytes/1048576")).send().await.unwrap();
    assert_eq!(warm.bytes().await.unwrap().len(), 1 << 20);
    let (relay_pid, agent_pid) = (relay.pid(), agent.pid());
    let baseline = (rss_kib(relay_pid), rss_kib(agent_pid));

    let sampling = tokio_util::sync::CancellationToken::new();
    let sampler = {
        let stop = sampling.clone();
        tokio::spawn(async move {
            let mut peak = (0u64, 0u64);
            while !stop.is_cancelled() {
                peak = (peak.0.max(rss_kib(relay_pid)), peak.1.max(rss_kib(agent_pid)));
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            peak
        })
    };
    let started = Instant::now();
    let response = via_agent(&relay, &client, &format!("http://{upstream}/bytes/{SIZE}")).send().await.unwrap();
    assert_eq!(response.status(), 200);
    let mut received = 0u64;
    let mut body = response.bytes_stream();
    while let Some(chunk) = body.next().await {
        let chunk = chunk.unwrap();
        assert!(chunk.iter().all(|&b| b == b'x'));
        received += chunk.len() as u64;
    }
    let elapsed = started.elapsed();
    sampling.cancel();
    let peak = sampler.await.unwrap();
    assert_eq!(received, SIZE);
    let growth = (peak.0.saturating_sub(baseline.0), peak.1.saturating_sub(baseline.1));
    println!(
        "256 MiB in {elapsed:?} ({:.0} MiB/s); relay RSS {} -> {} KiB (+{} KiB), agent RSS {} -> {} KiB (+{} KiB)",
        256.0 / elapsed.as_secs_f64(),
        baseline.0,
        peak.0,
        growth.0,
        baseline.1,
        peak.1,
        growth.1
    );
    assert!(growth.0 < LIMIT_KIB, "relay grew by {} KiB", growth.0);
    assert!(growth.1 < LIMIT_KIB, "agent grew by {} KiB", growth.1);
}

#[tokio::test(flavor = "multi_thread")]
async fn max_concurrency_bounds_what_the_agent_sends_at_once() {
    let (upstream, counts) = servers::upstream().await;
    let (relay, _agent) = relay_with_agent(&upstream.to_string(), &["--max-concurrency", "2"]).await;
    let client = reqwest::Client::new();
    let requests: Vec<_> = (0..6)
        .map(|_| {
            let request = via_agent(&relay, &client, &format!("http://{upstream}/slow"));
            tokio::spawn(async move {
                let response = request.send().await.unwrap();
                format!("{} {}", response.status(), response.text().await.unwrap())
            })
        })
        .collect();
    for request in requests {
        assert_eq!(request.await.unwrap(), "200 OK slow", "requests over the limit wait, then succeed");
    }
    assert_eq!(counts.hits(), 6);
    assert_eq!(counts.most_active(), 2, "the destination never saw more than --max-concurrency at once");
}

#[tokio::test(flavor = "multi_thread")]
async fn more_than_a_thousand_requests_share_one_session() {
    // h2 closes a connection after 1024 locally reset streams: calls must end cleanly.
    let (upstream, _) = servers::upstream().await;
    let (relay, agent) = relay_with_agent(&upstream.to_string(), &[]).await;
    let client = reqwest::Client::new();
    let url = format!("http://{upstream}/echo");
    let statuses: Vec<u16> = futures_util::stream::iter(0..1500)
        .map(|i| {
            let request = via_agent(&relay, &client, &url).body(format!("request {i}"));
            async move { request.send().await.map(|r| r.status().as_u16()).unwrap_or(0) }
        })
        .buffer_unordered(16)
        .collect()
        .await;
    let failed = statuses.iter().filter(|s| **s != 200).count();
    assert_eq!(failed, 0, "{failed} of 1500 requests failed");
    assert_eq!(agent.metric("borealis_agent_sessions_total").await, 1.0, "the session was never lost");
}

/// Small bodies of known length travel inside the request and response
/// heads; larger ones, and bodies of unknown length, stream in frames.
/// Every size on both sides of that limit must arrive byte for byte.
#[tokio::test(flavor = "multi_thread")]
async fn bodies_on_either_side_of_the_inline_limit_arrive_whole() {
    let (upstream, _) = servers::upstream().await;
    let (relay, _agent) = relay_with_agent(&upstream.to_string(), &[]).await;
    let client = reqwest::Client::new();
    let limit = borealis_protocol::MAX_INLINE_BODY_BYTES;
    for size in [0, 1, limit - 1, limit, limit + 1, 5 * limit + 7] {
        let body: Vec<u8> = (0..size as u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 11) as u8).collect();
        let echoed = method_via_agent(&relay, &client, reqwest::Method::POST, &format!("http://{upstream}/echo"))
            .body(body.clone())
            .send()
            .await
            .unwrap();
        assert_eq!(echoed.status(), 200, "POST of {size} bytes");
        assert_eq!(echoed.headers()["x-echo-method"], "POST");
        assert_eq!(echoed.bytes().await.unwrap(), body, "echo of {size} bytes");

        // Of unknown length: sent chunked, so never inline.
        let chunks: Vec<Result<Vec<u8>, std::io::Error>> = body.chunks(1000).map(|c| Ok(c.to_vec())).collect();
        let echoed = method_via_agent(&relay, &client, reqwest::Method::POST, &format!("http://{upstream}/echo"))
            .body(reqwest::Body::wrap_stream(futures_util::stream::iter(chunks)))
            .send()
            .await
            .unwrap();
        assert_eq!(echoed.status(), 200, "chunked POST of {size} bytes");
        assert_eq!(echoed.bytes().await.unwrap(), body, "chunked echo of {size} bytes");

        let fetched = via_agent(&relay, &client, &format!("http://{upstream}/bytes/{size}")).send().await.unwrap();
        assert_eq!(fetched.status(), 200);
        assert_eq!(fetched.headers()["content-length"], size.to_string().as_str());
        let fetched = fetched.bytes().await.unwrap();
        assert_eq!(fetched.len(), size, "GET of {size} bytes");
        assert!(fetched.iter().all(|&b| b == b'x'));
    }
}
