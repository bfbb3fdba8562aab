//! Interop of `sikkermail smime` with independent implementations, in both
//! directions: OpenSSL (`openssl cms`), GnuPG (`gpgsm`), NSS (`cmsutil`,
//! Thunderbird's engine) and Python `cryptography`. Keys are made at test
//! time (see `common::pki`). A missing peer is a loud skip, or a failure
//! under `SIKKERMAIL_REQUIRE_PEERS=1`.

#![allow(clippy::unwrap_used)]

mod common;

use std::fs;
use std::path::Path;

use common::*;

const MSG: &[u8] =
    b"Content-Type: text/plain; charset=utf-8\r\n\r\nHello from the interop test.\r\nLine 2.\r\n";

fn write(dir: &Path, name: &str, data: &[u8]) -> String {
    let p = dir.join(name);
    fs::write(&p, data).unwrap();
    p.display().to_string()
}

// ---------------------------------------------------------------- OpenSSL

#[test]
fn openssl_made_messages_decrypt() {
    if !peer("openssl") {
        return;
    }
    let pki = pki();
    let t = tempfile::tempdir().unwrap();
    let msg = write(t.path(), "msg.txt", MSG);
    let (bob, alice, carol) = (
        pki.file("bob.crt"),
        pki.file("alice.crt"),
        pki.file("carol.crt"),
    );
    let cases: Vec<(&str, String, &str)> = vec![
        ("aes-256-cbc", format!("-aes-256-cbc {bob}"), "bob.pem"),
        ("aes-128-cbc", format!("-aes-128-cbc {bob}"), "bob.pem"),
        ("aes-192-cbc", format!("-aes-192-cbc {bob}"), "bob.pem"),
        ("aes-256-gcm", format!("-aes-256-gcm {bob}"), "bob.pem"),
        ("aes-128-gcm", format!("-aes-128-gcm {bob}"), "bob.pem"),
        ("3des", format!("-des3 {bob}"), "bob.pem"),
        (
            "oaep-sha1",
            format!("-aes-256-cbc -recip {bob} -keyopt rsa_padding_mode:oaep"),
            "bob.pem",
        ),
        (
            "oaep-sha256",
            format!(
                "-aes-256-cbc -recip {bob} -keyopt rsa_padding_mode:oaep -keyopt rsa_oaep_md:sha256 -keyopt rsa_mgf1_md:sha256"
            ),
            "bob.pem",
        ),
        (
            "three recipients",
            format!("-aes-128-cbc {alice} {bob} {carol}"),
            "bob.pem",
        ),
        (
            "three recipients, ECDH one",
            format!("-aes-128-cbc {alice} {bob} {carol}"),
            "carol.pem",
        ),
        (
            "subject key id",
            format!("-aes-256-cbc -keyid {bob}"),
            "bob.pem",
        ),
        ("ecdh", format!("-aes-256-cbc {carol}"), "carol.pem"),
    ];
    for (what, args, key) in cases {
        sh(
            t.path(),
            &format!(
                "openssl cms -encrypt -binary -in {msg} -out enc.eml -subject 'S' -to bob@example.test {args}"
            ),
        );
        let enc = fs::read(t.path().join("enc.eml")).unwrap();
        let out = sikkermail(&["smime", "decrypt", "--key", &pki.file(key)], &enc);
        let plain = ok(&out);
        assert!(
            plain.ends_with(MSG),
            "{what}: {}",
            String::from_utf8_lossy(&plain)
        );
        assert!(
            plain.starts_with(b"To: bob@example.test"),
            "{what}: outer headers lost"
        );
    }
}

#[test]
fn our_encryption_is_read_by_openssl() {
    if !peer("openssl") {
        return;
    }
    let pki = pki();
    let t = tempfile::tempdir().unwrap();
    let (bob, alice) = (pki.file("bob.crt"), pki.file("alice.crt"));
    for cipher in ["aes256-cbc", "aes128-cbc", "aes128-gcm", "aes256-gcm"] {
        for oaep in [false, true] {
            let mut args = vec![
                "smime", "encrypt", "--to", &bob, "--to", &alice, "--cipher", cipher,
            ];
            if oaep {
                args.push("--oaep");
            }
            let enc = ok(&sikkermail(&args, &plain_message()));
            let text = String::from_utf8_lossy(&enc);
            for h in [
                "From: Advokat",
                "To: Retten",
                "Cc: Sekretariat",
                "Subject: Sag 2026-117",
                "Date: Sun, 22",
                "Message-ID: <sag-117",
            ] {
                assert!(text.contains(h), "{cipher}: outer header {h} lost");
            }
            let smime_type = if cipher.ends_with("gcm") {
                "authEnveloped-data"
            } else {
                "enveloped-data"
            };
            assert!(text.contains(smime_type));
            let enc_path = write(t.path(), "enc.eml", &enc);
            for user in ["bob", "alice"] {
                let out = sh(
                    t.path(),
                    &format!(
                        "openssl cms -decrypt -binary -in {enc_path} -recip {} -inkey {}",
                        pki.file(&format!("{user}.crt")),
                        pki.file(&format!("{user}.key"))
                    ),
                );
                assert_eq!(
                    out.stdout,
                    plain_inner_entity(),
                    "{cipher} oaep={oaep} {user}"
                );
            }
        }
    }
}

#[test]
fn our_signatures_are_verified_by_openssl() {
    if !peer("openssl") {
        return;
    }
    let pki = pki();
    let t = tempfile::tempdir().unwrap();
    let alice_pem = pki.file("alice.pem");
    for (opaque, pss) in [(false, false), (true, false), (false, true), (true, true)] {
        let mut args = vec!["smime", "sign", "--key", &alice_pem];
        if opaque {
            args.push("--opaque");
        }
        if pss {
            args.push("--pss");
        }
        let signed = ok(&sikkermail(&args, &plain_message()));
        let p = write(t.path(), "signed.eml", &signed);
        // (OpenSSL 3.0's -binary mangles line ends of multipart/signed parts
        // when it splits them, so it is used for opaque signatures only.)
        let binary = if opaque { "-binary" } else { "" };
        sh(
            t.path(),
            &format!(
                "openssl cms -verify -in {p} -CAfile {} -out content.bin {binary}",
                pki.file("ca.crt")
            ),
        );
        let content = fs::read(t.path().join("content.bin")).unwrap();
        let text = String::from_utf8(content).unwrap();
        assert!(
            text.contains("Content-Transfer-Encoding: quoted-printable"),
            "8-bit not encoded: {text}"
        );
        assert!(text.contains("K=C3=A6re Retten"), "{text}");
        // The signer's details OpenSSL sees.
        let info = sh(t.path(), &format!("openssl cms -cmsout -print -in {p}")).stdout;
        let info = String::from_utf8_lossy(&info);
        assert!(info.contains("signingTime"), "no signing time");
        assert!(
            info.contains("SMIMECapabilities") || info.contains("S/MIME Capabilities"),
            "no capabilities"
        );
        // Only strong ciphers advertised: none of OpenSSL's default RC2/DES list.
        let lower = info.to_ascii_lowercase();
        for weak in ["rc2", "des-", "des3", "des-ede3", "desx"] {
            assert!(!lower.contains(weak), "{weak} advertised: {info}");
        }
        for strong in ["aes-256-gcm", "aes-128-gcm", "aes-256-cbc", "rsaesoaep"] {
            assert!(lower.contains(strong), "{strong} not advertised: {info}");
        }
        assert!(
            info.contains(if pss { "rsassaPss" } else { "rsaEncryption" }),
            "signature algorithm (pss={pss})"
        );
        assert!(info.contains("Interop Test CA"), "chain not included");
        // Tampering is caught by OpenSSL and by us.
        let tampered = String::from_utf8_lossy(&signed).replacen("K=C3=A6re", "K=C3=A5re", 1);
        if !opaque {
            let tp = write(t.path(), "tampered.eml", tampered.as_bytes());
            assert!(
                !sh_status(
                    t.path(),
                    &format!(
                        "openssl cms -verify -in {tp} -CAfile {} -out /dev/null",
                        pki.file("ca.crt")
                    )
                )
                .status
                .success()
            );
            let ours = sikkermail(
                &["smime", "verify", "--ca", &pki.file("ca.crt")],
                tampered.as_bytes(),
            );
            assert_eq!(ours.status.code(), Some(1));
            assert!(String::from_utf8_lossy(&ours.stderr).contains("does not match"));
        }
    }
}

#[test]
fn openssl_signatures_verify_with_us() {
    if !peer("openssl") {
        return;
    }
    let pki = pki();
    let t = tempfile::tempdir().unwrap();
    let msg = write(t.path(), "msg.txt", MSG);
    let ca = pki.file("ca.crt");
    for (what, args) in [
        (
            "detached",
            format!(
                "-signer {} -inkey {}",
                pki.file("alice.crt"),
                pki.file("alice.key")
            ),
        ),
        (
            "opaque",
            format!(
                "-nodetach -signer {} -inkey {}",
                pki.file("alice.crt"),
                pki.file("alice.key")
            ),
        ),
        (
            "pss",
            format!(
                "-signer {} -inkey {} -keyopt rsa_padding_mode:pss",
                pki.file("alice.crt"),
                pki.file("alice.key")
            ),
        ),
        (
            "ecdsa sha384",
            format!(
                "-md sha384 -signer {} -inkey {}",
                pki.file("carol.crt"),
                pki.file("carol.key")
            ),
        ),
    ] {
        sh(
            t.path(),
            &format!("openssl cms -sign -in {msg} -out s.eml {args}"),
        );
        let signed = fs::read(t.path().join("s.eml")).unwrap();
        let out = sikkermail(
            &[
                "smime",
                "verify",
                "--ca",
                &ca,
                "--out",
                &t.path().join("v.eml").display().to_string(),
            ],
            &signed,
        );
        ok(&out);
        assert!(
            fs::read(t.path().join("v.eml")).unwrap().ends_with(MSG),
            "{what}"
        );
        // Without the CA: exit 1, reason given.
        let other = sikkermail(&["smime", "verify", "--ca", &pki.file("bob.crt")], &signed);
        assert_eq!(other.status.code(), Some(1), "{what}");
        assert!(
            String::from_utf8_lossy(&other.stderr).contains("issuer"),
            "{what}"
        );
    }
}

#[test]
fn expired_legacy_key_decrypts_beside_current_one() {
    if !peer("openssl") {
        return;
    }
    let pki = pki();
    let t = tempfile::tempdir().unwrap();
    let msg = write(t.path(), "msg.txt", MSG);
    // OpenSSL refuses nothing here: the recipient certificate's dates do not
    // matter to encryption, as with old NemID mail in an archive.
    sh(
        t.path(),
        &format!(
            "openssl cms -encrypt -aes-256-cbc -in {msg} -out old.eml {}",
            pki.file("bob-legacy.crt")
        ),
    );
    let old = fs::read(t.path().join("old.eml")).unwrap();
    let current_only = sikkermail(&["smime", "decrypt", "--key", &pki.file("bob.pem")], &old);
    assert_eq!(current_only.status.code(), Some(1));
    let err = String::from_utf8_lossy(&current_only.stderr);
    assert!(err.contains("no key in the keyring matches any recipient: issuer=C=DK, O=Interop Test, CN=Interop Test CA, serial=0D"), "{err}");
    let both = sikkermail(
        &[
            "smime",
            "decrypt",
            "--key",
            &pki.file("bob.pem"),
            "--key",
            &pki.file("bob-legacy.pem"),
        ],
        &old,
    );
    assert!(ok(&both).ends_with(MSG));
    assert!(String::from_utf8_lossy(&both.stderr).contains("bob-legacy.pem"));
}

// ---------------------------------------------------------------- gpgsm

struct Gpg {
    home: tempfile::TempDir,
}

impl Gpg {
    fn new() -> Gpg {
        let pki = pki();
        let home = tempfile::tempdir().unwrap();
        let h = home.path().to_path_buf();
        fs::write(
            h.join("gpgsm.conf"),
            "disable-crl-checks\ndisable-dirmngr\ndisable-policy-checks\n",
        )
        .unwrap();
        fs::write(h.join("gpg-agent.conf"), "allow-loopback-pinentry\n").unwrap();
        let g = Gpg { home };
        gpg_agent_up(&h);
        for u in ["alice", "bob"] {
            let text = gpgsm_import_p12(
                &h,
                Path::new(&pki.file(&format!("{u}-gpgsm.p12"))),
                "test",
                &|n| {
                    // A copy of its own: the shared PKI is read by other tests.
                    let again = h.join(format!("{u}-{n}.p12"));
                    sh(
                        &h,
                        &format!(
                            "openssl pkcs12 -export -in {} -name {u} -passout pass:test \
                             -keypbe PBE-SHA1-3DES -certpbe PBE-SHA1-3DES -macalg sha1 -out {}",
                            pki.file(&format!("{u}.pem")),
                            again.display()
                        ),
                    );
                    again
                },
            );
            assert!(
                text.contains("secret keys imported: 1"),
                "gpgsm import of {u}: {text}"
            );
        }
        g.run(&format!("gpgsm --batch --import {}", pki.file("ca.crt")));
        let fp = sh(
            &h,
            &format!(
                "openssl x509 -in {} -noout -fingerprint -sha1 | cut -d= -f2",
                pki.file("ca.crt")
            ),
        )
        .stdout;
        fs::write(
            h.join("trustlist.txt"),
            format!("{} S relax\n", String::from_utf8_lossy(&fp).trim()),
        )
        .unwrap();
        g
    }

    fn run(&self, cmd: &str) -> std::process::Output {
        sh(
            self.home.path(),
            &format!("export GNUPGHOME={}; {cmd}", self.home.path().display()),
        )
    }
}

impl Drop for Gpg {
    fn drop(&mut self) {
        let _ = sh_status(
            self.home.path(),
            &format!(
                "GNUPGHOME={} gpgconf --kill gpg-agent",
                self.home.path().display()
            ),
        );
    }
}

#[test]
fn gpgsm_interop_both_directions() {
    if !peer("gpgsm") || !peer("openssl") {
        return;
    }
    let pki = pki();
    let g = Gpg::new();
    let d = g.home.path();
    let msg = write(d, "msg.txt", MSG);
    let pw = "--pinentry-mode loopback --passphrase-fd 3 3<<<test";

    // gpgsm encrypts (BER, indefinite lengths) -> we decrypt, bare and as mail.
    g.run(&format!(
        "gpgsm --batch --cipher-algo AES256 -r bob@example.test --output g-enc.der --encrypt {msg}"
    ));
    let der = fs::read(d.join("g-enc.der")).unwrap();
    assert_eq!(
        ok(&sikkermail(
            &["smime", "decrypt", "--key", &pki.file("bob.pem")],
            &der
        )),
        MSG
    );
    assert!(
        ok(&sikkermail(
            &["smime", "decrypt", "--key", &pki.file("bob.pem")],
            &pkcs7_mime(&der, "enveloped-data")
        ))
        .ends_with(MSG)
    );

    // We encrypt -> gpgsm decrypts.
    let enc = ok(&sikkermail(
        &["smime", "encrypt", "--to", &pki.file("bob.crt")],
        &plain_message(),
    ));
    write(d, "our-enc.der", &cms_of(&enc));
    let out = g.run(&format!("gpgsm --batch {pw} --decrypt our-enc.der"));
    assert_eq!(out.stdout, plain_inner_entity());

    // We sign (detached and opaque) -> gpgsm verifies.
    let signed = ok(&sikkermail(
        &["smime", "sign", "--key", &pki.file("alice.pem")],
        &plain_message(),
    ));
    let (content, sig) = detached_parts(&signed);
    write(d, "content.bin", &content);
    write(d, "our-sig.p7s", &sig);
    let out = g.run("gpgsm --batch --verify our-sig.p7s content.bin 2>&1");
    assert!(String::from_utf8_lossy(&out.stdout).contains("Good signature"));
    let opaque = ok(&sikkermail(
        &["smime", "sign", "--opaque", "--key", &pki.file("alice.pem")],
        &plain_message(),
    ));
    write(d, "our-opaque.p7m", &cms_of(&opaque));
    let out = g.run("gpgsm --batch --output g-opaque.txt --verify our-opaque.p7m 2>&1");
    assert!(String::from_utf8_lossy(&out.stdout).contains("Good signature"));

    // gpgsm signs -> we verify.
    g.run(&format!("gpgsm --batch {pw} -u alice@example.test --include-certs -1 --output g-sig.p7s --detach-sign {msg}"));
    let m = multipart_signed(MSG, &fs::read(d.join("g-sig.p7s")).unwrap());
    ok(&sikkermail(
        &["smime", "verify", "--ca", &pki.file("ca.crt")],
        &m,
    ));
    g.run(&format!(
        "gpgsm --batch {pw} -u alice@example.test --output g-opaque.p7m --sign {msg}"
    ));
    let m = pkcs7_mime(&fs::read(d.join("g-opaque.p7m")).unwrap(), "signed-data");
    let out = d.join("v.eml").display().to_string();
    ok(&sikkermail(
        &[
            "smime",
            "verify",
            "--ca",
            &pki.file("ca.crt"),
            "--out",
            &out,
        ],
        &m,
    ));
    assert!(fs::read(&out).unwrap().ends_with(MSG));
}

// ---------------------------------------------------------------- NSS

#[test]
fn nss_interop_both_directions() {
    if !peer("cmsutil") || !peer("pk12util") || !peer("certutil") {
        return;
    }
    let pki = pki();
    let t = tempfile::tempdir().unwrap();
    let d = t.path();
    let db = format!("sql:{}/nssdb", d.display());
    fs::create_dir(d.join("nssdb")).unwrap();
    sh(d, &format!("certutil -N -d {db} --empty-password"));
    sh(
        d,
        &format!(
            "certutil -A -n testca -t C,C,C -d {db} -i {}",
            pki.file("ca.crt")
        ),
    );
    for u in ["alice", "bob"] {
        // The modern (PBES2/AES, HMAC-SHA256) PKCS#12 flavour.
        sh(
            d,
            &format!(
                "pk12util -i {} -d {db} -W test -K ''",
                pki.file(&format!("{u}.p12"))
            ),
        );
    }
    let msg = write(d, "msg.txt", MSG);

    // NSS encrypts (BER) -> we decrypt.
    sh(
        d,
        &format!("cmsutil -E -r bob@example.test -i {msg} -o n-enc.der -d {db}"),
    );
    let der = fs::read(d.join("n-enc.der")).unwrap();
    assert_eq!(
        ok(&sikkermail(
            &["smime", "decrypt", "--key", &pki.file("bob.pem")],
            &der
        )),
        MSG
    );

    // We encrypt -> NSS decrypts.
    for cipher in ["aes256-cbc", "aes128-cbc"] {
        let enc = ok(&sikkermail(
            &[
                "smime",
                "encrypt",
                "--cipher",
                cipher,
                "--to",
                &pki.file("bob.crt"),
            ],
            &plain_message(),
        ));
        write(d, "our-enc.der", &cms_of(&enc));
        let out = sh(d, &format!("cmsutil -D -i our-enc.der -d {db} -p ''"));
        assert_eq!(out.stdout, plain_inner_entity(), "{cipher}");
    }

    // We sign -> NSS verifies (certUsageEmailSigner).
    let signed = ok(&sikkermail(
        &["smime", "sign", "--key", &pki.file("alice.pem")],
        &plain_message(),
    ));
    let (content, sig) = detached_parts(&signed);
    write(d, "content.bin", &content);
    write(d, "our-sig.p7s", &sig);
    sh(
        d,
        &format!("cmsutil -D -i our-sig.p7s -c content.bin -d {db} -u 4 > /dev/null"),
    );
    // And a tampered content is refused by NSS.
    write(d, "content-bad.bin", &[&content[..], b"x"].concat());
    assert!(
        !sh_status(
            d,
            &format!("cmsutil -D -i our-sig.p7s -c content-bad.bin -d {db} -u 4")
        )
        .status
        .success()
    );
    let opaque = ok(&sikkermail(
        &["smime", "sign", "--opaque", "--key", &pki.file("alice.pem")],
        &plain_message(),
    ));
    write(d, "our-opaque.p7m", &cms_of(&opaque));
    sh(
        d,
        &format!("cmsutil -D -i our-opaque.p7m -d {db} -u 4 > /dev/null"),
    );

    // NSS signs -> we verify.
    sh(
        d,
        &format!("cmsutil -S -N alice -T -H SHA256 -i {msg} -o n-sig.p7s -d {db} -p ''"),
    );
    let m = multipart_signed(MSG, &fs::read(d.join("n-sig.p7s")).unwrap());
    ok(&sikkermail(
        &["smime", "verify", "--ca", &pki.file("ca.crt")],
        &m,
    ));
}

// ---------------------------------------------------------------- pyca

#[test]
fn python_cryptography_interop_both_directions() {
    if !pyca() {
        return;
    }
    let pki = pki();
    let t = tempfile::tempdir().unwrap();
    let d = t.path();
    let enc = ok(&sikkermail(
        &["smime", "encrypt", "--to", &pki.file("bob.crt")],
        &plain_message(),
    ));
    write(d, "our-enc.eml", &enc);
    write(d, "msg.txt", MSG);
    let script = format!(
        r#"
import sys
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.ciphers import algorithms
from cryptography.hazmat.primitives.serialization import pkcs7
ld = lambda p: open(p, "rb").read()
bob = x509.load_pem_x509_certificate(ld("{bob_crt}"))
bob_key = serialization.load_pem_private_key(ld("{bob_key}"), None)
alice = x509.load_pem_x509_certificate(ld("{alice_crt}"))
alice_key = serialization.load_pem_private_key(ld("{alice_key}"), None)
pt = pkcs7.pkcs7_decrypt_smime(ld("our-enc.eml"), bob, bob_key, [])
open("py-dec.bin", "wb").write(pt)
msg = ld("msg.txt")
for alg, name in [(algorithms.AES128, "aes128"), (algorithms.AES256, "aes256")]:
    b = pkcs7.PKCS7EnvelopeBuilder().set_data(msg).add_recipient(bob).set_content_encryption_algorithm(alg)
    open("py-enc-%s.eml" % name, "wb").write(b.encrypt(serialization.Encoding.SMIME, [pkcs7.PKCS7Options.Binary]))
sig = (pkcs7.PKCS7SignatureBuilder().set_data(msg).add_signer(alice, alice_key, hashes.SHA256())
       .sign(serialization.Encoding.SMIME, [pkcs7.PKCS7Options.DetachedSignature, pkcs7.PKCS7Options.Binary]))
open("py-signed.eml", "wb").write(sig)
"#,
        bob_crt = pki.file("bob.crt"),
        bob_key = pki.file("bob.key"),
        alice_crt = pki.file("alice.crt"),
        alice_key = pki.file("alice.key"),
    );
    write(d, "peer.py", script.as_bytes());
    sh(d, "python3 peer.py");
    // pyca decrypted ours (it may translate line ends; compare without them).
    let norm = |b: &[u8]| String::from_utf8_lossy(b).replace("\r\n", "\n");
    assert_eq!(
        norm(&fs::read(d.join("py-dec.bin")).unwrap()),
        norm(&plain_inner_entity())
    );
    // We decrypt pyca's, and verify its signature.
    for name in ["aes128", "aes256"] {
        let m = fs::read(d.join(format!("py-enc-{name}.eml"))).unwrap();
        let plain = ok(&sikkermail(
            &["smime", "decrypt", "--key", &pki.file("bob.pem")],
            &m,
        ));
        assert!(norm(&plain).ends_with(&norm(MSG)), "{name}");
    }
    let signed = fs::read(d.join("py-signed.eml")).unwrap();
    ok(&sikkermail(
        &["smime", "verify", "--ca", &pki.file("ca.crt")],
        &signed,
    ));
}
