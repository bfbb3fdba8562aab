//! The SMTP server session: a [`Receiver`](super::Receiver) driven over a real stream.
//!
//! [`run`] greets, reads, answers and hands complete messages to a
//! [`Handler`]. It is generic over its stream (TCP in production,
//! `tokio::io::duplex` in tests); after `STARTTLS` the same loop runs again
//! over a `tokio_openssl::SslStream` of that stream, so nothing else needs
//! to know which one is in use.
//!
//! Rules the loop keeps:
//!
//! - **Bounded reads.** Bytes go straight into the receiver, which bounds
//!   what it keeps; nothing is read while it is paused (the pause is always
//!   resolved before the next read).
//! - **Pipelining** (RFC 2920): replies are collected while buffered input
//!   lasts and written in one go, always before blocking on a read, so a
//!   client waiting for a reply is never left waiting for more input.
//! - **Timeouts** (RFC 5321 §4.5.3.2): [`SessionConfig::idle_timeout`]
//!   while waiting for a command, [`SessionConfig::data_timeout`] inside a
//!   message (`DATA`, or `BDAT` chunks until `LAST`); on expiry
//!   `421 4.4.2` and close. Writes use the idle timeout too.
//! - **Minimum transfer rate** (as Postfix's `smtpd_min_data_rate`): a
//!   message (`DATA`, or `BDAT` chunks until `LAST`) must be complete by
//!   its start + [`SessionConfig::data_grace`] + octets received so far /
//!   [`SessionConfig::min_data_rate`]; a client trickling it slower gets
//!   `421 4.4.2` and is closed, and nothing of it is accepted. The per-read
//!   data timeout alone let one octet a second hold a session for ever.
//! - **Graceful shutdown** (see [`run_with_shutdown`]): a session waiting
//!   for a command gets `421 4.3.2` and closes; one inside a message
//!   finishes and accepts it first.
//! - **Errors** (syntax errors and refused commands) are counted; at
//!   [`SessionConfig::max_errors`] the session replies `421 4.7.0` and
//!   closes. `452` for too many recipients, message-level outcomes
//!   (oversized message, [`Handler::accept`] failures) and `BDAT` chunks
//!   discarded after a failed one are not counted. An accepted message
//!   resets the count.

mod auth;
mod commands;
mod received;

use std::fmt;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use openssl::ssl::{Ssl, SslAcceptor};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::watch;
use tokio_openssl::SslStream;

use super::params::{MailParams, RcptParams};
use super::receiver::ReceiverConfig;
use super::reply::Reply;
use commands::{Flow, Session};

/// Which way mail flows through the listener; decides who may send.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Direction {
    /// Mail from the internet to local users (an MX). Anyone may send;
    /// [`Handler::check_rcpt`] decides which recipients are ours. `AUTH`
    /// is not offered.
    Inbound,
    /// Mail from local users to the internet (submission/relay). `MAIL`
    /// needs [`SessionInfo::trusted`] or a successful `AUTH`, else
    /// `530 5.7.0`.
    Outbound,
}

/// Settings for one listener, shared by all its sessions.
#[derive(Clone)]
pub struct SessionConfig {
    /// Our name in the greeting, the `EHLO` reply and `Received:`.
    pub hostname: String,
    /// Inbound (MX) or outbound (submission).
    pub direction: Direction,
    /// Line and message limits; `SIZE` advertises
    /// [`ReceiverConfig::max_message_size`].
    pub receiver: ReceiverConfig,
    /// Recipients per message; more get `452 4.5.3` (RFC 5321
    /// §4.5.3.1.8 asks for at least 100). Default 100.
    pub max_recipients: usize,
    /// Errors before `421 4.7.0` and close. Default 10.
    pub max_errors: usize,
    /// Waiting for a command (RFC 5321 §4.5.3.2.7). Default 5 minutes.
    pub idle_timeout: Duration,
    /// Waiting for more of a message (§4.5.3.2.6). Default 3 minutes.
    pub data_timeout: Duration,
    /// Slowest average rate a message may arrive at, in octets per second,
    /// after [`SessionConfig::data_grace`] (see the module's rules). 0: no
    /// minimum. Default 500 (Postfix's `smtpd_min_data_rate`).
    pub min_data_rate: u64,
    /// What every message is allowed before the rate counts. Default 30 s.
    pub data_grace: Duration,
    /// `None`: `STARTTLS` is not offered.
    pub tls: Option<Arc<SslAcceptor>>,
    /// `AUTH` is offered and accepted only inside TLS. Default `true`.
    pub require_tls_for_auth: bool,
    /// Where message content past [`super::spool::SPILL_AT`] octets goes
    /// while it arrives (encrypted, unnamed files); `None`: it stays in
    /// memory. Default `None`.
    pub spool_dir: Option<Arc<std::path::PathBuf>>,
}

impl SessionConfig {
    /// The defaults above for `hostname`, without TLS.
    #[must_use]
    pub fn new(hostname: impl Into<String>, direction: Direction) -> Self {
        Self {
            hostname: hostname.into(),
            direction,
            receiver: ReceiverConfig::default(),
            max_recipients: 100,
            max_errors: 10,
            idle_timeout: Duration::from_secs(300),
            data_timeout: Duration::from_secs(180),
            min_data_rate: 500,
            data_grace: Duration::from_secs(30),
            tls: None,
            require_tls_for_auth: true,
            spool_dir: None,
        }
    }
}

impl fmt::Debug for SessionConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SessionConfig")
            .field("hostname", &self.hostname)
            .field("direction", &self.direction)
            .field("receiver", &self.receiver)
            .field("max_recipients", &self.max_recipients)
            .field("max_errors", &self.max_errors)
            .field("idle_timeout", &self.idle_timeout)
            .field("data_timeout", &self.data_timeout)
            .field("min_data_rate", &self.min_data_rate)
            .field("data_grace", &self.data_grace)
            .field("tls", &self.tls.is_some())
            .field("require_tls_for_auth", &self.require_tls_for_auth)
            .field("spool_dir", &self.spool_dir)
            .finish()
    }
}

/// What is known about the client; the session keeps it up to date and
/// passes it to the [`Handler`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionInfo {
    /// The client's address.
    pub peer: SocketAddr,
    /// The `EHLO`/`HELO` argument (cleared by `STARTTLS`).
    pub helo: Option<String>,
    /// `STARTTLS` completed.
    pub tls: bool,
    /// The user name of a successful `AUTH`.
    pub authenticated: Option<String>,
    /// The peer is in the trusted networks (set by the caller): it may
    /// send outbound without `AUTH`.
    pub trusted: bool,
}

impl SessionInfo {
    /// A fresh, untrusted client at `peer`.
    #[must_use]
    pub fn new(peer: SocketAddr) -> Self {
        Self {
            peer,
            helo: None,
            tls: false,
            authenticated: None,
            trusted: false,
        }
    }
}

/// The envelope of one received message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Envelope {
    /// The reverse-path; `""` for `<>`.
    pub mail_from: String,
    /// The `MAIL` parameters as sent.
    pub params: MailParams,
    /// Accepted recipients in order, each with its `RCPT` parameters.
    /// `<Postmaster>` without a domain is `"Postmaster"`.
    pub recipients: Vec<(String, RcptParams)>,
    /// `BODY=8BITMIME` was given.
    pub body_8bit: bool,
    /// `SMTPUTF8` was given.
    pub smtputf8: bool,
}

/// Why [`Handler::accept`] did not take a message.
///
/// The text may start with an enhanced status code of the right class
/// (`"5.7.1 rejected by policy"`); it then replaces the default.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AcceptError {
    /// Try again later: `451 4.3.0 <text>`.
    #[error("temporary failure: {0}")]
    Temporary(String),
    /// Never: `554 5.6.0 <text>`.
    #[error("permanent failure: {0}")]
    Permanent(String),
}

/// What the rest of the gateway decides for a session.
pub trait Handler: Send + Sync {
    /// Called for MAIL FROM after the session's own checks (`from` is ""
    /// for `<>`); Err(reply) refuses the sender (e.g. 550 5.7.1: not a
    /// sender this client may use). Accepts every sender unless
    /// overridden.
    fn check_mail(
        &self,
        info: &SessionInfo,
        from: &str,
    ) -> impl Future<Output = Result<(), Reply>> + Send {
        let _ = (info, from);
        async { Ok(()) }
    }

    /// Called for each RCPT; Err(reply) refuses that recipient (e.g. 550
    /// 5.7.1 relaying denied; 550 5.1.1 unknown).
    fn check_rcpt(
        &self,
        info: &SessionInfo,
        from: &str,
        rcpt: &str,
    ) -> impl Future<Output = Result<(), Reply>> + Send;

    /// AUTH PLAIN / LOGIN credentials from the client `info`: Ok(true)
    /// when valid, Ok(false) when not (535), Err(reply) when they could
    /// not be checked now (e.g. `454 4.7.0` when the attempt limit or the
    /// password-hashing capacity says "try later"). May be slow (password
    /// hashing): do the work off the runtime's worker threads (e.g.
    /// `tokio::task::spawn_blocking`) so other sessions go on; the session
    /// only awaits the future. The password is never logged.
    fn authenticate(
        &self,
        info: &SessionInfo,
        user: &str,
        password: &str,
    ) -> impl Future<Output = Result<bool, Reply>> + Send;

    /// The message was received completely: its content (spooled, see
    /// [`super::spool`]) and the `Received:` field the session prepends
    /// ([`super::spool::Received::into_bytes`] makes the whole message).
    /// Returns the queue id, which goes into
    /// the 250 text. Must have made the message durable before returning
    /// Ok.
    fn accept(
        &self,
        info: &SessionInfo,
        envelope: Envelope,
        message: super::spool::Received,
    ) -> impl Future<Output = Result<String, AcceptError>> + Send;
}

/// Why a session ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EndReason {
    /// The client sent `QUIT`.
    Quit,
    /// The client closed the connection without `QUIT`.
    ClientClosed,
    /// Idle or data timeout (after `421 4.4.2`).
    Timeout,
    /// A message arrived slower than [`SessionConfig::min_data_rate`]
    /// (after `421 4.4.2`); it was not accepted.
    TooSlow,
    /// [`SessionConfig::max_errors`] reached (after `421 4.7.0`).
    TooManyErrors,
    /// Reading, writing or the TLS handshake failed.
    IoError(String),
    /// Graceful shutdown (after `421 4.3.2`).
    ShuttingDown,
    /// The client broke the protocol so that the session cannot stay in
    /// step (a `BDAT` line that does not parse: the chunk size is unknown).
    ProtocolError(String),
}

/// How a session went.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionOutcome {
    /// Messages accepted by [`Handler::accept`].
    pub messages: usize,
    /// Why it ended.
    pub ended: EndReason,
}

/// Serves one SMTP connection until it ends. Without graceful shutdown;
/// see [`run_with_shutdown`].
pub async fn run<S, H>(
    stream: S,
    info: SessionInfo,
    config: &SessionConfig,
    handler: &H,
) -> SessionOutcome
where
    S: AsyncRead + AsyncWrite + Unpin + Send,
    H: Handler,
{
    serve(stream, info, config, handler, None).await
}

/// [`run`], and when `shutdown` becomes `true`: a session waiting for a
/// command replies `421 4.3.2` and closes; one inside a message finishes
/// receiving and accepting it, then does the same. A dropped sender means
/// no shutdown.
pub async fn run_with_shutdown<S, H>(
    stream: S,
    info: SessionInfo,
    config: &SessionConfig,
    handler: &H,
    shutdown: watch::Receiver<bool>,
) -> SessionOutcome
where
    S: AsyncRead + AsyncWrite + Unpin + Send,
    H: Handler,
{
    serve(stream, info, config, handler, Some(shutdown)).await
}

async fn serve<S, H>(
    mut stream: S,
    info: SessionInfo,
    config: &SessionConfig,
    handler: &H,
    shutdown: Option<watch::Receiver<bool>>,
) -> SessionOutcome
where
    S: AsyncRead + AsyncWrite + Unpin + Send,
    H: Handler,
{
    let peer = info.peer;
    tracing::debug!(%peer, "smtp session start");
    let mut session = Session::new(config, handler, info, shutdown);
    let ended = match io_loop(&mut stream, &mut session, true).await {
        Flow::End(reason) => reason,
        Flow::StartTls => match start_tls(stream, config).await {
            Err(reason) => reason,
            Ok(mut tls) => {
                session.tls_established();
                match io_loop(&mut tls, &mut session, false).await {
                    Flow::End(reason) => reason,
                    // Refused inside TLS; cannot happen.
                    Flow::StartTls | Flow::Continue => {
                        EndReason::ProtocolError("STARTTLS inside TLS".into())
                    }
                }
            }
        },
        Flow::Continue => EndReason::ProtocolError("session loop ended early".into()),
    };
    let messages = session.messages();
    tracing::info!(%peer, messages, ended = ?ended, "smtp session end");
    SessionOutcome { messages, ended }
}

/// The TLS handshake after `220 Ready to start TLS`, bounded by the idle
/// timeout.
async fn start_tls<S>(stream: S, config: &SessionConfig) -> Result<SslStream<S>, EndReason>
where
    S: AsyncRead + AsyncWrite + Unpin + Send,
{
    let io_err = |e: &dyn fmt::Display| EndReason::IoError(format!("TLS handshake: {e}"));
    let acceptor = config
        .tls
        .as_ref()
        .ok_or_else(|| io_err(&"TLS not configured"))?;
    let ssl = Ssl::new(acceptor.context()).map_err(|e| io_err(&e))?;
    let mut tls = SslStream::new(ssl, stream).map_err(|e| io_err(&e))?;
    match tokio::time::timeout(config.idle_timeout, Pin::new(&mut tls).accept()).await {
        Ok(Ok(())) => Ok(tls),
        Ok(Err(e)) => Err(io_err(&e)),
        Err(_) => Err(EndReason::Timeout),
    }
}

/// Size of one read. The receiver keeps at most one line (or one read
/// while paused) beyond this.
const READ_BUF: usize = 16 * 1024;

/// Reads, feeds the receiver, answers. Returns when the session ends or
/// `STARTTLS` was accepted (its 220 written).
async fn io_loop<IO, H>(io: &mut IO, session: &mut Session<'_, H>, greet: bool) -> Flow
where
    IO: AsyncRead + AsyncWrite + Unpin + Send,
    H: Handler,
{
    let mut buf = vec![0u8; READ_BUF];
    let mut n = 0;
    if greet && let Flow::End(reason) = session.greet() {
        return close(io, session, reason).await;
    }
    loop {
        let events = session.ingest(&buf[..n]);
        n = 0;
        if events.is_empty() {
            if session.receiver_paused() {
                // Every pause is resolved while answering; this is a bug.
                return close(
                    io,
                    session,
                    EndReason::ProtocolError("receiver stalled".into()),
                )
                .await;
            }
            if let Flow::End(reason) = session.check_shutdown() {
                return close(io, session, reason).await;
            }
            if let Err(reason) = session.flush(io).await {
                return close(io, session, reason).await;
            }
            match session.read(io, &mut buf).await {
                Ok(0) => return close(io, session, EndReason::ClientClosed).await,
                Ok(read) => n = read,
                Err(reason) => return close(io, session, reason).await,
            }
            continue;
        }
        for event in events {
            match session.event(event, io).await {
                Flow::Continue => {}
                Flow::StartTls => {
                    if let Err(reason) = session.flush(io).await {
                        return close(io, session, reason).await;
                    }
                    return Flow::StartTls;
                }
                Flow::End(reason) => return close(io, session, reason).await,
            }
        }
    }
}

/// How long a closing session waits for its last words and its shutdown
/// (a client that stopped reading must not keep it for the idle timeout).
const CLOSE_LIMIT: Duration = Duration::from_secs(10);

/// Writes what is left to say (errors ignored: the client may be gone) and
/// closes the stream (TLS `close_notify`, then FIN).
async fn close<IO, H>(io: &mut IO, session: &mut Session<'_, H>, reason: EndReason) -> Flow
where
    IO: AsyncRead + AsyncWrite + Unpin + Send,
    H: Handler,
{
    let _ = session.flush_within(io, CLOSE_LIMIT).await;
    let _ = tokio::time::timeout(CLOSE_LIMIT, io.shutdown()).await;
    Flow::End(reason)
}

/// Writes `out` and flushes, bounded by `limit`.
async fn write_all<IO>(io: &mut IO, out: &[u8], limit: Duration) -> Result<(), EndReason>
where
    IO: AsyncWrite + Unpin,
{
    let write = async {
        io.write_all(out).await?;
        io.flush().await
    };
    match tokio::time::timeout(limit, write).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(EndReason::IoError(format!("write: {e}"))),
        Err(_) => Err(EndReason::Timeout),
    }
}

/// One read into `buf`, bounded by `limit`; `Ok(0)` at end of stream.
async fn read_some<IO>(io: &mut IO, buf: &mut [u8]) -> Result<usize, EndReason>
where
    IO: AsyncRead + Unpin,
{
    io.read(buf)
        .await
        .map_err(|e| EndReason::IoError(format!("read: {e}")))
}

/// Resolves when `shutdown` is or becomes `true`; never if there is none or
/// its sender is gone.
async fn shutdown_requested(shutdown: &mut Option<watch::Receiver<bool>>) {
    if let Some(rx) = shutdown {
        loop {
            if *rx.borrow_and_update() {
                return;
            }
            if rx.changed().await.is_err() {
                break;
            }
        }
    }
    std::future::pending::<()>().await;
}
