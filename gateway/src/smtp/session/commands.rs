//! The session state machine: one [`Event`] in, replies out. I/O stays in
//! the parent module except for flushing before slow [`Handler`] calls.

use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::watch;

use super::auth::{self, AuthStep};
use super::received;
use super::{
    AcceptError, Direction, EndReason, Envelope, Handler, SessionConfig, SessionInfo, read_some,
    shutdown_requested, write_all,
};
use crate::smtp::address::{ForwardPath, ReversePath};
use crate::smtp::error::ParseError;
use crate::smtp::params::{Body, MailParams, RcptParams};
use crate::smtp::receiver::{Event, Receiver};
use crate::smtp::reply::{EnhancedCode, Reply};
use crate::smtp::request::Request;
use crate::smtp::spool::{Received, Spool};

/// What the I/O loop does next.
#[derive(Debug)]
pub(super) enum Flow {
    /// Go on with the next event or read.
    Continue,
    /// `220` to `STARTTLS` is queued: flush it and hand shake.
    StartTls,
    /// Say what is queued and close.
    End(EndReason),
}

/// One mail transaction, from `MAIL` to the end of the message.
#[derive(Debug)]
struct Transaction {
    from: String,
    params: MailParams,
    recipients: Vec<(String, RcptParams)>,
    body: Spool,
    /// Storing the body failed (the spool's disk): the message is refused
    /// with a temporary error at its end.
    spool_failed: bool,
    /// The body is coming in `BDAT` chunks (`DATA` is then refused).
    bdat: bool,
}

/// What happens to the `BDAT` chunk being read.
#[derive(Debug)]
enum Chunk {
    /// Append it to the message.
    Keep { size: u64, last: bool },
    /// Drop it; reply `reply` when it is consumed (counted as an error if
    /// `counted`).
    Refuse {
        reply: Reply,
        counted: bool,
        last: bool,
    },
}

fn code(class: u8, subject: u16, detail: u16) -> Option<EnhancedCode> {
    Some(EnhancedCode::new(class, subject, detail))
}

/// When the message being received started, and how much of it has come:
/// what [`SessionConfig::min_data_rate`] is measured on.
#[derive(Debug, Clone, Copy)]
struct Transfer {
    start: tokio::time::Instant,
    octets: u64,
}

impl Transfer {
    /// By when the message must be complete at the configured rate.
    fn deadline(&self, config: &SessionConfig) -> tokio::time::Instant {
        let allowed = self.octets / config.min_data_rate.max(1);
        self.start + config.data_grace + std::time::Duration::from_secs(allowed)
    }
}

/// The state of one session apart from its stream.
pub(super) struct Session<'a, H> {
    config: &'a SessionConfig,
    handler: &'a H,
    info: SessionInfo,
    rx: Receiver,
    /// Replies not yet written.
    out: Vec<u8>,
    shutdown: Option<watch::Receiver<bool>>,
    /// The client greeted with `EHLO` (extensions are on).
    ehlo: bool,
    tx: Option<Transaction>,
    /// Reading a `DATA` message.
    in_data: bool,
    /// Reading a `BDAT` chunk.
    chunk: Option<Chunk>,
    /// A `BDAT` chunk of this transaction failed: later chunks already in
    /// the pipeline are consumed and get this reply, until `LAST`, `RSET`,
    /// `MAIL` or `EHLO` (RFC 3030 §4).
    bdat_failed: Option<Reply>,
    /// An `AUTH` exchange waiting for the client's next line.
    auth: Option<AuthStep>,
    /// The message being received, for the minimum rate.
    transfer: Option<Transfer>,
    errors: usize,
    messages: usize,
}

impl<'a, H: Handler> Session<'a, H> {
    pub(super) fn new(
        config: &'a SessionConfig,
        handler: &'a H,
        info: SessionInfo,
        shutdown: Option<watch::Receiver<bool>>,
    ) -> Self {
        Self {
            config,
            handler,
            info,
            rx: Receiver::new(config.receiver.clone()),
            out: Vec::new(),
            shutdown,
            ehlo: false,
            tx: None,
            in_data: false,
            chunk: None,
            bdat_failed: None,
            auth: None,
            transfer: None,
            errors: 0,
            messages: 0,
        }
    }

    pub(super) fn messages(&self) -> usize {
        self.messages
    }

    pub(super) fn ingest(&mut self, bytes: &[u8]) -> Vec<Event> {
        self.rx.ingest(bytes)
    }

    pub(super) fn receiver_paused(&self) -> bool {
        self.rx.is_paused()
    }

    fn reply(&mut self, reply: &Reply) {
        self.out.extend_from_slice(&reply.to_bytes());
    }

    fn say(&mut self, code: u16, enhanced: Option<EnhancedCode>, text: &str) {
        self.reply(&Reply::new(code, enhanced, text));
    }

    /// Queues an error reply and counts it; at the limit adds `421` and
    /// ends the session.
    fn error(&mut self, reply: &Reply) -> Flow {
        self.reply(reply);
        self.count_error()
    }

    fn count_error(&mut self) -> Flow {
        self.errors += 1;
        if self.errors >= self.config.max_errors {
            tracing::info!(peer = %self.info.peer, errors = self.errors, "too many errors");
            let text = format!("{} Error: too many errors", self.config.hostname);
            self.say(421, code(4, 7, 0), &text);
            return Flow::End(EndReason::TooManyErrors);
        }
        Flow::Continue
    }

    fn shutting_down(&self) -> bool {
        self.shutdown.as_ref().is_some_and(|rx| *rx.borrow())
    }

    fn shutdown_reply(&mut self) -> Flow {
        let text = format!("{} shutting down", self.config.hostname);
        self.say(421, code(4, 3, 2), &text);
        Flow::End(EndReason::ShuttingDown)
    }

    /// Inside a message: shutdown and the data timeout wait for its end.
    fn in_message(&self) -> bool {
        self.in_data || self.chunk.is_some() || self.tx.as_ref().is_some_and(|t| t.bdat)
    }

    /// The greeting, or `421` when already shutting down.
    pub(super) fn greet(&mut self) -> Flow {
        if self.shutting_down() {
            return self.shutdown_reply();
        }
        let text = format!("{} ESMTP", self.config.hostname);
        self.say(220, None, &text);
        Flow::Continue
    }

    /// Before blocking on a read: `421` if shutdown was requested and no
    /// message is being received.
    pub(super) fn check_shutdown(&mut self) -> Flow {
        if !self.in_message() && self.shutting_down() {
            return self.shutdown_reply();
        }
        Flow::Continue
    }

    /// Writes the queued replies (bounded by the idle timeout).
    pub(super) async fn flush<IO>(&mut self, io: &mut IO) -> Result<(), EndReason>
    where
        IO: AsyncWrite + Unpin,
    {
        self.flush_within(io, self.config.idle_timeout).await
    }

    /// Writes the queued replies within `limit`.
    pub(super) async fn flush_within<IO>(
        &mut self,
        io: &mut IO,
        limit: std::time::Duration,
    ) -> Result<(), EndReason>
    where
        IO: AsyncWrite + Unpin,
    {
        if self.out.is_empty() {
            return Ok(());
        }
        let out = std::mem::take(&mut self.out);
        write_all(io, &out, limit).await
    }

    /// One read with the timeout that applies now; on timeout, a message
    /// arriving too slowly, or shutdown the `421` is queued and the reason
    /// returned.
    pub(super) async fn read<IO>(&mut self, io: &mut IO, buf: &mut [u8]) -> Result<usize, EndReason>
    where
        IO: AsyncRead + Unpin,
    {
        let in_message = self.in_message();
        let limit = if in_message {
            self.config.data_timeout
        } else {
            self.config.idle_timeout
        };
        let now = tokio::time::Instant::now();
        let mut until = now + limit;
        let mut too_slow = false;
        if !in_message {
            self.transfer = None;
        } else if self.config.min_data_rate > 0 {
            // An absolute deadline: each octet buys 1/rate seconds, so a
            // trickle cannot renew it as it renews the per-read timeout.
            let t = self.transfer.get_or_insert(Transfer {
                start: now,
                octets: 0,
            });
            let deadline = t.deadline(self.config);
            if deadline <= until {
                until = deadline;
                too_slow = true;
            }
        }
        let shutdown = &mut self.shutdown;
        tokio::select! {
            biased;
            r = read_some(io, buf) => {
                if let (Ok(n), Some(t)) = (&r, &mut self.transfer) {
                    t.octets = t.octets.saturating_add(*n as u64);
                }
                r
            }
            () = tokio::time::sleep_until(until), if too_slow => {
                tracing::info!(
                    peer = %self.info.peer,
                    octets = self.transfer.map_or(0, |t| t.octets),
                    "smtp message transfer too slow"
                );
                let text = format!(
                    "{} Error: message transfer too slow (under {} octets per second)",
                    self.config.hostname, self.config.min_data_rate
                );
                self.say(421, code(4, 4, 2), &text);
                Err(EndReason::TooSlow)
            }
            () = tokio::time::sleep_until(until), if !too_slow => {
                tracing::info!(peer = %self.info.peer, in_message, "smtp timeout");
                let text = format!("{} Error: timeout exceeded", self.config.hostname);
                self.say(421, code(4, 4, 2), &text);
                Err(EndReason::Timeout)
            }
            () = shutdown_requested(shutdown), if !in_message => {
                let Flow::End(reason) = self.shutdown_reply() else {
                    return Err(EndReason::ShuttingDown);
                };
                Err(reason)
            }
        }
    }

    /// After the handshake: RFC 3207 §4.2, forget what the client said.
    pub(super) fn tls_established(&mut self) {
        self.rx.tls_established();
        self.info.tls = true;
        self.info.helo = None;
        self.info.authenticated = None;
        self.ehlo = false;
        self.reset();
    }

    /// Ends the transaction (`RSET`, `EHLO`, after a message).
    fn reset(&mut self) {
        self.tx = None;
        self.bdat_failed = None;
        self.transfer = None;
    }

    fn auth_offered(&self) -> bool {
        self.config.direction == Direction::Outbound
            && (self.info.tls || !self.config.require_tls_for_auth)
    }

    /// Answers one event.
    pub(super) async fn event<IO>(&mut self, event: Event, io: &mut IO) -> Flow
    where
        IO: AsyncWrite + Unpin,
    {
        match event {
            Event::Request(Ok(request)) => self.request(request, io).await,
            Event::Request(Err(e)) => self.parse_error(&e),
            Event::LineTooLong => {
                if self.auth.take().is_some() {
                    self.rx.resume_commands();
                    self.error(&Reply::new(
                        500,
                        code(5, 5, 6),
                        "Authentication line too long",
                    ))
                } else {
                    self.error(&Reply::new(500, code(5, 5, 2), "Line too long"))
                }
            }
            Event::DataChunk(bytes) => {
                if (self.in_data || matches!(self.chunk, Some(Chunk::Keep { .. })))
                    && let Some(tx) = &mut self.tx
                    && !tx.spool_failed
                    && let Err(e) = tx.body.push(&bytes)
                {
                    tracing::error!(peer = %self.info.peer, error = %e, "spooling a message failed");
                    tx.spool_failed = true;
                }
                Flow::Continue
            }
            Event::DataEnd => {
                self.in_data = false;
                self.finish_message(io).await
            }
            Event::DataTooLarge => {
                self.in_data = false;
                self.reset();
                self.say(
                    552,
                    code(5, 3, 4),
                    "Message size exceeds fixed maximum message size",
                );
                Flow::Continue
            }
            Event::BdatChunkEnd { .. } => self.chunk_end(io).await,
            Event::AuthLine(line) => self.auth_line(&line, io).await,
        }
    }

    fn parse_error(&mut self, e: &ParseError) -> Flow {
        let bdat = matches!(
            e,
            ParseError::InvalidBdat | ParseError::MissingArgument { command: "BDAT" }
        );
        if bdat {
            // The chunk size is unknown, so the next command cannot be found.
            self.reply(&Reply::from(e));
            self.say(421, code(4, 5, 0), "BDAT syntax error, closing connection");
            return Flow::End(EndReason::ProtocolError("BDAT syntax error".into()));
        }
        self.error(&Reply::from(e))
    }

    async fn request<IO>(&mut self, request: Request, io: &mut IO) -> Flow
    where
        IO: AsyncWrite + Unpin,
    {
        match request {
            Request::Ehlo { host } => {
                self.reset();
                self.info.helo = Some(host);
                self.ehlo = true;
                let reply = self.ehlo_reply();
                self.reply(&reply);
                Flow::Continue
            }
            Request::Helo { host } => {
                self.reset();
                self.info.helo = Some(host);
                self.ehlo = false;
                let name = self.config.hostname.clone();
                self.say(250, None, &name);
                Flow::Continue
            }
            Request::Mail { from, params } => self.mail(from, params).await,
            Request::Rcpt { to, params } => self.rcpt(&to, params).await,
            Request::Data => self.data(),
            Request::Bdat { size, last } => self.bdat(size, last),
            Request::Rset => {
                self.reset();
                self.say(250, code(2, 0, 0), "Ok");
                Flow::Continue
            }
            Request::Noop => {
                self.say(250, code(2, 0, 0), "Ok");
                Flow::Continue
            }
            Request::Quit => {
                self.say(221, code(2, 0, 0), "Bye");
                Flow::End(EndReason::Quit)
            }
            Request::Vrfy { .. } => {
                self.say(
                    252,
                    code(2, 5, 0),
                    "Cannot VRFY user, but will accept message and attempt delivery",
                );
                Flow::Continue
            }
            Request::Help { .. } => {
                self.say(214, code(2, 0, 0), "See RFC 5321");
                Flow::Continue
            }
            Request::StartTls => self.starttls(),
            Request::Auth {
                mechanism,
                initial_response,
            } => self.auth(&mechanism, initial_response, io).await,
            // EXPN and anything added later.
            _ => self.error(&Reply::new(502, code(5, 5, 1), "Command not implemented")),
        }
    }

    fn ehlo_reply(&self) -> Reply {
        let mut reply = Reply::new(250, None, &self.config.hostname)
            .with_line("PIPELINING")
            .with_line(&format!("SIZE {}", self.config.receiver.max_message_size))
            .with_line("8BITMIME")
            .with_line("SMTPUTF8")
            .with_line("ENHANCEDSTATUSCODES")
            .with_line("DSN")
            .with_line("CHUNKING");
        if self.config.tls.is_some() && !self.info.tls {
            reply = reply.with_line("STARTTLS");
        }
        if self.auth_offered() {
            reply = reply.with_line("AUTH PLAIN LOGIN");
        }
        reply
    }

    async fn mail(&mut self, from: ReversePath, params: MailParams) -> Flow {
        if self.info.helo.is_none() {
            return self.error(&Reply::new(503, code(5, 5, 1), "Send HELO/EHLO first"));
        }
        if self.tx.is_some() {
            return self.error(&Reply::new(503, code(5, 5, 1), "Nested MAIL command"));
        }
        if self.config.direction == Direction::Outbound
            && !self.info.trusted
            && self.info.authenticated.is_none()
        {
            return self.error(&Reply::new(530, code(5, 7, 0), "Authentication required"));
        }
        if !self.ehlo && params != MailParams::default() {
            return self.error(&Reply::new(555, code(5, 5, 4), "MAIL parameters need EHLO"));
        }
        if params.body == Some(Body::BinaryMime) {
            return self.error(&Reply::new(
                555,
                code(5, 5, 4),
                "BODY=BINARYMIME not supported",
            ));
        }
        if params
            .size
            .is_some_and(|s| s > self.config.receiver.max_message_size)
        {
            return self.error(&Reply::new(
                552,
                code(5, 3, 4),
                "Message size exceeds fixed maximum message size",
            ));
        }
        let from = match from {
            ReversePath::Null => String::new(),
            ReversePath::Address(a) => {
                if !a.is_ascii() && !params.smtputf8 {
                    return self.error(&Reply::new(
                        553,
                        code(5, 6, 7),
                        "Non-ASCII sender address needs SMTPUTF8",
                    ));
                }
                a.to_string()
            }
        };
        if let Err(reply) = self.handler.check_mail(&self.info, &from).await {
            return self.error(&reply);
        }
        self.bdat_failed = None;
        self.tx = Some(Transaction {
            from,
            params,
            recipients: Vec::new(),
            body: Spool::new(self.config.spool_dir.clone()),
            spool_failed: false,
            bdat: false,
        });
        self.say(250, code(2, 1, 0), "Ok");
        Flow::Continue
    }

    async fn rcpt(&mut self, to: &ForwardPath, params: RcptParams) -> Flow {
        let Some(tx) = &self.tx else {
            return self.error(&Reply::new(503, code(5, 5, 1), "Need MAIL command"));
        };
        let rcpt = match to {
            ForwardPath::Postmaster => "Postmaster".to_owned(),
            ForwardPath::Address(a) => {
                if !a.is_ascii() && !tx.params.smtputf8 {
                    return self.error(&Reply::new(
                        553,
                        code(5, 6, 7),
                        "Non-ASCII recipient address needs SMTPUTF8",
                    ));
                }
                a.to_string()
            }
        };
        if tx.recipients.len() >= self.config.max_recipients {
            // Not an error: the client sends the rest in another message.
            self.say(452, code(4, 5, 3), "Too many recipients");
            return Flow::Continue;
        }
        let from = tx.from.clone();
        if let Err(reply) = self.handler.check_rcpt(&self.info, &from, &rcpt).await {
            return self.error(&reply);
        }
        if let Some(tx) = &mut self.tx {
            tx.recipients.push((rcpt, params));
        }
        self.say(250, code(2, 1, 5), "Ok");
        Flow::Continue
    }

    fn data(&mut self) -> Flow {
        let refusal = match &self.tx {
            None => Some(Reply::new(503, code(5, 5, 1), "Need MAIL command")),
            Some(tx) if tx.bdat => Some(Reply::new(
                503,
                code(5, 5, 1),
                "DATA not allowed after BDAT",
            )),
            Some(tx) if tx.recipients.is_empty() => {
                Some(Reply::new(554, code(5, 5, 1), "No valid recipients"))
            }
            Some(_) => None,
        };
        if let Some(reply) = refusal {
            self.rx.resume_commands();
            return self.error(&reply);
        }
        self.say(354, None, "End data with <CR><LF>.<CR><LF>");
        self.rx.start_data();
        self.in_data = true;
        Flow::Continue
    }

    /// `BDAT size [LAST]`: the receiver is already reading the chunk; decide
    /// what becomes of it. The reply waits until it is consumed.
    fn bdat(&mut self, size: u64, last: bool) -> Flow {
        let max = self.config.receiver.max_message_size;
        let refuse = |reply: Reply, counted: bool| Chunk::Refuse {
            reply,
            counted,
            last,
        };
        let chunk = if let Some(reply) = &self.bdat_failed {
            refuse(reply.clone(), false)
        } else {
            match &mut self.tx {
                None => refuse(Reply::new(503, code(5, 5, 1), "Need MAIL command"), true),
                Some(tx) if tx.recipients.is_empty() => {
                    refuse(Reply::new(554, code(5, 5, 1), "No valid recipients"), true)
                }
                Some(tx) if tx.body.len().saturating_add(size) > max => refuse(
                    Reply::new(
                        552,
                        code(5, 3, 4),
                        "Message size exceeds fixed maximum message size",
                    ),
                    false,
                ),
                Some(tx) => {
                    tx.bdat = true;
                    Chunk::Keep { size, last }
                }
            }
        };
        if let Chunk::Refuse { reply, .. } = &chunk {
            // The transaction is over; pipelined chunks get the same reply.
            self.tx = None;
            self.bdat_failed = Some(reply.clone());
        }
        self.chunk = Some(chunk);
        Flow::Continue
    }

    async fn chunk_end<IO>(&mut self, io: &mut IO) -> Flow
    where
        IO: AsyncWrite + Unpin,
    {
        match self.chunk.take() {
            Some(Chunk::Keep { last: true, .. }) => self.finish_message(io).await,
            Some(Chunk::Keep { size, last: false }) => {
                self.say(250, code(2, 0, 0), &format!("{size} octets received"));
                Flow::Continue
            }
            Some(Chunk::Refuse {
                reply,
                counted,
                last,
            }) => {
                if last {
                    self.bdat_failed = None;
                }
                self.reply(&reply);
                if counted {
                    self.count_error()
                } else {
                    Flow::Continue
                }
            }
            None => Flow::Continue,
        }
    }

    /// The message is complete: prepend `Received:`, hand it over, answer.
    async fn finish_message<IO>(&mut self, io: &mut IO) -> Flow
    where
        IO: AsyncWrite + Unpin,
    {
        let Some(tx) = self.tx.take() else {
            return Flow::Continue;
        };
        self.reset();
        // The client may have pipelined more; say what is due before a
        // possibly slow accept.
        if let Err(reason) = self.flush(io).await {
            return Flow::End(reason);
        }
        if tx.spool_failed {
            self.say(
                451,
                code(4, 3, 0),
                "Temporary failure storing the message, try again later",
            );
            return Flow::Continue;
        }
        let id = received::unique_id();
        let message = Received {
            trace: received::header(
                self.info.helo.as_deref().unwrap_or("unknown"),
                self.info.peer.ip(),
                &self.config.hostname,
                self.protocol(),
                &id,
            )
            .into_bytes(),
            content: tx.body,
        };
        let size = message.len();
        let envelope = Envelope {
            mail_from: tx.from,
            body_8bit: tx.params.body == Some(Body::EightBitMime),
            smtputf8: tx.params.smtputf8,
            params: tx.params,
            recipients: tx.recipients,
        };
        let recipients = envelope.recipients.len();
        match self.handler.accept(&self.info, envelope, message).await {
            Ok(queue_id) => {
                self.messages += 1;
                self.errors = 0;
                tracing::info!(peer = %self.info.peer, id, queue_id, size, recipients, "message accepted");
                self.say(250, code(2, 0, 0), &format!("Ok: queued as {queue_id}"));
            }
            Err(e) => {
                tracing::warn!(peer = %self.info.peer, id, error = %e, "message not accepted");
                let reply = match e {
                    AcceptError::Temporary(text) => status_reply(451, (4, 3, 0), &text),
                    AcceptError::Permanent(text) => status_reply(554, (5, 6, 0), &text),
                };
                self.reply(&reply);
            }
        }
        if self.shutting_down() {
            return self.shutdown_reply();
        }
        Flow::Continue
    }

    /// `with` in `Received:` (RFC 3848): `SMTP` for a plain `HELO`
    /// session, else `ESMTP` plus `S` for TLS and `A` for `AUTH`.
    fn protocol(&self) -> &'static str {
        match (self.info.tls, self.info.authenticated.is_some()) {
            (false, false) if !self.ehlo => "SMTP",
            (false, false) => "ESMTP",
            (true, false) => "ESMTPS",
            (false, true) => "ESMTPA",
            (true, true) => "ESMTPSA",
        }
    }

    fn starttls(&mut self) -> Flow {
        let refusal = if self.config.tls.is_none() {
            Some(Reply::new(502, code(5, 5, 1), "STARTTLS not available"))
        } else if self.info.tls {
            Some(Reply::new(503, code(5, 5, 1), "TLS already active"))
        } else if self.tx.is_some() {
            Some(Reply::new(
                503,
                code(5, 5, 1),
                "MAIL transaction in progress",
            ))
        } else {
            None
        };
        if let Some(reply) = refusal {
            self.rx.resume_commands();
            return self.error(&reply);
        }
        self.say(220, code(2, 0, 0), "Ready to start TLS");
        Flow::StartTls
    }

    /// `AUTH mechanism [initial-response]` (RFC 4954).
    async fn auth<IO>(&mut self, mechanism: &str, initial: Option<String>, io: &mut IO) -> Flow
    where
        IO: AsyncWrite + Unpin,
    {
        let refusal = if !self.ehlo {
            Some(Reply::new(503, code(5, 5, 1), "Send EHLO first"))
        } else if !self.auth_offered() {
            if self.config.direction == Direction::Outbound && self.config.tls.is_some() {
                Some(Reply::new(
                    530,
                    code(5, 7, 0),
                    "Must issue a STARTTLS command first",
                ))
            } else {
                Some(Reply::new(503, code(5, 5, 1), "Authentication not enabled"))
            }
        } else if self.info.authenticated.is_some() {
            Some(Reply::new(503, code(5, 5, 1), "Already authenticated"))
        } else if self.tx.is_some() {
            Some(Reply::new(
                503,
                code(5, 5, 1),
                "AUTH not permitted during a mail transaction",
            ))
        } else if mechanism != "PLAIN" && mechanism != "LOGIN" {
            Some(Reply::new(
                504,
                code(5, 5, 4),
                "Unrecognized authentication type",
            ))
        } else {
            None
        };
        if let Some(reply) = refusal {
            self.rx.resume_commands();
            return self.error(&reply);
        }
        let step = if mechanism == "PLAIN" {
            AuthStep::Plain
        } else {
            AuthStep::LoginUser
        };
        match initial {
            Some(response) => self.auth_response(step, response.as_bytes(), io).await,
            None => self.challenge(step),
        }
    }

    /// Sends the 334 for `step` and waits for the client's line.
    fn challenge(&mut self, step: AuthStep) -> Flow {
        self.say(334, None, step.challenge());
        self.auth = Some(step);
        self.rx.expect_auth_line();
        Flow::Continue
    }

    async fn auth_line<IO>(&mut self, line: &[u8], io: &mut IO) -> Flow
    where
        IO: AsyncWrite + Unpin,
    {
        let Some(step) = self.auth.take() else {
            self.rx.resume_commands();
            return Flow::Continue;
        };
        if line == b"*" {
            self.rx.resume_commands();
            return self.error(&Reply::new(501, code(5, 7, 0), "Authentication cancelled"));
        }
        self.auth_response(step, line, io).await
    }

    /// One base64 response in the exchange (initial or after a 334).
    async fn auth_response<IO>(&mut self, step: AuthStep, response: &[u8], io: &mut IO) -> Flow
    where
        IO: AsyncWrite + Unpin,
    {
        let decoded = match step.decode(response) {
            Ok(decoded) => decoded,
            Err(e) => {
                self.rx.resume_commands();
                return self.error(&Reply::new(501, code(5, 5, 2), e));
            }
        };
        match decoded {
            auth::Decoded::Next(next) => self.challenge(next),
            auth::Decoded::Credentials { user, password } => {
                self.rx.resume_commands();
                self.verify(user, &password, io).await
            }
            auth::Decoded::Refused => {
                self.rx.resume_commands();
                self.auth_failed("(authorization identity)")
            }
        }
    }

    async fn verify<IO>(&mut self, user: String, password: &str, io: &mut IO) -> Flow
    where
        IO: AsyncWrite + Unpin,
    {
        if let Err(reason) = self.flush(io).await {
            return Flow::End(reason);
        }
        match self.handler.authenticate(&self.info, &user, password).await {
            Ok(true) => {
                tracing::info!(peer = %self.info.peer, user = ?user, "authenticated");
                self.info.authenticated = Some(user);
                self.say(235, code(2, 7, 0), "Authentication successful");
                Flow::Continue
            }
            Ok(false) => self.auth_failed(&user),
            Err(reply) => {
                tracing::info!(peer = %self.info.peer, user = ?user, "authentication not checked now");
                self.error(&reply)
            }
        }
    }

    fn auth_failed(&mut self, user: &str) -> Flow {
        tracing::info!(peer = %self.info.peer, user = ?user, "authentication failed");
        self.error(&Reply::new(
            535,
            code(5, 7, 8),
            "Authentication credentials invalid",
        ))
    }
}

/// `code` with `default` enhanced code, or the one `text` starts with if it
/// has the same class.
fn status_reply(code: u16, default: (u8, u16, u16), text: &str) -> Reply {
    let parsed = text.split_once(' ').and_then(|(first, rest)| {
        let mut parts = first.split('.');
        let class: u8 = parts.next()?.parse().ok()?;
        let subject: u16 = parts.next()?.parse().ok()?;
        let detail: u16 = parts.next()?.parse().ok()?;
        let ok = parts.next().is_none() && class == default.0 && subject < 1000 && detail < 1000;
        ok.then(|| (EnhancedCode::new(class, subject, detail), rest))
    });
    match parsed {
        Some((enhanced, rest)) => Reply::new(code, Some(enhanced), rest),
        None => Reply::new(
            code,
            Some(EnhancedCode::new(default.0, default.1, default.2)),
            text,
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_reply_takes_a_leading_code_of_its_class() {
        assert_eq!(
            status_reply(554, (5, 6, 0), "5.7.1 blocked").to_string(),
            "554 5.7.1 blocked\r\n"
        );
        assert_eq!(
            status_reply(554, (5, 6, 0), "4.7.1 wrong class").to_string(),
            "554 5.6.0 4.7.1 wrong class\r\n"
        );
        assert_eq!(
            status_reply(451, (4, 3, 0), "disk full").to_string(),
            "451 4.3.0 disk full\r\n"
        );
    }
}
