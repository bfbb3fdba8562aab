//! The `sikkermail` command: wiring only. Each subcommand lives in `cli/`.

mod cli;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// S/MIME gateway and certificate manager for MitID Erhverv (OCES3) organisations.
#[derive(Debug, Parser)]
#[command(name = "sikkermail", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Decrypt, verify, encrypt, sign and inspect S/MIME messages.
    #[command(subcommand)]
    Smime(cli::smime::SmimeCommand),
}

fn main() -> ExitCode {
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
    match cli.command {
        Command::Smime(cmd) => cli::smime::run(cmd),
    }
}
