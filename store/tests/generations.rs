//! Certificate generations (migration 0013) and key corrections, on
//! SQLite and on PostgreSQL when `TEST_DATABASE_URL` is set.

#![allow(clippy::unwrap_used)]

use openssl::pkey::PKey;
use openssl::rsa::Rsa;
use sqlx::Connection;
use store::keys::{OCES2, OCES3, OTHER, decide_generation};
use store::{Kek, NewCert, NewKey, Store};

mod common;

use common::{databases, drop_db, master};

/// certificatePolicies (RFC 5280 §4.2.1.4) with these OIDs, no qualifiers:
/// a SEQUENCE of PolicyInformation SEQUENCEs, DER.
pub fn policies_extension(oids: &[&str]) -> openssl::x509::X509Extension {
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
        let obj = openssl::asn1::Asn1Object::from_str(o).unwrap();
        infos.extend(tlv(0x30, &tlv(0x06, obj.as_slice())));
    }
    openssl::x509::X509Extension::new_from_der(
        &openssl::asn1::Asn1Object::from_str("2.5.29.32").unwrap(),
        false,
        &openssl::asn1::Asn1OctetString::new_from_bytes(&tlv(0x30, &infos)).unwrap(),
    )
    .unwrap()
}

/// A certificate with these subject fields and certificate policies.
fn cert(
    key: &PKey<openssl::pkey::Private>,
    subject: &[(&str, &str)],
    policies: &[&str],
    serial: u32,
) -> openssl::x509::X509 {
    let mut n = openssl::x509::X509NameBuilder::new().unwrap();
    for (k, v) in subject {
        n.append_entry_by_text(k, v).unwrap();
    }
    let n = n.build();
    let mut b = openssl::x509::X509Builder::new().unwrap();
    b.set_version(2).unwrap();
    b.set_serial_number(
        &openssl::asn1::Asn1Integer::from_bn(&openssl::bn::BigNum::from_u32(serial).unwrap())
            .unwrap(),
    )
    .unwrap();
    b.set_subject_name(&n).unwrap();
    b.set_issuer_name(&n).unwrap();
    b.set_pubkey(key).unwrap();
    b.set_not_before(&openssl::asn1::Asn1Time::days_from_now(0).unwrap())
        .unwrap();
    b.set_not_after(&openssl::asn1::Asn1Time::days_from_now(30).unwrap())
        .unwrap();
    if !policies.is_empty() {
        b.append_extension(policies_extension(policies)).unwrap();
    }
    b.sign(key, openssl::hash::MessageDigest::sha256()).unwrap();
    b.build()
}

fn rsa() -> PKey<openssl::pkey::Private> {
    PKey::from_rsa(Rsa::generate(2048).unwrap()).unwrap()
}

/// A legacy NemID key whose subject lacks `serialNumber=CVR:` and whose
/// certificate has no policy: the case the subject guess labelled OCES3.
fn legacy_without_cvr(key: &PKey<openssl::pkey::Private>) -> openssl::x509::X509 {
    cert(
        key,
        &[
            ("C", "DK"),
            ("O", "Advokatfirma Jørgensen"),
            ("CN", "Gammelt arkiv"),
        ],
        &[],
        7,
    )
}

#[test]
fn generations_come_from_policies_or_what_the_administrator_said() {
    let k = rsa();
    let oces3 = cert(
        &k,
        &[("CN", "Fælles postkasse"), ("C", "DK")],
        &["0.4.0.2042.1.1", "1.2.208.169.1.1.1.3.7"],
        1,
    );
    let d = decide_generation(&oces3, false);
    assert_eq!(
        (d.generation, d.basis.as_str()),
        (OCES3, "policy OID 1.2.208.169.1.1.1.3.7")
    );
    // The certificate's own policy wins over --legacy (the key is retired,
    // the certificate stays what it is).
    assert_eq!(decide_generation(&oces3, true).generation, OCES3);
    let voces = cert(
        &k,
        &[("C", "DK"), ("serialNumber", "CVR:12345678-UID:1")],
        &["1.2.208.169.1.1.1.3.4"],
        2,
    );
    assert_eq!(decide_generation(&voces, false).generation, OCES2);
    // The NemID test CAs' policies are OCES2 too.
    let test_moces = cert(&k, &[("CN", "x")], &["1.3.6.1.4.1.31313.2.4.6.2.5"], 3);
    assert_eq!(decide_generation(&test_moces, false).generation, OCES2);
    // ETSI's policy alone is not OCES3: every EU CA asserts it.
    let etsi = cert(
        &k,
        &[("CN", "Partner"), ("C", "DE")],
        &["0.4.0.2042.1.1"],
        4,
    );
    let d = decide_generation(&etsi, false);
    assert_eq!(d.generation, OTHER, "{d:?}");
    assert!(d.basis.starts_with("unknown: "), "{d:?}");
    let old = legacy_without_cvr(&k);
    let d = decide_generation(&old, true);
    assert_eq!(d.generation, OCES2);
    assert!(d.basis.starts_with("administrator said --legacy"), "{d:?}");
    assert_eq!(decide_generation(&old, false).generation, OTHER);
    // An OCES2-looking subject without a policy is not taken for OCES2,
    // but the basis says how to mark it.
    let looks = cert(&k, &[("serialNumber", "CVR:12345678-RID:9")], &[], 5);
    let d = decide_generation(&looks, false);
    assert_eq!(d.generation, OTHER);
    assert!(d.basis.contains("key set-legacy"), "{d:?}");
    for c in [&oces3, &voces, &etsi, &old, &looks] {
        assert!(!decide_generation(c, false).basis.contains(';'));
    }
}

/// Migration 0013 on a database made before it: a row whose generation was
/// guessed from the subject is decided again when read (a legacy key
/// without `CVR:` was "OCES3"; now OCES2 because the administrator said
/// so), and rows written after it keep what they were decided from.
#[tokio::test(flavor = "current_thread")]
async fn migration_0013_decides_old_rows_again() {
    for db in databases().await {
        let dir = if db.url.starts_with("sqlite:") {
            "sqlite"
        } else {
            "postgres"
        };
        sqlx::any::install_default_drivers();
        let m = sqlx::migrate::Migrator::new(std::path::Path::new(&format!(
            "{}/migrations/{dir}",
            env!("CARGO_MANIFEST_DIR")
        )))
        .await
        .unwrap();
        assert!(m.iter().any(|x| x.version == 13), "0013 is in {dir}");
        let k = rsa();
        let old = legacy_without_cvr(&k);
        let pem = String::from_utf8(old.to_pem().unwrap()).unwrap();
        {
            let mut c = sqlx::AnyConnection::connect(&db.url).await.unwrap();
            // The schema as it was before 0013.
            m.run_to(12, &mut c).await.unwrap();
            sqlx::query(
                "INSERT INTO organisations (name, cvr, created_at) VALUES ('A', '12345678', 1)",
            )
            .execute(&mut c)
            .await
            .unwrap();
            sqlx::query(
                "INSERT INTO certificates (org_id, kind, generation, source, status, pem, subject, \
                 issuer, serial, not_before, not_after, created_at) \
                 VALUES (1, 'organisation', 'OCES3', 'legacy', 'active', $1, 'CN=Gammelt arkiv', \
                 'CN=Gammelt arkiv', '07', 1, 2, 1)",
            )
            .bind(&pem)
            .execute(&mut c)
            .await
            .unwrap();
            c.close().await.unwrap();
        }
        let kek = Kek::generate().unwrap();
        let s = Store::open(&db.url, master(&kek)).await.unwrap();
        let org = s.first_organisation().await.unwrap().unwrap().id;
        let row = s.certificate(org, 1).await.unwrap();
        assert_eq!(row.generation, OCES2, "{row:?}");
        assert!(
            row.generation_basis
                .starts_with("administrator said --legacy"),
            "{row:?}"
        );
        // A row written now keeps its basis as given.
        let new = cert(&k, &[("CN", "Ny")], &["1.2.208.169.1.1.1.3.7"], 8);
        let d = decide_generation(&new, false);
        let id = s
            .insert_certificate(
                org,
                &NewCert {
                    kind: "organisation".into(),
                    generation: d.generation.into(),
                    generation_basis: d.basis.clone(),
                    source: "imported".into(),
                    pem: String::from_utf8(new.to_pem().unwrap()).unwrap(),
                    subject: "CN=Ny".into(),
                    issuer: "CN=Ny".into(),
                    serial: "08".into(),
                    not_before: 1,
                    not_after: 2,
                    ..Default::default()
                },
            )
            .await
            .unwrap();
        let row = s.certificate(org, id).await.unwrap();
        assert_eq!(
            (row.generation.as_str(), row.generation_basis),
            (OCES3, d.basis)
        );
        s.close().await;
        drop_db(&db).await;
    }
}

/// `set_key_legacy` seals the key again (the flag is part of the seal's
/// associated data): it still opens, the flag shows, a second call changes
/// nothing; `delete_key` removes an imported key's certificate and keeps an
/// issued one's record without its key.
#[tokio::test(flavor = "current_thread")]
async fn a_key_is_marked_legacy_and_deleted() {
    for db in databases().await {
        let kek = Kek::generate().unwrap();
        let s = Store::open(&db.url, master(&kek)).await.unwrap();
        let org = s.create_organisation("A", "12345678").await.unwrap();
        let k = rsa();
        let id = s
            .insert_key(
                org,
                NewKey {
                    key: &k,
                    legacy: false,
                },
            )
            .await
            .unwrap();
        assert!(s.set_key_legacy(org, id, true).await.unwrap());
        assert!(!s.set_key_legacy(org, id, true).await.unwrap());
        let info = s.list_keys(org).await.unwrap();
        assert!(info.iter().any(|i| i.id == id && i.legacy), "{info:?}");
        let opened = s.private_key(org, id).await.unwrap();
        assert!(opened.public_eq(&k));
        assert!(s.set_key_legacy(org, id, false).await.unwrap());
        assert!(s.private_key(org, id).await.unwrap().public_eq(&k));
        assert!(s.set_key_legacy(org, 999, true).await.is_err());

        let issued_key = s
            .insert_key(
                org,
                NewKey {
                    key: &k,
                    legacy: false,
                },
            )
            .await
            .unwrap();
        let row = |kid: i64, source: &str, serial: &str| NewCert {
            kind: "organisation".into(),
            source: source.into(),
            pem: "x".into(),
            subject: "CN=x".into(),
            issuer: "CN=y".into(),
            serial: serial.into(),
            key_id: Some(kid),
            ..Default::default()
        };
        let imported = s
            .insert_certificate(org, &row(id, "imported", "01"))
            .await
            .unwrap();
        let issued = s
            .insert_certificate(org, &row(issued_key, "issued", "02"))
            .await
            .unwrap();
        let mut tx = s.begin().await.unwrap();
        let d = tx.delete_key(org, id).await.unwrap();
        tx.commit().await.unwrap();
        assert_eq!((d.removed_certs, d.kept_certs), (vec![imported], vec![]));
        assert!(s.certificate(org, imported).await.is_err());
        let mut tx = s.begin().await.unwrap();
        let d = tx.delete_key(org, issued_key).await.unwrap();
        tx.commit().await.unwrap();
        assert_eq!((d.removed_certs, d.kept_certs), (vec![], vec![issued]));
        assert_eq!(s.certificate(org, issued).await.unwrap().key_id, None);
        assert!(s.list_keys(org).await.unwrap().is_empty());
        let mut tx = s.begin().await.unwrap();
        assert!(tx.delete_key(org, id).await.is_err());
        drop(tx);
        s.close().await;
        drop_db(&db).await;
    }
}
