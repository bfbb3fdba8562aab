//! Accounts for SMTP AUTH on the outbound listener: a name and an
//! argon2id hash (made and checked by `service`), per organisation.

use sqlx::Row;

use crate::records::OrgId;
use crate::{Store, StoreError, Tx, in_tx, now};

impl Tx<'_> {
    /// Adds `name` with `hash`, or replaces its hash. Returns true when
    /// the account is new.
    pub async fn smtp_user_set(
        &mut self,
        org: OrgId,
        name: &str,
        hash: &str,
    ) -> Result<bool, StoreError> {
        let updated =
            sqlx::query("UPDATE smtp_users SET hash = $1 WHERE org_id = $2 AND name = $3")
                .bind(hash)
                .bind(org.0)
                .bind(name)
                .execute(&mut *self.tx)
                .await?;
        if updated.rows_affected() == 1 {
            return Ok(false);
        }
        sqlx::query(
            "INSERT INTO smtp_users (org_id, name, hash, created_at) VALUES ($1, $2, $3, $4)",
        )
        .bind(org.0)
        .bind(name)
        .bind(hash)
        .bind(now())
        .execute(&mut *self.tx)
        .await?;
        Ok(true)
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

    /// Every account of `org`: (name, created_at).
    pub async fn smtp_users(&mut self, org: OrgId) -> Result<Vec<(String, i64)>, StoreError> {
        let rows =
            sqlx::query("SELECT name, created_at FROM smtp_users WHERE org_id = $1 ORDER BY name")
                .bind(org.0)
                .fetch_all(&mut *self.tx)
                .await?;
        rows.iter()
            .map(|r| Ok((r.try_get("name")?, r.try_get("created_at")?)))
            .collect()
    }
}

in_tx! { begin_read:
    /// The hash of SMTP user `name`.
    fn smtp_user_hash(&self, org: OrgId, name: &str) -> Option<String>;
    /// Every SMTP user of `org`.
    fn smtp_users(&self, org: OrgId) -> Vec<(String, i64)>;
}
