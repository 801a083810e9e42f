//! One sweep: ask GSE about every inventory agent in bounded-concurrency batches.

use std::{
    collections::HashMap,
    sync::Arc,
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use futures::StreamExt;
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;

use super::{merge, PollConfig};
use crate::{
    metrics::Metrics,
    snapshot::{StatusNames, Store},
    sources::{
        bk::ApiError,
        gse::{GseAgentState, GseClient},
        inventory::{Inventory, Rejected},
        nodeman::NodemanClient,
    },
};

/// Outcome of one sweep, as the `agentwatch_sweeps_total{result}` label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SweepResult {
    /// Every batch answered.
    Success,
    /// Some batches failed; their agents kept their state.
    Partial,
    /// Nothing answered, or there is no inventory yet.
    Failed,
}

impl SweepResult {
    pub fn label(self) -> &'static str {
        match self {
            SweepResult::Success => "success",
            SweepResult::Partial => "partial",
            SweepResult::Failed => "failed",
        }
    }
}

/// What one sweep did (logged, and shown live by `agentwatch demo`).
#[derive(Debug, Clone)]
pub struct SweepReport {
    pub sweep: u64,
    pub result: SweepResult,
    pub agents: usize,
    pub batches: usize,
    pub failed_batches: usize,
    /// Agents whose change is not yet acknowledged by Kafka after this sweep.
    pub pending: usize,
    pub stale: usize,
    pub duration: Duration,
    pub inventory_refreshed: bool,
}

pub struct Poller {
    cfg: PollConfig,
    gse: GseClient,
    batch_size: usize,
    concurrency: usize,
    nodeman: NodemanClient,
    store: Arc<Store>,
    metrics: Arc<Metrics>,
    names: StatusNames,
    inventory: Option<Arc<Inventory>>,
    last_inventory: Option<Instant>,
    sweep: u64,
    reports: broadcast::Sender<SweepReport>,
}

impl Poller {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        cfg: PollConfig,
        gse: GseClient,
        batch_size: usize,
        concurrency: usize,
        nodeman: NodemanClient,
        store: Arc<Store>,
        metrics: Arc<Metrics>,
        names: StatusNames,
    ) -> Self {
        let (reports, _) = broadcast::channel(64);
        Poller {
            cfg,
            gse,
            batch_size,
            concurrency,
            nodeman,
            store,
            metrics,
            names,
            inventory: None,
            last_inventory: None,
            sweep: 0,
            reports,
        }
    }

    /// Sweep reports, one per sweep (lagging receivers miss old ones).
    pub fn subscribe(&self) -> broadcast::Receiver<SweepReport> {
        self.reports.subscribe()
    }

    /// Sweeps every `poll.interval` until `shutdown`. A sweep in progress is abandoned
    /// at shutdown: its remaining batches would only be observed, never delivered.
    pub async fn run(mut self, shutdown: CancellationToken) {
        let mut tick = tokio::time::interval(self.cfg.interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = tick.tick() => {}
            }
            tokio::select! {
                _ = shutdown.cancelled() => break,
                report = self.sweep_once() => {
                    if report.duration > self.cfg.interval {
                        tracing::warn!(sweep = report.sweep, duration = ?report.duration,
                            interval = ?self.cfg.interval,
                            "sweep took longer than poll.interval; the next one starts late");
                    }
                    let _ = self.reports.send(report);
                }
            }
        }
        tracing::info!("poller stopped");
    }

    /// Refreshes the inventory when due, then asks GSE about every agent.
    pub async fn sweep_once(&mut self) -> SweepReport {
        let started = Instant::now();
        self.sweep += 1;
        let sweep = self.sweep;
        let due = self
            .last_inventory
            .is_none_or(|t| t.elapsed() >= self.cfg.inventory_interval);
        let inventory_refreshed = due && self.refresh_inventory(sweep).await;

        let (result, agents, batches, failed_batches) = match self.inventory.clone() {
            Some(inv) => self.query_gse(&inv, sweep).await,
            None => (SweepResult::Failed, 0, 0, 0),
        };
        if result == SweepResult::Success {
            self.store.end_initial_snapshot();
        }
        let stats = self.store.stats();
        self.publish_gauges(&stats);
        let duration = started.elapsed();
        self.metrics
            .sweeps_total
            .with_label_values(&[result.label()])
            .inc();
        self.metrics
            .sweep_duration_seconds
            .observe(duration.as_secs_f64());
        if result == SweepResult::Success {
            self.metrics
                .last_sweep_success_timestamp_seconds
                .set(unix_ms() / 1000);
        }
        let report = SweepReport {
            sweep,
            result,
            agents,
            batches,
            failed_batches,
            pending: stats.pending,
            stale: stats.stale,
            duration,
            inventory_refreshed,
        };
        tracing::debug!(?report, "sweep done");
        report
    }

    /// True when the inventory was refreshed. A failed refresh keeps the previous
    /// inventory and never counts towards removals.
    async fn refresh_inventory(&mut self, sweep: u64) -> bool {
        match self.nodeman.search_hosts().await {
            Ok(hosts) => {
                let inv = Inventory::from_hosts(hosts);
                self.report_rejected(&inv);
                let ids: std::collections::HashSet<&str> =
                    inv.ids.iter().map(String::as_str).collect();
                let deleted = self.store.inventory_refreshed(
                    &|id| ids.contains(id),
                    self.cfg.remove_after,
                    sweep,
                );
                if deleted > 0 {
                    tracing::info!(
                        agents = deleted,
                        remove_after = self.cfg.remove_after,
                        "agents left the inventory; emitting delete events"
                    );
                }
                self.metrics.inventory_agents.set(inv.ids.len() as i64);
                self.metrics
                    .inventory_refreshes_total
                    .with_label_values(&["success"])
                    .inc();
                tracing::info!(
                    agents = inv.ids.len(),
                    rejected = inv.rejected.len(),
                    "inventory refreshed"
                );
                self.inventory = Some(Arc::new(inv));
                self.last_inventory = Some(Instant::now());
                true
            }
            Err(e) => {
                self.metrics
                    .inventory_refreshes_total
                    .with_label_values(&["failed"])
                    .inc();
                tracing::warn!(error = %e, "inventory refresh failed; keeping the previous inventory");
                false
            }
        }
    }

    fn report_rejected(&self, inv: &Inventory) {
        for r in [
            Rejected::NoAgentId,
            Rejected::AgentIdTooLong,
            Rejected::DuplicateAgentId,
        ] {
            let n = inv.rejected.iter().filter(|(_, why)| *why == r).count();
            self.metrics
                .inventory_rejected_hosts
                .with_label_values(&[r.metric_label()])
                .set(n as i64);
            if n > 0 {
                let example = inv
                    .rejected
                    .iter()
                    .find(|(_, why)| *why == r)
                    .map(|(h, _)| h.host_id);
                tracing::warn!(hosts = n, reason = r.metric_label(), example_host_id = ?example,
                    "inventory hosts not watched");
            }
        }
    }

    /// Returns (result, agents, batches, failed batches).
    async fn query_gse(&self, inv: &Inventory, sweep: u64) -> (SweepResult, usize, usize, usize) {
        let ranges: Vec<std::ops::Range<usize>> = (0..inv.ids.len())
            .step_by(self.batch_size)
            .map(|s| s..(s + self.batch_size).min(inv.ids.len()))
            .collect();
        let batches = ranges.len();
        let gse = &self.gse;
        let mut answers = futures::stream::iter(ranges)
            .map(|r| async move {
                let res = gse.list_agent_state(&inv.ids[r.clone()]).await;
                (r, res)
            })
            .buffer_unordered(self.concurrency);
        let mut failed = 0usize;
        let mut first_error: Option<ApiError> = None;
        while let Some((r, res)) = answers.next().await {
            match res {
                Ok(states) => self.apply_batch(inv, r, &states, sweep),
                Err(e) => {
                    failed += 1;
                    self.metrics.failed_batches_total.inc();
                    for id in &inv.ids[r] {
                        self.store.mark_stale(id);
                    }
                    first_error.get_or_insert(e);
                }
            }
        }
        if let Some(e) = first_error {
            tracing::warn!(sweep, failed_batches = failed, batches, error = %e,
                "GSE batches failed; their agents keep their last state");
        }
        let result = if failed == 0 {
            SweepResult::Success
        } else if failed < batches {
            SweepResult::Partial
        } else {
            SweepResult::Failed
        };
        (result, inv.ids.len(), batches, failed)
    }

    fn apply_batch(
        &self,
        inv: &Inventory,
        r: std::ops::Range<usize>,
        states: &[GseAgentState],
        sweep: u64,
    ) {
        let now = unix_ms();
        let by_id: HashMap<&str, &GseAgentState> =
            states.iter().map(|s| (s.agent_id.as_str(), s)).collect();
        for i in r {
            let id = &inv.ids[i];
            let observed = merge(
                id,
                &inv.hosts[i],
                by_id.get(id.as_str()).copied(),
                &self.names,
                now,
            );
            self.store.observe(id, observed, sweep);
        }
    }

    fn publish_gauges(&self, stats: &crate::snapshot::Stats) {
        for name in self.names.all_names() {
            let n = stats.by_status.get(&name).copied().unwrap_or(0);
            self.metrics.agents.with_label_values(&[&name]).set(n);
        }
        self.metrics.stale_agents.set(stats.stale as i64);
        self.metrics.pending_changes.set(stats.pending as i64);
        self.metrics
            .oldest_pending_age_seconds
            .set(stats.oldest_pending.map_or(0.0, |d| d.as_secs_f64()));
    }
}

pub(crate) fn unix_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}
