//! Background flapping: agents going down and coming back, so a poller has changes to report.

use std::sync::{Arc, PoisonError};

use rand::seq::index;
use rand::Rng;
use tokio_util::sync::CancellationToken;

use super::config::probability;
use super::model::STATUS_RUNNING;
use super::Simulator;

/// Codes a flapping agent drops to: lossy (3) and initial (0), both "not alive".
const DOWN_CODES: [i32; 2] = [3, 0];

impl Simulator {
    /// Toggles `round(flap_rate × agents)` distinct random agents between running and not
    /// running, once; returns how many were toggled. The flapper task calls this every
    /// `flap_interval`; tests may call it directly.
    pub fn flap_once(&self) -> usize {
        self.flap_share(self.cfg.flap_rate)
    }

    /// [`Simulator::flap_once`] with another share than the configured `flap_rate`
    /// (clamped to 0..=1).
    pub fn flap_share(&self, rate: f64) -> usize {
        let mut rng = self.flap_rng.lock().unwrap_or_else(PoisonError::into_inner);
        let mut inventory = self.write();
        let total = inventory.len();
        let count = ((probability(rate) * total as f64).round() as usize).min(total);
        for pos in index::sample(&mut *rng, total, count) {
            if let Some(host) = inventory.host_at_mut(pos) {
                host.status_code = if host.status_code == STATUS_RUNNING {
                    DOWN_CODES[rng.random_range(0..DOWN_CODES.len())]
                } else {
                    STATUS_RUNNING
                };
            }
        }
        count
    }

    pub(crate) async fn run_flapper(self: Arc<Self>, shutdown: CancellationToken) {
        if probability(self.cfg.flap_rate) == 0.0 {
            return;
        }
        // A zero interval would spin; one millisecond is already far faster than any poller.
        let period = self
            .cfg
            .flap_interval
            .max(std::time::Duration::from_millis(1));
        let mut ticker = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                () = shutdown.cancelled() => return,
                _ = ticker.tick() => {
                    let toggled = self.flap_once();
                    tracing::debug!(toggled, "simulator flapped agents");
                }
            }
        }
    }
}
