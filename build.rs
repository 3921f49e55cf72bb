//! Generates the gRPC code from `proto/` without any system tool: `protox` parses the
//! protos in pure Rust (it carries the well-known types such as
//! `google/protobuf/timestamp.proto`), so a fresh machine needs neither `protoc` nor
//! `libprotobuf-dev`.
use prost::Message;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let out_dir = std::path::PathBuf::from(std::env::var("OUT_DIR")?);
    let fds = protox::compile(["ovnpeerd/v1/peering.proto"], ["proto"])?;
    // Reflection serves this set; prost-build writes it only when it runs protoc itself.
    std::fs::write(out_dir.join("ovnpeerd_descriptor.bin"), fds.encode_to_vec())?;
    tonic_prost_build::configure().compile_fds(fds)?;
    println!("cargo:rerun-if-changed=proto");
    // `sqlx::migrate!` embeds migrations/: a new file must rebuild the crate.
    println!("cargo:rerun-if-changed=migrations");
    Ok(())
}
