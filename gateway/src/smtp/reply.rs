//! Server replies (RFC 5321 §4.2) with enhanced status codes (RFC 3463,
//! announced as `ENHANCEDSTATUSCODES` per RFC 2034).

use std::fmt;

/// An RFC 3463 enhanced status code, `class.subject.detail`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct EnhancedCode {
    /// 2 (success), 4 (persistent transient failure) or 5 (permanent).
    pub class: u8,
    /// Subject (0-999), e.g. 5 for "mail delivery protocol status".
    pub subject: u16,
    /// Detail (0-999).
    pub detail: u16,
}

impl EnhancedCode {
    /// `class.subject.detail`.
    #[must_use]
    pub const fn new(class: u8, subject: u16, detail: u16) -> Self {
        Self {
            class,
            subject,
            detail,
        }
    }
}

impl fmt::Display for EnhancedCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}.{}", self.class, self.subject, self.detail)
    }
}

/// One reply: a three-digit code, an optional enhanced code repeated on
/// every line, and one or more text lines.
///
/// Text never reaches the wire with a CR or LF inside a line: [`Reply::new`]
/// and [`Reply::with_line`] split text at line breaks, so a reply cannot be
/// used to inject a second reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    code: u16,
    enhanced: Option<EnhancedCode>,
    lines: Vec<String>,
}

impl Reply {
    /// A reply with `text` (split at line breaks into several lines).
    /// `code` should be a three-digit code from RFC 5321 §4.2.
    #[must_use]
    pub fn new(code: u16, enhanced: Option<EnhancedCode>, text: &str) -> Self {
        Self {
            code,
            enhanced,
            lines: Vec::new(),
        }
        .with_line(text)
    }

    /// Appends `text` as further line(s), e.g. one `EHLO` keyword each.
    #[must_use]
    pub fn with_line(mut self, text: &str) -> Self {
        self.lines.extend(
            text.split('\n')
                .map(|l| l.trim_end_matches('\r').replace('\r', " ")),
        );
        self
    }

    /// The three-digit reply code.
    #[must_use]
    pub fn code(&self) -> u16 {
        self.code
    }

    /// The enhanced status code, if any.
    #[must_use]
    pub fn enhanced(&self) -> Option<EnhancedCode> {
        self.enhanced
    }

    /// The text lines, without codes.
    #[must_use]
    pub fn lines(&self) -> &[String] {
        &self.lines
    }

    /// The reply as written on the wire, every line ending in CRLF:
    /// `250-first`, ..., `250 last`.
    #[must_use]
    pub fn to_bytes(&self) -> Vec<u8> {
        self.to_string().into_bytes()
    }
}

impl fmt::Display for Reply {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let last = self.lines.len().saturating_sub(1);
        for (i, line) in self.lines.iter().enumerate() {
            let sep = if i == last { ' ' } else { '-' };
            write!(f, "{:03}{sep}", self.code)?;
            match (self.enhanced, line.is_empty()) {
                (Some(e), true) => write!(f, "{e}")?,
                (Some(e), false) => write!(f, "{e} {line}")?,
                (None, _) => f.write_str(line)?,
            }
            f.write_str("\r\n")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn single_line() {
        let r = Reply::new(250, Some(EnhancedCode::new(2, 1, 0)), "OK");
        assert_eq!(r.to_string(), "250 2.1.0 OK\r\n");
    }

    #[test]
    fn multi_line_ehlo() {
        let r = Reply::new(250, None, "mx.example.dk")
            .with_line("PIPELINING")
            .with_line("SIZE 1000");
        assert_eq!(
            r.to_string(),
            "250-mx.example.dk\r\n250-PIPELINING\r\n250 SIZE 1000\r\n"
        );
    }

    #[test]
    fn text_with_line_breaks_cannot_inject() {
        let r = Reply::new(550, Some(EnhancedCode::new(5, 7, 1)), "a\r\n250 b\rc");
        assert_eq!(r.to_string(), "550-5.7.1 a\r\n550 5.7.1 250 b c\r\n");
    }

    #[test]
    fn empty_text() {
        let r = Reply::new(354, None, "");
        assert_eq!(r.to_string(), "354 \r\n");
    }
}
