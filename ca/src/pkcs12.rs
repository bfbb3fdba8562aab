//! PKCS#12 export and import (RFC 7292).
//!
//! Two export flavours, because mail clients differ: **modern**
//! (PBES2 with AES-256-CBC and PBKDF2-HMAC-SHA256, HMAC-SHA256 MAC) for
//! current Outlook, Apple Mail, Thunderbird and NSS; **compatible**
//! (pbeWithSHAAnd3-KeyTripleDES-CBC, SHA-1 MAC) for older Outlook, macOS and
//! gpgsm 2.2, which cannot read the modern one.

use openssl::hash::MessageDigest;
use openssl::nid::Nid;
use openssl::pkcs12::Pkcs12;
use openssl::pkey::{PKey, PKeyRef, Private};
use openssl::stack::Stack;
use openssl::x509::{X509, X509Ref};

use crate::error::CaError;

/// Which protection to use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Flavour {
    /// AES-256-CBC, PBKDF2-SHA256, SHA-256 MAC.
    #[default]
    Modern,
    /// 3DES, SHA-1 MAC.
    Compatible,
}

/// Makes a PKCS#12 file of `key`, `cert` and the `chain` (issuing CA, root),
/// with `friendly_name`, protected by `password`.
pub fn export(
    key: &PKeyRef<Private>,
    cert: &X509Ref,
    chain: &[X509],
    friendly_name: &str,
    password: &str,
    flavour: Flavour,
) -> Result<Vec<u8>, CaError> {
    if password.is_empty() {
        return Err(CaError::Invalid(
            "a PKCS#12 password must not be empty".into(),
        ));
    }
    let mut ca = Stack::new()?;
    for c in chain {
        ca.push(c.clone())?;
    }
    let mut b = Pkcs12::builder();
    b.name(friendly_name)
        .pkey(key)
        .cert(cert)
        .ca(ca)
        .mac_iter(2048);
    match flavour {
        Flavour::Modern => {
            b.key_algorithm(Nid::AES_256_CBC)
                .cert_algorithm(Nid::AES_256_CBC)
                .mac_md(MessageDigest::sha256());
        }
        Flavour::Compatible => {
            b.key_algorithm(Nid::PBE_WITHSHA1AND3_KEY_TRIPLEDES_CBC)
                .cert_algorithm(Nid::PBE_WITHSHA1AND3_KEY_TRIPLEDES_CBC)
                .mac_md(MessageDigest::sha1());
        }
    }
    let p12 = b
        .build2(password)
        .map_err(|e| CaError::Pkcs12(format!("cannot build: {e}")))?;
    Ok(p12.to_der()?)
}

/// What a PKCS#12 file held.
pub struct Imported {
    /// The private key.
    pub key: PKey<Private>,
    /// The certificate belonging to the key.
    pub cert: X509,
    /// The other certificates (chain).
    pub chain: Vec<X509>,
}

impl std::fmt::Debug for Imported {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Imported")
            .field("chain", &self.chain.len())
            .finish_non_exhaustive()
    }
}

/// Opens a PKCS#12 file. Old RC2-40 files (NemID exports) need OpenSSL's
/// `legacy` provider, which the program loads at start.
pub fn import(der: &[u8], password: &str) -> Result<Imported, CaError> {
    let p12 = Pkcs12::from_der(der)
        .map_err(|_| CaError::Pkcs12("the file is not a PKCS#12 (.p12/.pfx) file".into()))?;
    let parsed = p12.parse2(password).map_err(|e| {
        let text = e.to_string();
        if text.contains("mac verify failure") || text.contains("invalid password") {
            CaError::Pkcs12("wrong password".into())
        } else if text.contains("unsupported") {
            CaError::Pkcs12(format!(
                "uses an algorithm this build cannot open (legacy provider missing?): {text}"
            ))
        } else {
            CaError::Pkcs12(format!("cannot open (wrong password?): {text}"))
        }
    })?;
    let key = parsed
        .pkey
        .ok_or_else(|| CaError::Pkcs12("holds no private key".into()))?;
    let mut certs: Vec<X509> = parsed.cert.into_iter().collect();
    if let Some(ca) = parsed.ca {
        certs.extend(ca);
    }
    let pos = certs
        .iter()
        .position(|c| c.public_key().is_ok_and(|p| p.public_eq(&key)))
        .ok_or_else(|| CaError::Pkcs12("holds no certificate for its private key".into()))?;
    let cert = certs.remove(pos);
    Ok(Imported {
        key,
        cert,
        chain: certs,
    })
}
