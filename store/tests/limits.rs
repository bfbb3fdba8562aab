//! The attempt limiter, on SQLite and on PostgreSQL when
//! `TEST_DATABASE_URL` is set: attempts are taken before the secret is
//! checked, all or none across keys, given back on success, and parallel
//! takes never grant more than the maximum.

#![allow(clippy::unwrap_used)]

use std::sync::Arc;

use store::{Kek, LimitKey, Store, Take};

mod common;

use common::{databases, drop_db, master};

fn key(scope: &str, key: &str, max: i64) -> LimitKey {
    LimitKey {
        scope: scope.into(),
        key: key.into(),
        max,
        window: 900,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn attempts_are_taken_all_or_none_and_given_back() {
    for db in databases().await {
        let s = Store::open(&db.url, master(&Kek::generate().unwrap()))
            .await
            .unwrap();
        let now = 10_000;
        let name = key("login-name", "anne", 2);
        let addr = key("login-address", "10.0.0.1", 3);
        let both = [name.clone(), addr.clone()];
        let Take::Granted(t1) = s.limit_take(&both, now).await.unwrap() else {
            panic!("first attempt refused")
        };
        assert!(matches!(
            s.limit_take(&both, now).await.unwrap(),
            Take::Granted(_)
        ));
        // The name is used up: nothing is taken from the address either.
        match s.limit_take(&both, now + 10).await.unwrap() {
            Take::Limited { scope, retry_after } => {
                assert_eq!(scope, "login-name");
                assert_eq!(retry_after, 890);
            }
            t => panic!("{t:?}"),
        }
        assert_eq!(
            s.limit_count("login-address", "10.0.0.1", now)
                .await
                .unwrap(),
            2
        );
        // A right secret gives its attempt back.
        s.limit_release(&t1).await.unwrap();
        assert_eq!(s.limit_count("login-name", "anne", now).await.unwrap(), 1);
        assert!(matches!(
            s.limit_take(&both, now).await.unwrap(),
            Take::Granted(_)
        ));
        // The address was given back one by the release: one more, then
        // it is used up (3).
        assert!(matches!(
            s.limit_take(std::slice::from_ref(&addr), now)
                .await
                .unwrap(),
            Take::Granted(_)
        ));
        assert!(matches!(
            s.limit_take(std::slice::from_ref(&addr), now)
                .await
                .unwrap(),
            Take::Limited { .. }
        ));
        // After the window a new one starts.
        assert!(matches!(
            s.limit_take(&both, now + 900).await.unwrap(),
            Take::Granted(_)
        ));
        assert_eq!(
            s.limit_count("login-name", "anne", now + 900)
                .await
                .unwrap(),
            1
        );
        // A release from the old window does not touch the new one.
        s.limit_release(&t1).await.unwrap();
        assert_eq!(
            s.limit_count("login-name", "anne", now + 900)
                .await
                .unwrap(),
            1
        );
        // Ended windows are purged.
        assert!(s.limits_purge(now + 5_000).await.unwrap() >= 2);
        assert_eq!(
            s.limit_count("login-address", "10.0.0.1", now + 900)
                .await
                .unwrap(),
            0
        );

        // Device cookies: bound to a name, until they expire.
        s.admin_device_add("h1", "anne", now, now + 100)
            .await
            .unwrap();
        assert!(s.admin_device_valid("h1", "anne", now).await.unwrap());
        assert!(!s.admin_device_valid("h1", "bo", now).await.unwrap());
        assert!(!s.admin_device_valid("h1", "anne", now + 100).await.unwrap());
        s.close().await;
        drop_db(&db).await;
    }
}

/// 50 parallel takes with a maximum of 5, through a pool of connections
/// (as nodes and requests race): exactly 5 granted.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn parallel_takes_never_exceed_the_maximum() {
    for db in databases().await {
        let s = Arc::new(
            Store::open(&db.url, master(&Kek::generate().unwrap()))
                .await
                .unwrap(),
        );
        // A second pool on the same database: another node.
        let other = Arc::new(
            Store::open(&db.url, master(&Kek::generate().unwrap()))
                .await
                .unwrap(),
        );
        let now = store::now();
        let mut tasks = Vec::new();
        for i in 0..50 {
            let s = if i % 2 == 0 { s.clone() } else { other.clone() };
            tasks.push(tokio::spawn(async move {
                let keys = [
                    key("race", "victim", 5),
                    key("race-address", &format!("a{i}"), 100),
                ];
                matches!(s.limit_take(&keys, now).await.unwrap(), Take::Granted(_))
            }));
        }
        let mut granted = 0;
        for t in tasks {
            granted += usize::from(t.await.unwrap());
        }
        assert_eq!(granted, 5, "{}", db.url);
        assert_eq!(s.limit_count("race", "victim", now).await.unwrap(), 5);
        other.close().await;
        s.close().await;
        drop_db(&db).await;
    }
}
