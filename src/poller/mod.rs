//! The poller: refreshes the inventory, sweeps GSE in batches, and feeds each
//! observation to the snapshot (which decides what is a change).

mod config;
mod merge;
mod sweep;

pub use config::{PollConfig, DEFAULT_FORGET_DELETED_AFTER};
pub use merge::{merge, Observed};
pub use sweep::{Extras, Poller, SweepReport, SweepResult};
