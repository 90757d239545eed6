//! The Borealis binaries as child processes.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::temp_dir::TempDir;

/// Path of a workspace binary, built next to the test executable.
pub fn binary(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("current exe");
    let dir = exe.parent().and_then(Path::parent).expect("target dir");
    let path = dir.join(name);
    assert!(path.exists(), "{} is missing: build the binaries first (scripts/test.sh does)", path.display());
    path
}

/// A child whose stderr is collected line by line (and never blocks it),
/// killed and reaped when dropped.
pub struct Logged {
    child: Child,
    lines: Arc<Mutex<Vec<String>>>,
    name: String,
}

impl Logged {
    pub fn spawn(name: &str, mut command: Command) -> Self {
        command.stdout(Stdio::null()).stderr(Stdio::piped()).stdin(Stdio::null());
        let mut child = command.spawn().unwrap_or_else(|e| panic!("spawn {name}: {e}"));
        let lines = Arc::new(Mutex::new(Vec::new()));
        let stderr = child.stderr.take().expect("piped stderr");
        let sink = lines.clone();
        let tag = name.to_owned();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                eprintln!("[{tag}] {line}");
                sink.lock().unwrap().push(line);
            }
        });
        Self { child, lines, name: name.to_owned() }
    }

    /// Waits for a log line containing `needle` and returns it.
    pub fn wait_for_line(&mut self, needle: &str, within: Duration) -> String {
        let start = Instant::now();
        loop {
            if let Some(line) = self.lines.lock().unwrap().iter().find(|l| l.contains(needle)) {
                return line.clone();
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("{} exited with {status} before logging {needle:?}", self.name);
            }
            assert!(start.elapsed() < within, "{} did not log {needle:?} within {within:?}", self.name);
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn log(&self) -> String {
        self.lines.lock().unwrap().join("\n")
    }

    fn line(&self, needles: &[&str]) -> Option<String> {
        self.lines.lock().unwrap().iter().find(|l| needles.iter().all(|n| l.contains(n))).cloned()
    }

    fn signal(&self, signal: &str) {
        let status =
            Command::new("kill").arg(format!("-{signal}")).arg(self.child.id().to_string()).status().expect("kill");
        assert!(status.success(), "kill -{signal} {}", self.child.id());
    }
}

impl Drop for Logged {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `key=value` from a text log line, or `"key": value` from a JSON one.
pub fn field(line: &str, key: &str) -> String {
    if let Ok(serde_json::Value::Object(record)) = serde_json::from_str(line) {
        return match record.get(key) {
            Some(serde_json::Value::String(text)) => text.clone(),
            Some(other) => other.to_string(),
            None => panic!("no {key} in {line:?}"),
        };
    }
    let start = line.find(&format!("{key}=")).unwrap_or_else(|| panic!("no {key}= in {line:?}")) + key.len() + 1;
    line[start..].split_whitespace().next().unwrap().to_owned()
}

#[derive(Clone, Default)]
pub struct RelayOptions {
    pub direct_allow: Vec<String>,
    pub extra_args: Vec<String>,
    /// A command the relay runs under, e.g. `prlimit --nofile=1024:1024 --`.
    pub wrapper: Vec<String>,
    /// Environment variables for the relay (`BOREALIS_ADMIN_TOKEN` among
    /// them makes [`RelayProcess::admin_token`] that token).
    pub env: Vec<(String, String)>,
}

pub struct RelayProcess {
    process: Logged,
    pub data_dir: TempDir,
    /// `http://127.0.0.1:PORT` (or https) of the HTTP API.
    pub http_url: String,
    /// `http://127.0.0.1:PORT` (or https) of the agents' listener.
    pub agents_url: String,
    options: RelayOptions,
}

impl RelayProcess {
    pub fn start(options: RelayOptions) -> Self {
        let data_dir = TempDir::new("relay");
        Self::start_in(data_dir, "127.0.0.1:0", "127.0.0.1:0", options)
    }

    /// A relay on `data_dir` as it is (one an earlier release left, say).
    pub fn start_on(data_dir: TempDir, options: RelayOptions) -> Self {
        Self::start_in(data_dir, "127.0.0.1:0", "127.0.0.1:0", options)
    }

    fn start_in(data_dir: TempDir, listen: &str, agent_listen: &str, options: RelayOptions) -> Self {
        crate::tls::install_crypto();
        let mut command = command_under(&options.wrapper, "borealis-relay");
        command
            .arg("--data-dir")
            .arg(data_dir.path())
            .args([
                "--listen",
                listen,
                "--agent-listen",
                agent_listen,
                "--heartbeat-interval",
                "1s",
                "--shutdown-grace",
                "10s",
            ])
            .env("BOREALIS_LOG", "info,borealis_relay=debug")
            .env_remove("BOREALIS_ADMIN_TOKEN");
        for range in &options.direct_allow {
            command.args(["--direct-allow", range]);
        }
        command.args(&options.extra_args);
        for (key, value) in &options.env {
            command.env(key, value);
        }
        let mut process = Logged::spawn("relay", command);
        let ready = process.wait_for_line("relay ready", Duration::from_secs(20));
        let http_url = field(&ready, "http");
        let agents_url = field(&ready, "agents");
        Self { process, data_dir, http_url, agents_url, options }
    }

    pub fn admin_token(&self) -> String {
        if let Some((_, token)) = self.options.env.iter().find(|(key, _)| key == "BOREALIS_ADMIN_TOKEN") {
            return token.clone();
        }
        std::fs::read_to_string(self.data_dir.path().join("admin-token")).expect("admin token").trim().to_owned()
    }

    pub fn pid(&self) -> u32 {
        self.process.child.id()
    }

    pub fn log(&self) -> String {
        self.process.log()
    }

    /// When this relay process started, by its own clock: the timestamp of
    /// the first line it logged (before its engine or orchestrator ran).
    pub fn started_at(&self) -> std::time::SystemTime {
        let first = self.process.lines.lock().unwrap().first().cloned().expect("the relay logged a line");
        crate::time::log_time(&first)
    }

    /// The first line of this process's log holding every one of `needles`.
    pub fn log_line(&self, needles: &[&str]) -> Option<String> {
        self.process.line(needles)
    }

    /// Waits for a line of this process's log holding every one of `needles`.
    pub async fn wait_log_line(&self, needles: &[&str]) -> String {
        crate::time::eventually(&format!("the relay logs a line with {needles:?}"), crate::time::PATIENCE, || async {
            self.log_line(needles)
        })
        .await
    }

    /// `GET path` with the admin token; the reply, which must succeed, read
    /// as the API's type `T`.
    pub async fn get_as<T: serde::de::DeserializeOwned>(&self, path: &str) -> T {
        let reply = reqwest::Client::new()
            .get(format!("{}{path}", self.http_url))
            .bearer_auth(self.admin_token())
            .send()
            .await
            .unwrap_or_else(|e| panic!("GET {path}: {e}"));
        assert!(reply.status().is_success(), "GET {path}: {}", reply.status());
        let text = reply.text().await.unwrap_or_else(|e| panic!("GET {path}: {e}"));
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("GET {path}: {e}: {text}"))
    }

    /// The webhook run `id` once it is finished, read with the API's own
    /// long poll (`GET /api/v1/webhook-runs/{id}?wait=30s`).
    pub async fn wait_run(&self, id: &str) -> borealis_api::WebhookRun {
        let url = format!("{}/api/v1/webhook-runs/{id}?wait=30s", self.http_url);
        let token = self.admin_token();
        let client = reqwest::Client::new();
        let mut last = None;
        for _ in 0..4 {
            let reply = client.get(&url).bearer_auth(&token).send().await.expect("GET the run");
            assert!(reply.status().is_success(), "GET the run: {}", reply.status());
            let run: borealis_api::WebhookRun = reply.json().await.expect("the run as the API's WebhookRun");
            if run.state.is_finished() {
                return run;
            }
            last = Some(run);
        }
        panic!("the run never finished: {last:#?}")
    }

    /// A `borealis` command aimed at this relay with its admin token.
    pub fn cli(&self) -> Cli {
        Cli::new().env("BOREALIS_RELAY", &self.http_url).env("BOREALIS_ADMIN_TOKEN", &self.admin_token())
    }

    /// `method path` with `token` as the bearer (and `body` as JSON): the
    /// status and the JSON body (null when there is none).
    pub async fn call_as(
        &self,
        method: &str,
        path: &str,
        token: &str,
        body: Option<serde_json::Value>,
    ) -> (u16, serde_json::Value) {
        let method = reqwest::Method::from_bytes(method.as_bytes()).expect("a method");
        let mut request = reqwest::Client::new().request(method, format!("{}{path}", self.http_url)).bearer_auth(token);
        if let Some(body) = body {
            request = request.json(&body);
        }
        let reply = request.send().await.expect("the relay answers");
        (reply.status().as_u16(), reply.json().await.unwrap_or_default())
    }

    /// A service account of `team` with `roles` (and `extra` arguments);
    /// returns its token, printed once.
    pub async fn service_account(&self, team: &str, name: &str, roles: &[&str], extra: &[&str]) -> String {
        let mut args = vec!["service-accounts", "create", name, "--team", team];
        for role in roles {
            args.extend(["--role", role]);
        }
        args.extend(extra);
        let out = self.cli().args(&args).run_async().await;
        assert!(out.status.success(), "{}", out.stderr_text());
        let said = out.stdout_text();
        let token = said.lines().find_map(|l| l.strip_prefix("token: ")).unwrap_or_else(|| panic!("no token: {said}"));
        assert!(token.starts_with("bsa_"), "{token}");
        token.trim().to_owned()
    }

    /// Registers an agent identifier; returns (client_id, client_secret).
    pub fn create_agent(&self, id: &str) -> (String, String) {
        self.create_credentials("agents", id)
    }

    /// Credentials for an external system's callbacks; returns (client_id, client_secret).
    pub fn create_client(&self, name: &str) -> (String, String) {
        self.create_credentials("clients", name)
    }

    /// An external system that calls back with a client credential of its own.
    pub async fn external_system(&self) -> (std::net::SocketAddr, crate::external::External) {
        let (client_id, secret) = self.create_client("ci-system");
        crate::external::start(&self.http_url, &client_id, &secret).await
    }

    fn create_credentials(&self, kind: &str, id: &str) -> (String, String) {
        create_credentials(self.cli(), kind, id)
    }

    /// SIGKILL, then a new relay on the same ports and data dir.
    pub fn kill_and_restart(self) -> Self {
        self.kill_change_and_restart(|_| {})
    }

    /// SIGKILL, `change` the data dir, then a new relay on the same ports and data dir.
    pub fn kill_change_and_restart(self, change: impl FnOnce(&std::path::Path)) -> Self {
        let RelayProcess { mut process, data_dir, http_url, agents_url, options } = self;
        process.signal("KILL");
        let _ = process.child.wait();
        drop(process);
        change(data_dir.path());
        let host = |url: &str| url.split("://").nth(1).unwrap().to_owned();
        Self::start_in(data_dir, &host(&http_url), &host(&agents_url), options)
    }

    /// SIGTERM, waits for a clean exit, then a new relay on the same ports
    /// and data dir.
    pub fn terminate_and_restart(mut self, within: Duration) -> Self {
        let status = self.terminate(within);
        assert!(status.success(), "the relay stopped with {status}");
        let RelayProcess { process, data_dir, http_url, agents_url, options } = self;
        drop(process);
        let host = |url: &str| url.split("://").nth(1).unwrap().to_owned();
        Self::start_in(data_dir, &host(&http_url), &host(&agents_url), options)
    }

    /// SIGKILL, and waits for the process to end.
    pub fn kill(self) {
        let RelayProcess { mut process, .. } = self;
        process.signal("KILL");
        let _ = process.child.wait();
    }

    /// SIGTERM; returns the exit status.
    pub fn terminate(&mut self, within: Duration) -> std::process::ExitStatus {
        self.process.signal("TERM");
        wait_exit(&mut self.process.child, within).expect("relay exits after SIGTERM")
    }

    /// The value of a metric line (`name{labels}`), 0 when absent.
    pub async fn metric(&self, series: &str) -> f64 {
        metric(&self.http_url, series).await
    }

    /// The connected instances of `agent`, as `GET /api/v1/agents` lists them.
    pub async fn instances(&self, agent: &str) -> Vec<serde_json::Value> {
        let json = self.cli().args(["--json", "agents", "list"]).run_async().await.stdout_text();
        let value: serde_json::Value = serde_json::from_str(&json).unwrap();
        let agents = value["agents"].as_array().cloned().unwrap_or_default();
        agents
            .into_iter()
            .find(|a| a["agentId"] == agent)
            .and_then(|a| a["instances"].as_array().cloned())
            .unwrap_or_default()
    }

    /// Waits until the relay holds `count` idle standby calls of the one
    /// instance of `agent`.
    pub async fn wait_standby_idle(&self, agent: &str, count: u64) {
        self.wait_agent_field(agent, "standbyIdle", count).await;
    }

    /// Waits until the agent's one instance shows `field` (of the agents
    /// listing, e.g. `lanesOpen`) at `value`.
    pub async fn wait_agent_field(&self, agent: &str, field: &str, value: u64) {
        crate::time::eventually(&format!("{field} is {value}"), Duration::from_secs(5), || async {
            let instances = self.instances(agent).await;
            (instances.len() == 1 && instances[0][field] == value).then_some(())
        })
        .await;
    }
}

/// Creates credentials with `cli` (`kind` is "agents" or "clients");
/// returns (client_id, client_secret) as the CLI printed them.
pub fn create_credentials(cli: Cli, kind: &str, id: &str) -> (String, String) {
    let out = cli.args([kind, "create", id]).run();
    assert!(out.status.success(), "{kind} create {id}: {}", out.stderr_text());
    let text = out.stdout_text();
    let value = |key: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(&format!("{key}: ")))
            .unwrap_or_else(|| panic!("no {key} in {text:?}"))
            .to_owned()
    };
    (value("client_id"), value("client_secret"))
}

/// The value of a metric line (`name{labels}`) at `base/metrics`, 0 when absent.
async fn metric(base: &str, series: &str) -> f64 {
    let text = reqwest::get(format!("{base}/metrics")).await.unwrap().text().await.unwrap();
    text.lines()
        .find_map(|line| line.strip_prefix(series).and_then(|rest| rest.strip_prefix(' ')))
        .map(|v| v.trim().parse().unwrap())
        .unwrap_or(0.0)
}

fn wait_exit(child: &mut Child, within: Duration) -> Option<std::process::ExitStatus> {
    let start = Instant::now();
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            return Some(status);
        }
        if start.elapsed() > within {
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A command for one of the workspace's binaries, run under `wrapper` (a
/// command and its arguments, e.g. `prlimit --nofile=256:256 --`) if any.
fn command_under<S: AsRef<std::ffi::OsStr>>(wrapper: &[S], name: &str) -> Command {
    match wrapper.split_first() {
        None => Command::new(binary(name)),
        Some((program, args)) => {
            let mut command = Command::new(program);
            command.args(args).arg(binary(name));
            command
        }
    }
}

pub struct AgentProcess {
    process: Logged,
    /// `http://127.0.0.1:PORT` of its health listener.
    pub health_url: String,
}

impl AgentProcess {
    /// Starts an agent; `args` adds `--allow` and the like.
    pub fn start(relay_agents_url: &str, client_id: &str, secret: &str, args: &[&str]) -> Self {
        Self::start_with_env(relay_agents_url, client_id, secret, args, &[])
    }

    pub fn start_with_env(
        relay_agents_url: &str,
        client_id: &str,
        secret: &str,
        args: &[&str],
        env: &[(&str, &str)],
    ) -> Self {
        Self::start_under(&[], relay_agents_url, client_id, secret, args, env)
    }

    /// Starts an agent under `wrapper`, a command it runs under, e.g.
    /// `prlimit --nofile=256:256 --` (see [`RelayOptions::wrapper`]).
    pub fn start_under(
        wrapper: &[&str],
        relay_agents_url: &str,
        client_id: &str,
        secret: &str,
        args: &[&str],
        env: &[(&str, &str)],
    ) -> Self {
        crate::tls::install_crypto();
        let mut command = command_under(wrapper, "borealis-agent");
        // The secret from the environment, as the docs say (a flag would show
        // it in the process list); empty: `args` names it.
        command.env_remove("BOREALIS_CLIENT_SECRET").env_remove("BOREALIS_CLIENT_SECRET_FILE");
        if !secret.is_empty() {
            command.env("BOREALIS_CLIENT_SECRET", secret);
        }
        command
            .args(["--relay", relay_agents_url, "--client-id", client_id])
            .args(["--health-listen", "127.0.0.1:0"])
            .args(args)
            .env("BOREALIS_LOG", "info,borealis_agent=debug");
        for var in
            ["HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy", "NO_PROXY", "no_proxy"]
        {
            command.env_remove(var);
        }
        for (key, value) in env {
            command.env(key, value);
        }
        let mut process = Logged::spawn("agent", command);
        let line = process.wait_for_line("health listener ready", Duration::from_secs(20));
        let health_url = format!("http://{}", field(&line, "addr"));
        Self { process, health_url }
    }

    /// Waits until the agent's /readyz says it holds a session.
    pub async fn wait_connected(&self, within: Duration) {
        let url = format!("{}/readyz", self.health_url);
        crate::time::eventually("agent connected", within, || {
            let url = url.clone();
            async move { reqwest::get(&url).await.ok().filter(|r| r.status().is_success()).map(|_| ()) }
        })
        .await;
    }

    /// The value of a metric line (`name{labels}`), 0 when absent.
    pub async fn metric(&self, series: &str) -> f64 {
        metric(&self.health_url, series).await
    }

    /// Waits until a metric reaches `value`: an agent counts a request once
    /// the relay closed its call, a moment after the caller has its reply.
    pub async fn wait_metric(&self, series: &str, value: f64) {
        crate::time::eventually(&format!("the agent's {series} is {value}"), crate::time::PATIENCE, || async {
            (self.metric(series).await == value).then_some(())
        })
        .await;
    }

    pub fn pid(&self) -> u32 {
        self.process.child.id()
    }

    pub fn kill(self) {
        self.signal("KILL");
    }

    /// Sends a signal ("TERM", "KILL").
    pub fn signal(&self, name: &str) {
        self.process.signal(name);
    }

    pub fn log(&self) -> String {
        self.process.log()
    }

    /// Every line of this process's log holding every one of `needles`.
    pub fn log_lines(&self, needles: &[&str]) -> Vec<String> {
        let lines = self.process.lines.lock().unwrap();
        lines.iter().filter(|l| needles.iter().all(|n| l.contains(n))).cloned().collect()
    }

    /// Waits for the agent to exit by itself; returns its status.
    pub fn wait_exit(&mut self, within: Duration) -> Option<std::process::ExitStatus> {
        wait_exit(&mut self.process.child, within)
    }
}

/// Runs the agent binary to completion (for the refusal cases).
pub fn run_agent_to_exit(args: &[&str], within: Duration) -> (std::process::ExitStatus, String) {
    run_agent_to_exit_with_env(args, &[], within)
}

/// [`run_agent_to_exit`], with `env` set (and none of the agent's own
/// variables inherited from the test's environment).
pub fn run_agent_to_exit_with_env(
    args: &[&str],
    env: &[(&str, &str)],
    within: Duration,
) -> (std::process::ExitStatus, String) {
    let mut command = Command::new(binary("borealis-agent"));
    for name in [
        "BOREALIS_RELAY",
        "BOREALIS_TUNNEL_URL",
        "BOREALIS_CLIENT_ID",
        "BOREALIS_CLIENT_SECRET",
        "BOREALIS_CLIENT_SECRET_FILE",
    ] {
        command.env_remove(name);
    }
    let mut child = command
        .args(args)
        .envs(env.iter().copied())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn agent");
    let status = wait_exit(&mut child, within);
    if status.is_none() {
        let _ = child.kill();
    }
    let mut stderr = String::new();
    std::io::Read::read_to_string(child.stderr.as_mut().unwrap(), &mut stderr).unwrap();
    (status.unwrap_or_else(|| panic!("agent did not exit within {within:?}; stderr: {stderr}")), stderr)
}

/// A `borealis` CLI invocation.
pub struct Cli {
    command: Command,
    stdin: Option<String>,
}

pub fn cli() -> Cli {
    Cli::new()
}

impl Cli {
    pub fn new() -> Self {
        let mut command = Command::new(binary("borealis"));
        command
            .env_remove("BOREALIS_RELAY")
            .env_remove("BOREALIS_ADMIN_TOKEN")
            .env_remove("BOREALIS_TOKEN")
            .env_remove("BOREALIS_TEAM");
        Self { command, stdin: None }
    }

    pub fn env(mut self, key: &str, value: &str) -> Self {
        self.command.env(key, value);
        self
    }

    pub fn args<I: IntoIterator<Item = S>, S: AsRef<std::ffi::OsStr>>(mut self, args: I) -> Self {
        self.command.args(args);
        self
    }

    /// Feeds `text` to the command's standard input.
    pub fn stdin_text(mut self, text: &str) -> Self {
        self.stdin = Some(text.to_owned());
        self
    }

    pub fn run(mut self) -> Output {
        let Some(input) = self.stdin.take() else {
            self.command.stdin(Stdio::null());
            return self.command.output().expect("run borealis");
        };
        self.command.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped());
        let mut child = self.command.spawn().expect("run borealis");
        std::io::Write::write_all(&mut child.stdin.take().unwrap(), input.as_bytes()).unwrap();
        child.wait_with_output().expect("run borealis")
    }

    /// Runs on a blocking thread, so a test's servers keep running meanwhile.
    pub async fn run_async(self) -> Output {
        tokio::task::spawn_blocking(move || self.run()).await.unwrap()
    }
}

impl Default for Cli {
    fn default() -> Self {
        Self::new()
    }
}

pub trait OutputText {
    fn stdout_text(&self) -> String;
    fn stderr_text(&self) -> String;
}

impl OutputText for Output {
    fn stdout_text(&self) -> String {
        String::from_utf8_lossy(&self.stdout).into_owned()
    }

    fn stderr_text(&self) -> String {
        String::from_utf8_lossy(&self.stderr).into_owned()
    }
}

/// Resident memory of a process, in KiB.
pub fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}
