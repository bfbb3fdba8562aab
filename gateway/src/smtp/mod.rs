//! SMTP server side: a sans-IO core that parses what the client sends and
//! formats what the server answers, and [`session`], the one part that does
//! I/O, driving it over a stream. See the crate docs for the map.
//!
//! A session loop uses it like this: read bytes, hand them to
//! [`Receiver::ingest`], answer each [`Event`] with a [`Reply`], and after
//! the commands that change what the next bytes mean (`DATA`, `STARTTLS`,
//! `AUTH`, `QUIT`) tell the receiver how to continue
//! ([`Receiver::start_data`], [`Receiver::tls_established`],
//! [`Receiver::expect_auth_line`], [`Receiver::resume_commands`]).

pub mod address;
pub mod error;
pub mod params;
pub mod receiver;
pub mod reply;
pub mod request;
pub mod session;
pub mod spool;

pub use address::{Address, ForwardPath, ReversePath};
pub use error::ParseError;
pub use params::{Body, MailParams, Notify, Orcpt, RcptParams, Ret};
pub use receiver::{Event, Receiver, ReceiverConfig};
pub use reply::{EnhancedCode, Reply};
pub use request::Request;
pub use session::{
    AcceptError, Direction, EndReason, Envelope, Handler, SessionConfig, SessionInfo,
    SessionOutcome, run, run_with_shutdown,
};
