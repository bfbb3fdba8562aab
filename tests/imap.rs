//! Shared IMAP mailboxes against a real Dovecot on loopback (issue 8):
//! `sikkermail mailbox decrypt` over 1,000 messages of every kind, killed
//! with SIGKILL and run again, Dovecot restarted in the middle of a run,
//! TLS with a configured CA (and a wrong one refused), and `serve`
//! decrypting a message another IMAP client appends, with IDLE.
//!
//! The messages are made with OpenSSL (the `openssl` crate's CMS, not our
//! engine) and delivered into Dovecot's Maildir as a delivery agent would;
//! results are read back from the Maildir files.

#![allow(clippy::unwrap_used)]

mod common;
mod dovecot;
mod site;

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant, SystemTime};

use dovecot::{Dovecot, PASSWORD, USER};
use openssl::cms::{CMSOptions, CmsContentInfo};
use openssl::pkey::PKey;
use openssl::stack::Stack;
use openssl::symm::Cipher;
use openssl::x509::X509;
use site::{Site, make_oces2_p12, sites};

const ARCHIVE: &str = "Krypteret original";

/// The organisation of a site, as outsiders see it.
struct Org {
    /// Its OCES3 organisation certificate.
    oces3: X509,
    /// Its retired OCES2 certificate (key imported with --legacy).
    oces2: X509,
}

fn set_up_org(site: &Site) -> Org {
    let d = site.dir.parent().unwrap().to_path_buf();
    site.init_firm();
    let id = site.issue_mailbox_cert(USER);
    let oces3 = X509::from_pem(site.pem(&id).as_bytes()).unwrap();
    let (p12, oces2) = make_oces2_p12(&d);
    let o = site.run_env(
        &["key", "import", &p12, "--password-env", "PW", "--legacy"],
        &[("PW", "gammel")],
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    Org {
        oces3,
        oces2: X509::from_pem(&fs::read(oces2).unwrap()).unwrap(),
    }
}

/// The secret inside message `token`: what only the decrypted copy shows.
fn secret(token: &str) -> String {
    format!("Hemmelig besked {token}.")
}

fn headers(token: &str, content_type: &str) -> String {
    format!(
        "From: Retten i Glostrup <post@domstol.test>\r\nTo: {USER}\r\nSubject: Sag {token}\r\n\
Message-ID: <{token}@domstol.test>\r\nDate: Fri, 05 Mar 2021 14:15:16 +0100\r\nMIME-Version: 1.0\r\n\
Content-Type: {content_type}\r\n"
    )
}

/// An S/MIME message encrypted by OpenSSL to `cert` with `cipher`.
fn encrypted(cert: &X509, cipher: Cipher, token: &str) -> Vec<u8> {
    let inner = format!(
        "Content-Type: text/plain; charset=utf-8\r\n\r\n{}\r\n",
        secret(token)
    );
    let mut certs = Stack::new().unwrap();
    certs.push(cert.clone()).unwrap();
    let cms =
        CmsContentInfo::encrypt(&certs, inner.as_bytes(), cipher, CMSOptions::BINARY).unwrap();
    let mut m = headers(
        token,
        "application/pkcs7-mime; smime-type=enveloped-data; name=smime.p7m",
    );
    m.push_str("Content-Transfer-Encoding: base64\r\n\r\n");
    let mut m = m.into_bytes();
    m.extend_from_slice(&smime::mime::encode_base64_lines(&cms.to_der().unwrap()));
    m
}

/// A clear-signed message (multipart/signed, OpenSSL's detached CMS).
fn signed(token: &str) -> Vec<u8> {
    let pki = common::pki();
    let cert = X509::from_pem(&fs::read(pki.file("alice.crt")).unwrap()).unwrap();
    let key = PKey::private_key_from_pem(&fs::read(pki.file("alice.key")).unwrap()).unwrap();
    let inner = format!(
        "Content-Type: text/plain; charset=utf-8\r\n\r\nUnderskrevet, ikke krypteret {token}.\r\n"
    );
    let cms = CmsContentInfo::sign(
        Some(&cert),
        Some(&key),
        None,
        Some(inner.as_bytes()),
        CMSOptions::DETACHED | CMSOptions::BINARY,
    )
    .unwrap();
    let b = format!("sig-{token}");
    let mut m = headers(
        token,
        &format!(
            "multipart/signed; protocol=\"application/pkcs7-signature\"; micalg=sha-256; boundary=\"{b}\""
        ),
    );
    m.push_str(&format!(
        "\r\n--{b}\r\n{inner}\r\n--{b}\r\nContent-Type: application/pkcs7-signature; name=smime.p7s\r\n\
Content-Transfer-Encoding: base64\r\n\r\n"
    ));
    let mut m = m.into_bytes();
    m.extend_from_slice(&smime::mime::encode_base64_lines(&cms.to_der().unwrap()));
    m.extend_from_slice(format!("\r\n--{b}--\r\n").as_bytes());
    m
}

fn plain(token: &str) -> Vec<u8> {
    let mut m = headers(token, "text/plain; charset=utf-8");
    m.push_str(&format!("\r\nAlmindelig post {token}.\r\n"));
    m.into_bytes()
}

/// Encrypted by its headers, garbage inside.
fn corrupt(token: &str) -> Vec<u8> {
    let mut junk = vec![0u8; 300];
    openssl::rand::rand_bytes(&mut junk).unwrap();
    junk[0] = 0x30;
    let mut m = headers(
        token,
        "application/pkcs7-mime; smime-type=enveloped-data; name=smime.p7m",
    );
    m.push_str("Content-Transfer-Encoding: base64\r\n\r\n");
    let mut m = m.into_bytes();
    m.extend_from_slice(&smime::mime::encode_base64_lines(&junk));
    m
}

/// What was delivered: token -> (kind, flags, bytes).
type Delivered = BTreeMap<String, (&'static str, String, Vec<u8>)>;

/// Delivers `n` messages per kind, with every 7th seen and every 11th
/// flagged; the INTERNALDATE steps by a minute from 2021-03-05.
fn deliver(dc: &Dovecot, org: &Org, counts: &[(&'static str, usize)]) -> Delivered {
    let mut out = BTreeMap::new();
    let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_614_950_116);
    let mut i = 0u64;
    for (kind, n) in counts {
        for k in 0..*n {
            i += 1;
            let token = format!("{kind}-{k:04}");
            let msg = match *kind {
                "oces3" => encrypted(&org.oces3, Cipher::aes_256_cbc(), &token),
                "oces2" => encrypted(&org.oces2, Cipher::des_ede3_cbc(), &token),
                "signed" => signed(&token),
                "plain" => plain(&token),
                "corrupt" => corrupt(&token),
                _ => unreachable!(),
            };
            let mut flags = String::new();
            if i.is_multiple_of(11) {
                flags.push('F');
            }
            if i.is_multiple_of(7) {
                flags.push('S');
            }
            dc.deliver(
                &format!("{}.M{i}P1.test", 1_614_950_116 + i),
                &msg,
                &flags,
                t0 + Duration::from_secs(60 * i),
            );
            out.insert(token, (*kind, flags, msg));
        }
    }
    out
}

fn contains(hay: &[u8], needle: &str) -> bool {
    hay.windows(needle.len()).any(|w| w == needle.as_bytes())
}

/// The maildir flags of a file name (`...:2,FS` -> "FS").
fn flags_of(name: &str) -> String {
    name.rsplit_once(":2,")
        .map(|(_, f)| f.to_string())
        .unwrap_or_default()
}

/// Checks the end state: every decryptable message decrypted exactly once
/// (its copy in INBOX with the original's flags, the original in the
/// archive, byte for byte) and every other message untouched in INBOX.
fn check_end_state(dc: &Dovecot, delivered: &Delivered) {
    let inbox = dc.messages("INBOX");
    let archive = dc.messages(ARCHIVE);
    let decryptable = |k: &str| k == "oces3" || k == "oces2";
    let n_dec = delivered
        .values()
        .filter(|(k, _, _)| decryptable(k))
        .count();
    assert_eq!(archive.len(), n_dec, "archive holds every original once");
    assert_eq!(
        inbox.len(),
        delivered.len(),
        "INBOX: one message per delivered one"
    );
    // Dovecot keeps a delivered file's bytes as they are, and stores what
    // APPEND gives it with LF line ends: compare with LF line ends.
    let lf = |b: &[u8]| -> Vec<u8> {
        String::from_utf8_lossy(b)
            .replace("\r\n", "\n")
            .into_bytes()
    };
    let archived: BTreeSet<Vec<u8>> = archive.iter().map(|(_, b)| lf(b)).collect();
    for (token, (kind, flags, msg)) in delivered {
        let copies: Vec<&(String, Vec<u8>)> = inbox
            .iter()
            .filter(|(_, b)| contains(b, &secret(token)))
            .collect();
        if decryptable(kind) {
            assert_eq!(
                copies.len(),
                1,
                "{token}: {} decrypted copies",
                copies.len()
            );
            let (name, copy) = copies[0];
            assert!(
                contains(copy, "X-Sikkermail-Decrypted: "),
                "{token}: no header"
            );
            assert!(
                contains(copy, "X-Sikkermail-Original: uidvalidity="),
                "{token}"
            );
            assert!(
                !contains(copy, "application/pkcs7-mime"),
                "{token}: still encrypted"
            );
            let mut want: Vec<char> = flags.chars().collect();
            let mut got: Vec<char> = flags_of(name).chars().filter(|c| *c != 'T').collect();
            want.sort();
            got.sort();
            assert_eq!(got, want, "{token}: flags of the copy {name}");
            assert!(
                archived.contains(&lf(msg)),
                "{token}: original not archived as it was"
            );
            assert!(
                !inbox.iter().any(|(_, b)| lf(b) == lf(msg)),
                "{token}: original still in INBOX"
            );
        } else {
            assert!(
                inbox.iter().any(|(_, b)| b == msg),
                "{token} ({kind}) not left as it was in INBOX"
            );
            assert!(copies.is_empty() || *kind != "corrupt");
        }
    }
}

/// Writes the configuration with `[mailbox.post]`, plus `extra` lines in it.
fn config(site: &Site, dc_port: u16, extra: &str) -> PathBuf {
    let p = site.dir.parent().unwrap().join("sikkermail.toml");
    fs::write(
        &p,
        format!(
            "hostname = \"gw.test\"\n[mailbox.post]\nhost = \"127.0.0.1\"\nport = {dc_port}\n\
user = \"{USER}\"\npassword_env = \"IMAP_PW\"\n{extra}\n"
        ),
    )
    .unwrap();
    p
}

fn decrypt_cmd(site: &Site, cfg: &Path, extra: &[&str]) -> Command {
    let cfg = cfg.display().to_string();
    let mut args = vec!["mailbox", "decrypt", "--config", &cfg, "--mailbox", "post"];
    args.extend_from_slice(extra);
    let mut c = site.command(&args, &[("IMAP_PW", PASSWORD)]);
    c.stdin(Stdio::null());
    c
}

fn decrypt(site: &Site, cfg: &Path, extra: &[&str]) -> Output {
    common::run_with_timeout(&mut decrypt_cmd(site, cfg, extra), 300)
}

fn text(o: &Output) -> String {
    format!(
        "status {:?}\nstdout:\n{}\nstderr:\n{}",
        o.status.code(),
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

#[test]
fn a_thousand_messages_decrypted_in_place_and_a_second_run_changes_nothing() {
    if !dovecot::available() {
        return;
    }
    let site = Site::new(false).unwrap();
    let org = set_up_org(&site);
    let dc = Dovecot::start(None);
    let delivered = deliver(
        &dc,
        &org,
        &[
            ("oces3", 400),
            ("oces2", 200),
            ("signed", 150),
            ("plain", 150),
            ("corrupt", 100),
        ],
    );
    let cfg = config(&site, dc.port, "tls = \"none\"\nbatch = 100");

    // A dry run changes nothing and says what it would do.
    let before = dc.messages("INBOX");
    let o = decrypt(&site, &cfg, &["--dry-run"]);
    let out = text(&o);
    assert!(
        out.contains("mailbox post: would decrypt 600, skipped 300 (not encrypted 150, signed only 150), failed 100"),
        "{out}"
    );
    assert_eq!(dc.messages("INBOX"), before, "the dry run changed INBOX");
    assert_eq!(dc.count(ARCHIVE), 0);

    let o = decrypt(&site, &cfg, &[]);
    let out = text(&o);
    assert!(
        out.contains("mailbox post: decrypted 600, skipped 300 (not encrypted 150, signed only 150), failed 100"),
        "{out}"
    );
    assert_eq!(
        o.status.code(),
        Some(3),
        "undecryptable messages left exit 3: {out}"
    );
    assert!(
        out.contains("\"INBOX\": 100 still undecryptable (UIDs ") && out.contains(" and 50 more)"),
        "{out}"
    );
    let failed: Vec<&str> = out
        .lines()
        .filter(|l| l.contains("failed: INBOX uid"))
        .collect();
    assert_eq!(failed.len(), 100, "{out}");
    check_end_state(&dc, &delivered);

    // The copies keep the originals' INTERNALDATE (Dovecot: the file's mtime).
    let mtimes = |folder: &str| -> BTreeMap<String, SystemTime> {
        let mut m = BTreeMap::new();
        for sub in ["cur", "new"] {
            for e in fs::read_dir(dc.folder_dir(folder).join(sub))
                .unwrap()
                .flatten()
            {
                let b = fs::read(e.path()).unwrap();
                // Dovecot stores what it is given by APPEND with LF line ends.
                let tok = delivered.keys().find(|t| {
                    contains(&b, &format!("Sag {t}\r\n")) || contains(&b, &format!("Sag {t}\n"))
                });
                if let Some(t) = tok {
                    m.insert(t.clone(), e.metadata().unwrap().modified().unwrap());
                }
            }
        }
        m
    };
    let (copies, originals) = (mtimes("INBOX"), mtimes(ARCHIVE));
    for (t, when) in &originals {
        assert_eq!(copies.get(t), Some(when), "{t}: INTERNALDATE not kept");
    }

    // A second run changes nothing, and still says what does not open.
    let inbox = dc.messages("INBOX");
    let archive = dc.messages(ARCHIVE);
    let o = decrypt(&site, &cfg, &[]);
    let out = text(&o);
    assert_eq!(o.status.code(), Some(3), "{out}");
    assert!(
        out.contains("mailbox post: decrypted 0, skipped 0, failed 0"),
        "{out}"
    );
    assert!(
        out.contains("\"INBOX\": 100 still undecryptable (UIDs "),
        "{out}"
    );
    assert_eq!(dc.messages("INBOX"), inbox);
    assert_eq!(dc.messages(ARCHIVE), archive);

    // The checkpoint and the audit trail say what happened.
    let status = site.ok(&["mailbox", "status", "--config", &cfg.display().to_string()]);
    assert!(status.contains("\"INBOX\"\tuidvalidity "), "{status}");
    assert!(!status.contains("last uid 0\t"), "{status}");
    let audit = site.ok(&["audit", "--limit", "5"]);
    assert!(audit.contains("mailbox.decrypt"), "{audit}");
    assert!(
        audit.contains("decrypted=600 skipped=300 failed=100"),
        "{audit}"
    );
}

/// What does not open stays reported, run after run, until it is gone
/// from the folder (the checkpoint has passed it; the store keeps the
/// list): exit 3 while any remains, 0 once none does.
#[test]
fn undecryptable_messages_are_reported_on_every_run_until_they_are_gone() {
    if !dovecot::available() {
        return;
    }
    for site in sites() {
        let org = set_up_org(&site);
        let dc = Dovecot::start(None);
        deliver(&dc, &org, &[("oces3", 3), ("corrupt", 2)]);
        let cfg = config(&site, dc.port, "tls = \"none\"");
        let o = decrypt(&site, &cfg, &[]);
        let out = text(&o);
        assert_eq!(o.status.code(), Some(3), "{out}");
        assert!(out.contains("decrypted 3, skipped 0, failed 2"), "{out}");
        assert!(
            out.contains("\"INBOX\": 2 still undecryptable (UIDs 4, 5)"),
            "{out}"
        );
        // Again: nothing new fails, both are still there.
        let o = decrypt(&site, &cfg, &[]);
        let out = text(&o);
        assert_eq!(o.status.code(), Some(3), "{out}");
        assert!(out.contains("decrypted 0, skipped 0, failed 0"), "{out}");
        assert!(
            out.contains("\"INBOX\": 2 still undecryptable (UIDs 4, 5)"),
            "{out}"
        );
        // A dry run reports the list too, and changes it in nothing.
        let o = decrypt(&site, &cfg, &["--dry-run"]);
        assert_eq!(o.status.code(), Some(3), "{}", text(&o));
        // Someone removes one from the folder: one left.
        let remove = |token: &str| {
            let mut gone = false;
            for sub in ["cur", "new"] {
                for e in fs::read_dir(dc.folder_dir("INBOX").join(sub))
                    .unwrap()
                    .flatten()
                {
                    let b = fs::read(e.path()).unwrap();
                    if contains(&b, &format!("Sag {token}\r\n"))
                        || contains(&b, &format!("Sag {token}\n"))
                    {
                        fs::remove_file(e.path()).unwrap();
                        gone = true;
                    }
                }
            }
            assert!(gone, "{token} not found in INBOX");
        };
        remove("corrupt-0000");
        let o = decrypt(&site, &cfg, &[]);
        let out = text(&o);
        assert_eq!(o.status.code(), Some(3), "{out}");
        assert!(
            out.contains("\"INBOX\": 1 still undecryptable (UIDs 5)"),
            "{out}"
        );
        remove("corrupt-0001");
        let o = decrypt(&site, &cfg, &[]);
        let out = text(&o);
        assert!(o.status.success(), "{out}");
        assert!(out.contains("\"INBOX\": none undecryptable"), "{out}");
    }
}

/// Shapes of encrypted mail beside the plain `application/pkcs7-mime`: an
/// encrypted part in a multipart/mixed (a relay added a disclaimer; KDE's
/// "ambiguous" mail) and `application/octet-stream; name=smime.p7m`
/// (KMail). Both are found by their BODYSTRUCTURE and decrypted; a
/// multipart/mixed with no encrypted part is left alone.
#[test]
fn encrypted_parts_in_multipart_mixed_and_octet_stream_p7m_are_decrypted() {
    if !dovecot::available() {
        return;
    }
    let site = Site::new(false).unwrap();
    let org = set_up_org(&site);
    let dc = Dovecot::start(None);
    let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_614_950_116);
    // The encrypted entity of a whole message: from its Content-Type on.
    let entity_of = |m: &[u8]| {
        let s = String::from_utf8(m.to_vec()).unwrap();
        s[s.find("Content-Type:").unwrap()..].to_string()
    };
    let mixed = {
        let enc = encrypted(&org.oces3, Cipher::aes_256_cbc(), "mixed");
        let mut m = headers("mixed", "multipart/mixed; boundary=\"relay\"");
        m.push_str(&format!(
            "\r\n--relay\r\n{}\r\n--relay\r\nContent-Type: text/plain\r\n\r\nAnsvarsfraskrivelse fra relæet.\r\n--relay--\r\n",
            entity_of(&enc).trim_end()
        ));
        m.into_bytes()
    };
    let octet = String::from_utf8(encrypted(&org.oces3, Cipher::aes_256_cbc(), "octet"))
        .unwrap()
        .replace(
            "application/pkcs7-mime; smime-type=enveloped-data; name=smime.p7m",
            "application/octet-stream; name=\"smime.p7m\"",
        )
        .into_bytes();
    let attachment = {
        let mut m = headers("attachment", "multipart/mixed; boundary=\"b\"");
        m.push_str("\r\n--b\r\nContent-Type: text/plain\r\n\r\nSe bilag.\r\n--b\r\nContent-Type: application/pdf; name=bilag.pdf\r\nContent-Transfer-Encoding: base64\r\n\r\nJVBERi0xLjQK\r\n--b--\r\n");
        m.into_bytes()
    };
    for (i, m) in [&mixed, &octet, &attachment].into_iter().enumerate() {
        dc.deliver(&format!("{}.M{i}P1.test", 1_614_950_116 + i), m, "", t0);
    }
    let cfg = config(&site, dc.port, "tls = \"none\"");
    let o = decrypt(&site, &cfg, &[]);
    let out = text(&o);
    assert!(o.status.success(), "{out}");
    assert!(
        out.contains("mailbox post: decrypted 2, skipped 1 (not encrypted 1), failed 0"),
        "{out}"
    );
    let inbox = dc.messages("INBOX");
    let find = |token: &str| {
        inbox
            .iter()
            .map(|(_, b)| String::from_utf8_lossy(b).replace("\r\n", "\n"))
            .find(|m| m.contains(&format!("Subject: Sag {token}\n")))
            .unwrap_or_else(|| panic!("{token} not in INBOX"))
    };
    let m = find("mixed");
    assert!(m.contains(&secret("mixed")), "{m}");
    assert!(m.contains("Ansvarsfraskrivelse fra relæet."), "{m}");
    assert!(m.contains("only part 1 of 2 of the multipart/mixed"), "{m}");
    assert!(find("octet").contains(&secret("octet")));
    assert!(find("attachment").contains("JVBERi0xLjQK"));
    assert_eq!(dc.count(ARCHIVE), 2);
}

/// Runs `mailbox decrypt` and kills it with SIGKILL once `when` holds.
fn kill_when(site: &Site, cfg: &Path, dc: &Dovecot, when: impl Fn(usize, usize) -> bool) -> bool {
    let mut child: Child = decrypt_cmd(site, cfg, &[])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        if child.try_wait().unwrap().is_some() {
            return false; // finished before the moment came
        }
        if when(dc.count("INBOX"), dc.count(ARCHIVE)) {
            child.kill().unwrap();
            child.wait().unwrap();
            return true;
        }
        assert!(
            Instant::now() < deadline,
            "the run neither finished nor reached the moment"
        );
        std::thread::sleep(Duration::from_millis(2));
    }
}

#[test]
fn killed_with_sigkill_and_run_again_nothing_is_lost_or_duplicated() {
    if !dovecot::available() {
        return;
    }
    for site in sites() {
        let org = set_up_org(&site);
        let dc = Dovecot::start(None);
        let delivered = deliver(&dc, &org, &[("oces3", 200), ("oces2", 100), ("plain", 20)]);
        let total = delivered.len();
        let cfg = config(&site, dc.port, "tls = \"none\"\nbatch = 10");
        // Kill between an APPEND and its MOVE (more messages in INBOX than
        // were delivered: copies whose originals are still there), three
        // times at growing depths, then let a run finish.
        let mut killed = 0;
        for depth in [30, 120, 220] {
            if kill_when(&site, &cfg, &dc, |inbox, archive| {
                archive >= depth && inbox > total
            }) {
                killed += 1;
            }
        }
        assert!(killed >= 2, "the runs finished before they could be killed");
        let o = decrypt(&site, &cfg, &[]);
        assert!(o.status.success(), "{}", text(&o));
        check_end_state(&dc, &delivered);
    }
}

#[test]
fn dovecot_restarted_in_the_middle_of_a_run_the_run_resumes_with_the_same_result() {
    if !dovecot::available() {
        return;
    }
    let site = Site::new(false).unwrap();
    let org = set_up_org(&site);
    let mut dc = Dovecot::start(None);
    let delivered = deliver(&dc, &org, &[("oces3", 200), ("oces2", 100), ("signed", 20)]);
    let cfg = config(&site, dc.port, "tls = \"none\"\nbatch = 10");
    let child = decrypt_cmd(&site, &cfg, &[])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(120);
    while dc.count(ARCHIVE) < 100 {
        assert!(Instant::now() < deadline, "the run did not get going");
        std::thread::sleep(Duration::from_millis(5));
    }
    dc.stop();
    std::thread::sleep(Duration::from_millis(1500));
    dc.run();
    let o = child.wait_with_output().unwrap();
    let out = text(&o);
    assert!(o.status.success(), "{out}");
    assert!(out.contains("reconnected"), "{out}");
    assert!(
        out.contains("skipped 20 (signed only 20), failed 0"),
        "{out}"
    );
    check_end_state(&dc, &delivered);
}

/// A CA and a certificate for 127.0.0.1 from it: (dir, ca.pem, cert, key).
fn tls_files(dir: &Path, name: &str) -> (PathBuf, PathBuf, PathBuf) {
    common::sh(
        dir,
        &format!(
            "openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj '/CN={name} CA' -keyout {name}-ca.key -out {name}-ca.pem 2>/dev/null && \
             openssl req -newkey rsa:2048 -nodes -subj '/CN=localhost' -keyout {name}.key -out {name}.csr 2>/dev/null && \
             printf 'basicConstraints=CA:FALSE\\nsubjectAltName=DNS:localhost,IP:127.0.0.1\\n' > {name}.ext && \
             openssl x509 -req -in {name}.csr -CA {name}-ca.pem -CAkey {name}-ca.key -CAcreateserial -days 2 -extfile {name}.ext -out {name}.crt 2>/dev/null && \
             chmod 644 {name}.key"
        ),
    );
    (
        dir.join(format!("{name}-ca.pem")),
        dir.join(format!("{name}.crt")),
        dir.join(format!("{name}.key")),
    )
}

#[test]
fn tls_with_the_configured_ca_works_and_a_wrong_certificate_is_refused() {
    if !dovecot::available() {
        return;
    }
    let site = Site::new(false).unwrap();
    let org = set_up_org(&site);
    let d = site.dir.parent().unwrap().to_path_buf();
    let (ca, crt, key) = tls_files(&d, "imap");
    let (other_ca, _, _) = tls_files(&d, "other");
    let dc = Dovecot::start(Some((&crt, &key)));
    let delivered = deliver(&dc, &org, &[("oces3", 3), ("oces2", 2)]);
    // The password sealed in the store this time, not from the environment.
    let o = site.run_env(
        &[
            "mailbox",
            "password",
            "--mailbox",
            "post",
            "--password-env",
            "PW",
        ],
        &[("PW", PASSWORD)],
    );
    assert!(o.status.success(), "{}", text(&o));
    assert!(
        !site
            .database_bytes()
            .windows(PASSWORD.len())
            .any(|w| w == PASSWORD.as_bytes())
    );
    let write = |port: u16, tls: &str, ca: &Path| {
        let p = d.join("tls.toml");
        fs::write(
            &p,
            format!(
                "[mailbox.post]\nhost = \"127.0.0.1\"\nport = {port}\nuser = \"{USER}\"\ntls = \"{tls}\"\nca = \"{}\"\n",
                ca.display()
            ),
        )
        .unwrap();
        p
    };
    let run = |cfg: &Path| {
        let cfg = cfg.display().to_string();
        let mut c = site.command(
            &["mailbox", "decrypt", "--config", &cfg, "--mailbox", "post"],
            &[],
        );
        common::run_with_timeout(&mut c, 120)
    };
    // A certificate from another CA: refused, clearly, and nothing changed.
    for (port, mode) in [(dc.tls_port, "implicit"), (dc.port, "starttls")] {
        let o = run(&write(port, mode, &other_ca));
        let out = text(&o);
        assert_eq!(o.status.code(), Some(1), "{out}");
        assert!(out.contains("certificate is not trusted"), "{out}");
        assert_eq!(dc.count(ARCHIVE), 0);
    }
    let o = run(&write(dc.tls_port, "implicit", &ca));
    let out = text(&o);
    assert!(o.status.success(), "{out}");
    assert!(out.contains("decrypted 5, skipped 0, failed 0"), "{out}");
    check_end_state(&dc, &delivered);
    let o = run(&write(dc.port, "starttls", &ca));
    let out = text(&o);
    assert!(o.status.success(), "{out}");
    assert!(out.contains("decrypted 0, skipped 0, failed 0"), "{out}");
}

/// `serve` with the mailbox live; returns the child and its log file.
fn serve(site: &Site, cfg: &Path) -> (Child, PathBuf) {
    let log = site.dir.parent().unwrap().join("serve.log");
    let mut c = Command::new(env!("CARGO_BIN_EXE_sikkermail"));
    for (k, _) in std::env::vars() {
        if k.starts_with("SIKKERMAIL_") && k != "SIKKERMAIL_REQUIRE_PEERS" {
            c.env_remove(k);
        }
    }
    if let Some(u) = &site.db_url {
        c.env("SIKKERMAIL_DATABASE_URL", u);
    }
    let mut child = c
        .args(["serve", "--config"])
        .arg(cfg)
        .env("SIKKERMAIL_DATA_DIR", &site.dir)
        .env("SIKKERMAIL_INBOUND_LISTEN", "127.0.0.1:0")
        .env("SIKKERMAIL_OUTBOUND_LISTEN", "127.0.0.1:0")
        .env("SIKKERMAIL_HTTP_LISTEN", "127.0.0.1:0")
        .env("IMAP_PW", PASSWORD)
        .stdout(Stdio::piped())
        .stderr(fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    for line in lines.by_ref() {
        if line.unwrap() == "ready" {
            // Keep reading, so serve's last words find a reader.
            std::thread::spawn(move || lines.for_each(drop));
            return (child, log);
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    panic!(
        "serve did not get ready: {}",
        fs::read_to_string(&log).unwrap_or_default()
    );
}

#[test]
fn serve_decrypts_what_another_client_appends_within_five_seconds() {
    if !dovecot::available() || !common::peer("python3") {
        return;
    }
    let site = Site::new(false).unwrap();
    let org = set_up_org(&site);
    let mut dc = Dovecot::start(None);
    // One old message waits already; the first pass takes it.
    let mut delivered = deliver(&dc, &org, &[("oces2", 1)]);
    let cfg = config(&site, dc.port, "tls = \"none\"\npoll_interval = \"30s\"");
    let (mut child, log) = serve(&site, &cfg);
    let wait_for = |dc: &Dovecot, token: &str, secs: u64| -> Duration {
        let t0 = Instant::now();
        loop {
            let done = dc
                .messages("INBOX")
                .iter()
                .any(|(_, b)| contains(b, &secret(token)) && contains(b, "X-Sikkermail-Original"));
            if done {
                return t0.elapsed();
            }
            assert!(
                t0.elapsed() < Duration::from_secs(secs),
                "{token} not decrypted within {secs} s\n{}",
                fs::read_to_string(&log).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    };
    wait_for(&dc, "oces2-0000", 30);
    // Another IMAP client appends; IDLE tells serve.
    for (i, cert) in [&org.oces3, &org.oces2].iter().enumerate() {
        let token = format!("live-{i}");
        let msg = encrypted(cert, Cipher::aes_128_cbc(), &token);
        dc.append_with_imaplib(&msg);
        let took = wait_for(&dc, &token, 5);
        eprintln!("{token} decrypted {took:?} after the APPEND");
        delivered.insert(token, ("oces3", String::new(), msg));
    }
    // The connection dropped (Dovecot restarted): serve reconnects. Once
    // the originals are archived: a restart between a copy's APPEND and its
    // original's MOVE is dovecot_restarted_in_the_middle_of_a_run's case.
    let t0 = Instant::now();
    while dc.messages(ARCHIVE).len() < delivered.len() {
        assert!(
            t0.elapsed() < Duration::from_secs(30),
            "the originals were not archived within 30 s\n{}",
            fs::read_to_string(&log).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    dc.stop();
    std::thread::sleep(Duration::from_millis(500));
    dc.run();
    let msg = encrypted(&org.oces3, Cipher::aes_256_cbc(), "after-restart");
    dc.append_with_imaplib(&msg);
    wait_for(&dc, "after-restart", 30);
    delivered.insert("after-restart".into(), ("oces3", String::new(), msg));
    // SAFETY: signalling our own child.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let st = child.wait().unwrap();
    let log = fs::read_to_string(&log).unwrap_or_default();
    assert!(st.success(), "{log}");
    // Shown only when the end state is wrong.
    eprintln!("serve's log:\n{log}");
    check_end_state(&dc, &delivered);
}

#[test]
fn serve_and_two_commands_at_once_decrypt_each_message_once() {
    if !dovecot::available() {
        return;
    }
    for site in sites() {
        let org = set_up_org(&site);
        let dc = Dovecot::start(None);
        let delivered = deliver(&dc, &org, &[("oces3", 150), ("oces2", 50), ("plain", 10)]);
        let cfg = config(&site, dc.port, "tls = \"none\"\nbatch = 10");
        let (mut serve, log) = serve(&site, &cfg);
        let runs: Vec<Child> = (0..2)
            .map(|_| {
                decrypt_cmd(&site, &cfg, &[])
                    .stdout(Stdio::piped())
                    .stderr(Stdio::piped())
                    .spawn()
                    .unwrap()
            })
            .collect();
        for r in runs {
            let o = r.wait_with_output().unwrap();
            assert!(o.status.success(), "{}", text(&o));
        }
        let deadline = Instant::now() + Duration::from_secs(60);
        while dc.count(ARCHIVE) < 200 {
            assert!(
                Instant::now() < deadline,
                "not all decrypted: {}",
                fs::read_to_string(&log).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        // SAFETY: signalling our own child.
        unsafe { libc::kill(serve.id() as i32, libc::SIGTERM) };
        assert!(serve.wait().unwrap().success());
        check_end_state(&dc, &delivered);
    }
}
