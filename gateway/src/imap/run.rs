//! One run over a mailbox's folders: find the encrypted messages above the
//! checkpoint, decrypt them in parallel, append the copies, archive the
//! originals once the copies are confirmed, move the checkpoint. A dropped
//! connection is reconnected with backoff and the pass starts over from
//! the store's checkpoint and the copies already in the folder, so the
//! result is the same as an unbroken run.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use rayon::prelude::*;
use service::Service;

use super::ImapError;
use super::conn::{self, Append, Appended, Conn, quote, timed};
use super::detect::{self, Kind, ORIGINAL_FIELD, Original};
use crate::config::MailboxConfig;
use crate::engine::Crypto;
use crate::process::headers::prepend_fields;
use crate::process::inbound;

/// How long a folder's lease lasts without renewal.
pub const LEASE_SECS: i64 = 120;

/// What one message came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Decrypted: the copy is in the folder and the original archived.
    Decrypted,
    /// (dry run) Would be decrypted.
    WouldDecrypt,
    /// Left alone, with why (not encrypted, signed only, marked deleted).
    Skipped(String),
    /// Encrypted and not decrypted, with why; the message stays where it is.
    Failed(String),
}

/// The result of a run.
#[derive(Debug, Default, Clone)]
pub struct Summary {
    /// Per folder and UID (under the folder's UIDVALIDITY).
    pub messages: BTreeMap<(String, u32, u32), Outcome>,
    /// Reconnections after a dropped connection.
    pub reconnects: u32,
    /// Of the failed messages, those that did not open (the others, a
    /// refused APPEND, are tried again by the next run).
    pub not_opened: std::collections::BTreeSet<(String, u32, u32)>,
}

impl Summary {
    /// Messages decrypted (or, in a dry run, that would be).
    pub fn decrypted(&self) -> usize {
        self.messages
            .values()
            .filter(|o| matches!(o, Outcome::Decrypted | Outcome::WouldDecrypt))
            .count()
    }

    /// Messages left alone, by reason.
    pub fn skipped(&self) -> BTreeMap<String, usize> {
        let mut m = BTreeMap::new();
        for o in self.messages.values() {
            if let Outcome::Skipped(why) = o {
                *m.entry(why.clone()).or_insert(0) += 1;
            }
        }
        m
    }

    /// Messages that could not be decrypted: (folder, UID, why).
    pub fn failed(&self) -> Vec<(String, u32, String)> {
        self.messages
            .iter()
            .filter_map(|((f, _, uid), o)| match o {
                Outcome::Failed(why) => Some((f.clone(), *uid, why.clone())),
                _ => None,
            })
            .collect()
    }

    /// Messages that did not open in this run: (folder, UID, why).
    pub fn undecryptable(&self) -> Vec<(String, u32, String)> {
        self.messages
            .iter()
            .filter(|(k, _)| self.not_opened.contains(*k))
            .filter_map(|((f, _, uid), o)| match o {
                Outcome::Failed(why) => Some((f.clone(), *uid, why.clone())),
                _ => None,
            })
            .collect()
    }

    /// One line: `decrypted=3 skipped=2 failed=1`.
    pub fn line(&self) -> String {
        format!(
            "decrypted={} skipped={} failed={}",
            self.decrypted(),
            self.skipped().values().sum::<usize>(),
            self.failed().len()
        )
    }
}

/// Told how the run goes (a progress bar, logs).
pub trait Progress: Send + Sync {
    /// A folder's pass starts with `total` encrypted messages to look at.
    fn start(&self, folder: &str, total: u64);
    /// `n` more of them are done.
    fn advance(&self, n: u64);
    /// Something worth saying (reconnecting, waiting for a lease).
    fn note(&self, msg: &str);
}

/// A [`Progress`] that logs.
#[derive(Debug, Default)]
pub struct LogProgress;

impl Progress for LogProgress {
    fn start(&self, folder: &str, total: u64) {
        if total > 0 {
            tracing::info!(folder, messages = total, "imap: decrypting");
        }
    }
    fn advance(&self, _n: u64) {}
    fn note(&self, msg: &str) {
        tracing::warn!("imap: {msg}");
    }
}

/// How to run.
#[derive(Debug, Clone)]
pub struct RunOptions {
    /// Folders (empty: the configured ones).
    pub folders: Vec<String>,
    /// Report without changing anything (no APPEND, MOVE or checkpoint).
    pub dry_run: bool,
    /// Look at every message again, not only those above the checkpoint
    /// (after importing a key that opens what failed before).
    pub rescan: bool,
    /// How long to keep reconnecting when the connection drops.
    pub reconnect_for: Duration,
    /// How long to wait for another process's lease on a folder.
    pub wait_for_lease: Duration,
}

impl Default for RunOptions {
    fn default() -> Self {
        RunOptions {
            folders: Vec::new(),
            dry_run: false,
            rescan: false,
            reconnect_for: Duration::from_secs(300),
            wait_for_lease: Duration::from_secs(LEASE_SECS as u64 + 10),
        }
    }
}

/// A mailbox to work on, with what working on it needs.
pub struct Worker<'a> {
    /// The organisation.
    pub svc: &'a Service,
    /// Keys and trust anchors.
    pub crypto: Arc<Crypto>,
    /// The mailbox's configuration.
    pub mb: &'a MailboxConfig,
    /// The IMAP password.
    pub password: String,
    /// This process's name for leases (`cli@host/pid`).
    pub owner: String,
    /// Told how it goes.
    pub progress: &'a dyn Progress,
}

impl std::fmt::Debug for Worker<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Worker")
            .field("mailbox", &self.mb.name)
            .field("owner", &self.owner)
            .finish_non_exhaustive()
    }
}

/// The password of a mailbox: from its `password_env` variable, else the
/// one sealed in the store.
pub async fn password(svc: &Service, mb: &MailboxConfig) -> Result<String, ImapError> {
    if let Some(var) = &mb.password_env {
        return std::env::var(var).map_err(|_| {
            ImapError::Config(format!(
                "[mailbox.{}] password_env names {var}, which is not set",
                mb.name
            ))
        });
    }
    svc.mailbox_password(&mb.name).await?.ok_or_else(|| {
        ImapError::Config(format!(
            "mailbox {} has no password: set [mailbox.{}] password_env, or store one with `sikkermail mailbox password --mailbox {}`",
            mb.name, mb.name, mb.name
        ))
    })
}

impl Worker<'_> {
    /// Runs over the folders: each under its lease, reconnecting when the
    /// connection drops. The summary covers every folder done; an error
    /// ends the run (what was done before it stays done).
    pub async fn run(&self, opts: &RunOptions, summary: &mut Summary) -> Result<(), ImapError> {
        let folders = if opts.folders.is_empty() {
            self.mb.folders.clone()
        } else {
            opts.folders.clone()
        };
        let mut conn: Option<Conn> = None;
        for folder in &folders {
            if !opts.dry_run {
                self.claim(folder, opts.wait_for_lease).await?;
            }
            let r = self
                .folder_with_retries(folder, opts, &mut conn, summary)
                .await;
            if !opts.dry_run {
                let _ = self
                    .svc
                    .mailbox_release(&self.mb.name, folder, &self.owner)
                    .await;
            }
            r?;
        }
        if let Some(mut c) = conn {
            let _ = tokio::time::timeout(Duration::from_secs(5), c.session.logout()).await;
        }
        Ok(())
    }

    /// Takes a folder's lease, waiting up to `wait` for another process's
    /// to end; a lease of a process on this host that is gone is taken
    /// over at once.
    pub async fn claim(&self, folder: &str, wait: Duration) -> Result<(), ImapError> {
        let started = Instant::now();
        let mut said = false;
        loop {
            match self
                .svc
                .mailbox_claim(&self.mb.name, folder, &self.owner, LEASE_SECS)
                .await
            {
                Ok(()) => return Ok(()),
                Err(service::Error::Conflict(msg)) => {
                    let holder = self.svc.mailbox_folder(&self.mb.name, folder).await?;
                    if let Some(h) = &holder.lease_owner
                        && holder_is_gone(h)
                    {
                        if self
                            .svc
                            .mailbox_take_over(&self.mb.name, folder, h, &self.owner, LEASE_SECS)
                            .await?
                        {
                            self.progress
                                .note(&format!("took over the lease of {h}, which is gone"));
                            return Ok(());
                        }
                        continue;
                    }
                    if started.elapsed() >= wait {
                        return Err(ImapError::Busy(msg));
                    }
                    if !said {
                        self.progress.note(&format!("{msg}; waiting"));
                        said = true;
                    }
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
                Err(e) => return Err(e.into()),
            }
        }
    }

    async fn folder_with_retries(
        &self,
        folder: &str,
        opts: &RunOptions,
        conn: &mut Option<Conn>,
        summary: &mut Summary,
    ) -> Result<(), ImapError> {
        let mut backoff = Duration::from_millis(250);
        let mut failing_since: Option<Instant> = None;
        let mut rescan = opts.rescan;
        loop {
            let before = summary.messages.len();
            let r = async {
                if conn.is_none() {
                    *conn = Some(conn::connect(self.mb, &self.password).await?);
                }
                let c = conn
                    .as_mut()
                    .ok_or_else(|| ImapError::Lost("no connection".into()))?;
                self.pass(c, folder, opts.dry_run, rescan, summary).await
            }
            .await;
            match r {
                Ok(()) => return Ok(()),
                Err(e) if e.retryable() => {
                    *conn = None;
                    // The rescan was started; what it finished is checkpointed.
                    if summary.messages.len() > before {
                        rescan = false;
                        failing_since = None;
                        backoff = Duration::from_millis(250);
                    }
                    let since = *failing_since.get_or_insert_with(Instant::now);
                    if since.elapsed() >= opts.reconnect_for {
                        return Err(e);
                    }
                    summary.reconnects += 1;
                    self.progress
                        .note(&format!("{e}; reconnecting in {} ms", backoff.as_millis()));
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(10));
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// One pass over `folder` on `c`.
    pub async fn pass(
        &self,
        c: &mut Conn,
        folder: &str,
        dry_run: bool,
        rescan: bool,
        summary: &mut Summary,
    ) -> Result<(), ImapError> {
        let enc = detect::mutf7(folder);
        let archive = detect::mutf7(&self.mb.archive);
        quote(&enc)?;
        if !dry_run {
            conn::ensure_folder(c, &archive).await?;
        }
        let mbx = match dry_run {
            true => timed(c.session.examine(&enc)).await,
            false => timed(c.session.select(&enc)).await,
        }
        .map_err(|e| match e {
            ImapError::Protocol(m) => {
                ImapError::Protocol(format!("cannot open folder {folder:?}: {m}"))
            }
            other => other,
        })?;
        let uv = mbx.uid_validity.unwrap_or(0);
        let state = self.svc.mailbox_folder(&self.mb.name, folder).await?;
        let mut last = if state.uidvalidity == i64::from(uv) && !rescan {
            u32::try_from(state.last_uid).unwrap_or(0)
        } else {
            0
        };
        if mbx.exists == 0 {
            self.progress.start(folder, 0);
            self.checkpoint(folder, uv, last, dry_run).await?;
            if !dry_run {
                self.note_undecryptable(c, folder, uv, &[], summary).await?;
            }
            return Ok(());
        }
        // Copies made by earlier runs (an interrupted one's included).
        let (copies, copy_uids) = self.copies(c, last).await?;
        let copies: HashMap<u32, (u32, Original)> = copies
            .into_iter()
            .filter(|(_, (_, o))| o.uidvalidity == uv)
            .collect();
        // What is above the checkpoint.
        let mut metas = Vec::new();
        {
            let mut s = timed(c.session.uid_fetch(
                format!("{}:*", last + 1),
                "(UID FLAGS INTERNALDATE RFC822.SIZE BODYSTRUCTURE)",
            ))
            .await?;
            while let Some(f) = tokio::time::timeout(conn::COMMAND_TIMEOUT, s.next())
                .await
                .map_err(|_| ImapError::Lost("FETCH timed out".into()))?
            {
                let f = f?;
                let Some(uid) = f.uid else { continue };
                // `n:*` names the last message even when its UID is below n.
                if uid <= last {
                    continue;
                }
                let kind = f.bodystructure().map(detect::kind).unwrap_or(Kind::Plain);
                let deleted = detect::is_deleted(f.flags());
                let flags = detect::flag_list(f.flags());
                let date = f
                    .internal_date()
                    .map(|d| detect::internal_date(d.timestamp(), d.offset().local_minus_utc()))
                    .unwrap_or_default();
                metas.push(Meta {
                    uid,
                    size: u64::from(f.size.unwrap_or(0)),
                    kind,
                    deleted,
                    flags,
                    date,
                });
            }
        }
        metas.sort_by_key(|m| m.uid);
        let max_seen = metas.last().map(|m| m.uid).unwrap_or(last);
        let mut todo = Vec::new();
        for m in metas {
            if copy_uids.contains(&m.uid) {
                continue; // one of ours
            }
            let key = (folder.to_string(), uv, m.uid);
            match (m.kind, m.deleted) {
                (_, true) => {
                    summary
                        .messages
                        .insert(key, Outcome::Skipped("marked deleted".into()));
                }
                (Kind::Encrypted, false) => todo.push(m),
                (Kind::Signed, false) => {
                    summary
                        .messages
                        .insert(key, Outcome::Skipped("signed only".into()));
                }
                (Kind::Plain, false) => {
                    summary
                        .messages
                        .insert(key, Outcome::Skipped("not encrypted".into()));
                }
            }
        }
        self.progress.start(folder, todo.len() as u64);
        // Decryption of one chunk overlaps the IMAP work of the one before
        // (APPEND, MOVE, checkpoint): the cores and the server work at once.
        let p = PassCtx {
            folder,
            uv,
            enc: &enc,
            archive: &archive,
            dry_run,
            undecryptable: std::sync::Mutex::new(Vec::new()),
        };
        let mut hold: Option<u32> = None; // a refused APPEND: the checkpoint stays below it
        let mut pending: Option<(&[Meta], Decrypting)> = None;
        for chunk in chunks_of(&todo, self.mb.batch.max(1), CHUNK_BYTES) {
            if !dry_run {
                self.svc
                    .mailbox_claim(&self.mb.name, folder, &self.owner, LEASE_SECS)
                    .await?;
            }
            let uids: Vec<u32> = chunk.iter().map(|m| m.uid).collect();
            let mut bodies = fetch_bodies(c, &uids).await?;
            let crypto = Arc::clone(&self.crypto);
            let jobs: Vec<(u32, Vec<u8>, Option<Original>)> = chunk
                .iter()
                .filter_map(|m| {
                    let body = bodies.remove(&m.uid)?;
                    Some((m.uid, body, copies.get(&m.uid).map(|(_, o)| o.clone())))
                })
                .collect();
            // Decrypt in parallel on every core, off the async workers.
            let decrypting = tokio::task::spawn_blocking(move || {
                jobs.into_par_iter()
                    .map(|(uid, body, copy)| (uid, work(&body, uv, uid, copy.as_ref(), &crypto)))
                    .collect::<Vec<_>>()
            });
            if let Some((prev, d)) = pending.take() {
                self.finish(c, &p, prev, d, &mut hold, &mut last, summary)
                    .await?;
            }
            pending = Some((chunk, decrypting));
        }
        if let Some((prev, d)) = pending.take() {
            self.finish(c, &p, prev, d, &mut hold, &mut last, summary)
                .await?;
        }
        if hold.is_none() {
            self.checkpoint(folder, uv, max_seen, dry_run).await?;
        }
        if !dry_run {
            let noted = std::mem::take(&mut *lock(&p.undecryptable));
            self.note_undecryptable(c, folder, uv, &noted, summary)
                .await?;
        }
        Ok(())
    }

    /// Keeps the store's list of the folder's undecryptable messages true
    /// (the checkpoint passes them, so a later run would not see them
    /// again): adds `noted`, drops what this run decrypted, what is no
    /// longer in the folder (expunged, moved, marked deleted) and what
    /// belongs to another UIDVALIDITY. The folder is selected.
    async fn note_undecryptable(
        &self,
        c: &mut Conn,
        folder: &str,
        uv: u32,
        noted: &[(u32, String)],
        summary: &Summary,
    ) -> Result<(), ImapError> {
        let store = self.svc.store();
        let org = self.svc.org().id;
        let st = |e: store::StoreError| ImapError::Store(e.to_string());
        let now = store::now();
        for (uid, why) in noted {
            store
                .mailbox_undecryptable_add(
                    org,
                    &self.mb.name,
                    folder,
                    i64::from(uv),
                    i64::from(*uid),
                    why,
                    now,
                )
                .await
                .map_err(st)?;
        }
        let known: Vec<u32> = store
            .mailbox_undecryptable(org, &self.mb.name)
            .await
            .map_err(st)?
            .into_iter()
            .filter(|u| u.folder == folder && u.uidvalidity == i64::from(uv))
            .filter_map(|u| u32::try_from(u.uid).ok())
            .collect();
        let mut gone: Vec<i64> = Vec::new();
        let mut present: HashSet<u32> = HashSet::new();
        for part in known.chunks(500) {
            let found = timed(
                c.session
                    .uid_search(format!("UID {} UNDELETED", detect::uid_set(part))),
            )
            .await?;
            present.extend(found);
        }
        for uid in &known {
            let decrypted = matches!(
                summary.messages.get(&(folder.to_string(), uv, *uid)),
                Some(Outcome::Decrypted)
            );
            if decrypted || !present.contains(uid) {
                gone.push(i64::from(*uid));
            }
        }
        store
            .mailbox_undecryptable_remove(org, &self.mb.name, folder, i64::from(uv), &gone)
            .await
            .map_err(st)?;
        Ok(())
    }

    /// Appends the copies of one decrypted chunk, archives the originals
    /// whose copies are confirmed, and moves the checkpoint.
    #[allow(clippy::too_many_arguments)]
    async fn finish(
        &self,
        c: &mut Conn,
        p: &PassCtx<'_>,
        chunk: &[Meta],
        decrypting: Decrypting,
        hold: &mut Option<u32>,
        last: &mut u32,
        summary: &mut Summary,
    ) -> Result<(), ImapError> {
        let (folder, uv) = (p.folder, p.uv);
        let results = decrypting
            .await
            .map_err(|e| ImapError::Store(format!("decryption task: {e}")))?;
        let mut results: HashMap<u32, Work> = results.into_iter().collect();
        let mut appends: Vec<(u32, Vec<u8>)> = Vec::new();
        let mut to_move: Vec<u32> = Vec::new();
        for m in chunk {
            let key = (folder.to_string(), uv, m.uid);
            match results.remove(&m.uid) {
                None => {
                    summary
                        .messages
                        .insert(key, Outcome::Skipped("expunged by another client".into()));
                }
                Some(Work::Copy { copy, harvest }) => {
                    for (addr, cert, caps) in harvest {
                        if let Err(e) = self.svc.harvest(&addr, &cert, &caps).await {
                            tracing::warn!(error = %e, "imap: harvest failed");
                        }
                    }
                    appends.push((m.uid, copy));
                }
                Some(Work::Archive) => to_move.push(m.uid),
                Some(Work::Leave(o)) => {
                    if let Outcome::Failed(why) = &o {
                        lock(&p.undecryptable).push((m.uid, why.clone()));
                        summary.not_opened.insert(key.clone());
                    }
                    summary.messages.insert(key, o);
                }
            }
        }
        if p.dry_run {
            for uid in appends.iter().map(|(u, _)| u).chain(&to_move) {
                summary
                    .messages
                    .insert((folder.to_string(), uv, *uid), Outcome::WouldDecrypt);
            }
            self.progress.advance(chunk.len() as u64);
            return Ok(());
        }
        let meta: HashMap<u32, &Meta> = chunk.iter().map(|m| (m.uid, m)).collect();
        let batch: Vec<Append<'_>> = appends
            .iter()
            .map(|(uid, body)| Append {
                body,
                flags: meta.get(uid).map(|m| m.flags.clone()).unwrap_or_default(),
                internal_date: meta.get(uid).map(|m| m.date.clone()).unwrap_or_default(),
            })
            .collect();
        let answers = if batch.is_empty() {
            Vec::new()
        } else {
            conn::append_all(c, p.enc, &batch).await?
        };
        for ((uid, _), a) in appends.iter().zip(answers) {
            match a {
                Appended::Ok(Some(_)) => to_move.push(*uid),
                Appended::Ok(None) => {
                    // No APPENDUID: confirm by finding the copy.
                    if self.copy_present(c, uv, *uid).await? {
                        to_move.push(*uid);
                    } else {
                        *hold = Some(hold.map_or(*uid, |h| h.min(*uid)));
                        summary.messages.insert(
                            (folder.to_string(), uv, *uid),
                            Outcome::Failed("the decrypted copy was not found after APPEND".into()),
                        );
                    }
                }
                Appended::Refused(why) => {
                    *hold = Some(hold.map_or(*uid, |h| h.min(*uid)));
                    summary.messages.insert(
                        (folder.to_string(), uv, *uid),
                        Outcome::Failed(format!("APPEND of the decrypted copy refused: {why}")),
                    );
                }
            }
        }
        if !to_move.is_empty() {
            conn::move_uids(c, &detect::uid_set(&to_move), p.archive).await?;
            for uid in &to_move {
                summary
                    .messages
                    .insert((folder.to_string(), uv, *uid), Outcome::Decrypted);
            }
        }
        // After a refused APPEND the checkpoint stays where it is, so the
        // next run tries that message again.
        if hold.is_none() {
            *last = chunk.last().map(|m| m.uid).unwrap_or(*last);
            self.checkpoint(folder, uv, *last, false).await?;
        }
        self.progress.advance(chunk.len() as u64);
        Ok(())
    }

    async fn checkpoint(
        &self,
        folder: &str,
        uv: u32,
        last: u32,
        dry_run: bool,
    ) -> Result<(), ImapError> {
        if dry_run {
            return Ok(());
        }
        self.svc
            .mailbox_checkpoint(&self.mb.name, folder, &self.owner, uv, last)
            .await?;
        Ok(())
    }

    /// Decrypted copies in the selected folder above `last`: original UID
    /// -> (copy UID, what the copy says of its original), and the UIDs of
    /// every message carrying the field (never candidates themselves).
    async fn copies(
        &self,
        c: &mut Conn,
        last: u32,
    ) -> Result<(HashMap<u32, (u32, Original)>, HashSet<u32>), ImapError> {
        let found = timed(
            c.session
                .uid_search(format!("UID {}:* HEADER {ORIGINAL_FIELD} \"\"", last + 1)),
        )
        .await?;
        let mut uids: Vec<u32> = found.into_iter().filter(|u| *u > last).collect();
        uids.sort_unstable();
        let mut out = HashMap::new();
        let all: HashSet<u32> = uids.iter().copied().collect();
        for part in uids.chunks(500) {
            let mut s = timed(c.session.uid_fetch(
                detect::uid_set(part),
                format!("(UID BODY.PEEK[HEADER.FIELDS ({ORIGINAL_FIELD})])"),
            ))
            .await?;
            while let Some(f) = tokio::time::timeout(conn::COMMAND_TIMEOUT, s.next())
                .await
                .map_err(|_| ImapError::Lost("FETCH timed out".into()))?
            {
                let f = f?;
                let (Some(uid), Some(h)) = (f.uid, f.header()) else {
                    continue;
                };
                let v = crate::process::headers::field(h, ORIGINAL_FIELD);
                if let Some(o) = v.as_deref().and_then(Original::parse) {
                    out.insert(o.uid, (uid, o));
                }
            }
        }
        Ok((out, all))
    }

    /// True when the copy of `uid` is in the selected folder (for servers
    /// without UIDPLUS).
    async fn copy_present(&self, c: &mut Conn, uv: u32, uid: u32) -> Result<bool, ImapError> {
        timed(c.session.noop()).await?;
        let key = Original {
            uidvalidity: uv,
            uid,
            sha256: String::new(),
        }
        .search_key();
        let found = timed(
            c.session
                .uid_search(format!("HEADER {ORIGINAL_FIELD} {}", quote(&key)?)),
        )
        .await?;
        if found.is_empty() {
            return Ok(false);
        }
        // HEADER matches substrings: confirm by reading the field.
        let (copies, _) = self.copies(c, 0).await?;
        Ok(copies.get(&uid).is_some_and(|(_, o)| o.uidvalidity == uv))
    }
}

/// A chunk's decryption under way.
type Decrypting = tokio::task::JoinHandle<Vec<(u32, Work)>>;

/// Most bytes fetched (and held) for one chunk, whatever `batch` says.
const CHUNK_BYTES: u64 = 64 * 1024 * 1024;

/// What a pass over one folder works with.
struct PassCtx<'a> {
    folder: &'a str,
    uv: u32,
    /// The folder's name as sent (modified UTF-7).
    enc: &'a str,
    /// The archive folder's name as sent.
    archive: &'a str,
    dry_run: bool,
    /// Encrypted messages left in the folder because they did not open:
    /// (UID, why), for the store's list.
    undecryptable: std::sync::Mutex<Vec<(u32, String)>>,
}

fn lock<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Consecutive runs of at most `n` messages and `bytes` bytes (a message
/// larger than `bytes` makes a chunk of its own).
fn chunks_of(metas: &[Meta], n: usize, bytes: u64) -> Vec<&[Meta]> {
    let mut out = Vec::new();
    let mut start = 0;
    let mut size = 0u64;
    for (i, m) in metas.iter().enumerate() {
        if i > start && (i - start >= n || size + m.size > bytes) {
            out.push(&metas[start..i]);
            start = i;
            size = 0;
        }
        size += m.size;
    }
    if start < metas.len() {
        out.push(&metas[start..]);
    }
    out
}

/// What the worker knows of a message before fetching it.
#[derive(Debug)]
struct Meta {
    uid: u32,
    size: u64,
    kind: Kind,
    deleted: bool,
    flags: String,
    date: String,
}

/// What to do with one fetched message.
enum Work {
    /// Append this copy, then archive the original.
    Copy {
        copy: Vec<u8>,
        harvest: Vec<(String, openssl::x509::X509, Vec<String>)>,
    },
    /// The copy is there already (an interrupted run): archive the original.
    Archive,
    /// Leave the message where it is.
    Leave(Outcome),
}

fn work(raw: &[u8], uv: u32, uid: u32, copy: Option<&Original>, crypto: &Crypto) -> Work {
    let me = Original::of(raw, uv, uid);
    if let Some(c) = copy {
        return if c.sha256 == me.sha256 {
            Work::Archive
        } else {
            Work::Leave(Outcome::Failed(
                "a message in the folder claims to be its decrypted copy but was made from other bytes"
                    .into(),
            ))
        };
    }
    let r = inbound::process(
        raw,
        &crypto.keys,
        &crypto.trust,
        &crypto.rules,
        Some(&crypto.revocation),
    );
    if r.decrypted {
        let copy = prepend_fields(&r.message, &[(ORIGINAL_FIELD, me.value())]);
        return Work::Copy {
            copy,
            harvest: r.harvest,
        };
    }
    match r.undecryptable {
        Some(why) => Work::Leave(Outcome::Failed(why)),
        None if r.signature == "none" => Work::Leave(Outcome::Skipped("not encrypted".into())),
        None => Work::Leave(Outcome::Skipped("signed only".into())),
    }
}

/// The full bytes of `uids` (BODY.PEEK: the `\Seen` flag is left alone).
async fn fetch_bodies(c: &mut Conn, uids: &[u32]) -> Result<HashMap<u32, Vec<u8>>, ImapError> {
    let mut out = HashMap::new();
    let mut s = timed(
        c.session
            .uid_fetch(detect::uid_set(uids), "(UID BODY.PEEK[])"),
    )
    .await?;
    while let Some(f) = tokio::time::timeout(conn::COMMAND_TIMEOUT, s.next())
        .await
        .map_err(|_| ImapError::Lost("FETCH timed out".into()))?
    {
        let f = f?;
        if let (Some(uid), Some(body)) = (f.uid, f.body()) {
            out.insert(uid, body.to_vec());
        }
    }
    Ok(out)
}

/// True when a lease holder named `name@host/pid` runs on this host and
/// its process is gone (killed): its lease can be taken over at once.
pub fn holder_is_gone(holder: &str) -> bool {
    let Some((who, pid)) = holder.rsplit_once('/') else {
        return false;
    };
    let Some((_, host)) = who.split_once('@') else {
        return false;
    };
    if host != crate::config::this_host() {
        return false;
    }
    let Ok(pid) = pid.parse::<i32>() else {
        return false;
    };
    if pid <= 0 || pid == std::process::id() as i32 {
        return false;
    }
    // SAFETY: kill with signal 0 only checks whether the process exists.
    let r = unsafe { libc::kill(pid, 0) };
    r != 0 && std::io::Error::last_os_error().raw_os_error() == Some(libc::ESRCH)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn metas(sizes: &[u64]) -> Vec<Meta> {
        sizes
            .iter()
            .enumerate()
            .map(|(i, &size)| Meta {
                uid: i as u32 + 1,
                size,
                kind: Kind::Encrypted,
                deleted: false,
                flags: String::new(),
                date: String::new(),
            })
            .collect()
    }

    fn uids(chunks: &[&[Meta]]) -> Vec<Vec<u32>> {
        chunks
            .iter()
            .map(|c| c.iter().map(|m| m.uid).collect())
            .collect()
    }

    #[test]
    fn chunks_keep_order_and_respect_count_and_bytes() {
        let m = metas(&[10; 5]);
        assert_eq!(
            uids(&chunks_of(&m, 2, 1000)),
            [vec![1, 2], vec![3, 4], vec![5]]
        );
        // Bytes cut first: 10 + 10 + 10 > 25.
        assert_eq!(
            uids(&chunks_of(&m, 100, 25)),
            [vec![1, 2], vec![3, 4], vec![5]]
        );
        // A message larger than the limit makes a chunk of its own.
        let m = metas(&[5, 500, 5]);
        assert_eq!(uids(&chunks_of(&m, 100, 100)), [vec![1], vec![2], vec![3]]);
        assert!(chunks_of(&[], 10, 10).is_empty());
    }
}
