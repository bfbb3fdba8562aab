//! The SMTP session over an in-memory duplex stream: transcripts of what a
//! client sends and what it must get back, and what the handler receives.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use common::{
    Accepted, PASSWORD, REFUSED_DOMAIN, Transcript, USER, acceptor, config, peer, split_received,
};
use gateway::smtp::{
    AcceptError, Body, Direction, EndReason, SessionConfig, SessionInfo, SessionOutcome,
};

const EXTENSIONS: &str = "250-mx.test\r\n250-PIPELINING\r\n250-SIZE 10000\r\n250-8BITMIME\r\n\
250-SMTPUTF8\r\n250-ENHANCEDSTATUSCODES\r\n250-DSN\r\n250-CHUNKING";

fn b64(s: &[u8]) -> String {
    openssl::base64::encode_block(s)
}

fn plain(user: &str, password: &str) -> String {
    b64(format!("\0{user}\0{password}").as_bytes())
}

fn outbound() -> SessionConfig {
    let mut c = config();
    c.direction = Direction::Outbound;
    c
}

fn trusted() -> SessionInfo {
    let mut info = SessionInfo::new(peer());
    info.trusted = true;
    info
}

/// EHLO, MAIL, RCPT, DATA with `content` (already dot-stuffed, ending in
/// CRLF . CRLF); returns the single accepted message.
async fn one_message(s: &mut Transcript, content: &[u8]) -> Accepted {
    s.cmd("EHLO client.example", "250 ").await;
    s.cmd("MAIL FROM:<a@b.dk>", "250 2.1.0").await;
    s.cmd("RCPT TO:<c@d.dk>", "250 2.1.5").await;
    s.cmd("DATA", "354 ").await;
    s.send(content).await;
    s.expect("250 2.0.0 Ok: queued as Q1", "end of data").await;
    let accepted = s.handler.accepted();
    assert_eq!(accepted.len(), 1);
    accepted.into_iter().next().unwrap()
}

#[tokio::test]
async fn ehlo_extensions_inbound_without_tls() {
    let mut s = Transcript::start(config()).await;
    assert_eq!(s.greeting, "220 mx.test ESMTP\r\n");
    let reply = s.cmd("EHLO client.example", "250 CHUNKING").await;
    assert_eq!(
        reply,
        format!("{EXTENSIONS}\r\n").replace("250-CHUNKING", "250 CHUNKING")
    );
    s.cmd("QUIT", "221 2.0.0").await;
    s.expect_closed().await;
    assert_eq!(
        s.finish().await,
        SessionOutcome {
            messages: 0,
            ended: EndReason::Quit
        }
    );
}

#[tokio::test]
async fn ehlo_extensions_with_tls_configured() {
    // Inbound: STARTTLS, never AUTH.
    let mut c = config();
    c.tls = Some(acceptor());
    let mut s = Transcript::start(c.clone()).await;
    let reply = s.cmd("EHLO client.example", "250 STARTTLS").await;
    assert_eq!(reply, format!("{EXTENSIONS}\r\n250 STARTTLS\r\n"));
    // Outbound, before TLS: STARTTLS, AUTH only after it.
    c.direction = Direction::Outbound;
    let mut s = Transcript::start(c.clone()).await;
    let reply = s.cmd("EHLO client.example", "250 STARTTLS").await;
    assert!(!reply.contains("AUTH"), "{reply}");
    // Outbound without the TLS requirement: AUTH right away.
    c.require_tls_for_auth = false;
    let mut s = Transcript::start(c).await;
    let reply = s.cmd("EHLO client.example", "250 AUTH PLAIN LOGIN").await;
    assert!(reply.contains("250-STARTTLS\r\n"), "{reply}");
    // Outbound, no TLS configured, TLS required for AUTH: neither.
    let mut s = Transcript::start(outbound()).await;
    let reply = s.cmd("EHLO client.example", "250 CHUNKING").await;
    assert!(!reply.contains("AUTH") && !reply.contains("STARTTLS"));
}

#[tokio::test]
async fn helo_has_no_extensions() {
    let mut s = Transcript::start(config()).await;
    assert_eq!(
        s.cmd("HELO client.example", "250 mx.test").await,
        "250 mx.test\r\n"
    );
    s.cmd("MAIL FROM:<a@b.dk> SIZE=10", "555 5.5.4").await;
    s.cmd("MAIL FROM:<a@b.dk>", "250 2.1.0").await;
    s.cmd("RCPT TO:<c@d.dk>", "250 2.1.5").await;
    s.cmd("DATA", "354").await;
    s.send(b"hi\r\n.\r\n").await;
    s.expect("250 2.0.0 Ok: queued as Q1", "data").await;
    let m = &s.handler.accepted()[0];
    let rest = split_received(
        &m.body,
        "Received: from client.example ([192.0.2.7])\r\n\tby mx.test with SMTP id ",
    );
    assert_eq!(rest, b"hi\r\n");
    assert_eq!(m.info.helo.as_deref(), Some("client.example"));
}

#[tokio::test]
async fn full_transaction_with_data() {
    let mut s = Transcript::start(config()).await;
    s.cmd("EHLO client.example", "250 CHUNKING").await;
    s.cmd(
        "MAIL FROM:<a@b.dk> SIZE=100 BODY=8BITMIME RET=HDRS ENVID=x",
        "250 2.1.0 Ok",
    )
    .await;
    s.cmd("RCPT TO:<c@d.dk> NOTIFY=SUCCESS,FAILURE", "250 2.1.5 Ok")
        .await;
    s.cmd("RCPT TO:<Postmaster>", "250 2.1.5").await;
    s.cmd("DATA", "354 End data with <CR><LF>.<CR><LF>").await;
    s.send(b"Subject: hi\r\n\r\nbody \xc3\xa6\r\n.\r\n").await;
    s.expect("250 2.0.0 Ok: queued as Q1", "end of data").await;
    s.cmd("NOOP", "250 2.0.0 Ok").await;
    s.cmd("VRFY bob", "252 2.5.0").await;
    s.cmd("HELP", "214 2.0.0").await;
    s.cmd("QUIT", "221 2.0.0 Bye").await;
    s.expect_closed().await;
    let handler = s.handler.clone();
    assert_eq!(
        s.finish().await,
        SessionOutcome {
            messages: 1,
            ended: EndReason::Quit
        }
    );
    let m = &handler.accepted()[0];
    assert_eq!(m.envelope.mail_from, "a@b.dk");
    assert_eq!(m.envelope.params.size, Some(100));
    assert_eq!(m.envelope.params.body, Some(Body::EightBitMime));
    assert_eq!(m.envelope.params.envid.as_deref(), Some("x"));
    assert!(m.envelope.body_8bit);
    assert!(!m.envelope.smtputf8);
    let rcpts: Vec<&str> = m
        .envelope
        .recipients
        .iter()
        .map(|(a, _)| a.as_str())
        .collect();
    assert_eq!(rcpts, ["c@d.dk", "Postmaster"]);
    assert!(m.envelope.recipients[0].1.notify.unwrap().failure);
    assert_eq!(m.info.peer, peer());
    assert!(!m.info.tls);
    let rest = split_received(
        &m.body,
        "Received: from client.example ([192.0.2.7])\r\n\tby mx.test with ESMTP id ",
    );
    assert_eq!(rest, b"Subject: hi\r\n\r\nbody \xc3\xa6\r\n");
}

#[tokio::test]
async fn null_sender_and_transactions_in_a_row() {
    let mut s = Transcript::start(config()).await;
    s.cmd("EHLO client.example", "250 ").await;
    for (i, from) in ["<>", "<x@y.dk>", "<>"].iter().enumerate() {
        s.cmd(&format!("MAIL FROM:{from}"), "250 2.1.0").await;
        s.cmd("RCPT TO:<c@d.dk>", "250 2.1.5").await;
        s.cmd("DATA", "354").await;
        s.send(format!("n{i}\r\n.\r\n").as_bytes()).await;
        s.expect(&format!("250 2.0.0 Ok: queued as Q{}", i + 1), "data")
            .await;
    }
    // RSET in the middle of a transaction drops it.
    s.cmd("MAIL FROM:<a@b.dk>", "250").await;
    s.cmd("RSET", "250 2.0.0").await;
    s.cmd("RCPT TO:<c@d.dk>", "503 5.5.1").await;
    let accepted = s.handler.accepted();
    let froms: Vec<&str> = accepted
        .iter()
        .map(|m| m.envelope.mail_from.as_str())
        .collect();
    assert_eq!(froms, ["", "x@y.dk", ""]);
    assert_eq!(s.finish().await.ended, EndReason::ClientClosed);
}

#[tokio::test]
async fn dot_unstuffing_end_to_end() {
    let mut s = Transcript::start(config()).await;
    let m = one_message(
        &mut s,
        b"..leading\r\n...two\r\n..\r\n\r\na.b\r\n.x\r\nbare\n.\nlf\r\n..\r\n.\r\n",
    )
    .await;
    let rest = split_received(&m.body, "Received: ");
    assert_eq!(
        rest,
        b".leading\r\n..two\r\n.\r\n\r\na.b\r\nx\r\nbare\n.\nlf\r\n.\r\n".as_slice()
    );
}

#[tokio::test]
async fn bdat_chunks_and_last() {
    let mut s = Transcript::start(config()).await;
    s.cmd("EHLO client.example", "250 ").await;
    s.cmd("MAIL FROM:<a@b.dk> BODY=8BITMIME", "250 2.1.0").await;
    s.cmd("RCPT TO:<c@d.dk>", "250 2.1.5").await;
    // Chunk content is raw: no unstuffing, "\r\n.\r\n" and commands inside.
    s.send(b"BDAT 14\r\nSubject: x\r\n\r\n").await;
    s.expect("250 2.0.0 14 octets received", "chunk 1").await;
    s.send(b"BDAT 11\r\n.\r\nQUIT\r\n..").await;
    s.expect("250 2.0.0 11 octets received", "chunk 2").await;
    // DATA cannot be mixed in.
    s.cmd("DATA", "503 5.5.1").await;
    s.send(b"BDAT 3 LAST\r\nend").await;
    s.expect("250 2.0.0 Ok: queued as Q1", "last").await;
    // BDAT 0 LAST ends a message too; pipelined after the MAIL/RCPT.
    s.send(b"MAIL FROM:<a@b.dk>\r\nRCPT TO:<c@d.dk>\r\nBDAT 2\r\nokBDAT 0 LAST\r\n")
        .await;
    s.expect("250 2.1.0", "mail").await;
    s.expect("250 2.1.5", "rcpt").await;
    s.expect("250 2.0.0 2 octets", "bdat 2").await;
    s.expect("250 2.0.0 Ok: queued as Q2", "bdat 0 last").await;
    let accepted = s.handler.accepted();
    assert_eq!(
        split_received(&accepted[0].body, "Received: "),
        b"Subject: x\r\n\r\n.\r\nQUIT\r\n..end"
    );
    assert!(accepted[0].envelope.body_8bit);
    assert_eq!(split_received(&accepted[1].body, "Received: "), b"ok");
}

#[tokio::test]
async fn bdat_errors_consume_the_chunk() {
    let mut c = config();
    c.receiver.max_message_size = 1000;
    let mut s = Transcript::start(c).await;
    s.cmd("EHLO client.example", "250 ").await;
    // Without a transaction: refused, but the chunk is read, not executed.
    s.send(b"BDAT 6\r\nQUIT\r\n").await;
    s.expect("503 5.5.1", "bdat without mail").await;
    s.cmd("NOOP", "250").await;
    // Without recipients.
    s.cmd("MAIL FROM:<a@b.dk>", "250").await;
    s.cmd(&format!("RCPT TO:<x@{REFUSED_DOMAIN}>"), "550 5.7.1")
        .await;
    s.send(b"BDAT 4 LAST\r\nRSET").await;
    s.expect("554 5.5.1", "bdat without rcpt").await;
    // Too large: this chunk and the ones already pipelined are consumed
    // and refused until LAST.
    s.cmd("MAIL FROM:<a@b.dk>", "250").await;
    s.cmd("RCPT TO:<c@d.dk>", "250").await;
    let mut batch = b"BDAT 600\r\n".to_vec();
    batch.extend_from_slice(&[b'x'; 600]);
    batch.extend_from_slice(b"BDAT 600\r\n");
    batch.extend_from_slice(&[b'y'; 600]);
    batch.extend_from_slice(b"BDAT 12\r\nQUIT\r\nQUIT\r\nBDAT 4 LAST\r\nNOOPNOOP\r\n");
    s.send(&batch).await;
    s.expect("250 2.0.0 600 octets", "first chunk").await;
    s.expect("552 5.3.4", "over the limit").await;
    s.expect("552 5.3.4", "pipelined after failure").await;
    s.expect("552 5.3.4", "pipelined last").await;
    s.expect("250 2.0.0 Ok", "NOOP after the chunks").await;
    // The session goes on.
    s.cmd("MAIL FROM:<a@b.dk>", "250").await;
    assert!(s.handler.accepted().is_empty());
}

#[tokio::test]
async fn bad_bdat_syntax_closes() {
    let mut s = Transcript::start(config()).await;
    s.cmd("EHLO client.example", "250 ").await;
    s.cmd("BDAT ten", "501 5.5.4").await;
    s.expect("421 4.5.0", "close").await;
    s.expect_closed().await;
    assert!(matches!(
        s.finish().await.ended,
        EndReason::ProtocolError(_)
    ));
}

#[tokio::test]
async fn pipelining_replies_in_order() {
    let mut s = Transcript::start(config()).await;
    s.cmd("EHLO client.example", "250 ").await;
    s.send(
        format!(
            "MAIL FROM:<a@b.dk>\r\nRCPT TO:<c1@d.dk>\r\nRCPT TO:<x@{REFUSED_DOMAIN}>\r\n\
             RCPT TO:<c3@d.dk>\r\nDATA\r\n"
        )
        .as_bytes(),
    )
    .await;
    for expect in [
        "250 2.1.0",
        "250 2.1.5",
        "550 5.7.1 Relaying denied",
        "250 2.1.5",
        "354",
    ] {
        s.expect(expect, "pipelined").await;
    }
    s.send(b"x\r\n.\r\nRSET\r\nNOOP\r\n").await;
    s.expect("250 2.0.0 Ok: queued as Q1", "data").await;
    s.expect("250 2.0.0 Ok", "rset").await;
    s.expect("250 2.0.0 Ok", "noop").await;
    let m = &s.handler.accepted()[0];
    let rcpts: Vec<&str> = m
        .envelope
        .recipients
        .iter()
        .map(|(a, _)| a.as_str())
        .collect();
    assert_eq!(rcpts, ["c1@d.dk", "c3@d.dk"]);
}

#[tokio::test]
async fn replies_are_flushed_before_waiting_for_more_input() {
    let mut s = Transcript::start(config()).await;
    // The second command is incomplete: the first reply must come anyway.
    s.send(b"EHLO client.example\r\nNOOP\r\nNO").await;
    s.expect("250 CHUNKING", "ehlo").await;
    s.expect("250 2.0.0", "noop").await;
    s.send(b"OP\r\n").await;
    s.expect("250 2.0.0", "noop 2").await;
}

#[tokio::test]
async fn all_recipients_refused_then_data() {
    let mut s = Transcript::start(config()).await;
    s.cmd("EHLO client.example", "250 ").await;
    s.send(
        format!("MAIL FROM:<a@b.dk>\r\nRCPT TO:<x@{REFUSED_DOMAIN}>\r\nDATA\r\nhello\r\n.\r\n")
            .as_bytes(),
    )
    .await;
    s.expect("250 2.1.0", "mail").await;
    s.expect("550 5.7.1", "rcpt").await;
    s.expect("554 5.5.1 No valid recipients", "data").await;
    // The client must not send the body after a refused DATA; if it does,
    // the lines are commands (and bad ones).
    s.expect("500 5.5.1", "hello").await;
    s.expect("500 5.5.1", ".").await;
    assert!(s.handler.accepted().is_empty());
}

#[tokio::test]
async fn sequence_errors() {
    let mut c = config();
    c.max_errors = 100;
    let mut s = Transcript::start(c).await;
    s.cmd("MAIL FROM:<a@b.dk>", "503 5.5.1").await;
    s.cmd("RCPT TO:<c@d.dk>", "503 5.5.1").await;
    s.cmd("DATA", "503 5.5.1").await;
    s.cmd("EHLO client.example", "250 ").await;
    s.cmd("RCPT TO:<c@d.dk>", "503 5.5.1 Need MAIL").await;
    s.cmd("DATA", "503 5.5.1").await;
    s.cmd("MAIL FROM:<a@b.dk>", "250").await;
    s.cmd("MAIL FROM:<a@b.dk>", "503 5.5.1 Nested").await;
    s.cmd("DATA", "554 5.5.1").await;
    // EHLO resets the transaction.
    s.cmd("EHLO client.example", "250 ").await;
    s.cmd("RCPT TO:<c@d.dk>", "503 5.5.1").await;
    s.cmd("STARTTLS", "502 5.5.1").await;
    s.cmd("EXPN staff", "502 5.5.1").await;
    assert!(s.handler.accepted().is_empty());
}

#[tokio::test]
async fn syntax_errors() {
    let mut c = config();
    c.max_errors = 100;
    let mut s = Transcript::start(c).await;
    s.cmd("FROB", "500 5.5.1").await;
    s.cmd("", "500 5.5.2").await;
    s.cmd("EHLO", "501 5.5.4").await;
    s.cmd("EHLO bad_host", "501 5.5.4").await;
    s.cmd("EHLO client.example", "250 ").await;
    s.cmd("MAIL FROM:a@b.dk", "501 5.1.7").await;
    s.cmd("MAIL FROM:<a@b.dk> FOO=1", "555 5.5.4").await;
    s.cmd("MAIL FROM:<a@b.dk> BODY=BINARYMIME", "555 5.5.4")
        .await;
    s.cmd("MAIL FROM:<a@b.dk>", "250").await;
    s.cmd("RCPT TO:<>", "501 5.1.3").await;
    s.cmd("DATA now", "501 5.5.4").await;
    s.send(b"NOOP \xff\r\n").await;
    s.expect("500 5.5.2", "invalid utf-8").await;
    // Non-ASCII addresses need SMTPUTF8.
    s.cmd("RCPT TO:<ærø@øst.dk>", "553 5.6.7").await;
    s.cmd("RSET", "250").await;
    s.cmd("MAIL FROM:<jørgen@eksempel.dk>", "553 5.6.7").await;
    s.cmd("MAIL FROM:<jørgen@eksempel.dk> SMTPUTF8", "250")
        .await;
    s.cmd("RCPT TO:<ærø@øst.dk>", "250").await;
    s.cmd("DATA", "354").await;
    s.send("Subject: æ\r\n\r\nø\r\n.\r\n".as_bytes()).await;
    s.expect("250 2.0.0 Ok: queued", "data").await;
    let m = &s.handler.accepted()[0];
    assert!(m.envelope.smtputf8);
    assert_eq!(m.envelope.mail_from, "jørgen@eksempel.dk");
    assert_eq!(m.envelope.recipients[0].0, "ærø@øst.dk");
}

#[tokio::test]
async fn line_too_long() {
    let mut s = Transcript::start(config()).await;
    s.cmd(&format!("NOOP {}", "x".repeat(2000)), "500 5.5.2")
        .await;
    s.cmd("NOOP", "250").await;
}

#[tokio::test]
async fn size_limits() {
    let mut c = config();
    c.receiver.max_message_size = 1000;
    let mut s = Transcript::start(c).await;
    s.cmd("EHLO client.example", "250 ").await;
    s.cmd("MAIL FROM:<a@b.dk> SIZE=1001", "552 5.3.4").await;
    s.cmd("MAIL FROM:<a@b.dk> SIZE=1000", "250").await;
    s.cmd("RCPT TO:<c@d.dk>", "250").await;
    s.cmd("DATA", "354").await;
    let mut body = vec![b'x'; 1500];
    body.extend_from_slice(b"\r\n.\r\n");
    s.send(&body).await;
    s.expect("552 5.3.4", "too large").await;
    // The transaction is over; the session goes on.
    s.cmd("RCPT TO:<c@d.dk>", "503").await;
    s.cmd("MAIL FROM:<a@b.dk>", "250").await;
    s.cmd("RCPT TO:<c@d.dk>", "250").await;
    s.cmd("DATA", "354").await;
    let mut body = vec![b'y'; 998];
    body.extend_from_slice(b"\r\n.\r\n");
    s.send(&body).await;
    s.expect("250 2.0.0 Ok: queued as Q1", "at the limit").await;
    assert_eq!(
        split_received(&s.handler.accepted()[0].body, "Received: ").len(),
        1000
    );
}

#[tokio::test]
async fn too_many_recipients() {
    let mut c = config();
    c.max_recipients = 3;
    c.max_errors = 3;
    let mut s = Transcript::start(c).await;
    s.cmd("EHLO client.example", "250 ").await;
    s.cmd("MAIL FROM:<a@b.dk>", "250").await;
    for i in 0..3 {
        s.cmd(&format!("RCPT TO:<r{i}@d.dk>"), "250 2.1.5").await;
    }
    // Not counted as errors (3 of them would close the session here).
    for i in 3..6 {
        s.cmd(&format!("RCPT TO:<r{i}@d.dk>"), "452 4.5.3").await;
    }
    s.cmd("DATA", "354").await;
    s.send(b"x\r\n.\r\n").await;
    s.expect("250 2.0.0 Ok: queued", "data").await;
    assert_eq!(s.handler.accepted()[0].envelope.recipients.len(), 3);
}

#[tokio::test]
async fn too_many_errors_close() {
    let mut c = config();
    c.max_errors = 3;
    let mut s = Transcript::start(c).await;
    s.cmd("EHLO client.example", "250 ").await;
    s.cmd("FROB", "500 5.5.1").await;
    s.cmd("MAIL FROM:<a@b.dk>", "250").await;
    s.cmd(&format!("RCPT TO:<x@{REFUSED_DOMAIN}>"), "550 5.7.1")
        .await;
    s.cmd("VRFY", "501 5.5.4").await;
    s.expect("421 4.7.0", "limit").await;
    s.expect_closed().await;
    assert_eq!(s.finish().await.ended, EndReason::TooManyErrors);
}

#[tokio::test]
async fn accepted_message_resets_the_error_count() {
    let mut c = config();
    c.max_errors = 2;
    let mut s = Transcript::start(c).await;
    s.cmd("FROB", "500").await;
    one_message(&mut s, b"x\r\n.\r\n").await;
    s.cmd("FROB", "500").await;
    s.cmd("NOOP", "250").await;
}

#[tokio::test]
async fn accept_failures() {
    let mut s = Transcript::start(config()).await;
    s.cmd("EHLO client.example", "250 ").await;
    let cases = [
        (
            AcceptError::Temporary("queue full".into()),
            "451 4.3.0 queue full",
        ),
        (AcceptError::Permanent("no".into()), "554 5.6.0 no"),
        (
            AcceptError::Permanent("5.7.1 policy".into()),
            "554 5.7.1 policy",
        ),
    ];
    for (error, expect) in cases {
        *s.handler.fail_next.lock().unwrap() = Some(error);
        s.cmd("MAIL FROM:<a@b.dk>", "250").await;
        s.cmd("RCPT TO:<c@d.dk>", "250").await;
        s.cmd("DATA", "354").await;
        s.send(b"x\r\n.\r\n").await;
        s.expect(expect, "accept").await;
    }
    s.cmd("QUIT", "221").await;
    assert_eq!(
        s.finish().await,
        SessionOutcome {
            messages: 0,
            ended: EndReason::Quit
        }
    );
}

#[tokio::test]
async fn outbound_needs_trust_or_auth() {
    let mut s = Transcript::start(outbound()).await;
    s.cmd("EHLO client.example", "250 ").await;
    s.cmd("MAIL FROM:<a@b.dk>", "530 5.7.0 Authentication required")
        .await;
    s.cmd("RCPT TO:<c@d.dk>", "503 5.5.1").await;
    // A trusted peer may send without AUTH.
    let mut s = Transcript::start_with(outbound(), trusted()).await;
    let m = one_message(&mut s, b"x\r\n.\r\n").await;
    assert!(m.info.trusted);
    // Inbound needs neither.
    let mut s = Transcript::start(config()).await;
    one_message(&mut s, b"x\r\n.\r\n").await;
}

fn auth_config() -> SessionConfig {
    let mut c = outbound();
    c.require_tls_for_auth = false;
    c
}

#[tokio::test]
async fn auth_plain_and_login() {
    let mut s = Transcript::start(auth_config()).await;
    s.cmd("AUTH PLAIN", "503 5.5.1").await; // before EHLO
    s.cmd("EHLO client.example", "250 AUTH PLAIN LOGIN").await;
    s.cmd(&format!("AUTH PLAIN {}", plain(USER, "wrong")), "535 5.7.8")
        .await;
    s.cmd("AUTH CRAM-MD5", "504 5.5.4").await;
    s.cmd("MAIL FROM:<a@b.dk>", "530 5.7.0").await;
    s.cmd(
        &format!("AUTH PLAIN {}", plain(USER, PASSWORD)),
        "235 2.7.0",
    )
    .await;
    s.cmd(
        &format!("AUTH PLAIN {}", plain(USER, PASSWORD)),
        "503 5.5.1",
    )
    .await;
    s.cmd("MAIL FROM:<a@b.dk>", "250").await;
    s.cmd("RCPT TO:<c@d.dk>", "250").await;
    s.cmd("DATA", "354").await;
    s.send(b"x\r\n.\r\n").await;
    s.expect("250 2.0.0 Ok: queued as Q1", "data").await;
    let m = &s.handler.accepted()[0];
    assert_eq!(m.info.authenticated.as_deref(), Some(USER));
    split_received(
        &m.body,
        "Received: from client.example ([192.0.2.7])\r\n\tby mx.test with ESMTPA id ",
    );

    // PLAIN with a challenge, LOGIN with and without an initial response.
    for steps in [
        vec![
            ("AUTH PLAIN".to_owned(), "334 ".to_owned()),
            (plain(USER, PASSWORD), "235 2.7.0".into()),
        ],
        vec![
            ("AUTH LOGIN".into(), "334 VXNlcm5hbWU6".into()),
            (b64(USER.as_bytes()), "334 UGFzc3dvcmQ6".into()),
            (b64(PASSWORD.as_bytes()), "235 2.7.0".into()),
        ],
        vec![
            (
                format!("AUTH LOGIN {}", b64(USER.as_bytes())),
                "334 UGFzc3dvcmQ6".into(),
            ),
            (b64(PASSWORD.as_bytes()), "235 2.7.0".into()),
        ],
        vec![
            ("AUTH LOGIN".into(), "334 VXNlcm5hbWU6".into()),
            (b64(USER.as_bytes()), "334 UGFzc3dvcmQ6".into()),
            (b64(b"nope"), "535 5.7.8".into()),
        ],
    ] {
        let mut s = Transcript::start(auth_config()).await;
        s.cmd("EHLO client.example", "250 ").await;
        for (line, expect) in &steps {
            let reply = s.cmd(line, expect).await;
            if expect.starts_with("334 ") {
                assert_eq!(reply, format!("{expect}\r\n"));
            }
        }
    }
}

#[tokio::test]
async fn auth_cancel_bad_base64_and_tls_requirement() {
    let mut s = Transcript::start(auth_config()).await;
    s.cmd("EHLO client.example", "250 ").await;
    s.cmd("AUTH LOGIN", "334 ").await;
    s.cmd("*", "501 5.7.0").await;
    s.cmd("AUTH PLAIN", "334 ").await;
    s.cmd("not base64!", "501 5.5.2").await;
    s.cmd("AUTH PLAIN !!!!", "501 5.5.2").await;
    s.cmd(&format!("AUTH PLAIN {}", b64(b"no-nul-here")), "501 5.5.2")
        .await;
    s.cmd("AUTH PLAIN =", "501 5.5.2").await;
    // Another authorization identity is refused without asking.
    s.cmd(
        &format!(
            "AUTH PLAIN {}",
            b64(format!("bob\0{USER}\0{PASSWORD}").as_bytes())
        ),
        "535 5.7.8",
    )
    .await;
    s.cmd("AUTH LOGIN", "334 ").await;
    s.cmd(&"A".repeat(20_000), "500 5.5.6").await;
    // Back in command mode after each.
    s.cmd("NOOP", "250").await;
    // Not during a transaction.
    let mut s = Transcript::start_with(auth_config(), trusted()).await;
    s.cmd("EHLO client.example", "250 ").await;
    s.cmd("MAIL FROM:<a@b.dk>", "250").await;
    s.cmd(
        &format!("AUTH PLAIN {}", plain(USER, PASSWORD)),
        "503 5.5.1",
    )
    .await;
    assert_eq!(
        s.handler
            .auth_calls
            .load(std::sync::atomic::Ordering::SeqCst),
        0
    );

    // TLS required but not active: not offered, not accepted.
    let mut c = outbound();
    c.tls = Some(acceptor());
    let mut s = Transcript::start(c).await;
    s.cmd("EHLO client.example", "250 STARTTLS").await;
    s.cmd(
        &format!("AUTH PLAIN {}", plain(USER, PASSWORD)),
        "530 5.7.0",
    )
    .await;
    // No TLS at all: never.
    let mut s = Transcript::start(outbound()).await;
    s.cmd("EHLO client.example", "250 ").await;
    s.cmd(
        &format!("AUTH PLAIN {}", plain(USER, PASSWORD)),
        "503 5.5.1",
    )
    .await;
    // Inbound does not do AUTH.
    let mut c = config();
    c.require_tls_for_auth = false;
    let mut s = Transcript::start(c).await;
    s.cmd("EHLO client.example", "250 ").await;
    s.cmd(
        &format!("AUTH PLAIN {}", plain(USER, PASSWORD)),
        "503 5.5.1",
    )
    .await;
    assert_eq!(
        s.handler
            .auth_calls
            .load(std::sync::atomic::Ordering::SeqCst),
        0
    );
}

#[tokio::test]
async fn starttls_in_memory() {
    let mut c = outbound();
    c.tls = Some(acceptor());
    let mut s = Transcript::start(c).await;
    let first = s.cmd("EHLO client.example", "250 STARTTLS").await;
    assert!(!first.contains("AUTH"));
    // Plaintext pipelined after STARTTLS must be dropped, not executed.
    s.send(b"STARTTLS\r\nMAIL FROM:<evil@x.dk>\r\nRCPT TO:<evil@x.dk>\r\n")
        .await;
    s.expect("220 2.0.0", "starttls").await;
    s.tls_handshake().await;
    // The EHLO was forgotten (RFC 3207 §4.2).
    s.cmd("MAIL FROM:<a@b.dk>", "503 5.5.1 Send HELO/EHLO")
        .await;
    let second = s.cmd("EHLO client.example", "250 AUTH PLAIN LOGIN").await;
    assert!(!second.contains("STARTTLS"), "{second}");
    s.cmd("RCPT TO:<c@d.dk>", "503 5.5.1 Need MAIL").await;
    s.cmd("STARTTLS", "503 5.5.1").await;
    s.cmd(
        &format!("AUTH PLAIN {}", plain(USER, PASSWORD)),
        "235 2.7.0",
    )
    .await;
    s.cmd("MAIL FROM:<a@b.dk>", "250").await;
    s.cmd("RCPT TO:<c@d.dk>", "250").await;
    s.cmd("DATA", "354").await;
    s.send(b"secret stuff\r\n.\r\n").await;
    s.expect("250 2.0.0 Ok: queued as Q1", "data").await;
    s.cmd("QUIT", "221").await;
    s.expect_closed().await;
    let handler = s.handler.clone();
    assert_eq!(
        s.finish().await,
        SessionOutcome {
            messages: 1,
            ended: EndReason::Quit
        }
    );
    let accepted = handler.accepted();
    assert_eq!(accepted.len(), 1);
    let m = &accepted[0];
    assert!(m.info.tls);
    assert_eq!(m.info.authenticated.as_deref(), Some(USER));
    assert_eq!(m.envelope.mail_from, "a@b.dk");
    let rest = split_received(
        &m.body,
        "Received: from client.example ([192.0.2.7])\r\n\tby mx.test with ESMTPSA id ",
    );
    assert_eq!(rest, b"secret stuff\r\n");
}

#[tokio::test]
async fn starttls_refused_inside_a_transaction() {
    let mut c = config();
    c.tls = Some(acceptor());
    let mut s = Transcript::start(c).await;
    s.cmd("EHLO client.example", "250 STARTTLS").await;
    s.cmd("MAIL FROM:<a@b.dk>", "250").await;
    s.cmd("STARTTLS", "503 5.5.1").await;
    // Still plaintext and in the transaction.
    s.cmd("RCPT TO:<c@d.dk>", "250").await;
}

#[tokio::test]
async fn tls_handshake_failure_ends_the_session() {
    let mut c = config();
    c.tls = Some(acceptor());
    let mut s = Transcript::start(c).await;
    s.cmd("EHLO client.example", "250 STARTTLS").await;
    s.cmd("STARTTLS", "220 2.0.0").await;
    s.send(b"this is not a TLS client hello\r\n\r\n\r\n").await;
    let ended = s.finish().await.ended;
    assert!(
        matches!(ended, EndReason::IoError(ref e) if e.contains("TLS")),
        "{ended:?}"
    );
}

#[tokio::test]
async fn idle_timeout() {
    let mut c = config();
    c.idle_timeout = Duration::from_millis(200);
    let mut s = Transcript::start(c).await;
    s.cmd("EHLO client.example", "250 ").await;
    let started = std::time::Instant::now();
    s.expect("421 4.4.2", "idle").await;
    assert!(started.elapsed() >= Duration::from_millis(150));
    s.expect_closed().await;
    assert_eq!(s.finish().await.ended, EndReason::Timeout);
}

#[tokio::test]
async fn data_timeout() {
    let mut c = config();
    c.idle_timeout = Duration::from_secs(60);
    c.data_timeout = Duration::from_millis(200);
    let mut s = Transcript::start(c).await;
    s.cmd("EHLO client.example", "250 ").await;
    s.cmd("MAIL FROM:<a@b.dk>", "250").await;
    s.cmd("RCPT TO:<c@d.dk>", "250").await;
    s.cmd("DATA", "354").await;
    s.send(b"half a mess").await;
    s.expect("421 4.4.2", "data timeout").await;
    s.expect_closed().await;
    let handler = s.handler.clone();
    assert_eq!(s.finish().await.ended, EndReason::Timeout);
    assert!(handler.accepted().is_empty());
}

/// Postfix's `smtpd_min_data_rate`: one octet a second keeps every read
/// inside the data timeout, but the message as a whole is cut off at
/// start + grace + octets / rate, and nothing of it is accepted. A client
/// at a normal speed on the same settings is not affected.
#[tokio::test(start_paused = true)]
async fn message_slower_than_the_minimum_rate_is_cut_off() {
    let mut c = config();
    c.data_timeout = Duration::from_secs(60);
    c.min_data_rate = 100;
    c.data_grace = Duration::from_secs(10);
    let mut s = Transcript::start(c.clone()).await;
    s.wait = Duration::from_secs(1000);
    s.cmd("EHLO client.example", "250 ").await;
    s.cmd("MAIL FROM:<a@b.dk>", "250").await;
    s.cmd("RCPT TO:<c@d.dk>", "250").await;
    s.cmd("DATA", "354").await;
    let started = tokio::time::Instant::now();
    let mut sent = 0;
    while sent < 200 && s.try_send(b"x").await {
        tokio::time::sleep(Duration::from_secs(1)).await;
        sent += 1;
    }
    let _ = s.try_send(b"\r\n.\r\n").await;
    let reply = s.expect("421 4.4.2", "trickled DATA").await;
    assert!(reply.contains("too slow"), "{reply}");
    // Cut at 10 s + 0.1 s per octet received, not after 200 s.
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "{sent} octets sent"
    );
    s.expect_closed().await;
    let handler = s.handler.clone();
    assert_eq!(s.finish().await.ended, EndReason::TooSlow);
    assert!(handler.accepted().is_empty());

    // BDAT: the deadline spans the chunks until LAST.
    let mut s = Transcript::start(c.clone()).await;
    s.wait = Duration::from_secs(1000);
    s.cmd("EHLO client.example", "250 ").await;
    s.cmd("MAIL FROM:<a@b.dk>", "250").await;
    s.cmd("RCPT TO:<c@d.dk>", "250").await;
    let started = tokio::time::Instant::now();
    let mut chunks = 0;
    while chunks < 100 && s.try_send(b"BDAT 1\r\nx").await {
        s.expect("250 ", "BDAT chunk").await;
        tokio::time::sleep(Duration::from_secs(2)).await;
        chunks += 1;
    }
    s.expect("421 4.4.2", "trickled BDAT").await;
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "{chunks} chunks"
    );
    let handler = s.handler.clone();
    assert_eq!(s.finish().await.ended, EndReason::TooSlow);
    assert!(handler.accepted().is_empty());

    // The same settings, a client at a normal speed.
    let mut s = Transcript::start(c).await;
    s.cmd("EHLO client.example", "250 ").await;
    s.cmd("MAIL FROM:<a@b.dk>", "250").await;
    s.cmd("RCPT TO:<c@d.dk>", "250").await;
    s.cmd("DATA", "354").await;
    s.send(b"Subject: hurtig\r\n\r\nfast\r\n").await;
    tokio::time::sleep(Duration::from_secs(5)).await;
    s.cmd(".", "250 2.0.0").await;
    s.cmd("QUIT", "221").await;
    let handler = s.handler.clone();
    s.finish().await;
    assert_eq!(handler.accepted().len(), 1);
}

#[tokio::test(start_paused = true)]
async fn idle_timeout_default_is_five_minutes() {
    let c = config();
    assert_eq!(c.idle_timeout, Duration::from_secs(300));
    let mut s = Transcript::spawn(c, SessionInfo::new(peer()));
    // Longer than the session's timeout, so the session's fires first.
    s.wait = Duration::from_secs(1000);
    s.expect("220 ", "greeting").await;
    let started = tokio::time::Instant::now();
    // Paused time: the runtime jumps ahead when everything waits.
    tokio::time::sleep(Duration::from_secs(299)).await;
    s.cmd("NOOP", "250").await;
    s.expect("421 4.4.2", "idle").await;
    assert!(started.elapsed() >= Duration::from_secs(599));
    assert_eq!(s.finish().await.ended, EndReason::Timeout);
}

#[tokio::test]
async fn shutdown_while_idle() {
    let mut s = Transcript::start(config()).await;
    s.cmd("EHLO client.example", "250 ").await;
    s.cmd("MAIL FROM:<a@b.dk>", "250").await;
    s.shutdown.send(true).unwrap();
    s.expect("421 4.3.2", "shutdown").await;
    s.expect_closed().await;
    assert_eq!(s.finish().await.ended, EndReason::ShuttingDown);
    // Already shutting down at connect: no 220.
    let mut s = Transcript::spawn_opts(config(), SessionInfo::new(peer()), true);
    s.expect("421 4.3.2", "greeting").await;
    s.expect_closed().await;
    assert_eq!(s.finish().await.ended, EndReason::ShuttingDown);
}

#[tokio::test]
async fn shutdown_during_data_finishes_the_message() {
    let mut s = Transcript::start(config()).await;
    s.cmd("EHLO client.example", "250 ").await;
    s.cmd("MAIL FROM:<a@b.dk>", "250").await;
    s.cmd("RCPT TO:<c@d.dk>", "250").await;
    s.cmd("DATA", "354").await;
    s.send(b"part one\r\n").await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    s.shutdown.send(true).unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    s.send(b"part two\r\n.\r\nNOOP\r\n").await;
    s.expect("250 2.0.0 Ok: queued as Q1", "data").await;
    s.expect("421 4.3.2", "then shutdown").await;
    s.expect_closed().await;
    let handler = s.handler.clone();
    assert_eq!(
        s.finish().await,
        SessionOutcome {
            messages: 1,
            ended: EndReason::ShuttingDown
        }
    );
    assert_eq!(
        split_received(&handler.accepted()[0].body, "Received: "),
        b"part one\r\npart two\r\n"
    );
}

#[tokio::test]
async fn shutdown_between_bdat_chunks_finishes_the_message() {
    let mut s = Transcript::start(config()).await;
    s.cmd("EHLO client.example", "250 ").await;
    s.cmd("MAIL FROM:<a@b.dk>", "250").await;
    s.cmd("RCPT TO:<c@d.dk>", "250").await;
    s.send(b"BDAT 4\r\nabcd").await;
    s.expect("250 2.0.0 4 octets", "chunk").await;
    s.shutdown.send(true).unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    s.send(b"BDAT 2 LAST\r\nef").await;
    s.expect("250 2.0.0 Ok: queued as Q1", "last").await;
    s.expect("421 4.3.2", "then shutdown").await;
    s.expect_closed().await;
    assert_eq!(
        split_received(&s.handler.accepted()[0].body, "Received: "),
        b"abcdef"
    );
}

#[tokio::test]
async fn client_closes_mid_message() {
    let mut s = Transcript::start(config()).await;
    s.cmd("EHLO client.example", "250 ").await;
    s.cmd("MAIL FROM:<a@b.dk>", "250").await;
    s.cmd("RCPT TO:<c@d.dk>", "250").await;
    s.cmd("DATA", "354").await;
    s.send(b"no end\r\n").await;
    let handler = s.handler.clone();
    assert_eq!(
        s.finish().await,
        SessionOutcome {
            messages: 0,
            ended: EndReason::ClientClosed
        }
    );
    assert!(handler.accepted().is_empty());
}

/// One transaction's commands and the body, with the replies expected.
const SCRIPT: &[(&str, &str)] = &[
    ("EHLO client.example", "250 CHUNKING"),
    ("MAIL FROM:<a@b.dk> SIZE=30", "250 2.1.0"),
    ("RCPT TO:<c@d.dk>", "250 2.1.5"),
    ("RCPT TO:<x@refused.example>", "550 5.7.1"),
    ("DATA", "354"),
    ("Subject: s\r\n\r\n..dot\r\n.", "250 2.0.0 Ok: queued as Q1"),
    ("BDAT 5 LAST\r\nabc", "503 5.5.1"),
    ("RSET", "250 2.0.0"),
    ("QUIT", "221 2.0.0"),
];

async fn run_script(bytewise: bool, pipelined: bool) -> (Vec<String>, Vec<u8>) {
    let mut s = Transcript::start(config()).await;
    let mut replies = Vec::new();
    if pipelined {
        let all: String = SCRIPT.iter().map(|(l, _)| format!("{l}\r\n")).collect();
        if bytewise {
            s.send_bytewise(all.as_bytes()).await;
        } else {
            s.send(all.as_bytes()).await;
        }
        for (line, expect) in SCRIPT {
            replies.push(s.expect(expect, line).await);
        }
    } else {
        for (line, expect) in SCRIPT {
            let bytes = format!("{line}\r\n");
            if bytewise {
                s.send_bytewise(bytes.as_bytes()).await;
            } else {
                s.send(bytes.as_bytes()).await;
            }
            replies.push(s.expect(expect, line).await);
        }
    }
    s.expect_closed().await;
    let body = s.handler.accepted()[0].body.clone();
    (replies, split_received(&body, "Received: ").to_vec())
}

#[tokio::test]
async fn byte_by_byte_gives_the_same_replies() {
    let whole = run_script(false, false).await;
    assert_eq!(whole.1, b"Subject: s\r\n\r\n.dot\r\n");
    assert_eq!(run_script(true, false).await, whole);
    assert_eq!(run_script(false, true).await, whole);
    assert_eq!(run_script(true, true).await, whole);
}

#[test]
fn random_input_never_panics() {
    use proptest::prelude::*;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let words = prop::sample::select(vec![
        "EHLO a.dk\r\n",
        "HELO a.dk\r\n",
        "MAIL FROM:<a@b.dk>\r\n",
        "MAIL FROM:<a@b.dk> SIZE=5000\r\n",
        "RCPT TO:<c@d.dk>\r\n",
        "RCPT TO:<x@refused.example>\r\n",
        "DATA\r\n",
        ".\r\n",
        "BDAT 5\r\n",
        "BDAT 3 LAST\r\n",
        "BDAT x\r\n",
        "AUTH PLAIN\r\n",
        "AUTH LOGIN\r\n",
        "*\r\n",
        "STARTTLS\r\n",
        "RSET\r\n",
        "NOOP\r\n",
        "\r\n",
        "..\r\n",
        "\n",
    ]);
    let input = prop::collection::vec(
        prop_oneof![
            words.prop_map(|w| w.as_bytes().to_vec()),
            prop::collection::vec(any::<u8>(), 0..20),
        ],
        0..30,
    );
    let mut runner = proptest::test_runner::TestRunner::new(ProptestConfig {
        cases: 64,
        ..ProptestConfig::default()
    });
    runner
        .run(&input, |parts| {
            rt.block_on(async {
                let mut c = config();
                c.receiver.max_message_size = 50;
                c.receiver.max_line_len = 40;
                c.max_errors = 1000;
                c.require_tls_for_auth = false;
                c.direction = Direction::Outbound;
                let mut info = SessionInfo::new(peer());
                info.trusted = true;
                let mut s = Transcript::spawn(c, info);
                for p in &parts {
                    s.send(p).await;
                }
                // The session ends by itself once the client is gone.
                let outcome = s.finish().await;
                assert!(
                    matches!(
                        outcome.ended,
                        EndReason::ClientClosed
                            | EndReason::Quit
                            | EndReason::ProtocolError(_)
                            | EndReason::IoError(_)
                    ),
                    "{outcome:?}"
                );
            });
            Ok(())
        })
        .unwrap();
}
