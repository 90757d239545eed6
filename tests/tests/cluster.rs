//! Several relay replicas on one PostgreSQL database behind a real TCP
//! balancer (HAProxy): every replica reaches every agent, whichever replica
//! holds its session; and a replica that dies loses no run, callback,
//! approval or deployment.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::extract::Request;
use axum::routing::{any, post};
use borealis_api::{Deployment, DeploymentState, RunState, TargetState, WebhookRun};
use borealis_tests::balancer::{Balancer, free_port};
use borealis_tests::console::Console;
use borealis_tests::postgres::{Cuttable, Schema};
use borealis_tests::process::{OutputText, create_credentials};
use borealis_tests::servers::serve;
use borealis_tests::{AgentProcess, RelayOptions, RelayProcess, eventually};
use futures_util::{StreamExt, stream};

const ADMIN_TOKEN: &str = "cluster-admin-token-0123456789";
/// base64 of 32 bytes: every replica encrypts secrets under the same key.
const SECRET_KEY: &str = "Y2x1c3Rlci1zZWNyZXQta2V5LW9mLTMyLWJ5dGVzISE=";

/// Three replicas on `schema`, and a balancer in front of their two listeners.
struct Cluster {
    replicas: Vec<RelayProcess>,
    balancer: Balancer,
    schema: Schema,
}

fn replica(schema: &Schema, n: usize, public_url: &str) -> RelayProcess {
    replica_on(&schema.database_url(), &format!("relay-{n}"), public_url)
}

fn replica_on(database_url: &str, name: &str, public_url: &str) -> RelayProcess {
    replica_polling(database_url, name, public_url, "250ms")
}

/// A replica that looks for due work anywhere every `poll`.
fn replica_polling(database_url: &str, name: &str, public_url: &str, poll: &str) -> RelayProcess {
    RelayProcess::start(replica_options(database_url, name, public_url, poll))
}

fn replica_options(database_url: &str, name: &str, public_url: &str, poll: &str) -> RelayOptions {
    RelayOptions {
        direct_allow: vec!["127.0.0.0/8".into()],
        extra_args: [
            "--database-url",
            database_url,
            "--replica-name",
            name,
            // Callback URIs name the balancer, so any replica takes them.
            "--public-url",
            public_url,
            "--lease-duration",
            "3s",
            "--poll-interval",
            poll,
            // The balancer names each connection's client (PROXY protocol).
            "--trusted-proxy",
            "127.0.0.1/32",
        ]
        .map(String::from)
        .to_vec(),
        env: vec![
            ("BOREALIS_ADMIN_TOKEN".into(), ADMIN_TOKEN.into()),
            ("BOREALIS_SECRET_KEY".into(), SECRET_KEY.into()),
        ],
        ..Default::default()
    }
}

fn addr(url: &str) -> SocketAddr {
    url.split("://").nth(1).unwrap().parse().unwrap()
}

impl Cluster {
    fn start() -> Self {
        let schema = Schema::new();
        let fronts = [free_port(), free_port()];
        let public_url = format!("http://{}", fronts[0]);
        let replicas: Vec<RelayProcess> = (1..=3).map(|n| replica(&schema, n, &public_url)).collect();
        let ready: Vec<SocketAddr> = replicas.iter().map(|r| addr(&r.http_url)).collect();
        let balancer = Balancer::start_replicas(
            &[("http", ready.clone()), ("agents", replicas.iter().map(|r| addr(&r.agents_url)).collect())],
            &fronts,
            &ready,
        );
        Self { replicas, balancer, schema }
    }

    fn http(&self) -> String {
        self.balancer.url("http")
    }

    fn cli(&self) -> borealis_tests::Cli {
        borealis_tests::cli().env("BOREALIS_RELAY", &self.http()).env("BOREALIS_ADMIN_TOKEN", ADMIN_TOKEN)
    }

    fn create_agent(&self, id: &str) -> (String, String) {
        create_credentials(self.cli(), "agents", id)
    }

    fn create_client(&self, name: &str) -> (String, String) {
        create_credentials(self.cli(), "clients", name)
    }

    /// Agents `east` and `west`, two instances each, through the balancer.
    async fn start_agents(&self) -> Vec<AgentProcess> {
        let mut agents = Vec::new();
        for id in ["east", "west"] {
            let (client_id, secret) = self.create_agent(id);
            for n in 1..=2 {
                let name = format!("{id}-{n}");
                let agent = AgentProcess::start(
                    &self.balancer.url("agents"),
                    &client_id,
                    &secret,
                    &["--allow", "127.0.0.0/8", "--instance", &name],
                );
                agent.wait_connected(Duration::from_secs(30)).await;
                agents.push(agent);
            }
        }
        agents
    }
}

/// The instances of `agent` as replica `base` lists them: (instance, replica).
async fn instances(base: &str, agent: &str) -> Vec<(String, String)> {
    let list: serde_json::Value = client()
        .get(format!("{base}/api/v1/agents"))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let agents = list["agents"].as_array().cloned().unwrap_or_default();
    let Some(found) = agents.into_iter().find(|a| a["agentId"] == agent) else { return Vec::new() };
    let mut instances: Vec<(String, String)> = found["instances"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| (i["instance"].as_str().unwrap().to_owned(), i["replica"].as_str().unwrap().to_owned()))
        .collect();
    instances.sort();
    instances
}

fn client() -> reqwest::Client {
    reqwest::Client::builder().no_proxy().build().unwrap()
}

/// A destination that says which path it served and, for a POST, how many
/// bytes it read and their SHA-256.
async fn destination() -> SocketAddr {
    serve(Router::new().route(
        "/{*path}",
        any(|request: Request| async move {
            let path = request.uri().path().to_owned();
            let mut body = request.into_body().into_data_stream();
            let (mut length, mut digest) = (0u64, ring::digest::Context::new(&ring::digest::SHA256));
            while let Some(chunk) = body.next().await {
                let chunk = chunk.unwrap();
                length += chunk.len() as u64;
                digest.update(&chunk);
            }
            let sha = hex(digest.finish().as_ref());
            axum::Json(serde_json::json!({ "path": path, "length": length, "sha256": sha }))
        }),
    ))
    .await
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// `size` bytes of a repeating pattern, streamed in 64 KiB pieces, and their SHA-256.
fn pattern(size: usize) -> (reqwest::Body, String) {
    let piece: Vec<u8> = (0..65536u32).map(|i| (i % 251) as u8).collect();
    let mut digest = ring::digest::Context::new(&ring::digest::SHA256);
    let mut left = size;
    while left > 0 {
        let n = left.min(piece.len());
        digest.update(&piece[..n]);
        left -= n;
    }
    let chunks = stream::unfold(size, move |left| {
        let piece = piece.clone();
        async move {
            (left > 0).then(|| {
                let n = left.min(piece.len());
                (Ok::<_, std::io::Error>(bytes::Bytes::copy_from_slice(&piece[..n])), left - n)
            })
        }
    });
    (reqwest::Body::wrap_stream(chunks), hex(digest.finish().as_ref()))
}

async fn proxy_get(base: &str, agent: &str, url: &str) -> (u16, serde_json::Value) {
    let reply = client()
        .get(format!("{base}/api/v1/proxy"))
        .query(&[("agent", agent), ("url", url)])
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .unwrap();
    let status = reply.status().as_u16();
    (status, reply.json().await.unwrap_or_default())
}

async fn peer_hops(cluster: &Cluster, direction: &str) -> f64 {
    let mut total = 0.0;
    for relay in &cluster.replicas {
        total += relay.metric(&format!("borealis_peer_forwarded_requests_total{{direction=\"{direction}\"}}")).await;
    }
    total
}

#[tokio::test(flavor = "multi_thread")]
async fn every_replica_reaches_every_agent_behind_the_balancer() {
    let cluster = Cluster::start();
    let destination = destination().await;
    let agents = cluster.start_agents().await;
    // Every replica lists all four instances, each with the replica holding it.
    let mut holders = HashMap::new();
    for relay in &cluster.replicas {
        for id in ["east", "west"] {
            let listed = eventually(
                &format!("{} lists both instances of {id}", relay.http_url),
                Duration::from_secs(30),
                || async {
                    let listed = instances(&relay.http_url, id).await;
                    (listed.len() == 2).then_some(listed)
                },
            )
            .await;
            for (instance, replica) in listed {
                assert!(replica.starts_with("relay-"), "{instance} held by {replica:?}");
                holders.insert(instance, replica);
            }
        }
    }
    assert_eq!(holders.len(), 4, "{holders:?}");

    // Each replica directly, and the balancer (which spreads requests over
    // all three): a GET to each agent answers, whoever holds its sessions.
    let mut bases: Vec<String> = cluster.replicas.iter().map(|r| r.http_url.clone()).collect();
    bases.extend(std::iter::repeat_n(cluster.http(), 6));
    for base in &bases {
        for id in ["east", "west"] {
            let (status, body) = proxy_get(base, id, &format!("http://{destination}/{id}/hello")).await;
            assert_eq!(status, 200, "{base} to {id}: {body}");
            assert_eq!(body["path"], format!("/{id}/hello"));
        }
    }
    // Three replicas, two agents with two instances each: at least one
    // replica holds no instance of some agent, so some requests took the hop.
    let (sent, received) = (peer_hops(&cluster, "sent").await, peer_hops(&cluster, "received").await);
    assert!(sent > 0.0 && sent == received, "peer hops: {sent} sent, {received} received");

    // A streamed 100 MiB POST to each agent, through the balancer.
    const SIZE: usize = 100 << 20;
    for id in ["east", "west"] {
        let (body, sha) = pattern(SIZE);
        let reply = client()
            .post(format!("{}/api/v1/proxy", cluster.http()))
            .query(&[("agent", id), ("url", &format!("http://{destination}/upload"))])
            .bearer_auth(ADMIN_TOKEN)
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(reply.status(), 200, "100 MiB to {id}");
        let body: serde_json::Value = reply.json().await.unwrap();
        assert_eq!((body["length"].as_u64(), body["sha256"].as_str()), (Some(SIZE as u64), Some(sha.as_str())));
    }
    // The same through a replica that holds no instance of the agent: the
    // body crosses the hop streamed, so neither replica's memory grows by it.
    let names: Vec<String> = (1..=3).map(|n| format!("relay-{n}")).collect();
    let east_holders: Vec<&String> =
        holders.iter().filter(|(instance, _)| instance.starts_with("east")).map(|(_, replica)| replica).collect();
    let forwarder = names.iter().position(|name| !east_holders.contains(&name)).expect("a replica without east");
    let pids: Vec<u32> = cluster.replicas.iter().map(|r| r.pid()).collect();
    let before: Vec<u64> = pids.iter().map(|pid| borealis_tests::rss_kib(*pid)).collect();
    let peak = Arc::new(Mutex::new(before.clone()));
    let sampling = tokio_util::sync::CancellationToken::new();
    let sampler = tokio::spawn({
        let (peak, stop, pids) = (peak.clone(), sampling.clone(), pids.clone());
        async move {
            while !stop.is_cancelled() {
                {
                    let mut peak = peak.lock().unwrap();
                    for (i, pid) in pids.iter().enumerate() {
                        peak[i] = peak[i].max(borealis_tests::rss_kib(*pid));
                    }
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    });
    let (body, sha) = pattern(SIZE);
    let reply = client()
        .post(format!("{}/api/v1/proxy", cluster.replicas[forwarder].http_url))
        .query(&[("agent", "east"), ("url", &format!("http://{destination}/upload"))])
        .bearer_auth(ADMIN_TOKEN)
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(reply.status(), 200);
    let answer: serde_json::Value = reply.json().await.unwrap();
    assert_eq!((answer["length"].as_u64(), answer["sha256"].as_str()), (Some(SIZE as u64), Some(sha.as_str())));
    sampling.cancel();
    sampler.await.unwrap();
    let peak = peak.lock().unwrap().clone();
    for (i, (was, most)) in before.iter().zip(&peak).enumerate() {
        let growth_mib = most.saturating_sub(*was) / 1024;
        assert!(growth_mib <= 64, "relay-{} grew by {growth_mib} MiB carrying 100 MiB", i + 1);
    }
    // An agent nobody registered is unknown on every replica (the hop does
    // not make it a 502).
    let (status, body) = proxy_get(&cluster.replicas[0].http_url, "nobody", &format!("http://{destination}/x")).await;
    assert_eq!(status, 404, "{body}");
    drop(agents);
    drop(cluster.schema);
}

/// Counts calls per run (the `webhook-id` header is the run's id) and
/// answers 200.
#[derive(Clone, Default)]
struct Counter(Arc<Mutex<HashMap<String, u32>>>);

impl Counter {
    async fn start(&self) -> SocketAddr {
        let calls = self.clone();
        serve(Router::new().route(
            "/hook",
            post(move |headers: axum::http::HeaderMap| {
                let calls = calls.clone();
                async move {
                    let id = headers.get("webhook-id").and_then(|v| v.to_str().ok()).unwrap_or_default().to_owned();
                    *calls.0.lock().unwrap().entry(id).or_default() += 1;
                    "ok"
                }
            }),
        ))
        .await
    }

    fn calls(&self, run: &str) -> u32 {
        self.0.lock().unwrap().get(run).copied().unwrap_or_default()
    }
}

async fn api(base: &str, method: reqwest::Method, path: &str, body: Option<serde_json::Value>) -> serde_json::Value {
    let mut request = client().request(method, format!("{base}{path}")).bearer_auth(ADMIN_TOKEN);
    if let Some(body) = body {
        request = request.json(&body);
    }
    let reply = request.send().await.unwrap();
    let status = reply.status();
    let value: serde_json::Value = reply.json().await.unwrap_or_default();
    assert!(status.is_success(), "{path}: {status} {value}");
    value
}

#[tokio::test(flavor = "multi_thread")]
async fn a_replica_killed_mid_work_loses_no_run_and_no_deployment() {
    const RUNS: usize = 120;
    let mut cluster = Cluster::start();
    let counter = Counter::default();
    let hook = counter.start().await;
    // Half the runs are decided by their 2xx, half wait for a callback.
    let file = |callback: bool| {
        format!(
            "webhooks:
  - name: job
    method: POST
    uriTemplate: http://{hook}/hook
    networkMode: direct
    retryCount: 3
    disableCallback: {}
",
            !callback
        )
    };
    let deployment = "application: shop
targets:
  staging:
    constraints:
      beforeDeployment:
        - pause:
            untilApproved: true
  prod:
    constraints:
      dependsOn: [staging]
      beforeDeployment:
        - pause:
            duration: 2
            unit: SECONDS
";
    let created = api(
        &cluster.replicas[0].http_url,
        reqwest::Method::POST,
        "/api/v1/deployments",
        Some(serde_json::json!({ "file": deployment })),
    )
    .await;
    let deployment_id = created["id"].as_str().unwrap().to_owned();

    let base = cluster.http();
    let started: Vec<(String, bool)> = stream::iter(0..RUNS)
        .map(|i| {
            let (base, body) = (base.clone(), serde_json::json!({ "file": file(i % 2 == 0), "name": "job" }));
            async move {
                let run = api(&base, reqwest::Method::POST, "/api/v1/webhook-runs", Some(body)).await;
                (run["id"].as_str().unwrap().to_owned(), i % 2 == 0)
            }
        })
        .buffer_unordered(8)
        .collect()
        .await;
    // The replica that owns the deployment dies, with attempts in flight.
    let killed = cluster.replicas.remove(0);
    drop(killed); // SIGKILL (the harness kills on drop)

    // The approval goes through the balancer to a live replica; the
    // deployment's new owner (within the 3 s lease) sees it.
    eventually("staging waits for approval", Duration::from_secs(60), || async {
        let d = api(&base, reqwest::Method::GET, &format!("/api/v1/deployments/{deployment_id}"), None).await;
        (d["pendingApprovals"] == serde_json::json!(["staging"])).then_some(())
    })
    .await;
    api(&base, reqwest::Method::POST, &format!("/api/v1/deployments/{deployment_id}/targets/staging/approve"), None)
        .await;

    // Callbacks for the runs that wait for one, through the balancer.
    let (client_id, secret) = cluster.create_client("ci");
    let (_, token) = borealis_tests::token_reply(&base, &client_id, &secret).await;
    let token = token["access_token"].as_str().unwrap().to_owned();
    for (id, callback) in &started {
        let run = eventually(&format!("run {id} was called"), Duration::from_secs(60), || async {
            let run: WebhookRun =
                typed(api(&base, reqwest::Method::GET, &format!("/api/v1/webhook-runs/{id}"), None).await);
            (run.state != RunState::Pending && run.state != RunState::Calling).then_some(run)
        })
        .await;
        if *callback {
            let uri = format!("{}/callback", run.callback_uri.as_deref().unwrap());
            let reply = client()
                .post(&uri)
                .bearer_auth(&token)
                .json(&serde_json::json!({ "success": true, "mdMessage": "done" }))
                .send()
                .await
                .unwrap();
            assert!(reply.status().is_success(), "callback for {id}: {}", reply.status());
        }
    }
    for (id, _) in &started {
        let run: WebhookRun =
            typed(api(&base, reqwest::Method::GET, &format!("/api/v1/webhook-runs/{id}?wait=30s"), None).await);
        assert_eq!(run.state, RunState::Succeeded, "{run:#?}");
        let attempts = run.attempts;
        let calls = counter.calls(id);
        assert!(calls >= 1 && calls <= attempts, "run {id}: {calls} calls for {attempts} attempts: {run:#?}");
    }
    let done: Deployment =
        typed(api(&base, reqwest::Method::GET, &format!("/api/v1/deployments/{deployment_id}?wait=30s"), None).await);
    assert_eq!(done.state, DeploymentState::Succeeded, "{done:#?}");
    assert_eq!(cluster.schema.count("deployments"), 1);
    let took_over = cluster.replicas.iter().any(|r| r.log_line(&["resuming deployment", &deployment_id]).is_some());
    assert!(took_over, "a live replica took the killed one's deployment over");
}

async fn ready(base: &str) -> bool {
    client().get(format!("{base}/readyz")).send().await.is_ok_and(|r| r.status().is_success())
}

#[tokio::test(flavor = "multi_thread")]
async fn a_replica_that_loses_the_database_claims_nothing_until_it_returns() {
    const RUNS: usize = 20;
    let schema = Schema::new();
    let link = borealis_tests::postgres::Cuttable::start().await;
    let public_url = format!("http://{}", free_port());
    // A replica whose database connections go through the link the test cuts.
    let cut_off = replica_on(&link.through(&schema.database_url()), "relay-cut", &public_url);
    let other = replica(&schema, 2, &public_url);
    let counter = Counter::default();
    let hook = counter.start().await;
    let body = serde_json::json!({
        "file": format!("webhooks:\n  - name: job\n    method: POST\n    uriTemplate: http://{hook}/hook\n    networkMode: direct\n    disableCallback: true\n"),
        "name": "job",
    });
    let claims = || async { cut_off.metric("borealis_claims_total{kind=\"attempt\"}").await };
    assert!(ready(&cut_off.http_url).await);
    // The README's balancer in front: it checks /readyz, so the replica
    // without its database leaves both groups, and comes back with it.
    let replicas = [&cut_off, &other];
    let http: Vec<SocketAddr> = replicas.iter().map(|r| addr(&r.http_url)).collect();
    let balancer = Balancer::start_replicas(
        &[("http", http.clone()), ("agents", replicas.iter().map(|r| addr(&r.agents_url)).collect())],
        &[free_port(), free_port()],
        &http,
    );
    let last_says = |server: &str, state: &str| {
        let log = balancer.log();
        log.lines().rev().find(|l| l.contains(server) && l.contains(" is ")).is_some_and(|l| l.contains(state))
    };

    link.cut();
    eventually("the cut-off replica reports not ready", Duration::from_secs(30), || async {
        (!ready(&cut_off.http_url).await).then_some(())
    })
    .await;
    eventually("the balancer takes it out of both groups", Duration::from_secs(30), || async {
        (last_says("http/s0", "is DOWN") && last_says("agents/s0", "is DOWN")).then_some(())
    })
    .await;
    let before = claims().await;
    let mut ids = Vec::new();
    for _ in 0..RUNS {
        let run = api(&other.http_url, reqwest::Method::POST, "/api/v1/webhook-runs", Some(body.clone())).await;
        ids.push(run["id"].as_str().unwrap().to_owned());
    }
    for id in &ids {
        let run: WebhookRun = typed(
            api(&other.http_url, reqwest::Method::GET, &format!("/api/v1/webhook-runs/{id}?wait=30s"), None).await,
        );
        assert_eq!(run.state, RunState::Succeeded, "{run:#?}");
    }
    assert_eq!(claims().await, before, "no claim while the database was away");
    assert!(ready(&other.http_url).await, "the other replica stayed ready");

    link.restore();
    eventually("the replica is ready again", Duration::from_secs(30), || async {
        ready(&cut_off.http_url).await.then_some(())
    })
    .await;
    eventually("the balancer puts it back in both groups", Duration::from_secs(30), || async {
        (last_says("http/s0", "is UP") && last_says("agents/s0", "is UP")).then_some(())
    })
    .await;
    for _ in 0..RUNS {
        let run = api(&cut_off.http_url, reqwest::Method::POST, "/api/v1/webhook-runs", Some(body.clone())).await;
        ids.push(run["id"].as_str().unwrap().to_owned());
    }
    for id in &ids {
        let run: WebhookRun = typed(
            api(&cut_off.http_url, reqwest::Method::GET, &format!("/api/v1/webhook-runs/{id}?wait=30s"), None).await,
        );
        assert_eq!(run.state, RunState::Succeeded, "{run:#?}");
        assert_eq!(counter.calls(id), 1, "run {id} was called once: {run:#?}");
    }
    assert!(claims().await > before, "the replica claims again once the database is back");
}

/// The first replica on a database creates the admin token; a replica
/// started later with none of its own takes that one (its hash is in the
/// database) and writes no token file.
#[tokio::test(flavor = "multi_thread")]
async fn replicas_take_the_admin_token_the_first_one_created() {
    let schema = Schema::new();
    let start = || {
        RelayProcess::start(RelayOptions {
            extra_args: ["--database-url", &schema.database_url(), "--lease-duration", "3s"].map(String::from).to_vec(),
            env: vec![("BOREALIS_SECRET_KEY".into(), SECRET_KEY.into())],
            ..Default::default()
        })
    };
    let first = start();
    let token = first.admin_token();
    let second = start();
    assert!(!second.data_dir.path().join("admin-token").exists(), "the second replica wrote no token of its own");
    for (relay, presented, expected) in
        [(&first, token.as_str(), 200), (&second, token.as_str(), 200), (&second, "bat_not-the-token-at-all", 401)]
    {
        let reply =
            client().get(format!("{}/api/v1/agents", relay.http_url)).bearer_auth(presented).send().await.unwrap();
        assert_eq!(reply.status().as_u16(), expected, "{} with {presented:?}", relay.http_url);
    }
}

/// A console session signed in on one replica is good on every other, its
/// forms' CSRF tokens too; signing out on one ends it on all.
#[tokio::test(flavor = "multi_thread")]
async fn a_console_session_holds_on_every_replica_and_sign_out_ends_it_everywhere() {
    let schema = Schema::new();
    let (first, second) = (replica(&schema, 1, "http://127.0.0.1:9"), replica(&schema, 2, "http://127.0.0.1:9"));
    let console = Console::sign_in(&first.http_url, ADMIN_TOKEN).await;
    let (status, page) = console.get(&format!("{}/agents", first.http_url)).await;
    assert_eq!(status, 200);
    let csrf = Console::csrf(&page);

    // The session and the token it got from the first replica, on the second.
    let (status, _) = console.get(&format!("{}/agents", second.http_url)).await;
    assert_eq!(status, 200, "the second replica knows the session");
    let (status, _) = console.post(&format!("{}/agents", second.http_url), &csrf, &[("id", "edge-1")]).await;
    assert_eq!(status, 201, "the second replica takes the first one's CSRF token");
    let (_, page) = console.get(&format!("{}/agents", first.http_url)).await;
    assert!(page.contains(r#"data-agent="edge-1""#), "registered through either replica, listed by both");

    // An instance connected to the first replica shows on the second's page,
    // with what only its holder knows said so.
    let (client_id, secret) = first.create_agent("edge-2");
    let agent = AgentProcess::start(&first.agents_url, &client_id, &secret, &["--allow", "127.0.0.0/8"]);
    agent.wait_connected(Duration::from_secs(20)).await;
    eventually("the second replica lists the first one's instance", Duration::from_secs(20), || async {
        let (_, page) = console.get(&format!("{}/agents", second.http_url)).await;
        page.contains("not known here (held by relay-1)").then_some(())
    })
    .await;

    let (status, location) = console.post(&format!("{}/sign-out", second.http_url), &csrf, &[]).await;
    assert_eq!((status, location.as_deref()), (303, Some("/sign-in")));
    for relay in [&first, &second] {
        let (status, _) = console.get(&format!("{}/agents", relay.http_url)).await;
        assert_eq!(status, 303, "{}: signed out", relay.http_url);
    }
}

/// An API call through the balancer that survives the replica behind it
/// dying mid-request: repeated on a transport error or a 502/503 (a POST
/// with its `Idempotency-Key`, so the repeat creates nothing twice).
async fn api_retrying(
    base: &str,
    method: reqwest::Method,
    path: &str,
    body: Option<serde_json::Value>,
    key: Option<&str>,
) -> serde_json::Value {
    let mut last = String::new();
    for _ in 0..50 {
        let mut request = client().request(method.clone(), format!("{base}{path}")).bearer_auth(ADMIN_TOKEN);
        if let Some(body) = &body {
            request = request.json(body);
        }
        if let Some(key) = key {
            request = request.header("idempotency-key", key);
        }
        match request.send().await {
            Ok(reply) if reply.status().is_success() => return reply.json().await.unwrap(),
            Ok(reply) if [502, 503].contains(&reply.status().as_u16()) => last = reply.status().to_string(),
            Ok(reply) => {
                let status = reply.status();
                panic!("{path}: {status} {}", reply.text().await.unwrap_or_default());
            }
            Err(err) => last = err.to_string(),
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    panic!("{path}: still failing: {last}")
}

/// The chaos the issue describes: 1 000 runs (direct and through agents,
/// half decided by callbacks) and 10 deployments with approvals, timed
/// pauses and a webhook gate; one replica SIGKILLed a third of the way in,
/// a second killed and restarted two thirds in; callbacks and approvals
/// through the balancer throughout. Every run ends, none is lost, no
/// attempt is called twice, every deployment ends as its gate decided, and
/// every agent that lost its replica is connected again within 5 s.
#[tokio::test(flavor = "multi_thread")]
async fn chaos_two_replicas_die_and_nothing_is_lost_or_done_twice() {
    const RUNS: usize = 1000;
    const DEPLOYMENTS: usize = 10;
    let mut cluster = Cluster::start();
    let base = cluster.http();
    let (client_id, client_secret) = cluster.create_client("ci");
    // The external system calls back through the balancer.
    let (system_addr, system) = borealis_tests::external::start(&base, &client_id, &client_secret).await;
    let agents = cluster.start_agents().await;

    let deployment = |k: usize| {
        let verdict = if k.is_multiple_of(2) { "pass" } else { "fail" };
        format!(
            "application: app-{k}
webhooks:
  - name: gate
    method: POST
    uriTemplate: http://{system_addr}/{verdict}/deployment-{k}
    networkMode: direct
    headers:
      - key: Location
        value: '{{{{armory.callbackUri}}}}/callback'
targets:
  staging:
    constraints:
      beforeDeployment:
        - pause:
            untilApproved: true
  prod:
    constraints:
      dependsOn: [staging]
      beforeDeployment:
        - pause:
            duration: 2
            unit: SECONDS
        - runWebhook:
            name: gate
"
        )
    };
    let mut deployments = Vec::new();
    for k in 0..DEPLOYMENTS {
        let body = serde_json::json!({ "file": deployment(k) });
        let created =
            api_retrying(&base, reqwest::Method::POST, "/api/v1/deployments", Some(body), Some(&format!("d-{k}")))
                .await;
        deployments.push(created["id"].as_str().unwrap().to_owned());
    }

    // Run i: direct or through an agent; decided by its 2xx or by a callback.
    let run_file = |i: usize| {
        let network = match i % 4 {
            0 | 1 => "networkMode: direct".to_owned(),
            2 => "networkMode: remoteNetworkAgent\n    agentIdentifier: east".to_owned(),
            _ => "networkMode: remoteNetworkAgent\n    agentIdentifier: west".to_owned(),
        };
        let (path, callbacks) = if i.is_multiple_of(2) { ("pass", "false") } else { ("silent", "true") };
        format!(
            "webhooks:
  - name: job
    method: POST
    uriTemplate: http://{system_addr}/{path}/run-{i}
    {network}
    retryCount: 5
    disableCallback: {callbacks}
    headers:
      - key: Location
        value: '{{{{armory.callbackUri}}}}/callback'
"
        )
    };
    let start_runs = |range: std::ops::Range<usize>| {
        let base = base.clone();
        stream::iter(range)
            .map(move |i| {
                let (base, body) = (base.clone(), serde_json::json!({ "file": run_file(i), "name": "job" }));
                async move {
                    let key = format!("run-{i}");
                    let run =
                        api_retrying(&base, reqwest::Method::POST, "/api/v1/webhook-runs", Some(body), Some(&key))
                            .await;
                    run["id"].as_str().unwrap().to_owned()
                }
            })
            .buffer_unordered(16)
            .collect::<Vec<String>>()
    };
    let mut runs = start_runs(0..RUNS / 3).await;
    // The first replica dies.
    drop(cluster.replicas.remove(0));
    runs.extend(start_runs(RUNS / 3..2 * RUNS / 3).await);
    // The second dies and comes back on the same addresses.
    let second = cluster.replicas.remove(0).kill_and_restart();
    cluster.replicas.insert(0, second);
    runs.extend(start_runs(2 * RUNS / 3..RUNS).await);
    assert_eq!(runs.len(), RUNS);

    for id in &deployments {
        eventually(&format!("deployment {id} waits for approval"), Duration::from_secs(60), || async {
            let d = api_retrying(&base, reqwest::Method::GET, &format!("/api/v1/deployments/{id}"), None, None).await;
            (d["pendingApprovals"] == serde_json::json!(["staging"])).then_some(())
        })
        .await;
        let path = format!("/api/v1/deployments/{id}/targets/staging/approve");
        api_retrying(&base, reqwest::Method::POST, &path, None, None).await;
    }

    // Every run ends. A callback the external system sent as its replica
    // died is sent again, as a real system retries (a repeat of the same
    // verdict is accepted).
    for id in &runs {
        let done = eventually(&format!("run {id} ends"), Duration::from_secs(120), || async {
            let path = format!("/api/v1/webhook-runs/{id}?wait=5s");
            let run: WebhookRun = typed(api_retrying(&base, reqwest::Method::GET, &path, None, None).await);
            match run.state {
                RunState::Pending | RunState::Calling => None,
                RunState::AwaitingCallback => {
                    let uri = format!("{}/callback", run.callback_uri.as_deref().unwrap());
                    system.call_back(&uri, serde_json::json!({ "success": true, "mdMessage": "again" })).await;
                    None
                }
                _ => Some(run),
            }
        })
        .await;
        assert_eq!(done.state, RunState::Succeeded, "{done:#?}");
    }
    // No attempt was called twice; every run was called.
    let mut calls: HashMap<(String, String), usize> = HashMap::new();
    for call in system.received() {
        let header = |name: &str| call.headers.get(name).and_then(|v| v.to_str().ok()).unwrap_or_default().to_owned();
        if call.uri.contains("/run-") {
            *calls.entry((header("webhook-id"), header("borealis-attempt"))).or_default() += 1;
        }
    }
    let twice: Vec<_> = calls.iter().filter(|(_, n)| **n > 1).collect();
    assert!(twice.is_empty(), "attempts called more than once: {twice:?}");
    for id in &runs {
        assert!(calls.keys().any(|(run, _)| run == id), "run {id} was never called");
    }
    for (k, id) in deployments.iter().enumerate() {
        let path = format!("/api/v1/deployments/{id}?wait=30s");
        let done: Deployment = typed(api_retrying(&base, reqwest::Method::GET, &path, None, None).await);
        let expected = if k.is_multiple_of(2) { DeploymentState::Succeeded } else { DeploymentState::Failed };
        assert_eq!(done.state, expected, "deployment {k}: {done:#?}");
    }
    // The dead replicas' deployments were taken over.
    let took_over = cluster.replicas.iter().any(|r| r.log_line(&["resuming deployment (its lease lapsed)"]).is_some());
    assert!(took_over, "no live replica took a deployment over");
    // Every agent that lost its replica was connected again within 5 s, by
    // its own log; and each serves through the balancer now.
    let mut losses = 0;
    for agent in &agents {
        let lines = agent.log_lines(&[]);
        for (n, line) in lines.iter().enumerate() {
            if !line.contains("session ended") {
                continue;
            }
            losses += 1;
            let lost = borealis_tests::log_time(line);
            let back = lines[n..]
                .iter()
                .find(|l| l.contains("connected to the relay"))
                .unwrap_or_else(|| panic!("the agent never came back after {line}"));
            let gap = borealis_tests::between(lost, borealis_tests::log_time(back));
            assert!(gap <= Duration::from_secs(5), "reconnected {gap:?} after losing its replica: {line} / {back}");
        }
    }
    assert!(losses > 0, "no agent instance was on a replica that died");
    for id in ["east", "west"] {
        let (status, body) = proxy_get(&base, id, &format!("http://{system_addr}/pass/hello")).await;
        assert!(status == 202 || status == 200, "{id}: {status} {body}");
    }
}

/// A revocation made through one replica reaches the others at once: the
/// agent's session on another replica ends, and a callback client's token
/// is refused there (it no longer counts as live).
#[tokio::test(flavor = "multi_thread")]
async fn a_revocation_through_one_replica_holds_on_the_others() {
    let schema = Schema::new();
    let public_url = format!("http://{}", free_port());
    let (one, two) = (replica(&schema, 1, &public_url), replica(&schema, 2, &public_url));
    let (agent_client, agent_secret) = one.create_agent("rna");
    let mut agent = AgentProcess::start(&one.agents_url, &agent_client, &agent_secret, &["--allow", "127.0.0.0/8"]);
    agent.wait_connected(Duration::from_secs(30)).await;
    let (client_id, client_secret) = one.create_client("ci");
    let (_, system) = borealis_tests::external::start(&one.http_url, &client_id, &client_secret).await;
    let callback = format!("{}/callbacks/no-such-run/callback", one.http_url);
    // Live: the token is taken (and the unknown run is a 404).
    let early_token = system.token().await;
    let post = |token: String| {
        let callback = callback.clone();
        async move {
            let body = serde_json::json!({ "success": true });
            client().post(&callback).bearer_auth(token).json(&body).send().await.unwrap().status().as_u16()
        }
    };
    assert_eq!(post(early_token.clone()).await, 404);

    let out = two.cli().args(["clients", "revoke", "ci"]).run();
    assert!(out.status.success(), "{}", out.stderr_text());
    let out = two.cli().args(["agents", "revoke", "rna"]).run();
    assert!(out.status.success(), "{}", out.stderr_text());
    // Replica 1 ends the session; the agent, refused a new token, exits.
    let exited = agent.wait_exit(Duration::from_secs(30)).expect("the revoked agent exits");
    assert!(!exited.success());
    assert!(one.log_line(&["ended sessions of revoked agent credentials"]).is_some(), "replica 1 ended the session");
    let (_, token) = borealis_tests::token_reply(&one.http_url, &client_id, &client_secret).await;
    assert!(token.get("access_token").is_none(), "a revoked client gets no token: {token}");
    // A token issued before the revocation is refused on replica 1 too.
    eventually("replica 1 refuses the revoked client's callback", Duration::from_secs(30), || async {
        (post(early_token.clone()).await == 401).then_some(())
    })
    .await;
}

/// An abort asked through one replica stops the deployment another runs:
/// the holder hears of it, cancels the approval it waits for, and ends it.
#[tokio::test(flavor = "multi_thread")]
async fn an_abort_through_one_replica_stops_the_deployment_another_runs() {
    let schema = Schema::new();
    let public_url = format!("http://{}", free_port());
    let (one, two) = (replica(&schema, 1, &public_url), replica(&schema, 2, &public_url));
    let file = "application: shop
targets:
  prod:
    constraints:
      beforeDeployment:
        - pause:
            untilApproved: true
";
    let created =
        api(&one.http_url, reqwest::Method::POST, "/api/v1/deployments", Some(serde_json::json!({ "file": file })))
            .await;
    let id = created["id"].as_str().unwrap().to_owned();
    eventually("prod waits for approval", Duration::from_secs(30), || async {
        let d: Deployment = one.get_as(&format!("/api/v1/deployments/{id}")).await;
        (d.pending_approvals == ["prod"]).then_some(())
    })
    .await;

    let out = two.cli().args(["--json", "abort", &id, "--reason", "wrong version"]).run_async().await;
    assert!(out.status.success(), "{}", out.stderr_text());
    let done: Deployment = serde_json::from_str(&out.stdout_text()).unwrap();
    assert_eq!(done.state, DeploymentState::Aborted, "{done:#?}");
    assert_eq!(done.reason.as_deref(), Some("aborted by the bootstrap admin token: wrong version"));
    assert!(done.pending_approvals.is_empty(), "the approval was cancelled: {done:#?}");
    assert_eq!(done.targets[0].state, TargetState::Cancelled);
    // Replica 1 held it and ended it.
    assert!(one.log_line(&["deployment finished", &id]).is_some(), "replica 1 ended it");
}

/// A request that takes the hop to the replica holding the agent keeps its
/// deadline there (a stalled destination is a 504 at the caller's
/// timeout), and a caller that goes away cancels it all the way to the
/// destination's connection.
#[tokio::test(flavor = "multi_thread")]
async fn deadlines_and_cancels_cross_the_peer_hop() {
    let schema = Schema::new();
    let public_url = format!("http://{}", free_port());
    let (holder, other) = (replica(&schema, 1, &public_url), replica(&schema, 2, &public_url));
    let (agent_client, agent_secret) = holder.create_agent("rna");
    let agent = AgentProcess::start(&holder.agents_url, &agent_client, &agent_secret, &["--allow", "127.0.0.0/8"]);
    agent.wait_connected(Duration::from_secs(30)).await;
    eventually("the other replica sees the session", Duration::from_secs(30), || async {
        (instances(&other.http_url, "rna").await.len() == 1).then_some(())
    })
    .await;
    let (upstream, _) = borealis_tests::servers::upstream().await;
    let proxy = |url: String, timeout: &str| {
        client()
            .get(format!("{}/api/v1/proxy", other.http_url))
            .query(&[("agent", "rna"), ("url", url.as_str()), ("timeout", timeout)])
            .bearer_auth(ADMIN_TOKEN)
            .send()
    };
    let reply = proxy(format!("http://{upstream}/stall"), "1s").await.unwrap();
    let status = reply.status().as_u16();
    let body = reply.text().await.unwrap();
    assert_eq!(status, 504, "{body}");
    // The holder's own timeout, not the forwarding replica's backstop.
    assert!(body.contains(r#"agent \"rna\" did not answer within 1s"#), "{body}");
    assert!(!body.contains("the replica holding"), "{body}");
    let hops = other.metric("borealis_peer_forwarded_requests_total{direction=\"sent\"}").await;
    assert!(hops >= 1.0, "the request took the hop");

    let (drip, mut closed) = borealis_tests::servers::drip().await;
    let mut reply = proxy(format!("http://{drip}/"), "60s").await.unwrap();
    assert_eq!(reply.status(), 200);
    let first = reply.chunk().await.unwrap();
    assert!(first.is_some(), "the stream started");
    drop(reply);
    tokio::time::timeout(borealis_tests::PATIENCE, closed.recv())
        .await
        .expect("the destination's connection closes once the caller went away");
    drop(agent);
}

/// A replica that hangs (SIGSTOP: the kernel still accepts its connections,
/// so a TCP check passes) is taken out of both groups by the balancer's
/// `GET /readyz` check: every request on a new connection through the
/// balancer is answered meanwhile, and an agent connecting reaches a replica
/// that runs. Once it runs again it is back in both groups.
#[tokio::test(flavor = "multi_thread")]
async fn a_hung_replica_is_taken_out_by_the_balancers_ready_check() {
    let cluster = Cluster::start();
    let pid = cluster.replicas[0].pid().to_string();
    let signal = |name: &str| {
        let status = std::process::Command::new("kill").args([name, pid.as_str()]).status().unwrap();
        assert!(status.success(), "kill {name} {pid}");
    };
    /// Lets the replica run again however the test ends.
    struct Resume(String);
    impl Drop for Resume {
        fn drop(&mut self) {
            let _ = std::process::Command::new("kill").args(["-CONT", self.0.as_str()]).status();
        }
    }
    let _resume = Resume(pid.clone());
    signal("-STOP");
    let down = |log: &str, server: &str| log.lines().any(|l| l.contains(server) && l.contains("is DOWN"));
    eventually("the balancer takes the stopped replica out of both groups", Duration::from_secs(30), || async {
        let log = cluster.balancer.log();
        (down(&log, "http/s0") && down(&log, "agents/s0")).then_some(())
    })
    .await;
    // A new connection each time, as a balancer's clients make them; the
    // client's timeout is only there to fail a request that hangs.
    let fresh = reqwest::Client::builder()
        .no_proxy()
        .pool_max_idle_per_host(0)
        .timeout(borealis_tests::PATIENCE)
        .build()
        .unwrap();
    for _ in 0..30 {
        let reply = fresh
            .get(format!("{}/api/v1/agents", cluster.http()))
            .bearer_auth(ADMIN_TOKEN)
            .send()
            .await
            .expect("a request through the balancer met the stopped replica");
        assert_eq!(reply.status(), 200);
    }
    let (client_id, secret) = cluster.create_agent("while-hung");
    let agent = AgentProcess::start(&cluster.balancer.url("agents"), &client_id, &secret, &["--allow", "127.0.0.0/8"]);
    agent.wait_connected(Duration::from_secs(30)).await;
    signal("-CONT");
    let up =
        |log: &str, server: &str| log.lines().rev().find(|l| l.contains(server)).is_some_and(|l| l.contains("is UP"));
    eventually("the replica is back in both groups", Duration::from_secs(30), || async {
        let log = cluster.balancer.log();
        (up(&log, "http/s0") && up(&log, "agents/s0")).then_some(())
    })
    .await;
    drop(agent);
}

/// `uri` (a callback URI naming the balancer's address) on replica `base`.
fn on(base: &str, uri: &str) -> String {
    let path = uri.split("://").nth(1).and_then(|rest| rest.find('/').map(|i| &rest[i..])).unwrap_or("/");
    format!("{base}{path}")
}

/// Starts webhook `job` of `file` on replica `base`; its id.
async fn start_job(base: &str, file: String) -> String {
    let body = serde_json::json!({ "file": file, "name": "job" });
    let run = api(base, reqwest::Method::POST, "/api/v1/webhook-runs", Some(body)).await;
    run["id"].as_str().unwrap().to_owned()
}

/// The first request `external` received, once it has one.
async fn first_request(external: &borealis_tests::external::External) -> borealis_tests::external::Received {
    eventually("the destination has the request", Duration::from_secs(30), || async {
        external.received().into_iter().next()
    })
    .await
}

/// The webhook run `id` as `base` shows it, with its attempt log.
async fn run_view(base: &str, id: &str) -> borealis_api::WebhookRun {
    let run = api(base, reqwest::Method::GET, &format!("/api/v1/webhook-runs/{id}"), None).await;
    serde_json::from_value(run).expect("the API's WebhookRun")
}

/// A reply read as the API's type `T`.
fn typed<T: serde::de::DeserializeOwned>(reply: serde_json::Value) -> T {
    serde_json::from_value(reply).expect("a reply of the API's type")
}

/// The error recorded for the first attempt of `run`, if any.
fn first_error(run: &borealis_api::WebhookRun) -> &str {
    run.attempt_log.as_deref().and_then(|log| log.first()).and_then(|a| a.error.as_deref()).unwrap_or_default()
}

/// The replica holding the only agent instance loses its database link
/// for 60 s (twenty leases): it asks the agent to connect elsewhere, the
/// agent is served through the other replicas within 5 s of the cut, no
/// run acknowledged meanwhile fails for want of it, and once the link is
/// back every replica reaches the agent again (the cut-off replica's
/// records were forgotten by the others meanwhile).
#[tokio::test(flavor = "multi_thread")]
async fn agents_leave_a_replica_that_lost_its_database_and_all_reach_them_after() {
    let schema = Schema::new();
    let links = [Cuttable::start().await, Cuttable::start().await, Cuttable::start().await];
    let fronts = [free_port(), free_port()];
    let public_url = format!("http://{}", fronts[0]);
    let replicas: Vec<RelayProcess> = links
        .iter()
        .enumerate()
        .map(|(i, link)| replica_on(&link.through(&schema.database_url()), &format!("relay-{}", i + 1), &public_url))
        .collect();
    let checks: Vec<SocketAddr> = replicas.iter().map(|r| addr(&r.http_url)).collect();
    let balancer = Balancer::start_replicas(
        &[("http", checks.clone()), ("agents", replicas.iter().map(|r| addr(&r.agents_url)).collect())],
        &fronts,
        &checks,
    );
    let cli =
        borealis_tests::cli().env("BOREALIS_RELAY", &balancer.url("http")).env("BOREALIS_ADMIN_TOKEN", ADMIN_TOKEN);
    let (client_id, secret) = create_credentials(cli, "agents", "rna");
    let agent = AgentProcess::start(&balancer.url("agents"), &client_id, &secret, &["--allow", "127.0.0.0/8"]);
    agent.wait_connected(Duration::from_secs(30)).await;
    let holder = eventually("every replica lists the instance", Duration::from_secs(30), || async {
        let mut holders = Vec::new();
        for relay in &replicas {
            holders.extend(instances(&relay.http_url, "rna").await.into_iter().map(|(_, replica)| replica));
        }
        (holders.len() == 3 && holders.iter().all(|h| *h == holders[0])).then(|| holders[0].clone())
    })
    .await;
    let cut = holder.trim_start_matches("relay-").parse::<usize>().unwrap() - 1;
    let others: Vec<&RelayProcess> = replicas.iter().enumerate().filter(|(i, _)| *i != cut).map(|(_, r)| r).collect();
    let probe = destination().await;
    let counter = Counter::default();
    let hook = counter.start().await;

    // Runs through the balancer all along, every 100 ms (at most 1 500).
    let body = serde_json::json!({
        "file": format!("webhooks:\n  - name: job\n    method: POST\n    uriTemplate: http://{hook}/hook\n    networkMode: remoteNetworkAgent\n    agentIdentifier: rna\n    retryCount: 3\n    disableCallback: true\n"),
        "name": "job",
    });
    let loading = tokio_util::sync::CancellationToken::new();
    let load = tokio::spawn({
        let (base, stop) = (balancer.url("http"), loading.clone());
        async move {
            let mut acknowledged = Vec::new();
            for _ in 0..1500 {
                if stop.is_cancelled() {
                    break;
                }
                let reply = client()
                    .post(format!("{base}/api/v1/webhook-runs"))
                    .bearer_auth(ADMIN_TOKEN)
                    .json(&body)
                    .timeout(Duration::from_secs(10))
                    .send()
                    .await;
                if let Ok(reply) = reply
                    && reply.status() == 201
                {
                    let run: serde_json::Value = reply.json().await.unwrap();
                    acknowledged.push(run["id"].as_str().unwrap().to_owned());
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            acknowledged
        }
    });
    tokio::time::sleep(Duration::from_secs(2)).await;

    links[cut].cut();
    let cut_at = std::time::Instant::now();
    for relay in &others {
        eventually("the agent is served through the other replicas", Duration::from_secs(10), || async {
            let (status, _) = proxy_get(&relay.http_url, "rna", &format!("http://{probe}/probe")).await;
            (status == 200).then_some(())
        })
        .await;
    }
    let served_after = cut_at.elapsed();
    assert!(served_after <= Duration::from_secs(5), "the agent was away for {served_after:?} after the cut");
    replicas[cut].wait_log_line(&["asking this replica's agents to connect to another replica"]).await;

    tokio::time::sleep(Duration::from_secs(60).saturating_sub(cut_at.elapsed())).await;
    links[cut].restore();
    eventually("the cut-off replica is ready again", Duration::from_secs(30), || async {
        ready(&replicas[cut].http_url).await.then_some(())
    })
    .await;
    for relay in &replicas {
        eventually(
            &format!("{} reaches the agent after the heal", relay.http_url),
            Duration::from_secs(30),
            || async {
                let (status, _) = proxy_get(&relay.http_url, "rna", &format!("http://{probe}/after")).await;
                (status == 200 && instances(&relay.http_url, "rna").await.len() == 1).then_some(())
            },
        )
        .await;
    }
    loading.cancel();
    let acknowledged = load.await.unwrap();
    assert!(acknowledged.len() > 300, "only {} runs were acknowledged", acknowledged.len());
    for id in &acknowledged {
        let path = format!("/api/v1/webhook-runs/{id}?wait=30s");
        let run: WebhookRun = typed(api(&balancer.url("http"), reqwest::Method::GET, &path, None).await);
        assert_eq!(run.state, RunState::Succeeded, "an acknowledged run failed: {run:#?}");
        assert!(counter.calls(id) >= 1, "run {id} was never called");
    }
    drop(agent);
}

/// Every agent lands on the one replica the balancer has while the others
/// hang; once they run again, that replica asks some agents to move (its
/// share is a third), and each replica ends up holding one.
#[tokio::test(flavor = "multi_thread")]
async fn agents_spread_over_the_replicas_when_they_come_back() {
    let cluster = Cluster::start();
    let pids: Vec<String> = cluster.replicas[1..].iter().map(|r| r.pid().to_string()).collect();
    let signal = |name: &str| {
        for pid in &pids {
            let status = std::process::Command::new("kill").args([name, pid.as_str()]).status().unwrap();
            assert!(status.success(), "kill {name} {pid}");
        }
    };
    /// Lets the replicas run again however the test ends.
    struct Resume(Vec<String>);
    impl Drop for Resume {
        fn drop(&mut self) {
            for pid in &self.0 {
                let _ = std::process::Command::new("kill").args(["-CONT", pid.as_str()]).status();
            }
        }
    }
    let _resume = Resume(pids.clone());
    signal("-STOP");
    let down = |log: &str, server: &str| log.lines().any(|l| l.contains(server) && l.contains("is DOWN"));
    eventually("the balancer takes the stopped replicas out", Duration::from_secs(30), || async {
        let log = cluster.balancer.log();
        ["http/s1", "http/s2", "agents/s1", "agents/s2"].iter().all(|server| down(&log, server)).then_some(())
    })
    .await;
    let (client_id, secret) = cluster.create_agent("spread");
    let mut agents = Vec::new();
    for n in 1..=3 {
        let name = format!("spread-{n}");
        let agent = AgentProcess::start(
            &cluster.balancer.url("agents"),
            &client_id,
            &secret,
            &["--allow", "127.0.0.0/8", "--instance", &name],
        );
        agent.wait_connected(Duration::from_secs(30)).await;
        agents.push(agent);
    }
    let listed = instances(&cluster.replicas[0].http_url, "spread").await;
    assert!(listed.len() == 3 && listed.iter().all(|(_, r)| r == "relay-1"), "{listed:?}");

    signal("-CONT");
    let spread = eventually("each replica holds one agent instance", Duration::from_secs(90), || async {
        let listed = instances(&cluster.replicas[0].http_url, "spread").await;
        let holders: std::collections::BTreeSet<String> = listed.iter().map(|(_, r)| r.clone()).collect();
        (listed.len() == 3 && holders.len() == 3).then_some(listed)
    })
    .await;
    assert!(
        cluster.replicas[0].log_line(&["holds more than its share of agent sessions"]).is_some(),
        "relay-1 asked agents to move: {spread:?}"
    );
    // Every replica still reaches the agent.
    let probe = destination().await;
    for relay in &cluster.replicas {
        let (status, body) = proxy_get(&relay.http_url, "spread", &format!("http://{probe}/x")).await;
        assert_eq!(status, 200, "{body}");
    }
    drop(agents);
}

/// A call through the replica holding the agent, which dies once the
/// destination has the request: the attempt is recorded as cut off (not as
/// "not connected"), and the run, with no retries left, waits for its
/// callback, which then decides it.
#[tokio::test(flavor = "multi_thread")]
async fn a_hop_cut_off_after_the_request_left_leaves_the_run_to_its_callback() {
    let schema = Schema::new();
    let public_url = format!("http://{}", free_port());
    let caller = replica(&schema, 1, &public_url);
    // Looks for due work seldom, so the replica the run is created on claims it.
    let holder = replica_polling(&schema.database_url(), "relay-2", &public_url, "3s");
    let (client_id, secret) = caller.create_agent("rna");
    let agent = AgentProcess::start(&holder.agents_url, &client_id, &secret, &["--allow", "127.0.0.0/8"]);
    agent.wait_connected(Duration::from_secs(30)).await;
    eventually("the caller finds the instance on the holder", Duration::from_secs(30), || async {
        instances(&caller.http_url, "rna").await.iter().any(|(_, r)| r == "relay-2").then_some(())
    })
    .await;
    let (hook, external) = caller.external_system().await;
    let file = format!(
        "webhooks:\n  - name: job\n    method: POST\n    uriTemplate: http://{hook}/hang\n    networkMode: remoteNetworkAgent\n    agentIdentifier: rna\n    retryCount: 0\n    bodyTemplate:\n      inline: '{{\"callbackUri\": \"{{{{armory.callbackUri}}}}\"}}'\n"
    );
    let id = start_job(&caller.http_url, file).await;
    let received = first_request(&external).await;
    holder.kill();
    let waiting = eventually("the attempt is recorded", Duration::from_secs(30), || async {
        let run = run_view(&caller.http_url, &id).await;
        (run.state != RunState::Calling).then_some(run)
    })
    .await;
    assert_eq!(waiting.state, RunState::AwaitingCallback, "{waiting:#?}");
    let error = first_error(&waiting);
    assert!(error.contains("went away after the request was sent"), "{waiting:#?}");
    assert!(!error.contains("not sent"), "{waiting:#?}");

    let callback = on(&caller.http_url, &received.callback_uri.expect("the request names its callback URI"));
    let reply = external.call_back(&format!("{callback}/callback"), serde_json::json!({ "success": true })).await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    let done = caller.wait_run(&id).await;
    assert_eq!(done.state, RunState::Succeeded, "{done:#?}");
    assert_eq!(done.attempts, 1, "{done:#?}");
    drop(agent);
}

/// A replica claims a run and stops before sending it (its write of the
/// request is held in the database, and it is killed meanwhile): the
/// replica that takes the run over records the attempt as not sent and
/// retries it, so the destination is called once and the run succeeds.
#[tokio::test(flavor = "multi_thread")]
async fn a_run_claimed_but_never_sent_is_retried() {
    let schema = Schema::new();
    let public_url = format!("http://{}", free_port());
    let first = replica(&schema, 1, &public_url);
    let counter = Counter::default();
    let hook = counter.start().await;
    // Holds the first write of a request for 3 s, then fails it.
    schema.sql(
        "CREATE FUNCTION hold_request() RETURNS trigger LANGUAGE plpgsql AS $$ \
         BEGIN PERFORM pg_sleep(3); RAISE EXCEPTION 'held by the test'; END $$; \
         CREATE TRIGGER hold BEFORE UPDATE OF request ON webhook_runs FOR EACH ROW \
         WHEN (NEW.request IS DISTINCT FROM OLD.request) EXECUTE FUNCTION hold_request();",
    );
    let file = format!(
        "webhooks:\n  - name: job\n    method: POST\n    uriTemplate: http://{hook}/hook\n    networkMode: direct\n    retryCount: 1\n    disableCallback: true\n"
    );
    let id = start_job(&first.http_url, file).await;
    eventually("the replica is writing the request", Duration::from_secs(30), || async {
        // Held in the trigger's sleep: an idle connection of another relay
        // (this server's activity view covers every database) shows the
        // same statement as its last.
        let held = schema.sql(
            "SELECT count(*) FROM pg_stat_activity WHERE query LIKE 'UPDATE webhook_runs SET request%' \
             AND state = 'active' AND wait_event = 'PgSleep'",
        );
        (held != "0").then_some(())
    })
    .await;
    first.kill();
    // Waits for the held write to fail, then lets requests be written.
    tokio::task::block_in_place(|| schema.sql("DROP TRIGGER hold ON webhook_runs"));
    let second = replica(&schema, 2, &public_url);
    let done = second.wait_run(&id).await;
    assert_eq!(done.state, RunState::Succeeded, "{done:#?}");
    assert_eq!(counter.calls(&id), 1, "called once: {done:#?}");
    let log = done.attempt_log.as_deref().unwrap();
    assert_eq!(log.len(), 2, "{done:#?}");
    assert!(log[0].error.as_deref().unwrap_or_default().starts_with("not sent"), "{done:#?}");
    assert_eq!(log[1].status, Some(200), "{done:#?}");
}

/// The callback decides a run while its attempt is under way, and the
/// replica making the call dies before recording it: the replica that takes
/// the lapsed lease over records the attempt, so the run shows the call
/// that was made.
#[tokio::test(flavor = "multi_thread")]
async fn a_run_decided_by_its_callback_shows_the_attempt_its_dead_replica_made() {
    let schema = Schema::new();
    let public_url = format!("http://{}", free_port());
    let first = replica(&schema, 1, &public_url);
    let (hook, external) = first.external_system().await;
    let file = format!(
        "webhooks:\n  - name: job\n    method: POST\n    uriTemplate: http://{hook}/hang\n    networkMode: direct\n    bodyTemplate:\n      inline: '{{\"callbackUri\": \"{{{{armory.callbackUri}}}}\"}}'\n"
    );
    let id = start_job(&first.http_url, file).await;
    let received = first_request(&external).await;
    // Started once the first replica is making the call: started before, it
    // could claim the run's first attempt itself.
    let other = replica_polling(&schema.database_url(), "relay-2", &public_url, "3s");
    let callback = on(&other.http_url, &received.callback_uri.expect("the request names its callback URI"));
    let reply = external.call_back(&format!("{callback}/callback"), serde_json::json!({ "success": true })).await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    first.kill();
    let shown = eventually("the attempt is recorded", Duration::from_secs(30), || async {
        let run = run_view(&other.http_url, &id).await;
        run.attempt_log.as_ref().is_some_and(|log| !log.is_empty()).then_some(run)
    })
    .await;
    assert_eq!(shown.state, RunState::Succeeded, "{shown:#?}");
    assert_eq!(shown.attempts, 1, "{shown:#?}");
    assert!(first_error(&shown).contains("the run was decided meanwhile"), "{shown:#?}");
}

/// libfaketime's library for threaded programs (Debian's `faketime` package).
fn libfaketime() -> String {
    let found = std::fs::read_dir("/usr/lib")
        .unwrap()
        .filter_map(|entry| Some(entry.ok()?.path().join("faketime/libfaketimeMT.so.1")))
        .find(|path| path.exists());
    found.expect("libfaketime is installed (Debian's faketime package; .ci/run installs it)").display().to_string()
}

/// The deployments and the attempts `relay` took over from another replica.
async fn takeovers(relay: &RelayProcess) -> (f64, f64) {
    let deployments = relay.metric("borealis_claims_total{kind=\"deployment\"}").await;
    (deployments, relay.metric("borealis_claims_total{kind=\"takeover\"}").await)
}

/// A replica whose clock runs 20 s ahead of the database's (libfaketime)
/// reads leases on the database's clock: while their owner lives, it takes
/// over neither a deployment waiting for approval nor a call under way;
/// once the owner dies, it takes both over.
#[tokio::test(flavor = "multi_thread")]
async fn a_replica_whose_clock_runs_ahead_takes_over_no_lease_early() {
    let schema = Schema::new();
    let public_url = format!("http://{}", free_port());
    let owner = replica(&schema, 1, &public_url);
    let deployment = "application: shop\ntargets:\n  staging:\n    constraints:\n      beforeDeployment:\n        - pause:\n            untilApproved: true\n";
    let created = api(
        &owner.http_url,
        reqwest::Method::POST,
        "/api/v1/deployments",
        Some(serde_json::json!({ "file": deployment })),
    )
    .await;
    let deployment_id = created["id"].as_str().unwrap().to_owned();
    let (hook, external) = owner.external_system().await;
    let file = format!(
        "webhooks:\n  - name: job\n    method: POST\n    uriTemplate: http://{hook}/hang\n    networkMode: direct\n    retryCount: 0\n"
    );
    let run_id = start_job(&owner.http_url, file).await;
    first_request(&external).await;

    let mut options = replica_options(&schema.database_url(), "relay-ahead", &public_url, "250ms");
    // Preloaded into the relay itself (the `faketime` command forks, so the
    // relay would outlive the test's kill).
    options.env.extend([
        ("LD_PRELOAD".into(), libfaketime()),
        ("FAKETIME".into(), "+20".into()),
        ("FAKETIME_DONT_FAKE_MONOTONIC".into(), "1".into()),
    ]);
    let ahead = RelayProcess::start(options);
    ahead.wait_log_line(&["differs from the database's"]).await;
    // Four leases of 3 s: an early takeover would have happened by now.
    tokio::time::sleep(Duration::from_secs(12)).await;
    assert_eq!(takeovers(&ahead).await, (0.0, 0.0), "{}", ahead.log());
    let waiting =
        api(&owner.http_url, reqwest::Method::GET, &format!("/api/v1/deployments/{deployment_id}"), None).await;
    assert_eq!(waiting["pendingApprovals"], serde_json::json!(["staging"]), "{waiting:#}");
    assert_eq!(run_view(&owner.http_url, &run_id).await.state, RunState::Calling);

    owner.kill();
    eventually("the replica ahead takes both over once their leases lapse", Duration::from_secs(30), || async {
        (takeovers(&ahead).await == (1.0, 1.0)).then_some(())
    })
    .await;
    // The takeover is counted as it starts; the attempt's record follows.
    let run = eventually("the attempt taken over is recorded", Duration::from_secs(10), || async {
        let run = run_view(&ahead.http_url, &run_id).await;
        run.attempt_log.as_ref().is_some_and(|log| !log.is_empty()).then_some(run)
    })
    .await;
    assert!(first_error(&run).contains("cut off"), "{run:#?}");
}
