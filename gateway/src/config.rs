//! The typed configuration of `sikkermail serve`: one TOML file, every key
//! overridable from the environment as `SIKKERMAIL_<SECTION>_<KEY>`
//! (`SIKKERMAIL_INBOUND_NEXT_HOP=127.0.0.1:2526`; top-level keys as
//! `SIKKERMAIL_DATA_DIR`). Every error is collected and reported together.
//!
//! No file at all is the embedded default: `./sikkermail-data`, SQLite,
//! loopback listeners on 2525 (inbound), 2587 (outbound) and 8080 (HTTP),
//! inbound mail delivered to a Maildir in the data directory.

use std::collections::BTreeMap;
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use toml::de::{DeTable, DeValue};

use crate::deliver::smtp_client::TlsMode;

/// A value read from the file or the environment, before typing.
#[derive(Debug, Clone, PartialEq)]
enum Raw {
    Str(String),
    Int(i64),
    Bool(bool),
    List(Vec<String>),
}

/// Where a value came from, for error messages.
#[derive(Debug, Clone)]
enum Origin {
    File(usize),
    Env(String),
}

/// Every key the configuration knows: (section, key, what it is).
const KEYS: &[(&str, &str, &str)] = &[
    ("", "data_dir", "directory"),
    ("", "database_url", "postgres://... URL"),
    ("", "policy", "policy file"),
    ("", "hostname", "host name"),
    ("organisation", "name", "name"),
    ("organisation", "cvr", "CVR number"),
    ("organisation", "domains", "list of domains"),
    ("inbound", "listen", "address:port"),
    ("inbound", "next_hop", "host:port"),
    ("inbound", "next_hop_tls", "none|opportunistic|required"),
    ("inbound", "next_hop_ca_file", "PEM file"),
    ("inbound", "max_message_size", "bytes"),
    ("inbound", "max_recipients", "count"),
    ("inbound", "trust_anchors", "list of PEM files"),
    ("inbound", "recipients", "list of addresses and @domains"),
    ("inbound", "verify_recipients", "true|false"),
    ("inbound", "max_connections", "count"),
    ("inbound", "max_connections_per_address", "count"),
    ("inbound", "min_data_rate", "bytes per second (0: none)"),
    ("inbound", "data_grace", "duration"),
    ("outbound", "listen", "address:port"),
    ("outbound", "trusted_networks", "list of CIDR networks"),
    ("outbound", "relay", "host:port"),
    ("outbound", "relay_tls", "none|opportunistic|required"),
    ("outbound", "relay_ca_file", "PEM file"),
    ("outbound", "max_connections", "count"),
    ("outbound", "max_connections_per_address", "count"),
    ("queue", "max_age", "duration (s, m, h, d)"),
    ("queue", "retry_base", "duration"),
    ("queue", "workers", "count"),
    ("queue", "keep_done", "duration"),
    ("http", "listen", "address:port"),
    ("http", "public_url", "URL"),
    ("http", "secure_cookie", "true|false"),
    ("http", "max_connections", "count"),
    ("http", "max_connections_per_address", "count"),
    ("http", "header_timeout", "duration"),
    ("http", "request_timeout", "duration"),
    ("health", "max_queue_age", "duration"),
    ("health", "hop_down", "duration"),
    ("admin", "mail_relay", "host:port"),
    ("admin", "mail_from", "e-mail address"),
    ("admin", "applications", "true|false"),
    ("tls", "cert", "PEM file"),
    ("tls", "key", "PEM file"),
    ("log", "format", "text|json"),
    ("log", "level", "error|warn|info|debug|trace"),
];

/// Every key of a `[mailbox.NAME]` table: (key, what it is).
const MAILBOX_KEYS: &[(&str, &str)] = &[
    ("host", "IMAP server host name"),
    ("port", "port (default 993 with implicit TLS, else 143)"),
    ("tls", "implicit|starttls|none"),
    (
        "ca",
        "PEM file of the CA to trust (instead of the system's)",
    ),
    ("user", "login name"),
    ("password_env", "environment variable holding the password"),
    ("folders", "list of folders (default [\"INBOX\"])"),
    ("archive", "folder for the encrypted originals"),
    ("live", "true|false: serve watches the folders"),
    ("poll_interval", "duration, where the server has no IDLE"),
    ("batch", "messages fetched and decrypted together"),
];

/// How the IMAP connection is protected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ImapTls {
    /// TLS from the first byte (port 993).
    Implicit,
    /// Plain connection upgraded with STARTTLS before login (port 143).
    StartTls,
    /// No TLS (loopback or a trusted network only).
    None,
}

/// One `[mailbox.NAME]`: a shared mailbox the gateway decrypts in place.
#[derive(Debug, Clone)]
pub struct MailboxConfig {
    /// The table's name (`post` in `[mailbox.post]`).
    pub name: String,
    /// IMAP server.
    pub host: String,
    /// Its port.
    pub port: u16,
    /// TLS (default implicit).
    pub tls: ImapTls,
    /// Trust only this CA (PEM) for the server's certificate; `None`: the
    /// system's roots.
    pub ca: Option<PathBuf>,
    /// Login name.
    pub user: String,
    /// The environment variable with the password; `None`: the password
    /// sealed in the store (`sikkermail mailbox password`).
    pub password_env: Option<String>,
    /// Folders to decrypt (default INBOX).
    pub folders: Vec<String>,
    /// Where originals go after their decrypted copy is confirmed
    /// (default `Krypteret original`).
    pub archive: String,
    /// `serve` watches the folders (IDLE, or polling) (default true).
    pub live: bool,
    /// How often `serve` looks when the server has no IDLE (default 60 s).
    pub poll_interval: Duration,
    /// Messages fetched and decrypted together (default 100).
    pub batch: usize,
}

/// A network in CIDR notation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Network {
    addr: IpAddr,
    prefix: u8,
}

impl Network {
    /// Parses `10.0.0.0/8`, `::1/128` or a single address.
    pub fn parse(s: &str) -> Result<Network, String> {
        let (a, p) = match s.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (s, None),
        };
        let addr: IpAddr = a
            .trim()
            .parse()
            .map_err(|_| format!("{s:?} is not an IP network"))?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match p {
            Some(p) => p
                .trim()
                .parse::<u8>()
                .ok()
                .filter(|p| *p <= max)
                .ok_or_else(|| format!("{s:?}: prefix length must be 0..={max}"))?,
            None => max,
        };
        Ok(Network { addr, prefix })
    }

    /// True when `ip` is inside (IPv4-mapped IPv6 addresses count as IPv4).
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
            v4 => v4,
        };
        match (self.addr, ip) {
            (IpAddr::V4(n), IpAddr::V4(i)) => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.prefix))
                    .unwrap_or(0);
                u32::from(n) & mask == u32::from(i) & mask
            }
            (IpAddr::V6(n), IpAddr::V6(i)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix))
                    .unwrap_or(0);
                u128::from(n) & mask == u128::from(i) & mask
            }
            _ => false,
        }
    }
}

impl fmt::Display for Network {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

/// `[inbound]`.
#[derive(Debug, Clone)]
pub struct Inbound {
    /// Listening address (default 127.0.0.1:2525).
    pub listen: SocketAddr,
    /// The firm's mail server; `None`: a Maildir in the data directory.
    pub next_hop: Option<(String, u16)>,
    /// TLS towards the next hop (default opportunistic).
    pub next_hop_tls: TlsMode,
    /// With `next_hop_tls = "required"`: the CA certificates (PEM) the next
    /// hop's certificate must chain to, instead of the system's roots (a
    /// firm's server with a certificate from its own CA).
    pub next_hop_ca_file: Option<PathBuf>,
    /// Largest message accepted (default 50 MiB).
    pub max_message_size: u64,
    /// Recipients per message (default 100).
    pub max_recipients: usize,
    /// Further trust anchors for verifying signatures (PEM files: the OCES3
    /// roots); the internal CA's root is always one.
    pub trust_anchors: Vec<PathBuf>,
    /// The mailboxes that exist (addresses, lowercase, and `@domain` for
    /// every address of a domain): others are refused at RCPT with `550
    /// 5.1.1`, so no bounce is ever sent for them. Empty (the default):
    /// every address of the organisation's domains.
    pub recipients: Vec<String>,
    /// Ask the next hop at RCPT whether it takes mail for the recipient
    /// (`MAIL FROM:<>`, `RCPT TO`, no message; as Postfix's
    /// `reject_unverified_recipient`), answers cached (taken 1 hour,
    /// refused 10 minutes). Default false; needs `next_hop`.
    pub verify_recipients: bool,
    /// Open sessions on this listener at most (default 256); more get
    /// `421` and are closed. The outbound listener has its own budget, so
    /// load here never takes its slots.
    pub max_connections: usize,
    /// Open sessions from one client address at most (an IPv6 client: its
    /// /64) (default 20).
    pub max_connections_per_address: usize,
    /// Slowest average rate a message may arrive at, in bytes per second,
    /// after `data_grace`, on both SMTP listeners (default 500; 0: none).
    pub min_data_rate: u64,
    /// What every message gets before `min_data_rate` counts (default 30 s).
    pub data_grace: Duration,
}

/// `[outbound]`.
#[derive(Debug, Clone)]
pub struct Outbound {
    /// Listening address (default 127.0.0.1:2587).
    pub listen: SocketAddr,
    /// Clients that may send without SMTP AUTH (default loopback).
    pub trusted_networks: Vec<Network>,
    /// The smarthost; `None`: MX lookup (not available yet: mail waits).
    pub relay: Option<(String, u16)>,
    /// TLS towards the relay (default opportunistic).
    pub relay_tls: TlsMode,
    /// With `relay_tls = "required"`: the CA certificates (PEM) the relay's
    /// certificate must chain to, instead of the system's roots.
    pub relay_ca_file: Option<PathBuf>,
    /// Open sessions on this listener at most (default 64).
    pub max_connections: usize,
    /// Open sessions from one client address at most (default 32).
    pub max_connections_per_address: usize,
}

/// The whole configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// Data directory (default `./sikkermail-data`).
    pub data_dir: PathBuf,
    /// PostgreSQL instead of SQLite in the data directory.
    pub database_url: Option<String>,
    /// Policy file; `None`: `<data_dir>/policy.toml` when it exists, else the defaults.
    pub policy: Option<PathBuf>,
    /// Name in the greeting, `Received:` and DSNs (default the machine's).
    pub hostname: String,
    /// Name and CVR used when `serve` creates the data directory.
    pub org_name: String,
    /// See `org_name`.
    pub org_cvr: String,
    /// The configuration names the organisation (`[organisation] name` or
    /// `cvr`): it belongs to a real installation, so `serve` never makes a
    /// fresh one for it (`sikkermail init` does, on purpose).
    pub org_named: bool,
    /// The organisation's mail domains: inbound mail is accepted for these
    /// (and their subdomains) only; empty accepts any recipient.
    pub domains: Vec<String>,
    /// `[inbound]`.
    pub inbound: Inbound,
    /// `[outbound]`.
    pub outbound: Outbound,
    /// Oldest a message may get before it bounces (default 5 days).
    pub max_age: Duration,
    /// First retry delay, doubling up to an hour (default 1 minute).
    pub retry_base: Duration,
    /// Delivery workers (default 4).
    pub workers: usize,
    /// How long finished messages stay in the queue for `queue list --all`
    /// (default 7 days). Quarantined ones stay until released or deleted.
    pub keep_done: Duration,
    /// `/readyz` answers 503 when the oldest queued message is older than
    /// this (default 1 hour).
    pub ready_max_queue_age: Duration,
    /// `/readyz` answers 503 when every attempt at a next hop or relay has
    /// failed for this long (default 10 minutes).
    pub ready_hop_down: Duration,
    /// HTTP listener for /metrics and /healthz (default 127.0.0.1:8080).
    pub http_listen: SocketAddr,
    /// Where users reach the pages, for links in e-mails (None: `http://`
    /// and the address the HTTP listener is bound to).
    pub public_url: Option<String>,
    /// TLS terminates in front of the HTTP listener: session cookies get
    /// `Secure` (default: true when `public_url` is https).
    pub secure_cookie: bool,
    /// Open HTTP connections at most (default 512; lowered at start so
    /// that the SMTP budgets always fit in the file-descriptor limit).
    pub http_max_connections: usize,
    /// Open HTTP connections from one client address at most (default 64).
    pub http_max_connections_per_address: usize,
    /// A request's header must be complete within this, and a kept-alive
    /// connection is closed when no request starts within it (default 10 s).
    pub http_header_timeout: Duration,
    /// A request (its body read and its answer made) must be done within
    /// this, else 408 and the connection closed: a body trickled slowly
    /// cannot hold a connection (default 60 s).
    pub http_request_timeout: Duration,
    /// Where the admin API's e-mails go (None: the outbound listener, as
    /// bound).
    pub admin_mail_relay: Option<(String, u16)>,
    /// Their sender (default `sikkermail@<first organisation domain>`, else
    /// `sikkermail@<hostname>`). With the default policy (sign) it needs an
    /// organisation certificate, or the mails wait in the queue.
    pub admin_mail_from: String,
    /// Anyone may apply for a new organisation at `/apply` (default
    /// false); each application still waits for `sikkermail org accept`.
    pub admin_applications: bool,
    /// STARTTLS certificate and key; `None`: a self-signed one made at first start.
    pub tls: Option<(PathBuf, PathBuf)>,
    /// Logs as JSON lines.
    pub log_json: bool,
    /// Log level.
    pub log_level: String,
    /// `[mailbox.NAME]` tables: shared IMAP mailboxes, by name.
    pub mailboxes: Vec<MailboxConfig>,
    /// Not a key: set by `sikkermail serve` when it must not make a new
    /// installation (the configuration names an organisation, or one
    /// exists elsewhere), with the reason [`crate::start`] then gives
    /// instead of initialising an empty data directory or database.
    pub refuse_fresh: Option<String>,
}

/// One configuration error.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError(pub String);

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl Config {
    /// The embedded default (no file, no environment).
    pub fn embedded_default() -> Config {
        match Self::load(None, &[]) {
            Ok(c) => c,
            // The defaults are valid by construction; this is unreachable.
            Err(e) => panic!("built-in configuration invalid: {e:?}"),
        }
    }

    /// Reads `file` (TOML text and its name) and the environment pairs
    /// `env` (pass `std::env::vars()`; only `SIKKERMAIL_*` names are read).
    pub fn load(
        file: Option<(&str, &str)>,
        env: &[(String, String)],
    ) -> Result<Config, Vec<ConfigError>> {
        let mut errors = Vec::new();
        let mut values: BTreeMap<(String, String), (Raw, Origin)> = BTreeMap::new();
        let file_name = file.map(|(n, _)| n.to_string()).unwrap_or_default();
        if let Some((name, text)) = file {
            read_toml(name, text, &mut values, &mut errors);
        }
        for (k, v) in env {
            let Some(rest) = k.strip_prefix("SIKKERMAIL_") else {
                continue;
            };
            let rest = rest.to_ascii_lowercase();
            // SIKKERMAIL_MAILBOX_<NAME>_<KEY> for a mailbox the file names.
            let boxes: Vec<String> = values
                .keys()
                .filter_map(|(sec, _)| sec.strip_prefix("mailbox.").map(str::to_string))
                .collect();
            let mailbox_key = boxes.iter().find_map(|b| {
                let r = rest.strip_prefix("mailbox_")?;
                let key = r.strip_prefix(&b.to_ascii_lowercase().replace('-', "_"))?;
                let key = key.strip_prefix('_')?;
                MAILBOX_KEYS
                    .iter()
                    .any(|(k, _)| *k == key)
                    .then(|| (format!("mailbox.{b}"), key.to_string()))
            });
            if let Some((sec, key)) = mailbox_key {
                values.insert((sec, key), (Raw::Str(v.clone()), Origin::Env(k.clone())));
                continue;
            }
            let found = KEYS.iter().find(|(sec, key, _)| {
                if sec.is_empty() {
                    rest == *key
                } else {
                    rest.strip_prefix(sec)
                        .and_then(|r| r.strip_prefix('_'))
                        .is_some_and(|r| r == *key)
                }
            });
            // Other SIKKERMAIL_* variables (SIKKERMAIL_MASTER_KEY, ...) are
            // not configuration keys: left alone.
            if let Some((sec, key, _)) = found {
                values.insert(
                    (sec.to_string(), key.to_string()),
                    (Raw::Str(v.clone()), Origin::Env(k.clone())),
                );
            }
        }
        let mut t = Typed {
            values,
            errors,
            file: file_name,
        };
        let data_dir = PathBuf::from(t.string("", "data_dir", "./sikkermail-data"));
        let database_url = t.opt_string("", "database_url");
        if let Some(u) = &database_url
            && !(u.starts_with("postgres://") || u.starts_with("postgresql://"))
        {
            t.error(
                "",
                "database_url",
                "must be a postgres:// URL (SQLite is the default)",
            );
        }
        let policy = t.opt_string("", "policy").map(PathBuf::from);
        let hostname = t
            .opt_string("", "hostname")
            .unwrap_or_else(default_hostname);
        let host_ok = !hostname.is_empty()
            && hostname.len() <= 253
            && hostname
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-');
        if !host_ok {
            t.error(
                "",
                "hostname",
                &format!("{hostname:?} is not a host name (letters, digits, dots and hyphens)"),
            );
        }
        let org_named = t.has("organisation", "name") || t.has("organisation", "cvr");
        let org_name = t.string("organisation", "name", "Testorganisation");
        let org_cvr = t.string("organisation", "cvr", "00000000");
        let domains: Vec<String> = t
            .list("organisation", "domains")
            .into_iter()
            .map(|d| d.trim().trim_end_matches('.').to_ascii_lowercase())
            .collect();
        for d in &domains {
            if d.is_empty() || d.contains('@') || d.contains(char::is_whitespace) {
                t.error("organisation", "domains", &format!("{d:?} is not a domain"));
            }
        }
        let inbound = Inbound {
            listen: t.addr("inbound", "listen", "127.0.0.1:2525"),
            next_hop: t.host_port("inbound", "next_hop"),
            next_hop_tls: t.tls_mode("inbound", "next_hop_tls"),
            next_hop_ca_file: t
                .opt_string("inbound", "next_hop_ca_file")
                .map(PathBuf::from),
            max_message_size: t.int("inbound", "max_message_size", 50 * 1024 * 1024, 1024) as u64,
            max_recipients: t.int("inbound", "max_recipients", 100, 1) as usize,
            trust_anchors: t
                .list("inbound", "trust_anchors")
                .into_iter()
                .map(PathBuf::from)
                .collect(),
            recipients: t
                .list("inbound", "recipients")
                .into_iter()
                .map(|r| r.trim().to_ascii_lowercase())
                .collect(),
            verify_recipients: t.bool("inbound", "verify_recipients", false),
            max_connections: t.int("inbound", "max_connections", 256, 1) as usize,
            max_connections_per_address: t.int("inbound", "max_connections_per_address", 20, 1)
                as usize,
            min_data_rate: t.int("inbound", "min_data_rate", 500, 0) as u64,
            data_grace: t.duration("inbound", "data_grace", "30s"),
        };
        if inbound.verify_recipients && inbound.next_hop.is_none() {
            t.error(
                "inbound",
                "verify_recipients",
                "needs [inbound] next_hop (the server to ask)",
            );
        }
        let mut trusted = Vec::new();
        let nets = match t.has("outbound", "trusted_networks") {
            true => t.list("outbound", "trusted_networks"),
            false => vec!["127.0.0.0/8".into(), "::1/128".into()],
        };
        for n in nets {
            match Network::parse(&n) {
                Ok(n) => trusted.push(n),
                Err(e) => t.error("outbound", "trusted_networks", &e),
            }
        }
        let outbound = Outbound {
            listen: t.addr("outbound", "listen", "127.0.0.1:2587"),
            trusted_networks: trusted,
            relay: t.host_port("outbound", "relay"),
            relay_tls: t.tls_mode("outbound", "relay_tls"),
            relay_ca_file: t.opt_string("outbound", "relay_ca_file").map(PathBuf::from),
            max_connections: t.int("outbound", "max_connections", 64, 1) as usize,
            max_connections_per_address: t.int("outbound", "max_connections_per_address", 32, 1)
                as usize,
        };
        let max_age = t.duration("queue", "max_age", "5d");
        let retry_base = t.duration("queue", "retry_base", "1m");
        let workers = t.int("queue", "workers", 4, 1) as usize;
        let keep_done = t.duration("queue", "keep_done", "7d");
        let ready_max_queue_age = t.duration("health", "max_queue_age", "1h");
        let ready_hop_down = t.duration("health", "hop_down", "10m");
        let http_listen = t.addr("http", "listen", "127.0.0.1:8080");
        let public_url = t
            .opt_string("http", "public_url")
            .map(|u| u.trim_end_matches('/').to_string());
        if let Some(u) = &public_url
            && !u.starts_with("http://")
            && !u.starts_with("https://")
        {
            t.error("http", "public_url", "must start with http:// or https://");
        }
        let secure_cookie = match t.get("http", "secure_cookie").map(|(r, _)| r) {
            None => public_url
                .as_deref()
                .is_some_and(|u| u.starts_with("https://")),
            Some(Raw::Bool(b)) => b,
            Some(Raw::Str(s)) if s.trim() == "true" => true,
            Some(Raw::Str(s)) if s.trim() == "false" => false,
            Some(_) => {
                t.error("http", "secure_cookie", "must be true or false");
                false
            }
        };
        let http_max_connections = t.int("http", "max_connections", 512, 1) as usize;
        let http_max_connections_per_address =
            t.int("http", "max_connections_per_address", 64, 1) as usize;
        let http_header_timeout = t.duration("http", "header_timeout", "10s");
        if http_header_timeout.is_zero() {
            t.error("http", "header_timeout", "must be more than 0 s");
        }
        let http_request_timeout = t.duration("http", "request_timeout", "60s");
        if http_request_timeout.is_zero() {
            t.error("http", "request_timeout", "must be more than 0 s");
        }
        let admin_mail_relay = t.host_port("admin", "mail_relay");
        let admin_mail_from = t.opt_string("admin", "mail_from").unwrap_or_else(|| {
            format!(
                "sikkermail@{}",
                domains.first().map(String::as_str).unwrap_or(&hostname)
            )
        });
        let admin_applications = t.bool("admin", "applications", false);
        let tls = match (t.opt_string("tls", "cert"), t.opt_string("tls", "key")) {
            (Some(c), Some(k)) => Some((PathBuf::from(c), PathBuf::from(k))),
            (None, None) => None,
            _ => {
                t.error("tls", "cert", "give both [tls] cert and key, or neither");
                None
            }
        };
        let format = t.string("log", "format", "text");
        if format != "text" && format != "json" {
            t.error("log", "format", "must be \"text\" or \"json\"");
        }
        let log_level = t.string("log", "level", "info");
        if !["error", "warn", "info", "debug", "trace"].contains(&log_level.as_str()) {
            t.error("log", "level", "must be error, warn, info, debug or trace");
        }
        if domains.is_empty() && !inbound.listen.ip().is_loopback() {
            t.error(
                "inbound",
                "listen",
                "an inbound listener beyond loopback needs [organisation] domains (else it relays for anyone to the next hop)",
            );
        }
        for addr in [inbound.listen, outbound.listen, http_listen] {
            let n = [inbound.listen, outbound.listen, http_listen]
                .iter()
                .filter(|a| **a == addr && addr.port() != 0)
                .count();
            if n > 1 {
                let msg = format!("{addr} is used by more than one listener");
                if !t.errors.iter().any(|e| e.0.ends_with(&msg)) {
                    t.errors.push(ConfigError(msg));
                }
            }
        }
        let mailboxes = mailboxes(&mut t);
        if !t.errors.is_empty() {
            return Err(t.errors);
        }
        Ok(Config {
            data_dir,
            database_url,
            policy,
            hostname,
            org_name,
            org_cvr,
            org_named,
            domains,
            inbound,
            outbound,
            max_age,
            retry_base,
            workers,
            keep_done,
            ready_max_queue_age,
            ready_hop_down,
            http_listen,
            public_url,
            secure_cookie,
            http_max_connections,
            http_max_connections_per_address,
            http_header_timeout,
            http_request_timeout,
            admin_mail_relay,
            admin_mail_from,
            admin_applications,
            tls,
            log_json: format == "json",
            log_level,
            mailboxes,
            refuse_fresh: None,
        })
    }

    /// True when `address` is a mailbox that exists here: in the
    /// organisation's domains, and in `[inbound] recipients` when that is
    /// given.
    pub fn is_mailbox(&self, address: &str) -> bool {
        if !self.is_local(address) {
            return false;
        }
        if self.inbound.recipients.is_empty() {
            return true;
        }
        let a = address.to_ascii_lowercase();
        let domain = a.rsplit_once('@').map(|(_, d)| d);
        self.inbound
            .recipients
            .iter()
            .any(|r| match r.strip_prefix('@') {
                Some(d) => domain == Some(d),
                None => *r == a,
            })
    }

    /// True when `address` is in one of the organisation's domains (or no
    /// domains are configured).
    pub fn is_local(&self, address: &str) -> bool {
        if self.domains.is_empty() {
            return true;
        }
        let Some((_, d)) = address.rsplit_once('@') else {
            return false;
        };
        let d = d.to_ascii_lowercase();
        self.domains
            .iter()
            .any(|o| d == *o || d.ends_with(&format!(".{o}")))
    }
}

/// Types every `[mailbox.NAME]` table.
fn mailboxes(t: &mut Typed) -> Vec<MailboxConfig> {
    let names: std::collections::BTreeSet<String> = t
        .values
        .keys()
        .filter_map(|(sec, _)| sec.strip_prefix("mailbox.").map(str::to_string))
        .collect();
    let mut out = Vec::new();
    for name in names {
        let sec = format!("mailbox.{name}");
        let sec = sec.as_str();
        let host = t.opt_string(sec, "host").unwrap_or_default();
        if host.is_empty() {
            t.errors
                .push(ConfigError(format!("[{sec}]: host is missing")));
        }
        let tls = match t.string(sec, "tls", "implicit").as_str() {
            "implicit" => ImapTls::Implicit,
            "starttls" => ImapTls::StartTls,
            "none" => ImapTls::None,
            _ => {
                t.error(sec, "tls", "must be implicit, starttls or none");
                ImapTls::Implicit
            }
        };
        let default_port = if tls == ImapTls::Implicit { 993 } else { 143 };
        let port = t.int(sec, "port", default_port, 1);
        if port > 65535 {
            t.error(sec, "port", "must be at most 65535");
        }
        let user = t.opt_string(sec, "user").unwrap_or_default();
        if user.is_empty() {
            t.errors
                .push(ConfigError(format!("[{sec}]: user is missing")));
        }
        let folders = match t.has(sec, "folders") {
            true => t.list(sec, "folders"),
            false => vec!["INBOX".to_string()],
        };
        if folders.is_empty() {
            t.error(sec, "folders", "name at least one folder");
        }
        let archive = t.string(sec, "archive", "Krypteret original");
        if folders.contains(&archive) {
            t.error(
                sec,
                "archive",
                "the archive folder cannot be one of the folders",
            );
        }
        for f in folders.iter().chain(std::iter::once(&archive)) {
            if f.is_empty() || f.chars().any(|c| c.is_control()) {
                t.error(sec, "folders", &format!("{f:?} is not a folder name"));
            }
        }
        let live = match t.get(sec, "live").map(|(r, _)| r) {
            None => true,
            Some(Raw::Bool(b)) => b,
            Some(Raw::Str(s)) if s.trim() == "true" => true,
            Some(Raw::Str(s)) if s.trim() == "false" => false,
            Some(_) => {
                t.error(sec, "live", "must be true or false");
                true
            }
        };
        let poll_interval = t.duration(sec, "poll_interval", "60s");
        let batch = t.int(sec, "batch", 100, 1).min(1000) as usize;
        out.push(MailboxConfig {
            name,
            host,
            port: port.clamp(1, 65535) as u16,
            tls,
            ca: t.opt_string(sec, "ca").map(PathBuf::from),
            user,
            password_env: t.opt_string(sec, "password_env"),
            folders,
            archive,
            live,
            poll_interval: poll_interval.max(Duration::from_secs(1)),
            batch,
        });
    }
    out
}

impl Config {
    /// The policy file `serve` reads: `policy`, else
    /// `<data_dir>/policy.toml` when it exists; `None`: the built-in
    /// defaults. `policy explain` asks the same.
    pub fn policy_file(&self) -> Option<PathBuf> {
        self.policy.clone().or_else(|| {
            let p = self.data_dir.join("policy.toml");
            p.exists().then_some(p)
        })
    }

    /// The keys whose change `new` brings that only a restart applies
    /// (SIGHUP re-reads the policy, the trust anchors, the TLS certificate
    /// and key and the log level; everything else was used at start).
    pub fn needs_restart(&self, new: &Config) -> Vec<&'static str> {
        let mut out = Vec::new();
        let mut differ = |changed: bool, what: &'static str| {
            if changed {
                out.push(what);
            }
        };
        differ(self.data_dir != new.data_dir, "data_dir");
        differ(self.database_url != new.database_url, "database_url");
        differ(self.hostname != new.hostname, "hostname");
        differ(
            (&self.org_name, &self.org_cvr, &self.domains)
                != (&new.org_name, &new.org_cvr, &new.domains),
            "[organisation]",
        );
        let (a, b) = (&self.inbound, &new.inbound);
        differ(
            a.listen != b.listen || self.outbound.listen != new.outbound.listen,
            "listen addresses",
        );
        differ(self.http_listen != new.http_listen, "[http] listen");
        differ(
            (
                &a.next_hop,
                a.next_hop_tls,
                &a.next_hop_ca_file,
                a.max_message_size,
                a.max_recipients,
                &a.recipients,
                a.verify_recipients,
                a.max_connections,
                a.max_connections_per_address,
                a.min_data_rate,
                a.data_grace,
            ) != (
                &b.next_hop,
                b.next_hop_tls,
                &b.next_hop_ca_file,
                b.max_message_size,
                b.max_recipients,
                &b.recipients,
                b.verify_recipients,
                b.max_connections,
                b.max_connections_per_address,
                b.min_data_rate,
                b.data_grace,
            ),
            "[inbound] (other than trust_anchors)",
        );
        let (a, b) = (&self.outbound, &new.outbound);
        differ(
            (
                &a.trusted_networks,
                &a.relay,
                a.relay_tls,
                &a.relay_ca_file,
                a.max_connections,
                a.max_connections_per_address,
            ) != (
                &b.trusted_networks,
                &b.relay,
                b.relay_tls,
                &b.relay_ca_file,
                b.max_connections,
                b.max_connections_per_address,
            ),
            "[outbound]",
        );
        differ(
            (self.max_age, self.retry_base, self.workers, self.keep_done)
                != (new.max_age, new.retry_base, new.workers, new.keep_done),
            "[queue]",
        );
        differ(
            (self.ready_max_queue_age, self.ready_hop_down)
                != (new.ready_max_queue_age, new.ready_hop_down),
            "[health]",
        );
        differ(
            (
                &self.public_url,
                self.secure_cookie,
                self.http_max_connections,
                self.http_max_connections_per_address,
                self.http_header_timeout,
                self.http_request_timeout,
            ) != (
                &new.public_url,
                new.secure_cookie,
                new.http_max_connections,
                new.http_max_connections_per_address,
                new.http_header_timeout,
                new.http_request_timeout,
            ),
            "[http]",
        );
        differ(
            (
                &self.admin_mail_relay,
                &self.admin_mail_from,
                self.admin_applications,
            ) != (
                &new.admin_mail_relay,
                &new.admin_mail_from,
                new.admin_applications,
            ),
            "[admin]",
        );
        differ(self.log_json != new.log_json, "[log] format");
        differ(
            format!("{:?}", self.mailboxes) != format!("{:?}", new.mailboxes),
            "[mailbox.*]",
        );
        out
    }

    /// The `[mailbox.NAME]` called `name`.
    pub fn mailbox(&self, name: &str) -> Option<&MailboxConfig> {
        self.mailboxes.iter().find(|m| m.name == name)
    }
}

/// This machine's host name (lease holders are named `what@host/pid`).
pub fn this_host() -> String {
    default_hostname()
}

fn default_hostname() -> String {
    let mut buf = [0u8; 256];
    // SAFETY: the buffer is valid for its length; gethostname NUL-terminates
    // when the name fits (we keep one byte spare).
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len() - 1) };
    if rc == 0 {
        let end = buf.iter().position(|b| *b == 0).unwrap_or(0);
        if let Ok(s) = std::str::from_utf8(&buf[..end])
            && !s.is_empty()
        {
            return s.to_string();
        }
    }
    "localhost".into()
}

fn read_toml(
    name: &str,
    text: &str,
    values: &mut BTreeMap<(String, String), (Raw, Origin)>,
    errors: &mut Vec<ConfigError>,
) {
    let line = |off: usize| text[..off.min(text.len())].matches('\n').count() + 1;
    let (doc, syntax) = DeTable::parse_recoverable(text);
    for e in &syntax {
        let at = e.span().map(|s| line(s.start)).unwrap_or(1);
        errors.push(ConfigError(format!("{name}:{at}: {}", e.message())));
    }
    if !syntax.is_empty() {
        return;
    }
    let mut entries: Vec<(String, String, &DeValue<'_>, usize)> = Vec::new();
    for (k, v) in doc.get_ref() {
        let key = k.get_ref().as_ref();
        match v.get_ref() {
            DeValue::Table(t) if key == "mailbox" => {
                for (k2, v2) in t {
                    let mb = k2.get_ref().to_string();
                    let at = line(k2.span().start);
                    let DeValue::Table(t2) = v2.get_ref() else {
                        errors.push(ConfigError(format!(
                            "{name}:{at}: [mailbox] holds tables: [mailbox.NAME]"
                        )));
                        continue;
                    };
                    if let Err(e) = service::mailboxes::check_mailbox_name(&mb) {
                        errors.push(ConfigError(format!("{name}:{at}: {e}")));
                        continue;
                    }
                    for (k3, v3) in t2 {
                        entries.push((
                            format!("mailbox.{mb}"),
                            k3.get_ref().to_string(),
                            v3.get_ref(),
                            k3.span().start,
                        ));
                    }
                }
            }
            DeValue::Table(t) => {
                if !KEYS.iter().any(|(s, _, _)| *s == key) {
                    let at = line(k.span().start);
                    errors.push(ConfigError(format!("{name}:{at}: unknown section [{key}]")));
                    continue;
                }
                for (k2, v2) in t {
                    let k2name = k2.get_ref().to_string();
                    entries.push((key.to_string(), k2name, v2.get_ref(), k2.span().start));
                }
            }
            other => entries.push((String::new(), key.to_string(), other, k.span().start)),
        }
    }
    let mut put = |sec: &str, key: &str, v: &DeValue<'_>, off: usize| {
        let at = line(off);
        let known = match sec.strip_prefix("mailbox.") {
            Some(_) => MAILBOX_KEYS.iter().any(|(k, _)| *k == key),
            None => KEYS.iter().any(|(s, k, _)| *s == sec && *k == key),
        };
        let shown = if sec.is_empty() {
            key.to_string()
        } else {
            format!("[{sec}] {key}")
        };
        if !known {
            errors.push(ConfigError(format!("{name}:{at}: unknown key {shown}")));
            return;
        }
        let raw = match v {
            DeValue::String(s) => Raw::Str(s.to_string()),
            DeValue::Integer(i) => match i64::from_str_radix(i.as_str(), i.radix()) {
                Ok(n) => Raw::Int(n),
                Err(_) => {
                    errors.push(ConfigError(format!(
                        "{name}:{at}: {shown}: integer too large"
                    )));
                    return;
                }
            },
            DeValue::Boolean(b) => Raw::Bool(*b),
            DeValue::Array(a) => {
                let mut out = Vec::new();
                for item in a {
                    match item.get_ref() {
                        DeValue::String(s) => out.push(s.to_string()),
                        _ => {
                            errors.push(ConfigError(format!(
                                "{name}:{at}: {shown}: a list of strings is expected"
                            )));
                            return;
                        }
                    }
                }
                Raw::List(out)
            }
            _ => {
                errors.push(ConfigError(format!(
                    "{name}:{at}: {shown}: unsupported value type"
                )));
                return;
            }
        };
        values.insert((sec.to_string(), key.to_string()), (raw, Origin::File(at)));
    };
    for (sec, key, v, off) in entries {
        put(&sec, &key, v, off);
    }
}

/// Typing with error collection.
struct Typed {
    values: BTreeMap<(String, String), (Raw, Origin)>,
    errors: Vec<ConfigError>,
    file: String,
}

impl Typed {
    fn has(&self, sec: &str, key: &str) -> bool {
        self.values
            .contains_key(&(sec.to_string(), key.to_string()))
    }

    fn get(&self, sec: &str, key: &str) -> Option<(Raw, Origin)> {
        self.values
            .get(&(sec.to_string(), key.to_string()))
            .cloned()
    }

    fn where_(&self, sec: &str, key: &str) -> String {
        let shown = if sec.is_empty() {
            key.to_string()
        } else {
            format!("[{sec}] {key}")
        };
        match self.get(sec, key).map(|(_, o)| o) {
            Some(Origin::File(line)) => format!("{}:{line}: {shown}", self.file),
            Some(Origin::Env(var)) => format!("{var} (environment)"),
            None => shown,
        }
    }

    fn error(&mut self, sec: &str, key: &str, msg: &str) {
        let at = self.where_(sec, key);
        self.errors.push(ConfigError(format!("{at}: {msg}")));
    }

    fn opt_string(&mut self, sec: &str, key: &str) -> Option<String> {
        match self.get(sec, key)?.0 {
            Raw::Str(s) if s.trim().is_empty() => None,
            Raw::Str(s) => Some(s.trim().to_string()),
            _ => {
                self.error(sec, key, "a string is expected");
                None
            }
        }
    }

    fn string(&mut self, sec: &str, key: &str, default: &str) -> String {
        self.opt_string(sec, key)
            .unwrap_or_else(|| default.to_string())
    }

    fn list(&mut self, sec: &str, key: &str) -> Vec<String> {
        match self.get(sec, key).map(|(r, _)| r) {
            None => Vec::new(),
            Some(Raw::List(l)) => l,
            // From the environment: comma-separated.
            Some(Raw::Str(s)) => s
                .split(',')
                .map(|x| x.trim().to_string())
                .filter(|x| !x.is_empty())
                .collect(),
            Some(_) => {
                self.error(sec, key, "a list of strings is expected");
                Vec::new()
            }
        }
    }

    /// `true` or `false` (a boolean in the file, the word in the
    /// environment).
    fn bool(&mut self, sec: &str, key: &str, default: bool) -> bool {
        match self.get(sec, key).map(|(r, _)| r) {
            None => default,
            Some(Raw::Bool(b)) => b,
            Some(Raw::Str(s)) if s.trim() == "true" => true,
            Some(Raw::Str(s)) if s.trim() == "false" => false,
            Some(_) => {
                self.error(sec, key, "must be true or false");
                default
            }
        }
    }

    fn int(&mut self, sec: &str, key: &str, default: i64, min: i64) -> i64 {
        let n = match self.get(sec, key).map(|(r, _)| r) {
            None => return default,
            Some(Raw::Int(n)) => Some(n),
            Some(Raw::Str(s)) => s.trim().parse::<i64>().ok(),
            Some(_) => None,
        };
        match n {
            Some(n) if n >= min => n,
            Some(_) => {
                self.error(sec, key, &format!("must be at least {min}"));
                default
            }
            None => {
                self.error(sec, key, "an integer is expected");
                default
            }
        }
    }

    fn addr(&mut self, sec: &str, key: &str, default: &str) -> SocketAddr {
        let s = self.string(sec, key, default);
        match s.parse::<SocketAddr>() {
            Ok(a) => a,
            Err(_) => {
                self.error(
                    sec,
                    key,
                    &format!("{s:?} is not an IP address and port (e.g. 127.0.0.1:2525)"),
                );
                default
                    .parse()
                    .unwrap_or(SocketAddr::from(([127, 0, 0, 1], 0)))
            }
        }
    }

    fn host_port(&mut self, sec: &str, key: &str) -> Option<(String, u16)> {
        let s = self.opt_string(sec, key)?;
        let parsed = s.rsplit_once(':').and_then(|(h, p)| {
            let h = h.trim_start_matches('[').trim_end_matches(']');
            let p = p.parse::<u16>().ok().filter(|p| *p != 0)?;
            (!h.is_empty()).then(|| (h.to_string(), p))
        });
        if parsed.is_none() {
            self.error(sec, key, &format!("{s:?} is not host:port"));
        }
        parsed
    }

    fn tls_mode(&mut self, sec: &str, key: &str) -> TlsMode {
        match self.string(sec, key, "opportunistic").as_str() {
            "none" => TlsMode::None,
            "opportunistic" => TlsMode::Opportunistic,
            "required" => TlsMode::Required,
            _ => {
                self.error(sec, key, "must be none, opportunistic or required");
                TlsMode::Opportunistic
            }
        }
    }

    fn duration(&mut self, sec: &str, key: &str, default: &str) -> Duration {
        let s = self.string(sec, key, default);
        match parse_duration(&s) {
            Some(d) => d,
            None => {
                self.error(
                    sec,
                    key,
                    &format!("{s:?} is not a duration (a number with s, m, h or d)"),
                );
                parse_duration(default).unwrap_or(Duration::from_secs(60))
            }
        }
    }
}

/// `90s`, `5m`, `2h`, `5d`, or plain seconds.
pub fn parse_duration(s: &str) -> Option<Duration> {
    let s = s.trim();
    let (num, unit) = match s.find(|c: char| !c.is_ascii_digit()) {
        Some(i) => (&s[..i], s[i..].trim()),
        None => (s, "s"),
    };
    let n: u64 = num.parse().ok()?;
    let mult = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86400,
        _ => return None,
    };
    n.checked_mul(mult).map(Duration::from_secs)
}
