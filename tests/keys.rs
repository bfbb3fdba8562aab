//! Keys and certificates an administrator can correct (issue 21 §3):
//! generations decided from the certificate's own policy OIDs or from what
//! the administrator said, `key set-legacy`, `key delete` (refused while
//! mail needs the key), `cert list` saying `expired`, `recipient
//! remove|pin|unpin`, `queue list` and `queue retry --all`; on SQLite and
//! on PostgreSQL (when `TEST_DATABASE_URL` is set). Real OCES certificates
//! from `../shared/testvectors` for the policy decision.

#![allow(clippy::unwrap_used)]

mod common;
mod site;

use std::fs;
use std::path::{Path, PathBuf};

use common::{peer, peers_required, sh};
use site::{Site, first_field, sites};

use openssl::asn1::{Asn1Integer, Asn1Object, Asn1OctetString, Asn1Time};
use openssl::bn::BigNum;
use openssl::pkey::{PKey, Private};
use openssl::rsa::Rsa;
use openssl::x509::extension::{KeyUsage, SubjectAlternativeName};
use openssl::x509::{X509, X509Builder, X509Extension, X509NameBuilder};

/// certificatePolicies with these OIDs (no qualifiers), DER by hand:
/// OpenSSL makes this extension from text only with a config database.
fn policies_extension(oids: &[&str]) -> X509Extension {
    fn tlv(tag: u8, body: &[u8]) -> Vec<u8> {
        let mut out = vec![tag];
        match body.len() {
            n @ 0..=127 => out.push(n as u8),
            n @ 128..=255 => out.extend([0x81, n as u8]),
            n => out.extend([0x82, (n >> 8) as u8, n as u8]),
        }
        out.extend_from_slice(body);
        out
    }
    let mut infos = Vec::new();
    for o in oids {
        let obj = Asn1Object::from_str(o).unwrap();
        infos.extend(tlv(0x30, &tlv(0x06, obj.as_slice())));
    }
    X509Extension::new_from_der(
        &Asn1Object::from_str("2.5.29.32").unwrap(),
        false,
        &Asn1OctetString::new_from_bytes(&tlv(0x30, &infos)).unwrap(),
    )
    .unwrap()
}

/// What a certificate from somewhere else looks like.
struct Spec<'a> {
    file: &'a str,
    subject: &'a [(&'a str, &'a str)],
    policies: &'a [&'a str],
    /// ASN.1 times, e.g. `20160101000000Z`.
    valid: (&'a str, &'a str),
    email: &'a str,
}

/// A key and self-issued certificate as `spec` says, as a PKCS#12 (empty
/// password, RC2-40 as NemID exported them) and the certificate PEM.
fn make(dir: &Path, spec: &Spec) -> (String, String) {
    let key: PKey<Private> = PKey::from_rsa(Rsa::generate(2048).unwrap()).unwrap();
    let mut n = X509NameBuilder::new().unwrap();
    for (k, v) in spec.subject {
        n.append_entry_by_text(k, v).unwrap();
    }
    let n = n.build();
    let mut b = X509Builder::new().unwrap();
    b.set_version(2).unwrap();
    let mut serial = BigNum::new().unwrap();
    serial
        .rand(64, openssl::bn::MsbOption::MAYBE_ZERO, false)
        .unwrap();
    b.set_serial_number(&Asn1Integer::from_bn(&serial).unwrap())
        .unwrap();
    b.set_subject_name(&n).unwrap();
    b.set_issuer_name(&n).unwrap();
    b.set_pubkey(&key).unwrap();
    b.set_not_before(&Asn1Time::from_str(spec.valid.0).unwrap())
        .unwrap();
    b.set_not_after(&Asn1Time::from_str(spec.valid.1).unwrap())
        .unwrap();
    b.append_extension(
        KeyUsage::new()
            .critical()
            .digital_signature()
            .key_encipherment()
            .build()
            .unwrap(),
    )
    .unwrap();
    let san = SubjectAlternativeName::new()
        .email(spec.email)
        .build(&b.x509v3_context(None, None))
        .unwrap();
    b.append_extension(san).unwrap();
    if !spec.policies.is_empty() {
        b.append_extension(policies_extension(spec.policies))
            .unwrap();
    }
    b.sign(&key, openssl::hash::MessageDigest::sha256())
        .unwrap();
    let cert = b.build();
    let f = spec.file;
    fs::write(dir.join(format!("{f}.crt")), cert.to_pem().unwrap()).unwrap();
    fs::write(
        dir.join(format!("{f}.key")),
        key.private_key_to_pem_pkcs8().unwrap(),
    )
    .unwrap();
    sh(
        dir,
        &format!(
            "openssl pkcs12 -export -legacy -certpbe PBE-SHA1-RC2-40 -keypbe PBE-SHA1-3DES \
             -in {f}.crt -inkey {f}.key -passout pass: -out {f}.p12"
        ),
    );
    let p = |x: &str| dir.join(x).display().to_string();
    (p(&format!("{f}.p12")), p(&format!("{f}.crt")))
}

/// A NemID VOCES that expired in 2019, with its OCES2 policy (VOCES,
/// certificate policy version 4).
fn expired_voces(dir: &Path) -> (String, String) {
    make(
        dir,
        &Spec {
            file: "voces",
            subject: &[
                ("C", "DK"),
                ("O", "Advokatfirma Jørgensen // CVR:12345678"),
                ("CN", "Advokatfirma Jørgensen - VOCES"),
                ("serialNumber", "CVR:12345678-UID:1234567890"),
            ],
            policies: &["1.2.208.169.1.1.1.3.4"],
            valid: ("20160101000000Z", "20190630000000Z"),
            email: "post@joergensen.dk",
        },
    )
}

/// The line of `out` whose first field is `id`.
fn line_of(out: &str, id: &str) -> String {
    out.lines()
        .find(|l| first_field(l) == id)
        .unwrap_or_else(|| panic!("no line {id} in {out}"))
        .to_string()
}

/// `S/MIME` encrypted to `certs` by OpenSSL, the way mail arrives.
fn encrypted_to(dir: &Path, name: &str, certs: &[&str]) -> Vec<u8> {
    fs::write(
        dir.join("inner.txt"),
        "Content-Type: text/plain; charset=utf-8\r\n\r\nDom i sag 2019-44.\r\n",
    )
    .unwrap();
    sh(
        dir,
        &format!(
            "openssl cms -encrypt -aes-256-cbc -in inner.txt -out {name} -subject 'Gammel sag' {}",
            certs.join(" ")
        ),
    );
    fs::read(dir.join(name)).unwrap()
}

/// The store of `site`, as the gateway opens it.
async fn open_store(site: &Site) -> store::Store {
    let url = site
        .db_url
        .clone()
        .unwrap_or_else(|| store::sqlite_url(&site.dir));
    store::Store::open(&url, store::MasterKeys::load(&site.dir).unwrap())
        .await
        .unwrap()
}

/// Queues `body` for `to` as the inbound listener does after 250.
fn enqueue(site: &Site, body: &[u8], to: &str) -> i64 {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let s = open_store(site).await;
        let org = s.first_organisation().await.unwrap().unwrap().id;
        let id = s
            .enqueue(
                &store::NewMessage {
                    org,
                    direction: store::Direction::Inbound,
                    mail_from: "dommer@retten.test",
                    envid: None,
                    ret: None,
                    client: "helo=mx.test peer=127.0.0.1:2525",
                    body,
                    recipients: &[store::NewRecipient {
                        address: to,
                        notify: None,
                        orcpt: None,
                    }],
                },
                store::now(),
            )
            .await
            .unwrap();
        s.close().await;
        id
    })
}

#[test]
fn generations_are_decided_shown_and_corrected() {
    if !peer("openssl") {
        return;
    }
    for site in sites() {
        let d = site.dir.parent().unwrap().to_path_buf();
        site.init_firm();
        // The internal CA's own certificates assert no OCES policy.
        let certs = site.ok(&["cert", "list"]);
        let root = line_of(&certs, "1");
        assert!(
            root.contains("\troot-ca\tactive\tother\t") && root.contains("the internal CA's own"),
            "{root}"
        );

        // An expired OCES2 key imported without --legacy: OCES2 from its
        // policy, expired, never an active OCES3 certificate.
        let (voces_p12, voces_crt) = expired_voces(&d);
        let out = site.ok(&["key", "import", &voces_p12]);
        assert!(
            out.contains("\tOCES2\timported\t")
                && out.contains("generation from: policy OID 1.2.208.169.1.1.1.3.4")
                && out.contains("expired"),
            "{out}"
        );
        let cert_id = first_field(&out);
        let line = line_of(&site.ok(&["cert", "list"]), &cert_id);
        assert!(
            line.contains("\torganisation\texpired\tOCES2\t") && line.contains("2019"),
            "{line}"
        );
        let keys = site.ok(&["key", "list"]);
        let key_line = keys
            .lines()
            .find(|l| l.contains(&format!("cert {cert_id} ")))
            .unwrap()
            .to_string();
        let key_id = first_field(&key_line);
        assert!(
            key_line.contains("\tcurrent\t") && key_line.contains("expired OCES2 (policy OID"),
            "{key_line}"
        );

        // Imported again with --legacy: refused, saying how to correct it.
        site.fails(
            &["key", "import", &voces_p12, "--legacy"],
            2,
            &format!("run `sikkermail key set-legacy {key_id}`"),
        );
        assert_eq!(site.ok(&["key", "list"]), keys, "nothing changed");

        // The correction, its undoing and redoing, each audited.
        let out = site.ok(&["key", "set-legacy", &key_id]);
        assert!(
            out.contains(&format!("{key_id}\tlegacy\tcertificate {cert_id}\tOCES2\t")),
            "{out}"
        );
        assert!(line_of(&site.ok(&["key", "list"]), &key_id).contains("\tlegacy\t"));
        assert!(
            site.ok(&["cert", "show", &cert_id])
                .contains("source: legacy")
        );
        let again = site.ok(&["key", "set-legacy", &key_id]);
        assert!(
            again.contains("already legacy: nothing was changed"),
            "{again}"
        );
        site.ok(&["key", "set-legacy", &key_id, "--not-legacy"]);
        assert!(line_of(&site.ok(&["key", "list"]), &key_id).contains("\tcurrent\t"));
        assert!(
            site.ok(&["cert", "show", &cert_id])
                .contains("source: imported")
        );
        site.ok(&["key", "set-legacy", &key_id]);
        let audit = site.ok(&["audit"]);
        for a in [
            format!(
                "\tkey.set-legacy\t{key_id}\tlegacy=true certificate {cert_id}: generation=OCES2 (policy OID 1.2.208.169.1.1.1.3.4)"
            ),
            format!("\tkey.set-current\t{key_id}\tlegacy=false"),
            format!(
                "\tkey.import\t{cert_id}\tgeneration=OCES2 (policy OID 1.2.208.169.1.1.1.3.4) legacy=false"
            ),
        ] {
            assert!(audit.contains(&a), "{a} in {audit}");
        }
        assert_eq!(audit.matches("\tkey.set-legacy\t").count(), 2, "{audit}");
        // Sealed again twice (the flag is in the seal): old mail still opens.
        encrypted_to(&d, "old.eml", &[&voces_crt]);
        let dec = site.ok(&["smime", "decrypt", "--in", &site.path("old.eml")]);
        assert!(dec.ends_with("Dom i sag 2019-44.\r\n"), "{dec}");

        // A legacy key with neither `CVR:` nor a policy: OCES2 because the
        // administrator said so (the subject guess called it OCES3).
        let (arkiv, _) = make(
            &d,
            &Spec {
                file: "arkiv",
                subject: &[
                    ("C", "DK"),
                    ("O", "Advokatfirma Jørgensen"),
                    ("CN", "Arkivnøgle 2015"),
                ],
                policies: &[],
                valid: ("20150101000000Z", "20180101000000Z"),
                email: "arkiv@joergensen.dk",
            },
        );
        let out = site.ok(&["key", "import", &arkiv, "--legacy"]);
        assert!(
            out.contains("\tOCES2\tlegacy\t")
                && out.contains("generation from: administrator said --legacy"),
            "{out}"
        );
        // MitID Erhverv (OCES3 policies) and a partner abroad (none).
        let (mitid, _) = make(
            &d,
            &Spec {
                file: "mitid",
                subject: &[
                    ("CN", "Advokatfirma Jørgensen"),
                    (
                        "serialNumber",
                        "UI:DK-O:G:a040fe26-ce78-4328-ac0e-29eeb12f46df",
                    ),
                    ("O", "Advokatfirma Jørgensen"),
                    ("C", "DK"),
                ],
                policies: &["0.4.0.2042.1.1", "1.2.208.169.1.1.1.3.7"],
                valid: ("20250101000000Z", "20991231000000Z"),
                email: "post@joergensen.dk",
            },
        );
        let out = site.ok(&["key", "import", &mitid]);
        assert!(
            out.contains("\tOCES3\timported\t")
                && out.contains("generation from: policy OID 1.2.208.169.1.1.1.3.7")
                && !out.contains("expired"),
            "{out}"
        );
        let (partner, _) = make(
            &d,
            &Spec {
                file: "partner",
                subject: &[
                    ("C", "DE"),
                    ("O", "Kanzlei Müller"),
                    ("CN", "Kanzlei Müller"),
                ],
                policies: &["0.4.0.2042.1.1"],
                valid: ("20250101000000Z", "20991231000000Z"),
                email: "post@mueller.de",
            },
        );
        let out = site.ok(&["key", "import", &partner]);
        assert!(
            out.contains("\tother\timported\t")
                && out.contains("unknown: no OCES policy OID, not a Danish OCES certificate"),
            "{out}"
        );
    }
}

#[test]
fn a_key_that_opens_waiting_mail_is_deleted_only_with_force() {
    if !peer("openssl") {
        return;
    }
    for site in sites() {
        let d = site.dir.parent().unwrap().to_path_buf();
        site.init_firm();
        let mailbox = site.issue_mailbox_cert("post@joergensen.dk");
        fs::write(d.join("mailbox.crt"), site.pem(&mailbox)).unwrap();
        let (voces_p12, voces_crt) = expired_voces(&d);
        let cert_id = first_field(&site.ok(&["key", "import", &voces_p12]));
        let key_id = first_field(
            site.ok(&["key", "list"])
                .lines()
                .find(|l| l.contains(&format!("cert {cert_id} ")))
                .unwrap(),
        );
        let before = site.ok(&["key", "list"]);
        // Mailboxes and archive folders are out of the store's sight: a key
        // with a certificate is taken to open archived mail.
        site.fails(
            &["key", "delete", &key_id],
            2,
            &format!(
                "key {key_id} is the only key that opens mail encrypted to certificate {cert_id}"
            ),
        );
        // Mail waiting in the queue that only it opens is named; mail that
        // the mailbox certificate opens too is not.
        let only = encrypted_to(&d, "m1.eml", &[&voces_crt]);
        let both = encrypted_to(
            &d,
            "m2.eml",
            &[&voces_crt, &d.join("mailbox.crt").display().to_string()],
        );
        let q1 = enqueue(&site, &only, "post@joergensen.dk");
        let q2 = enqueue(&site, &both, "post@joergensen.dk");
        site.ok(&["queue", "hold", &q1.to_string()]);
        site.fails(
            &["key", "delete", &key_id],
            2,
            &format!("opens queued message(s) {q1} and mail encrypted to certificate {cert_id}"),
        );
        assert_eq!(site.ok(&["key", "list"]), before, "nothing changed");
        // The internal CA's keys are never deleted.
        site.fails(&["key", "delete", "1", "--force"], 2, "internal CA");
        site.fails(&["key", "delete", "999", "--force"], 2, "not found");

        let o = site.run(&["key", "delete", &key_id, "--force"]);
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        let out = String::from_utf8_lossy(&o.stdout);
        assert!(
            out.contains(&format!("{key_id}\tdeleted"))
                && out.contains(&format!("removed with it: certificate(s) {cert_id}")),
            "{out}"
        );
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(
            err.contains(&format!("queued message(s) {q1} no longer open")),
            "{err}"
        );
        assert!(
            !site
                .ok(&["key", "list"])
                .contains(&format!("cert {cert_id} "))
        );
        let audit = site.ok(&["audit"]);
        assert!(
            audit.contains(&format!(
                "\tkey.delete\t{key_id}\tremoved_certificates={cert_id} kept_certificates= force=true queued_only_it_opened={q1}"
            )),
            "{audit}"
        );
        let _ = q2;
        // Now it can be imported again, correctly.
        let out = site.ok(&["key", "import", &voces_p12, "--legacy"]);
        assert!(out.contains("\tOCES2\tlegacy\t"), "{out}");

        // An issued key: its certificate stays (the CRL names it), keyless.
        let k = first_field(
            site.ok(&["key", "list"])
                .lines()
                .find(|l| l.contains(&format!("cert {mailbox} ")))
                .unwrap(),
        );
        let out = site.ok(&["key", "delete", &k, "--force"]);
        assert!(
            out.contains(&format!(
                "kept without a key (issued here: the CRL names them): certificate(s) {mailbox}"
            )),
            "{out}"
        );
        assert!(
            site.ok(&["cert", "show", &mailbox])
                .contains("private key: not held")
        );
    }
}

#[test]
fn recipients_are_removed_pinned_and_unpinned_from_the_cli() {
    if !peer("openssl") {
        return;
    }
    for site in sites() {
        let d = site.dir.parent().unwrap().to_path_buf();
        site.init_firm();
        let (_, a) = make(
            &d,
            &Spec {
                file: "a",
                subject: &[("CN", "Byretten")],
                policies: &["1.2.208.169.1.1.1.3.7"],
                valid: ("20250101000000Z", "20991231000000Z"),
                email: "post@domstol.dk",
            },
        );
        let (_, b) = make(
            &d,
            &Spec {
                file: "b",
                subject: &[("CN", "Byretten, ny")],
                policies: &[],
                valid: ("20250101000000Z", "20991231000000Z"),
                email: "post@domstol.dk",
            },
        );
        let ia = first_field(&site.ok(&["recipient", "import", &a]));
        let ib = first_field(&site.ok(&["recipient", "import", &b]));
        let list = site.ok(&["recipient", "list"]);
        assert!(line_of(&list, &ia).ends_with("\tOCES3"), "{list}");
        assert!(line_of(&list, &ib).ends_with("\tother"), "{list}");
        assert_eq!(
            site.ok(&["recipient", "pin", &ia]),
            format!("{ia}\tpinned\n")
        );
        assert!(line_of(&site.ok(&["recipient", "list"]), &ia).contains("imported (pinned)"));
        site.ok(&["recipient", "unpin", &ia]);
        assert!(!site.ok(&["recipient", "list"]).contains("(pinned)"));
        site.ok(&["recipient", "remove", &ib]);
        let list = site.ok(&["recipient", "list"]);
        assert!(!list.lines().any(|l| first_field(l) == ib), "{list}");
        site.fails(&["recipient", "remove", &ib], 2, "not found");
        site.fails(&["recipient", "pin", "999"], 2, "not found");
        let audit = site.ok(&["audit"]);
        for a in [
            format!("\trecipient.pin\tpost@domstol.dk\tid={ia}"),
            format!("\trecipient.unpin\tpost@domstol.dk\tid={ia}"),
            format!("\trecipient.delete\tpost@domstol.dk\tid={ib}"),
        ] {
            assert!(audit.contains(&a), "{a} in {audit}");
        }
    }
}

#[test]
fn queue_list_says_queued_deferred_held_done_and_retry_all_retries() {
    for site in sites() {
        site.init_firm();
        assert_eq!(site.ok(&["queue", "list"]), "", "nothing listed, no header");
        let q1 = enqueue(&site, b"Subject: a\r\n\r\na\r\n", "a@joergensen.dk");
        let q2 = enqueue(&site, b"Subject: b\r\n\r\nb\r\n", "b@joergensen.dk");
        let q3 = enqueue(&site, b"Subject: c\r\n\r\nc\r\n", "c@joergensen.dk");
        let list = site.ok(&["queue", "list"]);
        assert!(
            list.starts_with(
                "ID\tDIRECTION\tSTATE\tRECEIVED\tNEXT ATTEMPT\tATTEMPTS\tFROM\tRECIPIENTS\tNOTE\n"
            ),
            "{list}"
        );
        assert!(line_of(&list, &q1.to_string()).starts_with(&format!("{q1}\tinbound\tqueued\t")));
        // What a delivery worker does: one attempt each; q1 deferred for an
        // hour, q2 delivered, q3 deferred and then held by an administrator.
        let later = store::now() + 3600;
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let s = open_store(&site).await;
            let claimed = s.claim("test-worker", store::now(), 60, 10).await.unwrap();
            assert_eq!(claimed.len(), 3);
            for m in claimed {
                let outcome = if m.id == q2 {
                    store::Outcome::Delivered("250 2.0.0 Ok".into())
                } else {
                    store::Outcome::Deferred("421 4.3.0 next hop down".into())
                };
                let r = [store::RcptResult { idx: 0, outcome }];
                assert!(
                    s.finish_attempt(m.id, "test-worker", &r, later, None, store::now())
                        .await
                        .unwrap()
                );
            }
            s.close().await;
        });
        site.ok(&["queue", "hold", &q3.to_string()]);
        let list = site.ok(&["queue", "list", "--all"]);
        let l1 = line_of(&list, &q1.to_string());
        assert!(
            l1.contains("\tdeferred\t") && l1.contains(&format!("\t{}\t1\t", date(later))),
            "{l1}"
        );
        assert!(
            line_of(&list, &q2.to_string()).contains("\tdone\t"),
            "{list}"
        );
        assert!(
            line_of(&list, &q2.to_string()).contains("\t-\t1\t"),
            "{list}"
        );
        let l3 = line_of(&list, &q3.to_string());
        assert!(
            l3.contains("\theld\t") && l3.contains("\twhen released\t1\t"),
            "{l3}"
        );
        assert!(!site.ok(&["queue", "list"]).contains("\tdone\t"));

        // Every waiting message due now; the held one stays held.
        let out = site.ok(&["queue", "retry", "--all"]);
        assert_eq!(out, format!("{q1}\tdue now\n"));
        let l1 = line_of(&site.ok(&["queue", "list"]), &q1.to_string());
        assert!(
            l1.contains("\tdeferred\t") && l1.contains("\tnow\t1\t"),
            "{l1}"
        );
        assert!(site.ok(&["queue", "list"]).contains("\theld\t"));
        let audit = site.ok(&["audit"]);
        assert!(
            audit.contains(&format!("\tqueue.retry\tqueue all\tmessages={q1}")),
            "{audit}"
        );
        // `retry ID` and `--all` together, or neither: usage errors.
        let o = site.run(&["queue", "retry", "1", "--all"]);
        assert_eq!(o.status.code(), Some(2));
        let o = site.run(&["queue", "retry"]);
        assert_eq!(o.status.code(), Some(2));
    }
}

fn date(t: i64) -> String {
    Asn1Time::from_unix(t).unwrap().to_string()
}

/// The testvectors folder next to the project, or a loud skip.
fn testvectors() -> Option<PathBuf> {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/testvectors");
    if p.is_dir() {
        return Some(p);
    }
    assert!(
        !peers_required(),
        "../shared/testvectors is missing and SIKKERMAIL_REQUIRE_PEERS=1"
    );
    eprintln!("!!! SKIPPING: ../shared/testvectors is missing");
    None
}

fn der_cert(p: &Path) -> X509 {
    let b = fs::read(p).unwrap();
    X509::from_der(&b).or_else(|_| X509::from_pem(&b)).unwrap()
}

/// Real certificates: the NemLog-in OCES3 ones are OCES3, the NemID test
/// MOCES/FOCES are OCES2, and the CAs (anyPolicy or none) are neither; and
/// what the outbound plan makes of them: `generations = ["OCES3"]`
/// encrypts to the OCES3 certificate only, the built-in default to
/// anything but OCES2.
#[test]
fn real_oces_certificates_and_the_generations_policy() {
    let Some(tv) = testvectors() else { return };
    let generation = |p: &str| service::certs::generation_of(&der_cert(&tv.join(p)));
    assert_eq!(generation("oces3/NemLog-in_IdP_-_Test.cer"), "OCES3");
    assert_eq!(
        generation("oces3/NemLog-in_LookupService_-_Test.cer"),
        "OCES3"
    );
    assert_eq!(generation("oces2/moces.cer"), "OCES2");
    assert_eq!(generation("oces2/foces.cer"), "OCES2");
    assert_eq!(generation("oces2/ca22.cer"), "other");
    assert_eq!(generation("oces3/OCES3_ROOT_CA_-_CTI.cer"), "other");
    let d = store::keys::decide_generation(&der_cert(&tv.join("oces2/moces.cer")), false);
    assert_eq!(d.basis, "policy OID 1.3.6.1.4.1.31313.2.4.6.2.5");

    let tmp = tempfile::tempdir().unwrap();
    let (_, foreign) = make(
        tmp.path(),
        &Spec {
            file: "partner",
            subject: &[("C", "DE"), ("CN", "Kanzlei Müller")],
            policies: &[],
            valid: ("20250101000000Z", "20991231000000Z"),
            email: "post@mueller.de",
        },
    );
    let certs = [
        (
            "oces3@nemlog-in.test",
            der_cert(&tv.join("oces3/NemLog-in_IdP_-_Test.cer")),
        ),
        ("oces2@nemid.test", der_cert(&tv.join("oces2/moces.cer"))),
        ("post@mueller.de", der_cert(Path::new(&foreign))),
    ];
    let certs_for = |a: &str| {
        certs
            .iter()
            .filter(|(addr, _)| *addr == a)
            .map(|(_, c)| service::RecipientCert {
                cert: c.clone(),
                generation: service::certs::generation_of(c),
                source: "imported".into(),
                not_after: i64::MAX,
            })
            .collect::<Vec<_>>()
    };
    let keys = service::MailKeys {
        decrypt: smime::MemoryKeyring::new(),
        skipped: Vec::new(),
        signers: Vec::new(),
        ca: Vec::new(),
        labels: Default::default(),
    };
    let rcpts: Vec<String> = certs.iter().map(|(a, _)| a.to_string()).collect();
    let msg = b"From: a@joergensen.dk\r\nSubject: Sag\r\n\r\nHej\r\n";
    let encrypted_for = |policy: &str| {
        let p = policies::Policy::parse(policy).unwrap();
        let plan = gateway::process::outbound::plan(
            msg,
            "a@joergensen.dk",
            &rcpts,
            &p,
            &keys,
            &certs_for,
            store::now(),
        );
        let mut out: Vec<&str> = plan
            .copies
            .iter()
            .filter(|c| c.encrypted.is_some())
            .flat_map(|c| c.recipients.iter().map(|i| rcpts[*i].as_str()))
            .collect();
        out.sort();
        (out, plan.refused.len())
    };
    assert_eq!(
        encrypted_for(
            "[default]\nsign = false\nencrypt = \"required\"\ngenerations = [\"OCES3\"]\n"
        ),
        (vec!["oces3@nemlog-in.test"], 2)
    );
    assert_eq!(
        encrypted_for("[default]\nsign = false\n"),
        (vec!["oces3@nemlog-in.test", "post@mueller.de"], 0)
    );
    assert_eq!(
        encrypted_for("[default]\nsign = false\ngenerations = [\"OCES2\", \"other\"]\n"),
        (vec!["oces2@nemid.test", "post@mueller.de"], 0)
    );
}
