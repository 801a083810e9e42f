//! The `agentwatch` command line. The only place that uses `anyhow`, installs signal
//! handlers and chooses exit codes: 0 ok, 1 runtime failure, 2 bad usage or config.

use std::{path::PathBuf, process::ExitCode, time::Duration};

/// mimalloc rather than glibc malloc: glibc keeps one arena per thread and hands little
/// back after a change storm (1M agents: RSS ~1 GiB for ~600 MB live), and its
/// malloc/free were ~15% of a 1M sweep's profile. The `override` feature (Cargo.toml)
/// routes the C code's malloc/free (librdkafka: several blocks per record) to mimalloc
/// too.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use anyhow::Context;
use clap::{Parser, Subcommand};
use tokio_util::sync::CancellationToken;

use agentwatch::{
    app,
    config::{self, Config, ConfigError, LogFormat},
    demo,
    sim::{SimConfig, Simulator},
    sources::gse::GseApi,
};

#[derive(Parser)]
#[command(
    name = "agentwatch",
    version,
    about = "Streams BlueKing GSE agent status changes to Kafka"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the service.
    Run {
        /// TOML config file; every key can be overridden as AGENTWATCH__SECTION__KEY.
        #[arg(long, short, env = "AGENTWATCH_CONFIG")]
        config: Option<PathBuf>,
    },
    /// Validate a config file, report every bad field, print the effective config
    /// (secrets masked).
    CheckConfig {
        #[arg(long, short, env = "AGENTWATCH_CONFIG")]
        config: Option<PathBuf>,
    },
    /// Serve a simulated BlueKing (NodeMan + GSE) for trying agentwatch out and tests.
    Simulate {
        #[arg(long, default_value = "127.0.0.1:8900")]
        listen: String,
        #[arg(long, default_value_t = 1000)]
        agents: usize,
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// Fraction of agents that change status every --flap-interval.
        #[arg(long, default_value_t = 0.0)]
        flap_rate: f64,
        #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
        flap_interval: Duration,
        /// Fraction of polling requests answered with a fault (5xx, 429, slow,
        /// malformed, truncated, business error).
        #[arg(long, default_value_t = 0.0)]
        fault_rate: f64,
        /// Extra delay added to every polling response, in milliseconds.
        #[arg(long, default_value_t = 0)]
        latency: u64,
        /// bk_app_code the simulator accepts.
        #[arg(long, default_value = "agentwatch")]
        app_code: String,
        /// bk_app_secret the simulator accepts.
        #[arg(long, default_value = "sim-secret", env = "AGENTWATCH_SIM_SECRET")]
        app_secret: String,
    },
    /// End-to-end benchmark: simulator process + broker + the service; prints a table
    /// (initial snapshot, sweep p50/p95, CPU per sweep, RSS, bytes per agent, restore).
    Bench {
        /// Agent counts to run, comma-separated.
        #[arg(long, value_delimiter = ',', default_value = "10000,100000,1000000")]
        agents: Vec<usize>,
        #[arg(long, default_value_t = 10)]
        sweeps: usize,
        /// Fraction of agents changed before each sweep.
        #[arg(long, default_value_t = 0.01)]
        change_rate: f64,
        /// Use these Kafka brokers (default: tansu from TANSU_BIN or .tools/, else the
        /// in-process mock cluster).
        #[arg(long)]
        brokers: Option<String>,
        #[arg(long, default_value_t = 1000)]
        batch_size: usize,
        #[arg(long, default_value_t = 8)]
        concurrency: usize,
        /// Also produce this many records straight through librdkafka (agentwatch's
        /// producer settings, nothing else) to show the machine's ceiling; 0 = skip.
        #[arg(long, default_value_t = 0)]
        producer_baseline: usize,
        /// Payload bytes of each baseline record (agentwatch's records: a snapshot
        /// event ~200 B, an update event ~300 B with before and after, a state record
        /// ~130 B; each also has a key and headers).
        #[arg(long, default_value_t = 250, value_parser = clap::value_parser!(u32).range(1..=1_048_576))]
        baseline_payload_bytes: u32,
        /// Codec of produced batches (`kafka.compression`) for the service and the
        /// baseline: lz4 (the service's default), zstd, snappy, gzip or none.
        #[arg(long, default_value = "lz4", value_parser = parse_compression)]
        compression: agentwatch::sinks::kafka::Compression,
        /// Extra librdkafka property for the service's producer and the baseline's, as
        /// `kafka.options` in the config (e.g. `linger.ms=20`); repeatable.
        #[arg(long = "kafka-option", value_name = "KEY=VALUE", value_parser = parse_kafka_option)]
        kafka_options: Vec<(String, String)>,
    },
    /// Long-run test (opt-in, ~30 min by default): simulator with faults and churn, a
    /// tansu broker restarted periodically, the service as a child process and an
    /// independent consumer; checks no change was lost, no task died and RSS stayed flat.
    /// Prints a table; exit 1 on any failure.
    Soak(agentwatch::soak::SoakArgs),
    /// Kafka administration with the service's config.
    Kafka {
        #[command(subcommand)]
        command: KafkaCommand,
    },
    /// GSE data links (stream_to / route), dispatch_message and realtime agent status,
    /// straight from GSE with the service's config. Exit 1 when GSE answers an error.
    Gse(agentwatch::cli::gse::GseArgs),
    /// Check config, upstream reachability, API credentials and permissions, Kafka and
    /// the slot token, one line per check with a fix. Exit 1 when any check fails.
    Doctor(agentwatch::cli::doctor::DoctorArgs),
    /// Follow the events topic: one readable line per event (`before → after` of what
    /// changed), filtered by agent, op or status.
    Tail(agentwatch::cli::tail::TailArgs),
    /// Zero-setup demo: simulator + in-process Kafka mock cluster + the service.
    Demo {
        #[arg(long, default_value_t = 10_000)]
        agents: usize,
        /// Fraction of agents that flap every few seconds.
        #[arg(long, default_value_t = 0.002)]
        flap_rate: f64,
        /// Seconds between sweeps.
        #[arg(long, default_value = "2s", value_parser = humantime::parse_duration)]
        interval: Duration,
        /// Address of the metrics endpoint.
        #[arg(long, default_value = "127.0.0.1:9108")]
        listen: String,
        /// Stop after this long (default: until Ctrl-C).
        #[arg(long, value_parser = humantime::parse_duration)]
        duration: Option<Duration>,
        /// GSE API to poll: v2 (GSE 2.0), v1 (GSE 1.x ESB, keyed by cloud:ip) or auto.
        #[arg(long, default_value = "v2", value_parser = parse_gse_api)]
        gse: GseApi,
    },
}

#[derive(Subcommand)]
enum KafkaCommand {
    /// Create the events and state topics when missing (partitions, replication and
    /// cleanup.policy from config) and check the state topic is compacted. For a
    /// pre-install job; `run` does the same at start unless kafka.create_topics=false.
    CreateTopics {
        #[arg(long, short, env = "AGENTWATCH_CONFIG")]
        config: Option<PathBuf>,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return ExitCode::from(1);
        }
    };
    rt.block_on(async move {
        match cli.command {
            Command::Run { config } => {
                let cfg = match load_config(config.as_deref()) {
                    Ok(c) => c,
                    Err(code) => return code,
                };
                init_logging(cfg.log.format, &cfg.log.level);
                report(run(cfg).await)
            }
            Command::CheckConfig { config } => match load_config(config.as_deref()) {
                Ok(cfg) => {
                    print!("{}", cfg.to_masked_toml());
                    eprintln!("config OK");
                    ExitCode::SUCCESS
                }
                Err(code) => code,
            },
            Command::Bench {
                agents,
                sweeps,
                change_rate,
                brokers,
                batch_size,
                concurrency,
                producer_baseline,
                baseline_payload_bytes,
                compression,
                kafka_options,
            } => {
                init_logging(LogFormat::Text, "warn");
                let opts = agentwatch::benchmark::BenchOptions {
                    sizes: agents,
                    sweeps,
                    change_rate,
                    brokers,
                    batch_size,
                    concurrency,
                    producer_baseline,
                    baseline_payload_bytes: baseline_payload_bytes as usize,
                    compression,
                    kafka_options: kafka_options.into_iter().collect(),
                };
                report(
                    agentwatch::benchmark::run(opts)
                        .await
                        .map(|_| ())
                        .map_err(anyhow::Error::from),
                )
            }
            Command::Kafka {
                command: KafkaCommand::CreateTopics { config },
            } => {
                let cfg = match load_config(config.as_deref()) {
                    Ok(c) => c,
                    Err(code) => return code,
                };
                init_logging(cfg.log.format, &cfg.log.level);
                report(
                    agentwatch::sinks::kafka::topics::ensure_topics(&cfg.kafka)
                        .await
                        .map(|()| {
                            println!(
                                "topics {}, {} and {} are present and configured",
                                cfg.kafka.events_topic, cfg.kafka.state_topic, cfg.kafka.slot_topic
                            )
                        })
                        .map_err(anyhow::Error::from),
                )
            }
            Command::Simulate {
                listen,
                agents,
                seed,
                flap_rate,
                flap_interval,
                fault_rate,
                latency,
                app_code,
                app_secret,
            } => {
                init_logging(LogFormat::Text, "info");
                let cfg = SimConfig {
                    agents,
                    seed,
                    flap_rate,
                    flap_interval,
                    fault_rate,
                    latency: Duration::from_millis(latency),
                    app_code,
                    app_secret,
                    ..SimConfig::default()
                };
                report(simulate(&listen, cfg).await)
            }
            Command::Soak(args) => {
                // The consumers' broker-down errors during outages are expected noise.
                init_logging(LogFormat::Text, "warn,librdkafka=off,rdkafka=off");
                report(
                    agentwatch::soak::run(args, shutdown_on_signal())
                        .await
                        .map_err(anyhow::Error::from),
                )
            }
            Command::Gse(args) => agentwatch::cli::gse::run(args).await,
            Command::Tail(args) => agentwatch::cli::tail::run(args).await,
            Command::Doctor(args) => agentwatch::cli::doctor::run(args).await,
            Command::Demo {
                agents,
                flap_rate,
                interval,
                listen,
                duration,
                gse,
            } => {
                init_logging(LogFormat::Text, "warn,agentwatch::demo=info");
                let opts = demo::DemoOptions {
                    agents,
                    flap_rate,
                    interval,
                    listen,
                    duration,
                    gse,
                };
                let shutdown = shutdown_on_signal();
                report(demo::run(opts, shutdown).await.map_err(anyhow::Error::from))
            }
        }
    })
}

fn parse_gse_api(s: &str) -> Result<GseApi, String> {
    match s {
        "v2" => Ok(GseApi::V2),
        "v1" => Ok(GseApi::V1),
        "auto" => Ok(GseApi::Auto),
        other => Err(format!("\"{other}\" is not one of v2, v1, auto")),
    }
}

/// Loads and validates; on failure prints every problem and returns exit code 2.
/// `bench --compression`, spelled as `kafka.compression` in the config.
fn parse_compression(s: &str) -> Result<agentwatch::sinks::kafka::Compression, String> {
    use agentwatch::sinks::kafka::Compression;
    [
        Compression::Lz4,
        Compression::Zstd,
        Compression::Snappy,
        Compression::Gzip,
        Compression::None,
    ]
    .into_iter()
    .find(|c| c.as_str() == s)
    .ok_or_else(|| format!("\"{s}\" is not one of lz4, zstd, snappy, gzip, none"))
}

/// `KEY=VALUE` of `bench --kafka-option`.
fn parse_kafka_option(s: &str) -> Result<(String, String), String> {
    use agentwatch::sinks::kafka::{OWN_FIELD_OPTIONS, RESERVED_OPTIONS};
    let (k, v) = match s.split_once('=') {
        Some((k, v)) if !k.trim().is_empty() => (k.trim(), v),
        _ => {
            return Err(format!(
                "expected KEY=VALUE (a librdkafka property), got {s:?}"
            ))
        }
    };
    // As `kafka.options` in a config: the baseline's producer is not validated
    // as the service's config is.
    if RESERVED_OPTIONS.contains(&k) {
        return Err(format!("{k} is set by agentwatch itself"));
    }
    if OWN_FIELD_OPTIONS.iter().any(|(own, _)| *own == k) {
        return Err(format!("{k} has an option of its own: --compression"));
    }
    Ok((k.to_owned(), v.to_owned()))
}

fn load_config(path: Option<&std::path::Path>) -> Result<Config, ExitCode> {
    // Unreadable, unparsable and invalid configs are all usage errors (exit 2).
    config::load(path, std::env::vars()).map_err(|e: ConfigError| {
        eprintln!("error: {e}");
        ExitCode::from(2)
    })
}

fn report(r: anyhow::Result<()>) -> ExitCode {
    match r {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(1)
        }
    }
}

async fn run(cfg: Config) -> anyhow::Result<()> {
    let shutdown = shutdown_on_signal();
    let running = app::start(cfg, shutdown).await?;
    let exit = running.wait().await?;
    tracing::info!(unflushed = exit.unflushed, "stopped");
    Ok(())
}

async fn simulate(listen: &str, cfg: SimConfig) -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("cannot listen on {listen}"))?;
    let addr = listener.local_addr()?;
    let agents = cfg.agents;
    let sim = Simulator::new(cfg);
    println!("simulating {agents} agents on http://{addr}");
    println!("  NodeMan base URL: http://{addr}/api/bk-nodeman/prod/");
    println!("  GSE v2 base URL:  http://{addr}/api/bk-gse/prod/api/v2/");
    println!("  control API:      http://{addr}/_sim/agents");
    let shutdown = shutdown_on_signal();
    sim.serve(listener, shutdown).await?;
    Ok(())
}

/// A token cancelled on SIGINT or SIGTERM.
fn shutdown_on_signal() -> CancellationToken {
    let token = CancellationToken::new();
    let t = token.clone();
    tokio::spawn(async move {
        wait_for_signal().await;
        tracing::info!("signal received, shutting down");
        t.cancel();
    });
    token
}

#[cfg(unix)]
async fn wait_for_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    match signal(SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
        }
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

#[cfg(not(unix))]
async fn wait_for_signal() {
    let _ = tokio::signal::ctrl_c().await;
}

fn init_logging(format: LogFormat, level: &str) {
    use tracing_subscriber::{fmt, EnvFilter};
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(level))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    // Colour only on a terminal: escape codes in files and log collectors are noise.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let builder = fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(ansi);
    let _ = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().try_init(),
    };
}
