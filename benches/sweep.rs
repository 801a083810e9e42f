//! The per-agent work of a sweep, without HTTP: merge the GSE answer with the host into
//! a borrowed view and diff it against the snapshot. `cargo bench --bench sweep`.
//!
//! Targets (issue 7): ≥ 10M agents/s on one core for a no-change sweep, no allocation
//! per unchanged agent.

// Parallel arrays indexed together read clearer than four zipped iterators.
#![allow(clippy::needless_range_loop)]

use std::hint::black_box;

use agentwatch::{
    poller::{merge, Observed},
    snapshot::{view::View, StatusNames, Store},
    sources::{
        gse::{GseAgentState, GseApi},
        inventory::{Host, Inventory},
    },
};
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};

/// The service's allocator (`src/main.rs`), so the snapshot sits in memory as it does there.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Agents per GSE request, as the poller's default batch.
const BATCH: usize = 1000;

struct Fixture {
    /// Host ids 1..=n in order, so `inv.ids[i]` is the agent of `gse[i]`.
    inv: Inventory,
    gse: Vec<GseAgentState>,
}

fn fixture(n: usize) -> Fixture {
    let mut hosts = Vec::with_capacity(n);
    let mut gse = Vec::with_capacity(n);
    for i in 0..n {
        let id = format!("0200000000{i:022x}");
        hosts.push(Host {
            host_id: i as i64 + 1,
            cloud_id: 0,
            biz_id: (i % 20) as i64,
            ip: format!("10.{}.{}.{}", (i >> 16) & 255, (i >> 8) & 255, i & 255),
            ipv6: String::new(),
            bk_agent_id: id.clone(),
            os_type: "LINUX".into(),
            nodeman_status: "RUNNING".into(),
        });
        gse.push(GseAgentState {
            agent_id: id,
            cloud_id: 0,
            version: "2.1.5".into(),
            run_mode: 0,
            status_code: 2,
            v1_alive: None,
        });
    }
    Fixture {
        inv: Inventory::from_hosts(hosts),
        gse,
    }
}

/// A store holding every agent as acknowledged (as after a restore), its keys shared
/// with the inventory's ids as the poller shares them after each refresh (so a lookup
/// compares the id with itself, not with a second copy elsewhere in memory).
fn store(f: &mut Fixture, names: &StatusNames) -> std::sync::Arc<Store> {
    let (store, rx) = Store::new();
    std::mem::forget(rx); // keep the work queue open; nothing reads it here
    for i in 0..f.inv.ids.len() {
        let seen = observed(&f.gse[i]);
        let state = merge(&f.inv.ids[i], f.inv.host(i), &seen, names, 0).to_state();
        store.restore(&f.inv.ids[i], state, 1);
    }
    store.finish_restore();
    store.share_ids(&mut f.inv.ids);
    store
}

fn observed(g: &GseAgentState) -> Observed<'_> {
    Observed {
        gse: Some(g),
        api: GseApi::V2,
        plugins: None,
        info: None,
        info_version: None,
    }
}

fn sweep(c: &mut Criterion) {
    let names = StatusNames::default();
    let mut group = c.benchmark_group("sweep");
    group.sample_size(10);
    for n in [10_000usize, 100_000, 1_000_000] {
        let mut f = fixture(n);
        let s = store(&mut f, &names);
        group.throughput(Throughput::Elements(n as u64));
        for (label, every) in [
            ("no_change", 0usize),
            ("1pct_change", 100),
            ("100pct_change", 1),
        ] {
            let changed: Vec<GseAgentState> = f
                .gse
                .iter()
                .map(|g| GseAgentState {
                    status_code: 3,
                    ..g.clone()
                })
                .collect();
            // As the poller does it: the GSE answer's batches of 1000 (`observe_batch`).
            group.bench_with_input(BenchmarkId::new(label, n), &n, |b, _| {
                let mut views = Vec::with_capacity(BATCH);
                b.iter(|| {
                    for start in (0..n).step_by(BATCH) {
                        views.clear();
                        for i in start..(start + BATCH).min(n) {
                            let g = if every > 0 && i % every == 0 {
                                &changed[i]
                            } else {
                                &f.gse[i]
                            };
                            let id = &f.inv.ids[i];
                            views.push((id, merge(id, f.inv.host(i), &observed(g), &names, 1)));
                        }
                        s.observe_batch(black_box(&views), 2);
                    }
                })
            });
        }
        // One agent at a time (`observe_view`), for comparison.
        group.bench_with_input(BenchmarkId::new("no_change_one_by_one", n), &n, |b, _| {
            b.iter(|| {
                for i in 0..n {
                    let view = merge(
                        &f.inv.ids[i],
                        f.inv.host(i),
                        &observed(&f.gse[i]),
                        &names,
                        1,
                    );
                    s.observe_view(black_box(&f.inv.ids[i]), &view, 2);
                }
            })
        });
    }
    group.finish();
}

fn diff_only(c: &mut Criterion) {
    let names = StatusNames::default();
    let f = fixture(1000);
    let inv = &f.inv;
    let a: Vec<_> = (0..1000)
        .map(|i| merge(&inv.ids[i], inv.host(i), &observed(&f.gse[i]), &names, 0).to_state())
        .collect();
    let diff = agentwatch::snapshot::diff::Diff::default();
    let mut group = c.benchmark_group("diff");
    group.throughput(Throughput::Elements(1000));
    group.bench_function("differs_view_unchanged_1000", |b| {
        b.iter(|| {
            let mut n = 0;
            for i in 0..1000 {
                let view = merge(&inv.ids[i], inv.host(i), &observed(&f.gse[i]), &names, 1);
                n += usize::from(diff.differs_view(&a[i].view(), black_box(&view)));
            }
            n
        })
    });
    group.finish();
}

/// The pass over the whole snapshot the poller makes after each sweep for its gauges
/// (`Store::stats`): agents by status, stale, pending, oldest pending.
fn stats(c: &mut Criterion) {
    let names = StatusNames::default();
    let mut group = c.benchmark_group("stats");
    group.sample_size(10);
    for n in [100_000usize, 1_000_000] {
        let mut f = fixture(n);
        let s = store(&mut f, &names);
        group.throughput(Throughput::Elements(n as u64));
        group.bench_with_input(BenchmarkId::new("settled", n), &n, |b, _| {
            b.iter(|| black_box(s.stats()))
        });
    }
    group.finish();
}

criterion_group!(benches, sweep, diff_only, stats);
criterion_main!(benches);
