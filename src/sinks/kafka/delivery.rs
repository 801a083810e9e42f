//! The sink's producer: librdkafka's delivery reports come back through a callback
//! into one channel, rather than through a future per record.
//!
//! Why: a future per record (`FutureProducer`) costs a oneshot channel, a boxed future
//! and a task wake-up for every record, and the sink produces two records per change
//! (event, then state). Measured on the 2-core machine of docs/performance.md with the
//! sink's settings, plain librdkafka + tansu reach 532k records/s with a future per
//! record and 687k/s with a callback. Here each record carries one box (what the sink
//! needs to handle the answer), and the reports arrive in batches on one channel.

use rdkafka::{
    error::KafkaError,
    producer::{DeliveryResult, ProducerContext, ThreadedProducer},
    ClientContext,
};
use tokio::sync::mpsc;

use super::{producer::producer_config, KafkaConfig, SinkError};
use crate::snapshot::Work;

/// What the sink attaches to a record, handed back with the broker's answer.
#[derive(Debug)]
pub(super) struct Sent {
    pub(super) work: Work,
    /// Payload + key bytes, for `kafka.max_in_flight_bytes`.
    pub(super) bytes: usize,
    /// The event's op (metric label); 0 for state records.
    pub(super) op: i32,
    /// Which of the sink's producers took it (they are numbered as they are
    /// replaced): a failure reported by a producer already replaced says nothing about
    /// the current one.
    pub(super) generation: u64,
}

/// The broker's answer for one record.
#[derive(Debug)]
pub(super) struct Done {
    pub(super) sent: Sent,
    pub(super) result: Result<(), KafkaError>,
}

/// Forwards every delivery report to the sink. librdkafka reports each record it
/// accepted once: acknowledged, failed, or purged. A report not served before the
/// client is destroyed would be lost with its `Sent` (the agent's record would stay in
/// flight for good), so a producer being replaced is purged and drained of its reports
/// before it is dropped (`KafkaSink::retire`).
pub(super) struct Deliveries {
    tx: mpsc::UnboundedSender<Done>,
}

impl ClientContext for Deliveries {}

impl ProducerContext for Deliveries {
    type DeliveryOpaque = Box<Sent>;

    fn delivery(&self, result: &DeliveryResult<'_>, sent: Box<Sent>) {
        let result = match result {
            Ok(_) => Ok(()),
            Err((e, _)) => Err(e.clone()),
        };
        // A closed channel means the sink has finished; nobody is left to tell.
        let _ = self.tx.send(Done {
            sent: *sent,
            result,
        });
    }
}

pub(super) type SinkProducer = ThreadedProducer<Deliveries>;

/// A producer with the sink's settings ([`producer_config`]) whose reports go to `tx`.
pub(super) fn create(
    cfg: &KafkaConfig,
    tx: mpsc::UnboundedSender<Done>,
) -> Result<SinkProducer, SinkError> {
    producer_config(cfg)
        .create_with_context(Deliveries { tx })
        .map_err(SinkError::Client)
}
