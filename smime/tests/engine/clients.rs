//! Issue 12 §3: mail made by real clients and other stacks
//! (`../shared/testvectors`: Bouncy Castle's, MimeKit's, Simple Java Mail's,
//! KDE's and .NET's collections). Each test checks every known answer the
//! set's line in `testvectors/README.md` records, the ones that must fail
//! included. Where our verdict differs from the README's (OpenSSL's), the
//! difference is asserted here and explained beside it.

use super::fixtures::{cert, vectors};
use std::fs;
use std::path::Path;
use std::time::{Duration, UNIX_EPOCH};

use openssl::x509::{X509, X509Crl};
use smime::{
    CheckTime, Error, KeyPair, Layer, LayerReport, MemoryKeyring, Opened, SignatureReport,
    TrustStore, Validation,
};

fn crl(p: &Path) -> X509Crl {
    let b = fs::read(p).unwrap();
    X509Crl::from_pem(&b)
        .or_else(|_| X509Crl::from_der(&b))
        .unwrap()
}

fn at(unix: u64) -> CheckTime {
    CheckTime::At(UNIX_EPOCH + Duration::from_secs(unix))
}

fn trust(anchors: Vec<X509>, pool: Vec<X509>, crls: Vec<X509Crl>, time: CheckTime) -> TrustStore {
    TrustStore::new(anchors, pool, crls)
        .unwrap()
        .with_validation(Validation {
            time,
            ..Default::default()
        })
        .unwrap()
}

/// A store trusting nothing that signed these mails: the signature values
/// are still checked (`intact`), as `openssl cms -verify -noverify` does.
fn no_anchor() -> TrustStore {
    let k = openssl::pkey::PKey::from_rsa(openssl::rsa::Rsa::generate(2048).unwrap()).unwrap();
    let mut name = openssl::x509::X509NameBuilder::new().unwrap();
    name.append_entry_by_text("CN", "nobody's anchor").unwrap();
    let name = name.build();
    let mut b = X509::builder().unwrap();
    b.set_version(2).unwrap();
    b.set_subject_name(&name).unwrap();
    b.set_issuer_name(&name).unwrap();
    b.set_pubkey(&k).unwrap();
    b.set_not_before(&openssl::asn1::Asn1Time::days_from_now(0).unwrap())
        .unwrap();
    b.set_not_after(&openssl::asn1::Asn1Time::days_from_now(1).unwrap())
        .unwrap();
    b.sign(&k, openssl::hash::MessageDigest::sha256()).unwrap();
    TrustStore::new(vec![b.build()], vec![], vec![]).unwrap()
}

fn read(tv: &Path, set: &str, name: &str) -> Vec<u8> {
    fs::read(tv.join(set).join(name)).unwrap_or_else(|e| panic!("{set}/{name}: {e}"))
}

/// The one signature of a verified message.
fn only_sig<'a>(name: &str, o: &'a Opened) -> &'a SignatureReport {
    let sigs: Vec<_> = o.signatures().collect();
    assert_eq!(sigs.len(), 1, "{name}: {} signature layers", sigs.len());
    sigs[0]
}

/// The self-signed certificates a message carries (the root it brings).
fn carried_roots(s: &SignatureReport) -> Vec<X509> {
    s.certificates
        .iter()
        .map(|d| X509::from_der(d).unwrap())
        .filter(|c| {
            c.subject_name().to_der().unwrap() == c.issuer_name().to_der().unwrap()
                && c.public_key()
                    .ok()
                    .is_some_and(|k| c.verify(&k).unwrap_or(false))
        })
        .collect()
}

fn verify(name: &str, msg: &[u8], t: &TrustStore) -> Opened {
    smime::verify(msg, t, None).unwrap_or_else(|e| panic!("{name}: {e}"))
}

/// Verifies with no anchor (signature values only), then against the root
/// the message itself carries at `when`: both must hold.
fn verifies_with_carried_root(name: &str, msg: &[u8], when: u64) -> Opened {
    let o = verify(name, msg, &no_anchor());
    let s = only_sig(name, &o);
    assert!(s.intact, "{name}: signature value: {:?}", s.reason);
    assert!(!s.valid, "{name}: valid without its anchor");
    let roots = carried_roots(s);
    assert_eq!(roots.len(), 1, "{name}: carried roots");
    let o = verify(name, msg, &trust(roots.clone(), vec![], vec![], at(when)));
    let s = only_sig(name, &o);
    assert!(s.valid, "{name} at {when}: {:?}", s.reason);
    // Today the chain has expired: a gateway receiving it now says so.
    let now = verify(name, msg, &trust(roots, vec![], vec![], CheckTime::Now));
    let s = only_sig(name, &now);
    assert!(!s.valid && s.intact, "{name}: valid now");
    assert!(
        s.reason.as_deref().unwrap().contains("expired"),
        "{name}: {:?}",
        s.reason
    );
    o
}

fn decrypted(o: &Opened) -> Vec<&smime::DecryptReport> {
    o.layers
        .iter()
        .filter_map(|l| match l {
            LayerReport::Decrypted(d) => Some(d),
            LayerReport::Signed(_) => None,
        })
        .collect()
}

fn recipients(name: &str, msg: &[u8]) -> (String, Vec<(String, String, String)>) {
    let layers = smime::inspect(msg).unwrap_or_else(|e| panic!("{name}: {e}"));
    match &layers[0] {
        Layer::Encrypted {
            content_algorithm,
            recipients,
            ..
        } => (content_algorithm.clone(), recipients.clone()),
        other => panic!("{name}: outer layer {other:?}"),
    }
}

// ---------------------------------------------------------------- Bouncy Castle

const BC: &str = "bouncycastle-smime";

#[test]
fn bouncycastle_real_clients_signatures_verify_at_signing_time() {
    let Some(tv) = vectors() else { return };
    smime::init();
    // Mac Outlook 14.4: SHA-256, StartCom chain with root. The signed part
    // ends with the inner close-delimiter plus one CRLF, which is hashed
    // (BC's own test calls it invalid; OpenSSL and we verify). Stored with
    // LF line ends: the CRLF form is what was signed.
    let o = verifies_with_carried_root("3nnn", &read(&tv, BC, "3nnn_smime.eml"), 1426081003);
    let s = only_sig("3nnn", &o);
    assert!(s.canonicalised, "3nnn: LF file verified as it is?");
    assert_eq!(s.signers[0].digest_algorithm, "SHA-256");
    // Outlook 2003, application/x-pkcs7-signature, Thawte chain with root.
    verifies_with_carried_root(
        "embeddedmulti",
        &read(&tv, BC, "embeddedmulti.message"),
        1169036292,
    );
    // MimeOLE 6 with quoted-printable soft line breaks, AddTrust chain.
    verifies_with_carried_root(
        "qp-soft-break",
        &read(&tv, BC, "qp-soft-break.eml"),
        1183718125,
    );
    // Outlook Express 6, self-signed: its own certificate is the anchor.
    let q = verifies_with_carried_root("quotable", &read(&tv, BC, "quotable.message"), 1155651151);
    assert_eq!(only_sig("quotable", &q).certificates.len(), 1);
}

#[test]
fn bouncycastle_exchange_thunderbird_and_pss_signatures_are_intact() {
    let Some(tv) = vectors() else { return };
    smime::init();
    let none = no_anchor();
    for (f, digest, alg) in [
        ("multi-alternative.eml", "SHA-1", "rsaEncryption"),
        ("extra-nl.eml", "SHA-1", "rsaEncryption"),
        (
            "openssl-signed-sha256-non-default-salt-length.eml",
            "SHA-256",
            "RSASSA-PSS",
        ),
    ] {
        let o = verify(f, &read(&tv, BC, f), &none);
        let s = only_sig(f, &o);
        assert!(s.intact, "{f}: {:?}", s.reason);
        assert!(!s.valid, "{f}: valid with no anchor");
        assert_eq!(s.signers[0].digest_algorithm, digest, "{f}");
        assert_eq!(s.signers[0].signature_algorithm, alg, "{f}");
        // Tampering with the signed text breaks each of them.
        let mut bad = read(&tv, BC, f);
        let at = find_text_byte(&bad).unwrap();
        bad[at] ^= 0x20;
        let o = smime::verify(&bad, &none, None);
        match o {
            Ok(o) => assert!(!only_sig(f, &o).intact, "{f}: tampered text intact"),
            Err(e) => panic!("{f}: tampered: {e}"),
        }
    }
}

/// A lower-case letter in the first signed text line after the first body
/// part's header (something every one of these mails has).
fn find_text_byte(m: &[u8]) -> Option<usize> {
    let body = m.windows(2).position(|w| w == b"\n\n")? + 2;
    // Skip to the first part's body: after the next blank line.
    let part = body + m[body..].windows(2).position(|w| w == b"\n\n")? + 2;
    m[part..]
        .iter()
        .position(|b| b.is_ascii_lowercase())
        .map(|i| part + i)
}

#[test]
fn bouncycastle_circular_chain_fails_without_looping() {
    let Some(tv) = vectors() else { return };
    smime::init();
    let msg = read(&tv, BC, "circular.eml");
    let o = verify("circular", &msg, &no_anchor());
    let s = only_sig("circular", &o);
    assert!(!s.valid);
    assert!(s.intact, "circular: signature value: {:?}", s.reason);
    let why = s.reason.clone().unwrap();
    assert!(
        why.contains("unable to get") || why.contains("self-signed") || why.contains("issuer"),
        "circular: {why}"
    );
    // Inter1, Inter2, Inter3 issue each other: trusting none of them, and
    // with every one as a pool certificate too, it still ends.
    let certs: Vec<X509> = s
        .certificates
        .iter()
        .map(|d| X509::from_der(d).unwrap())
        .collect();
    assert!(certs.len() >= 3, "circular: {} certificates", certs.len());
    let t = trust(vec![], certs, vec![], CheckTime::Now);
    let o = verify("circular", &msg, &t);
    assert!(!only_sig("circular", &o).valid);
}

/// JavaMail/BC's validator set: root `validator.root.crt`, CRL
/// `validator.revoked.crl`, each checked at its own signing time
/// (2006-08-28 to 09-04).
#[test]
fn bouncycastle_validator_set() {
    let Some(tv) = vectors() else { return };
    smime::init();
    let root = cert(&tv.join(BC).join("validator.root.crt"));
    let fake = cert(&tv.join(BC).join("validator.fakeRoot.crt"));
    let revoked_crl = crl(&tv.join(BC).join("validator.revoked.crl"));
    let plain = trust(vec![root.clone()], vec![], vec![], CheckTime::SigningTime);
    let f = |n: &str| read(&tv, BC, &format!("validator.{n}.eml"));
    let verdict = |n: &str, t: &TrustStore| -> SignatureReport {
        let o = verify(n, &f(n), t);
        only_sig(n, &o).clone()
    };
    // Verify: validMail, longValidity (100-year certificate), noEmail
    // (OpenSSL accepts; BC rejects a signer with no address: we follow
    // OpenSSL and report no address), shortKey (512 bits, WEAK).
    for n in ["validMail", "longValidity", "noEmail", "shortKey"] {
        let s = verdict(n, &plain);
        assert!(s.valid, "{n}: {:?}", s.reason);
        assert!(
            s.signers[0]
                .signing_time
                .as_deref()
                .unwrap()
                .starts_with("2006-0")
        );
        assert_eq!(
            s.signers[0].emails.is_empty(),
            n == "noEmail",
            "{n}: emails"
        );
        let weak = s.signers[0].weak.iter().any(|w| w == "RSA-512 key");
        assert_eq!(weak, n == "shortKey", "{n}: {:?}", s.signers[0].weak);
    }
    // shortKey fails where a minimum key size is set (OpenSSL: -auth_level
    // 2, which would refuse the others' 1024-bit keys too).
    let strict = plain
        .validating(Validation {
            time: CheckTime::SigningTime,
            min_key_bits: Some(1024),
            ..Default::default()
        })
        .unwrap();
    let s = verdict("shortKey", &strict);
    assert!(!s.valid);
    assert!(
        s.reason
            .unwrap()
            .contains("512 bits, below the minimum of 1024")
    );
    assert!(verdict("validMail", &strict).valid);
    // Validity: at the signing time these are outside their dates.
    let s = verdict("expired", &plain);
    assert!(!s.valid && s.intact);
    assert!(s.reason.unwrap().contains("certificate has expired"));
    let s = verdict("notYetValid", &plain);
    assert!(!s.valid && s.intact);
    assert!(s.reason.unwrap().contains("not yet valid"));
    // Usage: keyUsage without digitalSignature, extKeyUsage without
    // emailProtection: wrong purpose for S/MIME signing.
    for n in ["keyUsage", "extKeyUsage"] {
        let s = verdict(n, &plain);
        assert!(!s.valid && s.intact, "{n}");
        assert!(
            s.reason
                .as_deref()
                .unwrap()
                .contains("unsuitable certificate purpose"),
            "{n}: {:?}",
            s.reason
        );
    }
    // Revoked: valid without the CRL, revoked with it.
    assert!(verdict("revoked", &plain).valid);
    let with_crl = trust(
        vec![root.clone()],
        vec![],
        vec![revoked_crl],
        CheckTime::SigningTime,
    );
    let s = verdict("revoked", &with_crl);
    assert!(!s.valid && s.intact);
    assert!(s.reason.unwrap().contains("revoked"));
    assert!(verdict("validMail", &with_crl).valid);
    // The fake root: same name, another key.
    let s = verdict(
        "validMail",
        &trust(vec![fake], vec![], vec![], CheckTime::SigningTime),
    );
    assert!(!s.valid && s.intact);
    // And now, twenty years on, the certificates (the root's too) have
    // expired: what a gateway receiving these today says.
    let now = trust(vec![root], vec![], vec![], CheckTime::Now);
    let s = verdict("validMail", &now);
    assert!(!s.valid && s.intact);
    assert!(s.reason.unwrap().contains("expired"));
}

#[test]
fn bouncycastle_encrypted_mail() {
    let Some(tv) = vectors() else { return };
    smime::init();
    let dir = tv.join(BC);
    let mut pem = fs::read(dir.join("key.pem")).unwrap();
    pem.extend(fs::read(dir.join("cert.pem")).unwrap());
    let mut kr = MemoryKeyring::new();
    kr.add(KeyPair::from_file_bytes(&pem, None, "tiani").unwrap());
    // test192: AES-192 to the Tiani Spirit demo certificate.
    let o = smime::decrypt(&read(&tv, BC, "test192.message"), &kr, None).unwrap();
    let d = decrypted(&o);
    assert_eq!(d.len(), 1);
    assert_eq!(d[0].content_algorithm, "AES-192-CBC");
    assert!(o.message.windows(4).any(|w| w == b"\r\n\r\n"));
    // test128/test256: the OID says AES-128/-256 but the key is 24 bytes
    // (the content is AES-192). OpenSSL says "bad decrypt"; BC decrypts.
    // A clear error, not garbage.
    for f in ["test128.message", "test256.message"] {
        let e = smime::decrypt(&read(&tv, BC, f), &kr, None).unwrap_err();
        let why = e.to_string();
        assert!(matches!(e, Error::DecryptFailed(_)), "{f}: {e}");
        assert!(why.contains("labelled wrongly"), "{f}: {why}");
    }
    // No key for these: parse and name the recipient.
    let (alg, r) = recipients(
        "outlook_2010",
        &read(&tv, BC, "outlook_2010_beta_sime_msg.eml"),
    );
    assert_eq!(alg, "DES-EDE3-CBC");
    assert!(r.iter().any(|(_, id, _)| id.contains("2219E504")), "{r:?}");
    let msg = read(&tv, BC, "dotnet_encrypted_mail.eml");
    let (alg, r) = recipients("dotnet", &msg);
    assert_eq!(alg, "DES-EDE3-CBC");
    let dotnet_cert = cert(&dir.join("dotnet_enc_cert.pem"));
    let ski = hex(dotnet_cert.subject_key_id().unwrap().as_slice());
    assert!(
        r.iter().any(|(_, id, _)| id.contains(&ski)),
        "{ski} in {r:?}"
    );
    // Labelled smime-type=signed-data, it is enveloped: decrypting says no
    // key matches (naming the recipient), not "not signed".
    let e = smime::decrypt(&msg, &kr, None).unwrap_err();
    assert!(matches!(e, Error::NoMatchingKey { .. }), "{e}");
    assert!(e.to_string().contains(&ski), "{e}");
    // brokenEnv: a detached SignedData, not EnvelopedData.
    let e = smime::decrypt(&read(&tv, BC, "brokenEnv.message"), &kr, None).unwrap_err();
    assert!(
        matches!(e, Error::NotSmime { .. } | Error::MalformedCms(_)),
        "{e}"
    );
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02X}")).collect()
}

/// bTrade AS2 over HTTP: a binary p7s part; verified over the part's raw
/// bytes.
#[test]
fn bouncycastle_as2_verifies_over_raw_bytes() {
    let Some(tv) = vectors() else { return };
    smime::init();
    for f in ["basicAS2.message", "rawAS2.message"] {
        let o = verify(f, &read(&tv, BC, f), &no_anchor());
        let s = only_sig(f, &o);
        assert!(s.intact, "{f}: {:?}", s.reason);
        assert!(
            !s.canonicalised,
            "{f}: verified only after changing line ends"
        );
        assert!(
            o.notes.iter().any(|n| n.contains("HTTP")),
            "{f}: {:?}",
            o.notes
        );
    }
}

// ---------------------------------------------------------------- MimeKit

const MK: &str = "mimekit";

#[test]
fn mimekit_thunderbird_24_verifies_against_startcom_at_signing_time() {
    let Some(tv) = vectors() else { return };
    smime::init();
    let dir = tv.join(MK);
    let root = cert(&dir.join("StartComCertificationAuthority.crt"));
    let inter = cert(&dir.join("StartComClass1PrimaryIntermediateClientCA.crt"));
    let msg = read(&tv, MK, "thunderbird-signed.txt");
    // The intermediate travels in the message, and is given as a file too.
    for pool in [vec![], vec![inter]] {
        let o = verify(
            "thunderbird-signed",
            &msg,
            &trust(vec![root.clone()], pool, vec![], at(1383424084)),
        );
        let s = only_sig("thunderbird-signed", &o);
        assert!(s.valid, "{:?}", s.reason);
        assert_eq!(s.signers[0].digest_algorithm, "SHA-1");
        assert!(s.signers[0].weak.iter().any(|w| w == "SHA-1 digest"));
        // The JPEG attachment is part of what was signed, and kept.
        assert!(
            o.message
                .windows(b"image/jpeg".len())
                .any(|w| w == b"image/jpeg")
        );
    }
    // The same at the signing time the message states.
    let o = verify(
        "thunderbird-signed",
        &msg,
        &trust(vec![root.clone()], vec![], vec![], CheckTime::SigningTime),
    );
    assert!(only_sig("thunderbird-signed", &o).valid);
    // Now the chain has expired.
    let o = verify(
        "thunderbird-signed",
        &msg,
        &trust(vec![root], vec![], vec![], CheckTime::Now),
    );
    let s = only_sig("thunderbird-signed", &o);
    assert!(!s.valid && s.intact);
}

/// OpenText GXS AS2: a bare LF in the signed part. It verifies over the
/// raw bytes only, not after CRLF canonicalisation.
#[test]
fn mimekit_opentext_as2_verifies_over_raw_bytes_only() {
    let Some(tv) = vectors() else { return };
    smime::init();
    let msg = read(&tv, MK, "octet-stream-with-mixed-line-endings.dat");
    let o = verifies_with_carried_root("opentext", &msg, 1587563323);
    assert!(!only_sig("opentext", &o).canonicalised);
    // The same message with its bare LF made CRLF (what canonicalising
    // would do) no longer verifies.
    let needle = b"Please ignore.\n";
    let i = msg.windows(needle.len()).position(|w| w == needle).unwrap();
    let mut crlf = msg[..i + needle.len() - 1].to_vec();
    crlf.extend_from_slice(b"\r\n");
    crlf.extend_from_slice(&msg[i + needle.len()..]);
    let o = verify("opentext crlf", &crlf, &no_anchor());
    let s = only_sig("opentext crlf", &o);
    assert!(!s.intact, "canonicalised AS2 content verified");
    assert!(
        s.reason.as_deref().unwrap().contains("does not match"),
        "{:?}",
        s.reason
    );
}

/// The 1996-97 smime-dev mails: `x-pkcs7-*` types, 512-bit RSA, MD2/MD5
/// certificates, no keys.
#[test]
fn mimekit_1990s_mail() {
    let Some(tv) = vectors() else { return };
    smime::init();
    let none = no_anchor();
    let f = |n: u32| read(&tv, MK, &format!("content-length.mbox.txt.msg{n}.eml"));
    // Signature values verify: Mozilla 3.0, Mozilla 4.0b3, Deming Software
    // through Exchange IMC 4.0 (opaque, name="deming.p7m", a v1 CRL
    // inside), OpenSoft ExpressMail; and Eudora Pro 3.0 (msg12: a boundary
    // with spaces, folded, micalg=rsa-sha1), which OpenSSL's reader cannot
    // split and we can.
    for n in [10, 19, 21, 26, 12] {
        let o = verify(&format!("msg{n}"), &f(n), &none);
        let s = only_sig(&format!("msg{n}"), &o);
        assert!(s.intact, "msg{n}: {:?}", s.reason);
        assert!(!s.valid, "msg{n}: valid without anchor");
        assert!(
            s.signers[0].weak.iter().any(|w| w.contains("key")),
            "msg{n}: small key not reported: {:?}",
            s.signers[0].weak
        );
        assert_eq!(s.detached, n != 21, "msg{n}");
    }
    // msg13: MD2 digest; msg23: a bad signature. Both fail, clearly.
    for (n, says) in [
        (13, "digest algorithm (MD2) is not supported"),
        (23, "does not match its signature"),
    ] {
        let name = format!("msg{n}");
        match smime::verify(&f(n), &none, None) {
            Ok(o) => {
                let s = only_sig(&name, &o);
                assert!(!s.intact && !s.valid, "{name}: intact");
                let why = s.reason.clone().unwrap();
                assert!(why.contains(says), "{name}: {why}");
            }
            Err(e) => assert!(e.to_string().contains(says), "{name}: {e}"),
        }
    }
    // msg11: Eudora Pro 3.0, enveloped as an attachment, 3DES, two
    // recipients; no key: parse and name them.
    let (alg, r) = recipients("msg11", &f(11));
    assert_eq!(alg, "DES-EDE3-CBC");
    assert_eq!(r.len(), 2, "{r:?}");
    let e = smime::decrypt(&f(11), &MemoryKeyring::new(), None).unwrap_err();
    assert!(matches!(e, Error::NoMatchingKey { .. }), "{e}");
}

// ---------------------------------------------------------------- Simple Java Mail

const SJM: &str = "simple-java-mail";

#[test]
fn simple_java_mail_thunderbird_52_and_outlook_com() {
    let Some(tv) = vectors() else { return };
    smime::init();
    let dir = tv.join(SJM);
    // The key two ways: an encrypted PEM key (DES-EDE3) beside its
    // certificate, and a PKCS#12 with RC2-40 PBE (OpenSSL's -legacy).
    let mut pem = fs::read(dir.join("smime_test_user.key")).unwrap();
    pem.extend(fs::read(dir.join("smime_test_user.pem.standard.crt")).unwrap());
    let from_pem = KeyPair::from_file_bytes(&pem, Some("letmein"), "pem").unwrap();
    let from_p12 = KeyPair::from_file_bytes(
        &fs::read(dir.join("smime_test_user.p12")).unwrap(),
        Some("letmein"),
        "p12",
    )
    .unwrap();
    let ca = trust(
        vec![cert(&dir.join("ca.crt"))],
        vec![],
        vec![],
        CheckTime::Now,
    );
    for key in [from_pem, from_p12] {
        let label = key.label.clone();
        let mut kr = MemoryKeyring::new();
        kr.add(key);
        // Encrypted only (3DES).
        let o = smime::decrypt(
            &read(&tv, SJM, "S_MIME test message encrypted.eml"),
            &kr,
            None,
        )
        .unwrap_or_else(|e| panic!("{label}: {e}"));
        assert_eq!(decrypted(&o)[0].content_algorithm, "DES-EDE3-CBC");
        assert_eq!(decrypted(&o)[0].key_label, label);
        assert!(o.stopped.is_none());
        // Signed and encrypted: the inner signature verifies against the
        // project's CA (certificate valid to 2029-04-24) for S/MIME signing.
        let msg = read(&tv, SJM, "S_MIME test message signed & encrypted.eml");
        let o = smime::verify(&msg, &ca, Some(&kr)).unwrap_or_else(|e| panic!("{label}: {e}"));
        assert_eq!(decrypted(&o).len(), 1);
        let s = only_sig("signed & encrypted", &o);
        assert!(s.valid, "{label}: {:?}", s.reason);
    }
    // Signed (SHA-512), multipart/signed.
    let o = verify(
        "signed",
        &read(&tv, SJM, "S_MIME test message signed.eml"),
        &ca,
    );
    let s = only_sig("signed", &o);
    assert!(s.valid, "{:?}", s.reason);
    assert_eq!(s.signers[0].digest_algorithm, "SHA-512");
    assert!(s.signers[0].weak.is_empty());
    // Outlook via outlook.com: opaque signed-data as an attachment, SHA-1,
    // Actalis chain with its root in the message, at its signing time.
    let o = verifies_with_carried_root(
        "outlook.com",
        &read(&tv, SJM, "SMIME (signed and clear text).eml"),
        1543420144,
    );
    let s = only_sig("outlook.com", &o);
    assert!(!s.detached);
    assert_eq!(s.signers[0].digest_algorithm, "SHA-1");
}

// ---------------------------------------------------------------- KDE

const KDE: &str = "kde-mimetreeparser";

fn kde_keyring(tv: &Path) -> MemoryKeyring {
    let dir = tv.join(KDE);
    let mut pem = fs::read(dir.join("unittest-cert.key.pem")).unwrap();
    pem.extend(fs::read(dir.join("unittest-cert.crt.pem")).unwrap());
    let mut kr = MemoryKeyring::new();
    kr.add(KeyPair::from_file_bytes(&pem, None, "unittest").unwrap());
    kr
}

/// KMail 4 + gpgsm mails, each with an mbox `From ` line first.
#[test]
fn kde_kmail_mails_decrypt_and_verify() {
    let Some(tv) = vectors() else { return };
    smime::init();
    let kr = kde_keyring(&tv);
    let me = cert(&tv.join(KDE).join("unittest-cert.crt.pem"));
    // The signatures carry no certificates: the signer's comes from the
    // pool; self-signed, 1024-bit, valid 2010-06-29 to 2013-03-25.
    let then = trust(vec![me.clone()], vec![me.clone()], vec![], at(1357832892));
    // (file, content algorithm, signed inside)
    for (f, alg, signed) in [
        ("smime-encrypted.mbox", "DES-EDE3-CBC", false),
        ("smime-encrypted-octet-stream.mbox", "DES-EDE3-CBC", false),
        ("smime-opaque-enc+sign.mbox", "AES-128-CBC", true),
        ("smime-signed-encrypted.mbox", "DES-EDE3-CBC", true),
    ] {
        let msg = read(&tv, KDE, f);
        let o = smime::decrypt(&msg, &kr, None).unwrap_or_else(|e| panic!("{f}: {e}"));
        assert!(
            o.notes.iter().any(|n| n.contains("mbox")),
            "{f}: {:?}",
            o.notes
        );
        assert_eq!(decrypted(&o).len(), 1, "{f}");
        assert_eq!(decrypted(&o)[0].content_algorithm, alg, "{f}");
        assert!(o.message.starts_with(b"From: "), "{f}: mbox line kept");
        if signed {
            let o = smime::verify(&msg, &then, Some(&kr)).unwrap_or_else(|e| panic!("{f}: {e}"));
            let s = only_sig(f, &o);
            assert!(s.valid, "{f}: {:?}", s.reason);
            assert!(s.certificates.is_empty(), "{f}: carries certificates");
            assert!(s.signers[0].weak.iter().any(|w| w == "RSA-1024 key"));
            // Today the certificate has expired.
            let now = trust(vec![me.clone()], vec![me.clone()], vec![], CheckTime::Now);
            let o = smime::verify(&msg, &now, Some(&kr)).unwrap();
            assert!(!only_sig(f, &o).valid, "{f}: valid now");
        }
    }
    // Opaque signed, not encrypted.
    let o = verify(
        "opaque-sign",
        &read(&tv, KDE, "smime-opaque-sign.mbox"),
        &then,
    );
    assert!(only_sig("opaque-sign", &o).valid);
    assert!(!only_sig("opaque-sign", &o).detached);
    // The attachment one was signed in 2016, after the certificate expired:
    // it fails at its own signing time, and verifies at 2013's.
    let f = "smime-opaque-signed-encrypted-attachment.mbox";
    let msg = read(&tv, KDE, f);
    let at_signing = trust(
        vec![me.clone()],
        vec![me.clone()],
        vec![],
        CheckTime::SigningTime,
    );
    let o = smime::verify(&msg, &at_signing, Some(&kr)).unwrap();
    assert_eq!(decrypted(&o)[0].content_algorithm, "AES-128-CBC");
    let s = only_sig(f, &o);
    assert!(
        s.signers[0]
            .signing_time
            .as_deref()
            .unwrap()
            .starts_with("2016")
    );
    assert!(!s.valid && s.intact, "{f}");
    assert!(
        s.reason.as_deref().unwrap().contains("expired"),
        "{:?}",
        s.reason
    );
    let o = smime::verify(&msg, &then, Some(&kr)).unwrap();
    assert!(only_sig(f, &o).valid);
}

/// multipart/mixed with a text part and an encrypted `smime.p7m` part:
/// KDE shows the "ambiguous" one as the message (an MTA added a part) and
/// the "not so ambiguous" one (a further attachment) as an attachment.
/// Either way the encrypted part decrypts, in place, and nothing else
/// changes.
#[test]
fn kde_encrypted_part_in_multipart_mixed_opens_in_place() {
    let Some(tv) = vectors() else { return };
    smime::init();
    let kr = kde_keyring(&tv);
    let me = cert(&tv.join(KDE).join("unittest-cert.crt.pem"));
    let then = trust(vec![me.clone()], vec![me], vec![], at(1357832892));
    for (f, parts) in [
        ("smime-encrypted-ambiguous-mime.mbox", 2),
        ("smime-encrypted-not-so-ambiguous-mime.mbox", 3),
    ] {
        let msg = read(&tv, KDE, f);
        let o = smime::decrypt(&msg, &kr, None).unwrap_or_else(|e| panic!("{f}: {e}"));
        assert_eq!(decrypted(&o).len(), 1, "{f}");
        assert!(
            o.notes
                .iter()
                .any(|n| n.contains(&format!("part 2 of {parts}"))),
            "{f}: {:?}",
            o.notes
        );
        // The text parts are there, unchanged; the encrypted part is gone.
        let text = String::from_utf8_lossy(&o.message).to_string();
        assert!(text.contains("First message part"), "{f}");
        assert_eq!(text.contains("Additional message part"), parts == 3, "{f}");
        assert!(
            !text.contains("MIAGCSqGSIb3DQEHA6CA"),
            "{f}: still encrypted"
        );
        let before = smime::mime::Entity::parse(&msg);
        let after = smime::mime::Entity::parse(&o.message);
        let b = smime::mime::Multipart::parse(
            before.body(),
            before.content_type().param("boundary").unwrap(),
        )
        .unwrap();
        let a = smime::mime::Multipart::parse(
            after.body(),
            after.content_type().param("boundary").unwrap(),
        )
        .unwrap();
        assert_eq!(a.parts.len(), parts, "{f}");
        for i in (0..parts).filter(|&i| i != 1) {
            assert_eq!(a.parts[i], b.parts[i], "{f}: part {} changed", i + 1);
        }
        // What was encrypted is an opaque signature (kept for the reader's
        // client, as decrypting always does); it verifies.
        let o = verify(f, a.parts[1], &then);
        assert!(only_sig(f, &o).valid, "{f}");
        assert!(
            String::from_utf8_lossy(&o.message).contains("Encrypted and signed mail."),
            "{f}"
        );
        // Without the key: the error names the recipient, nothing half done.
        let e = smime::decrypt(&msg, &MemoryKeyring::new(), None).unwrap_err();
        assert!(matches!(e, Error::NoMatchingKey { .. }), "{f}: {e}");
    }
    // A multipart/mixed without an encrypted part is still "not encrypted".
    let plain = b"MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\nContent-Type: text/plain\r\n\r\nhi\r\n--b--\r\n";
    let e = smime::decrypt(plain, &kr, None).unwrap_err();
    assert!(matches!(e, Error::NotSmime { .. }), "{e}");
}

#[test]
fn kde_negatives_fail_cleanly() {
    let Some(tv) = vectors() else { return };
    smime::init();
    // Apple Mail 9.3, edited by KDE: the digest does not match.
    let f = "smime-signed-apple.mbox";
    let o = verify(f, &read(&tv, KDE, f), &no_anchor());
    let s = only_sig(f, &o);
    assert!(!s.intact && !s.valid);
    assert!(
        s.reason.as_deref().unwrap().contains("does not match"),
        "{:?}",
        s.reason
    );
    assert_eq!(s.signers[0].digest_algorithm, "SHA-1");
    // A certs-only part with garbage base64: an error, no panic, for
    // every entry point.
    let msg = read(&tv, KDE, "smime-cert.mbox");
    let e = smime::verify(&msg, &no_anchor(), None).unwrap_err();
    assert!(!e.to_string().is_empty());
    let e = smime::decrypt(&msg, &kde_keyring(&tv), None).unwrap_err();
    assert!(!e.to_string().contains("unknown OpenSSL error"), "{e}");
    assert!(smime::inspect(&msg).is_err());
}

// ---------------------------------------------------------------- .NET

/// Windows CryptMsg EnvelopedData from .NET's tests: each decrypts to
/// 01 02 03 04 with `RSAKeyTransfer1.pfx` (RSA 1024, certificate expired
/// 2017: an expired key still decrypts).
#[test]
fn dotnet_enveloped_data_decrypts() {
    let Some(tv) = vectors() else { return };
    smime::init();
    let d = tv.join("dotnet-pkcs");
    let kr = super::fixtures::dotnet_keyring(&tv);
    let cer = cert(&d.join("RSAKeyTransfer1.cer"));
    assert!(cer.subject_key_id().is_none());
    // (file, content cipher, key transport, recipient named by)
    for (f, alg, kt, by) in [
        (
            "TestDecryptSimpleAes128_IssuerAndSerial.der",
            "AES-128-CBC",
            // Also OAEP with SHA-1 defaults (openssl cms -cmsout -print),
            // though the README names only the AES-192 one.
            "RSAES-OAEP",
            "issuer=",
        ),
        (
            "TestDecryptSimpleAes192_IssuerAndSerial.der",
            "AES-192-CBC",
            "RSAES-OAEP",
            "issuer=",
        ),
        (
            "TestDecryptSimpleTripleDes_IssuerAndSerial.der",
            "DES-EDE3-CBC",
            "rsaEncryption",
            "issuer=",
        ),
        (
            "TestDecryptSimpleAes256_Ski.der",
            "AES-256-CBC",
            "rsaEncryption",
            "subjectKeyIdentifier=F2008AA9",
        ),
    ] {
        let der = fs::read(d.join(f)).unwrap();
        let o = smime::decrypt(&der, &kr, None).unwrap_or_else(|e| panic!("{f}: {e}"));
        let r = decrypted(&o);
        assert_eq!(r.len(), 1, "{f}");
        assert_eq!(r[0].content_algorithm, alg, "{f}");
        assert!(
            r[0].key_algorithm.starts_with(kt),
            "{f}: {}",
            r[0].key_algorithm
        );
        assert!(r[0].recipient.contains(by), "{f}: {}", r[0].recipient);
        let e = smime::mime::Entity::parse(&o.message);
        assert_eq!(e.decoded_body().unwrap().as_ref(), &[1u8, 2, 3, 4], "{f}");
        // Any other key: no match, naming the recipient.
        let e = smime::decrypt(&der, &kde_keyring(&tv), None).unwrap_err();
        assert!(matches!(e, Error::NoMatchingKey { .. }), "{f}: {e}");
    }
}
