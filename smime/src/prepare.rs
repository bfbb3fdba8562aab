//! Splitting a message into the header fields that stay outside and the
//! entity that gets signed or encrypted, in canonical form (RFC 8551 §3.1).

use crate::mime::{self, Entity, Header, Multipart};

/// A message taken apart for signing or encryption.
#[derive(Debug)]
pub(crate) struct Prepared<'a> {
    /// Outer header fields (not `Content-*`, not MIME-Version), CRLF.
    pub outer: Vec<u8>,
    /// The entity's own `Content-*` fields and the empty line, CRLF.
    pub inner_header: Vec<u8>,
    /// The body as given.
    pub body: &'a [u8],
    /// Content-Type of the entity (for choosing a transfer encoding).
    pub mime_type: String,
    /// Content fields parsed, for re-encoding.
    content_fields: Vec<Header<'a>>,
}

/// Takes `message` apart. Adds a Content-Type when it has none.
pub(crate) fn prepare(message: &[u8]) -> Prepared<'_> {
    let e = Entity::parse(message);
    let mut outer = Vec::new();
    for h in e.outer_fields() {
        h.write_crlf(&mut outer);
    }
    let content_fields = e.content_fields();
    let inner_header = header_block(&content_fields, e.body(), None);
    Prepared {
        outer,
        inner_header,
        body: e.body(),
        mime_type: e.content_type().mime_type,
        content_fields,
    }
}

/// The content fields as a CRLF block ending in the empty line. With
/// `new_cte`, the Content-Transfer-Encoding is replaced by that one.
fn header_block(fields: &[Header<'_>], body: &[u8], new_cte: Option<&str>) -> Vec<u8> {
    let mut out = Vec::new();
    if !fields
        .iter()
        .any(|h| h.name.eq_ignore_ascii_case("Content-Type"))
    {
        let charset = if body.is_ascii() { "us-ascii" } else { "utf-8" };
        out.extend_from_slice(
            format!("Content-Type: text/plain; charset={charset}\r\n").as_bytes(),
        );
    }
    for h in fields {
        if new_cte.is_some() && h.name.eq_ignore_ascii_case("Content-Transfer-Encoding") {
            continue;
        }
        h.write_crlf(&mut out);
    }
    if let Some(cte) = new_cte {
        out.extend_from_slice(format!("Content-Transfer-Encoding: {cte}\r\n").as_bytes());
    }
    out.extend_from_slice(b"\r\n");
    out
}

impl Prepared<'_> {
    /// The entity for signing: CRLF line ends and no 8-bit or binary
    /// content left unencoded, in this part or any nested one.
    pub fn signable(&self) -> Vec<u8> {
        signable_entity(&self.content_fields, self.body, &self.mime_type, 0)
    }
}

fn needs_encoding(body: &[u8]) -> bool {
    body.iter().any(|&b| b >= 0x80 || b == 0) || body.split(|&b| b == b'\n').any(|l| l.len() > 998)
}

fn signable_entity(fields: &[Header<'_>], body: &[u8], mime_type: &str, depth: usize) -> Vec<u8> {
    let cte = fields
        .iter()
        .find(|h| h.name.eq_ignore_ascii_case("Content-Transfer-Encoding"))
        .map(|h| h.unfolded().to_ascii_lowercase())
        .unwrap_or_else(|| "7bit".into());
    let ct_value = fields
        .iter()
        .find(|h| h.name.eq_ignore_ascii_case("Content-Type"))
        .map(|h| h.unfolded());
    let ct = mime::ContentType::parse(ct_value.as_deref().unwrap_or("text/plain"));
    if ct.is_multipart()
        && depth < 16
        && let Some(boundary) = ct.param("boundary")
        && let Ok(mp) = Multipart::parse(body, boundary)
    {
        let mut out = header_block(fields, body, None);
        for part in &mp.parts {
            let pe = Entity::parse(part);
            let pfields = pe.content_fields();

            out.extend_from_slice(format!("--{boundary}\r\n").as_bytes());
            out.extend_from_slice(&signable_entity(
                &pfields,
                pe.body(),
                &pe.content_type().mime_type,
                depth + 1,
            ));
            out.extend_from_slice(b"\r\n");
        }
        out.extend_from_slice(format!("--{boundary}--\r\n").as_bytes());
        return out;
    }
    let already_safe = matches!(cte.as_str(), "base64" | "quoted-printable");
    if already_safe || !needs_encoding(body) {
        let mut out = header_block(fields, body, None);
        out.extend_from_slice(&mime::to_crlf(body));
        return out;
    }
    if mime_type.starts_with("text/") || ct.mime_type.starts_with("text/") {
        let canonical = mime::to_crlf(body);
        let mut out = header_block(fields, body, Some("quoted-printable"));
        out.extend_from_slice(&mime::encode_qp(&canonical));
        out
    } else {
        let mut out = header_block(fields, body, Some("base64"));
        out.extend_from_slice(&mime::encode_base64_lines(body));
        out
    }
}

/// True when every line ends in CRLF: no bare LF, no lone CR. One pass,
/// jumping from line end to line end (memchr), so a 25 MB body costs
/// microseconds per megabyte.
pub(crate) fn is_canonical(data: &[u8]) -> bool {
    let mut pos = 0;
    while let Some(i) = memchr::memchr2(b'\r', b'\n', &data[pos..]) {
        let at = pos + i;
        if data[at] == b'\n' || data.get(at + 1) != Some(&b'\n') {
            return false;
        }
        pos = at + 2;
    }
    true
}

/// Length of `data` once bare LF and lone CR are made CRLF (the same rule
/// as [`for_each_canonical_chunk`]).
pub(crate) fn canonical_len(data: &[u8]) -> usize {
    if is_canonical(data) {
        return data.len();
    }
    let mut n = 0;
    let mut skip_lf = false;
    for &b in data {
        match b {
            b'\n' if skip_lf => {}
            b'\r' | b'\n' => n += 2,
            _ => n += 1,
        }
        skip_lf = b == b'\r';
    }
    n
}

/// Streams `data` in canonical CRLF form, chunk by chunk, without a full copy.
pub(crate) fn for_each_canonical_chunk(
    data: &[u8],
    mut f: impl FnMut(&[u8]) -> std::io::Result<()>,
) -> std::io::Result<()> {
    const CHUNK: usize = 1 << 16;
    if is_canonical(data) {
        for c in data.chunks(CHUNK) {
            f(c)?;
        }
        return Ok(());
    }
    let mut buf = Vec::with_capacity(CHUNK * 2 + 2);
    let mut skip_lf = false;
    for c in data.chunks(CHUNK) {
        buf.clear();
        for &b in c {
            match b {
                b'\n' if skip_lf => {}
                b'\r' | b'\n' => buf.extend_from_slice(b"\r\n"),
                _ => buf.push(b),
            }
            skip_lf = b == b'\r';
        }
        f(&buf)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn canonical_len_matches_conversion() {
        for s in [
            &b"a\nb"[..],
            b"a\r\nb",
            b"\r\r\n\n\r",
            b"",
            b"x\r",
            b"\n\n",
            b"a\r\n\r\nb\r\n",
        ] {
            assert_eq!(is_canonical(s), *mime::to_crlf(s) == *s, "{s:?}");
            let mut out = Vec::new();
            for_each_canonical_chunk(s, |c| {
                out.extend_from_slice(c);
                Ok(())
            })
            .unwrap();
            assert_eq!(out, &*mime::to_crlf(s), "{s:?}");
            assert_eq!(canonical_len(s), out.len(), "{s:?}");
        }
    }

    #[test]
    fn eight_bit_text_becomes_quoted_printable() {
        let msg = "From: a@b.dk\nContent-Type: text/plain; charset=utf-8\nContent-Transfer-Encoding: 8bit\n\nblåbær\n";
        let p = prepare(msg.as_bytes());
        assert_eq!(p.outer, b"From: a@b.dk\r\n");
        let s = p.signable();
        assert!(s.is_ascii());
        let text = String::from_utf8(s).unwrap();
        assert!(
            text.contains("Content-Transfer-Encoding: quoted-printable\r\n"),
            "{text}"
        );
        assert!(text.contains("bl=C3=A5b=C3=A6r"), "{text}");
        assert!(!text.contains("8bit"));
    }
}
