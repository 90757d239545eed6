//! `borealis-bench`: runs the benchmark scenarios, or points the load
//! generator at any URL.

use std::path::PathBuf;
use std::time::Duration;

use borealis_bench::{drain, echo, load, procs, report::Report, scenarios};
use clap::{Parser, Subcommand};

/// Benchmarks Borealis with real relay, agent and echo processes.
#[derive(Parser, Debug)]
#[command(name = "borealis-bench")]
struct Flags {
    /// Run one scenario: drain, forward, stream, runs, cluster or agents.
    #[arg(long)]
    only: Option<String>,
    /// Agent sessions in the agents scenario.
    #[arg(long, default_value_t = 10_000)]
    sessions: usize,
    /// Webhook runs in the runs scenario.
    #[arg(long, default_value_t = 100_000)]
    runs: usize,
    /// Webhook runs pending at the crash in the drain scenario.
    #[arg(long, default_value_t = 100_000)]
    drain_runs: usize,
    /// Webhook runs in each callbacks case of the cluster scenario.
    #[arg(long, default_value_t = 20_000)]
    cluster_runs: usize,
    /// The PostgreSQL server of the cluster scenario: each case gets a
    /// schema of its own in its database; without an answer, the cases are
    /// reported as skipped.
    #[arg(long, default_value = "postgres://postgres@127.0.0.1:5432/test")]
    postgres_url: String,
    /// Length of each load case.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    duration: Duration,
    /// Measure any HTTP URL with the load generator instead.
    #[arg(long)]
    url: Option<url::Url>,
    /// With --url: connections.
    #[arg(long, default_value_t = 16)]
    concurrency: usize,
    /// With --url: request body size (POST when above 0).
    #[arg(long, default_value_t = 0)]
    body_bytes: usize,
    /// With --url: a request header, "Name: value" (repeatable).
    #[arg(short = 'H', long = "header")]
    headers: Vec<String>,
    /// rathole's binary (v0.5.0, built by scripts/bench-reference.sh): the
    /// forward scenario measures it beside the other paths, with its targets.
    #[arg(long, value_name = "PATH")]
    rathole: Option<PathBuf>,
    /// Where latest.md and latest.json go.
    #[arg(long, default_value = "bench/results")]
    out: PathBuf,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// The echo server the scenarios run against (started by the benchmark).
    Echo {
        #[arg(long, default_value = "127.0.0.1:0")]
        listen: String,
    },
    /// Start echo, relay and agent, print their addresses and pids, and
    /// hold them until Ctrl-C: for profiling one path with --url.
    Up,
}

fn parse_duration(text: &str) -> Result<Duration, String> {
    humantime::parse_duration(text).map_err(|e| e.to_string())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let flags = Flags::parse();
    procs::raise_descriptor_limit();
    // SIGTERM or Ctrl-C drops the run, and with it every process it
    // started (each is killed and reaped when dropped): none is left behind.
    tokio::select! {
        done = run(flags) => done,
        signal = stopped() => {
            let signal = signal?;
            eprintln!("borealis-bench: {signal}: stopping what it started");
            Ok(())
        }
    }
}

/// The first SIGTERM, SIGINT or SIGHUP.
async fn stopped() -> std::io::Result<&'static str> {
    use tokio::signal::unix::{SignalKind, signal};
    let (mut term, mut int, mut hup) =
        (signal(SignalKind::terminate())?, signal(SignalKind::interrupt())?, signal(SignalKind::hangup())?);
    Ok(tokio::select! {
        _ = term.recv() => "SIGTERM",
        _ = int.recv() => "SIGINT",
        _ = hup.recv() => "SIGHUP",
    })
}

async fn run(flags: Flags) -> anyhow::Result<()> {
    if let Some(Command::Echo { listen }) = &flags.command {
        return echo::serve(tokio::net::TcpListener::bind(listen).await?).await;
    }
    if let Some(url) = &flags.url {
        let spec = load::LoadSpec {
            url: url.clone(),
            method: if flags.body_bytes > 0 { http::Method::POST } else { http::Method::GET },
            headers: flags
                .headers
                .iter()
                .map(|h| h.split_once(':').map(|(n, v)| (n.trim().to_owned(), v.trim().to_owned())))
                .collect::<Option<Vec<_>>>()
                .ok_or_else(|| anyhow::anyhow!("--header takes \"Name: value\""))?,
            body: bytes::Bytes::from(vec![b'b'; flags.body_bytes]),
            concurrency: flags.concurrency,
            duration: flags.duration,
        };
        let result = load::run(&spec).await?;
        println!(
            "{url}: {:.0} req/s, p50 {:.3} ms, p99 {:.3} ms, max {:.1} ms, {} errors{}",
            result.per_second(),
            result.millis(0.5),
            result.millis(0.99),
            result.max_millis(),
            result.errors,
            result.first_error.map(|e| format!(" (first: {e})")).unwrap_or_default()
        );
        return Ok(());
    }
    if let Some(Command::Up) = &flags.command {
        let stack = procs::Stack::start().await?;
        let echo = format!("http://{}/echo", stack.echo_addr);
        println!("baseline: {echo}");
        println!("direct:   {}", stack.proxy_url(&echo, false));
        println!("agent:    {}", stack.proxy_url(&echo, true));
        println!("header:   -H 'proxy-authorization: Bearer {}'", stack.admin_token);
        println!("Ctrl-C or SIGTERM stops them.");
        // Until a signal ends the run (in `main`), which stops them.
        std::future::pending::<()>().await;
    }
    let scenarios = ["drain", "forward", "stream", "runs", "cluster", "agents"];
    if let Some(only) = &flags.only {
        anyhow::ensure!(
            scenarios.contains(&only.as_str()),
            "unknown scenario {only:?}; scenarios: {}",
            scenarios.join(", ")
        );
    }
    let wanted = |name: &str| flags.only.as_deref().is_none_or(|only| only == name);
    let mut report = Report::default();
    // First, with nothing else running: its own relay and destination.
    if wanted("drain") {
        drain::drain(flags.drain_runs, &mut report).await?;
    }
    if scenarios.iter().any(|name| *name != "drain" && wanted(name)) {
        let mut stack = procs::Stack::start().await?;
        if wanted("forward") {
            let rathole = match &flags.rathole {
                Some(binary) => Some(borealis_bench::rathole::Rathole::start(binary, &stack.echo_addr).await?),
                None => None,
            };
            scenarios::forward(&stack, rathole.as_ref(), flags.duration, &mut report).await?;
        }
        if wanted("stream") {
            scenarios::stream(&stack, &mut report).await?;
        }
        if wanted("runs") {
            scenarios::runs(&stack, flags.runs, &mut report).await?;
        }
        // Its own relays, on PostgreSQL; only the echo server is shared.
        if wanted("cluster") {
            scenarios::cluster(&stack, &flags.postgres_url, flags.cluster_runs, flags.duration, &mut report).await?;
        }
        // Last: it restarts the relay.
        if wanted("agents") {
            scenarios::agents(&mut stack, flags.sessions, &mut report).await?;
        }
    }
    report.print_targets();
    let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
    let commit = std::process::Command::new("git")
        .args(["rev-parse", "--short", "HEAD"])
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .map(|s| s.trim().to_owned())
        .unwrap_or_else(|| "unknown".into());
    report.write(&flags.out, cores, &commit, &humantime::format_duration(flags.duration).to_string())?;
    println!("\nwrote {}/latest.md and latest.json", flags.out.display());
    Ok(())
}
