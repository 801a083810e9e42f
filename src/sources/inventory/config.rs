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
    /// Largest host list file read, in bytes; a larger one fails the reload naming
    /// this key (the last inventory is kept). 1 KiB to 4 GiB; the default 256 MiB is
    /// over a million hosts.
    #[serde(default = "default_max_file_bytes")]
    pub max_file_bytes: u64,
}

fn default_file_check() -> Duration {
    Duration::from_secs(5)
}

pub(crate) const DEFAULT_MAX_FILE_BYTES: u64 = 256 * 1024 * 1024;
const MAX_FILE_BYTES_LIMIT: u64 = 4 * 1024 * 1024 * 1024;

fn default_max_file_bytes() -> u64 {
    DEFAULT_MAX_FILE_BYTES
}

impl Default for InventoryConfig {
    fn default() -> Self {
        InventoryConfig {
            source: SourceKind::Nodeman,
            file: None,
            file_check_interval: default_file_check(),
            max_file_bytes: default_max_file_bytes(),
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
        if !(1024..=MAX_FILE_BYTES_LIMIT).contains(&self.max_file_bytes) {
            errs.push(
                "inventory.max_file_bytes",
                format!("must be between 1024 and {MAX_FILE_BYTES_LIMIT}"),
            );
        }
    }
}
