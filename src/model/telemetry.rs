//! ONNX Runtime's own usage telemetry, turned off for the whole process.
//!
//! The official Linux builds of ONNX Runtime since 1.29 (the PyPI wheel the
//! daemon is shipped and tested with) carry Microsoft's 1DS uploader. When
//! the library creates its environment, the uploader writes a persistent
//! device identifier and an event cache under
//! `~/.cache/Microsoft/DeveloperTools/.onnxruntime/`, and a thread of its own
//! then resolves and posts to `mobile.events.data.microsoft.com` every few
//! seconds: a gateway that should talk only to its broker and its database
//! would call out, and on a plant network without a way out it spawns
//! resolver threads and retries for as long as it runs. ONNX Runtime's
//! `DisableTelemetryEvents` (what `with_telemetry(false)` calls) only mutes
//! the events; the environment variable `ORT_DISABLE_TELEMETRY=1`, read once
//! when the library initialises, keeps the uploader from starting at all
//! (docs/architecture.md §8).

/// The variable ONNX Runtime reads (once, when it creates its environment).
const TELEMETRY_VAR: &str = "ORT_DISABLE_TELEMETRY";

/// Sets `ORT_DISABLE_TELEMETRY=1` for this process unless it already holds
/// a value (an operator's explicit value is kept, `0` included; an empty one
/// counts as unset). Every binary that may load ONNX Runtime calls it first
/// thing in `main`.
///
/// Setting a variable is sound only while no other thread may read the
/// environment, so it is set only when `/proc/self/task` lists this thread
/// alone (no other can start meanwhile: this one would have to start it).
#[allow(unsafe_code)]
pub fn opt_out_of_telemetry() {
    let unset = std::env::var_os(TELEMETRY_VAR).is_none_or(|v| v.is_empty());
    let alone = std::fs::read_dir("/proc/self/task").is_ok_and(|d| d.count() == 1);
    if unset && alone {
        // SAFETY: this is the process's only thread (checked above).
        unsafe { std::env::set_var(TELEMETRY_VAR, "1") };
    }
}

/// Whether ONNX Runtime's uploader stays off in this process: the variable
/// holds `1`, `true` or `yes`, the values ONNX Runtime 1.31.1 was seen to
/// take (`0` and `2` leave the uploader on).
pub(super) fn telemetry_off() -> bool {
    std::env::var(TELEMETRY_VAR).is_ok_and(|v| turns_off(&v))
}

fn turns_off(value: &str) -> bool {
    matches!(value.to_ascii_lowercase().as_str(), "1" | "true" | "yes")
}

#[cfg(test)]
mod tests {
    use super::turns_off;

    /// The log line's `telemetry="off"` follows what the library does with
    /// each value (measured with `anomalyd inspect-model` and a scratch
    /// `HOME`).
    #[test]
    fn the_values_that_turn_the_uploader_off() {
        for v in ["1", "true", "TRUE", "yes"] {
            assert!(turns_off(v), "{v}");
        }
        for v in ["0", "2", "", "false", "no"] {
            assert!(!turns_off(v), "{v}");
        }
    }
}
