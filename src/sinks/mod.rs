//! Sinks: where change events go. Today only Kafka.

pub mod kafka;
