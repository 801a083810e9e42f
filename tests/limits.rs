//! Every limit, black-box: input exactly at the limit is accepted, input just over it
//! is rejected with an error naming the config key, and nothing else is affected (the
//! next request is served, other batches still produce, the service keeps sweeping).
//! The table of limits and which test proves each is `docs/limits.md`.

mod common;

use std::{
    collections::HashSet,
    net::SocketAddr,
    sync::{
        atomic::{AtomicBool, AtomicUsize, Ordering},
        Arc, Mutex,
    },
    time::{Duration, Instant},
};

use agentwatch::{config::Config, proto::v1::Op};
use axum::{
    body::{to_bytes, Body},
    extract::{Request, State},
    http::header,
    response::Response,
    Router,
};
use common::*;
use secrecy::SecretString;
use serde_json::{json, Value};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
};

/// One raw HTTP/1.1 request on a fresh connection (no pooling, so each request is
/// exactly one connection); returns (status, body). `Connection: close` is added.
async fn raw(addr: SocketAddr, method: &str, path: &str, body: &[u8]) -> (u16, String) {
    let mut conn = TcpStream::connect(addr).await.expect("connect");
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: agentwatch\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    conn.write_all(head.as_bytes()).await.expect("write head");
    // The server may answer (413) and close before the whole body is sent.
    let _ = conn.write_all(body).await;
    let mut response = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(30), conn.read_to_end(&mut response)).await;
    parse_response(&response)
}

fn parse_response(response: &[u8]) -> (u16, String) {
    let text = String::from_utf8_lossy(response);
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no HTTP status in {text:?}"));
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    if !head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        return (status, body.to_owned());
    }
    // Chunked (the streamed query answers): "<hex size>\r\n<data>\r\n" ... "0\r\n\r\n".
    let (mut rest, mut out) = (body, String::new());
    while let Some((size, after)) = rest.split_once("\r\n") {
        let n = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
        if n == 0 || after.len() < n {
            break;
        }
        out.push_str(&after[..n]);
        rest = after[n..].trim_start_matches("\r\n");
    }
    (status, out)
}

/// `json` padded with trailing spaces (still the same JSON) to exactly `len` bytes.
fn padded(json: &str, len: usize) -> Vec<u8> {
    assert!(json.len() <= len, "{} > {len}", json.len());
    let mut b = json.as_bytes().to_vec();
    b.resize(len, b' ');
    b
}

/// Whether the server closed `conn` (EOF or reset) within `within`.
async fn closed_within(conn: &mut TcpStream, within: Duration) -> bool {
    let mut buf = [0u8; 1024];
    let deadline = Instant::now() + within;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, conn.read(&mut buf)).await {
            Err(_) => return false,
            Ok(Ok(0)) | Ok(Err(_)) => return true,
            // A 408 or other bytes before the close: keep reading until EOF.
            Ok(Ok(_)) => continue,
        }
    }
}

fn error_of(body: &str) -> Value {
    let v: Value = serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {body}"));
    v["error"].clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn query_body_and_id_limits_accept_exactly_the_limit_and_reject_one_more() {
    let broker = Broker::shared();
    let sim = Sim::agents(20, 8).await;
    let mut cfg = service_config(&sim, &broker.brokers, "limits-query");
    cfg.http.max_body_bytes = 1024;
    cfg.http.max_query_ids = 3;
    let svc = Service::start(&cfg).await;
    svc.settle().await;
    let addr = svc.running().http_addr;
    let ids: Vec<String> = sim.sim.truth().iter().map(|t| t.agent_id.clone()).collect();
    const PATH: &str = "/api/v1/agents/status";

    // http.max_body_bytes: exactly 1024 bytes is read, 1025 is 413 naming the key.
    let three = json!({"agent_ids": &ids[..3]}).to_string();
    let (status, body) = raw(addr, "POST", PATH, &padded(&three, 1024)).await;
    assert_eq!(status, 200, "{body}");
    let v: Value = serde_json::from_str(&body).expect("json");
    assert_eq!(v["count"], 3);
    assert!(v["results"]
        .as_array()
        .expect("results")
        .iter()
        .all(|r| r["status"] != "unknown"));

    let (status, body) = raw(addr, "POST", PATH, &padded(&three, 1025)).await;
    assert_eq!(status, 413, "{body}");
    let e = error_of(&body);
    assert_eq!(e["code"], "body_too_large");
    assert_eq!(e["limit"], 1024);
    assert!(
        e["message"]
            .as_str()
            .unwrap_or("")
            .contains("http.max_body_bytes"),
        "{e}"
    );

    // http.max_query_ids: 3 ids answered, 4 ids 413 naming the key.
    let four = json!({"agent_ids": &ids[..4]}).to_string();
    let (status, body) = raw(addr, "POST", PATH, four.as_bytes()).await;
    assert_eq!(status, 413, "{body}");
    let e = error_of(&body);
    assert_eq!(e["code"], "too_many_ids");
    assert_eq!(e["limit"], 3);
    assert!(
        e["message"]
            .as_str()
            .unwrap_or("")
            .contains("http.max_query_ids"),
        "{e}"
    );

    // Nothing else affected: the next normal request on the same server is answered,
    // and the service keeps sweeping.
    let (status, body) = raw(addr, "POST", PATH, three.as_bytes()).await;
    assert_eq!(status, 200, "{body}");
    let (status, _) = raw(addr, "GET", "/readyz", b"").await;
    assert_eq!(status, 200);
    svc.settle_after_sweeps(1).await;
    let metrics = svc.metrics().await;
    assert_eq!(
        metric_value(
            &metrics,
            "agentwatch_query_requests_total{code=\"413\",route=\"status\"}"
        ),
        2.0,
        "{metrics}"
    );
    svc.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_headers_and_slow_bodies_are_cut_at_their_timeouts_while_others_are_served() {
    let broker = Broker::shared();
    let sim = Sim::agents(20, 9).await;
    let mut cfg = service_config(&sim, &broker.brokers, "limits-timeouts");
    cfg.http.header_read_timeout = Duration::from_millis(1500);
    cfg.http.request_timeout = Duration::from_secs(3);
    let svc = Service::start(&cfg).await;
    svc.settle().await;
    let addr = svc.running().http_addr;

    // Headers completed well within http.header_read_timeout: served.
    let mut ok = TcpStream::connect(addr).await.expect("connect");
    ok.write_all(b"GET /healthz HTTP/1.1\r\nHost: a\r\n")
        .await
        .expect("write");
    tokio::time::sleep(Duration::from_millis(300)).await;
    ok.write_all(b"Connection: close\r\n\r\n")
        .await
        .expect("write");
    let mut resp = Vec::new();
    ok.read_to_end(&mut resp).await.expect("read");
    assert_eq!(parse_response(&resp).0, 200);

    // A slowloris: headers never finished. Its connection is closed after the header
    // read timeout; meanwhile other clients are served.
    let started = Instant::now();
    let mut slow = TcpStream::connect(addr).await.expect("connect");
    slow.write_all(b"GET /healthz HTTP/1.1\r\nHost: a\r\n")
        .await
        .expect("write");
    assert_eq!(raw(addr, "GET", "/healthz", b"").await.0, 200);
    assert!(
        closed_within(&mut slow, Duration::from_secs(10)).await,
        "slow-header connection still open"
    );
    let held = started.elapsed();
    assert!(
        held >= Duration::from_millis(1400),
        "closed too early: {held:?}"
    );

    // A body that stops half way: 408 naming http.request_timeout after ~3s.
    let mut stalled = TcpStream::connect(addr).await.expect("connect");
    stalled
        .write_all(
            b"POST /api/v1/agents/status HTTP/1.1\r\nHost: a\r\nContent-Type: application/json\r\n\
              Content-Length: 100\r\n\r\n{\"agent_ids\":",
        )
        .await
        .expect("write");
    let started = Instant::now();
    let mut resp = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), stalled.read_to_end(&mut resp)).await;
    let took = started.elapsed();
    let (status, body) = parse_response(&resp);
    assert_eq!(status, 408, "{body}");
    let e = error_of(&body);
    assert_eq!(e["code"], "request_timeout");
    assert!(
        e["message"]
            .as_str()
            .unwrap_or("")
            .contains("http.request_timeout"),
        "{e}"
    );
    assert!(
        took >= Duration::from_millis(2900),
        "answered too early: {took:?}"
    );

    // A body that arrives slowly but completes within the timeout: answered.
    let mut slow_ok = TcpStream::connect(addr).await.expect("connect");
    let body = br#"{"agent_ids":["x"]}"#;
    let head = format!(
        "POST /api/v1/agents/status HTTP/1.1\r\nHost: a\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    slow_ok.write_all(head.as_bytes()).await.expect("write");
    slow_ok.write_all(&body[..5]).await.expect("write");
    tokio::time::sleep(Duration::from_millis(500)).await;
    slow_ok.write_all(&body[5..]).await.expect("write");
    let mut resp = Vec::new();
    slow_ok.read_to_end(&mut resp).await.expect("read");
    assert_eq!(parse_response(&resp).0, 200);

    // Nothing else affected: the service is still sweeping and answering.
    svc.settle_after_sweeps(1).await;
    assert_eq!(raw(addr, "GET", "/readyz", b"").await.0, 200);
    svc.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_up_to_max_connections_are_served_and_one_more_waits_for_a_free_slot() {
    let broker = Broker::shared();
    let sim = Sim::agents(20, 10).await;
    let mut cfg = service_config(&sim, &broker.brokers, "limits-conns");
    cfg.http.max_connections = 4;
    // Idle connections are closed after this, which frees their slots.
    cfg.http.header_read_timeout = Duration::from_secs(3);
    let svc = Service::start(&cfg).await;
    svc.settle().await;
    let addr = svc.running().http_addr;

    // 3 idle connections held: the 4th (a request) is served at once.
    let mut idle = Vec::new();
    for _ in 0..3 {
        idle.push(TcpStream::connect(addr).await.expect("connect"));
    }
    let started = Instant::now();
    assert_eq!(raw(addr, "GET", "/healthz", b"").await.0, 200);
    let at_limit = started.elapsed();
    assert!(
        at_limit < Duration::from_secs(2),
        "at the limit took {at_limit:?}"
    );

    // A 4th idle connection takes the last slot: a 5th waits until the server closes
    // an idle one (after the header read timeout), then is served.
    idle.push(TcpStream::connect(addr).await.expect("connect"));
    tokio::time::sleep(Duration::from_millis(100)).await;
    let started = Instant::now();
    assert_eq!(raw(addr, "GET", "/healthz", b"").await.0, 200);
    let over = started.elapsed();
    assert!(
        over >= Duration::from_millis(1500),
        "one over the limit was served without waiting ({over:?})"
    );
    drop(idle);
    assert_eq!(raw(addr, "GET", "/readyz", b"").await.0, 200);
    svc.stop().await;
}

/// A GSE in front of the simulator that pads `list_agent_state` answers with trailing
/// spaces (still valid JSON): the batch holding `over` to `limit + 1` bytes, the batch
/// holding `at` to exactly `limit`.
struct PaddingGse {
    sim: SocketAddr,
    limit: usize,
    on: AtomicBool,
    over: Mutex<String>,
    at: Mutex<String>,
    /// Agent ids of every status request, in arrival order.
    batches: Mutex<Vec<Vec<String>>>,
    padded_over: AtomicUsize,
    padded_at: AtomicUsize,
    http: reqwest::Client,
}

async fn padding_gse(State(p): State<Arc<PaddingGse>>, req: Request) -> Response {
    let (parts, body) = req.into_parts();
    let body = to_bytes(body, usize::MAX).await.expect("request body");
    let path = parts.uri.path_and_query().map_or("/", |p| p.as_str());
    let mut upstream = p
        .http
        .post(format!("http://{}{path}", p.sim))
        .body(body.clone());
    for (k, v) in &parts.headers {
        if k != header::HOST && k != header::CONTENT_LENGTH {
            upstream = upstream.header(k, v);
        }
    }
    let resp = upstream.send().await.expect("simulator answers");
    let status = resp.status();
    let mut answer = resp.bytes().await.expect("simulator body").to_vec();
    let ids: Option<Vec<String>> = serde_json::from_slice::<Value>(&body)
        .ok()
        .and_then(|v| serde_json::from_value(v["agent_id_list"].clone()).ok());
    if let Some(ids) = ids {
        let (over, at) = (
            p.over.lock().expect("lock").clone(),
            p.at.lock().expect("lock").clone(),
        );
        let target = match (ids.contains(&over), ids.contains(&at)) {
            _ if !p.on.load(Ordering::SeqCst) => None,
            (true, false) => {
                p.padded_over.fetch_add(1, Ordering::SeqCst);
                Some(p.limit + 1)
            }
            (false, true) => {
                p.padded_at.fetch_add(1, Ordering::SeqCst);
                Some(p.limit)
            }
            _ => None,
        };
        if let Some(len) = target {
            assert!(
                answer.len() <= len,
                "natural answer {} > {len}",
                answer.len()
            );
            answer.resize(len, b' ');
        }
        p.batches.lock().expect("lock").push(ids);
    }
    Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(answer))
        .expect("response")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gse_answer_one_byte_over_max_response_bytes_fails_only_its_batch_and_no_false_event() {
    const LIMIT: usize = 256 * 1024;
    let broker = Broker::shared();
    let sim = Sim::agents(300, 11).await;
    let proxy = Arc::new(PaddingGse {
        sim: sim.addr,
        limit: LIMIT,
        on: AtomicBool::new(false),
        over: Mutex::default(),
        at: Mutex::default(),
        batches: Mutex::default(),
        padded_over: AtomicUsize::new(0),
        padded_at: AtomicUsize::new(0),
        http: reqwest::Client::new(),
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let proxy_addr = listener.local_addr().expect("addr");
    let app = Router::new()
        .fallback(padding_gse)
        .with_state(proxy.clone());
    tokio::spawn(async move { axum::serve(listener, app).await });

    let mut cfg: Config = service_config(&sim, &broker.brokers, "limits-upstream");
    cfg.gse.base_url = format!("http://{proxy_addr}/api/bk-gse/prod/api/v2/");
    cfg.gse.max_response_bytes = LIMIT;
    // One attempt per sweep: the over-limit answer is not retried anyway.
    cfg.gse.retry.max_retries = 0;
    let svc = Service::start(&cfg).await;
    svc.settle().await;
    let events = &cfg.kafka.events_topic;
    let before = event_ids(&broker.brokers, events);
    assert_eq!(
        before.len(),
        300,
        "first sweep: one snapshot event per agent"
    );

    // Two agents of different batches, both running: `over`'s batch gets answers one
    // byte over the limit, `at`'s batch answers of exactly the limit.
    let batches = proxy.batches.lock().expect("lock").clone();
    let running: HashSet<String> = sim
        .sim
        .truth()
        .into_iter()
        .filter(|t| t.in_gse && t.status_code == 2)
        .map(|t| t.agent_id)
        .collect();
    let pick = |b: &Vec<String>| b.iter().find(|id| running.contains(*id)).cloned();
    let over = pick(&batches[0]).expect("a running agent in batch 0");
    let at_batch = batches
        .iter()
        .find(|b| !b.contains(&over))
        .expect("another batch");
    let at = pick(at_batch).expect("a running agent in another batch");
    let over_batch: HashSet<String> = batches
        .iter()
        .find(|b| b.contains(&over))
        .expect("batch")
        .iter()
        .cloned()
        .collect();
    *proxy.over.lock().expect("lock") = over.clone();
    *proxy.at.lock().expect("lock") = at.clone();

    svc.between_sweeps().await;
    proxy.on.store(true, Ordering::SeqCst);
    // Both change while the padding is on.
    svc.change_between_sweeps(|| {
        assert!(sim.sim.set_status(&over, 3));
        assert!(sim.sim.set_status(&at, 3));
    })
    .await;
    assert!(proxy.padded_over.load(Ordering::SeqCst) >= 3);
    assert!(proxy.padded_at.load(Ordering::SeqCst) >= 3);

    // The at-limit batch produced `at`'s change; the over-limit batch produced nothing
    // that claims a GSE status for its agents: no false event.
    let new = events_since(&broker.brokers, events, &before);
    let status_events: Vec<_> = new
        .iter()
        .filter(|e| e.changed_fields.iter().any(|f| f == "status_code"))
        .collect();
    let changed: Vec<&str> = status_events
        .iter()
        .filter_map(|e| Some(e.after.as_ref()?.agent_id.as_str()))
        .collect();
    assert_eq!(
        changed,
        [at.as_str()],
        "only the at-limit batch's change: {new:?}"
    );
    assert!(
        new.iter()
            .filter_map(|e| e.after.as_ref())
            .all(|a| !over_batch.contains(&a.agent_id) || a.status_code != 3),
        "an agent of the failed batch got a GSE status: {new:?}"
    );
    let metrics = svc.metrics().await;
    assert!(
        metric_value(
            &metrics,
            "agentwatch_upstream_requests_total{outcome=\"too_large\",upstream=\"gse\"}"
        ) >= 3.0,
        "{metrics}"
    );
    assert!(metric_value(&metrics, "agentwatch_gse_failed_batches_total") >= 3.0);
    assert!(metric_value(&metrics, "agentwatch_sweeps_total{result=\"partial\"}") >= 3.0);

    // Nothing else affected: once answers fit again, the held-back change arrives.
    let seen = event_ids(&broker.brokers, events);
    proxy.on.store(false, Ordering::SeqCst);
    svc.settle_after_sweeps(2).await;
    let late = events_since(&broker.brokers, events, &seen);
    let late: Vec<_> = late
        .iter()
        .filter_map(|e| {
            Some((
                e.op,
                e.after.as_ref()?.agent_id.clone(),
                e.after.as_ref()?.status_code,
            ))
        })
        .collect();
    assert!(
        late.contains(&(Op::Update as i32, over.clone(), 3)),
        "the failed batch's change after recovery: {late:?}"
    );
    svc.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_in_flight_stop_at_exactly_max_in_flight_and_the_rest_wait_until_acked() {
    // A private broker: it is paused, so nothing is acknowledged for a while.
    let broker = Broker::private();
    let sim = Sim::agents(100, 13).await;
    let mut cfg = service_config(&sim, &broker.brokers, "limits-inflight");
    cfg.kafka.max_in_flight = 5;
    // Longer than the pause: librdkafka keeps retrying instead of timing out.
    cfg.kafka.message_timeout = Duration::from_secs(60);
    let svc = Service::start(&cfg).await;
    svc.settle().await;
    let events = &cfg.kafka.events_topic;
    let before = event_ids(&broker.brokers, events);
    let changed = sim.running_agents(20);

    broker.signal("STOP");
    svc.between_sweeps().await;
    sim.set_status_of(&changed, 3);
    let running = svc.running();
    next_sweeps(running, 2).await;
    // 20 changes = 40 records (event + state); exactly 5 are handed to the producer.
    let mut peak = 0.0f64;
    for _ in 0..10 {
        let m = svc.metrics().await;
        let now = metric_value(&m, "agentwatch_kafka_in_flight ");
        assert!(now <= 5.0, "in flight {now} > kafka.max_in_flight 5");
        peak = peak.max(now);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(peak, 5.0, "the limit is reached while the broker is paused");
    assert_eq!(
        running.store.stats().pending,
        20,
        "the rest wait as pending changes"
    );
    // Nothing else affected: the HTTP endpoint answers and sweeps go on.
    assert_eq!(raw(running.http_addr, "GET", "/healthz", b"").await.0, 200);
    next_sweeps(running, 1).await;

    broker.signal("CONT");
    svc.settle_after_sweeps(1).await;
    assert_each_delivered_once(&broker.brokers, events, &before, &changed);
    svc.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_in_flight_stop_at_max_in_flight_bytes_and_the_rest_follow_in_full() {
    // 3000 update events of ~500 bytes on the wire do not fit in 1 MiB: the sink stops
    // handing records over mid-batch, and what it took from the queue but could not
    // send waits there again (nothing lost, nothing sent twice).
    let broker = Broker::private();
    let sim = Sim::agents(4000, 15).await;
    let mut cfg = service_config(&sim, &broker.brokers, "limits-inflight-bytes");
    cfg.kafka.max_in_flight_bytes = 1024 * 1024;
    cfg.kafka.message_timeout = Duration::from_secs(60);
    let svc = Service::start(&cfg).await;
    svc.settle().await;
    let events = &cfg.kafka.events_topic;
    let before = event_ids(&broker.brokers, events);
    let changed = sim.running_agents(3000);
    assert_eq!(changed.len(), 3000);

    broker.signal("STOP");
    svc.between_sweeps().await;
    sim.set_status_of(&changed, 3);
    let running = svc.running();
    next_sweeps(running, 1).await;
    let mut peak = 0.0f64;
    for _ in 0..10 {
        let m = svc.metrics().await;
        peak = peak.max(metric_value(&m, "agentwatch_kafka_in_flight "));
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        (1000.0..3000.0).contains(&peak),
        "in flight {peak}: the byte bound (not the 50,000 records of max_in_flight) stops it"
    );

    broker.signal("CONT");
    svc.settle_after_sweeps(1).await;
    assert_each_delivered_once(&broker.brokers, events, &before, &changed);
    svc.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_inventory_one_host_over_max_hosts_keeps_the_last_one_and_sweeps_go_on() {
    let broker = Broker::shared();
    let sim = Sim::agents(100, 14).await;
    let mut cfg = service_config(&sim, &broker.brokers, "limits-hosts");
    cfg.nodeman.max_hosts = 100;
    cfg.nodeman.retry.max_retries = 0;
    let svc = Service::start(&cfg).await;
    // Exactly 100 hosts: listed, one snapshot event each.
    svc.settle().await;
    let events = &cfg.kafka.events_topic;
    let before = event_ids(&broker.brokers, events);
    assert_eq!(before.len(), 100);

    // One host more: every refresh fails naming the limit; the last inventory is kept,
    // so no agent is deleted and the new one is not added ...
    let extra = sim.sim.add_host(agentwatch::sim::NewHost::default());
    let victim = sim
        .sim
        .truth()
        .into_iter()
        .find(|t| t.in_gse && t.status_code == 2 && t.agent_id != extra)
        .expect("a running agent")
        .agent_id;
    svc.settle_after_sweeps(2).await;
    let metrics = svc.metrics().await;
    // The HTTP call itself succeeded (outcome "ok"); the refresh is what failed.
    assert!(
        metric_value(
            &metrics,
            "agentwatch_inventory_refreshes_total{result=\"failed\"}"
        ) >= 1.0,
        "{metrics}"
    );
    assert_eq!(
        metric_value(&metrics, "agentwatch_inventory_agents "),
        100.0
    );
    // ... and the sweeps go on over the kept inventory: a status change is an event.
    svc.change_between_sweeps(|| assert!(sim.sim.set_status(&victim, 3)))
        .await;
    let new = events_since(&broker.brokers, events, &before);
    let ops: Vec<(i32, String)> = new
        .iter()
        .filter_map(|e| Some((e.op, e.after.as_ref()?.agent_id.clone())))
        .collect();
    assert_eq!(
        ops,
        [(Op::Update as i32, victim.clone())],
        "only the real change, no delete, no create: {new:?}"
    );
    assert!(svc.running().store.agent(&extra).is_none());

    // Back at the limit (the extra host stays, another goes): the refresh works again
    // and the extra host is watched from the next successful refresh on.
    assert!(sim.sim.remove_host(&victim));
    wait_until(Duration::from_secs(30), "the extra host is watched", || {
        svc.running().store.agent(&extra).is_some()
    })
    .await;
    svc.stop().await;
}

/// The harness config with the slot receiver on (see tests/slot.rs).
fn slot_config(sim: &Sim, brokers: &str, name: &str) -> Config {
    let mut c = service_config(sim, brokers, name);
    c.kafka.slot_topic = c.kafka.events_topic.replace(".events", ".slot");
    c.slot.enabled = true;
    c.slot.token = Some(SecretString::from(SLOT_TOKEN));
    c.slot.slot_id = Some(42);
    c.slot.dispatch_token = Some(SecretString::from("gse-slot-token"));
    c.slot.consumer_group = format!("slot-{}", uuid::Uuid::new_v4().simple());
    c.slot.session_timeout = Duration::from_secs(6);
    c.slot.max_body_bytes = 2048;
    c.validate().expect("slot test config is valid");
    c
}

const SLOT_TOKEN: &str = "slot-token-0123456789abcdef";

async fn slot_post(addr: SocketAddr, body: &[u8]) -> (u16, Value) {
    let mut conn = TcpStream::connect(addr).await.expect("connect");
    let head = format!(
        "POST /api/v4/bk_gse_slot/ HTTP/1.1\r\nHost: agentwatch\r\n\
         X-Agentwatch-Slot-Token: {SLOT_TOKEN}\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    conn.write_all(head.as_bytes()).await.expect("write head");
    let _ = conn.write_all(body).await;
    let mut response = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(30), conn.read_to_end(&mut response)).await;
    let (status, body) = parse_response(&response);
    (
        status,
        serde_json::from_str(&body).unwrap_or_else(|e| panic!("{e}: {body}")),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slot_body_of_exactly_max_body_bytes_is_stored_and_one_byte_more_is_413() {
    let broker = Broker::shared();
    let sim = Sim::agents(10, 12).await;
    sim.sim
        .set_slot_credentials(Some((42, "gse-slot-token".to_owned())));
    let cfg = slot_config(&sim, &broker.brokers, "limits-slot");
    let svc = Service::start(&cfg).await;
    svc.settle().await;
    let addr = svc.running().http_addr;
    let agent = sim.sim.truth()[0].clone();
    let message = |id: &str| {
        let content = json!({"type": "fetch/host/dataid", "cloudid": agent.cloud_id,
            "bk_agent_id": agent.agent_id, "ip": agent.ip, "params": {"tasks": ["basereport"]}});
        json!({"message_id": id, "bk_agent_id": agent.agent_id, "content": content.to_string()})
            .to_string()
    };
    let id = |n: &str| format!("limits.{n}.{}", uuid::Uuid::new_v4().simple());
    let (at_id, over_id, next_id) = (id("at"), id("over"), id("next"));

    let (status, env) = slot_post(addr, &padded(&message(&at_id), 2048)).await;
    assert_eq!((status, env["result"].clone()), (200, json!(true)), "{env}");

    let (status, env) = slot_post(addr, &padded(&message(&over_id), 2049)).await;
    assert_eq!(status, 413, "{env}");
    assert_eq!(env["data"], false);
    let text = env["message"].as_str().unwrap_or("");
    assert!(
        text.contains("2048") && text.contains("slot.max_body_bytes"),
        "{env}"
    );

    // Nothing else affected: the next normal message is stored.
    let (status, env) = slot_post(addr, message(&next_id).as_bytes()).await;
    assert_eq!(status, 200, "{env}");
    let keys: Vec<String> = read_topic(&broker.brokers, &cfg.kafka.slot_topic)
        .into_iter()
        .map(|r| r.key)
        .collect();
    assert!(keys.contains(&at_id) && keys.contains(&next_id), "{keys:?}");
    assert!(
        !keys.contains(&over_id),
        "the rejected message reached Kafka"
    );
    svc.stop().await;
}

#[test]
fn every_limit_at_its_bounds_is_accepted() {
    let toml = r#"
        [bk]
        app_code = "agentwatch"
        app_secret = "not-a-real-secret"
        [http]
        max_body_bytes = 268435456
        max_query_ids = 1000000
        header_read_timeout = "100ms"
        request_timeout = "10m"
        max_connections = 100000
        [nodeman]
        base_url = "http://nodeman.example/"
        max_hosts = 50000000
        [gse]
        base_url = "http://gse.example/"
        max_response_bytes = 1024
        [inventory]
        max_file_bytes = 4294967296
        [kafka]
        max_in_flight = 5000000
        max_in_flight_bytes = 1073741824
        [slot]
        max_body_bytes = 67108864
        dedup_capacity = 10000000
        ack_timeout = "5m"
    "#;
    if let Err(e) = agentwatch::config::load_str(toml, "limits.toml", std::iter::empty()) {
        panic!("limits at their bounds rejected:\n{e}");
    }
}

#[test]
fn every_limit_out_of_range_is_reported_by_field_at_start() {
    let toml = r#"
        [http]
        max_body_bytes = 1023
        max_query_ids = 1000001
        header_read_timeout = "99ms"
        request_timeout = "11m"
        max_connections = 0
        [nodeman]
        base_url = "http://nodeman.example/"
        max_hosts = 0
        max_response_bytes = 1023
        [gse]
        base_url = "http://gse.example/"
        max_response_bytes = 1023
        [inventory]
        max_file_bytes = 1023
        [kafka]
        max_in_flight = 5000001
        max_in_flight_bytes = 1073741825
        [slot]
        max_body_bytes = 1023
        dedup_capacity = 10000001
        ack_timeout = "5m1s"
    "#;
    let err = agentwatch::config::load_str(toml, "limits.toml", std::iter::empty())
        .expect_err("limits out of range");
    let text = err.to_string();
    for field in [
        "http.max_body_bytes",
        "http.max_query_ids",
        "http.header_read_timeout",
        "http.request_timeout",
        "http.max_connections",
        "nodeman.max_hosts",
        "nodeman.max_response_bytes",
        "gse.max_response_bytes",
        "inventory.max_file_bytes",
        "kafka.max_in_flight",
        "kafka.max_in_flight_bytes",
        "slot.max_body_bytes",
        "slot.dedup_capacity",
        "slot.ack_timeout",
    ] {
        assert!(text.contains(field), "{field} not reported in:\n{text}");
    }
}

#[test]
fn the_request_timeout_must_leave_room_for_the_slot_ack_timeout() {
    let config = |ack: &str| {
        format!(
            r#"
            [bk]
            app_code = "agentwatch"
            app_secret = "not-a-real-secret"
            [gse]
            base_url = "http://gse.example/"
            [nodeman]
            base_url = "http://nodeman.example/"
            [http]
            request_timeout = "60s"
            [slot]
            enabled = true
            token = "{SLOT_TOKEN}"
            slot_id = 42
            dispatch_token = "gse-slot-token"
            ack_timeout = "{ack}"
            "#
        )
    };
    let load = |ack| agentwatch::config::load_str(&config(ack), "limits.toml", std::iter::empty());
    if let Err(e) = load("58999ms") {
        panic!("ack timeout + 1s below the request timeout rejected:\n{e}");
    }
    let e = load("59s").expect_err("ack timeout + 1s == request timeout");
    assert!(e.to_string().contains("http.request_timeout"), "{e}");
    assert!(e.to_string().contains("slot.ack_timeout"), "{e}");
}

/// The events written to `topic` since `before` are exactly one per agent of `changed`.
fn assert_each_delivered_once(
    brokers: &str,
    topic: &str,
    before: &std::collections::HashSet<String>,
    changed: &[String],
) {
    let mut got: Vec<String> = events_since(brokers, topic, before)
        .iter()
        .filter_map(|e| Some(e.after.as_ref()?.agent_id.clone()))
        .collect();
    got.sort();
    let mut want = changed.to_vec();
    want.sort();
    assert_eq!(
        got, want,
        "every change delivered exactly once after the pause"
    );
}
