//! The HTTP edge: the router, problems (RFC 9457), extractors, and one
//! module per resource. Handlers are thin: they parse, call a domain handle,
//! and render; domain errors become problems in [`problem`] only.

pub mod authorize;
pub mod credentials;
pub mod deployments;
pub mod extract;
pub mod health;
pub mod identities;
pub mod login;
pub mod peer;
pub mod problem;
pub mod providers;
pub mod proxy;
pub mod runs;
pub mod secrets;
pub mod token;

use std::sync::Arc;

use axum::Router;
use axum::http::{StatusCode, header};
use axum::middleware;
use axum::response::{IntoResponse, Response};
use axum::routing::{any, delete, get, patch, post, put};

use crate::serve;
pub use crate::state::AppState;
use problem::Problem;

/// The relay's HTTP listener.
pub fn http_router(state: Arc<AppState>) -> Router {
    let admin = Router::new()
        .route("/api/v1/agents", post(credentials::create_agent).get(credentials::list_agents))
        .route("/api/v1/agents/{id}", delete(credentials::revoke_agent))
        .route("/api/v1/clients", post(credentials::create_client))
        .route("/api/v1/clients/{name}", delete(credentials::revoke_client))
        .route("/api/v1/proxy", any(proxy::proxy).layer(middleware::from_fn(serve::stream_bodies)))
        .route("/api/v1/webhook-runs", post(runs::create_run).get(runs::list_runs))
        .route("/api/v1/webhook-runs/dry-run", post(runs::dry_run))
        .route("/api/v1/webhook-runs/{id}", get(runs::show_run))
        .route("/api/v1/webhook-runs/{id}/cancel", post(runs::cancel_run))
        .route("/api/v1/deployments", post(deployments::create).get(deployments::list))
        .route("/api/v1/deployments/dry-run", post(deployments::dry_run))
        .route("/api/v1/deployments/{id}", get(deployments::show))
        .route("/api/v1/deployments/{id}/targets/{target}/approve", post(deployments::approve))
        .route("/api/v1/deployments/{id}/targets/{target}/reject", post(deployments::reject))
        .route("/api/v1/deployments/{id}/targets/{target}/rollback", post(deployments::rollback))
        .route("/api/v1/deployments/{id}/targets/{target}/continue", post(deployments::proceed))
        .route("/api/v1/deployments/{id}/abort", post(deployments::abort))
        .route("/api/v1/metric-providers", post(providers::create).get(providers::list))
        .route("/api/v1/metric-providers/{name}", delete(providers::delete))
        .route("/api/v1/secrets", get(secrets::list_secrets))
        .route("/api/v1/secrets/{name}", put(secrets::put_secret).delete(secrets::delete_secret))
        .route("/api/v1/teams", post(identities::create_team).get(identities::list_teams))
        .route("/api/v1/teams/{name}", patch(identities::update_team))
        .route("/api/v1/role-bindings", post(identities::create_role_binding).get(identities::list_role_bindings))
        .route("/api/v1/role-bindings/{id}", delete(identities::delete_role_binding))
        .route(
            "/api/v1/service-accounts",
            post(identities::create_service_account).get(identities::list_service_accounts),
        )
        .route("/api/v1/service-accounts/{id}", delete(identities::revoke_service_account))
        .route("/api/v1/audit", get(identities::list_audit))
        .route(
            "/api/v1/personal-tokens",
            get(identities::list_personal_tokens).delete(identities::revoke_personal_tokens),
        )
        .route("/api/v1/personal-tokens/{id}", delete(identities::revoke_personal_token))
        .route_layer(middleware::from_fn_with_state(state.clone(), authorize::authorize));
    Router::new()
        .merge(admin)
        .route(borealis_protocol::TOKEN_PATH, token_route())
        .route("/api/v1/login/device", post(login::start))
        .route("/api/v1/login/device/token", post(login::poll))
        .route("/callbacks/{callback_id}/callback", post(runs::callback))
        .route("/api/v1/openapi.json", get(openapi))
        .route(crate::peer::FORWARD_PATH, any(peer::forward).layer(middleware::from_fn(serve::stream_bodies)))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(health::readyz))
        .route("/metrics", get(health::metrics))
        .fallback(no_route)
        .with_state(state)
}

/// Why an agent's gRPC call reached this listener, as a gRPC status it reads.
pub const NOT_THE_AGENTS_LISTENER: &str = "this is the relay's HTTP API listener; agents connect to its agents' \
     listener (the relay's --agent-listen, port 9090 by default): give the agent that address as --relay";

/// A request for no route. A gRPC call here is an agent given this
/// listener's address instead of the agents': it is told so as a status it
/// does not retry, not as a page it cannot read.
async fn no_route(headers: http::HeaderMap) -> Response {
    let grpc = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/grpc"));
    if grpc {
        let unimplemented = (tonic::Code::Unimplemented as i32).to_string();
        return ([
            (header::CONTENT_TYPE.as_str(), "application/grpc"),
            ("grpc-status", unimplemented.as_str()),
            ("grpc-message", NOT_THE_AGENTS_LISTENER),
        ],)
            .into_response();
    }
    Problem::new(StatusCode::NOT_FOUND, "not-found", "no such route").into_response()
}

/// The API's OpenAPI 3.1 document; `docs/openapi.json` is the same text.
async fn openapi() -> Response {
    static DOCUMENT: std::sync::LazyLock<String> = std::sync::LazyLock::new(borealis_api::openapi_json);
    ([(header::CONTENT_TYPE, "application/json")], DOCUMENT.as_str()).into_response()
}

/// The agents' listener: the tunnel (whose calls stream for as long as a
/// session lives, authenticated on their head) and its token endpoint.
pub fn agent_router(state: Arc<AppState>, tunnel: Router) -> Router {
    tunnel
        .layer(middleware::from_fn(serve::unbounded_bodies))
        .route(borealis_protocol::TOKEN_PATH, token_route().with_state(state))
}

/// `POST /oauth/token`: its form is a few short fields.
fn token_route() -> axum::routing::MethodRouter<Arc<AppState>> {
    post(token::token).layer(axum::extract::DefaultBodyLimit::max(token::MAX_FORM_BYTES))
}
