//! The sikkermail SMTP gateway.
//!
//! For now this crate holds only the pure protocol layer, [`smtp`]: a
//! sans-IO receiver that turns bytes read from a client into typed events,
//! and the reply type written back. It does **no I/O**: no sockets, no
//! runtime, no TLS, no clock. A session loop that owns the stream (and is
//! generic over it, so tests can drive it in memory) will live next to it.
//!
//! Map of the crate:
//!
//! - [`smtp::receiver`]: [`smtp::Receiver`], the byte-in/event-out state
//!   machine (command lines, `DATA` with dot-unstuffing, `BDAT` chunks,
//!   the `AUTH` continuation line, line and message limits).
//! - [`smtp::request`]: [`smtp::Request`], one parsed command line (RFC 5321
//!   §4.1 plus the ESMTP extensions the gateway speaks).
//! - [`smtp::address`]: reverse-path and forward-path syntax (RFC 5321
//!   §4.1.2, UTF-8 per RFC 6531).
//! - [`smtp::params`]: `MAIL`/`RCPT` ESMTP parameters (`SIZE`, `BODY`,
//!   `SMTPUTF8`, `RET`, `ENVID`, `NOTIFY`, `ORCPT`).
//! - [`smtp::error`]: [`smtp::ParseError`], each variant mapped to a reply.
//! - [`smtp::reply`]: [`smtp::Reply`] with RFC 3463 enhanced status codes
//!   and multi-line serialisation.

pub mod smtp;
