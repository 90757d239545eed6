//! Simulated agents: many sessions from one process, speaking the real
//! tunnel protocol (token, `Control`, hello/welcome, heartbeats, the standby
//! calls a quiet agent keeps), each reconnecting like the real agent when
//! its session ends.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use borealis_core::backoff::jittered;
use borealis_protocol::STANDBY_CALLS_AT_START;
use borealis_protocol::v1::{self, agent_control, agent_frame, relay_control, tunnel_client::TunnelClient};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::Endpoint;

/// Counts sessions that currently hold a welcome.
#[derive(Default)]
pub struct Fleet {
    pub connected: AtomicUsize,
    pub welcomes: AtomicUsize,
}

/// Starts `count` sessions against `agents_url` with one bearer token; they
/// run until the process ends.
pub fn launch(count: usize, agents_url: String, token: String, fleet: Arc<Fleet>) {
    let gate = Arc::new(tokio::sync::Semaphore::new(256));
    for n in 0..count {
        let (url, token, fleet, gate) = (agents_url.clone(), token.clone(), fleet.clone(), gate.clone());
        tokio::spawn(async move { session_loop(n, url, token, fleet, gate).await });
    }
}

// The real agent's reconnect policy (`borealis_agent::run`): delays from
// 200 ms, capped at 2 s for 5 minutes after a session that was up ended,
// else at 30 s; a session that held 10 s or ended cleanly starts them over.
const FIRST_DELAY: Duration = Duration::from_millis(200);
const MAX_BACKOFF: Duration = Duration::from_secs(30);
const RECENT_CAP: Duration = Duration::from_secs(2);
const RECENT_OUTAGE: Duration = Duration::from_secs(5 * 60);
const STABLE_SESSION: Duration = Duration::from_secs(10);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);

async fn session_loop(n: usize, url: String, token: String, fleet: Arc<Fleet>, gate: Arc<tokio::sync::Semaphore>) {
    let fresh = || (jittered(FIRST_DELAY, RECENT_CAP), jittered(FIRST_DELAY, MAX_BACKOFF));
    let (mut recent_delays, mut delays) = fresh();
    let mut lost_at: Option<Instant> = None;
    loop {
        let permit = gate.clone().acquire_owned().await.expect("never closed");
        let mut up_since = None;
        let ended = session(n, &url, &token, &fleet, permit, &mut up_since).await;
        if let Some(since) = up_since {
            lost_at = Some(Instant::now());
            if ended.is_ok() || since.elapsed() > STABLE_SESSION {
                (recent_delays, delays) = fresh();
            }
        }
        let recent = lost_at.is_some_and(|at| at.elapsed() < RECENT_OUTAGE);
        let (recent_delay, delay) = (recent_delays.next(), delays.next());
        tokio::time::sleep(if recent { recent_delay } else { delay }.expect("jittered delays never end")).await;
    }
}

/// Sessions that share one source address: a fleet comes from many
/// addresses, and the relay caps connections per address (an eighth of its
/// total by default), so all of them from 127.0.0.1 would meet that cap.
const SESSIONS_PER_ADDRESS: usize = 100;

/// Session `n`'s source address, in 127.1.0.0/16 (all of 127.0.0.0/8 is
/// this host's).
fn source_address(n: usize) -> std::net::IpAddr {
    let group = n / SESSIONS_PER_ADDRESS;
    std::net::Ipv4Addr::new(127, 1, (group / 250) as u8, (group % 250 + 1) as u8).into()
}

async fn session(
    n: usize,
    url: &str,
    token: &str,
    fleet: &Fleet,
    permit: tokio::sync::OwnedSemaphorePermit,
    up_since: &mut Option<Instant>,
) -> anyhow::Result<()> {
    let channel = Endpoint::from_shared(url.to_owned())?
        .local_address(Some(source_address(n)))
        .connect_timeout(CONNECT_TIMEOUT)
        .connect()
        .await?;
    let (tx, rx) = mpsc::channel(4);
    let hello = v1::Hello {
        agent_id: String::new(),
        version: "bench".into(),
        capacity: 1,
        instance: format!("sim-{n}"),
        protocol_version: borealis_protocol::PROTOCOL_VERSION,
        // No request is forwarded through them: they keep the calls a quiet
        // agent starts with.
        standby_calls: STANDBY_CALLS_AT_START,
        allow_list: None,
        lanes: 0,
    };
    tx.send(v1::AgentControl { msg: Some(agent_control::Msg::Hello(hello)) }).await?;
    let mut request = tonic::Request::new(ReceiverStream::new(rx));
    request.metadata_mut().insert(borealis_protocol::AUTHORIZATION, format!("Bearer {token}").parse()?);
    let mut client = TunnelClient::new(channel);
    let mut inbound = client.control(request).await?.into_inner();
    let welcome = match inbound.message().await? {
        Some(v1::RelayControl { msg: Some(relay_control::Msg::Welcome(welcome)) }) => welcome,
        _ => anyhow::bail!("no welcome"),
    };
    let interval = Duration::from_millis(u64::from(welcome.heartbeat_interval_ms));
    // Held open, unused, until the session ends.
    let mut _standby = Vec::new();
    for _ in 0..welcome.standby_calls {
        let (frames, outbound) = mpsc::channel(1);
        let standby = v1::Standby { session_id: welcome.session_id.clone() };
        frames
            .send(v1::AgentFrame { request_id: String::new(), frame: Some(agent_frame::Frame::Standby(standby)) })
            .await?;
        let mut call = tonic::Request::new(ReceiverStream::new(outbound));
        call.metadata_mut().insert(borealis_protocol::AUTHORIZATION, format!("Bearer {token}").parse()?);
        _standby.push((frames, client.forward(call).await?.into_inner()));
    }
    // Connected: let the next session start.
    *up_since = Some(Instant::now());
    drop(permit);
    fleet.connected.fetch_add(1, Ordering::Relaxed);
    fleet.welcomes.fetch_add(1, Ordering::Relaxed);
    let mut ticker = tokio::time::interval(interval);
    let mut sequence = 0;
    let result = loop {
        tokio::select! {
            msg = inbound.message() => match msg {
                Ok(Some(_)) => {}
                Ok(None) => break Ok(()),
                Err(status) => break Err(anyhow::anyhow!(status)),
            },
            _ = ticker.tick() => {
                sequence += 1;
                let beat = v1::Heartbeat { sequence, in_flight: 0 };
                if tx.send(v1::AgentControl { msg: Some(agent_control::Msg::Heartbeat(beat)) }).await.is_err() {
                    break Ok(());
                }
            }
        }
    };
    fleet.connected.fetch_sub(1, Ordering::Relaxed);
    result
}
