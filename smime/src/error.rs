//! The one error type of the crate.

/// Everything that can go wrong in the S/MIME engine.
///
/// [`Error::is_crypto_failure`] separates "the cryptography said no" (wrong
/// key, bad signature, corrupt ciphertext) from "the input is not what it
/// should be" (not S/MIME, broken MIME, unreadable CMS, bad key file).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The message (or layer) is not an S/MIME structure this operation handles.
    #[error("not an S/MIME {expected} message (Content-Type: {content_type})")]
    NotSmime {
        /// What the operation looked for.
        expected: &'static str,
        /// The Content-Type that was found.
        content_type: String,
    },
    /// The MIME structure is broken: missing boundary, no signature part, ...
    #[error("malformed MIME: {0}")]
    Mime(String),
    /// A body could not be transfer-decoded (bad base64, unknown encoding).
    #[error("cannot decode {encoding} body: {detail}")]
    TransferEncoding {
        /// The Content-Transfer-Encoding.
        encoding: String,
        /// What was wrong.
        detail: String,
    },
    /// The CMS (PKCS#7) structure cannot be parsed.
    #[error("malformed CMS structure: {0}")]
    MalformedCms(String),
    /// A CMS feature or algorithm this engine does not handle.
    #[error("unsupported: {0}")]
    Unsupported(String),
    /// No key in the keyring matches any recipient of an encrypted message.
    #[error("no key in the keyring matches any recipient: {}", recipients.join("; "))]
    NoMatchingKey {
        /// One line per recipient, e.g. `issuer=CN=..., serial=0A1B`.
        recipients: Vec<String>,
    },
    /// A key matched a recipient but decryption failed (corrupt ciphertext,
    /// wrong key behind a matching identifier, bad authentication tag).
    #[error("decryption failed: {0}")]
    DecryptFailed(String),
    /// The signature did not verify (tampered content, untrusted or
    /// expired or revoked signer, ...). The text says why.
    #[error("signature invalid: {0}")]
    InvalidSignature(String),
    /// A key or certificate given to the engine is unusable.
    #[error("bad key or certificate: {0}")]
    BadKey(String),
    /// Encryption or signing failed inside OpenSSL.
    #[error("{operation} failed: {detail}")]
    Crypto {
        /// What was being done.
        operation: &'static str,
        /// OpenSSL's reason.
        detail: String,
    },
    /// Writing the output failed.
    #[error("write failed: {0}")]
    Io(#[from] std::io::Error),
}

impl Error {
    /// True when the cryptographic operation itself failed (exit status 1 in
    /// the command line), false for unusable input or usage (exit status 2).
    pub fn is_crypto_failure(&self) -> bool {
        matches!(
            self,
            Error::NoMatchingKey { .. } | Error::DecryptFailed(_) | Error::InvalidSignature(_)
        )
    }

    pub(crate) fn crypto(operation: &'static str, e: openssl::error::ErrorStack) -> Self {
        Error::Crypto {
            operation,
            detail: ossl_reason(&e),
        }
    }
}

/// The most useful line of an OpenSSL error stack: its reasons, de-duplicated.
pub(crate) fn ossl_reason(e: &openssl::error::ErrorStack) -> String {
    let mut parts: Vec<String> = Vec::new();
    for err in e.errors() {
        let mut s = err.reason().unwrap_or("unknown error").to_string();
        if let Some(data) = err.data() {
            s.push_str(" (");
            s.push_str(data);
            s.push(')');
        }
        if !parts.contains(&s) {
            parts.push(s);
        }
    }
    if parts.is_empty() {
        "unknown OpenSSL error".to_string()
    } else {
        parts.join(": ")
    }
}

/// Result with the crate's error.
pub type Result<T, E = Error> = std::result::Result<T, E>;
