//! The organisation's operations, written once: `init`, issuing, renewing,
//! revoking and exporting certificates, CRLs, importing keys, master-key
//! rotation, recipients' certificates and the audit trail. The CLI, the
//! gateway and the admin API are front ends over this crate.
//!
//! No clap, no axum, no printing: typed inputs, typed results, one error
//! enum ([`Error`]).
//!
//! **Concurrency.** Any of these may run at once, in any processes: `serve`,
//! administrators' commands, a second node on one PostgreSQL.
//! - The data directory's lock ([`store::DirLock`]): shared for every
//!   operation that reads the master key, seals or unseals ([`Service::open`]
//!   holds it); exclusive for [`init`] and [`rotate_master`]. The master keys
//!   are read only after the lock is held.
//! - Every operation writes in one transaction ([`store::Tx`]), with the
//!   audit entry in it; output that can fail (a PKCS#12 file) is handed over
//!   before the commit, so a failure rolls everything back.
//! - Across nodes, sealing and rotation are ordered by an advisory lock and
//!   the recorded sealing key inside those transactions (see `store`).
//!
//! Where to start reading: [`Service::open`], then [`certs`], [`keys`],
//! [`init()`].

pub mod actor;
pub mod admins;
pub mod certs;
pub mod error;
pub mod init;
pub mod keys;
pub mod limits;
pub mod mail;
pub mod mailboxes;
pub mod orgs;
pub mod queue;
pub mod smtp_users;
pub mod users;

use std::path::{Path, PathBuf};

use store::{DirLock, LockMode, MasterKeys, Store};

pub use actor::Actor;
pub use admins::{Admin, AdminSession, Role, Session};
pub use error::{Error, Result};
pub use init::{InitOutcome, InitRequest, init};
pub use keys::{RotateOutcome, rotate_master};
pub use mail::{KeyLabel, MailKeys, RecipientCert, SigningKey};
pub use queue::QueueAction;
pub use store::{OrgId, Organisation};
pub use users::{Settings, Status, User};

/// Where an organisation's data lives.
#[derive(Debug, Clone)]
pub struct Location {
    /// The data directory: master key, lock file, SQLite database.
    pub data_dir: PathBuf,
    /// PostgreSQL instead of the SQLite file.
    pub database_url: Option<String>,
}

impl Location {
    /// The database URL.
    pub fn url(&self) -> String {
        self.database_url
            .clone()
            .unwrap_or_else(|| store::sqlite_url(&self.data_dir))
    }

    /// Takes the data directory's lock, when there is a directory to lock
    /// (with PostgreSQL and the master key in the environment there may be
    /// none).
    /// Takes the data directory's lock in shared mode (waiting while a
    /// rotation holds it) for one operation of a server. Blocking: call it
    /// outside the async runtime's worker threads.
    pub fn lock_shared(&self) -> Result<Option<DirLock>> {
        self.lock(LockMode::Shared, || {})
    }

    fn lock(&self, mode: LockMode, on_wait: impl FnOnce()) -> Result<Option<DirLock>> {
        if self.database_url.is_some() && !self.data_dir.is_dir() {
            return Ok(None);
        }
        // Before the lock file is made: root is refused another user's
        // directory before it writes anything there.
        store::seal::check_private_dir(&self.data_dir)?;
        Ok(Some(DirLock::acquire(&self.data_dir, mode, on_wait)?))
    }

    fn check_initialised(&self) -> Result<()> {
        if self.database_url.is_none() && !self.data_dir.join("sikkermail.db").exists() {
            return Err(Error::Invalid(format!(
                "no sikkermail data in {} (run `sikkermail init --data-dir {}` first)",
                self.data_dir.display(),
                self.data_dir.display()
            )));
        }
        Ok(())
    }
}

/// An open organisation: the store, its organisation, and the data
/// directory's lock in shared mode, held for the life of this value.
#[derive(Debug)]
pub struct Service {
    store: Store,
    org: Organisation,
    actor: Actor,
    loc: Location,
    _lock: Option<DirLock>,
}

impl Service {
    /// Opens an initialised organisation: takes the shared lock (waiting
    /// for an `init` or a rotation to finish), then reads the master keys.
    pub async fn open(loc: &Location, actor: Actor) -> Result<Service> {
        loc.check_initialised()?;
        let lock = loc.lock(LockMode::Shared, || {})?;
        let master = MasterKeys::load(&loc.data_dir)?;
        let store = Store::open(&loc.url(), master).await?;
        let org = store.first_organisation().await?.ok_or_else(|| {
            Error::Invalid("the database has no organisation: run `sikkermail init` first".into())
        })?;
        Ok(Service {
            store,
            org,
            actor,
            loc: loc.clone(),
            _lock: lock,
        })
    }

    /// Opens the organisation for a long-running server (`serve`): the data
    /// directory's lock is held while opening only. Every later operation
    /// that reads the master key (unsealing keys) takes it for its own
    /// duration with [`Location::lock_shared`], so `rotate-master` can run
    /// beside a server that never stops.
    pub async fn open_server(loc: &Location, actor: Actor) -> Result<Service> {
        let mut svc = Self::open(loc, actor).await?;
        svc._lock = None;
        Ok(svc)
    }

    /// The data directory's lock in shared mode for one operation that
    /// seals or unseals, when this value does not hold it already (a
    /// server's). Waits off the async workers.
    pub(crate) async fn lock_for_sealing(&self) -> Result<Option<DirLock>> {
        if self._lock.is_some() {
            return Ok(None);
        }
        let loc = self.loc.clone();
        tokio::task::spawn_blocking(move || loc.lock_shared())
            .await
            .map_err(|e| Error::Invalid(format!("lock task: {e}")))?
    }

    /// Where the organisation's data lives (for [`Location::lock_shared`]).
    pub fn location(&self) -> &Location {
        &self.loc
    }

    /// The store (for reads the service does not wrap).
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// The organisation.
    pub fn org(&self) -> &Organisation {
        &self.org
    }

    /// Who acts.
    pub fn actor(&self) -> &Actor {
        &self.actor
    }

    /// The data directory.
    pub fn data_dir(&self) -> &Path {
        &self.loc.data_dir
    }

    /// The newest `limit` audit events (none for 0).
    pub async fn audit_events(&self, limit: u32) -> Result<Vec<store::Audit>> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        Ok(self
            .store
            .audit_events(self.org.id, i64::from(limit))
            .await?)
    }

    /// Every key the organisation has held, as a decryption keyring; the
    /// keys that do not open are named, and the others still work.
    /// Walks the audit trail's hash chain (the whole installation's).
    pub async fn verify_audit(&self) -> Result<store::AuditCheck> {
        Ok(self.store.verify_audit().await?)
    }

    pub async fn keyring(&self) -> Result<store::StoreKeyring> {
        Ok(self.store.keyring(self.org.id).await?)
    }

    /// Closes the pool (the lock goes when the value is dropped).
    pub async fn close(self) {
        self.store.close().await;
    }
}

/// Seconds since the epoch.
pub fn now() -> i64 {
    store::now()
}
