//! Issuance: the to-be-signed certificate and CRL are built here from a
//! [`Profile`], signed through a [`Signer`], and assembled (RFC 5280 §4.1,
//! §5.1).

use openssl::x509::{X509, X509Ref};

use crate::der_build::{bit_string, ctx_cons, seq, time, uint};
use crate::error::CaError;
use crate::profile::{
    IssuancePolicy, Profile, aki_extension, extension, key_identifier, ski_extension,
};
use crate::signer::Signer;

/// A certificate just issued.
#[derive(Debug, Clone)]
pub struct Issued {
    /// DER.
    pub der: Vec<u8>,
    /// Serial number, upper-case hex.
    pub serial_hex: String,
    /// notBefore, seconds since the epoch.
    pub not_before: i64,
    /// notAfter, seconds since the epoch.
    pub not_after: i64,
}

/// A fresh positive 128-bit serial number (RFC 5280 §4.1.2.2: unique,
/// at most 20 octets; random makes it unpredictable too).
pub fn random_serial() -> Result<Vec<u8>, CaError> {
    let mut s = vec![0u8; 16];
    openssl::rand::rand_bytes(&mut s)?;
    s[0] &= 0x7f;
    s[0] |= 0x01; // never a leading zero octet
    Ok(s)
}

/// Upper-case hex.
pub fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02X}")).collect()
}

/// The issuing side of a certificate: its certificate (None for a
/// self-signed root) and its signer.
pub struct IssuerRef<'a> {
    /// The issuer's certificate; `None` when issuing a self-signed root.
    pub cert: Option<&'a X509Ref>,
    /// The issuer's signer.
    pub signer: &'a dyn Signer,
}

impl std::fmt::Debug for IssuerRef<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IssuerRef")
            .field("self_signed", &self.cert.is_none())
            .finish()
    }
}

/// Issues a certificate of `profile` for the key `subject_spki` (DER
/// SubjectPublicKeyInfo), valid from `not_before` (seconds since the epoch).
pub fn issue(
    profile: &dyn Profile,
    subject_spki: &[u8],
    issuer: &IssuerRef<'_>,
    policy: &IssuancePolicy,
    not_before: i64,
) -> Result<Issued, CaError> {
    policy.validate()?;
    let serial = random_serial()?;
    let mut not_after = not_before + profile.validity_seconds();
    // Nothing outlives its issuer (RFC 5280 §6.1.3: an expired issuer
    // breaks the chain).
    if let Some(c) = issuer.cert {
        not_after = not_after.min(asn1_unix(c.not_after()));
    }
    let subject = profile.subject();
    let (issuer_name, issuer_key_id) = match issuer.cert {
        Some(c) => (c.subject_name().to_der()?, issuer_key_id(c)?),
        None => (
            subject.clone(),
            key_identifier(&issuer.signer.public_key_info()?)?,
        ),
    };
    let mut exts = profile.extensions(policy);
    exts.push(ski_extension(subject_spki)?);
    exts.push(aki_extension(&issuer_key_id));
    let ext_refs: Vec<&[u8]> = exts.iter().map(Vec::as_slice).collect();
    let tbs = seq(&[
        &ctx_cons(0, &uint(&[2])),
        &uint(&serial),
        &issuer.signer.algorithm(),
        &issuer_name,
        &seq(&[&time(not_before), &time(not_after)]),
        &subject,
        subject_spki,
        &ctx_cons(3, &seq(&ext_refs)),
    ]);
    let sig = issuer.signer.sign(&tbs)?;
    let der = seq(&[&tbs, &issuer.signer.algorithm(), &bit_string(&sig)]);
    // Parse it back: what we hand out must be a certificate OpenSSL reads.
    X509::from_der(&der)
        .map_err(|e| CaError::Crypto(format!("issued certificate does not parse: {e}")))?;
    Ok(Issued {
        der,
        serial_hex: hex(&serial),
        not_before,
        not_after,
    })
}

fn issuer_key_id(c: &X509Ref) -> Result<Vec<u8>, CaError> {
    match c.subject_key_id() {
        Some(id) => Ok(id.as_slice().to_vec()),
        None => key_identifier(&c.public_key()?.public_key_to_der()?),
    }
}

/// Why a certificate was revoked (RFC 5280 §5.3.1 CRLReason).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RevocationReason {
    /// unspecified (0)
    Unspecified,
    /// keyCompromise (1)
    KeyCompromise,
    /// affiliationChanged (3)
    AffiliationChanged,
    /// superseded (4)
    Superseded,
    /// cessationOfOperation (5)
    CessationOfOperation,
}

impl RevocationReason {
    /// RFC 5280's name.
    pub fn as_str(self) -> &'static str {
        match self {
            RevocationReason::Unspecified => "unspecified",
            RevocationReason::KeyCompromise => "keyCompromise",
            RevocationReason::AffiliationChanged => "affiliationChanged",
            RevocationReason::Superseded => "superseded",
            RevocationReason::CessationOfOperation => "cessationOfOperation",
        }
    }

    fn code(self) -> u8 {
        match self {
            RevocationReason::Unspecified => 0,
            RevocationReason::KeyCompromise => 1,
            RevocationReason::AffiliationChanged => 3,
            RevocationReason::Superseded => 4,
            RevocationReason::CessationOfOperation => 5,
        }
    }

    /// Parses RFC 5280's name.
    pub fn parse(s: &str) -> Result<Self, CaError> {
        Ok(match s {
            "unspecified" => RevocationReason::Unspecified,
            "keyCompromise" => RevocationReason::KeyCompromise,
            "affiliationChanged" => RevocationReason::AffiliationChanged,
            "superseded" => RevocationReason::Superseded,
            "cessationOfOperation" => RevocationReason::CessationOfOperation,
            other => {
                return Err(CaError::Invalid(format!(
                    "unknown revocation reason {other:?}: use unspecified, keyCompromise, affiliationChanged, superseded or cessationOfOperation"
                )));
            }
        })
    }
}

/// One revoked certificate on a CRL.
#[derive(Debug, Clone)]
pub struct RevokedEntry {
    /// Serial number, hex.
    pub serial_hex: String,
    /// When, seconds since the epoch.
    pub revoked_at: i64,
    /// Why.
    pub reason: RevocationReason,
}

/// Builds and signs a CRL (RFC 5280 §5) of `issuer` listing `revoked`.
pub fn crl(
    issuer: &X509Ref,
    signer: &dyn Signer,
    revoked: &[RevokedEntry],
    crl_number: u64,
    this_update: i64,
    next_update: i64,
) -> Result<Vec<u8>, CaError> {
    let mut entries = Vec::new();
    for r in revoked {
        let serial = parse_hex(&r.serial_hex)?;
        // RFC 5280 §5.3.1: the reasonCode SHOULD be absent for unspecified.
        let exts = if r.reason == RevocationReason::Unspecified {
            Vec::new()
        } else {
            seq(&[&extension(
                "2.5.29.21",
                false,
                &[0x0a, 0x01, r.reason.code()],
            )])
        };
        entries.push(seq(&[&uint(&serial), &time(r.revoked_at), &exts]));
    }
    let entry_refs: Vec<&[u8]> = entries.iter().map(Vec::as_slice).collect();
    let crl_exts = seq(&[
        &aki_extension(&issuer_key_id(issuer)?),
        &extension("2.5.29.20", false, &uint(&crl_number.to_be_bytes())),
    ]);
    let mut parts: Vec<Vec<u8>> = vec![
        uint(&[1]),
        signer.algorithm(),
        issuer.subject_name().to_der()?,
        time(this_update),
        time(next_update),
    ];
    if !entries.is_empty() {
        parts.push(seq(&entry_refs));
    }
    parts.push(ctx_cons(0, &crl_exts));
    let refs: Vec<&[u8]> = parts.iter().map(Vec::as_slice).collect();
    let tbs = seq(&refs);
    let sig = signer.sign(&tbs)?;
    let der = seq(&[&tbs, &signer.algorithm(), &bit_string(&sig)]);
    openssl::x509::X509Crl::from_der(&der)
        .map_err(|e| CaError::Crypto(format!("CRL does not parse: {e}")))?;
    Ok(der)
}

fn parse_hex(s: &str) -> Result<Vec<u8>, CaError> {
    if s.is_empty() || !s.chars().all(|c| c.is_ascii_hexdigit()) {
        return Err(CaError::Invalid(format!("bad serial {s:?}")));
    }
    let s = if s.len() % 2 == 1 {
        format!("0{s}")
    } else {
        s.to_string()
    };
    (0..s.len())
        .step_by(2)
        .map(|i| {
            u8::from_str_radix(&s[i..i + 2], 16)
                .map_err(|_| CaError::Invalid(format!("bad serial {s:?}")))
        })
        .collect()
}

/// An ASN.1 time as seconds since the epoch.
pub fn asn1_unix(t: &openssl::asn1::Asn1TimeRef) -> i64 {
    openssl::asn1::Asn1Time::from_unix(0)
        .ok()
        .and_then(|epoch| epoch.diff(t).ok())
        .map_or(0, |d| i64::from(d.days) * 86_400 + i64::from(d.secs))
}
