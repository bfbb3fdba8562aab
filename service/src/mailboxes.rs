//! Shared IMAP mailboxes: the sealed IMAP password, folder leases and
//! checkpoints (used by the gateway's mailbox worker and `sikkermail
//! mailbox`), and the audit entries of decryption runs.

use store::FolderState;

use crate::{Error, Result, Service};

/// Mailbox names: 1-64 letters, digits, `_` and `-` (they are TOML table
/// names and parts of audit subjects).
pub fn check_mailbox_name(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
    if ok {
        Ok(())
    } else {
        Err(Error::Invalid(format!(
            "mailbox name {name:?}: use 1-64 letters, digits, _ and -"
        )))
    }
}

impl Service {
    /// Seals and stores the IMAP password of `mailbox` (audited; the
    /// password itself is never logged or audited).
    pub async fn mailbox_password_set(&self, mailbox: &str, password: &str) -> Result<()> {
        check_mailbox_name(mailbox)?;
        if password.is_empty() {
            return Err(Error::Invalid("the IMAP password is empty".into()));
        }
        let _lock = self.lock_for_sealing().await?;
        let mut tx = self.store.begin().await?;
        tx.mailbox_secret_set(self.org.id, mailbox, password.as_bytes())
            .await?;
        tx.audit(
            Some(self.org.id),
            self.actor.as_str(),
            "mailbox.password",
            mailbox,
            "",
        )
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// Removes the stored IMAP password of `mailbox` (audited).
    pub async fn mailbox_password_remove(&self, mailbox: &str) -> Result<()> {
        let mut tx = self.store.begin().await?;
        if !tx.mailbox_secret_remove(self.org.id, mailbox).await? {
            return Err(Error::NotFound(format!(
                "no stored password for mailbox {mailbox}"
            )));
        }
        tx.audit(
            Some(self.org.id),
            self.actor.as_str(),
            "mailbox.password_remove",
            mailbox,
            "",
        )
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// The stored IMAP password of `mailbox`, if any.
    pub async fn mailbox_password(&self, mailbox: &str) -> Result<Option<String>> {
        let _lock = self.lock_for_sealing().await?;
        let Some(bytes) = self.store.mailbox_secret(self.org.id, mailbox).await? else {
            return Ok(None);
        };
        String::from_utf8(bytes)
            .map(Some)
            .map_err(|_| Error::Invalid(format!("the stored password of {mailbox} is not UTF-8")))
    }

    /// Takes or renews the lease on a folder for `owner` for `secs`
    /// seconds. `Err(Conflict)` names the holder when another has it.
    pub async fn mailbox_claim(
        &self,
        mailbox: &str,
        folder: &str,
        owner: &str,
        secs: i64,
    ) -> Result<()> {
        let now = store::now();
        match self
            .store
            .mailbox_claim(self.org.id, mailbox, folder, owner, now + secs, now)
            .await?
        {
            None => Ok(()),
            Some((holder, until)) => Err(Error::Conflict(format!(
                "folder {folder:?} of mailbox {mailbox} is being processed by {holder} (lease for {} s more)",
                (until - now).max(0)
            ))),
        }
    }

    /// Takes the lease from `dead`, a holder known to be gone; false when
    /// another process took it first.
    pub async fn mailbox_take_over(
        &self,
        mailbox: &str,
        folder: &str,
        dead: &str,
        owner: &str,
        secs: i64,
    ) -> Result<bool> {
        Ok(self
            .store
            .mailbox_take_over(
                self.org.id,
                mailbox,
                folder,
                dead,
                owner,
                store::now() + secs,
            )
            .await?)
    }

    /// Gives the lease on a folder up.
    pub async fn mailbox_release(&self, mailbox: &str, folder: &str, owner: &str) -> Result<()> {
        Ok(self
            .store
            .mailbox_release(self.org.id, mailbox, folder, owner)
            .await?)
    }

    /// Moves a folder's checkpoint; `Err(Conflict)` when `owner` no longer
    /// holds the lease (nothing written).
    pub async fn mailbox_checkpoint(
        &self,
        mailbox: &str,
        folder: &str,
        owner: &str,
        uidvalidity: u32,
        last_uid: u32,
    ) -> Result<()> {
        let moved = self
            .store
            .mailbox_checkpoint_set(
                self.org.id,
                mailbox,
                folder,
                owner,
                i64::from(uidvalidity),
                i64::from(last_uid),
                store::now(),
            )
            .await?;
        if moved {
            Ok(())
        } else {
            Err(Error::Conflict(format!(
                "lost the lease on folder {folder:?} of mailbox {mailbox}"
            )))
        }
    }

    /// One folder's state.
    pub async fn mailbox_folder(&self, mailbox: &str, folder: &str) -> Result<FolderState> {
        Ok(self
            .store
            .mailbox_folder(self.org.id, mailbox, folder)
            .await?)
    }

    /// Every folder the organisation's mailboxes have been processed in.
    pub async fn mailbox_folders(&self) -> Result<Vec<FolderState>> {
        Ok(self.store.mailbox_folders(self.org.id).await?)
    }

    /// Records a decryption run in the audit trail.
    pub async fn mailbox_audit_run(&self, mailbox: &str, detail: &str) -> Result<()> {
        let mut tx = self.store.begin().await?;
        tx.audit(
            Some(self.org.id),
            self.actor.as_str(),
            "mailbox.decrypt",
            mailbox,
            detail,
        )
        .await?;
        tx.commit().await?;
        Ok(())
    }
}
