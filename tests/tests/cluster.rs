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
use borealis_tests::balancer::{Balancer, free_port};
use borealis_tests::postgres::Schema;
use borealis_tests::process::OutputText;
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
    RelayProcess::start(RelayOptions {
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
            "250ms",
            // Behind the balancer every connection comes from one address.
            "--max-connections-per-peer",
            "10000",
        ]
        .map(String::from)
        .to_vec(),
        env: vec![
            ("BOREALIS_ADMIN_TOKEN".into(), ADMIN_TOKEN.into()),
            ("BOREALIS_SECRET_KEY".into(), SECRET_KEY.into()),
        ],
        ..Default::default()
    })
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
        let balancer = Balancer::start_on(
            &[
                ("http", replicas.iter().map(|r| addr(&r.http_url)).collect()),
                ("agents", replicas.iter().map(|r| addr(&r.agents_url)).collect()),
            ],
            &fronts,
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
        let out = self.cli().args(["agents", "create", id]).run();
        assert!(out.status.success(), "agents create {id}: {}", out.stderr_text());
        let text = out.stdout_text();
        let value = |key: &str| text.lines().find_map(|l| l.strip_prefix(&format!("{key}: "))).unwrap().to_owned();
        (value("client_id"), value("client_secret"))
    }

    /// The instances of `agent` as replica `base` lists them: (instance, replica).
    async fn instances(&self, base: &str, agent: &str) -> Vec<(String, String)> {
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
    let mut agents = Vec::new();
    for id in ["east", "west"] {
        let (client_id, secret) = cluster.create_agent(id);
        for n in 1..=2 {
            let name = format!("{id}-{n}");
            let agent = AgentProcess::start(
                &cluster.balancer.url("agents"),
                &client_id,
                &secret,
                &["--allow", "127.0.0.0/8", "--instance", &name],
            );
            agent.wait_connected(Duration::from_secs(30)).await;
            agents.push(agent);
        }
    }
    // Every replica lists all four instances, each with the replica holding it.
    let mut holders = HashMap::new();
    for relay in &cluster.replicas {
        for id in ["east", "west"] {
            let listed = eventually(
                &format!("{} lists both instances of {id}", relay.http_url),
                Duration::from_secs(30),
                || async {
                    let listed = cluster.instances(&relay.http_url, id).await;
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
    dependsOn: [staging]
    constraints:
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
    let (client_id, secret) = {
        let out = cluster.cli().args(["clients", "create", "ci"]).run();
        assert!(out.status.success(), "{}", out.stderr_text());
        let text = out.stdout_text();
        let value = |key: &str| text.lines().find_map(|l| l.strip_prefix(&format!("{key}: "))).unwrap().to_owned();
        (value("client_id"), value("client_secret"))
    };
    let token: serde_json::Value = client()
        .post(format!("{base}/oauth/token"))
        .form(&[("grant_type", "client_credentials"), ("client_id", &client_id), ("client_secret", &secret)])
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let token = token["access_token"].as_str().unwrap().to_owned();
    for (id, callback) in &started {
        let run = eventually(&format!("run {id} was called"), Duration::from_secs(60), || async {
            let run = api(&base, reqwest::Method::GET, &format!("/api/v1/webhook-runs/{id}"), None).await;
            let state = run["state"].as_str().unwrap_or_default().to_owned();
            (state != "pending" && state != "calling").then_some(run)
        })
        .await;
        if *callback {
            let uri = format!("{}/callback", run["callbackUri"].as_str().unwrap());
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
        let run = api(&base, reqwest::Method::GET, &format!("/api/v1/webhook-runs/{id}?wait=30s"), None).await;
        assert_eq!(run["state"], "succeeded", "{run:#}");
        let attempts = run["attempts"].as_u64().unwrap() as u32;
        let calls = counter.calls(id);
        assert!(calls >= 1 && calls <= attempts, "run {id}: {calls} calls for {attempts} attempts: {run:#}");
    }
    let done = api(&base, reqwest::Method::GET, &format!("/api/v1/deployments/{deployment_id}?wait=30s"), None).await;
    assert_eq!(done["state"], "succeeded", "{done:#}");
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

    link.cut();
    eventually("the cut-off replica reports not ready", Duration::from_secs(30), || async {
        (!ready(&cut_off.http_url).await).then_some(())
    })
    .await;
    let before = claims().await;
    let mut ids = Vec::new();
    for _ in 0..RUNS {
        let run = api(&other.http_url, reqwest::Method::POST, "/api/v1/webhook-runs", Some(body.clone())).await;
        ids.push(run["id"].as_str().unwrap().to_owned());
    }
    for id in &ids {
        let run =
            api(&other.http_url, reqwest::Method::GET, &format!("/api/v1/webhook-runs/{id}?wait=30s"), None).await;
        assert_eq!(run["state"], "succeeded", "{run:#}");
    }
    assert_eq!(claims().await, before, "no claim while the database was away");
    assert!(ready(&other.http_url).await, "the other replica stayed ready");

    link.restore();
    eventually("the replica is ready again", Duration::from_secs(30), || async {
        ready(&cut_off.http_url).await.then_some(())
    })
    .await;
    for _ in 0..RUNS {
        let run = api(&cut_off.http_url, reqwest::Method::POST, "/api/v1/webhook-runs", Some(body.clone())).await;
        ids.push(run["id"].as_str().unwrap().to_owned());
    }
    for id in &ids {
        let run =
            api(&cut_off.http_url, reqwest::Method::GET, &format!("/api/v1/webhook-runs/{id}?wait=30s"), None).await;
        assert_eq!(run["state"], "succeeded", "{run:#}");
        assert_eq!(counter.calls(id), 1, "run {id} was called once: {run:#}");
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
