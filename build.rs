//! Compiles `proto/` with protox (pure Rust) so `cargo build` needs no `protoc` binary.

use std::{env, path::PathBuf};

use prost::Message as _;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let proto = "proto/agentwatch/v1/events.proto";
    println!("cargo:rerun-if-changed={proto}");

    let fds = protox::compile([proto], ["proto"])?;
    let out = PathBuf::from(env::var("OUT_DIR")?);
    let descriptor_path = out.join("agentwatch_descriptor.bin");
    std::fs::write(&descriptor_path, fds.encode_to_vec())?;

    prost_build::Config::new()
        // Ordered maps: deterministic encoding and stable `changed_fields` order.
        .btree_map(["."])
        .file_descriptor_set_path(&descriptor_path)
        .compile_fds(fds)?;

    // proto3 JSON for `kafka.format = "json"`, keeping the declared snake_case names so
    // JSON and protobuf consumers read the same field names.
    pbjson_build::Builder::new()
        .register_descriptors(&std::fs::read(&descriptor_path)?)?
        .preserve_proto_field_names()
        .btree_map(["."])
        .build(&[".agentwatch"])?;
    Ok(())
}
