fn main() -> Result<(), Box<dyn std::error::Error>> {
    let out_dir = std::path::PathBuf::from(std::env::var("OUT_DIR")?);
    tonic_prost_build::configure()
        .file_descriptor_set_path(out_dir.join("ovnpeerd_descriptor.bin"))
        .compile_protos(&["proto/ovnpeerd/v1/peering.proto"], &["proto"])?;
    println!("cargo:rerun-if-changed=proto");
    Ok(())
}
