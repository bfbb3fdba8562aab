//! Secrets at rest: what the firm sends (before encryption) is never
//! readable in the database files, while queued or after delivery; every
//! file in the data directory is its owner's alone; the bootstrap link is
//! never printed where logs keep it.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use crate::client::{http, link_token};
use crate::common::{Sink, free_port, peer};
use crate::serve::Serve;
use crate::site::Site;
use crate::{Smtp, firm};

/// True when `needle` is in any file under `dir` (the database, its WAL,
/// anything else the gateway keeps there).
fn anywhere(dir: &Path, needle: &[u8]) -> Vec<String> {
    let mut hits = Vec::new();
    for e in fs::read_dir(dir).unwrap().flatten() {
        let p = e.path();
        if p.is_dir() {
            hits.extend(anywhere(&p, needle));
        } else if let Ok(bytes) = fs::read(&p)
            && bytes.windows(needle.len()).any(|w| w == needle)
        {
            hits.push(p.display().to_string());
        }
    }
    hits
}

/// Every file and directory under `dir` with a group or other bit.
fn loose(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    for e in fs::read_dir(dir).unwrap().flatten() {
        let p = e.path();
        let m = fs::symlink_metadata(&p).unwrap();
        if m.permissions().mode() & 0o077 != 0 && !m.file_type().is_symlink() {
            out.push(format!(
                "{} {:03o}",
                p.display(),
                m.permissions().mode() & 0o777
            ));
        }
        if m.is_dir() {
            out.extend(loose(&p));
        }
    }
    out
}

#[test]
fn queued_plaintext_is_sealed_dropped_after_delivery_and_every_file_is_private() {
    if !peer("smtp-sink") {
        return;
    }
    // SQLite: the database files are in the data directory.
    let site = Site::new(false).unwrap();
    let d = site.dir.parent().unwrap().to_path_buf();
    firm(&site);
    let relay_port = free_port();
    let serve = Serve::start(
        &site,
        &format!(
            "[organisation]\ndomains = [\"advokat.test\"]\n[outbound]\nrelay = \"127.0.0.1:{relay_port}\"\nrelay_tls = \"none\"\n"
        ),
    );
    // The bootstrap link: in a 0600 file, not on standard output.
    assert!(
        !serve.banner.iter().any(|l| l.contains("/bootstrap/")),
        "{:?}",
        serve.banner
    );
    let link = site.dir.join("bootstrap-link");
    let token = fs::read_to_string(&link).unwrap();
    let token = token.trim().rsplit('/').next().unwrap().to_string();
    assert!(token.len() > 20, "{token}");
    assert!(anywhere(&site.dir, token.as_bytes()) == [link.display().to_string()]);
    assert!(!serve.logs().contains(&token), "the link is in the log");

    let secret = "HEMMELIG-PROCESSKRIFT-4711";
    let (mut c, _) = Smtp::connect(serve.outbound);
    let r = c.send(
        "post@advokat.test",
        &["post@retten.test"],
        format!(
            "From: post@advokat.test\r\nTo: post@retten.test\r\nSubject: Sag\r\n\r\n{secret}\r\n"
        )
        .as_bytes(),
    );
    assert!(r.starts_with("250"), "{r}");
    c.cmd("QUIT");
    // Queued (the relay is down): sealed in the database and its WAL.
    let hits = anywhere(&site.dir, secret.as_bytes());
    assert!(hits.is_empty(), "queued plaintext readable in {hits:?}");
    let shown = site.ok(&["queue", "show", "1", "--body"]);
    assert!(shown.contains(secret), "the queue still reads it: {shown}");
    // The relay comes up: delivered, and the body is dropped.
    let sink = Sink::start_on(&d.join("sink"), relay_port);
    let got = sink.wait_for(1, 60, || serve.logs());
    assert!(got[0].1.contains(secret));
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let shown = site.ok(&["queue", "show", "1", "--body"]);
        if !shown.contains(secret) {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{shown}");
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    let hits = anywhere(&site.dir, secret.as_bytes());
    assert!(hits.is_empty(), "delivered plaintext readable in {hits:?}");
    // Every file and directory the gateway made is its owner's alone.
    let l = loose(&site.dir);
    assert!(l.is_empty(), "readable by group or others: {l:?}");
    serve.stop();
    // A new link on demand replaces the file's, and a restart keeps it.
    let made = site.ok(&["admin", "bootstrap"]);
    let made = made.trim();
    assert!(
        made.contains("/bootstrap/") && !made.contains(&token),
        "{made}"
    );
    assert_eq!(fs::read_to_string(&link).unwrap().trim(), made);
    let again = Serve::start(&site, "");
    assert!(
        again
            .banner
            .iter()
            .any(|l| l.contains("bootstrap link is in")),
        "{:?}",
        again.banner
    );
    assert_eq!(fs::read_to_string(&link).unwrap().trim(), made);
    again.stop();
}

#[test]
fn link_tokens_mailed_through_the_queue_are_never_readable_in_the_database() {
    if !peer("smtp-sink") {
        return;
    }
    let site = Site::new(false).unwrap();
    let d = site.dir.parent().unwrap().to_path_buf();
    firm(&site);
    let pw = "Driftens-kodeord-2026";
    let o = site.run_env(
        &[
            "admin",
            "create",
            "drift",
            "--role",
            "org-admin",
            "--password-env",
            "PW",
        ],
        &[("PW", pw)],
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let sink = Sink::start(&d.join("sink"));
    // The activation e-mails go through the gateway's own outbound
    // listener (the default), so through the queue, to the relay.
    let serve = Serve::start(
        &site,
        &format!(
            "[organisation]\ndomains = [\"advokat.test\"]\n[admin]\nmail_from = \"post@advokat.test\"\n\
             [outbound]\nrelay = \"127.0.0.1:{}\"\nrelay_tls = \"none\"\n",
            sink.port
        ),
    );
    let login = http(
        serve.http,
        "POST",
        "/api/v1/login",
        &[("Content-Type", "application/json")],
        &format!("{{\"name\":\"drift\",\"password\":\"{pw}\"}}"),
    );
    assert_eq!(login.status, 200, "{}", login.body);
    let bearer = format!("Bearer {}", login.json()["token"].as_str().unwrap());
    let import = http(
        serve.http,
        "POST",
        "/api/v1/users/import",
        &[("Content-Type", "text/csv"), ("Authorization", &bearer)],
        "Navn;E-mail;CPR;Fødselsdato\nJens Jensen;jens@advokat.test;;1970-05-01\n",
    );
    assert_eq!(import.status, 200, "{}", import.body);
    let id = import.json()["imported"][0]["id"].as_i64().unwrap();
    let act = http(
        serve.http,
        "POST",
        "/api/v1/users/activate",
        &[
            ("Content-Type", "application/json"),
            ("Authorization", &bearer),
        ],
        &format!("{{\"users\":[{id}],\"ident_means\":\"mitid-app\"}}"),
    );
    assert_eq!(act.status, 200, "{}", act.body);
    let got = sink.wait_for(1, 60, || serve.logs());
    let token = link_token(&got[0].1, "activate")
        .unwrap_or_else(|| panic!("no activation link in {}", got[0].1));
    assert!(token.len() > 20, "{token}");
    let hits = anywhere(&site.dir, token.as_bytes());
    assert!(hits.is_empty(), "the link token is readable in {hits:?}");
    serve.stop();
}
