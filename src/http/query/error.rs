//! Errors of the query API: every one answers a JSON body (schema `Error`) naming a
//! stable machine-readable `code`, a sentence for people, and the shard.

use axum::http::StatusCode;
use serde::Serialize;

use super::render::ShardView;

#[derive(Debug, thiserror::Error)]
pub(super) enum QueryError {
    #[error("agent {0:?} is not in this shard's snapshot")]
    AgentNotFound(String),
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    InvalidCursor(String),
    #[error("the request asks for {asked} entries; the limit is {limit} per request (http.max_query_ids): split it into several requests")]
    TooManyIds { asked: usize, limit: usize },
    #[error("the request body is larger than {limit} bytes (http.max_body_bytes)")]
    BodyTooLarge { limit: usize },
    #[error("cannot read the request body: {0}")]
    Body(String),
    #[error("internal error: {0}")]
    Internal(String),
}

impl QueryError {
    pub(super) fn status(&self) -> StatusCode {
        match self {
            QueryError::AgentNotFound(_) => StatusCode::NOT_FOUND,
            QueryError::BadRequest(_) | QueryError::InvalidCursor(_) | QueryError::Body(_) => {
                StatusCode::BAD_REQUEST
            }
            QueryError::TooManyIds { .. } | QueryError::BodyTooLarge { .. } => {
                StatusCode::PAYLOAD_TOO_LARGE
            }
            QueryError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The `code` field: a closed set a caller can branch on.
    pub(super) fn code(&self) -> &'static str {
        match self {
            QueryError::AgentNotFound(_) => "agent_not_found",
            QueryError::BadRequest(_) => "bad_request",
            QueryError::InvalidCursor(_) => "invalid_cursor",
            QueryError::TooManyIds { .. } => "too_many_ids",
            QueryError::BodyTooLarge { .. } => "body_too_large",
            QueryError::Body(_) => "bad_body",
            QueryError::Internal(_) => "internal",
        }
    }
}

#[derive(Serialize)]
pub(super) struct ErrorBody {
    pub shard: ShardView,
    pub error: ErrorDetail,
}

#[derive(Serialize)]
pub(super) struct ErrorDetail {
    pub code: &'static str,
    pub message: String,
    /// For `too_many_ids`: the configured limit, so a client can split its request.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub limit: Option<usize>,
}

impl ErrorDetail {
    pub(super) fn of(e: &QueryError) -> Self {
        ErrorDetail {
            code: e.code(),
            message: e.to_string(),
            limit: match e {
                QueryError::TooManyIds { limit, .. } | QueryError::BodyTooLarge { limit } => {
                    Some(*limit)
                }
                _ => None,
            },
        }
    }
}
