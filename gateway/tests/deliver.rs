//! Tests of `gateway::deliver`: the SMTP client against Postfix's smtp-sink, an
//! aiosmtpd STARTTLS+AUTH sink and scripted in-process servers; Maildir
//! delivery; DSN construction checked with Python's `email` parser.
//!
//! Missing tools print "!!! SKIPPED: <tool> not found" and the test returns,
//! unless SIKKERMAIL_REQUIRE_PEERS=1, then it fails.
#![allow(clippy::unwrap_used)]

use std::collections::HashSet;
use std::fs;
use std::io::{Read, Write};
use std::net::TcpListener as StdListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use gateway::deliver::dsn::{self, Action, Dsn, DsnRecipient};
use gateway::deliver::maildir;
use gateway::deliver::smtp_client::{
    DeliveryError, NextHop, RcptOutcome, Recipient, TlsMode, send,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

// ---------------------------------------------------------------- helpers

/// Reports a missing peer tool; panics when peers are required.
fn skip(what: &str) {
    let msg = format!("!!! SKIPPED: {what}");
    if std::env::var("SIKKERMAIL_REQUIRE_PEERS").as_deref() == Ok("1") {
        panic!("{msg} (SIKKERMAIL_REQUIRE_PEERS=1)");
    }
    eprintln!("{msg}");
}

fn find_tool(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    let mut dirs: Vec<PathBuf> = std::env::split_paths(&path).collect();
    dirs.extend(["/usr/sbin", "/sbin"].map(PathBuf::from)); // smtp-sink lives in sbin
    dirs.into_iter().map(|d| d.join(name)).find(|p| p.is_file())
}

fn tool(name: &str) -> Option<PathBuf> {
    let t = find_tool(name);
    if t.is_none() {
        skip(&format!("{name} not found"));
    }
    t
}

fn is_root() -> bool {
    fs::read_to_string("/proc/self/status")
        .map(|s| {
            s.lines()
                .any(|l| l.starts_with("Uid:") && l.split_whitespace().nth(1) == Some("0"))
        })
        .unwrap_or(false)
}

fn free_port() -> u16 {
    StdListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn wait_port(port: u16) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return;
        }
        std::thread::sleep(Duration::from_millis(25));
    }
    panic!("nothing listening on port {port}");
}

/// A child process killed (by its own handle) when dropped.
struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn hop(port: u16) -> NextHop {
    let mut h = NextHop::new("127.0.0.1", port);
    h.tls = TlsMode::None;
    h.helo = "client.test".into();
    h.connect_timeout = Duration::from_secs(5);
    h.command_timeout = Duration::from_secs(10);
    h.data_timeout = Duration::from_secs(10);
    h
}

fn rcpts(addrs: &[&str]) -> Vec<Recipient> {
    addrs.iter().map(|a| Recipient::new(*a)).collect()
}

/// What smtp-sink should store for `body`: LF line ends, a final line end.
fn sink_expected(body: &[u8]) -> Vec<u8> {
    let mut v: Vec<u8> = body.iter().copied().filter(|&b| b != b'\r').collect();
    if !v.ends_with(b"\n") {
        v.push(b'\n');
    }
    v
}

/// What a byte-exact sink (aiosmtpd) should store: CRLF line ends, a final CRLF.
fn crlf_expected(body: &[u8]) -> Vec<u8> {
    let mut v = Vec::new();
    let mut prev = 0u8;
    for &b in body {
        if b == b'\n' && prev != b'\r' {
            v.push(b'\r');
        }
        v.push(b);
        prev = b;
    }
    if !v.ends_with(b"\r\n") {
        v.extend_from_slice(b"\r\n");
    }
    v
}

// ---------------------------------------------------------------- smtp-sink

struct Sink {
    _proc: Proc,
    port: u16,
    dir: tempfile::TempDir,
}

impl Sink {
    /// Starts smtp-sink with `opts`, dumping messages into `dir/dump/`.
    fn start(opts: &[&str]) -> Option<Sink> {
        let bin = tool("smtp-sink")?;
        let dir = tempfile::tempdir().unwrap();
        fs::create_dir(dir.path().join("dump")).unwrap();
        let port = free_port();
        let mut cmd = Command::new(bin);
        if is_root() {
            cmd.args(["-u", "root"]);
        }
        cmd.args(opts)
            .arg("-d")
            .arg(dir.path().join("dump/%Y%m%d%H%M%S."))
            .arg(format!("127.0.0.1:{port}"))
            .arg("64")
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        let proc = Proc(cmd.spawn().unwrap());
        wait_port(port);
        Some(Sink {
            _proc: proc,
            port,
            dir,
        })
    }

    fn files(&self) -> Vec<PathBuf> {
        let mut v: Vec<PathBuf> = fs::read_dir(self.dir.path().join("dump"))
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        v.sort();
        v
    }
}

/// A dump file split into smtp-sink's own lines and the message
/// (the recipe's `sink_body`: after the 3-line Received:, minus the final empty line).
struct Dump {
    meta: Vec<String>,
    body: Vec<u8>,
}

fn read_dump(path: &Path) -> Dump {
    let data = fs::read(path).unwrap();
    let mut meta = Vec::new();
    let mut pos = 0;
    let mut in_received = false;
    while pos < data.len() {
        let end = data[pos..]
            .iter()
            .position(|&b| b == b'\n')
            .map_or(data.len(), |p| pos + p + 1);
        let line = &data[pos..end];
        if line.starts_with(b"Received: ") {
            in_received = true;
        } else if in_received && !line.starts_with(b"\t") {
            break;
        }
        if !in_received {
            meta.push(String::from_utf8_lossy(line).trim_end().to_string());
        }
        pos = end;
    }
    let mut body = data[pos..].to_vec();
    assert!(
        body.ends_with(b"\n"),
        "dump should end with the sink's empty line"
    );
    body.pop();
    Dump { meta, body }
}

#[tokio::test]
async fn sink_bodies_arrive_byte_identical() {
    let Some(sink) = Sink::start(&[]) else { return };
    let bodies: [&[u8]; 4] = [
        b"Subject: dots\r\n\r\n.leading dot\r\n..two dots\r\n.\r\nend\r\n",
        b"Subject: lf\n\nbare LF line\n.\nGr\xc3\xbc\xc3\x9fe 8-bit \xff\xfe\nno final newline",
        b"Subject: mixed\r\n\nline1\nline2\r\n. \r\n.\n",
        b"Subject: empty body\r\n\r\n",
    ];
    for (i, body) in bodies.iter().enumerate() {
        let before: HashSet<PathBuf> = sink.files().into_iter().collect();
        let out = send(
            &hop(sink.port),
            "alice@example.test",
            &rcpts(&["bob@example.test", "carol@example.test"]),
            body,
            None,
            None,
        )
        .await
        .unwrap();
        assert_eq!(
            out,
            vec![RcptOutcome::Accepted, RcptOutcome::Accepted],
            "body {i}"
        );
        let new: Vec<PathBuf> = sink
            .files()
            .into_iter()
            .filter(|f| !before.contains(f))
            .collect();
        assert_eq!(new.len(), 1, "body {i}: one new dump file");
        let d = read_dump(&new[0]);
        assert_eq!(
            String::from_utf8_lossy(&d.body),
            String::from_utf8_lossy(&sink_expected(body)),
            "body {i}"
        );
        assert_eq!(d.body, sink_expected(body), "body {i} (bytes)");
        assert!(
            d.meta.contains(&"X-Helo-Args: client.test".to_string()),
            "{:?}",
            d.meta
        );
        assert!(d.meta.contains(&"X-Client-Proto: ESMTP".to_string()));
        let mail = d
            .meta
            .iter()
            .find(|l| l.starts_with("X-Mail-Args:"))
            .unwrap();
        let eight_bit = body.iter().any(|&b| b >= 0x80);
        assert!(mail.starts_with("X-Mail-Args: <alice@example.test>"));
        assert_eq!(mail.contains("BODY=8BITMIME"), eight_bit, "{mail}");
        assert!(
            !mail.contains("SIZE="),
            "smtp-sink does not offer SIZE: {mail}"
        );
        let rc: Vec<&String> = d
            .meta
            .iter()
            .filter(|l| l.starts_with("X-Rcpt-Args:"))
            .collect();
        assert_eq!(rc.len(), 2);
        assert_eq!(rc[0], "X-Rcpt-Args: <bob@example.test>");
        assert_eq!(rc[1], "X-Rcpt-Args: <carol@example.test>");
    }
}

#[tokio::test]
async fn sink_receives_dsn_parameters_only_when_offered() {
    let r = vec![Recipient {
        address: "bob@example.test".into(),
        notify: Some("success,failure".into()),
        orcpt: Some("rfc822;Bob+tag@example.test".into()),
    }];
    for (opts, offered) in [(&[][..], true), (&["-N"][..], false)] {
        let Some(sink) = Sink::start(opts) else {
            return;
        };
        let out = send(
            &hop(sink.port),
            "",
            &r,
            b"Subject: x\r\n\r\ny\r\n",
            Some("env+id=1"),
            Some("hdrs"),
        )
        .await
        .unwrap();
        assert_eq!(out, vec![RcptOutcome::Accepted]);
        let d = read_dump(&sink.files()[0]);
        let mail = d
            .meta
            .iter()
            .find(|l| l.starts_with("X-Mail-Args:"))
            .unwrap();
        let rcpt = d
            .meta
            .iter()
            .find(|l| l.starts_with("X-Rcpt-Args:"))
            .unwrap();
        if offered {
            assert_eq!(mail, "X-Mail-Args: <> RET=HDRS ENVID=env+2Bid+3D1");
            assert_eq!(
                rcpt,
                "X-Rcpt-Args: <bob@example.test> NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;Bob+2Btag@example.test"
            );
        } else {
            assert_eq!(mail, "X-Mail-Args: <>");
            assert_eq!(rcpt, "X-Rcpt-Args: <bob@example.test>");
        }
    }
}

#[tokio::test]
async fn sink_without_esmtp_gets_helo() {
    let Some(sink) = Sink::start(&["-e"]) else {
        return;
    };
    let out = send(
        &hop(sink.port),
        "a@example.test",
        &rcpts(&["b@example.test"]),
        b"Subject: helo\r\n\r\n8-bit \xe2\x82\xac\r\n",
        None,
        None,
    )
    .await
    .unwrap();
    assert_eq!(out, vec![RcptOutcome::Accepted]);
    let d = read_dump(&sink.files()[0]);
    assert!(
        d.meta.contains(&"X-Client-Proto: SMTP".to_string()),
        "{:?}",
        d.meta
    );
    assert!(
        d.meta
            .contains(&"X-Mail-Args: <a@example.test>".to_string()),
        "{:?}",
        d.meta
    );
}

#[tokio::test]
async fn sink_soft_and_hard_rcpt_rejects() {
    for (opt, soft) in [("-r", true), ("-f", false)] {
        let Some(sink) = Sink::start(&[opt, "RCPT"]) else {
            return;
        };
        let out = send(
            &hop(sink.port),
            "a@example.test",
            &rcpts(&["b@example.test", "c@example.test"]),
            b"Subject: x\r\n\r\nbody\r\n",
            None,
            None,
        )
        .await
        .unwrap();
        assert_eq!(out.len(), 2);
        for o in &out {
            match (o, soft) {
                (RcptOutcome::Temporary(r), true) => assert!(r.starts_with("450 4."), "{r}"),
                (RcptOutcome::Permanent(r), false) => assert!(r.starts_with("500 5."), "{r}"),
                other => panic!("{opt}: unexpected {other:?}"),
            }
        }
        // No DATA: the RSET makes the sink delete the file it opened at MAIL.
        assert!(sink.files().is_empty(), "{opt}: {:?}", sink.files());
    }
}

#[tokio::test]
async fn sink_data_command_rejects_are_whole_message_errors() {
    for (opt, soft) in [("-r", true), ("-f", false)] {
        let Some(sink) = Sink::start(&[opt, "DATA"]) else {
            return;
        };
        let err = send(
            &hop(sink.port),
            "a@example.test",
            &rcpts(&["b@example.test"]),
            b"Subject: x\r\n\r\nbody\r\n",
            None,
            None,
        )
        .await
        .unwrap_err();
        match (&err, soft) {
            (DeliveryError::Temporary(m), true) => assert!(m.contains("DATA: 450"), "{m}"),
            (DeliveryError::Permanent(m), false) => assert!(m.contains("DATA: 500"), "{m}"),
            other => panic!("{opt} DATA: unexpected {other:?}"),
        }
    }
}

#[tokio::test]
async fn sink_final_dot_reject_decides_for_accepted_recipients() {
    let Some(sink) = Sink::start(&["-r", "."]) else {
        return;
    };
    let out = send(
        &hop(sink.port),
        "a@example.test",
        &rcpts(&["b@example.test", "c@example.test"]),
        b"Subject: x\r\n\r\nbody\r\n",
        None,
        None,
    )
    .await
    .unwrap();
    assert_eq!(out.len(), 2);
    assert!(
        out.iter()
            .all(|o| matches!(o, RcptOutcome::Temporary(r) if r.starts_with("450"))),
        "{out:?}"
    );
}

#[tokio::test]
async fn sink_dropped_connection_is_temporary() {
    for cmd in ["RCPT", "DATA", "."] {
        let Some(sink) = Sink::start(&["-q", cmd]) else {
            return;
        };
        let err = send(
            &hop(sink.port),
            "a@example.test",
            &rcpts(&["b@example.test"]),
            b"Subject: x\r\n\r\nbody\r\n",
            None,
            None,
        )
        .await
        .unwrap_err();
        assert!(
            matches!(&err, DeliveryError::Temporary(m) if m.contains("closed")),
            "-q {cmd}: {err:?}"
        );
    }
}

#[tokio::test]
async fn sink_421_and_close_is_temporary() {
    let Some(sink) = Sink::start(&["-Q", "MAIL"]) else {
        return;
    };
    let err = send(
        &hop(sink.port),
        "a@example.test",
        &rcpts(&["b@example.test"]),
        b"x\r\n",
        None,
        None,
    )
    .await
    .unwrap_err();
    assert!(
        matches!(&err, DeliveryError::Temporary(m) if m.contains("421")),
        "{err:?}"
    );
}

#[tokio::test]
async fn connection_refused_is_connect_error() {
    let port = free_port(); // bound, then released: nothing listens
    let err = send(
        &hop(port),
        "a@example.test",
        &rcpts(&["b@example.test"]),
        b"x\r\n",
        None,
        None,
    )
    .await
    .unwrap_err();
    assert!(
        matches!(&err, DeliveryError::Connect(m) if m.contains("refused")),
        "{err:?}"
    );
}

#[tokio::test]
async fn required_tls_without_starttls_fails() {
    let Some(sink) = Sink::start(&[]) else { return };
    let mut h = hop(sink.port);
    h.tls = TlsMode::Required;
    let err = send(
        &h,
        "a@example.test",
        &rcpts(&["b@example.test"]),
        b"x\r\n",
        None,
        None,
    )
    .await
    .unwrap_err();
    assert!(
        matches!(&err, DeliveryError::Temporary(m) if m.contains("STARTTLS")),
        "{err:?}"
    );
    assert!(sink.files().is_empty(), "nothing may be sent in the clear");
    // Opportunistic goes on in plain text.
    h.tls = TlsMode::Opportunistic;
    let out = send(
        &h,
        "a@example.test",
        &rcpts(&["b@example.test"]),
        b"x\r\n",
        None,
        None,
    )
    .await
    .unwrap();
    assert_eq!(out, vec![RcptOutcome::Accepted]);
}

#[tokio::test]
async fn utf8_address_without_smtputf8_is_permanent() {
    let Some(sink) = Sink::start(&[]) else { return };
    let err = send(
        &hop(sink.port),
        "a@example.test",
        &rcpts(&["bøb@example.test"]),
        b"x\r\n",
        None,
        None,
    )
    .await
    .unwrap_err();
    assert!(
        matches!(&err, DeliveryError::Permanent(m) if m.contains("SMTPUTF8")),
        "{err:?}"
    );
}

// ---------------------------------------------------------------- aiosmtpd TLS + AUTH sink

const TLS_SINK_PY: &str = r#"
import itertools, json, os, signal, ssl, sys
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword
port, out, cert, key, user, pw = sys.argv[1:7]
ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH); ctx.load_cert_chain(cert, key)
seq = itertools.count(1)
def check(server, session, envelope, mechanism, data):
    return AuthResult(success=isinstance(data, LoginPassword) and data.login == user.encode()
                      and data.password == pw.encode(), handled=False)
class Save:
    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        if address.startswith("temp"):
            return "451 4.2.0 mailbox busy, try later"
        if address.startswith("perm"):
            return "550 5.1.1 no such user"
        envelope.rcpt_tos.append(address)
        envelope.rcpt_options.extend(rcpt_options)
        return "250 2.1.5 OK"
    async def handle_DATA(self, server, session, envelope):
        n = next(seq)
        open(os.path.join(out, f"{n:06d}.eml"), "wb").write(envelope.original_content)
        json.dump({"mail_from": envelope.mail_from, "rcpt_tos": envelope.rcpt_tos,
                   "mail_options": envelope.mail_options, "tls": session.ssl is not None,
                   "auth": session.authenticated}, open(os.path.join(out, f"{n:06d}.json"), "w"))
        return "250 2.0.0 saved"
c = Controller(Save(), hostname="127.0.0.1", port=int(port), tls_context=ctx, require_starttls=True,
               authenticator=check, auth_require_tls=True)
sigs = {signal.SIGTERM, signal.SIGINT}; signal.pthread_sigmask(signal.SIG_BLOCK, sigs)
c.start(); print("READY", flush=True); signal.sigwait(sigs); c.stop()
"#;

/// The venv's python with aiosmtpd, made once (per machine) in a fixed cache
/// dir: built under a unique temporary name, then renamed into place, so
/// concurrent test binaries never see a half-made venv.
fn aiosmtpd_python() -> Option<PathBuf> {
    static PY: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    let r = PY.get_or_init(|| {
        let cache = std::env::temp_dir().join("sikkermail-aiosmtpd-venv");
        let py = cache.join("bin/python");
        let usable = |py: &Path| {
            Command::new(py)
                .args(["-c", "import aiosmtpd"])
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success())
        };
        if cache.join(".ready").is_file() && usable(&py) {
            return Ok(py);
        }
        let Some(python3) = find_tool("python3") else {
            return Err("python3 not found".into());
        };
        let build = std::env::temp_dir().join(format!(
            "sikkermail-aiosmtpd-venv.tmp{}.{}",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos()
        ));
        let _ = fs::remove_dir_all(&build);
        let ok = Command::new(&python3)
            .args(["-m", "venv"])
            .arg(&build)
            .status()
            .map(|s| s.success())
            .unwrap_or(false);
        if !ok {
            let _ = fs::remove_dir_all(&build);
            return Err("aiosmtpd (python3 -m venv failed)".into());
        }
        let pip = Command::new(build.join("bin/python"))
            .args(["-m", "pip", "install", "-q", "aiosmtpd"])
            .output();
        match pip {
            Ok(o) if o.status.success() => {}
            Ok(o) => {
                let _ = fs::remove_dir_all(&build);
                return Err(format!(
                    "aiosmtpd (pip install aiosmtpd failed: {})",
                    String::from_utf8_lossy(&o.stderr)
                        .lines()
                        .last()
                        .unwrap_or("")
                ));
            }
            Err(e) => {
                let _ = fs::remove_dir_all(&build);
                return Err(format!("aiosmtpd (pip: {e})"));
            }
        }
        fs::write(build.join(".ready"), b"").unwrap();
        if fs::rename(&build, &cache).is_err() {
            // Someone else finished first, or a broken old venv is in the way.
            if !usable(&py) {
                let _ = fs::remove_dir_all(&cache);
                let _ = fs::rename(&build, &cache);
            }
            let _ = fs::remove_dir_all(&build);
            if !usable(&py) {
                return Err(format!("aiosmtpd (cannot create {})", cache.display()));
            }
        }
        Ok(py)
    });
    match r {
        Ok(p) => Some(p.clone()),
        Err(why) => {
            skip(why);
            None
        }
    }
}

/// A self-signed certificate for localhost / 127.0.0.1 (cert PEM, key PEM).
fn self_signed() -> (Vec<u8>, Vec<u8>) {
    self_signed_for("localhost", true)
}

/// A self-signed CA:TRUE certificate for DNS name `dns` (and 127.0.0.1 if `ip`).
fn self_signed_for(dns: &str, ip: bool) -> (Vec<u8>, Vec<u8>) {
    use openssl::asn1::Asn1Time;
    use openssl::bn::BigNum;
    use openssl::hash::MessageDigest;
    use openssl::pkey::PKey;
    use openssl::rsa::Rsa;
    use openssl::x509::extension::{BasicConstraints, SubjectAlternativeName};
    use openssl::x509::{X509, X509NameBuilder};
    let key = PKey::from_rsa(Rsa::generate(2048).unwrap()).unwrap();
    let mut name = X509NameBuilder::new().unwrap();
    name.append_entry_by_text("CN", dns).unwrap();
    let name = name.build();
    let mut b = X509::builder().unwrap();
    b.set_version(2).unwrap();
    b.set_serial_number(&BigNum::from_u32(1).unwrap().to_asn1_integer().unwrap())
        .unwrap();
    b.set_subject_name(&name).unwrap();
    b.set_issuer_name(&name).unwrap();
    b.set_pubkey(&key).unwrap();
    b.set_not_before(&Asn1Time::days_from_now(0).unwrap())
        .unwrap();
    b.set_not_after(&Asn1Time::days_from_now(2).unwrap())
        .unwrap();
    b.append_extension(BasicConstraints::new().critical().ca().build().unwrap())
        .unwrap();
    let mut san = SubjectAlternativeName::new();
    san.dns(dns);
    if ip {
        san.ip("127.0.0.1");
    }
    let san = san.build(&b.x509v3_context(None, None)).unwrap();
    b.append_extension(san).unwrap();
    b.sign(&key, MessageDigest::sha256()).unwrap();
    let cert = b.build();
    (
        cert.to_pem().unwrap(),
        key.private_key_to_pem_pkcs8().unwrap(),
    )
}

struct TlsSink {
    _proc: Proc,
    port: u16,
    dir: tempfile::TempDir,
}

impl TlsSink {
    fn start() -> Option<TlsSink> {
        Self::start_with(self_signed())
    }

    /// Starts the sink with the given (cert PEM, key PEM).
    fn start_with((cert, key): (Vec<u8>, Vec<u8>)) -> Option<TlsSink> {
        let py = aiosmtpd_python()?;
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join("srv.crt"), cert).unwrap();
        fs::write(dir.path().join("srv.key"), key).unwrap();
        fs::write(dir.path().join("tls_sink.py"), TLS_SINK_PY).unwrap();
        fs::create_dir(dir.path().join("out")).unwrap();
        let port = free_port();
        let log = fs::File::create(dir.path().join("sink.log")).unwrap();
        let proc = Proc(
            Command::new(py)
                .arg(dir.path().join("tls_sink.py"))
                .arg(port.to_string())
                .arg(dir.path().join("out"))
                .arg(dir.path().join("srv.crt"))
                .arg(dir.path().join("srv.key"))
                .args(["alice", "secret"])
                .stdout(log.try_clone().unwrap())
                .stderr(log)
                .spawn()
                .unwrap(),
        );
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let log = fs::read_to_string(dir.path().join("sink.log")).unwrap_or_default();
            if log.contains("READY") {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "aiosmtpd sink did not start: {log}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        Some(TlsSink {
            _proc: proc,
            port,
            dir,
        })
    }

    fn hop(&self) -> NextHop {
        let mut h = hop(self.port);
        h.tls = TlsMode::Required;
        h.ca_file = Some(self.dir.path().join("srv.crt"));
        h.auth = Some(("alice".into(), "secret".into()));
        h
    }

    fn saved(&self, n: usize) -> (Vec<u8>, String) {
        let out = self.dir.path().join("out");
        (
            fs::read(out.join(format!("{n:06}.eml"))).unwrap(),
            fs::read_to_string(out.join(format!("{n:06}.json"))).unwrap(),
        )
    }

    fn count(&self) -> usize {
        fs::read_dir(self.dir.path().join("out")).unwrap().count()
    }
}

#[tokio::test]
async fn tls_required_with_auth_and_mixed_recipients() {
    let Some(sink) = TlsSink::start() else { return };
    let body: &[u8] =
        b"Subject: tls\nContent-Type: text/plain; charset=utf-8\n\n.dot\n..two\n\xc3\xa6\xc3\xb8\xc3\xa5\r\nlast";
    let out = send(
        &sink.hop(),
        "alice@example.test",
        &rcpts(&["bob@example.test", "temp@example.test", "perm@example.test"]),
        body,
        None,
        None,
    )
    .await
    .unwrap();
    assert_eq!(out[0], RcptOutcome::Accepted);
    assert!(
        matches!(&out[1], RcptOutcome::Temporary(r) if r == "451 4.2.0 mailbox busy, try later"),
        "{out:?}"
    );
    assert!(
        matches!(&out[2], RcptOutcome::Permanent(r) if r == "550 5.1.1 no such user"),
        "{out:?}"
    );
    let (eml, json) = sink.saved(1);
    assert_eq!(
        eml,
        crlf_expected(body),
        "byte-exact after CRLF normalisation"
    );
    assert!(json.contains(r#""tls": true"#), "{json}");
    assert!(json.contains(r#""auth": true"#), "{json}");
    assert!(
        json.contains(r#""rcpt_tos": ["bob@example.test"]"#),
        "{json}"
    );
    let size = crlf_expected(body).len() + 2; // estimate counts the stuffed dots
    assert!(json.contains(&format!("\"SIZE={size}\"")), "{json}");
    assert!(json.contains(r#""BODY=8BITMIME""#), "{json}");
}

#[tokio::test]
async fn tls_wrong_password_is_temporary() {
    let Some(sink) = TlsSink::start() else { return };
    let mut h = sink.hop();
    h.auth = Some(("alice".into(), "WRONG".into()));
    let err = send(
        &h,
        "a@example.test",
        &rcpts(&["b@example.test"]),
        b"x\r\n",
        None,
        None,
    )
    .await
    .unwrap_err();
    assert!(
        matches!(&err, DeliveryError::Temporary(m) if m.contains("535")),
        "{err:?}"
    );
    assert!(
        !format!("{err:?}").contains("WRONG"),
        "password leaked into the error"
    );
    assert_eq!(sink.count(), 0);
}

#[tokio::test]
async fn tls_verification_uses_only_the_given_trust() {
    let Some(sink) = TlsSink::start() else { return };
    // System roots do not know the self-signed certificate.
    let mut h = sink.hop();
    h.ca_file = None;
    let err = send(
        &h,
        "a@example.test",
        &rcpts(&["b@example.test"]),
        b"x\r\n",
        None,
        None,
    )
    .await
    .unwrap_err();
    assert!(
        matches!(&err, DeliveryError::Temporary(m) if m.contains("certificate verify failed")),
        "{err:?}"
    );
    // A CA file with another certificate does not verify it either.
    let other = tempfile::NamedTempFile::new().unwrap();
    fs::write(other.path(), self_signed().0).unwrap();
    h.ca_file = Some(other.path().to_path_buf());
    let err = send(
        &h,
        "a@example.test",
        &rcpts(&["b@example.test"]),
        b"x\r\n",
        None,
        None,
    )
    .await
    .unwrap_err();
    assert!(
        matches!(&err, DeliveryError::Temporary(m) if m.contains("certificate verify failed")),
        "{err:?}"
    );
    // Opportunistic does not verify, and still encrypts.
    h.tls = TlsMode::Opportunistic;
    let out = send(
        &h,
        "a@example.test",
        &rcpts(&["b@example.test"]),
        b"x\r\n",
        None,
        None,
    )
    .await
    .unwrap();
    assert_eq!(out, vec![RcptOutcome::Accepted]);
    assert!(sink.saved(1).1.contains(r#""tls": true"#));
    // No TLS: this sink insists on STARTTLS before MAIL.
    h.tls = TlsMode::None;
    let err = send(
        &h,
        "a@example.test",
        &rcpts(&["b@example.test"]),
        b"x\r\n",
        None,
        None,
    )
    .await
    .unwrap_err();
    assert!(
        matches!(&err, DeliveryError::Permanent(m) if m.contains("530")),
        "{err:?}"
    );
    assert_eq!(sink.count(), 2, "only the opportunistic message was saved");
}

#[tokio::test]
async fn tls_hostname_must_match() {
    // Trusted (it is its own CA) but issued for another name, not for 127.0.0.1.
    let Some(sink) = TlsSink::start_with(self_signed_for("other.test", false)) else {
        return;
    };
    let err = send(
        &sink.hop(),
        "a@example.test",
        &rcpts(&["b@example.test"]),
        b"x\r\n",
        None,
        None,
    )
    .await
    .unwrap_err();
    assert!(
        matches!(&err, DeliveryError::Temporary(m) if m.contains("certificate verify failed") && m.contains("mismatch")),
        "{err:?}"
    );
    assert_eq!(sink.count(), 0);
}

/// Runs this test binary's `child_send` in a child process with SSL_CERT_FILE
/// set (process-wide environment cannot be changed safely inside the parallel
/// test process). Returns the child's one-line result.
fn run_child(ssl_cert_file: &Path, port: u16, ca_file: Option<&Path>) -> String {
    let mut cmd = Command::new(std::env::current_exe().unwrap());
    cmd.args([
        "--exact",
        "child_send",
        "--ignored",
        "--nocapture",
        "--test-threads=1",
    ])
    .env("SSL_CERT_FILE", ssl_cert_file)
    .env("SIKKERMAIL_CHILD_PORT", port.to_string());
    if let Some(ca) = ca_file {
        cmd.env("SIKKERMAIL_CHILD_CA", ca);
    }
    let out = cmd.output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    stdout
        .lines()
        .find_map(|l| l.split_once("CHILD_RESULT: ").map(|(_, r)| r))
        .unwrap_or_else(|| {
            panic!(
                "child gave no result: {stdout} {}",
                String::from_utf8_lossy(&out.stderr)
            )
        })
        .to_string()
}

#[tokio::test]
#[ignore = "helper run by ca_file_replaces_default_trust in a child process"]
async fn child_send() {
    let Ok(port) = std::env::var("SIKKERMAIL_CHILD_PORT") else {
        return;
    };
    let mut h = hop(port.parse().unwrap());
    h.tls = TlsMode::Required;
    h.auth = Some(("alice".into(), "secret".into()));
    h.ca_file = std::env::var_os("SIKKERMAIL_CHILD_CA").map(PathBuf::from);
    let r = send(
        &h,
        "a@example.test",
        &rcpts(&["b@example.test"]),
        b"x\r\n",
        None,
        None,
    )
    .await;
    println!("CHILD_RESULT: {r:?}");
}

#[tokio::test]
async fn ca_file_replaces_default_trust() {
    let Some(sink) = TlsSink::start() else { return };
    let sink_cert = sink.dir.path().join("srv.crt");
    // SSL_CERT_FILE stands in for the system roots, and is honoured without ca_file ...
    assert_eq!(run_child(&sink_cert, sink.port, None), "Ok([Accepted])");
    // ... but a configured ca_file is the only trust: the default roots are not added.
    let other = tempfile::NamedTempFile::new().unwrap();
    fs::write(other.path(), self_signed().0).unwrap();
    let r = run_child(&sink_cert, sink.port, Some(other.path()));
    assert!(r.contains("certificate verify failed"), "{r}");
    assert_eq!(sink.count(), 2, "one message (eml + json)");
}

#[tokio::test]
async fn tls_smtputf8_address() {
    let Some(sink) = TlsSink::start() else { return };
    let out = send(
        &sink.hop(),
        "ålice@example.test",
        &rcpts(&["bøb@example.test"]),
        b"Subject: utf8\r\n\r\nhi\r\n",
        None,
        None,
    )
    .await
    .unwrap();
    assert_eq!(out, vec![RcptOutcome::Accepted]);
    let (_, json) = sink.saved(1);
    assert!(json.contains(r#""SMTPUTF8""#), "{json}");
    assert!(
        json.contains(r#""rcpt_tos": ["b\u00f8b@example.test"]"#),
        "{json}"
    );
}

// ---------------------------------------------------------------- scripted in-process servers

#[derive(Clone, Copy, PartialEq, Debug)]
enum Fake {
    /// Multi-line greeting and EHLO reply written a byte at a time; mixed RCPT results.
    Dribble,
    /// PIPELINING offered; records how many commands arrived before the MAIL reply.
    Pipelining,
    /// A greeting of more than 64 KiB in many lines.
    HugeReply,
    /// A greeting line of 100 KiB without a line end.
    HugeLine,
    /// A greeting that is not SMTP.
    Garbage,
    /// Accepts and never says anything.
    Silent,
    /// Sends a plaintext reply right behind the 220 to STARTTLS.
    StartTlsInjection,
}

#[derive(Default, Debug)]
struct FakeLog {
    commands: Vec<String>,
    /// The DATA section as on the wire, up to and including "\r\n.\r\n".
    wire_data: Vec<u8>,
    /// Complete command lines buffered when MAIL was read (Pipelining).
    batch: usize,
}

async fn read_line(s: &mut TcpStream, buf: &mut Vec<u8>) -> Option<String> {
    loop {
        if let Some(p) = buf.iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = buf.drain(..=p).collect();
            return Some(String::from_utf8_lossy(&line).trim_end().to_string());
        }
        let mut tmp = [0u8; 4096];
        let n = s.read(&mut tmp).await.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&tmp[..n]);
    }
}

async fn put(s: &mut TcpStream, data: &[u8], dribble: bool) {
    if dribble {
        for b in data {
            if s.write_all(&[*b]).await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_micros(200)).await;
        }
    } else {
        let _ = s.write_all(data).await;
    }
}

async fn fake_server(mode: Fake) -> (u16, tokio::task::JoinHandle<FakeLog>) {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = l.local_addr().unwrap().port();
    let h = tokio::spawn(async move {
        let mut log = FakeLog::default();
        let (mut s, _) = l.accept().await.unwrap();
        s.set_nodelay(true).unwrap();
        let dribble = mode == Fake::Dribble;
        match mode {
            Fake::HugeReply => {
                let mut g = Vec::new();
                for _ in 0..2000 {
                    g.extend_from_slice(b"220-");
                    g.extend_from_slice(&[b'x'; 60]);
                    g.extend_from_slice(b"\r\n");
                }
                g.extend_from_slice(b"220 done\r\n");
                put(&mut s, &g, false).await;
            }
            Fake::HugeLine => put(&mut s, &vec![b'2'; 100 * 1024], false).await,
            Fake::Garbage => put(&mut s, b"HTTP/1.1 400 Bad Request\r\n\r\n", false).await,
            Fake::Silent => {}
            _ => {
                put(
                    &mut s,
                    b"220-fake.test ESMTP\r\n220-second line\r\n220 ready\r\n",
                    dribble,
                )
                .await;
            }
        }
        let mut buf = Vec::new();
        while let Some(line) = read_line(&mut s, &mut buf).await {
            log.commands.push(line.clone());
            let upper = line.to_ascii_uppercase();
            let reply: &[u8] = if upper.starts_with("EHLO") {
                match mode {
                    Fake::Pipelining => b"250-fake.test\r\n250-PIPELINING\r\n250 8BITMIME\r\n",
                    Fake::StartTlsInjection => b"250-fake.test\r\n250 STARTTLS\r\n",
                    _ => b"250-fake.test greets you\r\n250-SIZE 1000000\r\n250 8BITMIME\r\n",
                }
            } else if upper == "STARTTLS" {
                b"220 go ahead\r\n250 injected\r\n"
            } else if upper.starts_with("MAIL") {
                if mode == Fake::Pipelining {
                    tokio::time::sleep(Duration::from_millis(300)).await;
                    let mut tmp = [0u8; 4096];
                    while let Ok(Ok(n)) =
                        tokio::time::timeout(Duration::from_millis(50), s.read(&mut tmp)).await
                    {
                        if n == 0 {
                            break;
                        }
                        buf.extend_from_slice(&tmp[..n]);
                    }
                    log.batch = 1 + buf.iter().filter(|&&b| b == b'\n').count();
                }
                b"250 2.1.0 ok\r\n"
            } else if upper.starts_with("RCPT TO:<TEMP") {
                b"452 4.2.2 over quota\r\n"
            } else if upper.starts_with("RCPT TO:<PERM") {
                b"550-5.1.1 no such user\r\n550 5.1.1 really\r\n"
            } else if upper.starts_with("RCPT") {
                b"250 2.1.5 ok\r\n"
            } else if upper == "DATA" {
                put(&mut s, b"354 go\r\n", dribble).await;
                let mut data = std::mem::take(&mut buf);
                while !data.ends_with(b"\r\n.\r\n") {
                    let mut tmp = [0u8; 4096];
                    let n = s.read(&mut tmp).await.unwrap();
                    assert!(n > 0, "eof in data");
                    data.extend_from_slice(&tmp[..n]);
                }
                log.wire_data = data;
                b"250 2.0.0 queued as FAKE\r\n"
            } else if upper == "QUIT" {
                put(&mut s, b"221 bye\r\n", dribble).await;
                break;
            } else {
                b"250 ok\r\n"
            };
            put(&mut s, reply, dribble).await;
        }
        log
    });
    (port, h)
}

#[tokio::test]
async fn split_multiline_replies_and_mixed_outcomes() {
    let (port, server) = fake_server(Fake::Dribble).await;
    let body = b"Subject: wire\n\n.one\r\n..two\n.\nend";
    let out = send(
        &hop(port),
        "a@example.test",
        &rcpts(&[
            "ok@example.test",
            "temp@example.test",
            "perm@example.test",
            "ok2@example.test",
        ]),
        body,
        None,
        None,
    )
    .await
    .unwrap();
    assert_eq!(
        out,
        vec![
            RcptOutcome::Accepted,
            RcptOutcome::Temporary("452 4.2.2 over quota".into()),
            RcptOutcome::Permanent("550 5.1.1 no such user 5.1.1 really".into()),
            RcptOutcome::Accepted,
        ]
    );
    let log = server.await.unwrap();
    assert_eq!(
        String::from_utf8_lossy(&log.wire_data),
        "Subject: wire\r\n\r\n..one\r\n...two\r\n..\r\nend\r\n.\r\n"
    );
    assert_eq!(log.commands[0], "EHLO client.test");
    assert_eq!(
        log.commands[1],
        format!(
            "MAIL FROM:<a@example.test> SIZE={}",
            log.wire_data.len() - 3
        )
    );
    assert_eq!(log.commands.last().unwrap(), "QUIT");
}

#[tokio::test]
async fn pipelining_sends_mail_and_rcpts_in_one_go() {
    let (port, server) = fake_server(Fake::Pipelining).await;
    let out = send(
        &hop(port),
        "a@example.test",
        &rcpts(&["b@example.test", "c@example.test", "d@example.test"]),
        b"x\r\n",
        None,
        None,
    )
    .await
    .unwrap();
    assert_eq!(out, vec![RcptOutcome::Accepted; 3]);
    let log = server.await.unwrap();
    assert_eq!(
        log.batch, 4,
        "MAIL + 3 RCPT before the first reply: {log:?}"
    );
}

#[tokio::test]
async fn bad_servers_give_temporary_errors_without_panics() {
    for (mode, expect) in [
        (Fake::HugeReply, "64"),
        (Fake::HugeLine, "64"),
        (Fake::Garbage, "malformed"),
        (Fake::Silent, "timed out"),
        (Fake::StartTlsInjection, "after its STARTTLS reply"),
    ] {
        let (port, server) = fake_server(mode).await;
        let mut h = hop(port);
        h.command_timeout = Duration::from_millis(500);
        if mode == Fake::StartTlsInjection {
            h.tls = TlsMode::Opportunistic;
        }
        let t0 = Instant::now();
        let err = send(
            &h,
            "a@example.test",
            &rcpts(&["b@example.test"]),
            b"x\r\n",
            None,
            None,
        )
        .await
        .unwrap_err();
        assert!(
            matches!(&err, DeliveryError::Temporary(m) if m.contains(expect)),
            "{mode:?}: {err:?}"
        );
        assert!(
            t0.elapsed() < Duration::from_secs(5),
            "{mode:?} took {:?}",
            t0.elapsed()
        );
        server.abort();
    }
}

#[tokio::test]
async fn invalid_envelope_is_refused_before_connecting() {
    let port = free_port();
    let err = send(
        &hop(port),
        "a@example.test>\r\nRCPT TO:<evil@example.test",
        &rcpts(&["b@example.test"]),
        b"x\r\n",
        None,
        None,
    )
    .await
    .unwrap_err();
    assert!(matches!(err, DeliveryError::Permanent(_)), "{err:?}");
}

// ---------------------------------------------------------------- Maildir

#[test]
fn maildir_concurrent_deliveries_are_distinct_and_exact() {
    let root = tempfile::tempdir().unwrap();
    let threads: Vec<_> = (0..8)
        .map(|t| {
            let root = root.path().to_path_buf();
            std::thread::spawn(move || {
                (0..50)
                    .map(|i| {
                        let msg =
                            format!("Subject: {t}/{i}\r\n\r\nbody {t} {i}\r\n.\r\n").into_bytes();
                        // Mixed case: all must land in the same lowercased Maildir.
                        let mbox = if i % 2 == 0 {
                            "Bob@Example.Test"
                        } else {
                            "bob@example.test"
                        };
                        let p = maildir::deliver(&root, mbox, &msg).unwrap();
                        (p, msg)
                    })
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    let delivered: Vec<(PathBuf, Vec<u8>)> = threads
        .into_iter()
        .flat_map(|t| t.join().unwrap())
        .collect();
    assert_eq!(delivered.len(), 400);
    let md = root.path().join("bob@example.test");
    let new: HashSet<PathBuf> = fs::read_dir(md.join("new"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(new.len(), 400);
    for (p, msg) in &delivered {
        assert!(new.contains(p), "{p:?} not in new/");
        assert_eq!(&fs::read(p).unwrap(), msg);
    }
    assert_eq!(fs::read_dir(md.join("tmp")).unwrap().count(), 0);
    assert_eq!(fs::read_dir(md.join("cur")).unwrap().count(), 0);
    assert_eq!(
        fs::read_dir(root.path()).unwrap().count(),
        1,
        "one Maildir for both spellings"
    );
    use std::os::unix::fs::PermissionsExt;
    for d in [md.clone(), md.join("tmp"), md.join("new"), md.join("cur")] {
        assert_eq!(
            fs::metadata(&d).unwrap().permissions().mode() & 0o777,
            0o700,
            "{d:?}"
        );
    }
    let name = new
        .iter()
        .next()
        .unwrap()
        .file_name()
        .unwrap()
        .to_string_lossy()
        .to_string();
    assert!(
        name.contains(".M") && name.contains('P') && name.contains('Q') && name.contains('R'),
        "{name}"
    );
}

#[test]
fn maildir_refuses_unsafe_names() {
    let root = tempfile::tempdir().unwrap();
    let long = "a".repeat(300);
    for bad in [
        "",
        ".",
        "..",
        "../etc",
        ".hidden",
        "a/b",
        "/abs",
        "a\0b",
        "a\nb",
        long.as_str(),
    ] {
        let e = maildir::deliver(root.path(), bad, b"x").unwrap_err();
        assert_eq!(e.kind(), std::io::ErrorKind::InvalidInput, "{bad:?}");
        assert!(e.to_string().contains("invalid mailbox name"), "{e}");
    }
    assert_eq!(
        fs::read_dir(root.path()).unwrap().count(),
        0,
        "nothing created"
    );
}

// ---------------------------------------------------------------- DSN

const PARSE_PY: &str = r#"
import sys, email
raw = sys.stdin.buffer.read()
m = email.message_from_bytes(raw)
def esc(s): return str(s).replace("\\", "\\\\").replace("\r", "\\r").replace("\n", "\\n")
def out(k, v): print(k + "\t" + esc(v))
out("is_multipart", m.is_multipart())
out("content_type", m.get_content_type())
out("report_type", m.get_param("report-type"))
for k, v in m.items(): out("header", k + ": " + v)
for d in m.defects: out("defect", repr(d))
parts = m.get_payload()
out("nparts", len(parts))
for p in parts:
    out("part", p.get_content_type())
    for d in p.defects: out("defect", repr(d))
out("explanation", parts[0].get_payload(decode=True).decode("utf-8"))
for i, block in enumerate(parts[1].get_payload()):
    for k, v in block.items(): out("ds%d" % i, k + ": " + v)
att = parts[2]
if att.get_content_type() == "message/rfc822":
    inner = att.get_payload(0)
    for k, v in inner.items(): out("inner_header", k + ": " + v)
    out("inner_body", inner.get_payload())
else:
    out("attached_text", att.get_payload(decode=True).decode("utf-8", "replace"))
"#;

/// Parses a DSN with Python's `email` package; returns (key, value) lines.
fn py_parse(msg: &[u8]) -> Option<Vec<(String, String)>> {
    let py = tool("python3")?;
    let mut child = Command::new(py)
        .args(["-c", PARSE_PY])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(msg).unwrap();
    let mut stdout = String::new();
    child
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut stdout)
        .unwrap();
    let o = child.wait_with_output().unwrap();
    assert!(
        o.status.success(),
        "python: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    Some(
        stdout
            .lines()
            .map(|l| {
                let (k, v) = l.split_once('\t').unwrap();
                (
                    k.to_string(),
                    v.replace("\\n", "\n")
                        .replace("\\r", "\r")
                        .replace("\\\\", "\\"),
                )
            })
            .collect(),
    )
}

fn get<'a>(kv: &'a [(String, String)], key: &str) -> Vec<&'a str> {
    kv.iter()
        .filter(|(k, _)| k == key)
        .map(|(_, v)| v.as_str())
        .collect()
}

const ORIGINAL: &[u8] = b"From: alice@example.test\r\nTo: bob@example.test\r\nSubject: original subject\r\nMessage-ID: <orig@example.test>\r\n\r\nSECRET BODY LINE one\r\n--not-a-boundary\r\nSECRET BODY LINE two\r\n";

fn sample_dsn(ret_full: bool, diagnostic: &str) -> Vec<u8> {
    dsn::build(&Dsn {
        reporting_mta: "gw.example.test",
        postmaster: "MAILER-DAEMON@gw.example.test",
        to: "alice@example.test",
        envid: Some("ENV123"),
        arrival_date: 1_764_075_000,
        recipients: vec![
            DsnRecipient {
                final_recipient: "bob@example.test".into(),
                original_recipient: Some("rfc822;Bob@Example.test".into()),
                action: Action::Failed,
                status: "5.7.1".into(),
                diagnostic: Some(diagnostic.into()),
                remote_mta: Some("mx.example.test".into()),
            },
            DsnRecipient {
                final_recipient: "carol@example.test\r\nX-Evil: 1".into(),
                original_recipient: None,
                action: Action::Delayed,
                status: "bogus".into(),
                diagnostic: Some("connection timed out".into()),
                remote_mta: None,
            },
        ],
        explanation: "This is the mail system at gw.example.test.\nYour message could not be delivered.\n",
        original: ORIGINAL,
        ret_full,
    })
}

#[test]
fn dsn_headers_only_is_valid_multipart_report() {
    let msg = sample_dsn(
        false,
        "smtp; 550 5.7.1 rejected\r\nBcc: victim@example.test",
    );
    let Some(kv) = py_parse(&msg) else { return };
    assert_eq!(get(&kv, "is_multipart"), ["True"]);
    assert_eq!(get(&kv, "content_type"), ["multipart/report"]);
    assert_eq!(get(&kv, "report_type"), ["delivery-status"]);
    assert_eq!(get(&kv, "defect"), Vec::<&str>::new());
    assert_eq!(
        get(&kv, "part"),
        [
            "text/plain",
            "message/delivery-status",
            "text/rfc822-headers"
        ]
    );
    let headers = get(&kv, "header");
    for want in [
        "From: Mail Delivery System <MAILER-DAEMON@gw.example.test>",
        "To: <alice@example.test>",
        "Subject: Undelivered Mail Returned to Sender",
        "Auto-Submitted: auto-replied",
        "MIME-Version: 1.0",
    ] {
        assert!(headers.contains(&want), "{want} missing in {headers:?}");
    }
    assert!(headers.iter().any(|h| h.starts_with("Date: ")));
    assert!(
        headers
            .iter()
            .any(|h| h.starts_with("Message-ID: <") && h.ends_with("@gw.example.test>"))
    );
    assert!(
        !headers
            .iter()
            .any(|h| h.to_ascii_lowercase().starts_with("bcc")),
        "{headers:?}"
    );
    assert_eq!(
        get(&kv, "ds0"),
        [
            "Reporting-MTA: dns; gw.example.test",
            "Original-Envelope-Id: ENV123",
            "Arrival-Date: Tue, 25 Nov 2025 12:50:00 +0000",
        ]
    );
    let r1 = get(&kv, "ds1");
    assert_eq!(
        r1[..5],
        [
            "Final-Recipient: rfc822; bob@example.test",
            "Original-Recipient: rfc822; Bob@Example.test",
            "Action: failed",
            "Status: 5.7.1",
            "Remote-MTA: dns; mx.example.test",
        ]
    );
    assert_eq!(r1.len(), 6, "{r1:?}");
    assert!(
        r1[5].starts_with("Diagnostic-Code: smtp; 550 5.7.1 rejected"),
        "{r1:?}"
    );
    assert!(
        r1[5].contains("Bcc: victim"),
        "kept as text inside the field"
    );
    let r2 = get(&kv, "ds2");
    assert_eq!(
        r2,
        [
            "Final-Recipient: rfc822; carol@example.test X-Evil: 1",
            "Action: delayed",
            "Status: 4.0.0",
            "Diagnostic-Code: X-Sikkermail; connection timed out",
        ]
    );
    assert!(
        !kv.iter()
            .any(|(k, v)| k.starts_with("ds") && v.starts_with("Bcc"))
    );
    let att = get(&kv, "attached_text");
    assert_eq!(att.len(), 1);
    assert!(att[0].contains("Subject: original subject"));
    assert_eq!(
        get(&kv, "explanation"),
        ["This is the mail system at gw.example.test.\r\nYour message could not be delivered.\r\n"]
    );
    // No body line of the original anywhere in the DSN.
    let text = String::from_utf8_lossy(&msg);
    assert!(!text.contains("SECRET BODY"), "{text}");
    // CRLF only.
    assert!(!msg.windows(2).any(|w| w[1] == b'\n' && w[0] != b'\r'));
}

#[test]
fn dsn_ret_full_attaches_the_original() {
    let msg = sample_dsn(true, "smtp; 550 5.7.1 rejected");
    let Some(kv) = py_parse(&msg) else { return };
    assert_eq!(get(&kv, "defect"), Vec::<&str>::new());
    assert_eq!(
        get(&kv, "part"),
        ["text/plain", "message/delivery-status", "message/rfc822"]
    );
    assert!(get(&kv, "inner_header").contains(&"Subject: original subject"));
    assert_eq!(
        get(&kv, "inner_body"),
        ["SECRET BODY LINE one\r\n--not-a-boundary\r\nSECRET BODY LINE two\r\n"]
    );
}

#[test]
fn dsn_boundary_never_occurs_in_the_original() {
    // An original that contains every boundary a lazy generator might pick is
    // not possible; instead check the chosen one against a hostile original
    // made of boundary-like lines, then reparse.
    let mut original = b"Subject: b\r\n\r\n".to_vec();
    for i in 0..50 {
        original.extend_from_slice(format!("--=_sikkermail_{i}\r\n--=_sikkermail_\r\n").as_bytes());
    }
    let msg = dsn::build(&Dsn {
        reporting_mta: "gw",
        postmaster: "MAILER-DAEMON@gw",
        to: "a@x",
        envid: None,
        arrival_date: 0,
        recipients: vec![DsnRecipient {
            final_recipient: "b@x".into(),
            original_recipient: None,
            action: Action::Delivered,
            status: "2.0.0".into(),
            diagnostic: None,
            remote_mta: None,
        }],
        explanation: "ok",
        original: &original,
        ret_full: true,
    });
    let text = String::from_utf8_lossy(&msg).to_string();
    let boundary = text
        .split("boundary=\"")
        .nth(1)
        .unwrap()
        .split('"')
        .next()
        .unwrap();
    assert!(boundary.starts_with("=_sikkermail_"), "{boundary}");
    assert!(
        !original
            .windows(boundary.len())
            .any(|w| w == boundary.as_bytes())
    );
    assert!(text.contains("Subject: Successful Mail Delivery Report"));
    let Some(kv) = py_parse(&msg) else { return };
    assert_eq!(get(&kv, "nparts"), ["3"]);
    assert_eq!(get(&kv, "defect"), Vec::<&str>::new());
    assert_eq!(
        get(&kv, "ds0"),
        [
            "Reporting-MTA: dns; gw",
            "Arrival-Date: Thu, 01 Jan 1970 00:00:00 +0000"
        ]
    );
}

#[test]
fn dsn_header_injection_in_every_string_field() {
    let evil = "x@y\r\nBcc: victim@example.test\r\n\r\nbody";
    let msg = dsn::build(&Dsn {
        reporting_mta: evil,
        postmaster: evil,
        to: evil,
        envid: Some(evil),
        arrival_date: 0,
        recipients: vec![DsnRecipient {
            final_recipient: evil.into(),
            original_recipient: Some(evil.into()),
            action: Action::Failed,
            status: "5.1.1\r\nBcc: v".into(),
            diagnostic: Some(format!("smtp; 550 {evil}")),
            remote_mta: Some(evil.into()),
        }],
        explanation: "x",
        original: b"Subject: s\r\n\r\nb\r\n",
        ret_full: false,
    });
    let Some(kv) = py_parse(&msg) else { return };
    for (k, v) in &kv {
        if k == "header" || k.starts_with("ds") {
            assert!(!v.to_ascii_lowercase().starts_with("bcc"), "{k}: {v}");
        }
    }
    assert_eq!(get(&kv, "defect"), Vec::<&str>::new());
    assert!(get(&kv, "ds1").contains(&"Status: 5.0.0"));
}

#[test]
fn should_notify_follows_rfc3461() {
    use Action::*;
    assert!(dsn::should_notify(None, Failed));
    assert!(dsn::should_notify(None, Delayed));
    assert!(!dsn::should_notify(None, Delivered));
    for a in [Failed, Delayed, Delivered] {
        assert!(!dsn::should_notify(Some("NEVER"), a));
    }
    assert!(dsn::should_notify(Some("SUCCESS"), Delivered));
    assert!(!dsn::should_notify(Some("SUCCESS"), Failed));
    assert!(dsn::should_notify(Some("failure,delay"), Delayed));
    assert!(!dsn::should_notify(Some("FAILURE"), Delayed));
}

#[test]
fn backoff_doubles_up_to_the_cap_with_jitter() {
    let cap = Duration::from_secs(3600);
    let mut prev_max = Duration::ZERO;
    for attempt in 1..=20u32 {
        let nominal = (60.0 * 2f64.powi(attempt as i32 - 1)).min(3600.0);
        let samples: Vec<Duration> = (0..200).map(|_| dsn::backoff(attempt)).collect();
        let min = *samples.iter().min().unwrap();
        let max = *samples.iter().max().unwrap();
        assert!(
            min.as_secs_f64() >= nominal * 0.9 - 1e-6,
            "attempt {attempt}: {min:?}"
        );
        assert!(
            max.as_secs_f64() <= nominal * 1.1 + 1e-6,
            "attempt {attempt}: {max:?}"
        );
        assert!(max <= cap, "attempt {attempt}: {max:?} over the cap");
        assert!(max > min, "attempt {attempt}: no jitter");
        if nominal < 3600.0 {
            assert!(
                min > prev_max,
                "attempt {attempt}: not increasing ({min:?} <= {prev_max:?})"
            );
        }
        prev_max = max;
    }
    assert!(dsn::backoff(0) <= Duration::from_secs(66));
    assert!(dsn::backoff(u32::MAX) <= cap);
}
