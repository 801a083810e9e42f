//! Wiring of the service (`agentwatch run`): HTTP endpoint, topic checks, restore,
//! sink and poller, and the order in which they stop.

use std::{net::SocketAddr, sync::Arc, time::Duration};

use tokio::{sync::broadcast, task::JoinHandle};
use tokio_util::sync::CancellationToken;

use crate::{
    config::Config,
    http::{self, Health},
    metrics::Metrics,
    poller::{Extras, Poller, SweepReport, SweepResult},
    sinks::kafka::{restore, topics, KafkaSink, SinkError},
    snapshot::{
        diff::{Diff, TrackedInfo},
        StatusNames, Store, StoreOptions,
    },
    sources::{
        bk::ApiError, gse::StatusSource, inventory::InventorySource, nodeman::NodemanClient,
    },
    tasks::{supervise, Supervisor, Task},
};

/// How long the start-up restore may take before the service gives up.
const RESTORE_TIMEOUT: Duration = Duration::from_secs(600);

#[derive(Debug, thiserror::Error)]
pub enum AppError {
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: String,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot set up HTTPS for the HTTP endpoint: {0}")]
    Tls(String),
    #[error("cannot set up the BlueKing API client: {0}")]
    Api(#[from] ApiError),
    #[error(transparent)]
    Sink(#[from] SinkError),
    #[error(transparent)]
    Slot(#[from] crate::slot::SlotError),
    #[error("a task failed: {0}")]
    Task(String),
}

/// How the service ended.
#[derive(Debug, Clone)]
pub struct Exit {
    /// Agents whose change was not acknowledged before the grace period ended.
    pub unflushed: usize,
}

/// A started service.
pub struct Running {
    pub http_addr: SocketAddr,
    pub store: Arc<Store>,
    pub metrics: Arc<Metrics>,
    pub health: Health,
    sweeps: broadcast::Sender<SweepReport>,
    trigger: Arc<tokio::sync::Notify>,
    task: JoinHandle<Result<Exit, AppError>>,
}

impl Running {
    /// Sweep reports from now on.
    pub fn sweeps(&self) -> broadcast::Receiver<SweepReport> {
        self.sweeps.subscribe()
    }

    /// Starts a sweep now rather than at the next `poll.interval` tick.
    pub fn sweep_now(&self) {
        self.trigger.notify_one();
    }

    /// Waits for the service to stop (after `shutdown` is cancelled, or on a fatal
    /// start-up error).
    pub async fn wait(self) -> Result<Exit, AppError> {
        self.task.await.map_err(|e| AppError::Task(e.to_string()))?
    }
}

/// The value of a supervised task, or its panic as an [`AppError::Task`].
fn joined<T>(
    r: Result<Result<T, tokio::task::JoinError>, tokio::task::JoinError>,
) -> Result<T, AppError> {
    r.and_then(|inner| inner)
        .map_err(|e| AppError::Task(e.to_string()))
}

/// Starts the service. Returns once the HTTP endpoint is bound; topic checks and the
/// restore run in the background (failures end the returned task with an error).
pub async fn start(cfg: Config, shutdown: CancellationToken) -> Result<Running, AppError> {
    let metrics = Metrics::new();
    let health = Health::default();
    let listener = tokio::net::TcpListener::bind(&cfg.http.listen)
        .await
        .map_err(|source| AppError::Bind {
            addr: cfg.http.listen.clone(),
            source,
        })?;
    let http_addr = listener.local_addr().map_err(|source| AppError::Bind {
        addr: cfg.http.listen.clone(),
        source,
    })?;
    // The endpoint outlives the poller and sink so the final metrics can be scraped
    // during the drain; it stops last.
    let http_stop = CancellationToken::new();
    let (store, work) = Store::with_options(StoreOptions {
        confirm_sweeps: cfg.poll.confirm_sweeps,
        forget_deleted_after: cfg.poll.forget_deleted_after,
        diff: Diff {
            info: TrackedInfo::from_names(&cfg.gse.tracked_info_fields),
        },
    });
    let query = http::QueryOptions {
        shard: cfg.shard.shard().into(),
        ..http::QueryOptions::from_config(&cfg.http)
    };
    let router = http::router(metrics.clone(), health.clone(), store.clone(), query);
    // `[slot]`: the GSE slot receiver answers on the same endpoint.
    let router = match cfg.slot.enabled {
        true => router.merge(crate::slot::router(&cfg.slot, &cfg.kafka, metrics.clone())?),
        false => router,
    };
    let tls = match &cfg.http.tls {
        None => None,
        Some(tls) => {
            let mut errs = crate::config::FieldErrors::default();
            match tls.build("http.tls", &mut errs) {
                Some(c) => Some(c),
                None => return Err(AppError::Tls(errs.to_string().trim().to_owned())),
            }
        }
    };
    let scheme = if tls.is_some() { "https" } else { "http" };
    // Tasks are supervised (`agentwatch_task_up`); the HTTP endpoint's own stop token
    // is cancelled only at the very end, so it counts as expected once `shutdown` is.
    let sup = Supervisor {
        metrics: metrics.clone(),
        health: health.clone(),
        shutdown: shutdown.clone(),
    };
    let http_task = supervise(
        &sup,
        Task::Http,
        http::serve(
            listener,
            tls,
            router,
            http::ServerLimits::from_config(&cfg.http),
            http_stop.clone(),
        ),
    );
    tracing::info!(addr = %http_addr, scheme, "serving /metrics, /healthz, /readyz and /api/v1");

    let gse = StatusSource::new(&cfg.gse, &cfg.bk, metrics.clone())?;
    let source = InventorySource::from_config(&cfg, metrics.clone())?;
    let extras = Extras {
        plugins: if cfg.nodeman.plugins {
            Some((
                NodemanClient::new(&cfg.nodeman, &cfg.bk, metrics.clone())?,
                cfg.nodeman.plugin_names.clone(),
            ))
        } else {
            None
        },
        agent_info: cfg.gse.agent_info.then_some(cfg.gse.agent_info_interval),
        shard: cfg.shard.shard(),
    };
    let shard = cfg.shard.shard();
    metrics.shard_index.set(i64::from(shard.index));
    metrics.shard_total.set(i64::from(shard.total));
    let poller = Poller::new(
        cfg.poll.clone(),
        gse,
        cfg.gse.batch_size,
        cfg.gse.concurrency,
        source,
        extras,
        store.clone(),
        metrics.clone(),
        StatusNames::from_config(&cfg.gse.status_names),
    );
    let mut reports = poller.subscribe();
    let trigger = poller.trigger();
    let (sweeps, _) = broadcast::channel(64);
    let forward = sweeps.clone();
    let slot_worker = match cfg.slot.enabled {
        true => Some(crate::slot::Worker::from_config(
            &cfg,
            store.clone(),
            health.clone(),
            metrics.clone(),
        )?),
        false => None,
    };
    let task = {
        let (store, metrics, health) = (store.clone(), metrics.clone(), health.clone());
        tokio::spawn(async move {
            let result = async {
                if cfg.kafka.create_topics {
                    topics::ensure_topics(&cfg.kafka).await?;
                }
                let report =
                    restore::restore(&cfg.kafka, store.clone(), shard, RESTORE_TIMEOUT).await?;
                store.finish_restore();
                metrics.restored_agents.set(report.agents as i64);
                metrics
                    .restore_duration_seconds
                    .set(report.elapsed.as_secs_f64());
                tracing::info!(agents = report.agents, records = report.records,
                    tombstones = report.tombstones, invalid = report.invalid,
                    other_shards = report.other_shards,
                    elapsed = ?report.elapsed, "state restored");
                let sink = KafkaSink::new(store.clone(), cfg.kafka.clone(), metrics.clone())?;
                let sink_task = supervise(
                    &sup,
                    Task::KafkaSink,
                    sink.run(work, shutdown.clone(), cfg.shutdown.grace),
                );
                let poller_task = supervise(&sup, Task::Poller, poller.run(shutdown.clone()));
                let slot_task =
                    slot_worker.map(|w| supervise(&sup, Task::SlotWorker, w.run(shutdown.clone())));
                // Readiness: restored, and one sweep finished with an inventory. Ends when
                // the poller (the sender) is gone.
                let ready_task = supervise(&sup, Task::Readiness, async move {
                    loop {
                        let r = match reports.recv().await {
                            Ok(r) => r,
                            Err(broadcast::error::RecvError::Lagged(_)) => continue,
                            Err(broadcast::error::RecvError::Closed) => return,
                        };
                        // A critical task's death keeps the service unready for good.
                        if (r.result != SweepResult::Failed || r.agents > 0)
                            && !health.is_ready()
                            && health.failed_task().is_none()
                        {
                            health.set_ready();
                            metrics.ready.set(1);
                            tracing::info!(sweep = r.sweep, "ready");
                        }
                        let _ = forward.send(r);
                    }
                });
                joined(poller_task.await)?;
                let unflushed = joined(sink_task.await)?;
                if let Some(t) = slot_task {
                    // An error was logged and counted by the supervisor when it happened.
                    let _ = joined(t.await)?;
                }
                joined(ready_task.await)?;
                Ok::<_, AppError>(Exit { unflushed })
            }
            .await;
            http_stop.cancel();
            let _ = http_task.await;
            result
        })
    };
    Ok(Running {
        http_addr,
        store,
        metrics,
        health,
        sweeps,
        trigger,
        task,
    })
}
