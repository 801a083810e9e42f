//! The in-memory snapshot of every agent and the diff that turns observations into
//! change events.

mod compact;
pub mod diff;
mod entry;
mod query;
mod status;
mod store;
pub mod view;

pub use query::{AgentIndex, AgentRecord, ListFilter, PageWalk, Summary};
pub use status::{StatusNames, UNKNOWN};
pub use store::{OutEvent, OutState, Stats, Store, StoreOptions, Work};

/// Namespace of agentwatch event ids (UUIDv5). Never change it: event ids must stay
/// stable across versions so consumers can drop re-deliveries.
const EVENT_ID_NAMESPACE: uuid::Uuid =
    uuid::Uuid::from_u128(0x7a1c_9e0f_4b1d_4c6e_9a57_3f0d_8e21_b6c4);

/// The event id of (agent, incarnation, seq): a UUIDv5 of
/// `"{agent_id}/{incarnation_ms}/{seq}"`.
pub fn event_id(agent_id: &str, incarnation_ms: i64, seq: u64) -> String {
    let mut out = String::new();
    event_id_into(agent_id, incarnation_ms, seq, &mut out);
    out
}

/// [`event_id`] written over `out` (its buffer reused; the name is built on the stack
/// unless the agent id is unusually long).
pub fn event_id_into(agent_id: &str, incarnation_ms: i64, seq: u64, out: &mut String) {
    use std::io::Write;
    let mut buf = [0u8; 256];
    let mut w = &mut buf[..];
    let id = match write!(w, "{agent_id}/{incarnation_ms}/{seq}") {
        Ok(()) => {
            let len = 256 - w.len();
            uuid::Uuid::new_v5(&EVENT_ID_NAMESPACE, &buf[..len])
        }
        Err(_) => {
            let name = format!("{agent_id}/{incarnation_ms}/{seq}");
            uuid::Uuid::new_v5(&EVENT_ID_NAMESPACE, name.as_bytes())
        }
    };
    out.clear();
    out.push_str(
        id.hyphenated()
            .encode_lower(&mut uuid::Uuid::encode_buffer()),
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Event ids are a public contract: the same text as `Uuid::new_v5` of the name,
    /// for ids that fit the stack buffer and for longer ones, and into a used buffer.
    #[test]
    fn event_ids_are_the_uuid_v5_of_agent_incarnation_and_seq() {
        let long = "x".repeat(300);
        let mut out = "left over from before".to_owned();
        for id in ["0200000000abc", long.as_str(), ""] {
            let name = format!("{id}/1700000000000/42");
            let want = uuid::Uuid::new_v5(&EVENT_ID_NAMESPACE, name.as_bytes()).to_string();
            assert_eq!(event_id(id, 1_700_000_000_000, 42), want);
            event_id_into(id, 1_700_000_000_000, 42, &mut out);
            assert_eq!(out, want);
        }
        // Pinned (Python's `uuid.uuid5` of the same namespace and name): a change of
        // namespace or name format fails here.
        assert_eq!(
            event_id("a", 1_700_000_000_000, 42),
            "4895ad5a-7c6f-562e-ad44-5d3fdb7ef2fb"
        );
    }
}
