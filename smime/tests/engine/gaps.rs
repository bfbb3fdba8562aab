//! Issue 12 §1: inputs OpenSSL opens that the engine refused, each with a
//! test that failed before its fix (real vectors from `../shared/testvectors`
//! where there is one, otherwise made here with the linked OpenSSL).

use super::fixtures::{cert, vectors};
use std::fs;
use std::path::Path;

use openssl::pkey::PKey;
use openssl::x509::X509;
use smime::{KeyPair, MemoryKeyring};

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
        let asc = smime::decrypt(
            &fs::read(g.join(format!("{n}.cms.asc"))).unwrap(),
            &kr,
            None,
        )
        .unwrap_or_else(|e| panic!("{n}.cms.asc: {e}"));
        let der = smime::decrypt(
            &fs::read(g.join(format!("{n}.cms.der"))).unwrap(),
            &kr,
            None,
        )
        .unwrap();
        assert_eq!(asc.message, der.message, "{n}");
    }
    // SIGNED MESSAGE armour goes the same way (a signature made here).
    let f = super::fixtures::fx();
    let der = smime::sign_der(
        b"Content-Type: text/plain\r\n\r\nhej\r\n",
        &super::fixtures::pair(&f.alice, "a"),
        &smime::SignOptions {
            opaque: true,
            ..Default::default()
        },
    )
    .unwrap();
    let b64 = smime::mime::encode_base64_lines(&der);
    let text = format!(
        "-----BEGIN SIGNED MESSAGE-----\n{}-----END SIGNED MESSAGE-----\n",
        String::from_utf8(b64).unwrap()
    );
    let o = smime::verify(text.as_bytes(), &super::fixtures::trust(), None).unwrap();
    assert!(o.all_signatures_valid());
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
    assert!(
        e.to_string().contains("line 1 is not a header field"),
        "{e}"
    );
}

/// Decrypted content that is not a MIME entity (`openssl smime -encrypt`
/// without `-text`: RFC 4134 5.3) gets a Content-Type and the blank line.
#[test]
fn bare_decrypted_content_becomes_a_text_part() {
    let Some(tv) = vectors() else { return };
    let r = tv.join("rfc4134");
    let k =
        PKey::private_key_from_pkcs8(&fs::read(r.join("BobPrivRSAEncrypt.pri")).unwrap()).unwrap();
    let mut kr = MemoryKeyring::new();
    kr.add(KeyPair::new(k, cert(&r.join("BobRSASignByCarl.cer")), vec![], "bob").unwrap());
    let opened = smime::decrypt(&fs::read(r.join("5.3.eml")).unwrap(), &kr, None).unwrap();
    let text = String::from_utf8(opened.message).unwrap();
    // In the line ends of the message around it (LF here).
    assert!(
        text.contains(
            "Subject: Example 5.3\nContent-Type: text/plain\n\nThis is some sample content."
        ),
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
    let cms =
        CmsContentInfo::encrypt(&certs, &data, Cipher::aes_256_cbc(), CMSOptions::BINARY).unwrap();
    let der = cms.to_der().unwrap();
    let kr = super::fixtures::keyring(&[(&f.bob, "bob")]);
    let opened = smime::decrypt(&der, &kr, None).unwrap();
    let e = smime::mime::Entity::parse(&opened.message);
    assert_eq!(e.content_type().mime_type, "application/octet-stream");
    assert_eq!(e.decoded_body().unwrap().as_ref(), &data[..]);
}

mod made {
    //! A CA and leaves with whatever this file needs (see
    //! [`super::super::fixtures::issue`]).
    use openssl::pkey::{PKey, Private};
    use openssl::rsa::Rsa;
    use openssl::x509::X509;

    use super::super::fixtures::issue;

    pub struct Leaf<'a> {
        pub cn: &'a str,
        pub serial_hex: &'a str,
        pub eku: Option<&'a str>,
        pub bits: u32,
        pub ski: bool,
    }

    pub fn ca() -> (PKey<Private>, X509) {
        let key = PKey::from_rsa(Rsa::generate(2048).unwrap()).unwrap();
        let cert = issue(None, &key, "Gaps CA", "1", None, true);
        (key, cert)
    }

    pub fn leaf(ca: &(PKey<Private>, X509), l: Leaf<'_>) -> (PKey<Private>, X509) {
        let key = PKey::from_rsa(Rsa::generate(l.bits).unwrap()).unwrap();
        let cert = issue(Some((&ca.1, &ca.0)), &key, l.cn, l.serial_hex, l.eku, l.ski);
        (key, cert)
    }
}

fn signed_by(p: &(PKey<openssl::pkey::Private>, X509), ca: &X509) -> Vec<u8> {
    let kp = KeyPair::new(p.0.clone(), p.1.clone(), vec![ca.clone()], "s").unwrap();
    smime::sign(
        b"Subject: x\r\nContent-Type: text/plain\r\n\r\nhej\r\n",
        &kp,
        &smime::SignOptions::default(),
    )
    .unwrap()
}

/// RFC 8550 §4.4.4: an EKU of only anyExtendedKeyUsage is fit for S/MIME;
/// an EKU with neither it nor emailProtection is not.
#[test]
fn any_extended_key_usage_signs_mail() {
    let ca = made::ca();
    let trust = smime::TrustStore::new(vec![ca.1.clone()], vec![], vec![]).unwrap();
    let leaf = |cn, eku| {
        made::leaf(
            &ca,
            made::Leaf {
                cn,
                serial_hex: "10",
                eku: Some(eku),
                bits: 2048,
                ski: true,
            },
        )
    };
    let any = leaf("any", "anyExtendedKeyUsage");
    let o = smime::verify(&signed_by(&any, &ca.1), &trust, None).unwrap();
    assert!(
        o.all_signatures_valid(),
        "{:?}",
        o.signatures().next().unwrap().reason
    );
    let mail = leaf("mail", "emailProtection");
    assert!(
        smime::verify(&signed_by(&mail, &ca.1), &trust, None)
            .unwrap()
            .all_signatures_valid()
    );
    let server = leaf("server", "serverAuth");
    let o = smime::verify(&signed_by(&server, &ca.1), &trust, None).unwrap();
    assert!(!o.all_signatures_valid());
    let why = o.signatures().next().unwrap().reason.clone().unwrap();
    assert!(why.contains("unsuitable certificate purpose"), "{why}");
}

/// RFC 5280 §4.1.2.2: mail to, and signed by, a certificate with a negative
/// serial number (as old CAs issued): matched by the INTEGER as encoded.
#[test]
fn negative_serial_numbers_match() {
    use openssl::cms::{CMSOptions, CmsContentInfo};
    use openssl::stack::Stack;
    use openssl::symm::Cipher;
    let ca = made::ca();
    let trust = smime::TrustStore::new(vec![ca.1.clone()], vec![], vec![]).unwrap();
    let neg = made::leaf(
        &ca,
        made::Leaf {
            cn: "negative",
            serial_hex: "-0123456789AC",
            eku: None,
            bits: 2048,
            ski: false,
        },
    );
    assert!(neg.1.serial_number().to_bn().unwrap().is_negative());
    // Encrypted by OpenSSL to it (issuerAndSerialNumber, FE DC BA 98 76 54).
    let mut certs = Stack::new().unwrap();
    certs.push(neg.1.clone()).unwrap();
    let der = CmsContentInfo::encrypt(
        &certs,
        b"Content-Type: text/plain\r\n\r\nhemmelig\r\n",
        Cipher::aes_256_cbc(),
        CMSOptions::BINARY,
    )
    .unwrap()
    .to_der()
    .unwrap();
    let mut kr = MemoryKeyring::new();
    kr.add(KeyPair::new(neg.0.clone(), neg.1.clone(), vec![], "neg").unwrap());
    let opened = smime::decrypt(&der, &kr, None).unwrap_or_else(|e| panic!("{e}"));
    assert!(opened.message.ends_with(b"hemmelig\r\n"));
    // Signed by it: the signer is found and the chain checked.
    let o = smime::verify(&signed_by(&neg, &ca.1), &trust, None).unwrap();
    let s = o.signatures().next().unwrap();
    assert!(s.valid, "{:?}", s.reason);
    assert_eq!(s.signers[0].subject, "CN=negative");
    // A positive serial of the same magnitude is another certificate.
    let pos = made::leaf(
        &ca,
        made::Leaf {
            cn: "positive",
            serial_hex: "0123456789AC",
            eku: None,
            bits: 2048,
            ski: false,
        },
    );
    let id = smime::RecipientId::from_cert(&neg.1).unwrap();
    assert!(id.matches(&neg.1));
    assert!(!id.matches(&pos.1));
}

/// ECDH key agreement is named, whatever KDF digest and DH variant.
#[test]
fn ecdh_key_agreement_is_named() {
    use const_oid::ObjectIdentifier as Oid;
    for (oid, name) in [
        ("1.3.132.1.11.2", "dhSinglePass-stdDH-sha384kdf"),
        ("1.3.132.1.11.3", "dhSinglePass-stdDH-sha512kdf"),
        ("1.3.132.1.14.1", "dhSinglePass-cofactorDH-sha256kdf"),
    ] {
        assert_eq!(smime::cmsinfo::alg_name(&Oid::new_unwrap(oid)), name);
    }
}

/// An AES-GCM message altered after encryption says so, instead of
/// OpenSSL's "unknown OpenSSL error".
#[test]
fn altered_gcm_message_says_it_was_altered() {
    let f = super::fixtures::fx();
    let opts = smime::EncryptOptions {
        cipher: smime::ContentCipher::Aes256Gcm,
        ..Default::default()
    };
    let enc = smime::encrypt(
        b"Content-Type: text/plain\r\n\r\nhemmelig\r\n",
        std::slice::from_ref(&f.bob.1),
        &opts,
    )
    .unwrap();
    let e = smime::mime::Entity::parse(&enc);
    let mut der = e.decoded_body().unwrap().into_owned();
    let n = der.len();
    der[n - 30] ^= 1;
    let kr = super::fixtures::keyring(&[(&f.bob, "bob")]);
    let err = smime::decrypt(&der, &kr, None).unwrap_err().to_string();
    assert!(err.contains("the message was altered"), "{err}");
    assert!(!err.contains("unknown OpenSSL error"), "{err}");
}

/// Windows names a recipient whose certificate has no subjectKeyIdentifier
/// by SHA-1 over the whole SubjectPublicKeyInfo (.NET's
/// `TestDecryptSimpleAes256_Ski`); OpenSSL cannot open it, we do, and the
/// other .NET vectors still open.
#[test]
fn windows_key_identifier_is_matched() {
    let Some(tv) = vectors() else { return };
    let d = tv.join("dotnet-pkcs");
    let kr = super::fixtures::dotnet_keyring(&tv);
    for f in [
        "TestDecryptSimpleAes256_Ski.der",
        "TestDecryptSimpleAes128_IssuerAndSerial.der",
        "TestDecryptSimpleTripleDes_IssuerAndSerial.der",
    ] {
        let opened = smime::decrypt(&fs::read(d.join(f)).unwrap(), &kr, None)
            .unwrap_or_else(|e| panic!("{f}: {e}"));
        let e = smime::mime::Entity::parse(&opened.message);
        assert_eq!(e.decoded_body().unwrap().as_ref(), &[1u8, 2, 3, 4], "{f}");
    }
    // The derivation only stands in for a missing extension: a certificate
    // with one is matched by it alone.
    let f = super::fixtures::fx();
    let id = smime::RecipientId::SubjectKeyId(vec![0xF2, 0x00, 0x8A, 0xA9]);
    assert!(!id.matches(&f.bob.1));
}

/// Signer keys under 2048 bits are reported as WEAK (as SHA-1 is), and a
/// minimum key size makes them not valid.
#[test]
fn weak_signer_keys_are_reported_and_can_be_refused() {
    let ca = made::ca();
    let small = made::leaf(
        &ca,
        made::Leaf {
            cn: "small",
            serial_hex: "20",
            eku: None,
            bits: 1024,
            ski: true,
        },
    );
    let msg = signed_by(&small, &ca.1);
    let trust = smime::TrustStore::new(vec![ca.1.clone()], vec![], vec![]).unwrap();
    let o = smime::verify(&msg, &trust, None).unwrap();
    let s = o.signatures().next().unwrap();
    assert!(s.valid, "{:?}", s.reason);
    assert!(
        s.signers[0].weak.iter().any(|w| w == "RSA-1024 key"),
        "{:?}",
        s.signers[0].weak
    );
    let strict = trust
        .validating(smime::Validation {
            min_key_bits: Some(2048),
            ..Default::default()
        })
        .unwrap();
    let o = smime::verify(&msg, &strict, None).unwrap();
    let s = o.signatures().next().unwrap();
    assert!(!s.valid);
    let why = s.reason.clone().unwrap();
    assert!(
        why.contains("RSA key has 1024 bits, below the minimum of 2048"),
        "{why}"
    );
    // A 2048-bit signer is neither weak nor refused.
    let fine = made::leaf(
        &ca,
        made::Leaf {
            cn: "fine",
            serial_hex: "21",
            eku: None,
            bits: 2048,
            ski: true,
        },
    );
    let o = smime::verify(&signed_by(&fine, &ca.1), &strict, None).unwrap();
    let s = o.signatures().next().unwrap();
    assert!(
        s.valid && s.signers[0].weak.is_empty(),
        "{:?} {:?}",
        s.reason,
        s.signers[0].weak
    );
}

mod der {
    //! Just enough DER to rebuild a ContentInfo with one more element.
    /// (tag, content start, content end) of the element at `pos`.
    pub fn read(b: &[u8], pos: usize) -> (u8, usize, usize) {
        let tag = b[pos];
        let l0 = b[pos + 1];
        let (len, start) = if l0 < 0x80 {
            (usize::from(l0), pos + 2)
        } else {
            let n = usize::from(l0 & 0x7f);
            let mut len = 0usize;
            for i in 0..n {
                len = (len << 8) | usize::from(b[pos + 2 + i]);
            }
            (len, pos + 2 + n)
        };
        (tag, start, start + len)
    }

    pub fn tlv(tag: u8, content: &[u8]) -> Vec<u8> {
        let mut out = vec![tag];
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
        out.extend_from_slice(content);
        out
    }

    /// A ContentInfo (DER) with its content SEQUENCE's contents changed by
    /// `f`.
    pub fn rewrap(ci: &[u8], f: impl FnOnce(&[u8]) -> Vec<u8>) -> Vec<u8> {
        let (_, ci_s, _) = read(ci, 0);
        let (_, _, oid_e) = read(ci, ci_s);
        let (_, a0_s, _) = read(ci, oid_e);
        let (_, in_s, in_e) = read(ci, a0_s);
        let inner = f(&ci[in_s..in_e]);
        tlv(
            0x30,
            &[ci[ci_s..oid_e].to_vec(), tlv(0xA0, &tlv(0x30, &inner))].concat(),
        )
    }

    /// An Attribute typed by a UUID OID with one NULL value: what our
    /// parsing layer refuses and OpenSSL reads.
    pub fn uuid_attribute() -> Vec<u8> {
        tlv(
            0x30,
            &[
                uuid_oid(0xF81D_4FAE_7DEC_11D0_A765_00A0_C91E_6BF6),
                tlv(0x31, &[0x05, 0x00]),
            ]
            .concat(),
        )
    }

    /// OID 2.25.<n> (a UUID OID, X.667): one arc of up to 128 bits.
    pub fn uuid_oid(n: u128) -> Vec<u8> {
        let mut arc = Vec::new();
        let mut v = n;
        arc.push((v & 0x7f) as u8);
        v >>= 7;
        while v > 0 {
            arc.push(((v & 0x7f) as u8) | 0x80);
            v >>= 7;
        }
        arc.reverse();
        let mut content = vec![2 * 40 + 25];
        content.extend(arc);
        tlv(0x06, &content)
    }
}

/// An EnvelopedData carrying an attribute typed by a UUID OID (2.25.<128
/// bits>, as some Microsoft and Java stacks write) is refused by our
/// parsing layer, which caps arcs; OpenSSL opens it, and so do we now,
/// saying what could not be inspected.
#[test]
fn large_oid_arcs_fall_back_to_openssl() {
    use openssl::cms::{CMSOptions, CmsContentInfo};
    use openssl::stack::Stack;
    use openssl::symm::Cipher;
    let f = super::fixtures::fx();
    let mut certs = Stack::new().unwrap();
    certs.push(f.bob.1.clone()).unwrap();
    let plain = b"Content-Type: text/plain\r\n\r\nhemmelig\r\n";
    let der0 = CmsContentInfo::encrypt(&certs, plain, Cipher::aes_256_cbc(), CMSOptions::BINARY)
        .unwrap()
        .to_der()
        .unwrap();
    // EnvelopedData { ... } + unprotectedAttrs [1].
    let ci = der::rewrap(&der0, |ed| {
        [ed.to_vec(), der::tlv(0xA1, &der::uuid_attribute())].concat()
    });
    // OpenSSL reads it.
    let ossl = CmsContentInfo::from_der(&ci).unwrap();
    assert_eq!(ossl.decrypt(&f.bob.0, &f.bob.1).unwrap(), plain);
    // And we do.
    let kr = super::fixtures::keyring(&[(&f.bob, "bob")]);
    let opened = smime::decrypt(&ci, &kr, None).unwrap_or_else(|e| panic!("{e}"));
    assert!(opened.message.ends_with(b"hemmelig\r\n"));
    let smime::LayerReport::Decrypted(d) = &opened.layers[0] else {
        panic!("{:?}", opened.layers)
    };
    assert!(
        d.content_algorithm.starts_with("(not inspected:"),
        "{}",
        d.content_algorithm
    );
    assert_eq!(d.key_label, "bob");
    // Nobody's key: the recipients OpenSSL names are listed.
    let other = super::fixtures::keyring(&[(&f.alice, "alice")]);
    let e = smime::decrypt(&ci, &other, None).unwrap_err().to_string();
    assert!(e.contains("CN=bob") || e.contains("serial=03"), "{e}");
}

/// A version-1 CRL inside SignedData (no version field: 1990s mail, some
/// CAs still): inspect reads the message and verify keeps its signer
/// details and content check (MimeKit's msg21, Deming Software, 1997).
#[test]
fn version_1_crl_in_signed_data_is_read() {
    let Some(tv) = vectors() else { return };
    let eml = fs::read(tv.join("mimekit/content-length.mbox.txt.msg21.eml")).unwrap();
    let layers = smime::inspect(&eml).unwrap_or_else(|e| panic!("inspect: {e}"));
    assert!(!layers.is_empty());
    let trust = smime::TrustStore::new(vec![], vec![], vec![]).unwrap();
    let o = smime::verify(&eml, &trust, None).unwrap();
    let s = o.signatures().next().unwrap();
    assert!(s.intact, "{:?}", s.reason);
    assert_eq!(s.signers[0].emails, ["BlakeR@deming.com"]);
    assert!(
        s.signers[0].weak.iter().any(|w| w.contains("MD5")),
        "{:?}",
        s.signers[0].weak
    );
}

/// Found by the differential fuzz target: OpenSSL reads a pkcs7-mime body
/// as base64 whatever its Content-Transfer-Encoding says (an unknown one,
/// or `7bit` over base64 text); so does the engine now.
#[test]
fn pkcs7_mime_body_is_base64_whatever_the_transfer_encoding_says() {
    let f = super::fixtures::fx();
    let enc = smime::encrypt(
        b"Content-Type: text/plain\r\n\r\nhemmelig\r\n",
        std::slice::from_ref(&f.bob.1),
        &smime::EncryptOptions::default(),
    )
    .unwrap();
    let text = String::from_utf8(enc).unwrap();
    assert!(text.contains("Content-Transfer-Encoding: base64"));
    let kr = super::fixtures::keyring(&[(&f.bob, "bob")]);
    for cte in ["base63", "7bit", "x-unknown"] {
        let m = text.replace(
            "Content-Transfer-Encoding: base64",
            &format!("Content-Transfer-Encoding: {cte}"),
        );
        let o = smime::decrypt(m.as_bytes(), &kr, None).unwrap_or_else(|e| panic!("{cte}: {e}"));
        assert!(o.message.ends_with(b"hemmelig\r\n"), "{cte}");
    }
    // Not base64 either: the transfer encoding is still what is reported.
    let m = text.replace(
        "Content-Transfer-Encoding: base64",
        "Content-Transfer-Encoding: base63",
    );
    let (head, _) = m.split_once("\r\n\r\n").unwrap();
    let bad = format!("{head}\r\n\r\n%%% not base64 %%%\r\n");
    let e = smime::decrypt(bad.as_bytes(), &kr, None)
        .unwrap_err()
        .to_string();
    assert!(e.contains("base63"), "{e}");
}

/// Found by the differential fuzz target: a multipart/signed whose
/// Content-Type parameters are broken before `boundary` (a stray quote in
/// `protocol`) still verifies, as OpenSSL reads it.
#[test]
fn boundary_is_found_behind_a_broken_parameter() {
    let f = super::fixtures::fx();
    let signed = smime::sign(
        b"Content-Type: text/plain\r\n\r\nhej\r\n",
        &super::fixtures::pair(&f.alice, "a"),
        &smime::SignOptions::default(),
    )
    .unwrap();
    let text = String::from_utf8(signed).unwrap();
    let broken = text.replacen("protocol=\"", "protocol\u{ff}\u{ff}", 1);
    assert_ne!(broken, text);
    let o = smime::verify(broken.as_bytes(), &super::fixtures::trust(), None)
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(o.all_signatures_valid());
}

/// Found by the differential fuzz target: content encrypted in a stream
/// mode (here AES-256-CFB, made with OpenSSL) has no padding and no tag,
/// so a wrong key "opens" it to garbage; the engine refuses such content
/// instead of handing out garbage as a decrypted message.
#[test]
fn stream_mode_content_encryption_is_refused() {
    use openssl::cms::{CMSOptions, CmsContentInfo};
    use openssl::stack::Stack;
    use openssl::symm::Cipher;
    let f = super::fixtures::fx();
    let mut certs = Stack::new().unwrap();
    certs.push(f.bob.1.clone()).unwrap();
    let der = CmsContentInfo::encrypt(
        &certs,
        b"Content-Type: text/plain\r\n\r\nhemmelig\r\n",
        Cipher::aes_256_cfb128(),
        CMSOptions::BINARY,
    )
    .unwrap()
    .to_der()
    .unwrap();
    let kr = super::fixtures::keyring(&[(&f.bob, "bob")]);
    let e = smime::decrypt(&der, &kr, None).unwrap_err().to_string();
    assert!(e.contains("stream mode"), "{e}");
}

/// Encrypted parts of a multipart/mixed (issue 12 §3, KDE's "ambiguous"
/// mails): each opens in place when a key matches; one whose key is not
/// here stays as it was, with a note; the text parts are not touched.
#[test]
fn encrypted_parts_of_a_multipart_mixed_open_where_keys_match() {
    let f = super::fixtures::fx();
    let opts = smime::EncryptOptions::default();
    let part = |to: &X509, text: &str| {
        let inner = format!("Content-Type: text/plain\r\n\r\n{text}\r\n");
        let enc = smime::encrypt(inner.as_bytes(), std::slice::from_ref(to), &opts).unwrap();
        String::from_utf8(enc).unwrap()
    };
    let to_bob = part(&f.bob.1, "for bob");
    let to_alice = part(&f.alice.1, "for alice");
    let msg = format!(
        "From: a@b.test\r\nSubject: two\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=\"xx\"\r\n\r\n--xx\r\nContent-Type: text/plain\r\n\r\nfooter\r\n--xx\r\n{}\r\n--xx\r\n{}\r\n--xx--\r\n",
        to_bob.trim_end(),
        to_alice.trim_end()
    );
    let bob = super::fixtures::keyring(&[(&f.bob, "bob")]);
    let o = smime::decrypt(msg.as_bytes(), &bob, None).unwrap();
    let text = String::from_utf8(o.message.clone()).unwrap();
    assert!(
        text.contains("for bob") && !text.contains("for alice"),
        "{text}"
    );
    assert!(text.starts_with("From: a@b.test\r\nSubject: two\r\n"));
    assert!(text.contains("--xx\r\nContent-Type: text/plain\r\n\r\nfooter\r\n--xx\r\n"));
    assert!(text.contains(to_alice.trim_end()), "alice's part changed");
    assert!(
        o.notes
            .iter()
            .any(|n| n.contains("part 2 of 3") && n.contains("opened in place"))
    );
    assert!(
        o.notes
            .iter()
            .any(|n| n.contains("part 3 of 3") && n.contains("left as it is"))
    );
    assert_eq!(o.layers.len(), 1);
    // Both keys: both open, in order.
    let both = super::fixtures::keyring(&[(&f.bob, "bob"), (&f.alice, "alice")]);
    let o = smime::decrypt(msg.as_bytes(), &both, None).unwrap();
    let text = String::from_utf8(o.message).unwrap();
    assert!(text.contains("for bob") && text.contains("for alice"));
    assert_eq!(o.layers.len(), 2);
    // Neither key: the error names the recipient, as for a whole message.
    let carol = super::fixtures::keyring(&[(&f.carol_ec, "carol")]);
    let e = smime::decrypt(msg.as_bytes(), &carol, None).unwrap_err();
    assert!(matches!(e, smime::Error::NoMatchingKey { .. }), "{e}");
    // inspect lists both parts' layers.
    let layers = smime::inspect(msg.as_bytes()).unwrap();
    let parts: Vec<_> = layers
        .iter()
        .filter_map(|l| match l {
            smime::Layer::Part { index, total } => Some((*index, *total)),
            _ => None,
        })
        .collect();
    assert_eq!(parts, vec![(2, 3), (3, 3)]);
}

/// A SignedData our parser refuses (a UUID OID in an unsigned attribute)
/// is verified by OpenSSL itself, with the same validation settings: the
/// moment checked at and the certificate policies (before, OpenSSL's
/// store was used as it was, checking now and ignoring the policies).
#[test]
fn signed_data_our_parser_refuses_is_checked_with_the_same_settings() {
    use openssl::cms::{CMSOptions, CmsContentInfo};
    use std::time::{Duration, SystemTime};
    let f = super::fixtures::fx();
    let content = b"Content-Type: text/plain\r\n\r\nunderskrevet\r\n";
    let der0 = CmsContentInfo::sign(
        Some(&f.alice.1),
        Some(&f.alice.0),
        None,
        Some(content),
        CMSOptions::BINARY,
    )
    .unwrap()
    .to_der()
    .unwrap();
    // SignedData { ..., signerInfos SET { SignerInfo + unsignedAttrs [1] } }.
    let ci = der::rewrap(&der0, |sd| {
        let (mut pos, mut set_at) = (0, 0);
        while pos < sd.len() {
            set_at = pos;
            pos = der::read(sd, pos).2;
        }
        let (_, set_s, _) = der::read(sd, set_at);
        let (_, si_s, si_e) = der::read(sd, set_s);
        let si = [
            sd[si_s..si_e].to_vec(),
            der::tlv(0xA1, &der::uuid_attribute()),
        ]
        .concat();
        [sd[..set_at].to_vec(), der::tlv(0x31, &der::tlv(0x30, &si))].concat()
    });
    let trust = smime::TrustStore::new(vec![f.ca.clone()], vec![], vec![]).unwrap();
    let check = |v: smime::Validation| {
        let t = trust.validating(v).unwrap();
        let o = smime::verify(&ci, &t, None).unwrap();
        let s = o.signatures().next().unwrap().clone();
        assert!(
            s.signers[0]
                .subject
                .starts_with("(signer details unavailable"),
            "not the fallback: {}",
            s.signers[0].subject
        );
        s
    };
    let s = check(smime::Validation::default());
    assert!(s.valid, "{:?}", s.reason);
    let at = |days: i64| {
        let now = SystemTime::now();
        let d = Duration::from_secs(days.unsigned_abs() * 86_400);
        smime::CheckTime::At(if days < 0 { now - d } else { now + d })
    };
    let s = check(smime::Validation {
        time: at(60),
        ..Default::default()
    });
    assert!(
        !s.valid && s.reason.as_deref().unwrap().contains("expired"),
        "{:?}",
        s.reason
    );
    let s = check(smime::Validation {
        time: at(-2),
        ..Default::default()
    });
    assert!(
        !s.valid && s.reason.as_deref().unwrap().contains("not yet valid"),
        "{:?}",
        s.reason
    );
    let s = check(smime::Validation {
        policies: vec!["1.2.208.169.1.1.1.3.7".into()],
        explicit_policy: true,
        ..Default::default()
    });
    assert!(!s.valid, "a policy the chain lacks was not required");
    let s = check(smime::Validation {
        time: smime::CheckTime::SigningTime,
        ..Default::default()
    });
    assert!(
        s.valid && s.signers[0].subject.contains("checked now"),
        "{:?}",
        s.signers[0].subject
    );
}
