//! Who is asking: a bearer token (`Authorization: Bearer ...`) or the
//! session cookie, looked up through the service.

use axum::extract::FromRequestParts;
use axum::http::header::{AUTHORIZATION, COOKIE};
use axum::http::request::Parts;
use service::AdminSession;

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

/// A logged-in administrator (the extractor answers 401 otherwise).
#[derive(Debug, Clone)]
pub struct Authed {
    /// The session.
    pub session: AdminSession,
    /// Its token (to log out).
    pub token: String,
}

impl FromRequestParts<AppState> for Authed {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, st: &AppState) -> Result<Self, ApiError> {
        let token = token_of(parts).ok_or_else(|| ApiError::unauthorized("not logged in"))?;
        match st.svc.admin_session(&token).await? {
            Some(session) => Ok(Authed { session, token }),
            None => Err(ApiError::unauthorized(
                "the session is unknown or has expired",
            )),
        }
    }
}
