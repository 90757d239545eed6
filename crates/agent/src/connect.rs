//! The agent's one connection to the relay: plaintext or TLS, through an
//! HTTP CONNECT proxy when `HTTPS_PROXY`/`HTTP_PROXY` say so and `NO_PROXY`
//! does not exempt the relay. The token endpoint is reached over the same
//! HTTP/2 connection as the tunnel.

use std::time::{Duration, Instant};

use borealis_core::Secret;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::connect::proxy::Tunnel;
use hyper_util::client::proxy::matcher::Matcher;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint};
use tower::{Service, ServiceExt};

use crate::AgentError;
use crate::config::AgentConfig;

/// How long one connect attempt may take. Short: a SYN that a dead link
/// dropped is only retried when this runs out, and an attempt still hanging
/// when the link heals would delay serving again.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);

/// Builds the relay endpoint (not yet connected).
pub fn endpoint(config: &AgentConfig) -> Result<Endpoint, AgentError> {
    let mut endpoint = Endpoint::from_shared(config.relay.as_str().trim_end_matches('/').to_owned())
        .map_err(|e| AgentError::Config(format!("--relay {}: {e}", config.relay)))?
        .connect_timeout(CONNECT_TIMEOUT)
        .tcp_nodelay(true)
        .http2_keep_alive_interval(Duration::from_secs(20))
        .keep_alive_timeout(Duration::from_secs(20))
        .keep_alive_while_idle(true)
        .initial_stream_window_size(1 << 20)
        .initial_connection_window_size(8 << 20)
        .user_agent(format!("borealis-agent/{}", env!("CARGO_PKG_VERSION")))
        .map_err(|e| AgentError::Config(e.to_string()))?;
    if config.relay.scheme() == "https" {
        let mut tls = ClientTlsConfig::new();
        match &config.ca_file {
            Some(path) => {
                let pem = std::fs::read(path)
                    .map_err(|e| AgentError::Config(format!("--ca-file {}: {e}", path.display())))?;
                tls = tls.ca_certificate(Certificate::from_pem(pem));
            }
            None => tls = tls.with_native_roots(),
        }
        endpoint = endpoint.tls_config(tls).map_err(|e| AgentError::Config(format!("TLS: {e}")))?;
    }
    Ok(endpoint)
}

/// Connects, through a proxy if the environment names one for the relay.
pub async fn connect(endpoint: &Endpoint) -> Result<Channel, tonic::transport::Error> {
    let matcher = std::sync::Arc::new(Matcher::from_env());
    let connector = tower::service_fn(move |uri: http::Uri| {
        let matcher = matcher.clone();
        async move {
            let mut direct = HttpConnector::new();
            direct.set_nodelay(true);
            direct.enforce_http(false);
            match matcher.intercept(&uri) {
                Some(proxy) => {
                    tracing::debug!(proxy = %proxy.uri(), relay = %uri, "connecting through a proxy");
                    let mut tunnel = Tunnel::new(proxy.uri().clone(), direct);
                    if let Some(auth) = proxy.basic_auth() {
                        tunnel = tunnel.with_auth(auth.clone());
                    }
                    tunnel.ready().await.map_err(into_io)?.call(uri).await.map_err(into_io)
                }
                None => direct.call(uri).await.map_err(into_io),
            }
        }
    });
    endpoint.connect_with_connector(connector).await
}

fn into_io(err: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> std::io::Error {
    std::io::Error::other(err)
}

/// A bearer token and when to fetch the next.
#[derive(Clone)]
pub struct Token {
    pub value: Secret,
    pub refresh_at: Instant,
}

#[derive(serde::Deserialize)]
struct TokenReply {
    access_token: String,
    expires_in: u64,
}

#[derive(serde::Deserialize)]
struct OAuthError {
    error: String,
    #[serde(default)]
    error_description: String,
}

/// `POST /oauth/token` over the tunnel's own connection.
pub async fn fetch_token(channel: &Channel, client_id: &str, secret: &Secret) -> Result<Token, AgentError> {
    let form = url::form_urlencoded::Serializer::new(String::new())
        .append_pair("grant_type", "client_credentials")
        .append_pair("client_id", client_id)
        .append_pair("client_secret", secret.expose())
        .finish();
    let request = http::Request::post(borealis_protocol::TOKEN_PATH)
        .header(http::header::CONTENT_TYPE, "application/x-www-form-urlencoded")
        .body(tonic::body::Body::new(Full::new(Bytes::from(form))))
        .map_err(|e| AgentError::Internal(e.to_string()))?;
    let mut channel = channel.clone();
    let response = channel
        .ready()
        .await
        .map_err(|e| AgentError::Unreachable(format!("token request: {e}")))?
        .call(request)
        .await
        .map_err(|e| AgentError::Unreachable(format!("token request: {e}")))?;
    let status = response.status();
    let body = response
        .into_body()
        .collect()
        .await
        .map_err(|e| AgentError::Unreachable(format!("token reply: {e}")))?
        .to_bytes();
    if status == http::StatusCode::UNAUTHORIZED || status == http::StatusCode::BAD_REQUEST {
        let detail = serde_json::from_slice::<OAuthError>(&body)
            .map(|e| format!("{}: {}", e.error, e.error_description))
            .unwrap_or_else(|_| String::from_utf8_lossy(&body).into_owned());
        return Err(AgentError::Rejected(format!("the relay rejected client id {client_id:?} ({detail})")));
    }
    if !status.is_success() {
        return Err(AgentError::Unreachable(format!("token endpoint answered {status}")));
    }
    let reply: TokenReply = serde_json::from_slice(&body)
        .map_err(|e| AgentError::Unreachable(format!("token reply is not the expected JSON: {e}")))?;
    // Refresh at 80% of the lifetime, long before the relay would refuse it.
    let lifetime = Duration::from_secs(reply.expires_in);
    Ok(Token { value: Secret::new(reply.access_token), refresh_at: Instant::now() + lifetime.mul_f64(0.8) })
}
