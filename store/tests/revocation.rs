//! The revocation cache (CRLs and OCSP answers fetched from the network),
//! on SQLite and on PostgreSQL when `TEST_DATABASE_URL` is set: answers are
//! served until their nextUpdate, a fresher answer replaces an older one,
//! never the reverse, and nodes writing at once leave the freshest.

#![allow(clippy::unwrap_used)]

use store::{CachedRevocation, Kek, Store};

mod common;

use common::{databases, drop_db, master};

fn entry(url: &str, body: &[u8], next_update: i64) -> CachedRevocation {
    CachedRevocation {
        url: url.into(),
        body: body.to_vec(),
        fetched_at: 1_000,
        next_update,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn answers_are_kept_until_next_update_and_the_freshest_wins() {
    for db in databases().await {
        let kek = Kek::generate().unwrap();
        let s = Store::open(&db.url, master(&kek)).await.unwrap();
        let url = "http://ca.example/ca.crl";
        assert!(s.revocation_get("crl", url, 1_000).await.unwrap().is_none());
        assert!(
            s.revocation_put("crl", url, &entry(url, b"v1", 2_000))
                .await
                .unwrap()
        );
        let got = s.revocation_get("crl", url, 1_500).await.unwrap().unwrap();
        assert_eq!(got.body, b"v1");
        // Past its nextUpdate it is not served.
        assert!(s.revocation_get("crl", url, 2_000).await.unwrap().is_none());
        // An older answer (earlier nextUpdate) does not replace it; a
        // fresher one does.
        assert!(
            !s.revocation_put("crl", url, &entry(url, b"old", 1_800))
                .await
                .unwrap()
        );
        assert_eq!(
            s.revocation_get("crl", url, 1_500)
                .await
                .unwrap()
                .unwrap()
                .body,
            b"v1"
        );
        assert!(
            s.revocation_put("crl", url, &entry(url, b"v2", 3_000))
                .await
                .unwrap()
        );
        assert_eq!(
            s.revocation_get("crl", url, 2_500)
                .await
                .unwrap()
                .unwrap()
                .body,
            b"v2"
        );
        // Kinds are apart.
        assert!(
            s.revocation_get("ocsp", url, 1_500)
                .await
                .unwrap()
                .is_none()
        );

        // Nodes fetching at once: whatever the order, the freshest stays.
        let rounds: i64 = std::env::var("SIKKERMAIL_RACE_ROUNDS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(20);
        for round in 0..rounds {
            let key = format!("id-{round}");
            let mut tasks = Vec::new();
            for i in 0..8i64 {
                let (s, key) = (s.clone(), key.clone());
                tasks.push(tokio::spawn(async move {
                    let body = format!("answer {i}");
                    s.revocation_put(
                        "ocsp",
                        &key,
                        &entry("http://ocsp", body.as_bytes(), 10_000 + i),
                    )
                    .await
                    .unwrap()
                }));
            }
            for t in tasks {
                t.await.unwrap();
            }
            let got = s
                .revocation_get("ocsp", &key, 5_000)
                .await
                .unwrap()
                .unwrap();
            assert_eq!(got.next_update, 10_007, "round {round}");
            assert_eq!(got.body, b"answer 7", "round {round}");
        }
        // Expired entries are purged.
        assert!(s.revocation_purge(20_000).await.unwrap() > rounds as u64);
        assert_eq!(s.revocation_count().await.unwrap(), 0);
        s.close().await;
        drop_db(&db).await;
    }
}
