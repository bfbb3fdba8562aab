//! Taking S/MIME layers off a message: decrypting and verifying, layer by
//! layer, and putting the inner entity in place of the outer one.

use std::borrow::Cow;

use crate::cmsinfo::{self, CmsKind, Parsed};
use crate::error::{Error, Result, ossl_reason};
use crate::keyring::{Keyring, RecipientId};
use crate::mime::{Entity, Multipart};
use crate::verify::{SignatureReport, TrustStore, verify_signed};

/// What one layer was.
#[derive(Debug, Clone)]
pub enum LayerReport {
    /// An encryption layer that was removed.
    Decrypted(DecryptReport),
    /// A signature layer, verified or (without trust anchors) only parsed.
    Signed(SignatureReport),
}

/// How an encryption layer was opened.
#[derive(Debug, Clone)]
pub struct DecryptReport {
    /// Content-encryption algorithm.
    pub content_algorithm: String,
    /// True for AuthEnvelopedData (AES-GCM).
    pub authenticated: bool,
    /// The recipient that matched.
    pub recipient: String,
    /// Key-transport algorithm of that recipient.
    pub key_algorithm: String,
    /// Label of the key that opened it.
    pub key_label: String,
    /// Number of recipients the message had.
    pub recipient_count: usize,
}

/// The result of [`decrypt`] or [`verify`].
#[derive(Debug, Clone)]
pub struct Opened {
    /// The message with the layers removed: outer header fields kept, the
    /// inner entity in place of the S/MIME one, byte for byte.
    pub message: Vec<u8>,
    /// Layers from outside in.
    pub layers: Vec<LayerReport>,
    /// Why unwrapping stopped before the innermost content, when an inner
    /// layer could not be opened (the outer layers stay removed).
    pub stopped: Option<String>,
    /// What was done to the input besides opening layers (a leading mbox
    /// `From ` line or HTTP request line skipped, ...).
    pub notes: Vec<String>,
    /// When the message is a multipart/mixed whose encrypted parts were
    /// opened in place: those parts (1-based) and how many parts it has.
    pub parts_opened: Option<(Vec<usize>, usize)>,
}

impl Opened {
    /// Signature reports, outside in.
    pub fn signatures(&self) -> impl Iterator<Item = &SignatureReport> {
        self.layers.iter().filter_map(|l| match l {
            LayerReport::Signed(s) => Some(s),
            LayerReport::Decrypted(_) => None,
        })
    }

    /// True when there is at least one signature and all are valid.
    pub fn all_signatures_valid(&self) -> bool {
        let mut any = false;
        for s in self.signatures() {
            any = true;
            if !s.valid {
                return false;
            }
        }
        any
    }
}

/// The S/MIME shape of an entity.
pub(crate) enum Shape<'a> {
    /// `application/pkcs7-mime` (or a bare CMS object): encrypted or opaque signed.
    Cms(Box<Parsed>),
    /// `multipart/signed`: the signed part's exact bytes and the signature.
    Detached {
        content: &'a [u8],
        signature: Box<Parsed>,
    },
    /// Anything else.
    Plain(String),
}

fn is_pkcs7_mime(mime_type: &str) -> bool {
    matches!(
        mime_type,
        "application/pkcs7-mime" | "application/x-pkcs7-mime"
    )
}

fn is_pkcs7_signature(mime_type: &str) -> bool {
    matches!(
        mime_type,
        "application/pkcs7-signature" | "application/x-pkcs7-signature"
    )
}

/// Works out what an entity is, parsing its CMS if it has one.
pub(crate) fn shape<'a>(e: &Entity<'a>) -> Result<Shape<'a>> {
    // A bare CMS object (DER, BER or PEM) rather than a mail.
    if e.headers.is_empty() {
        let b = e.body();
        if b.first() == Some(&0x30)
            || b.starts_with(b"-----BEGIN PKCS7")
            || b.starts_with(b"-----BEGIN CMS")
            || b.starts_with(b"-----BEGIN ENCRYPTED MESSAGE-----")
            || b.starts_with(b"-----BEGIN SIGNED MESSAGE-----")
        {
            return Ok(Shape::Cms(Box::new(cmsinfo::parse(b)?)));
        }
    }
    let ct = e.content_type();
    let by_name = ct.mime_type == "application/octet-stream"
        && ct
            .param("name")
            .is_some_and(|n| n.to_ascii_lowercase().ends_with(".p7m"));
    if is_pkcs7_mime(&ct.mime_type) || by_name {
        // OpenSSL's reader takes a pkcs7-mime body as base64 whatever its
        // Content-Transfer-Encoding says; do the same when the declared one
        // is unknown or does not give CMS.
        let declared = e.decoded_body();
        let parsed = match &declared {
            Ok(der) => cmsinfo::parse(der),
            Err(err) => Err(Error::Mime(err.to_string())),
        };
        return match parsed {
            Ok(p) => Ok(Shape::Cms(Box::new(p))),
            Err(first) => match crate::mime::decode_base64(e.body())
                .ok()
                .and_then(|der| cmsinfo::parse(&der).ok())
            {
                Some(p) => Ok(Shape::Cms(Box::new(p))),
                None => Err(match declared {
                    Err(transfer) => transfer,
                    Ok(_) => first,
                }),
            },
        };
    }
    if ct.mime_type == "multipart/signed" {
        // A parameter list broken before it (a stray quote in `protocol`,
        // seen in the wild and by the differential fuzzer) still names
        // the boundary: look for it in the raw field as OpenSSL does.
        let raw_boundary = e
            .header("Content-Type")
            .and_then(|h| boundary_in(&h.unfolded()));
        let boundary = ct
            .param("boundary")
            .map(str::to_string)
            .or(raw_boundary)
            .ok_or_else(|| Error::Mime("multipart/signed without a boundary parameter".into()))?;
        let mp = Multipart::parse(e.body(), &boundary)?;
        if mp.parts.len() != 2 {
            return Err(Error::Mime(format!(
                "multipart/signed must have exactly 2 parts (content, signature), found {}",
                mp.parts.len()
            )));
        }
        let sig = Entity::parse(mp.parts[1]);
        let sig_ct = sig.content_type();
        if !is_pkcs7_signature(&sig_ct.mime_type) {
            return Ok(Shape::Plain(format!(
                "multipart/signed with {} signature",
                sig_ct.mime_type
            )));
        }
        let der = sig.decoded_body()?;
        let parsed = cmsinfo::parse(&der)?;
        if parsed.kind != CmsKind::Signed {
            return Err(Error::MalformedCms(
                "the signature part does not hold SignedData".into(),
            ));
        }
        return Ok(Shape::Detached {
            content: mp.parts[0],
            signature: Box::new(parsed),
        });
    }
    Ok(Shape::Plain(ct.mime_type))
}

/// Puts `inner` (a MIME entity) in place of the content of `outer`,
/// keeping outer fields other than `Content-*`.
pub(crate) fn replace_content(outer: &Entity<'_>, inner: &[u8]) -> Vec<u8> {
    // Content that is not a MIME entity (`openssl smime -encrypt` without
    // `-text`, scripts, invoicing systems): no header and no blank line.
    // Give it a Content-Type and the blank line, so the result stays a
    // message: text/plain for text, else base64 application/octet-stream.
    let wrapped;
    let inner = if Entity::parse(inner).headers.is_empty()
        && !inner.starts_with(b"\r\n")
        && !inner.starts_with(b"\n")
        && !inner.is_empty()
    {
        let crlf = outer.header_bytes().windows(2).any(|w| w == b"\r\n")
            || outer.header_bytes().is_empty();
        wrapped = wrap_non_mime(inner, if crlf { "\r\n" } else { "\n" });
        &wrapped[..]
    } else {
        inner
    };
    let inner_entity = Entity::parse(inner);
    let inner_has_version = inner_entity.header("MIME-Version").is_some();
    let mut out = Vec::with_capacity(outer.header_bytes().len() + inner.len());
    for h in &outer.headers {
        if h.is_content_field()
            || (inner_has_version && h.name.eq_ignore_ascii_case("MIME-Version"))
        {
            continue;
        }
        out.extend_from_slice(h.raw);
        if !h.raw.ends_with(b"\n") {
            out.extend_from_slice(b"\r\n");
        }
    }
    out.extend_from_slice(inner);
    out
}

/// Bare content made an entity (see [`replace_content`]).
fn wrap_non_mime(content: &[u8], eol: &str) -> Vec<u8> {
    let text = std::str::from_utf8(content).is_ok_and(|t| {
        !t.chars()
            .any(|c| c.is_control() && !matches!(c, '\r' | '\n' | '\t' | '\x0c'))
    });
    let mut out = Vec::with_capacity(content.len() + 80);
    if text {
        if content.is_ascii() {
            out.extend_from_slice(format!("Content-Type: text/plain{eol}{eol}").as_bytes());
        } else {
            out.extend_from_slice(
                format!("Content-Type: text/plain; charset=utf-8{eol}Content-Transfer-Encoding: 8bit{eol}{eol}")
                    .as_bytes(),
            );
        }
        out.extend_from_slice(content);
    } else {
        use base64::Engine;
        out.extend_from_slice(
            format!("Content-Type: application/octet-stream{eol}Content-Transfer-Encoding: base64{eol}{eol}")
                .as_bytes(),
        );
        let b64 = base64::engine::general_purpose::STANDARD.encode(content);
        for chunk in b64.as_bytes().chunks(76) {
            out.extend_from_slice(chunk);
            out.extend_from_slice(eol.as_bytes());
        }
    }
    out
}

/// Decrypts one (Auth)EnvelopedData with every key the keyring has for any
/// of its recipients.
pub(crate) fn decrypt_cms(
    parsed: &Parsed,
    keyring: &dyn Keyring,
) -> Result<(Vec<u8>, DecryptReport)> {
    let env = match parsed.envelope() {
        Ok(e) => e,
        // Our parsing layer refuses a structure OpenSSL reads (an OID arc
        // beyond 64 bits in an attribute, ...): let OpenSSL name the
        // recipients and decrypt, and say what could not be inspected.
        Err(why) => return decrypt_opaque_to_us(parsed, keyring, &why.to_string()),
    };
    // Stream modes (CFB, OFB) have neither padding nor a tag: OpenSSL's
    // countermeasure answers an undecryptable key with a random one, and
    // any key "opens" them to garbage. S/MIME uses CBC and GCM only
    // (RFC 8551 §2.7); found by the differential fuzzer.
    const STREAM_MODES: &[&str] = &[
        "2.16.840.1.101.3.4.1.3",  // aes128-OFB
        "2.16.840.1.101.3.4.1.4",  // aes128-CFB
        "2.16.840.1.101.3.4.1.23", // aes192-OFB
        "2.16.840.1.101.3.4.1.24", // aes192-CFB
        "2.16.840.1.101.3.4.1.43", // aes256-OFB
        "2.16.840.1.101.3.4.1.44", // aes256-CFB
        "1.3.14.3.2.8",            // desOFB
        "1.3.14.3.2.9",            // desCFB
    ];
    if STREAM_MODES.contains(&env.content_alg.as_str()) {
        return Err(Error::Unsupported(format!(
            "content encryption {}: a stream mode with no padding or authentication tag, which any key would \"open\" to garbage; S/MIME uses CBC or GCM",
            env.content_alg
        )));
    }
    let mut tried = 0usize;
    let mut last_err = String::new();
    for r in &env.recipients {
        let Some(rid) = &r.rid else { continue };
        for kp in keyring.find(rid) {
            tried += 1;
            // With the certificate, OpenSSL uses only the RecipientInfo that
            // names it: no "any recipient" guessing, which with implicit
            // rejection would "succeed" with a random key.
            let opened = match parsed.ossl.decrypt(&kp.key, &kp.cert) {
                Ok(plain) => Some(plain),
                Err(e) => {
                    last_err = ossl_reason(&e);
                    // A key identifier OpenSSL does not derive itself
                    // (Windows: SHA-1 of the whole SubjectPublicKeyInfo):
                    // decrypt exactly the RecipientInfo that names it.
                    match rid {
                        RecipientId::SubjectKeyId(id) if kp.cert.subject_key_id().is_none() => {
                            decrypt_by_key_id(parsed, id, &kp.key)
                        }
                        _ => None,
                    }
                }
            };
            if let Some(plain) = opened {
                return Ok((
                    plain,
                    DecryptReport {
                        content_algorithm: env.content_alg.clone(),
                        authenticated: env.auth,
                        recipient: rid.to_string(),
                        key_algorithm: r.key_alg.clone(),
                        key_label: kp.label.clone(),
                        recipient_count: env.recipients.len(),
                    },
                ));
            }
        }
    }
    if tried == 0 {
        let recipients = if env.recipients.is_empty() {
            vec!["(the message has no recipients)".to_string()]
        } else {
            env.recipients
                .iter()
                .map(|r| match &r.rid {
                    Some(rid) => rid.to_string(),
                    None => format!("{} recipient ({})", r.kind, r.key_alg),
                })
                .collect()
        };
        return Err(Error::NoMatchingKey { recipients });
    }
    // AuthEnvelopedData (GCM): OpenSSL reports a tag mismatch as an
    // "unknown" error; say what it means.
    if parsed.kind == CmsKind::AuthEnveloped
        && (last_err.contains("unknown OpenSSL error") || last_err.contains("cipher final"))
    {
        last_err = "the authentication tag does not match: the message was altered after it was encrypted (or the key is not the one it was encrypted to)".into();
    } else if last_err.contains("bad decrypt") {
        // CBC padding wrong after decryption: the key recovered does not
        // decrypt the content (a wrong key gives a random one under RSA
        // implicit rejection; some senders label the cipher wrongly).
        last_err = format!(
            "the content did not decrypt ({last_err}): the message was damaged, its cipher is labelled wrongly (e.g. AES-128 named but another key size used), or the key is not the one it was encrypted to"
        );
    }
    Err(Error::DecryptFailed(format!(
        "{tried} matching key(s) tried, content {}: {last_err}",
        env.content_alg
    )))
}

/// The key-transport RecipientInfos as OpenSSL reads them, each with the
/// identifier it names its certificate by.
fn ossl_recipients(parsed: &Parsed) -> Vec<(*mut crate::ffi::CMS_RecipientInfo, RecipientId)> {
    use foreign_types_shared::{ForeignType, ForeignTypeRef};
    let mut out = Vec::new();
    // SAFETY: get0 pointers into the CMS object `parsed` owns, read while
    // it is alive (the caller uses them before `parsed` goes).
    unsafe {
        let ris = crate::ffi::CMS_get0_RecipientInfos(parsed.ossl.as_ptr());
        if ris.is_null() {
            return out;
        }
        for i in 0..openssl_sys::OPENSSL_sk_num(ris) {
            let ri = openssl_sys::OPENSSL_sk_value(ris, i) as *mut crate::ffi::CMS_RecipientInfo;
            if crate::ffi::CMS_RecipientInfo_type(ri) != crate::ffi::CMS_RECIPINFO_TRANS {
                continue;
            }
            let mut keyid: *mut openssl_sys::ASN1_OCTET_STRING = std::ptr::null_mut();
            let mut issuer: *mut openssl_sys::X509_NAME = std::ptr::null_mut();
            let mut sno: *mut openssl_sys::ASN1_INTEGER = std::ptr::null_mut();
            if crate::ffi::CMS_RecipientInfo_ktri_get0_signer_id(
                ri,
                &mut keyid,
                &mut issuer,
                &mut sno,
            ) != 1
            {
                continue;
            }
            if !keyid.is_null() {
                let p = openssl_sys::ASN1_STRING_get0_data(keyid as *const _);
                let n = openssl_sys::ASN1_STRING_length(keyid as *const _);
                out.push((
                    ri,
                    RecipientId::SubjectKeyId(
                        std::slice::from_raw_parts(p, n.max(0) as usize).to_vec(),
                    ),
                ));
            } else if !issuer.is_null() && !sno.is_null() {
                let name = openssl::x509::X509NameRef::from_ptr(issuer).to_der().ok();
                let serial = crate::keyring::integer_octets(sno);
                if let (Some(issuer), Some(serial)) = (name, serial) {
                    out.push((ri, RecipientId::IssuerSerial { issuer, serial }));
                }
            }
        }
    }
    out
}

/// Decrypts with `key` exactly the RecipientInfo `ri` (never any other:
/// with implicit rejection a wrong one would "succeed" with a random key),
/// then the content.
fn decrypt_ri(
    parsed: &Parsed,
    ri: *mut crate::ffi::CMS_RecipientInfo,
    key: &openssl::pkey::PKey<openssl::pkey::Private>,
) -> std::result::Result<Vec<u8>, String> {
    use foreign_types_shared::ForeignType;
    let cms = parsed.ossl.as_ptr();
    // SAFETY: `ri` belongs to `cms`, alive here; the key is set on the
    // RecipientInfo with a reference of its own and taken back (set0 NULL
    // frees that reference); the BIO is freed on every path.
    unsafe {
        openssl_sys::EVP_PKEY_up_ref(key.as_ptr());
        crate::ffi::CMS_RecipientInfo_set0_pkey(ri, key.as_ptr());
        let ok = crate::ffi::CMS_RecipientInfo_decrypt(cms, ri);
        crate::ffi::CMS_RecipientInfo_set0_pkey(ri, std::ptr::null_mut());
        if ok != 1 {
            return Err(ossl_reason(&openssl::error::ErrorStack::get()));
        }
        let out = openssl_sys::BIO_new(openssl_sys::BIO_s_mem());
        if out.is_null() {
            return Err("out of memory".into());
        }
        let ok = crate::ffi::CMS_decrypt(
            cms,
            std::ptr::null_mut(),
            std::ptr::null_mut(),
            std::ptr::null_mut(),
            out,
            crate::ffi::CMS_BINARY,
        );
        let mut data: *mut std::os::raw::c_char = std::ptr::null_mut();
        // BIO_get_mem_data (BIO_CTRL_INFO = 3).
        let len =
            openssl_sys::BIO_ctrl(out, 3, 0, &mut data as *mut _ as *mut std::os::raw::c_void);
        let plain = if ok == 1 && len >= 0 && !data.is_null() {
            Ok(std::slice::from_raw_parts(data as *const u8, len as usize).to_vec())
        } else {
            Err(ossl_reason(&openssl::error::ErrorStack::get()))
        };
        openssl_sys::BIO_free_all(out);
        plain
    }
}

/// Decrypts with `key` the RecipientInfo whose subjectKeyIdentifier is `id`.
fn decrypt_by_key_id(
    parsed: &Parsed,
    id: &[u8],
    key: &openssl::pkey::PKey<openssl::pkey::Private>,
) -> Option<Vec<u8>> {
    let (ri, _) = ossl_recipients(parsed)
        .into_iter()
        .find(|(_, rid)| matches!(rid, RecipientId::SubjectKeyId(k) if k.as_slice() == id))?;
    decrypt_ri(parsed, ri, key).ok()
}

/// An EnvelopedData our parsing layer refuses (`why`) but OpenSSL reads:
/// OpenSSL names the recipients, the keyring finds their keys, and each
/// RecipientInfo is decrypted with its own key only. The report says what
/// could not be inspected.
fn decrypt_opaque_to_us(
    parsed: &Parsed,
    keyring: &dyn Keyring,
    why: &str,
) -> Result<(Vec<u8>, DecryptReport)> {
    let recipients = ossl_recipients(parsed);
    let mut tried = 0;
    let mut last_err = String::new();
    for (ri, rid) in &recipients {
        for kp in keyring.find(rid) {
            tried += 1;
            // OpenSSL's own path first (it opens the RecipientInfo that
            // names the certificate), then exactly this RecipientInfo (for
            // identifiers OpenSSL does not derive).
            let opened = parsed
                .ossl
                .decrypt(&kp.key, &kp.cert)
                .map_err(|e| ossl_reason(&e))
                .or_else(|_| decrypt_ri(parsed, *ri, &kp.key));
            match opened {
                Ok(plain) => {
                    return Ok((
                        plain,
                        DecryptReport {
                            content_algorithm: format!("(not inspected: {why})"),
                            authenticated: parsed.kind == CmsKind::AuthEnveloped,
                            recipient: rid.to_string(),
                            key_algorithm: "(not inspected)".into(),
                            key_label: kp.label.clone(),
                            recipient_count: recipients.len(),
                        },
                    ));
                }
                Err(e) => last_err = e,
            }
        }
    }
    if tried == 0 {
        return Err(Error::NoMatchingKey {
            recipients: if recipients.is_empty() {
                vec![format!(
                    "(OpenSSL names no key-transport recipient; the structure could not be inspected: {why})"
                )]
            } else {
                recipients.iter().map(|(_, r)| r.to_string()).collect()
            },
        });
    }
    Err(Error::DecryptFailed(format!(
        "{tried} matching key(s) tried (the structure could not be inspected: {why}): {last_err}"
    )))
}

/// `boundary=<value>` anywhere in a Content-Type field value (quoted or
/// not), for a parameter list the strict parser cannot read.
fn boundary_in(value: &str) -> Option<String> {
    let lower = value.to_ascii_lowercase();
    let mut from = 0;
    while let Some(i) = lower[from..].find("boundary") {
        let at = from + i + "boundary".len();
        let rest = value[at..].trim_start();
        if let Some(v) = rest.strip_prefix('=') {
            let v = v.trim_start();
            let b = if let Some(q) = v.strip_prefix('"') {
                q.split('"').next().unwrap_or_default()
            } else {
                v.split(|c: char| c == ';' || c.is_whitespace())
                    .next()
                    .unwrap_or_default()
            };
            if !b.is_empty() && b.len() <= 70 {
                return Some(b.to_string());
            }
        }
        from = at;
    }
    None
}

/// What `open` should take off.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
    Decrypt,
    Verify,
}

/// Maximum nesting: more than this many layers is an attack, not a mail.
const MAX_LAYERS: usize = 16;

/// Decrypts a message: removes every encryption layer, and any signature
/// layer that wraps one (verifying it when `trust` is given). Signatures
/// inside the encryption are kept intact so they can be verified later.
pub fn decrypt(
    message: &[u8],
    keyring: &dyn Keyring,
    trust: Option<&TrustStore>,
) -> Result<Opened> {
    open(message, Some(keyring), trust, Mode::Decrypt)
}

/// Verifies a message: removes every signature layer, verifying each, and
/// every encryption layer on the way when a keyring is given.
pub fn verify(message: &[u8], trust: &TrustStore, keyring: Option<&dyn Keyring>) -> Result<Opened> {
    open(message, keyring, Some(trust), Mode::Verify)
}

fn open(
    message: &[u8],
    keyring: Option<&dyn Keyring>,
    trust: Option<&TrustStore>,
    mode: Mode,
) -> Result<Opened> {
    crate::init();
    let mut notes = Vec::new();
    let (skip, what) = envelope_line(message);
    if let Some(w) = what {
        notes.push(format!("skipped the leading {w} (not part of the message)"));
    }
    let body = &message[skip..];
    if mode == Mode::Decrypt
        && let Some(kr) = keyring
        && let Some(opened) = open_mixed(body, kr, trust, &mut notes)?
    {
        return Ok(opened);
    }
    let mut current: Cow<'_, [u8]> = Cow::Borrowed(body);
    let mut layers = Vec::new();
    let mut stopped = None;
    for _ in 0..MAX_LAYERS {
        let entity = Entity::parse(&current);
        let step = next_layer(&entity, &mut layers, keyring, trust, mode);
        match step {
            Ok(Some(next)) => current = Cow::Owned(next),
            Ok(None) => break,
            // Nothing taken off yet: the message itself is the problem.
            Err(e) if layers.is_empty() => return Err(e),
            // A layer is off already: keep what was opened, say why it stopped.
            Err(e) => {
                stopped = Some(e.to_string());
                break;
            }
        }
    }
    Ok(Opened {
        message: current.into_owned(),
        layers,
        stopped,
        notes,
        parts_opened: None,
    })
}

/// A multipart/mixed message with encrypted parts beside others: an
/// encrypted message an MTA added a disclaimer or footer part to, or mail
/// with an encrypted attachment. Each encrypted part is opened in place
/// (its layers reported in order); the other parts stay byte for byte.
/// `None` when the message is not such a multipart/mixed; an error when
/// no encrypted part could be opened.
fn open_mixed(
    message: &[u8],
    keyring: &dyn Keyring,
    trust: Option<&TrustStore>,
    notes: &mut Vec<String>,
) -> Result<Option<Opened>> {
    let entity = Entity::parse(message);
    let ct = entity.content_type();
    if ct.mime_type != "multipart/mixed" {
        return Ok(None);
    }
    let Some(boundary) = ct.param("boundary") else {
        return Ok(None);
    };
    let Ok(mp) = Multipart::parse(entity.body(), boundary) else {
        return Ok(None);
    };
    let encrypted: Vec<(usize, &[u8])> = mp
        .parts
        .iter()
        .enumerate()
        .filter(|(_, p)| entity_is_encrypted(p, 1))
        .map(|(i, p)| (i, *p))
        .collect();
    if encrypted.is_empty() {
        return Ok(None);
    }
    let total = mp.parts.len();
    let base = message.as_ptr() as usize;
    let mut out = Vec::with_capacity(message.len());
    let mut copied = 0;
    let mut layers = Vec::new();
    let mut stopped = None;
    let mut first_error = None;
    let mut opened_parts = Vec::new();
    for (i, part) in encrypted {
        let opened = match open(part, Some(keyring), trust, Mode::Decrypt) {
            Ok(o) => o,
            Err(e) => {
                notes.push(format!(
                    "part {} of {total} of the multipart/mixed is encrypted and was left as it is: {e}",
                    i + 1
                ));
                first_error.get_or_insert(e);
                continue;
            }
        };
        // The part is a slice of `message`: replace exactly its bytes.
        let start = part.as_ptr() as usize - base;
        out.extend_from_slice(&message[copied..start]);
        out.extend_from_slice(&opened.message);
        copied = start + part.len();
        notes.push(format!(
            "part {} of {total} of the multipart/mixed was encrypted and is opened in place (the other parts, added beside it by the sender or a relay, are not protected)",
            i + 1
        ));
        opened_parts.push(i + 1);
        notes.extend(opened.notes);
        layers.extend(opened.layers);
        if stopped.is_none() {
            stopped = opened.stopped;
        }
    }
    if layers.is_empty() {
        return match first_error {
            Some(e) => Err(e),
            None => Ok(None),
        };
    }
    out.extend_from_slice(&message[copied..]);
    Ok(Some(Opened {
        message: out,
        layers,
        stopped,
        notes: std::mem::take(notes),
        parts_opened: Some((opened_parts, total)),
    }))
}

/// A first line that belongs to the envelope, not to the message: the
/// `From ` line of an mbox (Postfix `pipe(8)` flag `F`, procmail, mbox
/// exports) or an HTTP request or status line (AS2 files). How many bytes
/// to skip, and what it was.
pub(crate) fn envelope_line(message: &[u8]) -> (usize, Option<&'static str>) {
    let end = message
        .iter()
        .position(|&b| b == b'\n')
        .map_or(message.len(), |i| i + 1);
    let line = &message[..end];
    let text = String::from_utf8_lossy(line);
    let t = text.trim_end();
    if t.starts_with("From ") {
        return (end, Some("mbox `From ` line"));
    }
    let words: Vec<&str> = t.split(' ').collect();
    let http_version = |w: &str| {
        w.strip_prefix("HTTP/")
            .is_some_and(|v| v.len() == 3 && v.as_bytes()[1] == b'.')
    };
    if words.len() == 3
        && words[0].bytes().all(|b| b.is_ascii_uppercase())
        && !words[0].is_empty()
        && words[1].starts_with('/')
        && http_version(words[2])
    {
        return (end, Some("HTTP request line"));
    }
    if words.len() >= 2
        && http_version(words[0])
        && words[1].len() == 3
        && words[1].bytes().all(|b| b.is_ascii_digit())
    {
        return (end, Some("HTTP status line"));
    }
    (0, None)
}

/// Takes one layer off `entity`: the next message, `None` to stop here.
fn next_layer(
    entity: &Entity<'_>,
    layers: &mut Vec<LayerReport>,
    keyring: Option<&dyn Keyring>,
    trust: Option<&TrustStore>,
    mode: Mode,
) -> Result<Option<Vec<u8>>> {
    Ok(Some(match shape(entity)? {
        Shape::Plain(ct) => {
            if layers.is_empty() {
                let expected = if mode == Mode::Decrypt {
                    "encrypted"
                } else {
                    "signed"
                };
                // A first line that is no header field: not a message at
                // all, rather than silently a text/plain body.
                let first = entity.raw.split(|&b| b == b'\n').next().unwrap_or_default();
                let content_type = if entity.headers.is_empty()
                    && !first.iter().all(|b| b.is_ascii_whitespace())
                {
                    format!(
                        "none: line 1 is not a header field: {:?}",
                        String::from_utf8_lossy(&first[..first.len().min(60)]).trim_end()
                    )
                } else {
                    ct
                };
                return Err(Error::NotSmime {
                    expected,
                    content_type,
                });
            }
            return Ok(None);
        }
        Shape::Cms(parsed) => match parsed.kind {
            CmsKind::Enveloped | CmsKind::AuthEnveloped => {
                let Some(kr) = keyring else {
                    if layers.is_empty() {
                        return Err(Error::NotSmime {
                            expected: "signed",
                            content_type: "encrypted (decrypt it first, or give keys)".into(),
                        });
                    }
                    return Ok(None);
                };
                let (plain, rep) = decrypt_cms(&parsed, kr)?;
                layers.push(LayerReport::Decrypted(rep));
                replace_content(entity, &plain)
            }
            CmsKind::Signed => {
                if mode == Mode::Decrypt && !signed_wraps_encryption(&parsed, 0)? {
                    if layers.is_empty() {
                        return Err(Error::NotSmime {
                            expected: "encrypted",
                            content_type: "signed only (use verify)".into(),
                        });
                    }
                    return Ok(None);
                }
                let (rep, content) = verify_signed(*parsed, None, trust)?;
                let empty = content.is_empty();
                layers.push(LayerReport::Signed(rep));
                if empty {
                    // Never replace a layer by nothing.
                    return Ok(None);
                }
                replace_content(entity, &content)
            }
            CmsKind::Other => {
                return Err(Error::Unsupported(format!(
                    "CMS content type {}",
                    parsed.oid
                )));
            }
        },
        Shape::Detached { content, signature } => {
            if mode == Mode::Decrypt && !entity_is_encrypted(content, 0) {
                if layers.is_empty() {
                    return Err(Error::NotSmime {
                        expected: "encrypted",
                        content_type: "multipart/signed (use verify)".into(),
                    });
                }
                return Ok(None);
            }
            let (rep, _) = verify_signed(*signature, Some(content), trust)?;
            layers.push(LayerReport::Signed(rep));
            replace_content(entity, content)
        }
    }))
}

/// For decrypt: does an opaque signature hold an encrypted entity?
fn signed_wraps_encryption(parsed: &Parsed, depth: usize) -> Result<bool> {
    let sd = parsed.signed_data()?;
    Ok(cmsinfo::econtent(&sd).is_some_and(|bytes| entity_is_encrypted(&bytes, depth + 1)))
}

/// Is there an encryption layer in this entity, directly or under signatures?
fn entity_is_encrypted(raw: &[u8], depth: usize) -> bool {
    if depth > MAX_LAYERS {
        return false;
    }
    match shape(&Entity::parse(raw)) {
        Ok(Shape::Cms(p)) => match p.kind {
            CmsKind::Enveloped | CmsKind::AuthEnveloped => true,
            CmsKind::Signed => signed_wraps_encryption(&p, depth).unwrap_or(false),
            CmsKind::Other => false,
        },
        Ok(Shape::Detached { content, .. }) => entity_is_encrypted(content, depth + 1),
        _ => false,
    }
}
