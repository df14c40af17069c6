//! What every plot shares: the font (looked up once per process), drawing
//! into a PNG with errors that name the file, the common colours and the
//! tick helpers.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use plotters::coord::Shift;
use plotters::prelude::*;

use super::ReportError;

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

pub(super) const FONT: &str = "sans-serif";

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

pub(super) type Area<'a> = DrawingArea<BitMapBackend<'a>, Shift>;
pub(super) type PlotResult = Result<(), Box<dyn std::error::Error + Send + Sync + 'static>>;

pub(super) fn draw(
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

pub(super) fn boxed<E: std::error::Error + Send + Sync + 'static>(
    e: DrawingAreaErrorKind<E>,
) -> Box<dyn std::error::Error + Send + Sync + 'static> {
    Box::new(e)
}

pub(super) const TRAIN_COLOUR: RGBColor = RGBColor(31, 119, 180);
pub(super) const THRESHOLD_COLOUR: RGBColor = RGBColor(214, 39, 40);

/// Tick label with enough decimals to tell ticks `range / 3` apart.
pub(super) fn format_in_range(v: f64, range: f64) -> String {
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
pub(super) fn log_ticks(lo: f64, hi: f64) -> Vec<f64> {
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
pub(super) fn format_short(v: f64) -> String {
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
