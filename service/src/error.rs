//! The service's error type: one enum, mapped to exit statuses by the CLI
//! and to HTTP statuses by the admin API.

/// What can go wrong in an operation. An operation that returns an error
/// has changed nothing.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The request itself is wrong (a missing or malformed value, an
    /// operation the object's state does not allow).
    #[error("{0}")]
    Invalid(String),
    /// The thing asked for does not exist in this organisation.
    #[error("{0} not found")]
    NotFound(String),
    /// It exists already, or another operation got there first.
    #[error("{0}")]
    Conflict(String),
    /// Handing the result over (writing the PKCS#12 file, ...) failed; the
    /// operation was rolled back.
    #[error("{0}")]
    Output(String),
    /// Too many attempts for a key of a limit (a login name, an address,
    /// a link): try again after `retry_after` seconds. Nothing was checked.
    #[error("too many attempts: try again in {retry_after} seconds")]
    TooMany {
        /// Seconds until the limit's window ends.
        retry_after: u64,
    },
    /// No capacity to check a password now (every password-hashing slot
    /// is busy): try again in a moment. Nothing was checked.
    #[error("too busy to check the password now: try again in a moment")]
    Busy,
    /// The store (database, sealing, lock).
    #[error(transparent)]
    Store(store::StoreError),
    /// The CA (profiles, signing, PKCS#12).
    #[error(transparent)]
    Ca(#[from] ca::CaError),
}

impl From<store::StoreError> for Error {
    fn from(e: store::StoreError) -> Self {
        match e {
            store::StoreError::NotFound(s) => Error::NotFound(s),
            store::StoreError::Conflict(s) => Error::Conflict(s),
            other => Error::Store(other),
        }
    }
}

impl From<openssl::error::ErrorStack> for Error {
    fn from(e: openssl::error::ErrorStack) -> Self {
        Error::Invalid(format!("OpenSSL: {e}"))
    }
}

impl From<smime::Error> for Error {
    fn from(e: smime::Error) -> Self {
        Error::Invalid(e.to_string())
    }
}

/// Shorthand.
pub type Result<T, E = Error> = std::result::Result<T, E>;
