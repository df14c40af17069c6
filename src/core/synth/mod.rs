//! A synthetic centrifugal pump: eight correlated 1 Hz channels with slow
//! load changes, and three faults that can be switched on. Tests, the demo,
//! the MQTT simulator and the shipped default model all use it, so it is
//! deterministic per seed and needs no data files.
//!
//! The physics is rough but keeps the relations an autoencoder has to learn:
//! flow follows pump speed and pressure its square (affinity laws), current
//! follows hydraulic power (flow x pressure) and the mains voltage, motor
//! temperature follows current squared with a few minutes' lag, vibration
//! grows with speed and carries a few slow periodic components. Faults break
//! those relations rather than push any one channel out of its normal range:
//! - [`FaultKind::Bearing`]: vibration grows and gains a new periodic
//!   component; the motor runs a few degrees warmer.
//! - [`FaultKind::Cavitation`]: pressure drops, flow turns noisy, vibration
//!   gets broadband noise.
//! - [`FaultKind::Blockage`]: flow falls while pressure rises; current shifts
//!   down with the hydraulic power.
//!
//! Faults ramp in over [`FAULT_RAMP_STEPS`] samples, or over hours for a
//! slowly growing fault ([`PumpSimulator::set_ramp_steps`], [`generate_ramped`]).

use std::f64::consts::TAU;
use std::fmt;
use std::ops::Range;
use std::str::FromStr;

use crate::core::timestamp::format_rfc3339;

/// Channel names, in the order of [`PumpSimulator::next_row`].
pub const PUMP_CHANNELS: [&str; 8] = [
    "vibration_1",
    "vibration_2",
    "current",
    "pressure",
    "motor_temp",
    "fluid_temp",
    "voltage",
    "flow_rate",
];

/// Samples over which a fault grows from nothing to full strength.
pub const FAULT_RAMP_STEPS: u64 = 90;

/// Sensor resolution per channel (values are rounded to it, like a real
/// transmitter's output; it also keeps CSV output short).
const RESOLUTION: [f64; 8] = [1e4, 1e4, 1e3, 1e3, 1e2, 1e2, 1e2, 1e2];

/// A fault the simulator can produce.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FaultKind {
    Bearing,
    Cavitation,
    Blockage,
}

impl FaultKind {
    /// Every fault, for loops and help texts.
    pub const ALL: [FaultKind; 3] = [
        FaultKind::Bearing,
        FaultKind::Cavitation,
        FaultKind::Blockage,
    ];

    /// Lower-case name, as accepted by [`FromStr`].
    pub fn name(self) -> &'static str {
        match self {
            FaultKind::Bearing => "bearing",
            FaultKind::Cavitation => "cavitation",
            FaultKind::Blockage => "blockage",
        }
    }
}

impl fmt::Display for FaultKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A fault name that is not one of [`FaultKind::ALL`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown fault {0:?}; expected one of: bearing, cavitation, blockage")]
pub struct UnknownFault(pub String);

impl FromStr for FaultKind {
    type Err = UnknownFault;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        FaultKind::ALL
            .into_iter()
            .find(|k| k.name().eq_ignore_ascii_case(s.trim()))
            .ok_or_else(|| UnknownFault(s.to_string()))
    }
}

/// SplitMix64: tiny, fast, and good enough for simulated sensor noise.
#[derive(Debug, Clone)]
struct Rng {
    state: u64,
    spare: Option<f64>,
}

impl Rng {
    fn new(seed: u64) -> Self {
        Self {
            state: seed,
            spare: None,
        }
    }

    fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `[0, 1)`.
    fn uniform(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    fn range(&mut self, lo: f64, hi: f64) -> f64 {
        lo + (hi - lo) * self.uniform()
    }

    /// Standard normal (Box-Muller, both values used).
    fn normal(&mut self) -> f64 {
        if let Some(z) = self.spare.take() {
            return z;
        }
        // 1 - u is in (0, 1], so the log is finite.
        let r = (-2.0 * (1.0 - self.uniform()).ln()).sqrt();
        let theta = TAU * self.uniform();
        self.spare = Some(r * theta.sin());
        r * theta.cos()
    }
}

/// The pump: call [`PumpSimulator::next_row`] once per second of simulated time.
#[derive(Debug, Clone)]
pub struct PumpSimulator {
    rng: Rng,
    step: u64,
    /// Relative pump speed (duty), about 0.55 to 1.
    load: f64,
    load_target: f64,
    next_load_change: u64,
    motor_temp: f64,
    fluid_temp: f64,
    voltage_drift: f64,
    /// Coloured (AR(1)) noise of flow and pressure.
    flow_noise: f64,
    pressure_noise: f64,
    /// Phases of the vibration components and of the day-scale temperature.
    phases: [f64; 5],
    fault: Option<FaultKind>,
    fault_age: u64,
    /// Samples over which a fault grows to full strength.
    ramp_steps: u64,
}

impl PumpSimulator {
    /// A pump in steady operation; the same seed gives the same signal.
    pub fn new(seed: u64) -> Self {
        let mut rng = Rng::new(seed);
        let load = rng.range(0.6, 0.95);
        let mut phases = [0.0; 5];
        for p in &mut phases {
            *p = rng.range(0.0, TAU);
        }
        let next_load_change = rng.range(120.0, 600.0) as u64;
        let fluid_temp = 24.0 + 1.5 * phases[4].sin() + 3.0 * load;
        let current = 1.5 + 0.045 * (40.0 * load) * (0.3 + 3.7 * load * load);
        let motor_temp = fluid_temp + 8.0 + 0.55 * current * current;
        Self {
            rng,
            step: 0,
            load,
            load_target: load,
            next_load_change,
            motor_temp,
            fluid_temp,
            voltage_drift: 0.0,
            flow_noise: 0.0,
            pressure_noise: 0.0,
            phases,
            fault: None,
            fault_age: 0,
            ramp_steps: FAULT_RAMP_STEPS,
        }
    }

    /// Makes faults grow to full strength over `steps` samples (at least 1)
    /// instead of [`FAULT_RAMP_STEPS`]: wear or fouling that takes hours.
    pub fn set_ramp_steps(&mut self, steps: u64) {
        self.ramp_steps = steps.max(1);
    }

    /// Switches a fault on (it ramps in over [`FAULT_RAMP_STEPS`] samples) or
    /// off (at once). Setting the fault already active changes nothing.
    pub fn set_fault(&mut self, fault: Option<FaultKind>) {
        if fault != self.fault {
            self.fault = fault;
            self.fault_age = 0;
        }
    }

    /// The active fault.
    pub fn fault(&self) -> Option<FaultKind> {
        self.fault
    }

    /// The next 1 Hz sample, in the order of [`PUMP_CHANNELS`]. Always finite.
    pub fn next_row(&mut self) -> [f64; 8] {
        // Draw every random number every step, whatever the fault, so a run
        // with a fault and one without stay paired sample by sample.
        let mut z = [0.0f64; 12];
        for v in &mut z {
            *v = self.rng.normal();
        }
        let t = self.step as f64;
        self.step += 1;

        if self.step >= self.next_load_change {
            self.load_target = self.rng.range(0.55, 1.0);
            self.next_load_change = self.step + self.rng.range(120.0, 600.0) as u64;
        }
        self.load += (self.load_target - self.load) / 25.0 + 0.002 * z[0];
        self.load = self.load.clamp(0.4, 1.05);
        let s = self.load;

        let sev = match self.fault {
            Some(_) => (self.fault_age as f64 / self.ramp_steps as f64).min(1.0),
            None => 0.0,
        };
        if self.fault.is_some() {
            self.fault_age += 1;
        }
        let sev_of = |k: FaultKind| if self.fault == Some(k) { sev } else { 0.0 };
        let (bearing, cavitation, blockage) = (
            sev_of(FaultKind::Bearing),
            sev_of(FaultKind::Cavitation),
            sev_of(FaultKind::Blockage),
        );

        // Hydraulics (affinity laws plus static head).
        self.flow_noise = 0.8 * self.flow_noise + 0.25 * z[1];
        self.pressure_noise = 0.7 * self.pressure_noise + 0.015 * z[2];
        let mut flow = 40.0 * s * (1.0 - 0.35 * blockage) * (1.0 - 0.05 * cavitation);
        let mut pressure = (0.3 + 3.7 * s * s) * (1.0 + 0.25 * blockage) * (1.0 - 0.2 * cavitation);
        flow += self.flow_noise * (1.0 + 5.0 * cavitation) + 0.1 * z[3];
        pressure += self.pressure_noise + 0.01 * z[4];
        flow = flow.max(0.0);
        pressure = pressure.max(0.0);

        // Mains voltage: slow drift plus noise.
        self.voltage_drift = 0.999 * self.voltage_drift + 0.05 * z[5];
        let voltage = 230.0 + self.voltage_drift + 0.3 * z[6];

        // Current follows hydraulic power at constant electrical power.
        let current = (1.5 + 0.045 * flow * pressure) * 230.0 / voltage + 0.03 * z[7];

        // Temperatures: fluid follows ambient (hour-scale swing) and load,
        // the motor follows I^2 with a four-minute time constant.
        let ambient = 24.0 + 1.5 * (TAU * t / 7200.0 + self.phases[4]).sin();
        self.fluid_temp += (ambient + 3.0 * s - self.fluid_temp) / 900.0 + 0.005 * z[8];
        let motor_target = self.fluid_temp + 8.0 + 0.55 * current * current + 6.0 * bearing;
        self.motor_temp += (motor_target - self.motor_temp) / 240.0 + 0.01 * z[9];

        // Vibration RMS: grows with speed, modulated by a few slow components.
        let base = (0.6 + 1.6 * s * s) * (1.0 + 0.5 * bearing);
        let ph = &self.phases;
        let w = |period: f64, phase: f64| (TAU * t / period + phase).sin();
        let m1 = 1.0 + 0.12 * w(9.7, ph[0]) + 0.07 * w(23.3, ph[1]) + 0.05 * w(61.0, ph[2]);
        let m2 =
            1.0 + 0.10 * w(9.7, ph[0] + 0.6) + 0.07 * w(23.3, ph[1] + 0.3) + 0.04 * w(61.0, ph[2]);
        let defect = 0.5 + 0.5 * w(4.3, ph[3]);
        let broadband = 0.25 * cavitation * base;
        let vib1 = base * m1 + 0.35 * bearing * base * defect + (0.04 + broadband) * z[10];
        let vib2 = 0.8 * base * m2 + 0.2 * bearing * base * defect + (0.04 + broadband) * z[11];

        let mut row = [
            vib1.max(0.01),
            vib2.max(0.01),
            current,
            pressure,
            self.motor_temp + 0.05 * z[9],
            self.fluid_temp + 0.02 * z[8],
            voltage,
            flow,
        ];
        for (v, scale) in row.iter_mut().zip(RESOLUTION) {
            *v = (*v * scale).round() / scale;
        }
        row
    }
}

/// A generated log with per-row labels.
#[derive(Debug, Clone, PartialEq)]
pub struct SyntheticLog {
    /// Nanoseconds since the epoch, one per row.
    pub timestamps: Vec<i64>,
    /// One sample per row, in the order of [`PUMP_CHANNELS`].
    pub values: Vec<[f64; 8]>,
    /// 1 where a fault was active, else 0.
    pub labels: Vec<u8>,
}

/// Generates `rows` samples of a pump seeded with `seed`, row `i` at
/// `start_ns + i * period_ns` (the dynamics advance one step per row,
/// nominally one second). With `fault = Some((kind, range))` the fault is on
/// for the rows in `range` (ramping in) and those rows are labelled 1.
pub fn generate(
    rows: usize,
    seed: u64,
    start_ns: i64,
    period_ns: i64,
    fault: Option<(FaultKind, Range<usize>)>,
) -> SyntheticLog {
    generate_ramped(rows, seed, start_ns, period_ns, fault, FAULT_RAMP_STEPS)
}

/// [`generate`] with the fault growing to full strength over `ramp_steps`
/// rows (a slow fault when that is hours of rows).
pub fn generate_ramped(
    rows: usize,
    seed: u64,
    start_ns: i64,
    period_ns: i64,
    fault: Option<(FaultKind, Range<usize>)>,
    ramp_steps: u64,
) -> SyntheticLog {
    let mut sim = PumpSimulator::new(seed);
    sim.set_ramp_steps(ramp_steps);
    let mut log = SyntheticLog {
        timestamps: Vec::with_capacity(rows),
        values: Vec::with_capacity(rows),
        labels: Vec::with_capacity(rows),
    };
    let mut ts = start_ns;
    for i in 0..rows {
        let active = fault
            .as_ref()
            .filter(|(_, range)| range.contains(&i))
            .map(|(kind, _)| *kind);
        sim.set_fault(active);
        log.timestamps.push(ts);
        log.values.push(sim.next_row());
        log.labels.push(u8::from(active.is_some()));
        ts = ts.saturating_add(period_ns);
    }
    log
}

impl SyntheticLog {
    /// Rows `range` of the log (for publishing a stream in parts).
    pub fn slice(&self, range: std::ops::Range<usize>) -> SyntheticLog {
        SyntheticLog {
            timestamps: self.timestamps[range.clone()].to_vec(),
            values: self.values[range.clone()].to_vec(),
            labels: self.labels[range].to_vec(),
        }
    }

    /// CSV with header `timestamp,<the 8 channels>,anomaly`, RFC 3339
    /// timestamps and the values at sensor resolution.
    pub fn to_csv(&self) -> String {
        use std::fmt::Write;
        let mut out = String::with_capacity(self.values.len() * 96 + 128);
        out.push_str("timestamp");
        for name in PUMP_CHANNELS {
            out.push(',');
            out.push_str(name);
        }
        out.push_str(",anomaly\n");
        for ((ts, row), label) in self.timestamps.iter().zip(&self.values).zip(&self.labels) {
            out.push_str(&format_rfc3339(*ts));
            for v in row {
                // Writing to a String cannot fail.
                let _ = write!(out, ",{v}");
            }
            let _ = writeln!(out, ",{label}");
        }
        out
    }
}

#[cfg(test)]
mod tests;
