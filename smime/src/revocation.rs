//! Revocation data a certificate names, checked (pure: the caller fetches).
//!
//! - [`urls`]: where a certificate says its status is (OCSP responders in
//!   authorityInfoAccess, CRL distribution points), `http://` only.
//! - [`OcspQuery`]: an OCSP request (RFC 6960) for one certificate, with a
//!   nonce, and the check of the answer: status, signature by the issuer or
//!   its delegated responder (verified to the trust anchors), the nonce,
//!   thisUpdate/nextUpdate.
//! - [`check_crl`]: a fetched CRL: signed by the certificate's issuer,
//!   current, and whether it lists the certificate.
//! - [`ocsp_respond`]: the responder side, for the internal CA.

use std::os::raw::c_int;

use foreign_types_shared::{ForeignType, ForeignTypeRef};
use openssl::asn1::{Asn1GeneralizedTimeRef, Asn1Time, Asn1TimeRef};
use openssl::hash::MessageDigest;
use openssl::ocsp::{
    OcspCertId, OcspCertStatus, OcspFlag, OcspRequest, OcspResponse, OcspResponseStatus,
};
use openssl::pkey::{PKeyRef, Private};
use openssl::stack::Stack;
use openssl::x509::{CrlStatus, X509, X509Crl, X509Ref};

use crate::TrustStore;
use crate::keyring::name_to_string;

/// What one source said about one certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Status {
    /// Not revoked.
    Good,
    /// Revoked (the reason, when given).
    Revoked(String),
    /// The responder does not know the certificate (OCSP `unknown`).
    Unknown,
}

/// An answer that was checked, with until when it may be used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checked {
    /// The certificate's status.
    pub status: Status,
    /// nextUpdate (seconds since the epoch); `None` when the answer has
    /// none (it must not be cached).
    pub next_update: Option<i64>,
}

/// The `http://` addresses a certificate names: (OCSP responders, CRL
/// distribution points). Other schemes (ldap, https) are left out: fetching
/// them would loop (https needs revocation itself) or needs another client.
pub fn urls(cert: &X509Ref) -> (Vec<String>, Vec<String>) {
    let http = |u: &str| u.to_ascii_lowercase().starts_with("http://");
    let ocsp = cert
        .ocsp_responders()
        .map(|s| {
            s.iter()
                .map(|u| u.to_string())
                .filter(|u| http(u))
                .collect()
        })
        .unwrap_or_default();
    let mut crl = Vec::new();
    if let Some(dps) = cert.crl_distribution_points() {
        for dp in dps.iter() {
            let Some(names) = dp.distpoint().and_then(|n| n.fullname()) else {
                continue;
            };
            for n in names.iter() {
                if let Some(u) = n.uri()
                    && http(u)
                {
                    crl.push(u.to_string());
                }
            }
        }
    }
    (ocsp, crl)
}

/// Seconds since the epoch of an ASN1_TIME or ASN1_GENERALIZEDTIME.
fn unix_of(t: &Asn1TimeRef) -> Option<i64> {
    let epoch = Asn1Time::from_unix(0).ok()?;
    let d = epoch.diff(t).ok()?;
    Some(i64::from(d.days) * 86_400 + i64::from(d.secs))
}

/// The same for an ASN1_GENERALIZEDTIME (OCSP's times).
fn unix_of_gt(t: &Asn1GeneralizedTimeRef) -> Option<i64> {
    // SAFETY: ASN1_GENERALIZEDTIME and ASN1_TIME are both ASN1_STRING;
    // ASN1_TIME_diff reads either.
    let t = unsafe { Asn1TimeRef::from_ptr(t.as_ptr() as *mut openssl_sys::ASN1_TIME) };
    unix_of(t)
}

/// The cache key of a certificate's OCSP status: hex of the DER CertID
/// (SHA-1 issuer name and key hashes, serial), as in the request.
pub fn ocsp_key(cert: &X509Ref, issuer: &X509Ref) -> Result<String, String> {
    let id =
        OcspCertId::from_cert(MessageDigest::sha1(), cert, issuer).map_err(|e| e.to_string())?;
    // SAFETY: i2d of a valid CERTID into a buffer of the size it reports.
    let der = unsafe {
        let n = crate::ffi::i2d_OCSP_CERTID(id.as_ptr(), std::ptr::null_mut());
        if n <= 0 {
            return Err("cannot encode the OCSP certificate ID".into());
        }
        let mut buf = vec![0u8; n as usize];
        let mut p = buf.as_mut_ptr();
        crate::ffi::i2d_OCSP_CERTID(id.as_ptr(), &mut p);
        buf
    };
    Ok(der.iter().map(|b| format!("{b:02x}")).collect())
}

/// An OCSP request for one certificate, kept to check its answer.
pub struct OcspQuery {
    req: OcspRequest,
    cert: X509,
    issuer: X509,
    /// The request, DER, to POST as `application/ocsp-request`.
    pub der: Vec<u8>,
}

impl std::fmt::Debug for OcspQuery {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OcspQuery")
            .field("cert", &name_to_string(self.cert.subject_name()))
            .finish()
    }
}

/// Seconds of clock skew allowed on thisUpdate and nextUpdate.
pub const LEEWAY_SECS: u32 = 300;

impl OcspQuery {
    /// A request for `cert` (issued by `issuer`) with a fresh nonce.
    pub fn new(cert: &X509Ref, issuer: &X509Ref) -> Result<Self, String> {
        let e = |e: openssl::error::ErrorStack| e.to_string();
        let mut req = OcspRequest::new().map_err(e)?;
        req.add_id(OcspCertId::from_cert(MessageDigest::sha1(), cert, issuer).map_err(e)?)
            .map_err(e)?;
        // SAFETY: a random 16-byte nonce (val null, len -1 = default).
        if unsafe { crate::ffi::OCSP_request_add1_nonce(req.as_ptr(), std::ptr::null_mut(), -1) }
            != 1
        {
            return Err("cannot add a nonce to the OCSP request".into());
        }
        let der = req.to_der().map_err(e)?;
        Ok(OcspQuery {
            req,
            cert: cert.to_owned(),
            issuer: issuer.to_owned(),
            der,
        })
    }

    /// Checks a fresh answer to this request (the nonce must match when
    /// the responder sends one).
    pub fn check(&self, resp: &[u8], trust: &TrustStore, now: i64) -> Result<Checked, String> {
        check_ocsp(resp, Some(&self.req), &self.cert, &self.issuer, trust, now)
    }
}

/// Checks a cached answer (no nonce to compare).
pub fn check_ocsp_cached(
    resp: &[u8],
    cert: &X509Ref,
    issuer: &X509Ref,
    trust: &TrustStore,
    now: i64,
) -> Result<Checked, String> {
    check_ocsp(resp, None, cert, issuer, trust, now)
}

fn check_ocsp(
    resp: &[u8],
    req: Option<&OcspRequest>,
    cert: &X509Ref,
    issuer: &X509Ref,
    trust: &TrustStore,
    now: i64,
) -> Result<Checked, String> {
    let e = |e: openssl::error::ErrorStack| crate::error::ossl_reason(&e);
    let r = OcspResponse::from_der(resp).map_err(|_| "not an OCSP response".to_string())?;
    if r.status() != OcspResponseStatus::SUCCESSFUL {
        return Err(format!(
            "the responder answered with status {} (not successful)",
            r.status().as_raw()
        ));
    }
    let basic = r.basic().map_err(e)?;
    if let Some(q) = req {
        // SAFETY: both objects are alive; the call only reads them.
        let n = unsafe { crate::ffi::OCSP_check_nonce(q.as_ptr(), basic.as_ptr()) };
        if n == 0 {
            return Err("the OCSP response's nonce does not match the request (a replay?)".into());
        }
    }
    // The signer: the issuer itself, or a responder certificate it
    // delegated to (id-kp-OCSPSigning), verified to the trust anchors.
    let mut certs = Stack::new().map_err(e)?;
    certs.push(issuer.to_owned()).map_err(e)?;
    for c in trust.pool() {
        certs.push(c.clone()).map_err(e)?;
    }
    basic
        .verify(&certs, trust.x509_store(), OcspFlag::empty())
        .map_err(|err| {
            format!(
                "the OCSP response's signature does not verify: {}",
                crate::error::ossl_reason(&err)
            )
        })?;
    let id = OcspCertId::from_cert(MessageDigest::sha1(), cert, issuer).map_err(e)?;
    let st = basic
        .find_status(&id)
        .ok_or("the OCSP response does not answer for this certificate")?;
    // thisUpdate not in the future, nextUpdate not in the past (with
    // leeway), against `now` rather than the clock, so cached answers are
    // judged at the time they are used.
    let this = unix_of_gt(st.this_update).ok_or("unreadable thisUpdate")?;
    if this > now + i64::from(LEEWAY_SECS) {
        return Err("the OCSP response's thisUpdate is in the future".into());
    }
    let next = match st.next_update() {
        Some(t) => Some(unix_of_gt(t).ok_or("unreadable nextUpdate")?),
        None => None,
    };
    if let Some(n) = next
        && n + i64::from(LEEWAY_SECS) < now
    {
        return Err("the OCSP response has expired (nextUpdate is past)".into());
    }
    let status = if st.status == OcspCertStatus::GOOD {
        Status::Good
    } else if st.status == OcspCertStatus::REVOKED {
        Status::Revoked(revocation_reason(st.reason.as_raw()).to_string())
    } else {
        Status::Unknown
    };
    Ok(Checked {
        status,
        next_update: next,
    })
}

/// The RFC 5280 CRLReason code of a reason name (`keyCompromise`, ...);
/// 0 (unspecified) for a name it does not know.
pub fn reason_code(name: &str) -> c_int {
    (1..=10)
        .find(|&c| c != 7 && revocation_reason(c).eq_ignore_ascii_case(name))
        .unwrap_or(0)
}

fn revocation_reason(code: c_int) -> &'static str {
    match code {
        1 => "keyCompromise",
        2 => "cACompromise",
        3 => "affiliationChanged",
        4 => "superseded",
        5 => "cessationOfOperation",
        6 => "certificateHold",
        8 => "removeFromCRL",
        9 => "privilegeWithdrawn",
        10 => "aACompromise",
        _ => "unspecified",
    }
}

/// Checks a fetched CRL (DER or PEM) for `cert`: issued by `issuer` (name
/// and signature), current at `now`, and whether it lists the certificate.
pub fn check_crl(
    crl: &[u8],
    cert: &X509Ref,
    issuer: &X509Ref,
    now: i64,
) -> Result<Checked, String> {
    let crl = X509Crl::from_der(crl)
        .or_else(|_| X509Crl::from_pem(crl))
        .map_err(|_| "not a CRL".to_string())?;
    let issuer_key = issuer.public_key().map_err(|e| e.to_string())?;
    let same_issuer = crl
        .issuer_name()
        .try_cmp(cert.issuer_name())
        .is_ok_and(|o| o == std::cmp::Ordering::Equal);
    if !same_issuer {
        return Err(format!(
            "the CRL is issued by {}, not by the certificate's issuer (indirect CRLs are only used when carried in the message)",
            name_to_string(crl.issuer_name())
        ));
    }
    if !crl.verify(&issuer_key).unwrap_or(false) {
        return Err("the CRL's signature does not verify with the issuer's key".into());
    }
    let this = unix_of(crl.last_update()).ok_or("unreadable thisUpdate")?;
    if this > now + i64::from(LEEWAY_SECS) {
        return Err("the CRL's thisUpdate is in the future".into());
    }
    let next = match crl.next_update() {
        Some(t) => Some(unix_of(t).ok_or("unreadable nextUpdate")?),
        None => None,
    };
    if let Some(n) = next
        && n + i64::from(LEEWAY_SECS) < now
    {
        return Err("the CRL is out of date (nextUpdate is past)".into());
    }
    let status = match crl.get_by_cert(&cert.to_owned()) {
        CrlStatus::NotRevoked => Status::Good,
        // removeFromCRL (RFC 5280 §5.3.1): a hold was released.
        CrlStatus::RemoveFromCrl(_) => Status::Good,
        CrlStatus::Revoked(r) => {
            let code = r
                .extension::<openssl::x509::ReasonCode>()
                .ok()
                .flatten()
                .and_then(|(_, e)| e.get_i64().ok())
                .and_then(|c| c_int::try_from(c).ok())
                .unwrap_or(0);
            Status::Revoked(revocation_reason(code).to_string())
        }
    };
    Ok(Checked {
        status,
        next_update: next,
    })
}

/// What the internal CA knows of a serial number it was asked about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Known {
    /// Issued and not revoked.
    Good,
    /// Revoked at this time (seconds since the epoch), for this RFC 5280
    /// CRLReason code (see [`reason_code`]).
    Revoked(i64, c_int),
    /// Not issued by this CA.
    Unknown,
}

/// Answers an OCSP request (RFC 6960) for the CAs `cas` (certificate and
/// key: each answers for what it issued, signing itself). For every
/// certificate the request asks about, `lookup(index of the CA in cas,
/// serial as upper-case hex)` says what the CA knows; a certificate of
/// another issuer is `unknown`. The response is signed by the CA of the
/// first certificate asked about (the first CA when none is ours), valid
/// for `valid_secs` from now, and carries the request's nonce. A request
/// that cannot be read gets a `malformedRequest` response, never an error.
pub fn ocsp_respond(
    req: &[u8],
    cas: &[(&X509Ref, &PKeyRef<Private>)],
    valid_secs: u32,
    lookup: &dyn Fn(usize, &str) -> Known,
) -> Result<Vec<u8>, String> {
    let Some(&(first_ca, first_key)) = cas.first() else {
        return Err("no CA to answer for".into());
    };
    let e = |e: openssl::error::ErrorStack| e.to_string();
    let malformed = || {
        OcspResponse::create(OcspResponseStatus::MALFORMED_REQUEST, None)
            .and_then(|r| r.to_der())
            .map_err(e)
    };
    let Ok(req) = OcspRequest::from_der(req) else {
        return malformed();
    };
    // SAFETY: every pointer below comes from OpenSSL for objects alive in
    // this function; ownership is as documented for each call (add1/get0
    // borrow, OCSP_response_create copies the basic response).
    unsafe {
        let n = crate::ffi::OCSP_request_onereq_count(req.as_ptr());
        if n <= 0 {
            return malformed();
        }
        let basic = openssl_sys::OCSP_BASICRESP_new();
        if basic.is_null() {
            return Err("out of memory".into());
        }
        let basic = openssl::ocsp::OcspBasicResponse::from_ptr(basic);
        let now = Asn1Time::days_from_now(0).map_err(e)?;
        let next = Asn1Time::from_unix(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs() as i64)
                .unwrap_or(0)
                + i64::from(valid_secs),
        )
        .map_err(e)?;
        // Each CA's issuer hashes (name, key) under SHA-1 and SHA-256, to
        // compare the request's with: by hash algorithm and bytes, not by
        // the encoding of its parameters (NULL or absent both occur).
        let mut ids: Vec<(usize, IssuerHashes)> = Vec::new();
        for (i, (c, _)) in cas.iter().enumerate() {
            for md in [MessageDigest::sha1(), MessageDigest::sha256()] {
                // The CA as issuer: its subject name and its key (not
                // OCSP_cert_to_id(c, c), which hashes c's issuer name).
                let id = crate::ffi::OCSP_cert_id_new(
                    md.as_ptr(),
                    openssl_sys::X509_get_subject_name(c.as_ptr()),
                    crate::ffi::X509_get0_pubkey_bitstr(c.as_ptr()),
                    std::ptr::null(),
                );
                if id.is_null() {
                    return Err("cannot make the CA's certificate ID".into());
                }
                let id = OcspCertId::from_ptr(id);
                ids.push((i, issuer_hashes(id.as_ptr())));
            }
        }
        let mut signer: Option<usize> = None;
        for i in 0..n {
            let one = crate::ffi::OCSP_request_onereq_get0(req.as_ptr(), i);
            let id = crate::ffi::OCSP_onereq_get0_id(one);
            if id.is_null() {
                return malformed();
            }
            let mut serial: *mut openssl_sys::ASN1_INTEGER = std::ptr::null_mut();
            crate::ffi::OCSP_id_get0_info(
                std::ptr::null_mut(),
                std::ptr::null_mut(),
                std::ptr::null_mut(),
                &mut serial,
                id,
            );
            // Same issuer (name and key hashes), whatever the serial.
            let asked = issuer_hashes(id);
            let which = ids.iter().find(|(_, h)| *h == asked).map(|(i, _)| *i);
            if signer.is_none() {
                signer = which;
            }
            let hex = if serial.is_null() {
                String::new()
            } else {
                openssl::asn1::Asn1IntegerRef::from_ptr(serial)
                    .to_bn()
                    .and_then(|b| b.to_hex_str().map(|s| s.to_string()))
                    .unwrap_or_default()
            };
            let known = match which {
                Some(i) => lookup(i, &hex),
                None => Known::Unknown,
            };
            let (status, reason, revtime) = match known {
                Known::Good => (openssl_sys::V_OCSP_CERTSTATUS_GOOD, 0, None),
                Known::Revoked(t, why) => (
                    openssl_sys::V_OCSP_CERTSTATUS_REVOKED,
                    why,
                    Some(Asn1Time::from_unix(t).map_err(e)?),
                ),
                Known::Unknown => (openssl_sys::V_OCSP_CERTSTATUS_UNKNOWN, 0, None),
            };
            let single = crate::ffi::OCSP_basic_add1_status(
                basic.as_ptr(),
                id,
                status,
                reason,
                revtime
                    .as_ref()
                    .map_or(std::ptr::null_mut(), |t| t.as_ptr()),
                now.as_ptr(),
                next.as_ptr(),
            );
            if single.is_null() {
                return Err("cannot add a status to the OCSP response".into());
            }
        }
        // The nonce, when the request has one (1: copied, 2: none to copy).
        if crate::ffi::OCSP_copy_nonce(basic.as_ptr(), req.as_ptr()) <= 0 {
            return Err("cannot copy the request's nonce".into());
        }
        let (issuer, key) = signer.map_or((first_ca, first_key), |i| cas[i]);
        let certs = Stack::<X509>::new().map_err(e)?;
        let ok = crate::ffi::OCSP_basic_sign(
            basic.as_ptr(),
            issuer.as_ptr(),
            key.as_ptr(),
            MessageDigest::sha256().as_ptr(),
            certs.as_ptr() as *mut openssl_sys::OPENSSL_STACK,
            OCSP_NOCERTS,
        );
        if ok != 1 {
            return Err(crate::error::ossl_reason(&openssl::error::ErrorStack::get()));
        }
        OcspResponse::create(OcspResponseStatus::SUCCESSFUL, Some(&basic))
            .and_then(|r| r.to_der())
            .map_err(e)
    }
}

/// (hash algorithm NID, issuer name hash, issuer key hash) of a CertID.
#[derive(Debug, PartialEq, Eq)]
struct IssuerHashes(c_int, Vec<u8>, Vec<u8>);

/// # Safety
/// `id` must be a valid CERTID.
unsafe fn issuer_hashes(id: *mut openssl_sys::OCSP_CERTID) -> IssuerHashes {
    let mut name: *mut openssl_sys::ASN1_OCTET_STRING = std::ptr::null_mut();
    let mut key: *mut openssl_sys::ASN1_OCTET_STRING = std::ptr::null_mut();
    let mut md: *mut openssl_sys::ASN1_OBJECT = std::ptr::null_mut();
    // SAFETY: get0 pointers into `id`, read at once.
    unsafe {
        crate::ffi::OCSP_id_get0_info(&mut name, &mut md, &mut key, std::ptr::null_mut(), id);
        let bytes = |s: *mut openssl_sys::ASN1_OCTET_STRING| {
            if s.is_null() {
                Vec::new()
            } else {
                let p = openssl_sys::ASN1_STRING_get0_data(s as *const _);
                let n = openssl_sys::ASN1_STRING_length(s as *const _);
                std::slice::from_raw_parts(p, n.max(0) as usize).to_vec()
            }
        };
        let nid = if md.is_null() {
            0
        } else {
            openssl_sys::OBJ_obj2nid(md)
        };
        IssuerHashes(nid, bytes(name), bytes(key))
    }
}

/// `OCSP_NOCERTS`: the response carries no certificates (the signer is the
/// issuer, which the client has).
const OCSP_NOCERTS: std::os::raw::c_ulong = 0x1;

#[cfg(test)]
mod tests {
    use super::*;
    use openssl::asn1::Asn1Integer;
    use openssl::bn::BigNum;
    use openssl::pkey::PKey;
    use openssl::rsa::Rsa;
    use openssl::x509::extension::BasicConstraints;
    use openssl::x509::{X509Builder, X509NameBuilder};

    fn cert(
        cn: &str,
        serial: u32,
        issuer: Option<(&X509, &PKey<Private>)>,
    ) -> (X509, PKey<Private>) {
        make(cn, serial, issuer, issuer.is_none())
    }

    fn make(
        cn: &str,
        serial: u32,
        issuer: Option<(&X509, &PKey<Private>)>,
        is_ca: bool,
    ) -> (X509, PKey<Private>) {
        let key = PKey::from_rsa(Rsa::generate(2048).unwrap()).unwrap();
        let mut name = X509NameBuilder::new().unwrap();
        name.append_entry_by_text("CN", cn).unwrap();
        let name = name.build();
        let mut b = X509Builder::new().unwrap();
        b.set_version(2).unwrap();
        b.set_serial_number(&Asn1Integer::from_bn(&BigNum::from_u32(serial).unwrap()).unwrap())
            .unwrap();
        b.set_subject_name(&name).unwrap();
        b.set_issuer_name(issuer.map_or(&name, |(c, _)| c.subject_name()))
            .unwrap();
        b.set_pubkey(&key).unwrap();
        b.set_not_before(&Asn1Time::days_from_now(0).unwrap())
            .unwrap();
        b.set_not_after(&Asn1Time::days_from_now(30).unwrap())
            .unwrap();
        if is_ca {
            b.append_extension(BasicConstraints::new().critical().ca().build().unwrap())
                .unwrap();
        }
        b.sign(issuer.map_or(&key, |(_, k)| k), MessageDigest::sha256())
            .unwrap();
        (b.build(), key)
    }

    #[test]
    fn our_responder_and_our_client_agree() {
        let (ca, ca_key) = cert("CA", 1, None);
        let (good, _) = cert("good", 0x10, Some((&ca, &ca_key)));
        let (revoked, _) = cert("revoked", 0x11, Some((&ca, &ca_key)));
        let (other, _) = cert("unknown", 0x12, Some((&ca, &ca_key)));
        let trust = TrustStore::for_any_purpose(vec![ca.clone()], vec![], vec![]).unwrap();
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs() as i64;
        let lookup = |_: usize, serial: &str| match serial {
            "10" => Known::Good,
            "11" => Known::Revoked(now - 60, 1),
            _ => Known::Unknown,
        };
        for (c, want) in [
            (&good, Status::Good),
            (&revoked, Status::Revoked("keyCompromise".into())),
            (&other, Status::Unknown),
        ] {
            let q = OcspQuery::new(c, &ca).unwrap();
            let resp = ocsp_respond(&q.der, &[(&ca, &ca_key)], 3600, &lookup).unwrap();
            let got = q.check(&resp, &trust, now).unwrap();
            assert_eq!(got.status, want);
            assert!(got.next_update.is_some_and(|n| n > now + 3000));
            // A response to another request fails its nonce.
            let q2 = OcspQuery::new(c, &ca).unwrap();
            let e = q2.check(&resp, &trust, now).unwrap_err();
            assert!(e.contains("nonce"), "{e}");
            // Judged an hour and more later, it has expired.
            let e = q.check(&resp, &trust, now + 7200).unwrap_err();
            assert!(e.contains("expired"), "{e}");
        }
        // A request made by the openssl CLI.
        let dir = std::env::temp_dir().join(format!("ocsp-cli-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("ca.pem"), ca.to_pem().unwrap()).unwrap();
        std::fs::write(dir.join("good.pem"), good.to_pem().unwrap()).unwrap();
        let ok = std::process::Command::new("openssl")
            .args([
                "ocsp", "-issuer", "ca.pem", "-cert", "good.pem", "-reqout", "req.der",
            ])
            .current_dir(&dir)
            .status()
            .is_ok_and(|s| s.success());
        if ok {
            let req = std::fs::read(dir.join("req.der")).unwrap();
            let resp = ocsp_respond(&req, &[(&ca, &ca_key)], 3600, &lookup).unwrap();
            let got = check_ocsp_cached(&resp, &good, &ca, &trust, now).unwrap();
            assert_eq!(got.status, Status::Good);
        }
        let _ = std::fs::remove_dir_all(&dir);
        // An intermediate CA answers for what it issued, signing itself (its
        // issuer name hash is of its own subject, not of its issuer's).
        let (ica, ica_key) = make("Intermediate", 2, Some((&ca, &ca_key)), true);
        let (leaf, _) = cert("leaf", 0x10, Some((&ica, &ica_key)));
        let trust2 =
            TrustStore::for_any_purpose(vec![ca.clone()], vec![ica.clone()], vec![]).unwrap();
        let q = OcspQuery::new(&leaf, &ica).unwrap();
        let resp =
            ocsp_respond(&q.der, &[(&ica, &ica_key), (&ca, &ca_key)], 3600, &lookup).unwrap();
        assert_eq!(q.check(&resp, &trust2, now).unwrap().status, Status::Good);
        // Garbage gets malformedRequest, not an error.
        let r = ocsp_respond(b"junk", &[(&ca, &ca_key)], 60, &lookup).unwrap();
        assert_eq!(
            OcspResponse::from_der(&r).unwrap().status(),
            OcspResponseStatus::MALFORMED_REQUEST
        );
    }
}
