//! Secrets say where they may be used (issue 24, findings 4 and 5): what a
//! metric provider answers is scrubbed of its secrets like a webhook's
//! reply, a provider URL cannot hold credentials, a file cannot read the
//! relay's signing key nor a secret outside its marks, and a query's context
//! values stay inside their PromQL strings. Each against the real relay and
//! CLI, with small servers standing in for Prometheus and a webhook's
//! endpoint.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use borealis_api::{Deployment, DeploymentState, RunState};
use borealis_tests::console::Console;
use borealis_tests::process::OutputText;
use borealis_tests::{RelayOptions, RelayProcess, TempDir, eventually};
use serde_json::{Value, json};

/// The Standard Webhooks specification's example secret.
const SIGNING_KEY: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

fn relay(extra: &[&str]) -> RelayProcess {
    RelayProcess::start(RelayOptions {
        direct_allow: vec!["127.0.0.0/8".into()],
        extra_args: extra.iter().map(|s| s.to_string()).collect(),
        ..Default::default()
    })
}

async fn set_secret(relay: &RelayProcess, name: &str, value: &str, uses: &[&str]) {
    let mut args = vec!["secrets", "set", name];
    for use_ in uses {
        args.extend(["--use", use_]);
    }
    let out = relay.cli().args(args).stdin_text(value).run_async().await;
    assert!(out.status.success(), "{}", out.stderr_text());
}

async fn post(relay: &RelayProcess, path: &str, body: Value) -> (u16, Value) {
    let reply = reqwest::Client::new()
        .post(format!("{}{path}", relay.http_url))
        .bearer_auth(relay.admin_token())
        .json(&body)
        .send()
        .await
        .unwrap();
    (reply.status().as_u16(), reply.json().await.unwrap())
}

async fn get_text(relay: &RelayProcess, path: &str) -> String {
    let reply = reqwest::Client::new()
        .get(format!("{}{path}", relay.http_url))
        .bearer_auth(relay.admin_token())
        .send()
        .await
        .unwrap();
    reply.text().await.unwrap()
}

/// What a stand-in server was asked: each request's query parameter
/// `query` (if any) and its `Authorization` and `webhook-signature` headers.
#[derive(Clone, Default)]
struct Seen(Arc<Mutex<Vec<(String, String, String)>>>);

impl Seen {
    fn all(&self) -> Vec<(String, String, String)> {
        self.0.lock().unwrap().clone()
    }
}

/// A stand-in Prometheus: a query holding `echo` is refused with an error
/// that echoes the request's `Authorization` header, as a proxy in front of
/// one may; any other query is the number 1.
async fn prometheus(seen: Seen) -> std::net::SocketAddr {
    let router = axum::Router::new().fallback(move |uri: axum::http::Uri, headers: axum::http::HeaderMap| {
        let seen = seen.clone();
        async move {
            let query = url::form_urlencoded::parse(uri.query().unwrap_or_default().as_bytes())
                .find(|(k, _)| k == "query")
                .map(|(_, v)| v.into_owned())
                .unwrap_or_default();
            let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok()).unwrap_or_default().to_owned();
            let auth = header("authorization");
            seen.0.lock().unwrap().push((query.clone(), auth.clone(), header("webhook-signature")));
            if query.contains("echo") {
                let error = format!("unauthorized; the request had Authorization: {auth}");
                let body = json!({"status": "error", "errorType": "bad_data", "error": error});
                return (axum::http::StatusCode::BAD_REQUEST, body.to_string());
            }
            let body = json!({"status": "success", "data": {"resultType": "vector", "result": [{"metric": {}, "value": [1, "1"]}]}});
            (axum::http::StatusCode::OK, body.to_string())
        }
    });
    borealis_tests::servers::serve(router).await
}

/// A deployment of `application` whose one target first runs query
/// `query` against provider `fake`, once.
fn analysed(application: &str, query: &str) -> String {
    "application: APP
context:
  job: '\"} or vector(1) #'
targets:
  prod:
    constraints:
      beforeDeployment:
        - analysis:
            metricProviderName: fake
            interval: 1
            units: seconds
            numberOfJudgmentRuns: 1
            rollBackMode: automatic
            queries: [q]
analysis:
  queries:
    - name: q
      queryTemplate: 'QUERY'
      upperLimit: 10
"
    .replace("APP", application)
    .replace("QUERY", query)
}

/// Starts a deployment of `file`; returns its id, and the deployment once it
/// finished with the text `borealis --json deployments show` printed of it.
async fn deploy_and_finish(relay: &RelayProcess, file: &str) -> (String, Deployment, String) {
    let (status, created) = post(relay, "/api/v1/deployments", json!({ "file": file })).await;
    assert_eq!(status, 201, "{created:#}");
    let id = created["id"].as_str().unwrap().to_owned();
    let (done, text) = eventually("the deployment finishes", Duration::from_secs(60), || async {
        let out = relay.cli().args(["--json", "deployments", "show", &id]).run_async().await.stdout_text();
        let d: Deployment = serde_json::from_str(&out).ok()?;
        d.finished_at.is_some().then_some((d, out))
    })
    .await;
    (id, done, text)
}

/// The bytes of the relay's SQLite database and its journal files.
fn database_bytes(relay: &RelayProcess) -> String {
    let mut stored = Vec::new();
    for entry in std::fs::read_dir(relay.data_dir.path()).unwrap() {
        let path = entry.unwrap().path();
        if path.file_name().unwrap().to_string_lossy().starts_with("borealis.db") {
            stored.extend(std::fs::read(&path).unwrap());
        }
    }
    String::from_utf8_lossy(&stored).into_owned()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_providers_echoed_secret_appears_nowhere_and_its_queries_keep_context_values_in_their_strings() {
    let relay = relay(&[]);
    let seen = Seen::default();
    let addr = prometheus(seen.clone()).await;
    let token = "tok-5f0c1d9e-prom-only";
    set_secret(&relay, "prom_token", token, &["providers"]).await;
    let out = relay
        .cli()
        .args(["providers", "create", "fake", "--type", "prometheus", "--url", &format!("http://{addr}/")])
        .args(["--header", "Authorization: Bearer {{secrets.prom_token}}"])
        .run_async()
        .await;
    assert!(out.status.success(), "{}", out.stderr_text());

    // The provider echoes the header back in its error.
    let (id, done, shown) = deploy_and_finish(&relay, &analysed("echoed", "echo_metric")).await;
    assert_eq!(done.state, DeploymentState::Failed, "{done:#?}");
    let calls = seen.all();
    assert!(
        calls.iter().any(|(q, auth, _)| q == "echo_metric" && auth == &format!("Bearer {token}")),
        "a secret marked for providers is sent in a provider's header: {calls:?}"
    );
    assert!(
        shown.contains("answered HTTP 400: bad_data: unauthorized; the request had Authorization: Bearer ********"),
        "the error is stored, masked: {done:#?}"
    );
    let api = get_text(&relay, &format!("/api/v1/deployments/{id}")).await;
    let table = relay.cli().args(["deployments", "show", &id]).run_async().await.stdout_text();
    let console = Console::sign_in(&relay.http_url, &relay.admin_token()).await;
    let (status, page) = console.get(&format!("{}/deployments/{id}", relay.http_url)).await;
    assert_eq!(status, 200, "{page}");
    for (place, text) in [
        ("API", &api),
        ("CLI --json", &shown),
        ("CLI", &table),
        ("console", &page),
        ("log", &relay.log()),
        ("database", &database_bytes(&relay)),
    ] {
        assert!(!text.contains(token), "{place} shows the provider's secret");
    }

    // A context value cannot close the label's string and add a matcher.
    let (_, done, _) = deploy_and_finish(&relay, &analysed("escaped", "up{job=\"{{context.job}}\"}")).await;
    assert_eq!(done.state, DeploymentState::Succeeded, "{done:#?}");
    let queries: Vec<String> = seen.all().into_iter().map(|(q, _, _)| q).filter(|q| q.starts_with("up")).collect();
    assert_eq!(queries, [r#"up{job="\"} or vector(1) #"}"#], "the provider got the value escaped");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_provider_is_refused_credentials_in_its_url_and_secrets_not_marked_for_it() {
    let relay = relay(&["--webhook-signing-secret", "relay_sign"]);
    let (status, problem) = post(
        &relay,
        "/api/v1/metric-providers",
        json!({"name": "p", "type": "prometheus", "url": "https://scraper:hunter2@prom.example/"}),
    )
    .await;
    assert_eq!(status, 400, "{problem:#}");
    let detail = problem["detail"].as_str().unwrap();
    assert!(detail.contains("holds credentials") && detail.contains("header"), "{detail}");
    assert!(!problem.to_string().contains("hunter2"), "the refusal does not repeat the password: {problem:#}");
    let out = relay
        .cli()
        .args(["providers", "create", "p", "--type", "prometheus", "--url", "http://user@prom.example/"])
        .run_async()
        .await;
    assert!(!out.status.success() && out.stderr_text().contains("holds credentials"), "{}", out.stderr_text());

    // Headers read only secrets marked for providers, never the relay's key.
    set_secret(&relay, "hook_token", "for webhooks only", &[]).await;
    set_secret(&relay, "relay_sign", SIGNING_KEY, &["signing", "webhooks", "providers"]).await;
    for (secret, why) in [
        ("hook_token", "secret \"hook_token\" may not be used in metric providers (it is marked for webhooks)"),
        ("relay_sign", "secret \"relay_sign\" may not be used in metric providers (it is the relay's own signing key"),
    ] {
        let header = format!("Authorization: Bearer {{{{secrets.{secret}}}}}");
        let out = relay
            .cli()
            .args(["providers", "create", "p", "--type", "prometheus", "--url", "http://prom.example/"])
            .args(["--header", &header])
            .run_async()
            .await;
        assert!(!out.status.success(), "{}", out.stdout_text());
        assert!(out.stderr_text().contains(why), "{}", out.stderr_text());
    }
    let listed = get_text(&relay, "/api/v1/metric-providers").await;
    assert_eq!(serde_json::from_str::<Value>(&listed).unwrap()["providers"], json!([]), "{listed}");
}

/// A direct webhook to `addr` with `headers` and `signing` (YAML lines).
fn webhook_file(addr: std::net::SocketAddr, extra: &str) -> String {
    format!(
        "application: app
webhooks:
  - name: w
    method: POST
    uriTemplate: http://{addr}/hook
    networkMode: direct
    disableCallback: true
{extra}targets:
  prod:
    constraints:
      beforeDeployment:
        - runWebhook: {{name: w}}
"
    )
}

async fn refused_at_read(relay: &RelayProcess, file: &str, says: &str) {
    let (status, problem) = post(relay, "/api/v1/webhook-runs", json!({"file": file, "name": "w"})).await;
    assert_eq!(status, 400, "a webhook run: {problem:#}");
    assert!(problem["detail"].as_str().unwrap().contains(says), "{problem:#}");
    let (status, problem) = post(relay, "/api/v1/deployments", json!({ "file": file })).await;
    assert_eq!(status, 400, "a deployment: {problem:#}");
    assert!(problem["detail"].as_str().unwrap().contains(says), "{problem:#}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_file_reading_the_relays_signing_key_or_a_signing_secret_is_refused_before_any_call() {
    let relay = relay(&["--webhook-signing-secret", "relay_sign"]);
    let seen = Seen::default();
    let addr = prometheus(seen.clone()).await;
    // Marked for everything: still the relay's own key.
    set_secret(&relay, "relay_sign", SIGNING_KEY, &["signing", "webhooks", "providers"]).await;
    set_secret(&relay, "team_key", SIGNING_KEY, &["signing"]).await;

    let key = "secret \"relay_sign\" may not be used in webhooks (it is the relay's own signing key";
    let header = "    headers:\n      - key: X-Stolen\n        value: '{{secrets.relay_sign}}'\n";
    refused_at_read(&relay, &webhook_file(addr, header), &format!("webhooks[0].headers[0].value: {key}")).await;
    let body = "    bodyTemplate:\n      inline: '{{ secrets[\"relay_sign\"] | b64encode }}'\n";
    refused_at_read(&relay, &webhook_file(addr, body), &format!("webhooks[0].bodyTemplate.inline: {key}")).await;
    let uri = webhook_file(addr, "").replace("/hook", "/hook?k={{secrets.team_key}}");
    let marked = "webhooks[0].uriTemplate: secret \"team_key\" may not be used in webhooks (it is marked for signing)";
    refused_at_read(&relay, &uri, marked).await;

    // The CLI shows the same, naming the field.
    let dir = TempDir::new("secret-uses");
    let path = dir.path().join("steal.yaml");
    std::fs::write(&path, webhook_file(addr, header)).unwrap();
    let out = relay.cli().args(["deploy", "-f", path.to_str().unwrap()]).run_async().await;
    assert_eq!(out.status.code(), Some(2), "{}", out.stdout_text());
    assert!(out.stderr_text().contains(&format!("webhooks[0].headers[0].value: {key}")), "{}", out.stderr_text());
    assert!(seen.all().is_empty(), "no call was made: {:?}", seen.all());
    assert!(!relay.log().contains(SIGNING_KEY.trim_start_matches("whsec_")), "the log shows no key");
}

#[tokio::test(flavor = "multi_thread")]
async fn signing_takes_only_secrets_marked_for_signing() {
    let relay = relay(&[]);
    let seen = Seen::default();
    let addr = prometheus(seen.clone()).await;
    set_secret(&relay, "webhook_key", SIGNING_KEY, &[]).await;
    let signing = |name: &str| format!("    signing: {{secret: \"{{{{secrets.{name}}}}}\"}}\n");
    refused_at_read(
        &relay,
        &webhook_file(addr, &signing("webhook_key")),
        "webhooks[0].signing names secret \"webhook_key\", which may not be used for signing (it is marked for webhooks)",
    )
    .await;
    assert!(seen.all().is_empty(), "no call was made: {:?}", seen.all());

    set_secret(&relay, "signer", SIGNING_KEY, &["signing"]).await;
    // A new value alone keeps the marks.
    set_secret(&relay, "signer", SIGNING_KEY, &[]).await;
    let file = webhook_file(addr, &signing("signer"));
    let (status, created) = post(&relay, "/api/v1/webhook-runs", json!({"file": file, "name": "w"})).await;
    assert_eq!(status, 201, "{created:#}");
    let run = relay.wait_run(created["id"].as_str().unwrap()).await;
    assert_eq!(run.state, RunState::Succeeded, "{run:#?}");
    let calls = seen.all();
    assert_eq!(calls.len(), 1, "{calls:?}");
    assert!(calls[0].2.starts_with("v1,"), "the call is signed: {calls:?}");

    // Marks are listed by the API, the CLI and the console.
    let listed: Value = serde_json::from_str(&get_text(&relay, "/api/v1/secrets").await).unwrap();
    let uses: Vec<(String, Value)> = listed["secrets"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| (s["name"].as_str().unwrap().to_owned(), s["uses"].clone()))
        .collect();
    assert_eq!(
        uses,
        [("signer".to_owned(), json!(["signing"])), ("webhook_key".to_owned(), json!(["webhooks"]))],
        "{listed:#}"
    );
    let table = relay.cli().args(["secrets", "list"]).run_async().await.stdout_text();
    assert!(table.lines().any(|l| l.starts_with("signer ") && l.ends_with(" signing")), "{table}");
    let console = Console::sign_in(&relay.http_url, &relay.admin_token()).await;
    let (_, page) = console.get(&format!("{}/secrets", relay.http_url)).await;
    assert!(page.contains("data-uses=\"signing\""), "{page}");
    // The console sets marks with its checkboxes.
    let csrf = Console::csrf(&page);
    let fields = [("name", "both"), ("value", "v"), ("use_webhooks", "on"), ("use_providers", "on")];
    let (status, _) = console.post(&format!("{}/secrets", relay.http_url), &csrf, &fields).await;
    assert_eq!(status, 200);
    let listed = get_text(&relay, "/api/v1/secrets").await;
    assert!(listed.contains(r#"{"name":"both","#) && listed.contains(r#""uses":["webhooks","providers"]"#), "{listed}");
    // A new value for a signing key, with the form's default boxes (keep
    // the uses of a secret that exists), stays a signing key only.
    let fields = [("name", "signer"), ("value", SIGNING_KEY), ("use_webhooks", "on"), ("keep_uses", "on")];
    let (status, _) = console.post(&format!("{}/secrets", relay.http_url), &csrf, &fields).await;
    assert_eq!(status, 200);
    let listed = get_text(&relay, "/api/v1/secrets").await;
    assert!(listed.contains(r#"{"name":"signer","#), "{listed}");
    let signer: Value = serde_json::from_str::<Value>(&listed).unwrap()["secrets"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == "signer")
        .cloned()
        .unwrap();
    assert_eq!(signer["uses"], json!(["signing"]), "{listed}");
}

/// The relay's own signing key, named by the operator, signs whatever its
/// marks: one stored before secrets had uses (marked for webhooks only), or
/// re-set without `--use`, goes on signing, and still no file can read it.
#[tokio::test(flavor = "multi_thread")]
async fn the_relays_own_signing_key_signs_whatever_its_marks() {
    let relay = relay(&["--webhook-signing-secret", "relay_sign"]);
    set_secret(&relay, "relay_sign", SIGNING_KEY, &[]).await;
    let listed = relay.cli().args(["--json", "secrets", "list"]).run_async().await.stdout_text();
    assert!(listed.contains("webhooks") && !listed.contains("signing"), "{listed}");
    let (addr, system) = relay.external_system().await;
    let dir = TempDir::new("own-key");
    let path = dir.path().join("w.yaml");
    std::fs::write(&path, webhook_file(addr, "")).unwrap();
    let out = relay.cli().args(["webhook", "run", "-f", path.to_str().unwrap(), "--name", "w"]).run_async().await;
    assert!(out.status.success(), "{}", out.stderr_text());
    let received = eventually("the call", Duration::ZERO, || {
        let got = system.received();
        async move { got.into_iter().next() }
    })
    .await;
    let signature = received.headers.get("webhook-signature").expect("signed").to_str().unwrap();
    assert!(signature.starts_with("v1,"), "{signature}");
    let reading = webhook_file(addr, "    headers:\n      - key: X-Key\n        value: '{{secrets.relay_sign}}'\n");
    refused_at_read(&relay, &reading, "relay's own signing key").await;
}

/// A secret value is bounded (every value is masked in all its encodings
/// in whatever a call brings back): 64 KiB is taken, one byte more is
/// refused with a clear error, and a webhook run with the largest secret
/// stored goes through.
#[tokio::test(flavor = "multi_thread")]
async fn secret_values_are_bounded() {
    let relay = relay(&[]);
    let largest = "k".repeat(64 * 1024);
    set_secret(&relay, "largest", &largest, &[]).await;
    let out = relay.cli().args(["secrets", "set", "too_large"]).stdin_text(&format!("{largest}k")).run_async().await;
    assert!(!out.status.success());
    assert!(out.stderr_text().contains("at most 65536 are taken"), "{}", out.stderr_text());
    let (addr, system) = relay.external_system().await;
    let dir = TempDir::new("largest-secret");
    let path = dir.path().join("w.yaml");
    std::fs::write(&path, webhook_file(addr, "")).unwrap();
    let out =
        relay.cli().args(["webhook", "run", "-f", path.to_str().unwrap(), "--name", "w", "--wait"]).run_async().await;
    assert!(out.status.success(), "{}", out.stderr_text());
    assert_eq!(system.received().len(), 1);
}
