//! rathole (v0.5.0), a Rust TCP tunnel, as the reference for the tunnel's
//! speed: its server and client on loopback, plain TCP, exposing the echo
//! server the other paths reach. Built by `scripts/bench-reference.sh`.

use std::net::TcpListener;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use crate::procs::{Process, TempDir};

pub struct Rathole {
    pub server: Process,
    pub client: Process,
    /// The echo server's `/echo` through the tunnel.
    pub url: url::Url,
    _dir: TempDir,
}

fn free_port() -> anyhow::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

impl Rathole {
    /// Starts the server and the client, and waits until a request reaches
    /// the echo server through them.
    pub async fn start(binary: &Path, echo_addr: &str) -> anyhow::Result<Self> {
        let dir = TempDir::new("rathole");
        std::fs::create_dir_all(dir.path())?;
        let (control, service) = (free_port()?, free_port()?);
        let server_toml = dir.path().join("server.toml");
        let client_toml = dir.path().join("client.toml");
        std::fs::write(
            &server_toml,
            format!(
                "[server]\nbind_addr = \"127.0.0.1:{control}\"\ndefault_token = \"bench\"\n\n\
                 [server.services.echo]\nbind_addr = \"127.0.0.1:{service}\"\n"
            ),
        )?;
        std::fs::write(
            &client_toml,
            format!(
                "[client]\nremote_addr = \"127.0.0.1:{control}\"\ndefault_token = \"bench\"\n\n\
                 [client.services.echo]\nlocal_addr = \"{echo_addr}\"\n"
            ),
        )?;
        let spawn = |role: &str, config: &Path| {
            let mut command = Command::new(binary);
            command.arg(format!("--{role}")).arg(config).env("RUST_LOG", "warn");
            Process::spawn(&format!("rathole {role}"), command)
        };
        let server = spawn("server", &server_toml)?;
        let client = spawn("client", &client_toml)?;
        let url = url::Url::parse(&format!("http://127.0.0.1:{service}/echo"))?;
        let http = reqwest::Client::new();
        for _ in 0..100 {
            if http.post(url.clone()).body("ready?").send().await.is_ok_and(|r| r.status().is_success()) {
                println!("rathole server pid {}, client pid {}", server.pid(), client.pid());
                return Ok(Self { server, client, url, _dir: dir });
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        anyhow::bail!("rathole did not reach the echo server within 10 s")
    }
}
