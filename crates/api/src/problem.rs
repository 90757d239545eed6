use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// The media type of every error the relay produces.
pub const PROBLEM_CONTENT_TYPE: &str = "application/problem+json";

/// An RFC 9457 problem. Its field names are the RFC's, not camelCase.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Problem {
    /// `urn:borealis:problem:<slug>`; the slug is also sent as `Borealis-Error`.
    #[serde(rename = "type")]
    pub kind: String,
    /// The HTTP status's reason phrase.
    pub title: String,
    pub status: u16,
    pub detail: String,
    /// One line per problem, when there are several (a file's validation errors).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<String>,
}

impl Problem {
    /// The problem's slug: `type` without its `urn:borealis:problem:` prefix.
    pub fn slug(&self) -> &str {
        self.kind.strip_prefix("urn:borealis:problem:").unwrap_or(&self.kind)
    }
}
