//! The relay's address guard for direct mode.
//!
//! A webhook URL is written by whoever writes the deployment file, so direct
//! mode must not become a way into the relay's own network: loopback, cloud
//! metadata, private and the other special-purpose ranges. `RULES` is the
//! whole policy, one row per range: every row of the IANA IPv4 and IPv6
//! Special-Purpose Address Registries (RFC 6890), then a few of our own. The
//! most specific row that contains an address decides. The IPv6 forms that
//! reach an IPv4 address they carry (IPv4-mapped and -translated, NAT64
//! `64:ff9b::/96`, 6to4) are judged as that IPv4 address. Ranges named in the
//! relay's `direct-allow` list pass anyway.
//!
//! Addresses under a network-specific NAT64 prefix (RFC 6052) look like any
//! global address, so the IPv4 address they carry is not checked.

use std::net::{IpAddr, Ipv4Addr};
use std::sync::LazyLock;

use ipnet::IpNet;

use crate::decision::Refusal;

#[derive(Debug, Clone, Default)]
pub struct AddressGuard {
    allow: Vec<IpNet>,
}

impl AddressGuard {
    pub fn new(allow: Vec<IpNet>) -> Self {
        Self { allow }
    }

    pub fn check(&self, ip: IpAddr) -> Result<(), Refusal> {
        if self.allow.iter().any(|net| net.contains(&ip)) {
            return Ok(());
        }
        let Some(Refused { rule, carried_by }) = refused(ip) else {
            return Ok(());
        };
        let carried = match carried_by {
            Some((form, v4)) => format!("it carries {v4} ({}, {}), and ", form.name, form.net),
            None => String::new(),
        };
        Err(Refusal {
            destination: ip.to_string(),
            reason: format!(
                "{carried}{} addresses ({}, {}) are refused in direct mode (allow the range with --direct-allow, or use an agent)",
                rule.name, rule.net, rule.source
            ),
        })
    }
}

/// Why an address is not a public unicast destination, if it is not.
///
/// For an IPv6 form that carries a refused IPv4 address, this is why that IPv4
/// address is refused.
pub fn blocked_reason(ip: IpAddr) -> Option<&'static str> {
    refused(ip).map(|refused| refused.rule.name)
}

/// What the guard does with the addresses of a range.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Verdict {
    /// Not a public destination: refused.
    Refuse,
    /// Globally reachable: passes, even inside a wider refused range.
    Pass,
    /// An IPv6 form that carries an IPv4 address from this bit on (counting
    /// from the top): judged as that address.
    Embeds(u8),
}

use Verdict::{Embeds, Pass, Refuse};

/// The guard's policy: `(range, verdict, what the range is, where it is defined)`.
///
/// The most specific range containing an address decides; an address in no
/// range passes. The registry blocks come in registry order with their
/// "Globally Reachable" column followed: `False` is refused, `True` passes, and
/// `N/A` or no answer (deprecated blocks) is refused. Where a row differs, a
/// comment says why.
const RULES: &[(&str, Verdict, &str, &str)] = &[
    // IANA IPv4 Special-Purpose Address Registry.
    ("0.0.0.0/8", Refuse, "\"this network\"", "RFC 791"),
    ("0.0.0.0/32", Refuse, "unspecified (\"this host\")", "RFC 1122"),
    ("10.0.0.0/8", Refuse, "private", "RFC 1918"),
    ("100.64.0.0/10", Refuse, "shared CGNAT", "RFC 6598"),
    ("127.0.0.0/8", Refuse, "loopback", "RFC 1122"),
    ("169.254.0.0/16", Refuse, "link-local", "RFC 3927"),
    ("172.16.0.0/12", Refuse, "private", "RFC 1918"),
    ("192.0.0.0/24", Refuse, "IETF protocol assignments", "RFC 6890"),
    ("192.0.0.0/29", Refuse, "IPv4 service continuity", "RFC 7335"),
    ("192.0.0.8/32", Refuse, "IPv4 dummy", "RFC 7600"),
    // Globally reachable in the registry, refused here: these anycast addresses
    // exist to find the nearest PCP or TURN server, which is one in the relay's
    // own network. No webhook has a reason to call them.
    ("192.0.0.9/32", Refuse, "Port Control Protocol anycast", "RFC 7723"),
    ("192.0.0.10/32", Refuse, "TURN anycast", "RFC 8155"),
    ("192.0.0.170/32", Refuse, "NAT64/DNS64 discovery", "RFC 8880"),
    ("192.0.0.171/32", Refuse, "NAT64/DNS64 discovery", "RFC 8880"),
    ("192.0.2.0/24", Refuse, "documentation (TEST-NET-1)", "RFC 5737"),
    ("192.31.196.0/24", Pass, "AS112-v4", "RFC 7535"),
    ("192.52.193.0/24", Pass, "AMT", "RFC 7450"),
    // Deprecated; the registry gives no reachability.
    ("192.88.99.0/24", Refuse, "deprecated 6to4 relay anycast", "RFC 7526"),
    ("192.88.99.2/32", Refuse, "6a44 relay anycast", "RFC 6751"),
    ("192.168.0.0/16", Refuse, "private", "RFC 1918"),
    ("192.175.48.0/24", Pass, "AS112 direct delegation", "RFC 7534"),
    ("198.18.0.0/15", Refuse, "benchmarking", "RFC 2544"),
    ("198.51.100.0/24", Refuse, "documentation (TEST-NET-2)", "RFC 5737"),
    ("203.0.113.0/24", Refuse, "documentation (TEST-NET-3)", "RFC 5737"),
    ("240.0.0.0/4", Refuse, "reserved", "RFC 1112"),
    ("255.255.255.255/32", Refuse, "limited broadcast", "RFC 919"),
    // IPv4, ours.
    ("224.0.0.0/4", Refuse, "multicast", "RFC 5771"),
    ("169.254.169.254/32", Refuse, "cloud metadata", "AWS/GCP/Azure/OCI instance metadata"),
    ("100.100.100.200/32", Refuse, "cloud metadata", "Alibaba Cloud instance metadata"),
    ("168.63.129.16/32", Refuse, "cloud metadata", "Azure wire server"),
    // IANA IPv6 Special-Purpose Address Registry.
    ("::1/128", Refuse, "loopback", "RFC 4291"),
    ("::/128", Refuse, "unspecified", "RFC 4291"),
    // Not globally reachable as a destination on the wire, but a dual-stack
    // socket connects to the IPv4 address, so that address decides.
    ("::ffff:0:0/96", Embeds(96), "IPv4-mapped", "RFC 4291"),
    ("64:ff9b::/96", Embeds(96), "NAT64 well-known prefix", "RFC 6052"),
    ("64:ff9b:1::/48", Refuse, "local-use NAT64", "RFC 8215"),
    ("100::/64", Refuse, "discard-only", "RFC 6666"),
    ("100:0:0:1::/64", Refuse, "dummy IPv6 prefix", "RFC 9780"),
    ("2001::/23", Refuse, "IETF protocol assignments", "RFC 2928"),
    // N/A in the registry: the address names a Teredo server and a NATed client.
    ("2001::/32", Refuse, "Teredo", "RFC 4380"),
    // Globally reachable in the registry, refused like their IPv4 twins above;
    // the service registration anycast finds the local network's registrar.
    ("2001:1::1/128", Refuse, "Port Control Protocol anycast", "RFC 7723"),
    ("2001:1::2/128", Refuse, "TURN anycast", "RFC 8155"),
    ("2001:1::3/128", Refuse, "DNS-SD service registration anycast", "RFC 9665"),
    ("2001:2::/48", Refuse, "benchmarking", "RFC 5180"),
    ("2001:3::/32", Pass, "AMT", "RFC 7450"),
    ("2001:4:112::/48", Pass, "AS112-v6", "RFC 7535"),
    // Deprecated; the registry gives no reachability.
    ("2001:10::/28", Refuse, "deprecated ORCHID", "RFC 4843"),
    ("2001:20::/28", Pass, "ORCHIDv2", "RFC 7343"),
    ("2001:30::/28", Pass, "drone remote ID entity tags", "RFC 9374"),
    ("2001:db8::/32", Refuse, "documentation", "RFC 3849"),
    // N/A in the registry: 6to4 reaches the IPv4 address it carries.
    ("2002::/16", Embeds(16), "6to4", "RFC 3056"),
    ("2620:4f:8000::/48", Pass, "AS112 direct delegation", "RFC 7534"),
    ("3fff::/20", Refuse, "documentation", "RFC 9637"),
    ("5f00::/16", Refuse, "SRv6 SIDs", "RFC 9602"),
    ("fc00::/7", Refuse, "unique local (ULA)", "RFC 4193"),
    ("fe80::/10", Refuse, "link-local", "RFC 4291"),
    // IPv6, ours. Only 2000::/3 is allocated as global unicast; the rest is
    // reserved by the IETF and is no public destination today.
    ("::/3", Refuse, "reserved (outside 2000::/3)", "RFC 4291"),
    ("4000::/2", Refuse, "reserved (outside 2000::/3)", "RFC 4291"),
    ("8000::/1", Refuse, "reserved (outside 2000::/3)", "RFC 4291"),
    ("::/96", Refuse, "IPv4-compatible (deprecated)", "RFC 4291"),
    // Not routed on the internet; a translator on the way reaches the IPv4 address.
    ("::ffff:0:0:0/96", Embeds(96), "IPv4-translated", "RFC 2765"),
    ("fec0::/10", Refuse, "site-local (deprecated)", "RFC 3879"),
    ("ff00::/8", Refuse, "multicast", "RFC 4291"),
    ("fd00:ec2::254/128", Refuse, "cloud metadata", "AWS instance metadata"),
];

/// One row of [`RULES`], parsed.
#[derive(Debug)]
struct Rule {
    net: IpNet,
    verdict: Verdict,
    name: &'static str,
    source: &'static str,
}

static TABLE: LazyLock<Vec<Rule>> = LazyLock::new(|| {
    RULES
        .iter()
        .map(|&(net, verdict, name, source)| Rule {
            net: net.parse().unwrap_or_else(|err| panic!("guard rule {net:?}: {err}")),
            verdict,
            name,
            source,
        })
        .collect()
});

/// The rule that refuses an address, and the IPv6 form and IPv4 address it
/// carried when the refused address is a carried one.
struct Refused {
    rule: &'static Rule,
    carried_by: Option<(&'static Rule, Ipv4Addr)>,
}

fn refused(ip: IpAddr) -> Option<Refused> {
    let rule = most_specific(ip)?;
    let v4 = match (rule.verdict, ip) {
        (Pass, _) => return None,
        (Embeds(at), IpAddr::V6(v6)) => Ipv4Addr::from((u128::from(v6) >> (96 - u32::from(at))) as u32),
        // Refuse, or an embedding rule on an IPv4 range, which is a mistake: fail closed.
        _ => return Some(Refused { rule, carried_by: None }),
    };
    match most_specific(IpAddr::V4(v4)) {
        None => None,
        Some(inner) if inner.verdict == Pass => None,
        Some(inner) => Some(Refused { rule: inner, carried_by: Some((rule, v4)) }),
    }
}

fn most_specific(ip: IpAddr) -> Option<&'static Rule> {
    TABLE.iter().filter(|rule| rule.net.contains(&ip)).max_by_key(|rule| rule.net.prefix_len())
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::*;

    fn refused(text: &str) -> bool {
        AddressGuard::default().check(text.parse().unwrap()).is_err()
    }

    fn reason(text: &str) -> Option<&'static str> {
        blocked_reason(text.parse().unwrap())
    }

    /// The registries' "Globally Reachable" column.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    enum Reach {
        True,
        False,
        /// `N/A`, or no value (a deprecated block).
        None,
    }

    /// Every row of the IANA IPv4 and IPv6 Special-Purpose Address Registries
    /// (iana-ipv4-special-registry, iana-ipv6-special-registry), transcribed
    /// from the registries, not from [`RULES`].
    const IANA: &[(&str, Reach)] = &[
        ("0.0.0.0/8", Reach::False),
        ("0.0.0.0/32", Reach::False),
        ("10.0.0.0/8", Reach::False),
        ("100.64.0.0/10", Reach::False),
        ("127.0.0.0/8", Reach::False),
        ("169.254.0.0/16", Reach::False),
        ("172.16.0.0/12", Reach::False),
        ("192.0.0.0/24", Reach::False),
        ("192.0.0.0/29", Reach::False),
        ("192.0.0.8/32", Reach::False),
        ("192.0.0.9/32", Reach::True),
        ("192.0.0.10/32", Reach::True),
        ("192.0.0.170/32", Reach::False),
        ("192.0.0.171/32", Reach::False),
        ("192.0.2.0/24", Reach::False),
        ("192.31.196.0/24", Reach::True),
        ("192.52.193.0/24", Reach::True),
        ("192.88.99.0/24", Reach::None),
        ("192.88.99.2/32", Reach::False),
        ("192.168.0.0/16", Reach::False),
        ("192.175.48.0/24", Reach::True),
        ("198.18.0.0/15", Reach::False),
        ("198.51.100.0/24", Reach::False),
        ("203.0.113.0/24", Reach::False),
        ("240.0.0.0/4", Reach::False),
        ("255.255.255.255/32", Reach::False),
        ("::1/128", Reach::False),
        ("::/128", Reach::False),
        ("::ffff:0:0/96", Reach::False),
        ("64:ff9b::/96", Reach::True),
        ("64:ff9b:1::/48", Reach::False),
        ("100::/64", Reach::False),
        ("100:0:0:1::/64", Reach::False),
        ("2001::/23", Reach::False),
        ("2001::/32", Reach::None),
        ("2001:1::1/128", Reach::True),
        ("2001:1::2/128", Reach::True),
        ("2001:1::3/128", Reach::True),
        ("2001:2::/48", Reach::False),
        ("2001:3::/32", Reach::True),
        ("2001:4:112::/48", Reach::True),
        ("2001:10::/28", Reach::None),
        ("2001:20::/28", Reach::True),
        ("2001:30::/28", Reach::True),
        ("2001:db8::/32", Reach::False),
        ("2002::/16", Reach::None),
        ("2620:4f:8000::/48", Reach::True),
        ("3fff::/20", Reach::False),
        ("5f00::/16", Reach::False),
        ("fc00::/7", Reach::False),
        ("fe80::/10", Reach::False),
    ];

    /// Sampled addresses whose verdict is not the registry column's, and why.
    const EXCEPTIONS: &[(&str, bool, &str)] = &[
        ("192.0.0.9", true, "PCP anycast finds the nearest PCP server: the relay's own network"),
        ("192.0.0.10", true, "TURN anycast finds the nearest TURN server: the relay's own network"),
        ("2001:1::1", true, "PCP anycast, as 192.0.0.9"),
        ("2001:1::2", true, "TURN anycast, as 192.0.0.10"),
        ("2001:1::3", true, "service registration anycast finds the local network's registrar"),
        ("::ffff:128.0.0.0", false, "IPv4-mapped is judged as the IPv4 address: 128.0.0.0 is public"),
        ("64:ff9b::", true, "NAT64 is judged as the IPv4 address: 0.0.0.0"),
        ("64:ff9b::ffff:ffff", true, "NAT64 is judged as the IPv4 address: 255.255.255.255"),
        ("2002:8000::", false, "6to4 is judged as the IPv4 address: 128.0.0.0 is public"),
    ];

    /// The first, the middle and the last address of a range.
    fn samples(net: IpNet) -> [IpAddr; 3] {
        match net {
            IpNet::V4(net) => {
                let (first, last) = (u32::from(net.network()), u32::from(net.broadcast()));
                let span = last - first;
                [first, first + (span >> 1) + (span & 1), last].map(|n| IpAddr::V4(n.into()))
            }
            IpNet::V6(net) => {
                let (first, last) = (u128::from(net.network()), u128::from(net.broadcast()));
                let span = last - first;
                [first, first + (span >> 1) + (span & 1), last].map(|n| IpAddr::V6(n.into()))
            }
        }
    }

    #[test]
    fn every_registry_row_is_refused_unless_globally_reachable() {
        let exceptions: Vec<(IpAddr, bool)> =
            EXCEPTIONS.iter().map(|&(ip, refused, _)| (ip.parse().unwrap(), refused)).collect();
        let mut used = HashSet::new();
        for &(range, reach) in IANA {
            for ip in samples(range.parse().unwrap()) {
                let expected = match exceptions.iter().find(|(exception, _)| *exception == ip) {
                    Some(&(_, refused)) => {
                        used.insert(ip);
                        refused
                    }
                    None => reach != Reach::True,
                };
                let got = AddressGuard::default().check(ip);
                assert_eq!(got.is_err(), expected, "{ip} in {range} (globally reachable: {reach:?}): {got:?}");
            }
        }
        for &(ip, _, why) in EXCEPTIONS {
            assert!(used.contains(&ip.parse::<IpAddr>().unwrap()), "exception {ip} ({why}) is no sample");
        }
    }

    #[test]
    fn every_registry_row_has_its_rule_and_every_pass_is_the_registry_s() {
        let nets: Vec<IpNet> = TABLE.iter().map(|rule| rule.net).collect();
        for &(range, _) in IANA {
            assert!(nets.contains(&range.parse().unwrap()), "{range} has no rule");
        }
        for rule in TABLE.iter().filter(|rule| rule.verdict == Pass) {
            assert!(
                IANA.iter().any(|&(range, reach)| reach == Reach::True && range.parse() == Ok(rule.net)),
                "{} passes but is no globally reachable registry block",
                rule.net
            );
        }
    }

    #[test]
    fn every_rule_is_a_distinct_exact_range() {
        let mut seen = HashSet::new();
        for rule in TABLE.iter() {
            assert_eq!(rule.net, rule.net.trunc(), "{} has host bits set", rule.net);
            assert!(seen.insert(rule.net), "{} is listed twice", rule.net);
            assert!(!rule.name.is_empty() && !rule.source.is_empty(), "{} is unnamed", rule.net);
            if let Embeds(at) = rule.verdict {
                assert!(matches!(rule.net, IpNet::V6(_)) && at <= 96, "{} embeds at {at}", rule.net);
                assert!(usize::from(rule.net.prefix_len()) <= usize::from(at), "{} embeds inside its prefix", rule.net);
            }
        }
    }

    #[test]
    fn refuses_every_non_public_range() {
        for ip in [
            "127.0.0.1",
            "127.1.2.3",
            "10.0.0.1",
            "172.16.0.1",
            "172.31.255.255",
            "192.168.1.1",
            "169.254.169.254",
            "169.254.1.1",
            "100.64.0.1",
            "100.127.255.255",
            "0.0.0.0",
            "224.0.0.1",
            "239.255.255.250",
            "255.255.255.255",
            "::1",
            "::",
            "fe80::1",
            "fec0::1",
            "fc00::1",
            "fd12:3456::1",
            "ff02::1",
            "::ffff:127.0.0.1",
            "::ffff:169.254.169.254",
            "::ffff:10.0.0.1",
            "::ffff:0:7f00:1",
            "::ffff:0:a9fe:a9fe",
            "64:ff9b::7f00:1",
            "64:ff9b:1::1",
            "64:ff9b:1:ffff::808:808",
            "2002:7f00:1::",
            "2002:a9fe:a9fe::1",
            "::127.0.0.1",
            "::8.8.8.8",
            "100::1",
            "100:0:0:1::1",
            "2001::1",
            "2001:2::1",
            "2001:10::1",
            "2001:db8::1",
            "3fff::1",
            "3fff:fff:ffff::1",
            "5f00::1",
            "4000::1",
            "1fff:ffff::1",
            "192.0.0.1",
            "192.0.0.170",
            "192.88.99.1",
            "198.18.0.1",
            "240.0.0.1",
            "168.63.129.16",
            "100.100.100.200",
            "fd00:ec2::254",
        ] {
            assert!(refused(ip), "{ip} should be refused");
        }
    }

    #[test]
    fn passes_public_addresses() {
        for ip in [
            "1.1.1.1",
            "8.8.8.8",
            "9.9.9.9",
            "193.0.6.139",
            "172.32.0.1",
            "172.15.255.255",
            "100.63.255.255",
            "100.128.0.1",
            "168.63.129.17",
            "192.0.1.1",
            "192.31.196.1",
            "192.52.193.1",
            "192.175.48.1",
            "2606:4700::1111",
            "2001:4860:4860::8888",
            "2a00:1450:4001:80b::200e",
            "2c0f:fb50:4003::1",
            "2001:200::1",
            "2001:3::1",
            "2001:4:112::1",
            "2001:20::1",
            "2620:4f:8000::1",
            "3fff:1000::1",
            "::ffff:1.1.1.1",
            "::ffff:0:808:808",
            "64:ff9b::808:808",
            "2002:808:808::1",
        ] {
            assert!(!refused(ip), "{ip} should pass: {:?}", reason(ip));
        }
    }

    #[test]
    fn the_most_specific_rule_names_the_range() {
        assert_eq!(reason("169.254.169.254"), Some("cloud metadata"));
        assert_eq!(reason("169.254.169.253"), Some("link-local"));
        assert_eq!(reason("168.63.129.16"), Some("cloud metadata"));
        assert_eq!(reason("100.100.100.200"), Some("cloud metadata"));
        assert_eq!(reason("100.100.100.201"), Some("shared CGNAT"));
        assert_eq!(reason("fd00:ec2::254"), Some("cloud metadata"));
        assert_eq!(reason("fd00:ec2::253"), Some("unique local (ULA)"));
        assert_eq!(reason("::ffff:0:7f00:1"), Some("loopback"));
        assert_eq!(reason("64:ff9b::a9fe:a9fe"), Some("cloud metadata"));
        assert_eq!(reason("64:ff9b:1::1"), Some("local-use NAT64"));
        assert_eq!(reason("::1"), Some("loopback"));
        assert_eq!(reason("::a00:1"), Some("IPv4-compatible (deprecated)"));
        assert_eq!(reason("ff02::1"), Some("multicast"));
        assert_eq!(reason("2001::1"), Some("Teredo"));
        assert_eq!(reason("8.8.8.8"), None);
    }

    #[test]
    fn a_refusal_names_the_rule_and_the_way_out() {
        let err = AddressGuard::default().check("2002:7f00:1::".parse().unwrap()).unwrap_err();
        for part in
            ["127.0.0.1", "6to4", "2002::/16", "loopback", "127.0.0.0/8", "refused in direct mode", "--direct-allow"]
        {
            assert!(err.reason.contains(part), "{part}: {err}");
        }
        let err = AddressGuard::default().check("168.63.129.16".parse().unwrap()).unwrap_err();
        assert!(err.reason.contains("cloud metadata") && err.reason.contains("refused in direct mode"), "{err}");
    }

    #[test]
    fn allow_list_exempts_a_range_and_only_that_range() {
        let guard = AddressGuard::new(vec!["127.0.0.0/8".parse().unwrap()]);
        assert!(guard.check("127.0.0.1".parse().unwrap()).is_ok());
        let err = guard.check("169.254.169.254".parse().unwrap()).unwrap_err();
        assert!(err.reason.contains("cloud metadata"), "{err}");
    }
}
