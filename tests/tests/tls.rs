//! TLS on the relay, a private CA on the agent, and a proxy on the way out.

use std::sync::atomic::Ordering;
use std::time::Duration;

use borealis_tests::process::OutputText;
use borealis_tests::{AgentProcess, RelayOptions, RelayProcess, TempDir, generate_tls, servers};

fn tls_relay(dir: &TempDir) -> (RelayProcess, std::path::PathBuf) {
    let (ca, cert, key) = generate_tls(dir.path());
    let relay = RelayProcess::start(RelayOptions {
        extra_args: vec![
            "--tls-cert".into(),
            cert.display().to_string(),
            "--tls-key".into(),
            key.display().to_string(),
        ],
        ..Default::default()
    });
    assert!(relay.agents_url.starts_with("https://"), "{}", relay.agents_url);
    (relay, ca)
}

fn https_localhost(url: &str) -> String {
    url.replace("127.0.0.1", "localhost")
}

#[tokio::test(flavor = "multi_thread")]
async fn the_agent_trusts_a_private_ca_and_forwards_over_tls() {
    let dir = TempDir::new("tls");
    let (relay, ca) = tls_relay(&dir);
    let ca_arg = ca.display().to_string();
    let cli = || relay.cli().env("BOREALIS_CA_FILE", &ca_arg);
    let out = cli().args(["agents", "create", "test-rna"]).run_async().await;
    assert!(out.status.success(), "CLI over TLS: {}", out.stderr_text());
    let text = out.stdout_text();
    let field = |key: &str| text.lines().find_map(|l| l.strip_prefix(&format!("{key}: "))).unwrap().to_owned();
    let (upstream, _) = servers::upstream().await;

    let agent = AgentProcess::start(
        &https_localhost(&relay.agents_url),
        &field("client_id"),
        &field("client_secret"),
        &["--ca-file", &ca_arg, "--allow", &upstream.to_string()],
    );
    agent.wait_connected(Duration::from_secs(10)).await;
    let out = cli().args(["proxy", "--agent", "test-rna", &format!("http://{upstream}/fast")]).run_async().await;
    assert_eq!(out.stdout_text(), "fast", "{}", out.stderr_text());

    // Without the CA the relay's certificate is not trusted: no session.
    let untrusting = AgentProcess::start(
        &https_localhost(&relay.agents_url),
        &field("client_id"),
        &field("client_secret"),
        &["--allow", &upstream.to_string()],
    );
    // Its attempt failed on the certificate (it logs why), and it holds no session.
    borealis_tests::eventually("the untrusting agent's connect fails on the certificate", Duration::ZERO, || async {
        let log = untrusting.log();
        (log.contains("certificate") || log.contains("UnknownIssuer")).then_some(())
    })
    .await;
    let ready = reqwest::get(format!("{}/readyz", untrusting.health_url)).await.unwrap();
    assert_eq!(ready.status(), 503);
    assert_eq!(untrusting.metric("borealis_agent_sessions_total").await, 0.0, "{}", untrusting.log());
}

#[tokio::test(flavor = "multi_thread")]
async fn the_agent_reaches_the_relay_through_https_proxy_unless_no_proxy_exempts_it() {
    let dir = TempDir::new("tls-proxy");
    let (relay, ca) = tls_relay(&dir);
    let ca_arg = ca.display().to_string();
    let (client_id, secret) = {
        let out = relay.cli().env("BOREALIS_CA_FILE", &ca_arg).args(["agents", "create", "test-rna"]).run_async().await;
        let text = out.stdout_text();
        let field = |key: &str| text.lines().find_map(|l| l.strip_prefix(&format!("{key}: "))).unwrap().to_owned();
        (field("client_id"), field("client_secret"))
    };
    let (proxy, tunnels) = servers::connect_proxy().await;
    let proxy_url = format!("http://{proxy}");
    let relay_url = https_localhost(&relay.agents_url);

    let proxied = AgentProcess::start_with_env(
        &relay_url,
        &client_id,
        &secret,
        &["--ca-file", &ca_arg, "--allow-any"],
        &[("HTTPS_PROXY", &proxy_url)],
    );
    proxied.wait_connected(Duration::from_secs(10)).await;
    assert_eq!(tunnels.load(Ordering::SeqCst), 1, "the session went through the proxy");
    proxied.kill();

    let exempt = AgentProcess::start_with_env(
        &relay_url,
        &client_id,
        &secret,
        &["--ca-file", &ca_arg, "--allow-any"],
        &[("HTTPS_PROXY", &proxy_url), ("NO_PROXY", "localhost")],
    );
    exempt.wait_connected(Duration::from_secs(10)).await;
    assert_eq!(tunnels.load(Ordering::SeqCst), 1, "NO_PROXY bypasses the proxy");
}
