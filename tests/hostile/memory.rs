//! Memory an anonymous client can make serve hold: message content in
//! transit is spooled (encrypted, unnamed files), not kept in memory, and
//! whole messages awaiting their commit are bounded; RSS read from /proc.
//! The figures for 30 concurrent 40 MB messages are in benches/README.md
//! (benches/memory.sh); this checks the mechanism with a generous bound.

use std::time::{Duration, Instant};

use crate::Smtp;
use crate::client::status_kb;
use crate::serve::Serve;
use crate::site::Site;

/// (VmRSS, VmHWM) of `pid`, in MiB.
fn rss_mib(pid: u32) -> (u64, u64) {
    (
        status_kb(pid, "VmRSS") / 1024,
        status_kb(pid, "VmHWM") / 1024,
    )
}

#[test]
fn messages_in_transit_are_spooled_not_held_in_memory() {
    let site = Site::new(false).unwrap();
    site.ok(&["init", "--test"]);
    let serve = Serve::start(
        &site,
        "[organisation]\ndomains = [\"advokat.test\"]\n[inbound]\nmax_connections_per_address = 50\n",
    );
    let pid = serve.child.id();
    let (before, _) = rss_mib(pid);
    // 12 clients each send 8 MiB of content and hold back the final dot:
    // 96 MiB in transit.
    let line = [b"x".repeat(76), b"\r\n".to_vec()].concat();
    let chunk: Vec<u8> = line.repeat(1024 * 1024 / 78 + 1);
    let mut clients = Vec::new();
    for _ in 0..12 {
        let (mut c, g) = Smtp::connect(serve.inbound);
        assert!(g.starts_with("220"), "{g}");
        assert!(c.cmd("EHLO big.test").starts_with("250"));
        assert!(c.cmd("MAIL FROM:<a@big.test>").starts_with("250"));
        assert!(c.cmd("RCPT TO:<post@advokat.test>").starts_with("250"));
        assert!(c.cmd("DATA").starts_with("354"));
        c.raw(b"From: a@big.test\r\nSubject: big\r\n\r\n");
        for _ in 0..8 {
            c.raw(&chunk);
        }
        clients.push(c);
    }
    // Everything was written; give serve a moment to read it all.
    let deadline = Instant::now() + Duration::from_secs(2);
    let mut during = 0;
    while Instant::now() < deadline {
        during = during.max(rss_mib(pid).0);
        std::thread::sleep(Duration::from_millis(200));
    }
    let grew = during.saturating_sub(before);
    assert!(
        grew < 48,
        "96 MiB in transit made serve grow by {grew} MiB (from {before} MiB)"
    );
    // Each message then arrives whole.
    for c in &mut clients {
        let r = c.cmd(".");
        assert!(r.starts_with("250"), "{r}");
    }
    let (_, peak) = rss_mib(pid);
    eprintln!("RSS before {before} MiB, in transit {during} MiB, peak {peak} MiB");
    serve.stop();
}
