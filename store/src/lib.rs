//! Persistence for sikkermail, and the only crate that speaks SQL.
//!
//! One typed repository API over two backends: SQLite in the data directory
//! (the embedded default) and PostgreSQL (several gateway nodes). The same
//! SQL runs on both through sqlx's `Any` driver; each backend has its own
//! embedded migrations (`migrations/sqlite`, `migrations/postgres`) with
//! the same column types (BIGINT seconds for times, 0/1 for flags).
//!
//! Private keys are sealed ([`seal`]) under a key-encryption key that never
//! enters the database. Every query is scoped to one organisation: no
//! function returns another organisation's rows.
//!
//! Where to start reading: [`Store::open`], then [`records`] (organisations,
//! certificates, recipients, CA state, audit), [`keys`] (sealed keys,
//! the decryption keyring, master-key rotation) and [`queue`] (the durable
//! mail queue: accepted mail until it is delivered, with leases for the
//! delivery workers of every node).

pub mod admins;
pub mod audit_chain;
pub mod backup;
pub mod error;
pub mod keys;
pub mod limits;
pub mod lock;
pub mod mailboxes;
pub mod queue;
pub mod records;
pub mod revocation;
pub mod schema;
pub mod seal;
pub mod smtp_users;
pub mod stats;
pub mod users;

use std::path::Path;
use std::sync::{Arc, Once, RwLock};
use std::time::Duration;

use sqlx::any::AnyPoolOptions;
use sqlx::{Any, AnyPool, Executor};

pub use admins::{AdminRow, AdminSessionRow};
pub use audit_chain::AuditCheck;
pub use error::StoreError;
pub use keys::{KeyInfo, NewKey, ResealReport, StoreKeyring, Unopenable, keyring_label};
pub use limits::{LimitKey, Take};
pub use lock::{DirLock, LockMode};
pub use mailboxes::FolderState;
pub use queue::{
    ClaimedMessage, Direction, MessageState, NewMessage, NewRecipient, Outcome, QueueDetail,
    QueueId, QueueSummary, QueuedRecipient, RcptResult, RcptState, RecipientDetail, UnknownName,
};
pub use records::{Audit, CaState, CertRow, NewCert, OrgId, Organisation, RecipientRow};
pub use revocation::CachedRevocation;
pub use seal::{Kek, MasterKeys};
pub use users::{LinkTarget, UserRow};

/// Which database is behind the pool.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// SQLite file.
    Sqlite,
    /// PostgreSQL server.
    Postgres,
}

/// A connection pool plus the master keys.
///
/// The master keys can change under a running process (another process
/// rotated them): when a row names a master key this process does not hold,
/// the keys are loaded again from where they came from, once, before giving
/// up on that row.
#[derive(Debug, Clone)]
pub struct Store {
    pub(crate) pool: AnyPool,
    pub(crate) backend: Backend,
    pub(crate) master: Arc<RwLock<MasterKeys>>,
}

/// The SQLite URL for a data directory.
pub fn sqlite_url(data_dir: &Path) -> String {
    format!(
        "sqlite://{}?mode=rwc",
        data_dir.join("sikkermail.db").display()
    )
}

/// The file of a `sqlite://FILE?...` URL.
pub(crate) fn sqlite_path(url: &str) -> Option<std::path::PathBuf> {
    let rest = url.strip_prefix("sqlite://")?;
    let file = rest.split('?').next()?;
    (!file.is_empty() && file != ":memory:").then(|| std::path::PathBuf::from(file))
}

/// The SQLite database file is made 0600 before SQLite opens it (SQLite
/// gives its WAL and shared-memory files the database's mode), and files
/// of an older installation made with a looser mode are narrowed.
fn private_db_files(db: &Path) -> Result<(), StoreError> {
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    let e = |p: &Path, err: std::io::Error| {
        StoreError::Conflict(format!("cannot make {} private: {err}", p.display()))
    };
    match std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(db)
    {
        Ok(_) => {}
        Err(err) if err.kind() == std::io::ErrorKind::AlreadyExists => {}
        // A missing directory is reported by SQLite itself.
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(err) => return Err(e(db, err)),
    }
    for suffix in ["", "-wal", "-shm", "-journal"] {
        let p = std::path::PathBuf::from(format!("{}{suffix}", db.display()));
        if let Ok(m) = std::fs::metadata(&p)
            && m.permissions().mode() & 0o077 != 0
        {
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600))
                .map_err(|err| e(&p, err))?;
        }
    }
    Ok(())
}

/// The PostgreSQL advisory lock (a transaction-level one) that orders
/// sealing against master-key rotation across nodes: shared while a key is
/// sealed and stored, exclusive while every key is re-sealed.
pub(crate) const SEAL_LOCK: i64 = 0x5ea1_0001;
/// The PostgreSQL advisory lock taken by `init`, so two nodes never create
/// two organisations.
pub(crate) const INIT_LOCK: i64 = 0x5ea1_0002;

/// One transaction. Everything an operation writes goes through one of
/// these and lands together at [`Tx::commit`], or not at all: dropping it
/// rolls back. On SQLite it is `BEGIN IMMEDIATE`, so two writers (in any
/// processes) are ordered instead of failing on a lock upgrade.
#[derive(Debug)]
pub struct Tx<'s> {
    pub(crate) tx: sqlx::Transaction<'static, Any>,
    pub(crate) store: &'s Store,
}

impl Tx<'_> {
    /// Makes every write of this transaction durable, together.
    pub async fn commit(self) -> Result<(), StoreError> {
        self.tx.commit().await?;
        Ok(())
    }

    /// Undoes every write of this transaction.
    pub async fn rollback(self) -> Result<(), StoreError> {
        self.tx.rollback().await?;
        Ok(())
    }

    /// The backend.
    pub fn backend(&self) -> Backend {
        self.store.backend
    }

    /// PostgreSQL: takes `init`'s advisory lock until the end of the
    /// transaction (two nodes initialising at once are ordered). SQLite's
    /// `BEGIN IMMEDIATE` already orders them.
    pub async fn lock_init(&mut self) -> Result<(), StoreError> {
        if self.store.backend == Backend::Postgres {
            sqlx::query("SELECT pg_advisory_xact_lock($1)")
                .bind(INIT_LOCK)
                .execute(&mut *self.tx)
                .await?;
        }
        Ok(())
    }
}

impl Store {
    /// Connects to `url` (`sqlite://...` or `postgres://...`) and brings the
    /// schema up to date ([`schema::migrate`]); a database newer than this
    /// build is refused ([`StoreError::Schema`]).
    ///
    /// A commit is durable when it returns: SQLite runs in WAL mode with
    /// `synchronous = FULL` (the log is synced at every commit), PostgreSQL
    /// with its default `synchronous_commit = on`.
    pub async fn open(url: &str, master: MasterKeys) -> Result<Self, StoreError> {
        static DRIVERS: Once = Once::new();
        DRIVERS.call_once(sqlx::any::install_default_drivers);
        let backend = if url.starts_with("sqlite:") {
            Backend::Sqlite
        } else if url.starts_with("postgres:") || url.starts_with("postgresql:") {
            Backend::Postgres
        } else {
            return Err(StoreError::Conflict(format!(
                "unsupported database URL {url:?}: use sqlite://FILE or postgres://HOST/DB"
            )));
        };
        let mut opts = AnyPoolOptions::new()
            .max_connections(if backend == Backend::Sqlite { 4 } else { 8 })
            .acquire_timeout(Duration::from_secs(120));
        if backend == Backend::Sqlite {
            opts = opts.after_connect(|conn, _| {
                Box::pin(async move {
                    // Several processes share the file (serve, commands):
                    // writers wait for each other instead of failing after
                    // sqlx's 5 s. First, so the switch to WAL below waits
                    // too.
                    conn.execute("PRAGMA busy_timeout = 60000").await?;
                    // Write-ahead log: readers never block the writer, nor
                    // it them. Persistent in the file (a no-op once set);
                    // sqlx sets no journal mode, so it was DELETE.
                    conn.execute("PRAGMA journal_mode = WAL").await?;
                    // Every commit syncs the log to disk before it returns:
                    // the gateway replies 250 only after that. Per
                    // connection; FULL is SQLite's default, but say so (in
                    // WAL mode NORMAL would lose the last commits on power
                    // loss).
                    conn.execute("PRAGMA synchronous = FULL").await?;
                    Ok(())
                })
            });
        }
        if let Some(db) = sqlite_path(url) {
            private_db_files(&db)?;
        }
        let pool = opts.connect(url).await?;
        schema::migrate(
            &pool,
            backend,
            sqlite_path(url).as_deref(),
            schema::migrator(backend),
        )
        .await?;
        Ok(Store {
            pool,
            backend,
            master: Arc::new(RwLock::new(master)),
        })
    }

    /// The backend in use.
    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// The database's schema version (its highest applied migration).
    pub async fn schema_version(&self) -> Result<i64, StoreError> {
        Ok(schema::applied(&self.pool, self.backend)
            .await?
            .unwrap_or(0))
    }

    /// The master keys in use (a copy).
    pub fn master_keys(&self) -> MasterKeys {
        match self.master.read() {
            Ok(m) => m.clone(),
            Err(p) => p.into_inner().clone(),
        }
    }

    /// Replaces the master keys this process holds.
    pub fn set_master_keys(&self, keys: MasterKeys) {
        match self.master.write() {
            Ok(mut m) => *m = keys,
            Err(p) => *p.into_inner() = keys,
        }
    }

    /// The key with id `kek_id`, loading the master keys again from their
    /// source when this process does not hold it (another process may have
    /// rotated them since this one started).
    pub(crate) fn kek(&self, kek_id: &str) -> Option<Kek> {
        let keys = self.master_keys();
        if let Some(k) = keys.by_id(kek_id) {
            return Some(k.clone());
        }
        let fresh = keys.reload().ok()?;
        let k = fresh.by_id(kek_id).cloned();
        self.set_master_keys(fresh);
        k
    }

    /// Starts a transaction that will write.
    pub async fn begin(&self) -> Result<Tx<'_>, StoreError> {
        let tx = match self.backend {
            Backend::Sqlite => self.pool.begin_with("BEGIN IMMEDIATE").await?,
            Backend::Postgres => self.pool.begin().await?,
        };
        Ok(Tx { tx, store: self })
    }

    /// Starts a transaction that only reads (a consistent view).
    pub async fn begin_read(&self) -> Result<Tx<'_>, StoreError> {
        Ok(Tx {
            tx: self.pool.begin().await?,
            store: self,
        })
    }

    /// Closes the pool.
    pub async fn close(&self) {
        self.pool.close().await;
    }
}

/// Store methods that run one [`Tx`] method in a transaction of their own.
macro_rules! in_tx {
    ($begin:ident: $( $(#[$m:meta])* fn $name:ident(&self $(, $a:ident: $t:ty)*) -> $r:ty; )*) => {
        impl Store {
            $(
                $(#[$m])*
                pub async fn $name(&self $(, $a: $t)*) -> Result<$r, StoreError> {
                    let mut tx = self.$begin().await?;
                    let r = tx.$name($($a),*).await?;
                    tx.commit().await?;
                    Ok(r)
                }
            )*
        }
    };
}
pub(crate) use in_tx;

/// Seconds since the epoch, now.
pub fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use sqlx::{Connection, Row};

    use super::*;

    fn master() -> MasterKeys {
        MasterKeys {
            current: Kek::generate().unwrap(),
            next: None,
            file: None,
            extra: Vec::new(),
        }
    }

    /// (journal_mode, synchronous) of one connection.
    async fn pragmas(c: &mut sqlx::AnyConnection) -> (String, i64) {
        let mode = sqlx::query("PRAGMA journal_mode")
            .fetch_one(&mut *c)
            .await
            .unwrap()
            .try_get(0)
            .unwrap();
        let sync = sqlx::query("PRAGMA synchronous")
            .fetch_one(&mut *c)
            .await
            .unwrap()
            .try_get(0)
            .unwrap();
        (mode, sync)
    }

    /// Every pool connection logs ahead and syncs at each commit, on a new
    /// database and on one made before in the rollback-journal mode.
    #[tokio::test(flavor = "current_thread")]
    async fn sqlite_commits_are_synced_write_ahead() {
        sqlx::any::install_default_drivers();
        let old = tempfile::tempdir().unwrap();
        let url = sqlite_url(old.path());
        let mut c = sqlx::AnyConnection::connect(&url).await.unwrap();
        sqlx::query("CREATE TABLE before_us (x BIGINT)")
            .execute(&mut c)
            .await
            .unwrap();
        assert_eq!(pragmas(&mut c).await.0, "delete", "sqlx's default");
        c.close().await.unwrap();
        let new = tempfile::tempdir().unwrap();
        for url in [url, sqlite_url(new.path())] {
            let s = Store::open(&url, master()).await.unwrap();
            // All of the pool's connections at once, so each is a new one.
            let mut conns = Vec::new();
            for _ in 0..4 {
                conns.push(s.pool.acquire().await.unwrap());
            }
            for c in &mut conns {
                assert_eq!(pragmas(c).await, ("wal".to_string(), 2), "{url}");
            }
            drop(conns);
            // A second process on the same file while this one reads.
            let mut reading = s.begin_read().await.unwrap();
            reading.queue_depth(None).await.unwrap();
            let other = Store::open(&url, master()).await.unwrap();
            other.create_organisation("B", "2").await.unwrap();
            reading.rollback().await.unwrap();
            other.close().await;
            s.close().await;
        }
    }
}
