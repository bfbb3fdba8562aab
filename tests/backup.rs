//! `sikkermail backup` while `serve` accepts mail from parallel SMTP
//! clients, `sikkermail restore` into a new data directory with the master
//! key kept apart, and then: archived S/MIME mail decrypts with the
//! restored keys, every key opens, and every message answered 250 before
//! the backup began is delivered by a `serve` on the restored directory.
//! Also: what restore refuses (leaving nothing behind), a database newer
//! than the binary, and PostgreSQL's route (pg_dump, pg_restore).

#![allow(clippy::unwrap_used)]

mod common;
mod serve;
mod site;

use std::collections::BTreeSet;
use std::fs;
use std::io::{BufRead, BufReader};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{Sink, free_port, peer, peers_required, sh};
use serve::{Serve, bin};
use site::{Site, make_oces2_p12};

/// SMTP clients in parallel threads: `n` messages numbered from `offset`,
/// each with its number in X-Test-Id; prints `OK <id>` after each 250.
const CLIENTS_PY: &str = r#"
import smtplib, sys, threading
host, port, n, clients, offset = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
lock = threading.Lock()
def run(k):
    s = smtplib.SMTP(host, port, timeout=60)
    s.ehlo("client%d.test" % k)
    for i in range(k, n, clients):
        body = "From: a@udenfor.test\r\nTo: post@advokat.test\r\nSubject: msg %d\r\nX-Test-Id: %d\r\n\r\n%s\r\n" % (i + offset, i + offset, "x" * 4000)
        s.sendmail("a@udenfor.test", ["post@advokat.test"], body)
        with lock:
            sys.stdout.write("OK %d\n" % (i + offset)); sys.stdout.flush()
    s.quit()
ts = [threading.Thread(target=run, args=(k,)) for k in range(clients)]
[t.start() for t in ts]; [t.join() for t in ts]
"#;

fn peers(tools: &[&str]) -> bool {
    tools.iter().all(|t| peer(t))
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// The highest migration this build has (from store/migrations/sqlite).
fn known_schema() -> i64 {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("store/migrations/sqlite");
    fs::read_dir(dir)
        .unwrap()
        .filter_map(|e| {
            let n = e.unwrap().file_name().to_string_lossy().into_owned();
            n.split('_').next()?.parse::<i64>().ok()
        })
        .max()
        .unwrap()
}

/// `sikkermail ARGS` with only the environment given.
fn sikkermail(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut c = bin();
    c.args(args);
    for (k, v) in env {
        c.env(k, v);
    }
    c.output().unwrap()
}

/// The messages at the sink by X-Test-Id.
fn delivered_ids(sink: &Sink) -> BTreeSet<u32> {
    sink.messages()
        .iter()
        .filter_map(|(_, m)| {
            m.lines()
                .find_map(|l| l.strip_prefix("X-Test-Id: "))
                .map(|v| v.trim().parse().unwrap())
        })
        .collect()
}

/// The firm with an OCES3 organisation certificate and a legacy OCES2 key;
/// two archived messages, one encrypted to each: (archive, plaintext).
fn firm_with_archive(site: &Site) -> Vec<(PathBuf, &'static str)> {
    let d = site.dir.parent().unwrap().to_path_buf();
    site.init_firm();
    let id = site.issue_mailbox_cert("post@advokat.test");
    fs::write(d.join("org.crt"), site.pem(&id)).unwrap();
    let (p12, oces2) = make_oces2_p12(&d);
    let o = site.run_env(
        &["key", "import", &p12, "--password-env", "PW", "--legacy"],
        &[("PW", "gammel")],
    );
    assert!(o.status.success(), "{}", text(&o));
    fs::write(
        d.join("a3.txt"),
        "Content-Type: text/plain\r\n\r\nDom i sag 2026-17: frifundet.\r\n",
    )
    .unwrap();
    fs::write(
        d.join("a2.txt"),
        "Content-Type: text/plain\r\n\r\nGammel sag 2019-4: forligt.\r\n",
    )
    .unwrap();
    sh(
        &d,
        &format!(
            "openssl cms -encrypt -aes-256-cbc -in a3.txt -out archive-oces3.eml -subject 'Dom' org.crt && \
             openssl cms -encrypt -aes-128-cbc -in a2.txt -out archive-oces2.eml -subject 'Forlig' {oces2}"
        ),
    );
    vec![
        (d.join("archive-oces3.eml"), "Dom i sag 2026-17: frifundet."),
        (d.join("archive-oces2.eml"), "Gammel sag 2019-4: forligt."),
    ]
}

/// Every archived message decrypts with the store of `dir`.
fn archive_decrypts(dir: &Path, archive: &[(PathBuf, &str)]) {
    for (file, plain) in archive {
        let o = sikkermail(
            &[
                "smime",
                "decrypt",
                "--data-dir",
                dir.to_str().unwrap(),
                "--in",
                file.to_str().unwrap(),
            ],
            &[],
        );
        assert!(o.status.success(), "{file:?}: {}", text(&o));
        assert!(
            String::from_utf8_lossy(&o.stdout).contains(plain),
            "{}",
            text(&o)
        );
    }
}

/// `key list` shows `n` keys or more and none that does not open.
fn every_key_opens(dir: &Path, at_least: usize) {
    let o = sikkermail(&["key", "list", "--data-dir", dir.to_str().unwrap()], &[]);
    let out = text(&o);
    assert!(o.status.success(), "{out}");
    assert!(!out.contains("UNOPENABLE"), "{out}");
    assert!(out.matches("master ").count() >= at_least, "{out}");
}

fn mode(p: &Path) -> u32 {
    fs::metadata(p).unwrap().permissions().mode() & 0o777
}

#[test]
fn backup_under_smtp_load_restores_into_a_new_directory_and_loses_nothing() {
    if !peers(&["swaks", "smtp-sink", "openssl", "python3"]) {
        return;
    }
    let site = Site::new(false).unwrap();
    let d = site.dir.parent().unwrap().to_path_buf();
    let archive = firm_with_archive(&site);
    // The next hop is down: everything accepted waits in the queue.
    let hop = free_port();
    let extra = format!(
        "[organisation]\ndomains = [\"advokat.test\"]\n[inbound]\nnext_hop = \"127.0.0.1:{hop}\"\nnext_hop_tls = \"none\"\n"
    );
    let serve = Serve::start(&site, &extra);
    // Encrypted mail waiting in the queue too.
    for (file, _) in &archive {
        let o = Command::new("swaks")
            .args(["-s", &serve.inbound.to_string()])
            .args(["-f", "post@retten.test", "-t", "post@advokat.test"])
            .arg("--data")
            .arg(format!("@{}", file.display()))
            .args(["-n", "--timeout", "30"])
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", text(&o));
    }
    fs::write(d.join("clients.py"), CLIENTS_PY).unwrap();
    let clients = |n: u32, offset: u32| {
        Command::new("python3")
            .arg(d.join("clients.py"))
            .args(["127.0.0.1", &serve.inbound.port().to_string()])
            .args([n.to_string(), "4".into(), offset.to_string()])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    };
    // 1. Accepted before anything else.
    let first = clients(40, 0).wait_with_output().unwrap();
    assert!(first.status.success(), "{}", text(&first));
    let ok: Arc<Mutex<BTreeSet<u32>>> = Arc::new(Mutex::new(
        String::from_utf8_lossy(&first.stdout)
            .lines()
            .map(|l| l.strip_prefix("OK ").unwrap().parse().unwrap())
            .collect(),
    ));
    assert_eq!(ok.lock().unwrap().len(), 40);
    // 2. Four more clients sending while the backup is made.
    let mut busy = clients(600, 1000);
    let out = busy.stdout.take().unwrap();
    let reader = {
        let ok = ok.clone();
        std::thread::spawn(move || {
            for l in BufReader::new(out).lines() {
                let l = l.unwrap();
                ok.lock()
                    .unwrap()
                    .insert(l.strip_prefix("OK ").unwrap().parse().unwrap());
            }
        })
    };
    while ok.lock().unwrap().len() < 40 + 50 {
        assert!(busy.try_wait().unwrap().is_none(), "the clients stopped");
        std::thread::sleep(Duration::from_millis(20));
    }
    // The clients are still sending when the backup begins.
    assert!(busy.try_wait().unwrap().is_none(), "the clients stopped");
    let file = d.join("sikkermail.backup");
    let before_backup: BTreeSet<u32> = ok.lock().unwrap().clone();
    let o = sikkermail(
        &[
            "backup",
            "--data-dir",
            site.dir.to_str().unwrap(),
            "--out",
            file.to_str().unwrap(),
        ],
        &[],
    );
    let during = ok.lock().unwrap().len();
    let report = text(&o);
    assert!(o.status.success(), "{report}");
    assert_eq!(mode(&file), 0o600);
    let master = site.dir.join("master.key");
    assert!(
        report.contains(&format!("which is in {}", master.display())),
        "{report}"
    );
    let key = fs::read_to_string(&master).unwrap();
    let raw = fs::read(&file).unwrap();
    assert!(
        !raw.windows(key.trim().len())
            .any(|w| w == key.trim().as_bytes()),
        "the master key is in the backup"
    );
    let busy = busy.wait_with_output().unwrap();
    reader.join().unwrap();
    assert!(busy.status.success(), "{}", text(&busy));
    let all = ok.lock().unwrap().len();
    eprintln!(
        "backup under load: {} accepted before it began, {during} when it ended, {all} in all\n{report}",
        before_backup.len()
    );
    // Never overwrites.
    let o = sikkermail(
        &[
            "backup",
            "--data-dir",
            site.dir.to_str().unwrap(),
            "--out",
            file.to_str().unwrap(),
        ],
        &[],
    );
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(text(&o).contains("exists"), "{}", text(&o));
    assert_eq!(fs::read(&file).unwrap(), raw);
    serve.stop();

    // 3. Restore into a new directory with the master key kept apart.
    let kept = d.join("kept-master.key");
    fs::copy(&master, &kept).unwrap();
    let new = Site::new(false).unwrap();
    let o = sikkermail(
        &[
            "restore",
            file.to_str().unwrap(),
            "--data-dir",
            new.dir.to_str().unwrap(),
            "--master-key",
            kept.to_str().unwrap(),
        ],
        &[],
    );
    assert!(o.status.success(), "{}", text(&o));
    eprintln!("{}", text(&o));
    assert_eq!(mode(&new.dir), 0o700);
    assert_eq!(mode(&new.dir.join("master.key")), 0o600);
    assert_eq!(mode(&new.dir.join("sikkermail.db")), 0o600);
    assert_eq!(fs::read_to_string(new.dir.join("master.key")).unwrap(), key);
    // Old mail and every key.
    archive_decrypts(&new.dir, &archive);
    every_key_opens(&new.dir, 2);
    // Restoring again over it is refused and changes nothing.
    let db_before = fs::read(new.dir.join("sikkermail.db")).unwrap();
    let o = sikkermail(
        &[
            "restore",
            file.to_str().unwrap(),
            "--data-dir",
            new.dir.to_str().unwrap(),
            "--master-key",
            kept.to_str().unwrap(),
        ],
        &[],
    );
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(text(&o).contains("is not empty"), "{}", text(&o));
    assert_eq!(fs::read(new.dir.join("sikkermail.db")).unwrap(), db_before);

    // 4. The restored queue: a serve on the new directory with the next
    // hop up delivers every message answered 250 before the backup began,
    // and the encrypted ones decrypted with the restored keys.
    let sink = Sink::start_on(&d.join("sink"), hop);
    let serve = Serve::start(&new, &extra);
    // Mail deferred many times waits for its next attempt (backoff up to
    // an hour): try it all now, as the README says after a restore.
    let o = sikkermail(
        &[
            "queue",
            "retry",
            "--all",
            "--data-dir",
            new.dir.to_str().unwrap(),
        ],
        &[],
    );
    assert!(o.status.success(), "{}", text(&o));
    let deadline = Instant::now() + Duration::from_secs(180);
    loop {
        let got = delivered_ids(&sink);
        if before_backup.is_subset(&got) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{:?} of {} messages accepted before the backup were not delivered\n{}",
            before_backup.difference(&got).collect::<Vec<_>>(),
            before_backup.len(),
            serve.logs()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let msgs = sink.messages();
        let plain = archive
            .iter()
            .filter(|(_, p)| msgs.iter().any(|(_, m)| m.contains(p)))
            .count();
        if plain == archive.len() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the queued encrypted mail did not arrive decrypted\n{}",
            serve.logs()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    serve.stop();
    drop(sink);

    // 5. What restore refuses leaves nothing behind.
    let refused = |args: &[&str], msg: &str, code: i32| {
        let target = d.join(format!("refused-{}", free_port()));
        let mut a: Vec<&str> = vec!["restore"];
        a.extend_from_slice(args);
        a.extend_from_slice(&["--data-dir", target.to_str().unwrap()]);
        let o = sikkermail(&a, &[]);
        assert_eq!(o.status.code(), Some(code), "{a:?}: {}", text(&o));
        assert!(
            text(&o).contains(msg),
            "{a:?}: wanted {msg:?}: {}",
            text(&o)
        );
        assert!(!target.exists(), "{a:?} left {target:?} behind");
    };
    let wrong = d.join("wrong.key");
    fs::write(&wrong, "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=\n").unwrap();
    refused(
        &[
            file.to_str().unwrap(),
            "--master-key",
            wrong.to_str().unwrap(),
        ],
        "does not open the restored store",
        1,
    );
    refused(
        &[file.to_str().unwrap()],
        "give the master key of the installation",
        2,
    );
    refused(
        &[
            kept.to_str().unwrap(),
            "--master-key",
            kept.to_str().unwrap(),
        ],
        "is not a sikkermail backup (not an SQLite database)",
        2,
    );
    sh(
        &d,
        "python3 -c \"import sqlite3; c = sqlite3.connect('other.db'); c.execute('CREATE TABLE t (x)'); c.commit()\"",
    );
    let other = d.join("other.db");
    refused(
        &[
            other.to_str().unwrap(),
            "--master-key",
            kept.to_str().unwrap(),
        ],
        "without sikkermail's schema",
        2,
    );
    // A backup made by a newer sikkermail.
    let future = d.join("future.backup");
    fs::copy(&file, &future).unwrap();
    let add_future_migration = |db: &Path| {
        sh(
            &d,
            &format!(
                "python3 -c \"import sqlite3; c = sqlite3.connect('{}'); \
                 c.execute(\\\"INSERT INTO _sqlx_migrations (version, description, success, checksum, execution_time) VALUES (9999, 'future', 1, x'00', 0)\\\"); c.commit()\"",
                db.display()
            ),
        );
    };
    add_future_migration(&future);
    refused(
        &[
            future.to_str().unwrap(),
            "--master-key",
            kept.to_str().unwrap(),
        ],
        &format!(
            "is at schema 9999, this sikkermail knows up to {}",
            known_schema()
        ),
        2,
    );

    // 6. A database newer than the binary: serve and commands refuse it,
    // saying what to do, and leave it as it is.
    add_future_migration(&new.dir.join("sikkermail.db"));
    let future_db = fs::read(new.dir.join("sikkermail.db")).unwrap();
    let msg = format!(
        "the database is at schema 9999, this sikkermail knows up to {}: upgrade sikkermail",
        known_schema()
    );
    let o = sikkermail(
        &["key", "list", "--data-dir", new.dir.to_str().unwrap()],
        &[],
    );
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(text(&o).contains(&msg), "{}", text(&o));
    let cfg = serve::config_file(&new, "future", &extra);
    let mut c = bin();
    c.arg("serve")
        .arg("--config")
        .arg(&cfg)
        .env("SIKKERMAIL_INBOUND_LISTEN", "127.0.0.1:0")
        .env("SIKKERMAIL_OUTBOUND_LISTEN", "127.0.0.1:0")
        .env("SIKKERMAIL_HTTP_LISTEN", "127.0.0.1:0");
    let o = common::run_with_timeout(&mut c, 120);
    assert!(!o.status.success(), "{}", text(&o));
    assert!(text(&o).contains(&msg), "{}", text(&o));
    assert_eq!(fs::read(new.dir.join("sikkermail.db")).unwrap(), future_db);
}

#[test]
fn postgres_backup_is_refused_and_pg_dump_with_pg_restore_gives_a_store_that_decrypts() {
    let bin_dir = Path::new("/usr/lib/postgresql/15/bin");
    if !bin_dir.join("pg_dump").exists() {
        assert!(
            !peers_required(),
            "pg_dump is missing from {bin_dir:?} and SIKKERMAIL_REQUIRE_PEERS=1"
        );
        eprintln!("!!! SKIPPING: no pg_dump in {bin_dir:?}");
        return;
    }
    if !peers(&["openssl", "psql"]) {
        return;
    }
    let Some(site) = Site::new(true) else {
        assert!(
            !peers_required(),
            "TEST_DATABASE_URL is not set and SIKKERMAIL_REQUIRE_PEERS=1"
        );
        eprintln!("!!! SKIPPING: TEST_DATABASE_URL is not set");
        return;
    };
    let d = site.dir.parent().unwrap().to_path_buf();
    let archive = firm_with_archive(&site);
    let url = site.db_url.clone().unwrap();
    // `backup` points to pg_dump.
    let out = d.join("pg.backup");
    let o = site.run(&["backup", "--out", out.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(text(&o).contains("pg_dump"), "{}", text(&o));
    assert!(!out.exists());
    // The README's commands.
    let new_name = format!("{}_restored", site.pg_name.as_ref().unwrap());
    let new_url = format!("{}/{new_name}", url.rsplit_once('/').unwrap().0);
    let admin = std::env::var("TEST_DATABASE_URL").unwrap();
    struct Drop1(String, String);
    impl Drop for Drop1 {
        fn drop(&mut self) {
            let _ = common::sh_status(
                Path::new("/"),
                &format!(
                    "psql '{}' -qc 'DROP DATABASE IF EXISTS {} WITH (FORCE)'",
                    self.0, self.1
                ),
            );
        }
    }
    let _cleanup = Drop1(admin.clone(), new_name.clone());
    sh(
        &d,
        &format!(
            "{b}/pg_dump --format=custom --file=sikkermail.dump '{url}' && \
             psql '{admin}' -qc 'CREATE DATABASE {new_name}' && \
             {b}/pg_restore --no-owner --exit-on-error --single-transaction --dbname='{new_url}' sikkermail.dump",
            b = bin_dir.display()
        ),
    );
    // A new node: its own data directory with the master key kept apart.
    let node = d.join("node");
    fs::create_dir(&node).unwrap();
    fs::set_permissions(&node, fs::Permissions::from_mode(0o700)).unwrap();
    fs::copy(site.dir.join("master.key"), node.join("master.key")).unwrap();
    for (file, plain) in &archive {
        let o = sikkermail(
            &[
                "smime",
                "decrypt",
                "--data-dir",
                node.to_str().unwrap(),
                "--database-url",
                &new_url,
                "--in",
                file.to_str().unwrap(),
            ],
            &[],
        );
        assert!(o.status.success(), "{}", text(&o));
        assert!(String::from_utf8_lossy(&o.stdout).contains(plain));
    }
    let o = sikkermail(
        &[
            "key",
            "list",
            "--data-dir",
            node.to_str().unwrap(),
            "--database-url",
            &new_url,
        ],
        &[],
    );
    assert!(o.status.success(), "{}", text(&o));
    assert!(!text(&o).contains("UNOPENABLE"), "{}", text(&o));
    assert!(text(&o).matches("master ").count() >= 2, "{}", text(&o));
    // `restore` with a PostgreSQL database points to pg_restore.
    let o = sikkermail(
        &[
            "restore",
            "sikkermail.dump",
            "--data-dir",
            node.to_str().unwrap(),
            "--database-url",
            &new_url,
        ],
        &[],
    );
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(text(&o).contains("pg_restore"), "{}", text(&o));
}
