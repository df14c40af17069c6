//! What one ONNX Runtime call costs when the thread was idle before it, as
//! the scoring thread is at a low rate (docs/low-rate.md §7): the shipped
//! conv model (or `ANOMALYD_BENCH_CONV_MODEL`) at 1, 25 and 50 windows,
//! timed four ways, 60 calls each, median and 10th/90th percentiles:
//! - `back to back`: one call right after another;
//! - `caches evicted`: after 16 MiB were written, which evicts the data
//!   caches the call used;
//! - `after 125 ms idle`: after the thread slept 125 ms (the pace tick
//!   until the seventh round, 240 ms now), as the daemon's threads do
//!   between wake-ups at a low rate;
//! - `after 125 ms spinning`: after it spun as long, never leaving its
//!   core.
//!
//! The third minus the second is what idling costs beyond cold data. The
//! fourth tells whose doing that is: when a thread that kept its core
//! loses as much, the state was lost to time on the machine (its
//! neighbours, the host), not to the thread's sleep, and no way of
//! waiting saves it; only fewer wake-ups do.
//!
//! `cargo bench -p anomalyd --bench idle_call` (about 25 s); needs the
//! ONNX Runtime library (`ORT_DYLIB_PATH` or `./.ort/`).

mod idle;

use std::hint::black_box;
use std::time::Duration;

use anomalyd::model::BatchOutput;

const CALLS: usize = 60;
const IDLE: Duration = Duration::from_millis(125);

/// Values in [-2, 2], like normalised readings (a conv's cost does not
/// depend on them).
fn windows(n: usize) -> Vec<f32> {
    (0..n).map(|i| ((i % 17) as f32 - 8.0) / 4.0).collect()
}

fn main() {
    let Some((path, mut model)) = idle::bench_model() else {
        return;
    };
    let per_window = model.window_len();
    let input = windows(per_window * 50);
    let mut out = BatchOutput::default();
    println!(
        "{}: one ONNX Runtime call, microseconds: median (p10-p90)",
        path.display()
    );
    for batch in [1usize, 25, 50] {
        let row = idle::four_ways(IDLE, CALLS, 1, || {
            model
                .run_into(black_box(&input[..per_window * batch]), batch, &mut out)
                .map(|()| {
                    black_box(&out.score);
                })
        });
        match row {
            Ok(row) => println!("  batch {batch:>2}:{row}"),
            Err(e) => {
                eprintln!("inference failed: {e}");
                return;
            }
        }
    }
}
