//! The learning rate of `padam train` at every step: linear warmup to the peak, then constant,
//! cosine or geometric decay to `peak * final_fraction` at the last step. The decay curves are
//! the library's [`Schedule`]s, so each shape is written once.

use padam::Schedule;

use super::config::LrScheduleKind;

/// The learning rate at every step: linear warmup to `peak`, then constant, cosine or
/// geometric decay to `peak * final_fraction` at the last step.
#[derive(Debug, Clone, PartialEq)]
pub struct LrSchedule {
    /// Peak lr.
    pub peak: f64,
    /// Shape after warmup.
    pub kind: LrScheduleKind,
    /// Warmup steps.
    pub warmup: usize,
    /// Total steps.
    pub total: usize,
    /// Final lr / peak.
    pub final_fraction: f64,
}

impl LrSchedule {
    /// The lr of step `t` (0-based).
    pub fn at(&self, t: usize) -> f64 {
        if t < self.warmup {
            return self.peak * (t + 1) as f64 / self.warmup as f64;
        }
        self.decay().value(t - self.warmup)
    }

    /// The curve after warmup: from the peak at the first step after it to
    /// `peak * final_fraction` at the last step of the run.
    fn decay(&self) -> Schedule {
        let (from, to) = (self.peak, self.peak * self.final_fraction);
        let steps = self.total.saturating_sub(self.warmup + 1);
        match self.kind {
            LrScheduleKind::Constant => Schedule::constant(from),
            LrScheduleKind::Cosine => Schedule::Cosine { from, to, steps },
            LrScheduleKind::Exponential => Schedule::Geometric { from, to, steps },
        }
    }
}
