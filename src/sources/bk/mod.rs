//! The one HTTP client layer every BlueKing API goes through.
//!
//! [`BkClient`] owns everything that is the same for every API: the
//! `X-Bkapi-Authorization` / `X-Bk-Tenant-Id` headers, bounded concurrency, the
//! per-attempt timeout, the response size cap, the envelope check ([`envelope`]),
//! retries with exponential back-off and full jitter (honouring 429 waits), and the
//! `agentwatch_upstream_*` metrics. Each API (GSE `list_agent_state`, NodeMan
//! `host/search`, ...) only builds its request body and names the type of `data`.

mod backoff;
mod client;
mod config;
pub mod envelope;
mod error;

#[cfg(test)]
pub(crate) mod tests;

pub(crate) use client::tls_config;
pub use client::{BkClient, Upstream};
pub use config::{BkConfig, RetryConfig};
pub use envelope::null_as_default;
pub use error::ApiError;
