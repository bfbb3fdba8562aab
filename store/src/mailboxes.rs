//! Shared IMAP mailboxes: how far decryption has come in each folder (the
//! checkpoint), who works on a folder now (a lease), and the mailbox's
//! IMAP password sealed at rest.
//!
//! The checkpoint is UIDVALIDITY plus the highest UID finished; it is
//! written only by the holder of the folder's lease, so a process that lost
//! its lease (paused past its expiry) cannot move another's checkpoint.

use sqlx::Row;

use crate::keys::ResealReport;
use crate::records::OrgId;
use crate::{Kek, Store, StoreError, Tx, Unopenable, in_tx};

/// One folder's state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FolderState {
    /// The mailbox's name in the configuration.
    pub mailbox: String,
    /// The folder.
    pub folder: String,
    /// UIDVALIDITY the checkpoint belongs to (0: none yet).
    pub uidvalidity: i64,
    /// Highest UID finished under that UIDVALIDITY.
    pub last_uid: i64,
    /// When the checkpoint last moved.
    pub updated_at: i64,
    /// Who holds the lease, while it lasts.
    pub lease_owner: Option<String>,
    /// Until when (seconds since the epoch).
    pub lease_until: i64,
}

fn secret_aad(org: i64, mailbox: &str, uid: &str) -> String {
    format!("sikkermail-secret:v1:org={org}:mailbox={mailbox}:uid={uid}")
}

impl Tx<'_> {
    /// Takes (or renews) the lease on a folder for `owner` until `until`.
    /// Returns `None` when taken, or `Some(owner)` of the process that
    /// holds it.
    pub async fn mailbox_claim(
        &mut self,
        org: OrgId,
        mailbox: &str,
        folder: &str,
        owner: &str,
        until: i64,
        now: i64,
    ) -> Result<Option<(String, i64)>, StoreError> {
        let done = sqlx::query(
            "INSERT INTO mailbox_folders (org_id, mailbox, folder, updated_at, lease_owner, lease_until) \
             VALUES ($1, $2, $3, $4, $5, $6) \
             ON CONFLICT (org_id, mailbox, folder) DO UPDATE \
             SET lease_owner = excluded.lease_owner, lease_until = excluded.lease_until \
             WHERE mailbox_folders.lease_owner IS NULL OR mailbox_folders.lease_owner = excluded.lease_owner \
                OR mailbox_folders.lease_until < $7",
        )
        .bind(org.0)
        .bind(mailbox)
        .bind(folder)
        .bind(now)
        .bind(owner)
        .bind(until)
        .bind(now)
        .execute(&mut *self.tx)
        .await?;
        if done.rows_affected() == 1 {
            return Ok(None);
        }
        let r = sqlx::query(
            "SELECT lease_owner, lease_until FROM mailbox_folders WHERE org_id = $1 AND mailbox = $2 AND folder = $3",
        )
        .bind(org.0)
        .bind(mailbox)
        .bind(folder)
        .fetch_one(&mut *self.tx)
        .await?;
        let holder: Option<String> = r.try_get("lease_owner")?;
        Ok(Some((
            holder.unwrap_or_default(),
            r.try_get("lease_until")?,
        )))
    }

    /// Takes the lease from `dead` (a holder known to be gone) for `owner`.
    /// False when `dead` no longer holds it (another took it first).
    #[allow(clippy::too_many_arguments)]
    pub async fn mailbox_take_over(
        &mut self,
        org: OrgId,
        mailbox: &str,
        folder: &str,
        dead: &str,
        owner: &str,
        until: i64,
    ) -> Result<bool, StoreError> {
        let done = sqlx::query(
            "UPDATE mailbox_folders SET lease_owner = $1, lease_until = $2 \
             WHERE org_id = $3 AND mailbox = $4 AND folder = $5 AND lease_owner = $6",
        )
        .bind(owner)
        .bind(until)
        .bind(org.0)
        .bind(mailbox)
        .bind(folder)
        .bind(dead)
        .execute(&mut *self.tx)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Gives the lease up (only `owner`'s own).
    pub async fn mailbox_release(
        &mut self,
        org: OrgId,
        mailbox: &str,
        folder: &str,
        owner: &str,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE mailbox_folders SET lease_owner = NULL, lease_until = 0 \
             WHERE org_id = $1 AND mailbox = $2 AND folder = $3 AND lease_owner = $4",
        )
        .bind(org.0)
        .bind(mailbox)
        .bind(folder)
        .bind(owner)
        .execute(&mut *self.tx)
        .await?;
        Ok(())
    }

    /// Moves the checkpoint, if `owner` still holds the lease. Returns
    /// false when it does not (nothing written).
    #[allow(clippy::too_many_arguments)]
    pub async fn mailbox_checkpoint_set(
        &mut self,
        org: OrgId,
        mailbox: &str,
        folder: &str,
        owner: &str,
        uidvalidity: i64,
        last_uid: i64,
        now: i64,
    ) -> Result<bool, StoreError> {
        let done = sqlx::query(
            "UPDATE mailbox_folders SET uidvalidity = $1, last_uid = $2, updated_at = $3 \
             WHERE org_id = $4 AND mailbox = $5 AND folder = $6 AND lease_owner = $7",
        )
        .bind(uidvalidity)
        .bind(last_uid)
        .bind(now)
        .bind(org.0)
        .bind(mailbox)
        .bind(folder)
        .bind(owner)
        .execute(&mut *self.tx)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Every folder of every mailbox of `org`.
    pub async fn mailbox_folders(&mut self, org: OrgId) -> Result<Vec<FolderState>, StoreError> {
        let rows = sqlx::query(
            "SELECT mailbox, folder, uidvalidity, last_uid, updated_at, lease_owner, lease_until \
             FROM mailbox_folders WHERE org_id = $1 ORDER BY mailbox, folder",
        )
        .bind(org.0)
        .fetch_all(&mut *self.tx)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(FolderState {
                    mailbox: r.try_get("mailbox")?,
                    folder: r.try_get("folder")?,
                    uidvalidity: r.try_get("uidvalidity")?,
                    last_uid: r.try_get("last_uid")?,
                    updated_at: r.try_get("updated_at")?,
                    lease_owner: r.try_get("lease_owner")?,
                    lease_until: r.try_get("lease_until")?,
                })
            })
            .collect()
    }

    /// Seals and stores the IMAP password of `mailbox` (replacing one).
    pub async fn mailbox_secret_set(
        &mut self,
        org: OrgId,
        mailbox: &str,
        secret: &[u8],
    ) -> Result<(), StoreError> {
        let kek = self.sealing_kek().await?;
        let uid = crate::keys::random_uid()?;
        let sealed = kek.seal(&secret_aad(org.0, mailbox, &uid), secret)?;
        sqlx::query(
            "INSERT INTO mailbox_secrets (org_id, mailbox, secret_uid, kek_id, sealed, updated_at) \
             VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (org_id, mailbox) DO UPDATE SET \
             secret_uid = excluded.secret_uid, kek_id = excluded.kek_id, sealed = excluded.sealed, \
             updated_at = excluded.updated_at",
        )
        .bind(org.0)
        .bind(mailbox)
        .bind(&uid)
        .bind(kek.id())
        .bind(sealed)
        .bind(crate::now())
        .execute(&mut *self.tx)
        .await?;
        Ok(())
    }

    /// The IMAP password of `mailbox`, opened; `None` when none is stored.
    pub async fn mailbox_secret(
        &mut self,
        org: OrgId,
        mailbox: &str,
    ) -> Result<Option<Vec<u8>>, StoreError> {
        let Some(r) = sqlx::query(
            "SELECT secret_uid, kek_id, sealed FROM mailbox_secrets WHERE org_id = $1 AND mailbox = $2",
        )
        .bind(org.0)
        .bind(mailbox)
        .fetch_optional(&mut *self.tx)
        .await?
        else {
            return Ok(None);
        };
        let uid: String = r.try_get("secret_uid")?;
        let kek_id: String = r.try_get("kek_id")?;
        let sealed: Vec<u8> = r.try_get("sealed")?;
        let kek = self.store.kek(&kek_id).ok_or_else(|| {
            StoreError::Seal(format!(
                "the password of mailbox {mailbox} is sealed under master key {kek_id}, which is not loaded"
            ))
        })?;
        Ok(Some(
            kek.unseal(&secret_aad(org.0, mailbox, &uid), &sealed)?,
        ))
    }

    /// Removes the stored password of `mailbox`; false when there was none.
    pub async fn mailbox_secret_remove(
        &mut self,
        org: OrgId,
        mailbox: &str,
    ) -> Result<bool, StoreError> {
        let done = sqlx::query("DELETE FROM mailbox_secrets WHERE org_id = $1 AND mailbox = $2")
            .bind(org.0)
            .bind(mailbox)
            .execute(&mut *self.tx)
            .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Part of [`Tx::reseal_all`]: every stored mailbox password under `new`.
    pub(crate) async fn reseal_mailbox_secrets(
        &mut self,
        new: &Kek,
        report: &mut ResealReport,
    ) -> Result<(), StoreError> {
        let rows = sqlx::query(
            "SELECT org_id, mailbox, secret_uid, kek_id, sealed FROM mailbox_secrets ORDER BY org_id, mailbox",
        )
        .fetch_all(&mut *self.tx)
        .await?;
        for r in &rows {
            let org: i64 = r.try_get("org_id")?;
            let mailbox: String = r.try_get("mailbox")?;
            let uid: String = r.try_get("secret_uid")?;
            let kek_id: String = r.try_get("kek_id")?;
            if kek_id == new.id() {
                report.already += 1;
                continue;
            }
            let ad = secret_aad(org, &mailbox, &uid);
            let sealed: Vec<u8> = r.try_get("sealed")?;
            let plain = match self.store.kek(&kek_id).map(|k| k.unseal(&ad, &sealed)) {
                Some(Ok(p)) => p,
                Some(Err(e)) => {
                    report.unopenable.push(Unopenable {
                        key_id: 0,
                        kek_id,
                        reason: format!("password of mailbox {mailbox}: {e}"),
                    });
                    continue;
                }
                None => {
                    report.unopenable.push(Unopenable {
                        key_id: 0,
                        reason: format!(
                            "password of mailbox {mailbox}: sealed under master key {kek_id}, which is not loaded"
                        ),
                        kek_id,
                    });
                    continue;
                }
            };
            let resealed = new.seal(&ad, &plain)?;
            sqlx::query(
                "UPDATE mailbox_secrets SET sealed = $1, kek_id = $2 WHERE org_id = $3 AND mailbox = $4",
            )
            .bind(resealed)
            .bind(new.id())
            .bind(org)
            .bind(&mailbox)
            .execute(&mut *self.tx)
            .await?;
            report.resealed += 1;
        }
        Ok(())
    }
}

in_tx! { begin:
    /// Takes (or renews) a folder's lease (see [`Tx::mailbox_claim`]).
    #[allow(clippy::too_many_arguments)]
    fn mailbox_claim(&self, org: OrgId, mailbox: &str, folder: &str, owner: &str, until: i64, now: i64) -> Option<(String, i64)>;
    /// Takes a dead holder's lease (see [`Tx::mailbox_take_over`]).
    #[allow(clippy::too_many_arguments)]
    fn mailbox_take_over(&self, org: OrgId, mailbox: &str, folder: &str, dead: &str, owner: &str, until: i64) -> bool;
    /// Gives a folder's lease up.
    fn mailbox_release(&self, org: OrgId, mailbox: &str, folder: &str, owner: &str) -> ();
    /// Moves a folder's checkpoint (see [`Tx::mailbox_checkpoint_set`]).
    #[allow(clippy::too_many_arguments)]
    fn mailbox_checkpoint_set(&self, org: OrgId, mailbox: &str, folder: &str, owner: &str, uidvalidity: i64, last_uid: i64, now: i64) -> bool;
    /// Removes a stored mailbox password.
    fn mailbox_secret_remove(&self, org: OrgId, mailbox: &str) -> bool;
}

in_tx! { begin_read:
    /// Every folder of every mailbox of `org`.
    fn mailbox_folders(&self, org: OrgId) -> Vec<FolderState>;
    /// A stored mailbox password, opened.
    fn mailbox_secret(&self, org: OrgId, mailbox: &str) -> Option<Vec<u8>>;
}

impl Store {
    /// The state of one folder (a default one when it was never seen).
    pub async fn mailbox_folder(
        &self,
        org: OrgId,
        mailbox: &str,
        folder: &str,
    ) -> Result<FolderState, StoreError> {
        let all = self.mailbox_folders(org).await?;
        Ok(all
            .into_iter()
            .find(|f| f.mailbox == mailbox && f.folder == folder)
            .unwrap_or(FolderState {
                mailbox: mailbox.to_string(),
                folder: folder.to_string(),
                uidvalidity: 0,
                last_uid: 0,
                updated_at: 0,
                lease_owner: None,
                lease_until: 0,
            }))
    }
}
