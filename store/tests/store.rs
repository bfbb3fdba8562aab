//! The store's suite: always on SQLite, and on PostgreSQL too when
//! `TEST_DATABASE_URL` is set (a fresh database per test, dropped after).

#![allow(clippy::unwrap_used)]

use openssl::pkey::PKey;
use openssl::rsa::Rsa;
use sqlx::Connection;
use store::{Backend, Kek, MasterKeys, NewCert, NewKey, OrgId, Store, StoreError};

mod common;

use common::{databases, drop_db, master};

fn rsa() -> PKey<openssl::pkey::Private> {
    PKey::from_rsa(Rsa::generate(2048).unwrap()).unwrap()
}

fn self_signed(key: &PKey<openssl::pkey::Private>, cn: &str, serial: u32) -> openssl::x509::X509 {
    let mut n = openssl::x509::X509NameBuilder::new().unwrap();
    n.append_entry_by_text("CN", cn).unwrap();
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
    b.set_not_after(&openssl::asn1::Asn1Time::days_from_now(1).unwrap())
        .unwrap();
    b.sign(key, openssl::hash::MessageDigest::sha256()).unwrap();
    b.build()
}

fn new_cert(cert: &openssl::x509::X509, kind: &str, key_id: Option<i64>) -> NewCert {
    NewCert {
        kind: kind.into(),
        generation: "OCES3".into(),
        source: "issued".into(),
        pem: String::from_utf8(cert.to_pem().unwrap()).unwrap(),
        subject: format!("{:?}", cert.subject_name()),
        issuer: "CN=Test CA".into(),
        serial: cert
            .serial_number()
            .to_bn()
            .unwrap()
            .to_hex_str()
            .unwrap()
            .to_string(),
        key_id,
        not_before: 1,
        not_after: 2,
        ..Default::default()
    }
}

#[tokio::test(flavor = "current_thread")]
async fn private_keys_are_never_stored_in_clear() {
    for db in databases().await {
        let kek = Kek::generate().unwrap();
        let s = Store::open(&db.url, master(&kek)).await.unwrap();
        let org = s
            .create_organisation("Advokat A/S", "12345678")
            .await
            .unwrap();
        let key = rsa();
        let id = s
            .insert_key(
                org,
                NewKey {
                    key: &key,
                    legacy: false,
                },
            )
            .await
            .unwrap();
        let back = s.private_key(org, id).await.unwrap();
        assert!(back.public_eq(&key));
        let der = key.private_key_to_pkcs8().unwrap();
        let pem = key.private_key_to_pem_pkcs8().unwrap();
        let rsa_der = key.rsa().unwrap().private_key_to_der().unwrap();
        // A recognisable piece of the key: its private exponent.
        let d = key.rsa().unwrap().d().to_vec();
        match s.backend() {
            Backend::Sqlite => {
                s.close().await;
                let path = db
                    .url
                    .trim_start_matches("sqlite://")
                    .split('?')
                    .next()
                    .unwrap()
                    .to_string();
                let mut file = std::fs::read(&path).unwrap();
                for ext in ["-wal", "-journal"] {
                    if let Ok(more) = std::fs::read(format!("{path}{ext}")) {
                        file.extend(more);
                    }
                }
                for needle in [&der[..], &pem[..], &rsa_der[..], &d[..64]] {
                    assert!(
                        !file.windows(needle.len()).any(|w| w == needle),
                        "private key found in clear in the database file"
                    );
                }
            }
            Backend::Postgres => {
                let mut c = sqlx::AnyConnection::connect(&db.url).await.unwrap();
                let rows = sqlx::query("SELECT sealed FROM private_keys")
                    .fetch_all(&mut c)
                    .await
                    .unwrap();
                for r in rows {
                    let sealed: Vec<u8> = sqlx::Row::try_get(&r, "sealed").unwrap();
                    assert!(!sealed.windows(64).any(|w| w == &d[..64]));
                    assert!(
                        !sealed
                            .windows(der.len().min(sealed.len()))
                            .any(|w| w == &der[..w.len()])
                    );
                }
                s.close().await;
            }
        }
        drop_db(&db).await;
    }
}

#[tokio::test(flavor = "current_thread")]
async fn master_key_rotation_reseals_everything() {
    for db in databases().await {
        let old = Kek::generate().unwrap();
        let s = Store::open(&db.url, master(&old)).await.unwrap();
        let org = s
            .create_organisation("Advokat A/S", "12345678")
            .await
            .unwrap();
        let keys: Vec<_> = (0..3).map(|_| rsa()).collect();
        let mut ids = Vec::new();
        for (i, k) in keys.iter().enumerate() {
            ids.push(
                s.insert_key(
                    org,
                    NewKey {
                        key: k,
                        legacy: i == 2,
                    },
                )
                .await
                .unwrap(),
            );
        }
        let new = Kek::generate().unwrap();
        // Interrupted rotation: the new key is loaded beside the old one.
        let during = Store::open(
            &db.url,
            MasterKeys {
                current: old.clone(),
                next: Some(new.clone()),
                file: None,
                extra: Vec::new(),
            },
        )
        .await
        .unwrap();
        assert_eq!(during.reseal_all(&new).await.unwrap().resealed, 3);
        // Running it again finds nothing left to do.
        assert_eq!(during.reseal_all(&new).await.unwrap().resealed, 0);
        during.close().await;
        s.close().await;
        let after = Store::open(&db.url, master(&new)).await.unwrap();
        for (k, id) in keys.iter().zip(&ids) {
            assert!(after.private_key(org, *id).await.unwrap().public_eq(k));
        }
        assert!(
            after
                .list_keys(org)
                .await
                .unwrap()
                .iter()
                .all(|k| k.kek_id == new.id())
        );
        assert!(after.list_keys(org).await.unwrap()[2].legacy);
        after.close().await;
        // The old master key no longer opens anything.
        let stale = Store::open(&db.url, master(&old)).await.unwrap();
        let err = stale.private_key(org, ids[0]).await.unwrap_err();
        assert!(err.to_string().contains("which is not loaded"), "{err}");
        stale.close().await;
        drop_db(&db).await;
    }
}

#[tokio::test(flavor = "current_thread")]
async fn one_organisation_never_sees_another() {
    for db in databases().await {
        let s = Store::open(&db.url, master(&Kek::generate().unwrap()))
            .await
            .unwrap();
        let a = s.create_organisation("A", "11111111").await.unwrap();
        let b = s.create_organisation("B", "22222222").await.unwrap();
        let key = rsa();
        let kid = s
            .insert_key(
                a,
                NewKey {
                    key: &key,
                    legacy: false,
                },
            )
            .await
            .unwrap();
        let cert = self_signed(&key, "a", 5);
        let cid = s
            .insert_certificate(a, &new_cert(&cert, "organisation", Some(kid)))
            .await
            .unwrap();
        s.upsert_recipient(
            a,
            "court@domstol.dk",
            "PEM",
            "ff",
            "CN=court",
            9,
            "imported",
        )
        .await
        .unwrap();
        s.audit(Some(a), "cli", "cert.issue", &cid.to_string(), "")
            .await
            .unwrap();
        assert!(matches!(
            s.certificate(b, cid).await,
            Err(StoreError::NotFound(_))
        ));
        assert!(matches!(
            s.private_key(b, kid).await,
            Err(StoreError::NotFound(_))
        ));
        assert!(s.list_certificates(b).await.unwrap().is_empty());
        assert!(s.list_keys(b).await.unwrap().is_empty());
        assert!(s.list_recipients(b).await.unwrap().is_empty());
        assert!(s.audit_events(b, 10).await.unwrap().is_empty());
        assert!(s.keyring(b).await.unwrap().ring.is_empty());
        assert!(
            s.revoke_certificate(b, cid, "keyCompromise", 1)
                .await
                .is_err()
        );
        assert_eq!(s.certificate(a, cid).await.unwrap().status, "active");
        assert_eq!(s.keyring(a).await.unwrap().ring.len(), 1);
        s.close().await;
        drop_db(&db).await;
    }
}

#[tokio::test(flavor = "current_thread")]
async fn certificates_ca_state_recipients_and_audit() {
    for db in databases().await {
        let s = Store::open(&db.url, master(&Kek::generate().unwrap()))
            .await
            .unwrap();
        let org: OrgId = s
            .create_organisation("Advokat A/S", "12345678")
            .await
            .unwrap();
        assert_eq!(
            s.first_organisation().await.unwrap().unwrap().cvr,
            "12345678"
        );
        let ca_key = rsa();
        let ca_kid = s
            .insert_key(
                org,
                NewKey {
                    key: &ca_key,
                    legacy: false,
                },
            )
            .await
            .unwrap();
        let ca = s
            .insert_certificate(
                org,
                &new_cert(&self_signed(&ca_key, "ca", 1), "root-ca", Some(ca_kid)),
            )
            .await
            .unwrap();
        let k1 = rsa();
        let kid1 = s
            .insert_key(
                org,
                NewKey {
                    key: &k1,
                    legacy: false,
                },
            )
            .await
            .unwrap();
        let c1 = s
            .insert_certificate(
                org,
                &new_cert(&self_signed(&k1, "one", 2), "organisation", Some(kid1)),
            )
            .await
            .unwrap();
        let legacy = rsa();
        let lid = s
            .insert_key(
                org,
                NewKey {
                    key: &legacy,
                    legacy: true,
                },
            )
            .await
            .unwrap();
        let mut lc = new_cert(
            &self_signed(&legacy, "old voces", 3),
            "organisation",
            Some(lid),
        );
        lc.generation = "OCES2".into();
        lc.source = "legacy".into();
        s.insert_certificate(org, &lc).await.unwrap();
        // The same serial from the same issuer twice is refused.
        let dup = s
            .insert_certificate(
                org,
                &new_cert(&self_signed(&k1, "one", 2), "organisation", None),
            )
            .await
            .unwrap_err();
        assert!(matches!(dup, StoreError::Conflict(_)), "{dup}");
        // Keyring: end-entity keys including legacy, not the CA's.
        assert_eq!(s.keyring(org).await.unwrap().ring.len(), 2);
        // CA state and CRL numbers.
        s.set_ca_state(org, ca, ca).await.unwrap();
        assert!(matches!(
            s.set_ca_state(org, ca, ca).await,
            Err(StoreError::Conflict(_))
        ));
        assert_eq!(s.next_crl_number(org).await.unwrap(), 1);
        assert_eq!(s.next_crl_number(org).await.unwrap(), 2);
        s.store_crl(org, b"crl", 77).await.unwrap();
        let st = s.ca_state(org).await.unwrap().unwrap();
        assert_eq!(
            (st.crl_number, st.crl_der.as_deref(), st.crl_updated_at),
            (2, Some(&b"crl"[..]), Some(77))
        );
        // Revocation, once.
        s.revoke_certificate(org, c1, "keyCompromise", 50)
            .await
            .unwrap();
        assert!(matches!(
            s.revoke_certificate(org, c1, "keyCompromise", 51).await,
            Err(StoreError::Conflict(_))
        ));
        let revoked = s.revoked_by_issuer(org, "CN=Test CA").await.unwrap();
        assert_eq!(revoked.len(), 1);
        assert_eq!(
            revoked[0].revocation_reason.as_deref(),
            Some("keyCompromise")
        );
        // Recipients: seen twice is one row, last_seen moves.
        let r1 = s
            .upsert_recipient(
                org,
                "Post@Domstol.dk",
                "PEM",
                "aa",
                "CN=court",
                9,
                "harvested",
            )
            .await
            .unwrap();
        let r2 = s
            .upsert_recipient(
                org,
                "post@domstol.dk",
                "PEM",
                "aa",
                "CN=court",
                9,
                "harvested",
            )
            .await
            .unwrap();
        assert_eq!(r1, r2);
        let rec = s.list_recipients(org).await.unwrap();
        assert_eq!(rec.len(), 1);
        assert_eq!(rec[0].address, "post@domstol.dk");
        // Audit.
        s.audit(
            Some(org),
            "cli:root",
            "cert.revoke",
            &c1.to_string(),
            "reason=keyCompromise",
        )
        .await
        .unwrap();
        let ev = s.audit_events(org, 5).await.unwrap();
        assert_eq!(ev[0].action, "cert.revoke");
        // Mailboxes are per address.
        let m1 = s.ensure_mailbox(org, "post@advokat.dk").await.unwrap();
        assert_eq!(s.ensure_mailbox(org, "POST@advokat.dk").await.unwrap(), m1);
        s.close().await;
        drop_db(&db).await;
    }
}

#[tokio::test(flavor = "current_thread")]
async fn sealed_keys_cannot_be_moved_between_organisations_or_unretired() {
    for db in databases().await {
        let s = Store::open(&db.url, master(&Kek::generate().unwrap()))
            .await
            .unwrap();
        let a = s.create_organisation("A", "11111111").await.unwrap();
        let b = s.create_organisation("B", "22222222").await.unwrap();
        let ka = s
            .insert_key(
                a,
                NewKey {
                    key: &rsa(),
                    legacy: true,
                },
            )
            .await
            .unwrap();
        let kb = s
            .insert_key(
                b,
                NewKey {
                    key: &rsa(),
                    legacy: false,
                },
            )
            .await
            .unwrap();
        let mut c = sqlx::AnyConnection::connect(&db.url).await.unwrap();
        // Someone with write access to the database moves A's key row to B:
        // it must not open as B's.
        sqlx::query("UPDATE private_keys SET org_id = $1 WHERE id = $2")
            .bind(b.0)
            .bind(ka)
            .execute(&mut c)
            .await
            .unwrap();
        let moved = s.private_key(b, ka).await;
        assert!(s.private_key(b, kb).await.is_ok());
        assert!(
            moved.is_err(),
            "a sealed key moved to another organisation opened"
        );
        sqlx::query("UPDATE private_keys SET org_id = $1 WHERE id = $2")
            .bind(a.0)
            .bind(ka)
            .execute(&mut c)
            .await
            .unwrap();
        assert!(s.private_key(a, ka).await.is_ok());
        // Flipping the legacy flag breaks the seal too.
        sqlx::query("UPDATE private_keys SET legacy = 0 WHERE id = $1")
            .bind(ka)
            .execute(&mut c)
            .await
            .unwrap();
        assert!(matches!(
            s.private_key(a, ka).await,
            Err(StoreError::Seal(_))
        ));
        c.close().await.unwrap();
        s.close().await;
        drop_db(&db).await;
    }
}

/// The internal CA certificates of every organisation are found by subject
/// (for answering revocation from the records); other kinds are not.
#[tokio::test(flavor = "current_thread")]
async fn ca_certificates_are_found_by_subject_across_organisations() {
    for db in databases().await {
        let s = Store::open(&db.url, master(&Kek::generate().unwrap()))
            .await
            .unwrap();
        let a = s.create_organisation("A", "11111111").await.unwrap();
        let b = s.create_organisation("B", "22222222").await.unwrap();
        let key = rsa();
        let named = |kind: &str, subject: &str, serial: u32| {
            let mut c = new_cert(&self_signed(&key, subject, serial), kind, None);
            c.subject = format!("CN={subject}");
            c
        };
        let ra = s
            .insert_certificate(a, &named("issuing-ca", "Same Name", 1))
            .await
            .unwrap();
        let rb = s
            .insert_certificate(b, &named("root-ca", "Same Name", 2))
            .await
            .unwrap();
        s.insert_certificate(a, &named("organisation", "Same Name", 3))
            .await
            .unwrap();
        s.insert_certificate(b, &named("issuing-ca", "Other", 4))
            .await
            .unwrap();
        let found = s.ca_certificates_named("CN=Same Name").await.unwrap();
        let ids: Vec<(i64, i64)> = found.iter().map(|(o, c)| (o.0, c.id)).collect();
        assert_eq!(ids, vec![(a.0, ra), (b.0, rb)], "{}", db.url);
        assert!(
            s.ca_certificates_named("CN=Nobody")
                .await
                .unwrap()
                .is_empty()
        );
        s.close().await;
        drop_db(&db).await;
    }
}
