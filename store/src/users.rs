//! The organisation's users (employees) and the single-use links sent to
//! them, to administrators and to ledelsesrepræsentanter.
//!
//! Nothing secret is kept in a form that can be used: the CPR number as a
//! keyed hash, the password set at activation and the activation code as
//! argon2id hashes, link tokens as their SHA-256 (all made by `service`).
//! Taking a link is one conditional UPDATE, so a link is used once however
//! many requests race for it.

use sqlx::Row;
use sqlx::any::AnyRow;

use crate::records::OrgId;
use crate::{Store, StoreError, Tx};

/// A user as stored.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct UserRow {
    /// Id.
    pub id: i64,
    /// Organisation.
    pub org: i64,
    /// Name.
    pub name: String,
    /// E-mail address.
    pub email: String,
    /// RID from NemID medarbejdersignatur.
    pub rid: Option<String>,
    /// Keyed hash of the CPR number.
    pub cpr_hash: Option<String>,
    /// Birth date, `YYYY-MM-DD`.
    pub birth_date: Option<String>,
    /// Rights, comma-separated.
    pub rights: String,
    /// Lifecycle status (see `service::users`).
    pub status: String,
    /// The identification means chosen at activation.
    pub ident_means: Option<String>,
    /// argon2id hash of the password set at activation.
    pub password_hash: Option<String>,
    /// argon2id hash of the current activation code.
    pub code_hash: Option<String>,
    /// Wrong activation codes since the code was made.
    pub code_failures: i64,
    /// Created.
    pub created_at: i64,
    /// Last changed.
    pub updated_at: i64,
}

fn user_row(r: &AnyRow) -> Result<UserRow, StoreError> {
    Ok(UserRow {
        id: r.try_get("id")?,
        org: r.try_get("org_id")?,
        name: r.try_get("name")?,
        email: r.try_get("email")?,
        rid: r.try_get("rid")?,
        cpr_hash: r.try_get("cpr_hash")?,
        birth_date: r.try_get("birth_date")?,
        rights: r.try_get("rights")?,
        status: r.try_get("status")?,
        ident_means: r.try_get("ident_means")?,
        password_hash: r.try_get("password_hash")?,
        code_hash: r.try_get("code_hash")?,
        code_failures: r.try_get("code_failures")?,
        created_at: r.try_get("created_at")?,
        updated_at: r.try_get("updated_at")?,
    })
}

macro_rules! user_columns {
    () => {
        "id, org_id, name, email, rid, cpr_hash, birth_date, rights, status, ident_means, \
         password_hash, code_hash, code_failures, created_at, updated_at"
    };
}

/// A link taken: whose it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LinkTarget {
    /// The organisation.
    pub org: OrgId,
    /// The user, for user links.
    pub user: Option<i64>,
    /// When it ends.
    pub expires_at: i64,
}

impl Tx<'_> {
    /// Adds a user; Conflict when `org` has a user with that e-mail address.
    pub async fn user_insert(&mut self, u: &UserRow) -> Result<i64, StoreError> {
        let r = sqlx::query(
            "INSERT INTO users (org_id, name, email, rid, cpr_hash, birth_date, rights, status, \
             ident_means, created_at, updated_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $10) \
             ON CONFLICT (org_id, email) DO NOTHING RETURNING id",
        )
        .bind(u.org)
        .bind(&u.name)
        .bind(&u.email)
        .bind(&u.rid)
        .bind(&u.cpr_hash)
        .bind(&u.birth_date)
        .bind(&u.rights)
        .bind(&u.status)
        .bind(&u.ident_means)
        .bind(u.created_at)
        .fetch_optional(&mut *self.tx)
        .await?;
        // ON CONFLICT, not a unique violation: on PostgreSQL a violation
        // would abort the whole transaction (an import's other rows).
        match r {
            Some(r) => Ok(r.try_get("id")?),
            None => Err(StoreError::Conflict(format!(
                "a user with e-mail address {} exists",
                u.email
            ))),
        }
    }

    /// User `id` of `org`; NotFound when `org` has none.
    pub async fn user(&mut self, org: OrgId, id: i64) -> Result<UserRow, StoreError> {
        let r = sqlx::query(concat!(
            "SELECT ",
            user_columns!(),
            " FROM users WHERE org_id = $1 AND id = $2"
        ))
        .bind(org.0)
        .bind(id)
        .fetch_optional(&mut *self.tx)
        .await?;
        r.as_ref()
            .map(user_row)
            .transpose()?
            .ok_or_else(|| StoreError::NotFound(format!("user {id}")))
    }

    /// The users of `org`, by name; only those with `status` when given.
    pub async fn users(
        &mut self,
        org: OrgId,
        status: Option<&str>,
    ) -> Result<Vec<UserRow>, StoreError> {
        let rows = sqlx::query(concat!(
            "SELECT ",
            user_columns!(),
            " FROM users WHERE org_id = $1 AND ($2 = '' OR status = $2) ORDER BY name, id"
        ))
        .bind(org.0)
        .bind(status.unwrap_or(""))
        .fetch_all(&mut *self.tx)
        .await?;
        rows.iter().map(user_row).collect()
    }

    /// Writes back every field of `u` but its id, organisation and creation
    /// time, if the row still has status `expected` (false otherwise: a
    /// concurrent change got there first).
    pub async fn user_update(
        &mut self,
        u: &UserRow,
        expected: &str,
        at: i64,
    ) -> Result<bool, StoreError> {
        let r = sqlx::query(
            "UPDATE users SET name = $1, email = $2, rid = $3, cpr_hash = $4, birth_date = $5, \
             rights = $6, status = $7, ident_means = $8, password_hash = $9, code_hash = $10, \
             code_failures = $11, updated_at = $12 \
             WHERE org_id = $13 AND id = $14 AND status = $15",
        )
        .bind(&u.name)
        .bind(&u.email)
        .bind(&u.rid)
        .bind(&u.cpr_hash)
        .bind(&u.birth_date)
        .bind(&u.rights)
        .bind(&u.status)
        .bind(&u.ident_means)
        .bind(&u.password_hash)
        .bind(&u.code_hash)
        .bind(u.code_failures)
        .bind(at)
        .bind(u.org)
        .bind(u.id)
        .bind(expected)
        .execute(&mut *self.tx)
        .await
        .map_err(|e| match &e {
            sqlx::Error::Database(d) if d.is_unique_violation() => {
                StoreError::Conflict(format!("a user with e-mail address {} exists", u.email))
            }
            _ => StoreError::Db(e),
        })?;
        Ok(r.rows_affected() == 1)
    }

    /// Records a link by the hash of its token.
    pub async fn link_insert(
        &mut self,
        token_hash: &str,
        org: OrgId,
        user: Option<i64>,
        purpose: &str,
        at: i64,
        expires_at: i64,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO link_tokens (token_hash, org_id, user_id, purpose, created_at, \
             expires_at) VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(token_hash)
        .bind(org.0)
        .bind(user)
        .bind(purpose)
        .bind(at)
        .bind(expires_at)
        .execute(&mut *self.tx)
        .await?;
        Ok(())
    }

    /// The unused, unexpired link with this token hash and purpose.
    pub async fn link_peek(
        &mut self,
        token_hash: &str,
        purpose: &str,
        now: i64,
    ) -> Result<Option<LinkTarget>, StoreError> {
        let r = sqlx::query(
            "SELECT org_id, user_id, expires_at FROM link_tokens WHERE token_hash = $1 \
             AND purpose = $2 AND used_at IS NULL AND expires_at > $3",
        )
        .bind(token_hash)
        .bind(purpose)
        .bind(now)
        .fetch_optional(&mut *self.tx)
        .await?;
        r.map(|r| {
            Ok(LinkTarget {
                org: OrgId(r.try_get("org_id")?),
                user: r.try_get("user_id")?,
                expires_at: r.try_get("expires_at")?,
            })
        })
        .transpose()
    }

    /// Uses the link: marks it used if it was unused and unexpired (one
    /// statement, so two racing requests cannot both take it).
    pub async fn link_take(
        &mut self,
        token_hash: &str,
        purpose: &str,
        now: i64,
    ) -> Result<Option<LinkTarget>, StoreError> {
        let r = sqlx::query(
            "UPDATE link_tokens SET used_at = $1 WHERE token_hash = $2 AND purpose = $3 \
             AND used_at IS NULL AND expires_at > $1 RETURNING org_id, user_id, expires_at",
        )
        .bind(now)
        .bind(token_hash)
        .bind(purpose)
        .fetch_optional(&mut *self.tx)
        .await?;
        r.map(|r| {
            Ok(LinkTarget {
                org: OrgId(r.try_get("org_id")?),
                user: r.try_get("user_id")?,
                expires_at: r.try_get("expires_at")?,
            })
        })
        .transpose()
    }

    /// Ends every unused link of `user` for `purpose` (a new one replaces
    /// them).
    pub async fn links_void(
        &mut self,
        org: OrgId,
        user: i64,
        purpose: &str,
        now: i64,
    ) -> Result<u64, StoreError> {
        let r = sqlx::query(
            "UPDATE link_tokens SET used_at = $1 WHERE org_id = $2 AND user_id = $3 \
             AND purpose = $4 AND used_at IS NULL",
        )
        .bind(now)
        .bind(org.0)
        .bind(user)
        .bind(purpose)
        .execute(&mut *self.tx)
        .await?;
        Ok(r.rows_affected())
    }

    /// Ends every unused link of `org` for `purpose` (user-less links).
    pub async fn org_links_void(
        &mut self,
        org: OrgId,
        purpose: &str,
        now: i64,
    ) -> Result<u64, StoreError> {
        let r = sqlx::query(
            "UPDATE link_tokens SET used_at = $1 WHERE org_id = $2 AND purpose = $3 \
             AND used_at IS NULL",
        )
        .bind(now)
        .bind(org.0)
        .bind(purpose)
        .execute(&mut *self.tx)
        .await?;
        Ok(r.rows_affected())
    }

    /// Records that certificate `cert` of `org` was issued to `user`.
    pub async fn set_certificate_user(
        &mut self,
        org: OrgId,
        cert: i64,
        user: i64,
    ) -> Result<(), StoreError> {
        sqlx::query("UPDATE certificates SET user_id = $1 WHERE org_id = $2 AND id = $3")
            .bind(user)
            .bind(org.0)
            .bind(cert)
            .execute(&mut *self.tx)
            .await?;
        Ok(())
    }

    /// Pins (or unpins) an outside certificate of `org`: a pinned one is
    /// the one used for its address. NotFound when `org` has no such row.
    pub async fn set_recipient_pinned(
        &mut self,
        org: OrgId,
        id: i64,
        pinned: bool,
    ) -> Result<String, StoreError> {
        let r = sqlx::query(
            "UPDATE recipients SET pinned = $1 WHERE org_id = $2 AND id = $3 RETURNING address",
        )
        .bind(i64::from(pinned))
        .bind(org.0)
        .bind(id)
        .fetch_optional(&mut *self.tx)
        .await?;
        match r {
            Some(r) => Ok(r.try_get("address")?),
            None => Err(StoreError::NotFound(format!("recipient certificate {id}"))),
        }
    }

    /// Deletes an outside certificate of `org`; NotFound when there is none.
    pub async fn delete_recipient(&mut self, org: OrgId, id: i64) -> Result<String, StoreError> {
        let r =
            sqlx::query("DELETE FROM recipients WHERE org_id = $1 AND id = $2 RETURNING address")
                .bind(org.0)
                .bind(id)
                .fetch_optional(&mut *self.tx)
                .await?;
        match r {
            Some(r) => Ok(r.try_get("address")?),
            None => Err(StoreError::NotFound(format!("recipient certificate {id}"))),
        }
    }

    /// How many administrators the installation has.
    pub async fn admin_count(&mut self) -> Result<i64, StoreError> {
        let r = sqlx::query("SELECT COUNT(*) AS n FROM admins")
            .fetch_one(&mut *self.tx)
            .await?;
        Ok(r.try_get("n")?)
    }

    /// The organisation of administrator `name` (names are unique in the
    /// installation).
    pub async fn admin_org_by_name(&mut self, name: &str) -> Result<Option<OrgId>, StoreError> {
        let r = sqlx::query("SELECT org_id FROM admins WHERE name = $1")
            .bind(name)
            .fetch_optional(&mut *self.tx)
            .await?;
        r.map(|r| Ok(OrgId(r.try_get("org_id")?))).transpose()
    }

    /// The organisation of the session with this token hash, if any.
    pub async fn session_org(&mut self, token_hash: &str) -> Result<Option<OrgId>, StoreError> {
        let r = sqlx::query(
            "SELECT a.org_id FROM admin_sessions s JOIN admins a ON a.id = s.admin_id \
             WHERE s.token_hash = $1",
        )
        .bind(token_hash)
        .fetch_optional(&mut *self.tx)
        .await?;
        r.map(|r| Ok(OrgId(r.try_get("org_id")?))).transpose()
    }
}

crate::in_tx! { begin_read:
    /// The organisation of administrator `name`.
    fn admin_org_by_name(&self, name: &str) -> Option<OrgId>;
    /// The organisation of the session with this token hash.
    fn session_org(&self, token_hash: &str) -> Option<OrgId>;
}
