//! Delivery workers: claim queued messages with a lease, process them
//! (inbound: decrypt and verify; outbound: sign and encrypt as the policy
//! says), deliver, and record each recipient's result. Failures and expiry
//! bounce to the sender with a DSN, queued in the same transaction as the
//! result, so a crash neither loses nor doubles it.

use std::sync::Arc;
use std::time::Duration;

use store::queue::{ClaimedMessage, Direction, NewMessage, NewRecipient, Outcome, RcptResult};
use tokio::sync::watch;

use crate::deliver::dsn::{self, Action, Dsn, DsnRecipient};
use crate::deliver::maildir;
use crate::deliver::smtp_client::{self, DeliveryError, NextHop, RcptOutcome, Recipient};
use crate::engine::{Gateway, nap};
use crate::process::{inbound, outbound};

/// How long a claim is held before another worker may take the message.
const LEASE_SECS: i64 = 600;

/// Runs one worker until `stop` turns true. The message being worked on
/// is finished first.
pub async fn run(gw: Arc<Gateway>, index: usize, mut stop: watch::Receiver<bool>) {
    // One lease owner per worker: a worker's results never count for
    // another's claim.
    let owner = format!("{}/{index}", gw.owner);
    loop {
        if *stop.borrow() {
            return;
        }
        let claimed = {
            let store = gw.svc.store();
            match store.begin().await {
                Ok(mut tx) => match tx.claim(&owner, store::now(), LEASE_SECS, 1).await {
                    Ok(c) => match tx.commit().await {
                        Ok(()) => c,
                        Err(e) => {
                            tracing::warn!(error = %e, "claim commit failed");
                            Vec::new()
                        }
                    },
                    Err(e) => {
                        tracing::warn!(error = %e, "claim failed");
                        Vec::new()
                    }
                },
                Err(e) => {
                    tracing::warn!(error = %e, "queue unavailable");
                    Vec::new()
                }
            }
        };
        if claimed.is_empty() {
            tokio::select! {
                _ = nap(&gw.wake, Duration::from_secs(1)) => {}
                _ = stop.changed() => {}
            }
            continue;
        }
        for m in claimed {
            // The lease is renewed while the attempt runs (a slow next hop
            // may take longer than one lease).
            let renew = tokio::spawn(renew_lease(gw.clone(), m.id, owner.clone()));
            work(&gw, m, &owner).await;
            renew.abort();
        }
    }
}

/// One attempt at one message.
async fn renew_lease(gw: Arc<Gateway>, id: i64, owner: String) {
    loop {
        tokio::time::sleep(Duration::from_secs((LEASE_SECS / 3) as u64)).await;
        let until = store::now() + LEASE_SECS;
        match gw.svc.store().renew_lease(id, &owner, until).await {
            Ok(true) => {}
            Ok(false) => {
                tracing::warn!(queue_id = id, "lease lost during the attempt");
                return;
            }
            Err(e) => tracing::warn!(queue_id = id, error = %e, "renewing the lease failed"),
        }
    }
}

async fn work(gw: &Arc<Gateway>, mut m: ClaimedMessage, owner: &str) {
    // Shared with the blocking threads that process it, never copied.
    let body = Arc::new(std::mem::take(&mut m.body));
    let now = store::now();
    let expired = now - m.received_at > gw.cfg.max_age.as_secs() as i64;
    let attempt = if expired {
        Attempt::of(
            m.recipients
                .iter()
                .map(|r| RcptResult {
                    idx: r.idx,
                    outcome: Outcome::Failed(format!(
                        "4.4.7 expired after {} in the queue; last error: {}",
                        human(gw.cfg.max_age),
                        r.last_error.as_deref().unwrap_or("none")
                    )),
                })
                .collect(),
        )
    } else {
        match m.direction {
            Direction::Inbound => inbound_attempt(gw, &m, &body).await,
            Direction::Outbound => outbound_attempt(gw, &m, &body).await,
        }
    };
    finish(gw, &m, &body, attempt, owner).await;
    gw.forget(m.id);
}

/// What one attempt came to: each recipient's outcome, and the hops that
/// took mail (recorded with the outcomes, in one transaction).
#[derive(Debug, Default)]
struct Attempt {
    results: Vec<RcptResult>,
    /// The hops that took mail in this attempt (`host:port`, `maildir`).
    hops: Vec<String>,
}

impl Attempt {
    fn of(results: Vec<RcptResult>) -> Attempt {
        Attempt {
            results,
            ..Attempt::default()
        }
    }

    fn took(&mut self, hop: String) {
        if !self.hops.contains(&hop) {
            self.hops.push(hop);
        }
    }
}

async fn inbound_attempt(gw: &Arc<Gateway>, m: &ClaimedMessage, body: &Arc<Vec<u8>>) -> Attempt {
    let run = |crypto: Arc<crate::engine::Crypto>| {
        let body = Arc::clone(body);
        tokio::task::spawn_blocking(move || {
            inbound::process(
                &body,
                &crypto.keys,
                &crypto.trust,
                &crypto.rules,
                Some(&crypto.revocation),
            )
        })
    };
    let crypto = gw.crypto();
    let mut processed = match run(crypto.clone()).await {
        Ok(p) => p,
        Err(e) => return Attempt::of(defer_all(m, &format!("processing failed: {e}"))),
    };
    // A key imported since the keys were loaded: load them again, once.
    if processed.undecryptable.is_some() && crypto.loaded.elapsed() > Duration::from_secs(5) {
        match gw.reload_crypto().await {
            Ok(()) => match run(gw.crypto()).await {
                Ok(p) => processed = p,
                Err(e) => return Attempt::of(defer_all(m, &format!("processing failed: {e}"))),
            },
            Err(e) => tracing::warn!(error = %e, "reloading keys failed"),
        }
    }
    // Every attempt decrypts again; the message counts once, at its first
    // attempt (a first attempt that is never recorded, its worker gone or
    // its lease lost, is counted again by the one that takes over).
    if m.attempts == 0 {
        if processed.decrypted {
            gw.metrics.count_decryption(None);
        } else if processed.undecryptable.is_some() {
            gw.metrics
                .count_decryption(Some(processed.undecryptable_reason.unwrap_or("other")));
        }
    }
    let mut attempt = Attempt::default();
    for (addr, cert, caps) in &processed.harvest {
        match gw.svc.harvest(addr, cert, caps).await {
            Ok(_) => {
                gw.metrics
                    .harvested
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
            Err(e) => tracing::warn!(queue_id = m.id, error = %e, "harvest failed"),
        }
    }
    let results = &mut attempt.results;
    let mut deliver_to = Vec::new();
    if let Some(why) = &processed.undecryptable {
        for r in &m.recipients {
            if !m.released
                && gw.policy().undecryptable_for(&r.address) == policies::Undecryptable::Quarantine
            {
                results.push(RcptResult {
                    idx: r.idx,
                    outcome: Outcome::Quarantined(format!("not decrypted: {why}")),
                });
            } else {
                deliver_to.push(r);
            }
        }
    } else {
        deliver_to.extend(m.recipients.iter());
    }
    tracing::info!(
        queue_id = m.id,
        decrypted = processed.decrypted,
        undecryptable = processed.undecryptable.is_some(),
        signature = processed.signature,
        recipients = m.recipients.len(),
        "inbound processed"
    );
    if deliver_to.is_empty() {
        return attempt;
    }
    let message = Arc::new(processed.message);
    deliver(gw, m, &deliver_to, &message, true, &mut attempt).await;
    attempt
}

async fn outbound_attempt(gw: &Arc<Gateway>, m: &ClaimedMessage, body: &Arc<Vec<u8>>) -> Attempt {
    let addrs: Vec<String> = m.recipients.iter().map(|r| r.address.clone()).collect();
    let mut certs = std::collections::HashMap::new();
    for a in &addrs {
        match gw.certs_for(a).await {
            Ok(c) => {
                certs.insert(a.clone(), c);
            }
            // Never "no certificate" because the store did not answer:
            // that could bounce, or send in the clear.
            Err(e) => return Attempt::of(defer_all(m, &e)),
        }
    }
    let crypto = gw.crypto();
    let gw2 = gw.clone();
    let body = Arc::clone(body);
    let from = m.mail_from.clone();
    let a2 = addrs.clone();
    let plan = tokio::task::spawn_blocking(move || {
        let lookup = |a: &str| certs.get(a).cloned().unwrap_or_default();
        outbound::plan(
            &body,
            &from,
            &a2,
            &gw2.policy(),
            &crypto.keys,
            &lookup,
            store::now(),
        )
    })
    .await;
    let plan = match plan {
        Ok(p) => p,
        Err(e) => return Attempt::of(defer_all(m, &format!("processing failed: {e}"))),
    };
    let mut attempt = Attempt::default();
    for r in &plan.refused {
        let rc = &m.recipients[r.recipient];
        gw.metrics.fail(if r.status.starts_with('4') {
            "sign_failed"
        } else {
            "encryption_required"
        });
        tracing::warn!(queue_id = m.id, recipient = %rc.address, status = r.status, reason = %r.reason, "refused by policy");
        attempt.results.push(RcptResult {
            idx: rc.idx,
            outcome: if r.status.starts_with('4') {
                Outcome::Deferred(r.reason.clone())
            } else {
                Outcome::Failed(format!("{} {}", r.status, r.reason))
            },
        });
    }
    for copy in plan.copies {
        if copy.signed_by.is_some() {
            gw.metrics
                .signed
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
        if copy.encrypted.is_some() {
            gw.metrics
                .encrypted
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
        tracing::info!(
            queue_id = m.id,
            recipients = copy.recipients.len(),
            signed = copy.signed_by.is_some(),
            encrypted = copy.encrypted.unwrap_or("no"),
            "outbound copy"
        );
        let rcpts: Vec<&store::queue::QueuedRecipient> =
            copy.recipients.iter().map(|i| &m.recipients[*i]).collect();
        deliver(gw, m, &rcpts, &Arc::new(copy.message), false, &mut attempt).await;
    }
    attempt
}

/// Delivers `message` to `rcpts`: inbound to the next hop or the Maildir,
/// outbound to the relay; the outcomes and the hops that took mail go to
/// `attempt`.
async fn deliver(
    gw: &Arc<Gateway>,
    m: &ClaimedMessage,
    rcpts: &[&store::queue::QueuedRecipient],
    message: &Arc<Vec<u8>>,
    inbound: bool,
    attempt: &mut Attempt,
) {
    let hop = if inbound {
        gw.cfg.inbound.next_hop.clone().map(|h| {
            let c = &gw.cfg.inbound;
            (h, c.next_hop_tls, c.next_hop_ca_file.clone())
        })
    } else {
        gw.cfg.outbound.relay.clone().map(|h| {
            let c = &gw.cfg.outbound;
            (h, c.relay_tls, c.relay_ca_file.clone())
        })
    };
    let delivered = |gw: &Gateway| {
        let secs = gw.age_of(m.id, m.received_at);
        let h = if inbound {
            &gw.metrics.latency_inbound
        } else {
            &gw.metrics.latency_outbound
        };
        h.observe(secs);
        gw.metrics.delivered.inc(inbound);
    };
    match hop {
        None if inbound => {
            let root = gw.maildir_root();
            for r in rcpts {
                let root = root.clone();
                let addr = r.address.clone();
                let msg = Arc::clone(message);
                let res =
                    tokio::task::spawn_blocking(move || maildir::deliver(&root, &addr, &msg)).await;
                let outcome = match res {
                    Ok(Ok(path)) => {
                        delivered(gw);
                        attempt.took("maildir".into());
                        Outcome::Delivered(format!("maildir {}", path.display()))
                    }
                    Ok(Err(e)) if e.kind() == std::io::ErrorKind::InvalidInput => {
                        Outcome::Failed(format!("5.1.3 mailbox name refused: {e}"))
                    }
                    Ok(Err(e)) => {
                        gw.metrics.fail("maildir");
                        Outcome::Deferred(format!("maildir: {e}"))
                    }
                    Err(e) => Outcome::Deferred(format!("maildir task: {e}")),
                };
                attempt.results.push(RcptResult {
                    idx: r.idx,
                    outcome,
                });
            }
        }
        None => attempt.results.extend(rcpts.iter().map(|r| RcptResult {
            idx: r.idx,
            outcome: Outcome::Deferred(
                "no outbound relay is configured ([outbound] relay) and MX lookup is not supported yet"
                    .into(),
            ),
        })),
        Some(((host, port), tls, ca_file)) => {
            let mut hop = NextHop::new(host.clone(), port);
            hop.tls = tls;
            hop.ca_file = ca_file;
            hop.helo = gw.cfg.hostname.clone();
            let list: Vec<Recipient> = rcpts
                .iter()
                .map(|r| Recipient {
                    address: r.address.clone(),
                    notify: r.notify.clone(),
                    orcpt: r.orcpt.clone(),
                })
                .collect();
            let res = smtp_client::send(
                &hop,
                &m.mail_from,
                &list,
                message,
                m.envid.as_deref(),
                m.ret.as_deref(),
            )
            .await;
            let name = format!(
                "{} {host}:{port}",
                if inbound {
                    "inbound next hop"
                } else {
                    "outbound relay"
                }
            );
            gw.hop_result(&name, res.as_ref().map(|_| ()).map_err(|e| e.to_string()));
            match res {
                Ok(outcomes) => {
                    let hop = format!("{host}:{port}");
                    for (r, o) in rcpts.iter().zip(outcomes) {
                        let outcome = match o {
                            RcptOutcome::Accepted => {
                                delivered(gw);
                                attempt.took(hop.clone());
                                Outcome::Delivered(hop.clone())
                            }
                            RcptOutcome::Temporary(s) => {
                                gw.metrics.fail("next_hop_temporary");
                                Outcome::Deferred(format!("{host}:{port} said: {s}"))
                            }
                            RcptOutcome::Permanent(s) => {
                                gw.metrics.fail("next_hop_permanent");
                                Outcome::Failed(format!("{host}:{port} said: {s}"))
                            }
                        };
                        attempt.results.push(RcptResult {
                            idx: r.idx,
                            outcome,
                        });
                    }
                }
                Err(e) => {
                    let (fail, why) = match &e {
                        DeliveryError::Permanent(s) => (true, s.clone()),
                        other => (false, other.to_string()),
                    };
                    gw.metrics.fail(if fail {
                        "next_hop_permanent"
                    } else {
                        "next_hop_unreachable"
                    });
                    attempt
                        .results
                        .extend(rcpts.iter().map(|r| RcptResult {
                            idx: r.idx,
                            outcome: if fail {
                                Outcome::Failed(format!("{host}:{port}: {why}"))
                            } else {
                                Outcome::Deferred(format!("{host}:{port}: {why}"))
                            },
                        }))
                }
            }
        }
    }
}

fn defer_all(m: &ClaimedMessage, why: &str) -> Vec<RcptResult> {
    m.recipients
        .iter()
        .map(|r| RcptResult {
            idx: r.idx,
            outcome: Outcome::Deferred(why.to_string()),
        })
        .collect()
}

/// Records the attempt and the hops that took mail, and queues a DSN for
/// the recipients that failed for good, in one transaction.
async fn finish(gw: &Arc<Gateway>, m: &ClaimedMessage, body: &[u8], attempt: Attempt, owner: &str) {
    let Attempt { results, hops } = attempt;
    let now = store::now();
    // Exponential backoff from `retry_base`, doubling, at most an hour.
    let base = gw.cfg.retry_base.as_secs().max(1) as i64;
    let next = now + (base << m.attempts.clamp(0, 12)).min(3600).max(base);
    let failed: Vec<(&store::queue::QueuedRecipient, String)> = results
        .iter()
        .filter_map(|r| match &r.outcome {
            Outcome::Failed(why) => m
                .recipients
                .iter()
                .find(|q| q.idx == r.idx)
                .map(|q| (q, why.clone())),
            _ => None,
        })
        .filter(|(q, _)| dsn::should_notify(q.notify.as_deref(), Action::Failed))
        .collect();
    let bounce = if m.mail_from.is_empty() || failed.is_empty() {
        None
    } else {
        Some(make_dsn(gw, m, body, &failed))
    };
    let note = results.iter().find_map(|r| match &r.outcome {
        Outcome::Quarantined(why) => Some(format!("quarantined: {why}")),
        _ => None,
    });
    let store = gw.svc.store();
    let outcome: Result<bool, store::StoreError> = async {
        let mut tx = store.begin().await?;
        let ok = tx
            .finish_attempt(m.id, owner, &results, next, note.as_deref(), now)
            .await?;
        if ok {
            for hop in &hops {
                tx.hop_delivered(m.org, m.direction, hop, now).await?;
            }
        }
        if ok && let Some(b) = &bounce {
            let rc = [NewRecipient {
                address: &m.mail_from,
                notify: Some("NEVER"),
                orcpt: None,
            }];
            let direction = if gw.cfg.is_local(&m.mail_from) && !gw.cfg.domains.is_empty() {
                Direction::Inbound
            } else {
                reverse(m.direction)
            };
            tx.enqueue(
                &NewMessage {
                    org: m.org,
                    direction,
                    mail_from: "",
                    envid: None,
                    ret: None,
                    client: "dsn",
                    body: b,
                    recipients: &rc,
                },
                now,
            )
            .await?;
        }
        tx.commit().await?;
        Ok(ok)
    }
    .await;
    match outcome {
        Ok(true) => {
            if bounce.is_some() {
                gw.metrics
                    .dsns
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                gw.wake.notify_waiters();
            }
            for r in &results {
                let (state, detail) = match &r.outcome {
                    Outcome::Delivered(d) => ("delivered", d.as_str()),
                    Outcome::Deferred(d) => ("deferred", d.as_str()),
                    Outcome::Failed(d) => ("failed", d.as_str()),
                    Outcome::Quarantined(d) => ("quarantined", d.as_str()),
                };
                let rcpt = m
                    .recipients
                    .iter()
                    .find(|q| q.idx == r.idx)
                    .map(|q| q.address.as_str())
                    .unwrap_or("");
                // What an operator must see is WARN: mail that waits
                // (deferred), bounces (failed) or is kept back (quarantined).
                if let Outcome::Delivered(_) = r.outcome {
                    tracing::info!(queue_id = m.id, recipient = %rcpt, state, detail, "delivery attempt");
                } else {
                    tracing::warn!(queue_id = m.id, recipient = %rcpt, state, detail, attempts = m.attempts + 1, "delivery attempt");
                }
            }
        }
        Ok(false) => tracing::warn!(
            queue_id = m.id,
            "lease lost before the result was recorded; another worker retries"
        ),
        Err(e) => {
            tracing::error!(queue_id = m.id, error = %e, "recording the result failed; the lease expires and the message is retried")
        }
    }
}

fn make_dsn(
    gw: &Gateway,
    m: &ClaimedMessage,
    body: &[u8],
    failed: &[(&store::queue::QueuedRecipient, String)],
) -> Vec<u8> {
    let postmaster = format!("MAILER-DAEMON@{}", gw.cfg.hostname);
    let recipients = failed
        .iter()
        .map(|(q, why)| {
            let status = status_in(why).unwrap_or_else(|| "5.0.0".into());
            DsnRecipient {
                final_recipient: q.address.clone(),
                original_recipient: q.orcpt.clone(),
                action: Action::Failed,
                status,
                diagnostic: Some(why.clone()),
                remote_mta: None,
            }
        })
        .collect();
    let explanation = format!(
        "This is the sikkermail gateway at {}.\r\n\r\nYour message could not be delivered to one or more recipients.\r\nThe reason is given for each recipient below. Nothing was sent to them.\r\n",
        gw.cfg.hostname
    );
    dsn::build(&Dsn {
        reporting_mta: &gw.cfg.hostname,
        postmaster: &postmaster,
        to: &m.mail_from,
        envid: m.envid.as_deref(),
        arrival_date: m.received_at,
        recipients,
        explanation: &explanation,
        original: body,
        // Inbound mail came from anyone and its bounce goes to whatever its
        // MAIL FROM claims: its headers only, whatever RET asked for, so a
        // bounce never carries an outsider's text to a third party.
        ret_full: m.direction == Direction::Outbound
            && m.ret
                .as_deref()
                .is_some_and(|r| r.eq_ignore_ascii_case("FULL")),
    })
}

fn human(d: Duration) -> String {
    let s = d.as_secs();
    if s.is_multiple_of(86400) {
        format!("{} days", s / 86400)
    } else if s.is_multiple_of(3600) {
        format!("{} hours", s / 3600)
    } else {
        format!("{s} seconds")
    }
}

/// A bounce goes back the way the message came.
fn reverse(d: Direction) -> Direction {
    match d {
        Direction::Inbound => Direction::Outbound,
        Direction::Outbound => Direction::Inbound,
    }
}

/// The first RFC 3463 status code (`d.ddd.ddd`, class 4 or 5) in a text.
fn status_in(text: &str) -> Option<String> {
    text.split(|c: char| c.is_whitespace() || c == ';' || c == ',')
        .find(|w| {
            let mut parts = w.split('.');
            let (Some(a), Some(b), Some(c), None) =
                (parts.next(), parts.next(), parts.next(), parts.next())
            else {
                return false;
            };
            matches!(a, "4" | "5")
                && (1..=3).contains(&b.len())
                && (1..=3).contains(&c.len())
                && b.bytes().chain(c.bytes()).all(|x| x.is_ascii_digit())
        })
        .map(str::to_string)
}

#[cfg(test)]
mod tests {
    use super::status_in;

    #[test]
    fn status_codes_in_texts() {
        assert_eq!(
            status_in("127.0.0.1:25 said: 550 5.1.10 no such user").as_deref(),
            Some("5.1.10")
        );
        assert_eq!(
            status_in("4.4.7 expired after 5 days").as_deref(),
            Some("4.4.7")
        );
        assert_eq!(
            status_in("5.7.1 encryption is required").as_deref(),
            Some("5.7.1")
        );
        assert_eq!(status_in("host 10.0.0.5:25: refused"), None);
        assert_eq!(status_in("version 1.2.3"), None);
    }
}
