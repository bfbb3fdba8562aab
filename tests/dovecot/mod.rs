//! A real Dovecot (Debian's dovecot-imapd) for the IMAP tests: its own
//! configuration, users and Maildir in a temporary directory, listening on
//! loopback ports of its own, optionally with TLS (implicit and STARTTLS)
//! from a certificate the test makes. Recipes and traps:
//! `../shared/peers/dovecot-recipes.sh`.

#![allow(dead_code, clippy::unwrap_used)]

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime};

pub const USER: &str = "post@firma.test";
pub const PASSWORD: &str = "hemmelig";
const DOVECOT: &str = "/usr/sbin/dovecot";

/// True when Dovecot is installed; else a loud skip, or a failure under
/// SIKKERMAIL_REQUIRE_PEERS=1.
pub fn available() -> bool {
    if Path::new(DOVECOT).exists() {
        return true;
    }
    assert!(
        !crate::common::peers_required(),
        "Dovecot ({DOVECOT}) is missing and SIKKERMAIL_REQUIRE_PEERS=1: apt-get install dovecot-imapd"
    );
    eprintln!("!!! SKIPPING: Dovecot ({DOVECOT}) is not installed (apt-get install dovecot-imapd)");
    false
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A running Dovecot.
pub struct Dovecot {
    _tmp: tempfile::TempDir,
    pub dir: PathBuf,
    /// Plain IMAP (STARTTLS offered when TLS is on).
    pub port: u16,
    /// Implicit TLS (0 without TLS).
    pub tls_port: u16,
    child: Option<Child>,
}

impl Dovecot {
    /// Starts Dovecot; with `tls` = (certificate chain PEM, key PEM) it also
    /// listens with implicit TLS and offers STARTTLS.
    pub fn start(tls: Option<(&Path, &Path)>) -> Dovecot {
        // A short path: Dovecot's socket paths must fit in 108 bytes.
        let tmp = tempfile::Builder::new()
            .prefix("dc")
            .tempdir_in("/tmp")
            .unwrap();
        let dir = tmp.path().to_path_buf();
        // Dovecot's auth process runs as "dovecot" and must reach the users file.
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o755)).unwrap();
        fs::write(dir.join("users"), format!("{USER}:{{PLAIN}}{PASSWORD}\n")).unwrap();
        let home = dir.join("home");
        fs::create_dir(&home).unwrap();
        chown_nobody(&home);
        let port = free_port();
        let tls_port = if tls.is_some() { free_port() } else { 0 };
        let ssl = match tls {
            Some((cert, key)) => format!(
                "yes\nssl_cert = <{}\nssl_key = <{}",
                cert.display(),
                key.display()
            ),
            None => "no".to_string(),
        };
        let d = dir.display();
        let conf = format!(
            "base_dir = {d}/run\nstate_dir = {d}/state\nlog_path = {d}/dovecot.log\n\
protocols = imap\nlisten = 127.0.0.1\nssl = {ssl}\n\
passdb {{\n  driver = passwd-file\n  args = scheme=PLAIN {d}/users\n}}\n\
userdb {{\n  driver = static\n  args = uid=nobody gid=nogroup home={d}/home/%u\n}}\n\
mail_location = maildir:~/Maildir\n\
namespace inbox {{\n  inbox = yes\n  separator = /\n}}\n\
service imap-login {{\n  inet_listener imap {{\n    address = 127.0.0.1\n    port = {port}\n  }}\n\
  inet_listener imaps {{\n    address = 127.0.0.1\n    port = {tls_port}\n    ssl = yes\n  }}\n}}\n"
        );
        fs::write(dir.join("dovecot.conf"), conf).unwrap();
        let mut d = Dovecot {
            _tmp: tmp,
            dir,
            port,
            tls_port,
            child: None,
        };
        d.run();
        d
    }

    /// Starts the server (again).
    pub fn run(&mut self) {
        assert!(self.child.is_none());
        let child = Command::new(DOVECOT)
            .arg("-F")
            .arg("-c")
            .arg(self.dir.join("dovecot.conf"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if greeting(self.port) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "Dovecot did not start: {}",
                fs::read_to_string(self.dir.join("dovecot.log")).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Stops the server: SIGTERM to the master and its imap processes (a
    /// SIGKILLed master would leave them serving), then waits.
    pub fn stop(&mut self) {
        if let Some(child) = self.child.take() {
            stop_master(child);
        }
    }

    /// The user's Maildir folder (`INBOX` or a folder name; ASCII names).
    pub fn folder_dir(&self, folder: &str) -> PathBuf {
        let md = self.dir.join("home").join(USER).join("Maildir");
        if folder == "INBOX" {
            md
        } else {
            md.join(format!(".{}", folder.replace('/', ".")))
        }
    }

    /// Every message of a folder: (file name, bytes), sorted by name.
    pub fn messages(&self, folder: &str) -> Vec<(String, Vec<u8>)> {
        let mut out = Vec::new();
        for sub in ["cur", "new"] {
            let Ok(rd) = fs::read_dir(self.folder_dir(folder).join(sub)) else {
                continue;
            };
            for e in rd.flatten() {
                // A file renamed or expunged while we list is skipped.
                if let Ok(b) = fs::read(e.path()) {
                    out.push((e.file_name().to_string_lossy().to_string(), b));
                }
            }
        }
        out.sort();
        out
    }

    /// How many messages a folder holds (names only: cheap to poll).
    pub fn count(&self, folder: &str) -> usize {
        ["cur", "new"]
            .iter()
            .map(|s| {
                fs::read_dir(self.folder_dir(folder).join(s))
                    .map(|r| r.count())
                    .unwrap_or(0)
            })
            .sum()
    }

    /// Delivers `msg` into INBOX as a local delivery agent would: a file in
    /// `cur` with maildir flags (`"FS"`), its mtime the INTERNALDATE.
    pub fn deliver(&self, name: &str, msg: &[u8], flags: &str, received: SystemTime) {
        let md = self.folder_dir("INBOX");
        for sub in ["cur", "new", "tmp"] {
            let p = md.join(sub);
            if !p.exists() {
                fs::create_dir_all(&p).unwrap();
                chown_nobody(&p);
                chown_nobody(&md);
                chown_nobody(md.parent().unwrap());
            }
        }
        let tmp = md.join("tmp").join(name);
        fs::write(&tmp, msg).unwrap();
        let f = fs::File::options().write(true).open(&tmp).unwrap();
        f.set_times(fs::FileTimes::new().set_modified(received))
            .unwrap();
        drop(f);
        chown_nobody(&tmp);
        fs::rename(&tmp, md.join("cur").join(format!("{name}:2,{flags}"))).unwrap();
    }

    /// Appends `msg` to INBOX through Python's imaplib: another IMAP client.
    pub fn append_with_imaplib(&self, msg: &[u8]) {
        let f = self.dir.join(format!("append-{}.eml", free_port()));
        fs::write(&f, msg).unwrap();
        let out = Command::new("python3")
            .arg("-c")
            .arg(
                "import imaplib, sys\n\
M = imaplib.IMAP4('127.0.0.1', int(sys.argv[1]))\n\
M.login(sys.argv[2], sys.argv[3])\n\
typ, data = M.append('INBOX', None, None, open(sys.argv[4], 'rb').read())\n\
assert typ == 'OK', data\n\
M.logout()\n",
            )
            .arg(self.port.to_string())
            .arg(USER)
            .arg(PASSWORD)
            .arg(&f)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "imaplib APPEND: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    pub fn log(&self) -> String {
        fs::read_to_string(self.dir.join("dovecot.log")).unwrap_or_default()
    }
}

impl Drop for Dovecot {
    fn drop(&mut self) {
        self.stop();
    }
}

fn greeting(port: u16) -> bool {
    use std::io::Read;
    let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
    let mut b = [0u8; 64];
    matches!(s.read(&mut b), Ok(n) if n >= 4 && b.starts_with(b"* OK"))
}

fn chown_nobody(p: &Path) {
    std::os::unix::fs::chown(p, Some(65534), Some(65534)).unwrap();
}

/// Stops a Dovecot master: SIGTERM to it and its imap processes (a
/// SIGKILLed master would leave them serving), then waits.
pub fn stop_master(mut child: std::process::Child) {
    let pid = child.id() as i32;
    let kids = Command::new("ps")
        .args(["-o", "pid=,comm=", "--ppid", &pid.to_string()])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).to_string())
        .unwrap_or_default();
    // SAFETY: signalling our own child and its children.
    unsafe { libc::kill(pid, libc::SIGTERM) };
    for line in kids.lines() {
        let mut w = line.split_whitespace();
        if let (Some(p), Some(comm)) = (w.next(), w.next())
            && comm.starts_with("imap")
            && let Ok(p) = p.parse::<i32>()
        {
            // SAFETY: as above.
            unsafe { libc::kill(p, libc::SIGTERM) };
        }
    }
    let _ = child.wait();
}
