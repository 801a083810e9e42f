//! Black-box tests of the status query API: simulator → service (real broker) → HTTP
//! client. Every JSON response is validated against `docs/openapi.yaml`.

mod common;

use std::{
    collections::{BTreeMap, BTreeSet, HashMap},
    time::Instant,
};

use agentwatch::sim::{SimAgent, SimConfig};
use common::*;
use serde_json::{json, Value};

/// `docs/openapi.yaml`, and a check of a response against the schema the document
/// declares for (route, method, status).
struct OpenApi {
    doc: Value,
}

impl OpenApi {
    fn load() -> OpenApi {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/docs/openapi.yaml");
        let text = std::fs::read_to_string(path).expect("docs/openapi.yaml");
        OpenApi {
            doc: serde_yaml_ng::from_str(&text).expect("openapi.yaml parses"),
        }
    }

    fn resolve<'a>(&'a self, v: &'a Value) -> &'a Value {
        match v.get("$ref").and_then(Value::as_str) {
            Some(r) => self
                .doc
                .pointer(r.trim_start_matches('#'))
                .unwrap_or_else(|| panic!("dangling $ref {r}")),
            None => v,
        }
    }

    /// Panics with every violation when `body` does not match the documented schema.
    fn check(&self, method: &str, route: &str, status: u16, body: &Value) {
        let op = &self.doc["paths"][route][method];
        assert!(op.is_object(), "{method} {route} is not documented");
        let resp = self.resolve(&op["responses"][status.to_string()]);
        let schema = &resp["content"]["application/json"]["schema"];
        assert!(
            schema.is_object(),
            "{method} {route} has no documented JSON body for {status}"
        );
        // The response schema plus the document's components, so `#/components/...`
        // references resolve inside one JSON Schema 2020-12 document.
        let mut root = schema.as_object().expect("schema object").clone();
        root.insert(
            "$schema".into(),
            json!("https://json-schema.org/draft/2020-12/schema"),
        );
        root.insert("components".into(), self.doc["components"].clone());
        let validator = jsonschema::validator_for(&Value::Object(root)).expect("schema compiles");
        let errors: Vec<String> = validator
            .iter_errors(body)
            .take(5)
            .map(|e| format!("{} at {}", e, e.instance_path()))
            .collect();
        assert!(
            errors.is_empty(),
            "{method} {route} {status} does not match docs/openapi.yaml: {errors:#?}"
        );
    }
}

/// A running service with the simulator behind it, and an HTTP client for its API.
struct Fixture {
    _broker: Broker,
    sim: Sim,
    svc: Service,
    http: reqwest::Client,
    base: String,
    api: OpenApi,
}

impl Fixture {
    async fn start(agents: usize, name: &str) -> Fixture {
        let broker = Broker::shared();
        let sim = Sim::start(SimConfig {
            agents,
            seed: 11,
            gse_unknown_ratio: 0.05,
            legacy_ratio: 0.2,
            ipv6_only_ratio: 0.02,
            ..SimConfig::default()
        })
        .await;
        let cfg = service_config(&sim, &broker.brokers, name);
        let svc = Service::start(&cfg).await;
        svc.settle().await;
        let base = format!("http://{}", svc.running().http_addr);
        Fixture {
            _broker: broker,
            sim,
            svc,
            http: reqwest::Client::new(),
            base,
            api: OpenApi::load(),
        }
    }

    fn truth(&self) -> Vec<SimAgent> {
        self.sim.sim.truth()
    }

    /// GET `path` (a concrete URL path) documented as `route`; validated.
    async fn get(&self, route: &str, path: &str) -> (u16, Value) {
        let resp = self
            .http
            .get(format!("{}{path}", self.base))
            .send()
            .await
            .expect("GET");
        self.finish("get", route, resp).await
    }

    async fn post_status(&self, body: &Value) -> (u16, Value) {
        let resp = self.post_status_raw(body).await;
        self.finish("post", "/api/v1/agents/status", resp).await
    }

    async fn post_status_raw(&self, body: &Value) -> reqwest::Response {
        self.http
            .post(format!("{}/api/v1/agents/status", self.base))
            .json(body)
            .send()
            .await
            .expect("POST")
    }

    async fn finish(&self, method: &str, route: &str, resp: reqwest::Response) -> (u16, Value) {
        let status = resp.status().as_u16();
        let ctype = resp
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        assert_eq!(ctype, "application/json", "{method} {route}");
        let body: Value = resp.json().await.expect("JSON body");
        self.api.check(method, route, status, &body);
        let shard = &body["shard"];
        assert_eq!(*shard, json!({"index": 0, "total": 1, "partial": false}));
        (status, body)
    }
}

/// The status code the service reports for a simulated agent.
fn expected_code(t: &SimAgent) -> i64 {
    if t.in_gse {
        i64::from(t.status_code)
    } else {
        -2
    }
}

fn assert_matches_truth(result: &Value, t: &SimAgent) {
    // Batch results say `found`; a single-agent answer is found by being a 200.
    assert_ne!(result["found"], false, "{result}");
    assert_eq!(result["agent_id"], t.agent_id.as_str());
    let s = &result["state"];
    assert_eq!(s["status_code"], expected_code(t), "{}", t.agent_id);
    assert_eq!(s["alive"], expected_code(t) == 2);
    assert_eq!(result["alive"], s["alive"]);
    assert_eq!(result["status"], s["status"]);
    assert_eq!(s["host_id"], t.host_id);
    assert_eq!(s["cloud_id"], t.cloud_id);
    assert_eq!(s["biz_id"], t.biz_id);
    assert_eq!(s["ip"], t.ip.as_str());
    assert_eq!(result["stale"], false);
    assert_eq!(result["pending"], false, "settled before querying");
    assert_eq!(result["seq"], 1);
    assert!(result["incarnation_ms"].as_i64().is_some_and(|i| i > 0));
    let age = result["age_seconds"].as_f64().expect("observed, so an age");
    assert!((0.0..60.0).contains(&age), "age {age}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn answers_match_the_simulators_truth_for_ids_addresses_and_host_ids() {
    let f = Fixture::start(1200, "query-truth").await;
    let truth = f.truth();
    assert!(truth.iter().any(|t| t.legacy), "some ids are cloud:ip");
    assert!(
        truth.iter().any(|t| !t.in_gse),
        "some agents GSE does not know"
    );

    // By agent id, with unknown ids interleaved; results keep request order.
    let mut ids: Vec<String> = truth.iter().map(|t| t.agent_id.clone()).collect();
    ids.insert(3, "no-such-agent".into());
    ids.push("9:10.255.255.254".into());
    let (code, body) = f.post_status(&json!({ "agent_ids": ids })).await;
    assert_eq!(code, 200);
    assert_eq!(body["count"], ids.len());
    let results = body["results"].as_array().expect("results");
    assert_eq!(results.len(), ids.len());
    let by_id: HashMap<&str, &SimAgent> = truth.iter().map(|t| (t.agent_id.as_str(), t)).collect();
    for (q, r) in ids.iter().zip(results) {
        assert_eq!(r["query"], q.as_str(), "request order");
        match by_id.get(q.as_str()) {
            Some(t) => assert_matches_truth(r, t),
            None => assert_eq!(*r, json!({"query": q, "found": false, "status": "unknown"})),
        }
    }

    // By address: hosts with an IPv4, plus one in the wrong cloud area.
    let with_ip: Vec<&SimAgent> = truth.iter().filter(|t| !t.ip.is_empty()).collect();
    let mut hosts: Vec<Value> = with_ip
        .iter()
        .map(|t| json!({"ip": t.ip, "bk_cloud_id": t.cloud_id}))
        .collect();
    hosts.push(json!({"ip": with_ip[0].ip, "cloud_id": with_ip[0].cloud_id + 1000}));
    let (code, body) = f.post_status(&json!({ "hosts": hosts })).await;
    assert_eq!(code, 200);
    let results = body["results"].as_array().expect("results");
    for (t, r) in with_ip.iter().zip(results) {
        assert_eq!(r["query"], json!({"ip": t.ip, "bk_cloud_id": t.cloud_id}));
        assert_matches_truth(r, t);
    }
    let last = results.last().expect("last");
    assert_eq!(
        (&last["found"], &last["status"]),
        (&json!(false), &json!("unknown"))
    );
    assert_eq!(last["query"]["bk_cloud_id"], with_ip[0].cloud_id + 1000);

    // By host id.
    let mut host_ids: Vec<i64> = truth.iter().map(|t| t.host_id as i64).collect();
    host_ids.push(987_654_321);
    let (code, body) = f.post_status(&json!({ "host_ids": host_ids })).await;
    assert_eq!(code, 200);
    let results = body["results"].as_array().expect("results");
    for (t, r) in truth.iter().zip(results) {
        assert_eq!(r["query"], t.host_id);
        assert_matches_truth(r, t);
    }
    assert_eq!(results.last().expect("last")["found"], false);

    // One agent; a legacy id keeps its ':' and percent-encoding is decoded.
    let legacy = truth.iter().find(|t| t.legacy).expect("legacy agent");
    let route = "/api/v1/agents/{agent_id}";
    for path in [
        format!("/api/v1/agents/{}", legacy.agent_id),
        format!("/api/v1/agents/{}", legacy.agent_id.replace(':', "%3A")),
    ] {
        let (code, body) = f.get(route, &path).await;
        assert_eq!(code, 200, "{path}");
        assert_matches_truth(&body, legacy);
    }
    let (code, body) = f.get(route, "/api/v1/agents/no%2Fsuch%20agent").await;
    assert_eq!(code, 404);
    assert_eq!(body["error"]["code"], "agent_not_found");
    assert!(body["error"]["message"]
        .as_str()
        .expect("message")
        .contains("no/such agent"));
    f.svc.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paging_walks_every_agent_once_and_filters_and_summary_match_the_truth() {
    let f = Fixture::start(900, "query-list").await;
    let truth = f.truth();
    let route = "/api/v1/agents";

    // Paging: every agent exactly once, in id order.
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    let mut pages = 0;
    loop {
        let path = match &cursor {
            Some(c) => format!("{route}?limit=97&cursor={c}"),
            None => format!("{route}?limit=97"),
        };
        let (code, body) = f.get(route, &path).await;
        assert_eq!(code, 200);
        pages += 1;
        let agents = body["agents"].as_array().expect("agents");
        assert!(agents.len() <= 97);
        seen.extend(
            agents
                .iter()
                .map(|a| a["agent_id"].as_str().expect("id").to_owned()),
        );
        match body["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_owned()),
            None => break,
        }
    }
    let mut expected: Vec<String> = truth.iter().map(|t| t.agent_id.clone()).collect();
    expected.sort();
    assert_eq!(seen, expected, "each agent once, in id order");
    assert_eq!(pages, expected.len().div_ceil(97));

    // Filters, on the busiest business and cloud area.
    let busiest = |key: fn(&SimAgent) -> i64| {
        let mut n: BTreeMap<i64, usize> = BTreeMap::new();
        for t in &truth {
            *n.entry(key(t)).or_default() += 1;
        }
        n.into_iter().max_by_key(|(_, c)| *c).expect("some").0
    };
    let (biz, cloud) = (busiest(|t| t.biz_id), busiest(|t| t.cloud_id));
    let want: BTreeSet<&str> = truth
        .iter()
        .filter(|t| expected_code(t) == 2 && t.biz_id == biz && t.cloud_id == cloud)
        .map(|t| t.agent_id.as_str())
        .collect();
    assert!(!want.is_empty(), "the filter selects someone");
    let path = format!("{route}?status=running&biz_id={biz}&cloud_id={cloud}&limit=1000");
    let (_, body) = f.get(route, &path).await;
    let got: BTreeSet<&str> = body["agents"]
        .as_array()
        .expect("agents")
        .iter()
        .map(|a| a["agent_id"].as_str().expect("id"))
        .collect();
    assert_eq!(got, want);
    assert_eq!(body["next_cursor"], Value::Null);
    let not_found = truth.iter().filter(|t| !t.in_gse).count();
    let (_, body) = f
        .get(route, &format!("{route}?status=not_found,lossy&limit=1000"))
        .await;
    let lossy = truth.iter().filter(|t| expected_code(t) == 3).count();
    assert_eq!(
        body["agents"].as_array().expect("agents").len(),
        not_found + lossy
    );

    // Bad parameters are JSON errors.
    for bad in ["limit=0", "limit=1001", "bizid=2", "biz_id=x", "cursor=zz"] {
        let (code, body) = f.get(route, &format!("{route}?{bad}")).await;
        assert_eq!(code, 400, "{bad}");
        assert!(body["error"]["message"]
            .as_str()
            .is_some_and(|m| !m.is_empty()));
    }

    // Summary.
    let (code, body) = f.get("/api/v1/summary", "/api/v1/summary").await;
    assert_eq!(code, 200);
    assert_eq!(body["total"], truth.len());
    assert_eq!((&body["stale"], &body["pending"]), (&json!(0), &json!(0)));
    let running = truth.iter().filter(|t| expected_code(t) == 2).count();
    assert_eq!(body["by_status"]["running"], running);
    assert_eq!(body["by_status"]["not_found"], not_found);
    let total_by_status: u64 = body["by_status"]
        .as_object()
        .expect("by_status")
        .values()
        .map(|v| v.as_u64().expect("count"))
        .sum();
    assert_eq!(total_by_status, truth.len() as u64);
    for (field, key) in [
        ("by_biz", (|t: &SimAgent| t.biz_id) as fn(&SimAgent) -> i64),
        ("by_cloud", |t: &SimAgent| t.cloud_id),
    ] {
        let mut want: BTreeMap<String, u64> = BTreeMap::new();
        for t in &truth {
            *want.entry(key(t).to_string()).or_default() += 1;
        }
        let got: BTreeMap<String, u64> =
            serde_json::from_value(body[field].clone()).expect("counts");
        assert_eq!(got, want, "{field}");
    }
    f.svc.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_and_malformed_batches_are_rejected_naming_the_limit() {
    let f = Fixture::start(200, "query-limits").await;
    let ids: Vec<String> = (0..10_001).map(|i| format!("agent-{i}")).collect();
    let (code, body) = f.post_status(&json!({ "agent_ids": ids })).await;
    assert_eq!(code, 413);
    assert_eq!(body["error"]["code"], "too_many_ids");
    assert_eq!(body["error"]["limit"], 10_000);
    let msg = body["error"]["message"].as_str().expect("message");
    assert!(
        msg.contains("10000") && msg.contains("http.max_query_ids"),
        "{msg}"
    );

    // Exactly at the limit is fine.
    let (code, body) = f.post_status(&json!({ "agent_ids": &ids[..10_000] })).await;
    assert_eq!((code, body["count"].as_u64()), (200, Some(10_000)));

    // A body over http.max_body_bytes (4 MiB). The service answers 413 after reading
    // 4 MiB and closes the connection with the rest unread; while the client is still
    // sending, the kernel may then reset the connection before the client has read
    // the answer (no lingering close in hyper). So up to five tries for one answer.
    let big = json!({ "agent_ids": vec!["x".repeat(1000); 5000] });
    let mut tries = 0;
    let resp = loop {
        tries += 1;
        match f
            .http
            .post(format!("{}/api/v1/agents/status", f.base))
            .json(&big)
            .send()
            .await
        {
            Ok(resp) => break resp,
            Err(e) if tries < 5 && (e.is_request() || e.is_connect()) => continue,
            Err(e) => panic!("POST of an oversized body, try {tries}: {e:?}"),
        }
    };
    let (code, body) = f.finish("post", "/api/v1/agents/status", resp).await;
    assert_eq!(code, 413);
    assert_eq!(body["error"]["code"], "body_too_large");
    assert!(body["error"]["message"]
        .as_str()
        .expect("message")
        .contains("http.max_body_bytes"));

    for bad in [
        json!({}),
        json!({"agent_ids": ["a"], "host_ids": [1]}),
        json!({"hosts": [{"ip": "10.0.0.1"}]}),
        json!({"agent_ids": "a"}),
    ] {
        let (code, body) = f.post_status(&bad).await;
        assert_eq!(code, 400, "{bad}");
        assert_eq!(body["error"]["code"], "bad_request");
    }

    let metrics = f.svc.metrics().await;
    let count = |labels: &str| {
        metric_value(
            &metrics,
            &format!("agentwatch_query_requests_total{{{labels}}}"),
        )
    };
    // The two answers read, and any try the service answered but the client lost.
    let rejected = count("code=\"413\",route=\"status\"");
    assert!(
        (2.0..=1.0 + f64::from(tries)).contains(&rejected),
        "{rejected} 413s after {tries} tries: {metrics}"
    );
    assert_eq!(count("code=\"400\",route=\"status\""), 4.0);
    assert_eq!(count("code=\"200\",route=\"status\""), 1.0);
    f.svc.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_10000_id_batch_is_streamed_in_full_and_its_latency_reported() {
    let f = Fixture::start(10_000, "query-latency").await;
    let truth = f.truth();
    assert_eq!(truth.len(), 10_000);
    let bodies = [
        (
            "agent_ids",
            json!({"agent_ids": truth.iter().map(|t| &t.agent_id).collect::<Vec<_>>()}),
        ),
        (
            "host_ids",
            json!({"host_ids": truth.iter().map(|t| t.host_id).collect::<Vec<_>>()}),
        ),
        (
            "hosts",
            json!({"hosts": truth.iter().map(|t| json!({"ip": t.ip, "bk_cloud_id": t.cloud_id})).collect::<Vec<_>>()}),
        ),
    ];
    for (name, body) in &bodies {
        let mut times = Vec::new();
        let mut bytes = 0;
        for _ in 0..5 {
            let start = Instant::now();
            let resp = f.post_status_raw(body).await;
            assert_eq!(resp.status(), 200);
            assert!(resp.content_length().is_none(), "streamed, not buffered");
            bytes = resp.bytes().await.expect("body").len();
            times.push(start.elapsed());
        }
        times.sort();
        println!(
            "query latency: 10,000-entry batch by {name}: median {:?}, min {:?} ({} KiB, \
             request to last byte, this build profile)",
            times[times.len() / 2],
            times[0],
            bytes / 1024
        );
    }
    // The answers are complete and valid.
    let (code, body) = f.post_status(&bodies[0].1).await;
    assert_eq!(code, 200);
    let found = body["results"]
        .as_array()
        .expect("results")
        .iter()
        .filter(|r| r["found"] == true)
        .count();
    assert_eq!(found, 10_000);
    f.svc.stop().await;
}

#[test]
fn the_openapi_check_rejects_bodies_that_break_the_documented_schemas() {
    let api = OpenApi::load();
    let shard = json!({"index": 0, "total": 1, "partial": false});
    let state = json!({
        "agent_id": "a", "host_id": 1, "cloud_id": 0, "biz_id": 2, "ip": "10.0.0.1",
        "status_code": 2, "status": "running", "alive": true, "version": "2.1.5",
        "run_mode": 0, "nodeman_status": "RUNNING", "os_type": "LINUX",
        "observed_at_ms": 1, "status_api": "v2", "plugins": {}
    });
    let good = json!({
        "shard": shard, "agent_id": "a", "status": "running", "alive": true,
        "stale": false, "pending": false, "seq": 1, "incarnation_ms": 1, "observed_at_ms": 1,
        "age_seconds": 0.5, "state": state
    });
    let route = "/api/v1/agents/{agent_id}";
    api.check("get", route, 200, &good);
    let mut extra = good.clone();
    extra["surprise"] = json!(1);
    let mut string_id = good.clone();
    string_id["state"]["host_id"] = json!("1");
    let mut no_shard = good.clone();
    no_shard.as_object_mut().expect("object").remove("shard");
    for bad in [extra, string_id, no_shard] {
        let r = std::panic::catch_unwind(|| api.check("get", route, 200, &bad));
        assert!(r.is_err(), "accepted {bad}");
    }
    let unknown = json!({"shard": shard, "count": 1,
        "results": [{"query": "x", "found": false, "status": "offline"}]});
    let r = std::panic::catch_unwind(|| api.check("post", "/api/v1/agents/status", 200, &unknown));
    assert!(r.is_err(), "an unknown agent is never reported offline");
}
