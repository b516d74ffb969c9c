//! `padam sweep`: a grid runs, re-running skips the finished runs, an interrupted run resumes,
//! and the table holds each run's final metrics.

use std::path::PathBuf;

use padam_lab::runs::sweep::{self, Status, SweepArgs};

mod common;
use common::tmp;

const DIGITS: &str = r#"
seed = 2
[model]
kind = "mlp"
hidden = [16]
[data]
dataset = "digits"
test_limit = 100
[optimizer]
kind = "padam"
p = 0.8
lambda = 1e-2
[lr]
peak = 2e-2
schedule = "constant"
[train]
batch_size = 64
epochs = 2
eval_every = 10
checkpoint_every = 10
"#;

#[test]
fn grid_runs_skips_finished_runs_and_resumes_interrupted_ones() {
    let root = tmp("grid");
    let config = root.join("digits.toml");
    std::fs::write(&config, DIGITS).unwrap();
    let args = SweepArgs {
        config: config.clone(),
        grid: vec!["lambda=1e-2,5e-2".into(), "optimizer=padam,adamw".into()],
        out: Some(root.join("sweep")),
        set: vec![],
        backend: None,
        data: None,
        quiet: true,
    };
    let first = sweep::run(&args).unwrap();
    // AdamW does not take lambda: it runs once
    let names: Vec<&str> = first.iter().map(|r| r.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "lambda=1e-2_optimizer=padam",
            "optimizer=adamw",
            "lambda=5e-2_optimizer=padam"
        ]
    );
    assert!(first.iter().all(|r| r.status == Status::Trained));
    // more lambda, more zeros; AdamW has none
    let zeros = |i: usize| first[i].last["zero_fraction"].as_f64().unwrap();
    assert_eq!(zeros(1), 0.0);
    assert!(zeros(2) > zeros(0), "{} vs {}", zeros(2), zeros(0));

    // the table holds each run's final metrics
    let csv = std::fs::read_to_string(root.join("sweep/sweep.csv")).unwrap();
    let lines: Vec<&str> = csv.lines().collect();
    assert_eq!(lines.len(), 4);
    assert!(lines[0].starts_with("lambda,optimizer,val_accuracy,val_loss,zero_fraction"));
    for (line, run) in lines[1..].iter().zip(&first) {
        let acc = run.last["val_accuracy"].as_f64().unwrap();
        assert!(line.contains(&format!("{acc:.4}")), "{line}");
    }
    assert!(std::fs::read_to_string(root.join("sweep/sweep.md"))
        .unwrap()
        .contains("| lambda | optimizer | val accuracy"));
    assert!(root.join("sweep/tradeoff.png").is_file());

    // again: everything skipped, same metrics
    let again = sweep::run(&args).unwrap();
    assert!(again.iter().all(|r| r.status == Status::Skipped));
    for (a, b) in again.iter().zip(&first) {
        assert_eq!(a.last["val_accuracy"], b.last["val_accuracy"]);
    }

    // interrupt one run: drop its end (final.json, the last checkpoint); it resumes exactly
    let run = root.join("sweep/lambda=5e-2_optimizer=padam");
    let hash = |d: &PathBuf| {
        let v: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(d.join("final.json")).unwrap()).unwrap();
        v["weights_hash"].clone()
    };
    let before = hash(&run);
    std::fs::remove_file(run.join("final.json")).unwrap();
    let ckpts = padam_lab::train::checkpoint::list(&run).unwrap();
    std::fs::remove_file(&ckpts.last().unwrap().1).unwrap();
    let third = sweep::run(&args).unwrap();
    assert_eq!(third[2].status, Status::Resumed);
    assert_eq!(third[0].status, Status::Skipped);
    assert_eq!(hash(&run), before, "resumed run ends with the same weights");
    let _ = std::fs::remove_dir_all(&root);
}

/// `--grid target=...` on a config with `[sparsity]` sweeps the controller's target (not
/// pruning's), and each run logs its own target.
#[test]
fn grid_target_sweeps_the_sparsity_controller() {
    let root = tmp("grid-target");
    let config = root.join("digits.toml");
    std::fs::write(
        &config,
        format!("{DIGITS}[sparsity]\ntarget = 0.5\nevery = 5\n"),
    )
    .unwrap();
    let args = SweepArgs {
        config,
        grid: vec!["target=0.3,0.6".into()],
        out: Some(root.join("sweep")),
        set: vec![],
        backend: None,
        data: None,
        quiet: true,
    };
    let runs = sweep::run(&args).unwrap();
    let targets: Vec<f64> = runs
        .iter()
        .map(|r| r.last["target_sparsity"].as_f64().unwrap())
        .collect();
    assert_eq!(targets, [0.3, 0.6]);
    let _ = std::fs::remove_dir_all(&root);
}
