//! Outbound delivery: an SMTP client for relaying to a next hop, local Maildir
//! delivery when no next hop is configured, and RFC 3464 delivery status
//! notifications (bounces, delay warnings, success reports) plus retry timing.
//!
//! The module depends on no other module of the crate so it can be tested and
//! reused on its own.

pub mod dsn;
pub mod maildir;
pub mod smtp_client;

pub use smtp_client::{DeliveryError, NextHop, RcptOutcome, Recipient, TlsMode, send};
