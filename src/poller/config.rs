//! `[poll]`: sweep cadence and change-detection policy.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::config::FieldErrors;

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct PollConfig {
    /// Time between the starts of two sweeps (a sweep asks GSE about every agent).
    /// A sweep slower than this delays the next one; sweeps never overlap.
    #[serde(default = "default_interval", with = "humantime_serde")]
    pub interval: Duration,
    /// Time between inventory refreshes (also done once at start).
    #[serde(default = "default_inventory_interval", with = "humantime_serde")]
    pub inventory_interval: Duration,
    /// An agent is deleted only after it is missing from this many consecutive
    /// *successful* inventory refreshes; a failed or truncated refresh never counts.
    #[serde(default = "default_remove_after")]
    pub remove_after: u32,
    /// Debounce against flapping: a changed state must be seen in this many
    /// consecutive sweeps before its update event is emitted. 1 (default) = off.
    /// Trade-off: N delays every real change by N-1 sweeps (N-1 × `interval`) and hides
    /// flaps shorter than that; first sightings and deletes are never delayed.
    #[serde(default = "default_confirm_sweeps")]
    pub confirm_sweeps: u32,
    /// After an agent's delete event, how many more successful inventory refreshes
    /// its seq and incarnation are remembered. If it comes back within that, its seq
    /// continues; after it (as after a restart) it comes back at seq 1 in a new
    /// incarnation, which consumers ordering by (`incarnation_ms`, `seq`) handle the
    /// same way. Bounds the memory of agents that left (~150 bytes each) on hosts that
    /// churn for months. Default 288: a day at the default `inventory_interval`.
    #[serde(default = "default_forget_deleted_after")]
    pub forget_deleted_after: u32,
}

fn default_interval() -> Duration {
    Duration::from_secs(10)
}
fn default_inventory_interval() -> Duration {
    Duration::from_secs(300)
}
fn default_remove_after() -> u32 {
    3
}
fn default_confirm_sweeps() -> u32 {
    1
}
fn default_forget_deleted_after() -> u32 {
    DEFAULT_FORGET_DELETED_AFTER
}
pub const DEFAULT_FORGET_DELETED_AFTER: u32 = 288;

impl Default for PollConfig {
    fn default() -> Self {
        PollConfig {
            interval: default_interval(),
            inventory_interval: default_inventory_interval(),
            remove_after: default_remove_after(),
            confirm_sweeps: default_confirm_sweeps(),
            forget_deleted_after: default_forget_deleted_after(),
        }
    }
}

impl PollConfig {
    pub(crate) fn validate(&self, errs: &mut FieldErrors) {
        if self.interval < Duration::from_millis(100) {
            errs.push("poll.interval", "must be at least 100ms");
        }
        if self.inventory_interval < Duration::from_millis(100) {
            errs.push("poll.inventory_interval", "must be at least 100ms");
        }
        if !(1..=1000).contains(&self.remove_after) {
            errs.push("poll.remove_after", "must be between 1 and 1000");
        }
        if !(1..=100).contains(&self.confirm_sweeps) {
            errs.push("poll.confirm_sweeps", "must be between 1 and 100");
        }
        // Counted in the entry's 16-bit `missing` together with `remove_after`.
        if self.forget_deleted_after > 60_000 {
            errs.push("poll.forget_deleted_after", "must be at most 60000");
        }
    }
}
