//! Generates the Rust code of the protocol with a vendored protoc, so
//! building needs no protoc on the machine.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protoc = protoc_bin_vendored::protoc_bin_path()?;
    // SAFETY: build scripts are single-threaded; prost-build reads PROTOC.
    unsafe { std::env::set_var("PROTOC", protoc) };
    let protos = [
        "proto/kuberaft/raft/v1/raft.proto",
        "proto/kuberaft/kv/v1/kv.proto",
        "proto/kuberaft/admin/v1/admin.proto",
    ];
    let out = std::path::PathBuf::from(std::env::var("OUT_DIR")?);
    tonic_prost_build::configure()
        .file_descriptor_set_path(out.join("kuberaft_descriptor.bin"))
        .bytes(".kuberaft.raft.v1.Entry.data")
        .bytes(".kuberaft.raft.v1.InstallSnapshotChunk.data")
        .compile_protos(&protos, &["proto"])?;
    for p in protos {
        println!("cargo:rerun-if-changed={p}");
    }
    Ok(())
}
