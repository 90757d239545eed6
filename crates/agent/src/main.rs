//! `borealis-agent`: flags, logging, signals. The work is in the library.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use borealis_agent::{AgentConfig, AgentError};
use borealis_egress::AllowRule;
use borealis_logging::LogFormat;
use clap::Parser;

/// The Borealis agent: dials out to the relay and forwards its webhook calls
/// to destinations inside this network that --allow permits.
#[derive(Parser, Debug)]
#[command(name = "borealis-agent", version)]
struct Flags {
    /// The relay's agent listener, e.g. https://relay.example.com:9090
    /// (BOREALIS_RELAY, the CLI's API address, is read too for one release,
    /// with a warning).
    #[arg(long, env = "BOREALIS_TUNNEL_URL", value_name = "URL")]
    relay: Option<url::Url>,
    /// Client id from `borealis agents create ID`.
    #[arg(long, env = "BOREALIS_CLIENT_ID", value_name = "ID")]
    client_id: String,
    /// A file holding the client secret from `borealis agents create ID`
    /// (or the secret itself in BOREALIS_CLIENT_SECRET).
    #[arg(long, env = "BOREALIS_CLIENT_SECRET_FILE", value_name = "PATH")]
    client_secret_file: Option<PathBuf>,
    /// The client secret; as a flag value `ps` shows it to everyone on the
    /// host, so prefer --client-secret-file or BOREALIS_CLIENT_SECRET.
    #[arg(long, env = "BOREALIS_CLIENT_SECRET", value_name = "SECRET", hide_env_values = true)]
    client_secret: Option<String>,
    /// The agent identifier to serve [default: the credential's].
    #[arg(long, env = "BOREALIS_AGENT_ID", value_name = "ID")]
    agent_id: Option<String>,
    /// A destination this agent may call (repeatable): host, host:port, *.domain, or a CIDR.
    #[arg(long, env = "BOREALIS_ALLOW", value_name = "RULE", value_delimiter = ',')]
    allow: Vec<AllowRule>,
    /// Forward to any destination.
    #[arg(long, env = "BOREALIS_ALLOW_ANY")]
    allow_any: bool,
    /// PEM CA bundle to trust for the relay's certificate.
    #[arg(long, env = "BOREALIS_CA_FILE", value_name = "FILE")]
    ca_file: Option<PathBuf>,
    /// Most requests forwarded at once.
    #[arg(long, env = "BOREALIS_MAX_CONCURRENCY", default_value_t = 256)]
    max_concurrency: usize,
    /// Most calls to the relay kept open in advance, so that a request
    /// skips the offer round trip. Each session starts with 2 and keeps one
    /// more whenever a request finds none idle (0: none).
    #[arg(long, env = "BOREALIS_STANDBY_CALLS", value_name = "N", default_value_t = 64,
          value_parser = clap::value_parser!(u32).range(0..=64))]
    standby_calls: u32,
    /// Lanes opened per session: long-lived calls that carry small
    /// requests and responses (at most 64 KiB of body), batched; larger or
    /// streamed ones take calls of their own (0: none).
    #[arg(long, env = "BOREALIS_LANES", value_name = "N", default_value_t = borealis_protocol::lanes::MAX_LANES,
          value_parser = clap::value_parser!(u32).range(0..=i64::from(borealis_protocol::lanes::MAX_LANES)))]
    lanes: u32,
    /// Largest response body forwarded, in bytes.
    #[arg(long, env = "BOREALIS_MAX_BODY_BYTES", default_value_t = 1 << 30)]
    max_body_bytes: u64,
    /// Name shown to operators in `borealis agents list` [default: host name].
    #[arg(long, env = "BOREALIS_INSTANCE")]
    instance: Option<String>,
    /// Address for /healthz, /readyz and /metrics.
    #[arg(long, env = "BOREALIS_HEALTH_LISTEN", value_name = "ADDR")]
    health_listen: Option<SocketAddr>,
    /// Longest wait between reconnect attempts (at most 30s).
    #[arg(long, env = "BOREALIS_MAX_BACKOFF", default_value = "30s", value_parser = parse_duration)]
    max_backoff: std::time::Duration,
    /// On SIGTERM, how long in-flight requests may still run.
    #[arg(long, env = "BOREALIS_SHUTDOWN_GRACE", default_value = "30s", value_parser = parse_duration)]
    shutdown_grace: std::time::Duration,
    /// Threads that run the agent's work. One core carries thousands of
    /// requests a second, and one thread spares the cross-thread wake-ups
    /// that cost more on a busy or small host; raise it for more.
    #[arg(long, env = "BOREALIS_WORKER_THREADS", value_name = "N", default_value_t = 1,
          value_parser = clap::value_parser!(u16).range(1..=1024))]
    worker_threads: u16,
    /// How log lines are written: text, or json (one object per line).
    #[arg(long, env = "BOREALIS_LOG_FORMAT", value_name = "FORMAT", default_value_t = LogFormat::Text)]
    log_format: LogFormat,
}

fn parse_duration(text: &str) -> Result<std::time::Duration, String> {
    borealis_core::duration::parse(text).map_err(|e| e.to_string())
}

fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "agent".into())
}

#[cfg(not(target_env = "msvc"))]
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() -> ExitCode {
    let matches = <Flags as clap::CommandFactory>::command().get_matches();
    let flags = <Flags as clap::FromArgMatches>::from_arg_matches(&matches).unwrap_or_else(|err| err.exit());
    borealis_logging::init(flags.log_format);
    if matches.value_source("client_secret") == Some(clap::parser::ValueSource::CommandLine) {
        tracing::warn!(
            "--client-secret puts the secret on the command line, where every user of this host can read it: \
             use --client-secret-file PATH or BOREALIS_CLIENT_SECRET"
        );
    }
    match runtime(flags.worker_threads) {
        Ok(runtime) => runtime.block_on(run(flags)),
        Err(err) => {
            eprintln!("borealis-agent: cannot start the runtime: {err}");
            ExitCode::FAILURE
        }
    }
}

/// One thread runs everything on the current thread; more share the work.
fn runtime(worker_threads: u16) -> std::io::Result<tokio::runtime::Runtime> {
    let mut builder = match worker_threads {
        1 => tokio::runtime::Builder::new_current_thread(),
        n => {
            let mut builder = tokio::runtime::Builder::new_multi_thread();
            builder.worker_threads(usize::from(n));
            builder
        }
    };
    builder.enable_all().build()
}

/// `--relay`, else `BOREALIS_TUNNEL_URL`, else the name it had before
/// (`BOREALIS_RELAY`, which is the CLI's API address), with a warning.
fn relay_url(flag: Option<url::Url>) -> Result<url::Url, String> {
    if let Some(url) = flag {
        return Ok(url);
    }
    let Ok(old) = std::env::var("BOREALIS_RELAY") else {
        return Err("give the relay's agents' listener as --relay or BOREALIS_TUNNEL_URL".into());
    };
    tracing::warn!(
        "BOREALIS_RELAY is read as the agent's relay for one more release: name the relay's agents' listener in \
         BOREALIS_TUNNEL_URL (BOREALIS_RELAY is the CLI's address of the HTTP API)"
    );
    url::Url::parse(&old).map_err(|e| format!("BOREALIS_RELAY {old:?}: {e}"))
}

/// The client secret: the file's (trimmed), else the flag's or the
/// environment's.
fn client_secret(given: Option<String>, file: Option<&std::path::Path>) -> Result<borealis_core::Secret, String> {
    match (given, file) {
        (Some(_), Some(_)) => Err("give the client secret once: --client-secret-file or BOREALIS_CLIENT_SECRET, \
             not both"
            .into()),
        (None, Some(path)) => match std::fs::read_to_string(path) {
            Ok(text) if !text.trim().is_empty() => Ok(text.trim().to_owned().into()),
            Ok(_) => Err(format!("--client-secret-file {} is empty", path.display())),
            Err(err) => Err(format!("--client-secret-file {}: {err}", path.display())),
        },
        (Some(secret), None) => Ok(secret.into()),
        (None, None) => Err("give the client secret from `borealis agents create ID` in a file \
             (--client-secret-file PATH, or BOREALIS_CLIENT_SECRET_FILE) or in BOREALIS_CLIENT_SECRET"
            .into()),
    }
}

async fn run(flags: Flags) -> ExitCode {
    let relay = match relay_url(flags.relay) {
        Ok(url) => url,
        Err(err) => {
            eprintln!("borealis-agent: {err}");
            return ExitCode::from(2);
        }
    };
    let client_secret = match client_secret(flags.client_secret, flags.client_secret_file.as_deref()) {
        Ok(secret) => secret,
        Err(err) => {
            eprintln!("borealis-agent: {err}");
            return ExitCode::from(2);
        }
    };
    let config = AgentConfig {
        relay,
        client_id: flags.client_id,
        client_secret,
        agent_id: flags.agent_id,
        allow: flags.allow,
        allow_any: flags.allow_any,
        ca_file: flags.ca_file,
        max_concurrency: flags.max_concurrency,
        standby_calls: flags.standby_calls,
        lanes: flags.lanes,
        max_body_bytes: flags.max_body_bytes,
        instance: flags.instance.unwrap_or_else(host_name),
        max_backoff: flags.max_backoff.min(std::time::Duration::from_secs(30)),
        shutdown_grace: flags.shutdown_grace,
        health_listen: flags.health_listen,
    };
    if let Err(err) = config.validate() {
        eprintln!("borealis-agent: {err}");
        return ExitCode::from(2);
    }
    let health = match config.health_listen {
        Some(addr) => match tokio::net::TcpListener::bind(addr).await {
            Ok(listener) => {
                tracing::info!(addr = %listener.local_addr().map(|a| a.to_string()).unwrap_or_default(), "health listener ready");
                Some(listener)
            }
            Err(err) => {
                eprintln!("borealis-agent: cannot listen on {addr} (--health-listen): {err}");
                return ExitCode::from(2);
            }
        },
        None => None,
    };
    match borealis_agent::run(config, health, shutdown_signal()).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(err @ AgentError::NotTheTunnel(_)) => {
            eprintln!("borealis-agent: {err}");
            ExitCode::FAILURE
        }
        Err(err @ AgentError::Rejected(_)) => {
            eprintln!(
                "borealis-agent: {err}. Check the client id and secret; a revoked or unknown credential needs `borealis agents create`."
            );
            ExitCode::FAILURE
        }
        Err(err) => {
            eprintln!("borealis-agent: {err}");
            ExitCode::FAILURE
        }
    }
}

async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}
