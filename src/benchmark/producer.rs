//! `agentwatch bench --producer-baseline N`: how fast librdkafka and the broker on this
//! machine take records at all, with agentwatch's producer settings (acks=all,
//! idempotence, linger) and nothing of agentwatch around them. The ceiling the sink's
//! own event rate is compared against.

use std::{
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use futures::{stream::FuturesUnordered, StreamExt};
use rdkafka::{
    config::FromClientConfigAndContext,
    error::KafkaError,
    producer::{BaseRecord, DeliveryResult, FutureRecord, ProducerContext, ThreadedProducer},
    types::RDKafkaErrorCode,
    ClientContext, Message,
};

use super::BenchError;
use crate::sinks::kafka::{self, to_end, KafkaConfig};

/// One baseline measurement.
#[derive(Debug)]
pub struct Baseline {
    pub records: usize,
    pub payload_bytes: usize,
    /// `FutureProducer`, one delivery future per record, at most `max_in_flight` at
    /// once: the way the sink produces.
    pub future_per_s: f64,
    /// `ThreadedProducer` with a delivery callback that only counts: the least
    /// per-record work librdkafka allows.
    pub callback_per_s: f64,
    /// Reading those records back from the beginning to end-of-partition with a bare
    /// consumer: the ceiling of the start-up restore.
    pub consume_per_s: f64,
}

pub(crate) async fn run(
    broker: &super::BrokerHandle,
    records: usize,
    payload_bytes: usize,
    compression: kafka::Compression,
    options: &std::collections::BTreeMap<String, String>,
) -> Result<Baseline, BenchError> {
    let mut cfg = KafkaConfig {
        brokers: broker.brokers.clone(),
        partitions: 6,
        compression,
        options: options.clone(),
        ..KafkaConfig::default()
    };
    let run_id = uuid::Uuid::new_v4().simple().to_string();
    cfg.events_topic = format!("bench.baseline.{}.a", &run_id[..8]);
    cfg.state_topic = format!("bench.baseline.{}.b", &run_id[..8]);
    match &broker.mock {
        // The mock cluster has no CreateTopics.
        Some(mock) => {
            for t in [&cfg.events_topic, &cfg.state_topic] {
                mock.create_topic(t, cfg.partitions, 1)
                    .map_err(|e| start_err("baseline topics", e))?;
            }
        }
        None => kafka::topics::ensure_topics(&cfg)
            .await
            .map_err(|e| start_err("baseline topics", e))?,
    }
    // Random bytes, a different payload for each record of a 64 KiB window (lz4's):
    // a codec (`--compression`) costs its CPU on them and gains nothing, so the
    // baseline never looks faster for being compressible. One payload repeated would
    // shrink a batch to almost nothing.
    let distinct = (256 * 1024 / payload_bytes.max(1)).clamp(1, 4096);
    let payloads: Vec<Vec<u8>> = (0..distinct)
        .map(|_| {
            let mut p = vec![0u8; payload_bytes];
            rand::Rng::fill(&mut rand::rng(), p.as_mut_slice());
            p
        })
        .collect();

    // Futures, as the sink does it.
    let producer = kafka::create_producer(&cfg).map_err(|e| start_err("producer", e))?;
    // The callback run below writes to the state topic: the consume run reads it back.
    let t = Instant::now();
    let mut in_flight = FuturesUnordered::new();
    let mut failed = 0usize;
    for i in 0..records {
        while in_flight.len() >= cfg.max_in_flight {
            if let Some(Ok(Err(_))) | Some(Err(_)) = in_flight.next().await {
                failed += 1;
            }
        }
        let key = format!("agent-{i:08}");
        let rec = FutureRecord::to(&cfg.events_topic)
            .key(&key)
            .payload(&payloads[i % distinct]);
        match producer.send_result(rec) {
            Ok(f) => in_flight.push(f),
            Err(_) => failed += 1,
        }
    }
    while let Some(r) = in_flight.next().await {
        if !matches!(r, Ok(Ok(_))) {
            failed += 1;
        }
    }
    let future_s = t.elapsed().as_secs_f64();
    if failed > 0 {
        return Err(start_err(
            "baseline (futures)",
            format!("{failed} records failed"),
        ));
    }

    // Callback only.
    let acked = Arc::new(AtomicU64::new(0));
    let errors = Arc::new(AtomicU64::new(0));
    let ctx = Counting {
        acked: acked.clone(),
        errors: errors.clone(),
    };
    let client = kafka::producer::producer_config(&cfg);
    let threaded: ThreadedProducer<Counting> =
        ThreadedProducer::from_config_and_context(&client, ctx)
            .map_err(|e| start_err("threaded producer", e))?;
    let t = Instant::now();
    for i in 0..records {
        let key = format!("agent-{i:08}");
        let mut rec = BaseRecord::to(&cfg.state_topic)
            .key(&key)
            .payload(&payloads[i % distinct]);
        loop {
            match threaded.send(rec) {
                Ok(()) => break,
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), r)) => {
                    rec = r;
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
                Err((e, _)) => return Err(start_err("baseline (callback)", e)),
            }
        }
    }
    while acked.load(Ordering::Relaxed) + errors.load(Ordering::Relaxed) < records as u64 {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let callback_s = t.elapsed().as_secs_f64();
    let errs = errors.load(Ordering::Relaxed);
    if errs > 0 {
        return Err(start_err(
            "baseline (callback)",
            format!("{errs} records failed"),
        ));
    }
    let topic = cfg.state_topic.clone();
    let consume_s = tokio::task::spawn_blocking(move || consume_all(&cfg, &topic))
        .await
        .map_err(|e| start_err("baseline (consume)", e))??;
    Ok(Baseline {
        records,
        payload_bytes,
        future_per_s: records as f64 / future_s,
        callback_per_s: records as f64 / callback_s,
        consume_per_s: records as f64 / consume_s,
    })
}

/// Reads `topic` from the beginning until every partition reported its end, the way
/// the restore does, but without decoding; returns the seconds it took.
fn consume_all(cfg: &KafkaConfig, topic: &str) -> Result<f64, BenchError> {
    let consumer = to_end::consumer(kafka::client_config(cfg), "bench-baseline")
        .map_err(|e| start_err("baseline consumer", e))?;
    let partitions: Vec<i32> = (0..cfg.partitions).collect();
    to_end::assign_from_beginning(&consumer, topic, &partitions)
        .map_err(|e| start_err("baseline consumer", e))?;
    let t = Instant::now();
    to_end::read(
        &consumer,
        partitions.len(),
        t,
        Duration::from_secs(300),
        |_| {},
        |_| {},
    )
    .map_err(|to_end::TimedOut| BenchError::Timeout("baseline consume"))?;
    Ok(t.elapsed().as_secs_f64())
}

fn start_err(what: &'static str, e: impl std::fmt::Display) -> BenchError {
    BenchError::Start {
        what,
        detail: e.to_string(),
    }
}

struct Counting {
    acked: Arc<AtomicU64>,
    errors: Arc<AtomicU64>,
}

impl ClientContext for Counting {}

impl ProducerContext for Counting {
    type DeliveryOpaque = ();

    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        match result {
            Ok(m) if m.offset() >= 0 => self.acked.fetch_add(1, Ordering::Relaxed),
            _ => self.errors.fetch_add(1, Ordering::Relaxed),
        };
    }
}
