//! A model file as an ONNX Runtime session: opening it on the asked-for
//! execution provider (with the CPU fallback of `auto`), and scoring
//! batches of windows.

use std::fmt;
use std::path::{Path, PathBuf};

use ort::environment::Environment;
use ort::ep;
use ort::session::builder::{AutoDevicePolicy, SessionBuilder};
use ort::session::{HasSelectedOutputs, OutputSelector, RunOptions, Session};
use ort::value::TensorRef;

use super::check::{check_graph, metadata_of};
use super::runtime::environment;
use super::{ActiveProvider, ExecutionProvider, RuntimeError, RuntimeOptions};
use crate::core::contract::{
    ModelMetadata, OUTPUT_CHANNEL_ERROR, OUTPUT_RECONSTRUCTION, OUTPUT_SCORE,
};

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
    /// The runtime cannot be loaded ([`init_runtime`](super::init_runtime)); the file cannot be
    /// read or is not an ONNX model; its metadata is missing or invalid; its
    /// input/outputs do not match the contract (names, `float32`, shapes
    /// `[?, C, T]`, `[?]`, `[?, C]`); `Cuda` was asked for and the CUDA
    /// execution provider cannot be registered.
    pub fn load(path: &Path, opts: &RuntimeOptions) -> Result<Self, RuntimeError> {
        let env = environment(opts.library_path.as_deref())?;
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
        copy_scores(&outputs, batch, c, out, &self.path)?;
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
        copy_scores(&outputs, batch, c, &mut out, &self.path)?;
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

/// Copies the `score` and `channel_error` outputs of `batch` windows of
/// `channels` channels into `out`.
fn copy_scores(
    outputs: &ort::session::SessionOutputs<'_>,
    batch: usize,
    channels: usize,
    out: &mut BatchOutput,
    path: &Path,
) -> Result<(), RuntimeError> {
    copy_output(outputs, OUTPUT_SCORE, batch, &mut out.score, path)?;
    copy_output(
        outputs,
        OUTPUT_CHANNEL_ERROR,
        batch * channels,
        &mut out.channel_error,
        path,
    )
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

pub(super) fn read_model_bytes(path: &Path) -> Result<Vec<u8>, RuntimeError> {
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

pub(super) fn open_session(
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loaded_model_can_move_to_the_inference_thread() {
        fn is_send<T: Send>() {}
        is_send::<LoadedModel>();
        is_send::<RuntimeError>();
    }
}
