//! RFC 9457 problems, and domain errors as problems: the one place that
//! picks HTTP statuses.

use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use borealis_protocol::v1::ErrorCode;

use crate::auth::AuthError;
use crate::forward::{ForwardError, ForwardFailure};

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
    /// Seconds to wait before another try (`Retry-After`), when known.
    pub retry_after: Option<u64>,
}

impl Problem {
    pub fn new(status: StatusCode, slug: &'static str, detail: impl Into<String>) -> Self {
        Self { status, slug, detail: detail.into(), errors: Vec::new(), retry_after: None }
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
        lookup.map_err(store_problem)?.ok_or_else(|| Self::new(StatusCode::NOT_FOUND, slug, detail()))
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
        let mut response = (
            self.status,
            [
                (header::CONTENT_TYPE, "application/problem+json"),
                (header::HeaderName::from_static(ERROR_HEADER), self.slug),
            ],
            serde_json::to_string(&body).expect("json"),
        )
            .into_response();
        if let Some(seconds) = self.retry_after {
            response.headers_mut().insert(header::RETRY_AFTER, http::HeaderValue::from(seconds));
        }
        response
    }
}

impl From<AuthError> for Problem {
    fn from(err: AuthError) -> Self {
        match err {
            AuthError::Store(borealis_store::StoreError::Conflict(conflict)) => {
                Problem::new(StatusCode::CONFLICT, "conflict", conflict.to_string())
            }
            AuthError::Store(err) => store_problem(err),
            other => Problem::new(StatusCode::UNAUTHORIZED, "unauthorized", other.to_string()),
        }
    }
}

/// Seconds a client is told to wait (`Retry-After`) when the store is
/// unavailable: a retry soon after may pass (the connection is back, the
/// disk has room again, the lock is free).
pub const STORE_RETRY_AFTER: u64 = 1;

/// A store failure as the caller sees it: a key reused with another request
/// is the caller's mistake (422, as the IETF Idempotency-Key draft says); a
/// store another try may pass (unreachable, busy, full, read-only) is 503
/// with `Retry-After`, on every route; the rest is the relay's fault (500).
pub(crate) fn store_problem(err: borealis_store::StoreError) -> Problem {
    match err {
        borealis_store::StoreError::Conflict(borealis_store::Conflict::IdempotencyKeyUsed { id, .. }) => Problem::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "idempotency-key-reused",
            format!("this Idempotency-Key was already used for {id}, with a different request; use a new key"),
        ),
        // The database cannot be reached or written now: another try may pass.
        err @ borealis_store::StoreError::Unavailable(_) => {
            tracing::warn!(error = %err, "store unavailable");
            let mut problem = Problem::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "store-unavailable",
                "the relay's database is unavailable (unreachable, busy, full or read-only); try again",
            );
            problem.retry_after = Some(STORE_RETRY_AFTER);
            problem
        }
        other => Problem::internal(other),
    }
}

impl From<borealis_store::StoreError> for Problem {
    fn from(err: borealis_store::StoreError) -> Self {
        store_problem(err)
    }
}

impl From<borealis_engine::vault::VaultError> for Problem {
    fn from(err: borealis_engine::vault::VaultError) -> Self {
        match err {
            borealis_engine::vault::VaultError::Store(err) => store_problem(err),
            other => Problem::internal(other),
        }
    }
}

impl From<ForwardError> for Problem {
    fn from(err: ForwardError) -> Self {
        let status = match err.failure {
            ForwardFailure::Code(code) => match code {
                ErrorCode::DestinationNotAllowed => StatusCode::FORBIDDEN,
                ErrorCode::InvalidRequest => StatusCode::BAD_REQUEST,
                ErrorCode::Timeout => StatusCode::GATEWAY_TIMEOUT,
                ErrorCode::BodyTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
                ErrorCode::ConnectFailed | ErrorCode::UpstreamFailed | ErrorCode::Cancelled => StatusCode::BAD_GATEWAY,
                ErrorCode::Internal | ErrorCode::Unspecified => return Problem::internal(err.detail),
            },
            ForwardFailure::Internal => return Problem::internal(err.detail),
            ForwardFailure::UnknownAgent => StatusCode::NOT_FOUND,
            ForwardFailure::AgentNotConnected | ForwardFailure::Draining => StatusCode::SERVICE_UNAVAILABLE,
            ForwardFailure::NotTaken => StatusCode::GATEWAY_TIMEOUT,
            // The agent is the gateway: its failures are never the relay's 500.
            ForwardFailure::AgentFailed | ForwardFailure::AgentLost | ForwardFailure::AgentProtocol => {
                StatusCode::BAD_GATEWAY
            }
        };
        Problem::new(status, err.slug(), err.detail)
    }
}

impl From<borealis_engine::runs::RunError> for Problem {
    fn from(err: borealis_engine::runs::RunError) -> Self {
        use borealis_engine::runs::RunError;
        match err {
            RunError::Invalid { detail, errors } => {
                Problem::new(StatusCode::BAD_REQUEST, "invalid-webhook-run", detail).with_errors(errors)
            }
            err @ RunError::IdempotencyKeyReused { .. } => {
                Problem::new(StatusCode::UNPROCESSABLE_ENTITY, "idempotency-key-reused", err.to_string())
            }
            err @ (RunError::Unknown(_) | RunError::UnknownCallback) => {
                Problem::new(StatusCode::NOT_FOUND, "unknown-run", err.to_string())
            }
            RunError::Finished(detail) => Problem::new(StatusCode::CONFLICT, "run-finished", detail),
            err @ RunError::CallbackConflict { .. } => {
                Problem::new(StatusCode::CONFLICT, "callback-conflict", err.to_string())
            }
            RunError::Store(err) => store_problem(err),
            RunError::Vault(err) => err.into(),
        }
    }
}

impl From<borealis_engine::deployments::DeploymentError> for Problem {
    fn from(err: borealis_engine::deployments::DeploymentError) -> Self {
        use borealis_engine::deployments::DeploymentError;
        match err {
            DeploymentError::Invalid { detail, errors } => {
                Problem::new(StatusCode::BAD_REQUEST, "invalid-deployment", detail).with_errors(errors)
            }
            err @ DeploymentError::IdempotencyKeyReused { .. } => {
                Problem::new(StatusCode::UNPROCESSABLE_ENTITY, "idempotency-key-reused", err.to_string())
            }
            DeploymentError::InProgress(detail) => Problem::new(StatusCode::CONFLICT, "deployment-in-progress", detail),
            err @ DeploymentError::Unknown(_) => {
                Problem::new(StatusCode::NOT_FOUND, "unknown-deployment", err.to_string())
            }
            DeploymentError::NotAwaitingApproval(detail) => {
                Problem::new(StatusCode::CONFLICT, "not-awaiting-approval", detail)
            }
            DeploymentError::RoleRequired(detail) | DeploymentError::SelfApproval(detail) => {
                Problem::new(StatusCode::FORBIDDEN, "forbidden", detail)
            }
            DeploymentError::NotAwaitingDecision(detail) => {
                Problem::new(StatusCode::CONFLICT, "not-awaiting-decision", detail)
            }
            DeploymentError::Ended(detail) => Problem::new(StatusCode::CONFLICT, "deployment-ended", detail),
            DeploymentError::Store(err) => store_problem(err),
            DeploymentError::Vault(err) => err.into(),
        }
    }
}

/// 429 for a peer that failed authentication too often.
pub fn too_many_failures(wait: std::time::Duration) -> Response {
    too_many_failures_problem(wait).into_response()
}

/// The problem of a client over its failed-authentication limit, with the
/// `Retry-After` that goes with it.
pub fn too_many_failures_problem(wait: std::time::Duration) -> Problem {
    let seconds = (wait.as_secs() + u64::from(wait.subsec_nanos() > 0)).max(1);
    let mut problem = Problem::new(
        StatusCode::TOO_MANY_REQUESTS,
        "too-many-failed-authentications",
        format!("too many failed authentications from this address or for this credential; try again in {seconds} s"),
    );
    problem.retry_after = Some(seconds);
    problem
}
