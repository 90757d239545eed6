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
    #[command(subcommand)]
    command: Option<Command>,
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
    /// Most lanes an agent session may open, 0 to 4; 0 sends every request on a call of its own [default: 4].
    #[arg(long, value_name = "N")]
    agent_lanes: Option<u32>,
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
    #[arg(long, value_name = "FORMAT", value_parser = parse_log_format)]
    log_format: Option<LogFormat>,
    /// Most open connections on both listeners [default: half the open-file limit].
    #[arg(long, value_name = "N")]
    max_connections: Option<u64>,
    /// Most open connections from one client address [default: an eighth of --max-connections].
    #[arg(long, value_name = "N")]
    max_connections_per_peer: Option<u64>,
    /// Most requests in flight from one client address [default: 8 x --max-connections-per-peer].
    #[arg(long, value_name = "N")]
    max_requests_per_peer: Option<u64>,
    /// How long a request body may take: whole within it, streamed with no
    /// longer pause and at least 1 KiB/s after it [default: 30s].
    #[arg(long, value_name = "DURATION")]
    body_timeout: Option<String>,
    /// A balancer whose PROXY protocol header or X-Forwarded-For names the
    /// client (repeatable); from any other address both are ignored.
    #[arg(long = "trusted-proxy", value_name = "CIDR")]
    trusted_proxies: Vec<String>,
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
    /// This replica's name in `agents list` and logs [default: host name and HTTP port].
    #[arg(long, value_name = "NAME")]
    replica_name: Option<String>,
    /// Where other replicas reach this one directly, to forward requests
    /// for the agents it holds [default: the HTTP listener's address].
    #[arg(long, value_name = "URL")]
    peer_url: Option<String>,
    /// How long a replica owns work without renewing its lease [default: 15s].
    #[arg(long, value_name = "DURATION")]
    lease_duration: Option<String>,
    /// How often a replica looks for due or orphaned work [default: 1s].
    #[arg(long, value_name = "DURATION")]
    poll_interval: Option<String>,
    /// How long the audit trail keeps an entry; 0 keeps it forever [default: 0].
    #[arg(long, value_name = "DURATION")]
    audit_retention: Option<String>,
    /// People sign in to the console through this OpenID Connect provider (its issuer URL).
    #[arg(long, value_name = "URL")]
    oidc_issuer: Option<String>,
    /// The relay's client id at the provider.
    #[arg(long, value_name = "ID")]
    oidc_client_id: Option<String>,
    /// A file holding the client's secret (or BOREALIS_OIDC_CLIENT_SECRET; never a flag value).
    #[arg(long, value_name = "PATH")]
    oidc_client_secret_file: Option<PathBuf>,
    /// The ID token claim that lists a person's groups [default: groups].
    #[arg(long, value_name = "NAME")]
    oidc_groups_claim: Option<String>,
    /// Scopes asked for at sign-in, space-separated [default: "openid profile email"].
    #[arg(long, value_name = "SCOPES")]
    oidc_scopes: Option<String>,
    /// People in this provider group are organization admins (repeatable).
    #[arg(long = "oidc-admin-group", value_name = "GROUP")]
    oidc_admin_groups: Vec<String>,
    /// Turns the bootstrap admin token off, once people sign in and
    /// --oidc-admin-group names the organization admins.
    #[arg(long)]
    disable_admin_token: bool,
}

#[derive(clap::Subcommand, Debug)]
enum Command {
    /// Copies a single relay's state (SQLite) into an empty PostgreSQL
    /// database, for replicas: credentials, secrets, settings, metric
    /// providers, webhook runs and deployments. Stop the relay first.
    Migrate {
        /// The relay's database: sqlite://PATH (its data dir's borealis.db).
        #[arg(long, value_name = "URL")]
        from: String,
        /// The PostgreSQL database replicas will share: postgres://...
        #[arg(long, value_name = "URL")]
        to: String,
    },
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
        put("agent_lanes", self.agent_lanes.map(|n| n.to_string()));
        put("shutdown_grace", self.shutdown_grace.clone());
        put("webhook_timeout", self.webhook_timeout.clone());
        put("retry_base_delay", self.retry_base_delay.clone());
        put("gate_interval", self.gate_interval.clone());
        put("header_timeout", self.header_timeout.clone());
        put("idle_timeout", self.idle_timeout.clone());
        put("body_timeout", self.body_timeout.clone());
        put("webhook_signing_secret", self.webhook_signing_secret.clone());
        put("replica_name", self.replica_name.clone());
        put("peer_url", self.peer_url.clone());
        put("lease_duration", self.lease_duration.clone());
        put("poll_interval", self.poll_interval.clone());
        put("audit_retention", self.audit_retention.clone());
        put("oidc_issuer", self.oidc_issuer.clone());
        put("oidc_client_id", self.oidc_client_id.clone());
        put("oidc_client_secret_file", self.oidc_client_secret_file.as_ref().map(|p| p.display().to_string()));
        put("oidc_groups_claim", self.oidc_groups_claim.clone());
        put("oidc_scopes", self.oidc_scopes.clone());
        put("log_format", self.log_format.map(|f| f.to_string()));
        for (key, value) in [
            ("max_connections", self.max_connections),
            ("max_connections_per_peer", self.max_connections_per_peer),
            ("max_requests_per_peer", self.max_requests_per_peer),
            ("auth_failures_per_minute", self.auth_failures_per_minute),
            ("max_rendered_field_bytes", self.max_rendered_field_bytes),
            ("max_rendered_request_bytes", self.max_rendered_request_bytes),
        ] {
            put(key, value.map(|n| n.to_string()));
        }
        if !self.direct_allow.is_empty() {
            set.push(("direct_allow", self.direct_allow.clone().into()));
        }
        if !self.trusted_proxies.is_empty() {
            set.push(("trusted_proxies", self.trusted_proxies.clone().into()));
        }
        if !self.oidc_admin_groups.is_empty() {
            set.push(("oidc_admin_groups", self.oidc_admin_groups.clone().into()));
        }
        if self.disable_admin_token {
            set.push(("disable_admin_token", true.into()));
        }
        set
    }
}

fn parse_log_format(text: &str) -> Result<LogFormat, String> {
    text.parse()
}

#[cfg(not(target_env = "msvc"))]
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let flags = Flags::parse();
    if let Some(Command::Migrate { from, to }) = &flags.command {
        return migrate(from, to).await;
    }
    // Logging starts once the configuration (which may set its format) is
    // read; an error before that is printed by itself.
    let config = RelayConfig::load(flags.config.as_deref(), std::env::vars(), &flags.overrides())?;
    borealis_logging::init(config.log_format);
    let http = tokio::net::TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("cannot listen on {} (--listen)", config.listen))?;
    let agents = tokio::net::TcpListener::bind(config.agent_listen)
        .await
        .with_context(|| format!("cannot listen on {} (--agent-listen)", config.agent_listen))?;
    borealis_relay::run(config, Listeners { http, agents }, shutdown_signal()).await?;
    Ok(())
}

/// `borealis-relay migrate`: says what it copied, or why it copied nothing.
async fn migrate(from: &str, to: &str) -> anyhow::Result<()> {
    if !from.starts_with("sqlite:") {
        anyhow::bail!("--from must be a sqlite:// URL (the single relay's borealis.db), not {:?}", scheme(from));
    }
    if !(to.starts_with("postgres:") || to.starts_with("postgresql:")) {
        anyhow::bail!("--to must be a postgres:// URL, not {:?}", scheme(to));
    }
    let source = match borealis_store::migrate::open_source(from).await {
        Ok(source) => source,
        Err(err @ borealis_store::migrate::MigrateError::SourceMissing { .. }) => {
            // A usage error, as clap's are: exit 2.
            eprintln!("Error: --from: {err}");
            std::process::exit(2);
        }
        Err(err) => return Err(err).context("--from"),
    };
    let target = borealis_store::PostgresStore::open(to).await.context("--to")?;
    let copied = borealis_store::migrate::sqlite_to_postgres(&source, &target).await?;
    println!("copied into PostgreSQL:");
    for (table, rows) in &copied.0 {
        println!("  {table}: {rows}");
    }
    println!(
        "Start every replica with --database-url set to the target and with this relay's secret key, or the \
         copied secrets cannot be read: BOREALIS_SECRET_KEY=$(base64 -w0 DATA_DIR/secret-key), unless it \
         already had BOREALIS_SECRET_KEY. Its admin token is copied as the shared one only if a replica starts \
         with it (BOREALIS_ADMIN_TOKEN=$(cat DATA_DIR/admin-token))."
    );
    Ok(())
}

/// A URL's scheme only: the rest may hold a password.
fn scheme(url: &str) -> &str {
    url.split_once(':').map(|(scheme, _)| scheme).unwrap_or("(none)")
}

async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    /// A value other than the default for every setting, as a flag value,
    /// an environment value and a TOML value.
    const SAMPLES: &[(&str, &str, &str)] = &[
        ("data_dir", "/tmp/borealis-sample", "\"/tmp/borealis-sample\""),
        ("listen", "127.0.0.1:7001", "\"127.0.0.1:7001\""),
        ("agent_listen", "127.0.0.1:7002", "\"127.0.0.1:7002\""),
        ("public_url", "https://relay.example.com/", "\"https://relay.example.com/\""),
        ("database_url", "sqlite:///tmp/sample.db", "\"sqlite:///tmp/sample.db\""),
        ("direct_allow", "10.9.0.0/16", "[\"10.9.0.0/16\"]"),
        ("callback_timeout", "7h", "\"7h\""),
        ("tls_cert", "/tmp/sample-cert.pem", "\"/tmp/sample-cert.pem\""),
        ("tls_key", "/tmp/sample-key.pem", "\"/tmp/sample-key.pem\""),
        ("admin_token", "a-sample-admin-token-0123", "\"a-sample-admin-token-0123\""),
        ("max_body_bytes", "7000", "7000"),
        ("request_timeout", "7s", "\"7s\""),
        ("heartbeat_interval", "7s", "\"7s\""),
        ("agent_lanes", "2", "2"),
        ("shutdown_grace", "7s", "\"7s\""),
        (
            "secret_key",
            "c2FtcGxlLXNlY3JldC1rZXktb2YtMzItYnl0ZXMhIQ==",
            "\"c2FtcGxlLXNlY3JldC1rZXktb2YtMzItYnl0ZXMhIQ==\"",
        ),
        ("webhook_timeout", "7s", "\"7s\""),
        ("retry_base_delay", "7s", "\"7s\""),
        ("gate_interval", "7s", "\"7s\""),
        ("max_connections", "77", "77"),
        ("max_connections_per_peer", "7", "7"),
        ("max_requests_per_peer", "70", "70"),
        ("header_timeout", "7s", "\"7s\""),
        ("idle_timeout", "7s", "\"7s\""),
        ("body_timeout", "7s", "\"7s\""),
        ("trusted_proxies", "10.7.0.0/16", "[\"10.7.0.0/16\"]"),
        ("auth_failures_per_minute", "7", "7"),
        ("max_rendered_field_bytes", "7000", "7000"),
        ("max_rendered_request_bytes", "70000", "70000"),
        ("log_format", "json", "\"json\""),
        ("webhook_signing_secret", "sample_key", "\"sample_key\""),
        ("replica_name", "relay-7", "\"relay-7\""),
        ("peer_url", "http://10.0.0.7:8080/", "\"http://10.0.0.7:8080/\""),
        ("lease_duration", "7s", "\"7s\""),
        ("poll_interval", "700ms", "\"700ms\""),
        ("audit_retention", "7d", "\"7d\""),
        ("oidc_issuer", "https://login.example/", "\"https://login.example/\""),
        ("oidc_client_id", "borealis", "\"borealis\""),
        ("oidc_client_secret", "client-secret", "\"client-secret\""),
        ("oidc_client_secret_file", SECRET_FILE, concat!("\"", env!("CARGO_MANIFEST_DIR"), "/Cargo.toml\"")),
        ("oidc_groups_claim", "roles", "\"roles\""),
        ("oidc_scopes", "openid groups", "\"openid groups\""),
        ("oidc_admin_groups", "platform", "[\"platform\"]"),
        ("disable_admin_token", "true", "true"),
    ];

    /// Secrets are not flags, so that they stay out of the process list.
    const NOT_FLAGS: &[&str] = &["admin_token", "secret_key", "oidc_client_secret"];

    /// A file that exists, for the client secret's file.
    const SECRET_FILE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/Cargo.toml");

    /// TLS needs its certificate and key together; sign-in its issuer, client id and secret.
    fn with_partner(key: &str) -> Vec<&'static (&'static str, &'static str, &'static str)> {
        let partners: &[&str] = match key {
            "tls_cert" => &["tls_key"],
            "tls_key" => &["tls_cert"],
            "oidc_issuer" => &["oidc_client_id", "oidc_client_secret_file"],
            "oidc_client_id" => &["oidc_issuer", "oidc_client_secret_file"],
            "oidc_client_secret_file" => &["oidc_issuer", "oidc_client_id"],
            "oidc_client_secret" => &["oidc_issuer", "oidc_client_id"],
            "oidc_admin_groups" => &["oidc_issuer", "oidc_client_id", "oidc_client_secret_file"],
            "disable_admin_token" => &["oidc_issuer", "oidc_client_id", "oidc_client_secret_file", "oidc_admin_groups"],
            _ => &[],
        };
        SAMPLES.iter().filter(|(k, _, _)| *k == key || partners.contains(k)).collect()
    }

    /// A setting's flag: its name with dashes, singular where it repeats.
    fn flag(key: &str) -> String {
        match key {
            "trusted_proxies" => "--trusted-proxy".to_owned(),
            "oidc_admin_groups" => "--oidc-admin-group".to_owned(),
            key => format!("--{}", key.replace('_', "-")),
        }
    }

    fn value_of(config: &RelayConfig, key: &str) -> serde_json::Value {
        serde_json::to_value(config).unwrap()[key].clone()
    }

    #[test]
    fn every_setting_works_as_a_flag_a_file_key_and_an_environment_variable() {
        let mut keys: Vec<String> = borealis_relay::config::known_keys();
        keys.sort();
        let mut sampled: Vec<String> = SAMPLES.iter().map(|(k, _, _)| k.to_string()).collect();
        sampled.sort();
        assert_eq!(keys, sampled, "every setting needs a sample here");

        let defaults = RelayConfig::default();
        let dir = tempfile::tempdir().unwrap();
        for (key, _, _) in SAMPLES {
            let set = with_partner(key);
            let env: Vec<(String, String)> =
                set.iter().map(|(k, v, _)| (format!("BOREALIS_{}", k.to_uppercase()), v.to_string())).collect();
            let from_env = RelayConfig::load(None, env, &[]).unwrap_or_else(|e| panic!("{key} from env: {e}"));
            let expected = value_of(&from_env, key);
            assert_ne!(expected, value_of(&defaults, key), "{key}: the sample is the default");

            let file = dir.path().join(format!("{key}.toml"));
            let text: String = set.iter().map(|(k, _, toml)| format!("{k} = {toml}\n")).collect();
            std::fs::write(&file, text).unwrap();
            let from_file = RelayConfig::load(Some(&file), Vec::new(), &[]).unwrap_or_else(|e| panic!("{key}: {e}"));
            assert_eq!(value_of(&from_file, key), expected, "{key} in the file");

            if NOT_FLAGS.contains(key) {
                let flag = flag(key);
                assert!(Flags::try_parse_from(["borealis-relay", &flag, "x"]).is_err(), "{flag} is a flag");
                continue;
            }
            let mut argv = vec!["borealis-relay".to_owned()];
            for (k, v, _) in &set {
                argv.push(flag(k));
                // A switch takes no value.
                if *k != "disable_admin_token" {
                    argv.push(v.to_string());
                }
            }
            let flags = Flags::try_parse_from(&argv).unwrap_or_else(|e| panic!("{argv:?}: {e}"));
            let from_flags = RelayConfig::load(None, Vec::new(), &flags.overrides()).unwrap();
            assert_eq!(value_of(&from_flags, key), expected, "{key} as a flag");
        }
        // And the help lists them.
        let help = Flags::command().render_long_help().to_string();
        for (key, _, _) in SAMPLES.iter().filter(|(k, _, _)| !NOT_FLAGS.contains(k)) {
            assert!(help.contains(&flag(key)), "--help lacks {key}");
        }
    }
}
