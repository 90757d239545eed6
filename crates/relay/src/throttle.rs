//! Failed authentication: logged with the peer address (never what was
//! presented), counted in `/metrics`, and limited per peer address, so that
//! guessing secrets or the admin token is slow and visible.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::Duration;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use tokio::time::Instant;

use crate::metrics::{AuthFailureLabels, Metrics};

/// Peers tracked at most; past it, peers that are back to a full allowance
/// are forgotten first.
const MAX_PEERS: usize = 65_536;

/// A token bucket per peer: each failure takes one token, `per_minute`
/// tokens come back every minute, and a peer with none left is refused
/// until one comes back.
pub struct AuthGuard {
    per_minute: f64,
    peers: Mutex<HashMap<IpAddr, Bucket>>,
    failures: Family<AuthFailureLabels, Counter>,
    limited: Counter,
}

#[derive(Clone, Copy)]
struct Bucket {
    tokens: f64,
    updated: Instant,
}

impl AuthGuard {
    pub fn new(per_minute: u32, metrics: &Metrics) -> Self {
        Self {
            per_minute: f64::from(per_minute.max(1)),
            peers: Mutex::default(),
            failures: metrics.auth_failures.clone(),
            limited: metrics.rate_limited.clone(),
        }
    }

    fn refilled(&self, bucket: Bucket, now: Instant) -> Bucket {
        let earned = now.duration_since(bucket.updated).as_secs_f64() * self.per_minute / 60.0;
        Bucket { tokens: (bucket.tokens + earned).min(self.per_minute), updated: now }
    }

    /// `Err(wait)` when `peer` has failed too often and must wait that long.
    pub fn check(&self, peer: Option<IpAddr>) -> Result<(), Duration> {
        let Some(peer) = peer else { return Ok(()) };
        let peers = self.peers.lock().expect("auth guard lock");
        let Some(bucket) = peers.get(&peer) else { return Ok(()) };
        let bucket = self.refilled(*bucket, Instant::now());
        if bucket.tokens >= 1.0 {
            return Ok(());
        }
        self.limited.inc();
        Err(Duration::from_secs_f64((1.0 - bucket.tokens) * 60.0 / self.per_minute))
    }

    /// Records a failed authentication by `peer` presenting `credential`.
    /// `detail` may come from the peer: it is logged escaped and shortened.
    pub fn failed(&self, peer: Option<IpAddr>, credential: &'static str, detail: &str) {
        self.failures.get_or_create(&AuthFailureLabels { credential }).inc();
        let from = peer.map_or_else(|| "-".to_owned(), |p| p.to_string());
        tracing::warn!(peer = %from, credential, detail = ?shortened(detail, 120), "authentication failed");
        let Some(peer) = peer else { return };
        let now = Instant::now();
        let mut peers = self.peers.lock().expect("auth guard lock");
        if peers.len() >= MAX_PEERS && !peers.contains_key(&peer) {
            peers.retain(|_, b| self.refilled(*b, now).tokens < self.per_minute);
            if peers.len() >= MAX_PEERS {
                peers.clear();
            }
        }
        let bucket = peers.entry(peer).or_insert(Bucket { tokens: self.per_minute, updated: now });
        let mut refilled = self.refilled(*bucket, now);
        refilled.tokens = (refilled.tokens - 1.0).max(0.0);
        *bucket = refilled;
    }
}

/// At most `max` characters of `text`, marked when cut.
pub fn shortened(text: &str, max: usize) -> String {
    match text.char_indices().nth(max) {
        Some((at, _)) => format!("{}…", &text[..at]),
        None => text.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_peer_is_refused_after_its_allowance_and_recovers() {
        let guard = AuthGuard::new(10, &Metrics::default());
        let peer = Some(IpAddr::from([192, 0, 2, 1]));
        let other = Some(IpAddr::from([192, 0, 2, 2]));
        for _ in 0..10 {
            assert!(guard.check(peer).is_ok());
            guard.failed(peer, "admin_token", "wrong");
        }
        let wait = guard.check(peer).unwrap_err();
        assert!(wait > Duration::ZERO && wait <= Duration::from_secs(6), "{wait:?}");
        assert!(guard.check(other).is_ok(), "another peer is not affected");
        tokio::time::advance(wait).await;
        assert!(guard.check(peer).is_ok(), "one failure is allowed again after the wait");
        guard.failed(peer, "admin_token", "wrong");
        assert!(guard.check(peer).is_err());
    }

    #[test]
    fn details_are_shortened() {
        assert_eq!(shortened("abcdef", 3), "abc…");
        assert_eq!(shortened("abc", 3), "abc");
    }
}
