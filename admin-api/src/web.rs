//! What every answer of the HTTP listener carries (one layer, not per
//! handler), the pages' script files, and the CSRF tokens.
//!
//! Headers on every response: `X-Content-Type-Options: nosniff`,
//! `Referrer-Policy: no-referrer` (the links carry secrets in their path),
//! `X-Frame-Options: DENY` and a Content-Security-Policy ([`CSP`]) whose
//! `script-src` is `'self'` alone: the pages' scripts are files under
//! `/static/`, never inline, so an injected `<script>` does not run.
//!
//! CSRF tokens are derived, never stored and never equal to a cookie:
//! - with a session, `HMAC-SHA256(session token, label)`: a token from
//!   another session, or made up, is refused; every node computes the same;
//! - before login (login, activation, certificate download, application,
//!   bootstrap, approval, access request), the same HMAC under the random
//!   `sikkermail_csrf` cookie (HttpOnly, SameSite=Strict): a form value
//!   equal to the cookie is refused.
//!
//! The JSON API with the session cookie takes the session's token in the
//! [`CSRF_HEADER`] on every change; with `Authorization: Bearer` none is
//! needed (a browser never sends that header across sites by itself).

use axum::Router;
use axum::http::header::{CACHE_CONTROL, CONTENT_TYPE};
use axum::http::{HeaderValue, Method};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use base64::Engine;

use service::limits::Rule;

use crate::AppState;

/// The Content-Security-Policy of every answer.
pub const CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; \
img-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'";

/// The header the JSON API takes the CSRF token in (with the cookie).
pub const CSRF_HEADER: &str = "x-csrf-token";

/// The script that starts the certificate download.
const DOWNLOAD_JS: &str = include_str!("../static/download.js");

/// The path the pages load it from (renamed when it changes: it is cached
/// for a year).
pub const DOWNLOAD_JS_PATH: &str = "/static/download-1.js";

/// The static files.
pub fn routes() -> Router<AppState> {
    Router::new().route(DOWNLOAD_JS_PATH, get(download_js))
}

async fn download_js() -> Response {
    (
        [
            (
                CONTENT_TYPE,
                HeaderValue::from_static("text/javascript; charset=utf-8"),
            ),
            (
                CACHE_CONTROL,
                HeaderValue::from_static("public, max-age=31536000, immutable"),
            ),
        ],
        DOWNLOAD_JS,
    )
        .into_response()
}

/// Adds the security headers to a response (`map_response` layer).
pub async fn security_headers(mut resp: Response) -> Response {
    let h = resp.headers_mut();
    h.insert(
        "x-content-type-options",
        HeaderValue::from_static("nosniff"),
    );
    h.insert("referrer-policy", HeaderValue::from_static("no-referrer"));
    h.insert("x-frame-options", HeaderValue::from_static("DENY"));
    h.insert("content-security-policy", HeaderValue::from_static(CSP));
    resp
}

/// HMAC-SHA256 of `label` under `key`, base64url; empty if OpenSSL fails
/// (an empty token never matches: see [`same`]).
fn mac(key: &[u8], label: &str) -> String {
    let sign = || -> Result<Vec<u8>, openssl::error::ErrorStack> {
        let k = openssl::pkey::PKey::hmac(key)?;
        let mut s = openssl::sign::Signer::new(openssl::hash::MessageDigest::sha256(), &k)?;
        s.update(label.as_bytes())?;
        s.sign_to_vec()
    };
    sign()
        .map(|m| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(m))
        .unwrap_or_default()
}

/// The CSRF token of a session.
pub fn session_csrf(session_token: &str) -> String {
    mac(
        session_token.as_bytes(),
        "sikkermail CSRF token of a session",
    )
}

/// The CSRF token before login, from the `sikkermail_csrf` cookie.
pub fn pre_session_csrf(cookie: &str) -> String {
    mac(cookie.as_bytes(), "sikkermail CSRF token before login")
}

/// True when `given` is the `expected` token (constant time; never for
/// an empty one).
pub fn same(given: &str, expected: &str) -> bool {
    !expected.is_empty()
        && given.len() == expected.len()
        && openssl::memcmp::eq(given.as_bytes(), expected.as_bytes())
}

/// True for the methods that change something (and need the token).
pub fn changes(m: &Method) -> bool {
    !matches!(*m, Method::GET | Method::HEAD | Method::OPTIONS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_differ_per_session_and_from_the_cookie() {
        let a = session_csrf("session-a");
        assert_eq!(a.len(), 43);
        assert_eq!(a, session_csrf("session-a"));
        assert_ne!(a, session_csrf("session-b"));
        let c = "c".repeat(43);
        assert!(!same(&c, &pre_session_csrf(&c)));
        assert!(same(&pre_session_csrf(&c), &pre_session_csrf(&c)));
        assert!(!same("", ""));
    }
}

/// The public forms anyone may send, each with its limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PublicForm {
    /// An application for a new organisation.
    Apply,
    /// An employee's access request.
    AccessRequest,
}

/// An hour, the window of the public forms' limits.
const HOUR: i64 = 3600;

/// Applications per client address in an hour.
pub const APPLY_ADDRESS: Rule = Rule {
    scope: "apply-address",
    max: 10,
    window_secs: HOUR,
};
/// Applications from everyone in an hour.
pub const APPLY_ALL: Rule = Rule {
    scope: "apply-all",
    max: 100,
    window_secs: HOUR,
};
/// Access requests per client address in an hour.
pub const ACCESS_ADDRESS: Rule = Rule {
    scope: "access-request-address",
    max: 10,
    window_secs: HOUR,
};
/// Access requests from everyone in an hour.
pub const ACCESS_ALL: Rule = Rule {
    scope: "access-request-all",
    max: 100,
    window_secs: HOUR,
};

/// Takes one request of `form` from `ip` from the store's limiter (shared
/// by every node): per address and in all. Every request counts, refused
/// or not. The inner `Err` is the seconds to wait when a limit is used up.
pub async fn public_attempt(
    st: &AppState,
    form: PublicForm,
    ip: Option<&str>,
) -> Result<Result<(), u64>, crate::error::ApiError> {
    let (per_address, all) = match form {
        PublicForm::Apply => (APPLY_ADDRESS, APPLY_ALL),
        PublicForm::AccessRequest => (ACCESS_ADDRESS, ACCESS_ALL),
    };
    let mut keys = vec![(all, "*")];
    keys.extend(ip.map(|a| (per_address, a)));
    match st.svc.attempt(&keys).await {
        // Never given back: a public request is not a secret to get right.
        Ok(taken) => {
            drop(taken);
            Ok(Ok(()))
        }
        Err(service::Error::TooMany { retry_after }) => Ok(Err(retry_after)),
        Err(e) => Err(e.into()),
    }
}

/// The 429 of a public form over its limit.
pub fn too_many(wait: u64) -> crate::error::ApiError {
    crate::error::ApiError::new(
        axum::http::StatusCode::TOO_MANY_REQUESTS,
        format!("too many requests from here: try again in {wait} seconds"),
    )
}
