//! Record encoding: protobuf or proto3 JSON payloads, CloudEvents binary-mode headers.

use prost::Message;
use rdkafka::message::{Header, OwnedHeaders};

use super::Format;
use crate::proto::v1::{AgentEvent, AgentStateRecord, Op};

pub const CONTENT_TYPE_PROTOBUF: &str = "application/x-protobuf";
pub const CONTENT_TYPE_JSON: &str = "application/json";

#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    #[error("invalid protobuf: {0}")]
    Protobuf(#[from] prost::DecodeError),
    #[error("invalid JSON: {0}")]
    Json(#[from] serde_json::Error),
}

impl Format {
    pub fn content_type(self) -> &'static str {
        match self {
            Format::Protobuf => CONTENT_TYPE_PROTOBUF,
            Format::Json => CONTENT_TYPE_JSON,
        }
    }

    /// The format a record was written in, from its `content-type` header; records
    /// without one are assumed to be in `self`.
    pub fn from_content_type(self, ct: Option<&[u8]>) -> Format {
        match ct {
            Some(b) if b == CONTENT_TYPE_JSON.as_bytes() => Format::Json,
            Some(b) if b == CONTENT_TYPE_PROTOBUF.as_bytes() => Format::Protobuf,
            _ => self,
        }
    }
}

fn encode<M: Message + serde::Serialize>(m: &M, format: Format) -> Vec<u8> {
    match format {
        Format::Protobuf => m.encode_to_vec(),
        // Serializing generated types to a Vec cannot fail (no maps with non-string
        // keys, no I/O); fall back to an empty object rather than panic.
        Format::Json => serde_json::to_vec(m).unwrap_or_else(|_| b"{}".to_vec()),
    }
}

fn decode<M: Message + Default + serde::de::DeserializeOwned>(
    b: &[u8],
    format: Format,
) -> Result<M, DecodeError> {
    Ok(match format {
        Format::Protobuf => M::decode(b)?,
        Format::Json => serde_json::from_slice(b)?,
    })
}

pub fn encode_event(ev: &AgentEvent, format: Format) -> Vec<u8> {
    encode(ev, format)
}

pub fn decode_event(b: &[u8], format: Format) -> Result<AgentEvent, DecodeError> {
    decode(b, format)
}

pub fn encode_state(rec: &AgentStateRecord, format: Format) -> Vec<u8> {
    encode(rec, format)
}

pub fn decode_state(b: &[u8], format: Format) -> Result<AgentStateRecord, DecodeError> {
    decode(b, format)
}

/// Short lowercase name of an op (metric label, CloudEvents type suffix).
pub fn op_name(op: i32) -> &'static str {
    match Op::try_from(op) {
        Ok(Op::Create) => "create",
        Ok(Op::Update) => "update",
        Ok(Op::Delete) => "delete",
        Ok(Op::Snapshot) => "snapshot",
        _ => "unspecified",
    }
}

/// CloudEvents `type` of an event, e.g. `io.agentwatch.agent.v1.update`.
pub fn ce_type(op: i32) -> String {
    format!("io.agentwatch.agent.v1.{}", op_name(op))
}

/// CloudEvents 1.0 Kafka protocol binding, binary mode: attributes as `ce_*` headers,
/// the payload is the data.
pub fn event_headers(ev: &AgentEvent, format: Format) -> OwnedHeaders {
    let time = std::time::UNIX_EPOCH + std::time::Duration::from_millis(ev.ts_ms.max(0) as u64);
    let ce_time = humantime::format_rfc3339_millis(time).to_string();
    let ce_type = ce_type(ev.op);
    OwnedHeaders::new_with_capacity(6)
        .insert(Header {
            key: "ce_specversion",
            value: Some("1.0"),
        })
        .insert(Header {
            key: "ce_id",
            value: Some(ev.event_id.as_str()),
        })
        .insert(Header {
            key: "ce_type",
            value: Some(ce_type.as_str()),
        })
        .insert(Header {
            key: "ce_source",
            value: Some(ev.source.as_str()),
        })
        .insert(Header {
            key: "ce_time",
            value: Some(ce_time.as_str()),
        })
        .insert(Header {
            key: "content-type",
            value: Some(format.content_type()),
        })
}

/// Headers of a state record: only the content type (tombstones carry none).
pub fn state_headers(format: Format) -> OwnedHeaders {
    OwnedHeaders::new_with_capacity(1).insert(Header {
        key: "content-type",
        value: Some(format.content_type()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::v1::AgentState;

    fn event() -> AgentEvent {
        AgentEvent {
            op: Op::Update as i32,
            before: Some(AgentState {
                agent_id: "a".into(),
                status_code: 2,
                ..AgentState::default()
            }),
            after: Some(AgentState {
                agent_id: "a".into(),
                status_code: 3,
                host_id: 12,
                ..AgentState::default()
            }),
            ts_ms: 1_700_000_000_000,
            seq: 4,
            sweep: 9,
            event_id: "id".into(),
            source: "agentwatch://t".into(),
            changed_fields: vec!["status_code".into()],
            incarnation_ms: 1_600_000_000_000,
        }
    }

    #[test]
    fn protobuf_and_json_round_trip() {
        for f in [Format::Protobuf, Format::Json] {
            let b = encode_event(&event(), f);
            assert_eq!(decode_event(&b, f).expect("decodes"), event());
        }
    }

    #[test]
    fn json_uses_the_proto_field_names_and_enum_names() {
        let v: serde_json::Value =
            serde_json::from_slice(&encode_event(&event(), Format::Json)).expect("json");
        assert_eq!(v["op"], "OP_UPDATE");
        assert_eq!(v["after"]["status_code"], 3);
        assert_eq!(
            v["after"]["host_id"], "12",
            "int64 is a string in proto3 JSON"
        );
        assert_eq!(v["changed_fields"][0], "status_code");
        assert!(v.get("event_id").is_some());
    }

    #[test]
    fn cloudevents_headers_are_present() {
        use rdkafka::message::Headers;
        let h = event_headers(&event(), Format::Protobuf);
        let keys: Vec<&str> = h.iter().map(|h| h.key).collect();
        assert_eq!(
            keys,
            [
                "ce_specversion",
                "ce_id",
                "ce_type",
                "ce_source",
                "ce_time",
                "content-type"
            ]
        );
        let time = h.iter().find(|h| h.key == "ce_time").and_then(|h| h.value);
        assert_eq!(time, Some(&b"2023-11-14T22:13:20.000Z"[..]));
    }
}
