//! Private keys for decryption, found by the recipient identifier a message
//! names, and the parsing of key and certificate files (from bytes: the
//! caller reads the files).

use std::fmt;
use std::sync::Arc;

use openssl::nid::Nid;
use openssl::pkcs12::Pkcs12;
use openssl::pkey::{PKey, Private};
use openssl::x509::{X509, X509Crl, X509Name, X509NameRef, X509Ref};

use crate::error::{Error, Result, ossl_reason};

/// How a CMS RecipientInfo (or SignerInfo) names its certificate
/// (RFC 5652 §6.2.1 RecipientIdentifier, §5.3 SignerIdentifier).
#[derive(Clone, PartialEq, Eq)]
pub enum RecipientId {
    /// `issuerAndSerialNumber`.
    IssuerSerial {
        /// DER of the issuer Name.
        issuer: Vec<u8>,
        /// Serial number: the INTEGER's content octets, big-endian.
        serial: Vec<u8>,
    },
    /// `subjectKeyIdentifier`.
    SubjectKeyId(Vec<u8>),
}

impl RecipientId {
    /// The identifier of `cert` in issuer-and-serial form.
    pub fn from_cert(cert: &X509Ref) -> Result<Self> {
        let issuer = cert
            .issuer_name()
            .to_der()
            .map_err(|e| Error::BadKey(ossl_reason(&e)))?;
        let serial =
            serial_octets(cert).ok_or_else(|| Error::BadKey("unreadable serial number".into()))?;
        Ok(RecipientId::IssuerSerial { issuer, serial })
    }

    /// True when `cert` is the certificate this identifier names.
    pub fn matches(&self, cert: &X509Ref) -> bool {
        match self {
            RecipientId::IssuerSerial { issuer, serial } => {
                // The INTEGER as encoded, sign included (RFC 5280 §4.1.2.2:
                // old CAs issued negative serials); a redundant leading
                // 0x00 or 0xFF on either side does not matter.
                let Some(ours) = serial_octets(cert) else {
                    return false;
                };
                if minimal(&ours) != minimal(serial) {
                    return false;
                }
                let Ok(der) = cert.issuer_name().to_der() else {
                    return false;
                };
                if &der == issuer {
                    return true;
                }
                // Same name with other string types: compare canonically.
                X509Name::from_der(issuer)
                    .ok()
                    .and_then(|n| n.try_cmp(cert.issuer_name()).ok())
                    .is_some_and(|o| o.is_eq())
            }
            RecipientId::SubjectKeyId(id) => {
                if let Some(ski) = cert.subject_key_id() {
                    return ski.as_slice() == id.as_slice();
                }
                // No extension: the identifier its sender derived. RFC 5280
                // §4.2.1.2 method 1 (SHA-1 of the key bits), or what Windows
                // uses (SHA-1 of the whole SubjectPublicKeyInfo).
                derived_key_ids(cert)
                    .iter()
                    .any(|d| d.as_slice() == id.as_slice())
            }
        }
    }
}

/// Key identifiers a sender may derive for a certificate without a
/// subjectKeyIdentifier: SHA-1 over the subjectPublicKey bits (RFC 5280
/// §4.2.1.2 method 1) and over the whole SubjectPublicKeyInfo (Windows).
pub(crate) fn derived_key_ids(cert: &X509Ref) -> Vec<Vec<u8>> {
    use foreign_types_shared::ForeignTypeRef;
    let sha1 = |b: &[u8]| openssl::hash::hash(openssl::hash::MessageDigest::sha1(), b).ok();
    let mut out = Vec::new();
    // SAFETY: get0 of the certificate's own BIT STRING, read at once.
    let bits = unsafe {
        let b = crate::ffi::X509_get0_pubkey_bitstr(cert.as_ptr());
        if b.is_null() {
            Vec::new()
        } else {
            let p = openssl_sys::ASN1_STRING_get0_data(b as *const _);
            let n = openssl_sys::ASN1_STRING_length(b as *const _);
            std::slice::from_raw_parts(p, n.max(0) as usize).to_vec()
        }
    };
    if let Some(d) = sha1(&bits) {
        out.push(d.to_vec());
    }
    if let Some(d) = cert
        .public_key()
        .ok()
        .and_then(|k| k.public_key_to_der().ok())
        .and_then(|spki| sha1(&spki))
    {
        out.push(d.to_vec());
    }
    out
}

/// The content octets of a certificate's serialNumber INTEGER (two's
/// complement, big-endian), as encoded.
fn serial_octets(cert: &X509Ref) -> Option<Vec<u8>> {
    use foreign_types_shared::ForeignTypeRef;
    // SAFETY: the certificate's own INTEGER.
    unsafe { integer_octets(cert.serial_number().as_ptr()) }
}

/// The content octets of an ASN1_INTEGER as DER encodes it.
///
/// # Safety
/// `a` must be a valid ASN1_INTEGER.
pub(crate) unsafe fn integer_octets(a: *const openssl_sys::ASN1_INTEGER) -> Option<Vec<u8>> {
    // SAFETY: i2d of a valid INTEGER, first for the size, then into a
    // buffer of that size.
    let der = unsafe {
        let n = crate::ffi::i2d_ASN1_INTEGER(a, std::ptr::null_mut());
        if n <= 0 {
            return None;
        }
        let mut buf = vec![0u8; n as usize];
        let mut p = buf.as_mut_ptr();
        crate::ffi::i2d_ASN1_INTEGER(a, &mut p);
        buf
    };
    // Tag 0x02, then a short or long length.
    let (&tag, rest) = der.split_first()?;
    let (&len0, rest) = rest.split_first()?;
    if tag != 0x02 {
        return None;
    }
    let content = if len0 < 0x80 {
        rest
    } else {
        rest.get(usize::from(len0 & 0x7f)..)?
    };
    Some(content.to_vec())
}

/// Two's-complement octets without redundant leading 0x00 / 0xFF.
fn minimal(b: &[u8]) -> &[u8] {
    let mut i = 0;
    while i + 1 < b.len()
        && ((b[i] == 0x00 && b[i + 1] & 0x80 == 0) || (b[i] == 0xff && b[i + 1] & 0x80 != 0))
    {
        i += 1;
    }
    &b[i..]
}

fn strip_zeros(b: &[u8]) -> &[u8] {
    let i = b.iter().position(|&x| x != 0).unwrap_or(b.len());
    &b[i..]
}

impl fmt::Display for RecipientId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RecipientId::IssuerSerial { issuer, serial } => {
                let name = X509Name::from_der(issuer)
                    .map(|n| name_to_string(&n))
                    .unwrap_or_else(|_| format!("<{} bytes of DER>", issuer.len()));
                write!(f, "issuer={name}, serial={}", hex(strip_zeros(serial)))
            }
            RecipientId::SubjectKeyId(id) => write!(f, "subjectKeyIdentifier={}", hex(id)),
        }
    }
}

impl fmt::Debug for RecipientId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// Upper-case hex.
pub fn hex(b: &[u8]) -> String {
    if b.is_empty() {
        return "00".into();
    }
    b.iter().map(|x| format!("{x:02X}")).collect()
}

/// A distinguished name as `CN=..., O=..., C=...` (in encoded order).
pub fn name_to_string(name: &X509NameRef) -> String {
    let parts: Vec<String> = name
        .entries()
        .map(|e| {
            let key = e
                .object()
                .nid()
                .short_name()
                .map(str::to_string)
                .unwrap_or_else(|_| {
                    let mut s = e.object().to_string();
                    if s.is_empty() {
                        s = "?".into();
                    }
                    s
                });
            let val = e
                .data()
                .to_string()
                .unwrap_or_else(|_| String::from_utf8_lossy(e.data().as_slice()).into_owned());
            format!("{key}={val}")
        })
        .collect();
    parts.join(", ")
}

/// A private key with its certificate.
pub struct KeyPair {
    /// The private key.
    pub key: PKey<Private>,
    /// Its certificate (may be long expired or revoked: that does not matter
    /// for decryption).
    pub cert: X509,
    /// Further certificates from the same file (the chain), for signing.
    pub chain: Vec<X509>,
    /// Where it came from, for reports ("file bob.pem", "store key 17").
    pub label: String,
}

impl fmt::Debug for KeyPair {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyPair")
            .field("label", &self.label)
            .field("subject", &name_to_string(self.cert.subject_name()))
            .finish_non_exhaustive()
    }
}

impl KeyPair {
    /// A key pair from parts already parsed.
    pub fn new(key: PKey<Private>, cert: X509, chain: Vec<X509>, label: &str) -> Result<Self> {
        if !cert.public_key().is_ok_and(|p| p.public_eq(&key)) {
            return Err(Error::BadKey(format!(
                "{label}: the certificate does not belong to the private key"
            )));
        }
        Ok(KeyPair {
            key,
            cert,
            chain,
            label: label.to_string(),
        })
    }

    /// Reads a PEM file holding a private key and its certificate (and maybe
    /// more certificates: the chain), or, if `bytes` is not PEM, a PKCS#12
    /// file opened with `password`.
    ///
    /// OpenSSL never prompts on the terminal: a key that needs a password
    /// when none is given fails at once, saying so (`--password-env`).
    pub fn from_file_bytes(bytes: &[u8], password: Option<&str>, label: &str) -> Result<Self> {
        if looks_like_pem(bytes) {
            // An encrypted PEM key ("ENCRYPTED PRIVATE KEY", or a traditional
            // key with "Proc-Type: 4,ENCRYPTED") takes the password. The
            // callback replaces OpenSSL's default one, which reads the
            // terminal (and hangs a script).
            let asked = std::cell::Cell::new(false);
            let key = PKey::private_key_from_pem_callback(bytes, |buf| {
                asked.set(true);
                let pw = password.unwrap_or("").as_bytes();
                if pw.len() > buf.len() {
                    return Err(openssl::error::ErrorStack::get());
                }
                buf[..pw.len()].copy_from_slice(pw);
                Ok(pw.len())
            });
            let key = key.map_err(|e| {
                Error::BadKey(if asked.get() && password.is_none() {
                    format!(
                        "{label}: the private key is encrypted and no password was given (--password-env VAR not given)"
                    )
                } else if asked.get() {
                    format!(
                        "{label}: cannot decrypt the private key (wrong password?): {}",
                        ossl_reason(&e)
                    )
                } else {
                    format!(
                        "{label}: no readable private key in PEM: {}",
                        ossl_reason(&e)
                    )
                })
            })?;
            let certs = X509::stack_from_pem(bytes)
                .map_err(|e| Error::BadKey(format!("{label}: {}", ossl_reason(&e))))?;
            return Self::assemble(key, certs, label);
        }
        let p12 = Pkcs12::from_der(bytes).map_err(|e| {
            Error::BadKey(format!(
                "{label}: neither PEM nor PKCS#12 ({})",
                ossl_reason(&e)
            ))
        })?;
        // Without a password, try the empty one (some exports use it).
        let parsed = p12.parse2(password.unwrap_or("")).map_err(|e| {
            Error::BadKey(match password {
                None => format!(
                    "{label}: the PKCS#12 file needs a password and none was given (--password-env VAR not given)"
                ),
                Some(_) => format!(
                    "{label}: cannot open PKCS#12 (wrong password?): {}",
                    ossl_reason(&e)
                ),
            })
        })?;
        let key = parsed
            .pkey
            .ok_or_else(|| Error::BadKey(format!("{label}: PKCS#12 holds no private key")))?;
        let mut certs: Vec<X509> = parsed.cert.into_iter().collect();
        if let Some(ca) = parsed.ca {
            certs.extend(ca);
        }
        Self::assemble(key, certs, label)
    }

    fn assemble(key: PKey<Private>, certs: Vec<X509>, label: &str) -> Result<Self> {
        let pos = certs
            .iter()
            .position(|c| c.public_key().is_ok_and(|p| p.public_eq(&key)))
            .ok_or_else(|| {
                Error::BadKey(format!(
                    "{label}: no certificate in the file matches the private key"
                ))
            })?;
        let mut certs = certs;
        let cert = certs.remove(pos);
        Ok(KeyPair {
            key,
            cert,
            chain: certs,
            label: label.to_string(),
        })
    }
}

fn looks_like_pem(b: &[u8]) -> bool {
    b.windows(11).take(4096).any(|w| w == b"-----BEGIN ")
}

/// Every certificate in a PEM or DER file.
pub fn certs_from_bytes(bytes: &[u8], label: &str) -> Result<Vec<X509>> {
    let certs = if looks_like_pem(bytes) {
        X509::stack_from_pem(bytes)
            .map_err(|e| Error::BadKey(format!("{label}: {}", ossl_reason(&e))))?
    } else {
        vec![X509::from_der(bytes).map_err(|e| {
            Error::BadKey(format!("{label}: not a certificate ({})", ossl_reason(&e)))
        })?]
    };
    if certs.is_empty() {
        return Err(Error::BadKey(format!(
            "{label}: no certificate in the file"
        )));
    }
    Ok(certs)
}

/// Every CRL in a PEM or DER file.
pub fn crls_from_bytes(bytes: &[u8], label: &str) -> Result<Vec<X509Crl>> {
    if !looks_like_pem(bytes) {
        return X509Crl::from_der(bytes)
            .map(|c| vec![c])
            .map_err(|e| Error::BadKey(format!("{label}: not a CRL ({})", ossl_reason(&e))));
    }
    let text = String::from_utf8_lossy(bytes);
    let mut out = Vec::new();
    let mut rest = text.as_ref();
    while let Some(start) = rest.find("-----BEGIN X509 CRL-----") {
        let Some(end) = rest[start..].find("-----END X509 CRL-----") else {
            break;
        };
        let block = &rest[start..start + end + "-----END X509 CRL-----".len()];
        out.push(
            X509Crl::from_pem(block.as_bytes())
                .map_err(|e| Error::BadKey(format!("{label}: {}", ossl_reason(&e))))?,
        );
        rest = &rest[start + end..];
        rest = &rest[rest.find('\n').map_or(rest.len(), |i| i + 1)..];
    }
    if out.is_empty() {
        return Err(Error::BadKey(format!("{label}: no CRL in the file")));
    }
    Ok(out)
}

/// The e-mail addresses of a certificate (subjectAltName rfc822Name, then
/// the emailAddress attribute of the subject).
pub fn cert_emails(cert: &X509Ref) -> Vec<String> {
    let mut out: Vec<String> = cert
        .subject_alt_names()
        .map(|s| {
            s.iter()
                .filter_map(|g| g.email().map(str::to_string))
                .collect()
        })
        .unwrap_or_default();
    for e in cert.subject_name().entries_by_nid(Nid::PKCS9_EMAILADDRESS) {
        if let Ok(s) = e.data().to_string()
            && !out.contains(&s)
        {
            out.push(s);
        }
    }
    out
}

/// The certificate policy OIDs `cert` itself asserts (its
/// certificatePolicies extension, RFC 5280 §4.2.1.4), dotted, in order;
/// empty when it has none or the extension is unreadable.
pub fn certificate_policies(cert: &X509Ref) -> Vec<String> {
    use der::Decode;
    use x509_cert::ext::pkix::CertificatePolicies;
    let Ok(der) = cert.to_der() else {
        return Vec::new();
    };
    let Ok(parsed) = x509_cert::Certificate::from_der(&der) else {
        return Vec::new();
    };
    parsed
        .tbs_certificate()
        .extensions()
        .into_iter()
        .flatten()
        .filter(|e| e.extn_id == const_oid::db::rfc5280::ID_CE_CERTIFICATE_POLICIES)
        .filter_map(|e| CertificatePolicies::from_der(e.extn_value.as_bytes()).ok())
        .flat_map(|p| p.0.into_iter().map(|i| i.policy_identifier.to_string()))
        .collect()
}

/// True when `cert` is a CA certificate (basicConstraints cA = TRUE): mail
/// is never meant to be encrypted to one, and a CA's key should not be
/// reading it.
pub fn is_ca_certificate(cert: &X509Ref) -> bool {
    use der::Decode;
    use x509_cert::ext::pkix::BasicConstraints;
    let Ok(der) = cert.to_der() else {
        return false;
    };
    let Ok(parsed) = x509_cert::Certificate::from_der(&der) else {
        return false;
    };
    parsed
        .tbs_certificate()
        .extensions()
        .into_iter()
        .flatten()
        .filter(|e| e.extn_id == const_oid::db::rfc5280::ID_CE_BASIC_CONSTRAINTS)
        .any(|e| BasicConstraints::from_der(e.extn_value.as_bytes()).is_ok_and(|b| b.ca))
}

/// Where decryption keys come from.
///
/// Given the identifier a RecipientInfo names, return every key that may
/// open it: current ones and legacy (OCES2) ones, expired or revoked.
pub trait Keyring: Send + Sync {
    /// Every key whose certificate matches `rid`.
    fn find(&self, rid: &RecipientId) -> Vec<Arc<KeyPair>>;
}

/// A keyring held in memory, matching by issuer and serial and by
/// SubjectKeyIdentifier.
#[derive(Debug, Default, Clone)]
pub struct MemoryKeyring {
    keys: Vec<Arc<KeyPair>>,
}

impl MemoryKeyring {
    /// An empty keyring.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a key.
    pub fn add(&mut self, key: KeyPair) {
        self.keys.push(Arc::new(key));
    }

    /// Takes over every key of `other`.
    pub fn merge(&mut self, other: MemoryKeyring) {
        self.keys.extend(other.keys);
    }

    /// Number of keys held.
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// True when no key is held.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }
}

impl Keyring for MemoryKeyring {
    fn find(&self, rid: &RecipientId) -> Vec<Arc<KeyPair>> {
        self.keys
            .iter()
            .filter(|k| rid.matches(&k.cert))
            .cloned()
            .collect()
    }
}
