//! [`Domain`] and [`Address`]: the keys of `[domain."..."]` and
//! `[address."..."]` tables, parsed once and kept in lower case so that
//! matching is a plain comparison.
//!
//! Only ASCII is accepted: internationalised domains are written in their
//! `xn--` form. Matching a message's recipient does not go through these
//! parsers (a recipient that is not a valid address simply matches nothing);
//! see `normalise_recipient`.

use std::fmt;

/// A domain name in lower case, e.g. `domstol.dk`. A single label (`dk`) is
/// allowed and then matches every address under that top-level domain.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Domain(String);

impl Domain {
    /// Parse a domain name, case-insensitively.
    ///
    /// # Errors
    /// A reason when it is empty, too long, has an empty label or a trailing
    /// dot, or has characters other than ASCII letters, digits and `-`
    /// (a label may not start or end with `-`).
    pub fn parse(s: &str) -> Result<Self, &'static str> {
        if s.is_empty() {
            return Err("empty");
        }
        if s.len() > 253 {
            return Err("longer than 253 characters");
        }
        if !s.is_ascii() {
            return Err("not ASCII (write internationalised domains as xn--...)");
        }
        if s.ends_with('.') {
            return Err("trailing dot");
        }
        for label in s.split('.') {
            if label.is_empty() {
                return Err("empty label");
            }
            if label.len() > 63 {
                return Err("label longer than 63 characters");
            }
            if !label
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-')
            {
                return Err("only letters, digits, '-' and '.' are allowed");
            }
            if label.starts_with('-') || label.ends_with('-') {
                return Err("a label may not start or end with '-'");
            }
        }
        Ok(Self(s.to_ascii_lowercase()))
    }

    /// The domain in lower case.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Whether `host` (already lower case) is this domain or a subdomain of it.
    pub(crate) fn covers(&self, host: &str) -> bool {
        match host.strip_suffix(self.0.as_str()) {
            Some("") => true,
            Some(rest) => rest.ends_with('.'),
            None => false,
        }
    }

    /// How many labels: the more, the more specific.
    pub(crate) fn labels(&self) -> usize {
        self.0.split('.').count()
    }
}

impl AsRef<str> for Domain {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Domain {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// An e-mail address in lower case, e.g. `post@domstol.dk`.
///
/// The local part is compared case-insensitively too: that is what every
/// mail system the gateway meets does, although RFC 5321 §2.4 leaves it to
/// the receiving host.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Address(String);

impl Address {
    /// Parse an address `local@domain`, case-insensitively.
    ///
    /// # Errors
    /// A reason when there is not exactly one `@`, the local part is empty,
    /// longer than 64 characters or has whitespace, control characters,
    /// non-ASCII or `<>()[]\,;:"`, or the domain is not a [`Domain`].
    pub fn parse(s: &str) -> Result<Self, &'static str> {
        let Some((local, domain)) = s.split_once('@') else {
            return Err("no '@'");
        };
        if domain.contains('@') {
            return Err("more than one '@'");
        }
        if local.is_empty() {
            return Err("empty local part");
        }
        if local.len() > 64 {
            return Err("local part longer than 64 characters");
        }
        if !local.is_ascii() {
            return Err("local part not ASCII");
        }
        if local.bytes().any(|b| {
            b.is_ascii_whitespace() || b.is_ascii_control() || b"<>()[]\\,;:\"".contains(&b)
        }) {
            return Err("local part has whitespace or one of <>()[]\\,;:\"");
        }
        if local.starts_with('.') || local.ends_with('.') || local.contains("..") {
            return Err("misplaced '.' in local part");
        }
        let domain = Domain::parse(domain)?;
        Ok(Self(format!(
            "{}@{}",
            local.to_ascii_lowercase(),
            domain.as_str()
        )))
    }

    /// The address in lower case.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl AsRef<str> for Address {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Address {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A recipient as given by the caller, made comparable with [`Address`] and
/// [`Domain`]: surrounding whitespace and `<>` removed, lower case, the host
/// being what follows the last `@` (without a trailing dot). Never fails:
/// something that is not an address matches no table and gets `[default]`.
pub(crate) fn normalise_recipient(recipient: &str) -> (String, String) {
    let r = recipient.trim();
    let r = r
        .strip_prefix('<')
        .and_then(|x| x.strip_suffix('>'))
        .unwrap_or(r)
        .trim();
    let lower = r.to_lowercase();
    match lower.rsplit_once('@') {
        Some((local, host)) => {
            let host = host.trim_end_matches('.');
            (format!("{local}@{host}"), host.to_string())
        }
        None => (lower, String::new()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn domains() {
        for (input, ok) in [
            ("domstol.dk", Some("domstol.dk")),
            ("Domstol.DK", Some("domstol.dk")),
            ("dk", Some("dk")),
            ("xn--kbenhavn-54a.dk", Some("xn--kbenhavn-54a.dk")),
            ("a-b.dk", Some("a-b.dk")),
            ("", None),
            ("domstol.dk.", None),
            (".dk", None),
            ("a..dk", None),
            ("-a.dk", None),
            ("a-.dk", None),
            ("*.domstol.dk", None),
            ("københavn.dk", None),
            ("a b.dk", None),
            ("x@y.dk", None),
        ] {
            assert_eq!(
                Domain::parse(input).ok().as_ref().map(Domain::as_str),
                ok,
                "{input:?}"
            );
        }
        assert!(Domain::parse(&"a".repeat(64)).is_err());
        assert!(Domain::parse(&format!("{}.dk", "a.".repeat(130))).is_err());
    }

    #[test]
    fn addresses() {
        for (input, ok) in [
            ("x@y.dk", Some("x@y.dk")),
            ("Post@Domstol.DK", Some("post@domstol.dk")),
            ("first.last+tag@y.dk", Some("first.last+tag@y.dk")),
            ("y.dk", None),
            ("@y.dk", None),
            ("x@", None),
            ("x@y@z.dk", None),
            ("a b@y.dk", None),
            ("<x@y.dk>", None),
            (".x@y.dk", None),
            ("x..y@y.dk", None),
            ("ø@y.dk", None),
        ] {
            assert_eq!(
                Address::parse(input).ok().as_ref().map(Address::as_str),
                ok,
                "{input:?}"
            );
        }
    }

    #[test]
    fn covers_exact_and_subdomains_only() {
        let d = Domain::parse("domstol.dk").unwrap();
        assert!(d.covers("domstol.dk"));
        assert!(d.covers("ret.domstol.dk"));
        assert!(d.covers("a.b.domstol.dk"));
        assert!(!d.covers("xdomstol.dk"));
        assert!(!d.covers("domstol.dk.evil.com"));
        assert!(!d.covers("dk"));
        assert!(!d.covers(""));
    }

    #[test]
    fn recipients_normalised() {
        assert_eq!(
            normalise_recipient(" <Post@Domstol.DK.> "),
            ("post@domstol.dk".into(), "domstol.dk".into())
        );
        assert_eq!(
            normalise_recipient("nonsense"),
            ("nonsense".into(), String::new())
        );
        assert_eq!(normalise_recipient(""), (String::new(), String::new()));
    }
}
