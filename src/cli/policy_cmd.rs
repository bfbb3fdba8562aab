//! `sikkermail policy check|explain`: the outbound policy file.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::Subcommand;

use super::context::StoreArgs;
use super::io::{Fail, read_file, usage};

#[derive(Debug, Subcommand)]
pub enum PolicyCommand {
    /// Validate a policy file; report every error at once (exit 2 if any).
    Check {
        /// The policy file (TOML).
        file: PathBuf,
    },
    /// The decision for a message, per recipient, and the rules that made it.
    Explain {
        /// The policy file (default: the one `serve` uses: the
        /// configuration's `policy`, else <data_dir>/policy.toml when it
        /// exists, else the built-in defaults).
        #[arg(long, value_name = "FILE")]
        policy: Option<PathBuf>,
        #[command(flatten)]
        store: StoreArgs,
        /// The sender.
        #[arg(long, value_name = "ADDR")]
        from: String,
        /// A recipient. Repeatable.
        #[arg(long, value_name = "ADDR", required = true)]
        to: Vec<String>,
        /// The subject (the trigger, e.g. "[sikker]", is looked for here).
        #[arg(long, default_value = "")]
        subject: String,
    },
}

fn read_text(p: &Path) -> Result<String, Fail> {
    String::from_utf8(read_file(p)?).map_err(|_| usage(format!("{}: not UTF-8 text", p.display())))
}

pub(crate) fn load(p: &Path) -> Result<policies::Policy, Fail> {
    policies::Policy::parse(&read_text(p)?).map_err(|errors| {
        usage(format!(
            "{}: {} error(s): {}",
            p.display(),
            errors.len(),
            errors
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join("; ")
        ))
    })
}

/// `sikkermail policy ...`.
pub fn policy(cmd: PolicyCommand) -> Result<ExitCode, Fail> {
    match cmd {
        PolicyCommand::Check { file } => {
            let errors = policies::check(&read_text(&file)?);
            if errors.is_empty() {
                outln!("{}: valid", file.display());
                return Ok(ExitCode::SUCCESS);
            }
            for e in &errors {
                errln!("{}: {e}", file.display());
            }
            Err(usage(format!(
                "{}: {} error(s)",
                file.display(),
                errors.len()
            )))
        }
        PolicyCommand::Explain {
            policy,
            store,
            from,
            to,
            subject,
        } => {
            // The file `serve` would use, from the same configuration.
            let file = match policy {
                Some(f) => Some(f),
                None => store.resolve()?.cfg.policy_file(),
            };
            let p = match &file {
                Some(f) => {
                    outln!("policy: {}", f.display());
                    load(f)?
                }
                None => {
                    outln!("policy: built-in defaults (no policy file configured)");
                    policies::Policy::default()
                }
            };
            let facts = policies::MessageFacts { from, to, subject };
            out!("{}", p.explain(&facts));
            Ok(ExitCode::SUCCESS)
        }
    }
}
