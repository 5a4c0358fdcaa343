//! Which addresses a JWKS fetch may reach. One rule for both places that look: the compile
//! step (an IP address written in the URL) and the gateway's resolver (every address a host
//! name resolves to, checked again at each fetch).
//!
//! Public unicast addresses may be fetched from; loopback only when the deployment allows it
//! (`allow_loopback_jwks`); everything else never: private (10/8, 172.16/12, 192.168/16),
//! carrier-grade NAT (100.64/10), link-local (169.254/16 with the cloud metadata address,
//! fe80::/10), unique-local (fc00::/7), unspecified and "this network" (0/8, ::), multicast,
//! broadcast, reserved, documentation and benchmarking ranges, and IPv6 forms that carry such
//! an IPv4 address (IPv4-mapped, IPv4-compatible, NAT64, 6to4).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// What kind of address a JWKS URL leads to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AddressClass {
    /// A global unicast address.
    Public,
    /// This machine (127/8, ::1).
    Loopback,
    /// Anything that is neither: never fetched from.
    NonPublic,
}

/// Classifies one address (see the module docs).
pub fn classify(ip: IpAddr) -> AddressClass {
    match ip {
        IpAddr::V4(v4) => classify_v4(v4),
        IpAddr::V6(v6) => classify_v6(v6),
    }
}

/// Whether a fetch may connect to `ip`.
pub fn fetch_allowed(ip: IpAddr, allow_loopback: bool) -> bool {
    match classify(ip) {
        AddressClass::Public => true,
        AddressClass::Loopback => allow_loopback,
        AddressClass::NonPublic => false,
    }
}

fn in_v4(ip: Ipv4Addr, net: [u8; 4], prefix: u32) -> bool {
    let mask = u32::MAX.checked_shl(32 - prefix).unwrap_or(0);
    u32::from(ip) & mask == u32::from(Ipv4Addr::from(net)) & mask
}

fn classify_v4(ip: Ipv4Addr) -> AddressClass {
    const NON_PUBLIC: [([u8; 4], u32); 14] = [
        ([0, 0, 0, 0], 8),       // "this network", 0.0.0.0 included
        ([10, 0, 0, 0], 8),      // private
        ([100, 64, 0, 0], 10),   // carrier-grade NAT
        ([169, 254, 0, 0], 16),  // link-local, cloud metadata (169.254.169.254)
        ([172, 16, 0, 0], 12),   // private
        ([192, 0, 0, 0], 24),    // IETF protocol assignments
        ([192, 0, 2, 0], 24),    // documentation
        ([192, 88, 99, 0], 24),  // 6to4 relay anycast
        ([192, 168, 0, 0], 16),  // private
        ([198, 18, 0, 0], 15),   // benchmarking
        ([198, 51, 100, 0], 24), // documentation
        ([203, 0, 113, 0], 24),  // documentation
        ([224, 0, 0, 0], 4),     // multicast
        ([240, 0, 0, 0], 4),     // reserved, 255.255.255.255 included
    ];
    if ip.is_loopback() {
        AddressClass::Loopback
    } else if NON_PUBLIC.iter().any(|&(net, len)| in_v4(ip, net, len)) {
        AddressClass::NonPublic
    } else {
        AddressClass::Public
    }
}

fn in_v6(ip: Ipv6Addr, net: u128, prefix: u32) -> bool {
    let mask = u128::MAX.checked_shl(128 - prefix).unwrap_or(0);
    u128::from(ip) & mask == net & mask
}

fn classify_v6(ip: Ipv6Addr) -> AddressClass {
    const NON_PUBLIC: [(u128, u32); 10] = [
        (0x0064_ff9b_0001 << 80, 48), // NAT64 for local use
        (0x0100 << 112, 64),          // discard-only
        (0x2001 << 112, 23),          // IETF protocol assignments, Teredo included
        (0x2001_0db8 << 96, 32),      // documentation
        (0x3fff << 112, 20),          // documentation
        (0x5f00 << 112, 16),          // segment routing
        (0xfc00 << 112, 7),           // unique-local
        (0xfe80 << 112, 10),          // link-local
        (0xfec0 << 112, 10),          // site-local (deprecated)
        (0xff00 << 112, 8),           // multicast
    ];
    let bits = u128::from(ip);
    if ip.is_loopback() {
        return AddressClass::Loopback;
    }
    // Forms that carry an IPv4 address are what that address is.
    if let Some(v4) = ip.to_ipv4_mapped() {
        return classify_v4(v4);
    }
    let embedded = |shift: u32| Ipv4Addr::from((bits >> shift) as u32);
    if in_v6(ip, 0x0064_ff9b << 96, 96) || in_v6(ip, 0x2002 << 112, 16) {
        // NAT64 (well-known prefix) and 6to4 reach the IPv4 address they embed; loopback
        // through them is not this machine, so only a public one passes.
        let v4 = if bits >> 112 == 0x2002 {
            embedded(80)
        } else {
            embedded(0)
        };
        return match classify_v4(v4) {
            AddressClass::Public => AddressClass::Public,
            _ => AddressClass::NonPublic,
        };
    }
    // :: and the deprecated IPv4-compatible ::a.b.c.d.
    if in_v6(ip, 0, 96) || NON_PUBLIC.iter().any(|&(net, len)| in_v6(ip, net, len)) {
        AddressClass::NonPublic
    } else {
        AddressClass::Public
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn class(s: &str) -> AddressClass {
        classify(s.parse().unwrap())
    }

    #[test]
    fn ipv4_ranges() {
        for ip in ["127.0.0.1", "127.255.255.254"] {
            assert_eq!(class(ip), AddressClass::Loopback, "{ip}");
        }
        for ip in [
            "0.0.0.0",
            "0.1.2.3",
            "10.0.0.1",
            "10.255.255.255",
            "100.64.0.1",
            "100.127.255.255",
            "169.254.169.254",
            "169.254.0.1",
            "172.16.0.1",
            "172.31.255.255",
            "192.0.0.8",
            "192.0.2.1",
            "192.88.99.1",
            "192.168.1.1",
            "198.18.0.1",
            "198.19.255.255",
            "198.51.100.1",
            "203.0.113.9",
            "224.0.0.1",
            "239.255.255.250",
            "240.0.0.1",
            "255.255.255.255",
        ] {
            assert_eq!(class(ip), AddressClass::NonPublic, "{ip}");
        }
        for ip in [
            "1.1.1.1",
            "8.8.8.8",
            "9.255.255.255",
            "11.0.0.1",
            "100.63.255.255",
            "100.128.0.1",
            "169.253.255.255",
            "172.15.255.255",
            "172.32.0.1",
            "192.167.255.255",
            "192.169.0.1",
            "198.17.255.255",
            "198.20.0.1",
            "223.255.255.255",
        ] {
            assert_eq!(class(ip), AddressClass::Public, "{ip}");
        }
    }

    #[test]
    fn ipv6_ranges() {
        assert_eq!(class("::1"), AddressClass::Loopback);
        for ip in [
            "::",
            "::a00:1",         // IPv4-compatible 10.0.0.1
            "::8.8.8.8",       // IPv4-compatible, deprecated whatever it carries
            "::ffff:10.0.0.1", // IPv4-mapped private
            "::ffff:169.254.169.254",
            "::ffff:0.0.0.0",
            "::ffff:100.64.0.1",
            "64:ff9b::a9fe:a9fe", // NAT64 of 169.254.169.254
            "64:ff9b::7f00:1",    // NAT64 of 127.0.0.1
            "64:ff9b:1::1",
            "100::1",
            "2001::1", // Teredo
            "2001:db8::1",
            "2002:c0a8:0101::1", // 6to4 of 192.168.1.1
            "2002:7f00:0001::1", // 6to4 of 127.0.0.1
            "3fff::1",
            "5f00::1",
            "fc00::1",
            "fd12:3456::1",
            "fe80::1",
            "febf:ffff::1",
            "fec0::1",
            "ff02::1",
        ] {
            assert_eq!(class(ip), AddressClass::NonPublic, "{ip}");
        }
        for ip in [
            "2606:4700:4700::1111",
            "2a00:1450:4001:80b::200e",
            "64:ff9b::808:808",  // NAT64 of 8.8.8.8
            "2002:0808:0808::1", // 6to4 of 8.8.8.8
            "2001:200::1",       // just past 2001::/23
            "fbff:ffff::1",      // just below fc00::/7
        ] {
            assert_eq!(class(ip), AddressClass::Public, "{ip}");
        }
        // IPv4-mapped forms are what they carry, loopback included.
        assert_eq!(class("::ffff:127.0.0.1"), AddressClass::Loopback);
        assert_eq!(class("::ffff:8.8.8.8"), AddressClass::Public);
    }

    #[test]
    fn loopback_needs_the_setting() {
        let lo: IpAddr = "127.0.0.1".parse().unwrap();
        assert!(!fetch_allowed(lo, false));
        assert!(fetch_allowed(lo, true));
        let meta: IpAddr = "169.254.169.254".parse().unwrap();
        assert!(!fetch_allowed(meta, true));
        assert!(fetch_allowed("8.8.8.8".parse().unwrap(), false));
    }
}
