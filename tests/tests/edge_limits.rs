//! Limits at the relay's edge that an outsider must not be able to turn
//! against the relay or other clients: request bodies that never arrive,
//! bodies too large to hold, failed authentications behind a balancer, and
//! forwarding headers from someone who is not a trusted proxy.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use borealis_tests::balancer::Balancer;
use borealis_tests::{AgentProcess, RelayOptions, RelayProcess, eventually, rss_kib};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

fn host_port(url: &str) -> SocketAddr {
    url.split("://").nth(1).unwrap().trim_end_matches('/').parse().unwrap()
}

/// Connects from `from` to `to` and sends `head` and `body`; `None` when
/// the relay refused the connection (over a cap) or closed it at once.
async fn send_partial(from: [u8; 4], to: SocketAddr, head: &str, body: &[u8]) -> Option<TcpStream> {
    let mut stream = borealis_tests::connect_from(from, to).await.ok()?;
    stream.write_all(head.as_bytes()).await.ok()?;
    // A large body fills the socket buffers of a relay that does not read
    // it; what could not be written within a few seconds is not written.
    let _ = tokio::time::timeout(Duration::from_secs(5), stream.write_all(body)).await;
    Some(stream)
}

/// A request head for `path` announcing a body of `length` bytes.
fn head(path: &str, length: usize, extra: &str) -> String {
    format!(
        "POST {path} HTTP/1.1\r\nHost: relay\r\nContent-Type: application/x-www-form-urlencoded\r\n{extra}Content-Length: {length}\r\n\r\n"
    )
}

/// Waits until the relay closes `stream` (EOF or a reset); fails after
/// [`borealis_tests::PATIENCE`] if it never does.
async fn closed(mut stream: TcpStream) {
    let mut buffer = [0u8; 4096];
    let waited = tokio::time::timeout(borealis_tests::PATIENCE, async {
        loop {
            match stream.read(&mut buffer).await {
                Ok(0) | Err(_) => return,
                // A reply (401, 413, 408) may come before the close.
                Ok(_) => continue,
            }
        }
    })
    .await;
    assert!(waited.is_ok(), "the relay never closed a connection whose body stalled");
}

fn client_from(ip: [u8; 4]) -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .local_address(IpAddr::from(ip))
        .timeout(borealis_tests::PATIENCE)
        .build()
        .unwrap()
}

async fn token_status(client: &reqwest::Client, base: &str, client_id: &str, secret: &str) -> u16 {
    let reply = client
        .post(format!("{base}/oauth/token"))
        .form(&[("grant_type", "client_credentials"), ("client_id", client_id), ("client_secret", secret)])
        .send()
        .await
        .unwrap_or_else(|e| panic!("POST {base}/oauth/token: {e}"));
    reply.status().as_u16()
}

/// Four attacker addresses each open 200 connections and send a request
/// head and a part of its body on every route that authenticates (token
/// endpoints on both listeners, the callback with a valid token, the
/// console's sign-in), then nothing. Throughout, a client from a fifth
/// address gets tokens and `/healthz`; every stalled connection is closed
/// by the relay on its body timeout, which it counts.
#[tokio::test(flavor = "multi_thread")]
async fn stalled_bodies_are_cut_off_and_lock_no_one_out() {
    let _ = rlimit::increase_nofile_limit(16_384);
    let relay = RelayProcess::start(RelayOptions {
        extra_args: vec!["--body-timeout".into(), "3s".into()],
        wrapper: vec!["prlimit".into(), "--nofile=1024:1024".into(), "--".into()],
        ..Default::default()
    });
    let (client_id, secret) = relay.create_client("stalling-system");
    let (_, token) = borealis_tests::token_reply(&relay.http_url, &client_id, &secret).await;
    let token = token["access_token"].as_str().unwrap().to_owned();
    let (agent_id, agent_secret) = relay.create_agent("bystander");

    let watching = tokio_util::sync::CancellationToken::new();
    let watcher = tokio::spawn({
        let (url, stop, id, secret) = (relay.http_url.clone(), watching.clone(), client_id.clone(), secret.clone());
        async move {
            let client = client_from([127, 0, 0, 9]);
            let mut served = 0;
            while !stop.is_cancelled() {
                let health = client.get(format!("{url}/healthz")).send().await.expect("/healthz answers");
                assert!(health.status().is_success(), "/healthz: {}", health.status());
                assert_eq!(token_status(&client, &url, &id, &secret).await, 200, "the bystander's token");
                served += 1;
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            served
        }
    });

    let http = host_port(&relay.http_url);
    let agents = host_port(&relay.agents_url);
    let routes: [(SocketAddr, String); 4] = [
        (http, head("/oauth/token", 1000, "")),
        (agents, head("/oauth/token", 1000, "")),
        (http, head("/callbacks/some-run/callback", 1000, &format!("Authorization: Bearer {token}\r\n"))),
        (http, head("/sign-in", 1000, "")),
    ];
    let mut attacks = tokio::task::JoinSet::new();
    for attacker in 2..=5u8 {
        for i in 0..200 {
            let (to, head) = routes[i % routes.len()].clone();
            attacks.spawn(async move { send_partial([127, 0, 0, attacker], to, &head, b"grant_type=cli").await });
        }
    }
    let mut held = Vec::new();
    while let Some(stream) = attacks.join_next().await {
        held.extend(stream.unwrap());
    }
    assert!(!held.is_empty());

    // The bystander connects an agent meanwhile, and it is served.
    let agent = AgentProcess::start(&relay.agents_url, &agent_id, &agent_secret, &["--allow-any"]);
    agent.wait_connected(Duration::from_secs(10)).await;

    let stalled = held.len();
    let mut closing = tokio::task::JoinSet::new();
    for stream in held {
        closing.spawn(closed(stream));
    }
    while let Some(done) = closing.join_next().await {
        done.unwrap();
    }
    // Each was either over its address's cap (closed at once) or admitted
    // and cut off on its body timeout.
    let timeouts = relay.metric("borealis_request_body_timeouts_total").await;
    let at_the_cap = relay.metric("borealis_connections_refused_total{listener=\"http\",cap=\"peer\"}").await
        + relay.metric("borealis_connections_refused_total{listener=\"agents\",cap=\"peer\"}").await;
    assert!(timeouts > 0.0);
    assert!(timeouts + at_the_cap >= stalled as f64, "{timeouts} body timeouts + {at_the_cap} refused of {stalled}");
    // No one else was refused: four addresses cannot fill the relay.
    assert_eq!(relay.metric("borealis_connections_refused_total{listener=\"http\",cap=\"total\"}").await, 0.0);
    assert_eq!(relay.metric("borealis_connections_refused_total{listener=\"agents\",cap=\"total\"}").await, 0.0);
    watching.cancel();
    let served = watcher.await.expect("the bystander was served every time");
    assert!(served >= 10, "the bystander was served {served} times");
    assert!(!relay.log().contains("Too many open files"));
}

/// 200 connections that each announce a 2 MB body and send 1.9 MB of it to
/// the routes an outsider reaches (token endpoints, callback and admin
/// routes without a token, the sign-in form): the relay reads no body before
/// its credential, and no more than a small form, so its memory grows by
/// less than 64 MiB.
#[tokio::test(flavor = "multi_thread")]
async fn partial_large_bodies_do_not_grow_memory() {
    let _ = rlimit::increase_nofile_limit(16_384);
    let relay = RelayProcess::start(RelayOptions {
        extra_args: vec!["--body-timeout".into(), "30s".into()],
        ..Default::default()
    });
    let http = host_port(&relay.http_url);
    let agents = host_port(&relay.agents_url);
    // Warm up: the first requests allocate what the relay keeps anyway.
    let client = client_from([127, 0, 0, 9]);
    for _ in 0..20 {
        assert_eq!(token_status(&client, &relay.http_url, "agt_none", "x").await, 401);
    }
    let before = rss_kib(relay.pid());
    let routes: [(SocketAddr, &str); 6] = [
        (http, "/oauth/token"),
        (agents, "/oauth/token"),
        (http, "/callbacks/some-run/callback"),
        (http, "/sign-in"),
        (http, "/api/v1/webhook-runs"),
        (http, "/api/v1/proxy?url=http://127.0.0.1:9/"),
    ];
    let body = vec![b'a'; 1_900_000];
    let mut attacks = tokio::task::JoinSet::new();
    for i in 0..200usize {
        let (to, path) = routes[i % routes.len()];
        let head = head(path, 2_000_000, "");
        let body = body.clone();
        let from = [127, 0, 0, 2 + (i % 4) as u8];
        attacks.spawn(async move { send_partial(from, to, &head, &body).await });
    }
    let mut held = Vec::new();
    while let Some(stream) = attacks.join_next().await {
        held.extend(stream.unwrap());
    }
    let during = rss_kib(relay.pid());
    let grown_mib = during.saturating_sub(before) / 1024;
    eprintln!("relay RSS {before} KiB before, {during} KiB with {} partial 2 MB bodies sent", held.len());
    assert!(grown_mib <= 64, "the relay grew by {grown_mib} MiB holding partial bodies");
    drop(held);
    assert_eq!(token_status(&client, &relay.http_url, "agt_none", "x").await, 401, "the relay still answers");
}

/// Behind HAProxy sending the PROXY protocol, with the relay trusting it:
/// 100 wrong secrets from one client are counted against that client (the
/// log names its real address and the client id), another client is not
/// limited at all, the right secret is served to both, and an agent
/// connects through the balancer meanwhile.
#[tokio::test(flavor = "multi_thread")]
async fn behind_a_trusted_balancer_one_client_cannot_limit_the_others() {
    let relay = RelayProcess::start(RelayOptions {
        extra_args: vec![
            "--trusted-proxy".into(),
            "127.0.0.1/32".into(),
            "--auth-failures-per-minute".into(),
            "20".into(),
        ],
        ..Default::default()
    });
    let balancer = Balancer::start_sending_proxy(&[
        ("http", vec![host_port(&relay.http_url)]),
        ("agents", vec![host_port(&relay.agents_url)]),
    ]);
    let (client_id, secret) = relay.create_client("behind-balancer");
    let guesser = client_from([127, 0, 0, 2]);
    let other = client_from([127, 0, 0, 3]);
    let url = balancer.url("http");

    let mut statuses = Vec::new();
    for i in 0..100 {
        statuses.push(token_status(&guesser, &url, &client_id, &format!("guess-{i}")).await);
    }
    assert!(statuses[..19].iter().all(|s| *s == 401), "{statuses:?}");
    assert!(statuses[30..].iter().all(|s| *s == 429), "the guesser is limited: {statuses:?}");

    // The right secret is served to the guesser's address too, and another
    // client behind the same balancer is not limited at all.
    assert_eq!(token_status(&guesser, &url, &client_id, &secret).await, 200);
    assert_eq!(token_status(&other, &url, &client_id, &secret).await, 200);
    let (other_id, other_secret) = relay.create_client("another-system");
    assert_eq!(token_status(&other, &url, &other_id, "a slip").await, 401, "not 429: only the guesser is limited");
    assert_eq!(token_status(&other, &url, &other_id, &other_secret).await, 200);
    let admin = other.get(format!("{url}/api/v1/agents")).bearer_auth(relay.admin_token()).send().await.unwrap();
    assert_eq!(admin.status(), 200);

    let (agent_id, agent_secret) = relay.create_agent("through-balancer");
    let agent = AgentProcess::start(&balancer.url("agents"), &agent_id, &agent_secret, &["--allow-any"]);
    agent.wait_connected(Duration::from_secs(10)).await;

    let log = relay.log();
    let failures: Vec<&str> = log.lines().filter(|l| l.contains("authentication failed")).collect();
    assert!(failures.len() >= 100, "{} failures logged", failures.len());
    let guesses = failures.iter().filter(|l| l.contains("peer=127.0.0.2")).count();
    assert!(guesses >= 100, "the guesses are logged with the client's address: {failures:?}");
    assert!(failures.iter().all(|l| !l.contains("peer=127.0.0.1 ")), "the balancer's address was blamed");
    assert!(failures.iter().any(|l| l.contains(&client_id)), "the client id is logged");
    assert!(!log.contains("guess-1"), "a presented secret was logged");
    drop(balancer);
}

/// Forwarding headers count only from a trusted proxy: from 127.0.0.2, when
/// only 127.0.0.1 is trusted, guesses with a new forged `X-Forwarded-For`
/// each time are all counted against the real peer, and limited.
#[tokio::test(flavor = "multi_thread")]
async fn a_forged_forwarding_header_is_ignored() {
    let relay = RelayProcess::start(RelayOptions {
        extra_args: vec![
            "--auth-failures-per-minute".into(),
            "20".into(),
            "--trusted-proxy".into(),
            "127.0.0.1/32".into(),
        ],
        ..Default::default()
    });
    let client = client_from([127, 0, 0, 2]);
    let mut statuses = Vec::new();
    for i in 0..40u8 {
        let reply = client
            .post(format!("{}/oauth/token", relay.http_url))
            .header("x-forwarded-for", format!("198.51.100.{i}"))
            .header("forwarded", format!("for=203.0.113.{i}"))
            .form(&[("grant_type", "client_credentials"), ("client_id", &format!("agt_{i}")), ("client_secret", "x")])
            .send()
            .await
            .unwrap();
        statuses.push(reply.status().as_u16());
    }
    assert!(statuses[25..].iter().all(|s| *s == 429), "{statuses:?}");
    let log = relay.log();
    let failures: Vec<&str> = log.lines().filter(|l| l.contains("authentication failed")).collect();
    assert!(failures.iter().all(|l| l.contains("peer=127.0.0.2")), "{failures:?}");
    assert!(!log.contains("198.51.100.") && !log.contains("203.0.113."), "a forged address was believed");
}

/// A malformed client id (here with a NUL, which PostgreSQL cannot even
/// be asked about) is refused as a failed authentication: 401, counted and
/// logged, never a 500.
#[tokio::test(flavor = "multi_thread")]
async fn a_malformed_client_id_is_a_counted_failure() {
    let schema = borealis_tests::postgres::Schema::new();
    let relay = RelayProcess::start(RelayOptions {
        extra_args: vec!["--database-url".into(), schema.database_url()],
        ..Default::default()
    });
    let client = reqwest::Client::new();
    for body in [
        "grant_type=client_credentials&client_id=a%00b&client_secret=x",
        "grant_type=client_credentials&client_id=a%0Ab&client_secret=x",
    ] {
        let reply = client
            .post(format!("{}/oauth/token", relay.http_url))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(reply.status(), 401, "{body}");
    }
    let counted = relay.metric("borealis_auth_failures_total{credential=\"client_secret\"}").await;
    assert_eq!(counted, 2.0);
    let log = relay.log();
    assert!(!log.contains("internal error"), "{log}");
    eventually("the failures are logged", Duration::ZERO, || async {
        (relay.log().lines().filter(|l| l.contains("authentication failed")).count() >= 2).then_some(())
    })
    .await;
}

/// HTTP/2 multiplexes thousands of streams on one connection, so requests
/// in flight are capped per client address across its connections: with a
/// cap of 50, of 200 streams whose bodies never end 150 are answered 503 at
/// once, and another address is served meanwhile.
#[tokio::test(flavor = "multi_thread")]
async fn http2_streams_in_flight_are_capped_per_address() {
    let relay = RelayProcess::start(RelayOptions {
        // A long body timeout: the 50 in flight must still be waiting at the end.
        extra_args: vec!["--max-requests-per-peer".into(), "50".into(), "--body-timeout".into(), "10m".into()],
        ..Default::default()
    });
    let attacker = reqwest::Client::builder()
        .no_proxy()
        .http2_prior_knowledge()
        .local_address(IpAddr::from([127, 0, 0, 2]))
        .build()
        .unwrap();
    let (done, mut answers) = tokio::sync::mpsc::unbounded_channel();
    let mut streams = tokio::task::JoinSet::new();
    for _ in 0..200 {
        let (client, url, done) = (attacker.clone(), format!("{}/oauth/token", relay.http_url), done.clone());
        streams.spawn(async move {
            let never = futures_util::stream::pending::<Result<bytes::Bytes, std::io::Error>>();
            let reply = client
                .post(url)
                .header("content-type", "application/x-www-form-urlencoded")
                .body(reqwest::Body::wrap_stream(never))
                .send()
                .await;
            let _ = done.send(reply.map(|r| r.status().as_u16()).ok());
        });
    }
    let mut refused = 0;
    while refused < 150 {
        let answer = tokio::time::timeout(borealis_tests::PATIENCE, answers.recv()).await;
        let status = answer.expect("150 streams over the cap are answered").unwrap();
        assert_eq!(status, Some(503), "only streams over the cap are answered");
        refused += 1;
    }
    let counted = relay.metric("borealis_requests_refused_total{listener=\"http\",cap=\"peer\"}").await;
    assert_eq!(counted, 150.0);
    let other = client_from([127, 0, 0, 3]);
    let health = other.get(format!("{}/healthz", relay.http_url)).send().await.unwrap();
    assert_eq!(health.status(), 200, "another address is served");
    assert!(answers.try_recv().is_err(), "the 50 in flight are still waiting for their bodies");
    streams.abort_all();
}
