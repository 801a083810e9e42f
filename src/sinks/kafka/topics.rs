//! Explicit topic creation and checks. agentwatch never relies on broker auto-create:
//! it creates its topics with the configured partitions and configs, and refuses a
//! state topic that is not compacted.

use std::time::Duration;

use rdkafka::{
    admin::{AdminClient, AdminOptions, NewTopic, ResourceSpecifier, TopicReplication},
    client::DefaultClientContext,
    types::RDKafkaErrorCode,
};

use super::{client_config, KafkaConfig, SinkError};

const ADMIN_TIMEOUT: Duration = Duration::from_secs(15);

/// Creates the events, state and slot topics when missing, then checks the state topic
/// is compacted.
pub async fn ensure_topics(cfg: &KafkaConfig) -> Result<(), SinkError> {
    let admin: AdminClient<DefaultClientContext> =
        client_config(cfg).create().map_err(SinkError::Client)?;
    let opts = AdminOptions::new().operation_timeout(Some(ADMIN_TIMEOUT));
    let topics = [
        NewTopic::new(
            &cfg.events_topic,
            cfg.partitions,
            TopicReplication::Fixed(cfg.replication_factor),
        )
        .set("cleanup.policy", "delete"),
        NewTopic::new(
            &cfg.state_topic,
            cfg.partitions,
            TopicReplication::Fixed(cfg.replication_factor),
        )
        .set("cleanup.policy", "compact"),
        // GSE slot messages: a work queue, not state (see `crate::slot`).
        NewTopic::new(
            &cfg.slot_topic,
            cfg.partitions,
            TopicReplication::Fixed(cfg.replication_factor),
        )
        .set("cleanup.policy", "delete"),
    ];
    let results = match admin.create_topics(&topics, &opts).await {
        Ok(r) => r,
        Err(source) => {
            // A timeout says nothing about a refused certificate or password; ask
            // librdkafka why, so the start-up error names the cause.
            let probe = cfg.clone();
            let why = tokio::task::spawn_blocking(move || {
                super::probe::why_unreachable(&probe, Duration::from_secs(5))
            })
            .await
            .ok()
            .flatten();
            return Err(match why {
                Some((_, reason)) => SinkError::Unreachable {
                    brokers: cfg.brokers.clone(),
                    reason,
                },
                None => SinkError::CreateTopic {
                    topic: format!(
                        "{}, {}, {}",
                        cfg.events_topic, cfg.state_topic, cfg.slot_topic
                    ),
                    source,
                },
            });
        }
    };
    for r in results {
        match r {
            Ok(topic) => tracing::info!(topic, "created topic"),
            Err((topic, RDKafkaErrorCode::TopicAlreadyExists)) => {
                tracing::debug!(topic, "topic exists")
            }
            Err((topic, code)) => {
                return Err(SinkError::CreateTopic {
                    topic,
                    source: rdkafka::error::KafkaError::AdminOp(code),
                })
            }
        }
    }
    check_state_topic(&admin, cfg, &opts).await
}

/// A non-compacted state topic would eventually lose the state of quiet agents and
/// make the next restart emit phantom creates, so it is an error, not a warning.
async fn check_state_topic(
    admin: &AdminClient<DefaultClientContext>,
    cfg: &KafkaConfig,
    opts: &AdminOptions,
) -> Result<(), SinkError> {
    let spec = ResourceSpecifier::Topic(&cfg.state_topic);
    let described = match admin.describe_configs([&spec], opts).await {
        Ok(mut v) => v.pop(),
        Err(e) => {
            tracing::warn!(topic = %cfg.state_topic, error = %e,
                "cannot describe topic configs; cleanup.policy not checked");
            return Ok(());
        }
    };
    let resource = match described {
        Some(Ok(r)) => r,
        Some(Err(e)) => {
            tracing::warn!(topic = %cfg.state_topic, error = %e,
                "cannot describe topic configs; cleanup.policy not checked");
            return Ok(());
        }
        None => return Ok(()),
    };
    let policy = resource
        .get("cleanup.policy")
        .and_then(|e| e.value.clone())
        .unwrap_or_default();
    if is_compacted(&policy) {
        Ok(())
    } else {
        Err(SinkError::TopicMisconfigured {
            topic: cfg.state_topic.clone(),
            detail: format!(
                "cleanup.policy is \"{policy}\"; the state topic must be compacted \
                 (cleanup.policy=compact) or quiet agents' state is eventually lost"
            ),
        })
    }
}

/// Whether a `cleanup.policy` value compacts (`compact`, or `compact,delete`).
pub fn is_compacted(policy: &str) -> bool {
    policy.split(',').any(|p| p.trim() == "compact")
}

/// The `cleanup.policy` of each of `topics`, as the broker reports it (`None` when it
/// reports none), in the same order. Only reads: nothing is created or changed (for
/// `agentwatch doctor`; [`ensure_topics`] is the creating variant).
pub async fn cleanup_policies(
    cfg: &KafkaConfig,
    topics: &[&str],
    timeout: Duration,
) -> Result<Vec<Option<String>>, SinkError> {
    let admin: AdminClient<DefaultClientContext> =
        client_config(cfg).create().map_err(SinkError::Client)?;
    let opts = AdminOptions::new().request_timeout(Some(timeout));
    let specs: Vec<ResourceSpecifier> =
        topics.iter().map(|t| ResourceSpecifier::Topic(t)).collect();
    let metadata_error = |source| SinkError::Metadata {
        topic: topics.join(", "),
        source,
    };
    let described = admin
        .describe_configs(&specs, &opts)
        .await
        .map_err(metadata_error)?;
    topics
        .iter()
        .zip(described)
        .map(|(topic, r)| match r {
            Ok(resource) => Ok(resource.get("cleanup.policy").and_then(|e| e.value.clone())),
            Err(code) => Err(SinkError::Metadata {
                topic: (*topic).to_owned(),
                source: rdkafka::error::KafkaError::AdminOp(code),
            }),
        })
        .collect()
}
