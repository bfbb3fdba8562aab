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

pub mod auth;
pub mod error;

use std::sync::Arc;

use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{DefaultBodyLimit, Query, State};
use axum::http::header::{CACHE_CONTROL, CONTENT_TYPE, SET_COOKIE};
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{Value, json};
use service::Service;

use crate::auth::{Authed, COOKIE_NAME};
use crate::error::{ApiError, ApiResult};

/// The largest request body accepted, bytes.
pub const BODY_LIMIT: usize = 64 * 1024;

/// The OpenAPI 3.1 document, as served.
pub const OPENAPI: &str = include_str!("../openapi.json");

/// Every route: (method, path), as in the OpenAPI document (which also
/// lists the public `/ca.pem`).
pub const ROUTES: &[(&str, &str)] = &[
    ("post", "/api/v1/login"),
    ("post", "/api/v1/logout"),
    ("get", "/api/v1/me"),
    ("get", "/api/v1/queue"),
    ("get", "/api/v1/audit"),
    ("get", "/api/v1/certificates"),
    ("get", "/api/v1/openapi.json"),
    ("get", "/ca.pem"),
];

/// How the API is deployed.
#[derive(Debug, Clone, Default)]
pub struct ApiConfig {
    /// TLS is in front (the cookie gets `Secure`).
    pub secure_cookie: bool,
}

/// What every handler shares.
#[derive(Debug, Clone)]
pub struct AppState {
    /// The organisation's operations.
    pub svc: Arc<Service>,
    /// Deployment settings.
    pub config: ApiConfig,
}

/// The API with the default configuration (no `Secure` on the cookie).
pub fn router(svc: Arc<Service>) -> Router {
    router_with(svc, ApiConfig::default())
}

/// The API.
pub fn router_with(svc: Arc<Service>, config: ApiConfig) -> Router {
    Router::new()
        .route("/api/v1/login", post(login))
        .route("/api/v1/logout", post(logout))
        .route("/api/v1/me", get(me))
        .route("/api/v1/queue", get(queue))
        .route("/api/v1/audit", get(audit))
        .route("/api/v1/certificates", get(certificates))
        .route("/api/v1/openapi.json", get(openapi))
        .route("/ca.pem", get(ca_pem))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
        .with_state(AppState { svc, config })
}

async fn not_found() -> ApiError {
    ApiError::not_found()
}

async fn method_not_allowed() -> ApiError {
    ApiError::new(StatusCode::METHOD_NOT_ALLOWED, "method not allowed")
}

fn json_body<T>(body: Result<Json<T>, JsonRejection>) -> ApiResult<T> {
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

fn query<T>(q: Result<Query<T>, QueryRejection>) -> ApiResult<T> {
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

fn cookie(st: &AppState, value: &str, max_age: i64) -> ApiResult<HeaderValue> {
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

async fn login(
    State(st): State<AppState>,
    body: Result<Json<LoginBody>, JsonRejection>,
) -> ApiResult<Response> {
    let body = json_body(body)?;
    let s = match st.svc.admin_login(&body.name, &body.password).await {
        Ok(s) => s,
        Err(service::Error::Invalid(m)) if m == service::admins::LOGIN_FAILED => {
            return Err(ApiError::unauthorized(m));
        }
        Err(e) => return Err(e.into()),
    };
    let max_age = (s.expires_at - service::now()).max(0);
    let mut resp = Json(json!({
        "token": s.token,
        "role": s.role.as_str(),
        "expires_at": s.expires_at,
    }))
    .into_response();
    resp.headers_mut()
        .insert(SET_COOKIE, cookie(&st, &s.token, max_age)?);
    resp.headers_mut()
        .insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(resp)
}

async fn logout(State(st): State<AppState>, who: Authed) -> ApiResult<Response> {
    st.svc.admin_logout(&who.token).await?;
    let mut resp = StatusCode::NO_CONTENT.into_response();
    resp.headers_mut().insert(SET_COOKIE, cookie(&st, "", 0)?);
    Ok(resp)
}

async fn me(who: Authed) -> Json<Value> {
    let s = who.session;
    Json(json!({
        "name": s.admin.name,
        "role": s.role.as_str(),
        "org": s.org.0,
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
    State(st): State<AppState>,
    _who: Authed,
    q: Result<Query<QueueQuery>, QueryRejection>,
) -> ApiResult<Json<Value>> {
    let q = query(q)?;
    let limit = q.limit.unwrap_or(100).min(1000);
    let items = st.svc.queue_list(q.all, i64::from(limit)).await?;
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
    State(st): State<AppState>,
    _who: Authed,
    q: Result<Query<AuditQuery>, QueryRejection>,
) -> ApiResult<Json<Value>> {
    let q = query(q)?;
    let limit = q.limit.unwrap_or(50).min(1000);
    let items: Vec<Value> = st
        .svc
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

async fn certificates(State(st): State<AppState>, _who: Authed) -> ApiResult<Json<Value>> {
    let items: Vec<Value> = st
        .svc
        .certificates()
        .await?
        .into_iter()
        .map(|c| {
            json!({
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
