//! `teams`, `service-accounts`, `role-bindings`, `personal-tokens` and `audit`.

use borealis_api::{
    AuditList, BindingKind, CreateRoleBinding, CreateServiceAccount, CreateTeam, PersonalToken, PersonalTokenList,
    PersonalTokensRevoked, RoleBinding, RoleBindingList, ServiceAccount, ServiceAccountCreated, ServiceAccountList,
    Team, TeamList, UpdateTeam,
};

use crate::args::{AuditArgs, PersonalTokensCommand, RoleBindingsCommand, ServiceAccountsCommand, TeamsCommand};
use crate::client::{Failure, Relay, urlencode};
use crate::render;

pub async fn teams(relay: &Relay, json: bool, command: &TeamsCommand) -> Result<(), Failure> {
    match command {
        TeamsCommand::Create { name } => {
            let team: Team = relay.post("/api/v1/teams", &CreateTeam { name: name.clone() }).await?;
            if json { render::json(&team) } else { say!("team {} created", team.name) }
        }
        TeamsCommand::List => {
            let list: TeamList = relay.get("/api/v1/teams").await?;
            if json {
                render::json(&list);
            } else {
                let mut rows = vec![["TEAM", "CREATED", "SELF-APPROVAL"].map(String::from)];
                rows.extend(list.teams.iter().map(|t| [t.name.clone(), t.created_at.clone(), self_approval(t).into()]));
                render::table(rows);
            }
        }
        TeamsCommand::Update { name, forbid_self_approval } => {
            let body = UpdateTeam { forbid_self_approval: *forbid_self_approval };
            let team: Team = relay.patch(&format!("/api/v1/teams/{}", urlencode(name)), &body).await?;
            if json { render::json(&team) } else { say!("team {}: self-approval {}", team.name, self_approval(&team)) }
        }
    }
    Ok(())
}

fn self_approval(team: &Team) -> &'static str {
    if team.forbid_self_approval { "forbidden" } else { "allowed" }
}

pub async fn service_accounts(relay: &Relay, json: bool, command: &ServiceAccountsCommand) -> Result<(), Failure> {
    match command {
        ServiceAccountsCommand::Create { name, roles, expires_in } => {
            let body =
                CreateServiceAccount { name: name.clone(), roles: roles.clone(), expires_in: expires_in.clone() };
            let created: ServiceAccountCreated = relay.post("/api/v1/service-accounts", &body).await?;
            if json {
                render::json(&created);
            } else {
                let account = &created.account;
                let roles = account.roles.join(", ");
                let expires = account.expires_at.clone().unwrap_or_default();
                render::credentials(&[
                    ("id", &account.id),
                    ("team", &account.team),
                    ("name", &account.name),
                    ("roles", &roles),
                    ("expires", &expires),
                    ("token", &created.token),
                ]);
            }
        }
        ServiceAccountsCommand::List => {
            let list: ServiceAccountList = relay.get("/api/v1/service-accounts").await?;
            if json {
                render::json(&list);
            } else {
                let mut rows = vec![["ID", "TEAM", "NAME", "ROLES", "EXPIRES", "REVOKED"].map(String::from)];
                rows.extend(list.service_accounts.iter().map(|a| {
                    [
                        a.id.clone(),
                        a.team.clone(),
                        a.name.clone(),
                        a.roles.join(","),
                        a.expires_at.clone().unwrap_or_else(|| "-".into()),
                        a.revoked_at.clone().unwrap_or_else(|| "-".into()),
                    ]
                }));
                render::table(rows);
            }
        }
        ServiceAccountsCommand::Revoke { id } => {
            let account: ServiceAccount = relay.delete(&format!("/api/v1/service-accounts/{}", urlencode(id))).await?;
            if json {
                render::json(&account);
            } else {
                say!("revoked service account {} ({}); its token is refused from now on", account.name, account.id);
            }
        }
    }
    Ok(())
}

pub async fn role_bindings(relay: &Relay, json: bool, command: &RoleBindingsCommand) -> Result<(), Failure> {
    match command {
        RoleBindingsCommand::Create { user, group, role } => {
            let (kind, subject) = match (user, group) {
                (Some(user), _) => (BindingKind::User, user.clone()),
                (None, Some(group)) => (BindingKind::Group, group.clone()),
                (None, None) => unreachable!("clap requires --user or --group"),
            };
            let body = CreateRoleBinding { kind, subject, role: role.clone() };
            let binding: RoleBinding = relay.post("/api/v1/role-bindings", &body).await?;
            if json {
                render::json(&binding)
            } else {
                say!(
                    "{} {} is {} in team {} ({})",
                    kind_of(&binding),
                    binding.subject,
                    binding.role,
                    binding.team,
                    binding.id
                )
            }
        }
        RoleBindingsCommand::List => {
            let list: RoleBindingList = relay.get("/api/v1/role-bindings").await?;
            if json {
                render::json(&list);
            } else {
                let mut rows = vec![["ID", "TEAM", "KIND", "SUBJECT", "ROLE"].map(String::from)];
                rows.extend(
                    list.role_bindings
                        .iter()
                        .map(|b| [b.id.clone(), b.team.clone(), kind_of(b).into(), b.subject.clone(), b.role.clone()]),
                );
                render::table(rows);
            }
        }
        RoleBindingsCommand::Delete { id } => {
            let binding: RoleBinding = relay.delete(&format!("/api/v1/role-bindings/{}", urlencode(id))).await?;
            if json { render::json(&binding) } else { say!("removed role binding {}", binding.id) }
        }
    }
    Ok(())
}

fn kind_of(binding: &RoleBinding) -> &'static str {
    match binding.kind {
        BindingKind::User => "user",
        BindingKind::Group => "group",
    }
}

pub async fn audit(relay: &Relay, json: bool, args: &AuditArgs) -> Result<(), Failure> {
    let limit = args.limit.map(|l| l.to_string());
    let filters = [
        ("since", args.since.as_ref()),
        ("until", args.until.as_ref()),
        ("actor", args.actor.as_ref()),
        ("action", args.action.as_ref()),
        ("limit", limit.as_ref()),
        ("before", args.before.as_ref()),
    ];
    let mut query = url::form_urlencoded::Serializer::new(String::new());
    for (name, value) in filters {
        if let Some(value) = value {
            query.append_pair(name, value);
        }
    }
    let list: AuditList = relay.get(&format!("/api/v1/audit?{}", query.finish())).await?;
    if json {
        render::json(&list);
    } else {
        let mut rows = vec![["TIME", "ACTOR", "TEAM", "ACTION", "OBJECT", "OUTCOME"].map(String::from)];
        rows.extend(list.entries.iter().map(|e| {
            [
                e.time.clone(),
                format!("{} {}", e.actor.kind, e.actor.name),
                e.team.clone().unwrap_or_else(|| "-".into()),
                e.action.clone(),
                e.object.clone(),
                format!("{} {}", e.outcome, e.status),
            ]
        }));
        render::table(rows);
    }
    if let Some(before) = &list.next {
        eprintln!("older ones: add --before {before}");
    }
    Ok(())
}

pub async fn personal_tokens(relay: &Relay, json: bool, command: &PersonalTokensCommand) -> Result<(), Failure> {
    match command {
        PersonalTokensCommand::List { all, person, live } => {
            let mut query = url::form_urlencoded::Serializer::new(String::new());
            if *all {
                query.append_pair("all", "true");
            }
            if let Some(person) = person {
                query.append_pair("person", person);
            }
            if *live {
                query.append_pair("state", "live");
            }
            let list: PersonalTokenList = relay.get(&format!("/api/v1/personal-tokens?{}", query.finish())).await?;
            if json {
                render::json(&list);
            } else {
                let mut rows = vec![["ID", "PERSON", "DESCRIPTION", "STATE", "EXPIRES"].map(String::from)];
                rows.extend(list.personal_tokens.iter().map(|t| {
                    [t.id.clone(), t.person.name.clone(), t.description.clone(), t.state.clone(), t.expires_at.clone()]
                }));
                render::table(rows);
            }
        }
        PersonalTokensCommand::Revoke { id } => {
            let token: PersonalToken = relay.delete(&format!("/api/v1/personal-tokens/{}", urlencode(id))).await?;
            if json {
                render::json(&token);
            } else {
                say!("revoked personal token {} ({}) of {}", token.id, token.description, token.person.name);
            }
        }
        PersonalTokensCommand::RevokeAll { person } => {
            let path = match person {
                Some(person) => format!("/api/v1/personal-tokens?person={}", urlencode(person)),
                None => "/api/v1/personal-tokens".to_owned(),
            };
            let revoked: PersonalTokensRevoked = relay.delete(&path).await?;
            if json {
                render::json(&revoked);
            } else {
                say!("revoked {} live personal token(s) of {}", revoked.revoked, revoked.person);
            }
        }
    }
    Ok(())
}
