//! What an operator watches, read from the store so that every node of an
//! installation reports the same (`/metrics` reads it at scrape time): the
//! queue at a glance per direction, when each next hop last took mail, when
//! the organisation's certificates and the pinned recipient certificates
//! expire; and the encrypted messages of shared IMAP mailboxes that no key
//! opened.
//!
//! Each read is a few indexed statements, never a scan of finished mail.

use sqlx::Row;

use crate::queue::Direction;
use crate::records::OrgId;
use crate::{Store, StoreError, Tx, in_tx};

/// The queue of one direction at a glance.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct QueueStats {
    /// Messages waiting for an attempt or being delivered.
    pub active: i64,
    /// Of those, the ones already tried at least once (deferred).
    pub deferred: i64,
    /// Messages an administrator holds.
    pub held: i64,
    /// Messages with a recipient in quarantine.
    pub quarantined: i64,
    /// When the oldest active message was received (None: none active).
    pub oldest_active: Option<i64>,
}

/// When mail was last handed over to a next hop, relay or Maildir.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HopDelivery {
    /// Which way the mail went.
    pub direction: Direction,
    /// `host:port`, or `maildir`.
    pub hop: String,
    /// Seconds since the epoch.
    pub at: i64,
}

/// A certificate whose expiry is watched.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Expiry {
    /// `root-ca`, `issuing-ca`, `organisation`, `user` (the organisation's
    /// own, active and not legacy), or `recipient` (a pinned recipient
    /// certificate).
    pub kind: String,
    /// The serial number (hex) of the organisation's own certificates, the
    /// SHA-256 fingerprint (hex) of a recipient's: never personal data.
    pub id: String,
    /// The e-mail address in it, or the recipient's address.
    pub email: String,
    /// Its notAfter, seconds since the epoch.
    pub not_after: i64,
}

/// An encrypted message in a shared mailbox that no key opened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Undecryptable {
    /// The folder.
    pub folder: String,
    /// The folder's UIDVALIDITY.
    pub uidvalidity: i64,
    /// The message's UID.
    pub uid: i64,
    /// Why it did not open.
    pub reason: String,
}

impl Tx<'_> {
    /// The queue of `org` per direction (both directions, zeros included).
    pub async fn queue_stats(
        &mut self,
        org: OrgId,
    ) -> Result<Vec<(Direction, QueueStats)>, StoreError> {
        let mut out = vec![
            (Direction::Inbound, QueueStats::default()),
            (Direction::Outbound, QueueStats::default()),
        ];
        // `state <> 'done'` keeps to the (state, next_attempt) index.
        let rows = sqlx::query(
            "SELECT direction, \
             COUNT(CASE WHEN state = 'active' THEN 1 END) AS active, \
             COUNT(CASE WHEN state = 'active' AND attempts > 0 THEN 1 END) AS deferred, \
             COUNT(CASE WHEN state = 'held' THEN 1 END) AS held, \
             MIN(CASE WHEN state = 'active' THEN received_at END) AS oldest \
             FROM queue_messages WHERE state <> 'done' AND org_id = $1 GROUP BY direction",
        )
        .bind(org.0)
        .fetch_all(&mut *self.tx)
        .await?;
        for r in &rows {
            let d: Direction = parse_direction(r)?;
            if let Some((_, s)) = out.iter_mut().find(|(x, _)| *x == d) {
                s.active = r.try_get("active")?;
                s.deferred = r.try_get("deferred")?;
                s.held = r.try_get("held")?;
                s.oldest_active = r.try_get("oldest")?;
            }
        }
        // Through the partial index on quarantined recipients.
        let rows = sqlx::query(
            "SELECT m.direction, COUNT(DISTINCT m.id) AS n FROM queue_recipients q \
             JOIN queue_messages m ON m.id = q.message_id \
             WHERE q.state = 'quarantined' AND m.org_id = $1 GROUP BY m.direction",
        )
        .bind(org.0)
        .fetch_all(&mut *self.tx)
        .await?;
        for r in &rows {
            let d: Direction = parse_direction(r)?;
            if let Some((_, s)) = out.iter_mut().find(|(x, _)| *x == d) {
                s.quarantined = r.try_get("n")?;
            }
        }
        Ok(out)
    }

    /// Records that `org`'s mail reached `hop` at `at` (never moves the
    /// time back: two nodes may record out of order).
    pub async fn hop_delivered(
        &mut self,
        org: OrgId,
        direction: Direction,
        hop: &str,
        at: i64,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO delivery_hops (org_id, direction, hop, last_delivered_at) \
             VALUES ($1, $2, $3, $4) ON CONFLICT (org_id, direction, hop) DO UPDATE \
             SET last_delivered_at = excluded.last_delivered_at \
             WHERE delivery_hops.last_delivered_at < excluded.last_delivered_at",
        )
        .bind(org.0)
        .bind(direction.as_str())
        .bind(hop)
        .bind(at)
        .execute(&mut *self.tx)
        .await?;
        Ok(())
    }

    /// When each hop last took `org`'s mail, by direction and hop.
    pub async fn hop_deliveries(&mut self, org: OrgId) -> Result<Vec<HopDelivery>, StoreError> {
        let rows = sqlx::query(
            "SELECT direction, hop, last_delivered_at FROM delivery_hops WHERE org_id = $1 \
             ORDER BY direction, hop",
        )
        .bind(org.0)
        .fetch_all(&mut *self.tx)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(HopDelivery {
                    direction: parse_direction(r)?,
                    hop: r.try_get("hop")?,
                    at: r.try_get("last_delivered_at")?,
                })
            })
            .collect()
    }

    /// `org`'s own active certificates (the internal CA's, the
    /// organisation's, the users'; not the legacy ones kept to open old
    /// mail) and its pinned recipient certificates, with their expiry.
    pub async fn expiries(&mut self, org: OrgId) -> Result<Vec<Expiry>, StoreError> {
        let mut out = Vec::new();
        let rows = sqlx::query(
            "SELECT kind, serial, email, not_after FROM certificates \
             WHERE org_id = $1 AND status = 'active' AND source <> 'legacy' ORDER BY kind, serial",
        )
        .bind(org.0)
        .fetch_all(&mut *self.tx)
        .await?;
        for r in &rows {
            out.push(Expiry {
                kind: r.try_get("kind")?,
                id: r.try_get("serial")?,
                email: r.try_get::<Option<String>, _>("email")?.unwrap_or_default(),
                not_after: r.try_get("not_after")?,
            });
        }
        let rows = sqlx::query(
            "SELECT address, fingerprint, not_after FROM recipients \
             WHERE org_id = $1 AND pinned <> 0 ORDER BY address, fingerprint",
        )
        .bind(org.0)
        .fetch_all(&mut *self.tx)
        .await?;
        for r in &rows {
            out.push(Expiry {
                kind: "recipient".into(),
                id: r.try_get("fingerprint")?,
                email: r.try_get("address")?,
                not_after: r.try_get("not_after")?,
            });
        }
        Ok(out)
    }

    /// Notes that message `uid` of a mailbox folder did not decrypt (the
    /// reason is replaced when it is noted again).
    #[allow(clippy::too_many_arguments)]
    pub async fn mailbox_undecryptable_add(
        &mut self,
        org: OrgId,
        mailbox: &str,
        folder: &str,
        uidvalidity: i64,
        uid: i64,
        reason: &str,
        now: i64,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO mailbox_undecryptable (org_id, mailbox, folder, uidvalidity, uid, reason, seen_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7) \
             ON CONFLICT (org_id, mailbox, folder, uidvalidity, uid) DO UPDATE \
             SET reason = excluded.reason, seen_at = excluded.seen_at",
        )
        .bind(org.0)
        .bind(mailbox)
        .bind(folder)
        .bind(uidvalidity)
        .bind(uid)
        .bind(reason)
        .bind(now)
        .execute(&mut *self.tx)
        .await?;
        Ok(())
    }

    /// Forgets the noted messages of a folder: those of `uids` under
    /// `uidvalidity` (decrypted, or gone from the folder), and every one
    /// under another UIDVALIDITY (the folder was recreated).
    pub async fn mailbox_undecryptable_remove(
        &mut self,
        org: OrgId,
        mailbox: &str,
        folder: &str,
        uidvalidity: i64,
        uids: &[i64],
    ) -> Result<(), StoreError> {
        sqlx::query(
            "DELETE FROM mailbox_undecryptable WHERE org_id = $1 AND mailbox = $2 AND folder = $3 \
             AND uidvalidity <> $4",
        )
        .bind(org.0)
        .bind(mailbox)
        .bind(folder)
        .bind(uidvalidity)
        .execute(&mut *self.tx)
        .await?;
        for uid in uids {
            sqlx::query(
                "DELETE FROM mailbox_undecryptable WHERE org_id = $1 AND mailbox = $2 \
                 AND folder = $3 AND uidvalidity = $4 AND uid = $5",
            )
            .bind(org.0)
            .bind(mailbox)
            .bind(folder)
            .bind(uidvalidity)
            .bind(uid)
            .execute(&mut *self.tx)
            .await?;
        }
        Ok(())
    }

    /// The noted undecryptable messages of a mailbox, by folder and UID.
    pub async fn mailbox_undecryptable(
        &mut self,
        org: OrgId,
        mailbox: &str,
    ) -> Result<Vec<Undecryptable>, StoreError> {
        let rows = sqlx::query(
            "SELECT folder, uidvalidity, uid, reason FROM mailbox_undecryptable \
             WHERE org_id = $1 AND mailbox = $2 ORDER BY folder, uidvalidity, uid",
        )
        .bind(org.0)
        .bind(mailbox)
        .fetch_all(&mut *self.tx)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(Undecryptable {
                    folder: r.try_get("folder")?,
                    uidvalidity: r.try_get("uidvalidity")?,
                    uid: r.try_get("uid")?,
                    reason: r.try_get("reason")?,
                })
            })
            .collect()
    }
}

fn parse_direction(r: &sqlx::any::AnyRow) -> Result<Direction, StoreError> {
    let s: String = r.try_get("direction")?;
    s.parse()
        .map_err(|e: crate::UnknownName| StoreError::Corrupt(e.to_string()))
}

in_tx! { begin_read:
    /// The queue of `org` per direction.
    fn queue_stats(&self, org: OrgId) -> Vec<(Direction, QueueStats)>;
    /// When each hop last took `org`'s mail.
    fn hop_deliveries(&self, org: OrgId) -> Vec<HopDelivery>;
    /// `org`'s watched certificates and their expiry.
    fn expiries(&self, org: OrgId) -> Vec<Expiry>;
    /// The noted undecryptable messages of a mailbox.
    fn mailbox_undecryptable(&self, org: OrgId, mailbox: &str) -> Vec<Undecryptable>;
}

in_tx! { begin:
    /// Records that `org`'s mail reached `hop` at `at`.
    fn hop_delivered(&self, org: OrgId, direction: Direction, hop: &str, at: i64) -> ();
    /// Notes an undecryptable message of a mailbox folder.
    #[allow(clippy::too_many_arguments)]
    fn mailbox_undecryptable_add(&self, org: OrgId, mailbox: &str, folder: &str, uidvalidity: i64, uid: i64, reason: &str, now: i64) -> ();
    /// Forgets noted messages of a folder.
    fn mailbox_undecryptable_remove(&self, org: OrgId, mailbox: &str, folder: &str, uidvalidity: i64, uids: &[i64]) -> ();
}
