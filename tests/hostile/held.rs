//! Attacks that were already refused when this suite was written, kept here
//! so they stay refused: SMTP smuggling (an end of data the gateway does
//! not see as one must not become a second message at the next hop) and
//! open relaying.

use crate::Smtp;
use crate::common::{Sink, peer};
use crate::serve::Serve;
use crate::site::Site;

#[test]
fn smuggled_ends_of_data_and_relaying_stay_refused() {
    if !peer("smtp-sink") {
        return;
    }
    let site = Site::new(false).unwrap();
    let d = site.dir.parent().unwrap().to_path_buf();
    site.ok(&["init", "--test"]);
    let sink = Sink::start(&d.join("sink"));
    let serve = Serve::start(
        &site,
        &format!(
            "[organisation]\ndomains = [\"advokat.test\"]\n[inbound]\nnext_hop = \"127.0.0.1:{}\"\nnext_hop_tls = \"none\"\n",
            sink.port
        ),
    );
    // Relaying: inbound takes mail for the firm's domains only.
    let (mut c, _) = Smtp::connect(serve.inbound);
    let r = c.send(
        "a@evil.test",
        &["victim@elsewhere.test"],
        b"Subject: x\r\n\r\nx\r\n",
    );
    assert!(r.starts_with("550 5.7.1"), "{r}");
    c.cmd("QUIT");
    // Smuggling: bare-LF and bare-CR "ends of data" followed by a second
    // transaction inside the first message's content.
    for fake_end in ["\n.\n", "\n.\r\n", "\r\n.\n", "\r.\r", "\r\n.\r"] {
        let (mut c, _) = Smtp::connect(serve.inbound);
        let smuggled = format!(
            "From: a@evil.test\r\nSubject: first\r\n\r\nfirst{fake_end}MAIL FROM:<ceo@advokat.test>\r\n\
             RCPT TO:<post@advokat.test>\r\nDATA\r\nFrom: ceo@advokat.test\r\nSubject: SMUGGLED\r\n\r\npay now\r\n"
        );
        let r = c.send("a@evil.test", &["post@advokat.test"], smuggled.as_bytes());
        assert!(r.starts_with("250"), "{fake_end:?}: {r}");
        c.cmd("QUIT");
    }
    let got = sink.wait_for(5, 30, || serve.logs());
    std::thread::sleep(std::time::Duration::from_secs(1));
    let got_now = sink.messages();
    assert_eq!(got_now.len(), 5, "one message per transaction: {got_now:?}");
    for (_, m) in &got {
        let head = m.split("\n\n").next().unwrap();
        assert!(head.contains("Subject: first"), "{m}");
        assert!(!head.contains("SMUGGLED"), "{m}");
    }
}
