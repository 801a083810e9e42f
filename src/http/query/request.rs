//! Request shapes of the query API: the status batch body, the listing parameters and
//! the listing cursor.

use serde::{Deserialize, Serialize};

use super::error::QueryError;
use crate::snapshot::ListFilter;

/// Default and largest `limit` of `GET /api/v1/agents`.
pub(super) const DEFAULT_LIMIT: usize = 100;
pub(super) const MAX_LIMIT: usize = 1000;

/// `POST /api/v1/agents/status`: exactly one of the three lists.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct StatusRequest {
    agent_ids: Option<Vec<String>>,
    hosts: Option<Vec<HostQuery>>,
    host_ids: Option<Vec<i64>>,
}

/// A host by address, as bk-monitor's IP chooser names it (`cloud_id` is accepted as
/// an alias of `bk_cloud_id`). Echoed back as `query` with the canonical name.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub(super) struct HostQuery {
    pub ip: String,
    #[serde(alias = "cloud_id")]
    pub bk_cloud_id: i64,
}

/// What a status batch asks for.
#[derive(Debug)]
pub(super) enum Lookup {
    AgentIds(Vec<String>),
    Hosts(Vec<HostQuery>),
    HostIds(Vec<i64>),
}

impl Lookup {
    pub(super) fn len(&self) -> usize {
        match self {
            Lookup::AgentIds(v) => v.len(),
            Lookup::Hosts(v) => v.len(),
            Lookup::HostIds(v) => v.len(),
        }
    }

    /// Parses and checks a request body against the entry limit.
    pub(super) fn parse(body: &[u8], max_ids: usize) -> Result<Lookup, QueryError> {
        let de = &mut serde_json::Deserializer::from_slice(body);
        let req: StatusRequest = serde_path_to_error::deserialize(de).map_err(|e| {
            let path = e.path().to_string();
            let inner = e.into_inner();
            if path == "." {
                QueryError::BadRequest(format!("invalid JSON body: {inner}"))
            } else {
                QueryError::BadRequest(format!("invalid JSON body at {path}: {inner}"))
            }
        })?;
        let lookup =
            match (req.agent_ids, req.hosts, req.host_ids) {
                (Some(v), None, None) => Lookup::AgentIds(v),
                (None, Some(v), None) => Lookup::Hosts(v),
                (None, None, Some(v)) => Lookup::HostIds(v),
                _ => return Err(QueryError::BadRequest(
                    "the body must hold exactly one of \"agent_ids\", \"hosts\" or \"host_ids\""
                        .into(),
                )),
            };
        if lookup.len() > max_ids {
            return Err(QueryError::TooManyIds {
                asked: lookup.len(),
                limit: max_ids,
            });
        }
        Ok(lookup)
    }
}

/// `GET /api/v1/agents` query parameters.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct ListParams {
    /// Normalized status names, comma-separated (`running,lossy`).
    status: Option<String>,
    biz_id: Option<i64>,
    cloud_id: Option<i64>,
    limit: Option<usize>,
    cursor: Option<String>,
}

/// A validated listing request.
#[derive(Debug)]
pub(super) struct ListRequest {
    pub filter: ListFilter,
    pub limit: usize,
    /// List agents with ids strictly after this one.
    pub after: Option<String>,
}

impl ListParams {
    pub(super) fn validate(self) -> Result<ListRequest, QueryError> {
        let limit = self.limit.unwrap_or(DEFAULT_LIMIT);
        if !(1..=MAX_LIMIT).contains(&limit) {
            return Err(QueryError::BadRequest(format!(
                "limit must be between 1 and {MAX_LIMIT}, not {limit}"
            )));
        }
        let statuses = self
            .status
            .as_deref()
            .unwrap_or_default()
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
            .collect();
        let after = match self.cursor.as_deref() {
            None | Some("") => None,
            Some(c) => Some(decode_cursor(c)?),
        };
        Ok(ListRequest {
            filter: ListFilter {
                statuses,
                biz_id: self.biz_id,
                cloud_id: self.cloud_id,
            },
            limit,
            after,
        })
    }
}

/// The cursor is the last agent id of a page, hex-encoded: opaque to callers, safe in a
/// URL without escaping, and stable across index rebuilds (it names an id, not a
/// position), so a walk sees every agent present throughout exactly once.
pub(super) fn encode_cursor(after: &str) -> String {
    after.bytes().map(|b| format!("{b:02x}")).collect()
}

fn decode_cursor(c: &str) -> Result<String, QueryError> {
    let bad = || QueryError::InvalidCursor(format!("cursor {c:?} is not one this API returned"));
    if c.len() % 2 != 0 || c.len() > 1024 {
        return Err(bad());
    }
    let bytes = (0..c.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(c.get(i..i + 2).ok_or_else(bad)?, 16).map_err(|_| bad()))
        .collect::<Result<Vec<u8>, _>>()?;
    String::from_utf8(bytes).map_err(|_| bad())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_query_cursor_round_trips_any_agent_id() {
        for id in ["0:10.0.0.1", "02000000005254003dd2ea1700473962076n", "ä/ b"] {
            assert_eq!(decode_cursor(&encode_cursor(id)).expect("decodes"), id);
        }
        assert!(decode_cursor("zz").is_err());
        assert!(decode_cursor("abc").is_err());
        assert!(decode_cursor("ff").is_err(), "not UTF-8");
    }

    #[test]
    fn a_query_body_must_name_exactly_one_list_within_the_limit() {
        let ok = Lookup::parse(br#"{"hosts":[{"ip":"10.0.0.1","cloud_id":3}]}"#, 10).expect("ok");
        assert!(matches!(&ok, Lookup::Hosts(h) if h[0].bk_cloud_id == 3));
        for bad in [
            &br#"{}"#[..],
            br#"{"agent_ids":["a"],"host_ids":[1]}"#,
            br#"{"agent_ids":"a"}"#,
            br#"{"hostids":[1]}"#,
            br#"{"hosts":[{"ip":"10.0.0.1"}]}"#,
            b"not json",
        ] {
            let e = Lookup::parse(bad, 10).expect_err("rejected");
            assert_eq!(e.code(), "bad_request", "{e}");
        }
        let e = Lookup::parse(br#"{"host_ids":[1,2,3]}"#, 2).expect_err("too many");
        assert_eq!(e.code(), "too_many_ids");
        assert!(e.to_string().contains("limit is 2"), "{e}");
    }

    #[test]
    fn query_listing_parameters_are_checked() {
        let r = ListParams {
            status: Some("running, lossy".into()),
            ..ListParams::default()
        }
        .validate()
        .expect("valid");
        assert_eq!(r.filter.statuses, vec!["running", "lossy"]);
        assert_eq!(r.limit, DEFAULT_LIMIT);
        let at = ListParams {
            limit: Some(MAX_LIMIT),
            ..ListParams::default()
        };
        assert_eq!(at.validate().expect("the largest page").limit, MAX_LIMIT);
        for limit in [0, MAX_LIMIT + 1] {
            let p = ListParams {
                limit: Some(limit),
                ..ListParams::default()
            };
            assert!(p.validate().is_err());
        }
    }
}
