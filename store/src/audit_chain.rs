//! The audit trail's hash chain. Every entry gets the next sequence number,
//! the previous entry's hash and its own SHA-256 over both and its fields
//! (each length-prefixed, so no two different entries hash alike). Writers
//! are ordered (SQLite: the write transaction; PostgreSQL: an advisory
//! lock), so the chain never forks. [`Tx::verify_audit`] walks it.
//!
//! What a chain cannot show: the newest entries cut off the end (nothing
//! after them points back). An operator who keeps the head reported by
//! `audit verify` elsewhere can check that too.

use sqlx::Row;

use crate::{Backend, Store, StoreError, Tx, in_tx};

/// Orders writers of the audit trail on PostgreSQL.
const AUDIT_LOCK: i64 = 0x5ea1_0003;

/// The hash before the first entry.
const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// One entry's fields, as hashed.
struct Fields {
    org: Option<i64>,
    at: i64,
    actor: String,
    action: String,
    subject: String,
    detail: String,
}

fn entry_hash(seq: i64, prev: &str, f: &Fields) -> String {
    let mut buf = Vec::new();
    let mut put = |b: &[u8]| {
        buf.extend_from_slice(&(b.len() as u64).to_be_bytes());
        buf.extend_from_slice(b);
    };
    put(b"sikkermail-audit-v1");
    put(&seq.to_be_bytes());
    put(prev.as_bytes());
    put(&f.org.unwrap_or(-1).to_be_bytes());
    put(&f.at.to_be_bytes());
    put(f.actor.as_bytes());
    put(f.action.as_bytes());
    put(f.subject.as_bytes());
    put(f.detail.as_bytes());
    openssl::sha::sha256(&buf)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn fields(r: &sqlx::any::AnyRow) -> Result<Fields, StoreError> {
    Ok(Fields {
        org: r.try_get("org_id")?,
        at: r.try_get("at")?,
        actor: r.try_get("actor")?,
        action: r.try_get("action")?,
        subject: r.try_get("subject")?,
        detail: r.try_get("detail")?,
    })
}

/// What [`Tx::verify_audit`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditCheck {
    /// Entries checked.
    pub entries: i64,
    /// The last entry's sequence number and hash (keep it elsewhere to
    /// detect a cut-off end later).
    pub head: Option<(i64, String)>,
    /// The first break, if any: which entry and why.
    pub broken: Option<String>,
}

impl Tx<'_> {
    /// Chains the audit entries not chained yet (the one just inserted, and
    /// any written before the chain existed), in id order.
    pub(crate) async fn chain_audit(&mut self) -> Result<(), StoreError> {
        if self.store.backend == Backend::Postgres {
            sqlx::query("SELECT pg_advisory_xact_lock($1)")
                .bind(AUDIT_LOCK)
                .execute(&mut *self.tx)
                .await?;
        }
        let last = sqlx::query(
            "SELECT seq, hash FROM audit_events WHERE seq IS NOT NULL ORDER BY seq DESC LIMIT 1",
        )
        .fetch_optional(&mut *self.tx)
        .await?;
        let (mut seq, mut prev) = match last {
            Some(r) => (r.try_get::<i64, _>("seq")?, r.try_get::<String, _>("hash")?),
            None => (0, GENESIS.to_string()),
        };
        let rows = sqlx::query(
            "SELECT id, org_id, at, actor, action, subject, detail FROM audit_events \
             WHERE seq IS NULL ORDER BY id",
        )
        .fetch_all(&mut *self.tx)
        .await?;
        for r in &rows {
            let id: i64 = r.try_get("id")?;
            seq += 1;
            let h = entry_hash(seq, &prev, &fields(r)?);
            sqlx::query(
                "UPDATE audit_events SET seq = $1, prev_hash = $2, hash = $3 WHERE id = $4",
            )
            .bind(seq)
            .bind(&prev)
            .bind(&h)
            .bind(id)
            .execute(&mut *self.tx)
            .await?;
            prev = h;
        }
        Ok(())
    }

    /// Walks the whole chain (every organisation's entries): sequence
    /// numbers 1, 2, 3, ... with no gap, each entry's previous hash equal
    /// to the hash before it, each hash equal to its fields' hash.
    pub async fn verify_audit(&mut self) -> Result<AuditCheck, StoreError> {
        let rows = sqlx::query(
            "SELECT id, seq, prev_hash, hash, org_id, at, actor, action, subject, detail \
             FROM audit_events ORDER BY seq, id",
        )
        .fetch_all(&mut *self.tx)
        .await?;
        let mut prev = GENESIS.to_string();
        let mut n = 0i64;
        let mut head = None;
        for r in &rows {
            let seq: Option<i64> = r.try_get("seq")?;
            let Some(seq) = seq else {
                // Written by a process that predates the chain and not yet
                // chained: not a break, chained by the next write.
                continue;
            };
            n += 1;
            let stored_prev: Option<String> = r.try_get("prev_hash")?;
            let stored: Option<String> = r.try_get("hash")?;
            let why = if seq != n {
                Some(format!(
                    "entry {n} is missing (the next has sequence number {seq}): removed or reordered"
                ))
            } else if stored_prev.as_deref() != Some(prev.as_str()) {
                Some(format!(
                    "entry {seq} does not follow entry {}: removed, inserted or reordered",
                    seq - 1
                ))
            } else if stored.as_deref() != Some(entry_hash(seq, &prev, &fields(r)?).as_str()) {
                Some(format!("entry {seq} was changed after it was written"))
            } else {
                None
            };
            if let Some(why) = why {
                return Ok(AuditCheck {
                    entries: n,
                    head,
                    broken: Some(why),
                });
            }
            prev = stored.unwrap_or_default();
            head = Some((seq, prev.clone()));
        }
        Ok(AuditCheck {
            entries: n,
            head,
            broken: None,
        })
    }
}

in_tx! { begin_read:
    /// Walks the audit chain.
    fn verify_audit(&self) -> AuditCheck;
}
