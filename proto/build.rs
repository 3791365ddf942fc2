//! Compiles every `.proto` under `popug/` with protox (pure Rust: no system `protoc`),
//! writes the descriptor set for server reflection and generates the tonic code.

use std::path::{Path, PathBuf};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut files = Vec::new();
    collect_protos(&root.join("popug"), &mut files)?;
    files.sort();
    // The whole tree too, so a newly added .proto file triggers a rebuild.
    println!("cargo:rerun-if-changed={}", root.join("popug").display());
    for file in &files {
        println!("cargo:rerun-if-changed={}", file.display());
    }

    let mut compiler = protox::Compiler::new([root])?;
    compiler.include_imports(true);
    // Comments travel with the descriptors: reflection (`grpcurl describe`) shows them,
    // and the generated code carries them as docs.
    compiler.include_source_info(true);
    compiler.open_files(&files)?;
    // Encoded by protox itself: it keeps custom options (the per-RPC access policy),
    // which a round trip through prost_types would drop as unknown fields.
    let out = PathBuf::from(std::env::var("OUT_DIR")?);
    std::fs::write(
        out.join("popug_descriptor.bin"),
        compiler.encode_file_descriptor_set(),
    )?;
    let fds = compiler.file_descriptor_set();

    tonic_prost_build::configure()
        .build_server(true)
        .build_client(true)
        .bytes(".popug.events")
        .compile_fds(fds)?;
    Ok(())
}

fn collect_protos(dir: &Path, out: &mut Vec<PathBuf>) -> std::io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if path.is_dir() {
            collect_protos(&path, out)?;
        } else if path.extension().is_some_and(|e| e == "proto") {
            out.push(path);
        }
    }
    Ok(())
}
