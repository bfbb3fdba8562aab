//! Administrators of the admin API and their sessions, per organisation.
//! Passwords are argon2id hashes and sessions are kept by the SHA-256 of
//! their token (both made and checked by `service`): nothing here can be
//! used to log in by whoever reads the database.

use sqlx::Row;
use sqlx::any::AnyRow;

use crate::records::OrgId;
use crate::{Store, StoreError, Tx, in_tx};

/// An administrator as stored (without the password hash).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdminRow {
    /// Id.
    pub id: i64,
    /// The organisation.
    pub org: OrgId,
    /// Login name.
    pub name: String,
    /// `org-admin`, `user-admin` or `auditor`.
    pub role: String,
    /// When created.
    pub created_at: i64,
    /// Cannot log in.
    pub disabled: bool,
}

/// A live session: its administrator and when it ends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdminSessionRow {
    /// Who.
    pub admin: AdminRow,
    /// When it was made.
    pub created_at: i64,
    /// When it ends.
    pub expires_at: i64,
}

macro_rules! admin_columns {
    () => {
        "a.id, a.org_id, a.name, a.role, a.created_at, a.disabled"
    };
}

fn admin_row(r: &AnyRow) -> Result<AdminRow, StoreError> {
    Ok(AdminRow {
        id: r.try_get("id")?,
        org: OrgId(r.try_get("org_id")?),
        name: r.try_get("name")?,
        role: r.try_get("role")?,
        created_at: r.try_get("created_at")?,
        disabled: r.try_get::<i64, _>("disabled")? != 0,
    })
}

impl Tx<'_> {
    /// Adds administrator `name` to `org`; Conflict when the name is taken.
    pub async fn admin_create(
        &mut self,
        org: OrgId,
        name: &str,
        role: &str,
        password_hash: &str,
        at: i64,
    ) -> Result<i64, StoreError> {
        let r = sqlx::query(
            "INSERT INTO admins (org_id, name, role, password_hash, created_at, disabled) \
             VALUES ($1, $2, $3, $4, $5, 0) RETURNING id",
        )
        .bind(org.0)
        .bind(name)
        .bind(role)
        .bind(password_hash)
        .bind(at)
        .fetch_one(&mut *self.tx)
        .await
        .map_err(|e| match &e {
            sqlx::Error::Database(d) if d.is_unique_violation() => {
                StoreError::Conflict(format!("administrator {name:?} already exists"))
            }
            _ => StoreError::Db(e),
        })?;
        Ok(r.try_get("id")?)
    }

    /// Administrator `name` of `org` with the password hash, if there is one.
    pub async fn admin_credentials(
        &mut self,
        org: OrgId,
        name: &str,
    ) -> Result<Option<(AdminRow, String)>, StoreError> {
        let r = sqlx::query(concat!(
            "SELECT ",
            admin_columns!(),
            ", a.password_hash FROM admins a WHERE a.org_id = $1 AND a.name = $2"
        ))
        .bind(org.0)
        .bind(name)
        .fetch_optional(&mut *self.tx)
        .await?;
        match r {
            Some(r) => Ok(Some((admin_row(&r)?, r.try_get("password_hash")?))),
            None => Ok(None),
        }
    }

    /// Every administrator of `org`, by name.
    pub async fn admins(&mut self, org: OrgId) -> Result<Vec<AdminRow>, StoreError> {
        let rows = sqlx::query(concat!(
            "SELECT ",
            admin_columns!(),
            " FROM admins a WHERE a.org_id = $1 ORDER BY a.name"
        ))
        .bind(org.0)
        .fetch_all(&mut *self.tx)
        .await?;
        rows.iter().map(admin_row).collect()
    }

    /// Records a session of administrator `admin` of `org`, by the hash
    /// of its token. NotFound when `admin` is not one of `org`'s.
    pub async fn admin_session_create(
        &mut self,
        org: OrgId,
        admin: i64,
        token_hash: &str,
        created_at: i64,
        expires_at: i64,
    ) -> Result<(), StoreError> {
        let done = sqlx::query(
            "INSERT INTO admin_sessions (token_hash, admin_id, created_at, expires_at) \
             SELECT $1, id, $2, $3 FROM admins WHERE id = $4 AND org_id = $5",
        )
        .bind(token_hash)
        .bind(created_at)
        .bind(expires_at)
        .bind(admin)
        .bind(org.0)
        .execute(&mut *self.tx)
        .await?;
        if done.rows_affected() != 1 {
            return Err(StoreError::NotFound(format!("administrator {admin}")));
        }
        Ok(())
    }

    /// The session of `org` with this token hash, when it is live at
    /// `now` and its administrator is not disabled.
    pub async fn admin_session(
        &mut self,
        org: OrgId,
        token_hash: &str,
        now: i64,
    ) -> Result<Option<AdminSessionRow>, StoreError> {
        let r = sqlx::query(concat!(
            "SELECT ",
            admin_columns!(),
            ", s.created_at AS s_created_at, s.expires_at FROM admin_sessions s \
             JOIN admins a ON a.id = s.admin_id \
             WHERE s.token_hash = $1 AND a.org_id = $2 AND s.expires_at > $3 AND a.disabled = 0"
        ))
        .bind(token_hash)
        .bind(org.0)
        .bind(now)
        .fetch_optional(&mut *self.tx)
        .await?;
        match r {
            Some(r) => Ok(Some(AdminSessionRow {
                admin: admin_row(&r)?,
                created_at: r.try_get("s_created_at")?,
                expires_at: r.try_get("expires_at")?,
            })),
            None => Ok(None),
        }
    }

    /// Ends the session of `org` with this token hash. Returns the
    /// administrator's name when there was one.
    pub async fn admin_session_delete(
        &mut self,
        org: OrgId,
        token_hash: &str,
    ) -> Result<Option<String>, StoreError> {
        let who = sqlx::query(
            "SELECT a.name FROM admin_sessions s JOIN admins a ON a.id = s.admin_id \
             WHERE s.token_hash = $1 AND a.org_id = $2",
        )
        .bind(token_hash)
        .bind(org.0)
        .fetch_optional(&mut *self.tx)
        .await?;
        let Some(who) = who else {
            return Ok(None);
        };
        sqlx::query("DELETE FROM admin_sessions WHERE token_hash = $1")
            .bind(token_hash)
            .execute(&mut *self.tx)
            .await?;
        Ok(Some(who.try_get("name")?))
    }

    /// Removes `org`'s sessions that ended before `now`; returns how many.
    pub async fn admin_sessions_purge(&mut self, org: OrgId, now: i64) -> Result<u64, StoreError> {
        let done = sqlx::query(
            "DELETE FROM admin_sessions WHERE expires_at <= $1 \
             AND admin_id IN (SELECT id FROM admins WHERE org_id = $2)",
        )
        .bind(now)
        .bind(org.0)
        .execute(&mut *self.tx)
        .await?;
        Ok(done.rows_affected())
    }
}

in_tx! { begin_read:
    /// Administrator `name` of `org` with the password hash.
    fn admin_credentials(&self, org: OrgId, name: &str) -> Option<(AdminRow, String)>;
    /// Every administrator of `org`.
    fn admins(&self, org: OrgId) -> Vec<AdminRow>;
    /// The live session with this token hash.
    fn admin_session(&self, org: OrgId, token_hash: &str, now: i64) -> Option<AdminSessionRow>;
}

in_tx! { begin:
    /// Records a session.
    fn admin_session_create(&self, org: OrgId, admin: i64, token_hash: &str, created_at: i64, expires_at: i64) -> ();
    /// Ends a session.
    fn admin_session_delete(&self, org: OrgId, token_hash: &str) -> Option<String>;
    /// Removes ended sessions.
    fn admin_sessions_purge(&self, org: OrgId, now: i64) -> u64;
}
