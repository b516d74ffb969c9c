//! Magnitude-pruning baselines, the methods the paper compares pWD against:
//!
//! - **one-shot**: train dense until step `at * total`, then prune the `target` fraction of
//!   smallest-magnitude weights globally (one threshold over every pruned tensor) and fine-tune
//!   with the mask held for the rest of the run;
//! - **gradual** (Zhu & Gupta 2017): from `start * total` to `end * total` (on the step clock)
//!   the pruned fraction follows `s_t = target * (1 - (1 - (t - t0) / (t1 - t0))^3)`, re-pruned
//!   every `frequency` steps; masks only grow. With `clock = "lr"` the ramp is laid over the
//!   run's summed learning rate instead of its steps, as the target-sparsity controller's can
//!   be ([`padam::CubicRamp`]), so the two compare on one trajectory.
//!
//! The mask math here is pure (host vectors in, masks out); [`crate::train`] reads the weights,
//! applies the masks after every optimizer step (`w * mask`, so a masked weight is exactly 0
//! at every forward pass, whatever the optimizer's moments hold) and keeps them in checkpoints.

use std::collections::BTreeMap;

use anyhow::bail;
use burn::module::{Module, Param};
use burn::tensor::{backend::Backend, Tensor, TensorData};
use padam::paths::{map_with_paths, PathMapper};
use padam::ParamSelection;
use padam::{CubicRamp, RampClock};
use serde::{Deserialize, Serialize};

/// Which pruning baseline.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PruneMethod {
    /// Prune once at `at`, then fine-tune with the mask.
    OneShot,
    /// Cubic schedule from `start` to `end`.
    Gradual,
}

/// The `[prune]` section of a training config.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PruneConfig {
    /// `one_shot` or `gradual`.
    pub method: PruneMethod,
    /// Final fraction of the pruned tensors' weights set to zero, in (0, 1).
    pub target: f64,
    /// One-shot: when to prune, as a fraction of the run's steps (default 0.5).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub at: Option<f64>,
    /// Gradual: first pruning step, fraction of the run on `clock` (default 0.1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start: Option<f64>,
    /// Gradual: step at which `target` is reached, fraction of the run on `clock` (default 0.75).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub end: Option<f64>,
    /// Gradual: steps between pruning events (default: one epoch).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub frequency: Option<usize>,
    /// Gradual: what `start`, `end` and the ramp's progress are measured in, `"steps"`
    /// (default) or `"lr"` (shares of the run's summed learning rate). The default, given or
    /// not, is left out when the config is serialized, so its hash (what a checkpoint must
    /// match) does not change with it.
    #[serde(default, skip_serializing_if = "is_step_clock")]
    pub clock: Option<RampClock>,
    /// `"matrices"` (default: rank >= 2, conv kernels and weight matrices) or `"all"`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub params: Option<String>,
}

fn is_step_clock(clock: &Option<RampClock>) -> bool {
    clock.unwrap_or_default().is_steps()
}

impl PruneConfig {
    /// Check every value; errors name the dotted key and the value.
    pub fn validate(&self) -> anyhow::Result<()> {
        if !(self.target > 0.0 && self.target < 1.0) {
            bail!(
                "invalid config: prune.target = {} (must be in (0, 1))",
                self.target
            );
        }
        for (key, v) in [
            ("prune.at", self.at),
            ("prune.start", self.start),
            ("prune.end", self.end),
        ] {
            if let Some(v) = v {
                if !(0.0..=1.0).contains(&v) {
                    bail!("invalid config: {key} = {v} (a fraction of the run, in [0, 1])");
                }
            }
        }
        if self.frequency == Some(0) {
            bail!("invalid config: prune.frequency = 0 (must be >= 1)");
        }
        let (start, end) = (self.start.unwrap_or(0.1), self.end.unwrap_or(0.75));
        match self.method {
            PruneMethod::OneShot => {
                for (key, v) in [
                    ("prune.start", self.start),
                    ("prune.end", self.end),
                    ("prune.frequency", self.frequency.map(|f| f as f64)),
                    ("prune.clock", self.clock.map(|_| 0.0)),
                ] {
                    if v.is_some() {
                        bail!("invalid config: {key} applies to method = \"gradual\", not \"one_shot\"");
                    }
                }
            }
            PruneMethod::Gradual => {
                if self.at.is_some() {
                    bail!("invalid config: prune.at applies to method = \"one_shot\", not \"gradual\"");
                }
                if start >= end {
                    bail!("invalid config: prune.start = {start} must be before prune.end = {end}");
                }
            }
        }
        self.selection()?;
        Ok(())
    }

    /// Which tensors are pruned.
    pub fn selection(&self) -> anyhow::Result<ParamSelection> {
        match self.params.as_deref() {
            None | Some("matrices") => Ok(ParamSelection::matrices_only()),
            Some("all") => Ok(ParamSelection::all()),
            Some(other) => {
                bail!("invalid config: prune.params = {other:?} (expected \"matrices\" or \"all\")")
            }
        }
    }

    /// The schedule over a run whose step `t` trains at `learning_rates[t]`, with
    /// `steps_per_epoch`.
    pub fn schedule(
        &self,
        learning_rates: &[f64],
        steps_per_epoch: usize,
    ) -> anyhow::Result<PruneSchedule> {
        let total = learning_rates.len();
        Ok(match self.method {
            PruneMethod::OneShot => {
                let at = self.at.unwrap_or(0.5);
                PruneSchedule {
                    target: self.target,
                    ramp: CubicRamp::on_steps(at, at, total),
                    frequency: 1,
                }
            }
            PruneMethod::Gradual => PruneSchedule {
                target: self.target,
                ramp: CubicRamp::new(
                    self.clock.unwrap_or_default(),
                    self.start.unwrap_or(0.1),
                    self.end.unwrap_or(0.75),
                    learning_rates,
                )
                .map_err(|e| {
                    anyhow::anyhow!(
                        "invalid config: prune.clock: the run's learning rates (lr.*): {e}"
                    )
                })?,
                frequency: self.frequency.unwrap_or(steps_per_epoch).max(1),
            },
        })
    }
}

/// When to prune and how much, in optimizer steps (steps counted after the update).
#[derive(Debug, Clone, PartialEq)]
pub struct PruneSchedule {
    /// Final pruned fraction.
    pub target: f64,
    /// The cubic ramp from 0 to `target`: its first pruning step, the step at which the target
    /// is reached (the same step for one-shot) and the fraction in between.
    pub ramp: CubicRamp,
    /// Steps between pruning events.
    pub frequency: usize,
}

impl PruneSchedule {
    /// The pruned fraction to reach at `step`, if the masks are recomputed after that step.
    pub fn event(&self, step: usize) -> Option<f64> {
        let (start, end) = (self.ramp.start_step(), self.ramp.end_step());
        if step < start {
            return None;
        }
        if step >= end {
            // the last event lands exactly on `end`; after it the mask is only held
            return (step == end).then_some(self.target);
        }
        (step - start)
            .is_multiple_of(self.frequency)
            .then(|| self.ramp.at(step, 0.0, self.target))
    }
}

/// Keep-masks of the pruned tensors, by module path (`true` = kept).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Masks {
    /// Path -> one flag per element, in row-major order.
    pub tensors: BTreeMap<String, Vec<bool>>,
}

impl Masks {
    /// Number of masked-out (pruned) entries.
    pub fn pruned(&self) -> usize {
        self.tensors
            .values()
            .map(|m| m.iter().filter(|k| !**k).count())
            .sum()
    }

    /// Entries under a mask.
    pub fn numel(&self) -> usize {
        self.tensors.values().map(Vec::len).sum()
    }

    /// Pruned fraction of the masked tensors.
    pub fn fraction(&self) -> f64 {
        self.pruned() as f64 / self.numel().max(1) as f64
    }

    /// Compact form for checkpoints: per tensor its length and the bits as hex.
    pub fn to_state(&self) -> MaskState {
        MaskState {
            tensors: self
                .tensors
                .iter()
                .map(|(k, m)| (k.clone(), (m.len(), bits_to_hex(m))))
                .collect(),
        }
    }

    /// Back from [`Masks::to_state`].
    pub fn from_state(state: &MaskState) -> anyhow::Result<Self> {
        let mut tensors = BTreeMap::new();
        for (k, (len, hex)) in &state.tensors {
            tensors.insert(
                k.clone(),
                hex_to_bits(hex, *len)
                    .map_err(|e| anyhow::anyhow!("checkpoint mask of `{k}`: {e}"))?,
            );
        }
        Ok(Self { tensors })
    }
}

/// Masks as stored in a checkpoint's loop state.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct MaskState {
    /// Path -> (element count, keep bits packed 4 per hex digit).
    pub tensors: BTreeMap<String, (usize, String)>,
}

fn bits_to_hex(bits: &[bool]) -> String {
    bits.chunks(4)
        .map(|c| {
            let v = c
                .iter()
                .enumerate()
                .fold(0u32, |acc, (i, b)| acc | (u32::from(*b) << i));
            char::from_digit(v, 16).expect("nibble")
        })
        .collect()
}

fn hex_to_bits(hex: &str, len: usize) -> Result<Vec<bool>, String> {
    if hex.len() != len.div_ceil(4) {
        return Err(format!("{} hex digits for {len} entries", hex.len()));
    }
    let mut out = Vec::with_capacity(len);
    for c in hex.chars() {
        let v = c
            .to_digit(16)
            .ok_or_else(|| format!("bad hex digit {c:?}"))?;
        for i in 0..4 {
            if out.len() < len {
                out.push(v >> i & 1 == 1);
            }
        }
    }
    Ok(out)
}

/// Global magnitude pruning: the `fraction` of all entries of `weights` with the smallest
/// magnitudes is pruned (exactly `round(fraction * n)` entries; ties broken by tensor order,
/// then element order, so the result is deterministic). Entries already pruned in `previous`
/// stay pruned (masks only grow), and count towards the fraction.
pub fn global_magnitude_masks(
    weights: &[(String, Vec<f32>)],
    previous: Option<&Masks>,
    fraction: f64,
) -> Masks {
    let n: usize = weights.iter().map(|(_, w)| w.len()).sum();
    let k = ((fraction.clamp(0.0, 1.0) * n as f64).round() as usize).min(n);
    // (magnitude, tensor, element); pruned-before entries sort first (magnitude -1).
    let mut order: Vec<(f32, u32, u32)> = Vec::with_capacity(n);
    for (t, (path, w)) in weights.iter().enumerate() {
        let prev = previous.and_then(|p| p.tensors.get(path));
        for (i, v) in w.iter().enumerate() {
            let was_pruned = prev.is_some_and(|m| !m[i]);
            let mag = if was_pruned { -1.0 } else { v.abs() };
            order.push((mag, t as u32, i as u32));
        }
    }
    // The k smallest under this strict total order, in any order: a selection, O(n), where a
    // sort took seconds on nanoGPT's 10.7M weights at every pruning event.
    if 0 < k && k < n {
        order.select_nth_unstable_by(k, |a, b| {
            a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)).then(a.2.cmp(&b.2))
        });
    }
    let mut tensors: BTreeMap<String, Vec<bool>> = weights
        .iter()
        .map(|(p, w)| (p.clone(), vec![true; w.len()]))
        .collect();
    let names: Vec<&String> = weights.iter().map(|(p, _)| p).collect();
    for &(_, t, i) in order.iter().take(k) {
        tensors.get_mut(names[t as usize]).expect("known tensor")[i as usize] = false;
    }
    // masks only grow, also when `fraction` is below what was pruned before
    for &(mag, t, i) in order.iter().skip(k) {
        if mag < 0.0 {
            tensors.get_mut(names[t as usize]).expect("known tensor")[i as usize] = false;
        }
    }
    Masks { tensors }
}

/// The weights of the tensors a selection picks, as host vectors with their paths.
pub use padam::sparsity::selected_values as selected_weights;

/// Masks in force during training: the host masks (checkpoints, metrics, the next pruning
/// event) and the same masks as device tensors (1.0 kept, 0.0 pruned, flattened), uploaded once
/// per pruning event instead of at every step.
pub struct ActiveMasks<B: Backend> {
    /// The masks.
    pub host: Masks,
    device: BTreeMap<String, Tensor<B, 1>>,
}

impl<B: Backend> ActiveMasks<B> {
    /// Upload `host` to `device`.
    pub fn new(host: Masks, device: &B::Device) -> Self {
        let device = host
            .tensors
            .iter()
            .map(|(path, mask)| {
                let keep: Vec<f32> = mask.iter().map(|k| f32::from(u8::from(*k))).collect();
                let t = Tensor::from_data(TensorData::new(keep, [mask.len()]), device);
                (path.clone(), t)
            })
            .collect();
        Self { host, device }
    }

    /// Multiply every masked parameter of `model` by its mask (masked entries become exactly 0).
    pub fn apply<M: Module<B>>(&self, model: M) -> M {
        struct Apply<'a, B: Backend>(&'a BTreeMap<String, Tensor<B, 1>>);
        impl<B: Backend> PathMapper<B> for Apply<'_, B> {
            fn map<const D: usize>(
                &mut self,
                path: &str,
                param: Param<Tensor<B, D>>,
            ) -> Param<Tensor<B, D>> {
                let Some(mask) = self.0.get(path) else {
                    return param;
                };
                let (id, w, mapper) = param.consume();
                let m = mask.clone().reshape(w.shape());
                let requires_grad = w.is_require_grad();
                // a new leaf, as after an optimizer step
                let w = w.mul(m).detach().set_require_grad(requires_grad);
                Param::from_mapped_value(id, w, mapper)
            }
        }
        map_with_paths(model, &mut Apply(&self.device))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cubic_schedule_starts_at_zero_and_reaches_the_target() {
        let s = PruneSchedule {
            target: 0.9,
            ramp: CubicRamp::on_steps(0.01, 0.11, 1000),
            frequency: 25,
        };
        let events: Vec<(usize, f64)> = (0..200)
            .filter_map(|t| s.event(t).map(|f| (t, f)))
            .collect();
        let steps: Vec<usize> = events.iter().map(|e| e.0).collect();
        assert_eq!(steps, vec![10, 35, 60, 85, 110]);
        assert_eq!(events[0].1, 0.0);
        assert!((events[2].1 - 0.9 * (1.0 - 0.125)).abs() < 1e-12);
        assert_eq!(events[4].1, 0.9);
    }

    /// `clock = "lr"`: the events still come every `frequency` steps, along the ramp laid over
    /// the summed learning rate (here halved after step 500, so three quarters are spent by
    /// step 625, not 750).
    #[test]
    fn gradual_pruning_on_the_lr_clock() {
        let rates: Vec<f64> = (0..1000)
            .map(|t| if t < 500 { 2e-3 } else { 1e-3 })
            .collect();
        let config = PruneConfig {
            method: PruneMethod::Gradual,
            target: 0.9,
            at: None,
            start: None,
            end: None,
            frequency: Some(50),
            clock: Some(RampClock::Lr),
            params: None,
        };
        config.validate().unwrap();
        let s = config.schedule(&rates, 100).unwrap();
        let steps: Vec<usize> = (0..1000).filter(|&t| s.event(t).is_some()).collect();
        assert_eq!(
            steps,
            vec![75, 125, 175, 225, 275, 325, 375, 425, 475, 525, 575, 625]
        );
        // The default clock, given or not, serializes as before the key existed (the config
        // hash a checkpoint must match).
        let given = PruneConfig {
            clock: Some(RampClock::Steps),
            ..config.clone()
        };
        let left_out = PruneConfig {
            clock: None,
            ..config.clone()
        };
        let json = serde_json::to_string(&given).unwrap();
        assert_eq!(json, serde_json::to_string(&left_out).unwrap());
        assert!(!json.contains("clock"), "{json}");
        let on_steps = left_out.schedule(&rates, 100).unwrap();
        assert_eq!(
            (on_steps.ramp.start_step(), on_steps.ramp.end_step()),
            (100, 750)
        );
        // Step 375 has spent half the summed rate: 0.4 / 0.65 of the way from share 0.1 to 0.75.
        let progress: f64 = 0.4 / 0.65;
        let expected = 0.9 * (1.0 - (1.0 - progress).powi(3));
        assert!((s.event(375).unwrap() - expected).abs() < 1e-12);
    }

    #[test]
    fn global_pruning_removes_exactly_the_smallest_entries_across_tensors() {
        let w = vec![
            ("a".to_string(), vec![0.5, -0.1, 0.3]),
            ("b".to_string(), vec![-0.2, 0.05, 0.9, 0.1]),
        ];
        let m = global_magnitude_masks(&w, None, 2.0 / 7.0);
        // smallest |w|: 0.05 (b1), then the tie 0.1 of a1 and b3: a1 wins by tensor order
        assert_eq!(m.tensors["a"], vec![true, false, true]);
        assert_eq!(m.tensors["b"], vec![true, false, true, true]);
        assert_eq!(m.pruned(), 2);
        let all3 = global_magnitude_masks(&w, None, 3.0 / 7.0);
        assert_eq!(all3.tensors["b"], vec![true, false, true, false]);
        // masks only grow: a weight pruned before stays pruned even if it grew back
        let w2 = vec![
            ("a".to_string(), vec![0.5, 0.8, 0.3]),
            ("b".to_string(), vec![-0.2, 0.7, 0.9, 0.01]),
        ];
        let m2 = global_magnitude_masks(&w2, Some(&m), 3.0 / 7.0);
        assert_eq!(m2.tensors["a"], vec![true, false, true]);
        assert_eq!(m2.tensors["b"], vec![true, false, true, false]);
        assert_eq!(m2.pruned(), 3);
        let m3 = global_magnitude_masks(&w2, Some(&m2), 1.0 / 7.0);
        assert_eq!(m3, m2);
    }

    proptest::proptest! {
        /// The selection prunes exactly the entries a full sort by (magnitude, tensor,
        /// element) puts first, ties and earlier masks included.
        #[test]
        fn pruning_takes_the_first_entries_of_the_sorted_order(
            a in proptest::collection::vec(-4i8..=4, 0..40),
            b in proptest::collection::vec(-4i8..=4, 1..40),
            before in 0.0f64..1.0,
            fraction in 0.0f64..=1.0,
        ) {
            let w: Vec<(String, Vec<f32>)> = [("a", &a), ("b", &b)]
                .iter()
                .map(|(p, v)| (p.to_string(), v.iter().map(|x| f32::from(*x) / 4.0).collect()))
                .collect();
            let previous = global_magnitude_masks(&w, None, before);
            let got = global_magnitude_masks(&w, Some(&previous), fraction);
            let mut order: Vec<(f32, usize, usize)> = w
                .iter()
                .enumerate()
                .flat_map(|(t, (p, v))| {
                    let prev = &previous.tensors[p];
                    v.iter()
                        .enumerate()
                        .map(move |(i, x)| (if prev[i] { x.abs() } else { -1.0 }, t, i))
                })
                .collect();
            order.sort_by(|x, y| x.0.total_cmp(&y.0).then(x.1.cmp(&y.1)).then(x.2.cmp(&y.2)));
            let k = (fraction * order.len() as f64).round() as usize;
            let mut want: BTreeMap<String, Vec<bool>> =
                w.iter().map(|(p, v)| (p.clone(), vec![true; v.len()])).collect();
            for (j, &(mag, t, i)) in order.iter().enumerate() {
                if j < k || mag < 0.0 {
                    want.get_mut(&w[t].0).unwrap()[i] = false;
                }
            }
            proptest::prop_assert_eq!(got.tensors, want);
        }
    }

    #[test]
    fn masks_survive_the_checkpoint_encoding() {
        let mut tensors = BTreeMap::new();
        tensors.insert("x".to_string(), vec![true, false, false, true, true]);
        tensors.insert("y".to_string(), vec![false; 9]);
        tensors.insert("z".to_string(), vec![]);
        let m = Masks { tensors };
        let state = m.to_state();
        let json = serde_json::to_string(&state).unwrap();
        let back: MaskState = serde_json::from_str(&json).unwrap();
        assert_eq!(Masks::from_state(&back).unwrap(), m);
        let mut bad = back.clone();
        bad.tensors.get_mut("x").unwrap().0 = 17;
        assert!(Masks::from_state(&bad).is_err());
    }

    #[test]
    fn config_errors_name_the_key() {
        let c = PruneConfig {
            method: PruneMethod::Gradual,
            target: 1.5,
            at: None,
            start: None,
            end: None,
            frequency: None,
            clock: None,
            params: None,
        };
        let e = c.validate().unwrap_err().to_string();
        assert!(e.contains("prune.target = 1.5"), "{e}");
        let c = PruneConfig {
            target: 0.9,
            at: Some(0.5),
            ..c
        };
        let e = c.validate().unwrap_err().to_string();
        assert!(e.contains("prune.at"), "{e}");
        let c = PruneConfig {
            at: None,
            start: Some(0.8),
            end: Some(0.2),
            ..c
        };
        assert!(c
            .validate()
            .unwrap_err()
            .to_string()
            .contains("prune.start"));
        let c = PruneConfig {
            method: PruneMethod::OneShot,
            start: None,
            end: None,
            clock: Some(RampClock::Lr),
            ..c
        };
        let e = c.validate().unwrap_err().to_string();
        assert!(
            e.contains("prune.clock applies to method = \"gradual\""),
            "{e}"
        );
    }
}
