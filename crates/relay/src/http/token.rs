//! `POST /oauth/token`, on both listeners.

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use borealis_store::CredentialKind;

use super::AppState;
use super::problem::Problem;
use super::problem::too_many_failures;
use crate::auth::{AuthError, TOKEN_TTL};
use crate::serve::RemoteAddr;

/// The largest form the token endpoint reads: its fields are a few short
/// strings, and its credential is in it, so nothing more is read unchecked.
pub const MAX_FORM_BYTES: usize = 16 * 1024;

/// The OAuth 2.0 client-credentials grant (RFC 6749 §4.4).
///
/// Takes the form body, or the client in HTTP Basic auth. Also takes the body
/// exactly as the callback guide's curl sends it, with a leading `data=`.
pub async fn token(
    State(state): State<Arc<AppState>>,
    remote: Option<axum::Extension<RemoteAddr>>,
    headers: http::HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    let peer = remote.map(|r| r.0.0.ip());
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
    // Client ids are the relay's own (`agt_...`, `cbk_...`): anything else
    // cannot be one, and is refused before the store is asked.
    if !plausible_client_id(&client_id) {
        return refuse(&state, peer, &client_id, "a malformed client id", "unknown client or wrong secret");
    }
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
            refuse(&state, peer, &client_id, "an unknown client or a wrong secret", "unknown client or wrong secret")
        }
        Err(AuthError::Revoked) => {
            refuse(&state, peer, &client_id, "a revoked credential", "the credential was revoked")
        }
        Err(err) => Problem::from(err).into_response(),
    }
}

/// A failed client authentication: counted, logged, and answered 401, or
/// 429 once the address or the client id has failed too often.
fn refuse(state: &AppState, peer: Option<std::net::IpAddr>, client_id: &str, logged: &str, said: &str) -> Response {
    if let Some(wait) = state.auth_guard.failed(peer, "client_secret", Some(client_id), logged) {
        return too_many_failures(wait);
    }
    let body = borealis_api::TokenError { error: "invalid_client".to_owned(), error_description: said.to_owned() };
    (StatusCode::UNAUTHORIZED, Json(body)).into_response()
}

/// Whether `id` could be a client id the relay issued.
fn plausible_client_id(id: &str) -> bool {
    (1..=64).contains(&id.len()) && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
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
