//! Who may do what: service accounts with roles in a team, the permission
//! table applied to every route, refusals that name what is missing,
//! tokens that expire or are revoked, and the audit trail that records
//! every change and every refusal with its actor.

use std::collections::BTreeMap;
use std::time::Duration;

use borealis_relay::access::rules::{Needs, Permission, RULES, Role};
use borealis_tests::postgres::Schema;
use borealis_tests::process::OutputText;
use borealis_tests::{RelayOptions, RelayProcess, TempDir};

/// A service account's token, created through the CLI as a user would.
/// A concrete request for a rule's path: its parameters filled in.
fn concrete(path: &str) -> String {
    // A team named in the path is the team the roles are held in.
    path.replace("/teams/{name}", "/teams/default")
        .replace("{id}", "00000000-0000-0000-0000-000000000000")
        .replace("{name}", "x")
        .replace("{target}", "t")
}

/// What a request got: status, `Borealis-Error`, detail.
async fn ask(
    http: &reqwest::Client,
    relay: &RelayProcess,
    method: &str,
    path: &str,
    token: Option<&str>,
) -> (u16, String, String) {
    let method = if method == "ANY" { "GET" } else { method };
    let url = format!("{}{path}", relay.http_url);
    let mut request = http.request(reqwest::Method::from_bytes(method.as_bytes()).unwrap(), &url);
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    if matches!(method, "POST" | "PUT") {
        request = request.header("content-type", "application/json").body("{}");
    }
    let reply = request.send().await.unwrap();
    let status = reply.status().as_u16();
    let slug = reply.headers().get("borealis-error").and_then(|v| v.to_str().ok()).unwrap_or_default().to_owned();
    let body: serde_json::Value = reply.json().await.unwrap_or_default();
    (status, slug, body["detail"].as_str().unwrap_or_default().to_owned())
}

/// Every route of the table, asked by each role in the team `default`, by
/// the admin token and by no one: refused exactly where the table says,
/// with the permission named. Generated from the table, so a route added
/// to it is checked here; a route added without an entry is refused to all
/// (the router fails closed), and `the_table_covers_every_documented_route`
/// catches it first.
#[tokio::test(flavor = "multi_thread")]
async fn the_permission_table_holds_for_every_route_and_every_role() {
    // Every route is asked once without a token: more than the default
    // failed-authentication allowance of one address.
    let relay = RelayProcess::start(RelayOptions {
        extra_args: vec!["--auth-failures-per-minute".into(), "1000".into()],
        ..RelayOptions::default()
    });
    let admin = relay.admin_token();
    let mut tokens: BTreeMap<Role, String> = BTreeMap::new();
    for role in Role::ALL {
        tokens.insert(role, relay.service_account("default", role.as_str(), &[role.as_str()], &[]).await);
    }
    let http = reqwest::Client::new();
    for rule in RULES {
        // The proxy twice: through an agent (operate) and direct (the organization's).
        let asks: Vec<(String, Permission)> = match rule.needs {
            Needs::Permission(permission) => vec![(concrete(rule.path), permission)],
            Needs::Proxy => vec![
                (format!("{}?url=http://127.0.0.1:9/&agent=nowhere", rule.path), Permission::Operate),
                (format!("{}?url=http://127.0.0.1:9/", rule.path), Permission::Organization),
            ],
        };
        for (path, permission) in asks {
            let (status, _, _) = ask(&http, &relay, rule.method, &path, None).await;
            assert_eq!(status, 401, "{} {path} without a token", rule.method);
            let (status, slug, detail) = ask(&http, &relay, rule.method, &path, Some(&admin)).await;
            assert!(
                slug != "forbidden" && status != 401,
                "the admin token may {} {path}: {status} {detail}",
                rule.method
            );
            for (role, token) in &tokens {
                let (status, slug, detail) = ask(&http, &relay, rule.method, &path, Some(token)).await;
                let allowed = role.grants().contains(&permission);
                if allowed {
                    assert!(
                        slug != "forbidden" && status != 401,
                        "{} may {} {path} ({permission}), got {status} {detail}",
                        role.as_str(),
                        rule.method
                    );
                } else {
                    assert_eq!(
                        (status, slug.as_str()),
                        (403, "forbidden"),
                        "{} {} {path}: {detail}",
                        role.as_str(),
                        rule.method
                    );
                    assert!(detail.contains(&format!("needs the {permission} permission")), "{detail}");
                }
            }
        }
    }
}

/// Every route the OpenAPI document guards with a token has exactly one
/// entry in the table, and every entry is a documented route; the README
/// shows the same table.
#[test]
fn the_table_covers_every_documented_route_and_the_readme_shows_it() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let document: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(root.join("docs/openapi.json")).unwrap()).unwrap();
    let mut guarded = Vec::new();
    for (path, item) in document["paths"].as_object().unwrap() {
        for (method, operation) in item.as_object().unwrap() {
            let secured =
                operation["security"].as_array().is_some_and(|s| s.iter().any(|s| s.get("adminToken").is_some()));
            if secured {
                guarded.push((method.to_uppercase(), path.clone()));
            }
        }
    }
    for (method, path) in &guarded {
        let found = RULES.iter().filter(|r| r.path == path && (r.method == method || r.method == "ANY")).count();
        assert_eq!(found, 1, "{method} {path} has {found} entries in the permission table");
    }
    for rule in RULES {
        assert!(
            guarded.iter().any(|(m, p)| p == rule.path && (m == rule.method || rule.method == "ANY")),
            "{} {} is in the table but not documented",
            rule.method,
            rule.path
        );
    }
    let readme = std::fs::read_to_string(root.join("README.md")).unwrap();
    for rule in RULES {
        let needs = match rule.needs {
            Needs::Permission(permission) => permission.as_str().to_owned(),
            Needs::Proxy => "operate (through an agent), organization (direct)".to_owned(),
        };
        let row = format!("| `{} {}` | {needs} | `{}` |", rule.method, rule.path, rule.action);
        assert!(readme.contains(&row), "the README's permission table lacks {row}");
    }
    for role in Role::ALL {
        let grants: Vec<&str> = role.grants().iter().map(|p| p.as_str()).collect();
        let row = format!("| `{}` | {} |", role.as_str(), grants.join(", "));
        assert!(readme.contains(&row), "the README's roles table lacks {row}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_refusal_names_the_permission_and_an_expired_or_revoked_token_is_refused() {
    let relay = RelayProcess::start(RelayOptions::default());
    let viewer = relay.service_account("default", "dashboards", &["viewer"], &[]).await;
    let dir = TempDir::new("access");
    let file = dir.path().join("deploy.yaml");
    std::fs::write(&file, "application: shop\ntargets:\n  prod: {}\n").unwrap();
    let file = file.to_str().unwrap();

    // The viewer reads, and cannot deploy.
    let list = relay.cli().env("BOREALIS_TOKEN", &viewer).args(["deployments", "list"]).run_async().await;
    assert!(list.status.success(), "{}", list.stderr_text());
    let deploy = relay.cli().env("BOREALIS_TOKEN", &viewer).args(["deploy", "-f", file]).run_async().await;
    assert!(!deploy.status.success());
    let said = deploy.stderr_text();
    assert!(
        said.contains("this needs the deploy permission in team \"default\" (a role that grants it: deployer, admin)"),
        "{said}"
    );
    assert!(said.contains("viewer in \"default\""), "what it holds is said: {said}");

    // A deployer in another team is refused here too.
    let create = relay.cli().args(["teams", "create", "payments"]).run_async().await;
    assert!(create.status.success(), "{}", create.stderr_text());
    let elsewhere = relay.service_account("payments", "ci", &["deployer"], &[]).await;
    let out = relay
        .cli()
        .env("BOREALIS_TOKEN", &elsewhere)
        .args(["--team", "default", "deploy", "-f", file])
        .run_async()
        .await;
    assert!(out.stderr_text().contains("needs the deploy permission in team \"default\""), "{}", out.stderr_text());
    let teams = relay.cli().env("BOREALIS_TOKEN", &elsewhere).args(["--json", "teams", "list"]).run_async().await;
    let teams: borealis_api::TeamList = serde_json::from_str(&teams.stdout_text()).unwrap();
    assert_eq!(teams.teams.iter().map(|t| t.name.as_str()).collect::<Vec<_>>(), ["payments"], "only its own team");

    // A deployer in `default` deploys.
    let deployer = relay.service_account("default", "ci", &["deployer"], &[]).await;
    let out = relay.cli().env("BOREALIS_TOKEN", &deployer).args(["deploy", "-f", file, "--wait"]).run_async().await;
    assert!(out.status.success(), "{}", out.stderr_text());

    // Expired.
    let brief = relay.service_account("default", "brief", &["viewer"], &["--expires-in", "1s"]).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let out = relay.cli().env("BOREALIS_TOKEN", &brief).args(["deployments", "list"]).run_async().await;
    assert!(!out.status.success());
    assert!(out.stderr_text().contains("the token of service account \"brief\" has expired"), "{}", out.stderr_text());

    // Revoked: at once.
    let listed = relay.cli().args(["--json", "service-accounts", "list", "--team", "default"]).run_async().await;
    let listed: borealis_api::ServiceAccountList = serde_json::from_str(&listed.stdout_text()).unwrap();
    let id = &listed.service_accounts.iter().find(|a| a.name == "dashboards").unwrap().id;
    let out = relay.cli().args(["service-accounts", "revoke", id, "--team", "default"]).run_async().await;
    assert!(out.status.success(), "{}", out.stderr_text());
    let out = relay.cli().env("BOREALIS_TOKEN", &viewer).args(["deployments", "list"]).run_async().await;
    assert!(out.stderr_text().contains("service account \"dashboards\" was revoked"), "{}", out.stderr_text());
    let http = reqwest::Client::new();
    let (status, slug, _) = ask(&http, &relay, "GET", "/api/v1/deployments", Some(&viewer)).await;
    assert_eq!((status, slug.as_str()), (401, "unauthorized"));
    let (status, _, _) = ask(&http, &relay, "GET", "/api/v1/deployments", Some("bsa_0123456789abcdef_nope")).await;
    assert_eq!(status, 401, "a made-up token");

    // Service accounts are managed by the team's admins, teams by the organization.
    let out = relay.cli().env("BOREALIS_TOKEN", &deployer).args(["teams", "create", "mine"]).run_async().await;
    assert!(out.stderr_text().contains("only an organization admin has it"), "{}", out.stderr_text());
    let out = relay
        .cli()
        .env("BOREALIS_TOKEN", &deployer)
        .args(["service-accounts", "create", "more", "--role", "admin"])
        .run_async()
        .await;
    assert!(out.stderr_text().contains("needs the manage-team permission"), "{}", out.stderr_text());
    let bad = relay.cli().args(["service-accounts", "create", "x", "--role", "root"]).run_async().await;
    assert!(bad.stderr_text().contains("unknown role \"root\""), "{}", bad.stderr_text());
}

#[tokio::test(flavor = "multi_thread")]
async fn the_audit_trail_records_each_change_and_refusal_with_its_actor() {
    let relay = RelayProcess::start(RelayOptions::default());
    let deployer = relay.service_account("default", "ci", &["deployer"], &[]).await;
    let viewer = relay.service_account("default", "dash", &["viewer"], &[]).await;
    let dir = TempDir::new("audit");
    let file = dir.path().join("deploy.yaml");
    std::fs::write(&file, "application: shop\ntargets:\n  prod: {}\n").unwrap();
    let file = file.to_str().unwrap();
    let out = relay.cli().env("BOREALIS_TOKEN", &deployer).args(["--json", "deploy", "-f", file]).run_async().await;
    assert!(out.status.success(), "{}", out.stderr_text());
    let deployment: borealis_api::Deployment = serde_json::from_str(&out.stdout_text()).unwrap();
    let refused =
        relay.cli().env("BOREALIS_TOKEN", &viewer).args(["secrets", "set", "token"]).stdin_text("v").run_async().await;
    assert!(!refused.status.success());
    let http = reqwest::Client::new();
    let wrong = http.post(format!("{}/api/v1/deployments", relay.http_url)).bearer_auth("wrong").send().await.unwrap();
    assert_eq!(wrong.status(), 401);
    let request_id = wrong.headers()["borealis-request-id"].to_str().unwrap().to_owned();
    // A read is not recorded.
    let read = relay.cli().env("BOREALIS_TOKEN", &viewer).args(["deployments", "list"]).run_async().await;
    assert!(read.status.success());

    let out = relay.cli().args(["--json", "audit"]).run_async().await;
    assert!(out.status.success(), "{}", out.stderr_text());
    let trail: borealis_api::AuditList = serde_json::from_str(&out.stdout_text()).unwrap();
    let find = |action: &str, outcome: &str| {
        trail
            .entries
            .iter()
            .find(|e| e.action == action && e.outcome == outcome)
            .unwrap_or_else(|| panic!("no {action} {outcome} in {:#?}", trail.entries))
    };
    let created = find("deployment.create", "allowed");
    assert_eq!((created.actor.kind.as_str(), created.actor.name.as_str()), ("service_account", "ci (default)"));
    assert_eq!(created.team.as_deref(), Some("default"));
    assert_eq!(created.status, 201);
    assert_eq!(created.source_address.as_deref(), Some("127.0.0.1"));
    let secret = find("secret.put", "refused");
    assert_eq!(
        (secret.actor.name.as_str(), secret.object.as_str(), secret.status),
        ("dash (default)", "/api/v1/secrets/token", 403)
    );
    let unauthenticated = find("deployment.create", "unauthenticated");
    assert_eq!(
        (unauthenticated.actor.kind.as_str(), unauthenticated.request_id.as_str()),
        ("anonymous", request_id.as_str())
    );
    assert!(trail.entries.iter().all(|e| e.action != "deployment.list"), "reads are not recorded");
    let made = find("service-account.create", "allowed");
    assert_eq!(made.actor.kind, "admin");

    // Filters: by actor, by action, by time.
    let by_actor = relay.cli().args(["--json", "audit", "--actor", &created.actor.id]).run_async().await;
    let by_actor: borealis_api::AuditList = serde_json::from_str(&by_actor.stdout_text()).unwrap();
    assert!(!by_actor.entries.is_empty() && by_actor.entries.iter().all(|e| e.actor.id == created.actor.id));
    let later = relay.cli().args(["--json", "audit", "--since", "2999-01-01T00:00:00Z"]).run_async().await;
    let later: borealis_api::AuditList = serde_json::from_str(&later.stdout_text()).unwrap();
    assert!(later.entries.is_empty());

    // The deployment says who started it, in the API and in its history.
    assert_eq!(deployment.started_by.as_deref(), Some("ci (default)"));
    let deployer = borealis_tests::deployer::Deployer::new(&relay);
    let shown = deployer.finished(&deployment.id).await;
    assert!(shown.events.iter().any(|e| e.message == "deployment started by ci (default)"), "{:#?}", shown.events);

    // A viewer may not read the trail; nothing in the API changes it.
    let out = relay.cli().env("BOREALIS_TOKEN", &viewer).args(["audit"]).run_async().await;
    assert!(out.stderr_text().contains("needs the manage-team permission"), "{}", out.stderr_text());
    for method in [reqwest::Method::DELETE, reqwest::Method::PUT, reqwest::Method::POST] {
        let reply = http
            .request(method.clone(), format!("{}/api/v1/audit", relay.http_url))
            .bearer_auth(relay.admin_token())
            .send()
            .await
            .unwrap();
        let status = reply.status();
        assert_eq!(status, 405, "{method} /api/v1/audit: {}", reply.text().await.unwrap());
    }
}

/// Replicas sharing PostgreSQL append to one trail: what one replica
/// records, another lists.
#[tokio::test(flavor = "multi_thread")]
async fn replicas_on_postgresql_keep_one_trail() {
    let schema = Schema::new();
    let options = || RelayOptions {
        extra_args: vec!["--database-url".into(), schema.database_url()],
        env: vec![
            ("BOREALIS_ADMIN_TOKEN".into(), "access-admin-token-0123456789".into()),
            ("BOREALIS_SECRET_KEY".into(), "Y2x1c3Rlci1zZWNyZXQta2V5LW9mLTMyLWJ5dGVzISE=".into()),
        ],
        ..Default::default()
    };
    let a = RelayProcess::start(options());
    let b = RelayProcess::start(options());
    let out = a.cli().args(["teams", "create", "payments"]).run_async().await;
    assert!(out.status.success(), "{}", out.stderr_text());
    let token = a.service_account("payments", "ci", &["admin"], &[]).await;
    // The account created on one replica works on the other.
    let out = b.cli().env("BOREALIS_TOKEN", &token).args(["--json", "audit"]).run_async().await;
    assert!(out.status.success(), "{}", out.stderr_text());
    let trail: borealis_api::AuditList = serde_json::from_str(&out.stdout_text()).unwrap();
    let actions: Vec<&str> = trail.entries.iter().map(|e| e.action.as_str()).collect();
    assert_eq!(actions, ["service-account.create"], "the team's own trail, written through the other replica");
    let all = b.cli().args(["--json", "audit"]).run_async().await;
    let all: borealis_api::AuditList = serde_json::from_str(&all.stdout_text()).unwrap();
    assert!(all.entries.iter().any(|e| e.action == "team.create"), "{:#?}", all.entries);
}

/// `requiresRoles` on a manual approval: someone without a listed role is
/// refused (403, naming the roles), in the API and the CLI; someone with
/// one decides it; the admin token always may.
#[tokio::test(flavor = "multi_thread")]
async fn an_approval_that_requires_a_role_is_refused_to_others_naming_the_roles() {
    use borealis_api::TargetState;
    use borealis_tests::deployer::{Deployer, target};
    let relay = RelayProcess::start(RelayOptions::default());
    let reviewer = relay.service_account("default", "reviewer", &["approver"], &[]).await;
    let lead = relay.service_account("default", "lead", &["admin"], &[]).await;
    let deployer = Deployer::new(&relay);
    let file = "application: shop
targets:
  prod:
    constraints:
      beforeDeployment:
        - pause:
            untilApproved: true
            requiresRoles: [admin, release-managers]
";
    let waits = |d: &borealis_api::Deployment| target(d, "prod").state == TargetState::AwaitingApproval;
    let id = deployer.start(file).await;
    deployer.until(&id, "prod waits for its approval", waits).await;

    let refused = relay.cli().env("BOREALIS_TOKEN", &reviewer).args(["approve", &id, "prod"]).run_async().await;
    assert!(!refused.status.success());
    let said = refused.stderr_text();
    assert!(
        said.contains("requires one of the roles admin, release-managers; reviewer (default) holds approver"),
        "{said}"
    );
    let http = reqwest::Client::new();
    let path = format!("/api/v1/deployments/{id}/targets/prod/reject");
    let (status, slug, _) = ask(&http, &relay, "POST", &path, Some(&reviewer)).await;
    assert_eq!((status, slug.as_str()), (403, "forbidden"), "rejecting is deciding too");
    assert_eq!(target(&deployer.show(&id).await, "prod").state, TargetState::AwaitingApproval, "nothing changed");

    let approved = relay.cli().env("BOREALIS_TOKEN", &lead).args(["approve", &id, "prod"]).run_async().await;
    assert!(approved.status.success(), "{}", approved.stderr_text());
    let done = deployer.finished(&id).await;
    assert_eq!(target(&done, "prod").state, TargetState::Deployed);

    // The admin token is not bound by it.
    let again = deployer.start(file).await;
    deployer.until(&again, "prod waits again", waits).await;
    deployer.decide("approve", &again, "prod").await;
    assert_eq!(target(&deployer.finished(&again).await, "prod").state, TargetState::Deployed);
}

/// Every proxied request is in the trail, allowed or failed, under its
/// actor; their entries are appended in batches off the request path, and
/// those still queued when the relay is stopped are written before it exits.
#[tokio::test(flavor = "multi_thread")]
async fn proxied_requests_are_in_the_trail_and_a_stop_loses_none_queued() {
    const REQUESTS: usize = 300;
    let (upstream, _) = borealis_tests::servers::upstream().await;
    let relay = RelayProcess::start(RelayOptions { direct_allow: vec!["127.0.0.0/8".into()], ..Default::default() });
    let http = reqwest::Client::new();
    let proxy = |path: String| {
        http.get(format!("{}/api/v1/proxy", relay.http_url))
            .query(&[("url", format!("http://{upstream}{path}"))])
            .header("proxy-authorization", format!("Bearer {}", relay.admin_token()))
            .send()
    };
    let sent = futures_util::future::join_all((0..REQUESTS).map(|i| {
        let path = if i == 0 { "/status/500".to_owned() } else { format!("/fast?n={i}") };
        proxy(path)
    }))
    .await;
    let request_ids: Vec<String> = sent
        .into_iter()
        .map(|reply| reply.unwrap().headers()["borealis-request-id"].to_str().unwrap().to_owned())
        .collect();
    // Stopped at once: whatever is still queued must reach the store.
    let relay = relay.terminate_and_restart(Duration::from_secs(30));

    let mut found = std::collections::HashMap::new();
    let mut before: Option<String> = None;
    loop {
        let mut url = format!("{}/api/v1/audit?action=proxy&limit=500", relay.http_url);
        if let Some(cursor) = &before {
            url.push_str(&format!("&before={cursor}"));
        }
        let page: borealis_api::AuditList =
            http.get(url).bearer_auth(relay.admin_token()).send().await.unwrap().json().await.unwrap();
        for entry in page.entries {
            found.insert(entry.request_id.clone(), entry);
        }
        match page.next {
            Some(next) => before = Some(next),
            None => break,
        }
    }
    for (i, id) in request_ids.iter().enumerate() {
        let entry = found.get(id).unwrap_or_else(|| panic!("request {i} ({id}) is missing from the trail"));
        assert_eq!(entry.actor.kind, "admin");
        assert_eq!(entry.object, "/api/v1/proxy");
        let expected = if i == 0 { ("failed", 500) } else { ("allowed", 200) };
        assert_eq!((entry.outcome.as_str(), entry.status), expected, "request {i}");
    }
    assert_eq!(found.len(), REQUESTS, "each once");
}
