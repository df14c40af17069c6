//! ONNX Runtime: loads the shared library once per process, opens a model
//! file as a session, checks the file against the model file contract
//! ([`crate::core::contract`]: names, element types and shapes of the graph's
//! input and outputs, and the metadata JSON), and scores batches of windows.
//!
//! One thread owns a [`LoadedModel`] (the daemon's inference thread, the
//! trainer's parity check, `anomalyd inspect-model`): ONNX Runtime's `run`
//! needs `&mut` access to the session.

use std::ffi::OsString;
use std::fmt;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::Mutex;

use ort::environment::Environment;
use ort::ep;
use ort::session::builder::{AutoDevicePolicy, SessionBuilder};
use ort::session::{HasSelectedOutputs, OutputSelector, RunOptions, Session};
use ort::value::{TensorElementType, TensorRef, ValueType};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::core::contract::{
    ErrorDistribution, INPUT_WINDOW, METADATA_KEY, ModelMetadata, OUTPUT_CHANNEL_ERROR,
    OUTPUT_RECONSTRUCTION, OUTPUT_SCORE,
};

/// File name of the ONNX Runtime library this build is tested with; the
/// development copy lives in `<repo>/.ort/` (see `scripts/setup.sh`).
pub const DEV_LIBRARY_FILE: &str = "libonnxruntime.so.1.31.1";

/// Errors of the runtime wrapper. Each carries the file it is about.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    #[error("cannot load the ONNX Runtime library; tried {}", format_tried(.tried))]
    Library {
        /// Every candidate path with the reason it was not used.
        tried: Vec<(PathBuf, String)>,
    },
    #[error("cannot start ONNX Runtime (library {library}): {message}")]
    Environment { library: PathBuf, message: String },
    #[error("cannot read model file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("model file {path} is not a valid ONNX model: {message}")]
    Load { path: PathBuf, message: String },
    #[error("model file {path}: {message}")]
    Provider { path: PathBuf, message: String },
    #[error("model file {path} has unusable anomalyd metadata: {message}")]
    Metadata { path: PathBuf, message: String },
    #[error("model file {path} does not match its metadata: {message}")]
    Graph { path: PathBuf, message: String },
    #[error("model {path}: bad input batch: {message}")]
    Input { path: PathBuf, message: String },
    #[error("model {path}: inference failed: {message}")]
    Run { path: PathBuf, message: String },
}

fn format_tried(tried: &[(PathBuf, String)]) -> String {
    if tried.is_empty() {
        return "no candidate paths".to_owned();
    }
    tried
        .iter()
        .map(|(p, why)| format!("{} ({why})", p.display()))
        .collect::<Vec<_>>()
        .join("; ")
}

/// Which execution provider the configuration asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ExecutionProvider {
    /// CPU only.
    Cpu,
    /// CUDA, or fail to load.
    Cuda,
    /// CUDA when it can be registered, else CPU (with a warning).
    #[default]
    Auto,
}

impl FromStr for ExecutionProvider {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "cpu" => Ok(Self::Cpu),
            "cuda" => Ok(Self::Cuda),
            "auto" => Ok(Self::Auto),
            other => Err(format!(
                "unknown execution provider {other:?} (expected cpu, cuda or auto)"
            )),
        }
    }
}

impl fmt::Display for ExecutionProvider {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Cpu => "cpu",
            Self::Cuda => "cuda",
            Self::Auto => "auto",
        })
    }
}

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
                tracing::info!(library = %candidate.display(), "ONNX Runtime loaded");
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

/// A model file opened as an ONNX Runtime session and checked against its
/// metadata. Owned by one thread.
pub struct LoadedModel {
    pub metadata: ModelMetadata,
    pub path: PathBuf,
    /// The execution provider that was registered for this session.
    pub provider: ActiveProvider,
    session: Session,
    /// Fetches only `score` and `channel_error` (the daemon's hot path).
    scores_only: RunOptions<HasSelectedOutputs>,
}

impl fmt::Debug for LoadedModel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LoadedModel")
            .field("name", &self.metadata.name)
            .field("version", &self.metadata.version)
            .field("path", &self.path)
            .field("provider", &self.provider)
            .finish_non_exhaustive()
    }
}

/// What one inference call returns, window by window.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct BatchOutput {
    /// `[batch]`: the weighted mean squared reconstruction error.
    pub score: Vec<f32>,
    /// `[batch, C]` row-major: per-channel mean squared error.
    pub channel_error: Vec<f32>,
    /// `[batch, C, T]` row-major, only from [`LoadedModel::run_with_reconstruction`].
    pub reconstruction: Option<Vec<f32>>,
}

impl LoadedModel {
    /// Opens `path`, reads its metadata and checks the graph against it.
    ///
    /// # Errors
    /// The runtime cannot be loaded ([`init_runtime`]); the file cannot be
    /// read or is not an ONNX model; its metadata is missing or invalid; its
    /// input/outputs do not match the contract (names, `float32`, shapes
    /// `[?, C, T]`, `[?]`, `[?, C]`); `Cuda` was asked for and the CUDA
    /// execution provider cannot be registered.
    pub fn load(path: &Path, opts: &RuntimeOptions) -> Result<Self, RuntimeError> {
        let env = with_runtime(opts.library_path.as_deref(), |rt| rt.env.clone())?;
        let bytes = read_model_bytes(path)?;
        let (session, provider) = open_session(&env, path, &bytes, opts)?;
        let metadata = metadata_of(&session, path)?;
        check_graph(&session, &metadata).map_err(|message| RuntimeError::Graph {
            path: path.to_path_buf(),
            message,
        })?;
        let run_err = |e: ort::Error| RuntimeError::Run {
            path: path.to_path_buf(),
            message: e.to_string(),
        };
        let scores_only = RunOptions::new().map_err(run_err)?.with_outputs(
            OutputSelector::no_default()
                .with(OUTPUT_SCORE)
                .with(OUTPUT_CHANNEL_ERROR),
        );
        tracing::info!(
            path = %path.display(),
            model = %metadata.name,
            version = %metadata.version,
            provider = %provider,
            "model loaded"
        );
        Ok(Self {
            metadata,
            path: path.to_path_buf(),
            provider,
            session,
            scores_only,
        })
    }

    /// Scores `batch` windows: `windows` holds `batch * C * T` normalised
    /// values, each window channel-major (`[C, T]` row-major).
    ///
    /// # Errors
    /// [`RuntimeError::Input`] when the length does not match or `batch` is 0;
    /// [`RuntimeError::Run`] when ONNX Runtime fails.
    pub fn run(&mut self, windows: &[f32], batch: usize) -> Result<BatchOutput, RuntimeError> {
        let mut out = BatchOutput::default();
        self.run_into(windows, batch, &mut out)?;
        Ok(out)
    }

    /// Like [`run`](Self::run), but writes into `out`, reusing its vectors'
    /// allocations (the inference thread keeps one `BatchOutput` around).
    /// `out.reconstruction` is set to `None`.
    ///
    /// # Errors
    /// As [`run`](Self::run).
    pub fn run_into(
        &mut self,
        windows: &[f32],
        batch: usize,
        out: &mut BatchOutput,
    ) -> Result<(), RuntimeError> {
        let shape = self.input_shape(windows, batch)?;
        let input = TensorRef::from_array_view((shape, windows)).map_err(|e| self.run_err(e))?;
        let outputs = self
            .session
            .run_with_options(ort::inputs![input], &self.scores_only)
            .map_err(|e| run_error(&self.path, e))?;
        let c = self.metadata.num_channels();
        copy_output(&outputs, OUTPUT_SCORE, batch, &mut out.score, &self.path)?;
        copy_output(
            &outputs,
            OUTPUT_CHANNEL_ERROR,
            batch * c,
            &mut out.channel_error,
            &self.path,
        )?;
        out.reconstruction = None;
        Ok(())
    }

    /// Like [`run`](Self::run), and also returns the reconstruction (for the
    /// trainer's parity check and plots).
    ///
    /// # Errors
    /// As [`run`](Self::run).
    pub fn run_with_reconstruction(
        &mut self,
        windows: &[f32],
        batch: usize,
    ) -> Result<BatchOutput, RuntimeError> {
        let shape = self.input_shape(windows, batch)?;
        let input = TensorRef::from_array_view((shape, windows)).map_err(|e| self.run_err(e))?;
        let outputs = self
            .session
            .run(ort::inputs![input])
            .map_err(|e| run_error(&self.path, e))?;
        let c = self.metadata.num_channels();
        let mut out = BatchOutput::default();
        copy_output(&outputs, OUTPUT_SCORE, batch, &mut out.score, &self.path)?;
        copy_output(
            &outputs,
            OUTPUT_CHANNEL_ERROR,
            batch * c,
            &mut out.channel_error,
            &self.path,
        )?;
        let mut rec = Vec::new();
        copy_output(
            &outputs,
            OUTPUT_RECONSTRUCTION,
            windows.len(),
            &mut rec,
            &self.path,
        )?;
        out.reconstruction = Some(rec);
        Ok(out)
    }

    /// Values per window: `C * T`.
    pub fn window_len(&self) -> usize {
        self.metadata.num_channels() * self.metadata.window
    }

    /// Human-readable description of the graph's inputs and outputs.
    pub fn describe_io(&self) -> String {
        let mut s = String::new();
        for (kind, outlets) in [
            ("input", self.session.inputs()),
            ("output", self.session.outputs()),
        ] {
            for o in outlets {
                s.push_str(&format!("  {kind:<6} {:<15} {}\n", o.name(), o.dtype()));
            }
        }
        s
    }

    fn input_shape(&self, windows: &[f32], batch: usize) -> Result<[usize; 3], RuntimeError> {
        let c = self.metadata.num_channels();
        let t = self.metadata.window;
        let bad = |message: String| RuntimeError::Input {
            path: self.path.clone(),
            message,
        };
        if batch == 0 {
            return Err(bad("batch is 0".into()));
        }
        let expected = batch
            .checked_mul(c * t)
            .ok_or_else(|| bad(format!("batch {batch} is too large")))?;
        if windows.len() != expected {
            return Err(bad(format!(
                "{} values for {batch} windows of {c} channels x {t} frames (expected {expected})",
                windows.len()
            )));
        }
        Ok([batch, c, t])
    }

    fn run_err(&self, e: ort::Error) -> RuntimeError {
        run_error(&self.path, e)
    }
}

fn run_error(path: &Path, e: ort::Error) -> RuntimeError {
    RuntimeError::Run {
        path: path.to_path_buf(),
        message: e.to_string(),
    }
}

fn copy_output(
    outputs: &ort::session::SessionOutputs<'_>,
    name: &str,
    expected_len: usize,
    dest: &mut Vec<f32>,
    path: &Path,
) -> Result<(), RuntimeError> {
    let err = |message: String| RuntimeError::Run {
        path: path.to_path_buf(),
        message,
    };
    let value = outputs
        .get(name)
        .ok_or_else(|| err(format!("no output {name:?}")))?;
    let (_, data) = value
        .try_extract_tensor::<f32>()
        .map_err(|e| err(format!("output {name:?}: {e}")))?;
    if data.len() != expected_len {
        return Err(err(format!(
            "output {name:?} has {} values, expected {expected_len}",
            data.len()
        )));
    }
    dest.clear();
    dest.extend_from_slice(data);
    Ok(())
}

fn read_model_bytes(path: &Path) -> Result<Vec<u8>, RuntimeError> {
    let bytes = std::fs::read(path).map_err(|source| RuntimeError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    if bytes.is_empty() {
        return Err(RuntimeError::Load {
            path: path.to_path_buf(),
            message: "the file is empty".into(),
        });
    }
    Ok(bytes)
}

/// Which providers to register on a builder.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Attempt {
    Cpu,
    Cuda,
}

/// Where building a session failed.
enum OpenError {
    /// Registering the execution provider.
    Provider(String),
    /// Session options or the model itself.
    Model(String),
}

fn open_session(
    env: &Environment,
    path: &Path,
    bytes: &[u8],
    opts: &RuntimeOptions,
) -> Result<(Session, ActiveProvider), RuntimeError> {
    let load_err = |message: String| RuntimeError::Load {
        path: path.to_path_buf(),
        message,
    };
    match opts.execution_provider {
        ExecutionProvider::Cpu => match build_session(env, bytes, opts.intra_threads, Attempt::Cpu)
        {
            Ok(s) => Ok((s, ActiveProvider::Cpu)),
            Err(OpenError::Provider(m) | OpenError::Model(m)) => Err(load_err(m)),
        },
        ExecutionProvider::Cuda => {
            match build_session(env, bytes, opts.intra_threads, Attempt::Cuda) {
                Ok(s) => Ok((s, ActiveProvider::Cuda)),
                Err(OpenError::Provider(m)) => Err(cuda_error(path, &m)),
                Err(OpenError::Model(m)) => {
                    // The session can fail for CUDA's sake (no device, driver
                    // too old) or the model's: a CPU session tells which.
                    match build_session(env, bytes, opts.intra_threads, Attempt::Cpu) {
                        Ok(_) => Err(cuda_error(path, &m)),
                        Err(OpenError::Provider(m) | OpenError::Model(m)) => Err(load_err(m)),
                    }
                }
            }
        }
        ExecutionProvider::Auto => {
            match build_session(env, bytes, opts.intra_threads, Attempt::Cuda) {
                Ok(s) => Ok((s, ActiveProvider::Cuda)),
                Err(OpenError::Provider(m) | OpenError::Model(m)) => {
                    // A CUDA-enabled build can register the provider and then
                    // fail to create the session (no device, driver too old):
                    // that also falls back. A broken model fails again on CPU
                    // and is reported from there.
                    tracing::warn!(
                        path = %path.display(),
                        reason = %m,
                        "CUDA execution provider unavailable; running on CPU"
                    );
                    match build_session(env, bytes, opts.intra_threads, Attempt::Cpu) {
                        Ok(s) => Ok((s, ActiveProvider::Cpu)),
                        Err(OpenError::Provider(m) | OpenError::Model(m)) => Err(load_err(m)),
                    }
                }
            }
        }
    }
}

fn cuda_error(path: &Path, message: &str) -> RuntimeError {
    RuntimeError::Provider {
        path: path.to_path_buf(),
        message: format!(
            "the CUDA execution provider could not be registered \
             (execution_provider = \"cuda\"): {message}"
        ),
    }
}

fn build_session(
    env: &Environment,
    bytes: &[u8],
    intra_threads: usize,
    attempt: Attempt,
) -> Result<Session, OpenError> {
    let model = |e: ort::Error<SessionBuilder>| OpenError::Model(e.to_string());
    let mut builder = Session::builder(env)
        .map_err(|e| OpenError::Model(e.to_string()))?
        // The builder defaults to automatic device selection; we register
        // providers ourselves so that `ActiveProvider` tells the truth.
        .with_auto_device(AutoDevicePolicy::PreferCPU)
        .map_err(model)?;
    if intra_threads > 0 {
        builder = builder.with_intra_threads(intra_threads).map_err(model)?;
    }
    if attempt == Attempt::Cuda {
        builder = builder
            .with_execution_providers([ep::CUDA::default().build().error_on_failure()])
            .map_err(|e| OpenError::Provider(e.to_string()))?;
    }
    builder
        .commit_from_memory(bytes)
        .map_err(|e| OpenError::Model(e.to_string()))
}

fn metadata_of(session: &Session, path: &Path) -> Result<ModelMetadata, RuntimeError> {
    let err = |message: String| RuntimeError::Metadata {
        path: path.to_path_buf(),
        message,
    };
    let meta = session
        .metadata()
        .map_err(|e| err(format!("cannot read model metadata: {e}")))?;
    let json = meta.custom(METADATA_KEY).ok_or_else(|| {
        err(format!(
            "no metadata_props entry {METADATA_KEY:?} (not an anomalyd model?)"
        ))
    })?;
    ModelMetadata::from_json(&json).map_err(|e| err(e.to_string()))
}

/// Checks the graph's input and outputs against the metadata; the message
/// names the first mismatch.
fn check_graph(session: &Session, meta: &ModelMetadata) -> Result<(), String> {
    let c = i64::try_from(meta.num_channels()).map_err(|_| "too many channels".to_owned())?;
    let t = i64::try_from(meta.window).map_err(|_| "window too long".to_owned())?;
    let inputs = session.inputs();
    let names: Vec<&str> = inputs.iter().map(|o| o.name()).collect();
    if names != [INPUT_WINDOW] {
        return Err(format!(
            "graph inputs are {names:?}, expected exactly [{INPUT_WINDOW:?}]"
        ));
    }
    check_outlet("input", INPUT_WINDOW, inputs[0].dtype(), &[c, t])?;
    for (name, dims) in [
        (OUTPUT_RECONSTRUCTION, &[c, t][..]),
        (OUTPUT_SCORE, &[][..]),
        (OUTPUT_CHANNEL_ERROR, &[c][..]),
    ] {
        let outlet = session
            .outputs()
            .iter()
            .find(|o| o.name() == name)
            .ok_or_else(|| {
                let have: Vec<&str> = session.outputs().iter().map(|o| o.name()).collect();
                format!("graph has no output {name:?} (outputs: {have:?})")
            })?;
        check_outlet("output", name, outlet.dtype(), dims)?;
    }
    Ok(())
}

/// Checks one tensor: float32, rank `1 + dims.len()`, a dynamic batch
/// dimension, then exactly `dims` (`[C, T]`, `[]` or `[C]`).
fn check_outlet(kind: &str, name: &str, dtype: &ValueType, dims: &[i64]) -> Result<(), String> {
    let ValueType::Tensor { ty, shape, .. } = dtype else {
        return Err(format!(
            "{kind} {name:?} is {dtype}, expected a float32 tensor"
        ));
    };
    if *ty != TensorElementType::Float32 {
        return Err(format!(
            "{kind} {name:?} has element type {ty}, expected f32"
        ));
    }
    let expected = expected_shape_text(dims);
    if shape.len() != dims.len() + 1 {
        return Err(format!(
            "{kind} {name:?} has shape {dtype}, expected {expected}"
        ));
    }
    if shape[0] >= 0 {
        return Err(format!(
            "{kind} {name:?} has a fixed batch dimension {} (shape {dtype}); it must be dynamic",
            shape[0]
        ));
    }
    for (axis, (&got, &want)) in shape[1..].iter().zip(dims).enumerate() {
        if got != want {
            // Axis 0 after the batch is always the channel axis, axis 1 time.
            let what = if axis == 0 {
                format!("{want} channels")
            } else {
                format!("window length {want}")
            };
            return Err(format!(
                "{kind} {name:?} has shape {dtype}, expected {expected}: dimension {} is {got}, the metadata says {what}",
                axis + 1
            ));
        }
    }
    Ok(())
}

fn expected_shape_text(dims: &[i64]) -> String {
    let mut parts = vec!["batch".to_owned()];
    parts.extend(dims.iter().map(i64::to_string));
    format!("[{}]", parts.join(", "))
}

/// Reads the metadata of a model file (CPU session, no graph checks), e.g.
/// to show what a refused file claims to be.
///
/// # Errors
/// The runtime cannot be loaded, the file cannot be read or parsed, or its
/// metadata is missing or invalid.
pub fn read_metadata(path: &Path) -> Result<ModelMetadata, RuntimeError> {
    let env = with_runtime(None, |rt| rt.env.clone())?;
    let bytes = read_model_bytes(path)?;
    let (session, _) = open_session(&env, path, &bytes, &RuntimeOptions::cpu())?;
    metadata_of(&session, path)
}

/// Human-readable description of a model file for `anomalyd inspect-model`:
/// metadata summary, graph input/outputs, file size and SHA-256.
///
/// # Errors
/// As [`LoadedModel::load`] (a file that does not match its metadata is
/// refused with the mismatch), or the file cannot be read for hashing.
pub fn describe_model(path: &Path, opts: &RuntimeOptions) -> Result<String, RuntimeError> {
    let model = LoadedModel::load(path, opts)?;
    let (size, sha) = file_digest(path).map_err(|source| RuntimeError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    let m = &model.metadata;
    let mut s = String::new();
    let mut line = |l: String| {
        s.push_str(&l);
        s.push('\n');
    };
    line(format!("file:        {}", path.display()));
    line(format!("size:        {size} bytes"));
    line(format!("sha256:      {sha}"));
    line(format!(
        "model:       {} version {} ({})",
        m.name, m.version, m.arch
    ));
    line(format!("schema:      {}", m.schema_version));
    line(format!(
        "channels:    {} [{}]",
        m.num_channels(),
        m.channels.join(", ")
    ));
    line(format!(
        "sampling:    period {} ms, window {} frames, stride {} frames",
        m.sample_period_ms, m.window, m.stride
    ));
    line(format!(
        "normaliser:  mean [{}], std [{}]",
        join_f32(&m.normaliser.mean),
        join_f32(&m.normaliser.std)
    ));
    if !m.normaliser.constant_channels.is_empty() {
        line(format!(
            "             constant in training: [{}]",
            m.normaliser.constant_channels.join(", ")
        ));
    }
    line(format!(
        "score:       {}, channel weights [{}]",
        m.score.kind,
        join_f32(&m.score.channel_weights)
    ));
    line(format!(
        "threshold:   {} ({}, quantile {}, factor {})",
        m.threshold.value, m.threshold.method, m.threshold.quantile, m.threshold.factor
    ));
    line(format!(
        "errors:      {}",
        match m.error_distribution {
            ErrorDistribution::Gamma { shape, rate } =>
                format!("gamma(shape {shape}, rate {rate})"),
            ErrorDistribution::LogNormal { location, scale } =>
                format!("log-normal(location {location}, scale {scale})"),
        }
    ));
    line(format!(
        "detector:    raise after {}, clear after {}, clear ratio {}",
        m.detector.raise_after, m.detector.clear_after, m.detector.clear_ratio
    ));
    let tr = &m.training;
    line(format!(
        "training:    {} rows, {} train / {} validation windows, {} epochs (best {}), seed {}",
        tr.rows, tr.train_windows, tr.validation_windows, tr.epochs_run, tr.best_epoch, tr.seed
    ));
    line(format!(
        "             final loss train {} / validation {}",
        tr.train_loss
            .last()
            .map_or_else(|| "-".to_owned(), f32::to_string),
        tr.validation_loss
            .last()
            .map_or_else(|| "-".to_owned(), f32::to_string)
    ));
    line(format!(
        "             created {} by trainer {}, data sha256 {}",
        tr.created, tr.trainer_version, tr.data_fingerprint
    ));
    if !tr.hyperparameters.is_empty() {
        let hp: Vec<String> = tr
            .hyperparameters
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        line(format!("             hyperparameters {}", hp.join(" ")));
    }
    line(format!("provider:    {}", model.provider));
    line("graph:".to_owned());
    s.push_str(&model.describe_io());
    Ok(s)
}

fn join_f32(v: &[f32]) -> String {
    v.iter().map(f32::to_string).collect::<Vec<_>>().join(", ")
}

fn file_digest(path: &Path) -> std::io::Result<(u64, String)> {
    let mut file = std::fs::File::open(path)?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 16];
    let mut size = 0u64;
    loop {
        let n = file.read(&mut buf)?;
        if n == 0 {
            break;
        }
        size += n as u64;
        hasher.update(&buf[..n]);
    }
    let hex: String = hasher
        .finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    Ok((size, hex))
}

#[cfg(test)]
mod tests {
    use super::*;

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

    #[test]
    fn provider_names_parse_and_print() {
        for (s, p) in [
            ("cpu", ExecutionProvider::Cpu),
            ("CUDA", ExecutionProvider::Cuda),
            (" auto ", ExecutionProvider::Auto),
        ] {
            assert_eq!(s.parse::<ExecutionProvider>().unwrap(), p);
            assert_eq!(p.to_string(), s.trim().to_lowercase());
        }
        assert!(
            "tpu"
                .parse::<ExecutionProvider>()
                .unwrap_err()
                .contains("tpu")
        );
        #[derive(Deserialize)]
        struct C {
            ep: ExecutionProvider,
        }
        let c: C = serde_json::from_str(r#"{"ep":"cuda"}"#).unwrap();
        assert_eq!(c.ep, ExecutionProvider::Cuda);
        assert!(serde_json::from_str::<C>(r#"{"ep":"Cuda"}"#).is_err());
    }

    #[test]
    fn loaded_model_can_move_to_the_inference_thread() {
        fn is_send<T: Send>() {}
        is_send::<LoadedModel>();
        is_send::<RuntimeError>();
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
