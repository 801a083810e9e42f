//! `agentwatch tail`: follow the events topic and print one readable line per event —
//! the first tool to reach for when asking "what happened to this host?".

use std::{process::ExitCode, time::Duration};

use clap::Args;
use rdkafka::{
    consumer::{Consumer, StreamConsumer},
    message::{Headers, Message},
    ClientConfig, Offset, TopicPartitionList,
};

use crate::{
    proto::v1::{AgentEvent, AgentState},
    sinks::kafka::{encode, Format},
};

#[derive(Args, Debug)]
pub struct TailArgs {
    /// Kafka bootstrap servers.
    #[arg(long, env = "AGENTWATCH__KAFKA__BROKERS")]
    pub brokers: String,
    #[arg(long, default_value = "agentwatch.events")]
    pub topic: String,
    /// Only this agent id.
    #[arg(long)]
    pub agent: Option<String>,
    /// Only these ops (create, update, delete, snapshot); repeatable.
    #[arg(long)]
    pub op: Vec<String>,
    /// Only events whose new (or, for deletes, last) status is this name.
    #[arg(long)]
    pub status: Option<String>,
    /// Read the topic from its start (default: only new events).
    #[arg(long)]
    pub from_beginning: bool,
    /// Print each event as one JSON object instead of a readable line.
    #[arg(long)]
    pub json: bool,
    /// Stop after this many printed events.
    #[arg(long)]
    pub limit: Option<u64>,
    /// Stop when no event arrived for this long (default: follow forever).
    #[arg(long, value_parser = humantime::parse_duration)]
    pub idle_timeout: Option<Duration>,
}

/// Follows the topic until Ctrl-C, `--limit` or `--idle-timeout`.
pub async fn run(args: TailArgs) -> ExitCode {
    let consumer: StreamConsumer = match ClientConfig::new()
        .set("bootstrap.servers", &args.brokers)
        .set(
            "group.id",
            format!("agentwatch-tail-{}", uuid::Uuid::new_v4()),
        )
        .set("enable.auto.commit", "false")
        .set(
            "auto.offset.reset",
            if args.from_beginning {
                "earliest"
            } else {
                "latest"
            },
        )
        .create()
    {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: cannot create a Kafka consumer: {e}");
            return ExitCode::from(1);
        }
    };
    // Assign every partition directly rather than joining a group: no rebalance wait,
    // and a reader never moves anyone's committed offsets.
    let partitions = match consumer.fetch_metadata(Some(&args.topic), Duration::from_secs(10)) {
        Ok(meta) => meta
            .topics()
            .iter()
            .filter(|t| t.name() == args.topic && t.error().is_none())
            .flat_map(|t| t.partitions().iter().map(|p| p.id()))
            .collect::<Vec<i32>>(),
        Err(e) => {
            eprintln!("error: cannot read metadata of {}: {e}", args.topic);
            return ExitCode::from(1);
        }
    };
    if partitions.is_empty() {
        eprintln!("error: topic {} does not exist", args.topic);
        return ExitCode::from(1);
    }
    let start = if args.from_beginning {
        Offset::Beginning
    } else {
        Offset::End
    };
    let mut tpl = TopicPartitionList::new();
    for p in partitions {
        if let Err(e) = tpl.add_partition_offset(&args.topic, p, start) {
            eprintln!("error: {e}");
            return ExitCode::from(1);
        }
    }
    if let Err(e) = consumer.assign(&tpl) {
        eprintln!("error: cannot read {}: {e}", args.topic);
        return ExitCode::from(1);
    }
    let mut printed = 0u64;
    loop {
        let next = consumer.recv();
        let msg = match args.idle_timeout {
            Some(t) => match tokio::time::timeout(t, next).await {
                Ok(m) => m,
                Err(_) => return ExitCode::SUCCESS,
            },
            None => tokio::select! {
                m = next => m,
                _ = tokio::signal::ctrl_c() => return ExitCode::SUCCESS,
            },
        };
        let msg = match msg {
            Ok(m) => m,
            Err(e) => {
                eprintln!("warning: {e}");
                continue;
            }
        };
        let Some(payload) = msg.payload() else {
            continue;
        };
        let ct = msg.headers().and_then(|h| {
            h.iter()
                .find(|h| h.key == "content-type")
                .and_then(|h| h.value)
        });
        let format = Format::Protobuf.from_content_type(ct);
        let ev = match encode::decode_event(payload, format) {
            Ok(ev) => ev,
            Err(e) => {
                // Not lost silently: say where the bad record is.
                eprintln!(
                    "warning: partition {} offset {}: undecodable event: {e}",
                    msg.partition(),
                    msg.offset()
                );
                continue;
            }
        };
        if !matches(&args, &ev) {
            continue;
        }
        if args.json {
            match serde_json::to_string(&ev) {
                Ok(line) => println!("{line}"),
                Err(e) => eprintln!("warning: cannot render event as JSON: {e}"),
            }
        } else {
            println!("{}", line(&ev));
        }
        printed += 1;
        if args.limit.is_some_and(|l| printed >= l) {
            return ExitCode::SUCCESS;
        }
    }
}

fn subject(ev: &AgentEvent) -> Option<&AgentState> {
    ev.after.as_ref().or(ev.before.as_ref())
}

fn matches(args: &TailArgs, ev: &AgentEvent) -> bool {
    let state = subject(ev);
    if let Some(a) = &args.agent {
        if state.map(|s| s.agent_id.as_str()) != Some(a.as_str()) {
            return false;
        }
    }
    if !args.op.is_empty() && !args.op.iter().any(|o| o == encode::op_name(ev.op)) {
        return false;
    }
    if let Some(st) = &args.status {
        if state.map(|s| s.status.as_str()) != Some(st.as_str()) {
            return false;
        }
    }
    true
}

/// `2026-11-25T10:00:00.123Z  update    0:10.0.0.1  seq 4  status running → lossy, ...`
pub fn line(ev: &AgentEvent) -> String {
    let time = std::time::UNIX_EPOCH + Duration::from_millis(ev.ts_ms.max(0) as u64);
    let when = humantime::format_rfc3339_millis(time);
    let agent = subject(ev).map_or("?", |s| s.agent_id.as_str());
    let detail = match (&ev.before, &ev.after) {
        (Some(b), Some(a)) => ev
            .changed_fields
            .iter()
            .map(|f| format!("{f} {} → {}", field(b, f), field(a, f)))
            .collect::<Vec<_>>()
            .join(", "),
        (None, Some(a)) => format!(
            "{} (code {}) v{} biz {} ip {}",
            a.status, a.status_code, a.version, a.biz_id, a.ip
        ),
        (Some(b), None) => format!("last status {}", b.status),
        (None, None) => String::new(),
    };
    format!(
        "{when}  {:<8}  {agent}  seq {}  {detail}",
        encode::op_name(ev.op),
        ev.seq
    )
}

/// The printable value of a (possibly dotted) changed field.
fn field(s: &AgentState, name: &str) -> String {
    let info = s.info.clone().unwrap_or_default();
    match name {
        "agent_id" => s.agent_id.clone(),
        "host_id" => s.host_id.to_string(),
        "cloud_id" => s.cloud_id.to_string(),
        "biz_id" => s.biz_id.to_string(),
        "ip" => s.ip.clone(),
        "status_code" => s.status_code.to_string(),
        "status" => s.status.clone(),
        "alive" => s.alive.to_string(),
        "version" => s.version.clone(),
        "run_mode" => s.run_mode.to_string(),
        "nodeman_status" => s.nodeman_status.clone(),
        "os_type" => s.os_type.clone(),
        "status_api" => s.status_api.clone(),
        "v1_agent_alive" => s.v1_agent_alive.map_or("-".into(), |v| v.to_string()),
        "info.parent_ip" => info.parent_ip,
        "info.parent_port" => info.parent_port.to_string(),
        "info.report_time" => info.report_time_ms.to_string(),
        "info.start_time" => info.start_time_ms.to_string(),
        "info.cpu_rate" => info.cpu_rate.to_string(),
        "info.mem_rate" => info.mem_rate.to_string(),
        other => match other
            .strip_prefix("plugins.")
            .and_then(|r| r.rsplit_once('.'))
        {
            Some((plugin, what)) => match (s.plugins.get(plugin), what) {
                (Some(p), "status") => p.status.clone(),
                (Some(p), "version") => p.version.clone(),
                (Some(p), _) => format!("{}/{}", p.status, p.version),
                (None, _) => "-".into(),
            },
            None => "?".into(),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::v1::{Op, PluginState};

    fn st(status: &str, code: i32) -> AgentState {
        AgentState {
            agent_id: "0:10.0.0.1".into(),
            status: status.into(),
            status_code: code,
            ..AgentState::default()
        }
    }

    #[test]
    fn an_update_line_shows_before_and_after_of_each_changed_field() {
        let mut a = st("lossy", 3);
        a.plugins.insert(
            "bkmonitorbeat".into(),
            PluginState {
                status: "TERMINATED".into(),
                version: "3.1".into(),
            },
        );
        let mut b = st("running", 2);
        b.plugins.insert(
            "bkmonitorbeat".into(),
            PluginState {
                status: "RUNNING".into(),
                version: "3.1".into(),
            },
        );
        let ev = AgentEvent {
            op: Op::Update as i32,
            before: Some(b),
            after: Some(a),
            ts_ms: 0,
            seq: 4,
            changed_fields: vec![
                "status_code".into(),
                "status".into(),
                "plugins.bkmonitorbeat.status".into(),
            ],
            ..AgentEvent::default()
        };
        let l = line(&ev);
        assert!(l.starts_with("1970-01-01T00:00:00.000Z  update"), "{l}");
        assert!(l.contains("0:10.0.0.1  seq 4"), "{l}");
        assert!(l.contains("status_code 2 → 3"), "{l}");
        assert!(l.contains("status running → lossy"), "{l}");
        assert!(
            l.contains("plugins.bkmonitorbeat.status RUNNING → TERMINATED"),
            "{l}"
        );
    }

    #[test]
    fn filters_select_by_agent_op_and_status() {
        let ev = AgentEvent {
            op: Op::Update as i32,
            before: Some(st("running", 2)),
            after: Some(st("lossy", 3)),
            ..AgentEvent::default()
        };
        let args = |agent: Option<&str>, op: &[&str], status: Option<&str>| TailArgs {
            brokers: String::new(),
            topic: String::new(),
            agent: agent.map(str::to_owned),
            op: op.iter().map(|s| s.to_string()).collect(),
            status: status.map(str::to_owned),
            from_beginning: false,
            json: false,
            limit: None,
            idle_timeout: None,
        };
        assert!(matches(
            &args(Some("0:10.0.0.1"), &["update"], Some("lossy")),
            &ev
        ));
        assert!(!matches(&args(Some("other"), &[], None), &ev));
        assert!(!matches(&args(None, &["delete"], None), &ev));
        assert!(!matches(&args(None, &[], Some("running")), &ev));
    }
}
