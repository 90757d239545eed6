//! What an attacker on the network, a hostile deployment file or a lost
//! machine must not be able to do to the relay: each test attacks the real
//! relay process the way the finding describes.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use borealis_api::{RunState, WebhookRun};
use borealis_tests::process::OutputText;
use borealis_tests::{AgentProcess, RelayOptions, RelayProcess, TempDir, eventually};
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;

fn host_port(url: &str) -> SocketAddr {
    url.split("://").nth(1).unwrap().parse().unwrap()
}

/// Opens `count` connections to `to` from `from` that never send a byte.
async fn idle_connections(from: [u8; 4], to: SocketAddr, count: usize) -> Vec<TcpStream> {
    let mut streams = Vec::with_capacity(count);
    for _ in 0..count {
        streams.push(borealis_tests::connect_from(from, to).await.unwrap_or_else(|e| panic!("connect {to}: {e}")));
    }
    streams
}

/// Waits until every stream is closed by the far side (EOF or a reset);
/// fails, after [`borealis_tests::PATIENCE`], if one never is.
async fn all_closed(streams: Vec<TcpStream>) {
    let mut waits = tokio::task::JoinSet::new();
    for mut stream in streams {
        waits.spawn(async move {
            let mut byte = [0u8; 1];
            // EOF or a reset: either way the relay closed it.
            let _ = tokio::time::timeout(borealis_tests::PATIENCE, stream.read(&mut byte))
                .await
                .expect("the relay never closed an idle connection");
        });
    }
    while let Some(done) = waits.join_next().await {
        done.unwrap();
    }
}

/// `/healthz` answers 2xx; a client timeout of [`borealis_tests::PATIENCE`]
/// only keeps a test that would hang from hanging.
async fn healthz(url: &str) {
    let client = reqwest::Client::builder().timeout(borealis_tests::PATIENCE).build().unwrap();
    let reply = client.get(format!("{url}/healthz")).send().await.unwrap_or_else(|e| panic!("/healthz: {e}"));
    assert!(reply.status().is_success(), "/healthz: {}", reply.status());
}

/// The relay's count of connections it refused on `listener` at `cap`.
async fn refused(relay: &RelayProcess, listener: &str, cap: &str) -> f64 {
    relay.metric(&format!("borealis_connections_refused_total{{listener=\"{listener}\",cap=\"{cap}\"}}")).await
}

/// 2 000 idle connections to each listener from one address, under a soft
/// and hard limit of 1 024 descriptors: the API keeps answering (the relay
/// never refuses a connection for want of room in the process), an agent
/// connects, and the relay closes every idle connection on its header
/// timeout (its own count says so).
#[tokio::test(flavor = "multi_thread")]
async fn idle_connections_cannot_lock_out_the_api() {
    // The test holds 4 000 sockets itself.
    let _ = rlimit::increase_nofile_limit(16_384);
    let relay = RelayProcess::start(RelayOptions {
        extra_args: vec!["--header-timeout".into(), "3s".into()],
        wrapper: vec!["prlimit".into(), "--nofile=1024:1024".into(), "--".into()],
        ..Default::default()
    });
    let limits = std::fs::read_to_string(format!("/proc/{}/limits", relay.pid())).unwrap();
    let open_files = limits.lines().find(|l| l.starts_with("Max open files")).unwrap().to_owned();
    assert!(open_files.split_whitespace().filter(|w| *w == "1024").count() == 2, "{open_files}");

    // /healthz is asked every 100 ms for the whole attack; each must answer.
    let watching = tokio_util::sync::CancellationToken::new();
    let watcher = tokio::spawn({
        let (url, stop) = (relay.http_url.clone(), watching.clone());
        async move {
            let mut slowest = Duration::ZERO;
            let mut asked = 0;
            while !stop.is_cancelled() {
                let start = Instant::now();
                healthz(&url).await;
                slowest = slowest.max(start.elapsed());
                asked += 1;
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            (asked, slowest)
        }
    });
    let attacker = [127, 0, 0, 2];
    let mut held = idle_connections(attacker, host_port(&relay.http_url), 2000).await;
    held.extend(idle_connections(attacker, host_port(&relay.agents_url), 2000).await);

    // Throughout: the API answers, credentials are issued, an agent connects.
    healthz(&relay.http_url).await;
    let (client_id, secret) = relay.create_agent("under-attack");
    healthz(&relay.http_url).await;
    let agent = AgentProcess::start(&relay.agents_url, &client_id, &secret, &["--allow-any"]);
    agent.wait_connected(Duration::from_secs(10)).await;
    healthz(&relay.http_url).await;
    assert!(refused(&relay, "http", "peer").await > 0.0);

    // Every idle connection is closed by the relay: those over the peer's
    // cap at once, the others on the header timeout, which the relay counts.
    let attack = held.len() as f64;
    all_closed(held).await;
    let at_the_cap = refused(&relay, "http", "peer").await + refused(&relay, "agents", "peer").await;
    let idle_closed = relay.metric("borealis_connections_idle_closed_total").await;
    assert!(idle_closed > 0.0);
    assert!(at_the_cap + idle_closed >= attack, "{at_the_cap} refused + {idle_closed} closed idle of {attack}");
    // No one else was refused: the attacker never filled the process.
    assert_eq!(refused(&relay, "http", "total").await + refused(&relay, "agents", "total").await, 0.0);
    healthz(&relay.http_url).await;
    assert!(agent.metric("borealis_agent_connected").await == 1.0, "the agent's session is not idle");
    watching.cancel();
    let (asked, slowest) = watcher.await.expect("every /healthz answered");
    // The attack lasts at least the 3 s header timeout, and /healthz is
    // asked every 100 ms after its last answer: at least 10 asks show it was
    // asked throughout, however slow the loaded machine made each answer
    // (20 failed a run where answers took 60 ms).
    assert!(asked >= 10, "/healthz was asked {asked} times");
    eprintln!("/healthz asked {asked} times during the attack; slowest answer {slowest:?}");
    assert!(!relay.log().contains("Too many open files"), "the relay ran out of descriptors");
}

/// A client that retries a POST cut off on its way back sends the same
/// `Idempotency-Key`, and gets the same run, not a second one.
#[tokio::test(flavor = "multi_thread")]
async fn a_repeated_post_with_the_same_idempotency_key_returns_the_same_run() {
    let relay = RelayProcess::start(RelayOptions { direct_allow: vec!["127.0.0.0/8".into()], ..Default::default() });
    let (addr, _system) = relay.external_system().await;
    let file = format!(
        "webhooks:\n  - name: w\n    method: POST\n    uriTemplate: http://{addr}/x\n    networkMode: direct\n    disableCallback: true\n"
    );
    let client = reqwest::Client::new();
    let post = |key: &str, name: &str| {
        client
            .post(format!("{}/api/v1/webhook-runs", relay.http_url))
            .bearer_auth(relay.admin_token())
            .header("Idempotency-Key", key)
            .json(&serde_json::json!({ "file": file, "name": name }))
            .send()
    };
    let first = post("retry-1", "w").await.unwrap();
    assert_eq!(first.status(), 201);
    let first: serde_json::Value = first.json().await.unwrap();
    let again = post("retry-1", "w").await.unwrap();
    assert_eq!(again.status(), 201);
    assert_eq!(again.headers()["idempotent-replayed"], "true");
    let again: serde_json::Value = again.json().await.unwrap();
    assert_eq!(first["id"], again["id"]);
    let other = post("retry-2", "w").await.unwrap().json::<serde_json::Value>().await.unwrap();
    assert_ne!(first["id"], other["id"]);
    let reused = client
        .post(format!("{}/api/v1/webhook-runs", relay.http_url))
        .bearer_auth(relay.admin_token())
        .header("Idempotency-Key", "retry-1")
        .json(&serde_json::json!({ "file": file, "name": "w", "context": {"changed": "yes"} }))
        .send()
        .await
        .unwrap();
    assert_eq!(reused.status(), 422, "the same key with another request is refused");

    let listed = relay.cli().args(["--json", "runs", "list"]).run_async().await.stdout_text();
    let listed: serde_json::Value = serde_json::from_str(&listed).unwrap();
    assert_eq!(listed["runs"].as_array().unwrap().len(), 2, "{listed:#}");

    // Held at an approval, so the first is still running when the repeat comes.
    let deployment = "application: idem\ntargets:\n  dev:\n    constraints:\n      beforeDeployment:\n        - pause:\n            untilApproved: true\n";
    let deploy = || {
        client
            .post(format!("{}/api/v1/deployments", relay.http_url))
            .bearer_auth(relay.admin_token())
            .header("Idempotency-Key", "deploy-1")
            .json(&serde_json::json!({ "file": deployment }))
            .send()
    };
    let first = deploy().await.unwrap();
    assert_eq!(first.status(), 201);
    let first: serde_json::Value = first.json().await.unwrap();
    let again = deploy().await.unwrap();
    assert_eq!(again.status(), 201, "not 409 deployment-in-progress");
    assert_eq!(again.json::<serde_json::Value>().await.unwrap()["id"], first["id"]);
}

/// Revoked callback clients are refused; guessing secrets is limited per
/// client address (answered 429, while the right credential still works),
/// logged with the client's address, and counted.
#[tokio::test(flavor = "multi_thread")]
async fn failed_authentication_is_limited_logged_and_counted_and_clients_can_be_revoked() {
    let relay = RelayProcess::start(RelayOptions {
        direct_allow: vec!["127.0.0.0/8".into()],
        extra_args: vec!["--auth-failures-per-minute".into(), "20".into()],
        ..Default::default()
    });
    let (addr, system) = relay.external_system().await;
    let token = system.token().await;
    let out = relay.cli().args(["clients", "revoke", "ci-system"]).run_async().await;
    assert!(out.status.success(), "{}", out.stderr_text());
    let file = format!(
        "webhooks:\n  - name: w\n    method: POST\n    uriTemplate: http://{addr}/x\n    networkMode: direct\n    headers:\n      - key: Location\n        value: '{{{{armory.callbackUri}}}}/callback'\n"
    );
    let dir = TempDir::new("revoke");
    let path = dir.path().join("w.yaml");
    std::fs::write(&path, file).unwrap();
    let out =
        relay.cli().args(["--json", "webhook", "run", "-f", path.to_str().unwrap(), "--name", "w"]).run_async().await;
    let run: serde_json::Value = serde_json::from_str(&out.stdout_text()).unwrap();
    let callback = format!("{}/callback", run["callbackUri"].as_str().unwrap());
    let refused = reqwest::Client::new()
        .post(&callback)
        .bearer_auth(&token)
        .json(&serde_json::json!({"success": true}))
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 401, "a revoked client's token is refused");
    let out = relay.cli().args(["clients", "revoke", "ci-system"]).run_async().await;
    assert!(!out.status.success() && out.stderr_text().contains("no callback client"), "{}", out.stderr_text());

    // 200 wrong secrets in a burst: 401 until the allowance of 20 is used
    // up (the refused callback above took one), then 429.
    let client = reqwest::Client::new();
    let mut statuses = Vec::new();
    for i in 0..200 {
        let reply = client
            .post(format!("{}/oauth/token", relay.http_url))
            .form(&[
                ("grant_type", "client_credentials"),
                ("client_id", "agt_guess"),
                ("client_secret", &format!("guess-{i}")),
            ])
            .send()
            .await
            .unwrap();
        if reply.status() == 429 {
            let wait: u64 = reply.headers()["retry-after"].to_str().unwrap().parse().unwrap();
            assert!((1..=60).contains(&wait), "Retry-After {wait}");
        }
        statuses.push(reply.status().as_u16());
    }
    let unauthorized = statuses.iter().filter(|s| **s == 401).count();
    assert!((19..=21).contains(&unauthorized), "{unauthorized} answered 401 before the limit: {statuses:?}");
    assert!(statuses[25..].iter().all(|s| *s == 429), "{statuses:?}");
    // The admin routes share the address's limit for failures, but the
    // right token is never refused for it.
    let wrong = client.get(format!("{}/api/v1/agents", relay.http_url)).bearer_auth("not-the-admin-token").send().await;
    assert_eq!(wrong.unwrap().status(), 429);
    let admin = client.get(format!("{}/api/v1/agents", relay.http_url)).bearer_auth(relay.admin_token()).send().await;
    assert_eq!(admin.unwrap().status(), 200);

    let log = relay.log();
    let failures: Vec<&str> = log.lines().filter(|l| l.contains("authentication failed")).collect();
    assert!(failures.len() >= 20, "{} failures logged", failures.len());
    assert!(failures.iter().all(|l| l.contains("peer=127.0.0.1")), "{failures:?}");
    assert!(!log.contains("guess-1"), "a presented secret was logged");
    assert_eq!(relay.metric("borealis_auth_failures_total{credential=\"client_secret\"}").await, 200.0);
    assert!(relay.metric("borealis_auth_failures_total{credential=\"callback_token\"}").await >= 1.0);
    assert!(relay.metric("borealis_rate_limited_requests_total").await >= 170.0);
}

/// An agent that stops answering (frozen, as a dead link looks) has its
/// request in flight failed with 502 within three heartbeat intervals of
/// its last beat, not after TCP gives up; and the agent, once it runs again,
/// reconnects on the short delays that follow a lost session (under 2 s) and
/// serves. The times checked are the relay's and the agent's own records.
#[tokio::test(flavor = "multi_thread")]
async fn a_lost_agent_fails_its_requests_with_502_at_once() {
    let relay = RelayProcess::start(RelayOptions::default());
    let (upstream, state) = borealis_tests::servers::upstream().await;
    let (client_id, secret) = relay.create_agent("frozen");
    let agent = AgentProcess::start(&relay.agents_url, &client_id, &secret, &["--allow-any"]);
    agent.wait_connected(Duration::from_secs(10)).await;

    let url = format!("{}/api/v1/proxy?agent=frozen&url=http://{upstream}/hold", relay.http_url);
    let token = relay.admin_token();
    let request = tokio::spawn(async move {
        let reply = reqwest::Client::new().get(url).bearer_auth(token).send().await.unwrap();
        (reply.status().as_u16(), reply.headers().get("borealis-error").cloned())
    });
    eventually("the request reaches the upstream through the agent", Duration::ZERO, || async {
        (state.active() == 1).then_some(())
    })
    .await;
    agent.signal("STOP");
    // Frozen: no beat is sent from now on, so this is its last one.
    let instances = relay.instances("frozen").await;
    let last_beat = borealis_tests::api_time(&instances[0]["lastHeartbeat"]);
    let (status, slug) = request.await.unwrap();
    agent.signal("CONT");
    assert_eq!(status, 502);
    assert_eq!(slug.unwrap(), "agent-lost");
    let lost = relay.wait_log_line(&["agent disconnected", "heartbeats stopped"]).await;
    let failed = relay.wait_log_line(&["forwarded through an agent", "agent-lost"]).await;
    // Heartbeats are 1 s apart here; the session is lost 2¾ s after its
    // last beat, and its request fails with it.
    let failed_at = borealis_tests::log_time(&failed);
    let after = borealis_tests::between(last_beat, failed_at);
    assert!(after <= Duration::from_millis(3300), "502 came {after:?} after the agent's last beat: {failed}");
    // The request fails on the session's `lost` token, which is cancelled
    // just before the watchdog logs the disconnect: the two lines may come in
    // either order, so the cause is read off the failure itself.
    assert!(
        failed.contains("stopped answering heartbeats"),
        "the request failed because the session was lost: {lost}\n{failed}"
    );
    state.release();

    eventually("the agent serves again", Duration::from_secs(10), || async {
        let out =
            relay.cli().args(["proxy", "--agent", "frozen", &format!("http://{upstream}/fast")]).run_async().await;
        (out.status.success() && out.stdout_text() == "fast").then_some(())
    })
    .await;
    // What it waited before each attempt, as the agent logged it: the cap
    // after a lost session, so it is back within seconds of waking.
    let delays = agent.log_lines(&["reconnecting"]);
    assert!(!delays.is_empty(), "{}", agent.log());
    for line in &delays {
        let waited: u64 = borealis_tests::process::field(line, "retry_in_ms").parse().unwrap();
        assert!(waited < 2000, "a reconnect delay of {waited} ms after a lost session: {line}");
    }
}

/// A relay restart cuts off a call: the retry carries the same
/// `webhook-id`, and the run's history shows the attempt that was cut off.
#[tokio::test(flavor = "multi_thread")]
async fn a_call_cut_off_by_a_restart_is_retried_with_the_same_webhook_id() {
    use std::sync::{Arc, Mutex};
    let calls: Arc<Mutex<Vec<String>>> = Arc::default();
    let seen = calls.clone();
    let router = axum::Router::new().fallback(move |headers: axum::http::HeaderMap| {
        let seen = seen.clone();
        async move {
            let id = headers.get("webhook-id").map(|v| v.to_str().unwrap().to_owned()).unwrap_or_default();
            let first = {
                let mut seen = seen.lock().unwrap();
                seen.push(id);
                seen.len() == 1
            };
            if first {
                // Holds the first call until the relay is killed.
                tokio::time::sleep(Duration::from_secs(60)).await;
            }
            axum::http::StatusCode::OK
        }
    });
    let addr = borealis_tests::servers::serve(router).await;
    let relay = RelayProcess::start(RelayOptions {
        direct_allow: vec!["127.0.0.0/8".into()],
        extra_args: vec!["--retry-base-delay".into(), "50ms".into()],
        ..Default::default()
    });
    let dir = TempDir::new("cutoff");
    let path = dir.path().join("w.yaml");
    std::fs::write(
        &path,
        format!("webhooks:\n  - name: w\n    method: POST\n    uriTemplate: http://{addr}/x\n    networkMode: direct\n    disableCallback: true\n    retryCount: 2\n"),
    )
    .unwrap();
    let out =
        relay.cli().args(["--json", "webhook", "run", "-f", path.to_str().unwrap(), "--name", "w"]).run_async().await;
    let run: serde_json::Value = serde_json::from_str(&out.stdout_text()).unwrap();
    let id = run["id"].as_str().unwrap().to_owned();
    eventually("the first call arrives", Duration::from_secs(10), || async {
        (calls.lock().unwrap().len() == 1).then_some(())
    })
    .await;
    let relay = relay.kill_and_restart();
    let shown = relay.wait_run(&id).await;
    assert_eq!(shown.state, RunState::Succeeded, "{shown:#?}");
    let calls = calls.lock().unwrap().clone();
    assert_eq!(calls, vec![id.clone(), id.clone()], "both calls carry the run's webhook-id");
    let log = shown.attempt_log.as_deref().unwrap();
    assert_eq!(log.len(), 2, "{shown:#?}");
    assert!(log[0].error.as_deref().unwrap().contains("the destination may have received it"), "{shown:#?}");
    assert_eq!(log[1].status, Some(200));
    let text = relay.cli().args(["runs", "show", &id]).run_async().await.stdout_text();
    assert!(text.contains("cut off by a relay restart"), "{text}");
}

/// Newlines and escape sequences an agent or an external system sends are
/// escaped in the relay's log and in the CLI's tables.
#[tokio::test(flavor = "multi_thread")]
async fn control_characters_from_peers_are_escaped_in_logs_and_tables() {
    let relay = RelayProcess::start(RelayOptions { direct_allow: vec!["127.0.0.0/8".into()], ..Default::default() });
    let (client_id, secret) = relay.create_agent("evil");
    let instance = "pod\nINFO forged line\x1b[31mred";
    let agent = AgentProcess::start(&relay.agents_url, &client_id, &secret, &["--allow-any", "--instance", instance]);
    agent.wait_connected(Duration::from_secs(10)).await;
    let log = relay.log();
    let connected = log.lines().find(|l| l.contains("agent connected")).unwrap();
    assert!(connected.contains(r#"instance="pod\nINFO forged line\u{1b}[31mred""#), "{connected}");
    assert!(!log.lines().any(|l| l.starts_with("INFO forged line")), "a forged line reached the log");
    assert!(!log.contains('\x1b'), "a raw escape reached the log");
    let listed = relay.cli().args(["agents", "list"]).run_async().await.stdout_text();
    assert!(!listed.contains('\x1b') && listed.lines().count() == 2, "{listed}");
    assert!(listed.contains(r"pod\nINFO forged line\u{1b}[31mred"), "{listed}");

    let (addr, system) = relay.external_system().await;
    let dir = TempDir::new("escape");
    let path = dir.path().join("w.yaml");
    std::fs::write(
        &path,
        format!("webhooks:\n  - name: w\n    method: POST\n    uriTemplate: http://{addr}/x\n    networkMode: direct\n    headers:\n      - key: Location\n        value: '{{{{armory.callbackUri}}}}/callback'\n"),
    )
    .unwrap();
    let out =
        relay.cli().args(["--json", "webhook", "run", "-f", path.to_str().unwrap(), "--name", "w"]).run_async().await;
    let run: serde_json::Value = serde_json::from_str(&out.stdout_text()).unwrap();
    let id = run["id"].as_str().unwrap().to_owned();
    eventually("the webhook is called", Duration::from_secs(10), || async {
        (!system.received().is_empty()).then_some(())
    })
    .await;
    let message = "**done**\n\x1b]0;owned\x07\x1b[2J line two";
    let callback = format!("{}/callback", run["callbackUri"].as_str().unwrap());
    system.call_back(&callback, serde_json::json!({"success": true, "mdMessage": message})).await;
    let shown = relay.cli().args(["runs", "show", &id]).run_async().await.stdout_text();
    assert!(!shown.contains('\x1b') && !shown.contains('\x07'), "{shown:?}");
    assert!(shown.contains(r"\u{1b}]0;owned\u{7}\u{1b}[2J line two"), "{shown}");
    assert!(shown.contains("**done**\n"), "a Markdown message keeps its lines: {shown}");
    let listed = relay.cli().args(["runs", "list"]).run_async().await.stdout_text();
    assert!(!listed.contains('\x1b'), "{listed:?}");
}

/// Two agents that lose the relay at the same moment wait different,
/// random times before reconnecting, and never longer than the cap.
#[tokio::test(flavor = "multi_thread")]
async fn agents_draw_their_own_reconnect_delays_within_the_cap() {
    let relay = RelayProcess::start(RelayOptions::default());
    let (client_id, secret) = relay.create_agent("pair");
    let args = ["--allow-any", "--max-backoff", "4s"];
    let first = AgentProcess::start(&relay.agents_url, &client_id, &secret, &args);
    let second = AgentProcess::start(&relay.agents_url, &client_id, &secret, &args);
    first.wait_connected(Duration::from_secs(10)).await;
    second.wait_connected(Duration::from_secs(10)).await;
    let relay_pid = relay.pid();
    let _ = std::process::Command::new("kill").args(["-KILL", &relay_pid.to_string()]).status();
    let delays = |agent: &AgentProcess| -> Vec<u64> {
        agent
            .log()
            .lines()
            .filter(|l| l.contains("reconnecting"))
            .map(|l| {
                let at = l.find("retry_in_ms=").expect("retry_in_ms field") + "retry_in_ms=".len();
                l[at..].split(|c: char| !c.is_ascii_digit()).next().unwrap().parse().unwrap()
            })
            .collect()
    };
    eventually("both agents retried four times", Duration::from_secs(20), || async {
        (delays(&first).len() >= 4 && delays(&second).len() >= 4).then_some(())
    })
    .await;
    let (a, b) = (delays(&first), delays(&second));
    assert_ne!(a[..4], b[..4], "the two agents waited the same times: {a:?}");
    // Within five minutes of losing a session the cap is 2 s.
    assert!(a.iter().chain(&b).all(|d| *d < 2000), "{a:?} {b:?}");
}

async fn post_run(relay: &RelayProcess, file: &str, context: serde_json::Value) -> (u16, serde_json::Value) {
    let reply = reqwest::Client::new()
        .post(format!("{}/api/v1/webhook-runs", relay.http_url))
        .bearer_auth(relay.admin_token())
        .json(&serde_json::json!({ "file": file, "name": "w", "context": context }))
        .send()
        .await
        .unwrap();
    (reply.status().as_u16(), reply.json().await.unwrap())
}

fn body_file(body: &str) -> String {
    format!(
        "webhooks:\n  - name: w\n    method: POST\n    uriTemplate: http://127.0.0.1:9/x\n    networkMode: direct\n    bodyTemplate:\n      inline: '{body}'\n"
    )
}

/// A few bytes of template must not make the relay render hundreds of
/// megabytes, nor dump every secret to whatever URL the file names.
#[tokio::test(flavor = "multi_thread")]
async fn template_bombs_and_whole_map_dumps_are_refused() {
    let relay = RelayProcess::start(RelayOptions::default());
    let out = relay.cli().args(["secrets", "set", "token"]).stdin_text("s3cr3t-value").run_async().await;
    assert!(out.status.success(), "{}", out.stderr_text());

    // Four at once, as the attack did.
    let bomb = body_file("{{ range(10000)|join(range(10000)|join) }}");
    let attempts = (0..4).map(|_| post_run(&relay, &bomb, serde_json::json!({})));
    for (status, problem) in futures_util::future::join_all(attempts).await {
        assert_eq!(status, 400, "{problem:#}");
        let detail = problem["detail"].as_str().unwrap();
        assert!(detail.contains("webhooks[0].bodyTemplate.inline"), "{detail}");
    }
    healthz(&relay.http_url).await;

    for (body, says) in [
        (r#"{{ "x" * 100000000 }}"#, "operator"),
        ("{{ secrets }}", "every secret"),
        ("{{ secrets|items }}", "every secret"),
        ("{{ armory }}", "armory"),
        ("{{ debug() }}", "debug() is unavailable"),
        ("{{ context.big|replace(\"a\", context.big)|replace(\"a\", context.big) }}", "over the 64 KiB limit"),
    ] {
        let (status, problem) = post_run(&relay, &body_file(body), serde_json::json!({"big": "a".repeat(4000)})).await;
        assert_eq!(status, 400, "{body}: {problem:#}");
        let detail = problem["detail"].as_str().unwrap();
        assert!(detail.contains("webhooks[0].bodyTemplate.inline") && detail.contains(says), "{body}: {detail}");
        assert!(!detail.contains("s3cr3t-value"), "{detail}");
    }
    // The limit is the relay's setting; a placeholder within it renders.
    let (status, created) =
        post_run(&relay, &body_file("{{ context.big|upper }}"), serde_json::json!({"big": "a".repeat(4000)})).await;
    assert_eq!(status, 201, "{created:#}");
    healthz(&relay.http_url).await;
}

/// An endpoint that fails and echoes what it got, in its own encodings: the
/// secret in it is masked in the API, the CLI, the log and the database.
#[tokio::test(flavor = "multi_thread")]
async fn a_secret_echoed_back_is_masked_in_every_representation() {
    use base64::Engine;
    let secret = "p+ss/w=rd \"q\\ üx€";
    let router =
        axum::Router::new().fallback(|uri: axum::http::Uri, headers: axum::http::HeaderMap, body: String| async move {
            let query = uri.query().unwrap_or_default().to_owned();
            let token: String = url::form_urlencoded::parse(query.as_bytes())
                .find(|(k, _)| k == "token")
                .map(|(_, v)| v.into_owned())
                .unwrap_or_default();
            let header = |name: &str| {
                headers.get(name).map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned()).unwrap_or_default()
            };
            let echo = format!(
                "denied. query: {query} | form: {} | json: {} | auth: {} | upper: {} | lower: {} | body: {body}",
                url::form_urlencoded::byte_serialize(token.as_bytes()).collect::<String>(),
                serde_json::to_string(&token).unwrap(),
                header("authorization"),
                header("x-upper"),
                token.to_lowercase(),
            );
            (axum::http::StatusCode::FORBIDDEN, echo)
        });
    let addr = borealis_tests::servers::serve(router).await;
    let relay = RelayProcess::start(RelayOptions { direct_allow: vec!["127.0.0.0/8".into()], ..Default::default() });
    let out = relay.cli().args(["secrets", "set", "pw"]).stdin_text(secret).run_async().await;
    assert!(out.status.success(), "{}", out.stderr_text());
    let file = format!(
        r#"webhooks:
  - name: w
    method: POST
    uriTemplate: http://{addr}/login?token={{{{secrets.pw}}}}
    networkMode: direct
    headers:
      - key: Authorization
        value: 'Basic {{{{ ("user:" ~ secrets.pw) | b64encode }}}}'
      - key: X-Upper
        value: '{{{{ secrets.pw | upper }}}}'
      - key: Content-Type
        value: application/json
    bodyTemplate:
      inline: '{{"password": "{{{{secrets.pw}}}}"}}'
"#
    );
    let (status, created) = post_run(&relay, &file, serde_json::json!({})).await;
    assert_eq!(status, 201, "{created:#}");
    let id = created["id"].as_str().unwrap().to_owned();
    let (run, shown) = eventually("the run fails", Duration::from_secs(10), || async {
        let out = relay.cli().args(["--json", "runs", "show", &id]).run_async().await.stdout_text();
        let run: WebhookRun = serde_json::from_str(&out).ok()?;
        (run.state == RunState::Failed).then_some((run, out))
    })
    .await;
    let reply = run.attempt_log.as_deref().unwrap()[0].reply.as_deref().unwrap();
    assert!(reply.starts_with("denied. query: token=********"), "the echo was stored, masked: {reply}");
    assert_eq!(reply.matches("********").count(), 7, "{reply}");

    let json_escaped = serde_json::to_string(secret).unwrap();
    let representations = [
        secret.to_owned(),
        url::form_urlencoded::byte_serialize(secret.as_bytes()).collect::<String>(),
        utf8_percent_encode(secret),
        json_escaped[1..json_escaped.len() - 1].to_owned(),
        base64::engine::general_purpose::STANDARD.encode(format!("user:{secret}")),
        secret.to_uppercase(),
        secret.to_lowercase(),
    ];
    let api = reqwest::Client::new()
        .get(format!("{}/api/v1/webhook-runs/{id}", relay.http_url))
        .bearer_auth(relay.admin_token())
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let table = relay.cli().args(["runs", "show", &id]).run_async().await.stdout_text();
    let mut stored = Vec::new();
    for entry in std::fs::read_dir(relay.data_dir.path()).unwrap() {
        let path = entry.unwrap().path();
        if path.file_name().unwrap().to_string_lossy().starts_with("borealis.db") {
            stored.extend(std::fs::read(&path).unwrap());
        }
    }
    let stored = String::from_utf8_lossy(&stored).into_owned();
    for (place, text) in
        [("API", &api), ("CLI --json", &shown), ("CLI", &table), ("log", &relay.log()), ("database", &stored)]
    {
        for form in &representations {
            assert!(!text.contains(form.as_str()), "{place} shows the secret as {form:?}");
        }
    }
}

/// Every byte outside the unreserved set as %XX, as a query value carries it.
fn utf8_percent_encode(text: &str) -> String {
    text.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

/// With `--log-format json`, every line either side writes is one JSON
/// object with typed fields (a status is a number, an absent error is
/// absent, an agent's words are plain strings), and a forwarded request is
/// found by its id in both logs.
#[tokio::test(flavor = "multi_thread")]
async fn json_logs_parse_and_carry_the_request_id_on_both_sides() {
    let relay = RelayProcess::start(RelayOptions {
        extra_args: vec!["--log-format".into(), "json".into()],
        direct_allow: vec!["127.0.0.0/8".into()],
        ..Default::default()
    });
    let (upstream, _) = borealis_tests::servers::upstream().await;
    let (client_id, secret) = relay.create_agent("logged");
    let agent = AgentProcess::start_with_env(
        &relay.agents_url,
        &client_id,
        &secret,
        &["--allow-any"],
        &[("BOREALIS_LOG_FORMAT", "json")],
    );
    agent.wait_connected(Duration::from_secs(10)).await;
    let out = relay.cli().args(["proxy", "--agent", "logged", &format!("http://{upstream}/fast")]).run_async().await;
    assert!(out.status.success(), "{}", out.stderr_text());

    let records = |log: String| -> Vec<serde_json::Value> {
        log.lines()
            .map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line:?}")))
            .collect()
    };
    let relay_records = records(relay.log());
    let forwarded = relay_records.iter().find(|r| r["message"] == "forwarded through an agent").expect("relay line");
    assert_eq!(forwarded["status"], 200);
    let request = forwarded["request"].as_str().unwrap().to_owned();
    let agent_records = eventually("the agent logs the request", Duration::from_secs(5), || {
        let records = records(agent.log());
        let found = records.iter().any(|r| r["message"] == "request done" && r["request"] == request.as_str());
        async move { found.then_some(records) }
    })
    .await;
    assert!(agent_records.iter().all(|r| r["level"].is_string() && r["timestamp"].is_string()));

    let connected = relay_records.iter().find(|r| r["message"] == "agent connected").expect("a connect line");
    let instance = connected["instance"].as_str().expect("the instance is a string");
    assert!(!instance.is_empty() && !instance.starts_with('"'), "{connected}");
    assert!(connected["version"].as_str().is_some_and(|v| !v.starts_with('"')), "{connected}");

    // A webhook attempt: its status a number, no error field when none.
    let (endpoint, _) = borealis_tests::servers::recorder(std::sync::Arc::new(|_, _| 202)).await;
    let dir = TempDir::new("json-logs");
    let file = dir.path().join("w.yaml");
    std::fs::write(
        &file,
        format!("webhooks:\n  - {{name: w, method: POST, uriTemplate: 'http://{endpoint}/w', networkMode: direct}}\n"),
    )
    .unwrap();
    let out = relay.cli().args(["webhook", "run", "-f", file.to_str().unwrap(), "--name", "w"]).run_async().await;
    assert!(out.status.success(), "{}", out.stderr_text());
    let attempt = eventually("the relay logs the attempt", Duration::from_secs(10), || {
        let found = records(relay.log()).into_iter().find(|r| r["message"] == "webhook attempt");
        async move { found }
    })
    .await;
    assert_eq!(attempt["status"], 202, "{attempt}");
    assert!(attempt.get("error").is_none(), "no error, no field: {attempt}");
    assert!(attempt["latency_ms"].is_u64(), "{attempt}");
}

/// The data dir holds the admin token, the key and the database: one that
/// others may read is narrowed to 0700 at start, with a warning.
#[tokio::test(flavor = "multi_thread")]
async fn a_data_dir_readable_by_others_is_narrowed_at_start() {
    use std::os::unix::fs::PermissionsExt;
    let relay = RelayProcess::start(RelayOptions::default());
    std::fs::set_permissions(relay.data_dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let relay = relay.kill_and_restart();
    let mode = std::fs::metadata(relay.data_dir.path()).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o700, "{mode:o}");
    assert!(relay.log().contains("its mode is now 0700"), "{}", relay.log());
}

/// A run with no retries whose one call a restart cut off waits for its
/// callback: the destination most likely got the call and answers, and that
/// answer decides the run rather than meeting a 409.
#[tokio::test(flavor = "multi_thread")]
async fn a_cut_off_call_with_no_retries_left_waits_for_its_callback() {
    use std::sync::{Arc, Mutex};
    let callbacks: Arc<Mutex<Vec<String>>> = Arc::default();
    let seen = callbacks.clone();
    let router = axum::Router::new().fallback(move |headers: axum::http::HeaderMap| {
        let seen = seen.clone();
        async move {
            let location = headers.get("location").map(|v| v.to_str().unwrap().to_owned()).unwrap_or_default();
            seen.lock().unwrap().push(location);
            // Never answers: the relay is killed while it waits.
            tokio::time::sleep(Duration::from_secs(60)).await;
            axum::http::StatusCode::OK
        }
    });
    let addr = borealis_tests::servers::serve(router).await;
    let relay = RelayProcess::start(RelayOptions { direct_allow: vec!["127.0.0.0/8".into()], ..Default::default() });
    let (_, system) = relay.external_system().await;
    let file = format!(
        "webhooks:\n  - name: w\n    method: POST\n    uriTemplate: http://{addr}/x\n    networkMode: direct\n    headers:\n      - key: Location\n        value: '{{{{armory.callbackUri}}}}/callback'\n"
    );
    let (status, created) = post_run(&relay, &file, serde_json::json!({})).await;
    assert_eq!(status, 201, "{created:#}");
    let id = created["id"].as_str().unwrap().to_owned();
    let callback = eventually("the call arrives", Duration::from_secs(10), || async {
        callbacks.lock().unwrap().first().cloned()
    })
    .await;
    let relay = relay.kill_and_restart();
    let shown = eventually("the run waits for its callback", Duration::from_secs(10), || async {
        let out = relay.cli().args(["--json", "runs", "show", &id]).run_async().await.stdout_text();
        let run: WebhookRun = serde_json::from_str(&out).ok()?;
        (run.state == RunState::AwaitingCallback).then_some(run)
    })
    .await;
    assert!(shown.reason.as_deref().unwrap().contains("its callback decides"), "{shown:#?}");
    let error = shown.attempt_log.as_deref().unwrap()[0].error.as_deref().unwrap();
    assert!(error.contains("may have received it"), "{shown:#?}");
    let reply = system.call_back(&callback, serde_json::json!({"success": true, "mdMessage": "done"})).await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    let out = relay.cli().args(["--json", "runs", "show", &id]).run_async().await.stdout_text();
    let run: WebhookRun = serde_json::from_str(&out).unwrap();
    assert_eq!(run.state, RunState::Succeeded, "{run:#?}");
}
