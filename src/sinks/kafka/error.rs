use rdkafka::error::KafkaError;

/// Errors of the Kafka boundary (topics, restore, producer set-up).
#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    #[error("cannot create Kafka client: {0}")]
    Client(#[source] KafkaError),
    #[error("cannot create topic {topic}: {source}")]
    CreateTopic {
        topic: String,
        #[source]
        source: KafkaError,
    },
    /// No broker answered, and librdkafka said why (TLS, SASL, ...).
    #[error("cannot reach Kafka at {brokers}: {reason}")]
    Unreachable { brokers: String, reason: String },
    #[error("topic {topic} is misconfigured: {detail}")]
    TopicMisconfigured { topic: String, detail: String },
    #[error("topic {topic} does not exist (and kafka.create_topics is false)")]
    TopicMissing { topic: String },
    #[error("cannot read metadata of topic {topic}: {source}")]
    Metadata {
        topic: String,
        #[source]
        source: KafkaError,
    },
    #[error("restore from {topic} failed: {detail}")]
    Restore { topic: String, detail: String },
    #[error("restore from {topic} did not reach the end within {timeout:?}")]
    RestoreTimeout {
        topic: String,
        timeout: std::time::Duration,
    },
}
