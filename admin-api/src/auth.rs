//! Who is asking: a bearer token (`Authorization: Bearer ...`) or the
//! session cookie, looked up through the service; and what they may do.
//!
//! One installation serves several organisations: the session names the
//! administrator's organisation, and every handler works on a [`Service`]
//! scoped to it, so an object of another organisation is simply not found
//! (404, never 403).
//!
//! Roles: the auditor reads; the user administrator also manages users,
//! activation and brugercertifikater; the organisation administrator may
//! do everything. An organisation awaiting its ledelsesrepræsentant's
//! approval can do nothing but look at who is logged in.

use std::net::SocketAddr;

use axum::extract::{ConnectInfo, FromRequestParts};
use axum::http::StatusCode;
use axum::http::header::{AUTHORIZATION, COOKIE};
use axum::http::request::Parts;
use service::{Actor, AdminSession, Role, Service};

use crate::AppState;
use crate::error::ApiError;

/// The session cookie's name.
pub const COOKIE_NAME: &str = "sikkermail_session";

/// The token a request carries: the bearer token first, else the cookie.
pub fn token_of(parts: &Parts) -> Option<String> {
    if let Some(v) = parts.headers.get(AUTHORIZATION) {
        let v = v.to_str().ok()?;
        let (scheme, token) = v.split_once(' ')?;
        return scheme
            .eq_ignore_ascii_case("bearer")
            .then(|| token.trim().to_string())
            .filter(|t| !t.is_empty());
    }
    cookie_token(parts)
}

/// The session cookie's value, if any.
pub fn cookie_token(parts: &Parts) -> Option<String> {
    parts
        .headers
        .get_all(COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|c| c.trim().split_once('='))
        .find(|(k, _)| *k == COOKIE_NAME)
        .map(|(_, v)| v.trim().to_string())
        .filter(|t| !t.is_empty())
}

/// The client's address, when the server knows it.
pub fn client_ip(parts: &Parts) -> Option<String> {
    parts
        .extensions
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.ip().to_string())
}

/// What a request needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Need {
    /// Any administrator of an approved organisation.
    Read,
    /// A user administrator or an organisation administrator.
    Users,
    /// An organisation administrator.
    Org,
}

/// True when `role` may do what `need` names.
pub fn allows(role: Role, need: Need) -> bool {
    match need {
        Need::Read => true,
        Need::Users => matches!(role, Role::OrgAdmin | Role::UserAdmin),
        Need::Org => role == Role::OrgAdmin,
    }
}

/// A logged-in administrator (the extractor answers 401 otherwise).
#[derive(Debug)]
pub struct Authed {
    /// The session.
    pub session: AdminSession,
    /// Its token (to log out).
    pub token: String,
    /// The administrator's organisation, acting as them (the audit trail
    /// records `admin:<name>` and the client's address).
    pub svc: Service,
}

impl Authed {
    /// The organisation's service, when the role allows `need` and the
    /// organisation is approved; 403 otherwise.
    pub fn need(&self, need: Need) -> Result<&Service, ApiError> {
        if self.svc.org().status != "active" {
            return Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "the organisation awaits approval by its ledelsesrepræsentant",
            ));
        }
        if !allows(self.session.role, need) {
            return Err(ApiError::new(
                StatusCode::FORBIDDEN,
                format!("the role {} may not do this", self.session.role),
            ));
        }
        Ok(&self.svc)
    }
}

/// Looks a session token up: the session and its organisation's service.
pub async fn session_of(
    st: &AppState,
    token: &str,
    ip: Option<&str>,
) -> Result<Option<(AdminSession, Service)>, ApiError> {
    let Some(org) = st.svc.session_org(token).await? else {
        return Ok(None);
    };
    let scoped = st.svc.for_org(org, Actor::named("api")).await?;
    let Some(session) = scoped.admin_session(token).await? else {
        return Ok(None);
    };
    let actor = match ip {
        Some(ip) => format!("admin:{} from {ip}", session.admin.name),
        None => format!("admin:{}", session.admin.name),
    };
    let svc = st.svc.for_org(org, Actor::named(actor)).await?;
    Ok(Some((session, svc)))
}

impl FromRequestParts<AppState> for Authed {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, st: &AppState) -> Result<Self, ApiError> {
        let token = token_of(parts).ok_or_else(|| ApiError::unauthorized("not logged in"))?;
        let ip = client_ip(parts);
        let Some((session, svc)) = session_of(st, &token, ip.as_deref()).await? else {
            return Err(ApiError::unauthorized(
                "the session is unknown or has expired",
            ));
        };
        // With the cookie (a browser sends it by itself, also for a page of
        // another site), a change needs the session's CSRF token as well.
        if parts.headers.get(AUTHORIZATION).is_none() && crate::web::changes(&parts.method) {
            let given = parts
                .headers
                .get(crate::web::CSRF_HEADER)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("");
            if !crate::web::same(given, &crate::web::session_csrf(&token)) {
                return Err(ApiError::new(
                    StatusCode::FORBIDDEN,
                    "a change with the session cookie needs the session's X-CSRF-Token header \
                     (csrf_token from POST /api/v1/login or GET /api/v1/me); scripts use \
                     Authorization: Bearer",
                ));
            }
        }
        Ok(Authed {
            session,
            token,
            svc,
        })
    }
}

/// The client's address (None in tests without a socket).
#[derive(Debug, Clone)]
pub struct ClientIp(pub Option<String>);

impl<S: Send + Sync> FromRequestParts<S> for ClientIp {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        Ok(ClientIp(client_ip(parts)))
    }
}
