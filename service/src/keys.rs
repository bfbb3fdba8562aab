//! Keys: importing (MitID Erhverv, legacy OCES2), master-key rotation,
//! outside parties' certificates.

use openssl::x509::X509;
use store::{Kek, LockMode, MasterKeys, ResealReport, Store};

use crate::certs::{fingerprint, generation_of, record, serial_hex, validity};
use crate::{Actor, Error, Location, Result, Service};

/// A PKCS#12 to import, already opened (so a wrong password fails before
/// anything is touched).
#[derive(Debug)]
pub struct ImportRequest {
    /// Key, certificate and chain.
    pub p12: ca::pkcs12::Imported,
    /// A retired key: decryption only.
    pub legacy: bool,
    /// The shared mailbox it serves (default: its e-mail address).
    pub mailbox: Option<ca::EmailAddress>,
}

/// What was imported.
#[derive(Debug)]
pub struct Imported {
    /// The certificate's id.
    pub id: i64,
    /// OCES2 or OCES3.
    pub generation: &'static str,
    /// imported or legacy.
    pub source: &'static str,
    /// Whether it has expired (kept for decryption anyway).
    pub expired: bool,
}

fn is_oces2_person(cert: &X509) -> bool {
    cert.subject_name()
        .entries_by_nid(openssl::nid::Nid::SERIALNUMBER)
        .any(|e| e.data().to_string().is_ok_and(|s| s.contains("-RID:")))
}

impl Service {
    /// Imports a key and its certificate, in one transaction: a duplicate
    /// is refused before anything is stored.
    pub async fn import_key(&self, req: ImportRequest) -> Result<Imported> {
        let org = self.org.id;
        let cert = &req.p12.cert;
        let generation = generation_of(cert);
        let parsed = ca::ParsedEndEntity::from_x509(cert).ok();
        let kind = match &parsed {
            Some(p) => p.kind.as_str(),
            None if is_oces2_person(cert) => "user",
            None => "organisation",
        };
        let source = if req.legacy { "legacy" } else { "imported" };
        let issuer = smime::keyring::name_to_string(cert.issuer_name());
        let serial = serial_hex(cert);
        let mut tx = self.store.begin().await?;
        if let Some(c) = tx.certificate_by_serial(org, &issuer, &serial).await? {
            return Err(Error::Conflict(format!(
                "this certificate is already imported as certificate {} ({}, {}): nothing was changed",
                c.id, c.source, c.status
            )));
        }
        let id = record(
            &mut tx,
            org,
            cert,
            kind,
            source,
            Some((&req.p12.key, req.legacy)),
            req.mailbox.as_ref().map(|m| m.as_str()),
        )
        .await?;
        tx.audit(
            Some(org),
            self.actor.as_str(),
            "key.import",
            &id.to_string(),
            &format!(
                "generation={generation} legacy={} serial={serial}",
                req.legacy
            ),
        )
        .await?;
        tx.commit().await?;
        let (_, not_after) = validity(cert);
        Ok(Imported {
            id,
            generation,
            source,
            expired: not_after < store::now(),
        })
    }

    /// Imports outside parties' certificates (each under its addresses),
    /// all or none. Returns (id, address, subject) per stored entry.
    pub async fn import_recipients(
        &self,
        plan: &[(X509, Vec<String>)],
    ) -> Result<Vec<(i64, String, String)>> {
        let org = self.org.id;
        let mut tx = self.store.begin().await?;
        let mut out = Vec::new();
        for (c, addrs) in plan {
            let pem = String::from_utf8(c.to_pem()?)
                .map_err(|e| Error::Invalid(format!("certificate PEM: {e}")))?;
            let subject = smime::keyring::name_to_string(c.subject_name());
            let (_, not_after) = validity(c);
            for a in addrs {
                let id = tx
                    .upsert_recipient(
                        org,
                        a,
                        &pem,
                        &fingerprint(c),
                        &subject,
                        not_after,
                        "imported",
                    )
                    .await?;
                tx.audit(
                    Some(org),
                    self.actor.as_str(),
                    "recipient.import",
                    a,
                    &format!("id={id} fingerprint={}", fingerprint(c)),
                )
                .await?;
                out.push((id, a.clone(), subject.clone()));
            }
        }
        tx.commit().await?;
        Ok(out)
    }
}

impl Service {
    /// Pins or unpins an outside certificate (audited "recipient.pin" /
    /// "recipient.unpin").
    pub async fn pin_recipient(&self, id: i64, pinned: bool) -> Result<()> {
        let mut tx = self.store.begin().await?;
        let addr = tx.set_recipient_pinned(self.org.id, id, pinned).await?;
        tx.audit(
            Some(self.org.id),
            self.actor.as_str(),
            if pinned {
                "recipient.pin"
            } else {
                "recipient.unpin"
            },
            &addr,
            &format!("id={id}"),
        )
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// Deletes an outside certificate (audited "recipient.delete").
    pub async fn delete_recipient(&self, id: i64) -> Result<()> {
        let mut tx = self.store.begin().await?;
        let addr = tx.delete_recipient(self.org.id, id).await?;
        tx.audit(
            Some(self.org.id),
            self.actor.as_str(),
            "recipient.delete",
            &addr,
            &format!("id={id}"),
        )
        .await?;
        tx.commit().await?;
        Ok(())
    }
}

/// What a rotation did.
#[derive(Debug)]
pub struct RotateOutcome {
    /// The new master key's id.
    pub new_id: String,
    /// Re-sealed, already done, and left alone.
    pub report: ResealReport,
    /// The key came from the environment (the operator replaces it).
    pub from_env: bool,
    /// Where the new key file is.
    pub key_file: Option<std::path::PathBuf>,
}

/// Re-seals every private key under a new master key. Holds the data
/// directory's lock exclusively (a second rotation, and every command that
/// seals, waits), and on PostgreSQL the sealing lock inside the transaction
/// (other nodes wait too). Crash-safe at every point: the new key is
/// written to `master.key.new` first, rows are re-sealed in one
/// transaction, then `master.key.new` replaces `master.key`; running it
/// again finishes an interrupted rotation with the same new key.
pub async fn rotate_master(
    loc: &Location,
    actor: Actor,
    on_wait: impl FnOnce(),
) -> Result<RotateOutcome> {
    loc.check_initialised()?;
    let _lock = loc.lock(LockMode::Exclusive, on_wait)?;
    let dir = &loc.data_dir;
    let mut master = MasterKeys::load(dir)?;
    let from_env = std::env::var(store::seal::MASTER_KEY_ENV).is_ok();
    let new = if from_env {
        let v = std::env::var(store::seal::NEW_MASTER_KEY_ENV).map_err(|_| {
            Error::Invalid("the master key comes from SIKKERMAIL_MASTER_KEY: put the new one (base64 of 32 random bytes) in SIKKERMAIL_NEW_MASTER_KEY".into())
        })?;
        Kek::from_base64(&v)?
    } else {
        match &master.next {
            Some(n) => n.clone(), // finish an interrupted rotation
            None => {
                let k = Kek::generate()?;
                // Under the exclusive lock nobody else writes it; created
                // exclusively all the same, never overwritten.
                store::seal::write_secret_new(&dir.join("master.key.new"), &k.to_base64())?;
                k
            }
        }
    };
    master.next = Some(new.clone());
    let store = Store::open(&loc.url(), master).await?;
    let org = store.first_organisation().await?;
    let r = async {
        let mut tx = store.begin().await?;
        let report = tx.reseal_all(&new).await?;
        tx.audit(
            org.as_ref().map(|o| o.id),
            actor.as_str(),
            "key.rotate-master",
            &new.id(),
            &format!(
                "resealed={} already={} unopenable={}",
                report.resealed,
                report.already,
                report.unopenable.len()
            ),
        )
        .await?;
        tx.commit().await?;
        Ok::<_, Error>(report)
    }
    .await;
    store.close().await;
    let report = r?;
    let mut key_file = None;
    if !from_env {
        let target = dir.join("master.key");
        {
            use std::os::unix::fs::PermissionsExt;
            let _ = std::fs::set_permissions(
                dir.join("master.key.new"),
                std::fs::Permissions::from_mode(0o600),
            );
        }
        std::fs::rename(dir.join("master.key.new"), &target).map_err(|e| {
            Error::Output(format!(
                "re-sealed {} keys, but could not replace master.key: {e}; master.key.new holds the new key (run rotate-master again)",
                report.resealed
            ))
        })?;
        store::seal::sync_dir(&target)?;
        key_file = Some(target);
    }
    Ok(RotateOutcome {
        new_id: new.id(),
        report,
        from_env,
        key_file,
    })
}
