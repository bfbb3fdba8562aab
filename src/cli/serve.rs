//! `sikkermail serve`: the gateway. Reads the configuration (the same one
//! every command reads), sets up logs, starts the gateway, prints what it
//! uses and listens on, re-reads what it can on SIGHUP, and stops on
//! SIGTERM or Ctrl-C.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use clap::Args;
use gateway::Config;

use super::context::{DEFAULT_DATA_DIR, Resolved, StoreArgs};
use super::io::Fail;

/// `serve` options. Everything else is in the configuration file or the
/// environment (`SIKKERMAIL_<SECTION>_<KEY>`).
#[derive(Debug, Args)]
pub struct ServeArgs {
    /// The configuration (--config; without one the embedded defaults:
    /// ./sikkermail-data, loopback ports 2525, 2587 and 8080), the data
    /// directory and the database.
    #[command(flatten)]
    store: StoreArgs,
    /// Load everything `serve` loads (configuration, policy, trust
    /// anchors, TLS certificate and key, mailbox CA files, the database
    /// and the master key, the listen ports), report every error, exit 2
    /// if any, and do not start.
    #[arg(long)]
    check: bool,
}

/// Where else an installation may be: the built-in data directory, the
/// package's, and the configuration's (when `--data-dir` overrides it).
const OTHER_DATA_DIRS: &[&str] = &[DEFAULT_DATA_DIR, "/var/lib/sikkermail"];

/// Why `serve` must not make a fresh installation for `res` (it only ever
/// makes a test organisation, for a first try): the configuration names
/// an organisation, or an installation exists in another data directory,
/// so an empty one here is a mistake in the configuration or the flags.
fn fresh_refusal(res: &Resolved) -> Option<String> {
    let cfg = &res.cfg;
    let store = match &cfg.database_url {
        Some(u) => format!("the database {}", super::context::hide_password(u)),
        None => format!("the data directory {}", cfg.data_dir.display()),
    };
    let file = res
        .file
        .as_ref()
        .map(|(p, _)| p.display().to_string())
        .unwrap_or_else(|| "FILE".into());
    if cfg.org_named {
        return Some(format!(
            "{store} holds no installation, and the configuration {file} names the organisation {:?} (CVR {}): `serve` makes only test installations; make this one with `sikkermail init --config {file}` (it takes the organisation from the configuration), or point data_dir (database_url) at the one that exists",
            cfg.org_name, cfg.org_cvr
        ));
    }
    let same = |a: &Path, b: &Path| {
        let norm = |p: &Path| {
            std::fs::canonicalize(p)
                .or_else(|_| std::path::absolute(p))
                .unwrap_or_else(|_| p.to_path_buf())
        };
        norm(a) == norm(b)
    };
    let others = OTHER_DATA_DIRS
        .iter()
        .map(PathBuf::from)
        .chain(std::iter::once(res.configured_data_dir.clone()));
    for other in others {
        if !same(&other, &cfg.data_dir) && other.join("sikkermail.db").exists() {
            let other = std::path::absolute(&other).unwrap_or(other);
            return Some(format!(
                "{store} holds no installation, but {} does: `serve` will not make a second one beside it; use --data-dir {} (or data_dir in the configuration), or move {} away to start afresh",
                other.display(),
                other.display(),
                other.display()
            ));
        }
    }
    None
}

/// `sikkermail serve`.
pub fn serve(a: ServeArgs) -> Result<ExitCode, Fail> {
    let mut res = a.store.resolve()?;
    if a.check {
        return check(&res);
    }
    res.cfg.refuse_fresh = fresh_refusal(&res);
    let logs = init_logs(&res.cfg);
    outln!("sikkermail serve: {}", res.describe());
    let cfg = res.cfg.clone();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| Fail {
            code: 1,
            msg: format!("cannot start the runtime: {e}"),
        })?;
    rt.block_on(async move {
        // From here on SIGHUP no longer ends the process (its default).
        let mut signals = Signals::new();
        let data_dir = cfg.data_dir.clone();
        let (secure_cookie, public_url) = (cfg.secure_cookie, cfg.public_url.clone());
        let (relay, from) = (cfg.admin_mail_relay.clone(), cfg.admin_mail_from.clone());
        let applications = cfg.admin_applications;
        let make_app: gateway::MakeApp = Box::new(move |svc, bound| {
            let (host, port) = relay.unwrap_or_else(|| {
                let ip = bound.outbound.ip();
                let ip = if ip.is_unspecified() {
                    "127.0.0.1".to_string()
                } else {
                    ip.to_string()
                };
                (ip, bound.outbound.port())
            });
            let api_cfg = admin_api::ApiConfig {
                secure_cookie,
                public_url: public_url.unwrap_or_else(|| format!("http://{}", bound.http)),
                mail: Some(admin_api::MailConfig { host, port, from }),
                applications,
            };
            admin_api::router_with(svc, api_cfg)
        });
        let (running, notes) = gateway::start_with(cfg, Some(make_app))
            .await
            .map_err(|e| Fail {
                code: 1,
                msg: e.to_string(),
            })?;
        let c = &running.gw.cfg;
        if notes.initialised {
            outln!(
                "sikkermail: created {} (organisation {:?}, CVR {}, internal CA); back up {}",
                data_dir.display(),
                c.org_name,
                c.org_cvr,
                data_dir.join("master.key").display()
            );
        }
        let inbound_to = match &c.inbound.next_hop {
            Some((h, p)) => format!("next hop {h}:{p}"),
            None => format!("Maildir {}", running.gw.maildir_root().display()),
        };
        let outbound_to = match &c.outbound.relay {
            Some((h, p)) => format!("relay {h}:{p}"),
            None => "no relay configured (mail waits in the queue)".into(),
        };
        let b = &running.bound;
        outln!("  inbound SMTP   {} -> {inbound_to}", b.inbound);
        outln!("  outbound SMTP  {} -> {outbound_to}", b.outbound);
        outln!("  HTTP           http://{}/metrics  /healthz", b.http);
        let public_url = c
            .public_url
            .clone()
            .unwrap_or_else(|| format!("http://{}", b.http));
        outln!("  admin          {public_url}/admin/  (API {public_url}/api/v1/)");
        bootstrap_link(&running.gw.svc, &data_dir, &public_url).await;
        match &notes.policy {
            Some(p) => outln!("  policy         {}", p.display()),
            None => outln!("  policy         built-in defaults (no policy.toml)"),
        }
        outln!("ready");
        let why = loop {
            match signals.next().await {
                Signal::Reload => reload(&a.store, &running, &logs).await,
                Signal::Stop(why) => break why,
            }
        };
        outln!("sikkermail serve: stopping ({why})");
        running.shutdown(Duration::from_secs(8)).await;
        outln!("sikkermail serve: stopped ({why}); the queue is kept");
        Ok(ExitCode::SUCCESS)
    })
}

/// SIGHUP (`systemctl reload`): the configuration is read again and the
/// policy file, the trust anchors, the TLS certificate and key and the log
/// level are replaced; each that does not load is refused (an ERROR line)
/// and the one in use kept. Other changes wait for a restart (a WARN line
/// names them).
async fn reload(args: &StoreArgs, running: &gateway::Running, logs: &LogHandle) {
    tracing::info!("SIGHUP: reading the configuration again");
    let new = match args.resolve() {
        Ok(r) => r.cfg,
        Err(e) => {
            tracing::error!(
                "reload refused, everything in use is kept: {}",
                e.msg.replace('\n', " ")
            );
            return;
        }
    };
    let gw = &running.gw;
    let restart = gw.cfg.needs_restart(&new);
    if !restart.is_empty() {
        tracing::warn!(
            changed = %restart.join(", "),
            "these changes need a restart; the values in use are kept"
        );
    }
    // What needs a restart keeps its running value, so nothing is read
    // from a data directory (policy.toml, tls/) the rest does not use.
    let mut new = new;
    new.data_dir = gw.cfg.data_dir.clone();
    new.database_url = gw.cfg.database_url.clone();
    new.hostname = gw.cfg.hostname.clone();
    let (done, errors) = gw.reload(&new).await;
    for e in &errors {
        // One journal line each.
        tracing::error!("reload: {}", e.replace('\n', "; "));
    }
    logs.set_level(&new.log_level);
    tracing::info!(
        reloaded = %done.join(", "),
        log_level = %new.log_level,
        errors = errors.len(),
        "reloaded"
    );
}

/// What a signal asks for.
enum Signal {
    /// SIGHUP.
    Reload,
    /// SIGTERM or SIGINT, named.
    Stop(&'static str),
}

/// The signals `serve` listens for, registered once (none is lost
/// between two waits).
struct Signals {
    term: Option<tokio::signal::unix::Signal>,
    hup: Option<tokio::signal::unix::Signal>,
    int: Option<tokio::signal::unix::Signal>,
}

impl Signals {
    fn new() -> Signals {
        use tokio::signal::unix::{SignalKind, signal};
        Signals {
            term: signal(SignalKind::terminate()).ok(),
            hup: signal(SignalKind::hangup()).ok(),
            int: signal(SignalKind::interrupt()).ok(),
        }
    }

    async fn next(&mut self) -> Signal {
        async fn recv(s: &mut Option<tokio::signal::unix::Signal>) {
            match s {
                Some(s) => {
                    s.recv().await;
                }
                None => std::future::pending().await,
            }
        }
        tokio::select! {
            _ = recv(&mut self.term) => Signal::Stop("SIGTERM"),
            _ = recv(&mut self.hup) => Signal::Reload,
            _ = recv(&mut self.int) => Signal::Stop("SIGINT"),
        }
    }
}

/// How long `serve --check` waits for the database (the store's pool
/// itself waits two minutes, for a server starting beside its database).
const STORE_TIMEOUT: Duration = Duration::from_secs(10);

/// The store's schema against this build's, read without migrating:
/// `Some(note)` when the start would migrate it (or the database is too
/// new: an error in `errors`), `None` when opening it changes nothing.
fn pending_migration(res: &Resolved, errors: &mut Vec<String>) -> Option<String> {
    let url = res.location().url();
    let peek = super::context::runtime().and_then(|rt| {
        rt.block_on(async { tokio::time::timeout(STORE_TIMEOUT, store::schema::peek(&url)).await })
            .map_err(|_| {
                super::io::usage(format!(
                    "the database did not answer within {} s",
                    STORE_TIMEOUT.as_secs()
                ))
            })?
            .map_err(|e| super::io::usage(e.to_string()))
    });
    match peek {
        Ok((Some(db), known)) if db > known => {
            errors.push(format!("store: {}", store::schema::too_new(db, known)));
            Some(String::new())
        }
        Ok((Some(db), known)) if db < known => Some(format!(
            "the database is at schema {db}: serve brings it to {known} when it starts (make a \
             backup first; a database is never migrated back)"
        )),
        // Up to date, or never migrated (a fresh database): opening tells.
        Ok(_) => None,
        Err(e) => {
            errors.push(format!("store: {}", e.msg));
            Some(String::new())
        }
    }
}

/// `serve --check`: everything `serve` loads, every error at once.
fn check(res: &Resolved) -> Result<ExitCode, Fail> {
    let cfg = &res.cfg;
    let mut errors: Vec<String> = Vec::new();
    if let Err(e) = gateway::load_policy(cfg) {
        errors.push(e.to_string().replace(":\n", ": ").replace('\n', "; "));
    }
    for f in &cfg.inbound.trust_anchors {
        match gateway::engine::read_certs(f) {
            Ok(c) if c.is_empty() => errors.push(format!(
                "[inbound] trust_anchors {}: no certificate in it",
                f.display()
            )),
            Ok(_) => {}
            Err(e) => errors.push(format!("[inbound] {e}")),
        }
    }
    // The self-signed pair is made at the first start: checked only once
    // it exists (--check writes nothing).
    let self_signed = cfg.data_dir.join("tls/cert.pem");
    let mut tls_readable = true;
    if let Some((cert, key)) = &cfg.tls {
        let c = std::fs::read(cert)
            .map_err(|e| e.to_string())
            .and_then(|b| {
                openssl::x509::X509::from_pem(&b).map_err(|_| "no PEM certificate".into())
            });
        let k = std::fs::read(key).map_err(|e| e.to_string()).and_then(|b| {
            openssl::pkey::PKey::private_key_from_pem(&b).map_err(|_| "no PEM private key".into())
        });
        if let Err(e) = &c {
            errors.push(format!("[tls] cert {}: {e}", cert.display()));
        }
        if let Err(e) = &k {
            errors.push(format!("[tls] key {}: {e}", key.display()));
        }
        match (c, k) {
            (Ok(c), Ok(k)) if !c.public_key().is_ok_and(|p| p.public_eq(&k)) => {
                errors.push(format!(
                    "[tls] key {} does not match the certificate {}",
                    key.display(),
                    cert.display()
                ));
                tls_readable = false;
            }
            (Ok(_), Ok(_)) => {}
            _ => tls_readable = false,
        }
    }
    if tls_readable
        && (cfg.tls.is_some() || self_signed.exists())
        && let Err(e) = gateway::server::tls_acceptor(cfg)
    {
        errors.push(format!("[tls] {e}"));
    }
    let ca_files = [
        (
            "[inbound] next_hop_ca_file".to_string(),
            &cfg.inbound.next_hop_ca_file,
        ),
        (
            "[outbound] relay_ca_file".to_string(),
            &cfg.outbound.relay_ca_file,
        ),
    ];
    let mailbox_cas = cfg
        .mailboxes
        .iter()
        .map(|mb| (format!("[mailbox.{}] ca", mb.name), &mb.ca));
    for (what, ca) in ca_files.into_iter().chain(mailbox_cas) {
        let Some(ca) = ca else { continue };
        let read = std::fs::read(ca)
            .map_err(|e| e.to_string())
            .and_then(|b| openssl::x509::X509::stack_from_pem(&b).map_err(|e| e.to_string()));
        match read {
            Ok(c) if c.is_empty() => {
                errors.push(format!("{what} {}: no PEM certificate in it", ca.display()))
            }
            Ok(_) => {}
            Err(e) => errors.push(format!("{what} {}: {e}", ca.display())),
        }
    }
    // The store: reachable, initialised, its master key readable. An
    // empty one is made at start unless that would be refused.
    let fresh = match cfg.database_url {
        None => !cfg.data_dir.join("sikkermail.db").exists(),
        Some(_) => false,
    };
    let mut note = None;
    if fresh {
        match fresh_refusal(res) {
            Some(why) => errors.push(why),
            None => {
                note = Some(format!(
                    "{} is made at start (a test organisation)",
                    cfg.data_dir.display()
                ))
            }
        }
    } else if let Some(pending) = pending_migration(res, &mut errors) {
        // Opening would migrate: --check changes nothing, so it says what
        // the start will do and checks the master key alone.
        note = Some(pending).filter(|n| !n.is_empty());
        if let Err(e) = store::seal::MasterKeys::load(&cfg.data_dir) {
            errors.push(format!("master key: {e}"));
        }
    } else {
        let opened = super::context::runtime().and_then(|rt| {
            let loc = res.location();
            let open = service::Service::open(&loc, service::Actor::from_process());
            match rt.block_on(async { tokio::time::timeout(STORE_TIMEOUT, open).await }) {
                Ok(r) => r.map(drop).map_err(Fail::from),
                Err(_) => Err(super::io::usage(format!(
                    "the database did not answer within {} s",
                    STORE_TIMEOUT.as_secs()
                ))),
            }
        });
        match opened {
            Ok(()) => {}
            Err(e) if cfg.database_url.is_some() && e.msg.contains("no organisation") => {
                match fresh_refusal(res) {
                    Some(why) => errors.push(why),
                    None => note = Some("the database is initialised at start".into()),
                }
            }
            Err(e) => errors.push(format!("store: {}", e.msg)),
        }
    }
    // A `serve` running on this data directory holds the addresses (an
    // upgrade's check while it runs): not checked then. Bound together
    // otherwise, so one port named twice fails too; released at once.
    let lock = cfg.data_dir.join("serve.lock");
    let running = lock.exists()
        && matches!(
            store::DirLock::try_acquire_file(&lock, store::LockMode::Shared),
            Ok(None)
        );
    let mut bound = Vec::new();
    for (addr, what) in [
        (cfg.inbound.listen, "inbound SMTP"),
        (cfg.outbound.listen, "outbound SMTP"),
        (cfg.http_listen, "HTTP"),
    ] {
        if running {
            break;
        }
        match std::net::TcpListener::bind(addr) {
            Ok(l) => bound.push(l),
            Err(e) if addr.port() < 1024 && e.kind() == std::io::ErrorKind::PermissionDenied => {
                errors.push(format!(
                    "cannot listen on {addr} ({what}): {e}: a port below 1024 needs \
                     CAP_NET_BIND_SERVICE (under systemd: the drop-in low-ports.conf in \
                     /usr/share/doc/sikkermail/examples)"
                ))
            }
            Err(e) => errors.push(format!("cannot listen on {addr} ({what}): {e}")),
        }
    }
    drop(bound);
    if running {
        note = Some(
            note.map_or(String::new(), |n| format!("{n}; "))
                + "a `serve` is running on this data directory: the listen addresses are its, not checked",
        );
    }
    if !errors.is_empty() {
        let lines: Vec<String> = errors.iter().map(|e| format!("  {e}")).collect();
        return Err(Fail {
            code: 2,
            msg: format!(
                "{} error(s) ({}):\n{}",
                errors.len(),
                res.describe(),
                lines.join("\n")
            ),
        });
    }
    outln!("configuration OK: {}", res.describe());
    if let Some(n) = note {
        outln!("  {n}");
    }
    Ok(ExitCode::SUCCESS)
}

/// Changes the log level of a running `serve` (SIGHUP).
struct LogHandle(
    Option<
        tracing_subscriber::reload::Handle<
            tracing_subscriber::filter::LevelFilter,
            tracing_subscriber::Registry,
        >,
    >,
);

impl LogHandle {
    fn set_level(&self, level: &str) {
        if let Some(h) = &self.0 {
            let _ = h.modify(|f| *f = level_filter(level));
        }
    }
}

fn level_filter(level: &str) -> tracing_subscriber::filter::LevelFilter {
    use tracing_subscriber::filter::LevelFilter;
    match level {
        "error" => LevelFilter::ERROR,
        "warn" => LevelFilter::WARN,
        "debug" => LevelFilter::DEBUG,
        "trace" => LevelFilter::TRACE,
        _ => LevelFilter::INFO,
    }
}

/// True when systemd started this process with its output going to the
/// journal (`JOURNAL_STREAM`, or `INVOCATION_ID` for any unit).
fn under_systemd() -> bool {
    ["JOURNAL_STREAM", "INVOCATION_ID"]
        .iter()
        .any(|v| std::env::var_os(v).is_some_and(|x| !x.is_empty()))
}

/// Logs to standard error: text, JSON lines, or under systemd lines the
/// journal reads as they are meant (a `<N>` syslog priority prefix per
/// sd-daemon(3), no timestamp: the journal keeps its own; no colours).
fn init_logs(cfg: &Config) -> LogHandle {
    use tracing_subscriber::layer::SubscriberExt as _;
    use tracing_subscriber::util::SubscriberInitExt as _;
    use tracing_subscriber::{Layer, fmt, reload};
    type Boxed = Box<
        dyn Layer<
                tracing_subscriber::layer::Layered<
                    reload::Layer<
                        tracing_subscriber::filter::LevelFilter,
                        tracing_subscriber::Registry,
                    >,
                    tracing_subscriber::Registry,
                >,
            > + Send
            + Sync,
    >;
    let (filter, handle) = reload::Layer::new(level_filter(&cfg.log_level));
    let base = fmt::layer()
        .with_writer(std::io::stderr)
        .with_target(false)
        .with_ansi(false);
    let layer: Boxed = if cfg.log_json {
        Box::new(base.json())
    } else if under_systemd() {
        Box::new(base.event_format(Journald))
    } else {
        Box::new(base)
    };
    match tracing_subscriber::registry()
        .with(filter)
        .with(layer)
        .try_init()
    {
        Ok(()) => LogHandle(Some(handle)),
        Err(_) => LogHandle(None),
    }
}

/// One journal line per event: `<3>` error, `<4>` warning, `<6>` info,
/// `<7>` debug and trace, then the message and its fields.
struct Journald;

impl<S, N> tracing_subscriber::fmt::FormatEvent<S, N> for Journald
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
    N: for<'a> tracing_subscriber::fmt::FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &tracing_subscriber::fmt::FmtContext<'_, S, N>,
        mut w: tracing_subscriber::fmt::format::Writer<'_>,
        event: &tracing::Event<'_>,
    ) -> std::fmt::Result {
        let prio = match *event.metadata().level() {
            tracing::Level::ERROR => 3,
            tracing::Level::WARN => 4,
            tracing::Level::INFO => 6,
            _ => 7,
        };
        write!(w, "<{prio}>")?;
        tracing_subscriber::fmt::FormatFields::format_fields(ctx, w.by_ref(), event)?;
        writeln!(w)
    }
}

/// The one-time link that creates the first administrator: a secret, so it
/// is never printed where logs keep it. It is made once (while no
/// administrator exists) and kept in `<data_dir>/bootstrap-link` (0600)
/// until used; on a terminal it is also printed when made. `sikkermail
/// admin bootstrap` makes a new one on demand.
async fn bootstrap_link(svc: &service::Service, data_dir: &std::path::Path, public_url: &str) {
    use std::io::IsTerminal;
    let file = data_dir.join("bootstrap-link");
    let kept = std::fs::read_to_string(&file).ok();
    let kept_token = kept
        .as_deref()
        .and_then(|l| l.trim().rsplit('/').next())
        .filter(|t| !t.is_empty());
    if let Some(t) = kept_token
        && svc.bootstrap_valid(t).await.unwrap_or(false)
    {
        outln!(
            "  no administrator yet: the one-time bootstrap link is in {}",
            file.display()
        );
        return;
    }
    match svc.bootstrap_token().await {
        Ok(Some(token)) => {
            let link = format!("{public_url}/bootstrap/{token}");
            let written = super::io::create_private(&file).and_then(|mut f| {
                std::io::Write::write_all(&mut f, format!("{link}\n").as_bytes())
            });
            if let Err(e) = written {
                errln!("sikkermail serve: cannot write {}: {e}", file.display());
            }
            outln!(
                "  no administrator yet: the one-time bootstrap link (7 days) is in {}",
                file.display()
            );
            if std::io::stdout().is_terminal() {
                outln!("  bootstrap      {link}");
            }
        }
        Ok(None) => {
            let _ = std::fs::remove_file(&file);
        }
        Err(e) => errln!("sikkermail serve: no bootstrap link: {e}"),
    }
}
