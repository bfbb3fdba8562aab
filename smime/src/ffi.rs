//! The few libcrypto entry points that neither `openssl` nor `openssl-sys`
//! expose. They are linked from the vendored OpenSSL like everything else.

#![allow(non_camel_case_types, unsafe_code)]

use std::os::raw::{c_int, c_uchar, c_uint, c_ulong};

use openssl_sys::{
    ASN1_INTEGER, ASN1_OBJECT, ASN1_OCTET_STRING, CMS_ContentInfo, EVP_MD, EVP_PKEY, EVP_PKEY_CTX,
    OCSP_BASICRESP, OCSP_CERTID, OCSP_ONEREQ, OCSP_REQUEST, OPENSSL_STACK, X509, X509_CRL,
    X509_STORE, X509_STORE_CTX, X509_VERIFY_PARAM,
};

/// `X509_POLICY_TREE` (opaque).
#[repr(C)]
pub struct X509_POLICY_TREE {
    _private: [u8; 0],
}

/// `X509_POLICY_NODE` (opaque).
#[repr(C)]
pub struct X509_POLICY_NODE {
    _private: [u8; 0],
}

/// `CMS_RecipientInfo` (opaque).
#[repr(C)]
pub struct CMS_RecipientInfo {
    _private: [u8; 0],
}

/// `CMS_RecipientInfo_type`: key transport.
pub const CMS_RECIPINFO_TRANS: c_int = 0;

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
    pub fn CMS_get1_crls(cms: *mut CMS_ContentInfo) -> *mut OPENSSL_STACK;
    pub fn CMS_get1_certs(cms: *mut CMS_ContentInfo) -> *mut OPENSSL_STACK;
    pub fn X509_STORE_CTX_set0_crls(ctx: *mut X509_STORE_CTX, crls: *mut OPENSSL_STACK);
    pub fn X509_STORE_CTX_get0_param(ctx: *mut X509_STORE_CTX) -> *mut X509_VERIFY_PARAM;
    pub fn X509_VERIFY_PARAM_add0_policy(
        param: *mut X509_VERIFY_PARAM,
        policy: *mut ASN1_OBJECT,
    ) -> c_int;
    pub fn X509_STORE_CTX_get0_policy_tree(ctx: *const X509_STORE_CTX) -> *mut X509_POLICY_TREE;
    pub fn X509_policy_tree_get0_user_policies(tree: *const X509_POLICY_TREE)
    -> *mut OPENSSL_STACK;
    pub fn X509_policy_node_get0_policy(node: *const X509_POLICY_NODE) -> *const ASN1_OBJECT;
    pub fn i2d_OCSP_CERTID(id: *mut OCSP_CERTID, out: *mut *mut c_uchar) -> c_int;
    pub fn OCSP_request_add1_nonce(req: *mut OCSP_REQUEST, val: *mut c_uchar, len: c_int) -> c_int;
    pub fn OCSP_check_nonce(req: *mut OCSP_REQUEST, bs: *mut OCSP_BASICRESP) -> c_int;
    pub fn OCSP_request_onereq_count(req: *mut OCSP_REQUEST) -> c_int;
    pub fn OCSP_request_onereq_get0(req: *mut OCSP_REQUEST, i: c_int) -> *mut OCSP_ONEREQ;
    pub fn OCSP_onereq_get0_id(one: *mut OCSP_ONEREQ) -> *mut OCSP_CERTID;
    pub fn OCSP_id_get0_info(
        name_hash: *mut *mut ASN1_OCTET_STRING,
        md: *mut *mut ASN1_OBJECT,
        key_hash: *mut *mut ASN1_OCTET_STRING,
        serial: *mut *mut ASN1_INTEGER,
        id: *mut OCSP_CERTID,
    ) -> c_int;
    pub fn OCSP_basic_add1_status(
        rsp: *mut OCSP_BASICRESP,
        cid: *mut OCSP_CERTID,
        status: c_int,
        reason: c_int,
        revtime: *mut openssl_sys::ASN1_TIME,
        thisupd: *mut openssl_sys::ASN1_TIME,
        nextupd: *mut openssl_sys::ASN1_TIME,
    ) -> *mut std::os::raw::c_void;
    pub fn OCSP_copy_nonce(resp: *mut OCSP_BASICRESP, req: *mut OCSP_REQUEST) -> c_int;
    pub fn OCSP_basic_sign(
        brsp: *mut OCSP_BASICRESP,
        signer: *mut X509,
        key: *mut EVP_PKEY,
        dgst: *const EVP_MD,
        certs: *mut OPENSSL_STACK,
        flags: c_ulong,
    ) -> c_int;
    pub fn OCSP_cert_id_new(
        dgst: *const EVP_MD,
        issuer_name: *const openssl_sys::X509_NAME,
        issuer_key: *const openssl_sys::ASN1_BIT_STRING,
        serial: *const ASN1_INTEGER,
    ) -> *mut OCSP_CERTID;
    pub fn X509_get0_pubkey_bitstr(x: *const X509) -> *mut openssl_sys::ASN1_BIT_STRING;
    pub fn X509_STORE_CTX_set_purpose(ctx: *mut X509_STORE_CTX, purpose: c_int) -> c_int;
    pub fn X509_STORE_CTX_set_verify_cb(
        ctx: *mut X509_STORE_CTX,
        cb: Option<unsafe extern "C" fn(c_int, *mut X509_STORE_CTX) -> c_int>,
    );
    pub fn i2d_ASN1_INTEGER(a: *const ASN1_INTEGER, out: *mut *mut c_uchar) -> c_int;
    pub fn CMS_get0_RecipientInfos(cms: *mut CMS_ContentInfo) -> *mut OPENSSL_STACK;
    pub fn CMS_RecipientInfo_type(ri: *mut CMS_RecipientInfo) -> c_int;
    pub fn CMS_RecipientInfo_ktri_get0_signer_id(
        ri: *mut CMS_RecipientInfo,
        keyid: *mut *mut ASN1_OCTET_STRING,
        issuer: *mut *mut openssl_sys::X509_NAME,
        sno: *mut *mut ASN1_INTEGER,
    ) -> c_int;
    pub fn CMS_RecipientInfo_set0_pkey(ri: *mut CMS_RecipientInfo, pkey: *mut EVP_PKEY) -> c_int;
    pub fn CMS_RecipientInfo_decrypt(
        cms: *mut CMS_ContentInfo,
        ri: *mut CMS_RecipientInfo,
    ) -> c_int;
    pub fn CMS_decrypt(
        cms: *mut CMS_ContentInfo,
        pkey: *mut EVP_PKEY,
        cert: *mut X509,
        dcont: *mut openssl_sys::BIO,
        out: *mut openssl_sys::BIO,
        flags: c_uint,
    ) -> c_int;
}
