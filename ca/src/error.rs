//! The CA's error type.

/// What can go wrong in the CA.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CaError {
    /// Input that is not acceptable (bad CVR, e-mail, name, UUID, ...).
    #[error("{0}")]
    Invalid(String),
    /// A certificate or CRL that cannot be read, or is not of our profile.
    #[error("cannot read certificate: {0}")]
    Parse(String),
    /// A PKCS#12 file that cannot be opened or made.
    #[error("PKCS#12: {0}")]
    Pkcs12(String),
    /// Key generation or signing failed.
    #[error("crypto failure: {0}")]
    Crypto(String),
}

impl From<openssl::error::ErrorStack> for CaError {
    fn from(e: openssl::error::ErrorStack) -> Self {
        let mut parts: Vec<String> = e
            .errors()
            .iter()
            .map(|x| x.reason().unwrap_or("unknown").to_string())
            .collect();
        parts.dedup();
        CaError::Crypto(if parts.is_empty() {
            "unknown OpenSSL error".into()
        } else {
            parts.join(": ")
        })
    }
}
