//! The schema version: which migrations a database has, which this build
//! knows, and bringing one up to the other.
//!
//! The version is the highest migration recorded in sqlx's
//! `_sqlx_migrations` table (one row per applied migration, with its
//! checksum). Migrations only go forward. Each runs in one transaction
//! together with its row in `_sqlx_migrations` (sqlx does so on SQLite and
//! PostgreSQL unless a file starts with `-- no-transaction`, which none of
//! ours does), so one that fails or is killed half-way leaves the database
//! as it was and the next start runs it again. A database newer than this
//! build is refused before anything is touched.

use sqlx::migrate::{MigrateError, Migrator};
use sqlx::{AnyPool, Row};

use crate::{Backend, StoreError, lock};

/// The SQLite migrations of this build.
pub static SQLITE: Migrator = sqlx::migrate!("./migrations/sqlite");
/// The PostgreSQL migrations of this build.
pub static POSTGRES: Migrator = sqlx::migrate!("./migrations/postgres");

/// The migrations of this build for `backend`.
pub fn migrator(backend: Backend) -> &'static Migrator {
    match backend {
        Backend::Sqlite => &SQLITE,
        Backend::Postgres => &POSTGRES,
    }
}

/// The highest schema version `m` knows.
pub fn known(m: &Migrator) -> i64 {
    m.iter().map(|x| x.version).max().unwrap_or(0)
}

/// The database's schema version: its highest applied migration, or
/// `None` for a database sikkermail has never migrated.
pub async fn applied(pool: &AnyPool, backend: Backend) -> Result<Option<i64>, StoreError> {
    let exists = match backend {
        Backend::Sqlite => {
            "SELECT COUNT(*) AS n FROM sqlite_master WHERE type = 'table' AND name = '_sqlx_migrations'"
        }
        Backend::Postgres => {
            "SELECT COUNT(*) AS n FROM pg_catalog.pg_tables \
             WHERE tablename = '_sqlx_migrations' AND schemaname = current_schema()"
        }
    };
    let n: i64 = sqlx::query(exists).fetch_one(pool).await?.try_get("n")?;
    if n == 0 {
        return Ok(None);
    }
    let v: Option<i64> = sqlx::query("SELECT MAX(version) AS v FROM _sqlx_migrations")
        .fetch_one(pool)
        .await?
        .try_get("v")?;
    Ok(v)
}

/// The schema version of the database at `url` and the highest this build
/// knows, read without migrating anything (`serve --check`): `None` for a
/// database sikkermail has never migrated (or an SQLite file that does not
/// exist).
pub async fn peek(url: &str) -> Result<(Option<i64>, i64), StoreError> {
    sqlx::any::install_default_drivers();
    let (backend, url) = match crate::sqlite_path(url) {
        Some(file) if !file.exists() => return Ok((None, known(&SQLITE))),
        // rw: never creates the file.
        Some(file) => (
            Backend::Sqlite,
            format!("sqlite://{}?mode=rw", file.display()),
        ),
        None => (Backend::Postgres, url.to_string()),
    };
    let pool = sqlx::any::AnyPoolOptions::new()
        .max_connections(1)
        .connect(&url)
        .await?;
    let v = applied(&pool, backend).await;
    pool.close().await;
    Ok((v?, known(migrator(backend))))
}

/// The error for a database at `db` when this build knows up to `known`.
pub fn too_new(db: i64, known: i64) -> StoreError {
    StoreError::Schema(format!(
        "the database is at schema {db}, this sikkermail knows up to {known}: upgrade sikkermail \
         (a database is never migrated backwards; to go back to an older sikkermail, restore a \
         backup made before the upgrade)"
    ))
}

/// Refuses a database newer than `m`, then applies `m`'s migrations that
/// the database lacks, in order, each in its own transaction.
pub async fn migrate(
    pool: &AnyPool,
    backend: Backend,
    db_file: Option<&std::path::Path>,
    m: &Migrator,
) -> Result<(), StoreError> {
    // sqlx's SQLite migrator takes no lock: two processes starting on a
    // database that needs a migration would both apply it. A lock file
    // beside the database orders them. On PostgreSQL sqlx takes an
    // advisory lock of its own.
    let _migrating = match (backend, db_file) {
        (Backend::Sqlite, Some(db)) => Some(lock::DirLock::acquire_file(
            &db.with_extension("db.migrate-lock"),
            lock::LockMode::Exclusive,
            || {},
        )?),
        _ => None,
    };
    let known = known(m);
    if let Some(v) = applied(pool, backend).await?
        && v > known
    {
        return Err(too_new(v, known));
    }
    // On one connection of its own: when a migration fails, sqlx returns
    // without releasing its PostgreSQL advisory lock (a session lock), so
    // that connection is closed instead of going back to the pool.
    let mut conn = pool.acquire().await?;
    let run = m.run(&mut *conn).await;
    if run.is_err() {
        let _ = conn.close().await;
    } else {
        drop(conn);
    }
    match run {
        Ok(()) => Ok(()),
        // A newer node migrated between the check and the run (PostgreSQL),
        // or the database has a migration this build never had.
        Err(MigrateError::VersionMissing(v)) => {
            let db = applied(pool, backend).await?.unwrap_or(v);
            if db > known {
                Err(too_new(db, known))
            } else {
                Err(StoreError::Schema(format!(
                    "the database has migration {v}, which this sikkermail does not know: it was \
                     made by another build of sikkermail; use that build"
                )))
            }
        }
        Err(MigrateError::VersionMismatch(v)) => Err(StoreError::Schema(format!(
            "the database's migration {v} differs from this sikkermail's: it was made by another \
             build of sikkermail; use that build"
        ))),
        Err(e) => Err(e.into()),
    }
}
