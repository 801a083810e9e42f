//! `agentwatch gse ...`: GSE data-link administration (stream_to / route CRUD),
//! `dispatch_message`, and realtime status straight from GSE, with the service's config
//! and its one BlueKing client layer.
//!
//! Output is text for people by default and JSON on stdout with `--json`. Exit codes:
//! 0 success, 1 the upstream failed (its code and message are printed), 2 bad usage or
//! config.

use std::{
    collections::HashMap,
    io::Read,
    net::Ipv4Addr,
    path::{Path, PathBuf},
    process::ExitCode,
    sync::Arc,
};

use clap::{Args, Subcommand};
use serde::Serialize;
use serde_json::{json, Value};

use crate::{
    config::{self, Config},
    metrics::Metrics,
    slot::MAX_MESSAGE_ID_LEN,
    snapshot::StatusNames,
    sources::{
        bk::ApiError,
        gse::{
            admin::{DataObject, DataOp, DispatchMessage, GseAdminClient},
            GseApi, GseClient, GseV1Client, STATUS_NOT_FOUND, STATUS_RUNNING, STATUS_V1_OFFLINE,
        },
    },
};

/// plat_name put into bodies built from flags (bk-monitor's default platform).
pub const DEFAULT_PLAT_NAME: &str = "bkmonitor";

#[derive(Args, Debug)]
pub struct GseArgs {
    /// TOML config file (the service's); every key can be overridden as
    /// AGENTWATCH__SECTION__KEY.
    #[arg(long, short, env = "AGENTWATCH_CONFIG", global = true)]
    pub config: Option<PathBuf>,
    /// Print JSON on stdout (for scripts) instead of text.
    #[arg(long, global = true)]
    pub json: bool,
    #[command(subcommand)]
    pub command: GseCommand,
}

#[derive(Subcommand, Debug)]
pub enum GseCommand {
    /// Data receivers (stream_to): v2 gateway `data/*_streamto`, v1 ESB
    /// `config_*_streamto/`.
    StreamTo {
        #[command(subcommand)]
        op: DataCommand,
    },
    /// Data routes (channels): v2 gateway `data/*_route`, v1 ESB `config_*_route/`.
    Route {
        #[command(subcommand)]
        op: DataCommand,
    },
    /// Send a message to agents through GSE 2.0 `cluster/dispatch_message`, with
    /// slot.slot_id and slot.dispatch_token from the config.
    Dispatch {
        /// Agent ids, comma-separated.
        #[arg(long, value_delimiter = ',', required = true)]
        agents: Vec<String>,
        /// The message (opaque to GSE; bk-monitor sends a JSON string).
        #[arg(long)]
        content: String,
        /// At most 64 characters; default `agentwatch-<random>`.
        #[arg(long)]
        message_id: Option<String>,
    },
    /// Realtime status straight from GSE: agent ids via v2 `list_agent_state`,
    /// `cloud:ip` via v1 `get_agent_status` (or v2, as a legacy agent id, when
    /// gse.esb_base_url is not set).
    Status {
        /// Agent ids and/or `bk_cloud_id:ipv4` addresses.
        #[arg(required = true)]
        agents: Vec<String>,
    },
}

#[derive(Subcommand, Debug)]
pub enum DataCommand {
    /// Create; needs --body.
    Add(DataArgs),
    /// Change; needs --body.
    Update(DataArgs),
    /// Remove: --body, or --id (stream_to_id / channel_id) with --plat-name.
    Delete(DataArgs),
    /// Look up: --body, or --plat-name and optional --id for stream-to, --id for route.
    Query(DataArgs),
}

#[derive(Args, Debug)]
pub struct DataArgs {
    /// JSON request body as GSE defines it: a file, or `-` for stdin.
    #[arg(long, conflicts_with_all = ["id", "plat_name", "operator"])]
    body: Option<PathBuf>,
    /// stream_to_id (stream-to) or channel_id (route), for a body built from flags.
    #[arg(long)]
    id: Option<i64>,
    /// plat_name for a body built from flags.
    #[arg(long)]
    plat_name: Option<String>,
    /// operation.operator_name for a body built from flags (default bk.username).
    #[arg(long)]
    operator: Option<String>,
    /// API generation: v2 (gateway `data/*`) or v1 (ESB `config_*`); default gse.api,
    /// with "auto" meaning v2.
    #[arg(long, value_parser = parse_api)]
    api: Option<GseApi>,
}

fn parse_api(s: &str) -> Result<GseApi, String> {
    match s {
        "v2" => Ok(GseApi::V2),
        "v1" => Ok(GseApi::V1),
        other => Err(format!("\"{other}\" is not one of v2, v1")),
    }
}

/// Why a command failed, and so its exit code.
#[derive(Debug, thiserror::Error)]
enum CliError {
    /// Bad arguments or config: exit 2.
    #[error("{0}")]
    Usage(String),
    #[error(transparent)]
    Config(#[from] config::ConfigError),
    /// The upstream answered with an error or could not be reached: exit 1.
    #[error(transparent)]
    Upstream(#[from] ApiError),
}

impl CliError {
    fn exit_code(&self) -> ExitCode {
        match self {
            CliError::Usage(_) | CliError::Config(_) => ExitCode::from(2),
            CliError::Upstream(_) => ExitCode::from(1),
        }
    }
}

/// Runs one `agentwatch gse` command and returns the process exit code.
pub async fn run(args: GseArgs) -> ExitCode {
    let json = args.json;
    match execute(args).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            if json {
                if let CliError::Upstream(api) = &e {
                    let out = json!({
                        "result": false,
                        "code": api.business_code(),
                        "message": upstream_message(api),
                        "error": api.to_string(),
                    });
                    println!("{out}");
                }
            }
            e.exit_code()
        }
    }
}

/// The upstream's own message, without the endpoint prefix.
fn upstream_message(e: &ApiError) -> String {
    match e {
        ApiError::Business { message, .. }
        | ApiError::Http { message, .. }
        | ApiError::RateLimited { message, .. } => message.clone(),
        other => other.to_string(),
    }
}

async fn execute(args: GseArgs) -> Result<(), CliError> {
    let cfg = config::load(args.config.as_deref(), std::env::vars())?;
    let metrics = Metrics::new();
    match args.command {
        GseCommand::StreamTo { op } => {
            data_command(&cfg, DataObject::StreamTo, op, args.json, metrics).await
        }
        GseCommand::Route { op } => {
            data_command(&cfg, DataObject::Route, op, args.json, metrics).await
        }
        GseCommand::Dispatch {
            agents,
            content,
            message_id,
        } => dispatch(&cfg, agents, content, message_id, args.json, metrics).await,
        GseCommand::Status { agents } => status(&cfg, &agents, args.json, metrics).await,
    }
}

async fn data_command(
    cfg: &Config,
    object: DataObject,
    cmd: DataCommand,
    json: bool,
    metrics: Arc<Metrics>,
) -> Result<(), CliError> {
    let (op, args) = match cmd {
        DataCommand::Add(a) => (DataOp::Add, a),
        DataCommand::Update(a) => (DataOp::Update, a),
        DataCommand::Delete(a) => (DataOp::Delete, a),
        DataCommand::Query(a) => (DataOp::Query, a),
    };
    let api = match args.api.unwrap_or(cfg.gse.api) {
        GseApi::V1 => GseApi::V1,
        GseApi::V2 | GseApi::Auto => GseApi::V2,
    };
    let base = match api {
        GseApi::V1 => (&cfg.gse.esb_base_url, "gse.esb_base_url"),
        _ => (&cfg.gse.base_url, "gse.base_url"),
    };
    if base.0.is_empty() {
        return Err(CliError::Usage(format!(
            "{} is not set in the config (needed for the {} API)",
            base.1,
            api.label()
        )));
    }
    let body = match &args.body {
        Some(path) => read_body(path)?,
        None => body_from_flags(object, op, &args, &cfg.bk.username)?,
    };
    let client = GseAdminClient::new(&cfg.gse, &cfg.bk, api, metrics)?;
    let data = client.data_call(op, object, body).await?;
    if json {
        println!("{data}");
    } else if data.is_null() {
        println!("ok");
    } else {
        println!(
            "{}",
            serde_json::to_string_pretty(&data).unwrap_or_else(|_| data.to_string())
        );
    }
    Ok(())
}

fn read_body(path: &Path) -> Result<Value, CliError> {
    let text = if path == Path::new("-") {
        let mut s = String::new();
        std::io::stdin()
            .read_to_string(&mut s)
            .map_err(|e| CliError::Usage(format!("cannot read the body from stdin: {e}")))?;
        s
    } else {
        std::fs::read_to_string(path).map_err(|e| {
            CliError::Usage(format!("cannot read body file {}: {e}", path.display()))
        })?
    };
    let value: Value = serde_json::from_str(&text)
        .map_err(|e| CliError::Usage(format!("--body is not valid JSON: {e}")))?;
    if !value.is_object() {
        return Err(CliError::Usage("--body must be a JSON object".to_owned()));
    }
    Ok(value)
}

/// The bodies simple enough to build from flags: delete and query (bk-api.md B §1.5,
/// shapes as bk-monitor sends them).
fn body_from_flags(
    object: DataObject,
    op: DataOp,
    args: &DataArgs,
    username: &str,
) -> Result<Value, CliError> {
    let operator = args.operator.as_deref().unwrap_or(username);
    let plat = args.plat_name.as_deref().unwrap_or(DEFAULT_PLAT_NAME);
    let need_id = |what: &str| {
        args.id.ok_or_else(|| {
            CliError::Usage(format!(
                "give --body FILE, or --id <{what}> to build the request from flags"
            ))
        })
    };
    let body = match (object, op) {
        (_, DataOp::Add | DataOp::Update) => {
            return Err(CliError::Usage(
                "add and update need --body FILE (or - for stdin) with the GSE request body"
                    .to_owned(),
            ))
        }
        (DataObject::StreamTo, DataOp::Delete) => json!({
            "condition": {"stream_to_id": need_id("stream_to_id")?, "plat_name": plat},
            "operation": {"operator_name": operator},
        }),
        (DataObject::StreamTo, DataOp::Query) => {
            let mut condition = json!({"plat_name": plat});
            if let Some(id) = args.id {
                condition["stream_to_id"] = json!(id);
            }
            json!({"condition": condition, "operation": {"operator_name": operator}})
        }
        (DataObject::Route, DataOp::Delete) => json!({
            "condition": {"channel_id": need_id("channel_id")?, "plat_name": plat},
            "operation": {"operator_name": operator, "method": "all"},
        }),
        (DataObject::Route, DataOp::Query) => json!({
            "condition": {"channel_id": need_id("channel_id")?, "plat_name": plat},
            "operation": {"operator_name": operator},
        }),
    };
    Ok(body)
}

async fn dispatch(
    cfg: &Config,
    agents: Vec<String>,
    content: String,
    message_id: Option<String>,
    json: bool,
    metrics: Arc<Metrics>,
) -> Result<(), CliError> {
    let slot_id = cfg
        .slot
        .slot_id
        .ok_or_else(|| CliError::Usage("slot.slot_id is not set in the config".to_owned()))?;
    let token = cfg.slot.dispatch_token.clone().ok_or_else(|| {
        CliError::Usage(
            "slot.dispatch_token is not set (config, slot.dispatch_token_file or \
             AGENTWATCH__SLOT__DISPATCH_TOKEN)"
                .to_owned(),
        )
    })?;
    if cfg.gse.base_url.is_empty() {
        return Err(CliError::Usage(
            "gse.base_url is not set: dispatch_message is a GSE 2.0 API".to_owned(),
        ));
    }
    let agents: Vec<String> = agents
        .into_iter()
        .map(|a| a.trim().to_owned())
        .filter(|a| !a.is_empty())
        .collect();
    if agents.is_empty() {
        return Err(CliError::Usage("--agents names no agent".to_owned()));
    }
    let message_id =
        message_id.unwrap_or_else(|| format!("agentwatch-{}", uuid::Uuid::new_v4().simple()));
    if message_id.is_empty() || message_id.len() > MAX_MESSAGE_ID_LEN {
        return Err(CliError::Usage(format!(
            "--message-id must be 1 to {MAX_MESSAGE_ID_LEN} characters"
        )));
    }
    let client = GseAdminClient::new(&cfg.gse, &cfg.bk, GseApi::V2, metrics)?;
    let msg = DispatchMessage {
        message_id,
        agent_id_list: agents,
        content,
        slot_id,
        token,
    };
    client.dispatch_message(&msg).await?;
    if json {
        let out = json!({"message_id": msg.message_id, "agents": msg.agent_id_list});
        println!("{out}");
    } else {
        println!(
            "dispatched message {} to {} agent(s)",
            msg.message_id,
            msg.agent_id_list.len()
        );
    }
    Ok(())
}

/// One line of `gse status`.
#[derive(Debug, Serialize)]
struct StatusRow {
    agent: String,
    status_code: i32,
    status: String,
    version: String,
    /// Which API answered: "v2" or "v1".
    api: &'static str,
    /// Whether GSE knows the agent (`status_code` is then not -2).
    found: bool,
}

/// `bk_cloud_id:ipv4`, the address form GSE 1.x is keyed by.
fn cloud_ip(arg: &str) -> Option<(i64, Ipv4Addr)> {
    let (cloud, ip) = arg.split_once(':')?;
    Some((cloud.parse().ok()?, ip.parse().ok()?))
}

async fn status(
    cfg: &Config,
    args: &[String],
    json: bool,
    metrics: Arc<Metrics>,
) -> Result<(), CliError> {
    let names = StatusNames::from_config(&cfg.gse.status_names);
    let mut gse = cfg.gse.clone();
    for base in [&mut gse.base_url, &mut gse.esb_base_url] {
        if !base.is_empty() && !base.ends_with('/') {
            base.push('/');
        }
    }
    let use_v1 = !gse.esb_base_url.is_empty();
    let (mut v2_ids, mut v1_hosts) = (Vec::new(), Vec::new());
    for a in args {
        match cloud_ip(a) {
            Some((cloud, ip)) if use_v1 => v1_hosts.push((cloud, ip.to_string())),
            _ => v2_ids.push(crate::sources::inventory::AgentId::from(a.as_str())),
        }
    }
    if !v2_ids.is_empty() && gse.base_url.is_empty() {
        return Err(CliError::Usage(format!(
            "gse.base_url is not set, so agent ids cannot be queried (GSE 1.x only knows \
             cloud:ip): {}",
            v2_ids.join(", ")
        )));
    }
    let mut found: HashMap<String, StatusRow> = HashMap::new();
    if !v2_ids.is_empty() {
        let client = GseClient::new(&gse, &cfg.bk, metrics.clone())?;
        for chunk in v2_ids.chunks(gse.batch_size.max(1)) {
            for s in client.list_agent_state(chunk).await? {
                found.insert(
                    s.agent_id.clone(),
                    StatusRow {
                        status: names.name(s.status_code).to_owned(),
                        agent: s.agent_id,
                        status_code: s.status_code,
                        version: s.version,
                        api: "v2",
                        found: true,
                    },
                );
            }
        }
    }
    if !v1_hosts.is_empty() {
        let client = GseV1Client::new(&gse, &cfg.bk, metrics)?;
        let mut versions = HashMap::new();
        for chunk in v1_hosts.chunks(gse.batch_size.max(1)) {
            // Version is only in get_agent_info (up to a minute behind); without it the
            // status is still worth printing.
            match client.get_agent_info(chunk).await {
                Ok(infos) => versions.extend(
                    infos
                        .into_iter()
                        .map(|i| (format!("{}:{}", i.cloud_id, i.ip), i.version)),
                ),
                Err(e) => eprintln!("warning: no versions: {e}"),
            }
            for s in client.get_agent_status(chunk).await? {
                let key = format!("{}:{}", s.cloud_id, s.ip);
                let code = if s.alive == 1 {
                    STATUS_RUNNING
                } else {
                    STATUS_V1_OFFLINE
                };
                found.insert(
                    key.clone(),
                    StatusRow {
                        version: versions.get(&key).cloned().unwrap_or_default(),
                        agent: key,
                        status_code: code,
                        status: names.name(code).to_owned(),
                        api: "v1",
                        found: true,
                    },
                );
            }
        }
    }
    let rows: Vec<StatusRow> = args
        .iter()
        .map(|a| {
            let key = match cloud_ip(a) {
                Some((cloud, ip)) if use_v1 => format!("{cloud}:{ip}"),
                _ => a.clone(),
            };
            found.remove(&key).unwrap_or_else(|| StatusRow {
                agent: a.clone(),
                status_code: STATUS_NOT_FOUND,
                status: names.name(STATUS_NOT_FOUND).to_owned(),
                version: String::new(),
                api: if use_v1 && cloud_ip(a).is_some() {
                    "v1"
                } else {
                    "v2"
                },
                found: false,
            })
        })
        .collect();
    if json {
        println!("{}", serde_json::to_string(&rows).unwrap_or_default());
    } else {
        print!("{}", status_table(&rows));
    }
    Ok(())
}

fn status_table(rows: &[StatusRow]) -> String {
    let header = ["AGENT", "STATUS_CODE", "STATUS", "VERSION", "API"];
    let cells: Vec<[String; 5]> = rows
        .iter()
        .map(|r| {
            [
                r.agent.clone(),
                r.status_code.to_string(),
                r.status.clone(),
                if r.version.is_empty() {
                    "-".to_owned()
                } else {
                    r.version.clone()
                },
                r.api.to_owned(),
            ]
        })
        .collect();
    let mut widths = header.map(str::len);
    for row in &cells {
        for (w, c) in widths.iter_mut().zip(row) {
            *w = (*w).max(c.chars().count());
        }
    }
    let line = |cols: [&str; 5]| {
        let mut s = String::new();
        for (i, (c, w)) in cols.iter().zip(widths).enumerate() {
            if i + 1 == cols.len() {
                s.push_str(c);
            } else {
                s.push_str(&format!("{c:<w$}  "));
            }
        }
        s.push('\n');
        s
    };
    let mut out = line(header);
    for row in &cells {
        out.push_str(&line([&row[0], &row[1], &row[2], &row[3], &row[4]]));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cloud_ip_needs_a_numeric_cloud_and_an_ipv4() {
        assert_eq!(
            cloud_ip("0:10.0.0.1"),
            Some((0, Ipv4Addr::new(10, 0, 0, 1)))
        );
        assert!(cloud_ip("02000000000000000000000000000001").is_none());
        assert!(cloud_ip("x:10.0.0.1").is_none());
        assert!(cloud_ip("0:fe80::1").is_none());
    }

    #[test]
    fn delete_and_query_bodies_are_built_from_flags() {
        let args = DataArgs {
            body: None,
            id: Some(7),
            plat_name: None,
            operator: None,
            api: None,
        };
        let b = body_from_flags(DataObject::Route, DataOp::Delete, &args, "admin").unwrap();
        assert_eq!(
            b,
            json!({"condition": {"channel_id": 7, "plat_name": "bkmonitor"},
                   "operation": {"operator_name": "admin", "method": "all"}})
        );
        let b = body_from_flags(DataObject::StreamTo, DataOp::Query, &args, "admin").unwrap();
        assert_eq!(b["condition"]["stream_to_id"], 7);
        assert!(matches!(
            body_from_flags(DataObject::StreamTo, DataOp::Add, &args, "admin"),
            Err(CliError::Usage(_))
        ));
    }

    #[test]
    fn the_status_table_aligns_columns() {
        let rows = [
            StatusRow {
                agent: "0:10.0.0.1".into(),
                status_code: 2,
                status: "running".into(),
                version: "2.1.0".into(),
                api: "v2",
                found: true,
            },
            StatusRow {
                agent: "x".into(),
                status_code: -2,
                status: "not_found".into(),
                version: String::new(),
                api: "v2",
                found: false,
            },
        ];
        let t = status_table(&rows);
        let lines: Vec<&str> = t.lines().collect();
        assert_eq!(lines[0], "AGENT       STATUS_CODE  STATUS     VERSION  API");
        assert_eq!(lines[1], "0:10.0.0.1  2            running    2.1.0    v2");
        assert_eq!(lines[2], "x           -2           not_found  -        v2");
    }
}
