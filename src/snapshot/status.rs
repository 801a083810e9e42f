//! Status-code names (the normalized `status` of an agent).

use std::collections::{BTreeMap, HashMap};

/// Maps raw GSE status codes to normalized names, from `gse.status_names`.
#[derive(Debug, Clone)]
pub struct StatusNames {
    names: HashMap<i32, String>,
    /// The same for codes in `DENSE_MIN..DENSE_MIN + len`: a sweep looks a name up
    /// once per agent, and an array index beats hashing.
    dense: Vec<Option<String>>,
}

const DENSE_MIN: i32 = -8;
const DENSE_LEN: i32 = 32;

/// Name of any code missing from the table.
pub const UNKNOWN: &str = "unknown";

impl StatusNames {
    /// Builds the table; keys that are not integers were rejected by config validation
    /// and are skipped here.
    pub fn from_config(table: &BTreeMap<String, String>) -> Self {
        let names: HashMap<i32, String> = table
            .iter()
            .filter_map(|(k, v)| k.parse::<i32>().ok().map(|k| (k, v.clone())))
            .collect();
        let dense = (DENSE_MIN..DENSE_MIN + DENSE_LEN)
            .map(|c| names.get(&c).cloned())
            .collect();
        StatusNames { names, dense }
    }

    pub fn name(&self, code: i32) -> &str {
        let slot = code
            .checked_sub(DENSE_MIN)
            .and_then(|i| usize::try_from(i).ok())
            .and_then(|i| self.dense.get(i));
        match slot {
            Some(name) => name.as_deref().unwrap_or(UNKNOWN),
            None => self.names.get(&code).map(String::as_str).unwrap_or(UNKNOWN),
        }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_come_from_the_table_inside_and_outside_the_dense_range() {
        let mut t = crate::sources::gse::default_status_names();
        t.insert("1000".into(), "custom".into());
        let n = StatusNames::from_config(&t);
        assert_eq!(n.name(2), "running");
        assert_eq!(n.name(-3), "offline");
        assert_eq!(n.name(1000), "custom");
        assert_eq!(n.name(99), UNKNOWN);
        assert_eq!(n.name(i32::MIN), UNKNOWN);
        assert_eq!(n.name(i32::MAX), UNKNOWN);
    }
}
