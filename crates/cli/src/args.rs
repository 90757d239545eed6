//! The command line as clap reads it: what `main` parses and each command
//! takes.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

/// Operate a Borealis relay: agents, credentials, requests through agents.
#[derive(Parser, Debug)]
#[command(name = "borealis", version)]
pub(crate) struct Cli {
    /// The relay's HTTP API.
    #[arg(long, global = true, env = "BOREALIS_RELAY", default_value = "http://127.0.0.1:8080")]
    pub(crate) relay: url::Url,
    /// Admin token [default: read ./borealis-data/admin-token]. A person's
    /// or service account's token in BOREALIS_TOKEN is used before it.
    #[arg(long, global = true, env = "BOREALIS_ADMIN_TOKEN", hide_env_values = true)]
    pub(crate) token: Option<String>,
    /// The team to act in [default: your only team, else `default`].
    #[arg(long, global = true, env = "BOREALIS_TEAM")]
    pub(crate) team: Option<String>,
    /// PEM CA bundle to trust for an https:// relay with a private CA.
    #[arg(long, global = true, env = "BOREALIS_CA_FILE", value_name = "FILE")]
    pub(crate) ca_file: Option<PathBuf>,
    /// Print the relay's JSON instead of a table (with --wait: the end only).
    #[arg(long, global = true)]
    pub(crate) json: bool,
    /// `json`: as --json, and with --wait one JSON object per line as the
    /// deployment or run moves, for CI logs; the last line is its end.
    #[arg(long, global = true, value_enum, value_name = "FORMAT")]
    pub(crate) output: Option<Output>,
    #[command(subcommand)]
    pub(crate) command: Command,
}

/// How replies are printed.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Output {
    Text,
    Json,
}

#[derive(Subcommand, Debug)]
pub(crate) enum Command {
    /// Register, list and revoke agents.
    #[command(subcommand)]
    Agents(AgentsCommand),
    /// Credentials for external systems that call back.
    #[command(subcommand)]
    Clients(ClientsCommand),
    /// Send one request, through an agent or direct, and print the reply.
    Proxy(ProxyArgs),
    /// Secrets for {{secrets.NAME}} placeholders.
    #[command(subcommand)]
    Secrets(SecretsCommand),
    /// Metric providers that analysis steps query.
    #[command(subcommand)]
    Providers(ProvidersCommand),
    /// Run webhooks from a deployment file.
    #[command(subcommand)]
    Webhook(WebhookCommand),
    /// Webhook runs: their state, attempts and messages.
    #[command(subcommand)]
    Runs(RunsCommand),
    /// Sign in as yourself through the identity provider (the device flow:
    /// open the link shown, on any device); the token is kept for this
    /// relay in your config directory (mode 0600) and used from then on.
    Login {
        /// Keep a personal token made in the console (read from standard
        /// input) instead of signing in through the device flow.
        #[arg(long)]
        with_token: bool,
    },
    /// Your personal tokens (an organization admin: everyone's, with --all).
    #[command(subcommand)]
    PersonalTokens(PersonalTokensCommand),
    Logout,
    /// Print a shell's completion script: bash, zsh, fish, elvish or
    /// powershell (e.g. `borealis completions bash > /etc/bash_completion.d/borealis`).
    Completions {
        shell: clap_complete::Shell,
    },
    /// Check a deployment file here, without a relay: every error with its
    /// line:column. Exit 0 when it is valid, 1 when not.
    Validate(ValidateArgs),
    /// Start a deployment. With --wait: exit 0 on success, 1 on failure.
    Deploy(DeployArgs),
    /// Deployments: targets, steps, webhook runs and history.
    #[command(subcommand)]
    Deployments(DeploymentsCommand),
    /// Approve a target's pending manual approval.
    Approve {
        deployment: String,
        target: String,
    },
    /// Reject a target's pending manual approval (the target rolls back).
    Reject {
        deployment: String,
        target: String,
    },
    /// Roll back a target whose analysis step waits for a decision.
    Rollback {
        deployment: String,
        target: String,
    },
    /// Let a target whose analysis step waits for a decision proceed.
    Continue {
        deployment: String,
        target: String,
    },
    /// Stop a running deployment: pending steps and webhook runs are
    /// cancelled, targets that were deploying rolled back. Waits until it
    /// has ended.
    Abort(AbortArgs),
    /// Teams: who owns agents, secrets, providers, runs and deployments.
    #[command(subcommand)]
    Teams(TeamsCommand),
    /// Service accounts: tokens with roles in a team, for CI and automation.
    #[command(subcommand)]
    ServiceAccounts(ServiceAccountsCommand),
    /// Roles in a team for people and groups who sign in through the identity provider.
    #[command(subcommand)]
    RoleBindings(RoleBindingsCommand),
    /// The audit trail: every change and every refused request, newest first.
    Audit(AuditArgs),
}

#[derive(Subcommand, Debug)]
pub(crate) enum TeamsCommand {
    /// Create a team (an organization admin).
    Create { name: String },
    /// The teams you have a role in.
    List,
    /// Change a team's settings (its admins, or the admin token).
    Update {
        name: String,
        /// Whether whoever started a deployment is refused when approving it.
        #[arg(long, value_name = "true|false")]
        forbid_self_approval: Option<bool>,
    },
}

#[derive(Subcommand, Debug)]
pub(crate) enum ServiceAccountsCommand {
    /// Create one in --team with --role (repeatable); its token is printed once.
    Create {
        name: String,
        /// viewer, deployer, approver, operator or admin.
        #[arg(long = "role", required = true)]
        roles: Vec<String>,
        /// How long its token is good for (default 90d, at most 730d).
        #[arg(long)]
        expires_in: Option<String>,
    },
    /// The service accounts of --team.
    List,
    /// Revoke one: its token stops working at once.
    Revoke { id: String },
}

#[derive(Subcommand, Debug)]
pub(crate) enum PersonalTokensCommand {
    /// Yours, newest first, revoked and expired ones included.
    List {
        /// Every person's (organization admins only).
        #[arg(long)]
        all: bool,
        /// One person's, by the identity provider's subject (organization admins only).
        #[arg(long, conflicts_with = "all")]
        person: Option<String>,
        /// Only live ones (neither revoked nor expired).
        #[arg(long)]
        live: bool,
    },
    /// Revoke one: it stops working at once.
    Revoke { id: String },
    /// Revoke every live one of yours, or of --person (organization admins:
    /// someone who left, or whose tokens leaked).
    RevokeAll {
        #[arg(long)]
        person: Option<String>,
    },
}

#[derive(Subcommand, Debug)]
pub(crate) enum RoleBindingsCommand {
    /// Give --user or --group a --role in --team.
    Create {
        /// A person, by the identity provider's subject (`sub`).
        #[arg(long, conflicts_with = "group", required_unless_present = "group")]
        user: Option<String>,
        /// A group the identity provider's groups claim names.
        #[arg(long)]
        group: Option<String>,
        /// viewer, deployer, approver, operator or admin.
        #[arg(long)]
        role: String,
    },
    /// The role bindings of --team.
    List,
    /// Remove one.
    Delete { id: String },
}

#[derive(Args, Debug)]
pub(crate) struct AuditArgs {
    /// From this time (RFC 3339) or this long ago (24h).
    #[arg(long)]
    pub(crate) since: Option<String>,
    /// Before this time (RFC 3339) or this long ago.
    #[arg(long)]
    pub(crate) until: Option<String>,
    /// Only this actor's entries (its id).
    #[arg(long)]
    pub(crate) actor: Option<String>,
    /// Only this action (deployment.create, secret.put, ...).
    #[arg(long)]
    pub(crate) action: Option<String>,
    /// At most this many (1 to 500).
    #[arg(long)]
    pub(crate) limit: Option<u32>,
    /// The page after the one that printed this cursor.
    #[arg(long)]
    pub(crate) before: Option<String>,
}

#[derive(Args, Debug)]
pub(crate) struct AbortArgs {
    /// The deployment's id, or the start of it that names one of the newest.
    pub(crate) deployment: String,
    /// Why, for the deployment's history.
    #[arg(long)]
    pub(crate) reason: Option<String>,
    /// Leave targets that were deploying as they are instead of rolling
    /// them back.
    #[arg(long)]
    pub(crate) no_rollback: bool,
    /// Return once the abort is recorded, without waiting for the end.
    #[arg(long)]
    pub(crate) no_wait: bool,
}

/// A deployment file, and how to read it.
#[derive(Args, Debug)]
pub(crate) struct FileArgs {
    /// The deployment file.
    #[arg(short = 'f', long = "file")]
    pub(crate) file: PathBuf,
    /// Unknown fields in the file are warnings instead of errors (for a
    /// file written for a newer version).
    #[arg(long)]
    pub(crate) allow_unknown_fields: bool,
}

#[derive(Args, Debug)]
pub(crate) struct DeployArgs {
    #[command(flatten)]
    pub(crate) file: FileArgs,
    /// A context value, KEY=VALUE (repeatable).
    #[arg(long = "context", value_name = "KEY=VALUE")]
    pub(crate) context: Vec<String>,
    /// What is deployed, NAME=REFERENCE (repeatable), over the file's
    /// `artifacts`: sent with every action to the target's driver.
    #[arg(long = "artifact", value_name = "NAME=REF")]
    pub(crate) artifacts: Vec<String>,
    /// Wait until the deployment ends.
    #[arg(long)]
    pub(crate) wait: bool,
    /// Start nothing: print each target's calls as they would be sent
    /// (secrets masked) and what would stop them (an agent not connected,
    /// a destination its allow-list refuses, a missing secret or metric
    /// provider). Exits 1 when something would.
    #[arg(long, conflicts_with = "wait")]
    pub(crate) dry_run: bool,
}

#[derive(Args, Debug)]
pub(crate) struct ValidateArgs {
    #[command(flatten)]
    pub(crate) file: FileArgs,
    /// The file is only for `webhook run`: skip what only a deployment
    /// needs (an application, targets that can run).
    #[arg(long)]
    pub(crate) webhooks_only: bool,
}

#[derive(Subcommand, Debug)]
pub(crate) enum DeploymentsCommand {
    /// The newest deployments.
    List {
        /// Only those in this state (running, succeeded, failed, aborted).
        #[arg(long)]
        state: Option<String>,
        /// Only those of this application.
        #[arg(long)]
        application: Option<String>,
        #[command(flatten)]
        page: PageArgs,
    },
    /// One deployment: targets, their steps and webhook runs, and its history.
    Show { id: String },
}

#[derive(Subcommand, Debug)]
pub(crate) enum ProvidersCommand {
    /// Define a metric provider.
    Create(ProviderCreateArgs),
    /// List metric providers.
    List,
    /// Delete a metric provider.
    Delete { name: String },
}

#[derive(Args, Debug)]
pub(crate) struct ProviderCreateArgs {
    pub(crate) name: String,
    /// The provider's type (supported: prometheus).
    #[arg(long = "type")]
    pub(crate) kind: String,
    /// Its base URL, e.g. http://prometheus:9090.
    #[arg(long)]
    pub(crate) url: String,
    /// Query through this agent's tunnel; without it, direct.
    #[arg(long)]
    pub(crate) agent: Option<String>,
    /// A header sent with every query, "Name: value" ({{secrets.NAME}} allowed; repeatable).
    #[arg(long = "header")]
    pub(crate) headers: Vec<String>,
}

/// `--use` of `secrets set`.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum SecretUseArg {
    /// {{secrets.NAME}} in webhooks' URIs, headers and bodies.
    Webhooks,
    /// A key of signing: or of the relay's webhook_signing_secret.
    Signing,
    /// {{secrets.NAME}} in metric providers' headers.
    Providers,
}

impl SecretUseArg {
    pub(crate) fn to_api(self) -> borealis_api::SecretUse {
        match self {
            SecretUseArg::Webhooks => borealis_api::SecretUse::Webhooks,
            SecretUseArg::Signing => borealis_api::SecretUse::Signing,
            SecretUseArg::Providers => borealis_api::SecretUse::Providers,
        }
    }

    pub(crate) fn from_api(use_: borealis_api::SecretUse) -> Self {
        match use_ {
            borealis_api::SecretUse::Webhooks => SecretUseArg::Webhooks,
            borealis_api::SecretUse::Signing => SecretUseArg::Signing,
            borealis_api::SecretUse::Providers => SecretUseArg::Providers,
        }
    }

    pub(crate) fn name(self) -> &'static str {
        match self {
            SecretUseArg::Webhooks => "webhooks",
            SecretUseArg::Signing => "signing",
            SecretUseArg::Providers => "providers",
        }
    }
}

#[derive(Subcommand, Debug)]
pub(crate) enum SecretsCommand {
    /// Store a secret; the value is read from standard input.
    Set {
        name: String,
        /// Where it may be used (repeatable). Without: webhooks for a new
        /// secret, and a replaced one keeps its uses. The relay's own
        /// signing key is never readable by a file, whatever its uses.
        #[arg(long = "use", value_enum)]
        uses: Vec<SecretUseArg>,
    },
    /// List secret names (never values).
    List,
    /// Delete a secret.
    Delete { name: String },
}

#[derive(Subcommand, Debug)]
pub(crate) enum WebhookCommand {
    /// Start a webhook run. With --wait: exit 0 on success, 1 on failure or timeout.
    Run(WebhookRunArgs),
}

#[derive(Args, Debug)]
pub(crate) struct WebhookRunArgs {
    #[command(flatten)]
    pub(crate) file: FileArgs,
    /// The webhook's name.
    #[arg(long)]
    pub(crate) name: String,
    /// The target (environment) whose account, namespace and context apply.
    #[arg(long)]
    pub(crate) environment: Option<String>,
    /// A context value, KEY=VALUE (repeatable).
    #[arg(long = "context", value_name = "KEY=VALUE")]
    pub(crate) context: Vec<String>,
    /// Wait until the run ends and print its message.
    #[arg(long)]
    pub(crate) wait: bool,
    /// Start nothing: print the call as it would be sent (secrets masked)
    /// and what would stop it. Exits 1 when something would.
    #[arg(long, conflicts_with = "wait")]
    pub(crate) dry_run: bool,
}

#[derive(Subcommand, Debug)]
pub(crate) enum RunsCommand {
    /// The newest webhook runs.
    List {
        /// Only those in this state (pending, calling, awaiting_callback, succeeded, failed, timed_out, cancelled).
        #[arg(long)]
        state: Option<String>,
        /// Only those of this webhook.
        #[arg(long)]
        webhook: Option<String>,
        #[command(flatten)]
        page: PageArgs,
    },
    /// One run with its attempts.
    Show { id: String },
    /// Cancel a run that has not ended.
    Cancel { id: String },
}

#[derive(Subcommand, Debug)]
pub(crate) enum AgentsCommand {
    /// Register an agent identifier; prints its client id and secret, once.
    Create { id: String },
    /// Show agents and their connected instances.
    List,
    /// Revoke an agent's credentials and disconnect its instances.
    Revoke { id: String },
}

#[derive(Subcommand, Debug)]
pub(crate) enum ClientsCommand {
    /// Create credentials for an external system's callbacks; printed once.
    Create { name: String },
    /// Revoke a callback client: its tokens are refused from now on.
    Revoke { name: String },
}

#[derive(Args, Debug)]
pub(crate) struct ProxyArgs {
    /// Send through this agent (remote network); without it, direct.
    #[arg(long)]
    pub(crate) agent: Option<String>,
    /// HTTP method.
    #[arg(short = 'X', long = "request", default_value = "GET")]
    pub(crate) method: String,
    /// Request body; @FILE reads a file, @- reads stdin.
    #[arg(short = 'd', long = "data")]
    pub(crate) data: Option<String>,
    /// A request header, "Name: value" (repeatable).
    #[arg(short = 'H', long = "header")]
    pub(crate) headers: Vec<String>,
    /// Print the status line and headers before the body.
    #[arg(short = 'i', long = "include")]
    pub(crate) include: bool,
    /// Time limit for the whole request, e.g. 30s.
    #[arg(long)]
    pub(crate) timeout: Option<String>,
    /// The destination URL.
    pub(crate) url: String,
}

/// One page of a list.
#[derive(Args, Debug)]
pub(crate) struct PageArgs {
    /// At most this many (1 to 500).
    #[arg(long)]
    pub(crate) limit: Option<u32>,
    /// The page after the one that printed this cursor.
    #[arg(long)]
    pub(crate) after: Option<String>,
}

impl PageArgs {
    /// The list's query string: `filters` (name, value) then the page.
    pub(crate) fn query(&self, filters: &[(&str, Option<&String>)]) -> String {
        let limit = self.limit.map(|l| l.to_string());
        let pairs = filters.iter().copied().chain([("limit", limit.as_ref()), ("after", self.after.as_ref())]);
        let mut query = url::form_urlencoded::Serializer::new(String::new());
        for (name, value) in pairs {
            if let Some(value) = value {
                query.append_pair(name, value);
            }
        }
        query.finish()
    }
}
