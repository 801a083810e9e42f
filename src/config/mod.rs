//! The service configuration: one TOML file, every key overridable from the
//! environment as `AGENTWATCH__SECTION__KEY`.
//!
//! Each component owns its `XxxConfig` (beside its code); this module assembles them,
//! loads and validates the whole, and reports *every* bad field at once.

mod errors;
mod load;
pub mod secret;

use std::time::Duration;

use serde::{Deserialize, Serialize};

pub use errors::{ConfigError, FieldError, FieldErrors};
pub use load::{load, load_str};

use crate::{
    http::HttpConfig,
    poller::PollConfig,
    sinks::kafka::KafkaConfig,
    sources::{
        bk::BkConfig,
        cmdb::CmdbConfig,
        gse::GseConfig,
        inventory::{InventoryConfig, SourceKind},
        nodeman::NodemanConfig,
    },
};

/// The whole configuration. See `agentwatch.example.toml` for an annotated example.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default)]
    pub bk: BkConfig,
    #[serde(default)]
    pub gse: GseConfig,
    #[serde(default)]
    pub nodeman: NodemanConfig,
    #[serde(default)]
    pub inventory: InventoryConfig,
    #[serde(default)]
    pub cmdb: CmdbConfig,
    #[serde(default)]
    pub poll: PollConfig,
    #[serde(default)]
    pub kafka: KafkaConfig,
    #[serde(default)]
    pub http: HttpConfig,
    #[serde(default)]
    pub shard: crate::shard::ShardConfig,
    #[serde(default)]
    pub shutdown: ShutdownConfig,
    #[serde(default)]
    pub slot: crate::slot::SlotConfig,
    #[serde(default)]
    pub log: LogConfig,
}

impl Config {
    /// Checks every field, resolving file-based secrets; returns every problem found.
    pub fn validate(&mut self) -> Result<(), FieldErrors> {
        let mut errs = FieldErrors::default();
        self.bk.validate(&mut errs);
        self.gse.validate(&mut errs);
        let source = self.inventory.source;
        self.inventory.validate(&mut errs);
        self.nodeman.validate(
            source == SourceKind::Nodeman || self.nodeman.plugins,
            &mut errs,
        );
        self.cmdb.validate(source == SourceKind::Cmdb, &mut errs);
        self.poll.validate(&mut errs);
        self.kafka.validate(&mut errs);
        self.kafka.resolve_option_files(&mut errs);
        self.http.validate(&mut errs);
        self.shard.validate(&mut errs);
        self.shutdown.validate(&mut errs);
        self.slot.validate(&self.gse, &mut errs);
        // A slot request waits up to `ack_timeout` (+0.5s) for the broker; the request
        // timeout must not cut that answer short, or GSE sees 408 for stored messages.
        if self.slot.enabled
            && self.http.request_timeout <= self.slot.ack_timeout + Duration::from_secs(1)
        {
            errs.push(
                "http.request_timeout",
                "must be more than slot.ack_timeout + 1s when the slot receiver is enabled",
            );
        }
        errs.into_result()
    }

    /// The effective configuration as TOML, secrets replaced by `***`.
    pub fn to_masked_toml(&self) -> String {
        // Secrets serialize masked (see `secret`), so plain serialization is safe.
        toml::to_string_pretty(self).unwrap_or_else(|e| format!("# cannot render: {e}\n"))
    }
}

/// `[shutdown]`
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ShutdownConfig {
    /// How long SIGTERM/SIGINT waits for pending produces to be acknowledged before
    /// exiting. Whatever is not flushed is re-emitted on the next start.
    #[serde(default = "default_grace", with = "humantime_serde")]
    pub grace: Duration,
}

fn default_grace() -> Duration {
    Duration::from_secs(20)
}

impl Default for ShutdownConfig {
    fn default() -> Self {
        ShutdownConfig {
            grace: default_grace(),
        }
    }
}

impl ShutdownConfig {
    fn validate(&self, errs: &mut FieldErrors) {
        if self.grace > Duration::from_secs(3600) {
            errs.push("shutdown.grace", "must be at most 1h");
        }
    }
}

/// `[log]`
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct LogConfig {
    /// "text" (default) or "json" (one JSON object per line).
    #[serde(default)]
    pub format: LogFormat,
    /// A tracing filter, e.g. "info" or "agentwatch=debug,rdkafka=warn". `RUST_LOG`
    /// overrides it.
    #[serde(default = "default_level")]
    pub level: String,
}

fn default_level() -> String {
    "info".to_owned()
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            format: LogFormat::Text,
            level: default_level(),
        }
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

/// Checks an upstream base URL and normalizes it to end with `/`, so relative API
/// paths can be joined to it.
pub(crate) fn validate_base_url(path: &str, url: &mut String, errs: &mut FieldErrors) {
    if url.is_empty() {
        errs.push(path, "must be set (an http:// or https:// URL)");
        return;
    }
    match reqwest::Url::parse(url) {
        Ok(u) if u.scheme() == "http" || u.scheme() == "https" => {
            if !url.ends_with('/') {
                url.push('/');
            }
        }
        Ok(u) => errs.push(
            path,
            format!("scheme must be http or https, not {}", u.scheme()),
        ),
        Err(e) => errs.push(path, format!("not a URL: {e}")),
    }
}

#[cfg(test)]
mod tests;
