//! The whole employee and administrator flow in headless Chromium, against
//! a real `sikkermail serve` whose e-mails go through the gateway (signed)
//! to Postfix's smtp-sink, which dumps each one to a file.
//!
//! The browser is driven by `tests/browser/flow.mjs` (Node.js and
//! playwright-core, pinned in `tests/browser/package-lock.json`; install
//! with `npm ci` there) with Debian's `/usr/bin/chromium`. The script only
//! drives: it enters the data this test writes into a plan, follows the
//! links it finds in the e-mails, and prints what it saw as
//! `RESULT key<TAB>value` lines, which this test asserts on. The .p12 files
//! it downloads are checked here with the OpenSSL command line.
//!
//! Skips loudly without smtp-sink, node, openssl, /usr/bin/chromium or
//! tests/browser/node_modules; fails instead when SIKKERMAIL_REQUIRE_PEERS=1.

#![allow(clippy::unwrap_used)]

mod common;
mod serve;
mod site;

use common::Sink;
use serve::{Serve, bin};
use std::fs;
use std::io::Read;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

fn peers_required() -> bool {
    std::env::var("SIKKERMAIL_REQUIRE_PEERS").as_deref() == Ok("1")
}

/// `ok`, or a loud skip (a failure when SIKKERMAIL_REQUIRE_PEERS=1).
fn present(ok: bool, what: &str) -> bool {
    if !ok {
        if peers_required() {
            panic!("{what} is missing and SIKKERMAIL_REQUIRE_PEERS=1");
        }
        eprintln!(
            "!!! SKIPPING full_flow_in_chromium: {what} is missing (set SIKKERMAIL_REQUIRE_PEERS=1 to fail instead)"
        );
    }
    ok
}

/// Is `tool` on the PATH?
fn peer(tool: &str) -> bool {
    let found = Command::new("sh")
        .arg("-c")
        .arg(format!("command -v {tool}"))
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    present(found, &format!("peer `{tool}`"))
}

/// Runs the binary; panics with its output unless it succeeds.
fn sikkermail(args: &[&str]) -> String {
    let o = bin().args(args).output().unwrap();
    assert!(
        o.status.success(),
        "sikkermail {args:?}: {}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// What flow.mjs printed: `RESULT key<TAB>value` lines, in order.
struct Results(Vec<(String, String)>);

impl Results {
    fn parse(stdout: &str) -> Results {
        Results(
            stdout
                .lines()
                .filter_map(|l| l.strip_prefix("RESULT "))
                .map(|l| {
                    let (k, v) = l.split_once('\t').unwrap_or((l, ""));
                    (k.to_string(), v.to_string())
                })
                .collect(),
        )
    }

    fn get(&self, key: &str) -> &str {
        self.0
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
            .unwrap_or_else(|| panic!("flow.mjs reported no {key}"))
    }

    fn all(&self, key: &str) -> Vec<&str> {
        self.0
            .iter()
            .filter(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
            .collect()
    }
}

/// A JSON string literal.
fn js(s: &str) -> String {
    let mut o = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => o.push_str("\\\""),
            '\\' => o.push_str("\\\\"),
            c if (c as u32) < 0x20 => o.push_str(&format!("\\u{:04x}", c as u32)),
            c => o.push(c),
        }
    }
    o.push('"');
    o
}

/// Runs node with `args` in `dir`, killed after `limit`.
fn node(dir: &Path, args: &[&str], limit: Duration) -> (Output, Duration) {
    let t0 = Instant::now();
    let mut child = Command::new("node")
        .args(args)
        .current_dir(dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = child.stdout.take().unwrap();
    let mut err = child.stderr.take().unwrap();
    let o = std::thread::spawn(move || {
        let mut b = Vec::new();
        let _ = out.read_to_end(&mut b);
        b
    });
    let e = std::thread::spawn(move || {
        let mut b = Vec::new();
        let _ = err.read_to_end(&mut b);
        b
    });
    let status = loop {
        if let Some(st) = child.try_wait().unwrap() {
            break st;
        }
        if t0.elapsed() > limit {
            let _ = child.kill();
            break child.wait().unwrap();
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let out = Output {
        status,
        stdout: o.join().unwrap(),
        stderr: e.join().unwrap(),
    };
    (out, t0.elapsed())
}

/// Runs openssl with `args`: (success, stdout + stderr).
fn openssl(args: &[&str]) -> (bool, String) {
    let o = Command::new("openssl").args(args).output().unwrap();
    (
        o.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        ),
    )
}

/// One employee of the CSV.
struct Employee {
    name: &'static str,
    email: &'static str,
    /// Activation needs the 8-digit code (every user: a CPR number alone
    /// proves nothing until an identity provider checks it).
    needs_code: bool,
    password: &'static str,
    /// The .p12 flavour to collect.
    flavour: &'static str,
}

const EMPLOYEES: [Employee; 2] = [
    Employee {
        name: "Anne Andersen",
        email: "anne@kanal-advokater.dk",
        needs_code: true,
        password: "Annes-kodeord-2024",
        flavour: "modern",
    },
    Employee {
        name: "Bent Bøgh",
        email: "bent@kanal-advokater.dk",
        needs_code: true,
        password: "Bents-kodeord-2024",
        flavour: "compatible",
    },
];

#[test]
fn full_flow_in_chromium() {
    let browser_dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/browser");
    if !(peer("smtp-sink")
        && peer("node")
        && peer("openssl")
        && present(Path::new("/usr/bin/chromium").exists(), "/usr/bin/chromium")
        && present(
            browser_dir.join("node_modules/playwright-core").is_dir(),
            "tests/browser/node_modules (run `npm ci` in tests/browser)",
        ))
    {
        return;
    }
    let t0 = Instant::now();
    // Kept on failure (screenshots, mails, logs); removed on success.
    let tmp = tempfile::Builder::new()
        .prefix("browser-")
        .tempdir_in(env!("CARGO_TARGET_TMPDIR"))
        .unwrap()
        .keep();
    let data = tmp.join("data");
    let data_s = data.display().to_string();
    let out = tmp.join("out");
    fs::create_dir_all(&out).unwrap();

    // 1. The installation's own organisation with a certificate for the
    // sender of the e-mails (the gateway signs them), the sink, serve.
    sikkermail(&[
        "init",
        "--data-dir",
        &data_s,
        "--org-name",
        "Advokatfirma Test",
        "--cvr",
        "12345678",
    ]);
    sikkermail(&[
        "cert",
        "issue",
        "--data-dir",
        &data_s,
        "--kind",
        "organisation",
        "--name",
        "Firma Post",
        "--email",
        "post@firma.dk",
    ]);
    let sink = Sink::start(&tmp.join("sink"));
    let config = tmp.join("sikkermail.toml");
    fs::write(
        &config,
        format!(
            "data_dir = {}\nhostname = \"gw.test\"\n\
             [inbound]\nlisten = \"127.0.0.1:0\"\n\
             [outbound]\nlisten = \"127.0.0.1:0\"\nrelay = \"127.0.0.1:{}\"\n\
             [http]\nlisten = \"127.0.0.1:0\"\n\
             [queue]\nretry_base = \"1s\"\n\
             [admin]\nmail_from = \"post@firma.dk\"\napplications = true\n",
            js(&data_s),
            sink.port
        ),
    )
    .unwrap();
    let serve = Serve::with_config(&config, &tmp.join("serve.log"));
    let bootstrap = serve.bootstrap_link();
    let base = serve.base();
    assert!(
        bootstrap.starts_with(&format!("{base}/bootstrap/")),
        "{}",
        bootstrap
    );

    // The plan flow.mjs follows: the data entered, owned here.
    let csv = tmp.join("brugere.csv");
    fs::write(
        &csv,
        "Navn;E-mail;RID;CPR;Fødselsdato;Rettigheder\r\n\
         Anne Andersen;anne@kanal-advokater.dk;11111111;0101701234;;Sygemelding\r\n\
         Bent Bøgh;bent@kanal-advokater.dk;22222222;;1970-05-01;\r\n\
         Carl Clausen;carl@kanal-advokater.dk;33333333;;;\r\n\
         Dorte Dam;dorte-ved-kanal-advokater.dk;44444444;;1980-02-03;\r\n",
    )
    .unwrap();
    let employees: Vec<String> = EMPLOYEES
        .iter()
        .map(|e| {
            format!(
                "{{\"name\":{},\"email\":{},\"needs_code\":{},\"password\":{},\"flavour\":{}}}",
                js(e.name),
                js(e.email),
                e.needs_code,
                js(e.password),
                js(e.flavour)
            )
        })
        .collect();
    let plan = format!(
        "{{\"bootstrap_url\":{},\
         \"first_admin\":{{\"name\":\"driftsadmin\",\"password\":\"Drift-Admin-Kode-1\"}},\
         \"org\":{{\"name\":\"Kanal Advokater\",\"cvr\":\"87654321\",\
         \"representative_name\":\"Rikke Rasmussen\",\"representative_email\":\"rikke@kanal-advokater.dk\",\
         \"admin_name\":\"kanal-admin\",\"admin_password\":\"Kanal-Admin-Kode-2\"}},\
         \"operator\":{{\"bin\":{},\"data_dir\":{},\"config\":{}}},\
         \"csv_file\":{},\"means\":\"mitid-app\",\"employees\":[{}]}}",
        js(&bootstrap),
        js(env!("CARGO_BIN_EXE_sikkermail")),
        js(&data_s),
        js(&config.display().to_string()),
        js(&csv.display().to_string()),
        employees.join(",")
    );
    let plan_file = tmp.join("plan.json");
    fs::write(&plan_file, plan).unwrap();

    // 2-6 in Chromium.
    let flow = browser_dir.join("flow.mjs");
    let (o, took) = node(
        &browser_dir,
        &[
            &flow.display().to_string(),
            &base,
            &sink.dir.display().to_string(),
            &out.display().to_string(),
            &plan_file.display().to_string(),
        ],
        Duration::from_secs(240),
    );
    let stdout = String::from_utf8_lossy(&o.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&o.stderr).into_owned();
    eprintln!("flow.mjs took {took:?}:\n{stdout}{stderr}");
    assert!(
        o.status.success() && stdout.contains("RESULT done\ttrue"),
        "flow.mjs failed ({}); screenshots, mails and logs kept in {}\n\
         --- stdout\n{stdout}\n--- stderr\n{stderr}\n--- serve log\n{}",
        o.status,
        tmp.display(),
        serve.logs()
    );
    let r = Results::parse(&stdout);

    // 1. Bootstrap: the first administrator; the link works once.
    assert_eq!(r.get("bootstrap.form_status"), "200");
    assert_eq!(r.get("bootstrap.status"), "200");
    assert_eq!(r.get("bootstrap.ok"), "driftsadmin");
    assert_eq!(r.get("bootstrap.again_status"), "404");

    // 2. The application, the applicant locked out until the operator
    // accepts and the representative approves from the e-mailed link (once).
    assert_eq!(r.get("apply.status"), "201");
    assert!(
        r.get("apply.ok").contains("e-mail"),
        "{}",
        r.get("apply.ok")
    );
    assert_eq!(r.get("pending.status"), "403");
    assert!(r.get("pending.url").ends_with("/admin/users"));
    assert!(
        r.get("pending.err").contains("afventer godkendelse"),
        "{}",
        r.get("pending.err")
    );
    assert!(r.get("operator.pending").contains("Kanal Advokater"));
    assert_eq!(
        r.get("mail.approval.subject"),
        "Godkend en ny organisation i sikkermail"
    );
    assert_eq!(r.get("approve.form_status"), "200");
    assert_eq!(r.get("approve.status"), "200");
    assert_eq!(r.get("approve.ok"), "Kanal Advokater (CVR 87654321)");
    assert_eq!(r.get("approve.again_status"), "404");

    // 3. Settings and the import report.
    assert_eq!(r.get("approved.users_status"), "200");
    assert_eq!(r.get("settings.status"), "200");
    assert_eq!(r.get("settings.ok"), "Gemt.");
    assert_eq!(r.get("settings.allow_user_certificates"), "true");
    assert_eq!(r.get("import.status"), "200");
    assert_eq!(r.get("import.summary"), "3 importeret, 1 afvist");
    assert_eq!(
        r.all("import.imported"),
        [
            "Anne Andersen|anne@kanal-advokater.dk|Klar til aktivering",
            "Bent Bøgh|bent@kanal-advokater.dk|Klar til aktivering",
            "Carl Clausen|carl@kanal-advokater.dk|Mangler fødselsdato",
        ]
    );
    let errors = r.all("import.error");
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert!(
        errors[0].starts_with("Linje 5|") && errors[0].contains("dorte-ved-kanal-advokater.dk"),
        "{errors:?}"
    );

    // 4. Bulk activation of the two ready users, and Bent's code.
    assert_eq!(r.all("users.row").len(), 3, "{:?}", r.all("users.row"));
    let mut ready = r.all("ready.row");
    ready.sort_unstable();
    assert_eq!(ready, [EMPLOYEES[0].email, EMPLOYEES[1].email]);
    assert_eq!(r.get("activate.status"), "200");
    assert!(
        r.get("activate.receipt")
            .starts_with("2 brugere aktiveret med · mitid-app"),
        "{}",
        r.get("activate.receipt")
    );
    let bent = EMPLOYEES[1].email;
    assert_eq!(
        r.get(&format!("user.{bent}.status_after_activation")),
        "Afventer aktivering"
    );
    let code = r.get(&format!("user.{bent}.code"));
    assert!(
        code.len() == 8 && code.bytes().all(|b| b.is_ascii_digit()),
        "activation code {code:?}"
    );

    // 5. Each employee activated from the e-mail with the code (Anne,
    // known by CPR, too); both Aktiv.
    for e in &EMPLOYEES {
        let m = e.email;
        assert_eq!(
            r.get(&format!("mail.activation-{m}.subject")),
            "Aktivér din bruger"
        );
        assert_eq!(r.get(&format!("activate.{m}.form_status")), "200");
        assert_eq!(
            r.get(&format!("activate.{m}.code_field")),
            e.needs_code.to_string(),
            "{m}: every activation asks for the code"
        );
        assert_eq!(r.get(&format!("activate.{m}.status")), "200");
        let ok = r.get(&format!("activate.{m}.ok"));
        assert!(ok.starts_with(&format!("{} er nu aktiv", e.name)), "{ok}");
        assert_eq!(r.get(&format!("user.{m}.status")), "Aktiv");
    }

    // 6-8. Certificates: ordered, collected once, opened by OpenSSL.
    for e in &EMPLOYEES {
        let m = e.email;
        assert_eq!(r.get(&format!("order.{m}.status")), "200");
        let ok = r.get(&format!("order.{m}.ok"));
        assert!(
            ok.contains("Brugercertifikat bestilt") && ok.contains("sent"),
            "{ok}"
        );
        assert_eq!(
            r.get(&format!("mail.certificate-{m}.subject")),
            "Hent dit brugercertifikat"
        );
        assert_eq!(r.get(&format!("collect.{m}.form_status")), "200");
        assert_eq!(r.get(&format!("collect.{m}.status")), "200");
        let local = m.split('@').next().unwrap();
        let suffix = if e.flavour == "compatible" {
            "-kompatibel"
        } else {
            ""
        };
        assert_eq!(
            r.get(&format!("collect.{m}.suggested")),
            format!("{local}{suffix}.p12")
        );
        let href = r.get(&format!("collect.{m}.href"));
        assert!(href.starts_with("/download/"), "{href}");
        assert_eq!(
            r.get(&format!("collect.{m}.download_url")),
            format!("{base}{href}")
        );
        assert_eq!(r.get(&format!("collect.{m}.download_again_status")), "404");
        assert_eq!(serve.http_get(href).0, 404, "the download is served once");
        assert_eq!(r.get(&format!("collect.{m}.link_again_status")), "404");
        assert_eq!(
            r.get(&format!("collect.{m}.link_again_title")),
            "Linket kan ikke bruges"
        );

        let p12 = r.get(&format!("collect.{m}.file"));
        let pw = r.get(&format!("collect.{m}.password"));
        assert_eq!(pw.len(), 23, "20 characters in groups of 5: {pw:?}");
        let pass = format!("pass:{pw}");
        let (ok, info) = openssl(&["pkcs12", "-in", p12, "-passin", &pass, "-info", "-noout"]);
        assert!(ok, "{m}: openssl pkcs12 -info: {info}");
        let algorithm = if e.flavour == "compatible" {
            "pbeWithSHA1And3-KeyTripleDES-CBC"
        } else {
            "AES-256-CBC"
        };
        assert!(info.contains(algorithm), "{m} ({}): {info}", e.flavour);
        let (ok, certs) = openssl(&["pkcs12", "-in", p12, "-passin", &pass, "-nokeys"]);
        assert!(ok, "{m}: openssl pkcs12 -nokeys: {certs}");
        let leaf = tmp.join(format!("{local}.pem"));
        let (ok, pem) = openssl(&[
            "pkcs12", "-in", p12, "-passin", &pass, "-nokeys", "-clcerts",
        ]);
        assert!(ok, "{pem}");
        fs::write(&leaf, &pem).unwrap();
        let (ok, x) = openssl(&[
            "x509",
            "-in",
            &leaf.display().to_string(),
            "-noout",
            "-subject",
            "-issuer",
            "-ext",
            "subjectAltName",
            "-nameopt",
            "utf8",
        ]);
        assert!(ok, "{x}");
        assert!(x.contains(&format!("email:{m}")), "{m}: SAN {x}");
        assert!(x.contains(&format!("CN={}", e.name)), "{m}: subject {x}");
        // Issued under the approved organisation's own CA.
        assert!(
            x.contains("O=Kanal Advokater") && x.contains("NTRDK-87654321"),
            "{m}: subject {x}"
        );
        assert!(
            x.lines()
                .any(|l| l.starts_with("issuer=") && l.contains("Kanal Advokater")),
            "{m}: issuer {x}"
        );
        let (ok, _) = openssl(&["pkcs12", "-in", p12, "-passin", &pass, "-nocerts", "-nodes"]);
        assert!(ok, "{m}: the private key opens with the shown password");
        let (ok, wrong) = openssl(&[
            "pkcs12",
            "-in",
            p12,
            "-passin",
            "pass:not-the-password",
            "-nokeys",
        ]);
        assert!(!ok, "{m}: a wrong password must fail: {wrong}");
    }

    // Every e-mail went through the gateway, signed, to the sink: the
    // approval, two activations, two certificate links.
    let mails = sink.messages();
    assert_eq!(
        mails.len(),
        5,
        "{:?}",
        mails.iter().map(|m| &m.0).collect::<Vec<_>>()
    );
    for (rcpts, msg) in &mails {
        let head = msg.split("\n\n").next().unwrap();
        assert!(
            head.contains("multipart/signed") && head.contains("pkcs7-signature"),
            "{rcpts:?} not signed:\n{head}"
        );
    }

    drop(serve);
    drop(sink);
    fs::remove_dir_all(&tmp).unwrap();
    eprintln!("full_flow_in_chromium: {:?} in all", t0.elapsed());
}
