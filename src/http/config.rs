//! `[http]`: the metrics / health endpoint and the status query API.

use std::{net::SocketAddr, time::Duration};

use serde::{Deserialize, Serialize};

use crate::{config::FieldErrors, tls::ServerTlsConfig};

/// Upper bound of `max_query_ids`: a batch is answered from memory, but its response
/// still costs ~0.5 KB per entry.
const MAX_QUERY_IDS_LIMIT: usize = 1_000_000;
/// Bounds of `max_body_bytes`.
const MIN_BODY_BYTES: usize = 1024;
const MAX_BODY_BYTES_LIMIT: usize = 256 * 1024 * 1024;
/// Bounds of `header_read_timeout` and `request_timeout`.
const MIN_TIMEOUT: Duration = Duration::from_millis(100);
const MAX_TIMEOUT: Duration = Duration::from_secs(600);
/// Upper bound of `max_connections`: each open connection holds a task and buffers.
const MAX_CONNECTIONS_LIMIT: usize = 100_000;

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct HttpConfig {
    /// Address for `/metrics`, `/healthz`, `/readyz` and the `/api/v1/...` query API.
    /// Use `0.0.0.0:9108` in a pod.
    #[serde(default = "default_listen")]
    pub listen: String,
    /// Most entries (agent ids, hosts or host ids) one `POST /api/v1/agents/status`
    /// may ask for; more is rejected with 413 naming this limit.
    #[serde(default = "default_max_query_ids")]
    pub max_query_ids: usize,
    /// Largest request body the query API reads, in bytes (default 4 MiB: 10,000
    /// 64-byte agent ids take under 1 MiB).
    #[serde(default = "default_max_body_bytes")]
    pub max_body_bytes: usize,
    /// How long a client may take to send a request's headers, counted from its first
    /// byte; a slower one (a "slowloris") has its connection closed. 100ms to 10m.
    #[serde(default = "default_header_read_timeout", with = "humantime_serde")]
    pub header_read_timeout: Duration,
    /// How long one request may take from its headers to the head of the answer (body
    /// upload included); a slower one is answered 408. Must exceed `slot.ack_timeout`
    /// when the slot receiver is on. 100ms to 10m. Streamed answer bodies are not cut.
    #[serde(default = "default_request_timeout", with = "humantime_serde")]
    pub request_timeout: Duration,
    /// Most connections served at once; further clients wait in the listen backlog
    /// until one closes. 1 to 100000.
    #[serde(default = "default_max_connections")]
    pub max_connections: usize,
    /// `[http.tls]`: serve HTTPS (optionally requiring client certificates) instead of
    /// plain HTTP. Leave it out behind a service mesh that already does mTLS.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<ServerTlsConfig>,
}

fn default_listen() -> String {
    "127.0.0.1:9108".to_owned()
}

fn default_max_query_ids() -> usize {
    10_000
}

fn default_max_body_bytes() -> usize {
    4 * 1024 * 1024
}

fn default_header_read_timeout() -> Duration {
    Duration::from_secs(10)
}

fn default_request_timeout() -> Duration {
    Duration::from_secs(60)
}

fn default_max_connections() -> usize {
    1024
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig {
            listen: default_listen(),
            max_query_ids: default_max_query_ids(),
            max_body_bytes: default_max_body_bytes(),
            header_read_timeout: default_header_read_timeout(),
            request_timeout: default_request_timeout(),
            max_connections: default_max_connections(),
            tls: None,
        }
    }
}

impl HttpConfig {
    pub(crate) fn validate(&self, errs: &mut FieldErrors) {
        if self.listen.parse::<SocketAddr>().is_err() {
            errs.push(
                "http.listen",
                format!("\"{}\" is not an address like 127.0.0.1:9108", self.listen),
            );
        }
        if !(1..=MAX_QUERY_IDS_LIMIT).contains(&self.max_query_ids) {
            errs.push(
                "http.max_query_ids",
                format!("must be between 1 and {MAX_QUERY_IDS_LIMIT}"),
            );
        }
        if !(MIN_BODY_BYTES..=MAX_BODY_BYTES_LIMIT).contains(&self.max_body_bytes) {
            errs.push(
                "http.max_body_bytes",
                format!("must be between {MIN_BODY_BYTES} and {MAX_BODY_BYTES_LIMIT} bytes"),
            );
        }
        for (field, value) in [
            ("http.header_read_timeout", self.header_read_timeout),
            ("http.request_timeout", self.request_timeout),
        ] {
            if !(MIN_TIMEOUT..=MAX_TIMEOUT).contains(&value) {
                errs.push(field, "must be between 100ms and 10m");
            }
        }
        if !(1..=MAX_CONNECTIONS_LIMIT).contains(&self.max_connections) {
            errs.push(
                "http.max_connections",
                format!("must be between 1 and {MAX_CONNECTIONS_LIMIT}"),
            );
        }
        if let Some(tls) = &self.tls {
            tls.validate("http.tls", errs);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_limits_outside_their_bounds_are_each_reported() {
        let c = HttpConfig {
            max_query_ids: 0,
            max_body_bytes: 10,
            header_read_timeout: Duration::from_millis(99),
            request_timeout: Duration::from_secs(601),
            max_connections: 0,
            ..HttpConfig::default()
        };
        let mut errs = FieldErrors::default();
        c.validate(&mut errs);
        assert_eq!(
            errs.paths(),
            vec![
                "http.max_query_ids",
                "http.max_body_bytes",
                "http.header_read_timeout",
                "http.request_timeout",
                "http.max_connections"
            ]
        );
        let mut errs = FieldErrors::default();
        HttpConfig::default().validate(&mut errs);
        assert!(errs.is_empty());
    }

    #[test]
    fn each_http_limit_is_accepted_at_its_bound_and_rejected_just_past_it() {
        let at = |c: HttpConfig| {
            let mut errs = FieldErrors::default();
            c.validate(&mut errs);
            errs.paths()
                .into_iter()
                .map(str::to_owned)
                .collect::<Vec<_>>()
        };
        let d = HttpConfig::default;
        let ok: Vec<String> = vec![];
        for c in [
            HttpConfig {
                max_query_ids: MAX_QUERY_IDS_LIMIT,
                ..d()
            },
            HttpConfig {
                max_body_bytes: MIN_BODY_BYTES,
                ..d()
            },
            HttpConfig {
                max_body_bytes: MAX_BODY_BYTES_LIMIT,
                ..d()
            },
            HttpConfig {
                header_read_timeout: MIN_TIMEOUT,
                request_timeout: MAX_TIMEOUT,
                ..d()
            },
            HttpConfig {
                max_connections: MAX_CONNECTIONS_LIMIT,
                ..d()
            },
        ] {
            assert_eq!(at(c), ok);
        }
        assert_eq!(
            at(HttpConfig {
                max_query_ids: MAX_QUERY_IDS_LIMIT + 1,
                ..d()
            }),
            ["http.max_query_ids"]
        );
        assert_eq!(
            at(HttpConfig {
                max_body_bytes: MIN_BODY_BYTES - 1,
                ..d()
            }),
            ["http.max_body_bytes"]
        );
        assert_eq!(
            at(HttpConfig {
                max_body_bytes: MAX_BODY_BYTES_LIMIT + 1,
                ..d()
            }),
            ["http.max_body_bytes"]
        );
        assert_eq!(
            at(HttpConfig {
                header_read_timeout: MAX_TIMEOUT + Duration::from_millis(1),
                ..d()
            }),
            ["http.header_read_timeout"]
        );
        assert_eq!(
            at(HttpConfig {
                request_timeout: MIN_TIMEOUT - Duration::from_millis(1),
                ..d()
            }),
            ["http.request_timeout"]
        );
        assert_eq!(
            at(HttpConfig {
                max_connections: MAX_CONNECTIONS_LIMIT + 1,
                ..d()
            }),
            ["http.max_connections"]
        );
    }
}
