//! `[gse]`: where and how agent status is asked of GSE.

use std::{collections::BTreeMap, time::Duration};

use serde::{Deserialize, Serialize};

use crate::{
    config::{validate_base_url, FieldErrors},
    sources::bk::RetryConfig,
};

/// Which GSE API generation to poll.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum GseApi {
    /// GSE 2.0 `cluster/list_agent_state` (keyed by agent id).
    V2,
    /// GSE 1.x ESB `gse/get_agent_status/` (keyed by cloud:ip). Not yet implemented.
    V1,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct GseConfig {
    /// API generation: "v2" (default) or "v1".
    #[serde(default = "default_api")]
    pub api: GseApi,
    /// GSE 2.0 base URL ending in `api/v2/`, e.g.
    /// `http://bkapi.example.com/api/bk-gse/prod/api/v2/`.
    #[serde(default)]
    pub base_url: String,
    /// Agent ids per `list_agent_state` call (1..=5000; bk-cli caps at 1000).
    #[serde(default = "default_batch_size")]
    pub batch_size: usize,
    /// GSE calls in flight at once.
    #[serde(default = "default_concurrency")]
    pub concurrency: usize,
    /// Timeout of one HTTP call, connect included.
    #[serde(default = "default_timeout", with = "humantime_serde")]
    pub timeout: Duration,
    #[serde(default)]
    pub retry: RetryConfig,
    /// Largest response body accepted, in bytes.
    #[serde(default = "default_max_response_bytes")]
    pub max_response_bytes: usize,
    /// Normalized name per raw `status_code`. The default is the bk-job / bk-monitor
    /// table; NodeMan numbers 5 and 6 the other way round (5 stopped, 6 upgrading), so
    /// override those two keys for a NodeMan-aligned view. Codes not listed are
    /// "unknown". Keys are the integer codes as strings (TOML keys are strings).
    #[serde(default = "default_status_names")]
    pub status_names: BTreeMap<String, String>,
}

fn default_api() -> GseApi {
    GseApi::V2
}
fn default_batch_size() -> usize {
    1000
}
fn default_concurrency() -> usize {
    8
}
fn default_timeout() -> Duration {
    Duration::from_secs(10)
}
fn default_max_response_bytes() -> usize {
    64 * 1024 * 1024
}

pub fn default_status_names() -> BTreeMap<String, String> {
    [
        (-2, "not_found"),
        (-1, "query_failed"),
        (0, "initial"),
        (1, "starting"),
        (2, "running"),
        (3, "lossy"),
        (4, "busy"),
        (5, "upgrading"),
        (6, "stopping"),
        (7, "uninstalled"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_owned()))
    .collect()
}

impl Default for GseConfig {
    fn default() -> Self {
        GseConfig {
            api: default_api(),
            base_url: String::new(),
            batch_size: default_batch_size(),
            concurrency: default_concurrency(),
            timeout: default_timeout(),
            retry: RetryConfig::default(),
            max_response_bytes: default_max_response_bytes(),
            status_names: default_status_names(),
        }
    }
}

impl GseConfig {
    pub(crate) fn validate(&mut self, errs: &mut FieldErrors) {
        if self.api == GseApi::V1 {
            errs.push(
                "gse.api",
                "\"v1\" (GSE 1.x) is not supported yet; use \"v2\"",
            );
        }
        validate_base_url("gse.base_url", &mut self.base_url, errs);
        if !(1..=5000).contains(&self.batch_size) {
            errs.push("gse.batch_size", "must be between 1 and 5000");
        }
        if !(1..=256).contains(&self.concurrency) {
            errs.push("gse.concurrency", "must be between 1 and 256");
        }
        if self.timeout.is_zero() {
            errs.push("gse.timeout", "must be greater than 0");
        }
        if self.max_response_bytes < 1024 {
            errs.push("gse.max_response_bytes", "must be at least 1024");
        }
        for (code, name) in &self.status_names {
            if code.parse::<i32>().is_err() {
                errs.push(
                    format!("gse.status_names.{code}"),
                    "key must be an integer status code",
                );
            }
            if name.is_empty() {
                errs.push(format!("gse.status_names.{code}"), "name must not be empty");
            }
        }
        self.retry.validate("gse.retry", errs);
    }
}
