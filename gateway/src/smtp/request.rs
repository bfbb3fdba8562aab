//! One command line (RFC 5321 §4.1) parsed into a [`Request`].
//!
//! Verbs are case-insensitive. Trailing spaces and tabs are ignored. `MAIL
//! FROM:` and `RCPT TO:` tolerate spaces after the colon (common in the
//! wild, not in the RFC grammar). The line must be UTF-8; UTF-8 in
//! addresses is accepted whatever the `MAIL` parameters say, and the
//! session checks [`Address::is_ascii`](super::Address::is_ascii) against
//! `SMTPUTF8`.

use super::address::{self, ForwardPath, RawPath, ReversePath};
use super::error::ParseError;
use super::params::{MailParams, RcptParams};

/// A parsed client command.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Request {
    /// `EHLO host` (RFC 5321 §4.1.1.1).
    Ehlo {
        /// Domain or address literal, as sent.
        host: String,
    },
    /// `HELO host`.
    Helo {
        /// Domain or address literal, as sent.
        host: String,
    },
    /// `MAIL FROM:<reverse-path> [params]`.
    Mail {
        /// The sender, or `<>`.
        from: ReversePath,
        /// ESMTP parameters.
        params: MailParams,
    },
    /// `RCPT TO:<forward-path> [params]`.
    Rcpt {
        /// The recipient, or `<Postmaster>`.
        to: ForwardPath,
        /// ESMTP parameters.
        params: RcptParams,
    },
    /// `DATA`.
    Data,
    /// `BDAT size [LAST]` (RFC 3030).
    Bdat {
        /// Octets in the chunk that follows the command line.
        size: u64,
        /// `LAST` was given.
        last: bool,
    },
    /// `RSET`.
    Rset,
    /// `NOOP [string]`; the argument is ignored.
    Noop,
    /// `QUIT`.
    Quit,
    /// `VRFY string`.
    Vrfy {
        /// The argument, as sent.
        arg: String,
    },
    /// `EXPN string`.
    Expn {
        /// The argument, as sent.
        arg: String,
    },
    /// `HELP [string]`.
    Help {
        /// The topic, if any.
        topic: Option<String>,
    },
    /// `STARTTLS` (RFC 3207).
    StartTls,
    /// `AUTH mechanism [initial-response]` (RFC 4954).
    Auth {
        /// The SASL mechanism name, upper-cased.
        mechanism: String,
        /// The base64 initial response as sent; `=` (an empty response)
        /// becomes `Some("")`.
        initial_response: Option<String>,
    },
}

impl Request {
    /// Parses one line without its line ending.
    pub fn parse(line: &[u8]) -> Result<Self, ParseError> {
        let line = std::str::from_utf8(line).map_err(|_| ParseError::InvalidUtf8)?;
        let line = line.trim_end_matches([' ', '\t']);
        if line.trim_start().is_empty() {
            return Err(ParseError::EmptyLine);
        }
        let (verb, arg) = match line.split_once(' ') {
            Some((v, a)) => (v, Some(a)),
            None => (line, None),
        };
        let arg = arg.filter(|a| !a.trim().is_empty());
        match verb.to_ascii_uppercase().as_str() {
            "EHLO" => Ok(Self::Ehlo {
                host: greeting_host("EHLO", arg)?,
            }),
            "HELO" => Ok(Self::Helo {
                host: greeting_host("HELO", arg)?,
            }),
            "MAIL" => mail(arg.unwrap_or("")),
            "RCPT" => rcpt(arg.unwrap_or("")),
            "DATA" => no_arg("DATA", arg, Self::Data),
            "RSET" => no_arg("RSET", arg, Self::Rset),
            "QUIT" => no_arg("QUIT", arg, Self::Quit),
            "STARTTLS" => no_arg("STARTTLS", arg, Self::StartTls),
            "NOOP" => Ok(Self::Noop),
            "VRFY" => Ok(Self::Vrfy {
                arg: required("VRFY", arg)?,
            }),
            "EXPN" => Ok(Self::Expn {
                arg: required("EXPN", arg)?,
            }),
            "HELP" => Ok(Self::Help {
                topic: arg.map(|a| a.trim().to_owned()),
            }),
            "BDAT" => bdat(arg),
            "AUTH" => auth(arg),
            _ => Err(ParseError::UnknownCommand),
        }
    }
}

fn no_arg(command: &'static str, arg: Option<&str>, r: Request) -> Result<Request, ParseError> {
    match arg {
        None => Ok(r),
        Some(_) => Err(ParseError::UnexpectedArgument { command }),
    }
}

fn required(command: &'static str, arg: Option<&str>) -> Result<String, ParseError> {
    arg.map(|a| a.trim().to_owned())
        .ok_or(ParseError::MissingArgument { command })
}

/// `EHLO`/`HELO`: exactly one domain or address literal.
fn greeting_host(command: &'static str, arg: Option<&str>) -> Result<String, ParseError> {
    let host = required(command, arg)?;
    match address::domain_or_literal(&host) {
        Some((_, "")) => Ok(host),
        _ => Err(ParseError::InvalidGreetingHost),
    }
}

/// Strips `keyword` (case-insensitive, e.g. `FROM:`) and following spaces.
fn after_keyword<'a>(arg: &'a str, keyword: &str) -> Option<&'a str> {
    let head = arg.get(..keyword.len())?;
    head.eq_ignore_ascii_case(keyword)
        .then(|| arg[keyword.len()..].trim_start_matches(' '))
}

fn mail(arg: &str) -> Result<Request, ParseError> {
    let rest = after_keyword(arg, "FROM:").ok_or(ParseError::ExpectedPathKeyword {
        expected: "MAIL FROM:",
    })?;
    let (path, rest) = address::parse_path(rest).ok_or(ParseError::InvalidReversePath)?;
    let from = match path {
        RawPath::Null => ReversePath::Null,
        RawPath::Mailbox(a) => ReversePath::Address(a),
        RawPath::Postmaster => return Err(ParseError::InvalidReversePath),
    };
    Ok(Request::Mail {
        from,
        params: MailParams::parse(rest)?,
    })
}

fn rcpt(arg: &str) -> Result<Request, ParseError> {
    let rest = after_keyword(arg, "TO:").ok_or(ParseError::ExpectedPathKeyword {
        expected: "RCPT TO:",
    })?;
    let (path, rest) = address::parse_path(rest).ok_or(ParseError::InvalidForwardPath)?;
    let to = match path {
        RawPath::Postmaster => ForwardPath::Postmaster,
        RawPath::Mailbox(a) => ForwardPath::Address(a),
        RawPath::Null => return Err(ParseError::InvalidForwardPath),
    };
    Ok(Request::Rcpt {
        to,
        params: RcptParams::parse(rest)?,
    })
}

fn bdat(arg: Option<&str>) -> Result<Request, ParseError> {
    let arg = arg.ok_or(ParseError::MissingArgument { command: "BDAT" })?;
    let mut words = arg.split(' ').filter(|w| !w.is_empty());
    let size = words
        .next()
        .filter(|s| s.bytes().all(|c| c.is_ascii_digit()))
        .and_then(|s| s.parse::<u64>().ok())
        .ok_or(ParseError::InvalidBdat)?;
    let last = match words.next() {
        None => false,
        Some(w) if w.eq_ignore_ascii_case("LAST") => true,
        Some(_) => return Err(ParseError::InvalidBdat),
    };
    if words.next().is_some() {
        return Err(ParseError::InvalidBdat);
    }
    Ok(Request::Bdat { size, last })
}

fn auth(arg: Option<&str>) -> Result<Request, ParseError> {
    let arg = arg.ok_or(ParseError::MissingArgument { command: "AUTH" })?;
    let mut words = arg.split(' ').filter(|w| !w.is_empty());
    let mechanism = words.next().unwrap_or("");
    let mech_ok = (1..=20).contains(&mechanism.len())
        && mechanism
            .bytes()
            .all(|c| c.is_ascii_alphanumeric() || c == b'-' || c == b'_');
    if !mech_ok {
        return Err(ParseError::InvalidAuthMechanism);
    }
    let initial_response = match words.next() {
        None => None,
        Some("=") => Some(String::new()),
        Some(r) if is_base64(r) => Some(r.to_owned()),
        Some(_) => return Err(ParseError::InvalidBase64),
    };
    if words.next().is_some() {
        return Err(ParseError::InvalidBase64);
    }
    Ok(Request::Auth {
        mechanism: mechanism.to_ascii_uppercase(),
        initial_response,
    })
}

/// Base64 alphabet with up to two trailing `=`, length a multiple of 4.
fn is_base64(s: &str) -> bool {
    let body = s.trim_end_matches('=');
    s.len().is_multiple_of(4)
        && s.len() - body.len() <= 2
        && body
            .bytes()
            .all(|c| c.is_ascii_alphanumeric() || c == b'+' || c == b'/')
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::smtp::params::{Body, Notify};

    fn p(s: &str) -> Result<Request, ParseError> {
        Request::parse(s.as_bytes())
    }

    #[test]
    fn simple_verbs_any_case() {
        assert_eq!(p("data"), Ok(Request::Data));
        assert_eq!(p("Rset  "), Ok(Request::Rset));
        assert_eq!(p("QUIT"), Ok(Request::Quit));
        assert_eq!(p("noop whatever"), Ok(Request::Noop));
        assert_eq!(p("StartTLS"), Ok(Request::StartTls));
        assert_eq!(p("HELP"), Ok(Request::Help { topic: None }));
        assert_eq!(
            p("HELP mail"),
            Ok(Request::Help {
                topic: Some("mail".into())
            })
        );
        assert_eq!(p("VRFY bob"), Ok(Request::Vrfy { arg: "bob".into() }));
    }

    #[test]
    fn greeting() {
        assert_eq!(
            p("EHLO mx.b.dk"),
            Ok(Request::Ehlo {
                host: "mx.b.dk".into()
            })
        );
        assert_eq!(
            p("helo [192.0.2.1]"),
            Ok(Request::Helo {
                host: "[192.0.2.1]".into()
            })
        );
        assert_eq!(
            p("EHLO"),
            Err(ParseError::MissingArgument { command: "EHLO" })
        );
        assert_eq!(p("EHLO a b"), Err(ParseError::InvalidGreetingHost));
        assert_eq!(p("EHLO a_b"), Err(ParseError::InvalidGreetingHost));
    }

    #[test]
    fn mail_from() {
        let Ok(Request::Mail {
            from: ReversePath::Address(a),
            params,
        }) = p("mail from: <a@b.dk> BODY=8BITMIME")
        else {
            panic!("not parsed")
        };
        assert_eq!(a.to_string(), "a@b.dk");
        assert_eq!(params.body, Some(Body::EightBitMime));
        assert_eq!(
            p("MAIL FROM:<>"),
            Ok(Request::Mail {
                from: ReversePath::Null,
                params: MailParams::default()
            })
        );
        assert_eq!(
            p("MAIL FROM:<Postmaster>"),
            Err(ParseError::InvalidReversePath)
        );
        assert_eq!(p("MAIL FROM:a@b.dk"), Err(ParseError::InvalidReversePath));
        assert_eq!(
            p("MAIL <a@b.dk>"),
            Err(ParseError::ExpectedPathKeyword {
                expected: "MAIL FROM:"
            })
        );
        assert_eq!(
            p("MAIL"),
            Err(ParseError::ExpectedPathKeyword {
                expected: "MAIL FROM:"
            })
        );
        assert_eq!(
            p("MAIL FROM:<a@b.dk>SIZE=1"),
            Err(ParseError::InvalidParameterSyntax)
        );
    }

    #[test]
    fn rcpt_to() {
        assert_eq!(
            p("RCPT TO:<postmaster>"),
            Ok(Request::Rcpt {
                to: ForwardPath::Postmaster,
                params: RcptParams::default()
            })
        );
        let Ok(Request::Rcpt {
            to: ForwardPath::Address(a),
            params,
        }) = p("RCPT TO:<\"x y\"@b.dk> NOTIFY=FAILURE")
        else {
            panic!("not parsed")
        };
        assert_eq!(a.local_part(), "\"x y\"");
        assert_eq!(
            params.notify,
            Some(Notify {
                failure: true,
                ..Notify::default()
            })
        );
        assert_eq!(p("RCPT TO:<>"), Err(ParseError::InvalidForwardPath));
        assert_eq!(
            p("RCPT TO:<a@b.dk> BODY=7BIT"),
            Err(ParseError::UnknownParameter {
                keyword: "BODY".into()
            })
        );
    }

    #[test]
    fn bdat_and_auth() {
        assert_eq!(
            p("BDAT 10"),
            Ok(Request::Bdat {
                size: 10,
                last: false
            })
        );
        assert_eq!(
            p("bdat 0 last"),
            Ok(Request::Bdat {
                size: 0,
                last: true
            })
        );
        assert_eq!(p("BDAT x"), Err(ParseError::InvalidBdat));
        assert_eq!(p("BDAT +1"), Err(ParseError::InvalidBdat));
        assert_eq!(p("BDAT 1 FIRST"), Err(ParseError::InvalidBdat));
        assert_eq!(
            p("BDAT"),
            Err(ParseError::MissingArgument { command: "BDAT" })
        );
        assert_eq!(
            p("AUTH plain AGEAYg=="),
            Ok(Request::Auth {
                mechanism: "PLAIN".into(),
                initial_response: Some("AGEAYg==".into())
            })
        );
        assert_eq!(
            p("AUTH LOGIN ="),
            Ok(Request::Auth {
                mechanism: "LOGIN".into(),
                initial_response: Some(String::new())
            })
        );
        assert_eq!(p("AUTH PLAIN a*b="), Err(ParseError::InvalidBase64));
        assert_eq!(p("AUTH PL@IN"), Err(ParseError::InvalidAuthMechanism));
    }

    #[test]
    fn line_level_errors() {
        assert_eq!(p(""), Err(ParseError::EmptyLine));
        assert_eq!(p("   "), Err(ParseError::EmptyLine));
        assert_eq!(p("FOO"), Err(ParseError::UnknownCommand));
        assert_eq!(Request::parse(b"NOOP \xff"), Err(ParseError::InvalidUtf8));
        assert_eq!(
            p("DATA x"),
            Err(ParseError::UnexpectedArgument { command: "DATA" })
        );
    }
}
