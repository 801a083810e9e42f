//! The command line as an operator uses it: exit codes and messages.

use std::process::Command;

fn agentwatch() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_agentwatch"));
    // Keep the developer's environment from leaking into the config under test.
    for (k, _) in std::env::vars() {
        if k.starts_with("AGENTWATCH") {
            c.env_remove(k);
        }
    }
    c
}

#[test]
fn check_config_accepts_the_example_and_masks_the_secret() {
    let out = agentwatch()
        .args(["check-config", "--config"])
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/agentwatch.example.toml"
        ))
        .output()
        .expect("runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("batch_size = 1000"));
    assert!(!stdout.contains("change-me"), "secret printed: {stdout}");
    assert!(stdout.contains("app_secret = \"***\""));
}

#[test]
fn check_config_reports_every_bad_field_and_exits_2() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("bad.toml");
    std::fs::write(
        &path,
        "[gse]\nbatch_size = 0\ntimeout = 5\nbase_url = \"nope\"\n[kafka]\nformat = \"xml\"\n[poll]\nremove_after = 0\n",
    )
    .expect("write");
    let out = agentwatch()
        .args(["check-config", "--config"])
        .arg(&path)
        .env("AGENTWATCH__BK__APP_SECRET", "x")
        .output()
        .expect("runs");
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    for field in [
        "bk.app_code",
        "gse.batch_size",
        "gse.timeout",
        "gse.base_url",
        "kafka.format",
        "poll.remove_after",
        "nodeman.base_url",
    ] {
        assert!(err.contains(field), "{field} missing from:\n{err}");
    }
}

#[test]
fn run_with_an_unreadable_config_exits_2_naming_the_file() {
    let out = agentwatch()
        .args(["run", "--config", "/nonexistent/agentwatch.toml"])
        .output()
        .expect("runs");
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("/nonexistent/agentwatch.toml"));
}

#[test]
fn environment_overrides_are_applied_and_shown() {
    let out = agentwatch()
        .args(["check-config", "--config"])
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/agentwatch.example.toml"
        ))
        .env("AGENTWATCH__GSE__BATCH_SIZE", "250")
        .output()
        .expect("runs");
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("batch_size = 250"));
}

#[test]
fn bench_refuses_kafka_options_agentwatch_sets_or_names_otherwise() {
    for (arg, expected) in [
        (
            "compression.type=zstd",
            "has an option of its own: --compression",
        ),
        ("acks=1", "acks is set by agentwatch itself"),
        ("linger.ms", "expected KEY=VALUE"),
    ] {
        let out = agentwatch()
            .args(["bench", "--agents", "10", "--kafka-option", arg])
            .output()
            .expect("runs");
        assert_eq!(out.status.code(), Some(2), "{arg}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(expected), "{arg}: {err}");
    }
    let out = agentwatch()
        .args(["bench", "--agents", "10", "--compression", "brotli"])
        .output()
        .expect("runs");
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("not one of lz4, zstd, snappy, gzip, none"),
        "{err}"
    );
}
