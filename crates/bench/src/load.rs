//! A load generator: `concurrency` keep-alive HTTP/1.1 connections, each
//! sending requests back to back until the duration is over.

use std::time::{Duration, Instant};

use bytes::Bytes;
use hdrhistogram::Histogram;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;

#[derive(Clone, Debug)]
pub struct LoadSpec {
    pub url: url::Url,
    pub method: http::Method,
    pub headers: Vec<(String, String)>,
    pub body: Bytes,
    pub concurrency: usize,
    pub duration: Duration,
}

#[derive(Debug)]
pub struct LoadResult {
    pub requests: u64,
    pub errors: u64,
    pub elapsed: Duration,
    /// Latency in microseconds.
    pub latency: Histogram<u64>,
    pub bytes_received: u64,
    pub first_error: Option<String>,
}

impl LoadResult {
    pub fn per_second(&self) -> f64 {
        self.requests as f64 / self.elapsed.as_secs_f64()
    }

    pub fn millis(&self, quantile: f64) -> f64 {
        self.latency.value_at_quantile(quantile) as f64 / 1000.0
    }

    pub fn max_millis(&self) -> f64 {
        self.latency.max() as f64 / 1000.0
    }
}

struct Worker {
    requests: u64,
    errors: u64,
    bytes: u64,
    latency: Histogram<u64>,
    first_error: Option<String>,
}

/// Latency in microseconds, 1 µs to 60 s, 3 significant figures.
pub fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 60_000_000, 3).expect("valid bounds")
}

/// Runs the load; every connection is opened before the clock starts.
pub async fn run(spec: &LoadSpec) -> anyhow::Result<LoadResult> {
    anyhow::ensure!(spec.url.scheme() == "http", "the load generator speaks plain http:// only");
    let host = spec.url.host_str().ok_or_else(|| anyhow::anyhow!("URL without host"))?.to_owned();
    let addr = format!("{host}:{}", spec.url.port_or_known_default().unwrap_or(80));
    let path = match spec.url.query() {
        Some(q) => format!("{}?{q}", spec.url.path()),
        None => spec.url.path().to_owned(),
    };
    let started = Instant::now();
    let deadline = started + spec.duration;
    let mut tasks = Vec::new();
    for _ in 0..spec.concurrency {
        let (addr, host, path, spec) = (addr.clone(), host.clone(), path.clone(), spec.clone());
        tasks.push(tokio::spawn(async move { worker(&addr, &host, &path, &spec, deadline).await }));
    }
    let mut total = LoadResult {
        requests: 0,
        errors: 0,
        elapsed: Duration::ZERO,
        latency: histogram(),
        bytes_received: 0,
        first_error: None,
    };
    for task in tasks {
        let worker = task.await?;
        total.requests += worker.requests;
        total.errors += worker.errors;
        total.bytes_received += worker.bytes;
        total.latency.add(&worker.latency)?;
        if total.first_error.is_none() {
            total.first_error = worker.first_error;
        }
    }
    total.elapsed = started.elapsed();
    Ok(total)
}

async fn worker(addr: &str, host: &str, path: &str, spec: &LoadSpec, deadline: Instant) -> Worker {
    let mut me = Worker { requests: 0, errors: 0, bytes: 0, latency: histogram(), first_error: None };
    let mut sender = None;
    while Instant::now() < deadline {
        if sender.is_none() {
            match connect(addr).await {
                Ok(s) => sender = Some(s),
                Err(err) => {
                    me.errors += 1;
                    me.first_error.get_or_insert(format!("connect: {err}"));
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                }
            }
        }
        let client = sender.as_mut().expect("connected");
        let mut request =
            http::Request::builder().method(spec.method.clone()).uri(path).header(http::header::HOST, host);
        for (name, value) in &spec.headers {
            request = request.header(name, value);
        }
        let request = request.body(Full::new(spec.body.clone())).expect("valid request");
        let sent = Instant::now();
        let outcome = async {
            let response = client.send_request(request).await?;
            let status = response.status();
            let mut body = response.into_body();
            let mut received = 0u64;
            while let Some(frame) = body.frame().await {
                if let Ok(data) = frame?.into_data() {
                    received += data.len() as u64;
                }
            }
            Ok::<_, hyper::Error>((status, received))
        }
        .await;
        match outcome {
            Ok((status, received)) if status.is_success() => {
                me.requests += 1;
                me.bytes += received;
                let _ = me.latency.record(sent.elapsed().as_micros().max(1) as u64);
            }
            Ok((status, _)) => {
                me.errors += 1;
                me.first_error.get_or_insert(format!("HTTP {status}"));
            }
            Err(err) => {
                me.errors += 1;
                me.first_error.get_or_insert(err.to_string());
                sender = None;
            }
        }
    }
    me
}

type Sender = hyper::client::conn::http1::SendRequest<Full<Bytes>>;

async fn connect(addr: &str) -> anyhow::Result<Sender> {
    let stream = tokio::net::TcpStream::connect(addr).await?;
    stream.set_nodelay(true)?;
    let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(connection);
    Ok(sender)
}
