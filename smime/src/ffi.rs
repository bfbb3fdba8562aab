//! The few libcrypto entry points that neither `openssl` nor `openssl-sys`
//! expose. They are linked from the vendored OpenSSL like everything else.

#![allow(non_camel_case_types, unsafe_code)]

use std::os::raw::{c_int, c_uint};

use openssl_sys::{CMS_ContentInfo, EVP_MD, EVP_PKEY, EVP_PKEY_CTX, X509, X509_CRL, X509_STORE};

/// `CMS_SignerInfo` (opaque).
#[repr(C)]
pub struct CMS_SignerInfo {
    _private: [u8; 0],
}

pub const CMS_BINARY: c_uint = 0x80;
pub const CMS_DETACHED: c_uint = 0x40;
pub const CMS_PARTIAL: c_uint = 0x4000;
pub const CMS_KEY_PARAM: c_uint = 0x40000;
/// Leave out OpenSSL's default SMIMECapabilities (RC2-40, DES, ...): we add our own.
pub const CMS_NOSMIMECAP: c_uint = 0x200;

pub const RSA_PKCS1_PSS_PADDING: c_int = 6;
/// Salt as long as the digest (RFC 8702 / RFC 4055 recommendation).
pub const RSA_PSS_SALTLEN_DIGEST: c_int = -1;

unsafe extern "C" {
    pub fn CMS_add1_signer(
        cms: *mut CMS_ContentInfo,
        signer: *mut X509,
        pk: *mut EVP_PKEY,
        md: *const EVP_MD,
        flags: c_uint,
    ) -> *mut CMS_SignerInfo;
    pub fn CMS_SignerInfo_get0_pkey_ctx(si: *mut CMS_SignerInfo) -> *mut EVP_PKEY_CTX;
    pub fn CMS_final(
        cms: *mut CMS_ContentInfo,
        data: *mut openssl_sys::BIO,
        dcont: *mut openssl_sys::BIO,
        flags: c_uint,
    ) -> c_int;
    pub fn CMS_signed_add1_attr_by_NID(
        si: *mut CMS_SignerInfo,
        nid: c_int,
        attr_type: c_int,
        bytes: *const std::os::raw::c_void,
        len: c_int,
    ) -> c_int;
    pub fn X509_STORE_add_crl(store: *mut X509_STORE, crl: *mut X509_CRL) -> c_int;
}
