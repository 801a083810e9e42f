//! Every Prometheus metric agentwatch exports, registered in one place.
//!
//! Label values are closed sets (see the `*_label` helpers on the types that feed
//! them); an agent id or IP is never a label, so cardinality stays fixed whatever the
//! number of agents.

use std::sync::Arc;

use prometheus::{
    Encoder, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry, TextEncoder,
};

/// Handles to all metrics. Cheap to clone (every field is an `Arc` inside).
#[derive(Clone)]
pub struct Metrics {
    registry: Registry,
    /// Agents per normalized status (`status` is the closed set of names in the status
    /// table plus "unknown").
    pub agents: IntGaugeVec,
    /// Agents whose last GSE query failed, so their state is older than the last sweep.
    pub stale_agents: IntGauge,
    /// Sweeps by result: `success` (every batch answered), `partial` (some batches failed),
    /// `failed` (no batch answered or the inventory is unavailable).
    pub sweeps_total: IntCounterVec,
    pub sweep_duration_seconds: Histogram,
    /// Upstream HTTP calls by `upstream` (gse, nodeman) and `outcome` (ok, timeout,
    /// connect, http_4xx, http_5xx, rate_limited, envelope, decode, too_large).
    pub upstream_requests_total: IntCounterVec,
    pub upstream_request_duration_seconds: HistogramVec,
    /// Events acknowledged by Kafka, by `op` (create, update, delete, snapshot).
    pub events_total: IntCounterVec,
    /// Delivery failures reported by the producer (each is retried later).
    pub kafka_delivery_errors_total: IntCounter,
    /// Producers replaced after a fatal (non-recoverable) librdkafka error.
    pub kafka_producer_restarts_total: IntCounter,
    pub last_sweep_success_timestamp_seconds: IntGauge,
    /// Changes observed but not yet acknowledged by Kafka (at most one per agent).
    pub pending_changes: IntGauge,
    /// Age of the oldest pending change; 0 when nothing is pending.
    pub oldest_pending_age_seconds: prometheus::Gauge,
    /// Produce requests handed to the producer and not yet acknowledged.
    pub kafka_in_flight: IntGauge,
    /// Agents in the inventory (after the agent-id rule).
    pub inventory_agents: IntGauge,
    /// Inventory refreshes by `result` (success, failed).
    pub inventory_refreshes_total: IntCounterVec,
    /// Inventory hosts that could not be given an agent id (no bk_agent_id and no IP),
    /// or were otherwise rejected, by `reason`.
    pub inventory_rejected_hosts: IntGaugeVec,
    /// Agents in GSE batches that failed after retries during the last sweep.
    pub failed_batches_total: IntCounter,
    /// 1 for the GSE API generation in use (`api` = v2, v1); with `gse.api = "auto"`
    /// this shows whether the fallback to 1.x happened.
    pub gse_api: IntGaugeVec,
    /// 1 once the state has been restored and the first sweep is done.
    pub ready: IntGauge,
    /// This replica's shard and the number of shards (`[shard]`).
    pub shard_index: IntGauge,
    pub shard_total: IntGauge,
    /// Query API requests by `route` (the closed set [`QUERY_ROUTES`]) and HTTP
    /// status `code`.
    pub query_requests_total: IntCounterVec,
    /// State-topic records read at start-up, and how long the restore took.
    pub restored_agents: IntGauge,
    pub restore_duration_seconds: prometheus::Gauge,
    /// GSE slot messages by `result` (one of [`SLOT_RESULTS`]): the receiver counts
    /// accepted / unauthorized / too_large / invalid / kafka_unavailable, the worker
    /// everything else.
    pub slot_messages_total: IntCounterVec,
    /// Time from producing an accepted slot message to the broker's acknowledgement.
    pub slot_produce_duration_seconds: Histogram,
    /// 1 while a long-running task runs, 0 once it ended, by `task` (the closed set
    /// [`crate::tasks::Task`]); a task that was never started has no series.
    pub task_up: IntGaugeVec,
    /// Task ends by `task` and `reason` (ok, error, panic); any end before shutdown is
    /// also logged as "task ended unexpectedly".
    pub task_exits_total: IntCounterVec,
}

pub const UPSTREAM_OUTCOMES: &[&str] = &[
    "ok",
    "timeout",
    "connect",
    "http_4xx",
    "http_5xx",
    "rate_limited",
    "envelope",
    "decode",
    "too_large",
];

/// Route labels of `agentwatch_query_requests_total` (names, never ids).
pub const QUERY_ROUTES: &[&str] = &["agent", "status", "list", "summary"];

/// `result` label values of `agentwatch_slot_messages_total`.
pub const SLOT_RESULTS: &[&str] = &[
    "accepted",
    "unauthorized",
    "too_large",
    "invalid",
    "kafka_unavailable",
    "duplicate",
    "handled",
    "unknown_type",
    "bad_content",
    "unknown_agent",
    "other_shard",
    "dispatch_failed",
];

impl Metrics {
    pub fn new() -> Arc<Self> {
        let registry = Registry::new();
        let m = Metrics {
            agents: IntGaugeVec::new(
                Opts::new("agentwatch_agents", "Agents by normalized GSE status."),
                &["status"],
            )
            .expect("static metric definition"),
            stale_agents: IntGauge::new(
                "agentwatch_stale_agents",
                "Agents whose last GSE query failed; they keep their previous state.",
            )
            .expect("static metric definition"),
            sweeps_total: IntCounterVec::new(
                Opts::new("agentwatch_sweeps_total", "Sweeps by result."),
                &["result"],
            )
            .expect("static metric definition"),
            sweep_duration_seconds: Histogram::with_opts(
                HistogramOpts::new(
                    "agentwatch_sweep_duration_seconds",
                    "Wall time of one sweep (all GSE batches and the diff).",
                )
                .buckets(vec![
                    0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
                ]),
            )
            .expect("static metric definition"),
            upstream_requests_total: IntCounterVec::new(
                Opts::new(
                    "agentwatch_upstream_requests_total",
                    "HTTP calls to BlueKing APIs (each attempt) by upstream and outcome.",
                ),
                &["upstream", "outcome"],
            )
            .expect("static metric definition"),
            upstream_request_duration_seconds: HistogramVec::new(
                HistogramOpts::new(
                    "agentwatch_upstream_request_duration_seconds",
                    "Duration of one HTTP call to a BlueKing API.",
                )
                .buckets(vec![
                    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
                ]),
                &["upstream"],
            )
            .expect("static metric definition"),
            events_total: IntCounterVec::new(
                Opts::new(
                    "agentwatch_events_total",
                    "Change events acknowledged by Kafka, by op.",
                ),
                &["op"],
            )
            .expect("static metric definition"),
            kafka_delivery_errors_total: IntCounter::new(
                "agentwatch_kafka_delivery_errors_total",
                "Produce requests that failed; the change stays pending and is retried.",
            )
            .expect("static metric definition"),
            kafka_producer_restarts_total: IntCounter::new(
                "agentwatch_kafka_producer_restarts_total",
                "Kafka producers replaced after a fatal librdkafka error.",
            )
            .expect("static metric definition"),
            last_sweep_success_timestamp_seconds: IntGauge::new(
                "agentwatch_last_sweep_success_timestamp_seconds",
                "Unix time of the last sweep in which every GSE batch was answered.",
            )
            .expect("static metric definition"),
            pending_changes: IntGauge::new(
                "agentwatch_pending_changes",
                "Observed changes not yet acknowledged by Kafka (at most one per agent).",
            )
            .expect("static metric definition"),
            oldest_pending_age_seconds: prometheus::Gauge::new(
                "agentwatch_oldest_pending_age_seconds",
                "Age of the oldest change not yet acknowledged by Kafka.",
            )
            .expect("static metric definition"),
            kafka_in_flight: IntGauge::new(
                "agentwatch_kafka_in_flight",
                "Records handed to the producer and not yet acknowledged.",
            )
            .expect("static metric definition"),
            inventory_agents: IntGauge::new(
                "agentwatch_inventory_agents",
                "Agents in the last successful inventory refresh.",
            )
            .expect("static metric definition"),
            inventory_refreshes_total: IntCounterVec::new(
                Opts::new(
                    "agentwatch_inventory_refreshes_total",
                    "Inventory refreshes by result.",
                ),
                &["result"],
            )
            .expect("static metric definition"),
            inventory_rejected_hosts: IntGaugeVec::new(
                Opts::new(
                    "agentwatch_inventory_rejected_hosts",
                    "Hosts in the last inventory that were not watched, by reason.",
                ),
                &["reason"],
            )
            .expect("static metric definition"),
            failed_batches_total: IntCounter::new(
                "agentwatch_gse_failed_batches_total",
                "GSE batches that failed after all retries; their agents kept their state.",
            )
            .expect("static metric definition"),
            gse_api: IntGaugeVec::new(
                Opts::new(
                    "agentwatch_gse_api",
                    "1 for the GSE API generation in use (v2 or v1).",
                ),
                &["api"],
            )
            .expect("static metric definition"),
            shard_index: IntGauge::new("agentwatch_shard_index", "This replica's shard (0-based).")
                .expect("static metric definition"),
            shard_total: IntGauge::new(
                "agentwatch_shard_total",
                "Number of shards the agents are split into.",
            )
            .expect("static metric definition"),
            ready: IntGauge::new(
                "agentwatch_ready",
                "1 once the state is restored and the first sweep has completed.",
            )
            .expect("static metric definition"),
            query_requests_total: IntCounterVec::new(
                Opts::new(
                    "agentwatch_query_requests_total",
                    "Status query API requests by route and HTTP status code.",
                ),
                &["route", "code"],
            )
            .expect("static metric definition"),
            restored_agents: IntGauge::new(
                "agentwatch_restored_agents",
                "Agents restored from the state topic at start-up.",
            )
            .expect("static metric definition"),
            restore_duration_seconds: prometheus::Gauge::new(
                "agentwatch_restore_duration_seconds",
                "Time taken to restore the snapshot from the state topic.",
            )
            .expect("static metric definition"),
            slot_messages_total: IntCounterVec::new(
                Opts::new(
                    "agentwatch_slot_messages_total",
                    "GSE slot messages by result (receiver and worker).",
                ),
                &["result"],
            )
            .expect("static metric definition"),
            slot_produce_duration_seconds: Histogram::with_opts(
                HistogramOpts::new(
                    "agentwatch_slot_produce_duration_seconds",
                    "Time from producing an accepted slot message to the broker's ack.",
                )
                .buckets(vec![
                    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
                ]),
            )
            .expect("static metric definition"),
            task_up: IntGaugeVec::new(
                Opts::new(
                    "agentwatch_task_up",
                    "1 while the task runs, 0 once it has ended.",
                ),
                &["task"],
            )
            .expect("static metric definition"),
            task_exits_total: IntCounterVec::new(
                Opts::new(
                    "agentwatch_task_exits_total",
                    "Ends of long-running tasks by task and reason (ok, error, panic).",
                ),
                &["task", "reason"],
            )
            .expect("static metric definition"),
            registry,
        };
        m.register_all();
        Arc::new(m)
    }

    fn register_all(&self) {
        let collectors: Vec<Box<dyn prometheus::core::Collector>> = vec![
            Box::new(self.agents.clone()),
            Box::new(self.stale_agents.clone()),
            Box::new(self.sweeps_total.clone()),
            Box::new(self.sweep_duration_seconds.clone()),
            Box::new(self.upstream_requests_total.clone()),
            Box::new(self.upstream_request_duration_seconds.clone()),
            Box::new(self.events_total.clone()),
            Box::new(self.kafka_delivery_errors_total.clone()),
            Box::new(self.kafka_producer_restarts_total.clone()),
            Box::new(self.last_sweep_success_timestamp_seconds.clone()),
            Box::new(self.pending_changes.clone()),
            Box::new(self.oldest_pending_age_seconds.clone()),
            Box::new(self.kafka_in_flight.clone()),
            Box::new(self.inventory_agents.clone()),
            Box::new(self.inventory_refreshes_total.clone()),
            Box::new(self.inventory_rejected_hosts.clone()),
            Box::new(self.failed_batches_total.clone()),
            Box::new(self.gse_api.clone()),
            Box::new(self.ready.clone()),
            Box::new(self.shard_index.clone()),
            Box::new(self.shard_total.clone()),
            Box::new(self.query_requests_total.clone()),
            Box::new(self.restored_agents.clone()),
            Box::new(self.restore_duration_seconds.clone()),
            Box::new(self.slot_messages_total.clone()),
            Box::new(self.slot_produce_duration_seconds.clone()),
            Box::new(self.task_up.clone()),
            Box::new(self.task_exits_total.clone()),
        ];
        for c in collectors {
            // Names are static and distinct; a failure here is a programming error
            // caught by the unit test below.
            self.registry.register(c).expect("metric registered once");
        }
        // Pre-create the closed label sets so dashboards see zeros, not gaps.
        for r in ["success", "partial", "failed"] {
            self.sweeps_total.with_label_values(&[r]);
        }
        for op in ["create", "update", "delete", "snapshot"] {
            self.events_total.with_label_values(&[op]);
        }
        for r in ["success", "failed"] {
            self.inventory_refreshes_total.with_label_values(&[r]);
        }
        for r in SLOT_RESULTS {
            self.slot_messages_total.with_label_values(&[r]);
        }
        for task in crate::tasks::Task::ALL {
            for reason in crate::tasks::ExitReason::ALL {
                self.task_exits_total
                    .with_label_values(&[task.label(), reason.label()]);
            }
        }
        for r in QUERY_ROUTES {
            self.query_requests_total.with_label_values(&[r, "200"]);
        }
    }

    /// Prometheus text exposition of every metric.
    pub fn render(&self) -> String {
        let mut buf = Vec::new();
        // Encoding into a Vec cannot fail for well-formed metrics.
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut buf);
        String::from_utf8(buf).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_metric_registers_and_renders_with_the_prefix() {
        let m = Metrics::new();
        m.agents.with_label_values(&["running"]).set(3);
        let text = m.render();
        assert!(text.contains("agentwatch_agents{status=\"running\"} 3"));
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            assert!(line.starts_with("agentwatch_"), "unprefixed metric: {line}");
        }
    }
}
