//! What the gateway needs from the organisation: every key it has held (to
//! decrypt), the keys that may sign, the trust anchors to verify with,
//! outside parties' certificates to encrypt to, and harvesting of the
//! certificates of verified signers.
//!
//! The gateway loads [`MailKeys`] once and keeps it (parsing and unsealing
//! keys per message would cost more than the decryption); it reloads when
//! the store changes.

use std::collections::HashMap;
use std::sync::Arc;

use openssl::x509::X509;
use smime::{KeyPair, MemoryKeyring};
use store::Unopenable;

use crate::certs::{cert_of, fingerprint, generation_of, validity};
use crate::{Error, Result, Service};

/// A key that may sign outbound mail.
#[derive(Debug, Clone)]
pub struct SigningKey {
    /// The key, its certificate and the chain sent along with signatures.
    pub pair: Arc<KeyPair>,
    /// `organisation` or `user`.
    pub kind: String,
    /// The certificate's e-mail address, lowercased.
    pub email: Option<String>,
    /// Certificate id in the store.
    pub cert_id: i64,
    /// Validity end (seconds).
    pub not_after: i64,
}

/// The organisation's keys, loaded once.
#[derive(Debug)]
pub struct MailKeys {
    /// Every decryption key ever held (current, renewed, revoked, expired,
    /// imported MitID Erhverv, legacy OCES2).
    pub decrypt: MemoryKeyring,
    /// Keys that did not open, with why (the rest work).
    pub skipped: Vec<Unopenable>,
    /// Active OCES3 organisation and user keys; legacy OCES2 keys never sign.
    pub signers: Vec<SigningKey>,
    /// The internal CA's root (a trust anchor) and issuing certificate.
    pub ca: Vec<X509>,
    /// What each decryption key's label (in decryption reports) stands for.
    pub labels: HashMap<String, KeyLabel>,
}

/// The certificate behind a decryption key, for the info headers.
#[derive(Debug, Clone)]
pub struct KeyLabel {
    /// Subject.
    pub subject: String,
    /// Serial number (hex).
    pub serial: String,
    /// `OCES2`, `OCES3` or `other`.
    pub generation: String,
    /// What the generation was decided from.
    pub generation_basis: String,
}

impl MailKeys {
    /// The key to sign mail from `sender`: the sender's own certificate
    /// when the store holds its key, else the organisation certificate of
    /// exactly the sender's domain (one whose address is in that domain).
    /// The newest valid one wins. Never another domain's: the firm's keys
    /// sign only for its own addresses, and `<>` (a bounce) for nobody.
    pub fn signer_for(&self, sender: &str, now: i64) -> Option<&SigningKey> {
        let sender = sender.to_ascii_lowercase();
        let (_, domain) = sender.rsplit_once('@')?;
        if domain.is_empty() {
            return None;
        }
        let valid = |k: &&SigningKey| k.not_after > now;
        let newest = |a: &&SigningKey, b: &&SigningKey| a.not_after.cmp(&b.not_after);
        let own = self
            .signers
            .iter()
            .filter(valid)
            .filter(|k| k.email.as_deref() == Some(sender.as_str()))
            .max_by(newest);
        if own.is_some() {
            return own;
        }
        self.signers
            .iter()
            .filter(valid)
            .filter(|k| k.kind == "organisation")
            .filter(|k| {
                k.email
                    .as_deref()
                    .and_then(|e| e.rsplit_once('@'))
                    .is_some_and(|(_, d)| d.eq_ignore_ascii_case(domain))
            })
            .max_by(newest)
    }
}

/// An outside party's certificate, for encrypting to it.
#[derive(Debug, Clone)]
pub struct RecipientCert {
    /// The certificate.
    pub cert: X509,
    /// `OCES2`, `OCES3` or `other` (the certificate's policy OIDs).
    pub generation: &'static str,
    /// `imported` (by an administrator: pinned) or `harvested`.
    pub source: String,
    /// Validity end (seconds).
    pub not_after: i64,
}

impl Service {
    /// Loads [`MailKeys`]: unseals every key of the organisation. The
    /// caller holds the data directory's lock (shared) while this runs.
    pub async fn mail_keys(&self) -> Result<MailKeys> {
        let org = self.org.id;
        let mut tx = self.store.begin_read().await?;
        let ring = tx.keyring(org).await?;
        let certs = tx.list_certificates(org).await?;
        let st = tx.ca_state(org).await?;
        let mut ca = Vec::new();
        if let Some(st) = &st {
            for id in [st.root_cert_id, st.issuing_cert_id] {
                ca.push(cert_of(&tx.certificate(org, id).await?.pem)?);
            }
        }
        let issuing = ca.get(1).cloned();
        let labels = certs
            .iter()
            .filter(|c| c.key_id.is_some())
            .map(|c| {
                let info = KeyLabel {
                    subject: c.subject.clone(),
                    serial: c.serial.clone(),
                    generation: c.generation.clone(),
                    generation_basis: c.generation_basis.clone(),
                };
                (store::keyring_label(c), info)
            })
            .collect();
        let legacy_keys: Vec<i64> = tx
            .list_keys(org)
            .await?
            .iter()
            .filter(|k| k.legacy)
            .map(|k| k.id)
            .collect();
        let mut signers = Vec::new();
        for c in &certs {
            // Legacy keys and OCES2 certificates never sign; OCES3 and
            // certificates without an OCES policy (the internal CA's) do.
            let signing_kind = c.kind == "organisation" || c.kind == "user";
            if !signing_kind || c.status != "active" || c.generation == store::keys::OCES2 {
                continue;
            }
            let Some(key_id) = c.key_id else { continue };
            if legacy_keys.contains(&key_id) {
                continue;
            }
            let cert = cert_of(&c.pem)?;
            // A key that does not open is already named in `ring.skipped`.
            let Ok(key) = tx.private_key(org, key_id).await else {
                continue;
            };
            // Certificates of the internal CA travel with their issuer, so
            // a recipient that trusts the root can build the chain.
            let chain = match &issuing {
                Some(i) if c.source == "issued" => vec![i.clone()],
                _ => Vec::new(),
            };
            let label = format!("store certificate {} ({})", c.id, c.subject);
            let pair = KeyPair::new(key, cert, chain, &label).map_err(Error::from)?;
            signers.push(SigningKey {
                pair: Arc::new(pair),
                kind: c.kind.clone(),
                email: c.email.as_ref().map(|e| e.to_ascii_lowercase()),
                cert_id: c.id,
                not_after: c.not_after,
            });
        }
        tx.commit().await?;
        Ok(MailKeys {
            decrypt: ring.ring,
            skipped: ring.skipped,
            signers,
            ca,
            labels,
        })
    }

    /// Certificates to encrypt mail for `address` to: valid now, newest
    /// first. When an administrator imported (pinned) any for the address,
    /// only those count: a harvested certificate never replaces a pinned one.
    pub async fn recipient_certs(&self, address: &str, now: i64) -> Result<Vec<RecipientCert>> {
        let address = address.to_ascii_lowercase();
        let rows = self
            .store
            .recipients_for(self.org.id, &address)
            .await
            .map_err(Error::from)?;
        let mut out = Vec::new();
        for r in rows {
            if r.not_after <= now {
                continue;
            }
            let Ok(cert) = cert_of(&r.cert_pem) else {
                continue;
            };
            let (not_before, _) = validity(&cert);
            if not_before > now || smime::keyring::is_ca_certificate(&cert) {
                continue;
            }
            let pinned = r.pinned || r.source == "imported";
            out.push((
                pinned,
                RecipientCert {
                    generation: generation_of(&cert),
                    cert,
                    source: if pinned { "imported".into() } else { r.source },
                    not_after: r.not_after,
                },
            ));
        }
        if out.iter().any(|(p, _)| *p) {
            out.retain(|(p, _)| *p);
        }
        let mut out: Vec<RecipientCert> = out.into_iter().map(|(_, c)| c).collect();
        out.sort_by_key(|c| std::cmp::Reverse(c.not_after));
        Ok(out)
    }

    /// Records the certificate of a verified signer under `address` (its
    /// source `harvested`) with the S/MIME capabilities the signature
    /// announced. Seen again, its last-seen time and capabilities are
    /// updated. Returns the recipient entry's id.
    pub async fn harvest(
        &self,
        address: &str,
        cert: &X509,
        capabilities: &[String],
    ) -> Result<i64> {
        if smime::keyring::is_ca_certificate(cert) {
            return Err(Error::Invalid(
                "a CA certificate is never harvested as a recipient".into(),
            ));
        }
        let pem = String::from_utf8(cert.to_pem()?)
            .map_err(|e| Error::Invalid(format!("certificate PEM: {e}")))?;
        let subject = smime::keyring::name_to_string(cert.subject_name());
        let (_, not_after) = validity(cert);
        let mut tx = self.store.begin().await?;
        let id = tx
            .upsert_recipient(
                self.org.id,
                address,
                &pem,
                &fingerprint(cert),
                &subject,
                not_after,
                "harvested",
            )
            .await?;
        if !capabilities.is_empty() {
            tx.set_recipient_capabilities(self.org.id, id, &capabilities.join(","))
                .await?;
        }
        tx.commit().await?;
        Ok(id)
    }
}
