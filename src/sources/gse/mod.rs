//! GSE: realtime agent status.

mod config;
mod v2;

pub use config::{default_status_names, GseApi, GseConfig};
pub use v2::GseClient;

/// One agent's status as GSE 2.0 `list_agent_state` reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GseAgentState {
    pub agent_id: String,
    pub cloud_id: i64,
    pub version: String,
    pub run_mode: i32,
    pub status_code: i32,
}

/// Status code GSE uses for "this agent is not known".
pub const STATUS_NOT_FOUND: i32 = -2;
/// The only status code every BlueKing consumer treats as alive.
pub const STATUS_RUNNING: i32 = 2;
