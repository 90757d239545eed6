//! Test harness: the real `borealis-relay`, `borealis-agent` and `borealis`
//! binaries as processes, and small HTTP servers on port 0 to stand for the
//! systems behind them.
//!
//! Binaries are taken from the cargo target dir next to the test executable;
//! `scripts/test.sh` builds them before running the tests.

pub mod balancer;
pub mod console;
pub mod external;
pub mod module_graph;
pub mod postgres;
pub mod process;
pub mod prometheus;
pub mod receiver;
pub mod servers;

pub use process::{AgentProcess, Cli, RelayOptions, RelayProcess, cli, rss_kib};

use std::time::{Duration, Instant};

/// Installs ring as the test process's TLS provider. Idempotent.
pub fn install_crypto() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// The least a test waits for a state before it fails. A deadline is there
/// only so that a test that would hang fails, naming what never happened; it
/// is never a bound on how fast the system is (a loaded two-core machine
/// shared with builds must not fail a test). What a test claims about time
/// it checks on what the system recorded: attempt start times, a run's
/// deadline, a log line's timestamp, a counter.
pub const PATIENCE: Duration = Duration::from_secs(30);

/// Polls `check` every 50 ms until it returns `Some`; panics, saying `what`
/// never happened, after `within` or [`PATIENCE`], whichever is longer.
pub async fn eventually<T, F, Fut>(what: &str, within: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let within = within.max(PATIENCE);
    let start = Instant::now();
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(start.elapsed() < within, "this never happened (waited {within:?}): {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A TCP connection to `to` from the loopback address `from` (127.0.0.2
/// and up stand for other clients); an error after 5 s without one.
pub async fn connect_from(from: [u8; 4], to: std::net::SocketAddr) -> std::io::Result<tokio::net::TcpStream> {
    let socket = tokio::net::TcpSocket::new_v4()?;
    socket.bind(std::net::SocketAddr::from((from, 0)))?;
    tokio::time::timeout(Duration::from_secs(5), socket.connect(to))
        .await
        .unwrap_or_else(|_| Err(std::io::Error::new(std::io::ErrorKind::TimedOut, format!("connecting to {to}"))))
}

/// `POST <base>/oauth/token` with client credentials (`base` is either
/// listener): the reply's status and JSON body.
pub async fn token_reply(base: &str, client_id: &str, client_secret: &str) -> (u16, serde_json::Value) {
    let reply = reqwest::Client::builder()
        .no_proxy()
        .build()
        .unwrap()
        .post(format!("{base}/oauth/token"))
        .form(&[("grant_type", "client_credentials"), ("client_id", client_id), ("client_secret", client_secret)])
        .send()
        .await
        .unwrap();
    (reply.status().as_u16(), reply.json().await.unwrap_or_default())
}

/// The instant a log line was written, from its timestamp: the first word
/// of a text line, or the `timestamp` of a JSON one. It is the logging
/// process's own record of when something happened.
pub fn log_time(line: &str) -> std::time::SystemTime {
    let stamp = match serde_json::from_str::<serde_json::Value>(line) {
        Ok(serde_json::Value::Object(record)) => record["timestamp"].as_str().unwrap_or_default().to_owned(),
        _ => line.split_whitespace().next().unwrap_or_default().to_owned(),
    };
    humantime::parse_rfc3339(&stamp).unwrap_or_else(|e| panic!("no timestamp ({e}) in {line:?}"))
}

/// An RFC 3339 time as the API writes it (`createdAt`, `startedAt`, ...).
pub fn api_time(value: &serde_json::Value) -> std::time::SystemTime {
    let text = value.as_str().unwrap_or_else(|| panic!("not a time: {value}"));
    humantime::parse_rfc3339(text).unwrap_or_else(|e| panic!("{text:?}: {e}"))
}

/// `later - earlier`, panicking (with both) when `later` is before `earlier`.
pub fn between(earlier: std::time::SystemTime, later: std::time::SystemTime) -> Duration {
    later.duration_since(earlier).unwrap_or_else(|_| panic!("{later:?} is before {earlier:?}"))
}

/// A fresh directory under the system temp dir, removed on drop; `tag`
/// starts its name, to tell in `/tmp` which test left it.
pub struct TempDir(tempfile::TempDir);

impl TempDir {
    pub fn new(tag: &str) -> Self {
        let dir = tempfile::Builder::new().prefix(&format!("borealis-test-{tag}-")).tempdir().expect("create temp dir");
        Self(dir)
    }

    pub fn path(&self) -> &std::path::Path {
        self.0.path()
    }
}

/// Writes a test CA and a server certificate for `localhost` and
/// `127.0.0.1` into `dir`; returns (ca.pem, cert.pem, key.pem).
pub fn generate_tls(dir: &std::path::Path) -> (std::path::PathBuf, std::path::PathBuf, std::path::PathBuf) {
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params.distinguished_name.push(DnType::CommonName, "Borealis test CA");
    let ca_cert = ca_params.self_signed(&ca_key).unwrap();
    let issuer = Issuer::new(ca_params, ca_key);
    let leaf_key = KeyPair::generate().unwrap();
    let leaf = CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])
        .unwrap()
        .signed_by(&leaf_key, &issuer)
        .unwrap();
    let paths = (dir.join("ca.pem"), dir.join("cert.pem"), dir.join("key.pem"));
    std::fs::write(&paths.0, ca_cert.pem()).unwrap();
    std::fs::write(&paths.1, leaf.pem()).unwrap();
    std::fs::write(&paths.2, leaf_key.serialize_pem()).unwrap();
    paths
}
