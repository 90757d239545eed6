//! The outgoing calls of deployments: Flagger hooks, webhook drivers and
//! metric queries, direct or through an agent, each signed like a webhook.

use std::sync::Arc;
use std::time::Duration;

use borealis_core::deployment::Signing;
use http::{HeaderMap, HeaderValue, header};

use crate::forward::{self, ForwardError, Forwarder, Outbound, Reply};
use crate::signing::{self, Stamp};
use crate::vault::Vault;

/// A call that got no reply, and whether another try may get one.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{detail}")]
pub struct CallError {
    pub detail: String,
    pub retryable: bool,
}

/// What hooks, drivers and metric queries need to make calls.
pub struct Caller {
    forwarder: Arc<Forwarder>,
    vault: Arc<Vault>,
    signing_default: Option<String>,
    /// Largest body either way.
    pub max_body_bytes: u64,
    /// First delay between a hook's retries.
    pub retry_base_delay: Duration,
}

impl Caller {
    pub fn new(
        forwarder: Arc<Forwarder>,
        vault: Arc<Vault>,
        signing_default: Option<String>,
        max_body_bytes: u64,
        retry_base_delay: Duration,
    ) -> Self {
        Self { forwarder, vault, signing_default, max_body_bytes, retry_base_delay }
    }

    pub fn vault(&self) -> &Vault {
        &self.vault
    }

    pub async fn send(&self, agent: Option<&str>, outbound: Outbound) -> Result<Reply, ForwardError> {
        self.forwarder.send(agent, outbound).await
    }

    /// POSTs JSON, direct or through an agent; the reply's status, or why none.
    /// The call carries `webhook-id: <id>` and, signed by `signing` or else the
    /// relay's `webhook_signing_secret`, this attempt's timestamp and signature.
    pub async fn post_json(
        &self,
        agent: Option<&str>,
        url: &str,
        body: &serde_json::Value,
        timeout: Duration,
        id: &str,
        signing: Option<&Signing>,
    ) -> Result<u16, CallError> {
        let keys = signing::keys_from_vault(&self.vault, self.signing_default.as_deref(), signing)
            .await
            .map_err(|detail| CallError { detail, retryable: false })?;
        let body = body.to_string();
        let mut headers = HeaderMap::new();
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
        Stamp::new(id, body.as_bytes(), &keys).apply(&mut headers);
        let outbound = Outbound {
            method: http::Method::POST,
            url: url.to_owned(),
            headers,
            body: forward::full(body),
            timeout,
            limit: self.max_body_bytes,
        };
        let call = async {
            match self.send(agent, outbound).await {
                Ok(response) => {
                    let status = response.status().as_u16();
                    // Read (and discard) the reply so the connection is reused.
                    let _ = forward::read_body(response.into_body(), 64 * 1024).await;
                    Ok(status)
                }
                Err(err) => Err(CallError { retryable: err.retryable(), detail: err.detail }),
            }
        };
        tokio::time::timeout(timeout, call).await.unwrap_or_else(|_| {
            Err(CallError {
                detail: format!("no answer within {}", humantime::format_duration(timeout)),
                retryable: true,
            })
        })
    }
}
