//! The HTTP endpoint: `/metrics`, `/healthz`, `/readyz`, and the status query API
//! (`/api/v1/...`, see [`query`]).

mod config;
pub mod query;
mod server;

pub use config::HttpConfig;
pub use query::{QueryOptions, ShardInfo};
pub use server::{router, serve, Health, ServerLimits};
