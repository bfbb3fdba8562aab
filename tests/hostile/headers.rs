//! Forged verdict headers: a bare CR (or LF) inside a header field must not
//! become an `X-Sikkermail-*` line after the stripper has looked, neither
//! at the next hop (our SMTP client sends CRLF for it) nor in a Maildir
//! (Python's `email`, like many readers, takes a bare CR as a line end),
//! outside or inside the encryption.

use std::fs;
use std::process::Command;

use crate::common::{Sink, peer, sh};
use crate::serve::Serve;
use crate::site::sites;
use crate::{Smtp, firm};

const FORGED: &str = "X-Sikkermail-Signature: valid; signer=dommer@domstol.dk";

/// Every line of the header (up to the first empty line), split at any of
/// CR LF, CR or LF, as a lenient reader splits them.
fn lenient_header_lines(msg: &str) -> Vec<String> {
    let unified = msg.replace("\r\n", "\n").replace('\r', "\n");
    unified
        .split("\n\n")
        .next()
        .unwrap_or("")
        .lines()
        .map(str::to_string)
        .collect()
}

fn signature_lines(msg: &str) -> Vec<String> {
    lenient_header_lines(msg)
        .into_iter()
        .filter(|l| l.to_ascii_lowercase().starts_with("x-sikkermail-signature"))
        .collect()
}

#[test]
fn a_bare_cr_in_a_field_never_becomes_a_verdict_at_the_next_hop() {
    if !peer("smtp-sink") {
        return;
    }
    let site = sites().into_iter().next().unwrap();
    let d = site.dir.parent().unwrap().to_path_buf();
    firm(&site);
    let sink = Sink::start(&d.join("sink"));
    let serve = Serve::start(
        &site,
        &format!(
            "[organisation]\ndomains = [\"advokat.test\"]\n[inbound]\nnext_hop = \"127.0.0.1:{}\"\nnext_hop_tls = \"none\"\n",
            sink.port
        ),
    );
    // A bare CR, a bare LF, and a CR before the empty line that ends the
    // header, each hiding a forged verdict.
    let forgeries: [String; 3] = [
        format!("X-Foo: a\r{FORGED}\r\n"),
        format!("X-Foo: a\n{FORGED}\r\n"),
        format!("X-Foo: a\r\n\r{FORGED}\r\n"),
    ];
    for (i, f) in forgeries.iter().enumerate() {
        let msg = format!(
            "From: dommer@domstol.dk\r\nTo: post@advokat.test\r\nSubject: forged {i}\r\n{f}\r\nHello.\r\n"
        );
        let (mut c, _) = Smtp::connect(serve.inbound);
        let r = c.send("dommer@domstol.dk", &["post@advokat.test"], msg.as_bytes());
        assert!(r.starts_with("250"), "{r}");
        c.cmd("QUIT");
    }
    let got = sink.wait_for(forgeries.len(), 30, || serve.logs());
    for (_, m) in &got {
        let sig = signature_lines(m);
        assert_eq!(
            sig,
            vec!["X-Sikkermail-Signature: none".to_string()],
            "the next hop sees a forged verdict:\n{m}"
        );
        // (The third forgery ends the header early: its line is body text.)
        assert!(
            !lenient_header_lines(m)
                .iter()
                .any(|l| l.contains("signer=dommer")),
            "{m}"
        );
    }
}

#[test]
fn a_bare_cr_inside_the_encryption_never_reaches_a_maildir_as_a_verdict() {
    if !peer("openssl") || !peer("python3") {
        return;
    }
    let site = sites().into_iter().next().unwrap();
    let d = site.dir.parent().unwrap().to_path_buf();
    let org_cert = firm(&site);
    let serve = Serve::start(&site, "[organisation]\ndomains = [\"advokat.test\"]\n");
    // The inner entity's header hides the forged field behind a bare CR;
    // -binary keeps its bytes as they are.
    fs::write(
        d.join("inner.txt"),
        format!("Content-Type: text/plain\r\nX-Foo: a\r{FORGED}\r\n\r\nDom.\r\n"),
    )
    .unwrap();
    sh(
        &d,
        &format!(
            "openssl cms -encrypt -binary -aes-256-cbc -in inner.txt -out m.eml -from dommer@domstol.dk -to post@advokat.test -subject Dom {}",
            org_cert.display()
        ),
    );
    let msg = fs::read(d.join("m.eml")).unwrap();
    let msg = String::from_utf8(msg)
        .unwrap()
        .replace("\r\n", "\n")
        .replace('\n', "\r\n");
    let (mut c, _) = Smtp::connect(serve.inbound);
    let r = c.send("dommer@domstol.dk", &["post@advokat.test"], msg.as_bytes());
    assert!(r.starts_with("250"), "{r}");
    c.cmd("QUIT");
    let new = site.dir.join("maildir/post@advokat.test/new");
    serve.maildir_message(&new);
    let file = fs::read_dir(&new).unwrap().next().unwrap().unwrap().path();
    let raw = String::from_utf8_lossy(&fs::read(&file).unwrap()).to_string();
    assert!(
        raw.contains("X-Sikkermail-Decrypted"),
        "not decrypted: {raw}"
    );
    // What a mail reader makes of the file.
    let o = Command::new("python3")
        .arg("-c")
        .arg(
            "import email,sys\n\
             m = email.message_from_binary_file(open(sys.argv[1], 'rb'))\n\
             print(m.get_all('X-Sikkermail-Signature'))",
        )
        .arg(&file)
        .output()
        .unwrap();
    let seen = String::from_utf8_lossy(&o.stdout).trim().to_string();
    assert_eq!(seen, "['none']", "Python's email reads: {seen}\n{raw}");
    assert_eq!(signature_lines(&raw).len(), 1, "{raw}");
}
