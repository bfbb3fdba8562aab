//! Sealed private keys: storing, opening, the decryption keyring built from
//! them, and re-sealing under a new master key.

use openssl::pkey::{PKey, Private};
use openssl::x509::X509;
use smime::{KeyPair, MemoryKeyring};
use sqlx::Row;

use crate::records::OrgId;
use crate::seal::Kek;
use crate::{Store, StoreError, now};

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
    /// When stored.
    pub created_at: i64,
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

fn random_uid() -> Result<String, StoreError> {
    let mut b = [0u8; 16];
    openssl::rand::rand_bytes(&mut b).map_err(|e| StoreError::Seal(e.to_string()))?;
    Ok(b.iter().map(|x| format!("{x:02x}")).collect())
}

impl Store {
    /// Seals and stores a private key of `org`.
    pub async fn insert_key(&self, org: OrgId, k: NewKey<'_>) -> Result<i64, StoreError> {
        let der = zeroizing(
            k.key
                .private_key_to_pkcs8()
                .map_err(|e| StoreError::Seal(e.to_string()))?,
        );
        let uid = random_uid()?;
        let sealed = self
            .master
            .current
            .seal(&aad(org.0, &uid, k.legacy), &der.0)?;
        let row = sqlx::query(
            "INSERT INTO private_keys (org_id, key_uid, kek_id, sealed, algorithm, legacy, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING id",
        )
        .bind(org.0)
        .bind(&uid)
        .bind(self.master.current.id())
        .bind(sealed)
        .bind(algorithm(k.key))
        .bind(i64::from(k.legacy))
        .bind(now())
        .fetch_one(&self.pool)
        .await?;
        Ok(row.try_get("id")?)
    }

    /// Opens a private key of `org`.
    pub async fn private_key(&self, org: OrgId, id: i64) -> Result<PKey<Private>, StoreError> {
        let row = sqlx::query(
            "SELECT key_uid, kek_id, sealed, legacy FROM private_keys WHERE org_id = $1 AND id = $2",
        )
        .bind(org.0)
        .bind(id)
        .fetch_optional(&self.pool)
        .await?
        .ok_or_else(|| StoreError::NotFound(format!("private key {id}")))?;
        let uid: String = row.try_get("key_uid")?;
        let legacy = row.try_get::<i64, _>("legacy")? != 0;
        self.open_row(
            &uid,
            &aad(org.0, &uid, legacy),
            &row.try_get::<String, _>("kek_id")?,
            &row.try_get::<Vec<u8>, _>("sealed")?,
        )
    }

    fn open_row(
        &self,
        uid: &str,
        aad: &str,
        kek_id: &str,
        sealed: &[u8],
    ) -> Result<PKey<Private>, StoreError> {
        let kek = self.master.by_id(kek_id).ok_or_else(|| {
            StoreError::Seal(format!(
                "key {uid} is sealed under master key {kek_id}, which is not loaded"
            ))
        })?;
        let der = zeroizing(kek.unseal(aad, sealed)?);
        PKey::private_key_from_pkcs8(&der.0)
            .map_err(|e| StoreError::Corrupt(format!("key {uid}: {e}")))
    }

    /// Every key of `org` (not opened).
    pub async fn list_keys(&self, org: OrgId) -> Result<Vec<KeyInfo>, StoreError> {
        let rows = sqlx::query("SELECT id, algorithm, legacy, kek_id, created_at FROM private_keys WHERE org_id = $1 ORDER BY id")
            .bind(org.0)
            .fetch_all(&self.pool)
            .await?;
        rows.iter()
            .map(|r| {
                Ok(KeyInfo {
                    id: r.try_get("id")?,
                    algorithm: r.try_get("algorithm")?,
                    legacy: r.try_get::<i64, _>("legacy")? != 0,
                    kek_id: r.try_get("kek_id")?,
                    created_at: r.try_get("created_at")?,
                })
            })
            .collect()
    }

    /// A decryption keyring with every key `org` has ever held and its
    /// certificate(s): current, renewed, revoked, expired and legacy OCES2.
    /// CA keys are left out: they never decrypt mail.
    pub async fn keyring(&self, org: OrgId) -> Result<MemoryKeyring, StoreError> {
        let mut kr = MemoryKeyring::new();
        for c in self.list_certificates(org).await? {
            let Some(key_id) = c.key_id else { continue };
            if c.kind.ends_with("-ca") {
                continue;
            }
            let key = self.private_key(org, key_id).await?;
            let cert = X509::from_pem(c.pem.as_bytes())
                .map_err(|e| StoreError::Corrupt(format!("certificate {}: {e}", c.id)))?;
            let label = format!(
                "store certificate {} ({}, {})",
                c.id, c.generation, c.subject
            );
            let pair = KeyPair::new(key, cert, Vec::new(), &label)
                .map_err(|e| StoreError::Corrupt(e.to_string()))?;
            kr.add(pair);
        }
        Ok(kr)
    }

    /// Re-seals every private key (of every organisation) under `new`, in
    /// one transaction. Returns how many were re-sealed. The caller makes
    /// `new` the current master key afterwards (see `MasterKeys`).
    pub async fn reseal_all(&self, new: &Kek) -> Result<usize, StoreError> {
        let mut tx = self.pool.begin().await?;
        if self.backend == crate::Backend::Postgres {
            // Another node must not add a key sealed under the old master
            // key between this read and the commit.
            sqlx::query("LOCK TABLE private_keys IN SHARE ROW EXCLUSIVE MODE")
                .execute(&mut *tx)
                .await?;
        }
        let rows = sqlx::query(
            "SELECT id, org_id, key_uid, kek_id, sealed, legacy FROM private_keys ORDER BY id",
        )
        .fetch_all(&mut *tx)
        .await?;
        let mut n = 0;
        for r in &rows {
            let id: i64 = r.try_get("id")?;
            let uid: String = r.try_get("key_uid")?;
            let kek_id: String = r.try_get("kek_id")?;
            if kek_id == new.id() {
                continue; // an interrupted rotation already did this one
            }
            let kek = self.master.by_id(&kek_id).ok_or_else(|| {
                StoreError::Seal(format!(
                    "key {uid} is sealed under master key {kek_id}, which is not loaded"
                ))
            })?;
            let ad = aad(
                r.try_get("org_id")?,
                &uid,
                r.try_get::<i64, _>("legacy")? != 0,
            );
            let plain = zeroizing(kek.unseal(&ad, &r.try_get::<Vec<u8>, _>("sealed")?)?);
            let sealed = new.seal(&ad, &plain.0)?;
            sqlx::query("UPDATE private_keys SET sealed = $1, kek_id = $2 WHERE id = $3")
                .bind(sealed)
                .bind(new.id())
                .bind(id)
                .execute(&mut *tx)
                .await?;
            n += 1;
        }
        tx.commit().await?;
        Ok(n)
    }
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
