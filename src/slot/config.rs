//! `[slot]`: the GSE message-slot receiver and its worker (bk-api.md B §7, §1.3).

use std::{collections::BTreeMap, path::PathBuf, time::Duration};

use secrecy::SecretString;
use serde::{Deserialize, Serialize};

use crate::{
    config::{secret, FieldErrors},
    sources::gse::{GseApi, GseConfig},
};

/// Shortest accepted inbound token: it is the only thing between the internet-facing
/// endpoint and the slot topic.
pub const MIN_TOKEN_LEN: usize = 16;

/// Longest `message_id` GSE's `dispatch_message` accepts (bk-api.md B §1.3).
pub const MAX_MESSAGE_ID_LEN: usize = 64;

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct SlotConfig {
    /// Serve `POST /api/v4/bk_gse_slot/` and run the worker that answers
    /// `fetch/host/dataid` requests.
    #[serde(default)]
    pub enabled: bool,
    /// Shared token GSE must send in `token_header` (at least 16 characters). Prefer
    /// `token_file` or `AGENTWATCH__SLOT__TOKEN` over writing it here.
    #[serde(default, with = "secret::opt")]
    pub token: Option<SecretString>,
    /// File whose content (trimmed) is the inbound token.
    #[serde(default)]
    pub token_file: Option<PathBuf>,
    /// Request header carrying the inbound token.
    #[serde(default = "default_token_header")]
    pub token_header: String,
    /// Largest request body accepted, in bytes; larger ones get HTTP 413.
    #[serde(default = "default_max_body_bytes")]
    pub max_body_bytes: usize,
    /// How long a request waits for the broker to acknowledge the message before it is
    /// answered with an error (the caller then retries).
    #[serde(default = "default_ack_timeout", with = "humantime_serde")]
    pub ack_timeout: Duration,
    /// Slot id sent with `cluster/dispatch_message` (bk-monitor's `GSE_SLOT_ID`).
    #[serde(default)]
    pub slot_id: Option<i64>,
    /// Slot token sent with `cluster/dispatch_message` (bk-monitor's `GSE_SLOT_TOKEN`).
    #[serde(default, with = "secret::opt")]
    pub dispatch_token: Option<SecretString>,
    /// File whose content (trimmed) is the dispatch token.
    #[serde(default)]
    pub dispatch_token_file: Option<PathBuf>,
    /// Data id per collector task, answered to `fetch/host/dataid`. Setting this table
    /// replaces the whole default (basereport 1001, exceptionbeat 1000,
    /// processbeat_perf 1007, processbeat_port 1013, gather_up_beat 1100017).
    #[serde(default = "default_data_ids")]
    pub data_ids: BTreeMap<String, i64>,
    /// Per-business overrides, merged over `data_ids`: keys are `bk_biz_id`s, e.g.
    /// `[slot.biz_data_ids.2] basereport = 1500001` (bk-monitor gives each business its
    /// own data ids in multi-tenant mode).
    #[serde(default)]
    pub biz_data_ids: BTreeMap<String, BTreeMap<String, i64>>,
    /// Kafka consumer group of the worker. With `[shard]` each replica uses
    /// `{consumer_group}-shard{index}` and answers only for the agents it owns.
    #[serde(default = "default_consumer_group")]
    pub consumer_group: String,
    /// Consumer-group session timeout of the worker: how long the group waits for a
    /// worker that vanished before its partitions move. Some brokers (tansu) also hold a
    /// new member's join for half of it. 6s to 5m (Kafka's default group bounds).
    #[serde(default = "default_session_timeout", with = "humantime_serde")]
    pub session_timeout: Duration,
    /// A `message_id` seen again within this window is a duplicate and not handled again.
    #[serde(default = "default_dedup_window", with = "humantime_serde")]
    pub dedup_window: Duration,
    /// Most message ids remembered for de-duplication (oldest forgotten first).
    #[serde(default = "default_dedup_capacity")]
    pub dedup_capacity: usize,
}

fn default_token_header() -> String {
    "X-Agentwatch-Slot-Token".to_owned()
}
fn default_max_body_bytes() -> usize {
    1024 * 1024
}
fn default_ack_timeout() -> Duration {
    Duration::from_secs(10)
}
fn default_consumer_group() -> String {
    "agentwatch-slot".to_owned()
}
fn default_session_timeout() -> Duration {
    Duration::from_secs(45)
}
fn default_dedup_window() -> Duration {
    Duration::from_secs(3600)
}
fn default_dedup_capacity() -> usize {
    100_000
}

/// bk-monitor's built-in host data ids (bk-api.md B §7, §9).
pub fn default_data_ids() -> BTreeMap<String, i64> {
    [
        ("basereport", 1001),
        ("exceptionbeat", 1000),
        ("processbeat_perf", 1007),
        ("processbeat_port", 1013),
        ("gather_up_beat", 1_100_017),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect()
}

impl Default for SlotConfig {
    fn default() -> Self {
        SlotConfig {
            enabled: false,
            token: None,
            token_file: None,
            token_header: default_token_header(),
            max_body_bytes: default_max_body_bytes(),
            ack_timeout: default_ack_timeout(),
            slot_id: None,
            dispatch_token: None,
            dispatch_token_file: None,
            data_ids: default_data_ids(),
            biz_data_ids: BTreeMap::new(),
            consumer_group: default_consumer_group(),
            session_timeout: default_session_timeout(),
            dedup_window: default_dedup_window(),
            dedup_capacity: default_dedup_capacity(),
        }
    }
}

impl SlotConfig {
    /// Replies go through GSE 2.0 `dispatch_message`, so `gse.base_url` is needed even
    /// with `gse.api = "v1"` (with "v2"/"auto" `GseConfig::validate` already checks it).
    pub(crate) fn validate(&mut self, gse: &GseConfig, errs: &mut FieldErrors) {
        read_secret_file(
            "slot.token",
            &mut self.token,
            self.token_file.as_ref(),
            errs,
        );
        read_secret_file(
            "slot.dispatch_token",
            &mut self.dispatch_token,
            self.dispatch_token_file.as_ref(),
            errs,
        );
        if axum::http::HeaderName::from_bytes(self.token_header.as_bytes()).is_err() {
            errs.push(
                "slot.token_header",
                format!("\"{}\" is not a valid HTTP header name", self.token_header),
            );
        }
        if !(1024..=64 * 1024 * 1024).contains(&self.max_body_bytes) {
            errs.push("slot.max_body_bytes", "must be between 1024 and 67108864");
        }
        if self.ack_timeout < Duration::from_millis(100)
            || self.ack_timeout > Duration::from_secs(300)
        {
            errs.push("slot.ack_timeout", "must be between 100ms and 5m");
        }
        check_data_ids("slot.data_ids", &self.data_ids, errs);
        for (biz, ids) in &self.biz_data_ids {
            let path = format!("slot.biz_data_ids.{biz}");
            if biz.parse::<i64>().is_err() {
                errs.push(path.clone(), "key must be an integer bk_biz_id");
            }
            check_data_ids(&path, ids, errs);
        }
        if self.consumer_group.trim().is_empty() {
            errs.push("slot.consumer_group", "must not be empty");
        }
        if self.session_timeout < Duration::from_secs(6)
            || self.session_timeout > Duration::from_secs(300)
        {
            errs.push("slot.session_timeout", "must be between 6s and 5m");
        }
        if self.dedup_window.is_zero() {
            errs.push("slot.dedup_window", "must be greater than 0");
        }
        // Each remembered id costs ~150 bytes (two copies of a <=64-byte id).
        if !(1..=10_000_000).contains(&self.dedup_capacity) {
            errs.push("slot.dedup_capacity", "must be between 1 and 10000000");
        }
        if !self.enabled {
            return;
        }
        match &self.token {
            None => errs.push(
                "slot.token",
                "missing: slot.enabled needs slot.token, slot.token_file or \
                 AGENTWATCH__SLOT__TOKEN",
            ),
            Some(t) if secrecy::ExposeSecret::expose_secret(t).len() < MIN_TOKEN_LEN => errs.push(
                "slot.token",
                format!("must be at least {MIN_TOKEN_LEN} characters"),
            ),
            Some(_) => {}
        }
        if self.slot_id.is_none() {
            errs.push(
                "slot.slot_id",
                "missing: slot.enabled needs the GSE slot id for dispatch_message",
            );
        }
        if self.dispatch_token.is_none() {
            errs.push(
                "slot.dispatch_token",
                "missing: slot.enabled needs the GSE slot token for dispatch_message \
                 (slot.dispatch_token, slot.dispatch_token_file or \
                 AGENTWATCH__SLOT__DISPATCH_TOKEN)",
            );
        }
        if gse.api == GseApi::V1 && gse.base_url.trim().is_empty() {
            errs.push(
                "gse.base_url",
                "must be set when slot.enabled: replies go through GSE 2.0 \
                 cluster/dispatch_message",
            );
        }
    }

    /// The data ids answered for an agent of business `biz_id` (0 = unknown).
    pub fn data_ids_for(&self, biz_id: i64) -> BTreeMap<String, i64> {
        let mut ids = self.data_ids.clone();
        if let Some(over) = self.biz_data_ids.get(&biz_id.to_string()) {
            ids.extend(over.iter().map(|(k, v)| (k.clone(), *v)));
        }
        ids
    }
}

fn read_secret_file(
    path: &str,
    value: &mut Option<SecretString>,
    file: Option<&PathBuf>,
    errs: &mut FieldErrors,
) {
    let Some(file) = file else { return };
    if value.is_some() {
        errs.push(
            format!("{path}_file"),
            format!("set either {path} or {path}_file, not both"),
        );
        return;
    }
    match std::fs::read_to_string(file) {
        Ok(s) => *value = Some(SecretString::from(s.trim().to_owned())),
        Err(e) => errs.push(
            format!("{path}_file"),
            format!("cannot read {}: {e}", file.display()),
        ),
    }
}

/// Data ids are int32 on the collector side (bkmonitorbeat's `FetchHostDataIDData`).
fn check_data_ids(path: &str, ids: &BTreeMap<String, i64>, errs: &mut FieldErrors) {
    for (task, id) in ids {
        if task.trim().is_empty() {
            errs.push(path, "task names must not be empty");
        }
        if !(1..=i64::from(i32::MAX)).contains(id) {
            errs.push(
                format!("{path}.{task}"),
                "must be a data id between 1 and 2147483647",
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gse() -> GseConfig {
        GseConfig {
            base_url: "http://gse/".into(),
            ..GseConfig::default()
        }
    }

    fn token(s: &str) -> Option<SecretString> {
        Some(SecretString::from(s.to_owned()))
    }

    #[test]
    fn disabled_by_default_with_the_documented_defaults() {
        let c = SlotConfig::default();
        assert!(!c.enabled);
        assert_eq!(c.token_header, "X-Agentwatch-Slot-Token");
        assert_eq!(c.max_body_bytes, 1024 * 1024);
        assert_eq!(c.ack_timeout, Duration::from_secs(10));
        assert_eq!(c.data_ids["basereport"], 1001);
        assert_eq!(c.data_ids["gather_up_beat"], 1_100_017);
        let mut errs = FieldErrors::default();
        let mut c = c;
        c.validate(&GseConfig::default(), &mut errs);
        assert!(errs.is_empty(), "{errs}");
    }

    #[test]
    fn enabled_without_tokens_or_slot_id_names_each_field() {
        let mut c = SlotConfig {
            enabled: true,
            ..SlotConfig::default()
        };
        let mut errs = FieldErrors::default();
        let v1 = GseConfig {
            api: GseApi::V1,
            ..GseConfig::default()
        };
        c.validate(&v1, &mut errs);
        let paths = errs.paths();
        for p in [
            "slot.token",
            "slot.slot_id",
            "slot.dispatch_token",
            "gse.base_url",
        ] {
            assert!(paths.contains(&p), "{p} not reported: {errs}");
        }
    }

    #[test]
    fn short_token_bad_header_and_bad_data_ids_are_reported() {
        let mut c = SlotConfig {
            enabled: true,
            token: token("short"),
            token_header: "bad header".into(),
            slot_id: Some(1),
            dispatch_token: token("d"),
            data_ids: BTreeMap::from([("basereport".to_owned(), 0)]),
            biz_data_ids: BTreeMap::from([("x".to_owned(), BTreeMap::new())]),
            ..SlotConfig::default()
        };
        let mut errs = FieldErrors::default();
        c.validate(&gse(), &mut errs);
        let paths = errs.paths();
        for p in [
            "slot.token",
            "slot.token_header",
            "slot.data_ids.basereport",
            "slot.biz_data_ids.x",
        ] {
            assert!(paths.contains(&p), "{p} not reported: {errs}");
        }
    }

    #[test]
    fn token_file_is_read_and_trimmed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("token");
        std::fs::write(&path, "0123456789abcdef\n").unwrap();
        let mut c = SlotConfig {
            enabled: true,
            token_file: Some(path),
            slot_id: Some(7),
            dispatch_token: token("d"),
            ..SlotConfig::default()
        };
        let mut errs = FieldErrors::default();
        c.validate(&gse(), &mut errs);
        assert!(errs.is_empty(), "{errs}");
        let t = c.token.as_ref().unwrap();
        assert_eq!(secrecy::ExposeSecret::expose_secret(t), "0123456789abcdef");
    }

    #[test]
    fn tokens_are_masked_in_the_effective_config() {
        let mut c = crate::config::Config::default();
        c.slot.token = token("inbound-secret-0123456789");
        c.slot.dispatch_token = token("dispatch-secret");
        c.slot.slot_id = Some(9);
        let text = c.to_masked_toml();
        assert!(!text.contains("inbound-secret"), "{text}");
        assert!(!text.contains("dispatch-secret"), "{text}");
        assert!(text.contains("[slot]"), "{text}");
        assert!(text.contains("slot_id = 9"), "{text}");
    }

    #[test]
    fn business_overrides_merge_over_the_defaults() {
        let c = SlotConfig {
            biz_data_ids: BTreeMap::from([(
                "2".to_owned(),
                BTreeMap::from([("basereport".to_owned(), 1_500_001)]),
            )]),
            ..SlotConfig::default()
        };
        assert_eq!(c.data_ids_for(2)["basereport"], 1_500_001);
        assert_eq!(c.data_ids_for(2)["exceptionbeat"], 1000);
        assert_eq!(c.data_ids_for(3)["basereport"], 1001);
    }
}
