//! Async SMTP client delivering one message to one next hop (RFC 5321).
//!
//! One call to [`send`] opens a connection, optionally upgrades it with
//! STARTTLS (RFC 3207), authenticates with AUTH PLAIN (RFC 4954), runs one mail
//! transaction and quits. Per-recipient results are returned so that the
//! caller can bounce, defer or finish each recipient individually.
//!
//! Timeouts: `connect_timeout` for the TCP connect, `command_timeout` for the
//! greeting, every command reply, the TLS handshake and each data block written,
//! `data_timeout` for the reply to the final "." (RFC 5321 §4.5.3.2 suggests
//! 5 min for commands and 10 min for the final reply).

use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::time::Duration;

use openssl::ssl::{SslConnector, SslMethod, SslVerifyMode, SslVersion};
use openssl::x509::store::X509StoreBuilder;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::timeout;
use tokio_openssl::SslStream;
use tracing::{debug, warn};

/// Upper bound on one server reply (all lines together); larger replies are refused.
pub const MAX_REPLY_BYTES: usize = 64 * 1024;

/// Recipients per pipelined write; bounds what the server must buffer and
/// avoids the write/write deadlock RFC 2920 §3.1 warns about.
const PIPELINE_BATCH: usize = 100;

/// Bytes per data write; each write has its own `command_timeout`
/// (RFC 5321 §4.5.3.2.5: timeout per data block, not for the whole message).
const DATA_CHUNK: usize = 64 * 1024;

/// Longest address accepted in MAIL FROM / RCPT TO (RFC 5321 §4.5.3.1.3: 256 octets per path).
const MAX_ADDRESS: usize = 256;

/// Timeout for the polite QUIT at the end of a session; its outcome never matters.
const QUIT_TIMEOUT: Duration = Duration::from_secs(10);

/// How to use STARTTLS on the connection to the next hop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TlsMode {
    /// Never use TLS (plain SMTP, e.g. for a relay on loopback).
    None,
    /// Use STARTTLS when the server offers it, without verifying the certificate
    /// (RFC 7435 opportunistic security). A refused STARTTLS continues in plain text;
    /// a failed handshake fails the attempt (Temporary).
    Opportunistic,
    /// STARTTLS must be offered and succeed, and the certificate must verify
    /// against `ca_file` (only that file) or the system roots, for `host`.
    Required,
}

/// Where and how to deliver: one SMTP server and the policy for talking to it.
#[derive(Clone)]
pub struct NextHop {
    /// Host name or IP address to connect to; also the name the certificate must match.
    pub host: String,
    /// TCP port (25 for relay, 587 for submission).
    pub port: u16,
    /// STARTTLS policy.
    pub tls: TlsMode,
    /// PEM file of trusted CA certificates for [`TlsMode::Required`]; `None` = system roots.
    pub ca_file: Option<PathBuf>,
    /// AUTH PLAIN credentials (user, password), used only when the server offers
    /// AUTH PLAIN, and only over TLS unless the peer address is loopback.
    pub auth: Option<(String, String)>,
    /// Our name in EHLO/HELO.
    pub helo: String,
    /// Timeout of the TCP connect (all resolved addresses together).
    pub connect_timeout: Duration,
    /// Timeout for the greeting, each command reply, the TLS handshake and each data write.
    pub command_timeout: Duration,
    /// Timeout for the reply to the final "." of the message.
    pub data_timeout: Duration,
}

impl NextHop {
    /// A next hop with defaults: opportunistic TLS, no AUTH, HELO "localhost",
    /// 30 s connect, 5 min per command (RFC 5321 §4.5.3.2), 10 min for the final reply.
    pub fn new(host: impl Into<String>, port: u16) -> Self {
        NextHop {
            host: host.into(),
            port,
            tls: TlsMode::Opportunistic,
            ca_file: None,
            auth: None,
            helo: "localhost".to_string(),
            connect_timeout: Duration::from_secs(30),
            command_timeout: Duration::from_secs(5 * 60),
            data_timeout: Duration::from_secs(10 * 60),
        }
    }
}

/// Debug output never shows the password.
impl fmt::Debug for NextHop {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NextHop")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("tls", &self.tls)
            .field("ca_file", &self.ca_file)
            .field("auth_user", &self.auth.as_ref().map(|(u, _)| u))
            .field("helo", &self.helo)
            .field("connect_timeout", &self.connect_timeout)
            .field("command_timeout", &self.command_timeout)
            .field("data_timeout", &self.data_timeout)
            .finish()
    }
}

/// One envelope recipient with its optional RFC 3461 DSN parameters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recipient {
    /// The address, without angle brackets.
    pub address: String,
    /// NOTIFY value as given by the sender: "NEVER" or a comma list of
    /// SUCCESS, FAILURE, DELAY. Passed on only when the server offers DSN.
    pub notify: Option<String>,
    /// ORCPT in decoded form "addr-type;address" (e.g. "rfc822;bob@example.org";
    /// no ";" means rfc822). The address part is xtext-encoded on the wire.
    pub orcpt: Option<String>,
}

impl Recipient {
    /// A recipient without DSN parameters.
    pub fn new(address: impl Into<String>) -> Self {
        Recipient {
            address: address.into(),
            notify: None,
            orcpt: None,
        }
    }
}

/// What the server said about one recipient (same order as the recipients given).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RcptOutcome {
    /// The server took responsibility for this recipient (2xx to RCPT and to the final ".").
    Accepted,
    /// 4xx (or an unexpected reply): retry later. Holds the server's reply.
    Temporary(String),
    /// 5xx: do not retry, bounce. Holds the server's reply.
    Permanent(String),
}

/// A failure of the whole attempt; no recipient was delivered.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DeliveryError {
    /// No SMTP session: resolving or connecting failed or timed out
    /// (try another host or retry later).
    #[error("connect failed: {0}")]
    Connect(String),
    /// Retry later: I/O errors, timeouts, dropped connections, 4xx at the greeting,
    /// EHLO, MAIL or DATA, TLS or AUTH failures.
    #[error("temporary failure: {0}")]
    Temporary(String),
    /// Do not retry: 5xx at the greeting, MAIL or DATA, message too big,
    /// SMTPUTF8 needed but not offered, invalid envelope.
    #[error("permanent failure: {0}")]
    Permanent(String),
}

/// Delivers `body` (a complete RFC 5322 message) from `mail_from` ("" for the
/// null sender `<>`) to `recipients` through `hop`.
///
/// Returns one [`RcptOutcome`] per recipient, in order, when the session got as
/// far as the recipients (also when none was accepted, in which case no data is
/// sent). `envid` (RFC 3461 ENVID) and `ret` ("FULL" or "HDRS") are passed on,
/// like each recipient's NOTIFY and ORCPT, only when the server offers DSN.
/// The body is sent with CRLF line endings (bare LF or bare CR become CRLF) and
/// dot-stuffed; nothing of it is logged.
pub async fn send(
    hop: &NextHop,
    mail_from: &str,
    recipients: &[Recipient],
    body: &[u8],
    envid: Option<&str>,
    ret: Option<&str>,
) -> Result<Vec<RcptOutcome>, DeliveryError> {
    check_envelope(hop, mail_from, recipients)?;
    let mut s = Session::connect(hop).await?;
    let result = s.run(mail_from, recipients, body, envid, ret).await;
    s.quit().await; // skips the QUIT command if the session is broken
    result
}

/// Whether `hop` takes mail for `rcpt`, without sending any (address
/// verification, as Postfix's `reject_unverified_recipient`): `MAIL
/// FROM:<>`, `RCPT TO`, `RSET`, `QUIT`. The outcome of the RCPT.
pub async fn verify(hop: &NextHop, rcpt: &str) -> Result<RcptOutcome, DeliveryError> {
    check_envelope(hop, "", &[Recipient::new(rcpt)])?;
    let mut s = Session::connect(hop).await?;
    let result = async {
        s.open().await?;
        let t = hop.command_timeout;
        let m = s.command("MAIL FROM:<>", t).await?;
        if m.class() != 2 {
            return Err(m.error("MAIL FROM"));
        }
        let outcome = s.command(&format!("RCPT TO:<{rcpt}>"), t).await?.outcome();
        if s.command("RSET", t).await.is_err() {
            s.broken = true;
        }
        Ok(outcome)
    }
    .await;
    s.quit().await;
    result
}

/// Refuses envelopes that could inject commands or that no server would take.
fn check_envelope(
    hop: &NextHop,
    mail_from: &str,
    recipients: &[Recipient],
) -> Result<(), DeliveryError> {
    if recipients.is_empty() {
        return Err(DeliveryError::Permanent("no recipients".into()));
    }
    if hop.helo.is_empty() || !hop.helo.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(DeliveryError::Permanent(
            "invalid HELO name (empty or not printable ASCII)".into(),
        ));
    }
    check_address(mail_from, true)?;
    for r in recipients {
        check_address(&r.address, false)?;
    }
    Ok(())
}

fn check_address(addr: &str, may_be_empty: bool) -> Result<(), DeliveryError> {
    if addr.is_empty() && !may_be_empty {
        return Err(DeliveryError::Permanent("empty recipient address".into()));
    }
    if addr.len() > MAX_ADDRESS {
        return Err(DeliveryError::Permanent(format!(
            "address longer than {MAX_ADDRESS} octets"
        )));
    }
    // A space is legal only inside a quoted local part ("john doe"@example.org).
    let quoted = addr.starts_with('"');
    if addr
        .chars()
        .any(|c| c.is_control() || c == '<' || c == '>' || (c == ' ' && !quoted))
    {
        return Err(DeliveryError::Permanent(format!(
            "invalid address {:?} (control character, space or angle bracket)",
            addr.escape_debug().to_string()
        )));
    }
    Ok(())
}

/// A parsed server reply.
#[derive(Debug)]
struct Reply {
    code: u16,
    /// Text of each line (after "NNN-" / "NNN ").
    lines: Vec<String>,
}

impl Reply {
    fn class(&self) -> u16 {
        self.code / 100
    }

    /// One line: "550 5.1.1 first line text continued text", control characters replaced.
    fn text(&self) -> String {
        let mut s = self.code.to_string();
        for l in &self.lines {
            if !l.is_empty() {
                s.push(' ');
                s.push_str(l);
            }
        }
        s
    }

    /// The whole-message error for a failed command (4xx/other Temporary, 5xx Permanent).
    fn error(&self, stage: &str) -> DeliveryError {
        match self.class() {
            5 => DeliveryError::Permanent(format!("{stage}: {}", self.text())),
            4 => DeliveryError::Temporary(format!("{stage}: {}", self.text())),
            _ => DeliveryError::Temporary(format!("{stage}: unexpected reply {}", self.text())),
        }
    }

    /// The per-recipient outcome for this reply.
    fn outcome(&self) -> RcptOutcome {
        match self.class() {
            2 => RcptOutcome::Accepted,
            5 => RcptOutcome::Permanent(self.text()),
            4 => RcptOutcome::Temporary(self.text()),
            _ => RcptOutcome::Temporary(format!("unexpected reply {}", self.text())),
        }
    }
}

/// What the server advertised in its EHLO reply.
#[derive(Debug, Default)]
struct Extensions {
    pipelining: bool,
    eightbitmime: bool,
    smtputf8: bool,
    starttls: bool,
    dsn: bool,
    /// `Some(0)` = SIZE without a limit.
    size: Option<u64>,
    auth: Vec<String>,
}

impl Extensions {
    fn parse(reply: &Reply) -> Self {
        let mut e = Extensions::default();
        // The first line is the greeting name; keywords follow.
        for line in reply.lines.iter().skip(1) {
            let mut words = line.split_ascii_whitespace();
            let Some(kw) = words.next() else { continue };
            let kw = kw.to_ascii_uppercase();
            match kw.as_str() {
                "PIPELINING" => e.pipelining = true,
                "8BITMIME" => e.eightbitmime = true,
                "SMTPUTF8" => e.smtputf8 = true,
                "STARTTLS" => e.starttls = true,
                "DSN" => e.dsn = true,
                "SIZE" => e.size = Some(words.next().and_then(|n| n.parse().ok()).unwrap_or(0)),
                "AUTH" => e.auth.extend(words.map(|w| w.to_ascii_uppercase())),
                _ => {
                    // Old-style "AUTH=PLAIN LOGIN".
                    if let Some(first) = kw.strip_prefix("AUTH=") {
                        e.auth.push(first.to_string());
                        e.auth.extend(words.map(|w| w.to_ascii_uppercase()));
                    }
                }
            }
        }
        e
    }
}

/// The connection: plain TCP first, TLS after STARTTLS.
enum Stream {
    Plain(TcpStream),
    Tls(Box<SslStream<TcpStream>>),
    /// Only while switching to TLS, or after a failed switch.
    Gone,
}

impl Stream {
    async fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Stream::Plain(s) => s.read(buf).await,
            Stream::Tls(s) => s.read(buf).await,
            Stream::Gone => Err(io::Error::new(io::ErrorKind::NotConnected, "no connection")),
        }
    }

    async fn write_all(&mut self, data: &[u8]) -> io::Result<()> {
        match self {
            Stream::Plain(s) => {
                s.write_all(data).await?;
                s.flush().await
            }
            Stream::Tls(s) => {
                s.write_all(data).await?;
                s.flush().await
            }
            Stream::Gone => Err(io::Error::new(io::ErrorKind::NotConnected, "no connection")),
        }
    }

    async fn shutdown(&mut self) -> io::Result<()> {
        match self {
            Stream::Plain(s) => s.shutdown().await,
            Stream::Tls(s) => s.shutdown().await,
            Stream::Gone => Ok(()),
        }
    }
}

struct Session<'h> {
    hop: &'h NextHop,
    stream: Stream,
    /// Received bytes not yet consumed as reply lines.
    rbuf: Vec<u8>,
    peer: SocketAddr,
    tls: bool,
    /// Set after an I/O error or timeout: the session cannot be used any more.
    broken: bool,
}

impl<'h> Session<'h> {
    async fn connect(hop: &'h NextHop) -> Result<Session<'h>, DeliveryError> {
        let target = format!("{}:{}", hop.host, hop.port);
        let tcp = match timeout(
            hop.connect_timeout,
            TcpStream::connect((hop.host.as_str(), hop.port)),
        )
        .await
        {
            Err(_) => {
                return Err(DeliveryError::Connect(format!(
                    "{target}: timed out after {:?}",
                    hop.connect_timeout
                )));
            }
            Ok(Err(e)) => return Err(DeliveryError::Connect(format!("{target}: {e}"))),
            Ok(Ok(t)) => t,
        };
        let peer = tcp
            .peer_addr()
            .map_err(|e| DeliveryError::Connect(format!("{target}: {e}")))?;
        // Nagle would delay pipelined command batches behind the previous reply.
        let _ = tcp.set_nodelay(true);
        debug!(%peer, host = %hop.host, "smtp: connected");
        Ok(Session {
            hop,
            stream: Stream::Plain(tcp),
            rbuf: Vec::with_capacity(4096),
            peer,
            tls: false,
            broken: false,
        })
    }

    async fn run(
        &mut self,
        mail_from: &str,
        recipients: &[Recipient],
        body: &[u8],
        envid: Option<&str>,
        ret: Option<&str>,
    ) -> Result<Vec<RcptOutcome>, DeliveryError> {
        let t = self.hop.command_timeout;
        let ext = self.open().await?;
        let data = encode_data(body);
        let eight_bit = body.iter().any(|&b| b >= 0x80);
        let needs_utf8 = !mail_from.is_ascii() || recipients.iter().any(|r| !r.address.is_ascii());
        if needs_utf8 && !ext.smtputf8 {
            return Err(DeliveryError::Permanent(format!(
                "non-ASCII address but {} does not offer SMTPUTF8",
                self.hop.host
            )));
        }
        // Size estimate: the message with CRLF line ends (RFC 1870 §3).
        let size = data.len().saturating_sub(3) as u64;
        if let Some(limit) = ext.size
            && limit > 0
            && size > limit
        {
            return Err(DeliveryError::Permanent(format!(
                "message size {size} exceeds the fixed maximum {limit} of {}",
                self.hop.host
            )));
        }

        // Build MAIL and RCPT commands.
        let mut mail = format!("MAIL FROM:<{mail_from}>");
        if ext.size.is_some() {
            mail.push_str(&format!(" SIZE={size}"));
        }
        if eight_bit && ext.eightbitmime {
            mail.push_str(" BODY=8BITMIME");
        }
        if needs_utf8 {
            mail.push_str(" SMTPUTF8");
        }
        if ext.dsn {
            if let Some(r) = ret {
                let r = r.to_ascii_uppercase();
                if r == "FULL" || r == "HDRS" {
                    mail.push_str(&format!(" RET={r}"));
                } else {
                    warn!(ret = %r.escape_debug(), "smtp: ignoring invalid RET");
                }
            }
            if let Some(id) = envid {
                mail.push_str(&format!(" ENVID={}", xtext(id)));
            }
        }
        let mut cmds = Vec::with_capacity(recipients.len() + 1);
        cmds.push(mail);
        for r in recipients {
            let mut c = format!("RCPT TO:<{}>", r.address);
            if ext.dsn {
                if let Some(n) = &r.notify {
                    match normalize_notify(n) {
                        Some(n) => c.push_str(&format!(" NOTIFY={n}")),
                        None => warn!(notify = %n.escape_debug(), "smtp: ignoring invalid NOTIFY"),
                    }
                }
                if let Some(o) = &r.orcpt {
                    c.push_str(&format!(" ORCPT={}", orcpt_param(o)));
                }
            }
            cmds.push(c);
        }

        // Send them, pipelined in batches when offered, else one by one.
        let batch = if ext.pipelining { PIPELINE_BATCH } else { 1 };
        let mut replies = Vec::with_capacity(cmds.len());
        for chunk in cmds.chunks(batch) {
            let mut out = String::new();
            for c in chunk {
                debug!(cmd = %c, "smtp: >");
                out.push_str(c);
                out.push_str("\r\n");
            }
            self.write(out.as_bytes(), t, "MAIL/RCPT").await?;
            for c in chunk {
                let what = if c.starts_with("MAIL") {
                    "MAIL"
                } else {
                    "RCPT"
                };
                replies.push(self.read_reply(t, what).await?);
            }
            // Stop sending RCPTs once MAIL is refused.
            if replies[0].class() != 2 {
                break;
            }
        }
        let mail_reply = &replies[0];
        if mail_reply.class() != 2 {
            return Err(mail_reply.error("MAIL FROM"));
        }
        let mut outcomes: Vec<RcptOutcome> = replies[1..].iter().map(Reply::outcome).collect();
        if !outcomes.contains(&RcptOutcome::Accepted) {
            debug!("smtp: no recipient accepted");
            // Best effort: the outcomes are known whatever RSET says.
            if self.command("RSET", t).await.is_err() {
                self.broken = true;
            }
            return Ok(outcomes);
        }

        let r = self.command("DATA", t).await?;
        if r.code != 354 {
            return Err(r.error("DATA"));
        }
        for chunk in data.chunks(DATA_CHUNK) {
            self.write(chunk, t, "message data").await?;
        }
        let final_reply = self
            .read_reply(self.hop.data_timeout, "end of data")
            .await?;
        debug!(reply = %final_reply.text(), "smtp: end of data");
        let fin = final_reply.outcome();
        for o in outcomes.iter_mut() {
            if *o == RcptOutcome::Accepted {
                *o = fin.clone();
            }
        }
        Ok(outcomes)
    }

    /// The greeting, EHLO, STARTTLS as the hop says and AUTH when
    /// configured: the server's extensions, ready for a transaction.
    async fn open(&mut self) -> Result<Extensions, DeliveryError> {
        let t = self.hop.command_timeout;
        let greeting = self.read_reply(t, "greeting").await?;
        if greeting.code != 220 {
            return Err(greeting.error("greeting"));
        }
        let mut ext = self.hello().await?;

        match self.hop.tls {
            TlsMode::None => {}
            TlsMode::Opportunistic if !ext.starttls => {
                debug!(host = %self.hop.host, "smtp: STARTTLS not offered, continuing in plain text");
            }
            TlsMode::Required if !ext.starttls => {
                return Err(DeliveryError::Temporary(format!(
                    "TLS required but {} does not offer STARTTLS",
                    self.hop.host
                )));
            }
            mode => {
                let r = self.command("STARTTLS", t).await?;
                if r.code == 220 {
                    self.start_tls(mode).await?;
                    ext = self.hello().await?;
                } else if mode == TlsMode::Required {
                    return Err(DeliveryError::Temporary(format!(
                        "TLS required but STARTTLS refused: {}",
                        r.text()
                    )));
                } else {
                    debug!(reply = %r.text(), "smtp: STARTTLS refused, continuing in plain text");
                }
            }
        }

        if let Some((user, pass)) = &self.hop.auth {
            if ext.auth.iter().any(|m| m == "PLAIN") {
                self.auth_plain(user, pass).await?;
            } else {
                debug!(
                    "smtp: credentials configured but AUTH PLAIN not offered; not authenticating"
                );
            }
        }

        Ok(ext)
    }

    /// EHLO, falling back to HELO when EHLO gets a 5xx.
    async fn hello(&mut self) -> Result<Extensions, DeliveryError> {
        let t = self.hop.command_timeout;
        let r = self.command(&format!("EHLO {}", self.hop.helo), t).await?;
        if r.class() == 2 {
            return Ok(Extensions::parse(&r));
        }
        if r.class() != 5 {
            return Err(r.error("EHLO"));
        }
        debug!(reply = %r.text(), "smtp: EHLO refused, trying HELO");
        let r = self.command(&format!("HELO {}", self.hop.helo), t).await?;
        if r.class() != 2 {
            return Err(r.error("HELO"));
        }
        Ok(Extensions::default())
    }

    async fn start_tls(&mut self, mode: TlsMode) -> Result<(), DeliveryError> {
        // Anything already received after the 220 was sent before the handshake
        // and must not be read as if it came over TLS (STARTTLS command injection).
        if !self.rbuf.is_empty() {
            self.broken = true;
            return Err(DeliveryError::Temporary(
                "server sent data after its STARTTLS reply".into(),
            ));
        }
        // After the 220 the session is TLS or nothing (not even a plain QUIT),
        // until the handshake completes.
        self.broken = true;
        let ssl = tls_config(self.hop, mode)
            .map_err(|e| DeliveryError::Temporary(format!("TLS setup: {e}")))?;
        let Stream::Plain(tcp) = std::mem::replace(&mut self.stream, Stream::Gone) else {
            return Err(DeliveryError::Temporary(
                "STARTTLS on a non-plain stream".into(),
            ));
        };
        let mut tls = SslStream::new(ssl, tcp)
            .map_err(|e| DeliveryError::Temporary(format!("TLS setup: {e}")))?;
        match timeout(self.hop.command_timeout, Pin::new(&mut tls).connect()).await {
            Err(_) => {
                return Err(DeliveryError::Temporary("TLS handshake timed out".into()));
            }
            Ok(Err(e)) => {
                let verify = tls.ssl().verify_result();
                let detail = if verify == openssl::x509::X509VerifyResult::OK {
                    e.to_string()
                } else {
                    format!("{e}: certificate verify failed: {verify}")
                };
                return Err(DeliveryError::Temporary(format!(
                    "TLS handshake with {}: {detail}",
                    self.hop.host
                )));
            }
            Ok(Ok(())) => {}
        }
        debug!(
            version = tls.ssl().version_str(),
            cipher = tls.ssl().current_cipher().map(|c| c.name()).unwrap_or("?"),
            "smtp: TLS established"
        );
        self.stream = Stream::Tls(Box::new(tls));
        self.tls = true;
        self.broken = false;
        Ok(())
    }

    async fn auth_plain(&mut self, user: &str, pass: &str) -> Result<(), DeliveryError> {
        if !self.tls && !self.peer.ip().to_canonical().is_loopback() {
            return Err(DeliveryError::Temporary(format!(
                "refusing to send credentials to {} without TLS",
                self.hop.host
            )));
        }
        let mut token = Vec::with_capacity(user.len() + pass.len() + 2);
        token.push(0);
        token.extend_from_slice(user.as_bytes());
        token.push(0);
        token.extend_from_slice(pass.as_bytes());
        let line = format!("AUTH PLAIN {}\r\n", openssl::base64::encode_block(&token));
        debug!("smtp: > AUTH PLAIN <credentials not logged>");
        let t = self.hop.command_timeout;
        self.write(line.as_bytes(), t, "AUTH").await?;
        let r = self.read_reply(t, "AUTH").await?;
        if r.code != 235 {
            // Like Postfix (smtp_sasl_auth_soft_bounce): wrong credentials are a
            // configuration error to fix, not a reason to bounce the mail.
            return Err(DeliveryError::Temporary(format!(
                "AUTH PLAIN failed: {}",
                r.text()
            )));
        }
        Ok(())
    }

    /// Sends one command line (no CRLF) and reads its reply.
    async fn command(&mut self, cmd: &str, t: Duration) -> Result<Reply, DeliveryError> {
        debug!(cmd = %cmd, "smtp: >");
        let line = format!("{cmd}\r\n");
        let what = cmd.split(' ').next().unwrap_or(cmd);
        self.write(line.as_bytes(), t, what).await?;
        self.read_reply(t, what).await
    }

    async fn write(&mut self, data: &[u8], t: Duration, what: &str) -> Result<(), DeliveryError> {
        match timeout(t, self.stream.write_all(data)).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => {
                self.broken = true;
                Err(DeliveryError::Temporary(format!("sending {what}: {e}")))
            }
            Err(_) => {
                self.broken = true;
                Err(DeliveryError::Temporary(format!(
                    "sending {what}: timed out after {t:?}"
                )))
            }
        }
    }

    async fn read_reply(&mut self, t: Duration, what: &str) -> Result<Reply, DeliveryError> {
        let r = match timeout(t, self.read_reply_inner()).await {
            Ok(Ok(r)) => Ok(r),
            Ok(Err(e)) => Err(format!("reading reply to {what}: {e}")),
            Err(_) => Err(format!(
                "waiting for reply to {what}: timed out after {t:?}"
            )),
        };
        match r {
            // 421: the server is closing the session, whatever the command was
            // (RFC 5321 §3.8); later pipelined replies will not come.
            Ok(r) if r.code == 421 => {
                debug!(code = r.code, "smtp: < {}", r.text());
                self.broken = true;
                Err(DeliveryError::Temporary(format!("{what}: {}", r.text())))
            }
            Ok(r) => {
                debug!(code = r.code, "smtp: < {}", r.text());
                Ok(r)
            }
            Err(e) => {
                self.broken = true;
                Err(DeliveryError::Temporary(e))
            }
        }
    }

    async fn read_reply_inner(&mut self) -> io::Result<Reply> {
        let mut total = 0usize;
        let mut code = None;
        let mut lines = Vec::new();
        loop {
            let raw = self.read_line(&mut total).await?;
            let (c, last, text) = parse_reply_line(&raw)?;
            match code {
                None => code = Some(c),
                Some(prev) if prev != c => {
                    return Err(protocol_error(format!(
                        "reply code changed from {prev} to {c} within one reply"
                    )));
                }
                Some(_) => {}
            }
            lines.push(text);
            if last {
                return Ok(Reply { code: c, lines });
            }
        }
    }

    /// One line without its line end; `total` counts bytes of the current reply.
    async fn read_line(&mut self, total: &mut usize) -> io::Result<Vec<u8>> {
        let mut scanned = 0;
        loop {
            if let Some(pos) = self.rbuf[scanned..].iter().position(|&b| b == b'\n') {
                let end = scanned + pos;
                *total += end + 1;
                if *total > MAX_REPLY_BYTES {
                    return Err(protocol_error(format!(
                        "reply longer than {} KiB",
                        MAX_REPLY_BYTES / 1024
                    )));
                }
                let mut line: Vec<u8> = self.rbuf.drain(..=end).collect();
                line.pop();
                if line.last() == Some(&b'\r') {
                    line.pop();
                }
                return Ok(line);
            }
            scanned = self.rbuf.len();
            if *total + self.rbuf.len() > MAX_REPLY_BYTES {
                return Err(protocol_error(format!(
                    "reply longer than {} KiB",
                    MAX_REPLY_BYTES / 1024
                )));
            }
            let mut tmp = [0u8; 4096];
            let n = self.stream.read(&mut tmp).await?;
            if n == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "connection closed by server",
                ));
            }
            self.rbuf.extend_from_slice(&tmp[..n]);
        }
    }

    /// Polite end: QUIT, wait briefly for 221, close. Errors are irrelevant here.
    async fn quit(&mut self) {
        let t = self.hop.command_timeout.min(QUIT_TIMEOUT);
        if !self.broken {
            let _ = self.command("QUIT", t).await;
        }
        let _ = timeout(t, self.stream.shutdown()).await;
    }
}

fn protocol_error(msg: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg)
}

/// Splits "250-text" / "250 text" / "250" into (code, is_last, text).
fn parse_reply_line(raw: &[u8]) -> io::Result<(u16, bool, String)> {
    let digits = raw.get(..3).unwrap_or(raw);
    if digits.len() != 3
        || !digits.iter().all(u8::is_ascii_digit)
        || !(b'2'..=b'5').contains(&digits[0])
    {
        return Err(protocol_error(format!(
            "malformed reply line {:?}",
            printable(&raw[..raw.len().min(80)])
        )));
    }
    let code = digits
        .iter()
        .fold(0u16, |acc, d| acc * 10 + u16::from(d - b'0'));
    let (last, text) = match raw.get(3) {
        None => (true, &raw[3..3]),
        Some(b' ') => (true, &raw[4..]),
        Some(b'-') => (false, &raw[4..]),
        Some(_) => {
            return Err(protocol_error(format!(
                "malformed reply line {:?}",
                printable(&raw[..raw.len().min(80)])
            )));
        }
    };
    Ok((code, last, printable(text)))
}

/// Server text made safe to log and to put in DSNs: control characters become '?'.
fn printable(b: &[u8]) -> String {
    String::from_utf8_lossy(b)
        .chars()
        .map(|c| if c.is_control() { '?' } else { c })
        .collect::<String>()
        .trim_end()
        .to_string()
}

fn tls_config(
    hop: &NextHop,
    mode: TlsMode,
) -> Result<openssl::ssl::Ssl, openssl::error::ErrorStack> {
    let mut b = SslConnector::builder(SslMethod::tls_client())?;
    b.set_min_proto_version(Some(SslVersion::TLS1_2))?;
    let verify = mode == TlsMode::Required;
    if verify {
        b.set_verify(SslVerifyMode::PEER);
        match &hop.ca_file {
            Some(ca) => {
                // Trust exactly this file, not the defaults SslConnector loaded.
                b.set_cert_store(X509StoreBuilder::new()?.build());
                b.set_ca_file(ca)?;
            }
            None => load_system_roots(&mut b),
        }
    } else {
        b.set_verify(SslVerifyMode::NONE);
    }
    let mut cfg = b.build().configure()?;
    cfg.set_verify_hostname(verify);
    // SNI is set for names, not for IP addresses; the name (or IP) is verified when `verify`.
    cfg.into_ssl(&hop.host)
}

/// The vendored OpenSSL looks for roots under its own build prefix; point it
/// at the distribution's bundle unless SSL_CERT_FILE / SSL_CERT_DIR say otherwise.
pub(crate) fn load_system_roots(b: &mut openssl::ssl::SslConnectorBuilder) {
    if std::env::var_os("SSL_CERT_FILE").is_some() || std::env::var_os("SSL_CERT_DIR").is_some() {
        return; // honoured by set_default_verify_paths, already done by SslConnector
    }
    const BUNDLES: [&str; 5] = [
        "/etc/ssl/certs/ca-certificates.crt",
        "/etc/pki/tls/certs/ca-bundle.crt",
        "/etc/ssl/ca-bundle.pem",
        "/etc/pki/ca-trust/extracted/pem/tls-ca-bundle.pem",
        "/etc/ssl/cert.pem",
    ];
    if let Some(f) = BUNDLES.iter().map(Path::new).find(|p| p.is_file()) {
        if let Err(e) = b.set_ca_file(f) {
            warn!(file = %f.display(), error = %e, "smtp: cannot load system CA bundle");
        }
    } else {
        warn!("smtp: no system CA bundle found; TLS verification will fail");
    }
}

/// The message as sent after DATA: CRLF line ends (bare LF and bare CR become
/// CRLF, RFC 5321 §2.3.8), dot-stuffed (§4.5.2), a CRLF added if the last line
/// has none, then ".\r\n".
fn encode_data(body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(body.len() + body.len() / 32 + 8);
    let mut line_start = true;
    let mut i = 0;
    while i < body.len() {
        match body[i] {
            b'\r' => {
                out.extend_from_slice(b"\r\n");
                if body.get(i + 1) == Some(&b'\n') {
                    i += 1;
                }
                line_start = true;
            }
            b'\n' => {
                out.extend_from_slice(b"\r\n");
                line_start = true;
            }
            b => {
                if line_start && b == b'.' {
                    out.push(b'.');
                }
                out.push(b);
                line_start = false;
            }
        }
        i += 1;
    }
    if !line_start {
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b".\r\n");
    out
}

/// RFC 3461 §4 xtext: printable ASCII except '+' and '=' as is, all else "+XX".
fn xtext(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if (b'!'..=b'~').contains(&b) && b != b'+' && b != b'=' {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("+{b:02X}"));
        }
    }
    out
}

/// "rfc822;bob@x" -> "rfc822;" + xtext(address); a missing type means rfc822.
fn orcpt_param(o: &str) -> String {
    match o.split_once(';') {
        Some((ty, addr))
            if !ty.is_empty() && ty.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-') =>
        {
            format!("{ty};{}", xtext(addr.trim()))
        }
        _ => format!("rfc822;{}", xtext(o.trim())),
    }
}

/// Validates a NOTIFY value; returns it upper-cased, or `None` if invalid.
fn normalize_notify(n: &str) -> Option<String> {
    let words: Vec<String> = n
        .split(',')
        .map(|w| w.trim().to_ascii_uppercase())
        .collect();
    let ok = if words.len() == 1 && words[0] == "NEVER" {
        true
    } else {
        !words.is_empty()
            && words
                .iter()
                .all(|w| matches!(w.as_str(), "SUCCESS" | "FAILURE" | "DELAY"))
    };
    ok.then(|| words.join(","))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn data_encoding() {
        assert_eq!(encode_data(b""), b".\r\n");
        assert_eq!(encode_data(b"a\r\n"), b"a\r\n.\r\n");
        assert_eq!(encode_data(b"a"), b"a\r\n.\r\n");
        assert_eq!(encode_data(b"a\nb\n"), b"a\r\nb\r\n.\r\n");
        assert_eq!(encode_data(b".\n..x\r\n.y"), b"..\r\n...x\r\n..y\r\n.\r\n");
        // Bare CR is a line end too, so "<CR>.<CR>" cannot end the data early.
        assert_eq!(encode_data(b"a\r.\rb"), b"a\r\n..\r\nb\r\n.\r\n");
        assert_eq!(encode_data(b"x.y\r\n"), b"x.y\r\n.\r\n");
    }

    #[test]
    fn reply_lines() {
        assert_eq!(
            parse_reply_line(b"250").unwrap(),
            (250, true, String::new())
        );
        assert_eq!(
            parse_reply_line(b"250 ").unwrap(),
            (250, true, String::new())
        );
        assert_eq!(
            parse_reply_line(b"250-PIPELINING").unwrap(),
            (250, false, "PIPELINING".into())
        );
        assert_eq!(
            parse_reply_line(b"550 no\x07pe").unwrap(),
            (550, true, "no?pe".into())
        );
        assert!(parse_reply_line(b"25").is_err());
        assert!(parse_reply_line(b"2500").is_err());
        assert!(parse_reply_line(b"abc def").is_err());
        assert!(parse_reply_line(b"").is_err());
        assert!(parse_reply_line(b"650 x").is_err());
    }

    #[test]
    fn params() {
        assert_eq!(xtext("a+b=c d"), "a+2Bb+3Dc+20d");
        assert_eq!(orcpt_param("rfc822;bob+x@ex"), "rfc822;bob+2Bx@ex");
        assert_eq!(orcpt_param("bob@ex"), "rfc822;bob@ex");
        assert_eq!(
            normalize_notify("failure, delay").as_deref(),
            Some("FAILURE,DELAY")
        );
        assert_eq!(normalize_notify("never").as_deref(), Some("NEVER"));
        assert_eq!(normalize_notify("NEVER,SUCCESS"), None);
        assert_eq!(normalize_notify("x"), None);
        assert_eq!(normalize_notify("FAILURE\r\nRSET"), None);
    }

    #[test]
    fn extensions() {
        let r = Reply {
            code: 250,
            lines: vec![
                "mx.example".into(),
                "PIPELINING".into(),
                "SIZE 1000".into(),
                "auth=LOGIN PLAIN".into(),
                "STARTTLS".into(),
                "".into(),
            ],
        };
        let e = Extensions::parse(&r);
        assert!(e.pipelining && e.starttls && !e.dsn && !e.smtputf8);
        assert_eq!(e.size, Some(1000));
        assert_eq!(e.auth, vec!["LOGIN".to_string(), "PLAIN".to_string()]);
    }

    #[test]
    fn envelope_checks() {
        let hop = NextHop::new("127.0.0.1", 25);
        let ok = [Recipient::new("b@x")];
        assert!(check_envelope(&hop, "", &ok).is_ok());
        assert!(check_envelope(&hop, "a@x>\r\nRSET", &ok).is_err());
        assert!(check_envelope(&hop, "a@x", &[Recipient::new("b@x>")]).is_err());
        assert!(check_envelope(&hop, "a@x", &[]).is_err());
        assert!(check_envelope(&hop, "a@x", &[Recipient::new("")]).is_err());
        let mut bad = hop.clone();
        bad.helo = "x\r\nMAIL".into();
        assert!(check_envelope(&bad, "a@x", &ok).is_err());
        let mut with_pw = hop;
        with_pw.auth = Some(("u".into(), "sekrit".into()));
        assert!(!format!("{with_pw:?}").contains("sekrit"));
    }
}
