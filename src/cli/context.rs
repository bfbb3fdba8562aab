//! Opening the data directory for a command: the service over it, and the
//! runtime that drives it.

use std::path::PathBuf;

use clap::Args;
use service::{Actor, Location, Service};

use super::io::{Fail, usage};

/// Where the data lives; every store-backed command takes these.
#[derive(Debug, Args, Clone)]
pub struct StoreArgs {
    /// Data directory: SQLite database, master key, spool.
    #[arg(long, value_name = "DIR", env = "SIKKERMAIL_DATA_DIR", global = true)]
    pub data_dir: Option<PathBuf>,
    /// PostgreSQL URL (postgres://...) instead of the SQLite file in the data
    /// directory. The master key still comes from the data directory or
    /// SIKKERMAIL_MASTER_KEY.
    #[arg(
        long,
        value_name = "URL",
        env = "SIKKERMAIL_DATABASE_URL",
        global = true
    )]
    pub database_url: Option<String>,
}

impl StoreArgs {
    /// The data directory (default `./sikkermail-data`).
    pub fn dir(&self) -> PathBuf {
        self.data_dir
            .clone()
            .unwrap_or_else(|| PathBuf::from("./sikkermail-data"))
    }

    /// True when the user named a data directory or database.
    pub fn given(&self) -> bool {
        self.data_dir.is_some() || self.database_url.is_some()
    }
}

/// An open organisation (the service, holding the data directory's lock
/// in shared mode) and a runtime to drive it.
pub struct Ctx {
    pub rt: tokio::runtime::Runtime,
    pub svc: Service,
}

impl Ctx {
    pub fn org(&self) -> &store::Organisation {
        self.svc.org()
    }

    pub fn store(&self) -> &store::Store {
        self.svc.store()
    }
}

pub fn runtime() -> Result<tokio::runtime::Runtime, Fail> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| Fail {
            code: 1,
            msg: format!("cannot start the runtime: {e}"),
        })
}

impl StoreArgs {
    pub fn location(&self) -> Location {
        Location {
            data_dir: self.dir(),
            database_url: self.database_url.clone(),
        }
    }
}

/// Opens an initialised data directory (or database).
pub fn open(args: &StoreArgs) -> Result<Ctx, Fail> {
    let rt = runtime()?;
    let svc = rt.block_on(Service::open(&args.location(), Actor::from_process()))?;
    Ok(Ctx { rt, svc })
}

/// Every key the store holds, as a decryption keyring, for `smime decrypt
/// --data-dir`. The second value lists keys that could not be opened (each
/// named, with the reason); they are skipped, never fatal.
pub fn store_keyring(args: &StoreArgs) -> Result<(smime::MemoryKeyring, Vec<String>), Fail> {
    let ctx = open(args)?;
    let kr = ctx.rt.block_on(ctx.svc.keyring())?;
    Ok((
        kr.ring,
        kr.skipped.iter().map(|u| format!("skipped {u}")).collect(),
    ))
}

impl From<service::Error> for Fail {
    fn from(e: service::Error) -> Self {
        usage(e.to_string())
    }
}

/// `YYYY-MM-DD HH:MM:SSZ` for seconds since the epoch.
pub fn date(unix: i64) -> String {
    openssl::asn1::Asn1Time::from_unix(unix)
        .map(|t| t.to_string())
        .unwrap_or_else(|_| unix.to_string())
}

pub use service::certs::{fingerprint, serial_hex, validity};
