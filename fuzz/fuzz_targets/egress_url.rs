//! Destination URLs and the agent's allow-list rules: `client::parse_url`,
//! `Egress::check_url` under the relay's guard and under allow-lists, and
//! `AllowRule` parsing and matching (`Policy::check_name`).
//!
//! Input: UTF-8 lines. The first is the URL; each later one is an allow
//! rule (as `--allow` takes it) and, if it parses as one, a `--direct-allow`
//! range of the relay's guard too.
//!
//! Checked, besides "never panics": a URL `parse_url` takes is http(s) with a
//! host, a port and no credentials; a rule prints as text that parses back
//! to the same rule (refusals list rules in that form, for the operator to
//! copy); a name allowed by an allow-list is named by one of its rules with
//! the URL's port, or is an address one of its rules covers.
#![no_main]

use std::net::IpAddr;
use std::sync::LazyLock;

use borealis_egress::client::parse_url;
use borealis_egress::{AddressGuard, AllowList, AllowRule, Egress, EgressOptions, NameDecision, Policy};
use libfuzzer_sys::fuzz_target;

/// Clients are built once: building one per input would measure reqwest.
static CLIENTS: LazyLock<Vec<Egress>> = LazyLock::new(|| {
    let rules = ["ci.internal:8443", "*.corp.example", "10.0.0.0/8", "[::1]:80", "127.0.0.1"];
    let policies = [
        Policy::Guarded(AddressGuard::default()),
        Policy::Guarded(AddressGuard::new(vec!["10.0.0.0/8".parse().unwrap(), "fd00::/8".parse().unwrap()])),
        Policy::AllowList(AllowList::new(rules.iter().map(|r| r.parse().unwrap()).collect())),
        Policy::AllowList(AllowList::any()),
    ];
    policies.into_iter().map(|p| Egress::new(p, EgressOptions::default()).expect("a client builds")).collect()
});

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let mut lines = text.split('\n');
    let target = lines.next().unwrap_or("");

    let mut rules = Vec::new();
    let mut nets = Vec::new();
    for line in lines.take(16) {
        match line.parse::<AllowRule>() {
            Ok(rule) => {
                let shown = rule.to_string();
                let again = shown.parse::<AllowRule>();
                assert!(
                    again.as_ref().is_ok_and(|r| *r == rule),
                    "rule {line:?} parses as {rule:?}, shown as {shown:?}, which parses as {again:?}"
                );
                if let AllowRule::Network(net) = &rule {
                    nets.push(*net);
                }
                rules.push(rule);
            }
            Err(err) => {
                let _ = err.to_string();
            }
        }
    }

    for client in CLIENTS.iter() {
        if let Err(err) = client.check_url(target) {
            let _ = (err.to_string(), err.code(), err.fault());
        }
    }

    let Ok(url) = parse_url(target) else { return };
    assert!(matches!(url.scheme(), "http" | "https"));
    assert!(url.username().is_empty() && url.password().is_none(), "credentials passed: {url}");
    let host = url.host().expect("parse_url promised a host");
    let port = url.port_or_known_default().expect("parse_url promised a port");

    let guard = Policy::Guarded(AddressGuard::new(nets));
    let _ = guard.check_name(&host, port);

    let list = AllowList::new(rules.clone());
    let policy = Policy::AllowList(list);
    if let Ok(NameDecision::Allowed) = policy.check_name(&host, port) {
        let ip = match host {
            url::Host::Domain(_) => None,
            url::Host::Ipv4(ip) => Some(IpAddr::V4(ip)),
            url::Host::Ipv6(ip) => Some(IpAddr::V6(ip)),
        };
        let name = match host {
            url::Host::Domain(d) => d.trim_end_matches('.').to_ascii_lowercase(),
            _ => ip.unwrap().to_string(),
        };
        let covered = rules.iter().any(|rule| match rule {
            AllowRule::Host { host, port: p } => *host == name && p.is_none_or(|p| p == port),
            AllowRule::Subdomains { domain, port: p } => {
                name.len() > domain.len() + 1
                    && name.ends_with(domain.as_str())
                    && name[..name.len() - domain.len()].ends_with('.')
                    && p.is_none_or(|p| p == port)
            }
            AllowRule::Network(net) => ip.is_some_and(|ip| net.contains(&ip)),
        });
        assert!(covered, "{url} allowed, but no rule of {rules:?} covers it");
    }
    if let url::Host::Domain(name) = host {
        for ip in ["10.1.2.3", "192.168.1.1", "::1", "8.8.8.8"] {
            let ip: IpAddr = ip.parse().unwrap();
            let allowed = policy.check_address(name, ip).is_ok();
            let by_net = rules.iter().any(|r| matches!(r, AllowRule::Network(net) if net.contains(&ip)));
            assert_eq!(allowed, by_net, "{name} resolving to {ip}: allowed {allowed}, rules {rules:?}");
        }
    }
});
