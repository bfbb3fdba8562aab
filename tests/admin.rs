//! The certificate-management commands end to end: `init`, `ca`, `cert`,
//! `key`, `recipient` and `smime decrypt --data-dir`, on SQLite and (when
//! `TEST_DATABASE_URL` is set) on PostgreSQL, checked by OpenSSL, NSS and
//! gpgsm.

#![allow(clippy::unwrap_used)]

mod common;
mod site;

use std::fs;

use common::{gpg_agent_up, gpgsm_import_p12, peer, sh, sh_status};
use site::{Site, first_field, make_oces2_p12, sites};

#[test]
fn issue_verify_export_revoke_renew_on_every_backend() {
    if !peer("openssl") {
        return;
    }
    for site in sites() {
        let init = site.ok(&[
            "init",
            "--org-name",
            "Advokatfirma Jørgensen",
            "--cvr",
            "12 34 56 78",
            "--policy-oid",
            "1.3.6.1.4.1.99999.7",
            "--crl-url",
            "http://ca.example/issuing.crl",
        ]);
        assert!(init.contains("initialised"), "{init}");
        assert!(site.dir.join("master.key").exists() || site.db_url.is_some());
        let mode = fs::metadata(site.dir.join("master.key")).unwrap();
        assert_eq!(
            std::os::unix::fs::PermissionsExt::mode(&mode.permissions()) & 0o777,
            0o600
        );
        // Again: refused, nothing changed.
        site.fails(
            &["init", "--org-name", "X", "--cvr", "87654321"],
            2,
            "already initialised",
        );

        let org = first_field(&site.ok(&[
            "cert",
            "issue",
            "--kind",
            "organisation",
            "--name",
            "Fælles postkasse",
            "--email",
            "post@joergensen.dk",
            "--out-p12",
            &site.path("org.p12"),
            "--password-env",
            "P12_PW",
        ]));
        let user = first_field(&site.ok(&[
            "cert",
            "issue",
            "--kind",
            "user",
            "--name",
            "Søren Ørsted",
            "--email",
            "soeren@joergensen.dk",
            "--out-p12",
            &site.path("user.p12"),
            "--password-env",
            "P12_PW",
            "--compatible",
        ]));
        let list = site.ok(&["cert", "list"]);
        assert_eq!(list.lines().count(), 4, "{list}");
        assert!(
            list.lines()
                .all(|l| l.split('\t').next().unwrap().parse::<i64>().is_ok()),
            "{list}"
        );

        // OpenSSL verifies the chain and sees the profile.
        let d = site.dir.parent().unwrap().to_path_buf();
        fs::write(d.join("root.pem"), site.pem("1")).unwrap();
        fs::write(d.join("issuing.pem"), site.pem("2")).unwrap();
        fs::write(d.join("org.pem"), site.pem(&org)).unwrap();
        fs::write(d.join("user.pem"), site.pem(&user)).unwrap();
        for leaf in ["org.pem", "user.pem"] {
            let v = sh(
                &d,
                &format!(
                    "openssl verify -x509_strict -CAfile root.pem -untrusted issuing.pem {leaf}"
                ),
            );
            assert!(String::from_utf8_lossy(&v.stdout).contains(": OK"));
        }
        let subj = String::from_utf8(sh(&d, "openssl x509 -in user.pem -noout -subject -nameopt sep_comma_plus,show_type,utf8,-esc_msb").stdout).unwrap();
        assert!(
            subj.starts_with(
                "subject=CN=UTF8STRING:Søren Ørsted,serialNumber=PRINTABLESTRING:UI:DK-E:G:"
            ),
            "{subj}"
        );
        assert!(subj.trim_end().ends_with(",O=UTF8STRING:Advokatfirma Jørgensen,organizationIdentifier=UTF8STRING:NTRDK-12345678,C=PRINTABLESTRING:DK"), "{subj}");
        let text =
            String::from_utf8(sh(&d, "openssl x509 -in org.pem -noout -text").stdout).unwrap();
        for want in [
            "rsassaPss",
            "Public-Key: (3072 bit)",
            "Digital Signature, Key Encipherment",
            "email:post@joergensen.dk",
            "Policy: 1.3.6.1.4.1.99999.7",
            "URI:http://ca.example/issuing.crl",
        ] {
            assert!(text.contains(want), "{want} missing");
        }
        let p12_mode = fs::metadata(d.join("org.p12")).unwrap();
        assert_eq!(
            std::os::unix::fs::PermissionsExt::mode(&p12_mode.permissions()) & 0o777,
            0o600
        );
        // The PKCS#12 files open, in OpenSSL, NSS (modern) and gpgsm (compatible).
        sh(
            &d,
            "openssl pkcs12 -in org.p12 -passin pass:Hemmelig-42 -noout",
        );
        sh(
            &d,
            "openssl pkcs12 -in user.p12 -passin pass:Hemmelig-42 -noout -legacy || openssl pkcs12 -in user.p12 -passin pass:Hemmelig-42 -noout",
        );
        if peer("pk12util") {
            fs::create_dir_all(d.join("nss")).unwrap();
            sh(
                &d,
                "certutil -N -d sql:nss --empty-password && pk12util -i org.p12 -d sql:nss -W Hemmelig-42 -K ''",
            );
        }
        if peer("gpgsm") {
            fs::create_dir_all(d.join("gnupg")).unwrap();
            fs::write(d.join("gnupg/gpg-agent.conf"), "allow-loopback-pinentry\n").unwrap();
            gpg_agent_up(&d.join("gnupg"));
            let text =
                gpgsm_import_p12(&d.join("gnupg"), &d.join("user.p12"), "Hemmelig-42", &|n| {
                    let again = d.join(format!("user-{n}.p12"));
                    site.ok(&[
                        "cert",
                        "export",
                        &user,
                        "--out-p12",
                        &again.display().to_string(),
                        "--password-env",
                        "P12_PW",
                        "--compatible",
                    ]);
                    again
                });
            let _ = sh_status(&d, "GNUPGHOME=$PWD/gnupg gpgconf --kill gpg-agent");
            assert!(text.contains("secret keys imported: 1"), "gpgsm: {text}");
        }
        // Export again, both flavours.
        site.ok(&[
            "cert",
            "export",
            &org,
            "--out-p12",
            &site.path("again.p12"),
            "--password-env",
            "P12_PW",
            "--compatible",
        ]);
        sh(
            &d,
            "openssl pkcs12 -in again.p12 -passin pass:Hemmelig-42 -noout -legacy || openssl pkcs12 -in again.p12 -passin pass:Hemmelig-42 -noout",
        );

        // No private key in clear in the database.
        let key_der = sh(&d, "openssl pkcs12 -in org.p12 -passin pass:Hemmelig-42 -nocerts -nodes | openssl pkcs8 -topk8 -nocrypt -outform DER").stdout;
        assert!(key_der.len() > 1000);
        let db = site.database_bytes();
        assert!(
            !db.windows(64).any(|w| w == &key_der[key_der.len() - 64..]),
            "private key in clear in the database"
        );
        assert!(!String::from_utf8_lossy(&db).contains("PRIVATE KEY"));

        // Revoke: the CRL says so and OpenSSL refuses the certificate.
        site.ok(&["cert", "revoke", &user, "--reason", "keyCompromise"]);
        site.fails(
            &["cert", "revoke", &user, "--reason", "keyCompromise"],
            2,
            "already revoked",
        );
        site.fails(
            &["cert", "revoke", &org, "--reason", "stolen"],
            2,
            "unknown revocation reason",
        );
        site.ok(&["ca", "crl", "--out", &site.path("ca.crl.pem")]);
        site.ok(&["ca", "crl", "--der", "--out", &site.path("ca.crl.der")]);
        sh(&d, "openssl crl -inform DER -in ca.crl.der -noout");
        let v = sh_status(
            &d,
            "openssl verify -crl_check -CRLfile ca.crl.pem -CAfile root.pem -untrusted issuing.pem user.pem",
        );
        assert!(!v.status.success());
        assert!(
            String::from_utf8_lossy(&v.stdout).contains("certificate revoked")
                || String::from_utf8_lossy(&v.stderr).contains("certificate revoked")
        );
        sh(
            &d,
            "openssl verify -crl_check -CRLfile ca.crl.pem -CAfile root.pem -untrusted issuing.pem org.pem",
        );

        // Renew: new key and serial, same UUID; the old one is superseded.
        let renewed = first_field(&site.ok(&["cert", "renew", &org]));
        let old = site.ok(&["cert", "show", &org]);
        let new = site.ok(&["cert", "show", &renewed]);
        let uuid = |s: &str| {
            s.lines()
                .find(|l| l.starts_with("uuid: "))
                .unwrap()
                .to_string()
        };
        assert_eq!(uuid(&old), uuid(&new));
        assert!(old.contains("status: superseded") && new.contains("status: active"));
        assert_ne!(
            old.lines().find(|l| l.starts_with("serial")),
            new.lines().find(|l| l.starts_with("serial"))
        );
        site.fails(&["cert", "renew", &user], 2, "revoked");
        site.fails(&["cert", "show", "999"], 2, "certificate 999 not found");
        let shown = site.ok(&["ca", "show"]);
        assert!(
            shown.contains("RSA-4096") && shown.contains("RSA-3072") && shown.contains("rsassaPss"),
            "{shown}"
        );
        // Every change is in the audit trail, newest first; no secret in it.
        let audit = site.ok(&["audit"]);
        let actions: Vec<&str> = audit
            .lines()
            .map(|l| l.split('\t').nth(2).unwrap())
            .collect();
        for a in [
            "init",
            "cert.issue",
            "cert.export",
            "cert.revoke",
            "ca.crl",
            "cert.renew",
        ] {
            assert!(actions.contains(&a), "{a} not audited: {audit}");
        }
        assert_eq!(actions[0], "cert.renew");
        assert!(!audit.contains("Hemmelig-42"));
    }
}

#[test]
fn legacy_oces2_key_opens_old_mail_through_the_store() {
    if !peer("openssl") {
        return;
    }
    for site in sites() {
        site.ok(&[
            "init",
            "--org-name",
            "Advokatfirma Jørgensen",
            "--cvr",
            "12345678",
        ]);
        let d = site.dir.parent().unwrap().to_path_buf();
        let (p12, crt) = make_oces2_p12(&d);
        fs::write(
            d.join("old.txt"),
            "Content-Type: text/plain\r\n\r\nDom i sag 2019-44.\r\n",
        )
        .unwrap();
        sh(
            &d,
            &format!(
                "openssl cms -encrypt -aes-256-cbc -in old.txt -out old.eml -subject 'Dom' {crt}"
            ),
        );
        // Before the import: no key.
        let o = site.run(&["smime", "decrypt", "--in", &site.path("old.eml")]);
        assert_eq!(
            o.status.code(),
            Some(1),
            "{}",
            String::from_utf8_lossy(&o.stderr)
        );
        // Wrong password, malformed file: clear errors, nothing stored.
        let bad = site.run_env(
            &["key", "import", &p12, "--password-env", "PW", "--legacy"],
            &[("PW", "forkert")],
        );
        assert_eq!(bad.status.code(), Some(2));
        assert!(
            String::from_utf8_lossy(&bad.stderr).contains("wrong password"),
            "{}",
            String::from_utf8_lossy(&bad.stderr)
        );
        fs::write(d.join("junk.p12"), b"this is not a p12").unwrap();
        site.fails(
            &[
                "key",
                "import",
                &site.path("junk.p12"),
                "--password-env",
                "P12_PW",
            ],
            2,
            "not a PKCS#12",
        );
        let keys_before = site.ok(&["key", "list"]);
        assert_eq!(
            keys_before.lines().count(),
            2,
            "only the CA keys: {keys_before}"
        );
        // Import as legacy.
        let out = site.run_env(
            &[
                "key",
                "import",
                &p12,
                "--password-env",
                "PW",
                "--legacy",
                "--mailbox",
                "post@joergensen.dk",
            ],
            &[("PW", "gammel")],
        );
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let line = String::from_utf8(out.stdout).unwrap();
        assert!(line.contains("OCES2\tlegacy"), "{line}");
        assert!(
            site.ok(&["key", "list"])
                .lines()
                .any(|l| l.contains("legacy") && l.contains("VOCES"))
        );
        // Old mail opens with the store's keys.
        let dec = site.ok(&["smime", "decrypt", "--in", &site.path("old.eml")]);
        assert!(dec.ends_with("Dom i sag 2019-44.\r\n"), "{dec}");

        // A current organisation certificate from MitID Erhverv (here: an
        // OCES3-shaped one from another CA, with OCES3's policy OIDs)
        // imports as OCES3, not legacy.
        sh(
            &d,
            "openssl req -x509 -newkey rsa:3072 -nodes -keyout mitid.key -out mitid.crt -days 1095 -sha256 -utf8 \
            -subj '/CN=Advokatfirma Jørgensen/serialNumber=UI:DK-O:G:a040fe26-ce78-4328-ac0e-29eeb12f46df/O=Advokatfirma Jørgensen/organizationIdentifier=NTRDK-12345678/C=DK' \
            -addext subjectAltName=email:post@joergensen.dk \
            -addext certificatePolicies=0.4.0.2042.1.1,1.2.208.169.1.1.1.3.7 2>/dev/null",
        );
        sh(
            &d,
            "openssl pkcs12 -export -in mitid.crt -inkey mitid.key -passout pass:ny -out mitid.p12",
        );
        let out = site.run_env(
            &[
                "key",
                "import",
                &site.path("mitid.p12"),
                "--password-env",
                "PW",
            ],
            &[("PW", "ny")],
        );
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(String::from_utf8_lossy(&out.stdout).contains("OCES3\timported"));
        let list = site.ok(&["cert", "list"]);
        assert!(
            list.lines()
                .any(|l| l.contains("\torganisation\tactive\tOCES3\t")
                    && l.contains("UI:DK-O:G:a040fe26")),
            "{list}"
        );
        sh(
            &d,
            "openssl cms -encrypt -aes-256-cbc -in old.txt -out new.eml mitid.crt",
        );
        let dec = site.ok(&["smime", "decrypt", "--in", &site.path("new.eml")]);
        assert!(dec.ends_with("Dom i sag 2019-44.\r\n"), "{dec}");
        // Both keys serve at once: the archive and the new mail.
        let dec = site.ok(&["smime", "decrypt", "--in", &site.path("old.eml")]);
        assert!(dec.ends_with("Dom i sag 2019-44.\r\n"), "{dec}");
    }
}

#[test]
fn bad_input_is_refused_and_changes_nothing() {
    let site = Site::new(false).unwrap();
    // Bad CVR at init: nothing is created.
    site.fails(
        &["init", "--org-name", "Advokat", "--cvr", "1234567"],
        2,
        "CVR must be exactly 8 digits",
    );
    site.fails(
        &[
            "init",
            "--org-name",
            "Advokat",
            "--cvr",
            "12345678",
            "--policy-oid",
            "3.1",
        ],
        2,
        "not a valid OID",
    );
    site.fails(
        &[
            "init",
            "--org-name",
            "Advokat",
            "--cvr",
            "12345678",
            "--crl-url",
            "http://x y",
        ],
        2,
        "is not a URL",
    );
    assert!(!site.dir.exists());
    site.fails(&["cert", "list"], 2, "run `sikkermail init");
    site.ok(&["init", "--org-name", "Advokat", "--cvr", "12345678"]);
    let before = site.ok(&["cert", "list"]);
    site.fails(
        &[
            "cert",
            "issue",
            "--kind",
            "user",
            "--name",
            "Jørgen",
            "--email",
            "jørgen@advokat.dk",
        ],
        2,
        "does not accept Æ, Ø or Å",
    );
    site.fails(
        &[
            "cert",
            "issue",
            "--kind",
            "user",
            "--name",
            "Jørgen",
            "--email",
            "not-an-address",
        ],
        2,
        "has no '@'",
    );
    site.fails(
        &[
            "cert",
            "issue",
            "--kind",
            "robot",
            "--name",
            "X",
            "--email",
            "x@advokat.dk",
        ],
        2,
        "organisation or user",
    );
    site.fails(
        &[
            "cert",
            "issue",
            "--kind",
            "user",
            "--name",
            "  ",
            "--email",
            "x@advokat.dk",
        ],
        2,
        "must not be empty",
    );
    site.fails(
        &[
            "cert",
            "issue",
            "--kind",
            "user",
            "--name",
            "X",
            "--email",
            "x@advokat.dk",
            "--out-p12",
            &site.path("x.p12"),
        ],
        2,
        "--password-env",
    );
    assert_eq!(site.ok(&["cert", "list"]), before);
    site.fails(
        &[
            "cert",
            "export",
            "1",
            "--out-p12",
            &site.path("ca.p12"),
            "--password-env",
            "P12_PW",
        ],
        2,
        "CA keys are never exported",
    );
    site.fails(
        &["recipient", "import", &site.path("missing.pem")],
        2,
        "cannot read",
    );
}

#[test]
fn master_key_rotation_keeps_every_key_usable() {
    let site = Site::new(false).unwrap();
    site.ok(&["init", "--org-name", "Advokat", "--cvr", "12345678"]);
    let id = first_field(&site.ok(&[
        "cert",
        "issue",
        "--kind",
        "organisation",
        "--name",
        "Post",
        "--email",
        "post@advokat.dk",
    ]));
    let old_key = fs::read_to_string(site.dir.join("master.key")).unwrap();
    let out = site.ok(&["key", "rotate-master"]);
    assert!(out.contains("re-sealed 3 private keys"), "{out}");
    let new_key = fs::read_to_string(site.dir.join("master.key")).unwrap();
    assert_ne!(old_key, new_key);
    assert!(!site.dir.join("master.key.new").exists());
    // Everything still opens: issuing (CA key) and export (end-entity key).
    site.ok(&[
        "cert",
        "issue",
        "--kind",
        "user",
        "--name",
        "Anne",
        "--email",
        "anne@advokat.dk",
    ]);
    site.ok(&[
        "cert",
        "export",
        &id,
        "--out-p12",
        &site.path("p.p12"),
        "--password-env",
        "P12_PW",
    ]);
    // The old master key opens nothing any more.
    let o = site.run_env(
        &[
            "cert",
            "export",
            &id,
            "--out-p12",
            &site.path("q.p12"),
            "--password-env",
            "P12_PW",
        ],
        &[("P12_PW", "x"), ("SIKKERMAIL_MASTER_KEY", old_key.trim())],
    );
    assert_eq!(o.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("not loaded"),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    // An interrupted rotation (new key file left beside the old) is finished by running it again.
    fs::write(
        site.dir.join("master.key.new"),
        format!("{}\n", store::Kek::generate().unwrap().to_base64()),
    )
    .unwrap();
    let out = site.ok(&["key", "rotate-master"]);
    assert!(out.contains("re-sealed 4 private keys"), "{out}");
    site.ok(&[
        "cert",
        "export",
        &id,
        "--out-p12",
        &site.path("r.p12"),
        "--password-env",
        "P12_PW",
    ]);
}

#[test]
fn recipients_import_and_list() {
    if !peer("openssl") {
        return;
    }
    for site in sites() {
        site.ok(&["init", "--org-name", "Advokat", "--cvr", "12345678"]);
        let d = site.dir.parent().unwrap().to_path_buf();
        sh(
            &d,
            "openssl req -x509 -newkey rsa:2048 -nodes -keyout c1.key -out c1.pem -days 30 -subj '/CN=Retten i Aarhus' -addext subjectAltName=email:post@domstol.dk 2>/dev/null",
        );
        sh(
            &d,
            "openssl req -x509 -newkey rsa:2048 -nodes -keyout c2.key -out c2.pem -days 30 -subj '/CN=Ankestyrelsen' 2>/dev/null && cat c1.pem c2.pem > both.pem",
        );
        site.fails(
            &["recipient", "import", &site.path("both.pem")],
            2,
            "has no e-mail address",
        );
        assert_eq!(site.ok(&["recipient", "list"]), "");
        site.ok(&["recipient", "import", &site.path("c1.pem")]);
        site.ok(&[
            "recipient",
            "import",
            &site.path("c2.pem"),
            "--address",
            "post@ast.dk",
        ]);
        site.ok(&["recipient", "import", &site.path("c1.pem")]);
        let list = site.ok(&["recipient", "list"]);
        assert_eq!(list.lines().count(), 2, "{list}");
        assert!(
            list.contains("post@domstol.dk")
                && list.contains("post@ast.dk")
                && list.contains("imported"),
            "{list}"
        );
    }
}

/// Runs SQL on the site's database (sqlite3 or psql).
fn tamper(site: &Site, sql: &str) {
    let cmd = match &site.db_url {
        None => format!(
            "sqlite3 '{}' \"{sql}\"",
            site.dir.join("sikkermail.db").display()
        ),
        Some(u) => format!("psql '{u}' -qc \"{sql}\""),
    };
    sh(site.dir.parent().unwrap(), &cmd);
}

#[test]
fn audit_trail_is_hash_chained_and_tampering_is_detected() {
    if !peer("sqlite3") {
        return;
    }
    for site in sites() {
        site.ok(&["init", "--test"]);
        for n in ["a", "b", "c"] {
            site.ok(&[
                "cert",
                "issue",
                "--kind",
                "user",
                "--name",
                n,
                "--email",
                &format!("{n}@advokat.test"),
            ]);
        }
        let ok = site.ok(&["audit", "verify"]);
        assert!(ok.starts_with("audit trail intact: "), "{ok}");
        let entries: i64 = ok["audit trail intact: ".len()..]
            .split_whitespace()
            .next()
            .unwrap()
            .parse()
            .unwrap();
        assert!(entries >= 4, "{ok}");
        let broken = |want: &str| {
            let o = site.run(&["audit", "verify"]);
            let err = String::from_utf8_lossy(&o.stderr);
            assert_eq!(o.status.code(), Some(1), "{err}");
            assert!(
                err.contains("audit trail BROKEN") && err.contains(want),
                "wanted {want:?}: {err}"
            );
        };
        // Changed.
        tamper(
            &site,
            "UPDATE audit_events SET detail = 'nothing happened' WHERE seq = 2",
        );
        broken("entry 2 was changed");
        // Removed.
        tamper(&site, "DELETE FROM audit_events WHERE seq = 2");
        broken("entry 2 is missing");
        // Reordered: two entries swap places.
        let site2 = Site::new(site.db_url.is_some()).unwrap();
        site2.ok(&["init", "--test"]);
        site2.ok(&[
            "cert",
            "issue",
            "--kind",
            "user",
            "--name",
            "d",
            "--email",
            "d@advokat.test",
        ]);
        site2.ok(&["audit", "verify"]);
        tamper(
            &site2,
            "UPDATE audit_events SET seq = -seq WHERE seq IN (1, 2)",
        );
        tamper(&site2, "UPDATE audit_events SET seq = 2 WHERE seq = -1");
        tamper(&site2, "UPDATE audit_events SET seq = 1 WHERE seq = -2");
        let o = site2.run(&["audit", "verify"]);
        assert_eq!(o.status.code(), Some(1));
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(err.contains("BROKEN: entry 1 does not follow"), "{err}");
    }
}
