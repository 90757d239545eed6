//! [`Policy`]: the relay's address guard or the agent's allow-list.

use std::net::IpAddr;

use crate::allow::AllowList;
use crate::decision::{NameDecision, Refusal};
use crate::guard::AddressGuard;

/// Which destinations one side may reach.
#[derive(Debug, Clone)]
pub enum Policy {
    /// Public addresses only, plus the listed ranges (relay, direct mode).
    Guarded(AddressGuard),
    /// Only what the rules name (agent).
    AllowList(AllowList),
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
    pub(crate) fn name_allows_any_address(&self, host: &str) -> bool {
        match self {
            Policy::Guarded(_) => false,
            Policy::AllowList(list) => list.allows_name_on_some_port(host),
        }
    }
}
