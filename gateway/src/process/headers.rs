//! Header fields of a raw message, edited in place: the body and every
//! field not touched stay byte for byte (a signature over them stays
//! valid).
//!
//! Every function here expects the message in its canonical form
//! ([`canonical`]): lines end in CRLF and no bare CR or LF is left. That
//! form is made once at the door (the SMTP session, before the message is
//! queued) and again on whatever the gateway did not receive itself
//! (decrypted content, a message fetched over IMAP), so the lines the
//! stripper sees are exactly the lines the next hop, a Maildir reader or an
//! IMAP server will see: a bare CR inside a field cannot become a line of
//! its own later (the SMTP client and Maildir readers treat it as a line
//! end).

use std::borrow::Cow;

use base64::Engine;

/// The canonical form of a message: every bare CR and every bare LF
/// becomes CRLF (what the SMTP client sends anyway, RFC 5321 §2.3.8); a
/// message already canonical is returned as it is, without a copy.
pub fn canonical(raw: &[u8]) -> Cow<'_, [u8]> {
    let bare = raw.iter().enumerate().any(|(i, &b)| match b {
        b'\r' => raw.get(i + 1) != Some(&b'\n'),
        b'\n' => i == 0 || raw[i - 1] != b'\r',
        _ => false,
    });
    if !bare {
        return Cow::Borrowed(raw);
    }
    let mut out = Vec::with_capacity(raw.len() + raw.len() / 32 + 2);
    let mut i = 0;
    while i < raw.len() {
        match raw[i] {
            b'\r' if raw.get(i + 1) == Some(&b'\n') => {
                out.extend_from_slice(b"\r\n");
                i += 2;
                continue;
            }
            b'\r' | b'\n' => out.extend_from_slice(b"\r\n"),
            b => out.push(b),
        }
        i += 1;
    }
    Cow::Owned(out)
}

/// Offset where the header ends: the index of the empty line's first byte
/// (so `raw[..end]` is the fields with their line ends), or the message's
/// length when it has no body.
pub fn header_end(raw: &[u8]) -> usize {
    if raw.starts_with(b"\r\n") || raw.starts_with(b"\n") {
        return 0;
    }
    let mut i = 0;
    while i < raw.len() {
        if raw[i] == b'\n' {
            let next = &raw[i + 1..];
            if next.starts_with(b"\r\n") || next.starts_with(b"\n") {
                return i + 1;
            }
        }
        i += 1;
    }
    raw.len()
}

/// The fields as (name, raw bytes including continuation lines and line
/// end), in order.
fn fields(raw: &[u8]) -> Vec<(String, std::ops::Range<usize>)> {
    let end = header_end(raw);
    let mut out: Vec<(String, std::ops::Range<usize>)> = Vec::new();
    let mut pos = 0;
    while pos < end {
        let line_end = raw[pos..end]
            .iter()
            .position(|b| *b == b'\n')
            .map(|p| pos + p + 1)
            .unwrap_or(end);
        let line = &raw[pos..line_end];
        if matches!(line.first(), Some(b' ' | b'\t')) {
            if let Some(last) = out.last_mut() {
                last.1.end = line_end;
            } else {
                out.push((String::new(), pos..line_end));
            }
        } else {
            let name = line
                .iter()
                .position(|b| *b == b':')
                .map(|c| String::from_utf8_lossy(&line[..c]).trim().to_string())
                .unwrap_or_default();
            out.push((name, pos..line_end));
        }
        pos = line_end;
    }
    out
}

/// Removes every field whose name `drop` says so (case as received); the
/// message as it is, without a copy, when there is none.
pub fn strip_fields(raw: &[u8], drop: impl Fn(&str) -> bool) -> Cow<'_, [u8]> {
    let fs = fields(raw);
    if !fs.iter().any(|(n, _)| drop(n)) {
        return Cow::Borrowed(raw);
    }
    let mut out = Vec::with_capacity(raw.len());
    for (name, range) in &fs {
        if !drop(name) {
            out.extend_from_slice(&raw[range.clone()]);
        }
    }
    out.extend_from_slice(&raw[header_end(raw)..]);
    Cow::Owned(out)
}

/// [`canonical`] and then [`strip_fields`] of the gateway's own fields, on
/// an owned message: copied only where something changes.
pub fn canonical_stripped(raw: Vec<u8>) -> Vec<u8> {
    let raw = match canonical(&raw) {
        Cow::Borrowed(_) => raw,
        Cow::Owned(c) => c,
    };
    match strip_fields(&raw, is_sikkermail_field) {
        Cow::Borrowed(_) => raw,
        Cow::Owned(c) => c,
    }
}

/// True for the gateway's own info headers, which never come from outside.
pub fn is_sikkermail_field(name: &str) -> bool {
    // Bytes, not a `str` slice: a name with a non-ASCII character around
    // byte 13 must not panic.
    name.as_bytes()
        .get(..13)
        .is_some_and(|p| p.eq_ignore_ascii_case(b"x-sikkermail-"))
}

/// The unfolded value of the first field `name`.
pub fn field(raw: &[u8], name: &str) -> Option<String> {
    let (_, range) = fields(raw)
        .into_iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(name))?;
    let text = String::from_utf8_lossy(&raw[range]).to_string();
    let (_, value) = text.split_once(':')?;
    Some(
        value
            .replace("\r\n", "")
            .replace('\n', "")
            .trim()
            .to_string(),
    )
}

/// Makes a value safe for one header line: no CR, LF or other control
/// characters, at most 900 octets.
pub fn clean_value(v: &str) -> String {
    let mut s: String = v
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    if s.len() > 900 {
        let mut cut = 900;
        while !s.is_char_boundary(cut) {
            cut -= 1;
        }
        s.truncate(cut);
    }
    s
}

/// Puts `fields` (name, value) on top of the message, CRLF-terminated.
pub fn prepend_fields(raw: &[u8], fields: &[(&str, String)]) -> Vec<u8> {
    let mut out = Vec::with_capacity(raw.len() + 256);
    for (name, value) in fields {
        out.extend_from_slice(name.as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(clean_value(value).as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(raw);
    out
}

/// Replaces the (first) Subject field with `subject`, encoded when it is
/// not ASCII; adds one when there is none.
pub fn replace_subject(raw: &[u8], subject: &str) -> Vec<u8> {
    let value = encode_word(subject);
    let mut done = false;
    let fs = fields(raw);
    let mut out = Vec::with_capacity(raw.len());
    for (name, range) in &fs {
        if !done && name.eq_ignore_ascii_case("subject") {
            out.extend_from_slice(b"Subject: ");
            out.extend_from_slice(value.as_bytes());
            out.extend_from_slice(b"\r\n");
            done = true;
        } else {
            out.extend_from_slice(&raw[range.clone()]);
        }
    }
    if !done {
        out.extend_from_slice(b"Subject: ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(&raw[header_end(raw)..]);
    out
}

fn encode_word(s: &str) -> String {
    let s = clean_value(s);
    if s.is_ascii() {
        return s;
    }
    format!(
        "=?UTF-8?B?{}?=",
        base64::engine::general_purpose::STANDARD.encode(s.as_bytes())
    )
}

/// Decodes RFC 2047 encoded words (`=?UTF-8?B?...?=`, `Q`, ISO-8859-1)
/// for the policy's subject trigger. Anything it does not understand is
/// left as it is.
pub fn decode_words(v: &str) -> String {
    let mut out = String::new();
    let mut rest = v;
    let mut last_was_word = false;
    while let Some(start) = rest.find("=?") {
        let before = &rest[..start];
        let after = &rest[start + 2..];
        let decoded = after.split_once('?').and_then(|(charset, r)| {
            let (enc, r) = r.split_once('?')?;
            let (text, tail) = r.split_once("?=")?;
            let bytes = match enc {
                "B" | "b" => {
                    let t = text.trim().trim_end_matches('=');
                    base64::engine::general_purpose::STANDARD_NO_PAD
                        .decode(t)
                        .ok()?
                }
                "Q" | "q" => q_decode(text),
                _ => return None,
            };
            let cs = charset.split('*').next().unwrap_or("").to_ascii_lowercase();
            // UTF-8 as UTF-8; any other charset byte by byte (Latin-1):
            // exact for ASCII, so the subject trigger is always seen.
            let s = match cs.as_str() {
                "utf-8" | "utf8" => String::from_utf8_lossy(&bytes).to_string(),
                _ => bytes.iter().map(|b| char::from(*b)).collect(),
            };
            Some((s, tail))
        });
        match decoded {
            Some((s, tail)) => {
                // Whitespace between two encoded words is dropped (RFC 2047 §6.2).
                if !(last_was_word && before.trim().is_empty()) {
                    out.push_str(before);
                }
                out.push_str(&s);
                rest = tail;
                last_was_word = true;
            }
            None => {
                out.push_str(&rest[..start + 2]);
                rest = after;
                last_was_word = false;
            }
        }
    }
    out.push_str(rest);
    out
}

fn q_decode(text: &str) -> Vec<u8> {
    let b = text.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'_' => out.push(b' '),
            b'=' if i + 2 < b.len() => {
                let hex = std::str::from_utf8(&b[i + 1..i + 3]).ok();
                match hex.and_then(|h| u8::from_str_radix(h, 16).ok()) {
                    Some(v) => {
                        out.push(v);
                        i += 2;
                    }
                    None => out.push(b'='),
                }
            }
            c => out.push(c),
        }
        i += 1;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strips_only_our_fields_with_continuations() {
        let raw = b"X-Sikkermail-Decrypted: forged\r\n  continued\r\nSubject: hi\r\nx-sikkermail-error: no\r\n\r\nX-Sikkermail-Body: stays\r\n";
        let out = strip_fields(raw, is_sikkermail_field);
        assert_eq!(&*out, b"Subject: hi\r\n\r\nX-Sikkermail-Body: stays\r\n");
    }

    #[test]
    fn subject_roundtrip_and_words() {
        let raw = b"From: a@b\r\nSubject: =?UTF-8?Q?Dom_i_sag_=5Bsikker=5D?=\r\n\r\nbody";
        let s = field(raw, "subject").unwrap_or_default();
        assert_eq!(decode_words(&s), "Dom i sag [sikker]");
        let out = replace_subject(raw, "Dom i sag æ");
        assert!(out.starts_with(b"From: a@b\r\nSubject: =?UTF-8?B?"));
        assert!(out.ends_with(b"\r\n\r\nbody"));
        let s2 = field(&out, "subject").unwrap_or_default();
        assert_eq!(decode_words(&s2), "Dom i sag æ");
    }

    #[test]
    fn odd_names_and_charsets() {
        assert!(!is_sikkermail_field("X-Sikkermailæ"));
        assert!(!is_sikkermail_field("X-Sikkermai\u{fffd}x"));
        assert!(is_sikkermail_field("x-SIKKERMAIL-anything"));
        let raw = "X-Sikkermail\u{e6}: x\r\nSubject: y\r\n\r\n".as_bytes();
        assert!(matches!(
            strip_fields(raw, is_sikkermail_field),
            Cow::Borrowed(_)
        ));
        assert_eq!(
            decode_words("=?iso-8859-15?Q?Fortroligt_=5Bsikker=5D_=E6?="),
            "Fortroligt [sikker] \u{e6}"
        );
        assert_eq!(decode_words("=?UTF-8?B?W3Npa2tlcl0?="), "[sikker]");
        assert_eq!(decode_words("=?koi8-r?B?W3Npa2tlcl0=?="), "[sikker]");
    }

    #[test]
    fn canonical_makes_every_line_end_crlf() {
        let cases: &[(&[u8], &[u8])] = &[
            (b"", b""),
            (b"a\r\nb\r\n", b"a\r\nb\r\n"),
            (b"a\nb", b"a\r\nb"),
            (b"a\rb", b"a\r\nb"),
            (b"\r", b"\r\n"),
            (b"\n", b"\r\n"),
            (b"a\r\r\nb", b"a\r\n\r\nb"),
            (b"a\n\rb", b"a\r\n\r\nb"),
            (
                b"X-Foo: a\rX-Sikkermail-Signature: valid\r\n\r\n",
                b"X-Foo: a\r\nX-Sikkermail-Signature: valid\r\n\r\n",
            ),
        ];
        for (input, want) in cases {
            let got = canonical(input);
            assert_eq!(&*got, *want, "{input:?}");
            // Idempotent, and borrowed when nothing changes.
            assert!(matches!(canonical(&got), Cow::Borrowed(_)));
        }
    }

    #[test]
    fn a_bare_cr_in_a_field_is_stripped_as_the_line_it_becomes() {
        let raw = b"X-Foo: a\rX-Sikkermail-Signature: valid; signer=dommer@domstol.dk\r\nSubject: s\r\n\r\nbody\r\n";
        let out = canonical_stripped(raw.to_vec());
        assert_eq!(out, b"X-Foo: a\r\nSubject: s\r\n\r\nbody\r\n".to_vec());
    }

    #[test]
    fn no_header_injection() {
        let out = prepend_fields(b"\r\nbody", &[("X-A", "x\r\nBcc: evil".into())]);
        assert_eq!(out, b"X-A: x  Bcc: evil\r\n\r\nbody".to_vec());
    }
}
