//! Signing in to the console with the admin token, the session cookie, and
//! the CSRF check every form passes.
//!
//! A session is a random id in an HttpOnly, SameSite=Strict cookie; the
//! store keeps only its SHA-256 and its expiry, so every replica sharing
//! the database knows it and sign-out ends it everywhere. Each form carries
//! a CSRF token, an HMAC of the session id under the key replicas share; a
//! form posted without it (from another origin, which SameSite alone does
//! not stop on the same site) is refused, as is one whose `Origin` is not
//! the console's.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use askama::Template;
use axum::Form;
use axum::body::Body;
use axum::extract::{Query, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Redirect, Response};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use borealis_store::ConsoleSession;
use serde::Deserialize;

use super::page::{Failure, Operator, addressed_authority, render, session_hash};
use crate::auth;
use crate::http::problem::{Problem, too_many_failures_problem};
use crate::serve::RemoteAddr;
use crate::state::AppState;

/// The session cookie's name.
pub const COOKIE: &str = "borealis_console";
/// How long a session lasts from sign-in.
pub const SESSION_TTL: Duration = Duration::from_secs(12 * 3600);
/// The largest form the console takes (a secret's value is the largest field).
pub const MAX_FORM_BYTES: usize = 64 * 1024;

#[derive(Template)]
#[template(path = "console/sign_in.html")]
struct SignInPage<'a> {
    next: &'a str,
    error: Option<&'a str>,
}

#[derive(Deserialize)]
pub struct NextQuery {
    next: Option<String>,
}

/// The largest sign-in form read: a token and where to go next.
pub const MAX_SIGN_IN_BYTES: usize = 16 * 1024;

#[derive(Deserialize)]
pub struct SignInForm {
    token: String,
    next: Option<String>,
}

pub async fn sign_in_page(Query(query): Query<NextQuery>) -> Response {
    let next = safe_next(query.next.as_deref());
    render(&SignInPage { next, error: None }, StatusCode::OK)
}

pub async fn sign_in(
    State(state): State<Arc<AppState>>,
    remote: Option<axum::Extension<RemoteAddr>>,
    uri: http::Uri,
    headers: HeaderMap,
    Form(form): Form<SignInForm>,
) -> Result<Response, Failure> {
    let peer = remote.map(|r| r.0.0.ip());
    check_origin(&state, &uri, &headers)?;
    let next = safe_next(form.next.as_deref());
    if !state.auth.is_admin(form.token.trim()) {
        let wrong = "wrong admin token at the console's sign-in";
        if let Some(wait) = state.auth_guard.failed(peer, "console_sign_in", Some("admin"), wrong) {
            return Ok(Failure(too_many_failures_problem(wait)).into_response());
        }
        let asked = crate::http::authorize::Asked {
            action: "console.sign-in",
            path: uri.path().to_owned(),
            team: None,
            source: peer,
            request_id: uuid::Uuid::new_v4().to_string(),
        };
        let anonymous = crate::access::principal::Actor::anonymous();
        crate::http::authorize::record(&state, &asked, &anonymous, "unauthenticated", StatusCode::UNAUTHORIZED).await;
        let page = SignInPage { next, error: Some("That is not the admin token.") };
        return Ok(render(&page, StatusCode::UNAUTHORIZED));
    }
    let id = B64.encode(auth::random_bytes(32));
    let now = SystemTime::now();
    let session = ConsoleSession {
        id_hash: session_hash(&id),
        admin_seal: state.auth.console_seal(&borealis_core::Secret::new(form.token.trim()), &id),
        expires_at: now + SESSION_TTL,
    };
    state.store.create_console_session(&session, now).await.map_err(Problem::from)?;
    tracing::info!(peer = peer.map(tracing::field::display), "console sign-in");
    let mut response = Redirect::to(next).into_response();
    set_cookie(&mut response, &cookie(&state, &id, SESSION_TTL.as_secs()));
    Ok(response)
}

pub async fn sign_out(
    State(state): State<Arc<AppState>>,
    axum::Extension(operator): axum::Extension<Operator>,
) -> Result<Response, Failure> {
    state.store.end_console_session(&operator.session_hash()).await.map_err(Problem::from)?;
    let mut response = Redirect::to("/sign-in").into_response();
    set_cookie(&mut response, &cookie(&state, "", 0));
    Ok(response)
}

/// Lets a request through with its [`Operator`] if it carries a live
/// session, and, for a form, the session's CSRF token. Without a session a
/// page redirects to the sign-in, which comes back here after.
pub async fn require_session(State(state): State<Arc<AppState>>, request: Request, next: Next) -> Response {
    // A page read is not recorded; a form posted is, as the API's requests are.
    let changes = request.method() != http::Method::GET && request.method() != http::Method::HEAD;
    let asked = changes.then(|| {
        let matched = request.extensions().get::<axum::extract::MatchedPath>().map(|m| m.as_str());
        crate::http::authorize::Asked {
            action: matched.map_or("console", |route| console_action(route, request.uri().path())),
            path: request.uri().path().to_owned(),
            team: Some(borealis_store::DEFAULT_TEAM.to_owned()),
            source: crate::http::authorize::client_ip(&request),
            request_id: uuid::Uuid::new_v4().to_string(),
        }
    });
    let response = match admit(&state, request).await {
        Ok(request) => next.run(request).await,
        Err(refused) => refused,
    };
    if let Some(asked) = asked {
        let status = response.status();
        let outcome = match status.as_u16() {
            403 => "refused",
            400.. => "failed",
            _ => "allowed",
        };
        let actor = crate::access::principal::Actor::console_admin();
        crate::http::authorize::record(&state, &asked, &actor, outcome, status).await;
    }
    response
}

/// The audit action of a console form, as the API's table names the same
/// action.
fn console_action(route: &str, path: &str) -> &'static str {
    match route {
        "/deployments/{id}/targets/{target}/{decision}" => match path.rsplit('/').next() {
            Some("approve") => "deployment.approve",
            Some("reject") => "deployment.reject",
            Some("rollback") => "deployment.rollback",
            Some("continue") => "deployment.continue",
            _ => "deployment.decide",
        },
        "/sign-out" => "console.sign-out",
        "/agents" => "agent.create",
        "/agents/{id}/revoke" => "agent.revoke",
        "/deployments/{id}/abort" => "deployment.abort",
        "/runs/{id}/cancel" => "run.cancel",
        "/providers" => "provider.create",
        "/providers/{name}/delete" => "provider.delete",
        "/secrets" => "secret.put",
        "/secrets/{name}/delete" => "secret.delete",
        "/clients" => "client.create",
        "/clients/{name}/revoke" => "client.revoke",
        _ => "console",
    }
}

async fn admit(state: &AppState, mut request: Request) -> Result<Request, Response> {
    let session = session_id(request.headers());
    let found = match &session {
        Some(id) => state
            .store
            .console_session(&session_hash(id), SystemTime::now())
            .await
            .map_err(|e| Failure::from(e).into_response())?,
        None => None,
    };
    // A session signed in with an admin token this relay no longer takes
    // (the token was changed) has ended.
    let found =
        found.filter(|found| session.as_ref().is_some_and(|id| state.auth.console_seal_holds(&found.admin_seal, id)));
    let (Some(id), Some(_)) = (session, found) else {
        let here = request.uri().path_and_query().map(|p| p.as_str()).unwrap_or("/");
        let target = if request.method() == http::Method::GET { here } else { "/" };
        let location =
            format!("/sign-in?next={}", url::form_urlencoded::byte_serialize(target.as_bytes()).collect::<String>());
        return Err(Redirect::to(&location).into_response());
    };
    let team = url::form_urlencoded::parse(request.uri().query().unwrap_or_default().as_bytes())
        .find(|(key, value)| key == "team" && crate::auth::validate_name("team", value).is_ok())
        .map_or_else(|| borealis_store::DEFAULT_TEAM.to_owned(), |(_, value)| value.into_owned());
    let operator = Operator { csrf: state.auth.console_csrf(&id), session_id: id.clone(), team };
    if request.method() != http::Method::GET && request.method() != http::Method::HEAD {
        check_origin(state, request.uri(), request.headers()).map_err(IntoResponse::into_response)?;
        let (parts, body) = request.into_parts();
        let bytes = axum::body::to_bytes(body, MAX_FORM_BYTES).await.map_err(|_| {
            Failure(Problem::new(StatusCode::PAYLOAD_TOO_LARGE, "form-too-large", "the form is larger than 64 KiB"))
                .into_response()
        })?;
        let presented = url::form_urlencoded::parse(&bytes).find(|(k, _)| k == "csrf").map(|(_, v)| v.into_owned());
        if !presented.is_some_and(|token| state.auth.console_csrf_matches(&id, &token)) {
            tracing::warn!(path = %parts.uri.path(), "console form refused: missing or wrong CSRF token");
            return Err(Failure(Problem::new(
                StatusCode::FORBIDDEN,
                "csrf",
                "this form's security token is missing or wrong: open the page again and resubmit it",
            ))
            .into_response());
        }
        request = Request::from_parts(parts, Body::from(bytes));
    }
    request.extensions_mut().insert(operator);
    Ok(request)
}

/// A form posted from another origin is refused whatever else it carries.
/// Browsers send `Origin` on every POST; its authority must be the one the
/// browser addressed (`Host`, or in HTTP/2 the request's `:authority`) or
/// the configured public URL's.
fn check_origin(state: &AppState, uri: &http::Uri, headers: &HeaderMap) -> Result<(), Failure> {
    let Some(origin) = headers.get(header::ORIGIN) else { return Ok(()) };
    let authority = origin.to_str().ok().and_then(|o| url::Url::parse(o).ok()).map(|url| authority_of(&url));
    let addressed = addressed_authority(uri, headers);
    let public = state.config.public_url.as_ref().map(authority_of);
    match authority {
        Some(authority)
            if addressed.as_ref().is_some_and(|a| a.as_str() == authority) || Some(&authority) == public.as_ref() =>
        {
            Ok(())
        }
        _ => {
            tracing::warn!(
                origin = String::from_utf8_lossy(origin.as_bytes()).as_ref(),
                "console form refused: posted from another origin"
            );
            Err(Failure(Problem::new(StatusCode::FORBIDDEN, "cross-origin", "this form was posted from another site")))
        }
    }
}

/// `host[:port]` of a URL, the port only where it is not the scheme's default.
fn authority_of(url: &url::Url) -> String {
    let host = url.host_str().unwrap_or_default();
    match url.port() {
        Some(port) => format!("{host}:{port}"),
        None => host.to_owned(),
    }
}

/// Where to go after signing in: a path on this site, never another's. Only
/// visible ASCII: a browser drops tabs and newlines from a URL, which would
/// turn `/<tab>/host` into `//host`.
fn safe_next(next: Option<&str>) -> &str {
    match next {
        Some(path)
            if path.starts_with('/')
                && !path.starts_with("//")
                && !path.contains('\\')
                && path.len() <= 2048
                && path.bytes().all(|b| b.is_ascii_graphic()) =>
        {
            path
        }
        _ => "/agents",
    }
}

fn session_id(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == COOKIE)
        .map(|(_, value)| value)
        // A session id is 32 random bytes in unpadded base64url: anything
        // else is refused without asking the store.
        .filter(|value| value.len() == 43 && value.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'))
        .map(str::to_owned)
}

/// The session cookie; `Secure` where the console is reached over HTTPS.
fn cookie(state: &AppState, value: &str, max_age: u64) -> String {
    let secure =
        state.config.tls_cert.is_some() || state.config.public_url.as_ref().is_some_and(|url| url.scheme() == "https");
    format!(
        "{COOKIE}={value}; Path=/; Max-Age={max_age}; HttpOnly; SameSite=Strict{}",
        if secure { "; Secure" } else { "" }
    )
}

fn set_cookie(response: &mut Response, cookie: &str) {
    if let Ok(value) = HeaderValue::from_str(cookie) {
        response.headers_mut().append(header::SET_COOKIE, value);
    }
}
