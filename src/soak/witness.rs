//! The broker witness: a control producer that tells a broker's loss from agentwatch's.
//!
//! When the fold misses an event the service counted as acknowledged, either agentwatch
//! lost it or the broker did. The witness is plain librdkafka with the sink's producer
//! settings ([`producer_config`]: idempotent, `acks=all`) writing numbered records to a
//! topic of its own, through the same outages, at a steady rate. At the end it reads its
//! topic back from the beginning: a record acknowledged to the witness and missing from
//! the topic was lost by the broker, with no agentwatch code involved.

use std::{
    collections::HashSet,
    time::{Duration, Instant},
};

use futures::{stream::FuturesUnordered, StreamExt as _};
use rdkafka::{
    admin::{AdminClient, AdminOptions, NewTopic, TopicReplication},
    client::DefaultClientContext,
    consumer::Consumer as _,
    error::{KafkaError, RDKafkaErrorCode},
    producer::{FutureProducer, FutureRecord},
    Message as _,
};
use tokio_util::sync::CancellationToken;

use crate::sinks::kafka::{client_config, producer::producer_config, to_end, KafkaConfig};

/// What the witness sent, and what the broker said about it.
#[derive(Debug, Default)]
struct Sent {
    sent: u64,
    acked: Vec<u64>,
    failed: u64,
}

/// The witness's line in the report.
#[derive(Debug, Default, Clone)]
pub(super) struct WitnessSummary {
    pub(super) sent: u64,
    pub(super) acked: u64,
    pub(super) failed: u64,
    pub(super) read_back: u64,
    /// The last offset read and the partition's (low, high) watermarks afterwards.
    pub(super) last_offset: Option<i64>,
    pub(super) watermarks: Option<(i64, i64)>,
    /// Acknowledged records missing from the topic, ascending.
    pub(super) lost: Vec<u64>,
}

pub(super) struct Witness {
    stop: CancellationToken,
    task: tokio::task::JoinHandle<Sent>,
    cfg: KafkaConfig,
    topic: String,
}

impl Witness {
    /// Creates `topic` (one partition) and starts producing `rate` records per second.
    pub(super) async fn start(
        cfg: &KafkaConfig,
        topic: &str,
        rate: u32,
    ) -> Result<Witness, KafkaError> {
        let admin: AdminClient<DefaultClientContext> = client_config(cfg).create()?;
        let new = NewTopic::new(topic, 1, TopicReplication::Fixed(1));
        let opts = AdminOptions::new().operation_timeout(Some(Duration::from_secs(10)));
        for r in admin.create_topics([&new], &opts).await? {
            match r {
                Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
                Err((_, code)) => return Err(KafkaError::AdminOp(code)),
            }
        }
        let producer: FutureProducer = producer_config(cfg).create()?;
        let stop = CancellationToken::new();
        let task = tokio::spawn(produce(
            producer,
            topic.to_owned(),
            rate.max(1),
            cfg.message_timeout,
            stop.clone(),
        ));
        Ok(Witness {
            stop,
            task,
            cfg: cfg.clone(),
            topic: topic.to_owned(),
        })
    }

    /// Stops producing, waits for every outstanding delivery report, then reads the
    /// topic back from the beginning.
    pub(super) async fn finish(self) -> Result<WitnessSummary, KafkaError> {
        self.stop.cancel();
        let sent = self.task.await.unwrap_or_default();
        let acked = sent.acked.len() as u64;
        let (cfg, topic) = (self.cfg, self.topic);
        let back = tokio::task::spawn_blocking(move || read_back(&cfg, &topic, sent.acked))
            .await
            .map_err(|_| KafkaError::Canceled)??;
        Ok(WitnessSummary {
            sent: sent.sent,
            acked,
            failed: sent.failed,
            read_back: back.present.len() as u64,
            last_offset: back.last_offset,
            watermarks: back.watermarks,
            lost: back.lost,
        })
    }
}

async fn produce(
    producer: FutureProducer,
    topic: String,
    rate: u32,
    message_timeout: Duration,
    stop: CancellationToken,
) -> Sent {
    // One batch a second: tansu's S3 engine keeps a batch per object and lists them all
    // on every fetch, so many small batches make reading the topic back take hours.
    const TICK: Duration = Duration::from_secs(1);
    let per_tick = rate.max(1);
    let mut out = Sent::default();
    let mut pending = FuturesUnordered::new();
    let mut tick = tokio::time::interval(TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = stop.cancelled() => break,
            Some((n, ok)) = pending.next() => record(&mut out, n, ok),
            _ = tick.tick() => {
                for _ in 0..per_tick {
                    let n = out.sent;
                    let key = n.to_string();
                    let payload = n.to_be_bytes();
                    let record = FutureRecord::to(&topic).key(&key).payload(&payload[..]);
                    match producer.send_result(record) {
                        Ok(delivery) => {
                            out.sent += 1;
                            pending.push(async move { (n, matches!(delivery.await, Ok(Ok(_)))) });
                        }
                        // Queue full: the broker has been away long enough; skip the tick.
                        Err(_) => break,
                    }
                }
            }
        }
    }
    // Every delivery report arrives within message.timeout.ms; a margin on top.
    let deadline = tokio::time::sleep(message_timeout + Duration::from_secs(10));
    tokio::pin!(deadline);
    loop {
        tokio::select! {
            () = &mut deadline => break,
            next = pending.next() => match next {
                Some((n, ok)) => record(&mut out, n, ok),
                None => break,
            },
        }
    }
    out.failed += pending.len() as u64;
    out
}

fn record(out: &mut Sent, n: u64, ok: bool) {
    if ok {
        out.acked.push(n);
    } else {
        out.failed += 1;
    }
}

/// Every record number in the topic, read from the beginning until every acknowledged
/// one was seen or nothing new arrived for 30 s. No end-of-partition test: tansu's high
/// watermark cannot be trusted (CLARIFICATIONS.md), and the S3 engine answers slowly.
fn read_back(cfg: &KafkaConfig, topic: &str, acked: Vec<u64>) -> Result<ReadBack, KafkaError> {
    let mut client = client_config(cfg);
    client.set("log_level", "2");
    // End-of-partition reports are skipped below like any other non-record.
    let consumer = to_end::consumer(client, "soak-witness")?;
    to_end::assign_from_beginning(&consumer, topic, &[0])?;
    // Acknowledged records not seen yet; what is left at the end was lost.
    let mut missing: HashSet<u64> = acked.into_iter().collect();
    let mut out = ReadBack::default();
    let deadline = Instant::now() + Duration::from_secs(600);
    let mut last_new = Instant::now();
    while !missing.is_empty()
        && Instant::now() < deadline
        && last_new.elapsed() < Duration::from_secs(30)
    {
        let Some(Ok(m)) = consumer.poll(Duration::from_millis(200)) else {
            continue;
        };
        last_new = Instant::now();
        out.last_offset = Some(m.offset());
        let n = m
            .payload()
            .and_then(|p| <[u8; 8]>::try_from(p).ok())
            .map(u64::from_be_bytes);
        if let Some(n) = n {
            out.present.insert(n);
            missing.remove(&n);
        }
    }
    out.lost = missing.into_iter().collect();
    out.lost.sort_unstable();
    out.watermarks = consumer
        .fetch_watermarks(topic, 0, Duration::from_secs(10))
        .ok();
    Ok(out)
}

#[derive(Debug, Default)]
struct ReadBack {
    present: HashSet<u64>,
    /// Acknowledged records not read back, ascending.
    lost: Vec<u64>,
    last_offset: Option<i64>,
    watermarks: Option<(i64, i64)>,
}
