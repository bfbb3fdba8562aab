//! The admin API in memory (`tower::ServiceExt::oneshot` against the
//! router), on SQLite and (when `TEST_DATABASE_URL` is set) PostgreSQL.

#![allow(clippy::unwrap_used)]

use std::sync::Arc;

use axum::body::Body;
use axum::http::{Method, Request, StatusCode, header};
use service::admins::token_hash;

mod common;

use common::*;

#[tokio::test(flavor = "current_thread")]
async fn login_sessions_and_reads() {
    for site in sites() {
        let svc = open(&site).await;
        let app = admin_api::router(svc.clone());

        // Logging in: the token in the body and in the cookie.
        let (token, cookie) = login(&app, "anne", "Anne-kodeord-123").await;
        assert_eq!(token.len(), 43);
        assert!(cookie.starts_with(&format!("sikkermail_session={token};")));
        for attr in ["HttpOnly", "SameSite=Strict", "Path=/"] {
            assert!(cookie.split("; ").any(|a| a == attr), "{attr} in {cookie}");
        }
        assert!(!cookie.contains("Secure"), "{cookie}");
        let (_, role_body) = {
            let (st, _, b) = send(&app, login_req("revisor", "Revisor-kodeord-1")).await;
            (st, json(&b))
        };
        assert_eq!(role_body["role"], "auditor");

        // Wrong password and unknown user: the same 401 text.
        let (st, _, b) = send(&app, login_req("anne", "forkert-kodeord!")).await;
        let wrong = error_of(st, StatusCode::UNAUTHORIZED, &b);
        let (st, _, b) = send(&app, login_req("nobody", "forkert-kodeord!")).await;
        let unknown = error_of(st, StatusCode::UNAUTHORIZED, &b);
        assert_eq!(wrong, unknown);
        // Malformed bodies: JSON errors, never a 5xx.
        for (ctype, body) in [
            ("application/json", "{not json"),
            ("application/json", "{\"name\": \"anne\"}"),
            ("text/plain", "{\"name\": \"anne\", \"password\": \"x\"}"),
        ] {
            let req = Request::builder()
                .method(Method::POST)
                .uri("/api/v1/login")
                .header(header::CONTENT_TYPE, ctype)
                .body(Body::from(body))
                .unwrap();
            let (st, _, b) = send(&app, req).await;
            assert!(st.is_client_error(), "{st}");
            json(&b)["error"].as_str().unwrap();
        }
        // Larger than the limit: 413, JSON.
        let big = format!(
            "{{\"name\": \"anne\", \"password\": \"{}\"}}",
            "x".repeat(admin_api::BODY_LIMIT)
        );
        let req = Request::builder()
            .method(Method::POST)
            .uri("/api/v1/login")
            .header(header::CONTENT_TYPE, "application/json")
            .body(Body::from(big))
            .unwrap();
        let (st, _, b) = send(&app, req).await;
        error_of(st, StatusCode::PAYLOAD_TOO_LARGE, &b);

        // The bearer token and the cookie both work.
        let (st, _, b) = send(&app, get("/api/v1/me", Some(&token))).await;
        assert_eq!(st, StatusCode::OK);
        let me = json(&b);
        assert_eq!(me["name"], "anne");
        assert_eq!(me["role"], "org-admin");
        let cookie_pair = cookie.split(';').next().unwrap().to_string();
        let req = Request::builder()
            .uri("/api/v1/me")
            .header(header::COOKIE, format!("theme=dark; {cookie_pair}"))
            .body(Body::empty())
            .unwrap();
        let (st, _, b) = send(&app, req).await;
        assert_eq!(st, StatusCode::OK);
        assert_eq!(json(&b)["name"], "anne");

        // No token, garbage, another scheme, an expired session: 401 JSON.
        let (st, _, b) = send(&app, get("/api/v1/me", None)).await;
        error_of(st, StatusCode::UNAUTHORIZED, &b);
        let (st, _, b) = send(&app, get("/api/v1/me", Some("garbage"))).await;
        error_of(st, StatusCode::UNAUTHORIZED, &b);
        let req = Request::builder()
            .uri("/api/v1/me")
            .header(header::AUTHORIZATION, format!("Basic {token}"))
            .body(Body::empty())
            .unwrap();
        let (st, _, b) = send(&app, req).await;
        error_of(st, StatusCode::UNAUTHORIZED, &b);
        let ulla = svc
            .admins()
            .await
            .unwrap()
            .into_iter()
            .find(|a| a.name == "ulla")
            .unwrap();
        let stale = "S".repeat(43);
        let now = service::now();
        svc.store()
            .admin_session_create(
                svc.org().id,
                ulla.id,
                &token_hash(&stale),
                now - 13 * 3600,
                now - 3600,
            )
            .await
            .unwrap();
        let (st, _, b) = send(&app, get("/api/v1/me", Some(&stale))).await;
        error_of(st, StatusCode::UNAUTHORIZED, &b);

        // An auditor reads the queue, the audit trail and the certificates.
        let (aud, _) = login(&app, "revisor", "Revisor-kodeord-1").await;
        let (st, _, b) = send(&app, get("/api/v1/queue", Some(&aud))).await;
        assert_eq!(st, StatusCode::OK, "{}", String::from_utf8_lossy(&b));
        assert!(json(&b)["items"].as_array().unwrap().is_empty());
        let (st, _, b) = send(&app, get("/api/v1/queue?all=true&limit=5", Some(&aud))).await;
        assert_eq!(st, StatusCode::OK);
        let (st, _, b2) = send(&app, get("/api/v1/queue?limit=minus", Some(&aud))).await;
        error_of(st, StatusCode::BAD_REQUEST, &b2);
        drop(b);
        let (st, _, b) = send(&app, get("/api/v1/audit?limit=100", Some(&aud))).await;
        assert_eq!(st, StatusCode::OK);
        let audit = json(&b);
        let actions: Vec<&str> = audit["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["action"].as_str().unwrap())
            .collect();
        for want in ["admin.create", "admin.login", "admin.login_failed"] {
            assert!(actions.contains(&want), "{want} in {actions:?}");
        }
        assert!(!String::from_utf8_lossy(&b).contains("forkert-kodeord"));
        let (st, _, b) = send(&app, get("/api/v1/audit?limit=2", Some(&aud))).await;
        assert_eq!(st, StatusCode::OK);
        assert_eq!(json(&b)["items"].as_array().unwrap().len(), 2);
        let (st, _, b) = send(&app, get("/api/v1/certificates", Some(&aud))).await;
        assert_eq!(st, StatusCode::OK);
        let certs = json(&b);
        let kinds: Vec<&str> = certs["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["kind"].as_str().unwrap())
            .collect();
        assert_eq!(kinds, ["root-ca", "issuing-ca"]);
        for path in ["/api/v1/queue", "/api/v1/audit", "/api/v1/certificates"] {
            let (st, _, b) = send(&app, get(path, None)).await;
            error_of(st, StatusCode::UNAUTHORIZED, &b);
        }

        // Logging out ends the session and clears the cookie.
        let req = Request::builder()
            .method(Method::POST)
            .uri("/api/v1/logout")
            .header(header::AUTHORIZATION, format!("Bearer {token}"))
            .body(Body::empty())
            .unwrap();
        let (st, h, _) = send(&app, req).await;
        assert_eq!(st, StatusCode::NO_CONTENT);
        let cleared = h.get(header::SET_COOKIE).unwrap().to_str().unwrap();
        assert!(cleared.starts_with("sikkermail_session=;"), "{cleared}");
        assert!(cleared.contains("Max-Age=0"), "{cleared}");
        let (st, _, b) = send(&app, get("/api/v1/me", Some(&token))).await;
        error_of(st, StatusCode::UNAUTHORIZED, &b);
        // The auditor's session lives on.
        let (st, _, _) = send(&app, get("/api/v1/me", Some(&aud))).await;
        assert_eq!(st, StatusCode::OK);

        // Unknown paths and wrong methods: JSON errors.
        let (st, _, b) = send(&app, get("/api/v1/nothing", Some(&aud))).await;
        error_of(st, StatusCode::NOT_FOUND, &b);
        let (st, _, b) = send(&app, get("/api/v1/login", None)).await;
        error_of(st, StatusCode::METHOD_NOT_ALLOWED, &b);

        // Behind TLS the cookie is Secure.
        let tls = admin_api::router_with(
            svc.clone(),
            admin_api::ApiConfig {
                secure_cookie: true,
                ..Default::default()
            },
        );
        let (_, cookie) = login(&tls, "anne", "Anne-kodeord-123").await;
        assert!(cookie.split("; ").any(|a| a == "Secure"), "{cookie}");

        drop(app);
        drop(tls);
        Arc::into_inner(svc).unwrap().close().await;
    }
}

#[tokio::test(flavor = "current_thread")]
async fn openapi_lists_every_route_and_ca_pem_is_public() {
    let site = sites().remove(0);
    let svc = open(&site).await;
    // Applications open: POST /api/v1/organisations answers 404 otherwise.
    let app = admin_api::router_with(
        svc.clone(),
        admin_api::ApiConfig {
            applications: true,
            ..Default::default()
        },
    );

    let (st, h, b) = send(&app, get("/api/v1/openapi.json", None)).await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(h.get(header::CONTENT_TYPE).unwrap(), "application/json");
    let doc = json(&b);
    assert_eq!(doc["openapi"], "3.1.0");
    let mut documented: Vec<(String, String)> = Vec::new();
    for (path, ops) in doc["paths"].as_object().unwrap() {
        for method in ops.as_object().unwrap().keys() {
            documented.push((method.clone(), path.clone()));
        }
    }
    documented.sort();
    let mut routes: Vec<(String, String)> = admin_api::ROUTES
        .iter()
        .map(|(m, p)| (m.to_string(), p.to_string()))
        .collect();
    routes.sort();
    assert_eq!(documented, routes);
    // Every documented route exists in the router (not the 404 fallback,
    // not the wrong method).
    for (m, p) in admin_api::ROUTES {
        let req = Request::builder()
            .method(m.to_uppercase().as_str())
            .uri(
                p.replace("{name}", "issuing.crl")
                    .replace("{org}", &svc.org().id.0.to_string())
                    .replace("{request}", "AAAA"),
            )
            .body(Body::empty())
            .unwrap();
        let (st, _, b) = send(&app, req).await;
        assert!(
            st != StatusCode::NOT_FOUND && st != StatusCode::METHOD_NOT_ALLOWED,
            "{m} {p}: {st} {}",
            String::from_utf8_lossy(&b)
        );
    }
    // Every $ref resolves.
    let text = String::from_utf8(b.clone()).unwrap();
    for part in text.split("\"$ref\": \"#/").skip(1) {
        let ptr = format!("/{}", part.split('"').next().unwrap());
        assert!(doc.pointer(&ptr).is_some(), "unresolved {ptr}");
    }

    let (st, h, b) = send(&app, get("/ca.pem", None)).await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(
        h.get(header::CONTENT_TYPE).unwrap(),
        "application/x-pem-file"
    );
    let certs = openssl::x509::X509::stack_from_pem(&b).unwrap();
    assert_eq!(certs.len(), 2, "root and issuing CA");
    assert_eq!(
        certs[0].subject_name().to_der().unwrap(),
        certs[0].issuer_name().to_der().unwrap(),
        "the root comes first"
    );
    drop(app);
    Arc::into_inner(svc).unwrap().close().await;
}
