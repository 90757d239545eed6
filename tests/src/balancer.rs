//! A real HAProxy (Debian's `haproxy` binary) as a TCP load balancer on free
//! loopback ports, for tests where several relay replicas sit behind one
//! address, as they do behind a load balancer in production.
//!
//! Each named group (say `http` for the relays' API listeners and `agents`
//! for their gRPC listeners) gets a frontend that spreads connections
//! round-robin over the group's backends. A backend is health-checked every
//! 500 ms and one failed check takes it out, so a killed replica stops
//! getting connections within about a second; a connection that still meets
//! a dead backend is retried on another one. Client and server timeouts are
//! an hour: agents hold gRPC streams for a whole test, and the tunnel's
//! heartbeats, not HAProxy, decide when one is dead.
//!
//! HAProxy's own log (server state changes, one line per connection with the
//! backend it went to) is in [`Balancer::log`].
//!
//! [`Balancer::start_sending_proxy`] makes HAProxy open each connection to a
//! backend with a PROXY protocol v2 header naming the client; the relays
//! must then trust it (`--trusted-proxy`). [`Balancer::start_replicas`] is
//! the set-up of docs/operations.md: that, and each server checked with `GET /readyz` on
//! its replica's HTTP listener, so a replica that hangs (the kernel still
//! accepts for a stopped process) or lost its database is taken out of
//! every group.

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::temp_dir::TempDir;

/// An HAProxy process; killed on drop.
pub struct Balancer {
    child: Child,
    dir: TempDir,
    /// Each group's name and the address its frontend listens on.
    frontends: Vec<(String, SocketAddr)>,
}

impl Balancer {
    /// Starts one HAProxy with a frontend on a free 127.0.0.1 port for each
    /// `(group, backends)`, and waits until every frontend accepts
    /// connections. A group name must be a word (letters, digits, `-`, `_`).
    pub fn start(groups: &[(&str, Vec<SocketAddr>)]) -> Self {
        let frontends: Vec<SocketAddr> = groups.iter().map(|_| free_port()).collect();
        Self::start_on(groups, &frontends)
    }

    /// [`Balancer::start`], with a PROXY protocol v2 header on every
    /// connection to a backend (`send-proxy-v2`).
    pub fn start_sending_proxy(groups: &[(&str, Vec<SocketAddr>)]) -> Self {
        let frontends: Vec<SocketAddr> = groups.iter().map(|_| free_port()).collect();
        Self::launch(groups, &frontends, true)
    }

    /// [`Balancer::start_on`] as docs/operations.md sets it up for replicas: a PROXY
    /// protocol v2 header on every connection to a backend, and server `i`
    /// of every group checked with `GET /readyz` at `ready[i]`.
    pub fn start_replicas(groups: &[(&str, Vec<SocketAddr>)], binds: &[SocketAddr], ready: &[SocketAddr]) -> Self {
        Self::launch_with(groups, binds, true, Some(ready))
    }

    /// [`Balancer::start`] with each group's frontend on the address given
    /// (from [`free_port`]): for backends that must know the balancer's
    /// address before it starts, as relays do for their `--public-url`.
    pub fn start_on(groups: &[(&str, Vec<SocketAddr>)], binds: &[SocketAddr]) -> Self {
        Self::launch(groups, binds, false)
    }

    fn launch(groups: &[(&str, Vec<SocketAddr>)], binds: &[SocketAddr], send_proxy: bool) -> Self {
        Self::launch_with(groups, binds, send_proxy, None)
    }

    fn launch_with(
        groups: &[(&str, Vec<SocketAddr>)],
        binds: &[SocketAddr],
        send_proxy: bool,
        ready: Option<&[SocketAddr]>,
    ) -> Self {
        assert_eq!(groups.len(), binds.len(), "one frontend address per group");
        let mut names: Vec<&str> = groups.iter().map(|(name, _)| *name).collect();
        for name in &names {
            let word = !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
            assert!(word, "balancer group {name:?} is not a word");
        }
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), groups.len(), "balancer group names repeat");

        let dir = TempDir::new("haproxy");
        let frontends: Vec<(String, SocketAddr)> =
            groups.iter().zip(binds).map(|((name, _), bind)| (name.to_string(), *bind)).collect();
        let sections: Vec<(&str, SocketAddr, &[SocketAddr])> =
            groups.iter().zip(&frontends).map(|((name, backends), (_, bind))| (*name, *bind, &backends[..])).collect();
        let config_path = dir.path().join("haproxy.cfg");
        std::fs::write(&config_path, config(&sections, send_proxy, ready)).unwrap();
        let log = std::fs::File::create(dir.path().join("haproxy.log")).unwrap();
        // -db: stay in the foreground, one process, alerts on stderr.
        let child = Command::new(program())
            .arg("-db")
            .arg("-f")
            .arg(&config_path)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("start haproxy (apt-get install -y haproxy)");
        let mut balancer = Balancer { child, dir, frontends };
        balancer.wait_listening();
        balancer
    }

    /// The address of `group`'s frontend.
    pub fn addr(&self, group: &str) -> SocketAddr {
        let found = self.frontends.iter().find(|(name, _)| name == group);
        found.map(|(_, addr)| *addr).unwrap_or_else(|| {
            let names: Vec<&str> = self.frontends.iter().map(|(name, _)| name.as_str()).collect();
            panic!("no balancer group {group:?} (there are {names:?})")
        })
    }

    /// `http://127.0.0.1:PORT` of `group`'s frontend.
    pub fn url(&self, group: &str) -> String {
        format!("http://{}", self.addr(group))
    }

    /// What HAProxy logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("haproxy.log")).unwrap_or_default()
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Polls every frontend with a TCP connect until all accept; panics
    /// with HAProxy's log if it exits first.
    fn wait_listening(&mut self) {
        let start = Instant::now();
        for (name, addr) in self.frontends.clone() {
            loop {
                if let Ok(Some(status)) = self.child.try_wait() {
                    panic!("haproxy exited with {status} before listening:\n{}", self.log());
                }
                if TcpStream::connect_timeout(&addr, Duration::from_secs(1)).is_ok() {
                    break;
                }
                let waited = start.elapsed();
                assert!(
                    waited < crate::time::PATIENCE,
                    "haproxy is not listening for {name} on {addr} after {waited:?}:\n{}",
                    self.log()
                );
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        // Someone else may have taken a port between free_port and HAProxy's
        // bind; then HAProxy exits, maybe only now.
        std::thread::sleep(Duration::from_millis(100));
        if let Ok(Some(status)) = self.child.try_wait() {
            panic!("haproxy exited with {status}:\n{}", self.log());
        }
    }
}

impl Drop for Balancer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A port nothing listens on now, as the other helpers pick theirs.
/// A 127.0.0.1 address with a port free now.
pub fn free_port() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap()
}

/// `haproxy` from PATH, else Debian's `/usr/sbin/haproxy` (a non-root PATH
/// has no sbin).
fn program() -> PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    let dirs = std::env::split_paths(&path).chain(["/usr/local/sbin".into(), "/usr/sbin".into()]);
    dirs.map(|dir| dir.join("haproxy")).find(|p| p.is_file()).unwrap_or_else(|| "haproxy".into())
}

/// The HAProxy config: a frontend on `bind` and a backend over `backends`
/// for each `(name, bind, backends)`; backend servers are `s0`, `s1`, ... in
/// the order given; a group named `agents` balances by least connections.
/// With `ready`, server `i` is checked with `GET /readyz`
/// at `ready[i]` (the check carries no PROXY header: it has an address of
/// its own); without, a TCP connect is the check.
fn config(sections: &[(&str, SocketAddr, &[SocketAddr])], send_proxy: bool, ready: Option<&[SocketAddr]>) -> String {
    // maxconn 20000 wants ~40000 open files; where the hard limit is lower,
    // `no strict-limits` makes that a warning, not a refusal to start.
    // `option redispatch 1`: every retry after a failed connect goes to
    // another server, with no turn-around wait.
    let mut out = String::from(
        "global
    maxconn 20000
    no strict-limits
    log stderr format iso local0 info

defaults
    mode tcp
    log global
    option tcplog
    option dontlognull
    balance roundrobin
    timeout connect 2s
    timeout client 1h
    timeout server 1h
    retries 3
    option redispatch 1
    default-server check inter 500ms fall 1 rise 1
",
    );
    if ready.is_some() {
        out.push_str(
            "    option httpchk\n    http-check send meth GET uri /readyz\n    http-check expect status 200\n",
        );
    }
    for (name, bind, backends) in sections {
        out.push_str(&format!("\nfrontend {name}\n    bind {bind}\n    default_backend {name}\n"));
        out.push_str(&format!("\nbackend {name}\n"));
        if *name == "agents" {
            // Agents hold their connections for hours: a new one goes to the
            // replica holding fewest, so agents moved off one spread out.
            out.push_str("    balance leastconn\n");
        }
        for (i, backend) in backends.iter().enumerate() {
            let proxy = if send_proxy { " send-proxy-v2" } else { "" };
            let check = match ready {
                Some(ready) => format!(" check addr {} port {}", ready[i].ip(), ready[i].port()),
                None => String::new(),
            };
            out.push_str(&format!("    server s{i} {backend}{proxy}{check}\n"));
        }
    }
    out
}
