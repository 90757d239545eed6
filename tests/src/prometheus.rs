//! A real Prometheus (Debian's `prometheus` binary) on a free loopback
//! port, scraping a tiny exporter the test serves and sets.
//!
//! `Prometheus::start` writes a config with a 1 s scrape interval and its
//! own TSDB directory; nothing of the system's Prometheus service is used.
//! Before a test relies on a value, it waits for the sample with
//! [`Prometheus::wait_value`] (Prometheus needs a scrape or two).

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::routing::get;

use crate::temp_dir::TempDir;
use crate::time::eventually;

/// The exporter's gauge, `borealis_test_gauge`; `None` serves no series.
#[derive(Clone, Default)]
pub struct Exporter {
    pub addr: Option<SocketAddr>,
    value: Arc<Mutex<Option<f64>>>,
}

impl Exporter {
    /// Serves `GET /metrics` on 127.0.0.1:0.
    pub async fn start(initial: Option<f64>) -> Self {
        let mut exporter = Exporter { addr: None, value: Arc::new(Mutex::new(initial)) };
        let router = Router::new().route("/metrics", get(metrics)).with_state(exporter.value.clone());
        exporter.addr = Some(crate::servers::serve(router).await);
        exporter
    }

    pub fn set(&self, value: Option<f64>) {
        *self.value.lock().unwrap() = value;
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr.expect("started")
    }
}

async fn metrics(State(value): State<Arc<Mutex<Option<f64>>>>) -> String {
    let mut out = String::from("# HELP borealis_test_gauge A gauge the test sets.\n# TYPE borealis_test_gauge gauge\n");
    if let Some(v) = *value.lock().unwrap() {
        out.push_str(&format!("borealis_test_gauge {v}\n"));
    }
    out
}

/// A Prometheus process; killed on drop.
pub struct Prometheus {
    child: Child,
    _dir: TempDir,
    pub url: String,
    pub addr: SocketAddr,
}

impl Prometheus {
    /// Starts Prometheus scraping `targets` every second, and waits until it
    /// answers queries.
    pub async fn start(targets: &[SocketAddr]) -> Self {
        let dir = TempDir::new("prometheus");
        let targets: Vec<String> = targets.iter().map(|t| format!("'{t}'")).collect();
        let config = format!(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nscrape_configs:\n  - job_name: test\n    static_configs:\n      - targets: [{}]\n",
            targets.join(", ")
        );
        let config_path = dir.path().join("prometheus.yml");
        std::fs::write(&config_path, config).unwrap();
        let port = {
            let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            listener.local_addr().unwrap().port()
        };
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        let log = std::fs::File::create(dir.path().join("prometheus.log")).unwrap();
        let child = Command::new("prometheus")
            .arg(format!("--web.listen-address={addr}"))
            .arg(format!("--storage.tsdb.path={}", dir.path().join("data").display()))
            .arg(format!("--config.file={}", config_path.display()))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start prometheus (apt-get install -y prometheus)");
        let prometheus = Prometheus { child, _dir: dir, url: format!("http://{addr}"), addr };
        let ready = format!("{}/-/ready", prometheus.url);
        eventually("prometheus is ready", Duration::from_secs(30), || async {
            let ok = reqwest::get(&ready).await.ok()?.status().is_success();
            ok.then_some(())
        })
        .await;
        prometheus
    }

    /// Runs an instant query; the reply's JSON.
    pub async fn query(&self, query: &str) -> serde_json::Value {
        let url = format!("{}/api/v1/query", self.url);
        let reply = reqwest::Client::new().get(url).query(&[("query", query)]).send().await.unwrap();
        reply.json().await.unwrap()
    }

    /// Waits until `query` returns exactly `value`.
    pub async fn wait_value(&self, query: &str, value: f64) {
        eventually(&format!("prometheus has {query} = {value}"), Duration::from_secs(30), || async {
            let reply = self.query(query).await;
            let found = reply["data"]["result"][0]["value"][1].as_str()?.parse::<f64>().ok()?;
            (found == value).then_some(())
        })
        .await;
    }

    /// Waits until `query` returns no series.
    pub async fn wait_empty(&self, query: &str) {
        eventually(&format!("prometheus has no {query}"), Duration::from_secs(30), || async {
            let reply = self.query(query).await;
            reply["data"]["result"].as_array()?.is_empty().then_some(())
        })
        .await;
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
