//! The GSE message slot (bk-api.md B §7): collectors (bkmonitorbeat) send requests to
//! a "slot" through GSE, GSE forwards each one over HTTP, and the answer goes back to
//! the agent through GSE `cluster/dispatch_message` (§1.3).
//!
//! ```text
//!  GSE ──POST /api/v4/bk_gse_slot/──▶ receiver ──produce, await ack──▶ kafka.slot_topic
//!       ◀── data:true only after the ack ┘                                  │
//!                                                                           ▼
//!  agent ◀── cluster/dispatch_message ◀── worker (dedup by message_id, Store lookup)
//! ```
//!
//! - [`receiver`]: token check (constant time), body limit, validation, and a durable
//!   write to Kafka *before* answering `data: true`. If the broker does not acknowledge
//!   within `slot.ack_timeout` the caller gets HTTP 503 and retries; the record key is
//!   the `message_id`, so a retry whose first attempt did land is recognisable.
//! - [`worker`]: consumes the slot topic in consumer group `slot.consumer_group`,
//!   drops duplicates ([`dedup`]), and answers `fetch/host/dataid` ([`content`]).
//!
//! Delivery is at least once end to end: the worker stores a record's offset only after
//! handling it, so a crash in between handles that record again after restart (the
//! in-memory de-duplication does not survive a restart).
//!
//! Test-broker note (CLARIFICATIONS.md): tansu returns nothing for a fetch that starts
//! inside a record batch, which is where a committed offset can point after a restart.
//! The receiver's producer therefore sends every record as its own batch
//! (`batch.num.messages=1`, `linger.ms=0`): every committed offset is a batch boundary.
//! Slot traffic is a few messages per agent per hour, so this costs nothing; on a real
//! Kafka the setting is harmless. Records written to the topic by other producers with
//! multi-record batches would bring the limitation back on tansu.

mod config;
pub mod content;
pub mod dedup;
pub mod receiver;
pub mod worker;

pub use config::{default_data_ids, SlotConfig, MAX_MESSAGE_ID_LEN, MIN_TOKEN_LEN};
pub use content::{decide, Decision, SlotRequest};
pub use receiver::{router, SLOT_PATH};
pub use worker::Worker;

use crate::metrics::Metrics;

/// What became of one slot message: the `result` label of
/// `agentwatch_slot_messages_total` (see [`crate::metrics::SLOT_RESULTS`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SlotResult {
    /// Receiver: written to Kafka and acknowledged; answered `data: true`.
    Accepted,
    /// Receiver: token missing or wrong (HTTP 401).
    Unauthorized,
    /// Receiver: body over `slot.max_body_bytes` (HTTP 413).
    TooLarge,
    /// Receiver: not JSON, or a field missing or malformed (HTTP 400).
    Invalid,
    /// Receiver: the broker did not acknowledge in time (HTTP 503, caller retries).
    KafkaUnavailable,
    /// Worker: a `message_id` already handled within `slot.dedup_window`.
    Duplicate,
    /// Worker: answered through `dispatch_message`.
    Handled,
    /// Worker: `content.type` is not one agentwatch answers.
    UnknownType,
    /// Worker: `content` is not a JSON object with a string `type`, or the record is
    /// not a slot request.
    BadContent,
    /// Worker: the agent is not in the snapshot; no reply is sent (as bk-monitor does),
    /// the collector asks again later.
    UnknownAgent,
    /// Worker: the agent belongs to another shard, whose replica answers it.
    OtherShard,
    /// Worker: `dispatch_message` failed after retries; the message id is not
    /// remembered, so a re-delivery is tried again.
    DispatchFailed,
}

impl SlotResult {
    pub const ALL: [SlotResult; 12] = [
        SlotResult::Accepted,
        SlotResult::Unauthorized,
        SlotResult::TooLarge,
        SlotResult::Invalid,
        SlotResult::KafkaUnavailable,
        SlotResult::Duplicate,
        SlotResult::Handled,
        SlotResult::UnknownType,
        SlotResult::BadContent,
        SlotResult::UnknownAgent,
        SlotResult::OtherShard,
        SlotResult::DispatchFailed,
    ];

    pub fn label(self) -> &'static str {
        match self {
            SlotResult::Accepted => "accepted",
            SlotResult::Unauthorized => "unauthorized",
            SlotResult::TooLarge => "too_large",
            SlotResult::Invalid => "invalid",
            SlotResult::KafkaUnavailable => "kafka_unavailable",
            SlotResult::Duplicate => "duplicate",
            SlotResult::Handled => "handled",
            SlotResult::UnknownType => "unknown_type",
            SlotResult::BadContent => "bad_content",
            SlotResult::UnknownAgent => "unknown_agent",
            SlotResult::OtherShard => "other_shard",
            SlotResult::DispatchFailed => "dispatch_failed",
        }
    }

    pub(crate) fn count(self, metrics: &Metrics) {
        metrics
            .slot_messages_total
            .with_label_values(&[self.label()])
            .inc();
    }
}

/// Errors setting up the slot receiver or worker.
#[derive(Debug, thiserror::Error)]
pub enum SlotError {
    #[error("cannot create the slot Kafka client: {0}")]
    Kafka(#[source] rdkafka::error::KafkaError),
    #[error("cannot subscribe to slot topic {topic}: {source}")]
    Subscribe {
        topic: String,
        #[source]
        source: rdkafka::error::KafkaError,
    },
    #[error("cannot set up the GSE client for dispatch_message: {0}")]
    Api(#[from] crate::sources::bk::ApiError),
    /// Validation guarantees these when `slot.enabled`; a caller that skipped it gets
    /// this instead of a panic.
    #[error("{0} is not set")]
    NotConfigured(&'static str),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_result_label_is_in_the_metrics_closed_set() {
        let labels: Vec<&str> = SlotResult::ALL.iter().map(|r| r.label()).collect();
        assert_eq!(labels, crate::metrics::SLOT_RESULTS);
    }
}
