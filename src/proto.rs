//! Generated types of `proto/agentwatch/v1/events.proto` (prost + pbjson serde).
#![allow(clippy::all, missing_docs)]

pub mod v1 {
    include!(concat!(env!("OUT_DIR"), "/agentwatch.v1.rs"));
    include!(concat!(env!("OUT_DIR"), "/agentwatch.v1.serde.rs"));
}

/// The compiled descriptor set of the published schema, for consumers and tests that
/// decode events dynamically.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/agentwatch_descriptor.bin"));
