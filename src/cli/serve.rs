//! `sikkermail serve`: the gateway. Reads the configuration, sets up logs,
//! starts the gateway, prints what it listens on, and stops on SIGTERM or
//! Ctrl-C.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Args;
use gateway::Config;

use super::io::Fail;

/// `serve` options. Everything else is in the configuration file or the
/// environment (`SIKKERMAIL_<SECTION>_<KEY>`).
#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Configuration file (TOML). Without one the embedded defaults apply:
    /// ./sikkermail-data, loopback ports 2525, 2587 and 8080.
    #[arg(long, value_name = "FILE", env = "SIKKERMAIL_CONFIG")]
    config: Option<PathBuf>,
    /// Check the configuration (and the policy file) and exit.
    #[arg(long)]
    check: bool,
}

/// Reads the configuration file and the environment: every error at once.
pub fn load_config(file: Option<&PathBuf>) -> Result<Config, Fail> {
    let text = match file {
        Some(p) => Some((
            p.display().to_string(),
            std::fs::read_to_string(p).map_err(|e| Fail {
                code: 2,
                msg: format!("cannot read the configuration {}: {e}", p.display()),
            })?,
        )),
        None => None,
    };
    let env: Vec<(String, String)> = std::env::vars().collect();
    Config::load(text.as_ref().map(|(n, t)| (n.as_str(), t.as_str())), &env).map_err(|errs| {
        let lines: Vec<String> = errs.iter().map(|e| format!("  {e}")).collect();
        Fail {
            code: 2,
            msg: format!(
                "the configuration has {} error(s):\n{}",
                errs.len(),
                lines.join("\n")
            ),
        }
    })
}

/// `sikkermail serve`.
pub fn serve(a: ServeArgs) -> Result<ExitCode, Fail> {
    let cfg = load_config(a.config.as_ref())?;
    if a.check {
        let default_policy = cfg.data_dir.join("policy.toml");
        let policy = cfg
            .policy
            .clone()
            .or_else(|| default_policy.exists().then_some(default_policy));
        if let Some(p) = &policy {
            let text = std::fs::read_to_string(p).map_err(|e| Fail {
                code: 2,
                msg: format!("policy {}: {e}", p.display()),
            })?;
            if let Err(errs) = policies::Policy::parse(&text) {
                let lines: Vec<String> = errs.iter().map(|e| format!("  {e}")).collect();
                return Err(Fail {
                    code: 2,
                    msg: format!("policy {}:\n{}", p.display(), lines.join("\n")),
                });
            }
        }
        outln!("configuration OK");
        return Ok(ExitCode::SUCCESS);
    }
    init_logs(&cfg);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| Fail {
            code: 1,
            msg: format!("cannot start the runtime: {e}"),
        })?;
    rt.block_on(async move {
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
        outln!("sikkermail serve: data directory {}", data_dir.display());
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
        wait_for_stop().await;
        outln!("sikkermail serve: stopping");
        running.shutdown(Duration::from_secs(8)).await;
        outln!("sikkermail serve: stopped; the queue is kept");
        Ok(ExitCode::SUCCESS)
    })
}

async fn wait_for_stop() {
    use tokio::signal::unix::{SignalKind, signal};
    match signal(SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = term.recv() => {}
                _ = tokio::signal::ctrl_c() => {}
            }
        }
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

fn init_logs(cfg: &Config) {
    use tracing_subscriber::fmt;
    let level = match cfg.log_level.as_str() {
        "error" => tracing::Level::ERROR,
        "warn" => tracing::Level::WARN,
        "debug" => tracing::Level::DEBUG,
        "trace" => tracing::Level::TRACE,
        _ => tracing::Level::INFO,
    };
    let builder = fmt()
        .with_max_level(level)
        .with_writer(std::io::stderr)
        .with_target(false);
    let _ = if cfg.log_json {
        builder.json().try_init()
    } else {
        builder.with_ansi(false).try_init()
    };
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
