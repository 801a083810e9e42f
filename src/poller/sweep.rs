//! One sweep: ask GSE about every inventory agent in bounded-concurrency batches.

use std::{
    collections::HashMap,
    sync::Arc,
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use futures::StreamExt;
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;

use super::{
    merge::{merge, Observed},
    PollConfig,
};
use crate::{
    metrics::Metrics,
    proto::v1::{AgentInfo, PluginState},
    shard::Shard,
    snapshot::{StatusNames, Store},
    sources::{
        bk::ApiError,
        gse::{status::has_ipv4, GseAgentState, StatusSource},
        inventory::{Inventory, InventorySource, Rejected},
        nodeman::NodemanClient,
    },
};

/// Plugins per host id.
type PluginMap = HashMap<i64, std::collections::BTreeMap<String, PluginState>>;

/// Optional extras polled besides the status.
pub struct Extras {
    /// NodeMan plugin search (with `nodeman.plugins`), and the plugin names to keep.
    pub plugins: Option<(NodemanClient, Vec<String>)>,
    /// Agent-info polling interval (with `gse.agent_info`).
    pub agent_info: Option<Duration>,
    /// Which agents this replica owns.
    pub shard: Shard,
}

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
    gse: StatusSource,
    batch_size: usize,
    concurrency: usize,
    source: InventorySource,
    extras: Extras,
    store: Arc<Store>,
    metrics: Arc<Metrics>,
    names: StatusNames,
    inventory: Option<Arc<Inventory>>,
    last_inventory: Option<Instant>,
    /// Last successful plugin search; kept when a later one fails, so a failed call
    /// never looks like "every plugin removed".
    plugins: Option<PluginMap>,
    /// Last agent info per agent id; a failed batch keeps its agents' previous info.
    info: HashMap<String, AgentInfo>,
    info_version: HashMap<String, String>,
    last_info: Option<Instant>,
    sweep: u64,
    reports: broadcast::Sender<SweepReport>,
    /// Starts a sweep now instead of at the next tick (benchmarks, operators).
    trigger: Arc<tokio::sync::Notify>,
}

impl Poller {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        cfg: PollConfig,
        gse: StatusSource,
        batch_size: usize,
        concurrency: usize,
        source: InventorySource,
        extras: Extras,
        store: Arc<Store>,
        metrics: Arc<Metrics>,
        names: StatusNames,
    ) -> Self {
        let (reports, _) = broadcast::channel(64);
        let trigger = Arc::new(tokio::sync::Notify::new());
        Poller {
            cfg,
            gse,
            batch_size,
            concurrency,
            source,
            extras,
            store,
            metrics,
            names,
            inventory: None,
            last_inventory: None,
            plugins: None,
            info: HashMap::new(),
            info_version: HashMap::new(),
            last_info: None,
            sweep: 0,
            reports,
            trigger,
        }
    }

    /// A handle that starts a sweep at once when notified (the interval restarts).
    pub fn trigger(&self) -> Arc<tokio::sync::Notify> {
        self.trigger.clone()
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
                _ = self.trigger.notified() => tick.reset(),
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
            .is_none_or(|t| t.elapsed() >= self.cfg.inventory_interval)
            || self.source.changed()
            // GSE 1.x became active (auto fallback): re-filter to IPv4 hosts now.
            || self.inventory_needs_refilter();
        let inventory_refreshed = due && self.refresh_inventory(sweep).await;
        if let (Some(every), Some(inv)) = (self.extras.agent_info, self.inventory.clone()) {
            if self.last_info.is_none_or(|t| t.elapsed() >= every) {
                self.refresh_agent_info(&inv).await;
            }
        }

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
        if !self.refresh_plugins().await {
            return false;
        }
        match self.source.fetch().await {
            Ok(hosts) => {
                let mut inv = Inventory::from_hosts(hosts);
                let shard = self.extras.shard;
                if shard.is_sharded() {
                    let others = inv.retain_ids(|id| shard.owns(id));
                    tracing::debug!(
                        others,
                        shard = shard.index,
                        total = shard.total,
                        "agents of other shards skipped"
                    );
                }
                if self.gse.needs_ipv4() {
                    inv.reject_where(Rejected::Ipv6OnlyGseV1, |h| !has_ipv4(h));
                }
                self.report_rejected(&inv);
                self.store.share_ids(&mut inv.ids);
                // Room at once for agents the next sweep will add (all of them on a first
                // start): a map growing by doubling rehashes every entry each time.
                self.store
                    .reserve(inv.ids.len().saturating_sub(self.store.len()));
                let ids: std::collections::HashSet<&str> = inv.ids.iter().map(|id| &**id).collect();
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
                tracing::warn!(source = self.source.kind().label(), error = %e,
                    "inventory refresh failed; keeping the previous inventory");
                false
            }
        }
    }

    /// With `nodeman.plugins`: refreshes the plugin map. Returns false only when plugins
    /// were never fetched and this attempt failed — sweeping without them would later
    /// turn their first arrival into an update for every host.
    async fn refresh_plugins(&mut self) -> bool {
        let Some((client, names)) = &self.extras.plugins else {
            return true;
        };
        match client.search_plugins(names).await {
            Ok(hosts) => {
                let map: PluginMap = hosts
                    .into_iter()
                    .map(|h| {
                        let plugins = h
                            .plugins
                            .into_iter()
                            .map(|p| {
                                (
                                    p.name,
                                    PluginState {
                                        status: p.status,
                                        version: p.version,
                                    },
                                )
                            })
                            .collect();
                        (h.host_id, plugins)
                    })
                    .collect();
                self.plugins = Some(map);
                true
            }
            Err(e) => {
                tracing::warn!(error = %e, "NodeMan plugin search failed; keeping the previous plugin status");
                self.plugins.is_some()
            }
        }
    }

    /// True when the inventory still holds hosts GSE 1.x cannot be asked about.
    fn inventory_needs_refilter(&self) -> bool {
        self.gse.needs_ipv4()
            && self
                .inventory
                .as_ref()
                .is_some_and(|inv| inv.hosts.iter().any(|h| !has_ipv4(h)))
    }

    /// Fetches agent info for every agent (batches, bounded concurrency); a failed
    /// batch keeps its agents' previous info.
    async fn refresh_agent_info(&mut self, inv: &Inventory) {
        self.last_info = Some(Instant::now());
        let ranges = batch_ranges(inv.ids.len(), self.batch_size);
        let gse = &self.gse;
        let mut answers = futures::stream::iter(ranges)
            .map(|r| async move {
                let res = gse
                    .agent_info(&inv.ids[r.clone()], &inv.hosts[r.clone()])
                    .await;
                (r, res)
            })
            .buffer_unordered(self.concurrency);
        let mut failed = 0usize;
        while let Some((_, res)) = answers.next().await {
            match res {
                Ok(infos) => {
                    for i in infos {
                        if !i.version.is_empty() {
                            self.info_version
                                .insert(i.agent_id.clone(), i.version.clone());
                        }
                        self.info.insert(
                            i.agent_id,
                            AgentInfo {
                                parent_ip: i.parent_ip,
                                parent_port: i.parent_port,
                                report_time_ms: i.report_time_ms,
                                start_time_ms: i.start_time_ms,
                                cpu_rate: i.cpu_rate,
                                mem_rate: i.mem_rate,
                            },
                        );
                    }
                }
                Err(e) => {
                    failed += 1;
                    tracing::debug!(error = %e, "agent info batch failed; previous info kept");
                }
            }
        }
        if failed > 0 {
            tracing::warn!(
                failed_batches = failed,
                "some agent info batches failed; previous info kept"
            );
        }
    }

    fn report_rejected(&self, inv: &Inventory) {
        for r in Rejected::ALL {
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
        let ranges = batch_ranges(inv.ids.len(), self.batch_size);
        let batches = ranges.len();
        let gse = &self.gse;
        let mut answers = futures::stream::iter(ranges)
            .map(|r| async move {
                let res = gse.query(&inv.ids[r.clone()], &inv.hosts[r.clone()]).await;
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
        let api = self.gse.active();
        let v1 = self.gse.needs_ipv4();
        // GSE answers in the order asked, so the answer is walked alongside the batch;
        // a map is built only once an answer is out of step (an unknown id left out,
        // another order).
        let mut next = 0usize;
        let mut by_id: Option<ahash::HashMap<&str, &GseAgentState>> = None;
        let mut find = |id: &str| -> Option<&GseAgentState> {
            if by_id.is_none() {
                if let Some(s) = states.get(next).filter(|s| s.agent_id == id) {
                    next += 1;
                    return Some(s);
                }
            }
            by_id
                .get_or_insert_with(|| states.iter().map(|s| (s.agent_id.as_str(), s)).collect())
                .get(id)
                .copied()
        };
        // Merged first, then handed to the store as one batch (`Store::observe_batch`).
        let mut views = Vec::with_capacity(r.len());
        for i in r {
            let id = &inv.ids[i];
            if v1 && !has_ipv4(&inv.hosts[i]) {
                // GSE 1.x was not asked about it (IPv6 only): not "not found", just
                // unknown until the inventory is re-filtered.
                self.store.mark_stale(id);
                continue;
            }
            let host = inv.host(i);
            let seen = Observed {
                gse: find(id),
                api,
                plugins: self.plugins.as_ref().and_then(|m| m.get(&host.host_id)),
                info: self.info.get(&**id),
                info_version: self.info_version.get(&**id).map(String::as_str),
            };
            views.push((id, merge(id, host, &seen, &self.names, now)));
        }
        self.store.observe_batch(&views, sweep);
    }

    fn publish_gauges(&self, stats: &crate::snapshot::Stats) {
        let mut by_name: HashMap<&str, i64> = HashMap::new();
        for (code, n) in &stats.by_code {
            *by_name.entry(self.names.name(*code)).or_default() += n;
        }
        for name in self.names.all_names() {
            let n = by_name.get(name.as_str()).copied().unwrap_or(0);
            self.metrics.agents.with_label_values(&[&name]).set(n);
        }
        self.metrics.stale_agents.set(stats.stale as i64);
        self.metrics.pending_changes.set(stats.pending as i64);
        self.metrics
            .oldest_pending_age_seconds
            .set(stats.oldest_pending.map_or(0.0, |d| d.as_secs_f64()));
    }
}

fn batch_ranges(len: usize, size: usize) -> Vec<std::ops::Range<usize>> {
    (0..len)
        .step_by(size.max(1))
        .map(|s| s..(s + size).min(len))
        .collect()
}

pub(crate) fn unix_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}
