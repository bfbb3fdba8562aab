//! Races between commands on one data directory (and one PostgreSQL
//! database): two rotations, issuing during a rotation, two `init`s, and a
//! rotation killed at random points. Each runs many times over, on SQLite
//! and (when `TEST_DATABASE_URL` is set) PostgreSQL, and then proves that
//! every key opens and every old message still decrypts.
//!
//! `SIKKERMAIL_RACE_ROUNDS` sets the number of rounds (default 50).

#![allow(clippy::unwrap_used)]

mod common;
mod site;

use std::fs;
use std::process::Child;
use std::time::Duration;

use site::{Site, first_field, sites};

fn rounds() -> usize {
    std::env::var("SIKKERMAIL_RACE_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(50)
}

/// A random pause of up to `max_ms`.
fn jitter(max_ms: u64) {
    let mut b = [0u8; 2];
    openssl::rand::rand_bytes(&mut b).unwrap();
    std::thread::sleep(Duration::from_millis(
        u64::from(u16::from_le_bytes(b)) % (max_ms + 1),
    ));
}

fn wait_ok(c: Child, what: &str) -> String {
    let o = c.wait_with_output().unwrap();
    assert!(
        o.status.success(),
        "{what}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8(o.stdout).unwrap()
}

fn init(site: &Site) {
    site.ok(&["init", "--org-name", "Advokat", "--cvr", "12345678"]);
}

fn issue_args(n: usize) -> Vec<String> {
    [
        "cert",
        "issue",
        "--kind",
        "organisation",
        "--name",
        &format!("Postkasse {n}"),
        "--email",
        &format!("post{n}@advokat.dk"),
    ]
    .map(String::from)
    .to_vec()
}

/// A message encrypted to certificate `id`, written beside the data dir.
fn encrypt_to(site: &Site, id: &str) -> std::path::PathBuf {
    let pem = site.pem(id);
    let cert = site.dir.parent().unwrap().join(format!("cert-{id}.pem"));
    fs::write(&cert, pem).unwrap();
    let plain = site.dir.parent().unwrap().join(format!("plain-{id}.eml"));
    fs::write(
        &plain,
        format!("From: a@b.dk\r\nTo: post@advokat.dk\r\nSubject: {id}\r\nContent-Type: text/plain\r\n\r\nbesked {id}\r\n"),
    )
    .unwrap();
    let out = site.dir.parent().unwrap().join(format!("mail-{id}.eml"));
    site.ok(&[
        "smime",
        "encrypt",
        "--to",
        cert.to_str().unwrap(),
        "--in",
        plain.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ]);
    out
}

/// Every key opens (nothing marked unopenable, the CA signs a CRL) and
/// every message decrypts through the store.
fn everything_opens(site: &Site, mails: &[(String, std::path::PathBuf)]) {
    let keys = site.ok(&["key", "list"]);
    assert!(!keys.contains("UNOPENABLE"), "{keys}");
    site.ok(&["ca", "crl", "--out", &site.path("check.crl")]);
    // Audit entries written at once by racing commands form one chain.
    let audit = site.ok(&["audit", "verify"]);
    assert!(audit.starts_with("audit trail intact"), "{audit}");
    for (id, mail) in mails {
        let o = site.run(&["smime", "decrypt", "--in", mail.to_str().unwrap()]);
        assert!(
            o.status.success(),
            "message to certificate {id}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        assert!(
            String::from_utf8_lossy(&o.stdout).contains(&format!("besked {id}")),
            "message to certificate {id} decrypted wrongly"
        );
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(!err.contains("skipped"), "{err}");
    }
}

#[test]
fn two_rotations_at_once_lose_no_key() {
    for site in sites() {
        init(&site);
        let id =
            first_field(&site.ok(&issue_args(0).iter().map(String::as_str).collect::<Vec<_>>()));
        let mails = vec![(id.clone(), encrypt_to(&site, &id))];
        for round in 0..rounds() {
            let a = site.spawn(&["key", "rotate-master"]);
            let b = site.spawn(&["key", "rotate-master"]);
            wait_ok(a, "first rotation");
            wait_ok(b, "second rotation");
            assert!(!site.dir.join("master.key.new").exists(), "round {round}");
            if round % 10 == 9 {
                everything_opens(&site, &mails);
            }
        }
        everything_opens(&site, &mails);
    }
}

#[test]
fn issuing_during_a_rotation_seals_under_the_surviving_key() {
    for site in sites() {
        init(&site);
        let mut issued = Vec::new();
        for round in 0..rounds() {
            let args = issue_args(round);
            let i = site.spawn(&args.iter().map(String::as_str).collect::<Vec<_>>());
            jitter(40);
            let r = site.spawn(&["key", "rotate-master"]);
            let out = wait_ok(i, "issue");
            wait_ok(r, "rotation");
            issued.push(first_field(&out));
        }
        let mails: Vec<_> = issued
            .iter()
            .map(|id| (id.clone(), encrypt_to(&site, id)))
            .collect();
        everything_opens(&site, &mails);
        // And a later rotation has nothing it cannot re-seal.
        let o = site.run(&["key", "rotate-master"]);
        assert!(o.status.success());
        assert!(
            !String::from_utf8_lossy(&o.stderr).contains("left as it was"),
            "{}",
            String::from_utf8_lossy(&o.stderr)
        );
        everything_opens(&site, &mails);
    }
}

#[test]
fn killing_a_rotation_at_random_points_loses_nothing() {
    for site in sites() {
        init(&site);
        let mut issued = Vec::new();
        let mut mails = Vec::new();
        for round in 0..rounds() {
            let args = issue_args(round);
            let i = site.spawn(&args.iter().map(String::as_str).collect::<Vec<_>>());
            let mut r = site.spawn(&["key", "rotate-master"]);
            jitter(60);
            let _ = r.kill();
            let _ = r.wait();
            let id = first_field(&wait_ok(i, "issue beside a killed rotation"));
            if round % 10 == 0 {
                // Whatever state the rotation was killed in, keys open now.
                mails.push((id.clone(), encrypt_to(&site, &id)));
                everything_opens(&site, &mails);
            }
            issued.push(id);
        }
        // Running the rotation again finishes whatever was interrupted.
        let o = site.run(&["key", "rotate-master"]);
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        assert!(!site.dir.join("master.key.new").exists());
        let keys = site.ok(&["key", "list"]);
        let master = keys
            .lines()
            .map(|l| l.split('\t').nth(3).unwrap().to_string())
            .collect::<std::collections::BTreeSet<_>>();
        assert_eq!(master.len(), 1, "every key under one master key: {keys}");
        for id in issued.iter().step_by(7) {
            mails.push((id.clone(), encrypt_to(&site, id)));
        }
        everything_opens(&site, &mails);
    }
}

#[test]
fn two_inits_at_once_make_exactly_one_organisation() {
    let n = rounds();
    for postgres in [false, true] {
        for round in 0..n {
            let Some(site) = Site::new(postgres) else {
                break;
            };
            let args = ["init", "--org-name", "Advokat", "--cvr", "12345678"];
            let a = site.spawn(&args);
            let b = site.spawn(&args);
            let (oa, ob) = (a.wait_with_output().unwrap(), b.wait_with_output().unwrap());
            let ok = [&oa, &ob].iter().filter(|o| o.status.success()).count();
            assert_eq!(
                ok,
                1,
                "round {round}: {} / {}",
                String::from_utf8_lossy(&oa.stderr),
                String::from_utf8_lossy(&ob.stderr)
            );
            let loser = if oa.status.success() { &ob } else { &oa };
            assert_eq!(loser.status.code(), Some(2));
            assert!(
                String::from_utf8_lossy(&loser.stderr).contains("already initialised"),
                "{}",
                String::from_utf8_lossy(&loser.stderr)
            );
            // One organisation, its CA opens.
            let certs = site.ok(&["cert", "list"]);
            assert_eq!(certs.lines().count(), 2, "{certs}");
            site.ok(&["ca", "crl", "--out", &site.path("c.crl")]);
            assert!(!site.dir.join("master.key.new").exists());
        }
    }
}

/// Two nodes on one PostgreSQL, each with its own data directory (so the
/// lock file orders nothing between them): one rotates while the other
/// issues. The advisory lock and the recorded sealing key must order them:
/// the issue either lands before the rotation (and is re-sealed by it) or
/// sees the new key and, not holding it, fails cleanly; nothing is ever
/// left under the discarded key.
#[test]
fn two_nodes_rotating_and_issuing_on_one_postgresql() {
    let Some(a) = Site::new(true) else {
        assert!(!common::peers_required(), "TEST_DATABASE_URL is required");
        eprintln!("!!! SKIPPING: TEST_DATABASE_URL not set");
        return;
    };
    init(&a);
    let b = a.second_node();
    // Two inits from two nodes: the database says no to the second.
    let o = b.run(&["init", "--org-name", "Andet", "--cvr", "87654321"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("already initialised"));
    let mut issued = Vec::new();
    let mut refused = 0;
    for round in 0..rounds() {
        let args = issue_args(round);
        let i = b.spawn(&args.iter().map(String::as_str).collect::<Vec<_>>());
        // B's key generation takes a while: the rotation lands before,
        // during or after B's transaction.
        jitter(1200);
        let r = a.spawn(&["key", "rotate-master"]);
        let io = i.wait_with_output().unwrap();
        wait_ok(r, "rotation on node A");
        if io.status.success() {
            issued.push(first_field(&String::from_utf8_lossy(&io.stdout)));
        } else {
            let err = String::from_utf8_lossy(&io.stderr);
            assert!(
                err.contains("rotated") || err.contains("not loaded"),
                "round {round}: {err}"
            );
            refused += 1;
        }
        // The operator copies the new key to node B.
        b.copy_master_key_from(&a);
    }
    eprintln!(
        "{} issued on node B, {refused} refused during a rotation",
        issued.len()
    );
    assert!(!issued.is_empty());
    let mails: Vec<_> = issued
        .iter()
        .step_by(5)
        .map(|id| (id.clone(), encrypt_to(&a, id)))
        .collect();
    everything_opens(&a, &mails);
    everything_opens(&b, &mails);
}

/// Commands that start together on a SQLite database that needs a
/// migration (an upgrade) apply it once: the others wait and find it done.
#[test]
fn commands_starting_together_migrate_once() {
    let site = Site::new(false).unwrap();
    init(&site);
    for round in 0..rounds().min(20) {
        common::sh(
            site.dir.parent().unwrap(),
            "python3 -c \"import sqlite3; c=sqlite3.connect('data/sikkermail.db'); \
             c.executescript('DROP TABLE master_state; ALTER TABLE ca_state DROP COLUMN arl_der; \
             ALTER TABLE ca_state DROP COLUMN arl_updated_at; DELETE FROM _sqlx_migrations WHERE version = 2;'); c.close()\"",
        );
        let children: Vec<_> = (0..4).map(|_| site.spawn(&["cert", "list"])).collect();
        for c in children {
            let out = wait_ok(c, &format!("round {round}: cert list during a migration"));
            assert_eq!(out.lines().count(), 2);
        }
    }
}
