//! Status-code names (the normalized `status` of an agent).

use std::collections::{BTreeMap, HashMap};

/// Maps raw GSE status codes to normalized names, from `gse.status_names`.
#[derive(Debug, Clone)]
pub struct StatusNames {
    names: HashMap<i32, String>,
}

/// Name of any code missing from the table.
pub const UNKNOWN: &str = "unknown";

impl StatusNames {
    /// Builds the table; keys that are not integers were rejected by config validation
    /// and are skipped here.
    pub fn from_config(table: &BTreeMap<String, String>) -> Self {
        StatusNames {
            names: table
                .iter()
                .filter_map(|(k, v)| k.parse::<i32>().ok().map(|k| (k, v.clone())))
                .collect(),
        }
    }

    pub fn name(&self, code: i32) -> &str {
        self.names.get(&code).map(String::as_str).unwrap_or(UNKNOWN)
    }

    /// Every name the table can produce (the closed label set of `agentwatch_agents`).
    pub fn all_names(&self) -> Vec<String> {
        let mut v: Vec<String> = self.names.values().cloned().collect();
        v.push(UNKNOWN.to_owned());
        v.sort();
        v.dedup();
        v
    }
}

impl Default for StatusNames {
    fn default() -> Self {
        StatusNames::from_config(&crate::sources::gse::default_status_names())
    }
}
