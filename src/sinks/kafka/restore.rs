//! Start-up restore: rebuild the snapshot from the compacted state topic before the
//! first sweep, so the first diff is against what consumers already know.
//!
//! How the read finds the end of the topic is in [`to_end`](super::to_end).

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use rdkafka::{
    consumer::{BaseConsumer, Consumer, ConsumerContext},
    message::{BorrowedMessage, Headers, Message},
};

use super::{client_config, encode, to_end, KafkaConfig, SinkError};
use crate::{shard::Shard, snapshot::Store};

/// What the restore read.
#[derive(Debug, Default, Clone)]
pub struct RestoreReport {
    pub records: u64,
    pub tombstones: u64,
    /// Records that could not be decoded (logged with partition and offset each).
    pub invalid: u64,
    pub agents: usize,
    /// Records of agents owned by other shards (skipped).
    pub other_shards: u64,
    pub elapsed: Duration,
}

/// Reads the state topic from the beginning to its end into `store`.
pub async fn restore(
    cfg: &KafkaConfig,
    store: Arc<Store>,
    shard: Shard,
    timeout: Duration,
) -> Result<RestoreReport, SinkError> {
    let cfg = cfg.clone();
    tokio::task::spawn_blocking(move || restore_blocking(&cfg, &store, shard, timeout))
        .await
        .map_err(|e| SinkError::Restore {
            topic: String::new(),
            detail: e.to_string(),
        })?
}

fn restore_blocking(
    cfg: &KafkaConfig,
    store: &Store,
    shard: Shard,
    timeout: Duration,
) -> Result<RestoreReport, SinkError> {
    let topic = cfg.state_topic.as_str();
    let mut client = client_config(cfg);
    // librdkafka stops fetching a partition whose local queue is full and, by default,
    // waits a whole second before fetching it again: a restore that decodes as fast as
    // it reads then idled most of the time (1M agents: 8.5 s → 2.5 s). And the end of
    // a partition is only known once a fetch comes back empty, which the broker holds
    // for `fetch.wait.max.ms` (500 ms by default). Unless the user chose otherwise.
    for (key, value) in [
        ("fetch.queue.backoff.ms", "10"),
        ("fetch.wait.max.ms", "100"),
    ] {
        if !cfg.options.contains_key(key) {
            client.set(key, value);
        }
    }
    let consumer = to_end::consumer(client, "agentwatch-restore").map_err(SinkError::Client)?;
    let meta = consumer
        .fetch_metadata(Some(topic), Duration::from_secs(10))
        .map_err(|source| SinkError::Metadata {
            topic: topic.to_owned(),
            source,
        })?;
    let partitions: Vec<i32> = meta
        .topics()
        .iter()
        .filter(|t| t.name() == topic && t.error().is_none())
        .flat_map(|t| t.partitions().iter().map(|p| p.id()))
        .collect();
    if partitions.is_empty() {
        return Err(SinkError::TopicMissing {
            topic: topic.to_owned(),
        });
    }
    to_end::assign_from_beginning(&consumer, topic, &partitions).map_err(SinkError::Client)?;
    let start = Instant::now();
    reserve_for(&consumer, topic, &partitions, shard, store);

    let mut report = RestoreReport::default();
    let progress = |p: to_end::Progress| {
        tracing::info!(
            topic,
            records = p.records,
            agents = store.len(),
            partitions_done = p.partitions_done,
            partitions = partitions.len(),
            "restoring state"
        );
    };
    report.records = to_end::read(
        &consumer,
        partitions.len(),
        start,
        timeout,
        progress,
        |msg| match msg {
            Ok(msg) => restore_one(cfg, store, shard, &msg, &mut report),
            Err(e) => tracing::warn!(topic, error = %e, "error while restoring; retrying"),
        },
    )
    .map_err(|to_end::TimedOut| SinkError::RestoreTimeout {
        topic: topic.to_owned(),
        timeout,
    })?;
    report.agents = store.len();
    report.elapsed = start.elapsed();
    Ok(report)
}

/// Restores one state record into `store`, counting what it was in `report`.
fn restore_one(
    cfg: &KafkaConfig,
    store: &Store,
    shard: Shard,
    msg: &BorrowedMessage<'_>,
    report: &mut RestoreReport,
) {
    let topic = cfg.state_topic.as_str();
    // Counts the record as invalid and logs where it is. A macro, not a closure, so
    // that each message stays a literal (docs/troubleshooting.md quotes them, and its
    // test finds each quoted message in src/).
    macro_rules! invalid {
        ($($message:tt)+) => {{
            report.invalid += 1;
            tracing::warn!(topic, partition = msg.partition(), offset = msg.offset(), $($message)+);
        }};
    }
    let Some(key) = msg.key().and_then(|k| std::str::from_utf8(k).ok()) else {
        invalid!("state record without a UTF-8 key; ignored");
        return;
    };
    if !shard.owns(key) {
        // Another replica's agent: it restores it; we never saw it.
        report.other_shards += 1;
        return;
    }
    let Some(payload) = msg.payload() else {
        report.tombstones += 1;
        store.restore_tombstone(key);
        return;
    };
    let ct = msg.headers().and_then(|h| {
        h.iter()
            .find(|h| h.key == "content-type")
            .and_then(|h| h.value)
    });
    let format = cfg.format.from_content_type(ct);
    match encode::decode_state(payload, format) {
        Ok(rec) => match rec.state {
            Some(state) if state.agent_id == key => {
                store.restore_record(key, state, rec.seq, rec.incarnation_ms)
            }
            _ => invalid!("state record without a state for its key; ignored"),
        },
        Err(e) => invalid!(error = %e, "undecodable state record; ignored"),
    }
}

/// Most agents room is made for ahead of a restore, whatever the watermarks claim.
const MAX_RESERVE: u64 = 20_000_000;

/// Sizes the snapshot for what the topic holds (records between the watermarks, this
/// shard's share) so the map does not grow step by step. Only a hint: a watermark that
/// cannot be read, or a compacted topic holding fewer agents, changes nothing else.
fn reserve_for<C: ConsumerContext>(
    consumer: &BaseConsumer<C>,
    topic: &str,
    partitions: &[i32],
    shard: Shard,
    store: &Store,
) {
    let records: u64 = partitions
        .iter()
        .filter_map(|p| {
            consumer
                .fetch_watermarks(topic, *p, Duration::from_secs(5))
                .ok()
        })
        .map(|(low, high)| u64::try_from(high.saturating_sub(low)).unwrap_or(0))
        .sum();
    let ours = records / u64::from(shard.total.max(1));
    let ours = usize::try_from(ours.min(MAX_RESERVE)).unwrap_or(0);
    if ours > 0 {
        store.reserve(ours);
    }
}

#[cfg(test)]
mod tests {
    use rdkafka::{
        config::ClientConfig,
        mocking::MockCluster,
        producer::{BaseProducer, BaseRecord, DefaultProducerContext, Producer},
    };

    use super::*;
    use crate::proto::v1::{AgentState, AgentStateRecord};

    fn record(agent_id: &str, seq: u64) -> Vec<u8> {
        let rec = AgentStateRecord {
            state: Some(AgentState {
                agent_id: agent_id.into(),
                host_id: 7,
                ..AgentState::default()
            }),
            seq,
            written_at_ms: 1,
            incarnation_ms: 5,
        };
        encode::encode_state(&rec, crate::sinks::kafka::Format::Protobuf)
    }

    /// librdkafka's mock cluster (no broker process): the restore's own handling of bad
    /// records, which a real broker would store just the same.
    #[tokio::test(flavor = "multi_thread")]
    async fn bad_records_are_counted_and_logged_and_the_rest_is_restored() {
        let mock: MockCluster<'static, DefaultProducerContext> =
            MockCluster::new(1).expect("mock cluster");
        mock.create_topic("state", 1, 1).expect("topic");
        let cfg = KafkaConfig {
            brokers: mock.bootstrap_servers(),
            state_topic: "state".into(),
            ..KafkaConfig::default()
        };
        let producer: BaseProducer = ClientConfig::new()
            .set("bootstrap.servers", &cfg.brokers)
            .create()
            .expect("producer");
        let (good, stray) = (record("a", 3), record("c", 1));
        let garbage = vec![0x0f_u8]; // field 1 with wire type 7: not protobuf
        let sends = [
            producer
                .send(BaseRecord::to("state").key("a").payload(&good))
                .map_err(|(e, _)| e),
            producer
                .send(BaseRecord::<(), _>::to("state").payload(&good))
                .map_err(|(e, _)| e),
            producer
                .send(BaseRecord::to("state").key("b").payload(&stray))
                .map_err(|(e, _)| e),
            producer
                .send(BaseRecord::to("state").key("d").payload(&garbage))
                .map_err(|(e, _)| e),
            producer
                .send(BaseRecord::<_, ()>::to("state").key("e"))
                .map_err(|(e, _)| e),
        ];
        for s in sends {
            assert!(s.is_ok(), "produce: {s:?}");
        }
        producer.flush(Duration::from_secs(10)).expect("flush");

        let (store, _work) = Store::new();
        let report = restore(
            &cfg,
            store.clone(),
            Shard::default(),
            Duration::from_secs(30),
        )
        .await
        .expect("restore");
        // No key, a state for another agent, undecodable: three invalid; one tombstone.
        assert_eq!(
            (
                report.records,
                report.invalid,
                report.tombstones,
                report.agents
            ),
            (5, 3, 1, 1)
        );
        let (state, seq) = store.acked("a").expect("agent a restored");
        assert_eq!((state.host_id, seq), (7, 3));
        assert!(store.acked("b").is_none() && store.acked("d").is_none());
    }
}
