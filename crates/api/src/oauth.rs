//! The token endpoint: RFC 6749's field names, not camelCase.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// `POST /oauth/token`, form-encoded (RFC 6749 §4.4). The client may come in
/// HTTP Basic auth instead of `client_id` and `client_secret`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct TokenRequest {
    /// `client_credentials`, the one grant supported.
    pub grant_type: String,
    pub client_id: Option<String>,
    pub client_secret: Option<String>,
    /// Accepted and ignored.
    pub audience: Option<String>,
}

/// A bearer token for the agent tunnel or for callbacks.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct TokenResponse {
    pub access_token: String,
    /// Always `Bearer`.
    pub token_type: String,
    /// Seconds until the token expires.
    pub expires_in: u64,
    /// `agent:tunnel` or `webhook:callback`, after the credential's kind.
    pub scope: String,
}

/// RFC 6749 §5.2's error reply.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct TokenError {
    /// `invalid_request`, `unsupported_grant_type` or `invalid_client`.
    pub error: String,
    pub error_description: String,
}
