//! The load generator against the echo server, both in-process on port 0.

use std::time::Duration;

use borealis_bench::{echo, load};

#[tokio::test(flavor = "multi_thread")]
async fn the_load_generator_counts_what_the_echo_server_sends_back() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(echo::serve(listener));
    let spec = load::LoadSpec {
        url: format!("http://{addr}/echo").parse().unwrap(),
        method: http::Method::POST,
        headers: Vec::new(),
        body: bytes::Bytes::from(vec![b'b'; 1000]),
        concurrency: 4,
        duration: Duration::from_millis(300),
    };
    let result = load::run(&spec).await.unwrap();
    assert_eq!(result.errors, 0, "{:?}", result.first_error);
    assert!(result.requests > 0);
    assert_eq!(result.bytes_received, result.requests * 1000, "every request got its body back");
    assert_eq!(result.latency.len(), result.requests);

    let spec = load::LoadSpec {
        url: format!("http://{addr}/bytes/70000").parse().unwrap(),
        method: http::Method::GET,
        body: bytes::Bytes::new(),
        ..spec
    };
    let result = load::run(&spec).await.unwrap();
    assert_eq!(result.bytes_received, result.requests * 70_000);

    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let spec = load::LoadSpec {
        url: format!("http://{closed}/").parse().unwrap(),
        duration: Duration::from_millis(100),
        ..spec
    };
    let result = load::run(&spec).await.unwrap();
    assert_eq!(result.requests, 0);
    assert!(
        result.errors > 0 && result.first_error.unwrap().starts_with("connect"),
        "a dead target is an error, not a pass"
    );
}
