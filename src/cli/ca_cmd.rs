//! `sikkermail init`, `sikkermail ca ...` and `sikkermail cert ...`.

use std::path::PathBuf;
use std::process::ExitCode;

use ca::pkcs12::Flavour;
use ca::{
    CaCertificate, Cvr, DisplayName, EmailAddress, EndEntity, IssuerRef, Kind, OcesUuid,
    OrganisationCertificate, ParsedEndEntity, Profile, RevocationReason, RsaPssSigner, Signer,
    UserCertificate,
};
use clap::{Args, Subcommand};
use openssl::x509::X509;
use store::{NewCert, NewKey};

use super::context::{
    Authority, Ctx, StoreArgs, cert_of, date, open, open_for_init, serial_hex, validity,
};
use super::io::{Fail, password, usage, write_output, write_via_temp};

#[derive(Debug, Args)]
pub struct InitArgs {
    #[command(flatten)]
    store: StoreArgs,
    /// The organisation's name (O in its certificates).
    #[arg(long, default_value = "Min organisation")]
    org_name: String,
    /// The organisation's CVR number (8 digits).
    #[arg(long, default_value = "00000000")]
    cvr: String,
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
    /// Make a fresh CRL and print it (PEM, or DER with --der).
    Crl {
        #[command(flatten)]
        store: StoreArgs,
        /// Output file (default: standard output).
        #[arg(long, value_name = "FILE")]
        out: Option<PathBuf>,
        /// DER instead of PEM.
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
    /// One certificate per line: ID, kind, status, generation, expiry, serial, subject.
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
    },
}

/// `sikkermail init`.
pub fn init(a: InitArgs) -> Result<ExitCode, Fail> {
    // Check every input before anything is written.
    let org_name = DisplayName::parse("organisation name", &a.org_name)?;
    let cvr = Cvr::parse(&a.cvr)?;
    let root_name = DisplayName::parse(
        "root CA name",
        a.root_name
            .as_deref()
            .unwrap_or(&format!("{org_name} rod-CA")),
    )?;
    let issuing_name = DisplayName::parse(
        "issuing CA name",
        a.issuing_name
            .as_deref()
            .unwrap_or(&format!("{org_name} udstedende-CA 1")),
    )?;
    ca::IssuancePolicy {
        policy_oids: a.policy_oids.clone(),
        crl_url: a.crl_url.clone(),
        ca_issuers_url: a.ca_issuers_url.clone(),
        ocsp_url: None,
    }
    .validate()?;
    let (rt, store, dir) = open_for_init(&a.store)?;
    if let Some(org) = rt.block_on(store.first_organisation())? {
        return Err(usage(format!(
            "{} is already initialised for {} (CVR {})",
            dir.display(),
            org.name,
            org.cvr
        )));
    }
    eprintln!("making the root CA (RSA 4096) and the issuing CA (RSA 3072) ...");
    let root_signer = RsaPssSigner::new(ca::generate_rsa(4096)?)?;
    let issuing_signer = RsaPssSigner::new(ca::generate_rsa(3072)?)?;
    let mut settings = String::new();
    for o in &a.policy_oids {
        settings.push_str(&format!("policy_oid={o}\n"));
    }
    if let Some(u) = &a.crl_url {
        settings.push_str(&format!("crl_url={u}\n"));
    }
    if let Some(u) = &a.ca_issuers_url {
        settings.push_str(&format!("ca_issuers_url={u}\n"));
    }
    let org_id = rt.block_on(store.create_organisation(org_name.as_str(), cvr.as_str()))?;
    rt.block_on(store.set_settings(org_id, &settings))?;
    let org = rt
        .block_on(store.first_organisation())?
        .ok_or_else(|| usage("organisation vanished"))?;
    let policy = super::context::policy_of(&org);
    let now = store::now() - 60;
    let root_profile = CaCertificate {
        common_name: root_name,
        organisation: org_name.clone(),
        path_len: None,
        validity_days: 20 * 365,
    };
    let root = ca::issue(
        &root_profile,
        &root_signer.public_key_info()?,
        &IssuerRef {
            cert: None,
            signer: &root_signer,
        },
        &policy,
        now,
    )?;
    let root_x = X509::from_der(&root.der).map_err(|e| usage(e.to_string()))?;
    let issuing_profile = CaCertificate {
        common_name: issuing_name,
        organisation: org_name,
        path_len: Some(0),
        validity_days: 10 * 365,
    };
    let issuing = ca::issue(
        &issuing_profile,
        &issuing_signer.public_key_info()?,
        &IssuerRef {
            cert: Some(&root_x),
            signer: &root_signer,
        },
        &policy,
        now,
    )?;
    let issuing_x = X509::from_der(&issuing.der).map_err(|e| usage(e.to_string()))?;
    let ctx = Ctx {
        rt,
        store,
        org,
        dir,
    };
    let root_id = record(
        &ctx,
        &root_x,
        "root-ca",
        "issued",
        Some(root_signer.key()),
        false,
        None,
    )?;
    let issuing_id = record(
        &ctx,
        &issuing_x,
        "issuing-ca",
        "issued",
        Some(issuing_signer.key()),
        false,
        None,
    )?;
    ctx.rt
        .block_on(ctx.store.set_ca_state(ctx.org.id, root_id, issuing_id))?;
    let authority = ctx.authority()?;
    ctx.regenerate_crl(&authority)?;
    ctx.audit(
        "init",
        &ctx.org.name,
        &format!("cvr={} root={root_id} issuing={issuing_id}", ctx.org.cvr),
    )?;
    println!(
        "initialised {} for {} (CVR {})",
        ctx.dir.display(),
        ctx.org.name,
        ctx.org.cvr
    );
    println!(
        "root CA    {root_id}: {}",
        smime::keyring::name_to_string(root_x.subject_name())
    );
    println!(
        "issuing CA {issuing_id}: {}",
        smime::keyring::name_to_string(issuing_x.subject_name())
    );
    if std::env::var(store::seal::MASTER_KEY_ENV).is_err() {
        println!(
            "master key: {} (keep it safe and backed up; without it no key opens)",
            ctx.dir.join("master.key").display()
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// Stores a certificate (and its key) and returns the certificate's id.
pub fn record(
    ctx: &Ctx,
    cert: &X509,
    kind: &str,
    source: &str,
    key: Option<&openssl::pkey::PKey<openssl::pkey::Private>>,
    legacy: bool,
    mailbox: Option<&str>,
) -> Result<i64, Fail> {
    let org = ctx.org.id;
    let generation = generation_of(cert);
    let parsed = ParsedEndEntity::from_x509(cert).ok();
    let email = smime::keyring::cert_emails(cert).into_iter().next();
    let mailbox_id = match mailbox.map(str::to_string).or_else(|| {
        if kind.ends_with("-ca") {
            None
        } else {
            email.clone()
        }
    }) {
        Some(m) => Some(ctx.rt.block_on(ctx.store.ensure_mailbox(org, &m))?),
        None => None,
    };
    let key_id = match key {
        Some(k) => Some(
            ctx.rt
                .block_on(ctx.store.insert_key(org, NewKey { key: k, legacy }))?,
        ),
        None => None,
    };
    let (not_before, not_after) = validity(cert);
    let pem = String::from_utf8(cert.to_pem().map_err(|e| usage(e.to_string()))?)
        .map_err(|e| usage(e.to_string()))?;
    let new = NewCert {
        kind: kind.to_string(),
        generation: generation.to_string(),
        source: source.to_string(),
        pem,
        subject: smime::keyring::name_to_string(cert.subject_name()),
        issuer: smime::keyring::name_to_string(cert.issuer_name()),
        serial: serial_hex(cert),
        uuid: parsed.map(|p| p.fields.uuid.to_string()),
        email,
        not_before,
        not_after,
        key_id,
        mailbox_id,
    };
    Ok(ctx.rt.block_on(ctx.store.insert_certificate(org, &new))?)
}

/// OCES2 subjects carry `serialNumber=CVR:<cvr>-RID|UID|FID:...`.
pub fn generation_of(cert: &X509) -> &'static str {
    let oces2 = cert
        .subject_name()
        .entries_by_nid(openssl::nid::Nid::SERIALNUMBER)
        .any(|e| e.data().to_string().is_ok_and(|s| s.starts_with("CVR:")));
    if oces2 { "OCES2" } else { "OCES3" }
}

/// `sikkermail ca ...`.
pub fn ca(cmd: CaCommand) -> Result<ExitCode, Fail> {
    match cmd {
        CaCommand::Show { store } => {
            let ctx = open(&store)?;
            let a = ctx.authority()?;
            let st = ctx
                .rt
                .block_on(ctx.store.ca_state(ctx.org.id))?
                .ok_or_else(|| usage("no CA"))?;
            println!("organisation: {} (CVR {})", ctx.org.name, ctx.org.cvr);
            for (what, c) in [("root CA", &a.root), ("issuing CA", &a.issuing)] {
                let (nb, na) = validity(c);
                println!(
                    "{what}: {}",
                    smime::keyring::name_to_string(c.subject_name())
                );
                println!(
                    "  serial {}  valid {} to {}",
                    serial_hex(c),
                    date(nb),
                    date(na)
                );
                println!(
                    "  key RSA-{}  signature {}",
                    c.public_key().map(|k| k.bits()).unwrap_or(0),
                    c.signature_algorithm().object()
                );
                println!("  SHA-256 {}", super::context::fingerprint(c));
            }
            println!(
                "CRL number {}{}",
                st.crl_number,
                st.crl_updated_at
                    .map(|t| format!(", made {}", date(t)))
                    .unwrap_or_default()
            );
            let p = &a.policy;
            println!(
                "policy OIDs: {}",
                if p.policy_oids.is_empty() {
                    "(none)".into()
                } else {
                    p.policy_oids.join(", ")
                }
            );
            println!("CRL URL: {}", p.crl_url.as_deref().unwrap_or("(none)"));
            Ok(ExitCode::SUCCESS)
        }
        CaCommand::Crl { store, out, der } => {
            let ctx = open(&store)?;
            let a = ctx.authority()?;
            let crl = ctx.regenerate_crl(&a)?;
            ctx.audit("ca.crl", "issuing-ca", "")?;
            let bytes = if der {
                crl
            } else {
                openssl::x509::X509Crl::from_der(&crl)
                    .and_then(|c| c.to_pem())
                    .map_err(|e| usage(e.to_string()))?
            };
            write_output(&out, &bytes)?;
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn issue_end_entity(
    a: &Authority,
    kind: Kind,
    ee: EndEntity,
) -> Result<(X509, openssl::pkey::PKey<openssl::pkey::Private>), Fail> {
    let key = ca::generate_rsa(3072)?;
    let spki = key.public_key_to_der().map_err(|e| usage(e.to_string()))?;
    let profile: Box<dyn Profile> = match kind {
        Kind::Organisation => Box::new(OrganisationCertificate(ee)),
        Kind::User => Box::new(UserCertificate(ee)),
    };
    let issued = ca::issue(
        profile.as_ref(),
        &spki,
        &IssuerRef {
            cert: Some(&a.issuing),
            signer: &a.signer,
        },
        &a.policy,
        store::now() - 60,
    )?;
    Ok((
        X509::from_der(&issued.der).map_err(|e| usage(e.to_string()))?,
        key,
    ))
}

fn p12_password(p: &P12Out) -> Result<Option<String>, Fail> {
    if p.out_p12.is_none() {
        return Ok(None);
    }
    let pw = password(&p.password_env)?
        .ok_or_else(|| usage("--out-p12 needs --password-env VAR with the PKCS#12 password"))?;
    if pw.is_empty() {
        return Err(usage("the PKCS#12 password must not be empty"));
    }
    Ok(Some(pw))
}

fn write_p12(
    ctx: &Ctx,
    a: &Authority,
    p: &P12Out,
    pw: &str,
    key: &openssl::pkey::PKey<openssl::pkey::Private>,
    cert: &X509,
    id: i64,
) -> Result<(), Fail> {
    let Some(path) = &p.out_p12 else {
        return Ok(());
    };
    let flavour = if p.compatible {
        Flavour::Compatible
    } else {
        Flavour::Modern
    };
    let name = ParsedEndEntity::from_x509(cert)
        .map(|e| e.fields.common_name.to_string())
        .unwrap_or_else(|_| format!("sikkermail {id}"));
    let der = ca::pkcs12::export(
        key,
        cert,
        &[a.issuing.clone(), a.root.clone()],
        &name,
        pw,
        flavour,
    )?;
    write_via_temp(path, &der, true)
        .map_err(|e| usage(format!("cannot write {}: {e}", path.display())))?;
    ctx.audit(
        "cert.export",
        &id.to_string(),
        &format!(
            "flavour={}",
            if p.compatible { "compatible" } else { "modern" }
        ),
    )?;
    eprintln!(
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
            let kind = Kind::parse(&kind)?;
            let name = DisplayName::parse("name", &name)?;
            let email = EmailAddress::parse(&email)?;
            let pw = p12_password(&p12)?;
            let ctx = open(&store)?;
            let a = ctx.authority()?;
            let ee = EndEntity {
                common_name: name,
                uuid: OcesUuid::new_random()?,
                organisation: DisplayName::parse("organisation", &ctx.org.name)?,
                cvr: Cvr::parse(&ctx.org.cvr)?,
                email: Some(email),
            };
            let (cert, key) = issue_end_entity(&a, kind, ee)?;
            let id = record(
                &ctx,
                &cert,
                kind.as_str(),
                "issued",
                Some(&key),
                false,
                None,
            )?;
            ctx.audit(
                "cert.issue",
                &id.to_string(),
                &format!("kind={} serial={}", kind.as_str(), serial_hex(&cert)),
            )?;
            if let Some(pw) = pw {
                write_p12(&ctx, &a, &p12, &pw, &key, &cert, id)?;
            }
            println!(
                "{id}\t{}\t{}",
                serial_hex(&cert),
                smime::keyring::name_to_string(cert.subject_name())
            );
            Ok(ExitCode::SUCCESS)
        }
        CertCommand::List { store } => {
            let ctx = open(&store)?;
            for c in ctx.rt.block_on(ctx.store.list_certificates(ctx.org.id))? {
                println!(
                    "{}\t{}\t{}\t{}\t{}\t{}\t{}",
                    c.id,
                    c.kind,
                    c.status,
                    c.generation,
                    date(c.not_after),
                    c.serial,
                    c.subject
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        CertCommand::Show { store, id } => {
            let ctx = open(&store)?;
            let c = ctx.rt.block_on(ctx.store.certificate(ctx.org.id, id))?;
            println!(
                "id: {}\nkind: {}\nstatus: {}\ngeneration: {}\nsource: {}",
                c.id, c.kind, c.status, c.generation, c.source
            );
            println!(
                "subject: {}\nissuer: {}\nserial: {}",
                c.subject, c.issuer, c.serial
            );
            if let Some(u) = &c.uuid {
                println!("uuid: {u}");
            }
            if let Some(e) = &c.email {
                println!("email: {e}");
            }
            println!("valid: {} to {}", date(c.not_before), date(c.not_after));
            println!(
                "private key: {}",
                c.key_id
                    .map_or("not held".to_string(), |k| format!("held (key {k})"))
            );
            if let (Some(at), Some(r)) = (c.revoked_at, &c.revocation_reason) {
                println!("revoked: {} ({r})", date(at));
            }
            if let Some(n) = c.replaced_by {
                println!("replaced by: {n}");
            }
            print!("{}", c.pem);
            Ok(ExitCode::SUCCESS)
        }
        CertCommand::Renew { store, id, p12 } => {
            let pw = p12_password(&p12)?;
            let ctx = open(&store)?;
            let old = ctx.rt.block_on(ctx.store.certificate(ctx.org.id, id))?;
            if old.source != "issued" || old.kind.ends_with("-ca") {
                return Err(usage(format!(
                    "certificate {id} was not issued by this CA as an end entity: it cannot be renewed here"
                )));
            }
            if old.status == "revoked" {
                return Err(usage(format!(
                    "certificate {id} is revoked: issue a new one instead"
                )));
            }
            let old_cert = cert_of(&old.pem)?;
            let parsed = ParsedEndEntity::from_x509(&old_cert)?;
            let a = ctx.authority()?;
            let (cert, key) = issue_end_entity(&a, parsed.kind, parsed.fields)?;
            let new_id = record(
                &ctx,
                &cert,
                parsed.kind.as_str(),
                "issued",
                Some(&key),
                false,
                None,
            )?;
            ctx.rt
                .block_on(ctx.store.supersede(ctx.org.id, id, new_id))?;
            ctx.audit(
                "cert.renew",
                &id.to_string(),
                &format!("new={new_id} serial={}", serial_hex(&cert)),
            )?;
            if let Some(pw) = pw {
                write_p12(&ctx, &a, &p12, &pw, &key, &cert, new_id)?;
            }
            println!(
                "{new_id}\t{}\t{}",
                serial_hex(&cert),
                smime::keyring::name_to_string(cert.subject_name())
            );
            Ok(ExitCode::SUCCESS)
        }
        CertCommand::Revoke { store, id, reason } => {
            let reason = RevocationReason::parse(&reason)?;
            let ctx = open(&store)?;
            let c = ctx.rt.block_on(ctx.store.certificate(ctx.org.id, id))?;
            if c.kind.ends_with("-ca") {
                return Err(usage("the CA's own certificates are not revoked this way"));
            }
            ctx.rt.block_on(ctx.store.revoke_certificate(
                ctx.org.id,
                id,
                reason.as_str(),
                store::now(),
            ))?;
            ctx.audit(
                "cert.revoke",
                &id.to_string(),
                &format!("reason={}", reason.as_str()),
            )?;
            let a = ctx.authority()?;
            ctx.regenerate_crl(&a)?;
            println!("revoked {id} ({}); CRL updated", reason.as_str());
            Ok(ExitCode::SUCCESS)
        }
        CertCommand::Export { store, id, p12 } => {
            if p12.out_p12.is_none() {
                return Err(usage("export needs --out-p12 FILE"));
            }
            let pw = p12_password(&p12)?.ok_or_else(|| usage("export needs --password-env VAR"))?;
            let ctx = open(&store)?;
            let c = ctx.rt.block_on(ctx.store.certificate(ctx.org.id, id))?;
            if c.kind.ends_with("-ca") {
                return Err(usage("CA keys are never exported"));
            }
            let key_id = c
                .key_id
                .ok_or_else(|| usage(format!("the private key of certificate {id} is not held")))?;
            let key = ctx.rt.block_on(ctx.store.private_key(ctx.org.id, key_id))?;
            let a = ctx.authority()?;
            write_p12(&ctx, &a, &p12, &pw, &key, &cert_of(&c.pem)?, id)?;
            Ok(ExitCode::SUCCESS)
        }
    }
}
