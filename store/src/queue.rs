//! The durable mail queue: mail the SMTP gateway accepted, from before it
//! replies 250 until every recipient is delivered, failed or quarantined.
//! After 250 the message is in a committed transaction (SQLite: synced to
//! disk, see [`Store::open`]), so no crash or restart loses it.
//!
//! A message is `active` (waiting for its next attempt, or being delivered),
//! `held` (stopped by an administrator: never claimed) or `done` (no
//! recipient left queued; kept until [`Tx::purge_done`]). A delivery worker
//! [claims](Tx::claim) due messages under a lease (an owner name and an
//! expiry), delivers them, and reports each recipient's outcome with
//! [`Tx::finish_attempt`], which only counts while that owner still holds
//! the lease. A worker that dies leaves its leases to expire, and another
//! claims the messages again: delivery is at least once, never zero times.
//! Owner names must be unique per worker (node, process and task), or two
//! workers could finish each other's attempts.
//!
//! Claiming and housekeeping serve the whole installation (a worker
//! delivers every organisation's mail); everything an administrator does
//! ([`Tx::queue_list`], [`Tx::queue_show`], retry, hold, release, delete)
//! works in one organisation and never sees another's messages.
//!
//! What the administrative operations do to a message that is leased right
//! now (being delivered):
//! - hold: takes effect after the attempt in progress, which still reports
//!   its outcomes; the message is not claimed again until released.
//! - release: makes a held message active; the lease stays.
//! - retry: refused ([`StoreError::Conflict`]): the attempt in progress
//!   decides when the next one is. An expired lease does not count.
//! - delete: removes it; the attempt in progress may still deliver, and its
//!   `finish_attempt` returns false.

use std::fmt;
use std::str::FromStr;

use sqlx::Row;
use sqlx::any::AnyRow;

use crate::records::OrgId;
use crate::seal::Kek;
use crate::{Backend, Store, StoreError, Tx, in_tx};

/// A queued message's id (never reused).
pub type QueueId = i64;

/// Which way a message goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Direction {
    /// From outside to the organisation's mail server (decrypt, verify).
    Inbound,
    /// From the organisation out (sign, encrypt).
    Outbound,
}

/// A recipient's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RcptState {
    /// Not done yet: the next attempt will try it.
    Queued,
    /// Handed over to the next hop.
    Delivered,
    /// Given up on (permanent failure, or too old).
    Failed,
    /// Kept back by policy.
    Quarantined,
}

/// A message's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MessageState {
    /// Waiting for its next attempt, or being delivered.
    Active,
    /// Stopped by an administrator: never claimed until released.
    Held,
    /// No recipient left queued.
    Done,
}

/// A name that is not one of an enum's names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnknownName {
    /// What was parsed (`direction`, ...).
    pub what: &'static str,
    /// The name given.
    pub name: String,
}

impl fmt::Display for UnknownName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "unknown {} {:?}", self.what, self.name)
    }
}

impl std::error::Error for UnknownName {}

/// `as_str`, `Display` and `FromStr` over the names stored in the database.
macro_rules! names {
    ($t:ident, $what:literal: $($v:ident = $s:literal),*) => {
        impl $t {
            /// The name stored in the database.
            pub fn as_str(self) -> &'static str {
                match self {
                    $($t::$v => $s,)*
                }
            }
        }

        impl fmt::Display for $t {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl FromStr for $t {
            type Err = UnknownName;

            fn from_str(s: &str) -> Result<Self, UnknownName> {
                match s {
                    $($s => Ok($t::$v),)*
                    _ => Err(UnknownName { what: $what, name: s.to_string() }),
                }
            }
        }
    };
}

names!(Direction, "direction": Inbound = "inbound", Outbound = "outbound");
names!(RcptState, "recipient state": Queued = "queued", Delivered = "delivered",
    Failed = "failed", Quarantined = "quarantined");
names!(MessageState, "message state": Active = "active", Held = "held", Done = "done");

/// One recipient of a message to queue.
#[derive(Debug, Clone, Copy)]
pub struct NewRecipient<'a> {
    /// The address (RCPT TO), as given.
    pub address: &'a str,
    /// DSN NOTIFY, e.g. `FAILURE,DELAY` or `NEVER`.
    pub notify: Option<&'a str>,
    /// DSN ORCPT, e.g. `rfc822;x@y`.
    pub orcpt: Option<&'a str>,
}

/// A message to queue.
#[derive(Debug, Clone, Copy)]
pub struct NewMessage<'a> {
    /// The organisation it belongs to.
    pub org: OrgId,
    /// Which way it goes.
    pub direction: Direction,
    /// MAIL FROM; `""` for the null reverse path `<>`.
    pub mail_from: &'a str,
    /// DSN ENVID.
    pub envid: Option<&'a str>,
    /// DSN RET (`FULL` or `HDRS`).
    pub ret: Option<&'a str>,
    /// Who handed it over, e.g. `helo=mx.example peer=1.2.3.4:5555 tls=yes`.
    pub client: &'a str,
    /// The message, as received.
    pub body: &'a [u8],
    /// Its recipients, in envelope order (at least one).
    pub recipients: &'a [NewRecipient<'a>],
}

/// A message a worker has claimed, with the recipients still to do.
#[derive(Debug, Clone)]
pub struct ClaimedMessage {
    /// Id.
    pub id: QueueId,
    /// Organisation.
    pub org: OrgId,
    /// Which way it goes.
    pub direction: Direction,
    /// MAIL FROM (`""` for `<>`).
    pub mail_from: String,
    /// DSN ENVID.
    pub envid: Option<String>,
    /// DSN RET.
    pub ret: Option<String>,
    /// Who handed it over.
    pub client: String,
    /// The message.
    pub body: Vec<u8>,
    /// When it was accepted.
    pub received_at: i64,
    /// Attempts made before this one.
    pub attempts: i64,
    /// An administrator released it from quarantine: deliver as it is.
    pub released: bool,
    /// The recipients still queued, in envelope order.
    pub recipients: Vec<QueuedRecipient>,
}

/// A recipient still to deliver.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueuedRecipient {
    /// Position in the envelope (from 0): what [`RcptResult::idx`] names.
    pub idx: i64,
    /// Address.
    pub address: String,
    /// DSN NOTIFY.
    pub notify: Option<String>,
    /// DSN ORCPT.
    pub orcpt: Option<String>,
    /// Attempts made for it so far.
    pub attempts: i64,
    /// Why the last attempt was deferred, if there was one.
    pub last_error: Option<String>,
}

/// What one attempt did for one recipient; the text is kept with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Handed over (e.g. the next hop's reply).
    Delivered(String),
    /// Try again later (why not now).
    Deferred(String),
    /// Given up (why).
    Failed(String),
    /// Kept back by policy (why).
    Quarantined(String),
}

impl Outcome {
    /// The recipient's state after this outcome, and its text.
    fn state(&self) -> (RcptState, &str) {
        match self {
            Outcome::Delivered(t) => (RcptState::Delivered, t),
            Outcome::Deferred(t) => (RcptState::Queued, t),
            Outcome::Failed(t) => (RcptState::Failed, t),
            Outcome::Quarantined(t) => (RcptState::Quarantined, t),
        }
    }
}

/// One recipient's outcome.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RcptResult {
    /// The recipient ([`QueuedRecipient::idx`]).
    pub idx: i64,
    /// What happened.
    pub outcome: Outcome,
}

/// A queued message at a glance (no body).
#[derive(Debug, Clone)]
pub struct QueueSummary {
    /// Id.
    pub id: QueueId,
    /// Which way it goes.
    pub direction: Direction,
    /// State.
    pub state: MessageState,
    /// MAIL FROM (`""` for `<>`).
    pub mail_from: String,
    /// When it was accepted.
    pub received_at: i64,
    /// When it is next due (meaningless once done).
    pub next_attempt: i64,
    /// Attempts made.
    pub attempts: i64,
    /// Size of the body, bytes.
    pub size: i64,
    /// Every recipient and its state, in envelope order.
    pub recipients: Vec<(String, RcptState)>,
    /// What the last attempt noted about the message, if anything.
    pub note: Option<String>,
}

/// Everything about one queued message.
#[derive(Debug, Clone)]
pub struct QueueDetail {
    /// Id.
    pub id: QueueId,
    /// Which way it goes.
    pub direction: Direction,
    /// State.
    pub state: MessageState,
    /// MAIL FROM (`""` for `<>`).
    pub mail_from: String,
    /// DSN ENVID.
    pub envid: Option<String>,
    /// DSN RET.
    pub ret: Option<String>,
    /// Who handed it over.
    pub client: String,
    /// When it was accepted.
    pub received_at: i64,
    /// When it is next due.
    pub next_attempt: i64,
    /// Attempts made.
    pub attempts: i64,
    /// Size of the body, bytes.
    pub size: i64,
    /// What the last attempt noted, if anything.
    pub note: Option<String>,
    /// The worker holding it, while leased (it may have expired).
    pub lease_owner: Option<String>,
    /// Until when.
    pub lease_until: Option<i64>,
    /// When it became done.
    pub done_at: Option<i64>,
    /// Every recipient, in envelope order.
    pub recipients: Vec<RecipientDetail>,
    /// The message.
    pub body: Vec<u8>,
}

/// Everything about one recipient of a queued message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecipientDetail {
    /// Position in the envelope (from 0).
    pub idx: i64,
    /// Address.
    pub address: String,
    /// DSN NOTIFY.
    pub notify: Option<String>,
    /// DSN ORCPT.
    pub orcpt: Option<String>,
    /// State.
    pub state: RcptState,
    /// Attempts made for it.
    pub attempts: i64,
    /// The text of its last outcome: why it was deferred, failed or
    /// quarantined, or the next hop's reply when delivered.
    pub last_error: Option<String>,
    /// When its state or attempts last changed.
    pub updated_at: i64,
}

fn parse<T: FromStr<Err = UnknownName>>(r: &AnyRow, col: &str) -> Result<T, StoreError> {
    let s: String = r.try_get(col)?;
    s.parse()
        .map_err(|e: UnknownName| StoreError::Corrupt(e.to_string()))
}

/// The claim: the due, unleased, active messages, oldest due first, leased
/// in the same statement. `$lock` locks what the subquery picks (PostgreSQL:
/// rows another transaction is claiming are skipped, not waited for).
macro_rules! claim_sql {
    ($lock:literal) => {
        concat!(
            "UPDATE queue_messages SET lease_owner = $1, lease_until = $2 WHERE id IN (",
            "SELECT id FROM queue_messages WHERE state = 'active' AND next_attempt <= $3 ",
            "AND (lease_until IS NULL OR lease_until < $3) ORDER BY next_attempt, id LIMIT $4",
            $lock,
            ") RETURNING id, org_id, direction, mail_from, envid, ret, client, body, body_kek, body_chunks, size, ",
            "received_at, attempts, next_attempt, released"
        )
    };
}

impl Tx<'_> {
    /// Queues a message for all its recipients, due now. Visible to workers
    /// once this transaction commits.
    pub async fn enqueue(&mut self, m: &NewMessage<'_>, now: i64) -> Result<QueueId, StoreError> {
        if m.recipients.is_empty() {
            return Err(StoreError::Conflict(
                "a message to queue needs at least one recipient".into(),
            ));
        }
        // Sealed under the master key the database names (on PostgreSQL
        // under the sealing lock, so a rotation re-seals it or is seen), in
        // chunks: neither the driver nor the database ever holds a second
        // copy of a large body.
        let kek = self.sealing_kek().await?;
        let chunks = m.body.chunks(BODY_CHUNK);
        let row = sqlx::query(
            "INSERT INTO queue_messages (org_id, direction, state, mail_from, envid, ret, client, \
             body, body_kek, body_chunks, size, received_at, next_attempt, attempts) \
             VALUES ($1, $2, 'active', $3, $4, $5, $6, $7, $8, $9, $10, $11, $11, 0) RETURNING id",
        )
        .bind(m.org.0)
        .bind(m.direction.as_str())
        .bind(m.mail_from)
        .bind(m.envid)
        .bind(m.ret)
        .bind(m.client)
        .bind(Vec::<u8>::new())
        .bind(kek.id())
        .bind(i64::try_from(chunks.len()).unwrap_or(i64::MAX))
        .bind(i64::try_from(m.body.len()).unwrap_or(i64::MAX))
        .bind(now)
        .fetch_one(&mut *self.tx)
        .await?;
        let id: QueueId = row.try_get("id")?;
        for (seq, chunk) in (0i64..).zip(m.body.chunks(BODY_CHUNK)) {
            sqlx::query(
                "INSERT INTO queue_body_chunks (message_id, seq, sealed) VALUES ($1, $2, $3)",
            )
            .bind(id)
            .bind(seq)
            .bind(kek.seal(&chunk_aad(m.org, id, seq), chunk)?)
            .execute(&mut *self.tx)
            .await?;
        }
        for (idx, r) in (0i64..).zip(m.recipients) {
            sqlx::query(
                "INSERT INTO queue_recipients (message_id, idx, address, notify, orcpt, state, \
                 attempts, updated_at) VALUES ($1, $2, $3, $4, $5, 'queued', 0, $6)",
            )
            .bind(id)
            .bind(idx)
            .bind(r.address)
            .bind(r.notify)
            .bind(r.orcpt)
            .bind(now)
            .execute(&mut *self.tx)
            .await?;
        }
        Ok(id)
    }

    /// Leases up to `limit` due messages (active, `next_attempt <= now`,
    /// lease free or expired), oldest due first, to `owner` until
    /// `now + lease_secs`, with the recipients still queued. Serves every
    /// organisation. Two workers never hold the same message: on PostgreSQL
    /// the rows are picked `FOR UPDATE SKIP LOCKED`, on SQLite the write
    /// transaction (`BEGIN IMMEDIATE`) orders claims.
    pub async fn claim(
        &mut self,
        owner: &str,
        now: i64,
        lease_secs: i64,
        limit: i64,
    ) -> Result<Vec<ClaimedMessage>, StoreError> {
        if limit <= 0 {
            return Ok(Vec::new());
        }
        let sql = match self.backend() {
            Backend::Sqlite => claim_sql!(""),
            Backend::Postgres => claim_sql!(" FOR UPDATE SKIP LOCKED"),
        };
        let rows = sqlx::query(sql)
            .bind(owner)
            .bind(now.saturating_add(lease_secs.max(0)))
            .bind(now)
            .bind(limit)
            .fetch_all(&mut *self.tx)
            .await?;
        let mut due = Vec::with_capacity(rows.len());
        for r in &rows {
            let org = OrgId(r.try_get("org_id")?);
            let body = BodyRef::of(r)?;
            let m = ClaimedMessage {
                id: r.try_get("id")?,
                org,
                direction: parse(r, "direction")?,
                mail_from: r.try_get("mail_from")?,
                envid: r.try_get("envid")?,
                ret: r.try_get("ret")?,
                client: r.try_get("client")?,
                body: Vec::new(),
                received_at: r.try_get("received_at")?,
                attempts: r.try_get("attempts")?,
                released: r.try_get::<i64, _>("released")? != 0,
                recipients: Vec::new(),
            };
            due.push((r.try_get::<i64, _>("next_attempt")?, m, body));
        }
        drop(rows);
        // RETURNING keeps no order.
        due.sort_by_key(|(next, m, _)| (*next, m.id));
        let mut out = Vec::with_capacity(due.len());
        for (_, mut m, body) in due {
            m.body = self.load_body(m.org, m.id, body).await?;
            let rows = sqlx::query(
                "SELECT idx, address, notify, orcpt, attempts, last_error FROM queue_recipients \
                 WHERE message_id = $1 AND state = 'queued' ORDER BY idx",
            )
            .bind(m.id)
            .fetch_all(&mut *self.tx)
            .await?;
            m.recipients = rows
                .iter()
                .map(|r| {
                    Ok(QueuedRecipient {
                        idx: r.try_get("idx")?,
                        address: r.try_get("address")?,
                        notify: r.try_get("notify")?,
                        orcpt: r.try_get("orcpt")?,
                        attempts: r.try_get("attempts")?,
                        last_error: r.try_get("last_error")?,
                    })
                })
                .collect::<Result<_, StoreError>>()?;
            out.push(m);
        }
        Ok(out)
    }

    /// Frees every lease whose owner name starts with `owner_prefix`: a
    /// node restarting after a crash takes back what its dead workers had
    /// claimed, instead of waiting for the leases to expire. Returns how
    /// many. Only for a prefix no live worker uses (the caller holds the
    /// node's lock).
    pub async fn release_leases(&mut self, owner_prefix: &str) -> Result<i64, StoreError> {
        let pattern = format!(
            "{}%",
            owner_prefix
                .replace('\\', "\\\\")
                .replace('%', "\\%")
                .replace('_', "\\_")
        );
        let done = sqlx::query(
            "UPDATE queue_messages SET lease_owner = NULL, lease_until = NULL \
             WHERE lease_owner LIKE $1 ESCAPE '\\'",
        )
        .bind(pattern)
        .execute(&mut *self.tx)
        .await?;
        Ok(done.rows_affected() as i64)
    }

    /// Extends `owner`'s lease on message `id` to `until` (a long delivery).
    /// False, changing nothing, when `owner` no longer holds it.
    pub async fn renew_lease(
        &mut self,
        id: QueueId,
        owner: &str,
        until: i64,
    ) -> Result<bool, StoreError> {
        let done = sqlx::query(
            "UPDATE queue_messages SET lease_until = $1 WHERE id = $2 AND lease_owner = $3",
        )
        .bind(until)
        .bind(id)
        .bind(owner)
        .execute(&mut *self.tx)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Records an attempt on message `id`: each result's outcome for its
    /// recipient (a deferral leaves it queued), one more attempt for the
    /// message and for each recipient in `results`, the next attempt at
    /// `next_attempt`, `note` if given, and the lease released. With no
    /// recipient left queued the message is done.
    ///
    /// Only while `owner` still holds the lease (an expired lease that
    /// nobody else took still counts): otherwise nothing changes and this
    /// returns false, because another worker may be delivering it now, or
    /// it was deleted. Results for recipients that are not queued are
    /// ignored.
    pub async fn finish_attempt(
        &mut self,
        id: QueueId,
        owner: &str,
        results: &[RcptResult],
        next_attempt: i64,
        note: Option<&str>,
        now: i64,
    ) -> Result<bool, StoreError> {
        // Also locks the row: a claim on another node waits for (SQLite) or
        // skips (PostgreSQL) it until this commits.
        let held = sqlx::query(
            "UPDATE queue_messages SET lease_owner = NULL, lease_until = NULL, \
             attempts = attempts + 1, next_attempt = $1, note = COALESCE($2, note) \
             WHERE id = $3 AND lease_owner = $4",
        )
        .bind(next_attempt)
        .bind(note)
        .bind(id)
        .bind(owner)
        .execute(&mut *self.tx)
        .await?;
        if held.rows_affected() != 1 {
            return Ok(false);
        }
        for r in results {
            let (state, text) = r.outcome.state();
            sqlx::query(
                "UPDATE queue_recipients SET state = $1, attempts = attempts + 1, \
                 last_error = $2, updated_at = $3 \
                 WHERE message_id = $4 AND idx = $5 AND state = 'queued'",
            )
            .bind(state.as_str())
            .bind(text)
            .bind(now)
            .bind(id)
            .bind(r.idx)
            .execute(&mut *self.tx)
            .await?;
        }
        sqlx::query(
            "UPDATE queue_messages SET state = 'done', done_at = $1 WHERE id = $2 AND NOT EXISTS \
             (SELECT 1 FROM queue_recipients WHERE message_id = $2 AND state = 'queued')",
        )
        .bind(now)
        .bind(id)
        .execute(&mut *self.tx)
        .await?;
        self.drop_done_body(id).await?;
        Ok(true)
    }

    /// Empties the body of message `id` once it is done and nothing of it
    /// waits in quarantine (a release needs the body): what was delivered
    /// is not kept for `keep_done`, only its metadata.
    async fn drop_done_body(&mut self, id: QueueId) -> Result<(), StoreError> {
        let dropped = sqlx::query(
            "UPDATE queue_messages SET body = $1, body_kek = NULL, body_chunks = 0 \
             WHERE id = $2 AND state = 'done' \
             AND NOT EXISTS (SELECT 1 FROM queue_recipients WHERE message_id = $2 \
             AND state = 'quarantined')",
        )
        .bind(Vec::<u8>::new())
        .bind(id)
        .execute(&mut *self.tx)
        .await?;
        if dropped.rows_affected() == 1 {
            sqlx::query("DELETE FROM queue_body_chunks WHERE message_id = $1")
                .bind(id)
                .execute(&mut *self.tx)
                .await?;
        }
        Ok(())
    }

    /// Re-seals every queued body under `new` (master-key rotation), and
    /// seals the bodies stored in clear before bodies were sealed. A body
    /// that does not open is reported and left as it is.
    pub(crate) async fn reseal_queue_bodies(
        &mut self,
        new: &Kek,
        report: &mut crate::keys::ResealReport,
    ) -> Result<(), StoreError> {
        let rows = sqlx::query(
            "SELECT id, org_id, body, body_kek, body_chunks, size FROM queue_messages \
             WHERE (body_kek IS NULL AND size > 0 AND body_chunks = 0) OR body_kek <> $1 \
             ORDER BY id",
        )
        .bind(new.id())
        .fetch_all(&mut *self.tx)
        .await?;
        let todo = rows
            .iter()
            .map(|r| {
                Ok((
                    r.try_get("id")?,
                    OrgId(r.try_get("org_id")?),
                    BodyRef::of(r)?,
                ))
            })
            .collect::<Result<Vec<(QueueId, OrgId, BodyRef)>, StoreError>>()?;
        drop(rows);
        for (id, org, body) in todo {
            let kek_id = body.kek.clone().unwrap_or_default();
            let plain = match self.load_body(org, id, body).await {
                Ok(p) => p,
                Err(e) => {
                    report.unopenable.push(crate::keys::Unopenable {
                        key_id: 0,
                        kek_id,
                        reason: format!("queued message {id}: {e}"),
                    });
                    continue;
                }
            };
            if plain.is_empty() {
                continue;
            }
            sqlx::query("DELETE FROM queue_body_chunks WHERE message_id = $1")
                .bind(id)
                .execute(&mut *self.tx)
                .await?;
            let mut n = 0i64;
            for (seq, chunk) in (0i64..).zip(plain.chunks(BODY_CHUNK)) {
                sqlx::query(
                    "INSERT INTO queue_body_chunks (message_id, seq, sealed) VALUES ($1, $2, $3)",
                )
                .bind(id)
                .bind(seq)
                .bind(new.seal(&chunk_aad(org, id, seq), chunk)?)
                .execute(&mut *self.tx)
                .await?;
                n = seq + 1;
            }
            sqlx::query(
                "UPDATE queue_messages SET body = $1, body_kek = $2, body_chunks = $3 WHERE id = $4",
            )
            .bind(Vec::<u8>::new())
            .bind(new.id())
            .bind(n)
            .bind(id)
            .execute(&mut *self.tx)
            .await?;
        }
        Ok(())
    }

    /// The body of message `id`: its sealed chunks opened in order into
    /// one buffer of its size, a body stored in clear before bodies were
    /// sealed as it is, empty once dropped.
    async fn load_body(
        &mut self,
        org: OrgId,
        id: QueueId,
        r: BodyRef,
    ) -> Result<Vec<u8>, StoreError> {
        let Some(kek_id) = r.kek else {
            return Ok(r.clear);
        };
        let kek = self.store.kek(&kek_id).ok_or_else(|| {
            StoreError::Seal(format!(
                "queued message {id} is sealed under master key {kek_id}, which this process does \
                 not hold: give it in {}",
                crate::seal::EXTRA_MASTER_KEYS_ENV
            ))
        })?;
        let mut out = Vec::with_capacity(usize::try_from(r.size).unwrap_or(0));
        // One chunk at a time: at most one sealed chunk besides the result.
        for seq in 0..r.chunks {
            let row = sqlx::query(
                "SELECT sealed FROM queue_body_chunks WHERE message_id = $1 AND seq = $2",
            )
            .bind(id)
            .bind(seq)
            .fetch_optional(&mut *self.tx)
            .await?
            .ok_or_else(|| {
                StoreError::Corrupt(format!("queued message {id}: chunk {seq} is missing"))
            })?;
            let sealed: Vec<u8> = row.try_get("sealed")?;
            out.extend_from_slice(&kek.unseal(&chunk_aad(org, id, seq), &sealed)?);
        }
        Ok(out)
    }
    /// `org`'s queued messages, oldest first, at most `limit`; done ones
    /// only with `include_done`.
    pub async fn queue_list(
        &mut self,
        org: OrgId,
        include_done: bool,
        limit: i64,
    ) -> Result<Vec<QueueSummary>, StoreError> {
        let rows = sqlx::query(
            "SELECT id, direction, state, mail_from, received_at, next_attempt, attempts, size, \
             note FROM queue_messages WHERE org_id = $1 AND ($2 = 1 OR state <> 'done') \
             ORDER BY id LIMIT $3",
        )
        .bind(org.0)
        .bind(i64::from(include_done))
        .bind(limit)
        .fetch_all(&mut *self.tx)
        .await?;
        let mut out = rows
            .iter()
            .map(|r| {
                Ok(QueueSummary {
                    id: r.try_get("id")?,
                    direction: parse(r, "direction")?,
                    state: parse(r, "state")?,
                    mail_from: r.try_get("mail_from")?,
                    received_at: r.try_get("received_at")?,
                    next_attempt: r.try_get("next_attempt")?,
                    attempts: r.try_get("attempts")?,
                    size: r.try_get("size")?,
                    recipients: Vec::new(),
                    note: r.try_get("note")?,
                })
            })
            .collect::<Result<Vec<_>, StoreError>>()?;
        let (Some(first), Some(last)) = (out.first(), out.last()) else {
            return Ok(out);
        };
        let rcpts = sqlx::query(
            "SELECT r.message_id, r.address, r.state FROM queue_recipients r \
             JOIN queue_messages m ON m.id = r.message_id \
             WHERE m.org_id = $1 AND r.message_id >= $2 AND r.message_id <= $3 \
             ORDER BY r.message_id, r.idx",
        )
        .bind(org.0)
        .bind(first.id)
        .bind(last.id)
        .fetch_all(&mut *self.tx)
        .await?;
        // Both are in id order: walk them together.
        let mut i = 0;
        for r in &rcpts {
            let mid: QueueId = r.try_get("message_id")?;
            while i < out.len() && out[i].id < mid {
                i += 1;
            }
            if let Some(m) = out.get_mut(i).filter(|m| m.id == mid) {
                m.recipients
                    .push((r.try_get("address")?, parse(r, "state")?));
            }
        }
        Ok(out)
    }

    /// Everything about message `id` of `org`, body included.
    pub async fn queue_show(&mut self, org: OrgId, id: QueueId) -> Result<QueueDetail, StoreError> {
        let r = sqlx::query(
            "SELECT id, direction, state, mail_from, envid, ret, client, received_at, \
             next_attempt, attempts, size, note, lease_owner, lease_until, done_at, body, body_kek, \
             body_chunks \
             FROM queue_messages WHERE org_id = $1 AND id = $2",
        )
        .bind(org.0)
        .bind(id)
        .fetch_optional(&mut *self.tx)
        .await?
        .ok_or_else(|| not_found(id))?;
        let rcpts = sqlx::query(
            "SELECT idx, address, notify, orcpt, state, attempts, last_error, updated_at \
             FROM queue_recipients WHERE message_id = $1 ORDER BY idx",
        )
        .bind(id)
        .fetch_all(&mut *self.tx)
        .await?;
        let body = BodyRef::of(&r)?;
        let body = self.load_body(org, id, body).await?;
        Ok(QueueDetail {
            id: r.try_get("id")?,
            direction: parse(&r, "direction")?,
            state: parse(&r, "state")?,
            mail_from: r.try_get("mail_from")?,
            envid: r.try_get("envid")?,
            ret: r.try_get("ret")?,
            client: r.try_get("client")?,
            received_at: r.try_get("received_at")?,
            next_attempt: r.try_get("next_attempt")?,
            attempts: r.try_get("attempts")?,
            size: r.try_get("size")?,
            note: r.try_get("note")?,
            lease_owner: r.try_get("lease_owner")?,
            lease_until: r.try_get("lease_until")?,
            done_at: r.try_get("done_at")?,
            recipients: rcpts
                .iter()
                .map(|r| {
                    Ok(RecipientDetail {
                        idx: r.try_get("idx")?,
                        address: r.try_get("address")?,
                        notify: r.try_get("notify")?,
                        orcpt: r.try_get("orcpt")?,
                        state: parse(r, "state")?,
                        attempts: r.try_get("attempts")?,
                        last_error: r.try_get("last_error")?,
                        updated_at: r.try_get("updated_at")?,
                    })
                })
                .collect::<Result<_, StoreError>>()?,
            body,
        })
    }

    /// Makes message `id` of `org` due at `now`, releasing it if held.
    /// Refused while it is being delivered (an unexpired lease: that
    /// attempt decides when the next one is) and once it is done.
    pub async fn queue_retry(
        &mut self,
        org: OrgId,
        id: QueueId,
        now: i64,
    ) -> Result<(), StoreError> {
        let done = sqlx::query(
            "UPDATE queue_messages SET next_attempt = $1, state = 'active' \
             WHERE org_id = $2 AND id = $3 AND state <> 'done' \
             AND (lease_until IS NULL OR lease_until < $1)",
        )
        .bind(now)
        .bind(org.0)
        .bind(id)
        .execute(&mut *self.tx)
        .await?;
        if done.rows_affected() == 1 {
            return Ok(());
        }
        let (state, owner, until) = self.queue_state(org, id).await?;
        Err(match state {
            MessageState::Done => done_conflict(id),
            _ => StoreError::Conflict(format!(
                "queued message {id} is being delivered now (lease of {} until {}): \
                 retry it after that attempt",
                owner.unwrap_or_default(),
                until.unwrap_or_default()
            )),
        })
    }

    /// Makes every active message of `org` that no attempt holds due at
    /// `now` (held ones stay held, done ones done). Returns the ids made
    /// due and the ids left alone because an attempt is delivering them.
    pub async fn queue_retry_all(
        &mut self,
        org: OrgId,
        now: i64,
    ) -> Result<(Vec<QueueId>, Vec<QueueId>), StoreError> {
        let due = sqlx::query(
            "UPDATE queue_messages SET next_attempt = $1 WHERE org_id = $2 AND state = 'active' \
             AND (lease_until IS NULL OR lease_until < $1) RETURNING id",
        )
        .bind(now)
        .bind(org.0)
        .fetch_all(&mut *self.tx)
        .await?;
        let mut due = due
            .iter()
            .map(|r| Ok(r.try_get("id")?))
            .collect::<Result<Vec<QueueId>, StoreError>>()?;
        due.sort_unstable();
        let busy = sqlx::query(
            "SELECT id FROM queue_messages WHERE org_id = $1 AND state = 'active' \
             AND lease_until >= $2 ORDER BY id",
        )
        .bind(org.0)
        .bind(now)
        .fetch_all(&mut *self.tx)
        .await?
        .iter()
        .map(|r| Ok(r.try_get("id")?))
        .collect::<Result<Vec<QueueId>, StoreError>>()?;
        Ok((due, busy))
    }

    /// The messages of `org` that still hold their body: waiting, held,
    /// or with recipients in quarantine (a release delivers the body).
    pub async fn queue_ids_with_body(&mut self, org: OrgId) -> Result<Vec<QueueId>, StoreError> {
        let rows = sqlx::query(
            "SELECT id FROM queue_messages m WHERE org_id = $1 AND (state <> 'done' OR EXISTS \
             (SELECT 1 FROM queue_recipients r WHERE r.message_id = m.id AND r.state = 'quarantined')) \
             ORDER BY id",
        )
        .bind(org.0)
        .fetch_all(&mut *self.tx)
        .await?;
        rows.iter().map(|r| Ok(r.try_get("id")?)).collect()
    }

    /// Holds message `id` of `org`: never claimed until released. An
    /// attempt in progress still finishes (and may leave it done).
    pub async fn queue_hold(&mut self, org: OrgId, id: QueueId) -> Result<(), StoreError> {
        self.set_state(org, id, MessageState::Held).await
    }

    /// Releases message `id` of `org`: held -> active (due when it was due
    /// before; active stays active); or, for a message whose recipients
    /// were quarantined, those recipients are queued again, due `now`, and
    /// the message is marked released (delivered as it is, not quarantined
    /// again).
    pub async fn queue_release(
        &mut self,
        org: OrgId,
        id: QueueId,
        now: i64,
    ) -> Result<(), StoreError> {
        let requeued = sqlx::query(
            "UPDATE queue_recipients SET state = 'queued', updated_at = $1 \
             WHERE state = 'quarantined' AND message_id IN \
             (SELECT id FROM queue_messages WHERE org_id = $2 AND id = $3)",
        )
        .bind(now)
        .bind(org.0)
        .bind(id)
        .execute(&mut *self.tx)
        .await?;
        if requeued.rows_affected() > 0 {
            sqlx::query(
                "UPDATE queue_messages SET state = 'active', released = 1, next_attempt = $1, \
                 done_at = NULL WHERE org_id = $2 AND id = $3",
            )
            .bind(now)
            .bind(org.0)
            .bind(id)
            .execute(&mut *self.tx)
            .await?;
            return Ok(());
        }
        self.set_state(org, id, MessageState::Active).await
    }

    async fn set_state(
        &mut self,
        org: OrgId,
        id: QueueId,
        state: MessageState,
    ) -> Result<(), StoreError> {
        let done = sqlx::query(
            "UPDATE queue_messages SET state = $1 WHERE org_id = $2 AND id = $3 AND state <> 'done'",
        )
        .bind(state.as_str())
        .bind(org.0)
        .bind(id)
        .execute(&mut *self.tx)
        .await?;
        if done.rows_affected() == 1 {
            return Ok(());
        }
        self.queue_state(org, id).await?;
        Err(done_conflict(id))
    }

    /// State and lease (owner, until) of message `id` of `org`.
    async fn queue_state(
        &mut self,
        org: OrgId,
        id: QueueId,
    ) -> Result<(MessageState, Option<String>, Option<i64>), StoreError> {
        let r = sqlx::query(
            "SELECT state, lease_owner, lease_until FROM queue_messages WHERE org_id = $1 AND id = $2",
        )
        .bind(org.0)
        .bind(id)
        .fetch_optional(&mut *self.tx)
        .await?
        .ok_or_else(|| not_found(id))?;
        Ok((
            parse(&r, "state")?,
            r.try_get("lease_owner")?,
            r.try_get("lease_until")?,
        ))
    }

    /// Removes message `id` of `org` and its recipients, in any state. An
    /// attempt in progress may still deliver it; its `finish_attempt`
    /// returns false.
    pub async fn queue_delete(&mut self, org: OrgId, id: QueueId) -> Result<(), StoreError> {
        sqlx::query(
            "DELETE FROM queue_body_chunks WHERE message_id IN \
             (SELECT id FROM queue_messages WHERE org_id = $1 AND id = $2)",
        )
        .bind(org.0)
        .bind(id)
        .execute(&mut *self.tx)
        .await?;
        sqlx::query(
            "DELETE FROM queue_recipients WHERE message_id IN \
             (SELECT id FROM queue_messages WHERE org_id = $1 AND id = $2)",
        )
        .bind(org.0)
        .bind(id)
        .execute(&mut *self.tx)
        .await?;
        let done = sqlx::query("DELETE FROM queue_messages WHERE org_id = $1 AND id = $2")
            .bind(org.0)
            .bind(id)
            .execute(&mut *self.tx)
            .await?;
        if done.rows_affected() != 1 {
            return Err(not_found(id));
        }
        Ok(())
    }

    /// How many messages are (active, held): of `org`, or of the whole
    /// installation with `None` (back-pressure, metrics).
    pub async fn queue_depth(&mut self, org: Option<OrgId>) -> Result<(i64, i64), StoreError> {
        let r = sqlx::query(
            "SELECT COUNT(CASE WHEN state = 'active' THEN 1 END) AS active, \
             COUNT(CASE WHEN state = 'held' THEN 1 END) AS held \
             FROM queue_messages WHERE state <> 'done' AND ($1 IS NULL OR org_id = $1)",
        )
        .bind(org.map(|o| o.0))
        .fetch_one(&mut *self.tx)
        .await?;
        Ok((r.try_get("active")?, r.try_get("held")?))
    }

    /// When the oldest active message of each direction was received
    /// (of `org`, or of the whole installation with `None`).
    pub async fn oldest_active(
        &mut self,
        org: Option<OrgId>,
    ) -> Result<Vec<(Direction, i64)>, StoreError> {
        let rows = sqlx::query(
            "SELECT direction, MIN(received_at) AS oldest FROM queue_messages \
             WHERE state = 'active' AND ($1 IS NULL OR org_id = $1) GROUP BY direction",
        )
        .bind(org.map(|o| o.0))
        .fetch_all(&mut *self.tx)
        .await?;
        rows.iter()
            .map(|r| Ok((parse(r, "direction")?, r.try_get("oldest")?)))
            .collect()
    }

    /// Deletes the done messages (of every organisation) that became done
    /// before `older_than`; returns how many.
    pub async fn purge_done(&mut self, older_than: i64) -> Result<i64, StoreError> {
        // Quarantined mail stays until an administrator releases or
        // deletes it.
        const PURGEABLE: &str = "SELECT id FROM queue_messages m WHERE state = 'done' AND done_at < $1 \
             AND NOT EXISTS (SELECT 1 FROM queue_recipients q WHERE q.message_id = m.id \
             AND q.state = 'quarantined')";
        let ids: Vec<i64> = sqlx::query(PURGEABLE)
            .bind(older_than)
            .fetch_all(&mut *self.tx)
            .await?
            .iter()
            .map(|r| r.try_get("id"))
            .collect::<Result<_, _>>()?;
        for chunk in ids.chunks(500) {
            let list = chunk
                .iter()
                .map(i64::to_string)
                .collect::<Vec<_>>()
                .join(",");
            sqlx::query(sqlx::AssertSqlSafe(format!(
                "DELETE FROM queue_recipients WHERE message_id IN ({list})"
            )))
            .execute(&mut *self.tx)
            .await?;
            sqlx::query(sqlx::AssertSqlSafe(format!(
                "DELETE FROM queue_body_chunks WHERE message_id IN ({list})"
            )))
            .execute(&mut *self.tx)
            .await?;
            sqlx::query(sqlx::AssertSqlSafe(format!(
                "DELETE FROM queue_messages WHERE id IN ({list})"
            )))
            .execute(&mut *self.tx)
            .await?;
        }
        let done = ids.len();
        Ok(i64::try_from(done).unwrap_or(i64::MAX))
    }
}

/// Bodies are stored in sealed chunks of this size at most.
const BODY_CHUNK: usize = 1024 * 1024;

/// The associated data a body chunk is sealed with: it opens only as that
/// chunk of that message of that organisation.
fn chunk_aad(org: OrgId, id: QueueId, seq: i64) -> String {
    format!("queue-body:{}:{id}:{seq}", org.0)
}

/// Where a queue row's body is: its columns `body`, `body_kek`,
/// `body_chunks` and `size`.
#[derive(Debug)]
struct BodyRef {
    /// A body stored in clear before bodies were sealed (else empty).
    clear: Vec<u8>,
    /// The master key its chunks are sealed under; None: not sealed.
    kek: Option<String>,
    chunks: i64,
    size: i64,
}

impl BodyRef {
    fn of(r: &AnyRow) -> Result<BodyRef, StoreError> {
        Ok(BodyRef {
            clear: r.try_get("body")?,
            kek: r.try_get("body_kek")?,
            chunks: r.try_get("body_chunks")?,
            size: r.try_get("size")?,
        })
    }
}

fn not_found(id: QueueId) -> StoreError {
    StoreError::NotFound(format!("queued message {id}"))
}

fn done_conflict(id: QueueId) -> StoreError {
    StoreError::Conflict(format!(
        "queued message {id} is done: no recipient is left to deliver"
    ))
}

impl Store {
    /// Queues `msgs` in one transaction and one commit: on SQLite one disk
    /// sync for all of them (group commit: the gateway gathers the messages
    /// of concurrent SMTP sessions and replies 250 to each once this
    /// returns). All or nothing: on an error none is queued.
    pub async fn enqueue_batch(
        &self,
        msgs: &[NewMessage<'_>],
        now: i64,
    ) -> Result<Vec<QueueId>, StoreError> {
        let mut tx = self.begin().await?;
        let mut ids = Vec::with_capacity(msgs.len());
        for m in msgs {
            ids.push(tx.enqueue(m, now).await?);
        }
        tx.commit().await?;
        Ok(ids)
    }
}

in_tx! { begin:
    /// Queues a message, in a transaction (and commit) of its own.
    fn enqueue(&self, m: &NewMessage<'_>, now: i64) -> QueueId;
    /// Leases up to `limit` due messages to `owner`.
    fn claim(&self, owner: &str, now: i64, lease_secs: i64, limit: i64) -> Vec<ClaimedMessage>;
    /// Extends `owner`'s lease on message `id` to `until`.
    fn renew_lease(&self, id: QueueId, owner: &str, until: i64) -> bool;
    /// Frees the leases of a restarted node's dead workers.
    fn release_leases(&self, owner_prefix: &str) -> i64;
    /// Records an attempt on message `id`, if `owner` still holds it.
    fn finish_attempt(&self, id: QueueId, owner: &str, results: &[RcptResult], next_attempt: i64, note: Option<&str>, now: i64) -> bool;
    /// Makes message `id` of `org` due at `now`, releasing it if held.
    fn queue_retry(&self, org: OrgId, id: QueueId, now: i64) -> ();
    /// Holds message `id` of `org`.
    fn queue_hold(&self, org: OrgId, id: QueueId) -> ();
    /// Releases message `id` of `org`.
    fn queue_release(&self, org: OrgId, id: QueueId, now: i64) -> ();
    /// Removes message `id` of `org`.
    fn queue_delete(&self, org: OrgId, id: QueueId) -> ();
    /// Deletes the done messages that became done before `older_than`.
    fn purge_done(&self, older_than: i64) -> i64;
}

in_tx! { begin_read:
    /// `org`'s queued messages, oldest first.
    fn queue_list(&self, org: OrgId, include_done: bool, limit: i64) -> Vec<QueueSummary>;
    /// Everything about message `id` of `org`.
    fn queue_show(&self, org: OrgId, id: QueueId) -> QueueDetail;
    /// How many messages are (active, held).
    fn queue_depth(&self, org: Option<OrgId>) -> (i64, i64);
    /// When the oldest active message of each direction was received.
    fn oldest_active(&self, org: Option<OrgId>) -> Vec<(Direction, i64)>;
}
