//! Integration tests for the sans-IO SMTP receiver: transcripts through a
//! toy session, and every input fed split at every byte boundary.

use gateway::smtp::{
    Event, ForwardPath, MailParams, ParseError, Receiver, ReceiverConfig, Reply, Request,
    ReversePath,
};
use proptest::prelude::*;

/// Feeds `chunks` and reacts to pauses the way a session would (accepting
/// DATA and AUTH, refusing STARTTLS so pipelined bytes stay meaningful).
/// Consecutive data chunks are merged, since their split is not semantic.
fn run(rx: &mut Receiver, chunks: &[&[u8]]) -> Vec<Event> {
    let mut all = Vec::new();
    for chunk in chunks {
        let mut input: &[u8] = chunk;
        loop {
            let events = rx.ingest(input);
            input = &[];
            let mut resumed = false;
            for e in events {
                match &e {
                    Event::Request(Ok(Request::Data)) => {
                        rx.start_data();
                        resumed = true;
                    }
                    Event::Request(Ok(Request::StartTls)) => {
                        rx.resume_commands();
                        resumed = true;
                    }
                    Event::Request(Ok(Request::Auth { .. })) => {
                        rx.expect_auth_line();
                        resumed = true;
                    }
                    Event::AuthLine(_) => {
                        rx.resume_commands();
                        resumed = true;
                    }
                    _ => {}
                }
                match (all.last_mut(), e) {
                    (Some(Event::DataChunk(prev)), Event::DataChunk(more)) => {
                        prev.extend_from_slice(&more);
                    }
                    (_, e) => all.push(e),
                }
            }
            if !resumed {
                break;
            }
        }
    }
    all
}

fn whole(config: &ReceiverConfig, input: &[u8]) -> Vec<Event> {
    run(&mut Receiver::new(config.clone()), &[input])
}

/// Asserts that every way of splitting `input` gives the same events.
fn assert_split_invariant(config: &ReceiverConfig, input: &[u8]) -> Vec<Event> {
    let expected = whole(config, input);
    for i in 0..=input.len() {
        let (a, b) = input.split_at(i);
        let got = run(&mut Receiver::new(config.clone()), &[a, b]);
        assert_eq!(
            got,
            expected,
            "split at {i} of {:?}",
            String::from_utf8_lossy(input)
        );
    }
    let bytes: Vec<&[u8]> = input.chunks(1).collect();
    let got = run(&mut Receiver::new(config.clone()), &bytes);
    assert_eq!(
        got,
        expected,
        "byte by byte: {:?}",
        String::from_utf8_lossy(input)
    );
    expected
}

fn req(e: &Event) -> &Result<Request, ParseError> {
    match e {
        Event::Request(r) => r,
        other => panic!("expected a request, got {other:?}"),
    }
}

const PIPELINED: &[u8] = b"EHLO client.example.dk\r\n\
MAIL FROM:<a@b.dk> SIZE=100\r\n\
RCPT TO:<c@d.dk>\r\n\
RCPT TO:<Postmaster>\r\n\
DATA\r\n\
Subject: hi\r\n\
\r\n\
..leading dot\r\n\
.\r\n\
QUIT\r\n";

#[test]
fn pipelined_session_in_one_buffer() {
    let events = assert_split_invariant(&ReceiverConfig::default(), PIPELINED);
    assert_eq!(events.len(), 8, "{events:?}");
    assert_eq!(
        req(&events[0]),
        &Ok(Request::Ehlo {
            host: "client.example.dk".into()
        })
    );
    let Ok(Request::Mail {
        from: ReversePath::Address(a),
        params,
    }) = req(&events[1])
    else {
        panic!("{:?}", events[1]);
    };
    assert_eq!(a.to_string(), "a@b.dk");
    assert_eq!(
        params,
        &MailParams {
            size: Some(100),
            ..MailParams::default()
        }
    );
    assert!(matches!(
        req(&events[2]),
        Ok(Request::Rcpt {
            to: ForwardPath::Address(_),
            ..
        })
    ));
    assert!(matches!(
        req(&events[3]),
        Ok(Request::Rcpt {
            to: ForwardPath::Postmaster,
            ..
        })
    ));
    assert_eq!(req(&events[4]), &Ok(Request::Data));
    assert_eq!(
        events[5],
        Event::DataChunk(b"Subject: hi\r\n\r\n.leading dot\r\n".to_vec())
    );
    assert_eq!(events[6], Event::DataEnd);
    assert_eq!(req(&events[7]), &Ok(Request::Quit));
}

#[test]
fn data_end_marker_split_across_chunks() {
    let mut rx = Receiver::default();
    assert_eq!(
        rx.ingest(b"DATA\r\n"),
        vec![Event::Request(Ok(Request::Data))]
    );
    assert!(rx.is_paused());
    rx.start_data();
    assert_eq!(
        rx.ingest(b"body\r\n."),
        vec![Event::DataChunk(b"body\r\n".to_vec())]
    );
    assert_eq!(rx.ingest(b"\r"), vec![]);
    assert_eq!(
        rx.ingest(b"\nNOOP\r\n"),
        vec![Event::DataEnd, Event::Request(Ok(Request::Noop))]
    );
}

#[test]
fn data_dot_unstuffing_and_bare_line_ends() {
    let cases: &[(&[u8], &[u8])] = &[
        // Empty message.
        (b".\r\n", b""),
        // Stuffed dots at line start, including the first line.
        (b"..a\r\n..\r\n.\r\n", b".a\r\n.\r\n"),
        // Dots inside a line are data.
        (b"a.b\r\n.\r\n", b"a.b\r\n"),
        // Bare LF and bare CR never start a line: no unstuffing, no end.
        (b"a\n.\nb\n.\r\nc\r.\r\n.\r\n", b"a\n.\nb\n.\r\nc\r.\r\n"),
        // ".\r" followed by something other than LF: the dot was stuffing.
        (b".\rx\r\n.\r\r\n.\r\n", b"\rx\r\n\r\r\n"),
        // A dot-line ending in bare LF is not the end marker; the line
        // goes on to the next CRLF.
        (b"x\r\n.\n.\r\n.\r\n", b"x\r\n\n.\r\n"),
    ];
    for (wire, content) in cases {
        let mut input = b"DATA\r\n".to_vec();
        input.extend_from_slice(wire);
        input.extend_from_slice(b"RSET\r\n");
        let events = assert_split_invariant(&ReceiverConfig::default(), &input);
        let mut expected = vec![Event::Request(Ok(Request::Data))];
        if !content.is_empty() {
            expected.push(Event::DataChunk(content.to_vec()));
        }
        expected.push(Event::DataEnd);
        expected.push(Event::Request(Ok(Request::Rset)));
        assert_eq!(events, expected, "{:?}", String::from_utf8_lossy(wire));
    }
}

#[test]
fn data_too_large_consumes_to_the_end() {
    let config = ReceiverConfig {
        max_message_size: 10,
        ..ReceiverConfig::default()
    };
    let input = b"DATA\r\n0123456789abcdef\r\n..x\r\n.\r\nNOOP\r\n";
    let events = assert_split_invariant(&config, input);
    assert_eq!(
        events,
        vec![
            Event::Request(Ok(Request::Data)),
            Event::DataChunk(b"0123456789".to_vec()),
            Event::DataTooLarge,
            Event::Request(Ok(Request::Noop)),
        ]
    );
    // Exactly at the limit is fine.
    let events = whole(&config, b"DATA\r\n01234567\r\n.\r\n");
    assert_eq!(events[2], Event::DataEnd);
}

#[test]
fn long_lines_are_discarded_and_reported_once() {
    let config = ReceiverConfig {
        max_line_len: 12,
        ..ReceiverConfig::default()
    };
    // "NOOP 567890" + CRLF = 13 octets: too long. "NOOP 56789" + CRLF = 12: fits.
    let input = b"NOOP 567890\r\nNOOP 56789\r\nNOOP 5678901234567890123456789\r\nQUIT\r\n";
    let events = assert_split_invariant(&config, input);
    assert_eq!(
        events,
        vec![
            Event::LineTooLong,
            Event::Request(Ok(Request::Noop)),
            Event::LineTooLong,
            Event::Request(Ok(Request::Quit)),
        ]
    );
    // With a bare LF the line is counted as if it ended in CRLF.
    let events = whole(&config, b"NOOP 567890\nNOOP 56789\n");
    assert_eq!(
        events,
        vec![Event::LineTooLong, Event::Request(Ok(Request::Noop))]
    );
    // The default allows 1000 octets with CRLF.
    let ok = format!("NOOP {}\r\n", "x".repeat(993));
    assert_eq!(ok.len(), 1000);
    assert_eq!(
        whole(&ReceiverConfig::default(), ok.as_bytes()),
        vec![Event::Request(Ok(Request::Noop))]
    );
    let long = format!("NOOP {}\r\n", "x".repeat(994));
    assert_eq!(
        whole(&ReceiverConfig::default(), long.as_bytes()),
        vec![Event::LineTooLong]
    );
}

#[test]
fn long_line_without_end_does_not_grow_the_buffer() {
    let mut rx = Receiver::new(ReceiverConfig {
        max_line_len: 100,
        ..ReceiverConfig::default()
    });
    for _ in 0..100 {
        assert_eq!(rx.ingest(&[b'x'; 1000]), vec![]);
        assert!(rx.pending() < 100);
    }
    assert_eq!(
        rx.ingest(b"\r\nRSET\r\n"),
        vec![Event::LineTooLong, Event::Request(Ok(Request::Rset))]
    );
}

#[test]
fn bare_lf_ends_command_lines() {
    let events = assert_split_invariant(&ReceiverConfig::default(), b"RSET\nNOOP\r\n");
    assert_eq!(
        events,
        vec![
            Event::Request(Ok(Request::Rset)),
            Event::Request(Ok(Request::Noop))
        ]
    );
}

#[test]
fn bdat_chunks_read_exact_octets() {
    // The chunk may contain anything, including CRLF.CRLF and command text.
    let input = b"BDAT 12\r\nQUIT\r\n.\r\nabcBDAT 0 LAST\r\nBDAT 3 LAST\r\nxyzNOOP\r\n";
    let events = assert_split_invariant(&ReceiverConfig::default(), input);
    assert_eq!(
        events,
        vec![
            Event::Request(Ok(Request::Bdat {
                size: 12,
                last: false
            })),
            Event::DataChunk(b"QUIT\r\n.\r\nabc".to_vec()),
            Event::BdatChunkEnd { last: false },
            Event::Request(Ok(Request::Bdat {
                size: 0,
                last: true
            })),
            Event::BdatChunkEnd { last: true },
            Event::Request(Ok(Request::Bdat {
                size: 3,
                last: true
            })),
            Event::DataChunk(b"xyz".to_vec()),
            Event::BdatChunkEnd { last: true },
            Event::Request(Ok(Request::Noop)),
        ]
    );
}

#[test]
fn starttls_drops_pipelined_plaintext() {
    let mut rx = Receiver::default();
    let events = rx.ingest(b"STARTTLS\r\nRCPT TO:<evil@x.dk>\r\n");
    assert_eq!(events, vec![Event::Request(Ok(Request::StartTls))]);
    assert!(rx.is_paused());
    assert_eq!(rx.ingest(b"MAIL FROM:<more@x.dk>\r\n"), vec![]);
    rx.tls_established();
    assert_eq!(rx.pending(), 0);
    assert_eq!(
        rx.ingest(b"EHLO a.dk\r\n"),
        vec![Event::Request(Ok(Request::Ehlo {
            host: "a.dk".into()
        }))]
    );
}

#[test]
fn auth_continuation_line() {
    let input = b"AUTH LOGIN\r\ndXNlcg==\r\nNOOP\r\n";
    let events = assert_split_invariant(&ReceiverConfig::default(), input);
    assert_eq!(
        events,
        vec![
            Event::Request(Ok(Request::Auth {
                mechanism: "LOGIN".into(),
                initial_response: None
            })),
            Event::AuthLine(b"dXNlcg==".to_vec()),
            Event::Request(Ok(Request::Noop)),
        ]
    );
}

#[test]
fn bad_syntax_of_each_kind_maps_to_its_reply() {
    let cases: &[(&str, u16, &str)] = &[
        ("", 500, "5.5.2"),
        ("FROB", 500, "5.5.1"),
        ("EHLO", 501, "5.5.4"),
        ("HELO a b", 501, "5.5.4"),
        ("MAIL TO:<a@b.dk>", 501, "5.5.4"),
        ("MAIL FROM:<a@@b.dk>", 501, "5.1.7"),
        ("RCPT TO:<a@b..dk>", 501, "5.1.3"),
        ("MAIL FROM:<a@b.dk> SIZE=big", 501, "5.5.4"),
        ("MAIL FROM:<a@b.dk> SIZE=1 SIZE=2", 501, "5.5.4"),
        ("MAIL FROM:<a@b.dk> X==", 501, "5.5.4"),
        ("MAIL FROM:<a@b.dk> XFORWARD=1", 555, "5.5.4"),
        ("RCPT TO:<a@b.dk> SIZE=1", 555, "5.5.4"),
        ("DATA now", 501, "5.5.4"),
        ("STARTTLS x", 501, "5.5.4"),
        ("BDAT -1", 501, "5.5.4"),
        ("AUTH ÆØÅ", 504, "5.5.4"),
        ("AUTH PLAIN !!!!", 501, "5.5.2"),
    ];
    for (line, code, enhanced) in cases {
        let input = format!("{line}\r\n");
        let events = assert_split_invariant(&ReceiverConfig::default(), input.as_bytes());
        let [Event::Request(Err(e))] = events.as_slice() else {
            panic!("{line:?}: {events:?}");
        };
        let reply = Reply::from(e);
        assert_eq!(reply.code(), *code, "{line:?}: {e}");
        assert_eq!(
            reply.enhanced().map(|c| c.to_string()).as_deref(),
            Some(*enhanced),
            "{line:?}"
        );
    }
}

#[test]
fn utf8_addresses_are_parsed_and_flagged() {
    let input = "MAIL FROM:<jørgen@eksempel.dk> SMTPUTF8\r\nRCPT TO:<ærø@øst.dk>\r\n";
    let events = assert_split_invariant(&ReceiverConfig::default(), input.as_bytes());
    let Ok(Request::Mail {
        from: ReversePath::Address(a),
        params,
    }) = req(&events[0])
    else {
        panic!("{events:?}");
    };
    assert!(!a.is_ascii());
    assert!(params.smtputf8);
    // Invalid UTF-8 is refused at the line level.
    assert_eq!(
        whole(&ReceiverConfig::default(), b"MAIL FROM:<\xff@b.dk>\r\n"),
        vec![Event::Request(Err(ParseError::InvalidUtf8))]
    );
}

/// A toy session for transcripts: enough policy to answer every event.
struct Session {
    rx: Receiver,
    out: Vec<Reply>,
}

impl Session {
    fn new() -> Self {
        Self {
            rx: Receiver::default(),
            out: Vec::new(),
        }
    }

    fn send(&mut self, bytes: &[u8]) {
        let mut input = bytes;
        loop {
            let events = self.rx.ingest(input);
            input = &[];
            let mut resumed = false;
            for e in events {
                let reply = match e {
                    Event::Request(Ok(Request::Data)) => {
                        self.rx.start_data();
                        resumed = true;
                        Reply::new(354, None, "End data with <CR><LF>.<CR><LF>")
                    }
                    Event::Request(Ok(Request::Quit)) => Reply::new(221, None, "bye"),
                    Event::Request(Ok(Request::Ehlo { .. })) => {
                        Reply::new(250, None, "mx.sikkermail.dk").with_line("PIPELINING")
                    }
                    Event::Request(Ok(_)) | Event::DataEnd => Reply::new(250, None, "OK"),
                    Event::Request(Err(e)) => Reply::from(e),
                    Event::LineTooLong => Reply::new(500, None, "line too long"),
                    Event::DataTooLarge => Reply::new(552, None, "too big"),
                    _ => continue,
                };
                self.out.push(reply);
            }
            if !resumed {
                break;
            }
        }
    }

    /// Sends one command line and checks the reply code.
    fn cmd(&mut self, line: &str, code: &str) {
        self.out.clear();
        self.send(format!("{line}\r\n").as_bytes());
        let got: Vec<String> = self.out.iter().map(ToString::to_string).collect();
        assert!(
            got.len() == 1 && got[0].starts_with(code),
            "{line:?}: expected {code}, got {got:?}"
        );
    }
}

#[test]
fn transcript() {
    let mut s = Session::new();
    s.cmd("EHLO client.dk", "250-mx.sikkermail.dk\r\n250 PIPELINING");
    s.cmd("MAIL FROM:<a@b.dk> BODY=8BITMIME", "250");
    s.cmd("RCPT TO:<c@d.dk> NOTIFY=SUCCESS,FAILURE", "250");
    s.cmd("RCPT TO:c@d.dk", "501 5.1.3");
    s.cmd("RCPT TO:<c@d.dk> FOO=BAR", "555 5.5.4");
    s.cmd("DATA", "354");
    s.cmd("Hello\r\n.", "250");
    s.cmd("vrfy", "501");
    s.cmd("QUIT", "221");
}

proptest! {
    #[test]
    fn arbitrary_bytes_never_panic_and_split_does_not_matter(
        bytes in proptest::collection::vec(any::<u8>(), 0..300),
        cut in any::<prop::sample::Index>(),
    ) {
        let config = ReceiverConfig { max_line_len: 40, max_message_size: 50, ..ReceiverConfig::default() };
        let expected = whole(&config, &bytes);
        let (a, b) = bytes.split_at(cut.index(bytes.len() + 1));
        prop_assert_eq!(run(&mut Receiver::new(config.clone()), &[a, b]), expected.clone());
        let chunks: Vec<&[u8]> = bytes.chunks(1).collect();
        prop_assert_eq!(run(&mut Receiver::new(config), &chunks), expected);
    }

    #[test]
    fn command_like_lines_never_panic(line in "(?i)(MAIL FROM:|RCPT TO:|BDAT |AUTH |EHLO )[ -~\u{e6}\u{f8}]{0,60}") {
        let _ = Request::parse(line.as_bytes());
    }
}
