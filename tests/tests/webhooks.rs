//! Webhook runs end to end: a real relay (and agent), the CLI, and an
//! external system that calls back as seed 003 describes.

use std::time::Duration;

use borealis_api::RunState;
use borealis_tests::process::OutputText;
use borealis_tests::{AgentProcess, RelayOptions, RelayProcess, TempDir, api_time_of};

/// A relay that may call loopback directly, with fast retries.
fn relay(extra: &[&str]) -> RelayProcess {
    let mut extra_args = vec!["--retry-base-delay".to_owned(), "50ms".to_owned()];
    extra_args.extend(extra.iter().map(|s| s.to_string()));
    RelayProcess::start(RelayOptions { direct_allow: vec!["127.0.0.0/8".into()], extra_args, ..Default::default() })
}

fn write_file(dir: &TempDir, name: &str, text: &str) -> String {
    let path = dir.path().join(name);
    std::fs::write(&path, text).unwrap();
    path.display().to_string()
}

fn direct_file(url: &str, extra: &str) -> String {
    format!(
        "application: shop
targets:
  staging:
    account: staging-cluster
    namespace: shop-staging
webhooks:
  - name: tests
    method: POST
    uriTemplate: {url}
    networkMode: direct
    headers:
      - key: Content-Type
        value: application/json
    bodyTemplate:
      inline: >-
        {{\"callbackUri\": \"{{{{armory.callbackUri}}}}/callback\", \"env\": \"{{{{armory.environmentName}}}}\"}}
{extra}"
    )
}

fn run_id(relay: &RelayProcess) -> String {
    let out = relay.cli().args(["--json", "runs", "list"]).run();
    let value: serde_json::Value = serde_json::from_str(&out.stdout_text()).unwrap();
    value["runs"][0]["id"].as_str().unwrap().to_owned()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_direct_webhook_succeeds_or_fails_by_its_callback() {
    let relay = relay(&[]);
    let (addr, system) = relay.external_system().await;
    let dir = TempDir::new("webhooks");

    let pass = write_file(&dir, "pass.yaml", &direct_file(&format!("http://{addr}/pass"), ""));
    let out = relay
        .cli()
        .args(["webhook", "run", "-f", &pass, "--name", "tests", "--environment", "staging", "--wait"])
        .run_async()
        .await;
    assert_eq!(out.status.code(), Some(0), "{}", out.stderr_text());
    assert!(
        out.stdout_text().contains("succeeded") && out.stdout_text().contains("All **42** tests passed"),
        "{}",
        out.stdout_text()
    );
    let shown = relay.cli().args(["runs", "show", &run_id(&relay)]).run_async().await.stdout_text();
    assert!(shown.contains("All **42** tests passed"), "{shown}");
    assert!(shown.contains("202"), "the attempt's status is shown: {shown}");

    let fail = write_file(&dir, "fail.yaml", &direct_file(&format!("http://{addr}/fail"), ""));
    let out = relay
        .cli()
        .args(["webhook", "run", "-f", &fail, "--name", "tests", "--environment", "staging", "--wait"])
        .run_async()
        .await;
    assert_eq!(out.status.code(), Some(1), "{}", out.stderr_text());
    assert!(out.stdout_text().contains("**3** tests failed"), "{}", out.stdout_text());
    let shown = relay.cli().args(["runs", "show", &run_id(&relay)]).run_async().await.stdout_text();
    assert!(shown.contains("state: failed") && shown.contains("**3** tests failed"), "{shown}");

    let received = system.received();
    assert_eq!(received.len(), 2);
    let body: serde_json::Value = serde_json::from_str(&received[0].body).unwrap();
    assert_eq!(body["env"], "staging");
    assert!(body["callbackUri"].as_str().unwrap().starts_with(&format!("{}/callbacks/", relay.http_url)));
    assert!(system.callbacks().iter().all(|c| c.status == 200), "{:?}", system.callbacks());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_webhook_through_an_agent_reaches_what_direct_mode_cannot() {
    // No --direct-allow: the relay itself may not call loopback.
    let relay = RelayProcess::start(RelayOptions::default());
    let (addr, system) = relay.external_system().await;
    let (client_id, secret) = relay.create_agent("test-rna");
    let agent = AgentProcess::start(&relay.agents_url, &client_id, &secret, &["--allow", &addr.to_string()]);
    agent.wait_connected(Duration::from_secs(10)).await;
    let dir = TempDir::new("webhooks-agent");
    let file = format!(
        "webhooks:
  - name: private-tests
    method: POST
    uriTemplate: http://{addr}/pass
    networkMode: remoteNetworkAgent
    agentIdentifier: test-rna
    headers:
      - key: Location
        value: {{{{armory.callbackUri}}}}/callback
"
    );
    let path = write_file(&dir, "agent.yaml", &file);
    let out = relay.cli().args(["webhook", "run", "-f", &path, "--name", "private-tests", "--wait"]).run_async().await;
    assert_eq!(out.status.code(), Some(0), "{}\n{}", out.stdout_text(), out.stderr_text());
    agent.wait_metric("borealis_agent_requests_total{outcome=\"2xx\"}", 1.0).await;

    let direct = path.replace("agent.yaml", "direct.yaml");
    // A refusal is the request's own fault: retrying cannot help, so retryCount does not apply.
    std::fs::write(&direct, file.replace("networkMode: remoteNetworkAgent", "networkMode: direct\n    retryCount: 3"))
        .unwrap();
    let out =
        relay.cli().args(["webhook", "run", "-f", &direct, "--name", "private-tests", "--wait"]).run_async().await;
    assert_eq!(out.status.code(), Some(1));
    assert!(out.stdout_text().contains("not allowed"), "{}", out.stdout_text());
    assert_eq!(system.received().len(), 1, "direct mode sent nothing");
    let run: serde_json::Value = serde_json::from_str(
        &relay.cli().args(["--json", "runs", "show", &run_id(&relay)]).run_async().await.stdout_text(),
    )
    .unwrap();
    assert_eq!(run["attempts"], 1, "a refused destination is tried once: {run}");
}

#[tokio::test(flavor = "multi_thread")]
async fn the_seed_examples_render_exactly_the_headers_and_body_they_describe() {
    let relay = relay(&[]);
    let (addr, system) = relay.external_system().await;
    let (client_id, secret) = relay.create_agent("test-rna");
    let agent = AgentProcess::start(&relay.agents_url, &client_id, &secret, &["--allow", &addr.to_string()]);
    agent.wait_connected(Duration::from_secs(10)).await;
    for (name, value) in [("github_token", "ghp-example-token"), ("test_token", "rna-example-token")] {
        let out = relay.cli().args(["secrets", "set", name]).stdin_text(value).run_async().await;
        assert!(out.status.success(), "{}", out.stderr_text());
    }
    let dir = TempDir::new("seeds");
    // The URLs are the only change.
    let github = include_str!("../fixtures/seed003-github-webhook.yaml").replace(
        "https://api.github.com/repos/aimeeu/borealis-demo/dispatches",
        &format!("http://{addr}/pass/repos/aimeeu/borealis-demo/dispatches"),
    );
    let agent_file = include_str!("../fixtures/seed003-agent-webhook.yaml")
        .replace("https://integrations.armory.io/tests/", &format!("http://{addr}/pass/tests/"));
    let github = write_file(&dir, "github.yaml", &github);
    let agent_file = write_file(&dir, "agent.yaml", &agent_file);

    let out = relay
        .cli()
        .args(["webhook", "run", "-f", &github, "--name", "myWebhook", "--context", "environment=staging", "--wait"])
        .run_async()
        .await;
    assert_eq!(out.status.code(), Some(0), "{}\n{}", out.stdout_text(), out.stderr_text());
    let out = relay
        .cli()
        .args([
            "webhook",
            "run",
            "-f",
            &agent_file,
            "--name",
            "integration-tests",
            "--context",
            "environment=staging",
            "--wait",
        ])
        .run_async()
        .await;
    assert_eq!(out.status.code(), Some(0), "{}\n{}", out.stdout_text(), out.stderr_text());

    let received = system.received();
    assert_eq!(received.len(), 2);
    let first = &received[0];
    let callback = first.callback_uri.clone().unwrap();
    assert!(
        callback.starts_with(&format!("{}/callbacks/", relay.http_url)) && callback.ends_with("/callback"),
        "{callback}"
    );
    assert_eq!(first.method, "POST");
    assert_eq!(first.uri, "/pass/repos/aimeeu/borealis-demo/dispatches");
    assert_eq!(first.headers["authorization"], "token ghp-example-token");
    assert_eq!(first.headers["content-type"], "application/json");
    // The folded block as YAML reads it, placeholders filled in.
    let expected = format!(
        "{{ \"event_type\": \"webhookCallback\", \"client_payload\": {{\n    \"callbackUri\": \"{callback}\"\n    \"environment\": \"staging\"\n    }}\n}}"
    );
    assert_eq!(first.body, expected);

    let second = &received[1];
    assert_eq!(second.uri, "/pass/tests/");
    assert_eq!(second.headers["authorization"], "Bearer rna-example-token");
    assert!(second.headers["location"].to_str().unwrap().ends_with("/callback"));
    assert_eq!(second.headers["content-type"], "application/json");
    assert_eq!(second.headers["environment"], "staging");
    assert_eq!(second.body, "", "the second example has no body");
    agent.wait_metric("borealis_agent_requests_total{outcome=\"2xx\"}", 1.0).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn retries_outlast_a_flaky_endpoint_and_a_dead_one_fails_with_the_connection_error() {
    let relay = relay(&[]);
    let (addr, system) = relay.external_system().await;
    let dir = TempDir::new("retries");
    let flaky = write_file(&dir, "flaky.yaml", &direct_file(&format!("http://{addr}/flaky/2"), "    retryCount: 3\n"));
    let out = relay
        .cli()
        .args(["webhook", "run", "-f", &flaky, "--name", "tests", "--environment", "staging", "--wait"])
        .run_async()
        .await;
    assert_eq!(out.status.code(), Some(0), "{}\n{}", out.stdout_text(), out.stderr_text());
    assert_eq!(system.received().len(), 3, "two 503s, then a 202");
    let shown = relay.cli().args(["--json", "runs", "show", &run_id(&relay)]).run_async().await.stdout_text();
    let run: serde_json::Value = serde_json::from_str(&shown).unwrap();
    let statuses: Vec<u64> =
        run["attemptLog"].as_array().unwrap().iter().map(|a| a["status"].as_u64().unwrap()).collect();
    assert_eq!(statuses, [503, 503, 202]);

    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let dead = closed.local_addr().unwrap();
    drop(closed);
    let dead = write_file(&dir, "dead.yaml", &direct_file(&format!("http://{dead}/pass"), "    retryCount: 0\n"));
    let out = relay
        .cli()
        .args(["webhook", "run", "-f", &dead, "--name", "tests", "--environment", "staging", "--wait"])
        .run_async()
        .await;
    assert_eq!(out.status.code(), Some(1));
    assert!(
        out.stdout_text().contains("could not connect") && out.stdout_text().contains("Connection refused"),
        "{}",
        out.stdout_text()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn an_unanswered_webhook_times_out_on_a_short_deadline() {
    let relay = relay(&["--callback-timeout", "1s"]);
    let (addr, _system) = relay.external_system().await;
    let dir = TempDir::new("timeout");
    let silent = write_file(&dir, "silent.yaml", &direct_file(&format!("http://{addr}/silent"), ""));
    let out = relay
        .cli()
        .args(["webhook", "run", "-f", &silent, "--name", "tests", "--environment", "staging", "--wait"])
        .run_async()
        .await;
    assert_eq!(out.status.code(), Some(1), "{}", out.stderr_text());
    assert!(
        out.stdout_text().contains("timed_out") && out.stdout_text().contains("no callback within 1s"),
        "{}",
        out.stdout_text()
    );
    // The run's own record: it ended on its deadline, a second after the call.
    let runs: serde_json::Value =
        serde_json::from_str(&relay.cli().args(["--json", "runs", "list"]).run_async().await.stdout_text()).unwrap();
    let id = runs["runs"][0]["id"].as_str().unwrap();
    let run = relay.wait_run(id).await;
    assert_eq!(run.state, RunState::TimedOut, "{run:#?}");
    let called = api_time_of(&run.attempt_log.as_deref().unwrap()[0].started_at);
    let (deadline, finished) =
        (api_time_of(run.deadline_at.as_deref().unwrap()), api_time_of(run.finished_at.as_deref().unwrap()));
    assert!(borealis_tests::between(called, deadline) >= Duration::from_secs(1), "{run:#?}");
    assert!(finished >= deadline, "it timed out on its deadline, not before: {run:#?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn callback_errors_have_their_status_and_a_problem_body() {
    let relay = relay(&[]);
    let (addr, system) = relay.external_system().await;
    let dir = TempDir::new("callback-errors");
    let silent = write_file(&dir, "silent.yaml", &direct_file(&format!("http://{addr}/silent"), ""));
    let out = relay
        .cli()
        .args(["webhook", "run", "-f", &silent, "--name", "tests", "--environment", "staging"])
        .run_async()
        .await;
    assert!(out.status.success(), "{}", out.stderr_text());
    let callback = borealis_tests::eventually("the webhook was called", Duration::from_secs(10), || async {
        system.received().first().and_then(|r| r.callback_uri.clone())
    })
    .await;
    let client = reqwest::Client::new();
    let token = system.token().await;
    let (agent_id, agent_secret) = relay.create_agent("some-agent");
    let (_, agent_token) = borealis_tests::token_reply(&relay.http_url, &agent_id, &agent_secret).await;
    let agent_token = agent_token["access_token"].as_str().unwrap().to_owned();

    let post = |url: String, token: Option<String>, body: &'static str| {
        let mut request = client.post(url).header("content-type", "application/json").body(body);
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        async move {
            let reply = request.send().await.unwrap();
            let status = reply.status().as_u16();
            let content_type = reply.headers()["content-type"].to_str().unwrap().to_owned();
            (status, content_type, reply.text().await.unwrap())
        }
    };
    let unknown = format!("{}/callbacks/no-such-run/callback", relay.http_url);
    let cases: Vec<(u16, String, Option<String>, &str, &str)> = vec![
        (401, callback.clone(), None, r#"{"success": true}"#, "missing bearer token"),
        (401, callback.clone(), Some("not-a-token".into()), r#"{"success": true}"#, "invalid token"),
        (401, callback.clone(), Some(agent_token), r#"{"success": true}"#, "agent credential"),
        (404, unknown, Some(token.clone()), r#"{"success": true}"#, "no webhook run has this callback URI"),
        (400, callback.clone(), Some(token.clone()), "success=true", "not JSON"),
        (400, callback.clone(), Some(token.clone()), r#"{"mdMessage": "hi"}"#, "success is required"),
        (400, callback.clone(), Some(token.clone()), r#"{"success": "yes"}"#, "success must be true or false"),
        (200, callback.clone(), Some(token.clone()), r#"{"success": true, "mdMessage": "first"}"#, "succeeded"),
        (200, callback.clone(), Some(token.clone()), r#"{"success": true, "mdMessage": "first"}"#, "\"repeat\":true"),
        (
            409,
            callback.clone(),
            Some(token.clone()),
            r#"{"success": false}"#,
            "already decided by a callback with success: true",
        ),
    ];
    for (status, url, token, body, says) in cases {
        let (got, content_type, text) = post(url, token, body).await;
        assert_eq!(got, status, "{body}: {text}");
        if status != 200 {
            assert_eq!(content_type, "application/problem+json", "{body}");
            let problem: serde_json::Value = serde_json::from_str(&text).unwrap();
            assert_eq!(problem["status"], status);
        }
        assert!(text.contains(says), "{status} {body}: {text}");
    }
    let shown = relay.cli().args(["runs", "show", &run_id(&relay)]).run_async().await.stdout_text();
    assert!(shown.contains("state: succeeded") && shown.contains("first"), "the first verdict stands: {shown}");
}

#[tokio::test(flavor = "multi_thread")]
async fn template_and_file_errors_name_the_problem_and_secrets_never_show() {
    let relay = relay(&[]);
    let (addr, system) = relay.external_system().await;
    let secret = "s3cr3t-value-that-must-not-leak";
    let out = relay.cli().args(["secrets", "set", "api_token"]).stdin_text(&format!("{secret}\n")).run_async().await;
    assert!(out.status.success(), "{}", out.stderr_text());
    let dir = TempDir::new("template-errors");
    let run = |file: String, extra: &'static [&'static str]| {
        let path = write_file(&dir, &format!("f{}.yaml", file.len()), &file);
        let cli = relay.cli().args(["webhook", "run", "-f", &path, "--name", "tests"]).args(extra);
        async move { cli.run_async().await }
    };
    let base = |mode: &str, extra: &str| {
        format!(
            "webhooks:\n  - name: tests\n    method: POST\n    uriTemplate: http://{addr}/pass\n    networkMode: {mode}\n{extra}"
        )
    };
    let cases: Vec<(String, &'static [&'static str], &str)> = vec![
        (
            base("remote", ""),
            &[],
            "webhooks[0].networkMode: expected direct or remoteNetworkAgent, found \"remote\" at 5:18",
        ),
        (
            format!("{}{}", base("direct", ""), &base("direct", "")["webhooks:\n".len()..]),
            &[],
            "duplicate webhook name \"tests\"",
        ),
        (
            format!(
                "{}targets:\n  dev:\n    constraints:\n      beforeDeployment:\n        - runWebhook:\n            name: nope\n",
                base("direct", "")
            ),
            &[],
            "runWebhook names webhook \"nope\", which is not defined",
        ),
        (
            format!(
                "{}targets:\n  dev:\n    constraints:\n      beforeDeployment:\n        - runWebhook:\n            name: tests\n",
                base("remoteNetworkAgent", "")
            ),
            &[],
            "target \"dev\" has no account",
        ),
        (
            base("direct", "    headers:\n      - key: X\n        value: '{{armory.nope}}'\n"),
            &[],
            "unknown placeholder {{armory.nope}}",
        ),
        (
            base("direct", "    headers:\n      - key: '{{context.k}}'\n        value: v\n"),
            &[],
            "templating is not supported in header keys",
        ),
        (
            base("direct", "    bodyTemplate:\n      inline: '{{context.missing}}'\n"),
            &[],
            "unknown placeholder {{context.missing}}: the context has no key \"missing\"",
        ),
        (
            base("direct", "    headers:\n      - key: X\n        value: '{{secrets.absent}}'\n"),
            &[],
            "no secret named \"absent\"",
        ),
        (
            base("direct", "    headers:\n      - key: X\n        value: 'v {{context.evil}}'\n"),
            &["--context", "evil=a\r\nInjected: yes"],
            "line break",
        ),
    ];
    for (file, extra, says) in cases {
        let out = run(file, extra).await;
        assert_eq!(out.status.code(), Some(2), "{says}: {}", out.stderr_text());
        assert!(out.stderr_text().contains(says), "expected {says:?} in: {}", out.stderr_text());
    }
    assert!(system.received().is_empty(), "nothing was sent for bad input");

    // A run that uses the secret; the destination echoes it back in its reply.
    let echo =
        borealis_tests::servers::serve(axum::Router::new().fallback(|headers: axum::http::HeaderMap| async move {
            (axum::http::StatusCode::BAD_REQUEST, format!("you sent {:?}", headers.get("authorization")))
        }))
        .await;
    let file = format!(
        "webhooks:\n  - name: tests\n    method: POST\n    uriTemplate: http://{echo}/x\n    networkMode: direct\n    headers:\n      - key: Authorization\n        value: Bearer {{{{secrets.api_token}}}}\n"
    );
    let out = run(file, &["--wait"]).await;
    assert_eq!(out.status.code(), Some(1));
    let mut seen = vec![out.stdout_text(), out.stderr_text()];
    for args in [
        vec!["runs", "list"],
        vec!["--json", "runs", "list"],
        vec!["--json", "runs", "show", &run_id(&relay)],
        vec!["secrets", "list"],
    ] {
        let out = relay.cli().args(&args).run_async().await;
        seen.push(out.stdout_text());
        seen.push(out.stderr_text());
    }
    let shown = seen[6].clone();
    assert!(shown.contains("Bearer ********"), "the request is shown masked: {shown}");
    assert!(shown.contains("you sent Some(\\\"Bearer ********\\\")"), "the echoed reply is scrubbed: {shown}");
    seen.push(relay.log());
    for text in seen {
        assert!(!text.contains(secret), "the secret leaked into: {text}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn retry_after_is_honoured_and_other_4xx_replies_are_not_retried() {
    let relay = relay(&[]);
    let (addr, system) = relay.external_system().await;
    let dir = TempDir::new("retry-after");
    let throttled =
        write_file(&dir, "throttled.yaml", &direct_file(&format!("http://{addr}/throttled/1"), "    retryCount: 2\n"));
    let out = relay
        .cli()
        .args(["webhook", "run", "-f", &throttled, "--name", "tests", "--environment", "staging", "--wait"])
        .run_async()
        .await;
    assert_eq!(out.status.code(), Some(0), "{}\n{}", out.stdout_text(), out.stderr_text());
    let calls = system.received();
    assert_eq!(calls.len(), 2);
    let run: serde_json::Value = serde_json::from_str(
        &relay.cli().args(["--json", "runs", "show", &run_id(&relay)]).run_async().await.stdout_text(),
    )
    .unwrap();
    let log = run["attemptLog"].as_array().unwrap();
    let started = |i: usize| humantime::parse_rfc3339(log[i]["startedAt"].as_str().unwrap()).unwrap();
    let gap = started(1).duration_since(started(0)).unwrap();
    // The base delay is 50 ms; Retry-After: 1 asks for a second.
    assert!(gap >= Duration::from_millis(950), "retried after {gap:?}");

    let rejected =
        write_file(&dir, "reject.yaml", &direct_file(&format!("http://{addr}/reject"), "    retryCount: 3\n"));
    let out = relay
        .cli()
        .args(["webhook", "run", "-f", &rejected, "--name", "tests", "--environment", "staging", "--wait"])
        .run_async()
        .await;
    assert_eq!(out.status.code(), Some(1));
    assert!(
        out.stdout_text().contains("HTTP 403; a 4xx other than 408 and 429 is not retried"),
        "{}",
        out.stdout_text()
    );
    assert_eq!(system.received().len(), 3, "a 403 is tried once");
}

#[tokio::test(flavor = "multi_thread")]
async fn disable_callback_lets_the_reply_decide_and_runs_can_be_cancelled() {
    let relay = relay(&[]);
    let (addr, system) = relay.external_system().await;
    let dir = TempDir::new("no-callback");
    let decided =
        write_file(&dir, "decided.yaml", &direct_file(&format!("http://{addr}/silent"), "    disableCallback: true\n"));
    let out = relay
        .cli()
        .args(["webhook", "run", "-f", &decided, "--name", "tests", "--environment", "staging", "--wait"])
        .run_async()
        .await;
    assert_eq!(out.status.code(), Some(0), "{}\n{}", out.stdout_text(), out.stderr_text());
    assert!(out.stdout_text().contains("callbacks are disabled"), "{}", out.stdout_text());

    let waiting = write_file(&dir, "waiting.yaml", &direct_file(&format!("http://{addr}/silent"), ""));
    let out = relay
        .cli()
        .args(["webhook", "run", "-f", &waiting, "--name", "tests", "--environment", "staging"])
        .run_async()
        .await;
    assert!(out.status.success());
    let id = run_id(&relay);
    let callback = borealis_tests::eventually("the webhook was called", Duration::from_secs(10), || async {
        system.received().get(1).and_then(|r| r.callback_uri.clone())
    })
    .await;
    let out = relay.cli().args(["runs", "cancel", &id]).run_async().await;
    assert!(out.stdout_text().contains("cancelled"), "{}", out.stderr_text());
    let reply = system.call_back(&callback, serde_json::json!({ "success": true })).await;
    assert_eq!(reply.status, 409, "{}", reply.body);
    assert!(reply.body.contains("already ended as cancelled"), "{}", reply.body);
    let out = relay.cli().args(["runs", "cancel", &id]).run_async().await;
    assert_eq!(out.status.code(), Some(2), "cancelling twice is refused: {}", out.stderr_text());
}
