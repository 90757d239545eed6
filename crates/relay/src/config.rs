//! The relay's configuration, layered: defaults, then a TOML file
//! (`--config`), then `BOREALIS_*` environment variables, then flags, then
//! [`RelayConfig::validate`].

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use borealis_core::Secret;
use borealis_core::duration::serde_human;
use ipnet::IpNet;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default)]
pub struct RelayConfig {
    /// Where the relay keeps its state: database, admin token, secrets.
    pub data_dir: PathBuf,
    /// HTTP API, token endpoint and callbacks.
    pub listen: SocketAddr,
    /// The agents' gRPC listener (and its token endpoint).
    pub agent_listen: SocketAddr,
    /// Base URL the outside world reaches the relay at, for callback URIs.
    pub public_url: Option<url::Url>,
    /// Database URL; default: SQLite in the data dir.
    pub database_url: Option<Secret>,
    /// Ranges direct mode may reach despite the address guard.
    pub direct_allow: Vec<IpNet>,
    /// How long a webhook waits for its callback.
    #[serde(with = "serde_human")]
    pub callback_timeout: Duration,
    /// PEM certificate chain; with `tls_key`, both listeners serve TLS.
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
    /// The admin token; default: `<data-dir>/admin-token`, created on first start.
    pub admin_token: Option<Secret>,
    /// Turns the bootstrap admin token off: no admin token is read, made or
    /// taken, and organization admins are the people in `oidc_admin_groups`.
    pub disable_admin_token: bool,
    /// Largest request or response body a forwarded request may carry.
    pub max_body_bytes: u64,
    /// Default time limit of one forwarded request.
    #[serde(with = "serde_human")]
    pub request_timeout: Duration,
    /// Heartbeat interval the relay asks agents for.
    #[serde(with = "serde_human")]
    pub heartbeat_interval: Duration,
    /// Most lanes an agent session may open (0 to 4): small exchanges
    /// batched on long-lived calls. 0: every request takes a call of its own.
    pub agent_lanes: u32,
    /// On shutdown, how long in-flight requests may still run.
    #[serde(with = "serde_human")]
    pub shutdown_grace: Duration,
    /// Key for stored secrets (base64 of 32 bytes); default: `<data-dir>/secret-key`.
    pub secret_key: Option<Secret>,
    /// Time limit of one webhook call.
    #[serde(with = "serde_human")]
    pub webhook_timeout: Duration,
    /// First delay between webhook retries; it doubles, with jitter.
    #[serde(with = "serde_human")]
    pub retry_base_delay: Duration,
    /// How often a closed Flagger gate is asked again.
    #[serde(with = "serde_human")]
    pub gate_interval: Duration,
    /// Most open connections on both listeners together; 0: half the
    /// process's descriptor limit.
    pub max_connections: usize,
    /// Most open connections from one client address; 0: an eighth of
    /// `max_connections`, so that a few addresses cannot take them all.
    /// Behind a balancer, trust it (`trusted_proxies`) so that its clients
    /// count one by one.
    pub max_connections_per_peer: usize,
    /// Most requests in flight from one client address, on all its
    /// connections together; 0: eight times `max_connections_per_peer`.
    pub max_requests_per_peer: usize,
    /// How long a request body may take: a whole body within this of its
    /// head; a streamed one (the proxy) no pause longer than this, and at
    /// least 1 KiB/s on average after the first such span.
    #[serde(with = "serde_human")]
    pub body_timeout: Duration,
    /// Balancers whose word on the client's address is taken: a PROXY
    /// protocol header (v1 or v2) on their connections, `X-Forwarded-For`
    /// on their requests. From anyone else both are ignored.
    pub trusted_proxies: Vec<IpNet>,
    /// How long a new connection may take to send a complete request head.
    #[serde(with = "serde_human")]
    pub header_timeout: Duration,
    /// How long a connection may stay open with no request in flight.
    #[serde(with = "serde_human")]
    pub idle_timeout: Duration,
    /// Failed authentications one client address, and one credential id,
    /// may make per minute before further failures are answered 429. The
    /// right credential is never refused for it.
    pub auth_failures_per_minute: u32,
    /// Largest rendered template field (URI, one header value, the body).
    pub max_rendered_field_bytes: usize,
    /// Largest rendered webhook request, all fields together.
    pub max_rendered_request_bytes: usize,
    /// How log lines are written: `text`, or `json` (one object per line).
    pub log_format: borealis_logging::LogFormat,
    /// The stored secret whose key signs every outgoing call (webhooks,
    /// Flagger hooks, driver calls) that has no `signing:` of its own,
    /// Standard Webhooks style. Its name, never its value.
    pub webhook_signing_secret: Option<String>,
    /// This replica's name as operators see it (`agents list`, logs);
    /// default: the host name and the HTTP port.
    pub replica_name: Option<String>,
    /// Where the other replicas reach this one directly (not through the
    /// balancer) to forward requests for the agents it holds; default:
    /// `http(s)://` and the HTTP listener's address, unless that is a
    /// wildcard address.
    pub peer_url: Option<url::Url>,
    /// How long a replica owns a webhook attempt or a deployment without
    /// renewing its lease: a replica that dies loses its work to the
    /// others after at most this long.
    #[serde(with = "serde_human")]
    pub lease_duration: Duration,
    /// How often a replica looks in the database for work that is due or
    /// whose owner died, and for changes it was not told about.
    #[serde(with = "serde_human")]
    pub poll_interval: Duration,
    /// How long the audit trail keeps an entry; 0: forever.
    #[serde(with = "serde_human")]
    pub audit_retention: Duration,
    /// People sign in through this OpenID Connect provider (its issuer URL).
    pub oidc_issuer: Option<url::Url>,
    /// The relay's client id at the provider.
    pub oidc_client_id: Option<String>,
    /// The client's secret (or `oidc_client_secret_file`); never a flag.
    pub oidc_client_secret: Option<Secret>,
    /// A file holding the client's secret.
    pub oidc_client_secret_file: Option<PathBuf>,
    /// The ID token claim that lists a person's groups.
    pub oidc_groups_claim: String,
    /// Scopes asked for at sign-in, space-separated (`openid` is always asked).
    pub oidc_scopes: String,
    /// People in any of these provider groups are organization admins:
    /// they manage teams and role bindings everywhere, as the admin token does.
    pub oidc_admin_groups: Vec<String>,
}

/// What people sign in with, derived from the `oidc_*` settings.
#[derive(Debug, Clone)]
pub struct OidcSettings {
    pub issuer: url::Url,
    pub client_id: String,
    pub client_secret: Secret,
    pub groups_claim: String,
    pub scopes: Vec<String>,
    /// The groups whose people are organization admins.
    pub admin_groups: Vec<String>,
}

/// Every key a config file may set: the fields of [`RelayConfig`], read off
/// its serialized defaults so that the list cannot drift from the type.
pub fn known_keys() -> Vec<String> {
    match serde_json::to_value(RelayConfig::default()) {
        Ok(serde_json::Value::Object(map)) => map.keys().cloned().collect(),
        _ => Vec::new(),
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("config file {path}: {reason}")]
    File { path: PathBuf, reason: String },
    #[error("configuration: {0}")]
    Invalid(String),
}

impl Default for RelayConfig {
    fn default() -> Self {
        Self {
            data_dir: PathBuf::from("./borealis-data"),
            listen: ([127, 0, 0, 1], 8080).into(),
            agent_listen: ([127, 0, 0, 1], 9090).into(),
            public_url: None,
            database_url: None,
            direct_allow: Vec::new(),
            callback_timeout: Duration::from_secs(24 * 3600),
            tls_cert: None,
            tls_key: None,
            admin_token: None,
            disable_admin_token: false,
            max_body_bytes: 1 << 30,
            request_timeout: Duration::from_secs(300),
            heartbeat_interval: Duration::from_secs(10),
            agent_lanes: borealis_protocol::lanes::MAX_LANES,
            shutdown_grace: Duration::from_secs(30),
            secret_key: None,
            webhook_timeout: Duration::from_secs(60),
            retry_base_delay: Duration::from_secs(1),
            gate_interval: Duration::from_secs(10),
            audit_retention: Duration::ZERO,
            oidc_issuer: None,
            oidc_client_id: None,
            oidc_client_secret: None,
            oidc_client_secret_file: None,
            oidc_groups_claim: "groups".into(),
            oidc_scopes: "openid profile email".into(),
            oidc_admin_groups: Vec::new(),
            max_connections: 0,
            max_connections_per_peer: 0,
            max_requests_per_peer: 0,
            body_timeout: Duration::from_secs(30),
            trusted_proxies: Vec::new(),
            header_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(120),
            auth_failures_per_minute: 30,
            max_rendered_field_bytes: 64 << 10,
            max_rendered_request_bytes: 256 << 10,
            replica_name: None,
            peer_url: None,
            lease_duration: Duration::from_secs(15),
            poll_interval: Duration::from_secs(1),
            log_format: borealis_logging::LogFormat::Text,
            webhook_signing_secret: None,
        }
    }
}

impl RelayConfig {
    /// Layers a file, the environment and `overrides` (flags, as key/value)
    /// over the defaults, then validates.
    pub fn load(
        file: Option<&Path>,
        env: impl IntoIterator<Item = (String, String)>,
        overrides: &[(&str, config::Value)],
    ) -> Result<Self, ConfigError> {
        let defaults = config::Config::try_from(&RelayConfig::default())
            .map_err(|e| ConfigError::Invalid(format!("defaults: {e}")))?;
        let mut builder = config::Config::builder().add_source(defaults);
        if let Some(path) = file {
            check_file_keys(path)?;
            builder = builder.add_source(config::File::from(path).format(config::FileFormat::Toml).required(true));
        }
        let env: config::Map<String, String> = env.into_iter().filter(|(k, _)| k.starts_with("BOREALIS_")).collect();
        builder = builder.add_source(
            config::Environment::with_prefix("BOREALIS")
                .prefix_separator("_")
                .try_parsing(true)
                .list_separator(",")
                .with_list_parse_key("direct_allow")
                .with_list_parse_key("trusted_proxies")
                .with_list_parse_key("oidc_admin_groups")
                .source(Some(env)),
        );
        for (key, value) in overrides {
            builder = builder.set_override(*key, value.clone()).map_err(|e| ConfigError::Invalid(e.to_string()))?;
        }
        let built = builder.build().map_err(|e| match file {
            Some(path) => ConfigError::File { path: path.to_owned(), reason: e.to_string() },
            None => ConfigError::Invalid(e.to_string()),
        })?;
        let config: RelayConfig = built.try_deserialize().map_err(|e| ConfigError::Invalid(e.to_string()))?;
        config.validate()?;
        Ok(config)
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |msg: &str| Err(ConfigError::Invalid(msg.to_owned()));
        match (&self.tls_cert, &self.tls_key) {
            (Some(_), None) => return invalid("tls_cert is set but tls_key is not; give both or neither"),
            (None, Some(_)) => return invalid("tls_key is set but tls_cert is not; give both or neither"),
            _ => {}
        }
        if let Some(url) = &self.public_url
            && !matches!(url.scheme(), "http" | "https")
        {
            return invalid("public_url must be an http:// or https:// URL");
        }
        if self.callback_timeout.is_zero() {
            return invalid("callback_timeout must be longer than 0");
        }
        if !self.audit_retention.is_zero() && self.audit_retention < Duration::from_secs(3600) {
            return invalid("audit_retention must be 0 (forever) or at least 1h");
        }
        if self.agent_lanes > borealis_protocol::lanes::MAX_LANES {
            return invalid(&format!(
                "agent_lanes is {}; at most {} lanes are served per agent session",
                self.agent_lanes,
                borealis_protocol::lanes::MAX_LANES
            ));
        }
        if self.heartbeat_interval < Duration::from_millis(100) {
            return invalid("heartbeat_interval must be at least 100ms");
        }
        if self.lease_duration < Duration::from_secs(1) {
            return invalid("lease_duration must be at least 1s");
        }
        if self.poll_interval.is_zero() || self.poll_interval > self.lease_duration {
            return invalid("poll_interval must be longer than 0 and at most lease_duration");
        }
        if let Some(url) = &self.peer_url
            && !matches!(url.scheme(), "http" | "https")
        {
            return invalid("peer_url must be an http:// or https:// URL");
        }
        if self.max_body_bytes == 0 {
            return invalid("max_body_bytes must be larger than 0");
        }
        if self.header_timeout.is_zero() || self.idle_timeout.is_zero() || self.body_timeout.is_zero() {
            return invalid("header_timeout, idle_timeout and body_timeout must be longer than 0");
        }
        let day = Duration::from_secs(86_400);
        if self.header_timeout > day || self.idle_timeout > day || self.body_timeout > day {
            return invalid("header_timeout, idle_timeout and body_timeout must be at most 24h");
        }
        if self.max_rendered_field_bytes == 0 || self.max_rendered_request_bytes == 0 {
            return invalid("max_rendered_field_bytes and max_rendered_request_bytes must be larger than 0");
        }
        if let Some(name) = &self.webhook_signing_secret
            && let Err(reason) = borealis_engine::vault::validate_name(name)
        {
            return Err(ConfigError::Invalid(format!(
                "webhook_signing_secret names a stored secret (borealis secrets set NAME): {reason}"
            )));
        }
        if self.admin_token.as_ref().is_some_and(|t| t.expose().len() < 16) {
            return invalid("the admin token must be at least 16 characters long");
        }
        let oidc = self.oidc()?;
        if self.disable_admin_token {
            if self.admin_token.is_some() {
                return invalid("admin_token is set but disable_admin_token turns it off; give one or the other");
            }
            // Without a person who is an organization admin, no one could
            // make a team or a role binding again.
            if oidc.is_none_or(|oidc| oidc.admin_groups.is_empty()) {
                return invalid(
                    "disable_admin_token leaves no organization admin: set oidc_issuer (people sign in) and \
                     oidc_admin_groups (the provider groups whose people are organization admins)",
                );
            }
        }
        Ok(())
    }

    /// The sign-in settings, when an issuer is set: the client id, and its
    /// secret from the setting or its file, are required with it.
    pub fn oidc(&self) -> Result<Option<OidcSettings>, ConfigError> {
        let invalid = |msg: String| Err(ConfigError::Invalid(msg));
        let Some(issuer) = &self.oidc_issuer else {
            if self.oidc_client_id.is_some()
                || self.oidc_client_secret_file.is_some()
                || !self.oidc_admin_groups.is_empty()
            {
                return invalid(
                    "oidc_client_id, oidc_client_secret_file and oidc_admin_groups need oidc_issuer".into(),
                );
            }
            return Ok(None);
        };
        if !matches!(issuer.scheme(), "http" | "https") {
            return invalid("oidc_issuer must be an http:// or https:// URL".into());
        }
        let Some(client_id) = self.oidc_client_id.clone().filter(|id| !id.is_empty()) else {
            return invalid("oidc_issuer is set: give oidc_client_id too".into());
        };
        let client_secret = match (&self.oidc_client_secret, &self.oidc_client_secret_file) {
            (Some(_), Some(_)) => {
                return invalid("give oidc_client_secret or oidc_client_secret_file, not both".into());
            }
            (Some(secret), None) => secret.clone(),
            (None, Some(path)) => match std::fs::read_to_string(path) {
                Ok(text) if !text.trim().is_empty() => Secret::new(text.trim().to_owned()),
                Ok(_) => return invalid(format!("oidc_client_secret_file {} is empty", path.display())),
                Err(err) => return invalid(format!("oidc_client_secret_file {}: {err}", path.display())),
            },
            (None, None) => {
                return invalid(
                    "oidc_issuer is set: give the client's secret in oidc_client_secret_file or BOREALIS_OIDC_CLIENT_SECRET"
                        .into(),
                );
            }
        };
        if self.oidc_groups_claim.trim().is_empty() {
            return invalid("oidc_groups_claim must name a claim".into());
        }
        let mut admin_groups: Vec<String> = Vec::new();
        for group in &self.oidc_admin_groups {
            let group = group.trim();
            if group.is_empty() || group.len() > 256 {
                return invalid(format!("oidc_admin_groups: {group:?} is not a group name (1 to 256 characters)"));
            }
            if !admin_groups.iter().any(|g| g == group) {
                admin_groups.push(group.to_owned());
            }
        }
        let mut scopes: Vec<String> = vec!["openid".into()];
        for scope in self.oidc_scopes.split_whitespace() {
            if !scopes.iter().any(|s| s == scope) {
                scopes.push(scope.to_owned());
            }
        }
        Ok(Some(OidcSettings {
            issuer: issuer.clone(),
            client_id,
            client_secret,
            groups_claim: self.oidc_groups_claim.trim().to_owned(),
            scopes,
            admin_groups,
        }))
    }

    /// How large a rendered webhook may be.
    pub fn render_limits(&self) -> borealis_core::template::RenderLimits {
        borealis_core::template::RenderLimits {
            field_bytes: self.max_rendered_field_bytes,
            request_bytes: self.max_rendered_request_bytes,
            ..Default::default()
        }
    }

    /// What webhook runs take from the configuration; callbacks reach
    /// the relay at `public_base`.
    pub fn run_settings(&self, public_base: String) -> borealis_engine::runs::RunSettings {
        borealis_engine::runs::RunSettings {
            public_base,
            callback_timeout: self.callback_timeout,
            webhook_timeout: self.webhook_timeout,
            retry_base_delay: self.retry_base_delay,
            max_body_bytes: self.max_body_bytes,
            render_limits: self.render_limits(),
            signing_default: self.webhook_signing_secret.clone(),
            poll_interval: self.poll_interval,
        }
    }

    /// What deployments take from the configuration. A driver's call is
    /// held to the webhook timeout, at most 5 minutes.
    pub fn deployment_settings(&self) -> borealis_engine::deployments::DeploymentSettings {
        borealis_engine::deployments::DeploymentSettings {
            callback_timeout: self.callback_timeout,
            gate_interval: self.gate_interval,
            driver_timeout: self.webhook_timeout.min(Duration::from_secs(300)),
            signing_default: self.webhook_signing_secret.clone(),
        }
    }

    /// The connection limits in force, given the process's descriptor limit.
    pub fn connection_limits(&self, descriptors: u64) -> crate::serve::EdgeLimits {
        let max_total = match self.max_connections {
            0 => crate::serve::default_max_connections(descriptors),
            n => n,
        };
        let max_per_peer = match self.max_connections_per_peer {
            0 => (max_total / 8).max(16),
            n => n,
        };
        crate::serve::EdgeLimits {
            connections: borealis_serve::ConnectionLimits {
                max_total,
                max_per_peer,
                max_requests_per_peer: match self.max_requests_per_peer {
                    0 => max_per_peer.saturating_mul(8),
                    n => n,
                },
                header_timeout: self.header_timeout,
                idle_timeout: self.idle_timeout,
            },
            body_timeout: self.body_timeout,
        }
    }

    pub fn tls_enabled(&self) -> bool {
        self.tls_cert.is_some()
    }

    fn scheme(&self) -> &'static str {
        if self.tls_enabled() { "https" } else { "http" }
    }

    /// Where callbacks reach the relay: `public_url`, else the HTTP
    /// listener's own address (`http`, as bound).
    pub fn public_base(&self, http: Option<std::net::SocketAddr>) -> String {
        match &self.public_url {
            Some(url) => url.to_string(),
            None => format!("{}://{}", self.scheme(), http.map_or_else(|| "?".to_owned(), |a| a.to_string())),
        }
    }

    /// Where other replicas reach this one: `peer_url`, else the HTTP
    /// listener's address, unless that is a wildcard (no one can dial it).
    pub fn own_peer_url(&self, http: Option<std::net::SocketAddr>) -> Option<String> {
        match (&self.peer_url, http) {
            (Some(url), _) => Some(url.as_str().trim_end_matches('/').to_owned()),
            (None, Some(addr)) if !addr.ip().is_unspecified() => Some(format!("{}://{addr}", self.scheme())),
            (None, _) => None,
        }
    }

    /// This replica's name for people: `replica_name`, else the host name
    /// and the HTTP port.
    pub fn own_replica_name(&self, http: Option<std::net::SocketAddr>) -> String {
        if let Some(name) = &self.replica_name {
            return name.clone();
        }
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|h| h.trim().to_owned())
            .ok()
            .filter(|h| !h.is_empty())
            .unwrap_or_else(|| "relay".into());
        match http {
            Some(addr) => format!("{host}:{}", addr.port()),
            None => host,
        }
    }
}

fn check_file_keys(path: &Path) -> Result<(), ConfigError> {
    let fail = |reason: String| ConfigError::File { path: path.to_owned(), reason };
    let text = std::fs::read_to_string(path).map_err(|e| fail(e.to_string()))?;
    let table: config::Map<String, config::Value> = config::Config::builder()
        .add_source(config::File::from_str(&text, config::FileFormat::Toml))
        .build()
        .and_then(|c| c.try_deserialize())
        .map_err(|e| fail(e.to_string()))?;
    let known = known_keys();
    for key in table.keys() {
        if !known.contains(key) {
            return Err(fail(format!("unknown setting {key:?}; known settings: {}", known.join(", "))));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_are_derived_from_the_listener_unless_set() {
        let bound: std::net::SocketAddr = "10.0.0.7:8080".parse().unwrap();
        let wildcard: std::net::SocketAddr = "0.0.0.0:8080".parse().unwrap();
        let config = RelayConfig::default();
        assert_eq!(config.public_base(Some(bound)), "http://10.0.0.7:8080");
        assert_eq!(config.own_peer_url(Some(bound)).as_deref(), Some("http://10.0.0.7:8080"));
        assert_eq!(config.own_peer_url(Some(wildcard)), None, "no one can dial a wildcard");
        assert!(config.own_replica_name(Some(bound)).ends_with(":8080"));
        let set = RelayConfig {
            public_url: Some("https://relay.example/".parse().unwrap()),
            peer_url: Some("http://10.0.0.7:8080/".parse().unwrap()),
            replica_name: Some("east-1".into()),
            tls_cert: Some("cert.pem".into()),
            ..RelayConfig::default()
        };
        assert_eq!(set.public_base(Some(bound)), "https://relay.example/");
        assert_eq!(set.own_peer_url(Some(wildcard)).as_deref(), Some("http://10.0.0.7:8080"));
        assert_eq!(set.own_replica_name(Some(bound)), "east-1");
        let tls = RelayConfig { tls_cert: Some("cert.pem".into()), ..RelayConfig::default() };
        assert_eq!(tls.own_peer_url(Some(bound)).as_deref(), Some("https://10.0.0.7:8080"));
    }

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn defaults_then_file_then_env_then_flags() {
        let dir = std::env::temp_dir().join(format!("borealis-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("relay.toml");
        std::fs::write(
            &file,
            "listen = \"127.0.0.1:1000\"\nagent_listen = \"127.0.0.1:2000\"\ncallback_timeout = \"2h\"\n",
        )
        .unwrap();
        let config = RelayConfig::load(
            Some(&file),
            env(&[
                ("BOREALIS_AGENT_LISTEN", "127.0.0.1:3000"),
                ("BOREALIS_DIRECT_ALLOW", "127.0.0.0/8,10.0.0.0/8"),
                ("BOREALIS_TRUSTED_PROXIES", "10.1.0.0/16,192.0.2.1/32"),
                ("HOME", "/x"),
            ]),
            &[("callback_timeout", "5m".into())],
        )
        .unwrap();
        assert_eq!(config.listen.port(), 1000);
        assert_eq!(config.agent_listen.port(), 3000);
        assert_eq!(config.direct_allow.len(), 2);
        assert_eq!(config.trusted_proxies.len(), 2);
        assert_eq!(config.callback_timeout, Duration::from_secs(300));
        assert_eq!(config.data_dir, PathBuf::from("./borealis-data"));
    }

    #[test]
    fn derived_connection_limits() {
        let config = RelayConfig::default();
        let limits = config.connection_limits(1024).connections;
        assert_eq!((limits.max_total, limits.max_per_peer, limits.max_requests_per_peer), (512, 64, 512));
        let limits = config.connection_limits(64).connections;
        assert_eq!((limits.max_total, limits.max_per_peer), (64, 16), "floors");
        let set = RelayConfig { max_connections: 100, max_connections_per_peer: 7, max_requests_per_peer: 9, ..config };
        let limits = set.connection_limits(1024);
        let caps = limits.connections;
        assert_eq!((caps.max_total, caps.max_per_peer, caps.max_requests_per_peer), (100, 7, 9));
        assert_eq!(limits.body_timeout, Duration::from_secs(30));
    }

    #[test]
    fn every_setting_is_a_file_key() {
        let keys = known_keys();
        for key in [
            "secret_key",
            "webhook_timeout",
            "retry_base_delay",
            "gate_interval",
            "admin_token",
            "idle_timeout",
            "webhook_signing_secret",
        ] {
            assert!(keys.iter().any(|k| k == key), "{key} missing from {keys:?}");
        }
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("relay.toml");
        std::fs::write(&file, "webhook_timeout = \"5s\"\ngate_interval = \"2s\"\nmax_connections = 10\n").unwrap();
        let config = RelayConfig::load(Some(&file), env(&[]), &[]).unwrap();
        assert_eq!(config.webhook_timeout, Duration::from_secs(5));
        assert_eq!(config.gate_interval, Duration::from_secs(2));
        assert_eq!(config.max_connections, 10);
        assert_eq!(config.idle_timeout, RelayConfig::default().idle_timeout);
    }

    #[test]
    fn the_signing_secret_is_a_file_key_an_env_var_and_a_flag() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("relay.toml");
        std::fs::write(&file, "webhook_signing_secret = \"from_file\"\n").unwrap();
        let load = |env: &[(&str, &str)], flags: &[(&str, config::Value)]| {
            RelayConfig::load(Some(&file), self::env(env), flags).map(|c| c.webhook_signing_secret)
        };
        assert_eq!(load(&[], &[]).unwrap().as_deref(), Some("from_file"));
        let env = [("BOREALIS_WEBHOOK_SIGNING_SECRET", "from_env")];
        assert_eq!(load(&env, &[]).unwrap().as_deref(), Some("from_env"));
        assert_eq!(
            load(&env, &[("webhook_signing_secret", "from_flag".into())]).unwrap().as_deref(),
            Some("from_flag")
        );
        assert_eq!(RelayConfig::default().webhook_signing_secret, None);
        let err = load(&[("BOREALIS_WEBHOOK_SIGNING_SECRET", "whsec_abc+/=")], &[]).unwrap_err().to_string();
        assert!(err.contains("webhook_signing_secret names a stored secret"), "{err}");
    }

    /// The admin token can be turned off only where people sign in and
    /// some of them are organization admins: else no one could manage teams.
    #[test]
    fn the_admin_token_goes_off_only_with_organization_admins_among_people() {
        let dir = tempfile::tempdir().unwrap();
        let secret = dir.path().join("client-secret");
        std::fs::write(&secret, "s3cret\n").unwrap();
        let people = [
            ("oidc_issuer", config::Value::from("https://login.example/")),
            ("oidc_client_id", "borealis".into()),
            ("oidc_client_secret_file", secret.display().to_string().into()),
        ];
        let load = |extra: &[(&str, config::Value)]| {
            let overrides: Vec<(&str, config::Value)> = people.iter().cloned().chain(extra.iter().cloned()).collect();
            RelayConfig::load(None, env(&[]), &overrides)
        };
        let alone = RelayConfig::load(None, env(&[]), &[("disable_admin_token", true.into())]).unwrap_err();
        assert!(alone.to_string().contains("leaves no organization admin"), "{alone}");
        let without_admins = load(&[("disable_admin_token", true.into())]).unwrap_err();
        assert!(without_admins.to_string().contains("oidc_admin_groups"), "{without_admins}");
        let admins = vec!["platform".to_owned(), " platform ".to_owned(), "sre".to_owned()];
        let off = load(&[("disable_admin_token", true.into()), ("oidc_admin_groups", admins.into())]).unwrap();
        assert!(off.disable_admin_token);
        assert_eq!(off.oidc().unwrap().unwrap().admin_groups, ["platform", "sre"], "trimmed, once each");
        let both = load(&[
            ("disable_admin_token", true.into()),
            ("oidc_admin_groups", vec!["platform".to_owned()].into()),
            ("admin_token", "a-sample-admin-token-0123".into()),
        ])
        .unwrap_err();
        assert!(both.to_string().contains("give one or the other"), "{both}");
        let from_env = RelayConfig::load(None, env(&[("BOREALIS_OIDC_ADMIN_GROUPS", "platform,sre")]), &people);
        assert_eq!(from_env.unwrap().oidc_admin_groups, ["platform", "sre"]);
        let no_issuer = RelayConfig::load(None, env(&[("BOREALIS_OIDC_ADMIN_GROUPS", "platform")]), &[]).unwrap_err();
        assert!(no_issuer.to_string().contains("need oidc_issuer"), "{no_issuer}");
    }

    #[test]
    fn unknown_file_keys_and_bad_values_are_named() {
        let dir = std::env::temp_dir().join(format!("borealis-config-bad-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("relay.toml");
        std::fs::write(&file, "lisen = \"127.0.0.1:1000\"\n").unwrap();
        let err = RelayConfig::load(Some(&file), env(&[]), &[]).unwrap_err().to_string();
        assert!(err.contains("unknown setting \"lisen\""), "{err}");
        let err = RelayConfig::load(None, env(&[("BOREALIS_CALLBACK_TIMEOUT", "soon")]), &[]).unwrap_err().to_string();
        assert!(err.contains("invalid duration \"soon\""), "{err}");
        let err = RelayConfig::load(None, env(&[]), &[("tls_cert", "/x.pem".into())]).unwrap_err().to_string();
        assert!(err.contains("tls_key is not"), "{err}");
    }
}
