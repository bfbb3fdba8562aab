//! The IMAP connection: TCP, implicit TLS or STARTTLS (verified against the
//! configured CA, or the system's roots), login, capabilities, and the
//! commands `async-imap` does not give us in the form we need: APPEND that
//! returns the `APPENDUID` (RFC 4315 §3) and pipelines with `LITERAL+`
//! (RFC 7888), and MOVE with its fallback (RFC 6851 §3.3).

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use async_imap::imap_proto::rfc4315::UidSetMember;
use async_imap::imap_proto::{RequestId, Response, ResponseCode, Status};
use futures_util::StreamExt;
use openssl::ssl::{SslConnector, SslMethod, SslVerifyMode, SslVersion};
use openssl::x509::store::X509StoreBuilder;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;
use tokio::time::timeout;
use tokio_openssl::SslStream;

use super::ImapError;
use crate::config::{ImapTls, MailboxConfig};

/// How long connecting, the TLS handshake and login may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(20);
/// How long one command may wait for its answer (a large FETCH included).
pub(crate) const COMMAND_TIMEOUT: Duration = Duration::from_secs(300);

/// The byte stream under the IMAP session.
#[derive(Debug)]
pub enum Stream {
    /// Plain TCP (`tls = "none"`, or before STARTTLS).
    Plain(TcpStream),
    /// TLS.
    Tls(Box<SslStream<TcpStream>>),
}

impl AsyncRead for Stream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Stream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_flush(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}

/// A logged-in IMAP session.
pub type Session = async_imap::Session<Stream>;

/// What the server can do, as far as we care.
#[derive(Debug, Clone, Copy, Default)]
pub struct Caps {
    /// UIDPLUS (RFC 4315): APPENDUID, UID EXPUNGE.
    pub uidplus: bool,
    /// MOVE (RFC 6851).
    pub moves: bool,
    /// IDLE (RFC 2177).
    pub idle: bool,
    /// LITERAL+ (RFC 7888): literals without waiting for a continuation.
    pub literal_plus: bool,
    /// MULTIAPPEND (RFC 3502): many messages in one APPEND, one transaction.
    pub multiappend: bool,
}

/// A connection: the session and the server's capabilities.
#[derive(Debug)]
pub struct Conn {
    /// The session.
    pub session: Session,
    /// Capabilities after login.
    pub caps: Caps,
}

/// Connects, protects and logs in as the mailbox's configuration says.
pub async fn connect(mb: &MailboxConfig, password: &str) -> Result<Conn, ImapError> {
    let what = format!("{}:{}", mb.host, mb.port);
    let tcp = match timeout(
        CONNECT_TIMEOUT,
        TcpStream::connect((mb.host.as_str(), mb.port)),
    )
    .await
    {
        Err(_) => return Err(ImapError::Connect(format!("{what}: timed out"))),
        Ok(Err(e)) => return Err(ImapError::Connect(format!("{what}: {e}"))),
        Ok(Ok(s)) => s,
    };
    let _ = tcp.set_nodelay(true);
    let stream = match mb.tls {
        ImapTls::Implicit => Stream::Tls(Box::new(tls(mb, tcp).await?)),
        ImapTls::None | ImapTls::StartTls => Stream::Plain(tcp),
    };
    let mut client = async_imap::Client::new(stream);
    let greeting = timeout(CONNECT_TIMEOUT, client.read_response())
        .await
        .map_err(|_| ImapError::Connect(format!("{what}: no greeting")))?
        .map_err(|e| ImapError::Connect(format!("{what}: {e}")))?;
    match greeting.as_ref().map(|g| g.parsed()) {
        Some(Response::Data {
            status: Status::Ok, ..
        }) => {}
        Some(Response::Data {
            status: Status::PreAuth,
            ..
        }) => {}
        other => {
            return Err(ImapError::Connect(format!(
                "{what}: unexpected greeting {other:?}"
            )));
        }
    }
    if mb.tls == ImapTls::StartTls {
        timeout(
            CONNECT_TIMEOUT,
            client.run_command_and_check_ok("STARTTLS", None),
        )
        .await
        .map_err(|_| ImapError::Connect(format!("{what}: STARTTLS timed out")))?
        .map_err(|e| ImapError::Tls(format!("{what}: STARTTLS refused: {e}")))?;
        // Nothing the server sent before the handshake may be read as if it
        // came over TLS (RFC 3501 §6.2.1, RFC 7817): async-imap reads only
        // what it needs, so its buffer holds nothing of the next line.
        let Stream::Plain(tcp) = client.into_inner() else {
            return Err(ImapError::Tls("STARTTLS on a TLS stream".into()));
        };
        client = async_imap::Client::new(Stream::Tls(Box::new(tls(mb, tcp).await?)));
    }
    let session = match timeout(CONNECT_TIMEOUT, client.login(&mb.user, password)).await {
        Err(_) => return Err(ImapError::Connect(format!("{what}: login timed out"))),
        Ok(Err((e, _))) => {
            return Err(ImapError::Login(format!(
                "{what}: login as {} refused: {}",
                mb.user,
                short(&e.to_string())
            )));
        }
        Ok(Ok(s)) => s,
    };
    let mut session = session;
    let caps = timeout(CONNECT_TIMEOUT, session.capabilities())
        .await
        .map_err(|_| ImapError::Lost(format!("{what}: CAPABILITY timed out")))?
        .map_err(ImapError::from)?;
    let caps = Caps {
        uidplus: caps.has_str("UIDPLUS"),
        moves: caps.has_str("MOVE"),
        idle: caps.has_str("IDLE"),
        literal_plus: caps.has_str("LITERAL+"),
        multiappend: caps.has_str("MULTIAPPEND"),
    };
    Ok(Conn { session, caps })
}

async fn tls(mb: &MailboxConfig, tcp: TcpStream) -> Result<SslStream<TcpStream>, ImapError> {
    let what = format!("{}:{}", mb.host, mb.port);
    let setup = |e: openssl::error::ErrorStack| ImapError::Tls(format!("TLS setup: {e}"));
    let mut b = SslConnector::builder(SslMethod::tls_client()).map_err(setup)?;
    b.set_min_proto_version(Some(SslVersion::TLS1_2))
        .map_err(setup)?;
    b.set_verify(SslVerifyMode::PEER);
    match &mb.ca {
        Some(ca) => {
            // Trust exactly this file, not the defaults SslConnector loaded.
            b.set_cert_store(X509StoreBuilder::new().map_err(setup)?.build());
            b.set_ca_file(ca).map_err(|e| {
                ImapError::Config(format!("[mailbox.{}] ca {}: {e}", mb.name, ca.display()))
            })?;
        }
        None => crate::deliver::smtp_client::load_system_roots(&mut b),
    }
    let ssl = b
        .build()
        .configure()
        .and_then(|c| c.into_ssl(&mb.host))
        .map_err(setup)?;
    let mut s = SslStream::new(ssl, tcp).map_err(setup)?;
    match timeout(CONNECT_TIMEOUT, Pin::new(&mut s).connect()).await {
        Err(_) => Err(ImapError::Connect(format!(
            "{what}: TLS handshake timed out"
        ))),
        Ok(Err(e)) => {
            let verify = s.ssl().verify_result();
            if verify == openssl::x509::X509VerifyResult::OK {
                Err(ImapError::Tls(format!("{what}: TLS handshake failed: {e}")))
            } else {
                Err(ImapError::Tls(format!(
                    "{what}: the server's certificate is not trusted: {verify} (check [mailbox.{}] ca)",
                    mb.name
                )))
            }
        }
        Ok(Ok(())) => Ok(s),
    }
}

/// Server text, shortened and without control characters, for messages.
pub(crate) fn short(s: &str) -> String {
    let s: String = s
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .take(300)
        .collect();
    s.trim().to_string()
}

/// An IMAP quoted string (RFC 3501 §4.3): `"` and `\` escaped. Refuses
/// CR, LF and NUL, which a quoted string cannot hold.
pub fn quote(s: &str) -> Result<String, ImapError> {
    if s.chars().any(|c| c == '\r' || c == '\n' || c == '\0') {
        return Err(ImapError::Config(format!("{s:?} cannot be sent to IMAP")));
    }
    Ok(format!(
        "\"{}\"",
        s.replace('\\', "\\\\").replace('"', "\\\"")
    ))
}

/// One message to append.
#[derive(Debug)]
pub struct Append<'a> {
    /// The message.
    pub body: &'a [u8],
    /// `(\Seen $Label)`, or empty.
    pub flags: String,
    /// `"05-Mar-2021 14:15:16 +0100"`, or empty.
    pub internal_date: String,
}

/// What APPEND said for one message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Appended {
    /// Stored, with its UID when the server has UIDPLUS.
    Ok(Option<u32>),
    /// Refused (NO/BAD), with the server's text.
    Refused(String),
}

/// Appends `msgs` to `mailbox` (an encoded name): in one MULTIAPPEND
/// (RFC 3502: one transaction on the server, all or none) where the server
/// has it and LITERAL+, else pipelined with LITERAL+, else one at a time.
/// One answer per message, in order; an `Err` means the connection is gone
/// (what was appended before it may or may not be there).
pub async fn append_all(
    conn: &mut Conn,
    mailbox: &str,
    msgs: &[Append<'_>],
) -> Result<Vec<Appended>, ImapError> {
    if msgs.len() > 1 && conn.caps.multiappend && conn.caps.literal_plus {
        match multi_append(conn, mailbox, msgs).await? {
            Some(uids) if uids.len() == msgs.len() => {
                return Ok(uids.into_iter().map(|u| Appended::Ok(Some(u))).collect());
            }
            // Stored, without (usable) APPENDUIDs: confirmed by search later.
            Some(_) => return Ok(msgs.iter().map(|_| Appended::Ok(None)).collect()),
            // Refused as a whole: one by one, to learn which message the
            // server will not take.
            None => {}
        }
    }
    append_each(conn, mailbox, msgs).await
}

/// One MULTIAPPEND of `msgs` with LITERAL+. `Some(uids)` when stored (the
/// APPENDUID set expanded, empty without UIDPLUS), `None` when refused.
async fn multi_append(
    conn: &mut Conn,
    mailbox: &str,
    msgs: &[Append<'_>],
) -> Result<Option<Vec<u32>>, ImapError> {
    let mbox = quote(mailbox)?;
    let part = |m: &Append<'_>| {
        let mut p = String::new();
        for x in [&m.flags, &m.internal_date] {
            if !x.is_empty() {
                p.push(' ');
                p.push_str(x);
            }
        }
        p.push_str(&format!(" {{{}+}}", m.body.len()));
        p
    };
    let tag = conn
        .session
        .run_command(format!("APPEND {mbox}{}", part(&msgs[0])))
        .await?;
    let s = conn.session.get_mut();
    s.write_all(msgs[0].body).await?;
    for m in &msgs[1..] {
        s.write_all(part(m).as_bytes()).await?;
        s.write_all(b"\r\n").await?;
        s.write_all(m.body).await?;
    }
    s.write_all(b"\r\n").await?;
    s.flush().await?;
    loop {
        if let Line::Done(t, a, uids) = read(conn).await?
            && t == tag
        {
            return Ok(match a {
                Appended::Ok(_) => Some(uids),
                Appended::Refused(why) => {
                    tracing::debug!(reason = %why, "imap: MULTIAPPEND refused; appending one by one");
                    None
                }
            });
        }
    }
}

async fn append_each(
    conn: &mut Conn,
    mailbox: &str,
    msgs: &[Append<'_>],
) -> Result<Vec<Appended>, ImapError> {
    let mbox = quote(mailbox)?;
    let mut tags = Vec::with_capacity(msgs.len());
    let mut out = Vec::with_capacity(msgs.len());
    for m in msgs {
        let mut cmd = format!("APPEND {mbox}");
        if !m.flags.is_empty() {
            cmd.push(' ');
            cmd.push_str(&m.flags);
        }
        if !m.internal_date.is_empty() {
            cmd.push(' ');
            cmd.push_str(&m.internal_date);
        }
        if conn.caps.literal_plus {
            cmd.push_str(&format!(" {{{}+}}", m.body.len()));
            let tag = conn.session.run_command(&cmd).await?;
            let s = conn.session.get_mut();
            s.write_all(m.body).await?;
            s.write_all(b"\r\n").await?;
            tags.push(tag);
        } else {
            cmd.push_str(&format!(" {{{}}}", m.body.len()));
            let tag = conn.session.run_command(&cmd).await?;
            // Wait for "+ ..." (or a refusal of the command itself).
            let mut refused = None;
            loop {
                match read(conn).await? {
                    Line::Continue => break,
                    Line::Done(t, a, _) if t == tag => {
                        refused = Some(a);
                        break;
                    }
                    _ => {}
                }
            }
            if let Some(r) = refused {
                out.push(r);
                continue;
            }
            let s = conn.session.get_mut();
            s.write_all(m.body).await?;
            s.write_all(b"\r\n").await?;
            s.flush().await?;
            out.push(wait_done(conn, &tag).await?);
        }
    }
    if conn.caps.literal_plus {
        conn.session.get_mut().flush().await?;
        for tag in &tags {
            out.push(wait_done(conn, tag).await?);
        }
    }
    Ok(out)
}

/// A server response, as far as APPEND cares.
enum Line {
    /// `+ ...`: send the literal.
    Continue,
    /// A tagged answer, with every UID of its APPENDUID.
    Done(RequestId, Appended, Vec<u32>),
    /// Anything else (untagged data).
    Other,
}

async fn read(conn: &mut Conn) -> Result<Line, ImapError> {
    let r = match timeout(COMMAND_TIMEOUT, conn.session.read_response()).await {
        Err(_) => return Err(ImapError::Lost("the server did not answer in time".into())),
        Ok(Err(e)) => return Err(ImapError::Lost(e.to_string())),
        Ok(Ok(None)) => return Err(ImapError::Lost("the server closed the connection".into())),
        Ok(Ok(Some(r))) => r,
    };
    Ok(match r.parsed() {
        Response::Continue { .. } => Line::Continue,
        Response::Data {
            status: Status::Bye,
            outcome,
        } => {
            return Err(ImapError::Lost(format!(
                "the server said BYE: {}",
                short(outcome.information.as_deref().unwrap_or(""))
            )));
        }
        Response::Done {
            tag,
            status,
            outcome,
        } => {
            let mut uids = Vec::new();
            if let Some(ResponseCode::AppendUid(_, set)) = &outcome.code {
                for m in set {
                    match m {
                        UidSetMember::Uid(u) => uids.push(*u),
                        // A server's range is at most one message per UID
                        // appended: cap what a broken one could make us hold.
                        UidSetMember::UidRange(r) => uids.extend(r.clone().take(100_000)),
                    }
                }
            }
            let a = match status {
                Status::Ok => Appended::Ok(uids.first().copied()),
                _ => Appended::Refused(short(outcome.information.as_deref().unwrap_or(""))),
            };
            Line::Done(tag.clone(), a, uids)
        }
        _ => Line::Other,
    })
}

async fn wait_done(conn: &mut Conn, tag: &RequestId) -> Result<Appended, ImapError> {
    loop {
        if let Line::Done(t, a, _) = read(conn).await?
            && t == *tag
        {
            return Ok(a);
        }
    }
}

/// Moves the messages `uids` (a UID set) to `to` (an encoded name): MOVE
/// where the server has it, else COPY, `\Deleted` and UID EXPUNGE of just
/// those messages (RFC 4315 §2.1; without UIDPLUS a plain EXPUNGE would
/// remove other messages marked deleted, so it is refused).
pub async fn move_uids(conn: &mut Conn, uids: &str, to: &str) -> Result<(), ImapError> {
    let to = quote(to)?;
    if conn.caps.moves {
        return timed(
            conn.session
                .run_command_and_check_ok(format!("UID MOVE {uids} {to}")),
        )
        .await;
    }
    if !conn.caps.uidplus {
        return Err(ImapError::Protocol(
            "the server has neither MOVE nor UIDPLUS: originals cannot be moved safely".into(),
        ));
    }
    timed(
        conn.session
            .run_command_and_check_ok(format!("UID COPY {uids} {to}")),
    )
    .await?;
    timed(
        conn.session
            .run_command_and_check_ok(format!("UID STORE {uids} +FLAGS.SILENT (\\Deleted)")),
    )
    .await?;
    timed(
        conn.session
            .run_command_and_check_ok(format!("UID EXPUNGE {uids}")),
    )
    .await
}

/// Runs one command future with the command timeout.
pub(crate) async fn timed<T>(
    f: impl std::future::Future<Output = async_imap::error::Result<T>>,
) -> Result<T, ImapError> {
    match timeout(COMMAND_TIMEOUT, f).await {
        Err(_) => Err(ImapError::Lost("the server did not answer in time".into())),
        Ok(r) => r.map_err(ImapError::from),
    }
}

/// Creates `name` (an encoded name) unless it exists.
pub async fn ensure_folder(conn: &mut Conn, name: &str) -> Result<(), ImapError> {
    let q = quote(name)?;
    let found = {
        let list = timed(conn.session.list(Some(""), Some(name))).await?;
        let names: Vec<_> = list.collect().await;
        names
            .into_iter()
            .filter_map(|n| n.ok())
            .any(|n| n.name() == name)
    };
    if found {
        return Ok(());
    }
    match timed(conn.session.run_command_and_check_ok(format!("CREATE {q}"))).await {
        Ok(()) => Ok(()),
        // Another process created it at the same moment.
        Err(ImapError::Protocol(e)) if e.contains("ALREADYEXISTS") || e.contains("exists") => {
            Ok(())
        }
        Err(e) => Err(e),
    }
}
