//! The benchmark's picture: a replayed log's score, threshold, labels and
//! alert state over time (`anomalyd-skab-score --plot`).

use std::path::Path;

use plotters::prelude::*;

use super::ReportError;
use super::draw::{
    Area, FONT, FONT_ENV, PlotResult, THRESHOLD_COLOUR, TRAIN_COLOUR, boxed, draw, font_available,
    format_short, log_ticks,
};
use crate::eval::{LabelledLog, ReplayOutput};

/// Draws a replayed log over time (`path`, PNG): the score on a log scale,
/// the threshold, the rows labelled anomalous (shaded) and the rows the
/// detector flagged (a band under the plot), with a line where scoring
/// starts (`first_row`; none for 0). `labels` and `replay` must describe the same rows
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

/// The spacing of the first two rows, for the axis label: `1 s`, `3 min`.
fn row_spacing(timestamps: &[i64]) -> String {
    let s = match timestamps {
        [a, b, ..] => (b - a) as f64 / 1e9,
        _ => return "?".into(),
    };
    if s >= 60.0 && (s / 60.0).fract() == 0.0 {
        format!("{} min", s / 60.0)
    } else {
        format!("{s} s")
    }
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
    let x_desc = format!("row ({} apart)", row_spacing(&labels.timestamps));
    if text {
        mesh.x_desc(x_desc)
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
    // A log trained on elsewhere (first_row 0) is scored throughout: no line.
    if first_row > 0 {
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
    }
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
