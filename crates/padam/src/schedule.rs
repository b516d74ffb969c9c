//! Schedules for `p(t)` and `lambda(t)` (SPEC 5), also usable as a burn LR scheduler.
//!
//! A [`Schedule`] maps the optimizer step `t` (0-based: the number of steps taken before this
//! one) to a value. The decay reads `p` and `lambda` from its schedules each step, while the
//! learning rate is whatever the training loop passes to `Optimizer::step`, typically from a
//! burn `LrScheduler`; so all three compose freely. [`ScheduleLr`] turns a `Schedule` into a
//! burn `LrScheduler` for the cases burn has no scheduler for (geometric decay, piecewise).

use burn::lr_scheduler::LrScheduler;
use burn::optim::LearningRate;
use burn::tensor::backend::Backend;
use serde::{Deserialize, Serialize};
use std::f64::consts::PI;

use crate::error::ConfigError;

/// A scalar schedule over optimizer steps. Past its last step a schedule holds its final value.
///
/// In serde formats a bare number is a constant (`p = 0.8`) and a table names its kind
/// (`p = { kind = "linear", from = 2.0, to = 0.8, steps = 1000 }`); a constant is written back
/// as a number.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(
    remote = "Self",
    tag = "kind",
    rename_all = "snake_case",
    deny_unknown_fields
)]
pub enum Schedule {
    /// The same value at every step.
    Constant {
        /// The value.
        value: f64,
    },
    /// Linear from `from` (step 0) to `to` (step `steps`).
    Linear {
        /// Value at step 0.
        from: f64,
        /// Value from step `steps` on.
        to: f64,
        /// Length of the ramp.
        steps: usize,
    },
    /// Half-cosine from `from` (step 0) to `to` (step `steps`).
    Cosine {
        /// Value at step 0.
        from: f64,
        /// Value from step `steps` on.
        to: f64,
        /// Length of the ramp.
        steps: usize,
    },
    /// Geometric (exponential) from `from` to `to` over `steps`; both must be > 0.
    Geometric {
        /// Value at step 0.
        from: f64,
        /// Value from step `steps` on.
        to: f64,
        /// Length of the ramp.
        steps: usize,
    },
    /// Piecewise linear through `(step, value)` knots sorted by step; constant before the
    /// first knot and after the last.
    Piecewise {
        /// The knots, strictly increasing in step.
        points: Vec<(usize, f64)>,
    },
}

impl Serialize for Schedule {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Schedule::Constant { value } => s.serialize_f64(*value),
            other => Schedule::serialize(other, s),
        }
    }
}

// By hand rather than `#[serde(untagged)]`, whose only error is "did not match any variant":
// a number is a constant, a table is a schedule, and a table's own error (an unknown kind, a
// misspelt key) comes through as it is.
impl<'de> Deserialize<'de> for Schedule {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Spec;
        impl<'de> serde::de::Visitor<'de> for Spec {
            type Value = Schedule;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str(
                    "a number or a schedule table such as \
                     { kind = \"linear\", from = 2.0, to = 0.8, steps = 1000 }",
                )
            }
            fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<Schedule, E> {
                Ok(Schedule::constant(v))
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<Schedule, E> {
                Ok(Schedule::constant(v as f64))
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<Schedule, E> {
                Ok(Schedule::constant(v as f64))
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(self, map: A) -> Result<Schedule, A::Error> {
                Schedule::deserialize(serde::de::value::MapAccessDeserializer::new(map))
            }
        }
        d.deserialize_any(Spec)
    }
}

impl Schedule {
    /// A constant schedule.
    pub fn constant(value: f64) -> Self {
        Schedule::Constant { value }
    }

    /// "p from 2 down to the target over `steps`": a linear ramp that lets weights settle under
    /// an L2 penalty first and then sparsify (SPEC 5).
    pub fn p_anneal(target: f64, steps: usize) -> Self {
        Schedule::Linear {
            from: 2.0,
            to: target,
            steps,
        }
    }

    /// The value at step `t`.
    pub fn value(&self, t: usize) -> f64 {
        match self {
            Schedule::Constant { value } => *value,
            Schedule::Linear { from, to, steps } => from + (to - from) * progress(t, *steps),
            Schedule::Cosine { from, to, steps } => {
                to + (from - to) * 0.5 * (1.0 + (PI * progress(t, *steps)).cos())
            }
            Schedule::Geometric { from, to, steps } => from * (to / from).powf(progress(t, *steps)),
            Schedule::Piecewise { points } => piecewise(points, t),
        }
    }

    /// Every value the schedule can take lies between these two (inclusive).
    fn extremes(&self) -> Vec<f64> {
        match self {
            Schedule::Constant { value } => vec![*value],
            Schedule::Linear { from, to, .. }
            | Schedule::Cosine { from, to, .. }
            | Schedule::Geometric { from, to, .. } => vec![*from, *to],
            Schedule::Piecewise { points } => points.iter().map(|(_, v)| *v).collect(),
        }
    }

    /// Check the schedule's shape and that every value it can take satisfies `valid`.
    /// `field` names the config field in the error.
    pub fn validate(
        &self,
        optimizer: &'static str,
        field: &str,
        valid: impl Fn(f64) -> bool,
        reason: &'static str,
    ) -> Result<(), ConfigError> {
        if let Schedule::Piecewise { points } = self {
            if points.is_empty() {
                return Err(ConfigError::new(
                    optimizer,
                    format!("{field}.points"),
                    "[]",
                    "a piecewise schedule needs at least one (step, value) point",
                ));
            }
            if points.windows(2).any(|w| w[0].0 >= w[1].0) {
                return Err(ConfigError::new(
                    optimizer,
                    format!("{field}.points"),
                    format!("{points:?}"),
                    "steps must be strictly increasing",
                ));
            }
        }
        if let Schedule::Geometric { from, to, .. } = self {
            if !(*from > 0.0 && *to > 0.0) {
                return Err(ConfigError::new(
                    optimizer,
                    field,
                    format!("geometric from {from} to {to}"),
                    "a geometric schedule needs from > 0 and to > 0",
                ));
            }
        }
        for v in self.extremes() {
            if !valid(v) {
                return Err(ConfigError::new(optimizer, field, v, reason));
            }
        }
        Ok(())
    }
}

fn progress(t: usize, steps: usize) -> f64 {
    if steps == 0 {
        1.0
    } else {
        (t.min(steps) as f64) / steps as f64
    }
}

fn piecewise(points: &[(usize, f64)], t: usize) -> f64 {
    let Some(&(first_t, first_v)) = points.first() else {
        return f64::NAN; // rejected by validate()
    };
    if t <= first_t {
        return first_v;
    }
    for w in points.windows(2) {
        let ((t0, v0), (t1, v1)) = (w[0], w[1]);
        if t <= t1 {
            let x = (t - t0) as f64 / (t1 - t0) as f64;
            return v0 + (v1 - v0) * x;
        }
    }
    points[points.len() - 1].1
}

/// A [`Schedule`] used as a burn learning-rate scheduler: `step()` returns the value at the
/// current step and advances. Its record is the step counter, so it resumes exactly.
#[derive(Debug, Clone)]
pub struct ScheduleLr {
    schedule: Schedule,
    t: usize,
}

impl ScheduleLr {
    /// A scheduler starting at step 0.
    pub fn new(schedule: Schedule) -> Self {
        Self { schedule, t: 0 }
    }
}

impl LrScheduler for ScheduleLr {
    type Record<B: Backend> = usize;

    fn step(&mut self) -> LearningRate {
        let lr = self.schedule.value(self.t);
        self.t += 1;
        lr
    }

    fn to_record<B: Backend>(&self) -> Self::Record<B> {
        self.t
    }

    fn load_record<B: Backend>(mut self, record: Self::Record<B>) -> Self {
        self.t = record;
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn linear_cosine_geometric_endpoints() {
        for s in [
            Schedule::Linear {
                from: 2.0,
                to: 0.8,
                steps: 10,
            },
            Schedule::Cosine {
                from: 2.0,
                to: 0.8,
                steps: 10,
            },
            Schedule::Geometric {
                from: 2.0,
                to: 0.8,
                steps: 10,
            },
        ] {
            assert_eq!(s.value(0), 2.0, "{s:?}");
            assert!((s.value(10) - 0.8).abs() < 1e-12, "{s:?}");
            assert!((s.value(1000) - 0.8).abs() < 1e-12, "{s:?}");
            let mid = s.value(5);
            assert!(mid < 2.0 && mid > 0.8, "{s:?} mid {mid}");
        }
        assert!(
            (Schedule::Linear {
                from: 2.0,
                to: 0.8,
                steps: 10
            }
            .value(5)
                - 1.4)
                .abs()
                < 1e-12
        );
        assert!(
            (Schedule::Cosine {
                from: 2.0,
                to: 0.8,
                steps: 10
            }
            .value(5)
                - 1.4)
                .abs()
                < 1e-12
        );
        let g = Schedule::Geometric {
            from: 3e-3,
            to: 7.5e-4,
            steps: 400,
        };
        assert!((g.value(200) - (3e-3f64 * 7.5e-4).sqrt()).abs() < 1e-15);
    }

    #[test]
    fn p_anneal_goes_from_two_to_target() {
        let s = Schedule::p_anneal(0.8, 100);
        assert_eq!(s.value(0), 2.0);
        assert!((s.value(50) - 1.4).abs() < 1e-12);
        assert!((s.value(100) - 0.8).abs() < 1e-12);
        assert!((s.value(5000) - 0.8).abs() < 1e-12);
    }

    #[test]
    fn piecewise_interpolates_and_holds() {
        let s = Schedule::Piecewise {
            points: vec![(10, 1.0), (20, 3.0), (40, 2.0)],
        };
        assert_eq!(s.value(0), 1.0);
        assert_eq!(s.value(10), 1.0);
        assert_eq!(s.value(15), 2.0);
        assert_eq!(s.value(30), 2.5);
        assert_eq!(s.value(99), 2.0);
    }

    #[test]
    fn validation_names_field_and_value() {
        let bad = Schedule::Linear {
            from: 2.0,
            to: -0.5,
            steps: 3,
        };
        let err = bad
            .validate("PAdam", "p", |p| p > 0.0, "p must be > 0")
            .unwrap_err();
        assert_eq!(err.field, "p");
        assert_eq!(err.value, "-0.5");
        let err = Schedule::Piecewise {
            points: vec![(5, 1.0), (5, 2.0)],
        }
        .validate("PAdam", "lambda", |_| true, "")
        .unwrap_err();
        assert_eq!(err.field, "lambda.points");
        assert!(Schedule::Piecewise { points: vec![] }
            .validate("x", "p", |_| true, "")
            .is_err());
        assert!(Schedule::Geometric {
            from: 0.0,
            to: 1.0,
            steps: 3
        }
        .validate("x", "lr", |_| true, "")
        .is_err());
    }

    #[test]
    fn schedule_lr_resumes_from_record() {
        type B = burn::backend::Flex;
        let s = Schedule::Linear {
            from: 1.0,
            to: 0.0,
            steps: 4,
        };
        let mut a = ScheduleLr::new(s.clone());
        let first: Vec<f64> = (0..2).map(|_| a.step()).collect();
        assert_eq!(first, vec![1.0, 0.75]);
        let rec = a.to_record::<B>();
        let mut b = ScheduleLr::new(s).load_record::<B>(rec);
        assert_eq!(a.step(), b.step());
        assert_eq!(b.step(), 0.25);
    }

    #[test]
    fn schedules_round_trip_through_toml_like_serde() {
        let s = Schedule::Cosine {
            from: 2.0,
            to: 0.5,
            steps: 7,
        };
        let json = serde_json::to_string(&s).unwrap();
        assert!(json.contains("\"kind\":\"cosine\""));
        let back: Schedule = serde_json::from_str(&json).unwrap();
        assert_eq!(back, s);
        assert!(serde_json::from_str::<Schedule>(
            r#"{"kind":"linear","from":1,"to":2,"steps":3,"oops":1}"#
        )
        .is_err());
        // A bare number is a constant, written back as a number; the table form still reads.
        let c: Schedule = serde_json::from_str("0.8").unwrap();
        assert_eq!(c, Schedule::constant(0.8));
        assert_eq!(serde_json::to_string(&c).unwrap(), "0.8");
        assert_eq!(
            serde_json::from_str::<Schedule>("3").unwrap(),
            Schedule::constant(3.0)
        );
        let t: Schedule = serde_json::from_str(r#"{"kind":"constant","value":0.5}"#).unwrap();
        assert_eq!(t, Schedule::constant(0.5));
        let e = serde_json::from_str::<Schedule>(r#""fast""#).unwrap_err();
        assert!(
            e.to_string().contains("a number or a schedule table"),
            "{e}"
        );
    }
}
