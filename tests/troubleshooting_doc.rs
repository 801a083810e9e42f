//! `docs/troubleshooting.md` names only metrics and log messages that exist: every
//! `agentwatch_*` name in it is registered somewhere under `src/`, and every message
//! quoted as `log: "..."` is written by the code.

use std::{
    collections::BTreeSet,
    fs,
    path::{Path, PathBuf},
};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn guide() -> String {
    fs::read_to_string(root().join("docs/troubleshooting.md")).expect("docs/troubleshooting.md")
}

/// Every `.rs` file under `dir`, recursively, in a stable order.
fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let mut entries: Vec<PathBuf> = fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", dir.display()))
        .map(|e| e.expect("dir entry").path())
        .collect();
    entries.sort();
    for path in entries {
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|x| x == "rs") {
            out.push(path);
        }
    }
}

/// The source under `src/`, with Rust string continuations (`\` + newline + indent)
/// joined, so a message split over lines in the code reads as it is logged. The doctor's
/// own texts are left out: quoting them must not make a log message "exist".
fn source() -> String {
    let mut files = Vec::new();
    rust_files(&root().join("src"), &mut files);
    let mut all = String::new();
    for f in files {
        let shown = f.to_string_lossy().replace('\\', "/");
        if shown.contains("/src/cli/doctor") {
            continue;
        }
        let text = fs::read_to_string(&f).expect("source file");
        all.push_str(&join_continuations(&text));
        all.push('\n');
    }
    all
}

fn join_continuations(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\\' && chars.peek() == Some(&'\n') {
            chars.next();
            while chars.peek().is_some_and(|c| c.is_whitespace()) {
                chars.next();
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// Every `agentwatch_...` metric name in the text (prose, inline code and PromQL alike).
fn metric_names(doc: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let mut rest = doc;
    while let Some(at) = rest.find("agentwatch_") {
        let tail = &rest[at..];
        let len = tail
            .find(|c: char| !(c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_'))
            .unwrap_or(tail.len());
        let name = &tail[..len];
        if name.len() > "agentwatch_".len() {
            names.insert(name.to_owned());
        }
        rest = &tail[len..];
    }
    names
}

/// Every message quoted as `log: "..."`.
fn log_messages(doc: &str) -> Vec<String> {
    let marker = "log: \"";
    let mut out = Vec::new();
    let mut rest = doc;
    while let Some(at) = rest.find(marker) {
        let tail = &rest[at + marker.len()..];
        let end = tail.find('"').expect("a quoted log message is closed");
        out.push(tail[..end].to_owned());
        rest = &tail[end..];
    }
    out
}

#[test]
fn every_metric_the_guide_names_is_registered() {
    let doc = guide();
    let src = source();
    let names = metric_names(&doc);
    assert!(
        names.len() >= 15,
        "expected the guide to name many metrics, found {names:?}"
    );
    let mut unknown = Vec::new();
    for name in &names {
        // Histograms are registered by their base name.
        let base = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|s| name.strip_suffix(s))
            .filter(|b| src.contains(&format!("\"{b}\"")))
            .unwrap_or(name);
        if !src.contains(&format!("\"{base}\"")) {
            unknown.push(name.clone());
        }
    }
    assert!(
        unknown.is_empty(),
        "metrics named in docs/troubleshooting.md but not registered under src/: {unknown:?}"
    );
}

#[test]
fn every_log_message_the_guide_quotes_is_in_the_code() {
    let doc = guide();
    let src = source();
    let messages = log_messages(&doc);
    assert!(
        messages.len() >= 15,
        "expected the guide to quote many log lines, found {messages:?}"
    );
    let missing: Vec<&String> = messages
        .iter()
        .filter(|m| m.contains('\n') || m.trim().is_empty() || !src.contains(m.as_str()))
        .collect();
    assert!(
        missing.is_empty(),
        "log messages quoted in docs/troubleshooting.md that no code under src/ writes: \
         {missing:#?}"
    );
}

#[test]
fn the_guide_covers_every_symptom_of_the_issue() {
    let doc = guide().to_lowercase();
    for topic in [
        "cannot reach gse or nodeman",
        "bkgse_apigw_base_url",
        "bk_component_api_url",
        "authentication and permission errors",
        "lost slot messages",
        "sweeps slower than the interval",
        "agents stuck stale",
        "a flood of deletes",
        "kafka backlog growing",
        "a restart re-emits changes",
        "what happened to this host",
        "agentwatch doctor",
    ] {
        assert!(
            doc.contains(topic),
            "docs/troubleshooting.md lacks {topic:?}"
        );
    }
}

#[test]
fn the_extractors_find_names_and_messages() {
    let text = "see `agentwatch_a_total{x=\"y\"}` and rate(agentwatch_b_seconds_bucket[5m]); \
                `log: \"one thing\"` then `log: \"another\"`; grep agentwatch_";
    assert_eq!(
        metric_names(text).into_iter().collect::<Vec<_>>(),
        ["agentwatch_a_total", "agentwatch_b_seconds_bucket"]
    );
    assert_eq!(log_messages(text), ["one thing", "another"]);
    assert_eq!(join_continuations("\"a \\\n     b\""), "\"a b\"");
}
