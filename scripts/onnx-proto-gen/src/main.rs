//! Regenerates `training/src/onnx.rs` (the prost types of the ONNX model
//! format) from `onnx.proto` next to this crate, with `protox` as the
//! protobuf compiler so no `protoc` is needed.
//!
//! Run from anywhere: `cargo run --manifest-path scripts/onnx-proto-gen/Cargo.toml`.

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};

/// Version of the `onnx` PyPI wheel that `onnx.proto` was taken from.
const ONNX_VERSION: &str = "1.23.2";

fn main() -> ExitCode {
    match run() {
        Ok(out) => {
            println!("wrote {}", out.display());
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("onnx-proto-gen: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run() -> Result<PathBuf, Box<dyn std::error::Error>> {
    let here = Path::new(env!("CARGO_MANIFEST_DIR"));
    let out_file = here.join("../../training/src/onnx.rs");
    let fds = protox::compile(["onnx.proto"], [here])?;

    let tmp = std::env::temp_dir().join(format!("onnx-proto-gen-{}", std::process::id()));
    std::fs::create_dir_all(&tmp)?;
    prost_build::Config::new().out_dir(&tmp).compile_fds(fds)?;
    let generated = std::fs::read_to_string(tmp.join("onnx.rs"))?;
    std::fs::remove_dir_all(&tmp)?;

    let header = format!(
        "//! Rust types of the ONNX model format, generated from the official `onnx.proto`\n\
         //! (proto2, from the PyPI wheel `onnx=={ONNX_VERSION}`, Apache-2.0) by\n\
         //! `scripts/onnx-proto-gen` (protox + prost-build). Do not edit by hand: rerun\n\
         //! `cargo run --manifest-path scripts/onnx-proto-gen/Cargo.toml`.\n\
         //!\n\
         //! proto2 matters: optional scalars are `Option`s, so an attribute whose value\n\
         //! is zero (e.g. `pads = 0`, `keepdims = 0`) is still written to the file.\n\
         \n\
         #![allow(clippy::all, clippy::pedantic, missing_docs, rustdoc::all)]\n\
         \n"
    );
    std::fs::write(&out_file, header + &generated)?;
    // Keep the checked-in file `cargo fmt` clean.
    let status = Command::new("rustfmt")
        .args(["--edition", "2024"])
        .arg(&out_file)
        .status()?;
    if !status.success() {
        return Err(format!("rustfmt failed on {}", out_file.display()).into());
    }
    Ok(out_file.canonicalize()?)
}
