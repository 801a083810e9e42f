//! GSE: realtime agent status.

pub mod admin;
mod config;
mod info;
pub mod status;
mod v1;
mod v2;

pub use config::{default_status_names, GseApi, GseConfig};
pub(crate) use info::decode_list_agent_info;
pub use info::GseAgentInfo;
pub use status::StatusSource;
pub(crate) use v1::{infos_from_data, statuses_from_data};
pub use v1::{GseV1Client, V1Info, V1Status};
pub use v2::{decode_list_agent_state, GseClient};

/// One agent's status as GSE reports it (2.0 `list_agent_state`, or 1.x
/// `get_agent_status` mapped onto the 2.0 codes).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GseAgentState {
    pub agent_id: String,
    pub cloud_id: i64,
    pub version: String,
    pub run_mode: i32,
    pub status_code: i32,
    /// GSE 1.x only: the raw `bk_agent_alive`.
    pub v1_alive: Option<i32>,
}

/// Status code GSE uses for "this agent is not known".
pub const STATUS_NOT_FOUND: i32 = -2;
/// The only status code every BlueKing consumer treats as alive.
pub const STATUS_RUNNING: i32 = 2;
/// agentwatch's code for GSE 1.x `bk_agent_alive = 0` ("offline"), which has no
/// single GSE 2.0 equivalent. Named `offline` in the default status table.
pub const STATUS_V1_OFFLINE: i32 = -3;
