//! Bad input gets a clear error that names the problem, and nothing breaks.

use std::time::Duration;

use borealis_tests::process::OutputText;
use borealis_tests::{AgentProcess, RelayOptions, RelayProcess, servers};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[tokio::test(flavor = "multi_thread")]
async fn proxy_calls_name_what_is_wrong() {
    let (upstream, _) = servers::upstream().await;
    let relay = RelayProcess::start(RelayOptions {
        direct_allow: vec!["127.0.0.0/8".into()],
        extra_args: vec!["--max-body-bytes".into(), "1024".into()],
        ..Default::default()
    });
    let (client_id, secret) = relay.create_agent("test-rna");
    relay.create_agent("idle");

    let out = relay.cli().args(["proxy", "--agent", "test-rna", "not a url"]).run_async().await;
    assert_eq!(out.status.code(), Some(2));
    assert!(out.stderr_text().contains("invalid URL \"not a url\""), "{}", out.stderr_text());
    let out = relay.cli().args(["proxy", "ftp://example.com/x"]).run_async().await;
    assert_eq!(out.status.code(), Some(2));
    assert!(out.stderr_text().contains("only http and https"), "{}", out.stderr_text());

    let out = relay.cli().args(["proxy", "--agent", "ghost", &format!("http://{upstream}/fast")]).run_async().await;
    assert_eq!(out.status.code(), Some(2));
    assert!(out.stderr_text().contains("agent \"ghost\" is not registered"), "{}", out.stderr_text());

    let out = relay.cli().args(["proxy", "--agent", "idle", &format!("http://{upstream}/fast")]).run_async().await;
    assert_eq!(out.status.code(), Some(1));
    assert!(out.stderr_text().contains("no instance of agent \"idle\" is connected"), "{}", out.stderr_text());

    let agent = AgentProcess::start(&relay.agents_url, &client_id, &secret, &["--allow", &upstream.to_string()]);
    agent.wait_connected(Duration::from_secs(10)).await;
    let big = "x".repeat(4096);
    for args in
        [vec!["proxy", "-X", "POST", "-d", &big], vec!["proxy", "--agent", "test-rna", "-X", "POST", "-d", &big]]
    {
        let url = format!("http://{upstream}/echo");
        let out = relay.cli().args(&args).args([&url]).run_async().await;
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        assert!(out.stderr_text().contains("larger than the limit of 1024 bytes"), "{}", out.stderr_text());
    }
    // A reply that declares its oversize length is refused before anything
    // is passed on; one of undeclared length is cut off at the limit.
    let out =
        relay.cli().args(["proxy", "--agent", "test-rna", &format!("http://{upstream}/bytes/4096")]).run_async().await;
    assert_eq!(out.status.code(), Some(2), "{}", out.stderr_text());
    assert!(out.stderr_text().contains("(4096 bytes) is larger than 1024 bytes"), "{}", out.stderr_text());
    assert!(out.stdout.is_empty());
    let out = relay
        .cli()
        .args(["proxy", "--agent", "test-rna", &format!("http://{upstream}/chunked/4096")])
        .run_async()
        .await;
    assert_eq!(out.status.code(), Some(1), "an oversize reply is cut off, not delivered whole");
    assert!(out.stdout.len() <= 1024, "at most the limit was passed on: {}", out.stdout.len());

    let out = relay.cli().args(["agents", "create", "bad id!"]).run_async().await;
    assert_eq!(out.status.code(), Some(2));
    assert!(out.stderr_text().contains("invalid agent identifier \"bad id!\""), "{}", out.stderr_text());
    let out = relay.cli().args(["agents", "create", "test-rna"]).run_async().await;
    assert!(out.stderr_text().contains("already has credentials"), "{}", out.stderr_text());
    let out =
        relay.cli().env("BOREALIS_ADMIN_TOKEN", "wrong-token-wrong-token").args(["agents", "list"]).run_async().await;
    assert_eq!(out.status.code(), Some(1));
    assert!(out.stderr_text().contains("admin token"), "{}", out.stderr_text());
}

#[tokio::test(flavor = "multi_thread")]
async fn garbage_on_either_port_neither_crashes_nor_wedges_the_relay() {
    let (upstream, _) = servers::upstream().await;
    let relay = RelayProcess::start(RelayOptions::default());
    let (client_id, secret) = relay.create_agent("test-rna");
    let agent = AgentProcess::start(&relay.agents_url, &client_id, &secret, &["--allow", &upstream.to_string()]);
    agent.wait_connected(Duration::from_secs(10)).await;

    let garbage: Vec<u8> = (0..64 * 1024u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8).collect();
    for base in [&relay.agents_url, &relay.http_url] {
        let addr = base.trim_start_matches("http://");
        for payload in [
            &garbage[..],
            b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x04\xff\xff\xff\xff\xff",
            b"GET / HTTP/1.1\r\nHost: x\r\nContent-Length: -5\r\n\r\n",
        ] {
            let mut socket = tokio::net::TcpStream::connect(addr).await.unwrap();
            let _ = socket.write_all(payload).await;
            let mut sink = Vec::new();
            let _ = tokio::time::timeout(Duration::from_secs(2), socket.read_to_end(&mut sink)).await;
        }
    }
    // The relay still serves, and the agent's session is untouched.
    let health = reqwest::get(format!("{}/healthz", relay.http_url)).await.unwrap();
    assert_eq!(health.status(), 200);
    let out = relay.cli().args(["proxy", "--agent", "test-rna", &format!("http://{upstream}/fast")]).run_async().await;
    assert_eq!(out.stdout_text(), "fast", "{}", out.stderr_text());
    assert_eq!(agent.metric("borealis_agent_sessions_total").await, 1.0);
}

/// An agent given the relay's HTTP API address instead of its agents'
/// listener says so once and exits non-zero, instead of retrying forever.
#[tokio::test(flavor = "multi_thread")]
async fn an_agent_pointed_at_the_http_listener_says_so_and_exits() {
    let relay = borealis_tests::RelayProcess::start(borealis_tests::RelayOptions::default());
    let (client_id, secret) = relay.create_agent("vm");
    let (status, stderr) = borealis_tests::process::run_agent_to_exit(
        &["--relay", &relay.http_url, "--client-id", &client_id, "--client-secret", &secret, "--allow-any"],
        Duration::from_secs(30),
    );
    assert_eq!(status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("the server at --relay does not serve the agents' tunnel")
            && stderr.contains("this is the relay's HTTP API listener")
            && stderr.contains("--agent-listen"),
        "{stderr}"
    );
    assert_eq!(stderr.matches("reconnecting").count(), 0, "no retries: {stderr}");

    // The agent's old name for its relay still works, with a warning.
    let (status, stderr) = borealis_tests::process::run_agent_to_exit_with_env(
        &["--client-id", &client_id, "--client-secret", &secret, "--allow-any"],
        &[("BOREALIS_RELAY", relay.http_url.as_str())],
        Duration::from_secs(30),
    );
    assert_eq!(status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("BOREALIS_RELAY is read as the agent's relay for one more release"), "{stderr}");
}

#[tokio::test(flavor = "multi_thread")]
async fn an_agent_with_nothing_allowed_refuses_to_start_and_says_how_to_fix_it() {
    let (status, stderr) = borealis_tests::process::run_agent_to_exit(
        &["--relay", "http://127.0.0.1:9", "--client-id", "x", "--client-secret", "y"],
        Duration::from_secs(10),
    );
    assert_eq!(status.code(), Some(2));
    assert!(stderr.contains("--allow RULE") && stderr.contains("--allow-any"), "{stderr}");
    let (status, stderr) = borealis_tests::process::run_agent_to_exit(
        &["--relay", "http://127.0.0.1:9", "--client-id", "x", "--client-secret", "y", "--allow", "*.", "--allow-any"],
        Duration::from_secs(10),
    );
    assert_eq!(status.code(), Some(2));
    assert!(stderr.contains("invalid allow rule \"*.\""), "{stderr}");
    let (status, stderr) = borealis_tests::process::run_agent_to_exit(
        &[
            "--relay",
            "http://127.0.0.1:9",
            "--client-id",
            "x",
            "--client-secret",
            "y",
            "--allow-any",
            "--worker-threads",
            "0",
        ],
        Duration::from_secs(10),
    );
    assert_eq!(status.code(), Some(2));
    assert!(stderr.contains("--worker-threads") && stderr.contains("1..=1024"), "{stderr}");
}
