//! `serve`: the listeners (SMTP inbound and outbound, HTTP for metrics and
//! health), the delivery workers, and a graceful stop.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use openssl::ssl::{SslAcceptor, SslFiletype, SslMethod};
use tokio::net::TcpListener;
use tokio::sync::{Notify, watch};

use crate::config::Config;
use crate::engine::{Gateway, Incoming};
use crate::process::senders;
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

/// File descriptors kept for everything but client connections: the
/// store's pool, delivery and IMAP connections, spool and log files.
const FD_RESERVE: u64 = 256;

/// Fewest HTTP connections `serve` starts with (else it refuses to start).
const HTTP_MIN_CONNECTIONS: u64 = 16;

/// Connections open on one listener, in total and per client address, so
/// one client cannot take a listener's slots and one listener cannot take
/// another's (each has a budget of its own).
#[derive(Debug)]
struct Budget {
    max: usize,
    per_address: usize,
    open: Mutex<(usize, HashMap<IpAddr, usize>)>,
    /// A slot was given back.
    freed: Notify,
}

/// Why [`Budget::take`] refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Full {
    /// The listener is at its total.
    Listener,
    /// This client address is at its own limit.
    Address,
}

/// One open connection of a [`Budget`]; given back when dropped.
#[derive(Debug)]
struct Slot {
    budget: Arc<Budget>,
    key: IpAddr,
}

impl Budget {
    fn new(max: usize, per_address: usize) -> Arc<Budget> {
        Arc::new(Budget {
            max,
            per_address,
            open: Mutex::new((0, HashMap::new())),
            freed: Notify::new(),
        })
    }

    /// A slot for a connection from `ip`, if both limits allow it.
    fn take(self: &Arc<Self>, ip: IpAddr) -> std::result::Result<Slot, Full> {
        let key = address_key(ip);
        let mut g = self.open.lock().unwrap_or_else(|p| p.into_inner());
        let (total, by_address) = &mut *g;
        if by_address.get(&key).is_some_and(|n| *n >= self.per_address) {
            return Err(Full::Address);
        }
        if *total >= self.max {
            return Err(Full::Listener);
        }
        let n = by_address.entry(key).or_insert(0);
        *n += 1;
        *total += 1;
        Ok(Slot {
            budget: self.clone(),
            key,
        })
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut g = self.budget.open.lock().unwrap_or_else(|p| p.into_inner());
        let (total, by_address) = &mut *g;
        *total = total.saturating_sub(1);
        if let Some(n) = by_address.get_mut(&self.key) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                by_address.remove(&self.key);
            }
        }
        drop(g);
        self.budget.freed.notify_one();
    }
}

/// What a per-address limit counts: the address (an IPv4-mapped one as
/// IPv4), an IPv6 client by its /64, which one subscriber usually holds
/// whole.
fn address_key(ip: IpAddr) -> IpAddr {
    match ip.to_canonical() {
        IpAddr::V6(v6) => {
            let bits = u128::from(v6) & !((1u128 << 64) - 1);
            IpAddr::V6(bits.into())
        }
        v4 => v4,
    }
}

/// Raises the soft limit on open files to the hard limit (at most 2^20)
/// and returns it; `None` when it cannot be read.
fn raise_nofile_limit() -> Option<u64> {
    let mut l = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into the struct passed, which we own.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut l) } != 0 {
        return None;
    }
    let want = l.rlim_max.min(1 << 20);
    if l.rlim_cur < want {
        let new = libc::rlimit {
            rlim_cur: want,
            rlim_max: l.rlim_max,
        };
        // SAFETY: setrlimit only reads the struct passed.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &new) } == 0 {
            l.rlim_cur = want;
        }
    }
    Some(l.rlim_cur)
}

/// The HTTP listener's total: `[http] max_connections`, lowered so that
/// both SMTP budgets and [`FD_RESERVE`] fit in the file-descriptor limit
/// whatever HTTP clients do.
fn http_budget(cfg: &Config, nofile: Option<u64>) -> Result<usize> {
    let Some(limit) = nofile else {
        return Ok(cfg.http_max_connections);
    };
    // Each SMTP session may hold its socket and a spool file.
    let smtp = (cfg.inbound.max_connections as u64)
        .saturating_add(cfg.outbound.max_connections as u64)
        .saturating_mul(2);
    let room = limit.saturating_sub(FD_RESERVE.saturating_add(smtp));
    if room < HTTP_MIN_CONNECTIONS {
        return Err(Error::Start(format!(
            "the open-files limit ({limit}) is too low for {smtp} SMTP connections, \
             {HTTP_MIN_CONNECTIONS} HTTP connections and {FD_RESERVE} for the rest: raise it \
             (ulimit -n, systemd LimitNOFILE=) or lower [inbound]/[outbound] max_connections"
        )));
    }
    let http = usize::try_from(room)
        .unwrap_or(usize::MAX)
        .min(cfg.http_max_connections);
    if http < cfg.http_max_connections {
        tracing::warn!(
            limit,
            http,
            configured = cfg.http_max_connections,
            "[http] max_connections lowered to fit the open-files limit"
        );
    }
    Ok(http)
}

/// After a failed `accept`: out of file descriptors (or memory), wait a
/// while instead of spinning, so the sessions holding them can end; other
/// errors (a connection reset before it was accepted) go on at once.
/// Returns true when a stop was requested meanwhile.
async fn accept_failed(
    gw: &Gateway,
    e: &std::io::Error,
    what: &'static str,
    stop: &mut watch::Receiver<bool>,
) -> bool {
    let pause = match e.raw_os_error() {
        Some(libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM) => {
            tracing::warn!(error = %e, listener = what, "accept: out of resources, pausing");
            gw.metrics.fail("accept_out_of_resources");
            Duration::from_millis(500)
        }
        _ => {
            tracing::debug!(error = %e, listener = what, "accept failed");
            Duration::from_millis(5)
        }
    };
    tokio::select! {
        () = tokio::time::sleep(pause) => false,
        _ = stop.changed() => true,
    }
}

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
        let nofile = raise_nofile_limit();
        let http_max = http_budget(cfg, nofile)?;
        tracing::info!(
            open_files = nofile,
            inbound = cfg.inbound.max_connections,
            outbound = cfg.outbound.max_connections,
            http = http_max,
            "connection budgets"
        );
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
        gw.set_tls(Arc::new(tls_acceptor(cfg)?));
        let tls = gw.tls();
        {
            use std::os::unix::fs::DirBuilderExt;
            let spool = cfg.data_dir.join("spool");
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(&spool)
                .map_err(|e| Error::Start(format!("cannot make {}: {e}", spool.display())))?;
        }
        let (stop, stop_rx) = watch::channel(false);
        let sessions = Arc::new(Sessions::default());
        let mut tasks = Vec::new();
        for (listener, direction) in [
            (inbound, SessionDirection::Inbound),
            (outbound, SessionDirection::Outbound),
        ] {
            let scfg = session_config(cfg, direction, tls.clone());
            let budget = match direction {
                SessionDirection::Inbound => Budget::new(
                    cfg.inbound.max_connections,
                    cfg.inbound.max_connections_per_address,
                ),
                SessionDirection::Outbound => Budget::new(
                    cfg.outbound.max_connections,
                    cfg.outbound.max_connections_per_address,
                ),
            };
            tasks.push(tokio::spawn(accept_loop(
                listener,
                gw.clone(),
                scfg,
                stop_rx.clone(),
                sessions.clone(),
                budget,
            )));
        }
        tasks.push(tokio::spawn(http_loop(
            http,
            gw.clone(),
            app,
            stop_rx.clone(),
            Budget::new(http_max, cfg.http_max_connections_per_address),
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
    s.min_data_rate = cfg.inbound.min_data_rate;
    s.data_grace = cfg.inbound.data_grace;
    s.tls = tls;
    s.spool_dir = Some(Arc::new(cfg.data_dir.join("spool")));
    s
}

async fn accept_loop(
    listener: TcpListener,
    gw: Arc<Gateway>,
    scfg: SessionConfig,
    stop: watch::Receiver<bool>,
    sessions: Arc<Sessions>,
    budget: Arc<Budget>,
) {
    let mut scfg = Arc::new(scfg);
    let what = match scfg.direction {
        SessionDirection::Inbound => "inbound SMTP",
        SessionDirection::Outbound => "outbound SMTP",
    };
    let mut stop_accept = stop.clone();
    loop {
        let (stream, peer) = tokio::select! {
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    if accept_failed(&gw, &e, what, &mut stop_accept).await {
                        return;
                    }
                    continue;
                }
            },
            _ = stop_accept.changed() => return,
        };
        let slot = match budget.take(peer.ip()) {
            Ok(slot) => slot,
            Err(full) => {
                // Say so and close at once: a write that would wait is not
                // made, so a refused client holds nothing here.
                let (line, reason): (&[u8], _) = match full {
                    Full::Listener => (
                        b"421 4.7.0 too many connections, try again later\r\n",
                        "too_many_sessions",
                    ),
                    Full::Address => (
                        b"421 4.7.0 too many connections from your address\r\n",
                        "too_many_sessions_from_address",
                    ),
                };
                let _ = stream.try_write(line);
                tracing::debug!(%peer, listener = what, ?full, "connection refused");
                gw.metrics.fail(reason);
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        // A certificate reloaded (SIGHUP) since the last connection: this
        // session and the next ones present the new one.
        if let Some(t) = gw.tls()
            && !scfg.tls.as_ref().is_some_and(|c| Arc::ptr_eq(c, &t))
        {
            let mut c = (*scfg).clone();
            c.tls = Some(t);
            scfg = Arc::new(c);
        }
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
            drop(slot);
            tracing::debug!(%peer, messages = out.messages, ended = ?out.ended, "session closed");
            if out.ended == session::EndReason::TooSlow {
                handler.gw.metrics.fail("smtp_transfer_too_slow");
            }
            if sessions.open.fetch_sub(1, Ordering::SeqCst) == 1 {
                sessions.idle.notify_waiters();
            }
        });
    }
}

/// The gateway's answers to a session: which recipients, and queueing.
struct GatewayHandler {
    gw: Arc<Gateway>,
    direction: SessionDirection,
}

impl GatewayHandler {
    /// The SMTP AUTH account of the session and what it may send as (an
    /// account removed since it logged in may send as nothing).
    async fn account(
        &self,
        info: &SessionInfo,
    ) -> std::result::Result<Option<(String, service::smtp_users::SendAs)>, String> {
        let Some(name) = &info.authenticated else {
            return Ok(None);
        };
        let send_as = self
            .gw
            .svc
            .smtp_user_send_as(name)
            .await
            .map_err(|e| e.to_string())?
            .unwrap_or_default();
        Ok(Some((name.clone(), send_as)))
    }

    /// Asks the next hop whether it takes mail for `rcpt` (cached: an
    /// address taken for an hour, one refused for 10 minutes); a next hop
    /// that cannot say is a temporary refusal, so nothing is accepted that
    /// would bounce later.
    async fn verify_recipient(&self, rcpt: &str) -> std::result::Result<(), Reply> {
        use crate::deliver::smtp_client::{NextHop, RcptOutcome, verify};
        const TAKEN: Duration = Duration::from_secs(3600);
        const REFUSED: Duration = Duration::from_secs(600);
        let fresh =
            |ok: bool, at: &std::time::Instant| at.elapsed() < if ok { TAKEN } else { REFUSED };
        let key = rcpt.to_ascii_lowercase();
        let refused = || {
            Reply::new(
                550,
                Some(EnhancedCode::new(5, 1, 1)),
                "no such mailbox here (the firm's mail server refuses it)",
            )
        };
        let cached = {
            let mut m = self.gw.verified.lock().unwrap_or_else(|p| p.into_inner());
            if m.len() > 100_000 {
                m.retain(|_, (ok, at)| fresh(*ok, at));
            }
            m.get(&key)
                .filter(|(ok, at)| fresh(*ok, at))
                .map(|(ok, _)| *ok)
        };
        match cached {
            Some(true) => return Ok(()),
            Some(false) => return Err(refused()),
            None => {}
        }
        let Some((host, port)) = &self.gw.cfg.inbound.next_hop else {
            return Ok(());
        };
        let mut hop = NextHop::new(host.clone(), *port);
        hop.tls = self.gw.cfg.inbound.next_hop_tls;
        hop.ca_file = self.gw.cfg.inbound.next_hop_ca_file.clone();
        hop.helo = self.gw.cfg.hostname.clone();
        hop.command_timeout = Duration::from_secs(30);
        let taken = match verify(&hop, rcpt).await {
            Ok(RcptOutcome::Accepted) => true,
            Ok(RcptOutcome::Permanent(_)) => false,
            Ok(RcptOutcome::Temporary(why)) => {
                tracing::warn!(rcpt, why, "recipient verification deferred");
                return Err(unverified());
            }
            Err(e) => {
                tracing::warn!(rcpt, error = %e, "recipient verification failed");
                self.gw.metrics.fail("recipient_verification");
                return Err(unverified());
            }
        };
        self.gw
            .verified
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(key, (taken, std::time::Instant::now()));
        if taken { Ok(()) } else { Err(refused()) }
    }

    fn sender_domains(&self) -> Vec<String> {
        senders::sender_domains(&self.gw.cfg.domains, &self.gw.crypto().keys)
    }
}

impl Handler for GatewayHandler {
    async fn check_mail(&self, info: &SessionInfo, from: &str) -> std::result::Result<(), Reply> {
        if self.direction != SessionDirection::Outbound {
            return Ok(());
        }
        let account = self.account(info).await.map_err(|e| {
            tracing::warn!(error = %e, "SMTP account lookup failed");
            Reply::new(
                451,
                Some(EnhancedCode::new(4, 3, 0)),
                "temporary failure, try again later",
            )
        })?;
        let account = account.as_ref().map(|(n, s)| (n.as_str(), s));
        senders::check_envelope(from, &self.sender_domains(), account).map_err(|why| {
            tracing::warn!(peer = %info.peer, from, why, "sender refused");
            self.gw.metrics.fail("sender_refused");
            Reply::new(550, Some(EnhancedCode::new(5, 7, 1)), &why)
        })
    }

    async fn check_rcpt(
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
        // Refused now rather than bounced later: a bounce would go to
        // whatever MAIL FROM claims (backscatter).
        if self.direction == SessionDirection::Inbound
            && !postmaster
            && !self.gw.cfg.is_mailbox(rcpt)
        {
            return Err(Reply::new(
                550,
                Some(EnhancedCode::new(5, 1, 1)),
                "no such mailbox here",
            ));
        }
        if self.direction == SessionDirection::Inbound
            && !postmaster
            && self.gw.cfg.inbound.verify_recipients
        {
            return self.verify_recipient(rcpt).await;
        }
        Ok(())
    }

    async fn authenticate(
        &self,
        info: &SessionInfo,
        user: &str,
        password: &str,
    ) -> std::result::Result<bool, Reply> {
        // The store's limiter, per account and per client address, and
        // the bounded password hashing: both in the service.
        let from = info.peer.ip().to_string();
        match self.gw.svc.smtp_authenticate(user, &from, password).await {
            Ok(true) => Ok(true),
            Ok(false) => {
                self.gw.metrics.fail("auth_failed");
                Ok(false)
            }
            Err(e) => {
                if !matches!(e, service::Error::TooMany { .. } | service::Error::Busy) {
                    tracing::warn!(error = %e, "SMTP AUTH could not be checked");
                }
                self.gw.metrics.fail("auth_limited");
                Err(Reply::new(
                    454,
                    Some(EnhancedCode::new(4, 7, 0)),
                    "Temporary authentication failure, try later",
                ))
            }
        }
    }

    async fn accept(
        &self,
        info: &SessionInfo,
        envelope: Envelope,
        message: crate::smtp::spool::Received,
    ) -> std::result::Result<String, AcceptError> {
        // Whole messages in memory at once are bounded: one past the budget
        // waits (in its spool file) until the ones before are committed.
        let _budget = self
            .gw
            .accept_budget
            .acquire_many(budget_permits(message.len()))
            .await
            .map_err(|_| AcceptError::Temporary("shutting down, try again later".into()))?;
        let body = tokio::task::spawn_blocking(move || message.into_bytes())
            .await
            .map_err(|e| e.to_string())
            .and_then(|r| r.map_err(|e| e.to_string()))
            .map_err(|e| {
                tracing::error!(error = %e, "reading a spooled message failed");
                AcceptError::Temporary("temporary failure storing the message".into())
            })?;
        let direction = match self.direction {
            SessionDirection::Inbound => store::queue::Direction::Inbound,
            SessionDirection::Outbound => store::queue::Direction::Outbound,
        };
        if self.direction == SessionDirection::Outbound {
            let account = self
                .account(info)
                .await
                .map_err(|_| AcceptError::Temporary("temporary failure, try again later".into()))?;
            let account = account.as_ref().map(|(n, s)| (n.as_str(), s));
            let keys = &self.gw.crypto().keys;
            let canonical = crate::process::headers::canonical(&body);
            if let Err(why) =
                senders::check_from(&canonical, &envelope.mail_from, keys, account, store::now())
            {
                tracing::warn!(peer = %info.peer, from = %envelope.mail_from, why, "From: refused");
                self.gw.metrics.fail("sender_refused");
                return Err(AcceptError::Permanent(format!("5.7.1 {why}")));
            }
        }
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

/// The next hop could not say whether it takes a recipient: try later.
fn unverified() -> Reply {
    Reply::new(
        450,
        Some(EnhancedCode::new(4, 1, 1)),
        "recipient address verification failed for now, try again later",
    )
}

/// The accept budget's permits (KiB) for a message of `len` octets: at
/// most the whole budget, so the largest message still gets in.
fn budget_permits(len: u64) -> u32 {
    u32::try_from(len / 1024 + 1)
        .unwrap_or(u32::MAX)
        .min(crate::engine::ACCEPT_BUDGET_KIB)
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
/// and pages when given. Stops accepting at the stop signal; open
/// connections finish the request in hand and close.
///
/// Each connection takes a slot of `budget` (total and per address) and
/// must send a whole request header within `[http] header_timeout`, which
/// also bounds how long a kept-alive connection may wait for its next
/// request, and each request must be answered within `[http]
/// request_timeout` (a slow body included): half-open connections cannot
/// pile up until the process runs
/// out of file descriptors (the SMTP listeners' are kept apart by
/// [`http_budget`]).
async fn http_loop(
    listener: TcpListener,
    gw: Arc<Gateway>,
    app: Option<axum::Router>,
    stop: watch::Receiver<bool>,
    budget: Arc<Budget>,
) {
    use axum::routing::get;
    let g1 = gw.clone();
    let g2 = gw.clone();
    let g3 = gw.clone();
    let ours = axum::Router::new()
        .route("/metrics", get(move || metrics(g1.clone())))
        .route("/healthz", get(move || healthz(g2.clone())))
        .route("/readyz", get(move || readyz(g3.clone())));
    let router = match app {
        Some(app) => app.merge(ours),
        None => ours,
    };
    let header_timeout = gw.cfg.http_header_timeout;
    let request_timeout = gw.cfg.http_request_timeout;
    let waiting = Arc::new(Waiting::default());
    let mut stop_accept = stop.clone();
    loop {
        let (stream, peer) = tokio::select! {
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    if accept_failed(&gw, &e, "HTTP", &mut stop_accept).await {
                        return;
                    }
                    continue;
                }
            },
            _ = stop_accept.changed() => return,
        };
        let mut taken = budget.take(peer.ip());
        if taken.as_ref().err() == Some(&Full::Listener) {
            // Full: close the connection that has waited longest for a
            // request, rather than refuse a client with one to make (many
            // addresses holding half-open connections would otherwise keep
            // everyone out until their header timeout).
            for _ in 0..EVICT_TRIES {
                if !waiting.evict_oldest() {
                    break;
                }
                gw.metrics.fail("http_waiting_connection_closed");
                // Its slot comes back as soon as its task has run.
                let until = tokio::time::Instant::now() + Duration::from_millis(100);
                loop {
                    taken = budget.take(peer.ip());
                    if taken.as_ref().err() != Some(&Full::Listener)
                        || tokio::time::timeout_at(until, budget.freed.notified())
                            .await
                            .is_err()
                    {
                        break;
                    }
                }
                if taken.as_ref().err() != Some(&Full::Listener) {
                    break;
                }
            }
        }
        let slot = match taken {
            Ok(slot) => slot,
            Err(full) => {
                let _ = stream.try_write(
                    b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
                );
                tracing::debug!(%peer, ?full, "HTTP connection refused");
                gw.metrics.fail(match full {
                    Full::Listener => "http_too_many_connections",
                    Full::Address => "http_too_many_connections_from_address",
                });
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let (id, evict) = waiting.add();
        tokio::spawn(http_connection(
            stream,
            HttpConn {
                peer,
                router: router.clone(),
                header_timeout,
                request_timeout,
                waiting: waiting.clone(),
                id,
                evict,
            },
            stop.clone(),
            slot,
        ));
    }
}

/// A full HTTP listener closes at most this many waiting connections for
/// one new one.
const EVICT_TRIES: usize = 3;

/// The HTTP connections waiting for a request (before their first, or
/// kept alive between two), oldest connection first, each with the signal
/// that closes it.
#[derive(Debug, Default)]
struct Waiting {
    next: std::sync::atomic::AtomicU64,
    conns: Mutex<std::collections::BTreeMap<u64, Arc<Notify>>>,
}

impl Waiting {
    /// A new connection, waiting for its first request.
    fn add(&self) -> (u64, Arc<Notify>) {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        let evict = Arc::new(Notify::new());
        self.set(id, Some(&evict));
        (id, evict)
    }

    /// `Some`: connection `id` waits for a request; `None`: it is busy with
    /// one, or gone.
    fn set(&self, id: u64, evict: Option<&Arc<Notify>>) {
        let mut g = self.conns.lock().unwrap_or_else(|p| p.into_inner());
        match evict {
            Some(e) => g.insert(id, e.clone()),
            None => g.remove(&id),
        };
    }

    /// Closes the oldest waiting connection; false when none waits.
    fn evict_oldest(&self) -> bool {
        let first = self
            .conns
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .pop_first();
        match first {
            Some((_, evict)) => {
                evict.notify_one();
                true
            }
            None => false,
        }
    }
}

/// What one HTTP connection's task needs.
#[derive(Debug)]
struct HttpConn {
    peer: SocketAddr,
    router: axum::Router,
    header_timeout: Duration,
    request_timeout: Duration,
    waiting: Arc<Waiting>,
    id: u64,
    evict: Arc<Notify>,
}

/// Serves one HTTP/1.1 connection. Handlers read the client's address as
/// `ConnectInfo<SocketAddr>`, as with axum's
/// `into_make_service_with_connect_info`.
async fn http_connection(
    stream: tokio::net::TcpStream,
    c: HttpConn,
    mut stop: watch::Receiver<bool>,
    slot: Slot,
) {
    let HttpConn {
        peer,
        router,
        header_timeout,
        request_timeout,
        waiting,
        id,
        evict,
    } = c;
    let (w, e) = (waiting.clone(), evict.clone());
    let service =
        hyper::service::service_fn(move |mut req: hyper::Request<hyper::body::Incoming>| {
            req.extensions_mut()
                .insert(axum::extract::ConnectInfo(peer));
            let mut router = router.clone();
            let answer = tower_service::Service::call(&mut router, req);
            // Busy until the answer is made; then waiting again.
            w.set(id, None);
            let (w, e) = (w.clone(), e.clone());
            async move {
                let _waiting_again = WaitingAgain(&w, id, &e);
                // The handler reads the body: a body trickled in cannot
                // hold the connection longer than this.
                match tokio::time::timeout(request_timeout, answer).await {
                    Ok(r) => r,
                    Err(_) => {
                        tracing::info!(%peer, "HTTP request timed out");
                        Ok(request_timed_out())
                    }
                }
            }
        });
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(header_timeout)
        .keep_alive(true);
    // In a block: the connection, and an answer in hand, are dropped before
    // the connection is taken off the waiting list.
    {
        let conn = builder.serve_connection(hyper_util::rt::TokioIo::new(stream), service);
        tokio::pin!(conn);
        let stopping = async {
            loop {
                if *stop.borrow_and_update() {
                    return;
                }
                if stop.changed().await.is_err() {
                    std::future::pending::<()>().await;
                }
            }
        };
        tokio::select! {
            r = conn.as_mut() => {
                if let Err(e) = r {
                    tracing::debug!(%peer, error = %e, "HTTP connection ended");
                }
            }
            () = evict.notified() => {
                tracing::debug!(%peer, "HTTP connection closed for a new one");
            }
            () = stopping => {
                conn.as_mut().graceful_shutdown();
                let _ = tokio::time::timeout(Duration::from_secs(5), conn.as_mut()).await;
            }
        }
    }
    waiting.set(id, None);
    drop(slot);
}

/// Marks a connection waiting again when its answer is made (or dropped).
struct WaitingAgain<'a>(&'a Waiting, u64, &'a Arc<Notify>);

impl Drop for WaitingAgain<'_> {
    fn drop(&mut self) {
        self.0.set(self.1, Some(self.2));
    }
}

/// 408, and the connection is not kept.
fn request_timed_out() -> axum::response::Response {
    use axum::response::IntoResponse;
    (
        axum::http::StatusCode::REQUEST_TIMEOUT,
        [
            (axum::http::header::CONNECTION, "close"),
            (axum::http::header::CONTENT_TYPE, "text/plain"),
        ],
        "request timed out\n",
    )
        .into_response()
}

async fn metrics(gw: Arc<Gateway>) -> axum::response::Response {
    use axum::response::IntoResponse;
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4",
        )],
        crate::metrics::scrape(&gw).await,
    )
        .into_response()
}

/// Readiness (`/readyz`): 200 `ready`, or 503 with one reason a line when
/// the store does not answer, when every attempt at a next hop or relay has
/// failed for `[health] hop_down`, or when the oldest queued message is
/// older than `[health] max_queue_age`. `/healthz` stays liveness.
async fn readyz(gw: Arc<Gateway>) -> axum::response::Response {
    use axum::http::StatusCode;
    use axum::response::IntoResponse;
    let reasons = not_ready(&gw).await;
    let text = [(axum::http::header::CONTENT_TYPE, "text/plain")];
    if reasons.is_empty() {
        (text, "ready\n").into_response()
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            text,
            reasons.join("\n") + "\n",
        )
            .into_response()
    }
}

/// Why `/readyz` answers 503 (empty: ready); `/metrics` reports it too
/// (`sikkermail_ready`).
pub(crate) async fn not_ready(gw: &Gateway) -> Vec<String> {
    let mut reasons = Vec::new();
    match gw.svc.store().oldest_active(Some(gw.svc.org().id)).await {
        Ok(oldest) => {
            let now = store::now();
            for (direction, at) in oldest {
                let age = (now - at).max(0) as u64;
                if age >= gw.cfg.ready_max_queue_age.as_secs() {
                    reasons.push(format!(
                        "the oldest queued {} message waits for {age} s (limit {} s)",
                        direction.as_str(),
                        gw.cfg.ready_max_queue_age.as_secs()
                    ));
                }
            }
        }
        Err(e) => reasons.push(format!("store unavailable: {e}")),
    }
    {
        let hops = gw.hops.lock().unwrap_or_else(|p| p.into_inner());
        let mut names: Vec<&String> = hops.keys().collect();
        names.sort();
        for name in names {
            let h = &hops[name];
            if let Some(since) = h.failing_since
                && since.elapsed() >= gw.cfg.ready_hop_down
            {
                reasons.push(format!(
                    "{name}: every attempt failed for {} s (last: {})",
                    since.elapsed().as_secs(),
                    h.last_error
                ));
            }
        }
    }
    reasons
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
/// The STARTTLS acceptor of `cfg`: `[tls] cert` and `key` (which must
/// match), or the self-signed pair in `<data_dir>/tls/` (made when
/// missing).
pub fn tls_acceptor(cfg: &Config) -> Result<SslAcceptor> {
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

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse()
            .unwrap_or(IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED))
    }

    #[test]
    fn budget_counts_per_address_and_in_total_and_gives_slots_back() {
        let b = Budget::new(3, 2);
        let a1 = b.take(ip("192.0.2.1"));
        let a2 = b.take(ip("::ffff:192.0.2.1"));
        assert!(a1.is_ok() && a2.is_ok());
        // The same address, IPv4-mapped or not: at its limit.
        assert_eq!(b.take(ip("192.0.2.1")).err(), Some(Full::Address));
        // An IPv6 client counts by its /64.
        let v6 = b.take(ip("2001:db8:1:2::1"));
        assert!(v6.is_ok());
        assert_eq!(b.take(ip("192.0.2.9")).err(), Some(Full::Listener));
        drop(a1);
        assert!(b.take(ip("2001:db8:1:2:ffff::7")).is_ok_and(|s| {
            drop(s);
            true
        }));
        drop((a2, v6));
        let g = b.open.lock().unwrap_or_else(|p| p.into_inner());
        assert_eq!((g.0, g.1.len()), (0, 0), "every slot given back");
    }

    #[test]
    fn the_http_budget_leaves_room_for_smtp() {
        let cfg = Config::embedded_default();
        // (256 + 64) SMTP sessions with a socket and a spool file each,
        // and 256 reserve: 4096 leaves the configured 512.
        assert_eq!(http_budget(&cfg, Some(4096)).ok(), Some(512));
        assert_eq!(http_budget(&cfg, None).ok(), Some(512));
        // 1280: lowered to what is left.
        assert_eq!(http_budget(&cfg, Some(1280)).ok(), Some(1280 - 256 - 640));
        // Not even 16 left: serve refuses to start.
        assert!(http_budget(&cfg, Some(256 + 640 + 15)).is_err());
    }
}
