//! `sikkermail init`, `sikkermail ca ...` and `sikkermail cert ...`.

use std::path::PathBuf;
use std::process::ExitCode;

use ca::pkcs12::Flavour;
use ca::{Cvr, DisplayName, EmailAddress, Kind, RevocationReason};
use clap::{Args, Subcommand};
use service::certs::{IssueRequest, P12Request};
use service::{Actor, InitRequest};

use super::context::{StoreArgs, date, open, runtime, serial_hex, validity};
use super::io::{Fail, password, usage, write_output, write_via_temp};

#[derive(Debug, Args)]
pub struct InitArgs {
    #[command(flatten)]
    store: StoreArgs,
    /// The organisation's name (O in its certificates, forever). Default:
    /// `[organisation] name` in the configuration.
    #[arg(long)]
    org_name: Option<String>,
    /// The organisation's CVR number (8 digits). Default: `[organisation]
    /// cvr` in the configuration.
    #[arg(long)]
    cvr: Option<String>,
    /// A throw-away test installation: "Testorganisation", CVR 00000000,
    /// unless --org-name/--cvr say otherwise.
    #[arg(long)]
    test: bool,
    /// Root CA name (default "<org> rod-CA").
    #[arg(long)]
    root_name: Option<String>,
    /// Issuing CA name (default "<org> udstedende-CA 1").
    #[arg(long)]
    issuing_name: Option<String>,
    /// Certificate policy OID to put in issued certificates. Repeatable.
    #[arg(long = "policy-oid", value_name = "OID")]
    policy_oids: Vec<String>,
    /// CRL distribution point URL.
    #[arg(long)]
    crl_url: Option<String>,
    /// URL where the issuing CA certificate can be fetched (AIA caIssuers).
    #[arg(long)]
    ca_issuers_url: Option<String>,
}

#[derive(Debug, Subcommand)]
pub enum CaCommand {
    /// Show the root and issuing CA.
    Show {
        #[command(flatten)]
        store: StoreArgs,
    },
    /// Make both CRLs anew: the issuing CA's (end entities) and the root's
    /// ARL (the issuing CA). PEM: both in --out unless --root-out is given.
    Crl {
        #[command(flatten)]
        store: StoreArgs,
        /// Output file (default: standard output).
        #[arg(long, value_name = "FILE")]
        out: Option<PathBuf>,
        /// Where the root's ARL goes (default: after the issuing CA's CRL in
        /// --out; with --der, only written when this is given).
        #[arg(long, value_name = "FILE")]
        root_out: Option<PathBuf>,
        /// DER instead of PEM (one list per file).
        #[arg(long)]
        der: bool,
    },
}

#[derive(Debug, Args)]
pub struct P12Out {
    /// Write the key and certificate chain to this PKCS#12 file.
    #[arg(long = "out-p12", value_name = "FILE")]
    out_p12: Option<PathBuf>,
    /// Environment variable holding the PKCS#12 password.
    #[arg(long = "password-env", value_name = "VAR")]
    password_env: Option<String>,
    /// 3DES/SHA-1 protection for older Outlook, macOS and gpgsm (default:
    /// AES-256/PBKDF2/SHA-256).
    #[arg(long)]
    compatible: bool,
}

#[derive(Debug, Subcommand)]
pub enum CertCommand {
    /// Issue an organisationscertifikat or a brugercertifikat.
    Issue {
        #[command(flatten)]
        store: StoreArgs,
        /// organisation or user.
        #[arg(long)]
        kind: String,
        /// Certificate name (organisation) or the person's name (user).
        #[arg(long)]
        name: String,
        /// E-mail address (subjectAltName).
        #[arg(long)]
        email: String,
        #[command(flatten)]
        p12: P12Out,
    },
    /// One certificate per line: ID, kind, status (active, expired,
    /// revoked, superseded), generation (OCES3, OCES2, other), expiry,
    /// serial, subject, what the generation was decided from.
    List {
        #[command(flatten)]
        store: StoreArgs,
    },
    /// Details and PEM of one certificate.
    Show {
        #[command(flatten)]
        store: StoreArgs,
        id: i64,
    },
    /// New key and certificate, same UUID; the old one is marked superseded.
    Renew {
        #[command(flatten)]
        store: StoreArgs,
        id: i64,
        #[command(flatten)]
        p12: P12Out,
    },
    /// Revoke, with an RFC 5280 reason; the CRL is made anew.
    Revoke {
        #[command(flatten)]
        store: StoreArgs,
        id: i64,
        /// unspecified, keyCompromise, affiliationChanged, superseded or cessationOfOperation.
        #[arg(long)]
        reason: String,
    },
    /// Export key and chain as PKCS#12.
    Export {
        #[command(flatten)]
        store: StoreArgs,
        id: i64,
        #[command(flatten)]
        p12: P12Out,
        /// Export even a key whose certificate was revoked for keyCompromise.
        #[arg(long)]
        force: bool,
    },
}

/// `sikkermail init`.
pub fn init(a: InitArgs) -> Result<ExitCode, Fail> {
    // Check every input before anything is written. The organisation: the
    // flags, else the configuration's [organisation], else (--test only)
    // the test organisation.
    let res = a.store.resolve()?;
    let configured = |v: &str| res.cfg.org_named.then(|| v.to_string());
    let org_name = a.org_name.clone().or_else(|| configured(&res.cfg.org_name));
    let cvr = a.cvr.clone().or_else(|| configured(&res.cfg.org_cvr));
    let (org_name, cvr) = match (org_name, cvr) {
        (Some(n), Some(c)) if a.test || c != "00000000" => (n, c),
        (n, c) if a.test => (
            n.unwrap_or_else(|| "Testorganisation".into()),
            c.unwrap_or_else(|| "00000000".into()),
        ),
        _ => {
            return Err(usage(
                "init needs the organisation's name and CVR number: --org-name and --cvr, or \
                 [organisation] name and cvr in the configuration (--test makes a throw-away \
                 test installation)",
            ));
        }
    };
    let org_name = DisplayName::parse("organisation name", &org_name)?;
    let cvr = Cvr::parse(&cvr)?;
    let root_name = a
        .root_name
        .as_deref()
        .map(|n| DisplayName::parse("root CA name", n))
        .transpose()?;
    let issuing_name = a
        .issuing_name
        .as_deref()
        .map(|n| DisplayName::parse("issuing CA name", n))
        .transpose()?;
    let policy = ca::IssuancePolicy {
        policy_oids: a.policy_oids.clone(),
        crl_url: a.crl_url.clone(),
        ca_issuers_url: a.ca_issuers_url.clone(),
        ocsp_url: None,
    };
    policy.validate()?;
    let loc = res.location();
    let rt = runtime()?;
    let dir = loc.data_dir.clone();
    let out = rt.block_on(service::init(
        &loc,
        InitRequest {
            org_name: org_name.clone(),
            cvr: cvr.clone(),
            root_name,
            issuing_name,
            policy,
        },
        Actor::from_process(),
        || {
            errln!(
                "waiting for another sikkermail command on {} ...",
                dir.display()
            )
        },
    ))?;
    outln!(
        "initialised {} for {} (CVR {})",
        dir.display(),
        org_name,
        cvr.as_str()
    );
    outln!(
        "root CA    {}: {}",
        out.root.0,
        smime::keyring::name_to_string(out.root.1.subject_name())
    );
    outln!(
        "issuing CA {}: {}",
        out.issuing.0,
        smime::keyring::name_to_string(out.issuing.1.subject_name())
    );
    if let Some(f) = &out.master_key_file {
        outln!(
            "master key: {} (keep it safe and backed up; without it no key opens)",
            f.display()
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// `sikkermail ca ...`.
pub fn ca(cmd: CaCommand) -> Result<ExitCode, Fail> {
    match cmd {
        CaCommand::Show { store } => {
            let ctx = open(&store)?;
            let a = ctx.rt.block_on(ctx.svc.authority())?;
            let st = ctx
                .rt
                .block_on(ctx.store().ca_state(ctx.org().id))?
                .ok_or_else(|| usage("no CA"))?;
            outln!("organisation: {} (CVR {})", ctx.org().name, ctx.org().cvr);
            for (what, c) in [("root CA", &a.root), ("issuing CA", &a.issuing)] {
                let (nb, na) = validity(c);
                outln!(
                    "{what}: {}",
                    smime::keyring::name_to_string(c.subject_name())
                );
                outln!(
                    "  serial {}  valid {} to {}",
                    serial_hex(c),
                    date(nb),
                    date(na)
                );
                outln!(
                    "  key RSA-{}  signature {}",
                    c.public_key().map(|k| k.bits()).unwrap_or(0),
                    c.signature_algorithm().object()
                );
                outln!("  SHA-256 {}", super::context::fingerprint(c));
            }
            outln!(
                "CRL number {}{}",
                st.crl_number,
                st.crl_updated_at
                    .map(|t| format!(", made {}", date(t)))
                    .unwrap_or_default()
            );
            let p = &a.policy;
            outln!(
                "policy OIDs: {}",
                if p.policy_oids.is_empty() {
                    "(none)".into()
                } else {
                    p.policy_oids.join(", ")
                }
            );
            outln!("CRL URL: {}", p.crl_url.as_deref().unwrap_or("(none)"));
            Ok(ExitCode::SUCCESS)
        }
        CaCommand::Crl {
            store,
            out,
            root_out,
            der,
        } => {
            for p in out.iter().chain(&root_out) {
                check_output_dir(p)?;
            }
            let ctx = open(&store)?;
            let crls = ctx.rt.block_on(ctx.svc.make_crls())?;
            let pem = |d: &[u8]| {
                openssl::x509::X509Crl::from_der(d)
                    .and_then(|c| c.to_pem())
                    .map_err(|e| usage(e.to_string()))
            };
            if der {
                write_output(&out, &crls.issuing)?;
                if root_out.is_some() {
                    write_output(&root_out, &crls.root)?;
                } else {
                    errln!(
                        "note: the root's ARL was not written (DER holds one list: give --root-out FILE)"
                    );
                }
            } else if root_out.is_some() {
                write_output(&out, &pem(&crls.issuing)?)?;
                write_output(&root_out, &pem(&crls.root)?)?;
            } else {
                let mut both = pem(&crls.issuing)?;
                both.extend(pem(&crls.root)?);
                write_output(&out, &both)?;
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// Fails at once when `path` cannot be created because its directory is
/// missing (before any key is made or anything is stored).
fn check_output_dir(path: &std::path::Path) -> Result<(), Fail> {
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(std::path::Path::new("."));
    if !dir.is_dir() {
        return Err(usage(format!(
            "cannot write {}: directory {} does not exist (nothing was changed)",
            path.display(),
            dir.display()
        )));
    }
    Ok(())
}

fn p12_request(p: &P12Out) -> Result<Option<P12Request>, Fail> {
    let Some(path) = &p.out_p12 else {
        return Ok(None);
    };
    check_output_dir(path)?;
    let pw = password(&p.password_env)?
        .ok_or_else(|| usage("--out-p12 needs --password-env VAR with the PKCS#12 password"))?;
    if pw.is_empty() {
        return Err(usage("the PKCS#12 password must not be empty"));
    }
    Ok(Some(P12Request {
        password: pw,
        flavour: if p.compatible {
            Flavour::Compatible
        } else {
            Flavour::Modern
        },
    }))
}

/// Writes the PKCS#12 file; called by the service before it commits, so a
/// failure here leaves nothing issued.
fn deliver(p: &P12Out) -> impl FnOnce(&[u8]) -> Result<(), String> + '_ {
    move |der: &[u8]| {
        let Some(path) = &p.out_p12 else {
            return Ok(());
        };
        write_via_temp(path, der, true)
            .map_err(|e| format!("cannot write {}: {e} (nothing was changed)", path.display()))?;
        errln!(
            "wrote {} ({})",
            path.display(),
            if p.compatible {
                "compatible: 3DES/SHA-1"
            } else {
                "modern: AES-256/PBKDF2/SHA-256"
            }
        );
        Ok(())
    }
}

/// `sikkermail cert ...`.
pub fn cert(cmd: CertCommand) -> Result<ExitCode, Fail> {
    match cmd {
        CertCommand::Issue {
            store,
            kind,
            name,
            email,
            p12,
        } => {
            let req = IssueRequest {
                kind: Kind::parse(&kind)?,
                name: DisplayName::parse("name", &name)?,
                email: EmailAddress::parse(&email)?,
                p12: p12_request(&p12)?,
            };
            let ctx = open(&store)?;
            let issued = ctx.rt.block_on(ctx.svc.issue(req, deliver(&p12)))?;
            outln!(
                "{}\t{}\t{}",
                issued.id,
                serial_hex(&issued.cert),
                smime::keyring::name_to_string(issued.cert.subject_name())
            );
            Ok(ExitCode::SUCCESS)
        }
        CertCommand::List { store } => {
            let ctx = open(&store)?;
            let now = store::now();
            for c in ctx
                .rt
                .block_on(ctx.store().list_certificates(ctx.org().id))?
            {
                outln!(
                    "{}\t{}\t{}\t{}\t{}\t{}\t{}\tgeneration from: {}",
                    c.id,
                    c.kind,
                    service::certs::status_at(&c, now),
                    c.generation,
                    date(c.not_after),
                    c.serial,
                    c.subject,
                    c.generation_basis
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        CertCommand::Show { store, id } => {
            let ctx = open(&store)?;
            let c = ctx.rt.block_on(ctx.store().certificate(ctx.org().id, id))?;
            outln!(
                "id: {}\nkind: {}\nstatus: {}\ngeneration: {} ({})\nsource: {}",
                c.id,
                c.kind,
                service::certs::status_at(&c, store::now()),
                c.generation,
                c.generation_basis,
                c.source
            );
            outln!(
                "subject: {}\nissuer: {}\nserial: {}",
                c.subject,
                c.issuer,
                c.serial
            );
            if let Some(u) = &c.uuid {
                outln!("uuid: {u}");
            }
            if let Some(e) = &c.email {
                outln!("email: {e}");
            }
            outln!("valid: {} to {}", date(c.not_before), date(c.not_after));
            outln!(
                "private key: {}",
                c.key_id
                    .map_or("not held".to_string(), |k| format!("held (key {k})"))
            );
            if let (Some(at), Some(r)) = (c.revoked_at, &c.revocation_reason) {
                outln!("revoked: {} ({r})", date(at));
            }
            if let Some(n) = c.replaced_by {
                outln!("replaced by: {n}");
            }
            out!("{}", c.pem);
            Ok(ExitCode::SUCCESS)
        }
        CertCommand::Renew { store, id, p12 } => {
            let req = p12_request(&p12)?;
            let ctx = open(&store)?;
            let issued = ctx.rt.block_on(ctx.svc.renew(id, req, deliver(&p12)))?;
            outln!(
                "{}\t{}\t{}",
                issued.id,
                serial_hex(&issued.cert),
                smime::keyring::name_to_string(issued.cert.subject_name())
            );
            Ok(ExitCode::SUCCESS)
        }
        CertCommand::Revoke { store, id, reason } => {
            let reason = RevocationReason::parse(&reason)?;
            let ctx = open(&store)?;
            ctx.rt.block_on(ctx.svc.revoke(id, reason))?;
            outln!("revoked {id} ({}); CRL updated", reason.as_str());
            Ok(ExitCode::SUCCESS)
        }
        CertCommand::Export {
            store,
            id,
            p12,
            force,
        } => {
            if p12.out_p12.is_none() {
                return Err(usage("export needs --out-p12 FILE"));
            }
            let req = p12_request(&p12)?.ok_or_else(|| usage("export needs --password-env VAR"))?;
            let ctx = open(&store)?;
            ctx.rt
                .block_on(ctx.svc.export(id, req, force, deliver(&p12)))?;
            Ok(ExitCode::SUCCESS)
        }
    }
}
