//! `sikkermail key ...` and `sikkermail recipient ...`.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Subcommand;
use service::Actor;
use service::keys::ImportRequest;

use service::certs::status_at;

use super::context::{StoreArgs, date, open, runtime};
use super::io::{Fail, password, read_file, usage};

#[derive(Debug, Subcommand)]
pub enum KeyCommand {
    /// Import a key and certificate from PKCS#12: an organisation certificate
    /// from MitID Erhverv, or (with --legacy) a retired OCES2 key.
    Import {
        #[command(flatten)]
        store: StoreArgs,
        /// The .p12/.pfx file.
        file: PathBuf,
        /// Environment variable holding the PKCS#12 password.
        #[arg(long = "password-env", value_name = "VAR")]
        password_env: Option<String>,
        /// A retired key: kept for decrypting old mail only, never used to
        /// sign or offered for encryption.
        #[arg(long)]
        legacy: bool,
        /// The shared mailbox the certificate serves (default: its e-mail).
        #[arg(long, value_name = "ADDR")]
        mailbox: Option<String>,
    },
    /// Every private key held, with its certificate: id, algorithm,
    /// legacy|current, master key, certificate (id, kind, status,
    /// generation and what it was decided from, subject, expiry).
    List {
        #[command(flatten)]
        store: StoreArgs,
    },
    /// Mark a key legacy (a retired OCES2 key: kept for decrypting old mail
    /// only, never signing), or with --not-legacy current again; its
    /// certificates' generation is decided again. Audited.
    SetLegacy {
        #[command(flatten)]
        store: StoreArgs,
        /// Key id (`key list`).
        id: i64,
        /// Undo: the key is not legacy.
        #[arg(long)]
        not_legacy: bool,
    },
    /// Delete a key (and the certificates imported with it). Refused while
    /// it is the only key that opens queued or archived mail, unless
    /// --force. Audited.
    Delete {
        #[command(flatten)]
        store: StoreArgs,
        /// Key id (`key list`).
        id: i64,
        /// Delete even the only key that opens some mail (that mail will
        /// never open again).
        #[arg(long)]
        force: bool,
    },
    /// Re-seal every private key under a new master key.
    RotateMaster {
        #[command(flatten)]
        store: StoreArgs,
    },
}

#[derive(Debug, Subcommand)]
pub enum RecipientCommand {
    /// Import outside parties' certificates (PEM with several, or DER).
    Import {
        #[command(flatten)]
        store: StoreArgs,
        /// Certificate file.
        file: PathBuf,
        /// Address to file them under (default: the e-mail addresses in each certificate).
        #[arg(long, value_name = "ADDR")]
        address: Option<String>,
    },
    /// Every outside certificate.
    List {
        #[command(flatten)]
        store: StoreArgs,
    },
    /// Remove an outside certificate (its id from `recipient list`). Audited.
    Remove {
        #[command(flatten)]
        store: StoreArgs,
        id: i64,
    },
    /// Pin an outside certificate: while any certificate of an address is
    /// pinned, only pinned ones are used to encrypt to it. Audited.
    Pin {
        #[command(flatten)]
        store: StoreArgs,
        id: i64,
    },
    /// Unpin an outside certificate. Audited.
    Unpin {
        #[command(flatten)]
        store: StoreArgs,
        id: i64,
    },
}

/// `sikkermail key ...`.
pub fn key(cmd: KeyCommand) -> Result<ExitCode, Fail> {
    match cmd {
        KeyCommand::Import {
            store,
            file,
            password_env,
            legacy,
            mailbox,
        } => {
            let der = read_file(&file)?;
            let pw = password(&password_env)?;
            // Open the file completely before anything is written. Without
            // --password-env only a file with an empty password opens.
            let imp = ca::pkcs12::import(&der, pw.as_deref().unwrap_or("")).map_err(|e| {
                if pw.is_none() && e.to_string().contains("wrong password") {
                    usage(format!(
                        "{}: the file needs a password and none was given: put it in an environment variable and name it with --password-env VAR",
                        file.display()
                    ))
                } else {
                    usage(format!("{}: {e}", file.display()))
                }
            })?;
            let mailbox = mailbox
                .as_deref()
                .map(ca::EmailAddress::parse)
                .transpose()?;
            let subject = smime::keyring::name_to_string(imp.cert.subject_name());
            let ctx = open(&store)?;
            let done = ctx.rt.block_on(ctx.svc.import_key(ImportRequest {
                p12: imp,
                legacy,
                mailbox,
            }))?;
            outln!(
                "{}\t{}\t{}\t{subject}\tgeneration from: {}{}",
                done.id,
                done.generation,
                done.source,
                done.generation_basis,
                if done.expired {
                    " (expired: kept for decryption)"
                } else {
                    ""
                }
            );
            Ok(ExitCode::SUCCESS)
        }
        KeyCommand::List { store } => {
            let ctx = open(&store)?;
            let org = ctx.org().id;
            let certs = ctx.rt.block_on(ctx.store().list_certificates(org))?;
            let kr = ctx.rt.block_on(ctx.svc.keyring())?;
            let now = store::now();
            for k in ctx.rt.block_on(ctx.store().list_keys(org))? {
                let state = if !k.kek_loaded {
                    format!("UNOPENABLE (master key {} not loaded)", k.kek_id)
                } else if kr.skipped.iter().any(|u| u.key_id == k.id) {
                    format!("UNOPENABLE (does not open with master {})", k.kek_id)
                } else {
                    format!("master {}", k.kek_id)
                };
                let mine: Vec<String> = certs
                    .iter()
                    .filter(|c| c.key_id == Some(k.id))
                    .map(|c| {
                        format!(
                            "cert {} {} {} {} ({}) {} until {}",
                            c.id,
                            c.kind,
                            status_at(c, now),
                            c.generation,
                            c.generation_basis,
                            c.subject,
                            date(c.not_after)
                        )
                    })
                    .collect();
                outln!(
                    "{}\t{}\t{}\t{state}\t{}",
                    k.id,
                    k.algorithm,
                    if k.legacy { "legacy" } else { "current" },
                    if mine.is_empty() {
                        "(no certificate)".to_string()
                    } else {
                        mine.join("; ")
                    }
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        KeyCommand::SetLegacy {
            store,
            id,
            not_legacy,
        } => {
            let ctx = open(&store)?;
            let legacy = !not_legacy;
            let done = ctx.rt.block_on(ctx.svc.set_key_legacy(id, legacy))?;
            let what = if legacy { "legacy" } else { "current" };
            if !done.changed {
                outln!("{id}\talready {what}: nothing was changed");
            }
            for (cid, generation, basis) in &done.certificates {
                outln!("{id}\t{what}\tcertificate {cid}\t{generation}\tgeneration from: {basis}");
            }
            if done.changed && done.certificates.is_empty() {
                outln!("{id}\t{what}");
            }
            Ok(ExitCode::SUCCESS)
        }
        KeyCommand::Delete { store, id, force } => {
            let ctx = open(&store)?;
            let done = ctx.rt.block_on(ctx.svc.delete_key(id, force))?;
            let ids = |v: &[i64]| v.iter().map(i64::to_string).collect::<Vec<_>>().join(", ");
            outln!("{id}\tdeleted");
            if !done.removed_certs.is_empty() {
                outln!(
                    "removed with it: certificate(s) {}",
                    ids(&done.removed_certs)
                );
            }
            if !done.kept_certs.is_empty() {
                outln!(
                    "kept without a key (issued here: the CRL names them): certificate(s) {}",
                    ids(&done.kept_certs)
                );
            }
            if !done.queued.is_empty() {
                errln!(
                    "warning: queued message(s) {} no longer open (--force)",
                    ids(&done.queued)
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        KeyCommand::RotateMaster { store } => rotate(&store),
    }
}

/// `key rotate-master`: see [`service::rotate_master`].
fn rotate(args: &StoreArgs) -> Result<ExitCode, Fail> {
    let loc = args.location()?;
    let rt = runtime()?;
    let dir = loc.data_dir.clone();
    let out = rt.block_on(service::rotate_master(&loc, Actor::from_process(), || {
        errln!(
            "waiting for other sikkermail commands on {} to finish ...",
            dir.display()
        )
    }))?;
    let r = &out.report;
    outln!(
        "re-sealed {} private keys under master key {}{}",
        r.resealed,
        out.new_id,
        if r.already > 0 {
            format!(" ({} already were)", r.already)
        } else {
            String::new()
        }
    );
    for u in &r.unopenable {
        errln!("warning: left as it was: {u}");
    }
    if !r.unopenable.is_empty() {
        errln!(
            "warning: {} key(s) stay unusable until their master key is given: set {} to it (base64) and run `sikkermail key rotate-master` again",
            r.unopenable.len(),
            store::seal::EXTRA_MASTER_KEYS_ENV
        );
    }
    if out.from_env {
        outln!(
            "now set SIKKERMAIL_MASTER_KEY to the value of SIKKERMAIL_NEW_MASTER_KEY everywhere it is used, and back it up"
        );
    }
    if let Some(f) = &out.key_file {
        outln!(
            "back up the new master key now: {} (the old one no longer opens anything; copy the new one to every node that uses this database)",
            f.display()
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// `sikkermail recipient ...`.
pub fn recipient(cmd: RecipientCommand) -> Result<ExitCode, Fail> {
    match cmd {
        RecipientCommand::Import {
            store,
            file,
            address,
        } => {
            let bytes = read_file(&file)?;
            let certs = smime::keyring::certs_from_bytes(&bytes, &file.display().to_string())
                .map_err(|e| usage(e.to_string()))?;
            if let Some(a) = &address {
                ca::EmailAddress::parse(a)?;
            }
            // Every certificate must have an address before any is stored.
            let mut plan = Vec::new();
            for c in &certs {
                let addrs = match &address {
                    Some(a) => vec![a.clone()],
                    None => smime::keyring::cert_emails(c),
                };
                if addrs.is_empty() {
                    return Err(usage(format!(
                        "certificate {} has no e-mail address: give --address",
                        smime::keyring::name_to_string(c.subject_name())
                    )));
                }
                plan.push((c, addrs));
            }
            let plan: Vec<(openssl::x509::X509, Vec<String>)> =
                plan.into_iter().map(|(c, a)| (c.clone(), a)).collect();
            let ctx = open(&store)?;
            for (id, a, subject) in ctx.rt.block_on(ctx.svc.import_recipients(&plan))? {
                outln!("{id}\t{a}\t{subject}");
            }
            Ok(ExitCode::SUCCESS)
        }
        RecipientCommand::List { store } => {
            let ctx = open(&store)?;
            for r in ctx.rt.block_on(ctx.store().list_recipients(ctx.org().id))? {
                let generation = service::certs::cert_of(&r.cert_pem)
                    .map(|c| service::certs::generation_of(&c))
                    .unwrap_or("unreadable");
                outln!(
                    "{}\t{}\t{}{}\tuntil {}\t{}\t{}\t{}\t{generation}",
                    r.id,
                    r.address,
                    r.source,
                    if r.pinned { " (pinned)" } else { "" },
                    date(r.not_after),
                    &r.fingerprint[..16.min(r.fingerprint.len())],
                    r.subject,
                    r.capabilities.as_deref().unwrap_or("")
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        RecipientCommand::Remove { store, id } => {
            let ctx = open(&store)?;
            ctx.rt.block_on(ctx.svc.delete_recipient(id))?;
            outln!("{id}\tremoved");
            Ok(ExitCode::SUCCESS)
        }
        RecipientCommand::Pin { store, id } => {
            let ctx = open(&store)?;
            ctx.rt.block_on(ctx.svc.pin_recipient(id, true))?;
            outln!("{id}\tpinned");
            Ok(ExitCode::SUCCESS)
        }
        RecipientCommand::Unpin { store, id } => {
            let ctx = open(&store)?;
            ctx.rt.block_on(ctx.svc.pin_recipient(id, false))?;
            outln!("{id}\tunpinned");
            Ok(ExitCode::SUCCESS)
        }
    }
}

#[derive(Debug, clap::Args)]
pub struct AuditArgs {
    #[command(flatten)]
    store: StoreArgs,
    /// How many events (0: none).
    #[arg(long, default_value_t = 50)]
    limit: u32,
    #[command(subcommand)]
    action: Option<AuditAction>,
}

#[derive(Debug, Subcommand)]
pub enum AuditAction {
    /// Check the audit trail's hash chain: exit 0 when intact (printing its
    /// head, to keep elsewhere), 1 naming the first changed, removed or
    /// reordered entry.
    Verify,
}

/// `sikkermail audit`: one event per line, newest first; `audit verify`.
pub fn audit(a: AuditArgs) -> Result<ExitCode, Fail> {
    let ctx = open(&a.store)?;
    if let Some(AuditAction::Verify) = a.action {
        let check = ctx.rt.block_on(ctx.svc.verify_audit())?;
        return match check.broken {
            None => {
                let head = check
                    .head
                    .map(|(seq, h)| format!("; head {seq} {h}"))
                    .unwrap_or_default();
                outln!("audit trail intact: {} entries{head}", check.entries);
                Ok(ExitCode::SUCCESS)
            }
            Some(why) => Err(Fail {
                code: 1,
                msg: format!("audit trail BROKEN: {why}"),
            }),
        };
    }
    for e in ctx.rt.block_on(ctx.svc.audit_events(a.limit))? {
        outln!(
            "{}\t{}\t{}\t{}\t{}",
            date(e.at),
            e.actor,
            e.action,
            e.subject,
            e.detail
        );
    }
    Ok(ExitCode::SUCCESS)
}
