//! librdkafka client settings.

use rdkafka::{config::ClientConfig, producer::FutureProducer};

use super::{KafkaConfig, SinkError};

/// Base client config: brokers plus the user's pass-through `kafka.options` and
/// `kafka.option_files`.
pub fn client_config(cfg: &KafkaConfig) -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", &cfg.brokers)
        .set("client.id", "agentwatch");
    for (k, v) in cfg.librdkafka_options() {
        c.set(k, v);
    }
    c
}

/// The idempotent producer (`acks=all`): per-partition order and no duplicates from
/// librdkafka's own retries. Its queue is sized above `kafka.max_in_flight` so the
/// sink's own bound, not a `QueueFull` error, is what limits in-flight work.
pub fn create_producer(cfg: &KafkaConfig) -> Result<FutureProducer, SinkError> {
    producer_config(cfg).create().map_err(SinkError::Client)
}

/// The producer settings of [`create_producer`], for other producer types (the
/// benchmark's baseline).
pub fn producer_config(cfg: &KafkaConfig) -> ClientConfig {
    let mut c = client_config(cfg);
    if !cfg.options.contains_key("linger.ms") {
        c.set("linger.ms", "5");
    }
    let queue_messages = (cfg.max_in_flight * 2).clamp(100_000, 10_000_000);
    let queue_kbytes = (cfg.max_in_flight_bytes / 1024 * 2).clamp(1024, 2_097_151);
    c.set("enable.idempotence", "true")
        .set("acks", "all")
        .set("compression.type", cfg.compression.as_str())
        .set(
            "message.timeout.ms",
            cfg.message_timeout.as_millis().to_string(),
        )
        .set("queue.buffering.max.messages", queue_messages.to_string())
        .set("queue.buffering.max.kbytes", queue_kbytes.to_string());
    c
}
