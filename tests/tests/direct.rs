//! Direct mode: the relay calls the destination itself, under the address guard.

use borealis_tests::process::OutputText;
use borealis_tests::{RelayOptions, RelayProcess, servers};

#[tokio::test(flavor = "multi_thread")]
async fn loopback_and_metadata_addresses_are_refused_unless_allow_listed() {
    let (upstream, hits) = servers::upstream().await;
    let guarded = RelayProcess::start(RelayOptions::default());
    let port = upstream.port();
    for url in [
        format!("http://{upstream}/fast"),
        format!("http://localhost:{port}/fast"),
        format!("http://[::ffff:127.0.0.1]:{port}/fast"),
        format!("http://2130706433:{port}/fast"),
        "http://169.254.169.254/latest/meta-data/".to_owned(),
        "http://10.0.0.1/".to_owned(),
    ] {
        let out = guarded.cli().args(["proxy", &url]).run_async().await;
        assert_eq!(out.status.code(), Some(1), "{url}: {}", out.stderr_text());
        let stderr = out.stderr_text();
        assert!(stderr.contains("not allowed") && stderr.contains("403"), "{url}: {stderr}");
    }
    let out = guarded.cli().args(["proxy", "http://169.254.169.254/"]).run_async().await;
    assert!(out.stderr_text().contains("cloud metadata"), "{}", out.stderr_text());
    assert_eq!(hits.hits(), 0, "a refused destination receives nothing");

    let allowing = RelayProcess::start(RelayOptions { direct_allow: vec!["127.0.0.0/8".into()], ..Default::default() });
    let out = allowing.cli().args(["proxy", "-i", &format!("http://localhost:{port}/status/201")]).run_async().await;
    assert!(out.status.success(), "{}", out.stderr_text());
    assert!(out.stdout_text().starts_with("HTTP/1.1 201"), "{}", out.stdout_text());
    let out = allowing.cli().args(["proxy", "http://169.254.169.254/"]).run_async().await;
    assert!(
        out.stderr_text().contains("cloud metadata"),
        "the allow-list exempts only its range: {}",
        out.stderr_text()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn redirects_are_returned_not_followed() {
    use axum::response::Redirect;
    let (target, target_hits) = servers::upstream().await;
    let redirect = servers::serve(axum::Router::new().route(
        "/go",
        axum::routing::get(move || async move { Redirect::temporary(&format!("http://{target}/fast")) }),
    ))
    .await;
    let relay = RelayProcess::start(RelayOptions { direct_allow: vec!["127.0.0.0/8".into()], ..Default::default() });
    let out = relay.cli().args(["proxy", "-i", &format!("http://{redirect}/go")]).run_async().await;
    assert!(out.stdout_text().starts_with("HTTP/1.1 307"), "{}", out.stdout_text());
    assert_eq!(target_hits.hits(), 0);
}
