//! Delivery status notifications (RFC 3464 multipart/report with
//! report-type=delivery-status), the NOTIFY decision (RFC 3461) and the retry
//! delay between delivery attempts.
//!
//! Every string that reaches a header or a delivery-status field may come from
//! an attacker (addresses, ENVID, remote servers' replies): control characters
//! (CR and LF included) become spaces, non-ASCII in delivery-status fields is
//! written as `\x{HEX}` (RFC 6533 §3), and long values are folded, so no value
//! can start a new header field or a MIME part.

use std::fmt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// What happened to a recipient (RFC 3464 §2.3.3 Action field).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Action {
    /// Delivery failed for good; the message is returned.
    Failed,
    /// Still being retried; a warning only.
    Delayed,
    /// Delivered (a success report, NOTIFY=SUCCESS).
    Delivered,
}

impl Action {
    /// The Action field value: "failed", "delayed" or "delivered".
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Failed => "failed",
            Action::Delayed => "delayed",
            Action::Delivered => "delivered",
        }
    }

    fn default_status(self) -> &'static str {
        match self {
            Action::Failed => "5.0.0",
            Action::Delayed => "4.0.0",
            Action::Delivered => "2.0.0",
        }
    }
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The per-recipient part of a DSN (RFC 3464 §2.3).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DsnRecipient {
    /// The recipient address as delivered to (Final-Recipient: rfc822; ...).
    pub final_recipient: String,
    /// The ORCPT given by the sender, "addr-type;address" (e.g. "rfc822;bob@x");
    /// without ";" rfc822 is assumed.
    pub original_recipient: Option<String>,
    /// What happened.
    pub action: Action,
    /// RFC 3463 status "c.s.d" (e.g. "5.7.1"); an invalid value is replaced by
    /// 5.0.0 / 4.0.0 / 2.0.0 according to `action`.
    pub status: String,
    /// "smtp; 550 5.7.1 ..." for a remote reply, or a plain text (then typed
    /// "X-Sikkermail").
    pub diagnostic: Option<String>,
    /// The host that gave the diagnostic (Remote-MTA: dns; host).
    pub remote_mta: Option<String>,
}

/// Everything needed to build one DSN message with [`build`].
pub struct Dsn<'a> {
    /// Our host name (Reporting-MTA: dns; host).
    pub reporting_mta: &'a str,
    /// From: address of the report, e.g. "MAILER-DAEMON@host".
    pub postmaster: &'a str,
    /// To: address, the original envelope sender.
    pub to: &'a str,
    /// The sender's ENVID, if any (Original-Envelope-Id).
    pub envid: Option<&'a str>,
    /// When the original message arrived (unix seconds; Arrival-Date).
    pub arrival_date: i64,
    /// One entry per recipient reported on.
    pub recipients: Vec<DsnRecipient>,
    /// Human-readable first part (plain text, UTF-8).
    pub explanation: &'a str,
    /// The original message as received.
    pub original: &'a [u8],
    /// RET=FULL: attach the whole original as message/rfc822; otherwise only its
    /// header section, as text/rfc822-headers.
    pub ret_full: bool,
}

/// Debug shows the size of the original, never its content.
impl fmt::Debug for Dsn<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Dsn")
            .field("reporting_mta", &self.reporting_mta)
            .field("postmaster", &self.postmaster)
            .field("to", &self.to)
            .field("envid", &self.envid)
            .field("arrival_date", &self.arrival_date)
            .field("recipients", &self.recipients)
            .field("explanation_len", &self.explanation.len())
            .field("original_len", &self.original.len())
            .field("ret_full", &self.ret_full)
            .finish()
    }
}

/// Longest diagnostic text kept (characters); remote replies may be up to 64 KiB.
const MAX_DIAGNOSTIC: usize = 2000;

/// Builds the complete DSN message (headers and MIME body, CRLF line ends),
/// ready to be sent with the null envelope sender `<>` to `d.to`. Never build
/// one for a message whose own sender was `<>` (RFC 5321 §4.5.5: no DSN loops).
pub fn build(d: &Dsn) -> Vec<u8> {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|t| i64::try_from(t.as_secs()).unwrap_or(i64::MAX))
        .unwrap_or(0);
    let original = to_crlf(d.original);
    let attached: Vec<u8> = if d.ret_full {
        original
    } else {
        header_section(&original)
    };
    let explanation = to_crlf(d.explanation.as_bytes());
    let boundary = pick_boundary(&[&attached, &explanation]);
    let host = sanitize_header(d.reporting_mta);

    let subject = if d.recipients.iter().any(|r| r.action == Action::Failed) {
        "Undelivered Mail Returned to Sender"
    } else if d.recipients.iter().any(|r| r.action == Action::Delayed) {
        "Delayed Mail (still being retried)"
    } else {
        "Successful Mail Delivery Report"
    };

    let mut out = Vec::with_capacity(attached.len() + explanation.len() + 2048);
    let mut h = |name: &str, value: &str| out.extend_from_slice(fold(name, value).as_bytes());
    h(
        "From",
        &format!("Mail Delivery System <{}>", sanitize_header(d.postmaster)),
    );
    h("To", &format!("<{}>", sanitize_header(d.to)));
    h("Subject", subject);
    h("Date", &rfc5322_date(now));
    h(
        "Message-ID",
        &format!("<{now}.{}@{}>", random_hex(8), message_id_host(&host)),
    );
    h("Auto-Submitted", "auto-replied");
    h("MIME-Version", "1.0");
    h(
        "Content-Type",
        &format!("multipart/report; report-type=delivery-status; boundary=\"{boundary}\""),
    );
    out.extend_from_slice(b"\r\nThis is a MIME-encapsulated message.\r\n\r\n");

    // 1. Human-readable explanation.
    out.extend_from_slice(format!("--{boundary}\r\n").as_bytes());
    out.extend_from_slice(b"Content-Description: Notification\r\n");
    out.extend_from_slice(b"Content-Type: text/plain; charset=utf-8\r\n");
    out.extend_from_slice(cte(&explanation).as_bytes());
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(&explanation);
    if !explanation.ends_with(b"\r\n") {
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"\r\n");

    // 2. Machine-readable delivery status.
    out.extend_from_slice(format!("--{boundary}\r\n").as_bytes());
    out.extend_from_slice(b"Content-Description: Delivery report\r\n");
    out.extend_from_slice(b"Content-Type: message/delivery-status\r\n\r\n");
    out.extend_from_slice(status_body(d, &host).as_bytes());
    out.extend_from_slice(b"\r\n");

    // 3. The original, whole or its header only.
    out.extend_from_slice(format!("--{boundary}\r\n").as_bytes());
    if d.ret_full {
        out.extend_from_slice(b"Content-Description: Undelivered Message\r\n");
        out.extend_from_slice(b"Content-Type: message/rfc822\r\n");
    } else {
        out.extend_from_slice(b"Content-Description: Undelivered Message Headers\r\n");
        out.extend_from_slice(b"Content-Type: text/rfc822-headers\r\n");
    }
    out.extend_from_slice(cte(&attached).as_bytes());
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(&attached);
    if !attached.is_empty() && !attached.ends_with(b"\r\n") {
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(format!("--{boundary}--\r\n").as_bytes());
    out
}

/// The message/delivery-status body: per-message fields, then one block per recipient.
fn status_body(d: &Dsn, host: &str) -> String {
    let mut s = String::new();
    s.push_str(&fold(
        "Reporting-MTA",
        &format!("dns; {}", status_value(host)),
    ));
    if let Some(id) = d.envid {
        s.push_str(&fold("Original-Envelope-Id", &status_value(id)));
    }
    s.push_str(&fold("Arrival-Date", &rfc5322_date(d.arrival_date)));
    for r in &d.recipients {
        s.push_str("\r\n");
        s.push_str(&fold(
            "Final-Recipient",
            &format!("rfc822; {}", status_value(&r.final_recipient)),
        ));
        if let Some(o) = &r.original_recipient {
            s.push_str(&fold("Original-Recipient", &typed_value(o, "rfc822")));
        }
        s.push_str(&fold("Action", r.action.as_str()));
        let status = if valid_status(&r.status) {
            r.status.as_str()
        } else {
            r.action.default_status()
        };
        s.push_str(&fold("Status", status));
        if let Some(m) = &r.remote_mta {
            s.push_str(&fold("Remote-MTA", &format!("dns; {}", status_value(m))));
        }
        if let Some(diag) = &r.diagnostic {
            let diag: String = diag.chars().take(MAX_DIAGNOSTIC).collect();
            s.push_str(&fold(
                "Diagnostic-Code",
                &typed_value(&diag, "X-Sikkermail"),
            ));
        }
    }
    s
}

/// "type; value" from "type;value" or a bare value (then typed `default_type`).
fn typed_value(v: &str, default_type: &str) -> String {
    if let Some((ty, rest)) = v.split_once(';') {
        let ty = ty.trim();
        if !ty.is_empty() && ty.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-') {
            return format!("{ty}; {}", status_value(rest.trim()));
        }
    }
    format!("{default_type}; {}", status_value(v.trim()))
}

/// RFC 3463 "class.subject.detail": class 2, 4 or 5, then 1-3 digits twice.
fn valid_status(s: &str) -> bool {
    let parts: Vec<&str> = s.split('.').collect();
    parts.len() == 3
        && matches!(parts[0], "2" | "4" | "5")
        && parts[1..]
            .iter()
            .all(|p| (1..=3).contains(&p.len()) && p.bytes().all(|b| b.is_ascii_digit()))
}

/// The status for a server reply like "550 5.1.1 User unknown": its enhanced
/// code when it has a valid one, else derived from the reply code ("5.0.0",
/// "4.0.0", "2.0.0"; "4.0.0" for anything unparsable).
pub fn status_for_reply(reply: &str) -> String {
    let mut words = reply.split_ascii_whitespace();
    let code = words.next().unwrap_or("");
    if let Some(enh) = words.next()
        && valid_status(enh)
        && enh.as_bytes().first() == code.as_bytes().first()
    {
        return enh.to_string();
    }
    match code.as_bytes().first() {
        Some(b'2') => "2.0.0",
        Some(b'5') => "5.0.0",
        _ => "4.0.0",
    }
    .to_string()
}

/// A header value with every control character (CR, LF, TAB, NUL, DEL, C1)
/// replaced by a space and the ends trimmed: it cannot start a new field.
pub fn sanitize_header(v: &str) -> String {
    v.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect::<String>()
        .trim()
        .to_string()
}

/// Like [`sanitize_header`], and non-ASCII as `\x{HEX}` (delivery-status is ASCII).
fn status_value(v: &str) -> String {
    let mut out = String::with_capacity(v.len());
    for c in sanitize_header(v).chars() {
        if c.is_ascii() {
            out.push(c);
        } else {
            out.push_str(&format!("\\x{{{:X}}}", u32::from(c)));
        }
    }
    out
}

/// "Name: value\r\n", folded at spaces to lines of about 78 characters; a word
/// longer than 900 bytes is cut so no line exceeds the 998 limit. `value` must
/// already be sanitized (no CR/LF).
fn fold(name: &str, value: &str) -> String {
    const SOFT: usize = 78;
    const HARD: usize = 900;
    let mut out = String::with_capacity(name.len() + value.len() + 8);
    out.push_str(name);
    out.push(':');
    let mut line_len = out.len();
    for word in value.split(' ').filter(|w| !w.is_empty()) {
        let mut word = word;
        loop {
            let take = if word.len() > HARD {
                let mut cut = HARD;
                while !word.is_char_boundary(cut) {
                    cut -= 1;
                }
                cut
            } else {
                word.len()
            };
            let (piece, rest) = word.split_at(take);
            if line_len + 1 + piece.len() > SOFT && line_len > name.len() + 1 {
                out.push_str("\r\n");
                line_len = 0;
            }
            out.push(' ');
            out.push_str(piece);
            line_len += 1 + piece.len();
            if rest.is_empty() {
                break;
            }
            word = rest;
            // Force the rest onto a continuation line.
            line_len = SOFT;
        }
    }
    out.push_str("\r\n");
    out
}

/// A boundary that occurs in none of `parts` (random, then checked).
fn pick_boundary(parts: &[&[u8]]) -> String {
    pick_boundary_from(parts, || format!("=_sikkermail_{}", random_hex(12)))
}

/// The first candidate from `next` that occurs in none of `parts`.
fn pick_boundary_from(parts: &[&[u8]], mut next: impl FnMut() -> String) -> String {
    loop {
        let b = next();
        if !parts.iter().any(|p| contains(p, b.as_bytes())) {
            return b;
        }
    }
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    !needle.is_empty() && hay.windows(needle.len()).any(|w| w == needle)
}

/// Line ends made CRLF (bare LF and bare CR included).
fn to_crlf(b: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(b.len() + b.len() / 32);
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'\r' => {
                out.extend_from_slice(b"\r\n");
                if b.get(i + 1) == Some(&b'\n') {
                    i += 1;
                }
            }
            b'\n' => out.extend_from_slice(b"\r\n"),
            c => out.push(c),
        }
        i += 1;
    }
    out
}

/// The header section of a CRLF message: leading lines that are header fields
/// ("name:") or their continuations, up to the first line that is neither (the
/// empty separator line, or body text of a message without a header). Never
/// includes a body line.
fn header_section(msg: &[u8]) -> Vec<u8> {
    let mut end = 0;
    let mut first = true;
    for line in msg.split_inclusive(|&b| b == b'\n') {
        let content = line.strip_suffix(b"\r\n").unwrap_or(line);
        let is_cont = !first && matches!(content.first(), Some(b' ') | Some(b'\t'));
        let is_field = match content.iter().position(|&b| b == b':') {
            Some(p) if p > 0 => content[..p].iter().all(|&b| (33..=126).contains(&b)),
            _ => false,
        };
        if !(is_field || is_cont) {
            break;
        }
        end += line.len();
        first = false;
    }
    msg[..end].to_vec()
}

/// Content-Transfer-Encoding line for a part: 8bit if any byte is non-ASCII.
fn cte(b: &[u8]) -> &'static str {
    if b.is_ascii() {
        "Content-Transfer-Encoding: 7bit\r\n"
    } else {
        "Content-Transfer-Encoding: 8bit\r\n"
    }
}

/// Only letters, digits, '.', '-' of the host, for a Message-ID.
fn message_id_host(host: &str) -> String {
    let h: String = host
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || *c == '.' || *c == '-')
        .collect();
    if h.is_empty() { "localhost".into() } else { h }
}

fn random_hex(bytes: usize) -> String {
    let mut b = vec![0u8; bytes];
    if openssl::rand::rand_bytes(&mut b).is_err() {
        let t = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos();
        for (i, x) in b.iter_mut().enumerate() {
            *x = (t >> ((i % 16) * 8)) as u8;
        }
    }
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// RFC 5322 date-time in UTC, e.g. "Tue, 25 Nov 2025 12:50:00 +0000".
pub fn rfc5322_date(unix: i64) -> String {
    const DAYS: [&str; 7] = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"];
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let days = unix.div_euclid(86_400);
    let secs = unix.rem_euclid(86_400);
    // Civil date from days since 1970-01-01 (H. Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    let wd = DAYS[usize::try_from(days.rem_euclid(7)).unwrap_or(0)];
    let mon = MONTHS[usize::try_from(month - 1).unwrap_or(0)];
    format!(
        "{wd}, {day:02} {mon} {year:04} {:02}:{:02}:{:02} +0000",
        secs / 3600,
        secs / 60 % 60,
        secs % 60
    )
}

/// Whether the sender asked for a DSN of this kind (RFC 3461 §4.1 NOTIFY).
///
/// "NEVER" -> never; otherwise the comma list SUCCESS / FAILURE / DELAY decides
/// (case-insensitive). Without NOTIFY (or with an invalid one) the RFC lets the
/// MTA choose between FAILURE and FAILURE,DELAY; like Postfix we choose
/// FAILURE,DELAY: failures and delays are reported, successes never. Whether and
/// when delay warnings are generated at all is the scheduler's policy.
pub fn should_notify(notify: Option<&str>, action: Action) -> bool {
    let default = matches!(action, Action::Failed | Action::Delayed);
    let Some(n) = notify else { return default };
    let words: Vec<String> = n
        .split(',')
        .map(|w| w.trim().to_ascii_uppercase())
        .collect();
    if words.len() == 1 && words[0] == "NEVER" {
        return false;
    }
    if words.is_empty()
        || !words
            .iter()
            .all(|w| matches!(w.as_str(), "SUCCESS" | "FAILURE" | "DELAY"))
    {
        return default;
    }
    let want = match action {
        Action::Failed => "FAILURE",
        Action::Delayed => "DELAY",
        Action::Delivered => "SUCCESS",
    };
    words.iter().any(|w| w == want)
}

/// Base retry delay, doubled per attempt.
pub const BACKOFF_BASE: Duration = Duration::from_secs(60);
/// Longest retry delay.
pub const BACKOFF_CAP: Duration = Duration::from_secs(3600);

/// Delay before the next delivery attempt after `attempt` failed attempts
/// (0 and 1 give 1 min, then 2, 4, 8 ... min, capped at 1 h), with ±10 %
/// random jitter so that messages deferred together do not retry in lockstep.
/// The result never exceeds [`BACKOFF_CAP`].
pub fn backoff(attempt: u32) -> Duration {
    let exp = attempt.saturating_sub(1).min(16);
    let nominal = BACKOFF_BASE
        .saturating_mul(1u32 << exp)
        .min(BACKOFF_CAP)
        .as_secs_f64();
    let mut r = [0u8; 4];
    let unit = if openssl::rand::rand_bytes(&mut r).is_ok() {
        f64::from(u32::from_be_bytes(r)) / f64::from(u32::MAX) // 0..=1
    } else {
        0.5
    };
    let jittered = nominal * (0.9 + 0.2 * unit);
    Duration::from_secs_f64(jittered).min(BACKOFF_CAP)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn dates() {
        assert_eq!(rfc5322_date(0), "Thu, 01 Jan 1970 00:00:00 +0000");
        assert_eq!(rfc5322_date(951_782_400), "Tue, 29 Feb 2000 00:00:00 +0000");
        assert_eq!(
            rfc5322_date(1_764_075_000),
            "Tue, 25 Nov 2025 12:50:00 +0000"
        );
        assert_eq!(rfc5322_date(-1), "Wed, 31 Dec 1969 23:59:59 +0000");
    }

    #[test]
    fn statuses() {
        assert!(valid_status("5.7.1") && valid_status("4.4.120"));
        assert!(!valid_status("5.7") && !valid_status("3.0.0") && !valid_status("5.x.1"));
        assert_eq!(status_for_reply("550 5.1.1 User unknown"), "5.1.1");
        assert_eq!(status_for_reply("550 User unknown"), "5.0.0");
        assert_eq!(status_for_reply("451 2.0.0 odd"), "4.0.0");
        assert_eq!(status_for_reply("garbage"), "4.0.0");
    }

    #[test]
    fn folding() {
        let long = "word ".repeat(100);
        let f = fold("Diagnostic-Code", &long);
        assert!(f.split("\r\n").all(|l| l.len() <= 78));
        let huge = "x".repeat(5000);
        let f = fold("X", &huge);
        assert!(f.split("\r\n").all(|l| l.len() <= 998));
        assert_eq!(
            f.replace("\r\n ", "").replace(' ', ""),
            format!("X:{huge}\r\n")
        );
        assert_eq!(fold("A", "b"), "A: b\r\n");
    }

    #[test]
    fn boundary_avoids_content() {
        let mut candidates = ["=_taken", "=_also", "=_free"].into_iter();
        let b = pick_boundary_from(&[b"x\r\n--=_taken\r\n", b"=_also"], || {
            candidates.next().unwrap().to_string()
        });
        assert_eq!(b, "=_free");
        assert!(pick_boundary(&[b"abc"]).starts_with("=_sikkermail_"));
    }

    #[test]
    fn headers_only() {
        let m = to_crlf(b"Subject: x\n\tcont\nFrom: a\n\nbody: looks like a header\n");
        assert_eq!(header_section(&m), b"Subject: x\r\n\tcont\r\nFrom: a\r\n");
        assert_eq!(header_section(b"no header here\r\nX: y\r\n"), b"");
        assert_eq!(header_section(b" X: y\r\n"), b"");
    }

    #[test]
    fn notify() {
        use Action::*;
        assert!(should_notify(None, Failed) && should_notify(None, Delayed));
        assert!(!should_notify(None, Delivered));
        assert!(!should_notify(Some("never"), Failed));
        assert!(should_notify(Some("SUCCESS,FAILURE"), Delivered));
        assert!(!should_notify(Some("SUCCESS,FAILURE"), Delayed));
        assert!(should_notify(Some("delay"), Delayed));
        assert!(!should_notify(Some("delay"), Failed));
        assert!(should_notify(Some("bogus"), Failed));
    }
}
