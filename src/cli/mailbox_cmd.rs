//! `sikkermail mailbox ...`: shared IMAP mailboxes decrypted in place.
//! The mailboxes are `[mailbox.NAME]` tables of the configuration file
//! that `serve` reads (`--config`, or SIKKERMAIL_CONFIG).

use std::io::IsTerminal;
use std::process::ExitCode;
use std::sync::Arc;

use clap::Subcommand;
use gateway::Config;
use gateway::imap::run::{self, Progress, RunOptions, Summary, Worker};
use service::{Actor, Service};

use super::context::{StoreArgs, date};
use super::io::{Fail, usage};

#[derive(Debug, Subcommand)]
pub enum MailboxCommand {
    /// Decrypt the S/MIME-encrypted messages of a shared mailbox in place:
    /// each decrypted copy is appended to the same folder (flags and date
    /// kept, X-Sikkermail-* headers added), and only then the original is
    /// moved to the archive folder. Resumes where a killed run stopped.
    /// Prints, per folder, the encrypted messages still there that no key
    /// opened (in this run or an earlier one: the checkpoint has passed
    /// them; after importing a key, run again with --rescan).
    /// Exit status 0: done, no undecryptable message left in the folders;
    /// 1: the run stopped on an error, or a decrypted copy could not be
    /// appended; 3: done, but undecryptable messages remain (listed).
    Decrypt {
        /// With the [mailbox.NAME] table in the configuration (--config).
        #[command(flatten)]
        store: StoreArgs,
        /// The mailbox ([mailbox.NAME] in the configuration).
        #[arg(long, value_name = "NAME")]
        mailbox: String,
        /// Only this folder (repeat for more); default: the configured ones.
        #[arg(long = "folder", value_name = "FOLDER")]
        folders: Vec<String>,
        /// Report what would be done; change nothing.
        #[arg(long)]
        dry_run: bool,
        /// Look at every message again, not only those after the
        /// checkpoint (after importing a key that opens what failed).
        #[arg(long)]
        rescan: bool,
    },
    /// Store the mailbox's IMAP password sealed in the store (read from
    /// the environment variable named by --password-env).
    Password {
        #[command(flatten)]
        store: StoreArgs,
        /// The mailbox.
        #[arg(long, value_name = "NAME")]
        mailbox: String,
        /// Environment variable holding the password.
        #[arg(long, value_name = "VAR", required_unless_present = "remove")]
        password_env: Option<String>,
        /// Remove the stored password instead.
        #[arg(long)]
        remove: bool,
    },
    /// The configured mailboxes and each folder's checkpoint and lease.
    Status {
        #[command(flatten)]
        store: StoreArgs,
    },
}

/// `sikkermail mailbox ...`.
pub fn mailbox(cmd: MailboxCommand) -> Result<ExitCode, Fail> {
    match cmd {
        MailboxCommand::Decrypt {
            store,
            mailbox,
            folders,
            dry_run,
            rescan,
        } => {
            let cfg = store.resolve()?.cfg;
            let opts = RunOptions {
                folders,
                dry_run,
                rescan,
                ..RunOptions::default()
            };
            decrypt(&cfg, &mailbox, &opts)
        }
        MailboxCommand::Password {
            store,
            mailbox,
            password_env,
            remove,
        } => {
            let cfg = store.resolve()?.cfg;
            let rt = super::context::runtime()?;
            rt.block_on(async {
                let svc = open(&cfg).await?;
                if remove {
                    svc.mailbox_password_remove(&mailbox).await?;
                    outln!("removed the stored password of mailbox {mailbox}");
                    return Ok(ExitCode::SUCCESS);
                }
                let var = password_env.unwrap_or_default();
                let pw = std::env::var(&var)
                    .map_err(|_| usage(format!("--password-env {var}: the variable is not set")))?;
                if cfg.mailbox(&mailbox).is_none() {
                    errln!("sikkermail: note: the configuration has no [mailbox.{mailbox}] (yet)");
                }
                svc.mailbox_password_set(&mailbox, &pw).await?;
                outln!("stored the password of mailbox {mailbox} (sealed)");
                Ok(ExitCode::SUCCESS)
            })
        }
        MailboxCommand::Status { store } => {
            let cfg = store.resolve()?.cfg;
            let rt = super::context::runtime()?;
            rt.block_on(async {
                let svc = open(&cfg).await?;
                let states = svc.mailbox_folders().await?;
                for mb in &cfg.mailboxes {
                    outln!(
                        "{}\t{}@{}:{}\tfolders {}\tarchive {:?}\tlive {}",
                        mb.name,
                        mb.user,
                        mb.host,
                        mb.port,
                        mb.folders.join(", "),
                        mb.archive,
                        mb.live
                    );
                    for f in states.iter().filter(|s| s.mailbox == mb.name) {
                        let lease = match &f.lease_owner {
                            Some(o) if f.lease_until > store::now() => {
                                format!("\tworked on by {o}")
                            }
                            _ => String::new(),
                        };
                        outln!(
                            "  {:?}\tuidvalidity {}\tlast uid {}\tsince {}{lease}",
                            f.folder,
                            f.uidvalidity,
                            f.last_uid,
                            date(f.updated_at)
                        );
                    }
                }
                if cfg.mailboxes.is_empty() {
                    outln!("no [mailbox.NAME] in the configuration");
                }
                Ok(ExitCode::SUCCESS)
            })
        }
    }
}

async fn open(cfg: &Config) -> Result<Service, Fail> {
    let loc = service::Location {
        data_dir: cfg.data_dir.clone(),
        database_url: cfg.database_url.clone(),
    };
    // The data directory's lock is taken per operation (a long run must not
    // hold up a master-key rotation).
    Ok(Service::open_server(&loc, Actor::from_process()).await?)
}

/// A progress bar on a terminal (rate and ETA), nothing elsewhere.
struct Bar {
    bar: indicatif::ProgressBar,
}

impl Bar {
    fn new() -> Bar {
        let target = if std::io::stderr().is_terminal() {
            indicatif::ProgressDrawTarget::stderr()
        } else {
            indicatif::ProgressDrawTarget::hidden()
        };
        let bar = indicatif::ProgressBar::with_draw_target(Some(0), target);
        if let Ok(style) = indicatif::ProgressStyle::with_template(
            "{msg} {bar:40} {pos}/{len}  {per_sec}  ETA {eta}",
        ) {
            bar.set_style(style);
        }
        Bar { bar }
    }
}

impl Progress for Bar {
    fn start(&self, folder: &str, total: u64) {
        self.bar.reset();
        self.bar.set_length(total);
        self.bar.set_position(0);
        self.bar.set_message(folder.to_string());
    }
    fn advance(&self, n: u64) {
        self.bar.inc(n);
    }
    fn note(&self, msg: &str) {
        self.bar.suspend(|| errln!("sikkermail: {msg}"));
    }
}

fn decrypt(cfg: &Config, name: &str, opts: &RunOptions) -> Result<ExitCode, Fail> {
    let mb = cfg.mailbox(name).ok_or_else(|| {
        let known: Vec<&str> = cfg.mailboxes.iter().map(|m| m.name.as_str()).collect();
        usage(format!(
            "no [mailbox.{name}] in the configuration (configured: {})",
            if known.is_empty() {
                "none".to_string()
            } else {
                known.join(", ")
            }
        ))
    })?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| Fail {
            code: 1,
            msg: format!("cannot start the runtime: {e}"),
        })?;
    rt.block_on(async {
        let svc = open(cfg).await?;
        let (rules, _) = gateway::load_policy(cfg).map_err(|e| Fail {
            code: 2,
            msg: e.to_string(),
        })?;
        let crypto = gateway::engine::load_crypto(&svc, cfg, std::sync::Arc::new(rules))
            .await
            .map_err(|e| Fail {
                code: 1,
                msg: e.to_string(),
            })?;
        for s in &crypto.keys.skipped {
            errln!(
                "sikkermail: warning: a key does not open and is left out: {}",
                s.reason
            );
        }
        let password = run::password(&svc, mb)
            .await
            .map_err(|e| usage(e.to_string()))?;
        let bar = Bar::new();
        let worker = Worker {
            svc: &svc,
            crypto: Arc::new(crypto),
            mb,
            password,
            owner: format!(
                "cli@{}/{}",
                gateway::config::this_host(),
                std::process::id()
            ),
            progress: &bar,
        };
        let mut summary = Summary::default();
        let result = worker.run(opts, &mut summary).await;
        bar.bar.finish_and_clear();
        print_summary(name, opts.dry_run, &summary);
        let folders = if opts.folders.is_empty() {
            &mb.folders
        } else {
            &opts.folders
        };
        let remaining = still_undecryptable(&svc, name, folders).await?;
        if !opts.dry_run {
            let detail = match &result {
                Ok(()) => summary.line(),
                Err(e) => format!("{}; stopped: {e}", summary.line()),
            };
            if let Err(e) = svc.mailbox_audit_run(name, &detail).await {
                errln!("sikkermail: warning: audit entry not written: {e}");
            }
        }
        // Failures other than a message that does not open (a refused
        // APPEND) are retried by the next run.
        let other_failures = summary.failed().len() > summary.undecryptable().len();
        match result {
            Err(e) => Err(Fail {
                code: 1,
                msg: format!("mailbox {name}: {e}"),
            }),
            Ok(()) if other_failures => Ok(ExitCode::from(1)),
            Ok(()) if remaining > 0 => Ok(ExitCode::from(EXIT_UNDECRYPTABLE)),
            Ok(()) => Ok(ExitCode::SUCCESS),
        }
    })
}

/// `mailbox decrypt`'s exit status when undecryptable messages remain.
const EXIT_UNDECRYPTABLE: u8 = 3;

/// Most UIDs listed per folder.
const UIDS_LISTED: usize = 50;

/// Prints, per folder, the encrypted messages still in it that no key
/// opened (the store's list, which every run and `serve` keep); returns
/// how many in all.
async fn still_undecryptable(svc: &Service, name: &str, folders: &[String]) -> Result<usize, Fail> {
    let all = svc
        .store()
        .mailbox_undecryptable(svc.org().id, name)
        .await
        .map_err(|e| Fail {
            code: 1,
            msg: format!("mailbox {name}: reading the undecryptable messages failed: {e}"),
        })?;
    let mut total = 0;
    for folder in folders {
        let uids: Vec<String> = all
            .iter()
            .filter(|u| &u.folder == folder)
            .map(|u| u.uid.to_string())
            .collect();
        total += uids.len();
        if uids.is_empty() {
            outln!("  {folder:?}: none undecryptable");
            continue;
        }
        let more = uids.len().saturating_sub(UIDS_LISTED);
        outln!(
            "  {folder:?}: {} still undecryptable (UIDs {}{})",
            uids.len(),
            uids[..uids.len().min(UIDS_LISTED)].join(", "),
            if more > 0 {
                format!(" and {more} more")
            } else {
                String::new()
            }
        );
    }
    Ok(total)
}

fn print_summary(name: &str, dry_run: bool, s: &Summary) {
    let skipped = s.skipped();
    let failed = s.failed();
    let verb = if dry_run {
        "would decrypt"
    } else {
        "decrypted"
    };
    let reasons: Vec<String> = skipped.iter().map(|(r, n)| format!("{r} {n}")).collect();
    outln!(
        "mailbox {name}: {verb} {}, skipped {}{}, failed {}{}",
        s.decrypted(),
        skipped.values().sum::<usize>(),
        if reasons.is_empty() {
            String::new()
        } else {
            format!(" ({})", reasons.join(", "))
        },
        failed.len(),
        if s.reconnects > 0 {
            format!(", reconnected {} time(s)", s.reconnects)
        } else {
            String::new()
        }
    );
    for (folder, uid, why) in failed {
        outln!("  failed: {folder} uid {uid}: {why}");
    }
}
