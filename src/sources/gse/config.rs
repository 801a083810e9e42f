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
    /// GSE 1.x ESB `gse/get_agent_status/` (keyed by cloud:ip, IPv4 only).
    V1,
    /// Try v2; when its endpoint does not exist (HTTP 404 / gateway API_NOT_FOUND
    /// 1640401) fall back to v1 for the rest of the process's life.
    Auto,
}

impl GseApi {
    pub fn label(self) -> &'static str {
        match self {
            GseApi::V2 => "v2",
            GseApi::V1 => "v1",
            GseApi::Auto => "auto",
        }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct GseConfig {
    /// API generation: "v2" (default) or "v1".
    #[serde(default = "default_api")]
    pub api: GseApi,
    /// GSE 2.0 base URL ending in `api/v2/`, e.g.
    /// `http://bkapi.example.com/api/bk-gse/prod/api/v2/`. Required for "v2"/"auto".
    #[serde(default)]
    pub base_url: String,
    /// GSE 1.x ESB base ending in `gse/`, e.g.
    /// `http://paas.example.com/api/c/compapi/v2/gse/`; `get_agent_status/` and
    /// `get_agent_info/` are appended. Required for "v1"/"auto".
    #[serde(default)]
    pub esb_base_url: String,
    /// `bk_supplier_account` sent to GSE 1.x (BlueKing's default developer account).
    #[serde(default = "default_supplier")]
    pub bk_supplier_account: String,
    /// Also poll agent details (v2 `cluster/list_agent_info`, v1 `get_agent_info/`) on
    /// `agent_info_interval`: parent (proxy) IP/port, heartbeat time, start time,
    /// CPU/memory usage.
    #[serde(default)]
    pub agent_info: bool,
    #[serde(default = "default_agent_info_interval", with = "humantime_serde")]
    pub agent_info_interval: std::time::Duration,
    /// Agent-info fields whose change is an update event: any of parent_ip,
    /// parent_port, report_time, start_time, cpu_rate, mem_rate. The rest are carried
    /// in events without producing any (so CPU usage does not make an event per sweep).
    #[serde(default = "default_tracked_info")]
    pub tracked_info_fields: Vec<String>,
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
fn default_supplier() -> String {
    "0".to_owned()
}
fn default_agent_info_interval() -> Duration {
    Duration::from_secs(60)
}
fn default_tracked_info() -> Vec<String> {
    ["parent_ip", "parent_port", "start_time"]
        .map(str::to_owned)
        .to_vec()
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
        (-3, "offline"),
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
            esb_base_url: String::new(),
            bk_supplier_account: default_supplier(),
            agent_info: false,
            agent_info_interval: default_agent_info_interval(),
            tracked_info_fields: default_tracked_info(),
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
        if self.api != GseApi::V1 {
            validate_base_url("gse.base_url", &mut self.base_url, errs);
        }
        if self.api != GseApi::V2 {
            validate_base_url("gse.esb_base_url", &mut self.esb_base_url, errs);
        }
        for f in &self.tracked_info_fields {
            if !crate::snapshot::diff::INFO_FIELDS.contains(&f.as_str()) {
                errs.push(
                    "gse.tracked_info_fields",
                    format!(
                        "unknown field \"{f}\"; allowed: {}",
                        crate::snapshot::diff::INFO_FIELDS.join(", ")
                    ),
                );
            }
        }
        if self.agent_info && self.agent_info_interval < Duration::from_secs(1) {
            errs.push("gse.agent_info_interval", "must be at least 1s");
        }
        if !(1..=5000).contains(&self.batch_size) {
            errs.push("gse.batch_size", "must be between 1 and 5000");
        }
        if !(1..=256).contains(&self.concurrency) {
            errs.push("gse.concurrency", "must be between 1 and 256");
        }
        crate::sources::validate_call_limits("gse", self.timeout, self.max_response_bytes, errs);
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
