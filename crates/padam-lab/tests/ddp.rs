//! Data-parallel training (`padam train --devices ...`, feature `ddp`) on CPU replicas through
//! burn's collective all-reduce: the replicas stay bit-identical; N replicas with B/N examples
//! each match one device with batch B to float tolerance; a data-parallel run checkpoints and
//! resumes exactly (with pruning masks), and resumes on one device too.
#![cfg(feature = "ddp")]

use std::path::Path;

use burn::backend::{Autodiff, Flex};
use burn::module::{Module, ModuleVisitor, Param};
use burn::tensor::backend::Backend;
use burn::tensor::Tensor;
use padam_lab::models::Mlp;
use padam_lab::train::task::{self, AnyTask, Task};
use padam_lab::train::{checkpoint, config, TrainArgs};

mod common;
use common::{metrics, run_locked, TempDir};

type B = Autodiff<Flex>;

/// 200 digits rows, batch 32: 7 steps an epoch, the last one of 8 examples (uneven shares on
/// three devices).
const DIGITS: &str = r#"
seed = 5
[model]
kind = "mlp"
hidden = [16]
[data]
dataset = "digits"
train_limit = 200
test_limit = 100
[optimizer]
kind = "padam"
p = 0.8
lambda = 1e-2
[lr]
peak = 1e-2
[train]
batch_size = 32
iterations = 14
eval_every = 7
checkpoint_every = 7
keep_checkpoints = 5
log_every = 7
"#;

fn args(out: &Path, devices: Option<&str>, resume: bool) -> TrainArgs {
    TrainArgs {
        out: Some(out.to_path_buf()),
        devices: devices.map(str::to_string),
        resume,
        quiet: true,
        ..TrainArgs::default()
    }
}

/// The weights of the newest checkpoint in `dir`, flattened in module order.
fn checkpoint_weights(cfg: &config::TrainConfig, dir: &Path) -> Vec<f32> {
    struct Collect(Vec<f32>);
    impl<B: Backend> ModuleVisitor<B> for Collect {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
            self.0
                .extend(param.val().into_data().convert::<f32>().iter::<f32>());
        }
    }
    let AnyTask::Digits(t) = task::load(cfg).unwrap() else {
        panic!("a digits config")
    };
    let device = Default::default();
    let model: Mlp<B> = Task::<B>::init(&t, cfg.seed, &device);
    let (path, ckpt) = checkpoint::load_latest(dir, cfg.hash()).unwrap();
    let record = checkpoint::decode_record(ckpt.model, &device, &path, "model").unwrap();
    let model = model.load_record(record);
    let mut c = Collect(Vec::new());
    model.visit(&mut c);
    c.0
}

fn max_abs_diff(a: &[f32], b: &[f32]) -> f64 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (f64::from(*x) - f64::from(*y)).abs())
        .fold(0.0, f64::max)
}

/// (a) and (b) for both optimizer paths: padam's `PWdOptimizer` (PAdam) and burn's AdamW
/// (`OptimizerAdaptor`). Tolerances: AdamW ends within a few ulps of one device; pWD with
/// p < 2 amplifies rounding differences in weights that pass near zero (the factor
/// `1 / (1 + lr p λ |w|^(p-2))` is steep there), about 2e-5 here (with λ = 0 it is 6e-8).
#[test]
fn replicas_stay_identical_and_match_one_device() {
    let padam = "kind = \"padam\"\np = 0.8\nlambda = 1e-2";
    for (optimizer, tol) in [(padam, 1e-4), ("kind = \"adamw\"", 1e-6)] {
        let tmp = TempDir::new("match");
        let cfg = config::parse(&DIGITS.replace(padam, optimizer), &[]).unwrap();
        let one = tmp.path("one");
        let single = run_locked(&cfg, &args(&one, None, false)).unwrap();
        assert!(single.replicas.is_none());
        let w1 = checkpoint_weights(&cfg, &one);
        let m1 = metrics(&one);

        for devices in ["cpu:0,cpu:1", "cpu:0,cpu:1,cpu:2"] {
            let n = devices.split(',').count();
            let dir = tmp.path(&format!("ddp{n}"));
            let s = run_locked(&cfg, &args(&dir, Some(devices), false)).unwrap();
            assert_eq!(s.step, 14);
            // (a) every replica ends with rank 0's weights, bit for bit
            let check = s.replicas.expect("a data-parallel summary");
            assert_eq!(check.devices, n);
            assert!(check.identical, "{devices}: {check:?}");
            assert_eq!(check.max_abs_diff, 0.0);
            // (b) the same training as one device with the whole batch, to float tolerance
            let wn = checkpoint_weights(&cfg, &dir);
            let d = max_abs_diff(&w1, &wn);
            println!("{optimizer:?} {devices}: max |w_ddp - w_one| = {d:e}, replicas identical");
            assert!(d < tol, "{devices}: max |w_ddp - w_one| = {d}");
            let mn = metrics(&dir);
            assert_eq!(mn.len(), m1.len());
            for (a, b) in m1.iter().zip(&mn) {
                assert_eq!(a["step"], b["step"]);
                for key in ["train_loss", "val_loss", "val_accuracy"] {
                    let (x, y) = (a[key].as_f64().unwrap(), b[key].as_f64().unwrap());
                    let tol = if key == "val_accuracy" { 0.02 } else { 1e-4 };
                    assert!(
                        (x - y).abs() <= tol,
                        "{devices} {}: {key} {x} vs {y}",
                        a["step"]
                    );
                }
            }
            let written: serde_json::Value =
                serde_json::from_str(&std::fs::read_to_string(dir.join("final.json")).unwrap())
                    .unwrap();
            assert_eq!(written["replicas"]["identical"], true);
        }
    }
}

#[test]
fn data_parallel_run_resumes_exactly_with_pruning_masks() {
    let tmp = TempDir::new("resume");
    let text = format!(
        "{DIGITS}\n[prune]\nmethod = \"gradual\"\ntarget = 0.5\nstart = 0.1\nend = 1.0\nfrequency = 3\n"
    );
    let cfg = config::parse(&text, &[]).unwrap();
    let dir = tmp.path("run");
    let full = run_locked(&cfg, &args(&dir, Some("cpu:0,cpu:1"), false)).unwrap();
    // masks from every pruning event reach every replica, the last one after the last step
    let check = full.replicas.unwrap();
    assert!(check.identical, "{check:?}");
    let reference = metrics(&dir);
    let last_fraction = reference.last().unwrap()["mask_fraction"].as_f64().unwrap();
    assert!(
        (last_fraction - 0.5).abs() < 0.01,
        "target reached at the last step"
    );

    // Roll back to the step-7 checkpoint (masks inside) and resume on two devices.
    let roll_back = || {
        for (step, path) in checkpoint::list(&dir).unwrap() {
            if step > 7 {
                std::fs::remove_file(path).unwrap();
            }
        }
    };
    roll_back();
    let resumed = run_locked(&cfg, &args(&dir, Some("cpu:0,cpu:1"), true)).unwrap();
    assert_eq!(resumed.weights_hash, full.weights_hash);
    assert!(resumed.replicas.unwrap().identical);
    assert_eq!(metrics(&dir), reference);

    // The same checkpoint resumes on one device (same data order; float rounding aside).
    roll_back();
    let one = run_locked(&cfg, &args(&dir, None, true)).unwrap();
    assert_eq!(one.step, 14);
    assert!(one.replicas.is_none());
}

#[test]
fn device_lists_are_checked() {
    let tmp = TempDir::new("bad");
    let cfg = config::parse(DIGITS, &[]).unwrap();
    let err = |devices: &str| {
        run_locked(&cfg, &args(&tmp.path("x"), Some(devices), false))
            .unwrap_err()
            .to_string()
    };
    assert!(
        err("cuda:0,cuda:1").contains("backend"),
        "{}",
        err("cuda:0,cuda:1")
    );
    assert!(err("cpu:0,gpu:1").contains("gpu:1"));
    let small = config::parse(DIGITS, &["train.batch_size=2".into()]).unwrap();
    let e = run_locked(&small, &args(&tmp.path("y"), Some("cpu,cpu,cpu"), false)).unwrap_err();
    assert!(e.to_string().contains("batch_size"), "{e}");
}

/// A step every replica refuses (non-finite gradients) ends the run with that error, without
/// a replica left waiting in the all-reduce; the next data-parallel run of the process works.
#[test]
fn a_refused_step_stops_every_replica() {
    let tmp = TempDir::new("fail");
    let cfg = config::parse(DIGITS, &["lr.peak=1e30".into()]).unwrap();
    let err = run_locked(&cfg, &args(&tmp.path("a"), Some("cpu:0,cpu:1"), false)).unwrap_err();
    let msg = format!("{err:#}");
    assert!(
        msg.contains("non-finite") || msg.contains("not finite"),
        "{msg}"
    );
    let cfg = config::parse(DIGITS, &["train.iterations=2".into()]).unwrap();
    let s = run_locked(&cfg, &args(&tmp.path("b"), Some("cpu:0,cpu:1"), false)).unwrap();
    assert!(s.replicas.unwrap().identical);
}
