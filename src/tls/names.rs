//! The names and addresses a self-signed certificate is made for: this host's name, its mDNS
//! name, `localhost`, and every address of every interface (loopback included), read from
//! Linux's `/proc` (no `getifaddrs` binding needed).
#![forbid(unsafe_code)]

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// Where the kernel keeps the host name.
pub const HOSTNAME_FILE: &str = "/proc/sys/kernel/hostname";
/// The IPv4 routing tries: every local address is a `/32 host LOCAL` leaf.
pub const FIB_TRIE_FILE: &str = "/proc/net/fib_trie";
/// Every IPv6 address of every interface, one a line.
pub const IF_INET6_FILE: &str = "/proc/net/if_inet6";

/// This machine's names and addresses, then `extra`, without duplicates: the host name and
/// `<hostname>.local` (mDNS, how a Pi is usually reached on a LAN), `localhost`, every IPv4
/// and IPv6 address of its interfaces. Files that cannot be read contribute nothing.
pub fn host_names(extra: &[String]) -> Vec<String> {
    let read = |path: &str| std::fs::read_to_string(path).unwrap_or_default();
    let hostname = read(HOSTNAME_FILE);
    let mut addresses = ipv4_addresses(&read(FIB_TRIE_FILE));
    addresses.extend(ipv6_addresses(&read(IF_INET6_FILE)));
    combine(hostname.trim(), &addresses, extra)
}

/// [`host_names`] from its parts (pure, for tests).
pub fn combine(hostname: &str, addresses: &[IpAddr], extra: &[String]) -> Vec<String> {
    let mut names: Vec<String> = Vec::new();
    let mut add = |name: String| {
        if !name.is_empty() && !names.iter().any(|n| n.eq_ignore_ascii_case(&name)) {
            names.push(name);
        }
    };
    if is_dns_name(hostname) && hostname != "localhost" {
        add(hostname.to_string());
        // A name with dots is already qualified; only a bare one gets the mDNS form.
        if !hostname.contains('.') {
            add(format!("{hostname}.local"));
        }
    }
    add("localhost".to_string());
    for ip in addresses {
        add(ip.to_string());
    }
    for name in extra {
        add(name.clone());
    }
    names
}

/// True for a host name a certificate can carry: dot-separated labels of ASCII letters,
/// digits and hyphens (no leading or trailing hyphen), at most 63 bytes each, 253 in all.
pub fn is_dns_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        })
}

/// The local IPv4 addresses in a `/proc/net/fib_trie`: each address line followed by a
/// `/32 host LOCAL` line. The trie lists them once per table, so duplicates are dropped.
pub fn ipv4_addresses(fib_trie: &str) -> Vec<IpAddr> {
    let mut found = Vec::new();
    let mut last: Option<Ipv4Addr> = None;
    for line in fib_trie.lines() {
        let line = line.trim_start_matches([' ', '|', '+', '-']).trim();
        if let Ok(ip) = line.parse::<Ipv4Addr>() {
            last = Some(ip);
        } else if line.starts_with("/32 host LOCAL") {
            if let Some(ip) = last.take() {
                if !found.contains(&IpAddr::V4(ip)) {
                    found.push(IpAddr::V4(ip));
                }
            }
        } else if let Some((prefix, _)) = line.split_once('/') {
            // A subnet line ("10.0.0.0/24 2 0 2") resets the pending address.
            if prefix.trim().parse::<Ipv4Addr>().is_ok() {
                last = None;
            }
        }
    }
    found
}

/// The IPv6 addresses in a `/proc/net/if_inet6` (first column: 32 hex digits).
pub fn ipv6_addresses(if_inet6: &str) -> Vec<IpAddr> {
    let mut found = Vec::new();
    for line in if_inet6.lines() {
        let Some(hex) = line.split_whitespace().next() else {
            continue;
        };
        let Ok(bits) = u128::from_str_radix(hex, 16) else {
            continue;
        };
        if hex.len() != 32 {
            continue;
        }
        let ip = IpAddr::V6(Ipv6Addr::from(bits));
        if !found.contains(&ip) {
            found.push(ip);
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    const FIB_TRIE: &str = "Main:
  +-- 0.0.0.0/0 3 0 5
     |-- 0.0.0.0
        /0 universe UNICAST
     +-- 127.0.0.0/8 2 0 2
        +-- 127.0.0.0/31 1 0 0
           |-- 127.0.0.0
              /8 host LOCAL
           |-- 127.0.0.1
              /32 host LOCAL
        |-- 127.255.255.255
           /32 link BROADCAST
     +-- 192.168.1.0/24 2 0 2
        |-- 192.168.1.0
           /24 link UNICAST
        |-- 192.168.1.23
           /32 host LOCAL
Local:
  +-- 0.0.0.0/0 3 0 5
           |-- 127.0.0.1
              /32 host LOCAL
        |-- 192.168.1.23
           /32 host LOCAL
";

    const IF_INET6: &str = "\
00000000000000000000000000000001 01 80 10 80       lo
fe80000000000000021122fffe334455 02 40 20 80     eth0
";

    #[test]
    fn local_ipv4_addresses_are_the_host_local_leaves_once_each() {
        assert_eq!(
            ipv4_addresses(FIB_TRIE),
            vec![
                "127.0.0.1".parse::<IpAddr>().unwrap(),
                "192.168.1.23".parse().unwrap()
            ]
        );
        assert!(ipv4_addresses("").is_empty());
    }

    #[test]
    fn ipv6_addresses_come_from_the_first_column() {
        assert_eq!(
            ipv6_addresses(IF_INET6),
            vec![
                "::1".parse::<IpAddr>().unwrap(),
                "fe80::211:22ff:fe33:4455".parse().unwrap()
            ]
        );
        assert!(ipv6_addresses("garbage line\nzz 01\n").is_empty());
    }

    #[test]
    fn names_are_the_host_its_mdns_name_localhost_addresses_then_extras() {
        let ips: Vec<IpAddr> = vec!["127.0.0.1".parse().unwrap(), "::1".parse().unwrap()];
        assert_eq!(
            combine("pi", &ips, &["cam.example".into(), "PI".into()]),
            [
                "pi",
                "pi.local",
                "localhost",
                "127.0.0.1",
                "::1",
                "cam.example"
            ]
        );
        assert_eq!(
            combine("cam.lan", &[], &[]),
            ["cam.lan", "localhost"],
            "a qualified name gets no .local form"
        );
        assert_eq!(
            combine("bad_name!", &[], &[]),
            ["localhost"],
            "a name a certificate cannot hold is left out"
        );
    }

    #[test]
    fn dns_names_are_letters_digits_and_inner_hyphens() {
        for good in ["pi", "rpi-cam.local", "a1.b2.c3", "x"] {
            assert!(is_dns_name(good), "{good}");
        }
        for bad in [
            "",
            "-pi",
            "pi-",
            "a..b",
            "under_score",
            "sp ace",
            "é",
            &"a".repeat(64),
        ] {
            assert!(!is_dns_name(bad), "{bad}");
        }
    }
}
