//! `/api/v1/login/device`: a person signing in to the CLI through the
//! identity provider's device flow. The relay holds the client's secret and
//! does the talking; the CLI shows the code, polls, and gets the person's
//! own token (a personal token, kept only as a hash here).

use std::sync::Arc;
use std::time::SystemTime;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

use super::AppState;
use super::extract::json_body;
use super::problem::{Problem, too_many_failures_problem};
use crate::access::oidc::{DevicePoll, SignIn, SignInError};
use crate::access::personal;
use crate::serve::RemoteAddr;
use borealis_engine::clock::rfc3339;

/// The longest device code passed on to the provider.
const MAX_DEVICE_CODE_BYTES: usize = 4096;

fn sign_in(state: &AppState) -> Result<&SignIn, Problem> {
    state
        .sign_in
        .as_deref()
        .ok_or_else(|| Problem::new(StatusCode::NOT_FOUND, "no-identity-provider", "no identity provider is set"))
}

fn failed(err: SignInError) -> Problem {
    match err {
        SignInError::Unreachable(_) => Problem::new(StatusCode::BAD_GATEWAY, "identity-provider", err.to_string()),
        _ => Problem::new(StatusCode::UNAUTHORIZED, "unauthorized", err.to_string()),
    }
}

pub async fn start(State(state): State<Arc<AppState>>) -> Result<Response, Problem> {
    let started = sign_in(&state)?.start_device().await.map_err(|err| match err {
        SignInError::Refused(_) => Problem::new(StatusCode::BAD_GATEWAY, "identity-provider", err.to_string()),
        other => failed(other),
    })?;
    Ok(Json(borealis_api::DeviceLogin {
        user_code: started.user_code,
        verification_uri: started.verification_uri,
        verification_uri_complete: started.verification_uri_complete,
        device_code: started.device_code,
        interval: started.interval,
        expires_in: started.expires_in,
    })
    .into_response())
}

pub async fn poll(
    State(state): State<Arc<AppState>>,
    remote: Option<axum::Extension<RemoteAddr>>,
    body: axum::body::Bytes,
) -> Result<Response, Problem> {
    let client = sign_in(&state)?;
    let request: borealis_api::DeviceLoginPoll = json_body(&body)?;
    if request.device_code.is_empty() || request.device_code.len() > MAX_DEVICE_CODE_BYTES {
        return Err(Problem::bad_request("invalid-device-code", "deviceCode must be 1 to 4096 bytes"));
    }
    let person = match client.poll_device(&request.device_code).await {
        Ok(DevicePoll::Pending { slow_down }) => {
            let pending =
                borealis_api::DeviceLoginResult { pending: true, slow_down, token: None, name: None, expires_at: None };
            return Ok(Json(pending).into_response());
        }
        Ok(DevicePoll::Done(person)) => person,
        Err(err) => {
            let peer = remote.map(|r| r.0.0.ip());
            let detail = err.to_string();
            tracing::warn!(error = detail.as_str(), "device sign-in refused");
            if let Some(wait) = state.auth_guard.failed(peer, "device_sign_in", None, &detail) {
                return Err(too_many_failures_problem(wait));
            }
            return Err(failed(err));
        }
    };
    let now = SystemTime::now();
    let (token, kept) = personal::issue(&*state.store, &person, "borealis login", personal::SIGN_IN_LIFETIME, now)
        .await
        .map_err(super::identities::personal_problem)?;
    tracing::info!(person = person.subject.as_str(), token = kept.id.as_str(), "signed in through the device flow");
    // A token made is a change like any other: in the trail, as its person.
    let asked = super::authorize::Asked {
        action: "personal-token.create",
        path: format!("/api/v1/personal-tokens/{}", kept.id),
        team: None,
        source: remote.map(|r| r.0.0.ip()),
        request_id: uuid::Uuid::new_v4().to_string(),
    };
    let actor = crate::access::principal::Actor::person(&person);
    super::authorize::record(&state, &asked, &actor, "allowed", StatusCode::OK).await;
    Ok(Json(borealis_api::DeviceLoginResult {
        pending: false,
        slow_down: false,
        token: Some(token.expose().to_owned()),
        name: Some(person.name),
        expires_at: Some(rfc3339(kept.expires_at)),
    })
    .into_response())
}
