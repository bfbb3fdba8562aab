//! Shared by the session tests: a recording [`Handler`], a self-signed TLS
//! acceptor, and a client-side transcript driver over `tokio::io::duplex`.
#![allow(clippy::unwrap_used, dead_code)]

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use gateway::smtp::{
    AcceptError, Direction, EnhancedCode, Envelope, Handler, Reply, SessionConfig, SessionInfo,
    SessionOutcome, run_with_shutdown,
};
use openssl::asn1::Asn1Time;
use openssl::bn::BigNum;
use openssl::ec::{EcGroup, EcKey};
use openssl::hash::MessageDigest;
use openssl::nid::Nid;
use openssl::pkey::PKey;
use openssl::ssl::{SslAcceptor, SslConnector, SslMethod, SslVerifyMode};
use openssl::x509::{X509, X509NameBuilder};
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_openssl::SslStream;

pub const USER: &str = "alice";
pub const PASSWORD: &str = "secret";
/// Recipients in this domain are refused with 550 5.7.1.
pub const REFUSED_DOMAIN: &str = "refused.example";

/// What [`TestHandler::accept`] was given.
#[derive(Debug, Clone)]
pub struct Accepted {
    pub info: SessionInfo,
    pub envelope: Envelope,
    pub body: Vec<u8>,
}

/// Records accepted messages, refuses [`REFUSED_DOMAIN`], knows one user.
#[derive(Debug, Default)]
pub struct TestHandler {
    pub accepted: Mutex<Vec<Accepted>>,
    /// The next `accept` fails with this instead.
    pub fail_next: Mutex<Option<AcceptError>>,
    pub auth_calls: AtomicUsize,
}

impl TestHandler {
    pub fn accepted(&self) -> Vec<Accepted> {
        self.accepted.lock().unwrap().clone()
    }
}

impl Handler for TestHandler {
    async fn check_rcpt(&self, _info: &SessionInfo, _from: &str, rcpt: &str) -> Result<(), Reply> {
        if rcpt.ends_with(&format!("@{REFUSED_DOMAIN}")) {
            Err(Reply::new(
                550,
                Some(EnhancedCode::new(5, 7, 1)),
                "Relaying denied",
            ))
        } else {
            Ok(())
        }
    }

    async fn authenticate(
        &self,
        _info: &SessionInfo,
        user: &str,
        password: &str,
    ) -> Result<bool, Reply> {
        self.auth_calls.fetch_add(1, Ordering::SeqCst);
        // A slow check, off the runtime's threads, as a real one would be.
        let ok = user == USER && password == PASSWORD;
        Ok(tokio::task::spawn_blocking(move || ok).await.unwrap())
    }

    async fn accept(
        &self,
        info: &SessionInfo,
        envelope: Envelope,
        message: gateway::smtp::spool::Received,
    ) -> Result<String, AcceptError> {
        if let Some(e) = self.fail_next.lock().unwrap().take() {
            return Err(e);
        }
        let body = message.into_bytes().unwrap();
        let mut accepted = self.accepted.lock().unwrap();
        accepted.push(Accepted {
            info: info.clone(),
            envelope,
            body,
        });
        Ok(format!("Q{}", accepted.len()))
    }
}

/// A self-signed P-256 certificate for `mx.test` in an acceptor.
pub fn acceptor() -> Arc<SslAcceptor> {
    let group = EcGroup::from_curve_name(Nid::X9_62_PRIME256V1).unwrap();
    let key = PKey::from_ec_key(EcKey::generate(&group).unwrap()).unwrap();
    let mut name = X509NameBuilder::new().unwrap();
    name.append_entry_by_text("CN", "mx.test").unwrap();
    let name = name.build();
    let mut cert = X509::builder().unwrap();
    cert.set_version(2).unwrap();
    cert.set_serial_number(&BigNum::from_u32(1).unwrap().to_asn1_integer().unwrap())
        .unwrap();
    cert.set_subject_name(&name).unwrap();
    cert.set_issuer_name(&name).unwrap();
    cert.set_pubkey(&key).unwrap();
    cert.set_not_before(&Asn1Time::days_from_now(0).unwrap())
        .unwrap();
    cert.set_not_after(&Asn1Time::days_from_now(2).unwrap())
        .unwrap();
    cert.sign(&key, MessageDigest::sha256()).unwrap();
    let cert = cert.build();
    let mut acceptor = SslAcceptor::mozilla_intermediate_v5(SslMethod::tls()).unwrap();
    acceptor.set_private_key(&key).unwrap();
    acceptor.set_certificate(&cert).unwrap();
    acceptor.check_private_key().unwrap();
    Arc::new(acceptor.build())
}

/// The usual test config: inbound, `mx.test`, 10 000-octet messages.
pub fn config() -> SessionConfig {
    let mut c = SessionConfig::new("mx.test", Direction::Inbound);
    c.receiver.max_message_size = 10_000;
    c
}

pub fn peer() -> SocketAddr {
    "192.0.2.7:40000".parse().unwrap()
}

pub trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

/// How long a test waits for any one reply before failing.
pub const WAIT: Duration = Duration::from_secs(5);

/// The client end of a session running [`gateway::smtp::run_with_shutdown`]
/// over a duplex pipe.
pub struct Transcript {
    stream: Option<BufReader<Box<dyn Io>>>,
    pub handler: Arc<TestHandler>,
    task: JoinHandle<SessionOutcome>,
    pub shutdown: watch::Sender<bool>,
    /// The greeting, as received.
    pub greeting: String,
    /// How long to wait for a reply before failing the test.
    pub wait: Duration,
}

impl Transcript {
    /// An untrusted inbound client; reads and checks the 220 greeting.
    pub async fn start(config: SessionConfig) -> Self {
        Self::start_with(config, SessionInfo::new(peer())).await
    }

    pub async fn start_with(config: SessionConfig, info: SessionInfo) -> Self {
        let mut t = Self::spawn(config, info);
        t.greeting = t.reply().await;
        assert!(t.greeting.starts_with("220 mx.test"), "{:?}", t.greeting);
        t
    }

    /// Starts the session without reading anything.
    pub fn spawn(config: SessionConfig, info: SessionInfo) -> Self {
        Self::spawn_opts(config, info, false)
    }

    /// [`Self::spawn`], with shutdown already requested if `shutting_down`.
    pub fn spawn_opts(config: SessionConfig, info: SessionInfo, shutting_down: bool) -> Self {
        let (client, server) = tokio::io::duplex(64 * 1024);
        let handler = Arc::new(TestHandler::default());
        let (shutdown, shutdown_rx) = watch::channel(shutting_down);
        let h = Arc::clone(&handler);
        let task = tokio::spawn(async move {
            run_with_shutdown(server, info, &config, h.as_ref(), shutdown_rx).await
        });
        Self {
            stream: Some(BufReader::new(Box::new(client))),
            handler,
            task,
            shutdown,
            greeting: String::new(),
            wait: WAIT,
        }
    }

    fn stream(&mut self) -> &mut BufReader<Box<dyn Io>> {
        self.stream.as_mut().unwrap()
    }

    /// Writes `bytes` as they are.
    pub async fn send(&mut self, bytes: &[u8]) {
        let s = self.stream();
        s.write_all(bytes).await.unwrap();
        s.flush().await.unwrap();
    }

    /// Writes `bytes`; false when the server has closed the connection.
    pub async fn try_send(&mut self, bytes: &[u8]) -> bool {
        let s = self.stream();
        s.write_all(bytes).await.is_ok() && s.flush().await.is_ok()
    }

    /// Writes `bytes` one octet per write, yielding in between so the
    /// session sees them one at a time.
    pub async fn send_bytewise(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.send(std::slice::from_ref(b)).await;
            tokio::task::yield_now().await;
        }
    }

    /// Reads one whole reply (all its lines, with CRLF).
    pub async fn reply(&mut self) -> String {
        let mut reply = String::new();
        loop {
            let mut line = Vec::new();
            let wait = self.wait;
            let n = tokio::time::timeout(wait, self.stream().read_until(b'\n', &mut line))
                .await
                .unwrap_or_else(|_| panic!("no reply within {wait:?}; so far {reply:?}"))
                .unwrap();
            assert!(n > 0, "connection closed; reply so far {reply:?}");
            let line = String::from_utf8(line).unwrap();
            assert!(line.ends_with("\r\n"), "{line:?}");
            assert!(line.len() >= 6, "{line:?}");
            let last = line.as_bytes()[3] == b' ';
            reply.push_str(&line);
            if last {
                return reply;
            }
        }
    }

    /// Sends `line` + CRLF, reads the reply and checks that its last line
    /// starts with `expect`. Returns the whole reply.
    pub async fn cmd(&mut self, line: &str, expect: &str) -> String {
        self.send(format!("{line}\r\n").as_bytes()).await;
        self.expect(expect, line).await
    }

    /// Reads a reply and checks its last line starts with `expect`.
    pub async fn expect(&mut self, expect: &str, context: &str) -> String {
        let reply = self.reply().await;
        let last = reply
            .strip_suffix("\r\n")
            .unwrap_or(&reply)
            .rsplit("\r\n")
            .next()
            .unwrap_or("");
        assert!(
            last.starts_with(expect),
            "{context:?}: expected {expect:?}, got {reply:?}"
        );
        reply
    }

    /// The server closed the connection (after whatever was read).
    pub async fn expect_closed(&mut self) {
        let mut rest = Vec::new();
        let wait = self.wait;
        let n = tokio::time::timeout(wait, self.stream().read_to_end(&mut rest))
            .await
            .expect("connection not closed")
            .unwrap_or(0);
        assert_eq!(
            n,
            0,
            "unexpected bytes: {:?}",
            String::from_utf8_lossy(&rest)
        );
    }

    /// Closes the client side and returns how the session ended.
    pub async fn finish(mut self) -> SessionOutcome {
        if let Some(mut s) = self.stream.take() {
            let _ = s.shutdown().await;
        }
        tokio::time::timeout(self.wait, self.task)
            .await
            .expect("session did not end")
            .unwrap()
    }

    /// After `220` to STARTTLS: the TLS handshake as a client that does not
    /// verify the certificate.
    pub async fn tls_handshake(&mut self) {
        let reader = self.stream.take().unwrap();
        assert!(reader.buffer().is_empty(), "bytes after the 220");
        let inner = reader.into_inner();
        let mut connector = SslConnector::builder(SslMethod::tls()).unwrap();
        connector.set_verify(SslVerifyMode::NONE);
        let ssl = connector
            .build()
            .configure()
            .unwrap()
            .into_ssl("mx.test")
            .unwrap();
        let mut tls = SslStream::new(ssl, inner).unwrap();
        tokio::time::timeout(WAIT, Pin::new(&mut tls).connect())
            .await
            .unwrap()
            .unwrap();
        self.stream = Some(BufReader::new(Box::new(tls)));
    }
}

/// The Received: header the session prepends, checked, and the rest.
pub fn split_received<'a>(body: &'a [u8], expect_start: &str) -> &'a [u8] {
    let text = String::from_utf8_lossy(body);
    assert!(
        text.starts_with(expect_start),
        "expected {expect_start:?} at the start of {text:?}"
    );
    // Three folded lines: "Received: ...\r\n\t... id X;\r\n\t<date>\r\n".
    let mut pos = 0;
    for _ in 0..3 {
        pos += body[pos..].windows(2).position(|w| w == b"\r\n").unwrap() + 2;
    }
    let header = String::from_utf8_lossy(&body[..pos]);
    assert!(header.ends_with(" +0000\r\n"), "{header:?}");
    assert!(header.contains(" id "), "{header:?}");
    &body[pos..]
}
