//! Secrets: names and times only; values are write-only.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// Where a secret may be used.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum SecretUse {
    /// `{{secrets.NAME}}` in a webhook's URI, headers and body.
    Webhooks,
    /// A key of a file's `signing:`, or the relay's `webhook_signing_secret`.
    Signing,
    /// `{{secrets.NAME}}` in a metric provider's headers.
    Providers,
}

/// `PUT /api/v1/secrets/{name}` with `Content-Type: application/json`; a
/// body of another type is the value itself, with no `uses`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct PutSecret {
    /// The value, not empty.
    pub value: String,
    /// Where it may be used. Without: `webhooks` for a new secret, and a
    /// replaced one keeps its uses. The relay's own signing key is never
    /// readable by a file's templates, whatever its uses.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uses: Option<Vec<SecretUse>>,
}

/// `PUT /api/v1/secrets/{name}`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct SecretStored {
    pub name: String,
    pub stored: bool,
}

/// `GET /api/v1/secrets`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct SecretList {
    pub secrets: Vec<SecretSummary>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct SecretSummary {
    pub name: String,
    #[schema(format = DateTime)]
    pub updated_at: String,
    /// Where it may be used.
    pub uses: Vec<SecretUse>,
}

/// `DELETE /api/v1/secrets/{name}`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct SecretDeleted {
    pub name: String,
    pub deleted: bool,
}
