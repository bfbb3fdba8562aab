//! Accounts for SMTP AUTH on the outbound listener: a name and an
//! argon2id hash (made and checked by `service`), per organisation.

use sqlx::Row;

use crate::records::OrgId;
use crate::{Store, StoreError, Tx, in_tx, now};

impl Tx<'_> {
    /// Adds `name` with `hash`, or replaces its hash; `may_send_as` (the
    /// comma-separated addresses and @domains it may send as; '' for its
    /// own name) is set when given, else kept. Returns true when the
    /// account is new.
    pub async fn smtp_user_set(
        &mut self,
        org: OrgId,
        name: &str,
        hash: &str,
        may_send_as: Option<&str>,
    ) -> Result<bool, StoreError> {
        let updated = sqlx::query(
            "UPDATE smtp_users SET hash = $1, may_send_as = COALESCE($2, may_send_as) \
             WHERE org_id = $3 AND name = $4",
        )
        .bind(hash)
        .bind(may_send_as)
        .bind(org.0)
        .bind(name)
        .execute(&mut *self.tx)
        .await?;
        if updated.rows_affected() == 1 {
            return Ok(false);
        }
        sqlx::query(
            "INSERT INTO smtp_users (org_id, name, hash, created_at, may_send_as) \
             VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(org.0)
        .bind(name)
        .bind(hash)
        .bind(now())
        .bind(may_send_as.unwrap_or(""))
        .execute(&mut *self.tx)
        .await?;
        Ok(true)
    }

    /// What account `name` may send as (see [`Tx::smtp_user_set`]), if
    /// the account exists.
    pub async fn smtp_user_may_send_as(
        &mut self,
        org: OrgId,
        name: &str,
    ) -> Result<Option<String>, StoreError> {
        let r = sqlx::query("SELECT may_send_as FROM smtp_users WHERE org_id = $1 AND name = $2")
            .bind(org.0)
            .bind(name)
            .fetch_optional(&mut *self.tx)
            .await?;
        Ok(match r {
            Some(r) => Some(r.try_get("may_send_as")?),
            None => None,
        })
    }

    /// Removes `name`; NotFound when there is no such account.
    pub async fn smtp_user_remove(&mut self, org: OrgId, name: &str) -> Result<(), StoreError> {
        let done = sqlx::query("DELETE FROM smtp_users WHERE org_id = $1 AND name = $2")
            .bind(org.0)
            .bind(name)
            .execute(&mut *self.tx)
            .await?;
        if done.rows_affected() != 1 {
            return Err(StoreError::NotFound(format!("SMTP user {name:?}")));
        }
        Ok(())
    }

    /// The hash of `name`, if the account exists.
    pub async fn smtp_user_hash(
        &mut self,
        org: OrgId,
        name: &str,
    ) -> Result<Option<String>, StoreError> {
        let r = sqlx::query("SELECT hash FROM smtp_users WHERE org_id = $1 AND name = $2")
            .bind(org.0)
            .bind(name)
            .fetch_optional(&mut *self.tx)
            .await?;
        Ok(match r {
            Some(r) => Some(r.try_get("hash")?),
            None => None,
        })
    }

    /// Every account of `org`: (name, created_at, may_send_as).
    pub async fn smtp_users(
        &mut self,
        org: OrgId,
    ) -> Result<Vec<(String, i64, String)>, StoreError> {
        let rows = sqlx::query(
            "SELECT name, created_at, may_send_as FROM smtp_users WHERE org_id = $1 ORDER BY name",
        )
        .bind(org.0)
        .fetch_all(&mut *self.tx)
        .await?;
        rows.iter()
            .map(|r| {
                Ok((
                    r.try_get("name")?,
                    r.try_get("created_at")?,
                    r.try_get("may_send_as")?,
                ))
            })
            .collect()
    }
}

in_tx! { begin_read:
    /// The hash of SMTP user `name`.
    fn smtp_user_hash(&self, org: OrgId, name: &str) -> Option<String>;
    /// Every SMTP user of `org`.
    fn smtp_users(&self, org: OrgId) -> Vec<(String, i64, String)>;
    /// What SMTP user `name` may send as.
    fn smtp_user_may_send_as(&self, org: OrgId, name: &str) -> Option<String>;
}
