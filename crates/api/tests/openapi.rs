//! `docs/openapi.json` is `borealis_api::openapi()`, committed.

use std::path::PathBuf;

fn committed() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../docs/openapi.json")
}

#[test]
fn the_committed_document_is_current() {
    let current = borealis_api::openapi_json();
    let path = committed();
    if std::env::var_os("UPDATE_OPENAPI").is_some() {
        std::fs::write(&path, &current).expect("write docs/openapi.json");
        return;
    }
    let on_disk = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        on_disk == current,
        "docs/openapi.json differs from borealis_api::openapi(); regenerate it with\n\n    \
         UPDATE_OPENAPI=1 cargo test -p borealis-api --test openapi\n\nand commit the result"
    );
}

#[test]
fn it_is_openapi_3_1_with_every_route() {
    let doc: serde_json::Value = serde_json::from_str(&borealis_api::openapi_json()).unwrap();
    assert!(doc["openapi"].as_str().unwrap().starts_with("3.1"));
    let paths = doc["paths"].as_object().unwrap();
    for path in [
        "/api/v1/agents",
        "/api/v1/agents/{id}",
        "/api/v1/clients",
        "/api/v1/clients/{name}",
        "/api/v1/proxy",
        "/api/v1/webhook-runs",
        "/api/v1/webhook-runs/{id}",
        "/api/v1/webhook-runs/{id}/cancel",
        "/api/v1/deployments",
        "/api/v1/deployments/{id}",
        "/api/v1/deployments/{id}/targets/{target}/approve",
        "/api/v1/deployments/{id}/targets/{target}/reject",
        "/api/v1/deployments/{id}/targets/{target}/rollback",
        "/api/v1/deployments/{id}/targets/{target}/continue",
        "/api/v1/metric-providers",
        "/api/v1/metric-providers/{name}",
        "/api/v1/secrets",
        "/api/v1/secrets/{name}",
        "/callbacks/{id}/callback",
        "/oauth/token",
        "/healthz",
        "/readyz",
        "/metrics",
    ] {
        assert!(paths.contains_key(path), "{path} is missing");
    }
    assert_eq!(doc["paths"]["/api/v1/proxy"]["x-borealis-passthrough"], true);
    let schemes = doc["components"]["securitySchemes"].as_object().unwrap();
    assert!(schemes.contains_key("adminToken") && schemes.contains_key("callbackToken"));
}

/// The casing rule: our fields camelCase, the two standards' their own.
#[test]
fn fields_are_camel_case_except_the_standards() {
    let agent = borealis_api::AgentRevoked { agent_id: "a".into(), revoked: true, sessions_closed: 2 };
    assert_eq!(
        serde_json::to_value(&agent).unwrap(),
        serde_json::json!({"agentId": "a", "revoked": true, "sessionsClosed": 2})
    );
    let token = borealis_api::TokenResponse {
        access_token: "t".into(),
        token_type: "Bearer".into(),
        expires_in: 86400,
        scope: "webhook:callback".into(),
    };
    let value = serde_json::to_value(&token).unwrap();
    assert!(value.get("access_token").is_some() && value.get("expires_in").is_some());
    let problem = borealis_api::Problem {
        kind: "urn:borealis:problem:x".into(),
        title: "Bad Request".into(),
        status: 400,
        detail: "d".into(),
        errors: vec![],
    };
    let value = serde_json::to_value(&problem).unwrap();
    assert_eq!(value["type"], "urn:borealis:problem:x");
    assert!(value.get("errors").is_none(), "no errors key without errors");
}

#[test]
fn a_run_shown_alone_keeps_a_null_request() {
    let text = r#"{"id":"r","webhook":"w","environment":null,"state":"awaiting_callback","success":null,
        "mdMessage":null,"reason":null,"attempts":1,"networkMode":"remoteNetworkAgent","agent":"a",
        "callbackUri":null,"createdAt":"t","updatedAt":"t","nextAttemptAt":null,"deadlineAt":null,
        "callbackAt":null,"finishedAt":null,"attemptLog":[],"request":null}"#;
    let run: borealis_api::WebhookRun = serde_json::from_str(text).unwrap();
    assert_eq!(run.request, Some(None));
    assert_eq!(run.state, borealis_api::RunState::AwaitingCallback);
    let again = serde_json::to_value(&run).unwrap();
    assert!(again["request"].is_null() && again.get("warnings").is_none());
}
