//! The crate's error type: one variant per kind of problem in a policy text.
//!
//! A policy text is checked as a whole and every problem is reported, so
//! [`Policy::parse`](crate::Policy::parse) and [`check`](crate::check) return a
//! `Vec<PolicyError>`, sorted by position. Each error carries the
//! [`Location`] it was found at.

use std::fmt;

/// Where in the policy text a problem is: the TOML path of the key or table,
/// and the line and column (1-based) when the parser gave a position.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Location {
    /// The path, written as in the file: `domain."domstol.dk".cipher`.
    /// Empty for the document as a whole.
    pub path: String,
    /// 1-based line, when known.
    pub line: Option<usize>,
    /// 1-based column (in characters), when known.
    pub column: Option<usize>,
}

impl Location {
    /// A location at byte `offset` of `text`, for `path`.
    pub(crate) fn at(text: &str, path: String, offset: Option<usize>) -> Self {
        let Some(offset) = offset else {
            return Self {
                path,
                line: None,
                column: None,
            };
        };
        let offset = offset.min(text.len());
        let before = &text.as_bytes()[..offset];
        let line = before.iter().filter(|&&b| b == b'\n').count() + 1;
        let line_start = before
            .iter()
            .rposition(|&b| b == b'\n')
            .map_or(0, |i| i + 1);
        // Count characters, not bytes; a span that is not on a char boundary
        // (it should always be) falls back to bytes rather than failing.
        let column = text
            .get(line_start..offset)
            .map_or(offset - line_start, |s| s.chars().count())
            + 1;
        Self {
            path,
            line: Some(line),
            column: Some(column),
        }
    }
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.line, self.column) {
            (Some(l), Some(c)) => write!(f, "line {l}, column {c}")?,
            (Some(l), None) => write!(f, "line {l}")?,
            _ => f.write_str("policy")?,
        }
        if !self.path.is_empty() {
            write!(f, " ({})", self.path)?;
        }
        Ok(())
    }
}

/// One problem found in a policy text.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PolicyError {
    /// The text is not valid TOML (unclosed string, duplicate key, ...).
    /// When the text has syntax errors only those are reported: what the
    /// parser recovered is not reliable enough to judge further.
    #[error("{at}: TOML syntax: {message}")]
    Syntax {
        /// Where.
        at: Location,
        /// The parser's description.
        message: String,
    },
    /// A key or table the policy does not know (a typo such as `encypt`, or a
    /// top-level table other than `default`, `domain` and `address`).
    #[error("{at}: unknown key `{key}`, expected {expected}")]
    UnknownKey {
        /// Where.
        at: Location,
        /// The key as written.
        key: String,
        /// The keys allowed there.
        expected: &'static str,
    },
    /// A value of the wrong TOML type (`sign = "yes"` instead of `true`).
    #[error("{at}: expected {expected}, found {found}")]
    WrongType {
        /// Where.
        at: Location,
        /// The type the key takes.
        expected: &'static str,
        /// The type written.
        found: &'static str,
    },
    /// A value of the right type that is not allowed (`cipher = "des"`,
    /// `generations = []`).
    #[error("{at}: bad value {value}, expected {expected}")]
    BadValue {
        /// Where.
        at: Location,
        /// The value as written (quoted for strings).
        value: String,
        /// What is allowed.
        expected: &'static str,
    },
    /// An `[address."..."]` key that is not an e-mail address.
    #[error("{at}: bad address {address:?}: {reason}")]
    BadAddress {
        /// Where.
        at: Location,
        /// The key as written.
        address: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// A `[domain."..."]` key that is not a domain name.
    #[error("{at}: bad domain {domain:?}: {reason}")]
    BadDomain {
        /// Where.
        at: Location,
        /// The key as written.
        domain: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// Two domain or address tables that are the same once compared without
    /// regard to case (`[domain."Domstol.dk"]` and `[domain."domstol.dk"]`).
    #[error("{at}: {name:?} is already defined at {first}")]
    Duplicate {
        /// Where the second one is.
        at: Location,
        /// The normalised (lower-case) name.
        name: String,
        /// Where the first one is.
        first: Location,
    },
}

impl PolicyError {
    /// Where the problem is.
    pub fn location(&self) -> &Location {
        match self {
            PolicyError::Syntax { at, .. }
            | PolicyError::UnknownKey { at, .. }
            | PolicyError::WrongType { at, .. }
            | PolicyError::BadValue { at, .. }
            | PolicyError::BadAddress { at, .. }
            | PolicyError::BadDomain { at, .. }
            | PolicyError::Duplicate { at, .. } => at,
        }
    }
}
