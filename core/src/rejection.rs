//! Every way a request can be refused, each with a fixed status, a fixed machine-readable
//! code and a message that never repeats a submitted value.

use serde::Serialize;

use crate::limits::{ABUSE_WINDOW_SECONDS, MAX_BODY_BYTES};
use crate::response::Response;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rejection {
    NotFound,
    MethodNotAllowed {
        allow: &'static str,
    },
    UnsupportedMediaType,
    InvalidContentLength,
    PayloadTooLarge,
    IncompleteBody,
    /// The body did not arrive within the server's time limit (the rollback's
    /// `--body-timeout-seconds`; the platform bounds the Worker's).
    BodyTimeout,
    EmptyBody,
    InvalidUtf8,
    InvalidJson,
    NotAnObject,
    DuplicateKey {
        field: Option<&'static str>,
    },
    /// The name is kept only when it is a short plain identifier, so that a response can
    /// say which key was unknown without reflecting arbitrary input.
    UnknownField {
        name: Option<String>,
    },
    MissingField {
        field: &'static str,
    },
    InvalidType {
        field: &'static str,
    },
    InvalidValue {
        field: &'static str,
        rule: &'static str,
    },
    Unauthorized,
    InvalidWeek,
    /// A readout's query holds something other than `by` (a week) or `from` and `to` (a
    /// series), each once, or a `by` that is not a dimension.
    InvalidQuery,
    /// A series whose `from` is after its `to`, or longer than the retention.
    InvalidRange,
    TooManyRequests {
        retry_after_seconds: u64,
    },
    QueueFull {
        retry_after_seconds: u64,
    },
    StoreUnavailable,
    Internal,
}

#[derive(Serialize)]
struct ErrorBody<'a> {
    error: &'a str,
    message: &'a str,
}

impl Rejection {
    pub fn status(&self) -> u16 {
        match self {
            Self::NotFound => 404,
            Self::MethodNotAllowed { .. } => 405,
            Self::UnsupportedMediaType => 415,
            Self::PayloadTooLarge => 413,
            Self::BodyTimeout => 408,
            Self::InvalidContentLength
            | Self::IncompleteBody
            | Self::EmptyBody
            | Self::InvalidUtf8
            | Self::InvalidJson
            | Self::NotAnObject
            | Self::DuplicateKey { .. }
            | Self::UnknownField { .. }
            | Self::MissingField { .. }
            | Self::InvalidType { .. }
            | Self::InvalidValue { .. }
            | Self::InvalidWeek
            | Self::InvalidQuery
            | Self::InvalidRange => 400,
            Self::Unauthorized => 401,
            Self::TooManyRequests { .. } => 429,
            Self::QueueFull { .. } | Self::StoreUnavailable => 503,
            Self::Internal => 500,
        }
    }

    pub fn code(&self) -> &'static str {
        match self {
            Self::NotFound => "not_found",
            Self::MethodNotAllowed { .. } => "method_not_allowed",
            Self::UnsupportedMediaType => "unsupported_media_type",
            Self::InvalidContentLength => "invalid_content_length",
            Self::PayloadTooLarge => "payload_too_large",
            Self::IncompleteBody => "incomplete_body",
            Self::BodyTimeout => "request_timeout",
            Self::EmptyBody => "empty_body",
            Self::InvalidUtf8 => "invalid_utf8",
            Self::InvalidJson => "invalid_json",
            Self::NotAnObject => "not_an_object",
            Self::DuplicateKey { .. } => "duplicate_key",
            Self::UnknownField { .. } => "unknown_field",
            Self::MissingField { .. } => "missing_field",
            Self::InvalidType { .. } => "invalid_type",
            Self::InvalidValue { .. } => "invalid_value",
            Self::Unauthorized => "unauthorized",
            Self::InvalidWeek => "invalid_week",
            Self::InvalidQuery => "invalid_query",
            Self::InvalidRange => "invalid_range",
            Self::TooManyRequests { .. } => "rate_limited",
            Self::QueueFull { .. } => "queue_full",
            Self::StoreUnavailable => "store_unavailable",
            Self::Internal => "internal_error",
        }
    }

    pub fn message(&self) -> String {
        match self {
            Self::NotFound => "no such route".into(),
            Self::MethodNotAllowed { allow } => format!("method not allowed; use {allow}"),
            Self::UnsupportedMediaType => "content-type must be application/json".into(),
            Self::InvalidContentLength => "content-length is not a number".into(),
            Self::PayloadTooLarge => format!("body is larger than {MAX_BODY_BYTES} bytes"),
            Self::IncompleteBody => {
                "body ended before it was complete (short of its content-length, or a broken chunk)"
                    .into()
            }
            Self::BodyTimeout => "body not received in time".into(),
            Self::EmptyBody => "body is empty".into(),
            Self::InvalidUtf8 => "body is not valid UTF-8".into(),
            Self::InvalidJson => "body is not a single valid JSON value".into(),
            Self::NotAnObject => "body must be a JSON object".into(),
            Self::DuplicateKey { field: Some(f) } => format!("duplicate field `{f}`"),
            Self::DuplicateKey { field: None } => "duplicate field".into(),
            Self::UnknownField { name: Some(n) } => format!("unknown field `{n}`"),
            Self::UnknownField { name: None } => "unknown field".into(),
            Self::MissingField { field } => format!("missing field `{field}`"),
            Self::InvalidType { field } => format!("field `{field}` must be a string"),
            Self::InvalidValue { field, rule } => format!("field `{field}` must be {rule}"),
            Self::Unauthorized => "a valid bearer token is required".into(),
            Self::InvalidWeek => "week must be an ISO week such as 2026-W48".into(),
            Self::InvalidQuery => "the query may hold by=<dimension> (one of platform, \
                primary_framework, daemon_version, protocol_version, node_major) on a week, \
                or from=<week>&to=<week> and optionally by=<dimension> on /v1/wau, each once"
                .into(),
            // MAX_SERIES_WEEKS, written out (a test in `readout` holds them equal).
            Self::InvalidRange => "from must not be after to, and a series spans at most \
                105 weeks"
                .into(),
            Self::TooManyRequests { .. } => {
                format!("too many requests; retry after the {ABUSE_WINDOW_SECONDS}-second window")
            }
            Self::QueueFull { .. } => "server is busy; retry later".into(),
            Self::StoreUnavailable => "storage is unavailable; retry later".into(),
            Self::Internal => "internal error".into(),
        }
    }

    /// The response for this rejection, with the headers its status calls for.
    pub fn into_response(self) -> Response {
        let message = self.message();
        let body = ErrorBody {
            error: self.code(),
            message: &message,
        };
        let response = Response::json(self.status(), self.code(), &body);
        match self {
            Self::MethodNotAllowed { allow } => response.with_header("allow", allow),
            Self::Unauthorized => response.with_header("www-authenticate", "Bearer"),
            Self::TooManyRequests {
                retry_after_seconds,
            }
            | Self::QueueFull {
                retry_after_seconds,
            } => response.with_header("retry-after", retry_after_seconds.to_string()),
            Self::StoreUnavailable => response.with_header("retry-after", "5"),
            // The rest of a late body may still come: the connection cannot be reused.
            Self::BodyTimeout => response.with_header("connection", "close"),
            _ => response,
        }
    }
}

impl From<Rejection> for Response {
    fn from(rejection: Rejection) -> Self {
        rejection.into_response()
    }
}
