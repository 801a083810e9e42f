//! The produce loop: takes agents from the store's work queue, produces their change
//! (or state record), and reports the broker's acknowledgement back to the store.
//!
//! Many records are in flight at once (bounded by `kafka.max_in_flight` and
//! `kafka.max_in_flight_bytes`); per-agent order comes from the store, which lets at
//! most one event and one state write per agent be in flight. A failed record is not
//! lost: the store keeps the change pending and this loop retries it after a back-off.

use std::{
    sync::Arc,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use rdkafka::{
    error::KafkaError,
    message::OwnedHeaders,
    producer::{BaseRecord, Producer, PurgeConfig},
    util::Timeout,
};
use tokio::sync::mpsc::{self, UnboundedReceiver, UnboundedSender};
use tokio_util::{sync::CancellationToken, time::DelayQueue};

use super::{
    delivery::{self, Done, Sent, SinkProducer},
    encode, KafkaConfig, SinkError,
};
use crate::{
    metrics::Metrics,
    proto::v1::{AgentEvent, AgentStateRecord},
    snapshot::{OutState, Store, Work},
};

pub struct KafkaSink {
    producer: SinkProducer,
    /// Where every producer this sink creates sends its delivery reports.
    done_tx: UnboundedSender<Done>,
    done_rx: UnboundedReceiver<Done>,
    store: Arc<Store>,
    cfg: KafkaConfig,
    metrics: Arc<Metrics>,
    /// Number of the current producer (see `Sent::generation`).
    generation: u64,
    /// `events_total` of ops 1-4 (create, update, delete, snapshot), looked up once:
    /// the label lookup hashes and locks, once per event.
    events_by_op: [prometheus::IntCounter; 4],
    source: String,
    /// The event being produced and its encoding, reused from record to record (their
    /// strings and buffer keep their allocations; librdkafka copies what it takes).
    event: AgentEvent,
    payload: Vec<u8>,
}

/// Most records handed to the producer, or reports handled, per wake-up of the loop.
const DISPATCH_BATCH: usize = 512;

/// Longest wait before retrying a failed record.
const MAX_RETRY_DELAY: Duration = Duration::from_secs(10);

impl KafkaSink {
    /// A sink with its own producer (the sink's settings, see `producer_config`).
    pub fn new(
        store: Arc<Store>,
        cfg: KafkaConfig,
        metrics: Arc<Metrics>,
    ) -> Result<Self, SinkError> {
        let (done_tx, done_rx) = mpsc::unbounded_channel();
        let producer = delivery::create(&cfg, done_tx.clone())?;
        let source = cfg.source();
        let events_by_op = [1, 2, 3, 4].map(|op| {
            metrics
                .events_total
                .with_label_values(&[encode::op_name(op)])
        });
        Ok(KafkaSink {
            producer,
            done_tx,
            done_rx,
            store,
            cfg,
            metrics,
            generation: 0,
            events_by_op,
            source,
            event: AgentEvent::default(),
            payload: Vec::new(),
        })
    }

    /// Runs until `shutdown`, then keeps delivering for at most `grace` and returns the
    /// number of agents whose change could not be flushed (re-emitted on next start).
    pub async fn run(
        mut self,
        mut work: UnboundedReceiver<Work>,
        shutdown: CancellationToken,
        grace: Duration,
    ) -> usize {
        // Owned by the loop, apart from `self`, so that `select!` can wait on it while
        // the branches use `self`. (What is left in its place is never read.)
        let mut done_rx = std::mem::replace(&mut self.done_rx, mpsc::unbounded_channel().1);
        let mut in_flight = 0usize;
        let mut retries = Retries::default();
        let mut bytes_in_flight = 0usize;
        let mut failure_streak = 0u32;
        let mut deadline: Option<tokio::time::Instant> = None;

        loop {
            let room = self.has_room(in_flight, bytes_in_flight);
            tokio::select! {
                biased;
                // Never `None`: the sink itself holds a sender.
                Some(done) = done_rx.recv(), if in_flight > 0 => {
                    // Handle what else has arrived too: reports come in bursts (a
                    // produce response acknowledges a whole batch). Their agents' entries
                    // are read into cache together first (`Store::warm`).
                    let mut reports = vec![done];
                    while reports.len() < DISPATCH_BATCH {
                        match done_rx.try_recv() {
                            Ok(done) => reports.push(done),
                            Err(_) => break,
                        }
                    }
                    self.store.warm(reports.iter().map(|d| d.sent.work.agent_id()));
                    for done in reports {
                        in_flight = in_flight.saturating_sub(1);
                        bytes_in_flight = bytes_in_flight.saturating_sub(done.sent.bytes);
                        match done.result {
                            Ok(()) => {
                                if failure_streak > 0 {
                                    // The broker is back: retry everything waiting out
                                    // its back-off now rather than up to 15 s later.
                                    failure_streak = 0;
                                    for w in retries.drain() {
                                        self.store.requeue(w);
                                    }
                                }
                                // The state record an acknowledged event makes due goes
                                // out at once (one lookup and one queue trip less) when
                                // there is room and no other work waits. With work
                                // waiting, as in a storm, it is queued behind it: events
                                // first, the state topic after (measured: taking it at
                                // once cut the 100k storm's event rate from ~390k to
                                // ~170k/s while the whole drain got ~15% shorter).
                                let take_state =
                                    self.has_room(in_flight, bytes_in_flight) && work.is_empty();
                                if let Some((w, out)) =
                                    self.acked(done.sent.work, done.sent.op, take_state)
                                {
                                    if let Some(bytes) =
                                        self.send_state(w, out, &mut failure_streak, &mut retries)
                                    {
                                        bytes_in_flight += bytes;
                                        in_flight += 1;
                                    }
                                }
                            }
                            Err(e) => {
                                failure_streak = failure_streak.saturating_add(1);
                                self.failed(done.sent.work, &e, failure_streak, &mut retries);
                                // Reports of a producer already replaced (its purged
                                // queue) say nothing about the current one.
                                if done.sent.generation == self.generation {
                                    self.replace_producer_if_broken(Some(&e)).await;
                                }
                            }
                        }
                    }
                }
                Some(w) = retries.next(), if !retries.is_empty() => {
                    self.store.requeue(w);
                }
                w = work.recv(), if room => {
                    let Some(w) = w else { break };
                    // Take a batch per wake-up rather than one record per trip through
                    // `select!`: during a storm the queue holds thousands of agents. At
                    // most as many as `max_in_flight` has room for, and about as many as
                    // `max_in_flight_bytes` has at the records' average size; their
                    // entries are read into cache together first (`Store::warm`).
                    let per_record = bytes_in_flight.checked_div(in_flight).unwrap_or(0).max(1);
                    let bytes_room = self
                        .cfg
                        .max_in_flight_bytes
                        .saturating_sub(bytes_in_flight)
                        / per_record
                        + 1;
                    let room_for = self.cfg.max_in_flight.saturating_sub(in_flight).min(bytes_room);
                    let mut batch = vec![w];
                    while batch.len() < DISPATCH_BATCH.min(room_for) {
                        match work.try_recv() {
                            Ok(w) => batch.push(w),
                            Err(_) => break,
                        }
                    }
                    self.store.warm(batch.iter().map(Work::agent_id));
                    let mut batch = batch.into_iter();
                    for w in batch.by_ref() {
                        if let Some(bytes) = self.dispatch(w, &mut failure_streak, &mut retries) {
                            bytes_in_flight += bytes;
                            in_flight += 1;
                        }
                        if !self.has_room(in_flight, bytes_in_flight) {
                            break;
                        }
                    }
                    // Past `max_in_flight_bytes`: the rest waits at the back of the queue
                    // (one work item per agent and kind, so nothing is reordered for an
                    // agent that matters: a state write always writes the latest state).
                    for w in batch {
                        self.store.requeue(w);
                    }
                }
                _ = shutdown.cancelled(), if deadline.is_none() => {
                    tracing::info!(grace = ?grace, "shutdown: flushing pending changes");
                    deadline = Some(tokio::time::Instant::now() + grace);
                }
                _ = sleep_until(deadline), if deadline.is_some() => break,
            }
            // A producer can turn fatal while nothing is in flight: every send then
            // fails at once and no report would ever trigger the replacement.
            if failure_streak > 0 && self.producer.client().fatal_error().is_some() {
                self.replace_producer_if_broken(None).await;
            }
            self.metrics.kafka_in_flight.set(in_flight as i64);
            if deadline.is_some() && in_flight == 0 && retries.is_empty() && work.is_empty() {
                break;
            }
        }
        let unflushed = self.store.unflushed();
        if unflushed > 0 {
            tracing::warn!(
                agents = unflushed,
                "shutdown: changes not acknowledged by Kafka; the state topic still holds \
                 their previous state, so they are emitted again on the next start"
            );
        }
        // Give librdkafka a moment to send what it already holds (the state topic
        // keeps the last acknowledged state either way); flushing and dropping the
        // producer block, so off the async workers.
        let producer = self.producer;
        let _ = tokio::task::spawn_blocking(move || {
            let _ = producer.flush(Timeout::After(Duration::from_secs(1)));
        })
        .await;
        unflushed
    }

    /// Below both bounds on unacknowledged records (`kafka.max_in_flight`,
    /// `kafka.max_in_flight_bytes`).
    fn has_room(&self, in_flight: usize, bytes_in_flight: usize) -> bool {
        in_flight < self.cfg.max_in_flight && bytes_in_flight < self.cfg.max_in_flight_bytes
    }

    fn now_ms() -> i64 {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as i64)
    }

    /// Produces the record for `w`; returns its size, or `None` when there was nothing
    /// to send (or the producer refused it, already scheduled for retry). Its report
    /// comes back through the delivery channel.
    fn dispatch(
        &mut self,
        w: Work,
        failure_streak: &mut u32,
        retries: &mut Retries,
    ) -> Option<usize> {
        match &w {
            Work::Event(id) => {
                if !self
                    .store
                    .take_event_into(id, &self.source, Self::now_ms(), &mut self.event)
                {
                    return None;
                }
                encode::encode_event_into(&self.event, self.cfg.format, &mut self.payload);
                let headers = encode::event_headers(&self.event, self.cfg.format);
                let topic = &self.cfg.events_topic;
                let record = (
                    topic.as_str(),
                    Some(&self.payload[..]),
                    headers,
                    self.event.op,
                );
                self.send(w, record, failure_streak, retries)
            }
            Work::State(id) => {
                let out = self.store.take_state(id)?;
                self.send_state(w, out, failure_streak, retries)
            }
        }
    }

    /// Produces a state record (`w` is its `Work::State`).
    fn send_state(
        &self,
        w: Work,
        out: OutState,
        failure_streak: &mut u32,
        retries: &mut Retries,
    ) -> Option<usize> {
        let format = self.cfg.format;
        let payload = out.state.map(|state| {
            encode::encode_state(
                &AgentStateRecord {
                    state: Some(state),
                    seq: out.seq,
                    written_at_ms: Self::now_ms(),
                    incarnation_ms: out.incarnation_ms,
                },
                format,
            )
        });
        let topic = &self.cfg.state_topic;
        let record = (
            topic.as_str(),
            payload.as_deref(),
            encode::state_headers(format),
            0,
        );
        self.send(w, record, failure_streak, retries)
    }

    /// Hands one record (topic, payload — `None` for a tombstone —, headers, op) keyed
    /// by `w`'s agent to the producer.
    fn send(
        &self,
        w: Work,
        (topic, payload, headers, op): (&str, Option<&[u8]>, OwnedHeaders, i32),
        failure_streak: &mut u32,
        retries: &mut Retries,
    ) -> Option<usize> {
        let key = match &w {
            Work::Event(id) | Work::State(id) => id.clone(),
        };
        let bytes = payload.map_or(0, <[u8]>::len) + key.len();
        let sent = Box::new(Sent {
            work: w,
            bytes,
            op,
            generation: self.generation,
        });
        let mut record: BaseRecord<'_, str, [u8], Box<Sent>> =
            BaseRecord::with_opaque_to(topic, sent)
                .key(&*key)
                .headers(headers);
        if let Some(p) = payload {
            record = record.payload(p);
        }
        match self.producer.send(record) {
            Ok(()) => Some(bytes),
            Err((e, record)) => {
                *failure_streak = failure_streak.saturating_add(1);
                self.failed(record.delivery_opaque.work, &e, *failure_streak, retries);
                None
            }
        }
    }

    /// An idempotent producer can hit a fatal error (e.g. its sequence numbers became
    /// inconsistent after messages timed out during a broker outage, on brokers that
    /// cannot bump the producer epoch). It never recovers by itself, so it is replaced;
    /// everything it still held fails back into the store's pending changes.
    ///
    /// Some brokers (tansu among them) instead answer every later produce with
    /// PRODUCER_FENCED / an epoch or sequence error once messages timed out; librdkafka
    /// does not flag that as fatal, but the producer id is dead all the same.
    async fn replace_producer_if_broken(&mut self, last: Option<&KafkaError>) {
        let (code, reason) = match self.producer.client().fatal_error() {
            Some(f) => f,
            None => match last.and_then(|e| Some((e.rdkafka_error_code()?, e))) {
                Some((code, e)) if is_dead_producer_id(code) => (code, e.to_string()),
                _ => return,
            },
        };
        tracing::error!(
            ?code,
            reason,
            "Kafka producer hit a fatal error; creating a new one"
        );
        self.metrics.kafka_producer_restarts_total.inc();
        match delivery::create(&self.cfg, self.done_tx.clone()) {
            Ok(fresh) => {
                let old = std::mem::replace(&mut self.producer, fresh);
                self.generation += 1;
                // Blocks until the old producer is drained: off the async workers.
                let _ = tokio::task::spawn_blocking(move || retire(old)).await;
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot create a new Kafka producer; retrying on the next failure")
            }
        }
    }

    /// Records an acknowledgement. For an event, with `take_state`, returns the state
    /// write it makes due, to produce now.
    fn acked(&self, w: Work, op: i32, take_state: bool) -> Option<(Work, OutState)> {
        match w {
            Work::Event(id) => {
                let state = if take_state {
                    self.store.event_acked_take_state(&id)
                } else {
                    self.store.event_acked(&id);
                    None
                };
                let counter = usize::try_from(op)
                    .ok()
                    .and_then(|i| self.events_by_op.get(i.checked_sub(1)?));
                match counter {
                    Some(c) => c.inc(),
                    // Never produced (op 0); counted under its name all the same.
                    None => self
                        .metrics
                        .events_total
                        .with_label_values(&[encode::op_name(op)])
                        .inc(),
                }
                state.map(|out| (Work::State(id), out))
            }
            Work::State(id) => {
                self.store.state_acked(&id);
                None
            }
        }
    }

    fn failed(&self, w: Work, e: &KafkaError, streak: u32, retries: &mut Retries) {
        self.metrics.kafka_delivery_errors_total.inc();
        // One line per failure would flood the log during an outage; log the first of
        // a streak and then every 1000th.
        if streak == 1 || streak % 1000 == 0 {
            tracing::warn!(error = %e, failures = streak, "Kafka delivery failed; will retry");
        }
        let retry = match &w {
            Work::Event(id) => self.store.event_failed(id),
            Work::State(id) => self.store.state_failed(id),
        };
        if retry {
            retries.insert(w, retry_delay(streak));
        }
    }
}

/// Records waiting out a back-off before they are produced again; drainable, so a
/// recovered broker gets them at once.
#[derive(Default)]
struct Retries {
    queue: DelayQueue<Work>,
    keys: std::collections::HashSet<tokio_util::time::delay_queue::Key>,
}

impl Retries {
    fn insert(&mut self, w: Work, delay: Duration) {
        let key = self.queue.insert(w, delay);
        self.keys.insert(key);
    }

    fn is_empty(&self) -> bool {
        self.queue.is_empty()
    }

    async fn next(&mut self) -> Option<Work> {
        let expired = std::future::poll_fn(|cx| self.queue.poll_expired(cx)).await?;
        self.keys.remove(&expired.key());
        Some(expired.into_inner())
    }

    fn drain(&mut self) -> Vec<Work> {
        let keys: Vec<_> = self.keys.drain().collect();
        keys.into_iter()
            .filter_map(|k| self.queue.try_remove(&k))
            .map(|e| e.into_inner())
            .collect()
    }
}

/// Longest wait for a replaced producer's reports.
const RETIRE_TIMEOUT: Duration = Duration::from_secs(30);

/// Purges a replaced producer and waits until its polling thread has served the report
/// of every record it held (they arrive as failures and are retried through the new
/// producer). Dropping alone purges too but waits at most 500 ms for the reports, and a
/// report not served is lost with its record's `Sent`: the agent would stay in flight.
fn retire(old: SinkProducer) {
    old.purge(PurgeConfig::default().queue().inflight());
    let start = std::time::Instant::now();
    while old.in_flight_count() > 0 && start.elapsed() < RETIRE_TIMEOUT {
        std::thread::sleep(Duration::from_millis(10));
    }
    let left = old.in_flight_count();
    if left > 0 {
        tracing::error!(
            records = left,
            "replaced Kafka producer still holds unreported records; their agents' changes \
             wait for the next start"
        );
    }
}

/// Errors after which this producer id can never produce again.
fn is_dead_producer_id(code: rdkafka::types::RDKafkaErrorCode) -> bool {
    use rdkafka::types::RDKafkaErrorCode as C;
    matches!(
        code,
        C::ProducerFenced
            | C::InvalidProducerEpoch
            | C::OutOfOrderSequenceNumber
            | C::UnknownProducerId
            | C::InvalidProducerIdMapping
            | C::Fatal
    )
}

/// Exponential back-off over the current failure streak, with jitter so a recovering
/// broker is not hit by every agent at once.
fn retry_delay(streak: u32) -> Duration {
    let base = Duration::from_millis(100).saturating_mul(1u32 << streak.min(7));
    let capped = base.min(MAX_RETRY_DELAY);
    let jitter = rand::random_range(0..=capped.as_millis() as u64 / 2);
    capped + Duration::from_millis(jitter)
}

async fn sleep_until(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}
