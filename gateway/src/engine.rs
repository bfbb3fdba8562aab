//! The running gateway's shared state: the service, the cached keys and
//! trust store, the policy, the metrics, and the group-commit writer that
//! makes accepted messages durable before their `250`.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use openssl::x509::X509;
use policies::Policy;
use service::{MailKeys, RecipientCert, Service};
use smime::TrustStore;
use store::queue::{Direction, NewMessage, NewRecipient};
use tokio::sync::{Notify, mpsc, oneshot};

use crate::config::Config;
use crate::metrics::Metrics;
use crate::{Error, Result};

/// Keys and trust anchors, loaded together and replaced together.
#[derive(Debug)]
pub struct Crypto {
    /// The organisation's keys.
    pub keys: MailKeys,
    /// Trust anchors for inbound signatures: the internal root and the
    /// configured ones.
    pub trust: TrustStore,
    /// The policy's inbound trust rules (by sender).
    pub rules: Arc<Policy>,
    /// Fetches (and caches) the revocation data of signers' chains.
    pub revocation: crate::revocation::Fetcher,
    /// When loaded.
    pub loaded: Instant,
}

/// A message handed to the writer, owned.
#[derive(Debug)]
pub struct Incoming {
    /// Inbound or outbound.
    pub direction: Direction,
    /// Reverse path ("" for `<>`).
    pub mail_from: String,
    /// DSN `ENVID`.
    pub envid: Option<String>,
    /// DSN `RET`.
    pub ret: Option<String>,
    /// Who sent it (HELO, address, TLS).
    pub client: String,
    /// The message with its `Received:` field.
    pub body: Vec<u8>,
    /// (address, NOTIFY, ORCPT).
    pub recipients: Vec<(String, Option<String>, Option<String>)>,
}

type Reply = oneshot::Sender<std::result::Result<i64, String>>;

/// The gateway's state, shared by sessions, workers and the HTTP listener.
#[derive(Debug)]
pub struct Gateway {
    /// The configuration.
    pub cfg: Config,
    /// The organisation.
    pub svc: Service,
    /// Counters.
    pub metrics: Metrics,
    /// The policy: outbound decisions, and the inbound trust rules
    /// ([`Crypto::rules`] is the same one); replaced by [`Gateway::reload`].
    policy: RwLock<Arc<Policy>>,
    /// `[inbound] trust_anchors` as last (re)loaded.
    trust_anchors: RwLock<Vec<PathBuf>>,
    /// The STARTTLS certificate and key of both SMTP listeners; replaced
    /// by [`Gateway::reload`] (a session takes the one current when it
    /// connects).
    tls: TlsSlot,
    /// This node's name for queue leases.
    pub owner: String,
    /// KiB of whole messages that may be in memory between the end of their
    /// DATA and their commit ([`ACCEPT_BUDGET_KIB`]); the rest wait in their
    /// spool files.
    pub accept_budget: tokio::sync::Semaphore,
    /// Woken when messages are queued.
    pub wake: Notify,
    /// How each next hop or relay did lately, for `/readyz`.
    pub hops: std::sync::Mutex<std::collections::HashMap<String, HopHealth>>,
    /// The next hop's answers to recipient verification
    /// (`[inbound] verify_recipients`): address -> (taken, when asked).
    pub verified: std::sync::Mutex<std::collections::HashMap<String, (bool, Instant)>>,
    crypto: RwLock<Arc<Crypto>>,
    writer: mpsc::Sender<(Incoming, Reply)>,
    _serve_lock: store::DirLock,
    /// When this process answered 250 for a queue id (for the latency
    /// histogram with sub-second precision; the store keeps seconds).
    accepted_at: std::sync::Mutex<std::collections::HashMap<i64, Instant>>,
}

/// How a next hop or relay did: when it last answered, and since when
/// every attempt failed (None while it answers).
#[derive(Debug, Clone, Default)]
pub struct HopHealth {
    /// When a session with it last got as far as the recipients.
    pub last_ok: Option<Instant>,
    /// The first of the failures since then.
    pub failing_since: Option<Instant>,
    /// The last failure.
    pub last_error: String,
}

/// Most accepted-at times remembered (older messages fall back to seconds).
const ACCEPTED_AT_MAX: usize = 100_000;

/// Messages committed together at most (one transaction, one sync).
const BATCH: usize = 128;
/// Octets committed together at most (a large message goes alone).
const BATCH_BYTES: usize = 64 * 1024 * 1024;
/// KiB of accepted messages in memory at once awaiting their commit.
pub const ACCEPT_BUDGET_KIB: u32 = 256 * 1024;

impl Gateway {
    /// Builds the state and starts the writer task. Call inside a runtime.
    pub async fn new(cfg: Config, svc: Service, policy: Policy) -> Result<Arc<Gateway>> {
        // One `serve` per data directory: it owns the leases of its node.
        let serve_lock = store::DirLock::try_acquire_file(
            &cfg.data_dir.join("serve.lock"),
            store::LockMode::Exclusive,
        )
        .map_err(|e| Error::Start(e.to_string()))?
        .ok_or_else(|| {
            Error::Start(format!(
                "another `sikkermail serve` is running on {}",
                cfg.data_dir.display()
            ))
        })?;
        // The node: its data directory's id and the host (a copied data
        // directory on another host is another node).
        let node = format!("{}@{}", node_id(&cfg.data_dir)?, cfg.hostname);
        // Claims of this node's previous run died with it: take them back
        // now rather than when their leases expire.
        let freed = svc
            .store()
            .release_leases(&format!("{node}/"))
            .await
            .map_err(|e| Error::Start(e.to_string()))?;
        if freed > 0 {
            tracing::warn!(
                messages = freed,
                "took back claims of this node's previous run"
            );
        }
        let policy = Arc::new(policy);
        let crypto = load_crypto(&svc, &cfg, Arc::clone(&policy)).await?;
        let trust_anchors = RwLock::new(cfg.inbound.trust_anchors.clone());
        let (tx, rx) = mpsc::channel(4096);
        let owner = format!("{node}/{}", std::process::id());
        let gw = Arc::new(Gateway {
            cfg,
            svc,
            metrics: Metrics::default(),
            policy: RwLock::new(policy),
            trust_anchors,
            tls: TlsSlot(RwLock::new(None)),
            owner,
            accept_budget: tokio::sync::Semaphore::new(ACCEPT_BUDGET_KIB as usize),
            wake: Notify::new(),
            verified: Default::default(),
            hops: Default::default(),
            crypto: RwLock::new(Arc::new(crypto)),
            writer: tx,
            _serve_lock: serve_lock,
            accepted_at: Default::default(),
        });
        tokio::spawn(writer(Arc::downgrade(&gw), rx));
        Ok(gw)
    }

    /// The keys and trust store now.
    pub fn crypto(&self) -> Arc<Crypto> {
        match self.crypto.read() {
            Ok(c) => c.clone(),
            Err(p) => p.into_inner().clone(),
        }
    }

    /// Reloads keys and trust anchors from the store (after an import, a
    /// renewal, a rotation).
    pub async fn reload_crypto(&self) -> Result<()> {
        let anchors = read_lock(&self.trust_anchors).clone();
        let c = load_crypto_with(&self.svc, &anchors, self.policy()).await?;
        *write_lock(&self.crypto) = Arc::new(c);
        Ok(())
    }

    /// The policy now.
    pub fn policy(&self) -> Arc<Policy> {
        read_lock(&self.policy).clone()
    }

    /// The STARTTLS acceptor now (`None` before the listeners start).
    pub fn tls(&self) -> Option<Arc<openssl::ssl::SslAcceptor>> {
        read_lock(&self.tls.0).clone()
    }

    /// Replaces the STARTTLS acceptor (sessions that connect from now on
    /// present its certificate).
    pub fn set_tls(&self, tls: Arc<openssl::ssl::SslAcceptor>) {
        *write_lock(&self.tls.0) = Some(tls);
    }

    /// What SIGHUP re-reads from `new` (the configuration read again):
    /// the policy file, the trust anchors, the TLS certificate and key.
    /// Each is replaced only when it loads whole; one that does not is
    /// refused with the reason and the one in use is kept. Returns what
    /// was reloaded and the errors.
    pub async fn reload(&self, new: &Config) -> (Vec<String>, Vec<String>) {
        let (mut done, mut errors) = (Vec::new(), Vec::new());
        let old_policy = self.policy();
        let mut policy_done = None;
        match crate::load_policy(new) {
            Ok((p, file)) => {
                *write_lock(&self.policy) = Arc::new(p);
                policy_done = Some(match file {
                    Some(f) => format!("policy {}", f.display()),
                    None => "policy: built-in defaults".into(),
                });
            }
            Err(e) => errors.push(format!("{e}; the policy in use is kept")),
        }
        let old_anchors = read_lock(&self.trust_anchors).clone();
        *write_lock(&self.trust_anchors) = new.inbound.trust_anchors.clone();
        match self.reload_crypto().await {
            Ok(()) => done.push(format!(
                "trust anchors ({} file(s))",
                new.inbound.trust_anchors.len()
            )),
            Err(e) => {
                // The new anchors (or the policy's rules with them) do not
                // load: keep what was in use.
                *write_lock(&self.trust_anchors) = old_anchors;
                errors.push(format!("{e}; the trust anchors in use are kept"));
                if self.reload_crypto().await.is_err() {
                    // Nor does the new policy with the anchors in use.
                    *write_lock(&self.policy) = old_policy;
                    if let Some(p) = policy_done.take() {
                        errors.push(format!(
                            "{p} does not load with the trust anchors in use; the policy in use \
                             is kept"
                        ));
                    }
                }
            }
        }
        done.splice(0..0, policy_done);
        match crate::server::tls_acceptor(new) {
            Ok(a) => {
                self.set_tls(Arc::new(a));
                done.push(match &new.tls {
                    Some((c, _)) => format!("TLS certificate {}", c.display()),
                    None => "TLS certificate: the self-signed one".into(),
                });
            }
            Err(e) => errors.push(format!("{e}; the TLS certificate in use is kept")),
        }
        (done, errors)
    }

    /// Makes `m` durable (committed and synced) and returns its queue id.
    /// Messages arriving together share one transaction. This is the door:
    /// the message is put in its canonical form here (every line end CRLF,
    /// see [`crate::process::headers::canonical`]), so every later stage
    /// sees the lines the next hop will see.
    pub async fn enqueue(&self, mut m: Incoming) -> std::result::Result<i64, String> {
        let started = Instant::now();
        if let std::borrow::Cow::Owned(c) = crate::process::headers::canonical(&m.body) {
            m.body = c;
        }
        let (tx, rx) = oneshot::channel();
        self.writer
            .send((m, tx))
            .await
            .map_err(|_| "the queue writer has stopped".to_string())?;
        let r = rx
            .await
            .map_err(|_| "the queue writer has stopped".to_string())?;
        self.metrics
            .commit_latency
            .observe(started.elapsed().as_secs_f64());
        r
    }

    /// Seconds since message `id` was accepted: precise for messages this
    /// process accepted, else from the stored time (whole seconds).
    pub fn age_of(&self, id: i64, received_at: i64) -> f64 {
        let map = match self.accepted_at.lock() {
            Ok(m) => m,
            Err(p) => p.into_inner(),
        };
        match map.get(&id) {
            Some(t) => t.elapsed().as_secs_f64(),
            None => (store::now() - received_at).max(0) as f64,
        }
    }

    fn remember(&self, ids: &[i64]) {
        let now = Instant::now();
        let mut map = match self.accepted_at.lock() {
            Ok(m) => m,
            Err(p) => p.into_inner(),
        };
        if map.len() + ids.len() <= ACCEPTED_AT_MAX {
            for id in ids {
                map.insert(*id, now);
            }
        }
    }

    /// Forgets the accepted-at time of `id` (its attempt is over).
    pub fn forget(&self, id: i64) {
        let mut map = match self.accepted_at.lock() {
            Ok(m) => m,
            Err(p) => p.into_inner(),
        };
        map.remove(&id);
    }

    /// Certificates for `address` (see [`Service::recipient_certs`]).
    pub async fn certs_for(&self, address: &str) -> Result<Vec<RecipientCert>, String> {
        self.svc
            .recipient_certs(address, store::now())
            .await
            .map_err(|e| format!("recipient certificate lookup failed: {e}"))
    }

    /// Records how an attempt at `hop` went: `Err` when no session got as
    /// far as the recipients.
    pub fn hop_result(&self, hop: &str, r: std::result::Result<(), String>) {
        let mut m = self.hops.lock().unwrap_or_else(|p| p.into_inner());
        let h = m.entry(hop.to_string()).or_default();
        match r {
            Ok(()) => {
                h.last_ok = Some(Instant::now());
                h.failing_since = None;
            }
            Err(e) => {
                h.failing_since.get_or_insert_with(Instant::now);
                h.last_error = e;
            }
        }
    }

    /// Where inbound mail goes when no next hop is configured.
    pub fn maildir_root(&self) -> PathBuf {
        self.cfg.data_dir.join("maildir")
    }
}

async fn writer(gw: std::sync::Weak<Gateway>, mut rx: mpsc::Receiver<(Incoming, Reply)>) {
    while let Some(first) = rx.recv().await {
        let mut bytes = first.0.body.len();
        let mut batch = vec![first];
        while batch.len() < BATCH && bytes < BATCH_BYTES {
            match rx.try_recv() {
                Ok(m) => {
                    bytes += m.0.body.len();
                    batch.push(m);
                }
                Err(_) => break,
            }
        }
        let Some(gw) = gw.upgrade() else {
            return;
        };
        let rcpts: Vec<Vec<NewRecipient<'_>>> = batch
            .iter()
            .map(|(m, _)| {
                m.recipients
                    .iter()
                    .map(|(a, n, o)| NewRecipient {
                        address: a,
                        notify: n.as_deref(),
                        orcpt: o.as_deref(),
                    })
                    .collect()
            })
            .collect();
        let org = gw.svc.org().id;
        let msgs: Vec<NewMessage<'_>> = batch
            .iter()
            .zip(&rcpts)
            .map(|((m, _), r)| NewMessage {
                org,
                direction: m.direction,
                mail_from: &m.mail_from,
                envid: m.envid.as_deref(),
                ret: m.ret.as_deref(),
                client: &m.client,
                body: &m.body,
                recipients: r,
            })
            .collect();
        let now = store::now();
        let result = gw.svc.store().enqueue_batch(&msgs, now).await;
        if result.is_err() && msgs.len() > 1 {
            // One bad message must not fail the others: one at a time.
            let mut ids = Vec::new();
            for m in &msgs {
                ids.push(gw.svc.store().enqueue(m, now).await);
            }
            drop(msgs);
            drop(rcpts);
            for ((m, reply), id) in batch.into_iter().zip(ids) {
                let r = match id {
                    Ok(id) => {
                        gw.remember(&[id]);
                        gw.metrics.received.inc(m.direction == Direction::Inbound);
                        tracing::info!(queue_id = id, direction = m.direction.as_str(), "queued");
                        Ok(id)
                    }
                    Err(e) => {
                        tracing::error!(error = %e, "queue commit failed; answered 451");
                        gw.metrics.fail("queue_commit");
                        Err("queue unavailable, try again later".to_string())
                    }
                };
                let _ = reply.send(r);
            }
            gw.wake.notify_waiters();
            continue;
        }
        drop(msgs);
        drop(rcpts);
        match result {
            Ok(ids) => {
                gw.remember(&ids);
                for ((m, reply), id) in batch.into_iter().zip(ids) {
                    gw.metrics.received.inc(m.direction == Direction::Inbound);
                    tracing::info!(
                        queue_id = id,
                        direction = m.direction.as_str(),
                        from = %m.mail_from,
                        recipients = m.recipients.len(),
                        size = m.body.len(),
                        "queued"
                    );
                    let _ = reply.send(Ok(id));
                }
                gw.wake.notify_waiters();
            }
            Err(e) => {
                tracing::error!(error = %e, messages = batch.len(), "queue commit failed; answered 451");
                gw.metrics.fail("queue_commit");
                for (_, reply) in batch {
                    // The detail is in the log, not in the reply to a peer.
                    let _ = reply.send(Err("queue unavailable, try again later".to_string()));
                }
            }
        }
    }
}

/// Loads the organisation's keys and the trust anchors (the internal root
/// and `[inbound] trust_anchors`), under the data directory's shared lock.
pub async fn load_crypto(svc: &Service, cfg: &Config, rules: Arc<Policy>) -> Result<Crypto> {
    load_crypto_with(svc, &cfg.inbound.trust_anchors, rules).await
}

/// [`load_crypto`] with these trust anchor files (SIGHUP's).
pub async fn load_crypto_with(
    svc: &Service,
    trust_anchors: &[PathBuf],
    rules: Arc<Policy>,
) -> Result<Crypto> {
    // The data directory's lock is taken for this operation only (shared:
    // a rotation waits for it, and it waits for a rotation).
    let lock = {
        let loc = svc.location().clone();
        tokio::task::spawn_blocking(move || loc.lock_shared())
            .await
            .map_err(|e| Error::Start(format!("lock task: {e}")))?
            .map_err(|e| Error::Start(e.to_string()))?
    };
    let keys = svc
        .mail_keys()
        .await
        .map_err(|e| Error::Start(e.to_string()))?;
    drop(lock);
    for s in &keys.skipped {
        tracing::warn!(key = %s.reason, "a key does not open and is left out");
    }
    let mut anchors: Vec<X509> = keys.ca.first().cloned().into_iter().collect();
    let mut pool: Vec<X509> = keys.ca.iter().skip(1).cloned().collect();
    for f in trust_anchors {
        for c in read_certs(f)? {
            let self_signed = c.issued(&c) == openssl::x509::X509VerifyResult::OK;
            if self_signed {
                anchors.push(c);
            } else {
                pool.push(c);
            }
        }
    }
    let trust = TrustStore::new(anchors, pool, Vec::new())
        .map_err(|e| Error::Start(format!("trust anchors: {e}")))?;
    Ok(Crypto {
        keys,
        trust,
        rules,
        revocation: crate::revocation::Fetcher::new(
            Some(svc.store().clone()),
            crate::revocation::Limits::default(),
        ),
        loaded: Instant::now(),
    })
}

/// The STARTTLS acceptor in use (OpenSSL's has no `Debug`).
struct TlsSlot(RwLock<Option<Arc<openssl::ssl::SslAcceptor>>>);

impl std::fmt::Debug for TlsSlot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TlsSlot")
    }
}

/// A read guard, also when a writer panicked (the value is replaced whole,
/// never left half-made).
fn read_lock<T>(l: &RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    l.read().unwrap_or_else(|p| p.into_inner())
}

fn write_lock<T>(l: &RwLock<T>) -> std::sync::RwLockWriteGuard<'_, T> {
    l.write().unwrap_or_else(|p| p.into_inner())
}

/// Every certificate in a PEM file, or in every `.pem`/`.crt`/`.cer` file
/// of a directory.
pub fn read_certs(path: &Path) -> Result<Vec<X509>> {
    let mut files = Vec::new();
    if path.is_dir() {
        let rd = std::fs::read_dir(path)
            .map_err(|e| Error::Start(format!("trust anchors {}: {e}", path.display())))?;
        for e in rd.flatten() {
            let p = e.path();
            let ext = p.extension().and_then(|x| x.to_str()).unwrap_or("");
            if matches!(ext, "pem" | "crt" | "cer") {
                files.push(p);
            }
        }
        files.sort();
    } else {
        files.push(path.to_path_buf());
    }
    let mut out = Vec::new();
    for f in files {
        let bytes = std::fs::read(&f)
            .map_err(|e| Error::Start(format!("trust anchors {}: {e}", f.display())))?;
        let label = f.display().to_string();
        let certs = smime::keyring::certs_from_bytes(&bytes, &label)
            .map_err(|e| Error::Start(format!("trust anchors {label}: {e}")))?;
        out.extend(certs);
    }
    Ok(out)
}

/// This node's name for leases: made once, kept in `<data-dir>/node-id`.
fn node_id(dir: &Path) -> Result<String> {
    let p = dir.join("node-id");
    if let Ok(s) = std::fs::read_to_string(&p) {
        let s = s.trim();
        if !s.is_empty() {
            return Ok(s.to_string());
        }
    }
    let id = format!("{:08x}{:08x}", rand_u32(), rand_u32());
    let tmp = dir.join("node-id.tmp");
    std::fs::write(&tmp, format!("{id}\n"))
        .and_then(|()| std::fs::rename(&tmp, &p))
        .map_err(|e| Error::Start(format!("{}: {e}", p.display())))?;
    Ok(id)
}

/// A random 32-bit number (for node names and unique ids).
pub fn rand_u32() -> u32 {
    let mut b = [0u8; 4];
    if openssl::rand::rand_bytes(&mut b).is_err() {
        return std::process::id();
    }
    u32::from_le_bytes(b)
}

/// Sleeps until woken or `d` passes.
pub async fn nap(wake: &Notify, d: Duration) {
    let _ = tokio::time::timeout(d, wake.notified()).await;
}
