//! The `sikkermail` command: wiring only. Each subcommand lives in `cli/`.

/// `println!` that never panics: a closed or full standard output (`|
/// head -c 1`, `>/dev/full`) is an ordinary condition, not a crash.
macro_rules! outln {
    ($($t:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stdout(), $($t)*);
    }};
}

/// `print!` that never panics (see [`outln`]).
macro_rules! out {
    ($($t:tt)*) => {{
        use std::io::Write as _;
        let _ = write!(std::io::stdout(), $($t)*);
    }};
}

/// `eprintln!` that never panics: a closed or full standard error
/// (`2>/dev/full`) must not turn a result into exit 101.
macro_rules! errln {
    ($($t:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stderr(), $($t)*);
    }};
}

/// `eprint!` that never panics (see [`errln`]).
macro_rules! errout {
    ($($t:tt)*) => {{
        use std::io::Write as _;
        let _ = write!(std::io::stderr(), $($t)*);
    }};
}

mod cli;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// S/MIME gateway and certificate manager for MitID Erhverv (OCES3) organisations.
#[derive(Debug, Parser)]
#[command(name = "sikkermail", version, about)]
struct Cli {
    /// --config, --data-dir, --database-url before the command's name.
    #[command(flatten)]
    store: cli::context::StoreArgs,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Create the data directory, master key, database and the internal CA.
    Init(cli::ca_cmd::InitArgs),
    /// The internal CA: show it, make a CRL.
    #[command(subcommand)]
    Ca(cli::ca_cmd::CaCommand),
    /// Issue, list, show, renew, revoke and export certificates.
    #[command(subcommand)]
    Cert(cli::ca_cmd::CertCommand),
    /// Import keys (MitID Erhverv, legacy OCES2), list them, rotate the master key.
    #[command(subcommand)]
    Key(cli::keys_cmd::KeyCommand),
    /// Outside parties' certificates (courts, authorities).
    #[command(subcommand)]
    Recipient(cli::keys_cmd::RecipientCommand),
    /// The audit trail, newest first.
    Audit(cli::keys_cmd::AuditArgs),
    /// Check the outbound policy file, and explain its decisions.
    #[command(subcommand)]
    Policy(cli::policy_cmd::PolicyCommand),
    /// Decrypt, verify, encrypt, sign and inspect S/MIME messages.
    #[command(subcommand)]
    Smime(cli::smime::SmimeCommand),
    /// Run the gateway: SMTP inbound and outbound, delivery, /metrics.
    Serve(cli::serve::ServeArgs),
    /// The mail queue: list, show, retry, hold, release, delete.
    #[command(subcommand)]
    Queue(cli::queue_cmd::QueueCommand),
    /// Accounts for SMTP AUTH on the outbound listener.
    #[command(subcommand)]
    SmtpUser(cli::smtp_user_cmd::SmtpUserCommand),
    /// Administrators of the admin API: create, list.
    #[command(subcommand)]
    Admin(cli::admin_cmd::AdminCommand),
    /// Shared IMAP mailboxes: decrypt in place, store the IMAP password, status.
    #[command(subcommand)]
    Mailbox(cli::mailbox_cmd::MailboxCommand),
    /// Applications for new organisations: pending, accept, reject.
    #[command(subcommand)]
    Org(cli::org_cmd::OrgCommand),
    /// Copy the SQLite store to a file while serve runs (never the master key).
    Backup(cli::backup_cmd::BackupArgs),
    /// Restore a backup into a new data directory, checking the master key opens it.
    Restore(cli::backup_cmd::RestoreArgs),
}

fn main() -> ExitCode {
    // Every file and directory this process makes is its owner's alone
    // (the database and its WAL, Maildir files, TLS keys, outputs).
    // SAFETY: umask has no preconditions and cannot fail.
    unsafe { libc::umask(0o077) };
    smime::init();
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            let _ = e.print();
            // clap's --help and --version are successes, everything else usage errors.
            return if e.use_stderr() {
                ExitCode::from(2)
            } else {
                ExitCode::SUCCESS
            };
        }
    };
    cli::context::set_before(cli.store);
    cli::io::finish(match cli.command {
        Command::Init(a) => cli::ca_cmd::init(a),
        Command::Ca(c) => cli::ca_cmd::ca(c),
        Command::Cert(c) => cli::ca_cmd::cert(c),
        Command::Key(c) => cli::keys_cmd::key(c),
        Command::Recipient(c) => cli::keys_cmd::recipient(c),
        Command::Audit(a) => cli::keys_cmd::audit(a),
        Command::Policy(c) => cli::policy_cmd::policy(c),
        Command::Smime(c) => cli::smime::run(c),
        Command::Serve(a) => cli::serve::serve(a),
        Command::Queue(c) => cli::queue_cmd::queue(c),
        Command::SmtpUser(c) => cli::smtp_user_cmd::smtp_user(c),
        Command::Admin(c) => cli::admin_cmd::admin(c),
        Command::Mailbox(c) => cli::mailbox_cmd::mailbox(c),
        Command::Org(c) => cli::org_cmd::org(c),
        Command::Backup(a) => cli::backup_cmd::backup(a),
        Command::Restore(a) => cli::backup_cmd::restore(a),
    })
}
