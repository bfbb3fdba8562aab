#![allow(dead_code)]
//! Shared by the differential targets: the fixed key and certificates the
//! seeds are made for (`fuzz/keys/`, made once with the openssl CLI), and
//! where disagreements are written.

use std::ptr;
use std::sync::OnceLock;

use foreign_types::ForeignType;
use openssl::cms::CmsContentInfo;
use std::sync::atomic::{AtomicUsize, Ordering};

use openssl::pkey::{PKey, Private};
use openssl::x509::X509;
use openssl::x509::store::{X509Store, X509StoreBuilder};
use smime::{KeyPair, MemoryKeyring, TrustStore};

pub struct Ctx {
    pub key: PKey<Private>,
    pub cert: X509,
    pub keyring: MemoryKeyring,
    pub trust: TrustStore,
    pub store: X509Store,
}

pub fn ctx() -> &'static Ctx {
    static C: OnceLock<Ctx> = OnceLock::new();
    C.get_or_init(|| {
        smime::init();
        let leaf = include_bytes!("../keys/leaf.pem");
        let ca = X509::from_pem(include_bytes!("../keys/ca.pem")).unwrap();
        let key = PKey::private_key_from_pem(leaf).unwrap();
        let cert = X509::from_pem(leaf).unwrap();
        let mut keyring = MemoryKeyring::new();
        keyring.add(KeyPair::new(key.clone(), cert.clone(), vec![ca.clone()], "fuzz").unwrap());
        let trust = TrustStore::new(vec![ca.clone()], vec![], vec![]).unwrap();
        let mut b = X509StoreBuilder::new().unwrap();
        b.add_cert(ca).unwrap();
        Ctx { key, cert, keyring, trust, store: b.build() }
    })
}

/// Writes a disagreement's input to `findings/<target>/<kind>-<n>` (at
/// most 25 per kind, so a long run does not fill the disk) and counts it.
pub fn finding(target: &str, kind: &str, data: &[u8]) {
    static SEEN: OnceLock<std::sync::Mutex<std::collections::HashMap<String, usize>>> =
        OnceLock::new();
    static TOTAL: AtomicUsize = AtomicUsize::new(0);
    let n = {
        let mut m = SEEN.get_or_init(Default::default).lock().unwrap();
        let c = m.entry(kind.to_string()).or_insert(0);
        *c += 1;
        *c
    };
    let total = TOTAL.fetch_add(1, Ordering::Relaxed) + 1;
    if n <= 25 {
        let dir = std::path::Path::new("findings").join(target);
        let _ = std::fs::create_dir_all(&dir);
        let _ = std::fs::write(dir.join(format!("{kind}-{n}")), data);
    }
    if total.is_power_of_two() {
        eprintln!("DIFF {target}: {total} disagreements so far (latest: {kind})");
    }
}

/// `SMIME_read_CMS` keeping the detached content (the `openssl` crate's
/// wrapper drops it), and clearing OpenSSL's error queue itself: the
/// crate's `ErrorStack::get` panics when the error data (which for
/// SMIME_read_CMS echoes the input's Content-Type) is not UTF-8.
pub fn read_with_content(data: &[u8]) -> Option<(CmsContentInfo, Option<Vec<u8>>)> {
    unsafe {
        let bio = openssl_sys::BIO_new_mem_buf(data.as_ptr() as *const _, data.len() as _);
        if bio.is_null() {
            return None;
        }
        let mut bcont: *mut openssl_sys::BIO = ptr::null_mut();
        let cms = openssl_sys::SMIME_read_CMS(bio, &mut bcont);
        openssl_sys::BIO_free_all(bio);
        if cms.is_null() {
            openssl_sys::ERR_clear_error();
            return None;
        }
        let content = if bcont.is_null() {
            None
        } else {
            let mut out = Vec::new();
            let mut buf = [0u8; 4096];
            loop {
                let n = openssl_sys::BIO_read(bcont, buf.as_mut_ptr() as *mut _, buf.len() as _);
                if n <= 0 {
                    break;
                }
                out.extend_from_slice(&buf[..n as usize]);
            }
            openssl_sys::BIO_free_all(bcont);
            Some(out)
        };
        Some((CmsContentInfo::from_ptr(cms), content))
    }
}

/// A stable class of an engine error: its variant, not its text (which
/// echoes the input).
pub fn class(e: &smime::Error) -> String {
    format!("{e:?}")
        .split(|c: char| !c.is_ascii_alphanumeric())
        .next()
        .unwrap_or("Error")
        .to_string()
}

/// A stable class of why a signature was not valid.
pub fn reason_class(why: &str) -> &'static str {
    const KNOWN: &[(&str, &str)] = &[
        ("signature value is wrong", "bad-signature"),
        ("does not match its signature", "content-altered"),
        ("signer certificate not found", "signer-not-found"),
        ("no content", "no-content"),
        ("unsuitable certificate purpose", "purpose"),
        ("policy", "policy"),
        ("expired", "expired"),
        ("not yet valid", "not-yet-valid"),
        ("certificate", "chain"),
        ("algorithm", "algorithm"),
    ];
    KNOWN
        .iter()
        .find(|(k, _)| why.contains(k))
        .map_or("other", |(_, c)| c)
}
