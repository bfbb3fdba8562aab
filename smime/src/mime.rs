//! Just enough of RFC 5322 / RFC 2045-2046 to take S/MIME apart and put it
//! together again without changing a byte that is signed.
//!
//! Every parsed item keeps the byte range it came from, so a layer can be cut
//! out and replaced exactly. Line endings may be CRLF or LF (files saved on
//! Unix); both are accepted everywhere.

use std::borrow::Cow;

use base64::Engine as _;

use crate::error::{Error, Result};

/// One header field, with its raw bytes (including folded continuation
/// lines and the line terminator).
#[derive(Debug, Clone)]
pub struct Header<'a> {
    /// Field name as written.
    pub name: &'a str,
    /// The raw value, folded as received, without the terminator.
    pub value: &'a [u8],
    /// The whole field: name, colon, value and line terminator(s).
    pub raw: &'a [u8],
}

impl Header<'_> {
    /// The value unfolded (CR/LF removed) and trimmed, lossy UTF-8.
    pub fn unfolded(&self) -> String {
        let v: Vec<u8> = self
            .value
            .iter()
            .copied()
            .filter(|&b| b != b'\r' && b != b'\n')
            .collect();
        String::from_utf8_lossy(&v).trim().to_string()
    }

    /// Appends the field with CRLF line ends (also on the last line, which a
    /// truncated header may lack).
    pub fn write_crlf(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&to_crlf(self.raw));
        if !self.raw.ends_with(b"\n") {
            out.extend_from_slice(b"\r\n");
        }
    }

    /// True for `Content-*` fields, which describe the entity and move with it.
    pub fn is_content_field(&self) -> bool {
        // Byte-wise: a name is UTF-8, and byte 8 may fall inside a character.
        self.name.len() > 8 && self.name.as_bytes()[..8].eq_ignore_ascii_case(b"content-")
    }
}

/// A MIME entity (a whole message or a body part): its header fields and body.
#[derive(Debug, Clone)]
pub struct Entity<'a> {
    /// The entity's bytes exactly as given.
    pub raw: &'a [u8],
    /// Header fields in order.
    pub headers: Vec<Header<'a>>,
    /// Offset in `raw` where the body starts (after the empty line).
    pub body_start: usize,
}

impl<'a> Entity<'a> {
    /// Splits header from body. Never fails: input without an empty line is
    /// all header (as a bare header block would be) unless its first line is
    /// not a header field, in which case it is all body.
    pub fn parse(raw: &'a [u8]) -> Entity<'a> {
        let mut headers = Vec::new();
        let mut pos = 0;
        loop {
            if pos >= raw.len() {
                return Entity {
                    raw,
                    headers,
                    body_start: raw.len(),
                };
            }
            // The empty line that ends the header.
            if raw[pos..].starts_with(b"\r\n") {
                return Entity {
                    raw,
                    headers,
                    body_start: pos + 2,
                };
            }
            if raw[pos] == b'\n' {
                return Entity {
                    raw,
                    headers,
                    body_start: pos + 1,
                };
            }
            // A field: name ':' value, folded lines start with SP or HTAB.
            let line_end = line_end_of(raw, pos);
            let Some(colon) = raw[pos..line_end].iter().position(|&b| b == b':') else {
                // Not a header field: the header is over; the rest is body.
                return Entity {
                    raw,
                    headers,
                    body_start: pos,
                };
            };
            let name_bytes = &raw[pos..pos + colon];
            let name = match std::str::from_utf8(name_bytes) {
                Ok(n) if !n.is_empty() && !n.contains([' ', '\t']) => n,
                _ => {
                    return Entity {
                        raw,
                        headers,
                        body_start: pos,
                    };
                }
            };
            let mut end = line_end;
            while end < raw.len() && (raw[end] == b' ' || raw[end] == b'\t') {
                end = line_end_of(raw, end);
            }
            let value_end = trim_eol_end(raw, pos + colon + 1, end);
            headers.push(Header {
                name,
                value: &raw[pos + colon + 1..value_end],
                raw: &raw[pos..end],
            });
            pos = end;
        }
    }

    /// The body bytes.
    pub fn body(&self) -> &'a [u8] {
        &self.raw[self.body_start..]
    }

    /// The raw bytes of the header block, without the empty line.
    pub fn header_bytes(&self) -> &'a [u8] {
        let end = self.headers.last().map_or(0, |h| {
            h.raw.as_ptr() as usize - self.raw.as_ptr() as usize + h.raw.len()
        });
        &self.raw[..end]
    }

    /// First header field of that name (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&Header<'a>> {
        self.headers
            .iter()
            .find(|h| h.name.eq_ignore_ascii_case(name))
    }

    /// The parsed Content-Type; `text/plain` when absent (RFC 2045 §5.2).
    pub fn content_type(&self) -> ContentType {
        self.header("Content-Type")
            .map(|h| ContentType::parse(&h.unfolded()))
            .unwrap_or_else(ContentType::default_text)
    }

    /// The Content-Transfer-Encoding, lower-case; `7bit` when absent.
    pub fn transfer_encoding(&self) -> String {
        self.header("Content-Transfer-Encoding")
            .map(|h| h.unfolded().to_ascii_lowercase())
            .unwrap_or_else(|| "7bit".to_string())
    }

    /// The body with its transfer encoding removed.
    pub fn decoded_body(&self) -> Result<Cow<'a, [u8]>> {
        decode_transfer(&self.transfer_encoding(), self.body())
    }

    /// The `Content-*` fields, which describe the entity and move with it.
    pub fn content_fields(&self) -> Vec<Header<'a>> {
        self.headers
            .iter()
            .filter(|h| h.is_content_field())
            .cloned()
            .collect()
    }

    /// The raw header fields that are not `Content-*` (nor MIME-Version),
    /// i.e. the ones that stay on the outside when the content is replaced.
    pub fn outer_fields(&self) -> impl Iterator<Item = &Header<'a>> {
        self.headers
            .iter()
            .filter(|h| !h.is_content_field() && !h.name.eq_ignore_ascii_case("MIME-Version"))
    }
}

/// Index just after the LF that ends the line starting at `from` (or the end).
fn line_end_of(raw: &[u8], from: usize) -> usize {
    match raw[from..].iter().position(|&b| b == b'\n') {
        Some(i) => from + i + 1,
        None => raw.len(),
    }
}

fn trim_eol_end(raw: &[u8], start: usize, mut end: usize) -> usize {
    while end > start && (raw[end - 1] == b'\n' || raw[end - 1] == b'\r') {
        end -= 1;
    }
    end
}

/// A parsed Content-Type: `type/subtype; name=value ...`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContentType {
    /// `type/subtype`, lower-case.
    pub mime_type: String,
    /// Parameters, names lower-case, values unquoted.
    pub params: Vec<(String, String)>,
}

impl ContentType {
    fn default_text() -> Self {
        ContentType {
            mime_type: "text/plain".into(),
            params: vec![("charset".into(), "us-ascii".into())],
        }
    }

    /// Parses a header value (already unfolded). Lenient: junk parameters are
    /// skipped, never an error.
    pub fn parse(value: &str) -> Self {
        let mut parts = split_params(value).into_iter();
        let mime_type = parts.next().unwrap_or_default().trim().to_ascii_lowercase();
        let mut params = Vec::new();
        for p in parts {
            if let Some((k, v)) = p.split_once('=') {
                let v = v.trim();
                let v = if v.len() >= 2 && v.starts_with('"') && v.ends_with('"') {
                    unquote(&v[1..v.len() - 1])
                } else {
                    v.to_string()
                };
                params.push((k.trim().to_ascii_lowercase(), v));
            }
        }
        ContentType { mime_type, params }
    }

    /// A parameter's value (name case-insensitive).
    pub fn param(&self, name: &str) -> Option<&str> {
        self.params
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// True for `multipart/*`.
    pub fn is_multipart(&self) -> bool {
        self.mime_type.starts_with("multipart/")
    }
}

/// Splits on `;` outside quoted strings.
fn split_params(value: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut quoted = false;
    let mut escaped = false;
    for c in value.chars() {
        if escaped {
            cur.push(c);
            escaped = false;
            continue;
        }
        match c {
            '\\' if quoted => {
                cur.push(c);
                escaped = true;
            }
            '"' => {
                quoted = !quoted;
                cur.push(c);
            }
            ';' if !quoted => out.push(std::mem::take(&mut cur)),
            _ => cur.push(c),
        }
    }
    out.push(cur);
    out.into_iter()
        .enumerate()
        .filter(|(i, s)| *i == 0 || !s.trim().is_empty())
        .map(|(_, s)| s)
        .collect()
}

fn unquote(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c == '\\' {
            if let Some(n) = chars.next() {
                out.push(n);
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// The parts of a multipart body, as exact byte slices of it.
#[derive(Debug, Clone)]
pub struct Multipart<'a> {
    /// Each body part: from after its delimiter line to before the line
    /// break that precedes the next delimiter (RFC 2046 §5.1.1: that line
    /// break belongs to the delimiter).
    pub parts: Vec<&'a [u8]>,
}

impl<'a> Multipart<'a> {
    /// Splits `body` on `--boundary` lines.
    pub fn parse(body: &'a [u8], boundary: &str) -> Result<Self> {
        if boundary.is_empty() || boundary.len() > 200 {
            return Err(Error::Mime(
                "multipart boundary is empty or too long".into(),
            ));
        }
        let delim = format!("--{boundary}");
        let delim = delim.as_bytes();
        let mut parts = Vec::new();
        // Start of the current part's content, once the first delimiter is seen.
        let mut current: Option<usize> = None;
        let mut pos = 0;
        let mut closed = false;
        while pos < body.len() {
            let end = line_end_of(body, pos);
            let line = &body[pos..end];
            if line.starts_with(delim) {
                let rest = &line[delim.len()..];
                let is_close = rest.starts_with(b"--");
                let tail = if is_close { &rest[2..] } else { rest };
                // Only transport padding (whitespace) may follow the boundary.
                if tail
                    .iter()
                    .all(|b| matches!(b, b' ' | b'\t' | b'\r' | b'\n'))
                {
                    if let Some(start) = current {
                        // The CRLF (or LF) before the delimiter is not content.
                        let mut stop = pos;
                        if stop > start && body[stop - 1] == b'\n' {
                            stop -= 1;
                            if stop > start && body[stop - 1] == b'\r' {
                                stop -= 1;
                            }
                        }
                        parts.push(&body[start..stop.max(start)]);
                    }
                    if is_close {
                        closed = true;
                        break;
                    }
                    current = Some(end);
                }
            }
            pos = end;
        }
        if !closed {
            // Truncated mail: keep what we have but say so if nothing at all.
            if let Some(start) = current {
                parts.push(&body[start..]);
            }
        }
        if parts.is_empty() {
            return Err(Error::Mime(format!(
                "no body part delimited by boundary \"{boundary}\""
            )));
        }
        Ok(Multipart { parts })
    }
}

/// Removes a Content-Transfer-Encoding.
pub fn decode_transfer<'a>(encoding: &str, body: &'a [u8]) -> Result<Cow<'a, [u8]>> {
    match encoding {
        "7bit" | "8bit" | "binary" | "" => Ok(Cow::Borrowed(body)),
        "base64" => decode_base64(body).map(Cow::Owned),
        "quoted-printable" => Ok(Cow::Owned(decode_qp(body))),
        other => Err(Error::TransferEncoding {
            encoding: other.to_string(),
            detail: "unknown Content-Transfer-Encoding".into(),
        }),
    }
}

/// Lenient base64: whitespace and line breaks ignored, padding optional.
pub fn decode_base64(body: &[u8]) -> Result<Vec<u8>> {
    let clean: Vec<u8> = body
        .iter()
        .copied()
        .filter(|b| !b.is_ascii_whitespace())
        .collect();
    // Anything after '=' padding (a trailing signature line, say) is junk.
    let end = clean
        .iter()
        .position(|&b| b == b'=')
        .map_or(clean.len(), |p| {
            let mut e = p;
            while e < clean.len() && clean[e] == b'=' {
                e += 1;
            }
            e
        });
    base64::engine::general_purpose::STANDARD
        .decode(&clean[..end])
        .or_else(|_| {
            base64::engine::general_purpose::STANDARD_NO_PAD.decode(clean[..end].trim_ascii_end())
        })
        .map_err(|e| Error::TransferEncoding {
            encoding: "base64".into(),
            detail: e.to_string(),
        })
}

fn decode_qp(body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(body.len());
    let mut i = 0;
    let hex = |b: u8| (b as char).to_digit(16).map(|d| d as u8);
    while i < body.len() {
        let b = body[i];
        if b == b'=' {
            if body[i + 1..].starts_with(b"\r\n") {
                i += 3;
                continue;
            }
            if body[i + 1..].starts_with(b"\n") {
                i += 2;
                continue;
            }
            if i + 2 < body.len()
                && let (Some(h), Some(l)) = (hex(body[i + 1]), hex(body[i + 2]))
            {
                out.push(h << 4 | l);
                i += 3;
                continue;
            }
        }
        out.push(b);
        i += 1;
    }
    out
}

/// Base64 with CRLF after every 76 characters (RFC 2045 §6.8).
pub fn encode_base64_lines(data: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(data.len() / 57 * 78 + 80);
    let mut w = crate::stream::Base64Lines::new(&mut out);
    // Writing to a Vec cannot fail.
    let _ = std::io::Write::write_all(&mut w, data);
    let _ = w.finish();
    out
}

/// Quoted-printable (RFC 2045 §6.7) with CRLF line breaks, for text whose
/// 8-bit bytes must be transfer-encoded before signing.
pub fn encode_qp(data: &[u8]) -> Vec<u8> {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    let mut out = Vec::with_capacity(data.len() * 11 / 10 + 16);
    for line in split_lines(data) {
        let mut col = 0;
        let n = line.len();
        for (i, &b) in line.iter().enumerate() {
            let last = i + 1 == n;
            let plain =
                ((b == b' ' || b == b'\t') && !last) || ((33..=126).contains(&b) && b != b'=');
            let mut width = if plain { 1 } else { 3 };
            if col + width > 75 {
                out.extend_from_slice(b"=\r\n");
                col = 0;
            }
            // A line that starts "From " or with "." is fragile in transport.
            let fragile = col == 0 && (b == b'.' || (b == b'F' && line[i..].starts_with(b"From ")));
            if fragile {
                width = 3;
            }
            if width == 1 {
                out.push(b);
            } else {
                out.extend_from_slice(&[b'=', HEX[(b >> 4) as usize], HEX[(b & 15) as usize]]);
            }
            col += width;
        }
        out.extend_from_slice(b"\r\n");
    }
    // The loop ends every line with CRLF, the last one too, which the data
    // either did not have or had as the break before a final empty "line".
    out.truncate(out.len().saturating_sub(2));
    out
}

/// Lines without their terminators; a trailing terminator yields a final
/// empty line.
fn split_lines(data: &[u8]) -> impl Iterator<Item = &[u8]> {
    data.split(|&b| b == b'\n')
        .map(|l| l.strip_suffix(b"\r").unwrap_or(l))
}

/// Number of LF bytes not preceded by CR.
pub fn count_bare_lf(data: &[u8]) -> usize {
    let mut n = 0;
    let mut prev = 0u8;
    for &b in data {
        if b == b'\n' && prev != b'\r' {
            n += 1;
        }
        prev = b;
    }
    n
}

/// Converts every bare LF (and lone CR) to CRLF.
pub fn to_crlf(data: &[u8]) -> Cow<'_, [u8]> {
    if count_bare_lf(data) == 0 && !has_lone_cr(data) {
        return Cow::Borrowed(data);
    }
    let mut out = Vec::with_capacity(data.len() + data.len() / 32);
    let mut i = 0;
    while i < data.len() {
        match data[i] {
            b'\r' => {
                out.extend_from_slice(b"\r\n");
                if data.get(i + 1) == Some(&b'\n') {
                    i += 1;
                }
            }
            b'\n' => out.extend_from_slice(b"\r\n"),
            b => out.push(b),
        }
        i += 1;
    }
    Cow::Owned(out)
}

/// Drops the CR of every CRLF.
pub fn to_lf(data: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(data.len());
    for (i, &b) in data.iter().enumerate() {
        if !(b == b'\r' && data.get(i + 1) == Some(&b'\n')) {
            out.push(b);
        }
    }
    out
}

fn has_lone_cr(data: &[u8]) -> bool {
    data.iter()
        .enumerate()
        .any(|(i, &b)| b == b'\r' && data.get(i + 1) != Some(&b'\n'))
}

/// A fresh multipart boundary.
pub fn new_boundary() -> String {
    let mut r = [0u8; 12];
    // rand_bytes only fails when the RNG is broken; fall back to the clock.
    if openssl::rand::rand_bytes(&mut r).is_err() {
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        r[..12].copy_from_slice(&t.to_le_bytes()[..12]);
    }
    let hex: String = r.iter().map(|b| format!("{b:02x}")).collect();
    format!("----=_sikkermail_{hex}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_and_body_split_crlf_and_lf() {
        for eol in ["\r\n", "\n"] {
            let m = format!("From: a@b.dk{eol}Subject: hi{eol} folded{eol}{eol}body{eol}");
            let e = Entity::parse(m.as_bytes());
            assert_eq!(e.headers.len(), 2);
            assert_eq!(
                e.header("subject").map(|h| h.unfolded()).as_deref(),
                Some("hi folded")
            );
            assert_eq!(e.body(), format!("body{eol}").as_bytes());
        }
    }

    #[test]
    fn non_ascii_header_names_do_not_panic() {
        // Byte 8 falls inside 'ø' (a regression found in review).
        let e = Entity::parse("Contentø-X: 1\r\nFrom: a\r\n\r\nbody".as_bytes());
        assert!(e.headers.iter().all(|h| !h.is_content_field()));
        assert_eq!(e.outer_fields().count(), 2);
    }

    #[test]
    fn content_type_params() {
        let ct = ContentType::parse(
            "multipart/signed; protocol=\"application/pkcs7-signature\"; micalg=sha-256; boundary=\"a;b\"",
        );
        assert_eq!(ct.mime_type, "multipart/signed");
        assert_eq!(ct.param("boundary"), Some("a;b"));
        assert_eq!(ct.param("MICALG"), Some("sha-256"));
    }

    #[test]
    fn multipart_parts_are_exact() {
        let body =
            b"preamble\r\n--xx\r\nA: 1\r\n\r\none\r\n--xx\r\n\r\ntwo\r\n\r\n--xx--\r\nepilogue";
        let mp = Multipart::parse(body, "xx").unwrap();
        assert_eq!(mp.parts, vec![&b"A: 1\r\n\r\none"[..], &b"\r\ntwo\r\n"[..]]);
    }

    #[test]
    fn multipart_split_at_every_byte_never_panics() {
        let body = b"--xx\r\nA: 1\r\n\r\none\r\n--xx--\r\n";
        for i in 0..body.len() {
            let _ = Multipart::parse(&body[..i], "xx");
            let _ = Entity::parse(&body[..i]);
        }
    }

    #[test]
    fn qp_round_trip() {
        let text = "Hej Åse,\r\nblåbærgrød = godt \r\n.\r\nFrom here\r\n".as_bytes();
        let enc = encode_qp(text);
        assert!(enc.iter().all(|&b| b < 128));
        assert!(enc.split(|&b| b == b'\n').all(|l| l.len() <= 77));
        assert_eq!(decode_qp(&enc), text);
    }

    #[test]
    fn crlf_conversion() {
        assert_eq!(&*to_crlf(b"a\nb\r\nc\rd"), b"a\r\nb\r\nc\r\nd");
        assert!(matches!(to_crlf(b"a\r\nb"), Cow::Borrowed(_)));
        assert_eq!(count_bare_lf(b"a\nb\r\n\n"), 2);
        assert_eq!(to_lf(b"a\r\nb\rc\r\n"), b"a\nb\rc\n");
    }

    #[test]
    fn base64_lenient() {
        assert_eq!(decode_base64(b"aGVs\r\nbG8=\r\n").unwrap(), b"hello");
        assert_eq!(decode_base64(b"aGVsbG8").unwrap(), b"hello");
        assert!(decode_base64(b"a$$$").is_err());
    }
}
