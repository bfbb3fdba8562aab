//! Shared IMAP mailboxes: decrypting in place, the archive and the live
//! inbox.
//!
//! A law firm's shared mailbox holds years of mail encrypted to its
//! organisation certificate (OCES2 and OCES3) and keeps receiving some
//! that bypassed the gateway. For each configured folder the worker:
//! 1. finds S/MIME-encrypted messages by BODYSTRUCTURE
//!    (`application/(x-)pkcs7-mime`, enveloped or authEnveloped data),
//!    above the folder's checkpoint;
//! 2. fetches them in batches and decrypts them in parallel (rayon) with
//!    every key the organisation ever held ([`crate::process::inbound`],
//!    as the SMTP side does);
//! 3. APPENDs the decrypted copy to the same folder with the original's
//!    flags and INTERNALDATE, the `X-Sikkermail-*` headers, and an
//!    `X-Sikkermail-Original` field naming the original (UIDVALIDITY, UID,
//!    SHA-256 of its bytes);
//! 4. only after the APPEND is confirmed (APPENDUID, or a search for that
//!    field) moves the original to the archive folder (MOVE, or COPY +
//!    `\Deleted` + UID EXPUNGE);
//! 5. moves the checkpoint (UIDVALIDITY and last UID) in the store.
//!
//! Killed at any point, the next run loses and duplicates nothing: a copy
//! whose original is still in the folder is found by its
//! `X-Sikkermail-Original` field (and its digest checked) and the original
//! is then only archived. A folder is worked on by one process at a time
//! (a lease in the store): `serve` on several nodes and a `sikkermail
//! mailbox decrypt` never process the same folder at once.
//!
//! Map: [`conn`] (connection, TLS, APPEND with APPENDUID, MOVE), [`detect`]
//! (pure: BODYSTRUCTURE, flags, dates, folder names, the original's
//! field), [`run`] (one pass over a folder, reconnection, the summary),
//! [`live`] (`serve`'s watchers: IDLE or polling, backoff).

pub mod conn;
pub mod detect;
pub mod live;
pub mod run;

pub use run::{Outcome, Progress, RunOptions, Summary};

/// What went wrong talking to the IMAP server.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum ImapError {
    /// The server could not be reached (refused, timed out, no greeting).
    /// Worth retrying.
    #[error("cannot connect to the IMAP server {0}")]
    Connect(String),
    /// The connection broke during the work. Worth retrying.
    #[error("the IMAP connection was lost: {0}")]
    Lost(String),
    /// TLS failed: the certificate is not trusted, or the handshake failed.
    #[error("TLS with the IMAP server failed: {0}")]
    Tls(String),
    /// The server refused the login.
    #[error("{0}")]
    Login(String),
    /// The server refused a command (NO or BAD).
    #[error("the IMAP server refused: {0}")]
    Protocol(String),
    /// The configuration cannot work (a CA file, a folder name, no password).
    #[error("{0}")]
    Config(String),
    /// The store failed (checkpoint, lease, password).
    #[error("{0}")]
    Store(String),
    /// Another process holds the folder's lease.
    #[error("{0}")]
    Busy(String),
}

impl ImapError {
    /// True for a dropped or unreachable connection: reconnect and go on.
    pub fn retryable(&self) -> bool {
        matches!(self, ImapError::Connect(_) | ImapError::Lost(_))
    }
}

impl From<async_imap::error::Error> for ImapError {
    fn from(e: async_imap::error::Error) -> Self {
        use async_imap::error::Error as E;
        match e {
            E::Io(e) => ImapError::Lost(e.to_string()),
            E::ConnectionLost => ImapError::Lost("the server closed the connection".into()),
            E::No(s) | E::Bad(s) => ImapError::Protocol(conn::short(&s)),
            other => ImapError::Protocol(conn::short(&other.to_string())),
        }
    }
}

impl From<std::io::Error> for ImapError {
    fn from(e: std::io::Error) -> Self {
        ImapError::Lost(e.to_string())
    }
}

impl From<service::Error> for ImapError {
    fn from(e: service::Error) -> Self {
        match e {
            service::Error::Conflict(s) => ImapError::Busy(s),
            other => ImapError::Store(other.to_string()),
        }
    }
}
