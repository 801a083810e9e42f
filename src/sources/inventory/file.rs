//! Static host-list inventory (YAML or CSV). Placeholder until implemented.

use std::path::PathBuf;

use super::Host;

#[derive(Debug, thiserror::Error)]
pub enum FileError {
    #[error("{path}: {detail}")]
    Invalid { path: String, detail: String },
}

pub struct FileInventory {
    path: PathBuf,
}

impl FileInventory {
    pub fn new(path: PathBuf) -> Self {
        FileInventory { path }
    }

    pub fn load(&self) -> Result<Vec<Host>, FileError> {
        Err(FileError::Invalid {
            path: self.path.display().to_string(),
            detail: "file inventory not implemented yet".to_owned(),
        })
    }

    pub fn changed(&self) -> bool {
        false
    }
}
