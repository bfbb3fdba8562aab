//! Verifying SignedData (RFC 5652 §5.6) and building the signer's chain to
//! trust anchors (RFC 5280 §6), with CRLs when given.
//!
//! # Path validation
//!
//! Chains are built and checked by OpenSSL's verifier with more than its
//! defaults: certificate policy processing (RFC 5280 §6.1: the policy
//! tree, policy mappings, requireExplicitPolicy, inhibitPolicyMapping,
//! inhibitAnyPolicy; `X509_V_FLAG_POLICY_CHECK`), and, whenever revocation
//! is checked, delta CRLs (`USE_DELTAS`) and indirect CRLs, cRLIssuer and
//! reason-partitioned CRLs (`EXTENDED_CRL_SUPPORT`). CRLs carried in the
//! message are used beside those given. The inputs of RFC 5280 §6.1.1
//! (initial policy set, explicit policy, mapping and anyPolicy inhibit) and
//! whether revocation data is required are a [`Validation`]; the
//! report names the policies a valid chain asserts
//! ([`SignerReport::policies`]).
//!
//! Against NIST's PKITS (224 S/MIME messages, default settings, revocation
//! required; `tests/engine/pkits.rs`) this gives 222 of the expected
//! verdicts. The two that differ, deliberately left to OpenSSL:
//!
//! | PKITS test | expected | ours | why |
//! |---|---|---|---|
//! | 4.1.5 Valid DSA Parameter Inheritance Test5 | valid | not valid | a DSA key without parameters inherits its issuer's: OpenSSL 3 does not implement it, and DSA signing keys are gone from mail |
//! | 4.14.30 Valid cRLIssuer Test30 | valid | not valid | the CRL's own path needs the CRL being checked; PKITS says this circular case may be skipped; OpenSSL reports a CRL path validation error (failing closed) |

use std::os::raw::c_int;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use cms::cert::CertificateChoices;
use der::Encode;
use foreign_types_shared::{ForeignType, ForeignTypeRef};
use openssl::cms::CMSOptions;
use openssl::stack::Stack;
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
    store: std::sync::Arc<X509Store>,
    pool: Vec<X509>,
    crl_check: bool,
    /// Chains are checked for S/MIME signing (set per check, not on the
    /// store: OCSP responses are verified against the same store with
    /// OpenSSL's OCSP-helper purpose).
    smime: bool,
    validation: Validation,
    /// What the store was built from, for a store of its own per check
    /// where OpenSSL verifies a whole SignedData itself (the fallback).
    inputs: std::sync::Arc<StoreInputs>,
}

/// The anchors and CRLs a [`TrustStore`] was built from.
struct StoreInputs {
    anchors: Vec<X509>,
    crls: Vec<X509Crl>,
    crl_flags: X509VerifyFlags,
}

/// How chains are validated beyond building them to an anchor (RFC 5280
/// §6.1.1 inputs). The default is RFC 5280's and PKITS' default: any
/// policy acceptable, none required explicitly, mappings and anyPolicy
/// allowed; the policy constraints the CAs themselves set are always
/// enforced, as are delta CRLs, indirect CRLs, CRL issuers and
/// reason-partitioned CRLs when CRLs are checked.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Validation {
    /// The initial policy set (dotted OIDs); empty means anyPolicy.
    pub policies: Vec<String>,
    /// initial-explicit-policy: the chain must assert a policy of the set.
    pub explicit_policy: bool,
    /// initial-policy-mapping-inhibit.
    pub inhibit_policy_mapping: bool,
    /// initial-any-policy-inhibit.
    pub inhibit_any_policy: bool,
    /// Every certificate below the anchor must have revocation data (CRLs
    /// given, carried in the message, or fetched): a missing CRL makes the
    /// chain fail even when no CRL was given at all.
    pub require_revocation: bool,
    /// Smallest RSA or DSA key (bits) a signer may have; smaller ones make
    /// the signature not valid. `None`: any (keys under 2048 bits are
    /// still reported as WEAK).
    pub min_key_bits: Option<u32>,
    /// When certificates and CRLs must be valid (RFC 5280's "current
    /// date/time" input): now, a given moment, or each signer's claimed
    /// signing time (for archived mail).
    pub time: CheckTime,
}

/// The moment a chain is checked at.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum CheckTime {
    /// The time of the check (what a gateway receiving mail does).
    #[default]
    Now,
    /// A given moment.
    At(SystemTime),
    /// Each signer's signingTime attribute: the sender's own claim, so for
    /// archives and tests, not for mail arriving now. A signer without the
    /// attribute is checked now.
    SigningTime,
}

impl std::str::FromStr for CheckTime {
    type Err = String;

    /// `now`, `signing-time`, seconds since 1970 (`1426081003` or
    /// `@1426081003`), or RFC 3339 UTC (`2015-03-11T13:36:43Z`).
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        let s = s.trim();
        match s {
            "now" => return Ok(CheckTime::Now),
            "signing-time" | "signingtime" => return Ok(CheckTime::SigningTime),
            _ => {}
        }
        let digits = s.strip_prefix('@').unwrap_or(s);
        if !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()) {
            return digits
                .parse::<u64>()
                .map(|n| CheckTime::At(UNIX_EPOCH + Duration::from_secs(n)))
                .map_err(|_| format!("time out of range: {s:?}"));
        }
        s.parse::<der::DateTime>()
            .map(|d| CheckTime::At(UNIX_EPOCH + d.unix_duration()))
            .map_err(|_| {
                format!(
                    "not a time: {s:?} (now, signing-time, seconds since 1970, or YYYY-MM-DDTHH:MM:SSZ)"
                )
            })
    }
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

impl StoreInputs {
    /// An OpenSSL store of the anchors and CRLs; with `validation`, its
    /// parameters carry it (for OpenSSL's own CMS verification).
    fn build(&self, validation: Option<(&Validation, Option<i64>)>) -> Result<X509Store> {
        let e = |e: openssl::error::ErrorStack| Error::BadKey(ossl_reason(&e));
        let mut b = X509StoreBuilder::new().map_err(e)?;
        for a in &self.anchors {
            b.add_cert(a.clone()).map_err(e)?;
        }
        for crl in &self.crls {
            // SAFETY: the store takes its own reference to the CRL.
            let ok = unsafe {
                crate::ffi::X509_STORE_add_crl(ForeignType::as_ptr(&b), ForeignType::as_ptr(crl))
            };
            if ok != 1 {
                return Err(Error::BadKey("cannot add CRL to the trust store".into()));
            }
        }
        if !self.crl_flags.is_empty() {
            b.set_flags(self.crl_flags).map_err(e)?;
        }
        if let Some((v, at)) = validation {
            let mut param = openssl::x509::verify::X509VerifyParam::new().map_err(e)?;
            param.set_flags(self.crl_flags).map_err(e)?;
            // SAFETY: our own parameters, alive across the call.
            unsafe { apply_validation(ForeignType::as_ptr(&param), v, at) };
            b.set_param(&param).map_err(e)?;
        }
        Ok(b.build())
    }
}

impl std::fmt::Debug for TrustStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TrustStore")
            .field("pool", &self.pool.len())
            .field("crl_check", &self.crl_check)
            .field("validation", &self.validation)
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
        let crl_check = !crls.is_empty();
        let crl_flags = match (crl_check, check) {
            (false, _) => X509VerifyFlags::empty(),
            (true, CrlCheck::All) => X509VerifyFlags::CRL_CHECK | X509VerifyFlags::CRL_CHECK_ALL,
            (true, CrlCheck::Leaf) => X509VerifyFlags::CRL_CHECK,
        };
        let inputs = StoreInputs {
            anchors,
            crls,
            crl_flags,
        };
        Ok(TrustStore {
            store: std::sync::Arc::new(inputs.build(None)?),
            pool,
            crl_check,
            smime,
            validation: Validation::default(),
            inputs: std::sync::Arc::new(inputs),
        })
    }

    /// The same store validating as `v` says. An OID that is not dotted
    /// decimal is refused here, not at the first message.
    pub fn with_validation(mut self, v: Validation) -> Result<Self> {
        for p in &v.policies {
            let ok = p.split('.').count() >= 2
                && p.split('.')
                    .all(|a| !a.is_empty() && a.bytes().all(|b| b.is_ascii_digit()));
            if !ok {
                return Err(Error::BadKey(format!(
                    "not a certificate policy OID (dotted decimal, e.g. 1.2.208.169.1.1.1): {p:?}"
                )));
            }
        }
        self.validation = v;
        Ok(self)
    }

    /// A second view of the same anchors, pool and CRLs validating as `v`
    /// says (cheap: the OpenSSL store is shared).
    pub fn validating(&self, v: Validation) -> Result<Self> {
        TrustStore {
            store: std::sync::Arc::clone(&self.store),
            pool: self.pool.clone(),
            crl_check: self.crl_check,
            smime: self.smime,
            validation: Validation::default(),
            inputs: std::sync::Arc::clone(&self.inputs),
        }
        .with_validation(v)
    }

    /// How chains are validated.
    pub fn validation(&self) -> &Validation {
        &self.validation
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
        chain_check(self, cert, &untrusted, None, None).map(|_| ())
    }

    /// As [`TrustStore::check_certificate`], returning the certificate
    /// policies the valid chain asserts (the user-constrained policy set,
    /// dotted OIDs; `2.5.29.32.0` is anyPolicy).
    pub fn check_certificate_policies(
        &self,
        cert: &X509,
        extra: &[X509],
    ) -> std::result::Result<Vec<String>, String> {
        let mut untrusted = Stack::new().map_err(|e| ossl_reason(&e))?;
        for c in extra.iter().chain(self.pool.iter()) {
            untrusted.push(c.clone()).map_err(|e| ossl_reason(&e))?;
        }
        chain_check(self, cert, &untrusted, None, None).map(|c| c.policies)
    }

    /// The OpenSSL store of the anchors (and given CRLs), for checks that
    /// verify against the same anchors (OCSP responses).
    pub fn x509_store(&self) -> &openssl::x509::store::X509StoreRef {
        &self.store
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
    /// The certificate policies the valid chain asserts (dotted OIDs,
    /// `2.5.29.32.0` for anyPolicy); empty when the chain was not checked,
    /// not valid, or asserts none.
    pub policies: Vec<String>,
    /// SHA-256 fingerprint (upper-case hex) of the trust anchor the valid
    /// chain ends at.
    pub anchor_sha256: Option<String>,
    /// The valid chain, DER, from the signer's certificate to the anchor
    /// (for revocation checks by the caller); empty when not valid.
    pub chain: Vec<Vec<u8>>,
}

/// What a valid chain showed.
struct ChainInfo {
    policies: Vec<String>,
    anchor_sha256: Option<String>,
    chain: Vec<Vec<u8>>,
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
    // The certificates as OpenSSL read them from the message, byte for
    // byte: a re-encoding (of a GeneralizedTime before 2050, of BER) would
    // no longer match its issuer's signature.
    let mut msg_certs: Vec<X509> = message_certs(&parsed.ossl);
    if msg_certs.is_empty()
        && let Some(set) = &sd.certificates
    {
        for c in set.0.iter() {
            if let CertificateChoices::Certificate(c) = c
                && let Ok(der) = c.to_der()
                && let Ok(x) = X509::from_der(&der)
            {
                msg_certs.push(x);
            }
        }
    }
    let cert_ders: Vec<Vec<u8>> = msg_certs.iter().filter_map(|c| c.to_der().ok()).collect();
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

    // CRLs carried in the message: used whenever revocation is checked.
    let msg_crls = CrlStack::from_cms(&parsed.ossl);
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
        // Small signer keys: reported as weak, refused under a minimum.
        let mut key_too_small = None;
        if let Some(k) = cert.as_ref().and_then(|c| c.public_key().ok()) {
            let (kind, bits, floor) = match k.id() {
                openssl::pkey::Id::RSA | openssl::pkey::Id::RSA_PSS => ("RSA", k.bits(), 2048),
                openssl::pkey::Id::DSA => ("DSA", k.bits(), 2048),
                openssl::pkey::Id::EC => ("EC", k.bits(), 256),
                _ => ("", 0, 0),
            };
            if bits > 0 && bits < floor {
                weak.push(format!("{kind}-{bits} key"));
            }
            if let Some(min) = trust.and_then(|t| t.validation.min_key_bits)
                && kind != "EC"
                && bits > 0
                && bits < min
            {
                key_too_small = Some(format!(
                    "the signer's {kind} key has {bits} bits, below the minimum of {min}"
                ));
            }
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
        let (chain_error, info) = match (&cert, trust) {
            (Some(_), Some(_)) if key_too_small.is_some() => (key_too_small.clone(), None),
            (None, _) => (Some(format!("signer certificate not found ({rid})")), None),
            (Some(c), Some(t)) => {
                match chain_check(t, c, &untrusted, msg_crls.as_ref(), signing_time_unix) {
                    Ok(i) => (None, Some(i)),
                    Err(e) => (Some(e), None),
                }
            }
            (Some(_), None) => (None, None),
        };
        let (policies, anchor_sha256, chain) = info.map_or((Vec::new(), None, Vec::new()), |i| {
            (i.policies, i.anchor_sha256, i.chain)
        });
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
            policies,
            anchor_sha256,
            chain,
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
    // OpenSSL checks the chain itself here: a store of its own carrying the
    // validation settings and moment (a signing time cannot be read here,
    // so `SigningTime` checks now).
    let own_store = match trust {
        Some(t) => Some(
            t.inputs
                .build(Some((&t.validation, check_moment(&t.validation, None))))?,
        ),
        None => None,
    };
    let res = cms.verify(
        Some(&pool),
        own_store.as_deref(),
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
            subject: match trust.map(|t| t.validation.time) {
                Some(CheckTime::SigningTime) => format!(
                    "(signer details unavailable: {why}; certificates checked now, the signing time unread)"
                ),
                _ => format!("(signer details unavailable: {why})"),
            },
            emails: Vec::new(),
            signing_time: None,
            signing_time_unix: None,
            digest_algorithm: String::new(),
            signature_algorithm: String::new(),
            weak: Vec::new(),
            capabilities: Vec::new(),
            chain_error: None,
            policies: Vec::new(),
            anchor_sha256: None,
            chain: Vec::new(),
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

/// Builds and checks `cert`'s chain; the policies it asserts, or why not.
/// RFC 5280 §6.1.1 inputs onto OpenSSL verification parameters: policy
/// processing always, CRL extensions, `v`'s policy settings, required
/// revocation, and the moment `at` (seconds since 1970; none: now).
///
/// # Safety
/// `param` must be a valid `X509_VERIFY_PARAM` owned by the caller.
unsafe fn apply_validation(
    param: *mut openssl_sys::X509_VERIFY_PARAM,
    v: &Validation,
    at: Option<i64>,
) {
    let mut flags = openssl_sys::X509_V_FLAG_POLICY_CHECK
        | openssl_sys::X509_V_FLAG_EXTENDED_CRL_SUPPORT
        | openssl_sys::X509_V_FLAG_USE_DELTAS;
    if v.explicit_policy {
        flags |= openssl_sys::X509_V_FLAG_EXPLICIT_POLICY;
    }
    if v.inhibit_policy_mapping {
        flags |= openssl_sys::X509_V_FLAG_INHIBIT_MAP;
    }
    if v.inhibit_any_policy {
        flags |= openssl_sys::X509_V_FLAG_INHIBIT_ANY;
    }
    if v.require_revocation {
        flags |= openssl_sys::X509_V_FLAG_CRL_CHECK | openssl_sys::X509_V_FLAG_CRL_CHECK_ALL;
    }
    // SAFETY: the caller's parameters; add0_policy takes the object it is
    // given (freed here when it does not).
    unsafe {
        openssl_sys::X509_VERIFY_PARAM_set_flags(param, flags);
        if let Some(t) = at {
            openssl_sys::X509_VERIFY_PARAM_set_time(param, t as _);
        }
        // OpenSSL takes "no initial policies" as an empty set, not as
        // anyPolicy: say anyPolicy (RFC 5280's default) explicitly.
        let any = [ANY_POLICY.to_string()];
        let initial = if v.policies.is_empty() {
            &any[..]
        } else {
            &v.policies[..]
        };
        for p in initial {
            let Ok(txt) = std::ffi::CString::new(p.as_str()) else {
                continue;
            };
            let obj = openssl_sys::OBJ_txt2obj(txt.as_ptr(), 1);
            if !obj.is_null() && crate::ffi::X509_VERIFY_PARAM_add0_policy(param, obj) != 1 {
                openssl_sys::ASN1_OBJECT_free(obj);
            }
        }
    }
}

/// The moment `v` checks at, given a signer's signing time.
fn check_moment(v: &Validation, signing_time: Option<SystemTime>) -> Option<i64> {
    match v.time {
        CheckTime::Now => None,
        CheckTime::At(t) => Some(t),
        CheckTime::SigningTime => signing_time,
    }
    .map(|t| match t.duration_since(UNIX_EPOCH) {
        Ok(d) => d.as_secs() as i64,
        Err(e) => -(e.duration().as_secs() as i64),
    })
}

fn chain_check(
    trust: &TrustStore,
    cert: &X509,
    untrusted: &Stack<X509>,
    msg_crls: Option<&CrlStack>,
    signing_time: Option<SystemTime>,
) -> std::result::Result<ChainInfo, String> {
    let mut ctx = X509StoreContext::new().map_err(|e| ossl_reason(&e))?;
    let v = &trust.validation;
    let at = check_moment(v, signing_time);
    let res = ctx.init(&trust.store, cert, untrusted, |c| {
        let raw = ForeignTypeRef::as_ptr(c);
        // SAFETY: `raw` is the initialised context, alive for this closure;
        // the parameters belong to it; add0_policy takes the object it is
        // given; set0_crls borrows a stack that outlives the context.
        unsafe {
            if trust.smime {
                crate::ffi::X509_STORE_CTX_set_purpose(raw, openssl_sys::X509_PURPOSE_SMIME_SIGN);
                crate::ffi::X509_STORE_CTX_set_verify_cb(raw, Some(any_eku_is_smime));
            }
            apply_validation(crate::ffi::X509_STORE_CTX_get0_param(raw), v, at);
            if let Some(crls) = msg_crls {
                crate::ffi::X509_STORE_CTX_set0_crls(raw, crls.0);
            }
        }
        let ok = c.verify_cert()?;
        Ok(if ok {
            // SAFETY: the tree belongs to the context and is read before
            // the context is cleaned up.
            let anchor_sha256 = c
                .chain()
                .and_then(|ch| ch.iter().last())
                .and_then(|a| a.digest(openssl::hash::MessageDigest::sha256()).ok())
                .map(|d| d.iter().map(|b| format!("{b:02X}")).collect());
            let chain = c
                .chain()
                .map(|ch| ch.iter().filter_map(|x| x.to_der().ok()).collect())
                .unwrap_or_default();
            Ok(ChainInfo {
                policies: unsafe { user_policies(raw) },
                anchor_sha256,
                chain,
            })
        } else if c.error().as_raw() == openssl_sys::X509_V_ERR_UNABLE_TO_GET_CRL {
            // Name the list that is missing: the CRL of the failing
            // certificate's issuer.
            let whose = c
                .current_cert()
                .map(|f| name_to_string(f.issuer_name()))
                .unwrap_or_else(|| "an issuer in the chain".into());
            Err(if trust.crl_check {
                format!(
                    "no CRL from {whose} was given (revocation is checked at every level: give its CRL with --crl, or --crl-check leaf to check the signer's certificate only)"
                )
            } else {
                format!(
                    "revocation unavailable: no CRL from {whose} (none was given or carried in the message)"
                )
            })
        } else if c.error().as_raw() == openssl_sys::X509_V_ERR_NO_EXPLICIT_POLICY {
            Err("no acceptable certificate policy: the chain asserts none of the policies required (by a CA in the chain or by this verifier)".to_string())
        } else {
            Err(c.error().error_string().to_string())
        })
    });
    match res {
        Ok(Ok(p)) => Ok(p),
        Ok(Err(msg)) => Err(format!(
            "certificate of {}: {msg}",
            name_to_string(cert.subject_name())
        )),
        Err(e) => Err(ossl_reason(&e)),
    }
}

/// RFC 8550 §4.4.4: a signer certificate whose extendedKeyUsage has
/// anyExtendedKeyUsage is acceptable for S/MIME, which OpenSSL's
/// `smime_sign` purpose refuses. Accept exactly that: the purpose error on
/// the signer's own certificate when its EKU has anyExtendedKeyUsage and
/// its keyUsage (if any) allows signing. An EKU with neither
/// emailProtection nor anyExtendedKeyUsage stays refused.
unsafe extern "C" fn any_eku_is_smime(ok: c_int, ctx: *mut openssl_sys::X509_STORE_CTX) -> c_int {
    if ok != 0 {
        return ok;
    }
    // SAFETY: OpenSSL calls this with the context being verified; the
    // current certificate belongs to it.
    unsafe {
        if openssl_sys::X509_STORE_CTX_get_error(ctx) != openssl_sys::X509_V_ERR_INVALID_PURPOSE
            || openssl_sys::X509_STORE_CTX_get_error_depth(ctx) != 0
        {
            return ok;
        }
        let x = openssl_sys::X509_STORE_CTX_get_current_cert(ctx);
        if x.is_null() {
            return ok;
        }
        const XKU_ANYEKU: u32 = 0x100;
        const KU_SIGN: u32 = 0x80 | 0x40; // digitalSignature, nonRepudiation
        let xku = openssl_sys::X509_get_extended_key_usage(x);
        let ku = openssl_sys::X509_get_key_usage(x);
        // u32::MAX: no such extension.
        if xku != u32::MAX && xku & XKU_ANYEKU != 0 && (ku == u32::MAX || ku & KU_SIGN != 0) {
            openssl_sys::X509_STORE_CTX_set_error(ctx, openssl_sys::X509_V_OK);
            return 1;
        }
        ok
    }
}

/// The user-constrained policy set of a validated context (dotted OIDs).
///
/// # Safety
/// `ctx` must be a context whose verification has just run.
unsafe fn user_policies(ctx: *mut openssl_sys::X509_STORE_CTX) -> Vec<String> {
    let mut out = Vec::new();
    // SAFETY: per the caller; every pointer read belongs to the tree.
    unsafe {
        let tree = crate::ffi::X509_STORE_CTX_get0_policy_tree(ctx);
        if tree.is_null() {
            return out;
        }
        let nodes = crate::ffi::X509_policy_tree_get0_user_policies(tree);
        if nodes.is_null() {
            return out;
        }
        for i in 0..openssl_sys::OPENSSL_sk_num(nodes) {
            let node =
                openssl_sys::OPENSSL_sk_value(nodes, i) as *const crate::ffi::X509_POLICY_NODE;
            let obj = crate::ffi::X509_policy_node_get0_policy(node);
            if obj.is_null() {
                continue;
            }
            let mut buf = [0 as std::os::raw::c_char; 128];
            let n = openssl_sys::OBJ_obj2txt(buf.as_mut_ptr(), buf.len() as i32, obj, 1);
            if n > 0 && (n as usize) < buf.len() {
                let s = std::ffi::CStr::from_ptr(buf.as_ptr())
                    .to_string_lossy()
                    .into_owned();
                if !out.contains(&s) {
                    out.push(s);
                }
            }
        }
    }
    out.sort();
    out
}

/// The certificates a CMS message carries, as OpenSSL decoded them.
fn message_certs(cms: &openssl::cms::CmsContentInfo) -> Vec<X509> {
    // SAFETY: CMS_get1_certs returns a new stack holding its own
    // references (or null); the Stack takes ownership and frees both.
    unsafe {
        let sk = crate::ffi::CMS_get1_certs(ForeignType::as_ptr(cms));
        if sk.is_null() {
            return Vec::new();
        }
        let stack: Stack<X509> = ForeignType::from_ptr(sk as *mut _);
        stack.iter().map(|c| c.to_owned()).collect()
    }
}

/// The CRLs a CMS message carries (OpenSSL's own stack; freed on drop).
pub(crate) struct CrlStack(*mut openssl_sys::OPENSSL_STACK);

impl CrlStack {
    /// `None` when the message carries no CRLs.
    fn from_cms(cms: &openssl::cms::CmsContentInfo) -> Option<Self> {
        // SAFETY: CMS_get1_crls returns a new stack (with its own
        // references) or null.
        let sk = unsafe { crate::ffi::CMS_get1_crls(ForeignType::as_ptr(cms)) };
        if sk.is_null() {
            return None;
        }
        // SAFETY: `sk` is a valid stack.
        if unsafe { openssl_sys::OPENSSL_sk_num(sk) } <= 0 {
            drop(CrlStack(sk));
            return None;
        }
        Some(CrlStack(sk))
    }
}

impl Drop for CrlStack {
    fn drop(&mut self) {
        unsafe extern "C" fn free_crl(p: *mut std::ffi::c_void) {
            // SAFETY: every element is an X509_CRL this stack holds a
            // reference to.
            unsafe { openssl_sys::X509_CRL_free(p as *mut openssl_sys::X509_CRL) }
        }
        // SAFETY: the stack is ours; each element is freed once.
        unsafe { openssl_sys::OPENSSL_sk_pop_free(self.0, Some(free_crl)) }
    }
}

/// Turns OpenSSL's CMS error reasons into a sentence a person can act on.
fn explain_cms_error(raw: &str) -> String {
    if raw.contains("unknown digest algorithm") {
        let alg = raw
            .split("Algorithm (")
            .nth(1)
            .and_then(|r| r.split(' ').next())
            .filter(|a| !a.is_empty())
            .map_or_else(String::new, |a| format!(" ({})", a.to_uppercase()));
        format!(
            "the message's digest algorithm{alg} is not supported (obsolete or unknown): its signature cannot be checked: {raw}"
        )
    } else if raw.contains("unsupported algorithm") || raw.contains("decode error") {
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

/// anyPolicy (RFC 5280 §4.2.1.4).
pub const ANY_POLICY: &str = "2.5.29.32.0";

/// The name of a certificate policy OID this project knows (OCES3, ETSI,
/// anyPolicy), for reports.
pub fn policy_label(oid: &str) -> Option<&'static str> {
    Some(match oid {
        "2.5.29.32.0" => "anyPolicy",
        "1.2.208.169.1.1.1.3.7" => "OCES3 organisation certificate",
        "1.2.208.169.1.1.1.2.7" => "OCES3 person certificate",
        "0.4.0.2042.1.1" => "ETSI NCP",
        "0.4.0.2042.1.2" => "ETSI NCP+",
        "0.4.0.2042.1.3" => "ETSI LCP",
        "0.4.0.194112.1.0" => "ETSI QCP-n",
        "0.4.0.194112.1.1" => "ETSI QCP-l",
        _ => return None,
    })
}
