//! Our own output through our own input, for every algorithm combination,
//! and property tests over arbitrary content.

use proptest::prelude::*;
use smime::{ContentCipher, EncryptOptions, KeyTransport, LayerReport, SignOptions};

use crate::fixtures::{fx, keyring, pair, trust};

const MESSAGE: &[u8] =
    b"From: Alice <alice@example.test>\r\nTo: Bob <bob@example.test>\r\nCc: c@example.test\r\n\
Subject: round trip\r\nDate: Sun, 22 Nov 2026 10:00:00 +0100\r\nMessage-ID: <rt@example.test>\r\n\
MIME-Version: 1.0\r\nContent-Type: text/plain; charset=us-ascii\r\n\r\nHello Bob.\r\n";

const CIPHERS: [ContentCipher; 4] = [
    ContentCipher::Aes128Cbc,
    ContentCipher::Aes256Cbc,
    ContentCipher::Aes128Gcm,
    ContentCipher::Aes256Gcm,
];
const TRANSPORTS: [KeyTransport; 2] = [KeyTransport::RsaPkcs1, KeyTransport::RsaOaepSha256];

fn outer_kept(m: &[u8]) {
    let s = String::from_utf8_lossy(m);
    for h in [
        "From: Alice",
        "To: Bob",
        "Cc: c@",
        "Subject: round trip",
        "Date: Sun",
        "Message-ID: <rt@",
    ] {
        assert!(s.contains(h), "{h} missing in {s}");
    }
}

#[test]
fn encrypt_decrypt_every_cipher_transport_and_recipient() {
    let f = fx();
    for cipher in CIPHERS {
        for kt in TRANSPORTS {
            let opts = EncryptOptions {
                cipher,
                key_transport: kt,
            };
            let enc =
                smime::encrypt(MESSAGE, &[f.alice.1.clone(), f.bob.1.clone()], &opts).unwrap();
            outer_kept(&enc);
            // The streaming writer gives the same length as the Vec one.
            let mut streamed = Vec::new();
            smime::encrypt_to(
                MESSAGE,
                &[f.alice.1.clone(), f.bob.1.clone()],
                &opts,
                &mut streamed,
            )
            .unwrap();
            assert_eq!(streamed.len(), enc.len());
            for who in [&f.alice, &f.bob] {
                let kr = keyring(&[(who, "k")]);
                let opened = smime::decrypt(&enc, &kr, None).unwrap();
                outer_kept(&opened.message);
                assert!(opened.message.ends_with(
                    b"Content-Type: text/plain; charset=us-ascii\r\n\r\nHello Bob.\r\n"
                ));
                let LayerReport::Decrypted(rep) = &opened.layers[0] else {
                    panic!()
                };
                assert_eq!(
                    rep.authenticated,
                    matches!(cipher, ContentCipher::Aes128Gcm | ContentCipher::Aes256Gcm)
                );
                assert_eq!(rep.recipient_count, 2);
            }
            let layers = smime::inspect(&enc).unwrap();
            assert!(
                matches!(&layers[0], smime::Layer::Encrypted { recipients, .. } if recipients.len() == 2)
            );
        }
    }
}

#[test]
fn sign_verify_detached_opaque_pkcs1_pss_ecdsa() {
    let f = fx();
    let t = trust();
    for (who, pss) in [(&f.alice, false), (&f.alice, true), (&f.carol_ec, false)] {
        for opaque in [false, true] {
            let signed =
                smime::sign(MESSAGE, &pair(who, "s"), &SignOptions { opaque, pss }).unwrap();
            outer_kept(&signed);
            let opened = smime::verify(&signed, &t, None).unwrap();
            assert!(
                opened.all_signatures_valid(),
                "pss={pss} opaque={opaque}: {:?}",
                opened.layers
            );
            let s = opened.signatures().next().unwrap();
            assert_eq!(s.detached, !opaque);
            let si = &s.signers[0];
            assert_eq!(si.digest_algorithm, "SHA-256");
            assert!(si.signing_time.is_some());
            // Only what we want to receive, strongest first (issue 11).
            assert_eq!(si.capabilities, smime::SMIME_CAPABILITIES);
            if pss {
                assert_eq!(si.signature_algorithm, "RSASSA-PSS");
            }
            assert!(opened.message.ends_with(b"Hello Bob.\r\n"));
        }
    }
}

#[test]
fn triple_wrapped_sign_encrypt_sign() {
    let f = fx();
    let inner = smime::sign(MESSAGE, &pair(&f.alice, "a"), &SignOptions::default()).unwrap();
    let enc = smime::encrypt(
        &inner,
        std::slice::from_ref(&f.bob.1),
        &EncryptOptions::default(),
    )
    .unwrap();
    let outer = smime::sign(
        &enc,
        &pair(&f.alice, "a"),
        &SignOptions {
            opaque: true,
            pss: false,
        },
    )
    .unwrap();
    let kr = keyring(&[(&f.bob, "bob")]);
    // decrypt removes the outer signature and the encryption, keeps the inner signature.
    let opened = smime::decrypt(&outer, &kr, Some(&trust())).unwrap();
    assert_eq!(opened.layers.len(), 2);
    assert!(matches!(&opened.layers[0], LayerReport::Signed(s) if s.valid));
    assert!(String::from_utf8_lossy(&opened.message).contains("multipart/signed"));
    // verify with the keyring goes all the way through.
    let all = smime::verify(&outer, &trust(), Some(&kr)).unwrap();
    assert_eq!(all.layers.len(), 3);
    assert!(all.all_signatures_valid());
    assert!(all.message.ends_with(b"Hello Bob.\r\n"));
}

#[test]
fn wrong_key_says_which_recipients() {
    let f = fx();
    let enc = smime::encrypt(
        MESSAGE,
        std::slice::from_ref(&f.bob.1),
        &EncryptOptions::default(),
    )
    .unwrap();
    let err = smime::decrypt(&enc, &keyring(&[(&f.alice, "alice")]), None).unwrap_err();
    assert!(err.is_crypto_failure());
    assert_eq!(
        err.to_string(),
        "no key in the keyring matches any recipient: issuer=CN=Roundtrip CA, serial=03"
    );
}

#[test]
fn ec_recipient_is_refused_clearly() {
    let f = fx();
    let err = smime::encrypt(
        MESSAGE,
        std::slice::from_ref(&f.carol_ec.1),
        &EncryptOptions::default(),
    )
    .unwrap_err();
    assert!(err.to_string().contains("non-RSA key"), "{err}");
}

fn arb_body() -> impl Strategy<Value = Vec<u8>> {
    // Text-ish bytes with bare LF, CR, CRLF, 8-bit and long lines.
    prop::collection::vec(
        prop_oneof![
            4 => prop::sample::select(b"abc XYZ.-=\t".to_vec()),
            1 => Just(b'\n'),
            1 => Just(b'\r'),
            1 => any::<u8>(),
        ],
        0..3000,
    )
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn encrypt_then_decrypt_gives_the_canonical_entity(body in arb_body(), gcm in any::<bool>()) {
        let f = fx();
        let mut msg = b"Subject: p\r\nContent-Type: application/octet-stream\r\n\r\n".to_vec();
        msg.extend_from_slice(&body);
        let cipher = if gcm { ContentCipher::Aes256Gcm } else { ContentCipher::Aes128Cbc };
        let enc = smime::encrypt(&msg, std::slice::from_ref(&f.bob.1), &EncryptOptions { cipher, ..Default::default() }).unwrap();
        let opened = smime::decrypt(&enc, &keyring(&[(&f.bob, "b")]), None).unwrap();
        // The encrypted message gained a MIME-Version, which stays outside.
        let mut expect = b"Subject: p\r\nMIME-Version: 1.0\r\nContent-Type: application/octet-stream\r\n\r\n".to_vec();
        expect.extend_from_slice(&smime::mime::to_crlf(&body));
        prop_assert_eq!(opened.message, expect);
    }

    #[test]
    fn sign_then_verify_is_valid_and_content_survives(body in arb_body(), opaque in any::<bool>()) {
        let f = fx();
        let mut msg = b"Subject: p\nContent-Type: text/plain; charset=utf-8\n\n".to_vec();
        msg.extend_from_slice(&body);
        let signed = smime::sign(&msg, &pair(&f.alice, "a"), &SignOptions { opaque, pss: false }).unwrap();
        let opened = smime::verify(&signed, &trust(), None).unwrap();
        prop_assert!(opened.all_signatures_valid());
        // What was signed decodes back to the canonical body.
        let e = smime::mime::Entity::parse(&opened.message);
        let decoded = e.decoded_body().unwrap();
        prop_assert_eq!(&decoded[..], &smime::mime::to_crlf(&body)[..]);
    }
}
