//! Deployments: targets run as a DAG by `dependsOn`, each through its
//! constraints, strategy and Flagger-style hooks, with every action going
//! through a [`driver::RolloutDriver`].
//!
//! - [`orchestrator`]: one deployment's run, and its replay after a restart.
//! - [`driver`]: the `record` and `webhook` rollout drivers.
//! - [`hooks`]: Flagger's hook types: gates, checks and events.
//! - [`api`]: `/api/v1/deployments` and approvals.
//! - [`providers`]: metric providers, and the Prometheus query analysis steps make.

pub mod api;
pub mod driver;
pub mod hooks;
pub mod orchestrator;
pub mod providers;

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use borealis_core::deployment::Signing;
use http::{HeaderMap, HeaderValue, header};

use crate::proxy::{self, Outbound};
use crate::signing::{self, Stamp};
use crate::state::AppState;

/// Starts every deployment a previous run of the relay left unfinished.
pub async fn resume(state: &Arc<AppState>) {
    match state.store.unfinished_deployments().await {
        Ok(deployments) => {
            for deployment in deployments {
                tracing::info!(deployment = %deployment.id, "resuming deployment");
                tokio::spawn(orchestrator::run(state.clone(), deployment.id));
            }
        }
        Err(err) => tracing::error!(error = %err, "could not resume deployments"),
    }
}

/// POSTs JSON, direct or through an agent; the reply's status, or why none.
/// The call carries `webhook-id: <id>` and, signed by `signing` or else the
/// relay's `webhook_signing_secret`, this attempt's timestamp and signature.
pub async fn post_json(
    state: &Arc<AppState>,
    agent: Option<&str>,
    url: &str,
    body: &serde_json::Value,
    timeout: Duration,
    id: &str,
    signing: Option<&Signing>,
) -> Result<u16, String> {
    let keys = signing::keys_from_vault(state, signing).await?;
    let body = body.to_string();
    let mut headers = HeaderMap::new();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    Stamp::new(id, body.as_bytes(), &keys).apply(&mut headers);
    let outbound = Outbound {
        method: http::Method::POST,
        url: url.to_owned(),
        headers,
        body: Body::from(body),
        timeout,
        limit: state.config.max_body_bytes,
    };
    let call = async {
        match proxy::send(state, agent, outbound).await {
            Ok(response) => {
                let status = response.status().as_u16();
                // Read (and discard) the reply so the connection is reused.
                let _ = axum::body::to_bytes(response.into_body(), 64 * 1024).await;
                Ok(status)
            }
            Err(err) => Err(err.problem.detail),
        }
    };
    tokio::time::timeout(timeout, call)
        .await
        .unwrap_or_else(|_| Err(format!("no answer within {}", humantime::format_duration(timeout))))
}
