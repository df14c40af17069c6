//! Writes the model file atomically: readers see the old file or the new
//! one, never half of one.

use std::ffi::OsString;
use std::io::Write;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};

use prost::Message;

use super::ExportError;
use super::onnx_proto as onnx;

/// folder, fsync, rename over `path`, fsync of the folder. A reader (the
/// daemon reloading on SIGHUP) sees the old file or the new one, never half.
/// Returns the number of bytes written.
///
/// # Errors
/// [`ExportError::Io`] naming `path` when the folder is missing or not
/// writable, the disk is full, or `path` has no file name. The temporary
/// file is removed on failure.
pub fn write_model(path: &Path, model: &onnx::ModelProto) -> Result<u64, ExportError> {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let io_err = |source: std::io::Error| ExportError::Io {
        path: path.to_path_buf(),
        source,
    };
    let file_name = path.file_name().ok_or_else(|| {
        io_err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "the path has no file name",
        ))
    })?;
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let mut tmp_name = OsString::from(".");
    tmp_name.push(file_name);
    tmp_name.push(format!(
        ".tmp-{}-{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    ));
    let tmp = dir.join(tmp_name);
    let bytes = model.encode_to_vec();
    let written = (|| -> std::io::Result<()> {
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&tmp)?;
        file.write_all(&bytes)?;
        file.sync_all()?;
        drop(file);
        std::fs::rename(&tmp, path)?;
        // Make the rename itself durable; not every filesystem can sync a
        // directory, and the file is already complete, so this is best effort.
        if let Ok(d) = std::fs::File::open(dir) {
            let _ = d.sync_all();
        }
        Ok(())
    })();
    if let Err(e) = written {
        let _ = std::fs::remove_file(&tmp);
        return Err(io_err(e));
    }
    Ok(bytes.len() as u64)
}
