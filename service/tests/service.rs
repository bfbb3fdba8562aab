//! The service in one process, as `serve` will use it: many operations at
//! once on one [`Service`] (one pool), on SQLite and (when
//! `TEST_DATABASE_URL` is set) PostgreSQL.

#![allow(clippy::unwrap_used)]

use ca::{DisplayName, EmailAddress, Kind};
use service::certs::{IssueRequest, P12Request};
use service::{Actor, Error, InitRequest, Location, Service};

async fn locations() -> Vec<(tempfile::TempDir, Location, Option<String>)> {
    let mut v = Vec::new();
    let tmp = tempfile::tempdir().unwrap();
    let loc = Location {
        data_dir: tmp.path().join("data"),
        database_url: None,
    };
    v.push((tmp, loc, None));
    match std::env::var("TEST_DATABASE_URL") {
        Ok(admin) => {
            let mut b = [0u8; 6];
            openssl::rand::rand_bytes(&mut b).unwrap();
            let name = format!(
                "sikkermail_svc_{}",
                b.iter().map(|x| format!("{x:02x}")).collect::<String>()
            );
            let ok = std::process::Command::new("psql")
                .arg(&admin)
                .args(["-qc", &format!("CREATE DATABASE {name}")])
                .status()
                .unwrap();
            assert!(ok.success());
            let base = admin.rsplit_once('/').unwrap().0.to_string();
            let tmp = tempfile::tempdir().unwrap();
            let loc = Location {
                data_dir: tmp.path().join("data"),
                database_url: Some(format!("{base}/{name}")),
            };
            v.push((tmp, loc, Some(name)));
        }
        Err(_) => {
            assert!(
                std::env::var("SIKKERMAIL_REQUIRE_PEERS").as_deref() != Ok("1"),
                "SIKKERMAIL_REQUIRE_PEERS=1 needs TEST_DATABASE_URL"
            );
            eprintln!("!!! SKIPPING PostgreSQL: TEST_DATABASE_URL not set");
        }
    }
    v
}

fn drop_db(name: &Option<String>) {
    if let (Some(n), Ok(admin)) = (name, std::env::var("TEST_DATABASE_URL")) {
        let _ = std::process::Command::new("psql")
            .arg(&admin)
            .args(["-qc", &format!("DROP DATABASE IF EXISTS {n} WITH (FORCE)")])
            .status();
    }
}

fn request(n: usize, p12: Option<P12Request>) -> IssueRequest {
    IssueRequest {
        kind: Kind::Organisation,
        name: DisplayName::parse("name", &format!("Postkasse {n}")).unwrap(),
        email: EmailAddress::parse(&format!("post{n}@advokat.dk")).unwrap(),
        p12,
    }
}

#[tokio::test(flavor = "current_thread")]
async fn many_operations_at_once_on_one_service() {
    for (_tmp, loc, db) in locations().await {
        service::init(
            &loc,
            InitRequest {
                org_name: DisplayName::parse("o", "Advokat").unwrap(),
                cvr: ca::Cvr::parse("12345678").unwrap(),
                root_name: None,
                issuing_name: None,
                policy: Default::default(),
            },
            Actor::named("test"),
            || {},
        )
        .await
        .unwrap();
        let svc = Service::open(&loc, Actor::named("admin:anne"))
            .await
            .unwrap();
        // Eight issues and a CRL at once, interleaved at every await.
        let (a, b, c, d, e, f, g, h, crl) = tokio::join!(
            svc.issue(request(0, None), |_| Ok(())),
            svc.issue(request(1, None), |_| Ok(())),
            svc.issue(request(2, None), |_| Ok(())),
            svc.issue(request(3, None), |_| Ok(())),
            svc.issue(request(4, None), |_| Ok(())),
            svc.issue(request(5, None), |_| Ok(())),
            svc.issue(request(6, None), |_| Ok(())),
            svc.issue(request(7, None), |_| Ok(())),
            svc.make_crls(),
        );
        let mut ids: Vec<i64> = [a, b, c, d, e, f, g, h]
            .into_iter()
            .map(|r| r.unwrap().id)
            .collect();
        crl.unwrap();
        ids.sort();
        ids.dedup();
        assert_eq!(ids.len(), 8);
        let kr = svc.keyring().await.unwrap();
        assert_eq!(kr.ring.len(), 8);
        assert!(kr.skipped.is_empty());
        // Audited, by the one who acted.
        let audit = svc.audit_events(100).await.unwrap();
        assert_eq!(
            audit
                .iter()
                .filter(|e| e.action == "cert.issue" && e.actor == "admin:anne")
                .count(),
            8
        );
        // A hand-over that fails rolls the whole issue back.
        let before = svc
            .store()
            .list_certificates(svc.org().id)
            .await
            .unwrap()
            .len();
        let r = svc
            .issue(
                request(
                    9,
                    Some(P12Request {
                        password: "pw".into(),
                        flavour: ca::pkcs12::Flavour::Modern,
                    }),
                ),
                |_| Err("disk full".into()),
            )
            .await;
        assert!(
            matches!(r, Err(Error::Output(ref m)) if m == "disk full"),
            "{r:?}"
        );
        assert_eq!(
            svc.store()
                .list_certificates(svc.org().id)
                .await
                .unwrap()
                .len(),
            before
        );
        assert_eq!(svc.audit_events(100).await.unwrap().len(), audit.len());
        assert_eq!(svc.store().list_keys(svc.org().id).await.unwrap().len(), 10);
        svc.close().await;
        drop_db(&db);
    }
}
