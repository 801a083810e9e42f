//! `[inventory]`: where the list of hosts comes from.

use std::{path::PathBuf, time::Duration};

use serde::{Deserialize, Serialize};

use crate::config::FieldErrors;

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum SourceKind {
    /// NodeMan `api/host/search/` (`[nodeman]`).
    #[default]
    Nodeman,
    /// CMDB `list_hosts_without_biz` / per-business `list_biz_hosts` (`[cmdb]`).
    Cmdb,
    /// A static YAML or CSV host list (`inventory.file`), reloaded when it changes.
    File,
}

impl SourceKind {
    pub fn label(self) -> &'static str {
        match self {
            SourceKind::Nodeman => "nodeman",
            SourceKind::Cmdb => "cmdb",
            SourceKind::File => "file",
        }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct InventoryConfig {
    /// "nodeman" (default), "cmdb" or "file".
    #[serde(default)]
    pub source: SourceKind,
    /// For `source = "file"`: a `.yaml`/`.yml` or `.csv` host list. Each host has an
    /// `agent_id`, or `cloud_id` + `ip`; optionally `host_id`, `biz_id`, `os_type`.
    #[serde(default)]
    pub file: Option<PathBuf>,
    /// How often the file's modification time is checked; a changed file is reloaded
    /// at the next sweep.
    #[serde(default = "default_file_check", with = "humantime_serde")]
    pub file_check_interval: Duration,
}

fn default_file_check() -> Duration {
    Duration::from_secs(5)
}

impl Default for InventoryConfig {
    fn default() -> Self {
        InventoryConfig {
            source: SourceKind::Nodeman,
            file: None,
            file_check_interval: default_file_check(),
        }
    }
}

impl InventoryConfig {
    pub(crate) fn validate(&self, errs: &mut FieldErrors) {
        if self.source == SourceKind::File {
            match &self.file {
                None => errs.push(
                    "inventory.file",
                    "required when inventory.source = \"file\"",
                ),
                Some(p) => {
                    let ext = p.extension().and_then(|e| e.to_str()).unwrap_or("");
                    if !matches!(ext, "yaml" | "yml" | "csv") {
                        errs.push(
                            "inventory.file",
                            format!("{}: extension must be .yaml, .yml or .csv", p.display()),
                        );
                    }
                }
            }
        }
        if self.file_check_interval < Duration::from_millis(100) {
            errs.push("inventory.file_check_interval", "must be at least 100ms");
        }
    }
}
