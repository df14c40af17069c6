//! Where published rows come from: a loaded log, or one synthetic pump per
//! asset with an optional injected fault.

use std::ops::Range;

use super::{SimSource, SimulateError, SimulateOptions, invalid};
use crate::core::log::{LoadOptions, LogTable, load_log};
use crate::core::synth::{FaultKind, PUMP_CHANNELS, PumpSimulator};

/// Rows of the synthetic pump are this far apart in event time.
pub const SYNTHETIC_PERIOD_MS: i64 = 1000;

pub(super) enum Rows {
    Synthetic {
        pumps: Vec<PumpSimulator>,
        fault: Option<(FaultKind, Range<usize>)>,
        all_assets: bool,
        row: [f64; 8],
    },
    Log {
        table: LogTable,
        columns: Vec<usize>,
        row: Vec<f64>,
    },
}

impl Rows {
    pub(super) fn new(opts: &SimulateOptions) -> Result<(Self, Vec<String>), SimulateError> {
        match &opts.source {
            SimSource::SyntheticPump => {
                let pumps = (0..opts.assets)
                    .map(|a| PumpSimulator::new(opts.seed.wrapping_add(a as u64)))
                    .collect();
                let rows = Rows::Synthetic {
                    pumps,
                    fault: opts.fault.clone(),
                    all_assets: opts.fault_all_assets,
                    row: [0.0; 8],
                };
                Ok((rows, PUMP_CHANNELS.iter().map(|c| c.to_string()).collect()))
            }
            SimSource::Csv(path) => {
                if opts.fault.is_some() {
                    return Err(invalid(
                        "fault",
                        "only the synthetic pump can inject faults",
                    ));
                }
                let table = load_log(path, &LoadOptions::default())?;
                let channels = table.default_channels();
                let columns = table.select(&channels)?;
                let row = Vec::with_capacity(columns.len());
                Ok((
                    Rows::Log {
                        table,
                        columns,
                        row,
                    },
                    channels,
                ))
            }
        }
    }

    /// Event-time offset of row `i` from row 0 in ms; `None` past the end.
    pub(super) fn offset_ms(&self, i: usize) -> Option<i64> {
        match self {
            Rows::Synthetic { .. } => Some(i as i64 * SYNTHETIC_PERIOD_MS),
            Rows::Log { table, .. } => {
                let ts = *table.timestamps.get(i)?;
                Some(ts.saturating_sub(table.timestamps[0]).div_euclid(1_000_000))
            }
        }
    }

    /// Own event time of row 0 (logs only).
    pub(super) fn first_ts_ms(&self) -> Option<i64> {
        match self {
            Rows::Synthetic { .. } => None,
            Rows::Log { table, .. } => table.timestamps.first().map(|ns| ns.div_euclid(1_000_000)),
        }
    }

    pub(super) fn rows_available(&self) -> Option<usize> {
        match self {
            Rows::Synthetic { .. } => None,
            Rows::Log { table, .. } => Some(table.len()),
        }
    }

    /// Values of row `i` for asset `asset`; rows must be taken in order.
    pub(super) fn values(&mut self, asset: usize, i: usize) -> &[f64] {
        match self {
            Rows::Synthetic {
                pumps,
                fault,
                all_assets,
                row,
            } => {
                let active = fault
                    .as_ref()
                    .filter(|(_, r)| (asset == 0 || *all_assets) && r.contains(&i))
                    .map(|(kind, _)| *kind);
                let pump = &mut pumps[asset];
                pump.set_fault(active);
                *row = pump.next_row();
                &row[..]
            }
            Rows::Log {
                table,
                columns,
                row,
            } => {
                row.clear();
                row.extend(columns.iter().map(|&c| table.values[i][c]));
                &row[..]
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::synth::FaultKind;

    #[test]
    fn synthetic_rows_match_synth_generate_for_asset_zero() {
        let opts = SimulateOptions {
            assets: 2,
            seed: 7,
            fault: Some((FaultKind::Bearing, 3..6)),
            ..SimulateOptions::default()
        };
        let (mut rows, channels) = Rows::new(&opts).unwrap();
        assert_eq!(channels, PUMP_CHANNELS);
        let log =
            crate::core::synth::generate(8, 7, 0, 1_000_000_000, Some((FaultKind::Bearing, 3..6)));
        let other = crate::core::synth::generate(8, 8, 0, 1_000_000_000, None);
        for i in 0..8 {
            assert_eq!(rows.offset_ms(i), Some(i as i64 * 1000));
            assert_eq!(rows.values(0, i), &log.values[i][..], "asset 0 row {i}");
            assert_eq!(rows.values(1, i), &other.values[i][..], "asset 1 row {i}");
        }
    }

    #[test]
    fn csv_rows_keep_their_spacing() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log.csv");
        std::fs::write(
            &path,
            "datetime;a;b;anomaly\n2020-03-09 10:14:33;1;2;0\n2020-03-09 10:14:34;3;;0\n2020-03-09 10:14:36;5;6;1\n",
        )
        .unwrap();
        let opts = SimulateOptions {
            source: SimSource::Csv(path),
            ..SimulateOptions::default()
        };
        let (mut rows, channels) = Rows::new(&opts).unwrap();
        assert_eq!(channels, ["a", "b"]);
        assert_eq!(rows.rows_available(), Some(3));
        assert_eq!(rows.first_ts_ms(), Some(1_583_748_873_000));
        assert_eq!(
            (0..4).map(|i| rows.offset_ms(i)).collect::<Vec<_>>(),
            [Some(0), Some(1000), Some(3000), None]
        );
        assert_eq!(rows.values(0, 1)[0], 3.0);
        assert!(rows.values(0, 1)[1].is_nan());
    }
}
