//! What `idle_call` and `idle_source` share: the model they load, and one
//! piece of work timed four ways, as a thread at a low rate meets it
//! (docs/low-rate.md §7).

use std::hint::black_box;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anomalyd::model::{LoadedModel, RuntimeOptions};

/// The shipped conv model, or the one `ANOMALYD_BENCH_CONV_MODEL` names,
/// and its path; `None` (printed) when it cannot be loaded.
pub fn bench_model() -> Option<(PathBuf, LoadedModel)> {
    let path = std::env::var_os("ANOMALYD_BENCH_CONV_MODEL")
        .map_or_else(|| PathBuf::from("models/pump.onnx"), PathBuf::from);
    match LoadedModel::load(&path, &RuntimeOptions::cpu()) {
        Ok(m) => Some((path, m)),
        Err(e) => {
            eprintln!("{}: skipped: {e}", path.display());
            None
        }
    }
}

/// Median, 10th and 90th percentile.
fn summary(mut v: Vec<f64>) -> (f64, f64, f64) {
    v.sort_by(f64::total_cmp);
    let at = |q: f64| v[((v.len() - 1) as f64 * q).round() as usize];
    (at(0.5), at(0.1), at(0.9))
}

/// Times `work` `reps` times each way: back to back; after 16 MiB were
/// written, which evicts the data caches it used; after the thread slept
/// `idle`; after it spun for `idle` without sleeping, keeping its core.
/// Per way, the median (10th-90th percentile) of its time divided by
/// `per`, in microseconds; the first error `work` returns ends it.
///
/// If spinning costs the next call as much as sleeping, what the call
/// loses is lost to time on the machine (its neighbours, the host), not
/// to the thread going to sleep.
pub fn four_ways<E>(
    idle: Duration,
    reps: usize,
    per: usize,
    mut work: impl FnMut() -> Result<(), E>,
) -> Result<String, E> {
    let mut evict = vec![0u8; 16 << 20];
    let mut row = String::new();
    for way in 0..4 {
        let mut us = Vec::with_capacity(reps);
        for _ in 0..reps {
            match way {
                1 => {
                    for (i, b) in evict.iter_mut().enumerate().step_by(64) {
                        *b = b.wrapping_add(i as u8);
                    }
                    black_box(&evict);
                }
                2 => std::thread::sleep(idle),
                3 => {
                    let t = Instant::now();
                    while t.elapsed() < idle {
                        std::hint::spin_loop();
                    }
                }
                _ => {}
            }
            let t = Instant::now();
            work()?;
            us.push(t.elapsed().as_secs_f64() * 1e6 / per as f64);
        }
        let (p50, p10, p90) = summary(us);
        let name = match way {
            0 => "back to back".to_string(),
            1 => "caches evicted".to_string(),
            2 => format!("after {} ms idle", idle.as_millis()),
            _ => format!("after {} ms spinning", idle.as_millis()),
        };
        row += &format!("  {name} {p50:.1} ({p10:.1}-{p90:.1})");
    }
    Ok(row)
}
