//! Paths in `MAIL FROM:` and `RCPT TO:` (RFC 5321 §4.1.2):
//!
//! ```text
//! Reverse-path = Path / "<>"
//! Forward-path = Path / "<Postmaster>"   ; case-insensitive
//! Path         = "<" [ A-d-l ":" ] Mailbox ">"
//! Mailbox      = Local-part "@" ( Domain / address-literal )
//! Local-part   = Dot-string / Quoted-string
//! ```
//!
//! UTF-8 (RFC 6531 `UTF8-non-ascii`) is accepted in atoms, quoted strings
//! and domain labels regardless of whether `SMTPUTF8` was given: the
//! session must refuse a non-ASCII [`Address`] (see [`Address::is_ascii`])
//! when the `MAIL` command lacked `SMTPUTF8`. A source route (`A-d-l`) is
//! accepted and dropped, as §4.1.1.3 and Appendix C ask. Address literals
//! must be IPv4 or `IPv6:`; general literals (`tag:content`) are refused.

use std::fmt;
use std::net::{Ipv4Addr, Ipv6Addr};

/// Longest local part, in octets (RFC 5321 §4.5.3.1.1).
const MAX_LOCAL_PART: usize = 64;
/// Longest domain, in octets (RFC 5321 §4.5.3.1.2).
const MAX_DOMAIN: usize = 255;

/// A mailbox `local-part@domain` as the client sent it.
///
/// The local part keeps its quotes if it was a quoted string (so
/// `"john doe"@example.dk` displays as sent); the domain is either a domain
/// name or a bracketed address literal. Case is preserved.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Address {
    local_part: String,
    domain: String,
}

impl Address {
    /// The local part as sent, with quotes if it was quoted.
    #[must_use]
    pub fn local_part(&self) -> &str {
        &self.local_part
    }

    /// The domain name, or the address literal with its brackets.
    #[must_use]
    pub fn domain(&self) -> &str {
        &self.domain
    }

    /// `false` when the address needs `SMTPUTF8` (RFC 6531).
    #[must_use]
    pub fn is_ascii(&self) -> bool {
        self.local_part.is_ascii() && self.domain.is_ascii()
    }
}

impl fmt::Display for Address {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}@{}", self.local_part, self.domain)
    }
}

/// The argument of `MAIL FROM:`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum ReversePath {
    /// `<>`: bounces and other notifications (RFC 5321 §4.5.5).
    Null,
    /// A sender mailbox.
    Address(Address),
}

/// The argument of `RCPT TO:`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum ForwardPath {
    /// `<Postmaster>` without a domain (RFC 5321 §4.1.1.3), any case.
    Postmaster,
    /// A recipient mailbox.
    Address(Address),
}

/// What [`parse_path`] found between `<` and `>`.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum RawPath {
    Null,
    Postmaster,
    Mailbox(Address),
}

/// Parses a path at the start of `s`; returns it and the text after `>`.
pub(crate) fn parse_path(s: &str) -> Option<(RawPath, &str)> {
    let s = s.strip_prefix('<')?;
    if let Some(rest) = s.strip_prefix('>') {
        return Some((RawPath::Null, rest));
    }
    if s.get(..11)
        .is_some_and(|p| p.eq_ignore_ascii_case("postmaster>"))
    {
        return Some((RawPath::Postmaster, &s[11..]));
    }
    let s = skip_source_route(s)?;
    let (local, s) = local_part(s)?;
    let s = s.strip_prefix('@')?;
    let (domain, s) = domain_or_literal(s)?;
    let rest = s.strip_prefix('>')?;
    if local.len() > MAX_LOCAL_PART || domain.len() > MAX_DOMAIN {
        return None;
    }
    Some((
        RawPath::Mailbox(Address {
            local_part: local.to_owned(),
            domain: domain.to_owned(),
        }),
        rest,
    ))
}

/// `A-d-l ":"`, where `A-d-l = At-domain *( "," At-domain )`.
fn skip_source_route(s: &str) -> Option<&str> {
    if !s.starts_with('@') {
        return Some(s);
    }
    let mut s = s;
    loop {
        s = s.strip_prefix('@')?;
        let (_, rest) = domain(s)?;
        if let Some(rest) = rest.strip_prefix(',') {
            s = rest;
        } else {
            return rest.strip_prefix(':');
        }
    }
}

fn is_atext(c: char) -> bool {
    c.is_ascii_alphanumeric() || "!#$%&'*+-/=?^_`{|}~".contains(c) || !c.is_ascii()
}

/// `Dot-string / Quoted-string`; returns the raw local part and the rest.
fn local_part(s: &str) -> Option<(&str, &str)> {
    if let Some(inner) = s.strip_prefix('"') {
        let mut chars = inner.char_indices();
        while let Some((i, c)) = chars.next() {
            match c {
                '"' => return Some((&s[..i + 2], &inner[i + 1..])),
                '\\' => match chars.next() {
                    Some((_, q)) if (' '..='~').contains(&q) => {}
                    _ => return None,
                },
                ' ' | '!' | '#'..='[' | ']'..='~' => {}
                c if !c.is_ascii() => {}
                _ => return None,
            }
        }
        return None;
    }
    let end = s
        .find(|c: char| !(is_atext(c) || c == '.'))
        .unwrap_or(s.len());
    let dot_string = &s[..end];
    if dot_string.split('.').any(str::is_empty) {
        return None;
    }
    Some((dot_string, &s[end..]))
}

/// `Domain = sub-domain *("." sub-domain)`, labels of letters, digits and
/// inner hyphens (non-ASCII allowed as in RFC 6531 U-labels).
fn domain(s: &str) -> Option<(&str, &str)> {
    let end = s
        .find(|c: char| !(c.is_ascii_alphanumeric() || c == '-' || c == '.' || !c.is_ascii()))
        .unwrap_or(s.len());
    let d = &s[..end];
    let ok = d
        .split('.')
        .all(|l| !l.is_empty() && !l.starts_with('-') && !l.ends_with('-') && l.len() <= 63);
    ok.then_some((d, &s[end..]))
}

/// `Domain / address-literal`.
pub(crate) fn domain_or_literal(s: &str) -> Option<(&str, &str)> {
    let Some(inner) = s.strip_prefix('[') else {
        return domain(s);
    };
    let close = inner.find(']')?;
    let lit = &inner[..close];
    let valid = match lit.get(..5) {
        Some(tag) if tag.eq_ignore_ascii_case("IPv6:") => lit[5..].parse::<Ipv6Addr>().is_ok(),
        _ => lit.parse::<Ipv4Addr>().is_ok(),
    };
    valid.then_some((&s[..close + 2], &inner[close + 1..]))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mailbox(s: &str) -> Option<String> {
        match parse_path(s)? {
            (RawPath::Mailbox(a), "") => Some(a.to_string()),
            _ => None,
        }
    }

    #[test]
    fn plain_and_quoted() {
        assert_eq!(mailbox("<a@b.dk>").as_deref(), Some("a@b.dk"));
        assert_eq!(
            mailbox("<\"john doe\"@b.dk>").as_deref(),
            Some("\"john doe\"@b.dk")
        );
        assert_eq!(
            mailbox("<\"a\\\"b>\"@b.dk>").as_deref(),
            Some("\"a\\\"b>\"@b.dk")
        );
        assert_eq!(
            mailbox("<x.y+z@[192.0.2.1]>").as_deref(),
            Some("x.y+z@[192.0.2.1]")
        );
        assert_eq!(
            mailbox("<x@[IPv6:2001:db8::1]>").as_deref(),
            Some("x@[IPv6:2001:db8::1]")
        );
        assert_eq!(mailbox("<@r1.dk,@r2.dk:a@b.dk>").as_deref(), Some("a@b.dk"));
        assert_eq!(mailbox("<søren@æøå.dk>").as_deref(), Some("søren@æøå.dk"));
    }

    #[test]
    fn rejects() {
        for bad in [
            "a@b.dk",
            "<a@b.dk",
            "<@b.dk>",
            "<a@>",
            "<a..b@c.dk>",
            "<.a@c.dk>",
            "<a@-b.dk>",
            "<a@b..dk>",
            "<a b@c.dk>",
            "<\"a@c.dk>",
            "<a@[300.1.1.1]>",
            "<a@[x:y]>",
            "<a>",
            "<a@b.dk >",
        ] {
            assert_eq!(mailbox(bad), None, "{bad}");
        }
        let long = format!("<{}@b.dk>", "a".repeat(65));
        assert_eq!(mailbox(&long), None);
    }

    #[test]
    fn null_and_postmaster() {
        assert_eq!(parse_path("<> X"), Some((RawPath::Null, " X")));
        assert_eq!(parse_path("<PostMaster>"), Some((RawPath::Postmaster, "")));
    }
}
