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
        /// An address, or a whole domain as `@domain`, the account may send
        /// as (repeatable). Default for a new account: its own name when
        /// that is an address, else nothing; a password change keeps it.
        #[arg(long = "may-send-as", value_name = "ADDR|@DOMAIN")]
        may_send_as: Vec<String>,
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
            may_send_as,
        } => {
            let pw = password(&Some(password_env.clone()))?
                .ok_or_else(|| usage(format!("environment variable {password_env} is not set")))?;
            let send_as = if may_send_as.is_empty() {
                None
            } else {
                Some(service::smtp_users::SendAs::parse(&may_send_as)?)
            };
            let ctx = open(&store)?;
            let new = ctx
                .rt
                .block_on(ctx.svc.smtp_user_set(&name, &pw, send_as.as_ref()))?;
            outln!("{name}\t{}", if new { "added" } else { "password changed" });
        }
        SmtpUserCommand::Remove { store, name } => {
            let ctx = open(&store)?;
            ctx.rt.block_on(ctx.svc.smtp_user_remove(&name))?;
            outln!("{name}\tremoved");
        }
        SmtpUserCommand::List { store } => {
            let ctx = open(&store)?;
            for (name, at, send_as) in ctx.rt.block_on(ctx.svc.smtp_users())? {
                let may = match send_as.entries() {
                    [] => "may send as nobody (add --may-send-as)".to_string(),
                    e => format!("may send as {}", e.join(", ")),
                };
                outln!("{name}\t{}\t{may}", date(at));
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
