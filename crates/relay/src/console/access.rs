//! What each console page needs, in the same permissions the API's table
//! uses: in the operator's team, or in the team of the deployment or run the
//! page names. A deployment or run of a team the operator cannot read is
//! answered as one that does not exist.

use axum::http::{Method, StatusCode};

use super::page::{Failure, Operator};
use crate::access::rules::{Forbidden, Permission};
use crate::http::problem::Problem;
use crate::state::AppState;

/// Whose team a page acts in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Scope {
    /// The operator's team.
    Team,
    /// The team of the deployment its path names.
    Deployment,
    /// The team of the run its path names.
    Run,
}

/// What the page at `route` needs, for `method`; `None`: anyone signed in.
fn needs(method: &Method, route: &str) -> Option<(Permission, Scope)> {
    use Permission::{Approve, Deploy, ManageTeam, Operate, Read};
    let reads = method == Method::GET || method == Method::HEAD;
    let read_or = |change: Permission| if reads { Read } else { change };
    Some(match route {
        "/" | "/sign-out" => return None,
        "/agents" => (read_or(Operate), Scope::Team),
        "/agents/{id}/revoke" | "/providers/{name}/delete" | "/secrets/{name}/delete" | "/clients/{name}/revoke" => {
            (Operate, Scope::Team)
        }
        "/providers" | "/secrets" | "/clients" => (read_or(Operate), Scope::Team),
        "/deployments" | "/runs" => (Read, Scope::Team),
        "/deployments/{id}" | "/deployments/{id}/live" => (Read, Scope::Deployment),
        "/deployments/{id}/targets/{target}/{decision}" => (Approve, Scope::Deployment),
        "/deployments/{id}/abort" => (Deploy, Scope::Deployment),
        "/runs/{id}" => (Read, Scope::Run),
        "/runs/{id}/cancel" => (Deploy, Scope::Run),
        "/audit" => (ManageTeam, Scope::Team),
        "/tokens" | "/tokens/{id}/revoke" => (Permission::Own, Scope::Team),
        // A page without an entry is no one's.
        _ => (Permission::Organization, Scope::Team),
    })
}

/// Whether the page at `route` acts in the operator's team (a person's own
/// tokens are no team's).
pub(super) fn acts_in_team(method: &Method, route: Option<&str>) -> bool {
    needs(method, route.unwrap_or_default()).is_none_or(|(permission, _)| permission != Permission::Own)
}

/// Lets the request through if `operator` may do what its page does.
pub(super) async fn check(
    state: &AppState,
    operator: &Operator,
    route: Option<&str>,
    (method, path): (&Method, &str),
) -> Result<(), Failure> {
    let grants = &operator.principal.grants;
    if grants.organization_admin {
        return Ok(());
    }
    let Some((permission, scope)) = needs(method, route.unwrap_or_default()) else { return Ok(()) };
    let id = path.split('/').nth(2).unwrap_or_default();
    let team = match scope {
        Scope::Team => operator.team.clone(),
        Scope::Deployment => match state.deployments.record(id).await {
            Ok(record) => record.team,
            // An unknown one is the page's to say.
            Err(_) => return Ok(()),
        },
        Scope::Run => match state.runs.record(id).await {
            Ok(run) => run.team,
            Err(_) => return Ok(()),
        },
    };
    if grants.allows(permission, &team) {
        return Ok(());
    }
    if scope != Scope::Team && !grants.allows(Permission::Read, &team) {
        let what = if scope == Scope::Deployment { "deployment" } else { "webhook run" };
        return Err(Failure(Problem::new(StatusCode::NOT_FOUND, "not-found", format!("no {what} {id:?}"))));
    }
    let forbidden = Forbidden { permission, team: Some(team) };
    let detail = format!("{forbidden}; {} does not hold it", operator.principal.actor.name);
    Err(Failure(Problem::new(StatusCode::FORBIDDEN, "forbidden", detail)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reading_a_page_needs_read_and_its_form_the_actions_permission() {
        assert_eq!(needs(&Method::GET, "/secrets"), Some((Permission::Read, Scope::Team)));
        assert_eq!(needs(&Method::POST, "/secrets"), Some((Permission::Operate, Scope::Team)));
        assert_eq!(
            needs(&Method::POST, "/deployments/{id}/targets/{target}/{decision}"),
            Some((Permission::Approve, Scope::Deployment))
        );
        assert_eq!(needs(&Method::GET, "/agents/{id}/revoke"), Some((Permission::Operate, Scope::Team)));
        assert_eq!(needs(&Method::GET, "/nowhere"), Some((Permission::Organization, Scope::Team)), "fails closed");
        assert_eq!(needs(&Method::POST, "/sign-out"), None);
    }
}
