//! [`Egress`]: one HTTP client that sends requests under a [`Policy`].

use std::error::Error as _;
use std::sync::Arc;
use std::time::Duration;

pub use borealis_protocol::Fault;
use borealis_protocol::v1::ErrorCode;

use crate::decision::{NameDecision, Refusal};
use crate::policy::Policy;
use crate::resolve::PolicyResolver;

#[derive(Debug, thiserror::Error)]
pub enum EgressError {
    #[error("{0}")]
    NotAllowed(Refusal),
    #[error("invalid URL {url:?}: {reason}")]
    InvalidUrl { url: String, reason: String },
    #[error("could not connect to {destination}: {reason}")]
    Connect { destination: String, reason: String },
    #[error("{destination} did not answer in time")]
    Timeout { destination: String },
    #[error("{destination} broke off the exchange: {reason}")]
    Upstream { destination: String, reason: String },
    #[error("could not build the request: {0}")]
    Internal(String),
}

impl EgressError {
    pub fn code(&self) -> ErrorCode {
        match self {
            EgressError::NotAllowed(_) => ErrorCode::DestinationNotAllowed,
            EgressError::InvalidUrl { .. } => ErrorCode::InvalidRequest,
            EgressError::Connect { .. } => ErrorCode::ConnectFailed,
            EgressError::Timeout { .. } => ErrorCode::Timeout,
            EgressError::Upstream { .. } => ErrorCode::UpstreamFailed,
            EgressError::Internal(_) => ErrorCode::Internal,
        }
    }

    /// The same classification as the code it travels as, so a failure is
    /// judged alike whether the relay or an agent met it.
    pub fn fault(&self) -> Fault {
        self.code().fault()
    }

    pub fn is_retryable(&self) -> bool {
        self.code().is_retryable()
    }
}

#[derive(Debug, Clone)]
pub struct EgressOptions {
    pub connect_timeout: Duration,
    /// Idle pooled connections kept per host.
    pub pool_idle_per_host: usize,
}

impl Default for EgressOptions {
    fn default() -> Self {
        Self { connect_timeout: Duration::from_secs(10), pool_idle_per_host: 64 }
    }
}

/// Installs ring as the process's rustls provider. Idempotent.
pub fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// Sends HTTP requests under a policy. Cheap to clone.
#[derive(Clone)]
pub struct Egress {
    client: reqwest::Client,
    policy: Arc<Policy>,
}

impl Egress {
    pub fn new(policy: Policy, options: EgressOptions) -> Result<Self, EgressError> {
        install_crypto_provider();
        let policy = Arc::new(policy);
        let client = reqwest::Client::builder()
            .no_proxy()
            .redirect(reqwest::redirect::Policy::none())
            .connect_timeout(options.connect_timeout)
            .pool_max_idle_per_host(options.pool_idle_per_host)
            .tcp_nodelay(true)
            .dns_resolver(Arc::new(PolicyResolver { policy: policy.clone() }))
            .build()
            .map_err(|e| EgressError::Internal(e.to_string()))?;
        Ok(Self { client, policy })
    }

    pub fn policy(&self) -> &Policy {
        &self.policy
    }

    /// Parses a destination URL and checks it by name. Nothing is sent.
    pub fn check_url(&self, text: &str) -> Result<url::Url, EgressError> {
        let url = parse_url(text)?;
        let host = url.host().expect("parse_url checked the host");
        let port = url.port_or_known_default().expect("parse_url checked the port");
        match self.policy.check_name(&host, port).map_err(EgressError::NotAllowed)? {
            NameDecision::Allowed | NameDecision::CheckAddresses => Ok(url),
        }
    }

    /// Sends one request. The caller owns the timeout (drop the future to cancel).
    pub async fn send(
        &self,
        method: http::Method,
        url: url::Url,
        headers: http::HeaderMap,
        body: Option<reqwest::Body>,
    ) -> Result<reqwest::Response, EgressError> {
        let destination = destination(&url);
        let mut request = self.client.request(method, url).headers(headers);
        if let Some(body) = body {
            request = request.body(body);
        }
        request.send().await.map_err(|err| classify(&destination, err))
    }
}

/// Parses a destination URL: http or https, with a host and a port, and no
/// credentials in it. No policy is applied.
pub fn parse_url(text: &str) -> Result<url::Url, EgressError> {
    let invalid = |reason: &str| EgressError::InvalidUrl { url: text.to_owned(), reason: reason.to_owned() };
    let url = url::Url::parse(text).map_err(|e| invalid(&e.to_string()))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(invalid("only http and https are supported"));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(invalid("credentials in the URL are not supported; send an Authorization header"));
    }
    if url.host().is_none() {
        return Err(invalid("it has no host"));
    }
    if url.port_or_known_default().is_none() {
        return Err(invalid("it has no port"));
    }
    Ok(url)
}

/// `host:port` of a URL, for messages.
pub fn destination(url: &url::Url) -> String {
    format!("{}:{}", url.host_str().unwrap_or(""), url.port_or_known_default().unwrap_or(0))
}

/// Turns a reqwest failure into an [`EgressError`], finding a policy
/// refusal that the resolver raised deep inside the connect error.
pub fn classify(destination: &str, err: reqwest::Error) -> EgressError {
    let mut source = err.source();
    while let Some(cause) = source {
        if let Some(refusal) = cause.downcast_ref::<Refusal>() {
            return EgressError::NotAllowed(refusal.clone());
        }
        source = cause.source();
    }
    let destination = destination.to_owned();
    if err.is_timeout() {
        EgressError::Timeout { destination }
    } else if err.is_connect() {
        EgressError::Connect { destination, reason: root_cause(&err) }
    } else if err.is_builder() {
        EgressError::Internal(root_cause(&err))
    } else {
        EgressError::Upstream { destination, reason: root_cause(&err) }
    }
}

/// The innermost message of an error chain: the one that says what happened.
pub fn root_cause(err: &(dyn std::error::Error + 'static)) -> String {
    let mut last = err;
    while let Some(next) = last.source() {
        last = next;
    }
    last.to_string()
}
