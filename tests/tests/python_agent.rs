//! An agent written in Python from `proto/` and `docs/tunnel-protocol.md`
//! alone (`tests/python/agent.py`, grpcio) serves requests through the
//! relay: on `Forward` calls only, as an agent from before lanes does, and
//! with lanes, where a response too large for one is diverted to a call.

use std::process::Command;
use std::time::Duration;

use borealis_tests::{Logged, RelayOptions, RelayProcess, servers};

const BY_LANE: &str = "borealis_agent_dispatches_total{way=\"lane\"}";
const BY_OFFER: &str = "borealis_agent_dispatches_total{way=\"offer\"}";

fn python_agent(relay: &RelayProcess, client_id: &str, secret: &str, allow: &str, lanes: u32) -> Logged {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/python/agent.py");
    let probe = Command::new("python3").args(["-c", "import grpc, grpc_tools"]).output().expect("python3");
    assert!(
        probe.status.success(),
        "the Python agent needs grpcio and grpcio-tools: python3 -m pip install grpcio grpcio-tools (scripts/setup.sh does)"
    );
    let mut command = Command::new("python3");
    command
        .arg(script)
        .args(["--relay", relay.agents_url.trim_start_matches("http://"), "--client-id", client_id])
        .args(["--allow", allow, "--lanes", &lanes.to_string()])
        .env("BOREALIS_CLIENT_SECRET", secret);
    let mut agent = Logged::spawn("python-agent", command);
    agent.wait_for_line("python agent connected", Duration::from_secs(30));
    agent
}

#[tokio::test(flavor = "multi_thread")]
async fn an_agent_written_from_the_proto_alone_serves_with_and_without_lanes() {
    let (upstream, _) = servers::upstream().await;
    let client = reqwest::Client::new();
    for lanes in [0, 2] {
        let relay = RelayProcess::start(RelayOptions::default());
        let (client_id, secret) = relay.create_agent("py");
        let agent = python_agent(&relay, &client_id, &secret, &upstream.to_string(), lanes);
        assert!(agent.log().contains(&format!("lanes={lanes}")), "{}", agent.log());
        if lanes > 0 {
            relay.wait_agent_field("py", "lanesOpen", u64::from(lanes)).await;
        }
        let proxy = |method: reqwest::Method, url: String| {
            client
                .request(method, format!("{}/api/v1/proxy", relay.http_url))
                .query(&[("url", url.as_str()), ("agent", "py")])
                .header("proxy-authorization", format!("Bearer {}", relay.admin_token()))
        };
        let fast = proxy(reqwest::Method::GET, format!("http://{upstream}/fast")).send().await.unwrap();
        assert_eq!((fast.status().as_u16(), fast.text().await.unwrap()), (200, "fast".to_owned()), "lanes {lanes}");
        let body = vec![b'p'; 3000];
        let echo =
            proxy(reqwest::Method::POST, format!("http://{upstream}/echo")).body(body.clone()).send().await.unwrap();
        assert_eq!(echo.headers()["x-echo-method"], "POST");
        assert_eq!(echo.bytes().await.unwrap(), body, "lanes {lanes}");
        let large = proxy(reqwest::Method::GET, format!("http://{upstream}/bytes/300000")).send().await.unwrap();
        assert_eq!(large.bytes().await.unwrap().len(), 300_000, "lanes {lanes}: streamed, or diverted");
        let refused = proxy(reqwest::Method::GET, "http://127.0.0.1:1/nowhere".into()).send().await.unwrap();
        assert_eq!(refused.status(), 403, "lanes {lanes}: its own allow-list");
        let (by_lane, by_offer) = (relay.metric(BY_LANE).await, relay.metric(BY_OFFER).await);
        if lanes == 0 {
            assert_eq!((by_lane, by_offer), (0.0, 4.0), "every request offered");
        } else {
            assert_eq!((by_lane, by_offer), (4.0, 0.0), "every request down a lane");
        }
        let log = relay.log();
        assert!(!log.contains("broke the tunnel protocol"), "{log}");
    }
}
