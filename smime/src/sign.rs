//! Signing (RFC 8551 §3.5): detached `multipart/signed` by default, opaque
//! `application/pkcs7-mime; smime-type=signed-data` on request. SHA-256;
//! RSA PKCS#1 v1.5 by default, RSASSA-PSS on request. The signer's chain,
//! the signing time (added by OpenSSL) and our own SMIMECapabilities
//! ([`SMIME_CAPABILITIES`]: only what we want to receive, strongest first;
//! never OpenSSL's default list with RC2-40 and DES) are included.

use std::ptr;

use foreign_types_shared::ForeignType;
use openssl::cms::CmsContentInfo;
use openssl::pkey::Id;
use openssl::stack::Stack;
use openssl::x509::X509;

use crate::error::{Error, Result};
use crate::ffi;
use crate::keyring::KeyPair;
use crate::mime::{encode_base64_lines, new_boundary};
use crate::prepare::prepare;

/// How to sign.
#[derive(Debug, Clone, Copy, Default)]
pub struct SignOptions {
    /// Opaque signature (content inside the CMS) instead of multipart/signed.
    pub opaque: bool,
    /// RSASSA-PSS (SHA-256, MGF1-SHA-256, salt length 32) instead of PKCS#1 v1.5.
    pub pss: bool,
}

/// Signs `message` with `signer` and returns the complete message: outer
/// header fields kept, the entity canonicalised (CRLF, 8-bit content
/// transfer-encoded) and signed.
pub fn sign(message: &[u8], signer: &KeyPair, opts: &SignOptions) -> Result<Vec<u8>> {
    let prepared = prepare(message);
    let entity = prepared.signable();
    let der = sign_der(&entity, signer, opts)?;
    let b64 = encode_base64_lines(&der);
    let mut out = prepared.outer.clone();
    out.reserve(entity.len() + b64.len() + 1024);
    if opts.opaque {
        out.extend_from_slice(
            b"MIME-Version: 1.0\r\n\
              Content-Type: application/pkcs7-mime; smime-type=signed-data; name=\"smime.p7m\"\r\n\
              Content-Transfer-Encoding: base64\r\n\
              Content-Disposition: attachment; filename=\"smime.p7m\"\r\n\
              Content-Description: S/MIME Signed Message\r\n\r\n",
        );
        out.extend_from_slice(&b64);
        return Ok(out);
    }
    let boundary = new_boundary();
    out.extend_from_slice(
        format!(
            "MIME-Version: 1.0\r\n\
             Content-Type: multipart/signed; protocol=\"application/pkcs7-signature\"; micalg=sha-256;\r\n \
             boundary=\"{boundary}\"\r\n\r\n\
             This is a cryptographically signed message in MIME format.\r\n\r\n\
             --{boundary}\r\n"
        )
        .as_bytes(),
    );
    out.extend_from_slice(&entity);
    out.extend_from_slice(
        format!(
            "\r\n--{boundary}\r\n\
             Content-Type: application/pkcs7-signature; name=\"smime.p7s\"\r\n\
             Content-Transfer-Encoding: base64\r\n\
             Content-Disposition: attachment; filename=\"smime.p7s\"\r\n\
             Content-Description: S/MIME Cryptographic Signature\r\n\r\n"
        )
        .as_bytes(),
    );
    out.extend_from_slice(&b64);
    out.extend_from_slice(format!("--{boundary}--\r\n").as_bytes());
    Ok(out)
}

/// The DER SignedData over `content` (detached unless `opts.opaque`).
pub fn sign_der(content: &[u8], signer: &KeyPair, opts: &SignOptions) -> Result<Vec<u8>> {
    crate::init();
    if opts.pss && signer.key.id() != Id::RSA {
        return Err(Error::BadKey("RSASSA-PSS needs an RSA key".into()));
    }
    let err = |e| Error::crypto("sign", e);
    let mut chain = Stack::<X509>::new().map_err(err)?;
    for c in &signer.chain {
        chain.push(c.clone()).map_err(err)?;
    }
    let mut flags = ffi::CMS_BINARY | ffi::CMS_PARTIAL;
    let caps = smime_capabilities_der();
    let caps_len = i32::try_from(caps.len())
        .map_err(|_| Error::Unsupported("SMIMECapabilities too long".into()))?;
    if !opts.opaque {
        flags |= ffi::CMS_DETACHED;
    }
    let len = i32::try_from(content.len())
        .map_err(|_| Error::Unsupported("message over 2 GiB".into()))?;
    // SAFETY: every pointer passed is valid for the call; the CMS object is
    // owned by `cms` (freed on drop) from the moment it exists; the BIO is
    // freed before returning; OpenSSL takes its own references to the
    // certificates and key it keeps.
    unsafe {
        let raw = openssl_sys::CMS_sign(
            ptr::null_mut(),
            ptr::null_mut(),
            chain.as_ptr(),
            ptr::null_mut(),
            flags,
        );
        if raw.is_null() {
            return Err(err(openssl::error::ErrorStack::get()));
        }
        let cms = CmsContentInfo::from_ptr(raw);
        let mut signer_flags = flags | ffi::CMS_NOSMIMECAP;
        if opts.pss {
            signer_flags |= ffi::CMS_KEY_PARAM;
        }
        let si = ffi::CMS_add1_signer(
            raw,
            signer.cert.as_ptr(),
            signer.key.as_ptr(),
            openssl_sys::EVP_sha256(),
            signer_flags,
        );
        if si.is_null() {
            return Err(err(openssl::error::ErrorStack::get()));
        }
        // The attribute value is our DER (a SEQUENCE, given whole); the
        // signer is still partial, so it is signed at CMS_final.
        if ffi::CMS_signed_add1_attr_by_NID(
            si,
            openssl_sys::NID_SMIMECapabilities,
            openssl_sys::V_ASN1_SEQUENCE,
            caps.as_ptr().cast(),
            caps_len,
        ) != 1
        {
            return Err(err(openssl::error::ErrorStack::get()));
        }
        if opts.pss {
            let pctx = ffi::CMS_SignerInfo_get0_pkey_ctx(si);
            if pctx.is_null()
                || openssl_sys::EVP_PKEY_CTX_set_rsa_padding(pctx, ffi::RSA_PKCS1_PSS_PADDING) <= 0
                || openssl_sys::EVP_PKEY_CTX_set_rsa_pss_saltlen(pctx, ffi::RSA_PSS_SALTLEN_DIGEST)
                    <= 0
                || openssl_sys::EVP_PKEY_CTX_set_rsa_mgf1_md(pctx, openssl_sys::EVP_sha256()) <= 0
            {
                return Err(err(openssl::error::ErrorStack::get()));
            }
        }
        let bio = openssl_sys::BIO_new_mem_buf(content.as_ptr().cast(), len);
        if bio.is_null() {
            return Err(err(openssl::error::ErrorStack::get()));
        }
        let ok = ffi::CMS_final(raw, bio, ptr::null_mut(), flags);
        openssl_sys::BIO_free_all(bio);
        if ok != 1 {
            return Err(err(openssl::error::ErrorStack::get()));
        }
        cms.to_der().map_err(err)
    }
}

/// What signed mail advertises (RFC 8551 §2.5.2), strongest first: only
/// what we want to receive. AES-GCM (RFC 5084) and AES-CBC (RFC 3565) with
/// absent parameters, then RSAES-OAEP (RFC 3560 §5) with the SHA-256
/// parameters we use ourselves.
pub const SMIME_CAPABILITIES: [&str; 6] = [
    "AES-256-GCM",
    "AES-128-GCM",
    "AES-256-CBC",
    "AES-192-CBC",
    "AES-128-CBC",
    "RSAES-OAEP",
];

/// The DER of our SMIMECapabilities attribute value, in the order of
/// [`SMIME_CAPABILITIES`].
pub(crate) fn smime_capabilities_der() -> Vec<u8> {
    let oid = |content: &[u8]| tlv(0x06, content);
    let seq = |parts: &[&[u8]]| tlv(0x30, &parts.concat());
    // 2.16.840.1.101.3.4.1.x and .2.x (NIST arcs): AES modes and SHA-2.
    let nist = |arc: u8, x: u8| oid(&[0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, arc, x]);
    let aes = |x: u8| seq(&[&nist(1, x)]);
    let sha256 = seq(&[&nist(2, 1), &[0x05, 0x00]]);
    // 1.2.840.113549.1.1.x (PKCS #1).
    let pkcs1 = |x: u8| oid(&[0x2A, 0x86, 0x48, 0x86, 0xF7, 0x0D, 0x01, 0x01, x]);
    // RSAES-OAEP-params: hashFunc [0] sha256, maskGenFunc [1] mgf1(sha256),
    // pSourceFunc absent (the default, empty label).
    let oaep_params = seq(&[&tlv(0xA0, &sha256), &tlv(0xA1, &seq(&[&pkcs1(8), &sha256]))]);
    seq(&[
        &aes(46), // AES-256-GCM
        &aes(6),  // AES-128-GCM
        &aes(42), // AES-256-CBC
        &aes(22), // AES-192-CBC
        &aes(2),  // AES-128-CBC
        &seq(&[&pkcs1(7), &oaep_params]),
    ])
}

/// One DER tag-length-value (lengths below 64 KiB, which is all we make).
fn tlv(tag: u8, content: &[u8]) -> Vec<u8> {
    let n = content.len();
    let mut out = Vec::with_capacity(n + 4);
    out.push(tag);
    if n < 0x80 {
        out.push(n as u8);
    } else if n < 0x100 {
        out.extend_from_slice(&[0x81, n as u8]);
    } else {
        out.extend_from_slice(&[0x82, (n >> 8) as u8, n as u8]);
    }
    out.extend_from_slice(content);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use der::Decode;
    use x509_cert::spki::AlgorithmIdentifierOwned;

    #[test]
    fn capabilities_are_der_in_our_order() {
        let der = smime_capabilities_der();
        let caps = Vec::<AlgorithmIdentifierOwned>::from_der(&der).expect("DER");
        let names: Vec<String> = caps
            .iter()
            .map(|a| crate::cmsinfo::alg_name(&a.oid))
            .collect();
        assert_eq!(names, SMIME_CAPABILITIES);
        for a in &caps[..5] {
            assert!(a.parameters.is_none(), "AES parameters must be absent");
        }
        // RFC 3560 §5: rsaes-oaep with SHA-256 and MGF1-SHA-256.
        let oaep = caps[5].parameters.as_ref().expect("OAEP parameters");
        assert_eq!(
            oaep.value(),
            [
                0xA0, 0x0F, 0x30, 0x0D, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02,
                0x01, 0x05, 0x00, 0xA1, 0x1C, 0x30, 0x1A, 0x06, 0x09, 0x2A, 0x86, 0x48, 0x86, 0xF7,
                0x0D, 0x01, 0x01, 0x08, 0x30, 0x0D, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03,
                0x04, 0x02, 0x01, 0x05, 0x00,
            ]
        );
    }
}
