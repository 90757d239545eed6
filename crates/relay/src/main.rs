//! `borealis-relay`: flags, logging, listeners, signals. The work is in the library.

use std::path::PathBuf;

use anyhow::Context;
use borealis_logging::LogFormat;
use borealis_relay::{Listeners, RelayConfig};
use clap::Parser;

/// The Borealis relay: runs webhook-gated deployments and the agents' tunnel.
///
/// Every option can also be set in the TOML file given to --config, and as a
/// BOREALIS_* environment variable (for example BOREALIS_DATA_DIR). Flags win
/// over the environment, which wins over the file.
#[derive(Parser, Debug)]
#[command(name = "borealis-relay", version)]
struct Flags {
    /// TOML configuration file.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Where the relay keeps its state [default: ./borealis-data].
    #[arg(long, value_name = "DIR")]
    data_dir: Option<PathBuf>,
    /// Address for the HTTP API, token endpoint and callbacks [default: 127.0.0.1:8080].
    #[arg(long, value_name = "ADDR")]
    listen: Option<String>,
    /// Address for the agents' gRPC tunnel [default: 127.0.0.1:9090].
    #[arg(long, value_name = "ADDR")]
    agent_listen: Option<String>,
    /// Base URL the outside world reaches this relay at, for callback URIs.
    #[arg(long, value_name = "URL")]
    public_url: Option<String>,
    /// Database URL [default: SQLite in the data dir].
    #[arg(long, value_name = "URL")]
    database_url: Option<String>,
    /// A range direct mode may reach despite the address guard (repeatable).
    #[arg(long, value_name = "CIDR")]
    direct_allow: Vec<String>,
    /// How long a webhook waits for its callback [default: 24h].
    #[arg(long, value_name = "DURATION")]
    callback_timeout: Option<String>,
    /// PEM certificate chain for TLS on both listeners.
    #[arg(long, value_name = "FILE", requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// PEM private key for --tls-cert.
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// Largest body a forwarded request or reply may carry, in bytes [default: 1 GiB].
    #[arg(long, value_name = "BYTES")]
    max_body_bytes: Option<u64>,
    /// Default time limit of one forwarded request [default: 5m].
    #[arg(long, value_name = "DURATION")]
    request_timeout: Option<String>,
    /// Heartbeat interval asked of agents [default: 10s].
    #[arg(long, value_name = "DURATION")]
    heartbeat_interval: Option<String>,
    /// On SIGTERM, how long in-flight requests may still run [default: 30s].
    #[arg(long, value_name = "DURATION")]
    shutdown_grace: Option<String>,
    /// Time limit of one webhook call [default: 60s].
    #[arg(long, value_name = "DURATION")]
    webhook_timeout: Option<String>,
    /// First delay between webhook retries; it doubles, with jitter [default: 1s].
    #[arg(long, value_name = "DURATION")]
    retry_base_delay: Option<String>,
    /// How often a closed Flagger gate is asked again [default: 10s].
    #[arg(long, value_name = "DURATION")]
    gate_interval: Option<String>,
    /// How log lines are written: text, or json (one object per line).
    #[arg(long, env = "BOREALIS_LOG_FORMAT", value_name = "FORMAT", default_value_t = LogFormat::Text)]
    log_format: LogFormat,
    /// Most open connections on both listeners [default: half the open-file limit].
    #[arg(long, value_name = "N")]
    max_connections: Option<u64>,
    /// Most open connections from one address [default: a quarter of --max-connections].
    #[arg(long, value_name = "N")]
    max_connections_per_peer: Option<u64>,
    /// How long a new connection may take to send a request head [default: 10s].
    #[arg(long, value_name = "DURATION")]
    header_timeout: Option<String>,
    /// How long a connection may stay open with no request in flight [default: 2m].
    #[arg(long, value_name = "DURATION")]
    idle_timeout: Option<String>,
    /// Failed authentications per minute one address may make before 429 [default: 30].
    #[arg(long, value_name = "N")]
    auth_failures_per_minute: Option<u64>,
    /// Largest rendered template field, in bytes [default: 65536].
    #[arg(long, value_name = "BYTES")]
    max_rendered_field_bytes: Option<u64>,
    /// Largest rendered webhook request, in bytes [default: 262144].
    #[arg(long, value_name = "BYTES")]
    max_rendered_request_bytes: Option<u64>,
    /// The stored secret that signs every outgoing call without a signing: of
    /// its own (Standard Webhooks: webhook-id, webhook-timestamp, webhook-signature).
    #[arg(long, value_name = "NAME")]
    webhook_signing_secret: Option<String>,
}

impl Flags {
    fn overrides(&self) -> Vec<(&'static str, config::Value)> {
        let mut set: Vec<(&'static str, config::Value)> = Vec::new();
        let mut put = |key, value: Option<String>| {
            if let Some(value) = value {
                set.push((key, value.into()));
            }
        };
        put("data_dir", self.data_dir.as_ref().map(|p| p.display().to_string()));
        put("listen", self.listen.clone());
        put("agent_listen", self.agent_listen.clone());
        put("public_url", self.public_url.clone());
        put("database_url", self.database_url.clone());
        put("callback_timeout", self.callback_timeout.clone());
        put("tls_cert", self.tls_cert.as_ref().map(|p| p.display().to_string()));
        put("tls_key", self.tls_key.as_ref().map(|p| p.display().to_string()));
        put("max_body_bytes", self.max_body_bytes.map(|n| n.to_string()));
        put("request_timeout", self.request_timeout.clone());
        put("heartbeat_interval", self.heartbeat_interval.clone());
        put("shutdown_grace", self.shutdown_grace.clone());
        put("webhook_timeout", self.webhook_timeout.clone());
        put("retry_base_delay", self.retry_base_delay.clone());
        put("gate_interval", self.gate_interval.clone());
        put("header_timeout", self.header_timeout.clone());
        put("idle_timeout", self.idle_timeout.clone());
        put("webhook_signing_secret", self.webhook_signing_secret.clone());
        for (key, value) in [
            ("max_connections", self.max_connections),
            ("max_connections_per_peer", self.max_connections_per_peer),
            ("auth_failures_per_minute", self.auth_failures_per_minute),
            ("max_rendered_field_bytes", self.max_rendered_field_bytes),
            ("max_rendered_request_bytes", self.max_rendered_request_bytes),
        ] {
            put(key, value.map(|n| n.to_string()));
        }
        if !self.direct_allow.is_empty() {
            set.push(("direct_allow", self.direct_allow.clone().into()));
        }
        set
    }
}

#[cfg(not(target_env = "msvc"))]
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let flags = Flags::parse();
    borealis_logging::init(flags.log_format);
    let config = RelayConfig::load(flags.config.as_deref(), std::env::vars(), &flags.overrides())?;
    let http = tokio::net::TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("cannot listen on {} (--listen)", config.listen))?;
    let agents = tokio::net::TcpListener::bind(config.agent_listen)
        .await
        .with_context(|| format!("cannot listen on {} (--agent-listen)", config.agent_listen))?;
    borealis_relay::run(config, Listeners { http, agents }, shutdown_signal()).await?;
    Ok(())
}

async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}
