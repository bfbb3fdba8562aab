//! The hostile-input suite: every security promise of the README's
//! *Security* section attacked against a real `sikkermail serve` over
//! loopback sockets, with real SMTP and HTTP peers. Each test failed on the
//! code before its fix. Parts, one file each under `tests/hostile/`:
//!
//! - `headers.rs`: forged verdict headers (bare CR and LF, in and out of
//!   the encryption, SMTP and Maildir delivery).
//! - `signing.rs`: what the firm's keys sign (foreign senders, SMTP
//!   accounts as others, the public application form, backscatter).
//! - `limits.rs`: attempt limits on every secret under parallel requests,
//!   the lockout property, memory under parallel logins.
//! - `connections.rs`: connection budgets per address and per listener,
//!   the DATA deadline, half-open HTTP connections.
//! - `memory.rs`: message content in transit spooled, not held in memory.
//! - `web.rs`: the pages' headers, CSRF bound to the session.
//! - `held.rs`: what was refused already (SMTP smuggling, relaying), kept
//!   under the suite so it stays refused.
//! - `client.rs`: raw HTTP from many loopback addresses, /proc figures.
//! - `at_rest.rs`: no queued body or link token readable in the database
//!   files; file modes.

#![allow(clippy::unwrap_used, missing_debug_implementations)]

mod common;
mod serve;
mod site;

#[path = "hostile/at_rest.rs"]
mod at_rest;
#[path = "hostile/client.rs"]
mod client;
#[path = "hostile/connections.rs"]
mod connections;
#[path = "hostile/headers.rs"]
mod headers;
#[path = "hostile/held.rs"]
mod held;
#[path = "hostile/limits.rs"]
mod limits;
#[path = "hostile/memory.rs"]
mod memory;
#[path = "hostile/signing.rs"]
mod signing;
#[path = "hostile/web.rs"]
mod web;

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::time::Duration;

use site::Site;

/// `init` of the test firm (CVR 12345678) and its organisation certificate
/// for `post@advokat.test`; returns the certificate's PEM file.
pub fn firm(site: &Site) -> PathBuf {
    site.init_firm();
    let id = site.issue_mailbox_cert("post@advokat.test");
    let path = site.dir.parent().unwrap().join("org.crt");
    std::fs::write(&path, site.pem(&id)).unwrap();
    path
}

/// A raw SMTP client, for sending what well-behaved clients will not.
pub struct Smtp {
    r: BufReader<TcpStream>,
    w: TcpStream,
}

impl Smtp {
    /// Connects and reads the greeting (returned by [`Smtp::greeting`]).
    pub fn connect(addr: SocketAddr) -> (Smtp, String) {
        let w = TcpStream::connect(addr).unwrap();
        w.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
        let mut s = Smtp {
            r: BufReader::new(w.try_clone().unwrap()),
            w,
        };
        let g = s.reply();
        (s, g)
    }

    /// One whole reply (every line of a multi-line one), or "" at EOF.
    pub fn reply(&mut self) -> String {
        let mut all = String::new();
        loop {
            let mut line = String::new();
            if self.r.read_line(&mut line).unwrap_or(0) == 0 {
                return all;
            }
            all.push_str(&line);
            if line.len() < 4 || line.as_bytes()[3] != b'-' {
                return all;
            }
        }
    }

    /// Sends `line` and CRLF; the reply.
    pub fn cmd(&mut self, line: &str) -> String {
        self.raw(format!("{line}\r\n").as_bytes());
        self.reply()
    }

    /// Sends bytes as they are.
    pub fn raw(&mut self, bytes: &[u8]) {
        self.w.write_all(bytes).unwrap();
    }

    /// EHLO, MAIL, RCPT for each, DATA, the message (as given: it must end
    /// in CRLF and carry no line that is a lone dot), the final dot: the
    /// reply to the dot, or the first refusal on the way.
    pub fn send(&mut self, from: &str, to: &[&str], message: &[u8]) -> String {
        let r = self.cmd("EHLO attacker.test");
        assert!(r.starts_with("250"), "EHLO: {r}");
        let r = self.cmd(&format!("MAIL FROM:<{from}>"));
        if !r.starts_with("250") {
            return r;
        }
        for t in to {
            let r = self.cmd(&format!("RCPT TO:<{t}>"));
            if !r.starts_with("250") {
                return r;
            }
        }
        let r = self.cmd("DATA");
        if !r.starts_with("354") {
            return r;
        }
        self.raw(message);
        self.cmd(".")
    }
}
