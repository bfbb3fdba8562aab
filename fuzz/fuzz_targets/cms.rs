//! CMS parsing through every entry point that takes untrusted bytes:
//! inspect, decrypt (with a real key, so RecipientInfo matching runs) and
//! verify, both as a bare CMS object and wrapped in a MIME message.
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use openssl::pkey::PKey;
use openssl::rsa::Rsa;
use smime::{KeyPair, MemoryKeyring, TrustStore};

struct Ctx {
    keyring: MemoryKeyring,
    trust: TrustStore,
}

fn ctx() -> &'static Ctx {
    static C: OnceLock<Ctx> = OnceLock::new();
    C.get_or_init(|| {
        smime::init();
        let key = PKey::from_rsa(Rsa::generate(2048).unwrap()).unwrap();
        let mut name = openssl::x509::X509NameBuilder::new().unwrap();
        name.append_entry_by_text("CN", "fuzz").unwrap();
        let name = name.build();
        let mut b = openssl::x509::X509Builder::new().unwrap();
        b.set_subject_name(&name).unwrap();
        b.set_issuer_name(&name).unwrap();
        b.set_pubkey(&key).unwrap();
        b.set_not_before(&openssl::asn1::Asn1Time::days_from_now(0).unwrap()).unwrap();
        b.set_not_after(&openssl::asn1::Asn1Time::days_from_now(1).unwrap()).unwrap();
        b.sign(&key, openssl::hash::MessageDigest::sha256()).unwrap();
        let cert = b.build();
        let mut keyring = MemoryKeyring::new();
        keyring.add(KeyPair::new(key, cert.clone(), vec![], "fuzz").unwrap());
        Ctx { keyring, trust: TrustStore::new(vec![cert], vec![], vec![]).unwrap() }
    })
}

fuzz_target!(|data: &[u8]| {
    let c = ctx();
    let _ = smime::inspect(data);
    let _ = smime::decrypt(data, &c.keyring, None);
    let _ = smime::verify(data, &c.trust, Some(&c.keyring));
    let _ = smime::verify_cms(data, Some(b"content"), &c.trust);
    let mut mail = b"Content-Type: application/pkcs7-mime\r\nContent-Transfer-Encoding: binary\r\n\r\n".to_vec();
    mail.extend_from_slice(data);
    let _ = smime::decrypt(&mail, &c.keyring, None);
});
