//! Retry delays: exponential back-off with full jitter, and the wait a 429 asks for.

use std::time::Duration;

use rand::Rng;
use reqwest::header::HeaderMap;

use super::RetryConfig;

/// The ceiling of the delay before retry number `retry` (1 = first retry):
/// `initial_backoff * 2^(retry-1)`, at most `max_backoff`.
pub(crate) fn ceiling(cfg: &RetryConfig, retry: u32) -> Duration {
    let factor = 1u32
        .checked_shl(retry.saturating_sub(1))
        .unwrap_or(u32::MAX);
    cfg.initial_backoff
        .checked_mul(factor)
        .unwrap_or(cfg.max_backoff)
        .min(cfg.max_backoff)
}

/// The delay before retry number `retry`: uniform in `[0, ceiling]` ("full jitter",
/// so that many clients failing together do not retry together). A server-requested
/// wait (429) is honoured as a minimum, capped at `max_backoff`.
pub(crate) fn delay(cfg: &RetryConfig, retry: u32, server_wait: Option<Duration>) -> Duration {
    let ceiling = ceiling(cfg, retry);
    let nanos = u64::try_from(ceiling.as_nanos()).unwrap_or(u64::MAX);
    let jittered = Duration::from_nanos(rand::rng().random_range(0..=nanos));
    match server_wait {
        Some(wait) => jittered.max(wait.min(cfg.max_backoff)),
        None => jittered,
    }
}

/// The wait a 429 asks for: `X-Bkapi-RateLimit-Reset` (seconds until the window
/// resets, BlueKing API gateway), else `Retry-After` in seconds. Fractions are accepted;
/// HTTP-date `Retry-After` values are ignored.
pub(crate) fn server_wait(headers: &HeaderMap) -> Option<Duration> {
    ["x-bkapi-ratelimit-reset", "retry-after"]
        .into_iter()
        .find_map(|name| parse_seconds(headers.get(name)?.to_str().ok()?))
}

fn parse_seconds(s: &str) -> Option<Duration> {
    let secs: f64 = s.trim().parse().ok()?;
    // Also rejects NaN; a huge value is capped by the caller.
    if !(0.0..=86_400.0 * 365.0).contains(&secs) {
        return None;
    }
    Some(Duration::from_secs_f64(secs))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> RetryConfig {
        RetryConfig {
            max_retries: 10,
            initial_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(1),
        }
    }

    #[test]
    fn ceiling_doubles_from_initial_up_to_max() {
        let c = cfg();
        let got: Vec<_> = (1..=6).map(|r| ceiling(&c, r).as_millis()).collect();
        assert_eq!(got, [100, 200, 400, 800, 1000, 1000]);
        assert_eq!(ceiling(&c, 64), Duration::from_secs(1));
        assert_eq!(ceiling(&c, u32::MAX), Duration::from_secs(1));
    }

    #[test]
    fn jittered_delay_never_exceeds_the_ceiling() {
        let c = cfg();
        for retry in 1..=5 {
            for _ in 0..100 {
                assert!(delay(&c, retry, None) <= ceiling(&c, retry));
            }
        }
    }

    #[test]
    fn server_wait_is_a_minimum_capped_at_max_backoff() {
        let c = cfg();
        for _ in 0..50 {
            let d = delay(&c, 1, Some(Duration::from_millis(500)));
            assert!(d >= Duration::from_millis(500) && d <= Duration::from_secs(1));
        }
        assert_eq!(delay(&c, 1, Some(Duration::from_secs(3600))), c.max_backoff);
    }

    #[test]
    fn rate_limit_reset_header_wins_over_retry_after() {
        let mut h = HeaderMap::new();
        h.insert("retry-after", "7".parse().unwrap());
        assert_eq!(server_wait(&h), Some(Duration::from_secs(7)));
        h.insert("x-bkapi-ratelimit-reset", "2".parse().unwrap());
        assert_eq!(server_wait(&h), Some(Duration::from_secs(2)));
        h.insert("x-bkapi-ratelimit-reset", "0.25".parse().unwrap());
        assert_eq!(server_wait(&h), Some(Duration::from_millis(250)));
    }

    #[test]
    fn unparsable_wait_headers_are_ignored() {
        let mut h = HeaderMap::new();
        h.insert(
            "retry-after",
            "Wed, 21 Oct 2015 07:28:00 GMT".parse().unwrap(),
        );
        h.insert("x-bkapi-ratelimit-reset", "-3".parse().unwrap());
        assert_eq!(server_wait(&h), None);
    }
}
