//! The outgoing calls of deployments: Flagger hooks, webhook drivers and
//! metric queries, direct or through an agent, each signed like a webhook.
//!
//! Every call goes through [`Caller::call`], and every text that comes back
//! from one (the reply's body, or why there is none) is scrubbed of every
//! stored secret there, before any caller can store, log or show it: an
//! endpoint that echoes the request cannot put a header's secret in a
//! deployment's history.

use std::sync::Arc;
use std::time::Duration;

use borealis_core::deployment::Signing;
use http::{HeaderMap, HeaderValue, header};

use crate::forward::{self, Forwarder, Outbound};
use crate::signing::{self, Stamp};
use crate::vault::Vault;

/// A call that got no reply, and whether another try may get one.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{detail}")]
pub struct CallError {
    pub detail: String,
    pub retryable: bool,
}

/// What came back from a call, every stored secret masked.
#[derive(Debug, Clone)]
pub struct Answer {
    pub status: u16,
    /// The reply's body as text (invalid UTF-8 replaced), or why it could
    /// not be read.
    pub body: Result<String, String>,
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

    /// The relay's own signing key, which no template may read.
    pub fn signing_default(&self) -> Option<&str> {
        self.signing_default.as_deref()
    }

    /// Makes one call, direct or through `agent`, and reads up to `read`
    /// bytes of its reply, all within `outbound.timeout`. What comes back is
    /// scrubbed of every stored secret; if the secrets cannot be read to
    /// scrub it with, the text is withheld.
    pub async fn call(&self, agent: Option<&str>, outbound: Outbound, read: usize) -> Result<Answer, CallError> {
        let timeout = outbound.timeout;
        let exchange = async {
            let response = self
                .forwarder
                .send(agent, outbound)
                .await
                .map_err(|err| CallError { retryable: err.retryable(), detail: err.detail })?;
            let status = response.status().as_u16();
            let body = forward::read_body(response.into_body(), read)
                .await
                .map(|bytes| String::from_utf8_lossy(&bytes).into_owned())
                .map_err(|e| format!("the reply could not be read: {e}"));
            Ok(Answer { status, body })
        };
        let answer = tokio::time::timeout(timeout, exchange).await.unwrap_or_else(|_| {
            Err(CallError {
                detail: format!("no answer within {}", humantime::format_duration(timeout)),
                retryable: true,
            })
        });
        let scrub = match self.vault.current_scrubber().await {
            Ok(scrubber) => move |text: String| scrubber.scrub(&text).into_owned(),
            Err(err) => {
                let withheld = format!("(withheld: the secrets to mask it with cannot be read: {err})");
                return match answer {
                    Ok(Answer { status, .. }) => Ok(Answer { status, body: Err(withheld) }),
                    Err(CallError { retryable, .. }) => Err(CallError { detail: withheld, retryable }),
                };
            }
        };
        match answer {
            Ok(Answer { status, body }) => Ok(Answer { status, body: body.map(&scrub).map_err(&scrub) }),
            Err(CallError { detail, retryable }) => Err(CallError { detail: scrub(detail), retryable }),
        }
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
        // The reply is read (and dropped) so the connection is reused.
        self.call(agent, outbound, 64 * 1024).await.map(|answer| answer.status)
    }
}
