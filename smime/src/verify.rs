//! Verifying SignedData (RFC 5652 §5.6) and building the signer's chain to
//! trust anchors (RFC 5280 §6), with CRLs when given.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use cms::cert::CertificateChoices;
use der::Encode;
use foreign_types_shared::ForeignType;
use openssl::cms::CMSOptions;
use openssl::stack::Stack;
use openssl::x509::X509PurposeId;
use openssl::x509::store::{X509Store, X509StoreBuilder};
use openssl::x509::verify::X509VerifyFlags;
use openssl::x509::{X509, X509Crl, X509StoreContext};

use crate::cmsinfo::{self, ID_SIGNING_TIME, ID_SMIME_CAPABILITIES, Parsed};
use crate::error::{Error, Result, ossl_reason};
use crate::keyring::{cert_emails, name_to_string};

/// Trust anchors, a pool of further certificates, and CRLs.
///
/// Build it once and share it: the OpenSSL store inside is parsed once.
pub struct TrustStore {
    store: X509Store,
    pool: Vec<X509>,
    crl_check: bool,
}

/// Which certificates of a chain are checked against CRLs (when any CRLs
/// are given at all).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum CrlCheck {
    /// Every certificate below the trust anchor: the signer's CRL and each
    /// intermediate CA's (the root's ARL); a missing one is an error that
    /// names it.
    #[default]
    All,
    /// Only the signer's certificate (its issuer's CRL).
    Leaf,
}

impl std::fmt::Debug for TrustStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TrustStore")
            .field("pool", &self.pool.len())
            .field("crl_check", &self.crl_check)
            .finish()
    }
}

impl TrustStore {
    /// Trust `anchors`; use `pool` to fill gaps in chains; check every
    /// certificate against `crls` when any are given (a certificate whose
    /// issuer has no CRL then fails: "unable to get certificate CRL").
    pub fn new(anchors: Vec<X509>, pool: Vec<X509>, crls: Vec<X509Crl>) -> Result<Self> {
        Self::build(anchors, pool, crls, true, CrlCheck::All)
    }

    /// As [`TrustStore::new`], checking revocation at the levels `check`
    /// says.
    pub fn with_crl_check(
        anchors: Vec<X509>,
        pool: Vec<X509>,
        crls: Vec<X509Crl>,
        check: CrlCheck,
    ) -> Result<Self> {
        Self::build(anchors, pool, crls, true, check)
    }

    /// As [`TrustStore::new`], but chains are checked for any purpose rather
    /// than S/MIME signing (for checking CA and server certificates).
    pub fn for_any_purpose(
        anchors: Vec<X509>,
        pool: Vec<X509>,
        crls: Vec<X509Crl>,
    ) -> Result<Self> {
        Self::build(anchors, pool, crls, false, CrlCheck::All)
    }

    fn build(
        anchors: Vec<X509>,
        pool: Vec<X509>,
        crls: Vec<X509Crl>,
        smime: bool,
        check: CrlCheck,
    ) -> Result<Self> {
        let e = |e: openssl::error::ErrorStack| Error::BadKey(ossl_reason(&e));
        let mut b = X509StoreBuilder::new().map_err(e)?;
        for a in anchors {
            b.add_cert(a).map_err(e)?;
        }
        let crl_check = !crls.is_empty();
        for crl in &crls {
            // SAFETY: the store takes its own reference to the CRL.
            let ok = unsafe {
                crate::ffi::X509_STORE_add_crl(ForeignType::as_ptr(&b), ForeignType::as_ptr(crl))
            };
            if ok != 1 {
                return Err(Error::BadKey("cannot add CRL to the trust store".into()));
            }
        }
        if crl_check {
            let flags = match check {
                CrlCheck::All => X509VerifyFlags::CRL_CHECK | X509VerifyFlags::CRL_CHECK_ALL,
                CrlCheck::Leaf => X509VerifyFlags::CRL_CHECK,
            };
            b.set_flags(flags).map_err(e)?;
        }
        if smime {
            b.set_purpose(X509PurposeId::SMIME_SIGN).map_err(e)?;
        }
        Ok(TrustStore {
            store: b.build(),
            pool,
            crl_check,
        })
    }

    /// Checks that `cert` chains to a trust anchor (using the pool and
    /// `extra` as intermediates). The error says why not.
    pub fn check_certificate(
        &self,
        cert: &X509,
        extra: &[X509],
    ) -> std::result::Result<(), String> {
        let mut untrusted = Stack::new().map_err(|e| ossl_reason(&e))?;
        for c in extra.iter().chain(self.pool.iter()) {
            untrusted.push(c.clone()).map_err(|e| ossl_reason(&e))?;
        }
        match chain_check(self, cert, &untrusted) {
            None => Ok(()),
            Some(e) => Err(e),
        }
    }

    /// Further certificates (not trusted) used to build chains.
    pub fn pool(&self) -> &[X509] {
        &self.pool
    }
}

/// What verifying one signature layer found.
#[derive(Debug, Clone)]
pub struct SignatureReport {
    /// True when every signature is good and every signer chains to a trust
    /// anchor. Never true when no trust anchors were given.
    pub valid: bool,
    /// Why not, when not valid.
    pub reason: Option<String>,
    /// The signature values match the content (whatever the certificates).
    pub intact: bool,
    /// The signers' certificates were checked against trust anchors; false
    /// when none were given (decrypt without a trust store).
    pub trust_checked: bool,
    /// Detached (`multipart/signed`) rather than opaque.
    pub detached: bool,
    /// The signature only matched after normalising line ends (CRLF <-> LF):
    /// the message was stored, or signed, with Unix line ends.
    pub canonicalised: bool,
    /// One report per SignerInfo.
    pub signers: Vec<SignerReport>,
    /// Every certificate carried in the message (DER), for harvesting.
    pub certificates: Vec<Vec<u8>>,
}

/// One signer.
#[derive(Debug, Clone)]
pub struct SignerReport {
    /// The signer's certificate (DER), when found.
    pub certificate: Option<Vec<u8>>,
    /// Subject of the signer's certificate, or the identifier when not found.
    pub subject: String,
    /// E-mail addresses in the signer's certificate.
    pub emails: Vec<String>,
    /// signingTime attribute, RFC 3339.
    pub signing_time: Option<String>,
    /// signingTime as a time.
    pub signing_time_unix: Option<SystemTime>,
    /// Digest algorithm.
    pub digest_algorithm: String,
    /// Signature algorithm.
    pub signature_algorithm: String,
    /// Weak algorithms used (e.g. "SHA-1 digest").
    pub weak: Vec<String>,
    /// SMIMECapabilities, in the signer's order of preference.
    pub capabilities: Vec<String>,
    /// Why the certificate chain was not accepted, if it was not.
    pub chain_error: Option<String>,
}

/// Why a signature that was only checked against its content is not valid.
pub const NOT_CHECKED: &str = "not checked: no trust anchors given";

/// Verifies one SignedData. `detached` is the signed content for
/// `multipart/signed`; for opaque signatures the content is returned.
/// Without `trust` the signature values are checked, the certificates not:
/// the report is then never valid ([`NOT_CHECKED`]) but says whether the
/// content is intact and who signed.
pub(crate) fn verify_signed(
    parsed: Parsed,
    detached: Option<&[u8]>,
    trust: Option<&TrustStore>,
) -> Result<(SignatureReport, Vec<u8>)> {
    let sd = match parsed.signed_data() {
        Ok(sd) => sd,
        Err(e) => return verify_opaque_to_us(parsed, detached, trust, &e.to_string()),
    };
    let mut msg_certs: Vec<X509> = Vec::new();
    let mut cert_ders = Vec::new();
    if let Some(set) = &sd.certificates {
        for c in set.0.iter() {
            if let CertificateChoices::Certificate(c) = c
                && let Ok(der) = c.to_der()
                && let Ok(x) = X509::from_der(&der)
            {
                msg_certs.push(x);
                cert_ders.push(der);
            }
        }
    }
    if sd.signer_infos.0.is_empty() {
        return Err(Error::NotSmime {
            expected: "signed",
            content_type: "certs-only SignedData (no signer)".into(),
        });
    }
    let pool: &[X509] = trust.map_or(&[][..], |t| t.pool.as_slice());
    let mut untrusted = Stack::new().map_err(|e| Error::crypto("verify", e))?;
    for c in msg_certs.iter().chain(pool.iter()) {
        untrusted
            .push(c.clone())
            .map_err(|e| Error::crypto("verify", e))?;
    }

    // 1. Signatures over the content (and the signed attributes).
    let mut cms = parsed.ossl;
    let flags = CMSOptions::BINARY | CMSOptions::NO_SIGNER_CERT_VERIFY;
    let mut content = Vec::new();
    let mut canonicalised = false;
    let mut sig_result = cms.verify(Some(&untrusted), None, detached, Some(&mut content), flags);
    // Signed content travels with CRLF line ends (RFC 8551 §3.1.1), but mail
    // stored on disk, or signed by software that forgot, may use LF: try
    // the other canonical form before calling the signature bad.
    if sig_result.is_err()
        && let Some(d) = detached
    {
        let crlf = crate::mime::to_crlf(d);
        let lf = crate::mime::to_lf(&crlf);
        for alt in [&crlf[..], &lf[..]] {
            if alt == d {
                continue;
            }
            content.clear();
            let again = cms.verify(Some(&untrusted), None, Some(alt), Some(&mut content), flags);
            if again.is_ok() {
                canonicalised = true;
                sig_result = again;
                break;
            }
        }
    }
    if let Some(d) = detached {
        content = d.to_vec();
    } else if sig_result.is_err() {
        // OpenSSL hands out the content only when the signature is good;
        // a bad signature must not lose what it wraps.
        content = cmsinfo::econtent(&sd).unwrap_or_default();
    }
    let intact = sig_result.is_ok();
    let mut reason = sig_result
        .err()
        .map(|e| explain_cms_error(&ossl_reason(&e)));

    // 2. Each signer: attributes, algorithms, certificate chain.
    let mut signers = Vec::new();
    for si in sd.signer_infos.0.iter() {
        let rid = cmsinfo::signer_id(&si.sid)?;
        let cert = msg_certs
            .iter()
            .chain(pool.iter())
            .find(|c| rid.matches(c))
            .cloned();
        let digest_algorithm = cmsinfo::alg_name(&si.digest_alg.oid);
        let signature_algorithm = cmsinfo::alg_name(&si.signature_algorithm.oid);
        let mut weak = Vec::new();
        if cmsinfo::is_weak_digest(&digest_algorithm) {
            weak.push(format!("{digest_algorithm} digest"));
        }
        let (mut signing_time, mut signing_time_unix, mut capabilities) = (None, None, Vec::new());
        if let Some(attrs) = &si.signed_attrs {
            for a in attrs.iter() {
                let values: Vec<der::asn1::Any> = a.values.iter().cloned().collect();
                if a.oid == ID_SIGNING_TIME {
                    if let Some(t) = values
                        .first()
                        .and_then(|v| v.decode_as::<x509_cert::time::Time>().ok())
                    {
                        let st = UNIX_EPOCH + Duration::from_secs(t.to_unix_duration().as_secs());
                        signing_time = Some(t.to_date_time().to_string());
                        signing_time_unix = Some(st);
                    }
                } else if a.oid == ID_SMIME_CAPABILITIES {
                    capabilities = cmsinfo::capabilities(&values);
                }
            }
        }
        let chain_error = match (&cert, trust) {
            (None, _) => Some(format!("signer certificate not found ({rid})")),
            (Some(c), Some(t)) => chain_check(t, c, &untrusted),
            (Some(_), None) => None,
        };
        if reason.is_none()
            && let Some(ce) = &chain_error
        {
            reason = Some(ce.clone());
        }
        signers.push(SignerReport {
            certificate: cert.as_ref().and_then(|c| c.to_der().ok()),
            subject: cert
                .as_ref()
                .map_or_else(|| rid.to_string(), |c| name_to_string(c.subject_name())),
            emails: cert.as_ref().map(|c| cert_emails(c)).unwrap_or_default(),
            signing_time,
            signing_time_unix,
            digest_algorithm,
            signature_algorithm,
            weak,
            capabilities,
            chain_error,
        });
    }
    if reason.is_none() && trust.is_none() {
        reason = Some(NOT_CHECKED.to_string());
    }
    let report = SignatureReport {
        valid: reason.is_none(),
        reason,
        intact,
        trust_checked: trust.is_some(),
        detached: detached.is_some(),
        canonicalised,
        signers,
        certificates: cert_ders,
    };
    Ok((report, content))
}

/// For SignedData the RustCrypto types cannot read (odd but valid BER, v1
/// attribute certificates, ...): let OpenSSL do all of it, chain included,
/// and report without per-signer details.
fn verify_opaque_to_us(
    parsed: Parsed,
    detached: Option<&[u8]>,
    trust: Option<&TrustStore>,
    why: &str,
) -> Result<(SignatureReport, Vec<u8>)> {
    let mut cms = parsed.ossl;
    let mut pool = Stack::new().map_err(|e| Error::crypto("verify", e))?;
    for c in trust.map_or(&[][..], |t| t.pool.as_slice()) {
        pool.push(c.clone())
            .map_err(|e| Error::crypto("verify", e))?;
    }
    let mut content = Vec::new();
    let flags = match trust {
        Some(_) => CMSOptions::BINARY,
        None => CMSOptions::BINARY | CMSOptions::NO_SIGNER_CERT_VERIFY,
    };
    let res = cms.verify(
        Some(&pool),
        trust.map(|t| &*t.store),
        detached,
        Some(&mut content),
        flags,
    );
    if let Some(d) = detached {
        content = d.to_vec();
    }
    let intact = res.is_ok();
    let mut reason = res.err().map(|e| explain_cms_error(&ossl_reason(&e)));
    if reason.is_none() && trust.is_none() {
        reason = Some(NOT_CHECKED.to_string());
    }
    let report = SignatureReport {
        valid: reason.is_none(),
        reason,
        intact,
        trust_checked: trust.is_some(),
        detached: detached.is_some(),
        canonicalised: false,
        signers: vec![SignerReport {
            certificate: None,
            subject: format!("(signer details unavailable: {why})"),
            emails: Vec::new(),
            signing_time: None,
            signing_time_unix: None,
            digest_algorithm: String::new(),
            signature_algorithm: String::new(),
            weak: Vec::new(),
            capabilities: Vec::new(),
            chain_error: None,
        }],
        certificates: Vec::new(),
    };
    Ok((report, content))
}

/// Verifies a bare CMS SignedData (DER, BER or PEM): opaque, or detached
/// with `content` given. Returns the report and the signed content.
pub fn verify_cms(
    cms: &[u8],
    content: Option<&[u8]>,
    trust: &TrustStore,
) -> Result<(SignatureReport, Vec<u8>)> {
    crate::init();
    let parsed = cmsinfo::parse(cms)?;
    if parsed.kind != cmsinfo::CmsKind::Signed {
        return Err(Error::NotSmime {
            expected: "signed",
            content_type: format!("CMS {}", parsed.oid),
        });
    }
    verify_signed(parsed, content, Some(trust))
}

fn chain_check(trust: &TrustStore, cert: &X509, untrusted: &Stack<X509>) -> Option<String> {
    let mut ctx = match X509StoreContext::new() {
        Ok(c) => c,
        Err(e) => return Some(ossl_reason(&e)),
    };
    let res = ctx.init(&trust.store, cert, untrusted, |c| {
        let ok = c.verify_cert()?;
        Ok(if ok {
            None
        } else if c.error().as_raw() == openssl_sys::X509_V_ERR_UNABLE_TO_GET_CRL {
            // Name the list that is missing: the CRL of the failing
            // certificate's issuer.
            let whose = c
                .current_cert()
                .map(|f| name_to_string(f.issuer_name()))
                .unwrap_or_else(|| "an issuer in the chain".into());
            Some(format!(
                "no CRL from {whose} was given (revocation is checked at every level: give its CRL with --crl, or --crl-check leaf to check the signer's certificate only)"
            ))
        } else {
            Some(c.error().error_string().to_string())
        })
    });
    match res {
        Ok(None) => None,
        Ok(Some(msg)) => Some(format!(
            "certificate of {}: {msg}",
            name_to_string(cert.subject_name())
        )),
        Err(e) => Some(ossl_reason(&e)),
    }
}

/// Turns OpenSSL's CMS error reasons into a sentence a person can act on.
fn explain_cms_error(raw: &str) -> String {
    if raw.contains("unsupported algorithm") || raw.contains("decode error") {
        format!("the signer's key or algorithm cannot be used here: {raw}")
    } else if raw.contains("digest failure") || raw.contains("content verify error") {
        format!("the content does not match its signature (altered in transit?): {raw}")
    } else if raw.contains("verification failure") || raw.contains("signature failure") {
        format!("the signature value is wrong: {raw}")
    } else if raw.contains("signer certificate not found") {
        "signer certificate not found in the message or the certificate pool".to_string()
    } else if raw.contains("no content") {
        "the signature carries no content and none was given (detached signature without its part)"
            .to_string()
    } else {
        raw.to_string()
    }
}
