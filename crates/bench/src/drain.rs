//! `drain`: a relay crashes with a backlog of pending webhook runs in its
//! store; how fast does a new relay on the same store work through it?
//!
//! The runs call a destination in this process that holds every call
//! unanswered, so that the relay keeps its few hundred attempts in flight
//! and the rest stay pending. Then the relay is killed (SIGKILL: a crash,
//! not a shutdown), the destination starts answering 200 at once, and a new
//! relay starts on the same data dir. The destination counts the calls it
//! gets per second, in the first 10 s and in each minute after the restart,
//! until every run was called.

use std::collections::HashSet;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::{StreamExt, TryStreamExt};
use http_body_util::Empty;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::sync::watch;

use crate::procs::{self, Relay, RelayOptions, TempDir, peak_rss};
use crate::report::{Report, Row, Target};
use crate::scenarios::{api_client, mib};

/// Runs created through the API at once.
const CREATE_CONCURRENCY: usize = 64;
/// The first relay's time limit of one webhook call: longer than creating
/// the backlog takes, so that no held call times out and is retried early.
const HELD_CALL_LIMIT: &str = "10m";
/// The longest the drain is watched after the restart.
const DRAIN_TIME_LIMIT: Duration = Duration::from_secs(20 * 60);
/// No call for this long and the drain has stalled (a relay that died, a
/// run left behind): it is stopped and reported as it stands.
const STALL_LIMIT: Duration = Duration::from_secs(120);
/// Calls per second the first minute must reach (an endpoint that answers
/// at once: the store and the relay set the rate).
const FIRST_MINUTE_GOAL: f64 = 2000.0;

/// The runs' destination: it records every call it receives (when, and
/// whether it is the first of its run, told by `webhook-id`, the run's id)
/// and answers none until released; from then on it answers 200 at once.
struct Destination {
    released: watch::Sender<bool>,
    calls: Mutex<Calls>,
}

#[derive(Default)]
struct Calls {
    /// Every call in the order received: when, and whether it was the
    /// first of its run.
    log: Vec<(Instant, bool)>,
    runs: HashSet<String>,
}

impl Destination {
    fn new() -> Arc<Self> {
        Arc::new(Self { released: watch::channel(false).0, calls: Mutex::default() })
    }

    fn record(&self, run: Option<&str>) {
        let mut calls = self.calls.lock().expect("calls lock");
        let first = run.is_some_and(|id| calls.runs.insert(id.to_owned()));
        calls.log.push((Instant::now(), first));
    }

    /// (calls, distinct runs called) so far.
    fn counts(&self) -> (usize, usize) {
        let calls = self.calls.lock().expect("calls lock");
        (calls.log.len(), calls.runs.len())
    }

    fn release(&self) {
        self.released.send_replace(true);
    }
}

/// Serves `destination` on `listener` until the task is aborted.
async fn serve(listener: tokio::net::TcpListener, destination: Arc<Destination>) {
    while let Ok((stream, _)) = listener.accept().await {
        let _ = stream.set_nodelay(true);
        let destination = destination.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |request| answer(destination.clone(), request));
            let _ = auto::Builder::new(TokioExecutor::new()).serve_connection(TokioIo::new(stream), service).await;
        });
    }
}

async fn answer(
    destination: Arc<Destination>,
    request: http::Request<Incoming>,
) -> Result<http::Response<Empty<Bytes>>, Infallible> {
    destination.record(request.headers().get("webhook-id").and_then(|v| v.to_str().ok()));
    // Until released; or until the scenario ends and drops the sender.
    let _ = destination.released.subscribe().wait_for(|released| *released).await;
    Ok(http::Response::new(Empty::new()))
}

/// The destination's accept loop, stopped however the scenario ends.
struct Serving(tokio::task::JoinHandle<()>);

impl Drop for Serving {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Creates `count` direct-mode runs that call `destination`, without
/// callbacks, [`CREATE_CONCURRENCY`] at a time. `retryCount: 1`: a call the
/// crash cut off is made once more, with the same `webhook-id`.
async fn create_runs(relay: &str, admin_token: &str, destination: SocketAddr, count: usize) -> anyhow::Result<()> {
    let http = api_client()?;
    let file = format!(
        "webhooks:\n  - name: drain\n    method: POST\n    uriTemplate: http://{destination}/drain\n    networkMode: direct\n    retryCount: 1\n    disableCallback: true\n"
    );
    let body = serde_json::json!({ "file": file, "name": "drain" });
    let url = format!("{relay}/api/v1/webhook-runs");
    futures_util::stream::iter(0..count)
        .map(Ok)
        .try_for_each_concurrent(CREATE_CONCURRENCY, |_| {
            let request = http.post(&url).bearer_auth(admin_token).json(&body);
            async move {
                let response = request.send().await?;
                let status = response.status();
                anyhow::ensure!(status.is_success(), "creating a run: HTTP {status}: {}", response.text().await?);
                Ok(())
            }
        })
        .await
}

/// How watching the drain ended, and the relay's CPU time along the way.
struct Watched {
    /// (since the restart, relay CPU seconds), once a second.
    cpu: Vec<(Duration, f64)>,
    /// Why it stopped before every run was called.
    stopped: Option<String>,
    elapsed: Duration,
}

/// Watches the destination from the restart until every one of `count`
/// runs was called, no call came for [`STALL_LIMIT`], or
/// [`DRAIN_TIME_LIMIT`] passed; prints progress every 10 s.
async fn watch_drain(destination: &Destination, relay: &Relay, count: usize, restarted: Instant) -> Watched {
    let mut cpu = Vec::new();
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    let (mut last_calls, mut last_call_seen) = (destination.counts().0, Instant::now());
    let mut ten_seconds_ago = last_calls;
    let stopped = loop {
        tick.tick().await;
        cpu.push((restarted.elapsed(), relay.process.cpu_seconds()));
        let (calls, called) = destination.counts();
        if called >= count {
            break None;
        }
        if calls > last_calls {
            (last_calls, last_call_seen) = (calls, Instant::now());
        }
        if last_call_seen.elapsed() >= STALL_LIMIT {
            break Some(format!("stalled: no call for {} s", STALL_LIMIT.as_secs()));
        }
        if restarted.elapsed() >= DRAIN_TIME_LIMIT {
            break Some(format!("stopped at the time limit, {} min", DRAIN_TIME_LIMIT.as_secs() / 60));
        }
        if cpu.len() % 10 == 0 {
            let rate = (calls - ten_seconds_ago) as f64 / 10.0;
            println!("drain: {called} of {count} runs called, {rate:.0} calls/s over the last 10 s");
            ten_seconds_ago = calls;
        }
    };
    Watched { cpu, stopped, elapsed: restarted.elapsed() }
}

/// One stretch of the drain: `calls` made from `from` to `to` (since the
/// restart; the last stretch ends when the drain did).
#[derive(Debug, PartialEq)]
struct Stretch {
    from: Duration,
    to: Duration,
    calls: usize,
}

impl Stretch {
    fn per_second(&self) -> f64 {
        self.calls as f64 / (self.to - self.from).as_secs_f64().max(1e-3)
    }
}

/// The calls at `offsets` (since the restart, in order) up to `end`, cut
/// into stretches of `length`.
fn stretches(offsets: &[Duration], end: Duration, length: Duration) -> Vec<Stretch> {
    let mut out: Vec<Stretch> = Vec::new();
    let mut from = Duration::ZERO;
    while from < end {
        let to = (from + length).min(end);
        out.push(Stretch { from, to, calls: 0 });
        from = to;
    }
    for offset in offsets.iter().take_while(|o| **o <= end) {
        let index = ((offset.as_nanos() / length.as_nanos()) as usize).min(out.len().saturating_sub(1));
        if let Some(stretch) = out.get_mut(index) {
            stretch.calls += 1;
        }
    }
    out
}

/// The relay's CPU seconds at `at` since the restart: the last sample
/// taken by then (its start is counted from 0).
fn cpu_at(samples: &[(Duration, f64)], at: Duration) -> f64 {
    samples.iter().take_while(|(when, _)| *when <= at).last().map_or(0.0, |(_, cpu)| *cpu)
}

fn row(case: String, calls_per_second: f64, relay_cpu_per_1k: Option<f64>, note: String) -> Row {
    Row {
        scenario: "drain".into(),
        case,
        requests_per_second: Some(calls_per_second),
        p50_ms: None,
        p99_ms: None,
        max_ms: None,
        errors: 0,
        relay_cpu_per_1k,
        agent_cpu_per_1k: None,
        relay_peak_mib: None,
        agent_peak_mib: None,
        note,
    }
}

/// `drain`: `count` runs pending at a crash, drained by the next relay.
pub async fn drain(count: usize, report: &mut Report) -> anyhow::Result<()> {
    procs::install_crypto_provider();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let address = listener.local_addr()?;
    let destination = Destination::new();
    let _serving = Serving(tokio::spawn(serve(listener, destination.clone())));

    let data = TempDir::new("drain");
    let options = RelayOptions {
        env: vec![("BOREALIS_WEBHOOK_TIMEOUT".to_owned(), HELD_CALL_LIMIT.to_owned())],
        ..RelayOptions::default()
    };
    let mut first = Relay::start(data.path(), &options)?;
    let admin_token = std::fs::read_to_string(data.path().join("admin-token"))?.trim().to_owned();
    println!("drain: creating {count} runs, relay pid {}", first.process.pid());
    let creating = Instant::now();
    create_runs(&first.http, &admin_token, address, count).await?;
    let creation = creating.elapsed();
    // Let the relay's attempts in flight reach the destination.
    tokio::time::sleep(Duration::from_secs(2)).await;
    first.process.kill();
    let (held, _) = destination.counts();
    destination.release();

    let restarted = Instant::now();
    let (bench_cpu_before, machine_cpu_before) = (procs::cpu_seconds(std::process::id()), procs::machine_cpu_seconds());
    // With the default call time limit. Off the runtime: waiting for the
    // relay sleeps the thread, and the destination needs both workers as
    // soon as the relay calls.
    let dir = data.path().to_owned();
    let relay = tokio::task::spawn_blocking(move || Relay::start(&dir, &RelayOptions::default())).await??;
    let ready = restarted.elapsed();
    println!("drain: relay restarted (pid {}), ready in {:.1} s", relay.process.pid(), ready.as_secs_f64());
    let (watched, peaks) = peak_rss(&[relay.process.pid()], watch_drain(&destination, &relay, count, restarted)).await;
    let relay_cpu = relay.process.cpu_seconds();
    let bench_cpu = procs::cpu_seconds(std::process::id()) - bench_cpu_before;
    let others_cpu = procs::machine_cpu_seconds() - machine_cpu_before - relay_cpu - bench_cpu;
    let cores = |cpu: f64| cpu / watched.elapsed.as_secs_f64();
    let takeovers = relay.metric("borealis_claims_total{kind=\"takeover\"}").await?;
    drop(relay);

    let calls = destination.calls.lock().expect("calls lock");
    let called = calls.runs.len();
    let after: Vec<(Duration, bool)> = calls
        .log
        .iter()
        .filter(|(at, _)| *at >= restarted)
        .map(|(at, first)| (at.duration_since(restarted), *first))
        .collect();
    // Drained when the last run had its first call; else when watching stopped.
    let end = match watched.stopped {
        None => after.iter().rev().find(|(_, first)| *first).map_or(Duration::ZERO, |(at, _)| *at),
        Some(_) => watched.elapsed,
    };
    let offsets: Vec<Duration> = after.iter().map(|(at, _)| *at).collect();
    let drained_calls = offsets.iter().filter(|o| **o <= end).count();
    let cpu_per_1k = |stretch: &Stretch| {
        let used = cpu_at(&watched.cpu, stretch.to) - cpu_at(&watched.cpu, stretch.from);
        (stretch.calls > 0).then(|| used / stretch.calls as f64 * 1000.0)
    };

    let first_ten = stretches(&offsets, end.min(Duration::from_secs(10)), Duration::from_secs(10));
    if let Some(stretch) = first_ten.first() {
        let first_call = offsets.first().map_or(f64::NAN, Duration::as_secs_f64);
        let note = format!(
            "{} calls; relay ready {:.1} s and first call {first_call:.1} s after the restart",
            stretch.calls,
            ready.as_secs_f64()
        );
        report.rows.push(row(format!("first {:.0} s", stretch.to.as_secs_f64()), stretch.per_second(), None, note));
        report.print_last();
    }
    let minutes = stretches(&offsets, end, Duration::from_secs(60));
    for (n, stretch) in minutes.iter().enumerate() {
        let part = stretch.to - stretch.from;
        let case = if part < Duration::from_secs(60) {
            format!("minute {} ({:.0} s)", n + 1, part.as_secs_f64())
        } else {
            format!("minute {}", n + 1)
        };
        let note = format!("{} calls", stretch.calls);
        report.rows.push(row(case, stretch.per_second(), cpu_per_1k(stretch), note));
        report.print_last();
    }
    let whole = Stretch { from: Duration::ZERO, to: end, calls: drained_calls };
    let outcome = match &watched.stopped {
        None => format!("every run called {:.1} s after the restart", end.as_secs_f64()),
        Some(why) => format!("{why}: {called} of {count} runs called in {:.1} s", end.as_secs_f64()),
    };
    let mut total = row(
        format!("total: {count} runs pending at a crash"),
        whole.per_second(),
        cpu_per_1k(&whole),
        format!(
            "{outcome}; {held} calls in flight at the kill, {} calls after the restart ({} repeats of a run), {takeovers:.0} attempts taken over; \
             runs created in {:.1} s ({:.0}/s); cores used on average: relay {:.2}, this process (the destination) {:.2}, \
             other processes {:.2}",
            after.len(),
            after.len() - after.iter().filter(|(_, first)| *first).count(),
            creation.as_secs_f64(),
            count as f64 / creation.as_secs_f64(),
            cores(relay_cpu),
            cores(bench_cpu),
            cores(others_cpu),
        ),
    );
    total.errors = (count - called) as u64;
    total.relay_peak_mib = Some(mib(peaks[0]));
    report.rows.push(total);
    report.print_last();
    let first_minute = minutes.first().map_or(0.0, Stretch::per_second);
    report.targets.push(Target::at_least(
        &format!("drain: calls per second in the first minute after a restart with {count} pending"),
        first_minute,
        FIRST_MINUTE_GOAL,
        "/s",
    ));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seconds(s: &[f64]) -> Vec<Duration> {
        s.iter().map(|s| Duration::from_secs_f64(*s)).collect()
    }

    #[test]
    fn stretches_end_with_the_drain_and_count_its_last_call() {
        let offsets = seconds(&[0.5, 59.9, 60.0, 61.0, 75.0, 80.0]);
        let got = stretches(&offsets, Duration::from_secs(75), Duration::from_secs(60));
        assert_eq!(
            got,
            vec![
                Stretch { from: Duration::ZERO, to: Duration::from_secs(60), calls: 2 },
                Stretch { from: Duration::from_secs(60), to: Duration::from_secs(75), calls: 3 },
            ]
        );
        assert_eq!(got[1].per_second(), 0.2);
        assert!(stretches(&offsets, Duration::ZERO, Duration::from_secs(60)).is_empty());
    }

    #[test]
    fn cpu_is_read_from_the_last_sample_by_then() {
        let samples = [(Duration::from_secs(1), 0.5), (Duration::from_secs(2), 1.5)];
        assert_eq!(cpu_at(&samples, Duration::ZERO), 0.0);
        assert_eq!(cpu_at(&samples, Duration::from_millis(1500)), 0.5);
        assert_eq!(cpu_at(&samples, Duration::from_secs(60)), 1.5);
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn the_destination_holds_calls_until_released_and_counts_runs() {
        procs::install_crypto_provider();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let destination = Destination::new();
        let _serving = Serving(tokio::spawn(serve(listener, destination.clone())));
        let http = reqwest::Client::builder().no_proxy().build().unwrap();
        let call = |id: &str| http.post(format!("http://{address}/drain")).header("webhook-id", id).send();

        let held = tokio::spawn(call("run-1"));
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert!(!held.is_finished(), "answered before the release");
        assert_eq!(destination.counts(), (1, 1));

        destination.release();
        assert_eq!(held.await.unwrap().unwrap().status(), 200);
        assert_eq!(call("run-1").await.unwrap().status(), 200);
        assert_eq!(call("run-2").await.unwrap().status(), 200);
        assert_eq!(destination.counts(), (3, 2), "three calls, two runs");
    }
}
