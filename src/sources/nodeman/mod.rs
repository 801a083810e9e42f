//! NodeMan: the default host inventory.

mod config;
mod host_search;
mod plugins;

pub use config::NodemanConfig;
pub use host_search::NodemanClient;
pub(crate) use host_search::{collect_bodies, WireHost};
pub(crate) use plugins::{select_plugins, WireHostPlugins};
pub use plugins::{HostPlugins, Plugin};
