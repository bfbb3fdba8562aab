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
//! certificates, recipients, CA state, audit) and [`keys`] (sealed keys,
//! the decryption keyring, master-key rotation).

pub mod error;
pub mod keys;
pub mod records;
pub mod seal;

use std::path::Path;
use std::sync::Once;

use sqlx::AnyPool;
use sqlx::any::AnyPoolOptions;

pub use error::StoreError;
pub use keys::{KeyInfo, NewKey};
pub use records::{Audit, CaState, CertRow, NewCert, OrgId, Organisation, RecipientRow};
pub use seal::{Kek, MasterKeys};

/// Which database is behind the pool.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// SQLite file.
    Sqlite,
    /// PostgreSQL server.
    Postgres,
}

/// A connection pool plus the master keys.
#[derive(Debug, Clone)]
pub struct Store {
    pub(crate) pool: AnyPool,
    pub(crate) backend: Backend,
    pub(crate) master: MasterKeys,
}

/// The SQLite URL for a data directory.
pub fn sqlite_url(data_dir: &Path) -> String {
    format!(
        "sqlite://{}?mode=rwc",
        data_dir.join("sikkermail.db").display()
    )
}

impl Store {
    /// Connects to `url` (`sqlite://...` or `postgres://...`) and brings the
    /// schema up to date.
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
        let max = if backend == Backend::Sqlite { 1 } else { 8 };
        let pool = AnyPoolOptions::new()
            .max_connections(max)
            .connect(url)
            .await?;
        match backend {
            Backend::Sqlite => sqlx::migrate!("./migrations/sqlite").run(&pool).await?,
            Backend::Postgres => sqlx::migrate!("./migrations/postgres").run(&pool).await?,
        }
        Ok(Store {
            pool,
            backend,
            master,
        })
    }

    /// The backend in use.
    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// The master keys in use.
    pub fn master_keys(&self) -> &MasterKeys {
        &self.master
    }

    /// Closes the pool.
    pub async fn close(&self) {
        self.pool.close().await;
    }
}

/// Seconds since the epoch, now.
pub fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}
