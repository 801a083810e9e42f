//! The one error type of every BlueKing API call.
//!
//! Every variant produced by a call names the endpoint (`"<upstream> <url>"`, the URL
//! without credentials or query) so a log line says which API failed. No variant ever
//! holds the app secret: it only exists inside the prebuilt auth header.

use std::time::Duration;

/// Why a BlueKing API call failed.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// The client could not be built, or a request could not be formed (bad URL, bad
    /// header value, unserializable body). Never retried; no request was sent.
    #[error("cannot build {upstream} request: {detail}")]
    Build {
        upstream: &'static str,
        detail: String,
    },

    /// No complete response within the per-attempt timeout (connect included).
    #[error("{endpoint}: no complete response within {after:?}")]
    Timeout { endpoint: String, after: Duration },

    /// The connection could not be established (refused, DNS, TLS handshake, ...).
    #[error("{endpoint}: cannot connect: {detail}")]
    Connect {
        endpoint: String,
        /// The innermost cause, e.g. "Connection refused (os error 111)".
        detail: String,
        #[source]
        source: reqwest::Error,
    },

    /// The connection broke while sending the request or reading the response.
    #[error("{endpoint}: connection failed during the call: {detail}")]
    Transport {
        endpoint: String,
        detail: String,
        #[source]
        source: reqwest::Error,
    },

    /// A non-2xx status other than 429. `code` is the gateway's code when the body is
    /// an envelope (e.g. 1640001 bad credentials, 1640301 no permission, 1640401 no
    /// such API).
    #[error("{endpoint}: HTTP {status}{}: {message}", fmt_code(*.code))]
    Http {
        endpoint: String,
        status: u16,
        code: Option<i64>,
        message: String,
    },

    /// HTTP 429. `retry_after` is what `X-Bkapi-RateLimit-Reset` / `Retry-After` asked
    /// for, if anything.
    #[error("{endpoint}: rate limited (HTTP 429{}): {message}", fmt_code(*.code))]
    RateLimited {
        endpoint: String,
        retry_after: Option<Duration>,
        code: Option<i64>,
        message: String,
    },

    /// The envelope reported failure (`result: false`, or no `result` and a non-zero
    /// `code`). `code` is -1 when the envelope carries no numeric code.
    #[error("{endpoint}: API error {code}: {message}")]
    Business {
        endpoint: String,
        code: i64,
        message: String,
    },

    /// The body is not JSON, not an envelope, or `data` does not have the expected
    /// shape; `detail` names the field (e.g. `data[3].status_code: invalid type ...`).
    #[error("{endpoint}: unexpected response: {detail}")]
    Decode { endpoint: String, detail: String },

    /// The answers were individually valid but do not add up (e.g. pages reporting
    /// different totals); the result would be incomplete, so none is returned.
    #[error("{endpoint}: inconsistent response: {detail}")]
    Inconsistent { endpoint: String, detail: String },

    /// The response body is larger than the configured limit; `field` names it
    /// (`gse.max_response_bytes`, ...).
    #[error("{endpoint}: response body larger than {limit} bytes ({field})")]
    TooLarge {
        endpoint: String,
        limit: usize,
        field: &'static str,
    },

    /// The answer announces more items than the configured limit allows (a hostile or
    /// broken `total`/`count` asking for a billion pages); nothing more is fetched.
    #[error(
        "{endpoint}: the answer announces {value} {what}, over the limit of {limit} ({field})"
    )]
    OverLimit {
        endpoint: String,
        what: &'static str,
        value: i64,
        limit: usize,
        field: &'static str,
    },
}

fn fmt_code(code: Option<i64>) -> String {
    code.map(|c| format!(", code {c}")).unwrap_or_default()
}

impl ApiError {
    /// The `outcome` label of `agentwatch_upstream_requests_total` (one of
    /// [`crate::metrics::UPSTREAM_OUTCOMES`]).
    pub fn metric_label(&self) -> &'static str {
        match self {
            ApiError::Timeout { .. } => "timeout",
            // `Build` is never counted (no request is sent); it is grouped with the
            // other "could not talk to the upstream" outcomes for completeness.
            ApiError::Connect { .. } | ApiError::Transport { .. } | ApiError::Build { .. } => {
                "connect"
            }
            ApiError::Http { status, .. } if *status >= 500 => "http_5xx",
            // Any other non-2xx, including an unfollowed 3xx redirect.
            ApiError::Http { .. } => "http_4xx",
            ApiError::RateLimited { .. } => "rate_limited",
            ApiError::Business { .. } => "envelope",
            ApiError::Decode { .. } | ApiError::Inconsistent { .. } => "decode",
            ApiError::TooLarge { .. } | ApiError::OverLimit { .. } => "too_large",
        }
    }

    /// Whether another attempt may succeed: timeouts, connection errors, HTTP 5xx and
    /// 429. Other 4xx, business and decode errors are answers, not accidents.
    pub fn is_retryable(&self) -> bool {
        match self {
            ApiError::Timeout { .. }
            | ApiError::Connect { .. }
            | ApiError::Transport { .. }
            | ApiError::RateLimited { .. } => true,
            ApiError::Http { status, .. } => *status >= 500,
            ApiError::Build { .. }
            | ApiError::Business { .. }
            | ApiError::Decode { .. }
            | ApiError::Inconsistent { .. }
            | ApiError::TooLarge { .. }
            | ApiError::OverLimit { .. } => false,
        }
    }

    /// The BlueKing code, from the envelope of a business error or from a gateway
    /// error body.
    pub fn business_code(&self) -> Option<i64> {
        match self {
            ApiError::Business { code, .. } => Some(*code),
            ApiError::Http { code, .. } | ApiError::RateLimited { code, .. } => *code,
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gateway_error_message_names_endpoint_status_and_code() {
        let e = ApiError::Http {
            endpoint: "gse http://bk/api/v2/cluster/list_agent_state".into(),
            status: 400,
            code: Some(1640001),
            message: "app not found".into(),
        };
        assert_eq!(
            e.to_string(),
            "gse http://bk/api/v2/cluster/list_agent_state: HTTP 400, code 1640001: app not found"
        );
        assert_eq!(e.metric_label(), "http_4xx");
        assert!(!e.is_retryable());
        assert_eq!(e.business_code(), Some(1640001));
    }

    #[test]
    fn server_errors_and_rate_limits_are_retryable_but_answers_are_not() {
        let http = |status| ApiError::Http {
            endpoint: String::new(),
            status,
            code: None,
            message: String::new(),
        };
        assert!(http(502).is_retryable());
        assert_eq!(http(502).metric_label(), "http_5xx");
        assert!(!http(404).is_retryable());
        let limited = ApiError::RateLimited {
            endpoint: String::new(),
            retry_after: None,
            code: Some(1642902),
            message: String::new(),
        };
        assert!(limited.is_retryable());
        assert_eq!(limited.metric_label(), "rate_limited");
        let business = ApiError::Business {
            endpoint: String::new(),
            code: 1011003,
            message: String::new(),
        };
        assert!(!business.is_retryable());
        assert_eq!(business.metric_label(), "envelope");
    }
}
