//! Sources: where agent state comes from.
//!
//! - [`bk`]: the one HTTP client layer every BlueKing API goes through (auth header,
//!   envelope check, timeout, retries with back-off and jitter, 429, concurrency).
//! - [`nodeman`]: the host inventory (`api/host/search/`).
//! - [`gse`]: realtime agent status (`cluster/list_agent_state`).
//! - [`inventory`]: the host model and the agent id rule.

pub mod bk;
pub mod cmdb;
pub mod gse;
pub mod inventory;
pub mod nodeman;

use crate::config::FieldErrors;

/// Default of `nodeman.max_hosts` and `cmdb.max_hosts`: well above the largest
/// BlueKing installations (a few hundred thousand hosts), far below what would exhaust
/// memory (~1 KB per host with its state).
pub const DEFAULT_MAX_HOSTS: usize = 2_000_000;
/// Largest accepted `max_hosts`.
pub const MAX_HOSTS_LIMIT: usize = 50_000_000;

pub(crate) fn validate_max_hosts(field: &str, value: usize, errs: &mut FieldErrors) {
    if !(1..=MAX_HOSTS_LIMIT).contains(&value) {
        errs.push(field, format!("must be between 1 and {MAX_HOSTS_LIMIT}"));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn max_hosts_is_accepted_from_1_to_its_limit_and_rejected_outside_naming_the_field() {
        for (value, ok) in [
            (0, false),
            (1, true),
            (MAX_HOSTS_LIMIT, true),
            (MAX_HOSTS_LIMIT + 1, false),
        ] {
            let mut errs = FieldErrors::default();
            validate_max_hosts("nodeman.max_hosts", value, &mut errs);
            let want: Vec<&str> = if ok {
                vec![]
            } else {
                vec!["nodeman.max_hosts"]
            };
            assert_eq!(errs.paths(), want, "{value}");
        }
    }
}
