//! `padam train <config.toml>`: one training run from a TOML config, with a run directory
//! (resolved config, `metrics.jsonl`, `train.log`, atomic checkpoints, `final.json`) and
//! step-exact `--resume`.
//!
//! Determinism: the data order of epoch `e` is a shuffle seeded by `(seed, e)`, augmentation
//! and window sampling use an RNG seeded by `(seed, step)`, and the backend RNG (dropout) is
//! reseeded from `(seed, step)` before each step. A checkpoint therefore only needs the step,
//! the model and optimizer records, and the pending loss sums to continue exactly.

mod args;
pub mod checkpoint;
pub mod config;
#[cfg(feature = "ddp")]
mod ddp;
mod driver;
mod interrupt;
mod lr;
mod metrics;
mod optimizers;
mod overrides;
pub mod prune;
pub mod task;
mod validate;

use std::fs::{self, OpenOptions};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use anyhow::{bail, Context};
use burn::tensor::backend::AutodiffBackend;

pub use args::{resolve, TrainArgs};
pub use config::TrainConfig;
pub use driver::{weights_hash, ReplicaCheck, Summary};
pub use interrupt::Interrupted;
pub use lr::LrSchedule;
pub use metrics::{metrics_line_at, read_metrics};
pub use optimizers::TrainOptimizer;
pub use task::{AnyTask, Task};

use self::args::{check_devices, devices_of};
use self::config::DeviceList;
use self::metrics::append_line;
use self::optimizers::with_optimizer;

/// `padam train`.
pub fn run(args: TrainArgs) -> anyhow::Result<()> {
    let config = resolve(&args)?;
    if args.dry_run {
        print!("{}", config.to_toml());
        return Ok(());
    }
    let summary = run_config(&config, &args)?;
    if args.quiet {
        println!("{}", serde_json::to_string(&summary)?);
    } else {
        let last = summary.last.as_ref();
        let get = |k: &str| last.and_then(|l| l.get(k)).cloned().unwrap_or_default();
        println!(
            "done: {} steps, val loss {}, val accuracy {}, zeros {} -> {}",
            summary.step,
            get("val_loss"),
            get("val_accuracy"),
            get("zero_fraction"),
            summary.run_dir.display()
        );
    }
    Ok(())
}

/// Run (or resume) `config` as `args` say; returns the summary.
pub fn run_config(config: &TrainConfig, args: &TrainArgs) -> anyhow::Result<Summary> {
    let run_dir = match &args.out {
        Some(d) => d.clone(),
        None => {
            let name = config.name.clone().unwrap_or_else(|| {
                args.config
                    .file_stem()
                    .and_then(|s| s.to_str())
                    .unwrap_or("run")
                    .to_string()
            });
            PathBuf::from("runs").join(name)
        }
    };
    config.backend.available()?;
    if let Some(spec) = &args.devices {
        check_devices(&DeviceList::parse(spec)?, spec, config)?;
    }
    // One process per run directory: a second one (a `--resume` while the first still runs)
    // would interleave their metrics and checkpoints. The OS drops the lock with its process,
    // so one left by a killed run never blocks.
    let early_lock = lock_dir(&run_dir)?;
    let resume = prepare_dir(&run_dir, config, args.resume)?;
    let _lock = match early_lock {
        Some(lock) => lock,
        None => lock_dir(&run_dir)?.context("locking the new run directory")?,
    };
    if args.resume && !resume && !args.quiet {
        eprintln!(
            "--resume: {} has no checkpoint yet; starting the run from step 0",
            run_dir.display()
        );
    }
    let args = &TrainArgs {
        resume,
        ..args.clone()
    };
    let log = OpenOptions::new()
        .create(true)
        .append(true)
        .open(run_dir.join("train.log"))
        .context("opening train.log")?;
    let subscriber = tracing_subscriber::fmt()
        .with_writer(Mutex::new(log))
        .with_ansi(false)
        .finish();
    tracing::subscriber::with_default(subscriber, || {
        tracing::info!(resume = args.resume, dir = %run_dir.display(), "padam train");
        match (config.backend, config.precision) {
            #[cfg(feature = "cuda")]
            (crate::backend::BackendKind::Cuda, config::Precision::Bf16) => {
                run_on::<burn::backend::Autodiff<burn::backend::Cuda<burn::tensor::bf16, i32>>>(
                    config, args, &run_dir,
                )
            }
            (backend, _) => {
                crate::with_backend!(backend, |B, _name| run_on::<B>(config, args, &run_dir))
            }
        }
    })
    .inspect_err(|e| {
        let _ = append_line(&run_dir.join("train.log"), &format!("ERROR {e:#}"));
    })
}

/// Lock `dir/.lock` for this process, if `dir` exists; an error when another process holds it.
fn lock_dir(dir: &Path) -> anyhow::Result<Option<fs::File>> {
    if !dir.is_dir() {
        return Ok(None);
    }
    let path = dir.join(".lock");
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .with_context(|| format!("opening {}", path.display()))?;
    match file.try_lock() {
        Ok(()) => Ok(Some(file)),
        Err(fs::TryLockError::WouldBlock) => bail!(
            "another padam process is training in {} (it holds {}); wait for it to finish or \
             stop it (Ctrl-C saves a checkpoint), then --resume",
            dir.display(),
            path.display()
        ),
        Err(fs::TryLockError::Error(e)) => {
            Err(e).with_context(|| format!("locking {}", path.display()))
        }
    }
}

/// Make the run directory ready; returns whether the run continues from a checkpoint.
///
/// A directory whose run stopped before its first checkpoint is no dead end: with the same
/// config it starts again from step 0 (with or without `--resume`), its partial metrics
/// dropped. A directory with checkpoints needs `--resume` (or another `--out`), and one that
/// holds a different config is refused.
fn prepare_dir(dir: &Path, config: &TrainConfig, resume: bool) -> anyhow::Result<bool> {
    let config_path = dir.join("config.toml");
    let checkpoints = checkpoint::list(dir)?;
    if let Some((step, _)) = checkpoints.last() {
        if resume {
            return Ok(true);
        }
        bail!(
            "{} already holds a run with checkpoints up to step {step}; pass --resume to \
             continue it, or --out for a new directory",
            dir.display()
        );
    }
    if dir.join("final.json").exists() {
        bail!(
            "{} holds a finished run without checkpoints; use --out for a new directory",
            dir.display()
        );
    }
    let metrics = dir.join("metrics.jsonl");
    let toml = config.to_toml();
    match fs::read_to_string(&config_path) {
        // A config that never trained a step (refused before its first one): replace it.
        Ok(old) if old != toml && !metrics.exists() => {
            checkpoint::write_atomic(&config_path, toml.as_bytes())?;
        }
        Ok(old) if old != toml => bail!(
            "{} holds another run's config ({}) that never reached a checkpoint; use --out for \
             a new directory, or delete it",
            dir.display(),
            config_path.display()
        ),
        Ok(_) => {
            // The same run, stopped before its first checkpoint: start it again.
            if metrics.exists() {
                fs::remove_file(&metrics)
                    .with_context(|| format!("removing {}", metrics.display()))?;
            }
            checkpoint::remove_stale_temps(dir);
        }
        Err(_) => {
            if metrics.exists() {
                bail!(
                    "{} holds metrics.jsonl but no config.toml; use --out for a new directory",
                    dir.display()
                );
            }
            if resume && !dir.is_dir() {
                bail!("--resume: run directory {} does not exist", dir.display());
            }
            fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
            checkpoint::write_atomic(&config_path, toml.as_bytes())?;
        }
    }
    Ok(false)
}

fn run_on<B: AutodiffBackend>(
    config: &TrainConfig,
    args: &TrainArgs,
    dir: &Path,
) -> anyhow::Result<Summary> {
    let device = devices_of::<B>(args)?
        .into_iter()
        .next()
        .unwrap_or_else(crate::backend::default_device::<B>);
    match task::load(config)? {
        AnyTask::Digits(t) => with_optimizer::<B, _>(config, args, dir, &t, &device),
        AnyTask::Fashion(t) => with_optimizer::<B, _>(config, args, dir, &t, &device),
        AnyTask::Cifar(t) => with_optimizer::<B, _>(config, args, dir, &t, &device),
        AnyTask::Shakespeare(t) => with_optimizer::<B, _>(config, args, dir, &t, &device),
    }
}
