//! The consumer of the slot topic: one record at a time, de-duplicated by
//! `message_id`, answered through GSE `cluster/dispatch_message`.

use std::{sync::Arc, time::Duration};

use rdkafka::{
    consumer::{CommitMode, Consumer, StreamConsumer},
    message::Message,
};
use secrecy::SecretString;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::{
    content::Decision, decide, dedup::Dedup, SlotConfig, SlotError, SlotRequest, SlotResult,
};
use crate::{
    config::Config,
    http::Health,
    metrics::Metrics,
    shard::Shard,
    sinks::kafka::{client_config, KafkaConfig},
    snapshot::Store,
    sources::gse::{
        admin::{DispatchMessage, GseAdminClient},
        GseApi,
    },
};

/// Pause after a consumer error before polling again.
const ERROR_PAUSE: Duration = Duration::from_secs(1);

pub struct Worker {
    cfg: SlotConfig,
    kafka: KafkaConfig,
    slot_id: i64,
    dispatch_token: SecretString,
    store: Arc<Store>,
    health: Health,
    gse: GseAdminClient,
    shard: Shard,
    metrics: Arc<Metrics>,
    dedup: Dedup,
}

impl Worker {
    /// `cfg` must be validated and enabled (slot id and dispatch token set).
    pub fn new(
        cfg: &SlotConfig,
        kafka: &KafkaConfig,
        gse: GseAdminClient,
        store: Arc<Store>,
        health: Health,
        shard: Shard,
        metrics: Arc<Metrics>,
    ) -> Result<Worker, SlotError> {
        Ok(Worker {
            slot_id: cfg
                .slot_id
                .ok_or(SlotError::NotConfigured("slot.slot_id"))?,
            dispatch_token: cfg
                .dispatch_token
                .clone()
                .ok_or(SlotError::NotConfigured("slot.dispatch_token"))?,
            dedup: Dedup::new(cfg.dedup_window, cfg.dedup_capacity),
            cfg: cfg.clone(),
            kafka: kafka.clone(),
            store,
            health,
            gse,
            shard,
            metrics,
        })
    }

    /// The worker of the service described by `cfg` (`[slot]`, `[kafka]`, `[gse]`,
    /// `[bk]`, `[shard]`); replies always use GSE 2.0 `dispatch_message`.
    pub fn from_config(
        cfg: &Config,
        store: Arc<Store>,
        health: Health,
        metrics: Arc<Metrics>,
    ) -> Result<Worker, SlotError> {
        let gse = GseAdminClient::new(&cfg.gse, &cfg.bk, GseApi::V2, metrics.clone())?;
        Worker::new(
            &cfg.slot,
            &cfg.kafka,
            gse,
            store,
            health,
            cfg.shard.shard(),
            metrics,
        )
    }

    /// The consumer group: one per shard, because each replica answers only for its own
    /// agents and so must see every message.
    pub fn group_id(&self) -> String {
        if self.shard.total > 1 {
            format!("{}-shard{}", self.cfg.consumer_group, self.shard.index)
        } else {
            self.cfg.consumer_group.clone()
        }
    }

    /// Waits until the service is ready (the snapshot answers lookups), then consumes
    /// until `shutdown`, committing the offsets of handled records on the way out.
    pub async fn run(mut self, shutdown: CancellationToken) -> Result<(), SlotError> {
        while !self.health.is_ready() {
            tokio::select! {
                () = shutdown.cancelled() => return Ok(()),
                () = tokio::time::sleep(Duration::from_millis(100)) => {}
            }
        }
        let group = self.group_id();
        let topic = self.kafka.slot_topic.clone();
        let consumer: StreamConsumer = client_config(&self.kafka)
            .set("client.id", "agentwatch-slot")
            .set("group.id", &group)
            // Offsets are stored by hand after a record is handled and committed in the
            // background: at-least-once.
            .set("enable.auto.commit", "true")
            .set("enable.auto.offset.store", "false")
            // A new group starts at the oldest record: messages accepted before the
            // worker first ran are still answered.
            .set("auto.offset.reset", "earliest")
            .set(
                "session.timeout.ms",
                self.cfg.session_timeout.as_millis().to_string(),
            )
            .set(
                "heartbeat.interval.ms",
                (self.cfg.session_timeout / 3).as_millis().to_string(),
            )
            .create()
            .map_err(SlotError::Kafka)?;
        consumer
            .subscribe(&[&topic])
            .map_err(|source| SlotError::Subscribe {
                topic: topic.clone(),
                source,
            })?;
        tracing::info!(%topic, %group, "slot worker consuming");
        loop {
            let received = tokio::select! {
                () = shutdown.cancelled() => break,
                m = consumer.recv() => m,
            };
            let (partition, offset, payload) = match received {
                Ok(m) => (m.partition(), m.offset(), m.payload().map(<[u8]>::to_vec)),
                Err(e) => {
                    tracing::warn!(error = %e, "slot consumer error");
                    tokio::select! {
                        () = shutdown.cancelled() => break,
                        () = tokio::time::sleep(ERROR_PAUSE) => continue,
                    }
                }
            };
            let result = self.handle(payload.as_deref()).await;
            result.count(&self.metrics);
            if let Err(e) = consumer.store_offset(&topic, partition, offset) {
                // The partition was revoked meanwhile: its new owner handles the record
                // again (at least once).
                tracing::debug!(partition, offset, error = %e, "cannot store slot offset");
            }
        }
        // `commit_consumer_state` blocks on the broker.
        let committed = tokio::task::spawn_blocking(move || {
            let r = consumer.commit_consumer_state(CommitMode::Sync);
            drop(consumer);
            r
        })
        .await;
        match committed {
            Ok(Ok(())) => tracing::info!("slot worker stopped; offsets committed"),
            Ok(Err(e)) => tracing::debug!(error = %e, "slot worker stopped; nothing committed"),
            Err(e) => tracing::warn!(error = %e, "slot worker: final commit task failed"),
        }
        Ok(())
    }

    /// Handles one record; never fails (every outcome is a [`SlotResult`]).
    pub async fn handle(&mut self, payload: Option<&[u8]>) -> SlotResult {
        let Some(payload) = payload else {
            tracing::warn!("slot record without a value");
            return SlotResult::BadContent;
        };
        // The receiver validated it; this only fails for records from another writer.
        let req = match SlotRequest::parse(payload) {
            Ok(r) => r,
            Err(error) => {
                tracing::warn!(%error, "slot record is not a slot request");
                return SlotResult::BadContent;
            }
        };
        if !self.shard.owns(&req.bk_agent_id) {
            return SlotResult::OtherShard;
        }
        let now = Instant::now().into_std();
        if self.dedup.contains(&req.message_id, now) {
            tracing::debug!(message_id = %req.message_id, "duplicate slot message dropped");
            return SlotResult::Duplicate;
        }
        let store = &self.store;
        let decision = decide(
            &req,
            |id| store.acked(id).map(|(state, _)| state.biz_id),
            &self.cfg,
        );
        let result = match decision {
            Decision::Reply(content) => self.reply(&req, content).await,
            Decision::UnknownType(kind) => {
                tracing::warn!(message_id = %req.message_id, agent_id = %req.bk_agent_id,
                    r#type = %kind, "slot message of an unknown type dropped");
                SlotResult::UnknownType
            }
            Decision::BadContent(why) => {
                tracing::warn!(message_id = %req.message_id, agent_id = %req.bk_agent_id,
                    error = %why, "slot message content is not a request; dropped");
                SlotResult::BadContent
            }
            Decision::UnknownAgent => {
                tracing::warn!(message_id = %req.message_id, agent_id = %req.bk_agent_id,
                    "slot message from an agent not in the snapshot; not answered");
                SlotResult::UnknownAgent
            }
        };
        if result != SlotResult::DispatchFailed {
            self.dedup.remember(&req.message_id, now);
        }
        result
    }

    async fn reply(&self, req: &SlotRequest, content: String) -> SlotResult {
        let msg = DispatchMessage {
            message_id: req.message_id.clone(),
            agent_id_list: vec![req.bk_agent_id.clone()],
            content,
            slot_id: self.slot_id,
            token: self.dispatch_token.clone(),
        };
        match self.gse.dispatch_message(&msg).await {
            Ok(()) => {
                tracing::debug!(message_id = %req.message_id, agent_id = %req.bk_agent_id,
                    "slot message answered");
                SlotResult::Handled
            }
            Err(error) => {
                tracing::warn!(message_id = %req.message_id, agent_id = %req.bk_agent_id,
                    %error, "dispatch_message failed; the slot message stays unanswered");
                SlotResult::DispatchFailed
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::sources::{bk::tests::bk_config, gse::GseConfig};

    fn worker(shard: Shard) -> Worker {
        let cfg = SlotConfig {
            enabled: true,
            slot_id: Some(1),
            dispatch_token: Some(SecretString::from("t")),
            ..SlotConfig::default()
        };
        // Nothing listens there: these records must never reach GSE.
        let gse_cfg = GseConfig {
            base_url: "http://127.0.0.1:9/".into(),
            ..GseConfig::default()
        };
        let gse = GseAdminClient::new(&gse_cfg, &bk_config(), GseApi::V2, Metrics::new()).unwrap();
        let (store, _work) = Store::new();
        Worker::new(
            &cfg,
            &KafkaConfig::default(),
            gse,
            store,
            Health::default(),
            shard,
            Metrics::new(),
        )
        .unwrap()
    }

    fn record(message_id: &str, agent_id: &str) -> Vec<u8> {
        let content = json!({"type": "fetch/host/dataid"}).to_string();
        json!({"message_id": message_id, "bk_agent_id": agent_id, "content": content})
            .to_string()
            .into_bytes()
    }

    #[tokio::test]
    async fn other_shards_foreign_records_and_repeats_are_counted_not_answered() {
        let shard = Shard { index: 0, total: 2 };
        let mut w = worker(shard);
        assert_eq!(w.group_id(), "agentwatch-slot-shard0");
        let ids: Vec<String> = (0..64).map(|i| format!("agent-{i}")).collect();
        let theirs = ids.iter().find(|id| !shard.owns(id)).unwrap();
        let mine = ids.iter().find(|id| shard.owns(id)).unwrap();

        let r = record("m1", theirs);
        assert_eq!(w.handle(Some(&r)).await, SlotResult::OtherShard);
        assert_eq!(w.handle(None).await, SlotResult::BadContent);
        assert_eq!(w.handle(Some(b"{}")).await, SlotResult::BadContent);
        // Not in the (empty) snapshot: no reply, and the id is remembered.
        let r = record("m2", mine);
        assert_eq!(w.handle(Some(&r)).await, SlotResult::UnknownAgent);
        assert_eq!(w.handle(Some(&r)).await, SlotResult::Duplicate);
    }

    #[test]
    fn an_unsharded_worker_uses_the_configured_group() {
        assert_eq!(worker(Shard::default()).group_id(), "agentwatch-slot");
    }
}
