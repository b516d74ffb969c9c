//! `padam train`: a real process kill mid-run followed by `--resume` ends with the same weights
//! and metrics as an uninterrupted run; corrupt, mismatched or missing checkpoints are clear
//! errors; a Fashion-MNIST CNN (dropout + augmentation) resumes exactly; configs/ parse.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use padam_lab::train::{self, checkpoint, config};

mod common;
use common::{metrics, run_locked, TempDir};

const BIN: &str = env!("CARGO_BIN_EXE_padam");

const DIGITS: &str = r#"
seed = 3
[model]
kind = "mlp"
hidden = [32]
[data]
dataset = "digits"
test_limit = 200
[optimizer]
kind = "padam"
p = 0.8
lambda = { kind = "linear", from = 0.0, to = 3e-2, steps = 100 }
[lr]
peak = 2e-2
schedule = "cosine"
warmup_steps = 10
final_fraction = 0.05
[train]
batch_size = 32
epochs = 6
eval_every = 30
checkpoint_every = 20
keep_checkpoints = 2
log_every = 7
"#;

fn padam(args: &[&str]) -> Output {
    Command::new(BIN).args(args).output().expect("run padam")
}

fn ok(out: &Output) -> String {
    assert!(
        out.status.success(),
        "padam failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn err(out: &Output) -> String {
    assert!(!out.status.success(), "expected failure");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn final_hash(dir: &Path) -> String {
    let v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("final.json")).unwrap()).unwrap();
    v["weights_hash"].as_str().unwrap().to_string()
}

/// A temp folder holding the DIGITS config; the folder and the config's path.
fn digits_dir(tag: &str) -> (TempDir, PathBuf) {
    let tmp = TempDir::new(tag);
    let cfg = tmp.path("digits.toml");
    std::fs::write(&cfg, DIGITS).unwrap();
    (tmp, cfg)
}

/// The uninterrupted run of `cfg` in `<tmp>/full`: its folder and metrics.
fn full_run(tmp: &TempDir, cfg: &Path) -> (PathBuf, Vec<serde_json::Value>) {
    let full = tmp.path("full");
    ok(&padam(&[
        "train",
        cfg.to_str().unwrap(),
        "--out",
        full.to_str().unwrap(),
        "--quiet",
    ]));
    let m = metrics(&full);
    (full, m)
}

/// `padam train cfg --out out extra...`, run to its end.
fn train_in(cfg: &Path, out: &Path, extra: &[&str]) -> Output {
    let mut args = vec![
        "train",
        cfg.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ];
    args.extend(extra);
    padam(&args)
}

/// `padam train cfg --out out` in the background, slowed to 20 ms a step.
fn spawn_slow(cfg: &Path, out: &Path, extra: &[&str], stderr: Stdio) -> std::process::Child {
    slow(cfg, out, extra).stderr(stderr).spawn().unwrap()
}

/// The command of a slowed run (20 ms a step), its output discarded.
fn slow(cfg: &Path, out: &Path, extra: &[&str]) -> Command {
    let mut command = Command::new(BIN);
    command
        .args([
            "train",
            cfg.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
        ])
        .args(["--step-delay-ms", "20"])
        .args(extra)
        .stdout(Stdio::null());
    command
}

/// Wait (60 s at most) until `ready` holds.
fn wait_until(what: &str, ready: impl Fn() -> bool) {
    let start = Instant::now();
    while !ready() {
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "{what} did not happen"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[test]
fn killed_run_resumes_to_identical_weights_and_metrics() {
    let (tmp, cfg) = digits_dir("kill");
    let (full, reference) = full_run(&tmp, &cfg);
    let cut = tmp.path("cut");
    assert_eq!(reference.len(), 9, "6 epochs of 45 steps, eval every 30");
    assert_eq!(reference.last().unwrap()["step"], 270);

    // The same run, slowed down, killed once its first checkpoint exists.
    let mut child = spawn_slow(&cfg, &cut, &["--quiet"], Stdio::null());
    wait_until("a checkpoint", || {
        !checkpoint::list(&cut).unwrap().is_empty()
    });
    std::thread::sleep(Duration::from_millis(150));
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(
        !cut.join("final.json").exists(),
        "the run finished before it was killed"
    );
    let at_kill = checkpoint::list(&cut).unwrap();
    let last_step = at_kill.last().unwrap().0;
    assert!(last_step < 270, "{at_kill:?}");

    // Resuming needs --resume: a plain start into the same folder is refused.
    let e = err(&train_in(&cfg, &cut, &["--quiet"]));
    assert!(e.contains("--resume"), "{e}");

    ok(&train_in(&cfg, &cut, &["--quiet", "--resume"]));
    assert_eq!(metrics(&cut), reference);
    assert_eq!(final_hash(&cut), final_hash(&full));
    let kept = checkpoint::list(&cut).unwrap();
    assert_eq!(kept.len(), 2, "{kept:?}");
    assert_eq!(kept.last().unwrap().0, 270);
    let log = std::fs::read_to_string(cut.join("train.log")).unwrap();
    assert!(log.contains("resumed"), "{log}");
}

#[test]
fn corrupt_mismatched_or_missing_checkpoints_are_errors() {
    let (tmp, cfg) = digits_dir("bad");
    let cfg_s = cfg.to_str().unwrap();
    let run = tmp.path("run");
    let run_s = run.to_str().unwrap();

    // Nothing to resume yet: --resume starts the run from step 0 and says so.
    std::fs::create_dir_all(&run).unwrap();
    let out = padam(&["train", cfg_s, "--out", run_s, "--resume", "--epochs", "1"]);
    ok(&out);
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(said.contains("no checkpoint yet"), "{said}");
    std::fs::remove_dir_all(&run).unwrap();

    ok(&padam(&[
        "train", cfg_s, "--out", run_s, "-q", "--epochs", "1",
    ]));
    // A different config.
    let e = err(&padam(&[
        "train",
        cfg_s,
        "--out",
        run_s,
        "--resume",
        "-q",
        "--epochs",
        "1",
        "--set",
        "optimizer.p=0.5",
    ]));
    assert!(e.contains("different config"), "{e}");
    // The same config resumes (already complete: nothing left to do).
    ok(&padam(&[
        "train", cfg_s, "--out", run_s, "--resume", "-q", "--epochs", "1",
    ]));
    // A corrupt newest checkpoint.
    let (_, newest) = checkpoint::list(&run).unwrap().pop().unwrap();
    let mut bytes = std::fs::read(&newest).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x40;
    std::fs::write(&newest, bytes).unwrap();
    let e = err(&padam(&[
        "train", cfg_s, "--out", run_s, "--resume", "-q", "--epochs", "1",
    ]));
    assert!(e.contains("corrupt"), "{e}");
    // A truncated one.
    let bytes = std::fs::read(&newest).unwrap();
    std::fs::write(&newest, &bytes[..10]).unwrap();
    let e = err(&padam(&[
        "train", cfg_s, "--out", run_s, "--resume", "-q", "--epochs", "1",
    ]));
    assert!(e.contains("not a padam checkpoint"), "{e}");
}

#[test]
fn config_errors_name_the_key() {
    let (tmp, cfg) = digits_dir("cfg");
    let cfg_s = cfg.to_str().unwrap();
    for (set, needle) in [
        ("train.bach_size=3", "bach_size"),
        ("optimizer.lambda=-1", "optimizer.lambda"),
        ("lr.schedule=\"linear\"", "linear"),
        ("optimizer.momentum=0.9", "optimizer.momentum"),
        ("optimizer.check_every=0", "optimizer.check_every"),
        // check_every defaults to log_every: the error names the key the user set
        ("train.log_every=0", "train.log_every = 0"),
        // a schedule's own error, not "did not match any variant"
        (
            "optimizer.p={kind=\"lineer\",from=2.0,to=0.8,steps=9}",
            "lineer",
        ),
        (
            "optimizer.p={kind=\"linear\",form=2.0,to=0.8,steps=9}",
            "form",
        ),
    ] {
        let e = err(&padam(&["train", cfg_s, "--dry-run", "--set", set]));
        assert!(e.contains(needle), "{set}: {e}");
    }
    if cfg!(not(feature = "cuda")) {
        let cuda = tmp.path("cuda");
        let e = err(&padam(&[
            "train",
            cfg_s,
            "--backend",
            "cuda",
            "--out",
            cuda.to_str().unwrap(),
        ]));
        assert!(e.contains("without CUDA"), "{e}");
        assert!(!cuda.exists());
    }
    let out = ok(&padam(&[
        "train",
        cfg_s,
        "--dry-run",
        "--iterations",
        "5",
        "--lr",
        "0.1",
    ]));
    assert!(out.contains("iterations = 5"), "{out}");
    assert!(!out.contains("epochs"), "{out}");
}

fn idx_images(count: usize, seed: u64) -> Vec<u8> {
    let mut b = Vec::new();
    b.extend(0x0803u32.to_be_bytes());
    b.extend((count as u32).to_be_bytes());
    b.extend(28u32.to_be_bytes());
    b.extend(28u32.to_be_bytes());
    let mut rng = padam_lab::data::Rng::new(seed);
    b.extend((0..count * 784).map(|_| rng.below(256) as u8));
    b
}

fn idx_labels(count: usize) -> Vec<u8> {
    let mut b = Vec::new();
    b.extend(0x0801u32.to_be_bytes());
    b.extend((count as u32).to_be_bytes());
    b.extend((0..count).map(|i| (i % 10) as u8));
    b
}

/// The CNN has dropout and the data augmentation: resuming from an older checkpoint (the
/// newer ones deleted) replays the exact same steps.
#[test]
fn fashion_cnn_with_dropout_and_augmentation_resumes_exactly() {
    let tmp = TempDir::new("fashion");
    let data = tmp.path("fashion-mnist");
    std::fs::create_dir_all(&data).unwrap();
    std::fs::write(data.join("train-images-idx3-ubyte"), idx_images(48, 1)).unwrap();
    std::fs::write(data.join("train-labels-idx1-ubyte"), idx_labels(48)).unwrap();
    std::fs::write(data.join("t10k-images-idx3-ubyte"), idx_images(16, 2)).unwrap();
    std::fs::write(data.join("t10k-labels-idx1-ubyte"), idx_labels(16)).unwrap();
    let text = format!(
        r#"
        [model]
        kind = "fashion_cnn"
        [data]
        dataset = "fashion_mnist"
        path = {path}
        augment = true
        [optimizer]
        kind = "pwd"
        base = "sgd"
        momentum = 0.9
        p = 0.8
        lambda = 1e-2
        [lr]
        peak = 1e-2
        schedule = "exponential"
        final_fraction = 0.25
        [train]
        batch_size = 16
        iterations = 6
        eval_every = 2
        checkpoint_every = 2
        keep_checkpoints = 10
        grad_clip = 1.0
        "#,
        path = toml::Value::String(data.display().to_string())
    );
    let cfg = config::parse(&text, &[]).unwrap();
    let args = |out: &Path, resume: bool| common::quiet_args(out.to_path_buf(), resume);
    let a = tmp.path("a");
    let full = run_locked(&cfg, &args(&a, false)).unwrap();
    assert_eq!(full.step, 6);
    let reference = metrics(&a);
    assert_eq!(reference.len(), 3);
    // Roll back to the step-2 checkpoint and resume.
    for (step, path) in checkpoint::list(&a).unwrap() {
        if step > 2 {
            std::fs::remove_file(path).unwrap();
        }
    }
    std::fs::remove_file(a.join("final.json")).unwrap();
    let resumed = run_locked(&cfg, &args(&a, true)).unwrap();
    assert_eq!(resumed.weights_hash, full.weights_hash);
    assert_eq!(metrics(&a), reference);

    // A different seed is a different run (dropout and augmentation do matter).
    let mut other = cfg.clone();
    other.seed = 2;
    let b = tmp.path("b");
    let s = run_locked(&other, &args(&b, false)).unwrap();
    assert_ne!(s.weights_hash, full.weights_hash);
}

/// Every shipped config parses and validates (without data).
#[test]
fn shipped_configs_parse() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../configs");
    let mut n = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().and_then(|e| e.to_str()) != Some("toml") {
            continue;
        }
        let text = std::fs::read_to_string(&path).unwrap();
        config::parse(&text, &[]).unwrap_or_else(|e| panic!("{}: {e:#}", path.display()));
        n += 1;
    }
    assert!(n >= 1, "no configs in {}", dir.display());
}

/// Every run directory kept in results/ (written by padam versions since 2026-11-23) still
/// reads as a config, and its (gzipped) metrics as `padam plot` reads them: a schema change
/// must leave old runs resumable, exportable and plottable.
#[test]
fn run_directories_in_results_still_read() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../results");
    let mut n = 0;
    for group in std::fs::read_dir(&root).unwrap() {
        let group = group.unwrap().path();
        let Ok(runs) = std::fs::read_dir(&group) else {
            continue;
        };
        for run in runs {
            let dir = run.unwrap().path();
            let path = dir.join("config.toml");
            let Ok(text) = std::fs::read_to_string(&path) else {
                continue;
            };
            config::parse(&text, &[]).unwrap_or_else(|e| panic!("{}: {e:#}", path.display()));
            padam_lab::runs::plot::Run::load(&dir)
                .unwrap_or_else(|e| panic!("{}: {e:#}", dir.display()));
            n += 1;
        }
    }
    assert!(n >= 10, "only {n} run directories under {}", root.display());
    // A run started before the pWD keys became the library's (its config.toml has the old
    // serialisation, so its checkpoints carry another hash) reads as the config its command
    // line gives today: checkpoint::load_for resumes it.
    let saved =
        std::fs::read_to_string(root.join("fashion/fashion-padam-target95-e150/config.toml"))
            .unwrap();
    let shipped = std::fs::read_to_string(root.join("../configs/fashion-padam.toml")).unwrap();
    let flags: Vec<String> = [
        "train.epochs=150",
        "train.iterations=",
        "sparsity.target=0.95",
        "train.checkpoint_every=2000",
        "backend=cuda",
    ]
    .map(String::from)
    .to_vec();
    assert_eq!(
        config::parse(&saved, &[]).unwrap(),
        config::parse(&shipped, &flags).unwrap()
    );
}

/// The short digits config trains end to end in-process and sparsifies.
#[test]
fn short_digits_config_runs() {
    let tmp = TempDir::new("short");
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../configs/digits-padam.toml");
    let text = std::fs::read_to_string(path).unwrap();
    let cfg = config::parse(&text, &["train.epochs=20".into()]).unwrap();
    let out = tmp.path("run");
    let s = run_locked(&cfg, &common::quiet_args(out.clone(), false)).unwrap();
    let last = s.last.unwrap();
    assert!(last["val_accuracy"].as_f64().unwrap() > 0.9, "{last}");
    assert!(last["zero_fraction"].as_f64().unwrap() > 0.5, "{last}");
    assert!(out.join("config.toml").is_file());
}

/// Run `text` to the end, roll back to the checkpoint at `back_to`, resume, and check the
/// weights and metrics match; returns the summary.
fn rollback_resume(tmp: &TempDir, tag: &str, text: &str, back_to: usize) -> train::Summary {
    let cfg = config::parse(text, &[]).unwrap();
    let dir = tmp.path(tag);
    let args = |resume: bool| common::quiet_args(dir.clone(), resume);
    let full = run_locked(&cfg, &args(false)).unwrap();
    let reference = metrics(&dir);
    for (step, path) in checkpoint::list(&dir).unwrap() {
        if step > back_to {
            std::fs::remove_file(path).unwrap();
        }
    }
    let resumed = run_locked(&cfg, &args(true)).unwrap();
    assert_eq!(resumed.weights_hash, full.weights_hash, "{tag}");
    assert_eq!(metrics(&dir), reference, "{tag}");
    full
}

#[test]
fn nanogpt_on_a_small_text_resumes_exactly() {
    let tmp = TempDir::new("gpt");
    let text_path = tmp.path("input.txt");
    let corpus =
        "First Citizen:\nBefore we proceed any further, hear me speak.\n\nAll:\nSpeak, speak.\n"
            .repeat(20);
    std::fs::write(&text_path, corpus).unwrap();
    let text = format!(
        r#"
        [model]
        kind = "nanogpt"
        block_size = 16
        n_layer = 1
        n_head = 2
        n_embd = 16
        dropout = 0.1
        [data]
        dataset = "shakespeare"
        path = {path}
        eval_batches = 2
        [optimizer]
        kind = "padam"
        beta2 = 0.99
        selection = {{ min_rank = 2, exclude = ["*wpe*"] }}
        p = {{ kind = "linear", from = 2.0, to = 0.8, steps = 4 }}
        [lr]
        peak = 1e-2
        schedule = "cosine"
        warmup_steps = 2
        final_fraction = 0.1
        [train]
        batch_size = 4
        iterations = 8
        grad_clip = 1.0
        eval_every = 4
        checkpoint_every = 2
        keep_checkpoints = 10
        "#,
        path = toml::Value::String(text_path.display().to_string())
    );
    let s = rollback_resume(&tmp, "gpt", &text, 2);
    let last = s.last.unwrap();
    assert_eq!(last["step"], 8);
    assert!(last["val_loss"].as_f64().unwrap().is_finite(), "{last}");
    assert!((last["p"].as_f64().unwrap() - 0.8).abs() < 1e-12, "{last}");
}

#[test]
fn resnet18_on_synthetic_cifar_resumes_exactly() {
    let tmp = TempDir::new("cifar");
    let data = tmp.path("cifar");
    std::fs::create_dir_all(&data).unwrap();
    let records = |n: usize, seed: u64| {
        let mut rng = padam_lab::data::Rng::new(seed);
        let mut b = Vec::new();
        for i in 0..n {
            b.push((i % 10) as u8);
            b.extend((0..3072).map(|_| rng.below(256) as u8));
        }
        b
    };
    std::fs::write(data.join("data_batch_1.bin"), records(8, 1)).unwrap();
    std::fs::write(data.join("test_batch.bin"), records(4, 2)).unwrap();
    let text = format!(
        r#"
        [model]
        kind = "resnet18"
        [data]
        dataset = "cifar10"
        path = {path}
        augment = true
        [optimizer]
        kind = "adamw"
        weight_decay = 1e-2
        [lr]
        peak = 1e-3
        schedule = "cosine"
        warmup_epochs = 1
        [train]
        batch_size = 4
        epochs = 2
        eval_every = 2
        checkpoint_every = 1
        keep_checkpoints = 10
        "#,
        path = toml::Value::String(data.display().to_string())
    );
    let s = rollback_resume(&tmp, "resnet", &text, 1);
    let last = s.last.unwrap();
    assert_eq!(last["step"], 4);
    assert!(last["p"].is_null(), "{last}");
}

/// With `PADAM_DATA` set: the short Fashion-MNIST config, cut to a few steps, on real data.
/// Every shipped `*-short.toml` trains on the real data when `PADAM_DATA` is set (CI sets it):
/// a few optimizer steps each (the full short runs take minutes in release; their results are
/// in the closing notes), with finite losses and metrics written.
#[test]
fn shipped_short_configs_train_on_real_data_when_padam_data_is_set() {
    if std::env::var_os("PADAM_DATA").is_none() {
        println!("PADAM_DATA unset: skipping the real-data runs of the short configs");
        return;
    }
    let configs = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../configs");
    for (file, steps, extra) in [
        ("fashion-padam-short.toml", 4, vec!["data.test_limit=200"]),
        ("fashion-adamw-short.toml", 2, vec!["data.test_limit=200"]),
        // runs this short end before the configs' warmup would: no warmup
        (
            "nanogpt-padam-short.toml",
            4,
            vec!["data.eval_batches=1", "lr.warmup_steps="],
        ),
        (
            "nanogpt-adamw-short.toml",
            2,
            vec!["data.eval_batches=1", "lr.warmup_steps="],
        ),
        (
            "resnet18-padam-short.toml",
            2,
            vec![
                "data.test_limit=100",
                "data.train_limit=256",
                "lr.warmup_steps=",
            ],
        ),
        (
            "resnet18-adamw-short.toml",
            1,
            vec![
                "data.test_limit=100",
                "data.train_limit=256",
                "lr.warmup_steps=",
            ],
        ),
    ] {
        let tmp = TempDir::new("realshort");
        let text = std::fs::read_to_string(configs.join(file)).unwrap();
        let mut overrides: Vec<String> = vec![
            "train.epochs=".into(),
            format!("train.iterations={steps}"),
            format!("train.eval_every={steps}"),
        ];
        overrides.extend(extra.iter().map(|s| s.to_string()));
        let cfg = config::parse(&text, &overrides).unwrap_or_else(|e| panic!("{file}: {e:#}"));
        let s = run_locked(&cfg, &common::quiet_args(tmp.path("run"), false))
            .unwrap_or_else(|e| panic!("{file}: {e:#}"));
        assert_eq!(s.step, steps, "{file}");
        let last = s.last.expect("metrics written");
        let loss = last["train_loss"]
            .as_f64()
            .expect("train_loss in the metrics line");
        assert!(loss.is_finite() && loss > 0.0, "{file}: train loss {loss}");
        println!("{file}: {last}");
    }
}

/// A digits config: the `[optimizer]` lines, the `[train]` lines besides the batch size, and
/// any further tables (`[prune]`, `[sparsity]`).
fn digits_with(optimizer: &str, train: &str, tables: &str) -> String {
    format!(
        r#"
seed = 5
[model]
kind = "mlp"
hidden = [32]
[data]
dataset = "digits"
test_limit = 200
[optimizer]
{optimizer}
[lr]
peak = 1e-2
schedule = "constant"
[train]
batch_size = 32
keep_checkpoints = 20
{train}
{tables}
"#
    )
}

/// A digits config with a `[prune]` section.
fn pruned_digits(prune: &str, optimizer: &str) -> String {
    digits_with(
        optimizer,
        "epochs = 6\neval_every = 15\ncheckpoint_every = 25",
        &format!("[prune]\n{prune}"),
    )
}

/// Exact zeros among the weight matrices (the pruned tensors) of a metrics line.
fn matrix_zeros(line: &serde_json::Value) -> (u64, u64) {
    line["tensors"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|t| t["path"].as_str().unwrap().ends_with("weight"))
        .fold((0, 0), |(z, n), t| {
            (
                z + t["zeros"].as_u64().unwrap(),
                n + t["numel"].as_u64().unwrap(),
            )
        })
}

/// Gradual magnitude pruning: the mask reaches exactly the target, and under AdamW (whose
/// update would move any weight off zero) every masked weight is exactly zero at every
/// evaluation after pruning, i.e. masks hold through fine-tuning; resuming mid-schedule from a
/// checkpoint (masks stored in it) ends bit-identical.
#[test]
fn gradual_magnitude_pruning_holds_masks_exactly_and_resumes() {
    let tmp = TempDir::new("gmp");
    let text = pruned_digits(
        "method = \"gradual\"\ntarget = 0.8\nstart = 0.1\nend = 0.5\nfrequency = 10",
        "kind = \"adamw\"\nweight_decay = 0.1",
    );
    // 1437 training digits / 32 = 45 steps per epoch, 270 steps; pruning ends at step 135
    rollback_resume(&tmp, "gmp", &text, 75);
    let lines = metrics(&tmp.path("gmp"));
    let n = 64 * 32 + 32 * 10;
    let target = (0.8_f64 * n as f64).round() as u64;
    let mut after_end = 0;
    for line in &lines {
        let step = line["step"].as_u64().unwrap();
        let (zeros, numel) = matrix_zeros(line);
        assert_eq!(numel, n as u64);
        if step >= 135 {
            after_end += 1;
            assert_eq!(
                line["mask_fraction"].as_f64().unwrap(),
                target as f64 / n as f64
            );
            // AdamW never lands a live weight on exactly 0.0: zeros == masked entries
            assert_eq!(
                zeros, target,
                "step {step}: masked weights must stay exactly 0"
            );
        } else if step < 27 {
            assert_eq!(zeros, 0, "step {step}: nothing pruned before start");
        }
    }
    assert!(
        after_end >= 5,
        "{after_end} evaluations after pruning ended"
    );
}

/// One-shot global magnitude pruning at half the run, fine-tuned with PAdam (momentum and pWD):
/// from the pruning step on, at least the target fraction of the matrices is exactly zero.
#[test]
fn one_shot_pruning_then_masked_fine_tuning() {
    let tmp = TempDir::new("oneshot");
    let text = pruned_digits(
        "method = \"one_shot\"\ntarget = 0.9\nat = 0.5",
        "kind = \"padam\"\np = 1.0\nlambda = 1e-4",
    );
    let cfg = config::parse(&text, &[]).unwrap();
    let dir = tmp.path("oneshot");
    let summary = run_locked(&cfg, &common::quiet_args(dir.clone(), false)).unwrap();
    let n = (64 * 32 + 32 * 10) as u64;
    let k = (0.9 * n as f64).round() as u64;
    for line in metrics(&dir) {
        let step = line["step"].as_u64().unwrap();
        let (zeros, _) = matrix_zeros(&line);
        if step >= 135 {
            assert!(zeros >= k, "step {step}: {zeros} zeros < {k} pruned");
        } else {
            assert!(zeros < k / 2, "step {step}: pruned before `at`");
        }
    }
    let acc = summary.last.unwrap()["val_accuracy"].as_f64().unwrap();
    assert!(acc > 0.5, "fine-tuned accuracy {acc}");
    // bad values are errors naming the key
    let bad = pruned_digits("method = \"one_shot\"\ntarget = 1.2", "kind = \"adamw\"");
    let e = config::parse(&bad, &[]).unwrap_err().to_string();
    assert!(e.contains("prune.target = 1.2"), "{e}");
    let e = config::parse(&text, &["prune.method=sometimes".to_string()])
        .unwrap_err()
        .to_string();
    assert!(e.contains("prune") && e.contains("sometimes"), "{e}");
}

/// A gradient that goes NaN stops the run with the optimizer's error (the check deferred to
/// the loss reads, `log_every` = 7 steps) before any checkpoint holds the poisoned weights.
#[test]
fn a_non_finite_gradient_stops_the_run_before_a_checkpoint_saves_it() {
    let tmp = TempDir::new("nan");
    let cfg = config::parse(DIGITS, &["lr.peak=1e30".into(), "lr.warmup_steps=0".into()]).unwrap();
    assert_eq!(cfg.optimizer.decay.as_ref().unwrap().check_every, 7);
    let out = tmp.path("run");
    let err = run_locked(&cfg, &common::quiet_args(out.clone(), false)).unwrap_err();
    let msg = format!("{err:#}");
    assert!(
        msg.contains("optimizer step 6: non-finite gradient (NaN or inf) in steps 0..=6"),
        "{msg}"
    );
    assert!(checkpoint::list(&out).unwrap().is_empty());
}

/// A digits run steered by `[sparsity]` (the target-sparsity controller).
fn steered_digits(sparsity: &str, optimizer: &str) -> String {
    digits_with(
        optimizer,
        "epochs = 12\neval_every = 45\ncheckpoint_every = 45",
        &format!("[sparsity]\n{sparsity}"),
    )
}

/// `[sparsity]`: the controller steers lambda (logged with the target trajectory at every
/// evaluation), and a run resumed mid-ramp (the controller's state is in the checkpoint) ends
/// bit-identical.
#[test]
fn sparsity_controller_steers_lambda_and_resumes_exactly() {
    let tmp = TempDir::new("steer");
    let text = steered_digits(
        "target = 0.9\nstart = 0.1\nend = 0.6\nevery = 5\nlambda_init = 1e-3",
        "kind = \"padam\"\np = 0.8\nlambda = 1e-3",
    );
    // 45 steps per epoch, 540 steps; the ramp runs from step 54 to 324
    let summary = rollback_resume(&tmp, "steer", &text, 180);
    assert_eq!(summary.step, 540);
    let lines = metrics(&tmp.path("steer"));
    assert_eq!(
        lines.last().unwrap()["target_sparsity"].as_f64().unwrap(),
        0.9
    );
    let lambdas: Vec<f64> = lines
        .iter()
        .map(|l| l["lambda"].as_f64().unwrap())
        .collect();
    assert!(
        lambdas.windows(2).any(|w| w[0] != w[1]),
        "lambda was steered: {lambdas:?}"
    );
}

/// `clock = "lr"`: the ramp runs on the learning-rate clock. Under a cosine decay to a tenth
/// it reaches the target at about half the run where the step clock's reaches it at three
/// quarters; the logged trajectory is at the target exactly from the lr clock's end on, and a
/// run resumed mid-ramp ends bit-identical.
#[test]
fn sparsity_on_the_lr_clock_ends_the_ramp_early_and_resumes_exactly() {
    let tmp = TempDir::new("steer-lr");
    let text = steered_digits(
        "target = 0.9\nevery = 5\nclock = \"lr\"",
        "kind = \"padam\"\np = 0.8\nlambda = 1e-3",
    )
    .replace(
        "schedule = \"constant\"",
        "schedule = \"cosine\"\nfinal_fraction = 0.1",
    );
    let cfg = config::parse(&text, &[]).unwrap();
    // 45 steps per epoch, 540 steps.
    let lr = cfg.lr_schedule(45);
    let rates: Vec<f64> = (0..540).map(|t| lr.at(t)).collect();
    let target = cfg.sparsity.clone().unwrap();
    let on_lr = padam::SparsityController::with_learning_rates(target.clone(), &rates).unwrap();
    let on_steps =
        padam::SparsityController::new(target.with_clock(padam::RampClock::Steps), rates.len())
            .unwrap();
    assert_eq!(on_steps.end_step(), 405);
    assert!(
        (240..300).contains(&on_lr.end_step()),
        "{}",
        on_lr.end_step()
    );
    rollback_resume(&tmp, "steer-lr", &text, 180);
    for line in metrics(&tmp.path("steer-lr")) {
        let step = line["step"].as_u64().unwrap() as usize;
        let aim = line["target_sparsity"].as_f64().unwrap();
        assert_eq!(aim == 0.9, step >= on_lr.end_step(), "step {step}: {aim}");
    }
}

/// The promise of `[sparsity]`: the run ends at the target (within half a point), for each of
/// three targets, on a digits MLP under PAdam (60 epochs, 108 controller updates).
#[test]
fn sparsity_target_is_reached() {
    for target in [0.9, 0.95, 0.98] {
        let tmp = TempDir::new(&format!("steer-{target}"));
        let text = format!(
            r#"
seed = 5
[model]
kind = "mlp"
hidden = [64]
[data]
dataset = "digits"
test_limit = 200
[optimizer]
kind = "padam"
p = 0.8
[lr]
peak = 1e-2
schedule = "cosine"
final_fraction = 0.1
[train]
batch_size = 32
epochs = 60
eval_every = 225
[sparsity]
target = {target}
every = 25
"#
        );
        let cfg = config::parse(&text, &[]).unwrap();
        let args = common::quiet_args(tmp.path("run"), false);
        let summary = run_locked(&cfg, &args).unwrap();
        let zeros = summary.last.unwrap()["zero_fraction"].as_f64().unwrap();
        assert!(
            (zeros - target).abs() <= 0.005,
            "target {target}: final zero fraction {zeros}"
        );
    }
}

/// With `selection = "matrices"` the controller steers the zeros of the weight matrices, and
/// the metrics log that fraction (`controlled_fraction`) beside the all-weights one: they
/// differ, since the biases are never decayed to zero.
#[test]
fn controlled_fraction_is_logged_over_the_decayed_weights() {
    let tmp = TempDir::new("steer-matrices");
    let text = steered_digits(
        "target = 0.9\nstart = 0.1\nend = 0.6\nevery = 5",
        "kind = \"padam\"\np = 0.8\nlambda = 1e-3\nselection = \"matrices\"",
    );
    let cfg = config::parse(&text, &[]).unwrap();
    let args = common::quiet_args(tmp.path("run"), false);
    run_locked(&cfg, &args).unwrap();
    let lines = metrics(&tmp.path("run"));
    for line in &lines {
        // The MLP's matrices are its `.weight` tensors; its biases are rank 1.
        let (zeros, numel) = matrix_zeros(line);
        let controlled = line["controlled_fraction"].as_f64().unwrap();
        assert_eq!(controlled, zeros as f64 / numel as f64);
    }
    // The run got sparse (this short a run may end a point or two past the target), and the
    // biases, never zeroed, keep the all-weights fraction below it.
    let last = lines.last().unwrap();
    let controlled = last["controlled_fraction"].as_f64().unwrap();
    assert!(controlled > 0.85, "{controlled}");
    assert!(last["zero_fraction"].as_f64().unwrap() < controlled);
}

#[test]
fn sparsity_target_errors_name_the_key() {
    let adamw = steered_digits("target = 0.9", "kind = \"adamw\"");
    let e = format!("{:#}", config::parse(&adamw, &[]).unwrap_err());
    assert!(
        e.contains("sparsity.target = 0.9") && e.contains("pWD"),
        "{e}"
    );
    let padam = "kind = \"padam\"\np = 0.8";
    let e = format!(
        "{:#}",
        config::parse(&steered_digits("target = 1.5", padam), &[]).unwrap_err()
    );
    assert!(e.contains("sparsity.target = 1.5"), "{e}");
    let ramp = steered_digits("target = 0.9\nstart = 0.8\nend = 0.5", padam);
    let e = format!("{:#}", config::parse(&ramp, &[]).unwrap_err());
    assert!(e.contains("sparsity.end"), "{e}");
    let typo = steered_digits("target = 0.9\nevry = 5", padam);
    let e = format!("{:#}", config::parse(&typo, &[]).unwrap_err());
    assert!(e.contains("evry"), "{e}");
    let clock = steered_digits("target = 0.9\nclock = \"epochs\"", padam);
    let e = format!("{:#}", config::parse(&clock, &[]).unwrap_err());
    assert!(e.contains("clock") && e.contains("epochs"), "{e}");
}

/// A run stopped before its first checkpoint is no dead end: the same command starts it again
/// from step 0 (plain or with `--resume`), dropping its partial metrics; another config in
/// the directory is refused with a message naming it.
#[test]
fn a_run_stopped_before_its_first_checkpoint_starts_again() {
    let (tmp, cfg) = digits_dir("early");
    let cfg_s = cfg.to_str().unwrap();
    let (full, reference) = full_run(&tmp, &cfg);

    for resume in [false, true] {
        // what a run killed before its first checkpoint leaves: its config and a metrics line
        let dir = tmp.path(&format!("early-{resume}"));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::copy(full.join("config.toml"), dir.join("config.toml")).unwrap();
        let first = std::fs::read_to_string(full.join("metrics.jsonl")).unwrap();
        std::fs::write(dir.join("metrics.jsonl"), first.lines().next().unwrap()).unwrap();
        let mut a = vec!["train", cfg_s, "--out", dir.to_str().unwrap(), "--quiet"];
        if resume {
            a.push("--resume");
        }
        ok(&padam(&a));
        assert_eq!(metrics(&dir), reference, "resume = {resume}");
        assert_eq!(final_hash(&dir), final_hash(&full));
    }

    let other = tmp.path("other");
    std::fs::create_dir_all(&other).unwrap();
    std::fs::write(other.join("config.toml"), "seed = 99\n").unwrap();
    std::fs::write(other.join("metrics.jsonl"), "{\"step\": 1}\n").unwrap();
    let e = err(&padam(&["train", cfg_s, "--out", other.to_str().unwrap()]));
    assert!(
        e.contains("another run's config") && e.contains("config.toml"),
        "{e}"
    );
}

/// Without a terminal (a pipe here, as under nohup or CI) progress comes as plain lines on
/// stderr: one per evaluation, with step, loss, accuracy, zeros, speed and ETA.
#[test]
fn progress_lines_without_a_terminal() {
    let (tmp, cfg) = digits_dir("lines");
    let out = padam(&[
        "train",
        cfg.to_str().unwrap(),
        "--out",
        tmp.path("run").to_str().unwrap(),
    ]);
    ok(&out);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let lines: Vec<&str> = stderr.lines().filter(|l| l.starts_with("step ")).collect();
    assert_eq!(lines.len(), 9, "one per evaluation: {stderr}");
    let last = lines.last().unwrap();
    assert!(last.starts_with("step 270/270 (100.0%) loss "), "{last}");
    assert!(
        last.contains("acc ") && last.contains("zeros ") && last.contains("items/s eta "),
        "{last}"
    );
}

/// Settings that used to be accepted silently are errors naming the key and value (issue 24
/// item 4); a run refused before its first step leaves a directory the corrected command
/// reuses.
#[test]
fn silently_accepted_settings_are_errors() {
    let (tmp, cfg) = digits_dir("silent");
    let cfg_s = cfg.to_str().unwrap();
    let run = tmp.path("run");
    let run_s = run.to_str().unwrap();
    for (args, needle) in [
        (vec!["--set", "data.test_rows=0"], "data.test_rows = 0"),
        (
            vec!["--set", "data.test_rows=1797"],
            "data.test_rows = 1797",
        ),
        (
            vec!["--set", "model.hidden=[4000000000]"],
            "model.hidden = [4000000000]",
        ),
        (
            vec!["--set", "lr.warmup_steps=100000"],
            "lr.warmup_steps = 100000",
        ),
        (vec!["--set", "data.augment=true"], "data.augment = true"),
        (
            vec!["--epochs", "409927646082434481"],
            "train.epochs = 409927646082434481",
        ),
    ] {
        let mut a = vec!["train", cfg_s, "--out", run_s, "-q"];
        a.extend(args.iter().copied());
        let e = err(&padam(&a));
        assert!(e.contains(needle), "{args:?}: {e}");
    }
    // the corrected command runs in the same directory
    ok(&padam(&[
        "train", cfg_s, "--out", run_s, "-q", "--epochs", "1",
    ]));
}

/// Ctrl-C (SIGINT) stops after the step in progress with a checkpoint of that step and a line
/// saying where `--resume` continues (exit 130); the resumed run ends with the uninterrupted
/// run's weights bit for bit. Metrics match too, except the train loss of the interval cut by
/// the interrupt, whose losses were summed in two parts (last bits of an f32 sum).
#[cfg(unix)]
#[test]
fn ctrl_c_saves_a_checkpoint_and_resume_loses_nothing() {
    let (tmp, cfg) = digits_dir("sigint");
    let (full, reference) = full_run(&tmp, &cfg);

    let cut = tmp.path("cut");
    let child = spawn_slow(&cfg, &cut, &[], Stdio::piped());
    // interrupt between checkpoints (every 30 steps, 20 ms a step)
    wait_until("a metrics line", || {
        std::fs::read_to_string(cut.join("metrics.jsonl")).is_ok_and(|m| !m.is_empty())
    });
    std::thread::sleep(Duration::from_millis(230));
    signal("-INT", &child.id().to_string());
    let stderr = interrupted(child);
    assert!(
        stderr.contains("interrupted at step") && stderr.contains("--resume"),
        "{stderr}"
    );
    let (step, _) = checkpoint::list(&cut).unwrap().pop().unwrap();
    assert!(
        step % 30 != 0 && step < 270,
        "the checkpoint is the interrupt's, step {step}"
    );
    assert!(
        stderr.contains(&format!("interrupted at step {step} of 270")),
        "{stderr}"
    );

    ok(&train_in(&cfg, &cut, &["--quiet", "--resume"]));
    assert_eq!(final_hash(&cut), final_hash(&full));
    let resumed = metrics(&cut);
    assert_eq!(resumed.len(), reference.len());
    for (a, b) in resumed.iter().zip(&reference) {
        let (mut a, mut b) = (a.clone(), b.clone());
        let (la, lb) = (
            a["train_loss"].as_f64().unwrap(),
            b["train_loss"].as_f64().unwrap(),
        );
        assert!(
            (la - lb).abs() <= 1e-6 * lb.abs(),
            "train loss {la} vs {lb}"
        );
        a.as_object_mut().unwrap().remove("train_loss");
        b.as_object_mut().unwrap().remove("train_loss");
        assert_eq!(a, b);
    }
}

/// `kill <sig> -- <target>` (a process id, or minus a process group's).
#[cfg(unix)]
fn signal(sig: &str, target: &str) {
    let status = Command::new("kill")
        .args([sig, "--", target])
        .status()
        .unwrap();
    assert!(status.success(), "kill {sig} {target}");
}

/// The stderr of an interrupted run, once it exited with 130.
#[cfg(unix)]
fn interrupted(child: std::process::Child) -> String {
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(130), "{stderr}");
    stderr
}

/// SIGTERM delivered twice at once, as GNU `timeout` delivers it (to the process, then to its
/// process group): one request, so the run still stops with a checkpoint of the step in
/// progress instead of stopping at once.
#[cfg(unix)]
#[test]
fn sigterm_sent_twice_at_once_still_saves_a_checkpoint() {
    use std::os::unix::process::CommandExt;
    let (tmp, cfg) = digits_dir("sigterm-twice");
    let cut = tmp.path("cut");
    let child = slow(&cfg, &cut, &[])
        .process_group(0)
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_until("a metrics line", || {
        std::fs::read_to_string(cut.join("metrics.jsonl")).is_ok_and(|m| !m.is_empty())
    });
    let pid = child.id().to_string();
    signal("-TERM", &pid);
    signal("-TERM", &format!("-{pid}"));
    let stderr = interrupted(child);
    assert!(!stderr.contains("interrupted again"), "{stderr}");
    let (step, _) = checkpoint::list(&cut).unwrap().pop().unwrap();
    assert!(
        stderr.contains(&format!("interrupted at step {step} of 270")),
        "{stderr}"
    );
}

/// One process per run directory: a second `--resume` while the first runs is refused by name;
/// the lock of a process killed with SIGKILL does not block the next `--resume`.
#[test]
fn a_second_process_on_a_run_directory_is_refused() {
    let (tmp, cfg) = digits_dir("lock");
    let cfg_s = cfg.to_str().unwrap();
    let full = tmp.path("full");
    ok(&train_in(&cfg, &full, &["--quiet"]));
    let run = tmp.path("run");
    let run_s = run.to_str().unwrap();
    let mut first = spawn_slow(&cfg, &run, &["--quiet"], Stdio::null());
    wait_until("a checkpoint", || {
        !checkpoint::list(&run).unwrap().is_empty()
    });
    let e = err(&padam(&[
        "train", cfg_s, "--out", run_s, "--quiet", "--resume",
    ]));
    assert!(e.contains("another padam process is training in"), "{e}");
    first.kill().unwrap();
    first.wait().unwrap();
    ok(&padam(&[
        "train", cfg_s, "--out", run_s, "--quiet", "--resume",
    ]));
    assert_eq!(final_hash(&run), final_hash(&full));
    assert_eq!(metrics(&run), metrics(&full));
}

/// A damaged metrics history on resume is repaired as far as it can be and what was lost is
/// said: a deleted file, an unreadable line in the middle (the lines after it are kept), a
/// file of garbage (moved aside); the weights are exact in every case.
#[test]
fn a_damaged_metrics_history_is_reported_on_resume() {
    let tmp = TempDir::new("history");
    let cfg_text = config::parse(DIGITS, &[]).unwrap();
    let full_dir = tmp.path("full");
    let args = |dir: &Path, resume: bool| common::quiet_args(dir.to_path_buf(), resume);
    let full = run_locked(&cfg_text, &args(&full_dir, false)).unwrap();
    let reference = metrics(&full_dir);
    let cfg = tmp.path("digits.toml");
    std::fs::write(&cfg, DIGITS).unwrap();
    type Hurt = fn(&Path);
    let damage: [(&str, Hurt); 3] = [
        ("deleted", |m| std::fs::remove_file(m).unwrap()),
        ("torn", |m| {
            let text = std::fs::read_to_string(m).unwrap();
            let mut lines: Vec<&str> = text.lines().collect();
            lines[0] = "{\"step\": 30, \"val_los";
            std::fs::write(m, lines.join("\n") + "\n").unwrap();
        }),
        ("garbage", |m| {
            std::fs::write(m, "not json\nat all\n").unwrap()
        }),
    ];
    for (tag, hurt) in damage {
        let dir = tmp.path(tag);
        run_locked(&cfg_text, &args(&dir, false)).unwrap();
        for (step, path) in checkpoint::list(&dir).unwrap() {
            if step > 260 {
                std::fs::remove_file(path).unwrap();
            }
        }
        hurt(&dir.join("metrics.jsonl"));
        let out = padam(&[
            "train",
            cfg.to_str().unwrap(),
            "--out",
            dir.to_str().unwrap(),
            "--resume",
        ]);
        ok(&out);
        let said = String::from_utf8_lossy(&out.stderr);
        assert!(
            said.contains("warning:") && said.contains("lost"),
            "{tag}: {said}"
        );
        assert_eq!(final_hash(&dir), full.weights_hash, "{tag}");
        let m = metrics(&dir);
        match tag {
            // checkpoints every 20 steps, the last two kept: back to step 260
            "deleted" | "garbage" => assert_eq!(m[..], reference[8..], "{tag}"),
            _ => assert_eq!(m[..], reference[1..], "{tag}"),
        }
        if tag == "garbage" {
            assert!(dir.join("metrics.jsonl.unreadable").is_file());
        }
    }
}

/// Forged checkpoints (checksums recomputed, so only their content can betray them) are
/// errors naming the file and the mismatch, never a resumed run and never a printed panic:
/// a model record of another width, a step that disagrees with the file name, an optimizer
/// record whose step count disagrees with the loop's.
#[test]
fn forged_checkpoints_are_refused() {
    let (tmp, cfg) = digits_dir("forged");
    let narrow_cfg = tmp.path("narrow.toml");
    std::fs::write(
        &narrow_cfg,
        DIGITS.replace("hidden = [32]", "hidden = [16]"),
    )
    .unwrap();
    let (run, narrow) = (tmp.path("run"), tmp.path("narrow"));
    for (c, d) in [(&cfg, &run), (&narrow_cfg, &narrow)] {
        let a = [
            "train",
            c.to_str().unwrap(),
            "--out",
            d.to_str().unwrap(),
            "-q",
            "--epochs",
            "1",
        ];
        ok(&padam(&a));
    }
    let newest = |d: &Path| checkpoint::list(d).unwrap().pop().unwrap().1;
    let original = std::fs::read(newest(&run)).unwrap();
    let decode = |bytes: &[u8]| checkpoint::Checkpoint::decode(bytes, Path::new("x")).unwrap();
    let resume = || train_in(&cfg, &run, &["-q", "--epochs", "1", "--resume"]);

    // another width's model record under this run's config hash
    let mut forged = decode(&original);
    forged.model = decode(&std::fs::read(newest(&narrow)).unwrap()).model;
    std::fs::write(newest(&run), forged.encode()).unwrap();
    let e = err(&resume());
    assert!(e.contains("shape") && !e.contains("panicked"), "{e}");

    // a step that is not the one the file name says
    let mut forged = decode(&original);
    forged.state.step += 1;
    std::fs::write(newest(&run), forged.encode()).unwrap();
    let e = err(&resume());
    assert!(e.contains("not the step") && !e.contains("panicked"), "{e}");

    // the same, renamed to match: the optimizer record still counts the real steps
    let path = newest(&run);
    let renamed = path.with_file_name(checkpoint::file_name(forged.state.step));
    std::fs::rename(&path, &renamed).unwrap();
    let e = err(&resume());
    assert!(
        e.contains("optimizer record has taken") && !e.contains("panicked"),
        "{e}"
    );

    // the genuine checkpoint still resumes
    std::fs::remove_file(&renamed).unwrap();
    std::fs::write(&path, &original).unwrap();
    ok(&resume());
}
