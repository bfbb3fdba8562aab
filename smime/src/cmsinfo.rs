//! Reading CMS structures (RFC 5652) for what the engine must know before it
//! calls OpenSSL: the content type, the recipients, the signers, the
//! algorithms.
//!
//! Input may be BER with indefinite lengths (gpgsm, NSS and Outlook write
//! it). OpenSSL parses BER; its re-encoding is DER, which the RustCrypto
//! `cms` types then read.

use cms::authenveloped_data::AuthEnvelopedData;
use cms::content_info::ContentInfo;
use cms::enveloped_data::{
    EnvelopedData, KeyAgreeRecipientIdentifier, RecipientIdentifier, RecipientInfo, RecipientInfos,
};
use cms::signed_data::{SignedData, SignerIdentifier};
use const_oid::ObjectIdentifier;
use der::{Decode, Encode};
use openssl::cms::CmsContentInfo;
use x509_cert::spki::AlgorithmIdentifierOwned;

use crate::error::{Error, Result, ossl_reason};
use crate::keyring::RecipientId;

/// id-data.
pub const ID_DATA: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.7.1");
/// id-signedData.
pub const ID_SIGNED_DATA: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.7.2");
/// id-envelopedData.
pub const ID_ENVELOPED_DATA: ObjectIdentifier =
    ObjectIdentifier::new_unwrap("1.2.840.113549.1.7.3");
/// id-ct-authEnvelopedData (RFC 5083).
pub const ID_AUTH_ENVELOPED_DATA: ObjectIdentifier =
    ObjectIdentifier::new_unwrap("1.2.840.113549.1.9.16.1.23");
/// signingTime attribute.
pub const ID_SIGNING_TIME: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.9.5");
/// SMIMECapabilities attribute (RFC 8551 §2.5.2).
pub const ID_SMIME_CAPABILITIES: ObjectIdentifier =
    ObjectIdentifier::new_unwrap("1.2.840.113549.1.9.15");

/// What a CMS ContentInfo holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CmsKind {
    /// EnvelopedData.
    Enveloped,
    /// AuthEnvelopedData.
    AuthEnveloped,
    /// SignedData.
    Signed,
    /// Any other content type.
    Other,
}

/// A parsed CMS object: OpenSSL's handle plus the structure read (once)
/// from its DER re-encoding.
pub(crate) struct Parsed {
    pub ossl: CmsContentInfo,
    ci: ContentInfo,
    pub kind: CmsKind,
    pub oid: ObjectIdentifier,
}

impl std::fmt::Debug for Parsed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Parsed")
            .field("kind", &self.kind)
            .field("oid", &self.oid)
            .finish()
    }
}

/// Parses BER or DER (or PEM `-----BEGIN PKCS7/CMS-----`).
/// The DER inside `-----BEGIN <label>-----` ... `-----END <label>-----`
/// (base64 lines; armour headers such as `Version:` are skipped).
fn dearmour(text: &[u8]) -> Result<Vec<u8>> {
    use base64::Engine;
    let text = String::from_utf8_lossy(text);
    let mut lines = text.lines();
    let begin = lines.next().unwrap_or_default().trim();
    let label = begin
        .strip_prefix("-----BEGIN ")
        .and_then(|l| l.strip_suffix("-----"))
        .ok_or_else(|| Error::MalformedCms("unreadable armour line".into()))?;
    let end = format!("-----END {label}-----");
    let mut b64 = String::new();
    let mut ended = false;
    for l in lines {
        let l = l.trim();
        if l == end {
            ended = true;
            break;
        }
        if l.contains(':') {
            continue;
        }
        b64.push_str(l);
    }
    if !ended {
        return Err(Error::MalformedCms(format!("armour without {end}")));
    }
    base64::engine::general_purpose::STANDARD
        .decode(b64.as_bytes())
        .map_err(|e| Error::MalformedCms(format!("armour ({label}): {e}")))
}

pub(crate) fn parse(bytes: &[u8]) -> Result<Parsed> {
    if bytes.is_empty() {
        return Err(Error::MalformedCms("empty CMS body".into()));
    }
    // Armour of any label: PKCS7 and CMS (OpenSSL), ENCRYPTED MESSAGE and
    // SIGNED MESSAGE (gpgsm), ...
    let dearmoured;
    let bytes = if bytes.starts_with(b"-----BEGIN ") {
        dearmoured = dearmour(bytes)?;
        &dearmoured[..]
    } else {
        bytes
    };
    let ossl = CmsContentInfo::from_der(bytes).map_err(|e| Error::MalformedCms(ossl_reason(&e)))?;
    let der = ossl
        .to_der()
        .map_err(|e| Error::MalformedCms(ossl_reason(&e)))?;
    let ci = ContentInfo::from_der(&der).map_err(|e| Error::MalformedCms(e.to_string()))?;
    let oid = ci.content_type;
    let kind = if oid == ID_ENVELOPED_DATA {
        CmsKind::Enveloped
    } else if oid == ID_AUTH_ENVELOPED_DATA {
        CmsKind::AuthEnveloped
    } else if oid == ID_SIGNED_DATA {
        CmsKind::Signed
    } else {
        CmsKind::Other
    };
    Ok(Parsed {
        ossl,
        ci,
        kind,
        oid,
    })
}

impl Parsed {
    /// Recipients and content-encryption algorithm of (Auth)EnvelopedData.
    pub fn envelope(&self) -> Result<Envelope> {
        let ci = &self.ci;
        let (ris, alg) = match self.kind {
            CmsKind::Enveloped => {
                let ed: EnvelopedData = ci
                    .content
                    .decode_as()
                    .map_err(|e| Error::MalformedCms(format!("EnvelopedData: {e}")))?;
                (ed.recip_infos, ed.encrypted_content.content_enc_alg)
            }
            CmsKind::AuthEnveloped => {
                let ed: AuthEnvelopedData = ci
                    .content
                    .decode_as()
                    .map_err(|e| Error::MalformedCms(format!("AuthEnvelopedData: {e}")))?;
                (
                    ed.recip_infos,
                    ed.auth_encrypted_content_info.content_enc_alg,
                )
            }
            _ => return Err(Error::Unsupported("not an encrypted CMS structure".into())),
        };
        Ok(Envelope {
            recipients: recipients(&ris)?,
            content_alg: alg_name(&alg.oid),
            auth: self.kind == CmsKind::AuthEnveloped,
        })
    }

    /// The SignedData structure.
    pub fn signed_data(&self) -> Result<SignedData> {
        let ci = &self.ci;
        match ci.content.decode_as::<SignedData>() {
            Ok(sd) => Ok(sd),
            Err(e) => {
                // The CRLs are what our parsing layer most often refuses
                // (a version-1 CRL has no version field); they are read
                // through OpenSSL anyway: try again without them.
                let der = ci
                    .content
                    .to_der()
                    .map_err(|e| Error::MalformedCms(format!("SignedData: {e}")))?;
                without_crls(&der)
                    .and_then(|d| SignedData::from_der(&d).ok())
                    .ok_or_else(|| Error::MalformedCms(format!("SignedData: {e}")))
            }
        }
    }
}

/// A SignedData (DER) without its `crls [1] IMPLICIT` element, when it has
/// one; `None` otherwise or when the DER cannot be walked.
fn without_crls(der: &[u8]) -> Option<Vec<u8>> {
    // (tag, content start, content end) of the element at `pos`.
    fn read(b: &[u8], pos: usize) -> Option<(u8, usize, usize)> {
        let tag = *b.get(pos)?;
        let l0 = *b.get(pos + 1)?;
        let (len, start) = if l0 < 0x80 {
            (usize::from(l0), pos + 2)
        } else {
            let n = usize::from(l0 & 0x7f);
            if n == 0 || n > 4 {
                return None;
            }
            let mut len = 0usize;
            for i in 0..n {
                len = (len << 8) | usize::from(*b.get(pos + 2 + i)?);
            }
            (len, pos + 2 + n)
        };
        let end = start.checked_add(len)?;
        (end <= b.len()).then_some((tag, start, end))
    }
    let (tag, start, end) = read(der, 0)?;
    if tag != 0x30 || end != der.len() {
        return None;
    }
    let mut content = Vec::with_capacity(der.len());
    let mut pos = start;
    let mut dropped = false;
    while pos < end {
        let (t, _, e) = read(der, pos)?;
        if t == 0xA1 {
            dropped = true;
        } else {
            content.extend_from_slice(&der[pos..e]);
        }
        pos = e;
    }
    if !dropped {
        return None;
    }
    let mut out = vec![0x30];
    let n = content.len();
    if n < 0x80 {
        out.push(n as u8);
    } else {
        let bytes: Vec<u8> = n
            .to_be_bytes()
            .iter()
            .copied()
            .skip_while(|&b| b == 0)
            .collect();
        out.push(0x80 | bytes.len() as u8);
        out.extend(bytes);
    }
    out.extend(content);
    Some(out)
}

/// One recipient of an encrypted message.
#[derive(Debug, Clone)]
pub struct Recipient {
    /// How it names its certificate; `None` for kinds without a certificate
    /// (password, KEK).
    pub rid: Option<RecipientId>,
    /// `ktri`, `kari`, `kekri`, `pwri` or `ori`.
    pub kind: &'static str,
    /// Key-encryption algorithm.
    pub key_alg: String,
}

/// What an (Auth)EnvelopedData says about itself.
#[derive(Debug, Clone)]
pub struct Envelope {
    /// Its recipients.
    pub recipients: Vec<Recipient>,
    /// Content-encryption algorithm.
    pub content_alg: String,
    /// True for AuthEnvelopedData.
    pub auth: bool,
}

fn recipients(ris: &RecipientInfos) -> Result<Vec<Recipient>> {
    let mut out = Vec::new();
    for ri in ris.0.iter() {
        match ri {
            RecipientInfo::Ktri(k) => out.push(Recipient {
                rid: Some(rid_from(&k.rid)?),
                kind: "ktri",
                key_alg: alg_name(&k.key_enc_alg.oid),
            }),
            RecipientInfo::Kari(k) => {
                for rek in k.recipient_enc_keys.iter() {
                    let rid = match &rek.rid {
                        KeyAgreeRecipientIdentifier::IssuerAndSerialNumber(ias) => {
                            issuer_serial(ias)?
                        }
                        KeyAgreeRecipientIdentifier::RKeyId(r) => RecipientId::SubjectKeyId(
                            r.subject_key_identifier.0.as_bytes().to_vec(),
                        ),
                    };
                    out.push(Recipient {
                        rid: Some(rid),
                        kind: "kari",
                        key_alg: alg_name(&k.key_enc_alg.oid),
                    });
                }
            }
            RecipientInfo::Kekri(k) => out.push(Recipient {
                rid: None,
                kind: "kekri",
                key_alg: alg_name(&k.key_enc_alg.oid),
            }),
            RecipientInfo::Pwri(k) => out.push(Recipient {
                rid: None,
                kind: "pwri",
                key_alg: alg_name(&k.key_enc_alg.oid),
            }),
            RecipientInfo::Ori(o) => out.push(Recipient {
                rid: None,
                kind: "ori",
                key_alg: alg_name(&o.ori_type),
            }),
        }
    }
    Ok(out)
}

fn rid_from(rid: &RecipientIdentifier) -> Result<RecipientId> {
    match rid {
        RecipientIdentifier::IssuerAndSerialNumber(ias) => issuer_serial(ias),
        RecipientIdentifier::SubjectKeyIdentifier(ski) => {
            Ok(RecipientId::SubjectKeyId(ski.0.as_bytes().to_vec()))
        }
    }
}

/// A SignerIdentifier as a [`RecipientId`] (same shape).
pub(crate) fn signer_id(sid: &SignerIdentifier) -> Result<RecipientId> {
    match sid {
        SignerIdentifier::IssuerAndSerialNumber(ias) => issuer_serial(ias),
        SignerIdentifier::SubjectKeyIdentifier(ski) => {
            Ok(RecipientId::SubjectKeyId(ski.0.as_bytes().to_vec()))
        }
    }
}

fn issuer_serial(ias: &cms::cert::IssuerAndSerialNumber) -> Result<RecipientId> {
    Ok(RecipientId::IssuerSerial {
        issuer: ias
            .issuer
            .to_der()
            .map_err(|e| Error::MalformedCms(e.to_string()))?,
        serial: ias.serial_number.as_bytes().to_vec(),
    })
}

/// The encapsulated content of a SignedData (opaque signature), if any.
pub(crate) fn econtent(sd: &SignedData) -> Option<Vec<u8>> {
    let c = sd.encap_content_info.econtent.as_ref()?;
    Some(
        c.decode_as::<der::asn1::OctetString>()
            .map(|o| o.as_bytes().to_vec())
            .unwrap_or_else(|_| c.value().to_vec()),
    )
}

/// A readable name for an algorithm OID (falls back to the dotted form).
pub fn alg_name(oid: &ObjectIdentifier) -> String {
    let s = oid.to_string();
    let name = match s.as_str() {
        "1.2.840.113549.1.1.1" => "rsaEncryption",
        "1.2.840.113549.1.1.7" => "RSAES-OAEP",
        "1.2.840.113549.1.1.10" => "RSASSA-PSS",
        "1.2.840.113549.1.1.5" => "sha1WithRSAEncryption",
        "1.2.840.113549.1.1.11" => "sha256WithRSAEncryption",
        "1.2.840.113549.1.1.12" => "sha384WithRSAEncryption",
        "1.2.840.113549.1.1.13" => "sha512WithRSAEncryption",
        "1.2.840.113549.1.1.4" => "md5WithRSAEncryption",
        "1.2.840.10045.2.1" => "ecPublicKey",
        "1.2.840.10045.4.1" => "ecdsa-with-SHA1",
        "1.2.840.10045.4.3.2" => "ecdsa-with-SHA256",
        "1.2.840.10045.4.3.3" => "ecdsa-with-SHA384",
        "1.2.840.10045.4.3.4" => "ecdsa-with-SHA512",
        "1.2.840.10040.4.1" => "dsa",
        "1.2.840.10040.4.3" => "dsa-with-SHA1",
        "2.16.840.1.101.3.4.3.2" => "dsa-with-SHA256",
        "1.3.14.3.2.26" => "SHA-1",
        "2.16.840.1.101.3.4.2.1" => "SHA-256",
        "2.16.840.1.101.3.4.2.2" => "SHA-384",
        "2.16.840.1.101.3.4.2.3" => "SHA-512",
        "2.16.840.1.101.3.4.2.4" => "SHA-224",
        "1.2.840.113549.2.5" => "MD5",
        "2.16.840.1.101.3.4.1.2" => "AES-128-CBC",
        "2.16.840.1.101.3.4.1.22" => "AES-192-CBC",
        "2.16.840.1.101.3.4.1.42" => "AES-256-CBC",
        "2.16.840.1.101.3.4.1.6" => "AES-128-GCM",
        "2.16.840.1.101.3.4.1.26" => "AES-192-GCM",
        "2.16.840.1.101.3.4.1.46" => "AES-256-GCM",
        "2.16.840.1.101.3.4.1.5" => "AES-128-wrap",
        "2.16.840.1.101.3.4.1.45" => "AES-256-wrap",
        "1.2.840.113549.3.7" => "DES-EDE3-CBC",
        "1.3.14.3.2.7" => "DES-CBC",
        "1.2.840.113549.3.2" => "RC2-CBC",
        "1.3.133.16.840.63.0.2" => "dhSinglePass-stdDH-sha1kdf",
        "1.3.132.1.11.0" => "dhSinglePass-stdDH-sha224kdf",
        "1.3.132.1.11.1" => "dhSinglePass-stdDH-sha256kdf",
        "1.3.132.1.11.2" => "dhSinglePass-stdDH-sha384kdf",
        "1.3.132.1.11.3" => "dhSinglePass-stdDH-sha512kdf",
        "1.3.133.16.840.63.0.3" => "dhSinglePass-cofactorDH-sha1kdf",
        "1.3.132.1.14.0" => "dhSinglePass-cofactorDH-sha224kdf",
        "1.3.132.1.14.1" => "dhSinglePass-cofactorDH-sha256kdf",
        "1.3.132.1.14.2" => "dhSinglePass-cofactorDH-sha384kdf",
        "1.3.132.1.14.3" => "dhSinglePass-cofactorDH-sha512kdf",
        "1.3.133.16.840.63.0.16" => "mqvSinglePass-sha1kdf",
        "1.2.840.113549.1.9.16.3.5" => "ESDH",
        _ => return s,
    };
    name.to_string()
}

/// True for digest algorithms that must be reported as weak.
pub fn is_weak_digest(name: &str) -> bool {
    matches!(
        name,
        "SHA-1"
            | "MD5"
            | "sha1WithRSAEncryption"
            | "md5WithRSAEncryption"
            | "ecdsa-with-SHA1"
            | "dsa-with-SHA1"
    )
}

/// The SMIMECapabilities list of a signer, as algorithm names.
pub(crate) fn capabilities(attr_values: &[der::asn1::Any]) -> Vec<String> {
    let mut out = Vec::new();
    for v in attr_values {
        if let Ok(caps) = v.decode_as::<Vec<AlgorithmIdentifierOwned>>() {
            out.extend(caps.iter().map(|a| alg_name(&a.oid)));
        }
    }
    out
}
