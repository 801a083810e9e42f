//! Command-line tools beyond `run` that share the service's config and client layer.

pub mod doctor;
pub mod gse;
pub mod tail;
