//! `serve`: the listeners (SMTP inbound and outbound, HTTP for metrics and
//! health), the delivery workers, and a graceful stop.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use openssl::ssl::{SslAcceptor, SslFiletype, SslMethod};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpListener;
use tokio::sync::{Notify, watch};

use crate::config::Config;
use crate::engine::{Gateway, Incoming};
use crate::smtp::session::{
    self, AcceptError, Direction as SessionDirection, Envelope, Handler, SessionConfig, SessionInfo,
};
use crate::smtp::{EnhancedCode, Reply, Ret};
use crate::{Error, Result, worker};

/// What `serve` listens on, once bound.
#[derive(Debug, Clone)]
pub struct Bound {
    /// SMTP from the Internet.
    pub inbound: SocketAddr,
    /// SMTP from the firm's mail server.
    pub outbound: SocketAddr,
    /// HTTP: /metrics, /healthz.
    pub http: SocketAddr,
}

/// A started gateway: bound, accepting, delivering.
#[derive(Debug)]
pub struct Running {
    /// The shared state.
    pub gw: Arc<Gateway>,
    /// Addresses.
    pub bound: Bound,
    stop: watch::Sender<bool>,
    sessions: Arc<Sessions>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    workers: Vec<tokio::task::JoinHandle<()>>,
}

/// Open SMTP sessions at most (both listeners together); each may hold a
/// message of up to `max_message_size` in memory.
const MAX_SESSIONS: usize = 256;

/// Counts open sessions so a stop can wait for them.
#[derive(Debug, Default)]
struct Sessions {
    open: AtomicUsize,
    idle: Notify,
}

impl Running {
    /// Binds every listener and starts the tasks. Listeners are bound
    /// before anything is accepted, so a port in use fails the start.
    pub async fn start(
        gw: Arc<Gateway>,
        app: Option<(Arc<service::Service>, crate::MakeApp)>,
    ) -> Result<Running> {
        let cfg = &gw.cfg;
        let bind = |a: SocketAddr, what: &'static str| async move {
            TcpListener::bind(a)
                .await
                .map_err(|e| Error::Start(format!("cannot listen on {a} ({what}): {e}")))
        };
        let inbound = bind(cfg.inbound.listen, "inbound SMTP").await?;
        let outbound = bind(cfg.outbound.listen, "outbound SMTP").await?;
        let http = bind(cfg.http_listen, "HTTP").await?;
        let bound = Bound {
            inbound: inbound
                .local_addr()
                .map_err(|e| Error::Start(e.to_string()))?,
            outbound: outbound
                .local_addr()
                .map_err(|e| Error::Start(e.to_string()))?,
            http: http.local_addr().map_err(|e| Error::Start(e.to_string()))?,
        };
        let app = app.map(|(svc, make)| make(svc, &bound));
        let tls = Some(Arc::new(tls_acceptor(cfg)?));
        let (stop, stop_rx) = watch::channel(false);
        let sessions = Arc::new(Sessions::default());
        let mut tasks = Vec::new();
        for (listener, direction) in [
            (inbound, SessionDirection::Inbound),
            (outbound, SessionDirection::Outbound),
        ] {
            let scfg = session_config(cfg, direction, tls.clone());
            tasks.push(tokio::spawn(accept_loop(
                listener,
                gw.clone(),
                scfg,
                stop_rx.clone(),
                sessions.clone(),
            )));
        }
        tasks.push(tokio::spawn(http_loop(
            http,
            gw.clone(),
            app,
            stop_rx.clone(),
        )));
        tasks.push(tokio::spawn(refresh_keys(gw.clone(), stop_rx.clone())));
        tasks.push(tokio::spawn(purge(gw.clone(), stop_rx.clone())));
        for mb in cfg.mailboxes.iter().filter(|m| m.live) {
            for folder in &mb.folders {
                tasks.push(tokio::spawn(crate::imap::live::watch(
                    gw.clone(),
                    mb.clone(),
                    folder.clone(),
                    stop_rx.clone(),
                )));
            }
        }
        let workers = (0..cfg.workers)
            .map(|i| tokio::spawn(worker::run(gw.clone(), i, stop_rx.clone())))
            .collect();
        Ok(Running {
            gw,
            bound,
            stop,
            sessions,
            tasks,
            workers,
        })
    }

    /// Stops: no new connections; idle sessions are told 421; a message
    /// being received is finished and queued; workers finish the delivery
    /// in hand. Returns within `grace` (what is still running then is
    /// abandoned: the queue keeps every accepted message).
    pub async fn shutdown(self, grace: Duration) {
        let _ = self.stop.send(true);
        let deadline = tokio::time::Instant::now() + grace;
        for t in &self.tasks {
            t.abort();
        }
        loop {
            let idle = self.sessions.idle.notified();
            if self.sessions.open.load(Ordering::SeqCst) == 0 {
                break;
            }
            if tokio::time::timeout_at(deadline, idle).await.is_err() {
                tracing::warn!(
                    open = self.sessions.open.load(Ordering::SeqCst),
                    "sessions still open at the deadline; closing them"
                );
                break;
            }
        }
        for w in self.workers {
            if tokio::time::timeout_at(deadline, w).await.is_err() {
                tracing::warn!(
                    "a delivery was still running at the deadline; its lease expires and it is retried"
                );
            }
        }
        self.gw.svc.store().close().await;
    }
}

fn session_config(
    cfg: &Config,
    direction: SessionDirection,
    tls: Option<Arc<SslAcceptor>>,
) -> SessionConfig {
    let mut s = SessionConfig::new(&cfg.hostname, direction);
    s.receiver.max_message_size = cfg.inbound.max_message_size;
    s.max_recipients = cfg.inbound.max_recipients;
    s.tls = tls;
    s
}

async fn accept_loop(
    listener: TcpListener,
    gw: Arc<Gateway>,
    scfg: SessionConfig,
    stop: watch::Receiver<bool>,
    sessions: Arc<Sessions>,
) {
    let scfg = Arc::new(scfg);
    let mut stop_accept = stop.clone();
    loop {
        let (stream, peer) = tokio::select! {
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            _ = stop_accept.changed() => return,
        };
        if sessions.open.load(Ordering::SeqCst) >= MAX_SESSIONS {
            // Busy: say so and close, rather than hold more messages in
            // memory than the machine has.
            let mut stream = stream;
            let _ = tokio::time::timeout(
                Duration::from_secs(5),
                stream.write_all(b"421 4.3.2 too many connections, try again later\r\n"),
            )
            .await;
            gw.metrics.fail("too_many_sessions");
            continue;
        }
        let _ = stream.set_nodelay(true);
        let trusted = scfg.direction == SessionDirection::Outbound
            && gw
                .cfg
                .outbound
                .trusted_networks
                .iter()
                .any(|n| n.contains(peer.ip()));
        let mut info = SessionInfo::new(peer);
        info.trusted = trusted;
        let handler = GatewayHandler {
            gw: gw.clone(),
            direction: scfg.direction,
        };
        let scfg = scfg.clone();
        let stop = stop.clone();
        let sessions = sessions.clone();
        sessions.open.fetch_add(1, Ordering::SeqCst);
        tokio::spawn(async move {
            let out = session::run_with_shutdown(stream, info, &scfg, &handler, stop).await;
            tracing::debug!(%peer, messages = out.messages, ended = ?out.ended, "session closed");
            if sessions.open.fetch_sub(1, Ordering::SeqCst) == 1 {
                sessions.idle.notify_waiters();
            }
        });
    }
}

/// A hash no password matches, checked for unknown user names.
static DUMMY_HASH: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
    service::smtp_users::hash_password("no such user: dummy password").unwrap_or_default()
});

/// The gateway's answers to a session: which recipients, and queueing.
struct GatewayHandler {
    gw: Arc<Gateway>,
    direction: SessionDirection,
}

impl Handler for GatewayHandler {
    fn check_rcpt(
        &self,
        _info: &SessionInfo,
        _from: &str,
        rcpt: &str,
    ) -> std::result::Result<(), Reply> {
        // RFC 5321 §4.5.1: <Postmaster> (no domain) is always accepted.
        let postmaster = rcpt.eq_ignore_ascii_case("postmaster");
        if self.direction == SessionDirection::Inbound && !postmaster && !self.gw.cfg.is_local(rcpt)
        {
            return Err(Reply::new(
                550,
                Some(EnhancedCode::new(5, 7, 1)),
                "relaying denied: not a domain of this organisation",
            ));
        }
        Ok(())
    }

    async fn authenticate(&self, user: &str, password: &str) -> bool {
        let hash = match self.gw.svc.smtp_user_hash(user).await {
            Ok(Some(h)) => h,
            Ok(None) => {
                // Spend the same time as a wrong password: no oracle for
                // which names exist.
                DUMMY_HASH.clone()
            }
            Err(e) => {
                tracing::warn!(error = %e, "SMTP user lookup failed");
                return false;
            }
        };
        let pw = password.to_string();
        let ok =
            tokio::task::spawn_blocking(move || service::smtp_users::verify_password(&hash, &pw))
                .await
                .unwrap_or(false);
        if !ok {
            self.gw.metrics.fail("auth_failed");
        }
        ok
    }

    async fn accept(
        &self,
        info: &SessionInfo,
        envelope: Envelope,
        body: Vec<u8>,
    ) -> std::result::Result<String, AcceptError> {
        let direction = match self.direction {
            SessionDirection::Inbound => store::queue::Direction::Inbound,
            SessionDirection::Outbound => store::queue::Direction::Outbound,
        };
        let recipients = envelope
            .recipients
            .iter()
            .map(|(a, p)| {
                let notify = p.notify.as_ref().map(|n| {
                    let mut v = Vec::new();
                    if n.success {
                        v.push("SUCCESS");
                    }
                    if n.failure {
                        v.push("FAILURE");
                    }
                    if n.delay {
                        v.push("DELAY");
                    }
                    if v.is_empty() {
                        "NEVER".to_string()
                    } else {
                        v.join(",")
                    }
                });
                let orcpt = p
                    .orcpt
                    .as_ref()
                    .map(|o| no_controls(&format!("{};{}", o.addr_type, o.address)));
                (a.clone(), notify, orcpt)
            })
            .collect();
        let client = format!(
            "helo={} peer={} tls={} auth={}",
            info.helo.as_deref().unwrap_or("-"),
            info.peer,
            if info.tls { "yes" } else { "no" },
            info.authenticated.as_deref().unwrap_or("-")
        );
        let m = Incoming {
            direction,
            mail_from: envelope.mail_from.clone(),
            envid: envelope.params.envid.as_deref().map(no_controls),
            ret: envelope.params.ret.map(|r| match r {
                Ret::Full => "FULL".to_string(),
                Ret::Hdrs => "HDRS".to_string(),
            }),
            client,
            body,
            recipients,
        };
        self.gw
            .enqueue(m)
            .await
            .map(|id| id.to_string())
            .map_err(AcceptError::Temporary)
    }
}

/// ENVID and ORCPT arrive xtext-encoded and may decode to control bytes
/// (a NUL that PostgreSQL refuses, a CR LF for a DSN header): dropped.
fn no_controls(s: &str) -> String {
    s.chars().filter(|c| !c.is_control()).collect()
}

/// Reloads keys every minute (an imported key, a renewal, a rotation).
async fn refresh_keys(gw: Arc<Gateway>, mut stop: watch::Receiver<bool>) {
    loop {
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs(60)) => {}
            _ = stop.changed() => return,
        }
        if let Err(e) = gw.reload_crypto().await {
            tracing::warn!(error = %e, "reloading keys failed; the previous ones stay in use");
        }
    }
}

/// Removes finished messages older than `[queue] keep_done`, hourly.
async fn purge(gw: Arc<Gateway>, mut stop: watch::Receiver<bool>) {
    loop {
        let keep = gw.cfg.keep_done.as_secs() as i64;
        match gw.svc.store().purge_done(store::now() - keep).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(messages = n, "purged finished messages"),
            Err(e) => tracing::warn!(error = %e, "purging finished messages failed"),
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs(3600)) => {}
            _ = stop.changed() => return,
        }
    }
}

/// The HTTP listener: `GET /metrics`, `GET /healthz`, and the admin API
/// and pages when given. Stops accepting at the stop signal.
async fn http_loop(
    listener: TcpListener,
    gw: Arc<Gateway>,
    app: Option<axum::Router>,
    mut stop: watch::Receiver<bool>,
) {
    use axum::routing::get;
    let g1 = gw.clone();
    let g2 = gw.clone();
    let ours = axum::Router::new()
        .route("/metrics", get(move || metrics(g1.clone())))
        .route("/healthz", get(move || healthz(g2.clone())));
    let router = match app {
        Some(app) => app.merge(ours),
        None => ours,
    };
    let serve = axum::serve(
        listener,
        router.into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(async move {
        let _ = stop.changed().await;
    });
    if let Err(e) = serve.await {
        tracing::error!(error = %e, "HTTP listener stopped");
    }
}

async fn metrics(gw: Arc<Gateway>) -> axum::response::Response {
    use axum::response::IntoResponse;
    let (active, held) = gw
        .svc
        .store()
        .queue_depth(Some(gw.svc.org().id))
        .await
        .unwrap_or((-1, -1));
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4",
        )],
        gw.metrics.render(active, held),
    )
        .into_response()
}

async fn healthz(gw: Arc<Gateway>) -> axum::response::Response {
    use axum::response::IntoResponse;
    match gw.svc.store().queue_depth(Some(gw.svc.org().id)).await {
        Ok(_) => ([(axum::http::header::CONTENT_TYPE, "text/plain")], "ok\n").into_response(),
        Err(e) => (
            axum::http::StatusCode::SERVICE_UNAVAILABLE,
            [(axum::http::header::CONTENT_TYPE, "text/plain")],
            format!("store unavailable: {e}\n"),
        )
            .into_response(),
    }
}

/// The STARTTLS acceptor: the configured certificate, or a self-signed one
/// made at first start in `<data-dir>/tls/`.
fn tls_acceptor(cfg: &Config) -> Result<SslAcceptor> {
    let (cert, key) = match &cfg.tls {
        Some((c, k)) => (c.clone(), k.clone()),
        None => self_signed(&cfg.data_dir.join("tls"), &cfg.hostname)?,
    };
    let e = |what: &str, p: &Path, err: openssl::error::ErrorStack| {
        Error::Start(format!("TLS {what} {}: {err}", p.display()))
    };
    let mut b = SslAcceptor::mozilla_intermediate_v5(SslMethod::tls())
        .map_err(|err| e("setup", &cert, err))?;
    b.set_certificate_chain_file(&cert)
        .map_err(|err| e("certificate", &cert, err))?;
    b.set_private_key_file(&key, SslFiletype::PEM)
        .map_err(|err| e("key", &key, err))?;
    b.check_private_key()
        .map_err(|err| e("key does not match certificate", &key, err))?;
    Ok(b.build())
}

fn self_signed(dir: &Path, hostname: &str) -> Result<(PathBuf, PathBuf)> {
    use openssl::asn1::Asn1Time;
    use openssl::bn::BigNum;
    use openssl::ec::{EcGroup, EcKey};
    use openssl::hash::MessageDigest;
    use openssl::nid::Nid;
    use openssl::pkey::PKey;
    use openssl::x509::extension::SubjectAlternativeName;
    use openssl::x509::{X509Builder, X509NameBuilder};
    use std::os::unix::fs::OpenOptionsExt;

    let cert_path = dir.join("cert.pem");
    let key_path = dir.join("key.pem");
    if cert_path.exists() && key_path.exists() {
        return Ok((cert_path, key_path));
    }
    let err = |e: &dyn std::fmt::Display| Error::Start(format!("self-signed TLS certificate: {e}"));
    std::fs::create_dir_all(dir).map_err(|e| err(&e))?;
    let group = EcGroup::from_curve_name(Nid::X9_62_PRIME256V1).map_err(|e| err(&e))?;
    let key =
        PKey::from_ec_key(EcKey::generate(&group).map_err(|e| err(&e))?).map_err(|e| err(&e))?;
    let mut name = X509NameBuilder::new().map_err(|e| err(&e))?;
    name.append_entry_by_nid(Nid::COMMONNAME, hostname)
        .map_err(|e| err(&e))?;
    let name = name.build();
    let mut b = X509Builder::new().map_err(|e| err(&e))?;
    b.set_version(2).map_err(|e| err(&e))?;
    let serial = BigNum::from_u32(crate::engine::rand_u32() | 1)
        .and_then(|n| n.to_asn1_integer())
        .map_err(|e| err(&e))?;
    b.set_serial_number(&serial).map_err(|e| err(&e))?;
    b.set_subject_name(&name).map_err(|e| err(&e))?;
    b.set_issuer_name(&name).map_err(|e| err(&e))?;
    b.set_pubkey(&key).map_err(|e| err(&e))?;
    let nb = Asn1Time::days_from_now(0).map_err(|e| err(&e))?;
    let na = Asn1Time::days_from_now(3650).map_err(|e| err(&e))?;
    b.set_not_before(&nb).map_err(|e| err(&e))?;
    b.set_not_after(&na).map_err(|e| err(&e))?;
    let san = SubjectAlternativeName::new()
        .dns(hostname)
        .dns("localhost")
        .ip("127.0.0.1")
        .build(&b.x509v3_context(None, None))
        .map_err(|e| err(&e))?;
    b.append_extension(san).map_err(|e| err(&e))?;
    b.sign(&key, MessageDigest::sha256()).map_err(|e| err(&e))?;
    let cert = b.build();
    let write = |p: &Path, bytes: &[u8], mode: u32| -> Result<()> {
        let tmp = p.with_extension("tmp");
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(mode)
            .open(&tmp)
            .map_err(|e| err(&e))?;
        std::io::Write::write_all(&mut f, bytes).map_err(|e| err(&e))?;
        f.sync_all().map_err(|e| err(&e))?;
        std::fs::rename(&tmp, p).map_err(|e| err(&e))
    };
    write(
        &key_path,
        &key.private_key_to_pem_pkcs8().map_err(|e| err(&e))?,
        0o600,
    )?;
    write(&cert_path, &cert.to_pem().map_err(|e| err(&e))?, 0o644)?;
    tracing::info!(cert = %cert_path.display(), "made a self-signed STARTTLS certificate");
    Ok((cert_path, key_path))
}
