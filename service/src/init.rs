//! `init`: the data directory, the master key, the database, the
//! organisation and its internal CA, all or nothing.

use ca::{CaCertificate, Cvr, DisplayName, IssuancePolicy, IssuerRef, RsaPssSigner, Signer};
use openssl::x509::X509;
use store::{LockMode, MasterKeys, Store};

use crate::certs::{Authority, crls_in, record};
use crate::{Actor, Error, Location, Result};

/// What `init` needs (already parsed).
#[derive(Debug, Clone)]
pub struct InitRequest {
    /// The organisation's name.
    pub org_name: DisplayName,
    /// Its CVR number.
    pub cvr: Cvr,
    /// Root CA name (default "<org> rod-CA").
    pub root_name: Option<DisplayName>,
    /// Issuing CA name (default "<org> udstedende-CA 1").
    pub issuing_name: Option<DisplayName>,
    /// Policy OIDs, CRL and AIA URLs for issued certificates.
    pub policy: IssuancePolicy,
}

/// What `init` made.
#[derive(Debug)]
pub struct InitOutcome {
    /// Root CA certificate id and certificate.
    pub root: (i64, X509),
    /// Issuing CA certificate id and certificate.
    pub issuing: (i64, X509),
    /// Whether the master key file was created (not from the environment).
    pub master_key_file: Option<std::path::PathBuf>,
}

/// Creates the organisation and its CA. Two `init`s on one directory (or
/// two nodes on one database): exactly one succeeds, the other fails and
/// leaves nothing behind. `on_wait` is called if another process holds the
/// directory.
pub async fn init(
    loc: &Location,
    req: InitRequest,
    actor: Actor,
    on_wait: impl FnOnce(),
) -> Result<InitOutcome> {
    req.policy.validate()?;
    let dir = &loc.data_dir;
    let existed = dir.exists();
    if !existed {
        std::fs::create_dir_all(dir)
            .map_err(|e| Error::Invalid(format!("cannot create {}: {e}", dir.display())))?;
        use std::os::unix::fs::PermissionsExt;
        // Only a directory we made ourselves is narrowed.
        let _ = std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700));
    } else if !dir.is_dir() {
        return Err(Error::Invalid(format!(
            "{} is not a directory",
            dir.display()
        )));
    } else {
        store::seal::check_private_dir(dir).map_err(|e| Error::Invalid(e.to_string()))?;
    }
    let lock = store::DirLock::acquire(dir, LockMode::Exclusive, on_wait)?;
    let result = init_locked(loc, req, actor).await;
    if let Err(e) = &result {
        // Leave nothing behind: what this run created goes again.
        if let Some(created) = &e.1 {
            let _ = std::fs::remove_file(created);
            if loc.database_url.is_none() {
                for f in [
                    "sikkermail.db",
                    "sikkermail.db-wal",
                    "sikkermail.db-shm",
                    "sikkermail.db-journal",
                    "sikkermail.db.migrate-lock",
                ] {
                    let _ = std::fs::remove_file(dir.join(f));
                }
            }
            if !existed {
                drop(lock);
                let _ = std::fs::remove_file(dir.join(store::lock::LOCK_FILE));
                let _ = std::fs::remove_dir(dir);
            }
        }
    }
    result.map_err(|e| e.0)
}

type Cleanup = Option<std::path::PathBuf>;

async fn init_locked(
    loc: &Location,
    req: InitRequest,
    actor: Actor,
) -> std::result::Result<InitOutcome, (Error, Cleanup)> {
    let dir = &loc.data_dir;
    // The master key: created only if there is none (exclusively), read
    // only now that the lock is held.
    let (master, created) = MasterKeys::create(dir).map_err(|e| (e.into(), None))?;
    let created_file = if created { master.file.clone() } else { None };
    let fail = |e: Error| (e, created_file.clone());
    let store = Store::open(&loc.url(), master.clone())
        .await
        .map_err(|e| fail(e.into()))?;
    let already = |org: store::Organisation| {
        Error::Conflict(format!(
            "{} is already initialised for {} (CVR {})",
            if loc.database_url.is_some() {
                "the database".to_string()
            } else {
                dir.display().to_string()
            },
            org.name,
            org.cvr
        ))
    };
    if let Some(org) = store
        .first_organisation()
        .await
        .map_err(|e| fail(e.into()))?
    {
        store.close().await;
        return Err(fail(already(org)));
    }
    let org_name = req.org_name.clone();
    let root_name = match req.root_name {
        Some(n) => n,
        None => DisplayName::parse("root CA name", &format!("{org_name} rod-CA"))
            .map_err(|e| fail(e.into()))?,
    };
    let issuing_name = match req.issuing_name {
        Some(n) => n,
        None => DisplayName::parse("issuing CA name", &format!("{org_name} udstedende-CA 1"))
            .map_err(|e| fail(e.into()))?,
    };
    let made = make_ca(&req.policy, &org_name, root_name, issuing_name).map_err(fail)?;
    let r = async {
        let mut tx = store.begin().await?;
        tx.lock_init().await?;
        if let Some(org) = tx.first_organisation().await? {
            return Err(already(org));
        }
        tx.set_sealing_kek(&master.current).await?;
        let org = tx
            .create_organisation(org_name.as_str(), req.cvr.as_str())
            .await?;
        let settings = crate::orgs::policy_settings(&req.policy);
        tx.set_settings(org, &settings).await?;
        let root_id = record(
            &mut tx,
            org,
            &made.root,
            "root-ca",
            "issued",
            Some((made.root_signer.key(), false)),
            None,
        )
        .await?;
        let issuing_id = record(
            &mut tx,
            org,
            &made.issuing,
            "issuing-ca",
            "issued",
            Some((made.signer.key(), false)),
            None,
        )
        .await?;
        tx.set_ca_state(org, root_id, issuing_id).await?;
        crls_in(&mut tx, org, &made).await?;
        tx.audit(
            Some(org),
            actor.as_str(),
            "init",
            org_name.as_str(),
            &format!(
                "cvr={} root={root_id} issuing={issuing_id}",
                req.cvr.as_str()
            ),
        )
        .await?;
        tx.commit().await?;
        Ok::<_, Error>((root_id, issuing_id))
    }
    .await;
    store.close().await;
    let (root_id, issuing_id) = r.map_err(fail)?;
    Ok(InitOutcome {
        root: (root_id, made.root),
        issuing: (issuing_id, made.issuing),
        master_key_file: master.file.clone(),
    })
}

pub(crate) fn make_ca(
    policy: &IssuancePolicy,
    org_name: &DisplayName,
    root_name: DisplayName,
    issuing_name: DisplayName,
) -> Result<Authority> {
    let root_signer = RsaPssSigner::new(ca::generate_rsa(4096)?)?;
    let issuing_signer = RsaPssSigner::new(ca::generate_rsa(3072)?)?;
    let now = store::now() - 60;
    let root = ca::issue(
        &CaCertificate {
            common_name: root_name,
            organisation: org_name.clone(),
            path_len: None,
            validity_days: 20 * 365,
        },
        &root_signer.public_key_info()?,
        &IssuerRef {
            cert: None,
            signer: &root_signer,
        },
        policy,
        now,
    )?;
    let root = X509::from_der(&root.der)?;
    let issuing = ca::issue(
        &CaCertificate {
            common_name: issuing_name,
            organisation: org_name.clone(),
            path_len: Some(0),
            validity_days: 10 * 365,
        },
        &issuing_signer.public_key_info()?,
        &IssuerRef {
            cert: Some(&root),
            signer: &root_signer,
        },
        policy,
        now,
    )?;
    let issuing = X509::from_der(&issuing.der)?;
    Ok(Authority {
        root,
        issuing,
        signer: issuing_signer,
        root_signer,
        policy: policy.clone(),
    })
}
