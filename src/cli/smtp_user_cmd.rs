//! `sikkermail smtp-user ...`: accounts for SMTP AUTH on the outbound
//! listener.

use std::process::ExitCode;

use clap::Subcommand;

use super::context::{StoreArgs, date, open};
use super::io::{Fail, password, usage};

#[derive(Debug, Subcommand)]
pub enum SmtpUserCommand {
    /// Add an account, or set a new password for one (at least 12 characters).
    Add {
        #[command(flatten)]
        store: StoreArgs,
        /// User name (what the mail server sends in AUTH).
        name: String,
        /// Environment variable holding the password.
        #[arg(long = "password-env", value_name = "VAR")]
        password_env: String,
    },
    /// Remove an account.
    Remove {
        #[command(flatten)]
        store: StoreArgs,
        /// User name.
        name: String,
    },
    /// Every account.
    List {
        #[command(flatten)]
        store: StoreArgs,
    },
}

/// `sikkermail smtp-user ...`.
pub fn smtp_user(cmd: SmtpUserCommand) -> Result<ExitCode, Fail> {
    match cmd {
        SmtpUserCommand::Add {
            store,
            name,
            password_env,
        } => {
            let pw = password(&Some(password_env.clone()))?
                .ok_or_else(|| usage(format!("environment variable {password_env} is not set")))?;
            let ctx = open(&store)?;
            let new = ctx.rt.block_on(ctx.svc.smtp_user_set(&name, &pw))?;
            outln!("{name}\t{}", if new { "added" } else { "password changed" });
        }
        SmtpUserCommand::Remove { store, name } => {
            let ctx = open(&store)?;
            ctx.rt.block_on(ctx.svc.smtp_user_remove(&name))?;
            outln!("{name}\tremoved");
        }
        SmtpUserCommand::List { store } => {
            let ctx = open(&store)?;
            for (name, at) in ctx.rt.block_on(ctx.svc.smtp_users())? {
                outln!("{name}\t{}", date(at));
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
