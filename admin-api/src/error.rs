//! Every error of the API as one JSON body `{"error": "..."}` with its
//! status: the one place where service errors become HTTP statuses.
//! Internal error text never reaches the client (it goes to the log).

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

/// An error answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    /// The status.
    pub status: StatusCode,
    /// What the client is told.
    pub message: String,
    /// Seconds the client should wait (429 and 503: `Retry-After`).
    pub retry_after: Option<u64>,
}

impl ApiError {
    /// An error with this status and text.
    pub fn new(status: StatusCode, message: impl Into<String>) -> Self {
        ApiError {
            status,
            message: message.into(),
            retry_after: None,
        }
    }

    /// 429 or 503 with `Retry-After: secs`: slow down, nothing was checked.
    pub fn retry(status: StatusCode, message: impl Into<String>, secs: u64) -> Self {
        ApiError {
            status,
            message: message.into(),
            retry_after: Some(secs.max(1)),
        }
    }

    /// 401: not logged in, or the session is over.
    pub fn unauthorized(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, message)
    }

    /// 400.
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, message)
    }

    /// 404.
    pub fn not_found() -> Self {
        Self::new(StatusCode::NOT_FOUND, "not found")
    }

    /// 500, with the cause logged only.
    pub fn internal(cause: &dyn std::fmt::Display) -> Self {
        tracing::error!(error = %cause, "admin API: internal error");
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, "internal server error")
    }
}

impl From<service::Error> for ApiError {
    fn from(e: service::Error) -> Self {
        match e {
            service::Error::NotFound(_) => Self::new(StatusCode::NOT_FOUND, e.to_string()),
            service::Error::Invalid(m) => Self::bad_request(m),
            service::Error::Conflict(m) => Self::new(StatusCode::CONFLICT, m),
            service::Error::TooMany { retry_after } => {
                Self::retry(StatusCode::TOO_MANY_REQUESTS, e.to_string(), retry_after)
            }
            service::Error::Busy => Self::retry(StatusCode::SERVICE_UNAVAILABLE, e.to_string(), 1),
            service::Error::Ca(ca::CaError::Invalid(m) | ca::CaError::Parse(m)) => {
                Self::bad_request(m)
            }
            other => Self::internal(&other),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut r = (
            self.status,
            Json(serde_json::json!({ "error": self.message })),
        )
            .into_response();
        if let Some(s) = self.retry_after {
            r.headers_mut().insert(
                axum::http::header::RETRY_AFTER,
                axum::http::HeaderValue::from(s),
            );
        }
        r
    }
}

/// Shorthand.
pub type ApiResult<T> = Result<T, ApiError>;
