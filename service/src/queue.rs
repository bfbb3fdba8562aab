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

/// What [`Service::queue_retry_all`] did.
#[derive(Debug, Default)]
pub struct RetriedAll {
    /// Messages made due now.
    pub retried: Vec<QueueId>,
    /// Messages an attempt is delivering right now: left to it.
    pub busy: Vec<QueueId>,
}

impl Service {
    /// Makes every waiting (active, not being delivered) message due now,
    /// as `queue retry` does one; held messages stay held (release them
    /// one by one). One audit entry, `queue.retry`, subject `queue all`,
    /// naming the messages; nothing is audited when nothing waited.
    pub async fn queue_retry_all(&self) -> Result<RetriedAll> {
        let org = self.org.id;
        let mut tx = self.store.begin().await?;
        let (retried, busy) = tx.queue_retry_all(org, crate::now()).await?;
        if !retried.is_empty() {
            let ids: Vec<String> = retried.iter().map(|i| i.to_string()).collect();
            tx.audit(
                Some(org),
                self.actor.as_str(),
                QueueAction::Retry.name(),
                "queue all",
                &format!("messages={}", ids.join(",")),
            )
            .await?;
        }
        tx.commit().await?;
        Ok(RetriedAll { retried, busy })
    }
}
