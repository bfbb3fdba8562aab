//! Attempt limits: one limiter for every secret the product checks
//! (administrator logins, activation codes, certificate-download
//! passwords, SMTP AUTH, public forms), shared by every node on one
//! database.
//!
//! An attempt is *taken* before the secret is checked, by one conditional
//! upsert (`n + 1` only while `n` is below the maximum, or a fresh window
//! when the old one ended), so parallel requests can never check more
//! secrets than the limit: each of them either got one of the `max` slots
//! or none. A right secret gives its attempt back ([`Tx::limit_release`]).
//!
//! Per-link limits (activation code, certificate password) count on the
//! user's `code_failures`, taken the same way ([`Tx::link_attempt_take`]):
//! the link stays locked until an administrator makes a new code.
//!
//! Device cookies of administrators live here too
//! ([`Tx::admin_device_add`]).

use sqlx::Row;

use crate::records::OrgId;
use crate::{Store, StoreError, Tx, in_tx};

/// One key to take an attempt from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LimitKey {
    /// What is limited (`admin-login-name`, `smtp-auth-address`, ...).
    pub scope: String,
    /// Whose attempts (a digest of the name, the address, ...).
    pub key: String,
    /// Attempts allowed in one window (at least 1).
    pub max: i64,
    /// The window's length in seconds.
    pub window: i64,
}

/// What [`Tx::limit_take`] answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Take {
    /// Every key gave an attempt: (scope, key, window end) of each, to give
    /// back on success.
    Granted(Vec<(String, String, i64)>),
    /// A key is used up (nothing was taken from any key): seconds until its
    /// window ends.
    Limited {
        /// The scope that refused.
        scope: String,
        /// Seconds to wait (at least 1).
        retry_after: i64,
    },
}

impl Tx<'_> {
    /// Takes one attempt from each of `keys` at `now`, all or none: when
    /// one key is used up, the caller must roll this transaction back
    /// (the attempts taken from the other keys in it are then undone).
    /// Keys are taken in a fixed order, so transactions on PostgreSQL that
    /// share keys never wait for each other in a cycle.
    pub async fn limit_take(&mut self, keys: &[LimitKey], now: i64) -> Result<Take, StoreError> {
        let mut keys: Vec<&LimitKey> = keys.iter().collect();
        keys.sort_by(|a, b| (&a.scope, &a.key).cmp(&(&b.scope, &b.key)));
        keys.dedup_by(|a, b| a.scope == b.scope && a.key == b.key);
        let mut granted = Vec::new();
        for k in keys {
            let max = k.max.max(1);
            let window = k.window.max(1);
            let row = sqlx::query(
                "INSERT INTO attempt_limits (scope, lkey, n, window_end) VALUES ($1, $2, 1, $3) \
                 ON CONFLICT (scope, lkey) DO UPDATE SET \
                   n = CASE WHEN attempt_limits.window_end <= $4 THEN 1 \
                            ELSE attempt_limits.n + 1 END, \
                   window_end = CASE WHEN attempt_limits.window_end <= $4 THEN $3 \
                                     ELSE attempt_limits.window_end END \
                 WHERE attempt_limits.window_end <= $4 OR attempt_limits.n < $5 \
                 RETURNING window_end",
            )
            .bind(&k.scope)
            .bind(&k.key)
            .bind(now + window)
            .bind(now)
            .bind(max)
            .fetch_optional(&mut *self.tx)
            .await?;
            match row {
                Some(r) => granted.push((k.scope.clone(), k.key.clone(), r.try_get("window_end")?)),
                None => {
                    let end: i64 = sqlx::query(
                        "SELECT window_end FROM attempt_limits WHERE scope = $1 AND lkey = $2",
                    )
                    .bind(&k.scope)
                    .bind(&k.key)
                    .fetch_optional(&mut *self.tx)
                    .await?
                    .map(|r| r.try_get("window_end"))
                    .transpose()?
                    .unwrap_or(now + 1);
                    return Ok(Take::Limited {
                        scope: k.scope.clone(),
                        retry_after: (end - now).max(1),
                    });
                }
            }
        }
        Ok(Take::Granted(granted))
    }

    /// Gives back attempts taken by [`Tx::limit_take`] (the secret was
    /// right), unless their window has ended and a new one begun since.
    pub async fn limit_release(
        &mut self,
        taken: &[(String, String, i64)],
    ) -> Result<(), StoreError> {
        for (scope, key, window_end) in taken {
            sqlx::query(
                "UPDATE attempt_limits SET n = n - 1 \
                 WHERE scope = $1 AND lkey = $2 AND window_end = $3 AND n > 0",
            )
            .bind(scope)
            .bind(key)
            .bind(*window_end)
            .execute(&mut *self.tx)
            .await?;
        }
        Ok(())
    }

    /// Attempts counted on (`scope`, `key`) in a window still open at
    /// `now`.
    pub async fn limit_count(
        &mut self,
        scope: &str,
        key: &str,
        now: i64,
    ) -> Result<i64, StoreError> {
        let r = sqlx::query(
            "SELECT n FROM attempt_limits WHERE scope = $1 AND lkey = $2 AND window_end > $3",
        )
        .bind(scope)
        .bind(key)
        .bind(now)
        .fetch_optional(&mut *self.tx)
        .await?;
        Ok(match r {
            Some(r) => r.try_get("n")?,
            None => 0,
        })
    }

    /// Forgets windows that ended before `now`; how many.
    pub async fn limits_purge(&mut self, now: i64) -> Result<u64, StoreError> {
        // On PostgreSQL the purge skips rows a take holds (and so never
        // waits for one): takes and a purge cannot wait for each other in
        // a cycle. SQLite orders all writers anyway.
        let sql = match self.store.backend {
            crate::Backend::Postgres => {
                "DELETE FROM attempt_limits WHERE (scope, lkey) IN \
                 (SELECT scope, lkey FROM attempt_limits WHERE window_end <= $1 \
                  FOR UPDATE SKIP LOCKED)"
            }
            crate::Backend::Sqlite => "DELETE FROM attempt_limits WHERE window_end <= $1",
        };
        let done = sqlx::query(sql).bind(now).execute(&mut *self.tx).await?;
        let devices = sqlx::query("DELETE FROM admin_devices WHERE expires_at <= $1")
            .bind(now)
            .execute(&mut *self.tx)
            .await?;
        Ok(done.rows_affected() + devices.rows_affected())
    }

    /// Takes one attempt on a link's user (`code_failures + 1` while below
    /// `max`): false when the link is locked.
    pub async fn link_attempt_take(
        &mut self,
        org: OrgId,
        user: i64,
        max: i64,
    ) -> Result<bool, StoreError> {
        let done = sqlx::query(
            "UPDATE users SET code_failures = code_failures + 1 \
             WHERE org_id = $1 AND id = $2 AND code_failures < $3",
        )
        .bind(org.0)
        .bind(user)
        .bind(max)
        .execute(&mut *self.tx)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Gives back an attempt taken by [`Tx::link_attempt_take`].
    pub async fn link_attempt_release(&mut self, org: OrgId, user: i64) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE users SET code_failures = code_failures - 1 \
             WHERE org_id = $1 AND id = $2 AND code_failures > 0",
        )
        .bind(org.0)
        .bind(user)
        .execute(&mut *self.tx)
        .await?;
        Ok(())
    }

    /// Records a device cookie (by the hash of its token) for the
    /// administrator `name` until `expires_at`.
    pub async fn admin_device_add(
        &mut self,
        token_hash: &str,
        name: &str,
        now: i64,
        expires_at: i64,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO admin_devices (token_hash, admin_name, created_at, expires_at) \
             VALUES ($1, $2, $3, $4)",
        )
        .bind(token_hash)
        .bind(name)
        .bind(now)
        .bind(expires_at)
        .execute(&mut *self.tx)
        .await?;
        Ok(())
    }

    /// True when `token_hash` is a device cookie of `name` still good at
    /// `now`.
    pub async fn admin_device_valid(
        &mut self,
        token_hash: &str,
        name: &str,
        now: i64,
    ) -> Result<bool, StoreError> {
        let r = sqlx::query(
            "SELECT 1 AS one FROM admin_devices \
             WHERE token_hash = $1 AND admin_name = $2 AND expires_at > $3",
        )
        .bind(token_hash)
        .bind(name)
        .bind(now)
        .fetch_optional(&mut *self.tx)
        .await?;
        Ok(r.is_some())
    }
}

impl Store {
    /// [`Tx::limit_take`] in a transaction of its own, committed only when
    /// every key gave an attempt.
    pub async fn limit_take(&self, keys: &[LimitKey], now: i64) -> Result<Take, StoreError> {
        let mut tx = self.begin().await?;
        let t = tx.limit_take(keys, now).await?;
        match t {
            Take::Granted(_) => tx.commit().await?,
            Take::Limited { .. } => tx.rollback().await?,
        }
        Ok(t)
    }

    /// [`Tx::link_attempt_take`] in a transaction of its own.
    pub async fn link_attempt_take(
        &self,
        org: OrgId,
        user: i64,
        max: i64,
    ) -> Result<bool, StoreError> {
        let mut tx = self.begin().await?;
        let ok = tx.link_attempt_take(org, user, max).await?;
        tx.commit().await?;
        Ok(ok)
    }
}

in_tx! { begin:
    /// Gives back attempts (the secret was right).
    fn limit_release(&self, taken: &[(String, String, i64)]) -> ();
    /// Forgets ended windows and expired device cookies.
    fn limits_purge(&self, now: i64) -> u64;
    /// Gives back a link attempt.
    fn link_attempt_release(&self, org: OrgId, user: i64) -> ();
    /// Records a device cookie.
    fn admin_device_add(&self, token_hash: &str, name: &str, now: i64, expires_at: i64) -> ();
}

in_tx! { begin_read:
    /// Attempts counted on a key.
    fn limit_count(&self, scope: &str, key: &str, now: i64) -> i64;
    /// Whether a device cookie is good.
    fn admin_device_valid(&self, token_hash: &str, name: &str, now: i64) -> bool;
}
