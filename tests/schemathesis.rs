//! The admin API against its own OpenAPI document: schemathesis generates
//! requests for every documented operation from `/api/v1/openapi.json` and
//! sends them to a real `sikkermail serve`, logged in as an organisation
//! administrator of an organisation with some users, an outside party's
//! certificate and an organisation certificate. Every answer must be a 2xx
//! or a documented 4xx (no 5xx) whose status, content type, headers and
//! body match the document; secured operations must refuse requests
//! without the token; undocumented methods must get 405 with `Allow`.
//!
//! Schemathesis (Python, `pip install schemathesis==4.32.5`) is found as
//! `schemathesis`, `st` or `python3 -m schemathesis.cli`; without it the
//! test skips loudly, or fails when SIKKERMAIL_REQUIRE_PEERS=1.

#![allow(clippy::unwrap_used)]

mod common;
mod serve;
mod site;

use std::fs;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::peers_required;
use openssl::asn1::{Asn1Integer, Asn1Time};
use openssl::bn::BigNum;
use openssl::ec::{EcGroup, EcKey};
use openssl::hash::MessageDigest;
use openssl::nid::Nid;
use openssl::pkey::PKey;
use openssl::x509::extension::SubjectAlternativeName;
use openssl::x509::{X509Builder, X509NameBuilder};
use serve::{Serve, bin};

/// Test cases per operation and phase (schemathesis' default is 100): the
/// whole run takes about a minute on two busy cores.
const MAX_EXAMPLES: &str = "60";

/// The checks: no 5xx; every response conforms to the document (its
/// status is documented for the operation, and its content type, headers
/// and body match); secured operations refuse requests without
/// credentials (`ignored_auth`); a method the document does not list for a
/// path gets 405 with an `Allow` header naming the listed ones.
const CHECKS: &str = "not_a_server_error,status_code_conformance,content_type_conformance,\
                      response_headers_conformance,response_schema_conformance,ignored_auth,\
                      unsupported_method,allow_header_conformance";

/// The organisation administrator the run logs in as.
const ADMIN: &str = "st-admin";
const PASSWORD: &str = "schemathesis-kodeord-1";

/// The schemathesis command, when installed (version 4: the flags and the
/// configuration file below are version 4's).
fn schemathesis() -> Option<Vec<String>> {
    let candidates: [&[&str]; 3] = [
        &["schemathesis"],
        &["st"],
        &["python3", "-m", "schemathesis.cli"],
    ];
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
        // "schemathesis, version 4.32.5" ("python -m schemathesis.cli, ...").
        let version = String::from_utf8_lossy(&out.stdout).trim().to_string();
        // `st` may be another program (the suckless terminal).
        if !out.status.success() || !version.contains("schemathesis") {
            continue;
        }
        if version.contains(", version 4.") {
            return Some(cmd.iter().map(|s| s.to_string()).collect());
        }
        seen.push(format!("`{}`: {version}", cmd.join(" ")));
    }
    let why = if seen.is_empty() {
        "schemathesis is not installed (pip install schemathesis==4.32.5)".to_string()
    } else {
        format!("schemathesis 4 is needed, found {}", seen.join(", "))
    };
    if peers_required() {
        panic!("{why} and SIKKERMAIL_REQUIRE_PEERS=1");
    }
    eprintln!(
        "!!! SKIPPING the schemathesis test: {why} (set SIKKERMAIL_REQUIRE_PEERS=1 to fail instead)"
    );
    None
}

/// Runs the binary; panics unless it succeeds.
fn run_ok(c: &mut Command) {
    let out = c.output().unwrap();
    assert!(
        out.status.success(),
        "{c:?}: {}\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// An outside party's certificate (self-signed, P-256, with its e-mail
/// address in subjectAltName), PEM.
fn partner_certificate() -> Vec<u8> {
    let key = PKey::from_ec_key(
        EcKey::generate(&EcGroup::from_curve_name(Nid::X9_62_PRIME256V1).unwrap()).unwrap(),
    )
    .unwrap();
    let mut name = X509NameBuilder::new().unwrap();
    name.append_entry_by_nid(Nid::COMMONNAME, "Partner Test")
        .unwrap();
    let name = name.build();
    let mut b = X509Builder::new().unwrap();
    b.set_version(2).unwrap();
    b.set_serial_number(&Asn1Integer::from_bn(&BigNum::from_u32(7).unwrap()).unwrap())
        .unwrap();
    b.set_subject_name(&name).unwrap();
    b.set_issuer_name(&name).unwrap();
    b.set_pubkey(&key).unwrap();
    b.set_not_before(&Asn1Time::days_from_now(0).unwrap())
        .unwrap();
    b.set_not_after(&Asn1Time::days_from_now(365).unwrap())
        .unwrap();
    let san = SubjectAlternativeName::new()
        .email("partner@example.test")
        .build(&b.x509v3_context(None, None))
        .unwrap();
    b.append_extension(san).unwrap();
    b.sign(&key, MessageDigest::sha256()).unwrap();
    b.build().to_pem().unwrap()
}

impl Serve {
    /// One request (`body` with its content type); (status, body).
    fn request(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: Option<(&str, &[u8])>,
    ) -> (u16, String) {
        let mut s = TcpStream::connect(self.http).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
        let mut head = format!("{method} {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n");
        if let Some(t) = token {
            head.push_str(&format!("Authorization: Bearer {t}\r\n"));
        }
        let (ctype, bytes) = body.unwrap_or(("", b""));
        if !ctype.is_empty() {
            head.push_str(&format!("Content-Type: {ctype}\r\n"));
        }
        head.push_str(&format!("Content-Length: {}\r\n\r\n", bytes.len()));
        s.write_all(head.as_bytes()).unwrap();
        s.write_all(bytes).unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).unwrap();
        let code = out[9..12].parse().unwrap();
        let body = out.split_once("\r\n\r\n").unwrap().1.to_string();
        (code, body)
    }

    /// A JSON request that must answer `want`; the body.
    fn json(&self, method: &str, path: &str, token: Option<&str>, json: &str, want: u16) -> String {
        let (st, body) = self.request(
            method,
            path,
            token,
            Some(("application/json", json.as_bytes())),
        );
        assert_eq!(st, want, "{method} {path} {json}: {body}");
        body
    }

    /// Logs the administrator in; the session token.
    fn login(&self) -> String {
        let body = self.json(
            "POST",
            "/api/v1/login",
            None,
            &format!("{{\"name\":\"{ADMIN}\",\"password\":\"{PASSWORD}\"}}"),
            200,
        );
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
        let (st, body) = self.request("GET", "/api/v1/me", Some(token), None);
        assert_eq!(st, 200, "GET /api/v1/me with the token: {body}");
        assert!(body.contains(&format!("\"name\":\"{ADMIN}\"")), "{body}");
        assert!(body.contains("\"role\":\"org-admin\""), "{body}");
        let (st, body) = self.request("GET", "/api/v1/me", None, None);
        assert_eq!(st, 401, "GET /api/v1/me without a token: {body}");
    }

    /// Something for the generated requests to find: users in several
    /// states (ready, awaiting activation with and without a code, missing
    /// a birth date, blocked, asking for access), an outside party's
    /// certificate and an organisation certificate.
    fn seed(&self, token: &str) {
        let t = Some(token);
        self.json(
            "PUT",
            "/api/v1/settings",
            t,
            "{\"allow_user_certificates\":true,\"allow_private_mitid\":true,\
             \"allow_access_requests\":true,\"shared_mailboxes\":[\"post@schemathesis.test\"]}",
            200,
        );
        let csv = "Navn;E-mail;RID;CPR;Fødselsdato;Rettigheder\r\n\
                   Anne Andersen;anne@schemathesis.test;11111111;0101701234;;Sygemelding\r\n\
                   Bent Bøgh;bent@schemathesis.test;22222222;;1970-05-01;\r\n\
                   Carl Clausen;carl@schemathesis.test;33333333;;;\r\n\
                   Dorte Dam;dorte@schemathesis.test;;;03.02.1980;Barsel,Løn\r\n\
                   Eva Ek;eva@schemathesis.test;;;1990-13-01;\r\n";
        let (st, body) = self.request(
            "POST",
            "/api/v1/users/import",
            t,
            Some(("text/csv", csv.as_bytes())),
        );
        assert_eq!(st, 200, "import: {body}");
        assert_eq!(body.matches("\"status_label\"").count(), 4, "{body}");
        assert!(body.contains("\"line\":6"), "Eva's bad date: {body}");
        let body = self.json("GET", "/api/v1/users", t, "", 200);
        let id = |email: &str| -> String {
            let at = body
                .find(email)
                .unwrap_or_else(|| panic!("{email} in {body}"));
            let obj = body[..at].rsplit_once('{').unwrap().1.to_string() + &body[at..];
            let rest = obj.split_once("\"id\":").unwrap().1;
            rest[..rest.find(|c: char| !c.is_ascii_digit()).unwrap()].to_string()
        };
        let (anne, bent, dorte) = (id("anne@"), id("bent@"), id("dorte@"));
        self.json(
            "POST",
            "/api/v1/users/activate",
            t,
            &format!("{{\"users\":[{anne},{bent}],\"ident_means\":\"mitid-app\"}}"),
            200,
        );
        self.json("POST", &format!("/api/v1/users/{dorte}/block"), t, "", 200);
        let me = self.json("GET", "/api/v1/me", t, "", 200);
        let org = me.split_once("\"org\":").unwrap().1;
        let org = &org[..org.find(|c: char| !c.is_ascii_digit()).unwrap()];
        self.json(
            "POST",
            "/api/v1/access-requests",
            None,
            &format!(
                "{{\"org\":{org},\"name\":\"Finn Fisker\",\"email\":\"finn@schemathesis.test\"}}"
            ),
            201,
        );
        let pem = partner_certificate();
        let (st, body) = self.request(
            "POST",
            "/api/v1/recipients/import",
            t,
            Some(("application/x-pem-file", &pem)),
        );
        assert_eq!(st, 201, "recipients import: {body}");
        self.json(
            "POST",
            "/api/v1/organisation-certificates",
            t,
            "{\"name\":\"Schemathesis Post\",\"email\":\"post@schemathesis.test\"}",
            201,
        );
    }
}

/// Runs schemathesis in `dir` (it writes `.hypothesis/` and
/// `.schemathesis/` into its working directory) as the holder of `token`;
/// (success, output).
fn run_schemathesis(
    st: &[String],
    dir: &Path,
    url: &str,
    token: &str,
    extra: &[&str],
) -> (bool, String) {
    fs::create_dir_all(dir).unwrap();
    // The token comes from the environment (not the command line). With
    // `missing_auth` in `fail-on`, an operation whose every request was
    // refused with 401/403 fails the run: a wrong or expired token would
    // otherwise pass with a warning. The other warnings named fail the run
    // too: they mean parts of the document were not tested (no
    // serializer or deserializer for a media type, a `$ref` that does not
    // resolve, an operation answering 405) or the filters are stale.
    fs::write(
        dir.join("schemathesis.toml"),
        "headers = { Authorization = \"Bearer ${ST_SIKKERMAIL_TOKEN}\" }\n\
         [warnings]\n\
         fail-on = [\"missing_auth\", \"missing_deserializer\", \"unresolvable_reference\", \
         \"base_url_mismatch\", \"method_not_allowed\", \"unmatched_filter\"]\n",
    )
    .unwrap();
    let hooks = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/schemathesis/hooks.py");
    let t0 = Instant::now();
    let out = Command::new(&st[0])
        .args(&st[1..])
        .arg("run")
        .arg(url)
        .args(["--checks", CHECKS])
        .args(["--max-examples", MAX_EXAMPLES])
        .args(["--seed", "1", "--generation-database", "none"])
        .args([
            "--continue-on-failure",
            "--no-color",
            "--wait-for-schema",
            "15",
        ])
        .args(["--request-timeout", "60", "--workers", "1"])
        .args(["--report", "junit", "--report-dir", "report"])
        .args(extra)
        .env("ST_SIKKERMAIL_TOKEN", token)
        .env("SCHEMATHESIS_HOOKS", &hooks)
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
        "schemathesis {}: {} in {:.1?}",
        extra.join(" "),
        out.status,
        t0.elapsed()
    );
    (out.status.success(), text)
}

#[test]
fn admin_api_conforms_to_its_openapi_document() {
    let Some(st) = schemathesis() else { return };
    let t0 = Instant::now();
    // Kept when the test fails (serve's log, schemathesis' JUnit report).
    let tmp = tempfile::Builder::new()
        .prefix("schemathesis-")
        .tempdir_in(env!("CARGO_TARGET_TMPDIR"))
        .unwrap();
    let dir = tmp.path().to_path_buf();
    let data = dir.join("data");

    // 1. The installation and its organisation administrator.
    run_ok(bin().arg("init").arg("--data-dir").arg(&data).args([
        "--org-name",
        "Schemathesis ApS",
        "--cvr",
        "12345678",
    ]));
    run_ok(
        bin()
            .args(["admin", "create", "--data-dir"])
            .arg(&data)
            .args(["--role", "org-admin", "--password-env", "ST_ADMIN_PASSWORD"])
            .arg(ADMIN)
            .env("ST_ADMIN_PASSWORD", PASSWORD),
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
             [http]\nlisten = \"127.0.0.1:0\"\n\
             [admin]\napplications = true\n",
            data.display()
        ),
    )
    .unwrap();
    let serve = Serve::with_config(&cfg, &dir.join("serve.log"));
    let url = format!("http://{}/api/v1/openapi.json", serve.http);

    // 3. Two sessions, both taken before schemathesis makes the login rate
    // limit block this address: one for everything but logout, one for
    // logout.
    let token = serve.login();
    serve.assert_logged_in(&token);
    let logout_token = serve.login();
    serve.assert_logged_in(&logout_token);
    serve.seed(&token);

    // 4. Every operation but logout, which would end the session the rest
    // runs with (it gets its own run below).
    let mut failures = Vec::new();
    let (ok, out) = run_schemathesis(
        &st,
        &dir.join("st-all"),
        &url,
        &token,
        &["--exclude-path", "/api/v1/logout"],
    );
    if !ok {
        failures.push(format!("schemathesis (all but logout):\n{out}"));
    }
    // Nothing the run did ended the session.
    serve.assert_logged_in(&token);

    // 5. Logout with the second session: the first request ends it (204),
    // the rest are refused (401).
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
    let (code, body) = serve.request("GET", "/api/v1/me", Some(&logout_token), None);
    assert_eq!(code, 401, "the session logged out still works: {body}");
    serve.assert_logged_in(&token);

    let logs = serve.logs();
    serve.stop();
    if !failures.is_empty() || logs.contains("panicked") {
        let kept = tmp.keep();
        let tail: Vec<&str> = logs.lines().rev().take(40).collect();
        panic!(
            "{}\n--- the end of serve's log ({}) ---\n{}",
            failures.join("\n"),
            kept.join("serve.log").display(),
            tail.into_iter().rev().collect::<Vec<_>>().join("\n")
        );
    }
    eprintln!(
        "{out}\n{out2}\nschemathesis test: {:.1?} in all",
        t0.elapsed()
    );
}
