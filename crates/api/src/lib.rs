//! The relay's HTTP API as types: every request and reply body of
//! `/api/v1/...`, the callback route, the token endpoint and the problem
//! body, and [`openapi()`], the OpenAPI 3.1 document built from them.
//!
//! The relay builds its replies and parses its request bodies with these
//! types; the CLI decodes them with the same ones, so the two cannot drift,
//! and `docs/openapi.json` (checked by this crate's tests) is what a fuzzer
//! holds the relay's real answers against.
//!
//! # Casing
//!
//! One rule: **every field of our own API is camelCase** (`agentId`,
//! `clientSecret`, `sessionsClosed`, `connectedSince`, `mdMessage`...).
//! Two bodies follow an outside standard instead, and keep its names:
//!
//! - the OAuth 2.0 token endpoint's form and reply (RFC 6749):
//!   `grant_type`, `client_id`, `client_secret`, `access_token`,
//!   `token_type`, `expires_in`, `scope`, `error`, `error_description`;
//! - the problem body (RFC 9457): `type`, `title`, `status`, `detail`, and
//!   our one extension, `errors`.
//!
//! Enum values (run, deployment and target states) are snake_case strings,
//! as the relay has always spelled them (`awaiting_callback`). Times are
//! RFC 3339 strings in UTC with milliseconds (schema format `date-time`).

/// Spellings of a string enum: `as_str`, `parse`, `FromStr` and `Display`,
/// one list of variants and their text (the serde spelling, and the stored one).
macro_rules! string_enum {
    ($name:ident { $($variant:ident = $text:literal),+ $(,)? }) => {
        impl $name {
            /// Every value, in declaration order.
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            pub fn as_str(self) -> &'static str {
                match self { $($name::$variant => $text),+ }
            }

            pub fn parse(text: &str) -> Option<Self> {
                match text {
                    $($text => Some($name::$variant),)+
                    _ => None,
                }
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl std::str::FromStr for $name {
            type Err = String;
            fn from_str(text: &str) -> Result<Self, String> {
                Self::parse(text).ok_or_else(|| format!("unknown {} {text:?}", stringify!($name)))
            }
        }
    };
}

mod agents;
mod deployments;
mod identities;
mod oauth;
pub mod paths;
mod plan;
mod problem;
mod providers;
mod runs;
mod secrets;

pub use agents::*;
pub use deployments::*;
pub use identities::*;
pub use oauth::*;
pub use plan::*;
pub use problem::*;
pub use providers::*;
pub use runs::*;
pub use secrets::*;

/// The OpenAPI 3.1 document of the relay's HTTP API.
pub fn openapi() -> utoipa::openapi::OpenApi {
    use utoipa::OpenApi;
    paths::ApiDoc::openapi()
}

/// [`openapi()`] as the pretty JSON committed in `docs/openapi.json`.
pub fn openapi_json() -> String {
    let mut text = openapi().to_pretty_json().expect("the OpenAPI document serializes");
    text.push('\n');
    text
}

/// Reads `Some(null)` as `Some(None)`, so that a key sent as `null` and a
/// key left out stay apart after a round trip.
fn present<'de, D, T>(deserializer: D) -> Result<Option<Option<T>>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: serde::Deserialize<'de>,
{
    serde::Deserialize::deserialize(deserializer).map(Some)
}
