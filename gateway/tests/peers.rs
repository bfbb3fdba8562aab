//! The session against real SMTP clients over loopback TCP: swaks (plain,
//! pipelined, STARTTLS + AUTH) and Postfix's smtp-source (HELO, parallel
//! sessions). A missing tool skips its test loudly, unless
//! `SIKKERMAIL_REQUIRE_PEERS=1`, which makes it fail.
#![allow(clippy::unwrap_used)]

mod common;

use std::io::Read;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{PASSWORD, REFUSED_DOMAIN, TestHandler, USER, acceptor, config, split_received};
use gateway::smtp::{Direction, EndReason, SessionConfig, SessionInfo, SessionOutcome, run};
use tokio::net::TcpListener;

/// Finds `name` on PATH or in the sbin folders (smtp-source lives in
/// /usr/sbin); `None` after a loud notice, or a panic when peers are
/// required.
fn tool(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    let found = std::env::split_paths(&path)
        .chain(["/usr/sbin", "/usr/bin", "/usr/local/sbin", "/usr/local/bin"].map(PathBuf::from))
        .map(|dir| dir.join(name))
        .find(|p| p.is_file());
    if found.is_none() {
        assert!(
            std::env::var("SIKKERMAIL_REQUIRE_PEERS").as_deref() != Ok("1"),
            "{name} not found and SIKKERMAIL_REQUIRE_PEERS=1"
        );
        eprintln!("!!! SKIPPED: {name} not found");
    }
    found
}

/// What a tool run gave.
struct Run {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

impl std::fmt::Debug for Run {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "exit {:?}\n--- stdout\n{}\n--- stderr\n{}",
            self.code, self.stdout, self.stderr
        )
    }
}

/// Runs a tool off the runtime's threads, killing it after 60 s.
async fn run_tool(program: PathBuf, args: Vec<String>) -> Run {
    tokio::task::spawn_blocking(move || {
        let mut child = Command::new(&program)
            .args(&args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut out = child.stdout.take().unwrap();
        let mut err = child.stderr.take().unwrap();
        let out_reader = std::thread::spawn(move || {
            let mut s = String::new();
            let _ = out.read_to_string(&mut s);
            s
        });
        let err_reader = std::thread::spawn(move || {
            let mut s = String::new();
            let _ = err.read_to_string(&mut s);
            s
        });
        let deadline = Instant::now() + Duration::from_secs(60);
        let status = loop {
            if let Some(status) = child.try_wait().unwrap() {
                break status;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                break child.wait().unwrap();
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        Run {
            code: status.code(),
            stdout: out_reader.join().unwrap(),
            stderr: err_reader.join().unwrap(),
        }
    })
    .await
    .unwrap()
}

/// A listener on 127.0.0.1 running one session per connection.
struct Server {
    addr: SocketAddr,
    handler: Arc<TestHandler>,
    outcomes: Arc<Mutex<Vec<SessionOutcome>>>,
    accept_task: tokio::task::JoinHandle<()>,
}

impl Server {
    async fn start(config: SessionConfig, trusted: bool) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let handler = Arc::new(TestHandler::default());
        let outcomes = Arc::new(Mutex::new(Vec::new()));
        let config = Arc::new(config);
        let (h, o) = (Arc::clone(&handler), Arc::clone(&outcomes));
        let accept_task = tokio::spawn(async move {
            loop {
                let Ok((stream, peer)) = listener.accept().await else {
                    return;
                };
                let (h, o, c) = (Arc::clone(&h), Arc::clone(&o), Arc::clone(&config));
                tokio::spawn(async move {
                    let mut info = SessionInfo::new(peer);
                    info.trusted = trusted;
                    let outcome = run(stream, info, &c, h.as_ref()).await;
                    o.lock().unwrap().push(outcome);
                });
            }
        });
        Self {
            addr,
            handler,
            outcomes,
            accept_task,
        }
    }

    fn target(&self) -> String {
        self.addr.to_string()
    }

    /// Waits until `n` sessions have ended and returns their outcomes.
    async fn outcomes(&self, n: usize) -> Vec<SessionOutcome> {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let outcomes = self.outcomes.lock().unwrap().clone();
            if outcomes.len() >= n || Instant::now() > deadline {
                return outcomes;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.accept_task.abort();
    }
}

fn args(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| (*s).to_owned()).collect()
}

/// A message file for `swaks --data @FILE`, LF line ends as a person
/// would write it (swaks sends CRLF).
fn data_file(content: &str) -> tempfile::NamedTempFile {
    let mut f = tempfile::NamedTempFile::new().unwrap();
    std::io::Write::write_all(&mut f, content.as_bytes()).unwrap();
    f
}

const MESSAGE: &str = "Subject: swaks test\nFrom: a@b.dk\n\nline one\n.leading dot\n..two dots\n";

/// What arrives for [`MESSAGE`]: CRLF, dots as written (swaks stuffs them,
/// the session unstuffs), and one empty line that swaks always appends to
/// `--data`.
const MESSAGE_CRLF: &[u8] =
    b"Subject: swaks test\r\nFrom: a@b.dk\r\n\r\nline one\r\n.leading dot\r\n..two dots\r\n\r\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn swaks_plain() {
    let Some(swaks) = tool("swaks") else { return };
    let server = Server::start(config(), false).await;
    let data = data_file(MESSAGE);
    let path = format!("@{}", data.path().display());
    let run = run_tool(
        swaks,
        args(&[
            "-s",
            &server.target(),
            "--ehlo",
            "client.example",
            "-f",
            "a@b.dk",
            "-t",
            "c@d.dk",
            "--data",
            &path,
            "--timeout",
            "20",
        ]),
    )
    .await;
    assert_eq!(run.code, Some(0), "{run:?}");
    assert!(
        run.stdout.contains("<-  250 2.0.0 Ok: queued as Q1"),
        "{run:?}"
    );
    assert!(run.stdout.contains("<-  250-PIPELINING"), "{run:?}");
    let accepted = server.handler.accepted();
    assert_eq!(accepted.len(), 1);
    let m = &accepted[0];
    assert_eq!(m.envelope.mail_from, "a@b.dk");
    assert_eq!(m.envelope.recipients.len(), 1);
    assert_eq!(m.envelope.recipients[0].0, "c@d.dk");
    assert_eq!(m.info.helo.as_deref(), Some("client.example"));
    let rest = split_received(
        &m.body,
        "Received: from client.example ([127.0.0.1])\r\n\tby mx.test with ESMTP id ",
    );
    assert_eq!(
        String::from_utf8_lossy(rest),
        String::from_utf8_lossy(MESSAGE_CRLF)
    );
    let outcomes = server.outcomes(1).await;
    assert_eq!(
        outcomes,
        [SessionOutcome {
            messages: 1,
            ended: EndReason::Quit
        }]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn swaks_pipelined_with_a_refused_recipient() {
    let Some(swaks) = tool("swaks") else { return };
    let server = Server::start(config(), false).await;
    let data = data_file(MESSAGE);
    let path = format!("@{}", data.path().display());
    let to = format!("c@d.dk,x@{REFUSED_DOMAIN},e@f.dk");
    let run = run_tool(
        swaks,
        args(&[
            "-s",
            &server.target(),
            "--ehlo",
            "client.example",
            "-f",
            "a@b.dk",
            "-t",
            &to,
            "--pipeline",
            "--data",
            &path,
            "--timeout",
            "20",
        ]),
    )
    .await;
    assert_eq!(run.code, Some(0), "{run:?}");
    // MAIL, 3 x RCPT and DATA went out before the first of their replies.
    let lines: Vec<&str> = run.stdout.lines().collect();
    let mail = lines
        .iter()
        .position(|l| l.starts_with(" -> MAIL FROM"))
        .unwrap();
    assert!(
        lines[mail..mail + 5].iter().all(|l| l.starts_with(" -> ")),
        "{run:?}"
    );
    assert!(lines[mail + 4].starts_with(" -> DATA"), "{run:?}");
    assert!(run.stdout.contains("550 5.7.1 Relaying denied"), "{run:?}");
    let accepted = server.handler.accepted();
    assert_eq!(accepted.len(), 1);
    let rcpts: Vec<&str> = accepted[0]
        .envelope
        .recipients
        .iter()
        .map(|(a, _)| a.as_str())
        .collect();
    assert_eq!(rcpts, ["c@d.dk", "e@f.dk"]);
    assert_eq!(
        split_received(&accepted[0].body, "Received: "),
        MESSAGE_CRLF
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn swaks_starttls_and_auth_plain() {
    let Some(swaks) = tool("swaks") else { return };
    let mut c = config();
    c.direction = Direction::Outbound;
    c.tls = Some(acceptor());
    let server = Server::start(c, false).await;
    let data = data_file(MESSAGE);
    let path = format!("@{}", data.path().display());
    let base = [
        "-s",
        &server.target(),
        "--ehlo",
        "client.example",
        "-f",
        "a@b.dk",
        "-t",
        "c@d.dk",
        "--data",
        &path,
        "--timeout",
        "20",
        "--tls",
        "-a",
        "PLAIN",
        "-au",
        USER,
    ];
    let mut good = args(&base);
    good.extend(args(&["-ap", PASSWORD]));
    let run = run_tool(swaks.clone(), good).await;
    assert_eq!(run.code, Some(0), "{run:?}");
    assert!(run.stdout.contains("=== TLS started"), "{run:?}");
    assert!(run.stdout.contains("<~  235 2.7.0"), "{run:?}");
    assert!(
        run.stdout.contains("<~  250 2.0.0 Ok: queued as Q1"),
        "{run:?}"
    );
    let accepted = server.handler.accepted();
    assert_eq!(accepted.len(), 1);
    let m = &accepted[0];
    assert!(m.info.tls);
    assert_eq!(m.info.authenticated.as_deref(), Some(USER));
    let rest = split_received(
        &m.body,
        "Received: from client.example ([127.0.0.1])\r\n\tby mx.test with ESMTPSA id ",
    );
    assert_eq!(rest, MESSAGE_CRLF);

    // A wrong password: 535, swaks exits 28, nothing accepted.
    let mut bad = args(&base);
    bad.extend(args(&["-ap", "wrong"]));
    let run = run_tool(swaks.clone(), bad).await;
    assert_eq!(run.code, Some(28), "{run:?}");
    assert!(run.stdout.contains("535 5.7.8"), "{run:?}");
    assert_eq!(server.handler.accepted().len(), 1);

    // AUTH is not offered without TLS: swaks gives up (exit 28).
    let run = run_tool(
        swaks,
        args(&[
            "-s",
            &server.target(),
            "-f",
            "a@b.dk",
            "-t",
            "c@d.dk",
            "--timeout",
            "20",
            "-a",
            "PLAIN",
            "-au",
            USER,
            "-ap",
            PASSWORD,
        ]),
    )
    .await;
    assert_eq!(run.code, Some(28), "{run:?}");
    assert!(
        run.stderr.contains("did not advertise authentication"),
        "{run:?}"
    );
    assert_eq!(server.handler.accepted().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn smtp_source_parallel_helo_sessions() {
    let Some(source) = tool("smtp-source") else {
        return;
    };
    let server = Server::start(config(), false).await;
    // 50 messages over 4 parallel sessions, a connection per message; 2
    // recipients each. smtp-source speaks HELO only.
    let run = run_tool(
        source.clone(),
        args(&[
            "-s",
            "4",
            "-m",
            "50",
            "-r",
            "2",
            "-l",
            "2000",
            "-M",
            "client.example",
            "-f",
            "a@b.dk",
            "-t",
            "c@d.dk",
            &server.target(),
        ]),
    )
    .await;
    assert_eq!(run.code, Some(0), "{run:?}");
    assert!(run.stderr.is_empty(), "{run:?}");
    let accepted = server.handler.accepted();
    assert_eq!(accepted.len(), 50);
    for m in &accepted {
        assert_eq!(m.envelope.mail_from, "a@b.dk");
        let rcpts: Vec<&str> = m
            .envelope
            .recipients
            .iter()
            .map(|(a, _)| a.as_str())
            .collect();
        assert_eq!(rcpts, ["2c@d.dk", "c@d.dk"]);
        let rest = split_received(
            &m.body,
            "Received: from client.example ([127.0.0.1])\r\n\tby mx.test with SMTP id ",
        );
        // Headers, then 2000 filler octets in numbered lines of 80 'X'.
        let text = String::from_utf8_lossy(rest);
        assert!(
            text.starts_with("From: <a@b.dk>\r\nTo: <c@d.dk>\r\n"),
            "{text}"
        );
        assert!(text.contains("\r\n\r\n1XXXX"), "{text}");
        assert_eq!(text.matches('\n').count(), text.matches("\r\n").count());
        assert!(rest.len() > 2000, "{}", rest.len());
    }
    let outcomes = server.outcomes(50).await;
    assert_eq!(outcomes.len(), 50);
    assert!(
        outcomes
            .iter()
            .all(|o| o.messages == 1 && o.ended == EndReason::Quit),
        "{outcomes:?}"
    );

    // -d: 20 messages over 2 reused connections.
    let server = Server::start(config(), false).await;
    let run = run_tool(
        source,
        args(&[
            "-d",
            "-s",
            "2",
            "-m",
            "20",
            "-f",
            "a@b.dk",
            "-t",
            "c@d.dk",
            &server.target(),
        ]),
    )
    .await;
    assert_eq!(run.code, Some(0), "{run:?}");
    assert_eq!(server.handler.accepted().len(), 20);
    let outcomes = server.outcomes(2).await;
    assert_eq!(
        outcomes.iter().map(|o| o.messages).sum::<usize>(),
        20,
        "{outcomes:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn smtp_source_stops_at_a_refused_recipient() {
    let Some(source) = tool("smtp-source") else {
        return;
    };
    let server = Server::start(config(), false).await;
    let to = format!("x@{REFUSED_DOMAIN}");
    let run = run_tool(
        source,
        args(&["-m", "3", "-f", "a@b.dk", "-t", &to, &server.target()]),
    )
    .await;
    assert_eq!(run.code, Some(1), "{run:?}");
    assert!(run.stderr.contains("fatal"), "{run:?}");
    assert!(server.handler.accepted().is_empty());
}
