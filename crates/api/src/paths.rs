//! The routes, declared on marker functions for `#[utoipa::path]`: the
//! relay's handlers live in the relay, and their bodies are this crate's
//! types. The functions are never called.
#![allow(dead_code)]

use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityScheme};
use utoipa::{Modify, OpenApi};

// The modules themselves, not `crate::*`: the root uses `paths`, so that would be a cycle.
use crate::{
    agents::*, deployments::*, identities::*, oauth::*, plan::*, problem::*, providers::*, runs::*, secrets::*,
};

/// Every admin route's answer to a missing or wrong admin token, and to a
/// peer that failed too often.
macro_rules! admin_path {
    ($(#[$doc:meta])* $method:ident $path:literal, $name:ident, { $($rest:tt)* }, responses($($response:tt)*)) => {
        $(#[$doc])*
        #[utoipa::path(
            $method,
            path = $path,
            security(("adminToken" = [])),
            $($rest)*
            responses(
                $($response)*
                (status = 401, description = "No token, or a wrong, expired or revoked one", body = Problem, content_type = "application/problem+json"),
                (status = 403, description = "The caller's roles do not grant what this needs (`Borealis-Error: forbidden`; the detail names the permission)", body = Problem, content_type = "application/problem+json"),
                (status = 429, description = "Too many failed authentications from this address; see Retry-After", body = Problem, content_type = "application/problem+json",
                    headers(("Retry-After" = u64, description = "Seconds to wait"))),
            )
        )]
        pub fn $name() {}
    };
}

const PROBLEM: &str = "application/problem+json";

admin_path!(
    /// Register an agent identifier; the secret is returned once.
    post "/api/v1/agents", create_agent,
    { tag = "agents", request_body = CreateAgent, },
    responses(
        (status = 201, description = "Registered", body = AgentCredentials),
        (status = 400, description = "Invalid body or agent identifier", body = Problem, content_type = PROBLEM),
        (status = 409, description = "The identifier is already registered", body = Problem, content_type = PROBLEM),
    )
);

admin_path!(
    /// Agents and their connected instances.
    get "/api/v1/agents", list_agents,
    { tag = "agents", },
    responses((status = 200, description = "Registered agents", body = AgentList),)
);

admin_path!(
    /// Revoke an agent's credentials and disconnect its instances.
    delete "/api/v1/agents/{id}", revoke_agent,
    { tag = "agents", params(("id" = String, Path, description = "Agent identifier")), },
    responses(
        (status = 200, description = "Revoked", body = AgentRevoked),
        (status = 404, description = "No such agent", body = Problem, content_type = PROBLEM),
    )
);

admin_path!(
    /// Credentials for an external system's callbacks; the secret is returned once.
    post "/api/v1/clients", create_client,
    { tag = "clients", request_body = CreateClient, },
    responses(
        (status = 201, description = "Created", body = ClientCredentials),
        (status = 400, description = "Invalid body or client name", body = Problem, content_type = PROBLEM),
        (status = 409, description = "The name is already registered", body = Problem, content_type = PROBLEM),
    )
);

admin_path!(
    /// Revoke a callback client: its tokens are refused from now on.
    delete "/api/v1/clients/{name}", revoke_client,
    { tag = "clients", params(("name" = String, Path, description = "Client name")), },
    responses(
        (status = 200, description = "Revoked", body = ClientRevoked),
        (status = 404, description = "No such client", body = Problem, content_type = PROBLEM),
    )
);

/// Any method: sends one request to `url`, through the agent `agent` or
/// direct, streaming the body both ways. The answer is the destination's
/// status, headers and body, whatever they are; only an answer carrying a
/// `Borealis-Error` header is the relay's own, as a problem. The admin token
/// may ride in `Proxy-Authorization`, so that `Authorization` reaches the
/// destination.
#[utoipa::path(
    method(get, post, put, patch, delete, head, options),
    path = "/api/v1/proxy",
    tag = "proxy",
    security(("adminToken" = [])),
    params(
        ("url" = String, Query, description = "The destination URL"),
        ("agent" = Option<String>, Query, description = "Send through this agent; without it, direct"),
        ("timeout" = Option<String>, Query, description = "Time limit for the whole request, e.g. 30s"),
    ),
    request_body(content = String, content_type = "*/*", description = "Any body (any bytes), streamed to the destination"),
    responses(
        (status = "default", description = "The destination's reply, streamed: its status, headers and body", content_type = "*/*", body = String),
        (status = 400, description = "Invalid query, or a request the destination cannot be sent", body = Problem, content_type = PROBLEM),
        (status = 401, description = "No admin token, or a wrong one", body = Problem, content_type = PROBLEM),
        (status = 403, description = "The destination is not allowed (address guard or the agent's allow-list)", body = Problem, content_type = PROBLEM),
        (status = 404, description = "No such agent", body = Problem, content_type = PROBLEM),
        (status = 413, description = "A body over the limit", body = Problem, content_type = PROBLEM),
        (status = 429, description = "Too many failed authentications from this address", body = Problem, content_type = PROBLEM),
        (status = 502, description = "The destination or the agent failed", body = Problem, content_type = PROBLEM),
        (status = 503, description = "The agent is not connected, or the relay is draining", body = Problem, content_type = PROBLEM),
        (status = 504, description = "No answer in time", body = Problem, content_type = PROBLEM),
    )
)]
pub fn proxy() {}

admin_path!(
    /// Start a webhook run from a deployment file.
    post "/api/v1/webhook-runs", create_webhook_run,
    {
        tag = "webhook-runs",
        params(("Idempotency-Key" = Option<String>, Header, description = "A repeat with the same key and body gets the first run, marked Idempotent-Replayed")),
        request_body = CreateWebhookRun,
    },
    responses(
        (status = 201, description = "Started (or replayed)", body = WebhookRun,
            headers(("Idempotent-Replayed" = bool, description = "true when the Idempotency-Key named an earlier run"))),
        (status = 400, description = "Invalid body, file, webhook or Idempotency-Key", body = Problem, content_type = PROBLEM),
        (status = 422, description = "The Idempotency-Key was used with another request", body = Problem, content_type = PROBLEM),
    )
);

admin_path!(
    /// Check a webhook run without starting it: the request it would send
    /// (secrets masked), and whether its agent, destination, secrets and
    /// signing keys would let it through. Nothing is sent or stored.
    post "/api/v1/webhook-runs/dry-run", dry_run_webhook_run,
    { tag = "webhook-runs", request_body = CreateWebhookRun, },
    responses(
        (status = 200, description = "The plan; `ok` is false when a finding is an error", body = Plan),
        (status = 400, description = "Invalid body, file or webhook name", body = Problem, content_type = PROBLEM),
    )
);

admin_path!(
    /// The newest webhook runs.
    get "/api/v1/webhook-runs", list_webhook_runs,
    {
        tag = "webhook-runs",
        params(
            ("state" = Option<RunState>, Query, description = "Only runs in this state"),
            ("webhook" = Option<String>, Query, description = "Only runs of this webhook"),
            ("limit" = Option<u32>, Query, description = "At most this many (1 to 500; default 200)"),
            ("after" = Option<String>, Query, description = "The page after this one: the `next` of the previous page"),
        ),
    },
    responses(
        (status = 200, description = "Runs, newest first", body = WebhookRunList),
        (status = 400, description = "An invalid state, limit or cursor", body = Problem, content_type = PROBLEM),
    )
);

admin_path!(
    /// One run with its attempts; with `wait`, held until it ends or the wait is over.
    get "/api/v1/webhook-runs/{id}", show_webhook_run,
    {
        tag = "webhook-runs",
        params(
            ("id" = String, Path, description = "Run id"),
            ("wait" = Option<String>, Query, description = "Wait up to this long (at most 60s) for the run to end, e.g. 30s"),
        ),
    },
    responses(
        (status = 200, description = "The run", body = WebhookRun),
        (status = 400, description = "Invalid wait", body = Problem, content_type = PROBLEM),
        (status = 404, description = "No such run", body = Problem, content_type = PROBLEM),
    )
);

admin_path!(
    /// End a run that has not ended as cancelled.
    post "/api/v1/webhook-runs/{id}/cancel", cancel_webhook_run,
    { tag = "webhook-runs", params(("id" = String, Path, description = "Run id")), },
    responses(
        (status = 200, description = "Cancelled", body = WebhookRun),
        (status = 404, description = "No such run", body = Problem, content_type = PROBLEM),
        (status = 409, description = "The run already ended", body = Problem, content_type = PROBLEM),
    )
);

admin_path!(
    /// Start a deployment.
    post "/api/v1/deployments", create_deployment,
    {
        tag = "deployments",
        params(("Idempotency-Key" = Option<String>, Header, description = "A repeat with the same key and body gets the first deployment, marked Idempotent-Replayed")),
        request_body = CreateDeployment,
    },
    responses(
        (status = 201, description = "Started (or replayed)", body = Deployment,
            headers(("Idempotent-Replayed" = bool, description = "true when the Idempotency-Key named an earlier deployment"))),
        (status = 400, description = "Invalid body, file or Idempotency-Key; `errors` lists the file's problems", body = Problem, content_type = PROBLEM),
        (status = 409, description = "A deployment of this application is in progress", body = Problem, content_type = PROBLEM),
        (status = 422, description = "The Idempotency-Key was used with another request", body = Problem, content_type = PROBLEM),
    )
);

admin_path!(
    /// Check a deployment without starting it: each target's calls as they
    /// would be sent (secrets masked), and whether each agent, destination,
    /// secret and metric provider would let them through. Nothing is sent
    /// or stored.
    post "/api/v1/deployments/dry-run", dry_run_deployment,
    { tag = "deployments", request_body = CreateDeployment, },
    responses(
        (status = 200, description = "The plan; `ok` is false when a finding is an error", body = Plan),
        (status = 400, description = "Invalid body or file; `errors` lists the file's problems", body = Problem, content_type = PROBLEM),
    )
);

admin_path!(
    /// The newest deployments.
    get "/api/v1/deployments", list_deployments,
    {
        tag = "deployments",
        params(
            ("state" = Option<DeploymentState>, Query, description = "Only deployments in this state"),
            ("application" = Option<String>, Query, description = "Only deployments of this application"),
            ("limit" = Option<u32>, Query, description = "At most this many (1 to 500; default 100)"),
            ("after" = Option<String>, Query, description = "The page after this one: the `next` of the previous page"),
        ),
    },
    responses(
        (status = 200, description = "Deployments, newest first", body = DeploymentList),
        (status = 400, description = "An invalid state, limit or cursor", body = Problem, content_type = PROBLEM),
    )
);

admin_path!(
    /// One deployment; with `wait`, held until it ends or the wait is over.
    get "/api/v1/deployments/{id}", show_deployment,
    {
        tag = "deployments",
        params(
            ("id" = String, Path, description = "Deployment id"),
            ("wait" = Option<String>, Query, description = "Wait up to this long (at most 60s) for the deployment to end, e.g. 30s"),
        ),
    },
    responses(
        (status = 200, description = "The deployment", body = Deployment),
        (status = 400, description = "Invalid wait", body = Problem, content_type = PROBLEM),
        (status = 404, description = "No such deployment", body = Problem, content_type = PROBLEM),
    )
);

/// The four decisions share their parameters and answers.
macro_rules! decision_path {
    ($(#[$doc:meta])* $path:literal, $name:ident, $conflict:literal) => {
        admin_path!(
            $(#[$doc])*
            post $path, $name,
            {
                tag = "deployments",
                params(
                    ("id" = String, Path, description = "Deployment id"),
                    ("target" = String, Path, description = "Target (environment) name"),
                ),
            },
            responses(
                (status = 200, description = "Decided", body = DecisionTaken),
                (status = 404, description = "No such deployment", body = Problem, content_type = PROBLEM),
                (status = 409, description = $conflict, body = Problem, content_type = PROBLEM),
            )
        );
    };
}

decision_path!(
    /// Approve a target's pending manual approval.
    "/api/v1/deployments/{id}/targets/{target}/approve", approve,
    "No such target, or it is not waiting for approval"
);
decision_path!(
    /// Reject a target's pending manual approval: the target rolls back.
    "/api/v1/deployments/{id}/targets/{target}/reject", reject,
    "No such target, or it is not waiting for approval"
);
decision_path!(
    /// Roll back a target whose analysis step waits for a decision.
    "/api/v1/deployments/{id}/targets/{target}/rollback", rollback,
    "No such target, or it is not waiting for a rollback or continue decision"
);
decision_path!(
    /// Let a target whose analysis step waits for a decision proceed.
    "/api/v1/deployments/{id}/targets/{target}/continue", proceed,
    "No such target, or it is not waiting for a rollback or continue decision"
);

admin_path!(
    /// Stop a running deployment: pending steps and webhook runs in flight
    /// are cancelled, targets that were deploying rolled back (unless
    /// `rollback` is false), and it ends `aborted`. Any replica takes the
    /// request; the reply comes once it is recorded, and the deployment ends
    /// soon after (`GET` it with `?wait=`). Asking again changes nothing.
    post "/api/v1/deployments/{id}/abort", abort_deployment,
    {
        tag = "deployments",
        params(("id" = String, Path, description = "Deployment id")),
        request_body = AbortDeployment,
    },
    responses(
        (status = 202, description = "Asked; `abort` holds the request that stands", body = Deployment),
        (status = 400, description = "Invalid body or reason", body = Problem, content_type = PROBLEM),
        (status = 404, description = "No such deployment", body = Problem, content_type = PROBLEM),
        (status = 409, description = "The deployment has ended", body = Problem, content_type = PROBLEM),
    )
);

admin_path!(
    /// Define a metric provider for analysis steps.
    post "/api/v1/metric-providers", create_metric_provider,
    { tag = "metric-providers", request_body = CreateMetricProvider, },
    responses(
        (status = 201, description = "Created", body = MetricProvider),
        (status = 400, description = "Invalid body, name, type, URL or header", body = Problem, content_type = PROBLEM),
        (status = 409, description = "A provider of this name exists", body = Problem, content_type = PROBLEM),
    )
);

admin_path!(
    /// The metric providers.
    get "/api/v1/metric-providers", list_metric_providers,
    { tag = "metric-providers", },
    responses((status = 200, description = "Providers", body = MetricProviderList),)
);

admin_path!(
    /// Delete a metric provider.
    delete "/api/v1/metric-providers/{name}", delete_metric_provider,
    { tag = "metric-providers", params(("name" = String, Path, description = "Provider name")), },
    responses(
        (status = 200, description = "Deleted", body = MetricProviderDeleted),
        (status = 404, description = "No such provider", body = Problem, content_type = PROBLEM),
    )
);

admin_path!(
    /// Secret names and when they were set; never values.
    get "/api/v1/secrets", list_secrets,
    { tag = "secrets", },
    responses((status = 200, description = "Secrets", body = SecretList),)
);

admin_path!(
    /// Store a secret for `{{secrets.NAME}}`: the body is its value, or with
    /// `Content-Type: application/json` its value and where it may be used.
    put "/api/v1/secrets/{name}", put_secret,
    {
        tag = "secrets",
        params(("name" = String, Path, description = "Secret name")),
        request_body(
            description = "The value (UTF-8, not empty) as text, or as JSON with its uses",
            content(
                (String = "text/plain"),
                (PutSecret = "application/json"),
            ),
        ),
    },
    responses(
        (status = 200, description = "Stored", body = SecretStored),
        (status = 400, description = "Invalid name, an empty or non-UTF-8 value, or an unknown use", body = Problem, content_type = PROBLEM),
    )
);

admin_path!(
    /// Delete a secret.
    delete "/api/v1/secrets/{name}", delete_secret,
    { tag = "secrets", params(("name" = String, Path, description = "Secret name")), },
    responses(
        (status = 200, description = "Deleted", body = SecretDeleted),
        (status = 404, description = "No such secret", body = Problem, content_type = PROBLEM),
    )
);

/// The external system's verdict on a webhook run; needs a callback
/// client's token, not the admin token.
#[utoipa::path(
    post,
    path = "/callbacks/{id}/callback",
    tag = "callbacks",
    security(("callbackToken" = [])),
    params(("id" = String, Path, description = "The run's callback id, from {{armory.callbackUri}}")),
    request_body = CallbackRequest,
    responses(
        (status = 200, description = "Accepted, or a repeat of the verdict already taken", body = CallbackAccepted),
        (status = 400, description = "Not a verdict", body = Problem, content_type = PROBLEM),
        (status = 401, description = "No callback token, an invalid one, or an agent's", body = Problem, content_type = PROBLEM),
        (status = 404, description = "No run has this callback URI", body = Problem, content_type = PROBLEM),
        (status = 409, description = "The run already ended, or a callback decided it otherwise", body = Problem, content_type = PROBLEM),
    )
)]
pub fn callback() {}

/// OAuth 2.0 client credentials (RFC 6749 §4.4), for agents and callback
/// clients. The client is in the form or in HTTP Basic auth.
#[utoipa::path(
    post,
    path = "/oauth/token",
    tag = "oauth",
    security((), ("clientBasic" = [])),
    request_body(content = TokenRequest, content_type = "application/x-www-form-urlencoded"),
    responses(
        (status = 200, description = "A token", body = TokenResponse),
        (status = 400, description = "A missing or unsupported grant, or no client", body = TokenError),
        (status = 401, description = "Unknown client, wrong secret, or a revoked credential", body = TokenError),
        (status = 429, description = "Too many failed authentications from this address; see Retry-After", body = Problem, content_type = PROBLEM,
            headers(("Retry-After" = u64, description = "Seconds to wait"))),
    )
)]
pub fn token() {}

/// Starts a person's sign-in for the CLI: the OAuth device flow at the
/// identity provider (404 when none is set).
#[utoipa::path(
    post,
    path = "/api/v1/login/device",
    tag = "oauth",
    security(()),
    responses(
        (status = 200, description = "The code to show the person, and what to poll with", body = DeviceLogin),
        (status = 404, description = "No identity provider is set", body = Problem, content_type = PROBLEM),
        (status = 502, description = "The identity provider cannot be reached or refused", body = Problem, content_type = PROBLEM),
    )
)]
pub fn start_device_login() {}

/// One poll of a device-flow sign-in: pending, or the person's token.
#[utoipa::path(
    post,
    path = "/api/v1/login/device/token",
    tag = "oauth",
    security(()),
    request_body = DeviceLoginPoll,
    responses(
        (status = 200, description = "Pending, or signed in: the person's token", body = DeviceLoginResult),
        (status = 400, description = "Not a poll", body = Problem, content_type = PROBLEM),
        (status = 401, description = "The provider refused (denied, expired) or its ID token is not acceptable", body = Problem, content_type = PROBLEM),
        (status = 404, description = "No identity provider is set", body = Problem, content_type = PROBLEM),
        (status = 429, description = "Too many failed sign-ins from this address; see Retry-After", body = Problem, content_type = PROBLEM,
            headers(("Retry-After" = u64, description = "Seconds to wait"))),
        (status = 502, description = "The identity provider cannot be reached", body = Problem, content_type = PROBLEM),
    )
)]
pub fn poll_device_login() {}

admin_path!(
    /// Create a team (organization admins only).
    post "/api/v1/teams", create_team,
    { tag = "teams", request_body = CreateTeam, },
    responses(
        (status = 201, description = "Created", body = Team),
        (status = 400, description = "Invalid name", body = Problem, content_type = PROBLEM),
        (status = 409, description = "A team of that name exists", body = Problem, content_type = PROBLEM),
    )
);

admin_path!(
    /// The teams the caller has a role in; every team for an organization admin.
    get "/api/v1/teams", list_teams,
    { tag = "teams", },
    responses((status = 200, description = "By name", body = TeamList),)
);

admin_path!(
    /// Change a team's settings (its admins, or an organization admin).
    patch "/api/v1/teams/{name}", update_team,
    {
        tag = "teams",
        params(("name" = String, Path, description = "The team")),
        request_body = UpdateTeam,
    },
    responses(
        (status = 200, description = "The team as it now is", body = Team),
        (status = 400, description = "An invalid body", body = Problem, content_type = PROBLEM),
        (status = 404, description = "No such team", body = Problem, content_type = PROBLEM),
    )
);

admin_path!(
    /// Give a person or a group a role in a team.
    post "/api/v1/role-bindings", create_role_binding,
    {
        tag = "teams",
        params(("team" = Option<String>, Query, description = "The team (default: the caller's only team, else `default`)")),
        request_body = CreateRoleBinding,
    },
    responses(
        (status = 201, description = "Created", body = RoleBinding),
        (status = 400, description = "An invalid subject, role or team name", body = Problem, content_type = PROBLEM),
        (status = 404, description = "No such team", body = Problem, content_type = PROBLEM),
        (status = 409, description = "The team binds that role to that subject already", body = Problem, content_type = PROBLEM),
    )
);

admin_path!(
    /// A team's role bindings.
    get "/api/v1/role-bindings", list_role_bindings,
    { tag = "teams", params(("team" = Option<String>, Query, description = "The team (default: the caller's only team, else `default`)")), },
    responses(
        (status = 200, description = "By kind, subject and role", body = RoleBindingList),
        (status = 400, description = "An invalid team name", body = Problem, content_type = PROBLEM),
    )
);

admin_path!(
    /// Remove a role binding.
    delete "/api/v1/role-bindings/{id}", delete_role_binding,
    {
        tag = "teams",
        params(
            ("id" = String, Path, description = "Role binding id"),
            ("team" = Option<String>, Query, description = "Its team (default: the caller's only team, else `default`)"),
        ),
    },
    responses(
        (status = 200, description = "Removed", body = RoleBinding),
        (status = 400, description = "An invalid team name", body = Problem, content_type = PROBLEM),
        (status = 404, description = "No such binding in the team", body = Problem, content_type = PROBLEM),
    )
);

admin_path!(
    /// Create a service account with roles in a team; its token is shown once.
    post "/api/v1/service-accounts", create_service_account,
    {
        tag = "teams",
        params(("team" = Option<String>, Query, description = "Its team (default: the caller's only team, else `default`)")),
        request_body = CreateServiceAccount,
    },
    responses(
        (status = 201, description = "Created; `token` is shown this once", body = ServiceAccountCreated),
        (status = 400, description = "Invalid name, role or expiry", body = Problem, content_type = PROBLEM),
        (status = 404, description = "No such team", body = Problem, content_type = PROBLEM),
        (status = 409, description = "The team has a live service account of that name", body = Problem, content_type = PROBLEM),
    )
);

admin_path!(
    /// A team's service accounts, revoked and expired ones included.
    get "/api/v1/service-accounts", list_service_accounts,
    { tag = "teams", params(("team" = Option<String>, Query, description = "The team (default: the caller's only team, else `default`)")), },
    responses(
        (status = 200, description = "By name", body = ServiceAccountList),
        (status = 400, description = "An invalid team name", body = Problem, content_type = PROBLEM),
    )
);

admin_path!(
    /// Revoke a service account: its token stops working at once.
    delete "/api/v1/service-accounts/{id}", revoke_service_account,
    {
        tag = "teams",
        params(
            ("id" = String, Path, description = "Service account id"),
            ("team" = Option<String>, Query, description = "Its team (default: the caller's only team, else `default`)"),
        ),
    },
    responses(
        (status = 200, description = "Revoked", body = ServiceAccount),
        (status = 400, description = "An invalid team name", body = Problem, content_type = PROBLEM),
        (status = 404, description = "No such live service account in the team", body = Problem, content_type = PROBLEM),
    )
);

admin_path!(
    /// The audit trail, newest first: every state-changing request and every
    /// refused authorization. Nothing in the API changes it.
    get "/api/v1/audit", list_audit,
    {
        tag = "audit",
        params(
            ("team" = Option<String>, Query, description = "Only this team's (an organization admin without it sees every team's)"),
            ("actor" = Option<String>, Query, description = "Only this actor's (its id)"),
            ("action" = Option<String>, Query, description = "Only this action (`deployment.create`)"),
            ("since" = Option<String>, Query, description = "From this time (RFC 3339) or this long ago (`24h`)"),
            ("until" = Option<String>, Query, description = "Before this time (RFC 3339) or this long ago"),
            ("limit" = Option<u32>, Query, description = "At most this many (1 to 500; default 100)"),
            ("before" = Option<String>, Query, description = "The page after this one: the `next` of the previous page"),
        ),
    },
    responses(
        (status = 200, description = "Entries, newest first", body = AuditList),
        (status = 400, description = "An invalid filter", body = Problem, content_type = PROBLEM),
    )
);

admin_path!(
    /// The caller's own personal tokens (a person's), revoked and expired
    /// ones included; an organization admin sees every person's with `all=true`.
    get "/api/v1/personal-tokens", list_personal_tokens,
    {
        tag = "people",
        params(
            ("all" = Option<bool>, Query, description = "Every person's (organization admins only)"),
            ("person" = Option<String>, Query, description = "One person's, by subject (organization admins, or one's own)"),
            ("state" = Option<String>, Query, description = "`live`: neither revoked nor expired; `all` (the default): every one"),
        ),
    },
    responses(
        (status = 200, description = "Newest first, at most 500", body = PersonalTokenList),
        (status = 400, description = "An invalid query", body = Problem, content_type = PROBLEM),
    )
);

admin_path!(
    /// Revoke every live personal token of a person at once: one's own, or
    /// (an organization admin) anyone's, for someone who left or whose tokens leaked.
    delete "/api/v1/personal-tokens", revoke_personal_tokens,
    {
        tag = "people",
        params(("person" = Option<String>, Query, description = "Whose, by subject (required for the admin token); default: one's own")),
    },
    responses(
        (status = 200, description = "Revoked", body = PersonalTokensRevoked),
        (status = 400, description = "No person named, or an invalid one", body = Problem, content_type = PROBLEM),
    )
);

admin_path!(
    /// Revoke a personal token: the caller's own, or (an organization admin) anyone's. It stops working at once.
    delete "/api/v1/personal-tokens/{id}", revoke_personal_token,
    { tag = "people", params(("id" = String, Path, description = "The token's id (its first part)")), },
    responses(
        (status = 200, description = "Revoked", body = PersonalToken),
        (status = 404, description = "No live personal token of that id that the caller may revoke", body = Problem, content_type = PROBLEM),
    )
);

/// Liveness.
#[utoipa::path(get, path = "/healthz", tag = "health",
    responses((status = 200, description = "`ok`", body = String, content_type = "text/plain")))]
pub fn healthz() {}

/// Readiness: the store answers and the relay is not draining.
#[utoipa::path(get, path = "/readyz", tag = "health",
    responses(
        (status = 200, description = "`ready`", body = String, content_type = "text/plain"),
        (status = 503, description = "Draining, or the store is unavailable", body = String, content_type = "text/plain"),
    ))]
pub fn readyz() {}

/// Prometheus metrics (OpenMetrics text).
#[utoipa::path(get, path = "/metrics", tag = "health",
    responses((status = 200, description = "Metrics", body = String, content_type = "application/openmetrics-text")))]
pub fn metrics() {}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Borealis relay API",
        description = "The relay's HTTP API. Fields are camelCase, except the OAuth token endpoint's (RFC 6749) and the problem body's (RFC 9457). Errors are application/problem+json.",
    ),
    paths(
        create_agent, list_agents, revoke_agent, create_client, revoke_client, proxy,
        create_webhook_run, dry_run_webhook_run, list_webhook_runs, show_webhook_run, cancel_webhook_run,
        create_deployment, dry_run_deployment, list_deployments, show_deployment, approve, reject, rollback, proceed, abort_deployment,
        create_metric_provider, list_metric_providers, delete_metric_provider,
        list_secrets, put_secret, delete_secret,
        create_team, list_teams, update_team, create_role_binding, list_role_bindings, delete_role_binding,
        create_service_account, list_service_accounts, revoke_service_account, list_audit,
        list_personal_tokens, revoke_personal_token, revoke_personal_tokens,
        callback, token, start_device_login, poll_device_login, healthz, readyz, metrics,
    ),
    modifiers(&SecuritySchemes, &Passthrough),
)]
pub(crate) struct ApiDoc;

/// Marks the proxy as a pass-through, so that a checker of the relay's
/// answers (schemathesis) can tell it from our own routes and leave it out.
struct Passthrough;

impl Modify for Passthrough {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        if let Some(item) = openapi.paths.paths.get_mut("/api/v1/proxy") {
            let marks = utoipa::openapi::extensions::ExtensionsBuilder::new()
                .add("x-borealis-passthrough", serde_json::Value::Bool(true))
                .build();
            item.extensions.get_or_insert_with(Default::default).merge(marks);
        }
    }
}

struct SecuritySchemes;

impl Modify for SecuritySchemes {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        let bearer = |description: &str| {
            let mut http = Http::new(HttpAuthScheme::Bearer);
            http.description = Some(description.to_owned());
            SecurityScheme::Http(http)
        };
        components.add_security_scheme(
            "adminToken",
            bearer("The admin token (<data-dir>/admin-token or BOREALIS_ADMIN_TOKEN), or a service account's token (`bsa_...`), whose roles decide what it may do. On the proxy it may come in Proxy-Authorization instead."),
        );
        components.add_security_scheme(
            "callbackToken",
            bearer(
                "A token from POST /oauth/token with a callback client's credentials (borealis clients create NAME).",
            ),
        );
        let mut basic = Http::new(HttpAuthScheme::Basic);
        basic.description = Some("client_id and client_secret as HTTP Basic credentials".to_owned());
        components.add_security_scheme("clientBasic", SecurityScheme::Http(basic));
    }
}
