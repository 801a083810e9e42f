//! `agentwatch demo`: the whole pipeline on one machine with nothing installed — the
//! simulator, librdkafka's in-process mock cluster as the broker, and the service —
//! printing one line per sweep and a few decoded events.

use std::time::Duration;

use rdkafka::{
    consumer::{Consumer, StreamConsumer},
    message::Message,
    mocking::MockCluster,
    producer::DefaultProducerContext,
};
use secrecy::SecretString;
use tokio_util::sync::CancellationToken;

use crate::{
    app,
    config::Config,
    proto::v1::{AgentEvent, Op},
    sim::{SimConfig, Simulator},
    sinks::kafka::{client_config, encode, Format},
    sources::gse::GseApi,
};

pub struct DemoOptions {
    pub agents: usize,
    pub flap_rate: f64,
    pub interval: Duration,
    pub listen: String,
    pub duration: Option<Duration>,
    /// GSE API generation to poll: v2, v1 (GSE 1.x ESB) or auto.
    pub gse: GseApi,
}

#[derive(Debug, thiserror::Error)]
pub enum DemoError {
    #[error("cannot start the simulator: {0}")]
    Simulator(#[source] std::io::Error),
    #[error("cannot start the mock Kafka cluster: {0}")]
    Kafka(#[source] rdkafka::error::KafkaError),
    #[error(transparent)]
    App(#[from] app::AppError),
    #[error("invalid demo configuration: {0}")]
    Config(String),
}

const SIM_SECRET: &str = "demo-secret";

pub async fn run(opts: DemoOptions, shutdown: CancellationToken) -> Result<(), DemoError> {
    // 1. Simulated BlueKing.
    let sim_listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .map_err(DemoError::Simulator)?;
    let sim_addr = sim_listener.local_addr().map_err(DemoError::Simulator)?;
    let sim = Simulator::new(SimConfig {
        agents: opts.agents,
        flap_rate: opts.flap_rate,
        flap_interval: Duration::from_secs(3),
        app_secret: SIM_SECRET.to_owned(),
        gse_unknown_ratio: 0.01,
        ..SimConfig::default()
    });
    let sim_stop = CancellationToken::new();
    let sim_task = tokio::spawn(sim.clone().serve(sim_listener, sim_stop.clone()));

    // 2. Broker: librdkafka's mock cluster, in this process. Its admin API does not
    //    answer, so topics are created through the handle and the service is told not
    //    to create them.
    let mock: MockCluster<'static, DefaultProducerContext> =
        MockCluster::new(1).map_err(DemoError::Kafka)?;
    let brokers = mock.bootstrap_servers();
    let mut cfg = Config::default();
    cfg.bk.app_code = "agentwatch".to_owned();
    cfg.bk.app_secret = Some(SecretString::from(SIM_SECRET.to_owned()));
    cfg.gse.api = opts.gse;
    cfg.gse.base_url = format!("http://{sim_addr}/api/bk-gse/prod/api/v2/");
    cfg.gse.esb_base_url = format!("http://{sim_addr}/api/c/compapi/v2/gse/");
    cfg.nodeman.base_url = format!("http://{sim_addr}/api/bk-nodeman/prod/");
    cfg.poll.interval = opts.interval;
    cfg.poll.inventory_interval = Duration::from_secs(60);
    cfg.kafka.brokers = brokers.clone();
    cfg.kafka.create_topics = false;
    cfg.kafka.partitions = 3;
    cfg.http.listen = opts.listen.clone();
    cfg.shutdown.grace = Duration::from_secs(5);
    for topic in [&cfg.kafka.events_topic, &cfg.kafka.state_topic] {
        mock.create_topic(topic, cfg.kafka.partitions, 1)
            .map_err(DemoError::Kafka)?;
    }
    cfg.validate()
        .map_err(|e| DemoError::Config(e.to_string()))?;

    // 3. The service, exactly as `agentwatch run` starts it.
    let service_stop = CancellationToken::new();
    let running = match app::start(cfg.clone(), service_stop.clone()).await {
        Ok(r) => r,
        Err(app::AppError::Bind { .. }) => {
            // The default metrics port is taken (another agentwatch?): use any port.
            cfg.http.listen = "127.0.0.1:0".to_owned();
            app::start(cfg.clone(), service_stop.clone()).await?
        }
        Err(e) => return Err(e.into()),
    };
    println!("agentwatch demo");
    println!(
        "  simulator:  {} agents at http://{sim_addr}/ (flap rate {})",
        opts.agents, opts.flap_rate
    );
    println!(
        "  kafka:      in-process mock cluster at {brokers}, topic {}",
        cfg.kafka.events_topic
    );
    println!(
        "  metrics:    http://{}/metrics   (also /healthz, /readyz)",
        running.http_addr
    );
    println!("  Ctrl-C stops it.\n");

    let tail = tokio::spawn(tail_events(cfg.clone(), service_stop.clone()));
    let mut sweeps = running.sweeps();
    let metrics = running.metrics.clone();
    let deadline = opts.duration.map(|d| tokio::time::Instant::now() + d);
    let mut delivered_before = 0u64;
    loop {
        let sleep = async {
            match deadline {
                Some(d) => tokio::time::sleep_until(d).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = sleep => break,
            r = sweeps.recv() => {
                let Ok(r) = r else { break };
                let delivered: u64 = ["create", "update", "delete", "snapshot"]
                    .iter()
                    .map(|op| metrics.events_total.with_label_values(&[op]).get())
                    .sum();
                println!(
                    "sweep {:>4} │ {:>7} agents │ {:>6} events delivered │ {:>6} pending │ {:>4} stale │ {:>4} batches ({} failed) │ {:>6.1} ms",
                    r.sweep, r.agents, delivered - delivered_before, r.pending, r.stale,
                    r.batches, r.failed_batches, r.duration.as_secs_f64() * 1000.0
                );
                delivered_before = delivered;
            }
        }
    }
    println!("\nstopping: flushing pending events …");
    service_stop.cancel();
    let exit = running.wait().await?;
    let _ = tail.await;
    sim_stop.cancel();
    let _ = sim_task.await;
    println!("stopped cleanly ({} agents unflushed)", exit.unflushed);
    Ok(())
}

/// Prints the first few events of each kind, decoded, as a consumer would see them.
async fn tail_events(cfg: Config, stop: CancellationToken) {
    let consumer: StreamConsumer = match client_config(&cfg.kafka)
        .set(
            "group.id",
            format!("agentwatch-demo-{}", uuid::Uuid::new_v4()),
        )
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.commit", "false")
        .create()
    {
        Ok(c) => c,
        Err(e) => {
            tracing::warn!(error = %e, "demo tail consumer not started");
            return;
        }
    };
    if let Err(e) = consumer.subscribe(&[&cfg.kafka.events_topic]) {
        tracing::warn!(error = %e, "demo tail consumer cannot subscribe");
        return;
    }
    let mut shown_snapshot = 0;
    let mut shown_other = 0;
    loop {
        let msg = tokio::select! {
            _ = stop.cancelled() => return,
            m = consumer.recv() => m,
        };
        let Ok(msg) = msg else { continue };
        let Some(payload) = msg.payload() else {
            continue;
        };
        let Ok(ev) = encode::decode_event(payload, Format::Protobuf) else {
            continue;
        };
        let is_snapshot = ev.op == Op::Snapshot as i32;
        let show = if is_snapshot {
            shown_snapshot += 1;
            shown_snapshot <= 3
        } else {
            shown_other += 1;
            shown_other <= 3 || shown_other % 25 == 0
        };
        if show {
            println!("    event  {}", describe(&ev));
        }
    }
}

/// One readable line: op, agent, and `before → after` of what changed.
pub fn describe(ev: &AgentEvent) -> String {
    let op = encode::op_name(ev.op);
    let agent = ev
        .after
        .as_ref()
        .or(ev.before.as_ref())
        .map_or("?", |s| s.agent_id.as_str());
    let detail = match (&ev.before, &ev.after) {
        (Some(b), Some(a)) => ev
            .changed_fields
            .iter()
            .filter(|f| f.as_str() != "alive" && f.as_str() != "status_code")
            .map(|f| match f.as_str() {
                "status" => format!(
                    "status {} → {} (code {} → {})",
                    b.status, a.status, b.status_code, a.status_code
                ),
                "version" => format!("version {} → {}", b.version, a.version),
                other => other.to_owned(),
            })
            .collect::<Vec<_>>()
            .join(", "),
        (None, Some(a)) => format!("{} v{} biz {} ip {}", a.status, a.version, a.biz_id, a.ip),
        (Some(b), None) => format!("was {}", b.status),
        (None, None) => String::new(),
    };
    format!("{op:<8} {agent:<40} seq {:<3} {detail}", ev.seq)
}
