//! Compaction: the units (hidden neurons, channels, attention heads) that PAdam left
//! structurally zero are cut out, giving a smaller dense model with the same outputs.
//!
//! A unit between a producer layer and a consumer layer goes when
//! - the consumer reads it with all-zero weights (it is unused), or
//! - the producer computes it with all-zero weights, so its value is a constant `a` (its bias
//!   or batch-norm shift through the activation): removable when `a = 0`, or when the consumer
//!   is a linear layer with a bias, into which `a · W[unit, :]` is folded. A convolution
//!   consumer cannot take the fold: its zero padding makes a constant map non-constant at the
//!   borders, so such a channel stays.
//!
//! What is cut, per family: the MLP's hidden units; the Fashion CNN's conv1/conv2 channels and
//! fc1 units; ResNet's channels inside each basic block (conv1 + bn1 outputs; the channels of
//! the residual stream are shared by every block through the additions and stay); nanoGPT's MLP
//! hidden units and whole attention heads (unused by `c_proj`, or with all-zero value weights:
//! the head then outputs its value bias, since attention weights sum to 1, folded into
//! `c_proj`'s bias). The residual stream of nanoGPT stays.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;

use anyhow::{bail, Context};
use clap::Args;

use super::tensors::{load, model_shape, HostTensor, Shape, Tensors};

/// What compaction did to one tensor.
#[derive(Debug, Clone, PartialEq)]
pub struct Removed {
    /// Module path.
    pub name: String,
    /// Shape before.
    pub before: Vec<usize>,
    /// Shape after.
    pub after: Vec<usize>,
}

impl Removed {
    /// Fraction of the tensor's entries that were structurally removable.
    pub fn fraction(&self) -> f64 {
        let b: usize = self.before.iter().product();
        let a: usize = self.after.iter().product();
        if b == 0 {
            0.0
        } else {
            1.0 - a as f64 / b as f64
        }
    }
}

/// A compacted model and the per-tensor report.
#[derive(Debug, Clone, PartialEq)]
pub struct Compacted {
    /// The smaller model's tensors (run them with `Plan::dense()`).
    pub tensors: Tensors,
    /// Every tensor, before and after.
    pub report: Vec<Removed>,
}

/// Compact the model `shape` held in `tensors`.
pub fn compact(shape: &Shape, tensors: &Tensors) -> anyhow::Result<Compacted> {
    let mut t = Work {
        map: tensors.map.clone(),
        source: tensors.source.clone(),
    };
    match shape {
        Shape::Mlp(c) => {
            t.fixpoint(|t| {
                for i in (0..c.hidden.len()).rev() {
                    t.linear_to_linear(&format!("layers.{i}"), &format!("layers.{}", i + 1), relu)?;
                }
                Ok(())
            })?;
        }
        Shape::Fashion(c) => {
            let side = (c.image_size / 4) * (c.image_size / 4);
            // Later pairs first: cutting a consumer's inputs can leave its producer unused.
            t.fixpoint(|t| {
                t.linear_to_linear("fc1", "fc2", relu)?;
                t.conv_to_linear("conv2", "fc1", side)?;
                t.conv_to_conv("conv1", None, "conv2")
            })?;
        }
        Shape::ResNet(_) => {
            for stage in 1..=4 {
                let mut i = 0;
                while t
                    .map
                    .contains_key(&format!("layer{stage}.{i}.conv1.weight"))
                {
                    let p = format!("layer{stage}.{i}");
                    t.conv_to_conv(
                        &format!("{p}.conv1"),
                        Some(&format!("{p}.bn1")),
                        &format!("{p}.conv2"),
                    )?;
                    i += 1;
                }
            }
        }
        Shape::Gpt(c) => {
            let hd = c.n_embd / c.n_head.max(1);
            for i in 0..c.n_layer {
                let p = format!("blocks.{i}");
                t.linear_to_linear(&format!("{p}.mlp.c_fc"), &format!("{p}.mlp.c_proj"), gelu)?;
                t.heads(&format!("{p}.attn"), c.n_embd, hd)?;
            }
        }
    }
    let report = tensors
        .map
        .iter()
        .map(|(name, h)| Removed {
            name: name.clone(),
            before: h.shape.clone(),
            after: t.map.get(name).map(|h| h.shape.clone()).unwrap_or_default(),
        })
        .collect();
    Ok(Compacted {
        tensors: Tensors {
            source: format!("{} (compacted)", tensors.source),
            map: t.map,
        },
        report,
    })
}

/// Options of `padam compact`.
#[derive(Args, Debug, Clone)]
pub struct CompactArgs {
    /// A run directory (its newest checkpoint) or a file written by `padam export`.
    pub model: PathBuf,
    /// Output file (default: `model.compact.safetensors` beside the input file, or in
    /// `<run>/export/`).
    #[arg(long)]
    pub out: Option<PathBuf>,
}

/// `format` of a compacted file: dense tensors whose shapes differ from the config's model, so
/// only the `infer` engine (which reads shapes from the tensors) runs it.
pub const COMPACT_FORMAT: &str = "padam-compact-v1";

/// Run `padam compact`: the per-tensor report on stdout, the compacted model written as a dense
/// safetensors (format [`COMPACT_FORMAT`], the run's config embedded).
pub fn run(args: &CompactArgs) -> anyhow::Result<(PathBuf, Compacted)> {
    let loaded = load(&args.model)?;
    let shape = model_shape(&loaded.config.model, Some(&loaded.tensors))?;
    let c = compact(&shape, &loaded.tensors)?;
    println!("| tensor | shape | compacted | removed |");
    println!("|---|---|---|---|");
    for r in &c.report {
        println!(
            "| {} | {:?} | {:?} | {:.1}% |",
            r.name,
            r.before,
            r.after,
            100.0 * r.fraction()
        );
    }
    let count =
        |t: &BTreeMap<String, HostTensor>| t.values().map(|h| h.values.len()).sum::<usize>();
    let (before, after) = (count(&loaded.tensors.map), count(&c.tensors.map));
    println!(
        "{before} -> {after} parameters ({:.1}% structurally removable)",
        100.0 * (1.0 - after as f64 / before.max(1) as f64)
    );
    let out = match &args.out {
        Some(o) => o.clone(),
        None if args.model.is_dir() => args.model.join("export").join("model.compact.safetensors"),
        None => args.model.with_file_name("model.compact.safetensors"),
    };
    if let Some(dir) = out.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let meta: HashMap<String, String> = [
        ("config".to_string(), loaded.config.to_toml()),
        ("format".to_string(), COMPACT_FORMAT.to_string()),
        (
            "compacted_from".to_string(),
            args.model.display().to_string(),
        ),
    ]
    .into_iter()
    .collect();
    let file = c.tensors.to_safetensors(Some(meta))?;
    std::fs::write(&out, &file).with_context(|| format!("writing {}", out.display()))?;
    println!("{} {} bytes", out.display(), file.len());
    Ok((out, c))
}

fn relu(x: f32) -> f32 {
    x.max(0.0)
}

fn gelu(x: f32) -> f32 {
    let mut v = [x];
    super::ops::gelu(&mut v);
    v[0]
}

struct Work {
    map: BTreeMap<String, HostTensor>,
    source: String,
}

impl Work {
    /// Repeat `pass` until no shape changes (cutting a consumer's inputs can leave its
    /// producer's unit unused, and the other way round).
    fn fixpoint(&mut self, pass: impl Fn(&mut Self) -> anyhow::Result<()>) -> anyhow::Result<()> {
        loop {
            let before: usize = self.map.values().map(|h| h.values.len()).sum();
            pass(self)?;
            if self.map.values().map(|h| h.values.len()).sum::<usize>() == before {
                return Ok(());
            }
        }
    }

    fn get(&self, name: &str, rank: usize) -> anyhow::Result<&HostTensor> {
        match self.map.get(name) {
            Some(h) if h.shape.len() == rank => Ok(h),
            Some(h) => bail!(
                "{}: tensor `{name}` has shape {:?}, expected {rank} dimensions",
                self.source,
                h.shape
            ),
            None => bail!("{}: tensor `{name}` is missing", self.source),
        }
    }

    fn bias(&self, prefix: &str) -> Option<&HostTensor> {
        self.map.get(&format!("{prefix}.bias"))
    }

    /// Keep `keep` of axis `axis` of tensor `name` (absent tensors are skipped).
    fn select(&mut self, name: &str, axis: usize, keep: &[usize]) {
        let Some(h) = self.map.get_mut(name) else {
            return;
        };
        let outer: usize = h.shape[..axis].iter().product();
        let inner: usize = h.shape[axis + 1..].iter().product();
        let n = h.shape[axis];
        let mut v = Vec::with_capacity(outer * keep.len() * inner);
        for o in 0..outer {
            for &k in keep {
                let s = (o * n + k) * inner;
                v.extend_from_slice(&h.values[s..s + inner]);
            }
        }
        h.values = v;
        h.shape[axis] = keep.len();
    }

    /// Hidden units between two burn `Linear`s (`[in, out]` weights): unit j is column j of
    /// the producer and row j of the consumer.
    fn linear_to_linear(
        &mut self,
        prod: &str,
        cons: &str,
        act: fn(f32) -> f32,
    ) -> anyhow::Result<()> {
        let pw = self.get(&format!("{prod}.weight"), 2)?.clone();
        let cw = self.get(&format!("{cons}.weight"), 2)?.clone();
        let (pin, units) = (pw.shape[0], pw.shape[1]);
        let outs = cw.shape[1];
        if cw.shape[0] != units {
            bail!(
                "{}: `{cons}.weight` has {} inputs, `{prod}` {units} outputs",
                self.source,
                cw.shape[0]
            );
        }
        let pb = self.bias(prod).map(|b| b.values.clone());
        let mut fold = vec![0.0f32; outs];
        let mut keep = Vec::new();
        for j in 0..units {
            let unused = cw.values[j * outs..(j + 1) * outs]
                .iter()
                .all(|v| *v == 0.0);
            let constant = (0..pin).all(|i| pw.values[i * units + j] == 0.0);
            let a = act(pb.as_ref().map_or(0.0, |b| b[j]));
            let foldable = a == 0.0 || self.bias(cons).is_some();
            if unused || (constant && foldable) {
                if !unused && a != 0.0 {
                    for (o, f) in fold.iter_mut().enumerate() {
                        *f += a * cw.values[j * outs + o];
                    }
                }
            } else {
                keep.push(j);
            }
        }
        if let Some(b) = self.map.get_mut(&format!("{cons}.bias")) {
            b.values.iter_mut().zip(&fold).for_each(|(b, f)| *b += f);
        }
        self.select(&format!("{prod}.weight"), 1, &keep);
        self.select(&format!("{prod}.bias"), 0, &keep);
        self.select(&format!("{cons}.weight"), 0, &keep);
        Ok(())
    }

    /// Channels of a convolution (with ReLU, after optional batch norm `bn`) feeding a
    /// convolution: removable when unused, or constant 0 after the activation.
    fn conv_to_conv(&mut self, prod: &str, bn: Option<&str>, cons: &str) -> anyhow::Result<()> {
        let pw = self.get(&format!("{prod}.weight"), 4)?.clone();
        let cw = self.get(&format!("{cons}.weight"), 4)?.clone();
        let units = pw.shape[0];
        if cw.shape[1] != units {
            bail!(
                "{}: `{cons}.weight` has {} input channels, `{prod}` {units} outputs",
                self.source,
                cw.shape[1]
            );
        }
        let per_out = pw.values.len() / units.max(1);
        let k2 = cw.shape[2] * cw.shape[3];
        let constant_of = |j: usize| -> f32 {
            let b = self.bias(prod).map_or(0.0, |b| b.values[j]);
            match bn {
                Some(bn) => {
                    let v = |n: &str| self.map.get(&format!("{bn}.{n}")).map(|h| h.values[j]);
                    match (v("gamma"), v("beta"), v("running_mean"), v("running_var")) {
                        (Some(g), Some(be), Some(m), Some(var)) => {
                            relu((b - m) / (var + 1e-5).sqrt() * g + be)
                        }
                        _ => f32::NAN, // missing batch norm: never removable as constant
                    }
                }
                None => relu(b),
            }
        };
        let mut keep = Vec::new();
        for j in 0..units {
            let unused = (0..cw.shape[0]).all(|o| {
                cw.values[(o * units + j) * k2..(o * units + j + 1) * k2]
                    .iter()
                    .all(|v| *v == 0.0)
            });
            let zero_weights = pw.values[j * per_out..(j + 1) * per_out]
                .iter()
                .all(|v| *v == 0.0);
            if !(unused || (zero_weights && constant_of(j) == 0.0)) {
                keep.push(j);
            }
        }
        self.select(&format!("{prod}.weight"), 0, &keep);
        self.select(&format!("{prod}.bias"), 0, &keep);
        if let Some(bn) = bn {
            for n in ["gamma", "beta", "running_mean", "running_var"] {
                self.select(&format!("{bn}.{n}"), 0, &keep);
            }
        }
        self.select(&format!("{cons}.weight"), 1, &keep);
        Ok(())
    }

    /// Channels of the CNN's last convolution (ReLU, 2x2 max pool) feeding the flattened
    /// features of `fc1` (`side` features per channel, channel-major); a constant channel's
    /// features are folded into fc1's bias.
    fn conv_to_linear(&mut self, prod: &str, cons: &str, side: usize) -> anyhow::Result<()> {
        let pw = self.get(&format!("{prod}.weight"), 4)?.clone();
        let cw = self.get(&format!("{cons}.weight"), 2)?.clone();
        let units = pw.shape[0];
        let outs = cw.shape[1];
        if cw.shape[0] != units * side {
            bail!(
                "{}: `{cons}.weight` has {} inputs, {units} channels x {side} positions expected",
                self.source,
                cw.shape[0]
            );
        }
        let per_out = pw.values.len() / units.max(1);
        let pb = self.bias(prod).map(|b| b.values.clone());
        let mut fold = vec![0.0f32; outs];
        let mut keep = Vec::new();
        for j in 0..units {
            let rows = &cw.values[j * side * outs..(j + 1) * side * outs];
            let unused = rows.iter().all(|v| *v == 0.0);
            let constant = pw.values[j * per_out..(j + 1) * per_out]
                .iter()
                .all(|v| *v == 0.0);
            let a = relu(pb.as_ref().map_or(0.0, |b| b[j]));
            let foldable = a == 0.0 || self.bias(cons).is_some();
            if unused || (constant && foldable) {
                if !unused && a != 0.0 {
                    for row in rows.chunks_exact(outs) {
                        for (f, w) in fold.iter_mut().zip(row) {
                            *f += a * w;
                        }
                    }
                }
            } else {
                keep.push(j);
            }
        }
        if let Some(b) = self.map.get_mut(&format!("{cons}.bias")) {
            b.values.iter_mut().zip(&fold).for_each(|(b, f)| *b += f);
        }
        let features: Vec<usize> = keep
            .iter()
            .flat_map(|&j| j * side..(j + 1) * side)
            .collect();
        self.select(&format!("{prod}.weight"), 0, &keep);
        self.select(&format!("{prod}.bias"), 0, &keep);
        self.select(&format!("{cons}.weight"), 0, &features);
        Ok(())
    }

    /// Attention heads of `attn` (`c_attn` `[C, 3·heads·hd]`, `c_proj` `[heads·hd, C]`).
    fn heads(&mut self, attn: &str, c: usize, hd: usize) -> anyhow::Result<()> {
        let qkv = self.get(&format!("{attn}.c_attn.weight"), 2)?.clone();
        let proj = self.get(&format!("{attn}.c_proj.weight"), 2)?.clone();
        let width = qkv.shape[1] / 3;
        if qkv.shape[1] % 3 != 0 || width % hd != 0 || proj.shape[0] != width || qkv.shape[0] != c {
            bail!(
                "{}: `{attn}` has c_attn {:?} and c_proj {:?}, not heads of {hd}",
                self.source,
                qkv.shape,
                proj.shape
            );
        }
        let heads = width / hd;
        let cols = qkv.shape[1];
        let outs = proj.shape[1];
        let qkv_bias = self
            .bias(&format!("{attn}.c_attn"))
            .map(|b| b.values.clone());
        let has_proj_bias = self.bias(&format!("{attn}.c_proj")).is_some();
        let mut fold = vec![0.0f32; outs];
        let mut keep = Vec::new();
        for h in 0..heads {
            let dims = h * hd..(h + 1) * hd;
            let unused = dims.clone().all(|d| {
                proj.values[d * outs..(d + 1) * outs]
                    .iter()
                    .all(|v| *v == 0.0)
            });
            // value weights of this head all zero: it outputs the value bias
            let v_zero = dims
                .clone()
                .all(|d| (0..c).all(|i| qkv.values[i * cols + 2 * width + d] == 0.0));
            let vb = |d: usize| qkv_bias.as_ref().map_or(0.0, |b| b[2 * width + d]);
            let foldable = has_proj_bias || dims.clone().all(|d| vb(d) == 0.0);
            if unused || (v_zero && foldable) {
                if !unused {
                    for d in dims.clone() {
                        for (o, f) in fold.iter_mut().enumerate() {
                            *f += vb(d) * proj.values[d * outs + o];
                        }
                    }
                }
            } else {
                keep.push(h);
            }
        }
        if let Some(b) = self.map.get_mut(&format!("{attn}.c_proj.bias")) {
            b.values.iter_mut().zip(&fold).for_each(|(b, f)| *b += f);
        }
        let dims: Vec<usize> = keep.iter().flat_map(|&h| h * hd..(h + 1) * hd).collect();
        let qkv_cols: Vec<usize> = (0..3)
            .flat_map(|part| dims.iter().map(move |d| part * width + d))
            .collect();
        self.select(&format!("{attn}.c_attn.weight"), 1, &qkv_cols);
        self.select(&format!("{attn}.c_attn.bias"), 0, &qkv_cols);
        self.select(&format!("{attn}.c_proj.weight"), 0, &dims);
        Ok(())
    }
}
