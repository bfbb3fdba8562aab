//! Signing decoupled from building: profile code makes the to-be-signed
//! bytes, a [`Signer`] signs them. The CA key may live in a file, an HSM
//! (PKCS#11) or elsewhere without touching profile code.

use openssl::hash::MessageDigest;
use openssl::pkey::{PKey, Private};
use openssl::rsa::{Padding, Rsa};
use openssl::sign::RsaPssSaltlen;

use crate::der_build::{ctx_cons, oid_str, seq, uint};
use crate::error::CaError;

/// Something that can sign certificates and CRLs.
pub trait Signer: Send + Sync {
    /// DER AlgorithmIdentifier of the signatures this signer makes.
    fn algorithm(&self) -> Vec<u8>;
    /// DER SubjectPublicKeyInfo of the signing key.
    fn public_key_info(&self) -> Result<Vec<u8>, CaError>;
    /// Signs `tbs` (the DER to be signed) and returns the signature value.
    fn sign(&self, tbs: &[u8]) -> Result<Vec<u8>, CaError>;
}

const SHA256: &str = "2.16.840.1.101.3.4.2.1";
const MGF1: &str = "1.2.840.113549.1.1.8";
const RSASSA_PSS: &str = "1.2.840.113549.1.1.10";

/// The AlgorithmIdentifier for RSASSA-PSS with SHA-256, MGF1-SHA-256 and a
/// 32-byte salt (RFC 4055 §3.1), as OCES3 certificates carry it.
pub fn rsassa_pss_sha256() -> Vec<u8> {
    let sha = seq(&[&oid_str(SHA256), &[0x05, 0x00]]);
    let mgf = seq(&[&oid_str(MGF1), &sha]);
    let params = seq(&[
        &ctx_cons(0, &sha),
        &ctx_cons(1, &mgf),
        &ctx_cons(2, &uint(&[32])),
    ]);
    seq(&[&oid_str(RSASSA_PSS), &params])
}

/// An RSA key held in memory, signing with RSASSA-PSS/SHA-256.
pub struct RsaPssSigner {
    key: PKey<Private>,
}

impl std::fmt::Debug for RsaPssSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "RsaPssSigner({} bits)", self.key.bits())
    }
}

impl RsaPssSigner {
    /// Wraps an RSA private key.
    pub fn new(key: PKey<Private>) -> Result<Self, CaError> {
        if key.rsa().is_err() {
            return Err(CaError::Invalid("the CA key must be RSA".into()));
        }
        Ok(RsaPssSigner { key })
    }

    /// The key.
    pub fn key(&self) -> &PKey<Private> {
        &self.key
    }
}

impl Signer for RsaPssSigner {
    fn algorithm(&self) -> Vec<u8> {
        rsassa_pss_sha256()
    }

    fn public_key_info(&self) -> Result<Vec<u8>, CaError> {
        Ok(self.key.public_key_to_der()?)
    }

    fn sign(&self, tbs: &[u8]) -> Result<Vec<u8>, CaError> {
        let mut s = openssl::sign::Signer::new(MessageDigest::sha256(), &self.key)?;
        s.set_rsa_padding(Padding::PKCS1_PSS)?;
        s.set_rsa_pss_saltlen(RsaPssSaltlen::custom(32))?;
        s.set_rsa_mgf1_md(MessageDigest::sha256())?;
        Ok(s.sign_oneshot_to_vec(tbs)?)
    }
}

/// A new RSA key of `bits` bits (4096 root, 3072 issuing and end entities).
pub fn generate_rsa(bits: u32) -> Result<PKey<Private>, CaError> {
    Ok(PKey::from_rsa(Rsa::generate(bits)?)?)
}
