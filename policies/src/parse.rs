//! From TOML text to a [`Policy`], collecting every problem on the way.
//!
//! The text is parsed with `toml`'s span-keeping document parser
//! ([`toml::de::DeTable`]) and walked by hand rather than through serde, so
//! that one pass finds every unknown key, wrong type and bad value and knows
//! the line of each.

use std::collections::BTreeMap;
use std::collections::btree_map::Entry;
use std::ops::Range;

use toml::Spanned;
use toml::de::{DeTable, DeValue};

use crate::error::{Location, PolicyError};
use crate::names::{Address, Domain};
use crate::policy::{Level, Policy, Set};
use crate::settings::{Cipher, EncryptRule, Field, Generation, Revocation, Undecryptable};

pub(crate) fn parse(text: &str) -> Result<Policy, Vec<PolicyError>> {
    let (doc, syntax) = DeTable::parse_recoverable(text);
    let mut cx = Cx {
        text,
        errors: Vec::new(),
    };
    if !syntax.is_empty() {
        for e in syntax {
            let at = cx.loc(String::new(), e.span());
            cx.errors.push(PolicyError::Syntax {
                at,
                message: e.message().to_string(),
            });
        }
        return Err(cx.finish());
    }

    let mut policy = Policy::default();
    for (key, value) in doc.get_ref() {
        let name = key.get_ref().as_ref();
        let path = quote_key(name);
        match name {
            "default" => {
                if let Some(table) = cx.table(&path, value) {
                    policy.default = cx.level(&path, table);
                }
            }
            "domain" => {
                policy.domains = cx.named_levels(&path, value, |s| {
                    Domain::parse(s).map_err(|reason| (reason, true))
                });
            }
            "address" => {
                policy.addresses = cx.named_levels(&path, value, |s| {
                    Address::parse(s).map_err(|reason| (reason, false))
                });
            }
            _ => {
                let at = cx.loc(path, Some(key.span()));
                let (key, expected) = (name.to_string(), "default, domain or address");
                cx.errors
                    .push(PolicyError::UnknownKey { at, key, expected });
            }
        }
    }
    if cx.errors.is_empty() {
        Ok(policy)
    } else {
        Err(cx.finish())
    }
}

/// The walk's state: the text (for line numbers) and the problems so far.
struct Cx<'t> {
    text: &'t str,
    errors: Vec<PolicyError>,
}

type Value<'i> = Spanned<DeValue<'i>>;

impl Cx<'_> {
    fn loc(&self, path: String, span: Option<Range<usize>>) -> Location {
        Location::at(self.text, path, span.map(|s| s.start))
    }

    fn finish(mut self) -> Vec<PolicyError> {
        self.errors.sort_by_key(|e| {
            let at = e.location();
            (
                at.line.unwrap_or(usize::MAX),
                at.column.unwrap_or(usize::MAX),
            )
        });
        self.errors
    }

    fn wrong_type(&mut self, path: &str, value: &Value<'_>, expected: &'static str) {
        let at = self.loc(path.to_string(), Some(value.span()));
        let found = value.get_ref().type_str();
        self.errors.push(PolicyError::WrongType {
            at,
            expected,
            found,
        });
    }

    fn bad_value(&mut self, path: &str, value: &Value<'_>, expected: &'static str) {
        let at = self.loc(path.to_string(), Some(value.span()));
        let value = render(value.get_ref());
        self.errors.push(PolicyError::BadValue {
            at,
            value,
            expected,
        });
    }

    fn table<'a, 'i>(&mut self, path: &str, value: &'a Value<'i>) -> Option<&'a DeTable<'i>> {
        let table = value.get_ref().as_table();
        if table.is_none() {
            self.wrong_type(path, value, "a table");
        }
        table
    }

    /// `[domain."..."]` or `[address."..."]`: a table of tables keyed by a
    /// name that must parse (`Err((reason, is_domain))`) and be unique
    /// without regard to case.
    fn named_levels<K: Ord + Clone + AsRef<str>>(
        &mut self,
        path: &str,
        value: &Value<'_>,
        parse: impl Fn(&str) -> Result<K, (&'static str, bool)>,
    ) -> BTreeMap<K, Level> {
        let mut out = BTreeMap::new();
        let mut first_seen: BTreeMap<K, Location> = BTreeMap::new();
        let Some(table) = self.table(path, value) else {
            return out;
        };
        // In file order, so that "first" in a duplicate is the first written
        // (the table itself is ordered by key).
        let mut entries: Vec<_> = table.iter().collect();
        entries.sort_by_key(|(key, _)| key.span().start);
        for (key, value) in entries {
            let raw = key.get_ref().as_ref();
            // Always quoted: these names are written quoted in the file.
            let path = format!("{path}.{raw:?}");
            let at = self.loc(path.clone(), Some(key.span()));
            let name = match parse(raw) {
                Ok(name) => Some(name),
                Err((reason, true)) => {
                    let domain = raw.to_string();
                    self.errors.push(PolicyError::BadDomain {
                        at: at.clone(),
                        domain,
                        reason,
                    });
                    None
                }
                Err((reason, false)) => {
                    let address = raw.to_string();
                    self.errors.push(PolicyError::BadAddress {
                        at: at.clone(),
                        address,
                        reason,
                    });
                    None
                }
            };
            // Check the level's keys even when its name is bad: report all.
            let Some(table) = self.table(&path, value) else {
                continue;
            };
            let level = self.level(&path, table);
            let Some(name) = name else { continue };
            match first_seen.entry(name.clone()) {
                Entry::Vacant(v) => {
                    v.insert(at);
                    out.insert(name, level);
                }
                Entry::Occupied(o) => {
                    let name = name.as_ref().to_string();
                    self.errors.push(PolicyError::Duplicate {
                        at,
                        name,
                        first: o.get().clone(),
                    });
                }
            }
        }
        out
    }

    /// The keys of one level.
    fn level(&mut self, path: &str, table: &DeTable<'_>) -> Level {
        let mut level = Level::default();
        for (key, value) in table {
            let name = key.get_ref().as_ref();
            let path = format!("{path}.{}", quote_key(name));
            let line = self.loc(String::new(), Some(key.span())).line;
            let Some(field) = Field::from_name(name) else {
                let at = self.loc(path, Some(key.span()));
                let (key, expected) = (name.to_string(), Field::EXPECTED);
                self.errors
                    .push(PolicyError::UnknownKey { at, key, expected });
                continue;
            };
            match field {
                Field::Encrypt => {
                    level.encrypt = self
                        .named(&path, value, EncryptRule::from_name, EncryptRule::EXPECTED)
                        .map(set_at(line));
                }
                Field::Sign => level.sign = self.boolean(&path, value).map(set_at(line)),
                Field::Cipher => {
                    level.cipher = self
                        .named(&path, value, Cipher::from_name, Cipher::EXPECTED)
                        .map(set_at(line));
                }
                Field::Oaep => level.oaep = self.boolean(&path, value).map(set_at(line)),
                Field::Generations => {
                    level.generations = self.generations(&path, value).map(set_at(line))
                }
                Field::SubjectTrigger => {
                    level.subject_trigger = self.trigger(&path, value).map(set_at(line))
                }
                Field::Undecryptable => {
                    level.undecryptable = self
                        .named(
                            &path,
                            value,
                            Undecryptable::from_name,
                            Undecryptable::EXPECTED,
                        )
                        .map(set_at(line));
                }
                Field::SignerPolicies => {
                    level.signer_policies = self
                        .strings(&path, value, parse_oid, OID_EXPECTED)
                        .map(set_at(line));
                }
                Field::SignerAnchors => {
                    level.signer_anchors = self
                        .strings(&path, value, parse_fingerprint, FP_EXPECTED)
                        .map(set_at(line));
                }
                Field::Revocation => {
                    level.revocation = self
                        .named(&path, value, Revocation::from_name, Revocation::EXPECTED)
                        .map(set_at(line));
                }
            }
        }
        level
    }

    /// An array of strings, each parsed by `parse` (an empty array is
    /// allowed: it sets the key back to "any").
    fn strings(
        &mut self,
        path: &str,
        value: &Value<'_>,
        parse: fn(&str) -> Option<String>,
        expected: &'static str,
    ) -> Option<Vec<String>> {
        let Some(items) = value.get_ref().as_array() else {
            let at = self.loc(path.to_string(), Some(value.span()));
            let found = value.get_ref().type_str();
            self.errors.push(PolicyError::WrongType {
                at,
                expected: "an array of strings",
                found,
            });
            return None;
        };
        let mut out = Vec::new();
        let mut ok = true;
        for (i, item) in items.iter().enumerate() {
            let path = format!("{path}[{i}]");
            match self.string(&path, item).map(parse) {
                Some(Some(v)) if out.contains(&v) => {
                    self.bad_value(&path, item, "each value once");
                    ok = false;
                }
                Some(Some(v)) => out.push(v),
                Some(None) => {
                    self.bad_value(&path, item, expected);
                    ok = false;
                }
                None => ok = false,
            }
        }
        ok.then_some(out)
    }

    fn boolean(&mut self, path: &str, value: &Value<'_>) -> Option<bool> {
        let b = value.get_ref().as_bool();
        if b.is_none() {
            self.wrong_type(path, value, "a boolean (true or false)");
        }
        b
    }

    fn string<'a>(&mut self, path: &str, value: &'a Value<'_>) -> Option<&'a str> {
        let s = value.get_ref().as_str();
        if s.is_none() {
            self.wrong_type(path, value, "a string");
        }
        s
    }

    fn named<T>(
        &mut self,
        path: &str,
        value: &Value<'_>,
        from_name: fn(&str) -> Option<T>,
        expected: &'static str,
    ) -> Option<T> {
        let s = self.string(path, value)?;
        let t = from_name(s);
        if t.is_none() {
            self.bad_value(path, value, expected);
        }
        t
    }

    fn generations(&mut self, path: &str, value: &Value<'_>) -> Option<Vec<Generation>> {
        let Some(items) = value.get_ref().as_array() else {
            self.wrong_type(path, value, r#"an array of strings such as ["OCES3"]"#);
            return None;
        };
        if items.is_empty() {
            self.bad_value(
                path,
                value,
                r#"at least one of "OCES2" and "OCES3" (use encrypt = "never" to not encrypt)"#,
            );
            return None;
        }
        let mut out = Vec::new();
        let mut ok = true;
        for (i, item) in items.iter().enumerate() {
            let path = format!("{path}[{i}]");
            match self.named(&path, item, Generation::from_name, Generation::EXPECTED) {
                Some(g) if out.contains(&g) => {
                    self.bad_value(&path, item, "each generation once");
                    ok = false;
                }
                Some(g) => out.push(g),
                None => ok = false,
            }
        }
        ok.then_some(out)
    }

    fn trigger(&mut self, path: &str, value: &Value<'_>) -> Option<String> {
        let s = self.string(path, value)?;
        if s.trim() != s || s.chars().any(char::is_control) {
            self.bad_value(
                path,
                value,
                r#"text without surrounding whitespace or control characters, such as "[sikker]" ("" turns the trigger off)"#,
            );
            return None;
        }
        Some(s.to_string())
    }
}

const OID_EXPECTED: &str =
    "a certificate policy OID in dotted decimal, such as \"1.2.208.169.1.1.1.3.7\"";
const FP_EXPECTED: &str = "a SHA-256 certificate fingerprint, \"sha256:\" and 64 hex digits (colons allowed), as `openssl x509 -fingerprint -sha256` prints it";

/// A dotted-decimal OID (at least two arcs, first 0-2).
fn parse_oid(s: &str) -> Option<String> {
    let arcs: Vec<&str> = s.split('.').collect();
    let ok = arcs.len() >= 2
        && arcs.iter().all(|a| {
            !a.is_empty()
                && a.bytes().all(|b| b.is_ascii_digit())
                && (a.len() == 1 || !a.starts_with('0'))
        })
        && matches!(arcs[0], "0" | "1" | "2");
    ok.then(|| s.to_string())
}

/// `sha256:` and 64 hex digits, colons allowed; upper case without colons.
fn parse_fingerprint(s: &str) -> Option<String> {
    let rest = s
        .strip_prefix("sha256:")
        .or_else(|| s.strip_prefix("SHA256:"))
        .or_else(|| s.strip_prefix("sha256 Fingerprint="))?;
    let hex: String = rest.chars().filter(|c| *c != ':').collect();
    (hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_hexdigit()))
        .then(|| hex.to_ascii_uppercase())
}

/// Wrap a value with the line that set it.
fn set_at<T>(line: Option<usize>) -> impl FnOnce(T) -> Set<T> {
    move |value| Set { value, line }
}

/// A key as written in a TOML path: bare when it can be, else quoted.
fn quote_key(key: &str) -> String {
    if !key.is_empty()
        && key
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    {
        key.to_string()
    } else {
        format!("{key:?}")
    }
}

/// A short rendering of a value for error messages.
fn render(value: &DeValue<'_>) -> String {
    match value {
        DeValue::String(s) => format!("{:?}", s.as_ref()),
        DeValue::Integer(i) => i.as_str().to_string(),
        DeValue::Float(f) => f.as_str().to_string(),
        DeValue::Boolean(b) => b.to_string(),
        DeValue::Datetime(d) => d.to_string(),
        DeValue::Array(a) => {
            let items: Vec<String> = a.iter().map(|v| render(v.get_ref())).collect();
            format!("[{}]", items.join(", "))
        }
        DeValue::Table(_) => "a table".to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// (line, path, kind) of each error, for compact assertions.
    fn summary(text: &str) -> Vec<(Option<usize>, String, &'static str)> {
        let errors = parse(text).unwrap_err();
        errors
            .iter()
            .map(|e| {
                let kind = match e {
                    PolicyError::Syntax { .. } => "syntax",
                    PolicyError::UnknownKey { .. } => "unknown",
                    PolicyError::WrongType { .. } => "type",
                    PolicyError::BadValue { .. } => "value",
                    PolicyError::BadAddress { .. } => "address",
                    PolicyError::BadDomain { .. } => "domain",
                    PolicyError::Duplicate { .. } => "duplicate",
                };
                (e.location().line, e.location().path.clone(), kind)
            })
            .collect()
    }

    #[test]
    fn every_error_reported_with_its_location() {
        let text = r#"
verbose = true

[default]
encypt = "required"
sign = "yes"
cipher = "des"

[domain."domstol.dk"]
encrypt = "Required"
generations = []

[domain."*.domstol.dk"]
oaep = 1

[domain."Domstol.DK"]
sign = false

[address."x@y.dk"]
generations = ["OCES3", "OCES4", "OCES3"]
subject_trigger = " [sikker]"

[address."not-an-address"]
undecryptable = "drop"

[address."X@Y.DK"]
sign = true

[domain."gammel.dk"]
sub = { encrypt = "never" }
"#;
        let want: Vec<(Option<usize>, String, &str)> = vec![
            (Some(2), "verbose", "unknown"),
            (Some(5), "default.encypt", "unknown"),
            (Some(6), "default.sign", "type"),
            (Some(7), "default.cipher", "value"),
            (Some(10), r#"domain."domstol.dk".encrypt"#, "value"),
            (Some(11), r#"domain."domstol.dk".generations"#, "value"),
            (Some(13), r#"domain."*.domstol.dk""#, "domain"),
            (Some(14), r#"domain."*.domstol.dk".oaep"#, "type"),
            (Some(16), r#"domain."Domstol.DK""#, "duplicate"),
            (Some(20), r#"address."x@y.dk".generations[1]"#, "value"),
            (Some(20), r#"address."x@y.dk".generations[2]"#, "value"),
            (Some(21), r#"address."x@y.dk".subject_trigger"#, "value"),
            (Some(23), r#"address."not-an-address""#, "address"),
            (
                Some(24),
                r#"address."not-an-address".undecryptable"#,
                "value",
            ),
            (Some(26), r#"address."X@Y.DK""#, "duplicate"),
            (Some(30), r#"domain."gammel.dk".sub"#, "unknown"),
        ]
        .into_iter()
        .map(|(l, p, k)| (l, p.to_string(), k))
        .collect();
        assert_eq!(summary(text), want);
    }

    #[test]
    fn messages_name_the_place_and_the_fix() {
        let errors =
            parse("[default]\nsign = \"yes\"\n[domain.\"Domstol.dk\"]\n[domain.\"domstol.dk\"]\n")
                .unwrap_err();
        let text: Vec<String> = errors.iter().map(ToString::to_string).collect();
        assert_eq!(
            text[0],
            "line 2, column 8 (default.sign): expected a boolean (true or false), found string"
        );
        assert!(text[1].starts_with("line 4, column 9 (domain.\"domstol.dk\"): \"domstol.dk\" is already defined at line 3"), "{text:?}");
    }

    #[test]
    fn wrong_shapes() {
        assert_eq!(
            summary("default = 1"),
            vec![(Some(1), "default".into(), "type")]
        );
        assert_eq!(
            summary("domain = \"x\""),
            vec![(Some(1), "domain".into(), "type")]
        );
        assert_eq!(
            summary("[domain]\n\"x.dk\" = 1"),
            vec![(Some(2), "domain.\"x.dk\"".into(), "type")]
        );
        assert_eq!(
            summary("[default]\ngenerations = \"OCES3\""),
            vec![(Some(2), "default.generations".into(), "type")]
        );
        assert_eq!(
            summary("[default]\nsubject_trigger = 3"),
            vec![(Some(2), "default.subject_trigger".into(), "type")]
        );
        assert_eq!(
            summary("[default]\nsubject_trigger = \"a\\nb\""),
            vec![(Some(2), "default.subject_trigger".into(), "value")]
        );
    }

    #[test]
    fn syntax_errors_only_when_not_toml() {
        let s = summary("[default]\nsign = \nencrypt = \"required\nfoo = 1\n");
        assert!(!s.is_empty());
        assert!(s.iter().all(|(_, _, k)| *k == "syntax"), "{s:?}");
        assert!(s.iter().all(|(l, _, _)| l.is_some()), "{s:?}");
        assert_eq!(
            summary("[default]\nsign = true\nsign = false\n")[0].2,
            "syntax"
        );
    }

    #[test]
    fn valid_values_parse() {
        let p = parse(
            r#"
[default]
encrypt = "never"
sign = false
cipher = "aes128-gcm"
oaep = true
generations = ["OCES2", "OCES3"]
subject_trigger = ""
undecryptable = "quarantine"
"#,
        )
        .unwrap();
        let l = &p.default;
        assert_eq!(
            l.encrypt,
            Some(Set {
                value: EncryptRule::Never,
                line: Some(3)
            })
        );
        assert_eq!(l.cipher.as_ref().map(|s| s.value), Some(Cipher::Aes128Gcm));
        assert_eq!(
            l.generations.as_ref().map(|s| s.value.clone()),
            Some(vec![Generation::Oces2, Generation::Oces3])
        );
        assert_eq!(
            l.subject_trigger.as_ref().map(|s| s.value.as_str()),
            Some("")
        );
        assert_eq!(
            l.undecryptable.as_ref().map(|s| s.value),
            Some(Undecryptable::Quarantine)
        );
    }
}
