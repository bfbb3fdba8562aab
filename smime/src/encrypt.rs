//! Encryption: EnvelopedData (RFC 5652 §6) with AES-CBC (RFC 3565), or
//! AuthEnvelopedData (RFC 5083) with AES-GCM (RFC 5084); key transport with
//! RSA PKCS#1 v1.5 or RSA-OAEP (RFC 3560).
//!
//! The DER is written here, not by OpenSSL's CMS code, so that it can be
//! streamed: every length is known before the first ciphertext byte (CBC
//! pads to the next block, GCM adds nothing), so the header is written
//! first and the ciphertext goes straight into the base64 output. A 25 MB
//! message is held once as input and once as output, never more.
//! OpenSSL does the key transport and the block cipher.

use std::io::Write;

use cms::cert::IssuerAndSerialNumber;
use cms::content_info::CmsVersion;
use cms::enveloped_data::{
    KeyTransRecipientInfo, RecipientIdentifier, RecipientInfo, RecipientInfos,
};
use der::asn1::{OctetString, SetOfVec};
use der::{Decode, Encode};
use openssl::encrypt::Encrypter;
use openssl::hash::MessageDigest;
use openssl::pkey::Id;
use openssl::rsa::Padding;
use openssl::symm::{Cipher, Crypter, Mode};
use openssl::x509::X509;
use x509_cert::Certificate;
use x509_cert::spki::AlgorithmIdentifierOwned;

use crate::error::{Error, Result, ossl_reason};
use crate::prepare::{canonical_len, for_each_canonical_chunk, prepare};
use crate::stream::Base64Lines;

/// Content-encryption algorithm.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ContentCipher {
    /// AES-128-CBC (EnvelopedData).
    Aes128Cbc,
    /// AES-256-CBC (EnvelopedData): the default, read by every peer.
    #[default]
    Aes256Cbc,
    /// AES-128-GCM (AuthEnvelopedData).
    Aes128Gcm,
    /// AES-256-GCM (AuthEnvelopedData).
    Aes256Gcm,
}

impl ContentCipher {
    fn is_gcm(self) -> bool {
        matches!(self, ContentCipher::Aes128Gcm | ContentCipher::Aes256Gcm)
    }

    fn openssl(self) -> Cipher {
        match self {
            ContentCipher::Aes128Cbc => Cipher::aes_128_cbc(),
            ContentCipher::Aes256Cbc => Cipher::aes_256_cbc(),
            ContentCipher::Aes128Gcm => Cipher::aes_128_gcm(),
            ContentCipher::Aes256Gcm => Cipher::aes_256_gcm(),
        }
    }

    /// The algorithm OID's content octets.
    fn oid(self) -> &'static [u8] {
        match self {
            ContentCipher::Aes128Cbc => &[0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x01, 0x02],
            ContentCipher::Aes256Cbc => &[0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x01, 0x2a],
            ContentCipher::Aes128Gcm => &[0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x01, 0x06],
            ContentCipher::Aes256Gcm => &[0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x01, 0x2e],
        }
    }

    fn key_len(self) -> usize {
        match self {
            ContentCipher::Aes128Cbc | ContentCipher::Aes128Gcm => 16,
            ContentCipher::Aes256Cbc | ContentCipher::Aes256Gcm => 32,
        }
    }

    /// Parses the command-line spelling (`aes256-cbc`, ...).
    pub fn from_name(s: &str) -> Option<Self> {
        Some(match s.to_ascii_lowercase().as_str() {
            "aes128-cbc" | "aes-128-cbc" => ContentCipher::Aes128Cbc,
            "aes256-cbc" | "aes-256-cbc" => ContentCipher::Aes256Cbc,
            "aes128-gcm" | "aes-128-gcm" => ContentCipher::Aes128Gcm,
            "aes256-gcm" | "aes-256-gcm" => ContentCipher::Aes256Gcm,
            _ => return None,
        })
    }
}

/// Key transport for RSA recipients.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum KeyTransport {
    /// RSA PKCS#1 v1.5: the default, read by every peer.
    #[default]
    RsaPkcs1,
    /// RSA-OAEP with SHA-256 and MGF1-SHA-256 (RFC 4055).
    RsaOaepSha256,
}

/// How to encrypt.
#[derive(Debug, Clone, Copy, Default)]
pub struct EncryptOptions {
    /// Content cipher.
    pub cipher: ContentCipher,
    /// Key transport.
    pub key_transport: KeyTransport,
}

const GCM_TAG_LEN: usize = 16;
const GCM_NONCE_LEN: usize = 12;
const OID_DATA: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x07, 0x01];
const OID_ENVELOPED: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x07, 0x03];
const OID_AUTH_ENVELOPED: &[u8] = &[
    0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x09, 0x10, 0x01, 0x17,
];
const OID_RSA: &str = "1.2.840.113549.1.1.1";
const OID_RSAES_OAEP: &str = "1.2.840.113549.1.1.7";

/// Encrypts `message` to `recipients` and returns the complete message:
/// outer header fields kept, the body replaced by `application/pkcs7-mime`.
pub fn encrypt(message: &[u8], recipients: &[X509], opts: &EncryptOptions) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    let plan = Plan::new(message, recipients, opts)?;
    out.reserve_exact(plan.output_len());
    plan.write(&mut out)?;
    Ok(out)
}

/// As [`encrypt`], writing to `out` as the ciphertext is produced.
pub fn encrypt_to<W: Write>(
    message: &[u8],
    recipients: &[X509],
    opts: &EncryptOptions,
    out: W,
) -> Result<()> {
    Plan::new(message, recipients, opts)?.write(out)
}

/// Everything decided before the first byte is written.
struct Plan<'a> {
    mime_header: Vec<u8>,
    der_prefix: Vec<u8>,
    inner_header: Vec<u8>,
    body: &'a [u8],
    cipher: ContentCipher,
    key: Vec<u8>,
    iv: Vec<u8>,
    der_len: usize,
}

impl<'a> Plan<'a> {
    fn new(message: &'a [u8], recipients: &[X509], opts: &EncryptOptions) -> Result<Self> {
        crate::init();
        if recipients.is_empty() {
            return Err(Error::BadKey("no recipient certificate given".into()));
        }
        let prepared = prepare(message);
        let cipher = opts.cipher;
        let mut key = vec![0u8; cipher.key_len()];
        let mut iv = vec![0u8; if cipher.is_gcm() { GCM_NONCE_LEN } else { 16 }];
        openssl::rand::rand_bytes(&mut key).map_err(|e| Error::crypto("encrypt", e))?;
        openssl::rand::rand_bytes(&mut iv).map_err(|e| Error::crypto("encrypt", e))?;

        let mut ris = Vec::with_capacity(recipients.len());
        for cert in recipients {
            ris.push(RecipientInfo::Ktri(key_trans(
                cert,
                &key,
                opts.key_transport,
            )?));
        }
        let ris = RecipientInfos(SetOfVec::try_from(ris).map_err(|e| Error::Crypto {
            operation: "encrypt",
            detail: e.to_string(),
        })?);
        let ris_der = ris.to_der().map_err(|e| Error::Crypto {
            operation: "encrypt",
            detail: e.to_string(),
        })?;

        let plain_len = prepared.inner_header.len() + canonical_len(prepared.body);
        let ct_len = if cipher.is_gcm() {
            plain_len
        } else {
            (plain_len / 16 + 1) * 16
        };

        // ContentEncryptionAlgorithmIdentifier: CBC carries the IV
        // (RFC 3565 §4.1), GCM carries GCMParameters (RFC 5084 §3.2).
        let params = if cipher.is_gcm() {
            let mut p = tlv(0x04, &iv);
            p.extend_from_slice(&tlv(0x02, &[GCM_TAG_LEN as u8]));
            tlv(0x30, &p)
        } else {
            tlv(0x04, &iv)
        };
        let mut alg = tlv(0x06, cipher.oid());
        alg.extend_from_slice(&params);
        let alg = tlv(0x30, &alg);

        let mut eci_head = tlv(0x06, OID_DATA);
        eci_head.extend_from_slice(&alg);
        let ct_header = header(0x80, ct_len);
        let eci_len = eci_head.len() + ct_header.len() + ct_len;

        let version = tlv(0x02, &[0]);
        let trailer_len = if cipher.is_gcm() { 2 + GCM_TAG_LEN } else { 0 };
        let eci_header = header(0x30, eci_len);
        let ed_len = version.len() + ris_der.len() + eci_header.len() + eci_len + trailer_len;
        let ed_header = header(0x30, ed_len);
        let explicit_len = ed_header.len() + ed_len;
        let explicit_header = header(0xa0, explicit_len);
        let type_oid = tlv(
            0x06,
            if cipher.is_gcm() {
                OID_AUTH_ENVELOPED
            } else {
                OID_ENVELOPED
            },
        );
        let ci_len = type_oid.len() + explicit_header.len() + explicit_len;

        let mut der_prefix = header(0x30, ci_len);
        for part in [
            &type_oid,
            &explicit_header,
            &ed_header,
            &version,
            &ris_der,
            &eci_header,
            &eci_head,
            &ct_header,
        ] {
            der_prefix.extend_from_slice(part);
        }
        let der_len = header(0x30, ci_len).len() + ci_len;

        let smime_type = if cipher.is_gcm() {
            "authEnveloped-data"
        } else {
            "enveloped-data"
        };
        let mut mime_header = prepared.outer.clone();
        mime_header.extend_from_slice(
            format!(
                "MIME-Version: 1.0\r\n\
                 Content-Type: application/pkcs7-mime; smime-type={smime_type}; name=\"smime.p7m\"\r\n\
                 Content-Transfer-Encoding: base64\r\n\
                 Content-Disposition: attachment; filename=\"smime.p7m\"\r\n\
                 Content-Description: S/MIME Encrypted Message\r\n\r\n"
            )
            .as_bytes(),
        );
        Ok(Plan {
            mime_header,
            der_prefix,
            inner_header: prepared.inner_header,
            body: prepared.body,
            cipher,
            key,
            iv,
            der_len,
        })
    }

    fn output_len(&self) -> usize {
        let b64 = self.der_len.div_ceil(3) * 4;
        self.mime_header.len() + b64 + b64.div_ceil(76) * 2
    }

    fn write<W: Write>(self, mut out: W) -> Result<()> {
        out.write_all(&self.mime_header)?;
        let mut b64 = Base64Lines::new(out);
        b64.write_all(&self.der_prefix)?;
        let ossl_err = |e: openssl::error::ErrorStack| std::io::Error::other(ossl_reason(&e));
        let mut crypter = Crypter::new(
            self.cipher.openssl(),
            Mode::Encrypt,
            &self.key,
            Some(&self.iv),
        )
        .map_err(|e| Error::crypto("encrypt", e))?;
        let block = self.cipher.openssl().block_size();
        let mut buf = vec![0u8; (1 << 16) * 2 + block * 2];
        let mut feed = |data: &[u8], b64: &mut Base64Lines<W>| -> std::io::Result<()> {
            for c in data.chunks(1 << 16) {
                let n = crypter.update(c, &mut buf).map_err(ossl_err)?;
                b64.write_all(&buf[..n])?;
            }
            Ok(())
        };
        feed(&self.inner_header, &mut b64)?;
        for_each_canonical_chunk(self.body, |c| feed(c, &mut b64))?;
        let n = crypter
            .finalize(&mut buf)
            .map_err(|e| Error::crypto("encrypt", e))?;
        b64.write_all(&buf[..n])?;
        if self.cipher.is_gcm() {
            let mut tag = [0u8; GCM_TAG_LEN];
            crypter
                .get_tag(&mut tag)
                .map_err(|e| Error::crypto("encrypt", e))?;
            b64.write_all(&tlv(0x04, &tag))?;
        }
        b64.finish()?;
        Ok(())
    }
}

/// KeyTransRecipientInfo for one certificate (RFC 5652 §6.2.1), naming it by
/// issuer and serial number (version 0), which every peer understands.
fn key_trans(cert: &X509, cek: &[u8], kt: KeyTransport) -> Result<KeyTransRecipientInfo> {
    let subject = crate::keyring::name_to_string(cert.subject_name());
    let pkey = cert
        .public_key()
        .map_err(|e| Error::BadKey(format!("certificate of {subject}: {}", ossl_reason(&e))))?;
    if pkey.id() != Id::RSA {
        return Err(Error::Unsupported(format!(
            "recipient {subject} has a non-RSA key; only RSA recipients can be encrypted to"
        )));
    }
    let der = cert.to_der().map_err(|e| Error::BadKey(ossl_reason(&e)))?;
    let parsed = Certificate::from_der(&der)
        .map_err(|e| Error::BadKey(format!("certificate of {subject}: {e}")))?;
    let tbs = parsed.tbs_certificate();
    let rid = RecipientIdentifier::IssuerAndSerialNumber(IssuerAndSerialNumber {
        issuer: tbs.issuer().clone(),
        serial_number: tbs.serial_number().clone(),
    });

    let mut enc = Encrypter::new(&pkey).map_err(|e| Error::crypto("key transport", e))?;
    let key_enc_alg = match kt {
        KeyTransport::RsaPkcs1 => {
            enc.set_rsa_padding(Padding::PKCS1)
                .map_err(|e| Error::crypto("key transport", e))?;
            AlgorithmIdentifierOwned {
                oid: OID_RSA.parse().map_err(oid_err)?,
                parameters: Some(der::asn1::Any::null()),
            }
        }
        KeyTransport::RsaOaepSha256 => {
            enc.set_rsa_padding(Padding::PKCS1_OAEP)
                .map_err(|e| Error::crypto("key transport", e))?;
            enc.set_rsa_oaep_md(MessageDigest::sha256())
                .map_err(|e| Error::crypto("key transport", e))?;
            enc.set_rsa_mgf1_md(MessageDigest::sha256())
                .map_err(|e| Error::crypto("key transport", e))?;
            AlgorithmIdentifierOwned {
                oid: OID_RSAES_OAEP.parse().map_err(oid_err)?,
                parameters: Some(
                    der::asn1::Any::from_der(&oaep_sha256_params()).map_err(|e| Error::Crypto {
                        operation: "encrypt",
                        detail: e.to_string(),
                    })?,
                ),
            }
        }
    };
    let mut ek = vec![
        0u8;
        enc.encrypt_len(cek)
            .map_err(|e| Error::crypto("key transport", e))?
    ];
    let n = enc
        .encrypt(cek, &mut ek)
        .map_err(|e| Error::crypto("key transport", e))?;
    ek.truncate(n);
    Ok(KeyTransRecipientInfo {
        version: CmsVersion::V0,
        rid,
        key_enc_alg,
        enc_key: OctetString::new(ek).map_err(|e| Error::Crypto {
            operation: "encrypt",
            detail: e.to_string(),
        })?,
    })
}

fn oid_err(e: const_oid::Error) -> Error {
    Error::Crypto {
        operation: "encrypt",
        detail: e.to_string(),
    }
}

/// RSAES-OAEP-params with SHA-256 and MGF1-SHA-256 (RFC 4055 §4.1); the
/// hash AlgorithmIdentifiers carry no parameters, as OpenSSL writes them.
fn oaep_sha256_params() -> Vec<u8> {
    const SHA256: &[u8] = &[0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x01];
    const MGF1: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x08];
    let sha = tlv(0x30, &tlv(0x06, SHA256));
    let mut mgf = tlv(0x06, MGF1);
    mgf.extend_from_slice(&sha);
    let mgf = tlv(0x30, &mgf);
    let mut p = tlv(0xa0, &sha);
    p.extend_from_slice(&tlv(0xa1, &mgf));
    tlv(0x30, &p)
}

/// DER tag and length.
fn header(tag: u8, len: usize) -> Vec<u8> {
    let mut out = vec![tag];
    if len < 0x80 {
        out.push(len as u8);
    } else {
        let bytes = len.to_be_bytes();
        let skip = bytes
            .iter()
            .position(|&b| b != 0)
            .unwrap_or(bytes.len() - 1);
        out.push(0x80 | (bytes.len() - skip) as u8);
        out.extend_from_slice(&bytes[skip..]);
    }
    out
}

/// DER tag, length and value.
fn tlv(tag: u8, value: &[u8]) -> Vec<u8> {
    let mut out = header(tag, value.len());
    out.extend_from_slice(value);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn der_lengths() {
        assert_eq!(header(0x30, 5), [0x30, 5]);
        assert_eq!(header(0x30, 0x80), [0x30, 0x81, 0x80]);
        assert_eq!(header(0x04, 0x1234), [0x04, 0x82, 0x12, 0x34]);
        assert_eq!(
            header(0x04, 25_000_000),
            [0x04, 0x84, 0x01, 0x7d, 0x78, 0x40]
        );
    }

    #[test]
    fn oaep_params_parse_as_der() {
        let p = oaep_sha256_params();
        assert!(der::asn1::Any::from_der(&p).is_ok());
    }
}
