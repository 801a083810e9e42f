//! The slot request (bk-api.md B §7) and what to answer: a pure function of the
//! request, the snapshot lookup and the configured data ids.

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use super::{SlotConfig, MAX_MESSAGE_ID_LEN};

/// The only request type agentwatch answers, as bk-monitor does.
pub const FETCH_HOST_DATAID: &str = "fetch/host/dataid";

/// Agent ids are at most 64 bytes (bk-api.md B §3.3).
const MAX_AGENT_ID_LEN: usize = 64;

/// The body GSE posts to the slot endpoint. Unknown fields are ignored (GSE may add
/// some); `content` is required and must be a string even though bk-monitor declares
/// it optional, because bk-monitor reads it unconditionally.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
pub struct SlotRequest {
    pub message_id: String,
    pub bk_agent_id: String,
    pub content: String,
}

impl SlotRequest {
    /// Parses and checks a request body; the error names the offending field.
    pub fn parse(body: &[u8]) -> Result<SlotRequest, String> {
        if body.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
            return Err("body: must be a JSON object".to_owned());
        }
        let mut de = serde_json::Deserializer::from_slice(body);
        let req: SlotRequest = serde_path_to_error::deserialize(&mut de).map_err(|e| {
            let path = e.path().to_string();
            if path == "." {
                // e.g. "missing field `content`", which names the field itself.
                e.inner().to_string()
            } else {
                format!("{path}: {}", e.inner())
            }
        })?;
        de.end()
            .map_err(|e| format!("body: trailing characters after the JSON object: {e}"))?;
        check_id("message_id", &req.message_id, MAX_MESSAGE_ID_LEN)?;
        check_id("bk_agent_id", &req.bk_agent_id, MAX_AGENT_ID_LEN)?;
        Ok(req)
    }
}

fn check_id(field: &str, value: &str, max: usize) -> Result<(), String> {
    if value.trim().is_empty() {
        return Err(format!("{field}: must not be empty"));
    }
    if value.len() > max {
        return Err(format!("{field}: longer than {max} bytes"));
    }
    Ok(())
}

/// What the worker does with one (non-duplicate) request of an agent it owns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Send this `content` back through `dispatch_message`.
    Reply(String),
    /// `content.type` is something else; carries the type.
    UnknownType(String),
    /// `content` is not a JSON object with a string `type`; carries why.
    BadContent(String),
    /// Neither the agent id nor `{cloudid}:{ip}` is in the snapshot.
    UnknownAgent,
}

/// Decides the answer to `req`. `biz_of` returns the business of an agent id known to
/// the snapshot. The agent is looked up by the envelope's `bk_agent_id`, then by
/// `"{cloudid}:{ip}"` from the content (a legacy agent's id).
///
/// The reply lists every configured task (bk-monitor ignores `params.tasks` too):
/// `{"code": 0, "data": [{"task": "basereport", "dataid": 1001}, ...]}`.
pub fn decide(
    req: &SlotRequest,
    biz_of: impl Fn(&str) -> Option<i64>,
    cfg: &SlotConfig,
) -> Decision {
    let content: Value = match serde_json::from_str(&req.content) {
        Ok(v) => v,
        Err(e) => return Decision::BadContent(format!("not JSON: {e}")),
    };
    let Some(kind) = content.get("type").and_then(Value::as_str) else {
        return Decision::BadContent("no string `type`".to_owned());
    };
    if kind != FETCH_HOST_DATAID {
        return Decision::UnknownType(kind.to_owned());
    }
    let legacy_id = legacy_agent_id(&content);
    let Some(biz_id) = biz_of(&req.bk_agent_id).or_else(|| legacy_id.as_deref().and_then(&biz_of))
    else {
        return Decision::UnknownAgent;
    };
    let data: Vec<Value> = cfg
        .data_ids_for(biz_id)
        .into_iter()
        .map(|(task, dataid)| json!({"task": task, "dataid": dataid}))
        .collect();
    Decision::Reply(json!({"code": 0, "data": data}).to_string())
}

/// `"{cloudid}:{ip}"` when the content has both (cloudid as a number or numeric string).
fn legacy_agent_id(content: &Value) -> Option<String> {
    let cloud = match content.get("cloudid")? {
        Value::Number(n) => n.as_i64()?,
        Value::String(s) => s.trim().parse().ok()?,
        _ => return None,
    };
    let ip = content.get("ip")?.as_str().filter(|s| !s.is_empty())?;
    Some(format!("{cloud}:{ip}"))
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    fn req(content: &str) -> SlotRequest {
        SlotRequest {
            message_id: "m1".into(),
            bk_agent_id: "agent-1".into(),
            content: content.into(),
        }
    }

    fn known(id: &str) -> Option<i64> {
        match id {
            "agent-1" => Some(2),
            "0:10.0.0.9" => Some(5),
            _ => None,
        }
    }

    #[test]
    fn ids_of_exactly_64_bytes_are_accepted_and_65_rejected_naming_the_field() {
        let body = |mid: &str, aid: &str| {
            format!(r#"{{"message_id":"{mid}","bk_agent_id":"{aid}","content":""}}"#)
        };
        let (at, over) = ("m".repeat(64), "m".repeat(65));
        let r = SlotRequest::parse(body(&at, &at).as_bytes()).expect("64-byte ids");
        assert_eq!((r.message_id.len(), r.bk_agent_id.len()), (64, 64));
        assert_eq!(
            SlotRequest::parse(body(&at, &over).as_bytes()).unwrap_err(),
            "bk_agent_id: longer than 64 bytes"
        );
        assert_eq!(
            SlotRequest::parse(body(&over, &at).as_bytes()).unwrap_err(),
            "message_id: longer than 64 bytes"
        );
    }

    #[test]
    fn parse_names_missing_and_mistyped_fields() {
        let err = SlotRequest::parse(br#"{"message_id":"m","bk_agent_id":"a"}"#).unwrap_err();
        assert!(err.contains("content"), "{err}");
        let err =
            SlotRequest::parse(br#"{"message_id":"m","bk_agent_id":"a","content":{"type":1}}"#)
                .unwrap_err();
        assert!(err.starts_with("content: invalid type"), "{err}");
        let err = SlotRequest::parse(br#"[1]"#).unwrap_err();
        assert_eq!(err, "body: must be a JSON object");
        let err =
            SlotRequest::parse(br#"{"message_id":"","bk_agent_id":"a","content":""}"#).unwrap_err();
        assert_eq!(err, "message_id: must not be empty");
        let long = "x".repeat(65);
        let body = format!(r#"{{"message_id":"{long}","bk_agent_id":"a","content":""}}"#);
        assert_eq!(
            SlotRequest::parse(body.as_bytes()).unwrap_err(),
            "message_id: longer than 64 bytes"
        );
    }

    #[test]
    fn parse_ignores_unknown_fields() {
        let r = SlotRequest::parse(
            br#"{"message_id":"m","bk_agent_id":"a","content":"{}","extra":[1]}"#,
        )
        .unwrap();
        assert_eq!(r.content, "{}");
    }

    #[test]
    fn fetch_host_dataid_is_answered_with_the_business_data_ids() {
        let mut cfg = SlotConfig::default();
        cfg.biz_data_ids.insert(
            "2".into(),
            BTreeMap::from([("basereport".to_owned(), 1_500_001)]),
        );
        let d = decide(
            &req(r#"{"type":"fetch/host/dataid","cloudid":0,"ip":"10.0.0.1","params":{}}"#),
            known,
            &cfg,
        );
        let Decision::Reply(content) = d else {
            panic!("expected a reply, got {d:?}")
        };
        let v: Value = serde_json::from_str(&content).unwrap();
        assert_eq!(v["code"], 0);
        let data = v["data"].as_array().unwrap();
        assert_eq!(data.len(), 5);
        assert!(data.contains(&json!({"task": "basereport", "dataid": 1_500_001})));
        assert!(data.contains(&json!({"task": "exceptionbeat", "dataid": 1000})));
    }

    #[test]
    fn a_legacy_agent_is_found_by_cloud_and_ip() {
        let mut r = req(r#"{"type":"fetch/host/dataid","cloudid":"0","ip":"10.0.0.9"}"#);
        r.bk_agent_id = "unknown-id".into();
        assert!(matches!(
            decide(&r, known, &SlotConfig::default()),
            Decision::Reply(_)
        ));
    }

    #[test]
    fn unknown_agents_types_and_bad_content_are_told_apart() {
        let cfg = SlotConfig::default();
        let mut r = req(r#"{"type":"fetch/host/dataid"}"#);
        r.bk_agent_id = "nobody".into();
        assert_eq!(decide(&r, known, &cfg), Decision::UnknownAgent);
        assert_eq!(
            decide(&req(r#"{"type":"push/x"}"#), known, &cfg),
            Decision::UnknownType("push/x".into())
        );
        assert!(matches!(
            decide(&req("not json"), known, &cfg),
            Decision::BadContent(_)
        ));
        assert!(matches!(
            decide(&req(r#"{"type":3}"#), known, &cfg),
            Decision::BadContent(_)
        ));
    }
}
