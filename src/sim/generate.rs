//! Deterministic generation of the initial host population.

use std::collections::HashMap;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::sync::Arc;

use rand::rngs::{SmallRng, StdRng};
use rand::{Rng, SeedableRng};

use super::config::probability;
use super::model::{Host, OsType, STATUS_RUNNING};
use super::{info, plugins};

/// Agent versions seen in the field; hosts pick one with the weights below.
const VERSIONS: [(&str, f64); 3] = [("2.1.5", 0.5), ("2.1.6", 0.35), ("2.0.9", 0.15)];
/// Non-running codes a host may start in (-2 and -1 are query results, not agent states).
const OTHER_STATUS: [i32; 7] = [0, 1, 3, 4, 5, 6, 7];
const RUNNING_SHARE: f64 = 0.95;
const BUSINESSES: i64 = 20;
/// Business ids start at 2 because 1 is usually the BlueKing platform's own business.
const FIRST_BIZ: i64 = 2;

/// Yields `count` hosts with host ids `1..=count`; the same arguments always yield the same
/// hosts.
pub(crate) fn hosts(
    count: usize,
    seed: u64,
    legacy_ratio: f64,
    gse_unknown_ratio: f64,
) -> impl Iterator<Item = Host> {
    let mut rng = StdRng::seed_from_u64(seed);
    let legacy_ratio = probability(legacy_ratio);
    let gse_unknown_ratio = probability(gse_unknown_ratio);
    let versions: Vec<std::sync::Arc<str>> = VERSIONS.iter().map(|(v, _)| (*v).into()).collect();
    (0..count as u64).map(move |index| {
        let host_id = index + 1;
        let legacy = rng.random_bool(legacy_ratio);
        let bk_agent_id = if legacy {
            "".into()
        } else {
            opaque_id(host_id, &mut rng).into()
        };
        let cloud_id = if rng.random_bool(0.85) {
            0
        } else {
            rng.random_range(1..=3)
        };
        let status_code = if rng.random_bool(RUNNING_SHARE) {
            STATUS_RUNNING
        } else {
            OTHER_STATUS[rng.random_range(0..OTHER_STATUS.len())]
        };
        Host {
            host_id,
            biz_id: FIRST_BIZ + rng.random_range(0..BUSINESSES),
            cloud_id,
            ip: Some(ip_for_index(index)),
            ipv6: None,
            bk_agent_id,
            os_type: if rng.random_bool(0.85) {
                OsType::Linux
            } else {
                OsType::Windows
            },
            status_code,
            run_mode: i32::from(rng.random_bool(0.05)),
            version: versions[pick_weighted(&mut rng)].clone(),
            in_gse: !rng.random_bool(gse_unknown_ratio),
            // Filled by `with_details`.
            plugins: Vec::new(),
            parent_ip: Arc::from(""),
            start_time: 0,
        }
    })
}

/// Adds what [`hosts`] leaves out: plugins, agent info and IPv6-only addresses. Drawn from a
/// stream of their own, so a seed still yields the population it yielded before these
/// details existed.
pub(crate) fn with_details(
    hosts: impl Iterator<Item = Host>,
    seed: u64,
    ipv6_only_ratio: f64,
) -> impl Iterator<Item = Host> {
    let mut rng = StdRng::seed_from_u64(seed ^ 0x6465_7461_696c);
    let ipv6_only_ratio = probability(ipv6_only_ratio);
    let mut parents: HashMap<String, Arc<str>> = HashMap::new();
    let catalog = plugins::Catalog::new();
    hosts.map(move |mut host| {
        let index = host.host_id - 1;
        if rng.random_bool(ipv6_only_ratio) {
            host.ip = None;
            host.ipv6 = Some(ipv6_for_index(index));
            // The `cloud:ip` id needs IPv4, so an IPv6-only agent is always a GSE 2.0 one.
            if host.is_legacy() {
                host.bk_agent_id = opaque_id(host.host_id, &mut rng).into();
            }
        }
        // NodeMan lists no plugin processes for a host without an agent.
        if host.in_gse {
            host.plugins = catalog.draw(&mut rng);
        }
        let parent = info::default_parent_ip(host.cloud_id, host.host_id);
        host.parent_ip = parents
            .entry(parent)
            .or_insert_with_key(|p| Arc::from(p.as_str()))
            .clone();
        host.start_time =
            info::GENERATED_START_BEFORE - rng.random_range(0..info::GENERATED_START_SPREAD);
        host
    })
}

fn pick_weighted(rng: &mut impl Rng) -> usize {
    let mut x: f64 = rng.random();
    for (i, (_, weight)) in VERSIONS.iter().enumerate() {
        if x < *weight {
            return i;
        }
        x -= weight;
    }
    VERSIONS.len() - 1
}

/// A unique private IPv4 address per index: 10.0.0.1, 10.0.0.2, … skipping .0 and .255 so
/// no address looks like a network or broadcast address.
pub(crate) fn ip_for_index(index: u64) -> Ipv4Addr {
    let block = index / 254;
    let last = (index % 254) as u8 + 1;
    let first = u8::try_from(10 + block / 65536).unwrap_or(u8::MAX);
    Ipv4Addr::new(first, (block / 256 % 256) as u8, (block % 256) as u8, last)
}

/// A unique IPv6 address per index in the `fd00::/8` unique-local range.
pub(crate) fn ipv6_for_index(index: u64) -> Ipv6Addr {
    // fd00::1, fd00::2, …: the interface id is index + 1, never the all-zero one.
    Ipv6Addr::from((0xfd00_u128 << 112) | (u128::from(index) + 1))
}

/// An opaque agent id for a host added at run time.
pub(crate) fn agent_id_for(key: u64, fill_seed: u64) -> String {
    opaque_id(key, &mut SmallRng::seed_from_u64(fill_seed))
}

/// Real GSE 2.0 ids are 32 to 64 characters, start with a `02…` style prefix and are not
/// always hex (one public example ends in "076n"); consumers must not assume more than that.
/// The mixed key makes the first 26 characters unique per key; the rest is random filler.
fn opaque_id(key: u64, rng: &mut impl Rng) -> String {
    const HEX: &[u8] = b"0123456789abcdef";
    const ALNUM: &[u8] = b"0123456789abcdefghijklmnopqrstuvwxyz";
    let len = rng.random_range(32..=64);
    let mut id = format!("0200000000{:016x}", mix64(key));
    let alphabet = if rng.random_bool(0.5) { HEX } else { ALNUM };
    while id.len() < len {
        id.push(char::from(alphabet[rng.random_range(0..alphabet.len())]));
    }
    id
}

/// The splitmix64 finaliser: a bijection on u64, so distinct keys give distinct outputs.
pub(crate) fn mix64(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}
