//! `sikkermail org ...`: applications for new organisations (`/apply`,
//! when `[admin] applications` is on) wait here for the installation's
//! operator. Nothing is sent to anyone before `org accept`; then the
//! ledelsesrepræsentant's approval e-mail is queued and `serve` delivers
//! it (signed as the policy says). Each decision is audited.

use std::process::ExitCode;

use clap::Subcommand;
use service::OrgId;

use super::context::{StoreArgs, open};
use super::io::{Fail, usage};

#[derive(Debug, Subcommand)]
pub enum OrgCommand {
    /// The applications waiting: id, CVR, name, representative's address.
    Pending {
        #[command(flatten)]
        store: StoreArgs,
    },
    /// Accept an application: its ledelsesrepræsentant gets the approval
    /// e-mail (queued now, delivered by `serve`).
    Accept {
        #[command(flatten)]
        store: StoreArgs,
        /// The application's id (from `org pending`).
        id: i64,
        /// The address users reach the pages at, for the link (overrides
        /// `[http] public_url`).
        #[arg(long, value_name = "URL")]
        public_url: Option<String>,
    },
    /// Reject an application: nothing is sent.
    Reject {
        #[command(flatten)]
        store: StoreArgs,
        /// The application's id (from `org pending`).
        id: i64,
    },
}

/// `sikkermail org ...`.
pub fn org(cmd: OrgCommand) -> Result<ExitCode, Fail> {
    match cmd {
        OrgCommand::Pending { store } => {
            let ctx = open(&store)?;
            for o in ctx.rt.block_on(ctx.svc.pending_applications())? {
                outln!(
                    "{}\t{}\t{}\t{}",
                    o.id.0,
                    o.cvr,
                    o.name,
                    o.representative_email.unwrap_or_default()
                );
            }
        }
        OrgCommand::Accept {
            store,
            id,
            public_url,
        } => {
            // `[admin] mail_from` and `[http] public_url` of the
            // configuration `serve` reads (`--config`).
            let cfg = store.resolve()?.cfg;
            let public_url = public_url
                .or(cfg.public_url.clone())
                .unwrap_or_else(|| format!("http://{}", cfg.http_listen));
            let public_url = public_url.trim_end_matches('/').to_string();
            if !public_url.starts_with("http://") && !public_url.starts_with("https://") {
                return Err(usage("--public-url must start with http:// or https://"));
            }
            let from = cfg.admin_mail_from.clone();
            let ctx = open(&store)?;
            let applied =
                ctx.rt
                    .block_on(ctx.svc.accept_application(OrgId(id), &from, |org, token| {
                        let (mail, _) = admin_api::api::approval_mail(&public_url, org, token);
                        Ok(mail.build(&from)?.formatted())
                    }))?;
            outln!(
                "{}\taccepted: the approval e-mail to {} is queued",
                applied.org.id.0,
                applied.org.representative_email.unwrap_or_default()
            );
        }
        OrgCommand::Reject { store, id } => {
            let ctx = open(&store)?;
            let o = ctx.rt.block_on(ctx.svc.reject_application(OrgId(id)))?;
            outln!("{}\trejected", o.id.0);
        }
    }
    Ok(ExitCode::SUCCESS)
}
