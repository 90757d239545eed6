//! Secrets: names and times only; values are write-only.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

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
}

/// `DELETE /api/v1/secrets/{name}`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct SecretDeleted {
    pub name: String,
    pub deleted: bool,
}
