//! `sikkermail admin ...`: administrators of the admin API.

use std::process::ExitCode;

use clap::{Subcommand, ValueEnum};
use service::Role;

use super::context::{StoreArgs, date, open};
use super::io::{Fail, password, usage};

/// A role on the command line.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum RoleArg {
    /// Organisation administrator: settings, certificates, keys, administrators.
    OrgAdmin,
    /// User administrator: users, activation, brugercertifikater.
    UserAdmin,
    /// Reads only.
    Auditor,
}

impl From<RoleArg> for Role {
    fn from(r: RoleArg) -> Role {
        match r {
            RoleArg::OrgAdmin => Role::OrgAdmin,
            RoleArg::UserAdmin => Role::UserAdmin,
            RoleArg::Auditor => Role::Auditor,
        }
    }
}

#[derive(Debug, Subcommand)]
pub enum AdminCommand {
    /// Create an administrator (password of at least 12 characters).
    Create {
        #[command(flatten)]
        store: StoreArgs,
        /// Login name.
        name: String,
        /// Role.
        #[arg(long, value_enum)]
        role: RoleArg,
        /// Environment variable holding the password.
        #[arg(long = "password-env", value_name = "VAR")]
        password_env: String,
    },
    /// Every administrator: name, role, created, status.
    List {
        #[command(flatten)]
        store: StoreArgs,
    },
    /// A new one-time link (7 days) that creates the first organisation
    /// administrator in the browser; the link made before stops working.
    /// Printed here only: keep it secret.
    Bootstrap {
        #[command(flatten)]
        store: StoreArgs,
        /// Where users reach the pages (`[http] public_url`).
        #[arg(
            long = "public-url",
            value_name = "URL",
            default_value = "http://127.0.0.1:8080"
        )]
        public_url: String,
    },
}

/// `sikkermail admin ...`.
pub fn admin(cmd: AdminCommand) -> Result<ExitCode, Fail> {
    match cmd {
        AdminCommand::Create {
            store,
            name,
            role,
            password_env,
        } => {
            let pw = password(&Some(password_env.clone()))?
                .ok_or_else(|| usage(format!("environment variable {password_env} is not set")))?;
            let ctx = open(&store)?;
            let a = ctx
                .rt
                .block_on(ctx.svc.admin_create(&name, role.into(), &pw))?;
            outln!("{}\t{}\tcreated", a.name, a.role);
        }
        AdminCommand::Bootstrap { store, public_url } => {
            let ctx = open(&store)?;
            match ctx.rt.block_on(ctx.svc.bootstrap_token())? {
                Some(token) => {
                    let link = format!("{}/bootstrap/{token}", public_url.trim_end_matches('/'));
                    // Where `serve` looks for a live link, so that a restart
                    // keeps this one instead of making another.
                    outln!("{link}");
                    let file = ctx.svc.location().data_dir.join("bootstrap-link");
                    let written = super::io::create_private(&file).and_then(|mut f| {
                        std::io::Write::write_all(&mut f, format!("{link}\n").as_bytes())
                    });
                    if let Err(e) = written {
                        errln!(
                            "sikkermail: cannot write {} ({e}): a restarted serve makes another link",
                            file.display()
                        );
                    }
                }
                None => {
                    return Err(usage(
                        "an administrator exists already: log in, or use `sikkermail admin create`",
                    ));
                }
            }
        }
        AdminCommand::List { store } => {
            let ctx = open(&store)?;
            for a in ctx.rt.block_on(ctx.svc.admins())? {
                outln!(
                    "{}\t{}\t{}\t{}",
                    a.name,
                    a.role,
                    date(a.created_at),
                    if a.disabled { "disabled" } else { "active" }
                );
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
