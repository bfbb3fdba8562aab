//! Signing (RFC 8551 §3.5): detached `multipart/signed` by default, opaque
//! `application/pkcs7-mime; smime-type=signed-data` on request. SHA-256;
//! RSA PKCS#1 v1.5 by default, RSASSA-PSS on request. The signer's chain,
//! the signing time and SMIMECapabilities are included (OpenSSL adds the
//! last two by default).

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
        let signer_flags = if opts.pss {
            flags | ffi::CMS_KEY_PARAM
        } else {
            flags
        };
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
