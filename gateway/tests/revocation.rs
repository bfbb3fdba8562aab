//! Revocation data fetched from real peers on loopback (issue 9 §3, §4):
//! OCSP from `openssl ocsp -index ... -port` (good, revoked, unknown, a
//! response signed by the wrong key) and an expired response made with
//! Python `cryptography`; CRLs served over HTTP by Python's `http.server`
//! (good, revoked, unreachable, oversized); answers cached in the store and
//! used while the responders are gone.
//!
//! Skips loudly without `openssl` or `python3`; fails instead under
//! `SIKKERMAIL_REQUIRE_PEERS=1`.

#![allow(clippy::unwrap_used)]

use std::fs;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use gateway::revocation::{Fetcher, Limits, Verdict};
use openssl::x509::X509;
use smime::TrustStore;
use store::{Kek, MasterKeys, Store};

fn have(tool: &str) -> bool {
    let ok = Command::new("sh")
        .arg("-c")
        .arg(format!("command -v {tool}"))
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !ok {
        assert!(
            std::env::var("SIKKERMAIL_REQUIRE_PEERS").as_deref() != Ok("1"),
            "{tool} missing and SIKKERMAIL_REQUIRE_PEERS=1"
        );
        eprintln!("!!! SKIPPING revocation test: {tool} not found");
    }
    ok
}

fn sh(dir: &Path, cmd: &str) {
    let o = Command::new("sh")
        .arg("-c")
        .arg(cmd)
        .current_dir(dir)
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "`{cmd}` failed: {}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Waits until something answers HTTP on `port`. The probe is a whole
/// request: `openssl ocsp` serves one connection at a time and stalls on
/// one that sends nothing.
fn wait_port(port: u16) {
    use std::io::{Read, Write};
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", port)) {
            let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
            let _ = s.write_all(b"GET / HTTP/1.0\r\n\r\n");
            let mut buf = Vec::new();
            let _ = s.read_to_end(&mut buf);
            return;
        }
        assert!(Instant::now() < deadline, "nothing listens on {port}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A background server, killed when dropped.
struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn spawn(dir: &Path, cmd: &str, port: u16) -> Server {
    let child = Command::new("sh")
        .arg("-c")
        .arg(format!("exec {cmd}"))
        .current_dir(dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    wait_port(port);
    Server(child)
}

/// The PKI: a root CA run with `openssl ca` (its index is what the OCSP
/// responder answers from), a delegated OCSP responder, and leaves whose
/// AIA and CRL distribution points name loopback ports.
struct Pki {
    dir: PathBuf,
    ocsp: u16,
    wrong: u16,
    expired: u16,
    http: u16,
    dead: u16,
}

impl Pki {
    fn new(dir: &Path) -> Pki {
        let p = Pki {
            dir: dir.to_path_buf(),
            ocsp: free_port(),
            wrong: free_port(),
            expired: free_port(),
            http: free_port(),
            dead: free_port(),
        };
        fs::write(dir.join("index.txt"), "").unwrap();
        fs::write(dir.join("crlnumber"), "01\n").unwrap();
        fs::create_dir(dir.join("new")).unwrap();
        fs::create_dir(dir.join("www")).unwrap();
        fs::write(
            dir.join("ca.cnf"),
            format!(
                "[ca]\ndefault_ca=x\n[x]\ndir={d}\ndatabase={d}/index.txt\ncrlnumber={d}/crlnumber\nnew_certs_dir={d}/new\n\
                 serial={d}/serial\ndefault_md=sha256\ndefault_days=30\ndefault_crl_days=7\npolicy=any\n\
                 certificate={d}/ca.crt\nprivate_key={d}/ca.key\nunique_subject=no\n[any]\ncommonName=supplied\n",
                d = dir.display()
            ),
        )
        .unwrap();
        fs::write(dir.join("serial"), "1000\n").unwrap();
        sh(
            dir,
            "openssl req -x509 -newkey rsa:2048 -nodes -days 30 -subj '/CN=Revocation Test Root' \
             -addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign,cRLSign \
             -keyout ca.key -out ca.crt 2>/dev/null",
        );
        p.issue("ocsp-responder", "extendedKeyUsage=OCSPSigning\n");
        // A responder key the CA never certified.
        sh(
            dir,
            "openssl req -x509 -newkey rsa:2048 -nodes -days 30 -subj '/CN=Not The Responder' \
             -keyout wrong.key -out wrong.crt 2>/dev/null",
        );
        p
    }

    fn aia(&self, port: u16) -> String {
        format!("authorityInfoAccess=OCSP;URI:http://127.0.0.1:{port}/\n")
    }

    fn cdp(&self, port: u16, file: &str) -> String {
        format!("crlDistributionPoints=URI:http://127.0.0.1:{port}/{file}\n")
    }

    /// Issues `name` with `openssl ca` (so it is in the index).
    fn issue(&self, name: &str, ext: &str) -> String {
        self.make(
            name,
            ext,
            "openssl ca -batch -config ca.cnf -extfile {name}.ext -in {name}.csr -out {name}.crt",
        )
    }

    /// Signs `name` outside `openssl ca`: the responder does not know it.
    fn issue_unknown(&self, name: &str, ext: &str) {
        self.make(
            name,
            ext,
            "openssl x509 -req -in {name}.csr -CA ca.crt -CAkey ca.key -set_serial 0x77777 -days 30 -extfile {name}.ext -out {name}.crt",
        );
    }

    /// A key and request for `name`, signed by `sign` (`{name}` replaced).
    fn make(&self, name: &str, ext: &str, sign: &str) -> String {
        fs::write(
            self.dir.join(format!("{name}.ext")),
            format!("basicConstraints=CA:FALSE\nkeyUsage=digitalSignature\n{ext}"),
        )
        .unwrap();
        let sign = sign.replace("{name}", name);
        sh(
            &self.dir,
            &format!(
                "openssl req -newkey rsa:2048 -nodes -subj '/CN={name}' -keyout {name}.key -out {name}.csr 2>/dev/null && {sign} 2>/dev/null"
            ),
        );
        self.dir.join(format!("{name}.crt")).display().to_string()
    }

    fn chain(&self, leaf: &str) -> Vec<Vec<u8>> {
        let der = |n: &str| {
            X509::from_pem(&fs::read(self.dir.join(format!("{n}.crt"))).unwrap())
                .unwrap()
                .to_der()
                .unwrap()
        };
        vec![der(leaf), der("ca")]
    }

    fn trust(&self) -> TrustStore {
        let ca = X509::from_pem(&fs::read(self.dir.join("ca.crt")).unwrap()).unwrap();
        // As the gateway builds it: for S/MIME signing (the OCSP responder is
        // checked for its own purpose all the same).
        TrustStore::new(vec![ca], vec![], vec![]).unwrap()
    }
}

/// An OCSP response for `cert` that expired yesterday, signed by the
/// delegated responder (Python `cryptography`), served to any POST.
const EXPIRED_SERVER: &str = r#"
import datetime, sys, http.server
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.x509 import ocsp
d, port = sys.argv[1], int(sys.argv[2])
load = lambda n: x509.load_pem_x509_certificate(open(f"{d}/{n}.crt", "rb").read())
cert, ca, resp = load("expired"), load("ca"), load("ocsp-responder")
key = serialization.load_pem_private_key(open(f"{d}/ocsp-responder.key", "rb").read(), None)
now = datetime.datetime.now(datetime.timezone.utc)
b = ocsp.OCSPResponseBuilder().add_response(
    cert=cert, issuer=ca, algorithm=hashes.SHA1(), cert_status=ocsp.OCSPCertStatus.GOOD,
    this_update=now - datetime.timedelta(days=2), next_update=now - datetime.timedelta(days=1),
    revocation_time=None, revocation_reason=None,
).responder_id(ocsp.OCSPResponderEncoding.HASH, resp).certificates([resp])
body = b.sign(key, hashes.SHA256()).public_bytes(serialization.Encoding.DER)
class H(http.server.BaseHTTPRequestHandler):
    def do_POST(self):
        self.rfile.read(int(self.headers.get("Content-Length", "0")))
        self.send_response(200)
        self.send_header("Content-Type", "application/ocsp-response")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *a):
        pass
http.server.HTTPServer(("127.0.0.1", port), H).serve_forever()
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ocsp_and_crls_fetched_checked_and_cached() {
    if !have("openssl") || !have("python3") {
        return;
    }
    let t = tempfile::tempdir().unwrap();
    let d = t.path();
    let pki = Pki::new(d);
    // Leaves: by OCSP (good, revoked, unknown, wrong responder key, expired
    // answer), by CRL (good, revoked, unreachable, oversized), none.
    pki.issue("ocsp-good", &pki.aia(pki.ocsp));
    pki.issue("ocsp-revoked", &pki.aia(pki.ocsp));
    pki.issue_unknown("ocsp-unknown", &pki.aia(pki.ocsp));
    pki.issue("ocsp-wrongkey", &pki.aia(pki.wrong));
    pki.issue("expired", &pki.aia(pki.expired));
    pki.issue("crl-good", &pki.cdp(pki.http, "ca.crl"));
    pki.issue("crl-revoked", &pki.cdp(pki.http, "ca.crl"));
    pki.issue("crl-dead", &pki.cdp(pki.dead, "ca.crl"));
    pki.issue("crl-big", &pki.cdp(pki.http, "big.crl"));
    pki.issue("nothing", "");
    // OCSP falls back to the CRL when the responder cannot answer.
    pki.issue(
        "fallback",
        &format!("{}{}", pki.aia(pki.dead), pki.cdp(pki.http, "ca.crl")),
    );
    sh(
        d,
        "openssl ca -batch -config ca.cnf -revoke ocsp-revoked.crt -crl_reason keyCompromise 2>/dev/null",
    );
    sh(
        d,
        "openssl ca -batch -config ca.cnf -revoke crl-revoked.crt -crl_reason superseded 2>/dev/null",
    );
    sh(
        d,
        "openssl ca -batch -config ca.cnf -gencrl -out ca.crl.pem 2>/dev/null && openssl crl -in ca.crl.pem -outform DER -out www/ca.crl",
    );
    fs::write(d.join("www/big.crl"), vec![0x30u8; 11 * 1024 * 1024]).unwrap();
    fs::write(d.join("expired.py"), EXPIRED_SERVER).unwrap();

    let ocsp = spawn(
        d,
        &format!(
            "openssl ocsp -ignore_err -index index.txt -port {} -rsigner ocsp-responder.crt -rkey ocsp-responder.key -CA ca.crt -nmin 10",
            pki.ocsp
        ),
        pki.ocsp,
    );
    let _wrong = spawn(
        d,
        &format!(
            "openssl ocsp -ignore_err -index index.txt -port {} -rsigner wrong.crt -rkey wrong.key -CA ca.crt -nmin 10",
            pki.wrong
        ),
        pki.wrong,
    );
    let _expired = spawn(
        d,
        &format!("python3 expired.py {} {}", d.display(), pki.expired),
        pki.expired,
    );
    let http = spawn(
        d,
        &format!(
            "python3 -m http.server {} --bind 127.0.0.1 --directory www",
            pki.http
        ),
        pki.http,
    );

    let kek = Kek::generate().unwrap();
    let store = Store::open(
        &format!("sqlite://{}?mode=rwc", d.join("cache.db").display()),
        MasterKeys::single(kek),
    )
    .await
    .unwrap();
    let f = Fetcher::new(
        Some(store.clone()),
        Limits {
            timeout: Duration::from_secs(5),
            ..Limits::default()
        },
    );
    let trust = pki.trust();
    let check = |leaf: &str| {
        let (f, chain, trust) = (f.clone(), pki.chain(leaf), &trust);
        async move { f.check_chain(&chain, trust).await }
    };

    let good = |v: Verdict, src: &str| match v {
        Verdict::Good(notes) => assert!(notes.iter().any(|n| n.contains(src)), "{notes:?}"),
        other => panic!("expected good by {src}, got {other:?}"),
    };
    let revoked = |v: Verdict, src: &str| match v {
        Verdict::Revoked(why) => assert!(why.contains(src), "{why}"),
        other => panic!("expected revoked by {src}, got {other:?}"),
    };
    let unavailable = |v: Verdict, what: &str| match v {
        Verdict::Unavailable(why) => assert!(why.contains(what), "expected {what:?} in {why}"),
        other => panic!("expected unavailable ({what}), got {other:?}"),
    };

    good(check("ocsp-good").await, "OCSP http://127.0.0.1");
    revoked(check("ocsp-revoked").await, "keyCompromise");
    unavailable(check("ocsp-unknown").await, "does not know");
    unavailable(check("ocsp-wrongkey").await, "signature does not verify");
    unavailable(check("expired").await, "expired");
    good(check("crl-good").await, "CRL http://127.0.0.1");
    revoked(
        check("crl-revoked").await,
        "revoked (superseded; CRL http://",
    );
    unavailable(check("crl-dead").await, "cannot connect");
    unavailable(check("crl-big").await, "larger than");
    unavailable(check("nothing").await, "names no OCSP responder or CRL");
    good(check("fallback").await, "CRL http://");

    // Cached until nextUpdate: with the responder and the web server gone,
    // the same answers come from the store.
    let cached = store.revocation_count().await.unwrap();
    assert!(cached >= 3, "{cached} cached answers");
    drop(ocsp);
    drop(http);
    good(check("ocsp-good").await, "OCSP");
    revoked(check("ocsp-revoked").await, "keyCompromise");
    good(check("crl-good").await, "CRL");
    revoked(
        check("crl-revoked").await,
        "revoked (superseded; CRL http://",
    );
    // What was never cached is unavailable now.
    pki.issue("late", &pki.aia(pki.ocsp));
    unavailable(check("late").await, "cannot connect");
}

/// A responder that accepts the connection and never answers costs the
/// deadline, not more; a redirect to another scheme is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_and_redirecting_servers_are_bounded() {
    let silent = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = silent.local_addr().unwrap().port();
    let f = Fetcher::new(
        None,
        Limits {
            timeout: Duration::from_millis(500),
            ..Limits::default()
        },
    );
    let t0 = Instant::now();
    let e = f
        .fetch(&format!("http://127.0.0.1:{port}/x.crl"), None, 1024)
        .await
        .unwrap_err();
    assert!(e.contains("no answer within"), "{e}");
    assert!(t0.elapsed() < Duration::from_secs(5));
    // Asked again at once: the failure is remembered, no second wait.
    let t1 = Instant::now();
    let e = f
        .fetch(&format!("http://127.0.0.1:{port}/x.crl"), None, 1024)
        .await
        .unwrap_err();
    assert!(e.contains("asked again after"), "{e}");
    assert!(
        t1.elapsed() < Duration::from_millis(400),
        "{:?}",
        t1.elapsed()
    );
    drop(silent);

    // A redirect to https:// is refused; to http:// it is followed.
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    std::thread::spawn(move || {
        use std::io::{Read, Write};
        for (i, s) in l.incoming().enumerate() {
            let mut s = s.unwrap();
            let mut buf = [0u8; 4096];
            let n = s.read(&mut buf).unwrap_or(0);
            let req = String::from_utf8_lossy(&buf[..n]).into_owned();
            let answer = if req.starts_with("GET /tls") {
                "HTTP/1.0 302 Found\r\nLocation: https://127.0.0.1/x.crl\r\n\r\n".to_string()
            } else if req.starts_with("GET /moved") {
                format!("HTTP/1.0 301 Moved\r\nLocation: http://127.0.0.1:{port}/here\r\n\r\n")
            } else {
                "HTTP/1.0 200 OK\r\nContent-Length: 5\r\n\r\nhello".to_string()
            };
            let _ = s.write_all(answer.as_bytes());
            if i > 10 {
                break;
            }
        }
    });
    let f = Fetcher::new(None, Limits::default());
    let e = f
        .fetch(&format!("http://127.0.0.1:{port}/tls"), None, 1024)
        .await
        .unwrap_err();
    assert!(e.contains("another scheme refused"), "{e}");
    let body = f
        .fetch(&format!("http://127.0.0.1:{port}/moved"), None, 1024)
        .await
        .unwrap();
    assert_eq!(body, b"hello");
}

/// The policy's `revocation` setting in the inbound path, with a real OCSP
/// responder: `require` keeps a signer whose chain is answered for and
/// makes one without revocation data `unknown`; `prefer` lets that one be
/// valid but enforces a revocation; `off` checks nothing.
#[test]
fn the_revocation_rule_decides_in_the_inbound_path() {
    if !have("openssl") {
        return;
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let t = tempfile::tempdir().unwrap();
    let d = t.path();
    let pki = Pki::new(d);
    let san = |who: &str| {
        format!("subjectAltName=email:{who}@ret.test\nextendedKeyUsage=emailProtection\n")
    };
    pki.issue("good", &format!("{}{}", pki.aia(pki.ocsp), san("good")));
    pki.issue(
        "revoked",
        &format!("{}{}", pki.aia(pki.ocsp), san("revoked")),
    );
    pki.issue("bare", &san("bare"));
    sh(
        d,
        "openssl ca -batch -config ca.cnf -revoke revoked.crt -crl_reason keyCompromise 2>/dev/null",
    );
    let _ocsp = spawn(
        d,
        &format!(
            "openssl ocsp -ignore_err -index index.txt -port {} -rsigner ocsp-responder.crt -rkey ocsp-responder.key -CA ca.crt -nmin 10",
            pki.ocsp
        ),
        pki.ocsp,
    );
    fs::write(
        d.join("inner.txt"),
        "Content-Type: text/plain\r\n\r\nKendelse.\r\n",
    )
    .unwrap();
    for who in ["good", "revoked", "bare"] {
        sh(
            d,
            &format!(
                "openssl cms -sign -in inner.txt -signer {who}.crt -inkey {who}.key -from {who}@ret.test -to post@firma.test -subject {who} -out {who}.eml"
            ),
        );
    }
    let keys = service::MailKeys {
        decrypt: smime::MemoryKeyring::new(),
        skipped: Vec::new(),
        signers: Vec::new(),
        ca: Vec::new(),
        labels: Default::default(),
    };
    let trust = pki.trust();
    let fetcher = {
        let _g = rt.enter();
        Fetcher::new(None, Limits::default())
    };
    let verdict = |who: &str, rule: &str| {
        let policy =
            policies::Policy::parse(&format!("[default]\nrevocation = \"{rule}\"\n")).unwrap();
        let raw = fs::read(d.join(format!("{who}.eml"))).unwrap();
        let r = gateway::process::inbound::process(&raw, &keys, &trust, &policy, Some(&fetcher));
        let msg = String::from_utf8_lossy(&r.message).into_owned();
        let header = msg
            .lines()
            .find_map(|l| l.strip_prefix("X-Sikkermail-Signature: "))
            .unwrap_or("")
            .to_string();
        (r.signature, header)
    };
    assert_eq!(
        verdict("good", "require"),
        ("valid", "valid; signer=good@ret.test".into())
    );
    let (s, h) = verdict("revoked", "prefer");
    assert_eq!(s, "invalid", "{h}");
    assert!(
        h.contains("revoked (keyCompromise; OCSP http://127.0.0.1:"),
        "{h}"
    );
    assert_eq!(verdict("revoked", "off").0, "valid");
    let (s, h) = verdict("bare", "require");
    assert_eq!(s, "unknown", "{h}");
    assert!(
        h.starts_with("unknown (revocation unavailable: no revocation data for CN=bare"),
        "{h}"
    );
    assert_eq!(verdict("bare", "prefer").0, "valid");
}

/// Every level of the chain is asked, even after one with no answer: a
/// certificate that names no responder, under an intermediate CA that its
/// root revoked, is revoked; the answers that were had are reported.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_level_is_asked_after_one_without_an_answer() {
    if !have("openssl") || !have("python3") {
        return;
    }
    let t = tempfile::tempdir().unwrap();
    let d = t.path();
    let pki = Pki::new(d);
    fs::write(
        d.join("inter.ext"),
        format!(
            "basicConstraints=critical,CA:TRUE\nkeyUsage=critical,keyCertSign,cRLSign\n{}",
            pki.cdp(pki.http, "ca.crl")
        ),
    )
    .unwrap();
    fs::write(
        d.join("under.ext"),
        "basicConstraints=CA:FALSE\nkeyUsage=digitalSignature\n",
    )
    .unwrap();
    sh(
        d,
        "openssl req -newkey rsa:2048 -nodes -subj '/CN=inter' -keyout inter.key -out inter.csr 2>/dev/null && \
         openssl ca -batch -config ca.cnf -extfile inter.ext -in inter.csr -out inter.crt 2>/dev/null && \
         openssl req -newkey rsa:2048 -nodes -subj '/CN=under' -keyout under.key -out under.csr 2>/dev/null && \
         openssl x509 -req -in under.csr -CA inter.crt -CAkey inter.key -set_serial 5 -days 30 -extfile under.ext -out under.crt 2>/dev/null && \
         openssl ca -batch -config ca.cnf -gencrl -out good.crl.pem 2>/dev/null && \
         openssl crl -in good.crl.pem -outform DER -out www/ca.crl",
    );
    let _http = spawn(
        d,
        &format!(
            "python3 -m http.server {} --bind 127.0.0.1 --directory www",
            pki.http
        ),
        pki.http,
    );
    let f = Fetcher::new(None, Limits::default());
    let trust = pki.trust();
    let chain = {
        let mut c = pki.chain("under");
        c.insert(1, pki.chain("inter").remove(0));
        c
    };
    // Not revoked yet: unavailable for `under`, with the CA's answer said.
    match f.check_chain(&chain, &trust).await {
        Verdict::Unavailable(why) => assert!(
            why.starts_with("no revocation data for CN=under")
                && why.contains("CN=inter: not revoked (CRL http://127.0.0.1:"),
            "{why}"
        ),
        v => panic!("{v:?}"),
    }
    // The root revokes the intermediate CA: the chain is revoked.
    sh(
        d,
        "openssl ca -batch -config ca.cnf -revoke inter.crt -crl_reason keyCompromise 2>/dev/null && \
         openssl ca -batch -config ca.cnf -gencrl -out bad.crl.pem 2>/dev/null && \
         openssl crl -in bad.crl.pem -outform DER -out www/ca.crl",
    );
    let f = Fetcher::new(None, Limits::default());
    match f.check_chain(&chain, &trust).await {
        Verdict::Revoked(why) => assert!(
            why.starts_with("certificate of CN=inter revoked (keyCompromise; CRL http://"),
            "{why}"
        ),
        v => panic!("{v:?}"),
    }
}
