//! The relay's address guard (`AddressGuard::check`, `guard::blocked_reason`)
//! over every address, with fuzzed `--direct-allow` ranges.
//!
//! Input: 16 bytes of IPv6 address (read as IPv4 when byte 16 is odd, from
//! the first 4), then ranges of 17 bytes each: 16 of address, 1 of prefix
//! length (IPv4 when the length byte's top bit is set).
//!
//! Checked, besides "never panics":
//! - an address inside an allowed range passes;
//! - with no allowed range, `check` refuses exactly what `blocked_reason`
//!   names, and each refusal says why;
//! - the IPv6 forms that carry an IPv4 address (IPv4-mapped, -translated,
//!   NAT64 `64:ff9b::/96`, 6to4 `2002::/16`) are judged as that address, so
//!   none reaches a refused IPv4 address, and none of a passing one is
//!   refused for it;
//! - the agent's allow-list with the same ranges lets an address through
//!   exactly when a range holds it.
#![no_main]

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use borealis_egress::guard::blocked_reason;
use borealis_egress::{AddressGuard, AllowList, AllowRule, Policy};
use ipnet::{IpNet, Ipv4Net, Ipv6Net};
use libfuzzer_sys::fuzz_target;

fn address(bytes: &[u8; 16], v4: bool) -> IpAddr {
    if v4 {
        IpAddr::V4(Ipv4Addr::new(bytes[0], bytes[1], bytes[2], bytes[3]))
    } else {
        IpAddr::V6(Ipv6Addr::from(*bytes))
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((head, rest)) = data.split_first_chunk::<17>() else { return };
    let ip = address(head[..16].try_into().unwrap(), head[16] & 1 == 1);

    let mut nets = Vec::new();
    for chunk in rest.chunks_exact(17).take(8) {
        let v4 = chunk[16] & 0x80 != 0;
        let len = chunk[16] & 0x7f;
        let net = match address(chunk[..16].try_into().unwrap(), v4) {
            IpAddr::V4(a) => Ipv4Net::new(a, len % 33).map(IpNet::V4),
            IpAddr::V6(a) => Ipv6Net::new(a, len.min(128)).map(IpNet::V6),
        };
        nets.extend(net.ok());
    }

    let guard = AddressGuard::new(nets.clone());
    let verdict = guard.check(ip);
    if nets.iter().any(|net| net.contains(&ip)) {
        assert!(verdict.is_ok(), "{ip} is in an allowed range {nets:?} but was refused: {verdict:?}");
    }

    let plain = AddressGuard::default().check(ip);
    assert_eq!(plain.is_err(), blocked_reason(ip).is_some(), "check and blocked_reason disagree on {ip}");
    if let Err(refusal) = &plain {
        assert!(!refusal.reason.is_empty() && !refusal.destination.is_empty());
    }

    // The IPv4 address, carried in each IPv6 form the guard sees through.
    if let IpAddr::V4(v4) = ip {
        let bits = u32::from(v4);
        let o = v4.octets();
        let carriers = [
            v4.to_ipv6_mapped(),
            Ipv6Addr::from((0xffff_u128 << 48) | u128::from(bits)),
            Ipv6Addr::from((0x64_ff9b_u128 << 96) | u128::from(bits)),
            Ipv6Addr::new(
                0x2002,
                u16::from_be_bytes([o[0], o[1]]),
                u16::from_be_bytes([o[2], o[3]]),
                u16::from_be_bytes([head[4], head[5]]),
                0,
                0,
                0,
                u16::from_be_bytes([head[6], head[7]]),
            ),
        ];
        for carrier in carriers {
            let carried = AddressGuard::default().check(IpAddr::V6(carrier));
            assert_eq!(
                carried.is_err(),
                plain.is_err(),
                "{carrier} carries {v4}: the guard says {carried:?} for it, {plain:?} for {v4}"
            );
        }
    }

    let list = Policy::AllowList(AllowList::new(nets.iter().copied().map(AllowRule::Network).collect()));
    let passed = list.check_address("fuzz.example", ip).is_ok();
    assert_eq!(passed, nets.iter().any(|net| net.contains(&ip)), "allow-list of {nets:?} on {ip}");
});
