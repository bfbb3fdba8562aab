//! The admin API's flows in memory (`tower::ServiceExt::oneshot`), on
//! SQLite and (when `TEST_DATABASE_URL` is set) PostgreSQL: organisation
//! approval, import, activation with links and codes, brugercertifikater
//! ordered, collected and revoked; the authorisation matrix (every role, a
//! pending organisation, a logged-out client, and organisation B against
//! organisation A's objects); secrets never stored or returned in clear.

#![allow(clippy::unwrap_used)]

use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::http::{Method, Request, StatusCode, header};
use serde_json::{Value, json};
use service::{Actor, InitRequest, Role, Service};

mod common;

use common::*;

fn req(method: &str, path: &str, auth: Option<&str>, body: Option<Value>) -> Request<Body> {
    let mut r = Request::builder()
        .method(Method::from_bytes(method.to_uppercase().as_bytes()).unwrap())
        .uri(path);
    if let Some(t) = auth {
        r = r.header(header::AUTHORIZATION, format!("Bearer {t}"));
    }
    match body {
        Some(b) => r
            .header(header::CONTENT_TYPE, "application/json")
            .body(Body::from(b.to_string()))
            .unwrap(),
        None => r.body(Body::empty()).unwrap(),
    }
}

async fn call(
    app: &Router,
    method: &str,
    path: &str,
    auth: Option<&str>,
    body: Option<Value>,
) -> (StatusCode, Value) {
    let (st, _, b) = send(app, req(method, path, auth, body)).await;
    let v = if b.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(&b)
            .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&b).into_owned()))
    };
    (st, v)
}

/// `call`, asserting the status.
async fn ok(
    app: &Router,
    want: StatusCode,
    method: &str,
    path: &str,
    auth: Option<&str>,
    body: Option<Value>,
) -> Value {
    let (st, v) = call(app, method, path, auth, body).await;
    assert_eq!(st, want, "{method} {path}: {v}");
    v
}

/// The API with applications for new organisations open (they are off by
/// default).
fn open_app(svc: &Arc<Service>) -> Router {
    admin_api::router_with(
        svc.clone(),
        admin_api::ApiConfig {
            applications: true,
            ..Default::default()
        },
    )
}

/// The operator accepts the application `v` (the answer to its POST): the
/// approval link's token (the mail it queues is not looked at here).
async fn accept(svc: &Service, v: &Value) -> String {
    let org = service::OrgId(v["org"].as_i64().unwrap());
    svc.accept_application(org, "sikkermail@advokat.test", |_, _| {
        Ok(b"Subject: x\r\n\r\nx\r\n".to_vec())
    })
    .await
    .unwrap()
    .token
}

fn token_of_link(v: &Value) -> String {
    let link = v["link"]
        .as_str()
        .unwrap_or_else(|| panic!("no link in {v}"));
    link.rsplit('/').next().unwrap().to_string()
}

/// Everything SQLite holds, as text (the database and its WAL), to look
/// for secrets in clear.
fn sqlite_bytes(site: &Site) -> Option<String> {
    if site.pg.is_some() {
        return None;
    }
    let mut all = Vec::new();
    for f in ["sikkermail.db", "sikkermail.db-wal"] {
        if let Ok(b) = std::fs::read(site.loc.data_dir.join(f)) {
            all.extend(b);
        }
    }
    Some(String::from_utf8_lossy(&all).into_owned())
}

const CSV: &str = "Navn;E-mail;RID;CPR;Fødselsdato;Rettigheder\n\
Mette Madsen;mette@advokat.test;11111111;010170-1234;;Sygemelding\n\
Jens Hansen;jens@advokat.test;22222222;;01-05-1970;\n\
Uden Dato;uden@advokat.test;;;;\n\
Forkert;ikke-en-adresse;;;;\n\
Dårlig CPR;cpr@advokat.test;;123;;\n\
Mette Igen;METTE@advokat.test;;;1970-01-01;\n";

#[tokio::test(flavor = "current_thread")]
async fn approval_import_activation_and_certificates() {
    for site in sites() {
        let svc = open(&site).await;
        let app = open_app(&svc);
        let (anne, _) = login(&app, "anne", "Anne-kodeord-123").await;
        let (ulla, _) = login(&app, "ulla", "Ulla-kodeord-1234").await;
        let (revisor, _) = login(&app, "revisor", "Revisor-kodeord-1").await;

        // A second organisation applies; until the operator accepts and its
        // representative approves it can do nothing.
        let applied = ok(
            &app,
            StatusCode::CREATED,
            "post",
            "/api/v1/organisations",
            None,
            Some(json!({
                "name": "Revisorhuset", "cvr": "87654321",
                "representative_name": "Rikke Rep", "representative_email": "rikke@revisor.test",
                "admin_name": "bo", "admin_password": "Bo-kodeord-12345",
            })),
        )
        .await;
        assert_eq!(applied["status"], "applied");
        assert!(applied.get("link").is_none(), "{applied}");
        // The same CVR again (and the installation's own): 409.
        for cvr in ["87654321", svc.org().cvr.as_str()] {
            ok(
                &app,
                StatusCode::CONFLICT,
                "post",
                "/api/v1/organisations",
                None,
                Some(json!({
                    "name": "Kopi", "cvr": cvr,
                    "representative_name": "X", "representative_email": "x@kopi.test",
                    "admin_name": "kopi", "admin_password": "Kopi-kodeord-12345",
                })),
            )
            .await;
        }
        let approval = accept(&svc, &applied).await;
        let (bo, _) = login(&app, "bo", "Bo-kodeord-12345").await;
        let me = ok(&app, StatusCode::OK, "get", "/api/v1/me", Some(&bo), None).await;
        assert_eq!(me["organisation"]["status"], "pending");
        let (st, v) = call(&app, "get", "/api/v1/users", Some(&bo), None).await;
        assert_eq!(st, StatusCode::FORBIDDEN, "{v}");
        assert!(v["error"].as_str().unwrap().contains("approval"));
        // A wrong approval token changes nothing; the right one approves once.
        ok(
            &app,
            StatusCode::NOT_FOUND,
            "post",
            "/api/v1/organisations/approve",
            None,
            Some(json!({"token": "forkert"})),
        )
        .await;
        let approved = ok(
            &app,
            StatusCode::OK,
            "post",
            "/api/v1/organisations/approve",
            None,
            Some(json!({"token": approval})),
        )
        .await;
        assert_eq!(approved["status"], "active");
        ok(
            &app,
            StatusCode::NOT_FOUND,
            "post",
            "/api/v1/organisations/approve",
            None,
            Some(json!({"token": approval})),
        )
        .await;
        ok(
            &app,
            StatusCode::OK,
            "get",
            "/api/v1/users",
            Some(&bo),
            None,
        )
        .await;
        // Its own CA: a CRL under its id.
        let org_b = approved["org"].as_i64().unwrap();
        let (st, _, crl) = send(&app, get(&format!("/crl/{org_b}.crl"), None)).await;
        assert_eq!(st, StatusCode::OK);
        openssl::x509::X509Crl::from_der(&crl).unwrap();

        // The template, and the import: good rows import, bad rows are
        // reported one by one.
        let (st, h, t) = send(&app, get("/api/v1/users/import/template", Some(&revisor))).await;
        assert_eq!(st, StatusCode::OK);
        assert!(
            h.get(header::CONTENT_TYPE)
                .unwrap()
                .to_str()
                .unwrap()
                .starts_with("text/csv")
        );
        assert!(
            String::from_utf8(t)
                .unwrap()
                .starts_with("Navn;E-mail;RID;CPR;Fødselsdato")
        );
        let import = |who: &str, body: &str| {
            Request::builder()
                .method(Method::POST)
                .uri("/api/v1/users/import")
                .header(header::AUTHORIZATION, format!("Bearer {who}"))
                .header(header::CONTENT_TYPE, "text/csv")
                .body(Body::from(body.to_string()))
                .unwrap()
        };
        let (st, _, _) = send(&app, import(&revisor, CSV)).await;
        assert_eq!(st, StatusCode::FORBIDDEN, "the auditor reads only");
        let (st, _, b) = send(&app, import(&ulla, CSV)).await;
        assert_eq!(st, StatusCode::OK, "{}", String::from_utf8_lossy(&b));
        let rep = json(&b);
        let imported = rep["imported"].as_array().unwrap();
        assert_eq!(imported.len(), 3, "{rep}");
        let lines: Vec<i64> = rep["errors"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["line"].as_i64().unwrap())
            .collect();
        assert_eq!(lines, vec![5, 6, 7], "{rep}");
        let by_email = |e: &str| imported.iter().find(|u| u["email"] == e).unwrap().clone();
        let (mette, jens, uden) = (
            by_email("mette@advokat.test"),
            by_email("jens@advokat.test"),
            by_email("uden@advokat.test"),
        );
        assert_eq!(mette["status"], "ready");
        assert_eq!(mette["status_label"], "Klar til aktivering");
        assert_eq!(mette["has_cpr"], true);
        assert_eq!(mette["rights"], json!(["Sygemelding"]));
        assert_eq!(jens["birth_date"], "1970-05-01");
        assert_eq!(uden["status_label"], "Mangler fødselsdato");
        // The CPR number is never returned nor stored in clear.
        let all = ok(
            &app,
            StatusCode::OK,
            "get",
            "/api/v1/users",
            Some(&revisor),
            None,
        )
        .await;
        assert!(
            !all.to_string().contains("0101701234") && !all.to_string().contains("010170-1234")
        );
        if let Some(db) = sqlite_bytes(&site) {
            assert!(
                !db.contains("0101701234") && !db.contains("010170-1234"),
                "CPR in clear in the database"
            );
        }
        let ready = ok(
            &app,
            StatusCode::OK,
            "get",
            "/api/v1/users?status=ready",
            Some(&revisor),
            None,
        )
        .await;
        assert_eq!(ready["items"].as_array().unwrap().len(), 2);
        ok(
            &app,
            StatusCode::BAD_REQUEST,
            "get",
            "/api/v1/users?status=nonsense",
            Some(&revisor),
            None,
        )
        .await;
        // Adding a birth date makes the user ready.
        let uid = uden["id"].as_i64().unwrap();
        let u = ok(
            &app,
            StatusCode::OK,
            "patch",
            &format!("/api/v1/users/{uid}"),
            Some(&ulla),
            Some(json!({"birth_date": "1980-02-29"})),
        )
        .await;
        assert_eq!(u["status"], "ready");
        ok(
            &app,
            StatusCode::BAD_REQUEST,
            "patch",
            &format!("/api/v1/users/{uid}"),
            Some(&ulla),
            Some(json!({"birth_date": "1981-02-29"})),
        )
        .await;

        // Bulk activation: a receipt, a link per user; every user needs a
        // code (the CPR user too: nothing proves the CPR number yet).
        let (mid, jid) = (mette["id"].as_i64().unwrap(), jens["id"].as_i64().unwrap());
        ok(
            &app,
            StatusCode::BAD_REQUEST,
            "post",
            "/api/v1/users/activate",
            Some(&ulla),
            Some(json!({"users": [mid], "ident_means": "private-mitid"})),
        )
        .await;
        let r = ok(
            &app,
            StatusCode::OK,
            "post",
            "/api/v1/users/activate",
            Some(&ulla),
            Some(json!({"users": [mid, jid], "ident_means": "mitid-app"})),
        )
        .await;
        let receipt = &r["receipt"];
        assert_eq!(receipt["count"], 2);
        let users = receipt["users"].as_array().unwrap();
        let link_of = |id: i64| token_of_link(users.iter().find(|u| u["id"] == id).unwrap());
        let (mette_link, jens_link) = (link_of(mid), link_of(jid));
        assert_eq!(
            users.iter().find(|u| u["id"] == jid).unwrap()["needs_code"],
            true
        );
        assert_eq!(
            users.iter().find(|u| u["id"] == mid).unwrap()["needs_code"],
            true
        );
        // Resending replaces the link: the first one is dead.
        let again = ok(
            &app,
            StatusCode::OK,
            "post",
            &format!("/api/v1/users/{mid}/resend-activation"),
            Some(&ulla),
            None,
        )
        .await;
        let mette_link2 = token_of_link(&again);
        // The link alone does not activate a user known by CPR: the code
        // is needed, and none matches before an administrator makes one.
        let (st, v) = call(
            &app,
            "post",
            "/api/v1/activation",
            None,
            Some(json!({"token": mette_link2, "password": "Mettes-kode-1", "accept_terms": true})),
        )
        .await;
        assert_eq!(st, StatusCode::BAD_REQUEST, "{v}");
        assert!(
            v["error"].as_str().unwrap().contains("activation code"),
            "{v}"
        );
        let mcode = ok(
            &app,
            StatusCode::OK,
            "post",
            &format!("/api/v1/users/{mid}/activation-code"),
            Some(&ulla),
            None,
        )
        .await["code"]
            .as_str()
            .unwrap()
            .to_string();
        ok(
            &app,
            StatusCode::NOT_FOUND,
            "post",
            "/api/v1/activation",
            None,
            Some(json!({"token": mette_link, "password": "Mettes-kode-1", "accept_terms": true})),
        )
        .await;
        // Terms must be accepted; the password long enough.
        ok(
            &app,
            StatusCode::BAD_REQUEST,
            "post",
            "/api/v1/activation",
            None,
            Some(json!({"token": mette_link2, "password": "Mettes-kode-1", "accept_terms": false})),
        )
        .await;
        ok(
            &app,
            StatusCode::BAD_REQUEST,
            "post",
            "/api/v1/activation",
            None,
            Some(json!({"token": mette_link2, "code": mcode, "password": "kort", "accept_terms": true})),
        )
        .await;
        // From a client address, as a socket would give it: the audit trail
        // records it.
        let mut r = req(
            "post",
            "/api/v1/activation",
            None,
            Some(
                json!({"token": mette_link2, "code": mcode, "password": "Mettes-kode-1", "accept_terms": true}),
            ),
        );
        r.extensions_mut()
            .insert(axum::extract::ConnectInfo(std::net::SocketAddr::from((
                [192, 0, 2, 7],
                40000,
            ))));
        let (st, _, b) = send(&app, r).await;
        assert_eq!(st, StatusCode::OK, "{}", String::from_utf8_lossy(&b));
        assert_eq!(json(&b)["status"], "active");
        ok(
            &app,
            StatusCode::NOT_FOUND,
            "post",
            "/api/v1/activation",
            None,
            Some(json!({"token": mette_link2, "password": "Mettes-kode-1", "accept_terms": true})),
        )
        .await;

        // The code: revealed by an administrator, 8 digits; five wrong
        // codes lock the link until a new code is made.
        let code = ok(
            &app,
            StatusCode::OK,
            "post",
            &format!("/api/v1/users/{jid}/activation-code"),
            Some(&ulla),
            None,
        )
        .await["code"]
            .as_str()
            .unwrap()
            .to_string();
        assert!(
            code.len() == 8 && code.bytes().all(|b| b.is_ascii_digit()),
            "{code}"
        );
        if let Some(db) = sqlite_bytes(&site) {
            assert!(
                !db.contains(&code),
                "the activation code in clear in the database"
            );
        }
        let wrong = if code == "00000000" {
            "11111111"
        } else {
            "00000000"
        };
        for i in 0..5 {
            let (st, v) = call(&app, "post", "/api/v1/activation", None, Some(json!({"token": jens_link, "code": wrong, "password": "Jens-kode-123", "accept_terms": true}))).await;
            assert_eq!(st, StatusCode::BAD_REQUEST, "attempt {i}: {v}");
        }
        let (_, v) = call(&app, "post", "/api/v1/activation", None, Some(json!({"token": jens_link, "code": code, "password": "Jens-kode-123", "accept_terms": true}))).await;
        assert!(v["error"].as_str().unwrap().contains("locked"), "{v}");
        let u = ok(
            &app,
            StatusCode::OK,
            "get",
            &format!("/api/v1/users/{jid}"),
            Some(&revisor),
            None,
        )
        .await;
        assert_eq!(u["locked"], true);
        let code2 = ok(
            &app,
            StatusCode::OK,
            "post",
            &format!("/api/v1/users/{jid}/activation-code"),
            Some(&anne),
            None,
        )
        .await["code"]
            .as_str()
            .unwrap()
            .to_string();
        let (st, v) = call(&app, "post", "/api/v1/activation", None, Some(json!({"token": jens_link, "code": code2, "password": "Jens-kode-123", "accept_terms": true}))).await;
        assert_eq!(st, StatusCode::OK, "{v}");

        // Brugercertifikater: refused until the organisation allows them
        // (only an organisation administrator may change settings).
        ok(
            &app,
            StatusCode::BAD_REQUEST,
            "post",
            &format!("/api/v1/users/{mid}/certificates"),
            Some(&ulla),
            None,
        )
        .await;
        let settings = json!({"allow_user_certificates": true, "allow_private_mitid": false, "allow_access_requests": true, "shared_mailboxes": ["post@advokat.test"]});
        ok(
            &app,
            StatusCode::FORBIDDEN,
            "put",
            "/api/v1/settings",
            Some(&ulla),
            Some(settings.clone()),
        )
        .await;
        let s = ok(
            &app,
            StatusCode::OK,
            "put",
            "/api/v1/settings",
            Some(&anne),
            Some(settings),
        )
        .await;
        assert_eq!(s["allow_user_certificates"], true);
        ok(
            &app,
            StatusCode::BAD_REQUEST,
            "post",
            &format!("/api/v1/users/{uid}/certificates"),
            Some(&ulla),
            None,
        )
        .await;
        let order = ok(
            &app,
            StatusCode::CREATED,
            "post",
            &format!("/api/v1/users/{mid}/certificates"),
            Some(&ulla),
            None,
        )
        .await;
        let cert_link = token_of_link(&order);
        // Wrong password: refused, the link lives on.
        ok(
            &app,
            StatusCode::BAD_REQUEST,
            "post",
            "/api/v1/certificate-download",
            None,
            Some(json!({"token": cert_link, "password": "forkert-kode", "accept_terms": true})),
        )
        .await;
        let c = ok(&app, StatusCode::OK, "post", "/api/v1/certificate-download", None, Some(json!({"token": cert_link, "password": "Mettes-kode-1", "accept_terms": true, "compatible": true}))).await;
        ok(
            &app,
            StatusCode::NOT_FOUND,
            "post",
            "/api/v1/certificate-download",
            None,
            Some(json!({"token": cert_link, "password": "Mettes-kode-1", "accept_terms": true})),
        )
        .await;
        use base64::Engine;
        let der = base64::engine::general_purpose::STANDARD
            .decode(c["p12"].as_str().unwrap())
            .unwrap();
        let pw = c["password"].as_str().unwrap();
        assert!(pw.len() >= 20, "{pw}");
        let p12 = openssl::pkcs12::Pkcs12::from_der(&der)
            .unwrap()
            .parse2(pw)
            .unwrap();
        let cert = p12.cert.unwrap();
        assert_eq!(
            smime::keyring::cert_emails(&cert),
            vec!["mette@advokat.test".to_string()]
        );
        assert!(p12.pkey.unwrap().public_eq(&cert.public_key().unwrap()));
        assert!(
            openssl::pkcs12::Pkcs12::from_der(&der)
                .unwrap()
                .parse2("forkert")
                .is_err()
        );
        // The gateway knows it at once: it can sign for and decrypt to Mette.
        let keys = svc.mail_keys().await.unwrap();
        assert!(
            keys.signer_for("mette@advokat.test", service::now())
                .is_some()
        );
        let cid = c["certificate"].as_i64().unwrap();
        let certs = ok(
            &app,
            StatusCode::OK,
            "get",
            "/api/v1/certificates",
            Some(&revisor),
            None,
        )
        .await;
        let row = certs["items"]
            .as_array()
            .unwrap()
            .iter()
            .find(|x| x["id"] == cid)
            .unwrap()
            .clone();
        assert_eq!(row["user"], mid);
        assert_eq!(row["kind"], "user");

        // Revoking regenerates the CRL, which names the serial.
        ok(
            &app,
            StatusCode::FORBIDDEN,
            "post",
            &format!("/api/v1/certificates/{cid}/revoke"),
            Some(&revisor),
            Some(json!({})),
        )
        .await;
        ok(
            &app,
            StatusCode::OK,
            "post",
            &format!("/api/v1/certificates/{cid}/revoke"),
            Some(&ulla),
            Some(json!({"reason": "affiliationChanged"})),
        )
        .await;
        let org_a = svc.org().id.0;
        let (_, _, crl) = send(&app, get(&format!("/crl/{org_a}.crl"), None)).await;
        let crl = openssl::x509::X509Crl::from_der(&crl).unwrap();
        let serial = cert.serial_number().to_bn().unwrap();
        assert!(
            crl.get_revoked()
                .unwrap()
                .iter()
                .any(|r| r.serial_number().to_bn().unwrap() == serial)
        );

        // Blocking ends a user's links; unblocking restores the status.
        let b = ok(
            &app,
            StatusCode::OK,
            "post",
            &format!("/api/v1/users/{mid}/block"),
            Some(&ulla),
            None,
        )
        .await;
        assert_eq!(b["status"], "blocked");
        ok(
            &app,
            StatusCode::BAD_REQUEST,
            "post",
            &format!("/api/v1/users/{mid}/certificates"),
            Some(&ulla),
            None,
        )
        .await;
        let b = ok(
            &app,
            StatusCode::OK,
            "post",
            &format!("/api/v1/users/{mid}/unblock"),
            Some(&ulla),
            None,
        )
        .await;
        assert_eq!(b["status"], "active");

        // Access requests (allowed now): public, approved by an administrator.
        let rq = ok(
            &app,
            StatusCode::CREATED,
            "post",
            "/api/v1/access-requests",
            None,
            Some(json!({"org": org_a, "name": "Ny Medarbejder", "email": "ny@advokat.test"})),
        )
        .await;
        assert_eq!(rq["status"], "requested");
        // Organisation B does not allow them: 404, as if it did not exist.
        ok(
            &app,
            StatusCode::NOT_FOUND,
            "post",
            "/api/v1/access-requests",
            None,
            Some(json!({"org": org_b, "name": "X", "email": "x@revisor.test"})),
        )
        .await;
        let rid = rq["id"].as_i64().unwrap();
        let a = ok(
            &app,
            StatusCode::OK,
            "post",
            &format!("/api/v1/users/{rid}/approve"),
            Some(&ulla),
            None,
        )
        .await;
        assert_eq!(a["status"], "missing-birth-date");

        // Every step is in the audit trail, which still verifies; no CPR
        // number, code or password in it.
        let audit = ok(
            &app,
            StatusCode::OK,
            "get",
            "/api/v1/audit?limit=500",
            Some(&revisor),
            None,
        )
        .await;
        let actions: Vec<&str> = audit["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| a["action"].as_str().unwrap())
            .collect();
        for want in [
            "users.import",
            "user.update",
            "user.activate",
            "user.resend_activation",
            "user.activation_code",
            "user.wrong_secret",
            "user.activated",
            "settings.update",
            "cert.order",
            "cert.issue",
            "cert.download",
            "cert.revoke",
            "user.block",
            "user.unblock",
            "user.request",
            "user.request_approve",
        ] {
            assert!(actions.contains(&want), "{want} missing from {actions:?}");
        }
        let text = audit.to_string();
        for secret in [
            "0101701234",
            "010170-1234",
            code.as_str(),
            code2.as_str(),
            "Mettes-kode-1",
            pw,
        ] {
            assert!(!text.contains(secret), "{secret} in the audit trail");
        }
        assert!(text.contains("admin:ulla"), "who acted");
        assert!(
            text.contains(&format!("employee:{mid} from 192.0.2.7")),
            "the employee's address"
        );
        let check = svc.verify_audit().await.unwrap();
        assert!(check.broken.is_none(), "{check:?}");

        drop(app);
        Arc::into_inner(svc).unwrap().close().await;
    }
}

/// What a route needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Need {
    /// Nobody logged in needed.
    Public,
    /// Any logged-in administrator, also of a pending organisation.
    Session,
    /// Any administrator of an approved organisation.
    Read,
    /// A user administrator or an organisation administrator.
    Users,
    /// An organisation administrator.
    Org,
}

/// Every route and what it needs; the test fails when a route is missing.
const MATRIX: &[(&str, &str, Need)] = &[
    ("post", "/api/v1/login", Need::Public),
    ("post", "/api/v1/logout", Need::Session),
    ("get", "/api/v1/me", Need::Session),
    ("post", "/api/v1/bootstrap", Need::Public),
    ("post", "/api/v1/organisations", Need::Public),
    ("post", "/api/v1/organisations/approve", Need::Public),
    ("get", "/api/v1/settings", Need::Read),
    ("put", "/api/v1/settings", Need::Org),
    ("get", "/api/v1/admins", Need::Org),
    ("post", "/api/v1/admins", Need::Org),
    ("get", "/api/v1/users", Need::Read),
    ("get", "/api/v1/users/import/template", Need::Read),
    ("post", "/api/v1/users/import", Need::Users),
    ("post", "/api/v1/users/activate", Need::Users),
    ("get", "/api/v1/users/{id}", Need::Read),
    ("patch", "/api/v1/users/{id}", Need::Users),
    ("post", "/api/v1/users/{id}/activation-code", Need::Users),
    ("post", "/api/v1/users/{id}/resend-activation", Need::Users),
    ("post", "/api/v1/users/{id}/block", Need::Users),
    ("post", "/api/v1/users/{id}/unblock", Need::Users),
    ("post", "/api/v1/users/{id}/approve", Need::Users),
    ("post", "/api/v1/users/{id}/reject", Need::Users),
    ("post", "/api/v1/users/{id}/certificates", Need::Users),
    ("post", "/api/v1/access-requests", Need::Public),
    ("post", "/api/v1/activation", Need::Public),
    ("post", "/api/v1/certificate-download", Need::Public),
    ("get", "/api/v1/queue", Need::Read),
    ("get", "/api/v1/audit", Need::Read),
    ("get", "/api/v1/certificates", Need::Read),
    ("post", "/api/v1/certificates/{id}/revoke", Need::Users),
    ("post", "/api/v1/certificates/{id}/renew", Need::Users),
    ("post", "/api/v1/organisation-certificates", Need::Org),
    (
        "post",
        "/api/v1/organisation-certificates/import",
        Need::Org,
    ),
    ("get", "/api/v1/recipients", Need::Read),
    ("post", "/api/v1/recipients/import", Need::Org),
    ("post", "/api/v1/recipients/{id}/pin", Need::Org),
    ("post", "/api/v1/recipients/{id}/unpin", Need::Org),
    ("delete", "/api/v1/recipients/{id}", Need::Org),
    ("get", "/api/v1/openapi.json", Need::Public),
    ("get", "/ca.pem", Need::Public),
    ("get", "/crl/{name}", Need::Public),
    ("post", "/ocsp/{org}", Need::Public),
    ("get", "/ocsp/{org}/{request}", Need::Public),
];

#[tokio::test(flavor = "current_thread")]
async fn authorisation_matrix_and_organisation_isolation() {
    let mut listed: Vec<(String, String)> = MATRIX
        .iter()
        .map(|(m, p, _)| (m.to_string(), p.to_string()))
        .collect();
    let mut routes: Vec<(String, String)> = admin_api::ROUTES
        .iter()
        .map(|(m, p)| (m.to_string(), p.to_string()))
        .collect();
    listed.sort();
    routes.sort();
    assert_eq!(listed, routes, "every route has its line in the matrix");

    for site in sites() {
        let svc = open(&site).await;
        let app = open_app(&svc);
        // Organisation A's objects: a user, a certificate, a recipient.
        let (anne, _) = login(&app, "anne", "Anne-kodeord-123").await;
        let (st, _, b) = send(
            &app,
            Request::builder()
                .method(Method::POST)
                .uri("/api/v1/users/import")
                .header(header::AUTHORIZATION, format!("Bearer {anne}"))
                .header(header::CONTENT_TYPE, "text/csv")
                .body(Body::from("Navn;E-mail\nA Bruger;a@advokat.test\n"))
                .unwrap(),
        )
        .await;
        assert_eq!(st, StatusCode::OK);
        let a_user = json(&b)["imported"][0]["id"].as_i64().unwrap();
        let oc = ok(
            &app,
            StatusCode::CREATED,
            "post",
            "/api/v1/organisation-certificates",
            Some(&anne),
            Some(json!({"name": "Post", "email": "post@advokat.test"})),
        )
        .await;
        let a_cert = oc["id"].as_i64().unwrap();
        let pem = String::from_utf8(
            svc.certificates()
                .await
                .unwrap()
                .into_iter()
                .find(|c| c.id == a_cert)
                .unwrap()
                .pem
                .into_bytes(),
        )
        .unwrap();
        let (st, _, b) = send(
            &app,
            Request::builder()
                .method(Method::POST)
                .uri("/api/v1/recipients/import")
                .header(header::AUTHORIZATION, format!("Bearer {anne}"))
                .header(header::CONTENT_TYPE, "application/x-pem-file")
                .body(Body::from(pem))
                .unwrap(),
        )
        .await;
        assert_eq!(st, StatusCode::CREATED, "{}", String::from_utf8_lossy(&b));
        let a_recipient = json(&b)["items"][0]["id"].as_i64().unwrap();

        // Organisation B (approved) and C (waiting for the operator).
        let applied = ok(&app, StatusCode::CREATED, "post", "/api/v1/organisations", None, Some(json!({
            "name": "Organisation B", "cvr": "11223344", "representative_name": "Rep B",
            "representative_email": "rep@b.test", "admin_name": "bo", "admin_password": "Bo-kodeord-12345"}))).await;
        ok(
            &app,
            StatusCode::OK,
            "post",
            "/api/v1/organisations/approve",
            None,
            Some(json!({"token": accept(&svc, &applied).await})),
        )
        .await;
        ok(&app, StatusCode::CREATED, "post", "/api/v1/organisations", None, Some(json!({
            "name": "Organisation C", "cvr": "55667788", "representative_name": "Rep C",
            "representative_email": "rep@c.test", "admin_name": "cille", "admin_password": "Cille-kodeord-123"}))).await;
        let (bo, _) = login(&app, "bo", "Bo-kodeord-12345").await;
        let (cille, _) = login(&app, "cille", "Cille-kodeord-123").await;
        let (ulla, _) = login(&app, "ulla", "Ulla-kodeord-1234").await;
        let (revisor, _) = login(&app, "revisor", "Revisor-kodeord-1").await;

        // Every role against every route: 401 logged out, 403 when the role
        // (or a pending organisation) may not, otherwise neither. Ids that
        // do not exist keep the allowed calls harmless (404).
        let who: [(&str, Option<&str>, Option<Role>, bool); 5] = [
            ("logged out", None, None, true),
            ("org-admin", Some(&anne), Some(Role::OrgAdmin), true),
            ("user-admin", Some(&ulla), Some(Role::UserAdmin), true),
            ("auditor", Some(&revisor), Some(Role::Auditor), true),
            (
                "pending org-admin",
                Some(&cille),
                Some(Role::OrgAdmin),
                false,
            ),
        ];
        for (m, p, need) in MATRIX {
            if *p == "/api/v1/logout" || *p == "/api/v1/login" {
                continue;
            }
            let path = p.replace("{id}", "999999").replace("{name}", "999999.crl");
            for (label, token, role, approved) in &who {
                let body = if *m == "get" || *m == "delete" {
                    None
                } else {
                    Some(json!({}))
                };
                let (st, v) = call(&app, m, &path, *token, body).await;
                let allowed = match (need, role) {
                    (Need::Public, _) => true,
                    (_, None) => false,
                    (Need::Session, Some(_)) => true,
                    (_, Some(_)) if !approved => false,
                    (Need::Read, Some(_)) => true,
                    (Need::Users, Some(r)) => *r != Role::Auditor,
                    (Need::Org, Some(r)) => *r == Role::OrgAdmin,
                };
                if allowed {
                    assert!(
                        st != StatusCode::UNAUTHORIZED
                            && st != StatusCode::FORBIDDEN
                            && !st.is_server_error(),
                        "{label}: {m} {path} -> {st} {v}"
                    );
                } else if token.is_none() {
                    assert_eq!(st, StatusCode::UNAUTHORIZED, "{label}: {m} {path} -> {v}");
                } else {
                    assert_eq!(st, StatusCode::FORBIDDEN, "{label}: {m} {path} -> {v}");
                }
                assert!(
                    v.get("error").is_some() || st.is_success(),
                    "{label}: {m} {path}: {st} {v}"
                );
            }
        }

        // Organisation B's administrator against A's objects: 404, never
        // 403, and nothing changes.
        for (m, p, body) in [
            ("get", format!("/api/v1/users/{a_user}"), None),
            (
                "patch",
                format!("/api/v1/users/{a_user}"),
                Some(json!({"name": "Hacked"})),
            ),
            ("post", format!("/api/v1/users/{a_user}/block"), None),
            (
                "post",
                format!("/api/v1/users/{a_user}/activation-code"),
                None,
            ),
            ("post", format!("/api/v1/users/{a_user}/certificates"), None),
            (
                "post",
                "/api/v1/users/activate".to_string(),
                Some(json!({"users": [a_user], "ident_means": "mitid-app"})),
            ),
            (
                "post",
                format!("/api/v1/certificates/{a_cert}/revoke"),
                Some(json!({})),
            ),
            ("post", format!("/api/v1/certificates/{a_cert}/renew"), None),
            (
                "post",
                format!("/api/v1/recipients/{a_recipient}/pin"),
                None,
            ),
            ("delete", format!("/api/v1/recipients/{a_recipient}"), None),
        ] {
            let (st, v) = call(&app, m, &p, Some(&bo), body).await;
            assert_eq!(st, StatusCode::NOT_FOUND, "B: {m} {p} -> {v}");
        }
        for p in [
            "/api/v1/users",
            "/api/v1/certificates",
            "/api/v1/recipients",
            "/api/v1/audit?limit=1000",
            "/api/v1/queue?all=true",
        ] {
            let v = ok(&app, StatusCode::OK, "get", p, Some(&bo), None).await;
            let t = v.to_string();
            assert!(
                !t.contains("a@advokat.test")
                    && !t.contains("post@advokat.test")
                    && !t.contains("Advokatfirma"),
                "B sees A's data in {p}: {t}"
            );
        }
        let u = ok(
            &app,
            StatusCode::OK,
            "get",
            &format!("/api/v1/users/{a_user}"),
            Some(&anne),
            None,
        )
        .await;
        assert_eq!(u["name"], "A Bruger");
        assert_eq!(u["status"], "missing-birth-date");
        let c = svc
            .certificates()
            .await
            .unwrap()
            .into_iter()
            .find(|c| c.id == a_cert)
            .unwrap();
        assert_eq!(c.status, "active");

        drop(app);
        Arc::into_inner(svc).unwrap().close().await;
    }
}

#[tokio::test(flavor = "current_thread")]
async fn bootstrap_link_makes_one_administrator_once() {
    let site = sites().remove(0);
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
    let svc = Arc::new(
        Service::open(&site.loc, Actor::named("serve"))
            .await
            .unwrap(),
    );
    let t1 = svc.bootstrap_token().await.unwrap().unwrap();
    let t2 = svc.bootstrap_token().await.unwrap().unwrap();
    let app = admin_api::router(svc.clone());
    // A new link ends the old one.
    ok(
        &app,
        StatusCode::NOT_FOUND,
        "post",
        "/api/v1/bootstrap",
        None,
        Some(json!({"token": t1, "name": "anne", "password": "Anne-kodeord-123"})),
    )
    .await;
    ok(
        &app,
        StatusCode::BAD_REQUEST,
        "post",
        "/api/v1/bootstrap",
        None,
        Some(json!({"token": t2, "name": "anne", "password": "kort"})),
    )
    .await;
    let a = ok(
        &app,
        StatusCode::CREATED,
        "post",
        "/api/v1/bootstrap",
        None,
        Some(json!({"token": t2, "name": "anne", "password": "Anne-kodeord-123"})),
    )
    .await;
    assert_eq!(a["role"], "org-admin");
    ok(
        &app,
        StatusCode::NOT_FOUND,
        "post",
        "/api/v1/bootstrap",
        None,
        Some(json!({"token": t2, "name": "eve", "password": "Eve-kodeord-12345"})),
    )
    .await;
    assert!(
        svc.bootstrap_token().await.unwrap().is_none(),
        "no link once an administrator exists"
    );
    login(&app, "anne", "Anne-kodeord-123").await;
    drop(app);
    Arc::into_inner(svc).unwrap().close().await;
}

#[tokio::test(flavor = "current_thread")]
async fn logins_are_rate_limited() {
    let site = sites().remove(0);
    let svc = open(&site).await;
    let app = admin_api::router(svc.clone());
    for _ in 0..5 {
        let (st, _, _) = send(&app, login_req("anne", "forkert-kodeord!")).await;
        assert_eq!(st, StatusCode::UNAUTHORIZED);
    }
    // Now even the right password waits (the name is blocked).
    let (st, _, b) = send(&app, login_req("anne", "Anne-kodeord-123")).await;
    assert_eq!(
        st,
        StatusCode::TOO_MANY_REQUESTS,
        "{}",
        String::from_utf8_lossy(&b)
    );
    // Another administrator is not blocked by anne's failures (no address
    // without a socket).
    login(&app, "ulla", "Ulla-kodeord-1234").await;
    drop(app);
    Arc::into_inner(svc).unwrap().close().await;
}

/// Pages: forms without the token derived from the CSRF cookie (before
/// login) or from the session (after) are refused and change nothing; with
/// it they work. A value equal to the cookie, or another session's token,
/// is refused.
#[tokio::test(flavor = "current_thread")]
async fn page_forms_need_the_csrf_token() {
    let site = sites().remove(0);
    let svc = open(&site).await;
    let app = admin_api::router(svc.clone());
    let (st, h, b) = send(&app, get("/admin/login", None)).await;
    assert_eq!(st, StatusCode::OK);
    let cookie = h
        .get(header::SET_COOKIE)
        .unwrap()
        .to_str()
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .to_string();
    assert!(cookie.starts_with("sikkermail_csrf="));
    let raw = cookie.trim_start_matches("sikkermail_csrf=").to_string();
    let field = |page: &str| {
        let v = page.split("name=\"csrf\" value=\"").nth(1).unwrap();
        v[..v.find('"').unwrap()].to_string()
    };
    let page = String::from_utf8(b).unwrap();
    let csrf = field(&page);
    assert_ne!(csrf, raw, "the form's token is not the cookie");
    let post = |cookie: Option<&str>, body: String| {
        let mut r = Request::builder()
            .method(Method::POST)
            .uri("/admin/login")
            .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded");
        if let Some(c) = cookie {
            r = r.header(header::COOKIE, c);
        }
        r.body(Body::from(body)).unwrap()
    };
    // No cookie, a forged token: 403, no session.
    let (st, h, _) = send(
        &app,
        post(
            None,
            format!("csrf={csrf}&name=anne&password=Anne-kodeord-123"),
        ),
    )
    .await;
    assert_eq!(st, StatusCode::FORBIDDEN);
    assert!(
        h.get_all(header::SET_COOKIE)
            .iter()
            .all(|c| !c.to_str().unwrap().starts_with("sikkermail_session="))
    );
    let (st, _, _) = send(
        &app,
        post(
            Some(&cookie),
            "csrf=xyz&name=anne&password=Anne-kodeord-123".into(),
        ),
    )
    .await;
    assert_eq!(st, StatusCode::FORBIDDEN);
    let (st, _, _) = send(
        &app,
        post(
            Some(&cookie),
            format!("csrf={raw}&name=anne&password=Anne-kodeord-123"),
        ),
    )
    .await;
    assert_eq!(st, StatusCode::FORBIDDEN, "a token equal to the cookie");
    // With both: logged in, redirected to the users page.
    let (st, h, _) = send(
        &app,
        post(
            Some(&cookie),
            format!("csrf={csrf}&name=anne&password=Anne-kodeord-123"),
        ),
    )
    .await;
    assert_eq!(st, StatusCode::SEE_OTHER);
    let session = h
        .get(header::SET_COOKIE)
        .unwrap()
        .to_str()
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .to_string();
    assert!(session.starts_with("sikkermail_session="));
    let both = format!("{cookie}; {session}");
    let (st, _, b) = send(
        &app,
        Request::builder()
            .uri("/admin/users")
            .header(header::COOKIE, &both)
            .body(Body::empty())
            .unwrap(),
    )
    .await;
    assert_eq!(st, StatusCode::OK);
    let users = String::from_utf8(b).unwrap();
    assert!(users.contains("id=\"users\""));
    let session_csrf = field(&users);
    assert_ne!(session_csrf, csrf, "after login the token is the session's");
    // A settings form without the token changes nothing.
    let (st, _, _) = send(
        &app,
        Request::builder()
            .method(Method::POST)
            .uri("/admin/settings")
            .header(header::COOKIE, &session)
            .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
            .body(Body::from("allow_user_certificates=on"))
            .unwrap(),
    )
    .await;
    assert_eq!(st, StatusCode::FORBIDDEN);
    assert!(
        !svc.for_org(svc.org().id, Actor::named("t"))
            .await
            .unwrap()
            .settings()
            .allow_user_certificates
    );
    let (st, _, _) = send(
        &app,
        Request::builder()
            .method(Method::POST)
            .uri("/admin/settings")
            .header(header::COOKIE, &both)
            .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
            .body(Body::from(format!(
                "csrf={csrf}&allow_user_certificates=on"
            )))
            .unwrap(),
    )
    .await;
    assert_eq!(st, StatusCode::FORBIDDEN, "the token before login");
    let (st, _, _) = send(
        &app,
        Request::builder()
            .method(Method::POST)
            .uri("/admin/settings")
            .header(header::COOKIE, &both)
            .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
            .body(Body::from(format!(
                "csrf={session_csrf}&allow_user_certificates=on"
            )))
            .unwrap(),
    )
    .await;
    assert_eq!(st, StatusCode::OK);
    assert!(
        svc.for_org(svc.org().id, Actor::named("t"))
            .await
            .unwrap()
            .settings()
            .allow_user_certificates
    );
    // Logged out, admin pages redirect to the login page.
    let (st, h, _) = send(&app, get("/admin/users", None)).await;
    assert_eq!(st, StatusCode::SEE_OTHER);
    assert_eq!(h.get(header::LOCATION).unwrap(), "/admin/login");
    drop(app);
    Arc::into_inner(svc).unwrap().close().await;
}

/// Single-use links under a race: many requests with one activation link
/// (and one certificate link) at once, many rounds: exactly one wins, one
/// certificate is issued, the others are told the link is gone.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_link_is_used_once_however_many_race_for_it() {
    let rounds: usize = std::env::var("SIKKERMAIL_RACE_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20);
    for site in sites() {
        let svc = open(&site).await;
        let app = admin_api::router(svc.clone());
        let (anne, _) = login(&app, "anne", "Anne-kodeord-123").await;
        ok(&app, StatusCode::OK, "put", "/api/v1/settings", Some(&anne), Some(json!({"allow_user_certificates": true, "allow_private_mitid": false, "allow_access_requests": false}))).await;
        let mut csv = String::from("Navn;E-mail;CPR\n");
        for i in 0..rounds {
            csv.push_str(&format!("Bruger {i};b{i}@advokat.test;0101701{i:03}\n"));
        }
        let (st, _, b) = send(
            &app,
            Request::builder()
                .method(Method::POST)
                .uri("/api/v1/users/import")
                .header(header::AUTHORIZATION, format!("Bearer {anne}"))
                .header(header::CONTENT_TYPE, "text/csv")
                .body(Body::from(csv))
                .unwrap(),
        )
        .await;
        assert_eq!(st, StatusCode::OK);
        let ids: Vec<i64> = json(&b)["imported"]
            .as_array()
            .unwrap()
            .iter()
            .map(|u| u["id"].as_i64().unwrap())
            .collect();
        assert_eq!(ids.len(), rounds);
        let r = ok(
            &app,
            StatusCode::OK,
            "post",
            "/api/v1/users/activate",
            Some(&anne),
            Some(json!({"users": ids, "ident_means": "mitid-app"})),
        )
        .await;
        for (round, u) in r["receipt"]["users"].as_array().unwrap().iter().enumerate() {
            let token = token_of_link(u);
            let code = ok(
                &app,
                StatusCode::OK,
                "post",
                &format!("/api/v1/users/{}/activation-code", u["id"]),
                Some(&anne),
                None,
            )
            .await["code"]
                .as_str()
                .unwrap()
                .to_string();
            let tasks: Vec<_> = (0..8)
                .map(|_| {
                    let app = app.clone();
                    let token = token.clone();
                    let code = code.clone();
                    tokio::spawn(async move {
                        call(&app, "post", "/api/v1/activation", None, Some(json!({"token": token, "code": code, "password": "Bruger-kode-123", "accept_terms": true}))).await.0
                    })
                })
                .collect();
            let mut won = 0;
            for t in tasks {
                let st = t.await.unwrap();
                assert!(
                    st == StatusCode::OK
                        || st == StatusCode::NOT_FOUND
                        || st == StatusCode::CONFLICT
                        || st == StatusCode::BAD_REQUEST,
                    "round {round}: {st}"
                );
                won += usize::from(st == StatusCode::OK);
            }
            assert_eq!(won, 1, "round {round}: one activation wins");
        }
        // Certificates: a few rounds (each attempt makes an RSA key).
        for (round, id) in ids.iter().take(3).enumerate() {
            let order = ok(
                &app,
                StatusCode::CREATED,
                "post",
                &format!("/api/v1/users/{id}/certificates"),
                Some(&anne),
                None,
            )
            .await;
            let token = token_of_link(&order);
            let tasks: Vec<_> = (0..4)
                .map(|_| {
                    let app = app.clone();
                    let token = token.clone();
                    tokio::spawn(async move {
                        call(&app, "post", "/api/v1/certificate-download", None, Some(json!({"token": token, "password": "Bruger-kode-123", "accept_terms": true}))).await.0
                    })
                })
                .collect();
            let mut won = 0;
            for t in tasks {
                won += usize::from(t.await.unwrap() == StatusCode::OK);
            }
            assert_eq!(won, 1, "certificate round {round}: one download wins");
            let issued = svc
                .certificates()
                .await
                .unwrap()
                .into_iter()
                .filter(|c| c.user_id == Some(*id))
                .count();
            assert_eq!(
                issued, 1,
                "certificate round {round}: one certificate issued"
            );
        }
        drop(app);
        Arc::into_inner(svc).unwrap().close().await;
    }
}

/// One CVR number, one organisation: two applications with one CVR (as a
/// race between two nodes could leave them) are refused again when the
/// operator accepts the second; a rejected one frees the number. The
/// approval mail shows the name and CVR as data and nothing else of the
/// application.
#[tokio::test(flavor = "current_thread")]
async fn a_cvr_gets_one_organisation_even_after_a_race() {
    for site in sites() {
        let svc = open(&site).await;
        let app = open_app(&svc);
        let body = |cvr: &str, admin: &str| {
            json!({
                "name": "Dobbelt ApS", "cvr": cvr,
                "representative_name": "Kontonr. er nu 9999-1234567",
                "representative_email": "rep@dobbelt.test",
                "admin_name": admin, "admin_password": "Dobbelt-kodeord-123",
            })
        };
        let first = ok(
            &app,
            StatusCode::CREATED,
            "post",
            "/api/v1/organisations",
            None,
            Some(body("44556677", "dobbelt1")),
        )
        .await;
        // The race's second row, written as a second node would have.
        let mut tx = svc.store().begin().await.unwrap();
        let second = tx
            .create_pending_organisation("Dobbelt ApS", "44556677", "X", "rep@dobbelt.test")
            .await
            .unwrap();
        assert!(
            tx.set_organisation_status(second, "pending", "applied")
                .await
                .unwrap()
        );
        tx.commit().await.unwrap();
        let first_id = service::OrgId(first["org"].as_i64().unwrap());
        // Neither is accepted while the other waits.
        for id in [second, first_id] {
            let e = svc
                .accept_application(id, "post@advokat.test", |_, _| Ok(Vec::new()))
                .await
                .unwrap_err();
            assert!(matches!(e, service::Error::Conflict(_)), "{e}");
        }
        // Rejected, the second is no more (accepting it finds nothing), and
        // the first is accepted.
        svc.reject_application(second).await.unwrap();
        let e = svc
            .accept_application(second, "post@advokat.test", |_, _| Ok(Vec::new()))
            .await
            .unwrap_err();
        assert!(matches!(e, service::Error::NotFound(_)), "{e}");
        let mut mail = None;
        let applied = svc
            .accept_application(first_id, "post@advokat.test", |o, token| {
                let (m, _) = admin_api::api::approval_mail("https://gw.test", o, token);
                let bytes = m.build("post@advokat.test")?.formatted();
                mail = Some(String::from_utf8_lossy(&bytes).to_string());
                Ok(bytes)
            })
            .await
            .unwrap();
        let mail = mail.unwrap();
        assert!(
            !mail.contains("Kontonr") && !mail.contains("9999"),
            "{mail}"
        );
        assert!(
            mail.contains("Subject: Godkend en ny organisation i sikkermail"),
            "{mail}"
        );
        assert!(
            mail.contains(&format!("https://gw.test/approve/{}", applied.token)),
            "{mail}"
        );
        assert!(svc.pending_applications().await.unwrap().is_empty());
        drop(app);
        Arc::into_inner(svc).unwrap().close().await;
    }
}
