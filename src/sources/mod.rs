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

use std::time::Duration;

use crate::config::FieldErrors;

/// Bounds of `{gse,nodeman,cmdb}.timeout` (per HTTP attempt, connect included).
pub const MAX_CALL_TIMEOUT: Duration = Duration::from_secs(600);
/// Bounds of `{gse,nodeman,cmdb}.max_response_bytes`.
pub const MIN_RESPONSE_BYTES: usize = 1024;
pub const MAX_RESPONSE_BYTES_LIMIT: usize = 1024 * 1024 * 1024;

/// The per-call limits every upstream section has: `timeout` and `max_response_bytes`.
pub(crate) fn validate_call_limits(
    section: &str,
    timeout: Duration,
    max_response_bytes: usize,
    errs: &mut FieldErrors,
) {
    if timeout.is_zero() || timeout > MAX_CALL_TIMEOUT {
        errs.push(
            format!("{section}.timeout"),
            "must be greater than 0 and at most 10m",
        );
    }
    if !(MIN_RESPONSE_BYTES..=MAX_RESPONSE_BYTES_LIMIT).contains(&max_response_bytes) {
        errs.push(
            format!("{section}.max_response_bytes"),
            format!("must be between {MIN_RESPONSE_BYTES} and {MAX_RESPONSE_BYTES_LIMIT}"),
        );
    }
}

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
    fn call_limits_are_accepted_at_their_bounds_and_rejected_just_past_them() {
        let paths = |t: Duration, b: usize| {
            let mut errs = FieldErrors::default();
            validate_call_limits("gse", t, b, &mut errs);
            errs.paths()
                .into_iter()
                .map(str::to_owned)
                .collect::<Vec<_>>()
        };
        let ms = Duration::from_millis;
        assert!(paths(ms(1), MIN_RESPONSE_BYTES).is_empty());
        assert!(paths(MAX_CALL_TIMEOUT, MAX_RESPONSE_BYTES_LIMIT).is_empty());
        assert_eq!(paths(Duration::ZERO, MIN_RESPONSE_BYTES), ["gse.timeout"]);
        assert_eq!(
            paths(MAX_CALL_TIMEOUT + ms(1), MIN_RESPONSE_BYTES),
            ["gse.timeout"]
        );
        assert_eq!(
            paths(ms(1), MIN_RESPONSE_BYTES - 1),
            ["gse.max_response_bytes"]
        );
        assert_eq!(
            paths(ms(1), MAX_RESPONSE_BYTES_LIMIT + 1),
            ["gse.max_response_bytes"]
        );
    }

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
