//! The Prometheus side of issue 21 §5: the shipped alert rules
//! (`contrib/prometheus/sikkermail-rules.yml`) pass `promtool check rules`
//! and their unit tests (`promtool test rules`), and a real `serve`'s
//! `/metrics` passes `promtool check metrics` and has every metric the rules
//! use, so the rules cannot drift from the code. The metrics themselves are
//! checked against what happened: an encrypted message deferred three times
//! then delivered counts one decryption, the queue's deferred, quarantined
//! and oldest age, the next hop's last delivery, and the certificates'
//! expiry (on PostgreSQL with two nodes, whose decryptions add up to one).
//! promtool is Debian's `prometheus` package: missing, the tests skip
//! loudly, and fail under SIKKERMAIL_REQUIRE_PEERS=1.

#![allow(clippy::unwrap_used)]

mod common;
mod serve;
mod site;

use std::collections::BTreeSet;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{Sink, free_port, peer, sh};
use serve::{Serve, bin, config_file};
use site::{Site, sites};

fn contrib() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("contrib/prometheus")
}

/// Runs promtool in contrib/prometheus; its output, asserting success.
fn promtool(args: &[&str], stdin: Option<&str>) -> String {
    let mut child = Command::new("promtool")
        .args(args)
        .current_dir(contrib())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut input = child.stdin.take().unwrap();
    input.write_all(stdin.unwrap_or("").as_bytes()).unwrap();
    drop(input);
    let o = child.wait_with_output().unwrap();
    let out = format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(o.status.success(), "promtool {args:?} failed:\n{out}");
    out
}

#[test]
fn the_alert_rules_pass_promtool_and_their_unit_tests() {
    if !peer("promtool") {
        return;
    }
    let out = promtool(&["check", "rules", "sikkermail-rules.yml"], None);
    assert!(out.contains("SUCCESS"), "{out}");
    let out = promtool(&["test", "rules", "sikkermail-rules.test.yml"], None);
    assert!(out.contains("SUCCESS"), "{out}");
}

/// The `sikkermail_*` metric names the rules use.
fn names_in_rules() -> BTreeSet<String> {
    let rules = fs::read_to_string(contrib().join("sikkermail-rules.yml")).unwrap();
    rules
        .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .filter(|w| w.starts_with("sikkermail_"))
        .map(str::to_string)
        .collect()
}

/// The value of the sample `name{labels}` in a scrape (labels as written,
/// in the order the gateway writes them).
fn sample(body: &str, series: &str) -> Option<f64> {
    body.lines()
        .find(|l| l.starts_with(series) && l[series.len()..].starts_with(' '))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

fn scrape(serve: &Serve) -> String {
    let (code, body) = serve.http_get("/metrics");
    assert_eq!(code, 200, "{body}");
    body
}

/// Scrapes until `want` holds (60 s at most); the last scrape.
fn scrape_until(serve: &Serve, what: &str, want: impl Fn(&str) -> bool) -> String {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let body = scrape(serve);
        if want(&body) {
            return body;
        }
        assert!(
            Instant::now() < deadline,
            "{what}:\n{body}\n{}",
            serve.logs()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// The attempts `queue show` reports for message `id`.
fn attempts(site: &Site, id: &str) -> i64 {
    let out = site.ok(&["queue", "show", id]);
    out.lines()
        .find_map(|l| l.strip_prefix("attempts:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no attempts in {out}"))
}

fn swaks(addr: std::net::SocketAddr, to: &str, data: &Path) {
    let o = Command::new("swaks")
        .args(["-s", &addr.to_string(), "-f", "post@retten.test", "-t", to])
        .arg("--data")
        .arg(format!("@{}", data.display()))
        .args(["-n", "--timeout", "30"])
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "swaks: {}",
        String::from_utf8_lossy(&o.stdout)
    );
}

#[test]
fn a_real_serves_metrics_pass_promtool_have_what_the_rules_use_and_count_each_message_once() {
    if !(peer("promtool") && peer("swaks") && peer("smtp-sink") && peer("openssl")) {
        return;
    }
    for site in sites() {
        let d = site.dir.parent().unwrap().to_path_buf();
        site.init_firm();
        let id = site.issue_mailbox_cert("post@advokat.test");
        fs::write(d.join("org.crt"), site.pem(&id)).unwrap();
        // An outside party: its certificate pinned (watched for expiry),
        // and a message to it nobody here can open (quarantined).
        sh(
            &d,
            "openssl req -x509 -newkey rsa:2048 -nodes -days 20 -subj '/CN=retten/emailAddress=post@retten.test' \
             -addext subjectAltName=email:post@retten.test -addext extendedKeyUsage=emailProtection \
             -keyout retten.key -out retten.crt 2>/dev/null",
        );
        site.ok(&[
            "recipient",
            "import",
            &d.join("retten.crt").display().to_string(),
        ]);
        let rid = site::first_field(
            site.ok(&["recipient", "list"])
                .lines()
                .find(|l| l.contains("post@retten.test"))
                .unwrap(),
        );
        site.ok(&["recipient", "pin", &rid]);
        fs::write(
            d.join("policy.toml"),
            "[default]\nundecryptable = \"quarantine\"\n",
        )
        .unwrap();
        fs::write(
            d.join("inner.txt"),
            "Content-Type: text/plain\r\n\r\nDom i sag 2026-17.\r\n",
        )
        .unwrap();
        sh(
            &d,
            "openssl cms -encrypt -aes-256-cbc -in inner.txt -out ours.eml -subject 'Til os' org.crt && \
             openssl cms -encrypt -aes-256-cbc -in inner.txt -out theirs.eml -subject 'Ikke til os' retten.crt",
        );
        let port = free_port();
        let extra = format!(
            "policy = \"{}\"\n[organisation]\ndomains = [\"advokat.test\"]\n[inbound]\nnext_hop = \"127.0.0.1:{port}\"\nnext_hop_tls = \"none\"\n",
            d.join("policy.toml").display()
        );
        let serve = Serve::start(&site, &extra);
        // A second node on the same PostgreSQL database: it sees the same
        // queue, and may take the message's attempts in turn.
        let other = site.db_url.as_ref().map(|_| {
            let node = site.second_node();
            let cfg = config_file(&node, "node-b", &extra);
            let mut c = bin();
            c.arg("serve")
                .arg("--config")
                .arg(&cfg)
                .env("SIKKERMAIL_INBOUND_LISTEN", "127.0.0.1:0")
                .env("SIKKERMAIL_OUTBOUND_LISTEN", "127.0.0.1:0")
                .env("SIKKERMAIL_HTTP_LISTEN", "127.0.0.1:0")
                .env("SIKKERMAIL_QUEUE_RETRY_BASE", "1s");
            (Serve::spawn(c, &d.join("node-b.log")), node)
        });

        swaks(serve.inbound, "post@advokat.test", &d.join("ours.eml"));
        swaks(serve.inbound, "post@advokat.test", &d.join("theirs.eml"));
        // The next hop is down: message 1 is tried three times.
        let deadline = Instant::now() + Duration::from_secs(60);
        while attempts(&site, "1") < 3 {
            assert!(Instant::now() < deadline, "{}", serve.logs());
            std::thread::sleep(Duration::from_millis(200));
        }
        let body = scrape_until(&serve, "one deferred, one quarantined", |b| {
            sample(
                b,
                "sikkermail_queue_deferred_messages{direction=\"inbound\"}",
            ) == Some(1.0)
                && sample(
                    b,
                    "sikkermail_queue_quarantined_messages{direction=\"inbound\"}",
                ) == Some(1.0)
        });
        assert!(
            sample(
                &body,
                "sikkermail_queue_oldest_age_seconds{direction=\"inbound\"}"
            )
            .is_some_and(|a| a >= 1.0),
            "{body}"
        );
        assert_eq!(
            sample(
                &body,
                "sikkermail_queue_oldest_age_seconds{direction=\"outbound\"}"
            ),
            Some(0.0),
            "{body}"
        );
        assert_eq!(
            sample(
                &body,
                "sikkermail_decryption_failures_total{reason=\"no_key\"}"
            ),
            Some(1.0),
            "{body}"
        );
        assert_eq!(
            sample(&body, "sikkermail_undecryptable_total"),
            Some(1.0),
            "{body}"
        );
        assert_eq!(sample(&body, "sikkermail_ready"), Some(1.0), "{body}");
        assert_eq!(sample(&body, "sikkermail_store_up"), Some(1.0), "{body}");
        // Nothing delivered yet: the configured hop's last delivery is 0.
        let hop = format!(
            "sikkermail_last_delivery_timestamp_seconds{{direction=\"inbound\",hop=\"127.0.0.1:{port}\"}}"
        );
        assert_eq!(sample(&body, &hop), Some(0.0), "{body}");
        // The node's view of the queue is the store's: the other node
        // reports the same.
        if let Some((b, _)) = &other {
            let theirs = scrape(b);
            for s in [
                "sikkermail_queue_deferred_messages{direction=\"inbound\"}",
                "sikkermail_queue_quarantined_messages{direction=\"inbound\"}",
            ] {
                assert_eq!(sample(&theirs, s), sample(&body, s), "{s}:\n{theirs}");
            }
        }

        // The next hop comes up and takes the message.
        let sink = Sink::start_on(&d.join("sink"), port);
        sink.wait_for(1, 60, || serve.logs());
        let before = unix_now();
        let body = scrape_until(&serve, "delivered", |b| {
            sample(
                b,
                "sikkermail_queue_deferred_messages{direction=\"inbound\"}",
            ) == Some(0.0)
                && sample(b, &hop).is_some_and(|at| at > 0.0)
        });
        let at = sample(&body, &hop).unwrap_or_else(|| panic!("no {hop}:\n{body}"));
        assert!(
            (before - 120..=before + 5).contains(&(at as i64)),
            "{at} vs {before}"
        );
        // Tried at least four times, opened on every attempt, counted once
        // (across both nodes when there are two).
        assert!(attempts(&site, "1") >= 4);
        let decrypted = sample(&body, "sikkermail_decrypted_total").unwrap()
            + other.as_ref().map_or(0.0, |(b, _)| {
                sample(&scrape(b), "sikkermail_decrypted_total").unwrap()
            });
        assert_eq!(decrypted, 1.0, "{body}");

        // Certificates: the firm's own by kind and serial, the pinned
        // recipient's by fingerprint; only seconds, never names or CPR.
        let certs: Vec<&str> = body
            .lines()
            .filter(|l| l.starts_with("sikkermail_certificate_expiry_seconds{"))
            .collect();
        for kind in ["root-ca", "issuing-ca", "organisation"] {
            assert!(
                certs
                    .iter()
                    .any(|l| l.contains(&format!("kind=\"{kind}\""))),
                "{kind}: {certs:?}"
            );
        }
        let recipient = certs
            .iter()
            .find(|l| l.contains("kind=\"recipient\""))
            .unwrap_or_else(|| panic!("{certs:?}"));
        assert!(
            recipient.contains("email=\"post@retten.test\""),
            "{recipient}"
        );
        let left: f64 = recipient.rsplit(' ').next().unwrap().parse().unwrap();
        assert!(
            (19.0 * 86400.0..=20.0 * 86400.0).contains(&left),
            "{recipient}"
        );
        assert!(
            certs
                .iter()
                .all(|l| !l.contains("CN=") && !l.contains("CPR") && !l.contains("PID")),
            "{certs:?}"
        );

        // promtool lints the real output, and it has every metric the
        // rules use.
        promtool(&["check", "metrics"], Some(&body));
        let types: BTreeSet<&str> = body
            .lines()
            .filter_map(|l| l.strip_prefix("# TYPE "))
            .filter_map(|l| l.split(' ').next())
            .collect();
        let used = names_in_rules();
        assert!(used.len() >= 8, "{used:?}");
        for name in &used {
            assert!(
                types.contains(name.as_str()),
                "the rules use {name}, which /metrics does not have"
            );
            assert!(
                body.lines().any(
                    |l| l.starts_with(name.as_str()) && l[name.len()..].starts_with(['{', ' '])
                ),
                "{name} has no sample:\n{body}"
            );
        }
        if let Some((b, _node)) = other {
            b.stop();
        }
        serve.stop();
    }
}
