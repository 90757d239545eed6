//! The scenarios, and the targets each one checks.

use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::StreamExt;

use crate::load::{self, LoadSpec};
use crate::procs::{Stack, peak_rss};
use crate::report::{Report, Row, Target};
use crate::sim;

const KIB: usize = 1024;
const MIB: usize = 1024 * 1024;

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

/// `forward`: straight to the echo server (the baseline), through
/// `/api/v1/proxy` direct, and through the agent; 1 KiB and 1 MiB bodies
/// at concurrency 1, 16 and 64, all in one run.
pub async fn forward(stack: &Stack, duration: Duration, report: &mut Report) -> anyhow::Result<()> {
    let echo = format!("http://{}/echo", stack.echo_addr);
    let auth = vec![("proxy-authorization".to_owned(), format!("Bearer {}", stack.admin_token))];
    let mut results: Vec<(String, usize, usize, f64, f64)> = Vec::new();
    for body in [KIB, MIB] {
        for concurrency in [1, 16, 64] {
            for path in ["baseline", "direct", "agent"] {
                let (url, headers) = match path {
                    "baseline" => (url::Url::parse(&echo)?, Vec::new()),
                    "direct" => (stack.proxy_url(&echo, false), auth.clone()),
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
                let cpu_before = (stack.relay.cpu_seconds(), stack.agent.cpu_seconds());
                let dispatched_before = stack.dispatches().await?;
                let (result, peaks) = peak_rss(&[stack.relay.pid(), stack.agent.pid()], load::run(&spec)).await;
                let result = result?;
                let cpu = (stack.relay.cpu_seconds() - cpu_before.0, stack.agent.cpu_seconds() - cpu_before.1);
                let dispatched = stack.dispatches().await?;
                let (standby, offered) = (dispatched.0 - dispatched_before.0, dispatched.1 - dispatched_before.1);
                let standby_share = (path == "agent" && standby + offered > 0.0)
                    .then(|| format!("{:.0} % down standby calls", standby / (standby + offered) * 100.0));
                let per_k = |seconds: f64| (result.requests > 0).then(|| seconds / result.requests as f64 * 1000.0);
                let case = format!("{path} {} c{concurrency}", if body == KIB { "1KiB" } else { "1MiB" });
                results.push((path.to_owned(), body, concurrency, result.per_second(), result.millis(0.5)));
                report.rows.push(Row {
                    scenario: "forward".into(),
                    case,
                    requests_per_second: Some(result.per_second()),
                    p50_ms: Some(result.millis(0.5)),
                    p99_ms: Some(result.millis(0.99)),
                    max_ms: Some(result.max_millis()),
                    errors: result.errors,
                    relay_cpu_per_1k: if path == "baseline" { None } else { per_k(cpu.0) },
                    agent_cpu_per_1k: if path == "agent" { per_k(cpu.1) } else { None },
                    relay_peak_mib: (path != "baseline").then(|| mib(peaks[0])),
                    agent_peak_mib: (path == "agent").then(|| mib(peaks[1])),
                    note: [result.first_error, standby_share].into_iter().flatten().collect::<Vec<_>>().join("; "),
                });
                report.print_last();
            }
        }
    }
    let find = |path: &str, body: usize, concurrency: usize| {
        results
            .iter()
            .find(|r| r.0 == path && r.1 == body && r.2 == concurrency)
            .map(|r| (r.3, r.4))
            .unwrap_or((0.0, 0.0))
    };
    let (base64, _) = find("baseline", KIB, 64);
    let (agent64, _) = find("agent", KIB, 64);
    report.targets.push(Target::at_least(
        "via agent, 1 KiB, c64: requests/s vs baseline",
        agent64 / base64 * 100.0,
        40.0,
        "%",
    ));
    let (_, base_p50) = find("baseline", KIB, 1);
    let (_, agent_p50) = find("agent", KIB, 1);
    report.targets.push(Target::at_most("via agent, 1 KiB, c1: p50 above baseline", agent_p50 - base_p50, 0.5, "ms"));
    let (direct64, _) = find("direct", KIB, 64);
    report.targets.push(Target::at_least(
        "direct, 1 KiB, c64: requests/s vs baseline",
        direct64 / base64 * 100.0,
        60.0,
        "%",
    ));
    Ok(())
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
    report.targets.push(Target::at_least("stream: throughput each way", throughput, 200.0, "MiB/s"));
    report.targets.push(Target::at_most("stream: relay RSS growth", growth.0, 64.0, "MiB"));
    report.targets.push(Target::at_most("stream: agent RSS growth", growth.1, 64.0, "MiB"));
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
    report.targets.push(Target::at_most("agents: relay memory per session", per_session, 100.0, "KiB"));
    report.targets.push(Target::at_most("agents: all sessions back after a restart", back_in.as_secs_f64(), 30.0, "s"));
    result.map(|_| ())
}

/// `runs`: `count` webhook runs waiting for their callbacks; the relay's
/// memory, the store's size on disk, then the rate of accepted (and so
/// durable) callbacks at concurrency 64.
pub async fn runs(stack: &Stack, count: usize, report: &mut Report) -> anyhow::Result<()> {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    const CONCURRENCY: usize = 64;
    let http = reqwest::Client::new();
    let token = stack.token("clients", serde_json::json!({ "name": "bench-ci" })).await?;
    let file = format!(
        "webhooks:\n  - name: job\n    method: POST\n    uriTemplate: http://{}/echo\n    networkMode: direct\n    bodyTemplate:\n      inline: '{{\"callbackUri\": \"{{{{armory.callbackUri}}}}/callback\"}}'\n",
        stack.echo_addr
    );
    let before = stack.relay.rss_kib();

    // Start the runs, 64 at a time.
    let started = Instant::now();
    let next = Arc::new(AtomicUsize::new(0));
    let mut workers = Vec::new();
    for _ in 0..CONCURRENCY {
        let (http, next, base, admin, file) =
            (http.clone(), next.clone(), stack.relay_http.clone(), stack.admin_token.clone(), file.clone());
        workers.push(tokio::spawn(async move {
            let mut mine = Vec::new();
            while next.fetch_add(1, Ordering::Relaxed) < count {
                let run: serde_json::Value = http
                    .post(format!("{base}/api/v1/webhook-runs"))
                    .bearer_auth(&admin)
                    .json(&serde_json::json!({ "file": file, "name": "job" }))
                    .send()
                    .await?
                    .json()
                    .await?;
                let id = run["id"].as_str().unwrap_or_default().to_owned();
                let callback = format!("{}/callback", run["callbackUri"].as_str().unwrap_or_default());
                mine.push((id, callback));
            }
            Ok::<_, anyhow::Error>(mine)
        }));
    }
    let mut pending = Vec::with_capacity(count);
    for worker in workers {
        pending.extend(worker.await??);
    }
    let creation = started.elapsed();
    // Every run has had its call and now waits for its callback.
    let waiting = |id: String| {
        let (http, base, admin) = (http.clone(), stack.relay_http.clone(), stack.admin_token.clone());
        async move {
            loop {
                let run: serde_json::Value = http
                    .get(format!("{base}/api/v1/webhook-runs/{id}"))
                    .bearer_auth(&admin)
                    .send()
                    .await?
                    .json()
                    .await?;
                match run["state"].as_str() {
                    Some("awaiting_callback") => return Ok::<_, anyhow::Error>(()),
                    Some("pending" | "calling") => tokio::time::sleep(Duration::from_millis(100)).await,
                    other => anyhow::bail!("run {id} is {other:?}"),
                }
            }
        }
    };
    let checks: Vec<anyhow::Result<()>> = futures_util::stream::iter(pending.iter().map(|(id, _)| waiting(id.clone())))
        .buffer_unordered(CONCURRENCY)
        .collect()
        .await;
    checks.into_iter().collect::<anyhow::Result<Vec<()>>>()?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let memory = stack.relay.rss_kib();
    let store_bytes: u64 = ["borealis.db", "borealis.db-wal", "borealis.db-shm"]
        .iter()
        .filter_map(|f| std::fs::metadata(stack.data_dir().join(f)).ok())
        .map(|m| m.len())
        .sum();

    // The callbacks, 64 at a time; a 200 means the decision is on disk.
    let pending = Arc::new(pending);
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let mut workers = Vec::new();
    for _ in 0..CONCURRENCY {
        let (http, next, pending, token) = (http.clone(), next.clone(), pending.clone(), token.clone());
        workers.push(tokio::spawn(async move {
            let mut latency = load::histogram();
            let mut errors = 0u64;
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some((_, callback)) = pending.get(i) else { break };
                let sent = Instant::now();
                let body = serde_json::json!({ "success": i % 2 == 0, "mdMessage": "bench" });
                match http.post(callback).bearer_auth(&token).json(&body).send().await {
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
    let mut errors = 0;
    for worker in workers {
        let (l, e) = worker.await?;
        latency.add(&l)?;
        errors += e;
    }
    let elapsed = started.elapsed();
    let rate = latency.len() as f64 / elapsed.as_secs_f64();
    let per_run = memory.saturating_sub(before) as f64 / count as f64;
    report.rows.push(Row {
        scenario: "runs".into(),
        case: format!("{count} runs, callbacks at c{CONCURRENCY}"),
        requests_per_second: Some(rate),
        p50_ms: Some(latency.value_at_quantile(0.5) as f64 / 1000.0),
        p99_ms: Some(latency.value_at_quantile(0.99) as f64 / 1000.0),
        max_ms: Some(latency.max() as f64 / 1000.0),
        errors,
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
