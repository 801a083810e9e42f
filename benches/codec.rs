//! Decoding GSE answers and encoding events. `cargo bench --bench codec`.

use std::hint::black_box;

use agentwatch::{
    proto::v1::{AgentEvent, AgentState, AgentStateRecord, Op},
    sinks::kafka::{encode, Format},
    sources::gse::decode_list_agent_state,
};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};

/// A `list_agent_state` response for 1000 agents, as the gateway sends it.
fn gse_body() -> Vec<u8> {
    let items: Vec<serde_json::Value> = (0..1000)
        .map(|i| {
            serde_json::json!({
                "bk_agent_id": format!("0200000000{i:022x}"),
                "bk_cloud_id": 0,
                "version": "2.1.5",
                "run_mode": 0,
                "status_code": if i % 50 == 0 { 3 } else { 2 },
            })
        })
        .collect();
    serde_json::to_vec(&serde_json::json!({
        "result": true, "code": 0, "message": "success", "data": items,
        "request_id": "bench"
    }))
    .unwrap_or_default()
}

fn state(i: usize, code: i32) -> AgentState {
    AgentState {
        agent_id: format!("0200000000{i:022x}"),
        host_id: i as i64,
        cloud_id: 0,
        biz_id: 7,
        ip: "10.0.3.4".into(),
        status_code: code,
        status: if code == 2 { "running" } else { "lossy" }.into(),
        alive: code == 2,
        version: "2.1.5".into(),
        run_mode: 0,
        nodeman_status: "RUNNING".into(),
        os_type: "LINUX".into(),
        observed_at_ms: 1_700_000_000_000,
        status_api: "v2".into(),
        ..AgentState::default()
    }
}

fn event() -> AgentEvent {
    AgentEvent {
        op: Op::Update as i32,
        before: Some(state(1, 2)),
        after: Some(state(1, 3)),
        ts_ms: 1_700_000_000_000,
        seq: 42,
        sweep: 7,
        event_id: agentwatch::snapshot::event_id("a", 1_700_000_000_000, 42),
        source: "agentwatch://bench".into(),
        changed_fields: vec!["status_code".into(), "status".into(), "alive".into()],
        incarnation_ms: 1_700_000_000_000,
    }
}

fn codec(c: &mut Criterion) {
    let body = gse_body();
    let mut g = c.benchmark_group("decode");
    g.throughput(Throughput::Bytes(body.len() as u64));
    g.bench_function("list_agent_state_1000_agents", |b| {
        b.iter(|| decode_list_agent_state(black_box(&body)).map(|v| v.len()))
    });
    let rec = encode::encode_state(
        &AgentStateRecord {
            state: Some(state(1, 2)),
            seq: 9,
            written_at_ms: 1,
            incarnation_ms: 1,
        },
        Format::Protobuf,
    );
    g.throughput(Throughput::Elements(1));
    g.bench_function("state_record_protobuf", |b| {
        b.iter(|| encode::decode_state(black_box(&rec), Format::Protobuf).map(|r| r.seq))
    });
    g.finish();

    let ev = event();
    let mut g = c.benchmark_group("encode");
    g.throughput(Throughput::Elements(1));
    g.bench_function("event_protobuf", |b| {
        b.iter(|| encode::encode_event(black_box(&ev), Format::Protobuf).len())
    });
    g.bench_function("event_json", |b| {
        b.iter(|| encode::encode_event(black_box(&ev), Format::Json).len())
    });
    g.bench_function("event_headers", |b| {
        b.iter(|| encode::event_headers(black_box(&ev), Format::Protobuf))
    });
    g.finish();
}

/// The restore's own work per state record (no Kafka): decode, then insert into the
/// snapshot. `agentwatch bench --producer-baseline` measures the broker's side.
fn restore(c: &mut Criterion) {
    const N: usize = 100_000;
    let records: Vec<(String, Vec<u8>)> = (0..N)
        .map(|i| {
            let s = state(i, 2);
            let key = s.agent_id.clone();
            let rec = AgentStateRecord {
                state: Some(s),
                seq: 3,
                written_at_ms: 1,
                incarnation_ms: 1,
            };
            (key, encode::encode_state(&rec, Format::Protobuf))
        })
        .collect();
    let mut g = c.benchmark_group("restore");
    g.sample_size(10);
    g.throughput(Throughput::Elements(N as u64));
    g.bench_function("decode_and_insert_100k", |b| {
        b.iter(|| {
            let (store, _work) = agentwatch::snapshot::Store::new();
            for (key, bytes) in &records {
                if let Ok(rec) = encode::decode_state(bytes, Format::Protobuf) {
                    if let Some(st) = rec.state {
                        store.restore_record(key, st, rec.seq, rec.incarnation_ms);
                    }
                }
            }
            store.len()
        })
    });
    g.finish();
}

criterion_group!(benches, codec, restore);
criterion_main!(benches);
