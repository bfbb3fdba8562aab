//! The configuration: defaults, the example file, environment overrides,
//! and every error reported at once.

#![allow(clippy::unwrap_used)]

use std::net::IpAddr;
use std::time::Duration;

use gateway::Config;
use gateway::config::Network;

fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

#[test]
fn embedded_default() {
    let c = Config::embedded_default();
    assert_eq!(c.data_dir, std::path::PathBuf::from("./sikkermail-data"));
    assert_eq!(c.inbound.listen.to_string(), "127.0.0.1:2525");
    assert_eq!(c.outbound.listen.to_string(), "127.0.0.1:2587");
    assert_eq!(c.http_listen.to_string(), "127.0.0.1:8080");
    assert!(c.inbound.next_hop.is_none() && c.outbound.relay.is_none());
    assert_eq!(c.max_age, Duration::from_secs(5 * 86400));
    assert!(
        c.is_local("anyone@anywhere.test"),
        "no domains: any recipient"
    );
    let lo: IpAddr = "127.0.0.1".parse().unwrap();
    assert!(c.outbound.trusted_networks.iter().any(|n| n.contains(lo)));
    let ext: IpAddr = "192.0.2.1".parse().unwrap();
    assert!(!c.outbound.trusted_networks.iter().any(|n| n.contains(ext)));
}

#[test]
fn the_example_file_is_valid() {
    let text = include_str!("../../sikkermail.example.toml");
    let c = Config::load(Some(("sikkermail.example.toml", text)), &[]).unwrap();
    assert_eq!(c.domains, vec!["advokat.dk".to_string()]);
    assert_eq!(c.inbound.next_hop, Some(("10.0.0.5".to_string(), 25)));
    assert_eq!(
        c.outbound.relay,
        Some(("smtp.provider.dk".to_string(), 587))
    );
    assert!(c.is_local("post@advokat.dk") && c.is_local("x@afd.advokat.dk"));
    assert!(!c.is_local("x@xadvokat.dk") && !c.is_local("x@gmail.com"));
    // The admin e-mails: from the first domain, through the outbound
    // listener; links from the bound HTTP address; no Secure cookie.
    assert_eq!(c.admin_mail_from, "sikkermail@advokat.dk");
    assert_eq!(c.admin_mail_relay, None);
    assert_eq!(c.public_url, None);
    assert!(!c.secure_cookie);
    // Nobody may apply for an organisation unless the file says so.
    assert!(!c.admin_applications);
}

#[test]
fn applications_are_a_setting_off_by_default() {
    let load = |t: &str| Config::load(Some(("t.toml", t)), &[]);
    assert!(!load("").unwrap().admin_applications);
    assert!(
        load("[admin]\napplications = true\n")
            .unwrap()
            .admin_applications
    );
    let errs = load("[admin]\napplications = \"yes\"\n").unwrap_err();
    assert!(
        errs.iter().any(|e| e.0.contains("applications")),
        "{errs:?}"
    );
}

#[test]
fn recipient_lists_and_verification() {
    let load = |t: &str| Config::load(Some(("t.toml", t)), &[]);
    let c = load("[organisation]\ndomains = [\"firma.dk\"]\n[inbound]\nrecipients = [\"Post@Firma.dk\", \"@sag.firma.dk\"]\n").unwrap();
    assert!(c.is_mailbox("post@firma.dk"));
    assert!(c.is_mailbox("x@sag.firma.dk"));
    assert!(!c.is_mailbox("other@firma.dk"));
    assert!(!c.is_mailbox("post@evil.dk"));
    assert!(!c.inbound.verify_recipients);
    // Verification needs a server to ask.
    let errs = load("[inbound]\nverify_recipients = true\n").unwrap_err();
    assert!(
        errs.iter()
            .any(|e| e.0.contains("verify_recipients") && e.0.contains("next_hop")),
        "{errs:?}"
    );
    assert!(
        load("[inbound]\nnext_hop = \"10.0.0.5:25\"\nverify_recipients = true\n")
            .unwrap()
            .inbound
            .verify_recipients
    );
}

#[test]
fn public_url_and_secure_cookie() {
    let c = Config::load(
        Some((
            "f.toml",
            "[http]\npublic_url = \"https://sm.advokat.dk/\"\n",
        )),
        &[],
    )
    .unwrap();
    assert_eq!(c.public_url.as_deref(), Some("https://sm.advokat.dk"));
    assert!(c.secure_cookie, "https in front: Secure cookies");
    let c = Config::load(
        Some(("f.toml", "[http]\npublic_url = \"https://sm.advokat.dk\"\nsecure_cookie = false\n[admin]\nmail_relay = \"mail.advokat.dk:25\"\n")),
        &[],
    )
    .unwrap();
    assert!(!c.secure_cookie);
    assert_eq!(
        c.admin_mail_relay,
        Some(("mail.advokat.dk".to_string(), 25))
    );
    let errs = Config::load(
        Some((
            "f.toml",
            "[http]\npublic_url = \"sm.advokat.dk\"\nsecure_cookie = \"ja\"\n",
        )),
        &[],
    )
    .unwrap_err();
    let text = format!("{errs:?}");
    assert!(
        text.contains("public_url") && text.contains("secure_cookie"),
        "{text}"
    );
}

#[test]
fn environment_overrides_the_file() {
    let text = "[inbound]\nnext_hop = \"10.0.0.5:25\"\n[organisation]\ndomains = [\"a.dk\"]\n";
    let c = Config::load(
        Some(("f.toml", text)),
        &env(&[
            ("SIKKERMAIL_INBOUND_NEXT_HOP", "127.0.0.1:2526"),
            ("SIKKERMAIL_ORGANISATION_DOMAINS", "b.dk, c.dk"),
            ("SIKKERMAIL_DATA_DIR", "/srv/sm"),
            ("SIKKERMAIL_QUEUE_MAX_AGE", "2h"),
            // Not configuration keys: ignored.
            ("SIKKERMAIL_MASTER_KEY", "x"),
            ("SIKKERMAIL_REQUIRE_PEERS", "1"),
        ]),
    )
    .unwrap();
    assert_eq!(c.inbound.next_hop, Some(("127.0.0.1".to_string(), 2526)));
    assert_eq!(c.domains, vec!["b.dk".to_string(), "c.dk".to_string()]);
    assert_eq!(c.data_dir, std::path::PathBuf::from("/srv/sm"));
    assert_eq!(c.max_age, Duration::from_secs(7200));
}

#[test]
fn every_error_at_once_with_where() {
    let text = "bogus = 1\n[inbound]\nlisten = \"nowhere\"\nnext_hop = \"host-without-port\"\n[outbound]\ntrusted_networks = [\"10.0.0.0/33\"]\n[queue]\nmax_age = \"5 weeks\"\nworkers = 0\n[nope]\nx = 1\n";
    let errs = Config::load(
        Some(("gw.toml", text)),
        &env(&[("SIKKERMAIL_LOG_FORMAT", "xml")]),
    )
    .unwrap_err();
    let all: Vec<String> = errs.iter().map(|e| e.to_string()).collect();
    let want = [
        "gw.toml:1: unknown key bogus",
        "gw.toml:3: [inbound] listen: \"nowhere\" is not an IP address and port",
        "gw.toml:4: [inbound] next_hop: \"host-without-port\" is not host:port",
        "gw.toml:6: [outbound] trusted_networks: \"10.0.0.0/33\": prefix length must be 0..=32",
        "gw.toml:8: [queue] max_age: \"5 weeks\" is not a duration",
        "gw.toml:9: [queue] workers: must be at least 1",
        "gw.toml:10: unknown section [nope]",
        "SIKKERMAIL_LOG_FORMAT (environment): must be \"text\" or \"json\"",
    ];
    for w in want {
        assert!(
            all.iter().any(|e| e.starts_with(w)),
            "missing {w:?} in {all:#?}"
        );
    }
    assert_eq!(all.len(), want.len(), "{all:#?}");
}

#[test]
fn syntax_error_names_the_line() {
    let errs = Config::load(Some(("x.toml", "[inbound]\nlisten = \n")), &[]).unwrap_err();
    assert!(errs[0].to_string().starts_with("x.toml:2:"), "{errs:?}");
}

#[test]
fn two_listeners_on_one_port_are_refused() {
    let errs = Config::load(
        None,
        &env(&[("SIKKERMAIL_OUTBOUND_LISTEN", "127.0.0.1:2525")]),
    )
    .unwrap_err();
    assert!(
        errs[0].to_string().contains("more than one listener"),
        "{errs:?}"
    );
}

#[test]
fn networks() {
    let n = Network::parse("10.1.0.0/16").unwrap();
    assert!(n.contains("10.1.200.3".parse().unwrap()));
    assert!(!n.contains("10.2.0.1".parse().unwrap()));
    assert!(
        n.contains("::ffff:10.1.0.9".parse().unwrap()),
        "IPv4-mapped"
    );
    let all = Network::parse("0.0.0.0/0").unwrap();
    assert!(all.contains("192.0.2.1".parse().unwrap()));
    assert!(
        Network::parse("::1")
            .unwrap()
            .contains("::1".parse().unwrap())
    );
    assert!(Network::parse("banana/8").is_err());
}

#[test]
fn unsafe_combinations_are_refused() {
    let errs = Config::load(
        None,
        &env(&[
            ("SIKKERMAIL_HOSTNAME", "gw example"),
            ("SIKKERMAIL_INBOUND_LISTEN", "0.0.0.0:25"),
        ]),
    )
    .unwrap_err();
    let all: Vec<String> = errs.iter().map(|e| e.to_string()).collect();
    assert!(
        all.iter().any(|e| e.contains("is not a host name")),
        "{all:?}"
    );
    assert!(
        all.iter()
            .any(|e| e.contains("needs [organisation] domains")),
        "{all:?}"
    );
    // With domains, listening beyond loopback is fine.
    Config::load(
        None,
        &env(&[
            ("SIKKERMAIL_INBOUND_LISTEN", "0.0.0.0:25"),
            ("SIKKERMAIL_ORGANISATION_DOMAINS", "advokat.dk"),
        ]),
    )
    .unwrap();
}

#[test]
fn mailbox_tables_with_defaults_overrides_and_errors() {
    use gateway::config::ImapTls;
    let text = "[mailbox.post]\nhost = \"imap.advokat.dk\"\nuser = \"post@advokat.dk\"\npassword_env = \"POST_PW\"\n\
[mailbox.arkiv-2019]\nhost = \"127.0.0.1\"\nport = 1143\ntls = \"none\"\nuser = \"arkiv\"\n\
folders = [\"INBOX\", \"Arkiv/Sikker post æøå\"]\narchive = \"Gammel krypteret\"\nlive = false\nbatch = 20\n";
    let c = Config::load(
        Some(("m.toml", text)),
        &env(&[("SIKKERMAIL_MAILBOX_POST_PORT", "10993")]),
    )
    .unwrap();
    let p = c.mailbox("post").unwrap();
    assert_eq!(
        (p.host.as_str(), p.port, p.tls),
        ("imap.advokat.dk", 10993, ImapTls::Implicit)
    );
    assert_eq!(p.folders, vec!["INBOX".to_string()]);
    assert_eq!(p.archive, "Krypteret original");
    assert!(p.live && p.ca.is_none());
    assert_eq!(p.password_env.as_deref(), Some("POST_PW"));
    let a = c.mailbox("arkiv-2019").unwrap();
    assert_eq!(
        (a.port, a.tls, a.live, a.batch),
        (1143, ImapTls::None, false, 20)
    );
    assert_eq!(a.folders[1], "Arkiv/Sikker post æøå");
    assert_eq!(a.password_env, None, "sealed in the store");
    // STARTTLS defaults to 143.
    let c = Config::load(
        Some((
            "m.toml",
            "[mailbox.x]\nhost = \"h\"\nuser = \"u\"\ntls = \"starttls\"\n",
        )),
        &[],
    )
    .unwrap();
    assert_eq!(c.mailbox("x").unwrap().port, 143);

    let bad = "[mailbox.post]\nport = 70000\ntls = \"ssl\"\nfolders = [\"INBOX\", \"Krypteret original\"]\nbogus = 1\n\
[mailbox.\"sæt mig\"]\nhost = \"h\"\n";
    let all: Vec<String> = Config::load(Some(("m.toml", bad)), &[])
        .unwrap_err()
        .iter()
        .map(|e| e.to_string())
        .collect();
    for w in [
        "[mailbox.post]: host is missing",
        "[mailbox.post]: user is missing",
        "m.toml:2: [mailbox.post] port: must be at most 65535",
        "m.toml:3: [mailbox.post] tls: must be implicit, starttls or none",
        "[mailbox.post] archive: the archive folder cannot be one of the folders",
        "m.toml:5: unknown key [mailbox.post] bogus",
        "m.toml:6: mailbox name \"sæt mig\"",
    ] {
        assert!(
            all.iter().any(|e| e.contains(w)),
            "missing {w:?} in {all:#?}"
        );
    }
}

#[test]
fn connection_budgets_and_the_data_rate() {
    let c = Config::embedded_default();
    assert_eq!(
        (
            c.inbound.max_connections,
            c.inbound.max_connections_per_address
        ),
        (256, 20)
    );
    assert_eq!(
        (
            c.outbound.max_connections,
            c.outbound.max_connections_per_address
        ),
        (64, 32)
    );
    assert_eq!(
        (c.inbound.min_data_rate, c.inbound.data_grace),
        (500, Duration::from_secs(30))
    );
    assert_eq!(
        (
            c.http_max_connections,
            c.http_max_connections_per_address,
            c.http_header_timeout
        ),
        (512, 64, Duration::from_secs(10))
    );
    assert_eq!(c.http_request_timeout, Duration::from_secs(60));
    let c = Config::load(
        Some((
            "gw.toml",
            "[inbound]\nmax_connections_per_address = 5\nmin_data_rate = 0\n",
        )),
        &env(&[
            ("SIKKERMAIL_OUTBOUND_MAX_CONNECTIONS", "8"),
            ("SIKKERMAIL_HTTP_HEADER_TIMEOUT", "2s"),
            ("SIKKERMAIL_INBOUND_DATA_GRACE", "1m"),
        ]),
    )
    .unwrap();
    assert_eq!(c.inbound.max_connections_per_address, 5);
    assert_eq!(c.inbound.min_data_rate, 0, "0: no minimum");
    assert_eq!(c.inbound.data_grace, Duration::from_secs(60));
    assert_eq!(c.outbound.max_connections, 8);
    assert_eq!(c.http_header_timeout, Duration::from_secs(2));
    let errs = Config::load(
        Some((
            "gw.toml",
            "[inbound]\nmax_connections = 0\n[http]\nheader_timeout = \"0s\"\nmax_connections_per_address = \"many\"\n",
        )),
        &[],
    )
    .unwrap_err();
    let all: Vec<String> = errs.iter().map(|e| e.to_string()).collect();
    for w in [
        "gw.toml:2: [inbound] max_connections: must be at least 1",
        "gw.toml:4: [http] header_timeout: must be more than 0 s",
        "gw.toml:5: [http] max_connections_per_address: an integer is expected",
    ] {
        assert!(
            all.iter().any(|e| e.starts_with(w)),
            "missing {w:?} in {all:#?}"
        );
    }
    assert_eq!(all.len(), 3, "{all:#?}");
}
