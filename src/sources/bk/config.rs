//! Credentials and retry policy shared by every BlueKing API client.

use std::time::Duration;

use secrecy::SecretString;
use serde::{Deserialize, Serialize};

use crate::{
    config::{secret, FieldErrors},
    tls::ClientTlsConfig,
};

/// `[bk]`: how agentwatch authenticates to the BlueKing API gateway / ESB.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct BkConfig {
    /// Application code registered in BlueKing (`bk_app_code`).
    #[serde(default)]
    pub app_code: String,
    /// Application secret (`bk_app_secret`). Prefer `app_secret_file` or the
    /// `AGENTWATCH__BK__APP_SECRET` environment variable over writing it here.
    #[serde(default, with = "secret::opt")]
    pub app_secret: Option<SecretString>,
    /// File whose content (trimmed) is the app secret, e.g. a mounted Kubernetes Secret.
    #[serde(default)]
    pub app_secret_file: Option<std::path::PathBuf>,
    /// `bk_username` sent in the auth header (app-only calls still name a user).
    #[serde(default = "default_username")]
    pub username: String,
    /// Optional `X-Bk-Tenant-Id` header for multi-tenant BlueKing.
    #[serde(default)]
    pub tenant_id: Option<String>,
    /// `[bk.tls]`: CA bundle, client certificate (mTLS) and minimum version for every
    /// https:// BlueKing upstream (GSE, ESB, NodeMan, CMDB).
    #[serde(default, skip_serializing_if = "ClientTlsConfig::is_default")]
    pub tls: ClientTlsConfig,
}

fn default_username() -> String {
    "admin".to_owned()
}

impl Default for BkConfig {
    fn default() -> Self {
        BkConfig {
            app_code: String::new(),
            app_secret: None,
            app_secret_file: None,
            username: default_username(),
            tenant_id: None,
            tls: ClientTlsConfig::default(),
        }
    }
}

impl BkConfig {
    pub(crate) fn validate(&mut self, errs: &mut FieldErrors) {
        if self.app_secret.is_some() && self.app_secret_file.is_some() {
            errs.push(
                "bk.app_secret_file",
                "set either bk.app_secret or bk.app_secret_file, not both",
            );
        }
        if let Some(path) = &self.app_secret_file {
            match std::fs::read_to_string(path) {
                Ok(s) => self.app_secret = Some(SecretString::from(s.trim().to_owned())),
                Err(e) => errs.push(
                    "bk.app_secret_file",
                    format!("cannot read {}: {e}", path.display()),
                ),
            }
        }
        self.tls.validate("bk.tls", errs);
        if self.app_code.trim().is_empty() {
            errs.push("bk.app_code", "must not be empty");
        }
        if self.app_secret.is_none() {
            errs.push(
                "bk.app_secret",
                "missing: set bk.app_secret, bk.app_secret_file or AGENTWATCH__BK__APP_SECRET",
            );
        }
    }
}

/// Retry policy of one upstream (`[gse.retry]`, `[nodeman.retry]`).
///
/// Timeouts, connection errors, HTTP 5xx and 429 are retried with exponential back-off
/// and full jitter; 429 waits at least `X-Bkapi-RateLimit-Reset` / `Retry-After`.
/// Other 4xx and business errors are never retried.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RetryConfig {
    /// Retries after the first attempt (0 = try once).
    #[serde(default = "default_max_retries")]
    pub max_retries: u32,
    /// First back-off; doubles per retry up to `max_backoff`.
    #[serde(default = "default_initial_backoff", with = "humantime_serde")]
    pub initial_backoff: Duration,
    /// Ceiling for one back-off, also for a server-requested rate-limit wait.
    #[serde(default = "default_max_backoff", with = "humantime_serde")]
    pub max_backoff: Duration,
}

fn default_max_retries() -> u32 {
    3
}
fn default_initial_backoff() -> Duration {
    Duration::from_millis(200)
}
fn default_max_backoff() -> Duration {
    Duration::from_secs(5)
}

impl Default for RetryConfig {
    fn default() -> Self {
        RetryConfig {
            max_retries: default_max_retries(),
            initial_backoff: default_initial_backoff(),
            max_backoff: default_max_backoff(),
        }
    }
}

impl RetryConfig {
    pub(crate) fn validate(&self, prefix: &str, errs: &mut FieldErrors) {
        if self.max_retries > 20 {
            errs.push(format!("{prefix}.max_retries"), "must be at most 20");
        }
        if self.initial_backoff.is_zero() {
            errs.push(
                format!("{prefix}.initial_backoff"),
                "must be greater than 0",
            );
        }
        if self.max_backoff < self.initial_backoff {
            errs.push(
                format!("{prefix}.max_backoff"),
                "must not be smaller than initial_backoff",
            );
        }
    }
}
