//! Hostile input for every public decoder of outside data: valid seeds, then
//! deterministic mutations (bit flips, truncations, splices, huge numbers and length
//! fields). Every decoder must answer Ok or a clear error — never panic, hang or
//! allocate from a length field. Bounded and seeded, so it runs in every `cargo test`;
//! the coverage-guided fuzzing is `fuzz/` (`scripts/fuzz.sh`), whose corpora
//! `tests/fuzz_corpus.rs` replays.

use agentwatch::{
    config::load_str,
    proto::v1::{AgentEvent, AgentState, AgentStateRecord, Op},
    sinks::kafka::{encode, Format},
    slot::SlotRequest,
    sources::{bk::envelope, gse::decode_list_agent_state},
};
use prost::Message;
use rand::{rngs::StdRng, Rng, SeedableRng};

/// Mutations per seed.
const ROUNDS: usize = 3000;

fn mutate(rng: &mut StdRng, seed: &[u8]) -> Vec<u8> {
    let mut b = seed.to_vec();
    for _ in 0..rng.random_range(1..4) {
        if b.is_empty() {
            b.push(rng.random());
            continue;
        }
        let i = rng.random_range(0..b.len());
        match rng.random_range(0..7) {
            0 => b[i] ^= 1 << rng.random_range(0..8),
            1 => b.truncate(i),
            2 => {
                let j = rng.random_range(0..b.len());
                let chunk = b[i.min(j)..i.max(j)].to_vec();
                b.splice(i..i, chunk);
            }
            3 => {
                b.splice(i..i, b"99999999999999999999999".iter().copied());
            }
            4 => {
                b.splice(i..i, b"\xff\xff\xff\xff\x0f".iter().copied());
            }
            5 => {
                let alphabet = b"{}[]\":,-0\\ntfe";
                b[i] = alphabet[rng.random_range(0..alphabet.len())];
            }
            _ => {
                b.remove(i);
            }
        }
    }
    b
}

fn each_mutation(seeds: &[Vec<u8>], mut check: impl FnMut(&[u8])) {
    let mut rng = StdRng::seed_from_u64(0x5eed);
    for seed in seeds {
        check(seed);
        for _ in 0..ROUNDS {
            check(&mutate(&mut rng, seed));
        }
    }
    // Degenerate inputs.
    for b in [&b""[..], b"\0", b"{", b"[", b"null", b"\"", &[0xff; 64][..]] {
        check(b);
    }
}

#[test]
fn gse_list_agent_state_answers_never_panic_and_errors_say_what_is_wrong() {
    let seeds = vec![
        br#"{"result":true,"code":0,"message":"ok","data":[{"bk_agent_id":"a","bk_cloud_id":0,"version":"2.1.5","run_mode":0,"status_code":2}]}"#.to_vec(),
        br#"{"result":false,"code":1011003,"message":"none","data":null}"#.to_vec(),
        br#"{"code":"0","data":[]}"#.to_vec(),
        br#"{"result":false,"code":1640001,"code_name":"INVALID_ARGS","message":"x","data":null}"#.to_vec(),
    ];
    let mut ok = 0;
    each_mutation(&seeds, |b| match decode_list_agent_state(b) {
        Ok(_) => ok += 1,
        Err(e) => assert!(!e.to_string().is_empty()),
    });
    assert!(ok > 0, "the valid seeds decode");
}

#[test]
fn envelopes_of_any_shape_never_panic() {
    let seeds = vec![
        br#"{"result":true,"code":0,"data":{"total":2,"list":[{"bk_host_id":1},{"bk_host_id":2}]}}"#.to_vec(),
        br#"{"result":true,"code":0,"data":{"a:b":{"ip":"1.2.3.4","bk_cloud_id":0,"bk_agent_alive":1}}}"#.to_vec(),
        br#"{"result":false,"code":"12","message":"no"}"#.to_vec(),
    ];
    each_mutation(&seeds, |b| {
        let r = envelope::decode::<serde_json::Value>("test endpoint", b);
        if let Err(e) = r {
            assert!(
                e.to_string().contains("test endpoint"),
                "error names the endpoint: {e}"
            );
        }
    });
}

fn state() -> AgentState {
    AgentState {
        agent_id: "0:10.0.0.1".into(),
        host_id: 9,
        status_code: 2,
        status: "running".into(),
        alive: true,
        version: "2.1.5".into(),
        ..AgentState::default()
    }
}

#[test]
fn state_records_and_events_from_kafka_never_panic_in_either_format() {
    let rec = AgentStateRecord {
        state: Some(state()),
        seq: 7,
        written_at_ms: 1,
        incarnation_ms: 2,
    };
    let ev = AgentEvent {
        op: Op::Update as i32,
        before: Some(state()),
        after: Some(state()),
        seq: 3,
        changed_fields: vec!["status".into()],
        ..AgentEvent::default()
    };
    for format in [Format::Protobuf, Format::Json] {
        let seeds = vec![
            encode::encode_state(&rec, format),
            encode::encode_event(&ev, format),
        ];
        each_mutation(&seeds, |b| {
            let _ = encode::decode_state(b, format);
            let _ = encode::decode_event(b, format);
        });
    }
}

#[test]
fn a_huge_protobuf_length_field_is_an_error_not_an_allocation() {
    // Field 1 (state), length-delimited, declared length 2^35: must fail fast.
    let mut b = vec![0x0a];
    prost::encoding::encode_varint(1 << 35, &mut b);
    b.extend_from_slice(b"short");
    assert!(AgentStateRecord::decode(&b[..]).is_err());
    assert!(encode::decode_state(&b, Format::Protobuf).is_err());
}

#[test]
fn slot_bodies_never_panic_and_errors_name_the_field() {
    let seeds = vec![
        br#"{"message_id":"m1","bk_agent_id":"a","content":"{\"type\":\"fetch/host/dataid\"}"}"#
            .to_vec(),
    ];
    let mut ok = 0;
    each_mutation(&seeds, |b| match SlotRequest::parse(b) {
        Ok(_) => ok += 1,
        Err(e) => assert!(!e.is_empty()),
    });
    assert!(ok > 0);
    let e = SlotRequest::parse(br#"{"message_id":"m1","bk_agent_id":"a"}"#).expect_err("missing");
    assert!(e.contains("content"), "{e}");
}

#[test]
fn config_files_never_panic_the_loader() {
    let seeds = vec![
        include_bytes!("../agentwatch.example.toml").to_vec(),
        b"[gse]\nbatch_size = 5\n[kafka.options]\n\"linger.ms\" = \"5\"\n".to_vec(),
    ];
    each_mutation(&seeds, |b| {
        let text = String::from_utf8_lossy(b);
        if let Err(e) = load_str(&text, "fuzz.toml", Vec::new()) {
            assert!(!e.to_string().is_empty());
        }
    });
}
