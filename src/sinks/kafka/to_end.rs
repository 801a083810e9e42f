//! Reading a topic from its beginning to its end: the start-up restore does it, and so
//! does `agentwatch bench`'s consume baseline, which measures the restore's ceiling.
//!
//! The end is when librdkafka has reported end-of-partition for every partition, not a
//! high-watermark comparison: some brokers (tansu's memory engine) report a watermark
//! that ends at the last batch's base offset. On Kafka proper both agree.

use std::{
    collections::HashSet,
    time::{Duration, Instant},
};

use rdkafka::{
    config::ClientConfig,
    consumer::{BaseConsumer, Consumer, ConsumerContext},
    error::{KafkaError, KafkaResult},
    message::{BorrowedMessage, Message},
    ClientContext, Offset, TopicPartitionList,
};

/// Client context of a read to the end: end-of-partition is how the reader knows it is
/// done, so librdkafka's global "error" for it is not logged as one.
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

/// A consumer of `client`'s settings that reports end-of-partition, in a fresh group
/// (`<group_prefix>-<uuid>`) that commits nothing: every read starts from the beginning.
pub fn consumer(
    mut client: ClientConfig,
    group_prefix: &str,
) -> KafkaResult<BaseConsumer<QuietEofContext>> {
    client
        .set(
            "group.id",
            format!("{group_prefix}-{}", uuid::Uuid::new_v4()),
        )
        .set("enable.auto.commit", "false")
        .set("enable.partition.eof", "true")
        .set("auto.offset.reset", "earliest")
        .create_with_context(QuietEofContext)
}

/// Assigns `partitions` of `topic` to `consumer`, each from its first record.
pub fn assign_from_beginning<C: ConsumerContext>(
    consumer: &BaseConsumer<C>,
    topic: &str,
    partitions: &[i32],
) -> KafkaResult<()> {
    let mut tpl = TopicPartitionList::new();
    for p in partitions {
        tpl.add_partition_offset(topic, *p, Offset::Beginning)?;
    }
    consumer.assign(&tpl)
}

/// How far a [`read`] has come, handed to its progress callback.
#[derive(Debug, Clone, Copy)]
pub struct Progress {
    pub records: u64,
    pub partitions_done: usize,
}

/// [`read`] gave up: its timeout passed before every partition reached its end.
#[derive(Debug)]
pub struct TimedOut;

/// How often [`read`] calls its progress callback.
const PROGRESS_EVERY: Duration = Duration::from_secs(5);

/// Polls `consumer`, which has `partitions` partitions assigned from the beginning,
/// until librdkafka has reported end-of-partition for each. Every record, and every
/// error other than end-of-partition (the read goes on after it), goes to
/// `on_message`; `on_progress` runs about every 5 s. Gives up once `timeout` has
/// passed since `start`. Returns how many records were read.
pub fn read<'c, C: ConsumerContext>(
    consumer: &'c BaseConsumer<C>,
    partitions: usize,
    start: Instant,
    timeout: Duration,
    mut on_progress: impl FnMut(Progress),
    mut on_message: impl FnMut(KafkaResult<BorrowedMessage<'c>>),
) -> Result<u64, TimedOut> {
    let mut last_progress = start;
    let mut records = 0u64;
    let mut at_end: HashSet<i32> = HashSet::new();
    // Reading the clock per record was a measurable share of a 1M restore: it is read
    // every 1024 records, and after every empty poll (so the timeout still holds when
    // nothing arrives).
    let mut since_clock = 0u32;
    while at_end.len() < partitions {
        if since_clock >= 1024 {
            since_clock = 0;
            if start.elapsed() > timeout {
                return Err(TimedOut);
            }
            if last_progress.elapsed() > PROGRESS_EVERY {
                last_progress = Instant::now();
                on_progress(Progress {
                    records,
                    partitions_done: at_end.len(),
                });
            }
        }
        since_clock += 1;
        let Some(msg) = consumer.poll(Duration::from_millis(200)) else {
            since_clock = 1024;
            continue;
        };
        match msg {
            Ok(m) => {
                // A record after EOF means the partition grew; it is not at its end any more.
                at_end.remove(&m.partition());
                records += 1;
                on_message(Ok(m));
            }
            Err(KafkaError::PartitionEOF(p)) => {
                at_end.insert(p);
            }
            Err(e) => on_message(Err(e)),
        }
    }
    Ok(records)
}
