//! The training report written with `--report DIR`: `report.json` (metadata,
//! per-epoch losses, calibration, exporter parity, timings, input summaries)
//! and three PNG plots drawn with `plotters`: `loss.png`, `errors.png` and
//! `reconstruction.png`. Also [`plot_replay`]: a replayed log's score,
//! threshold, labels and alert state over time (the benchmark's picture).
//!
//! Text needs a TrueType font. None is embedded: one is looked up at run
//! time (`ANOMALYD_FONT`, then common system paths such as Debian's
//! `fonts-dejavu-core`); without one the plots are drawn without text and a
//! warning says so.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use anomalyd::core::contract::{ErrorDistribution, ModelMetadata};
use plotters::coord::Shift;
use plotters::prelude::*;
use serde::Serialize;

use crate::calibrate::Calibration;
use crate::data::InputSummary;
use crate::eval::{LabelledLog, ReplayOutput};

/// Environment variable naming a TTF/OTF file to draw text with.
pub const FONT_ENV: &str = "ANOMALYD_FONT";

/// Fonts tried when [`FONT_ENV`] is not set, first found wins.
pub const FONT_CANDIDATES: &[&str] = &[
    "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/TTF/DejaVuSans.ttf",
    "/usr/share/fonts/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/truetype/liberation/LiberationSans-Regular.ttf",
    "/usr/share/fonts/truetype/freefont/FreeSans.ttf",
    "/usr/share/fonts/noto/NotoSans-Regular.ttf",
    "/Library/Fonts/Arial.ttf",
    "/System/Library/Fonts/Supplemental/Arial.ttf",
];

const FONT: &str = "sans-serif";

/// `reconstruction.png` shows at most this many channels (the first ones),
/// one panel row each, so that the image stays viewable.
pub const MAX_PLOTTED_CHANNELS: usize = 16;

/// Why the report could not be written.
#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    #[error("cannot write {}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot draw {}: {message}", path.display())]
    Plot { path: PathBuf, message: String },
}

/// One epoch's losses.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct EpochRecord {
    pub epoch: usize,
    pub train_loss: f32,
    pub validation_loss: f32,
}

/// Exporter parity: ONNX Runtime on the written file vs burn's own forward
/// pass, on the validation windows.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Parity {
    pub windows: usize,
    pub max_abs_diff_reconstruction: f64,
    pub max_abs_diff_score: f64,
    pub max_abs_diff_channel_error: f64,
    pub tolerance: f64,
    pub passed: bool,
}

/// Wall-clock seconds per stage.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Timings {
    pub load_s: f64,
    pub train_s: f64,
    pub calibrate_s: f64,
    pub export_s: f64,
    pub parity_s: f64,
    pub total_s: f64,
}

/// Everything in `report.json`.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub model_file: String,
    pub model_bytes: u64,
    pub parameters: usize,
    pub device: String,
    pub metadata: ModelMetadata,
    pub epochs: Vec<EpochRecord>,
    pub best_epoch: usize,
    pub stopped_early: bool,
    pub calibration: Calibration,
    pub parity: Parity,
    pub timings: Timings,
    pub inputs: Vec<InputSummary>,
    pub warnings: Vec<String>,
}

/// A validation window to plot, in engineering units.
#[derive(Debug, Clone, PartialEq)]
pub struct SampleWindow {
    /// e.g. `highest score`.
    pub label: String,
    pub score: f32,
    /// Channel-major `[C, T]`.
    pub original: Vec<f32>,
    pub reconstruction: Vec<f32>,
}

/// What the plots need besides the report.
#[derive(Debug, Clone, Copy)]
pub struct PlotInputs<'a> {
    pub validation_scores: &'a [f32],
    pub samples: &'a [SampleWindow],
}

/// Writes `report.json` and the three PNGs into `dir` (created if needed).
/// Returns the files written and warnings (e.g. no font).
///
/// # Errors
/// The directory or a file cannot be written, or a plot cannot be drawn.
pub fn write_report(
    dir: &Path,
    report: &Report,
    plots: PlotInputs<'_>,
) -> Result<(Vec<PathBuf>, Vec<String>), ReportError> {
    std::fs::create_dir_all(dir).map_err(|source| ReportError::Io {
        path: dir.to_path_buf(),
        source,
    })?;
    let mut warnings = Vec::new();
    let text = font_available();
    if !text {
        warnings.push(format!(
            "no TrueType font found (set {FONT_ENV} or install fonts-dejavu-core): plots are drawn without text"
        ));
    }
    let json_path = dir.join("report.json");
    let json = serde_json::to_string_pretty(report).map_err(|e| ReportError::Io {
        path: json_path.clone(),
        source: std::io::Error::other(e),
    })?;
    std::fs::write(&json_path, json + "\n").map_err(|source| ReportError::Io {
        path: json_path.clone(),
        source,
    })?;

    let loss = dir.join("loss.png");
    draw(&loss, (900, 520), |area| loss_plot(area, report, text))?;
    let errors = dir.join("errors.png");
    draw(&errors, (900, 520), |area| {
        error_plot(
            area,
            plots.validation_scores,
            report.metadata.threshold.value,
            &report.metadata.error_distribution,
            text,
        )
    })?;
    let recon = dir.join("reconstruction.png");
    let c = report.metadata.channels.len().min(MAX_PLOTTED_CHANNELS);
    let columns = plots.samples.len().max(1);
    let size = (
        (380 * columns as u32 + 120).max(700),
        (150 * c as u32 + 80).max(300),
    );
    draw(&recon, size, |area| {
        reconstruction_plot(
            area,
            &report.metadata.channels[..c],
            report.metadata.window,
            plots.samples,
            text,
        )
    })?;
    Ok((vec![json_path, loss, errors, recon], warnings))
}

/// Registers a font once per process; true when text can be drawn.
pub fn font_available() -> bool {
    static FONT_OK: OnceLock<bool> = OnceLock::new();
    *FONT_OK.get_or_init(|| {
        let candidates: Vec<PathBuf> = match std::env::var_os(FONT_ENV) {
            Some(p) => vec![PathBuf::from(p)],
            None => FONT_CANDIDATES.iter().map(PathBuf::from).collect(),
        };
        candidates.iter().any(|path| {
            let Ok(bytes) = std::fs::read(path) else {
                return false;
            };
            // plotters keeps fonts for the life of the process: leak once.
            let bytes: &'static [u8] = Box::leak(bytes.into_boxed_slice());
            plotters::style::register_font(FONT, FontStyle::Normal, bytes).is_ok()
        })
    })
}

/// Draws a replayed log over time (`path`, PNG): the score on a log scale,
/// the threshold, the rows labelled anomalous (shaded) and the rows the
/// detector flagged (a band under the plot), with a line where scoring
/// starts (`first_row`). `labels` and `replay` must describe the same rows
/// (see [`crate::eval::score_rows`]). Returns warnings (e.g. no font).
///
/// # Errors
/// The file cannot be drawn or written.
pub fn plot_replay(
    path: &Path,
    title: &str,
    labels: &LabelledLog,
    replay: &ReplayOutput,
    first_row: usize,
) -> Result<Vec<String>, ReportError> {
    let text = font_available();
    let mut warnings = Vec::new();
    if !text {
        warnings.push(format!(
            "no TrueType font found (set {FONT_ENV} or install fonts-dejavu-core): {} is drawn without text",
            path.display()
        ));
    }
    draw(path, (1400, 560), |area| {
        replay_plot(area, title, labels, replay, first_row, text)
    })?;
    Ok(warnings)
}

const LABEL_COLOUR: RGBColor = RGBColor(255, 127, 14);
const FLAG_COLOUR: RGBColor = RGBColor(44, 160, 44);

fn replay_plot(
    area: &Area<'_>,
    title: &str,
    labels: &LabelledLog,
    replay: &ReplayOutput,
    first_row: usize,
    text: bool,
) -> PlotResult {
    let n = replay.score.len().min(labels.anomalous.len());
    let positive = replay
        .score
        .iter()
        .flatten()
        .chain(&replay.threshold)
        .map(|v| f64::from(*v))
        .filter(|v| v.is_finite() && *v > 0.0);
    let (lo, hi) = positive.fold((f64::MAX, f64::MIN), |(lo, hi), v| (lo.min(v), hi.max(v)));
    let (lo, hi) = if lo <= hi {
        (lo / 2.0, hi * 2.0)
    } else {
        (1e-3, 1.0)
    };
    // The flagged-rows band sits in the lowest tenth of the (log) y range.
    let band_top = lo * (hi / lo).powf(0.06);
    let x_max = n.max(1) as f64;
    let mut builder = ChartBuilder::on(area);
    builder.margin(15);
    if text {
        builder
            .caption(title, (FONT, 20))
            .x_label_area_size(45)
            .y_label_area_size(75);
    }
    let mut chart = builder
        .build_cartesian_2d(
            0f64..x_max,
            (lo..hi).log_scale().with_key_points(log_ticks(lo, hi)),
        )
        .map_err(boxed)?;
    let mut mesh = chart.configure_mesh();
    if text {
        mesh.x_desc("row (1 s apart)")
            .y_desc("score (log scale)")
            .label_style((FONT, 14))
            .x_label_formatter(&|x| format!("{}", x.round() as i64))
            .y_label_formatter(&|y| format_short(*y));
    } else {
        mesh.x_labels(0).y_labels(0);
    }
    mesh.disable_x_mesh().draw().map_err(boxed)?;

    let runs = |flags: &[bool]| -> Vec<(usize, usize)> {
        let mut out = Vec::new();
        let mut start = None;
        for (i, f) in flags.iter().take(n).chain([&false]).enumerate() {
            match (start, *f) {
                (None, true) => start = Some(i),
                (Some(s), false) => {
                    out.push((s, i));
                    start = None;
                }
                _ => {}
            }
        }
        out
    };
    chart
        .draw_series(runs(&labels.anomalous).into_iter().map(|(a, b)| {
            Rectangle::new(
                [(a as f64, band_top), (b as f64, hi)],
                LABEL_COLOUR.mix(0.18).filled(),
            )
        }))
        .map_err(boxed)?
        .label("labelled anomalous")
        .legend(|(x, y)| {
            Rectangle::new(
                [(x, y - 5), (x + 15, y + 5)],
                LABEL_COLOUR.mix(0.3).filled(),
            )
        });
    chart
        .draw_series(runs(&replay.anomalous).into_iter().map(|(a, b)| {
            Rectangle::new(
                [(a as f64, lo), (b as f64, band_top)],
                FLAG_COLOUR.mix(0.8).filled(),
            )
        }))
        .map_err(boxed)?
        .label("flagged by the detector")
        .legend(|(x, y)| Rectangle::new([(x, y - 5), (x + 15, y + 5)], FLAG_COLOUR.filled()));
    let start = first_row.min(n) as f64;
    chart
        .draw_series(LineSeries::new(
            [(start, lo), (start, hi)],
            ShapeStyle::from(&BLACK.mix(0.5)).stroke_width(1),
        ))
        .map_err(boxed)?
        .label(format!(
            "scored from row {first_row} (model trained before)"
        ))
        .legend(|(x, y)| PathElement::new([(x, y), (x + 20, y)], BLACK.mix(0.5)));
    // One line per stretch of scored rows (no line across unscored ones).
    let mut segments: Vec<Vec<(f64, f64)>> = Vec::new();
    let mut current = Vec::new();
    for (i, s) in replay.score.iter().take(n).enumerate() {
        match s {
            Some(v) if v.is_finite() => current.push((i as f64, f64::from(*v).clamp(lo, hi))),
            _ if !current.is_empty() => segments.push(std::mem::take(&mut current)),
            _ => {}
        }
    }
    if !current.is_empty() {
        segments.push(current);
    }
    for (k, seg) in segments.into_iter().enumerate() {
        let series = chart
            .draw_series(LineSeries::new(
                seg,
                ShapeStyle::from(&TRAIN_COLOUR).stroke_width(2),
            ))
            .map_err(boxed)?;
        if k == 0 {
            series.label("score").legend(|(x, y)| {
                PathElement::new(
                    [(x, y), (x + 20, y)],
                    ShapeStyle::from(&TRAIN_COLOUR).stroke_width(2),
                )
            });
        }
    }
    let threshold: Vec<(f64, f64)> = replay
        .threshold
        .iter()
        .take(n)
        .enumerate()
        .map(|(i, t)| (i as f64, f64::from(*t).clamp(lo, hi)))
        .collect();
    chart
        .draw_series(LineSeries::new(
            threshold,
            ShapeStyle::from(&THRESHOLD_COLOUR).stroke_width(2),
        ))
        .map_err(boxed)?
        .label("threshold")
        .legend(|(x, y)| {
            PathElement::new(
                [(x, y), (x + 20, y)],
                ShapeStyle::from(&THRESHOLD_COLOUR).stroke_width(2),
            )
        });
    if text {
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperLeft)
            .label_font((FONT, 15))
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK)
            .draw()
            .map_err(boxed)?;
    }
    Ok(())
}

type Area<'a> = DrawingArea<BitMapBackend<'a>, Shift>;
type PlotResult = Result<(), Box<dyn std::error::Error + Send + Sync + 'static>>;

fn draw(
    path: &Path,
    size: (u32, u32),
    f: impl FnOnce(&Area<'_>) -> PlotResult,
) -> Result<(), ReportError> {
    let err = |e: &dyn std::fmt::Display| ReportError::Plot {
        path: path.to_path_buf(),
        message: e.to_string(),
    };
    let area = BitMapBackend::new(path, size).into_drawing_area();
    area.fill(&WHITE).map_err(|e| err(&e))?;
    f(&area).map_err(|e| err(&e))?;
    area.present().map_err(|e| err(&e))?;
    Ok(())
}

fn boxed<E: std::error::Error + Send + Sync + 'static>(
    e: DrawingAreaErrorKind<E>,
) -> Box<dyn std::error::Error + Send + Sync + 'static> {
    Box::new(e)
}

const TRAIN_COLOUR: RGBColor = RGBColor(31, 119, 180);
const VALIDATION_COLOUR: RGBColor = RGBColor(255, 127, 14);
const THRESHOLD_COLOUR: RGBColor = RGBColor(214, 39, 40);
const RECON_COLOUR: RGBColor = RGBColor(214, 39, 40);

fn loss_plot(area: &Area<'_>, report: &Report, text: bool) -> PlotResult {
    let epochs = &report.epochs;
    let n = epochs.len().max(1) as f64;
    let values = epochs
        .iter()
        .flat_map(|e| [e.train_loss, e.validation_loss])
        .map(f64::from)
        .filter(|v| v.is_finite() && *v > 0.0);
    let (lo, hi) = values.fold((f64::MAX, f64::MIN), |(lo, hi), v| (lo.min(v), hi.max(v)));
    let (lo, hi) = if lo <= hi {
        (lo / 1.5, hi * 1.5)
    } else {
        (1e-3, 1.0)
    };
    let mut builder = ChartBuilder::on(area);
    builder.margin(15);
    if text {
        builder
            .caption(
                format!(
                    "Training and validation loss (MSE, normalised units) - best epoch {}",
                    report.best_epoch
                ),
                (FONT, 20),
            )
            .x_label_area_size(45)
            .y_label_area_size(75);
    }
    let mut chart = builder
        .build_cartesian_2d(
            0.5f64..n + 0.5,
            (lo..hi).log_scale().with_key_points(log_ticks(lo, hi)),
        )
        .map_err(boxed)?;
    let mut mesh = chart.configure_mesh();
    if text {
        mesh.x_desc("epoch")
            .y_desc("loss (log scale)")
            .label_style((FONT, 14))
            .x_labels(epochs.len().clamp(2, 12))
            .x_label_formatter(&|x| format!("{}", x.round() as i64))
            .y_label_formatter(&|y| format_short(*y));
    } else {
        mesh.x_labels(0).y_labels(0);
    }
    mesh.draw().map_err(boxed)?;

    let best = report.best_epoch as f64;
    let best_loss = epochs
        .get(report.best_epoch.saturating_sub(1))
        .map_or(lo, |e| f64::from(e.validation_loss));
    chart
        .draw_series(LineSeries::new(
            [(best, lo), (best, hi)],
            ShapeStyle::from(&BLACK.mix(0.4)).stroke_width(1),
        ))
        .map_err(boxed)?
        .label(format!("best epoch {}", report.best_epoch))
        .legend(|(x, y)| PathElement::new([(x, y), (x + 20, y)], BLACK.mix(0.4)));
    let series = [
        ("train", TRAIN_COLOUR, true),
        ("validation", VALIDATION_COLOUR, false),
    ];
    for (name, colour, is_train) in series {
        let points: Vec<(f64, f64)> = epochs
            .iter()
            .map(|e| {
                let v = if is_train {
                    e.train_loss
                } else {
                    e.validation_loss
                };
                (e.epoch as f64, f64::from(v).max(lo))
            })
            .collect();
        chart
            .draw_series(LineSeries::new(
                points.clone(),
                ShapeStyle::from(&colour).stroke_width(2),
            ))
            .map_err(boxed)?
            .label(name)
            .legend(move |(x, y)| {
                PathElement::new(
                    [(x, y), (x + 20, y)],
                    ShapeStyle::from(&colour).stroke_width(2),
                )
            });
        chart
            .draw_series(points.iter().map(|p| Circle::new(*p, 3, colour.filled())))
            .map_err(boxed)?;
    }
    chart
        .draw_series([Circle::new(
            (best, best_loss.max(lo)),
            7,
            BLACK.stroke_width(2),
        )])
        .map_err(boxed)?;
    if text {
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperRight)
            .label_font((FONT, 15))
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK)
            .draw()
            .map_err(boxed)?;
    }
    Ok(())
}

fn error_plot(
    area: &Area<'_>,
    scores: &[f32],
    threshold: f32,
    fitted: &ErrorDistribution,
    text: bool,
) -> PlotResult {
    let threshold = f64::from(threshold);
    let max_score = scores
        .iter()
        .map(|s| f64::from(*s))
        .filter(|s| s.is_finite())
        .fold(0.0f64, f64::max);
    let x_max = (max_score.max(threshold) * 1.08).max(1e-9);
    const BINS: usize = 50;
    let width = x_max / BINS as f64;
    let mut counts = [0u32; BINS];
    for s in scores
        .iter()
        .map(|s| f64::from(*s))
        .filter(|s| s.is_finite())
    {
        let b = ((s / width) as usize).min(BINS - 1);
        counts[b] += 1;
    }
    let y_max = f64::from(counts.iter().copied().max().unwrap_or(1).max(1)) * 1.15;
    // The legend goes to the upper corner over the lower bars.
    let third = BINS / 3;
    let tall = |bins: &[u32]| bins.iter().copied().max().unwrap_or(0);
    let legend = if tall(&counts[..third]) < tall(&counts[BINS - third..]) {
        SeriesLabelPosition::UpperLeft
    } else {
        SeriesLabelPosition::UpperRight
    };
    let mut builder = ChartBuilder::on(area);
    builder.margin(15);
    if text {
        builder
            .caption(
                format!(
                    "Validation scores ({} windows) and the threshold {threshold:.4}",
                    scores.len()
                ),
                (FONT, 20),
            )
            .x_label_area_size(45)
            .y_label_area_size(60);
    }
    let mut chart = builder
        .build_cartesian_2d(0.0f64..x_max, 0.0f64..y_max)
        .map_err(boxed)?;
    let mut mesh = chart.configure_mesh();
    if text {
        mesh.x_desc("score (as the detector compares it with the threshold)")
            .y_desc("windows")
            .label_style((FONT, 14))
            .x_label_formatter(&|x| format!("{x:.3}"))
            .y_label_formatter(&|y| format!("{}", y.round() as i64));
    } else {
        mesh.x_labels(0).y_labels(0);
    }
    mesh.draw().map_err(boxed)?;
    chart
        .draw_series(
            counts
                .iter()
                .enumerate()
                .filter(|(_, c)| **c > 0)
                .map(|(i, c)| {
                    let x0 = i as f64 * width;
                    Rectangle::new(
                        [(x0, 0.0), (x0 + width, f64::from(*c))],
                        TRAIN_COLOUR.mix(0.75).filled(),
                    )
                }),
        )
        .map_err(boxed)?
        .label("validation windows")
        .legend(|(x, y)| Rectangle::new([(x, y - 5), (x + 15, y + 5)], TRAIN_COLOUR.filled()));
    // The fitted distribution as expected windows per bin.
    let n = scores.len() as f64;
    let density: Vec<(f64, f64)> = (1..=400)
        .map(|i| {
            let x = x_max * f64::from(i) / 400.0;
            (x, (n * width * pdf(fitted, x)).min(y_max))
        })
        .filter(|(_, y)| y.is_finite())
        .collect();
    chart
        .draw_series(LineSeries::new(
            density,
            ShapeStyle::from(&BLACK.mix(0.7)).stroke_width(2),
        ))
        .map_err(boxed)?
        .label(format!("fitted {}", family(fitted)))
        .legend(|(x, y)| {
            PathElement::new(
                [(x, y), (x + 20, y)],
                ShapeStyle::from(&BLACK.mix(0.7)).stroke_width(2),
            )
        });
    chart
        .draw_series(LineSeries::new(
            [(threshold, 0.0), (threshold, y_max)],
            ShapeStyle::from(&THRESHOLD_COLOUR).stroke_width(3),
        ))
        .map_err(boxed)?
        .label(format!("threshold {threshold:.4}"))
        .legend(|(x, y)| {
            PathElement::new(
                [(x, y), (x + 20, y)],
                ShapeStyle::from(&THRESHOLD_COLOUR).stroke_width(3),
            )
        });
    if text {
        chart
            .configure_series_labels()
            .position(legend)
            .label_font((FONT, 15))
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK)
            .draw()
            .map_err(boxed)?;
    }
    Ok(())
}

fn reconstruction_plot(
    area: &Area<'_>,
    channels: &[String],
    window: usize,
    samples: &[SampleWindow],
    text: bool,
) -> PlotResult {
    let area = if text {
        area.titled(
            "Validation windows: original (blue) vs reconstruction (red), engineering units",
            (FONT, 20),
        )
        .map_err(boxed)?
    } else {
        area.clone()
    };
    let c = channels.len();
    let cols = samples.len().max(1);
    let panels = area.split_evenly((c, cols));
    for (col, sample) in samples.iter().enumerate() {
        for (ch, name) in channels.iter().enumerate() {
            let Some(panel) = panels.get(ch * cols + col) else {
                continue;
            };
            let orig = &sample.original[ch * window..(ch + 1) * window];
            let rec = &sample.reconstruction[ch * window..(ch + 1) * window];
            let (lo, hi) = orig
                .iter()
                .chain(rec)
                .map(|v| f64::from(*v))
                .filter(|v| v.is_finite())
                .fold((f64::MAX, f64::MIN), |(lo, hi), v| (lo.min(v), hi.max(v)));
            let (lo, hi) = if lo > hi {
                (-1.0, 1.0)
            } else {
                let pad = ((hi - lo) * 0.08).max(hi.abs().max(1e-6) * 1e-3);
                (lo - pad, hi + pad)
            };
            let mut builder = ChartBuilder::on(panel);
            builder.margin(4);
            if text {
                builder.x_label_area_size(if ch + 1 == c { 22 } else { 4 });
                builder.y_label_area_size(62);
                if ch == 0 {
                    builder.caption(
                        format!("{} (score {:.4})", sample.label, sample.score),
                        (FONT, 15),
                    );
                }
            }
            let mut chart = builder
                .build_cartesian_2d(0f64..(window.saturating_sub(1)).max(1) as f64, lo..hi)
                .map_err(boxed)?;
            let y_format = |y: &f64| format_in_range(*y, hi - lo);
            let mut mesh = chart.configure_mesh();
            mesh.disable_x_mesh().light_line_style(WHITE.mix(0.0));
            if text {
                mesh.y_labels(4)
                    .label_style((FONT, 11))
                    .y_label_formatter(&y_format)
                    .x_labels(if ch + 1 == c { 5 } else { 0 })
                    .x_label_formatter(&|x| format!("{}", x.round() as i64));
                if col == 0 {
                    mesh.y_desc(name.as_str()).axis_desc_style((FONT, 12));
                }
            } else {
                mesh.x_labels(0).y_labels(0);
            }
            mesh.draw().map_err(boxed)?;
            chart
                .draw_series(LineSeries::new(
                    orig.iter()
                        .enumerate()
                        .map(|(t, v)| (t as f64, f64::from(*v))),
                    ShapeStyle::from(&TRAIN_COLOUR).stroke_width(2),
                ))
                .map_err(boxed)?;
            chart
                .draw_series(LineSeries::new(
                    rec.iter()
                        .enumerate()
                        .map(|(t, v)| (t as f64, f64::from(*v))),
                    ShapeStyle::from(&RECON_COLOUR).stroke_width(2),
                ))
                .map_err(boxed)?;
        }
    }
    Ok(())
}

fn family(d: &ErrorDistribution) -> &'static str {
    match d {
        ErrorDistribution::Gamma { .. } => "gamma",
        ErrorDistribution::LogNormal { .. } => "log-normal",
    }
}

fn pdf(d: &ErrorDistribution, x: f64) -> f64 {
    use statrs::distribution::{Continuous, Gamma, LogNormal};
    match *d {
        ErrorDistribution::Gamma { shape, rate } => {
            Gamma::new(shape, rate).map_or(f64::NAN, |g| g.pdf(x))
        }
        ErrorDistribution::LogNormal { location, scale } => {
            LogNormal::new(location, scale).map_or(f64::NAN, |l| l.pdf(x))
        }
    }
}

/// Tick label with enough decimals to tell ticks `range / 3` apart.
fn format_in_range(v: f64, range: f64) -> String {
    if range.is_nan()
        || range <= 0.0
        || v.abs() >= 1e5
        || (v != 0.0 && v.abs() < 1e-4 && range < 1e-4)
    {
        return format!("{v:.2e}");
    }
    let decimals = (-(range / 3.0).log10()).ceil().clamp(0.0, 6.0) as usize;
    format!("{v:.decimals$}")
}

/// Tick positions 1-2-5 per decade inside `[lo, hi]` (every integer
/// multiple when that gives fewer than 4).
fn log_ticks(lo: f64, hi: f64) -> Vec<f64> {
    let first = lo.log10().floor() as i32;
    let last = hi.log10().ceil() as i32;
    let pick = |mults: &[f64]| -> Vec<f64> {
        (first..=last)
            .flat_map(|e| mults.iter().map(move |m| m * 10f64.powi(e)))
            .filter(|v| *v >= lo && *v <= hi)
            .collect()
    };
    let ticks = pick(&[1.0, 2.0, 5.0]);
    if ticks.len() >= 4 {
        ticks
    } else {
        pick(&[1.0, 1.5, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0])
    }
}

/// Compact tick label: 3 significant digits, exponent for extremes.
fn format_short(v: f64) -> String {
    let a = v.abs();
    if a != 0.0 && !(1e-2..1e5).contains(&a) {
        format!("{v:.1e}")
    } else if a >= 100.0 {
        format!("{v:.0}")
    } else if a >= 1.0 {
        format!("{v:.2}")
    } else {
        format!("{v:.3}")
    }
}
