//! A target-sparsity controller: it adjusts the pWD strength `lambda` during a run so that the
//! exact-zero fraction of the decayed weights follows a trajectory, Zhu & Gupta's cubic ramp
//! ([`cubic_ramp_from`](crate::ramp::cubic_ramp_from)) from the sparsity the model has when the ramp starts to
//! [`SparsityTarget::target`], which the rest of the run then holds.
//!
//! The controller is a small value a training loop consults every
//! [`SparsityTarget::every`] steps ([`SparsityController::due`]); only then does the loop
//! measure the sparsity (one device-to-host read, e.g. [`sparsity::measure`](crate::sparsity::measure)),
//! hand it to [`SparsityController::update`] and give the returned `lambda` to its optimizer.
//! Between updates nothing is read back, so a GPU loop gets no per-step host sync.
//!
//! ```
//! use padam::{SparsityController, SparsityTarget};
//!
//! // A stand-in for training: the dense fraction relaxes toward (1e-3 / lambda)^2.
//! let total = 3000;
//! let mut ctl = SparsityController::new(SparsityTarget::new(0.9).with_lambda_init(5e-4), total)?;
//! let mut dense: f64 = 1.0;
//! for step in 0..total {
//!     if ctl.due(step) {
//!         // a real loop: sparsity::measure(&model, 0.0, &selection).zero_fraction()
//!         ctl.update(step, 1.0 - dense)?;
//!     }
//!     let equilibrium = (1e-3 / ctl.lambda()).powi(2).min(1.0);
//!     dense = dense.min(dense + (equilibrium - dense) / 100.0); // zeros never come back
//! }
//! assert!((1.0 - dense - 0.9).abs() < 0.005);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # The trajectory
//!
//! Until the ramp starts (`start`, a fraction of the run) the controller holds `lambda_init`.
//! pWD at that lambda already zeroes some weights (26% on a Fashion-MNIST CNN under PAdam by
//! 10% of the run). The ramp starts from them: the first update that aims past the ramp start
//! measures the zero fraction `s_i` ([`SparsityController::ramp_from`], capped at the target),
//! and from then on the trajectory is
//!
//! ```text
//! s(t) = s_f + (s_i - s_f) (1 - (t - t0) / (t1 - t0))^3     t0 = start, t1 = end, s_f = target
//! ```
//!
//! as gradual pruning's `s_i` is the sparsity at its start. A ramp from 0 would find the model
//! above it and lower lambda; zeros keep landing for a while after lambda falls, each landing
//! lowers it again, down to `lambda_min`; then sparsity stalls (zeros are permanent) until the
//! ramp passes it, and lambda has decades to climb back at `max_raise` per update, so the
//! catch-up comes late and at a lambda far above the one that holds the target (session 14 on
//! Fashion-MNIST: 25 epochs stalled at 28%, a catch-up at lambda 0.12 for a target held at
//! 9e-3). `s_i` is part of [`ControllerState`], so a resumed run follows the same trajectory.
//!
//! # The clock
//!
//! `start`, `end` and the ramp's progress are read on a [`RampClock`]: the run's steps (`t`
//! above is a step), or with `clock = "lr"` the share of the run's summed learning rate spent
//! so far, so that under a decaying learning rate the ramp asks for its zeros while weights
//! still reach zero quickly ([`crate::ramp`] says why).
//! [`SparsityController::with_learning_rates`] builds a controller on either clock from the
//! run's per-step learning rates.
//!
//! # The law
//!
//! The plant is "lambda in, dense fraction `d = 1 - zero_fraction` out". In our runs `d` falls
//! roughly as `lambda^-2` at a fixed schedule, so the controller works on logarithms:
//! `u = ln lambda` and the error `level = ln(d / d_target)` (`> 0`: too dense). With a gain of
//! about 2 between them, `du = level / 2` would close the gap of a plant without lag.
//!
//! But the plant lags (weights shrink for a while before they reach exact zero) and it is
//! irreversible: with `p < 2` the pWD factor is exactly 0 at `w = 0`, so a zero never comes
//! back and an overshoot can never be undone. So the law is a PI controller on `u`, written
//! in velocity form, with its proportional part on the measurement only:
//!
//! ```text
//! rate  = ln(d_prev / d)                    new zeros per `every` steps since the last update
//! level = ln(d / d_target(step + every))    the gap to where the trajectory will be next
//! e     = level - horizon * rate            the gap left once the zeros in flight have landed
//! du    = gain * e       (level >= 0; capped at ln max_raise)   short of the aim: move gently
//!       = gain_down * e  (level < 0, rate > 0)                  too sparse and zeros still
//!                                                               arriving: drop fast
//!       = 0              (level < 0, rate == 0)                 too sparse, nothing dies: hold
//! u     = clamp(u + du, ln lambda_min, ln lambda_max)
//! ```
//!
//! - The `rate` term counts zeros still arriving as already there (they will be: lambda only
//!   acts through a lag), which brakes the rise before the measurement reaches the target.
//! - Raising is slow and capped, lowering fast: too few zeros can be fixed later, too many never.
//! - Above the trajectory with no new zeros, lowering lambda further would undo nothing and only
//!   have to be climbed back, so the controller holds. With the ramp starting where the model
//!   is, being above it is what happens when zeros in flight land past the target near the
//!   ramp's end, where dropping fast is the point. On a plant whose hold made 27% zeros, lambda
//!   no longer falls below `lambda_init / 2` during the ramp (the ramp from 0 took it to
//!   `lambda_min`; tests/controller.rs), so the law is unchanged.
//! - The velocity form keeps one state, `u` itself, which the clamp bounds: no integral windup.
//!
//! # Where the law is slow
//!
//! `ln(d / d_target)` barely moves while almost no weight is zero (a ramp from 0.4% zeros
//! aiming at 5% is an error of 0.05), so from such a model lambda climbs slowly and the model
//! lags the ramp before catching up on its steep part, as ResNet18 did from `lambda_init` 1e-3.
//! A `lambda_init` that zeroes some weights during the hold starts the ramp where the law is
//! quicker; since the cubic ramp asks for most of its zeros early, a model that makes zeros
//! readily needs a start that already makes many (nanoGPT from 5e-3 still lagged; the λ a
//! fixed run needs for a somewhat lower sparsity is a good start). A coordinate that is steep
//! at low sparsity (the log-odds `ln z - ln d`) fixes that but overshoots on a plant that
//! makes no zeros below a threshold lambda, since 0 zeros say nothing about how near the
//! threshold is; simulated on both kinds of plant, no coordinate served both (docs/RESULTS.md,
//! "Where the controller is slow"), so the law keeps `ln d`.
//!
//! The default gains assume the `lambda^-2` sensitivity above and weights that take a few
//! update intervals to reach zero (they were chosen on synthetic lagging plants, pSGD on a
//! quadratic, and a digits MLP under PAdam; docs/RESULTS.md). A plant that responds `k` times more strongly to lambda needs `gain` and
//! `gain_down` divided by `k / 2`; zeros arriving over many more intervals need a longer
//! `horizon` (or a larger `every`).

use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::error::ConfigError;
use crate::ramp::{CubicRamp, RampClock};
// Where they lived before `ramp` held them.
pub use crate::ramp::{cubic_ramp, cubic_ramp_from};

/// The name [`ConfigError`]s of this module carry.
const OWNER: &str = "sparsity controller";

/// Smallest dense fraction the law takes a logarithm of (a fully zero model).
const DENSE_FLOOR: f64 = 1e-12;

/// What a [`SparsityController`] aims for and how it moves lambda.
///
/// Only `target` is required; every other field has a default (serde and [`SparsityTarget::new`]).
///
/// ```
/// use padam::SparsityTarget;
/// let config = SparsityTarget::new(0.95).with_every(200).with_lambda_init(1e-3);
/// assert_eq!((config.start, config.end), (0.1, 0.75));
/// assert!(SparsityTarget::new(1.5).validate().is_err());
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SparsityTarget {
    /// Final exact-zero fraction of the measured weights, in `(0, 1)`.
    pub target: f64,
    /// Where the ramp starts, as a fraction of the run (of its steps, or of its summed
    /// learning rate with `clock = "lr"`), in `[0, 1]`; it starts from the zero fraction
    /// measured there. Default 0.1 (gradual pruning's default, so both follow
    /// one trajectory); lambda holds `lambda_init` before it.
    #[serde(default = "default_start")]
    pub start: f64,
    /// Where the ramp reaches `target`, as a fraction of the run (on `clock`), in `(start, 1]`.
    /// Default 0.75: the rest of the run holds the target, so the measured value settles.
    #[serde(default = "default_end")]
    pub end: f64,
    /// Steps between updates (and so between sparsity measurements), `>= 1`. Default 100.
    /// Best about the time zeros take to follow a change of lambda, and small enough for a few
    /// dozen updates per run: lambda rises at most `max_raise` per update.
    #[serde(default = "default_every")]
    pub every: usize,
    /// Lambda before the first update. Default 1e-3. Better too low than too high: the
    /// controller climbs out of a too low value, but zeros made by a too high one stay. Best
    /// one that has zeroed some weights by `start` (module docs, "Where the law is slow"):
    /// from a model with almost none, lambda climbs slowly.
    #[serde(default = "default_lambda_init")]
    pub lambda_init: f64,
    /// Smallest lambda the controller sets, `> 0`. Default 1e-8.
    #[serde(default = "default_lambda_min")]
    pub lambda_min: f64,
    /// Largest lambda the controller sets, `>= lambda_min`. Default 10.
    #[serde(default = "default_lambda_max")]
    pub lambda_max: f64,
    /// Integral gain while too few weights are zero: `ln lambda` grows by `gain` times the
    /// error in `ln(dense)`. Default 0.35 (below the dead-beat 0.5 of a `lambda^-2` plant).
    #[serde(default = "default_gain")]
    pub gain: f64,
    /// Integral gain while too many weights are zero or about to be. Default 8: zeros that
    /// keep arriving after the target is reached (weights still on their way to zero) need
    /// lambda to fall fast (on a digits MLP, 2 left the runs 0.2-0.5 points over the target).
    #[serde(default = "default_gain_down")]
    pub gain_down: f64,
    /// Update intervals over which zeros keep arriving at the rate just measured, `>= 0`
    /// (the proportional gain divided by the integral gain). Default 3: on a real model
    /// weights take tens of updates to reach zero once lambda is high enough.
    #[serde(default = "default_horizon")]
    pub horizon: f64,
    /// Largest factor lambda may grow by in one update, `> 1`. Default 2.
    #[serde(default = "default_max_raise")]
    pub max_raise: f64,
    /// What `start`, `end` and the ramp's progress are measured in: `steps` (default) or
    /// `lr`, the share of the run's summed learning rate (module docs, "The clock"; needs
    /// [`SparsityController::with_learning_rates`]).
    #[serde(default, skip_serializing_if = "RampClock::is_steps")]
    pub clock: RampClock,
}

fn default_start() -> f64 {
    0.1
}
fn default_end() -> f64 {
    0.75
}
fn default_every() -> usize {
    100
}
fn default_lambda_init() -> f64 {
    1e-3
}
fn default_lambda_min() -> f64 {
    1e-8
}
fn default_lambda_max() -> f64 {
    10.0
}
fn default_gain() -> f64 {
    0.35
}
fn default_gain_down() -> f64 {
    8.0
}
fn default_horizon() -> f64 {
    3.0
}
fn default_max_raise() -> f64 {
    2.0
}

impl SparsityTarget {
    /// Reach `target` (final exact-zero fraction) with the defaults for everything else.
    pub fn new(target: f64) -> Self {
        Self {
            target,
            start: default_start(),
            end: default_end(),
            every: default_every(),
            lambda_init: default_lambda_init(),
            lambda_min: default_lambda_min(),
            lambda_max: default_lambda_max(),
            gain: default_gain(),
            gain_down: default_gain_down(),
            horizon: default_horizon(),
            max_raise: default_max_raise(),
            clock: RampClock::Steps,
        }
    }

    /// Measure the ramp on `clock`.
    pub fn with_clock(mut self, clock: RampClock) -> Self {
        self.clock = clock;
        self
    }

    /// Ramp from `start` to `end` (fractions of the run).
    pub fn with_ramp(mut self, start: f64, end: f64) -> Self {
        self.start = start;
        self.end = end;
        self
    }

    /// Where the ramp starts (fraction of the run).
    pub fn with_start(mut self, start: f64) -> Self {
        self.start = start;
        self
    }

    /// Where the ramp reaches the target (fraction of the run).
    pub fn with_end(mut self, end: f64) -> Self {
        self.end = end;
        self
    }

    /// Steps between updates.
    pub fn with_every(mut self, every: usize) -> Self {
        self.every = every;
        self
    }

    /// Lambda before the first update.
    pub fn with_lambda_init(mut self, lambda: f64) -> Self {
        self.lambda_init = lambda;
        self
    }

    /// Smallest lambda the controller sets.
    pub fn with_lambda_min(mut self, lambda: f64) -> Self {
        self.lambda_min = lambda;
        self
    }

    /// Largest lambda the controller sets.
    pub fn with_lambda_max(mut self, lambda: f64) -> Self {
        self.lambda_max = lambda;
        self
    }

    /// Integral gain while too few weights are zero.
    pub fn with_gain(mut self, gain: f64) -> Self {
        self.gain = gain;
        self
    }

    /// Integral gain while too many weights are zero or about to be.
    pub fn with_gain_down(mut self, gain: f64) -> Self {
        self.gain_down = gain;
        self
    }

    /// Update intervals over which zeros keep arriving at the measured rate.
    pub fn with_horizon(mut self, horizon: f64) -> Self {
        self.horizon = horizon;
        self
    }

    /// Largest factor lambda may grow by in one update.
    pub fn with_max_raise(mut self, factor: f64) -> Self {
        self.max_raise = factor;
        self
    }

    /// Check every field; the error names the field and its value.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let err = |field: &'static str, value: f64, reason: &'static str| {
            Err(ConfigError::new(OWNER, field, value, reason))
        };
        if !(self.target > 0.0 && self.target < 1.0) {
            return err("target", self.target, "target must be in (0, 1)");
        }
        if !(0.0..=1.0).contains(&self.start) {
            return err(
                "start",
                self.start,
                "start must be in [0, 1] (fraction of the run)",
            );
        }
        if !(0.0..=1.0).contains(&self.end) {
            return err(
                "end",
                self.end,
                "end must be in [0, 1] (fraction of the run)",
            );
        }
        if self.start >= self.end {
            return Err(ConfigError::new(
                OWNER,
                "end",
                format!("{} (start = {})", self.end, self.start),
                "the ramp must end after it starts: start < end",
            ));
        }
        if self.every == 0 {
            return Err(ConfigError::new(
                OWNER,
                "every",
                self.every,
                "every must be >= 1 (steps between updates)",
            ));
        }
        for (field, value) in [
            ("lambda_min", self.lambda_min),
            ("lambda_max", self.lambda_max),
            ("lambda_init", self.lambda_init),
        ] {
            if !(value.is_finite() && value > 0.0) {
                return err(field, value, "lambdas must be finite and > 0");
            }
        }
        if self.lambda_min > self.lambda_max {
            return Err(ConfigError::new(
                OWNER,
                "lambda_max",
                format!("{} (lambda_min = {})", self.lambda_max, self.lambda_min),
                "lambda_max must be >= lambda_min",
            ));
        }
        if !(self.lambda_min..=self.lambda_max).contains(&self.lambda_init) {
            return Err(ConfigError::new(
                OWNER,
                "lambda_init",
                format!(
                    "{} (bounds [{}, {}])",
                    self.lambda_init, self.lambda_min, self.lambda_max
                ),
                "lambda_init must lie in [lambda_min, lambda_max]",
            ));
        }
        if !(self.gain.is_finite() && self.gain > 0.0) {
            return err("gain", self.gain, "gain must be finite and > 0");
        }
        if !(self.gain_down.is_finite() && self.gain_down > 0.0) {
            return err(
                "gain_down",
                self.gain_down,
                "gain_down must be finite and > 0",
            );
        }
        if !(self.horizon.is_finite() && self.horizon >= 0.0) {
            return err("horizon", self.horizon, "horizon must be finite and >= 0");
        }
        if !(self.max_raise.is_finite() && self.max_raise > 1.0) {
            return err(
                "max_raise",
                self.max_raise,
                "max_raise must be finite and > 1 (factor per update)",
            );
        }
        Ok(())
    }
}

/// Everything a [`SparsityController`] changes as it runs: save it with the checkpoint,
/// [`load`](SparsityController::load_state) it into a controller built from the same config
/// and run length, and the run continues bit for bit as if never interrupted.
///
/// Plain numbers, so any serde format keeps them exactly (JSON too, where floats round-trip).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ControllerState {
    /// `ln lambda`, the value the next steps use. In the velocity form it is also the
    /// controller's integral: there is no other.
    pub log_lambda: f64,
    /// Updates done so far.
    pub updates: usize,
    /// Step of the last update (meaningless while `updates == 0`).
    pub last_step: usize,
    /// Dense fraction `1 - zero_fraction` measured at the last update (1 before any).
    pub last_dense: f64,
    /// The zero fraction the ramp starts from (Zhu & Gupta's `s_i`): the one measured at the
    /// first update that aims past the ramp start (capped at the target). `None` until then,
    /// and in checkpoints written before this field existed (serde default; see
    /// [`SparsityController::load_state`] for how those continue).
    #[serde(default)]
    pub ramp_from: Option<f64>,
}

/// Why [`SparsityController::update`] or [`SparsityController::load_state`] refused; the
/// controller is left unchanged.
#[derive(Debug, Clone, PartialEq, Error)]
pub enum ControllerError {
    /// The measured zero fraction was NaN, infinite or outside `[0, 1]`.
    #[error("sparsity controller: measured zero fraction {value} at step {step} is not a fraction in [0, 1]; lambda left unchanged")]
    InvalidMeasurement {
        /// The step passed to `update`.
        step: usize,
        /// The measured value.
        value: f64,
    },
    /// `update` was called for a step not after the last update's.
    #[error("sparsity controller: update at step {step} does not come after the last update (step {last}); lambda left unchanged")]
    StepNotAfterLast {
        /// The step passed to `update`.
        step: usize,
        /// The last update's step.
        last: usize,
    },
    /// A loaded state holds a value no controller produces.
    #[error("sparsity controller: state field {field} = {value} is invalid ({reason})")]
    InvalidState {
        /// The field of [`ControllerState`].
        field: &'static str,
        /// Its value, formatted.
        value: String,
        /// What a valid value looks like.
        reason: &'static str,
    },
}

/// Sets lambda from measured sparsity so that the exact-zero fraction follows
/// [`SparsityTarget`]'s ramp over a run of `total_steps` steps (module docs: the law and why).
#[derive(Debug, Clone, PartialEq)]
pub struct SparsityController {
    config: SparsityTarget,
    total_steps: usize,
    ramp: CubicRamp,
    state: ControllerState,
}

impl SparsityController {
    /// A controller for a run of `total_steps` optimizer steps, lambda at `lambda_init`.
    /// Fails if the config is invalid, `total_steps` is 0 or shorter than `every`, or the
    /// config asks for the learning-rate clock, which needs
    /// [`with_learning_rates`](Self::with_learning_rates).
    pub fn new(config: SparsityTarget, total_steps: usize) -> Result<Self, ConfigError> {
        if config.clock == RampClock::Lr {
            config.validate()?;
            return Err(ConfigError::new(
                OWNER,
                "clock",
                "lr",
                "the learning-rate clock needs the run's learning rates: build the controller \
                 with SparsityController::with_learning_rates",
            ));
        }
        let ramp = || Ok(CubicRamp::on_steps(config.start, config.end, total_steps));
        Self::build(&config, total_steps, ramp)
    }

    /// A controller for a run whose step `t` (0-based) trains at `learning_rates[t]`, on either
    /// clock (the step clock only takes the run's length from them). Fails as [`new`](Self::new)
    /// does, and on a learning rate that is negative or not finite, or all of them 0 on the
    /// learning-rate clock.
    pub fn with_learning_rates(
        config: SparsityTarget,
        learning_rates: &[f64],
    ) -> Result<Self, ConfigError> {
        let ramp = || CubicRamp::new(config.clock, config.start, config.end, learning_rates);
        Self::build(&config, learning_rates.len(), ramp)
    }

    /// Checks the config and the run length, then lays the ramp.
    fn build(
        config: &SparsityTarget,
        total_steps: usize,
        ramp: impl FnOnce() -> Result<CubicRamp, ConfigError>,
    ) -> Result<Self, ConfigError> {
        config.validate()?;
        if total_steps == 0 {
            return Err(ConfigError::new(
                OWNER,
                "total_steps",
                total_steps,
                "the run must have at least one step",
            ));
        }
        if config.every > total_steps {
            return Err(ConfigError::new(
                OWNER,
                "every",
                format!("{} (total_steps = {total_steps})", config.every),
                "every must be <= total_steps, else lambda is never updated",
            ));
        }
        let state = ControllerState {
            log_lambda: config.lambda_init.ln(),
            updates: 0,
            last_step: 0,
            last_dense: 1.0,
            ramp_from: None,
        };
        Ok(Self {
            // As gradual pruning lays its ramp, so both share one trajectory.
            ramp: ramp()?,
            total_steps,
            config: config.clone(),
            state,
        })
    }

    /// The config.
    pub fn config(&self) -> &SparsityTarget {
        &self.config
    }

    /// The run length the trajectory is laid over.
    pub fn total_steps(&self) -> usize {
        self.total_steps
    }

    /// The step where the ramp leaves its start value ([`ramp_from`](Self::ramp_from)).
    pub fn start_step(&self) -> usize {
        self.ramp.start_step()
    }

    /// The step where the ramp reaches the target.
    pub fn end_step(&self) -> usize {
        self.ramp.end_step()
    }

    /// The lambda to use from now until the next update.
    pub fn lambda(&self) -> f64 {
        self.state.log_lambda.exp()
    }

    /// The zero fraction the ramp starts from, once fixed: measured at the first update that
    /// aims past [`start_step`](Self::start_step), so the trajectory starts where the model is.
    pub fn ramp_from(&self) -> Option<f64> {
        self.state.ramp_from
    }

    /// The zero fraction the trajectory asks for after `step` steps: the cubic ramp
    /// ([`CubicRamp::at`], on the config's clock) from the measured
    /// [`ramp_from`](Self::ramp_from) to the target (from 0 while not yet measured, which is
    /// the trajectory only up to the ramp start).
    pub fn target_at(&self, step: usize) -> f64 {
        self.trajectory(step, self.state.ramp_from.unwrap_or(0.0))
    }

    /// The ramp from `from` at `step`, on the config's clock.
    fn trajectory(&self, step: usize, from: f64) -> f64 {
        self.ramp.at(step, from, self.config.target)
    }

    /// True when `step` is an update step (a multiple of `every`, step 0 included) not yet
    /// updated: the only steps where a loop needs to measure the sparsity.
    pub fn due(&self, step: usize) -> bool {
        step.is_multiple_of(self.config.every)
            && (self.state.updates == 0 || step > self.state.last_step)
    }

    /// Updates done so far.
    pub fn updates(&self) -> usize {
        self.state.updates
    }

    /// Take the zero fraction measured after `step` optimizer steps (over the weights the
    /// target is meant for) and return the lambda to use until the next update.
    ///
    /// Meant for the steps where [`due`](Self::due) holds; other steps work too (the rate of
    /// new zeros is scaled to `every` steps). A NaN or out-of-range measurement, or a step not
    /// after the last update's, is refused with an error and changes nothing.
    pub fn update(
        &mut self,
        step: usize,
        measured_zero_fraction: f64,
    ) -> Result<f64, ControllerError> {
        let z = measured_zero_fraction;
        if !(0.0..=1.0).contains(&z) {
            return Err(ControllerError::InvalidMeasurement { step, value: z });
        }
        let s = self.state;
        if s.updates > 0 && step <= s.last_step {
            return Err(ControllerError::StepNotAfterLast {
                step,
                last: s.last_step,
            });
        }
        let c = &self.config;
        let holding = step + c.every <= self.ramp.start_step();
        // The first update that aims past the ramp start fixes where the ramp starts: at the
        // sparsity the model has (what the hold at lambda_init made). A ramp from 0 would read
        // those zeros as an overshoot, drive lambda to its floor and stall until the trajectory
        // caught up. Capped at the target: a ramp cannot ask for zeros to come back.
        let ramp_from = match s.ramp_from {
            None if !holding => Some(z.min(c.target)),
            fixed => fixed,
        };
        let dense = (1.0 - z).max(DENSE_FLOOR);
        // New zeros per `every` steps, in ln(dense); zeros never come back, so never < 0.
        let rate = if s.updates == 0 {
            0.0
        } else {
            let interval = (step - s.last_step) as f64 / c.every as f64;
            ((s.last_dense / dense).ln() / interval).max(0.0)
        };
        // lambda now acts until the next update: aim at the trajectory there.
        let aim = self.trajectory(step + c.every, ramp_from.unwrap_or(0.0));
        let level = (dense / (1.0 - aim)).ln();
        let e = level - c.horizon * rate;
        let du = if holding {
            // Before the ramp there is no trajectory yet (its start is measured when the ramp
            // begins): hold lambda_init. Read against 0, the zeros pWD at lambda_init already
            // makes would drive lambda down by decades, to be climbed back later.
            0.0
        } else if level < 0.0 {
            // Already sparser than the aim: hold while no zeros arrive (lowering lambda cannot
            // bring weights back), else drop fast so the ones on their way stop coming.
            if rate <= 0.0 {
                0.0
            } else {
                c.gain_down * e
            }
        } else {
            // Short of the aim: raise gently, less (or lower) when the zeros still arriving
            // at the measured rate would cover the gap.
            (c.gain * e).min(c.max_raise.ln())
        };
        self.state = ControllerState {
            log_lambda: (s.log_lambda + du).clamp(c.lambda_min.ln(), c.lambda_max.ln()),
            updates: s.updates + 1,
            last_step: step,
            last_dense: dense,
            ramp_from,
        };
        Ok(self.lambda())
    }

    /// Everything the controller has changed since it was built.
    pub fn state(&self) -> ControllerState {
        self.state
    }

    /// Continue from a saved [`state`](Self::state). The state is checked (finite lambda,
    /// dense fraction in `(0, 1]`, ramp start in `[0, 1]`); its lambda is clamped into this
    /// config's bounds, so loading into a controller with the saving run's config is exact.
    ///
    /// A state without `ramp_from` whose last update already aimed past the ramp start was
    /// written before the ramp start was measured, by a controller that ramped from 0: it
    /// continues from 0, as the run that wrote it would have.
    pub fn load_state(&mut self, state: ControllerState) -> Result<(), ControllerError> {
        if !state.log_lambda.is_finite() {
            return Err(ControllerError::InvalidState {
                field: "log_lambda",
                value: state.log_lambda.to_string(),
                reason: "ln lambda must be finite",
            });
        }
        if !(state.last_dense > 0.0 && state.last_dense <= 1.0) {
            return Err(ControllerError::InvalidState {
                field: "last_dense",
                value: state.last_dense.to_string(),
                reason: "a dense fraction in (0, 1]",
            });
        }
        if let Some(from) = state.ramp_from {
            if !(0.0..=1.0).contains(&from) {
                return Err(ControllerError::InvalidState {
                    field: "ramp_from",
                    value: from.to_string(),
                    reason: "a zero fraction in [0, 1]",
                });
            }
        }
        let past_hold =
            state.updates > 0 && state.last_step + self.config.every > self.ramp.start_step();
        let (lo, hi) = (self.config.lambda_min.ln(), self.config.lambda_max.ln());
        self.state = ControllerState {
            log_lambda: state.log_lambda.clamp(lo, hi),
            ramp_from: match state.ramp_from {
                None if past_hold => Some(0.0),
                from => from,
            },
            ..state
        };
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn holds_without_zeros_before_the_ramp() {
        // Ramp from step 1000: the targets at steps 100 and 200 are still 0.
        let mut c = SparsityController::new(SparsityTarget::new(0.9), 10_000).unwrap();
        let l0 = c.lambda();
        assert_eq!(c.update(0, 0.0).unwrap(), l0);
        assert_eq!(c.update(100, 0.0).unwrap(), l0);
    }

    #[test]
    fn holds_lambda_before_the_ramp_starts() {
        // Ramp from step 1000; weights already at zero before it must not lower lambda.
        let cfg = SparsityTarget::new(0.9).with_ramp(0.1, 0.5);
        let mut c = SparsityController::new(cfg, 10_000).unwrap();
        let l0 = c.lambda();
        for step in (0..=900).step_by(100) {
            assert_eq!(
                c.update(step, 0.04 + step as f64 * 1e-5).unwrap(),
                l0,
                "step {step}"
            );
        }
        // From the update whose interval reaches into the ramp on, it moves.
        assert_ne!(c.update(1000, 0.05).unwrap(), l0);
    }

    #[test]
    fn raises_when_too_dense_and_caps_the_raise() {
        let cfg = SparsityTarget::new(0.98).with_ramp(0.0, 0.1);
        let mut c = SparsityController::new(cfg, 1000).unwrap();
        // Target 0.98 at the next update, nothing zero: gain * ln 50 > ln 2, capped at x2.
        let l = c.update(0, 0.0).unwrap();
        assert!((l / 1e-3 - 2.0).abs() < 1e-12, "{l}");
        // Target 0.8: gain * ln 5 (0.35 * 1.61), below the cap.
        let cfg = SparsityTarget::new(0.8).with_ramp(0.0, 0.1);
        let mut c = SparsityController::new(cfg, 1000).unwrap();
        let gain = c.config().gain;
        let l = c.update(0, 0.0).unwrap();
        assert!((l / 1e-3 - 5f64.powf(gain)).abs() < 1e-12, "{l}");
    }

    #[test]
    fn lowers_when_zeros_pour_in_and_holds_when_they_stop() {
        let cfg = SparsityTarget::new(0.5).with_ramp(0.0, 0.1);
        let mut c = SparsityController::new(cfg, 1000).unwrap();
        c.update(0, 0.0).unwrap();
        let before = c.lambda();
        let l = c.update(100, 0.8).unwrap(); // above the target and rising
        assert!(l < before);
        assert_eq!(c.update(200, 0.8).unwrap(), l); // above, nothing new: hold
    }

    #[test]
    fn the_ramp_starts_at_the_measured_sparsity_and_ends_at_the_target() {
        // 1000 steps, ramp from step 100 to 750, updates every 100 steps.
        let mut c = SparsityController::new(SparsityTarget::new(0.9), 1000).unwrap();
        // Step 0 aims at step 100, still before the ramp: a hold, nothing measured.
        c.update(0, 0.2).unwrap();
        assert_eq!(c.ramp_from(), None);
        assert_eq!(c.target_at(100), 0.0);
        // Step 100 aims into the ramp: the zeros the hold made are where the ramp starts.
        c.update(100, 0.3).unwrap();
        assert_eq!(c.ramp_from(), Some(0.3));
        assert_eq!(c.target_at(0), 0.3);
        assert_eq!(c.target_at(100), 0.3);
        // Halfway, step 425: 0.9 + (0.3 - 0.9) * 0.5^3.
        assert!((c.target_at(425) - (0.9 - 0.6 * 0.125)).abs() < 1e-15);
        assert_eq!(c.target_at(750), 0.9);
        assert_eq!(c.target_at(1000), 0.9);
        let trajectory: Vec<f64> = (100..=750).map(|s| c.target_at(s)).collect();
        assert!(trajectory.windows(2).all(|w| w[0] < w[1]));
        // Fixed once: later measurements move lambda, not the start.
        c.update(200, 0.5).unwrap();
        assert_eq!(c.ramp_from(), Some(0.3));
    }

    #[test]
    fn the_ramp_start_is_measured_by_the_first_update_aiming_past_it() {
        // Ramp start at step 105, not a multiple of every = 100: step 0 holds (it aims at
        // 100), step 100 already aims past the start and measures.
        let mut c = SparsityController::new(SparsityTarget::new(0.9), 1050).unwrap();
        assert_eq!(c.start_step(), 105);
        c.update(0, 0.1).unwrap();
        assert_eq!(c.ramp_from(), None);
        c.update(100, 0.25).unwrap();
        assert_eq!(c.ramp_from(), Some(0.25));
        // A ramp start at step 0: the first update measures.
        let cfg = SparsityTarget::new(0.9).with_ramp(0.0, 0.5);
        let mut c = SparsityController::new(cfg, 1000).unwrap();
        c.update(0, 0.0).unwrap();
        assert_eq!(c.ramp_from(), Some(0.0));
    }

    #[test]
    fn a_start_beyond_the_target_is_capped_at_it() {
        let mut c = SparsityController::new(SparsityTarget::new(0.5), 1000).unwrap();
        c.update(0, 0.6).unwrap();
        c.update(100, 0.7).unwrap();
        assert_eq!(c.ramp_from(), Some(0.5));
        assert!((0..=1000).all(|s| s < 100 || c.target_at(s) == 0.5));
    }

    #[test]
    fn the_measured_start_is_in_the_state() {
        let mut c = SparsityController::new(SparsityTarget::new(0.9), 1000).unwrap();
        c.update(0, 0.1).unwrap();
        c.update(100, 0.1 + 1.0 / 3.0).unwrap();
        let json = serde_json::to_string(&c.state()).unwrap();
        let back: ControllerState = serde_json::from_str(&json).unwrap();
        assert_eq!(back, c.state());
        let mut resumed = SparsityController::new(SparsityTarget::new(0.9), 1000).unwrap();
        resumed.load_state(back).unwrap();
        assert_eq!(resumed, c);
        for step in [100, 300, 700] {
            assert_eq!(
                resumed.target_at(step).to_bits(),
                c.target_at(step).to_bits()
            );
        }
        // Before the start is measured, the state says so.
        let fresh = SparsityController::new(SparsityTarget::new(0.9), 1000).unwrap();
        assert!(serde_json::to_string(&fresh.state())
            .unwrap()
            .contains(r#""ramp_from":null"#));
    }

    #[test]
    fn a_ramp_start_outside_0_1_is_refused() {
        let mut c = SparsityController::new(SparsityTarget::new(0.9), 1000).unwrap();
        let good = c.state();
        for bad in [-0.1, 1.5, f64::NAN] {
            let e = c
                .load_state(ControllerState {
                    ramp_from: Some(bad),
                    ..good
                })
                .unwrap_err();
            assert!(e.to_string().contains("ramp_from"), "{e}");
        }
        assert_eq!(c.state(), good);
    }

    #[test]
    fn refuses_bad_measurements_unchanged() {
        let mut c = SparsityController::new(SparsityTarget::new(0.9), 1000).unwrap();
        let before = c.clone();
        for bad in [f64::NAN, -0.1, 1.5, f64::INFINITY] {
            assert!(matches!(
                c.update(100, bad),
                Err(ControllerError::InvalidMeasurement { step: 100, .. })
            ));
        }
        assert_eq!(c, before);
        c.update(100, 0.0).unwrap();
        assert_eq!(
            c.update(100, 0.0),
            Err(ControllerError::StepNotAfterLast {
                step: 100,
                last: 100
            })
        );
    }
}
