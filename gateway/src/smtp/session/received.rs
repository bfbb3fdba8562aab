//! The `Received:` trace header the session prepends to every message
//! (RFC 5321 §4.4), with an id unique to this process and a UTC date (so
//! no time zone database is needed).

use std::fmt::Write as _;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

/// `Received: from <helo> ([ip]) by <host> with <proto> id <id>; <date>`,
/// folded over three lines, ending in CRLF.
pub(super) fn header(helo: &str, peer: IpAddr, hostname: &str, protocol: &str, id: &str) -> String {
    let literal = match peer.to_canonical() {
        IpAddr::V4(v4) => format!("[{v4}]"),
        IpAddr::V6(v6) => format!("[IPv6:{v6}]"),
    };
    format!(
        "Received: from {helo} ({literal})\r\n\tby {hostname} with {protocol} id {id};\r\n\t{}\r\n",
        rfc5322_date(now_secs())
    )
}

fn now_secs() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

/// A short id, unique in this process and unlikely to repeat across
/// restarts: seconds, a counter and random bits, in upper-case hex.
pub(super) fn unique_id() -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let mut random = [0u8; 3];
    // Without randomness the counter still makes it unique here.
    let _ = openssl::rand::rand_bytes(&mut random);
    let mut id = format!("{:X}{n:X}", now_secs());
    for b in random {
        let _ = write!(id, "{b:02X}");
    }
    id
}

/// `Tue, 25 Nov 2025 12:50:00 +0000` (one formatter for the session and DSNs).
pub(super) use crate::deliver::dsn::rfc5322_date;

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn dates() {
        assert_eq!(rfc5322_date(0), "Thu, 01 Jan 1970 00:00:00 +0000");
        assert_eq!(rfc5322_date(951_782_400), "Tue, 29 Feb 2000 00:00:00 +0000");
        assert_eq!(
            rfc5322_date(1_764_075_000),
            "Tue, 25 Nov 2025 12:50:00 +0000"
        );
        assert_eq!(
            rfc5322_date(4_133_980_799),
            "Fri, 31 Dec 2100 23:59:59 +0000"
        );
    }

    #[test]
    fn header_shape() {
        let h = header(
            "client.example",
            "::ffff:192.0.2.1".parse().unwrap(),
            "mx.example",
            "ESMTPS",
            "ABC",
        );
        assert!(
            h.starts_with(
                "Received: from client.example ([192.0.2.1])\r\n\tby mx.example with ESMTPS id ABC;\r\n\t"
            ),
            "{h}"
        );
        assert!(h.ends_with(" +0000\r\n"));
        let v6 = header("a", "2001:db8::1".parse().unwrap(), "b", "ESMTP", "X");
        assert!(v6.contains("([IPv6:2001:db8::1])"), "{v6}");
        assert_ne!(unique_id(), unique_id());
    }
}
