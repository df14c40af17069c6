//! The three plots of the training report: `loss.png` (losses per
//! epoch), `errors.png` (validation scores, fitted distribution,
//! threshold) and `reconstruction.png` (sample windows and their
//! reconstructions).

use anomalyd::core::contract::ErrorDistribution;
use plotters::prelude::*;

use super::Report;
use super::SampleWindow;
use super::draw::{
    Area, FONT, PlotResult, THRESHOLD_COLOUR, TRAIN_COLOUR, boxed, format_in_range, format_short,
    log_ticks,
};

const VALIDATION_COLOUR: RGBColor = RGBColor(255, 127, 14);
const RECON_COLOUR: RGBColor = RGBColor(214, 39, 40);

pub(super) fn loss_plot(area: &Area<'_>, report: &Report, text: bool) -> PlotResult {
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

pub(super) fn error_plot(
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

pub(super) fn reconstruction_plot(
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
