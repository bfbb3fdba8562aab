//! Opening the data directory and the store for a command, and the CA
//! operations that several commands share (signing with the issuing CA,
//! regenerating the CRL).

use std::path::PathBuf;

use ca::{IssuancePolicy, RevocationReason, RevokedEntry, RsaPssSigner};
use clap::Args;
use openssl::x509::X509;
use store::{MasterKeys, Organisation, Store};

use super::io::{Fail, usage};

/// Where the data lives; every store-backed command takes these.
#[derive(Debug, Args, Clone)]
pub struct StoreArgs {
    /// Data directory: SQLite database, master key, spool.
    #[arg(long, value_name = "DIR", env = "SIKKERMAIL_DATA_DIR", global = true)]
    pub data_dir: Option<PathBuf>,
    /// PostgreSQL URL (postgres://...) instead of the SQLite file in the data
    /// directory. The master key still comes from the data directory or
    /// SIKKERMAIL_MASTER_KEY.
    #[arg(
        long,
        value_name = "URL",
        env = "SIKKERMAIL_DATABASE_URL",
        global = true
    )]
    pub database_url: Option<String>,
}

impl StoreArgs {
    /// The data directory (default `./sikkermail-data`).
    pub fn dir(&self) -> PathBuf {
        self.data_dir
            .clone()
            .unwrap_or_else(|| PathBuf::from("./sikkermail-data"))
    }

    /// True when the user named a data directory or database.
    pub fn given(&self) -> bool {
        self.data_dir.is_some() || self.database_url.is_some()
    }

    fn url(&self) -> String {
        self.database_url
            .clone()
            .unwrap_or_else(|| store::sqlite_url(&self.dir()))
    }
}

/// An open store, its organisation and a runtime to drive it.
pub struct Ctx {
    pub rt: tokio::runtime::Runtime,
    pub store: Store,
    pub org: Organisation,
    pub dir: PathBuf,
}

pub fn runtime() -> Result<tokio::runtime::Runtime, Fail> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| Fail {
            code: 1,
            msg: format!("cannot start the runtime: {e}"),
        })
}

/// Opens an initialised data directory (or database).
pub fn open(args: &StoreArgs) -> Result<Ctx, Fail> {
    let dir = args.dir();
    if args.database_url.is_none() && !dir.join("sikkermail.db").exists() {
        return Err(usage(format!(
            "no sikkermail data in {} (run `sikkermail init --data-dir {}` first)",
            dir.display(),
            dir.display()
        )));
    }
    let master = MasterKeys::load(&dir)?;
    let rt = runtime()?;
    let store = rt.block_on(Store::open(&args.url(), master))?;
    let org = rt
        .block_on(store.first_organisation())?
        .ok_or_else(|| usage("the database has no organisation: run `sikkermail init` first"))?;
    Ok(Ctx {
        rt,
        store,
        org,
        dir,
    })
}

/// Opens (creating) the store for `init`.
pub fn open_for_init(args: &StoreArgs) -> Result<(tokio::runtime::Runtime, Store, PathBuf), Fail> {
    let dir = args.dir();
    std::fs::create_dir_all(&dir)
        .map_err(|e| usage(format!("cannot create {}: {e}", dir.display())))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let _ = std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700));
    }
    let master = MasterKeys::create(&dir)?;
    let rt = runtime()?;
    let store = rt.block_on(Store::open(&args.url(), master))?;
    Ok((rt, store, dir))
}

/// Who does things from the command line, for the audit trail.
pub fn actor() -> String {
    format!(
        "cli:{}",
        std::env::var("USER").unwrap_or_else(|_| "unknown".into())
    )
}

/// Parses a certificate's PEM from the store.
pub fn cert_of(pem: &str) -> Result<X509, Fail> {
    X509::from_pem(pem.as_bytes()).map_err(|e| usage(format!("stored certificate unreadable: {e}")))
}

/// The organisation's CA: certificates and the issuing CA's signer.
pub struct Authority {
    pub root: X509,
    pub issuing: X509,
    pub signer: RsaPssSigner,
    pub policy: IssuancePolicy,
}

impl Ctx {
    /// Appends to the audit trail.
    pub fn audit(&self, action: &str, subject: &str, detail: &str) -> Result<(), Fail> {
        self.rt.block_on(
            self.store
                .audit(Some(self.org.id), &actor(), action, subject, detail),
        )?;
        Ok(())
    }

    /// Loads the CA (opens the issuing key).
    pub fn authority(&self) -> Result<Authority, Fail> {
        let st = self
            .rt
            .block_on(self.store.ca_state(self.org.id))?
            .ok_or_else(|| usage("this organisation has no CA"))?;
        let root = self
            .rt
            .block_on(self.store.certificate(self.org.id, st.root_cert_id))?;
        let issuing = self
            .rt
            .block_on(self.store.certificate(self.org.id, st.issuing_cert_id))?;
        let key_id = issuing
            .key_id
            .ok_or_else(|| usage("the issuing CA's key is missing"))?;
        let key = self
            .rt
            .block_on(self.store.private_key(self.org.id, key_id))?;
        Ok(Authority {
            root: cert_of(&root.pem)?,
            issuing: cert_of(&issuing.pem)?,
            signer: RsaPssSigner::new(key)?,
            policy: policy_of(&self.org),
        })
    }

    /// Makes a new CRL of the issuing CA (next number, valid 7 days), keeps it
    /// in the store and returns its DER.
    pub fn regenerate_crl(&self, ca: &Authority) -> Result<Vec<u8>, Fail> {
        let issuer = smime::keyring::name_to_string(ca.issuing.subject_name());
        let revoked = self
            .rt
            .block_on(self.store.revoked_by_issuer(self.org.id, &issuer))?;
        let entries: Vec<RevokedEntry> = revoked
            .iter()
            .map(|r| {
                Ok(RevokedEntry {
                    serial_hex: r.serial.clone(),
                    revoked_at: r.revoked_at.unwrap_or_else(store::now),
                    reason: RevocationReason::parse(
                        r.revocation_reason.as_deref().unwrap_or("unspecified"),
                    )?,
                })
            })
            .collect::<Result<_, ca::CaError>>()?;
        let number = self.rt.block_on(self.store.next_crl_number(self.org.id))?;
        let now = store::now();
        let der = ca::crl(
            &ca.issuing,
            &ca.signer,
            &entries,
            number as u64,
            now,
            now + 7 * 86_400,
        )?;
        self.rt
            .block_on(self.store.store_crl(self.org.id, &der, now))?;
        Ok(der)
    }
}

/// The issuance policy kept in the organisation's settings.
pub fn policy_of(org: &Organisation) -> IssuancePolicy {
    IssuancePolicy {
        policy_oids: org.setting("policy_oid"),
        crl_url: org.setting("crl_url").into_iter().next(),
        ca_issuers_url: org.setting("ca_issuers_url").into_iter().next(),
        ocsp_url: org.setting("ocsp_url").into_iter().next(),
    }
}

/// A certificate's validity as seconds since the epoch.
pub fn validity(cert: &X509) -> (i64, i64) {
    let epoch = openssl::asn1::Asn1Time::from_unix(0).ok();
    let secs = |t: &openssl::asn1::Asn1TimeRef| {
        epoch
            .as_ref()
            .and_then(|e| e.diff(t).ok())
            .map_or(0, |d| i64::from(d.days) * 86_400 + i64::from(d.secs))
    };
    (secs(cert.not_before()), secs(cert.not_after()))
}

/// `YYYY-MM-DD HH:MM:SSZ` for seconds since the epoch.
pub fn date(unix: i64) -> String {
    openssl::asn1::Asn1Time::from_unix(unix)
        .map(|t| t.to_string())
        .unwrap_or_else(|_| unix.to_string())
}

/// Upper-case hex serial of a certificate.
pub fn serial_hex(cert: &X509) -> String {
    cert.serial_number()
        .to_bn()
        .ok()
        .and_then(|b| b.to_hex_str().ok().map(|s| s.to_string()))
        .unwrap_or_default()
}

/// SHA-256 fingerprint, hex.
pub fn fingerprint(cert: &X509) -> String {
    cert.digest(openssl::hash::MessageDigest::sha256())
        .map(|d| d.iter().map(|b| format!("{b:02X}")).collect())
        .unwrap_or_default()
}
