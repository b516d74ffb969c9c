//! Zhu & Gupta's cubic sparsity ramp, the trajectory that gradual magnitude pruning and the
//! target-sparsity controller ([`crate::controller`]) both follow, and the clock it is laid
//! over ([`CubicRamp`]).
//!
//! On the step clock `start` and `end` are fractions of the run's steps and the ramp's progress
//! is linear in steps (Zhu & Gupta's). On the learning-rate clock ([`RampClock::Lr`]) they are
//! shares of the run's summed learning rate, and so is the progress. Under Adam both the pWD
//! shrink and the update that opposes it scale with the learning rate, so weights travel to
//! zero at a speed that falls with it: zeros asked for late in a decaying schedule come slowly,
//! and the model has too little learning rate left to recover from losing them. On the
//! learning-rate clock the ramp asks for its zeros while the learning rate is high (under a
//! cosine decay to a tenth, `end` 0.75 falls at about half the steps). With a constant learning
//! rate both clocks lay the ramp on the same steps.

use serde::{Deserialize, Serialize};

use crate::error::ConfigError;

/// The name [`ConfigError`]s of this module carry.
const OWNER: &str = "cubic ramp";

/// Zhu & Gupta's cubic sparsity ramp from 0: 0 up to and at `start`, `target` at and after
/// `end`, `target * (1 - (1 - (step - start) / (end - start))^3)` in between.
///
/// The same function as gradual magnitude pruning's schedule, so both follow one trajectory.
/// [`cubic_ramp_from`] with `from = 0`.
///
/// ```
/// use padam::ramp::cubic_ramp;
/// assert_eq!(cubic_ramp(10, 10, 110, 0.9), 0.0);
/// assert!((cubic_ramp(60, 10, 110, 0.9) - 0.9 * (1.0 - 0.125)).abs() < 1e-12);
/// assert_eq!(cubic_ramp(110, 10, 110, 0.9), 0.9);
/// ```
pub fn cubic_ramp(step: usize, start: usize, end: usize, target: f64) -> f64 {
    cubic_ramp_from(step, start, end, 0.0, target)
}

/// Zhu & Gupta's cubic sparsity ramp in full: `from` (their `s_i`) up to and at `start`,
/// `target` (`s_f`) at and after `end`, and in between
/// `s_f + (s_i - s_f) (1 - (step - start) / (end - start))^3`, computed as the equal
/// `s_i + (s_f - s_i) (1 - (1 - progress)^3)`. Steepest at the start, where most weights are
/// left to prune.
///
/// ```
/// use padam::ramp::cubic_ramp_from;
/// assert_eq!(cubic_ramp_from(10, 10, 110, 0.3, 0.9), 0.3);
/// assert!((cubic_ramp_from(60, 10, 110, 0.3, 0.9) - (0.9 - 0.6 * 0.125)).abs() < 1e-12);
/// assert_eq!(cubic_ramp_from(110, 10, 110, 0.3, 0.9), 0.9);
/// ```
pub fn cubic_ramp_from(step: usize, start: usize, end: usize, from: f64, target: f64) -> f64 {
    let ramp = CubicRamp {
        start_step: start,
        end_step: end,
        spent: None,
    };
    ramp.at(step, from, target)
}

/// What a ramp's `start`, `end` and progress are measured in (module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RampClock {
    /// Optimizer steps: `start = 0.1` is a tenth of the run's steps (gradual pruning's clock).
    #[default]
    Steps,
    /// The run's summed learning rate: `start = 0.1` is where a tenth of it has been spent.
    Lr,
}

impl RampClock {
    /// True for the default, [`RampClock::Steps`] (left out when a config is serialized, so
    /// configs written before the clock existed keep their hash).
    pub fn is_steps(&self) -> bool {
        *self == RampClock::Steps
    }
}

/// Zhu & Gupta's cubic ramp laid over a run on a [`RampClock`]: the steps where it starts and
/// ends, and on the learning-rate clock the share of the summed learning rate spent by each
/// step.
///
/// ```
/// use padam::ramp::{CubicRamp, RampClock};
/// // 1000 steps: from step 100 to 750 on the step clock, as gradual pruning rounds them.
/// let steps = CubicRamp::on_steps(0.1, 0.75, 1000);
/// assert_eq!((steps.start_step(), steps.end_step()), (100, 750));
/// assert_eq!(steps.at(425, 0.0, 0.9), 0.9 * (1.0 - 0.5f64.powi(3)));
/// // The learning rate halved after step 500: three quarters of it are spent by step 625.
/// let rates: Vec<f64> = (0..1000).map(|t| if t < 500 { 2e-3 } else { 1e-3 }).collect();
/// let lr = CubicRamp::new(RampClock::Lr, 0.1, 0.75, &rates)?;
/// assert_eq!((lr.start_step(), lr.end_step()), (75, 625));
/// # Ok::<(), padam::ConfigError>(())
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct CubicRamp {
    start_step: usize,
    end_step: usize,
    /// On [`RampClock::Lr`]: the share of the summed learning rate spent before each step.
    spent: Option<SpentShare>,
}

impl CubicRamp {
    /// On the step clock over `total_steps` steps: `start` and `end` (fractions of the run)
    /// become steps as gradual pruning's do, rounded.
    pub fn on_steps(start: f64, end: f64, total_steps: usize) -> Self {
        let step_of = |f: f64| ((f * total_steps as f64).round() as usize).min(total_steps);
        Self {
            start_step: step_of(start),
            end_step: step_of(end),
            spent: None,
        }
    }

    /// On `clock` over a run whose step `t` (0-based) trains at `learning_rates[t]` (the step
    /// clock takes only their number). Fails on a learning rate that is negative or not
    /// finite (naming its step), and on the learning-rate clock on rates that sum to 0.
    pub fn new(
        clock: RampClock,
        start: f64,
        end: f64,
        learning_rates: &[f64],
    ) -> Result<Self, ConfigError> {
        check_learning_rates(learning_rates)?;
        Ok(match clock {
            RampClock::Steps => Self::on_steps(start, end, learning_rates.len()),
            RampClock::Lr => {
                let spent = SpentShare::new(learning_rates)?;
                Self {
                    start_step: spent.step_of(start),
                    end_step: spent.step_of(end),
                    spent: Some(spent),
                }
            }
        })
    }

    /// The step where the ramp leaves `from`.
    pub fn start_step(&self) -> usize {
        self.start_step
    }

    /// The step where the ramp reaches the target.
    pub fn end_step(&self) -> usize {
        self.end_step
    }

    /// The ramp from `from` to `target` after `step` steps: `from` up to and at the start,
    /// `target` at and after the end, and in between the cubic in the progress since the start,
    /// in steps ([`cubic_ramp_from`]) or in the share of the learning rate spent.
    pub fn at(&self, step: usize, from: f64, target: f64) -> f64 {
        let (start, end) = (self.start_step, self.end_step);
        if step <= start {
            return from;
        }
        if step >= end {
            return target;
        }
        let progress = match &self.spent {
            None => (step - start) as f64 / (end - start) as f64,
            Some(clock) => {
                let (s0, s1) = (clock.at(start), clock.at(end));
                // A stretch of zero learning rate inside the ramp: its share does not move.
                if s1 > s0 {
                    (clock.at(step) - s0) / (s1 - s0)
                } else {
                    1.0
                }
            }
        };
        // Written as the rise from `from`, so that `from = 0` is bit for bit the ramp from 0
        // (gradual pruning's schedule).
        from + (target - from) * (1.0 - (1.0 - progress).powi(3))
    }

    /// The clock the ramp is laid over.
    pub fn clock(&self) -> RampClock {
        match self.spent {
            None => RampClock::Steps,
            Some(_) => RampClock::Lr,
        }
    }
}

/// The learning-rate clock: entry `t` is the share of the run's summed learning rate spent by
/// the first `t` steps (`0` at step 0, `1` at the end). Shared, since a ramp is cloned with a
/// run's state and the table has one entry per step.
#[derive(Clone, PartialEq)]
struct SpentShare(std::sync::Arc<[f64]>);

impl std::fmt::Debug for SpentShare {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SpentShare({} steps)", self.0.len() - 1)
    }
}

/// Per-step learning rates must be finite and `>= 0`; the error names the first bad step.
fn check_learning_rates(learning_rates: &[f64]) -> Result<(), ConfigError> {
    match (learning_rates.iter().enumerate()).find(|(_, lr)| !(lr.is_finite() && **lr >= 0.0)) {
        Some((step, lr)) => Err(ConfigError::new(
            OWNER,
            "learning_rates",
            format!("{lr} at step {step}"),
            "learning rates must be finite and >= 0",
        )),
        None => Ok(()),
    }
}

impl SpentShare {
    /// From per-step learning rates that passed [`check_learning_rates`]; refuses all 0.
    fn new(learning_rates: &[f64]) -> Result<Self, ConfigError> {
        let mut sums = Vec::with_capacity(learning_rates.len() + 1);
        let mut sum = 0.0f64;
        sums.push(sum);
        for &lr in learning_rates {
            sum += lr;
            sums.push(sum);
        }
        if !(sum > 0.0 && sum.is_finite()) {
            return Err(ConfigError::new(
                OWNER,
                "learning_rates",
                format!("summing to {sum} over {} steps", learning_rates.len()),
                "the learning-rate clock needs learning rates whose sum is finite and > 0",
            ));
        }
        Ok(Self(sums.into_iter().map(|s| s / sum).collect()))
    }

    /// The share spent after `step` steps (1 past the end).
    fn at(&self, step: usize) -> f64 {
        self.0.get(step).copied().unwrap_or(1.0)
    }

    /// The step whose share is nearest `fraction`: the later of two as near (to rounding of
    /// the sums), as `round` takes a step count, so that with a constant learning rate it is
    /// the step clock's `round(fraction * total)`; the first of a stretch of equal shares
    /// (learning rate 0) that reaches it.
    fn step_of(&self, fraction: f64) -> usize {
        let after = self.0.partition_point(|&s| s < fraction);
        match after {
            0 => 0,
            t if t >= self.0.len() => self.0.len() - 1,
            t => {
                let (below, above) = (fraction - self.0[t - 1], self.0[t] - fraction);
                // A tie computed from sums is off by a few ulps either way.
                if below < above - 1e-12 {
                    t - 1
                } else {
                    t
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cubic_ramp_matches_gradual_pruning() {
        // The cases of padam-lab's `cubic_fraction` test.
        assert_eq!(cubic_ramp(10, 10, 110, 0.9), 0.0);
        assert!((cubic_ramp(60, 10, 110, 0.9) - 0.9 * (1.0 - 0.125)).abs() < 1e-12);
        assert_eq!(cubic_ramp(110, 10, 110, 0.9), 0.9);
        assert_eq!(cubic_ramp(500, 10, 110, 0.9), 0.9);
        // start == end: a step.
        assert_eq!(cubic_ramp(5, 5, 5, 0.5), 0.0);
        assert_eq!(cubic_ramp(6, 5, 5, 0.5), 0.5);
    }
}
