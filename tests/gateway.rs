//! `sikkermail serve` end to end, over loopback sockets, against real peers:
//! swaks and Python's smtplib send, Postfix's smtp-sink is the next hop
//! (dumping each message to a file), OpenSSL makes and reads the S/MIME.
//! Tests that need a peer skip loudly without it, and fail instead when
//! SIKKERMAIL_REQUIRE_PEERS=1.

#![allow(clippy::unwrap_used)]

mod common;
mod serve;
mod site;

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::io::{BufRead, BufReader, Read};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{Sink, free_port, peer, sh, sh_status};
use serve::{Serve, bin, config_file};
use site::{Site, first_field, make_oces2_p12, sites};

fn peers(tools: &[&str]) -> bool {
    tools.iter().all(|t| peer(t))
}

/// swaks sending `data` (a file) from `from` to `to` at `addr`.
fn swaks(addr: SocketAddr, from: &str, to: &str, data: &Path) -> String {
    let o = Command::new("swaks")
        .args(["-s", &addr.to_string(), "-f", from, "-t", to, "--data"])
        .arg(format!("@{}", data.display()))
        .args(["-n", "--timeout", "30"])
        .output()
        .unwrap();
    let out = String::from_utf8_lossy(&o.stdout).to_string();
    assert!(
        o.status.success(),
        "swaks failed: {out}{}",
        String::from_utf8_lossy(&o.stderr)
    );
    out
}

/// The header value `name` of a message (first occurrence).
fn header<'a>(msg: &'a str, name: &str) -> Option<&'a str> {
    let head = msg.split("\n\n").next().unwrap_or("");
    head.lines().find_map(|l| {
        let (n, v) = l.split_once(':')?;
        n.eq_ignore_ascii_case(name).then(|| v.trim())
    })
}

fn count_headers(msg: &str, name: &str) -> usize {
    let head = msg.split("\n\n").next().unwrap_or("");
    head.lines()
        .filter(|l| {
            l.split_once(':')
                .is_some_and(|(n, _)| n.eq_ignore_ascii_case(name))
        })
        .count()
}

#[test]
fn serve_without_configuration_makes_its_data_directory_and_delivers_to_maildir() {
    if !peers(&["swaks"]) {
        return;
    }
    let tmp = tempfile::Builder::new()
        .prefix("bare-")
        .tempdir_in(env!("CARGO_TARGET_TMPDIR"))
        .unwrap();
    let cwd = tmp.path();
    // No --config, no data directory: only the ports differ from the
    // embedded defaults (tests run side by side).
    let mut c = bin();
    c.arg("serve")
        .current_dir(cwd)
        .env("SIKKERMAIL_INBOUND_LISTEN", "127.0.0.1:0")
        .env("SIKKERMAIL_OUTBOUND_LISTEN", "127.0.0.1:0")
        .env("SIKKERMAIL_HTTP_LISTEN", "127.0.0.1:0");
    let serve = Serve::spawn(c, &cwd.join("serve.log"));
    let data = cwd.join("sikkermail-data");
    assert!(data.join("sikkermail.db").exists());
    assert!(data.join("master.key").exists());
    assert!(
        data.join("tls/cert.pem").exists(),
        "self-signed STARTTLS certificate"
    );

    fs::write(
        cwd.join("m.eml"),
        "From: a@udenfor.test\r\nTo: post@advokat.test\r\nSubject: hej\r\nX-Sikkermail-Decrypted: forged\r\n\r\nHej.\r\n",
    )
    .unwrap();
    let tx = swaks(
        serve.inbound,
        "a@udenfor.test",
        "post@advokat.test",
        &cwd.join("m.eml"),
    );
    assert!(tx.contains("250 2.0.0"), "{tx}");
    let new = data.join("maildir/post@advokat.test/new");
    let msg = serve.maildir_message(&new);
    assert!(msg.contains("Hej."), "{msg}");
    assert_eq!(
        header(&msg, "X-Sikkermail-Signature"),
        Some("none"),
        "{msg}"
    );
    assert!(
        !msg.contains("forged"),
        "an outside X-Sikkermail header survived: {msg}"
    );
    assert_eq!(count_headers(&msg, "Received"), 1, "{msg}");

    // A second `serve` on the same data directory is refused.
    let o = bin()
        .arg("serve")
        .current_dir(cwd)
        .env("SIKKERMAIL_INBOUND_LISTEN", "127.0.0.1:0")
        .env("SIKKERMAIL_OUTBOUND_LISTEN", "127.0.0.1:0")
        .env("SIKKERMAIL_HTTP_LISTEN", "127.0.0.1:0")
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("another `sikkermail serve` is running"),
        "{err}"
    );

    let (code, body) = serve.http_get("/healthz");
    assert_eq!((code, body.as_str()), (200, "ok\n"));
    assert_eq!(serve.http_get("/nope").0, 404);
    assert_eq!(
        serve.metric("sikkermail_messages_received_total{direction=\"inbound\"}"),
        1.0
    );
    assert_eq!(
        serve.metric("sikkermail_deliveries_total{direction=\"inbound\"}"),
        1.0
    );
    serve.stop();
}

/// The organisation of a site: its certificate (PEM file) for outsiders to
/// encrypt to, its internal root, and a legacy OCES2 certificate.
struct Org {
    org_cert: String,
    root: String,
    oces2_cert: String,
}

fn set_up_org(site: &Site) -> Org {
    let d = site.dir.parent().unwrap().to_path_buf();
    site.init_firm();
    let id = site.issue_mailbox_cert("post@advokat.test");
    let org_cert = d.join("org.crt");
    fs::write(&org_cert, site.pem(&id)).unwrap();
    let root = d.join("root.crt");
    fs::write(&root, site.pem("1")).unwrap();
    let (p12, oces2) = make_oces2_p12(&d);
    let o = site.run_env(
        &["key", "import", &p12, "--password-env", "PW", "--legacy"],
        &[("PW", "gammel")],
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    Org {
        org_cert: org_cert.display().to_string(),
        root: root.display().to_string(),
        oces2_cert: oces2,
    }
}

/// An outside party: a CA of its own and a signing certificate from it
/// (what a court's MitID Erhverv certificate looks like to us).
fn outside_party(dir: &Path, cn: &str, email: &str) -> (String, String, String) {
    sh(
        dir,
        &format!(
            "openssl req -x509 -newkey rsa:2048 -nodes -days 30 -subj '/CN={cn} CA' -keyout {cn}-ca.key -out {cn}-ca.crt 2>/dev/null && \
             openssl req -newkey rsa:2048 -nodes -subj '/CN={cn}/emailAddress={email}' -keyout {cn}.key -out {cn}.csr 2>/dev/null && \
             printf 'basicConstraints=CA:FALSE\\nkeyUsage=digitalSignature,keyEncipherment\\nextendedKeyUsage=emailProtection\\nsubjectAltName=email:{email}\\n' > {cn}.ext && \
             openssl x509 -req -in {cn}.csr -CA {cn}-ca.crt -CAkey {cn}-ca.key -CAcreateserial -days 30 -extfile {cn}.ext -out {cn}.crt 2>/dev/null"
        ),
    );
    let p = |n: &str| dir.join(n).display().to_string();
    (
        p(&format!("{cn}-ca.crt")),
        p(&format!("{cn}.crt")),
        p(&format!("{cn}.key")),
    )
}

#[test]
fn inbound_decrypts_oces3_and_legacy_oces2_verifies_and_harvests() {
    if !peers(&["swaks", "smtp-sink", "openssl"]) {
        return;
    }
    for site in sites() {
        let d = site.dir.parent().unwrap().to_path_buf();
        let org = set_up_org(&site);
        let (court_ca, court_crt, court_key) = outside_party(&d, "retten", "post@retten.test");
        let sink = Sink::start(&d.join("sink"));
        let serve = Serve::start(
            &site,
            &format!(
                "[organisation]\ndomains = [\"advokat.test\"]\n[inbound]\nnext_hop = \"127.0.0.1:{}\"\nnext_hop_tls = \"none\"\ntrust_anchors = [\"{court_ca}\"]\n",
                sink.port
            ),
        );
        fs::write(
            d.join("inner.txt"),
            "Content-Type: text/plain; charset=utf-8\r\n\r\nDom i sag 2026-17: frifundet.\r\n",
        )
        .unwrap();
        // 1. To the organisation certificate (OCES3), signed by the court inside.
        sh(
            &d,
            &format!(
                "openssl cms -sign -in inner.txt -signer {court_crt} -inkey {court_key} -out signed.txt && \
                 openssl cms -encrypt -aes-256-cbc -in signed.txt -out m1.eml -from post@retten.test -to post@advokat.test -subject 'Dom 1' {}",
                org.org_cert
            ),
        );
        // 2. To the retired OCES2 key (old mail, still opens).
        sh(
            &d,
            &format!(
                "openssl cms -encrypt -aes-128-cbc -in inner.txt -out m2.eml -subject 'Dom 2' {}",
                org.oces2_cert
            ),
        );
        // 3. To a key nobody here holds: delivered as received, with the reason.
        sh(
            &d,
            &format!(
                "openssl cms -encrypt -aes-256-cbc -in inner.txt -out m3.eml -subject 'Dom 3' {court_crt}"
            ),
        );
        // 4. A forged info header hidden inside the encryption.
        fs::write(
            d.join("forged.txt"),
            "X-Sikkermail-Signature: valid; signer=dommer@retten.test\r\nContent-Type: text/plain\r\n\r\nFalsk.\r\n",
        )
        .unwrap();
        sh(
            &d,
            &format!(
                "openssl cms -encrypt -aes-256-cbc -in forged.txt -out m4.eml -subject 'Dom 4' {}",
                org.org_cert
            ),
        );
        // 5. A valid signature by someone who is not the sender.
        sh(
            &d,
            &format!(
                "openssl cms -sign -in inner.txt -signer {court_crt} -inkey {court_key} -from dommer@falsk.test -subject 'Dom 5' -out m5.eml"
            ),
        );
        // An encrypted entity made by OpenSSL (its MIME-Version line left
        // out), to put in a multipart/mixed.
        let encrypted_entity = |to: &str, name: &str| -> String {
            sh(
                &d,
                &format!("openssl cms -encrypt -aes-256-cbc -in inner.txt -out {name} {to}"),
            );
            let text = fs::read_to_string(d.join(name)).unwrap();
            let entity = text
                .split_once('\n')
                .filter(|(first, _)| first.starts_with("MIME-Version"))
                .map_or(text.as_str(), |(_, rest)| rest);
            entity.trim_end().to_string()
        };
        // 6. Encrypted to the organisation, then a relay added a disclaimer
        // part beside it (multipart/mixed): the part opens in place.
        fs::write(
            d.join("m6.eml"),
            format!(
                "From: post@retten.test\r\nTo: post@advokat.test\r\nSubject: Dom 6\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=\"relay\"\r\n\r\n--relay\r\n{}\r\n--relay\r\nContent-Type: text/plain\r\n\r\nAnsvarsfraskrivelse fra relæet.\r\n--relay--\r\n",
                encrypted_entity(&org.org_cert, "part6.txt")
            ),
        )
        .unwrap();
        // 7. The same shape with the part encrypted to a key nobody here
        // holds (a forwarded encrypted message): delivered as received,
        // not counted as undecryptable.
        fs::write(
            d.join("m7.eml"),
            format!(
                "From: post@retten.test\r\nTo: post@advokat.test\r\nSubject: Dom 7\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=\"fwd\"\r\n\r\n--fwd\r\nContent-Type: text/plain\r\n\r\nVideresendt.\r\n--fwd\r\n{}\r\n--fwd--\r\n",
                encrypted_entity(&court_crt, "part7.txt")
            ),
        )
        .unwrap();
        for m in [
            "m1.eml", "m2.eml", "m3.eml", "m4.eml", "m5.eml", "m6.eml", "m7.eml",
        ] {
            swaks(
                serve.inbound,
                "post@retten.test",
                "post@advokat.test",
                &d.join(m),
            );
        }
        // Not ours: refused at RCPT (no open relay).
        let o = Command::new("swaks")
            .args([
                "-s",
                &serve.inbound.to_string(),
                "-f",
                "a@b.test",
                "-t",
                "x@elsewhere.test",
                "-n",
            ])
            .output()
            .unwrap();
        let out = String::from_utf8_lossy(&o.stdout);
        assert!(out.contains("550 5.7.1"), "{out}");

        let got = sink.wait_for(7, 60, || serve.logs());
        let by_subject: BTreeMap<String, String> = got
            .iter()
            .map(|(r, m)| {
                assert_eq!(r, &vec!["post@advokat.test".to_string()]);
                (header(m, "Subject").unwrap_or("").to_string(), m.clone())
            })
            .collect();
        let m1 = &by_subject["Dom 1"];
        assert!(m1.contains("frifundet"), "{m1}");
        let dec = header(m1, "X-Sikkermail-Decrypted").unwrap();
        // The internal CA asserts no OCES policy: neither OCES3 nor OCES2.
        assert!(
            dec.contains("generation=other (unknown: no OCES policy OID, the internal CA's own)")
                && dec.contains("Fælles postkasse"),
            "{dec}"
        );
        assert_eq!(
            header(m1, "X-Sikkermail-Signature"),
            Some("valid; signer=post@retten.test"),
            "{m1}"
        );
        let m2 = &by_subject["Dom 2"];
        assert!(m2.contains("frifundet"), "{m2}");
        let dec2 = header(m2, "X-Sikkermail-Decrypted").unwrap();
        assert!(
            dec2.contains("generation=OCES2 (administrator said --legacy")
                && dec2.contains("VOCES"),
            "{dec2}"
        );
        assert_eq!(header(m2, "X-Sikkermail-Signature"), Some("none"));
        let m3 = &by_subject["Dom 3"];
        assert!(!m3.contains("frifundet"));
        assert!(
            header(m3, "X-Sikkermail-Error").is_some_and(|e| e.starts_with("not decrypted")),
            "{m3}"
        );
        assert!(m3.contains("application/pkcs7-mime") || m3.contains("application/x-pkcs7-mime"));
        let m4 = &by_subject["Dom 4"];
        assert!(m4.contains("Falsk."), "{m4}");
        assert_eq!(count_headers(m4, "X-Sikkermail-Signature"), 1, "{m4}");
        assert_eq!(header(m4, "X-Sikkermail-Signature"), Some("none"), "{m4}");
        let m5 = &by_subject["Dom 5"];
        assert_eq!(
            header(m5, "X-Sikkermail-Signature"),
            Some(
                "invalid (the signer is not the sender dommer@falsk.test); signer=post@retten.test"
            ),
            "{m5}"
        );
        let m6 = &by_subject["Dom 6"];
        assert!(
            m6.contains("frifundet") && m6.contains("Ansvarsfraskrivelse fra relæet."),
            "{m6}"
        );
        assert!(!m6.contains("pkcs7-mime"), "{m6}");
        let dec6 = header(m6, "X-Sikkermail-Decrypted").unwrap();
        assert!(
            dec6.contains("generation=other")
                && dec6.contains("only part 1 of 2 of the multipart/mixed"),
            "{dec6}"
        );
        assert_eq!(header(m6, "X-Sikkermail-Signature"), Some("none"), "{m6}");
        let m7 = &by_subject["Dom 7"];
        assert!(
            m7.contains("Videresendt.") && m7.contains("pkcs7-mime"),
            "{m7}"
        );
        assert!(
            header(m7, "X-Sikkermail-Error")
                .is_some_and(|e| e.starts_with("an encrypted part was left as it is: no key")),
            "{m7}"
        );
        assert!(header(m7, "X-Sikkermail-Decrypted").is_none(), "{m7}");
        // The court's certificate was harvested under its address.
        let list = site.ok(&["recipient", "list"]);
        assert!(
            list.lines().any(|l| l.contains("post@retten.test")
                && l.contains("harvested")
                && l.contains("AES-256-CBC")),
            "{list}"
        );
        assert_eq!(serve.metric("sikkermail_decrypted_total"), 4.0);
        assert_eq!(serve.metric("sikkermail_undecryptable_total"), 1.0);
        let _ = &org.root;
        serve.stop();
    }
}

/// The `X-Sikkermail-Signature` of each of `n` delivered messages, by
/// Subject.
fn signatures_by_subject(sink: &Sink, n: usize, serve: &Serve) -> BTreeMap<String, String> {
    sink.wait_for(n, 60, || serve.logs())
        .iter()
        .map(|(_, m)| {
            (
                header(m, "Subject").unwrap_or("").to_string(),
                header(m, "X-Sikkermail-Signature")
                    .unwrap_or("")
                    .to_string(),
            )
        })
        .collect()
}

/// `serve` with `[http] listen` on a port of its own and `public_url` on
/// it (the internal CA's certificates then name its CRL and OCSP
/// addresses), plus `extra` TOML; the public URL.
fn serve_public(site: &Site, extra: &str, log: &str) -> (Serve, String) {
    let d = site.dir.parent().unwrap();
    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    let cfg = config_file(
        site,
        log,
        &format!("{extra}\n[http]\nlisten = \"127.0.0.1:{port}\"\npublic_url = \"{base}\""),
    );
    let mut c = bin();
    c.arg("serve")
        .arg("--config")
        .arg(&cfg)
        .env("SIKKERMAIL_INBOUND_LISTEN", "127.0.0.1:0")
        .env("SIKKERMAIL_OUTBOUND_LISTEN", "127.0.0.1:0");
    (Serve::spawn(c, &d.join(format!("{log}.log"))), base)
}

/// A signing certificate for `email` from the CA `ca` (made by
/// [`outside_party`]), asserting `policies` (comma-separated OIDs) if any.
fn leaf_of(dir: &Path, ca: &str, cn: &str, email: &str, policies: &str) -> (String, String) {
    let pol = if policies.is_empty() {
        String::new()
    } else {
        format!("certificatePolicies={policies}\\n")
    };
    sh(
        dir,
        &format!(
            "openssl req -newkey rsa:2048 -nodes -subj '/CN={cn}/emailAddress={email}' -keyout {cn}.key -out {cn}.csr 2>/dev/null && \
             printf 'basicConstraints=CA:FALSE\\nkeyUsage=digitalSignature,keyEncipherment\\nextendedKeyUsage=emailProtection\\nsubjectAltName=email:{email}\\n{pol}' > {cn}.ext && \
             openssl x509 -req -in {cn}.csr -CA {ca}-ca.crt -CAkey {ca}-ca.key -CAcreateserial -days 30 -extfile {cn}.ext -out {cn}.crt 2>/dev/null"
        ),
    );
    let p = |n: &str| dir.join(n).display().to_string();
    (p(&format!("{cn}.crt")), p(&format!("{cn}.key")))
}

/// Issue 9 §2: the policy's trust rules for the sender, in the inbound
/// path. Each rule with a message that keeps it and one that breaks it: a
/// valid signature that breaks a rule is "valid but untrusted", never valid.
#[test]
fn inbound_trust_rules_report_valid_but_untrusted() {
    if !peers(&["swaks", "smtp-sink", "openssl"]) {
        return;
    }
    let site = sites().remove(0);
    let d = site.dir.parent().unwrap().to_path_buf();
    set_up_org(&site);
    const OCES3_ORG: &str = "1.2.208.169.1.1.1.3.7";
    // The court's CA; a second, unrelated CA that is trusted too.
    let (court_ca, court_crt, court_key) = outside_party(&d, "retten", "post@retten.test");
    let (other_ca, _, _) = outside_party(&d, "andet", "x@andet.test");
    let fp = sh(
        &d,
        &format!("openssl x509 -in {court_ca} -noout -fingerprint -sha256"),
    )
    .stdout;
    let fp = String::from_utf8_lossy(&fp)
        .trim()
        .rsplit('=')
        .next()
        .unwrap()
        .to_string();
    let (oces_crt, oces_key) = leaf_of(&d, "retten", "byret", "byret@domstol.test", OCES3_ORG);
    let (plain_crt, plain_key) = leaf_of(&d, "retten", "landsret", "landsret@domstol.test", "");
    let (anchored_crt, anchored_key) = leaf_of(&d, "retten", "skifte", "skifte@anker.test", "");
    let (stranger_crt, stranger_key) = leaf_of(&d, "andet", "fremmed", "fremmed@anker.test", "");
    let (crl_crt, crl_key) = leaf_of(&d, "retten", "spaerret", "spaerret@crl.test", "");
    fs::write(
        d.join("rules.toml"),
        format!(
            "[domain.\"domstol.test\"]\nsigner_policies = [\"{OCES3_ORG}\"]\n\n[domain.\"anker.test\"]\nsigner_anchors = [\"sha256:{fp}\"]\n\n[domain.\"crl.test\"]\nrevocation = \"require\"\n"
        ),
    )
    .unwrap();
    let sink = Sink::start(&d.join("sink"));
    let serve = Serve::start(
        &site,
        &format!(
            "policy = \"{}\"\n[organisation]\ndomains = [\"advokat.test\"]\n[inbound]\nnext_hop = \"127.0.0.1:{}\"\nnext_hop_tls = \"none\"\ntrust_anchors = [\"{court_ca}\", \"{other_ca}\"]\n",
            d.join("rules.toml").display(),
            sink.port
        ),
    );
    fs::write(
        d.join("inner.txt"),
        "Content-Type: text/plain; charset=utf-8\r\n\r\nKendelse.\r\n",
    )
    .unwrap();
    let cases = [
        ("Regel 1", &oces_crt, &oces_key, "byret@domstol.test"),
        ("Regel 2", &plain_crt, &plain_key, "landsret@domstol.test"),
        ("Regel 3", &anchored_crt, &anchored_key, "skifte@anker.test"),
        (
            "Regel 4",
            &stranger_crt,
            &stranger_key,
            "fremmed@anker.test",
        ),
        ("Regel 5", &crl_crt, &crl_key, "spaerret@crl.test"),
        ("Regel 6", &court_crt, &court_key, "post@retten.test"),
    ];
    for (i, (subject, crt, key, from)) in cases.iter().enumerate() {
        let f = format!("r{i}.eml");
        sh(
            &d,
            &format!(
                "openssl cms -sign -in inner.txt -signer {crt} -inkey {key} -from {from} -to post@advokat.test -subject '{subject}' -out {f}"
            ),
        );
        swaks(serve.inbound, from, "post@advokat.test", &d.join(&f));
    }
    let sig = signatures_by_subject(&sink, cases.len(), &serve);
    // signer_policies: kept (the chain asserts OCES3) and broken (none).
    assert_eq!(sig["Regel 1"], "valid; signer=byret@domstol.test");
    let r2 = &sig["Regel 2"];
    assert!(
        r2.starts_with(&format!(
            "valid but untrusted ([domain.\"domstol.test\"] signer_policies = [\"{OCES3_ORG}\"] (line 2): the signer's chain asserts none of them"
        )) && r2.ends_with("; signer=landsret@domstol.test"),
        "{r2}"
    );
    // signer_anchors: kept (the court's CA) and broken (the other CA).
    assert_eq!(sig["Regel 3"], "valid; signer=skifte@anker.test");
    let r4 = &sig["Regel 4"];
    assert!(
        r4.starts_with("valid but untrusted ([domain.\"anker.test\"] signer_anchors")
            && r4.contains("another anchor"),
        "{r4}"
    );
    // revocation = "require" and the certificate names no OCSP responder
    // or CRL: not valid, but unknown.
    let r5 = &sig["Regel 5"];
    assert!(
        r5.starts_with("unknown (revocation unavailable: no revocation data for ")
            && r5.contains("names no OCSP responder or CRL")
            && r5.ends_with("; signer=spaerret@crl.test"),
        "{r5}"
    );
    // No rule for the sender: valid as before.
    assert_eq!(sig["Regel 6"], "valid; signer=post@retten.test");
    // Untrusted signers are not harvested; trusted ones are.
    let list = site.ok(&["recipient", "list"]);
    assert!(list.contains("byret@domstol.test"), "{list}");
    assert!(!list.contains("landsret@domstol.test"), "{list}");
    assert!(!list.contains("fremmed@anker.test"), "{list}");
    serve.stop();
}

/// Issue 9 §3: with `[http] public_url`, the internal CA's certificates
/// name this gateway's CRL and OCSP addresses, and `/ocsp/<org>` answers
/// `openssl ocsp -url` for good, revoked and unknown certificates, with the
/// nonce, signed by the issuing CA (POST and the GET form).
#[test]
fn our_ocsp_responder_answers_openssl() {
    if !peers(&["openssl", "python3"]) {
        return;
    }
    let site = sites().remove(0);
    let d = site.dir.parent().unwrap().to_path_buf();
    site.init_firm();
    let (serve, base) = serve_public(&site, "", "serve-ocsp");
    let issue = |name: &str, email: &str| {
        first_field(&site.ok(&[
            "cert",
            "issue",
            "--kind",
            "organisation",
            "--name",
            name,
            "--email",
            email,
        ]))
    };
    let good = issue("God", "god@advokat.test");
    let bad = issue("Spaerret", "spaerret@advokat.test");
    site.ok(&["cert", "revoke", &bad, "--reason", "keyCompromise"]);
    for (id, f) in [
        ("1", "root.pem"),
        ("2", "issuing.pem"),
        (good.as_str(), "good.pem"),
        (bad.as_str(), "bad.pem"),
    ] {
        fs::write(d.join(f), site.pem(id)).unwrap();
    }
    let text = String::from_utf8(sh(&d, "openssl x509 -in good.pem -noout -text").stdout).unwrap();
    assert!(
        text.contains(&format!("OCSP - URI:{base}/ocsp/1")),
        "{text}"
    );
    assert!(text.contains(&format!("URI:{base}/crl/1.crl")), "{text}");
    let issuing =
        String::from_utf8(sh(&d, "openssl x509 -in issuing.pem -noout -subject").stdout).unwrap();
    assert!(
        issuing.contains("udstedende"),
        "id 2 is the issuing CA: {issuing}"
    );

    let ask = |what: &str| {
        let o = sh_status(
            &d,
            &format!("openssl ocsp -issuer issuing.pem {what} -url {base}/ocsp/1 -CAfile root.pem"),
        );
        (
            String::from_utf8_lossy(&o.stdout).into_owned(),
            String::from_utf8_lossy(&o.stderr).into_owned(),
            o.status.success(),
        )
    };
    let (out, err, ok) = ask("-cert good.pem");
    assert!(ok && out.contains("good.pem: good"), "{out}{err}");
    assert!(
        err.contains("Response verify OK") && !err.contains("WARNING"),
        "{err}"
    );
    let (out, err, ok) = ask("-cert bad.pem");
    assert!(ok && out.contains("bad.pem: revoked"), "{out}{err}");
    // The reason recorded at `cert revoke`, not "unspecified".
    assert!(
        out.contains("Reason: keyCompromise") && out.contains("Revocation Time"),
        "{out}"
    );
    let (out, err, ok) = ask("-serial 0xDEADBEEF");
    assert!(ok && out.contains("0xDEADBEEF: unknown"), "{out}{err}");
    // The issuing CA itself, answered by the root.
    let o = sh_status(
        &d,
        &format!(
            "openssl ocsp -issuer root.pem -cert issuing.pem -url {base}/ocsp/1 -CAfile root.pem"
        ),
    );
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(
        out.contains("issuing.pem: good"),
        "{out}{}",
        String::from_utf8_lossy(&o.stderr)
    );

    // GET (RFC 6960 A.1): base64 of the DER request in the path.
    sh(
        &d,
        "openssl ocsp -issuer issuing.pem -cert bad.pem -no_nonce -reqout req.der",
    );
    sh(
        &d,
        &format!(
            "python3 -c \"import base64, urllib.parse, urllib.request; r = base64.b64encode(open('req.der', 'rb').read()).decode(); open('resp.der', 'wb').write(urllib.request.urlopen('{base}/ocsp/1/' + urllib.parse.quote(r, safe='')).read())\""
        ),
    );
    let o = sh(
        &d,
        "openssl ocsp -respin resp.der -issuer issuing.pem -cert bad.pem -CAfile root.pem",
    );
    assert!(String::from_utf8_lossy(&o.stdout).contains("bad.pem: revoked"));
    // Garbage is answered as a malformed request; an unknown organisation is 404.
    fs::write(d.join("junk.der"), b"not an OCSP request").unwrap();
    let o = sh_status(
        &d,
        &format!(
            "python3 -c \"import urllib.request; q = urllib.request.Request('{base}/ocsp/1', data=open('junk.der', 'rb').read(), headers={{'Content-Type': 'application/ocsp-request'}}); open('junk.resp', 'wb').write(urllib.request.urlopen(q).read())\" && openssl ocsp -respin junk.resp -resp_text -noverify"
        ),
    );
    let out = String::from_utf8_lossy(&o.stdout).into_owned() + &String::from_utf8_lossy(&o.stderr);
    assert!(
        out.contains("malformedrequest") || out.contains("malformedRequest"),
        "{out}"
    );
    let o = sh_status(
        &d,
        &format!("openssl ocsp -issuer issuing.pem -cert good.pem -url {base}/ocsp/99"),
    );
    assert!(!o.status.success());
    serve.stop();
}

/// Issue 9 §3 end to end: inbound signatures are checked for revocation
/// (here colleagues' certificates of the gateway's own CA, answered from its
/// records), with the built-in `revocation = "prefer"`: not revoked is
/// valid, revoked is invalid; and `smime verify --fetch-revocation`.
#[test]
fn inbound_signatures_are_checked_for_revocation() {
    if !peers(&["swaks", "smtp-sink", "openssl"]) {
        return;
    }
    let site = sites().remove(0);
    let d = site.dir.parent().unwrap().to_path_buf();
    site.init_firm();
    let sink = Sink::start(&d.join("sink"));
    let (serve, base) = serve_public(
        &site,
        &format!(
            "[organisation]\ndomains = [\"advokat.test\"]\n[inbound]\nnext_hop = \"127.0.0.1:{}\"\nnext_hop_tls = \"none\"",
            sink.port
        ),
        "serve-rev",
    );
    fs::write(
        d.join("inner.txt"),
        "Content-Type: text/plain; charset=utf-8\r\n\r\nNotat.\r\n",
    )
    .unwrap();
    for (i, who) in ["kollega", "fratraadt"].iter().enumerate() {
        let id = first_field(&site.ok(&[
            "cert",
            "issue",
            "--kind",
            "organisation",
            "--name",
            who,
            "--email",
            &format!("{who}@advokat.test"),
        ]));
        let p12 = d.join(format!("{who}.p12")).display().to_string();
        let o = site.run_env(
            &[
                "cert",
                "export",
                &id,
                "--out-p12",
                &p12,
                "--password-env",
                "PW",
            ],
            &[("PW", "x")],
        );
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        if i == 1 {
            site.ok(&["cert", "revoke", &id, "--reason", "affiliationChanged"]);
        }
        sh(
            &d,
            &format!(
                "openssl pkcs12 -in {who}.p12 -passin pass:x -nodes -out {who}.pem 2>/dev/null && \
                 openssl cms -sign -in inner.txt -signer {who}.pem -from {who}@advokat.test -to post@advokat.test -subject '{who}' -out {who}.eml"
            ),
        );
        swaks(
            serve.inbound,
            &format!("{who}@advokat.test"),
            "post@advokat.test",
            &d.join(format!("{who}.eml")),
        );
    }
    // The certificates name the gateway's responder (for outside parties).
    let text = sh(&d, "openssl x509 -in kollega.pem -noout -text").stdout;
    assert!(
        String::from_utf8_lossy(&text).contains(&format!("OCSP - URI:{base}/ocsp/1")),
        "{}",
        String::from_utf8_lossy(&text)
    );
    let sig = signatures_by_subject(&sink, 2, &serve);
    assert_eq!(sig["kollega"], "valid; signer=kollega@advokat.test");
    // The gateway's own certificates are answered from its records (the
    // certificates also name its OCSP responder, which
    // `our_ocsp_responder_answers_openssl` checks).
    let r = &sig["fratraadt"];
    assert!(
        r.starts_with("invalid (certificate of CN=fratraadt")
            && r.contains("revoked (affiliationChanged; the internal CA's own records)")
            && r.ends_with("; signer=fratraadt@advokat.test"),
        "{r}"
    );
    // `smime verify --fetch-revocation` with the data directory answers
    // the same way (the store's internal CA is the anchor). Without
    // fetching, the revoked signer is valid: nothing says otherwise.
    let verify = |who: &str, extra: &[&str]| {
        let eml = d.join(format!("{who}.eml")).display().to_string();
        let mut args = vec!["smime", "verify", "--in", &eml];
        args.extend_from_slice(extra);
        let o = site.run(&args);
        (
            o.status.code(),
            String::from_utf8_lossy(&o.stderr).into_owned(),
        )
    };
    // Both levels below the root, the employee's certificate and the
    // issuing CA (which names no responder), are answered from the records,
    // so revocation can be required.
    let (code, err) = verify("kollega", &["--fetch-revocation", "--require-revocation"]);
    assert_eq!(code, Some(0), "{err}");
    assert!(
        err.contains(
            "CN=Advokatfirma Jørgensen udstedende-CA 1: not revoked (the internal CA's own records)"
        ) && err.contains("CN=kollega, serialNumber=")
            && err
                .matches("not revoked (the internal CA's own records)")
                .count()
                == 2,
        "{err}"
    );
    assert_eq!(verify("fratraadt", &[]).0, Some(0));
    let (code, err) = verify("fratraadt", &["--fetch-revocation"]);
    assert_eq!(code, Some(1), "{err}");
    assert!(
        err.contains("revoked (affiliationChanged; the internal CA's own records)"),
        "{err}"
    );
    // An outside CA with the issuing CA's very name, and a certificate with
    // kollega's serial: the records answer only for the CA's own
    // certificate, byte for byte, so nothing answers for this one.
    let out = sh(
        &d,
        "openssl pkcs12 -in kollega.p12 -passin pass:x -clcerts -nokeys | openssl x509 -noout -serial",
    );
    let serial = String::from_utf8_lossy(&out.stdout)
        .trim()
        .trim_start_matches("serial=")
        .to_string();
    sh(
        &d,
        &format!(
            "openssl req -x509 -utf8 -newkey rsa:2048 -nodes -days 30              -subj '/C=DK/O=Advokatfirma Jørgensen/CN=Advokatfirma Jørgensen udstedende-CA 1'              -addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign,cRLSign              -keyout fake-ca.key -out fake-ca.crt 2>/dev/null &&              printf 'basicConstraints=CA:FALSE\nkeyUsage=digitalSignature\nextendedKeyUsage=emailProtection\nsubjectAltName=email:kollega@advokat.test\n' > fake.ext &&              openssl req -newkey rsa:2048 -nodes -subj '/CN=kollega' -keyout fake.key -out fake.csr 2>/dev/null &&              openssl x509 -req -in fake.csr -CA fake-ca.crt -CAkey fake-ca.key -set_serial 0x{serial} -days 30 -extfile fake.ext -out fake.crt 2>/dev/null &&              openssl cms -sign -in inner.txt -signer fake.crt -inkey fake.key -from kollega@advokat.test -out fake.eml"
        ),
    );
    let fake_ca = d.join("fake-ca.crt").display().to_string();
    let (code, err) = verify(
        "fake",
        &[
            "--ca",
            &fake_ca,
            "--fetch-revocation",
            "--require-revocation",
        ],
    );
    assert_eq!(code, Some(1), "{err}");
    assert!(
        err.contains("revocation unavailable: no revocation data for CN=kollega")
            && !err.contains("own records"),
        "{err}"
    );
    serve.stop();
}

#[test]
fn outbound_signs_and_encrypts_and_required_encryption_never_leaks() {
    if !peers(&["swaks", "smtp-sink", "openssl"]) {
        return;
    }
    for site in sites() {
        let d = site.dir.parent().unwrap().to_path_buf();
        let org = set_up_org(&site);
        let (_court_ca, court_crt, court_key) = outside_party(&d, "retten", "post@retten.test");
        site.ok(&["recipient", "import", &court_crt]);
        fs::write(
            d.join("policy.toml"),
            "[domain.\"retten.test\"]\nencrypt = \"required\"\n[domain.\"skat.test\"]\nencrypt = \"required\"\n",
        )
        .unwrap();
        let sink = Sink::start(&d.join("sink"));
        let serve = Serve::start(
            &site,
            &format!(
                "policy = \"{}\"\n[organisation]\ndomains = [\"advokat.test\"]\n[inbound]\nnext_hop = \"127.0.0.1:{port}\"\nnext_hop_tls = \"none\"\n[outbound]\nrelay = \"127.0.0.1:{port}\"\nrelay_tls = \"none\"\n",
                d.join("policy.toml").display(),
                port = sink.port
            ),
        );
        let secret = "Fortroligt: forlig i sag 2026-17.";
        fs::write(
            d.join("out1.eml"),
            format!("From: post@advokat.test\r\nTo: post@retten.test\r\nSubject: Processkrift\r\n\r\n{secret}\r\n"),
        )
        .unwrap();
        fs::write(
            d.join("out2.eml"),
            format!("From: post@advokat.test\r\nTo: ven@andet.test\r\nSubject: [sikker] Til klient\r\n\r\n{secret}\r\n"),
        )
        .unwrap();
        fs::write(
            d.join("out3.eml"),
            "From: post@advokat.test\r\nTo: ven@andet.test\r\nSubject: Frokost\r\n\r\nSes kl. 12.\r\n",
        )
        .unwrap();
        swaks(
            serve.outbound,
            "post@advokat.test",
            "post@retten.test",
            &d.join("out1.eml"),
        );
        swaks(
            serve.outbound,
            "post@advokat.test",
            "ven@andet.test",
            &d.join("out2.eml"),
        );
        swaks(
            serve.outbound,
            "post@advokat.test",
            "ven@andet.test",
            &d.join("out3.eml"),
        );
        // out1 (encrypted), out3 (signed only) and the DSN for out2.
        let got = sink.wait_for(3, 60, || serve.logs());
        for (_, m) in &got {
            assert!(!m.contains(secret), "plaintext left the gateway: {m}");
        }
        let to_court: Vec<&String> = got
            .iter()
            .filter(|(r, _)| r == &vec!["post@retten.test".to_string()])
            .map(|(_, m)| m)
            .collect();
        assert_eq!(to_court.len(), 1);
        fs::write(d.join("court.eml"), to_court[0]).unwrap();
        // The court opens it with OpenSSL and verifies our signature
        // against our internal CA.
        let o = sh(
            &d,
            &format!(
                "openssl cms -decrypt -in court.eml -recip {court_crt} -inkey {court_key} -out court-dec.eml && \
                 openssl cms -verify -in court-dec.eml -CAfile {} -purpose smimesign -out court-plain.txt",
                org.root
            ),
        );
        assert!(o.status.success());
        let plain = fs::read_to_string(d.join("court-plain.txt")).unwrap();
        assert!(plain.contains(secret), "{plain}");
        // The trigger made encryption required for a recipient without a
        // certificate: nothing went to them, the sender got a DSN.
        let to_friend: Vec<&String> = got
            .iter()
            .filter(|(r, _)| r == &vec!["ven@andet.test".to_string()])
            .map(|(_, m)| m)
            .collect();
        assert_eq!(
            to_friend.len(),
            1,
            "only the lunch mail went to ven@: {got:?}"
        );
        assert_eq!(header(to_friend[0], "Subject"), Some("Frokost"));
        assert!(
            to_friend[0].contains("multipart/signed"),
            "signed: {}",
            to_friend[0]
        );
        let dsn: Vec<&String> = got
            .iter()
            .filter(|(r, _)| r == &vec!["post@advokat.test".to_string()])
            .map(|(_, m)| m)
            .collect();
        assert_eq!(dsn.len(), 1, "{got:?}");
        let dsn = dsn[0];
        assert!(dsn.contains("multipart/report"), "{dsn}");
        assert!(
            dsn.contains("Final-Recipient: rfc822; ven@andet.test"),
            "{dsn}"
        );
        assert!(
            dsn.contains("Action: failed") && dsn.contains("5.7.1"),
            "{dsn}"
        );
        assert!(dsn.contains("encryption is required"), "{dsn}");
        assert!(!dsn.contains("[sikker]") || !dsn.contains(secret));
        assert_eq!(serve.metric("sikkermail_encrypted_total"), 1.0);
        assert_eq!(serve.metric("sikkermail_dsn_total"), 1.0);
        serve.stop();
    }
}

/// Python's smtplib clients: `clients` threads send `n` messages in all,
/// each with a unique X-Test-Id; prints the id of every message that got
/// 250, flushed at once (so a kill -9 of the server loses no record).
const CLIENTS_PY: &str = r#"
import smtplib, sys, threading
host, port, n, clients = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
offset = int(sys.argv[5]) if len(sys.argv) > 5 else 0
lock = threading.Lock()
def run(k):
    i = k
    s = None
    while i < n:
        try:
            if s is None:
                s = smtplib.SMTP(host, port, timeout=20)
                s.ehlo("client%d.test" % k)
            body = "From: a@udenfor.test\r\nTo: post@advokat.test\r\nSubject: msg %d\r\nX-Test-Id: %d\r\n\r\n%s\r\n" % (i + offset, i + offset, "x" * 2000)
            s.sendmail("a@udenfor.test", ["post@advokat.test"], body)
            with lock:
                sys.stdout.write("OK %d\n" % (i + offset)); sys.stdout.flush()
            i += clients
        except Exception as e:
            with lock:
                sys.stderr.write("ERR %d %r\n" % (i, e)); sys.stderr.flush()
            s = None
            return
ts = [threading.Thread(target=run, args=(k,)) for k in range(clients)]
[t.start() for t in ts]; [t.join() for t in ts]
"#;

#[test]
fn kill_9_in_the_middle_of_a_stream_loses_no_accepted_message() {
    if !peers(&["smtp-sink", "python3"]) {
        return;
    }
    for site in sites() {
        let d = site.dir.parent().unwrap().to_path_buf();
        site.ok(&["init", "--test"]);
        let sink = Sink::start(&d.join("sink"));
        let port = free_port();
        let extra = format!(
            "[organisation]\ndomains = [\"advokat.test\"]\n[inbound]\nnext_hop = \"127.0.0.1:{}\"\nnext_hop_tls = \"none\"\n",
            sink.port
        );
        let inbound = format!("127.0.0.1:{port}");
        let serve = Serve::start_at(&site, &extra, &inbound);
        fs::write(d.join("clients.py"), CLIENTS_PY).unwrap();
        let mut clients = Command::new("python3")
            .arg(d.join("clients.py"))
            .args(["127.0.0.1", &port.to_string(), "500", "4"])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut out = BufReader::new(clients.stdout.take().unwrap());
        let mut accepted = BTreeSet::new();
        let mut line = String::new();
        // Kill the server after some messages were accepted, mid-stream.
        while accepted.len() < 150 {
            line.clear();
            if out.read_line(&mut line).unwrap() == 0 {
                break;
            }
            accepted.insert(
                line.trim()
                    .strip_prefix("OK ")
                    .unwrap()
                    .parse::<u32>()
                    .unwrap(),
            );
        }
        serve.kill9();
        let mut rest = String::new();
        out.read_to_string(&mut rest).unwrap();
        for l in rest.lines() {
            accepted.insert(l.strip_prefix("OK ").unwrap().parse::<u32>().unwrap());
        }
        clients.wait().unwrap();
        assert!(
            accepted.len() >= 150 && accepted.len() < 500,
            "{}",
            accepted.len()
        );
        // Restart: every accepted message is delivered.
        let serve = Serve::start_at(&site, &extra, &inbound);
        let deadline = Instant::now() + Duration::from_secs(120);
        let delivered = loop {
            let mut ids: BTreeMap<u32, usize> = BTreeMap::new();
            for (_, m) in sink.messages() {
                if let Some(id) = header(&m, "X-Test-Id") {
                    *ids.entry(id.parse().unwrap()).or_default() += 1;
                }
            }
            if accepted.iter().all(|a| ids.contains_key(a)) {
                break ids;
            }
            assert!(
                Instant::now() < deadline,
                "{} accepted messages not delivered after the restart\n{}",
                accepted.iter().filter(|a| !ids.contains_key(a)).count(),
                serve.logs()
            );
            std::thread::sleep(Duration::from_millis(200));
        };
        // Duplicates: only a delivery cut off between the next hop's 250
        // and recording it may repeat (at-least-once); at most one per
        // worker that was delivering when the process died.
        let dups: Vec<(&u32, &usize)> = delivered.iter().filter(|(_, n)| **n > 1).collect();
        eprintln!(
            "crash test: {} accepted, {} delivered, duplicates {:?}",
            accepted.len(),
            delivered.len(),
            dups
        );
        assert!(dups.len() <= 4, "too many duplicates: {dups:?}");
        // A message the server never answered 250 may or may not be there;
        // nothing else is.
        assert!(delivered.keys().all(|k| *k < 500));
        serve.stop();
    }
}

#[test]
fn mail_waits_while_the_next_hop_is_down_and_goes_when_it_returns() {
    if !peers(&["smtp-sink", "swaks"]) {
        return;
    }
    let site = Site::new(false).unwrap();
    let d = site.dir.parent().unwrap().to_path_buf();
    site.ok(&["init", "--test"]);
    let port = free_port();
    let serve = Serve::start(
        &site,
        &format!("[inbound]\nnext_hop = \"127.0.0.1:{port}\"\nnext_hop_tls = \"none\"\n"),
    );
    fs::write(
        d.join("m.eml"),
        "From: a@udenfor.test\r\nSubject: venter\r\n\r\nHej.\r\n",
    )
    .unwrap();
    for _ in 0..3 {
        swaks(
            serve.inbound,
            "a@udenfor.test",
            "post@advokat.test",
            &d.join("m.eml"),
        );
    }
    // Tried and deferred while nobody listens.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let list = site.ok(&["queue", "show", "1"]);
        if list.contains("Connection refused") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no deferral recorded: {list}\n{}",
            serve.logs()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let sink = Sink::start_on(&d.join("sink"), port);
    let got = sink.wait_for(3, 90, || serve.logs());
    assert_eq!(got.len(), 3);
    assert!(got.iter().all(|(_, m)| m.contains("Hej.")));
    serve.stop();
}

#[test]
fn outbound_needs_trust_or_smtp_auth_and_queue_commands_act_and_are_audited() {
    if !peers(&["swaks"]) {
        return;
    }
    let site = Site::new(false).unwrap();
    let d = site.dir.parent().unwrap().to_path_buf();
    site.ok(&["init", "--test"]);
    let pw = "et-langt-kodeord-42";
    let o = site.run_env(
        &["smtp-user", "add", "mailserver", "--password-env", "PW"],
        &[("PW", "kort")],
    );
    assert_eq!(o.status.code(), Some(2), "a short password is refused");
    let o = site.run_env(
        &[
            "smtp-user",
            "add",
            "mailserver",
            "--password-env",
            "PW",
            "--may-send-as",
            "@advokat.test",
        ],
        &[("PW", pw)],
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let list = site.ok(&["smtp-user", "list"]);
    assert!(list.starts_with("mailserver\t"), "{list}");
    assert!(list.contains("may send as @advokat.test"), "{list}");
    // Nobody listens on the relay port: mail stays in the queue.
    let serve = Serve::start(
        &site,
        &format!(
            "[organisation]\ndomains = [\"advokat.test\"]\n[outbound]\ntrusted_networks = []\nrelay = \"127.0.0.1:{}\"\nrelay_tls = \"none\"\n",
            free_port()
        ),
    );
    fs::write(
        d.join("m.eml"),
        "From: post@advokat.test\r\nSubject: x\r\n\r\nHej.\r\n",
    )
    .unwrap();
    let swaks_rc = |extra: &[&str]| {
        let o = Command::new("swaks")
            .args([
                "-s",
                &serve.outbound.to_string(),
                "-f",
                "post@advokat.test",
                "-t",
                "x@retten.test",
            ])
            .args(["--data", &format!("@{}", d.join("m.eml").display()), "-n"])
            .args(extra)
            .output()
            .unwrap();
        (
            o.status.code(),
            String::from_utf8_lossy(&o.stdout).to_string(),
        )
    };
    let (rc, tx) = swaks_rc(&[]);
    assert_eq!(rc, Some(23), "{tx}");
    assert!(tx.contains("530 5.7.0"), "{tx}");
    let (rc, tx) = swaks_rc(&[
        "--tls",
        "-a",
        "PLAIN",
        "-au",
        "mailserver",
        "-ap",
        "forkert-kodeord",
    ]);
    assert_eq!(rc, Some(28), "{tx}");
    let (rc, tx) = swaks_rc(&["--tls", "-a", "PLAIN", "-au", "nobody", "-ap", pw]);
    assert_eq!(rc, Some(28), "{tx}");
    let (rc, tx) = swaks_rc(&["--tls", "-a", "PLAIN", "-au", "mailserver", "-ap", pw]);
    assert_eq!(rc, Some(0), "{tx}");
    assert!(tx.contains("235 2.7.0") && tx.contains("250 2.0.0"), "{tx}");

    let list = site.ok(&["queue", "list"]);
    assert!(
        list.lines()
            .nth(1)
            .is_some_and(|l| l.starts_with("1\toutbound\t")),
        "{list}"
    );
    site.ok(&["queue", "hold", "1"]);
    assert!(
        site.ok(&["queue", "show", "1"])
            .contains("state:        held")
    );
    site.ok(&["queue", "release", "1"]);
    // A retry is refused while an attempt holds the message; the attempts
    // here end at once (connection refused), so it gets through soon.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let o = site.run(&["queue", "retry", "1"]);
        if o.status.success() {
            break;
        }
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(err.contains("being delivered now"), "{err}");
        assert!(Instant::now() < deadline, "{err}");
        std::thread::sleep(Duration::from_millis(50));
    }
    let show = site.ok(&["queue", "show", "1"]);
    assert!(
        show.contains("client:       helo=") && show.contains("auth=mailserver"),
        "{show}"
    );
    site.ok(&["queue", "delete", "1"]);
    site.fails(&["queue", "show", "1"], 2, "not found");
    assert_eq!(site.ok(&["queue", "list"]), "");
    let audit = site.ok(&["audit"]);
    for a in [
        "smtp_user.add",
        "queue.hold",
        "queue.release",
        "queue.retry",
        "queue.delete",
    ] {
        assert!(audit.contains(a), "{a} not audited: {audit}");
    }
    assert!(!audit.contains(pw));
    serve.stop();
}

#[test]
fn two_nodes_on_one_postgresql_share_the_queue_and_deliver_each_message_once() {
    if !peers(&["smtp-sink", "python3"]) {
        return;
    }
    let Some(a) = Site::new(true) else {
        assert!(
            !common::peers_required(),
            "SIKKERMAIL_REQUIRE_PEERS=1 needs TEST_DATABASE_URL"
        );
        eprintln!("!!! SKIPPED: TEST_DATABASE_URL not set: no two-node test");
        return;
    };
    a.ok(&["init", "--test"]);
    let b = a.second_node();
    let d = a.dir.parent().unwrap().to_path_buf();
    let sink = Sink::start(&d.join("sink"));
    let extra = format!(
        "[organisation]\ndomains = [\"advokat.test\"]\n[inbound]\nnext_hop = \"127.0.0.1:{}\"\nnext_hop_tls = \"none\"\n",
        sink.port
    );
    let serve_a = Serve::start(&a, &extra);
    let serve_b = Serve::start(&b, &extra);
    fs::write(d.join("clients.py"), CLIENTS_PY).unwrap();
    let (pa, pb) = (serve_a.inbound.port(), serve_b.inbound.port());
    let send = |port: u16, offset: &str| {
        Command::new("python3")
            .arg(d.join("clients.py"))
            .args(["127.0.0.1", &port.to_string(), "200", "4", offset])
            .output()
            .unwrap()
    };
    let (oa, ob) = std::thread::scope(|sc| {
        let ha = sc.spawn(|| send(pa, "0"));
        let hb = sc.spawn(|| send(pb, "1000"));
        (ha.join().unwrap(), hb.join().unwrap())
    });
    for o in [&oa, &ob] {
        assert!(
            o.status.success() && o.stderr.is_empty(),
            "{}",
            String::from_utf8_lossy(&o.stderr)
        );
        assert_eq!(String::from_utf8_lossy(&o.stdout).lines().count(), 200);
    }
    let got = sink.wait_for(400, 120, || serve_a.logs());
    let mut ids: BTreeMap<u32, usize> = BTreeMap::new();
    for (_, m) in &got {
        *ids.entry(header(m, "X-Test-Id").unwrap().parse().unwrap())
            .or_default() += 1;
    }
    assert_eq!(ids.len(), 400);
    assert!(
        ids.values().all(|n| *n == 1),
        "delivered twice: {:?}",
        ids.iter().filter(|(_, n)| **n > 1).collect::<Vec<_>>()
    );
    let by_a = serve_a.metric("sikkermail_deliveries_total{direction=\"inbound\"}");
    let by_b = serve_b.metric("sikkermail_deliveries_total{direction=\"inbound\"}");
    eprintln!("two nodes: A delivered {by_a}, B delivered {by_b}");
    assert_eq!(by_a + by_b, 400.0);
    serve_a.stop();
    serve_b.stop();
}

#[test]
fn undecryptable_mail_is_quarantined_by_policy_and_released_by_an_administrator() {
    if !peers(&["swaks", "openssl"]) {
        return;
    }
    let site = Site::new(false).unwrap();
    let d = site.dir.parent().unwrap().to_path_buf();
    site.ok(&["init", "--test"]);
    let (_, other_crt, _) = outside_party(&d, "andre", "post@andre.test");
    fs::write(
        d.join("policy.toml"),
        "[default]\nundecryptable = \"quarantine\"\n",
    )
    .unwrap();
    fs::write(
        d.join("inner.txt"),
        "Content-Type: text/plain\r\n\r\nHemmeligt.\r\n",
    )
    .unwrap();
    sh(
        &d,
        &format!(
            "openssl cms -encrypt -aes-256-cbc -in inner.txt -out m.eml -subject 'Ikke til os' {other_crt}"
        ),
    );
    let serve = Serve::start(
        &site,
        &format!("policy = \"{}\"\n", d.join("policy.toml").display()),
    );
    swaks(
        serve.inbound,
        "a@udenfor.test",
        "post@advokat.test",
        &d.join("m.eml"),
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let list = site.ok(&["queue", "list", "--all"]);
        if list.contains("post@advokat.test=quarantined") {
            assert!(list.contains("quarantined: not decrypted"), "{list}");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "not quarantined: {list}\n{}",
            serve.logs()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let new = site.dir.join("maildir/post@advokat.test/new");
    assert!(
        fs::read_dir(&new).map(|r| r.count()).unwrap_or(0) == 0,
        "quarantined mail was delivered"
    );
    site.ok(&["queue", "release", "1"]);
    let msg = serve.maildir_message(&new);
    assert!(
        header(&msg, "X-Sikkermail-Error").is_some_and(|e| e.starts_with("not decrypted")),
        "{msg}"
    );
    assert!(!msg.contains("Hemmeligt."));
    assert!(site.ok(&["audit"]).contains("queue.release"));
    serve.stop();
}

/// `/readyz`: ready while mail flows; 503 saying why when every attempt at
/// the next hop has failed for `[health] hop_down` and when the oldest
/// queued message is older than `[health] max_queue_age`; ready again once
/// the next hop takes the mail. `/healthz` (liveness) says ok throughout.
#[test]
fn readyz_says_why_mail_waits() {
    if !peers(&["swaks", "smtp-sink"]) {
        return;
    }
    let site = Site::new(false).unwrap();
    let d = site.dir.parent().unwrap().to_path_buf();
    site.ok(&["init", "--test"]);
    let port = free_port();
    let serve = Serve::start(
        &site,
        &format!(
            "[organisation]\ndomains = [\"advokat.test\"]\n[inbound]\nnext_hop = \"127.0.0.1:{port}\"\nnext_hop_tls = \"none\"\n\
             [health]\nhop_down = \"2s\"\nmax_queue_age = \"4s\"\n"
        ),
    );
    assert_eq!(serve.http_get("/readyz"), (200, "ready\n".to_string()));
    fs::write(
        d.join("m.eml"),
        "From: a@b.test\r\nSubject: x\r\n\r\nHej.\r\n",
    )
    .unwrap();
    swaks(
        serve.inbound,
        "a@b.test",
        "post@advokat.test",
        &d.join("m.eml"),
    );
    let wait_for = |want: &dyn Fn(u16, &str) -> bool, what: &str| {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let (code, body) = serve.http_get("/readyz");
            if want(code, &body) {
                return body;
            }
            assert!(
                Instant::now() < deadline,
                "{what}: /readyz {code} {body}\n{}",
                serve.logs()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    };
    let body = wait_for(
        &|c, b| {
            c == 503 && b.contains("every attempt failed") && b.contains("oldest queued inbound")
        },
        "the next hop down and the mail waiting",
    );
    assert!(
        body.contains(&format!("inbound next hop 127.0.0.1:{port}")),
        "{body}"
    );
    assert_eq!(
        serve.http_get("/healthz").0,
        200,
        "liveness is not readiness"
    );
    let sink = Sink::start_on(&d.join("sink"), port);
    sink.wait_for(1, 60, || serve.logs());
    wait_for(&|c, b| c == 200 && b == "ready\n", "ready again");
    serve.stop();
}
