//! agentwatch: streams BlueKing GSE agent status changes to Kafka.
//!
//! # Layout
//!
//! ```text
//!  sources/                      snapshot/                     sinks/kafka/
//!  ┌──────────────┐ hosts       ┌──────────────────────┐ work  ┌───────────────────┐
//!  │ nodeman      │────────┐    │ Store (DashMap)      │──────▶│ KafkaSink         │──▶ events topic
//!  │ (inventory)  │        ▼    │  acked / pending /   │       │ (idempotent,      │──▶ state topic
//!  └──────────────┘   poller/ ─▶│  in-flight per agent │◀──────│  acks=all)        │    (compacted)
//!  ┌──────────────┐   (sweep,   │ diff (pure)          │ acks  └───────────────────┘
//!  │ gse v2 / v1  │──▶ merge)   └──────────────────────┘              ▲
//!  │ (batches)    │                     ▲  restore at start ──────────┘
//!  └──────────────┘                     │
//!  sources/bk: one HTTP client layer    http/: /metrics /healthz /readyz, /api/v1 query
//!  (inventory also: cmdb, file)                (reads only)
//! ```
//!
//! - [`config`]: TOML + `AGENTWATCH__SECTION__KEY` overrides, every bad field reported.
//! - [`sources`]: BlueKing API clients (shared retry/auth/envelope layer, GSE v2/v1,
//!   NodeMan hosts and plugins, CMDB) and the static-file inventory.
//! - [`poller`]: inventory refresh + GSE sweep, merging both into borrowed agent views.
//! - [`snapshot`]: the per-agent store and the pure diff.
//! - [`sinks`]: the Kafka producer loop, topic checks, start-up restore.
//! - [`http`]: metrics and health endpoints, and the read-only status query API.
//! - [`metrics`]: every Prometheus metric, registered in one place.
//! - [`sim`]: the BlueKing simulator used by `agentwatch simulate`, the demo and tests.
//! - [`slot`]: the GSE message-slot receiver (`/api/v4/bk_gse_slot/` → Kafka) and the
//!   worker answering `fetch/host/dataid` through `dispatch_message`.
//! - [`cli`]: `agentwatch gse ...` (GSE data-link admin, direct status queries),
//!   `agentwatch tail`.
//! - [`tls`]: rustls configs of `[bk.tls]` (outgoing https) and `[http.tls]` (serving
//!   HTTPS), checked at validation.
//! - [`shard`]: which agents this replica owns when several split the work.
//! - [`tasks`]: per-task health (`agentwatch_task_up`) and what a dead task does to
//!   readiness.
//! - [`app`]: wiring of `agentwatch run`; [`demo`]: the zero-setup demo;
//!   [`benchmark`]: `agentwatch bench`; [`soak`]: `agentwatch soak`, the long-run test.
#![forbid(unsafe_code)]

pub mod app;
pub mod benchmark;
pub mod cli;
pub mod config;
pub mod demo;
#[doc(hidden)]
pub mod fuzzing;
pub mod http;
pub mod metrics;
pub mod poller;
pub mod proto;
pub mod shard;
pub mod sim;
pub mod sinks;
pub mod slot;
pub mod snapshot;
pub mod soak;
pub mod sources;
pub mod tasks;
pub mod tls;
