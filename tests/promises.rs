//! The README's promises that issue 11 found broken, one test each: a
//! failed command changes nothing, renewal only of what is active, no
//! duplicate import, the audit's "who", `init` needs a name, loose master
//! keys, both CRLs, unopenable keys named and skipped.

#![allow(clippy::unwrap_used)]

mod common;
mod site;

use std::fs;
use std::os::unix::fs::PermissionsExt;

use common::{peer, sh};
use site::{Site, first_field, sites};

fn init(site: &Site) {
    site.ok(&["init", "--org-name", "Advokat", "--cvr", "12345678"]);
}

fn issue(site: &Site, extra: &[&str]) -> std::process::Output {
    let mut args = vec![
        "cert",
        "issue",
        "--kind",
        "organisation",
        "--name",
        "Post",
        "--email",
        "post@advokat.dk",
    ];
    args.extend_from_slice(extra);
    site.run(&args)
}

/// Certificates, keys and audit: what a failed command must leave as it was.
fn state(site: &Site) -> (String, String, String) {
    (
        site.ok(&["cert", "list"]),
        site.ok(&["key", "list"]),
        site.ok(&["audit", "--limit", "1000"]),
    )
}

#[test]
fn a_p12_that_cannot_be_written_issues_nothing() {
    for site in sites() {
        init(&site);
        let before = state(&site);
        // A directory that does not exist: refused before anything is made.
        let o = issue(
            &site,
            &[
                "--out-p12",
                &site.path("nosuchdir/k.p12"),
                "--password-env",
                "P12_PW",
            ],
        );
        assert_eq!(o.status.code(), Some(2));
        assert!(String::from_utf8_lossy(&o.stderr).contains("does not exist"));
        assert_eq!(state(&site), before);
        // A path that fails only when written (it is a directory): rolled back.
        let d = site.path("a-directory");
        fs::create_dir(&d).unwrap();
        fs::write(format!("{d}/inside"), b"x").unwrap();
        let o = issue(&site, &["--out-p12", &d, "--password-env", "P12_PW"]);
        assert_eq!(
            o.status.code(),
            Some(2),
            "{}",
            String::from_utf8_lossy(&o.stderr)
        );
        assert!(String::from_utf8_lossy(&o.stderr).contains("nothing was changed"));
        assert_eq!(state(&site), before);
        // The retry that works makes exactly one certificate.
        let o = issue(
            &site,
            &["--out-p12", &site.path("k.p12"), "--password-env", "P12_PW"],
        );
        assert!(o.status.success());
        assert_eq!(site.ok(&["cert", "list"]).lines().count(), 3);
        // A renewal whose file cannot be written renews nothing.
        let id = first_field(&String::from_utf8_lossy(&o.stdout));
        let before = state(&site);
        let o = site.run(&[
            "cert",
            "renew",
            &id,
            "--out-p12",
            &d,
            "--password-env",
            "P12_PW",
        ]);
        assert_eq!(o.status.code(), Some(2));
        assert_eq!(state(&site), before);
    }
}

#[test]
fn only_an_active_certificate_is_renewed_once() {
    for site in sites() {
        init(&site);
        let id = first_field(&String::from_utf8_lossy(&issue(&site, &[]).stdout));
        let new = first_field(&site.ok(&["cert", "renew", &id]));
        let before = state(&site);
        site.fails(&["cert", "renew", &id], 2, &format!("replaced by {new}"));
        assert_eq!(state(&site), before);
        let uuid = |id: &str| {
            site.ok(&["cert", "show", id])
                .lines()
                .find_map(|l| l.strip_prefix("uuid: ").map(str::to_string))
                .unwrap()
        };
        assert_eq!(uuid(&id), uuid(&new));
        let active = site
            .ok(&["cert", "list"])
            .lines()
            .filter(|l| l.contains("\tactive\t") && l.contains("Post"))
            .count();
        assert_eq!(active, 1);
        // Two renewals of one certificate at once: one wins, one successor.
        let a = site.spawn(&["cert", "renew", &new]);
        let b = site.spawn(&["cert", "renew", &new]);
        let (oa, ob) = (a.wait_with_output().unwrap(), b.wait_with_output().unwrap());
        assert_eq!(
            [&oa, &ob].iter().filter(|o| o.status.success()).count(),
            1,
            "{} / {}",
            String::from_utf8_lossy(&oa.stderr),
            String::from_utf8_lossy(&ob.stderr)
        );
        let active = site
            .ok(&["cert", "list"])
            .lines()
            .filter(|l| l.contains("\tactive\t") && l.contains("Post"))
            .count();
        assert_eq!(active, 1);
        let keys = site.ok(&["key", "list"]);
        assert!(!keys.contains("(no certificate)"), "{keys}");
    }
}

#[test]
fn importing_a_key_twice_stores_nothing_the_second_time() {
    if !peer("openssl") {
        return;
    }
    for site in sites() {
        init(&site);
        let d = site.dir.parent().unwrap().to_path_buf();
        sh(
            &d,
            "openssl req -x509 -newkey rsa:2048 -nodes -keyout o.key -out o.crt -days 30 -subj '/CN=Post/emailAddress=post@advokat.dk' 2>/dev/null && \
             openssl pkcs12 -export -in o.crt -inkey o.key -passout pass:pw -out o.p12",
        );
        let p12 = d.join("o.p12").display().to_string();
        let env = [("PW", "pw")];
        let o = site.run_env(&["key", "import", &p12, "--password-env", "PW"], &env);
        assert!(o.status.success());
        let before = state(&site);
        let o = site.run_env(&["key", "import", &p12, "--password-env", "PW"], &env);
        assert_eq!(o.status.code(), Some(2));
        assert!(String::from_utf8_lossy(&o.stderr).contains("already imported"));
        assert_eq!(state(&site), before);
        // Without --password-env the message says so.
        let o = site.run_env(&["key", "import", &p12], &[]);
        assert_eq!(o.status.code(), Some(2));
        assert!(
            String::from_utf8_lossy(&o.stderr).contains("--password-env"),
            "{}",
            String::from_utf8_lossy(&o.stderr)
        );
    }
}

#[test]
fn the_audit_names_the_real_account_and_limit_zero_is_empty() {
    let site = Site::new(false).unwrap();
    init(&site);
    let o = site.run_env(
        &["ca", "crl", "--out", &site.path("c.crl")],
        &[("USER", "mallory")],
    );
    assert!(o.status.success());
    let audit = site.ok(&["audit", "--limit", "1"]);
    assert!(!audit.contains("mallory"), "{audit}");
    // SAFETY: getuid cannot fail.
    if unsafe { libc::getuid() } == 0 {
        assert!(audit.contains("cli:root"), "{audit}");
    }
    let o = site.run_env(
        &["ca", "crl", "--out", &site.path("c.crl")],
        &[("SUDO_USER", "jens")],
    );
    assert!(o.status.success());
    assert!(site.ok(&["audit", "--limit", "1"]).contains("(sudo:jens)"));
    assert_eq!(site.ok(&["audit", "--limit", "0"]), "");
    assert_eq!(site.ok(&["audit", "--limit", "2"]).lines().count(), 2);
}

#[test]
fn init_needs_a_name_and_leaves_an_existing_directory_alone() {
    let site = Site::new(false).unwrap();
    let o = site.run(&["init"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("--org-name"));
    assert!(!site.dir.exists());
    fs::create_dir(&site.dir).unwrap();
    // A directory group or others may enter is refused, and nothing is
    // made in it.
    fs::set_permissions(&site.dir, fs::Permissions::from_mode(0o750)).unwrap();
    site.fails(
        &["init", "--org-name", "Firma", "--cvr", "12345678"],
        2,
        "chmod 700",
    );
    assert_eq!(fs::read_dir(&site.dir).unwrap().count(), 0);
    fs::set_permissions(&site.dir, fs::Permissions::from_mode(0o700)).unwrap();
    init(&site);
    let mode = fs::metadata(&site.dir).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o700, "an existing directory keeps its mode");
    // Every file made in it is the owner's alone.
    for e in fs::read_dir(&site.dir).unwrap() {
        let e = e.unwrap();
        let m = e.metadata().unwrap().permissions().mode() & 0o777;
        assert_eq!(m & 0o077, 0, "{:?} has mode {m:03o}", e.path());
    }
    // Loosened later: every command refuses it.
    fs::set_permissions(&site.dir, fs::Permissions::from_mode(0o755)).unwrap();
    site.fails(&["cert", "list"], 2, "chmod 700");
    fs::set_permissions(&site.dir, fs::Permissions::from_mode(0o700)).unwrap();
    site.fails(
        &["init", "--org-name", "Andet", "--cvr", "87654321"],
        2,
        "already initialised",
    );
    // --test makes a throw-away organisation without a name.
    let t = Site::new(false).unwrap();
    let out = t.ok(&["init", "--test"]);
    assert!(out.contains("CVR 00000000"), "{out}");
}

#[test]
fn a_loose_master_key_is_refused() {
    let site = Site::new(false).unwrap();
    init(&site);
    let key = site.dir.join("master.key");
    fs::set_permissions(&key, fs::Permissions::from_mode(0o644)).unwrap();
    site.fails(&["cert", "list"], 2, "chmod 600");
    let o = site.run_env(
        &["cert", "list"],
        &[("SIKKERMAIL_ALLOW_LOOSE_MASTER_KEY", "1")],
    );
    assert!(o.status.success());
    fs::set_permissions(&key, fs::Permissions::from_mode(0o600)).unwrap();
    let out = site.ok(&["key", "rotate-master"]);
    assert!(out.contains("back up the new master key"), "{out}");
}

#[test]
fn a_key_revoked_for_compromise_is_exported_only_with_force() {
    for site in sites() {
        init(&site);
        let id = first_field(&String::from_utf8_lossy(&issue(&site, &[]).stdout));
        site.ok(&["cert", "revoke", &id, "--reason", "keyCompromise"]);
        let before = state(&site);
        let out = site.path("k.p12");
        site.fails(
            &[
                "cert",
                "export",
                &id,
                "--out-p12",
                &out,
                "--password-env",
                "P12_PW",
            ],
            2,
            "--force",
        );
        assert!(!std::path::Path::new(&out).exists());
        assert_eq!(state(&site), before);
        site.ok(&[
            "cert",
            "export",
            &id,
            "--out-p12",
            &out,
            "--password-env",
            "P12_PW",
            "--force",
        ]);
        assert!(std::path::Path::new(&out).exists());
    }
}

#[test]
fn ca_crl_makes_both_lists_and_openssl_checks_every_level() {
    if !peer("openssl") {
        return;
    }
    for site in sites() {
        init(&site);
        let id = first_field(&String::from_utf8_lossy(&issue(&site, &[]).stdout));
        let d = site.dir.parent().unwrap().to_path_buf();
        let show = site.ok(&["cert", "show", &id]);
        fs::write(
            d.join("leaf.pem"),
            &show[show.find("-----BEGIN").unwrap()..],
        )
        .unwrap();
        fs::write(d.join("root.pem"), site.pem("1")).unwrap();
        fs::write(d.join("issuing.pem"), site.pem("2")).unwrap();
        site.ok(&["ca", "crl", "--out", &site.path("ca.crl")]);
        let crls = fs::read_to_string(d.join("ca.crl")).unwrap();
        assert_eq!(crls.matches("BEGIN X509 CRL").count(), 2);
        let verify = "openssl verify -crl_check_all -CAfile root.pem -untrusted issuing.pem -CRLfile ca.crl leaf.pem";
        let o = common::sh_status(&d, verify);
        assert!(
            o.status.success(),
            "{}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        );
        // Revoked: the same check says so.
        site.ok(&["cert", "revoke", &id, "--reason", "keyCompromise"]);
        site.ok(&["ca", "crl", "--out", &site.path("ca.crl")]);
        let o = common::sh_status(&d, verify);
        assert!(!o.status.success());
        assert!(
            String::from_utf8_lossy(&o.stdout).contains("revoked")
                || String::from_utf8_lossy(&o.stderr).contains("revoked")
        );
        // DER: one list per file.
        site.ok(&[
            "ca",
            "crl",
            "--der",
            "--out",
            &site.path("i.der"),
            "--root-out",
            &site.path("r.der"),
        ]);
        sh(
            &d,
            "openssl crl -inform DER -in i.der -noout && openssl crl -inform DER -in r.der -noout",
        );
    }
}

#[test]
fn a_key_that_does_not_open_is_named_and_the_others_still_work() {
    if !peer("openssl") {
        return;
    }
    let site = Site::new(false).unwrap();
    init(&site);
    let a = first_field(&String::from_utf8_lossy(&issue(&site, &[]).stdout));
    let b = first_field(&site.ok(&[
        "cert",
        "issue",
        "--kind",
        "user",
        "--name",
        "Anne",
        "--email",
        "anne@advokat.dk",
    ]));
    let d = site.dir.parent().unwrap().to_path_buf();
    fs::write(d.join("b.pem"), site.pem(&b)).unwrap();
    fs::write(
        d.join("m.eml"),
        b"From: x@y.dk\r\nSubject: s\r\nContent-Type: text/plain\r\n\r\nhemmeligt\r\n",
    )
    .unwrap();
    site.ok(&[
        "smime",
        "encrypt",
        "--to",
        &site.path("b.pem"),
        "--in",
        &site.path("m.eml"),
        "--out",
        &site.path("e.eml"),
    ]);
    // Key of certificate `a` now names a master key nobody holds.
    let key_of_a = site
        .ok(&["cert", "show", &a])
        .lines()
        .find_map(|l| {
            l.strip_prefix("private key: held (key ")
                .map(|k| k.trim_end_matches(')').to_string())
        })
        .unwrap();
    sh(
        &d,
        &format!(
            "python3 -c \"import sqlite3; c=sqlite3.connect('data/sikkermail.db'); c.execute(\\\"UPDATE private_keys SET kek_id='00ff00ff00ff00ff' WHERE id={key_of_a}\\\"); c.commit()\""
        ),
    );
    let keys = site.ok(&["key", "list"]);
    assert!(
        keys.contains("UNOPENABLE (master key 00ff00ff00ff00ff not loaded)"),
        "{keys}"
    );
    let o = site.run(&["smime", "decrypt", "--in", &site.path("e.eml")]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(String::from_utf8_lossy(&o.stdout).contains("hemmeligt"));
    assert!(String::from_utf8_lossy(&o.stderr).contains(&format!("private key {key_of_a}")));
    // The rotation finishes around it and says what to do.
    let o = site.run(&["key", "rotate-master"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("SIKKERMAIL_EXTRA_MASTER_KEYS"), "{err}");
    assert!(err.contains(&format!("private key {key_of_a}")), "{err}");
    site.ok(&["ca", "crl", "--out", &site.path("c.crl")]);
}

#[test]
fn verify_with_the_internal_ca_checks_revocation_at_every_level() {
    for site in sites() {
        init(&site);
        let o = issue(
            &site,
            &["--out-p12", &site.path("k.p12"), "--password-env", "P12_PW"],
        );
        assert!(o.status.success());
        let d = site.dir.parent().unwrap().to_path_buf();
        fs::write(d.join("root.pem"), site.pem("1")).unwrap();
        fs::write(d.join("issuing.pem"), site.pem("2")).unwrap();
        fs::write(
            d.join("m.eml"),
            b"From: post@advokat.dk\r\nSubject: s\r\nContent-Type: text/plain\r\n\r\nunderskrevet\r\n",
        )
        .unwrap();
        site.ok(&[
            "smime",
            "sign",
            "--key",
            &site.path("k.p12"),
            "--password-env",
            "P12_PW",
            "--in",
            &site.path("m.eml"),
            "--out",
            &site.path("s.eml"),
        ]);
        site.ok(&[
            "ca",
            "crl",
            "--out",
            &site.path("issuing.crl"),
            "--root-out",
            &site.path("root.crl"),
        ]);
        let verify = |crls: &[&str], extra: &[&str]| {
            let mut args = vec![
                "smime".to_string(),
                "verify".into(),
                "--ca".into(),
                site.path("root.pem"),
                "--cert".into(),
                site.path("issuing.pem"),
                "--in".into(),
                site.path("s.eml"),
            ];
            for c in crls {
                args.push("--crl".into());
                args.push(site.path(c));
            }
            args.extend(extra.iter().map(|s| s.to_string()));
            let o = site.run(&args.iter().map(String::as_str).collect::<Vec<_>>());
            (
                o.status.code(),
                String::from_utf8_lossy(&o.stderr).into_owned(),
            )
        };
        // Both lists: valid, every level checked.
        let (code, err) = verify(&["issuing.crl", "root.crl"], &[]);
        assert_eq!(code, Some(0), "{err}");
        assert!(err.contains("checked at every level"), "{err}");
        // The root's ARL missing: refused, naming whose CRL is missing.
        let (code, err) = verify(&["issuing.crl"], &[]);
        assert_eq!(code, Some(1), "{err}");
        assert!(
            err.contains("no CRL from") && err.contains("rod-CA"),
            "{err}"
        );
        // Leaf only: valid, and it says the CA levels were not checked.
        let (code, err) = verify(&["issuing.crl"], &["--crl-check", "leaf"]);
        assert_eq!(code, Some(0), "{err}");
        assert!(err.contains("signer's certificate only"), "{err}");
        // No CRL: valid, revocation not checked.
        let (code, err) = verify(&[], &[]);
        assert_eq!(code, Some(0), "{err}");
        assert!(err.contains("revocation: not checked"), "{err}");
    }
}

#[test]
fn encrypting_to_a_ca_certificate_needs_force() {
    let site = Site::new(false).unwrap();
    init(&site);
    let d = site.dir.parent().unwrap().to_path_buf();
    fs::write(d.join("issuing.pem"), site.pem("2")).unwrap();
    fs::write(d.join("m.eml"), b"Subject: s\r\n\r\nx\r\n").unwrap();
    let args = [
        "smime",
        "encrypt",
        "--to",
        &site.path("issuing.pem"),
        "--in",
        &site.path("m.eml"),
        "--out",
        &site.path("e.eml"),
    ];
    site.fails(&args, 2, "is a CA certificate");
    assert!(!d.join("e.eml").exists());
    let mut forced = args.to_vec();
    forced.push("--force");
    site.ok(&forced);
    assert!(d.join("e.eml").exists());
}
