//! NodeMan: the default host inventory.

mod config;
mod host_search;
mod plugins;

pub use config::NodemanConfig;
pub use host_search::NodemanClient;
pub use plugins::{HostPlugins, Plugin};
