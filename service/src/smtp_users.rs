//! SMTP AUTH accounts for the outbound listener: the firm's mail server (or
//! a script) authenticates instead of, or besides, being in
//! `trusted_networks`. Passwords are kept as argon2id hashes; every change
//! is audited.

use argon2::Argon2;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};

use crate::{Error, Result, Service};

/// Hashes `password` with argon2id (the crate's default parameters) and a
/// random salt, as a PHC string.
pub fn hash_password(password: &str) -> Result<String> {
    let mut salt = [0u8; 16];
    openssl::rand::rand_bytes(&mut salt)?;
    let salt = SaltString::encode_b64(&salt).map_err(|e| Error::Invalid(format!("salt: {e}")))?;
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| Error::Invalid(format!("hashing the password: {e}")))
}

/// True when `password` matches the PHC string `hash`. Slow on purpose
/// (tens of milliseconds): call it off the async runtime's threads.
pub fn verify_password(hash: &str, password: &str) -> bool {
    PasswordHash::new(hash)
        .map(|h| {
            Argon2::default()
                .verify_password(password.as_bytes(), &h)
                .is_ok()
        })
        .unwrap_or(false)
}

/// How long a password check waits for a hashing slot before it gives up
/// with [`Error::Busy`] (the client is told to try again).
pub const HASH_WAIT: std::time::Duration = std::time::Duration::from_secs(2);

/// The hashing slots: one per core. Each argon2id check holds ~19 MiB
/// while it runs; without a bound, 200 parallel logins held 200 of them
/// (4.6 GB) on up to 512 blocking threads.
fn hash_slots() -> &'static tokio::sync::Semaphore {
    static SLOTS: std::sync::OnceLock<tokio::sync::Semaphore> = std::sync::OnceLock::new();
    SLOTS.get_or_init(|| {
        // glibc serves a large block freed once from its heap afterwards
        // (the mmap threshold follows the largest freed block), so every
        // thread that ever hashed kept ~19 MiB: a fixed threshold makes
        // argon2's blocks mmap'd and returned to the system when freed.
        #[cfg(all(target_os = "linux", target_env = "gnu"))]
        // SAFETY: mallopt only sets an allocator parameter; called once.
        unsafe {
            libc::mallopt(libc::M_MMAP_THRESHOLD, 1 << 20);
        }
        let n = std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(2);
        tokio::sync::Semaphore::new(n)
    })
}

/// Runs `f` (an argon2id hash or check) on a blocking thread once a
/// hashing slot is free; [`Error::Busy`] when none frees within
/// [`HASH_WAIT`].
async fn with_hash_slot<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> Result<T> {
    let permit = match tokio::time::timeout(HASH_WAIT, hash_slots().acquire()).await {
        Ok(Ok(p)) => p,
        _ => return Err(Error::Busy),
    };
    let r = tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| Error::Invalid(format!("hashing the password: {e}")));
    drop(permit);
    r
}

/// [`hash_password`] on a blocking thread, off the async runtime's workers
/// (argon2id takes tens of milliseconds on purpose), within the bound on
/// concurrent hashing ([`Error::Busy`] when there is no slot).
pub async fn hash_password_blocking(password: &str) -> Result<String> {
    let p = password.to_string();
    with_hash_slot(move || hash_password(&p)).await?
}

/// [`verify_password`] on a blocking thread, within the bound on
/// concurrent hashing: Ok(false) when wrong, [`Error::Busy`] when there is
/// no slot now (nothing was checked).
pub async fn verify_password_blocking(hash: &str, password: &str) -> Result<bool> {
    let (h, p) = (hash.to_string(), password.to_string());
    with_hash_slot(move || verify_password(&h, &p)).await
}

/// Account names (SMTP users, administrators): 1-128 letters, digits and
/// `@ . _ - +`. `what` names the kind in the error.
pub(crate) fn check_account_name(what: &str, name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 128
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "@._-+".contains(c));
    if ok {
        Ok(())
    } else {
        Err(Error::Invalid(format!(
            "{what} name {name:?}: use 1-128 letters, digits and @ . _ - +"
        )))
    }
}

/// The sender addresses an SMTP account may use in `MAIL FROM` (and
/// `From:`): exact addresses and whole domains (`@advokat.dk`), lowercase.
/// Stored comma-separated; nothing stored means the account's own name
/// when that is an address, else nothing at all.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SendAs(Vec<String>);

impl SendAs {
    /// Parses `ADDR` or `@domain` entries; Invalid names the bad one.
    pub fn parse(entries: &[String]) -> Result<SendAs> {
        let mut out = Vec::new();
        for e in entries {
            let e = e.trim().to_ascii_lowercase();
            let ok = match e.rsplit_once('@') {
                Some((local, domain)) => {
                    !domain.is_empty()
                        && domain.contains('.')
                        && !local.contains('@')
                        && e.chars().all(|c| c.is_ascii_graphic() && c != ',')
                }
                None => false,
            };
            if !ok {
                return Err(Error::Invalid(format!(
                    "--may-send-as {e:?}: give an address (anna@advokat.dk) or a domain (@advokat.dk)"
                )));
            }
            if !out.contains(&e) {
                out.push(e);
            }
        }
        Ok(SendAs(out))
    }

    fn to_stored(&self) -> String {
        self.0.join(",")
    }

    /// What an account may send as, from its stored text.
    pub fn from_stored(name: &str, stored: &str) -> SendAs {
        let list: Vec<String> = stored
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_ascii_lowercase)
            .collect();
        if !list.is_empty() {
            return SendAs(list);
        }
        match name.rsplit_once('@') {
            Some((l, d)) if !l.is_empty() && d.contains('.') => {
                SendAs(vec![name.to_ascii_lowercase()])
            }
            _ => SendAs(Vec::new()),
        }
    }

    /// True when `address` is one of the addresses, or in one of the
    /// domains (exactly that domain, not its subdomains).
    pub fn allows(&self, address: &str) -> bool {
        let a = address.to_ascii_lowercase();
        let domain = a.rsplit_once('@').map(|(_, d)| d);
        self.0.iter().any(|e| match e.strip_prefix('@') {
            Some(d) => domain == Some(d),
            None => *e == a,
        })
    }

    /// The entries, for display.
    pub fn entries(&self) -> &[String] {
        &self.0
    }
}

impl Service {
    /// Adds an SMTP user, or sets a new password for an existing one;
    /// `may_send_as` (addresses and `@domain`s) replaces what it may send
    /// as when given (see [`SendAs`]). Returns true when the user is new.
    pub async fn smtp_user_set(
        &self,
        name: &str,
        password: &str,
        may_send_as: Option<&SendAs>,
    ) -> Result<bool> {
        check_account_name("SMTP user", name)?;
        if password.chars().count() < 12 {
            return Err(Error::Invalid(
                "the SMTP password must have at least 12 characters".into(),
            ));
        }
        let hash = hash_password_blocking(password).await?;
        let mut tx = self.store.begin().await?;
        let stored = may_send_as.map(SendAs::to_stored);
        let new = tx
            .smtp_user_set(self.org.id, name, &hash, stored.as_deref())
            .await?;
        let action = if new {
            "smtp_user.add"
        } else {
            "smtp_user.password"
        };
        let detail = stored
            .map(|s| format!("may_send_as={s}"))
            .unwrap_or_default();
        tx.audit(
            Some(self.org.id),
            self.actor.as_str(),
            action,
            name,
            &detail,
        )
        .await?;
        tx.commit().await?;
        Ok(new)
    }

    /// Removes an SMTP user.
    pub async fn smtp_user_remove(&self, name: &str) -> Result<()> {
        let mut tx = self.store.begin().await?;
        tx.smtp_user_remove(self.org.id, name).await?;
        tx.audit(
            Some(self.org.id),
            self.actor.as_str(),
            "smtp_user.remove",
            name,
            "",
        )
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// Every SMTP user: (name, created at, what it may send as).
    pub async fn smtp_users(&self) -> Result<Vec<(String, i64, SendAs)>> {
        Ok(self
            .store
            .smtp_users(self.org.id)
            .await?
            .into_iter()
            .map(|(n, at, s)| {
                let send_as = SendAs::from_stored(&n, &s);
                (n, at, send_as)
            })
            .collect())
    }

    /// What SMTP user `name` may send as; None when there is no such
    /// account.
    pub async fn smtp_user_send_as(&self, name: &str) -> Result<Option<SendAs>> {
        Ok(self
            .store
            .smtp_user_may_send_as(self.org.id, name)
            .await?
            .map(|s| SendAs::from_stored(name, &s)))
    }

    /// The stored hash of `name`, to check with [`verify_password`].
    pub async fn smtp_user_hash(&self, name: &str) -> Result<Option<String>> {
        Ok(self.store.smtp_user_hash(self.org.id, name).await?)
    }
}
