//! The sikkermail SMTP gateway: `sikkermail serve`.
//!
//! A message's way: [`smtp::session`] receives it ->
//! [`engine::Gateway::enqueue`] makes it durable in the store's queue (group
//! commit) -> `250` -> a [`worker`] claims it with a lease -> [`process`]
//! (inbound: decrypt, verify, harvest; outbound: sign, encrypt as the
//! policy says) -> [`deliver`] (next hop over SMTP, or a Maildir) -> the
//! per-recipient result, and a DSN for failures, back in the store.
//!
//! Map of the crate:
//! - [`smtp`]: the sans-IO protocol ([`smtp::Receiver`], [`smtp::Request`],
//!   [`smtp::Reply`]) and the session over a stream ([`smtp::session`]).
//! - [`config`]: the TOML file and `SIKKERMAIL_*` overrides, every error at once.
//! - [`engine`]: shared state, cached keys, the group-commit writer.
//! - [`process`]: inbound and outbound processing, pure.
//! - [`worker`]: claims, retries with backoff, DSNs, expiry.
//! - [`deliver`]: the SMTP client, Maildir, DSN messages.
//! - [`server`]: listeners, STARTTLS certificate, `/metrics`, `/healthz`, stop.
//! - [`metrics`]: counters and histograms.
//! - [`imap`]: shared IMAP mailboxes decrypted in place (`sikkermail
//!   mailbox decrypt`, and `serve`'s watchers).

pub mod config;
pub mod deliver;
pub mod engine;
pub mod imap;
pub mod metrics;
pub mod process;
pub mod revocation;
pub mod server;
pub mod smtp;
pub mod worker;

use std::sync::Arc;

pub use config::{Config, ConfigError};
pub use server::{Bound, Running};

/// Why the gateway could not start.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Starting failed (a port in use, the store, the keys, TLS files).
    #[error("{0}")]
    Start(String),
    /// The policy file has errors (all of them).
    #[error("policy {file}:\n{}", errors.join("\n"))]
    Policy {
        /// The file.
        file: String,
        /// Every error.
        errors: Vec<String>,
    },
}

/// Shorthand.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What [`start`] did on the way.
#[derive(Debug, Default)]
pub struct StartNotes {
    /// The data directory was created and initialised (organisation, CA).
    pub initialised: bool,
    /// The policy file in use, if any.
    pub policy: Option<std::path::PathBuf>,
}

/// Starts the gateway: initialises the data directory when it is new (as
/// `sikkermail init` would, with the configured organisation name and
/// CVR), opens the organisation, reads the policy, binds the listeners and
/// starts the workers.
pub async fn start(cfg: Config) -> Result<(Running, StartNotes)> {
    start_with(cfg, None).await
}

/// Makes the HTTP application served beside `/metrics` and `/healthz` (the
/// admin API and pages), given the installation's service and the
/// addresses bound.
pub type MakeApp = Box<dyn FnOnce(Arc<service::Service>, &Bound) -> axum::Router + Send>;

/// [`start`], serving `make_app`'s routes on the HTTP listener too.
pub async fn start_with(cfg: Config, make_app: Option<MakeApp>) -> Result<(Running, StartNotes)> {
    let mut notes = StartNotes::default();
    let loc = service::Location {
        data_dir: cfg.data_dir.clone(),
        database_url: cfg.database_url.clone(),
    };
    let actor = service::Actor::named("serve");
    let svc = match service::Service::open_server(&loc, actor.clone()).await {
        Ok(s) => s,
        Err(first) => {
            let fresh = if cfg.database_url.is_none() {
                !cfg.data_dir.join("sikkermail.db").exists()
            } else {
                first.to_string().contains("no organisation")
            };
            if !fresh {
                return Err(Error::Start(first.to_string()));
            }
            if let Some(why) = &cfg.refuse_fresh {
                return Err(Error::Start(why.clone()));
            }
            let req = service::InitRequest {
                org_name: ca::DisplayName::parse("organisation name", &cfg.org_name)
                    .map_err(|e| Error::Start(format!("[organisation] name: {e}")))?,
                cvr: ca::Cvr::parse(&cfg.org_cvr)
                    .map_err(|e| Error::Start(format!("[organisation] cvr: {e}")))?,
                root_name: None,
                issuing_name: None,
                policy: ca::IssuancePolicy::default(),
            };
            match service::init(&loc, req, actor.clone(), || {}).await {
                Ok(_) => notes.initialised = true,
                // Another process initialised it first: fine.
                Err(service::Error::Conflict(_)) => {}
                Err(e) => return Err(Error::Start(format!("initialising: {e}"))),
            }
            service::Service::open_server(&loc, actor)
                .await
                .map_err(|e| Error::Start(e.to_string()))?
        }
    };
    let (policy, policy_file) = load_policy(&cfg)?;
    notes.policy = policy_file;
    // Certificates the internal CA issues name this gateway's CRL and OCSP
    // addresses (`/crl/<org>.crl`, `/ocsp/<org>`) under the public URL.
    if let Some(u) = &cfg.public_url
        && svc
            .store()
            .ca_state(svc.org().id)
            .await
            .is_ok_and(|s| s.is_some())
    {
        match svc.set_public_url(u).await {
            Ok(true) => {
                tracing::info!(url = %u, "certificates issued from now on name this gateway's CRL and OCSP addresses")
            }
            Ok(false) => {}
            Err(e) => return Err(Error::Start(format!("public_url: {e}"))),
        }
    }
    let app = match make_app {
        Some(make) => {
            let api_svc = service::Service::open_server(&loc, service::Actor::named("api"))
                .await
                .map_err(|e| Error::Start(e.to_string()))?;
            Some((Arc::new(api_svc), make))
        }
        None => None,
    };
    let gw = engine::Gateway::new(cfg, svc, policy).await?;
    let running = Running::start(Arc::clone(&gw), app).await?;
    Ok((running, notes))
}

/// The policy file of `cfg` (`policy`, or `policy.toml` in the data
/// directory when it exists) parsed, with its path; the built-in policy
/// when there is none.
pub fn load_policy(cfg: &Config) -> Result<(policies::Policy, Option<std::path::PathBuf>)> {
    let policy_file = cfg.policy_file();
    let policy = match &policy_file {
        None => policies::Policy::default(),
        Some(p) => {
            let text = std::fs::read_to_string(p)
                .map_err(|e| Error::Start(format!("policy {}: {e}", p.display())))?;
            policies::Policy::parse(&text).map_err(|errs| Error::Policy {
                file: p.display().to_string(),
                errors: errs.iter().map(|e| e.to_string()).collect(),
            })?
        }
    };
    Ok((policy, policy_file))
}
