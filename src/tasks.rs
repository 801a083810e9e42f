//! Health of the long-running tasks of `agentwatch run`.
//!
//! Each task is spawned through [`supervise`], which keeps `agentwatch_task_up{task}` at 1
//! while the task runs and, when it ends, sets it to 0 and counts
//! `agentwatch_task_exits_total{task, reason}`. A task that ends before shutdown was
//! requested (returned, failed or panicked) has died: that is logged as an error, and if
//! the task is [critical](Task::is_critical) the readiness latch records it so `/readyz`
//! answers 503 naming the task. Without this a dead sink left the poller sweeping into a
//! queue nobody drained, with nothing on `/metrics` to say so.

use std::{fmt::Display, future::Future};

use tokio::task::{JoinError, JoinHandle};
use tokio_util::sync::CancellationToken;

use crate::{http::Health, metrics::Metrics};

/// A supervised task; its [`label`](Task::label) is the `task` label (a closed set).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Task {
    /// The HTTP endpoint (`/metrics`, health, query API, slot receiver).
    Http,
    /// The inventory refresh + GSE sweep loop.
    Poller,
    /// The Kafka producer loop.
    KafkaSink,
    /// The GSE slot worker (`[slot] enabled = true` only).
    SlotWorker,
    /// Turns the first completed sweep into readiness and forwards sweep reports.
    Readiness,
}

impl Task {
    pub const ALL: [Task; 5] = [
        Task::Http,
        Task::Poller,
        Task::KafkaSink,
        Task::SlotWorker,
        Task::Readiness,
    ];

    pub fn label(self) -> &'static str {
        match self {
            Task::Http => "http",
            Task::Poller => "poller",
            Task::KafkaSink => "kafka_sink",
            Task::SlotWorker => "slot_worker",
            Task::Readiness => "readiness",
        }
    }

    /// Whether the service is useless without it: its death makes `/readyz` fail. The HTTP
    /// endpoint is left out because once it is dead nothing answers `/readyz` anyway (the
    /// probe fails on its own).
    pub fn is_critical(self) -> bool {
        matches!(
            self,
            Task::Poller | Task::KafkaSink | Task::SlotWorker | Task::Readiness
        )
    }
}

/// How a task ended; its [`label`](ExitReason::label) is the `reason` label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExitReason {
    /// Returned normally (an `Ok` or a plain value).
    Ok,
    /// Returned an `Err`.
    Error,
    /// Panicked (or was aborted).
    Panic,
}

impl ExitReason {
    pub const ALL: [ExitReason; 3] = [ExitReason::Ok, ExitReason::Error, ExitReason::Panic];

    pub fn label(self) -> &'static str {
        match self {
            ExitReason::Ok => "ok",
            ExitReason::Error => "error",
            ExitReason::Panic => "panic",
        }
    }
}

/// What a task returns, seen by the supervisor: its exit reason and, for an error, a
/// message for the log.
pub trait TaskOutput {
    fn outcome(&self) -> Result<(), String>;
}

impl TaskOutput for () {
    fn outcome(&self) -> Result<(), String> {
        Ok(())
    }
}

impl TaskOutput for usize {
    fn outcome(&self) -> Result<(), String> {
        Ok(())
    }
}

impl<E: Display> TaskOutput for Result<(), E> {
    fn outcome(&self) -> Result<(), String> {
        self.as_ref().map(|_| ()).map_err(ToString::to_string)
    }
}

/// What [`supervise`] needs to report a task's life.
#[derive(Clone)]
pub struct Supervisor {
    pub metrics: std::sync::Arc<Metrics>,
    pub health: Health,
    /// Cancelled when the service is asked to stop: a task ending after that is expected.
    pub shutdown: CancellationToken,
}

/// Spawns `fut` as `task`. The returned handle yields the task's own result, or the
/// [`JoinError`] of its panic, exactly as `tokio::spawn` would.
pub fn supervise<F>(
    sup: &Supervisor,
    task: Task,
    fut: F,
) -> JoinHandle<Result<F::Output, JoinError>>
where
    F: Future + Send + 'static,
    F::Output: TaskOutput + Send + 'static,
{
    let up = sup.metrics.task_up.with_label_values(&[task.label()]);
    up.set(1);
    // The inner task isolates a panic so the outer one can still record it.
    let inner = tokio::spawn(fut);
    let sup = sup.clone();
    tokio::spawn(async move {
        let result = inner.await;
        let (reason, detail) = match &result {
            Ok(out) => match out.outcome() {
                Ok(()) => (ExitReason::Ok, None),
                Err(e) => (ExitReason::Error, Some(e)),
            },
            Err(e) => (ExitReason::Panic, Some(e.to_string())),
        };
        sup.metrics
            .task_up
            .with_label_values(&[task.label()])
            .set(0);
        sup.metrics
            .task_exits_total
            .with_label_values(&[task.label(), reason.label()])
            .inc();
        let expected = sup.shutdown.is_cancelled() && reason == ExitReason::Ok;
        if expected {
            tracing::debug!(task = task.label(), "task stopped");
        } else {
            tracing::error!(
                task = task.label(),
                reason = reason.label(),
                error = detail.as_deref().unwrap_or(""),
                critical = task.is_critical(),
                "task ended unexpectedly"
            );
            if task.is_critical() && !sup.shutdown.is_cancelled() {
                sup.health.set_failed(task.label());
                sup.metrics.ready.set(0);
            }
        }
        result
    })
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn supervisor() -> Supervisor {
        Supervisor {
            metrics: Metrics::new(),
            health: Health::default(),
            shutdown: CancellationToken::new(),
        }
    }

    fn exits(sup: &Supervisor, task: Task, reason: ExitReason) -> u64 {
        sup.metrics
            .task_exits_total
            .with_label_values(&[task.label(), reason.label()])
            .get()
    }

    fn up(sup: &Supervisor, task: Task) -> i64 {
        sup.metrics.task_up.with_label_values(&[task.label()]).get()
    }

    #[tokio::test]
    async fn a_running_task_is_up_and_a_task_stopped_by_shutdown_exits_ok_without_failing_readiness(
    ) {
        let sup = supervisor();
        sup.health.set_ready();
        let stop = sup.shutdown.clone();
        let handle = supervise(&sup, Task::Poller, async move { stop.cancelled().await });
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert_eq!(up(&sup, Task::Poller), 1);
        sup.shutdown.cancel();
        assert!(handle.await.expect("outer").is_ok());
        assert_eq!(up(&sup, Task::Poller), 0);
        assert_eq!(exits(&sup, Task::Poller, ExitReason::Ok), 1);
        assert!(sup.health.is_ready());
        assert_eq!(sup.health.failed_task(), None);
    }

    #[tokio::test]
    async fn a_critical_task_that_panics_before_shutdown_is_counted_and_fails_readiness() {
        let sup = supervisor();
        sup.health.set_ready();
        sup.metrics.ready.set(1);
        let handle = supervise(&sup, Task::KafkaSink, async {
            if std::hint::black_box(true) {
                panic!("injected");
            }
            0usize
        });
        let result = handle.await.expect("outer");
        assert!(result.is_err_and(|e| e.is_panic()));
        assert_eq!(up(&sup, Task::KafkaSink), 0);
        assert_eq!(exits(&sup, Task::KafkaSink, ExitReason::Panic), 1);
        assert!(!sup.health.is_ready());
        assert_eq!(sup.health.failed_task(), Some("kafka_sink"));
        assert_eq!(sup.metrics.ready.get(), 0);
    }

    #[tokio::test]
    async fn a_task_returning_an_error_is_counted_as_error() {
        let sup = supervisor();
        let handle = supervise(&sup, Task::SlotWorker, async {
            Err::<(), _>("consumer gone")
        });
        let result = handle.await.expect("outer").expect("no panic");
        assert!(result.is_err());
        assert_eq!(exits(&sup, Task::SlotWorker, ExitReason::Error), 1);
        assert_eq!(sup.health.failed_task(), Some("slot_worker"));
    }

    #[tokio::test]
    async fn a_critical_task_returning_early_without_shutdown_has_died() {
        let sup = supervisor();
        sup.health.set_ready();
        supervise(&sup, Task::Poller, async {})
            .await
            .expect("outer")
            .expect("no panic");
        assert_eq!(exits(&sup, Task::Poller, ExitReason::Ok), 1);
        assert!(!sup.health.is_ready());
    }

    #[tokio::test]
    async fn the_http_task_dying_is_counted_but_does_not_touch_readiness() {
        let sup = supervisor();
        sup.health.set_ready();
        supervise(&sup, Task::Http, async {
            Err::<(), _>(std::io::Error::other("accept failed"))
        })
        .await
        .expect("outer")
        .expect("no panic")
        .expect_err("the task's error is handed back");
        assert_eq!(exits(&sup, Task::Http, ExitReason::Error), 1);
        assert!(sup.health.is_ready());
    }
}
