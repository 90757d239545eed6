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
/// The team the console last showed (not a credential: the session decides
/// what may be seen).
const TEAM_COOKIE: &str = "borealis_team";
/// How long a session lasts from sign-in.
pub const SESSION_TTL: Duration = Duration::from_secs(12 * 3600);
/// The largest form the console takes (a secret's value is the largest field).
pub const MAX_FORM_BYTES: usize = 64 * 1024;

#[derive(Template)]
#[template(path = "console/sign_in.html")]
struct SignInPage<'a> {
    next: &'a str,
    error: Option<&'a str>,
    /// People may sign in through the identity provider.
    people: bool,
    /// The admin token is taken (not turned off).
    admin_token: bool,
}

impl<'a> SignInPage<'a> {
    fn new(state: &AppState, next: &'a str, error: Option<&'a str>) -> Self {
        Self { next, error, people: state.sign_in.is_some(), admin_token: !state.config.disable_admin_token }
    }

    /// `next`, as a query parameter's value.
    fn next_query(&self) -> String {
        url::form_urlencoded::byte_serialize(self.next.as_bytes()).collect()
    }
}

/// The page the provider's callback ends on: it goes on to the console by
/// itself, as the console's own page (so the session cookie, SameSite=Strict,
/// goes with the next request; a redirect from the provider's would not).
#[derive(Template)]
#[template(path = "console/signed_in.html")]
struct SignedInPage<'a> {
    next: &'a str,
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

pub async fn sign_in_page(State(state): State<Arc<AppState>>, Query(query): Query<NextQuery>) -> Response {
    let next = safe_next(query.next.as_deref());
    render(&SignInPage::new(&state, next, None), StatusCode::OK)
}

/// The cookie that carries a sign-in from its start to the provider's callback.
const SIGN_IN_COOKIE: &str = "borealis_sign_in";

/// `GET /sign-in/oidc`: off to the identity provider, the sign-in's state
/// sealed in a cookie (SameSite=Lax: it must come back with the provider's
/// redirect).
pub async fn oidc_start(
    State(state): State<Arc<AppState>>,
    Query(query): Query<NextQuery>,
) -> Result<Response, Failure> {
    let Some(sign_in) = &state.sign_in else {
        return Err(Failure(Problem::new(StatusCode::NOT_FOUND, "not-found", "no identity provider is set")));
    };
    let next = safe_next(query.next.as_deref());
    let (url, started) = match sign_in.start(next).await {
        Ok(found) => found,
        Err(err) => {
            tracing::warn!(error = %err, "console sign-in could not start");
            let detail = err.to_string();
            let page = SignInPage::new(&state, next, Some(&detail));
            return Ok(render(&page, StatusCode::BAD_GATEWAY));
        }
    };
    let mut response = Redirect::to(url.as_str()).into_response();
    let sealed = crate::access::oidc::SignIn::seal(&state.auth, &started);
    let max_age = crate::access::oidc::SIGN_IN_WITHIN.as_secs();
    set_cookie(&mut response, &named_cookie(&state, SIGN_IN_COOKIE, &sealed, max_age, "Lax", "/sign-in/oidc"));
    Ok(response)
}

#[derive(Deserialize)]
pub struct CallbackQuery {
    code: Option<String>,
    state: Option<String>,
    error: Option<String>,
    error_description: Option<String>,
}

/// `GET /sign-in/oidc/callback`: the provider's answer. The person it
/// vouches for gets a console session; anything else is refused, recorded,
/// and said on the sign-in page.
pub async fn oidc_callback(
    State(state): State<Arc<AppState>>,
    remote: Option<axum::Extension<RemoteAddr>>,
    uri: http::Uri,
    headers: HeaderMap,
    Query(query): Query<CallbackQuery>,
) -> Result<Response, Failure> {
    let Some(sign_in) = &state.sign_in else {
        return Err(Failure(Problem::new(StatusCode::NOT_FOUND, "not-found", "no identity provider is set")));
    };
    let peer = remote.map(|r| r.0.0.ip());
    let started = cookie_value(&headers, SIGN_IN_COOKIE)
        .and_then(|value| crate::access::oidc::SignIn::unseal(&state.auth, value));
    let next = started.as_ref().map_or("/agents", |s| safe_next(Some(&s.next))).to_owned();
    let result = match (&started, &query) {
        (_, CallbackQuery { error: Some(error), error_description, .. }) => {
            let said = error_description.as_deref().map(|d| format!(": {d}")).unwrap_or_default();
            Err(crate::access::oidc::SignInError::Refused(format!("{}{}", shorten(error), shorten(&said))))
        }
        (None, _) => Err(crate::access::oidc::SignInError::Expired),
        (Some(started), CallbackQuery { code: Some(code), state: Some(returned), .. }) => {
            sign_in.finish(started, code, returned).await
        }
        (Some(_), _) => Err(crate::access::oidc::SignInError::Refused("the answer holds no code".into())),
    };
    let person = match result {
        Ok(person) => person,
        Err(err) => {
            let detail = err.to_string();
            tracing::warn!(
                error = detail.as_str(),
                peer = peer.map(tracing::field::display),
                "console sign-in refused"
            );
            if let Some(wait) = state.auth_guard.failed(peer, "console_sign_in", None, &detail) {
                return Ok(Failure(too_many_failures_problem(wait)).into_response());
            }
            record_refused_sign_in(&state, &uri, peer).await;
            let page = SignInPage::new(&state, &next, Some(&detail));
            let mut response = render(&page, StatusCode::UNAUTHORIZED);
            set_cookie(&mut response, &named_cookie(&state, SIGN_IN_COOKIE, "", 0, "Lax", "/sign-in/oidc"));
            return Ok(response);
        }
    };
    let id = start_session(&state, |id| state.auth.person_seal(id), Some(person.clone())).await?;
    tracing::info!(person = person.subject.as_str(), peer = peer.map(tracing::field::display), "console sign-in");
    let mut response = render(&SignedInPage { next: &next }, StatusCode::OK);
    set_cookie(&mut response, &cookie(&state, &id, SESSION_TTL.as_secs()));
    set_cookie(&mut response, &named_cookie(&state, SIGN_IN_COOKIE, "", 0, "Lax", "/sign-in/oidc"));
    Ok(response)
}

/// A new console session, sealed by `seal` of its id; its id, for the cookie.
async fn start_session(
    state: &AppState,
    seal: impl FnOnce(&str) -> Vec<u8>,
    person: Option<borealis_store::Person>,
) -> Result<String, Failure> {
    let id = B64.encode(auth::random_bytes(32));
    let now = SystemTime::now();
    let session =
        ConsoleSession { id_hash: session_hash(&id), admin_seal: seal(&id), expires_at: now + SESSION_TTL, person };
    state.store.create_console_session(&session, now).await.map_err(Problem::from)?;
    Ok(id)
}

/// A sign-in refused: in the audit trail, with no actor.
async fn record_refused_sign_in(state: &AppState, uri: &http::Uri, peer: Option<std::net::IpAddr>) {
    let asked = crate::http::authorize::Asked {
        action: "console.sign-in",
        path: uri.path().to_owned(),
        team: None,
        source: peer,
        request_id: uuid::Uuid::new_v4().to_string(),
    };
    let anonymous = crate::access::principal::Actor::anonymous();
    crate::http::authorize::record(state, &asked, &anonymous, "unauthenticated", StatusCode::UNAUTHORIZED).await;
}

/// At most 200 characters of what a peer said, for a page.
fn shorten(text: &str) -> String {
    text.chars().take(200).collect()
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
    // With the admin token turned off the relay holds none: every token is
    // refused here, counted and recorded as a wrong one is.
    if !state.auth.is_admin(form.token.trim()) {
        let wrong = "wrong admin token at the console's sign-in";
        if let Some(wait) = state.auth_guard.failed(peer, "console_sign_in", Some("admin"), wrong) {
            return Ok(Failure(too_many_failures_problem(wait)).into_response());
        }
        record_refused_sign_in(&state, &uri, peer).await;
        let said = match state.config.disable_admin_token {
            true => "The admin token is turned off on this relay: sign in with your identity provider.",
            false => "That is not the admin token.",
        };
        return Ok(render(&SignInPage::new(&state, next, Some(said)), StatusCode::UNAUTHORIZED));
    }
    let token = borealis_core::Secret::new(form.token.trim());
    let id = start_session(&state, |id| state.auth.console_seal(&token, id), None).await?;
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
/// session, the operator may do what the page does (in its team, or in the
/// team of the deployment or run it names), and, for a form, the session's
/// CSRF token. Without a session a page redirects to the sign-in, which
/// comes back here after.
pub async fn require_session(State(state): State<Arc<AppState>>, request: Request, next: Next) -> Response {
    // A page read is not recorded; a form posted is, as the API's requests are.
    let changes = request.method() != http::Method::GET && request.method() != http::Method::HEAD;
    let matched = request.extensions().get::<axum::extract::MatchedPath>().map(|m| m.as_str().to_owned());
    let mut asked = crate::http::authorize::Asked {
        action: matched.as_deref().map_or("console", |route| console_action(route, request.uri().path())),
        path: request.uri().path().to_owned(),
        team: None,
        source: crate::http::authorize::client_ip(&request),
        request_id: uuid::Uuid::new_v4().to_string(),
    };
    let team_asked =
        url::form_urlencoded::parse(request.uri().query().unwrap_or_default().as_bytes()).any(|(key, _)| key == "team");
    let request = match admit(&state, request).await {
        Ok(request) => request,
        Err(refused) => {
            // A form refused at the door (no session, a missing CSRF token,
            // another origin) is recorded too.
            if changes {
                let status = refused.status();
                let outcome = if status == StatusCode::FORBIDDEN { "refused" } else { "unauthenticated" };
                let anonymous = crate::access::principal::Actor::anonymous();
                crate::http::authorize::record(&state, &asked, &anonymous, outcome, status).await;
            }
            return refused;
        }
    };
    let operator = request.extensions().get::<Operator>().cloned().expect("admitted");
    let (method, path) = (request.method().clone(), request.uri().path().to_owned());
    // As the API files them: a person's own tokens under no team.
    asked.team = super::access::acts_in_team(&method, matched.as_deref()).then(|| operator.team.clone());
    let response = match super::access::check(&state, &operator, matched.as_deref(), (&method, &path)).await {
        Ok(()) => next.run(request).await,
        Err(refused) => refused.into_response(),
    };
    let mut response = response;
    if team_asked {
        set_cookie(
            &mut response,
            &named_cookie(&state, TEAM_COOKIE, &operator.team, SESSION_TTL.as_secs(), "Strict", "/"),
        );
    }
    let status = response.status();
    if changes || status == StatusCode::FORBIDDEN {
        let outcome = match status.as_u16() {
            403 => "refused",
            400.. => "failed",
            _ => "allowed",
        };
        asked.name_object_of(&response);
        crate::http::authorize::record(&state, &asked, &operator.principal.actor, outcome, status).await;
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
        "/tokens" => "personal-token.create",
        "/tokens/{id}/revoke" => "personal-token.revoke",
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
    let found = found.filter(|found| {
        session.as_ref().is_some_and(|id| match found.person {
            Some(_) => state.auth.person_seal_holds(&found.admin_seal, id),
            None => state.auth.console_seal_holds(&found.admin_seal, id),
        })
    });
    let (Some(id), Some(found)) = (session, found) else {
        let here = request.uri().path_and_query().map(|p| p.as_str()).unwrap_or("/");
        let target = if request.method() == http::Method::GET { here } else { "/" };
        let location =
            format!("/sign-in?next={}", url::form_urlencoded::byte_serialize(target.as_bytes()).collect::<String>());
        return Err(Redirect::to(&location).into_response());
    };
    let principal = match &found.person {
        Some(person) => crate::access::principal::person(state.store.as_ref(), person, state.admin_groups())
            .await
            .map_err(|e| Failure::from(e).into_response())?,
        None => crate::access::principal::Principal::console_admin(),
    };
    let teams: Vec<String> = match principal.grants.readable_teams() {
        Some(teams) => teams,
        None => state
            .store
            .teams()
            .await
            .map_err(|e| Failure::from(e).into_response())?
            .into_iter()
            .map(|t| t.name)
            .collect(),
    };
    let asked = url::form_urlencoded::parse(request.uri().query().unwrap_or_default().as_bytes())
        .find(|(key, _)| key == "team")
        .map(|(_, value)| value.into_owned())
        .or_else(|| cookie_value(request.headers(), TEAM_COOKIE).map(str::to_owned));
    let team = asked
        .filter(|team| teams.contains(team))
        .or_else(|| teams.iter().find(|t| *t == borealis_store::DEFAULT_TEAM).cloned())
        .or_else(|| teams.first().cloned())
        .unwrap_or_else(|| borealis_store::DEFAULT_TEAM.to_owned());
    let operator = Operator { csrf: state.auth.console_csrf(&id), session_id: id.clone(), team, principal, teams };
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

/// Cookie `name`'s value, as the request carries it.
fn cookie_value<'h>(headers: &'h HeaderMap, name: &str) -> Option<&'h str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(found, _)| *found == name)
        .map(|(_, value)| value)
}

fn session_id(headers: &HeaderMap) -> Option<String> {
    cookie_value(headers, COOKIE)
        // A session id is 32 random bytes in unpadded base64url: anything
        // else is refused without asking the store.
        .filter(|value| value.len() == 43 && value.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'))
        .map(str::to_owned)
}

/// The session cookie; `Secure` where the console is reached over HTTPS.
fn cookie(state: &AppState, value: &str, max_age: u64) -> String {
    named_cookie(state, COOKIE, value, max_age, "Strict", "/")
}

/// An HttpOnly cookie; `Secure` where the console is reached over HTTPS.
fn named_cookie(state: &AppState, name: &str, value: &str, max_age: u64, same_site: &str, path: &str) -> String {
    let secure =
        state.config.tls_cert.is_some() || state.config.public_url.as_ref().is_some_and(|url| url.scheme() == "https");
    format!(
        "{name}={value}; Path={path}; Max-Age={max_age}; HttpOnly; SameSite={same_site}{}",
        if secure { "; Secure" } else { "" }
    )
}

fn set_cookie(response: &mut Response, cookie: &str) {
    if let Ok(value) = HeaderValue::from_str(cookie) {
        response.headers_mut().append(header::SET_COOKIE, value);
    }
}
