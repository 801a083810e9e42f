//! Fuzz target bodies, one per decoder family of outside data. Called by the cargo-fuzz
//! targets in `fuzz/fuzz_targets/` (coverage-guided, nightly) and by
//! `tests/fuzz_corpus.rs`, which replays the committed corpora on stable, so the two
//! can never disagree about what a target checks.
//!
//! Every target takes arbitrary bytes and must return without panicking, hanging or
//! allocating from a length field; beyond that each asserts a cheap property of the
//! result (a round trip, an error that names its endpoint or field, an invariant of
//! a successful decode). Not an API: hidden from the docs and free to change.

use std::collections::HashSet;

use prost::Message;

use crate::{
    config::{load_str, ConfigError},
    proto::v1::{AgentEvent, AgentStateRecord},
    sinks::kafka::{encode, Format},
    slot::{decide, Decision, SlotConfig, SlotRequest, MAX_MESSAGE_ID_LEN},
    sources::{
        bk::{envelope, ApiError},
        cmdb, gse, nodeman,
    },
};

/// A target body: arbitrary bytes in, a panic on a finding.
pub type Target = fn(&[u8]);

/// Every target by name (the name of its `fuzz/fuzz_targets/<name>.rs` and of its
/// corpus directory `fuzz/corpus/<name>/`).
pub const TARGETS: &[(&str, Target)] = &[
    ("gse_v2_state", gse_v2_state),
    ("gse_agent_info", gse_agent_info),
    ("gse_v1", gse_v1),
    ("envelope", envelope),
    ("nodeman_pages", nodeman_pages),
    ("cmdb_pages", cmdb_pages),
    ("slot_body", slot_body),
    ("config", config),
    ("state_record", state_record),
    ("event_record", event_record),
];

/// Separates the bodies of a multi-page input. Never part of a valid JSON body
/// (0xFF is not UTF-8), so a page body can hold any JSON text.
pub const PAGE_SEPARATOR: u8 = 0xFF;

/// Errors from decoding an upstream body must say which endpoint answered.
fn assert_names_endpoint(e: &ApiError, endpoint: &str) {
    let text = e.to_string();
    assert!(
        text.contains(endpoint),
        "error does not name the endpoint {endpoint:?}: {text}"
    );
}

/// GSE 2.0 `cluster/list_agent_state`: a full response body.
pub fn gse_v2_state(data: &[u8]) {
    match gse::decode_list_agent_state(data) {
        Ok(states) => {
            for s in &states {
                assert!(s.v1_alive.is_none(), "a v2 answer carries no v1 liveness");
            }
        }
        Err(e) => assert_names_endpoint(&e, "list_agent_state"),
    }
}

/// GSE 2.0 `cluster/list_agent_info`: a full response body.
pub fn gse_agent_info(data: &[u8]) {
    match gse::decode_list_agent_info(data) {
        Ok((infos, _skipped)) => {
            for i in &infos {
                // GSE sends seconds; the conversion saturates instead of overflowing.
                let ms = i.start_time_ms;
                assert!(
                    ms % 1000 == 0 || ms == i64::MAX || ms == i64::MIN,
                    "start_time_ms {ms} is not whole seconds"
                );
            }
        }
        Err(e) => assert_names_endpoint(&e, "list_agent_info"),
    }
}

/// GSE 1.x ESB `get_agent_status/` (first byte even) or `get_agent_info/` (odd); the
/// rest is the response body.
pub fn gse_v1(data: &[u8]) {
    let Some((&which, body)) = data.split_first() else {
        return;
    };
    let endpoint = "gse http://esb/get_agent_x/";
    let value = match envelope::decode::<serde_json::Value>(endpoint, body) {
        Ok(v) => v,
        Err(e) => return assert_names_endpoint(&e, endpoint),
    };
    if which % 2 == 0 {
        match gse::statuses_from_data(endpoint, value) {
            Ok(list) => {
                for s in &list {
                    assert!(matches!(s.alive, 0 | 1), "alive {} passed", s.alive);
                    assert_host_named(s.cloud_id, &s.ip);
                }
            }
            Err(e) => assert_names_endpoint(&e, endpoint),
        }
    } else {
        match gse::infos_from_data(endpoint, value) {
            Ok(list) => list
                .iter()
                .for_each(|i| assert_host_named(i.cloud_id, &i.ip)),
            Err(e) => assert_names_endpoint(&e, endpoint),
        }
    }
}

fn assert_host_named(cloud_id: i64, ip: &str) {
    assert!(
        !ip.is_empty() && ip.trim() == ip,
        "host {cloud_id}:{ip:?} has no clean ip"
    );
}

/// The BlueKing envelope with any `data`, as a 2xx body and as an error body whose
/// HTTP status is the first two bytes.
pub fn envelope(data: &[u8]) {
    let endpoint = "test http://bk/endpoint";
    if let Err(e) = envelope::decode::<serde_json::Value>(endpoint, data) {
        assert_names_endpoint(&e, endpoint);
    }
    // Typed `data` takes the slow path (field named) on a mismatch.
    if let Err(e) =
        envelope::decode::<Option<Vec<std::collections::BTreeMap<String, i64>>>>(endpoint, data)
    {
        assert_names_endpoint(&e, endpoint);
    }
    let (status, body) = match data {
        [a, b, rest @ ..] => (400 + u16::from_be_bytes([*a, *b]) % 200, rest),
        _ => (500, data),
    };
    let e = envelope::http_error(endpoint, status, body, None);
    assert_names_endpoint(&e, endpoint);
    match e {
        ApiError::Http { message, .. } | ApiError::RateLimited { message, .. } => {
            assert!(!message.is_empty(), "an HTTP error always says something")
        }
        other => panic!("http_error gave {other:?}"),
    }
}

/// NodeMan paging: the first byte picks host search (even) or plugin search (odd) and
/// the page size (1..=8); the rest is the page bodies, 1, 2, ... separated by
/// [`PAGE_SEPARATOR`].
pub fn nodeman_pages(data: &[u8]) {
    let Some((&head, rest)) = data.split_first() else {
        return;
    };
    let page_size = usize::from(head >> 1) % 8 + 1;
    let bodies: Vec<&[u8]> = rest.split(|b| *b == PAGE_SEPARATOR).collect();
    let url = "http://nodeman/api/host/search/";
    if head % 2 == 0 {
        match nodeman::collect_bodies::<nodeman::WireHost>(url, page_size, &bodies) {
            Ok(hosts) => {
                let hosts: Vec<_> = hosts
                    .into_iter()
                    .map(crate::sources::inventory::Host::from)
                    .collect();
                assert_unique(hosts.iter().map(|h| h.host_id));
            }
            Err(e) => assert_names_endpoint(&e, url),
        }
    } else {
        match nodeman::collect_bodies::<nodeman::WireHostPlugins>(url, page_size, &bodies) {
            Ok(hosts) => {
                let names = ["bkmonitorbeat".to_owned()];
                let picked = nodeman::select_plugins(hosts, &names);
                assert_unique(picked.iter().map(|h| h.host_id));
                for h in &picked {
                    assert!(h.plugins.iter().all(|p| p.name == names[0]));
                }
            }
            Err(e) => assert_names_endpoint(&e, url),
        }
    }
}

/// CMDB `list_hosts_without_biz` paging: the first byte picks the page size (1..=8);
/// the rest is the `limit: 1` count body, then the page bodies in order, separated by
/// [`PAGE_SEPARATOR`].
pub fn cmdb_pages(data: &[u8]) {
    let Some((&head, rest)) = data.split_first() else {
        return;
    };
    let page_size = usize::from(head) % 8 + 1;
    let bodies: Vec<&[u8]> = rest.split(|b| *b == PAGE_SEPARATOR).collect();
    let url = "http://cmdb/api/v3/hosts/list_hosts_without_biz";
    match cmdb::collect_bodies(url, page_size, &bodies) {
        Ok(hosts) => {
            assert_unique(hosts.iter().map(|h| h.host_id));
            for h in &hosts {
                assert_eq!(h.biz_id, 0, "no business was asked for");
                assert!(!h.ip.contains(','), "one address kept: {:?}", h.ip);
            }
        }
        Err(e) => assert_names_endpoint(&e, url),
    }
}

fn assert_unique(ids: impl Iterator<Item = i64>) {
    let mut seen = HashSet::new();
    for id in ids {
        assert!(seen.insert(id), "host {id} listed twice");
    }
}

/// A body posted to the GSE slot endpoint, then the answer to it.
pub fn slot_body(data: &[u8]) {
    let req = match SlotRequest::parse(data) {
        Ok(req) => req,
        Err(e) => {
            assert!(!e.is_empty());
            return;
        }
    };
    assert!(!req.message_id.trim().is_empty() && req.message_id.len() <= MAX_MESSAGE_ID_LEN);
    assert!(!req.bk_agent_id.trim().is_empty());
    // What parses also survives a round trip through its own serialization.
    let again = serde_json::to_vec(&req).map(|b| SlotRequest::parse(&b));
    assert!(
        matches!(&again, Ok(Ok(r)) if *r == req),
        "round trip: {again:?}"
    );
    let cfg = SlotConfig::default();
    match decide(&req, |id| (id.len() % 2 == 0).then_some(7), &cfg) {
        Decision::Reply(reply) => {
            let v: serde_json::Value =
                serde_json::from_str(&reply).unwrap_or_else(|e| panic!("reply not JSON: {e}"));
            assert_eq!(v["code"], 0);
        }
        Decision::BadContent(why) => assert!(!why.is_empty()),
        Decision::UnknownType(_) | Decision::UnknownAgent => {}
    }
}

/// A config file; after the first [`PAGE_SEPARATOR`], `KEY=VALUE` lines as the
/// environment (overrides are `AGENTWATCH__SECTION__KEY`).
pub fn config(data: &[u8]) {
    let (file, env) = match data.iter().position(|b| *b == PAGE_SEPARATOR) {
        Some(i) => (&data[..i], &data[i + 1..]),
        None => (data, &[][..]),
    };
    let text = String::from_utf8_lossy(file);
    let env: Vec<(String, String)> = String::from_utf8_lossy(env)
        .lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
    match load_str(&text, "fuzz.toml", env) {
        Ok(_) => {}
        Err(ConfigError::Syntax { path, message }) => {
            assert_eq!(path, "fuzz.toml");
            assert!(!message.is_empty());
        }
        Err(ConfigError::Invalid { errors }) => {
            assert!(!errors.is_empty(), "invalid without a reason");
            for e in &errors.0 {
                assert!(!e.reason.is_empty(), "no reason for {:?}", e.path);
            }
        }
        Err(e @ ConfigError::Read { .. }) => panic!("load_str read a file: {e}"),
    }
}

/// A state-topic record in either format (first byte even: protobuf, odd: JSON).
pub fn state_record(data: &[u8]) {
    record::<AgentStateRecord>(data, encode::decode_state, encode::encode_state);
}

/// An events-topic record in either format (first byte even: protobuf, odd: JSON).
pub fn event_record(data: &[u8]) {
    record::<AgentEvent>(data, encode::decode_event, encode::encode_event);
}

/// Decode; what decodes must re-encode to bytes that decode to the same message
/// (compared by protobuf encoding, which is deterministic: maps are BTreeMaps and
/// floats are written bit for bit, so NaN compares equal too).
fn record<M: Message>(
    data: &[u8],
    decode: fn(&[u8], Format) -> Result<M, encode::DecodeError>,
    encode: fn(&M, Format) -> Vec<u8>,
) {
    let Some((&which, body)) = data.split_first() else {
        return;
    };
    let format = if which % 2 == 0 {
        Format::Protobuf
    } else {
        Format::Json
    };
    let Ok(m) = decode(body, format) else {
        return;
    };
    let canonical = m.encode_to_vec();
    let again = decode(&encode(&m, Format::Protobuf), Format::Protobuf)
        .unwrap_or_else(|e| panic!("protobuf re-encoding does not decode: {e}"));
    assert_eq!(again.encode_to_vec(), canonical, "protobuf round trip");
    // JSON floats may come back one ulp off (serde_json's fast parser), so the JSON
    // round trip only has to decode.
    let json = encode(&m, Format::Json);
    if let Err(e) = decode(&json, Format::Json) {
        panic!(
            "JSON re-encoding does not decode: {e}: {}",
            String::from_utf8_lossy(&json)
        );
    }
}
