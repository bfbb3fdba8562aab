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
        stderr(&o).contains("encrypted and no password was given (--password-env VAR not given)"),
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

/// Issue 11.1: signed mail advertises only what we want to receive,
/// strongest first (no RC2, no DES), and the verify report lists it.
#[test]
fn signatures_advertise_only_strong_capabilities() {
    let pki = pki();
    let key = pki.file("alice.pem");
    for extra in [&[][..], &["--opaque"][..], &["--pss"][..]] {
        let args = [&["smime", "sign", "--key", &key][..], extra].concat();
        let signed = ok(&sikkermail(&args, &plain_message()));
        let o = sikkermail(&["smime", "verify", "--ca", &pki.file("ca.crt")], &signed);
        ok(&o);
        let err = stderr(&o);
        let caps: Vec<&str> = err
            .lines()
            .filter_map(|l| l.trim().strip_prefix("capabilities: "))
            .collect();
        assert_eq!(
            caps,
            ["AES-256-GCM, AES-128-GCM, AES-256-CBC, AES-192-CBC, AES-128-CBC, RSAES-OAEP"],
            "{extra:?}: {err}"
        );
    }
}

/// An encrypted message with an outer (opaque) signature by alice, to bob.
fn signed_then_encrypted_outer() -> Vec<u8> {
    let pki = pki();
    let enc = ok(&sikkermail(
        &["smime", "encrypt", "--to", &pki.file("bob.crt")],
        &plain_message(),
    ));
    ok(&sikkermail(
        &["smime", "sign", "--opaque", "--key", &pki.file("alice.pem")],
        &enc,
    ))
}

/// Issue 11.2: decrypt reports an outer signature as not checked without
/// --ca (naming the signer), and checks it with --ca, --cert and --crl.
#[test]
fn decrypt_reports_outer_signature_with_and_without_ca() {
    let pki = pki();
    let msg = signed_then_encrypted_outer();
    let bob = pki.file("bob.pem");
    // Without --ca: not checked, signer named, decrypted all the same.
    let o = sikkermail(&["smime", "decrypt", "--key", &bob], &msg);
    let out = ok(&o);
    assert!(out.ends_with(&plain_inner_entity()));
    let err = stderr(&o);
    assert!(err.contains("signature not checked (no --ca"), "{err}");
    assert!(!err.contains("NOT valid"), "{err}");
    assert!(
        err.contains("signer: C=DK, O=Interop Test, emailAddress=alice@example.test, CN=alice"),
        "{err}"
    );
    assert!(err.contains("decrypted: AES-256-CBC"), "{err}");
    // With the right --ca: valid, signer named.
    let o = sikkermail(
        &[
            "smime",
            "decrypt",
            "--key",
            &bob,
            "--ca",
            &pki.file("ca.crt"),
        ],
        &msg,
    );
    assert!(ok(&o).ends_with(&plain_inner_entity()));
    let err = stderr(&o);
    assert!(err.contains("signature valid (opaque)"), "{err}");
    assert!(err.contains("alice@example.test"), "{err}");
    // With a --ca that did not issue alice's certificate: NOT valid, with
    // the reason; the message is still decrypted.
    let o = sikkermail(
        &[
            "smime",
            "decrypt",
            "--key",
            &bob,
            "--ca",
            &pki.file("bob.crt"),
        ],
        &msg,
    );
    assert!(ok(&o).ends_with(&plain_inner_entity()));
    let err = stderr(&o);
    assert!(
        err.contains("signature NOT valid: certificate of C=DK, O=Interop Test, emailAddress=alice@example.test, CN=alice: self-signed certificate in certificate chain"),
        "{err}"
    );
    assert!(err.contains("  signer: "), "{err}");
    // --cert supplies an intermediate: accepted (and harmless here).
    let o = sikkermail(
        &[
            "smime",
            "decrypt",
            "--key",
            &bob,
            "--ca",
            &pki.file("ca.crt"),
            "--cert",
            &pki.file("carol.crt"),
        ],
        &msg,
    );
    assert!(stderr(&o).contains("signature valid"), "{}", stderr(&o));
    // --crl without --ca is a usage error.
    let o = sikkermail(
        &[
            "smime",
            "decrypt",
            "--key",
            &bob,
            "--crl",
            &pki.file("ca.crt"),
        ],
        &msg,
    );
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    // A CRL revoking alice: NOT valid, revoked.
    if !peer("openssl") {
        return;
    }
    let t = tempfile::tempdir().unwrap();
    let crl = revoke(t.path(), &pki.file("alice.crt"));
    let o = sikkermail(
        &[
            "smime",
            "decrypt",
            "--key",
            &bob,
            "--ca",
            &pki.file("ca.crt"),
            "--crl",
            &crl,
        ],
        &msg,
    );
    assert!(ok(&o).ends_with(&plain_inner_entity()));
    let err = stderr(&o);
    assert!(
        err.contains("signature NOT valid") && err.contains("certificate revoked"),
        "{err}"
    );
}

/// A CRL of the test CA revoking `cert` (needs the openssl CLI).
fn revoke(d: &std::path::Path, cert: &str) -> String {
    let pki = pki();
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
    sh(
        d,
        &format!("openssl ca -config ca.cnf -revoke {cert} -crl_reason keyCompromise 2>/dev/null"),
    );
    sh(
        d,
        "openssl ca -config ca.cnf -gencrl -out ca.crl 2>/dev/null",
    );
    d.join("ca.crl").display().to_string()
}

/// An encrypted PEM key for bob (password `test`) with its certificate.
fn encrypted_bob_pem(d: &std::path::Path) -> String {
    let pki = pki();
    let key =
        openssl::pkey::PKey::private_key_from_pem(&fs::read(pki.file("bob.key")).unwrap()).unwrap();
    let mut pem = key
        .private_key_to_pem_pkcs8_passphrase(openssl::symm::Cipher::aes_256_cbc(), b"test")
        .unwrap();
    pem.extend(fs::read(pki.file("bob.crt")).unwrap());
    write_tmp(d, "bob-enc.pem", &pem)
}

/// Issue 11.3: a key that needs a password when --password-env is not
/// given fails at once, naming --password-env; OpenSSL never prompts, not
/// even when a terminal is there to prompt on.
#[test]
fn missing_password_fails_at_once_naming_password_env() {
    let pki = pki();
    let t = tempfile::tempdir().unwrap();
    let enc = ok(&sikkermail(
        &["smime", "encrypt", "--to", &pki.file("bob.crt")],
        &plain_message(),
    ));
    let msg = write_tmp(t.path(), "enc.eml", &enc);
    let pem = encrypted_bob_pem(t.path());
    let bin = env!("CARGO_BIN_EXE_sikkermail");
    for key in [&pem, &pki.file("bob.p12")] {
        for cmd in [
            vec!["smime", "decrypt", "--key", key, "--in", &msg],
            vec!["smime", "sign", "--key", key, "--in", &msg],
        ] {
            // Standard input closed, no terminal.
            let o = run_with_timeout(std::process::Command::new(bin).args(&cmd), 30);
            assert_eq!(o.status.code(), Some(2), "{cmd:?}: {}", stderr(&o));
            let err = stderr(&o);
            assert!(err.contains("--password-env VAR not given"), "{err}");
            assert!(!err.contains("mac verify failure"), "{err}");
            assert_eq!(err.lines().count(), 1, "{err}");
        }
    }
    // With a terminal (a pseudo-terminal from `script`): still no prompt.
    if !peer("script") {
        return;
    }
    let line = format!("{bin} smime decrypt --key {pem} --in {msg}; echo EXIT=$?");
    let o = run_with_timeout(
        std::process::Command::new("script")
            .args(["-qec", &line, "/dev/null"])
            .env("TERM", "dumb"),
        30,
    );
    let all = String::from_utf8_lossy(&o.stdout);
    assert!(all.contains("--password-env VAR not given"), "{all}");
    assert!(all.contains("EXIT=2"), "{all}");
    assert!(!all.contains("pass phrase"), "prompted: {all}");
}

/// Issue 11.4: every smime command accepts --data-dir (and verify uses the
/// store's CA as trust anchors besides --ca).
#[test]
fn every_smime_command_accepts_data_dir() {
    let pki = pki();
    let t = tempfile::tempdir().unwrap();
    let data = t.path().join("data").display().to_string();
    ok(&sikkermail(
        &[
            "init",
            "--data-dir",
            &data,
            "--org-name",
            "Test",
            "--cvr",
            "12345678",
        ],
        b"",
    ));
    let dd = ["--data-dir", &data];
    let enc = ok(&sikkermail(
        &[&["smime", "encrypt", "--to", &pki.file("bob.crt")][..], &dd].concat(),
        &plain_message(),
    ));
    let signed = ok(&sikkermail(
        &[&["smime", "sign", "--key", &pki.file("alice.pem")][..], &dd].concat(),
        &plain_message(),
    ));
    let text = ok(&sikkermail(
        &[&["smime", "inspect"][..], &dd].concat(),
        &enc,
    ));
    assert!(String::from_utf8_lossy(&text).contains("EnvelopedData"));
    let o = sikkermail(
        &[&["smime", "verify", "--ca", &pki.file("ca.crt")][..], &dd].concat(),
        &signed,
    );
    ok(&o);
    assert!(stderr(&o).contains("signature valid"), "{}", stderr(&o));
    // The store's CA alone does not vouch for alice: NOT valid, but the
    // command ran with the store as its trust anchors (no --ca needed).
    let o = sikkermail(&[&["smime", "verify"][..], &dd].concat(), &signed);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("signature NOT valid: certificate of C=DK, O=Interop Test, emailAddress=alice@example.test, CN=alice: self-signed certificate in certificate chain"),
        "{}",
        stderr(&o)
    );
    // Neither --ca nor --data-dir: a usage error naming both.
    let o = sikkermail(&["smime", "verify"], &signed);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        stderr(&o).contains("--ca") && stderr(&o).contains("--data-dir"),
        "{}",
        stderr(&o)
    );
    for cmd in ["encrypt", "sign", "verify", "inspect", "decrypt"] {
        let help = ok(&sikkermail(&["smime", cmd, "--help"], b""));
        assert!(
            String::from_utf8_lossy(&help).contains("--data-dir"),
            "{cmd}"
        );
    }
}

/// Issue 11.5: bulk mode follows symbolic links to files and lists what it
/// skips, with the reason.
#[test]
fn bulk_decrypt_follows_links_and_lists_skipped() {
    let pki = pki();
    let t = tempfile::tempdir().unwrap();
    let (inp, out, elsewhere) = (
        t.path().join("in"),
        t.path().join("out"),
        t.path().join("elsewhere"),
    );
    fs::create_dir(&inp).unwrap();
    fs::create_dir(&elsewhere).unwrap();
    let enc = ok(&sikkermail(
        &["smime", "encrypt", "--to", &pki.file("bob.crt")],
        &plain_message(),
    ));
    fs::write(inp.join("a.eml"), &enc).unwrap();
    fs::write(elsewhere.join("target.eml"), &enc).unwrap();
    std::os::unix::fs::symlink(elsewhere.join("target.eml"), inp.join("link.eml")).unwrap();
    std::os::unix::fs::symlink(t.path().join("nowhere"), inp.join("broken.eml")).unwrap();
    std::os::unix::fs::symlink(&elsewhere, inp.join("dirlink")).unwrap();
    fs::create_dir(inp.join("sub")).unwrap();
    sh(&inp, "mkfifo fifo");
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
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(0), "{err}");
    assert!(err.contains("decrypted 2 of 2 files"), "{err}");
    assert!(err.contains("0 failed; 4 skipped"), "{err}");
    for (name, why) in [
        ("broken.eml", "broken symbolic link"),
        ("dirlink", "symbolic link to a directory"),
        ("fifo", "FIFO"),
        ("sub", "directory"),
    ] {
        let line = format!("SKIPPED {}: {why}", inp.join(name).display());
        assert!(err.contains(&line), "{line}\n{err}");
    }
    for name in ["a.eml", "link.eml"] {
        let p = out.join(name);
        assert!(fs::symlink_metadata(&p).unwrap().is_file(), "{name}");
        assert!(fs::read(&p).unwrap().ends_with(&plain_inner_entity()));
    }
    // Again into the same directory: existing outputs are replaced whole
    // (the path for a name that exists), private, no temporary left.
    fs::write(out.join("a.eml"), b"stale").unwrap();
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
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let mut names: Vec<String> = fs::read_dir(&out)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(names, ["a.eml", "link.eml"]);
    for name in names {
        let p = out.join(name);
        assert!(fs::read(&p).unwrap().ends_with(&plain_inner_entity()));
        let mode =
            std::os::unix::fs::PermissionsExt::mode(&fs::metadata(&p).unwrap().permissions());
        assert_eq!(mode & 0o777, 0o600);
    }
}

/// Issue 11.6: --out to a special file (a FIFO, a symbolic link to a
/// character device, /dev/null) writes in place and never replaces it.
#[test]
fn out_to_special_files_writes_in_place() {
    use std::os::unix::fs::FileTypeExt;
    let pki = pki();
    let t = tempfile::tempdir().unwrap();
    let d = t.path();
    let enc = ok(&sikkermail(
        &["smime", "encrypt", "--to", &pki.file("bob.crt")],
        &plain_message(),
    ));
    let msg = write_tmp(d, "enc.eml", &enc);
    let plain = write_tmp(d, "plain.eml", &plain_message());
    sh(d, "mkfifo fifo");
    let fifo = d.join("fifo");
    // decrypt (write_output) and encrypt (streamed) into a FIFO read by a thread.
    for (args, expect_end) in [
        (
            vec![
                "smime",
                "decrypt",
                "--key",
                &pki.file("bob.pem"),
                "--in",
                &msg,
            ],
            Some(plain_inner_entity()),
        ),
        (
            vec![
                "smime",
                "encrypt",
                "--to",
                &pki.file("bob.crt"),
                "--in",
                &plain,
            ],
            None,
        ),
    ] {
        let (tx, rx) = std::sync::mpsc::channel();
        let f = fifo.clone();
        std::thread::spawn(move || {
            let _ = tx.send(fs::read(f));
        });
        let fifo_s = fifo.display().to_string();
        let o = run_with_timeout(
            std::process::Command::new(env!("CARGO_BIN_EXE_sikkermail"))
                .args(&args)
                .args(["--out", &fifo_s]),
            30,
        );
        ok(&o);
        assert!(
            fs::symlink_metadata(&fifo).unwrap().file_type().is_fifo(),
            "the FIFO was replaced"
        );
        let got = rx
            .recv_timeout(std::time::Duration::from_secs(10))
            .expect("the reader got nothing")
            .unwrap();
        match expect_end {
            Some(e) => assert!(got.ends_with(&e)),
            None => assert!(String::from_utf8_lossy(&got).contains("application/pkcs7-mime")),
        }
    }
    // A symbolic link to a character device, and /dev/null itself.
    let link = d.join("null-link");
    std::os::unix::fs::symlink("/dev/null", &link).unwrap();
    for out in [link.display().to_string(), "/dev/null".to_string()] {
        for args in [
            vec![
                "smime",
                "decrypt",
                "--key",
                &pki.file("bob.pem"),
                "--in",
                &msg,
            ],
            vec![
                "smime",
                "encrypt",
                "--to",
                &pki.file("bob.crt"),
                "--in",
                &plain,
            ],
        ] {
            let o = run_with_timeout(
                std::process::Command::new(env!("CARGO_BIN_EXE_sikkermail"))
                    .args(&args)
                    .args(["--out", &out]),
                30,
            );
            ok(&o);
        }
    }
    assert!(
        fs::symlink_metadata(&link)
            .unwrap()
            .file_type()
            .is_symlink()
    );
    assert!(
        fs::metadata("/dev/null")
            .unwrap()
            .file_type()
            .is_char_device()
    );
    assert!(!std::path::Path::new("/dev/.null.sikkermail-tmp").exists());
    // No temporary files left beside the outputs.
    let left: Vec<_> = fs::read_dir(d)
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().contains("sikkermail-tmp"))
        .collect();
    assert!(left.is_empty(), "{left:?}");
}

/// NIST PKITS, from the PyPI package `cryptography_vectors` (installed by
/// `.ci/run`), or `PKITS_DIR`.
fn pkits() -> Option<std::path::PathBuf> {
    let dir = std::env::var_os("PKITS_DIR")
        .map(std::path::PathBuf::from)
        .or_else(|| {
            let o = std::process::Command::new("python3")
                .args([
                    "-c",
                    "import cryptography_vectors, os; print(os.path.dirname(cryptography_vectors.__file__))",
                ])
                .output()
                .ok()
                .filter(|o| o.status.success())?;
            Some(std::path::Path::new(String::from_utf8_lossy(&o.stdout).trim()).join("x509/PKITS_data"))
        })
        .filter(|d| d.join("smime").is_dir());
    if dir.is_none() {
        assert!(
            !peers_required(),
            "PKITS data missing (pip install cryptography_vectors) and SIKKERMAIL_REQUIRE_PEERS=1"
        );
        eprintln!("!!! SKIPPING: PKITS data missing (pip install cryptography_vectors)");
    }
    dir
}

/// Issue 9: `smime verify` names the policies a chain asserts, takes the
/// RFC 5280 inputs, requires revocation when told, and applies a policy
/// file's trust rules for the sender; `policy explain` shows those rules.
#[test]
fn verify_policies_revocation_and_trust_rules() {
    let Some(p) = pkits() else { return };
    let t = tempfile::tempdir().unwrap();
    let d = t.path();
    let ta = fs::read(p.join("certs/TrustAnchorRootCertificate.crt")).unwrap();
    let ta = openssl::x509::X509::from_der(&ta).unwrap();
    let ca = write_tmp(d, "ta.pem", &ta.to_pem().unwrap());
    const NIST1: &str = "2.16.840.1.101.3.2.1.48.1";
    const NIST2: &str = "2.16.840.1.101.3.2.1.48.2";
    // `smime verify --ca TA EXTRA... < Signed<test>.eml`: (exit code, stderr).
    let verify = |extra: &[&str], test: &str| {
        let mut args = vec!["smime", "verify", "--ca", &ca];
        args.extend_from_slice(extra);
        let o = sikkermail(
            &args,
            &fs::read(p.join(format!("smime/Signed{test}.eml"))).unwrap(),
        );
        (o.status.code(), stderr(&o))
    };
    let accepted = |extra: &[&str], test: &str| {
        let (code, err) = verify(extra, test);
        assert_eq!(code, Some(0), "{test} {extra:?}: {err}");
        err
    };
    let refused = |extra: &[&str], test: &str, why: &str| {
        let (code, err) = verify(extra, test);
        assert_eq!(code, Some(1), "{test} {extra:?}: {err}");
        assert!(
            err.contains(why),
            "{test} {extra:?}: expected {why:?} in {err}"
        );
    };

    // The policies of a valid chain are in the report.
    let err = accepted(&[], "AllCertificatesSamePoliciesTest10");
    assert!(
        err.contains(&format!("  policies: {NIST1}, {NIST2}")),
        "{err}"
    );
    // An initial policy set the chain does not meet, explicitly required.
    refused(
        &["--policy", NIST2, "--explicit-policy"],
        "AllCertificatesSamePolicyTest1",
        "no acceptable certificate policy",
    );
    // A requireExplicitPolicy in the chain is enforced with no option.
    refused(
        &[],
        "InvalidRequireExplicitPolicyTest3",
        "no acceptable certificate policy",
    );
    // Revocation: carried CRLs are used when required; none at all fails.
    refused(
        &["--require-revocation"],
        "InvalidRevokedEETest3",
        "certificate revoked",
    );
    refused(
        &["--require-revocation"],
        "MissingCRLTest1",
        "revocation unavailable",
    );
    accepted(&[], "MissingCRLTest1");
    // A bad OID is a usage error.
    assert_eq!(
        verify(&["--policy", "nist1"], "ValidSignaturesTest1").0,
        Some(2)
    );
    // The validation time: before the PKITS certificates (2010) they are
    // not yet valid; any moment in their life is fine; garbage is a usage
    // error.
    refused(
        &["--at", "2009-06-01T00:00:00Z"],
        "ValidSignaturesTest1",
        "not yet valid",
    );
    let err = accepted(&["--at", "@1700000000"], "ValidSignaturesTest1");
    assert!(err.contains("checked at 1700000000"), "{err}");
    assert_eq!(
        verify(&["--at", "yesterday"], "ValidSignaturesTest1").0,
        Some(2)
    );

    // Trust rules for the sender (From: sender@testcertificates.gov).
    let n = std::cell::Cell::new(0);
    let rules = |body: String| {
        n.set(n.get() + 1);
        write_tmp(d, &format!("rules{}.toml", n.get()), body.as_bytes())
    };
    let keep = rules(format!(
        "[domain.\"testcertificates.gov\"]\nsigner_policies = [\"{NIST1}\"]\n"
    ));
    let err = accepted(&["--rules", &keep], "AllCertificatesSamePolicyTest1");
    assert!(
        err.contains("trust rules for \"sender@testcertificates.gov\""),
        "{err}"
    );
    refused(
        &["--rules", &keep],
        "AllCertificatesNoPoliciesTest2",
        "signature valid but untrusted ([domain.\"testcertificates.gov\"] signer_policies",
    );
    let fp: String = ta
        .digest(openssl::hash::MessageDigest::sha256())
        .unwrap()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let anchored = rules(format!("[default]\nsigner_anchors = [\"sha256:{fp}\"]\n"));
    accepted(&["--rules", &anchored], "ValidSignaturesTest1");
    let elsewhere = rules(format!(
        "[default]\nsigner_anchors = [\"sha256:{}\"]\n",
        "0".repeat(64)
    ));
    refused(
        &["--rules", &elsewhere],
        "ValidSignaturesTest1",
        "another anchor",
    );
    let required = rules("[domain.\"testcertificates.gov\"]\nrevocation = \"require\"\n".into());
    refused(
        &["--rules", &required],
        "MissingCRLTest1",
        "revocation unavailable",
    );

    // `policy explain` shows the sender's rules and where they come from.
    let o = sikkermail(
        &[
            "policy",
            "explain",
            "--policy",
            &keep,
            "--from",
            "sender@testcertificates.gov",
            "--to",
            "post@advokat.test",
        ],
        b"",
    );
    let out = String::from_utf8_lossy(&o.stdout).into_owned() + &stderr(&o);
    assert!(o.status.success(), "{out}");
    assert!(
        out.contains(&format!(
            "signer_policies = [\"{NIST1}\"]  <- [domain.\"testcertificates.gov\"] (line 2)"
        )),
        "{out}"
    );
}

/// Issue 12 §1: a closed or full standard output or error is an ordinary
/// failure with the documented status (2), never a panic (101).
#[test]
fn full_or_closed_output_is_not_a_panic() {
    use std::process::{Command, Stdio};
    let pki = pki();
    let enc = ok(&sikkermail(
        &["smime", "encrypt", "--to", &pki.file("bob.crt")],
        &plain_message(),
    ));
    let t = tempfile::tempdir().unwrap();
    let input = write_tmp(t.path(), "enc.eml", &enc);
    let full = || {
        Stdio::from(
            fs::OpenOptions::new()
                .write(true)
                .open("/dev/full")
                .unwrap(),
        )
    };
    let run = |out: Stdio, err: Stdio, args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_sikkermail"))
            .args(args)
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .status()
            .unwrap()
            .code()
    };
    let decrypt = [
        "smime",
        "decrypt",
        "--key",
        &pki.file("bob.pem"),
        "--in",
        &input,
    ];
    // Output to a full device: exit 2 (it could not be written), report lost.
    assert_eq!(run(full(), full(), &decrypt), Some(2));
    // Only standard error full: the decryption itself succeeds.
    assert_eq!(run(Stdio::null(), full(), &decrypt), Some(0));
    // A usage error with standard error full: still 2.
    assert_eq!(
        run(
            Stdio::null(),
            full(),
            &["smime", "decrypt", "--key", "/nonexistent"]
        ),
        Some(2)
    );
    // A reader that went away: exit 2, not 101.
    let mut child = Command::new(env!("CARGO_BIN_EXE_sikkermail"))
        .args(decrypt)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    drop(child.stdout.take());
    let code = child.wait().unwrap().code();
    assert!(matches!(code, Some(0) | Some(2)), "{code:?}");
    assert_ne!(code, Some(101));
}
