//! [`Receiver`]: bytes from the client in, [`Event`]s out. No I/O.
//!
//! Decisions where RFC 5321 leaves room, all chosen to keep the receiver
//! and the client in step and to make SMTP smuggling impossible:
//!
//! - **Command lines** end at LF; a CR right before it is dropped. A bare LF
//!   is therefore accepted as a line end for commands (§2.3.8 allows either
//!   accepting or rejecting). The limit is [`ReceiverConfig::max_line_len`]
//!   octets counting a CRLF (§4.5.3.1.4, 512 for commands; the default is
//!   the 1000 of a text line so long `MAIL` parameters fit). A longer line is
//!   discarded up to its LF and reported once, as [`Event::LineTooLong`],
//!   when its end arrives.
//! - **DATA**: only `CRLF . CRLF` ends the message, and only a `.` right
//!   after CRLF (or at the very start) is unstuffed (§4.5.2). Bare LF and
//!   bare CR are passed through as received and never start a line, so
//!   `LF . LF`, `LF . CRLF` and `CRLF . LF` do not end the message. The
//!   content handed out includes the CRLF before the final dot. No
//!   line-length limit is applied inside DATA, only the size limit.
//! - **Pausing**: after parsing `DATA`, `STARTTLS`, `AUTH` or `QUIT` the
//!   receiver stops and keeps the rest of the input, because what follows
//!   depends on the reply. The caller continues with [`Receiver::start_data`]
//!   (after 354), [`Receiver::tls_established`] (drops the bytes pipelined
//!   after `STARTTLS`, the CVE-2011-0411 command injection),
//!   [`Receiver::expect_auth_line`] (after 334), or
//!   [`Receiver::resume_commands`] (after a refusal), then calls
//!   [`Receiver::ingest`] again (an empty slice is fine).
//! - **BDAT** (RFC 3030): the chunk follows the command without waiting for
//!   a reply and must be read even if the command is refused, so a parsed
//!   `BDAT n` switches to reading exactly `n` octets by itself. The session
//!   enforces message size from the declared sizes. A `BDAT` line that does
//!   not parse leaves the receiver in command mode (the chunk size is
//!   unknown; the session should close the connection).

use super::error::ParseError;
use super::request::Request;

/// Limits. The defaults are safe for a gateway.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReceiverConfig {
    /// Longest command line in octets, counting CRLF. Default 1000.
    pub max_line_len: usize,
    /// Longest SASL response line after `AUTH`, counting CRLF. Default
    /// 12288 (RFC 4954 §4).
    pub max_auth_line_len: usize,
    /// Largest DATA message in octets after unstuffing. Default 50 MiB.
    pub max_message_size: u64,
}

impl Default for ReceiverConfig {
    fn default() -> Self {
        Self {
            max_line_len: 1000,
            max_auth_line_len: 12288,
            max_message_size: 50 * 1024 * 1024,
        }
    }
}

/// Something the client sent.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Event {
    /// A command line, parsed or refused.
    Request(Result<Request, ParseError>),
    /// A command (or `AUTH` response) line was longer than the limit; it was
    /// discarded up to its end. Reply 500 5.5.2 (500 5.5.6
    /// for an `AUTH` line, RFC 4954 §4).
    LineTooLong,
    /// Message octets from `DATA` (unstuffed) or from a `BDAT` chunk. How
    /// the content is split into chunks depends on how it arrived.
    DataChunk(Vec<u8>),
    /// `CRLF . CRLF` was read; the receiver is back in command mode.
    DataEnd,
    /// `CRLF . CRLF` was read, but the message exceeded
    /// [`ReceiverConfig::max_message_size`]; chunks stopped at the limit.
    /// Discard the message and reply 552. Back in command mode.
    DataTooLarge,
    /// All octets of a `BDAT` chunk were read; back in command mode.
    BdatChunkEnd {
        /// The `BDAT` command had `LAST`.
        last: bool,
    },
    /// The line after a 334 challenge (see [`Receiver::expect_auth_line`]),
    /// without its line ending. The receiver pauses again afterwards.
    AuthLine(Vec<u8>),
}

/// Where the DATA unstuffer is inside the current line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum DataState {
    /// After CRLF (or at the start).
    LineStart,
    /// Inside a line.
    Mid,
    /// Inside a line, after CR.
    Cr,
    /// A `.` at line start, held back.
    Dot,
    /// `.` CR at line start, held back.
    DotCr,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Command,
    Paused,
    Data(DataState),
    Bdat { remaining: u64, last: bool },
    AuthLine,
}

/// Result of looking for one line.
enum Line {
    /// A complete line within the limit: `start..end` in the buffer.
    Ok(usize, usize),
    /// A complete line over the limit.
    TooLong,
    /// No line end yet.
    Incomplete,
}

/// The sans-IO SMTP server-side receiver. See the module docs.
#[derive(Debug)]
pub struct Receiver {
    config: ReceiverConfig,
    mode: Mode,
    /// Input not yet consumed (a partial line, or everything while paused).
    buf: Vec<u8>,
    /// The current line is over the limit and being skipped.
    discarding: bool,
    /// DATA octets handed out so far.
    data_size: u64,
    /// DATA went over the size limit.
    data_over: bool,
}

impl Default for Receiver {
    fn default() -> Self {
        Self::new(ReceiverConfig::default())
    }
}

impl Receiver {
    /// A receiver in command mode.
    #[must_use]
    pub fn new(config: ReceiverConfig) -> Self {
        Self {
            config,
            mode: Mode::Command,
            buf: Vec::new(),
            discarding: false,
            data_size: 0,
            data_over: false,
        }
    }

    /// Feeds bytes read from the client and returns what they complete.
    /// Incomplete input is kept for the next call. While paused, all input
    /// is kept unread and unbounded: a session should not read more from
    /// the socket before it has answered and resumed.
    pub fn ingest(&mut self, bytes: &[u8]) -> Vec<Event> {
        let mut buf = std::mem::take(&mut self.buf);
        buf.extend_from_slice(bytes);
        let mut events = Vec::new();
        let mut pos = 0;
        loop {
            let more = match self.mode {
                Mode::Paused => false,
                Mode::Command => self.command(&buf, &mut pos, &mut events),
                Mode::AuthLine => self.auth_line(&buf, &mut pos, &mut events),
                Mode::Data(state) => self.data(state, &buf, &mut pos, &mut events),
                Mode::Bdat { remaining, last } => {
                    self.bdat(remaining, last, &buf, &mut pos, &mut events)
                }
            };
            if !more {
                break;
            }
        }
        buf.drain(..pos);
        self.buf = buf;
        events
    }

    /// `true` after `DATA`, `STARTTLS`, `AUTH`, `QUIT` or an `AUTH` line,
    /// until the caller says how to go on.
    #[must_use]
    pub fn is_paused(&self) -> bool {
        self.mode == Mode::Paused
    }

    /// Octets received but not yet consumed.
    #[must_use]
    pub fn pending(&self) -> usize {
        self.buf.len()
    }

    /// After replying 354 to `DATA`: read the message.
    pub fn start_data(&mut self) {
        self.mode = Mode::Data(DataState::LineStart);
        self.data_size = 0;
        self.data_over = false;
    }

    /// After the TLS handshake that followed `STARTTLS`: drop every byte
    /// received in plaintext after the command and read commands again.
    /// The caller must feed only decrypted bytes from now on.
    pub fn tls_established(&mut self) {
        self.buf.clear();
        self.discarding = false;
        self.mode = Mode::Command;
    }

    /// After a 334 challenge: the next line is a SASL response, reported as
    /// [`Event::AuthLine`].
    pub fn expect_auth_line(&mut self) {
        self.mode = Mode::AuthLine;
    }

    /// Read commands again (after refusing `DATA`/`STARTTLS`, or when
    /// `AUTH` is over).
    pub fn resume_commands(&mut self) {
        self.mode = Mode::Command;
    }

    /// Finds the next line in `buf[*pos..]` under `max` octets (CRLF counted).
    fn line(&mut self, buf: &[u8], pos: &mut usize, max: usize) -> Line {
        let rest = &buf[*pos..];
        let Some(lf) = rest.iter().position(|&b| b == b'\n') else {
            // Still incomplete: drop it once it cannot fit any more.
            if self.discarding || rest.len() >= max {
                self.discarding = true;
                *pos = buf.len();
            }
            return Line::Incomplete;
        };
        let start = *pos;
        *pos += lf + 1;
        let end = if lf > 0 && rest[lf - 1] == b'\r' {
            start + lf - 1
        } else {
            start + lf
        };
        if std::mem::take(&mut self.discarding) || end - start + 2 > max {
            Line::TooLong
        } else {
            Line::Ok(start, end)
        }
    }

    fn command(&mut self, buf: &[u8], pos: &mut usize, events: &mut Vec<Event>) -> bool {
        let (start, end) = match self.line(buf, pos, self.config.max_line_len) {
            Line::Ok(s, e) => (s, e),
            Line::TooLong => {
                events.push(Event::LineTooLong);
                return true;
            }
            Line::Incomplete => return false,
        };
        let request = Request::parse(&buf[start..end]);
        let mut zero_chunk = None;
        match request {
            Ok(Request::Data | Request::StartTls | Request::Auth { .. } | Request::Quit) => {
                self.mode = Mode::Paused;
            }
            Ok(Request::Bdat { size: 0, last }) => zero_chunk = Some(last),
            Ok(Request::Bdat { size, last }) => {
                self.mode = Mode::Bdat {
                    remaining: size,
                    last,
                };
            }
            _ => {}
        }
        events.push(Event::Request(request));
        if let Some(last) = zero_chunk {
            events.push(Event::BdatChunkEnd { last });
        }
        true
    }

    fn auth_line(&mut self, buf: &[u8], pos: &mut usize, events: &mut Vec<Event>) -> bool {
        let event = match self.line(buf, pos, self.config.max_auth_line_len) {
            Line::Ok(s, e) => Event::AuthLine(buf[s..e].to_vec()),
            Line::TooLong => Event::LineTooLong,
            Line::Incomplete => return false,
        };
        events.push(event);
        self.mode = Mode::Paused;
        false
    }

    fn data(
        &mut self,
        mut st: DataState,
        buf: &[u8],
        pos: &mut usize,
        events: &mut Vec<Event>,
    ) -> bool {
        use DataState::{Cr, Dot, DotCr, LineStart, Mid};
        let mut out = Vec::new();
        let mut ended = false;
        while let Some(&b) = buf.get(*pos) {
            *pos += 1;
            st = match (st, b) {
                (LineStart, b'.') => Dot,
                (DotCr, b'\n') => {
                    ended = true;
                    break;
                }
                (Dot, b'\r') => DotCr,
                (DotCr, _) => {
                    // ".\r" then something else: the dot was stuffing.
                    out.extend_from_slice(&[b'\r', b]);
                    if b == b'\r' { Cr } else { Mid }
                }
                (Cr, b'\n') => {
                    out.push(b);
                    LineStart
                }
                (_, b'\r') => {
                    out.push(b);
                    Cr
                }
                // Mid, Cr, Dot (dot dropped), LineStart with other octets.
                _ => {
                    out.push(b);
                    Mid
                }
            };
        }
        // Apply the size limit to what this call produced.
        let room = self.config.max_message_size.saturating_sub(self.data_size);
        if !self.data_over && out.len() as u64 > room {
            self.data_over = true;
            out.truncate(usize::try_from(room).unwrap_or(usize::MAX));
            self.data_size = self.config.max_message_size;
            if !out.is_empty() {
                events.push(Event::DataChunk(out));
            }
        } else if !self.data_over && !out.is_empty() {
            self.data_size += out.len() as u64;
            events.push(Event::DataChunk(out));
        }
        if ended {
            events.push(if self.data_over {
                Event::DataTooLarge
            } else {
                Event::DataEnd
            });
            self.mode = Mode::Command;
            true
        } else {
            self.mode = Mode::Data(st);
            false
        }
    }

    fn bdat(
        &mut self,
        remaining: u64,
        last: bool,
        buf: &[u8],
        pos: &mut usize,
        events: &mut Vec<Event>,
    ) -> bool {
        let avail = buf.len() - *pos;
        let n = usize::try_from(remaining).map_or(avail, |r| r.min(avail));
        if n > 0 {
            events.push(Event::DataChunk(buf[*pos..*pos + n].to_vec()));
            *pos += n;
        }
        let remaining = remaining - n as u64;
        if remaining == 0 {
            events.push(Event::BdatChunkEnd { last });
            self.mode = Mode::Command;
            true
        } else {
            self.mode = Mode::Bdat { remaining, last };
            false
        }
    }
}
