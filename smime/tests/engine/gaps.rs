//! Issue 12 §1: inputs OpenSSL opens that the engine refused, each with a
//! test that failed before its fix (real vectors from `../shared/testvectors`
//! where there is one, otherwise made here with the linked OpenSSL).

use std::fs;
use std::path::{Path, PathBuf};

use openssl::pkey::PKey;
use openssl::x509::X509;
use smime::{KeyPair, MemoryKeyring};

fn vectors() -> Option<PathBuf> {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/testvectors");
    if p.is_dir() {
        return Some(p);
    }
    assert!(
        std::env::var("SIKKERMAIL_REQUIRE_PEERS").as_deref() != Ok("1"),
        "test vectors missing at {} and SIKKERMAIL_REQUIRE_PEERS=1",
        p.display()
    );
    eprintln!("!!! SKIPPING gap test: {} not found", p.display());
    None
}

fn cert(p: &Path) -> X509 {
    let b = fs::read(p).unwrap();
    X509::from_pem(&b).or_else(|_| X509::from_der(&b)).unwrap()
}

fn gnupg_keyring(tv: &Path) -> MemoryKeyring {
    let g = tv.join("gnupg");
    let mut kr = MemoryKeyring::new();
    let mut pem = fs::read(g.join("g10test1.key.pem")).unwrap();
    pem.extend(fs::read(g.join("g10test1.crt.pem")).unwrap());
    kr.add(KeyPair::from_file_bytes(&pem, None, "g10test1").unwrap());
    kr
}

/// gpgsm's armour (`-----BEGIN ENCRYPTED MESSAGE-----`) is read as it is,
/// and opens to the same as the DER form.
#[test]
fn gpgsm_armour_is_accepted() {
    let Some(tv) = vectors() else { return };
    let kr = gnupg_keyring(&tv);
    let g = tv.join("gnupg");
    for n in ["plain-1", "plain-2", "plain-3"] {
        let asc = smime::decrypt(&fs::read(g.join(format!("{n}.cms.asc"))).unwrap(), &kr, None)
            .unwrap_or_else(|e| panic!("{n}.cms.asc: {e}"));
        let der = smime::decrypt(&fs::read(g.join(format!("{n}.cms.der"))).unwrap(), &kr, None)
            .unwrap();
        assert_eq!(asc.message, der.message, "{n}");
    }
    // SIGNED MESSAGE armour goes the same way (a signature made here).
    let der = fs::read(g.join("plain-1.cms.der")).unwrap();
    let b64 = smime::mime::encode_base64_lines(&der);
    let text = format!(
        "-----BEGIN ENCRYPTED MESSAGE-----\n{}-----END ENCRYPTED MESSAGE-----\n",
        String::from_utf8(b64).unwrap()
    );
    assert!(smime::decrypt(text.as_bytes(), &kr, None).is_ok());
    let bad = "-----BEGIN ENCRYPTED MESSAGE-----\nMIAG\n";
    let e = smime::decrypt(bad.as_bytes(), &kr, None).unwrap_err();
    assert!(e.to_string().contains("END ENCRYPTED MESSAGE"), "{e}");
}

/// A leading mbox `From ` line (KMail's mbox, Postfix `pipe` flag F) is
/// skipped and reported, not taken for the start of a text/plain body.
#[test]
fn mbox_from_line_is_skipped_and_reported() {
    let Some(tv) = vectors() else { return };
    let k = tv.join("kde-mimetreeparser");
    let mut kr = MemoryKeyring::new();
    let mut pem = fs::read(k.join("unittest-cert.key.pem")).unwrap();
    pem.extend(fs::read(k.join("unittest-cert.crt.pem")).unwrap());
    kr.add(KeyPair::from_file_bytes(&pem, None, "kde").unwrap());
    let raw = fs::read(k.join("smime-encrypted.mbox")).unwrap();
    assert!(raw.starts_with(b"From "));
    let opened = smime::decrypt(&raw, &kr, None).unwrap();
    assert!(
        opened.notes.iter().any(|n| n.contains("mbox `From ` line")),
        "{:?}",
        opened.notes
    );
    assert!(!opened.message.starts_with(b"From "));
    // An HTTP request line (AS2) likewise.
    let mut as2 = b"POST /as2 HTTP/1.1\r\n".to_vec();
    as2.extend_from_slice(&raw[raw.iter().position(|&b| b == b'\n').unwrap() + 1..]);
    let opened = smime::decrypt(&as2, &kr, None).unwrap();
    assert!(opened.notes.iter().any(|n| n.contains("HTTP request line")));
    // Any other first line that is no header field is said to be one.
    let e = smime::decrypt(b"Dear Sir,\r\nplease find attached\r\n", &kr, None).unwrap_err();
    assert!(e.to_string().contains("line 1 is not a header field"), "{e}");
}

/// Decrypted content that is not a MIME entity (`openssl smime -encrypt`
/// without `-text`: RFC 4134 5.3) gets a Content-Type and the blank line.
#[test]
fn bare_decrypted_content_becomes_a_text_part() {
    let Some(tv) = vectors() else { return };
    let r = tv.join("rfc4134");
    let k = PKey::private_key_from_pkcs8(&fs::read(r.join("BobPrivRSAEncrypt.pri")).unwrap())
        .unwrap();
    let mut kr = MemoryKeyring::new();
    kr.add(KeyPair::new(k, cert(&r.join("BobRSASignByCarl.cer")), vec![], "bob").unwrap());
    let opened = smime::decrypt(&fs::read(r.join("5.3.eml")).unwrap(), &kr, None).unwrap();
    let text = String::from_utf8(opened.message).unwrap();
    // In the line ends of the message around it (LF here).
    assert!(
        text.contains("Subject: Example 5.3\nContent-Type: text/plain\n\nThis is some sample content."),
        "{text:?}"
    );
    let e = smime::mime::Entity::parse(text.as_bytes());
    assert_eq!(e.content_type().mime_type, "text/plain");
    assert!(e.body().starts_with(b"This is some sample content."));
}

/// Binary bare content is carried as base64 application/octet-stream.
#[test]
fn bare_binary_content_becomes_base64() {
    use openssl::cms::{CMSOptions, CmsContentInfo};
    use openssl::stack::Stack;
    use openssl::symm::Cipher;
    let f = super::fixtures::fx();
    let mut certs = Stack::new().unwrap();
    certs.push(f.bob.1.clone()).unwrap();
    let data: Vec<u8> = (0u8..=255).collect();
    let cms = CmsContentInfo::encrypt(&certs, &data, Cipher::aes_256_cbc(), CMSOptions::BINARY)
        .unwrap();
    let der = cms.to_der().unwrap();
    let kr = super::fixtures::keyring(&[(&f.bob, "bob")]);
    let opened = smime::decrypt(&der, &kr, None).unwrap();
    let e = smime::mime::Entity::parse(&opened.message);
    assert_eq!(e.content_type().mime_type, "application/octet-stream");
    assert_eq!(e.decoded_body().unwrap().as_ref(), &data[..]);
}
