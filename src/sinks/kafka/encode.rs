//! Record encoding: protobuf or proto3 JSON payloads, CloudEvents binary-mode headers.

use std::io::Write;

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
        Format::Json => match serde_json::from_slice(b) {
            Ok(m) => m,
            Err(e) => decode_json_with_nulls(b).ok_or(e)??,
        },
    })
}

/// proto3 JSON reads `null` as the field's default, but pbjson rejects it, while its
/// own encoder writes a NaN or infinite double (a `cpu_rate` restored from a foreign
/// protobuf record, say) as `null`: such a record would not decode. Read it again
/// without its null members; `None` when it holds none (the first error stands).
fn decode_json_with_nulls<M: serde::de::DeserializeOwned>(
    b: &[u8],
) -> Option<Result<M, serde_json::Error>> {
    let mut value: serde_json::Value = serde_json::from_slice(b).ok()?;
    strip_nulls(&mut value).then(|| serde_json::from_value(value))
}

/// Removes every object member whose value is null; true when there was one. The depth
/// is bounded by serde_json's recursion limit.
fn strip_nulls(value: &mut serde_json::Value) -> bool {
    match value {
        serde_json::Value::Object(map) => {
            let before = map.len();
            map.retain(|_, v| !v.is_null());
            let mut stripped = map.len() != before;
            for v in map.values_mut() {
                stripped |= strip_nulls(v);
            }
            stripped
        }
        serde_json::Value::Array(items) => items
            .iter_mut()
            .fold(false, |stripped, v| strip_nulls(v) | stripped),
        _ => false,
    }
}

pub fn encode_event(ev: &AgentEvent, format: Format) -> Vec<u8> {
    let mut buf = Vec::new();
    encode_event_into(ev, format, &mut buf);
    buf
}

/// [`encode_event`] into `buf` (cleared first; its allocation reused from record to
/// record: librdkafka copies the payload when it takes the record).
pub fn encode_event_into(ev: &AgentEvent, format: Format, buf: &mut Vec<u8>) {
    buf.clear();
    match format {
        // A Vec grows as needed: encoding into one cannot run out of room.
        Format::Protobuf => {
            let _ = ev.encode(buf);
        }
        Format::Json => {
            if serde_json::to_writer(&mut *buf, ev).is_err() {
                buf.clear();
                buf.extend_from_slice(b"{}");
            }
        }
    }
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

/// CloudEvents `type` of an event, e.g. `io.agentwatch.agent.v1.update` (static: no
/// string built per event).
pub fn ce_type(op: i32) -> &'static str {
    match Op::try_from(op) {
        Ok(Op::Create) => "io.agentwatch.agent.v1.create",
        Ok(Op::Update) => "io.agentwatch.agent.v1.update",
        Ok(Op::Delete) => "io.agentwatch.agent.v1.delete",
        Ok(Op::Snapshot) => "io.agentwatch.agent.v1.snapshot",
        _ => "io.agentwatch.agent.v1.unspecified",
    }
}

/// CloudEvents 1.0 Kafka protocol binding, binary mode: attributes as `ce_*` headers,
/// the payload is the data.
pub fn event_headers(ev: &AgentEvent, format: Format) -> OwnedHeaders {
    let time = std::time::UNIX_EPOCH + std::time::Duration::from_millis(ev.ts_ms.max(0) as u64);
    // Formatted on the stack: `YYYY-MM-DDTHH:MM:SS.mmmZ` is 24 bytes (up to year 9999).
    let mut buf = [0u8; 32];
    let ce_time = {
        let mut w = &mut buf[..];
        let _ = write!(w, "{}", humantime::format_rfc3339_millis(time));
        let len = 32 - w.len();
        std::str::from_utf8(&buf[..len]).unwrap_or_default()
    };
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
            value: Some(ce_type(ev.op)),
        })
        .insert(Header {
            key: "ce_source",
            value: Some(ev.source.as_str()),
        })
        .insert(Header {
            key: "ce_time",
            value: Some(ce_time),
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
    fn a_nan_rate_written_as_json_null_reads_back_as_zero() {
        let mut ev = event();
        if let Some(after) = ev.after.as_mut() {
            after.info = Some(crate::proto::v1::AgentInfo {
                cpu_rate: f64::NAN,
                mem_rate: 40.25,
                ..Default::default()
            });
        }
        let json = encode_event(&ev, Format::Json);
        assert!(String::from_utf8_lossy(&json).contains("\"cpu_rate\":null"));
        let back = decode_event(&json, Format::Json).unwrap();
        let info = back.after.and_then(|a| a.info).unwrap();
        assert_eq!((info.cpu_rate, info.mem_rate), (0.0, 40.25));
    }

    #[test]
    fn json_that_is_invalid_for_another_reason_keeps_its_first_error() {
        let err = decode_event(br#"{"seq":"x","ts_ms":null}"#, Format::Json).unwrap_err();
        assert!(err.to_string().contains("invalid JSON"), "{err}");
        assert!(decode_event(b"{", Format::Json).is_err());
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
        let ty = h.iter().find(|h| h.key == "ce_type").and_then(|h| h.value);
        assert_eq!(ty, Some(&b"io.agentwatch.agent.v1.update"[..]));
    }
}
