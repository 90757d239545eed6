//! What handlers read from requests, and the created reply.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;

use super::problem::Problem;

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

/// A query string read into `T`; one that does not fit is a problem
/// (`invalid-query`) like every other refusal, not the framework's text.
pub struct QueryOf<T>(pub T);

impl<T: serde::de::DeserializeOwned, S: Send + Sync> axum::extract::FromRequestParts<S> for QueryOf<T> {
    type Rejection = Problem;

    async fn from_request_parts(parts: &mut http::request::Parts, state: &S) -> Result<Self, Problem> {
        match axum::extract::Query::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Query(value)) => Ok(Self(value)),
            Err(rejection) => Err(Problem::bad_request("invalid-query", rejection.body_text())),
        }
    }
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

/// `?state=&application=` (or `&webhook=`) `&limit=&after=` on a list.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct ListQuery {
    pub state: Option<String>,
    pub application: Option<String>,
    pub webhook: Option<String>,
    pub limit: Option<u32>,
    pub after: Option<String>,
}

/// The longest page a list gives.
pub const MAX_PAGE: u32 = 500;

impl ListQuery {
    /// The page asked for: `state` must be one `valid` knows, `name` is the
    /// resource's own filter, `limit` at most [`MAX_PAGE`] (else `default`).
    /// Empty fields (a form's) count as absent.
    /// The page of `team`'s items (or every team's) this query asks for.
    pub fn page(
        &self,
        team: Option<String>,
        valid: impl Fn(&str) -> bool,
        name: Option<&String>,
        default: u32,
    ) -> Result<borealis_store::Page, Problem> {
        let given = |field: Option<&String>| field.filter(|v| !v.is_empty()).cloned();
        let state = given(self.state.as_ref());
        if let Some(state) = &state
            && !valid(state)
        {
            return Err(Problem::bad_request("invalid-query", format!("unknown state {state:?}")));
        }
        let limit = page_limit(self.limit, default)?;
        let after = match given(self.after.as_ref()) {
            Some(text) => Some(borealis_store::Cursor::decode(&text).ok_or_else(|| {
                Problem::bad_request("invalid-query", "after is not a cursor this relay gave (a list's next)")
            })?),
            None => None,
        };
        Ok(borealis_store::Page { team, state, name: given(name), after, limit })
    }
}

/// A list's `limit`, or `default`; at most [`MAX_PAGE`].
pub fn page_limit(limit: Option<u32>, default: u32) -> Result<u32, Problem> {
    let limit = limit.unwrap_or(default);
    if (1..=MAX_PAGE).contains(&limit) {
        Ok(limit)
    } else {
        Err(Problem::bad_request("invalid-query", format!("limit must be 1 to {MAX_PAGE}, not {limit}")))
    }
}

/// The cursor of the page after `listed`'s, when it was full.
pub fn next_cursor(
    page: &borealis_store::Page,
    last: Option<(std::time::SystemTime, &str)>,
    listed: usize,
) -> Option<String> {
    let (created_at, id) = last?;
    (listed as u32 >= page.limit)
        .then(|| borealis_store::Cursor { created_at: borealis_store::unix_ms(created_at), id: id.to_owned() }.encode())
}

pub(crate) fn json_body<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, Problem> {
    serde_json::from_slice(body).map_err(|e| Problem::bad_request("invalid-body", format!("invalid JSON body: {e}")))
}
