//! The admin API against its own OpenAPI document: schemathesis generates
//! requests for every documented operation from `/api/v1/openapi.json` and
//! sends them to a real `sikkermail serve`, logged in as an organisation
//! administrator. Every answer must be a 2xx or a documented 4xx (no 5xx)
//! whose status, content type, headers and body match the document.
//!
//! Schemathesis (Python, `pip install schemathesis==4.32.5`) is found as
//! `schemathesis`, `st` or `python3 -m schemathesis`; without it the test
//! skips loudly, or fails when SIKKERMAIL_REQUIRE_PEERS=1.

#![allow(clippy::unwrap_used)]

mod common;

use std::fs;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::Receiver;
use std::time::{Duration, Instant};

use common::peers_required;

/// Test cases per operation and phase (schemathesis' default is 100). With
/// 40 operations this keeps the whole test well under three minutes on two
/// busy cores; it found each bug reported so far within this budget.
const MAX_EXAMPLES: &str = "60";

/// The checks: no 5xx, and every response conforms to the document
/// (status documented for the operation, content type, headers, body
/// schema); secured operations refuse requests without the token
/// (`ignored_auth`); an undocumented method gets 405 with `Allow`.
const CHECKS: &str = "not_a_server_error,status_code_conformance,content_type_conformance,\
                      response_headers_conformance,response_schema_conformance,ignored_auth,\
                      unsupported_method,allow_header_conformance";

/// The organisation administrator the run logs in as.
const ADMIN: &str = "st-admin";
const PASSWORD: &str = "schemathesis-kodeord-1";

/// The schemathesis command, when installed (version 4: the flags and the
/// configuration file below are version 4's).
fn schemathesis() -> Option<Vec<String>> {
    let candidates: [&[&str]; 3] = [&["schemathesis"], &["st"], &["python3", "-m", "schemathesis"]];
    let mut seen = Vec::new();
    for cmd in candidates {
        let Ok(out) = Command::new(cmd[0])
            .args(&cmd[1..])
            .arg("--version")
            .stdin(Stdio::null())
            .output()
        else {
            continue;
        };
        let version = String::from_utf8_lossy(&out.stdout).trim().to_string();
        // `st` may be another program (the suckless terminal).
        if !out.status.success() || !version.starts_with("schemathesis") {
            continue;
        }
        if version.starts_with("schemathesis, version 4.") {
            return Some(cmd.iter().map(|s| s.to_string()).collect());
        }
        seen.push(format!("{}: {version}", cmd.join(" ")));
    }
    let why = if seen.is_empty() {
        "schemathesis is not installed (pip install schemathesis==4.32.5)".to_string()
    } else {
        format!("schemathesis 4 is needed, found {}", seen.join(", "))
    };
    if peers_required() {
        panic!("{why} and SIKKERMAIL_REQUIRE_PEERS=1");
    }
    eprintln!("!!! SKIPPING the schemathesis test: {why} (set SIKKERMAIL_REQUIRE_PEERS=1 to fail instead)");
    None
}

/// The binary, without the `SIKKERMAIL_*` settings of the environment.
fn bin() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_sikkermail"));
    for (k, _) in std::env::vars() {
        if k.starts_with("SIKKERMAIL_") && k != "SIKKERMAIL_REQUIRE_PEERS" {
            c.env_remove(k);
        }
    }
    c.stdin(Stdio::null());
    c
}

/// Runs the binary; panics unless it succeeds.
fn run_ok(c: &mut Command) -> String {
    let out = c.output().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{c:?}: {}\n{text}", out.status);
    text
}

/// A running `sikkermail serve`.
struct Serve {
    child: Child,
    http: SocketAddr,
    log: PathBuf,
    _stdout: Receiver<String>,
}

impl Serve {
    /// Starts `serve --config cfg` and waits for `ready`.
    fn start(cfg: &Path, log: &Path) -> Serve {
        let err = fs::File::create(log).unwrap();
        let mut child = bin()
            .arg("serve")
            .arg("--config")
            .arg(cfg)
            .stdout(Stdio::piped())
            .stderr(Stdio::from(err))
            .spawn()
            .unwrap();
        let out = child.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut lines = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left) {
                Ok(l) if l == "ready" => break,
                Ok(l) => lines.push(l),
                Err(_) => panic!(
                    "serve did not get ready: {lines:?}\n{}",
                    fs::read_to_string(log).unwrap_or_default()
                ),
            }
        }
        // "  HTTP           http://127.0.0.1:PORT/metrics  /healthz"
        let http = lines
            .iter()
            .find(|l| l.trim_start().starts_with("HTTP"))
            .and_then(|l| l.split_whitespace().find(|w| w.starts_with("http://")))
            .unwrap_or_else(|| panic!("no HTTP line in {lines:?}"))
            .trim_start_matches("http://")
            .trim_end_matches("/metrics")
            .parse()
            .unwrap();
        Serve {
            child,
            http,
            log: log.to_path_buf(),
            _stdout: rx,
        }
    }

    fn logs(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// One request; (status, body).
    fn request(&self, method: &str, path: &str, token: Option<&str>, json: &str) -> (u16, String) {
        let mut s = TcpStream::connect(self.http).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        let auth = token
            .map(|t| format!("Authorization: Bearer {t}\r\n"))
            .unwrap_or_default();
        let body = if json.is_empty() {
            String::new()
        } else {
            format!("Content-Type: application/json\r\n")
        };
        write!(
            s,
            "{method} {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n{auth}{body}Content-Length: {}\r\n\r\n{json}",
            json.len()
        )
        .unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).unwrap();
        let code = out[9..12].parse().unwrap();
        let body = out.split_once("\r\n\r\n").unwrap().1.to_string();
        (code, body)
    }

    /// Logs the administrator in; the session token.
    fn login(&self) -> String {
        let (st, body) = self.request(
            "POST",
            "/api/v1/login",
            None,
            &format!("{{\"name\":\"{ADMIN}\",\"password\":\"{PASSWORD}\"}}"),
        );
        assert_eq!(st, 200, "login: {body}");
        let token = body
            .split_once("\"token\":\"")
            .and_then(|(_, rest)| rest.split_once('"'))
            .map(|(t, _)| t.to_string())
            .unwrap_or_else(|| panic!("no token in {body}"));
        assert!(token.len() >= 40, "{body}");
        token
    }

    /// The token is live: GET /api/v1/me answers 200 with it (and 401
    /// without), so a wrong token cannot make the run pass unnoticed.
    fn assert_logged_in(&self, token: &str) {
        let (st, body) = self.request("GET", "/api/v1/me", Some(token), "");
        assert_eq!(st, 200, "GET /api/v1/me with the token: {body}");
        assert!(body.contains(&format!("\"name\":\"{ADMIN}\"")), "{body}");
        assert!(body.contains("\"role\":\"org-admin\""), "{body}");
        let (st, body) = self.request("GET", "/api/v1/me", None, "");
        assert_eq!(st, 401, "GET /api/v1/me without a token: {body}");
    }

    /// SIGTERM; must exit 0 within 10 seconds.
    fn stop(mut self) {
        let pid = self.child.id() as i32;
        // SAFETY: signalling our own child.
        unsafe { libc::kill(pid, libc::SIGTERM) };
        let t0 = Instant::now();
        loop {
            if let Some(st) = self.child.try_wait().unwrap() {
                assert!(st.success(), "serve exited {st}: {}", self.logs());
                break;
            }
            assert!(
                t0.elapsed() < Duration::from_secs(10),
                "serve did not stop within 10 s of SIGTERM"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Runs schemathesis in `dir` (it writes `.hypothesis/` and
/// `.schemathesis/` into its working directory) with `token`; (success,
/// output).
fn run_schemathesis(
    st: &[String],
    dir: &Path,
    url: &str,
    token: &str,
    extra: &[&str],
) -> (bool, String) {
    fs::create_dir_all(dir).unwrap();
    // The token comes from the environment, so it is not on the command
    // line; `missing_auth` fails the run when every request of an
    // operation was refused with 401/403 (a wrong or expired token would
    // otherwise pass with a mere warning).
    fs::write(
        dir.join("schemathesis.toml"),
        "headers = { Authorization = \"Bearer ${ST_SIKKERMAIL_TOKEN}\" }\n\
         [warnings]\n\
         fail-on = [\"missing_auth\", \"missing_deserializer\", \"unresolvable_reference\", \
                    \"base_url_mismatch\", \"method_not_allowed\", \"unmatched_filter\"]\n",
    )
    .unwrap();
    let t0 = Instant::now();
    let out = Command::new(&st[0])
        .args(&st[1..])
        .arg("run")
        .arg(url)
        .args(["--checks", CHECKS])
        .args(["--max-examples", MAX_EXAMPLES])
        .args(["--seed", "1", "--generation-database", "none"])
        .args(["--continue-on-failure", "--no-color", "--wait-for-schema", "15"])
        .args(["--request-timeout", "30", "--workers", "1"])
        .args(["--report", "junit", "--report-dir", "report"])
        .args(extra)
        .env("ST_SIKKERMAIL_TOKEN", token)
        .env("NO_COLOR", "1")
        .current_dir(dir)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    eprintln!(
        "schemathesis {} took {:.1?}, {}",
        extra.join(" "),
        t0.elapsed(),
        out.status
    );
    (out.status.success(), text)
}

#[test]
fn admin_api_conforms_to_its_openapi_document() {
    let Some(st) = schemathesis() else { return };
    let t0 = Instant::now();
    let tmp = tempfile::Builder::new()
        .prefix("schemathesis-")
        .tempdir_in(env!("CARGO_TARGET_TMPDIR"))
        .unwrap();
    let dir = tmp.path();
    let data = dir.join("data");

    // 1. The installation and its organisation administrator.
    run_ok(
        bin()
            .arg("init")
            .arg("--data-dir")
            .arg(&data)
            .args(["--org-name", "Schemathesis ApS", "--cvr", "12345678"]),
    );
    run_ok(
        bin()
            .args(["admin", "create", "--data-dir"])
            .arg(&data)
            .args(["--name", ADMIN, "--role", "org-admin"])
            .env("SIKKERMAIL_ADMIN_PASSWORD", PASSWORD),
    );

    // 2. serve, every listener on a port the kernel picks; no relay (the
    // e-mails the API sends wait in the queue).
    let cfg = dir.join("sikkermail.toml");
    fs::write(
        &cfg,
        format!(
            "data_dir = \"{}\"\nhostname = \"gw.test\"\n\
             [inbound]\nlisten = \"127.0.0.1:0\"\n\
             [outbound]\nlisten = \"127.0.0.1:0\"\n\
             [http]\nlisten = \"127.0.0.1:0\"\n",
            data.display()
        ),
    )
    .unwrap();
    let serve = Serve::start(&cfg, &dir.join("serve.log"));
    let base = format!("http://{}", serve.http);
    let url = format!("{base}/api/v1/openapi.json");

    // 3. Two sessions: one for everything but logout, one for logout.
    let token = serve.login();
    serve.assert_logged_in(&token);
    let logout_token = serve.login();
    serve.assert_logged_in(&logout_token);

    // 4. Every operation but logout (which would end the session the rest
    // runs with).
    let (ok, out) = run_schemathesis(
        &st,
        &dir.join("st-all"),
        &url,
        &token,
        &["--exclude-path", "/api/v1/logout"],
    );
    let mut failures = Vec::new();
    if !ok {
        failures.push(format!("schemathesis (all but logout):\n{out}"));
    }
    // The session survived the run (nothing it did logged it out).
    serve.assert_logged_in(&token);

    // 5. Logout on its own, with the second session: the first request
    // ends it (204), the rest are refused (401).
    let (ok, out2) = run_schemathesis(
        &st,
        &dir.join("st-logout"),
        &url,
        &logout_token,
        &["--include-path", "/api/v1/logout"],
    );
    if !ok {
        failures.push(format!("schemathesis (logout):\n{out2}"));
    }
    let (code, body) = serve.request("GET", "/api/v1/me", Some(&logout_token), "");
    assert_eq!(code, 401, "the logged-out session still works: {body}");
    serve.assert_logged_in(&token);

    let logs = serve.logs();
    serve.stop();
    assert!(
        failures.is_empty(),
        "{}\n--- serve's log (tail) ---\n{}",
        failures.join("\n"),
        logs.lines()
            .rev()
            .take(60)
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
            .collect::<Vec<_>>()
            .join("\n")
    );
    assert!(!logs.contains("panicked"), "serve panicked:\n{logs}");
    eprintln!("{out}\n{out2}\nschemathesis test took {:.1?}", t0.elapsed());
}
