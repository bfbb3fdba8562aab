//! Sealed private keys: storing, opening, the decryption keyring built from
//! them, and re-sealing under a new master key.

use openssl::pkey::{PKey, Private};
use openssl::x509::X509;
use smime::{KeyPair, MemoryKeyring};
use sqlx::Row;

use crate::records::OrgId;
use crate::seal::Kek;
use crate::{Backend, Store, StoreError, Tx, in_tx, now};

/// A key to store.
#[derive(Debug)]
pub struct NewKey<'a> {
    /// The private key.
    pub key: &'a PKey<Private>,
    /// A retired (OCES2) key: kept for decryption forever, never used to
    /// sign or offered for encryption.
    pub legacy: bool,
}

/// What is known about a stored key without opening it.
#[derive(Debug, Clone)]
pub struct KeyInfo {
    /// Id.
    pub id: i64,
    /// e.g. `RSA-3072`.
    pub algorithm: String,
    /// Retired key kept for old mail.
    pub legacy: bool,
    /// Master key that sealed it.
    pub kek_id: String,
    /// Whether this process holds that master key.
    pub kek_loaded: bool,
    /// When stored.
    pub created_at: i64,
}

/// A stored key that could not be opened, and why.
#[derive(Debug, Clone)]
pub struct Unopenable {
    /// The key's id.
    pub key_id: i64,
    /// The master key it is sealed under.
    pub kek_id: String,
    /// Why it did not open.
    pub reason: String,
}

impl std::fmt::Display for Unopenable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "private key {}: {}", self.key_id, self.reason)
    }
}

/// Every key that opened, and every one that did not.
#[derive(Debug)]
pub struct StoreKeyring {
    /// The keys that opened, with their certificates.
    pub ring: MemoryKeyring,
    /// The keys that did not open: named, never fatal to the others.
    pub skipped: Vec<Unopenable>,
}

/// What a master-key rotation did.
#[derive(Debug, Default)]
pub struct ResealReport {
    /// Keys re-sealed under the new master key now.
    pub resealed: usize,
    /// Keys already under it (an interrupted rotation did them).
    pub already: usize,
    /// Keys left as they were because no loaded master key opens them.
    pub unopenable: Vec<Unopenable>,
}

/// The generation of a certificate of the MitID Erhverv era.
pub const OCES3: &str = "OCES3";
/// The generation of a NemID-era certificate (VOCES, MOCES, FOCES).
pub const OCES2: &str = "OCES2";
/// Neither: no OCES policy, and nobody said it is a legacy OCES2 key (a
/// partner's foreign certificate, the internal CA's own, a test).
pub const OTHER: &str = "other";

/// A certificate's generation and what it was decided from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GenerationDecision {
    /// [`OCES3`], [`OCES2`] or [`OTHER`].
    pub generation: &'static str,
    /// What it was decided from, one line without `;` (it goes into
    /// `key=value; ...` headers): `policy OID 1.2.208.169.1.1.1.3.7`,
    /// `administrator said --legacy`, `unknown: ...`.
    pub basis: String,
}

/// The generation a certificate policy OID stands for: the OCES arcs
/// `1.2.208.169.1.1.1.{1 POCES, 2 MOCES/person, 3 VOCES/organisation,
/// 4 FOCES}.<version>` (version 7 is OCES3, 1 to 6 OCES2), and the NemID
/// test CAs' `1.3.6.1.4.1.31313.2.4.6.{1..4}.<version>` (OCES2).
pub fn policy_generation(oid: &str) -> Option<&'static str> {
    let arc = |prefix: &str| {
        let rest = oid.strip_prefix(prefix)?;
        let (kind, version) = rest.split_once('.')?;
        let kind: u32 = kind.parse().ok()?;
        let version: u32 = version.parse().ok()?;
        (1..=4).contains(&kind).then_some(version)
    };
    if let Some(v) = arc("1.2.208.169.1.1.1.") {
        return match v {
            1..=6 => Some(OCES2),
            7 => Some(OCES3),
            _ => None,
        };
    }
    arc("1.3.6.1.4.1.31313.2.4.6.").map(|_| OCES2)
}

/// Decides the generation of `cert`: from its own certificate policy OIDs
/// when one is an OCES policy; otherwise OCES2 when the administrator said
/// the key is legacy (`--legacy`, `key set-legacy`); otherwise neither
/// ([`OTHER`]). The subject's shape is never taken for a generation: an
/// OCES2-looking `serialNumber=CVR:...` only adds a hint to the basis.
pub fn decide_generation(cert: &openssl::x509::X509Ref, said_legacy: bool) -> GenerationDecision {
    let policies = smime::keyring::certificate_policies(cert);
    let by_policy = |g: &str| {
        policies
            .iter()
            .find(|p| policy_generation(p) == Some(g))
            .cloned()
    };
    for g in [OCES3, OCES2] {
        if let Some(oid) = by_policy(g) {
            return GenerationDecision {
                generation: g,
                basis: format!("policy OID {oid}"),
            };
        }
    }
    if said_legacy {
        return GenerationDecision {
            generation: OCES2,
            basis: "administrator said --legacy, no OCES policy OID in the certificate".into(),
        };
    }
    let cvr_subject = cert
        .subject_name()
        .entries_by_nid(openssl::nid::Nid::SERIALNUMBER)
        .any(|e| e.data().to_string().is_ok_and(|s| s.starts_with("CVR:")));
    GenerationDecision {
        generation: OTHER,
        basis: if cvr_subject {
            "unknown: no OCES policy OID, though the subject looks like OCES2 \
             (`key set-legacy` says it is)"
                .into()
        } else {
            "unknown: no OCES policy OID, not a Danish OCES certificate".into()
        },
    }
}

/// [`decide_generation`] for a certificate the store records with this
/// `source` (`issued` by the internal CA, `imported`, `legacy`).
pub fn decide_recorded(
    cert: &openssl::x509::X509Ref,
    source: &str,
    said_legacy: bool,
) -> GenerationDecision {
    let mut d = decide_generation(cert, said_legacy || source == "legacy");
    if source == "issued" && d.generation == OTHER {
        d.basis = "unknown: no OCES policy OID, the internal CA's own".into();
    }
    d
}

/// What [`Tx::delete_key`] did to the key's certificates.
#[derive(Debug, Default)]
pub struct DeletedKey {
    /// Imported certificates removed with their key (so the key can be
    /// imported again, correctly).
    pub removed_certs: Vec<i64>,
    /// Certificates this CA issued: kept (its CRL and OCSP answer for
    /// them), without a key.
    pub kept_certs: Vec<i64>,
}

fn algorithm(key: &PKey<Private>) -> String {
    match key.id() {
        openssl::pkey::Id::RSA => format!("RSA-{}", key.bits()),
        openssl::pkey::Id::EC => format!("EC-{}", key.bits()),
        other => format!("{other:?}-{}", key.bits()),
    }
}

/// The associated data of a seal: the row's organisation, its key uid and
/// whether it is a legacy key, so a sealed blob can neither be moved to
/// another organisation nor have its legacy flag flipped unnoticed.
fn aad(org: i64, uid: &str, legacy: bool) -> String {
    format!(
        "sikkermail-key:v1:org={org}:uid={uid}:legacy={}",
        u8::from(legacy)
    )
}

pub(crate) fn random_uid() -> Result<String, StoreError> {
    let mut b = [0u8; 16];
    openssl::rand::rand_bytes(&mut b).map_err(|e| StoreError::Seal(e.to_string()))?;
    Ok(b.iter().map(|x| format!("{x:02x}")).collect())
}

fn not_loaded(kek_id: &str, held: &[String]) -> String {
    format!(
        "sealed under master key {kek_id}, which is not loaded (this process holds {}); \
         give that master key in {} to open it",
        held.join(", "),
        crate::seal::EXTRA_MASTER_KEYS_ENV
    )
}

impl Tx<'_> {
    /// The master key that new keys are sealed under, as the database
    /// records it. On PostgreSQL this first takes the sealing lock in shared
    /// mode, so a rotation on another node either finished before (and this
    /// sees its new key) or waits for this transaction to commit (and then
    /// re-seals what it wrote).
    pub async fn sealing_kek(&mut self) -> Result<Kek, StoreError> {
        if self.store.backend == Backend::Postgres {
            sqlx::query("SELECT pg_advisory_xact_lock_shared($1)")
                .bind(crate::SEAL_LOCK)
                .execute(&mut *self.tx)
                .await?;
        }
        let recorded: Option<String> = sqlx::query("SELECT kek_id FROM master_state WHERE id = 1")
            .fetch_optional(&mut *self.tx)
            .await?
            .map(|r| r.try_get("kek_id"))
            .transpose()?;
        match recorded {
            Some(id) => self.store.kek(&id).ok_or_else(|| {
                StoreError::Seal(format!(
                    "the master key was rotated to {id} by another process or node, and this one \
                     does not hold it: copy the current master.key (or SIKKERMAIL_MASTER_KEY) here and retry"
                ))
            }),
            None => {
                // A database from before this table: what this process
                // holds is the current key (a rotation in progress has not
                // committed, or there would be a row).
                let cur = self.store.master_keys().current;
                self.set_sealing_kek(&cur).await?;
                Ok(cur)
            }
        }
    }

    /// Records `kek` as the master key new keys are sealed under.
    pub async fn set_sealing_kek(&mut self, kek: &Kek) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO master_state (id, kek_id, rotated_at) VALUES (1, $1, $2) \
             ON CONFLICT (id) DO UPDATE SET kek_id = excluded.kek_id, rotated_at = excluded.rotated_at",
        )
        .bind(kek.id())
        .bind(now())
        .execute(&mut *self.tx)
        .await?;
        Ok(())
    }

    /// Seals and stores a private key of `org`.
    pub async fn insert_key(&mut self, org: OrgId, k: NewKey<'_>) -> Result<i64, StoreError> {
        let der = zeroizing(
            k.key
                .private_key_to_pkcs8()
                .map_err(|e| StoreError::Seal(e.to_string()))?,
        );
        let kek = self.sealing_kek().await?;
        let uid = random_uid()?;
        let sealed = kek.seal(&aad(org.0, &uid, k.legacy), &der.0)?;
        let row = sqlx::query(
            "INSERT INTO private_keys (org_id, key_uid, kek_id, sealed, algorithm, legacy, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING id",
        )
        .bind(org.0)
        .bind(&uid)
        .bind(kek.id())
        .bind(sealed)
        .bind(algorithm(k.key))
        .bind(i64::from(k.legacy))
        .bind(now())
        .fetch_one(&mut *self.tx)
        .await?;
        Ok(row.try_get("id")?)
    }

    /// Opens a private key of `org`.
    pub async fn private_key(&mut self, org: OrgId, id: i64) -> Result<PKey<Private>, StoreError> {
        self.open_key(org, id)
            .await?
            .map_err(|u| StoreError::Seal(u.to_string()))
    }

    /// Opens a private key of `org`: the outer error is the database's, the
    /// inner one says why this key (only) does not open.
    async fn open_key(
        &mut self,
        org: OrgId,
        id: i64,
    ) -> Result<Result<PKey<Private>, Unopenable>, StoreError> {
        let row = sqlx::query(
            "SELECT key_uid, kek_id, sealed, legacy FROM private_keys WHERE org_id = $1 AND id = $2",
        )
        .bind(org.0)
        .bind(id)
        .fetch_optional(&mut *self.tx)
        .await?
        .ok_or_else(|| StoreError::NotFound(format!("private key {id}")))?;
        let uid: String = row.try_get("key_uid")?;
        let legacy = row.try_get::<i64, _>("legacy")? != 0;
        Ok(self.store.open_row(
            id,
            &aad(org.0, &uid, legacy),
            &row.try_get::<String, _>("kek_id")?,
            &row.try_get::<Vec<u8>, _>("sealed")?,
        ))
    }

    /// Marks key `id` of `org` legacy (kept for decrypting old mail only)
    /// or current again. The seal's associated data names the flag, so the
    /// key is opened and sealed again under the current master key, in
    /// this transaction. False when it already was so (nothing changed).
    pub async fn set_key_legacy(
        &mut self,
        org: OrgId,
        id: i64,
        legacy: bool,
    ) -> Result<bool, StoreError> {
        let row =
            sqlx::query("SELECT key_uid, legacy FROM private_keys WHERE org_id = $1 AND id = $2")
                .bind(org.0)
                .bind(id)
                .fetch_optional(&mut *self.tx)
                .await?
                .ok_or_else(|| StoreError::NotFound(format!("private key {id}")))?;
        if (row.try_get::<i64, _>("legacy")? != 0) == legacy {
            return Ok(false);
        }
        let uid: String = row.try_get("key_uid")?;
        let key = self.private_key(org, id).await?;
        let der = zeroizing(
            key.private_key_to_pkcs8()
                .map_err(|e| StoreError::Seal(e.to_string()))?,
        );
        let kek = self.sealing_kek().await?;
        let sealed = kek.seal(&aad(org.0, &uid, legacy), &der.0)?;
        // Only from the state read above: a concurrent correction or
        // deletion makes this one change nothing.
        let done = sqlx::query(
            "UPDATE private_keys SET sealed = $1, kek_id = $2, legacy = $3 \
             WHERE org_id = $4 AND id = $5 AND legacy = $6",
        )
        .bind(sealed)
        .bind(kek.id())
        .bind(i64::from(legacy))
        .bind(org.0)
        .bind(id)
        .bind(i64::from(!legacy))
        .execute(&mut *self.tx)
        .await?;
        if done.rows_affected() != 1 {
            return Err(StoreError::Conflict(format!(
                "private key {id} was changed or deleted meanwhile: nothing was changed, try again"
            )));
        }
        Ok(true)
    }

    /// Records certificate `id`'s generation, what it was decided from, and
    /// its source (`imported`/`legacy` follow the key's legacy flag).
    pub async fn set_certificate_generation(
        &mut self,
        org: OrgId,
        id: i64,
        generation: &str,
        basis: &str,
        source: &str,
    ) -> Result<(), StoreError> {
        let done = sqlx::query(
            "UPDATE certificates SET generation = $1, generation_basis = $2, source = $3 \
             WHERE org_id = $4 AND id = $5",
        )
        .bind(generation)
        .bind(basis)
        .bind(source)
        .bind(org.0)
        .bind(id)
        .execute(&mut *self.tx)
        .await?;
        if done.rows_affected() != 1 {
            return Err(StoreError::NotFound(format!("certificate {id}")));
        }
        Ok(())
    }

    /// Deletes private key `id` of `org`. Its imported certificates go with
    /// it; certificates this CA issued stay, without a key. The caller
    /// decides whether it may go (mail that only it opens).
    pub async fn delete_key(&mut self, org: OrgId, id: i64) -> Result<DeletedKey, StoreError> {
        let mut out = DeletedKey::default();
        for c in self.list_certificates(org).await? {
            if c.key_id != Some(id) {
                continue;
            }
            if c.source == "issued" {
                out.kept_certs.push(c.id);
            } else {
                out.removed_certs.push(c.id);
            }
        }
        sqlx::query("UPDATE certificates SET key_id = NULL WHERE org_id = $1 AND key_id = $2 AND source = 'issued'")
            .bind(org.0)
            .bind(id)
            .execute(&mut *self.tx)
            .await?;
        sqlx::query(
            "DELETE FROM certificates WHERE org_id = $1 AND key_id = $2 AND source <> 'issued'",
        )
        .bind(org.0)
        .bind(id)
        .execute(&mut *self.tx)
        .await?;
        let done = sqlx::query("DELETE FROM private_keys WHERE org_id = $1 AND id = $2")
            .bind(org.0)
            .bind(id)
            .execute(&mut *self.tx)
            .await?;
        if done.rows_affected() != 1 {
            return Err(StoreError::NotFound(format!("private key {id}")));
        }
        Ok(out)
    }

    /// Every key of `org` (not opened).
    pub async fn list_keys(&mut self, org: OrgId) -> Result<Vec<KeyInfo>, StoreError> {
        let rows = sqlx::query("SELECT id, algorithm, legacy, kek_id, created_at FROM private_keys WHERE org_id = $1 ORDER BY id")
            .bind(org.0)
            .fetch_all(&mut *self.tx)
            .await?;
        rows.iter()
            .map(|r| {
                let kek_id: String = r.try_get("kek_id")?;
                Ok(KeyInfo {
                    id: r.try_get("id")?,
                    algorithm: r.try_get("algorithm")?,
                    legacy: r.try_get::<i64, _>("legacy")? != 0,
                    kek_loaded: self.store.kek(&kek_id).is_some(),
                    kek_id,
                    created_at: r.try_get("created_at")?,
                })
            })
            .collect()
    }

    /// A decryption keyring with every key `org` has ever held and its
    /// certificate(s): current, renewed, revoked, expired and legacy OCES2.
    /// CA keys are left out: they never decrypt mail. A key that does not
    /// open is named in `skipped` and the others are still there.
    pub async fn keyring(&mut self, org: OrgId) -> Result<StoreKeyring, StoreError> {
        let mut ring = MemoryKeyring::new();
        let mut skipped = Vec::new();
        for c in self.list_certificates(org).await? {
            let Some(key_id) = c.key_id else { continue };
            if c.kind.ends_with("-ca") {
                continue;
            }
            let key = match self.open_key(org, key_id).await? {
                Ok(k) => k,
                Err(mut u) => {
                    u.reason = format!("certificate {} ({}): {}", c.id, c.subject, u.reason);
                    skipped.push(u);
                    continue;
                }
            };
            let cert = X509::from_pem(c.pem.as_bytes())
                .map_err(|e| StoreError::Corrupt(format!("certificate {}: {e}", c.id)))?;
            let label = keyring_label(&c);
            let pair = KeyPair::new(key, cert, Vec::new(), &label)
                .map_err(|e| StoreError::Corrupt(e.to_string()))?;
            ring.add(pair);
        }
        Ok(StoreKeyring { ring, skipped })
    }

    /// Re-seals every private key (of every organisation) under `new` and
    /// records `new` as the sealing key, in this transaction. On PostgreSQL
    /// the sealing lock is taken exclusively first: every transaction that
    /// sealed under the old key has committed (and is re-sealed here), and
    /// every later one sees `new`. A key that no loaded master key opens is
    /// left as it is and reported; it never stops the others.
    pub async fn reseal_all(&mut self, new: &Kek) -> Result<ResealReport, StoreError> {
        if self.store.backend == Backend::Postgres {
            sqlx::query("SELECT pg_advisory_xact_lock($1)")
                .bind(crate::SEAL_LOCK)
                .execute(&mut *self.tx)
                .await?;
        }
        let rows = sqlx::query(
            "SELECT id, org_id, key_uid, kek_id, sealed, legacy FROM private_keys ORDER BY id",
        )
        .fetch_all(&mut *self.tx)
        .await?;
        let mut report = ResealReport::default();
        for r in &rows {
            let id: i64 = r.try_get("id")?;
            let uid: String = r.try_get("key_uid")?;
            let kek_id: String = r.try_get("kek_id")?;
            if kek_id == new.id() {
                report.already += 1; // an interrupted rotation did this one
                continue;
            }
            let ad = aad(
                r.try_get("org_id")?,
                &uid,
                r.try_get::<i64, _>("legacy")? != 0,
            );
            let sealed: Vec<u8> = r.try_get("sealed")?;
            let plain = match self.store.kek(&kek_id) {
                None => {
                    report.unopenable.push(Unopenable {
                        key_id: id,
                        reason: not_loaded(&kek_id, &self.store.master_keys().ids()),
                        kek_id,
                    });
                    continue;
                }
                Some(kek) => match kek.unseal(&ad, &sealed) {
                    Ok(p) => zeroizing(p),
                    Err(e) => {
                        report.unopenable.push(Unopenable {
                            key_id: id,
                            kek_id,
                            reason: e.to_string(),
                        });
                        continue;
                    }
                },
            };
            let sealed = new.seal(&ad, &plain.0)?;
            sqlx::query("UPDATE private_keys SET sealed = $1, kek_id = $2 WHERE id = $3")
                .bind(sealed)
                .bind(new.id())
                .bind(id)
                .execute(&mut *self.tx)
                .await?;
            report.resealed += 1;
        }
        self.reseal_mailbox_secrets(new, &mut report).await?;
        self.reseal_queue_bodies(new, &mut report).await?;
        self.set_sealing_kek(new).await?;
        Ok(report)
    }
}

impl Store {
    /// Opens one sealed row, loading the master keys again once if it names
    /// one this process does not hold.
    fn open_row(
        &self,
        key_id: i64,
        aad: &str,
        kek_id: &str,
        sealed: &[u8],
    ) -> Result<PKey<Private>, Unopenable> {
        let fail = |reason: String| Unopenable {
            key_id,
            kek_id: kek_id.to_string(),
            reason,
        };
        let kek = self
            .kek(kek_id)
            .ok_or_else(|| fail(not_loaded(kek_id, &self.master_keys().ids())))?;
        let der = zeroizing(kek.unseal(aad, sealed).map_err(|e| fail(e.to_string()))?);
        PKey::private_key_from_pkcs8(&der.0).map_err(|e| fail(format!("corrupt key: {e}")))
    }

    /// Re-seals every key under `new` in one transaction of its own.
    pub async fn reseal_all(&self, new: &Kek) -> Result<ResealReport, StoreError> {
        let mut tx = self.begin().await?;
        let r = tx.reseal_all(new).await?;
        tx.commit().await?;
        Ok(r)
    }
}

in_tx! { begin:
    /// Seals and stores a private key of `org`.
    fn insert_key(&self, org: OrgId, k: NewKey<'_>) -> i64;
    /// Marks key `id` legacy or current; false when it already was.
    fn set_key_legacy(&self, org: OrgId, id: i64, legacy: bool) -> bool;
}

in_tx! { begin_read:
    /// Opens a private key of `org`.
    fn private_key(&self, org: OrgId, id: i64) -> PKey<Private>;
    /// Every key of `org` (not opened).
    fn list_keys(&self, org: OrgId) -> Vec<KeyInfo>;
    /// Every key `org` has held, as a keyring; keys that do not open are
    /// named in `skipped`.
    fn keyring(&self, org: OrgId) -> StoreKeyring;
}

/// Key material that is wiped when dropped.
struct Zeroizing(Vec<u8>);

impl Drop for Zeroizing {
    fn drop(&mut self) {
        for b in self.0.iter_mut() {
            // SAFETY: a volatile write to memory we own, so the compiler
            // cannot drop the wipe as a dead store.
            unsafe { std::ptr::write_volatile(b, 0) };
        }
    }
}

fn zeroizing(v: Vec<u8>) -> Zeroizing {
    Zeroizing(v)
}

/// The label a certificate's key gets in [`StoreKeyring`]; decryption
/// reports name it, so callers can map a report back to the certificate.
pub fn keyring_label(c: &crate::CertRow) -> String {
    format!(
        "store certificate {} ({}, {})",
        c.id, c.generation, c.subject
    )
}
