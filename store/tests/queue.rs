//! The mail queue: always on SQLite, and on PostgreSQL too when
//! `TEST_DATABASE_URL` is set (a fresh database per test, dropped after).
//! Times are explicit `now` values: nothing sleeps.

#![allow(clippy::unwrap_used)]

mod common;

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Instant;

use common::{TestDb, databases, drop_db, master};
use sqlx::{Connection, Row};
use store::{
    Backend, Direction, Kek, MessageState, NewMessage, NewRecipient, OrgId, Outcome, RcptResult,
    RcptState, Store, StoreError,
};

/// One master key for every store of this file, as every node of an
/// installation holds the same one (queued bodies are sealed under it),
/// also in the child process of `killed_after_commit_loses_nothing`.
fn shared_kek() -> Kek {
    Kek::from_base64("BwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwc=").unwrap()
}

async fn open(db: &TestDb) -> Store {
    Store::open(&db.url, master(&shared_kek())).await.unwrap()
}

const ONE: &[NewRecipient<'static>] = &[NewRecipient {
    address: "post@domstol.dk",
    notify: None,
    orcpt: None,
}];

fn msg<'a>(org: OrgId, rcpts: &'a [NewRecipient<'a>], body: &'a [u8]) -> NewMessage<'a> {
    NewMessage {
        org,
        direction: Direction::Outbound,
        mail_from: "advokat@example.dk",
        envid: None,
        ret: None,
        client: "helo=mail.example.dk peer=10.0.0.2:41000 tls=yes",
        body,
        recipients: rcpts,
    }
}

fn delivered(idx: i64) -> RcptResult {
    RcptResult {
        idx,
        outcome: Outcome::Delivered("250 2.0.0 ok".into()),
    }
}

/// Rows in a table, straight from the database.
async fn count(db: &TestDb, table: &str) -> i64 {
    let mut c = sqlx::AnyConnection::connect(&db.url).await.unwrap();
    let n = sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT COUNT(*) AS n FROM {table}"
    )))
    .fetch_one(&mut c)
    .await
    .unwrap()
    .try_get("n")
    .unwrap();
    c.close().await.unwrap();
    n
}

#[tokio::test(flavor = "current_thread")]
async fn enqueue_claim_finish_round_trip() {
    for db in databases().await {
        let s = open(&db).await;
        let org = s.create_organisation("A", "11111111").await.unwrap();
        let rcpts = [
            NewRecipient {
                address: "one@domstol.dk",
                notify: Some("SUCCESS,FAILURE"),
                orcpt: Some("rfc822;One@domstol.dk"),
            },
            NewRecipient {
                address: "two@domstol.dk",
                notify: Some("NEVER"),
                orcpt: None,
            },
            NewRecipient {
                address: "three@domstol.dk",
                notify: None,
                orcpt: None,
            },
        ];
        // Every byte value, and no UTF-8.
        let body: Vec<u8> = (0..=255u8).cycle().take(70_000).collect();
        let m = NewMessage {
            org,
            direction: Direction::Inbound,
            mail_from: "",
            envid: Some("env-1"),
            ret: Some("HDRS"),
            client: "helo=mx.example peer=1.2.3.4:5555 tls=yes",
            body: &body,
            recipients: &rcpts,
        };
        let id = s.enqueue(&m, 100).await.unwrap();
        assert_eq!(s.queue_depth(Some(org)).await.unwrap(), (1, 0));
        assert!(
            s.claim("w1", 99, 60, 10).await.unwrap().is_empty(),
            "not due yet"
        );

        let got = s.claim("w1", 100, 60, 10).await.unwrap();
        assert_eq!(got.len(), 1);
        let c = &got[0];
        assert_eq!(
            (c.id, c.org, c.direction, c.mail_from.as_str()),
            (id, org, Direction::Inbound, "")
        );
        assert_eq!(
            (c.envid.as_deref(), c.ret.as_deref()),
            (Some("env-1"), Some("HDRS"))
        );
        assert_eq!(c.client, m.client);
        assert_eq!(c.body, body);
        assert_eq!((c.received_at, c.attempts), (100, 0));
        assert_eq!(c.recipients.len(), 3);
        assert_eq!(c.recipients[0].address, "one@domstol.dk");
        assert_eq!(c.recipients[0].notify.as_deref(), Some("SUCCESS,FAILURE"));
        assert_eq!(
            c.recipients[0].orcpt.as_deref(),
            Some("rfc822;One@domstol.dk")
        );
        assert_eq!(c.recipients[1].notify.as_deref(), Some("NEVER"));
        assert_eq!(c.recipients[2].orcpt, None);
        assert_eq!(
            c.recipients.iter().map(|r| r.idx).collect::<Vec<_>>(),
            [0, 1, 2]
        );

        let results = [
            delivered(0),
            RcptResult {
                idx: 1,
                outcome: Outcome::Deferred("451 4.7.1 greylisted".into()),
            },
            RcptResult {
                idx: 2,
                outcome: Outcome::Failed("550 5.1.1 no such user".into()),
            },
        ];
        assert!(
            s.finish_attempt(id, "w1", &results, 400, Some("1 deferred"), 110)
                .await
                .unwrap()
        );
        // The lease is gone: finishing again changes nothing.
        assert!(
            !s.finish_attempt(id, "w1", &[], 999, None, 111)
                .await
                .unwrap()
        );

        let d = s.queue_show(org, id).await.unwrap();
        assert_eq!(d.state, MessageState::Active);
        assert_eq!((d.attempts, d.next_attempt), (1, 400));
        assert_eq!(d.note.as_deref(), Some("1 deferred"));
        assert_eq!(
            (d.lease_owner, d.lease_until, d.done_at),
            (None, None, None)
        );
        assert_eq!((d.size, d.body.len()), (70_000, 70_000));
        assert_eq!(d.body, body);
        assert_eq!(
            (d.envid.as_deref(), d.ret.as_deref()),
            (Some("env-1"), Some("HDRS"))
        );
        let states: Vec<_> = d
            .recipients
            .iter()
            .map(|r| (r.state, r.attempts, r.last_error.as_deref(), r.updated_at))
            .collect();
        assert_eq!(
            states,
            [
                (RcptState::Delivered, 1, Some("250 2.0.0 ok"), 110),
                (RcptState::Queued, 1, Some("451 4.7.1 greylisted"), 110),
                (RcptState::Failed, 1, Some("550 5.1.1 no such user"), 110),
            ]
        );

        // Only the deferred recipient is tried again, when due.
        assert!(s.claim("w2", 399, 60, 10).await.unwrap().is_empty());
        let again = s.claim("w2", 400, 60, 10).await.unwrap();
        assert_eq!(again.len(), 1);
        assert_eq!(again[0].attempts, 1);
        assert_eq!(again[0].recipients.len(), 1);
        let r = &again[0].recipients[0];
        assert_eq!(
            (r.idx, r.address.as_str(), r.attempts),
            (1, "two@domstol.dk", 1)
        );
        assert_eq!(r.last_error.as_deref(), Some("451 4.7.1 greylisted"));
        // An outcome for a recipient that is no longer queued is ignored.
        let results = [
            RcptResult {
                idx: 1,
                outcome: Outcome::Quarantined("policy: unsigned".into()),
            },
            RcptResult {
                idx: 0,
                outcome: Outcome::Failed("late".into()),
            },
        ];
        assert!(
            s.finish_attempt(id, "w2", &results, 900, None, 420)
                .await
                .unwrap()
        );
        let d = s.queue_show(org, id).await.unwrap();
        assert_eq!(d.state, MessageState::Done);
        assert_eq!((d.attempts, d.done_at), (2, Some(420)));
        assert_eq!(
            d.note.as_deref(),
            Some("1 deferred"),
            "kept when none given"
        );
        assert_eq!(d.recipients[0].state, RcptState::Delivered);
        assert_eq!(d.recipients[0].last_error.as_deref(), Some("250 2.0.0 ok"));
        assert_eq!(d.recipients[1].state, RcptState::Quarantined);
        assert!(s.claim("w3", 10_000, 60, 10).await.unwrap().is_empty());

        // Done: out of the depth and the default list, until purged.
        assert_eq!(s.queue_depth(None).await.unwrap(), (0, 0));
        assert!(s.queue_list(org, false, 10).await.unwrap().is_empty());
        let all = s.queue_list(org, true, 10).await.unwrap();
        assert_eq!(all.len(), 1);
        assert_eq!(all[0].state, MessageState::Done);
        assert_eq!(
            all[0].recipients,
            [
                ("one@domstol.dk".to_string(), RcptState::Delivered),
                ("two@domstol.dk".to_string(), RcptState::Quarantined),
                ("three@domstol.dk".to_string(), RcptState::Failed),
            ]
        );
        // Quarantined mail is never purged; released, it is delivered as
        // it is (the claim says so), then it may go.
        assert_eq!(s.purge_done(421).await.unwrap(), 0);
        s.queue_release(org, id, 500).await.unwrap();
        let rel = s.claim("w4", 500, 60, 10).await.unwrap();
        assert_eq!(rel.len(), 1);
        assert!(rel[0].released);
        assert_eq!(rel[0].recipients.len(), 1);
        assert_eq!(rel[0].recipients[0].address, "two@domstol.dk");
        let results = [RcptResult {
            idx: 1,
            outcome: Outcome::Delivered("250 ok".into()),
        }];
        assert!(
            s.finish_attempt(id, "w4", &results, 900, None, 510)
                .await
                .unwrap()
        );
        assert_eq!(
            s.queue_show(org, id).await.unwrap().state,
            MessageState::Done
        );
        assert_eq!(s.purge_done(510).await.unwrap(), 0);
        assert_eq!(s.purge_done(511).await.unwrap(), 1);
        assert!(matches!(
            s.queue_show(org, id).await,
            Err(StoreError::NotFound(_))
        ));
        assert_eq!(count(&db, "queue_recipients").await, 0);

        // No recipients: refused.
        assert!(matches!(
            s.enqueue(&msg(org, &[], b"x"), 1).await,
            Err(StoreError::Conflict(_))
        ));
        s.close().await;
        drop_db(&db).await;
    }
}

#[tokio::test(flavor = "current_thread")]
async fn a_lease_keeps_others_off_until_it_expires() {
    for db in databases().await {
        let s = open(&db).await;
        let org = s.create_organisation("A", "11111111").await.unwrap();
        let id = s.enqueue(&msg(org, ONE, b"hello"), 100).await.unwrap();
        assert_eq!(s.claim("a", 100, 60, 10).await.unwrap().len(), 1);
        // Leased until 160, inclusive.
        for now in [100, 130, 160] {
            assert!(
                s.claim("b", now, 60, 10).await.unwrap().is_empty(),
                "claimed twice at {now}"
            );
        }
        assert!(s.renew_lease(id, "a", 200).await.unwrap());
        assert!(s.claim("b", 161, 60, 10).await.unwrap().is_empty());
        // a's lease expires: b takes the message over.
        let got = s.claim("b", 201, 60, 10).await.unwrap();
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].id, id);
        // a comes back late: nothing it says counts any more.
        assert!(!s.renew_lease(id, "a", 1000).await.unwrap());
        assert!(
            !s.finish_attempt(id, "a", &[delivered(0)], 5000, Some("a"), 202)
                .await
                .unwrap()
        );
        let d = s.queue_show(org, id).await.unwrap();
        assert_eq!(d.state, MessageState::Active);
        assert_eq!(d.attempts, 0);
        assert_eq!(d.note, None);
        assert_eq!(d.lease_owner.as_deref(), Some("b"));
        assert_eq!(d.lease_until, Some(261));
        assert_eq!(d.recipients[0].state, RcptState::Queued);
        assert_eq!(d.recipients[0].attempts, 0);
        // b's lease holds against c.
        assert!(s.claim("c", 261, 60, 10).await.unwrap().is_empty());
        assert!(
            s.finish_attempt(id, "b", &[delivered(0)], 5000, None, 230)
                .await
                .unwrap()
        );
        assert_eq!(
            s.queue_show(org, id).await.unwrap().state,
            MessageState::Done
        );
        // Oldest due first, and `limit` is kept.
        let later = s.enqueue(&msg(org, ONE, b"later"), 300).await.unwrap();
        let sooner = s.enqueue(&msg(org, ONE, b"sooner"), 290).await.unwrap();
        let first = s.claim("d", 400, 60, 1).await.unwrap();
        assert_eq!(first.iter().map(|m| m.id).collect::<Vec<_>>(), [sooner]);
        let rest = s.claim("d", 400, 60, 10).await.unwrap();
        assert_eq!(rest.iter().map(|m| m.id).collect::<Vec<_>>(), [later]);
        s.close().await;
        drop_db(&db).await;
    }
}

#[tokio::test(flavor = "current_thread")]
async fn hold_release_and_retry() {
    for db in databases().await {
        let s = open(&db).await;
        let org = s.create_organisation("A", "11111111").await.unwrap();
        let held = s.enqueue(&msg(org, ONE, b"1"), 100).await.unwrap();
        let free = s.enqueue(&msg(org, ONE, b"2"), 100).await.unwrap();
        s.queue_hold(org, held).await.unwrap();
        assert_eq!(s.queue_depth(Some(org)).await.unwrap(), (1, 1));
        let got = s.claim("w", 100, 60, 10).await.unwrap();
        assert_eq!(got.iter().map(|m| m.id).collect::<Vec<_>>(), [free]);
        // Held is never claimed, however late (the other one is again:
        // its lease ran out).
        let late = s.claim("w", i64::MAX / 2, 60, 10).await.unwrap();
        assert_eq!(late.iter().map(|m| m.id).collect::<Vec<_>>(), [free]);
        s.queue_release(org, held, 100).await.unwrap();
        assert_eq!(
            s.claim("w", 100, 60, 10).await.unwrap()[0].id,
            held,
            "released: due as before"
        );

        // Retry: a deferred message is due again now.
        let deferred = [RcptResult {
            idx: 0,
            outcome: Outcome::Deferred("421 busy".into()),
        }];
        assert!(
            s.finish_attempt(held, "w", &deferred, 10_000, None, 101)
                .await
                .unwrap()
        );
        assert!(s.claim("w", 500, 60, 10).await.unwrap().is_empty());
        s.queue_retry(org, held, 500).await.unwrap();
        assert_eq!(s.queue_show(org, held).await.unwrap().next_attempt, 500);
        let got = s.claim("w", 500, 60, 10).await.unwrap();
        assert_eq!(got.iter().map(|m| m.id).collect::<Vec<_>>(), [held]);

        // Leased now: retry is refused and changes nothing; hold waits for
        // the attempt, which still counts, and then keeps it off.
        let err = s.queue_retry(org, held, 510).await.unwrap_err();
        assert!(matches!(err, StoreError::Conflict(_)), "{err}");
        assert!(err.to_string().contains("being delivered"), "{err}");
        s.queue_hold(org, held).await.unwrap();
        assert!(
            s.finish_attempt(held, "w", &deferred, 520, None, 511)
                .await
                .unwrap()
        );
        let d = s.queue_show(org, held).await.unwrap();
        assert_eq!(
            (d.state, d.attempts, d.next_attempt),
            (MessageState::Held, 2, 520)
        );
        assert!(s.claim("w", 600, 60, 10).await.unwrap().is_empty());
        // Retry releases a held message.
        s.queue_retry(org, held, 600).await.unwrap();
        assert_eq!(
            s.queue_show(org, held).await.unwrap().state,
            MessageState::Active
        );
        let got = s.claim("w", 600, 60, 10).await.unwrap();
        assert_eq!(got.iter().map(|m| m.id).collect::<Vec<_>>(), [held]);
        // An expired lease does not stop a retry.
        s.queue_retry(org, held, 700).await.unwrap();

        // Done: nothing to hold, release or retry.
        assert!(
            s.finish_attempt(free, "w", &[delivered(0)], 0, None, 102)
                .await
                .unwrap()
        );
        for r in [
            s.queue_hold(org, free).await,
            s.queue_release(org, free, 100).await,
            s.queue_retry(org, free, 800).await,
        ] {
            assert!(matches!(r, Err(StoreError::Conflict(_))), "{r:?}");
        }
        assert!(matches!(
            s.queue_hold(org, 999_999).await,
            Err(StoreError::NotFound(_))
        ));
        s.close().await;
        drop_db(&db).await;
    }
}

#[tokio::test(flavor = "current_thread")]
async fn delete_removes_message_and_recipients() {
    for db in databases().await {
        let s = open(&db).await;
        let org = s.create_organisation("A", "11111111").await.unwrap();
        let two = [
            ONE[0],
            NewRecipient {
                address: "b@x.dk",
                ..ONE[0]
            },
        ];
        let keep = s.enqueue(&msg(org, ONE, b"keep"), 100).await.unwrap();
        let gone = s.enqueue(&msg(org, &two, b"gone"), 100).await.unwrap();
        assert_eq!(count(&db, "queue_recipients").await, 3);
        s.queue_delete(org, gone).await.unwrap();
        assert!(matches!(
            s.queue_show(org, gone).await,
            Err(StoreError::NotFound(_))
        ));
        assert!(matches!(
            s.queue_delete(org, gone).await,
            Err(StoreError::NotFound(_))
        ));
        assert_eq!(count(&db, "queue_recipients").await, 1);
        let got = s.claim("w", 100, 60, 10).await.unwrap();
        assert_eq!(got.iter().map(|m| m.id).collect::<Vec<_>>(), [keep]);
        // Deleted while being delivered: the worker's report finds nothing.
        s.queue_delete(org, keep).await.unwrap();
        assert!(
            !s.finish_attempt(keep, "w", &[delivered(0)], 0, None, 101)
                .await
                .unwrap()
        );
        assert_eq!(count(&db, "queue_messages").await, 0);
        assert_eq!(count(&db, "queue_recipients").await, 0);
        s.close().await;
        drop_db(&db).await;
    }
}

#[tokio::test(flavor = "current_thread")]
async fn one_organisation_never_touches_another_ones_mail() {
    for db in databases().await {
        let s = open(&db).await;
        let a = s.create_organisation("A", "11111111").await.unwrap();
        let b = s.create_organisation("B", "22222222").await.unwrap();
        let id = s.enqueue(&msg(a, ONE, b"secret"), 100).await.unwrap();
        assert!(s.queue_list(b, true, 100).await.unwrap().is_empty());
        assert!(matches!(
            s.queue_show(b, id).await,
            Err(StoreError::NotFound(_))
        ));
        for r in [
            s.queue_retry(b, id, 100).await,
            s.queue_hold(b, id).await,
            s.queue_release(b, id, 100).await,
            s.queue_delete(b, id).await,
        ] {
            assert!(matches!(r, Err(StoreError::NotFound(_))), "{r:?}");
        }
        assert_eq!(s.queue_depth(Some(b)).await.unwrap(), (0, 0));
        assert_eq!(s.queue_depth(Some(a)).await.unwrap(), (1, 0));
        assert_eq!(s.queue_depth(None).await.unwrap(), (1, 0));
        let d = s.queue_show(a, id).await.unwrap();
        assert_eq!(
            (d.state, d.body.as_slice()),
            (MessageState::Active, &b"secret"[..])
        );
        let l = s.queue_list(a, false, 100).await.unwrap();
        assert_eq!(l.len(), 1);
        assert_eq!(
            l[0].recipients,
            [("post@domstol.dk".into(), RcptState::Queued)]
        );
        assert_eq!((l[0].size, l[0].direction), (6, Direction::Outbound));
        // Claiming serves every organisation.
        let c = s.claim("w", 100, 60, 10).await.unwrap();
        assert_eq!((c.len(), c[0].org), (1, a));
        s.close().await;
        drop_db(&db).await;
    }
}

#[tokio::test(flavor = "current_thread")]
async fn a_batch_is_one_commit() {
    for db in databases().await {
        let s = open(&db).await;
        let org = s.create_organisation("A", "11111111").await.unwrap();
        let bodies: Vec<Vec<u8>> = (0..50)
            .map(|i| vec![b'a' + (i % 26) as u8; 20_000])
            .collect();
        let msgs: Vec<NewMessage> = bodies.iter().map(|b| msg(org, ONE, b)).collect();

        let t = Instant::now();
        let ids = s.enqueue_batch(&msgs, 100).await.unwrap();
        let batch = t.elapsed();
        assert_eq!(ids.len(), 50);
        assert_eq!(ids.iter().collect::<HashSet<_>>().len(), 50);
        let t = Instant::now();
        for m in &msgs {
            s.enqueue(m, 100).await.unwrap();
        }
        let single = t.elapsed();
        println!(
            "{:?}: enqueue_batch of 50 (20 kB each): {batch:?}; 50 single enqueues: {single:?} ({:.1}x)",
            s.backend(),
            single.as_secs_f64() / batch.as_secs_f64()
        );
        assert_eq!(s.queue_depth(Some(org)).await.unwrap(), (100, 0));
        let listed = s.queue_list(org, false, 1000).await.unwrap();
        assert_eq!(listed.len(), 100);
        assert_eq!(&listed[..50].iter().map(|m| m.id).collect::<Vec<_>>(), &ids);
        assert!(
            listed
                .iter()
                .all(|m| m.recipients.len() == 1 && m.size == 20_000)
        );
        assert_eq!(s.queue_list(org, false, 7).await.unwrap().len(), 7);

        // All or nothing: one bad message and none of the batch is queued.
        let mut bad = msgs.clone();
        bad[49] = msg(org, &[], b"no recipients");
        assert!(s.enqueue_batch(&bad, 100).await.is_err());
        assert_eq!(s.queue_depth(Some(org)).await.unwrap(), (100, 0));
        s.close().await;
        drop_db(&db).await;
    }
}

/// Several nodes (each its own pool) claim from one queue at once until it
/// is empty: every message is claimed exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_claimers_take_each_message_exactly_once() {
    for db in databases().await {
        let s = open(&db).await;
        let org = s.create_organisation("A", "11111111").await.unwrap();
        let nodes = match s.backend() {
            Backend::Sqlite => 4,
            Backend::Postgres => 8,
        };
        let mut stores = Vec::new();
        for _ in 0..nodes {
            stores.push(Arc::new(open(&db).await));
        }
        for round in 0..5i64 {
            let now = 1_000 + round * 100;
            let bodies: Vec<Vec<u8>> = (0..200)
                .map(|i| format!("message {i}").into_bytes())
                .collect();
            let msgs: Vec<NewMessage> = bodies.iter().map(|b| msg(org, ONE, b)).collect();
            let mut ids = s.enqueue_batch(&msgs, now).await.unwrap();
            let t = Instant::now();
            let mut tasks = Vec::new();
            for (n, node) in stores.iter().enumerate() {
                let node = node.clone();
                tasks.push(tokio::spawn(async move {
                    let owner = format!("node{n}/round{round}");
                    let mut mine = Vec::new();
                    loop {
                        let got = node.claim(&owner, now, 600, 5).await.unwrap();
                        if got.is_empty() {
                            return mine;
                        }
                        let mut tx = node.begin().await.unwrap();
                        for m in got {
                            mine.push(m.id);
                            assert!(
                                tx.finish_attempt(
                                    m.id,
                                    &owner,
                                    &[delivered(0)],
                                    now + 1,
                                    None,
                                    now
                                )
                                .await
                                .unwrap(),
                                "{owner} lost the lease on {}",
                                m.id
                            );
                        }
                        tx.commit().await.unwrap();
                    }
                }));
            }
            let mut claimed = Vec::new();
            let mut per_node = Vec::new();
            for t in tasks {
                let mine = t.await.unwrap();
                per_node.push(mine.len());
                claimed.extend(mine);
            }
            claimed.sort_unstable();
            ids.sort_unstable();
            let mut dedup = claimed.clone();
            dedup.dedup();
            assert_eq!(dedup.len(), claimed.len(), "a message was claimed twice");
            assert_eq!(claimed, ids, "a message was lost");
            assert_eq!(s.queue_depth(None).await.unwrap(), (0, 0));
            println!(
                "{:?} round {round}: 200 messages over {nodes} nodes {per_node:?} in {:?}",
                s.backend(),
                t.elapsed()
            );
        }
        for node in &stores {
            node.close().await;
        }
        s.close().await;
        drop_db(&db).await;
    }
}

#[tokio::test(flavor = "current_thread")]
async fn uncommitted_is_invisible_and_committed_survives_reopening() {
    for db in databases().await {
        let s = open(&db).await;
        let org = s.create_organisation("A", "11111111").await.unwrap();
        // A crash before the commit: the transaction is dropped, then the
        // whole store.
        let mut tx = s.begin().await.unwrap();
        tx.enqueue(&msg(org, ONE, b"lost"), 100).await.unwrap();
        drop(tx);
        drop(s);
        let s = open(&db).await;
        assert_eq!(s.queue_depth(None).await.unwrap(), (0, 0));
        assert!(s.claim("w", 100, 60, 10).await.unwrap().is_empty());
        assert_eq!(count(&db, "queue_messages").await, 0);
        // Committed: there after closing and opening again.
        let id = s.enqueue(&msg(org, ONE, b"kept"), 100).await.unwrap();
        s.close().await;
        let s = open(&db).await;
        let d = s.queue_show(org, id).await.unwrap();
        assert_eq!(
            (d.state, d.body.as_slice()),
            (MessageState::Active, &b"kept"[..])
        );
        s.close().await;
        drop_db(&db).await;
    }
}

/// The URL the child process queues into, for [`killed_after_commit_loses_nothing`].
const CHILD_URL: &str = "SIKKERMAIL_QUEUE_TEST_CHILD_URL";

/// Not a test on its own: the child of [`killed_after_commit_loses_nothing`].
/// Commits a message, says so, and dies without closing anything.
#[tokio::test(flavor = "current_thread")]
async fn child_commits_then_aborts() {
    let Ok(url) = std::env::var(CHILD_URL) else {
        return;
    };
    let s = Store::open(&url, master(&shared_kek())).await.unwrap();
    let org = s.first_organisation().await.unwrap().unwrap().id;
    let ids = s
        .enqueue_batch(
            &[msg(org, ONE, b"after 250"), msg(org, ONE, b"and this")],
            100,
        )
        .await
        .unwrap();
    println!("QUEUED {} {}", ids[0], ids[1]);
    std::process::abort();
}

/// A process killed right after its commit returned (after 250) loses
/// nothing: the next process finds the messages.
#[tokio::test(flavor = "current_thread")]
async fn killed_after_commit_loses_nothing() {
    if std::env::var(CHILD_URL).is_ok() {
        return;
    }
    for db in databases().await {
        let s = open(&db).await;
        let org = s.create_organisation("A", "11111111").await.unwrap();
        // The child is alone on the file: what it committed must come back
        // from its log (SQLite: the -wal file it leaves behind).
        s.close().await;
        let out = std::process::Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "child_commits_then_aborts",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(CHILD_URL, &db.url)
            .output()
            .unwrap();
        assert!(!out.status.success(), "the child was to abort");
        let stdout = String::from_utf8_lossy(&out.stdout);
        let line = stdout
            .lines()
            .find_map(|l| l.split_once("QUEUED ").map(|(_, ids)| ids))
            .unwrap_or_else(|| panic!("child did not queue: {stdout}"));
        let ids: Vec<i64> = line.split(' ').map(|x| x.parse().unwrap()).collect();
        let s = open(&db).await;
        for (id, body) in ids.iter().zip([&b"after 250"[..], b"and this"]) {
            assert_eq!(s.queue_show(org, *id).await.unwrap().body, body);
        }
        s.close().await;
        drop_db(&db).await;
    }
}

/// Bodies are sealed under the master key: nothing of the plaintext is in
/// the row (nor, on SQLite, in the database file or its WAL); a rotation
/// re-seals them, so a node holding only the new key claims them; a body is
/// emptied once every recipient is done.
#[tokio::test(flavor = "current_thread")]
async fn bodies_are_sealed_resealed_by_rotation_and_dropped_when_done() {
    for db in databases().await {
        let old = Kek::generate().unwrap();
        let s = Store::open(&db.url, master(&old)).await.unwrap();
        let org = s.create_organisation("A", "11111111").await.unwrap();
        // Three chunks and a bit: every chunk sealed, read back in order.
        let mut secret = b"Link: https://firma.dk/activate/SECRET-TOKEN-4711\r\n".to_vec();
        secret.extend((0..3 * 1024 * 1024 + 17).map(|i| b"SECRET-TOKEN"[i % 12]));
        let secret = &secret[..];
        let id = s.enqueue(&msg(org, ONE, secret), 100).await.unwrap();
        let mut c = sqlx::AnyConnection::connect(&db.url).await.unwrap();
        let row = sqlx::query("SELECT body, body_kek FROM queue_messages WHERE id = $1")
            .bind(id)
            .fetch_one(&mut c)
            .await
            .unwrap();
        let raw: Vec<u8> = row.try_get("body").unwrap();
        assert!(!raw.windows(12).any(|w| w == b"SECRET-TOKEN"));
        assert_eq!(
            row.try_get::<Option<String>, _>("body_kek").unwrap(),
            Some(old.id())
        );
        if let Some(file) = db.url.strip_prefix("sqlite://") {
            let file = file.split('?').next().unwrap().to_string();
            for f in [file.clone(), format!("{file}-wal")] {
                let bytes = std::fs::read(&f).unwrap_or_default();
                assert!(!bytes.windows(12).any(|w| w == b"SECRET-TOKEN"), "{f}");
            }
        }
        assert_eq!(s.queue_show(org, id).await.unwrap().body, secret);
        // Rotation: re-sealed; a node with only the new key reads it.
        let new = Kek::generate().unwrap();
        let mut tx = s.begin().await.unwrap();
        tx.reseal_all(&new).await.unwrap();
        tx.commit().await.unwrap();
        s.close().await;
        let after = Store::open(&db.url, master(&new)).await.unwrap();
        let got = after.claim("w", 200, 60, 10).await.unwrap();
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].body, secret);
        // Done: the body is dropped, the metadata kept.
        assert!(
            after
                .finish_attempt(id, "w", &[delivered(0)], 300, None, 300)
                .await
                .unwrap()
        );
        let shown = after.queue_show(org, id).await.unwrap();
        assert_eq!(shown.state, MessageState::Done);
        assert!(shown.body.is_empty());
        let raw: Vec<u8> = sqlx::query("SELECT body FROM queue_messages WHERE id = $1")
            .bind(id)
            .fetch_one(&mut c)
            .await
            .unwrap()
            .try_get("body")
            .unwrap();
        assert!(raw.is_empty());
        let chunks: i64 =
            sqlx::query("SELECT COUNT(*) AS n FROM queue_body_chunks WHERE message_id = $1")
                .bind(id)
                .fetch_one(&mut c)
                .await
                .unwrap()
                .try_get("n")
                .unwrap();
        assert_eq!(chunks, 0, "the sealed chunks are gone too");
        c.close().await.unwrap();
        after.close().await;
        drop_db(&db).await;
    }
}
