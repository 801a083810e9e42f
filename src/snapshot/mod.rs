//! The in-memory snapshot of every agent and the diff that turns observations into
//! change events.

pub mod diff;
mod status;
mod store;

pub use status::{StatusNames, UNKNOWN};
pub use store::{OutEvent, OutState, Stats, Store, StoreOptions, Work};

/// Namespace of agentwatch event ids (UUIDv5). Never change it: event ids must stay
/// stable across versions so consumers can drop re-deliveries.
const EVENT_ID_NAMESPACE: uuid::Uuid =
    uuid::Uuid::from_u128(0x7a1c_9e0f_4b1d_4c6e_9a57_3f0d_8e21_b6c4);

/// The event id of (agent, seq): a UUIDv5 of `"{agent_id}/{seq}"`.
pub fn event_id(agent_id: &str, seq: u64) -> String {
    let name = format!("{agent_id}/{seq}");
    uuid::Uuid::new_v5(&EVENT_ID_NAMESPACE, name.as_bytes()).to_string()
}
