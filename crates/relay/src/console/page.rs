//! What every console page shares: the frame (section, CSRF token), the
//! rendering of a template, failures shown as pages, and the small
//! formatting helpers.

use askama::Template;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};

use crate::http::problem::Problem;

/// The signed-in operator, as the pages see them.
#[derive(Clone)]
pub struct Operator {
    /// The token this session's forms carry.
    pub csrf: String,
    /// The session id, from the cookie.
    pub(super) session_id: String,
    /// The team whose agents, secrets, providers, clients, runs and
    /// deployments it shows and changes: `?team=` (then kept in a cookie),
    /// else the one chosen before, else the operator's first.
    pub team: String,
    /// Who it is (the admin token, or a person) and what they may do.
    pub principal: crate::access::principal::Principal,
    /// The teams it may switch to (every team for an organization admin).
    pub teams: Vec<String>,
}

impl Operator {
    /// The session's key in the store.
    pub(super) fn session_hash(&self) -> Vec<u8> {
        session_hash(&self.session_id)
    }
}

/// A session id as the store keys it: its SHA-256.
pub(super) fn session_hash(id: &str) -> Vec<u8> {
    ring::digest::digest(&ring::digest::SHA256, id.as_bytes()).as_ref().to_vec()
}

/// The authority the browser addressed: HTTP/1.1 names it in `Host`,
/// HTTP/2 in the request's `:authority` (and sends no `Host`).
pub(super) fn addressed_authority(uri: &http::Uri, headers: &http::HeaderMap) -> Option<http::uri::Authority> {
    headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .and_then(|h| h.parse::<http::uri::Authority>().ok())
        .or_else(|| uri.authority().cloned())
}

/// What every signed-in page's frame needs: the section it belongs to and
/// the CSRF token its forms carry.
pub struct Chrome {
    pub section: &'static str,
    pub csrf: String,
    /// Who is signed in, as shown.
    pub who: String,
    pub team: String,
    /// The teams to switch to, the current one among them.
    pub teams: Vec<String>,
}

impl Chrome {
    pub fn new(section: &'static str, operator: &Operator) -> Self {
        Self {
            section,
            csrf: operator.csrf.clone(),
            who: operator.principal.actor.name.clone(),
            team: operator.team.clone(),
            teams: operator.teams.clone(),
        }
    }
}

/// A page, rendered; a template that fails to render is the relay's fault.
pub fn render(page: &impl Template, status: StatusCode) -> Response {
    match page.render() {
        Ok(html) => (status, [(header::CONTENT_TYPE, "text/html; charset=utf-8")], html).into_response(),
        Err(err) => Failure(Problem::internal(err)).into_response(),
    }
}

#[derive(Template)]
#[template(path = "console/error.html")]
struct ErrorPage<'a> {
    status: u16,
    title: &'a str,
    detail: &'a str,
}

/// A failure shown as a page: the problem's status and detail.
pub struct Failure(pub Problem);

impl<E: Into<Problem>> From<E> for Failure {
    fn from(err: E) -> Self {
        Self(err.into())
    }
}

impl IntoResponse for Failure {
    fn into_response(self) -> Response {
        let Problem { status, detail, retry_after, .. } = self.0;
        let page =
            ErrorPage { status: status.as_u16(), title: status.canonical_reason().unwrap_or("Error"), detail: &detail };
        let mut response = match page.render() {
            Ok(html) => (status, [(header::CONTENT_TYPE, "text/html; charset=utf-8")], html).into_response(),
            Err(_) => (status, detail).into_response(),
        };
        if let Some(seconds) = retry_after {
            response.headers_mut().insert(header::RETRY_AFTER, http::HeaderValue::from(seconds));
        }
        response
    }
}

/// A form's outcome: done, or refused for a reason the operator can
/// correct (the page is shown again, naming it); anything else (the
/// relay's fault) fails the request.
pub fn correctable<T>(result: Result<T, Problem>) -> Result<Result<T, Problem>, Failure> {
    match result {
        Err(problem) if !problem.status.is_client_error() => Err(Failure(problem)),
        other => Ok(other),
    }
}

/// "2026-12-06T03:14:16.123Z" as "2026-12-06 03:14:16 UTC".
pub fn when(rfc3339: &str) -> String {
    match rfc3339.split_once('T') {
        Some((day, time)) => format!("{day} {} UTC", time.get(..8).unwrap_or(time)),
        None => rfc3339.to_owned(),
    }
}

/// A state as a word for people ("awaiting_approval" → "awaiting approval")
/// and as the CSS class that colours it.
pub fn state_words(state: &impl serde::Serialize) -> (String, String) {
    let slug = serde_json::to_value(state).ok().and_then(|v| v.as_str().map(str::to_owned)).unwrap_or_default();
    (slug.replace('_', " "), slug)
}

#[derive(Template)]
#[template(path = "console/confirm.html")]
pub struct ConfirmPage {
    pub chrome: Chrome,
    pub title: String,
    pub question: String,
    pub consequence: String,
    pub action: String,
    pub button: String,
    pub cancel: String,
}

/// A name as one path segment.
pub fn segment(name: &str) -> String {
    url::form_urlencoded::byte_serialize(name.as_bytes()).collect::<String>().replace('+', "%20")
}

/// A list's filters as its page shows them, and the way to older items.
pub struct Filters {
    /// The list's path (`deployments`, `runs`).
    pub path: &'static str,
    /// The name filter's label and query parameter.
    pub name_label: &'static str,
    pub name_param: &'static str,
    /// The state chosen, or empty for all.
    pub state: String,
    /// The name chosen (an application, a webhook), or empty for all.
    pub name: String,
    /// Each state to choose from: its value and its words.
    pub states: Vec<(String, String)>,
    /// The query of the next (older) page, when there may be one.
    pub older: Option<String>,
    /// Whether this is a later page: a link back to the newest is shown.
    pub paged: bool,
}

impl Filters {
    /// The filters of list `path` as `query` gives them (its name under
    /// `name_param`, labelled `name_label`), over `states`, with `next`,
    /// the cursor of the page after this one.
    pub fn new(
        (path, name_label, name_param): (&'static str, &'static str, &'static str),
        query: &crate::http::extract::ListQuery,
        name: Option<&String>,
        states: &[&str],
        next: Option<String>,
    ) -> Self {
        let state = query.state.clone().unwrap_or_default();
        let name = name.cloned().unwrap_or_default();
        let older = next.map(|cursor| {
            url::form_urlencoded::Serializer::new(String::new())
                .append_pair("state", &state)
                .append_pair(name_param, &name)
                .append_pair("after", &cursor)
                .finish()
        });
        let states = states.iter().map(|s| ((*s).to_owned(), s.replace('_', " "))).collect();
        let paged = query.after.as_deref().is_some_and(|a| !a.is_empty());
        Self { path, name_label, name_param, state, name, states, older, paged }
    }
}
