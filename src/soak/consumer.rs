//! The soak's independent consumer: folds the events topic, as a downstream user would,
//! into the latest state per agent, counting what an at-least-once stream may carry
//! (re-delivered event ids) and what it must not (a gap in an agent's `seq`).

use std::{
    collections::{HashMap, HashSet},
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc, Mutex, PoisonError,
    },
    thread::JoinHandle,
    time::{Duration, Instant},
};

use prost::Message as _;
use rdkafka::{
    config::ClientConfig,
    consumer::{BaseConsumer, Consumer},
    Message, Offset, TopicPartitionList,
};

use crate::proto::v1::{AgentEvent, Op};

/// What the consumer believes about one agent.
#[derive(Debug, Clone, PartialEq)]
pub struct Folded {
    pub incarnation_ms: i64,
    pub seq: u64,
    /// `None` after an `OP_DELETE`.
    pub state: Option<(i32, String)>,
}

#[derive(Debug, Default)]
pub struct Fold {
    pub agents: HashMap<String, Folded>,
    event_ids: HashSet<String>,
    /// Records read (including re-deliveries).
    pub records: u64,
    /// Records whose event id was seen before.
    pub duplicates: u64,
    /// Events whose `seq` skipped ahead of the agent's last one (same incarnation).
    pub seq_gaps: u64,
    /// Events older than what the fold already holds (not a duplicate id).
    pub out_of_order: u64,
    pub undecodable: u64,
    /// Consumer errors reported by librdkafka (expected during broker outages).
    pub errors: u64,
}

impl Fold {
    fn apply(&mut self, key: &str, event: &AgentEvent) {
        self.records += 1;
        if !self.event_ids.insert(event.event_id.clone()) {
            self.duplicates += 1;
            return;
        }
        let state = match Op::try_from(event.op) {
            Ok(Op::Delete) => None,
            _ => event
                .after
                .as_ref()
                .map(|s| (s.status_code, s.version.clone())),
        };
        let new = Folded {
            incarnation_ms: event.incarnation_ms,
            seq: event.seq,
            state,
        };
        match self.agents.get(key) {
            Some(old) if (old.incarnation_ms, old.seq) >= (new.incarnation_ms, new.seq) => {
                self.out_of_order += 1;
            }
            old => {
                if let Some(old) = old {
                    if old.incarnation_ms == new.incarnation_ms && new.seq != old.seq + 1 {
                        self.seq_gaps += 1;
                    }
                }
                self.agents.insert(key.to_owned(), new);
            }
        }
    }

    pub fn distinct_events(&self) -> usize {
        self.event_ids.len()
    }
}

pub struct FoldingConsumer {
    pub fold: Arc<Mutex<Fold>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl FoldingConsumer {
    /// Starts reading `topic` from the beginning once it exists (the service creates it).
    /// Partitions are assigned, not subscribed: no group, no commits, the position lives
    /// in librdkafka across broker restarts.
    pub fn start(
        brokers: &str,
        topic: &str,
    ) -> Result<FoldingConsumer, rdkafka::error::KafkaError> {
        let consumer: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", brokers)
            .set("group.id", format!("soak-{}", uuid::Uuid::new_v4()))
            .set("enable.auto.commit", "false")
            .set("auto.offset.reset", "earliest")
            .set("log_level", "2")
            .create()?;
        let fold = Arc::new(Mutex::new(Fold::default()));
        let stop = Arc::new(AtomicBool::new(false));
        let (f, s, topic) = (fold.clone(), stop.clone(), topic.to_owned());
        let thread = std::thread::spawn(move || run(consumer, &topic, &f, &s));
        Ok(FoldingConsumer {
            fold,
            stop,
            thread: Some(thread),
        })
    }

    pub fn with<T>(&self, f: impl FnOnce(&Fold) -> T) -> T {
        f(&self.fold.lock().unwrap_or_else(PoisonError::into_inner))
    }
}

impl Drop for FoldingConsumer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn run(consumer: BaseConsumer, topic: &str, fold: &Mutex<Fold>, stop: &AtomicBool) {
    // Wait for the topic and its partitions.
    let mut assigned = false;
    let mut next_try = Instant::now();
    while !stop.load(Ordering::SeqCst) {
        if !assigned {
            if Instant::now() < next_try {
                std::thread::sleep(Duration::from_millis(100));
                continue;
            }
            next_try = Instant::now() + Duration::from_secs(1);
            let parts: Vec<i32> = consumer
                .fetch_metadata(Some(topic), Duration::from_secs(5))
                .map(|m| {
                    m.topics()
                        .iter()
                        .filter(|t| t.error().is_none())
                        .flat_map(|t| t.partitions().iter().map(|p| p.id()))
                        .collect()
                })
                .unwrap_or_default();
            if parts.is_empty() {
                continue;
            }
            let mut tpl = TopicPartitionList::new();
            for p in parts {
                if tpl
                    .add_partition_offset(topic, p, Offset::Beginning)
                    .is_err()
                {
                    continue;
                }
            }
            assigned = consumer.assign(&tpl).is_ok();
            continue;
        }
        match consumer.poll(Duration::from_millis(200)) {
            None => {}
            Some(Err(_)) => {
                fold.lock().unwrap_or_else(PoisonError::into_inner).errors += 1;
            }
            Some(Ok(m)) => {
                // Value-less records (the doctor's test record) are not events.
                let Some(payload) = m.payload() else { continue };
                let key = String::from_utf8_lossy(m.key().unwrap_or_default()).into_owned();
                let mut f = fold.lock().unwrap_or_else(PoisonError::into_inner);
                match AgentEvent::decode(payload) {
                    Ok(event) => f.apply(&key, &event),
                    Err(_) => f.undecodable += 1,
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::v1::AgentState;

    fn event(id: &str, op: Op, seq: u64, status: i32) -> AgentEvent {
        AgentEvent {
            op: op as i32,
            seq,
            incarnation_ms: 1,
            event_id: id.to_owned(),
            after: (op != Op::Delete).then(|| AgentState {
                status_code: status,
                version: "2.1.6".into(),
                ..AgentState::default()
            }),
            ..AgentEvent::default()
        }
    }

    #[test]
    fn the_fold_keeps_the_latest_state_and_counts_duplicates_gaps_and_deletes() {
        let mut f = Fold::default();
        f.apply("a", &event("e1", Op::Snapshot, 1, 2));
        f.apply("a", &event("e2", Op::Update, 2, 3));
        f.apply("a", &event("e2", Op::Update, 2, 3));
        f.apply("a", &event("e4", Op::Update, 4, 2));
        f.apply("b", &event("e5", Op::Snapshot, 1, 2));
        f.apply("b", &event("e6", Op::Delete, 2, 0));
        assert_eq!(f.agents["a"].state, Some((2, "2.1.6".into())));
        assert_eq!(f.agents["b"].state, None);
        assert_eq!((f.records, f.duplicates, f.seq_gaps), (6, 1, 1));
        assert_eq!(f.distinct_events(), 5);
    }
}
