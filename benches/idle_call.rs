//! What one ONNX Runtime call costs when the thread was idle before it, as
//! the scoring thread is at a low rate (docs/low-rate.md §7): the shipped
//! conv model (or `ANOMALYD_BENCH_CONV_MODEL`) at 1, 25 and 50 windows,
//! timed three ways, 60 calls each, median and 10th/90th percentiles:
//! - `back to back`: one call right after another;
//! - `caches evicted`: after 16 MiB were written, which evicts the data
//!   caches the call used;
//! - `after 125 ms idle`: after the thread slept 125 ms (the pace tick
//!   until the seventh round, 240 ms now), as the daemon's threads do
//!   between wake-ups at a low rate.
//!
//! The third minus the second is what idling costs beyond cold data: on
//! a virtual machine, mostly instruction-side state (branch predictors,
//! instruction caches) lost while the core served others.
//!
//! `cargo bench -p anomalyd --bench idle_call` (about 25 s); needs the
//! ONNX Runtime library (`ORT_DYLIB_PATH` or `./.ort/`).

use std::hint::black_box;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anomalyd::model::{BatchOutput, LoadedModel, RuntimeOptions};

const CALLS: usize = 60;
const IDLE: Duration = Duration::from_millis(125);

/// Values in [-2, 2], like normalised readings (a conv's cost does not
/// depend on them).
fn windows(n: usize) -> Vec<f32> {
    (0..n).map(|i| ((i % 17) as f32 - 8.0) / 4.0).collect()
}

/// Median, 10th and 90th percentile in microseconds.
fn summary(mut us: Vec<f64>) -> (f64, f64, f64) {
    us.sort_by(f64::total_cmp);
    let at = |q: f64| us[((us.len() - 1) as f64 * q).round() as usize];
    (at(0.5), at(0.1), at(0.9))
}

fn main() {
    let path = std::env::var_os("ANOMALYD_BENCH_CONV_MODEL")
        .map_or_else(|| PathBuf::from("models/pump.onnx"), PathBuf::from);
    let mut model = match LoadedModel::load(&path, &RuntimeOptions::cpu()) {
        Ok(m) => m,
        Err(e) => {
            eprintln!("{}: skipped: {e}", path.display());
            return;
        }
    };
    let per_window = model.window_len();
    let input = windows(per_window * 50);
    let mut out = BatchOutput::default();
    let mut evict = vec![0u8; 16 << 20];
    println!(
        "{}: one ONNX Runtime call, microseconds: median (p10-p90)",
        path.display()
    );
    for batch in [1usize, 25, 50] {
        let mut row = format!("  batch {batch:>2}:");
        for way in ["back to back", "caches evicted", "after 125 ms idle"] {
            let mut us = Vec::with_capacity(CALLS);
            for _ in 0..CALLS {
                match way {
                    "caches evicted" => {
                        for (i, b) in evict.iter_mut().enumerate().step_by(64) {
                            *b = b.wrapping_add(i as u8);
                        }
                        black_box(&evict);
                    }
                    "after 125 ms idle" => std::thread::sleep(IDLE),
                    _ => {}
                }
                let t = Instant::now();
                if let Err(e) =
                    model.run_into(black_box(&input[..per_window * batch]), batch, &mut out)
                {
                    eprintln!("inference failed: {e}");
                    return;
                }
                us.push(t.elapsed().as_secs_f64() * 1e6);
                black_box(&out.score);
            }
            let (p50, p10, p90) = summary(us);
            row += &format!("  {way} {p50:.0} ({p10:.0}-{p90:.0})");
        }
        println!("{row}");
    }
}
