//! `[http]`: the metrics / health endpoint and the status query API.

use std::net::SocketAddr;

use serde::{Deserialize, Serialize};

use crate::{config::FieldErrors, tls::ServerTlsConfig};

/// Upper bound of `max_query_ids`: a batch is answered from memory, but its response
/// still costs ~0.5 KB per entry.
const MAX_QUERY_IDS_LIMIT: usize = 1_000_000;
/// Bounds of `max_body_bytes`.
const MIN_BODY_BYTES: usize = 1024;
const MAX_BODY_BYTES_LIMIT: usize = 256 * 1024 * 1024;

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

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig {
            listen: default_listen(),
            max_query_ids: default_max_query_ids(),
            max_body_bytes: default_max_body_bytes(),
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
            ..HttpConfig::default()
        };
        let mut errs = FieldErrors::default();
        c.validate(&mut errs);
        assert_eq!(
            errs.paths(),
            vec!["http.max_query_ids", "http.max_body_bytes"]
        );
        let mut errs = FieldErrors::default();
        HttpConfig::default().validate(&mut errs);
        assert!(errs.is_empty());
    }
}
