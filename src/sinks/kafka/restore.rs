//! Start-up restore: rebuild the snapshot from the compacted state topic before the
//! first sweep, so the first diff is against what consumers already know.
//!
//! The read ends when librdkafka reports end-of-partition for every partition, not at
//! a high-watermark comparison: some brokers (tansu's memory engine) report a
//! watermark that ends at the last batch's base offset. On Kafka proper both agree.

use std::{
    collections::HashSet,
    sync::Arc,
    time::{Duration, Instant},
};

use rdkafka::{
    consumer::{BaseConsumer, Consumer, ConsumerContext},
    error::KafkaError,
    message::{Headers, Message},
    ClientContext, Offset, TopicPartitionList,
};

use super::{client_config, encode, KafkaConfig, SinkError};
use crate::{shard::Shard, snapshot::Store};

/// Client context of the restore consumer: end-of-partition is how the restore knows
/// it is done, so librdkafka's global "error" for it is not logged as one.
pub struct QuietEofContext;

impl ClientContext for QuietEofContext {
    fn error(&self, error: KafkaError, reason: &str) {
        let eof = matches!(
            error,
            KafkaError::PartitionEOF(_)
                | KafkaError::Global(rdkafka::types::RDKafkaErrorCode::PartitionEOF)
        );
        if !eof {
            tracing::warn!(error = %error, reason, "Kafka client error");
        }
    }
}

impl ConsumerContext for QuietEofContext {}

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
    let consumer: BaseConsumer<QuietEofContext> = client
        // A fresh group each time: nothing is committed, we always read from the start.
        .set(
            "group.id",
            format!("agentwatch-restore-{}", uuid::Uuid::new_v4()),
        )
        .set("enable.auto.commit", "false")
        .set("enable.partition.eof", "true")
        .set("auto.offset.reset", "earliest")
        .create_with_context(QuietEofContext)
        .map_err(SinkError::Client)?;
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
    let mut tpl = TopicPartitionList::new();
    for p in &partitions {
        tpl.add_partition_offset(topic, *p, Offset::Beginning)
            .map_err(SinkError::Client)?;
    }
    consumer.assign(&tpl).map_err(SinkError::Client)?;
    let start = Instant::now();
    reserve_for(&consumer, topic, &partitions, shard, store);

    let mut last_progress = start;
    let mut report = RestoreReport::default();
    let mut at_end: HashSet<i32> = HashSet::new();
    // Reading the clock per record was a measurable share of a 1M restore: it is read
    // every 1024 records, and after every empty poll (so the timeout still holds when
    // nothing arrives).
    let mut since_clock = 0u32;
    while at_end.len() < partitions.len() {
        if since_clock >= 1024 {
            since_clock = 0;
            if start.elapsed() > timeout {
                return Err(SinkError::RestoreTimeout {
                    topic: topic.to_owned(),
                    timeout,
                });
            }
            if last_progress.elapsed() > Duration::from_secs(5) {
                last_progress = Instant::now();
                tracing::info!(
                    topic,
                    records = report.records,
                    agents = store.len(),
                    partitions_done = at_end.len(),
                    partitions = partitions.len(),
                    "restoring state"
                );
            }
        }
        since_clock += 1;
        let Some(msg) = consumer.poll(Duration::from_millis(200)) else {
            since_clock = 1024;
            continue;
        };
        let msg = match msg {
            Ok(m) => m,
            Err(KafkaError::PartitionEOF(p)) => {
                at_end.insert(p);
                continue;
            }
            Err(e) => {
                tracing::warn!(topic, error = %e, "error while restoring; retrying");
                continue;
            }
        };
        // A record after EOF means the partition grew; it is not at its end any more.
        at_end.remove(&msg.partition());
        report.records += 1;
        let Some(key) = msg.key().and_then(|k| std::str::from_utf8(k).ok()) else {
            report.invalid += 1;
            tracing::warn!(
                topic,
                partition = msg.partition(),
                offset = msg.offset(),
                "state record without a UTF-8 key; ignored"
            );
            continue;
        };
        if !shard.owns(key) {
            // Another replica's agent: it restores it; we never saw it.
            report.other_shards += 1;
            continue;
        }
        let Some(payload) = msg.payload() else {
            report.tombstones += 1;
            store.restore_tombstone(key);
            continue;
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
                _ => {
                    report.invalid += 1;
                    tracing::warn!(
                        topic,
                        partition = msg.partition(),
                        offset = msg.offset(),
                        "state record without a state for its key; ignored"
                    );
                }
            },
            Err(e) => {
                report.invalid += 1;
                tracing::warn!(topic, partition = msg.partition(), offset = msg.offset(),
                    error = %e, "undecodable state record; ignored");
            }
        }
    }
    report.agents = store.len();
    report.elapsed = start.elapsed();
    Ok(report)
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
