//! ESMTP parameters of `MAIL` and `RCPT` (RFC 5321 §4.1.2 `esmtp-param`):
//!
//! ```text
//! esmtp-param   = esmtp-keyword ["=" esmtp-value]
//! esmtp-keyword = (ALPHA / DIGIT) *(ALPHA / DIGIT / "-")
//! esmtp-value   = 1*(%d33-60 / %d62-126)   ; plus UTF8-non-ascii (RFC 6531)
//! ```
//!
//! Known on `MAIL`: `SIZE` (RFC 1870), `BODY` (RFC 6152, RFC 3030),
//! `SMTPUTF8` (RFC 6531), `RET` and `ENVID` (RFC 3461). Known on `RCPT`:
//! `NOTIFY` and `ORCPT` (RFC 3461). Any other keyword is
//! [`ParseError::UnknownParameter`] (555); a repeated one is
//! [`ParseError::DuplicateParameter`]. Keywords and fixed values are
//! case-insensitive.

use super::error::ParseError;

/// `BODY=` (RFC 6152 `8BITMIME`, RFC 3030 `BINARYMIME`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Body {
    /// `7BIT`.
    SevenBit,
    /// `8BITMIME`.
    EightBitMime,
    /// `BINARYMIME` (only with `BDAT`).
    BinaryMime,
}

/// `RET=` (RFC 3461 §4.3): what a failure DSN returns.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Ret {
    /// `FULL`: the whole message.
    Full,
    /// `HDRS`: only the headers.
    Hdrs,
}

/// Parameters of `MAIL FROM:`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MailParams {
    /// `SIZE=`: declared message size in octets.
    pub size: Option<u64>,
    /// `BODY=`.
    pub body: Option<Body>,
    /// `SMTPUTF8` was given (it takes no value).
    pub smtputf8: bool,
    /// `RET=`.
    pub ret: Option<Ret>,
    /// `ENVID=`, xtext-decoded.
    pub envid: Option<String>,
}

/// `NOTIFY=` (RFC 3461 §4.1). All three `false` means `NEVER`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct Notify {
    /// `SUCCESS`.
    pub success: bool,
    /// `FAILURE`.
    pub failure: bool,
    /// `DELAY`.
    pub delay: bool,
}

/// `ORCPT=addr-type;xtext` (RFC 3461 §4.2), xtext-decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Orcpt {
    /// The address type, e.g. `rfc822`, as sent.
    pub addr_type: String,
    /// The original recipient, decoded.
    pub address: String,
}

/// Parameters of `RCPT TO:`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RcptParams {
    /// `NOTIFY=`.
    pub notify: Option<Notify>,
    /// `ORCPT=`.
    pub orcpt: Option<Orcpt>,
}

/// Splits `s` (the text after the path) into `(KEYWORD, value)` pairs.
fn split(s: &str) -> Result<Vec<(String, Option<&str>)>, ParseError> {
    // After the path there must be a space before any parameter.
    if !s.is_empty() && !s.starts_with(' ') {
        return Err(ParseError::InvalidParameterSyntax);
    }
    let mut out = Vec::new();
    for p in s.split(' ').filter(|p| !p.is_empty()) {
        let (k, v) = match p.split_once('=') {
            Some((k, v)) => (k, Some(v)),
            None => (p, None),
        };
        let key_ok = k.chars().next().is_some_and(|c| c.is_ascii_alphanumeric())
            && k.chars().all(|c| c.is_ascii_alphanumeric() || c == '-');
        let value_ok = v.is_none_or(|v| {
            !v.is_empty()
                && v.chars()
                    .all(|c| ('!'..='~').contains(&c) && c != '=' || !c.is_ascii())
        });
        if !key_ok || !value_ok {
            return Err(ParseError::InvalidParameterSyntax);
        }
        let key = k.to_ascii_uppercase();
        if out.iter().any(|(seen, _)| *seen == key) {
            return Err(ParseError::DuplicateParameter { keyword: key });
        }
        out.push((key, v));
    }
    Ok(out)
}

fn bad(keyword: &str) -> ParseError {
    ParseError::InvalidParameterValue {
        keyword: keyword.to_owned(),
    }
}

fn need<'a>(key: &str, v: Option<&'a str>) -> Result<&'a str, ParseError> {
    v.ok_or_else(|| bad(key))
}

/// Decodes RFC 3461 §4 xtext: `"+" 2HEXCHAR` escapes any octet.
fn xtext(key: &str, v: &str) -> Result<String, ParseError> {
    let b = v.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'+' {
            let hex = v.get(i + 1..i + 3).ok_or_else(|| bad(key))?;
            if !hex
                .bytes()
                .all(|c| c.is_ascii_digit() || (b'A'..=b'F').contains(&c))
            {
                return Err(bad(key));
            }
            out.push(u8::from_str_radix(hex, 16).map_err(|_| bad(key))?);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| bad(key))
}

impl MailParams {
    /// Parses the text after the reverse-path.
    pub(crate) fn parse(s: &str) -> Result<Self, ParseError> {
        let mut p = Self::default();
        for (key, v) in split(s)? {
            match key.as_str() {
                "SIZE" => {
                    let v = need(&key, v)?;
                    if !v.bytes().all(|c| c.is_ascii_digit()) {
                        return Err(bad(&key));
                    }
                    p.size = Some(v.parse().map_err(|_| bad(&key))?);
                }
                "BODY" => {
                    let v = need(&key, v)?;
                    p.body = Some(match v.to_ascii_uppercase().as_str() {
                        "7BIT" => Body::SevenBit,
                        "8BITMIME" => Body::EightBitMime,
                        "BINARYMIME" => Body::BinaryMime,
                        _ => return Err(bad(&key)),
                    });
                }
                "SMTPUTF8" => {
                    if v.is_some() {
                        return Err(bad(&key));
                    }
                    p.smtputf8 = true;
                }
                "RET" => {
                    let v = need(&key, v)?;
                    p.ret = Some(match v.to_ascii_uppercase().as_str() {
                        "FULL" => Ret::Full,
                        "HDRS" => Ret::Hdrs,
                        _ => return Err(bad(&key)),
                    });
                }
                "ENVID" => {
                    let v = xtext(&key, need(&key, v)?)?;
                    // RFC 3461 §4.4: at most 100 characters.
                    if v.len() > 100 {
                        return Err(bad(&key));
                    }
                    p.envid = Some(v);
                }
                _ => return Err(ParseError::UnknownParameter { keyword: key }),
            }
        }
        Ok(p)
    }
}

impl RcptParams {
    /// Parses the text after the forward-path.
    pub(crate) fn parse(s: &str) -> Result<Self, ParseError> {
        let mut p = Self::default();
        for (key, v) in split(s)? {
            match key.as_str() {
                "NOTIFY" => {
                    let v = need(&key, v)?.to_ascii_uppercase();
                    let mut n = Notify::default();
                    if v != "NEVER" {
                        for item in v.split(',') {
                            let flag = match item {
                                "SUCCESS" => &mut n.success,
                                "FAILURE" => &mut n.failure,
                                "DELAY" => &mut n.delay,
                                _ => return Err(bad(&key)),
                            };
                            if *flag {
                                return Err(bad(&key));
                            }
                            *flag = true;
                        }
                    }
                    p.notify = Some(n);
                }
                "ORCPT" => {
                    let (t, a) = need(&key, v)?.split_once(';').ok_or_else(|| bad(&key))?;
                    let type_ok = t.chars().next().is_some_and(|c| c.is_ascii_alphanumeric())
                        && t.chars().all(|c| c.is_ascii_alphanumeric() || c == '-');
                    if !type_ok || a.is_empty() {
                        return Err(bad(&key));
                    }
                    p.orcpt = Some(Orcpt {
                        addr_type: t.to_owned(),
                        address: xtext(&key, a)?,
                    });
                }
                _ => return Err(ParseError::UnknownParameter { keyword: key }),
            }
        }
        Ok(p)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn mail_params() {
        let p =
            MailParams::parse(" size=1234 BODY=8bitmime SMTPUTF8 RET=HDRS ENVID=a+2Bb").unwrap();
        assert_eq!(
            p,
            MailParams {
                size: Some(1234),
                body: Some(Body::EightBitMime),
                smtputf8: true,
                ret: Some(Ret::Hdrs),
                envid: Some("a+b".into()),
            }
        );
        assert_eq!(MailParams::parse("").unwrap(), MailParams::default());
    }

    #[test]
    fn mail_param_errors() {
        let k = |s: &str| ParseError::InvalidParameterValue { keyword: s.into() };
        assert_eq!(MailParams::parse(" SIZE=-1"), Err(k("SIZE")));
        assert_eq!(
            MailParams::parse(" SIZE=99999999999999999999"),
            Err(k("SIZE"))
        );
        assert_eq!(MailParams::parse(" SIZE"), Err(k("SIZE")));
        assert_eq!(MailParams::parse(" BODY=9BIT"), Err(k("BODY")));
        assert_eq!(MailParams::parse(" SMTPUTF8=yes"), Err(k("SMTPUTF8")));
        assert_eq!(MailParams::parse(" ENVID=a+2"), Err(k("ENVID")));
        assert_eq!(MailParams::parse(" ENVID=a+2b"), Err(k("ENVID")));
        assert_eq!(
            MailParams::parse(" FOO=1"),
            Err(ParseError::UnknownParameter {
                keyword: "FOO".into()
            })
        );
        assert_eq!(
            MailParams::parse(" SIZE=1 size=2"),
            Err(ParseError::DuplicateParameter {
                keyword: "SIZE".into()
            })
        );
        assert_eq!(
            MailParams::parse("SIZE=1"),
            Err(ParseError::InvalidParameterSyntax)
        );
        assert_eq!(
            MailParams::parse(" -X=1"),
            Err(ParseError::InvalidParameterSyntax)
        );
        assert_eq!(
            MailParams::parse(" X="),
            Err(ParseError::InvalidParameterSyntax)
        );
        assert_eq!(
            MailParams::parse(" X=a=b"),
            Err(ParseError::InvalidParameterSyntax)
        );
    }

    #[test]
    fn rcpt_params() {
        let p = RcptParams::parse(" NOTIFY=success,delay ORCPT=rfc822;a+40b.dk").unwrap();
        assert_eq!(
            p.notify,
            Some(Notify {
                success: true,
                failure: false,
                delay: true
            })
        );
        assert_eq!(
            p.orcpt,
            Some(Orcpt {
                addr_type: "rfc822".into(),
                address: "a@b.dk".into()
            })
        );
        assert_eq!(
            RcptParams::parse(" NOTIFY=NEVER").unwrap().notify,
            Some(Notify::default())
        );
        let k = ParseError::InvalidParameterValue {
            keyword: "NOTIFY".into(),
        };
        assert_eq!(RcptParams::parse(" NOTIFY=NEVER,DELAY"), Err(k.clone()));
        assert_eq!(RcptParams::parse(" NOTIFY=DELAY,DELAY"), Err(k));
        assert_eq!(
            RcptParams::parse(" SIZE=1"),
            Err(ParseError::UnknownParameter {
                keyword: "SIZE".into()
            })
        );
    }
}
