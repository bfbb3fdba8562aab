//! `/metrics` for Prometheus, in its text exposition format: this
//! process's counters and histograms (plain atomics: nothing here can
//! block a session), and what every node must report alike read from the
//! store at scrape time ([`scrape`]): the queue per direction, when each
//! next hop last took mail, and when the certificates expire. Every label
//! comes from a fixed set or from the configuration and the organisation's
//! own certificates, so the number of series stays bounded.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use store::queue::Direction;
use store::stats::{Expiry, HopDelivery, QueueStats};

use crate::engine::Gateway;

/// Upper bounds (seconds) of the latency histograms' buckets.
const BUCKETS: &[f64] = &[
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 3600.0,
];

/// A histogram of seconds.
#[derive(Debug, Default)]
pub struct Histogram {
    counts: [AtomicU64; 15],
    count: AtomicU64,
    /// Sum in microseconds.
    sum_us: AtomicU64,
}

impl Histogram {
    /// Records one observation.
    pub fn observe(&self, seconds: f64) {
        for (i, b) in BUCKETS.iter().enumerate() {
            if seconds <= *b {
                self.counts[i].fetch_add(1, Ordering::Relaxed);
            }
        }
        self.count.fetch_add(1, Ordering::Relaxed);
        let us = (seconds.max(0.0) * 1e6) as u64;
        self.sum_us.fetch_add(us, Ordering::Relaxed);
    }

    fn render(&self, out: &mut String, name: &str, labels: &str) {
        let sep = if labels.is_empty() { "" } else { "," };
        for (i, b) in BUCKETS.iter().enumerate() {
            let c = self.counts[i].load(Ordering::Relaxed);
            let _ = writeln!(out, "{name}_bucket{{{labels}{sep}le=\"{b}\"}} {c}");
        }
        let n = self.count.load(Ordering::Relaxed);
        let _ = writeln!(out, "{name}_bucket{{{labels}{sep}le=\"+Inf\"}} {n}");
        let sum = self.sum_us.load(Ordering::Relaxed) as f64 / 1e6;
        let _ = writeln!(out, "{name}_sum{{{labels}}} {sum}");
        let _ = writeln!(out, "{name}_count{{{labels}}} {n}");
    }
}

/// One counter per direction.
#[derive(Debug, Default)]
pub struct PerDirection {
    /// Inbound.
    pub inbound: AtomicU64,
    /// Outbound.
    pub outbound: AtomicU64,
}

impl PerDirection {
    /// Adds one for `inbound` or outbound.
    pub fn inc(&self, inbound: bool) {
        let c = if inbound {
            &self.inbound
        } else {
            &self.outbound
        };
        c.fetch_add(1, Ordering::Relaxed);
    }
}

/// Everything the gateway counts.
#[derive(Debug, Default)]
pub struct Metrics {
    /// Messages accepted (250) per direction.
    pub received: PerDirection,
    /// Recipient deliveries that succeeded per direction.
    pub delivered: PerDirection,
    /// Inbound messages decrypted (once per message, whatever the number
    /// of attempts).
    pub decrypted: AtomicU64,
    /// Inbound messages that could not be decrypted (once per message).
    pub undecryptable: AtomicU64,
    /// Of those, by reason ([`DECRYPTION_FAILURE_REASONS`]).
    decryption_failures: [AtomicU64; DECRYPTION_FAILURE_REASONS.len()],
    /// Outbound copies signed.
    pub signed: AtomicU64,
    /// Outbound copies encrypted.
    pub encrypted: AtomicU64,
    /// Certificates harvested from valid signatures.
    pub harvested: AtomicU64,
    /// Messages decrypted in place in IMAP mailboxes by `serve`'s watchers.
    pub imap_decrypted: AtomicU64,
    /// Encrypted messages in IMAP mailboxes no key opened.
    pub imap_failed: AtomicU64,
    /// DSNs generated.
    pub dsns: AtomicU64,
    /// Failures by reason (a short fixed word, never message data).
    failures: Mutex<BTreeMap<&'static str, u64>>,
    /// Seconds from 250 to delivery, inbound.
    pub latency_inbound: Histogram,
    /// Seconds from 250 to delivery, outbound.
    pub latency_outbound: Histogram,
    /// Seconds to make a message durable (the group commit) before its 250.
    pub commit_latency: Histogram,
}

/// Why an encrypted message did not open: the label values of
/// `sikkermail_decryption_failures_total` (see [`decryption_failure_reason`]).
pub const DECRYPTION_FAILURE_REASONS: [&str; 5] = [
    "no_key",
    "decrypt_failed",
    "malformed",
    "unsupported",
    "other",
];

/// The reason label of a decryption error: no key of ours is a recipient;
/// a key matched but the content did not open; the MIME or CMS is broken;
/// an algorithm or structure is not supported; anything else.
pub fn decryption_failure_reason(e: &smime::Error) -> &'static str {
    use smime::Error as E;
    match e {
        E::NoMatchingKey { .. } => "no_key",
        E::DecryptFailed(_) => "decrypt_failed",
        E::Mime(_) | E::TransferEncoding { .. } | E::MalformedCms(_) | E::NotSmime { .. } => {
            "malformed"
        }
        E::Unsupported(_) => "unsupported",
        _ => "other",
    }
}

impl Metrics {
    /// Counts one inbound message's decryption: `None` when it opened,
    /// else the reason label ([`decryption_failure_reason`]).
    pub fn count_decryption(&self, failure: Option<&str>) {
        match failure {
            None => {
                self.decrypted.fetch_add(1, Ordering::Relaxed);
            }
            Some(reason) => {
                self.undecryptable.fetch_add(1, Ordering::Relaxed);
                let i = DECRYPTION_FAILURE_REASONS
                    .iter()
                    .position(|r| *r == reason)
                    .unwrap_or(DECRYPTION_FAILURE_REASONS.len() - 1);
                self.decryption_failures[i].fetch_add(1, Ordering::Relaxed);
                self.fail("undecryptable");
            }
        }
    }

    /// Counts a failure.
    pub fn fail(&self, reason: &'static str) {
        let mut m = match self.failures.lock() {
            Ok(m) => m,
            Err(p) => p.into_inner(),
        };
        *m.entry(reason).or_default() += 1;
    }

    /// The text exposition: the counters, and `store` as read by
    /// [`scrape`].
    pub fn render(&self, store: &StoreView) -> String {
        let mut out = String::new();
        let l = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let dir = |out: &mut String, name: &str, help: &str, c: &PerDirection| {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter");
            let _ = writeln!(out, "{name}{{direction=\"inbound\"}} {}", l(&c.inbound));
            let _ = writeln!(out, "{name}{{direction=\"outbound\"}} {}", l(&c.outbound));
        };
        dir(
            &mut out,
            "sikkermail_messages_received_total",
            "Messages accepted with 250.",
            &self.received,
        );
        dir(
            &mut out,
            "sikkermail_deliveries_total",
            "Recipient deliveries that succeeded.",
            &self.delivered,
        );
        for (name, help, v) in [
            (
                "sikkermail_decrypted_total",
                "Inbound messages decrypted.",
                &self.decrypted,
            ),
            (
                "sikkermail_undecryptable_total",
                "Inbound messages that could not be decrypted.",
                &self.undecryptable,
            ),
            (
                "sikkermail_signed_total",
                "Outbound copies signed.",
                &self.signed,
            ),
            (
                "sikkermail_encrypted_total",
                "Outbound copies encrypted.",
                &self.encrypted,
            ),
            (
                "sikkermail_harvested_total",
                "Signer certificates harvested.",
                &self.harvested,
            ),
            (
                "sikkermail_imap_decrypted_total",
                "Messages decrypted in place in IMAP mailboxes.",
                &self.imap_decrypted,
            ),
            (
                "sikkermail_imap_undecryptable_total",
                "Encrypted messages in IMAP mailboxes no key opened.",
                &self.imap_failed,
            ),
            (
                "sikkermail_dsn_total",
                "Delivery status notifications made.",
                &self.dsns,
            ),
        ] {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} counter\n{name} {}",
                l(v)
            );
        }
        let _ = writeln!(
            out,
            "# HELP sikkermail_failures_total Failures by reason.\n# TYPE sikkermail_failures_total counter"
        );
        let failures = match self.failures.lock() {
            Ok(m) => m.clone(),
            Err(p) => p.into_inner().clone(),
        };
        for (reason, n) in failures {
            let _ = writeln!(out, "sikkermail_failures_total{{reason=\"{reason}\"}} {n}");
        }
        let name = "sikkermail_decryption_failures_total";
        let _ = writeln!(
            out,
            "# HELP {name} Inbound messages that could not be decrypted, by reason (once per message).\n# TYPE {name} counter"
        );
        for (reason, c) in DECRYPTION_FAILURE_REASONS
            .iter()
            .zip(&self.decryption_failures)
        {
            let _ = writeln!(out, "{name}{{reason=\"{reason}\"}} {}", l(c));
        }
        store.render(&mut out);
        let name = "sikkermail_delivery_latency_seconds";
        let _ = writeln!(
            out,
            "# HELP {name} Seconds from 250 to delivery.\n# TYPE {name} histogram"
        );
        self.latency_inbound
            .render(&mut out, name, "direction=\"inbound\"");
        self.latency_outbound
            .render(&mut out, name, "direction=\"outbound\"");
        let name = "sikkermail_commit_latency_seconds";
        let _ = writeln!(
            out,
            "# HELP {name} Seconds to make an accepted message durable.\n# TYPE {name} histogram"
        );
        self.commit_latency.render(&mut out, name, "");
        out
    }
}

/// What `/metrics` reads from the store (and the readiness check) at
/// scrape time.
#[derive(Debug, Clone, Default)]
pub struct StoreView {
    /// Seconds since the epoch, when read.
    pub now: i64,
    /// The store answered every query.
    pub up: bool,
    /// `/readyz`'s reasons (empty: ready).
    pub not_ready: Vec<String>,
    /// The queue per direction.
    pub queue: Vec<(Direction, QueueStats)>,
    /// When each hop last took mail.
    pub hops: Vec<HopDelivery>,
    /// The watched certificates.
    pub expiries: Vec<Expiry>,
}

impl StoreView {
    /// Reads everything from the store; a query that fails leaves its
    /// series out and `up` false.
    pub async fn read(gw: &Gateway) -> StoreView {
        let store = gw.svc.store();
        let org = gw.svc.org().id;
        let mut v = StoreView {
            now: store::now(),
            up: true,
            not_ready: crate::server::not_ready(gw).await,
            ..StoreView::default()
        };
        match store.queue_stats(org).await {
            Ok(q) => v.queue = q,
            Err(e) => {
                tracing::warn!(error = %e, "metrics: reading the queue failed");
                v.up = false;
            }
        }
        // Only the hops configured now: one replaced keeps its row in the
        // store, and must not look like a hop that stopped taking mail.
        let inbound = match &gw.cfg.inbound.next_hop {
            Some((host, port)) => format!("{host}:{port}"),
            None => "maildir".into(),
        };
        let outbound = gw
            .cfg
            .outbound
            .relay
            .as_ref()
            .map(|(host, port)| format!("{host}:{port}"));
        match store.hop_deliveries(org).await {
            Ok(h) => {
                v.hops = h
                    .into_iter()
                    .filter(|h| match h.direction {
                        Direction::Inbound => h.hop == inbound,
                        Direction::Outbound => outbound.as_ref() == Some(&h.hop),
                    })
                    .collect();
                // A configured hop with no delivery on record (a fresh
                // installation, a hop down from the start) reports 0, so
                // the alert on a hop that takes no mail can fire for it.
                let configured = std::iter::once((Direction::Inbound, inbound.clone()))
                    .chain(outbound.clone().map(|o| (Direction::Outbound, o)));
                for (direction, hop) in configured {
                    if !v
                        .hops
                        .iter()
                        .any(|h| h.direction == direction && h.hop == hop)
                    {
                        v.hops.push(HopDelivery {
                            direction,
                            hop,
                            at: 0,
                        });
                    }
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "metrics: reading the deliveries failed");
                v.up = false;
            }
        }
        match store.expiries(org).await {
            Ok(c) => v.expiries = c,
            Err(e) => {
                tracing::warn!(error = %e, "metrics: reading the certificates failed");
                v.up = false;
            }
        }
        v
    }

    fn render(&self, out: &mut String) {
        let gauge = |out: &mut String, name: &str, help: &str| {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge");
        };
        gauge(
            out,
            "sikkermail_store_up",
            "1 when the store answered this scrape's queries.",
        );
        let _ = writeln!(out, "sikkermail_store_up {}", u8::from(self.up));
        gauge(
            out,
            "sikkermail_ready",
            "1 when /readyz answers 200 (the store answers, the next hops take mail, no message waits too long).",
        );
        let _ = writeln!(
            out,
            "sikkermail_ready {}",
            u8::from(self.not_ready.is_empty())
        );
        if !self.queue.is_empty() {
            let name = "sikkermail_queue_messages";
            gauge(
                out,
                name,
                "Messages in the queue: active (waiting or being delivered) or held by an administrator.",
            );
            for (d, s) in &self.queue {
                let d = d.as_str();
                let _ = writeln!(
                    out,
                    "{name}{{direction=\"{d}\",state=\"active\"}} {}",
                    s.active
                );
                let _ = writeln!(out, "{name}{{direction=\"{d}\",state=\"held\"}} {}", s.held);
            }
            let name = "sikkermail_queue_deferred_messages";
            gauge(out, name, "Active messages already tried at least once.");
            for (d, s) in &self.queue {
                let _ = writeln!(out, "{name}{{direction=\"{}\"}} {}", d.as_str(), s.deferred);
            }
            let name = "sikkermail_queue_quarantined_messages";
            gauge(
                out,
                name,
                "Messages with a recipient in quarantine (until released or deleted).",
            );
            for (d, s) in &self.queue {
                let _ = writeln!(
                    out,
                    "{name}{{direction=\"{}\"}} {}",
                    d.as_str(),
                    s.quarantined
                );
            }
            let name = "sikkermail_queue_oldest_age_seconds";
            gauge(
                out,
                name,
                "Seconds the oldest active message has waited (0: none).",
            );
            for (d, s) in &self.queue {
                let age = s.oldest_active.map_or(0, |t| (self.now - t).max(0));
                let _ = writeln!(out, "{name}{{direction=\"{}\"}} {age}", d.as_str());
            }
        }
        let name = "sikkermail_last_delivery_timestamp_seconds";
        gauge(
            out,
            name,
            "When a next hop, relay or the Maildir last took mail (Unix time).",
        );
        for h in &self.hops {
            let _ = writeln!(
                out,
                "{name}{{direction=\"{}\",hop=\"{}\"}} {}",
                h.direction.as_str(),
                escape(&h.hop),
                h.at
            );
        }
        let name = "sikkermail_certificate_expiry_seconds";
        gauge(
            out,
            name,
            "Seconds until a certificate expires (negative: expired): the organisation's own (kind root-ca, issuing-ca, organisation, user; id is the serial) and pinned recipient certificates (kind recipient; id is the SHA-256 fingerprint).",
        );
        for c in &self.expiries {
            let _ = writeln!(
                out,
                "{name}{{kind=\"{}\",id=\"{}\",email=\"{}\"}} {}",
                escape(&c.kind),
                escape(&c.id),
                escape(&c.email),
                c.not_after - self.now
            );
        }
    }
}

/// A label value as the text format wants it (backslash, quote, newline
/// escaped).
fn escape(v: &str) -> String {
    let mut out = String::with_capacity(v.len());
    for c in v.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out
}

/// The whole of `/metrics`.
pub async fn scrape(gw: &Gateway) -> String {
    let view = StoreView::read(gw).await;
    gw.metrics.render(&view)
}
