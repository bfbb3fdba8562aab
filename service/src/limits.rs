//! One limiter for every secret the product checks and every public form:
//! administrator logins, activation codes, certificate-download passwords,
//! SMTP AUTH, applications and access requests.
//!
//! The attempt is *taken* in the store (shared by every node, atomically)
//! before the secret is checked, and given back only when the secret was
//! right ([`Service::attempt_succeeded`]); so requests arriving together
//! can never check more secrets than the limit. A used-up key answers
//! [`Error::TooMany`] with the seconds to wait ("slow down", 429 or 454),
//! never a long lock.
//!
//! Nobody can lock out a real person: logins count per name and per client
//! address separately (the address allows many more, since behind a TLS
//! proxy everyone shares one), and an administrator whose browser carries
//! a device cookie for their name ([`Service::device_issue`]) counts
//! against that device only, so an attacker hammering the name or the
//! shared address does not stop them.
//!
//! Use: `let t = svc.attempt(&[(rule, key), ...]).await?;` before the
//! check, `svc.attempt_succeeded(t).await` after a right one.

use store::{LimitKey, Take};

use crate::admins::{new_token, token_hash};
use crate::{Error, Result, Service};

/// A limit: at most `max` attempts per key of `scope` in `window_secs`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rule {
    /// The scope's name (its own counters): `admin-login-name`, ...
    pub scope: &'static str,
    /// Attempts allowed in one window.
    pub max: u32,
    /// The window, in seconds.
    pub window_secs: i64,
}

/// Fifteen minutes, the window of every login rule.
const QUARTER: i64 = 15 * 60;

/// Administrator logins per name (without a device cookie of that name).
pub const ADMIN_NAME: Rule = Rule {
    scope: "admin-login-name",
    max: 5,
    window_secs: QUARTER,
};
/// Administrator logins per client address (without a device cookie):
/// many more than per name, as a TLS proxy gives everyone one address.
pub const ADMIN_ADDRESS: Rule = Rule {
    scope: "admin-login-address",
    max: 50,
    window_secs: QUARTER,
};
/// Administrator logins from one device (a device cookie of the name).
pub const ADMIN_DEVICE: Rule = Rule {
    scope: "admin-login-device",
    max: 5,
    window_secs: QUARTER,
};
/// SMTP AUTH per account name (per organisation).
pub const SMTP_NAME: Rule = Rule {
    scope: "smtp-auth-name",
    max: 5,
    window_secs: QUARTER,
};
/// SMTP AUTH per client address.
pub const SMTP_ADDRESS: Rule = Rule {
    scope: "smtp-auth-address",
    max: 50,
    window_secs: QUARTER,
};
/// Activation codes and certificate passwords per client address (each
/// link also allows only [`crate::users::MAX_FAILURES`] wrong ones).
pub const LINK_ADDRESS: Rule = Rule {
    scope: "link-address",
    max: 50,
    window_secs: QUARTER,
};

/// How long a device cookie lasts (one year).
pub const DEVICE_SECS: i64 = 365 * 86_400;

/// Attempts taken by [`Service::attempt`]: give them back with
/// [`Service::attempt_succeeded`] when the secret was right; drop them
/// otherwise (the attempt stays counted).
#[derive(Debug, Default)]
#[must_use = "give the attempt back on success"]
pub struct Taken(Vec<(String, String, i64)>);

/// The digest a key is stored under (names and addresses never in clear,
/// and of one size whatever the client sent).
fn digest(scope: &str, key: &str) -> String {
    token_hash(&format!("{scope}\0{key}"))
}

impl Service {
    /// Takes one attempt from each (rule, key), all or none, in the store.
    /// [`Error::TooMany`] when one key is used up (nothing is taken then).
    /// Keys are case-folded.
    pub async fn attempt(&self, keys: &[(Rule, &str)]) -> Result<Taken> {
        if keys.is_empty() {
            return Ok(Taken::default());
        }
        let now = crate::now();
        let lk: Vec<LimitKey> = keys
            .iter()
            .map(|(r, k)| LimitKey {
                scope: r.scope.to_string(),
                key: digest(r.scope, &k.to_lowercase()),
                max: i64::from(r.max),
                window: r.window_secs,
            })
            .collect();
        let t = self.store.limit_take(&lk, now).await?;
        // Now and then, forget ended windows (in a transaction of its own,
        // so takes never wait behind it for long).
        let mut b = [0u8; 1];
        if openssl::rand::rand_bytes(&mut b).is_ok() && b[0] < 4 {
            let _ = self.store.limits_purge(now).await;
        }
        match t {
            Take::Granted(g) => Ok(Taken(g)),
            Take::Limited { retry_after, .. } => Err(Error::TooMany {
                retry_after: u64::try_from(retry_after).unwrap_or(1).max(1),
            }),
        }
    }

    /// Gives the attempts back: the secret was right (or was never checked,
    /// e.g. no capacity to check it now).
    pub async fn attempt_succeeded(&self, t: Taken) -> Result<()> {
        if !t.0.is_empty() {
            self.store.limit_release(&t.0).await?;
        }
        Ok(())
    }

    /// A new device cookie for administrator `name` (after a good login):
    /// the token, for the client; the store keeps its hash.
    pub async fn device_issue(&self, name: &str) -> Result<String> {
        let token = new_token()?;
        let now = crate::now();
        self.store
            .admin_device_add(
                &token_hash(&token),
                &name.to_lowercase(),
                now,
                now + DEVICE_SECS,
            )
            .await?;
        Ok(token)
    }

    /// True when `token` is a live device cookie of administrator `name`.
    pub async fn device_valid(&self, token: &str, name: &str) -> Result<bool> {
        if token.is_empty() || token.len() > 256 {
            return Ok(false);
        }
        Ok(self
            .store
            .admin_device_valid(&token_hash(token), &name.to_lowercase(), crate::now())
            .await?)
    }

    /// SMTP AUTH for account `user` from client address `from`: the
    /// attempt is taken per account and per address before the password
    /// is checked (an unknown name costs what a wrong password costs) and
    /// given back when it was right. Ok(false) for wrong credentials;
    /// [`Error::TooMany`] or [`Error::Busy`] when the client must try
    /// later (454 4.7.0).
    pub async fn smtp_authenticate(&self, user: &str, from: &str, password: &str) -> Result<bool> {
        let account = format!("{}:{user}", self.org.id.0);
        let taken = self
            .attempt(&[(SMTP_NAME, &account), (SMTP_ADDRESS, from)])
            .await?;
        let hash = match self.smtp_user_hash(user).await {
            Ok(h) => h,
            Err(e) => {
                self.attempt_succeeded(taken).await?;
                return Err(e);
            }
        };
        let known = hash.is_some();
        let hash = hash.unwrap_or_else(|| crate::admins::dummy_hash().to_string());
        match crate::smtp_users::verify_password_blocking(&hash, password).await {
            Ok(ok) if ok && known => {
                self.attempt_succeeded(taken).await?;
                Ok(true)
            }
            Ok(_) => Ok(false),
            Err(e) => {
                self.attempt_succeeded(taken).await?;
                Err(e)
            }
        }
    }
}
