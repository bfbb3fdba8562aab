//! Administrators of the admin API: accounts with a role, logging in,
//! sessions, logging out.
//!
//! A session's token is 32 random bytes (base64url), handed out once at
//! login; the store keeps only its SHA-256, so looking a session up is a
//! database lookup by hash (no comparison of secrets in this process, so
//! nothing to time). Logging in as an unknown administrator costs the same
//! argon2id verification as a wrong password (against a dummy hash), and
//! both fail with the same error.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};

use base64::Engine;
use store::{AdminRow, OrgId};

use crate::smtp_users::{hash_password, hash_password_blocking, verify_password_blocking};
use crate::{Error, Result, Service};

/// How long a session lives, seconds (12 hours).
pub const SESSION_SECS: i64 = 12 * 3600;

/// The shortest password accepted.
pub const MIN_PASSWORD_CHARS: usize = 12;

/// The one error of a failed login, whatever the reason.
pub const LOGIN_FAILED: &str = "wrong name or password";

/// An administrator's role.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Role {
    /// Organisation administrator: settings, organisation certificates,
    /// legacy keys, administrators.
    OrgAdmin,
    /// User administrator: users, activation, brugercertifikater.
    UserAdmin,
    /// Reads, changes nothing.
    Auditor,
}

impl Role {
    /// Every role.
    pub const ALL: [Role; 3] = [Role::OrgAdmin, Role::UserAdmin, Role::Auditor];

    /// The name stored and shown: `org-admin`, `user-admin`, `auditor`.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::OrgAdmin => "org-admin",
            Role::UserAdmin => "user-admin",
            Role::Auditor => "auditor",
        }
    }
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for Role {
    type Err = Error;

    fn from_str(s: &str) -> Result<Role> {
        Role::ALL
            .into_iter()
            .find(|r| r.as_str() == s)
            .ok_or_else(|| {
                Error::Invalid(format!("role {s:?}: use org-admin, user-admin or auditor"))
            })
    }
}

/// An administrator.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Admin {
    /// Id.
    pub id: i64,
    /// Login name.
    pub name: String,
    /// Role.
    pub role: Role,
    /// The organisation.
    pub org: OrgId,
    /// When created.
    pub created_at: i64,
    /// Cannot log in.
    pub disabled: bool,
}

impl TryFrom<AdminRow> for Admin {
    type Error = Error;

    fn try_from(r: AdminRow) -> Result<Admin> {
        Ok(Admin {
            id: r.id,
            role: r.role.parse()?,
            name: r.name,
            org: r.org,
            created_at: r.created_at,
            disabled: r.disabled,
        })
    }
}

/// A new session, as login returns it. The token is shown here only.
#[derive(Clone, PartialEq, Eq)]
pub struct Session {
    /// The bearer token (base64url of 32 random bytes).
    pub token: String,
    /// Who logged in.
    pub admin: Admin,
    /// Their role.
    pub role: Role,
    /// Their organisation.
    pub org: OrgId,
    /// When the session ends, seconds since the epoch.
    pub expires_at: i64,
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session")
            .field("token", &"<redacted>")
            .field("admin", &self.admin)
            .field("expires_at", &self.expires_at)
            .finish()
    }
}

/// A live session found by its token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdminSession {
    /// Who.
    pub admin: Admin,
    /// Their role.
    pub role: Role,
    /// Their organisation.
    pub org: OrgId,
    /// When the session ends.
    pub expires_at: i64,
}

static LOGIN_FAILURES: AtomicU64 = AtomicU64::new(0);

/// Failed logins in this process since it started (for metrics).
pub fn login_failures() -> u64 {
    LOGIN_FAILURES.load(Ordering::Relaxed)
}

/// A hash to verify against when the administrator does not exist, so
/// that an unknown name costs what a wrong password costs.
pub(crate) fn dummy_hash() -> &'static str {
    static DUMMY: OnceLock<String> = OnceLock::new();
    DUMMY.get_or_init(|| {
        hash_password("sikkermail dummy password, never matches").unwrap_or_default()
    })
}

/// The SHA-256 of a token, hex: what the store keeps.
pub fn token_hash(token: &str) -> String {
    openssl::sha::sha256(token.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

pub(crate) fn new_token() -> Result<String> {
    let mut b = [0u8; 32];
    openssl::rand::rand_bytes(&mut b)?;
    Ok(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b))
}

/// Administrator passwords: at least [`MIN_PASSWORD_CHARS`] characters.
pub(crate) fn check_password(password: &str) -> Result<()> {
    if password.chars().count() < MIN_PASSWORD_CHARS {
        return Err(Error::Invalid(format!(
            "the administrator password must have at least {MIN_PASSWORD_CHARS} characters"
        )));
    }
    Ok(())
}

fn check_name(name: &str) -> Result<()> {
    crate::smtp_users::check_account_name("administrator", name)
}

/// A login name fit for the audit trail (what an outsider typed).
pub(crate) fn loggable(name: &str) -> String {
    name.chars()
        .take(64)
        .map(|c| if c.is_control() { '?' } else { c })
        .collect()
}

impl Service {
    /// The organisation of the session with this token, if any (the admin
    /// API then works as that organisation, see [`Service::for_org`]).
    pub async fn session_org(&self, token: &str) -> Result<Option<OrgId>> {
        Ok(self.store.session_org(&token_hash(token)).await?)
    }

    /// The organisation of administrator `name`, if there is one.
    pub async fn admin_org(&self, name: &str) -> Result<Option<OrgId>> {
        Ok(self.store.admin_org_by_name(name).await?)
    }

    /// Creates an administrator of this organisation (audited
    /// "admin.create"). The password needs at least 12 characters.
    pub async fn admin_create(&self, name: &str, role: Role, password: &str) -> Result<Admin> {
        check_name(name)?;
        check_password(password)?;
        let hash = hash_password_blocking(password).await?;
        let at = crate::now();
        let mut tx = self.store.begin().await?;
        let id = tx
            .admin_create(self.org.id, name, role.as_str(), &hash, at)
            .await?;
        tx.audit(
            Some(self.org.id),
            self.actor.as_str(),
            "admin.create",
            name,
            &format!("role={role}"),
        )
        .await?;
        tx.commit().await?;
        Ok(Admin {
            id,
            name: name.to_string(),
            role,
            org: self.org.id,
            created_at: at,
            disabled: false,
        })
    }

    /// Every administrator of this organisation, by name.
    pub async fn admins(&self) -> Result<Vec<Admin>> {
        self.store
            .admins(self.org.id)
            .await?
            .into_iter()
            .map(Admin::try_from)
            .collect()
    }

    /// Logs `name` in: a new session of [`SESSION_SECS`], audited
    /// "admin.login". Any failure (unknown name, wrong password, disabled)
    /// is `Error::Invalid(LOGIN_FAILED)`, audited "admin.login_failed"
    /// with the name tried (never the password). The argon2id check is
    /// slow on purpose (tens of milliseconds) and runs on a blocking thread.
    pub async fn admin_login(&self, name: &str, password: &str) -> Result<Session> {
        let found = self.store.admin_credentials(self.org.id, name).await?;
        let (row, ok) = match found {
            Some((row, hash)) => {
                let ok = verify_password_blocking(&hash, password).await?;
                (Some(row), ok)
            }
            None => {
                verify_password_blocking(dummy_hash(), password).await?;
                (None, false)
            }
        };
        let row = match row {
            Some(row) if ok && !row.disabled => row,
            _ => {
                LOGIN_FAILURES.fetch_add(1, Ordering::Relaxed);
                let mut tx = self.store.begin().await?;
                tx.audit(
                    Some(self.org.id),
                    "api",
                    "admin.login_failed",
                    &loggable(name),
                    "",
                )
                .await?;
                tx.commit().await?;
                return Err(Error::Invalid(LOGIN_FAILED.into()));
            }
        };
        let admin = Admin::try_from(row)?;
        let token = new_token()?;
        let now = crate::now();
        let expires_at = now + SESSION_SECS;
        let mut tx = self.store.begin().await?;
        tx.admin_sessions_purge(self.org.id, now).await?;
        tx.admin_session_create(self.org.id, admin.id, &token_hash(&token), now, expires_at)
            .await?;
        tx.audit(
            Some(self.org.id),
            &format!("admin:{}", admin.name),
            "admin.login",
            &admin.name,
            &format!("role={}", admin.role),
        )
        .await?;
        tx.commit().await?;
        Ok(Session {
            token,
            role: admin.role,
            org: admin.org,
            admin,
            expires_at,
        })
    }

    /// The live session with this token, if any (expired, logged out,
    /// disabled and unknown tokens are all `None`).
    pub async fn admin_session(&self, token: &str) -> Result<Option<AdminSession>> {
        if token.is_empty() || token.len() > 256 {
            return Ok(None);
        }
        let found = self
            .store
            .admin_session(self.org.id, &token_hash(token), crate::now())
            .await?;
        let Some(s) = found else {
            return Ok(None);
        };
        let admin = Admin::try_from(s.admin)?;
        Ok(Some(AdminSession {
            role: admin.role,
            org: admin.org,
            admin,
            expires_at: s.expires_at,
        }))
    }

    /// Ends the session with this token (audited "admin.logout"). Returns
    /// false when there was none.
    pub async fn admin_logout(&self, token: &str) -> Result<bool> {
        let mut tx = self.store.begin().await?;
        let Some(name) = tx
            .admin_session_delete(self.org.id, &token_hash(token))
            .await?
        else {
            return Ok(false);
        };
        tx.audit(
            Some(self.org.id),
            &format!("admin:{name}"),
            "admin.logout",
            &name,
            "",
        )
        .await?;
        tx.commit().await?;
        Ok(true)
    }
}

/// Logs in (see [`Service::admin_login`]).
pub async fn login(svc: &Service, name: &str, password: &str) -> Result<Session> {
    svc.admin_login(name, password).await
}

/// The live session with `token` (see [`Service::admin_session`]).
pub async fn session(svc: &Service, token: &str) -> Result<Option<AdminSession>> {
    svc.admin_session(token).await
}

/// Ends a session (see [`Service::admin_logout`]).
pub async fn logout(svc: &Service, token: &str) -> Result<bool> {
    svc.admin_logout(token).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roles_round_trip() {
        for r in Role::ALL {
            assert_eq!(r.as_str().parse::<Role>().ok(), Some(r));
        }
        assert!("root".parse::<Role>().is_err());
    }

    #[test]
    fn token_hash_is_sha256_hex() {
        assert_eq!(
            token_hash("abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn tokens_are_32_bytes_base64url() {
        let t = new_token().unwrap_or_default();
        assert_eq!(t.len(), 43);
        assert!(
            t.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        );
        assert_ne!(t, new_token().unwrap_or_default());
    }
}
