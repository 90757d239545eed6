//! The scenarios, and the targets each one checks.

use std::time::{Duration, Instant};

use borealis_api::RunState;
use bytes::Bytes;
use futures_util::StreamExt;
use hdrhistogram::Histogram;

use crate::load::{self, LoadSpec};
use crate::procs::{self, Relay, RelayOptions, Stack, TempDir, peak_rss};
use crate::rathole::Rathole;
use crate::report::{Report, Row, Target};
use crate::{postgres, sim};

const KIB: usize = 1024;
const MIB: usize = 1024 * 1024;

pub(crate) fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

/// `forward`: straight to the echo server (the baseline), through rathole
/// (when given: the reference tunnel), through `/api/v1/proxy` direct, and
/// through the agent; 1 KiB and 1 MiB bodies at concurrency 1, 16 and 64,
/// the paths interleaved at each, all in one run.
pub async fn forward(
    stack: &Stack,
    rathole: Option<&Rathole>,
    duration: Duration,
    report: &mut Report,
) -> anyhow::Result<()> {
    let echo = format!("http://{}/echo", stack.echo_addr);
    let auth = vec![("proxy-authorization".to_owned(), format!("Bearer {}", stack.admin_token))];
    let paths: Vec<&str> = ["baseline", "rathole", "direct", "agent"]
        .into_iter()
        .filter(|p| *p != "rathole" || rathole.is_some())
        .collect();
    let mut results: Vec<Measured> = Vec::new();
    for body in [KIB, MIB] {
        for concurrency in [1, 16, 64] {
            for &path in &paths {
                let (url, headers) = match (path, rathole) {
                    ("baseline", _) => (url::Url::parse(&echo)?, Vec::new()),
                    ("rathole", Some(rathole)) => (rathole.url.clone(), Vec::new()),
                    ("direct", _) => (stack.proxy_url(&echo, false), auth.clone()),
                    _ => (stack.proxy_url(&echo, true), auth.clone()),
                };
                let spec = LoadSpec {
                    url,
                    method: http::Method::POST,
                    headers,
                    body: Bytes::from(vec![b'b'; body]),
                    concurrency,
                    duration,
                };
                // The two processes of the path: relay and agent, or
                // rathole's server and client.
                let measured = match (path, rathole) {
                    ("rathole", Some(rathole)) => [&rathole.server, &rathole.client],
                    _ => [&stack.relay, &stack.agent],
                };
                let cpu_now = || (measured[0].cpu_seconds(), measured[1].cpu_seconds());
                let pids = measured.map(|process| process.pid());
                let cpu_before = cpu_now();
                let dispatched_before = stack.dispatches().await?;
                let (result, peaks) = peak_rss(&pids, load::run(&spec)).await;
                let result = result?;
                let cpu_after = cpu_now();
                let cpu = (cpu_after.0 - cpu_before.0, cpu_after.1 - cpu_before.1);
                let dispatched = stack.dispatches().await?;
                let (lane, standby, offered) = (
                    dispatched.0 - dispatched_before.0,
                    dispatched.1 - dispatched_before.1,
                    dispatched.2 - dispatched_before.2,
                );
                let all = lane + standby + offered;
                let way_note = (path == "agent" && all > 0.0).then(|| {
                    format!("{:.0} % down lanes, {:.0} % down standby calls", lane / all * 100.0, standby / all * 100.0)
                });
                let path_note = (path == "rathole").then(|| "CPU: rathole server, client".to_owned());
                let per_k = |seconds: f64| (result.requests > 0).then(|| seconds / result.requests as f64 * 1000.0);
                let case = format!("{path} {} c{concurrency}", if body == KIB { "1KiB" } else { "1MiB" });
                let (first, second) = match path {
                    "baseline" => (None, None),
                    "direct" => (per_k(cpu.0), None),
                    _ => (per_k(cpu.0), per_k(cpu.1)),
                };
                results.push(Measured {
                    path: path.to_owned(),
                    body,
                    concurrency,
                    per_second: result.per_second(),
                    p50_ms: result.millis(0.5),
                    cpu_per_1k: first.unwrap_or(0.0) + second.unwrap_or(0.0),
                });
                report.rows.push(Row {
                    relay_cpu_per_1k: first,
                    agent_cpu_per_1k: second,
                    relay_peak_mib: (path != "baseline").then(|| mib(peaks[0])),
                    agent_peak_mib: (path == "agent" || path == "rathole").then(|| mib(peaks[1])),
                    note: [result.first_error.clone(), way_note, path_note]
                        .into_iter()
                        .flatten()
                        .collect::<Vec<_>>()
                        .join("; "),
                    ..Row::of_load("forward", case, &result)
                });
                report.print_last();
            }
        }
    }
    let find = |path: &str, body: usize, concurrency: usize| {
        results
            .iter()
            .find(|r| r.path == path && r.body == body && r.concurrency == concurrency)
            .cloned()
            .unwrap_or_default()
    };
    let (base64, agent64, direct64) = (find("baseline", KIB, 64), find("agent", KIB, 64), find("direct", KIB, 64));
    let (base1, agent1) = (find("baseline", KIB, 1), find("agent", KIB, 1));
    report.targets.push(Target::at_least(
        "via agent, 1 KiB, c64: requests/s vs baseline",
        agent64.per_second / base64.per_second * 100.0,
        40.0,
        "%",
    ));
    report.targets.push(Target::at_most(
        "via agent, 1 KiB, c1: p50 above baseline",
        agent1.p50_ms - base1.p50_ms,
        0.5,
        "ms",
    ));
    report.targets.push(Target::at_least(
        "direct, 1 KiB, c64: requests/s vs baseline",
        direct64.per_second / base64.per_second * 100.0,
        60.0,
        "%",
    ));
    if rathole.is_some() {
        let (rathole64, rathole1) = (find("rathole", KIB, 64), find("rathole", KIB, 1));
        report.targets.push(Target::at_least(
            "via agent, 1 KiB, c64: requests/s vs rathole",
            agent64.per_second / rathole64.per_second,
            0.6,
            "x",
        ));
        report.targets.push(Target::at_most(
            "via agent, 1 KiB, c64: CPU per request (relay + agent) vs rathole's (server + client)",
            agent64.cpu_per_1k / rathole64.cpu_per_1k,
            3.0,
            "x",
        ));
        report.targets.push(Target::at_most(
            "via agent, 1 KiB, c1: p50 vs rathole",
            agent1.p50_ms / rathole1.p50_ms,
            2.0,
            "x",
        ));
        report.targets.push(Target::at_least(
            "direct, 1 KiB, c64: requests/s vs rathole",
            direct64.per_second / rathole64.per_second,
            0.8,
            "x",
        ));
    }
    Ok(())
}

/// One case of `forward`, for its targets.
#[derive(Clone, Default)]
struct Measured {
    path: String,
    body: usize,
    concurrency: usize,
    per_second: f64,
    p50_ms: f64,
    /// CPU seconds per 1000 requests, the path's two processes together.
    cpu_per_1k: f64,
}

/// `stream`: 1 GiB up and 1 GiB back down through the agent at once.
pub async fn stream(stack: &Stack, report: &mut Report) -> anyhow::Result<()> {
    const SIZE: u64 = 1 << 30;
    let url = stack.proxy_url(&format!("http://{}/echo", stack.echo_addr), true);
    let client = reqwest::Client::new();
    let chunk = Bytes::from(vec![b's'; 64 * KIB]);
    let chunks = (SIZE / chunk.len() as u64) as usize;
    let upload = futures_util::stream::iter((0..chunks).map(move |_| Ok::<_, std::io::Error>(chunk.clone())));
    let before = (stack.relay.rss_kib(), stack.agent.rss_kib());
    let started = Instant::now();
    let work = async {
        let response = client
            .post(url)
            .header("proxy-authorization", format!("Bearer {}", stack.admin_token))
            .header("content-length", SIZE.to_string())
            .body(reqwest::Body::wrap_stream(upload))
            .send()
            .await?;
        anyhow::ensure!(response.status().is_success(), "HTTP {}", response.status());
        let mut body = response.bytes_stream();
        let mut received = 0u64;
        while let Some(chunk) = body.next().await {
            received += chunk?.len() as u64;
        }
        Ok(received)
    };
    let (received, peaks) = peak_rss(&[stack.relay.pid(), stack.agent.pid()], work).await;
    let received = received?;
    let elapsed = started.elapsed();
    anyhow::ensure!(received == SIZE, "received {received} of {SIZE} bytes");
    let throughput = SIZE as f64 / (1 << 20) as f64 / elapsed.as_secs_f64();
    let growth = (mib(peaks[0].saturating_sub(before.0)), mib(peaks[1].saturating_sub(before.1)));
    report.rows.push(Row {
        scenario: "stream".into(),
        case: "1 GiB each way via agent".into(),
        requests_per_second: None,
        p50_ms: None,
        p99_ms: None,
        max_ms: Some(elapsed.as_secs_f64() * 1000.0),
        errors: 0,
        relay_cpu_per_1k: None,
        agent_cpu_per_1k: None,
        relay_peak_mib: Some(mib(peaks[0])),
        agent_peak_mib: Some(mib(peaks[1])),
        note: format!(
            "{throughput:.0} MiB/s each way; RSS growth relay {:.1} MiB, agent {:.1} MiB",
            growth.0, growth.1
        ),
    });
    report.print_last();
    report.targets.push(Target::at_least("stream: throughput each way", throughput, 600.0, "MiB/s"));
    report.targets.push(Target::at_most("stream: relay RSS growth", growth.0, 64.0, "MiB"));
    report.targets.push(Target::at_most("stream: agent RSS growth", growth.1, 64.0, "MiB"));
    beside_a_slow_upload(stack, report).await
}

/// Small requests' p99 through the agent measured alone, then while one
/// 1 MiB upload trickles through the same agent: the upload has a call of
/// its own, so it must not hold them up.
async fn beside_a_slow_upload(stack: &Stack, report: &mut Report) -> anyhow::Result<()> {
    const LOAD: Duration = Duration::from_secs(3);
    const PIECES: usize = 16;
    const PIECE: Duration = Duration::from_millis(250);
    let url = stack.proxy_url(&format!("http://{}/echo", stack.echo_addr), true);
    let auth = ("proxy-authorization".to_owned(), format!("Bearer {}", stack.admin_token));
    let spec = LoadSpec {
        url: url.clone(),
        method: http::Method::POST,
        headers: vec![auth.clone()],
        body: Bytes::from(vec![b'b'; KIB]),
        concurrency: 16,
        duration: LOAD,
    };
    let alone = load::run(&spec).await?;

    // 64 KiB every 250 ms: 4 s for the whole MiB, longer than the load.
    let piece = Bytes::from(vec![b'u'; MIB / PIECES]);
    let (sent, mut first_sent) = tokio::sync::watch::channel(false);
    let pieces = futures_util::stream::iter(0..PIECES).then(move |n| {
        let (piece, sent) = (piece.clone(), sent.clone());
        async move {
            if n > 0 {
                tokio::time::sleep(PIECE).await;
            }
            let _ = sent.send(true);
            Ok::<_, std::io::Error>(piece)
        }
    });
    let upload = async {
        let response = reqwest::Client::new()
            .post(url)
            .header(auth.0.as_str(), auth.1.as_str())
            .header("content-length", MIB.to_string())
            .body(reqwest::Body::wrap_stream(pieces))
            .send()
            .await?;
        anyhow::ensure!(response.status().is_success(), "the slow upload: HTTP {}", response.status());
        let echoed = response.bytes().await?;
        anyhow::ensure!(echoed.len() == MIB, "the slow upload: {} bytes echoed of {MIB}", echoed.len());
        Ok(Instant::now())
    };
    let beside = async {
        first_sent.wait_for(|sent| *sent).await?;
        let result = load::run(&spec).await?;
        Ok::<_, anyhow::Error>((result, Instant::now()))
    };
    let (upload_done, beside) = tokio::join!(upload, beside);
    let (beside, load_done) = beside?;
    for result in [&alone, &beside] {
        if let Some(error) = &result.first_error {
            anyhow::bail!("{} of the small requests failed; the first: {error}", result.errors);
        }
    }
    anyhow::ensure!(upload_done? > load_done, "the slow upload ended before the small requests did");
    for (case, result) in [("1KiB c16 alone", &alone), ("1KiB c16 beside a slow 1 MiB upload", &beside)] {
        report.rows.push(Row::of_load("stream", case, result));
        report.print_last();
    }
    // Within the noise of two runs on a shared machine, and 1 ms.
    let limit = ((1.5 * alone.millis(0.99) + 1.0) * 100.0).round() / 100.0;
    report.targets.push(Target::at_most(
        "stream: small requests' p99 beside a slow upload (1.5 × alone + 1 ms)",
        beside.millis(0.99),
        limit,
        "ms",
    ));
    Ok(())
}

/// `agents`: `sessions` agent sessions held open by simulated agents that
/// speak the real protocol; the relay's memory per session, and the time
/// for all of them to come back after the relay is killed and restarted.
pub async fn agents(stack: &mut Stack, sessions: usize, report: &mut Report) -> anyhow::Result<()> {
    use std::sync::Arc;
    use std::sync::atomic::Ordering;
    let token = stack.token("agents", serde_json::json!({ "id": "fleet" })).await?;

    let before = stack.relay.rss_kib();
    let fleet = Arc::new(sim::Fleet::default());
    let started = Instant::now();
    sim::launch(sessions, stack.agents_url.clone(), token, fleet.clone());
    let wait_for = |what: &'static str, limit: Duration, done: Box<dyn Fn() -> bool + Send>| async move {
        let start = Instant::now();
        while !done() {
            anyhow::ensure!(start.elapsed() < limit, "{what}: not within {limit:?}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Ok(start.elapsed())
    };
    let connected = fleet.clone();
    wait_for(
        "every session connected",
        Duration::from_secs(300),
        Box::new(move || connected.connected.load(Ordering::Relaxed) >= sessions),
    )
    .await?;
    let connect_time = started.elapsed();
    // Let heartbeats and buffers settle before reading memory.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let after = stack.relay.rss_kib();
    let per_session = after.saturating_sub(before) as f64 / sessions as f64;

    let welcomes = fleet.welcomes.load(Ordering::Relaxed);
    let restarted = Instant::now();
    stack.restart_relay()?;
    let back = fleet.clone();
    let result = wait_for(
        "every session back after a restart",
        Duration::from_secs(120),
        Box::new(move || {
            back.welcomes.load(Ordering::Relaxed) >= welcomes + sessions
                && back.connected.load(Ordering::Relaxed) >= sessions
        }),
    )
    .await;
    let back_in = restarted.elapsed();
    let note = match &result {
        Ok(_) => format!(
            "{sessions} sessions connected in {:.1} s; relay RSS {} -> {} MiB, {per_session:.1} KiB per session; all back {:.1} s after a restart",
            connect_time.as_secs_f64(),
            before / 1024,
            after / 1024,
            back_in.as_secs_f64()
        ),
        Err(err) => format!("{err}"),
    };
    report.rows.push(Row {
        scenario: "agents".into(),
        case: format!("{sessions} sessions"),
        requests_per_second: None,
        p50_ms: None,
        p99_ms: None,
        max_ms: None,
        errors: u64::from(result.is_err()),
        relay_cpu_per_1k: None,
        agent_cpu_per_1k: None,
        relay_peak_mib: Some(mib(after)),
        agent_peak_mib: None,
        note,
    });
    report.print_last();
    report.targets.push(Target::at_most(
        &format!("agents: relay memory for {sessions} sessions"),
        mib(after),
        1024.0,
        "MiB",
    ));
    report.targets.push(Target::at_most("agents: relay memory per session", per_session, 40.0, "KiB"));
    report.targets.push(Target::at_most("agents: all sessions back after a restart", back_in.as_secs_f64(), 30.0, "s"));
    result.map(|_| ())
}

/// Callbacks, and the runs waiting for them, go this many at a time, on
/// SQLite and on PostgreSQL alike.
const CALLBACK_CONCURRENCY: usize = 64;
/// The longest the benchmark waits for its runs to wait for their
/// callbacks, and for the callbacks to be sent.
const RUNS_TIME_LIMIT: Duration = Duration::from_secs(600);

/// A client for the API whose every request has a time limit, so that no
/// load loop can hang; loopback only, so no proxy.
pub(crate) fn api_client() -> anyhow::Result<reqwest::Client> {
    Ok(reqwest::Client::builder().no_proxy().timeout(Duration::from_secs(60)).build()?)
}

/// Webhook runs waiting for their callbacks.
struct WaitingRuns {
    /// (run id, callback path): the path, as any relay of a cluster takes it.
    runs: Vec<(String, String)>,
    /// How long starting them took.
    creation: Duration,
}

/// Starts `count` webhook runs that call the echo server and then wait for
/// a callback, 64 at a time, round-robin over the relays at `bases` (one
/// relay, or replicas of one database); returns once every one waits.
async fn start_waiting_runs(
    http: &reqwest::Client,
    bases: &[String],
    admin_token: &str,
    echo_addr: &str,
    count: usize,
) -> anyhow::Result<WaitingRuns> {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    let file = format!(
        "webhooks:\n  - name: job\n    method: POST\n    uriTemplate: http://{echo_addr}/echo\n    networkMode: direct\n    bodyTemplate:\n      inline: '{{\"callbackUri\": \"{{{{armory.callbackUri}}}}/callback\"}}'\n"
    );
    let bases = Arc::new(bases.to_vec());
    let started = Instant::now();
    let next = Arc::new(AtomicUsize::new(0));
    let mut workers = Vec::new();
    for _ in 0..CALLBACK_CONCURRENCY {
        let (http, next, bases, admin, file) =
            (http.clone(), next.clone(), bases.clone(), admin_token.to_owned(), file.clone());
        workers.push(tokio::spawn(async move {
            let mut mine = Vec::new();
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= count {
                    break;
                }
                let run: serde_json::Value = http
                    .post(format!("{}/api/v1/webhook-runs", bases[i % bases.len()]))
                    .bearer_auth(&admin)
                    .json(&serde_json::json!({ "file": file, "name": "job" }))
                    .send()
                    .await?
                    .json()
                    .await?;
                let (Some(id), Some(callback_uri)) = (run["id"].as_str(), run["callbackUri"].as_str()) else {
                    anyhow::bail!("starting a run: {run}");
                };
                let path = url::Url::parse(callback_uri)?.path().to_owned();
                mine.push((id.to_owned(), format!("{path}/callback")));
            }
            Ok::<_, anyhow::Error>(mine)
        }));
    }
    let mut runs = Vec::with_capacity(count);
    for worker in workers {
        runs.extend(worker.await??);
    }
    let creation = started.elapsed();
    // Every run has had its call and now waits for its callback.
    let deadline = Instant::now() + RUNS_TIME_LIMIT;
    let waiting = |i: usize, id: String| {
        let (http, base, admin) = (http.clone(), bases[i % bases.len()].clone(), admin_token.to_owned());
        async move {
            loop {
                let run: borealis_api::WebhookRun = http
                    .get(format!("{base}/api/v1/webhook-runs/{id}"))
                    .bearer_auth(&admin)
                    .send()
                    .await?
                    .json()
                    .await?;
                match run.state {
                    RunState::AwaitingCallback => return Ok::<_, anyhow::Error>(()),
                    state @ (RunState::Pending | RunState::Calling) => {
                        anyhow::ensure!(Instant::now() < deadline, "run {id} still {state} after {RUNS_TIME_LIMIT:?}");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                    other => anyhow::bail!("run {id} is {other}"),
                }
            }
        }
    };
    let checks: Vec<anyhow::Result<()>> =
        futures_util::stream::iter(runs.iter().enumerate().map(|(i, (id, _))| waiting(i, id.clone())))
            .buffer_unordered(CALLBACK_CONCURRENCY)
            .collect()
            .await;
    checks.into_iter().collect::<anyhow::Result<Vec<()>>>()?;
    Ok(WaitingRuns { runs, creation })
}

/// Callbacks sent: the latency of each accepted one, the rest as errors,
/// and the time they all took.
struct Delivered {
    latency: Histogram<u64>,
    errors: u64,
    elapsed: Duration,
}

impl Delivered {
    /// Accepted, and so durable, callbacks per second.
    fn per_second(&self) -> f64 {
        self.latency.len() as f64 / self.elapsed.as_secs_f64()
    }

    fn millis(&self, quantile: f64) -> f64 {
        self.latency.value_at_quantile(quantile) as f64 / 1000.0
    }

    fn max_millis(&self) -> f64 {
        self.latency.max() as f64 / 1000.0
    }
}

/// Sends each run's callback once, 64 at a time, the i-th to the relay at
/// `bases[i % bases.len()]`; a 200 means the decision is durable. Those
/// not sent within [`RUNS_TIME_LIMIT`] count as errors.
async fn deliver_callbacks(
    http: &reqwest::Client,
    bases: &[String],
    token: &str,
    runs: Vec<(String, String)>,
) -> anyhow::Result<Delivered> {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    let total = runs.len() as u64;
    let (runs, bases) = (Arc::new(runs), Arc::new(bases.to_vec()));
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let deadline = started + RUNS_TIME_LIMIT;
    let mut workers = Vec::new();
    for _ in 0..CALLBACK_CONCURRENCY {
        let (http, next, runs, bases, token) =
            (http.clone(), next.clone(), runs.clone(), bases.clone(), token.to_owned());
        workers.push(tokio::spawn(async move {
            let mut latency = load::histogram();
            let mut errors = 0u64;
            while Instant::now() < deadline {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some((_, path)) = runs.get(i) else { break };
                let sent = Instant::now();
                let body = serde_json::json!({ "success": i % 2 == 0, "mdMessage": "bench" });
                let url = format!("{}{path}", bases[i % bases.len()]);
                match http.post(url).bearer_auth(&token).json(&body).send().await {
                    Ok(r) if r.status() == 200 => {
                        let _ = latency.record(sent.elapsed().as_micros().max(1) as u64);
                    }
                    _ => errors += 1,
                }
            }
            (latency, errors)
        }));
    }
    let mut latency = load::histogram();
    let mut errors = 0u64;
    for worker in workers {
        let (l, e) = worker.await?;
        latency.add(&l)?;
        errors += e;
    }
    let elapsed = started.elapsed();
    // Those left unsent at the time limit.
    errors += total.saturating_sub(latency.len() + errors);
    Ok(Delivered { latency, errors, elapsed })
}

/// `runs`: `count` webhook runs waiting for their callbacks; the relay's
/// memory, the store's size on disk, then the rate of accepted (and so
/// durable) callbacks at concurrency 64.
pub async fn runs(stack: &Stack, count: usize, report: &mut Report) -> anyhow::Result<()> {
    let http = api_client()?;
    let token = stack.token("clients", serde_json::json!({ "name": "bench-ci" })).await?;
    let relay = [stack.relay_http.clone()];
    let before = stack.relay.rss_kib();
    let waiting = start_waiting_runs(&http, &relay, &stack.admin_token, &stack.echo_addr, count).await?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let memory = stack.relay.rss_kib();
    let store_bytes: u64 = ["borealis.db", "borealis.db-wal", "borealis.db-shm"]
        .iter()
        .filter_map(|f| std::fs::metadata(stack.data_dir().join(f)).ok())
        .map(|m| m.len())
        .sum();

    let creation = waiting.creation;
    let callbacks = deliver_callbacks(&http, &relay, &token, waiting.runs).await?;
    let rate = callbacks.per_second();
    let per_run = memory.saturating_sub(before) as f64 / count as f64;
    report.rows.push(Row {
        scenario: "runs".into(),
        case: format!("{count} runs, callbacks at c{CALLBACK_CONCURRENCY}"),
        requests_per_second: Some(rate),
        p50_ms: Some(callbacks.millis(0.5)),
        p99_ms: Some(callbacks.millis(0.99)),
        max_ms: Some(callbacks.max_millis()),
        errors: callbacks.errors,
        relay_cpu_per_1k: None,
        agent_cpu_per_1k: None,
        relay_peak_mib: Some(mib(memory)),
        agent_peak_mib: None,
        note: format!(
            "started in {:.1} s ({:.0}/s); relay RSS {} -> {} MiB ({per_run:.1} KiB per run); store {:.1} MiB on disk",
            creation.as_secs_f64(),
            count as f64 / creation.as_secs_f64(),
            before / 1024,
            memory / 1024,
            store_bytes as f64 / (1 << 20) as f64
        ),
    });
    report.print_last();
    report.targets.push(Target::at_most(
        &format!("runs: relay memory with {count} pending"),
        mib(memory),
        512.0,
        "MiB",
    ));
    report.targets.push(Target::at_least("runs: durable callbacks per second at c64", rate, 2000.0, "/s"));
    Ok(())
}

/// The admin token every replica of the `cluster` scenario is started with.
const CLUSTER_ADMIN_TOKEN: &str = "borealis-bench-cluster-admin-token";
/// The key every replica encrypts stored secrets with: base64 of 32 bytes.
const CLUSTER_SECRET_KEY: &str = "Ym9yZWFsaXMtYmVuY2gtY2x1c3Rlci1rZXktMzJieSE=";
/// Connections of each peer hop case.
const HOP_CONCURRENCY: usize = 16;
/// What a replica counts each request it forwards to another replica in.
const PEER_HOPS_SENT: &str = "borealis_peer_forwarded_requests_total{direction=\"sent\"}";
const THROUGH_HOLDER: &str = "through the holder";
const THROUGH_PEER: &str = "through a peer replica";

fn replica_name(n: usize) -> String {
    format!("bench-{n}")
}

fn callbacks_case(replicas: usize, runs: usize) -> String {
    let (plural, spread) = if replicas == 1 { ("", "") } else { ("s", ", round-robin") };
    format!("postgres, {replicas} replica{plural}: {runs} runs, callbacks at c{CALLBACK_CONCURRENCY}{spread}")
}

fn hop_case(through: &str) -> String {
    format!("via agent 1KiB GET c{HOP_CONCURRENCY}, {through}")
}

/// `cluster`: the relay in Postgres mode, each case on a fresh schema of
/// the server at `postgres_url`. Durable callbacks per second from one
/// replica and from three (the runs and callbacks round-robin over them,
/// as a balancer would spread them); then requests through an agent whose
/// session one replica holds, sent to that replica and to another, which
/// must forward each to the holder (the peer hop). When the server does
/// not answer, the rows say so and no target is measured: the other
/// scenarios need no database.
pub async fn cluster(
    stack: &Stack,
    postgres_url: &str,
    runs: usize,
    duration: Duration,
    report: &mut Report,
) -> anyhow::Result<()> {
    if let Err(err) = postgres::reachable(postgres_url) {
        let server = postgres::shown(postgres_url);
        let note = format!("skipped, targets not measured: psql cannot reach PostgreSQL at {server} ({err:#})");
        for case in [callbacks_case(1, runs), callbacks_case(3, runs), hop_case(THROUGH_HOLDER), hop_case(THROUGH_PEER)]
        {
            report.rows.push(Row {
                scenario: "cluster".into(),
                case,
                requests_per_second: None,
                p50_ms: None,
                p99_ms: None,
                max_ms: None,
                errors: 0,
                relay_cpu_per_1k: None,
                agent_cpu_per_1k: None,
                relay_peak_mib: None,
                agent_peak_mib: None,
                note: note.clone(),
            });
            report.print_last();
        }
        return Ok(());
    }
    procs::install_crypto_provider();
    let one = postgres_callbacks(stack, postgres_url, 1, runs, report).await?;
    let three = postgres_callbacks(stack, postgres_url, 3, runs, report).await?;
    let hop_share = peer_hop(stack, postgres_url, duration, report).await?;
    report.targets.push(Target::at_least("postgres: durable callbacks/s, 1 replica", one, 5000.0, "/s"));
    report.targets.push(Target::above("postgres: callbacks/s, 3 replicas vs 1", three / one * 100.0, 100.0, "%"));
    report.targets.push(Target::at_least("peer hop: via-agent req/s vs through the holder", hop_share, 70.0, "%"));
    Ok(())
}

/// `count` relays on one schema, named `bench-1` and on, with the admin
/// token and the secret key replicas must share, each with a data dir of
/// its own. Started one after the other: the first creates the tables.
fn start_replicas(schema: &postgres::Schema, data: &TempDir, count: usize) -> anyhow::Result<Vec<Relay>> {
    (1..=count)
        .map(|n| {
            let name = replica_name(n);
            let options = RelayOptions {
                database_url: Some(schema.database_url()),
                replica_name: Some(name.clone()),
                env: vec![
                    ("BOREALIS_ADMIN_TOKEN".to_owned(), CLUSTER_ADMIN_TOKEN.to_owned()),
                    ("BOREALIS_SECRET_KEY".to_owned(), CLUSTER_SECRET_KEY.to_owned()),
                ],
            };
            Relay::start(&data.path().join(&name), &options)
        })
        .collect()
}

/// Durable callbacks per second from `replicas` replicas on a fresh
/// schema, measured as `runs` measures them on SQLite.
async fn postgres_callbacks(
    stack: &Stack,
    server: &str,
    replicas: usize,
    count: usize,
    report: &mut Report,
) -> anyhow::Result<f64> {
    let schema = postgres::Schema::create(server, &format!("callbacks_{replicas}"))?;
    let data = TempDir::new(&format!("callbacks-{replicas}"));
    let relays = start_replicas(&schema, &data, replicas)?;
    let bases: Vec<String> = relays.iter().map(|r| r.http.clone()).collect();
    let http = api_client()?;
    let client = serde_json::json!({ "name": "bench-ci" });
    let token = procs::credential_token(&bases[0], CLUSTER_ADMIN_TOKEN, "clients", client).await?;
    let waiting = start_waiting_runs(&http, &bases, CLUSTER_ADMIN_TOKEN, &stack.echo_addr, count).await?;

    let cpu = || relays.iter().map(|r| r.process.cpu_seconds()).sum::<f64>();
    let cpu_before = cpu();
    let creation = waiting.creation;
    let callbacks = deliver_callbacks(&http, &bases, &token, waiting.runs).await?;
    let cpu_used = cpu() - cpu_before;
    let rate = callbacks.per_second();
    let accepted = callbacks.latency.len();
    let memory: u64 = relays.iter().map(|r| r.process.rss_kib()).sum();
    report.rows.push(Row {
        scenario: "cluster".into(),
        case: callbacks_case(replicas, count),
        requests_per_second: Some(rate),
        p50_ms: Some(callbacks.millis(0.5)),
        p99_ms: Some(callbacks.millis(0.99)),
        max_ms: Some(callbacks.max_millis()),
        errors: callbacks.errors,
        relay_cpu_per_1k: (accepted > 0).then(|| cpu_used / accepted as f64 * 1000.0),
        agent_cpu_per_1k: None,
        relay_peak_mib: Some(mib(memory)),
        agent_peak_mib: None,
        note: format!(
            "started in {:.1} s ({:.0}/s); relay CPU and memory summed over the replicas, PostgreSQL's not counted",
            creation.as_secs_f64(),
            count as f64 / creation.as_secs_f64()
        ),
    });
    report.print_last();
    // The replicas go before their schema.
    drop(relays);
    drop(schema);
    Ok(rate)
}

/// Waits up to 30 s for a GET to `url` (through an agent) to answer 200.
async fn wait_until_answered(url: &url::Url) -> anyhow::Result<()> {
    let http = api_client()?;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let reply = http.get(url.as_str()).bearer_auth(CLUSTER_ADMIN_TOKEN).send().await.map(|r| r.status());
        match reply {
            Ok(status) if status.is_success() => return Ok(()),
            other if Instant::now() >= deadline => anyhow::bail!("{url}: {other:?}, still after 30 s"),
            _ => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
}

/// Two replicas on a fresh schema and one real agent connected to the
/// first: 1 KiB GETs through the agent sent to the replica that holds its
/// session, then to the other, which forwards each over HTTP to the holder.
/// Returns the second's requests per second as a share of the first's, in %.
async fn peer_hop(stack: &Stack, server: &str, duration: Duration, report: &mut Report) -> anyhow::Result<f64> {
    let schema = postgres::Schema::create(server, "peer_hop")?;
    let data = TempDir::new("peer-hop");
    let relays = start_replicas(&schema, &data, 2)?;
    let (holder, peer) = (&relays[0], &relays[1]);
    let (client_id, secret) = procs::create_agent(&holder.http, CLUSTER_ADMIN_TOKEN, "bench").await?;
    let agent = procs::start_agent(&holder.agents, &client_id, &secret, &stack.echo_addr)?;
    let target = format!("http://{}/bytes/{KIB}", stack.echo_addr);
    let spec = |relay: &Relay, duration: Duration| LoadSpec {
        url: procs::proxy_url(&relay.http, &target, Some("bench")),
        method: http::Method::GET,
        headers: vec![("proxy-authorization".to_owned(), format!("Bearer {CLUSTER_ADMIN_TOKEN}"))],
        body: Bytes::new(),
        concurrency: HOP_CONCURRENCY,
        duration,
    };
    // The peer finds the holder through the database; and the agent opens
    // the standby calls this load keeps before the clock starts for either.
    wait_until_answered(&spec(peer, duration).url).await?;
    load::run(&spec(holder, duration.min(Duration::from_secs(2)))).await?;

    let (holder_name, peer_name) = (replica_name(1), replica_name(2));
    let mut holder_rate: Option<f64> = None;
    let mut share = 0.0_f64;
    for (relay, through) in [(holder, THROUGH_HOLDER), (peer, THROUGH_PEER)] {
        let relay_cpu = || holder.process.cpu_seconds() + peer.process.cpu_seconds();
        let hops_before = peer.metric(PEER_HOPS_SENT).await?;
        let cpu_before = (relay_cpu(), agent.cpu_seconds());
        let pids = [holder.process.pid(), peer.process.pid(), agent.pid()];
        let case = spec(relay, duration);
        let (result, peaks) = peak_rss(&pids, load::run(&case)).await;
        let result = result?;
        let cpu = (relay_cpu() - cpu_before.0, agent.cpu_seconds() - cpu_before.1);
        let hops = peer.metric(PEER_HOPS_SENT).await? - hops_before;
        let rate = result.per_second();
        let per_k = |seconds: f64| (result.requests > 0).then(|| seconds / result.requests as f64 * 1000.0);
        let mut note = match holder_rate {
            None => format!("agent's session on {holder_name}; {peer_name} sent {hops:.0} peer hops"),
            Some(first) => {
                share = rate / first * 100.0;
                let mut note = format!(
                    "{share:.0} % of the holder's req/s; {peer_name} sent {hops:.0} peer hops for {} requests",
                    result.requests + result.errors
                );
                if hops < result.requests as f64 {
                    note.push_str(" (fewer hops than answers: not every request took the hop)");
                }
                note
            }
        };
        if let Some(err) = &result.first_error {
            note.push_str(&format!("; first error: {err}"));
        }
        report.rows.push(Row {
            relay_cpu_per_1k: per_k(cpu.0),
            agent_cpu_per_1k: per_k(cpu.1),
            relay_peak_mib: Some(mib(peaks[0] + peaks[1])),
            agent_peak_mib: Some(mib(peaks[2])),
            note: format!("{note}; relay CPU and memory of both replicas"),
            ..Row::of_load("cluster", hop_case(through), &result)
        });
        report.print_last();
        if holder_rate.is_none() {
            holder_rate = Some(rate);
        }
    }
    drop(agent);
    drop(relays);
    drop(schema);
    Ok(share)
}
