//! NodeMan: the default host inventory.

mod config;
mod host_search;

pub use config::NodemanConfig;
pub use host_search::NodemanClient;
