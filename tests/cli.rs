//! The `sikkermail smime` command as a user meets it: files and pipes, exit
//! statuses (0 ok, 1 the cryptography said no, 2 usage or unreadable input),
//! one-line errors, PKCS#12 keys, bulk mode, inspect.

#![allow(clippy::unwrap_used)]

mod common;

use std::fs;

use common::*;

fn write_tmp(dir: &std::path::Path, name: &str, data: &[u8]) -> String {
    let p = dir.join(name);
    fs::write(&p, data).unwrap();
    p.display().to_string()
}

fn stderr(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn files_in_and_out_and_round_trip() {
    let pki = pki();
    let t = tempfile::tempdir().unwrap();
    let d = t.path();
    let plain = d.join("plain.eml");
    fs::write(&plain, plain_message()).unwrap();
    let p = |n: &str| d.join(n).display().to_string();
    ok(&sikkermail(
        &[
            "smime",
            "sign",
            "--key",
            &pki.file("alice.pem"),
            "--in",
            &p("plain.eml"),
            "--out",
            &p("signed.eml"),
        ],
        b"",
    ));
    ok(&sikkermail(
        &[
            "smime",
            "encrypt",
            "--to",
            &pki.file("bob.crt"),
            "--in",
            &p("signed.eml"),
            "--out",
            &p("enc.eml"),
        ],
        b"",
    ));
    let dec = sikkermail(
        &[
            "smime",
            "decrypt",
            "--key",
            &pki.file("bob.pem"),
            "--in",
            &p("enc.eml"),
            "--out",
            &p("dec.eml"),
        ],
        b"",
    );
    ok(&dec);
    assert!(stderr(&dec).contains("decrypted: AES-256-CBC"));
    let ver = sikkermail(
        &[
            "smime",
            "verify",
            "--ca",
            &pki.file("ca.crt"),
            "--in",
            &p("dec.eml"),
            "--out",
            &p("content.eml"),
        ],
        b"",
    );
    ok(&ver);
    let report = stderr(&ver);
    assert!(report.contains("signature valid"), "{report}");
    assert!(report.contains("alice@example.test"), "{report}");
    assert!(report.contains("SHA-256"), "{report}");
    let content = fs::read_to_string(d.join("content.eml")).unwrap();
    assert!(content.contains("Subject: Sag 2026-117"));
    assert!(content.contains("K=C3=A6re Retten"));
    // Decrypted mail is readable by its owner only.
    let mode = std::os::unix::fs::PermissionsExt::mode(
        &fs::metadata(d.join("dec.eml")).unwrap().permissions(),
    );
    assert_eq!(mode & 0o777, 0o600);
    // No temporary files are left behind.
    let leftovers: Vec<_> = fs::read_dir(d)
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().contains("tmp"))
        .collect();
    assert!(leftovers.is_empty());
}

#[test]
fn exit_statuses_and_one_line_errors() {
    let pki = pki();
    let enc = ok(&sikkermail(
        &["smime", "encrypt", "--to", &pki.file("bob.crt")],
        &plain_message(),
    ));
    // 1: no matching key, with the recipient named.
    let o = sikkermail(&["smime", "decrypt", "--key", &pki.file("alice.pem")], &enc);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).starts_with("sikkermail: no key in the keyring matches any recipient: issuer=C=DK, O=Interop Test, CN=Interop Test CA, serial=0B"), "{}", stderr(&o));
    assert_eq!(stderr(&o).lines().count(), 1);
    // 2: unreadable input file.
    let o = sikkermail(
        &[
            "smime",
            "decrypt",
            "--key",
            &pki.file("bob.pem"),
            "--in",
            "/nonexistent/x.eml",
        ],
        b"",
    );
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("cannot read /nonexistent/x.eml"));
    // 2: a key file that is not a key.
    let o = sikkermail(&["smime", "decrypt", "--key", &pki.file("ca.crt")], &enc);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        stderr(&o).contains("no readable private key"),
        "{}",
        stderr(&o)
    );
    // 2: not S/MIME at all.
    let o = sikkermail(
        &["smime", "decrypt", "--key", &pki.file("bob.pem")],
        b"Subject: hi\r\n\r\nplain\r\n",
    );
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("not an S/MIME encrypted message (Content-Type: text/plain)"));
    // 2: usage.
    let o = sikkermail(
        &[
            "smime",
            "encrypt",
            "--to",
            &pki.file("bob.crt"),
            "--cipher",
            "rot13",
        ],
        b"x",
    );
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("unknown cipher"));
    let o = sikkermail(&["smime", "frobnicate"], b"");
    assert_eq!(o.status.code(), Some(2));
    // 1: corrupt ciphertext (GCM tag) is a cryptographic failure.
    let gcm = ok(&sikkermail(
        &[
            "smime",
            "encrypt",
            "--cipher",
            "aes256-gcm",
            "--to",
            &pki.file("bob.crt"),
        ],
        &plain_message(),
    ));
    let mut der = cms_of(&gcm);
    let n = der.len();
    der[n - 3] ^= 0x40;
    let o = sikkermail(
        &["smime", "decrypt", "--key", &pki.file("bob.pem")],
        &pkcs7_mime(&der, "authEnveloped-data"),
    );
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(stderr(&o).contains("decryption failed"));
    // Help is a success.
    assert_eq!(
        sikkermail(&["smime", "decrypt", "--help"], b"")
            .status
            .code(),
        Some(0)
    );
}

#[test]
fn pkcs12_keys_with_password_from_environment() {
    let pki = pki();
    let enc = ok(&sikkermail(
        &["smime", "encrypt", "--to", &pki.file("bob.crt")],
        &plain_message(),
    ));
    for p12 in ["bob.p12", "bob-gpgsm.p12"] {
        let o = std::process::Command::new(env!("CARGO_BIN_EXE_sikkermail"))
            .args([
                "smime",
                "decrypt",
                "--key",
                &pki.file(p12),
                "--password-env",
                "P12_PW",
                "--in",
                "/dev/stdin",
            ])
            .env("P12_PW", "test")
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .and_then(|mut c| {
                use std::io::Write;
                c.stdin.take().unwrap().write_all(&enc)?;
                c.wait_with_output()
            })
            .unwrap();
        assert!(ok(&o).ends_with(&plain_inner_entity()), "{p12}");
    }
    // An encrypted PEM key takes the same --password-env.
    let t = tempfile::tempdir().unwrap();
    let key =
        openssl::pkey::PKey::private_key_from_pem(&fs::read(pki.file("bob.key")).unwrap()).unwrap();
    let mut pem = key
        .private_key_to_pem_pkcs8_passphrase(openssl::symm::Cipher::aes_256_cbc(), b"test")
        .unwrap();
    pem.extend(fs::read(pki.file("bob.crt")).unwrap());
    let enc_pem = t.path().join("bob-enc.pem");
    fs::write(&enc_pem, &pem).unwrap();
    let o = std::process::Command::new(env!("CARGO_BIN_EXE_sikkermail"))
        .args([
            "smime",
            "decrypt",
            "--key",
            &enc_pem.display().to_string(),
            "--password-env",
            "P12_PW",
        ])
        .args(["--in", &write_tmp(t.path(), "enc.eml", &enc)])
        .env("P12_PW", "test")
        .output()
        .unwrap();
    assert!(ok(&o).ends_with(&plain_inner_entity()));
    let o = sikkermail(
        &["smime", "decrypt", "--key", &enc_pem.display().to_string()],
        &enc,
    );
    assert_eq!(o.status.code(), Some(2));
    assert!(
        stderr(&o).contains("encrypted without --password-env"),
        "{}",
        stderr(&o)
    );
    // Wrong password: a clear error, exit 2.
    let o = std::process::Command::new(env!("CARGO_BIN_EXE_sikkermail"))
        .args([
            "smime",
            "decrypt",
            "--key",
            &pki.file("bob.p12"),
            "--password-env",
            "P12_PW",
        ])
        .env("P12_PW", "wrong")
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("wrong password"), "{}", stderr(&o));
    // Unset variable.
    let o = sikkermail(
        &[
            "smime",
            "decrypt",
            "--key",
            &pki.file("bob.p12"),
            "--password-env",
            "SIKKERMAIL_TEST_UNSET_VAR",
        ],
        b"",
    );
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("SIKKERMAIL_TEST_UNSET_VAR is not set"));
}

#[test]
fn bulk_decrypt_never_stops_at_a_bad_file() {
    let pki = pki();
    let t = tempfile::tempdir().unwrap();
    let (inp, out) = (t.path().join("in"), t.path().join("out"));
    fs::create_dir(&inp).unwrap();
    let enc_bob = ok(&sikkermail(
        &["smime", "encrypt", "--to", &pki.file("bob.crt")],
        &plain_message(),
    ));
    let enc_alice = ok(&sikkermail(
        &["smime", "encrypt", "--to", &pki.file("alice.crt")],
        &plain_message(),
    ));
    for i in 0..24 {
        fs::write(inp.join(format!("m{i:02}.eml")), &enc_bob).unwrap();
    }
    fs::write(inp.join("zz-garbage.eml"), b"\x00\x01 not mail").unwrap();
    fs::write(inp.join("zz-other-recipient.eml"), &enc_alice).unwrap();
    let mut truncated = enc_bob.clone();
    truncated.truncate(enc_bob.len() / 2);
    fs::write(inp.join("zz-truncated.eml"), &truncated).unwrap();
    let o = sikkermail(
        &[
            "smime",
            "decrypt",
            "--key",
            &pki.file("bob.pem"),
            "--in-dir",
            &inp.display().to_string(),
            "--out-dir",
            &out.display().to_string(),
        ],
        b"",
    );
    assert_eq!(o.status.code(), Some(1));
    let err = stderr(&o);
    assert!(err.contains("decrypted 24 of 27 files"), "{err}");
    assert!(err.contains("3 failed"), "{err}");
    assert!(
        err.contains("zz-garbage.eml: not an S/MIME encrypted message"),
        "{err}"
    );
    assert!(
        err.contains("zz-other-recipient.eml: no key in the keyring matches"),
        "{err}"
    );
    assert!(err.contains("zz-truncated.eml:"), "{err}");
    let outs: Vec<_> = fs::read_dir(&out).unwrap().collect();
    assert_eq!(outs.len(), 24);
    for i in 0..24 {
        assert!(
            fs::read(out.join(format!("m{i:02}.eml")))
                .unwrap()
                .ends_with(&plain_inner_entity())
        );
    }
    // The same directory for input and output is refused: originals stay.
    let same = inp.display().to_string();
    let o = sikkermail(
        &[
            "smime",
            "decrypt",
            "--key",
            &pki.file("bob.pem"),
            "--in-dir",
            &same,
            "--out-dir",
            &same,
        ],
        b"",
    );
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("must not be the same directory"));
    assert_eq!(fs::read(inp.join("m00.eml")).unwrap(), enc_bob);
    // A bad directory is a usage error.
    let o = sikkermail(
        &[
            "smime",
            "decrypt",
            "--key",
            &pki.file("bob.pem"),
            "--in-dir",
            "/nonexistent",
            "--out-dir",
            "/tmp/x",
        ],
        b"",
    );
    assert_eq!(o.status.code(), Some(2));
}

#[test]
fn inspect_prints_layers_recipients_and_signers() {
    let pki = pki();
    let signed = ok(&sikkermail(
        &["smime", "sign", "--key", &pki.file("alice.pem")],
        &plain_message(),
    ));
    let enc = ok(&sikkermail(
        &[
            "smime",
            "encrypt",
            "--oaep",
            "--cipher",
            "aes128-gcm",
            "--to",
            &pki.file("bob.crt"),
            "--to",
            &pki.file("alice.crt"),
        ],
        &signed,
    ));
    let text = String::from_utf8(ok(&sikkermail(&["smime", "inspect"], &enc))).unwrap();
    assert!(
        text.contains("encrypted (AuthEnvelopedData), content AES-128-GCM, 2 recipient(s)"),
        "{text}"
    );
    assert!(
        text.contains(
            "recipient ktri RSAES-OAEP: issuer=C=DK, O=Interop Test, CN=Interop Test CA, serial=0B"
        ),
        "{text}"
    );
    let text = String::from_utf8(ok(&sikkermail(&["smime", "inspect"], &signed))).unwrap();
    assert!(
        text.contains("signed (detached multipart/signed), 1 signer(s), 2 certificate(s)"),
        "{text}"
    );
    assert!(text.contains("signer SHA-256 rsaEncryption: issuer=C=DK, O=Interop Test, CN=Interop Test CA, serial=0A"), "{text}");
    assert!(text.contains("signing time 20"), "{text}");
    assert!(text.contains("content text/plain"), "{text}");
}

#[test]
fn verify_reports_expired_and_revoked_signers() {
    let pki = pki();
    let t = tempfile::tempdir().unwrap();
    // Signed with the expired legacy key: the signature is intact but the
    // certificate has expired.
    let signed = ok(&sikkermail(
        &["smime", "sign", "--key", &pki.file("bob-legacy.pem")],
        &plain_message(),
    ));
    let o = sikkermail(&["smime", "verify", "--ca", &pki.file("ca.crt")], &signed);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).contains("certificate has expired"),
        "{}",
        stderr(&o)
    );
    // Revoked: a CRL from the CA listing alice's serial.
    let d = t.path();
    fs::write(d.join("index.txt"), "").unwrap();
    fs::write(d.join("crlnumber"), "01\n").unwrap();
    fs::write(
        d.join("ca.cnf"),
        format!(
            "[ca]\ndefault_ca=x\n[x]\ndatabase={0}/index.txt\ncrlnumber={0}/crlnumber\ndefault_md=sha256\ndefault_crl_days=30\n\
             certificate={1}\nprivate_key={2}\n",
            d.display(),
            pki.file("ca.crt"),
            pki.file("ca.key")
        ),
    )
    .unwrap();
    if !peer("openssl") {
        return;
    }
    sh(
        d,
        &format!(
            "openssl ca -config ca.cnf -revoke {} -crl_reason keyCompromise 2>/dev/null",
            pki.file("alice.crt")
        ),
    );
    sh(
        d,
        "openssl ca -config ca.cnf -gencrl -out ca.crl 2>/dev/null",
    );
    let signed = ok(&sikkermail(
        &["smime", "sign", "--key", &pki.file("alice.pem")],
        &plain_message(),
    ));
    let crl = d.join("ca.crl").display().to_string();
    let o = sikkermail(
        &[
            "smime",
            "verify",
            "--ca",
            &pki.file("ca.crt"),
            "--crl",
            &crl,
        ],
        &signed,
    );
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("certificate revoked"), "{}", stderr(&o));
    // Bob is not revoked: valid with the same CRL.
    let signed = ok(&sikkermail(
        &["smime", "sign", "--key", &pki.file("bob.pem")],
        &plain_message(),
    ));
    ok(&sikkermail(
        &[
            "smime",
            "verify",
            "--ca",
            &pki.file("ca.crt"),
            "--crl",
            &crl,
        ],
        &signed,
    ));
}
