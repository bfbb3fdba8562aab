//! The schema version and migrations, on SQLite and on PostgreSQL when
//! `TEST_DATABASE_URL` is set: a database newer than this build is refused
//! and left alone; a migration that fails half-way, or whose process is
//! killed half-way, leaves the database as it was and runs again later.

#![allow(clippy::unwrap_used)]

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Command, Stdio};

use sqlx::any::AnyPoolOptions;
use sqlx::migrate::{Migration, MigrationType, Migrator};
use sqlx::{AnyPool, Row, SqlSafeStr};
use store::{Backend, Kek, Store, StoreError, schema};

mod common;

use common::{databases, drop_db, master};

fn backend(url: &str) -> Backend {
    if url.starts_with("sqlite:") {
        Backend::Sqlite
    } else {
        Backend::Postgres
    }
}

fn file(url: &str) -> Option<PathBuf> {
    let rest = url.strip_prefix("sqlite://")?;
    Some(PathBuf::from(rest.split('?').next()?))
}

/// The version of a migration after this build's last.
fn next(b: Backend) -> i64 {
    schema::known(schema::migrator(b)) + 1
}

/// This build's migrations plus `extra` (version, SQL) after them.
fn with_extra(b: Backend, extra: &[(i64, &'static str)]) -> Migrator {
    let mut all: Vec<Migration> = schema::migrator(b).iter().cloned().collect();
    for (v, sql) in extra {
        all.push(Migration::new(
            *v,
            "test".into(),
            MigrationType::Simple,
            sql.into_sql_str(),
            false,
        ));
    }
    Migrator::with_migrations(all)
}

async fn pool(url: &str) -> AnyPool {
    sqlx::any::install_default_drivers();
    AnyPoolOptions::new()
        .max_connections(2)
        .connect(url)
        .await
        .unwrap()
}

/// Everything a migration could change: the tables and their columns, the
/// applied migrations, the organisations.
async fn snapshot(p: &AnyPool, b: Backend) -> Vec<String> {
    let columns = match b {
        Backend::Sqlite => {
            "SELECT m.name || '.' || c.name AS x FROM sqlite_master m, pragma_table_info(m.name) c \
             WHERE m.type = 'table' ORDER BY 1"
        }
        Backend::Postgres => {
            "SELECT table_name || '.' || column_name AS x FROM information_schema.columns \
             WHERE table_schema = current_schema() ORDER BY 1"
        }
    };
    let mut out: Vec<String> = sqlx::query(columns)
        .fetch_all(p)
        .await
        .unwrap()
        .iter()
        .map(|r| r.get::<String, _>("x"))
        .collect();
    for r in sqlx::query("SELECT version FROM _sqlx_migrations ORDER BY version")
        .fetch_all(p)
        .await
        .unwrap()
    {
        out.push(format!("migration {}", r.get::<i64, _>("version")));
    }
    for r in sqlx::query("SELECT name FROM organisations ORDER BY id")
        .fetch_all(p)
        .await
        .unwrap()
    {
        out.push(format!("org {}", r.get::<String, _>("name")));
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_newer_than_this_build_is_refused_and_left_alone() {
    for db in databases().await {
        let b = backend(&db.url);
        let s = Store::open(&db.url, master(&Kek::generate().unwrap()))
            .await
            .unwrap();
        s.create_organisation("A", "1").await.unwrap();
        assert_eq!(
            s.schema_version().await.unwrap(),
            schema::known(schema::migrator(b))
        );
        s.close().await;
        // A newer sikkermail migrated it.
        let p = pool(&db.url).await;
        schema::migrate(
            &p,
            b,
            file(&db.url).as_deref(),
            &with_extra(b, &[(9_999, "CREATE TABLE from_the_future (x BIGINT)")]),
        )
        .await
        .unwrap();
        let before = snapshot(&p, b).await;
        let err = Store::open(&db.url, master(&Kek::generate().unwrap()))
            .await
            .unwrap_err();
        let known = schema::known(schema::migrator(b));
        match &err {
            StoreError::Schema(m) => assert!(
                m.starts_with(&format!(
                    "the database is at schema 9999, this sikkermail knows up to {known}: upgrade sikkermail"
                )),
                "{m}"
            ),
            e => panic!("{e:?}"),
        }
        assert_eq!(snapshot(&p, b).await, before, "{}", db.url);
        p.close().await;
        drop_db(&db).await;
    }
}

/// Changes tables, then fails on its last statement.
const FAILS_MIDWAY: &str = "ALTER TABLE organisations ADD COLUMN doomed BIGINT;
UPDATE organisations SET doomed = 1;
CREATE TABLE doomed_table (x BIGINT);
INSERT INTO doomed_table (x) VALUES (1);
INSERT INTO organisations (id) VALUES (424242);";

const FIXED: &str = "ALTER TABLE organisations ADD COLUMN doomed BIGINT;
UPDATE organisations SET doomed = 1;";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_migration_that_fails_midway_leaves_the_database_as_it_was() {
    for db in databases().await {
        let b = backend(&db.url);
        let s = Store::open(&db.url, master(&Kek::generate().unwrap()))
            .await
            .unwrap();
        s.create_organisation("A", "1").await.unwrap();
        s.close().await;
        let p = pool(&db.url).await;
        let before = snapshot(&p, b).await;
        let err = schema::migrate(
            &p,
            b,
            file(&db.url).as_deref(),
            &with_extra(b, &[(next(b), FAILS_MIDWAY)]),
        )
        .await
        .unwrap_err();
        assert!(err.to_string().contains("migration"), "{err}");
        assert_eq!(snapshot(&p, b).await, before, "{}", db.url);
        // This build still opens it, and the mended migration runs later.
        let s = Store::open(&db.url, master(&Kek::generate().unwrap()))
            .await
            .unwrap();
        s.close().await;
        schema::migrate(
            &p,
            b,
            file(&db.url).as_deref(),
            &with_extra(b, &[(next(b), FIXED)]),
        )
        .await
        .unwrap();
        let after = snapshot(&p, b).await;
        assert!(after.contains(&"organisations.doomed".to_string()));
        assert!(after.contains(&format!("migration {}", next(b))));
        p.close().await;
        drop_db(&db).await;
    }
}

/// Changes a table, then never ends (until killed).
const HANGS_SQLITE: &str = "ALTER TABLE organisations ADD COLUMN doomed BIGINT;
UPDATE organisations SET doomed = 1;
WITH RECURSIVE c(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM c) SELECT COUNT(*) FROM c;";
const HANGS_POSTGRES: &str = "ALTER TABLE organisations ADD COLUMN doomed BIGINT;
UPDATE organisations SET doomed = 1;
SELECT pg_sleep(3600);";

const CHILD_ENV: &str = "SIKKERMAIL_TEST_MIGRATION_CHILD";

/// Not a test of its own: the process the next test starts (with
/// `CHILD_ENV` naming the database) and kills in the middle of a migration.
#[tokio::test(flavor = "current_thread")]
async fn migration_child() {
    let Ok(url) = std::env::var(CHILD_ENV) else {
        return;
    };
    let b = backend(&url);
    let hang = match b {
        Backend::Sqlite => HANGS_SQLITE,
        Backend::Postgres => HANGS_POSTGRES,
    };
    let p = pool(&url).await;
    println!("migrating");
    let r = schema::migrate(
        &p,
        b,
        file(&url).as_deref(),
        &with_extra(b, &[(next(b), hang)]),
    )
    .await;
    panic!("the migration was meant to hang: {r:?}");
}

/// True once the child's migration holds the database's write lock
/// (SQLite) or runs its last statement (PostgreSQL): it has changed a table
/// and not committed.
async fn migration_in_progress(p: &AnyPool, b: Backend) -> Option<i64> {
    match b {
        Backend::Sqlite => {
            let mut c = p.acquire().await.unwrap();
            sqlx::query("PRAGMA busy_timeout = 0")
                .execute(&mut *c)
                .await
                .unwrap();
            match sqlx::query("BEGIN IMMEDIATE").execute(&mut *c).await {
                Ok(_) => {
                    sqlx::query("ROLLBACK").execute(&mut *c).await.unwrap();
                    None
                }
                Err(e) => {
                    assert!(e.to_string().contains("locked"), "{e}");
                    Some(0)
                }
            }
        }
        Backend::Postgres => sqlx::query(
            "SELECT pid FROM pg_stat_activity WHERE datname = current_database() \
             AND pid <> pg_backend_pid() AND state = 'active' AND query LIKE '%pg_sleep(3600)%'",
        )
        .fetch_optional(p)
        .await
        .unwrap()
        .map(|r| r.get::<i32, _>("pid") as i64),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_migration_killed_midway_leaves_the_database_as_it_was() {
    for db in databases().await {
        let b = backend(&db.url);
        let s = Store::open(&db.url, master(&Kek::generate().unwrap()))
            .await
            .unwrap();
        s.create_organisation("A", "1").await.unwrap();
        s.close().await;
        let p = pool(&db.url).await;
        let before = snapshot(&p, b).await;
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "migration_child",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(CHILD_ENV, &db.url)
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        loop {
            match lines.next() {
                // The harness prints "test migration_child ... " before it.
                Some(Ok(l)) if l.ends_with("migrating") => break,
                Some(Ok(_)) => {}
                other => panic!("the child ended before migrating: {other:?}"),
            }
        }
        let backend_pid = loop {
            if let Some(pid) = migration_in_progress(&p, b).await {
                break pid;
            }
            // SQLite: a change visible outside the migration's transaction
            // (a migration without one) ends the wait too, and the check
            // below fails. (PostgreSQL's readers would wait for the
            // migration's table lock instead.)
            if b == Backend::Sqlite && snapshot(&p, b).await != before {
                break 0;
            }
            assert!(child.try_wait().unwrap().is_none(), "the child ended");
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        };
        child.kill().unwrap();
        child.wait().unwrap();
        if b == Backend::Postgres && backend_pid != 0 {
            // The server ends the dead client's session (as it does when
            // it next writes to the closed socket).
            sqlx::query("SELECT pg_terminate_backend($1::int)")
                .bind(backend_pid)
                .execute(&p)
                .await
                .unwrap();
            while sqlx::query("SELECT 1 AS x FROM pg_stat_activity WHERE pid = $1::int")
                .bind(backend_pid)
                .fetch_optional(&p)
                .await
                .unwrap()
                .is_some()
            {
                tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            }
        }
        assert_eq!(snapshot(&p, b).await, before, "{}", db.url);
        let s = Store::open(&db.url, master(&Kek::generate().unwrap()))
            .await
            .unwrap();
        s.create_organisation("B", "2").await.unwrap();
        s.close().await;
        schema::migrate(
            &p,
            b,
            file(&db.url).as_deref(),
            &with_extra(b, &[(next(b), FIXED)]),
        )
        .await
        .unwrap();
        assert!(
            snapshot(&p, b)
                .await
                .contains(&"organisations.doomed".to_string())
        );
        p.close().await;
        drop_db(&db).await;
    }
}
