//! Domain errors as problems: the one place that picks HTTP statuses.

use axum::http::StatusCode;
use borealis_protocol::v1::ErrorCode;

pub use crate::api::Problem;
use crate::forward::{ForwardError, ForwardFailure};

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

impl From<crate::runs::RunError> for Problem {
    fn from(err: crate::runs::RunError) -> Self {
        use crate::runs::RunError;
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
            RunError::Store(err) => Problem::internal(err),
            RunError::Vault(err) => Problem::internal(err),
        }
    }
}

impl From<crate::deployments::DeploymentError> for Problem {
    fn from(err: crate::deployments::DeploymentError) -> Self {
        use crate::deployments::DeploymentError;
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
            DeploymentError::NotAwaitingDecision(detail) => {
                Problem::new(StatusCode::CONFLICT, "not-awaiting-decision", detail)
            }
            DeploymentError::Store(err) => Problem::internal(err),
            DeploymentError::Vault(err) => Problem::internal(err),
        }
    }
}
