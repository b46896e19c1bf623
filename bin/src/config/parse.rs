//! Parsers for the value kinds of config.md §2. Each returns the parsed value or `None`; the caller
//! owns the error text because every message names the variable and quotes the original value.

use std::net::{IpAddr, Ipv6Addr, SocketAddr};

/// Bytes per kibibyte; every size unit is a power of it.
const KIB_BYTES: u64 = 1024;

/// A boolean: `1,true,yes,on,0,false,no,off`, case-insensitive, already trimmed.
pub fn boolean(trimmed: &str) -> Option<bool> {
    match trimmed.to_ascii_lowercase().as_str() {
        "1" | "true" | "yes" | "on" => Some(true),
        "0" | "false" | "no" | "off" => Some(false),
        _ => None,
    }
}

/// A decimal integer made only of ASCII digits (no sign), within `minimum..=maximum`.
pub fn integer(trimmed: &str, minimum: u64, maximum: u64) -> Option<u64> {
    let value = digits(trimmed)?;
    (minimum..=maximum).contains(&value).then_some(value)
}

/// ASCII digits only, without range check; `None` on anything else or on overflow.
pub fn digits(trimmed: &str) -> Option<u64> {
    if trimmed.is_empty() || !trimmed.bytes().all(|byte| byte.is_ascii_digit()) {
        return None;
    }
    trimmed.parse().ok()
}

/// A size `<digits>[ ]<unit>` in bytes; no unit means MiB and the amount must be positive.
pub fn size_bytes(trimmed: &str) -> Option<u64> {
    let digits_end = trimmed
        .find(|character: char| !character.is_ascii_digit())
        .unwrap_or(trimmed.len());
    let amount = digits(&trimmed[..digits_end])?;
    if amount == 0 {
        return None;
    }
    let rest = &trimmed[digits_end..];
    // At most one space between the amount and the unit, and only when a unit follows.
    let unit = match rest.strip_prefix(' ') {
        Some(unit) if !unit.is_empty() => unit,
        Some(_) => return None,
        None => rest,
    };
    let multiplier = match unit.to_ascii_uppercase().as_str() {
        "" => KIB_BYTES * KIB_BYTES,
        "B" => 1,
        "K" | "KB" | "KIB" => KIB_BYTES,
        "M" | "MB" | "MIB" => KIB_BYTES.pow(2),
        "G" | "GB" | "GIB" => KIB_BYTES.pow(3),
        "T" | "TB" | "TIB" => KIB_BYTES.pow(4),
        _ => return None,
    };
    amount.checked_mul(multiplier)
}

/// Lowest accepted fraction.
pub const FRACTION_MINIMUM: f64 = 0.01;
/// Highest accepted fraction.
pub const FRACTION_MAXIMUM: f64 = 0.99;

/// A plain decimal (`0.25`, `.5`) within `FRACTION_MINIMUM..=FRACTION_MAXIMUM`.
pub fn fraction(trimmed: &str) -> Option<f64> {
    let (whole, decimals) = trimmed.split_once('.').unwrap_or((trimmed, ""));
    let all_digits = |text: &str| text.bytes().all(|byte| byte.is_ascii_digit());
    if whole.is_empty() && decimals.is_empty() || !all_digits(whole) || !all_digits(decimals) {
        return None;
    }
    let value: f64 = trimmed.parse().ok()?;
    // Compare with a tolerance far below the two-decimal granularity of the bounds.
    let tolerance = 1e-12;
    (value >= FRACTION_MINIMUM - tolerance && value <= FRACTION_MAXIMUM + tolerance)
        .then_some(value)
}

/// A node id `name@host` (syntax only; the host is never resolved).
pub fn node_id(trimmed: &str) -> Option<String> {
    let (name, host) = trimmed.split_once('@')?;
    let name_ok = !name.is_empty()
        && name
            .bytes()
            .all(|byte| byte.is_ascii_alphanumeric() || matches!(byte, b'_' | b'.' | b'-'));
    (name_ok && host_ok(host)).then(|| trimmed.to_string())
}

/// A DNS name, an IPv4 address (both `[A-Za-z0-9.-]+`) or a bracketed IPv6 address.
fn host_ok(host: &str) -> bool {
    if let Some(inner) = host
        .strip_prefix('[')
        .and_then(|rest| rest.strip_suffix(']'))
    {
        return inner.parse::<Ipv6Addr>().is_ok();
    }
    !host.is_empty()
        && host
            .bytes()
            .all(|byte| byte.is_ascii_alphanumeric() || matches!(byte, b'.' | b'-'))
}

/// One `CLUSTER_NODES` entry `name@host:peer_port`: the node id and its peer port.
pub fn cluster_entry(trimmed: &str) -> Option<(String, u16)> {
    let (id, port) = trimmed.rsplit_once(':')?;
    let id = node_id(id)?;
    let port = integer(port, 1, u64::from(u16::MAX))?;
    Some((id, u16::try_from(port).ok()?))
}

/// An IP address (`::` = dual-stack any). Brackets around IPv6 are accepted.
pub fn ip_address(trimmed: &str) -> Option<IpAddr> {
    let unbracketed = trimmed
        .strip_prefix('[')
        .and_then(|rest| rest.strip_suffix(']'))
        .unwrap_or(trimmed);
    unbracketed.parse().ok()
}

/// An `ip:port` socket address (`[v6]:port` for IPv6) with a port in 1..=65535.
pub fn socket_address(trimmed: &str) -> Option<SocketAddr> {
    let address: SocketAddr = trimmed.parse().ok()?;
    (address.port() != 0).then_some(address)
}

/// The parts of an `http(s)://authority[/path]` URL this crate checks.
pub struct HttpUrl<'a> {
    /// Everything after the authority, starting with `/`, or empty.
    pub path: &'a str,
}

/// An `http://` or `https://` URL with a host, an optional port and an optional path.
pub fn http_url(trimmed: &str) -> Option<HttpUrl<'_>> {
    let (scheme, rest) = trimmed.split_once("://")?;
    let scheme = scheme.to_ascii_lowercase();
    if scheme != "http" && scheme != "https" {
        return None;
    }
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, path) = rest.split_at(authority_end);
    if !authority_ok(authority) || path.chars().any(|character| character.is_whitespace()) {
        return None;
    }
    Some(HttpUrl { path })
}

/// `host[:port]` where host is a DNS name, an IPv4 address or a bracketed IPv6 address.
fn authority_ok(authority: &str) -> bool {
    let (host, port) = if authority.starts_with('[') {
        match authority.find(']') {
            Some(close) => {
                let (host, rest) = authority.split_at(close + 1);
                match rest.strip_prefix(':') {
                    Some(port) => (host, Some(port)),
                    None if rest.is_empty() => (host, None),
                    None => return false,
                }
            }
            None => return false,
        }
    } else {
        match authority.rsplit_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (authority, None),
        }
    };
    let port_ok = port.is_none_or(|port| integer(port, 1, u64::from(u16::MAX)).is_some());
    host_ok(host) && port_ok
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_follow_the_unit_table() {
        assert_eq!(size_bytes("256"), Some(256 << 20));
        assert_eq!(size_bytes("256MB"), Some(256 << 20));
        assert_eq!(size_bytes("4 g"), Some(4 << 30));
        assert_eq!(size_bytes("1024b"), Some(1024));
        assert_eq!(size_bytes("2KiB"), Some(2048));
        assert_eq!(size_bytes("1T"), Some(1 << 40));
        assert_eq!(size_bytes("0M"), None);
        assert_eq!(size_bytes("4  G"), None);
        assert_eq!(size_bytes("4 "), None);
        assert_eq!(size_bytes("G"), None);
        assert_eq!(size_bytes("1.5G"), None);
        assert_eq!(size_bytes("4X"), None);
        assert_eq!(size_bytes("99999999999999999T"), None);
    }

    #[test]
    fn booleans_are_case_insensitive() {
        for accepted in ["1", "TRUE", "Yes", "on"] {
            assert_eq!(boolean(accepted), Some(true));
        }
        for accepted in ["0", "False", "NO", "off"] {
            assert_eq!(boolean(accepted), Some(false));
        }
        assert_eq!(boolean("y"), None);
    }

    #[test]
    fn fractions_are_bounded() {
        assert_eq!(fraction("0.25"), Some(0.25));
        assert_eq!(fraction(".5"), Some(0.5));
        assert_eq!(fraction("0.01"), Some(0.01));
        assert_eq!(fraction("0.99"), Some(0.99));
        assert_eq!(fraction("1"), None);
        assert_eq!(fraction("0.001"), None);
        assert_eq!(fraction("-0.5"), None);
        assert_eq!(fraction("1e-1"), None);
        assert_eq!(fraction("."), None);
    }

    #[test]
    fn node_ids_are_syntactic() {
        assert!(node_id("node1@node1").is_some());
        assert!(node_id("a_b.c-d@10.0.0.1").is_some());
        assert!(node_id("n@[::1]").is_some());
        assert!(node_id("n@[zz]").is_none());
        assert!(node_id("n@").is_none());
        assert!(node_id("@h").is_none());
        assert!(node_id("n@h@h").is_none());
        assert!(node_id("nödé@h").is_none());
        assert!(node_id("n@h:4100").is_none());
    }

    #[test]
    fn cluster_entries_need_a_port() {
        assert_eq!(cluster_entry("a@b:4100"), Some(("a@b".to_string(), 4100)));
        assert_eq!(cluster_entry("a@[::1]:7"), Some(("a@[::1]".to_string(), 7)));
        assert_eq!(cluster_entry("a@b"), None);
        assert_eq!(cluster_entry("a@b:0"), None);
        assert_eq!(cluster_entry("a@b:70000"), None);
    }

    #[test]
    fn urls_need_scheme_and_host() {
        assert!(http_url("https://issuer.example/.well-known/jwks.json").is_some());
        assert!(http_url("http://127.0.0.1:9000").is_some());
        assert!(http_url("HTTP://[::1]:80/").is_some());
        assert!(http_url("ftp://x").is_none());
        assert!(http_url("https://").is_none());
        assert!(http_url("https://h:port").is_none());
        assert!(http_url("issuer.example").is_none());
    }
}
