//! The HTTP API under `/api/v1`, the token endpoint, and health and
//! metrics. Errors are `application/problem+json` (RFC 9457).

use std::sync::Arc;
use std::time::SystemTime;

use axum::extract::{Path, Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get, post};
use axum::{Json, Router};
use borealis_store::CredentialKind;
use serde::Deserialize;

use crate::auth::{self, AuthError, TOKEN_TTL};
use crate::deployments::api as deployments;
use crate::proxy::{self, ProxyQuery};
use crate::runs::api as runs;
use crate::serve::RemoteAddr;
use crate::state::AppState;

/// Header that marks an error the relay produced (not the destination).
pub const ERROR_HEADER: &str = "borealis-error";

/// An RFC 9457 problem. `slug` is stable and also sent as `Borealis-Error`.
#[derive(Debug)]
pub struct Problem {
    pub status: StatusCode,
    pub slug: &'static str,
    pub detail: String,
    /// One line per problem, when there are several (a file's validation errors).
    pub errors: Vec<String>,
}

impl Problem {
    pub fn new(status: StatusCode, slug: &'static str, detail: impl Into<String>) -> Self {
        Self { status, slug, detail: detail.into(), errors: Vec::new() }
    }

    pub fn with_errors(mut self, errors: Vec<String>) -> Self {
        self.errors = errors;
        self
    }

    pub fn bad_request(slug: &'static str, detail: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, slug, detail)
    }

    pub fn internal(err: impl std::fmt::Display) -> Self {
        tracing::error!(error = %err, "internal error");
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", "internal error; see the relay's log")
    }

    /// A store lookup's record, or a 404 with `slug` and `detail`.
    pub fn found<T>(
        lookup: Result<Option<T>, borealis_store::StoreError>,
        slug: &'static str,
        detail: impl FnOnce() -> String,
    ) -> Result<T, Self> {
        lookup.map_err(Self::internal)?.ok_or_else(|| Self::new(StatusCode::NOT_FOUND, slug, detail()))
    }
}

impl IntoResponse for Problem {
    fn into_response(self) -> Response {
        let body = borealis_api::Problem {
            kind: format!("urn:borealis:problem:{}", self.slug),
            title: self.status.canonical_reason().unwrap_or("error").to_owned(),
            status: self.status.as_u16(),
            detail: self.detail,
            errors: self.errors,
        };
        (
            self.status,
            [
                (header::CONTENT_TYPE, "application/problem+json"),
                (header::HeaderName::from_static(ERROR_HEADER), self.slug),
            ],
            serde_json::to_string(&body).expect("json"),
        )
            .into_response()
    }
}

impl From<AuthError> for Problem {
    fn from(err: AuthError) -> Self {
        match err {
            AuthError::Store(borealis_store::StoreError::Conflict(msg)) => {
                Problem::new(StatusCode::CONFLICT, "conflict", msg)
            }
            AuthError::Store(err) => Problem::internal(err),
            other => Problem::new(StatusCode::UNAUTHORIZED, "unauthorized", other.to_string()),
        }
    }
}

/// A store failure as the caller sees it: a key reused with another request
/// is the caller's mistake (422, as the IETF Idempotency-Key draft says).
pub(crate) fn store_problem(err: borealis_store::StoreError) -> Problem {
    match err {
        borealis_store::StoreError::IdempotencyKeyUsed { id, .. } => Problem::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "idempotency-key-reused",
            format!("this Idempotency-Key was already used for {id}, with a different request; use a new key"),
        ),
        other => Problem::internal(other),
    }
}

/// The `Idempotency-Key` header of a POST, with a hash of its body.
pub(crate) fn idempotency_key(
    headers: &http::HeaderMap,
    body: &[u8],
) -> Result<Option<borealis_store::IdempotencyKey>, Problem> {
    let Some(value) = headers.get("idempotency-key") else { return Ok(None) };
    let key = value
        .to_str()
        .ok()
        .map(|k| k.trim().trim_matches('"'))
        .filter(|k| !k.is_empty() && k.len() <= 255 && k.bytes().all(|b| b.is_ascii_graphic()))
        .ok_or_else(|| {
            Problem::bad_request("invalid-idempotency-key", "Idempotency-Key must be 1 to 255 visible ASCII characters")
        })?;
    let digest = ring::digest::digest(&ring::digest::SHA256, body);
    let request_hash = digest.as_ref().iter().map(|b| format!("{b:02x}")).collect();
    Ok(Some(borealis_store::IdempotencyKey { key: key.to_owned(), request_hash }))
}

/// `201 Created`; a repeat of an earlier request with its `Idempotency-Key`
/// gets the same status, marked `Idempotent-Replayed: true`.
pub(crate) fn created(body: impl IntoResponse, replayed: bool) -> Response {
    let mut response = (StatusCode::CREATED, body).into_response();
    if replayed {
        response.headers_mut().insert("idempotent-replayed", http::HeaderValue::from_static("true"));
    }
    response
}

/// `?wait=D` on a GET: hold the request until the thing changes, up to a minute.
#[derive(Debug, Deserialize)]
pub struct WaitQuery {
    wait: Option<String>,
}

impl WaitQuery {
    /// When this request must answer (now, without `wait`).
    pub fn deadline(&self) -> Result<tokio::time::Instant, Problem> {
        let wait = match &self.wait {
            Some(text) => borealis_core::duration::parse(text)
                .map_err(|e| Problem::bad_request("invalid-wait", e.to_string()))?
                .min(std::time::Duration::from_secs(60)),
            None => std::time::Duration::ZERO,
        };
        Ok(tokio::time::Instant::now() + wait)
    }
}

/// Waits until `id` is announced on `events`, or until `deadline`.
pub async fn changed(events: &mut tokio::sync::broadcast::Receiver<String>, id: &str, deadline: tokio::time::Instant) {
    use tokio::sync::broadcast::error::RecvError;
    let _ = tokio::time::timeout_at(deadline, async {
        loop {
            match events.recv().await {
                Ok(changed) if changed == id => return,
                Ok(_) => {}
                Err(RecvError::Lagged(_)) => return,
                Err(RecvError::Closed) => std::future::pending().await,
            }
        }
    })
    .await;
}

/// The relay's HTTP listener.
pub fn http_router(state: Arc<AppState>) -> Router {
    let admin = Router::new()
        .route("/api/v1/agents", post(create_agent).get(list_agents))
        .route("/api/v1/agents/{id}", axum::routing::delete(revoke_agent))
        .route("/api/v1/clients", post(create_client))
        .route("/api/v1/clients/{name}", axum::routing::delete(revoke_client))
        .route("/api/v1/proxy", any(proxy))
        .route("/api/v1/webhook-runs", post(runs::create_run).get(runs::list_runs))
        .route("/api/v1/webhook-runs/{id}", get(runs::show_run))
        .route("/api/v1/webhook-runs/{id}/cancel", post(runs::cancel_run))
        .route("/api/v1/deployments", post(deployments::create).get(deployments::list))
        .route("/api/v1/deployments/{id}", get(deployments::show))
        .route("/api/v1/deployments/{id}/targets/{target}/approve", post(deployments::approve))
        .route("/api/v1/deployments/{id}/targets/{target}/reject", post(deployments::reject))
        .route("/api/v1/deployments/{id}/targets/{target}/rollback", post(deployments::rollback))
        .route("/api/v1/deployments/{id}/targets/{target}/continue", post(deployments::proceed))
        .route(
            "/api/v1/metric-providers",
            post(crate::deployments::providers::create).get(crate::deployments::providers::list),
        )
        .route("/api/v1/metric-providers/{name}", axum::routing::delete(crate::deployments::providers::delete))
        .route("/api/v1/secrets", get(runs::list_secrets))
        .route("/api/v1/secrets/{name}", axum::routing::put(runs::put_secret).delete(runs::delete_secret))
        .route_layer(middleware::from_fn_with_state(state.clone(), require_admin));
    Router::new()
        .merge(admin)
        .route(borealis_protocol::TOKEN_PATH, post(token))
        .route("/callbacks/{callback_id}/callback", post(runs::callback))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .fallback(|| async { Problem::new(StatusCode::NOT_FOUND, "not-found", "no such route") })
        .with_state(state)
}

/// The agents' listener: the tunnel and its token endpoint.
pub fn agent_router(state: Arc<AppState>, tunnel: Router) -> Router {
    tunnel.route(borealis_protocol::TOKEN_PATH, post(token).with_state(state))
}

/// Admin routes take `Authorization: Bearer <admin token>`, or on the proxy
/// `Proxy-Authorization`, so that `Authorization` can go to the destination.
/// The header that carried the admin token is removed before the handler.
async fn require_admin(State(state): State<Arc<AppState>>, mut request: Request, next: Next) -> Response {
    let peer = request.extensions().get::<RemoteAddr>().map(|r| r.0.ip());
    if let Err(wait) = state.auth_guard.check(peer) {
        return too_many_failures(wait);
    }
    let mut presented = false;
    for name in [header::AUTHORIZATION, header::PROXY_AUTHORIZATION] {
        let Some(token) = auth::bearer(request.headers().get(&name)) else { continue };
        if state.auth.is_admin(token) {
            request.headers_mut().remove(&name);
            return next.run(request).await;
        }
        presented = true;
    }
    let detail = if presented { "wrong admin token" } else { "no admin token" };
    state.auth_guard.failed(
        peer,
        "admin_token",
        &format!("{detail} for {} {}", request.method(), request.uri().path()),
    );
    Problem::new(
        StatusCode::UNAUTHORIZED,
        "unauthorized",
        "this route needs the admin token: Authorization: Bearer <token>",
    )
    .into_response()
}

/// 429 for a peer that failed authentication too often.
pub(crate) fn too_many_failures(wait: std::time::Duration) -> Response {
    let seconds = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
    let mut response = Problem::new(
        StatusCode::TOO_MANY_REQUESTS,
        "too-many-failed-authentications",
        format!("too many failed authentications from this address; try again in {seconds} s"),
    )
    .into_response();
    response.headers_mut().insert(header::RETRY_AFTER, http::HeaderValue::from(seconds.max(1)));
    response
}

async fn readyz(State(state): State<Arc<AppState>>) -> Response {
    if state.hub.is_draining() {
        return (StatusCode::SERVICE_UNAVAILABLE, "draining\n").into_response();
    }
    match state.store.ping().await {
        Ok(()) => "ready\n".into_response(),
        Err(err) => (StatusCode::SERVICE_UNAVAILABLE, format!("store unavailable: {err}\n")).into_response(),
    }
}

async fn metrics(State(state): State<Arc<AppState>>) -> Response {
    ([(header::CONTENT_TYPE, "application/openmetrics-text; version=1.0.0; charset=utf-8")], state.metrics.encode())
        .into_response()
}

pub(crate) fn json_body<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, Problem> {
    serde_json::from_slice(body).map_err(|e| Problem::bad_request("invalid-body", format!("invalid JSON body: {e}")))
}

async fn create_agent(State(state): State<Arc<AppState>>, body: axum::body::Bytes) -> Result<Response, Problem> {
    let borealis_api::CreateAgent { id } = json_body(&body)?;
    let (client_id, client_secret) = create_credential(&state, CredentialKind::Agent, &id).await?;
    let body = borealis_api::AgentCredentials { agent_id: id, client_id, client_secret };
    Ok((StatusCode::CREATED, Json(body)).into_response())
}

async fn create_client(State(state): State<Arc<AppState>>, body: axum::body::Bytes) -> Result<Response, Problem> {
    let borealis_api::CreateClient { name } = json_body(&body)?;
    let (client_id, client_secret) = create_credential(&state, CredentialKind::Callback, &name).await?;
    let body = borealis_api::ClientCredentials { name, client_id, client_secret };
    Ok((StatusCode::CREATED, Json(body)).into_response())
}

/// Validates the name, creates the credential, and returns its client id
/// and secret, to be shown once.
async fn create_credential(state: &AppState, kind: CredentialKind, subject: &str) -> Result<(String, String), Problem> {
    let (what, slug) = match kind {
        CredentialKind::Agent => ("agent identifier", "invalid-agent-id"),
        CredentialKind::Callback => ("client name", "invalid-client-name"),
    };
    auth::validate_name(what, subject).map_err(|e| Problem::bad_request(slug, e))?;
    let (client_id, secret) = state.auth.create_credential(kind, subject).await?;
    tracing::info!(kind = kind.as_str(), subject, %client_id, "credential created");
    Ok((client_id, secret.expose().to_owned()))
}

/// UTC with milliseconds, as every API reply shows times.
pub(crate) fn rfc3339(time: SystemTime) -> String {
    humantime::format_rfc3339_millis(time).to_string()
}

async fn list_agents(State(state): State<Arc<AppState>>) -> Result<Response, Problem> {
    let credentials = state.store.active_credentials(CredentialKind::Agent).await.map_err(Problem::internal)?;
    let sessions = state.hub.sessions();
    let agents: Vec<borealis_api::Agent> = credentials
        .iter()
        .map(|credential| {
            let instances: Vec<borealis_api::AgentInstance> = sessions
                .get(&credential.subject)
                .into_iter()
                .flatten()
                .map(|s| borealis_api::AgentInstance {
                    session_id: s.id.clone(),
                    instance: s.info.instance.clone(),
                    version: s.info.version.clone(),
                    remote_addr: s.info.remote_addr.map(|a| a.to_string()),
                    connected_since: rfc3339(s.connected_at),
                    last_heartbeat: rfc3339(s.last_heartbeat()),
                    in_flight: s.in_flight() as u64,
                    capacity: s.info.capacity,
                    standby_calls: s.info.standby_calls,
                    standby_idle: s.standby_idle() as u64,
                    draining: s.is_draining(),
                })
                .collect();
            borealis_api::Agent {
                agent_id: credential.subject.clone(),
                client_id: credential.client_id.clone(),
                created_at: rfc3339(credential.created_at),
                connected: !instances.is_empty(),
                instances,
            }
        })
        .collect();
    Ok(Json(borealis_api::AgentList { agents }).into_response())
}

async fn revoke_client(State(state): State<Arc<AppState>>, Path(name): Path<String>) -> Result<Response, Problem> {
    let revoked = state.store.revoke(CredentialKind::Callback, &name).await.map_err(Problem::internal)?;
    if !revoked {
        return Err(Problem::new(
            StatusCode::NOT_FOUND,
            "unknown-client",
            format!("no callback client named {name:?} is registered"),
        ));
    }
    tracing::info!(client = ?name, "callback client revoked");
    Ok(Json(borealis_api::ClientRevoked { name, revoked: true }).into_response())
}

async fn revoke_agent(State(state): State<Arc<AppState>>, Path(id): Path<String>) -> Result<Response, Problem> {
    let revoked = state.store.revoke(CredentialKind::Agent, &id).await.map_err(Problem::internal)?;
    if !revoked {
        return Err(Problem::new(StatusCode::NOT_FOUND, "unknown-agent", format!("agent {id:?} is not registered")));
    }
    let closed = state.hub.disconnect(&id, tonic::Status::unauthenticated("the credential was revoked"));
    tracing::info!(agent = %id, sessions_closed = closed, "agent revoked");
    Ok(Json(borealis_api::AgentRevoked { agent_id: id, revoked: true, sessions_closed: closed as u64 }).into_response())
}

async fn proxy(State(state): State<Arc<AppState>>, request: Request) -> Response {
    let query = match axum::extract::Query::<ProxyQuery>::try_from_uri(request.uri()) {
        Ok(query) => query.0,
        Err(err) => {
            return Problem::bad_request(
                "invalid-query",
                format!("{}; expected ?url=URL[&agent=ID][&timeout=30s]", err.body_text()),
            )
            .into_response();
        }
    };
    proxy::handle(state, query, request).await
}

/// The OAuth 2.0 client-credentials grant (RFC 6749 §4.4).
///
/// Takes the form body, or the client in HTTP Basic auth. Also takes the body
/// exactly as the callback guide's curl sends it, with a leading `data=`.
async fn token(
    State(state): State<Arc<AppState>>,
    remote: Option<axum::Extension<RemoteAddr>>,
    headers: http::HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    let peer = remote.map(|r| r.0.0.ip());
    if let Err(wait) = state.auth_guard.check(peer) {
        return too_many_failures(wait);
    }
    let oauth_error = |status: StatusCode, error: &str, description: &str| {
        let body = borealis_api::TokenError { error: error.to_owned(), error_description: description.to_owned() };
        (status, Json(body)).into_response()
    };
    let mut grant_type = None;
    let mut client_id = None;
    let mut client_secret = None;
    for (key, value) in url::form_urlencoded::parse(&body) {
        // `data=audience=...&grant_type=...`: the first pair is `data` = `audience=...`.
        let (key, value) = match (key.as_ref(), value.split_once('=')) {
            ("data", Some((inner_key, inner_value))) => (inner_key.to_owned(), inner_value.to_owned()),
            _ => (key.into_owned(), value.into_owned()),
        };
        match key.as_str() {
            "grant_type" => grant_type = Some(value),
            "client_id" => client_id = Some(value),
            "client_secret" => client_secret = Some(value),
            _ => {}
        }
    }
    if let Some((id, secret)) = basic_credentials(&headers) {
        client_id.get_or_insert(id);
        client_secret.get_or_insert(secret);
    }
    match grant_type.as_deref() {
        Some("client_credentials") => {}
        Some(other) => {
            return oauth_error(
                StatusCode::BAD_REQUEST,
                "unsupported_grant_type",
                &format!("grant_type {other:?} is not supported; use client_credentials"),
            );
        }
        None => {
            return oauth_error(
                StatusCode::BAD_REQUEST,
                "invalid_request",
                "grant_type is missing; send grant_type=client_credentials",
            );
        }
    }
    let (Some(client_id), Some(client_secret)) = (client_id, client_secret) else {
        return oauth_error(StatusCode::BAD_REQUEST, "invalid_request", "client_id and client_secret are required");
    };
    match state.auth.issue_token(&client_id, &borealis_core::Secret::new(client_secret)).await {
        Ok((token, credential)) => {
            let scope = match credential.kind {
                CredentialKind::Agent => "agent:tunnel",
                CredentialKind::Callback => "webhook:callback",
            };
            let body = borealis_api::TokenResponse {
                access_token: token,
                token_type: "Bearer".to_owned(),
                expires_in: TOKEN_TTL.as_secs(),
                scope: scope.to_owned(),
            };
            Json(body).into_response()
        }
        Err(AuthError::InvalidClient) => {
            state.auth_guard.failed(peer, "client_secret", &format!("unknown client or wrong secret for {client_id}"));
            oauth_error(StatusCode::UNAUTHORIZED, "invalid_client", "unknown client or wrong secret")
        }
        Err(AuthError::Revoked) => {
            state.auth_guard.failed(peer, "client_secret", &format!("revoked credential {client_id}"));
            oauth_error(StatusCode::UNAUTHORIZED, "invalid_client", "the credential was revoked")
        }
        Err(err) => Problem::internal(err).into_response(),
    }
}

fn basic_credentials(headers: &http::HeaderMap) -> Option<(String, String)> {
    use base64::Engine;
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, encoded) = value.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = base64::engine::general_purpose::STANDARD.decode(encoded.trim()).ok()?;
    let (id, secret) = std::str::from_utf8(&decoded).ok()?.split_once(':')?;
    Some((id.to_owned(), secret.to_owned()))
}
