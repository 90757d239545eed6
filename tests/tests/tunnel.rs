//! The outbound tunnel end to end: real relay, agent and CLI processes,
//! real HTTP servers behind them.

use std::time::{Duration, Instant};

use borealis_tests::process::{OutputText, run_agent_to_exit, run_agent_to_exit_with_env};
use borealis_tests::{AgentProcess, RelayOptions, RelayProcess, eventually, servers};

/// A relay with agent `test-rna` connected, allowed to reach `allow`.
async fn relay_with_agent(allow: &[String]) -> (RelayProcess, AgentProcess) {
    let relay = RelayProcess::start(RelayOptions::default());
    let (client_id, secret) = relay.create_agent("test-rna");
    let mut args: Vec<&str> = Vec::new();
    for rule in allow {
        args.extend(["--allow", rule.as_str()]);
    }
    let agent = AgentProcess::start(&relay.agents_url, &client_id, &secret, &args);
    agent.wait_connected(Duration::from_secs(10)).await;
    (relay, agent)
}

fn proxy_request(
    relay: &RelayProcess,
    client: &reqwest::Client,
    agent: Option<&str>,
    url: &str,
) -> reqwest::RequestBuilder {
    let mut query = vec![("url", url.to_owned())];
    if let Some(agent) = agent {
        query.push(("agent", agent.to_owned()));
    }
    client
        .get(format!("{}/api/v1/proxy", relay.http_url))
        .query(&query)
        .header("proxy-authorization", format!("Bearer {}", relay.admin_token()))
}

#[tokio::test(flavor = "multi_thread")]
async fn registration_shows_the_agent_connected_on_its_first_attempt() {
    let relay = RelayProcess::start(RelayOptions::default());
    let (client_id, secret) = relay.create_agent("test-rna");
    let started = Instant::now();
    let agent = AgentProcess::start(&relay.agents_url, &client_id, &secret, &["--allow", "127.0.0.1"]);
    let listing = eventually("agents list shows test-rna connected", Duration::ZERO, || async {
        let out = relay.cli().args(["agents", "list"]).run_async().await;
        assert!(out.status.success(), "{}", out.stderr_text());
        let text = out.stdout_text();
        text.lines().any(|l| l.starts_with("test-rna") && l.split_whitespace().nth(1) == Some("yes")).then_some(text)
    })
    .await;
    println!("connected after {:?}:\n{listing}", started.elapsed());
    // Connected at once: the first attempt held, no reconnect delay was
    // ever waited (the agent logs each one), one session.
    // (The relay lists the session as it sends the welcome; the agent
    // counts it once the welcome arrives.)
    agent.wait_metric("borealis_agent_sessions_total", 1.0).await;
    assert!(agent.log_lines(&["reconnecting"]).is_empty(), "{}", agent.log());
    assert!(listing.contains("0.1.0"), "version column: {listing}");
    assert!(listing.contains("127.0.0.1:"), "remote address column: {listing}");

    let json = relay.cli().args(["--json", "agents", "list"]).run_async().await.stdout_text();
    let value: serde_json::Value = serde_json::from_str(&json).unwrap();
    let instance = &value["agents"][0]["instances"][0];
    for key in ["sessionId", "remoteAddr", "version", "connectedSince", "lastHeartbeat"] {
        assert!(instance[key].is_string(), "{key} missing in {instance}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn forwarding_returns_the_private_endpoints_status_headers_and_body() {
    let (upstream, _) = servers::upstream().await;
    let (relay, _agent) = relay_with_agent(&[upstream.to_string()]).await;

    let out = relay
        .cli()
        .args(["proxy", "--agent", "test-rna", "-i", &format!("http://{upstream}/status/418")])
        .run_async()
        .await;
    assert!(out.status.success(), "{}", out.stderr_text());
    let text = out.stdout_text();
    assert!(text.starts_with("HTTP/1.1 418"), "{text}");
    assert!(text.contains("x-test: yes"), "{text}");
    assert!(text.ends_with("status 418"), "{text}");

    let out = relay
        .cli()
        .args(["proxy", "--agent", "test-rna", "-i", "-X", "PUT", "-d", "payload-123"])
        .args(["-H", "Authorization: Bearer upstream-secret", &format!("http://{upstream}/echo")])
        .run_async()
        .await;
    assert!(out.status.success(), "{}", out.stderr_text());
    let text = out.stdout_text();
    assert!(text.contains("x-echo-method: PUT"), "{text}");
    // The destination gets the caller's Authorization, never the admin token.
    assert!(text.contains("x-echo-authorization: Bearer upstream-secret"), "{text}");
    assert!(text.ends_with("payload-123"), "{text}");
}

/// The agent's secret comes from a file or the environment, never needing
/// the command line; on the command line it still works, with a warning;
/// two sources, or an empty file, are refused naming the problem.
#[tokio::test(flavor = "multi_thread")]
async fn the_agent_reads_its_secret_from_a_file_or_the_environment() {
    let relay = RelayProcess::start(RelayOptions::default());
    let (id, secret) = relay.create_agent("filed");
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("client-secret");
    std::fs::write(&file, format!("{secret}\n")).unwrap();
    let path = file.to_str().unwrap();

    let from_file = AgentProcess::start(&relay.agents_url, &id, "", &["--client-secret-file", path, "--allow-any"]);
    from_file.wait_connected(Duration::from_secs(10)).await;
    assert!(!from_file.log().contains(&secret), "the secret is not logged");
    drop(from_file);
    let from_env = AgentProcess::start_with_env(
        &relay.agents_url,
        &id,
        "",
        &["--allow-any"],
        &[("BOREALIS_CLIENT_SECRET_FILE", path)],
    );
    from_env.wait_connected(Duration::from_secs(10)).await;
    drop(from_env);
    let on_the_line = AgentProcess::start(&relay.agents_url, &id, "", &["--client-secret", &secret, "--allow-any"]);
    on_the_line.wait_connected(Duration::from_secs(10)).await;
    assert!(on_the_line.log().contains("--client-secret puts the secret on the command line"), "{}", on_the_line.log());
    drop(on_the_line);

    let relay_url = relay.agents_url.as_str();
    let both = ["--relay", relay_url, "--client-id", &id, "--client-secret-file", path, "--allow-any"];
    let (status, stderr) =
        run_agent_to_exit_with_env(&both, &[("BOREALIS_CLIENT_SECRET", &secret)], Duration::from_secs(15));
    assert_eq!(status.code(), Some(2));
    assert!(stderr.contains("give the client secret once"), "{stderr}");
    let empty = dir.path().join("empty");
    std::fs::write(&empty, "\n").unwrap();
    let args =
        ["--relay", relay_url, "--client-id", &id, "--client-secret-file", empty.to_str().unwrap(), "--allow-any"];
    let (status, stderr) = run_agent_to_exit(&args, Duration::from_secs(15));
    assert_eq!(status.code(), Some(2));
    assert!(stderr.contains("is empty"), "{stderr}");
    let (status, stderr) =
        run_agent_to_exit(&["--relay", relay_url, "--client-id", &id, "--allow-any"], Duration::from_secs(15));
    assert_eq!(status.code(), Some(2));
    assert!(stderr.contains("give the client secret from `borealis agents create ID` in a file"), "{stderr}");

    // What users copy never puts it on a command line.
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut documents = vec![root.join("README.md"), root.join("deploy/borealis-agent.service")];
    for dir in ["docs", "deploy/helm/borealis-agent"] {
        for entry in std::fs::read_dir(root.join(dir)).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_some_and(|e| e == "md" || e == "yaml") {
                documents.push(path);
            }
        }
    }
    for path in documents {
        let text = std::fs::read_to_string(&path).unwrap();
        for (n, line) in text.lines().enumerate() {
            assert!(
                !line.contains("--client-secret "),
                "{}:{}: a secret on a command line: {line}",
                path.display(),
                n + 1
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn an_agent_cannot_claim_another_identifier_and_revocation_locks_it_out() {
    let (upstream, _) = servers::upstream().await;
    let relay = RelayProcess::start(RelayOptions::default());
    let (id_a, secret_a) = relay.create_agent("agent-a");
    relay.create_agent("agent-b");

    let (status, stderr) = run_agent_to_exit(
        &[
            "--relay",
            &relay.agents_url,
            "--client-id",
            &id_a,
            "--client-secret",
            &secret_a,
            "--agent-id",
            "agent-b",
            "--allow-any",
        ],
        Duration::from_secs(15),
    );
    assert!(!status.success());
    assert!(stderr.contains("belongs to agent \"agent-a\"") && stderr.contains("\"agent-b\""), "{stderr}");

    let (status, stderr) = run_agent_to_exit(
        &["--relay", &relay.agents_url, "--client-id", &id_a, "--client-secret", "wrong", "--allow-any"],
        Duration::from_secs(15),
    );
    assert!(!status.success());
    assert!(stderr.contains("unknown client or wrong secret"), "{stderr}");

    let mut agent = AgentProcess::start(&relay.agents_url, &id_a, &secret_a, &["--allow", &upstream.to_string()]);
    agent.wait_connected(Duration::from_secs(10)).await;
    let out = relay.cli().args(["agents", "revoke", "agent-a"]).run_async().await;
    assert!(out.status.success(), "{}", out.stderr_text());
    assert!(out.stdout_text().contains("1 live session(s) closed"), "{}", out.stdout_text());
    let status = agent.wait_exit(Duration::from_secs(10)).expect("a revoked agent exits by itself");
    assert!(!status.success());
    assert!(agent.log().contains("revoked"), "{}", agent.log());

    let (status, stderr) = run_agent_to_exit(
        &["--relay", &relay.agents_url, "--client-id", &id_a, "--client-secret", &secret_a, "--allow-any"],
        Duration::from_secs(15),
    );
    assert!(!status.success(), "a revoked credential cannot come back");
    assert!(stderr.contains("revoked"), "{stderr}");
    let out = relay.cli().args(["proxy", "--agent", "agent-a", &format!("http://{upstream}/fast")]).run_async().await;
    assert_eq!(out.status.code(), Some(2), "{}", out.stderr_text());
    assert!(out.stderr_text().contains("not registered"), "{}", out.stderr_text());
}

#[tokio::test(flavor = "multi_thread")]
async fn the_allow_list_refuses_a_destination_outside_it_and_sends_nothing() {
    let (allowed, _) = servers::upstream().await;
    let (forbidden, forbidden_hits) = servers::upstream().await;
    let (relay, agent) = relay_with_agent(&[allowed.to_string()]).await;

    let out = relay.cli().args(["proxy", "--agent", "test-rna", &format!("http://{forbidden}/fast")]).run_async().await;
    assert_eq!(out.status.code(), Some(1));
    let stderr = out.stderr_text();
    assert!(stderr.contains("not allowed") && stderr.contains("403"), "{stderr}");
    assert_eq!(forbidden_hits.hits(), 0, "nothing may reach a refused destination");
    agent.wait_metric("borealis_agent_requests_total{outcome=\"destination-not-allowed\"}", 1.0).await;

    let out = relay.cli().args(["proxy", "--agent", "test-rna", &format!("http://{allowed}/fast")]).run_async().await;
    assert_eq!(out.stdout_text(), "fast");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_pool_shares_requests_and_survives_losing_an_instance() {
    let (upstream, _) = servers::upstream().await;
    let relay = RelayProcess::start(RelayOptions::default());
    let (client_id, secret) = relay.create_agent("test-rna");
    let allow = upstream.to_string();
    let first = AgentProcess::start(&relay.agents_url, &client_id, &secret, &["--allow", &allow, "--instance", "one"]);
    // The default runs on one thread; the second instance runs on two, so both runtimes forward.
    let second = AgentProcess::start(
        &relay.agents_url,
        &client_id,
        &secret,
        &["--allow", &allow, "--instance", "two", "--worker-threads", "2"],
    );
    first.wait_connected(Duration::from_secs(10)).await;
    second.wait_connected(Duration::from_secs(10)).await;

    let client = reqwest::Client::new();
    let url = format!("http://{upstream}/fast");
    for _ in 0..20 {
        let response = proxy_request(&relay, &client, Some("test-rna"), &url).send().await.unwrap();
        assert_eq!(response.text().await.unwrap(), "fast");
    }
    const SERVED: &str = "borealis_agent_requests_total{outcome=\"2xx\"}";
    // An agent counts a request once the relay closed its call, a moment after the reply.
    let (one, two) = eventually("the agents counted all 20", Duration::from_secs(5), || async {
        let counts = (first.metric(SERVED).await, second.metric(SERVED).await);
        (counts.0 + counts.1 == 20.0).then_some(counts)
    })
    .await;
    println!("instance one served {one}, instance two served {two}");
    assert!(one > 0.0 && two > 0.0, "both instances receive requests: {one} and {two}");

    first.kill();
    // A request sent down a standby call in the instant its instance dies
    // fails (it may have started: nothing is sent twice); once the relay has
    // seen the connection close, which takes milliseconds, every request
    // goes to the survivor.
    eventually("the relay saw instance one go", Duration::from_secs(5), || async {
        (relay.instances("test-rna").await.len() == 1).then_some(())
    })
    .await;
    for i in 0..20 {
        let response = proxy_request(&relay, &client, Some("test-rna"), &url).send().await.unwrap();
        assert_eq!(response.status(), 200, "request {i} after losing an instance");
        // Read the body: dropping a response unread cancels the request.
        assert_eq!(response.text().await.unwrap(), "fast");
    }
    eventually("the survivor served the rest", Duration::from_secs(5), || async {
        (second.metric(SERVED).await == two + 20.0).then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn after_a_relay_restart_the_agent_reconnects_and_forwarding_works() {
    let (upstream, _) = servers::upstream().await;
    let (relay, agent) = relay_with_agent(&[upstream.to_string()]).await;
    let relay = relay.kill_and_restart();
    let restarted = Instant::now();
    agent.wait_connected(Duration::from_secs(10)).await;
    println!("agent back {:?} after the relay restarted", restarted.elapsed());
    let out = relay.cli().args(["proxy", "--agent", "test-rna", &format!("http://{upstream}/fast")]).run_async().await;
    assert!(out.status.success(), "{}", out.stderr_text());
    assert_eq!(out.stdout_text(), "fast");
    assert!(agent.metric("borealis_agent_sessions_total").await >= 2.0);
    // Only the new session is listed: the one the killed relay held went with it.
    let instances = relay.instances("test-rna").await;
    assert_eq!(instances.len(), 1, "{instances:#?}");
    assert_eq!(instances[0]["heldHere"], true, "{instances:#?}");
}

/// Two relay replicas share one store. An agent connected to the second is
/// cut off when its credential is revoked through the first.
#[tokio::test(flavor = "multi_thread")]
async fn a_revocation_through_another_replica_ends_the_session() {
    let (upstream, _) = servers::upstream().await;
    let first = RelayProcess::start(RelayOptions::default());
    let database = format!("sqlite://{}", first.data_dir.path().join("borealis.db").display());
    let second = RelayProcess::start(RelayOptions {
        extra_args: vec!["--database-url".into(), database],
        ..RelayOptions::default()
    });
    let (client_id, secret) = first.create_agent("replicated");
    let mut agent = AgentProcess::start(&second.agents_url, &client_id, &secret, &["--allow", &upstream.to_string()]);
    agent.wait_connected(Duration::from_secs(10)).await;
    let out =
        second.cli().args(["proxy", "--agent", "replicated", &format!("http://{upstream}/fast")]).run_async().await;
    assert!(out.status.success(), "{}", out.stderr_text());

    let out = first.cli().args(["agents", "revoke", "replicated"]).run_async().await;
    assert!(out.status.success(), "{}", out.stderr_text());
    assert!(out.stdout_text().contains("0 live session(s) closed"), "{}", out.stdout_text());
    let revoked = Instant::now();
    // The tests' heartbeat interval is 1 s: the second replica notices
    // within about that long.
    let status = agent.wait_exit(Duration::from_secs(10)).expect("the agent is cut off and exits");
    println!("cut off {:?} after the revocation on the other replica", revoked.elapsed());
    assert!(!status.success());
    assert!(agent.log().contains("revoked"), "{}", agent.log());
    assert!(second.log().contains("ended sessions of revoked agent credentials"), "{}", second.log());
}

const BY_STANDBY: &str = "borealis_agent_dispatches_total{way=\"standby\"}";
const BY_OFFER: &str = "borealis_agent_dispatches_total{way=\"offer\"}";

/// An agent keeps calls open in advance; a request goes straight down an
/// idle one, and the agent opens another in its place. A burst larger than
/// them falls back to offers, and each offer makes the agent keep one more
/// call, up to its --standby-calls. An agent that keeps none (as older
/// agents do) gets every request as an offer. (These agents open no lanes,
/// as agents from before lanes do, so small requests take calls too.)
#[tokio::test(flavor = "multi_thread")]
async fn requests_go_down_standby_calls_and_offers_remain_the_fallback() {
    let (upstream, _) = servers::upstream().await;
    let relay = RelayProcess::start(RelayOptions::default());
    let (client_id, secret) = relay.create_agent("test-rna");
    let allow = upstream.to_string();
    let agent = AgentProcess::start(
        &relay.agents_url,
        &client_id,
        &secret,
        &["--allow", &allow, "--standby-calls", "6", "--lanes", "0"],
    );
    agent.wait_connected(Duration::from_secs(10)).await;
    // A session starts with two.
    relay.wait_standby_idle("test-rna", 2).await;
    assert_eq!(relay.instances("test-rna").await[0]["standbyCalls"], 6, "the relay granted what was asked");

    let client = reqwest::Client::new();
    let fast = format!("http://{upstream}/fast");
    for i in 0..10 {
        let response = proxy_request(&relay, &client, Some("test-rna"), &fast).send().await.unwrap();
        assert_eq!(response.text().await.unwrap(), "fast", "request {i}");
    }
    assert_eq!(relay.metric(BY_STANDBY).await, 10.0, "each request found an idle standby call");
    assert_eq!(relay.metric(BY_OFFER).await, 0.0);
    // Each used call was replaced, and none added.
    relay.wait_standby_idle("test-rna", 2).await;

    // Sixty at once: more than the idle calls; the rest are offered.
    let slow = format!("http://{upstream}/slow");
    let burst = (0..60).map(|_| {
        let request = proxy_request(&relay, &client, Some("test-rna"), &slow);
        async move { request.send().await.unwrap().text().await.unwrap() }
    });
    let bodies = futures_util::future::join_all(burst).await;
    assert!(bodies.iter().all(|b| b == "slow"), "{bodies:?}");
    let (standby, offered) = (relay.metric(BY_STANDBY).await - 10.0, relay.metric(BY_OFFER).await);
    println!("burst of 60: {standby} down standby calls, {offered} offered");
    assert_eq!(standby + offered, 60.0);
    assert!(standby >= 2.0, "the two idle standby calls were used: {standby}");
    // One more kept per offer, up to six.
    let grown = 2 + (offered as u64).min(4);
    relay.wait_standby_idle("test-rna", grown).await;
    drop(agent);

    // An agent that keeps no standby calls gets offers only.
    let relay = RelayProcess::start(RelayOptions::default());
    let (client_id, secret) = relay.create_agent("test-rna");
    let agent = AgentProcess::start(
        &relay.agents_url,
        &client_id,
        &secret,
        &["--allow", &allow, "--standby-calls", "0", "--lanes", "0"],
    );
    agent.wait_connected(Duration::from_secs(10)).await;
    for i in 0..5 {
        let response = proxy_request(&relay, &client, Some("test-rna"), &fast).send().await.unwrap();
        assert_eq!(response.text().await.unwrap(), "fast", "request {i}");
    }
    assert_eq!(relay.metric(BY_OFFER).await, 5.0);
    assert_eq!(relay.metric(BY_STANDBY).await, 0.0);
    assert_eq!(relay.instances("test-rna").await[0]["standbyIdle"], 0);
}
