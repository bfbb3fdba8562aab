//! `serve`'s mailbox watchers: one task per configured folder (with
//! `live = true`) that runs a pass, then waits for news with IDLE (RFC
//! 2177), or polls where the server has no IDLE, and reconnects with
//! backoff when the connection drops. A pass runs under the folder's lease:
//! with two nodes on one PostgreSQL, one of them works on a folder at a
//! time, and a `mailbox decrypt` command waits for the pass in hand.

use std::sync::Arc;
use std::time::Duration;

use async_imap::extensions::idle::IdleResponse;
use tokio::sync::watch;

use super::ImapError;
use super::conn::{self, Conn};
use super::run::{self, LogProgress, Summary, Worker};
use crate::config::MailboxConfig;
use crate::engine::Gateway;

/// Longest IDLE before it is renewed (RFC 2177: at most 29 minutes; NATs
/// and firewalls forget quiet connections sooner).
const IDLE_FOR: Duration = Duration::from_secs(600);
/// Longest wait between reconnection attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(300);

/// The lease holder's name of this `serve` process.
pub fn owner() -> String {
    format!(
        "serve@{}/{}",
        crate::config::this_host(),
        std::process::id()
    )
}

/// Watches `folder` of `mb` until the stop signal.
pub async fn watch(
    gw: Arc<Gateway>,
    mb: MailboxConfig,
    folder: String,
    mut stop: watch::Receiver<bool>,
) {
    let mut backoff = Duration::from_secs(1);
    let mut last_error = String::new();
    loop {
        let r = tokio::select! {
            r = watch_once(&gw, &mb, &folder, &mut backoff) => r,
            _ = stop.changed() => return,
        };
        if let Err(e) = r {
            let msg = e.to_string();
            if msg != last_error {
                tracing::warn!(
                    mailbox = %mb.name,
                    folder = %folder,
                    error = %msg,
                    retry_in_s = backoff.as_secs_f64(),
                    "imap: watcher interrupted; reconnecting"
                );
                last_error = msg;
            }
            gw.metrics.fail("imap_connection");
        }
        tokio::select! {
            _ = tokio::time::sleep(backoff) => {}
            _ = stop.changed() => return,
        }
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}

/// Connects, then passes and waits until something fails.
async fn watch_once(
    gw: &Arc<Gateway>,
    mb: &MailboxConfig,
    folder: &str,
    backoff: &mut Duration,
) -> Result<(), ImapError> {
    let password = run::password(&gw.svc, mb).await?;
    let mut conn = conn::connect(mb, &password).await?;
    tracing::info!(mailbox = %mb.name, folder, idle = conn.caps.idle, "imap: watching");
    let owner = owner();
    loop {
        let worker = Worker {
            svc: &gw.svc,
            crypto: gw.crypto(),
            mb,
            password: password.clone(),
            owner: owner.clone(),
            progress: &LogProgress,
        };
        let mut busy = false;
        match worker.claim(folder, Duration::ZERO).await {
            Ok(()) => {
                let mut summary = Summary::default();
                let r = worker
                    .pass(&mut conn, folder, false, false, &mut summary)
                    .await;
                let _ = gw.svc.mailbox_release(&mb.name, folder, &owner).await;
                r?;
                report(gw, mb, folder, &summary).await;
                // A pass went through: the connection is good again.
                *backoff = Duration::from_secs(1);
            }
            Err(ImapError::Busy(_)) => busy = true,
            Err(e) => return Err(e),
        }
        conn = wait_for_news(conn, mb, busy).await?;
    }
}

/// Waits with IDLE (or a poll interval) for the folder to change.
async fn wait_for_news(conn: Conn, mb: &MailboxConfig, busy: bool) -> Result<Conn, ImapError> {
    if !conn.caps.idle || busy {
        // Another process works on the folder: look again soon.
        let wait = if busy {
            mb.poll_interval.min(Duration::from_secs(10))
        } else {
            mb.poll_interval
        };
        tokio::time::sleep(wait).await;
        let mut conn = conn;
        conn::timed(conn.session.noop()).await?;
        return Ok(conn);
    }
    let Conn { session, caps } = conn;
    let mut idle = session.idle();
    idle.init().await?;
    let (wait, _interrupt) = idle.wait_with_timeout(IDLE_FOR);
    let r = wait.await?;
    if let IdleResponse::NewData(d) = &r
        && let async_imap::imap_proto::Response::Data {
            status: async_imap::imap_proto::Status::Bye,
            ..
        } = d.parsed()
    {
        return Err(ImapError::Lost("the server said BYE".into()));
    }
    let session = tokio::time::timeout(Duration::from_secs(30), idle.done())
        .await
        .map_err(|_| ImapError::Lost("no answer to DONE".into()))??;
    Ok(Conn { session, caps })
}

async fn report(gw: &Arc<Gateway>, mb: &MailboxConfig, folder: &str, s: &Summary) {
    let decrypted = s.decrypted();
    let failed = s.failed();
    gw.metrics
        .imap_decrypted
        .fetch_add(decrypted as u64, std::sync::atomic::Ordering::Relaxed);
    gw.metrics
        .imap_failed
        .fetch_add(failed.len() as u64, std::sync::atomic::Ordering::Relaxed);
    if decrypted == 0 && failed.is_empty() {
        return;
    }
    tracing::info!(mailbox = %mb.name, folder, summary = %s.line(), "imap: pass done");
    for (f, uid, why) in &failed {
        tracing::warn!(mailbox = %mb.name, folder = %f, uid, reason = %why, "imap: not decrypted; left in place");
    }
    if let Err(e) = gw
        .svc
        .mailbox_audit_run(&mb.name, &format!("live {folder}: {}", s.line()))
        .await
    {
        tracing::warn!(error = %e, "imap: audit entry failed");
    }
}
