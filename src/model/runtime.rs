//! Loading the ONNX Runtime shared library once per process (the config's
//! path, `ORT_DYLIB_PATH`, or a search), the environment every session
//! shares, and the options a model is opened with.

use std::ffi::OsString;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use ort::environment::Environment;
use serde::{Deserialize, Serialize};

use super::{ExecutionProvider, RuntimeError};

/// File name of the ONNX Runtime library this build is tested with; the
/// development copy lives in `<repo>/.ort/` (see `scripts/setup.sh`).
pub const DEV_LIBRARY_FILE: &str = "libonnxruntime.so.1.31.1";

/// The execution provider a session actually got.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ActiveProvider {
    Cpu,
    Cuda,
}

impl ActiveProvider {
    /// Lower-case name, as used in logs and metrics labels.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Cpu => "cpu",
            Self::Cuda => "cuda",
        }
    }
}

impl fmt::Display for ActiveProvider {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How to open a model.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuntimeOptions {
    /// ONNX Runtime library; `None` searches (see [`init_runtime`]).
    pub library_path: Option<PathBuf>,
    pub execution_provider: ExecutionProvider,
    /// Intra-op threads of the session; 0 lets ONNX Runtime choose (one per
    /// core). One is best on gateways (measured: more threads doubled p99).
    pub intra_threads: usize,
}

impl Default for RuntimeOptions {
    fn default() -> Self {
        Self {
            library_path: None,
            execution_provider: ExecutionProvider::Auto,
            intra_threads: 1,
        }
    }
}

impl RuntimeOptions {
    /// CPU only, one thread, library searched: what tools and tests use.
    pub fn cpu() -> Self {
        Self {
            execution_provider: ExecutionProvider::Cpu,
            ..Self::default()
        }
    }
}

/// The process-wide ONNX Runtime: which library was loaded, and the one
/// environment ort allows per process (kept alive here for good).
struct Runtime {
    library: PathBuf,
    env: Environment,
}

static RUNTIME: Mutex<Option<Runtime>> = Mutex::new(None);

/// Loads the ONNX Runtime library and creates the process-wide environment.
/// Returns the library path in use.
///
/// Idempotent: once a library is loaded, later calls return its path (a
/// library cannot be unloaded or swapped within a process).
///
/// Where the library is looked for, first match wins:
/// 1. `library_path` (from the config) — only that file;
/// 2. else `ORT_DYLIB_PATH` — only that file;
/// 3. else `libonnxruntime.so*` next to the running executable, then in its
///    parent folder (so test binaries in `target/*/deps` find one in
///    `target/*`), then the development copy `<repo>/.ort/libonnxruntime.so.1.31.1`.
///
/// An explicit path that fails is an error, never silently replaced by
/// another library.
///
/// # Errors
/// [`RuntimeError::Library`] naming every path tried and why it failed
/// (missing, not a loadable library, not ONNX Runtime, too old);
/// [`RuntimeError::Environment`] if ONNX Runtime cannot create its environment.
pub fn init_runtime(library_path: Option<&Path>) -> Result<PathBuf, RuntimeError> {
    with_runtime(library_path, |rt| rt.library.clone())
}

/// The process-wide environment sessions are built in, loading the library
/// first when no one has (see [`init_runtime`]).
pub(super) fn environment(library_path: Option<&Path>) -> Result<Environment, RuntimeError> {
    with_runtime(library_path, |rt| rt.env.clone())
}

fn with_runtime<T>(
    library_path: Option<&Path>,
    f: impl FnOnce(&Runtime) -> T,
) -> Result<T, RuntimeError> {
    // A poisoned lock only means another thread panicked while holding it;
    // the Option inside is still either fully set or None.
    let mut guard = RUNTIME.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(rt) = guard.as_ref() {
        if let Some(asked) = library_path
            && !same_file(asked, &rt.library)
        {
            tracing::warn!(
                asked = %asked.display(),
                loaded = %rt.library.display(),
                "ONNX Runtime is already loaded from another file; keeping it"
            );
        }
        return Ok(f(rt));
    }
    let candidates = library_candidates(
        library_path,
        std::env::var_os("ORT_DYLIB_PATH"),
        std::env::current_exe().ok().as_deref(),
        &dev_library_path(),
    );
    let mut tried = Vec::new();
    for candidate in candidates {
        match load_library(&candidate) {
            Ok(builder) => {
                let env = builder
                    .with_name("anomalyd")
                    .with_telemetry(false)
                    .build()
                    .map_err(|e| RuntimeError::Environment {
                        library: candidate.clone(),
                        message: e.to_string(),
                    })?;
                tracing::info!(
                    library = %candidate.display(),
                    telemetry = if super::telemetry::telemetry_off() { "off" } else { "on" },
                    "ONNX Runtime loaded"
                );
                let rt = Runtime {
                    library: candidate,
                    env,
                };
                let out = f(&rt);
                *guard = Some(rt);
                return Ok(out);
            }
            Err(why) => tried.push((candidate, why)),
        }
    }
    Err(RuntimeError::Library { tried })
}

fn same_file(a: &Path, b: &Path) -> bool {
    match (a.canonicalize(), b.canonicalize()) {
        (Ok(a), Ok(b)) => a == b,
        _ => a == b,
    }
}

fn dev_library_path() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join(".ort")
        .join(DEV_LIBRARY_FILE)
}

/// Candidate library files in the order they are tried (see [`init_runtime`]).
fn library_candidates(
    explicit: Option<&Path>,
    env_path: Option<OsString>,
    current_exe: Option<&Path>,
    dev_path: &Path,
) -> Vec<PathBuf> {
    if let Some(p) = explicit {
        return vec![absolute(p)];
    }
    if let Some(p) = env_path.filter(|p| !p.is_empty()) {
        return vec![absolute(Path::new(&p))];
    }
    let mut out = Vec::new();
    if let Some(dir) = current_exe.and_then(Path::parent) {
        for d in [Some(dir), dir.parent()].into_iter().flatten() {
            out.extend(libraries_in(d));
        }
    }
    out.push(dev_path.to_path_buf());
    out
}

/// `libonnxruntime.so*` files in `dir`, sorted by name (so `libonnxruntime.so`
/// comes before its versioned names).
fn libraries_in(dir: &Path) -> Vec<PathBuf> {
    let prefix = format!(
        "{}onnxruntime{}",
        std::env::consts::DLL_PREFIX,
        std::env::consts::DLL_SUFFIX
    );
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut found: Vec<PathBuf> = entries
        .filter_map(Result::ok)
        .filter(|e| {
            e.file_name()
                .to_str()
                .is_some_and(|n| n.starts_with(&prefix))
        })
        .map(|e| e.path())
        .collect();
    found.sort();
    found
}

fn absolute(p: &Path) -> PathBuf {
    // ort resolves a relative path against the executable's folder (and
    // panics if it cannot find the executable): hand it absolute paths only.
    std::path::absolute(p).unwrap_or_else(|_| p.to_path_buf())
}

fn load_library(path: &Path) -> Result<ort::environment::EnvironmentBuilder, String> {
    match std::fs::metadata(path) {
        Err(e) => return Err(e.to_string()),
        Ok(m) if !m.is_file() => return Err("not a file".to_owned()),
        Ok(_) => {}
    }
    ort::init_from(path).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{LoadedModel, read_metadata};

    #[test]
    fn explicit_path_and_env_are_tried_alone() {
        let dev = Path::new("/dev/null/lib.so");
        let c = library_candidates(
            Some(Path::new("/opt/ort/libonnxruntime.so")),
            Some("/env/libonnxruntime.so".into()),
            Some(Path::new("/usr/bin/anomalyd")),
            dev,
        );
        assert_eq!(c, [PathBuf::from("/opt/ort/libonnxruntime.so")]);

        let c = library_candidates(
            None,
            Some("/env/libonnxruntime.so".into()),
            Some(Path::new("/usr/bin/anomalyd")),
            dev,
        );
        assert_eq!(c, [PathBuf::from("/env/libonnxruntime.so")]);
    }

    #[test]
    fn relative_paths_become_absolute() {
        let c = library_candidates(Some(Path::new("lib/x.so")), None, None, Path::new("/d"));
        assert!(c[0].is_absolute(), "{c:?}");
        assert!(c[0].ends_with("lib/x.so"));
    }

    #[test]
    fn searches_next_to_the_executable_then_its_parent_then_dev_copy() {
        let root = tempfile::tempdir().unwrap();
        let deps = root.path().join("debug/deps");
        std::fs::create_dir_all(&deps).unwrap();
        for name in [
            "debug/deps/libonnxruntime.so.1.31.1",
            "debug/libonnxruntime.so",
            "debug/libonnxruntime.so.1",
            "debug/libonnxruntime_providers_shared.so",
            "debug/unrelated.so",
        ] {
            std::fs::write(root.path().join(name), b"").unwrap();
        }
        let exe = deps.join("anomalyd-0123");
        let dev = Path::new("/repo/.ort/libonnxruntime.so.1.31.1");
        // An empty ORT_DYLIB_PATH counts as unset.
        let c = library_candidates(None, Some(OsString::new()), Some(&exe), dev);
        let d = root.path();
        assert_eq!(
            c,
            [
                d.join("debug/deps/libonnxruntime.so.1.31.1"),
                d.join("debug/libonnxruntime.so"),
                d.join("debug/libonnxruntime.so.1"),
                dev.to_path_buf(),
            ]
        );
        assert_eq!(
            library_candidates(None, None, None, dev),
            [dev.to_path_buf()]
        );
    }

    #[test]
    fn dev_copy_is_under_the_repository() {
        assert!(dev_library_path().ends_with(".ort/libonnxruntime.so.1.31.1"));
    }

    /// The only test in this crate's unit tests that loads ONNX Runtime:
    /// a library stays loaded for the whole process, so the failure cases
    /// must run before the success, in one test.
    #[test]
    fn runtime_loading_fails_cleanly_then_succeeds_once() {
        let dir = tempfile::tempdir().unwrap();
        // If another test of this binary loaded the runtime first, init
        // returns that library instead of failing; accept only that.
        let expect_failure = |asked: &Path, want: &[&str]| match init_runtime(Some(asked)) {
            Err(err) => {
                assert!(matches!(err, RuntimeError::Library { .. }), "{err}");
                let msg = err.to_string();
                assert!(msg.contains(&asked.display().to_string()), "{msg}");
                for w in want {
                    assert!(msg.contains(w), "{msg}");
                }
            }
            Ok(loaded) => assert!(!same_file(&loaded, asked)),
        };
        let missing = dir.path().join("nope/libonnxruntime.so");
        expect_failure(&missing, &["No such file"]);
        let garbage = dir.path().join("libonnxruntime.so.garbage");
        std::fs::write(&garbage, b"this is not an ELF file").unwrap();
        expect_failure(&garbage, &["failed to load"]);
        // A real shared library that is not ONNX Runtime.
        if let Some(libm) = ["/lib/x86_64-linux-gnu/libm.so.6", "/lib64/libm.so.6"]
            .into_iter()
            .map(Path::new)
            .find(|p| p.exists())
        {
            expect_failure(libm, &["OrtGetApiBase"]);
        }

        let real = std::env::var_os("ORT_DYLIB_PATH")
            .map(PathBuf::from)
            .unwrap_or_else(dev_library_path);
        let used = init_runtime(Some(&real)).expect("ONNX Runtime (run scripts/setup.sh)");
        // Idempotent, also when asked for another file.
        assert_eq!(init_runtime(Some(&garbage)).unwrap(), used);
        assert_eq!(init_runtime(None).unwrap(), used);

        // Model errors name the file.
        let err = read_metadata(&dir.path().join("m.onnx")).unwrap_err();
        assert!(matches!(err, RuntimeError::Read { .. }), "{err}");
        assert!(err.to_string().contains("m.onnx"), "{err}");
        let err =
            LoadedModel::load(&dir.path().join("x.onnx"), &RuntimeOptions::cpu()).unwrap_err();
        assert!(err.to_string().contains("x.onnx"), "{err}");
    }
}
