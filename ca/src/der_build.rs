//! Minimal DER writing: tag, length, value. Certificates and CRLs are
//! assembled from these so the exact bytes (string types, order) are ours.

use const_oid::ObjectIdentifier;

/// DER tag and length.
pub fn header(tag: u8, len: usize) -> Vec<u8> {
    let mut out = vec![tag];
    if len < 0x80 {
        out.push(len as u8);
    } else {
        let bytes = len.to_be_bytes();
        let skip = bytes
            .iter()
            .position(|&b| b != 0)
            .unwrap_or(bytes.len() - 1);
        out.push(0x80 | (bytes.len() - skip) as u8);
        out.extend_from_slice(&bytes[skip..]);
    }
    out
}

/// Tag, length and value.
pub fn tlv(tag: u8, value: &[u8]) -> Vec<u8> {
    let mut out = header(tag, value.len());
    out.extend_from_slice(value);
    out
}

/// SEQUENCE of already encoded parts.
pub fn seq(parts: &[&[u8]]) -> Vec<u8> {
    tlv(0x30, &parts.concat())
}

/// SET of already encoded parts (caller gives them in DER order).
pub fn set(parts: &[&[u8]]) -> Vec<u8> {
    tlv(0x31, &parts.concat())
}

/// OBJECT IDENTIFIER.
pub fn oid(o: &ObjectIdentifier) -> Vec<u8> {
    tlv(0x06, o.as_bytes())
}

/// OBJECT IDENTIFIER from dotted text known to be valid (a constant).
pub fn oid_str(dotted: &str) -> Vec<u8> {
    match ObjectIdentifier::new(dotted) {
        Ok(o) => oid(&o),
        // Only constants reach here; an invalid one is a programming error
        // caught by the tests.
        Err(_) => Vec::new(),
    }
}

/// INTEGER from unsigned big-endian magnitude.
pub fn uint(magnitude: &[u8]) -> Vec<u8> {
    let start = magnitude
        .iter()
        .position(|&b| b != 0)
        .unwrap_or(magnitude.len().saturating_sub(1));
    let m = if magnitude.is_empty() {
        &[0u8][..]
    } else {
        &magnitude[start..]
    };
    let mut v = Vec::with_capacity(m.len() + 1);
    if m[0] & 0x80 != 0 {
        v.push(0);
    }
    v.extend_from_slice(m);
    tlv(0x02, &v)
}

/// BOOLEAN TRUE.
pub fn true_() -> Vec<u8> {
    vec![0x01, 0x01, 0xff]
}

/// BIT STRING with no unused bits.
pub fn bit_string(bytes: &[u8]) -> Vec<u8> {
    let mut v = vec![0u8];
    v.extend_from_slice(bytes);
    tlv(0x03, &v)
}

/// OCTET STRING.
pub fn octets(bytes: &[u8]) -> Vec<u8> {
    tlv(0x04, bytes)
}

/// Context-specific tag `n`, constructed (EXPLICIT or constructed IMPLICIT).
pub fn ctx_cons(n: u8, value: &[u8]) -> Vec<u8> {
    tlv(0xa0 | n, value)
}

/// Context-specific tag `n`, primitive (IMPLICIT of a primitive type).
pub fn ctx_prim(n: u8, value: &[u8]) -> Vec<u8> {
    tlv(0x80 | n, value)
}

/// UTCTime (years 1950-2049) or GeneralizedTime, per RFC 5280 §4.1.2.5,
/// from seconds since the Unix epoch.
pub fn time(unix: i64) -> Vec<u8> {
    let (y, mo, d, h, mi, s) = civil(unix);
    if (1950..2050).contains(&y) {
        tlv(
            0x17,
            format!("{:02}{mo:02}{d:02}{h:02}{mi:02}{s:02}Z", y % 100).as_bytes(),
        )
    } else {
        tlv(
            0x18,
            format!("{y:04}{mo:02}{d:02}{h:02}{mi:02}{s:02}Z").as_bytes(),
        )
    }
}

/// Seconds since the epoch to (year, month, day, hour, minute, second), UTC.
pub fn civil(unix: i64) -> (i64, u32, u32, u32, u32, u32) {
    let days = unix.div_euclid(86_400);
    let secs = unix.rem_euclid(86_400);
    // Howard Hinnant's days-to-civil.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = if m <= 2 { y + 1 } else { y };
    (
        y,
        m,
        d,
        (secs / 3600) as u32,
        ((secs % 3600) / 60) as u32,
        (secs % 60) as u32,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times() {
        assert_eq!(time(0), tlv(0x17, b"700101000000Z"));
        assert_eq!(time(1_795_000_000), tlv(0x17, b"261118110640Z"));
        assert_eq!(time(2_556_143_999), tlv(0x18, b"20501231235959Z"));
        assert_eq!(civil(951_782_400), (2000, 2, 29, 0, 0, 0));
    }

    #[test]
    fn integers() {
        assert_eq!(uint(&[0x00, 0x80]), vec![0x02, 0x02, 0x00, 0x80]);
        assert_eq!(uint(&[0x01]), vec![0x02, 0x01, 0x01]);
        assert_eq!(uint(&[]), vec![0x02, 0x01, 0x00]);
    }
}
