//! Signed outgoing calls (Standard Webhooks) end to end: a real relay signs,
//! and a receiver verifies with the reference library, Python's
//! `standardwebhooks`, as a user's receiver would.

use std::collections::BTreeMap;
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use borealis_tests::process::OutputText;
use borealis_tests::receiver::{Received, Receiver};
use borealis_tests::{AgentProcess, RelayOptions, RelayProcess, TempDir};

/// The Standard Webhooks specification's example secret.
const SPEC_SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

fn relay(extra: &[&str]) -> RelayProcess {
    RelayProcess::start(RelayOptions {
        direct_allow: vec!["127.0.0.0/8".into()],
        extra_args: extra.iter().map(|s| s.to_string()).collect(),
        ..Default::default()
    })
}

/// A signing key: a secret marked for signing.
async fn store_secret(relay: &RelayProcess, name: &str, value: &str) {
    let out = relay.cli().args(["secrets", "set", name, "--use", "signing"]).stdin_text(value).run_async().await;
    assert!(out.status.success(), "{}", out.stderr_text());
}

fn write_file(dir: &TempDir, name: &str, text: &str) -> String {
    let path = dir.path().join(name);
    std::fs::write(&path, text).unwrap();
    path.display().to_string()
}

/// A direct webhook whose 2xx reply decides (the receiver answers 401 to a
/// call no key of its own verifies).
fn signed_webhook(url: &str, signing: &str) -> String {
    format!(
        "application: shop
context:
  environment: staging
webhooks:
  - name: signed
    method: POST
    uriTemplate: {url}
    networkMode: direct
    retryCount: 2
    disableCallback: true
    headers:
      - key: Content-Type
        value: application/json
    bodyTemplate:
      inline: '{{\"env\": \"{{{{context.environment}}}}\", \"note\": \"h\u{e9}llo\"}}'
    signing: {signing}
"
    )
}

fn last_run(relay: &RelayProcess) -> serde_json::Value {
    let out = relay.cli().args(["--json", "runs", "list"]).run();
    let list: serde_json::Value = serde_json::from_str(&out.stdout_text()).unwrap();
    let id = list["runs"][0]["id"].as_str().unwrap().to_owned();
    let out = relay.cli().args(["--json", "runs", "show", &id]).run();
    serde_json::from_str(&out.stdout_text()).unwrap()
}

fn timestamp(call: &Received) -> u64 {
    call.header("webhook-timestamp").expect("a signed call has a timestamp").parse().unwrap()
}

/// `call`'s headers with `webhook-signature` set to `signature`.
fn with_signature(call: &Received, signature: &str) -> BTreeMap<String, String> {
    let mut headers = call.headers.clone();
    headers.insert("webhook-signature".into(), signature.into());
    headers
}

#[tokio::test(flavor = "multi_thread")]
async fn a_signed_webhook_verifies_with_the_reference_library_and_its_retry_is_signed_afresh() {
    // The default retry delay (at least 1 s) puts the retry in a later second.
    let relay = relay(&[]);
    let receiver = Receiver::start(&[SPEC_SECRET, "raw:a key this webhook does not use"]);
    store_secret(&relay, "wh_key", SPEC_SECRET).await;
    let dir = TempDir::new("signing");
    let file = signed_webhook(&receiver.url("/flaky/1/deploy"), "{secret: \"{{secrets.wh_key}}\"}");
    let path = write_file(&dir, "signed.yaml", &file);
    let before = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
    let out = relay.cli().args(["webhook", "run", "-f", &path, "--name", "signed", "--wait"]).run_async().await;
    assert_eq!(out.status.code(), Some(0), "{}\n{}", out.stdout_text(), out.stderr_text());

    let calls = receiver.records().await;
    assert_eq!(calls.len(), 2, "a 503, then the retry: {calls:?}");
    assert_eq!(calls.iter().map(|c| c.status).collect::<Vec<_>>(), [503, 200]);
    let run = last_run(&relay);
    let run_id = run["id"].as_str().unwrap();
    for call in &calls {
        assert_eq!(call.header("webhook-id"), Some(run_id), "webhook-id is the run's id on every attempt");
        assert_eq!(call.verdicts[SPEC_SECRET], Ok(()), "the reference library verifies {call:?}");
        assert!(call.verdicts["raw:a key this webhook does not use"].is_err(), "another key does not: {call:?}");
        assert_eq!(String::from_utf8(call.body.clone()).unwrap(), "{\"env\": \"staging\", \"note\": \"h\u{e9}llo\"}");
        let signature = call.header("webhook-signature").unwrap();
        assert!(signature.starts_with("v1,") && !signature.contains(' '), "{signature}");
    }
    let (first, retry) = (&calls[0], &calls[1]);
    assert!(timestamp(first) >= before && timestamp(first) <= before + 30, "unix seconds of the attempt");
    assert!(timestamp(retry) > timestamp(first), "the retry has a fresh timestamp");
    assert_ne!(first.header("webhook-signature"), retry.header("webhook-signature"));

    // A tampered body, or another message's signature, does not verify.
    let tampered = String::from_utf8(retry.body.clone()).unwrap().replace("staging", "prod").into_bytes();
    let refused = receiver.verify(SPEC_SECRET, &retry.headers, &tampered).await.unwrap_err();
    assert!(refused.contains("No matching signature found"), "{refused}");
    let replayed = with_signature(retry, first.header("webhook-signature").unwrap());
    assert!(
        receiver.verify(SPEC_SECRET, &replayed, &retry.body).await.is_err(),
        "a signature is bound to its timestamp"
    );
    assert_eq!(receiver.verify(SPEC_SECRET, &retry.headers, &retry.body).await, Ok(()));

    // The stored request shows the headers sent; the key is nowhere.
    let request: BTreeMap<String, String> = run["request"]["headers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| (h[0].as_str().unwrap().to_owned(), h[1].as_str().unwrap().to_owned()))
        .collect();
    assert_eq!(request.get("webhook-signature").map(String::as_str), retry.header("webhook-signature"), "{run:#}");
    assert_eq!(request.get("webhook-id").map(String::as_str), Some(run_id));
    let key = SPEC_SECRET.strip_prefix("whsec_").unwrap();
    assert!(!run.to_string().contains(key), "the run shows no key: {run:#}");
    assert!(!relay.log().contains(key), "the log shows no key");

    // A webhook naming a secret that is not stored is refused before anything is sent.
    let missing = write_file(&dir, "missing.yaml", &file.replace("secrets.wh_key", "secrets.nope"));
    let out = relay.cli().args(["webhook", "run", "-f", &missing, "--name", "signed", "--wait"]).run_async().await;
    assert_eq!(out.status.code(), Some(2), "{}", out.stdout_text());
    assert!(
        out.stderr_text().contains("webhooks[0].signing names secret \"nope\", which is not stored"),
        "{}",
        out.stderr_text()
    );
    assert_eq!(receiver.records().await.len(), 2, "nothing more was sent");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_key_rotation_through_an_agent_sends_one_signature_per_key_and_either_key_alone_verifies() {
    let relay = relay(&["--retry-base-delay", "50ms"]);
    let new = format!("whsec_{}", STANDARD.encode([0x5au8; 32]));
    let old = "the old key, a plain string";
    let unrelated = format!("whsec_{}", STANDARD.encode([0x11u8; 24]));
    store_secret(&relay, "new_key", &new).await;
    store_secret(&relay, "old_key", old).await;
    let old_spec = format!("raw:{old}");
    let receiver = Receiver::start(&[&new, &old_spec, &unrelated]);
    // Through an agent: what it sends is what was signed.
    let (client_id, secret) = relay.create_agent("sign-rna");
    let agent = AgentProcess::start(&relay.agents_url, &client_id, &secret, &["--allow", &receiver.addr.to_string()]);
    agent.wait_connected(Duration::from_secs(10)).await;
    let dir = TempDir::new("rotation");
    let file = signed_webhook(
        &receiver.url("/rotating"),
        "\n      secrets:\n        - \"{{secrets.new_key}}\"\n        - \"{{secrets.old_key}}\"",
    )
    .replace("networkMode: direct", "networkMode: remoteNetworkAgent\n    agentIdentifier: sign-rna");
    let path = write_file(&dir, "rotation.yaml", &file);
    let out = relay.cli().args(["webhook", "run", "-f", &path, "--name", "signed", "--wait"]).run_async().await;
    assert_eq!(out.status.code(), Some(0), "{}\n{}", out.stdout_text(), out.stderr_text());
    agent.wait_metric("borealis_agent_requests_total{outcome=\"2xx\"}", 1.0).await;

    let calls = receiver.records().await;
    assert_eq!(calls.len(), 1);
    let call = &calls[0];
    assert_eq!(call.verdicts[&new], Ok(()), "the new key alone verifies");
    assert_eq!(call.verdicts[&old_spec], Ok(()), "the old key alone verifies");
    assert!(call.verdicts[&unrelated].is_err(), "{call:?}");
    let signatures: Vec<&str> = call.header("webhook-signature").unwrap().split(' ').collect();
    assert_eq!(signatures.len(), 2, "one v1 signature per key, space-separated: {signatures:?}");
    assert!(signatures.iter().all(|s| s.starts_with("v1,")));
    // In file order: the first is the new key's, the second the old key's.
    assert_eq!(receiver.verify(&new, &with_signature(call, signatures[0]), &call.body).await, Ok(()));
    assert_eq!(receiver.verify(&old_spec, &with_signature(call, signatures[1]), &call.body).await, Ok(()));
    assert!(receiver.verify(&new, &with_signature(call, signatures[1]), &call.body).await.is_err());

    // With no key anywhere, a driver's calls still carry their webhook-id.
    let plain = Receiver::start(&[]);
    let deployment = format!(
        "application: shop
targets:
  prod:
    driver:
      webhook:
        url: {}
",
        plain.url("/actions")
    );
    let path = write_file(&dir, "unsigned.yaml", &deployment);
    let out = relay.cli().args(["--json", "deploy", "-f", &path, "--wait"]).run_async().await;
    assert!(out.status.success(), "{}\n{}", out.stdout_text(), out.stderr_text());
    let done: serde_json::Value = serde_json::from_str(&out.stdout_text()).unwrap();
    let id = done["id"].as_str().unwrap();
    let calls = plain.records().await;
    let ids: Vec<&str> = calls.iter().map(|c| c.header("webhook-id").unwrap_or("none")).collect();
    assert_eq!(ids, [format!("{id}:prod/action/deploy"), format!("{id}:prod/action/promote")]);
    assert!(calls.iter().all(|c| c.header("webhook-signature").is_none() && c.header("webhook-timestamp").is_none()));
}

#[tokio::test(flavor = "multi_thread")]
async fn flagger_hooks_and_driver_calls_carry_a_webhook_id_and_the_relays_default_signature() {
    let relay =
        relay(&["--webhook-signing-secret", "relay_key", "--gate-interval", "100ms", "--retry-base-delay", "50ms"]);
    let relay_key = format!("whsec_{}", STANDARD.encode(b"the relay-wide signing key, 32 b"));
    let hook_key = "a key of the smoke hook's own";
    store_secret(&relay, "relay_key", &relay_key).await;
    store_secret(&relay, "hook_key", hook_key).await;
    let hook_spec = format!("raw:{hook_key}");
    let receiver = Receiver::start(&[&relay_key, &hook_spec]);
    let dir = TempDir::new("signed-hooks");
    let file = format!(
        "application: shop
artifacts:
  web: registry.example/shop:1.0
  api: registry.example/api:7
targets:
  prod:
    namespace: shop-prod
    strategy: rolling
    driver:
      webhook:
        url: {actions}
strategies:
  rolling:
    canary:
      steps:
        - setWeight:
            weight: 50
analysis:
  webhooks:
    - name: start gate
      type: confirm-rollout
      url: {gate}
    - name: smoke
      type: pre-rollout
      url: {smoke}
      signing: {{secret: \"{{{{secrets.hook_key}}}}\"}}
    - name: events
      type: event
      url: {events}
",
        actions = receiver.url("/actions"),
        gate = receiver.url("/flaky/2/gate"),
        smoke = receiver.url("/smoke"),
        events = receiver.url("/events"),
    );
    let path = write_file(&dir, "hooks.yaml", &file);
    // The caller says what to deploy: over the file's artifacts.
    let out = relay
        .cli()
        .args(["--json", "deploy", "-f", &path, "--wait"])
        .args(["--context", "image=shop:1.2.3", "--artifact", "web=registry.example/shop:1.2.3"])
        .run_async()
        .await;
    assert!(out.status.success(), "{}\n{}", out.stdout_text(), out.stderr_text());
    let done: serde_json::Value = serde_json::from_str(&out.stdout_text()).unwrap();
    let id = done["id"].as_str().unwrap();
    let deploying = serde_json::json!({"web": "registry.example/shop:1.2.3", "api": "registry.example/api:7"});
    assert_eq!(done["artifacts"], deploying, "the API shows what is deployed");
    assert_eq!(done["context"]["image"], "shop:1.2.3");

    let calls = receiver.records().await;
    for call in &calls {
        let call_id = call.header("webhook-id").unwrap_or_else(|| panic!("no webhook-id: {call:?}"));
        assert!(call_id.starts_with(&format!("{id}:")), "{call_id}");
        let verifies_with = if call.path == "/smoke" { &hook_spec } else { &relay_key };
        assert_eq!(call.verdicts[verifies_with], Ok(()), "{call:?}");
        let other = if call.path == "/smoke" { &relay_key } else { &hook_spec };
        assert!(call.verdicts[other].is_err(), "a hook's own signing replaces the default: {call:?}");
    }
    let on = |path: &str| calls.iter().filter(|c| c.path == path).collect::<Vec<_>>();

    // The gate is asked three times (closed, closed, open), as one question.
    let gate = on("/flaky/2/gate");
    assert_eq!(gate.iter().map(|c| c.status).collect::<Vec<_>>(), [503, 503, 200]);
    let gate_id = format!("{id}:prod/gate/confirm-rollout/start%20gate");
    assert!(gate.iter().all(|c| c.header("webhook-id") == Some(gate_id.as_str())), "{gate:?}");
    assert_eq!(on("/smoke")[0].header("webhook-id"), Some(format!("{id}:prod/pre-rollout/smoke").as_str()));

    // The driver is told what to deploy, in every action, signed.
    for call in on("/actions") {
        let body: serde_json::Value = serde_json::from_slice(&call.body).unwrap();
        assert_eq!(body["artifacts"], deploying, "{body}");
        assert_eq!(body["context"]["image"], "shop:1.2.3", "{body}");
        assert_eq!(call.verdicts[&relay_key], Ok(()), "the receiver verifies the driver's signature");
    }
    let actions: Vec<(String, String)> = on("/actions")
        .iter()
        .map(|c| {
            let body: serde_json::Value = serde_json::from_slice(&c.body).unwrap();
            (body["action"].as_str().unwrap().to_owned(), c.header("webhook-id").unwrap().to_owned())
        })
        .collect();
    assert_eq!(
        actions,
        [
            ("deploy".to_owned(), format!("{id}:prod/action/deploy")),
            ("setWeight".to_owned(), format!("{id}:prod/action/canary/0")),
            ("promote".to_owned(), format!("{id}:prod/action/promote")),
        ]
    );
    let events = on("/events");
    assert!(events.len() >= 4, "{events:?}");
    let mut event_ids: Vec<&str> = events.iter().map(|c| c.header("webhook-id").unwrap()).collect();
    event_ids.sort();
    event_ids.dedup();
    assert_eq!(event_ids.len(), events.len(), "every event is a message of its own");

    // A deployment naming a secret that is not stored is refused, naming where.
    let missing = write_file(&dir, "missing.yaml", &file.replace("secrets.hook_key", "secrets.absent"));
    let out = relay.cli().args(["deploy", "-f", &missing]).run_async().await;
    assert_eq!(out.status.code(), Some(2), "{}", out.stdout_text());
    assert!(
        out.stderr_text().contains("analysis.webhooks[1].signing names secret \"absent\", which is not stored"),
        "{}",
        out.stderr_text()
    );
    // Refused before it was stored: there is no deployment that could send
    // anything, so the receiver's count can be read at once.
    let listed: serde_json::Value = reqwest::Client::new()
        .get(format!("{}/api/v1/deployments", relay.http_url))
        .bearer_auth(relay.admin_token())
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let ids: Vec<&str> = listed["deployments"].as_array().unwrap().iter().map(|d| d["id"].as_str().unwrap()).collect();
    assert_eq!(ids, [id], "the refused deployment was not stored");
    assert_eq!(receiver.records().await.len(), calls.len(), "nothing was sent for it");
}
