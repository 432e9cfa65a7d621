//! Compiles proto/ with the vendored protoc unless `$PROTOC` names another,
//! so a machine with only the Rust toolchain builds the project.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protoc = match std::env::var_os("PROTOC") {
        Some(p) => p.into(),
        None => protoc_bin_vendored::protoc_bin_path()?,
    };
    std::env::set_var("PROTOC", protoc);
    let protos = ["../../proto/raft.proto", "../../proto/admin.proto", "../../proto/echo.proto"];
    tonic_prost_build::configure().compile_protos(&protos, &["../../proto"])?;
    for p in protos {
        println!("cargo:rerun-if-changed={p}");
    }
    Ok(())
}
