//! `sikkermail backup` and `sikkermail restore`: the SQLite store copied
//! while `serve` runs, and restored into a new data directory with the
//! master key the administrator kept apart.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::Args;
use store::backup::{POSTGRES_BACKUP, RestoreKey};
use store::{Backend, Kek, MasterKeys, seal};

use super::context::{StoreArgs, open, runtime};
use super::io::{Fail, usage};

#[derive(Debug, Args)]
pub struct BackupArgs {
    /// The backup file to write (mode 0600); it must not exist.
    #[arg(long, value_name = "FILE")]
    pub out: PathBuf,
    #[command(flatten)]
    pub store: StoreArgs,
}

#[derive(Debug, Args)]
pub struct RestoreArgs {
    /// The backup (`sikkermail backup --out FILE`).
    #[arg(value_name = "FILE")]
    pub file: PathBuf,
    /// The master key of the installation the backup was made from, copied
    /// to <data-dir>/master.key. Without it: SIKKERMAIL_MASTER_KEY, or a
    /// master.key already in the new data directory.
    #[arg(long, value_name = "FILE")]
    pub master_key: Option<PathBuf>,
    #[command(flatten)]
    pub store: StoreArgs,
}

/// `backup --out FILE`.
pub fn backup(a: BackupArgs) -> Result<ExitCode, Fail> {
    let ctx = open(&a.store)?;
    if ctx.store().backend() == Backend::Postgres {
        return Err(usage(POSTGRES_BACKUP));
    }
    let c = ctx.rt.block_on(ctx.store().backup_sqlite(&a.out))?;
    let size = std::fs::metadata(&a.out).map(|m| m.len()).unwrap_or(0);
    outln!(
        "sikkermail backup: wrote {} ({size} bytes, mode 0600)",
        a.out.display()
    );
    outln!(
        "  schema {}, organisation(s) {}, {} private key(s), {} message(s) in the queue",
        c.schema,
        c.organisations.join(", "),
        c.keys,
        c.queued
    );
    let master = ctx.store().master_keys();
    let current = master.current.id();
    let at = match &master.file {
        Some(f) => f.display().to_string(),
        None => format!("{} (the environment)", seal::MASTER_KEY_ENV),
    };
    outln!("  the backup holds no master key: its keys and queued mail open only with");
    for id in &c.master_key_ids {
        if *id == current {
            outln!("    master key {id}, which is in {at}");
        } else {
            outln!("    master key {id} (an older key: not the current one)");
        }
    }
    outln!("  keep a copy of the master key apart from the backups: either alone opens nothing");
    outln!(
        "  restore: sikkermail restore {} --data-dir NEW --master-key COPY-OF-MASTER-KEY",
        a.out.display()
    );
    Ok(ExitCode::SUCCESS)
}

/// `restore FILE [--master-key FILE]` into the data directory named by
/// `--data-dir` (or the configuration), which must be new.
pub fn restore(a: RestoreArgs) -> Result<ExitCode, Fail> {
    let loc = a.store.location()?;
    if loc.database_url.is_some() {
        return Err(usage(
            "restore writes an SQLite data directory; a PostgreSQL store is restored with \
             pg_restore into a new database (see the README, \"Backup, restore and upgrades\")",
        ));
    }
    let dir = loc.data_dir;
    let (master, key, from) = master_key(&a, &dir)?;
    let held = master.current.id();
    let rt = runtime()?;
    let r = rt
        .block_on(store::backup::restore_sqlite(&a.file, &dir, master, key))
        .map_err(|e| Fail {
            code: if matches!(e, store::StoreError::Seal(_)) {
                1
            } else {
                2
            },
            msg: e.to_string(),
        })?;
    let c = &r.contents;
    let schema = if r.from_schema == c.schema {
        format!("schema {}", c.schema)
    } else {
        format!("schema {} (brought up from {})", c.schema, r.from_schema)
    };
    outln!(
        "sikkermail restore: {} restored into {} ({schema})",
        a.file.display(),
        dir.display()
    );
    outln!(
        "  organisation(s) {}, {} private key(s), every one opened with master key {held}; {} message(s) in the queue",
        c.organisations.join(", "),
        c.keys,
        c.queued
    );
    outln!("  master key: {from}");
    outln!(
        "  start it: sikkermail serve --data-dir {} (files that are not in the store, such as tls/ \
         and maildir/, come from their own backups)",
        dir.display()
    );
    Ok(ExitCode::SUCCESS)
}

/// The master key to restore with, how it reaches the new directory, and
/// where it came from (for the report).
fn master_key(a: &RestoreArgs, dir: &Path) -> Result<(MasterKeys, RestoreKey, String), Fail> {
    let in_dir = dir.join("master.key");
    if let Some(f) = &a.master_key {
        let text = std::fs::read_to_string(f)
            .map_err(|e| usage(format!("cannot read the master key {}: {e}", f.display())))?;
        let kek = Kek::from_base64(&text).map_err(|e| usage(format!("{}: {e}", f.display())))?;
        let mut keys = MasterKeys::single(kek.clone());
        keys.extra = extra_keys()?;
        if in_dir.exists() {
            let there = MasterKeys::load(dir)?;
            if there.current.id() != kek.id() {
                return Err(usage(format!(
                    "{} holds master key {}, not the {} given with --master-key: remove one",
                    in_dir.display(),
                    there.current.id(),
                    kek.id()
                )));
            }
            return Ok((keys, RestoreKey::InPlace, in_dir.display().to_string()));
        }
        let from = format!("{} (copied from {})", in_dir.display(), f.display());
        return Ok((keys, RestoreKey::Write(kek), from));
    }
    if std::env::var(seal::MASTER_KEY_ENV).is_ok() {
        let keys = MasterKeys::load(dir)?;
        return Ok((keys, RestoreKey::InPlace, seal::MASTER_KEY_ENV.to_string()));
    }
    if in_dir.exists() {
        let keys = MasterKeys::load(dir)?;
        return Ok((keys, RestoreKey::InPlace, in_dir.display().to_string()));
    }
    Err(usage(format!(
        "give the master key of the installation the backup was made from: --master-key FILE \
         (copied to {}), or {}",
        in_dir.display(),
        seal::MASTER_KEY_ENV
    )))
}

/// `SIKKERMAIL_EXTRA_MASTER_KEYS`: older keys some rows may still need.
fn extra_keys() -> Result<Vec<Kek>, Fail> {
    match std::env::var(seal::EXTRA_MASTER_KEYS_ENV) {
        Ok(v) => v
            .split(',')
            .filter(|s| !s.trim().is_empty())
            .map(|k| Kek::from_base64(k).map_err(Fail::from))
            .collect(),
        Err(_) => Ok(Vec::new()),
    }
}
