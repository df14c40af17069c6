//! Per-channel z-score normalisation with the statistics stored in the model
//! file. The trainer fits them ([`Normaliser::fit`]) and both trainer and
//! daemon apply them through [`Normaliser`], so features are computed the
//! same way in training and serving.

use crate::core::contract::NormaliserParams;

/// Applies `(x - mean) / std` per channel.
#[derive(Debug, Clone, PartialEq)]
pub struct Normaliser {
    mean: Vec<f32>,
    std: Vec<f32>,
    inv_std: Vec<f32>,
}

impl Normaliser {
    /// From fitted parameters. A missing, zero, negative or non-finite std
    /// is taken as 1 and a missing or non-finite mean as 0 (metadata
    /// validation refuses such files; this only keeps the arithmetic finite).
    pub fn new(params: &NormaliserParams) -> Self {
        let channels = params.mean.len().max(params.std.len());
        let mean: Vec<f32> = (0..channels)
            .map(|c| {
                params
                    .mean
                    .get(c)
                    .copied()
                    .filter(|m| m.is_finite())
                    .unwrap_or(0.0)
            })
            .collect();
        let std: Vec<f32> = (0..channels)
            .map(|c| {
                params
                    .std
                    .get(c)
                    .copied()
                    .filter(|s| s.is_finite() && *s > 0.0)
                    .unwrap_or(1.0)
            })
            .collect();
        let inv_std = std.iter().map(|s| 1.0 / s).collect();
        Self { mean, std, inv_std }
    }

    /// Number of channels.
    pub fn channels(&self) -> usize {
        self.mean.len()
    }

    /// Fits per-channel mean and population standard deviation over the
    /// finite values of `rows` (each row holds one value per channel, in the
    /// order of `channels`; NaN and infinities are skipped).
    ///
    /// A constant channel (std below `1e-9 * max(1, |mean|)`) gets std 1 and
    /// is listed in `constant_channels`, so it normalises to 0 instead of
    /// blowing up; a channel with no finite value gets mean 0, std 1 and is
    /// listed too.
    pub fn fit(channels: &[String], rows: &[Vec<f64>]) -> NormaliserParams {
        let n = channels.len();
        let mut count = vec![0u64; n];
        let mut sum = vec![0.0f64; n];
        for row in rows {
            for (c, &v) in row.iter().take(n).enumerate() {
                if v.is_finite() {
                    count[c] += 1;
                    sum[c] += v;
                }
            }
        }
        let mean: Vec<f64> = (0..n)
            .map(|c| {
                if count[c] > 0 {
                    sum[c] / count[c] as f64
                } else {
                    0.0
                }
            })
            .collect();
        // Second pass on deviations: exact enough for sensor values far from 0.
        let mut sq = vec![0.0f64; n];
        for row in rows {
            for (c, &v) in row.iter().take(n).enumerate() {
                if v.is_finite() {
                    let d = v - mean[c];
                    sq[c] += d * d;
                }
            }
        }
        let mut params = NormaliserParams {
            mean: Vec::with_capacity(n),
            std: Vec::with_capacity(n),
            constant_channels: Vec::new(),
            min: Vec::with_capacity(n),
            max: Vec::with_capacity(n),
        };
        // The range seen, for the daemon's `out_of_range` alarm.
        let mut lo = vec![f64::INFINITY; n];
        let mut hi = vec![f64::NEG_INFINITY; n];
        for row in rows {
            for (c, &v) in row.iter().take(n).enumerate() {
                if v.is_finite() {
                    lo[c] = lo[c].min(v);
                    hi[c] = hi[c].max(v);
                }
            }
        }
        for c in 0..n {
            let std = if count[c] > 0 {
                (sq[c] / count[c] as f64).sqrt()
            } else {
                0.0
            };
            let mean32 = mean[c] as f32;
            let std32 = std as f32;
            // Values so large that their statistics do not fit an f32 are
            // treated like a channel without values.
            let unusable = count[c] == 0 || !mean32.is_finite() || !std32.is_finite();
            let constant = unusable || std < 1e-9 * mean[c].abs().max(1.0) || std32 <= 0.0;
            params.mean.push(if unusable { 0.0 } else { mean32 });
            let (a, b) = (lo[c] as f32, hi[c] as f32);
            let known = !unusable && a.is_finite() && b.is_finite();
            params.min.push(if known { a } else { 0.0 });
            params.max.push(if known { b } else { 0.0 });
            if constant {
                params.std.push(1.0);
                params.constant_channels.push(channels[c].clone());
            } else {
                params.std.push(std32);
            }
        }
        params
    }

    /// Normalises a channel-major window (`data[c * length + t]`) in place.
    /// Channels beyond the fitted ones, if any, are left as they are.
    pub fn apply_window(&self, data: &mut [f32], length: usize) {
        if length == 0 {
            return;
        }
        for (chunk, (m, inv)) in data
            .chunks_exact_mut(length)
            .zip(self.mean.iter().zip(&self.inv_std))
        {
            for x in chunk {
                *x = (*x - m) * inv;
            }
        }
    }

    /// Normalises one frame's values (one per channel) in place.
    pub fn apply_frame(&self, values: &mut [f32]) {
        for (x, (m, inv)) in values.iter_mut().zip(self.mean.iter().zip(&self.inv_std)) {
            *x = (*x - m) * inv;
        }
    }

    /// Turns a normalised channel-major window back into engineering units
    /// (e.g. a reconstruction, for plots).
    pub fn invert_window(&self, data: &mut [f32], length: usize) {
        if length == 0 {
            return;
        }
        for (chunk, (m, s)) in data
            .chunks_exact_mut(length)
            .zip(self.mean.iter().zip(&self.std))
        {
            for x in chunk {
                *x = *x * s + m;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(n: &[&str]) -> Vec<String> {
        n.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn fit_matches_hand_computed_population_statistics() {
        // Channel a: 2, 4, 4, 4, 5, 5, 7, 9 -> mean 5, population std 2.
        // Channel b: NaN and inf are skipped: 1, 3 -> mean 2, std 1.
        let a = [2.0, 4.0, 4.0, 4.0, 5.0, 5.0, 7.0, 9.0];
        let b = [
            1.0,
            f64::NAN,
            3.0,
            f64::INFINITY,
            f64::NAN,
            f64::NAN,
            f64::NAN,
            f64::NAN,
        ];
        let rows: Vec<Vec<f64>> = a.iter().zip(b).map(|(&x, y)| vec![x, y]).collect();
        let p = Normaliser::fit(&names(&["a", "b"]), &rows);
        assert_eq!(p.mean, [5.0, 2.0]);
        assert_eq!(p.std, [2.0, 1.0]);
        assert!(p.constant_channels.is_empty());
        // The range seen is recorded for the out_of_range alarm.
        assert_eq!(p.min, [2.0, 1.0]);
        assert_eq!(p.max, [9.0, 3.0]);
    }

    #[test]
    fn constant_and_empty_channels_get_std_one_and_are_listed() {
        let rows = vec![
            vec![230.0, f64::NAN, 1.0],
            vec![230.0, f64::NAN, 2.0],
            vec![230.0 + 1e-10, f64::NAN, 3.0],
        ];
        let p = Normaliser::fit(&names(&["voltage", "dead", "x"]), &rows);
        assert_eq!(p.mean[0], 230.0);
        assert_eq!(p.std[..2], [1.0, 1.0]);
        assert_eq!(p.mean[1], 0.0);
        assert_eq!(p.constant_channels, ["voltage", "dead"]);
        let n = Normaliser::new(&p);
        let mut frame = [230.0, 5.0, 2.0];
        n.apply_frame(&mut frame);
        assert_eq!(frame[..2], [0.0, 5.0]);
        assert_eq!(n.channels(), 3);
        // A small-valued but varying channel is not constant.
        let p = Normaliser::fit(&names(&["tiny"]), &[vec![1e-6], vec![3e-6]]);
        assert!(p.constant_channels.is_empty());
        assert!((p.std[0] - 1e-6).abs() < 1e-12);
    }

    #[test]
    fn apply_and_invert_round_trip_on_a_channel_major_window() {
        let params = NormaliserParams {
            mean: vec![10.0, -1.0],
            std: vec![2.0, 0.5],
            constant_channels: vec![],
            min: vec![],
            max: vec![],
        };
        let n = Normaliser::new(&params);
        let original = [10.0, 12.0, 14.0, -1.0, -0.5, -2.0];
        let mut w = original;
        n.apply_window(&mut w, 3);
        assert_eq!(w, [0.0, 1.0, 2.0, 0.0, 1.0, -2.0]);
        n.invert_window(&mut w, 3);
        for (a, b) in w.iter().zip(original) {
            assert!((a - b).abs() < 1e-6);
        }
        let mut f = [12.0, 0.0];
        n.apply_frame(&mut f);
        assert_eq!(f, [1.0, 2.0]);
    }

    #[test]
    fn bad_parameters_and_sizes_do_not_panic() {
        let n = Normaliser::new(&NormaliserParams {
            mean: vec![f32::NAN, 1.0, 2.0],
            std: vec![0.0, -1.0],
            constant_channels: vec![],
            min: vec![],
            max: vec![],
        });
        let mut f = [1.0, 1.0, 4.0, 7.0];
        n.apply_frame(&mut f);
        assert_eq!(f, [1.0, 0.0, 2.0, 7.0]);
        let mut w = [1.0; 5];
        n.apply_window(&mut w, 0);
        n.apply_window(&mut w, 2);
        n.invert_window(&mut w, 2);
        let p = Normaliser::fit(&names(&["a", "b"]), &[vec![1.0], vec![]]);
        assert_eq!(p.constant_channels, ["a", "b"]);
        let p = Normaliser::fit(&names(&["huge"]), &[vec![1e300], vec![-1e300]]);
        assert_eq!((p.mean[0], p.std[0]), (0.0, 1.0));
        assert_eq!(p.constant_channels, ["huge"]);
    }
}
