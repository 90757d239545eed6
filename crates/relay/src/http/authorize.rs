//! The API's door: every route behind it is looked up in the permission
//! table (`access::rules`), its caller authenticated (the admin token, or a
//! service account's token) and authorized in the request's team, and the
//! request recorded in the audit trail when it changes something or is
//! refused. Each reply carries its `Borealis-Request-Id`.

use std::sync::Arc;
use std::time::SystemTime;

use axum::extract::{MatchedPath, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use borealis_store::AuditEntry;

use super::AppState;
use super::problem::{Problem, too_many_failures};
use crate::access::principal::{self, Actor, Principal, Unauthenticated};
use crate::access::rules;
use crate::auth;

/// The header naming a request in the audit trail and the relay's log.
pub const REQUEST_ID_HEADER: &str = "borealis-request-id";

/// The longest team name a request may give.
const MAX_TEAM_BYTES: usize = 64;

/// The team a request acts in, as the authorization resolved it: the
/// handlers read it from the request's extensions.
#[derive(Debug, Clone)]
pub struct ActingTeam(pub String);

/// What the route needs, and what the caller holds: an object found by id
/// is the caller's to reach only in a team where it holds that.
#[derive(Clone)]
pub struct Reach {
    grants: rules::Grants,
    permission: rules::Permission,
}

impl Reach {
    /// Whether an object of `team` is within reach. One that is not is
    /// answered as one that does not exist: its existence is not the
    /// caller's to learn.
    pub fn holds(&self, team: &str) -> bool {
        self.grants.allows(self.permission, team)
    }
}

/// The object a change made, when its path does not name it (a token just
/// made): a handler puts it in its response's extensions, and the audit
/// entry names it instead of the path.
#[derive(Debug, Clone)]
pub struct AuditedObject(pub String);

/// A request as its audit entry names it.
pub(crate) struct Asked {
    pub action: &'static str,
    pub path: String,
    pub team: Option<String>,
    pub source: Option<std::net::IpAddr>,
    pub request_id: String,
}

impl Asked {
    /// Names the object a handler said its change made ([`AuditedObject`]),
    /// instead of the request's path.
    pub(crate) fn name_object_of(&mut self, response: &Response) {
        if let Some(AuditedObject(object)) = response.extensions().get::<AuditedObject>() {
            self.path = object.clone();
        }
    }
}

pub async fn authorize(State(state): State<Arc<AppState>>, mut request: Request, next: Next) -> Response {
    let request_id = uuid::Uuid::new_v4().to_string();
    let matched = request.extensions().get::<MatchedPath>().map(|m| m.as_str().to_owned()).unwrap_or_default();
    let Some(rule) = rules::rule_for(request.method().as_str(), &matched) else {
        // A method the route does not have (the router's 405 passes here
        // without a matched path).
        let allowed = rules::methods_for(request.uri().path());
        if !allowed.is_empty() {
            // The route is the table's, the method not: as the router says it.
            let detail = format!("{} is not allowed here; use {}", request.method(), allowed.join(", "));
            let mut response =
                Problem::new(StatusCode::METHOD_NOT_ALLOWED, "method-not-allowed", detail).into_response();
            if let Ok(value) = HeaderValue::from_str(&allowed.join(", ")) {
                response.headers_mut().insert(header::ALLOW, value);
            }
            return with_id(response, &request_id);
        }
        // Fail closed: a route without an entry in the table is no one's.
        tracing::error!(route = matched.as_str(), "a route has no entry in the permission table");
        return Problem::new(StatusCode::FORBIDDEN, "forbidden", "no permission is defined for this route")
            .into_response();
    };
    let query = request.uri().query().unwrap_or_default().to_owned();
    let param = |name: &str| {
        url::form_urlencoded::parse(query.as_bytes())
            .find(|(k, v)| k == name && !v.is_empty())
            .map(|(_, v)| v.into_owned())
    };
    let mut asked = Asked {
        action: rule.action,
        path: request.uri().path().to_owned(),
        team: None,
        source: client_ip(&request),
        request_id: request_id.clone(),
    };

    let principal = match authenticate(&state, &mut request).await {
        Ok(principal) => principal,
        Err(Refused::Throttled(wait)) => return with_id(too_many_failures(wait), &request_id),
        Err(Refused::Unauthenticated { actor, detail }) => {
            let problem = Problem::new(StatusCode::UNAUTHORIZED, "unauthorized", detail);
            record(&state, &asked, &actor, "unauthenticated", StatusCode::UNAUTHORIZED).await;
            return with_id(problem.into_response(), &request_id);
        }
        Err(Refused::Store(problem)) => return with_id(problem.into_response(), &request_id),
    };

    // Team names need no escaping: an escaped one is refused as invalid below.
    let named = rule.team_in_path().then(|| request.uri().path().rsplit('/').next().map(str::to_owned)).flatten();
    let team = named.or_else(|| param("team")).unwrap_or_else(|| principal.grants.default_team().to_owned());
    if team.len() > MAX_TEAM_BYTES || auth::validate_name("team", &team).is_err() {
        let problem = Problem::bad_request("invalid-team", format!("{:?} is not a team name", shorten(&team)));
        return with_id(problem.into_response(), &request_id);
    }
    // A person's own tokens are no team's: a team named here would file
    // them in a trail the person may have no part in.
    let own = rule.permission(false) == rules::Permission::Own;
    asked.team = (!own).then(|| team.clone());
    let through_agent = param("agent").is_some();
    // A run or deployment reached by id is judged in its own team, once
    // found ([`Reach`]); here only whether the caller could hold it anywhere.
    let decided = if rule.reaches_by_id() && param("team").is_none() {
        rules::decide_in_any_team(&principal.grants, rule)
    } else {
        rules::decide(&principal.grants, rule, &team, through_agent)
    };
    let permission = match decided {
        Ok(permission) => permission,
        Err(forbidden) => {
            let detail = format!("{forbidden}; {} holds {}", principal.actor.name, holdings(&principal));
            record(&state, &asked, &principal.actor, "refused", StatusCode::FORBIDDEN).await;
            return with_id(Problem::new(StatusCode::FORBIDDEN, "forbidden", detail).into_response(), &request_id);
        }
    };

    let actor = principal.actor.clone();
    request.extensions_mut().insert(Reach { grants: principal.grants.clone(), permission });
    request.extensions_mut().insert(principal);
    request.extensions_mut().insert(ActingTeam(team));
    let response = next.run(request).await;
    let status = response.status();
    let proxied = rule.action == "proxy";
    if proxied || !matches!(rule.method, "GET" | "HEAD") {
        let outcome = if status.is_client_error() || status.is_server_error() { "failed" } else { "allowed" };
        asked.name_object_of(&response);
        let entry = logged_entry(&asked, &actor, outcome, status);
        if proxied {
            state.proxy_trail.append(entry).await;
        } else {
            append(&state, &entry).await;
        }
    }
    with_id(response, &request_id)
}

/// Why a request was not let in.
enum Refused {
    /// Too many failures from this address or for this credential.
    Throttled(std::time::Duration),
    Unauthenticated {
        actor: Actor,
        detail: String,
    },
    Store(Problem),
}

/// Takes `Authorization: Bearer <token>`, or on the proxy
/// `Proxy-Authorization`, so that `Authorization` can go to the
/// destination. The header that carried the credential is removed before
/// the handler. The body is not read before the token is checked.
async fn authenticate(state: &AppState, request: &mut Request) -> Result<Principal, Refused> {
    let mut refusal: Option<(Actor, String)> = None;
    for name in [header::AUTHORIZATION, header::PROXY_AUTHORIZATION] {
        let Some(token) = auth::bearer(request.headers().get(&name)).map(str::to_owned) else { continue };
        let now = SystemTime::now();
        let found = if state.auth.is_admin(&token) {
            Ok(Some(Principal::admin()))
        } else if token.starts_with(principal::PERSONAL_PREFIX) {
            principal::personal(&*state.store, &token, now, state.admin_groups()).await
        } else {
            principal::service_account(&*state.store, &token, now).await
        };
        match found {
            Ok(Some(principal)) => {
                request.headers_mut().remove(&name);
                return Ok(principal);
            }
            Ok(None) | Err(Unauthenticated::Wrong) => {
                refusal.get_or_insert((Actor::anonymous(), "wrong token".to_owned()));
            }
            Err(ended @ (Unauthenticated::Revoked { .. } | Unauthenticated::Expired { .. })) => {
                let detail = ended.to_string();
                if let Unauthenticated::Revoked { actor, .. } | Unauthenticated::Expired { actor, .. } = ended {
                    refusal = Some((actor, detail));
                }
            }
            Err(Unauthenticated::Store(err)) => return Err(Refused::Store(err.into())),
        }
    }
    let presented = refusal.is_some();
    let (actor, detail) = refusal.unwrap_or((Actor::anonymous(), "no token".to_owned()));
    // A wrong token counts against the credential it names as well; a
    // request that shows none is no guess at one.
    let id = presented.then_some(if actor.id.is_empty() { "admin" } else { actor.id.as_str() });
    let logged = format!("{detail} for {} {}", request.method(), request.uri().path());
    let credential = match actor.kind {
        "service_account" => "service_account_token",
        "user" => "personal_token",
        _ => "admin_token",
    };
    if let Some(wait) = state.auth_guard.failed(client_ip(request), credential, id, &logged) {
        return Err(Refused::Throttled(wait));
    }
    let detail = if presented {
        format!(
            "{detail}: this route needs the admin token, a service account's or a personal token (Authorization: Bearer <token>)"
        )
    } else {
        "this route needs the admin token, a service account's or a personal token: Authorization: Bearer <token>"
            .to_owned()
    };
    Err(Refused::Unauthenticated { actor, detail })
}

/// What a principal holds, for a refusal's detail.
fn holdings(principal: &Principal) -> String {
    if principal.grants.roles.is_empty() {
        return "no role".to_owned();
    }
    let roles: Vec<String> =
        principal.grants.roles.iter().map(|(team, role)| format!("{} in {team:?}", role.as_str())).collect();
    roles.join(", ")
}

fn shorten(text: &str) -> String {
    text.chars().take(MAX_TEAM_BYTES).collect()
}

fn with_id(mut response: Response, request_id: &str) -> Response {
    if let Ok(value) = HeaderValue::from_str(request_id) {
        response.headers_mut().insert(REQUEST_ID_HEADER, value);
    }
    response
}

/// Appends the request to the audit trail and logs it as one JSON line. A
/// trail that cannot be written is logged: the request has been served.
pub(crate) async fn record(state: &AppState, asked: &Asked, actor: &Actor, outcome: &str, status: StatusCode) {
    append(state, &logged_entry(asked, actor, outcome, status)).await;
}

async fn append(state: &AppState, entry: &AuditEntry) {
    if let Err(err) = state.store.append_audit(std::slice::from_ref(entry)).await {
        tracing::error!(error = %err, request_id = entry.request_id.as_str(), "could not append to the audit trail");
    }
}

/// The request's audit entry, logged as one JSON line.
fn logged_entry(asked: &Asked, actor: &Actor, outcome: &str, status: StatusCode) -> AuditEntry {
    let entry = AuditEntry {
        seq: 0,
        time: SystemTime::now(),
        actor_kind: actor.kind.to_owned(),
        actor_id: actor.id.clone(),
        actor_name: actor.name.clone(),
        team: asked.team.clone(),
        action: asked.action.to_owned(),
        object: asked.path.clone(),
        outcome: outcome.to_owned(),
        status: status.as_u16(),
        source_address: asked.source.map(|ip| ip.to_string()),
        request_id: asked.request_id.clone(),
    };
    tracing::info!(
        target: "borealis_relay::audit",
        actor_kind = actor.kind,
        actor_id = actor.id.as_str(),
        actor_name = actor.name.as_str(),
        team = asked.team.as_deref(),
        action = asked.action,
        object = asked.path.as_str(),
        outcome,
        status = status.as_u16(),
        source_address = entry.source_address.as_deref(),
        request_id = asked.request_id.as_str(),
        "audit"
    );
    entry
}

/// The client's address, as the accept loop found it (behind a trusted
/// balancer, the one it named).
pub(crate) fn client_ip<B>(request: &http::Request<B>) -> Option<std::net::IpAddr> {
    request.extensions().get::<crate::serve::RemoteAddr>().map(|r| r.0.ip())
}
