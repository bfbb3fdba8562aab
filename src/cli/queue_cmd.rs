//! `sikkermail queue ...`: what waits, what was done, and the actions.

use std::process::ExitCode;

use clap::Subcommand;
use service::QueueAction;
use store::queue::MessageState;

use super::context::{StoreArgs, date, open};
use super::io::{Fail, usage};

#[derive(Debug, Subcommand)]
pub enum QueueCommand {
    /// Messages waiting (or held), oldest first, under a header line: id,
    /// direction, state (queued: not tried yet; deferred: tried, waiting
    /// for its next attempt; held; done), received, next attempt,
    /// attempts, sender, recipients with their states, note. Nothing at
    /// all when nothing is listed.
    List {
        #[command(flatten)]
        store: StoreArgs,
        /// Also finished messages (delivered, failed, quarantined).
        #[arg(long)]
        all: bool,
        /// At most this many.
        #[arg(long, default_value_t = 1000)]
        limit: i64,
    },
    /// One message: envelope, per-recipient results and errors.
    Show {
        #[command(flatten)]
        store: StoreArgs,
        /// Queue id.
        id: i64,
        /// Print the message itself too (it may be decrypted mail).
        #[arg(long)]
        body: bool,
    },
    /// Try a message now (releases it if held); with --all, every
    /// waiting message (held ones stay held).
    Retry {
        #[command(flatten)]
        store: StoreArgs,
        /// Queue id.
        #[arg(required_unless_present = "all", conflicts_with = "all")]
        id: Option<i64>,
        /// Every waiting message that no attempt is delivering now.
        #[arg(long)]
        all: bool,
    },
    /// Keep a message from being delivered until released.
    Hold {
        #[command(flatten)]
        store: StoreArgs,
        /// Queue id.
        id: i64,
    },
    /// Deliver a held message again.
    Release {
        #[command(flatten)]
        store: StoreArgs,
        /// Queue id.
        id: i64,
    },
    /// Remove a message from the queue (it is not delivered, and no DSN
    /// is sent).
    Delete {
        #[command(flatten)]
        store: StoreArgs,
        /// Queue id.
        id: i64,
    },
}

/// `sikkermail queue ...`.
pub fn queue(cmd: QueueCommand) -> Result<ExitCode, Fail> {
    let (store, id, action) = match cmd {
        QueueCommand::List { store, all, limit } => return list(&store, all, limit),
        QueueCommand::Show { store, id, body } => return show(&store, id, body),
        QueueCommand::Retry {
            store, all: true, ..
        } => return retry_all(&store),
        QueueCommand::Retry { store, id, .. } => (
            store,
            id.ok_or_else(|| usage("give a queue id, or --all"))?,
            QueueAction::Retry,
        ),
        QueueCommand::Hold { store, id } => (store, id, QueueAction::Hold),
        QueueCommand::Release { store, id } => (store, id, QueueAction::Release),
        QueueCommand::Delete { store, id } => (store, id, QueueAction::Delete),
    };
    let ctx = open(&store)?;
    ctx.rt.block_on(ctx.svc.queue_act(id, action))?;
    let done = match action {
        QueueAction::Retry => "due now",
        QueueAction::Hold => "held",
        QueueAction::Release => "released",
        QueueAction::Delete => "deleted",
    };
    outln!("{id}\t{done}");
    Ok(ExitCode::SUCCESS)
}

/// `queue retry --all`: see [`service::Service::queue_retry_all`].
fn retry_all(store: &StoreArgs) -> Result<ExitCode, Fail> {
    let ctx = open(store)?;
    let done = ctx.rt.block_on(ctx.svc.queue_retry_all())?;
    for id in &done.retried {
        outln!("{id}\tdue now");
    }
    for id in &done.busy {
        outln!("{id}\tbeing delivered now: left to that attempt");
    }
    if done.retried.is_empty() && done.busy.is_empty() {
        outln!("nothing waits (held messages stay held: `queue release ID`)");
    }
    Ok(ExitCode::SUCCESS)
}

/// The state column of `queue list`: `queued` (not tried yet), `deferred`
/// (tried, waiting for its next attempt), `held`, `done`.
fn state_word(m: &store::queue::QueueSummary) -> &'static str {
    match m.state {
        MessageState::Active if m.attempts > 0 => "deferred",
        MessageState::Active => "queued",
        MessageState::Held => "held",
        MessageState::Done => "done",
    }
}

fn list(store: &StoreArgs, all: bool, limit: i64) -> Result<ExitCode, Fail> {
    let ctx = open(store)?;
    let now = store::now();
    let items = ctx.rt.block_on(ctx.svc.queue_list(all, limit))?;
    if !items.is_empty() {
        outln!("ID\tDIRECTION\tSTATE\tRECEIVED\tNEXT ATTEMPT\tATTEMPTS\tFROM\tRECIPIENTS\tNOTE");
    }
    for m in items {
        let rcpts: Vec<String> = m
            .recipients
            .iter()
            .map(|(a, s)| format!("{a}={}", s.as_str()))
            .collect();
        let from = if m.mail_from.is_empty() {
            "<>"
        } else {
            &m.mail_from
        };
        let next = match m.state {
            MessageState::Done => "-".to_string(),
            MessageState::Held => "when released".to_string(),
            MessageState::Active if m.next_attempt <= now => "now".to_string(),
            MessageState::Active => date(m.next_attempt),
        };
        outln!(
            "{}\t{}\t{}\t{}\t{next}\t{}\t{}\t{}\t{}",
            m.id,
            m.direction.as_str(),
            state_word(&m),
            date(m.received_at),
            m.attempts,
            from,
            rcpts.join(","),
            m.note.as_deref().unwrap_or("")
        );
    }
    Ok(ExitCode::SUCCESS)
}

fn show(store: &StoreArgs, id: i64, body: bool) -> Result<ExitCode, Fail> {
    let ctx = open(store)?;
    let m = ctx.rt.block_on(ctx.svc.queue_show(id))?;
    outln!("id:           {}", m.id);
    outln!("direction:    {}", m.direction.as_str());
    outln!("state:        {}", m.state.as_str());
    outln!(
        "from:         {}",
        if m.mail_from.is_empty() {
            "<>"
        } else {
            &m.mail_from
        }
    );
    outln!("client:       {}", m.client);
    outln!("received:     {}", date(m.received_at));
    outln!("next attempt: {}", date(m.next_attempt));
    outln!("attempts:     {}", m.attempts);
    outln!("size:         {}", m.size);
    if let Some(e) = &m.envid {
        outln!("envid:        {e}");
    }
    if let Some(r) = &m.ret {
        outln!("ret:          {r}");
    }
    if let Some(n) = &m.note {
        outln!("note:         {n}");
    }
    if let (Some(o), Some(u)) = (&m.lease_owner, m.lease_until) {
        outln!("lease:        {o} until {}", date(u));
    }
    for r in &m.recipients {
        outln!(
            "recipient:    {}\t{}\tattempts {}\t{}",
            r.address,
            r.state.as_str(),
            r.attempts,
            r.last_error.as_deref().unwrap_or("")
        );
    }
    if body {
        outln!();
        use std::io::Write;
        let _ = std::io::stdout().write_all(&m.body);
    }
    Ok(ExitCode::SUCCESS)
}
