//! The agent's allow-list: the only destinations it forwards to.
//!
//! Rules: `host` (any port), `host:port`, `*.domain` (any subdomain, optionally
//! with `:port`), and a CIDR or bare IP (matched against the resolved address).

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

use ipnet::IpNet;

use crate::decision::{NameDecision, Refusal};

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AllowRule {
    Host { host: String, port: Option<u16> },
    Subdomains { domain: String, port: Option<u16> },
    Network(IpNet),
}

#[derive(Debug, thiserror::Error)]
#[error("invalid allow rule {rule:?}: {reason} (forms: host, host:port, *.domain, 10.0.0.0/8)")]
pub struct RuleError {
    rule: String,
    reason: &'static str,
}

impl FromStr for AllowRule {
    type Err = RuleError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let fail = |reason| RuleError { rule: text.to_owned(), reason };
        let rule = text.trim();
        if rule.is_empty() {
            return Err(fail("it is empty"));
        }
        if rule.contains('/') {
            return rule.parse().map(AllowRule::Network).map_err(|_| fail("not a valid CIDR"));
        }
        if let Ok(ip) = rule.trim_matches(['[', ']']).parse::<IpAddr>() {
            return Ok(AllowRule::Network(IpNet::from(ip)));
        }
        let (host, port) = split_port(rule).ok_or_else(|| fail("the port is not a number from 1 to 65535"))?;
        let host = normalize(host);
        // An address however written (`10.0.0.1.`, `[0:0::1]:80`): without a
        // port a network of one address, as above; with one, kept in the form
        // an address in a URL is compared in.
        if let Ok(ip) = host.parse::<IpAddr>() {
            return Ok(match port {
                None => AllowRule::Network(IpNet::from(ip)),
                Some(port) => AllowRule::Host { host: ip.to_string(), port: Some(port) },
            });
        }
        // What no host in a URL holds (the URL standard's forbidden domain
        // code points, and whitespace): such a rule could match nothing, and
        // `trim` and the `[`/`]` of `[v6]:port` would drop some of it from
        // the rule as shown, which would then read back as another rule.
        if host.is_empty() || host.chars().any(|c| c.is_whitespace() || c.is_control() || "#%/:<>?@[\\]^|".contains(c))
        {
            return Err(fail("not a host name"));
        }
        if let Some(domain) = host.strip_prefix("*.") {
            if domain.is_empty() || domain.contains('*') {
                return Err(fail("a wildcard needs a domain after '*.'"));
            }
            return Ok(AllowRule::Subdomains { domain: domain.to_owned(), port });
        }
        if host.contains('*') {
            return Err(fail("'*' is only allowed as a leading '*.'"));
        }
        Ok(AllowRule::Host { host, port })
    }
}

/// Splits `host:port` and `[v6]:port`; `None` for a bad port.
fn split_port(rule: &str) -> Option<(&str, Option<u16>)> {
    let (host, port) = match rule.rsplit_once(':') {
        Some((host, port)) if !host.contains(':') || host.ends_with(']') => (host, Some(port)),
        _ => (rule, None),
    };
    match port {
        None => Some((host, None)),
        Some(port) => match port.parse::<u16>() {
            Ok(0) | Err(_) => None,
            Ok(port) => Some((host.trim_matches(['[', ']']), Some(port))),
        },
    }
}

fn normalize(host: &str) -> String {
    host.trim_end_matches('.').to_ascii_lowercase()
}

impl fmt::Display for AllowRule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AllowRule::Host { host, port: None } => write!(f, "{host}"),
            // Bracketed, so that it reads back as this rule and not as an address.
            AllowRule::Host { host, port: Some(p) } if host.contains(':') => write!(f, "[{host}]:{p}"),
            AllowRule::Host { host, port: Some(p) } => write!(f, "{host}:{p}"),
            AllowRule::Subdomains { domain, port: None } => write!(f, "*.{domain}"),
            AllowRule::Subdomains { domain, port: Some(p) } => write!(f, "*.{domain}:{p}"),
            AllowRule::Network(net) => write!(f, "{net}"),
        }
    }
}

impl AllowRule {
    /// Whether this name rule covers `host`, ignoring ports.
    fn names(&self, host: &str) -> bool {
        match self {
            AllowRule::Host { host: h, .. } => h == host,
            AllowRule::Subdomains { domain, .. } => {
                host.strip_suffix(domain.as_str()).is_some_and(|prefix| prefix.len() > 1 && prefix.ends_with('.'))
            }
            AllowRule::Network(_) => false,
        }
    }

    fn port_matches(&self, port: u16) -> bool {
        match self {
            AllowRule::Host { port: p, .. } | AllowRule::Subdomains { port: p, .. } => p.is_none_or(|p| p == port),
            AllowRule::Network(_) => true,
        }
    }
}

/// The rules an agent forwards under. Empty and not `any`: nothing passes.
#[derive(Debug, Clone, Default)]
pub struct AllowList {
    rules: Vec<AllowRule>,
    any: bool,
}

impl AllowList {
    pub fn new(rules: Vec<AllowRule>) -> Self {
        Self { rules, any: false }
    }

    /// Every destination passes (`--allow-any`).
    pub fn any() -> Self {
        Self { rules: Vec::new(), any: true }
    }

    pub fn is_empty(&self) -> bool {
        self.rules.is_empty() && !self.any
    }

    pub fn rules(&self) -> &[AllowRule] {
        &self.rules
    }

    /// Whether every destination passes.
    pub fn is_any(&self) -> bool {
        self.any
    }

    /// Whether a request to `url` would pass by name and port, as far as
    /// can be told without resolving it: `Ok(Allowed)`, `Ok(CheckAddresses)`
    /// (the addresses it resolves to decide), or the refusal.
    pub fn check_url(&self, url: &url::Url) -> Result<NameDecision, Refusal> {
        match (url.host(), url.port_or_known_default()) {
            (Some(host), Some(port)) => self.check_name(&host, port),
            _ => Err(Refusal { destination: url.to_string(), reason: "the URL names no host and port".into() }),
        }
    }

    pub(crate) fn check_name(&self, host: &url::Host<&str>, port: u16) -> Result<NameDecision, Refusal> {
        if self.any {
            return Ok(NameDecision::Allowed);
        }
        let name = match host {
            url::Host::Domain(name) => normalize(name),
            url::Host::Ipv4(ip) => return self.check_literal(IpAddr::V4(*ip), port),
            url::Host::Ipv6(ip) => return self.check_literal(IpAddr::V6(*ip), port),
        };
        let naming: Vec<&AllowRule> = self.rules.iter().filter(|r| r.names(&name)).collect();
        if naming.iter().any(|r| r.port_matches(port)) {
            return Ok(NameDecision::Allowed);
        }
        if !naming.is_empty() {
            let listed: Vec<String> = naming.iter().map(|r| r.to_string()).collect();
            return Err(self.refuse(
                format!("{name}:{port}"),
                format!("port {port} is not allowed (rules: {})", listed.join(", ")),
            ));
        }
        if self.rules.iter().any(|r| matches!(r, AllowRule::Network(_))) {
            return Ok(NameDecision::CheckAddresses);
        }
        Err(self.refuse(format!("{name}:{port}"), "no allow rule names this host".into()))
    }

    fn check_literal(&self, ip: IpAddr, port: u16) -> Result<NameDecision, Refusal> {
        let by_network = self.rules.iter().any(|r| matches!(r, AllowRule::Network(net) if net.contains(&ip)));
        let text = ip.to_string();
        let by_name = self.rules.iter().any(|r| r.names(&text) && r.port_matches(port));
        if by_network || by_name {
            Ok(NameDecision::Allowed)
        } else {
            Err(self.refuse(format!("{ip}:{port}"), "no allow rule covers this address".into()))
        }
    }

    pub(crate) fn check_address(&self, host: &str, ip: IpAddr) -> Result<(), Refusal> {
        if self.any || self.rules.iter().any(|r| matches!(r, AllowRule::Network(net) if net.contains(&ip))) {
            return Ok(());
        }
        Err(self.refuse(format!("{host} ({ip})"), "it resolves to an address no allow rule covers".into()))
    }

    pub(crate) fn allows_name_on_some_port(&self, host: &str) -> bool {
        let name = normalize(host);
        self.any || self.rules.iter().any(|r| r.names(&name))
    }

    fn refuse(&self, destination: String, reason: String) -> Refusal {
        Refusal { destination, reason: format!("{reason}; this agent allows only: {}", self.describe()) }
    }

    fn describe(&self) -> String {
        let rules: Vec<String> = self.rules.iter().map(|r| r.to_string()).collect();
        rules.join(", ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn list(rules: &[&str]) -> AllowList {
        AllowList::new(rules.iter().map(|r| r.parse().unwrap()).collect())
    }

    fn decide(list: &AllowList, url: &str) -> Result<NameDecision, Refusal> {
        let url = url::Url::parse(url).unwrap();
        list.check_name(&url.host().unwrap(), url.port_or_known_default().unwrap())
    }

    #[test]
    fn parses_every_form() {
        assert_eq!(
            "Api.Internal.".parse::<AllowRule>().unwrap(),
            AllowRule::Host { host: "api.internal".into(), port: None }
        );
        assert_eq!("ci:8443".parse::<AllowRule>().unwrap(), AllowRule::Host { host: "ci".into(), port: Some(8443) });
        assert_eq!("*.corp".parse::<AllowRule>().unwrap(), AllowRule::Subdomains { domain: "corp".into(), port: None });
        assert_eq!("10.0.0.0/8".parse::<AllowRule>().unwrap(), AllowRule::Network("10.0.0.0/8".parse().unwrap()));
        assert_eq!("[::1]:80".parse::<AllowRule>().unwrap(), AllowRule::Host { host: "::1".into(), port: Some(80) });
        for bad in ["", "host:0", "host:99999", "a*b", "*.", "10.0.0.0/99", "http://x/"] {
            let err = bad.parse::<AllowRule>().unwrap_err().to_string();
            assert!(err.contains("invalid allow rule"), "{bad}: {err}");
        }
    }

    /// Found by fuzz/fuzz_targets/egress_url.rs: `[::1]:80` was shown as
    /// `::1:80` (in refusals that list the rules), which reads back as the
    /// address `::1:80`; a host with colons that no URL can name was taken;
    /// and so was one with whitespace or controls, shown without some of it.
    #[test]
    fn rules_read_back_as_shown() {
        for text in ["[::1]:80", "[2001:db8::1]:8443", "Api.Internal.:8080", "*.corp:443", "10.0.0.0/8", "::1", "ci"] {
            let rule: AllowRule = text.parse().unwrap();
            assert_eq!(rule.to_string().parse::<AllowRule>().unwrap(), rule, "{text} shown as {rule}");
        }
        assert_eq!("[::1]:80".parse::<AllowRule>().unwrap().to_string(), "[::1]:80");
        // fuzz/corpus/egress_url/crash-ip-host-rule: `10.207.0.0.` was the host
        // `10.207.0.0`, shown as that, which reads back as a network.
        assert_eq!("10.207.0.0.".parse::<AllowRule>().unwrap(), "10.207.0.0/32".parse::<AllowRule>().unwrap());
        // Written otherwise than an address in a URL is, it matched nothing.
        let rules = list(&["[0:0::1]:80", "[::FFFF:10.0.0.1]:80", "10.0.0.2.:8080"]);
        for url in ["http://[::1]/", "http://[::ffff:10.0.0.1]/", "http://10.0.0.2:8080/"] {
            assert_eq!(decide(&rules, url).unwrap(), NameDecision::Allowed, "{url}");
        }
        // The fourth (fuzz/corpus/egress_url/crash-whitespace-host-rule):
        // `trim` took the leading controls, the `]` behind them was dropped
        // with the port split, and the host kept the controls after it.
        for bad in [
            "a:b:c",
            "[*.a:b]:80",
            "[a:b:c]:80",
            "\u{b}\u{b}]\u{b}\u{b}\u{b}\u{fffd}l\u{b}\u{b}\u{b}e:79",
            "a\tb",
            "[ a]:80",
            // fuzz/corpus/egress_url/crash-bracket-host-rule: shown as
            // `7[:9615`, read back as `7:9615`.
            "7[.:9615",
            "a]b",
            "a%2fb",
        ] {
            assert!(bad.parse::<AllowRule>().is_err(), "{bad}");
        }
    }

    #[test]
    fn names_ports_and_subdomains() {
        let rules = list(&["ci.internal:8443", "*.corp", "127.0.0.1:9000"]);
        assert_eq!(decide(&rules, "https://ci.internal:8443/x").unwrap(), NameDecision::Allowed);
        assert!(decide(&rules, "https://ci.internal/x").unwrap_err().reason.contains("port 443"));
        assert_eq!(decide(&rules, "http://a.b.corp/").unwrap(), NameDecision::Allowed);
        assert!(decide(&rules, "http://corp/").is_err());
        assert!(decide(&rules, "http://evilcorp/").is_err());
        assert_eq!(decide(&rules, "http://127.0.0.1:9000/").unwrap(), NameDecision::Allowed);
        assert!(decide(&rules, "http://127.0.0.1:9001/").is_err());
    }

    #[test]
    fn networks_defer_names_to_their_addresses() {
        let rules = list(&["10.0.0.0/8"]);
        assert_eq!(decide(&rules, "http://db.internal/").unwrap(), NameDecision::CheckAddresses);
        assert!(rules.check_address("db.internal", "10.1.2.3".parse().unwrap()).is_ok());
        assert!(rules.check_address("db.internal", "192.168.1.1".parse().unwrap()).is_err());
        assert_eq!(decide(&rules, "http://10.9.9.9/").unwrap(), NameDecision::Allowed);
    }
}
