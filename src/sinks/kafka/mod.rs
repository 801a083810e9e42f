//! The Kafka sink: change events to `kafka.events_topic`, latest state per agent to the
//! compacted `kafka.state_topic`, and the restore of the snapshot from that topic.

mod config;
mod delivery;
pub mod encode;
mod error;
pub mod probe;
pub mod producer;
pub mod restore;
mod sink;
pub mod to_end;
pub mod topics;

pub use config::{Compression, Format, KafkaConfig, OWN_FIELD_OPTIONS, RESERVED_OPTIONS};
pub use error::SinkError;
pub use producer::{client_config, create_producer};
pub use sink::KafkaSink;
