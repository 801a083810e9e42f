//! `[http]`: the metrics / health endpoint.

use std::net::SocketAddr;

use serde::{Deserialize, Serialize};

use crate::config::FieldErrors;

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct HttpConfig {
    /// Address for `/metrics`, `/healthz` and `/readyz`. Use `0.0.0.0:9108` in a pod.
    #[serde(default = "default_listen")]
    pub listen: String,
}

fn default_listen() -> String {
    "127.0.0.1:9108".to_owned()
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig {
            listen: default_listen(),
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
    }
}
