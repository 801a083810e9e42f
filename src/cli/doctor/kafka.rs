//! `kafka ...`: the brokers answer, agentwatch's topics exist with the right
//! `cleanup.policy`, and a record is acknowledged the way the service produces (the
//! idempotent producer, `acks=all`). Nothing is created or reconfigured.
//!
//! The test record goes to the events topic — only a real write to that topic proves
//! what the service needs (ACLs, `min.insync.replicas`, reachable partition leaders).
//! It carries no value (a null payload), key `agentwatch-doctor` and the header
//! `ce_type: io.agentwatch.doctor.v1` instead of an agent event type, so consumers that
//! select on `ce_type` or skip value-less records ignore it; agentwatch's own readers do
//! (`tail` and the demo skip records without a value, `restore` reads the state topic
//! only). `--skip-produce` turns it off.

use std::{collections::HashMap, time::Duration};

use rdkafka::{
    error::KafkaError,
    message::{Header, OwnedHeaders},
    producer::{BaseProducer, FutureRecord, Producer},
    types::RDKafkaErrorCode,
    util::Timeout,
};

use super::{Check, Options};
use crate::{
    config::Config,
    sinks::kafka::{client_config, create_producer, probe::LastError, topics, KafkaConfig},
};

/// Key of the test record.
pub const PROBE_KEY: &str = "agentwatch-doctor";
/// `ce_type` of the test record; agent events use `io.agentwatch.agent.v1.*`.
pub const PROBE_TYPE: &str = "io.agentwatch.doctor.v1";

const BROKERS: &str = "kafka brokers";
const TOPICS: &str = "kafka topics";
const CONFIGS: &str = "kafka topic configs";
const PRODUCE: &str = "kafka test produce";

pub async fn checks(cfg: &Config, opts: Options) -> Vec<Check> {
    let k = &cfg.kafka;
    let wait = humantime::format_duration(opts.timeout).to_string();
    let last_error = LastError::default();
    // A plain client, not an AdminClient: its main queue can be polled, which is where
    // librdkafka reports why no broker answered (see `LastError`).
    let client: BaseProducer<LastError> =
        match client_config(k).create_with_context(last_error.clone()) {
            Ok(a) => a,
            Err(e) => {
                return vec![
                Check::fail(
                    BROKERS,
                    format!("cannot create a Kafka client: {e}"),
                    "a kafka.options property is unknown or has a bad value: check them against \
                     librdkafka's CONFIGURATION.md",
                ),
                Check::skip(TOPICS, "no Kafka client"),
                Check::skip(CONFIGS, "no Kafka client"),
                Check::skip(PRODUCE, "no Kafka client"),
            ];
            }
        };
    // All topics, never named ones: asking for a topic by name can make a broker with
    // auto-create on create it. The call blocks, so it runs on the blocking pool and
    // returns plain data: (brokers, topic → partitions).
    let timeout = opts.timeout;
    let fetched = tokio::task::spawn_blocking(move || {
        let meta = match client.client().fetch_metadata(None, timeout) {
            Ok(m) => m,
            Err(e) => {
                // Serves the queued error events, so `last_error` holds the cause.
                client.poll(Duration::from_millis(200));
                return Err(e);
            }
        };
        let brokers: Vec<String> = meta
            .brokers()
            .iter()
            .map(|b| format!("{}:{} (id {})", b.host(), b.port(), b.id()))
            .collect();
        let topics: HashMap<String, usize> = meta
            .topics()
            .iter()
            .filter(|t| t.error().is_none())
            .map(|t| (t.name().to_owned(), t.partitions().len()))
            .collect();
        Ok::<_, KafkaError>((brokers, topics))
    })
    .await;
    let (brokers, partitions_by_topic) = match fetched {
        Ok(Ok(m)) => m,
        Ok(Err(e)) => {
            let why = "no broker answered";
            let (reason, fix) = match last_error.take() {
                Some((RDKafkaErrorCode::SSL, reason)) => (
                    format!("; TLS failed: {reason}"),
                    "the TLS handshake with the broker failed: set kafka.options \
                     \"ssl.ca.location\" to the PEM of the CA that signed the brokers' \
                     certificates (a private CA is not in the system store), and \
                     \"ssl.certificate.location\" / \"ssl.key.location\" if the brokers \
                     require client certificates; check that kafka.brokers names their TLS \
                     listener and a host name their certificates are issued for",
                ),
                Some((RDKafkaErrorCode::Authentication, reason)) => (
                    format!("; SASL authentication failed: {reason}"),
                    "the brokers refused the credentials: check kafka.options \
                     \"sasl.mechanisms\" (PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512, as the \
                     cluster's listener expects), \"sasl.username\" and the password \
                     (kafka.option_files.\"sasl.password\" or \
                     AGENTWATCH__KAFKA__OPTIONS__SASL.PASSWORD), and the user's existence on \
                     the cluster",
                ),
                other => (
                    other.map(|(_, r)| format!("; {r}")).unwrap_or_default(),
                    "check kafka.brokers (host:port, comma-separated) and that this machine \
                     can reach them (firewall, NetworkPolicy); a secured cluster also needs \
                     kafka.options (security.protocol, sasl.mechanisms, sasl.username, \
                     sasl.password, ssl.ca.location, and ssl.certificate.location / \
                     ssl.key.location when the brokers require client certificates)",
                ),
            };
            return vec![
                Check::fail(
                    BROKERS,
                    format!("no metadata from {} within {wait}: {e}{reason}", k.brokers),
                    fix,
                ),
                Check::skip(TOPICS, why),
                Check::skip(CONFIGS, why),
                Check::skip(PRODUCE, why),
            ];
        }
        Err(e) => {
            return vec![Check::fail(
                BROKERS,
                format!("the metadata request did not finish: {e}"),
                "this is a bug; report it",
            )]
        }
    };
    let mut out = vec![Check::ok(
        BROKERS,
        format!(
            "{} broker(s): {}; advertised addresses must be reachable from here too",
            brokers.len(),
            brokers.join(", ")
        ),
    )];

    let mut wanted = vec![
        ("kafka.events_topic", k.events_topic.as_str()),
        ("kafka.state_topic", k.state_topic.as_str()),
    ];
    if cfg.slot.enabled {
        wanted.push(("kafka.slot_topic", k.slot_topic.as_str()));
    }
    let partitions = |name: &str| partitions_by_topic.get(name).copied();
    let mut present = Vec::new();
    let mut missing = Vec::new();
    for (key, topic) in &wanted {
        match partitions(topic) {
            Some(n) => present.push(format!("{topic} ({n} partitions)")),
            None => missing.push(format!("{topic} ({key})")),
        }
    }
    let events_exists = partitions(&k.events_topic).is_some();
    if missing.is_empty() {
        out.push(Check::ok(TOPICS, present.join(", ")));
    } else {
        out.push(Check::fail(
            TOPICS,
            format!("missing: {}", missing.join(", ")),
            "create them with their configs: `agentwatch kafka create-topics --config FILE` \
             (the Helm chart's pre-install job runs it); `agentwatch run` also creates them at \
             start when kafka.create_topics = true and the principal may create topics",
        ));
    }

    out.push(topic_configs(k, &partitions, opts.timeout).await);

    if !opts.produce {
        out.push(Check::skip(PRODUCE, "--skip-produce"));
    } else if !events_exists {
        out.push(Check::skip(
            PRODUCE,
            format!("the events topic {} does not exist", k.events_topic),
        ));
    } else {
        out.push(produce(k, opts.timeout, &wait).await);
    }
    out
}

/// The state topic must compact; the events topic must not compact only.
async fn topic_configs(
    k: &KafkaConfig,
    partitions: &dyn Fn(&str) -> Option<usize>,
    timeout: Duration,
) -> Check {
    let names: Vec<&str> = [k.events_topic.as_str(), k.state_topic.as_str()]
        .into_iter()
        .filter(|t| partitions(t).is_some())
        .collect();
    if names.is_empty() {
        return Check::skip(CONFIGS, "neither the events nor the state topic exists");
    }
    let policies = match topics::cleanup_policies(k, &names, timeout).await {
        Ok(p) => p,
        Err(e) => {
            return Check::fail(
                CONFIGS,
                format!("cannot read the topic configs: {e}"),
                "the Kafka principal needs DESCRIBE_CONFIGS on agentwatch's topics",
            )
        }
    };
    let mut seen = Vec::new();
    let mut problems = Vec::new();
    let mut fixes = Vec::new();
    for (topic, policy) in names.iter().zip(policies) {
        let shown = policy
            .clone()
            .unwrap_or_else(|| "(not reported)".to_owned());
        seen.push(format!("{topic} cleanup.policy={shown}"));
        let Some(policy) = policy else { continue };
        if *topic == k.state_topic && !topics::is_compacted(&policy) {
            problems.push(format!(
                "the state topic {topic} has cleanup.policy={policy}, not compact"
            ));
            fixes.push(format!(
                "compact the state topic: `kafka-configs.sh --bootstrap-server {} --alter \
                 --entity-type topics --entity-name {topic} --add-config cleanup.policy=compact` \
                 (or delete it and run `agentwatch kafka create-topics`); without compaction \
                 quiet agents' state expires and a restart re-emits them as creates",
                k.brokers
            ));
        }
        if *topic == k.events_topic && policy.trim() == "compact" {
            problems.push(format!(
                "the events topic {topic} has cleanup.policy=compact: older events of an agent \
                 are removed"
            ));
            fixes.push(format!(
                "set cleanup.policy=delete on {topic} (events are history, retention by time)"
            ));
        }
    }
    if problems.is_empty() {
        Check::ok(CONFIGS, seen.join(", "))
    } else {
        Check::fail(CONFIGS, problems.join("; "), fixes.join("; "))
    }
}

/// One value-less record to the events topic, through the service's own producer
/// settings, acknowledged within `timeout`.
async fn produce(k: &KafkaConfig, timeout: Duration, wait: &str) -> Check {
    let mut pcfg = k.clone();
    pcfg.message_timeout = timeout.max(Duration::from_millis(100));
    let producer = match create_producer(&pcfg) {
        Ok(p) => p,
        Err(e) => {
            return Check::fail(
                PRODUCE,
                e.to_string(),
                "a kafka.options property is unknown or has a bad value",
            )
        }
    };
    let headers = OwnedHeaders::new()
        .insert(Header {
            key: "ce_type",
            value: Some(PROBE_TYPE),
        })
        .insert(Header {
            key: "ce_specversion",
            value: Some("1.0"),
        });
    let record = FutureRecord::<str, [u8]>::to(&k.events_topic)
        .key(PROBE_KEY)
        .headers(headers);
    let sent = tokio::time::timeout(
        timeout + Duration::from_secs(1),
        producer.send(record, Timeout::After(timeout)),
    )
    .await;
    match sent {
        Ok(Ok(d)) => Check::ok(
            PRODUCE,
            format!(
                "acknowledged (acks=all, idempotent) by {} partition {} at offset {}: a \
                 value-less record, key {PROBE_KEY}, ce_type {PROBE_TYPE}, which agentwatch's \
                 readers skip (--skip-produce to not write it)",
                k.events_topic, d.partition, d.offset
            ),
        ),
        Ok(Err((e, _))) => {
            let fix = produce_fix(&e, k);
            Check::fail(PRODUCE, format!("not acknowledged: {e}"), fix)
        }
        Err(_) => Check::fail(
            PRODUCE,
            format!("not acknowledged within {wait}"),
            produce_fix(
                &KafkaError::MessageProduction(RDKafkaErrorCode::MessageTimedOut),
                k,
            ),
        ),
    }
}

fn produce_fix(e: &KafkaError, k: &KafkaConfig) -> String {
    match e.rdkafka_error_code() {
        Some(
            RDKafkaErrorCode::NotEnoughReplicas | RDKafkaErrorCode::NotEnoughReplicasAfterAppend,
        ) => {
            format!(
                "fewer in-sync replicas of {} than its min.insync.replicas: a broker is down or \
                 lagging; bring it back (agentwatch keeps changes pending meanwhile)",
                k.events_topic
            )
        }
        Some(
            RDKafkaErrorCode::TopicAuthorizationFailed
            | RDKafkaErrorCode::ClusterAuthorizationFailed
            | RDKafkaErrorCode::TransactionalIdAuthorizationFailed,
        ) => format!(
            "grant the principal WRITE on {} and {} and IDEMPOTENT_WRITE on the cluster \
             (the service's producer is idempotent)",
            k.events_topic, k.state_topic
        ),
        Some(RDKafkaErrorCode::MessageTimedOut) => "the partition leader did not acknowledge \
             in time: its advertised address (see kafka brokers) may be unreachable from here, \
             or the cluster is overloaded; try a longer --timeout"
            .to_owned(),
        _ => "read the error above; the service produces with the same settings, so it would \
              fail the same way"
            .to_owned(),
    }
}
