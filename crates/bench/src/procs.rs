//! The measured processes: relay, agent and echo server, started from the
//! release binaries, with their CPU time and resident memory.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context;

pub struct Process {
    child: Child,
    lines: Arc<Mutex<Vec<String>>>,
}

impl Process {
    pub fn spawn(name: &str, mut command: Command) -> anyhow::Result<Self> {
        command.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
        let mut child = command.spawn().with_context(|| format!("starting {name}"))?;
        let lines = Arc::new(Mutex::new(Vec::new()));
        for pipe in [
            child.stdout.take().map(|p| Box::new(p) as Box<dyn std::io::Read + Send>),
            child.stderr.take().map(|p| Box::new(p) as Box<dyn std::io::Read + Send>),
        ]
        .into_iter()
        .flatten()
        {
            let sink = lines.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(pipe).lines().map_while(Result::ok) {
                    sink.lock().unwrap().push(line);
                }
            });
        }
        Ok(Self { child, lines })
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// SIGKILL, and wait for it to be gone.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// The first output line containing `needle`.
    pub fn wait_for(&mut self, needle: &str) -> anyhow::Result<String> {
        for _ in 0..400 {
            if let Some(line) = self.lines.lock().unwrap().iter().find(|l| l.contains(needle)) {
                return Ok(line.clone());
            }
            if let Some(status) = self.child.try_wait()? {
                anyhow::bail!("exited with {status}: {}", self.lines.lock().unwrap().join("\n"));
            }
            std::thread::sleep(Duration::from_millis(25));
        }
        anyhow::bail!("no {needle:?} within 10 s")
    }

    /// User plus system CPU time so far.
    pub fn cpu_seconds(&self) -> f64 {
        cpu_seconds(self.pid())
    }

    pub fn rss_kib(&self) -> u64 {
        rss_kib(self.pid())
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn clock_ticks() -> f64 {
    static TICKS: std::sync::OnceLock<f64> = std::sync::OnceLock::new();
    *TICKS.get_or_init(|| {
        Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|o| String::from_utf8(o.stdout).ok())
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(100.0)
    })
}

pub fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name, which is in parentheses and may hold spaces.
    let fields: Vec<&str> =
        stat.rsplit_once(')').map(|(_, rest)| rest.split_whitespace().collect()).unwrap_or_default();
    let ticks = |i: usize| fields.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    (ticks(11) + ticks(12)) / clock_ticks()
}

/// CPU time the whole machine has spent busy since boot (user and system,
/// all cores), in seconds: less the measured processes' own, what else
/// ran meanwhile on a shared machine.
pub fn machine_cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    // user nice system idle iowait irq softirq steal guest guest_nice; guest
    // time is already in user and nice.
    let busy = |(i, value): (usize, &str)| (![3, 4, 8, 9].contains(&i)).then(|| value.parse::<f64>().ok()).flatten();
    let ticks: f64 = stat
        .lines()
        .next()
        .and_then(|l| l.strip_prefix("cpu "))
        .map(|rest| rest.split_whitespace().enumerate().filter_map(busy).sum())
        .unwrap_or(0.0);
    ticks / clock_ticks()
}

pub fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

/// Peak resident memory of some processes while `work` runs, in KiB.
pub async fn peak_rss<T>(pids: &[u32], work: impl std::future::Future<Output = T>) -> (T, Vec<u64>) {
    let pids = pids.to_vec();
    let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let flag = done.clone();
    let sampler = tokio::spawn(async move {
        let mut peaks = vec![0u64; pids.len()];
        while !flag.load(std::sync::atomic::Ordering::Relaxed) {
            for (peak, pid) in peaks.iter_mut().zip(&pids) {
                *peak = (*peak).max(rss_kib(*pid));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        peaks
    });
    let result = work.await;
    done.store(true, std::sync::atomic::Ordering::Relaxed);
    (result, sampler.await.unwrap_or_default())
}

/// Where the binaries are: next to this one (`target/release`).
pub fn bin_dir() -> PathBuf {
    std::env::current_exe().ok().and_then(|p| p.parent().map(Path::to_path_buf)).unwrap_or_default()
}

/// A running relay, agent and echo server, wired together.
pub struct Stack {
    pub relay: Process,
    pub agent: Process,
    pub echo: Process,
    pub relay_http: String,
    /// The agents' listener, `http://127.0.0.1:PORT`.
    pub agents_url: String,
    pub echo_addr: String,
    pub admin_token: String,
    data_dir: TempDir,
}

pub struct TempDir(PathBuf);

impl TempDir {
    /// `borealis-bench-<pid>-<label>` in the system's temporary directory,
    /// emptied of what a run before left there.
    pub fn new(label: &str) -> Self {
        let path = std::env::temp_dir().join(format!("borealis-bench-{}-{label}", std::process::id()));
        let _ = std::fs::remove_dir_all(&path);
        Self(path)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// How a relay starts beyond the flags every benchmark relay gets: by
/// default on SQLite in its data dir, with an admin token of its own;
/// with `database_url` and the shared `env`, as one replica of several.
#[derive(Clone, Debug, Default)]
pub struct RelayOptions {
    pub database_url: Option<String>,
    pub replica_name: Option<String>,
    /// Such as `BOREALIS_ADMIN_TOKEN` and `BOREALIS_SECRET_KEY`, which
    /// replicas must share.
    pub env: Vec<(String, String)>,
}

fn spawn_relay(data: &Path, listen: &str, agent_listen: &str, options: &RelayOptions) -> anyhow::Result<Process> {
    let mut command = Command::new(bin_dir().join("borealis-relay"));
    command
        .arg("--data-dir")
        .arg(data)
        .args(["--listen", listen, "--agent-listen", agent_listen, "--direct-allow", "127.0.0.0/8"])
        .args(["--max-body-bytes", &(4u64 << 30).to_string(), "--request-timeout", "10m"])
        // The agents scenario holds 10 000 sessions: the relay may use all
        // but a few of its descriptors for connections (its default keeps
        // half for the store and outbound calls, which the benchmark's
        // relay hardly uses).
        .args(["--max-connections", &connection_cap().to_string()])
        // The per-request lines ("forwarded through an agent", and the
        // audit trail's line for each proxied request) are left out, as the
        // agent's is: the benchmark measures forwarding, not logging. The
        // audit trail's entries are still written.
        .env("BOREALIS_LOG", "warn,borealis_relay=info,borealis_relay::forward=warn,borealis_relay::audit=warn")
        .env_remove("BOREALIS_ADMIN_TOKEN");
    if let Some(url) = &options.database_url {
        command.args(["--database-url", url]);
    }
    if let Some(name) = &options.replica_name {
        command.args(["--replica-name", name]);
    }
    for (key, value) in &options.env {
        command.env(key, value);
    }
    Process::spawn(options.replica_name.as_deref().unwrap_or("relay"), command)
}

/// Descriptors kept out of the benchmark relay's connection cap.
const RESERVED_DESCRIPTORS: u64 = 1024;

/// Raises this process's descriptor limit as far as it may go; the
/// processes it starts inherit it. The agents scenario holds 10 000
/// sessions, a connection at each end. Called once, at start.
pub fn raise_descriptor_limit() {
    const WANTED: u64 = 1 << 16;
    // As root the hard limit may rise too; it is never lowered.
    if let Ok((soft, hard)) = rlimit::getrlimit(rlimit::Resource::NOFILE)
        && hard < WANTED
    {
        let _ = rlimit::setrlimit(rlimit::Resource::NOFILE, soft, WANTED);
    }
    let _ = rlimit::increase_nofile_limit(u64::MAX);
}

/// The benchmark relay's connection cap: the descriptor limit it inherits,
/// less a reserve.
fn connection_cap() -> u64 {
    let limit = rlimit::getrlimit(rlimit::Resource::NOFILE).map_or(1024, |(soft, _)| soft);
    limit.saturating_sub(RESERVED_DESCRIPTORS).max(64)
}

fn field(line: &str, key: &str) -> anyhow::Result<String> {
    let start = line.find(&format!("{key}=")).ok_or_else(|| anyhow::anyhow!("no {key}= in {line}"))? + key.len() + 1;
    Ok(line[start..].split_whitespace().next().unwrap_or_default().to_owned())
}

/// A relay process and where its two listeners are.
pub struct Relay {
    pub process: Process,
    /// The HTTP API, `http://127.0.0.1:PORT`.
    pub http: String,
    /// The agents' listener, `http://127.0.0.1:PORT`.
    pub agents: String,
}

impl Relay {
    /// Starts a relay on free loopback ports and waits until it is ready.
    pub fn start(data: &Path, options: &RelayOptions) -> anyhow::Result<Self> {
        let mut process = spawn_relay(data, "127.0.0.1:0", "127.0.0.1:0", options)?;
        let ready = process.wait_for("relay ready")?;
        Ok(Self { http: field(&ready, "http")?, agents: field(&ready, "agents")?, process })
    }

    /// The value of one series (`name{labels}`) of its `/metrics`, 0 when absent.
    pub async fn metric(&self, series: &str) -> anyhow::Result<f64> {
        let text = reqwest::get(format!("{}/metrics", self.http)).await?.text().await?;
        let prefix = format!("{series} ");
        Ok(text.lines().find_map(|l| l.strip_prefix(&prefix)).and_then(|v| v.trim().parse().ok()).unwrap_or(0.0))
    }
}

/// reqwest is built without a default TLS crypto provider: install one
/// before the first client is made.
pub fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// Registers agent `id` with the relay at `relay_http`; returns its client
/// id and secret.
pub async fn create_agent(relay_http: &str, admin_token: &str, id: &str) -> anyhow::Result<(String, String)> {
    let created: serde_json::Value = reqwest::Client::new()
        .post(format!("{relay_http}/api/v1/agents"))
        .bearer_auth(admin_token)
        .json(&serde_json::json!({ "id": id }))
        .send()
        .await?
        .json()
        .await?;
    match (created["clientId"].as_str(), created["clientSecret"].as_str()) {
        (Some(client_id), Some(secret)) => Ok((client_id.to_owned(), secret.to_owned())),
        _ => anyhow::bail!("creating agent {id:?}: {created}"),
    }
}

/// Starts a real agent against the agents' listener at `agents_url`,
/// allowed to reach the echo server only, and waits until it is connected.
pub fn start_agent(agents_url: &str, client_id: &str, client_secret: &str, echo_addr: &str) -> anyhow::Result<Process> {
    let mut command = Command::new(bin_dir().join("borealis-agent"));
    command
        .args(["--relay", agents_url, "--client-id", client_id])
        .args(["--allow", echo_addr])
        .env("BOREALIS_CLIENT_SECRET", client_secret)
        .args(["--max-concurrency", "1024", "--max-body-bytes", &(4u64 << 30).to_string()])
        .env("BOREALIS_LOG", "warn,borealis_agent::session=info");
    let mut agent = Process::spawn("agent", command)?;
    agent.wait_for("connected to the relay")?;
    Ok(agent)
}

/// Creates a credential (`kind` is `agents` or `clients`) on the relay at
/// `relay_http` and returns a bearer token for it.
pub async fn credential_token(
    relay_http: &str,
    admin_token: &str,
    kind: &str,
    body: serde_json::Value,
) -> anyhow::Result<String> {
    let http = reqwest::Client::new();
    let created: serde_json::Value = http
        .post(format!("{relay_http}/api/v1/{kind}"))
        .bearer_auth(admin_token)
        .json(&body)
        .send()
        .await?
        .json()
        .await?;
    let form = [
        ("grant_type", "client_credentials"),
        ("client_id", created["clientId"].as_str().unwrap_or_default()),
        ("client_secret", created["clientSecret"].as_str().unwrap_or_default()),
    ];
    let token: serde_json::Value =
        http.post(format!("{relay_http}/oauth/token")).form(&form).send().await?.json().await?;
    Ok(token["access_token"].as_str().ok_or_else(|| anyhow::anyhow!("no token for the {kind} credential"))?.to_owned())
}

/// `/api/v1/proxy` of the relay at `relay_http` for `target`, direct or
/// through `agent`.
pub fn proxy_url(relay_http: &str, target: &str, agent: Option<&str>) -> url::Url {
    let mut url = url::Url::parse(&format!("{relay_http}/api/v1/proxy")).expect("valid");
    url.query_pairs_mut().append_pair("url", target);
    if let Some(agent) = agent {
        url.query_pairs_mut().append_pair("agent", agent);
    }
    url
}

impl Stack {
    pub async fn start() -> anyhow::Result<Self> {
        let data = std::env::temp_dir().join(format!("borealis-bench-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&data);
        let mut echo_cmd = Command::new(bin_dir().join("borealis-bench"));
        echo_cmd.arg("echo");
        let mut echo = Process::spawn("echo server", echo_cmd)?;
        let echo_addr = echo.wait_for("listening on")?.rsplit(' ').next().unwrap_or_default().to_owned();

        let Relay { process: relay, http: relay_http, agents } = Relay::start(&data, &RelayOptions::default())?;
        let admin_token = std::fs::read_to_string(data.join("admin-token"))?.trim().to_owned();

        install_crypto_provider();
        let (client_id, client_secret) = create_agent(&relay_http, &admin_token, "bench").await?;
        let agent = start_agent(&agents, &client_id, &client_secret, &echo_addr)?;
        println!("relay pid {}, agent pid {}, echo pid {}", relay.pid(), agent.pid(), echo.pid());
        Ok(Self { relay, agent, echo, relay_http, agents_url: agents, echo_addr, admin_token, data_dir: TempDir(data) })
    }

    /// Creates a credential (`kind` is `agents` or `clients`) and returns a
    /// bearer token for it.
    pub async fn token(&self, kind: &str, body: serde_json::Value) -> anyhow::Result<String> {
        credential_token(&self.relay_http, &self.admin_token, kind, body).await
    }

    pub fn data_dir(&self) -> &Path {
        &self.data_dir.0
    }

    /// SIGKILL, then a new relay on the same ports and data dir.
    pub fn restart_relay(&mut self) -> anyhow::Result<()> {
        let address = |url: &str| url.trim_start_matches("http://").to_owned();
        let (http, agents) = (address(&self.relay_http), address(&self.agents_url));
        self.relay.kill();
        let mut relay = spawn_relay(&self.data_dir.0, &http, &agents, &RelayOptions::default())?;
        relay.wait_for("relay ready")?;
        self.relay = relay;
        Ok(())
    }

    /// `/api/v1/proxy` for `target`, direct or through the agent.
    pub fn proxy_url(&self, target: &str, via_agent: bool) -> url::Url {
        proxy_url(&self.relay_http, target, via_agent.then_some("bench"))
    }

    /// Requests the relay has handed to agents so far: (down lanes, down
    /// standby calls, as offers), from its `/metrics`.
    pub async fn dispatches(&self) -> anyhow::Result<(f64, f64, f64)> {
        let text = reqwest::get(format!("{}/metrics", self.relay_http)).await?.text().await?;
        let count = |way: &str| {
            let series = format!("borealis_agent_dispatches_total{{way=\"{way}\"}} ");
            text.lines().find_map(|l| l.strip_prefix(&series)).and_then(|v| v.trim().parse().ok()).unwrap_or(0.0)
        };
        Ok((count("lane"), count("standby"), count("offer")))
    }
}
