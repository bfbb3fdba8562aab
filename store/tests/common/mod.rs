//! Helpers shared by the store's test suites: a fresh database of each
//! available backend (SQLite always, PostgreSQL when `TEST_DATABASE_URL` is
//! set), dropped after.

#![allow(clippy::unwrap_used, dead_code)]

use sqlx::Connection;
use store::{Kek, MasterKeys};

/// A fresh database of each available backend.
pub struct TestDb {
    pub url: String,
    _dir: Option<tempfile::TempDir>,
    pg_name: Option<String>,
}

pub async fn databases() -> Vec<TestDb> {
    let dir = tempfile::tempdir().unwrap();
    let mut out = vec![TestDb {
        url: store::sqlite_url(dir.path()),
        _dir: Some(dir),
        pg_name: None,
    }];
    match std::env::var("TEST_DATABASE_URL") {
        Ok(admin) => {
            sqlx::any::install_default_drivers();
            let mut b = [0u8; 6];
            openssl::rand::rand_bytes(&mut b).unwrap();
            let name = format!(
                "sikkermail_t_{}",
                b.iter().map(|x| format!("{x:02x}")).collect::<String>()
            );
            let mut c = sqlx::AnyConnection::connect(&admin)
                .await
                .expect("TEST_DATABASE_URL must connect");
            sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
                .execute(&mut c)
                .await
                .unwrap();
            c.close().await.unwrap();
            let base = admin.rsplit_once('/').map(|(b, _)| b.to_string()).unwrap();
            out.push(TestDb {
                url: format!("{base}/{name}"),
                _dir: None,
                pg_name: Some(name),
            });
        }
        Err(_) => eprintln!("!!! TEST_DATABASE_URL not set: the store suite runs on SQLite only"),
    }
    out
}

pub async fn drop_db(db: &TestDb) {
    if let (Some(name), Ok(admin)) = (&db.pg_name, std::env::var("TEST_DATABASE_URL")) {
        let mut c = sqlx::AnyConnection::connect(&admin).await.unwrap();
        let _ = sqlx::query(sqlx::AssertSqlSafe(format!(
            "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
        )))
        .execute(&mut c)
        .await;
    }
}

pub fn master(kek: &Kek) -> MasterKeys {
    MasterKeys {
        current: kek.clone(),
        next: None,
        file: None,
        extra: Vec::new(),
    }
}
