//! Opening the data directory for a command: the service over it, and the
//! runtime that drives it.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use clap::Args;
use gateway::Config;
use service::{Actor, Location, Service};

use super::io::{Fail, usage};

/// The configuration file read when neither `--config` nor
/// `SIKKERMAIL_CONFIG` names one, if it exists (the package's).
pub const DEFAULT_CONFIG: &str = "/etc/sikkermail/sikkermail.toml";

/// The built-in data directory, when nothing names one.
pub const DEFAULT_DATA_DIR: &str = "./sikkermail-data";

/// Where the data lives; every command takes these, before or after its
/// name (`sikkermail --config F queue list`, `sikkermail queue list
/// --data-dir D`). One order for all: the flag, then the environment
/// variable, then the configuration file, then the built-in default.
#[derive(Debug, Args, Clone, Default)]
pub struct StoreArgs {
    /// Configuration file (TOML), the one `serve` reads [env:
    /// SIKKERMAIL_CONFIG; default: /etc/sikkermail/sikkermail.toml when it
    /// exists].
    #[arg(long, value_name = "FILE", global = true)]
    pub config: Option<PathBuf>,
    /// Data directory: SQLite database, master key, spool [env:
    /// SIKKERMAIL_DATA_DIR; else the configuration's data_dir; default
    /// ./sikkermail-data].
    #[arg(long, value_name = "DIR", global = true)]
    pub data_dir: Option<PathBuf>,
    /// PostgreSQL URL (postgres://...) instead of the SQLite file in the
    /// data directory; the master key still comes from the data directory
    /// or SIKKERMAIL_MASTER_KEY [env: SIKKERMAIL_DATABASE_URL; else the
    /// configuration's database_url].
    #[arg(long, value_name = "URL", global = true)]
    pub database_url: Option<String>,
}

/// The flags given before the command's name (`sikkermail --config F ...`).
static BEFORE: OnceLock<StoreArgs> = OnceLock::new();

/// Records the flags given before the command's name: a command's own
/// flags win over them.
pub fn set_before(args: StoreArgs) {
    let _ = BEFORE.set(args);
}

/// Where a setting came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// A command-line flag.
    Flag,
    /// An environment variable.
    Env,
    /// The configuration file.
    File,
    /// Nothing named it.
    Default,
}

/// A command's configuration: the file read (if any) and the
/// configuration with every override applied.
#[derive(Debug, Clone)]
pub struct Resolved {
    /// The configuration file read, and what named it.
    pub file: Option<(PathBuf, Source)>,
    /// The configuration: file, then `SIKKERMAIL_*`, then the flags.
    pub cfg: Config,
    /// The data directory the file and environment name (before
    /// `--data-dir`).
    pub configured_data_dir: PathBuf,
    /// What named the data directory.
    pub data_dir_from: Source,
    /// What named the database (`Default`: SQLite in the data directory).
    pub database_from: Source,
}

impl Resolved {
    /// Where the store is.
    pub fn location(&self) -> Location {
        Location {
            data_dir: self.cfg.data_dir.clone(),
            database_url: self.cfg.database_url.clone(),
        }
    }

    /// One line: the configuration file and the store, for banners.
    pub fn describe(&self) -> String {
        let from = |s: Source| match s {
            Source::Flag => "flag",
            Source::Env => "environment",
            Source::File => "configuration",
            Source::Default => "default",
        };
        let file = match &self.file {
            Some((p, s)) => format!("configuration {} ({})", p.display(), from(*s)),
            None => "no configuration file".to_string(),
        };
        let db = match &self.cfg.database_url {
            Some(u) => format!(
                ", database {} ({})",
                hide_password(u),
                from(self.database_from)
            ),
            None => String::new(),
        };
        format!(
            "{file}, data directory {} ({}){db}",
            self.cfg.data_dir.display(),
            from(self.data_dir_from)
        )
    }
}

/// A database URL without its password (for logs and banners).
pub fn hide_password(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_string();
    };
    let (rest, query) = match rest.split_once('?') {
        Some((r, q)) => (r, Some(q)),
        None => (rest, None),
    };
    let mut out = match rest.rsplit_once('@') {
        Some((auth, host)) => match auth.split_once(':') {
            Some((user, _)) => format!("{scheme}://{user}:***@{host}"),
            None => format!("{scheme}://{rest}"),
        },
        None => format!("{scheme}://{rest}"),
    };
    if let Some(q) = query {
        // libpq's parameters: password=..., sslpassword=...
        let q: Vec<String> = q
            .split('&')
            .map(|kv| match kv.split_once('=') {
                Some((k, _)) if k.to_ascii_lowercase().ends_with("password") => format!("{k}=***"),
                _ => kv.to_string(),
            })
            .collect();
        out.push('?');
        out.push_str(&q.join("&"));
    }
    out
}

fn env_nonempty(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.trim().is_empty())
}

impl StoreArgs {
    /// These flags, with those given before the command's name under them.
    fn merged(&self) -> StoreArgs {
        let before = BEFORE.get().cloned().unwrap_or_default();
        StoreArgs {
            config: self.config.clone().or(before.config),
            data_dir: self.data_dir.clone().or(before.data_dir),
            database_url: self.database_url.clone().or(before.database_url),
        }
    }

    /// The configuration file to read: `--config`, else
    /// `SIKKERMAIL_CONFIG`, else [`DEFAULT_CONFIG`] when it exists.
    pub fn config_file(&self) -> Option<(PathBuf, Source)> {
        let a = self.merged();
        if let Some(f) = a.config {
            return Some((f, Source::Flag));
        }
        if let Some(f) = env_nonempty("SIKKERMAIL_CONFIG") {
            return Some((PathBuf::from(f), Source::Env));
        }
        let d = Path::new(DEFAULT_CONFIG);
        d.exists().then(|| (d.to_path_buf(), Source::Default))
    }

    /// Reads the configuration (every error at once, exit 2) and puts the
    /// flags over it.
    pub fn resolve(&self) -> Result<Resolved, Fail> {
        let a = self.merged();
        let file = self.config_file();
        let mut cfg = load_config(file.as_ref().map(|(p, _)| p.as_path()))?;
        let configured_data_dir = cfg.data_dir.clone();
        let data_dir_from = if let Some(d) = &a.data_dir {
            cfg.data_dir = d.clone();
            Source::Flag
        } else if env_nonempty("SIKKERMAIL_DATA_DIR").is_some() {
            Source::Env
        } else if cfg.data_dir != Path::new(DEFAULT_DATA_DIR) {
            Source::File
        } else {
            Source::Default
        };
        let database_from = if let Some(u) = &a.database_url {
            if !(u.starts_with("postgres://") || u.starts_with("postgresql://")) {
                return Err(usage(
                    "--database-url: must be a postgres:// URL (SQLite is the default)",
                ));
            }
            cfg.database_url = Some(u.clone());
            Source::Flag
        } else if env_nonempty("SIKKERMAIL_DATABASE_URL").is_some() {
            Source::Env
        } else if cfg.database_url.is_some() {
            Source::File
        } else {
            Source::Default
        };
        Ok(Resolved {
            file,
            cfg,
            configured_data_dir,
            data_dir_from,
            database_from,
        })
    }

    /// True when the user named a data directory, a database or a
    /// configuration file (a flag or its environment variable): commands
    /// that work on files alone (`smime`) use the store only then.
    pub fn given(&self) -> bool {
        let a = self.merged();
        a.config.is_some()
            || a.data_dir.is_some()
            || a.database_url.is_some()
            || [
                "SIKKERMAIL_CONFIG",
                "SIKKERMAIL_DATA_DIR",
                "SIKKERMAIL_DATABASE_URL",
            ]
            .iter()
            .any(|v| env_nonempty(v).is_some())
    }

    /// Where the store is.
    pub fn location(&self) -> Result<Location, Fail> {
        Ok(self.resolve()?.location())
    }
}

/// Reads the configuration file (none: the built-in defaults) and the
/// environment: every error at once, exit 2.
pub fn load_config(file: Option<&Path>) -> Result<Config, Fail> {
    let text = match file {
        Some(p) => Some((
            p.display().to_string(),
            std::fs::read_to_string(p).map_err(|e| Fail {
                code: 2,
                msg: format!("cannot read the configuration {}: {e}", p.display()),
            })?,
        )),
        None => None,
    };
    let env: Vec<(String, String)> = std::env::vars().collect();
    Config::load(text.as_ref().map(|(n, t)| (n.as_str(), t.as_str())), &env).map_err(|errs| {
        let lines: Vec<String> = errs.iter().map(|e| format!("  {e}")).collect();
        Fail {
            code: 2,
            msg: format!(
                "the configuration has {} error(s):\n{}",
                errs.len(),
                lines.join("\n")
            ),
        }
    })
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

/// Opens an initialised data directory (or database).
pub fn open(args: &StoreArgs) -> Result<Ctx, Fail> {
    let rt = runtime()?;
    let svc = rt.block_on(Service::open(&args.location()?, Actor::from_process()))?;
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

#[cfg(test)]
mod tests {
    use super::hide_password;

    #[test]
    fn database_passwords_are_hidden_wherever_the_url_has_them() {
        for (url, shown) in [
            (
                "postgres://sm:Hemmelig@db.example/sm",
                "postgres://sm:***@db.example/sm",
            ),
            (
                "postgres://db.example/sm?user=sm&password=Hemmelig&sslmode=require",
                "postgres://db.example/sm?user=sm&password=***&sslmode=require",
            ),
            (
                "postgresql://sm@db/sm?sslpassword=Hemmelig",
                "postgresql://sm@db/sm?sslpassword=***",
            ),
            ("postgres://db/sm", "postgres://db/sm"),
        ] {
            assert_eq!(hide_password(url), shown);
            assert!(!hide_password(url).contains("Hemmelig"));
        }
    }
}
