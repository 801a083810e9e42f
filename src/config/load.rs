//! Loading: TOML file → environment overlay → typed config → validation.
//!
//! serde stops at the first error, but operators should see every bad field at once.
//! So deserialization runs in a loop: each error is recorded with its path, the
//! offending value is removed from the tree (its default then applies), and the tree is
//! deserialized again, until it succeeds. Semantic checks (`Config::validate`) run on
//! the result and add their own errors.

use std::collections::HashSet;

use serde_path_to_error::Segment;
use toml::{Table, Value};

use super::{Config, ConfigError, FieldErrors};

/// Prefix of environment overrides: `AGENTWATCH__GSE__BATCH_SIZE=500`.
pub const ENV_PREFIX: &str = "AGENTWATCH__";

/// Loads `path` (or only defaults + environment when `None`) with overrides from `env`.
pub fn load(
    path: Option<&std::path::Path>,
    env: impl IntoIterator<Item = (String, String)>,
) -> Result<Config, ConfigError> {
    let (text, name) = match path {
        Some(p) => (
            std::fs::read_to_string(p).map_err(|source| ConfigError::Read {
                path: p.display().to_string(),
                source,
            })?,
            p.display().to_string(),
        ),
        None => (String::new(), "<defaults>".to_owned()),
    };
    load_str(&text, &name, env)
}

/// Like [`load`], from TOML text; `name` labels errors.
pub fn load_str(
    text: &str,
    name: &str,
    env: impl IntoIterator<Item = (String, String)>,
) -> Result<Config, ConfigError> {
    let mut table: Table = toml::from_str(text).map_err(|e| ConfigError::Syntax {
        path: name.to_owned(),
        message: e.to_string(),
    })?;
    let mut errs = FieldErrors::default();
    let env_paths = overlay_env(&mut table, env, &mut errs);

    let mut config = None;
    // Each round removes one offending value, so the loop ends; the bound is a guard.
    for _ in 0..256 {
        let de = Value::Table(table.clone());
        match serde_path_to_error::deserialize::<_, Config>(de) {
            Ok(c) => {
                config = Some(c);
                break;
            }
            Err(e) => {
                let segments: Vec<String> = e.path().iter().filter_map(segment_key).collect();
                let dotted = segments.join(".");
                let message = e.inner().to_string();
                // An env value that looked like a number/bool but the field wants a
                // string: retry it as the raw string before calling it an error.
                if env_paths.contains(&dotted) && stringify_at(&mut table, &segments) {
                    continue;
                }
                let shown = if env_paths.contains(&dotted) {
                    format!("{dotted} (from {})", env_name(&segments))
                } else {
                    dotted.clone()
                };
                errs.push(shown, clean_message(&message));
                if !remove_at(&mut table, &segments, &message) {
                    // Nothing left to remove: report what we have.
                    break;
                }
            }
        }
    }
    let Some(mut config) = config else {
        return Err(ConfigError::Invalid { errors: errs });
    };
    if let Err(more) = config.validate() {
        errs.0.extend(more.0);
    }
    if errs.is_empty() {
        Ok(config)
    } else {
        Err(ConfigError::Invalid { errors: errs })
    }
}

fn segment_key(s: &Segment) -> Option<String> {
    match s {
        Segment::Map { key } => Some(key.clone()),
        Segment::Seq { index } => Some(index.to_string()),
        Segment::Enum { variant } => Some(variant.clone()),
        Segment::Unknown => None,
    }
}

fn env_name(segments: &[String]) -> String {
    format!("{ENV_PREFIX}{}", segments.join("__").to_uppercase())
}

/// serde's unknown-field message lists every expected field; keep it, it helps.
fn clean_message(m: &str) -> String {
    m.trim().to_owned()
}

/// Applies `AGENTWATCH__A__B=value` as `a.b = value`; returns the dotted paths set.
fn overlay_env(
    table: &mut Table,
    env: impl IntoIterator<Item = (String, String)>,
    errs: &mut FieldErrors,
) -> HashSet<String> {
    let mut set = HashSet::new();
    let mut vars: Vec<(String, String)> = env
        .into_iter()
        .filter(|(k, _)| k.starts_with(ENV_PREFIX))
        .collect();
    // Deterministic order so a conflict is reported the same way every time.
    vars.sort();
    for (key, raw) in vars {
        let segments: Vec<String> = key[ENV_PREFIX.len()..]
            .split("__")
            .map(|s| s.to_lowercase())
            .collect();
        if segments.iter().any(|s| s.is_empty()) {
            errs.push(key.clone(), "malformed override name (empty segment)");
            continue;
        }
        let value = parse_env_value(&raw);
        if !insert_at(table, &segments, value) {
            errs.push(
                segments.join("."),
                format!("{key} overrides a value that is not a table"),
            );
            continue;
        }
        set.insert(segments.join("."));
    }
    set
}

/// Environment values are TOML scalars/arrays when they parse as one (`500`, `true`,
/// `["a", "b"]`), else plain strings.
fn parse_env_value(raw: &str) -> Value {
    match toml::from_str::<Table>(&format!("v = {raw}")) {
        Ok(mut t) => t
            .remove("v")
            .unwrap_or_else(|| Value::String(raw.to_owned())),
        Err(_) => Value::String(raw.to_owned()),
    }
}

fn insert_at(table: &mut Table, segments: &[String], value: Value) -> bool {
    let Some((last, parents)) = segments.split_last() else {
        return false;
    };
    let mut cur = table;
    for seg in parents {
        let entry = cur
            .entry(seg.clone())
            .or_insert_with(|| Value::Table(Table::new()));
        match entry {
            Value::Table(t) => cur = t,
            _ => return false,
        }
    }
    cur.insert(last.clone(), value);
    true
}

fn table_at<'a>(table: &'a mut Table, segments: &[String]) -> Option<&'a mut Table> {
    let mut cur = table;
    for seg in segments {
        match cur.get_mut(seg) {
            Some(Value::Table(t)) => cur = t,
            _ => return None,
        }
    }
    Some(cur)
}

fn stringify_at(table: &mut Table, segments: &[String]) -> bool {
    let Some((last, parents)) = segments.split_last() else {
        return false;
    };
    let Some(t) = table_at(table, parents) else {
        return false;
    };
    match t.get_mut(last) {
        Some(v) if !v.is_str() && !v.is_table() => {
            // TOML's display of a scalar is its literal, e.g. 123 or true.
            let s = v.to_string();
            *v = Value::String(s);
            true
        }
        _ => false,
    }
}

/// Removes the value an error points at. For an unknown field serde reports the
/// enclosing table's path, so the field name is taken from the message (serde's
/// `unknown field `x`` wording is stable and the only place the name is given).
fn remove_at(table: &mut Table, segments: &[String], message: &str) -> bool {
    if let Some(field) = unknown_field_name(message) {
        if let Some(t) = table_at(table, segments) {
            if t.remove(field).is_some() {
                return true;
            }
        }
    }
    let Some((last, parents)) = segments.split_last() else {
        return false;
    };
    match table_at(table, parents) {
        Some(t) => t.remove(last).is_some(),
        None => false,
    }
}

fn unknown_field_name(message: &str) -> Option<&str> {
    let rest = message.strip_prefix("unknown field `")?;
    rest.split('`').next()
}
