//! `[kafka]`: where change events and agent state go.

use std::{collections::BTreeMap, path::PathBuf, time::Duration};

use secrecy::SecretString;
use serde::{Deserialize, Serialize};

use crate::config::FieldErrors;

/// Payload encoding of event and state records.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    /// Protobuf per `proto/agentwatch/v1/events.proto` (content-type
    /// `application/x-protobuf`).
    #[default]
    Protobuf,
    /// proto3 JSON with the .proto field names (content-type `application/json`).
    Json,
}

/// Codec of the producer's record batches (librdkafka `compression.type`).
///
/// lz4 by default: agentwatch's records are small and alike (CloudEvents headers, the
/// same field names and versions), so lz4 finds much to share within a batch for
/// little CPU, and the broker, the network and the disk handle that much less (the
/// 1M change storm of `agentwatch bench` ran ~50% faster). Consumers decompress
/// transparently; every mainstream client reads lz4 (Java, librdkafka and its wrappers,
/// franz-go, sarama; kafka-python only with the `lz4` package installed), as does
/// Kafka from 0.10 on. `zstd` needs Kafka 2.1+ brokers and consumers.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Compression {
    None,
    Gzip,
    Snappy,
    #[default]
    Lz4,
    Zstd,
}

impl Compression {
    /// The librdkafka value.
    pub fn as_str(self) -> &'static str {
        match self {
            Compression::None => "none",
            Compression::Gzip => "gzip",
            Compression::Snappy => "snappy",
            Compression::Lz4 => "lz4",
            Compression::Zstd => "zstd",
        }
    }
}

// Debug is written by hand: `options` may hold credentials.
#[derive(Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct KafkaConfig {
    /// Bootstrap servers, comma-separated `host:port`.
    #[serde(default = "default_brokers")]
    pub brokers: String,
    /// Topic of change events (one `AgentEvent` per record, key = agent id).
    #[serde(default = "default_events_topic")]
    pub events_topic: String,
    /// Compacted topic holding the latest `AgentStateRecord` per agent id; read at
    /// start to restore the snapshot.
    #[serde(default = "default_state_topic")]
    pub state_topic: String,
    /// Topic the GSE slot receiver writes accepted messages to (key = `message_id`,
    /// value = the request body as received); its worker consumes it (`[slot]`).
    #[serde(default = "default_slot_topic")]
    pub slot_topic: String,
    /// "protobuf" (default) or "json".
    #[serde(default)]
    pub format: Format,
    /// Codec of produced record batches: "lz4" (default), "zstd", "snappy", "gzip" or
    /// "none" (for consumers that cannot decompress lz4, e.g. kafka-python without the
    /// `lz4` package).
    #[serde(default)]
    pub compression: Compression,
    /// CloudEvents `ce_source` and the event `source` field. Default
    /// `agentwatch://{hostname}`.
    #[serde(default)]
    pub source: Option<String>,
    /// Create missing topics at start (never relies on broker auto-create).
    #[serde(default = "default_true")]
    pub create_topics: bool,
    /// Partitions of topics agentwatch creates.
    #[serde(default = "default_partitions")]
    pub partitions: i32,
    /// Replication factor of topics agentwatch creates.
    #[serde(default = "default_replication")]
    pub replication_factor: i32,
    /// How long librdkafka keeps trying to deliver one record before reporting failure
    /// (the change then stays pending and is produced again).
    #[serde(default = "default_message_timeout", with = "humantime_serde")]
    pub message_timeout: Duration,
    /// Most records handed to the producer and not yet acknowledged.
    #[serde(default = "default_max_in_flight")]
    pub max_in_flight: usize,
    /// Most payload bytes handed to the producer and not yet acknowledged.
    #[serde(default = "default_max_in_flight_bytes")]
    pub max_in_flight_bytes: usize,
    /// Extra librdkafka properties passed through unchanged (e.g. `"linger.ms" = "5"`,
    /// `"security.protocol" = "SASL_SSL"`). agentwatch's own settings
    /// (`enable.idempotence`, `acks`) cannot be overridden here. Values of secret
    /// properties (`*password*`, `*secret*`, `sasl.oauthbearer.config`, `*.pem` key
    /// material) are printed as `***` by `check-config`; prefer setting them from the
    /// environment (`AGENTWATCH__KAFKA__OPTIONS__SASL.PASSWORD`).
    #[serde(default, serialize_with = "serialize_options_masked")]
    pub options: BTreeMap<String, String>,
    /// librdkafka properties whose value is the (trimmed) content of a file, e.g.
    /// `"sasl.password" = "/etc/agentwatch/kafka/password"` from a mounted Kubernetes
    /// Secret. Read at start; the values are never printed, whatever the property.
    /// A property may be set here or in `options`, not in both.
    #[serde(default)]
    pub option_files: BTreeMap<String, PathBuf>,
    /// The values read from `option_files` by `validate`.
    #[serde(skip)]
    pub(crate) file_options: BTreeMap<String, SecretString>,
}

impl std::fmt::Debug for KafkaConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let options: BTreeMap<&str, &str> = self
            .options
            .iter()
            .map(|(k, v)| {
                let shown = if is_secret_option(k) {
                    "***"
                } else {
                    v.as_str()
                };
                (k.as_str(), shown)
            })
            .collect();
        f.debug_struct("KafkaConfig")
            .field("brokers", &self.brokers)
            .field("events_topic", &self.events_topic)
            .field("state_topic", &self.state_topic)
            .field("slot_topic", &self.slot_topic)
            .field("format", &self.format)
            .field("compression", &self.compression)
            .field("source", &self.source)
            .field("create_topics", &self.create_topics)
            .field("partitions", &self.partitions)
            .field("replication_factor", &self.replication_factor)
            .field("message_timeout", &self.message_timeout)
            .field("max_in_flight", &self.max_in_flight)
            .field("max_in_flight_bytes", &self.max_in_flight_bytes)
            .field("options", &options)
            .field("option_files", &self.option_files)
            .finish_non_exhaustive()
    }
}

/// True for librdkafka properties whose value is a credential.
pub fn is_secret_option(key: &str) -> bool {
    let k = key.to_ascii_lowercase();
    k.contains("password")
        || k.contains("secret")
        || k == "sasl.oauthbearer.config"
        || k == "ssl.key.pem"
        || k == "ssl_key"
        || k.ends_with(".key.pem")
}

fn serialize_options_masked<S: serde::Serializer>(
    options: &BTreeMap<String, String>,
    s: S,
) -> Result<S::Ok, S::Error> {
    use serde::ser::SerializeMap;
    let mut m = s.serialize_map(Some(options.len()))?;
    for (k, v) in options {
        if is_secret_option(k) {
            m.serialize_entry(k, "***")?;
        } else {
            m.serialize_entry(k, v)?;
        }
    }
    m.end()
}

fn default_brokers() -> String {
    "127.0.0.1:9092".to_owned()
}
fn default_events_topic() -> String {
    "agentwatch.events".to_owned()
}
fn default_state_topic() -> String {
    "agentwatch.state".to_owned()
}
fn default_slot_topic() -> String {
    "agentwatch.slot".to_owned()
}
fn default_true() -> bool {
    true
}
fn default_partitions() -> i32 {
    6
}
fn default_replication() -> i32 {
    1
}
fn default_message_timeout() -> Duration {
    Duration::from_secs(30)
}
fn default_max_in_flight() -> usize {
    50_000
}
fn default_max_in_flight_bytes() -> usize {
    64 * 1024 * 1024
}

impl Default for KafkaConfig {
    fn default() -> Self {
        KafkaConfig {
            brokers: default_brokers(),
            events_topic: default_events_topic(),
            state_topic: default_state_topic(),
            slot_topic: default_slot_topic(),
            format: Format::default(),
            compression: Compression::default(),
            source: None,
            create_topics: true,
            partitions: default_partitions(),
            replication_factor: default_replication(),
            message_timeout: default_message_timeout(),
            max_in_flight: default_max_in_flight(),
            max_in_flight_bytes: default_max_in_flight_bytes(),
            options: BTreeMap::new(),
            option_files: BTreeMap::new(),
            file_options: BTreeMap::new(),
        }
    }
}

/// librdkafka properties agentwatch sets itself; overriding them would break the
/// delivery guarantees.
pub const RESERVED_OPTIONS: &[&str] = &[
    "enable.idempotence",
    "acks",
    "request.required.acks",
    "bootstrap.servers",
    "metadata.broker.list",
    "message.timeout.ms",
];

/// librdkafka properties with a field of their own: (property, the field to use).
pub const OWN_FIELD_OPTIONS: &[(&str, &str)] = &[
    ("compression.type", "kafka.compression"),
    ("compression.codec", "kafka.compression"),
];

impl KafkaConfig {
    pub(crate) fn validate(&self, errs: &mut FieldErrors) {
        if self.brokers.trim().is_empty() {
            errs.push("kafka.brokers", "must not be empty");
        }
        for (path, topic) in [
            ("kafka.events_topic", &self.events_topic),
            ("kafka.state_topic", &self.state_topic),
            ("kafka.slot_topic", &self.slot_topic),
        ] {
            if let Err(reason) = check_topic_name(topic) {
                errs.push(path, reason);
            }
        }
        if self.events_topic == self.state_topic {
            errs.push("kafka.state_topic", "must differ from kafka.events_topic");
        }
        if self.slot_topic == self.events_topic || self.slot_topic == self.state_topic {
            errs.push(
                "kafka.slot_topic",
                "must differ from kafka.events_topic and kafka.state_topic",
            );
        }
        if !(1..=10_000).contains(&self.partitions) {
            errs.push("kafka.partitions", "must be between 1 and 10000");
        }
        if !(1..=32).contains(&self.replication_factor) {
            errs.push("kafka.replication_factor", "must be between 1 and 32");
        }
        if self.message_timeout < Duration::from_millis(100) {
            errs.push("kafka.message_timeout", "must be at least 100ms");
        }
        // Upper bounds keep librdkafka's queue (sized at twice these, capped at 10M
        // messages / 2 GiB in `create_producer`) above them, so the sink's own bound and
        // never a `QueueFull` error is what limits in-flight work.
        if !(1..=5_000_000).contains(&self.max_in_flight) {
            errs.push("kafka.max_in_flight", "must be between 1 and 5000000");
        }
        if !(1024 * 1024..=1024 * 1024 * 1024).contains(&self.max_in_flight_bytes) {
            errs.push(
                "kafka.max_in_flight_bytes",
                "must be between 1 MiB and 1 GiB",
            );
        }
        for key in self.options.keys() {
            if RESERVED_OPTIONS.contains(&key.as_str()) {
                errs.push(
                    format!("kafka.options.{key}"),
                    "is set by agentwatch itself and cannot be overridden",
                );
            }
            if let Some((_, field)) = OWN_FIELD_OPTIONS.iter().find(|(k, _)| k == key) {
                errs.push(
                    format!("kafka.options.{key}"),
                    format!("has a field of its own: set {field} instead"),
                );
            }
        }
    }

    /// Reads `option_files` into `file_options`, reporting each bad entry by name.
    pub(crate) fn resolve_option_files(&mut self, errs: &mut FieldErrors) {
        self.file_options.clear();
        for (key, path) in &self.option_files {
            let field = format!("kafka.option_files.{key}");
            if RESERVED_OPTIONS.contains(&key.as_str()) {
                errs.push(
                    field,
                    "is set by agentwatch itself and cannot be overridden",
                );
                continue;
            }
            if let Some((_, own)) = OWN_FIELD_OPTIONS.iter().find(|(k, _)| k == key) {
                errs.push(field, format!("has a field of its own: set {own} instead"));
                continue;
            }
            if self.options.contains_key(key) {
                errs.push(
                    field,
                    format!("kafka.options.{key} is set too; set the property in one place"),
                );
                continue;
            }
            match std::fs::read_to_string(path) {
                Ok(v) if v.trim().is_empty() => {
                    errs.push(field, format!("{} is empty", path.display()))
                }
                Ok(v) => {
                    self.file_options
                        .insert(key.clone(), SecretString::from(v.trim().to_owned()));
                }
                Err(e) => errs.push(field, format!("cannot read {}: {e}", path.display())),
            }
        }
    }

    /// Every pass-through librdkafka property: `options`, then those read from
    /// `option_files` (after `validate`).
    pub fn librdkafka_options(&self) -> impl Iterator<Item = (&str, &str)> {
        use secrecy::ExposeSecret;
        self.options
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .chain(
                self.file_options
                    .iter()
                    .map(|(k, v)| (k.as_str(), v.expose_secret())),
            )
    }

    pub fn source(&self) -> String {
        self.source.clone().unwrap_or_else(|| {
            let host = std::env::var("HOSTNAME")
                .ok()
                .filter(|h| !h.is_empty())
                .or_else(|| {
                    std::fs::read_to_string("/etc/hostname")
                        .ok()
                        .map(|s| s.trim().to_owned())
                })
                .unwrap_or_else(|| "localhost".to_owned());
            format!("agentwatch://{host}")
        })
    }
}

/// Kafka's own topic-name rule: 1..=249 chars of `[a-zA-Z0-9._-]`.
fn check_topic_name(t: &str) -> Result<(), String> {
    if t.is_empty() || t.len() > 249 {
        return Err("must be 1 to 249 characters".to_owned());
    }
    if t == "." || t == ".." {
        return Err("must not be \".\" or \"..\"".to_owned());
    }
    if let Some(c) = t
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')))
    {
        return Err(format!(
            "contains '{c}'; allowed are letters, digits, '.', '_', '-'"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod option_files_tests {
    use super::*;

    #[test]
    fn file_options_reach_librdkafka_and_are_printed_nowhere() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("password");
        std::fs::write(&path, "  file-password-8Jk2\n").expect("write");
        let mut c = KafkaConfig::default();
        c.options.insert("sasl.username".into(), "aw".into());
        // A property whose name does not look secret is still masked from a file.
        c.option_files
            .insert("sasl.oauthbearer.client.id".into(), path.clone());
        c.option_files.insert("sasl.password".into(), path.clone());
        let mut errs = FieldErrors::default();
        c.resolve_option_files(&mut errs);
        assert!(errs.is_empty(), "{errs}");

        let all: BTreeMap<&str, &str> = c.librdkafka_options().collect();
        assert_eq!(all["sasl.password"], "file-password-8Jk2", "trimmed");
        assert_eq!(all["sasl.oauthbearer.client.id"], "file-password-8Jk2");
        assert_eq!(all["sasl.username"], "aw");
        let debug = format!("{c:?}");
        let toml = toml::to_string(&c).expect("serialize");
        for shown in [debug, toml] {
            assert!(!shown.contains("file-password-8Jk2"), "{shown}");
            assert!(shown.contains("password"), "the path is shown: {shown}");
        }
    }

    #[test]
    fn unreadable_empty_reserved_and_doubly_set_option_files_are_each_named() {
        let dir = tempfile::tempdir().expect("tempdir");
        let empty = dir.path().join("empty");
        std::fs::write(&empty, "\n").expect("write");
        let fine = dir.path().join("fine");
        std::fs::write(&fine, "x").expect("write");
        let mut c = KafkaConfig::default();
        c.options.insert("sasl.username".into(), "aw".into());
        c.option_files
            .insert("sasl.password".into(), dir.path().join("missing"));
        c.option_files.insert("ssl.key.password".into(), empty);
        c.option_files.insert("acks".into(), fine.clone());
        c.option_files.insert("sasl.username".into(), fine);
        let mut errs = FieldErrors::default();
        c.resolve_option_files(&mut errs);
        assert_eq!(
            errs.paths(),
            vec![
                "kafka.option_files.acks",
                "kafka.option_files.sasl.password",
                "kafka.option_files.sasl.username",
                "kafka.option_files.ssl.key.password",
            ],
            "{errs}"
        );
        let text = errs.to_string();
        assert!(
            text.contains("cannot read") && text.contains("is empty"),
            "{text}"
        );
        assert!(text.contains("set the property in one place"), "{text}");
        assert!(c.file_options.is_empty());
    }
}
