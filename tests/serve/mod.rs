//! A running `sikkermail serve` for end-to-end tests: started with a
//! configuration file beside a [`Site`]'s data directory, on ports the
//! kernel picks, read from its `ready` banner.

#![allow(dead_code, clippy::unwrap_used)]

use std::fs;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::common::free_port;
use crate::site::Site;

/// A running `sikkermail serve`.
pub struct Serve {
    pub child: Child,
    pub inbound: SocketAddr,
    pub outbound: SocketAddr,
    pub http: SocketAddr,
    pub log: PathBuf,
    pub stdout: std::sync::mpsc::Receiver<String>,
    /// What serve printed before `ready`.
    pub banner: Vec<String>,
}

pub fn bin() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_sikkermail"));
    for (k, _) in std::env::vars() {
        if k.starts_with("SIKKERMAIL_") && k != "SIKKERMAIL_REQUIRE_PEERS" {
            c.env_remove(k);
        }
    }
    c
}

/// `<name>.toml` beside the site's data directory: its data directory and
/// database, hostname gw.test, and `extra`.
pub fn config_file(site: &Site, name: &str, extra: &str) -> PathBuf {
    let cfg = site.dir.parent().unwrap().join(format!("{name}.toml"));
    let db = site
        .db_url
        .as_ref()
        .map(|u| format!("database_url = \"{u}\"\n"))
        .unwrap_or_default();
    fs::write(
        &cfg,
        format!(
            "data_dir = \"{}\"\n{db}hostname = \"gw.test\"\n{extra}\n",
            site.dir.display()
        ),
    )
    .unwrap();
    cfg
}

impl Serve {
    /// Starts `serve` with the site's data directory and `extra` TOML
    /// appended to a configuration on ports the kernel picks.
    pub fn start(site: &Site, extra: &str) -> Serve {
        Self::start_at(site, extra, "127.0.0.1:0")
    }

    pub fn start_at(site: &Site, extra: &str, inbound: &str) -> Serve {
        let parent = site.dir.parent().unwrap();
        let cfg = config_file(site, "sikkermail", extra);
        let mut c = bin();
        c.arg("serve")
            .arg("--config")
            .arg(&cfg)
            .env("SIKKERMAIL_INBOUND_LISTEN", inbound)
            .env("SIKKERMAIL_OUTBOUND_LISTEN", "127.0.0.1:0")
            .env("SIKKERMAIL_HTTP_LISTEN", "127.0.0.1:0")
            .env("SIKKERMAIL_QUEUE_RETRY_BASE", "1s");
        Self::spawn(c, &parent.join(format!("serve-{}.log", free_port())))
    }

    /// Starts `serve --config CONFIG` as it is (the configuration names
    /// every listener).
    pub fn with_config(config: &Path, log: &Path) -> Serve {
        let mut c = bin();
        c.arg("serve").arg("--config").arg(config);
        Self::spawn(c, log)
    }

    pub fn spawn(mut c: Command, log: &Path) -> Serve {
        let err = fs::File::create(log).unwrap();
        let mut child = c
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
        let addr = |what: &str| -> SocketAddr {
            let l = lines
                .iter()
                .find(|l| l.trim_start().starts_with(what))
                .unwrap_or_else(|| panic!("no {what} line in {lines:?}"));
            let a = l
                .split_whitespace()
                .find(|w| w.contains(':') && w.contains('.'));
            a.unwrap()
                .trim_start_matches("http://")
                .trim_end_matches("/metrics")
                .parse()
                .unwrap()
        };
        Serve {
            inbound: addr("inbound SMTP"),
            outbound: addr("outbound SMTP"),
            http: addr("HTTP"),
            child,
            log: log.to_path_buf(),
            stdout: rx,
            banner: lines,
        }
    }

    /// SIGTERM; must exit 0 within 10 seconds.
    pub fn stop(mut self) {
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
        let rest: Vec<String> = self.stdout.try_iter().collect();
        assert!(
            rest.iter().any(|l| l.contains("stopped")),
            "no stop message: {rest:?}"
        );
    }

    pub fn kill9(mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }

    /// The first message delivered into the Maildir folder `new` (waits up
    /// to 30 s), with LF line ends.
    pub fn maildir_message(&self, new: &Path) -> String {
        let deadline = Instant::now() + Duration::from_secs(30);
        let file = loop {
            if let Some(f) = fs::read_dir(new).ok().and_then(|mut r| r.next()) {
                break f.unwrap().path();
            }
            assert!(
                Instant::now() < deadline,
                "nothing delivered in {new:?}\n{}",
                self.logs()
            );
            std::thread::sleep(Duration::from_millis(100));
        };
        fs::read_to_string(file).unwrap().replace("\r\n", "\n")
    }

    /// `http://` and the HTTP listener's address.
    pub fn base(&self) -> String {
        format!("http://{}", self.http)
    }

    /// The one-time bootstrap link: a secret, so serve names the 0600 file
    /// that holds it and never prints the link itself (its standard output
    /// is no terminal here).
    pub fn bootstrap_link(&self) -> String {
        let note = self
            .banner
            .iter()
            .find(|l| l.contains("bootstrap link"))
            .unwrap_or_else(|| panic!("no bootstrap line in {:?}", self.banner));
        assert!(!note.contains("/bootstrap/"), "{note}");
        let file = note.split_whitespace().last().unwrap();
        fs::read_to_string(file).unwrap().trim().to_string()
    }

    pub fn logs(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn http_get(&self, path: &str) -> (u16, String) {
        let mut s = TcpStream::connect(self.http).unwrap();
        write!(
            s,
            "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
        )
        .unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).unwrap();
        let code = out[9..12].parse().unwrap();
        let body = out.split_once("\r\n\r\n").unwrap().1.to_string();
        (code, body)
    }

    /// A counter or gauge value from /metrics.
    pub fn metric(&self, line_start: &str) -> f64 {
        let (_, body) = self.http_get("/metrics");
        body.lines()
            .find(|l| l.starts_with(line_start))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("no {line_start} in {body}"))
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
