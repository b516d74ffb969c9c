//! `padam toy`: the Higgs-potential toy of the paper (SPEC 7).
//!
//! Loss `l0 = (w1^2 + w2^2 - 1)^2 / 4`, a ring of minima of radius 1. Plain gradient descent
//! from `(0.2, 0.18)` walks straight out to the ring and stops there with both coordinates
//! non-zero; with pWD (`p = 0.5` or `p = 1`) the trajectory reaches the ring, then slides along
//! it until one coordinate is exactly 0: the sparse minimum. Computed in float64 by
//! [`padam::reference::higgs_toy`].

use std::fmt::Write as _;
use std::path::PathBuf;

use anyhow::Context;
use clap::Args;
use padam::reference::higgs_toy;

/// Start of every run.
pub const START: [f64; 2] = [0.2, 0.18];
/// Default learning rate.
pub const DEFAULT_LR: f64 = 0.7;
/// Default pWD strength of the pWD runs.
pub const DEFAULT_LAMBDA: f64 = 0.1;
/// Default number of steps.
pub const DEFAULT_STEPS: usize = 100;
/// Exponents of the pWD runs.
pub const PWD_P: [f64; 2] = [0.5, 1.0];

/// Options of `padam toy`.
#[derive(Args, Debug, Clone, PartialEq)]
pub struct ToyArgs {
    /// Gradient-descent steps per run.
    #[arg(long, default_value_t = DEFAULT_STEPS)]
    pub steps: usize,
    /// Learning rate.
    #[arg(long, default_value_t = DEFAULT_LR)]
    pub lr: f64,
    /// pWD strength of the p = 0.5 and p = 1 runs (the plain GD run uses 0).
    #[arg(long, default_value_t = DEFAULT_LAMBDA)]
    pub lambda: f64,
    /// CSV output (columns run,p,lambda,step,w1,w2).
    #[arg(long, default_value = "toy.csv")]
    pub out: PathBuf,
}

impl Default for ToyArgs {
    fn default() -> Self {
        Self {
            steps: DEFAULT_STEPS,
            lr: DEFAULT_LR,
            lambda: DEFAULT_LAMBDA,
            out: PathBuf::from("toy.csv"),
        }
    }
}

/// One trajectory.
#[derive(Debug, Clone, PartialEq)]
pub struct ToyRun {
    /// Short name: `gd`, `pwd-p0.5`, `pwd-p1`.
    pub name: String,
    /// Norm exponent (2 for plain GD, where it has no effect).
    pub p: f64,
    /// pWD strength (0 for plain GD).
    pub lambda: f64,
    /// `steps + 1` points, the start first.
    pub trajectory: Vec<[f64; 2]>,
}

impl ToyRun {
    /// First step at which `| |w| - 1 | < tol`, if any.
    pub fn first_on_circle(&self, tol: f64) -> Option<usize> {
        self.trajectory
            .iter()
            .position(|w| (w[0].hypot(w[1]) - 1.0).abs() < tol)
    }

    /// The last point.
    pub fn last(&self) -> [f64; 2] {
        *self
            .trajectory
            .last()
            .expect("a trajectory holds its start")
    }
}

/// The three runs: plain GD (lambda 0), then pWD with p = 0.5 and p = 1.
pub fn runs(steps: usize, lr: f64, lambda: f64) -> Vec<ToyRun> {
    let mut out = vec![ToyRun {
        name: "gd".into(),
        p: 2.0,
        lambda: 0.0,
        trajectory: higgs_toy(START, lr, 2.0, 0.0, steps),
    }];
    for p in PWD_P {
        out.push(ToyRun {
            name: format!("pwd-p{p}"),
            p,
            lambda,
            trajectory: higgs_toy(START, lr, p, lambda, steps),
        });
    }
    out
}

/// The CSV text: header `run,p,lambda,step,w1,w2`, one row per point (full f64 precision).
pub fn to_csv(runs: &[ToyRun]) -> String {
    let mut s = String::from("run,p,lambda,step,w1,w2\n");
    for r in runs {
        for (step, w) in r.trajectory.iter().enumerate() {
            let _ = writeln!(
                s,
                "{},{},{},{},{:e},{:e}",
                r.name, r.p, r.lambda, step, w[0], w[1]
            );
        }
    }
    s
}

/// The compact printout: every 10th step and the final one, side by side.
pub fn render(runs: &[ToyRun], lr: f64) -> String {
    let steps = runs.first().map_or(0, |r| r.trajectory.len() - 1);
    let mut s = format!(
        "Higgs toy: l0 = (w1^2+w2^2-1)^2/4, start ({}, {}), lr {lr}, {steps} steps\n\n",
        START[0], START[1]
    );
    let _ = write!(s, "{:>5}", "step");
    for r in runs {
        let title = format!("{} (p={}, lambda={})", r.name, r.p, r.lambda);
        let _ = write!(s, "  {title:>29}");
    }
    s.push('\n');
    let mut shown: Vec<usize> = (0..=steps).step_by(10).collect();
    if shown.last() != Some(&steps) {
        shown.push(steps);
    }
    for step in shown {
        let _ = write!(s, "{step:>5}");
        for r in runs {
            let w = r.trajectory[step];
            let _ = write!(s, "  {:>14} {:>14}", fmt_coord(w[0]), fmt_coord(w[1]));
        }
        s.push('\n');
    }
    s.push('\n');
    for r in runs {
        let w = r.last();
        let on = r
            .first_on_circle(1e-1)
            .map_or("never".to_string(), |k| format!("step {k}"));
        let zeros = w.iter().filter(|v| **v == 0.0).count();
        let _ = writeln!(
            s,
            "{:>9}: final ({}, {}), |w| = {:.6}, first within 0.1 of the circle at {on}, {zeros} coordinate(s) exactly 0",
            r.name,
            fmt_coord(w[0]),
            fmt_coord(w[1]),
            w[0].hypot(w[1]),
        );
    }
    s.trim_end().to_string()
}

fn fmt_coord(v: f64) -> String {
    if v == 0.0 {
        "0".into()
    } else if v.abs() < 1e-3 {
        format!("{v:.3e}")
    } else {
        format!("{v:.6}")
    }
}

/// Run the toy: print the trajectories and write the CSV.
pub fn run(args: ToyArgs) -> anyhow::Result<()> {
    anyhow::ensure!(
        args.lr.is_finite() && args.lr > 0.0,
        "--lr must be finite and > 0"
    );
    anyhow::ensure!(
        args.lambda.is_finite() && args.lambda >= 0.0,
        "--lambda must be finite and >= 0"
    );
    let runs = runs(args.steps, args.lr, args.lambda);
    println!("{}", render(&runs, args.lr));
    std::fs::write(&args.out, to_csv(&runs))
        .with_context(|| format!("writing {}", args.out.display()))?;
    println!("\nwrote {}", args.out.display());
    Ok(())
}
