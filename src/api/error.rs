//! The one error type of the REST API and its wire shape.
//!
//! RiverEdge's frontend reads `detail` (a string, or `[0].msg` of a FastAPI validation list), so
//! every error is `{"detail": ..., "code": ...}`: `code` is a stable machine name that clients
//! may switch on, `detail` is for people. Internal failures all render as the same opaque 500;
//! their cause chain is logged once, here, where the response is made.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::json;

/// One field that failed validation, FastAPI-style (`loc`, `msg`, `type`).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct FieldError {
    /// Where the value was: `["body", "backup_tables"]`, `["query", "page"]`, `["path", "uuid"]`.
    pub loc: Vec<String>,
    pub msg: String,
    #[serde(rename = "type")]
    pub kind: String,
}

impl FieldError {
    pub fn new(loc: &[&str], msg: impl Into<String>, kind: &str) -> Self {
        Self {
            loc: loc.iter().map(|s| (*s).to_owned()).collect(),
            msg: msg.into(),
            kind: kind.to_owned(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// Missing, malformed, expired or wrongly signed token.
    #[error("{0}")]
    Unauthorized(&'static str),
    /// Authenticated, but not allowed to do this.
    #[error("{0}")]
    Forbidden(String),
    /// Absent, deleted, or another tenant's: indistinguishable on purpose.
    #[error("{0}")]
    NotFound(&'static str),
    #[error("{detail}")]
    BadRequest { code: &'static str, detail: String },
    #[error("{detail}")]
    Conflict { code: &'static str, detail: String },
    /// The path exists, the method does not.
    #[error("method not allowed")]
    MethodNotAllowed,
    #[error("validation failed")]
    Validation(Vec<FieldError>),
    #[error("request body larger than {0} bytes")]
    PayloadTooLarge(usize),
    /// A `Range` outside the resource (`len` is its size).
    #[error("requested range not satisfiable")]
    RangeNotSatisfiable { len: u64 },
    /// A dependency (the Inngest event API, the JWT secret) is not available.
    #[error("{detail}")]
    Unavailable { code: &'static str, detail: String },
    #[error(transparent)]
    Internal(#[from] anyhow::Error),
}

impl ApiError {
    pub fn validation(loc: &[&str], msg: impl Into<String>) -> Self {
        Self::Validation(vec![FieldError::new(loc, msg, "value_error")])
    }

    /// The stable machine code.
    pub fn code(&self) -> &'static str {
        match self {
            Self::Unauthorized(_) => "not_authenticated",
            Self::Forbidden(_) => "forbidden",
            Self::NotFound(_) => "not_found",
            Self::BadRequest { code, .. }
            | Self::Conflict { code, .. }
            | Self::Unavailable { code, .. } => code,
            Self::MethodNotAllowed => "method_not_allowed",
            Self::Validation(_) => "validation_error",
            Self::PayloadTooLarge(_) => "payload_too_large",
            Self::RangeNotSatisfiable { .. } => "range_not_satisfiable",
            Self::Internal(_) => "internal_error",
        }
    }

    pub fn status(&self) -> StatusCode {
        match self {
            Self::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            Self::Forbidden(_) => StatusCode::FORBIDDEN,
            Self::NotFound(_) => StatusCode::NOT_FOUND,
            Self::BadRequest { .. } => StatusCode::BAD_REQUEST,
            Self::Conflict { .. } => StatusCode::CONFLICT,
            Self::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            Self::Validation(_) => StatusCode::UNPROCESSABLE_ENTITY,
            Self::PayloadTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            Self::RangeNotSatisfiable { .. } => StatusCode::RANGE_NOT_SATISFIABLE,
            Self::Unavailable { .. } => StatusCode::SERVICE_UNAVAILABLE,
            Self::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

impl From<sqlx::Error> for ApiError {
    fn from(e: sqlx::Error) -> Self {
        Self::Internal(anyhow::Error::new(e).context("database error"))
    }
}

impl From<std::io::Error> for ApiError {
    fn from(e: std::io::Error) -> Self {
        Self::Internal(anyhow::Error::new(e).context("storage error"))
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        let code = self.code();
        let detail = match &self {
            Self::Validation(fields) => json!(fields),
            Self::Internal(e) => {
                // The only place an internal error is logged; the client sees nothing of it.
                tracing::error!(error.cause_chain = ?e, "request failed");
                json!("internal server error")
            }
            other => json!(other.to_string()),
        };
        let mut response =
            (status, axum::Json(json!({"detail": detail, "code": code}))).into_response();
        if matches!(self, Self::Unauthorized(_)) {
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        if let Self::RangeNotSatisfiable { len } = self {
            if let Ok(v) = HeaderValue::from_str(&format!("bytes */{len}")) {
                response.headers_mut().insert(header::CONTENT_RANGE, v);
            }
        }
        response
    }
}

pub type Result<T, E = ApiError> = std::result::Result<T, E>;
