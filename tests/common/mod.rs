//! Shared set-up for the end-to-end tests: a throw-away PKI made at test
//! time, the peers' presence checks, and running the `sikkermail` binary.

#![allow(dead_code, clippy::unwrap_used)]

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;

use openssl::asn1::{Asn1Integer, Asn1Time};
use openssl::bn::BigNum;
use openssl::ec::{EcGroup, EcKey};
use openssl::hash::MessageDigest;
use openssl::nid::Nid;
use openssl::pkey::{PKey, Private};
use openssl::rsa::Rsa;
use openssl::x509::extension::{
    AuthorityKeyIdentifier, BasicConstraints, ExtendedKeyUsage, KeyUsage, SubjectAlternativeName,
    SubjectKeyIdentifier,
};
use openssl::x509::{X509, X509Builder, X509NameBuilder};

/// True when `SIKKERMAIL_REQUIRE_PEERS=1`: missing peers are failures.
pub fn peers_required() -> bool {
    std::env::var("SIKKERMAIL_REQUIRE_PEERS").as_deref() == Ok("1")
}

/// Is `tool` on the PATH? If not: a loud skip, or a failure in CI.
pub fn peer(tool: &str) -> bool {
    let found = Command::new("sh")
        .arg("-c")
        .arg(format!("command -v {tool}"))
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !found {
        if peers_required() {
            panic!("peer `{tool}` is missing and SIKKERMAIL_REQUIRE_PEERS=1");
        }
        eprintln!(
            "!!! SKIPPING: peer `{tool}` is not installed (set SIKKERMAIL_REQUIRE_PEERS=1 to fail instead)"
        );
    }
    found
}

/// Is Python's `cryptography` importable?
pub fn pyca() -> bool {
    let ok = Command::new("python3")
        .args([
            "-c",
            "import cryptography.hazmat.primitives.serialization.pkcs7 as p; p.pkcs7_decrypt_smime",
        ])
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !ok {
        if peers_required() {
            panic!(
                "Python `cryptography` (with pkcs7_decrypt_smime) is missing and SIKKERMAIL_REQUIRE_PEERS=1"
            );
        }
        eprintln!("!!! SKIPPING: Python `cryptography` is not installed");
    }
    ok
}

/// Runs the binary with `args`, feeding `stdin`.
pub fn sikkermail(args: &[&str], stdin: &[u8]) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_sikkermail"))
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run sikkermail");
    let mut sin = child.stdin.take().unwrap();
    let data = stdin.to_vec();
    let writer = std::thread::spawn(move || {
        let _ = sin.write_all(&data);
    });
    let out = child.wait_with_output().unwrap();
    writer.join().unwrap();
    out
}

/// Runs a shell command in `dir`; panics with its output unless it succeeds.
pub fn sh(dir: &Path, cmd: &str) -> Output {
    let out = sh_status(dir, cmd);
    assert!(
        out.status.success(),
        "`{cmd}` failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// Runs a shell command in `dir` and returns whatever happened.
pub fn sh_status(dir: &Path, cmd: &str) -> Output {
    Command::new("bash")
        .arg("-c")
        .arg(cmd)
        .current_dir(dir)
        .output()
        .unwrap()
}

/// Asserts success of a `sikkermail` run and returns its stdout.
pub fn ok(out: &Output) -> Vec<u8> {
    assert!(
        out.status.success(),
        "exit {:?}: {}",
        out.status.code(),
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout.clone()
}

/// A test PKI in a temporary folder: `ca`, RSA users `alice`, `bob`,
/// `bob-legacy` (expired, OCES2-style retired key), EC user `carol`.
/// Each user has `.crt`, `.key`, `.pem` (key + cert + CA) and `.p12`
/// (password `test`; `-gpgsm.p12` in the 3DES/SHA-1 flavour).
pub struct Pki {
    _dir: tempfile::TempDir,
    pub path: PathBuf,
}

impl Pki {
    pub fn file(&self, name: &str) -> String {
        self.path.join(name).display().to_string()
    }
}

static PKI: OnceLock<Pki> = OnceLock::new();

pub fn pki() -> &'static Pki {
    PKI.get_or_init(make_pki)
}

fn name(cn: &str, email: Option<&str>) -> openssl::x509::X509Name {
    let mut b = X509NameBuilder::new().unwrap();
    b.append_entry_by_nid(Nid::COUNTRYNAME, "DK").unwrap();
    b.append_entry_by_nid(Nid::ORGANIZATIONNAME, "Interop Test")
        .unwrap();
    if let Some(e) = email {
        b.append_entry_by_nid(Nid::PKCS9_EMAILADDRESS, e).unwrap();
    }
    b.append_entry_by_nid(Nid::COMMONNAME, cn).unwrap();
    b.build()
}

fn issue(
    ca: Option<(&X509, &PKey<Private>)>,
    key: &PKey<Private>,
    cn: &str,
    email: Option<&str>,
    serial: u32,
    validity: (Asn1Time, Asn1Time),
) -> X509 {
    let mut b = X509Builder::new().unwrap();
    b.set_version(2).unwrap();
    b.set_serial_number(&Asn1Integer::from_bn(&BigNum::from_u32(serial).unwrap()).unwrap())
        .unwrap();
    let subject = name(cn, email);
    b.set_subject_name(&subject).unwrap();
    b.set_issuer_name(ca.map_or(&subject, |(c, _)| c.subject_name()))
        .unwrap();
    b.set_pubkey(key).unwrap();
    b.set_not_before(&validity.0).unwrap();
    b.set_not_after(&validity.1).unwrap();
    let ctx_issuer: Option<&openssl::x509::X509Ref> = ca.map(|(c, _)| &**c);
    if ca.is_none() {
        b.append_extension(BasicConstraints::new().critical().ca().build().unwrap())
            .unwrap();
        b.append_extension(
            KeyUsage::new()
                .critical()
                .key_cert_sign()
                .crl_sign()
                .build()
                .unwrap(),
        )
        .unwrap();
    } else {
        b.append_extension(BasicConstraints::new().build().unwrap())
            .unwrap();
        let mut ku = KeyUsage::new();
        ku.critical().digital_signature().non_repudiation();
        if key.rsa().is_ok() {
            ku.key_encipherment();
        } else {
            ku.key_agreement();
        }
        b.append_extension(ku.build().unwrap()).unwrap();
        b.append_extension(ExtendedKeyUsage::new().email_protection().build().unwrap())
            .unwrap();
    }
    let ski = SubjectKeyIdentifier::new()
        .build(&b.x509v3_context(ctx_issuer, None))
        .unwrap();
    b.append_extension(ski).unwrap();
    if let Some(e) = email {
        let san = SubjectAlternativeName::new()
            .email(e)
            .build(&b.x509v3_context(ctx_issuer, None))
            .unwrap();
        b.append_extension(san).unwrap();
    }
    if ca.is_some() {
        let aki = AuthorityKeyIdentifier::new()
            .keyid(true)
            .build(&b.x509v3_context(ctx_issuer, None))
            .unwrap();
        b.append_extension(aki).unwrap();
    }
    b.sign(ca.map_or(key, |(_, k)| k), MessageDigest::sha256())
        .unwrap();
    b.build()
}

fn make_pki() -> Pki {
    // Under target/tmp: the PKI lives as long as the test process.
    let dir = tempfile::Builder::new()
        .prefix("pki-")
        .tempdir_in(env!("CARGO_TARGET_TMPDIR"))
        .unwrap();
    let path = dir.path().to_path_buf();
    let now = || Asn1Time::days_from_now(0).unwrap();
    let later = || Asn1Time::days_from_now(365).unwrap();
    let rsa = || PKey::from_rsa(Rsa::generate(2048).unwrap()).unwrap();
    let ca_key = rsa();
    let ca = issue(None, &ca_key, "Interop Test CA", None, 1, (now(), later()));
    fs::write(path.join("ca.crt"), ca.to_pem().unwrap()).unwrap();
    fs::write(
        path.join("ca.key"),
        ca_key.private_key_to_pem_pkcs8().unwrap(),
    )
    .unwrap();
    let ec = || {
        PKey::from_ec_key(
            EcKey::generate(&EcGroup::from_curve_name(Nid::X9_62_PRIME256V1).unwrap()).unwrap(),
        )
        .unwrap()
    };
    type User<'a> = (&'a str, PKey<Private>, (Asn1Time, Asn1Time), u32);
    let users: Vec<User<'_>> = vec![
        ("alice", rsa(), (now(), later()), 10),
        ("bob", rsa(), (now(), later()), 11),
        ("carol", ec(), (now(), later()), 12),
        // Retired years ago, like a NemID VOCES key: still opens old mail.
        // (UTCTime: dates before 2050 must not be GeneralizedTime, RFC 5280 §4.1.2.5.)
        (
            "bob-legacy",
            rsa(),
            (
                Asn1Time::from_str_x509("20150101000000Z").unwrap(),
                Asn1Time::from_str_x509("20180101000000Z").unwrap(),
            ),
            13,
        ),
    ];
    for (user, key, validity, serial) in users {
        let email = format!("{}@example.test", user.trim_end_matches("-legacy"));
        let cert = issue(
            Some((&ca, &ca_key)),
            &key,
            user,
            Some(&email),
            serial,
            validity,
        );
        let key_pem = key.private_key_to_pem_pkcs8().unwrap();
        fs::write(path.join(format!("{user}.crt")), cert.to_pem().unwrap()).unwrap();
        fs::write(path.join(format!("{user}.key")), &key_pem).unwrap();
        let mut pem = key_pem.clone();
        pem.extend(cert.to_pem().unwrap());
        pem.extend(ca.to_pem().unwrap());
        fs::write(path.join(format!("{user}.pem")), pem).unwrap();
        sh(
            &path,
            &format!(
                "openssl pkcs12 -export -in {user}.crt -inkey {user}.key -certfile ca.crt -name {user} -passout pass:test -out {user}.p12 && \
                 openssl pkcs12 -export -in {user}.crt -inkey {user}.key -certfile ca.crt -name {user} -passout pass:test \
                   -keypbe PBE-SHA1-3DES -certpbe PBE-SHA1-3DES -macalg sha1 -out {user}-gpgsm.p12"
            ),
        );
    }
    Pki { _dir: dir, path }
}

/// A plain test message with the outer headers a mail client writes, LF
/// line ends and some Danish 8-bit text.
pub fn plain_message() -> Vec<u8> {
    "From: Advokat <alice@example.test>\n\
     To: Retten <bob@example.test>\n\
     Cc: Sekretariat <carol@example.test>\n\
     Subject: Sag 2026-117 =?utf-8?q?k=C3=A6re?=\n\
     Date: Sun, 22 Nov 2026 10:00:00 +0100\n\
     Message-ID: <sag-117@example.test>\n\
     MIME-Version: 1.0\n\
     Content-Type: text/plain; charset=utf-8\n\
     Content-Transfer-Encoding: 8bit\n\
     \n\
     Kære Retten,\n\
     \n\
     hermed processkrift i sag 2026-117. Æ Ø Å.\n\
     Med venlig hilsen\n"
        .as_bytes()
        .to_vec()
}

/// The entity a peer must find inside after we encrypt `plain_message()`.
pub fn plain_inner_entity() -> Vec<u8> {
    let m = String::from_utf8(plain_message()).unwrap();
    let (_, body) = m.split_once("\n\n").unwrap();
    format!(
        "Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\n{}",
        body.replace('\n', "\r\n")
    )
    .into_bytes()
}

/// The base64 body of a one-part S/MIME message, decoded: the CMS DER.
pub fn cms_of(message: &[u8]) -> Vec<u8> {
    let e = smime::mime::Entity::parse(message);
    e.decoded_body().unwrap().into_owned()
}

/// The signed part and the signature DER of a multipart/signed message.
pub fn detached_parts(message: &[u8]) -> (Vec<u8>, Vec<u8>) {
    let e = smime::mime::Entity::parse(message);
    let ct = e.content_type();
    let mp = smime::mime::Multipart::parse(e.body(), ct.param("boundary").unwrap()).unwrap();
    let sig = smime::mime::Entity::parse(mp.parts[1])
        .decoded_body()
        .unwrap()
        .into_owned();
    (mp.parts[0].to_vec(), sig)
}

/// Wraps a detached signature made by a peer around its content, as a
/// mail client would send it.
pub fn multipart_signed(content: &[u8], sig_der: &[u8]) -> Vec<u8> {
    let mut m = b"From: peer@example.test\r\nSubject: peer-signed\r\nMIME-Version: 1.0\r\n\
Content-Type: multipart/signed; protocol=\"application/pkcs7-signature\"; micalg=sha-256; boundary=\"PEER\"\r\n\r\n--PEER\r\n"
        .to_vec();
    m.extend_from_slice(content);
    m.extend_from_slice(b"\r\n--PEER\r\nContent-Type: application/pkcs7-signature; name=smime.p7s\r\nContent-Transfer-Encoding: base64\r\n\r\n");
    m.extend_from_slice(&smime::mime::encode_base64_lines(sig_der));
    m.extend_from_slice(b"--PEER--\r\n");
    m
}

/// Wraps a peer's CMS DER into an `application/pkcs7-mime` message.
pub fn pkcs7_mime(der: &[u8], smime_type: &str) -> Vec<u8> {
    let mut m = format!(
        "From: peer@example.test\r\nTo: bob@example.test\r\nSubject: from a peer\r\nMIME-Version: 1.0\r\n\
Content-Type: application/pkcs7-mime; smime-type={smime_type}; name=smime.p7m\r\nContent-Transfer-Encoding: base64\r\n\r\n"
    )
    .into_bytes();
    m.extend_from_slice(&smime::mime::encode_base64_lines(der));
    m
}

/// Runs `cmd` (stdin closed, output captured); panics, killing it, when it
/// has not finished within `secs` seconds: a hang (say, a password prompt
/// on the terminal) fails the test instead of stalling it.
pub fn run_with_timeout(cmd: &mut Command, secs: u64) -> Output {
    use std::io::Read;
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    let mut out_pipe = child.stdout.take().unwrap();
    let mut err_pipe = child.stderr.take().unwrap();
    let out_t = std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = out_pipe.read_to_end(&mut v);
        v
    });
    let err_t = std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = err_pipe.read_to_end(&mut v);
        v
    });
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(secs);
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{cmd:?} did not finish within {secs} s (waiting for a prompt?)");
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    Output {
        status,
        stdout: out_t.join().unwrap(),
        stderr: err_t.join().unwrap(),
    }
}

/// Starts the gpg-agent of `home` and waits until it answers (up to 20 s):
/// gpgsm starts one on demand but gives up after a few seconds, which a
/// busy machine can exceed (the key of an imported .p12 is then lost).
pub fn gpg_agent_up(home: &Path) {
    let h = home.display();
    let _ = sh_status(home, &format!("GNUPGHOME={h} gpgconf --launch gpg-agent"));
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let o = sh_status(
            home,
            &format!("GNUPGHOME={h} gpg-connect-agent --no-autostart /bye"),
        );
        if o.status.success() && o.stderr.is_empty() {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "gpg-agent in {h} does not answer: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}

/// Imports a PKCS#12 file into gpgsm (GNUPGHOME `home`, agent running
/// with loopback pinentry) and returns what gpgsm said. GnuPG 2.2's
/// PKCS#12 parser refuses about one valid file in a hundred, depending on
/// its random salt ("error parsing or decrypting the PKCS#12 file";
/// measured 2026-12-07: 1 of 100 made by `openssl pkcs12 -export -keypbe
/// PBE-SHA1-3DES`, 1 of 60 made by `cert export --compatible`; OpenSSL
/// opens them all). When it does, `remake(n)` writes the same content anew
/// (another salt) and returns its path, and the import is tried again, at
/// most 5 times.
pub fn gpgsm_import_p12(
    home: &Path,
    p12: &Path,
    password: &str,
    remake: &dyn Fn(u32) -> PathBuf,
) -> String {
    let mut file = p12.to_path_buf();
    for attempt in 1..=5 {
        let out = sh_status(
            home,
            &format!(
                "export GNUPGHOME={}; echo {password} | gpgsm --batch --pinentry-mode loopback --passphrase-fd 0 --import {} 2>&1",
                home.display(),
                file.display()
            ),
        );
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        if !text.contains("error parsing or decrypting the PKCS#12 file") {
            return text;
        }
        eprintln!(
            "gpgsm refused {} (attempt {attempt}): remade",
            file.display()
        );
        file = remake(attempt);
    }
    panic!("gpgsm refused 5 PKCS#12 files in a row: not its salt bug");
}

/// Postfix's smtp-sink, dumping every message it accepts into `dir`.
pub struct Sink {
    child: std::process::Child,
    pub port: u16,
    pub dir: PathBuf,
}

impl Sink {
    pub fn start(dir: &Path) -> Sink {
        Self::start_on(dir, free_port())
    }

    pub fn start_on(dir: &Path, port: u16) -> Sink {
        Self::start_with(dir, port, &[])
    }

    /// With more smtp-sink options, e.g. `["-f", "RCPT"]`: every RCPT is
    /// refused with a 5xx.
    pub fn start_with(dir: &Path, port: u16, options: &[&str]) -> Sink {
        fs::create_dir_all(dir).unwrap();
        let mut c = Command::new("smtp-sink");
        c.args(options);
        // As root smtp-sink demands -u (see ../shared/peers/mta-recipes.sh).
        // SAFETY: getuid has no preconditions.
        if unsafe { libc::getuid() } == 0 {
            c.args(["-u", "root"]);
        }
        let child = c
            .arg("-d")
            .arg(format!("{}/%Y%m%d%H%M%S.", dir.display()))
            .arg(format!("127.0.0.1:{port}"))
            .arg("64")
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        for _ in 0..200 {
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(25));
        }
        Sink {
            child,
            port,
            dir: dir.to_path_buf(),
        }
    }

    /// Every dumped message: (envelope recipients, message).
    pub fn messages(&self) -> Vec<(Vec<String>, String)> {
        let mut out = Vec::new();
        let Ok(rd) = fs::read_dir(&self.dir) else {
            return out;
        };
        let mut files: Vec<PathBuf> = rd.flatten().map(|e| e.path()).collect();
        files.sort();
        for f in files {
            let text = String::from_utf8_lossy(&fs::read(&f).unwrap()).to_string();
            // A file in progress has no blank line after the message yet.
            if !text.ends_with("\n\n") {
                continue;
            }
            let rcpts = text
                .lines()
                .filter_map(|l| l.strip_prefix("X-Rcpt-Args: <"))
                .map(|l| l.split('>').next().unwrap().to_string())
                .collect();
            // The message follows smtp-sink's own Received: field.
            let mut body = String::new();
            let (mut in_received, mut in_message) = (false, false);
            for l in text.lines() {
                if in_message {
                    body.push_str(l);
                    body.push('\n');
                } else if l.starts_with("Received: ") {
                    in_received = true;
                } else if in_received && !l.starts_with('\t') && !l.starts_with(' ') {
                    in_message = true;
                    body.push_str(l);
                    body.push('\n');
                }
            }
            out.push((rcpts, body));
        }
        out
    }

    /// Waits up to `secs` for `n` messages; on time-out fails showing
    /// `logs()` (the sender's log).
    pub fn wait_for(
        &self,
        n: usize,
        secs: u64,
        logs: impl Fn() -> String,
    ) -> Vec<(Vec<String>, String)> {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(secs);
        loop {
            let m = self.messages();
            if m.len() >= n {
                return m;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "{} of {n} messages arrived at the sink in {secs} s\n{}",
                m.len(),
                logs()
            );
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
    }
}

impl Drop for Sink {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A port the kernel had free a moment ago.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}
