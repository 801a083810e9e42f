//! `agentwatch doctor --config FILE [--json] [--timeout 5s]`: checks, in order, what
//! agentwatch needs from its surroundings and prints one line per check — `✔` passed,
//! `✘` failed (with a concrete fix), `-` skipped because an earlier failure makes it
//! meaningless or it does not apply:
//!
//! 1. `config`: the file loads and validates (every bad field, as `check-config`);
//! 2. `reach <key>`: each upstream base URL in use — DNS, TCP, TLS for https, and any
//!    HTTP answer ([`reach`]);
//! 3. `api ...`: one authenticated call per API through the real clients with retries
//!    off ([`api`]), gateway codes mapped to causes ([`diagnose`]);
//! 4. `kafka ...`: metadata, topics present, their `cleanup.policy`, and a test produce
//!    acknowledged ([`kafka`]);
//! 5. `slot token`: with `slot.enabled`, the tokens are set and not placeholders.
//!
//! Exit code 0 when no check failed, else 1 — an unreadable or invalid config included:
//! here it is a failed check, not a usage error (clap's own usage errors still exit 2).
//! `--json` prints `[{check, status, ok, detail, fix}]` instead, `ok` being `null` for a
//! skipped check.

mod api;
mod diagnose;
mod kafka;
mod reach;

use std::{path::PathBuf, process::ExitCode, time::Duration};

use clap::Args;
use secrecy::{ExposeSecret, SecretString};
use serde::Serialize;

use crate::{
    config::{self, Config, ConfigError},
    sources::{gse::GseApi, inventory::SourceKind},
};

#[derive(Args, Debug)]
pub struct DoctorArgs {
    /// TOML config file (the service's); every key can be overridden as
    /// AGENTWATCH__SECTION__KEY, exactly as for `run`.
    #[arg(long, short, env = "AGENTWATCH_CONFIG")]
    pub config: Option<PathBuf>,
    /// Print a JSON array `[{check, status, ok, detail, fix}]` on stdout instead of text.
    #[arg(long)]
    pub json: bool,
    /// Limit of each network step: DNS, connect, one API call, Kafka metadata, the test
    /// produce.
    #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
    pub timeout: Duration,
    /// Do not produce the test record to the events topic (the check is skipped).
    #[arg(long)]
    pub skip_produce: bool,
}

/// How one check ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    Ok,
    Fail,
    Skip,
}

/// One line of the report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Check {
    /// Stable name, e.g. `api gse list_agent_state`, `kafka topics`.
    pub check: String,
    pub outcome: Outcome,
    /// What was found.
    pub detail: String,
    /// What to do about it; set exactly when the check failed.
    pub fix: Option<String>,
}

impl Check {
    pub fn ok(check: impl Into<String>, detail: impl Into<String>) -> Check {
        Check {
            check: check.into(),
            outcome: Outcome::Ok,
            detail: detail.into(),
            fix: None,
        }
    }

    pub fn fail(
        check: impl Into<String>,
        detail: impl Into<String>,
        fix: impl Into<String>,
    ) -> Check {
        Check {
            check: check.into(),
            outcome: Outcome::Fail,
            detail: detail.into(),
            fix: Some(fix.into()),
        }
    }

    pub fn skip(check: impl Into<String>, why: impl Into<String>) -> Check {
        Check {
            check: check.into(),
            outcome: Outcome::Skip,
            detail: why.into(),
            fix: None,
        }
    }

    pub fn failed(&self) -> bool {
        self.outcome == Outcome::Fail
    }

    fn mark(&self) -> &'static str {
        match self.outcome {
            Outcome::Ok => "✔",
            Outcome::Fail => "✘",
            Outcome::Skip => "-",
        }
    }

    /// `✘ name: detail` and, when failed, an indented `fix:` line. Multi-line details
    /// (every bad config field) stay indented under their check.
    pub fn render(&self) -> String {
        let mut out = format!(
            "{} {}: {}\n",
            self.mark(),
            self.check,
            self.detail.replace('\n', "\n    ")
        );
        if let Some(fix) = &self.fix {
            out.push_str(&format!("    fix: {}\n", fix.replace('\n', "\n         ")));
        }
        out
    }
}

/// The `--json` form of a check.
#[derive(Serialize)]
struct JsonCheck<'a> {
    check: &'a str,
    status: Outcome,
    /// `true` passed, `false` failed, `null` skipped.
    ok: Option<bool>,
    detail: &'a str,
    fix: Option<&'a str>,
}

impl<'a> From<&'a Check> for JsonCheck<'a> {
    fn from(c: &'a Check) -> Self {
        JsonCheck {
            check: &c.check,
            status: c.outcome,
            ok: match c.outcome {
                Outcome::Ok => Some(true),
                Outcome::Fail => Some(false),
                Outcome::Skip => None,
            },
            detail: &c.detail,
            fix: c.fix.as_deref(),
        }
    }
}

/// What a run of the doctor needs besides the config.
#[derive(Debug, Clone, Copy)]
pub struct Options {
    pub timeout: Duration,
    pub produce: bool,
}

/// Runs every check and prints the report; returns the exit code.
pub async fn run(args: DoctorArgs) -> ExitCode {
    let opts = Options {
        timeout: args.timeout,
        produce: !args.skip_produce,
    };
    let loaded = config::load(args.config.as_deref(), std::env::vars());
    let name = args.config.as_ref().map_or_else(
        || "<defaults + environment>".to_owned(),
        |p| p.display().to_string(),
    );
    let checks = run_checks(&name, loaded, opts).await;
    if args.json {
        let all: Vec<JsonCheck> = checks.iter().map(JsonCheck::from).collect();
        println!(
            "{}",
            serde_json::to_string_pretty(&all).unwrap_or_else(|_| "[]".to_owned())
        );
    } else {
        for c in &checks {
            print!("{}", c.render());
        }
        println!("{}", summary(&checks));
    }
    if checks.iter().any(Check::failed) {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    }
}

fn summary(checks: &[Check]) -> String {
    let count = |o| checks.iter().filter(|c| c.outcome == o).count();
    let failed = count(Outcome::Fail);
    let verdict = if failed == 0 {
        "agentwatch can run with this config"
    } else {
        "fix the ✘ lines, top first: later checks often fail because of earlier ones"
    };
    format!(
        "{} ok, {failed} failed, {} skipped: {verdict}",
        count(Outcome::Ok),
        count(Outcome::Skip)
    )
}

/// Every check, in order, for the config as loaded from `name`.
pub async fn run_checks(
    name: &str,
    loaded: Result<Config, ConfigError>,
    opts: Options,
) -> Vec<Check> {
    let cfg = match loaded {
        Ok(cfg) => cfg,
        Err(e) => {
            let mut checks = vec![config_failure(name, &e)];
            for later in ["reach", "api", "kafka", "slot token"] {
                checks.push(Check::skip(later, "no valid config"));
            }
            return checks;
        }
    };
    let mut checks = vec![Check::ok("config", config_summary(name, &cfg))];

    let mut reachable = Vec::new();
    for (key, url) in upstreams(&cfg) {
        let check = reach::reach(key, &url, &cfg.bk.tls, opts.timeout).await;
        if !check.failed() {
            reachable.push(key);
        }
        checks.push(check);
    }
    checks.extend(api::checks(&cfg, &reachable, opts.timeout).await);
    checks.extend(kafka::checks(&cfg, opts).await);
    checks.push(slot_check(&cfg));
    checks
}

fn config_failure(name: &str, e: &ConfigError) -> Check {
    let fix = match e {
        ConfigError::Read { .. } => {
            "check the path given with --config (or AGENTWATCH_CONFIG) and that this user \
             may read it"
        }
        ConfigError::Syntax { .. } => "correct the TOML syntax at the position shown",
        ConfigError::Invalid { .. } => {
            "correct each field listed (the rules are those of `agentwatch check-config`; \
             agentwatch.example.toml is annotated); secrets can also come from \
             AGENTWATCH__BK__APP_SECRET or bk.app_secret_file"
        }
    };
    Check::fail("config", format!("{name}: {e}"), fix)
}

fn config_summary(name: &str, cfg: &Config) -> String {
    let mut parts = vec![
        format!("gse.api {}", cfg.gse.api.label()),
        format!("inventory {}", cfg.inventory.source.label()),
    ];
    if cfg.nodeman.plugins {
        parts.push("plugins on".to_owned());
    }
    if cfg.slot.enabled {
        parts.push("slot receiver on".to_owned());
    }
    format!("{name} is valid ({})", parts.join(", "))
}

/// The upstream base URLs this config uses, by config key.
pub(crate) fn upstreams(cfg: &Config) -> Vec<(&'static str, String)> {
    let mut out = Vec::new();
    let v2 = matches!(cfg.gse.api, GseApi::V2 | GseApi::Auto)
        // Slot replies go through GSE 2.0 dispatch_message even with gse.api = "v1".
        || (cfg.slot.enabled && !cfg.gse.base_url.is_empty());
    if v2 {
        out.push(("gse.base_url", cfg.gse.base_url.clone()));
    }
    if matches!(cfg.gse.api, GseApi::V1 | GseApi::Auto) {
        out.push(("gse.esb_base_url", cfg.gse.esb_base_url.clone()));
    }
    if cfg.inventory.source == SourceKind::Nodeman || cfg.nodeman.plugins {
        out.push(("nodeman.base_url", cfg.nodeman.base_url.clone()));
    }
    if cfg.inventory.source == SourceKind::Cmdb {
        out.push(("cmdb.base_url", cfg.cmdb.base_url.clone()));
    }
    out
}

/// Values people leave in place of a real secret. Checked case-insensitively as
/// substrings; a secret made of one repeated character counts too.
const PLACEHOLDERS: &[&str] = &[
    "change-me",
    "changeme",
    "change_me",
    "example",
    "placeholder",
    "replace-me",
    "replaceme",
    "your-token",
    "your_token",
];

/// Whether `secret` looks like an example value rather than a real secret.
pub(crate) fn is_placeholder(secret: &str) -> bool {
    let lower = secret.trim().to_lowercase();
    let mut chars = lower.chars();
    let repeated = chars.next().is_some_and(|first| chars.all(|c| c == first));
    repeated || PLACEHOLDERS.iter().any(|p| lower.contains(p))
}

fn slot_check(cfg: &Config) -> Check {
    const NAME: &str = "slot token";
    let slot = &cfg.slot;
    if !slot.enabled {
        return Check::skip(NAME, "slot.enabled = false: the slot receiver is off");
    }
    let mut problems = Vec::new();
    let mut describe = |key: &str, value: &Option<SecretString>| match value {
        None => problems.push(format!("{key} is not set")),
        // Never print the value, not even part of it.
        Some(s) if is_placeholder(s.expose_secret()) => {
            problems.push(format!("{key} is an example value"))
        }
        Some(_) => {}
    };
    describe("slot.token", &slot.token);
    describe("slot.dispatch_token", &slot.dispatch_token);
    if slot.slot_id.is_none() {
        problems.push("slot.slot_id is not set".to_owned());
    }
    if problems.is_empty() {
        let len = slot.token.as_ref().map_or(0, |t| t.expose_secret().len());
        return Check::ok(
            NAME,
            format!(
                "slot.token set ({len} characters, expected in header {}), slot.slot_id {}, \
                 slot.dispatch_token set",
                slot.token_header,
                slot.slot_id.unwrap_or_default()
            ),
        );
    }
    Check::fail(
        NAME,
        problems.join("; "),
        format!(
            "set slot.token to a random secret of at least {} characters (e.g. `openssl rand \
             -hex 24`), through slot.token_file or AGENTWATCH__SLOT__TOKEN, and give GSE the \
             same value in the {} header; slot.slot_id and slot.dispatch_token are the slot id \
             and token GSE issued for dispatch_message (bk-monitor's GSE_SLOT_ID / \
             GSE_SLOT_TOKEN)",
            crate::slot::MIN_TOKEN_LEN,
            slot.token_header
        ),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doctor_renders_a_failed_check_with_its_fix_under_it() {
        let c = Check::fail("kafka topics", "missing: a", "create it\nthen retry");
        assert_eq!(
            c.render(),
            "✘ kafka topics: missing: a\n    fix: create it\n         then retry\n"
        );
        assert_eq!(Check::ok("config", "fine").render(), "✔ config: fine\n");
        assert_eq!(
            Check::skip("slot token", "off").render(),
            "- slot token: off\n"
        );
    }

    #[test]
    fn doctor_json_has_ok_null_for_skipped_checks() {
        let all = [
            Check::ok("a", "x"),
            Check::fail("b", "y", "z"),
            Check::skip("c", "w"),
        ];
        let json: Vec<JsonCheck> = all.iter().map(JsonCheck::from).collect();
        let v = serde_json::to_value(&json).unwrap();
        assert_eq!(v[0]["ok"], true);
        assert_eq!(v[1]["ok"], false);
        assert_eq!(v[1]["fix"], "z");
        assert!(v[2]["ok"].is_null());
        assert_eq!(v[2]["status"], "skip");
    }

    #[test]
    fn doctor_recognises_placeholder_secrets() {
        for s in [
            "change-me",
            "CHANGEME-please",
            "an-example-token",
            "0000000000000000",
        ] {
            assert!(is_placeholder(s), "{s}");
        }
        assert!(!is_placeholder("9f2c1d7be04a4c55a1e0c3b8d7f61a2e"));
    }

    #[test]
    fn doctor_lists_the_upstreams_the_config_uses() {
        let mut cfg = Config::default();
        cfg.gse.base_url = "http://gw/api/bk-gse/prod/api/v2/".into();
        cfg.nodeman.base_url = "http://gw/api/bk-nodeman/prod/".into();
        let keys: Vec<_> = upstreams(&cfg).into_iter().map(|(k, _)| k).collect();
        assert_eq!(keys, ["gse.base_url", "nodeman.base_url"]);
        cfg.gse.api = GseApi::Auto;
        cfg.inventory.source = SourceKind::Cmdb;
        let keys: Vec<_> = upstreams(&cfg).into_iter().map(|(k, _)| k).collect();
        assert_eq!(keys, ["gse.base_url", "gse.esb_base_url", "cmdb.base_url"]);
    }

    #[test]
    fn doctor_slot_check_never_prints_the_token() {
        let mut cfg = Config::default();
        cfg.slot.enabled = true;
        cfg.slot.token = Some(SecretString::from("change-me-change-me".to_owned()));
        cfg.slot.dispatch_token = Some(SecretString::from("d1s9a7c3h".to_owned()));
        let c = slot_check(&cfg);
        assert!(c.failed());
        assert!(
            c.detail.contains("slot.token is an example value"),
            "{}",
            c.detail
        );
        assert!(c.detail.contains("slot.slot_id is not set"), "{}", c.detail);
        assert!(!c.render().contains("change-me-change-me"));
        cfg.slot.enabled = false;
        assert_eq!(slot_check(&cfg).outcome, Outcome::Skip);
    }
}
