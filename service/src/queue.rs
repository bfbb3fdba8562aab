//! The mail queue as administrators see it: list, show, and the actions
//! (retry, hold, release, delete), each audited in its own transaction.

use store::queue::{QueueDetail, QueueId, QueueSummary};

use crate::{Result, Service};

/// A queue action.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QueueAction {
    /// Try now.
    Retry,
    /// Never deliver until released.
    Hold,
    /// Deliver again.
    Release,
    /// Remove the message.
    Delete,
}

impl QueueAction {
    fn name(self) -> &'static str {
        match self {
            QueueAction::Retry => "queue.retry",
            QueueAction::Hold => "queue.hold",
            QueueAction::Release => "queue.release",
            QueueAction::Delete => "queue.delete",
        }
    }
}

impl Service {
    /// Messages in the queue, oldest first; `all` includes finished ones
    /// (delivered, failed, quarantined).
    pub async fn queue_list(&self, all: bool, limit: i64) -> Result<Vec<QueueSummary>> {
        Ok(self.store.queue_list(self.org.id, all, limit).await?)
    }

    /// One message with its recipients and body.
    pub async fn queue_show(&self, id: QueueId) -> Result<QueueDetail> {
        Ok(self.store.queue_show(self.org.id, id).await?)
    }

    /// Retries, holds, releases or deletes message `id`, with its audit
    /// entry, all or nothing.
    pub async fn queue_act(&self, id: QueueId, action: QueueAction) -> Result<()> {
        let org = self.org.id;
        let mut tx = self.store.begin().await?;
        match action {
            QueueAction::Retry => tx.queue_retry(org, id, crate::now()).await?,
            QueueAction::Hold => tx.queue_hold(org, id).await?,
            QueueAction::Release => tx.queue_release(org, id, crate::now()).await?,
            QueueAction::Delete => tx.queue_delete(org, id).await?,
        }
        tx.audit(
            Some(org),
            self.actor.as_str(),
            action.name(),
            &format!("queue {id}"),
            "",
        )
        .await?;
        tx.commit().await?;
        Ok(())
    }
}
