//! `docs/deployment.md`, executed: the configuration blocks the guide shows
//! (fenced blocks tagged `file=NAME`), with its addresses, ports and paths
//! replaced by loopback ones and a temporary directory, run as a whole
//! deployment: a real Postfix as the perimeter MX, `sikkermail serve`, a
//! real Postfix as the firm's mail server with Dovecot serving its
//! Maildirs over IMAP, and `smtp-sink` as the Internet. Mail in both
//! directions, a DSN back to the sender's mailbox, and the next hop down
//! and back (`/readyz`). Recipes and traps:
//! `../shared/peers/postfix-deployment.md`, `dovecot-recipes.sh`.

#![allow(clippy::unwrap_used)]

mod common;
mod dovecot;
mod serve;
mod site;

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::{Sink, free_port, peer, sh, sh_status};
use serve::{Serve, bin};

const DOC: &str = include_str!("../docs/deployment.md");
const DOVECOT: &str = "/usr/sbin/dovecot";

/// Every fenced block tagged `file=NAME`, by name; blocks with the same
/// name are joined in order.
fn blocks(doc: &str) -> BTreeMap<String, String> {
    let mut out: BTreeMap<String, String> = BTreeMap::new();
    let mut current: Option<String> = None;
    for line in doc.lines() {
        match &current {
            None => {
                if let Some(info) = line.strip_prefix("```")
                    && let Some(name) = info
                        .split_whitespace()
                        .find_map(|w| w.strip_prefix("file="))
                {
                    current = Some(name.to_string());
                    out.entry(name.to_string()).or_default();
                }
            }
            Some(name) => {
                if line.trim_end() == "```" {
                    current = None;
                } else {
                    let b = out.get_mut(name).unwrap();
                    b.push_str(line);
                    b.push('\n');
                }
            }
        }
    }
    assert!(current.is_none(), "an unclosed block in docs/deployment.md");
    out
}

/// The guide's addresses, ports and paths, and what the test uses instead.
struct Subst(Vec<(String, String)>);

impl Subst {
    /// Replaces in order (longer patterns first); each pattern must be in
    /// the guide, so a changed guide cannot silently skip a replacement.
    fn apply(&self, text: &str) -> String {
        let mut t = text.to_string();
        for (from, to) in &self.0 {
            t = t.replace(from.as_str(), to);
        }
        for outside in [
            "10.0.0.", "192.0.2.", "udbyder", " /etc/", "\"/etc/", " /var/",
        ] {
            assert!(
                !t.contains(outside),
                "{outside:?} left after the replacements (add it to the test's table):\n{t}"
            );
        }
        t
    }

    fn check(&self) {
        for (from, _) in &self.0 {
            assert!(
                DOC.contains(from.as_str()),
                "docs/deployment.md no longer has {from:?}: update tests/deployment.rs"
            );
        }
    }
}

/// Ports the kernel had free.
struct Ports {
    mx: u16,
    gw_in: u16,
    gw_out: u16,
    http: u16,
    mail: u16,
    imap: u16,
    imaps: u16,
    sink: u16,
}

fn substitutions(t: &Path, p: &Ports) -> Subst {
    let t = t.display();
    let pairs: Vec<(&str, String)> = vec![
        ("[10.0.0.10]:2525", format!("[127.0.0.1]:{}", p.gw_in)),
        ("[10.0.0.10]:2587", format!("[127.0.0.1]:{}", p.gw_out)),
        ("10.0.0.10:2525", format!("127.0.0.1:{}", p.gw_in)),
        ("10.0.0.10:2587", format!("127.0.0.1:{}", p.gw_out)),
        ("127.0.0.1:8080", format!("127.0.0.1:{}", p.http)),
        ("192.0.2.25:25", format!("127.0.1.1:{}", p.mx)),
        ("10.0.0.5:25", format!("127.0.2.1:{}", p.mail)),
        ("10.0.0.5/32", "127.0.2.1/32".into()),
        ("10.0.0.0/24", "127.0.0.0/8".into()),
        ("listen = 10.0.0.5", "listen = 127.0.2.1".into()),
        ("port = 143", format!("port = {}", p.imap)),
        ("port = 993", format!("port = {}", p.imaps)),
        ("smtp.udbyder.dk:25", format!("127.0.0.1:{}", p.sink)),
        ("static:5000", "static:65534".into()),
        ("uid=5000 gid=5000", "uid=65534 gid=65534".into()),
        ("-o 5000 -g 5000", "-o 65534 -g 65534".into()),
        ("sudo -u sikkermail ", String::new()),
        ("/etc/sikkermail", format!("{t}/etc/sikkermail")),
        ("/var/lib/sikkermail", format!("{t}/var/lib/sikkermail")),
        ("/etc/postfix", format!("{t}/etc/postfix")),
        ("/etc/dovecot", format!("{t}/etc/dovecot")),
        ("/var/mail/vhosts", format!("{t}/var/mail/vhosts")),
    ];
    Subst(pairs.into_iter().map(|(a, b)| (a.to_string(), b)).collect())
}

/// True when every peer is there (else a loud skip, or a failure under
/// SIKKERMAIL_REQUIRE_PEERS=1).
fn peers_present() -> bool {
    let tools = [
        "postfix",
        "postconf",
        "smtp-sink",
        "swaks",
        "openssl",
        "python3",
        "curl",
        "jq",
    ];
    let mut ok = tools.iter().all(|t| peer(t));
    if !Path::new(DOVECOT).exists() {
        assert!(
            !common::peers_required(),
            "Dovecot ({DOVECOT}) is missing and SIKKERMAIL_REQUIRE_PEERS=1: apt-get install dovecot-imapd"
        );
        eprintln!(
            "!!! SKIPPING: Dovecot ({DOVECOT}) is not installed (apt-get install dovecot-imapd)"
        );
        ok = false;
    }
    // SAFETY: getuid has no preconditions.
    if ok && unsafe { libc::getuid() } != 0 {
        assert!(
            !common::peers_required(),
            "the deployment test starts Postfix and Dovecot and must run as root"
        );
        eprintln!("!!! SKIPPING: the deployment test starts Postfix and Dovecot: run it as root");
        ok = false;
    }
    ok
}

/// A Postfix instance with its own configuration directory, stopped when
/// dropped (`postfix -c DIR stop`, never by process name).
struct Postfix {
    dir: PathBuf,
    running: std::cell::Cell<bool>,
}

impl Postfix {
    /// `main.cf`: what one machine running three mail servers needs (its
    /// own directories, loopback, no DNS), then the guide's block;
    /// `master.cf`: Debian's, its `smtp inet` line replaced by the guide's.
    fn new(dir: &Path, name: &str, bind: &str, main_cf: &str, master_line: &str) -> Postfix {
        // The configuration apart from the queue: postfix-script wants
        // everything under config_directory owned by root.
        let etc = dir.join("etc");
        for sub in ["etc", "queue", "data"] {
            fs::create_dir_all(dir.join(sub)).unwrap();
        }
        let d = dir.display();
        let own = format!(
            "# test only: one of three mail servers on one machine\n\
             compatibility_level = 3.6\nconfig_directory = {d}/etc\nqueue_directory = {d}/queue\n\
             data_directory = {d}/data\nmaillog_file = {d}/maillog\nmaillog_file_prefixes = {d}/\n\
             syslog_name = postfix-{name}\ninet_interfaces = 127.0.0.1\ninet_protocols = ipv4\n\
             smtp_bind_address = {bind}\ndisable_dns_lookups = yes\nsmtp_host_lookup = native\n\
             alias_maps =\nalias_database =\n# from docs/deployment.md\n"
        );
        fs::write(etc.join("main.cf"), format!("{own}{main_cf}")).unwrap();
        let master = fs::read_to_string("/etc/postfix/master.cf").unwrap();
        let mut replaced = 0;
        let lines: Vec<String> = master
            .lines()
            .map(|l| {
                let w: Vec<&str> = l.split_whitespace().collect();
                if w.len() > 2 && w[0] == "smtp" && w[1] == "inet" {
                    replaced += 1;
                    master_line.trim().to_string()
                } else {
                    l.to_string()
                }
            })
            .collect();
        assert_eq!(replaced, 1, "no `smtp inet` line in /etc/postfix/master.cf");
        fs::write(etc.join("master.cf"), lines.join("\n") + "\n").unwrap();
        sh(
            dir,
            &format!(
                "postfix -c {d}/etc post-install create-missing >/dev/null 2>&1; chown -R postfix {d}/data"
            ),
        );
        let o = sh_status(dir, &format!("postfix -c {d}/etc check"));
        assert!(
            o.status.success() && o.stderr.is_empty(),
            "postfix check ({name}): {}",
            String::from_utf8_lossy(&o.stderr)
        );
        Postfix {
            dir: dir.to_path_buf(),
            running: std::cell::Cell::new(false),
        }
    }

    fn start(&self) {
        let d = self.dir.display();
        let o = sh_status(&self.dir, &format!("postfix -c {d}/etc start"));
        assert!(
            o.status.success(),
            "postfix start: {}{}",
            String::from_utf8_lossy(&o.stderr),
            self.log()
        );
        self.running.set(true);
    }

    fn stop(&self) {
        if !self.running.get() {
            return;
        }
        let d = self.dir.display();
        let _ = sh_status(&self.dir, &format!("postfix -c {d}/etc stop"));
        // `postfix stop` returns before the master has gone.
        let deadline = Instant::now() + Duration::from_secs(30);
        while sh_status(&self.dir, &format!("postfix -c {d}/etc status"))
            .status
            .success()
            && Instant::now() < deadline
        {
            std::thread::sleep(Duration::from_millis(100));
        }
        self.running.set(false);
    }

    fn log(&self) -> String {
        fs::read_to_string(self.dir.join("maillog")).unwrap_or_default()
    }
}

impl Drop for Postfix {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Dovecot in the foreground, stopped when dropped: SIGTERM to the master
/// and its imap processes, by PID (see dovecot-recipes.sh).
struct Dovecot {
    child: Option<Child>,
    conf: PathBuf,
    log: PathBuf,
}

impl Dovecot {
    fn start(conf: &Path, log: &Path, port: u16) -> Dovecot {
        let child = Command::new(DOVECOT)
            .arg("-F")
            .arg("-c")
            .arg(conf)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let d = Dovecot {
            child: Some(child),
            conf: conf.to_path_buf(),
            log: log.to_path_buf(),
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        while !greeting(("127.0.2.1", port), b"* OK") {
            assert!(
                Instant::now() < deadline,
                "Dovecot ({}) did not start: {}",
                d.conf.display(),
                fs::read_to_string(&d.log).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        d
    }
}

impl Drop for Dovecot {
    fn drop(&mut self) {
        if let Some(child) = self.child.take() {
            dovecot::stop_master(child);
        }
    }
}

/// Something answers on `addr` with a greeting starting with `want`.
fn greeting(addr: (&str, u16), want: &[u8]) -> bool {
    use std::io::Read;
    let Ok(mut s) = std::net::TcpStream::connect(addr) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
    let mut b = [0u8; 64];
    matches!(s.read(&mut b), Ok(n) if n >= want.len() && b.starts_with(want))
}

/// Runs one of the guide's shell blocks with bash (`set -euo pipefail`),
/// `sikkermail` on the PATH and the environment `env`.
fn run_block(dir: &Path, name: &str, script: &str, env: &[(&str, &str)]) -> Output {
    let bindir = Path::new(env!("CARGO_BIN_EXE_sikkermail"))
        .parent()
        .unwrap();
    let path = format!(
        "{}:{}",
        bindir.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let mut c = Command::new("bash");
    c.arg("-c")
        .arg(format!("set -euo pipefail\n{script}"))
        .current_dir(dir)
        .env("PATH", path);
    for (k, _) in std::env::vars() {
        if k.starts_with("SIKKERMAIL_") {
            c.env_remove(k);
        }
    }
    for (k, v) in env {
        c.env(k, v);
    }
    let o = c.output().unwrap();
    assert!(
        o.status.success(),
        "the guide's {name} failed:\n{script}\n{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    o
}

/// swaks, retried while the answer is a 4xx (the MX verifying a
/// recipient with the gateway answers 450 until the probe is back).
/// Returns swaks' exit code and transcript.
fn swaks(args: &[&str]) -> (i32, String) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let o = Command::new("swaks")
            .args(args)
            .args(["-n", "--timeout", "30"])
            .output()
            .unwrap();
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        );
        let code = o.status.code().unwrap_or(-1);
        let transient = text
            .lines()
            .any(|l| l.starts_with("<** ") && l[4..].starts_with('4'));
        if code == 0 || !transient || Instant::now() > deadline {
            return (code, text);
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}

const IMAP_PY: &str = r#"
import imaplib, ssl, sys
host, port, ca, user, pw = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4], sys.argv[5]
ctx = ssl.create_default_context(cafile=ca)
M = imaplib.IMAP4(host, port)
M.starttls(ssl_context=ctx)
M.login(user, pw)
M.select('INBOX', readonly=True)
for n in M.search(None, 'ALL')[1][0].split():
    sys.stdout.buffer.write(M.fetch(n, '(RFC822)')[1][0][1] + b'\n=====END=====\n')
M.logout()
"#;

/// Every message in `user`'s INBOX, fetched over IMAP with STARTTLS
/// (verified against the firm's CA) from Dovecot.
fn imap_messages(t: &Path, port: u16, user: &str, pw: &str) -> Vec<String> {
    let o = Command::new("python3")
        .arg("-c")
        .arg(IMAP_PY)
        .arg("127.0.2.1")
        .arg(port.to_string())
        .arg(t.join("etc/postfix/tls/intern-ca.pem"))
        .arg(user)
        .arg(pw)
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "IMAP as {user}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout)
        .split("\n=====END=====\n")
        .filter(|m| !m.trim().is_empty())
        .map(|m| m.replace("\r\n", "\n"))
        .collect()
}

/// Waits (up to 120 s) for a message in `user`'s INBOX containing `token`.
fn wait_imap(
    t: &Path,
    port: u16,
    user: &str,
    pw: &str,
    token: &str,
    logs: &dyn Fn() -> String,
) -> String {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        if let Some(m) = imap_messages(t, port, user, pw)
            .into_iter()
            .find(|m| m.contains(token))
        {
            return m;
        }
        assert!(
            Instant::now() < deadline,
            "no message with {token} in {user}'s INBOX\n{}",
            logs()
        );
        std::thread::sleep(Duration::from_millis(300));
    }
}

/// Test-only material the guide assumes exists: the firm's internal CA
/// and the TLS certificates it issued (the firm's server's names
/// 127.0.2.1, the address the gateway verifies), the CA bundle of the
/// drop-in, and the authority's certificate in the OCES3 shape.
fn make_certificates(t: &Path) {
    for d in [
        "etc/sikkermail/tls",
        "etc/postfix/tls",
        "etc/dovecot/tls",
        "var/lib",
        "pki",
    ] {
        fs::create_dir_all(t.join(d)).unwrap();
    }
    sh(
        &t.join("pki"),
        r#"
set -e
cat > ext.cnf <<'EOF'
[tls]
basicConstraints = CA:FALSE
keyUsage = critical, digitalSignature, keyEncipherment
extendedKeyUsage = serverAuth, clientAuth
subjectAltName = $ENV::SAN
[oces3]
basicConstraints = CA:FALSE
keyUsage = critical, digitalSignature, keyEncipherment
certificatePolicies = 0.4.0.2042.1.1, 1.2.208.169.1.1.1.3.7
subjectAltName = email:sikkerpost@myndighed.dk
EOF
q() { "$@" >/dev/null 2>&1 || { echo "failed: $*" >&2; "$@"; exit 1; }; }
q openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj "/O=Advokatfirma Jørgensen ApS/CN=Intern CA" -utf8 \
  -addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign,cRLSign -keyout ca.key -out ca.crt
issue() {  # name subject SAN
  q openssl req -newkey rsa:2048 -nodes -subj "$2" -utf8 -keyout "$1.key" -out "$1.csr"
  SAN="$3" q openssl x509 -req -in "$1.csr" -CA ca.crt -CAkey ca.key -CAcreateserial -days 2 \
    -extfile ext.cnf -extensions tls -out "$1.crt"
}
issue gw "/CN=sikkermail.advokatfirma.dk" "DNS:sikkermail.advokatfirma.dk"
issue mx "/CN=mx.advokatfirma.dk" "DNS:mx.advokatfirma.dk"
issue mail "/CN=mail.advokatfirma.dk" "DNS:mail.advokatfirma.dk,IP:127.0.2.1"
q openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj "/C=DK/CN=Den Danske Stat OCES test-CA" \
  -addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign,cRLSign -keyout state.key -out state.crt
q openssl req -newkey rsa:2048 -nodes -keyout authority.key -out authority.csr -utf8 \
  -subj "/CN=Myndigheden sikker post/serialNumber=UI:DK-O:G:9b4a1c52-7a5f-4d3e-8a77-2f1e0c3d4b5a/O=Myndigheden/organizationIdentifier=NTRDK-87654321/C=DK"
SAN= q openssl x509 -req -in authority.csr -CA state.crt -CAkey state.key -CAcreateserial -days 2 \
  -extfile ext.cnf -extensions oces3 -out authority.crt
cp gw.crt ../etc/sikkermail/tls/sikkermail.pem; cp gw.key ../etc/sikkermail/tls/sikkermail.key
cat mx.key mx.crt ca.crt > ../etc/postfix/tls/mx.pem
cat mail.key mail.crt ca.crt > ../etc/postfix/tls/mail.pem
cp ca.crt ../etc/postfix/tls/intern-ca.pem
cp mail.crt ../etc/dovecot/tls/mail.pem; cp mail.key ../etc/dovecot/tls/mail.key
cp ca.crt ../etc/sikkermail/tls/intern-ca.pem
cp authority.crt ../etc/sikkermail/myndighed.pem
"#,
    );
}

/// The guide's deployment, end to end.
#[test]
fn the_deployment_guide_runs() {
    if !peers_present() {
        return;
    }
    let b = blocks(DOC);
    for name in [
        "sikkermail.toml",
        "policy.toml",
        "gateway-setup.sh",
        "pin-recipient.sh",
        "mx/main.cf",
        "mx/master.cf",
        "mail/main.cf",
        "mail/master.cf",
        "dovecot/local.conf",
        "dovecot-users.sh",
    ] {
        assert!(
            b.contains_key(name),
            "docs/deployment.md has no file={name}"
        );
    }
    // A short path: Dovecot's socket paths must fit in 108 bytes.
    let tmp = tempfile::Builder::new()
        .prefix("dep")
        .tempdir_in("/tmp")
        .unwrap();
    let t = tmp.path().to_path_buf();
    // Postfix and Dovecot's unprivileged processes must reach their files.
    fs::set_permissions(&t, fs::Permissions::from_mode(0o755)).unwrap();
    let ports = Ports {
        mx: free_port(),
        gw_in: free_port(),
        gw_out: free_port(),
        http: free_port(),
        mail: free_port(),
        imap: free_port(),
        imaps: free_port(),
        sink: free_port(),
    };
    let sub = substitutions(&t, &ports);
    sub.check();
    let file = |name: &str| sub.apply(&b[name]);
    make_certificates(&t);

    // The gateway's files, and the guide's preparation.
    fs::write(
        t.join("etc/sikkermail/sikkermail.toml"),
        file("sikkermail.toml"),
    )
    .unwrap();
    fs::write(t.join("etc/sikkermail/policy.toml"), file("policy.toml")).unwrap();
    let (admin_pw, post_pw, anna_pw) = ("Adm1n-hemmelig-42", "post-hemmelig", "anna-hemmelig");
    let env = [
        ("ADMIN_PW", admin_pw),
        ("POST_PW", post_pw),
        ("ANNA_PW", anna_pw),
    ];
    run_block(&t, "dovecot-users.sh", &file("dovecot-users.sh"), &env);
    run_block(&t, "gateway-setup.sh", &file("gateway-setup.sh"), &env);

    // Dovecot: the guide's local.conf, plus its own run and state directories.
    fs::create_dir_all(t.join("dovecot")).unwrap();
    let dconf = t.join("dovecot/dovecot.conf");
    fs::write(
        &dconf,
        format!(
            "# test only\nbase_dir = {d}/dovecot/run\nstate_dir = {d}/dovecot/state\nlog_path = {d}/dovecot/dovecot.log\n\
             # from docs/deployment.md\n{}",
            file("dovecot/local.conf"),
            d = t.display()
        ),
    )
    .unwrap();
    let check = sh_status(&t, &format!("{DOVECOT} -c {} -n", dconf.display()));
    assert!(
        check.status.success(),
        "dovecot -n: {}",
        String::from_utf8_lossy(&check.stderr)
    );

    // The Internet, the gateway, the firm's server, Dovecot, the MX.
    let sink = Sink::start_on(&t.join("internet"), ports.sink);
    let mut c = bin();
    c.arg("serve")
        .arg("--config")
        .arg(t.join("etc/sikkermail/sikkermail.toml"))
        // "Down for a minute", shortened: the real figures are in the guide.
        .env("SIKKERMAIL_QUEUE_RETRY_BASE", "1s")
        .env("SIKKERMAIL_HEALTH_HOP_DOWN", "3s");
    let serve = Serve::spawn(c, &t.join("serve.log"));
    assert_eq!(serve.inbound.port(), ports.gw_in);
    assert_eq!(serve.outbound.port(), ports.gw_out);
    let mail = Postfix::new(
        &t.join("pf-mail"),
        "mail",
        "127.0.2.1",
        &file("mail/main.cf"),
        &file("mail/master.cf"),
    );
    mail.start();
    let dovecot = Dovecot::start(&dconf, &t.join("dovecot/dovecot.log"), ports.imap);
    let mx = Postfix::new(
        &t.join("pf-mx"),
        "mx",
        "127.0.1.1",
        &file("mx/main.cf"),
        &file("mx/master.cf"),
    );
    mx.start();
    for (what, port) in [("MX", ports.mx), ("firm's server", ports.mail)] {
        let host = if what == "MX" {
            "127.0.1.1"
        } else {
            "127.0.2.1"
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        while !greeting((host, port), b"220") {
            assert!(Instant::now() < deadline, "the {what} does not answer");
            std::thread::sleep(Duration::from_millis(100));
        }
    }
    run_block(&t, "pin-recipient.sh", &file("pin-recipient.sh"), &env);
    let logs = || {
        format!(
            "--- serve\n{}\n--- MX\n{}\n--- firm's server\n{}\n--- Dovecot\n{}",
            serve.logs(),
            mx.log(),
            mail.log(),
            fs::read_to_string(&dovecot.log).unwrap_or_default()
        )
    };
    let mx_addr = format!("127.0.1.1:{}", ports.mx);
    let mail_addr = format!("127.0.2.1:{}", ports.mail);

    // 1. In: a court's message encrypted to the shared mailbox, from the
    // Internet to the MX, read decrypted over IMAP.
    let post_pem = org_certificate(&t);
    fs::write(t.join("post.pem"), post_pem).unwrap();
    fs::write(
        t.join("court.txt"),
        "Content-Type: text/plain; charset=utf-8\n\nRetten sender dom i sag 2026-117: TOKEN-IND-1\n",
    )
    .unwrap();
    sh(
        &t,
        "openssl smime -encrypt -aes256 -in court.txt -out court.eml -from retten@domstol.dk \
         -to post@advokatfirma.dk -subject 'Dom i sag 2026-117' post.pem",
    );
    let court = t.join("court.eml").display().to_string();
    let data = format!("@{court}");
    let (code, text) = swaks(&[
        "-s",
        &mx_addr,
        "--local-interface",
        "127.0.3.1",
        "--tls",
        "-f",
        "retten@domstol.dk",
        "-t",
        "post@advokatfirma.dk",
        "--data",
        &data,
    ]);
    assert_eq!(
        code,
        0,
        "the MX refused the court's message: {text}\n{}",
        logs()
    );
    let got = wait_imap(
        &t,
        ports.imap,
        "post@advokatfirma.dk",
        post_pw,
        "TOKEN-IND-1",
        &logs,
    );
    assert!(
        got.contains("X-Sikkermail-Decrypted: "),
        "not decrypted by the gateway: {got}"
    );
    assert!(!got.contains("application/pkcs7-mime"), "{got}");
    // An address the gateway does not know: refused by the MX at RCPT.
    let (code, text) = swaks(&[
        "-s",
        &mx_addr,
        "--local-interface",
        "127.0.3.1",
        "-f",
        "retten@domstol.dk",
        "-t",
        "nobody@advokatfirma.dk",
    ]);
    assert_eq!(code, 24, "an unknown mailbox was accepted: {text}");
    assert!(text.contains("<** 550"), "{text}");

    // 2. Out: an employee to the authority, through the firm's server and
    // the gateway: signed, encrypted to the pinned certificate.
    fs::write(
        t.join("anna.eml"),
        "From: Anna Advokat <anna@advokatfirma.dk>\nTo: sikkerpost@myndighed.dk\nSubject: Processkrift\n\
         Message-ID: <anna-1@advokatfirma.dk>\n\nHermed processkriftet: TOKEN-UD-2\n",
    )
    .unwrap();
    let data = format!("@{}", t.join("anna.eml").display());
    let (code, text) = swaks(&[
        "-s",
        &mail_addr,
        "-f",
        "anna@advokatfirma.dk",
        "-t",
        "sikkerpost@myndighed.dk",
        "--data",
        &data,
    ]);
    assert_eq!(code, 0, "{text}");
    let out = sink.wait_for(1, 120, logs);
    let (rcpts, msg) = &out[0];
    assert_eq!(rcpts, &vec!["sikkerpost@myndighed.dk".to_string()]);
    assert!(
        !msg.contains("TOKEN-UD-2"),
        "plaintext left the firm: {msg}"
    );
    assert!(msg.contains("application/pkcs7-mime"), "{msg}");
    fs::write(t.join("authority.eml"), msg).unwrap();
    let (_, ca_pem) = serve.http_get("/ca.pem");
    fs::write(t.join("internal-ca.pem"), ca_pem).unwrap();
    sh(
        &t,
        "openssl smime -decrypt -in authority.eml -recip pki/authority.crt -inkey pki/authority.key -out authority-dec.eml && \
         openssl smime -verify -in authority-dec.eml -CAfile internal-ca.pem -purpose smimesign -out authority-plain.txt",
    );
    let plain = fs::read_to_string(t.join("authority-plain.txt")).unwrap();
    assert!(plain.contains("TOKEN-UD-2"), "{plain}");
    // Every hop between the mail servers and the gateway verified TLS.
    for (who, log, port) in [
        ("MX", mx.log(), ports.gw_in),
        ("firm's server", mail.log(), ports.gw_out),
    ] {
        assert!(
            log.contains(&format!(
                "Verified TLS connection established to 127.0.0.1[127.0.0.1]:{port}"
            )),
            "the {who} did not verify the gateway:\n{log}"
        );
    }

    // 3. A DSN: required encryption and no certificate; the bounce reaches
    // the employee's mailbox through the firm's server.
    fs::write(
        t.join("anna2.eml"),
        "From: Anna Advokat <anna@advokatfirma.dk>\nTo: ukendt@domstol.dk\nSubject: Til retten\n\n\
         Fortroligt: TOKEN-DSN-3\n",
    )
    .unwrap();
    let data = format!("@{}", t.join("anna2.eml").display());
    let (code, text) = swaks(&[
        "-s",
        &mail_addr,
        "-f",
        "anna@advokatfirma.dk",
        "-t",
        "ukendt@domstol.dk",
        "--data",
        &data,
    ]);
    assert_eq!(code, 0, "{text}");
    let bounce = wait_imap(
        &t,
        ports.imap,
        "anna@advokatfirma.dk",
        anna_pw,
        "ukendt@domstol.dk",
        &logs,
    );
    assert!(bounce.contains("multipart/report"), "{bounce}");
    assert!(
        bounce
            .to_ascii_lowercase()
            .contains("report-type=delivery-status"),
        "{bounce}"
    );
    assert!(
        sink.messages()
            .iter()
            .all(|(r, m)| !r.contains(&"ukendt@domstol.dk".to_string())
                && !m.contains("TOKEN-DSN-3")),
        "something went to the court in clear"
    );

    // 4. The next hop down: the mail waits in the gateway, /readyz says why;
    // back up, the mail is delivered and /readyz is 200.
    assert_eq!(serve.http_get("/readyz"), (200, "ready\n".to_string()));
    mail.stop();
    fs::write(
        t.join("court2.txt"),
        "Content-Type: text/plain; charset=utf-8\n\nRetsmøde flyttet: TOKEN-NEDE-4\n",
    )
    .unwrap();
    sh(
        &t,
        "openssl smime -encrypt -aes256 -in court2.txt -out court2.eml -from retten@domstol.dk \
         -to post@advokatfirma.dk -subject 'Retsmøde' post.pem",
    );
    let data = format!("@{}", t.join("court2.eml").display());
    let (code, text) = swaks(&[
        "-s",
        &mx_addr,
        "--local-interface",
        "127.0.3.1",
        "--tls",
        "-f",
        "retten@domstol.dk",
        "-t",
        "post@advokatfirma.dk",
        "--data",
        &data,
    ]);
    assert_eq!(code, 0, "{text}");
    let readyz = |want: &dyn Fn(u16, &str) -> bool, what: &str| -> String {
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            let (code, body) = serve.http_get("/readyz");
            if want(code, &body) {
                return body;
            }
            assert!(
                Instant::now() < deadline,
                "{what}: /readyz {code} {body}\n{}",
                logs()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    };
    let why = readyz(
        &|c, b| c == 503 && b.contains("every attempt failed"),
        "the firm's server down",
    );
    assert!(
        why.contains(&format!("inbound next hop 127.0.2.1:{}", ports.mail)),
        "{why}"
    );
    assert_eq!(
        serve.http_get("/healthz").0,
        200,
        "liveness is not readiness"
    );
    // The message waits in the gateway, not in the MX.
    assert!(
        mx.log()
            .contains(&format!("relay=127.0.0.1[127.0.0.1]:{}", ports.gw_in)),
        "{}",
        mx.log()
    );
    assert!(
        imap_messages(&t, ports.imap, "post@advokatfirma.dk", post_pw).len() == 1,
        "Dovecot serves the mailbox while Postfix is down; one message in it"
    );
    mail.start();
    wait_imap(
        &t,
        ports.imap,
        "post@advokatfirma.dk",
        post_pw,
        "TOKEN-NEDE-4",
        &logs,
    );
    readyz(&|c, b| c == 200 && b == "ready\n", "ready again");

    drop(mx);
    drop(mail);
    drop(dovecot);
    serve.stop();
    drop(sink);
}

/// The PEM of the shared mailbox's organisation certificate.
fn org_certificate(t: &Path) -> String {
    let data = t.join("var/lib/sikkermail");
    let list = common::sikkermail(
        &["cert", "list", "--data-dir", &data.display().to_string()],
        b"",
    );
    let list = String::from_utf8(common::ok(&list)).unwrap();
    let id = list
        .lines()
        .find(|l| l.contains("Fælles postkasse"))
        .and_then(|l| l.split_whitespace().next())
        .unwrap_or_else(|| panic!("no shared mailbox certificate in {list}"))
        .to_string();
    let show = common::sikkermail(
        &[
            "cert",
            "show",
            &id,
            "--data-dir",
            &data.display().to_string(),
        ],
        b"",
    );
    let show = String::from_utf8(common::ok(&show)).unwrap();
    show[show.find("-----BEGIN CERTIFICATE-----").unwrap()..].to_string()
}
