//! Heap bytes per agent of the snapshot and the inventory, counted by a wrapping
//! global allocator (exact, unlike RSS, which also holds allocator slack, librdkafka's
//! buffers and freed-but-kept pages). `cargo bench --bench memory` prints a table.
//!
//! Targets (issue 7): ≤ 200 bytes of snapshot and ≤ ~110 of inventory per agent.

use std::{
    alloc::{GlobalAlloc, Layout, System},
    sync::atomic::{AtomicIsize, Ordering},
};

use agentwatch::{
    poller::{merge, Observed},
    snapshot::{StatusNames, Store},
    sources::{
        gse::{GseAgentState, GseApi},
        inventory::{Host, Inventory},
    },
};

/// Live heap bytes (requested sizes; malloc's own per-block overhead of 8-16 bytes
/// is not included, see the footer of the table).
static LIVE: AtomicIsize = AtomicIsize::new(0);
static BLOCKS: AtomicIsize = AtomicIsize::new(0);

struct Counting;

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LIVE.fetch_add(layout.size() as isize, Ordering::Relaxed);
        BLOCKS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: forwarded unchanged to the system allocator.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size() as isize, Ordering::Relaxed);
        BLOCKS.fetch_sub(1, Ordering::Relaxed);
        // SAFETY: forwarded unchanged to the system allocator.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        LIVE.fetch_add(
            new_size as isize - layout.size() as isize,
            Ordering::Relaxed,
        );
        // SAFETY: forwarded unchanged to the system allocator.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

fn live() -> (isize, isize) {
    (LIVE.load(Ordering::Relaxed), BLOCKS.load(Ordering::Relaxed))
}

fn host(i: usize) -> Host {
    Host {
        host_id: i as i64 + 1,
        cloud_id: 0,
        biz_id: (i % 20) as i64,
        ip: format!("10.{}.{}.{}", (i >> 16) & 255, (i >> 8) & 255, i & 255),
        ipv6: String::new(),
        bk_agent_id: format!("0200000000{i:022x}"),
        os_type: "LINUX".into(),
        nodeman_status: "RUNNING".into(),
    }
}

fn main() {
    // `cargo bench` passes `--bench`; `cargo test --benches` runs it with a tiny size.
    let quick = !std::env::args().any(|a| a == "--bench");
    let sizes: &[usize] = if quick {
        &[1_000]
    } else {
        &[10_000, 100_000, 1_000_000]
    };
    let names = StatusNames::default();
    println!(
        "{:>9} | {:>16} | {:>14} | {:>17} | {:>15} | {:>21}",
        "agents",
        "snapshot B/agent",
        "blocks/agent",
        "inventory B/agent",
        "blocks/agent",
        "all pending B/agent"
    );
    for &n in sizes {
        let (b0, k0) = live();
        let inv = Inventory::from_hosts((0..n).map(host).collect());
        let (b1, k1) = live();

        let (store, mut work) = Store::new();
        let gse = GseAgentState {
            agent_id: String::new(),
            cloud_id: 0,
            version: "2.1.5".into(),
            run_mode: 0,
            status_code: 2,
            v1_alive: None,
        };
        let seen = Observed {
            gse: Some(&gse),
            api: GseApi::V2,
            plugins: None,
            info: None,
            info_version: None,
        };
        // Every agent observed once: each has a change waiting for Kafka, as during
        // the first sweep's storm or a broker outage.
        for (i, id) in inv.ids.iter().enumerate() {
            store.observe_view(id, &merge(id, inv.host(i), &seen, &names, 1), 1);
        }
        let (b_storm, _) = live();
        // Its event and state record acknowledged: the steady state of a running
        // service.
        for id in &inv.ids {
            let _ = store.take_event(id, "bench", 1);
            store.event_acked(id);
            let _ = store.take_state(id);
            store.state_acked(id);
        }
        // The queued work items are not part of the steady state.
        while work.try_recv().is_ok() {}
        drop(work);
        let (b2, k2) = live();
        let per = |b: isize| b as f64 / n as f64;
        println!(
            "{:>9} | {:>16.0} | {:>14.2} | {:>17.0} | {:>15.2} | {:>21.0}",
            n,
            per(b2 - b1),
            per(k2 - k1),
            per(b1 - b0),
            per(k1 - k0),
            per(b_storm - b1),
        );
        assert_eq!(store.stats().agents, n);
        drop(store);
        drop(inv);
    }
    println!("(heap bytes as requested; glibc adds 8-16 bytes per block on top; \"all pending\":");
    println!(" the snapshot while every agent has a change not yet acknowledged by Kafka)");
}
