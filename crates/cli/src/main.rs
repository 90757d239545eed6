//! `borealis`: the operator CLI. Every command is one or two calls to the
//! relay's HTTP API; the relay does the work.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};
use futures_util::StreamExt;
use serde_json::Value;

/// Operate a Borealis relay: agents, credentials, requests through agents.
#[derive(Parser, Debug)]
#[command(name = "borealis", version)]
struct Cli {
    /// The relay's HTTP API.
    #[arg(long, global = true, env = "BOREALIS_RELAY", default_value = "http://127.0.0.1:8080")]
    relay: url::Url,
    /// Admin token [default: read ./borealis-data/admin-token].
    #[arg(long, global = true, env = "BOREALIS_ADMIN_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// PEM CA bundle to trust for an https:// relay with a private CA.
    #[arg(long, global = true, env = "BOREALIS_CA_FILE", value_name = "FILE")]
    ca_file: Option<PathBuf>,
    /// Print the relay's JSON instead of a table.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
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
    /// Start a deployment. With --wait: exit 0 on success, 1 on failure.
    Deploy(DeployArgs),
    /// Deployments: targets, steps, webhook runs and history.
    #[command(subcommand)]
    Deployments(DeploymentsCommand),
    /// Approve a target's pending manual approval.
    Approve { deployment: String, target: String },
    /// Reject a target's pending manual approval (the target rolls back).
    Reject { deployment: String, target: String },
    /// Roll back a target whose analysis step waits for a decision.
    Rollback { deployment: String, target: String },
    /// Let a target whose analysis step waits for a decision proceed.
    Continue { deployment: String, target: String },
}

#[derive(Args, Debug)]
struct DeployArgs {
    /// The deployment file.
    #[arg(short = 'f', long = "file")]
    file: PathBuf,
    /// A context value, KEY=VALUE (repeatable).
    #[arg(long = "context", value_name = "KEY=VALUE")]
    context: Vec<String>,
    /// Wait until the deployment ends.
    #[arg(long)]
    wait: bool,
}

#[derive(Subcommand, Debug)]
enum DeploymentsCommand {
    /// The newest deployments.
    List,
    /// One deployment: targets, their steps and webhook runs, and its history.
    Show { id: String },
}

#[derive(Subcommand, Debug)]
enum ProvidersCommand {
    /// Define a metric provider.
    Create(ProviderCreateArgs),
    /// List metric providers.
    List,
    /// Delete a metric provider.
    Delete { name: String },
}

#[derive(Args, Debug)]
struct ProviderCreateArgs {
    name: String,
    /// The provider's type (supported: prometheus).
    #[arg(long = "type")]
    kind: String,
    /// Its base URL, e.g. http://prometheus:9090.
    #[arg(long)]
    url: String,
    /// Query through this agent's tunnel; without it, direct.
    #[arg(long)]
    agent: Option<String>,
    /// A header sent with every query, "Name: value" ({{secrets.NAME}} allowed; repeatable).
    #[arg(long = "header")]
    headers: Vec<String>,
}

#[derive(Subcommand, Debug)]
enum SecretsCommand {
    /// Store a secret; the value is read from standard input.
    Set { name: String },
    /// List secret names (never values).
    List,
    /// Delete a secret.
    Delete { name: String },
}

#[derive(Subcommand, Debug)]
enum WebhookCommand {
    /// Start a webhook run. With --wait: exit 0 on success, 1 on failure or timeout.
    Run(WebhookRunArgs),
}

#[derive(Args, Debug)]
struct WebhookRunArgs {
    /// The deployment file.
    #[arg(short = 'f', long = "file")]
    file: PathBuf,
    /// The webhook's name.
    #[arg(long)]
    name: String,
    /// The target (environment) whose account, namespace and context apply.
    #[arg(long)]
    environment: Option<String>,
    /// A context value, KEY=VALUE (repeatable).
    #[arg(long = "context", value_name = "KEY=VALUE")]
    context: Vec<String>,
    /// Wait until the run ends and print its message.
    #[arg(long)]
    wait: bool,
}

#[derive(Subcommand, Debug)]
enum RunsCommand {
    /// The newest webhook runs.
    List,
    /// One run with its attempts.
    Show { id: String },
    /// Cancel a run that has not ended.
    Cancel { id: String },
}

#[derive(Subcommand, Debug)]
enum AgentsCommand {
    /// Register an agent identifier; prints its client id and secret, once.
    Create { id: String },
    /// Show agents and their connected instances.
    List,
    /// Revoke an agent's credentials and disconnect its instances.
    Revoke { id: String },
}

#[derive(Subcommand, Debug)]
enum ClientsCommand {
    /// Create credentials for an external system's callbacks; printed once.
    Create { name: String },
    /// Revoke a callback client: its tokens are refused from now on.
    Revoke { name: String },
}

#[derive(Args, Debug)]
struct ProxyArgs {
    /// Send through this agent (remote network); without it, direct.
    #[arg(long)]
    agent: Option<String>,
    /// HTTP method.
    #[arg(short = 'X', long = "request", default_value = "GET")]
    method: String,
    /// Request body; @FILE reads a file, @- reads stdin.
    #[arg(short = 'd', long = "data")]
    data: Option<String>,
    /// A request header, "Name: value" (repeatable).
    #[arg(short = 'H', long = "header")]
    headers: Vec<String>,
    /// Print the status line and headers before the body.
    #[arg(short = 'i', long = "include")]
    include: bool,
    /// Time limit for the whole request, e.g. 30s.
    #[arg(long)]
    timeout: Option<String>,
    /// The destination URL.
    url: String,
}

/// A failure, with the exit code it deserves: 1 failed, 2 bad input.
struct Failure {
    code: u8,
    message: String,
}

impl Failure {
    fn failed(message: impl Into<String>) -> Self {
        Self { code: 1, message: message.into() }
    }

    fn bad_input(message: impl Into<String>) -> Self {
        Self { code: 2, message: message.into() }
    }
}

struct Relay {
    http: reqwest::Client,
    base: url::Url,
    token: String,
}

impl Relay {
    fn new(cli: &Cli) -> Result<Self, Failure> {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let token = match &cli.token {
            Some(token) => token.clone(),
            None => std::fs::read_to_string("borealis-data/admin-token").map(|t| t.trim().to_owned()).map_err(|_| {
                Failure::bad_input(
                    "no admin token: pass --token, set BOREALIS_ADMIN_TOKEN, or run where ./borealis-data/admin-token is",
                )
            })?,
        };
        let mut builder = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none());
        if let Some(path) = &cli.ca_file {
            let pem =
                std::fs::read(path).map_err(|e| Failure::bad_input(format!("--ca-file {}: {e}", path.display())))?;
            let certs = reqwest::Certificate::from_pem_bundle(&pem)
                .map_err(|e| Failure::bad_input(format!("--ca-file {}: {e}", path.display())))?;
            builder = builder.tls_certs_only(certs);
        }
        let http = builder.build().map_err(|e| Failure::failed(format!("HTTP client: {e}")))?;
        Ok(Self { http, base: cli.relay.clone(), token })
    }

    /// The relay's URL for `path`, which may carry a `?query`.
    fn url(&self, path: &str) -> url::Url {
        let (path, query) = path.split_once('?').map_or((path, None), |(p, q)| (p, Some(q)));
        let mut url = self.base.clone();
        let base_path = url.path().trim_end_matches('/').to_owned();
        url.set_path(&format!("{base_path}{path}"));
        url.set_query(query);
        url
    }

    fn unreachable(&self, err: reqwest::Error) -> Failure {
        let mut cause: &dyn std::error::Error = &err;
        while let Some(next) = cause.source() {
            cause = next;
        }
        Failure::failed(format!("cannot reach the relay at {}: {cause}", self.base))
    }

    async fn call(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Result<Value, Failure> {
        let mut request = self.http.request(method, self.url(path)).bearer_auth(&self.token);
        if let Some(body) = body {
            request = request.json(&body);
        }
        self.send(request).await
    }

    /// GETs `path` with a long poll until `finished` says so.
    async fn wait_until_finished(&self, path: &str, finished: impl Fn(&Value) -> bool) -> Result<Value, Failure> {
        let path = format!("{path}?wait=30s");
        loop {
            let current = self.call(reqwest::Method::GET, &path, None).await?;
            if finished(&current) {
                return Ok(current);
            }
        }
    }

    async fn send(&self, request: reqwest::RequestBuilder) -> Result<Value, Failure> {
        let response = request.send().await.map_err(|e| self.unreachable(e))?;
        let status = response.status();
        let bytes = response.bytes().await.map_err(|e| self.unreachable(e))?;
        if status.is_success() {
            return serde_json::from_slice(&bytes)
                .map_err(|e| Failure::failed(format!("the relay sent invalid JSON: {e}")));
        }
        Err(problem_failure(status, &bytes))
    }
}

/// Turns a problem+json reply into a failure; 400-class input errors exit 2.
fn problem_failure(status: reqwest::StatusCode, body: &[u8]) -> Failure {
    let detail = serde_json::from_slice::<Value>(body)
        .ok()
        .and_then(|v| v.get("detail").and_then(Value::as_str).map(str::to_owned))
        .unwrap_or_else(|| String::from_utf8_lossy(body).trim().to_owned());
    let message = format!("{detail} ({status})");
    match status.as_u16() {
        400 | 404 | 409 | 413 | 422 => Failure::bad_input(message),
        _ => Failure::failed(message),
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(&cli).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(failure) => {
            eprintln!("borealis: {}", failure.message);
            ExitCode::from(failure.code)
        }
    }
}

async fn run(cli: &Cli) -> Result<(), Failure> {
    let relay = Relay::new(cli)?;
    match &cli.command {
        Command::Agents(AgentsCommand::Create { id }) => {
            let reply =
                relay.call(reqwest::Method::POST, "/api/v1/agents", Some(serde_json::json!({ "id": id }))).await?;
            print_credentials(cli.json, &reply, &["agent_id", "client_id", "client_secret"]);
        }
        Command::Agents(AgentsCommand::List) => {
            let reply = relay.call(reqwest::Method::GET, "/api/v1/agents", None).await?;
            if cli.json {
                println!("{reply:#}");
            } else {
                print_agents(&reply);
            }
        }
        Command::Agents(AgentsCommand::Revoke { id }) => {
            let path = format!("/api/v1/agents/{}", urlencode(id));
            let reply = relay.call(reqwest::Method::DELETE, &path, None).await?;
            if cli.json {
                println!("{reply:#}");
            } else {
                println!("revoked agent {id}; {} live session(s) closed", reply["sessions_closed"]);
            }
        }
        Command::Clients(ClientsCommand::Create { name }) => {
            let reply =
                relay.call(reqwest::Method::POST, "/api/v1/clients", Some(serde_json::json!({ "name": name }))).await?;
            print_credentials(cli.json, &reply, &["name", "client_id", "client_secret"]);
        }
        Command::Clients(ClientsCommand::Revoke { name }) => {
            let path = format!("/api/v1/clients/{}", urlencode(name));
            let reply = relay.call(reqwest::Method::DELETE, &path, None).await?;
            if cli.json {
                println!("{reply:#}");
            } else {
                println!("revoked callback client {name}; its tokens are refused from now on");
            }
        }
        Command::Proxy(args) => proxy(&relay, args).await?,
        Command::Secrets(SecretsCommand::Set { name }) => {
            let mut value = String::new();
            std::io::Read::read_to_string(&mut std::io::stdin(), &mut value)
                .map_err(|e| Failure::bad_input(format!("reading the secret from stdin: {e}")))?;
            let value = value.strip_suffix('\n').map(|v| v.strip_suffix('\r').unwrap_or(v)).unwrap_or(&value);
            if value.is_empty() {
                return Err(Failure::bad_input(
                    "no secret value on standard input (try: printf %s VALUE | borealis secrets set NAME)",
                ));
            }
            let path = format!("/api/v1/secrets/{}", urlencode(name));
            let request = relay.http.put(relay.url(&path)).bearer_auth(&relay.token).body(value.to_owned());
            relay.send(request).await?;
            println!("stored secret {name}");
        }
        Command::Secrets(SecretsCommand::List) => {
            let reply = relay.call(reqwest::Method::GET, "/api/v1/secrets", None).await?;
            if cli.json {
                println!("{reply:#}");
            } else {
                for secret in reply["secrets"].as_array().into_iter().flatten() {
                    println!(
                        "{}  {}",
                        secret["name"].as_str().unwrap_or_default(),
                        secret["updatedAt"].as_str().unwrap_or_default()
                    );
                }
            }
        }
        Command::Secrets(SecretsCommand::Delete { name }) => {
            relay.call(reqwest::Method::DELETE, &format!("/api/v1/secrets/{}", urlencode(name)), None).await?;
            println!("deleted secret {name}");
        }
        Command::Providers(ProvidersCommand::Create(args)) => {
            let mut headers = Vec::new();
            for header in &args.headers {
                let (key, value) = header
                    .split_once(':')
                    .ok_or_else(|| Failure::bad_input(format!("--header {header:?}: expected \"Name: value\"")))?;
                headers.push(serde_json::json!({ "key": key.trim(), "value": value.trim() }));
            }
            let body = serde_json::json!({
                "name": args.name,
                "type": args.kind,
                "url": args.url,
                "agent": args.agent,
                "headers": headers,
            });
            let reply = relay.call(reqwest::Method::POST, "/api/v1/metric-providers", Some(body)).await?;
            if cli.json {
                println!("{reply:#}");
            } else {
                let via = args.agent.as_ref().map(|a| format!(" through agent {a}")).unwrap_or_default();
                println!("created metric provider {} ({} at {}{via})", args.name, args.kind, args.url);
            }
        }
        Command::Providers(ProvidersCommand::List) => {
            let reply = relay.call(reqwest::Method::GET, "/api/v1/metric-providers", None).await?;
            if cli.json {
                println!("{reply:#}");
            } else {
                let mut rows = vec![["NAME", "TYPE", "URL", "AGENT"].map(String::from)];
                for p in reply["providers"].as_array().into_iter().flatten() {
                    let text = |key: &str| p[key].as_str().unwrap_or("-").to_owned();
                    rows.push([text("name"), text("type"), text("url"), text("agent")]);
                }
                print_table(rows);
            }
        }
        Command::Providers(ProvidersCommand::Delete { name }) => {
            let path = format!("/api/v1/metric-providers/{}", urlencode(name));
            relay.call(reqwest::Method::DELETE, &path, None).await?;
            println!("deleted metric provider {name}");
        }
        Command::Webhook(WebhookCommand::Run(args)) => webhook_run(&relay, cli.json, args).await?,
        Command::Deploy(args) => deploy(&relay, cli.json, args).await?,
        Command::Deployments(DeploymentsCommand::List) => {
            let reply = relay.call(reqwest::Method::GET, "/api/v1/deployments", None).await?;
            if cli.json {
                println!("{reply:#}");
            } else {
                let mut rows = vec![["DEPLOYMENT", "APPLICATION", "STATE", "CREATED", "TARGETS"].map(String::from)];
                for d in reply["deployments"].as_array().into_iter().flatten() {
                    let targets: Vec<String> = d["targets"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .map(|t| {
                            format!(
                                "{}={}",
                                t["name"].as_str().unwrap_or_default(),
                                t["state"].as_str().unwrap_or_default()
                            )
                        })
                        .collect();
                    let text = |key: &str| d[key].as_str().unwrap_or("-").to_owned();
                    rows.push([text("id"), text("application"), text("state"), text("createdAt"), targets.join(" ")]);
                }
                print_table(rows);
            }
        }
        Command::Deployments(DeploymentsCommand::Show { id }) => {
            let reply =
                relay.call(reqwest::Method::GET, &format!("/api/v1/deployments/{}", urlencode(id)), None).await?;
            if cli.json {
                println!("{reply:#}");
            } else {
                print_deployment(&reply);
            }
        }
        Command::Approve { deployment, target } | Command::Reject { deployment, target } => {
            let verb = if matches!(cli.command, Command::Approve { .. }) { "approve" } else { "reject" };
            let path = format!("/api/v1/deployments/{}/targets/{}/{verb}", urlencode(deployment), urlencode(target));
            let reply = relay.call(reqwest::Method::POST, &path, None).await?;
            println!("{target} of {deployment}: {}", reply["decision"].as_str().unwrap_or_default());
        }
        Command::Rollback { deployment, target } | Command::Continue { deployment, target } => {
            let verb = if matches!(cli.command, Command::Rollback { .. }) { "rollback" } else { "continue" };
            let path = format!("/api/v1/deployments/{}/targets/{}/{verb}", urlencode(deployment), urlencode(target));
            let reply = relay.call(reqwest::Method::POST, &path, None).await?;
            println!("{target} of {deployment}: {}", reply["decision"].as_str().unwrap_or_default());
        }
        Command::Runs(RunsCommand::List) => {
            let reply = relay.call(reqwest::Method::GET, "/api/v1/webhook-runs", None).await?;
            if cli.json {
                println!("{reply:#}");
            } else {
                print_runs(&reply);
            }
        }
        Command::Runs(RunsCommand::Cancel { id }) => {
            let path = format!("/api/v1/webhook-runs/{}/cancel", urlencode(id));
            let reply = relay.call(reqwest::Method::POST, &path, None).await?;
            if cli.json {
                println!("{reply:#}");
            } else {
                println!("run {id}: {}", reply["state"].as_str().unwrap_or_default());
            }
        }
        Command::Runs(RunsCommand::Show { id }) => {
            let reply =
                relay.call(reqwest::Method::GET, &format!("/api/v1/webhook-runs/{}", urlencode(id)), None).await?;
            if cli.json {
                println!("{reply:#}");
            } else {
                print_run(&reply);
            }
        }
    }
    Ok(())
}

async fn webhook_run(relay: &Relay, json: bool, args: &WebhookRunArgs) -> Result<(), Failure> {
    let file =
        std::fs::read_to_string(&args.file).map_err(|e| Failure::bad_input(format!("{}: {e}", args.file.display())))?;
    let body = serde_json::json!({
        "file": file,
        "name": args.name,
        "environment": args.environment,
        "context": context_map(&args.context)?,
    });
    let Some(id) = start(relay, json, "/api/v1/webhook-runs", body, "run", args.wait).await? else { return Ok(()) };
    let path = format!("/api/v1/webhook-runs/{}", urlencode(&id));
    let run = relay.wait_until_finished(&path, |run| !run["finishedAt"].is_null()).await?;
    if json {
        println!("{run:#}");
    } else {
        let state = run["state"].as_str().unwrap_or_default();
        println!("run {id}: {state}");
        if let Some(message) = run["mdMessage"].as_str() {
            println!("{}", safe(message, true));
        } else if let Some(reason) = run["reason"].as_str() {
            println!("{}", safe(reason, false));
        }
    }
    match run["state"].as_str() {
        Some("succeeded") => Ok(()),
        Some(state) => Err(Failure { code: 1, message: format!("webhook run {id} {}", state.replace('_', " ")) }),
        None => Err(Failure::failed("the relay sent a run without a state")),
    }
}

fn context_map(pairs: &[String]) -> Result<serde_json::Map<String, Value>, Failure> {
    let mut context = serde_json::Map::new();
    for pair in pairs {
        let (key, value) = pair
            .split_once('=')
            .ok_or_else(|| Failure::bad_input(format!("--context {pair:?}: expected KEY=VALUE")))?;
        context.insert(key.to_owned(), Value::String(value.to_owned()));
    }
    Ok(context)
}

/// POSTs something to start, shows the relay's warnings, and says it
/// started. Returns its id when the caller is to wait for it.
async fn start(
    relay: &Relay,
    json: bool,
    path: &str,
    body: Value,
    what: &str,
    wait: bool,
) -> Result<Option<String>, Failure> {
    let created = relay.call(reqwest::Method::POST, path, Some(body)).await?;
    for warning in created["warnings"].as_array().into_iter().flatten() {
        eprintln!("warning: {}", warning.as_str().unwrap_or_default());
    }
    let id = created["id"].as_str().unwrap_or_default().to_owned();
    if wait {
        eprintln!("{what} {id} started; waiting for it to finish");
        return Ok(Some(id));
    }
    if json {
        println!("{created:#}");
    } else {
        println!("{what} {id} started");
    }
    Ok(None)
}

async fn deploy(relay: &Relay, json: bool, args: &DeployArgs) -> Result<(), Failure> {
    let file =
        std::fs::read_to_string(&args.file).map_err(|e| Failure::bad_input(format!("{}: {e}", args.file.display())))?;
    let body = serde_json::json!({ "file": file, "context": context_map(&args.context)? });
    let Some(id) = start(relay, json, "/api/v1/deployments", body, "deployment", args.wait).await? else {
        return Ok(());
    };
    let path = format!("/api/v1/deployments/{}", urlencode(&id));
    let done = relay.wait_until_finished(&path, |d| !d["finishedAt"].is_null()).await?;
    if json {
        println!("{done:#}");
    } else {
        print_deployment(&done);
    }
    match done["state"].as_str() {
        Some("succeeded") => Ok(()),
        Some(state) => Err(Failure { code: 1, message: format!("deployment {id} {state}") }),
        None => Err(Failure::failed("the relay sent a deployment without a state")),
    }
}

fn print_deployment(d: &Value) {
    let text = |v: &Value, key: &str| v[key].as_str().unwrap_or("-").to_owned();
    println!("deployment {} ({}): {}", text(d, "id"), safe(&text(d, "application"), false), text(d, "state"));
    if let Some(reason) = d["reason"].as_str() {
        println!("  {}", safe(reason, false));
    }
    println!();
    let mut rows = vec![["TARGET", "STATE", "STEP", "REASON"].map(String::from)];
    for t in d["targets"].as_array().into_iter().flatten() {
        rows.push([text(t, "name"), text(t, "state"), text(t, "step"), text(t, "reason")]);
    }
    print_table(rows);
    let runs: Vec<&Value> = d["targets"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|t| t["webhookRuns"].as_array().into_iter().flatten())
        .collect();
    let judgments: Vec<&Value> = d["targets"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|t| t["analysisRuns"].as_array().into_iter().flatten())
        .collect();
    if !judgments.is_empty() {
        println!();
        let mut rows = vec![["ANALYSIS", "RUN", "AT", "RESULT"].map(String::from)];
        for j in judgments {
            let run = format!("{}/{}", j["run"], j["of"]);
            let result = format!(
                "{}: {}",
                if j["passed"] == true { "passed" } else { "failed" },
                j["summary"].as_str().unwrap_or_default()
            );
            rows.push([text(j, "step"), run, text(j, "at"), safe(&result, false)]);
        }
        print_table(rows);
    }
    if !runs.is_empty() {
        println!();
        let mut rows = vec![["RUN", "WEBHOOK", "STATE", "MESSAGE"].map(String::from)];
        for r in runs {
            let message = r["mdMessage"].as_str().or(r["reason"].as_str()).unwrap_or("-").replace('\n', " ");
            rows.push([text(r, "id"), text(r, "webhook"), text(r, "state"), message]);
        }
        print_table(rows);
    }
    println!();
    for e in d["events"].as_array().into_iter().flatten() {
        let target = e["target"].as_str().map(|t| format!(" [{t}]")).unwrap_or_default();
        println!("{}{} {}: {}", text(e, "at"), safe(&target, false), text(e, "kind"), safe(&text(e, "message"), false));
    }
}

fn print_runs(reply: &Value) {
    let mut rows = vec![["RUN", "WEBHOOK", "ENVIRONMENT", "STATE", "ATTEMPTS", "CREATED", "MESSAGE"].map(String::from)];
    for run in reply["runs"].as_array().into_iter().flatten() {
        let text = |key: &str| run[key].as_str().unwrap_or("-").to_owned();
        let message = run["mdMessage"]
            .as_str()
            .or(run["reason"].as_str())
            .unwrap_or("-")
            .lines()
            .next()
            .unwrap_or("-")
            .to_owned();
        rows.push([
            text("id"),
            text("webhook"),
            text("environment"),
            text("state"),
            run["attempts"].to_string(),
            text("createdAt"),
            message,
        ]);
    }
    print_table(rows);
}

fn print_run(run: &Value) {
    let text = |key: &str| run[key].as_str().unwrap_or("-").to_owned();
    for (label, key) in [
        ("run", "id"),
        ("webhook", "webhook"),
        ("environment", "environment"),
        ("state", "state"),
        ("agent", "agent"),
        ("callback URI", "callbackUri"),
        ("created", "createdAt"),
        ("next attempt", "nextAttemptAt"),
        ("deadline", "deadlineAt"),
        ("finished", "finishedAt"),
        ("reason", "reason"),
    ] {
        if run[key].is_string() {
            println!("{label:>13}: {}", safe(&text(key), false));
        }
    }
    if let Some(request) = run["request"].as_object() {
        println!(
            "{:>13}: {} {}",
            "request",
            safe(request["method"].as_str().unwrap_or_default(), false),
            safe(request["url"].as_str().unwrap_or_default(), false)
        );
    }
    let attempts = run["attemptLog"].as_array().cloned().unwrap_or_default();
    if !attempts.is_empty() {
        println!();
        let mut rows = vec![["ATTEMPT", "STARTED", "LATENCY", "STATUS", "RESULT"].map(String::from)];
        for attempt in attempts {
            let result = attempt["error"].as_str().or(attempt["reply"].as_str()).unwrap_or("").replace('\n', " ");
            let result: String = result.chars().take(100).collect();
            rows.push([
                attempt["number"].to_string(),
                attempt["startedAt"].as_str().unwrap_or("-").to_owned(),
                format!("{}ms", attempt["latencyMs"]),
                attempt["status"].as_u64().map(|s| s.to_string()).unwrap_or_else(|| "-".into()),
                result,
            ]);
        }
        print_table(rows);
    }
    if let Some(message) = run["mdMessage"].as_str() {
        println!();
        println!("{}", safe(message, true));
    }
}

/// Text from agents and external systems with its control characters
/// escaped, so it cannot move the cursor, recolour or forge lines on the
/// operator's terminal. `keep_lines` keeps newlines and tabs (a Markdown
/// message printed on its own).
fn safe(text: &str, keep_lines: bool) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '\n' | '\t' if keep_lines => out.push(c),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if c.is_control()
                || matches!(c, '\u{200b}'..='\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}') =>
            {
                out.push_str(&c.escape_unicode().to_string())
            }
            c => out.push(c),
        }
    }
    out
}

fn print_table<const N: usize>(rows: Vec<[String; N]>) {
    let rows: Vec<[String; N]> = rows.into_iter().map(|row| row.map(|cell| safe(&cell, false))).collect();
    let widths: Vec<usize> = (0..N).map(|i| rows.iter().map(|r| r[i].chars().count()).max().unwrap_or(0)).collect();
    for row in rows {
        let line: Vec<String> = row.iter().zip(&widths).map(|(cell, width)| format!("{cell:width$}")).collect();
        println!("{}", line.join("  ").trim_end());
    }
}

fn urlencode(text: &str) -> String {
    url::form_urlencoded::byte_serialize(text.as_bytes()).collect()
}

fn print_credentials(json: bool, reply: &Value, keys: &[&str]) {
    if json {
        println!("{reply:#}");
        return;
    }
    for key in keys {
        println!("{key}: {}", reply[*key].as_str().unwrap_or_default());
    }
    eprintln!("Keep the client secret now: it is not shown again.");
}

fn print_agents(reply: &Value) {
    let mut rows = vec![
        ["AGENT", "CONNECTED", "INSTANCE", "VERSION", "REMOTE", "CONNECTED SINCE", "LAST HEARTBEAT"].map(String::from),
    ];
    for agent in reply["agents"].as_array().into_iter().flatten() {
        let id = agent["agent_id"].as_str().unwrap_or_default().to_owned();
        let instances = agent["instances"].as_array().cloned().unwrap_or_default();
        if instances.is_empty() {
            rows.push([id.clone(), "no".into(), "-".into(), "-".into(), "-".into(), "-".into(), "-".into()]);
        }
        for instance in instances {
            let text = |key: &str| instance[key].as_str().unwrap_or("-").to_owned();
            let state = if instance["draining"].as_bool() == Some(true) { "draining" } else { "yes" };
            rows.push([
                id.clone(),
                state.into(),
                text("instance"),
                text("version"),
                text("remote_addr"),
                text("connected_since"),
                text("last_heartbeat"),
            ]);
        }
    }
    print_table(rows);
}

async fn proxy(relay: &Relay, args: &ProxyArgs) -> Result<(), Failure> {
    let method = reqwest::Method::from_bytes(args.method.as_bytes())
        .map_err(|_| Failure::bad_input(format!("invalid method {:?}", args.method)))?;
    let mut url = relay.url("/api/v1/proxy");
    {
        let mut query = url.query_pairs_mut();
        query.append_pair("url", &args.url);
        if let Some(agent) = &args.agent {
            query.append_pair("agent", agent);
        }
        if let Some(timeout) = &args.timeout {
            query.append_pair("timeout", timeout);
        }
    }
    // The admin token rides in Proxy-Authorization so that -H 'Authorization: ...' reaches the destination.
    let mut request = relay.http.request(method, url).header("proxy-authorization", format!("Bearer {}", relay.token));
    for header in &args.headers {
        let (name, value) = header
            .split_once(':')
            .ok_or_else(|| Failure::bad_input(format!("invalid header {header:?}: expected \"Name: value\"")))?;
        request = request.header(name.trim(), value.trim());
    }
    if let Some(data) = &args.data {
        let body = match data.strip_prefix('@') {
            Some("-") => {
                let mut buffer = Vec::new();
                std::io::Read::read_to_end(&mut std::io::stdin(), &mut buffer)
                    .map_err(|e| Failure::bad_input(format!("stdin: {e}")))?;
                buffer
            }
            Some(path) => std::fs::read(path).map_err(|e| Failure::bad_input(format!("-d @{path}: {e}")))?,
            None => data.clone().into_bytes(),
        };
        request = request.body(body);
    }
    let response = request.send().await.map_err(|e| relay.unreachable(e))?;
    if response.headers().contains_key("borealis-error") {
        let status = response.status();
        let body = response.bytes().await.map_err(|e| relay.unreachable(e))?;
        return Err(problem_failure(status, &body));
    }
    let mut stdout = std::io::stdout().lock();
    let write_failed = |e: std::io::Error| Failure::failed(format!("stdout: {e}"));
    if args.include {
        writeln!(stdout, "{:?} {}", response.version(), response.status()).map_err(write_failed)?;
        for (name, value) in response.headers() {
            writeln!(stdout, "{name}: {}", String::from_utf8_lossy(value.as_bytes())).map_err(write_failed)?;
        }
        writeln!(stdout).map_err(write_failed)?;
    }
    let mut body = response.bytes_stream();
    while let Some(chunk) = body.next().await {
        let chunk = chunk.map_err(|e| Failure::failed(format!("the reply broke off: {e}")))?;
        stdout.write_all(&chunk).map_err(write_failed)?;
    }
    stdout.flush().map_err(write_failed)?;
    Ok(())
}
