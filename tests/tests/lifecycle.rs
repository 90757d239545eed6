//! Tokens, readiness, metrics and graceful shutdown.

use std::time::Duration;

use borealis_tests::console::Console;
use borealis_tests::process::OutputText;
use borealis_tests::{AgentProcess, RelayOptions, RelayProcess, eventually, servers};

#[tokio::test(flavor = "multi_thread")]
async fn the_token_endpoint_speaks_client_credentials_including_the_guides_curl_form() {
    let relay = RelayProcess::start(RelayOptions::default());
    let out = relay.cli().args(["clients", "create", "ci-system"]).run_async().await;
    assert!(out.status.success(), "{}", out.stderr_text());
    let text = out.stdout_text();
    let field = |key: &str| text.lines().find_map(|l| l.strip_prefix(&format!("{key}: "))).unwrap().to_owned();
    let (id, secret) = (field("client_id"), field("client_secret"));
    let client = reqwest::Client::new();
    let token_url = format!("{}/oauth/token", relay.http_url);
    let form = |body: String| {
        client.post(&token_url).header("content-type", "application/x-www-form-urlencoded").body(body).send()
    };

    for body in [
        format!("grant_type=client_credentials&client_id={id}&client_secret={secret}&audience=https://api.example"),
        // Exactly as the callback guide's curl sends it.
        format!(
            "data=audience=https://api.cloud.armory.io&grant_type=client_credentials&client_id={id}&client_secret={secret}"
        ),
    ] {
        let reply = form(body).await.unwrap();
        assert_eq!(reply.status(), 200);
        let json: serde_json::Value = reply.json().await.unwrap();
        assert_eq!(json["token_type"], "Bearer");
        assert_eq!(json["expires_in"], 86400);
        assert!(json["access_token"].as_str().unwrap().len() > 40);
        assert!(json["scope"].is_string());
    }
    let reply = form(format!("grant_type=client_credentials&client_id={id}&client_secret=nope")).await.unwrap();
    assert_eq!(reply.status(), 401);
    assert_eq!(reply.json::<serde_json::Value>().await.unwrap()["error"], "invalid_client");
    let reply = form(format!("grant_type=password&client_id={id}&client_secret={secret}")).await.unwrap();
    assert_eq!(reply.status(), 400);
    assert_eq!(reply.json::<serde_json::Value>().await.unwrap()["error"], "unsupported_grant_type");

    // A callback client's token does not open the agents' tunnel.
    let (upstream, _) = servers::upstream().await;
    let (status, stderr) = borealis_tests::process::run_agent_to_exit(
        &[
            "--relay",
            &relay.agents_url,
            "--client-id",
            &id,
            "--client-secret",
            &secret,
            "--allow",
            &upstream.to_string(),
        ],
        Duration::from_secs(15),
    );
    assert!(!status.success());
    assert!(stderr.contains("not issued to an agent"), "{stderr}");
}

#[tokio::test(flavor = "multi_thread")]
async fn health_readiness_and_metrics_on_both_sides() {
    let (upstream, _) = servers::upstream().await;
    let relay = RelayProcess::start(RelayOptions::default());
    let (client_id, secret) = relay.create_agent("test-rna");
    assert_eq!(reqwest::get(format!("{}/healthz", relay.http_url)).await.unwrap().status(), 200);
    assert_eq!(reqwest::get(format!("{}/readyz", relay.http_url)).await.unwrap().status(), 200);

    // Pointed at nothing, the agent is alive but not ready.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let nowhere = format!("http://{}", closed.local_addr().unwrap());
    drop(closed);
    let lost = AgentProcess::start(&nowhere, &client_id, &secret, &["--allow-any"]);
    assert_eq!(reqwest::get(format!("{}/healthz", lost.health_url)).await.unwrap().status(), 200);
    assert_eq!(reqwest::get(format!("{}/readyz", lost.health_url)).await.unwrap().status(), 503);

    let agent = AgentProcess::start(&relay.agents_url, &client_id, &secret, &["--allow", &upstream.to_string()]);
    agent.wait_connected(Duration::from_secs(10)).await;
    relay.cli().args(["proxy", "--agent", "test-rna", &format!("http://{upstream}/fast")]).run_async().await;
    let metrics = reqwest::get(format!("{}/metrics", relay.http_url)).await.unwrap().text().await.unwrap();
    for series in [
        "borealis_agent_sessions{team=\"default\",agent=\"test-rna\"} 1",
        "borealis_forwarded_requests_total{mode=\"agent\",outcome=\"2xx\"} 1",
        "borealis_forward_latency_seconds_count{mode=\"agent\"} 1",
    ] {
        assert!(metrics.contains(series), "{series} missing from:\n{metrics}");
    }
}

/// A destination whose `/slow` answers "finished" after `delay`: long
/// enough to stop a process while the request is in flight.
async fn slow_server(delay: Duration) -> std::net::SocketAddr {
    use axum::routing::get;
    servers::serve(axum::Router::new().route(
        "/slow",
        get(move || async move {
            tokio::time::sleep(delay).await;
            "finished"
        }),
    ))
    .await
}

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_drains_agents_and_lets_requests_in_flight_finish() {
    let slow = slow_server(Duration::from_millis(1500)).await;
    let mut relay = RelayProcess::start(RelayOptions::default());
    let (client_id, secret) = relay.create_agent("test-rna");
    let agent = AgentProcess::start(&relay.agents_url, &client_id, &secret, &["--allow", &slow.to_string()]);
    agent.wait_connected(Duration::from_secs(10)).await;

    relay.wait_standby_idle("test-rna", 2).await;

    // Six at once: two go down the standby calls, the rest come as offers.
    let in_flight: Vec<_> = (0..6)
        .map(|_| {
            let request =
                relay.cli().args(["proxy", "--agent", "test-rna", &format!("http://{slow}/slow")]).run_async();
            tokio::spawn(request)
        })
        .collect();
    eventually("all six reached the agent", Duration::from_secs(5), || async {
        (agent.metric("borealis_agent_in_flight").await == 6.0).then_some(())
    })
    .await;
    let status = relay.terminate(Duration::from_secs(15));
    assert!(status.success(), "relay exits cleanly after SIGTERM: {status}");
    for request in in_flight {
        let out = request.await.unwrap();
        assert_eq!(out.stdout_text(), "finished", "a request in flight completed: {}", out.stderr_text());
    }
    assert_eq!(agent.metric("borealis_agent_drains_total").await, 1.0, "the agent was told to drain");
    assert!(relay.log().contains("draining agents"), "{}", relay.log());
}

/// An agent told to stop drains: the relay closes its standby calls and
/// sends it nothing new, the request in flight finishes, and the agent exits
/// at once after it rather than waiting out its grace period. It goes on
/// beating while it drains, so the relay keeps the session, marked draining,
/// past three heartbeat intervals (1 s each in the tests).
#[tokio::test(flavor = "multi_thread")]
async fn sigterm_on_the_agent_finishes_the_request_in_flight_and_exits_promptly() {
    let slow = slow_server(Duration::from_secs(4)).await;
    let relay = RelayProcess::start(RelayOptions::default());
    let (client_id, secret) = relay.create_agent("test-rna");
    let mut agent = AgentProcess::start(
        &relay.agents_url,
        &client_id,
        &secret,
        &["--allow", &slow.to_string(), "--shutdown-grace", "60s"],
    );
    agent.wait_connected(Duration::from_secs(10)).await;
    relay.wait_standby_idle("test-rna", 2).await;

    let request = relay.cli().args(["proxy", "--agent", "test-rna", &format!("http://{slow}/slow")]).run_async();
    let in_flight = tokio::spawn(request);
    eventually("the request reaches the agent", Duration::ZERO, || async {
        (agent.metric("borealis_agent_in_flight").await == 1.0).then_some(())
    })
    .await;
    agent.signal("TERM");
    eventually("the relay lists the instance as draining", Duration::from_secs(5), || async {
        let instances = relay.instances("test-rna").await;
        (instances.len() == 1 && instances[0]["draining"] == true).then_some(())
    })
    .await;
    let status = agent.wait_exit(borealis_tests::PATIENCE).expect("agent exits after SIGTERM");
    assert!(status.success(), "the agent exits cleanly after SIGTERM: {status}\n{}", agent.log());
    let out = in_flight.await.unwrap();
    assert_eq!(out.stdout_text(), "finished", "the request in flight completed: {}", out.stderr_text());
    // The relay's record: from the agent's drain notice to its leaving.
    let draining = borealis_tests::log_time(&relay.wait_log_line(&["agent is draining"]).await);
    let left = borealis_tests::log_time(&relay.wait_log_line(&["agent disconnected"]).await);
    let took = borealis_tests::between(draining, left);
    println!("the agent left {took:?} after it said it was draining");
    assert!(took < Duration::from_secs(10), "the agent waited {took:?}, towards its 60 s grace");
    let log = relay.log();
    assert!(log.contains("agent is draining"), "{log}");
    // The agent left by itself, not cut off by the relay's heartbeat
    // watchdog while it drained.
    assert!(!log.contains("heartbeats stopped"), "{log}");
    // The relay counts it served.
    assert_eq!(relay.metric("borealis_forwarded_requests_total{mode=\"agent\",outcome=\"2xx\"}").await, 1.0);
}

/// Console sessions are stored: a restart keeps them, and a new admin token
/// ends every session signed in with the old one.
#[tokio::test(flavor = "multi_thread")]
async fn console_sessions_survive_a_restart_and_end_with_their_admin_token() {
    let relay = RelayProcess::start(RelayOptions::default());
    let console = Console::sign_in(&relay.http_url, &relay.admin_token()).await;
    let agents = format!("{}/agents", relay.http_url);
    assert_eq!(console.get(&agents).await.0, 200);

    let relay = relay.kill_and_restart();
    assert_eq!(console.get(&agents).await.0, 200, "a restart keeps the session");

    let rotated = "bat_a-new-admin-token-for-the-console-test";
    let relay = relay.kill_change_and_restart(|dir| std::fs::write(dir.join("admin-token"), rotated).unwrap());
    assert_eq!(relay.admin_token(), rotated);
    assert_eq!(console.get(&agents).await.0, 303, "the old token's session has ended");
    let renewed = Console::sign_in(&relay.http_url, rotated).await;
    assert_eq!(renewed.get(&agents).await.0, 200);
}
