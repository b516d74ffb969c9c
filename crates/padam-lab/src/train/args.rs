//! The command line of `padam train`: its flags, how they become `--set` overrides of the
//! config, and the `--devices` list.

use std::fs;
use std::path::PathBuf;

use anyhow::{bail, Context};
use burn::tensor::backend::Backend;
use clap::Args;

use super::config::{DeviceList, TrainConfig};
use super::overrides;

/// Options of `padam train`.
#[derive(Args, Debug, Clone, Default)]
pub struct TrainArgs {
    /// The run's TOML config (see configs/).
    pub config: PathBuf,
    /// Run directory (default: runs/<config name>).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Continue the run in the run directory from its newest checkpoint.
    #[arg(long)]
    pub resume: bool,
    /// Override a config value: `--set optimizer.lambda=1e-3` (repeatable; `key=` removes).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub set: Vec<String>,
    /// Override `seed`.
    #[arg(long)]
    pub seed: Option<u64>,
    /// Override `train.epochs` (clears `train.iterations`).
    #[arg(long)]
    pub epochs: Option<usize>,
    /// Override `train.iterations` (clears `train.epochs`).
    #[arg(long)]
    pub iterations: Option<usize>,
    /// Override `train.batch_size`.
    #[arg(long)]
    pub batch_size: Option<usize>,
    /// Override `lr.peak`.
    #[arg(long)]
    pub lr: Option<f64>,
    /// Override `backend` (cpu, cuda).
    #[arg(long)]
    pub backend: Option<String>,
    /// Override `data.path`.
    #[arg(long)]
    pub data: Option<PathBuf>,
    /// Train data-parallel on these devices, one model replica each: `cuda:0,cuda:1`, or
    /// `cpu:0,cpu:1` (replicas on the CPU). Sets `backend`; `train.batch_size` stays the
    /// global batch, split across the replicas (binaries built with `--features ddp` or `cuda`).
    #[arg(long, value_name = "DEVICE,...")]
    pub devices: Option<String>,
    /// No progress bar; print only the final summary as one JSON line.
    #[arg(long, short)]
    pub quiet: bool,
    /// Check and print the resolved config, then exit.
    #[arg(long)]
    pub dry_run: bool,
    /// Testing aid: sleep this many milliseconds after every step.
    #[arg(long, hide = true, default_value_t = 0)]
    pub step_delay_ms: u64,
}

impl TrainArgs {
    /// The `--set` list with the explicit flags appended.
    pub fn overrides(&self) -> Vec<String> {
        let mut o = self.set.clone();
        if let Some(s) = self.seed {
            o.push(format!("seed={s}"));
        }
        if let Some(e) = self.epochs {
            o.push(format!("train.epochs={e}"));
            o.push("train.iterations=".into());
        }
        if let Some(i) = self.iterations {
            o.push(format!("train.iterations={i}"));
            o.push("train.epochs=".into());
        }
        if let Some(b) = self.batch_size {
            o.push(format!("train.batch_size={b}"));
        }
        if let Some(lr) = self.lr {
            o.push(format!("lr.peak={lr:e}"));
        }
        if let Some(b) = &self.backend {
            o.push(format!("backend=\"{b}\""));
        }
        // The backend of `--devices` (a bad list is reported by `resolve` / `run_config`).
        if let Some(Ok(d)) = self.devices.as_deref().map(DeviceList::parse) {
            o.push(format!("backend=\"{}\"", d.backend.name()));
        }
        if let Some(d) = &self.data {
            o.push(format!(
                "data.path={}",
                toml::Value::String(d.display().to_string())
            ));
        }
        o
    }
}

/// Read the config file and apply the overrides.
pub fn resolve(args: &TrainArgs) -> anyhow::Result<TrainConfig> {
    if let Some(spec) = &args.devices {
        let d = DeviceList::parse(spec)?;
        if let Some(b) = args.backend.as_deref().filter(|b| *b != d.backend.name()) {
            bail!("--backend {b} contradicts --devices {spec}");
        }
    }
    let text = fs::read_to_string(&args.config)
        .with_context(|| format!("reading {}", args.config.display()))?;
    overrides::parse(&text, &args.overrides())
        .with_context(|| format!("config {}", args.config.display()))
}

/// `--devices` fits the config and this binary.
pub(super) fn check_devices(
    d: &DeviceList,
    spec: &str,
    config: &TrainConfig,
) -> anyhow::Result<()> {
    if d.backend != config.backend {
        bail!(
            "--devices {spec} are {} devices but the run's backend is {:?}",
            d.backend.name(),
            config.backend.name()
        );
    }
    let n = d.indices.len();
    if n > 1 && !cfg!(feature = "ddp") {
        bail!(
            "--devices {spec}: this binary was built without data-parallel training; rebuild \
             with `--features ddp` (or `--features cuda`)"
        );
    }
    if n > 1 && config.sparsity.is_some() {
        bail!(
            "--devices {spec}: [sparsity] (the target-sparsity controller) runs on one device \
             only so far; drop --devices or the [sparsity] table"
        );
    }
    if config.train.batch_size < n {
        bail!(
            "--devices {spec}: train.batch_size = {} is smaller than the {n} devices it is \
             split across",
            config.train.batch_size
        );
    }
    Ok(())
}

/// The devices of `--devices` on backend `B` (empty without the flag).
pub(super) fn devices_of<B: Backend>(args: &TrainArgs) -> anyhow::Result<Vec<B::Device>> {
    use burn::tensor::backend::{Device, DeviceId};
    let Some(spec) = &args.devices else {
        return Ok(Vec::new());
    };
    let type_id = crate::backend::default_device::<B>().to_id().type_id;
    DeviceList::parse(spec)?
        .indices
        .iter()
        .map(|&i| {
            let index = u16::try_from(i).with_context(|| format!("--devices {spec}: index {i}"))?;
            Ok(B::Device::from_id(DeviceId::new(type_id, index)))
        })
        .collect()
}
