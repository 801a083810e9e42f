//! The GSE slot receiver and its worker, in-process against the simulator and a real
//! broker: tokens, limits, durable acceptance, broker outage, duplicates, and the
//! `fetch/host/dataid` round trip through `dispatch_message`.

mod common;

use std::time::{Duration, Instant};

use agentwatch::{
    config::Config,
    sim::{DispatchedMessage, SimAgent},
};
use common::*;
use secrecy::SecretString;
use serde_json::{json, Value};

const TOKEN: &str = "slot-token-0123456789abcdef";
const HEADER: &str = "X-Agentwatch-Slot-Token";
const SLOT_ID: i64 = 42;
const DISPATCH_TOKEN: &str = "gse-slot-token";

/// The harness config with the slot receiver on, its own slot topic and group.
fn slot_config(sim: &Sim, brokers: &str, name: &str) -> Config {
    let mut c = service_config(sim, brokers, name);
    c.kafka.slot_topic = c.kafka.events_topic.replace(".events", ".slot");
    c.slot.enabled = true;
    c.slot.token = Some(SecretString::from(TOKEN));
    c.slot.slot_id = Some(SLOT_ID);
    c.slot.dispatch_token = Some(SecretString::from(DISPATCH_TOKEN));
    c.slot.consumer_group = format!("slot-{}", uuid::Uuid::new_v4().simple());
    // tansu holds a group join for half the session timeout.
    c.slot.session_timeout = Duration::from_secs(6);
    c.validate().expect("slot test config is valid");
    c
}

async fn start_sim() -> Sim {
    let sim = Sim::agents(50, 5).await;
    sim.sim
        .set_slot_credentials(Some((SLOT_ID, DISPATCH_TOKEN.to_owned())));
    sim
}

/// POSTs `body` to the slot endpoint; (HTTP status, envelope).
async fn post(
    service: &Service,
    token: Option<&str>,
    body: impl Into<reqwest::Body>,
) -> (u16, Value) {
    let url = format!("http://{}/api/v4/bk_gse_slot/", service.running().http_addr);
    let mut req = reqwest::Client::new()
        .post(url)
        .header("content-type", "application/json")
        .timeout(Duration::from_secs(30))
        .body(body);
    if let Some(t) = token {
        req = req.header(HEADER, t);
    }
    let resp = req.send().await.expect("slot request");
    let status = resp.status().as_u16();
    (status, resp.json().await.expect("an envelope"))
}

/// POSTs `chunks` chunks of `size` spaces with `Transfer-Encoding: chunked` (no
/// Content-Length) over a raw connection; returns the HTTP status.
async fn post_chunked(service: &Service, chunks: usize, size: usize) -> u16 {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut conn = tokio::net::TcpStream::connect(service.running().http_addr)
        .await
        .expect("connect");
    let head = format!(
        "POST /api/v4/bk_gse_slot/ HTTP/1.1\r\nHost: agentwatch\r\n{HEADER}: {TOKEN}\r\n\
         Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\
         Connection: close\r\n\r\n"
    );
    conn.write_all(head.as_bytes()).await.expect("write head");
    let chunk = format!("{size:x}\r\n{}\r\n", " ".repeat(size));
    for _ in 0..chunks {
        // The server may answer and close before everything is sent.
        if conn.write_all(chunk.as_bytes()).await.is_err() {
            break;
        }
    }
    let _ = conn.write_all(b"0\r\n\r\n").await;
    let mut response = Vec::new();
    let _ = conn.read_to_end(&mut response).await;
    let text = String::from_utf8_lossy(&response);
    text.split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no HTTP status in {text:?}"))
}

fn fetch_request(message_id: &str, agent: &SimAgent) -> String {
    let content = json!({
        "type": "fetch/host/dataid",
        "cloudid": agent.cloud_id,
        "bk_agent_id": agent.agent_id,
        "ip": agent.ip,
        "bk_tenant_id": "system",
        "params": {"tasks": ["basereport", "processbeat_perf"]},
    });
    json!({"message_id": message_id, "bk_agent_id": agent.agent_id, "content": content.to_string()})
        .to_string()
}

fn message_id(name: &str) -> String {
    format!("bkmonitorbeat.{name}.{}", uuid::Uuid::new_v4().simple())
}

fn slot_metric(text: &str, result: &str) -> f64 {
    metric_value(
        text,
        &format!("agentwatch_slot_messages_total{{result=\"{result}\"}}"),
    )
}

fn dispatches_of(sim: &Sim, message_id: &str) -> Vec<DispatchedMessage> {
    sim.sim
        .dispatched()
        .into_iter()
        .filter(|d| d.message_id == message_id)
        .collect()
}

/// Waits until the worker has counted `n` messages with `result` in total.
async fn wait_for_result(service: &Service, result: &str, n: f64) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let text = service.metrics().await;
        if slot_metric(&text, result) >= n {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "no {n} slot messages with result {result}:\n{}",
            text.lines()
                .filter(|l| l.starts_with("agentwatch_slot"))
                .collect::<Vec<_>>()
                .join("\n")
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn is_ok_envelope(v: &Value) -> bool {
    *v == json!({"result": true, "code": 0, "message": "OK", "data": true})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_with_the_right_token_is_on_the_slot_topic_when_data_true_is_answered() {
    let broker = Broker::shared();
    let sim = start_sim().await;
    let cfg = slot_config(&sim, &broker.brokers, "slot-accept");
    let service = Service::start(&cfg).await;
    service.settle().await;
    let agent = sim.sim.truth().remove(0);
    let id = message_id("accept");
    let body = fetch_request(&id, &agent);

    let (status, envelope) = post(&service, Some(TOKEN), body.clone()).await;
    assert_eq!(status, 200, "{envelope}");
    assert!(is_ok_envelope(&envelope), "{envelope}");

    // Acknowledged before the answer: an independent reader sees it at once.
    let records = read_topic(&broker.brokers, &cfg.kafka.slot_topic);
    let record = records
        .iter()
        .find(|r| r.key == id)
        .expect("the message is on the slot topic, keyed by message_id");
    assert_eq!(record.payload.as_deref(), Some(body.as_bytes()));
    assert_eq!(record.header("content-type"), Some("application/json"));
    assert_eq!(
        slot_metric(&service.metrics().await, "accepted"),
        1.0,
        "counted as accepted"
    );
    service.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_or_wrong_token_gets_401_and_is_counted_and_nothing_is_stored() {
    let broker = Broker::shared();
    let sim = start_sim().await;
    let cfg = slot_config(&sim, &broker.brokers, "slot-auth");
    let service = Service::start(&cfg).await;
    service.settle().await;
    let agent = sim.sim.truth().remove(0);
    let id = message_id("auth");

    for token in [None, Some("slot-token-0123456789abcdeX"), Some("short")] {
        let (status, envelope) = post(&service, token, fetch_request(&id, &agent)).await;
        assert_eq!(status, 401, "{envelope}");
        assert_eq!(envelope["result"], false);
        assert_eq!(envelope["code"], 401);
        assert_eq!(envelope["data"], false);
        assert!(
            envelope["message"].as_str().unwrap().contains(HEADER),
            "the message names the header: {envelope}"
        );
    }
    assert_eq!(slot_metric(&service.metrics().await, "unauthorized"), 3.0);
    let stored = read_topic(&broker.brokers, &cfg.kafka.slot_topic);
    assert!(stored.iter().all(|r| r.key != id), "nothing was stored");
    service.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversized_body_gets_413_and_an_invalid_one_400_naming_the_field() {
    let broker = Broker::shared();
    let sim = start_sim().await;
    let mut cfg = slot_config(&sim, &broker.brokers, "slot-limits");
    cfg.slot.max_body_bytes = 4096;
    let service = Service::start(&cfg).await;
    service.settle().await;

    let big = json!({"message_id": "m", "bk_agent_id": "a", "content": "x".repeat(5000)});
    let (status, envelope) = post(&service, Some(TOKEN), big.to_string()).await;
    assert_eq!(status, 413, "{envelope}");
    assert_eq!(
        (envelope["code"].clone(), envelope["data"].clone()),
        (json!(413), json!(false))
    );

    // Without a Content-Length (chunked), the limit still holds while reading.
    assert_eq!(post_chunked(&service, 10, 1000).await, 413);

    let missing = json!({"message_id": "m", "bk_agent_id": "a"}).to_string();
    let (status, envelope) = post(&service, Some(TOKEN), missing).await;
    assert_eq!(status, 400);
    assert!(
        envelope["message"].as_str().unwrap().contains("content"),
        "{envelope}"
    );
    let (status, envelope) = post(&service, Some(TOKEN), "not json").await;
    assert_eq!(status, 400, "{envelope}");

    let text = service.metrics().await;
    assert_eq!(slot_metric(&text, "too_large"), 2.0);
    assert_eq!(slot_metric(&text, "invalid"), 2.0);
    assert_eq!(slot_metric(&text, "accepted"), 0.0);
    service.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fetch_host_dataid_is_answered_through_dispatch_message_with_the_configured_data_ids() {
    let broker = Broker::shared();
    let sim = start_sim().await;
    let mut cfg = slot_config(&sim, &broker.brokers, "slot-roundtrip");
    let agents = sim.sim.truth();
    let agent = agents[0].clone();
    // The agent's business has its own basereport data id.
    cfg.slot.biz_data_ids.insert(
        agent.biz_id.to_string(),
        [("basereport".to_owned(), 1_500_001)].into(),
    );
    let service = Service::start(&cfg).await;
    service.settle().await;

    let id = message_id("roundtrip");
    let (status, envelope) = post(&service, Some(TOKEN), fetch_request(&id, &agent)).await;
    assert_eq!(status, 200, "{envelope}");
    // Requests the worker does not answer, each counted by why.
    let other_type = json!({"message_id": message_id("type"), "bk_agent_id": agent.agent_id,
        "content": json!({"type": "push/host/config"}).to_string()});
    let bad_content =
        json!({"message_id": message_id("bad"), "bk_agent_id": agent.agent_id, "content": "{oops"});
    let stranger = SimAgent {
        agent_id: "0200000000000000000000000000ffff".into(),
        ip: "203.0.113.9".into(),
        ..agent.clone()
    };
    let unknown_agent = fetch_request(&message_id("stranger"), &stranger);
    for body in [
        other_type.to_string(),
        bad_content.to_string(),
        unknown_agent,
    ] {
        let (status, envelope) = post(&service, Some(TOKEN), body).await;
        assert_eq!(status, 200, "accepted before it is looked at: {envelope}");
    }

    wait_for_result(&service, "handled", 1.0).await;
    wait_for_result(&service, "unknown_agent", 1.0).await;
    let sent = dispatches_of(&sim, &id);
    assert_eq!(sent.len(), 1, "{:?}", sim.sim.dispatched());
    let d = &sent[0];
    assert_eq!(d.agent_id_list, vec![agent.agent_id.clone()]);
    assert_eq!((d.slot_id, d.token.as_str()), (SLOT_ID, DISPATCH_TOKEN));
    let content: Value = serde_json::from_str(&d.content).expect("content is JSON");
    assert_eq!(content["code"], 0);
    let mut data: Vec<(String, i64)> = content["data"]
        .as_array()
        .expect("data list")
        .iter()
        .map(|t| {
            (
                t["task"].as_str().unwrap().to_owned(),
                t["dataid"].as_i64().unwrap(),
            )
        })
        .collect();
    data.sort();
    assert_eq!(
        data,
        [
            ("basereport".to_owned(), 1_500_001),
            ("exceptionbeat".to_owned(), 1000),
            ("gather_up_beat".to_owned(), 1_100_017),
            ("processbeat_perf".to_owned(), 1007),
            ("processbeat_port".to_owned(), 1013),
        ]
    );

    let text = service.metrics().await;
    assert_eq!(slot_metric(&text, "unknown_type"), 1.0);
    assert_eq!(slot_metric(&text, "bad_content"), 1.0);
    assert_eq!(slot_metric(&text, "unknown_agent"), 1.0);
    assert_eq!(
        sim.sim.dispatched().len(),
        1,
        "only the fetch/host/dataid request of a known agent is answered"
    );
    service.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_duplicate_message_id_is_accepted_twice_but_handled_once() {
    let broker = Broker::shared();
    let sim = start_sim().await;
    let cfg = slot_config(&sim, &broker.brokers, "slot-dup");
    let service = Service::start(&cfg).await;
    service.settle().await;
    let agent = sim.sim.truth().remove(3);
    let id = message_id("dup");
    for _ in 0..2 {
        let (status, envelope) = post(&service, Some(TOKEN), fetch_request(&id, &agent)).await;
        assert_eq!(status, 200, "{envelope}");
        assert!(is_ok_envelope(&envelope), "{envelope}");
    }
    wait_for_result(&service, "duplicate", 1.0).await;
    let text = service.metrics().await;
    assert_eq!(slot_metric(&text, "handled"), 1.0);
    assert_eq!(slot_metric(&text, "accepted"), 2.0);
    assert_eq!(dispatches_of(&sim, &id).len(), 1);
    let keyed = read_topic(&broker.brokers, &cfg.kafka.slot_topic)
        .into_iter()
        .filter(|r| r.key == id)
        .count();
    assert_eq!(keyed, 2, "both copies are stored under the same key");
    service.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn while_kafka_is_down_the_caller_gets_an_error_and_its_retry_is_handled_once() {
    let broker = Broker::private();
    let sim = start_sim().await;
    let mut cfg = slot_config(&sim, &broker.brokers, "slot-outage");
    cfg.slot.ack_timeout = Duration::from_secs(2);
    let service = Service::start(&cfg).await;
    service.settle().await;
    let agent = sim.sim.truth().remove(7);
    let id = message_id("outage");
    let body = fetch_request(&id, &agent);

    broker.signal("STOP");
    let started = Instant::now();
    let (status, envelope) = post(&service, Some(TOKEN), body.clone()).await;
    assert_eq!(status, 503, "{envelope}");
    assert_eq!(envelope["result"], false);
    assert_eq!(envelope["data"], false);
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "answered within ack_timeout: {:?}",
        started.elapsed()
    );
    assert!(dispatches_of(&sim, &id).is_empty());
    broker.signal("CONT");

    // The caller retries until it is told the message is stored.
    let deadline = Instant::now() + Duration::from_secs(90);
    let mut retries = 1;
    loop {
        let (status, envelope) = post(&service, Some(TOKEN), body.clone()).await;
        if status == 200 {
            assert!(is_ok_envelope(&envelope), "{envelope}");
            break;
        }
        assert_eq!(status, 503, "{envelope}");
        retries += 1;
        assert!(
            Instant::now() < deadline,
            "no retry succeeded after SIGCONT"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    wait_for_result(&service, "handled", 1.0).await;
    // The first attempt may have landed after all (the broker had it in its socket
    // buffer): then the worker saw it twice and dropped one.
    let copies = read_topic(&broker.brokers, &cfg.kafka.slot_topic)
        .into_iter()
        .filter(|r| r.key == id)
        .count();
    assert!((1..=2).contains(&copies), "{copies} copies");
    println!("outage: stored after {retries} retries; {copies} copies on the topic");
    wait_for_result(&service, "duplicate", (copies - 1) as f64).await;
    let text = service.metrics().await;
    assert_eq!(slot_metric(&text, "handled"), 1.0);
    assert!(slot_metric(&text, "kafka_unavailable") >= 1.0);
    assert_eq!(dispatches_of(&sim, &id).len(), 1, "handled exactly once");
    service.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_worker_resumes_after_the_last_handled_message() {
    // The committed offset is where the next consumer of the group starts; on tansu that
    // only works at a record-batch boundary, which the receiver's one-record batches
    // guarantee.
    let broker = Broker::shared();
    let sim = start_sim().await;
    let cfg = slot_config(&sim, &broker.brokers, "slot-restart");
    let agent = sim.sim.truth().remove(1);
    let first = message_id("before");
    let service = Service::start(&cfg).await;
    service.settle().await;
    let (status, _) = post(&service, Some(TOKEN), fetch_request(&first, &agent)).await;
    assert_eq!(status, 200);
    wait_for_result(&service, "handled", 1.0).await;
    service.stop().await;

    let second = message_id("after");
    let service = Service::start(&cfg).await;
    service.settle().await;
    let (status, _) = post(&service, Some(TOKEN), fetch_request(&second, &agent)).await;
    assert_eq!(status, 200);
    wait_for_result(&service, "handled", 1.0).await;
    assert_eq!(dispatches_of(&sim, &second).len(), 1);
    assert_eq!(
        dispatches_of(&sim, &first).len(),
        1,
        "the message handled before the restart is not handled again"
    );
    assert_eq!(slot_metric(&service.metrics().await, "handled"), 1.0);
    service.stop().await;
}
