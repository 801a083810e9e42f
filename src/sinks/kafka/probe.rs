//! Why no broker answers: librdkafka reports the cause of a failed connection (TLS
//! handshake, SASL authentication) only through its error callback, never in the
//! error of the call that timed out. [`LastError`] keeps it; [`why_unreachable`] asks.

use std::{
    sync::{Arc, Mutex},
    time::Duration,
};

use rdkafka::{
    client::ClientContext,
    error::KafkaError,
    producer::{BaseProducer, DeliveryResult, Producer, ProducerContext},
    types::RDKafkaErrorCode,
};

use super::{client_config, KafkaConfig};

/// The last error librdkafka reported through its error callback. A failed metadata
/// call only says "transport failure"; why (TLS handshake, SASL authentication) comes
/// through this callback, with an error code to tell the two apart.
#[derive(Clone, Default)]
pub struct LastError(Arc<Mutex<Option<(RDKafkaErrorCode, String)>>>);

impl LastError {
    pub fn take(&self) -> Option<(RDKafkaErrorCode, String)> {
        self.0.lock().ok().and_then(|mut g| g.take())
    }
}

impl ClientContext for LastError {
    fn error(&self, error: KafkaError, reason: &str) {
        let code = error
            .rdkafka_error_code()
            .unwrap_or(RDKafkaErrorCode::Unknown);
        // The first failure is the cause: the "all brokers are down" that follows it,
        // or a disconnect after a failed TLS or SASL step, must not hide it.
        if let Ok(mut last) = self.0.lock() {
            let keep = match last.as_ref() {
                None => false,
                Some((RDKafkaErrorCode::SSL | RDKafkaErrorCode::Authentication, _)) => true,
                Some(_) => !matches!(
                    code,
                    RDKafkaErrorCode::SSL | RDKafkaErrorCode::Authentication
                ),
            };
            if !keep {
                *last = Some((code, reason.to_owned()));
            }
        }
    }
}

/// Nothing is produced through this client; the impl only makes it a BaseProducer.
impl ProducerContext for LastError {
    type DeliveryOpaque = ();
    fn delivery(&self, _: &DeliveryResult<'_>, _: ()) {}
}

/// Connects with the service's client settings (blocking, up to `timeout`) and returns
/// what librdkafka reported, when no broker answered metadata. `None`: the brokers
/// answered, or librdkafka gave no reason.
pub fn why_unreachable(cfg: &KafkaConfig, timeout: Duration) -> Option<(RDKafkaErrorCode, String)> {
    let last_error = LastError::default();
    let client: BaseProducer<LastError> = client_config(cfg)
        .create_with_context(last_error.clone())
        .ok()?;
    if client.client().fetch_metadata(None, timeout).is_ok() {
        return None;
    }
    // Serves the queued error events, so `last_error` holds the cause.
    client.poll(Duration::from_millis(200));
    last_error.take()
}
