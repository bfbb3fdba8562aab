//! Administrator accounts and sessions through the service, on SQLite and
//! (when `TEST_DATABASE_URL` is set) PostgreSQL.

#![allow(clippy::unwrap_used)]

use ca::DisplayName;
use service::admins::{LOGIN_FAILED, SESSION_SECS, token_hash};
use service::{Actor, Error, InitRequest, Location, Role, Service};

async fn locations() -> Vec<(tempfile::TempDir, Location, Option<String>)> {
    let mut v = Vec::new();
    let tmp = tempfile::tempdir().unwrap();
    let loc = Location {
        data_dir: tmp.path().join("data"),
        database_url: None,
    };
    v.push((tmp, loc, None));
    if let Ok(admin) = std::env::var("TEST_DATABASE_URL") {
        let mut b = [0u8; 6];
        openssl::rand::rand_bytes(&mut b).unwrap();
        let name = format!(
            "sikkermail_adm_{}",
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
    } else {
        eprintln!("!!! SKIPPING PostgreSQL: TEST_DATABASE_URL not set");
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

#[tokio::test(flavor = "current_thread")]
async fn create_login_session_logout() {
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
        let svc = Service::open(&loc, Actor::named("cli:test")).await.unwrap();

        // Creating: short passwords, bad names and duplicates are refused.
        assert!(matches!(
            svc.admin_create("anne", Role::OrgAdmin, "short").await,
            Err(Error::Invalid(_))
        ));
        assert!(matches!(
            svc.admin_create("an ne", Role::OrgAdmin, "long enough pw")
                .await,
            Err(Error::Invalid(_))
        ));
        let anne = svc
            .admin_create("anne", Role::OrgAdmin, "Hemmeligt-kodeord-1")
            .await
            .unwrap();
        assert_eq!(anne.role, Role::OrgAdmin);
        assert!(matches!(
            svc.admin_create("anne", Role::Auditor, "Hemmeligt-kodeord-2")
                .await,
            Err(Error::Conflict(_))
        ));
        svc.admin_create("bo", Role::Auditor, "Revisor-kodeord-3")
            .await
            .unwrap();
        let list = svc.admins().await.unwrap();
        let names: Vec<_> = list.iter().map(|a| (a.name.as_str(), a.role)).collect();
        assert_eq!(names, [("anne", Role::OrgAdmin), ("bo", Role::Auditor)]);

        // Wrong password and unknown user fail alike.
        let wrong = svc
            .admin_login("anne", "forkert-kodeord")
            .await
            .unwrap_err();
        let unknown = svc
            .admin_login("nobody", "forkert-kodeord")
            .await
            .unwrap_err();
        assert_eq!(wrong.to_string(), LOGIN_FAILED);
        assert_eq!(unknown.to_string(), LOGIN_FAILED);

        let s = svc
            .admin_login("anne", "Hemmeligt-kodeord-1")
            .await
            .unwrap();
        assert_eq!(s.token.len(), 43);
        assert_eq!(s.role, Role::OrgAdmin);
        let now = service::now();
        assert!((s.expires_at - now - SESSION_SECS).abs() <= 5);
        assert!(
            !format!("{s:?}").contains(&s.token),
            "the token is never printed"
        );
        let live = svc.admin_session(&s.token).await.unwrap().unwrap();
        assert_eq!(live.admin.name, "anne");
        assert_eq!(live.org, svc.org().id);
        // Garbage and a token of the right shape that was never issued.
        assert!(svc.admin_session("garbage").await.unwrap().is_none());
        assert!(svc.admin_session("").await.unwrap().is_none());
        let other = "A".repeat(43);
        assert!(svc.admin_session(&other).await.unwrap().is_none());
        // After its expiry it is no longer live.
        let later = svc
            .store()
            .admin_session(svc.org().id, &token_hash(&s.token), s.expires_at)
            .await
            .unwrap();
        assert!(later.is_none());

        // Logging out ends it; a second logout finds nothing.
        assert!(svc.admin_logout(&s.token).await.unwrap());
        assert!(svc.admin_session(&s.token).await.unwrap().is_none());
        assert!(!svc.admin_logout(&s.token).await.unwrap());

        // The audit trail has the events, and never a password.
        let audit = svc.audit_events(50).await.unwrap();
        let actions: Vec<_> = audit.iter().map(|a| a.action.as_str()).collect();
        for want in [
            "admin.create",
            "admin.login",
            "admin.login_failed",
            "admin.logout",
        ] {
            assert!(actions.contains(&want), "{want} in {actions:?}");
        }
        assert_eq!(
            actions
                .iter()
                .filter(|a| **a == "admin.login_failed")
                .count(),
            2
        );
        for a in &audit {
            let all = format!("{a:?}");
            assert!(!all.contains("kodeord"), "{all}");
        }
        assert!(service::admins::login_failures() >= 2);
        assert!(svc.verify_audit().await.unwrap().broken.is_none());
        svc.close().await;
        drop_db(&db);
    }
}
