//! Pure helpers of the mailbox worker: which messages are encrypted
//! (BODYSTRUCTURE), the flags and INTERNALDATE a copy gets, folder names in
//! modified UTF-7, UID sets, and the `X-Sikkermail-Original` field that
//! ties a decrypted copy to its original. No I/O.

use async_imap::imap_proto::BodyStructure;
use async_imap::types::Flag;

/// What the BODYSTRUCTURE says about a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// `application/(x-)pkcs7-mime` with `smime-type` enveloped-data or
    /// authEnveloped-data, or with no `smime-type` (old clients leave it
    /// out; decryption decides); `application/octet-stream` named `*.p7m`
    /// (KMail, RFC 8551 §3.2.1); a multipart/mixed with such a part (an MTA
    /// added a part, or an encrypted attachment: the part opens in place).
    Encrypted,
    /// Signed only: `multipart/signed`, or pkcs7-mime signed-data.
    Signed,
    /// Anything else.
    Plain,
}

/// Classifies a message by its top-level BODYSTRUCTURE (RFC 8551 §3.2,
/// §3.5; RFC 3501 §7.4.2).
pub fn kind(bs: &BodyStructure<'_>) -> Kind {
    if let BodyStructure::Multipart { common, bodies, .. } = bs
        && common.ty.subtype.eq_ignore_ascii_case("mixed")
        && bodies
            .iter()
            .any(|b| !matches!(b, BodyStructure::Multipart { .. }) && kind(b) == Kind::Encrypted)
    {
        return Kind::Encrypted;
    }
    let common = match bs {
        BodyStructure::Basic { common, .. }
        | BodyStructure::Text { common, .. }
        | BodyStructure::Message { common, .. }
        | BodyStructure::Multipart { common, .. } => common,
    };
    let ty = common.ty.ty.to_ascii_lowercase();
    let sub = common.ty.subtype.to_ascii_lowercase();
    let param = |name: &str| {
        common
            .ty
            .params
            .as_ref()
            .and_then(|ps| ps.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)))
            .map(|(_, v)| v.to_ascii_lowercase())
    };
    match (ty.as_str(), sub.as_str()) {
        ("application", "pkcs7-mime" | "x-pkcs7-mime") => match param("smime-type").as_deref() {
            Some("enveloped-data" | "authenveloped-data") | None => Kind::Encrypted,
            Some("signed-data") => Kind::Signed,
            // certs-only, compressed-data and unknown types: not ours.
            Some(_) => Kind::Plain,
        },
        ("multipart", "signed") => Kind::Signed,
        ("application", "octet-stream")
            if param("name").is_some_and(|n| n.ends_with(".p7m"))
                || common.disposition.as_ref().is_some_and(|d| {
                    d.params.as_ref().is_some_and(|ps| {
                        ps.iter().any(|(k, v)| {
                            k.eq_ignore_ascii_case("filename")
                                && v.to_ascii_lowercase().ends_with(".p7m")
                        })
                    })
                }) =>
        {
            Kind::Encrypted
        }
        _ => Kind::Plain,
    }
}

/// The flags a decrypted copy gets: the original's, without `\Recent`
/// (the server's to set) and `\Deleted`, as an APPEND flag list (empty
/// when there are none).
pub fn flag_list<'a>(flags: impl Iterator<Item = Flag<'a>>) -> String {
    let mut out = Vec::new();
    for f in flags {
        let s = match f {
            Flag::Seen => "\\Seen".to_string(),
            Flag::Answered => "\\Answered".to_string(),
            Flag::Flagged => "\\Flagged".to_string(),
            Flag::Draft => "\\Draft".to_string(),
            Flag::Deleted | Flag::Recent | Flag::MayCreate => continue,
            Flag::Custom(c) => {
                // A keyword is an atom (RFC 3501 §9); anything else cannot be
                // sent back and is left out rather than break the APPEND.
                let ok = !c.is_empty()
                    && c.bytes()
                        .all(|b| b.is_ascii_graphic() && !b"(){%*\"]".contains(&b));
                if !ok {
                    continue;
                }
                c.to_string()
            }
        };
        if !out.contains(&s) {
            out.push(s);
        }
    }
    if out.is_empty() {
        String::new()
    } else {
        format!("({})", out.join(" "))
    }
}

/// True when the flags include `\Deleted`.
pub fn is_deleted<'a>(mut flags: impl Iterator<Item = Flag<'a>>) -> bool {
    flags.any(|f| f == Flag::Deleted)
}

/// An INTERNALDATE for APPEND (RFC 3501 §9 date-time), e.g.
/// `"05-Mar-2021 14:15:16 +0100"`, from seconds since the epoch and the
/// zone offset in seconds.
pub fn internal_date(unix: i64, offset_secs: i32) -> String {
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let local = unix + i64::from(offset_secs);
    let days = local.div_euclid(86_400);
    let secs = local.rem_euclid(86_400);
    let (y, m, d) = civil_from_days(days);
    let sign = if offset_secs < 0 { '-' } else { '+' };
    let off = offset_secs.unsigned_abs();
    format!(
        "\"{d:02}-{}-{y:04} {:02}:{:02}:{:02} {sign}{:02}{:02}\"",
        MONTHS[(m - 1) as usize],
        secs / 3600,
        secs % 3600 / 60,
        secs % 60,
        off / 3600,
        off % 3600 / 60
    )
}

/// Days since 1970-01-01 -> (year, month, day) (H. Hinnant's algorithm).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

/// A folder name in modified UTF-7 (RFC 3501 §5.1.3), as IMAP servers
/// without UTF8=ACCEPT expect: `Arkiv/Sikker post æøå` ->
/// `Arkiv/Sikker post &AOYA+ADl-`.
pub fn mutf7(name: &str) -> String {
    fn flush(out: &mut String, buf: &mut Vec<u16>) {
        if buf.is_empty() {
            return;
        }
        let bytes: Vec<u8> = buf.iter().flat_map(|u| u.to_be_bytes()).collect();
        use base64::Engine as _;
        let b = base64::engine::general_purpose::STANDARD_NO_PAD.encode(bytes);
        out.push('&');
        out.push_str(&b.replace('/', ","));
        out.push('-');
        buf.clear();
    }
    let mut out = String::new();
    let mut buf: Vec<u16> = Vec::new();
    for c in name.chars() {
        if (' '..='~').contains(&c) {
            flush(&mut out, &mut buf);
            if c == '&' {
                out.push_str("&-");
            } else {
                out.push(c);
            }
        } else {
            let mut units = [0u16; 2];
            buf.extend_from_slice(c.encode_utf16(&mut units));
        }
    }
    flush(&mut out, &mut buf);
    out
}

/// A UID set for a command: `3:5,9` from sorted or unsorted UIDs.
pub fn uid_set(uids: &[u32]) -> String {
    let mut v = uids.to_vec();
    v.sort_unstable();
    v.dedup();
    let mut out: Vec<String> = Vec::new();
    let mut i = 0;
    while i < v.len() {
        let start = v[i];
        let mut end = start;
        while i + 1 < v.len() && v[i + 1] == end + 1 {
            i += 1;
            end = v[i];
        }
        out.push(if start == end {
            start.to_string()
        } else {
            format!("{start}:{end}")
        });
        i += 1;
    }
    out.join(",")
}

/// The name of the field that ties a decrypted copy to its original.
pub const ORIGINAL_FIELD: &str = "X-Sikkermail-Original";

/// Where a decrypted copy came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Original {
    /// The folder's UIDVALIDITY when the copy was made.
    pub uidvalidity: u32,
    /// The original's UID.
    pub uid: u32,
    /// SHA-256 of the original's bytes, lower-case hex.
    pub sha256: String,
}

impl Original {
    /// For `raw` at `uidvalidity`/`uid`.
    pub fn of(raw: &[u8], uidvalidity: u32, uid: u32) -> Original {
        Original {
            uidvalidity,
            uid,
            sha256: hex(&openssl::sha::sha256(raw)),
        }
    }

    /// The field's value: `uidvalidity=7; uid=42; sha256=ab..`.
    pub fn value(&self) -> String {
        format!(
            "uidvalidity={}; uid={}; sha256={}",
            self.uidvalidity, self.uid, self.sha256
        )
    }

    /// The start of the value, for a SEARCH HEADER that finds the copy of
    /// exactly this original (`uid=4` must not find `uid=42`: the `;`).
    pub fn search_key(&self) -> String {
        format!("uidvalidity={}; uid={};", self.uidvalidity, self.uid)
    }

    /// Parses a value made by [`Original::value`].
    pub fn parse(v: &str) -> Option<Original> {
        let mut uv = None;
        let mut uid = None;
        let mut sha = None;
        for part in v.split(';') {
            let (k, val) = part.trim().split_once('=')?;
            match k.trim() {
                "uidvalidity" => uv = val.trim().parse().ok(),
                "uid" => uid = val.trim().parse().ok(),
                "sha256" => {
                    let s = val.trim().to_ascii_lowercase();
                    if s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit()) {
                        sha = Some(s);
                    }
                }
                _ => {}
            }
        }
        Some(Original {
            uidvalidity: uv?,
            uid: uid?,
            sha256: sha?,
        })
    }
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use std::borrow::Cow;

    use async_imap::imap_proto::{BodyContentCommon, BodyContentSinglePart, ContentType};

    use super::*;

    fn basic(
        ty: &'static str,
        sub: &'static str,
        params: &[(&'static str, &'static str)],
    ) -> BodyStructure<'static> {
        BodyStructure::Basic {
            common: BodyContentCommon {
                ty: ContentType {
                    ty: Cow::Borrowed(ty),
                    subtype: Cow::Borrowed(sub),
                    params: if params.is_empty() {
                        None
                    } else {
                        Some(
                            params
                                .iter()
                                .map(|(k, v)| (Cow::Borrowed(*k), Cow::Borrowed(*v)))
                                .collect(),
                        )
                    },
                },
                disposition: None,
                language: None,
                location: None,
            },
            other: BodyContentSinglePart {
                id: None,
                md5: None,
                description: None,
                transfer_encoding: async_imap::imap_proto::ContentEncoding::Base64,
                octets: 10,
            },
            extension: None,
        }
    }

    #[test]
    fn bodystructures_are_classified() {
        let cases = [
            (
                "application",
                "pkcs7-mime",
                vec![("smime-type", "enveloped-data")],
                Kind::Encrypted,
            ),
            (
                "APPLICATION",
                "X-PKCS7-MIME",
                vec![("SMIME-TYPE", "Enveloped-Data")],
                Kind::Encrypted,
            ),
            (
                "application",
                "pkcs7-mime",
                vec![("smime-type", "authEnveloped-data")],
                Kind::Encrypted,
            ),
            (
                "application",
                "pkcs7-mime",
                vec![("name", "smime.p7m")],
                Kind::Encrypted,
            ),
            (
                "application",
                "pkcs7-mime",
                vec![("smime-type", "signed-data")],
                Kind::Signed,
            ),
            (
                "application",
                "pkcs7-mime",
                vec![("smime-type", "certs-only")],
                Kind::Plain,
            ),
            ("application", "pdf", vec![], Kind::Plain),
            ("text", "plain", vec![], Kind::Plain),
            (
                "application",
                "octet-stream",
                vec![("name", "smime.p7m")],
                Kind::Encrypted,
            ),
            (
                "application",
                "octet-stream",
                vec![("name", "report.pdf")],
                Kind::Plain,
            ),
        ];
        for (ty, sub, params, want) in cases {
            assert_eq!(
                kind(&basic(ty, sub, &params)),
                want,
                "{ty}/{sub} {params:?}"
            );
        }
    }

    fn mixed(bodies: Vec<BodyStructure<'static>>) -> BodyStructure<'static> {
        BodyStructure::Multipart {
            common: BodyContentCommon {
                ty: ContentType {
                    ty: Cow::Borrowed("MULTIPART"),
                    subtype: Cow::Borrowed("MIXED"),
                    params: None,
                },
                disposition: None,
                language: None,
                location: None,
            },
            bodies,
            extension: None,
        }
    }

    /// KDE's "ambiguous" mails: a text part and an encrypted part (an MTA
    /// added a part); the engine opens the part in place.
    #[test]
    fn a_multipart_mixed_with_an_encrypted_part_is_encrypted() {
        let enc = || basic("application", "pkcs7-mime", &[("name", "smime.p7m")]);
        let text = || basic("text", "plain", &[]);
        assert_eq!(kind(&mixed(vec![text(), enc()])), Kind::Encrypted);
        assert_eq!(kind(&mixed(vec![text(), enc(), text()])), Kind::Encrypted);
        assert_eq!(kind(&mixed(vec![text(), text()])), Kind::Plain);
        // Only direct parts: one nested deeper is an attachment's business.
        assert_eq!(kind(&mixed(vec![text(), mixed(vec![enc()])])), Kind::Plain);
    }

    #[test]
    fn flags_keep_keywords_and_drop_recent_and_deleted() {
        let f = vec![
            Flag::Seen,
            Flag::Recent,
            Flag::Deleted,
            Flag::Custom(Cow::Borrowed("$Forwarded")),
            Flag::Custom(Cow::Borrowed("Behandlet")),
            Flag::Custom(Cow::Borrowed("bad(kw")),
            Flag::Seen,
        ];
        assert_eq!(flag_list(f.into_iter()), "(\\Seen $Forwarded Behandlet)");
        assert_eq!(flag_list(std::iter::empty()), "");
    }

    #[test]
    fn internal_dates_are_rfc3501() {
        // 2021-03-05 13:15:16 UTC shown at +01:00.
        assert_eq!(
            internal_date(1_614_950_116, 3600),
            "\"05-Mar-2021 14:15:16 +0100\""
        );
        assert_eq!(internal_date(0, 0), "\"01-Jan-1970 00:00:00 +0000\"");
        assert_eq!(
            internal_date(951_782_400, -5 * 3600 - 1800),
            "\"28-Feb-2000 18:30:00 -0530\""
        );
        assert_eq!(
            internal_date(951_868_800, 0),
            "\"01-Mar-2000 00:00:00 +0000\""
        );
    }

    #[test]
    fn folder_names_in_modified_utf7() {
        assert_eq!(mutf7("INBOX"), "INBOX");
        assert_eq!(mutf7("Krypteret original"), "Krypteret original");
        assert_eq!(
            mutf7("Arkiv/Sikker post æøå"),
            "Arkiv/Sikker post &AOYA+ADl-"
        );
        assert_eq!(mutf7("A&B"), "A&-B");
        // RFC 3501 §5.1.3's example.
        assert_eq!(
            mutf7("~peter/mail/台北/日本語"),
            "~peter/mail/&U,BTFw-/&ZeVnLIqe-"
        );
    }

    #[test]
    fn uid_sets_are_compact() {
        assert_eq!(uid_set(&[5, 3, 4, 9, 11, 10, 3]), "3:5,9:11");
        assert_eq!(uid_set(&[7]), "7");
        assert_eq!(uid_set(&[]), "");
    }

    #[test]
    fn the_original_field_round_trips_and_refuses_junk() {
        let o = Original::of(b"raw message", 1234, 42);
        assert_eq!(Original::parse(&o.value()), Some(o.clone()));
        assert!(o.value().starts_with(&o.search_key()));
        assert!(
            !Original::of(b"x", 1234, 4)
                .value()
                .starts_with(&o.search_key())
        );
        for bad in [
            "",
            "uid=1",
            "uidvalidity=1; uid=x; sha256=00",
            "uidvalidity=1; uid=2; sha256=zz",
        ] {
            assert_eq!(Original::parse(bad), None, "{bad}");
        }
    }
}
