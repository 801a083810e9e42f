//! `[nodeman]`: the NodeMan host inventory.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::{
    config::{validate_base_url, FieldErrors},
    sources::bk::RetryConfig,
};

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct NodemanConfig {
    /// NodeMan base URL, e.g. `http://bkapi.example.com/api/bk-nodeman/prod/`;
    /// `api/host/search/` is appended.
    #[serde(default)]
    pub base_url: String,
    /// Hosts per `api/host/search/` page.
    #[serde(default = "default_page_size")]
    pub page_size: usize,
    /// Pages fetched at once after the first page told the total.
    #[serde(default = "default_concurrency")]
    pub concurrency: usize,
    /// Timeout of one HTTP call (NodeMan is slow on large pages; BlueKing uses 300 s).
    #[serde(default = "default_timeout", with = "humantime_serde")]
    pub timeout: Duration,
    #[serde(default)]
    pub retry: RetryConfig,
    /// Largest response body accepted, in bytes.
    #[serde(default = "default_max_response_bytes")]
    pub max_response_bytes: usize,
    /// Most hosts one listing may announce (page 1's `total`). A larger total fails the
    /// refresh before any further page is fetched (the last inventory is kept), so a
    /// broken or hostile answer cannot ask for a billion pages. 1 to 50,000,000.
    #[serde(default = "default_max_hosts")]
    pub max_hosts: usize,
    /// Also poll `api/plugin/search/` with every inventory refresh and put each host's
    /// plugin status/version in `AgentState.plugins`.
    #[serde(default)]
    pub plugins: bool,
    /// Only these plugins (e.g. ["bkmonitorbeat", "bkunifylogbeat"]); empty = all.
    #[serde(default)]
    pub plugin_names: Vec<String>,
}

fn default_page_size() -> usize {
    500
}
fn default_concurrency() -> usize {
    4
}
fn default_timeout() -> Duration {
    Duration::from_secs(60)
}
fn default_max_response_bytes() -> usize {
    64 * 1024 * 1024
}
fn default_max_hosts() -> usize {
    crate::sources::DEFAULT_MAX_HOSTS
}

impl Default for NodemanConfig {
    fn default() -> Self {
        NodemanConfig {
            base_url: String::new(),
            page_size: default_page_size(),
            concurrency: default_concurrency(),
            timeout: default_timeout(),
            retry: RetryConfig::default(),
            max_response_bytes: default_max_response_bytes(),
            max_hosts: default_max_hosts(),
            plugins: false,
            plugin_names: Vec::new(),
        }
    }
}

impl NodemanConfig {
    /// `required`: NodeMan is the inventory or plugin polling is on.
    pub(crate) fn validate(&mut self, required: bool, errs: &mut FieldErrors) {
        if required || !self.base_url.is_empty() {
            validate_base_url("nodeman.base_url", &mut self.base_url, errs);
        }
        if !(1..=10_000).contains(&self.page_size) {
            errs.push("nodeman.page_size", "must be between 1 and 10000");
        }
        if !(1..=64).contains(&self.concurrency) {
            errs.push("nodeman.concurrency", "must be between 1 and 64");
        }
        crate::sources::validate_call_limits(
            "nodeman",
            self.timeout,
            self.max_response_bytes,
            errs,
        );
        crate::sources::validate_max_hosts("nodeman.max_hosts", self.max_hosts, errs);
        self.retry.validate("nodeman.retry", errs);
    }
}
