//! The Tennessee Eastman protocol (docs/architecture.md §11): per fault file
//! the fault detection rate (FDR, the share of faulty rows flagged), over
//! all files the false-alarm rate (FAR, the share of normal rows flagged:
//! the rows before each fault and every row of the normal test file), and
//! the mean FDR over the faults other than those the literature treats as
//! undetectable from these measurements.
//!
//! Which rows are faulty comes from each file's label column, not from the
//! row number, so the scorer holds to the labels as SKAB's does.

use std::fmt::Write as _;
use std::path::Path;

use super::{Confusion, EvalError};

/// Faults 3, 9 and 15: no measurement shows them; left out of the mean FDR.
pub const UNDETECTABLE_FAULTS: [u32; 3] = [3, 9, 15];

/// One replayed test file of the benchmark.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FaultRun {
    /// `XX` of `dXX_te.csv`; 0 is the normal-operation test file.
    pub fault: u32,
    /// All its rows, labels against the detector's state.
    pub confusion: Confusion,
}

/// The benchmark's figures.
#[derive(Debug, Clone, PartialEq)]
pub struct TepSummary {
    /// Per fault file in the order given: fault number and FDR (`None` for
    /// a file without faulty rows, such as `d00_te.csv`).
    pub fdr: Vec<(u32, Option<f64>)>,
    /// Mean FDR over the faults not in the excluded list; `None` if none.
    pub mean_fdr: Option<f64>,
    /// Faults in the mean.
    pub counted: Vec<u32>,
    /// The normal rows of every file together.
    pub normal: Confusion,
}

impl TepSummary {
    /// FP / (FP + TN) over the normal rows of every file.
    pub fn far(&self) -> Option<f64> {
        self.normal.far()
    }
}

/// The fault number of a benchmark file, `dXX_te.csv` (or `dXX.csv`) -> XX.
///
/// # Errors
/// [`EvalError::LogName`] for any other name.
pub fn fault_number(path: &Path) -> Result<u32, EvalError> {
    let bad = || EvalError::LogName {
        path: path.to_path_buf(),
    };
    let stem = path.file_stem().and_then(|s| s.to_str()).ok_or_else(bad)?;
    let digits = stem.strip_prefix('d').ok_or_else(bad)?;
    let digits = digits.strip_suffix("_te").unwrap_or(digits);
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad());
    }
    digits.parse().map_err(|_| bad())
}

/// Per-fault FDR, the mean FDR without `excluded` faults, and the FAR over
/// all normal rows.
pub fn summarise(runs: &[FaultRun], excluded: &[u32]) -> TepSummary {
    let fdr: Vec<(u32, Option<f64>)> = runs
        .iter()
        .map(|r| {
            let faulty = r.confusion.tp + r.confusion.fn_;
            (
                r.fault,
                (faulty > 0).then(|| r.confusion.tp as f64 / faulty as f64),
            )
        })
        .collect();
    let counted: Vec<(u32, f64)> = fdr
        .iter()
        .filter(|(f, _)| !excluded.contains(f))
        .filter_map(|(f, v)| v.map(|v| (*f, v)))
        .collect();
    let mean_fdr = (!counted.is_empty())
        .then(|| counted.iter().map(|(_, v)| v).sum::<f64>() / counted.len() as f64);
    let normal = runs
        .iter()
        .map(|r| Confusion {
            tp: 0,
            fn_: 0,
            ..r.confusion
        })
        .sum();
    TepSummary {
        fdr,
        mean_fdr,
        counted: counted.iter().map(|(f, _)| *f).collect(),
        normal,
    }
}

/// The per-fault table and the closing line, as plain text.
pub fn format_tep(runs: &[FaultRun], summary: &TepSummary) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "{:>5} {:>7} {:>7} {:>7} {:>7} {:>7}",
        "fault", "faulty", "flagged", "normal", "alarms", "FDR"
    );
    for (run, (_, fdr)) in runs.iter().zip(&summary.fdr) {
        let c = run.confusion;
        let _ = writeln!(
            s,
            "{:>5} {:>7} {:>7} {:>7} {:>7} {:>7}",
            run.fault,
            c.tp + c.fn_,
            c.tp,
            c.fp + c.tn,
            c.fp,
            fdr.map_or_else(|| "-".into(), |v| format!("{v:.3}"))
        );
    }
    let _ = writeln!(s, "{}", summary_line(summary));
    s
}

/// `mean FDR 0.808 FAR 0.00 % (faults 1,2,4,...; 2560 normal rows)`.
pub fn summary_line(summary: &TepSummary) -> String {
    let faults: Vec<String> = summary.counted.iter().map(u32::to_string).collect();
    format!(
        "mean FDR {} FAR {} (faults {}; {} normal rows)",
        summary
            .mean_fdr
            .map_or_else(|| "-".into(), |v| format!("{v:.3}")),
        summary
            .far()
            .map_or_else(|| "-".into(), |v| format!("{:.2} %", v * 100.0)),
        if faults.is_empty() {
            "-".into()
        } else {
            faults.join(",")
        },
        summary.normal.fp + summary.normal.tn
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(fault: u32, tp: u64, fn_: u64, fp: u64, tn: u64) -> FaultRun {
        FaultRun {
            fault,
            confusion: Confusion { tp, fp, fn_, tn },
        }
    }

    #[test]
    fn fault_numbers_come_from_the_file_name() {
        assert_eq!(fault_number(Path::new("x/d05_te.csv")).unwrap(), 5);
        assert_eq!(fault_number(Path::new("d00_te.csv")).unwrap(), 0);
        assert_eq!(fault_number(Path::new("d21.csv")).unwrap(), 21);
        for bad in ["x/e05_te.csv", "d_te.csv", "dx1_te.csv", "valve1/3.csv"] {
            assert!(fault_number(Path::new(bad)).is_err(), "{bad}");
        }
    }

    #[test]
    fn fdr_per_fault_mean_without_excluded_and_far_over_all_normal_rows() {
        let runs = [
            // d00_te: 960 normal rows, 12 alarms.
            run(0, 0, 0, 12, 948),
            // Fault 1: 800 faulty rows, 792 flagged; 160 normal rows, 4 alarms.
            run(1, 792, 8, 4, 156),
            // Fault 3 (excluded): 80 flagged, no alarms.
            run(3, 80, 720, 0, 160),
            // Fault 5: 400 flagged.
            run(5, 400, 400, 0, 160),
        ];
        let s = summarise(&runs, &UNDETECTABLE_FAULTS);
        assert_eq!(
            s.fdr,
            vec![(0, None), (1, Some(0.99)), (3, Some(0.1)), (5, Some(0.5))]
        );
        assert_eq!(s.counted, vec![1, 5]);
        assert!((s.mean_fdr.unwrap() - 0.745).abs() < 1e-12);
        // 16 alarms in 960 + 3 * 160 = 1440 normal rows.
        assert_eq!((s.normal.fp, s.normal.tn), (16, 1424));
        assert!((s.far().unwrap() - 16.0 / 1440.0).abs() < 1e-12);
        // Nothing excluded: fault 3 counts.
        let all = summarise(&runs, &[]);
        assert!((all.mean_fdr.unwrap() - (0.99 + 0.1 + 0.5) / 3.0).abs() < 1e-12);
    }

    #[test]
    fn table_and_line_show_the_figures() {
        let runs = [run(0, 0, 0, 0, 960), run(2, 800, 0, 16, 144)];
        let s = summarise(&runs, &UNDETECTABLE_FAULTS);
        let text = format_tep(&runs, &s);
        assert!(text.contains("1.000"), "{text}");
        assert!(
            text.ends_with("mean FDR 1.000 FAR 1.43 % (faults 2; 1120 normal rows)\n"),
            "{text}"
        );
        let empty = summarise(&[run(0, 0, 0, 0, 10)], &UNDETECTABLE_FAULTS);
        assert_eq!(empty.mean_fdr, None);
        assert_eq!(
            summary_line(&empty),
            "mean FDR - FAR 0.00 % (faults -; 10 normal rows)"
        );
    }
}
