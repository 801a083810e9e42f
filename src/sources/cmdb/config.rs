//! `[cmdb]`: the CMDB host inventory (`inventory.source = "cmdb"`).

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::{
    config::{validate_base_url, FieldErrors},
    sources::bk::RetryConfig,
};

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct CmdbConfig {
    /// CMDB base URL, e.g. `http://bkapi.example.com/api/bk-cmdb/prod/` (gateway) or
    /// `http://paas.example.com/api/c/compapi/v2/cc/` (ESB).
    #[serde(default)]
    pub base_url: String,
    /// Businesses to list with `list_biz_hosts`; empty = every host through
    /// `list_hosts_without_biz`.
    #[serde(default)]
    pub biz_ids: Vec<i64>,
    /// Path of the all-hosts call relative to `base_url`. Gateway and ESB paths differ
    /// between BlueKing versions (unconfirmed which needs which), so it is
    /// configurable: gateway `api/v3/hosts/list_hosts_without_app`, bk-cli
    /// `api/v3/open/hosts/list_hosts_without_app`, ESB `list_hosts_without_biz/`.
    #[serde(default = "default_without_biz_path")]
    pub list_hosts_without_biz_path: String,
    /// Path of the per-business call; `{bk_biz_id}` is replaced. Gateway
    /// `api/v3/hosts/app/{bk_biz_id}/list_hosts`, ESB `list_biz_hosts/` (the biz id is
    /// then sent in the body as well, always).
    #[serde(default = "default_biz_path")]
    pub list_biz_hosts_path: String,
    /// Hosts per page (CMDB allows at most 500).
    #[serde(default = "default_page_size")]
    pub page_size: usize,
    /// Pages fetched at once after the first call told the count.
    #[serde(default = "default_concurrency")]
    pub concurrency: usize,
    /// `bk_supplier_account` sent in every body.
    #[serde(default = "default_supplier")]
    pub bk_supplier_account: String,
    #[serde(default = "default_timeout", with = "humantime_serde")]
    pub timeout: Duration,
    #[serde(default)]
    pub retry: RetryConfig,
    #[serde(default = "default_max_response_bytes")]
    pub max_response_bytes: usize,
    /// Most hosts the inventory may hold: a listing whose `count` (or the businesses'
    /// counts together) is larger fails the refresh before any further page is fetched
    /// (the last inventory is kept). 1 to 50,000,000.
    #[serde(default = "default_max_hosts")]
    pub max_hosts: usize,
}

fn default_without_biz_path() -> String {
    "api/v3/hosts/list_hosts_without_app".to_owned()
}
fn default_biz_path() -> String {
    "api/v3/hosts/app/{bk_biz_id}/list_hosts".to_owned()
}
fn default_page_size() -> usize {
    500
}
fn default_concurrency() -> usize {
    8
}
fn default_supplier() -> String {
    "0".to_owned()
}
fn default_timeout() -> Duration {
    Duration::from_secs(30)
}
fn default_max_response_bytes() -> usize {
    64 * 1024 * 1024
}
fn default_max_hosts() -> usize {
    crate::sources::DEFAULT_MAX_HOSTS
}

impl Default for CmdbConfig {
    fn default() -> Self {
        CmdbConfig {
            base_url: String::new(),
            biz_ids: Vec::new(),
            list_hosts_without_biz_path: default_without_biz_path(),
            list_biz_hosts_path: default_biz_path(),
            page_size: default_page_size(),
            concurrency: default_concurrency(),
            bk_supplier_account: default_supplier(),
            timeout: default_timeout(),
            retry: RetryConfig::default(),
            max_response_bytes: default_max_response_bytes(),
            max_hosts: default_max_hosts(),
        }
    }
}

impl CmdbConfig {
    pub(crate) fn validate(&mut self, required: bool, errs: &mut FieldErrors) {
        if !required {
            return;
        }
        validate_base_url("cmdb.base_url", &mut self.base_url, errs);
        if !(1..=500).contains(&self.page_size) {
            errs.push("cmdb.page_size", "must be between 1 and 500 (CMDB's limit)");
        }
        if !(1..=64).contains(&self.concurrency) {
            errs.push("cmdb.concurrency", "must be between 1 and 64");
        }
        crate::sources::validate_max_hosts("cmdb.max_hosts", self.max_hosts, errs);
        if !self.list_biz_hosts_path.contains("{bk_biz_id}")
            && !self.list_biz_hosts_path.ends_with('/')
        {
            errs.push(
                "cmdb.list_biz_hosts_path",
                "must contain {bk_biz_id} (gateway) or end with '/' (ESB)",
            );
        }
        crate::sources::validate_call_limits("cmdb", self.timeout, self.max_response_bytes, errs);
        self.retry.validate("cmdb.retry", errs);
    }
}
