//! Compiles `proto/cluster.proto` with the protoc binary that ships in the
//! `protoc-bin-vendored` crate, so no system protoc is needed.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protoc = protoc_bin_vendored::protoc_bin_path()?;
    // SAFETY of the environment: build scripts are single threaded.
    std::env::set_var("PROTOC", protoc);
    tonic_prost_build::configure()
        .bytes(".tern.cluster.v1.MessageBatch")
        .bytes(".tern.cluster.v1.RaftRequest")
        .bytes(".tern.cluster.v1.RaftReply")
        .compile_protos(&["../../proto/cluster.proto"], &["../../proto"])?;
    println!("cargo:rerun-if-changed=../../proto/cluster.proto");
    Ok(())
}
