//! The agent's health listener (`--health-listen`) is reachable by whoever
//! can reach the agent's pod or host: idle and slow connections to it must
//! not use up the descriptors the agent forwards with.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use borealis_tests::process::OutputText;
use borealis_tests::{AgentProcess, RelayOptions, RelayProcess, servers};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// The agent's header timeout (`borealis_agent::health::HEADER_TIMEOUT`) is
/// 5 s; a loaded machine gets this much more before the test gives up.
const CLOSED_WITHIN: Duration = Duration::from_secs(20);

/// `count` connections from `from` to `to`, each of which sends `first`
/// (possibly nothing) and then stalls.
async fn stalled_connections(from: [u8; 4], to: SocketAddr, count: usize, first: &[u8]) -> Vec<TcpStream> {
    let mut held = Vec::with_capacity(count);
    while held.len() < count {
        let mut stream = borealis_tests::connect_from(from, to).await.unwrap_or_else(|e| panic!("connect {to}: {e}"));
        // A connection the agent closed at once (over its cap) may refuse
        // the write: it is closed all the same, which is what is counted.
        let _ = stream.write_all(first).await;
        held.push(stream);
    }
    held
}

/// How long the far side took to close `stream` (EOF or a reset), counted
/// from `since`; fails after [`CLOSED_WITHIN`].
async fn closed(mut stream: TcpStream, since: Instant) -> Duration {
    let mut buffer = [0u8; 256];
    let deadline = tokio::time::Instant::from_std(since + CLOSED_WITHIN);
    loop {
        match tokio::time::timeout_at(deadline, stream.read(&mut buffer)).await {
            Err(_) => panic!("the agent kept a stalled connection open"),
            Ok(Ok(0) | Err(_)) => return since.elapsed(),
            // A 408 or 400 for a request that never finished, then EOF.
            Ok(Ok(_)) => {}
        }
    }
}

fn host_port(url: &str) -> SocketAddr {
    url.trim_start_matches("http://").parse().unwrap()
}

async fn healthz(client: &reqwest::Client, health_url: &str) -> Duration {
    let start = Instant::now();
    let reply = client.get(format!("{health_url}/healthz")).send().await.unwrap_or_else(|e| panic!("/healthz: {e}"));
    assert!(reply.status().is_success(), "/healthz: {}", reply.status());
    start.elapsed()
}

/// 300 idle connections from one address against an agent limited to 256
/// descriptors: its `/healthz` answers throughout, a request through the
/// tunnel is served, and the agent closes every idle connection and one
/// that sent half a request line (at its cap at once, the others on its
/// header timeout), counting them.
#[tokio::test(flavor = "multi_thread")]
async fn idle_and_slow_connections_cannot_starve_the_agent() {
    let _ = rlimit::increase_nofile_limit(4096);
    let (upstream, _upstream) = servers::upstream().await;
    let relay = RelayProcess::start(RelayOptions::default());
    let (client_id, secret) = relay.create_agent("health-rna");
    let agent = AgentProcess::start_under(
        &["prlimit", "--nofile=256:256", "--"],
        &relay.agents_url,
        &client_id,
        &secret,
        &["--allow", &upstream.to_string()],
        &[],
    );
    let limits = std::fs::read_to_string(format!("/proc/{}/limits", agent.pid())).unwrap();
    let open_files = limits.lines().find(|l| l.starts_with("Max open files")).unwrap().to_owned();
    assert_eq!(open_files.split_whitespace().filter(|w| *w == "256").count(), 2, "{open_files}");
    agent.wait_connected(Duration::from_secs(10)).await;

    // /healthz is asked every 100 ms from 127.0.0.1 for the whole attack.
    let watching = tokio_util::sync::CancellationToken::new();
    let watcher = tokio::spawn({
        let (url, stop) = (agent.health_url.clone(), watching.clone());
        async move {
            let client = reqwest::Client::builder().timeout(Duration::from_secs(10)).build().unwrap();
            let (mut asked, mut slowest) = (0, Duration::ZERO);
            while !stop.is_cancelled() {
                slowest = slowest.max(healthz(&client, &url).await);
                asked += 1;
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            (asked, slowest)
        }
    });

    let health = host_port(&agent.health_url);
    let attack_started = Instant::now();
    let idle = stalled_connections([127, 0, 0, 2], health, 300, b"").await;
    // From another address, under its own cap: one idle, one that sends
    // half a request line and stalls.
    let mut slow = stalled_connections([127, 0, 0, 3], health, 2, b"").await;
    slow[1].write_all(b"GET /heal").await.unwrap();
    let slow_started = Instant::now();

    // The agent still forwards: its descriptors were not used up.
    let out =
        relay.cli().args(["proxy", "--agent", "health-rna", &format!("http://{upstream}/fast")]).run_async().await;
    assert_eq!(out.status.code(), Some(0), "{}", out.stderr_text());
    assert_eq!(out.stdout_text(), "fast");

    // Every connection is closed by the agent: those over the cap at once,
    // the others within the header timeout; the slow ones likewise.
    let mut waits = tokio::task::JoinSet::new();
    for stream in idle {
        waits.spawn(closed(stream, attack_started));
    }
    let slow_waits: Vec<_> = slow.into_iter().map(|stream| tokio::spawn(closed(stream, slow_started))).collect();
    while let Some(took) = waits.join_next().await {
        took.unwrap();
    }
    for wait in slow_waits {
        let took = wait.await.unwrap();
        assert!(took >= Duration::from_secs(4), "closed after {took:?}, before the header timeout");
    }
    let refused = agent.metric("borealis_agent_connections_refused_total{listener=\"health\",cap=\"peer\"}").await;
    assert!(refused >= 300.0 - 16.0, "{refused} refused at the per-address cap");
    let idle_closed = agent.metric("borealis_agent_connections_idle_closed_total").await;
    assert!(idle_closed >= 16.0 + 2.0, "{idle_closed} closed on the header timeout");
    assert_eq!(agent.metric("borealis_agent_connections_refused_total{listener=\"health\",cap=\"total\"}").await, 0.0);

    // And after the attack, it still forwards and answers.
    let out =
        relay.cli().args(["proxy", "--agent", "health-rna", &format!("http://{upstream}/fast")]).run_async().await;
    assert_eq!(out.status.code(), Some(0), "{}", out.stderr_text());
    watching.cancel();
    let (asked, slowest) = watcher.await.expect("every /healthz answered");
    assert!(asked >= 10, "/healthz was asked {asked} times");
    eprintln!("/healthz asked {asked} times during the attack; slowest answer {slowest:?}");
    assert!(!agent.log().contains("Too many open files"), "the agent ran out of descriptors");
}
