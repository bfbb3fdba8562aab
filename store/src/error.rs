//! The store's error type.

/// What can go wrong in the store.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The database said no (connection, constraint, migration).
    #[error("database: {0}")]
    Db(#[from] sqlx::Error),
    /// Migrations failed.
    #[error("database migration: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    /// The database's schema is not one this build can use: newer than it
    /// knows, or made by another build.
    #[error("{0}")]
    Schema(String),
    /// Sealing or unsealing a private key, or the master key itself.
    #[error("{0}")]
    Seal(String),
    /// A row that should exist does not (in this organisation).
    #[error("{0} not found")]
    NotFound(String),
    /// The data in a row cannot be used (bad PEM, ...).
    #[error("corrupt row: {0}")]
    Corrupt(String),
    /// Something already exists (e.g. the CA on `init`), or the row is not
    /// in the state the operation needs (renewing what is not active).
    #[error("{0}")]
    Conflict(String),
    /// The data directory's lock could not be taken.
    #[error("{0}")]
    Lock(String),
}
