//! Revocation data fetched from the network (CRLs and OCSP responses),
//! cached until it expires and shared by every node on one database.
//!
//! An entry is replaced only by one that lasts at least as long: two nodes
//! that fetch at once both write, and the fresher answer stays.

use sqlx::Row;

use crate::{Store, StoreError, Tx, in_tx};

/// One cached answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CachedRevocation {
    /// Where it came from.
    pub url: String,
    /// The DER of the CRL or the OCSP response.
    pub body: Vec<u8>,
    /// When it was fetched (seconds since the epoch).
    pub fetched_at: i64,
    /// Until when it may be used.
    pub next_update: i64,
}

impl Tx<'_> {
    /// The cached answer for (`kind`, `key`) that is still good at `now`.
    pub async fn revocation_get(
        &mut self,
        kind: &str,
        key: &str,
        now: i64,
    ) -> Result<Option<CachedRevocation>, StoreError> {
        let r = sqlx::query(
            "SELECT url, body, fetched_at, next_update FROM revocation_cache \
             WHERE kind = $1 AND cache_key = $2 AND next_update > $3",
        )
        .bind(kind)
        .bind(key)
        .bind(now)
        .fetch_optional(&mut *self.tx)
        .await?;
        r.map(|r| {
            Ok(CachedRevocation {
                url: r.try_get("url")?,
                body: r.try_get("body")?,
                fetched_at: r.try_get("fetched_at")?,
                next_update: r.try_get("next_update")?,
            })
        })
        .transpose()
    }

    /// Stores an answer unless one that lasts longer is there already.
    /// Returns whether it was stored.
    pub async fn revocation_put(
        &mut self,
        kind: &str,
        key: &str,
        entry: &CachedRevocation,
    ) -> Result<bool, StoreError> {
        let done = sqlx::query(
            "INSERT INTO revocation_cache (kind, cache_key, url, body, fetched_at, next_update) \
             VALUES ($1, $2, $3, $4, $5, $6) \
             ON CONFLICT (kind, cache_key) DO UPDATE \
             SET url = excluded.url, body = excluded.body, fetched_at = excluded.fetched_at, \
                 next_update = excluded.next_update \
             WHERE revocation_cache.next_update <= excluded.next_update",
        )
        .bind(kind)
        .bind(key)
        .bind(&entry.url)
        .bind(&entry.body)
        .bind(entry.fetched_at)
        .bind(entry.next_update)
        .execute(&mut *self.tx)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Removes every entry that expired before `now`; how many.
    pub async fn revocation_purge(&mut self, now: i64) -> Result<u64, StoreError> {
        let done = sqlx::query("DELETE FROM revocation_cache WHERE next_update <= $1")
            .bind(now)
            .execute(&mut *self.tx)
            .await?;
        Ok(done.rows_affected())
    }
}

in_tx! { begin:
    /// Stores an answer (see [`Tx::revocation_put`]).
    fn revocation_put(&self, kind: &str, key: &str, entry: &CachedRevocation) -> bool;
    /// Removes expired entries (see [`Tx::revocation_purge`]).
    fn revocation_purge(&self, now: i64) -> u64;
}

in_tx! { begin_read:
    /// A cached answer still good at `now` (see [`Tx::revocation_get`]).
    fn revocation_get(&self, kind: &str, key: &str, now: i64) -> Option<CachedRevocation>;
}

impl Store {
    /// The number of cached answers (for status pages and tests).
    pub async fn revocation_count(&self) -> Result<i64, StoreError> {
        let mut tx = self.begin_read().await?;
        let r = sqlx::query("SELECT COUNT(*) AS n FROM revocation_cache")
            .fetch_one(&mut *tx.tx)
            .await?;
        let n: i64 = r.try_get("n")?;
        tx.commit().await?;
        Ok(n)
    }
}
