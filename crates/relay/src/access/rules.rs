//! Who may do what: the roles, what each grants, and the one table of
//! which route needs which permission. Pure: the HTTP edge looks a request
//! up here and asks [`decide`]; the README shows the same table, and a
//! test holds the two together.

use std::fmt;

/// What a route needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Permission {
    /// See the team's objects.
    Read,
    /// Start deployments and webhook runs, cancel and abort them.
    Deploy,
    /// Approve, reject, roll back and continue.
    Approve,
    /// Agents, secrets, metric providers, callback clients, and the proxy
    /// through the team's agents.
    Operate,
    /// The team's service accounts and its audit trail.
    ManageTeam,
    /// Teams, and everything everywhere, the direct-mode proxy among it.
    Organization,
    /// A person's own personal tokens: any person signed in through the
    /// identity provider has it (an organization admin, for anyone's).
    Own,
}

impl Permission {
    pub fn as_str(self) -> &'static str {
        match self {
            Permission::Read => "read",
            Permission::Deploy => "deploy",
            Permission::Approve => "approve",
            Permission::Operate => "operate",
            Permission::ManageTeam => "manage-team",
            Permission::Organization => "organization",
            Permission::Own => "own",
        }
    }
}

impl fmt::Display for Permission {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A role in a team.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Role {
    Viewer,
    Deployer,
    Approver,
    Operator,
    Admin,
}

impl Role {
    pub const ALL: [Role; 5] = [Role::Viewer, Role::Deployer, Role::Approver, Role::Operator, Role::Admin];

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Viewer => "viewer",
            Role::Deployer => "deployer",
            Role::Approver => "approver",
            Role::Operator => "operator",
            Role::Admin => "admin",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|role| role.as_str() == text)
    }

    /// What the role grants in its team.
    pub fn grants(self) -> &'static [Permission] {
        use Permission::*;
        match self {
            Role::Viewer => &[Read],
            Role::Deployer => &[Read, Deploy],
            Role::Approver => &[Read, Approve],
            Role::Operator => &[Read, Operate],
            Role::Admin => &[Read, Deploy, Approve, Operate, ManageTeam],
        }
    }
}

/// The roles that grant `permission`, for telling a caller what it needs.
pub fn roles_granting(permission: Permission) -> Vec<&'static str> {
    Role::ALL.into_iter().filter(|role| role.grants().contains(&permission)).map(Role::as_str).collect()
}

/// What a route needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Needs {
    Permission(Permission),
    /// The proxy: `operate` through an agent, `organization` direct.
    Proxy,
}

/// One route of the API: its method (`ANY` for every method), its path as
/// the router writes it, what it needs, and its action's name in the audit
/// trail.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rule {
    pub method: &'static str,
    pub path: &'static str,
    pub needs: Needs,
    pub action: &'static str,
}

impl Rule {
    /// What it needs; the proxy's need depends on whether it goes through an agent.
    pub fn permission(&self, through_agent: bool) -> Permission {
        match self.needs {
            Needs::Permission(permission) => permission,
            Needs::Proxy if through_agent => Permission::Operate,
            Needs::Proxy => Permission::Organization,
        }
    }

    /// Whether the team it acts in is the one its path names.
    pub fn team_in_path(&self) -> bool {
        self.path == "/api/v1/teams/{name}"
    }

    /// Whether it reaches a run or a deployment by its id: the object's
    /// team decides, not the caller's.
    pub fn reaches_by_id(&self) -> bool {
        self.path.starts_with("/api/v1/webhook-runs/{id}") || self.path.starts_with("/api/v1/deployments/{id}")
    }
}

const fn rule(method: &'static str, path: &'static str, needs: Permission, action: &'static str) -> Rule {
    Rule { method, path, needs: Needs::Permission(needs), action }
}

use Permission::{Approve, Deploy, ManageTeam, Operate, Organization, Own, Read};

/// Every route behind authentication, and what it needs.
pub const RULES: &[Rule] = &[
    rule("POST", "/api/v1/agents", Operate, "agent.create"),
    rule("GET", "/api/v1/agents", Read, "agent.list"),
    rule("DELETE", "/api/v1/agents/{id}", Operate, "agent.revoke"),
    rule("POST", "/api/v1/clients", Operate, "client.create"),
    rule("DELETE", "/api/v1/clients/{name}", Operate, "client.revoke"),
    Rule { method: "ANY", path: "/api/v1/proxy", needs: Needs::Proxy, action: "proxy" },
    rule("POST", "/api/v1/webhook-runs", Deploy, "run.create"),
    rule("GET", "/api/v1/webhook-runs", Read, "run.list"),
    rule("POST", "/api/v1/webhook-runs/dry-run", Deploy, "run.dry-run"),
    rule("GET", "/api/v1/webhook-runs/{id}", Read, "run.show"),
    rule("POST", "/api/v1/webhook-runs/{id}/cancel", Deploy, "run.cancel"),
    rule("POST", "/api/v1/deployments", Deploy, "deployment.create"),
    rule("GET", "/api/v1/deployments", Read, "deployment.list"),
    rule("POST", "/api/v1/deployments/dry-run", Deploy, "deployment.dry-run"),
    rule("GET", "/api/v1/deployments/{id}", Read, "deployment.show"),
    rule("POST", "/api/v1/deployments/{id}/targets/{target}/approve", Approve, "deployment.approve"),
    rule("POST", "/api/v1/deployments/{id}/targets/{target}/reject", Approve, "deployment.reject"),
    rule("POST", "/api/v1/deployments/{id}/targets/{target}/rollback", Approve, "deployment.rollback"),
    rule("POST", "/api/v1/deployments/{id}/targets/{target}/continue", Approve, "deployment.continue"),
    rule("POST", "/api/v1/deployments/{id}/abort", Deploy, "deployment.abort"),
    rule("POST", "/api/v1/metric-providers", Operate, "provider.create"),
    rule("GET", "/api/v1/metric-providers", Read, "provider.list"),
    rule("DELETE", "/api/v1/metric-providers/{name}", Operate, "provider.delete"),
    rule("GET", "/api/v1/secrets", Read, "secret.list"),
    rule("PUT", "/api/v1/secrets/{name}", Operate, "secret.put"),
    rule("DELETE", "/api/v1/secrets/{name}", Operate, "secret.delete"),
    rule("POST", "/api/v1/teams", Organization, "team.create"),
    rule("GET", "/api/v1/teams", Read, "team.list"),
    rule("PATCH", "/api/v1/teams/{name}", ManageTeam, "team.update"),
    rule("POST", "/api/v1/role-bindings", ManageTeam, "role-binding.create"),
    rule("GET", "/api/v1/role-bindings", ManageTeam, "role-binding.list"),
    rule("DELETE", "/api/v1/role-bindings/{id}", ManageTeam, "role-binding.delete"),
    rule("POST", "/api/v1/service-accounts", ManageTeam, "service-account.create"),
    rule("GET", "/api/v1/service-accounts", ManageTeam, "service-account.list"),
    rule("DELETE", "/api/v1/service-accounts/{id}", ManageTeam, "service-account.revoke"),
    rule("GET", "/api/v1/audit", ManageTeam, "audit.list"),
    rule("GET", "/api/v1/personal-tokens", Own, "personal-token.list"),
    rule("DELETE", "/api/v1/personal-tokens", Own, "personal-token.revoke-all"),
    rule("DELETE", "/api/v1/personal-tokens/{id}", Own, "personal-token.revoke"),
];

/// The rule of a route (its path as the router matched it).
pub fn rule_for(method: &str, path: &str) -> Option<&'static Rule> {
    RULES.iter().find(|r| r.path == path && (r.method == method || r.method == "ANY"))
}

/// The methods the table has for a request's concrete path (`{x}` in a
/// rule's path stands for any one segment).
pub fn methods_for(path: &str) -> Vec<&'static str> {
    let fits = |pattern: &str| {
        let (mut pattern, mut path) = (pattern.split('/'), path.split('/'));
        loop {
            match (pattern.next(), path.next()) {
                (None, None) => return true,
                (Some(p), Some(s)) if p == s || (p.starts_with('{') && !s.is_empty()) => {}
                _ => return false,
            }
        }
    };
    RULES.iter().filter(|r| fits(r.path)).map(|r| r.method).collect()
}

/// Who is asking: the bootstrap admin token (the organization's admin), or
/// an identity with roles in teams.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grants {
    pub organization_admin: bool,
    /// A person (signed in through the identity provider), who has tokens
    /// of their own; a service account or the admin token is not.
    pub person: bool,
    /// (team, role).
    pub roles: Vec<(String, Role)>,
}

impl Grants {
    pub fn organization_admin() -> Self {
        Self { organization_admin: true, person: false, roles: Vec::new() }
    }

    /// The team a request without `?team=` acts in: the caller's only
    /// team, else `default`.
    pub fn default_team(&self) -> &str {
        match self.roles.first() {
            Some((first, _)) if self.roles.iter().all(|(team, _)| team == first) => first,
            _ => borealis_store::DEFAULT_TEAM,
        }
    }

    pub fn allows(&self, permission: Permission, team: &str) -> bool {
        self.organization_admin
            || (permission == Permission::Own && self.person)
            || self.roles.iter().any(|(t, role)| t == team && role.grants().contains(&permission))
    }

    /// Whether it holds `permission` in any team.
    pub fn allows_somewhere(&self, permission: Permission) -> bool {
        self.organization_admin
            || (permission == Permission::Own && self.person)
            || self.roles.iter().any(|(_, role)| role.grants().contains(&permission))
    }

    /// The teams it may read (`None`: every team).
    pub fn readable_teams(&self) -> Option<Vec<String>> {
        if self.organization_admin {
            return None;
        }
        let mut teams: Vec<String> = self.roles.iter().map(|(team, _)| team.clone()).collect();
        teams.dedup();
        Some(teams)
    }
}

/// Why a request was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Forbidden {
    pub permission: Permission,
    /// The team it was needed in; `None`: in any team (an object reached by id).
    pub team: Option<String>,
}

impl fmt::Display for Forbidden {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.permission {
            Permission::Organization => {
                write!(f, "this needs the {} permission: only an organization admin has it", self.permission)
            }
            Permission::Own => write!(
                f,
                "this needs the {} permission: only a person signed in through the identity provider has \
                 personal tokens",
                self.permission
            ),
            permission => {
                let granting = roles_granting(permission).join(", ");
                match &self.team {
                    Some(team) => write!(
                        f,
                        "this needs the {permission} permission in team {team:?} (a role that grants it: {granting})"
                    ),
                    None => write!(f, "this needs the {permission} permission (a role that grants it: {granting})"),
                }
            }
        }
    }
}

/// Whether `grants` may do what `rule` needs in `team`; `through_agent`
/// says whether a proxied request names an agent.
pub fn decide(grants: &Grants, rule: &Rule, team: &str, through_agent: bool) -> Result<Permission, Forbidden> {
    let permission = rule.permission(through_agent);
    if grants.allows(permission, team) {
        Ok(permission)
    } else {
        Err(Forbidden { permission, team: Some(team.to_owned()) })
    }
}

/// Whether `grants` may do what `rule` needs in some team: an object
/// reached by id, whose own team is checked once it is found.
pub fn decide_in_any_team(grants: &Grants, rule: &Rule) -> Result<Permission, Forbidden> {
    let permission = rule.permission(false);
    if grants.allows_somewhere(permission) { Ok(permission) } else { Err(Forbidden { permission, team: None }) }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn of(team: &str, roles: &[Role]) -> Grants {
        Grants {
            organization_admin: false,
            person: false,
            roles: roles.iter().map(|r| (team.to_owned(), *r)).collect(),
        }
    }

    #[test]
    fn each_role_grants_what_it_says_in_its_own_team_only() {
        let approve = rule_for("POST", "/api/v1/deployments/{id}/targets/{target}/approve").unwrap();
        assert!(decide(&of("a", &[Role::Approver]), approve, "a", false).is_ok());
        assert!(decide(&of("a", &[Role::Approver]), approve, "b", false).is_err(), "another team's");
        let refused = decide(&of("a", &[Role::Deployer, Role::Viewer]), approve, "a", false).unwrap_err();
        assert_eq!(
            refused.to_string(),
            "this needs the approve permission in team \"a\" (a role that grants it: approver, admin)"
        );
        assert!(decide(&Grants::organization_admin(), approve, "anything", false).is_ok());
    }

    #[test]
    fn own_tokens_are_a_persons_and_the_organizations() {
        let tokens = rule_for("GET", "/api/v1/personal-tokens").unwrap();
        let person = Grants { person: true, ..of("a", &[]) };
        assert!(decide(&person, tokens, "a", false).is_ok(), "a person with no role has their own tokens");
        let refused = decide(&of("a", &[Role::Admin]), tokens, "a", false).unwrap_err();
        assert!(refused.to_string().starts_with("this needs the own permission: only a person"), "{refused}");
        assert!(decide(&Grants::organization_admin(), tokens, "a", false).is_ok());
    }

    #[test]
    fn the_direct_proxy_is_the_organizations_alone() {
        let proxy = rule_for("PATCH", "/api/v1/proxy").expect("ANY matches every method");
        assert!(decide(&of("a", &[Role::Operator]), proxy, "a", true).is_ok());
        let direct = decide(&of("a", &[Role::Admin]), proxy, "a", false).unwrap_err();
        assert_eq!(direct.permission, Permission::Organization);
        assert!(decide(&Grants::organization_admin(), proxy, "a", false).is_ok());
    }

    #[test]
    fn a_caller_with_one_team_acts_in_it_by_default() {
        assert_eq!(of("payments", &[Role::Viewer, Role::Deployer]).default_team(), "payments");
        let two = Grants {
            organization_admin: false,
            person: false,
            roles: vec![("a".into(), Role::Viewer), ("b".into(), Role::Viewer)],
        };
        assert_eq!(two.default_team(), "default");
        assert_eq!(Grants::organization_admin().default_team(), "default");
    }

    #[test]
    fn a_concrete_path_finds_its_routes_methods() {
        assert_eq!(methods_for("/api/v1/audit"), ["GET"]);
        assert_eq!(methods_for("/api/v1/secrets/token"), ["PUT", "DELETE"]);
        assert_eq!(methods_for("/api/v1/deployments/d1/targets/prod/approve"), ["POST"]);
        assert!(methods_for("/api/v1/secrets/").is_empty(), "a parameter is never empty");
        assert!(methods_for("/api/v1/nothing").is_empty());
    }

    #[test]
    fn every_rule_is_unique_and_named() {
        for (i, rule) in RULES.iter().enumerate() {
            assert!(RULES[..i].iter().all(|r| (r.method, r.path) != (rule.method, rule.path)), "{rule:?} twice");
            assert!(RULES[..i].iter().all(|r| r.action != rule.action), "action {} twice", rule.action);
        }
    }
}
