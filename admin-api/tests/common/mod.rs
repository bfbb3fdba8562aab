//! What the admin API's in-memory tests share: a fresh organisation on
//! SQLite and (when `TEST_DATABASE_URL` is set) PostgreSQL, with three
//! administrators, and requests sent with `oneshot`.

#![allow(clippy::unwrap_used, dead_code)]

use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::http::{Method, Request, StatusCode, header};
use serde_json::Value;
use service::{Actor, InitRequest, Location, Role, Service};
use tower::ServiceExt;

/// A fresh organisation on SQLite, and on PostgreSQL when configured.
pub struct Site {
    _tmp: tempfile::TempDir,
    pub loc: Location,
    pub pg: Option<String>,
}

impl Drop for Site {
    fn drop(&mut self) {
        if let (Some(n), Ok(admin)) = (&self.pg, std::env::var("TEST_DATABASE_URL")) {
            let _ = std::process::Command::new("psql")
                .arg(&admin)
                .args(["-qc", &format!("DROP DATABASE IF EXISTS {n} WITH (FORCE)")])
                .status();
        }
    }
}

pub fn sites() -> Vec<Site> {
    let tmp = tempfile::tempdir().unwrap();
    let mut v = vec![Site {
        loc: Location {
            data_dir: tmp.path().join("data"),
            database_url: None,
        },
        _tmp: tmp,
        pg: None,
    }];
    match std::env::var("TEST_DATABASE_URL") {
        Ok(admin) => {
            let mut b = [0u8; 6];
            openssl::rand::rand_bytes(&mut b).unwrap();
            let name = format!(
                "sikkermail_api_{}",
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
            v.push(Site {
                loc: Location {
                    data_dir: tmp.path().join("data"),
                    database_url: Some(format!("{base}/{name}")),
                },
                _tmp: tmp,
                pg: Some(name),
            });
        }
        Err(_) => eprintln!("!!! SKIPPING PostgreSQL: TEST_DATABASE_URL not set"),
    }
    v
}

pub async fn open(site: &Site) -> Arc<Service> {
    service::init(
        &site.loc,
        InitRequest {
            org_name: ca::DisplayName::parse("o", "Advokatfirma").unwrap(),
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
    let svc = Service::open(&site.loc, Actor::named("api")).await.unwrap();
    svc.admin_create("anne", Role::OrgAdmin, "Anne-kodeord-123")
        .await
        .unwrap();
    svc.admin_create("revisor", Role::Auditor, "Revisor-kodeord-1")
        .await
        .unwrap();
    svc.admin_create("ulla", Role::UserAdmin, "Ulla-kodeord-1234")
        .await
        .unwrap();
    Arc::new(svc)
}

/// (status, headers, body bytes).
pub async fn send(
    app: &Router,
    req: Request<Body>,
) -> (StatusCode, axum::http::HeaderMap, Vec<u8>) {
    let resp = app.clone().oneshot(req).await.unwrap();
    let status = resp.status();
    let headers = resp.headers().clone();
    let body = axum::body::to_bytes(resp.into_body(), 1 << 22)
        .await
        .unwrap()
        .to_vec();
    (status, headers, body)
}

pub fn json(b: &[u8]) -> Value {
    serde_json::from_slice(b).unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(b)))
}

pub fn get(path: &str, auth: Option<&str>) -> Request<Body> {
    let mut r = Request::builder().method(Method::GET).uri(path);
    if let Some(t) = auth {
        r = r.header(header::AUTHORIZATION, format!("Bearer {t}"));
    }
    r.body(Body::empty()).unwrap()
}

pub fn login_req(name: &str, password: &str) -> Request<Body> {
    Request::builder()
        .method(Method::POST)
        .uri("/api/v1/login")
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(
            serde_json::json!({ "name": name, "password": password }).to_string(),
        ))
        .unwrap()
}

/// Logs in; returns (token, Set-Cookie).
pub async fn login(app: &Router, name: &str, password: &str) -> (String, String) {
    let (st, h, b) = send(app, login_req(name, password)).await;
    assert_eq!(st, StatusCode::OK, "{}", String::from_utf8_lossy(&b));
    let v = json(&b);
    let token = v["token"].as_str().unwrap().to_string();
    assert!(v["expires_at"].as_i64().unwrap() > service::now());
    let cookie = h
        .get(header::SET_COOKIE)
        .unwrap()
        .to_str()
        .unwrap()
        .to_string();
    (token, cookie)
}

/// Asserts a JSON error with this status; returns its text.
pub fn error_of(st: StatusCode, want: StatusCode, b: &[u8]) -> String {
    assert_eq!(st, want, "{}", String::from_utf8_lossy(b));
    json(b)["error"].as_str().unwrap().to_string()
}
