//! Keys: importing (MitID Erhverv, legacy OCES2), master-key rotation,
//! outside parties' certificates.

use openssl::x509::X509;
use store::{Kek, LockMode, MasterKeys, ResealReport, Store};

use crate::certs::{cert_of, fingerprint, record, serial_hex, validity};
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
    /// OCES2, OCES3 or other.
    pub generation: &'static str,
    /// What the generation was decided from.
    pub generation_basis: String,
    /// imported or legacy.
    pub source: &'static str,
    /// Whether it has expired (kept for decryption anyway).
    pub expired: bool,
}

/// What [`Service::set_key_legacy`] did.
#[derive(Debug)]
pub struct KeyCorrected {
    /// False when the key already was so (nothing changed, not audited).
    pub changed: bool,
    /// Its certificates: (id, generation, what it was decided from).
    pub certificates: Vec<(i64, &'static str, String)>,
}

/// What [`Service::delete_key`] did.
#[derive(Debug)]
pub struct KeyDeleted {
    /// Imported certificates removed with the key.
    pub removed_certs: Vec<i64>,
    /// Certificates this CA issued, kept without a key.
    pub kept_certs: Vec<i64>,
    /// Queued messages only this key opened (deleted with --force).
    pub queued: Vec<i64>,
}

/// The recipients an S/MIME message (or its encrypted parts) is
/// encrypted to, read without any key: a keyring that only takes note of
/// what it is asked for.
fn recipient_ids(message: &[u8]) -> Vec<smime::RecipientId> {
    #[derive(Default)]
    struct Probe(std::sync::Mutex<Vec<smime::RecipientId>>);
    impl smime::Keyring for Probe {
        fn find(&self, rid: &smime::RecipientId) -> Vec<std::sync::Arc<smime::KeyPair>> {
            if let Ok(mut v) = self.0.lock() {
                v.push(rid.clone());
            }
            Vec::new()
        }
    }
    let probe = Probe::default();
    let _ = smime::decrypt(message, &probe, None);
    probe.0.into_inner().unwrap_or_default()
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
        let decided = store::keys::decide_generation(cert, req.legacy);
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
            let key = match c.key_id {
                Some(k) => tx.list_keys(org).await?.into_iter().find(|i| i.id == k),
                None => None,
            };
            return Err(Error::Conflict(match key {
                // Imported before with the other --legacy: say how to
                // correct that instead of importing it twice.
                Some(k) if k.legacy != req.legacy => format!(
                    "this certificate is already imported as certificate {} with key {}, {}: to correct that run `sikkermail key set-legacy {}{}`; nothing was changed",
                    c.id,
                    k.id,
                    if k.legacy {
                        "marked legacy"
                    } else {
                        "not marked legacy"
                    },
                    k.id,
                    if req.legacy { "" } else { " --not-legacy" }
                ),
                _ => format!(
                    "this certificate is already imported as certificate {} ({}, {}): nothing was changed",
                    c.id, c.source, c.status
                ),
            }));
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
                "generation={} ({}) legacy={} serial={serial}",
                decided.generation, decided.basis, req.legacy
            ),
        )
        .await?;
        tx.commit().await?;
        let (_, not_after) = validity(cert);
        Ok(Imported {
            id,
            generation: decided.generation,
            generation_basis: decided.basis,
            source,
            expired: not_after < store::now(),
        })
    }

    /// Marks key `key_id` legacy (an OCES2 or otherwise retired key: kept
    /// for decrypting old mail, never signing) or, with `legacy` false,
    /// current again; its certificates' source (`legacy`/`imported`) and
    /// generation are decided again. Audited `key.set-legacy` or
    /// `key.set-current`, one transaction. CA keys are refused.
    pub async fn set_key_legacy(&self, key_id: i64, legacy: bool) -> Result<KeyCorrected> {
        let org = self.org.id;
        let mut tx = self.store.begin().await?;
        let certs: Vec<store::CertRow> = tx
            .list_certificates(org)
            .await?
            .into_iter()
            .filter(|c| c.key_id == Some(key_id))
            .collect();
        if let Some(c) = certs.iter().find(|c| c.kind.ends_with("-ca")) {
            return Err(Error::Invalid(format!(
                "key {key_id} is the key of the internal CA ({} certificate {}): it signs, it is never legacy",
                c.kind, c.id
            )));
        }
        let changed = tx.set_key_legacy(org, key_id, legacy).await?;
        let mut out = KeyCorrected {
            changed,
            certificates: Vec::new(),
        };
        for c in &certs {
            let source = match c.source.as_str() {
                "imported" | "legacy" if legacy => "legacy",
                "imported" | "legacy" => "imported",
                other => other,
            };
            let x = cert_of(&c.pem)?;
            let d = store::keys::decide_recorded(&x, source, legacy);
            tx.set_certificate_generation(org, c.id, d.generation, &d.basis, source)
                .await?;
            out.certificates.push((c.id, d.generation, d.basis));
        }
        if changed {
            let certs: Vec<String> = out
                .certificates
                .iter()
                .map(|(id, g, b)| format!("certificate {id}: generation={g} ({b})"))
                .collect();
            tx.audit(
                Some(org),
                self.actor.as_str(),
                if legacy {
                    "key.set-legacy"
                } else {
                    "key.set-current"
                },
                &key_id.to_string(),
                &format!("legacy={legacy} {}", certs.join(", ")),
            )
            .await?;
            tx.commit().await?;
        }
        Ok(out)
    }

    /// Deletes private key `key_id`: its imported certificates go with it
    /// (so it can be imported again), certificates this CA issued stay
    /// without a key. Mail is found by the certificate it names, so once a
    /// key's certificates lose it, nothing opens mail encrypted to them:
    /// refused unless `force` while it is the only key that opens queued
    /// mail (waiting, held or quarantined messages encrypted to its
    /// certificates and to no other held key, named) or archived mail. The
    /// store cannot see into mailboxes and archive folders, so a key with
    /// a certificate counts as opening archived mail; a key without one is
    /// deleted at once. CA keys are refused always. Audited `key.delete`,
    /// one transaction.
    pub async fn delete_key(&self, key_id: i64, force: bool) -> Result<KeyDeleted> {
        let org = self.org.id;
        let mut tx = self.store.begin().await?;
        let certs = tx.list_certificates(org).await?;
        let own: Vec<&store::CertRow> = certs.iter().filter(|c| c.key_id == Some(key_id)).collect();
        if let Some(c) = own.iter().find(|c| c.kind.ends_with("-ca")) {
            return Err(Error::Invalid(format!(
                "key {key_id} is the key of the internal CA ({} certificate {}): it is never deleted",
                c.kind, c.id
            )));
        }
        if !tx.list_keys(org).await?.iter().any(|k| k.id == key_id) {
            return Err(Error::NotFound(format!("private key {key_id}")));
        }
        // The certificates of this key and of every other held key: mail
        // names the certificate it was encrypted to.
        let mut others: Vec<X509> = Vec::new();
        let mut mine: Vec<X509> = Vec::new();
        for c in &certs {
            let Some(k) = c.key_id else { continue };
            if c.kind.ends_with("-ca") {
                continue;
            }
            let x = cert_of(&c.pem)?;
            if k == key_id {
                mine.push(x);
            } else {
                others.push(x);
            }
        }
        let mut queued = Vec::new();
        if !mine.is_empty() {
            for id in tx.queue_ids_with_body(org).await? {
                let m = tx.queue_show(org, id).await?;
                let rids = recipient_ids(&m.body);
                let opens = |x: &X509| rids.iter().any(|r| r.matches(x));
                if mine.iter().any(opens) && !others.iter().any(opens) {
                    queued.push(id);
                }
            }
        }
        let ids = |v: &[i64]| v.iter().map(i64::to_string).collect::<Vec<_>>().join(",");
        if !mine.is_empty() && !force {
            let names: Vec<String> = own
                .iter()
                .map(|c| format!("certificate {} ({})", c.id, c.subject))
                .collect();
            let waiting = if queued.is_empty() {
                String::new()
            } else {
                format!("queued message(s) {} and ", ids(&queued))
            };
            return Err(Error::Conflict(format!(
                "key {key_id} is the only key that opens {waiting}mail encrypted to {} in mailboxes and \
                 archive folders: keep a copy first (`sikkermail cert export {} --out-p12 FILE`), then give \
                 --force; nothing was changed",
                names.join(", "),
                own.first().map_or(0, |c| c.id)
            )));
        }
        let done = tx.delete_key(org, key_id).await?;
        tx.audit(
            Some(org),
            self.actor.as_str(),
            "key.delete",
            &key_id.to_string(),
            &format!(
                "removed_certificates={} kept_certificates={} force={force} queued_only_it_opened={}",
                ids(&done.removed_certs),
                ids(&done.kept_certs),
                ids(&queued)
            ),
        )
        .await?;
        tx.commit().await?;
        Ok(KeyDeleted {
            removed_certs: done.removed_certs,
            kept_certs: done.kept_certs,
            queued,
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
