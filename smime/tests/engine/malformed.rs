//! Broken input of every kind: a typed error, never a panic.

use smime::{EncryptOptions, Error, MemoryKeyring, SignOptions};

use crate::fixtures::{fx, keyring, pair, trust};

const MESSAGE: &[u8] = b"From: a@example.test\r\nSubject: x\r\n\r\nbody\r\n";

#[test]
fn not_smime_is_reported_with_its_content_type() {
    let err = smime::decrypt(MESSAGE, &MemoryKeyring::new(), None).unwrap_err();
    assert!(matches!(err, Error::NotSmime { .. }));
    assert_eq!(
        err.to_string(),
        "not an S/MIME encrypted message (Content-Type: text/plain)"
    );
    assert!(!err.is_crypto_failure());
    let err = smime::verify(MESSAGE, &trust(), None).unwrap_err();
    assert!(matches!(
        err,
        Error::NotSmime {
            expected: "signed",
            ..
        }
    ));
}

#[test]
fn truncated_encrypted_mail_never_panics() {
    let f = fx();
    let enc = smime::encrypt(
        MESSAGE,
        std::slice::from_ref(&f.bob.1),
        &EncryptOptions::default(),
    )
    .unwrap();
    let kr = keyring(&[(&f.bob, "b")]);
    let header_end = enc.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
    for cut in (header_end..enc.len() - 3).step_by(7) {
        let r = smime::decrypt(&enc[..cut], &kr, None);
        let e = r.expect_err("truncated mail decrypted");
        assert!(
            matches!(
                e,
                Error::MalformedCms(_) | Error::TransferEncoding { .. } | Error::DecryptFailed(_)
            ),
            "cut {cut}: {e}"
        );
    }
}

#[test]
fn flipped_ciphertext_fails_to_decrypt() {
    let f = fx();
    let kr = keyring(&[(&f.bob, "b")]);
    for cipher in [
        smime::ContentCipher::Aes256Cbc,
        smime::ContentCipher::Aes256Gcm,
    ] {
        let long = [MESSAGE, &[b'x'; 4000][..]].concat();
        let enc = smime::encrypt(
            &long,
            std::slice::from_ref(&f.bob.1),
            &EncryptOptions {
                cipher,
                ..Default::default()
            },
        )
        .unwrap();
        let der = smime::mime::Entity::parse(&enc)
            .decoded_body()
            .unwrap()
            .into_owned();
        // Flip one bit in the last ciphertext block (or the GCM tag).
        let mut bad = der.clone();
        let n = bad.len();
        bad[n - 20] ^= 1;
        let res = smime::decrypt(&bad, &kr, None);
        if cipher == smime::ContentCipher::Aes256Gcm {
            let err = res.unwrap_err();
            assert!(matches!(err, Error::DecryptFailed(_)), "{err}");
            assert!(err.is_crypto_failure());
        } else {
            // CBC has no authentication: the padding may by chance still be
            // right, and then the content differs. It never comes back intact.
            let good = smime::decrypt(&der, &kr, None).unwrap().message;
            assert!(res.map_or(true, |o| o.message != good));
        }
    }
}

#[test]
fn broken_mime_structures() {
    let cases: &[(&[u8], &str)] = &[
        (b"Content-Type: multipart/signed; protocol=\"application/pkcs7-signature\"\r\n\r\nx", "without a boundary"),
        (b"Content-Type: multipart/signed; boundary=b\r\n\r\n--b\r\nA\r\n--b--\r\n", "exactly 2 parts"),
        (b"Content-Type: multipart/signed; boundary=b\r\n\r\nno parts\r\n", "no body part"),
        (b"Content-Type: application/pkcs7-mime\r\nContent-Transfer-Encoding: base64\r\n\r\n!!!!\r\n", "base64"),
        (b"Content-Type: application/pkcs7-mime\r\nContent-Transfer-Encoding: x-uuencode\r\n\r\nabc", "unknown Content-Transfer-Encoding"),
        (b"Content-Type: application/pkcs7-mime\r\nContent-Transfer-Encoding: base64\r\n\r\nMIIBIjANBgkq\r\n", "malformed CMS"),
        (b"Content-Type: application/pkcs7-mime\r\n\r\n", "empty CMS"),
    ];
    for (m, want) in cases {
        let e = smime::verify(m, &trust(), None).unwrap_err();
        assert!(e.to_string().contains(want), "{want}: got {e}");
        let _ = smime::decrypt(m, &MemoryKeyring::new(), None).unwrap_err();
        let _ = smime::inspect(m);
    }
}

#[test]
fn signature_part_swapped_between_messages_is_invalid() {
    let f = fx();
    let a = smime::sign(
        b"Subject: a\r\n\r\none\r\n",
        &pair(&f.alice, "a"),
        &SignOptions::default(),
    )
    .unwrap();
    let b = smime::sign(
        b"Subject: b\r\n\r\ntwo\r\n",
        &pair(&f.alice, "a"),
        &SignOptions::default(),
    )
    .unwrap();
    let sig_b = &b[b
        .windows(35)
        .rposition(|w| w == b"Content-Type: application/pkcs7-sig")
        .unwrap()..];
    let a_cut = a
        .windows(35)
        .rposition(|w| w == b"Content-Type: application/pkcs7-sig")
        .unwrap();
    // Boundaries differ: rewrite b's closing boundary to a's.
    let bound_a = String::from_utf8_lossy(&a)
        .split("boundary=\"")
        .nth(1)
        .unwrap()
        .split('"')
        .next()
        .unwrap()
        .to_string();
    let bound_b = String::from_utf8_lossy(&b)
        .split("boundary=\"")
        .nth(1)
        .unwrap()
        .split('"')
        .next()
        .unwrap()
        .to_string();
    let mixed = [
        &a[..a_cut],
        String::from_utf8_lossy(sig_b)
            .replace(&bound_b, &bound_a)
            .as_bytes(),
    ]
    .concat();
    let opened = smime::verify(&mixed, &trust(), None).unwrap();
    assert!(!opened.all_signatures_valid());
}

#[test]
fn garbage_never_panics() {
    let kr = keyring(&[(&fx().bob, "b")]);
    let t = trust();
    let mut seed: u32 = 12345;
    for len in [0usize, 1, 2, 10, 100, 1000] {
        for _ in 0..20 {
            let data: Vec<u8> = (0..len)
                .map(|_| {
                    seed = seed.wrapping_mul(1_103_515_245).wrapping_add(12345);
                    (seed >> 16) as u8
                })
                .collect();
            for prefix in [&b""[..], b"Content-Type: application/pkcs7-mime\r\nContent-Transfer-Encoding: binary\r\n\r\n", b"\x30\x80"] {
                let m = [prefix, &data[..]].concat();
                let _ = smime::decrypt(&m, &kr, None);
                let _ = smime::verify(&m, &t, Some(&kr));
                let _ = smime::inspect(&m);
            }
        }
    }
}

#[test]
fn bad_outer_signature_does_not_lose_the_encrypted_content() {
    // Review finding: OpenSSL only returns opaque content when the signature
    // is good, so a broken outer signature used to empty the message.
    let f = fx();
    let enc = smime::encrypt(
        MESSAGE,
        std::slice::from_ref(&f.bob.1),
        &EncryptOptions::default(),
    )
    .unwrap();
    let signed = smime::sign(
        &enc,
        &pair(&f.alice, "a"),
        &SignOptions {
            opaque: true,
            pss: false,
        },
    )
    .unwrap();
    // Corrupt the signature value (the last bytes of the DER) in the base64.
    let e = smime::mime::Entity::parse(&signed);
    let mut der = e.decoded_body().unwrap().into_owned();
    let n = der.len();
    der[n - 5] ^= 0xff;
    let mut broken = e.header_bytes().to_vec();
    broken.extend_from_slice(b"\r\n\r\n");
    broken.extend_from_slice(&smime::mime::encode_base64_lines(&der));
    let opened = smime::decrypt(&broken, &keyring(&[(&f.bob, "b")]), Some(&trust())).unwrap();
    assert!(matches!(&opened.layers[0], smime::LayerReport::Signed(s) if !s.valid));
    assert!(matches!(
        &opened.layers[1],
        smime::LayerReport::Decrypted(_)
    ));
    assert!(
        opened.message.ends_with(b"body\r\n"),
        "{}",
        String::from_utf8_lossy(&opened.message)
    );
}

#[test]
fn broken_inner_layer_keeps_what_was_decrypted() {
    let f = fx();
    let inner =
        b"Subject: x\r\nContent-Type: application/pkcs7-mime; smime-type=enveloped-data\r\n\
Content-Transfer-Encoding: base64\r\n\r\nMIIBIjANBgkq\r\n";
    let enc = smime::encrypt(
        inner,
        std::slice::from_ref(&f.bob.1),
        &EncryptOptions::default(),
    )
    .unwrap();
    let opened = smime::decrypt(&enc, &keyring(&[(&f.bob, "b")]), None).unwrap();
    assert_eq!(opened.layers.len(), 1);
    assert!(
        opened
            .stopped
            .as_deref()
            .unwrap_or("")
            .contains("malformed CMS"),
        "{:?}",
        opened.stopped
    );
    assert!(opened.message.ends_with(b"MIIBIjANBgkq\r\n"));
}

#[test]
fn outer_signature_without_trust_is_not_checked_but_intact() {
    // Issue 11.2: without trust anchors, decrypt used to call a good outer
    // signature "NOT valid: unable to get local issuer certificate".
    let f = fx();
    let enc = smime::encrypt(
        MESSAGE,
        std::slice::from_ref(&f.bob.1),
        &EncryptOptions::default(),
    )
    .unwrap();
    for opaque in [true, false] {
        let signed = smime::sign(
            &enc,
            &pair(&f.alice, "a"),
            &SignOptions { opaque, pss: false },
        )
        .unwrap();
        let kr = keyring(&[(&f.bob, "b")]);
        let opened = smime::decrypt(&signed, &kr, None).unwrap();
        let smime::LayerReport::Signed(s) = &opened.layers[0] else {
            panic!("{:?}", opened.layers)
        };
        assert!(!s.valid && s.intact && !s.trust_checked, "{s:?}");
        assert_eq!(s.reason.as_deref(), Some(smime::verify::NOT_CHECKED));
        assert!(s.signers[0].subject.contains("alice"), "{s:?}");
        assert!(s.signers[0].chain_error.is_none(), "{s:?}");
        assert!(opened.message.ends_with(b"body\r\n"));
        // With trust: valid and checked.
        let opened = smime::decrypt(&signed, &kr, Some(&trust())).unwrap();
        let smime::LayerReport::Signed(s) = &opened.layers[0] else {
            panic!()
        };
        assert!(s.valid && s.intact && s.trust_checked, "{s:?}");
    }
}

#[test]
fn keys_needing_a_password_fail_at_once_without_one() {
    // Issue 11.3: never OpenSSL's terminal prompt; name --password-env.
    let f = fx();
    let mut pem = f
        .bob
        .0
        .private_key_to_pem_pkcs8_passphrase(openssl::symm::Cipher::aes_256_cbc(), b"pw")
        .unwrap();
    pem.extend(f.bob.1.to_pem().unwrap());
    let err = smime::KeyPair::from_file_bytes(&pem, None, "k.pem").unwrap_err();
    assert_eq!(
        err.to_string(),
        "bad key or certificate: k.pem: the private key is encrypted and no password was given (--password-env VAR not given)"
    );
    let err = smime::KeyPair::from_file_bytes(&pem, Some("wrong"), "k.pem").unwrap_err();
    assert!(err.to_string().contains("wrong password?"), "{err}");
    assert!(smime::KeyPair::from_file_bytes(&pem, Some("pw"), "k.pem").is_ok());
    // A password longer than OpenSSL's buffer is an error, not a panic.
    let long = "x".repeat(100_000);
    assert!(smime::KeyPair::from_file_bytes(&pem, Some(&long), "k.pem").is_err());
    let p12 = openssl::pkcs12::Pkcs12::builder()
        .name("bob")
        .pkey(&f.bob.0)
        .cert(&f.bob.1)
        .build2("pw")
        .unwrap()
        .to_der()
        .unwrap();
    let err = smime::KeyPair::from_file_bytes(&p12, None, "k.p12").unwrap_err();
    assert_eq!(
        err.to_string(),
        "bad key or certificate: k.p12: the PKCS#12 file needs a password and none was given (--password-env VAR not given)"
    );
    assert!(smime::KeyPair::from_file_bytes(&p12, Some("pw"), "k.p12").is_ok());
}
