//! `padam demo`: a small MLP on the built-in digits data, trained once with AdamW and once
//! with PAdam (Adam + pWD, p = 0.8) from the same initial weights and batch order, then one
//! table of test accuracy, sparsity, parameter count and wall time.
//!
//! How the defaults were chosen: docs/DEMO.md.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::time::Instant;

use anyhow::Context;
use burn::backend::Autodiff;
use burn::module::AutodiffModule;
use burn::optim::AdamWConfig;
use burn::tensor::backend::Backend;
use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use padam::{sparsity, PAdamConfig, ParamSelection};
use serde::Serialize;

use crate::backend::Cpu;
use crate::data::{digits, Dataset};
use crate::models::{Mlp, MlpConfig};
use crate::train::TrainOptimizer;
use fit::{fit, FitConfig};

pub mod fit;
pub mod toy;

/// The demo's backend: burn-flex on CPU with autodiff.
pub type DemoBackend = Autodiff<Cpu>;

/// Default number of epochs.
pub const DEFAULT_EPOCHS: usize = 100;
/// Default peak learning rate (both optimizers).
pub const DEFAULT_LR: f64 = 3e-2;
/// Default pWD strength.
pub const DEFAULT_LAMBDA: f64 = 3e-2;
/// Default pWD exponent.
pub const DEFAULT_P: f64 = 0.8;
/// Default AdamW weight decay (PyTorch's AdamW default).
pub const DEFAULT_ADAMW_DECAY: f64 = 1e-2;
/// Default batch size.
pub const DEFAULT_BATCH_SIZE: usize = 32;
/// Default hidden layer width.
pub const DEFAULT_HIDDEN: usize = 256;
/// Default seed (model weights, data split, batch order).
pub const DEFAULT_SEED: u64 = 1;

/// Options of `padam demo`.
#[derive(Args, Debug, Clone, PartialEq)]
pub struct DemoArgs {
    /// Passes over the training data, per optimizer.
    #[arg(long, default_value_t = DEFAULT_EPOCHS)]
    pub epochs: usize,
    /// Peak learning rate of both optimizers (cosine-decayed to 1% over the run).
    #[arg(long, default_value_t = DEFAULT_LR)]
    pub lr: f64,
    /// PAdam's pWD strength lambda.
    #[arg(long, default_value_t = DEFAULT_LAMBDA)]
    pub lambda: f64,
    /// PAdam's norm exponent p.
    #[arg(long, default_value_t = DEFAULT_P)]
    pub p: f64,
    /// AdamW's (decoupled, PyTorch-style) weight decay.
    #[arg(long, default_value_t = DEFAULT_ADAMW_DECAY)]
    pub adamw_decay: f64,
    /// Mini-batch size.
    #[arg(long, default_value_t = DEFAULT_BATCH_SIZE)]
    pub batch_size: usize,
    /// Hidden layer widths, comma-separated (e.g. 128 or 128,64).
    #[arg(long, value_delimiter = ',', default_values_t = [DEFAULT_HIDDEN])]
    pub hidden: Vec<usize>,
    /// Seed of the data split, the initial weights and the batch order.
    #[arg(long, default_value_t = DEFAULT_SEED)]
    pub seed: u64,
    /// No progress bars.
    #[arg(long)]
    pub quiet: bool,
    /// Read digits CSV (64 pixels 0..16 then a label; gzip or plain) from this file instead of
    /// the built-in data.
    #[arg(long)]
    pub data: Option<PathBuf>,
    /// Also write the table rows as JSON to this file.
    #[arg(long)]
    pub json: Option<PathBuf>,
}

impl Default for DemoArgs {
    fn default() -> Self {
        Self {
            epochs: DEFAULT_EPOCHS,
            lr: DEFAULT_LR,
            lambda: DEFAULT_LAMBDA,
            p: DEFAULT_P,
            adamw_decay: DEFAULT_ADAMW_DECAY,
            batch_size: DEFAULT_BATCH_SIZE,
            hidden: vec![DEFAULT_HIDDEN],
            seed: DEFAULT_SEED,
            quiet: false,
            data: None,
            json: None,
        }
    }
}

/// One row of the demo's table (also its JSON form).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DemoRow {
    /// Optimizer and its decay settings, e.g. `PAdam p=0.8 lambda=0.01`.
    pub optimizer: String,
    /// Fraction of the test split classified correctly.
    pub test_accuracy: f64,
    /// Fraction of all parameters exactly 0.
    pub zero_fraction: f64,
    /// Fraction of all parameters with `|w| < 1e-9`.
    pub below_fraction: f64,
    /// Parameters exactly 0.
    pub zeros: usize,
    /// Parameters with `|w| < 1e-9`.
    pub below: usize,
    /// Parameters in the model.
    pub params: usize,
    /// Mean training loss of the last epoch.
    pub final_train_loss: f64,
    /// Training wall time in seconds.
    pub wall_seconds: f64,
}

/// Everything one demo run produced.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DemoReport {
    /// Training rows.
    pub train_rows: usize,
    /// Test rows.
    pub test_rows: usize,
    /// The model's layer widths.
    pub widths: Vec<usize>,
    /// Epochs per optimizer.
    pub epochs: usize,
    /// Batch size.
    pub batch_size: usize,
    /// Peak learning rate.
    pub lr: f64,
    /// Seed.
    pub seed: u64,
    /// One row per optimizer: AdamW, then PAdam.
    pub rows: Vec<DemoRow>,
}

/// Run the demo: train, print the table, optionally write JSON.
pub fn run(args: DemoArgs) -> anyhow::Result<()> {
    let report = train_both(&args)?;
    println!("{}", render(&report));
    if let Some(path) = &args.json {
        let json = serde_json::to_string_pretty(&report)?;
        std::fs::write(path, json + "\n").with_context(|| format!("writing {}", path.display()))?;
        println!("wrote {}", path.display());
    }
    Ok(())
}

/// Load the data and train the MLP with AdamW and with PAdam, from the same initial weights.
pub fn train_both(args: &DemoArgs) -> anyhow::Result<DemoReport> {
    anyhow::ensure!(args.epochs > 0, "--epochs must be > 0");
    let data = digits::load(args.data.as_deref())?.split(digits::DEFAULT_TEST_ROWS, args.seed);
    let config = MlpConfig::new(data.train.n_features, args.hidden.clone(), data.n_classes);
    let fit_config = FitConfig {
        epochs: args.epochs,
        batch_size: args.batch_size,
        lr: args.lr,
        final_lr_fraction: Some(0.01),
        seed: args.seed,
        eval_every_epoch: false,
    };
    let show = !args.quiet && std::io::stderr().is_terminal();

    let adamw_name = format!("AdamW wd={}", args.adamw_decay);
    let mut adamw = AdamWConfig::new()
        .with_epsilon(1e-8)
        .with_weight_decay(args.adamw_decay as f32)
        .init::<DemoBackend, Mlp<DemoBackend>>();
    let adamw_row = train_one(&adamw_name, &mut adamw, &config, &data, &fit_config, show)?;

    let padam_name = format!("PAdam p={} lambda={}", args.p, args.lambda);
    let mut padam = PAdamConfig::new()
        .with_p(args.p)
        .with_lambda(args.lambda)
        .init::<DemoBackend, Mlp<DemoBackend>>()
        .context("PAdam settings")?;
    let padam_row = train_one(&padam_name, &mut padam, &config, &data, &fit_config, show)?;

    Ok(DemoReport {
        train_rows: data.train.len(),
        test_rows: data.test.len(),
        widths: config.widths(),
        epochs: args.epochs,
        batch_size: args.batch_size,
        lr: args.lr,
        seed: args.seed,
        rows: vec![adamw_row, padam_row],
    })
}

fn train_one<O: TrainOptimizer<DemoBackend, Mlp<DemoBackend>>>(
    name: &str,
    optim: &mut O,
    config: &MlpConfig,
    data: &Dataset,
    fit_config: &FitConfig,
    show_progress: bool,
) -> anyhow::Result<DemoRow> {
    let device = Default::default();
    let model: Mlp<DemoBackend> = config.init(fit_config.seed, &device);
    let bar = if show_progress {
        let bar = ProgressBar::new(fit_config.epochs as u64);
        bar.set_style(
            ProgressStyle::with_template("{prefix:>28} [{bar:30}] {pos}/{len} epochs {msg}")
                .expect("valid progress template")
                .progress_chars("=> "),
        );
        bar.set_prefix(name.to_string());
        bar
    } else {
        ProgressBar::hidden()
    };
    let start = Instant::now();
    let mut final_loss = f64::NAN;
    let (model, accuracy) = fit(
        model,
        optim,
        &data.train,
        &data.test,
        fit_config,
        &device,
        |r| {
            final_loss = r.train_loss;
            bar.set_message(format!("loss {:.4}", r.train_loss));
            bar.inc(1);
        },
    )
    .with_context(|| format!("training with {name}"))?;
    <Cpu as Backend>::sync(&device).ok();
    let wall_seconds = start.elapsed().as_secs_f64();
    bar.finish_and_clear();
    let report = sparsity::measure(
        &model.valid(),
        sparsity::DEFAULT_THRESHOLD,
        &ParamSelection::all(),
    );
    Ok(DemoRow {
        optimizer: name.to_string(),
        test_accuracy: accuracy,
        zero_fraction: report.zero_fraction(),
        below_fraction: report.below_fraction(),
        zeros: report.zeros(),
        below: report.below(),
        params: report.numel(),
        final_train_loss: final_loss,
        wall_seconds,
    })
}

/// The table, as printed.
pub fn render(report: &DemoReport) -> String {
    let widths: Vec<String> = report.widths.iter().map(|w| w.to_string()).collect();
    let mut out = format!(
        "digits: {} train / {} test rows, MLP {}, {} epochs, batch {}, lr {}, seed {}\n\n",
        report.train_rows,
        report.test_rows,
        widths.join("-"),
        report.epochs,
        report.batch_size,
        report.lr,
        report.seed,
    );
    let name_width = report
        .rows
        .iter()
        .map(|r| r.optimizer.len())
        .max()
        .unwrap_or(0)
        .max("optimizer".len());
    out += &format!(
        "{:<name_width$}  {:>9}  {:>8}  {:>11}  {:>7}  {:>7}\n",
        "optimizer", "test acc", "zeros %", "|w|<1e-9 %", "params", "time"
    );
    out += &format!(
        "{}\n",
        "-".repeat(name_width + 2 + 9 + 2 + 8 + 2 + 11 + 2 + 7 + 2 + 7)
    );
    for r in &report.rows {
        out += &format!(
            "{:<name_width$}  {:>8.2}%  {:>7.2}%  {:>10.2}%  {:>7}  {:>6.1}s\n",
            r.optimizer,
            100.0 * r.test_accuracy,
            100.0 * r.zero_fraction,
            100.0 * r.below_fraction,
            r.params,
            r.wall_seconds,
        );
    }
    out.trim_end().to_string()
}
