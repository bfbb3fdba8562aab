//! What the firm's keys sign: only mail from the firm's own senders (the
//! outbound listener refuses other senders, an SMTP account sends only as
//! what it may, `From:` agrees with the envelope), and no bounce carries an
//! outsider's text to a third party signed by the firm.

use std::process::Command;

use crate::common::{Sink, free_port, peer};
use crate::serve::Serve;
use crate::site::sites;
use crate::{Smtp, firm};

fn signed(msg: &str) -> bool {
    msg.contains("pkcs7-signature") || msg.contains("signed-data")
}

#[test]
fn outbound_signs_only_for_the_firms_own_senders() {
    if !peer("smtp-sink") || !peer("swaks") {
        return;
    }
    let site = sites().into_iter().next().unwrap();
    let d = site.dir.parent().unwrap().to_path_buf();
    firm(&site);
    let pw = "relay-kodeord-der-er-langt";
    let o = site.run_env(
        &["smtp-user", "add", "relayuser", "--password-env", "PW"],
        &[("PW", pw)],
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let sink = Sink::start(&d.join("sink"));
    let serve = Serve::start(
        &site,
        &format!(
            "[organisation]\ndomains = [\"advokat.test\"]\n[outbound]\nrelay = \"127.0.0.1:{}\"\nrelay_tls = \"none\"\n",
            sink.port
        ),
    );
    let mail = |from_field: &str| {
        format!(
            "From: {from_field}\r\nTo: post@retten.test\r\nSubject: Processkrift\r\n\r\nKontonr. er nu 9999-1234567.\r\n"
        )
    };
    // 1. A foreign sender from the trusted network: refused at MAIL.
    let (mut c, _) = Smtp::connect(serve.outbound);
    let r = c.send(
        "dommer@domstol.dk",
        &["post@retten.test"],
        mail("dommer@domstol.dk").as_bytes(),
    );
    assert!(r.starts_with("550 5.7.1"), "{r}");
    assert!(r.contains("not an address of this organisation"), "{r}");
    // A look-alike domain is as foreign.
    let r = c.cmd("MAIL FROM:<post@advokat.test.evil.test>");
    assert!(r.starts_with("550 5.7.1"), "{r}");
    c.cmd("QUIT");
    // 2. The firm's envelope with someone else in From: refused after DATA.
    let (mut c, _) = Smtp::connect(serve.outbound);
    let r = c.send(
        "post@advokat.test",
        &["post@retten.test"],
        mail("Dommer <dommer@domstol.dk>").as_bytes(),
    );
    assert!(r.starts_with("554 5.7.1"), "{r}");
    c.cmd("QUIT");
    // 3. An SMTP account sending as a colleague: refused at MAIL.
    let o = Command::new("swaks")
        .args(["-s", &serve.outbound.to_string(), "--tls", "-a", "PLAIN"])
        .args(["-au", "relayuser", "-ap", pw])
        .args(["-f", "mette@advokat.test", "-t", "post@retten.test", "-n"])
        .args(["--data", &mail("mette@advokat.test")])
        .output()
        .unwrap();
    let tx = String::from_utf8_lossy(&o.stdout).to_string();
    assert!(tx.contains("235 2.7.0"), "{tx}");
    assert!(
        tx.contains("550 5.7.1") && tx.contains("may not send as"),
        "{tx}"
    );
    assert_eq!(o.status.code(), Some(23), "{tx}");
    // 4. The firm's own sender, agreeing: accepted and signed.
    let (mut c, _) = Smtp::connect(serve.outbound);
    let r = c.send(
        "post@advokat.test",
        &["post@retten.test"],
        mail("Advokatfirma <post@advokat.test>").as_bytes(),
    );
    assert!(r.starts_with("250"), "{r}");
    c.cmd("QUIT");
    let got = sink.wait_for(1, 30, || serve.logs());
    std::thread::sleep(std::time::Duration::from_secs(1));
    let got_now = sink.messages();
    assert_eq!(
        got_now.len(),
        1,
        "only the firm's own mail leaves: {got_now:?}"
    );
    assert!(signed(&got[0].1), "{}", got[0].1);
}

#[test]
fn a_bounce_of_inbound_mail_carries_headers_only_and_is_never_signed() {
    if !peer("smtp-sink") {
        return;
    }
    let site = sites().into_iter().next().unwrap();
    let d = site.dir.parent().unwrap().to_path_buf();
    firm(&site);
    // The firm's mail server refuses every recipient for good; the bounce
    // goes out through the relay.
    let refusing = Sink::start_with(&d.join("refusing"), free_port(), &["-f", "RCPT"]);
    let relay = Sink::start(&d.join("relay"));
    let serve = Serve::start(
        &site,
        &format!(
            "[organisation]\ndomains = [\"advokat.test\"]\n\
             [inbound]\nnext_hop = \"127.0.0.1:{}\"\nnext_hop_tls = \"none\"\n\
             recipients = [\"post@advokat.test\", \"sag@advokat.test\"]\n\
             [outbound]\nrelay = \"127.0.0.1:{}\"\nrelay_tls = \"none\"\n",
            refusing.port, relay.port
        ),
    );
    let (mut c, _) = Smtp::connect(serve.inbound);
    assert!(c.cmd("EHLO attacker.test").starts_with("250"));
    // A mailbox that does not exist is refused at once: no bounce at all.
    let r = c.cmd("MAIL FROM:<victim@elsewhere.test> RET=FULL");
    assert!(r.starts_with("250"), "{r}");
    let r = c.cmd("RCPT TO:<nobody@advokat.test>");
    assert!(r.starts_with("550 5.1.1"), "{r}");
    // One that exists, refused by the next hop: a bounce to the victim.
    let r = c.cmd("RCPT TO:<post@advokat.test> NOTIFY=FAILURE");
    assert!(r.starts_with("250"), "{r}");
    assert!(c.cmd("DATA").starts_with("354"));
    c.raw(
        b"From: victim@elsewhere.test\r\nTo: post@advokat.test\r\nSubject: Faktura\r\n\r\n\
          ATTACKER TEXT: vores kontonr. er nu 9999-1234567\r\n",
    );
    let r = c.cmd(".");
    assert!(r.starts_with("250"), "{r}");
    c.cmd("QUIT");
    let got = relay.wait_for(1, 60, || serve.logs());
    let (rcpts, dsn) = &got[0];
    assert_eq!(rcpts, &vec!["victim@elsewhere.test".to_string()]);
    assert!(dsn.contains("multipart/report"), "{dsn}");
    assert!(
        dsn.contains("Subject: Faktura"),
        "the headers are there: {dsn}"
    );
    assert!(!dsn.contains("ATTACKER TEXT"), "the body went back: {dsn}");
    assert!(!signed(dsn), "a bounce to an outsider is signed: {dsn}");
}

/// `[inbound] verify_recipients`: the firm's server is asked at RCPT (as
/// Postfix's `reject_unverified_recipient`), so a mailbox it refuses is
/// refused during the transaction and never bounced to a forged sender; a
/// next hop that cannot answer makes it a temporary refusal.
#[test]
fn recipients_are_verified_against_the_next_hop_before_acceptance() {
    if !peer("smtp-sink") {
        return;
    }
    let site = sites().into_iter().next().unwrap();
    let d = site.dir.parent().unwrap().to_path_buf();
    firm(&site);
    let refusing = Sink::start_with(&d.join("refusing"), free_port(), &["-f", "RCPT"]);
    let config = |port: u16| {
        format!(
            "[organisation]\ndomains = [\"advokat.test\"]\n\
             [inbound]\nnext_hop = \"127.0.0.1:{port}\"\nnext_hop_tls = \"none\"\nverify_recipients = true\n"
        )
    };
    let serve = Serve::start(&site, &config(refusing.port));
    let (mut c, _) = Smtp::connect(serve.inbound);
    assert!(c.cmd("EHLO attacker.test").starts_with("250"));
    assert!(
        c.cmd("MAIL FROM:<victim@elsewhere.test>")
            .starts_with("250")
    );
    let r = c.cmd("RCPT TO:<post@advokat.test>");
    assert!(r.starts_with("550 5.1.1"), "{r}");
    // Asked once: the answer is cached.
    let r = c.cmd("RCPT TO:<POST@advokat.test>");
    assert!(r.starts_with("550 5.1.1"), "{r}");
    c.cmd("QUIT");
    serve.stop();
    // The next hop down: a temporary refusal, nothing accepted.
    let serve = Serve::start(&site, &config(free_port()));
    let (mut c, _) = Smtp::connect(serve.inbound);
    assert!(c.cmd("EHLO attacker.test").starts_with("250"));
    assert!(
        c.cmd("MAIL FROM:<victim@elsewhere.test>")
            .starts_with("250")
    );
    let r = c.cmd("RCPT TO:<post@advokat.test>");
    assert!(r.starts_with("450 4.1.1"), "{r}");
    c.cmd("QUIT");
    serve.stop();
    // A next hop that takes the mailbox: accepted and delivered.
    let taking = Sink::start(&d.join("taking"));
    let serve = Serve::start(&site, &config(taking.port));
    let (mut c, _) = Smtp::connect(serve.inbound);
    let r = c.send(
        "dommer@domstol.dk",
        &["post@advokat.test"],
        b"From: dommer@domstol.dk\r\nSubject: Dom\r\n\r\nDom.\r\n",
    );
    assert!(r.starts_with("250"), "{r}");
    c.cmd("QUIT");
    let got = taking.wait_for(1, 30, || serve.logs());
    assert!(got[0].1.contains("Subject: Dom"), "{}", got[0].1);
    serve.stop();
}
