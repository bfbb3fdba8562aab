//! One configuration for every command (issue 21 §2): `--config` (or
//! SIKKERMAIL_CONFIG) read by every command, one precedence order (flag,
//! environment, configuration file, built-in default), `serve` refusing to
//! make a second installation, `policy explain` with the configured
//! policy, `serve --check` finding every error `serve` would, and SIGHUP
//! re-reading the policy, the trust anchors, the TLS certificate and the
//! log level of a running `serve` (with journald-style lines under
//! systemd).

#![allow(clippy::unwrap_used)]

mod common;
mod serve;
mod site;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use common::{Sink, peer, run_with_timeout, sh};
use serve::{Serve, bin, config_file};
use site::Site;

/// A 0700 scratch directory under the target directory.
fn scratch(prefix: &str) -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix(prefix)
        .tempdir_in(env!("CARGO_TARGET_TMPDIR"))
        .unwrap()
}

/// `sikkermail ARGS` in `cwd` with only the `SIKKERMAIL_*` variables of `env`.
fn run(cwd: &Path, args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut c = bin();
    c.current_dir(cwd).args(args);
    for (k, v) in env {
        c.env(k, v);
    }
    // A `serve` that starts instead of refusing fails the test, never hangs it.
    run_with_timeout(&mut c, 120)
}

fn ok(cwd: &Path, args: &[&str], env: &[(&str, &str)]) -> String {
    let o = run(cwd, args, env);
    assert!(
        o.status.success(),
        "{args:?} {env:?}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8(o.stdout).unwrap()
}

/// Runs and expects exit status `code`; standard error.
fn fails(cwd: &Path, args: &[&str], env: &[(&str, &str)], code: i32) -> String {
    let o = run(cwd, args, env);
    let err = String::from_utf8_lossy(&o.stderr).to_string();
    assert_eq!(o.status.code(), Some(code), "{args:?} {env:?}: {err}");
    err
}

fn write(dir: &Path, name: &str, text: &str) -> String {
    let p = dir.join(name);
    fs::write(&p, text).unwrap();
    p.display().to_string()
}

/// The organisation `ca show` names.
fn org_of(cwd: &Path, args: &[&str], env: &[(&str, &str)]) -> String {
    let out = ok(cwd, &[args, &["ca", "show"]].concat(), env);
    out.lines()
        .next()
        .unwrap()
        .trim_start_matches("organisation: ")
        .split(" (")
        .next()
        .unwrap()
        .to_string()
}

#[test]
fn every_command_reads_one_configuration_in_one_precedence_order() {
    let tmp = scratch("config-");
    let d = tmp.path();
    let path = |n: &str| d.join(n).display().to_string();
    // Three installations, told apart by their organisation's name.
    let conf = write(
        d,
        "c.toml",
        &format!("data_dir = \"{}\"\n", path("conf-data")),
    );
    let init = |name: &str, extra: &[&str], env: &[(&str, &str)]| {
        let args = [&["init", "--org-name", name, "--cvr", "12345678"], extra].concat();
        ok(d, &args, env);
    };
    // `init` reads the configuration's data_dir.
    init("Konfig", &["--config", &conf], &[]);
    assert!(d.join("conf-data/sikkermail.db").exists());
    assert!(!d.join("sikkermail-data").exists());
    init("Miljoe", &[], &[("SIKKERMAIL_DATA_DIR", &path("env-data"))]);
    init("Flag", &["--data-dir", &path("flag-data")], &[]);
    init("Standard", &[], &[]);
    assert!(d.join("sikkermail-data/sikkermail.db").exists());

    let cfg_env = [("SIKKERMAIL_CONFIG", conf.as_str())];
    let both_env = [
        ("SIKKERMAIL_CONFIG", conf.as_str()),
        ("SIKKERMAIL_DATA_DIR", &path("env-data")),
    ];
    let flag = ["--data-dir", &path("flag-data")];
    // Built-in default, configuration file (flag or environment),
    // environment over the file, flag over all, before or after the
    // command's name.
    assert_eq!(org_of(d, &[], &[]), "Standard");
    assert_eq!(org_of(d, &["--config", &conf], &[]), "Konfig");
    assert_eq!(org_of(d, &[], &cfg_env), "Konfig");
    assert_eq!(org_of(d, &[], &both_env), "Miljoe");
    assert_eq!(org_of(d, &flag, &both_env), "Flag");
    let after = ok(
        d,
        &["ca", "show", "--data-dir", &path("flag-data")],
        &both_env,
    );
    assert!(after.starts_with("organisation: Flag"), "{after}");
    // A command's own flag wins over one before its name.
    let o = ok(
        d,
        &[
            "--data-dir",
            &path("env-data"),
            "ca",
            "show",
            "--data-dir",
            &path("flag-data"),
        ],
        &[],
    );
    assert!(o.starts_with("organisation: Flag"), "{o}");

    // Every store command reads the configuration: pointed at a data
    // directory that does not exist, each names it; a broken
    // configuration stops each with every error.
    let nowhere = write(
        d,
        "nowhere.toml",
        &format!("data_dir = \"{}\"\n", path("nowhere")),
    );
    let broken = write(d, "broken.toml", "data_dir = 3\nbogus = 1\n");
    let commands: &[&[&str]] = &[
        &["ca", "show"],
        &["cert", "list"],
        &["key", "list"],
        &["recipient", "list"],
        &["audit"],
        &["queue", "list"],
        &["smtp-user", "list"],
        &["admin", "list"],
        &["org", "pending"],
        &["mailbox", "status"],
        &["key", "rotate-master"],
        &["init", "--test"],
        &["serve", "--check"],
    ];
    for cmd in commands {
        if cmd[0] != "init" {
            let err = fails(d, &[*cmd, &["--config", &nowhere]].concat(), &[], 2);
            assert!(err.contains(&path("nowhere")), "{cmd:?}: {err}");
        }
        let err = fails(d, &[&["--config", &broken], *cmd].concat(), &[], 2);
        assert!(
            err.contains("2 error(s)") && err.contains("bogus") && err.contains("data_dir"),
            "{cmd:?}: {err}"
        );
    }
    assert!(!d.join("nowhere").exists());
    // `smime decrypt --config` opens the configured store's keys.
    let eml = write(d, "x.eml", "Subject: x\r\n\r\nx\r\n");
    let err = fails(
        d,
        &["smime", "decrypt", "--config", &nowhere, "--in", &eml],
        &[],
        2,
    );
    assert!(err.contains(&path("nowhere")), "{err}");
}

#[test]
fn serve_takes_data_dir_and_says_what_it_uses() {
    let tmp = scratch("config-serve-");
    let d = tmp.path();
    let path = |n: &str| d.join(n).display().to_string();
    ok(
        d,
        &["init", "--test", "--data-dir", &path("flag-data")],
        &[],
    );
    let conf = write(
        d,
        "c.toml",
        &format!("data_dir = \"{}\"\n", path("conf-data")),
    );
    let mut c = bin();
    c.current_dir(d)
        .args(["serve", "--config", &conf, "--data-dir", &path("flag-data")])
        .env("SIKKERMAIL_INBOUND_LISTEN", "127.0.0.1:0")
        .env("SIKKERMAIL_OUTBOUND_LISTEN", "127.0.0.1:0")
        .env("SIKKERMAIL_HTTP_LISTEN", "127.0.0.1:0");
    let serve = Serve::spawn(c, &d.join("serve.log"));
    let said = serve.banner.join("\n");
    assert!(
        said.contains(&format!("configuration {conf} (flag)"))
            && said.contains(&format!("data directory {} (flag)", path("flag-data"))),
        "{said}"
    );
    assert!(!said.contains("created"), "{said}");
    assert!(!d.join("conf-data").exists());
    // --check beside the running serve (after an upgrade): its listen
    // addresses are in use by it, not an error.
    let addrs = [
        ("SIKKERMAIL_INBOUND_LISTEN", serve.inbound.to_string()),
        ("SIKKERMAIL_OUTBOUND_LISTEN", serve.outbound.to_string()),
        ("SIKKERMAIL_HTTP_LISTEN", serve.http.to_string()),
    ];
    let env: Vec<(&str, &str)> = addrs.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let out = ok(
        d,
        &[
            "serve",
            "--check",
            "--config",
            &conf,
            "--data-dir",
            &path("flag-data"),
        ],
        &env,
    );
    assert!(out.contains("a `serve` is running"), "{out}");
    // Elsewhere the same addresses are refused.
    ok(d, &["init", "--test", "--data-dir", &path("second")], &[]);
    let err = fails(
        d,
        &["serve", "--check", "--data-dir", &path("second")],
        &env,
        2,
    );
    assert!(
        err.contains(&format!("cannot listen on {} (HTTP)", serve.http)),
        "{err}"
    );
    serve.stop();
}

#[test]
fn serve_makes_no_second_installation() {
    let tmp = scratch("config-fresh-");
    let d = tmp.path();
    let path = |n: &str| d.join(n).display().to_string();
    let ports = [
        ("SIKKERMAIL_INBOUND_LISTEN", "127.0.0.1:0"),
        ("SIKKERMAIL_OUTBOUND_LISTEN", "127.0.0.1:0"),
        ("SIKKERMAIL_HTTP_LISTEN", "127.0.0.1:0"),
    ];
    // A configuration naming the organisation: a real installation, which
    // `serve` does not invent.
    let named = write(
        d,
        "named.toml",
        &format!(
            "data_dir = \"{}\"\n[organisation]\nname = \"Advokatfirma ApS\"\ncvr = \"12345678\"\n",
            path("named-data")
        ),
    );
    for args in [
        &["serve", "--config", &named][..],
        &["serve", "--check", "--config", &named],
    ] {
        let err = fails(d, args, &ports, if args.len() == 4 { 2 } else { 1 });
        assert!(
            err.contains("names the organisation \"Advokatfirma ApS\"")
                && err.contains("sikkermail init --config"),
            "{err}"
        );
    }
    assert!(!d.join("named-data/sikkermail.db").exists());
    // `init` without --org-name/--cvr: the configuration's organisation,
    // after which `serve --check` finds the installation.
    let err = fails(d, &["init", "--data-dir", &path("nameless")], &[], 2);
    assert!(err.contains("--org-name and --cvr"), "{err}");
    assert!(!d.join("nameless/sikkermail.db").exists());
    ok(d, &["init", "--config", &named], &[]);
    let shown = ok(d, &["ca", "show", "--config", &named], &[]);
    assert!(
        shown.contains("Advokatfirma ApS") && shown.contains("12345678"),
        "{shown}"
    );
    ok(d, &["serve", "--check", "--config", &named], &ports);
    fs::remove_dir_all(d.join("named-data")).unwrap();
    // The README's first hour: commands without --data-dir made
    // ./sikkermail-data, then `serve --config` names another directory.
    ok(d, &["init", "--test"], &[]);
    let other = write(
        d,
        "other.toml",
        &format!("data_dir = \"{}\"\n", path("other-data")),
    );
    for args in [
        &["serve", "--config", &other][..],
        &["serve", "--check", "--config", &other],
    ] {
        let err = fails(d, args, &ports, if args.len() == 4 { 2 } else { 1 });
        assert!(
            err.contains(&format!("but {} does", path("sikkermail-data"))),
            "{err}"
        );
    }
    assert!(!d.join("other-data/sikkermail.db").exists());
    // A flag naming another directory than the configuration's, which
    // holds the installation, is refused the same way (elsewhere, with no
    // ./sikkermail-data).
    let inst = write(
        d,
        "inst.toml",
        &format!("data_dir = \"{}\"\n", path("sikkermail-data")),
    );
    fs::create_dir(d.join("sub")).unwrap();
    let err = fails(
        &d.join("sub"),
        &["serve", "--config", &inst, "--data-dir", &path("typo-data")],
        &ports,
        1,
    );
    assert!(
        err.contains(&format!(
            "{} holds no installation, but {} does",
            path("typo-data"),
            path("sikkermail-data")
        )),
        "{err}"
    );
    assert!(!d.join("typo-data/sikkermail.db").exists());
}

#[test]
fn policy_explain_answers_with_the_configured_policy() {
    let tmp = scratch("config-policy-");
    let d = tmp.path();
    let path = |n: &str| d.join(n).display().to_string();
    ok(d, &["init", "--test", "--data-dir", &path("data")], &[]);
    let policy = write(
        d,
        "policy.toml",
        "[domain.\"retten.test\"]\nencrypt = \"required\"\n",
    );
    let with_key = write(
        d,
        "c.toml",
        &format!("data_dir = \"{}\"\npolicy = \"{policy}\"\n", path("data")),
    );
    let explain = [
        "policy",
        "explain",
        "--from",
        "a@advokat.test",
        "--to",
        "post@retten.test",
    ];
    let out = ok(d, &[&explain[..], &["--config", &with_key]].concat(), &[]);
    assert!(out.starts_with(&format!("policy: {policy}\n")), "{out}");
    assert!(out.contains("encrypt = \"required\""), "{out}");
    // No `policy` key: <data_dir>/policy.toml, as serve reads it.
    let without = write(d, "c2.toml", &format!("data_dir = \"{}\"\n", path("data")));
    let out = ok(d, &[&explain[..], &["--config", &without]].concat(), &[]);
    assert!(out.contains("built-in defaults"), "{out}");
    assert!(out.contains("encrypt = \"opportunistic\""), "{out}");
    fs::copy(&policy, d.join("data/policy.toml")).unwrap();
    let out = ok(d, &explain, &[("SIKKERMAIL_CONFIG", &without)]);
    assert!(
        out.starts_with(&format!("policy: {}/policy.toml\n", path("data"))),
        "{out}"
    );
    assert!(out.contains("encrypt = \"required\""), "{out}");
    // --policy still wins.
    let none = write(d, "none.toml", "");
    let out = ok(
        d,
        &[&explain[..], &["--config", &with_key, "--policy", &none]].concat(),
        &[],
    );
    assert!(out.contains("encrypt = \"opportunistic\""), "{out}");
}

/// A self-signed certificate and key for `cn` (OpenSSL's command line).
fn self_signed(dir: &Path, cn: &str) -> (String, String) {
    let (crt, key) = (format!("{cn}.crt"), format!("{cn}.key"));
    sh(
        dir,
        &format!(
            "openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 30 \
             -subj /CN={cn} -keyout {key} -out {crt} 2>/dev/null"
        ),
    );
    (
        dir.join(crt).display().to_string(),
        dir.join(key).display().to_string(),
    )
}

#[test]
fn check_finds_every_error_serve_would() {
    if !peer("openssl") {
        return;
    }
    let tmp = scratch("config-check-");
    let d = tmp.path();
    let path = |n: &str| d.join(n).display().to_string();
    ok(d, &["init", "--test", "--data-dir", &path("data")], &[]);
    let (crt, key) = self_signed(d, "gw.test");
    let (_, other_key) = self_signed(d, "other.test");
    let anchor = crt.clone();
    let good_policy = write(d, "policy.toml", "[default]\nsign = false\n");
    let head = |data: &str| {
        format!(
            "data_dir = \"{data}\"\n[outbound]\nlisten = \"127.0.0.1:0\"\n[inbound]\nlisten = \"127.0.0.1:0\"\n"
        )
    };
    let good = write(
        d,
        "good.toml",
        &format!(
            "policy = \"{good_policy}\"\n{}trust_anchors = [\"{anchor}\"]\n[http]\nlisten = \"127.0.0.1:0\"\n[tls]\ncert = \"{crt}\"\nkey = \"{key}\"\n[mailbox.post]\nhost = \"127.0.0.1\"\nuser = \"post\"\nca = \"{anchor}\"\n",
            head(&path("data"))
        ),
    );
    let out = ok(d, &["serve", "--check", "--config", &good], &[]);
    assert!(out.starts_with("configuration OK"), "{out}");

    // Every kind at once: missing files, the master key gone, a port in use.
    let busy = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let busy_addr = busy.local_addr().unwrap();
    let bad = write(
        d,
        "bad.toml",
        &format!(
            "policy = \"{}\"\n{}trust_anchors = [\"{}\"]\n[http]\nlisten = \"{busy_addr}\"\n[tls]\ncert = \"{}\"\nkey = \"{key}\"\n[mailbox.post]\nhost = \"127.0.0.1\"\nuser = \"post\"\nca = \"{}\"\n",
            path("no-policy.toml"),
            head(&path("data")),
            path("no-anchor.pem"),
            path("no-cert.pem"),
            path("no-ca.pem"),
        ),
    );
    fs::rename(d.join("data/master.key"), d.join("master.key.away")).unwrap();
    let err = fails(d, &["serve", "--check", "--config", &bad], &[], 2);
    for want in [
        "6 error(s)",
        "no-policy.toml",
        "trust anchors",
        "no-anchor.pem",
        "[tls] cert",
        "no-cert.pem",
        "[mailbox.post] ca",
        "no-ca.pem",
        "master",
        &format!("cannot listen on {busy_addr} (HTTP)"),
    ] {
        assert!(err.contains(want), "wanted {want:?} in {err}");
    }
    // `serve` itself refuses to start on it.
    let err = fails(d, &["serve", "--config", &bad], &[], 1);
    assert!(err.contains("master"), "{err}");
    fs::rename(d.join("master.key.away"), d.join("data/master.key")).unwrap();
    drop(busy);

    // Files that exist but do not load: a policy with errors, anchors
    // that are no certificates, a key that is not the certificate's; and
    // a database that does not answer.
    let broken_policy = write(d, "broken-policy.toml", "[default]\nencrypt = \"maybe\"\n");
    let junk = write(d, "junk.pem", "not a certificate\n");
    let bad2 = write(
        d,
        "bad2.toml",
        &format!(
            "policy = \"{broken_policy}\"\ndatabase_url = \"postgres://postgres:postgres@127.0.0.1:1/none\"\n{}trust_anchors = [\"{junk}\"]\n[http]\nlisten = \"127.0.0.1:0\"\n[tls]\ncert = \"{crt}\"\nkey = \"{other_key}\"\n[mailbox.post]\nhost = \"127.0.0.1\"\nuser = \"post\"\nca = \"{junk}\"\n",
            head(&path("data"))
        ),
    );
    let err = fails(d, &["serve", "--check", "--config", &bad2], &[], 2);
    for want in [
        "5 error(s)",
        "broken-policy.toml",
        "encrypt",
        "junk.pem",
        "[mailbox.post] ca",
        "does not match",
        "store:",
    ] {
        assert!(err.contains(want), "wanted {want:?} in {err}");
    }
}

/// The subject of the certificate the STARTTLS listener at `addr` presents.
fn presented(dir: &Path, addr: std::net::SocketAddr) -> String {
    let o = sh(
        dir,
        &format!(
            "openssl s_client -starttls smtp -connect {addr} </dev/null 2>/dev/null | openssl x509 -noout -subject"
        ),
    );
    String::from_utf8_lossy(&o.stdout).trim().to_string()
}

/// Waits (up to 30 s) for `n` messages in the Maildir folder `new`.
fn maildir(serve: &Serve, new: &Path, n: usize) -> Vec<String> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let files: Vec<PathBuf> = fs::read_dir(new)
            .map(|r| r.map(|e| e.unwrap().path()).collect())
            .unwrap_or_default();
        if files.len() >= n {
            return files
                .iter()
                .map(|f| fs::read_to_string(f).unwrap())
                .collect();
        }
        assert!(
            Instant::now() < deadline,
            "{} of {n} messages in {new:?}\n{}",
            files.len(),
            serve.logs()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Waits (up to 30 s) for `what` in serve's log.
fn wait_log(serve: &Serve, what: &str, count: usize) -> String {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let logs = serve.logs();
        if logs.matches(what).count() >= count {
            return logs;
        }
        assert!(
            Instant::now() < deadline,
            "no {what:?} ({count}) in:\n{logs}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn sighup_reloads_policy_certificate_and_log_level_and_keeps_them_when_broken() {
    if !["swaks", "smtp-sink", "openssl"].iter().all(|t| peer(t)) {
        return;
    }
    let site = Site::new(false).unwrap();
    let d: PathBuf = site.dir.parent().unwrap().to_path_buf();
    site.ok(&["init", "--test"]);
    let (crt_a, key_a) = self_signed(&d, "first.test");
    let (crt_b, key_b) = self_signed(&d, "second.test");
    let (crt, key) = (d.join("tls.crt"), d.join("tls.key"));
    fs::copy(&crt_a, &crt).unwrap();
    fs::copy(&key_a, &key).unwrap();
    let policy = d.join("policy.toml");
    fs::write(&policy, "[default]\nsign = false\n").unwrap();
    let sink = Sink::start(&d.join("sink"));
    let cfg = config_file(
        &site,
        "sikkermail",
        &format!(
            "policy = \"{}\"\n[organisation]\ndomains = [\"advokat.test\"]\n[outbound]\nrelay = \"127.0.0.1:{}\"\nrelay_tls = \"none\"\n[tls]\ncert = \"{}\"\nkey = \"{}\"\n",
            policy.display(),
            sink.port,
            crt.display(),
            key.display()
        ),
    );
    let base = fs::read_to_string(&cfg).unwrap();
    let mut c = bin();
    c.arg("serve")
        .arg("--config")
        .arg(&cfg)
        .env("SIKKERMAIL_INBOUND_LISTEN", "127.0.0.1:0")
        .env("SIKKERMAIL_OUTBOUND_LISTEN", "127.0.0.1:0")
        .env("SIKKERMAIL_HTTP_LISTEN", "127.0.0.1:0")
        .env("SIKKERMAIL_QUEUE_RETRY_BASE", "1s")
        // As systemd starts it.
        .env("INVOCATION_ID", "0123456789abcdef");
    let serve = Serve::spawn(c, &d.join("serve.log"));
    let hup = || {
        // SAFETY: signalling our own child.
        unsafe { libc::kill(serve.child.id() as i32, libc::SIGHUP) };
    };
    let send = |name: &str, to: &str| {
        let f = d.join(format!("{name}.eml"));
        fs::write(
            &f,
            format!("From: post@advokat.test\r\nTo: {to}\r\nSubject: {name}\r\n\r\nHej.\r\n"),
        )
        .unwrap();
        let o = Command::new("swaks")
            .args([
                "-s",
                &serve.outbound.to_string(),
                "-f",
                "post@advokat.test",
                "-t",
                to,
            ])
            .arg("--data")
            .arg(format!("@{}", f.display()))
            .args(["-n", "--timeout", "30"])
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stdout));
    };

    // Before: the first policy lets plain mail out; the first certificate.
    send("one", "ven@andet.test");
    let got = sink.wait_for(1, 60, || serve.logs());
    assert_eq!(got[0].0, vec!["ven@andet.test".to_string()]);
    assert!(presented(&d, serve.outbound).contains("first.test"));
    assert!(
        !serve.logs().contains("session closed"),
        "no debug lines yet"
    );

    // New policy (encryption required, no certificate for ven@: a DSN),
    // new certificate, log level debug: SIGHUP.
    fs::write(&policy, "[default]\nsign = false\nencrypt = \"required\"\n").unwrap();
    fs::copy(&crt_b, &crt).unwrap();
    fs::copy(&key_b, &key).unwrap();
    fs::write(&cfg, format!("{base}[log]\nlevel = \"debug\"\n")).unwrap();
    hup();
    wait_log(&serve, "reloaded reloaded=", 1);
    send("two", "ven@andet.test");
    // The sender's DSN, in the local Maildir.
    let dsns = maildir(&serve, &site.dir.join("maildir/post@advokat.test/new"), 1);
    assert!(dsns[0].contains("encryption is required"), "{}", dsns[0]);
    assert!(presented(&d, serve.outbound).contains("second.test"));
    wait_log(&serve, "session closed", 1);

    // Broken files: refused with an ERROR line each, the ones in use kept.
    fs::write(&policy, "[default]\nencrypt = \"maybe\"\n").unwrap();
    fs::write(&crt, "not a certificate\n").unwrap();
    hup();
    let logs = wait_log(&serve, "reloaded reloaded=", 2);
    assert!(
        logs.lines()
            .any(|l| l.starts_with("<3>") && l.contains("policy") && l.contains("kept")),
        "{logs}"
    );
    assert!(
        logs.lines()
            .any(|l| l.starts_with("<3>") && l.contains("TLS") && l.contains("kept")),
        "{logs}"
    );
    send("three", "ven@andet.test");
    let dsns = maildir(&serve, &site.dir.join("maildir/post@advokat.test/new"), 2);
    assert!(dsns.iter().all(|m| m.contains("encryption is required")));
    assert_eq!(sink.messages().len(), 1, "only the first message left");
    assert!(presented(&d, serve.outbound).contains("second.test"));
    // A change that needs a restart is named, not applied.
    fs::write(&policy, "[default]\nsign = false\n").unwrap();
    fs::write(&cfg, base.replace("gw.test", "other.test")).unwrap();
    hup();
    let logs = wait_log(&serve, "reloaded reloaded=", 3);
    assert!(
        logs.lines().any(|l| l.starts_with("<4>")
            && l.contains("need a restart")
            && l.contains("hostname")),
        "{logs}"
    );

    // Journald lines: a priority, no timestamp, no colours.
    for l in logs.lines() {
        assert!(
            l.len() > 3 && l.starts_with('<') && l.as_bytes()[2] == b'>',
            "not a journal line: {l:?}"
        );
        assert!(!l.contains('\x1b') && !l[3..].starts_with("20"), "{l:?}");
    }
    serve.stop();
}

/// root running a command on a data directory that belongs to the
/// service's user (the package's `sikkermail`) is refused before it makes
/// a file there that the service could not open.
#[test]
fn root_is_refused_a_data_directory_of_another_user() {
    // SAFETY: geteuid has no preconditions and cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("SKIPPED: not running as root");
        return;
    }
    let tmp = scratch("config-owner-");
    let d = tmp.path();
    let data = d.join("data");
    let data_s = data.display().to_string();
    ok(d, &["init", "--test", "--data-dir", &data_s], &[]);
    let names = |p: &Path| {
        let mut v: Vec<String> = fs::read_dir(p)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    };
    // `nobody` (65534) owns it now, as `sikkermail` owns /var/lib/sikkermail.
    std::os::unix::fs::chown(&data, Some(65534), Some(65534)).unwrap();
    let before = names(&data);
    for args in [
        &["key", "list", "--data-dir", &data_s][..],
        &["queue", "list", "--data-dir", &data_s],
    ] {
        let err = fails(d, args, &[], 2);
        assert!(
            err.contains("belongs to nobody") && err.contains("runuser -u nobody"),
            "{err}"
        );
    }
    assert_eq!(names(&data), before);
    std::os::unix::fs::chown(&data, Some(0), Some(0)).unwrap();
    ok(d, &["key", "list", "--data-dir", &data_s], &[]);
}

/// `serve --check` changes nothing: a database an older sikkermail left
/// (a schema this build would bring forward) is reported, not migrated;
/// one newer than this build is an error.
#[test]
fn serve_check_never_migrates_the_database() {
    let tmp = scratch("config-schema-");
    let d = tmp.path();
    let data = d.join("data");
    let data_s = data.display().to_string();
    ok(d, &["init", "--test", "--data-dir", &data_s], &[]);
    let db = data.join("sikkermail.db");
    let sql = |q: &str| {
        let o = Command::new("python3")
            .arg("-c")
            .arg(
                "import sqlite3,sys; c=sqlite3.connect(sys.argv[1]); \
                 r=c.execute(sys.argv[2]).fetchall(); c.commit(); print(r)",
            )
            .arg(&db)
            .arg(q)
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        String::from_utf8(o.stdout).unwrap()
    };
    let latest = sql("SELECT MAX(version) FROM _sqlx_migrations");
    // As an older sikkermail left it (its last migration's row gone).
    sql("DELETE FROM _sqlx_migrations WHERE version = (SELECT MAX(version) FROM _sqlx_migrations)");
    let older = sql("SELECT MAX(version) FROM _sqlx_migrations");
    assert_ne!(older, latest);
    let ports = [
        ("SIKKERMAIL_INBOUND_LISTEN", "127.0.0.1:0"),
        ("SIKKERMAIL_OUTBOUND_LISTEN", "127.0.0.1:0"),
        ("SIKKERMAIL_HTTP_LISTEN", "127.0.0.1:0"),
    ];
    let out = ok(d, &["serve", "--check", "--data-dir", &data_s], &ports);
    assert!(
        out.contains("configuration OK") && out.contains("serve brings it to"),
        "{out}"
    );
    assert_eq!(sql("SELECT MAX(version) FROM _sqlx_migrations"), older);
    // Newer than this build: an error, and still untouched.
    sql(
        "INSERT INTO _sqlx_migrations (version, description, success, checksum, execution_time) \
         VALUES (9999, 'from the future', 1, x'00', 0)",
    );
    let err = fails(d, &["serve", "--check", "--data-dir", &data_s], &ports, 2);
    assert!(err.contains("schema 9999"), "{err}");
    assert_eq!(
        sql("SELECT MAX(version) FROM _sqlx_migrations"),
        "[(9999,)]\n"
    );
}
