//! The agent's settings, from flags or `BOREALIS_*` variables.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use borealis_core::Secret;
use borealis_egress::{AllowList, AllowRule};

#[derive(Debug, Clone)]
pub struct AgentConfig {
    /// The relay's agent listener, `http://` or `https://`.
    pub relay: url::Url,
    pub client_id: String,
    pub client_secret: Secret,
    /// The identifier to serve; `None`: the credential's own.
    pub agent_id: Option<String>,
    pub allow: Vec<AllowRule>,
    pub allow_any: bool,
    /// PEM CA bundle to trust for the relay, for a private CA.
    pub ca_file: Option<PathBuf>,
    /// Most requests in flight at once.
    pub max_concurrency: usize,
    /// Most `Forward` calls kept open in advance, so that a request skips
    /// the offer round trip. A session starts with a few and keeps one more
    /// each time a request comes as an offer. 0: every request is an offer.
    pub standby_calls: u32,
    /// Most lanes opened per session, for small exchanges batched on
    /// long-lived calls (the relay grants at most 4). 0: none.
    pub lanes: u32,
    /// Largest response body forwarded, in bytes.
    pub max_body_bytes: u64,
    /// Name shown to operators; default: the host name.
    pub instance: String,
    /// Longest wait between reconnect attempts.
    pub max_backoff: Duration,
    /// On shutdown, how long in-flight requests may still run.
    pub shutdown_grace: Duration,
    pub health_listen: Option<SocketAddr>,
}

#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ConfigError(pub String);

impl AgentConfig {
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.allow.is_empty() && !self.allow_any {
            return Err(ConfigError(
                "no destination is allowed, so this agent could forward nothing. Add --allow RULE (repeatable; \
                 forms: host, host:port, *.domain, 10.0.0.0/8) or set BOREALIS_ALLOW=rule1,rule2; \
                 --allow-any forwards anywhere"
                    .into(),
            ));
        }
        if !matches!(self.relay.scheme(), "http" | "https") || self.relay.host().is_none() {
            return Err(ConfigError(format!("--relay {}: expected http://HOST:PORT or https://HOST:PORT", self.relay)));
        }
        if self.client_id.is_empty() || self.client_secret.is_empty() {
            return Err(ConfigError(
                "--client-id and the client secret (--client-secret-file or BOREALIS_CLIENT_SECRET) are required \
                 (from `borealis agents create ID`)"
                    .into(),
            ));
        }
        if self.max_backoff.is_zero() {
            return Err(ConfigError("--max-backoff must be more than 0".into()));
        }
        if self.max_concurrency == 0 {
            return Err(ConfigError("--max-concurrency must be at least 1".into()));
        }
        // The relay refuses a hello with longer names.
        let most = borealis_protocol::MAX_NAME_BYTES;
        if self.instance.len() > most {
            return Err(ConfigError(format!("--instance must be at most {most} bytes long")));
        }
        if self.agent_id.as_ref().is_some_and(|id| id.len() > most) {
            return Err(ConfigError(format!("--agent-id must be at most {most} bytes long")));
        }
        if self.ca_file.is_some() && self.relay.scheme() != "https" {
            return Err(ConfigError("--ca-file is set but --relay is not an https:// URL".into()));
        }
        Ok(())
    }

    pub fn allow_list(&self) -> AllowList {
        if self.allow_any { AllowList::any() } else { AllowList::new(self.allow.clone()) }
    }
}
