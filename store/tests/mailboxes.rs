//! Mailbox folders (leases, checkpoints) and sealed IMAP passwords, on
//! SQLite and on PostgreSQL when `TEST_DATABASE_URL` is set.

#![allow(clippy::unwrap_used)]

use store::{Kek, MasterKeys, Store};

mod common;

use common::{databases, drop_db, master};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn one_process_holds_a_folder_however_many_race_for_it() {
    for db in databases().await {
        let kek = Kek::generate().unwrap();
        let s = Store::open(&db.url, master(&kek)).await.unwrap();
        let org = s
            .create_organisation("Advokat A/S", "12345678")
            .await
            .unwrap();
        let rounds: i64 = std::env::var("SIKKERMAIL_RACE_ROUNDS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(20);
        for round in 0..rounds {
            let folder = format!("INBOX-{round}");
            let mut tasks = Vec::new();
            for i in 0..8 {
                let (s, folder) = (s.clone(), folder.clone());
                tasks.push(tokio::spawn(async move {
                    let now = store::now();
                    let me = format!("node{i}@host/{i}");
                    let r = s
                        .mailbox_claim(org, "post", &folder, &me, now + 60, now)
                        .await
                        .unwrap();
                    (me, r.is_none())
                }));
            }
            let mut winners = Vec::new();
            for t in tasks {
                let (me, won) = t.await.unwrap();
                if won {
                    winners.push(me);
                }
            }
            assert_eq!(winners.len(), 1, "round {round}: {winners:?}");
            let winner = &winners[0];
            // Only the holder moves the checkpoint.
            let now = store::now();
            assert!(
                !s.mailbox_checkpoint_set(org, "post", &folder, "other@host/1", 7, 99, now)
                    .await
                    .unwrap()
            );
            assert!(
                s.mailbox_checkpoint_set(org, "post", &folder, winner, 7, 42, now)
                    .await
                    .unwrap()
            );
            let f = s.mailbox_folder(org, "post", &folder).await.unwrap();
            assert_eq!((f.uidvalidity, f.last_uid), (7, 42));
            assert_eq!(f.lease_owner.as_deref(), Some(winner.as_str()));
            // The holder renews; another is told who holds it.
            assert!(
                s.mailbox_claim(org, "post", &folder, winner, now + 60, now)
                    .await
                    .unwrap()
                    .is_none()
            );
            let held = s
                .mailbox_claim(org, "post", &folder, "x@h/9", now + 60, now)
                .await
                .unwrap();
            assert_eq!(held.map(|(o, _)| o), Some(winner.clone()));
            // A dead holder's lease is taken over once, however many try.
            let mut takers = Vec::new();
            for i in 0..4 {
                let (s, folder, dead) = (s.clone(), folder.clone(), winner.clone());
                takers.push(tokio::spawn(async move {
                    s.mailbox_take_over(org, "post", &folder, &dead, &format!("t{i}@h/1"), now + 60)
                        .await
                        .unwrap()
                }));
            }
            let mut took = 0;
            for t in takers {
                took += usize::from(t.await.unwrap());
            }
            assert_eq!(took, 1, "round {round}");
            // An expired lease is anyone's; a released one too.
            assert!(
                s.mailbox_claim(org, "post", &folder, "late@h/2", now + 200, now + 100)
                    .await
                    .unwrap()
                    .is_none()
            );
            s.mailbox_release(org, "post", &folder, "late@h/2")
                .await
                .unwrap();
            assert!(
                s.mailbox_claim(org, "post", &folder, "next@h/3", now + 60, now)
                    .await
                    .unwrap()
                    .is_none()
            );
            // The checkpoint survived all of it.
            let f = s.mailbox_folder(org, "post", &folder).await.unwrap();
            assert_eq!((f.uidvalidity, f.last_uid), (7, 42));
        }
        // Another organisation sees none of it.
        let other = s
            .create_organisation("Andet A/S", "87654321")
            .await
            .unwrap();
        assert!(s.mailbox_folders(other).await.unwrap().is_empty());
        assert_eq!(s.mailbox_folders(org).await.unwrap().len() as i64, rounds);
        s.close().await;
        drop_db(&db).await;
    }
}

#[tokio::test(flavor = "current_thread")]
async fn imap_passwords_are_sealed_and_follow_a_master_key_rotation() {
    for db in databases().await {
        let old = Kek::generate().unwrap();
        let s = Store::open(&db.url, master(&old)).await.unwrap();
        let org = s
            .create_organisation("Advokat A/S", "12345678")
            .await
            .unwrap();
        let other = s
            .create_organisation("Andet A/S", "87654321")
            .await
            .unwrap();
        let pw = b"Hemmeligt-IMAP-kodeord-7";
        let mut tx = s.begin().await.unwrap();
        tx.mailbox_secret_set(org, "post", pw).await.unwrap();
        tx.commit().await.unwrap();
        assert_eq!(
            s.mailbox_secret(org, "post").await.unwrap().as_deref(),
            Some(&pw[..])
        );
        assert_eq!(s.mailbox_secret(other, "post").await.unwrap(), None);
        // Never in clear in the database.
        if db.url.starts_with("sqlite") {
            let file = db
                .url
                .trim_start_matches("sqlite://")
                .split('?')
                .next()
                .unwrap()
                .to_string();
            for f in [file.clone(), format!("{file}-wal")] {
                let bytes = std::fs::read(&f).unwrap_or_default();
                assert!(!bytes.windows(pw.len()).any(|w| w == pw), "{f}");
            }
        }
        let new = Kek::generate().unwrap();
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
        assert_eq!(during.reseal_all(&new).await.unwrap().resealed, 1);
        during.close().await;
        s.close().await;
        let after = Store::open(&db.url, master(&new)).await.unwrap();
        assert_eq!(
            after.mailbox_secret(org, "post").await.unwrap().as_deref(),
            Some(&pw[..])
        );
        after.close().await;
        let stale = Store::open(&db.url, master(&old)).await.unwrap();
        let err = stale.mailbox_secret(org, "post").await.unwrap_err();
        assert!(err.to_string().contains("not loaded"), "{err}");
        assert!(stale.mailbox_secret_remove(org, "post").await.unwrap());
        assert!(!stale.mailbox_secret_remove(org, "post").await.unwrap());
        stale.close().await;
        drop_db(&db).await;
    }
}
