//! `padam bench infer`: inference latency and throughput of exported models on the CPU, on
//! burn-flex's dense forward, the engine with every weight dense, the engine with each weight
//! dense or CSR by its zero fraction (the sparse engine), and the compacted model (dense, and
//! CSR where still sparse); bytes on disk and in memory for each. `--crossover` times CSR
//! against dense on the layer shapes of our models, which is where the engine's per-tensor
//! threshold comes from.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context};
use burn::tensor::{Int, Tensor, TensorData};
use clap::Args;

use crate::data::Rng;
use crate::infer::{
    burn_last_logits, compact, generate, load, model_shape, zero_fraction, Engine, Forward, Plan,
    Sampling, Shape, Tensors,
};
use crate::models::fashion_cnn::FashionCnn;
use crate::models::nanogpt::NanoGpt;
use crate::models::resnet::ResNet;
use crate::models::Mlp;

type Cpu = crate::backend::Cpu;

/// Options of `padam bench infer`.
#[derive(Args, Debug, Clone)]
pub struct InferBenchArgs {
    /// Models: files written by `padam export` (dense or sparse; bytes on disk are read from
    /// `model.safetensors` and `model.sparse.safetensors` beside them) or run directories.
    pub models: Vec<PathBuf>,
    /// Batch sizes (nanoGPT: sequences of `block_size` tokens).
    #[arg(long, value_delimiter = ',', default_value = "1,64")]
    pub batches: Vec<usize>,
    /// Timed forward passes per row and batch (after the warm-up).
    #[arg(long, default_value_t = 20)]
    pub iters: usize,
    /// Untimed forward passes first.
    #[arg(long, default_value_t = 2)]
    pub warmup: usize,
    /// nanoGPT: tokens generated per sampling row (batch 1, temperature 0.8, top-k 200; 0: no
    /// sampling rows).
    #[arg(long, default_value_t = 200)]
    pub sample_tokens: usize,
    /// Zero the smallest-magnitude entries of every weight matrix to this fraction first, for
    /// a model that was not trained sparse (the table then says `pruned`).
    #[arg(long)]
    pub prune_to: Option<f64>,
    /// Rows: burn (burn-flex dense forward), engine-dense, sparse, compact (compacted, dense),
    /// compact-sparse (compacted, then CSR where sparse).
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "burn,engine-dense,sparse,compact,compact-sparse"
    )]
    pub rows: Vec<String>,
    /// Time CSR against dense products on our layer shapes at several zero fractions instead.
    #[arg(long)]
    pub crossover: bool,
    /// Append the markdown table to this file.
    #[arg(long)]
    pub markdown: Option<PathBuf>,
}

const ROWS: [&str; 5] = [
    "burn",
    "engine-dense",
    "sparse",
    "compact",
    "compact-sparse",
];

/// One measured row.
#[derive(Debug, Clone)]
struct Row {
    model: String,
    row: String,
    batch: String,
    median_ms: f64,
    p95_ms: f64,
    per_s: f64,
    unit: &'static str,
    disk: Option<u64>,
    memory: usize,
}

/// Median and p95 (nearest rank) of `ms`.
fn stats(mut ms: Vec<f64>) -> (f64, f64) {
    ms.sort_by(f64::total_cmp);
    let at = |q: f64| ms[((q * ms.len() as f64).ceil() as usize).clamp(1, ms.len()) - 1];
    (at(0.5), at(0.95))
}

/// A row to time: label, bytes on disk, bytes in memory, one forward pass.
type Run<'a> = (&'a str, Option<u64>, usize, Box<dyn FnMut() + 'a>);

/// A timed row: label, bytes on disk, bytes in memory, (median, p95) ms.
type Timed<'a> = (&'a str, Option<u64>, usize, (f64, f64));

/// Time every run `iters` times, taking turns (one pass of each, then again), so load from
/// elsewhere on the machine falls on all rows alike; median and p95 per run.
fn interleaved(mut runs: Vec<Run<'_>>, iters: usize, warmup: usize) -> Vec<Timed<'_>> {
    for _ in 0..warmup {
        runs.iter_mut().for_each(|r| (r.3)());
    }
    let mut ms = vec![Vec::with_capacity(iters); runs.len()];
    for _ in 0..iters.max(1) {
        for (i, r) in runs.iter_mut().enumerate() {
            let t = Instant::now();
            (r.3)();
            ms[i].push(t.elapsed().as_secs_f64() * 1e3);
        }
    }
    runs.into_iter()
        .zip(ms)
        .map(|((label, disk, memory, _), ms)| (label, disk, memory, stats(ms)))
        .collect()
}

/// burn's model of a family, for the dense reference rows.
enum BurnModel {
    Mlp(Box<Mlp<Cpu>>),
    Fashion(Box<FashionCnn<Cpu>>),
    ResNet(Box<ResNet<Cpu>>),
    Gpt(Box<NanoGpt<Cpu>>),
}

fn burn_model(shape: &Shape, tensors: &Tensors, seed: u64) -> anyhow::Result<BurnModel> {
    let d = Default::default();
    Ok(match shape {
        Shape::Mlp(c) => BurnModel::Mlp(Box::new(tensors.load_into(c.init::<Cpu>(seed, &d))?)),
        Shape::Fashion(c) => {
            BurnModel::Fashion(Box::new(tensors.load_into(c.init::<Cpu>(seed, &d))?))
        }
        Shape::ResNet(c) => {
            BurnModel::ResNet(Box::new(tensors.load_into(c.init::<Cpu>(seed, &d))?))
        }
        Shape::Gpt(c) => BurnModel::Gpt(Box::new(tensors.load_into(c.init::<Cpu>(seed, &d))?)),
    })
}

/// Input shape of one sample of an image or feature classifier.
fn sample_dims(shape: &Shape) -> Vec<usize> {
    match shape {
        Shape::Mlp(c) => vec![c.d_input],
        Shape::Fashion(c) => vec![c.in_channels, c.image_size, c.image_size],
        Shape::ResNet(c) => vec![c.in_channels, 32, 32],
        Shape::Gpt(c) => vec![c.block_size],
    }
}

/// Zero the smallest `fraction` of every weight matrix's entries by magnitude (embeddings
/// and vectors untouched).
fn magnitude_prune(t: &mut Tensors, fraction: f64) {
    for (name, h) in t.map.iter_mut() {
        if h.shape.len() < 2 || name.starts_with("wte") || name.starts_with("wpe") {
            continue;
        }
        let mut mags: Vec<f32> = h.values.iter().map(|v| v.abs()).collect();
        let k = ((fraction * mags.len() as f64) as usize).min(mags.len());
        if k == 0 {
            continue;
        }
        let (_, kth, _) = mags.select_nth_unstable_by(k - 1, f32::total_cmp);
        let cut = *kth;
        let mut left = k;
        for v in h.values.iter_mut() {
            if left > 0 && v.abs() <= cut {
                *v = 0.0;
                left -= 1;
            }
        }
    }
}

fn sibling_size(model: &Path, name: &str) -> Option<u64> {
    let dir = if model.is_dir() {
        model.join("export")
    } else {
        model.parent()?.to_path_buf()
    };
    std::fs::metadata(dir.join(name)).ok().map(|m| m.len())
}

/// Bytes of `tensors` written as a dense safetensors file (no metadata).
fn dense_file_bytes(t: &Tensors) -> anyhow::Result<u64> {
    Ok(t.to_safetensors(None)?.len() as u64)
}

/// Run `padam bench infer`.
pub fn run(args: &InferBenchArgs) -> anyhow::Result<()> {
    if args.crossover {
        return crossover(args);
    }
    if args.models.is_empty() {
        bail!("give at least one model (a padam export file or a run directory)");
    }
    for r in &args.rows {
        if !ROWS.contains(&r.as_str()) {
            bail!("--rows {r:?}: expected some of {}", ROWS.join(", "));
        }
    }
    if let Some(f) = args.prune_to {
        if !(0.0..1.0).contains(&f) {
            bail!("--prune-to {f}: must be in [0, 1)");
        }
    }
    if args.batches.contains(&0) {
        bail!("--batches {:?}: a batch of 0", args.batches);
    }
    println!(
        "padam bench infer: {} rayon threads, {} timed passes (median, p95)",
        rayon::current_num_threads(),
        args.iters
    );
    let mut rows = Vec::new();
    for path in &args.models {
        rows.extend(bench_model(path, args).with_context(|| format!("{}", path.display()))?);
    }
    let mut md = String::from(
        "| model | zeros | engine | batch | median ms | p95 ms | throughput | disk bytes | memory bytes |\n\
         |---|---|---|---|---|---|---|---|---|\n",
    );
    for r in &rows {
        md.push_str(&format!(
            "| {} | {} | {:.3} | {:.3} | {:.1} {} | {} | {} |\n",
            r.model,
            format_args!("{} | {}", r.row, r.batch),
            r.median_ms,
            r.p95_ms,
            r.per_s,
            r.unit,
            r.disk.map_or("-".to_string(), |d| d.to_string()),
            r.memory
        ));
    }
    print!("{md}");
    if let Some(p) = &args.markdown {
        use std::io::Write;
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(p)
            .with_context(|| format!("opening {}", p.display()))?;
        f.write_all(md.as_bytes())
            .with_context(|| format!("writing {}", p.display()))?;
    }
    Ok(())
}

fn bench_model(path: &Path, args: &InferBenchArgs) -> anyhow::Result<Vec<Row>> {
    let loaded = load(path)?;
    let mut tensors = loaded.tensors;
    if let Some(f) = args.prune_to {
        magnitude_prune(&mut tensors, f);
    }
    let shape = model_shape(&loaded.config.model, Some(&tensors))?;
    let all: Vec<f32> = tensors
        .map
        .values()
        .flat_map(|h| h.values.iter().copied())
        .collect();
    let name = format!(
        "{}{}",
        path.display(),
        args.prune_to
            .map_or(String::new(), |f| format!(" (pruned to {f})"))
    );
    let zeros = format!("{:.1}%", 100.0 * zero_fraction(&all));
    let model_label = format!("{name} | {zeros}");
    let export_file = path.is_dir()
        || path
            .file_name()
            .is_some_and(|n| n == "model.safetensors" || n == "model.sparse.safetensors");
    let (dense_disk, sparse_disk) = if args.prune_to.is_some() {
        (None, None)
    } else if export_file {
        (
            sibling_size(path, "model.safetensors"),
            sibling_size(path, "model.sparse.safetensors"),
        )
    } else {
        // Another file (a compacted model, say): the engine rows run from it.
        (Some(loaded.file_bytes), Some(loaded.file_bytes))
    };
    let compacted = compact(&shape, &tensors)?;
    let removed = compacted
        .report
        .iter()
        .filter(|r| r.fraction() > 0.0)
        .map(|r| {
            format!(
                "{} {:?} -> {:?} ({:.1}%)",
                r.name,
                r.before,
                r.after,
                100.0 * r.fraction()
            )
        })
        .collect::<Vec<_>>();
    println!(
        "{name}: {zeros} zeros; compaction removes: {}",
        if removed.is_empty() {
            "nothing".into()
        } else {
            removed.join(", ")
        }
    );
    let compact_disk = Some(dense_file_bytes(&compacted.tensors)?);

    let mut engines: Vec<(&str, Engine, Option<u64>)> = Vec::new();
    for r in &args.rows {
        let (t, plan, disk) = match r.as_str() {
            "engine-dense" => (&tensors, Plan::dense(), dense_disk),
            "sparse" => (&tensors, Plan::sparse(), sparse_disk),
            "compact" => (&compacted.tensors, Plan::dense(), compact_disk),
            "compact-sparse" => (&compacted.tensors, Plan::sparse(), None),
            _ => continue,
        };
        engines.push((r.as_str(), Engine::build(&shape, t, plan)?, disk));
    }
    let burn = if args.rows.iter().any(|r| r == "burn") {
        Some(burn_model(&shape, &tensors, loaded.config.seed)?)
    } else {
        None
    };
    let numel: usize = tensors.map.values().map(|h| h.values.len()).sum();

    if let Some(m) = &burn {
        agreement(m, &shape, &engines, &name)?;
    }
    let mut rows = Vec::new();
    let dims = sample_dims(&shape);
    let mut rng = Rng::new(7);
    let unit = if matches!(shape, Shape::Gpt(_)) {
        "seq/s"
    } else {
        "img/s"
    };
    for &b in &args.batches {
        // (label, disk, memory, one forward pass)
        let mut runs: Vec<Run<'_>> = Vec::new();
        if let Shape::Gpt(c) = &shape {
            let t = c.block_size;
            let tokens: Vec<u32> = (0..b * t).map(|_| rng.below(c.vocab_size) as u32).collect();
            if let Some(BurnModel::Gpt(m)) = &burn {
                let idx: Vec<i64> = tokens.iter().map(|&v| i64::from(v)).collect();
                runs.push((
                    "burn-flex dense",
                    dense_disk,
                    4 * numel,
                    Box::new(move || {
                        let x = Tensor::<Cpu, 2, Int>::from_data(
                            TensorData::new(idx.clone(), [b, t]),
                            &Default::default(),
                        );
                        let _ = m.forward(x).into_data();
                    }),
                ));
            }
            for (label, e, disk) in &engines {
                let g = e.gpt().expect("nanoGPT engine");
                let tokens = tokens.clone();
                runs.push((
                    label,
                    *disk,
                    e.memory_bytes(),
                    Box::new(move || {
                        let _ = g.forward(&tokens, b, t, false);
                    }),
                ));
            }
        } else {
            let n: usize = dims.iter().product::<usize>() * b;
            let x: Vec<f32> = (0..n).map(|_| rng.normal() as f32).collect();
            if let Some(m) = &burn {
                let mut shape4 = vec![b];
                shape4.extend(&dims);
                let (x, d0) = (x.clone(), dims[0]);
                runs.push((
                    "burn-flex dense",
                    dense_disk,
                    4 * numel,
                    Box::new(move || {
                        let d = Default::default();
                        match m {
                            BurnModel::Mlp(m) => {
                                let x = TensorData::new(x.clone(), [b, d0]);
                                let _ = m.forward(Tensor::<Cpu, 2>::from_data(x, &d)).into_data();
                            }
                            BurnModel::Fashion(m) => {
                                let x = TensorData::new(x.clone(), shape4.clone());
                                let _ = m.forward(Tensor::<Cpu, 4>::from_data(x, &d)).into_data();
                            }
                            BurnModel::ResNet(m) => {
                                let x = TensorData::new(x.clone(), shape4.clone());
                                let _ = m.forward(Tensor::<Cpu, 4>::from_data(x, &d)).into_data();
                            }
                            BurnModel::Gpt(_) => unreachable!("nanoGPT is timed above"),
                        }
                    }),
                ));
            }
            let hw = if dims.len() == 3 {
                [dims[1], dims[2]]
            } else {
                [0, 0]
            };
            for (label, e, disk) in &engines {
                let x = x.clone();
                runs.push((
                    label,
                    *disk,
                    e.memory_bytes(),
                    Box::new(move || {
                        let _ = e.classify(&x, b, hw).expect("input of the model's size");
                    }),
                ));
            }
        }
        for (label, disk, memory, (median_ms, p95_ms)) in interleaved(runs, args.iters, args.warmup)
        {
            rows.push(Row {
                model: model_label.clone(),
                row: label.to_string(),
                batch: b.to_string(),
                median_ms,
                p95_ms,
                per_s: b as f64 * 1e3 / median_ms,
                unit,
                disk,
                memory,
            });
        }
    }
    // nanoGPT: tokens/s while sampling, per-token latency; rows take turns in rounds, so a
    // machine busy with something else slows all of them alike.
    if let (Shape::Gpt(c), true) = (&shape, args.sample_tokens > 0) {
        let s = Sampling {
            tokens: args.sample_tokens,
            temperature: 0.8,
            top_k: 200,
            seed: 1337,
        };
        let prompt = [0u32];
        let mut samplers: Vec<(&str, Option<u64>, usize, Forward<'_>)> = Vec::new();
        if let Some(BurnModel::Gpt(m)) = &burn {
            samplers.push((
                "burn-flex dense",
                dense_disk,
                4 * numel,
                Box::new(|ctx: &[u32]| burn_last_logits(m, ctx)),
            ));
        }
        for (label, e, disk) in &engines {
            let g = e.gpt().expect("nanoGPT engine");
            samplers.push((
                label,
                *disk,
                e.memory_bytes(),
                Box::new(move |ctx: &[u32]| g.forward(ctx, 1, ctx.len(), true)),
            ));
        }
        let rounds = 3;
        let mut ms: Vec<Vec<f64>> = vec![Vec::new(); samplers.len()];
        let mut secs = vec![0.0f64; samplers.len()];
        for _ in 0..rounds {
            for (i, (_, _, _, forward)) in samplers.iter_mut().enumerate() {
                let start = Instant::now();
                generate(&prompt, c.block_size, &s, |ctx| {
                    let t = Instant::now();
                    let l = forward(ctx);
                    ms[i].push(t.elapsed().as_secs_f64() * 1e3);
                    l
                })?;
                secs[i] += start.elapsed().as_secs_f64();
            }
        }
        for (i, (label, disk, memory, _)) in samplers.into_iter().enumerate() {
            let (median_ms, p95_ms) = stats(std::mem::take(&mut ms[i]));
            rows.push(Row {
                model: model_label.clone(),
                row: label.to_string(),
                batch: format!("sample {}", s.tokens),
                median_ms,
                p95_ms,
                per_s: (rounds * s.tokens) as f64 / secs[i],
                unit: "tok/s",
                disk,
                memory,
            });
        }
    }
    Ok(rows)
}

/// One engine's outputs on the inputs the reference was given.
type EngineRun<'a> = Box<dyn Fn(&Engine) -> anyhow::Result<Vec<f32>> + 'a>;

/// Every engine row's outputs against burn-flex's on 8 random inputs of this model: the
/// largest difference relative to the largest output, and how many argmaxes (classes, or
/// greedy next tokens at every position) agree. Printed before the timings.
fn agreement(
    burn: &BurnModel,
    shape: &Shape,
    engines: &[(&str, Engine, Option<u64>)],
    name: &str,
) -> anyhow::Result<()> {
    let d = Default::default();
    let mut rng = Rng::new(3);
    let n = 8;
    let (want, per_row, run): (Vec<f32>, usize, EngineRun<'_>) = match (burn, shape) {
        (BurnModel::Gpt(m), Shape::Gpt(c)) => {
            let t = c.block_size;
            let tokens: Vec<u32> = (0..n * t).map(|_| rng.below(c.vocab_size) as u32).collect();
            let idx: Vec<i64> = tokens.iter().map(|&v| i64::from(v)).collect();
            let x = Tensor::<Cpu, 2, Int>::from_data(TensorData::new(idx, [n, t]), &d);
            let want = m.forward(x).into_data().to_vec().expect("f32 logits");
            let run = move |e: &Engine| {
                let g = e.gpt().context("not a nanoGPT engine")?;
                Ok(g.forward(&tokens, n, t, false))
            };
            (want, c.vocab_size, Box::new(run))
        }
        (m, shape) => {
            let dims = sample_dims(shape);
            let x: Vec<f32> = (0..n * dims.iter().product::<usize>())
                .map(|_| rng.normal() as f32)
                .collect();
            let mut full = vec![n];
            full.extend(&dims);
            let data = || TensorData::new(x.clone(), full.clone());
            let want: Vec<f32> = match m {
                BurnModel::Mlp(m) => m
                    .forward(Tensor::<Cpu, 2>::from_data(
                        TensorData::new(x.clone(), [n, dims[0]]),
                        &d,
                    ))
                    .into_data()
                    .to_vec(),
                BurnModel::Fashion(m) => m
                    .forward(Tensor::<Cpu, 4>::from_data(data(), &d))
                    .into_data()
                    .to_vec(),
                BurnModel::ResNet(m) => m
                    .forward(Tensor::<Cpu, 4>::from_data(data(), &d))
                    .into_data()
                    .to_vec(),
                BurnModel::Gpt(_) => bail!("a nanoGPT model with a classifier's config"),
            }
            .expect("f32 logits");
            let classes = want.len() / n;
            let hw = if dims.len() == 3 {
                [dims[1], dims[2]]
            } else {
                [0, 0]
            };
            (
                want,
                classes,
                Box::new(move |e: &Engine| e.classify(&x, n, hw)),
            )
        }
    };
    let argmax = |v: &[f32]| -> Vec<usize> {
        v.chunks(per_row)
            .map(|r| (0..r.len()).fold(0, |b, i| if r[i] > r[b] { i } else { b }))
            .collect()
    };
    let scale = want.iter().fold(0.0f32, |m, v| m.max(v.abs()));
    for (label, e, _) in engines {
        let got = run(e)?;
        let worst = got
            .iter()
            .zip(&want)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0f32, f32::max);
        let same = argmax(&got)
            .iter()
            .zip(argmax(&want))
            .filter(|(a, b)| **a == *b)
            .count();
        println!(
            "{name} {label}: max |engine - burn-flex| = {:.1e} of the output scale, argmax {same}/{} the same",
            worst / scale.max(f32::MIN_POSITIVE),
            want.len() / per_row
        );
    }
    Ok(())
}

/// CSR against dense on our layer shapes (the `infer` wing's table).
fn crossover(args: &InferBenchArgs) -> anyhow::Result<()> {
    println!(
        "dense time / CSR time (above 1: CSR faster), medians of {} runs, {} rayon threads:",
        args.iters,
        rayon::current_num_threads()
    );
    print!("{}", crate::infer::crossover_table(args.iters));
    Ok(())
}
