//! Counters and histograms for Prometheus (`/metrics`), in its text
//! exposition format. Plain atomics: nothing here can block a session.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

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
    /// Inbound messages decrypted.
    pub decrypted: AtomicU64,
    /// Inbound messages that could not be decrypted.
    pub undecryptable: AtomicU64,
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

impl Metrics {
    /// Counts a failure.
    pub fn fail(&self, reason: &'static str) {
        let mut m = match self.failures.lock() {
            Ok(m) => m,
            Err(p) => p.into_inner(),
        };
        *m.entry(reason).or_default() += 1;
    }

    /// The text exposition, with the queue depth read by the caller.
    pub fn render(&self, queue_active: i64, queue_held: i64) -> String {
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
        let _ = writeln!(
            out,
            "# HELP sikkermail_queue_messages Messages in the queue.\n# TYPE sikkermail_queue_messages gauge"
        );
        let _ = writeln!(
            out,
            "sikkermail_queue_messages{{state=\"active\"}} {queue_active}"
        );
        let _ = writeln!(
            out,
            "sikkermail_queue_messages{{state=\"held\"}} {queue_held}"
        );
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
