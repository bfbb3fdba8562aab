//! `sikkermail key ...` and `sikkermail recipient ...`.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Subcommand;
use store::{Kek, Store};

use super::ca_cmd::{generation_of, record};
use super::context::{Ctx, StoreArgs, date, fingerprint, open, serial_hex, validity};
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
    /// Every private key held, with its certificate.
    List {
        #[command(flatten)]
        store: StoreArgs,
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
            let pw = password(&password_env)?.unwrap_or_default();
            // Open the file completely before anything is written.
            let imp = ca::pkcs12::import(&der, &pw)
                .map_err(|e| usage(format!("{}: {e}", file.display())))?;
            if let Some(m) = &mailbox {
                ca::EmailAddress::parse(m)?;
            }
            let ctx = open(&store)?;
            let generation = generation_of(&imp.cert);
            let parsed = ca::ParsedEndEntity::from_x509(&imp.cert).ok();
            let kind = match (&parsed, generation) {
                (Some(p), _) => p.kind.as_str(),
                (None, _) if is_oces2_person(&imp.cert) => "user",
                _ => "organisation",
            };
            let source = if legacy { "legacy" } else { "imported" };
            let id = record(
                &ctx,
                &imp.cert,
                kind,
                source,
                Some(&imp.key),
                legacy,
                mailbox.as_deref(),
            )?;
            ctx.audit(
                "key.import",
                &id.to_string(),
                &format!(
                    "generation={generation} legacy={legacy} serial={}",
                    serial_hex(&imp.cert)
                ),
            )?;
            let (_, not_after) = validity(&imp.cert);
            let expired = if not_after < store::now() {
                " (expired: kept for decryption)"
            } else {
                ""
            };
            println!(
                "{id}\t{generation}\t{source}\t{}{expired}",
                smime::keyring::name_to_string(imp.cert.subject_name())
            );
            Ok(ExitCode::SUCCESS)
        }
        KeyCommand::List { store } => {
            let ctx = open(&store)?;
            let certs = ctx.rt.block_on(ctx.store.list_certificates(ctx.org.id))?;
            for k in ctx.rt.block_on(ctx.store.list_keys(ctx.org.id))? {
                let c = certs.iter().find(|c| c.key_id == Some(k.id));
                println!(
                    "{}\t{}\t{}\tmaster {}\t{}",
                    k.id,
                    k.algorithm,
                    if k.legacy { "legacy" } else { "current" },
                    k.kek_id,
                    c.map_or("(no certificate)".to_string(), |c| format!(
                        "cert {} {} {} until {}",
                        c.id,
                        c.kind,
                        c.subject,
                        date(c.not_after)
                    ))
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        KeyCommand::RotateMaster { store } => rotate(&store),
    }
}

fn is_oces2_person(cert: &openssl::x509::X509) -> bool {
    cert.subject_name()
        .entries_by_nid(openssl::nid::Nid::SERIALNUMBER)
        .any(|e| e.data().to_string().is_ok_and(|s| s.contains("-RID:")))
}

/// Master-key rotation that survives a crash at any point: the new key is
/// written to `master.key.new` first, rows are re-sealed in one
/// transaction (each row records which key sealed it), and only then does
/// `master.key.new` replace `master.key`. Loading reads both while the new
/// file exists.
fn rotate(args: &StoreArgs) -> Result<ExitCode, Fail> {
    let ctx: Ctx = open(args)?;
    let from_env = std::env::var(store::seal::MASTER_KEY_ENV).is_ok();
    let new = if from_env {
        let v = std::env::var(store::seal::NEW_MASTER_KEY_ENV).map_err(|_| {
            usage("the master key comes from SIKKERMAIL_MASTER_KEY: put the new one (base64 of 32 random bytes) in SIKKERMAIL_NEW_MASTER_KEY")
        })?;
        Kek::from_base64(&v)?
    } else {
        match &ctx.store.master_keys().next {
            Some(n) => n.clone(), // finish an interrupted rotation
            None => {
                let k = Kek::generate()?;
                store::seal::write_secret(&ctx.dir.join("master.key.new"), &k.to_base64())?;
                k
            }
        }
    };
    let mut master = ctx.store.master_keys().clone();
    master.next = Some(new.clone());
    let url = args
        .database_url
        .clone()
        .unwrap_or_else(|| store::sqlite_url(&ctx.dir));
    ctx.rt.block_on(ctx.store.close());
    let st = ctx.rt.block_on(Store::open(&url, master))?;
    let n = ctx.rt.block_on(st.reseal_all(&new))?;
    if !from_env {
        std::fs::rename(ctx.dir.join("master.key.new"), ctx.dir.join("master.key"))
            .map_err(|e| usage(format!("re-sealed {n} keys, but could not replace master.key: {e}; master.key.new holds the new key")))?;
        store::seal::sync_dir(&ctx.dir.join("master.key"))?;
    }
    ctx.rt.block_on(st.audit(
        Some(ctx.org.id),
        &super::context::actor(),
        "key.rotate-master",
        &new.id(),
        &format!("resealed={n}"),
    ))?;
    println!("re-sealed {n} private keys under master key {}", new.id());
    if from_env {
        println!(
            "now set SIKKERMAIL_MASTER_KEY to the value of SIKKERMAIL_NEW_MASTER_KEY everywhere it is used"
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
            let ctx = open(&store)?;
            for (c, addrs) in plan {
                let pem = String::from_utf8(c.to_pem().map_err(|e| usage(e.to_string()))?)
                    .map_err(|e| usage(e.to_string()))?;
                let subject = smime::keyring::name_to_string(c.subject_name());
                let (_, not_after) = validity(c);
                for a in addrs {
                    let id = ctx.rt.block_on(ctx.store.upsert_recipient(
                        ctx.org.id,
                        &a,
                        &pem,
                        &fingerprint(c),
                        &subject,
                        not_after,
                        "imported",
                    ))?;
                    ctx.audit(
                        "recipient.import",
                        &a,
                        &format!("id={id} fingerprint={}", fingerprint(c)),
                    )?;
                    println!("{id}\t{a}\t{subject}");
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        RecipientCommand::List { store } => {
            let ctx = open(&store)?;
            for r in ctx.rt.block_on(ctx.store.list_recipients(ctx.org.id))? {
                println!(
                    "{}\t{}\t{}\tuntil {}\t{}\t{}",
                    r.id,
                    r.address,
                    r.source,
                    date(r.not_after),
                    &r.fingerprint[..16.min(r.fingerprint.len())],
                    r.subject
                );
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

#[derive(Debug, clap::Args)]
pub struct AuditArgs {
    #[command(flatten)]
    store: StoreArgs,
    /// How many events.
    #[arg(long, default_value_t = 50)]
    limit: i64,
}

/// `sikkermail audit`: one event per line, newest first.
pub fn audit(a: AuditArgs) -> Result<ExitCode, Fail> {
    let ctx = open(&a.store)?;
    for e in ctx
        .rt
        .block_on(ctx.store.audit_events(ctx.org.id, a.limit.max(1)))?
    {
        println!(
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
