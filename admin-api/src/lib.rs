//! The admin HTTP API of sikkermail: JSON under `/api/v1`, described by an
//! OpenAPI 3.1 document at `/api/v1/openapi.json`, plus the public
//! `/ca.pem`. A front end over `service`: no SQL, no business logic.
//!
//! Authentication: `POST /api/v1/login` returns a token (for scripts, as
//! `Authorization: Bearer <token>`) and sets it as the session cookie
//! (HttpOnly, SameSite=Strict, Path=/, Secure when [`ApiConfig::secure_cookie`]).
//! Every error is `{"error": "..."}` with a 4xx/5xx status ([`error`]).
//!
//! Where to start reading: [`router`], then [`auth`].

pub mod api;
pub mod auth;
pub mod error;
pub mod mail;
pub mod pages;
pub mod web;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{DefaultBodyLimit, Query, State};
use axum::http::header::{CACHE_CONTROL, CONTENT_TYPE, SET_COOKIE};
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{Value, json};
use service::{Actor, Service};

use crate::auth::{Authed, COOKIE_NAME, Need};
use crate::error::{ApiError, ApiResult};
pub use crate::mail::MailConfig;

/// The largest request body accepted, bytes (imports: 1 MiB).
pub const BODY_LIMIT: usize = 1024 * 1024;

/// The OpenAPI 3.1 document, as served.
pub const OPENAPI: &str = include_str!("../openapi.json");

/// Every API route: (method, path), as in the OpenAPI document (which also
/// lists the public `/ca.pem` and `/crl/{name}`).
pub const ROUTES: &[(&str, &str)] = &[
    ("post", "/api/v1/login"),
    ("post", "/api/v1/logout"),
    ("get", "/api/v1/me"),
    ("post", "/api/v1/bootstrap"),
    ("post", "/api/v1/organisations"),
    ("post", "/api/v1/organisations/approve"),
    ("get", "/api/v1/settings"),
    ("put", "/api/v1/settings"),
    ("get", "/api/v1/admins"),
    ("post", "/api/v1/admins"),
    ("get", "/api/v1/users"),
    ("get", "/api/v1/users/import/template"),
    ("post", "/api/v1/users/import"),
    ("post", "/api/v1/users/activate"),
    ("get", "/api/v1/users/{id}"),
    ("patch", "/api/v1/users/{id}"),
    ("post", "/api/v1/users/{id}/activation-code"),
    ("post", "/api/v1/users/{id}/resend-activation"),
    ("post", "/api/v1/users/{id}/block"),
    ("post", "/api/v1/users/{id}/unblock"),
    ("post", "/api/v1/users/{id}/approve"),
    ("post", "/api/v1/users/{id}/reject"),
    ("post", "/api/v1/users/{id}/certificates"),
    ("post", "/api/v1/access-requests"),
    ("post", "/api/v1/activation"),
    ("post", "/api/v1/certificate-download"),
    ("get", "/api/v1/queue"),
    ("get", "/api/v1/audit"),
    ("get", "/api/v1/certificates"),
    ("post", "/api/v1/certificates/{id}/revoke"),
    ("post", "/api/v1/certificates/{id}/renew"),
    ("post", "/api/v1/organisation-certificates"),
    ("post", "/api/v1/organisation-certificates/import"),
    ("get", "/api/v1/recipients"),
    ("post", "/api/v1/recipients/import"),
    ("post", "/api/v1/recipients/{id}/pin"),
    ("post", "/api/v1/recipients/{id}/unpin"),
    ("delete", "/api/v1/recipients/{id}"),
    ("get", "/api/v1/openapi.json"),
    ("get", "/ca.pem"),
    ("get", "/crl/{name}"),
    ("post", "/ocsp/{org}"),
    ("get", "/ocsp/{org}/{request}"),
];

/// How the API is deployed.
#[derive(Debug, Clone)]
pub struct ApiConfig {
    /// TLS is in front (the cookie gets `Secure`).
    pub secure_cookie: bool,
    /// The address users reach the pages at, for links in e-mails
    /// (no trailing slash).
    pub public_url: String,
    /// Where e-mails go; None: links are only returned to the
    /// administrator (tests, or no mail wanted).
    pub mail: Option<MailConfig>,
    /// Anyone may apply for a new organisation (`/apply`,
    /// `POST /api/v1/organisations`; `[admin] applications`). Off by
    /// default: when on, each application still waits for the
    /// installation's operator (`sikkermail org accept`).
    pub applications: bool,
}

impl Default for ApiConfig {
    fn default() -> Self {
        ApiConfig {
            secure_cookie: false,
            public_url: "http://127.0.0.1:8080".into(),
            mail: None,
            applications: false,
        }
    }
}

/// Certificate files waiting to be downloaded once (the page that shows
/// the password links to them), for a few minutes.
#[derive(Debug, Default)]
pub struct Downloads {
    files: Mutex<HashMap<String, Prepared>>,
}

/// A prepared download: bytes, file name, when made.
type Prepared = (Vec<u8>, String, Instant);

/// How long a prepared download waits.
pub const DOWNLOAD_TTL: Duration = Duration::from_secs(15 * 60);

impl Downloads {
    /// Keeps `bytes` under a new random ticket.
    pub fn put(&self, bytes: Vec<u8>, filename: String) -> ApiResult<String> {
        let mut b = [0u8; 24];
        openssl::rand::rand_bytes(&mut b).map_err(|e| ApiError::internal(&e))?;
        use base64::Engine;
        let ticket = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b);
        let mut m = self.files.lock().unwrap_or_else(|p| p.into_inner());
        m.retain(|_, (_, _, at)| at.elapsed() < DOWNLOAD_TTL);
        m.insert(ticket.clone(), (bytes, filename, Instant::now()));
        Ok(ticket)
    }

    /// Takes the file (once).
    pub fn take(&self, ticket: &str) -> Option<(Vec<u8>, String)> {
        let mut m = self.files.lock().unwrap_or_else(|p| p.into_inner());
        m.retain(|_, (_, _, at)| at.elapsed() < DOWNLOAD_TTL);
        m.remove(ticket).map(|(b, n, _)| (b, n))
    }
}

/// What every handler shares.
#[derive(Debug, Clone)]
pub struct AppState {
    /// The installation (its first organisation; handlers scope it to the
    /// session's organisation with [`Service::for_org`]).
    pub svc: Arc<Service>,
    /// Deployment settings.
    pub config: Arc<ApiConfig>,
    /// Prepared certificate downloads.
    pub downloads: Arc<Downloads>,
}

/// The API with the default configuration (no `Secure` on the cookie).
pub fn router(svc: Arc<Service>) -> Router {
    router_with(svc, ApiConfig::default())
}

/// The API and the pages.
pub fn router_with(svc: Arc<Service>, config: ApiConfig) -> Router {
    let st = AppState {
        svc,
        config: Arc::new(config),
        downloads: Arc::new(Downloads::default()),
    };
    Router::new()
        .route("/api/v1/login", post(login))
        .route("/api/v1/logout", post(logout))
        .route("/api/v1/me", get(me))
        .route("/api/v1/queue", get(queue))
        .route("/api/v1/audit", get(audit))
        .route("/api/v1/certificates", get(certificates))
        .route("/api/v1/openapi.json", get(openapi))
        .route("/ca.pem", get(ca_pem))
        .merge(api::routes())
        .merge(pages::routes())
        .merge(web::routes())
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
        .layer(axum::middleware::map_response(web::security_headers))
        .with_state(st)
}

async fn not_found() -> ApiError {
    ApiError::not_found()
}

async fn method_not_allowed() -> ApiError {
    ApiError::new(StatusCode::METHOD_NOT_ALLOWED, "method not allowed")
}

/// The body as JSON, or a clear 4xx.
pub fn json_body<T>(body: Result<Json<T>, JsonRejection>) -> ApiResult<T> {
    match body {
        Ok(Json(v)) => Ok(v),
        Err(r) => {
            let status = r.status();
            let msg = match status {
                StatusCode::PAYLOAD_TOO_LARGE => "the request body is too large",
                StatusCode::UNSUPPORTED_MEDIA_TYPE => "send Content-Type: application/json",
                _ => "the request body is not the JSON expected",
            };
            Err(ApiError::new(status, msg))
        }
    }
}

/// The query, or a 400.
pub fn query<T>(q: Result<Query<T>, QueryRejection>) -> ApiResult<T> {
    q.map(|Query(v)| v)
        .map_err(|_| ApiError::bad_request("bad query parameters"))
}

#[derive(Deserialize)]
struct LoginBody {
    name: String,
    password: String,
}

impl std::fmt::Debug for LoginBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoginBody")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

/// The session cookie.
pub fn cookie(st: &AppState, value: &str, max_age: i64) -> ApiResult<HeaderValue> {
    let secure = if st.config.secure_cookie {
        "; Secure"
    } else {
        ""
    };
    HeaderValue::from_str(&format!(
        "{COOKIE_NAME}={value}; HttpOnly; SameSite=Strict; Path=/; Max-Age={max_age}{secure}"
    ))
    .map_err(|e| ApiError::internal(&e))
}

/// The device cookie (OWASP "device cookies"): set after a good login,
/// bound to the administrator's name; a login that carries it counts
/// against that device only (see [`service::limits`]).
pub const DEVICE_COOKIE: &str = "sikkermail_device";

/// The device cookie's value in `headers`, if any.
pub fn device_of(headers: &axum::http::HeaderMap) -> Option<String> {
    headers
        .get_all(axum::http::header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|c| c.trim().split_once('='))
        .find(|(k, _)| *k == DEVICE_COOKIE)
        .map(|(_, v)| v.to_string())
}

/// Logs `name` in as the administrator of their organisation (an unknown
/// name costs the same and fails the same as a wrong password). The
/// attempt is taken from the store's limiter before the password is
/// checked and given back only when it was right: from the device's own
/// bucket when `device` is a device cookie of `name`, else from the
/// name's and the client address's. Returns the session and, when the
/// client had no device cookie of the name, a `Set-Cookie` for a new one.
pub async fn do_login(
    st: &AppState,
    ip: Option<&str>,
    device: Option<&str>,
    name: &str,
    password: &str,
) -> ApiResult<(service::Session, Option<HeaderValue>)> {
    use service::limits::{ADMIN_ADDRESS, ADMIN_DEVICE, ADMIN_NAME};
    let scoped = match st.svc.admin_org(name).await? {
        Some(org) => st.svc.for_org(org, Actor::named("api")).await?,
        None => st.svc.for_org(st.svc.org().id, Actor::named("api")).await?,
    };
    let device = match device {
        Some(d) if st.svc.device_valid(d, name).await? => Some(d),
        _ => None,
    };
    let keys = match device {
        Some(d) => vec![(ADMIN_DEVICE, d)],
        None => {
            let mut k = vec![(ADMIN_NAME, name)];
            k.extend(ip.map(|a| (ADMIN_ADDRESS, a)));
            k
        }
    };
    let taken = st.svc.attempt(&keys).await?;
    match scoped.admin_login(name, password).await {
        Ok(s) => {
            st.svc.attempt_succeeded(taken).await?;
            let set = match device {
                Some(_) => None,
                None => {
                    let token = st.svc.device_issue(name).await?;
                    let secure = if st.config.secure_cookie {
                        "; Secure"
                    } else {
                        ""
                    };
                    Some(
                        HeaderValue::from_str(&format!(
                            "{DEVICE_COOKIE}={token}; HttpOnly; SameSite=Strict; Path=/; \
                             Max-Age={}{secure}",
                            service::limits::DEVICE_SECS
                        ))
                        .map_err(|e| ApiError::internal(&e))?,
                    )
                }
            };
            Ok((s, set))
        }
        Err(service::Error::Invalid(m)) if m == service::admins::LOGIN_FAILED => {
            Err(ApiError::unauthorized(m))
        }
        Err(e) => {
            // Not a wrong password (no capacity to check it, the store):
            // the attempt is given back.
            st.svc.attempt_succeeded(taken).await?;
            Err(e.into())
        }
    }
}

async fn login(
    State(st): State<AppState>,
    ip: auth::ClientIp,
    headers: axum::http::HeaderMap,
    body: Result<Json<LoginBody>, JsonRejection>,
) -> ApiResult<Response> {
    let body = json_body(body)?;
    let device = device_of(&headers);
    let (s, set_device) = do_login(
        &st,
        ip.0.as_deref(),
        device.as_deref(),
        &body.name,
        &body.password,
    )
    .await?;
    let max_age = (s.expires_at - service::now()).max(0);
    let mut resp = Json(json!({
        "token": s.token,
        "csrf_token": web::session_csrf(&s.token),
        "role": s.role.as_str(),
        "expires_at": s.expires_at,
    }))
    .into_response();
    resp.headers_mut()
        .insert(SET_COOKIE, cookie(&st, &s.token, max_age)?);
    if let Some(d) = set_device {
        resp.headers_mut().append(SET_COOKIE, d);
    }
    resp.headers_mut()
        .insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(resp)
}

async fn logout(State(st): State<AppState>, who: Authed) -> ApiResult<Response> {
    who.svc.admin_logout(&who.token).await?;
    let mut resp = StatusCode::NO_CONTENT.into_response();
    resp.headers_mut().insert(SET_COOKIE, cookie(&st, "", 0)?);
    Ok(resp)
}

async fn me(who: Authed) -> Json<Value> {
    let org = who.svc.org();
    let s = who.session;
    Json(json!({
        "csrf_token": web::session_csrf(&who.token),
        "name": s.admin.name,
        "role": s.role.as_str(),
        "org": s.org.0,
        "organisation": {
            "id": org.id.0,
            "name": org.name,
            "cvr": org.cvr,
            "status": org.status,
        },
        "expires_at": s.expires_at,
    }))
}

#[derive(Debug, Deserialize)]
struct QueueQuery {
    #[serde(default)]
    all: bool,
    limit: Option<u32>,
}

async fn queue(
    who: Authed,
    q: Result<Query<QueueQuery>, QueryRejection>,
) -> ApiResult<Json<Value>> {
    let svc = who.need(Need::Read)?;
    let q = query(q)?;
    let limit = q.limit.unwrap_or(100).min(1000);
    let items = svc.queue_list(q.all, i64::from(limit)).await?;
    let items: Vec<Value> = items
        .iter()
        .map(|m| {
            json!({
                "id": m.id,
                "direction": m.direction.as_str(),
                "state": m.state.as_str(),
                "mail_from": m.mail_from,
                "received_at": m.received_at,
                "next_attempt": m.next_attempt,
                "attempts": m.attempts,
                "size": m.size,
                "recipients": m.recipients.iter().map(|(a, s)| json!({
                    "address": a,
                    "state": s.as_str(),
                })).collect::<Vec<_>>(),
                "note": m.note,
            })
        })
        .collect();
    Ok(Json(json!({ "items": items })))
}

#[derive(Debug, Deserialize)]
struct AuditQuery {
    limit: Option<u32>,
}

async fn audit(
    who: Authed,
    q: Result<Query<AuditQuery>, QueryRejection>,
) -> ApiResult<Json<Value>> {
    let svc = who.need(Need::Read)?;
    let q = query(q)?;
    let limit = q.limit.unwrap_or(50).min(1000);
    let items: Vec<Value> = svc
        .audit_events(limit)
        .await?
        .into_iter()
        .map(|a| {
            json!({
                "at": a.at,
                "actor": a.actor,
                "action": a.action,
                "subject": a.subject,
                "detail": a.detail,
            })
        })
        .collect();
    Ok(Json(json!({ "items": items })))
}

async fn certificates(who: Authed) -> ApiResult<Json<Value>> {
    let svc = who.need(Need::Read)?;
    let items: Vec<Value> = svc
        .certificates()
        .await?
        .into_iter()
        .map(|c| {
            json!({
                "user": c.user_id,
                "id": c.id,
                "kind": c.kind,
                "generation": c.generation,
                "source": c.source,
                "status": c.status,
                "subject": c.subject,
                "issuer": c.issuer,
                "serial": c.serial,
                "email": c.email,
                "not_before": c.not_before,
                "not_after": c.not_after,
                "has_key": c.key_id.is_some(),
                "revoked_at": c.revoked_at,
                "revocation_reason": c.revocation_reason,
                "replaced_by": c.replaced_by,
            })
        })
        .collect();
    Ok(Json(json!({ "items": items })))
}

async fn openapi() -> Response {
    (
        [(CONTENT_TYPE, HeaderValue::from_static("application/json"))],
        OPENAPI,
    )
        .into_response()
}

async fn ca_pem(State(st): State<AppState>) -> ApiResult<Response> {
    let pem = st.svc.ca_pem().await?;
    Ok((
        [(
            CONTENT_TYPE,
            HeaderValue::from_static("application/x-pem-file"),
        )],
        pem,
    )
        .into_response())
}
