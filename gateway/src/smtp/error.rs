//! Why a command line was refused, and the reply each reason maps to.
//!
//! Codes follow RFC 5321 §4.2.4 (500 line not understood, 501 bad
//! arguments, 504 parameter not implemented, 555 unrecognised `MAIL`/`RCPT`
//! parameter per §4.1.1.11) with RFC 3463 enhanced codes.

use super::reply::{EnhancedCode, Reply};

/// A command line that could not be parsed into a [`Request`](super::Request).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ParseError {
    /// The line was empty (or only whitespace).
    #[error("empty command line")]
    EmptyLine,
    /// The line was not valid UTF-8 (SMTPUTF8 allows UTF-8, nothing else).
    #[error("command line is not valid UTF-8")]
    InvalidUtf8,
    /// The verb is not one this receiver knows.
    #[error("command not recognised")]
    UnknownCommand,
    /// A command that needs an argument (`EHLO`, `HELO`, `VRFY`, `EXPN`,
    /// `AUTH`, `BDAT`) had none.
    #[error("{command} needs an argument")]
    MissingArgument {
        /// The verb, upper-cased.
        command: &'static str,
    },
    /// A command that takes no argument (`DATA`, `RSET`, `QUIT`,
    /// `STARTTLS`) had one.
    #[error("{command} takes no argument")]
    UnexpectedArgument {
        /// The verb, upper-cased.
        command: &'static str,
    },
    /// `MAIL` without `FROM:` or `RCPT` without `TO:`.
    #[error("syntax: {expected}<address>")]
    ExpectedPathKeyword {
        /// `"MAIL FROM:"` or `"RCPT TO:"`.
        expected: &'static str,
    },
    /// The `EHLO`/`HELO` argument was not a single domain or address literal.
    #[error("invalid domain in greeting")]
    InvalidGreetingHost,
    /// The reverse-path of `MAIL FROM:` was not `<>` or `<mailbox>`.
    #[error("invalid sender address syntax")]
    InvalidReversePath,
    /// The forward-path of `RCPT TO:` was not `<Postmaster>` or `<mailbox>`.
    #[error("invalid recipient address syntax")]
    InvalidForwardPath,
    /// An ESMTP parameter was not `KEYWORD` or `KEYWORD=VALUE` in the
    /// allowed characters.
    #[error("syntax error in parameters")]
    InvalidParameterSyntax,
    /// A known ESMTP parameter had a value outside its grammar.
    #[error("invalid value for {keyword}")]
    InvalidParameterValue {
        /// The parameter keyword, upper-cased.
        keyword: String,
    },
    /// The same ESMTP parameter appeared twice.
    #[error("duplicate parameter {keyword}")]
    DuplicateParameter {
        /// The parameter keyword, upper-cased.
        keyword: String,
    },
    /// A `MAIL`/`RCPT` parameter this receiver does not know.
    #[error("parameter {keyword} not recognised")]
    UnknownParameter {
        /// The parameter keyword, upper-cased.
        keyword: String,
    },
    /// `BDAT` size was not a decimal number fitting `u64`, or the second
    /// argument was not `LAST`.
    #[error("syntax: BDAT <size> [LAST]")]
    InvalidBdat,
    /// The `AUTH` mechanism name is not a SASL mechanism name (RFC 4422
    /// §3.1: 1 to 20 of `A-Z 0-9 - _`), so it cannot be one we offer.
    #[error("unrecognised authentication type")]
    InvalidAuthMechanism,
    /// The `AUTH` initial response was not base64 (or `=`).
    #[error("initial response is not base64")]
    InvalidBase64,
}

impl ParseError {
    /// The reply code, enhanced status code and text for this error.
    #[must_use]
    pub fn code_and_text(&self) -> (u16, EnhancedCode, String) {
        let (code, enhanced) = match self {
            Self::EmptyLine | Self::InvalidUtf8 => (500, EnhancedCode::new(5, 5, 2)),
            Self::UnknownCommand => (500, EnhancedCode::new(5, 5, 1)),
            Self::InvalidReversePath => (501, EnhancedCode::new(5, 1, 7)),
            Self::InvalidForwardPath => (501, EnhancedCode::new(5, 1, 3)),
            Self::InvalidBase64 => (501, EnhancedCode::new(5, 5, 2)),
            Self::MissingArgument { .. }
            | Self::UnexpectedArgument { .. }
            | Self::ExpectedPathKeyword { .. }
            | Self::InvalidGreetingHost
            | Self::InvalidParameterSyntax
            | Self::InvalidParameterValue { .. }
            | Self::DuplicateParameter { .. }
            | Self::InvalidBdat => (501, EnhancedCode::new(5, 5, 4)),
            Self::InvalidAuthMechanism => (504, EnhancedCode::new(5, 5, 4)),
            Self::UnknownParameter { .. } => (555, EnhancedCode::new(5, 5, 4)),
        };
        (code, enhanced, self.to_string())
    }
}

impl From<&ParseError> for Reply {
    fn from(e: &ParseError) -> Self {
        let (code, enhanced, text) = e.code_and_text();
        Reply::new(code, Some(enhanced), &text)
    }
}

impl From<ParseError> for Reply {
    fn from(e: ParseError) -> Self {
        Reply::from(&e)
    }
}
