//! Windowing: a per-asset ring buffer of the last `length` frames that hands
//! out a [`Window`] (`C x T`, channel-major) every `stride` frames, the shape
//! the model's `window` input takes. A frame after a gap restarts the
//! buffer, and a window with too many imputed values is refused rather than
//! scored.

use crate::core::align::Frame;

/// `length` consecutive frames of every channel.
#[derive(Debug, Clone, PartialEq)]
pub struct Window {
    /// Timestamp of the newest frame.
    pub end_ts: i64,
    /// Channel-major: `data[c * length + t]`, `t = 0` the oldest frame.
    pub data: Vec<f32>,
    /// Largest fraction of imputed values in any one channel.
    pub imputed_fraction: f32,
}

/// Why a full window was not handed out for scoring.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum WindowSkip {
    /// Some channel had more imputed values than allowed; the caller counts a gap.
    TooManyImputed { fraction: f32 },
}

/// Ring buffer of frames that emits windows; see the module documentation.
#[derive(Debug, Clone)]
pub struct WindowBuffer {
    channels: usize,
    length: usize,
    stride: usize,
    max_imputed_fraction: f32,
    /// Channel-major ring: `values[c * length + slot]`.
    values: Vec<f32>,
    imputed: Vec<bool>,
    /// Slot the next frame goes into.
    next: usize,
    /// Frames pushed since the last reset.
    filled: usize,
}

impl WindowBuffer {
    /// A buffer for frames of `channels` values giving windows of `length`
    /// frames every `stride` frames. `length` and `stride` below 1 are taken
    /// as 1.
    pub fn new(channels: usize, length: usize, stride: usize, max_imputed_fraction: f32) -> Self {
        let length = length.max(1);
        Self {
            channels,
            length,
            stride: stride.max(1),
            max_imputed_fraction,
            values: vec![0.0; channels * length],
            imputed: vec![false; channels * length],
            next: 0,
            filled: 0,
        }
    }

    /// Adds a frame. Returns a window when `length` frames are in since the
    /// last reset and then every `stride` frames: `Ok` to score it, or `Err`
    /// when too many of its values were imputed. A frame with `gap_before`
    /// first resets the buffer. A frame with the wrong number of values (a
    /// caller bug) is treated like a gap and dropped.
    pub fn push(&mut self, frame: &Frame) -> Option<Result<Window, WindowSkip>> {
        if frame.gap_before {
            self.reset();
        }
        if frame.values.len() != self.channels || frame.imputed.len() != self.channels {
            self.reset();
            return None;
        }
        let slot = self.next;
        for c in 0..self.channels {
            self.values[c * self.length + slot] = frame.values[c];
            self.imputed[c * self.length + slot] = frame.imputed[c];
        }
        self.next = (slot + 1) % self.length;
        self.filled = self.filled.saturating_add(1);
        if self.filled < self.length || !(self.filled - self.length).is_multiple_of(self.stride) {
            return None;
        }
        Some(self.build(frame.ts))
    }

    /// Forgets all frames: the next window comes after `length` new frames.
    pub fn reset(&mut self) {
        self.next = 0;
        self.filled = 0;
    }

    /// Window length T in frames.
    pub fn length(&self) -> usize {
        self.length
    }

    /// Number of channels C.
    pub fn channels(&self) -> usize {
        self.channels
    }

    fn build(&self, end_ts: i64) -> Result<Window, WindowSkip> {
        let len = self.length;
        // `next` is the oldest slot once the ring is full.
        let oldest = self.next;
        let mut data = Vec::with_capacity(self.channels * len);
        let mut worst = 0usize;
        for c in 0..self.channels {
            let ring = &self.values[c * len..(c + 1) * len];
            data.extend_from_slice(&ring[oldest..]);
            data.extend_from_slice(&ring[..oldest]);
            let imputed = self.imputed[c * len..(c + 1) * len]
                .iter()
                .filter(|&&i| i)
                .count();
            worst = worst.max(imputed);
        }
        let fraction = worst as f32 / len as f32;
        if fraction > self.max_imputed_fraction {
            return Err(WindowSkip::TooManyImputed { fraction });
        }
        Ok(Window {
            end_ts,
            data,
            imputed_fraction: fraction,
        })
    }
}

/// Every window a [`WindowBuffer`] would hand out for these frames, leaving
/// out the ones refused for imputation (for the trainer).
pub fn windows_from_frames(
    frames: &[Frame],
    channels: usize,
    length: usize,
    stride: usize,
    max_imputed_fraction: f32,
) -> Vec<Window> {
    let mut buf = WindowBuffer::new(channels, length, stride, max_imputed_fraction);
    frames
        .iter()
        .filter_map(|f| buf.push(f))
        .filter_map(Result::ok)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Frame `i` of 2 channels: values `i` and `100 + i`.
    fn frame(i: i64) -> Frame {
        Frame {
            ts: i,
            values: vec![i as f32, 100.0 + i as f32],
            imputed: vec![false, false],
            gap_before: false,
        }
    }

    #[test]
    fn first_window_after_length_frames_channel_major() {
        let mut buf = WindowBuffer::new(2, 4, 1, 0.0);
        for i in 0..3 {
            assert_eq!(buf.push(&frame(i)), None);
        }
        let w = buf.push(&frame(3)).unwrap().unwrap();
        assert_eq!(w.end_ts, 3);
        assert_eq!(w.data, [0.0, 1.0, 2.0, 3.0, 100.0, 101.0, 102.0, 103.0]);
        assert_eq!(w.imputed_fraction, 0.0);
        // The ring wraps: oldest first.
        let w = buf.push(&frame(4)).unwrap().unwrap();
        assert_eq!(w.data, [1.0, 2.0, 3.0, 4.0, 101.0, 102.0, 103.0, 104.0]);
        assert_eq!((buf.length(), buf.channels()), (4, 2));
    }

    #[test]
    fn stride_three() {
        let frames: Vec<Frame> = (0..12).map(frame).collect();
        let w = windows_from_frames(&frames, 2, 4, 3, 0.0);
        // Windows end at frames 3, 6, 9.
        assert_eq!(w.iter().map(|w| w.end_ts).collect::<Vec<_>>(), [3, 6, 9]);
        assert_eq!(w[1].data, [3.0, 4.0, 5.0, 6.0, 103.0, 104.0, 105.0, 106.0]);
        assert_eq!(w[2].data[..4], [6.0, 7.0, 8.0, 9.0]);
    }

    #[test]
    fn gap_restarts_the_window() {
        let mut buf = WindowBuffer::new(2, 3, 1, 0.0);
        let mut got = Vec::new();
        for i in 0..8 {
            let mut f = frame(i);
            f.gap_before = i == 4;
            if let Some(w) = buf.push(&f) {
                got.push(w.unwrap());
            }
        }
        assert_eq!(
            got.iter().map(|w| w.end_ts).collect::<Vec<_>>(),
            [2, 3, 6, 7]
        );
        // No pre-gap frame leaks into the window after the gap.
        assert_eq!(got[2].data[..3], [4.0, 5.0, 6.0]);
        buf.reset();
        assert_eq!(buf.push(&frame(9)), None);
    }

    #[test]
    fn too_many_imputed_values_refuse_the_window() {
        let mut buf = WindowBuffer::new(2, 4, 1, 0.25);
        let mut results = Vec::new();
        for i in 0..7 {
            let mut f = frame(i);
            // Channel 1 imputed at frames 2 and 3.
            f.imputed[1] = i == 2 || i == 3;
            results.push(buf.push(&f));
        }
        // Window 0..=3 has 2/4 imputed in channel 1.
        assert_eq!(
            results[3],
            Some(Err(WindowSkip::TooManyImputed { fraction: 0.5 }))
        );
        assert_eq!(
            results[4],
            Some(Err(WindowSkip::TooManyImputed { fraction: 0.5 }))
        );
        // 3..=6: one imputed value, 1/4 is allowed and reported.
        assert_eq!(results[6].clone().unwrap().unwrap().imputed_fraction, 0.25);
        let frames: Vec<Frame> = (0..7)
            .map(|i| {
                let mut f = frame(i);
                f.imputed[0] = i == 2 || i == 3;
                f
            })
            .collect();
        let kept = windows_from_frames(&frames, 2, 4, 1, 0.25);
        assert_eq!(kept.iter().map(|w| w.end_ts).collect::<Vec<_>>(), [6]);
    }

    #[test]
    fn wrong_width_frames_and_degenerate_sizes_do_not_panic() {
        let mut buf = WindowBuffer::new(2, 0, 0, 1.0);
        assert_eq!(buf.length(), 1);
        let mut f = frame(0);
        f.values.pop();
        assert_eq!(buf.push(&f), None);
        assert!(buf.push(&frame(1)).is_some());
        let mut empty = WindowBuffer::new(0, 3, 1, 0.0);
        let f = Frame {
            ts: 0,
            values: vec![],
            imputed: vec![],
            gap_before: false,
        };
        for _ in 0..3 {
            let _ = empty.push(&f);
        }
    }
}
