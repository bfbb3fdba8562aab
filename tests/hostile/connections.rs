//! See tests/hostile.rs. Connections an anonymous client can hold: SMTP
//! budgets per listener and per client address, the minimum transfer rate
//! of a message, half-open HTTP connections. The limits do not touch the
//! store, so these run on SQLite only.
//!
//! Loopback has all of 127.0.0.0/8: clients bind to 127.0.1.x and the like
//! to be many addresses; 127.0.0.1 stays the firm's own mail server (the
//! default trusted network).

use std::io::{ErrorKind, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use crate::client::{connect_from, status_kb};
use crate::serve::Serve;
use crate::site::Site;
use crate::{Smtp, firm};

/// The first line the server sends (waits up to 10 s).
fn first_line(s: &mut TcpStream) -> String {
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut got = Vec::new();
    let mut b = [0u8; 1];
    while !got.ends_with(b"\n") {
        match s.read(&mut b) {
            Ok(0) | Err(_) => break,
            Ok(_) => got.push(b[0]),
        }
    }
    String::from_utf8_lossy(&got).to_string()
}

/// Whether the server closes `s` within `within` (reading and dropping
/// whatever it sends first).
fn closed_within(s: &mut TcpStream, within: Duration) -> bool {
    let deadline = Instant::now() + within;
    let mut b = [0u8; 512];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return false;
        }
        s.set_read_timeout(Some(left)).unwrap();
        match s.read(&mut b) {
            Ok(0) => return true,
            Ok(_) => {}
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                return false;
            }
            Err(_) => return true,
        }
    }
}

/// `GET path` with `Connection: close` from the address `from`: the status.
fn http_status(from: Ipv4Addr, to: SocketAddr, path: &str) -> u16 {
    let mut s = connect_from(from, to);
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    out.get(9..12).and_then(|c| c.parse().ok()).unwrap_or(0)
}

/// Open file descriptors and resident memory (kB) of a process.
fn fds_and_rss(pid: u32) -> (usize, u64) {
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| d.count())
        .unwrap_or(0);
    (fds, status_kb(pid, "VmRSS"))
}

const DOMAINS: &str = "[organisation]\ndomains = [\"advokat.test\"]\n";

/// The attack: one address opens 50 connections to the inbound
/// port (5 allowed), then sixty addresses open 300 between them, more than
/// the inbound listener's 256. Extra ones get 421; meanwhile the firm's
/// own server (127.0.0.1, trusted) is greeted on the outbound listener and
/// its message accepted. Before the fix all 50 from one address were
/// served, and the 300 took every slot of both listeners.
#[test]
fn one_address_cannot_take_the_listeners_and_the_trusted_listener_is_never_starved() {
    let site = Site::new(false).unwrap();
    firm(&site);
    let serve = Serve::start(
        &site,
        &format!(
            "{DOMAINS}[inbound]\nmax_connections_per_address = 5\n\
             [outbound]\nrelay = \"127.0.0.1:9\"\nrelay_tls = \"none\"\n"
        ),
    );
    let one = Ipv4Addr::new(127, 0, 2, 1);
    let mut held = Vec::new();
    let (mut served, mut refused) = (0, 0);
    for _ in 0..50 {
        let mut s = connect_from(one, serve.inbound);
        let l = first_line(&mut s);
        if l.starts_with("220 ") {
            served += 1;
            held.push(s);
        } else {
            assert!(
                l.starts_with("421 4.7.0 too many connections from your address"),
                "{l:?}"
            );
            refused += 1;
        }
    }
    assert_eq!((served, refused), (5, 45), "one address, 50 connections");

    // Sixty addresses, five each: the inbound listener's 256 fill up.
    let mut listener_full = 0;
    for a in 0..60u8 {
        for _ in 0..5 {
            let mut s = connect_from(Ipv4Addr::new(127, 0, 3, a + 1), serve.inbound);
            let l = first_line(&mut s);
            if l.starts_with("220 ") {
                held.push(s);
            } else {
                assert!(l.starts_with("421 4.7.0 too many connections"), "{l:?}");
                listener_full += 1;
            }
        }
    }
    assert_eq!(held.len(), 256, "the inbound listener's budget");
    assert_eq!(listener_full, 305 - 256);

    // The firm's own server, meanwhile: greeted and its message taken.
    let (mut firm_server, greeting) = Smtp::connect(serve.outbound);
    assert!(greeting.starts_with("220 "), "outbound: {greeting:?}");
    let r = firm_server.send(
        "post@advokat.test",
        &["modpart@udenfor.test"],
        b"From: post@advokat.test\r\nTo: modpart@udenfor.test\r\nSubject: sag 17\r\n\r\nHej.\r\n",
    );
    assert!(
        r.starts_with("250 "),
        "outbound message during the flood: {r}"
    );
    assert!(firm_server.cmd("QUIT").starts_with("221"));

    assert_eq!(
        serve.metric("sikkermail_failures_total{reason=\"too_many_sessions_from_address\"}"),
        45.0
    );
    assert_eq!(
        serve.metric("sikkermail_failures_total{reason=\"too_many_sessions\"}"),
        49.0
    );

    // The slots come back when the clients go.
    drop(held);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let l = first_line(&mut connect_from(one, serve.inbound));
        if l.starts_with("220 ") {
            break;
        }
        assert!(Instant::now() < deadline, "slots not given back: {l:?}");
        std::thread::sleep(Duration::from_millis(100));
    }
    serve.stop();
}

/// Postfix's `smtpd_min_data_rate`: a client trickling DATA (five bytes a
/// second, each read well inside the data timeout) is cut off with 421
/// 4.4.2 once the message is slower than `min_data_rate` after
/// `data_grace`, and nothing of it is delivered; a normal client right
/// after gets 250. Before the fix the trickle went on and got 250.
#[test]
fn a_message_trickled_slower_than_the_minimum_rate_is_cut_off() {
    let site = Site::new(false).unwrap();
    firm(&site);
    let serve = Serve::start(
        &site,
        &format!("{DOMAINS}[inbound]\nmin_data_rate = 1000\ndata_grace = \"2s\"\n"),
    );
    let new = site.dir.join("maildir/post@advokat.test/new");

    let mut s = TcpStream::connect(serve.inbound).unwrap();
    assert!(first_line(&mut s).starts_with("220 "));
    for (cmd, want) in [
        ("HELO slow.test", "250"),
        ("MAIL FROM:<a@udenfor.test>", "250"),
        ("RCPT TO:<post@advokat.test>", "250"),
        ("DATA", "354"),
    ] {
        s.write_all(format!("{cmd}\r\n").as_bytes()).unwrap();
        let r = first_line(&mut s);
        assert!(r.starts_with(want), "{cmd}: {r}");
    }
    s.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let start = Instant::now();
    let mut got = Vec::new();
    let mut b = [0u8; 256];
    let head = b"From: a@udenfor.test\r\nSubject: langsom\r\n\r\n";
    let mut sent = 0usize;
    while start.elapsed() < Duration::from_secs(15) && !got.ends_with(b"\n") {
        let byte = head.get(sent).copied().unwrap_or(b'x');
        if s.write_all(&[byte]).is_err() {
            break;
        }
        sent += 1;
        match s.read(&mut b) {
            Ok(0) => break,
            Ok(n) => got.extend_from_slice(&b[..n]),
            Err(_) => {}
        }
    }
    if got.is_empty() {
        // Not cut off in 15 s: finish the message as a patient client would.
        let _ = s.write_all(b"\r\n.\r\n");
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let n = s.read(&mut b).unwrap_or(0);
        got.extend_from_slice(&b[..n]);
    }
    let reply = String::from_utf8_lossy(&got).to_string();
    assert!(
        reply.starts_with("421 4.4.2") && reply.contains("too slow"),
        "after {sent} bytes in {:?}: {reply:?}",
        start.elapsed()
    );
    // 2 s grace + 1 ms per byte: cut off long before the 15 s bound.
    assert!(
        start.elapsed() < Duration::from_secs(10),
        "{:?}",
        start.elapsed()
    );
    assert!(closed_within(&mut s, Duration::from_secs(5)), "not closed");
    assert_eq!(
        serve.metric("sikkermail_failures_total{reason=\"smtp_transfer_too_slow\"}"),
        1.0
    );

    // A normal client right after.
    let (mut c, _) = Smtp::connect(serve.inbound);
    let r = c.send(
        "b@udenfor.test",
        &["post@advokat.test"],
        b"From: b@udenfor.test\r\nSubject: hurtig\r\n\r\nHej.\r\n",
    );
    assert!(r.starts_with("250 "), "{r}");
    let msg = serve.maildir_message(&new);
    assert!(msg.contains("Subject: hurtig"), "{msg}");
    std::thread::sleep(Duration::from_secs(1));
    let delivered: Vec<String> = std::fs::read_dir(&new)
        .unwrap()
        .map(|e| std::fs::read_to_string(e.unwrap().path()).unwrap())
        .collect();
    assert_eq!(delivered.len(), 1, "{delivered:?}");
    assert!(!delivered[0].contains("langsom"));
    let queue = site.ok(&["queue", "list", "--all"]);
    assert_eq!(queue.matches("a@udenfor.test").count(), 0, "{queue}");
    serve.stop();
}

/// The attack on the HTTP listener, scaled down: half-open
/// requests (a header never finished) from ten addresses, more than the
/// per-address limit from each, more than the listener's total of 30.
/// Extra ones from an address are refused at once; when the listener is
/// full, a new connection closes the one that has waited longest for a
/// request; the rest are closed by the server after `header_timeout`;
/// meanwhile /healthz answers (its connection too gets a slot) and both
/// SMTP listeners greet. A kept-alive connection waiting for its next
/// request is closed the same way, and a body trickled in gets 408 after
/// `request_timeout`. Before the fix every half-open connection stayed
/// open.
#[test]
fn half_open_http_connections_are_bounded_and_closed() {
    let site = Site::new(false).unwrap();
    firm(&site);
    let serve = Serve::start(
        &site,
        &format!(
            "{DOMAINS}[http]\nheader_timeout = \"2s\"\nrequest_timeout = \"3s\"\n\
             max_connections_per_address = 5\nmax_connections = 30\n"
        ),
    );
    let pid = serve.child.id();
    let (fds_before, rss_before) = fds_and_rss(pid);
    let start = Instant::now();
    let mut half_open = Vec::new();
    for a in 0..10u8 {
        for _ in 0..8 {
            let mut s = connect_from(Ipv4Addr::new(127, 0, 4, a + 1), serve.http);
            // Refused connections may already be closed: errors ignored.
            let _ = s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n");
            half_open.push(s);
        }
    }
    let (fds_during, rss_during) = fds_and_rss(pid);
    eprintln!(
        "80 half-open HTTP connections: fds {fds_before} -> {fds_during}, \
         RSS {rss_before} -> {rss_during} kB"
    );
    // Thirty at most, whatever the addresses.
    assert!(
        fds_during <= fds_before + 30 + 5,
        "{fds_before} -> {fds_during}"
    );

    // During the attack: health, and SMTP on both listeners.
    let other = Ipv4Addr::new(127, 0, 5, 1);
    assert_eq!(http_status(other, serve.http, "/healthz"), 200);
    assert!(
        serve.metric("sikkermail_failures_total{reason=\"http_waiting_connection_closed\"}")
            >= 20.0
    );
    for addr in [serve.inbound, serve.outbound] {
        let l = first_line(&mut connect_from(other, addr));
        assert!(l.starts_with("220 "), "{addr}: {l:?}");
    }

    // A kept-alive connection, idle after one answered request.
    let mut idle = connect_from(other, serve.http);
    idle.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    idle.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut b = [0u8; 512];
    let n = idle.read(&mut b).unwrap();
    assert!(b[..n].starts_with(b"HTTP/1.1 200"));
    let idle_from = Instant::now();

    // Every half-open connection is closed: refused ones at once, the rest
    // after the 2 s header timeout (bound: 15 s from the start).
    for (i, s) in half_open.iter_mut().enumerate() {
        let left = Duration::from_secs(15).saturating_sub(start.elapsed());
        assert!(
            closed_within(s, left),
            "half-open connection {i} still open after {:?}",
            start.elapsed()
        );
    }
    assert!(
        closed_within(&mut idle, Duration::from_secs(10)),
        "idle keep-alive connection still open after {:?}",
        idle_from.elapsed()
    );
    let (fds_after, rss_after) = fds_and_rss(pid);
    eprintln!("after the header timeout: fds {fds_after}, RSS {rss_after} kB");
    // Room for the store opening a connection or two meanwhile.
    assert!(fds_after <= fds_before + 8, "{fds_before} -> {fds_after}");
    assert_eq!(
        serve
            .metric("sikkermail_failures_total{reason=\"http_too_many_connections_from_address\"}"),
        30.0
    );
    assert_eq!(http_status(other, serve.http, "/healthz"), 200);

    // A whole header, then a body trickled in: 408 and closed after the
    // 3 s request timeout.
    let mut slow = connect_from(other, serve.http);
    let t0 = Instant::now();
    slow.write_all(
        b"POST /api/v1/login HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n\
          Content-Length: 1000\r\n\r\n{\"name\": ",
    )
    .unwrap();
    slow.set_read_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    let mut answer = Vec::new();
    while t0.elapsed() < Duration::from_secs(15) {
        let _ = slow.write_all(b" ");
        match slow.read(&mut b) {
            Ok(0) => break,
            Ok(n) => answer.extend_from_slice(&b[..n]),
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(_) => break,
        }
    }
    let answer = String::from_utf8_lossy(&answer).to_string();
    assert!(
        answer.starts_with("HTTP/1.1 408"),
        "slow body after {:?}: {answer:?}",
        t0.elapsed()
    );
    assert!(t0.elapsed() < Duration::from_secs(10), "{:?}", t0.elapsed());

    // SIGTERM with a half-open connection open: still stops within 10 s.
    let mut s = connect_from(other, serve.http);
    s.write_all(b"GET / HTTP/1.1\r\n").unwrap();
    serve.stop();
}
