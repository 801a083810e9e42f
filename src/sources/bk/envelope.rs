//! The BlueKing response envelope `{"result", "code", "message", "data"}` (bk-api.md
//! B §0.2, §0.3), as pure functions from (status, body) to a decoded `data` or an
//! [`ApiError`].
//!
//! Success is `result == true`, or `result` absent and `code == 0` (`code` may be a
//! number or a numeric string). `data` is decoded straight from the bytes in one pass;
//! only when that fails is the body read again, to tell a business error (whose `data`
//! may have any shape) from a decode error, and to name the offending field.

use std::{fmt, time::Duration};

use serde::{
    de::{self, DeserializeOwned},
    Deserialize, Deserializer,
};

use super::ApiError;

/// Code reported when a failed envelope carries no numeric `code`.
pub const NO_CODE: i64 = -1;

/// The envelope fields that decide success. Unknown fields (`data`, `request_id`,
/// `permission`, `code_name`, ...) are skipped.
#[derive(Debug, Deserialize)]
struct Head {
    #[serde(default)]
    result: Option<bool>,
    #[serde(default)]
    code: Option<Code>,
    #[serde(default)]
    message: Option<Message>,
}

/// `code`: a number, a numeric string, or (rarely) something else.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Code {
    Num(i64),
    Other(String),
}

impl Code {
    fn as_i64(&self) -> Option<i64> {
        match self {
            Code::Num(n) => Some(*n),
            Code::Other(_) => None,
        }
    }
}

impl<'de> Deserialize<'de> for Code {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl de::Visitor<'_> for V {
            type Value = Code;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("an integer or a numeric string")
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Code, E> {
                Ok(Code::Num(v))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Code, E> {
                Ok(i64::try_from(v).map_or_else(|_| Code::Other(v.to_string()), Code::Num))
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Code, E> {
                if v.fract() == 0.0 && v.abs() < 9.0e15 {
                    Ok(Code::Num(v as i64))
                } else {
                    Ok(Code::Other(v.to_string()))
                }
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Code, E> {
                Ok(v.trim()
                    .parse()
                    .map_or_else(|_| Code::Other(v.to_owned()), Code::Num))
            }
        }
        d.deserialize_any(V)
    }
}

/// `message`: normally a string; anything else is kept as its JSON text.
#[derive(Debug)]
struct Message(String);

impl<'de> Deserialize<'de> for Message {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Ok(match serde_json::Value::deserialize(d)? {
            serde_json::Value::String(s) => Message(s),
            other => Message(other.to_string()),
        })
    }
}

impl Head {
    fn has_envelope_fields(&self) -> bool {
        self.result.is_some() || self.code.is_some()
    }

    fn is_success(&self) -> bool {
        match self.result {
            Some(r) => r,
            None => self.code.as_ref().and_then(Code::as_i64) == Some(0),
        }
    }

    fn message(&self) -> String {
        self.message
            .as_ref()
            .map(|m| m.0.clone())
            .unwrap_or_default()
    }

    fn into_business_error(self, endpoint: &str) -> ApiError {
        let mut message = self.message();
        let code = match &self.code {
            Some(Code::Num(n)) => *n,
            Some(Code::Other(raw)) => {
                message = format!("{message} (code {raw:?})");
                NO_CODE
            }
            None => NO_CODE,
        };
        ApiError::Business {
            endpoint: endpoint.to_owned(),
            code,
            message,
        }
    }
}

/// Reads a 2xx body: checks the envelope and decodes `data` as `T` (from JSON null
/// when `data` is absent or null, so `Option<T>` accepts that).
pub fn decode<T: DeserializeOwned>(endpoint: &str, body: &[u8]) -> Result<T, ApiError> {
    // Fast path: one plain serde_json pass over the bytes.
    if let Ok(env) = serde_json::from_slice::<Envelope<T>>(body) {
        let (head, data) = env.split();
        if !head.has_envelope_fields() {
            return Err(not_envelope(endpoint));
        }
        if !head.is_success() {
            return Err(head.into_business_error(endpoint));
        }
        return match data {
            Some(v) => Ok(v),
            None => T::deserialize(serde_json::Value::Null)
                .map_err(|e| decode_error(endpoint, format!("data: {e}"))),
        };
    }
    // Slow path, errors only: first decide whether the envelope itself is a failure
    // (then `data` may legitimately have another shape), then name the bad field.
    let head = match read_head(body) {
        Ok(head) => head,
        Err(detail) => return Err(decode_error(endpoint, detail)),
    };
    if !head.has_envelope_fields() {
        return Err(not_envelope(endpoint));
    }
    if !head.is_success() {
        return Err(head.into_business_error(endpoint));
    }
    let mut de = serde_json::Deserializer::from_slice(body);
    let detail = match serde_path_to_error::deserialize::<_, Envelope<T>>(&mut de) {
        Err(e) => e.to_string(),
        // The fast path failed, so this cannot succeed; stay defensive anyway.
        Ok(_) => "response could not be decoded".to_owned(),
    };
    Err(decode_error(endpoint, detail))
}

/// The error for a non-2xx response. A gateway/backend envelope in the body supplies
/// `code` and `message`; otherwise the message is the start of the body. 429 becomes
/// [`ApiError::RateLimited`] with the wait the server asked for.
pub fn http_error(
    endpoint: &str,
    status: u16,
    body: &[u8],
    retry_after: Option<Duration>,
) -> ApiError {
    let head = serde_json::from_slice::<Head>(body).ok();
    let code = head
        .as_ref()
        .and_then(|h| h.code.as_ref())
        .and_then(Code::as_i64);
    let message = head
        .as_ref()
        .map(Head::message)
        .filter(|m| !m.is_empty())
        .unwrap_or_else(|| body_snippet(status, body));
    let endpoint = endpoint.to_owned();
    if status == 429 {
        ApiError::RateLimited {
            endpoint,
            retry_after,
            code,
            message,
        }
    } else {
        ApiError::Http {
            endpoint,
            status,
            code,
            message,
        }
    }
}

/// Deserializes `null` (or an absent field, with `#[serde(default)]`) as
/// `T::default()`: BlueKing often sends `null` for an empty string or list.
pub fn null_as_default<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de> + Default,
{
    Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
}

/// The whole envelope with `data` as `T` (the head fields repeated rather than
/// `#[serde(flatten)]`ed, which would buffer the body). `data` is an `Option` so that
/// an absent or null `data` can then be decoded as `T` from JSON null.
#[derive(Deserialize)]
#[serde(bound = "T: DeserializeOwned")]
struct Envelope<T> {
    #[serde(default)]
    result: Option<bool>,
    #[serde(default)]
    code: Option<Code>,
    #[serde(default)]
    message: Option<Message>,
    #[serde(default)]
    data: Option<T>,
}

impl<T> Envelope<T> {
    fn split(self) -> (Head, Option<T>) {
        let head = Head {
            result: self.result,
            code: self.code,
            message: self.message,
        };
        (head, self.data)
    }
}

fn read_head(body: &[u8]) -> Result<Head, String> {
    let mut de = serde_json::Deserializer::from_slice(body);
    let head: Head = serde_path_to_error::deserialize(&mut de)
        .map_err(|e| format!("not a BlueKing envelope: {e}"))?;
    de.end()
        .map_err(|e| format!("not a BlueKing envelope: {e}"))?;
    Ok(head)
}

fn not_envelope(endpoint: &str) -> ApiError {
    decode_error(
        endpoint,
        "not a BlueKing envelope: neither `result` nor `code` is present".to_owned(),
    )
}

fn decode_error(endpoint: &str, detail: String) -> ApiError {
    ApiError::Decode {
        endpoint: endpoint.to_owned(),
        detail,
    }
}

/// At most 200 characters of the body on one line, or the status' reason phrase.
fn body_snippet(status: u16, body: &[u8]) -> String {
    let text = String::from_utf8_lossy(&body[..body.len().min(800)]);
    let one_line: String = text.split_whitespace().collect::<Vec<_>>().join(" ");
    let mut snippet: String = one_line.chars().take(200).collect();
    if snippet.is_empty() {
        snippet = reqwest::StatusCode::from_u16(status)
            .ok()
            .and_then(|s| s.canonical_reason())
            .unwrap_or("no body")
            .to_owned();
    } else if one_line.chars().count() > 200 || body.len() > 800 {
        snippet.push('…');
    }
    snippet
}

#[cfg(test)]
mod tests {
    use serde::Deserialize;

    use super::*;

    const EP: &str = "gse http://bk/api/v2/cluster/list_agent_state";

    #[derive(Debug, Deserialize, PartialEq)]
    struct Item {
        id: String,
        status_code: i32,
    }

    fn business(r: Result<Vec<Item>, ApiError>) -> (i64, String) {
        match r {
            Err(ApiError::Business { code, message, .. }) => (code, message),
            other => panic!("expected a business error, got {other:?}"),
        }
    }

    fn decode_detail<T: std::fmt::Debug>(r: Result<T, ApiError>) -> String {
        match r {
            Err(ApiError::Decode { detail, .. }) => detail,
            other => panic!("expected a decode error, got {other:?}"),
        }
    }

    #[test]
    fn result_true_returns_data() {
        let body = br#"{"result":true,"code":0,"message":"success","data":[{"id":"a","status_code":2}],"request_id":"r1"}"#;
        let items: Vec<Item> = decode(EP, body).unwrap();
        assert_eq!(
            items,
            [Item {
                id: "a".into(),
                status_code: 2
            }]
        );
    }

    #[test]
    fn result_true_wins_over_a_nonzero_code() {
        let body = br#"{"result":true,"code":12,"data":[]}"#;
        assert!(decode::<Vec<Item>>(EP, body).unwrap().is_empty());
    }

    #[test]
    fn result_absent_and_code_zero_is_success() {
        let body = br#"{"code":0,"data":[{"id":"a","status_code":1}]}"#;
        assert_eq!(decode::<Vec<Item>>(EP, body).unwrap().len(), 1);
    }

    #[test]
    fn code_as_numeric_string_is_accepted() {
        let body = br#"{"code":"0","message":"","data":[]}"#;
        assert!(decode::<Vec<Item>>(EP, body).unwrap().is_empty());
        let body = br#"{"code":"1011003","message":"not found","data":null}"#;
        assert_eq!(business(decode(EP, body)), (1011003, "not found".into()));
    }

    #[test]
    fn result_false_with_code_is_a_business_error() {
        let body = br#"{"result":false,"code":1011003,"message":"agent not found","data":null}"#;
        assert_eq!(
            business(decode(EP, body)),
            (1011003, "agent not found".into())
        );
    }

    #[test]
    fn business_error_wins_even_when_data_has_another_shape() {
        let body = br#"{"result":false,"code":500,"message":"boom","data":{"errors":["x"]}}"#;
        assert_eq!(business(decode(EP, body)), (500, "boom".into()));
    }

    #[test]
    fn result_absent_and_code_nonzero_is_a_business_error() {
        let body = br#"{"code":3,"message":"bad"}"#;
        assert_eq!(business(decode(EP, body)), (3, "bad".into()));
    }

    #[test]
    fn failure_without_a_numeric_code_reports_no_code() {
        let body = br#"{"result":false,"message":"nope"}"#;
        assert_eq!(business(decode(EP, body)), (NO_CODE, "nope".into()));
        let body = br#"{"result":false,"code":"E42","message":"nope"}"#;
        assert_eq!(
            business(decode(EP, body)),
            (NO_CODE, "nope (code \"E42\")".into())
        );
    }

    #[test]
    fn non_json_body_is_a_decode_error() {
        let detail = decode_detail(decode::<Vec<Item>>(EP, b"<html>502 Bad Gateway</html>"));
        assert!(detail.starts_with("not a BlueKing envelope"), "{detail}");
        let detail = decode_detail(decode::<Vec<Item>>(EP, br#"{"result":true,"data":[{"id""#));
        assert!(detail.contains("EOF"), "{detail}");
    }

    #[test]
    fn json_that_is_not_an_envelope_is_a_decode_error() {
        let detail = decode_detail(decode::<Vec<Item>>(EP, br#"{"id":"a"}"#));
        assert!(detail.contains("neither `result` nor `code`"), "{detail}");
        let detail = decode_detail(decode::<Vec<Item>>(EP, br#"[1,2]"#));
        assert!(detail.starts_with("not a BlueKing envelope"), "{detail}");
    }

    #[test]
    fn bad_item_is_named_by_its_path() {
        let body = br#"{"result":true,"code":0,"data":[{"id":"a","status_code":2},{"id":"b","status_code":"2"}]}"#;
        let detail = decode_detail(decode::<Vec<Item>>(EP, body));
        assert!(
            detail.starts_with("data[1].status_code: invalid type: string \"2\", expected i32"),
            "{detail}"
        );
        let body = br#"{"result":true,"data":[{"status_code":2}]}"#;
        let detail = decode_detail(decode::<Vec<Item>>(EP, body));
        assert!(
            detail.starts_with("data[0]: missing field `id`"),
            "{detail}"
        );
    }

    #[test]
    fn null_or_absent_data_decodes_as_null() {
        let body = br#"{"result":true,"code":0,"data":null}"#;
        assert_eq!(decode::<Option<Vec<Item>>>(EP, body).unwrap(), None);
        let body = br#"{"result":true,"code":0}"#;
        assert_eq!(decode::<Option<Vec<Item>>>(EP, body).unwrap(), None);
        let detail = decode_detail(decode::<Vec<Item>>(EP, body));
        assert_eq!(detail, "data: invalid type: null, expected a sequence");
    }

    #[test]
    fn http_4xx_with_gateway_body_keeps_the_gateway_code() {
        let body = br#"{"result":false,"code":1640001,"code_name":"INVALID_ARGS","message":"app not found","data":null}"#;
        match http_error(EP, 400, body, None) {
            ApiError::Http {
                status,
                code,
                message,
                ..
            } => {
                assert_eq!((status, code), (400, Some(1640001)));
                assert_eq!(message, "app not found");
            }
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn http_error_with_a_success_envelope_is_still_an_error() {
        let body = br#"{"result":true,"code":0,"data":[]}"#;
        let e = http_error(EP, 500, body, None);
        assert!(
            matches!(
                e,
                ApiError::Http {
                    status: 500,
                    code: Some(0),
                    ..
                }
            ),
            "{e:?}"
        );
        assert!(e.is_retryable());
    }

    #[test]
    fn http_error_without_envelope_shows_the_start_of_the_body() {
        let e = http_error(EP, 502, b"<html>\n  bad   gateway\n</html>", None);
        assert!(
            e.to_string()
                .ends_with("HTTP 502: <html> bad gateway </html>"),
            "{e}"
        );
        let e = http_error(EP, 503, b"", None);
        assert!(
            e.to_string().ends_with("HTTP 503: Service Unavailable"),
            "{e}"
        );
    }

    #[test]
    fn http_429_is_rate_limited_with_the_requested_wait() {
        let body = br#"{"result":false,"code":1642903,"message":"rate limit"}"#;
        let wait = Some(Duration::from_secs(2));
        match http_error(EP, 429, body, wait) {
            ApiError::RateLimited {
                retry_after, code, ..
            } => assert_eq!((retry_after, code), (wait, Some(1642903))),
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn null_as_default_accepts_null_absent_and_values() {
        #[derive(Deserialize)]
        struct S {
            #[serde(default, deserialize_with = "null_as_default")]
            s: String,
        }
        let parse = |j: &str| serde_json::from_str::<S>(j).unwrap().s;
        assert_eq!(parse(r#"{"s":null}"#), "");
        assert_eq!(parse(r#"{}"#), "");
        assert_eq!(parse(r#"{"s":"x"}"#), "x");
    }
}
