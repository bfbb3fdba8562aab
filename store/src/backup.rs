//! Backup and restore of the SQLite store.
//!
//! A backup is one SQLite file made by `VACUUM INTO`: a consistent snapshot
//! taken inside one read transaction, so writers (a running `serve`) go on
//! while it is made and nothing committed after it began is in it. It holds
//! the sealed keys and queued bodies but never the master key that opens
//! them. A PostgreSQL store is backed up with `pg_dump` instead (see the
//! README); [`Store::backup_sqlite`] refuses it.
//!
//! A restore checks the file before it writes anything (an SQLite file,
//! sikkermail's first migration, a schema this build knows), works on a
//! copy in a hidden directory inside the new data directory, proves that
//! the master key given opens every sealed key, and only then links the
//! database into place. A failure leaves nothing behind.

use std::fs;
use std::io::{Read, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use sqlx::any::AnyPoolOptions;
use sqlx::{AnyPool, Row};

use crate::seal::{Kek, MasterKeys, check_private_dir, sync_dir};
use crate::{Backend, OrgId, Store, StoreError, lock, schema};

/// What a store (or a backup of one) holds, for the operator.
#[derive(Debug, Clone)]
pub struct Contents {
    /// The schema version (highest applied migration).
    pub schema: i64,
    /// The organisations' names.
    pub organisations: Vec<String>,
    /// How many private keys are sealed in it.
    pub keys: i64,
    /// Messages in the queue that are not done (active or held).
    pub queued: i64,
    /// The master keys (ids) its sealed rows need.
    pub master_key_ids: Vec<String>,
}

/// Why a PostgreSQL store is not backed up by `sikkermail backup`.
pub const POSTGRES_BACKUP: &str = "the store is on PostgreSQL: back it up with pg_dump \
     (pg_dump --format=custom --file=sikkermail.dump 'postgres://...'), restore it with \
     pg_restore into a new database; see the README, \"Backup, restore and upgrades\"";

async fn contents(pool: &AnyPool) -> Result<Contents, StoreError> {
    let schema = schema::applied(pool, Backend::Sqlite).await?.unwrap_or(0);
    let organisations = sqlx::query("SELECT name FROM organisations ORDER BY id")
        .fetch_all(pool)
        .await?
        .iter()
        .map(|r| r.try_get::<String, _>("name"))
        .collect::<Result<Vec<_>, _>>()?;
    let count = |sql: &'static str| async move {
        let n: i64 = sqlx::query(sql).fetch_one(pool).await?.try_get("n")?;
        Ok::<_, StoreError>(n)
    };
    let keys = count("SELECT COUNT(*) AS n FROM private_keys").await?;
    let queued = count("SELECT COUNT(*) AS n FROM queue_messages WHERE state <> 'done'").await?;
    Ok(Contents {
        schema,
        organisations,
        keys,
        queued,
        master_key_ids: kek_ids(pool).await?,
    })
}

/// Every master key id a sealed row of the store names.
async fn kek_ids(pool: &AnyPool) -> Result<Vec<String>, StoreError> {
    sqlx::query(
        "SELECT kek_id AS k FROM master_state \
         UNION SELECT kek_id FROM private_keys \
         UNION SELECT kek_id FROM mailbox_secrets \
         UNION SELECT body_kek FROM queue_messages WHERE body_kek IS NOT NULL \
         ORDER BY 1",
    )
    .fetch_all(pool)
    .await?
    .iter()
    .map(|r| Ok(r.try_get::<String, _>("k")?))
    .collect()
}

/// A pool of one connection on an SQLite file (`rw`: it must exist).
async fn one_connection(file: &Path, mode: &str) -> Result<AnyPool, StoreError> {
    sqlx::any::install_default_drivers();
    let url = format!("sqlite://{}?mode={mode}", file.display());
    Ok(AnyPoolOptions::new()
        .max_connections(1)
        .connect(&url)
        .await?)
}

fn io_err(what: &str, p: &Path, e: std::io::Error) -> StoreError {
    StoreError::Conflict(format!("cannot {what} {}: {e}", p.display()))
}

/// An empty file, mode 0600, that did not exist.
fn create_private(p: &Path) -> Result<fs::File, StoreError> {
    fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(p)
        .map_err(|e| io_err("create", p, e))
}

impl Store {
    /// Writes a consistent copy of the SQLite store to `out`, mode 0600,
    /// while other processes go on writing. `out` must not exist: the copy
    /// is made beside it under a temporary name, synced, and linked to
    /// `out` only when complete (a killed backup leaves no half file under
    /// the name). Returns what the copy holds.
    pub async fn backup_sqlite(&self, out: &Path) -> Result<Contents, StoreError> {
        if self.backend != Backend::Sqlite {
            return Err(StoreError::Conflict(POSTGRES_BACKUP.into()));
        }
        if fs::symlink_metadata(out).is_ok() {
            return Err(StoreError::Conflict(format!(
                "{} exists: a backup never overwrites a file; name a new one",
                out.display()
            )));
        }
        let name = out
            .file_name()
            .ok_or_else(|| StoreError::Conflict(format!("{} is not a file name", out.display())))?;
        let tmp = out.with_file_name(format!(
            ".{}.partial-{}",
            name.to_string_lossy(),
            std::process::id()
        ));
        let tmp_str = tmp
            .to_str()
            .ok_or_else(|| StoreError::Conflict(format!("{} is not UTF-8", out.display())))?
            .to_string();
        // SQLite writes into an empty file it is given; making it first
        // gives it its mode whatever the umask.
        drop(create_private(&tmp)?);
        let made = async {
            sqlx::query("VACUUM INTO $1")
                .bind(&tmp_str)
                .execute(&self.pool)
                .await?;
            let pool = one_connection(&tmp, "ro").await?;
            let c = contents(&pool).await;
            pool.close().await;
            let c = c?;
            fs::File::open(&tmp)
                .and_then(|f| f.sync_all())
                .map_err(|e| io_err("sync", &tmp, e))?;
            fs::hard_link(&tmp, out).map_err(|e| io_err("create", out, e))?;
            sync_dir(out)?;
            Ok(c)
        }
        .await;
        let _ = fs::remove_file(&tmp);
        made
    }

    /// What in this store the master keys it holds do not open: master key
    /// ids named by sealed rows that are not loaded, and every private key
    /// of every organisation that does not unseal. Empty when all open.
    pub async fn unopenable(&self) -> Result<Vec<String>, StoreError> {
        let held = self.master_keys();
        let mut out: Vec<String> = kek_ids(&self.pool)
            .await?
            .into_iter()
            .filter(|id| held.by_id(id).is_none())
            .map(|id| format!("rows are sealed under master key {id}, which was not given"))
            .collect();
        let orgs: Vec<i64> = sqlx::query("SELECT id FROM organisations ORDER BY id")
            .fetch_all(&self.pool)
            .await?
            .iter()
            .map(|r| r.try_get("id"))
            .collect::<Result<_, _>>()?;
        for org in orgs {
            let mut tx = self.begin_read().await?;
            let ring = tx.keyring(OrgId(org)).await?;
            tx.rollback().await?;
            out.extend(ring.skipped.iter().map(|u| u.to_string()));
        }
        Ok(out)
    }
}

/// How the master key reaches the restored data directory.
#[derive(Debug)]
pub enum RestoreKey {
    /// Written to `<data_dir>/master.key` (from the administrator's copy).
    Write(Kek),
    /// Already there, or given in the environment: nothing is written.
    InPlace,
}

/// What a restore made.
#[derive(Debug)]
pub struct Restored {
    /// The restored database file.
    pub db: PathBuf,
    /// What it holds.
    pub contents: Contents,
    /// The schema version of the backup before it was brought up to date.
    pub from_schema: i64,
}

/// Restores the backup `file` into the new data directory `data_dir`
/// (absent, or empty but for a master key and lock file) and checks that
/// `master` opens it. Nothing is written when the file is not a sikkermail
/// store this build can use or the key does not open it.
pub async fn restore_sqlite(
    file: &Path,
    data_dir: &Path,
    master: MasterKeys,
    key: RestoreKey,
) -> Result<Restored, StoreError> {
    check_sqlite_header(file)?;
    let created = prepare_dir(data_dir)?;
    let lock_file = data_dir.join(lock::LOCK_FILE);
    let lock_existed = lock_file.exists();
    let work = data_dir.join(format!(".restore-{}", std::process::id()));
    let result = async {
        let _lock = lock::DirLock::acquire(data_dir, lock::LockMode::Exclusive, || {})?;
        let db = data_dir.join("sikkermail.db");
        if fs::symlink_metadata(&db).is_ok() {
            return Err(StoreError::Conflict(format!(
                "{} appeared while restoring: restore never overwrites",
                db.display()
            )));
        }
        fs::DirBuilder::new()
            .mode(0o700)
            .create(&work)
            .map_err(|e| io_err("create", &work, e))?;
        let copy = work.join("sikkermail.db");
        copy_private(file, &copy)?;
        let from_schema = check_store(file, &copy).await?;
        let store = Store::open(&crate::sqlite_url(&work), master).await?;
        let checked = async {
            let bad = store.unopenable().await?;
            if !bad.is_empty() {
                let held = store.master_keys().ids().join(", ");
                return Err(StoreError::Seal(format!(
                    "the master key given ({held}) does not open the restored store, so nothing \
                     was restored: {}; give the master key of the installation the backup was \
                     made from",
                    bad.join("; ")
                )));
            }
            // Leases belong to the workers of the installation the backup
            // was taken from, none of which runs here: the restored queue is
            // claimable at once, not when those leases (10 minutes) run out.
            sqlx::query(
                "UPDATE queue_messages SET lease_owner = NULL, lease_until = NULL \
                 WHERE lease_owner IS NOT NULL",
            )
            .execute(&store.pool)
            .await?;
            // The same for the shared mailboxes' folders (mailbox decrypt,
            // serve's watchers).
            sqlx::query(
                "UPDATE mailbox_folders SET lease_owner = NULL, lease_until = 0 \
                 WHERE lease_owner IS NOT NULL",
            )
            .execute(&store.pool)
            .await?;
            let c = contents(&store.pool).await?;
            sqlx::query("PRAGMA wal_checkpoint(TRUNCATE)")
                .execute(&store.pool)
                .await?;
            Ok(c)
        }
        .await;
        store.close().await;
        let contents = checked?;
        fs::File::open(&copy)
            .and_then(|f| f.sync_all())
            .map_err(|e| io_err("sync", &copy, e))?;
        fs::hard_link(&copy, &db).map_err(|e| io_err("create", &db, e))?;
        if let RestoreKey::Write(k) = &key
            && let Err(e) =
                crate::seal::write_secret_new(&data_dir.join("master.key"), &k.to_base64())
        {
            let _ = fs::remove_file(&db);
            return Err(e);
        }
        sync_dir(&db)?;
        Ok(Restored {
            db,
            contents,
            from_schema,
        })
    }
    .await;
    let _ = fs::remove_dir_all(&work);
    if result.is_err() {
        if created {
            let _ = fs::remove_dir_all(data_dir);
        } else if !lock_existed {
            let _ = fs::remove_file(&lock_file);
        }
    }
    result
}

fn check_sqlite_header(file: &Path) -> Result<(), StoreError> {
    let mut head = [0u8; 16];
    fs::File::open(file)
        .and_then(|mut f| f.read_exact(&mut head))
        .map_err(|e| {
            StoreError::Conflict(format!("cannot read {} as a backup: {e}", file.display()))
        })?;
    if &head != b"SQLite format 3\0" {
        return Err(StoreError::Conflict(format!(
            "{} is not a sikkermail backup (not an SQLite database); a PostgreSQL dump is \
             restored with pg_restore",
            file.display()
        )));
    }
    Ok(())
}

/// Makes `dir` (0700) or checks that it holds nothing a restore could
/// overwrite. True when it was made here.
fn prepare_dir(dir: &Path) -> Result<bool, StoreError> {
    match fs::symlink_metadata(dir) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            fs::DirBuilder::new()
                .mode(0o700)
                .create(dir)
                .map_err(|e| io_err("create", dir, e))?;
            Ok(true)
        }
        Err(e) => Err(io_err("read", dir, e)),
        Ok(m) if !m.is_dir() => Err(StoreError::Conflict(format!(
            "{} exists and is not a directory",
            dir.display()
        ))),
        Ok(_) => {
            check_private_dir(dir)?;
            let mut others = Vec::new();
            for e in fs::read_dir(dir).map_err(|e| io_err("read", dir, e))? {
                let name = e
                    .map_err(|e| io_err("read", dir, e))?
                    .file_name()
                    .to_string_lossy()
                    .into_owned();
                if name != "master.key" && name != lock::LOCK_FILE {
                    others.push(name);
                }
            }
            if !others.is_empty() {
                others.sort();
                return Err(StoreError::Conflict(format!(
                    "{} is not empty (it holds {}): restore never overwrites an installation; \
                     name a new directory",
                    dir.display(),
                    others.join(", ")
                )));
            }
            Ok(false)
        }
    }
}

fn copy_private(from: &Path, to: &Path) -> Result<(), StoreError> {
    let mut src = fs::File::open(from).map_err(|e| io_err("read", from, e))?;
    let mut dst = create_private(to)?;
    std::io::copy(&mut src, &mut dst).map_err(|e| io_err("copy", from, e))?;
    dst.flush().map_err(|e| io_err("write", to, e))?;
    Ok(())
}

/// Checks the copy of a backup: a sound SQLite file, sikkermail's own
/// first migration, a schema this build knows. Returns its schema version.
async fn check_store(file: &Path, copy: &Path) -> Result<i64, StoreError> {
    let not_ours = |why: &str| {
        StoreError::Conflict(format!(
            "{} is not a sikkermail backup ({why})",
            file.display()
        ))
    };
    let pool = one_connection(copy, "rw").await?;
    let checked = async {
        let ok: String = sqlx::query("PRAGMA quick_check")
            .fetch_one(&pool)
            .await
            .map_err(|e| not_ours(&format!("unreadable: {e}")))?
            .try_get(0)?;
        if ok != "ok" {
            return Err(not_ours(&format!("damaged: {ok}")));
        }
        let Some(v) = schema::applied(&pool, Backend::Sqlite).await? else {
            return Err(not_ours("an SQLite database without sikkermail's schema"));
        };
        let first: Option<Vec<u8>> =
            sqlx::query("SELECT checksum FROM _sqlx_migrations WHERE version = 1")
                .fetch_optional(&pool)
                .await?
                .map(|r| r.try_get("checksum"))
                .transpose()?;
        let ours = schema::SQLITE.iter().find(|m| m.version == 1);
        if first.as_deref() != ours.map(|m| &*m.checksum) {
            return Err(not_ours("an SQLite database with another program's schema"));
        }
        let known = schema::known(&schema::SQLITE);
        if v > known {
            return Err(StoreError::Schema(format!(
                "{} is at schema {v}, this sikkermail knows up to {known}: restore it with a \
                 sikkermail at least as new as the one that made it",
                file.display()
            )));
        }
        Ok(v)
    }
    .await;
    pool.close().await;
    checked
}
