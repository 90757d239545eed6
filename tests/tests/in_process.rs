//! The relay in the test's own process: `borealis_relay::run` on listeners
//! bound here on port 0, with a config loaded as the binary loads one, and
//! the real agent binary, a real upstream and a real external system
//! around it. Then the shutdown future completes and `run` returns.

use std::time::Duration;

use borealis_relay::{Listeners, RelayConfig};
use borealis_tests::{AgentProcess, eventually, external, servers};
use tokio::net::TcpListener;

const ADMIN_TOKEN: &str = "in-process-admin-token-0123456789";

/// `POST path` with the admin token and a JSON body; the reply's status and JSON.
async fn post(base: &str, path: &str, body: serde_json::Value) -> (u16, serde_json::Value) {
    let reply =
        reqwest::Client::new().post(format!("{base}{path}")).bearer_auth(ADMIN_TOKEN).json(&body).send().await.unwrap();
    let status = reply.status().as_u16();
    (status, reply.json().await.unwrap_or_default())
}

#[tokio::test(flavor = "multi_thread")]
async fn an_in_process_relay_forwards_through_an_agent_runs_a_webhook_and_stops_within_its_grace() {
    borealis_tests::install_crypto();
    let data = tempfile::tempdir().unwrap();
    // As `main` loads it: defaults, then BOREALIS_* variables (here given
    // explicitly, not read from this process's environment), validated.
    let env = [
        ("BOREALIS_DATA_DIR", data.path().display().to_string()),
        ("BOREALIS_ADMIN_TOKEN", ADMIN_TOKEN.to_owned()),
        ("BOREALIS_DIRECT_ALLOW", "127.0.0.0/8".to_owned()),
        ("BOREALIS_HEARTBEAT_INTERVAL", "1s".to_owned()),
        ("BOREALIS_SHUTDOWN_GRACE", "10s".to_owned()),
    ];
    let config = RelayConfig::load(None, env.map(|(k, v)| (k.to_owned(), v)), &[]).expect("a valid config");
    let grace = config.shutdown_grace;
    let http = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let agents = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let http_url = format!("http://{}", http.local_addr().unwrap());
    let agents_url = format!("http://{}", agents.local_addr().unwrap());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let relay = tokio::spawn(borealis_relay::run(config, Listeners { http, agents }, async {
        let _ = stopped.await;
    }));
    eventually("the in-process relay is ready", Duration::ZERO, || async {
        let reply = reqwest::get(format!("{http_url}/readyz")).await.ok()?;
        reply.status().is_success().then_some(())
    })
    .await;

    // The API's document as served is the one committed for readers and tools.
    let served = reqwest::get(format!("{http_url}/api/v1/openapi.json")).await.unwrap();
    assert_eq!(served.status(), 200);
    assert_eq!(served.headers()["content-type"], "application/json");
    let committed = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/openapi.json")).unwrap();
    assert!(served.text().await.unwrap() == committed, "docs/openapi.json differs from what the relay serves");

    // An agent credential through the HTTP API, and the real agent binary.
    let (upstream, hits) = servers::upstream().await;
    let (status, credential) = post(&http_url, "/api/v1/agents", serde_json::json!({ "id": "in-process" })).await;
    assert_eq!(status, 201, "{credential}");
    let agent = AgentProcess::start(
        &agents_url,
        credential["clientId"].as_str().unwrap(),
        credential["clientSecret"].as_str().unwrap(),
        &["--allow", &upstream.to_string()],
    );
    agent.wait_connected(Duration::from_secs(20)).await;

    // A GET proxied through the agent.
    let reply = reqwest::Client::new()
        .get(format!("{http_url}/api/v1/proxy"))
        .query(&[("url", format!("http://{upstream}/fast").as_str()), ("agent", "in-process")])
        .header("proxy-authorization", format!("Bearer {ADMIN_TOKEN}"))
        .send()
        .await
        .unwrap();
    assert_eq!(reply.status(), 200);
    assert_eq!(reply.text().await.unwrap(), "fast");
    assert_eq!(hits.hits(), 1, "the upstream got the request");
    agent.wait_metric("borealis_agent_requests_total{outcome=\"2xx\"}", 1.0).await;

    // A direct-mode webhook run whose destination calls back.
    let (status, client) = post(&http_url, "/api/v1/clients", serde_json::json!({ "name": "ci-system" })).await;
    assert_eq!(status, 201, "{client}");
    let (system_addr, system) =
        external::start(&http_url, client["clientId"].as_str().unwrap(), client["clientSecret"].as_str().unwrap())
            .await;
    let file = format!(
        "webhooks:
  - name: job
    method: POST
    uriTemplate: http://{system_addr}/pass
    networkMode: direct
    headers:
      - key: Location
        value: '{{{{armory.callbackUri}}}}/callback'
"
    );
    let (status, run) =
        post(&http_url, "/api/v1/webhook-runs", serde_json::json!({ "file": file, "name": "job" })).await;
    assert_eq!(status, 201, "{run}");
    let id = run["id"].as_str().unwrap();
    let run: borealis_api::WebhookRun = reqwest::Client::new()
        .get(format!("{http_url}/api/v1/webhook-runs/{id}?wait=30s"))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(run.state, borealis_api::RunState::Succeeded, "{run:#?}");
    assert_eq!(run.success, Some(true), "{run:#?}");
    assert_eq!(run.network_mode, Some(borealis_api::NetworkMode::Direct), "{run:#?}");
    assert_eq!(system.received().len(), 1);
    // The system records the relay's answer once it has read it.
    let callback = eventually("the system has the relay's answer to its callback", Duration::ZERO, || async {
        system.callbacks().first().cloned()
    })
    .await;
    assert_eq!(callback.status, 200, "{}", callback.body);

    // Shutdown: `run` drains the agent and returns Ok within its grace.
    stop.send(()).unwrap();
    let ended = tokio::time::timeout(grace, relay).await.expect("run returned within its shutdown grace");
    ended.expect("the relay task did not panic").expect("run returned Ok");
    agent.wait_metric("borealis_agent_drains_total", 1.0).await;
}
