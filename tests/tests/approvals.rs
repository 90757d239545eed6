//! Approvals by people (issue 28, items 4 and 5): `requiredApprovals: N`
//! asks for N distinct people, and the same person approving twice counts
//! once; a team may forbid approving a deployment one started; and every
//! approval, rejection, abort and cancel names its actor, in the API, the
//! CLI and the deployment's history. Through the real relay and CLI.

use borealis_api::{Deployment, DeploymentState, TargetState};
use borealis_tests::deployer::{Deployer, target};
use borealis_tests::process::OutputText;
use borealis_tests::{RelayOptions, RelayProcess};
use serde_json::json;

fn gated(required: u32) -> String {
    format!(
        "application: shop
targets:
  prod:
    constraints:
      beforeDeployment:
        - pause:
            untilApproved: true
            requiredApprovals: {required}
"
    )
}

async fn start(relay: &RelayProcess, token: &str, file: &str) -> String {
    let (status, body) = relay.call_as("POST", "/api/v1/deployments", token, Some(json!({"file": file}))).await;
    assert_eq!(status, 201, "{body}");
    body["id"].as_str().unwrap().to_owned()
}

async fn show(relay: &RelayProcess, id: &str) -> Deployment {
    relay.get_as(&format!("/api/v1/deployments/{id}")).await
}

fn events(d: &Deployment) -> Vec<String> {
    d.events.iter().map(|e| e.message.clone()).collect()
}

/// Two approvals asked: the first person's approval is counted (202, with
/// who approved so far), the same person's second counts once, and the
/// second person's lets the target proceed; the history names both.
#[tokio::test(flavor = "multi_thread")]
async fn two_required_approvals_need_two_people_and_one_person_counts_once() {
    let relay = RelayProcess::start(RelayOptions::default());
    let alice = relay.service_account("default", "alice", &["approver"], &[]).await;
    let bob = relay.service_account("default", "bob", &["approver"], &[]).await;
    let carol = relay.service_account("default", "carol", &["deployer"], &[]).await;
    let deployer = Deployer::new(&relay);
    let id = start(&relay, &carol, &gated(2)).await;
    let waits = |d: &Deployment| target(d, "prod").state == TargetState::AwaitingApproval;
    deployer.until(&id, "prod waits for its approvals", waits).await;

    let approve = format!("/api/v1/deployments/{id}/targets/prod/approve");
    for _ in 0..2 {
        let (status, body) = relay.call_as("POST", &approve, &alice, None).await;
        assert_eq!(status, 202, "{body}");
        assert_eq!(body["approvedBy"], json!(["alice (default)"]), "alice counts once");
        assert_eq!(body["requiredApprovals"], 2);
    }
    let shown = show(&relay, &id).await;
    assert_eq!(target(&shown, "prod").state, TargetState::AwaitingApproval);
    assert_eq!(shown.approvals.len(), 1);
    assert_eq!(shown.approvals[0].approved_by, ["alice (default)"]);
    assert_eq!(shown.approvals[0].required_approvals, 2);
    // The deployer may not approve at all: approving needs the approve permission.
    let (status, _) = relay.call_as("POST", &approve, &carol, None).await;
    assert_eq!(status, 403);

    let out = relay.cli().env("BOREALIS_TOKEN", &bob).args(["approve", &id, "prod"]).run_async().await;
    assert!(out.status.success(), "{}", out.stderr_text());
    assert!(out.stdout_text().contains("prod of"), "{}", out.stdout_text());
    let done = deployer.finished(&id).await;
    assert_eq!(done.state, DeploymentState::Succeeded);
    assert!(
        events(&done).contains(&"target prod approved by alice (default), bob (default)".to_owned()),
        "{:?}",
        events(&done)
    );
    assert!(events(&done).contains(&"deployment started by carol (default)".to_owned()), "{:?}", events(&done));

    // The CLI says when an approval was only counted.
    let again = start(&relay, &carol, &gated(2)).await;
    deployer.until(&again, "the next one waits", waits).await;
    let out = relay.cli().env("BOREALIS_TOKEN", &alice).args(["approve", &again, "prod"]).run_async().await;
    assert!(out.status.success(), "{}", out.stderr_text());
    assert!(
        out.stdout_text().contains("approval counted, 1 of 2 (alice (default)); it waits for more"),
        "{}",
        out.stdout_text()
    );
}

/// A team that forbids self-approval: whoever started a deployment is
/// refused (403, saying why) and someone else approves it; rejecting one's
/// own stays allowed. Only the team's admins may change the rule.
#[tokio::test(flavor = "multi_thread")]
async fn a_team_that_forbids_it_refuses_approving_ones_own_deployment() {
    let relay = RelayProcess::start(RelayOptions::default());
    let out = relay.cli().args(["teams", "create", "payments"]).run_async().await;
    assert!(out.status.success(), "{}", out.stderr_text());
    let ci = relay.service_account("payments", "ci", &["deployer", "approver"], &[]).await;
    let lead = relay.service_account("payments", "lead", &["approver"], &[]).await;
    let owner = relay.service_account("payments", "owner", &["admin"], &[]).await;

    let (status, _) =
        relay.call_as("PATCH", "/api/v1/teams/payments", &ci, Some(json!({"forbidSelfApproval": true}))).await;
    assert_eq!(status, 403, "a deployer and approver does not manage the team");
    let out = relay
        .cli()
        .env("BOREALIS_TOKEN", &owner)
        .args(["teams", "update", "payments", "--forbid-self-approval", "true"])
        .run_async()
        .await;
    assert!(out.status.success(), "{}", out.stderr_text());
    assert!(out.stdout_text().contains("team payments: self-approval forbidden"), "{}", out.stdout_text());
    let listed = relay.cli().args(["--json", "teams", "list"]).run_async().await;
    let teams: borealis_api::TeamList = serde_json::from_str(&listed.stdout_text()).unwrap();
    let payments = teams.teams.iter().find(|t| t.name == "payments").unwrap();
    assert!(payments.forbid_self_approval);

    let deployer = Deployer::new(&relay);
    let id = start(&relay, &ci, &gated(1)).await;
    deployer.until(&id, "prod waits", |d| target(d, "prod").state == TargetState::AwaitingApproval).await;
    let approve = format!("/api/v1/deployments/{id}/targets/prod/approve");
    let (status, body) = relay.call_as("POST", &approve, &ci, None).await;
    assert_eq!(status, 403, "{body}");
    assert_eq!(
        body["detail"],
        format!(
            "ci (payments) started deployment {id} and may not approve it: team \"payments\" forbids approving one's own deployment"
        )
    );
    let (status, body) = relay.call_as("POST", &approve, &lead, None).await;
    assert_eq!(status, 200, "{body}");
    let done = deployer.finished(&id).await;
    assert!(events(&done).contains(&"target prod approved by lead (payments)".to_owned()), "{:?}", events(&done));

    // Rejecting one's own is no conflict of interest.
    let own = start(&relay, &ci, &gated(1)).await;
    deployer.until(&own, "prod waits", |d| target(d, "prod").state == TargetState::AwaitingApproval).await;
    let (status, body) =
        relay.call_as("POST", &format!("/api/v1/deployments/{own}/targets/prod/reject"), &ci, None).await;
    assert_eq!(status, 200, "{body}");
    let rejected = deployer.finished(&own).await;
    let reason = target(&rejected, "prod").reason.clone().unwrap_or_default();
    assert!(reason.ends_with("rejected by ci (payments)"), "{reason}");

    // Where the team allows it (the default), one's own may be approved.
    let out = relay
        .cli()
        .env("BOREALIS_TOKEN", &owner)
        .args(["teams", "update", "payments", "--forbid-self-approval", "false"])
        .run_async()
        .await;
    assert!(out.status.success(), "{}", out.stderr_text());
    let allowed = start(&relay, &ci, &gated(1)).await;
    deployer.until(&allowed, "prod waits", |d| target(d, "prod").state == TargetState::AwaitingApproval).await;
    let (status, body) =
        relay.call_as("POST", &format!("/api/v1/deployments/{allowed}/targets/prod/approve"), &ci, None).await;
    assert_eq!(status, 200, "{body}");
}

/// An abort and a run's cancel say who asked, in the API and the history.
#[tokio::test(flavor = "multi_thread")]
async fn an_abort_and_a_cancel_name_who_asked() {
    // Loopback allowed, so the run's refused connection is retried, not refused by the guard.
    let relay = RelayProcess::start(RelayOptions { direct_allow: vec!["127.0.0.0/8".into()], ..Default::default() });
    let ci = relay.service_account("default", "ci", &["deployer"], &[]).await;
    let deployer = Deployer::new(&relay);
    let id = start(&relay, &ci, &gated(1)).await;
    deployer.until(&id, "prod waits", |d| target(d, "prod").state == TargetState::AwaitingApproval).await;
    let (status, body) = relay
        .call_as("POST", &format!("/api/v1/deployments/{id}/abort"), &ci, Some(json!({"reason": "bad build"})))
        .await;
    assert_eq!(status, 202, "{body}");
    assert_eq!(body["abort"]["requestedBy"], "ci (default)");
    let done = deployer.finished(&id).await;
    assert_eq!(done.reason.as_deref(), Some("aborted by ci (default): bad build"));

    let file = "webhooks:
  - name: check
    method: POST
    uriTemplate: http://127.0.0.1:9/never
    networkMode: direct
    retryCount: 5
";
    let (status, run) =
        relay.call_as("POST", "/api/v1/webhook-runs", &ci, Some(json!({"file": file, "name": "check"}))).await;
    assert_eq!(status, 201, "{run}");
    let run_id = run["id"].as_str().unwrap();
    let (status, cancelled) = relay.call_as("POST", &format!("/api/v1/webhook-runs/{run_id}/cancel"), &ci, None).await;
    assert_eq!(status, 200, "{cancelled}");
    assert_eq!(cancelled["reason"], "cancelled by ci (default)");
}
