//! Analysis steps (issue 15): metric providers, and judgment against a real
//! Prometheus, direct or through an agent.

use borealis_tests::process::OutputText;
use borealis_tests::{RelayOptions, RelayProcess, TempDir};

fn loopback_relay() -> RelayProcess {
    RelayProcess::start(RelayOptions { direct_allow: vec!["127.0.0.0/8".into()], ..Default::default() })
}

#[tokio::test]
async fn providers_are_created_listed_and_deleted_and_only_prometheus_is_accepted() {
    let relay = loopback_relay();
    let created = relay
        .cli()
        .args([
            "providers",
            "create",
            "prom",
            "--type",
            "prometheus",
            "--url",
            "http://127.0.0.1:9/",
            "--header",
            "Authorization: Bearer {{secrets.prom_token}}",
        ])
        .run_async()
        .await;
    assert!(created.status.success(), "{}", created.stderr_text());
    let again = relay
        .cli()
        .args(["providers", "create", "prom", "--type", "prometheus", "--url", "http://x/"])
        .run_async()
        .await;
    assert!(!again.status.success());
    assert!(again.stderr_text().contains("a metric provider named \"prom\" exists already"), "{}", again.stderr_text());
    let datadog =
        relay.cli().args(["providers", "create", "dd", "--type", "datadog", "--url", "http://x/"]).run_async().await;
    assert!(!datadog.status.success());
    assert!(
        datadog.stderr_text().contains("unsupported provider type \"datadog\" (supported: prometheus)"),
        "{}",
        datadog.stderr_text()
    );
    let listed = relay.cli().args(["--json", "providers", "list"]).run_async().await;
    let value: serde_json::Value = serde_json::from_str(&listed.stdout_text()).unwrap();
    let providers = value["providers"].as_array().unwrap();
    assert_eq!(providers.len(), 1, "{value}");
    assert_eq!(providers[0]["type"], "prometheus");
    assert_eq!(providers[0]["headers"][0]["value"], "Bearer {{secrets.prom_token}}", "templates are kept, not values");
    let table = relay.cli().args(["providers", "list"]).run_async().await.stdout_text();
    assert!(table.contains("prom") && table.contains("http://127.0.0.1:9/"), "{table}");
    let deleted = relay.cli().args(["providers", "delete", "prom"]).run_async().await;
    assert!(deleted.status.success(), "{}", deleted.stderr_text());
    let gone = relay.cli().args(["providers", "delete", "prom"]).run_async().await;
    assert!(gone.stderr_text().contains("no metric provider named \"prom\""), "{}", gone.stderr_text());
}

#[tokio::test]
async fn a_deployment_naming_an_unknown_provider_is_refused_where_it_names_it() {
    let relay = loopback_relay();
    let dir = TempDir::new("analysis");
    let file = "\
application: app
targets:
  prod:
    constraints:
      beforeDeployment:
        - analysis:
            metricProviderName: nowhere
            interval: 1
            units: seconds
            queries: [q]
analysis:
  queries:
    - {name: q, queryTemplate: up, upperLimit: 1}
";
    let path = dir.path().join("d.yaml");
    std::fs::write(&path, file).unwrap();
    let out = relay.cli().args(["deploy", "-f", path.to_str().unwrap()]).run_async().await;
    assert!(!out.status.success());
    let stderr = out.stderr_text();
    assert!(
        stderr.contains("targets.prod.constraints.beforeDeployment[0].analysis.metricProviderName: unknown metric provider \"nowhere\" (none is defined; create it with borealis providers create) at 7:33"),
        "{stderr}"
    );
}
