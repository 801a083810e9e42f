//! Sources: where agent state comes from.
//!
//! - [`bk`]: the one HTTP client layer every BlueKing API goes through (auth header,
//!   envelope check, timeout, retries with back-off and jitter, 429, concurrency).
//! - [`nodeman`]: the host inventory (`api/host/search/`).
//! - [`gse`]: realtime agent status (`cluster/list_agent_state`).
//! - [`inventory`]: the host model and the agent id rule.

pub mod bk;
pub mod cmdb;
pub mod gse;
pub mod inventory;
pub mod nodeman;
