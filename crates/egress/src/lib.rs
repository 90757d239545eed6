//! Outbound HTTP under a destination policy.
//!
//! Both ends of Borealis make HTTP calls on someone else's behalf: the relay
//! in direct mode, the agent inside a private network. Each call is bounded
//! by a [`Policy`]:
//!
//! - [`guard`]: the relay's address guard. Refuses loopback, private,
//!   link-local (cloud metadata), CGNAT, ULA and similar addresses unless a
//!   range is allow-listed.
//! - [`allow`]: the agent's allow-list of hosts, ports, domains and CIDRs.
//! - [`resolve`]: the DNS resolver that applies the policy to every resolved
//!   address, so the address that is checked is the address connected to.
//! - [`client`]: [`Egress`], the HTTP client that sends one request under a
//!   policy, never follows redirects, and classifies failures ([`EgressError`]).

pub mod allow;
pub mod client;
pub mod guard;
pub mod headers;
pub mod resolve;

pub use allow::{AllowList, AllowRule};
pub use client::{Egress, EgressError, EgressOptions, Fault};
pub use guard::AddressGuard;
pub use reqwest;

use std::net::IpAddr;

/// Which destinations one side may reach.
#[derive(Debug, Clone)]
pub enum Policy {
    /// Public addresses only, plus the listed ranges (relay, direct mode).
    Guarded(AddressGuard),
    /// Only what the rules name (agent).
    AllowList(AllowList),
}

/// Why a destination was refused. Shown to operators, so it names the rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub destination: String,
    pub reason: String,
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "destination {} is not allowed: {}", self.destination, self.reason)
    }
}

impl std::error::Error for Refusal {}

/// What a check by name decided, before any DNS lookup.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NameDecision {
    /// A rule names this host (and port): any address it resolves to is fine.
    Allowed,
    /// No rule names it: every resolved address must pass the address check.
    CheckAddresses,
}

impl Policy {
    /// Checks a host and port before resolution. IP literals are decided here.
    pub fn check_name(&self, host: &url::Host<&str>, port: u16) -> Result<NameDecision, Refusal> {
        match self {
            Policy::Guarded(guard) => match host {
                url::Host::Domain(_) => Ok(NameDecision::CheckAddresses),
                url::Host::Ipv4(ip) => guard.check(IpAddr::V4(*ip)).map(|()| NameDecision::Allowed),
                url::Host::Ipv6(ip) => guard.check(IpAddr::V6(*ip)).map(|()| NameDecision::Allowed),
            },
            Policy::AllowList(list) => list.check_name(host, port),
        }
    }

    /// Checks one resolved address of a host that no name rule allowed.
    pub fn check_address(&self, host: &str, ip: IpAddr) -> Result<(), Refusal> {
        match self {
            Policy::Guarded(guard) => guard
                .check(ip)
                .map_err(|refusal| Refusal { destination: format!("{host} ({ip})"), reason: refusal.reason }),
            Policy::AllowList(list) => list.check_address(host, ip),
        }
    }

    /// True when a resolved name needs no address check at all.
    fn name_allows_any_address(&self, host: &str) -> bool {
        match self {
            Policy::Guarded(_) => false,
            Policy::AllowList(list) => list.allows_name_on_some_port(host),
        }
    }
}
