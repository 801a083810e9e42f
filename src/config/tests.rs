use super::*;

fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

const MINIMAL: &str = r#"
[bk]
app_code = "agentwatch"
app_secret = "s3cret"
[gse]
base_url = "http://127.0.0.1:8900/api/bk-gse/prod/api/v2/"
[nodeman]
base_url = "http://127.0.0.1:8900/api/bk-nodeman/prod"
"#;

#[test]
fn a_minimal_config_gets_the_documented_defaults() {
    let c = load_str(MINIMAL, "t", env(&[])).expect("valid");
    assert_eq!(c.gse.batch_size, 1000);
    assert_eq!(c.gse.concurrency, 8);
    assert_eq!(c.poll.interval, Duration::from_secs(10));
    assert_eq!(c.poll.inventory_interval, Duration::from_secs(300));
    assert_eq!(c.kafka.events_topic, "agentwatch.events");
    assert_eq!(c.kafka.state_topic, "agentwatch.state");
    assert_eq!(c.http.listen, "127.0.0.1:9108");
    assert!(c.nodeman.base_url.ends_with('/'), "base URL normalized");
}

#[test]
fn environment_overrides_any_key() {
    let c = load_str(
        MINIMAL,
        "t",
        env(&[
            ("AGENTWATCH__GSE__BATCH_SIZE", "500"),
            ("AGENTWATCH__POLL__INTERVAL", "3s"),
            ("AGENTWATCH__BK__APP_CODE", "12345"),
            ("UNRELATED", "x"),
        ]),
    )
    .expect("valid");
    assert_eq!(c.gse.batch_size, 500);
    assert_eq!(c.poll.interval, Duration::from_secs(3));
    // A numeric-looking value for a string field stays a string.
    assert_eq!(c.bk.app_code, "12345");
}

#[test]
fn every_bad_field_is_reported_at_once() {
    let text = r#"
[bk]
app_code = ""
[gse]
base_url = "ftp://x/"
batch_size = 0
timeout = 10
bogus = 1
[poll]
interval = "soon"
[kafka]
events_topic = "bad topic"
[nonsense]
x = 1
"#;
    let err =
        load_str(text, "t", env(&[("AGENTWATCH__GSE__CONCURRENCY", "lots")])).expect_err("invalid");
    let ConfigError::Invalid { errors } = err else {
        panic!("expected field errors, got {err}");
    };
    let paths = errors.paths();
    for expected in [
        "bk.app_code",
        "bk.app_secret",
        "gse.base_url",
        "gse.batch_size",
        "gse.timeout",
        "gse.bogus",
        "poll.interval",
        "kafka.events_topic",
        "nonsense",
        "nodeman.base_url",
    ] {
        assert!(
            paths.iter().any(|p| p.starts_with(expected)),
            "{expected} not reported in {paths:?}"
        );
    }
    assert!(
        paths
            .iter()
            .any(|p| p.contains("AGENTWATCH__GSE__CONCURRENCY")),
        "env origin named: {paths:?}"
    );
}

#[test]
fn secrets_are_masked_in_the_effective_config() {
    let c = load_str(MINIMAL, "t", env(&[])).expect("valid");
    let shown = c.to_masked_toml();
    assert!(!shown.contains("s3cret"));
    assert!(shown.contains("***"));
    assert!(!format!("{c:?}").contains("s3cret"));
}

#[test]
fn the_secret_can_come_from_a_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    let f = dir.path().join("secret");
    std::fs::write(&f, "from-file\n").expect("write");
    let text = MINIMAL.replace(
        "app_secret = \"s3cret\"",
        &format!("app_secret_file = {:?}", f.display().to_string()),
    );
    let c = load_str(&text, "t", env(&[])).expect("valid");
    use secrecy::ExposeSecret;
    assert_eq!(
        c.bk.app_secret
            .as_ref()
            .map(|s| s.expose_secret().to_owned()),
        Some("from-file".to_owned())
    );
}

#[test]
fn the_example_config_in_the_repo_parses() {
    let text = include_str!("../../agentwatch.example.toml");
    load_str(text, "agentwatch.example.toml", env(&[])).expect("example config is valid");
}

/// The commented `[bk.tls]`, `[kafka.option_files]` and `[http.tls]` blocks of the
/// example, uncommented: every key is a real field, and only the (absent) files fail.
#[test]
fn the_commented_transport_security_examples_name_real_fields() {
    let text = include_str!("../../agentwatch.example.toml");
    let mut out = String::new();
    let mut inside = false;
    for line in text.lines() {
        if ["# [bk.tls]", "# [kafka.option_files]", "# [http.tls]"].contains(&line) {
            inside = true;
        } else if line.trim().is_empty() {
            inside = false;
        }
        let is_setting = line.starts_with("# [") || line.starts_with("# \"") || {
            let rest = line.trim_start_matches("# ");
            rest.split_once(" = ")
                .is_some_and(|(k, _)| k.chars().all(|c| c.is_ascii_lowercase() || c == '_'))
        };
        match line.strip_prefix("# ") {
            Some(setting) if inside && is_setting => out.push_str(setting),
            _ => out.push_str(line),
        }
        out.push('\n');
    }
    assert!(out.contains("\n[http.tls]\n") && out.contains("\nclient_key_file = "));
    let Err(ConfigError::Invalid { errors }) = load_str(&out, "uncommented", env(&[])) else {
        panic!("the example's certificate files do not exist here, so it must not load");
    };
    assert_eq!(
        errors.paths(),
        vec![
            "bk.tls.ca_file",
            "bk.tls.client_cert_file",
            "bk.tls.client_key_file",
            "kafka.option_files.sasl.password",
            "http.tls.cert_file",
            "http.tls.key_file",
            "http.tls.client_ca_file",
        ],
        "{errors}"
    );
    assert!(
        errors.0.iter().all(|e| e.reason.starts_with("cannot read")),
        "{errors}"
    );
}

#[test]
fn compression_is_lz4_by_default_and_set_by_its_own_field_only() {
    use crate::sinks::kafka::{producer::producer_config, Compression};

    let c = load_str(MINIMAL, "t", env(&[])).expect("valid");
    assert_eq!(c.kafka.compression, Compression::Lz4);
    assert_eq!(
        producer_config(&c.kafka).get("compression.type"),
        Some("lz4")
    );

    let c = load_str(
        MINIMAL,
        "t",
        env(&[("AGENTWATCH__KAFKA__COMPRESSION", "none")]),
    )
    .expect("valid");
    assert_eq!(
        producer_config(&c.kafka).get("compression.type"),
        Some("none")
    );

    let text = format!("{MINIMAL}[kafka]\ncompression = \"brotli\"\n");
    let err = load_str(&text, "t", env(&[])).expect_err("invalid");
    let ConfigError::Invalid { errors } = err else {
        panic!("expected field errors, got {err}");
    };
    let paths = errors.paths();
    assert!(
        paths.iter().any(|p| p.starts_with("kafka.compression")),
        "unknown codec named: {paths:?}"
    );
}

#[test]
fn compression_in_kafka_options_points_at_the_field() {
    let text = format!(
        "{MINIMAL}[kafka.options]\n\"compression.type\" = \"zstd\"\n\"compression.codec\" = \"gzip\"\n"
    );
    let err = load_str(&text, "t", env(&[])).expect_err("invalid");
    let shown = err.to_string();
    for key in [
        "kafka.options.compression.type",
        "kafka.options.compression.codec",
    ] {
        assert!(shown.contains(key), "{key} not named in: {shown}");
    }
    assert!(shown.contains("set kafka.compression instead"), "{shown}");
}
