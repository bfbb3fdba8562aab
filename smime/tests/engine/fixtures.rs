//! Keys and certificates made once per test run, and the way to the shared
//! test vectors.

use std::sync::OnceLock;

use openssl::asn1::{Asn1Integer, Asn1Time};
use openssl::bn::BigNum;
use openssl::ec::{EcGroup, EcKey};
use openssl::hash::MessageDigest;
use openssl::nid::Nid;
use openssl::pkey::{PKey, Private};
use openssl::rsa::Rsa;
use openssl::x509::extension::{
    BasicConstraints, KeyUsage, SubjectAlternativeName, SubjectKeyIdentifier,
};
use openssl::x509::{X509, X509Builder, X509NameBuilder};
use smime::{KeyPair, MemoryKeyring, TrustStore};

pub struct Fixtures {
    pub ca: X509,
    pub alice: (PKey<Private>, X509),
    pub bob: (PKey<Private>, X509),
    pub carol_ec: (PKey<Private>, X509),
}

fn build(
    issuer: Option<(&X509, &PKey<Private>)>,
    key: &PKey<Private>,
    cn: &str,
    serial: u32,
) -> X509 {
    issue(issuer, key, cn, &format!("{serial:X}"), None, true)
}

/// A certificate valid for 30 days from now: a CA when there is no
/// issuer, else a leaf for signing and encryption with an address
/// `<cn>@example.test`; `serial_hex` may be negative (`-0123`), `eku` is
/// one extendedKeyUsage (OpenSSL's name or an OID), `ski` adds a
/// subjectKeyIdentifier.
pub fn issue(
    issuer: Option<(&X509, &PKey<Private>)>,
    key: &PKey<Private>,
    cn: &str,
    serial_hex: &str,
    eku: Option<&str>,
    ski: bool,
) -> X509 {
    let mut n = X509NameBuilder::new().unwrap();
    n.append_entry_by_nid(Nid::COMMONNAME, cn).unwrap();
    let n = n.build();
    let mut b = X509Builder::new().unwrap();
    b.set_version(2).unwrap();
    b.set_serial_number(&Asn1Integer::from_bn(&BigNum::from_hex_str(serial_hex).unwrap()).unwrap())
        .unwrap();
    b.set_subject_name(&n).unwrap();
    b.set_issuer_name(issuer.map_or(&n, |(c, _)| c.subject_name()))
        .unwrap();
    b.set_pubkey(key).unwrap();
    b.set_not_before(&Asn1Time::days_from_now(0).unwrap())
        .unwrap();
    b.set_not_after(&Asn1Time::days_from_now(30).unwrap())
        .unwrap();
    if issuer.is_none() {
        b.append_extension(BasicConstraints::new().critical().ca().build().unwrap())
            .unwrap();
        b.append_extension(KeyUsage::new().key_cert_sign().crl_sign().build().unwrap())
            .unwrap();
    } else {
        b.append_extension(
            KeyUsage::new()
                .digital_signature()
                .key_encipherment()
                .build()
                .unwrap(),
        )
        .unwrap();
        if let Some(e) = eku {
            let mut x = openssl::x509::extension::ExtendedKeyUsage::new();
            x.other(e);
            b.append_extension(x.build().unwrap()).unwrap();
        }
        let ctx = b.x509v3_context(issuer.map(|(c, _)| &**c), None);
        let san = SubjectAlternativeName::new()
            .email(&format!("{cn}@example.test"))
            .build(&ctx)
            .unwrap();
        b.append_extension(san).unwrap();
    }
    if ski {
        let ski = SubjectKeyIdentifier::new()
            .build(&b.x509v3_context(None, None))
            .unwrap();
        b.append_extension(ski).unwrap();
    }
    b.sign(issuer.map_or(key, |(_, k)| k), MessageDigest::sha256())
        .unwrap();
    b.build()
}

pub fn fx() -> &'static Fixtures {
    static F: OnceLock<Fixtures> = OnceLock::new();
    F.get_or_init(|| {
        smime::init();
        let rsa = || PKey::from_rsa(Rsa::generate(2048).unwrap()).unwrap();
        let ca_key = rsa();
        let ca = build(None, &ca_key, "Roundtrip CA", 1);
        let user = |k: PKey<Private>, cn: &str, serial| {
            let c = build(Some((&ca, &ca_key)), &k, cn, serial);
            (k, c)
        };
        let ec = PKey::from_ec_key(
            EcKey::generate(&EcGroup::from_curve_name(Nid::X9_62_PRIME256V1).unwrap()).unwrap(),
        )
        .unwrap();
        Fixtures {
            alice: user(rsa(), "alice", 2),
            bob: user(rsa(), "bob", 3),
            carol_ec: user(ec, "carol", 4),
            ca,
        }
    })
}

pub fn pair(p: &(PKey<Private>, X509), label: &str) -> KeyPair {
    KeyPair::new(p.0.clone(), p.1.clone(), vec![fx().ca.clone()], label).unwrap()
}

pub fn keyring(pairs: &[(&(PKey<Private>, X509), &str)]) -> MemoryKeyring {
    let mut kr = MemoryKeyring::new();
    for (p, l) in pairs {
        kr.add(pair(p, l));
    }
    kr
}

pub fn trust() -> TrustStore {
    TrustStore::new(vec![fx().ca.clone()], vec![], vec![]).unwrap()
}

/// `../shared/testvectors`, or `None` with a loud message when it is absent
/// (a failure under `SIKKERMAIL_REQUIRE_PEERS=1`, as in CI, where it is
/// always present).
pub fn vectors() -> Option<std::path::PathBuf> {
    let p = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/testvectors");
    if p.is_dir() {
        return Some(p);
    }
    assert!(
        std::env::var("SIKKERMAIL_REQUIRE_PEERS").as_deref() != Ok("1"),
        "test vectors missing at {} and SIKKERMAIL_REQUIRE_PEERS=1",
        p.display()
    );
    eprintln!(
        "!!! SKIPPING test: test vectors not found at {}",
        p.display()
    );
    None
}

/// A certificate file, PEM or DER.
pub fn cert(p: &std::path::Path) -> X509 {
    let b = std::fs::read(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
    X509::from_pem(&b).or_else(|_| X509::from_der(&b)).unwrap()
}

/// .NET's `RSAKeyTransfer1.pfx` (password `1111`) from `dotnet-pkcs/`.
pub fn dotnet_keyring(tv: &std::path::Path) -> MemoryKeyring {
    let pfx = std::fs::read(tv.join("dotnet-pkcs/RSAKeyTransfer1.pfx")).unwrap();
    let mut kr = MemoryKeyring::new();
    kr.add(KeyPair::from_file_bytes(&pfx, Some("1111"), "pfx").unwrap());
    kr
}
