//! `padam export <run-dir>` and `padam eval <file>`: a trained run's weights as safetensors,
//! dense and in a compressed sparse form, and back.
//!
//! Files (both carry, in the safetensors `__metadata__`, the run's resolved config TOML, the
//! step, the run's recorded `val_accuracy` and `val_loss`, the padam version and which entries
//! are buffers (batch-norm running statistics), so a file evaluates on its own):
//!
//! - `model.safetensors` (`format = padam-dense-v1`): one f32 tensor per parameter and buffer,
//!   named by module path (`conv1.weight`);
//! - `model.sparse.safetensors` (`format = padam-sparse-v1`): a tensor with more than half of
//!   its entries exactly 0 is stored as `<name>.indices` (u32 flat row-major indices of the
//!   nonzero entries) and `<name>.values` (f32), its shape in the metadata as
//!   `shape.<name> = "[a, b]"`; denser tensors are stored dense under `<name>`.
//!
//! `padam eval` rebuilds the model from the embedded config, loads either form (names, shapes
//! and dtypes checked), evaluates it with the training loop's own evaluation, and compares the
//! result with the recorded one. Runs on the CPU backend.

use std::collections::HashMap;
use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use burn::module::{AutodiffModule, Module, Param};
use burn::tensor::{backend::Backend, Tensor, TensorData};
use clap::Args;
use padam::paths::{
    is_running_statistic, map_with_paths, visit_with_paths, PathMapper, PathVisitor,
};
use safetensors::tensor::{Dtype, SafeTensors, TensorView};

use crate::train::config::{self, TrainConfig};
use crate::train::task::{self, AnyTask, Task};
use crate::train::{checkpoint, metrics_line_at};

type Ad = burn::backend::Autodiff<crate::backend::Cpu>;

/// Options of `padam export`.
#[derive(Args, Debug, Clone)]
pub struct ExportArgs {
    /// The run directory (config.toml and checkpoints).
    pub run: PathBuf,
    /// Output format (only `safetensors`).
    #[arg(long, default_value = "safetensors")]
    pub format: String,
    /// Output folder (default: `<run>/export`).
    #[arg(long)]
    pub out: Option<PathBuf>,
}

/// Options of `padam eval`.
#[derive(Args, Debug, Clone)]
pub struct EvalArgs {
    /// A file written by `padam export` (dense or sparse).
    pub file: PathBuf,
    /// Data folder (overrides the config's `data.path`).
    #[arg(long)]
    pub data: Option<PathBuf>,
}

/// The files `padam export` wrote.
#[derive(Debug, Clone)]
pub struct Exported {
    /// Dense file and its size in bytes.
    pub dense: (PathBuf, u64),
    /// Sparse file and its size in bytes.
    pub sparse: (PathBuf, u64),
}

/// What `padam eval` measured and what the run recorded.
#[derive(Debug, Clone, PartialEq)]
pub struct Evaluated {
    /// Validation loss now.
    pub val_loss: f64,
    /// Validation accuracy now.
    pub val_accuracy: f64,
    /// The run's recorded validation loss at the exported step.
    pub recorded_loss: Option<f64>,
    /// The run's recorded validation accuracy at the exported step.
    pub recorded_accuracy: Option<f64>,
}

/// One tensor of a model: path, shape, values, whether it is a buffer.
type Entry = (String, Vec<usize>, Vec<f32>, bool);

fn entries<B: Backend, M: Module<B>>(model: &M) -> Vec<Entry> {
    struct Collect(Vec<Entry>);
    impl<B: Backend> PathVisitor<B> for Collect {
        fn visit<const D: usize>(&mut self, path: &str, param: &Param<Tensor<B, D>>) {
            let t = param.val();
            let shape = t.shape().dims::<D>().to_vec();
            let values = t
                .into_data()
                .convert::<f32>()
                .to_vec::<f32>()
                .expect("f32 data");
            self.0
                .push((path.to_string(), shape, values, is_running_statistic(path)));
        }
    }
    let mut c = Collect(Vec::new());
    visit_with_paths(model, &mut c);
    c.0
}

fn f32_bytes(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

/// Run `padam export`.
pub fn export(args: &ExportArgs) -> anyhow::Result<Exported> {
    if args.format != "safetensors" {
        bail!(
            "--format {:?}: only `safetensors` is supported",
            args.format
        );
    }
    let config_path = args.run.join("config.toml");
    let text = fs::read_to_string(&config_path)
        .with_context(|| format!("reading {}", config_path.display()))?;
    let config = config::parse(&text, &[]).with_context(|| format!("{}", config_path.display()))?;
    let model_entries = match task::load(&config)? {
        AnyTask::Digits(t) => trained_entries(&t, &config, &args.run)?,
        AnyTask::Fashion(t) => trained_entries(&t, &config, &args.run)?,
        AnyTask::Cifar(t) => trained_entries(&t, &config, &args.run)?,
        AnyTask::Shakespeare(t) => trained_entries(&t, &config, &args.run)?,
    };
    let (step, entries) = model_entries;
    let recorded = metrics_line_at(&args.run, step);
    let mut meta = HashMap::new();
    meta.insert("config".to_string(), text);
    meta.insert("step".to_string(), step.to_string());
    meta.insert(
        "padam_version".to_string(),
        env!("CARGO_PKG_VERSION").to_string(),
    );
    let buffers: Vec<&str> = entries
        .iter()
        .filter(|e| e.3)
        .map(|e| e.0.as_str())
        .collect();
    meta.insert("buffers".to_string(), serde_json::to_string(&buffers)?);
    for key in ["val_accuracy", "val_loss"] {
        if let Some(v) = recorded.as_ref().and_then(|l| l[key].as_f64()) {
            meta.insert(key.to_string(), format!("{v:?}"));
        }
    }
    let out = args.out.clone().unwrap_or_else(|| args.run.join("export"));
    fs::create_dir_all(&out).with_context(|| format!("creating {}", out.display()))?;

    // dense
    let dense_bytes: Vec<(String, Vec<usize>, Vec<u8>)> = entries
        .iter()
        .map(|(p, s, v, _)| (p.clone(), s.clone(), f32_bytes(v)))
        .collect();
    let mut dense_meta = meta.clone();
    dense_meta.insert("format".into(), "padam-dense-v1".into());
    let dense_path = out.join("model.safetensors");
    write_safetensors(&dense_path, &dense_bytes, dense_meta)?;

    // sparse
    let mut sparse_meta = meta;
    sparse_meta.insert("format".into(), "padam-sparse-v1".into());
    let mut sparse: Vec<(String, Vec<usize>, Vec<u8>, Dtype)> = Vec::new();
    for (path, shape, values, _) in &entries {
        let nonzero: Vec<(u32, f32)> = values
            .iter()
            .enumerate()
            .filter(|(_, v)| **v != 0.0)
            .map(|(i, v)| (i as u32, *v))
            .collect();
        if nonzero.len() * 2 < values.len() {
            let idx: Vec<u8> = nonzero.iter().flat_map(|(i, _)| i.to_le_bytes()).collect();
            let val: Vec<u8> = nonzero.iter().flat_map(|(_, v)| v.to_le_bytes()).collect();
            sparse_meta.insert(format!("shape.{path}"), serde_json::to_string(shape)?);
            sparse.push((
                format!("{path}.indices"),
                vec![nonzero.len()],
                idx,
                Dtype::U32,
            ));
            sparse.push((
                format!("{path}.values"),
                vec![nonzero.len()],
                val,
                Dtype::F32,
            ));
        } else {
            sparse.push((path.clone(), shape.clone(), f32_bytes(values), Dtype::F32));
        }
    }
    let views = sparse
        .iter()
        .map(|(n, s, b, d)| Ok((n.clone(), TensorView::new(*d, s.clone(), b)?)))
        .collect::<Result<Vec<_>, safetensors::SafeTensorError>>()?;
    let sparse_path = out.join("model.sparse.safetensors");
    let bytes = safetensors::serialize(views, Some(sparse_meta))?;
    fs::write(&sparse_path, &bytes)
        .with_context(|| format!("writing {}", sparse_path.display()))?;

    let size = |p: &Path| fs::metadata(p).map(|m| m.len()).unwrap_or(0);
    let (d, s) = (size(&dense_path), size(&sparse_path));
    println!("{} {d} bytes (dense)", dense_path.display());
    println!(
        "{} {s} bytes (sparse): {} bytes saved, {:.1}x smaller",
        sparse_path.display(),
        d.saturating_sub(s),
        d as f64 / s.max(1) as f64
    );
    Ok(Exported {
        dense: (dense_path, d),
        sparse: (sparse_path, s),
    })
}

fn write_safetensors(
    path: &Path,
    tensors: &[(String, Vec<usize>, Vec<u8>)],
    meta: HashMap<String, String>,
) -> anyhow::Result<()> {
    let views = tensors
        .iter()
        .map(|(n, s, b)| Ok((n.clone(), TensorView::new(Dtype::F32, s.clone(), b)?)))
        .collect::<Result<Vec<_>, safetensors::SafeTensorError>>()?;
    let bytes = safetensors::serialize(views, Some(meta))?;
    fs::write(path, bytes).with_context(|| format!("writing {}", path.display()))
}

/// The newest checkpoint's model of a run, as entries, with its step.
fn trained_entries<T: Task<Ad>>(
    task: &T,
    config: &TrainConfig,
    run: &Path,
) -> anyhow::Result<(usize, Vec<Entry>)> {
    let device = Default::default();
    let (path, ckpt) = checkpoint::load_for(run, config)?;
    let record = checkpoint::decode_record(ckpt.model, &device, &path, "model")?;
    let model = task.init(config.seed, &device).load_record(record);
    Ok((ckpt.state.step, entries(&model.valid())))
}

/// The tensors and the metadata of a safetensors file written by padam (`file` names it in
/// errors).
fn open<'a>(
    file: &str,
    bytes: &'a [u8],
) -> anyhow::Result<(SafeTensors<'a>, HashMap<String, String>)> {
    let st = SafeTensors::deserialize(bytes)
        .map_err(|e| anyhow::anyhow!("{file}: not a safetensors file ({e})"))?;
    let (_, header) = SafeTensors::read_metadata(bytes)
        .map_err(|e| anyhow::anyhow!("{file}: unreadable header ({e})"))?;
    let meta = header
        .metadata()
        .clone()
        .with_context(|| format!("{file}: no __metadata__ (not written by padam export)"))?;
    Ok((st, meta))
}

/// The run's config embedded in the metadata.
fn embedded_config(file: &str, meta: &HashMap<String, String>) -> anyhow::Result<TrainConfig> {
    let text = meta
        .get("config")
        .with_context(|| format!("{file}: metadata has no `config`"))?;
    config::parse(text, &[]).with_context(|| format!("{file}: embedded config"))
}

/// Run `padam eval`.
pub fn eval(args: &EvalArgs) -> anyhow::Result<Evaluated> {
    let file = args.file.display().to_string();
    let bytes = fs::read(&args.file).with_context(|| format!("reading {file}"))?;
    let (st, meta) = open(&file, &bytes)?;
    if meta.get("format").map(String::as_str) == Some("padam-compact-v1") {
        bail!(
            "{file}: a compacted model (padam compact): its shapes differ from the config's \
             model, so only the infer engine runs it (padam bench infer --rows sparse, padam sample)"
        );
    }
    let mut config = embedded_config(&file, &meta)?;
    if let Some(d) = &args.data {
        config.data.path = Some(d.clone());
    }
    let source = Source {
        file: &file,
        st: &st,
        meta: &meta,
    };
    let (val_loss, val_accuracy) = match task::load(&config)? {
        AnyTask::Digits(t) => evaluate(&t, &config, &source)?,
        AnyTask::Fashion(t) => evaluate(&t, &config, &source)?,
        AnyTask::Cifar(t) => evaluate(&t, &config, &source)?,
        AnyTask::Shakespeare(t) => evaluate(&t, &config, &source)?,
    };
    let recorded = |k: &str| meta.get(k).and_then(|v| v.parse::<f64>().ok());
    let out = Evaluated {
        val_loss,
        val_accuracy,
        recorded_loss: recorded("val_loss"),
        recorded_accuracy: recorded("val_accuracy"),
    };
    println!(
        "{file}: val loss {val_loss} (run recorded {:?}), val accuracy {val_accuracy} (run recorded {:?})",
        out.recorded_loss, out.recorded_accuracy
    );
    Ok(out)
}

/// A `padam export` file read back: its embedded config and every tensor by module path
/// (sparse ones expanded to dense values), each checked as `padam eval` checks them.
#[derive(Debug, Clone)]
pub struct ExportFile {
    /// The run's config, embedded in the file.
    pub config: TrainConfig,
    /// `padam-dense-v1` or `padam-sparse-v1`.
    pub format: String,
    /// `(path, shape, values)` of every tensor, in name order.
    pub tensors: Vec<(String, Vec<usize>, Vec<f32>)>,
    /// Size of the file.
    pub bytes: u64,
}

/// Read a file written by `padam export` (either form).
pub fn read_export(path: &Path) -> anyhow::Result<ExportFile> {
    let file = path.display().to_string();
    let bytes = fs::read(path).with_context(|| format!("reading {file}"))?;
    let (st, meta) = open(&file, &bytes)?;
    let config = embedded_config(&file, &meta)?;
    let format = meta.get("format").cloned().unwrap_or_default();
    // padam-compact-v1 (`padam compact`) is laid out as dense; its shapes are checked by the
    // reader that runs it.
    if !["padam-dense-v1", "padam-sparse-v1", "padam-compact-v1"].contains(&format.as_str()) {
        bail!(
            "{file}: metadata `format` = {format:?}, expected padam-dense-v1, padam-sparse-v1 or \
             padam-compact-v1"
        );
    }
    let source = Source {
        file: &file,
        st: &st,
        meta: &meta,
    };
    let mut names = st.names();
    names.sort();
    let mut tensors = Vec::new();
    for name in names {
        let sparse_base = name
            .strip_suffix(".indices")
            .or_else(|| name.strip_suffix(".values"))
            .filter(|base| meta.contains_key(&format!("shape.{base}")));
        let (base, shape) = match sparse_base {
            // A sparse tensor is read once, at its `.indices` entry.
            Some(_) if name.ends_with(".values") => continue,
            Some(base) => {
                let raw = &meta[&format!("shape.{base}")];
                let shape: Vec<usize> = serde_json::from_str(raw).map_err(|e| {
                    anyhow::anyhow!(
                        "{file}: metadata `shape.{base}` = {raw:?} is not a shape like [64, 10] ({e})"
                    )
                })?;
                // Indices are u32, so no sparse tensor holds more entries; this also keeps a
                // corrupt shape from asking for an absurd allocation.
                let numel = shape.iter().try_fold(1usize, |a, &d| a.checked_mul(d));
                if numel.is_none_or(|n| n > u32::MAX as usize) {
                    bail!("{file}: metadata `shape.{base}` = {raw:?} has more entries than u32 indices address");
                }
                (base.to_string(), shape)
            }
            None => {
                let t = st
                    .tensor(name)
                    .map_err(|e| anyhow::anyhow!("{file}: `{name}`: {e}"))?;
                (name.to_string(), t.shape().to_vec())
            }
        };
        let values = source.values(&base, &shape)?;
        tensors.push((base, shape, values));
    }
    Ok(ExportFile {
        config,
        format,
        tensors,
        bytes: bytes.len() as u64,
    })
}

/// Where `padam eval` reads tensors from.
struct Source<'a> {
    file: &'a str,
    st: &'a SafeTensors<'a>,
    meta: &'a HashMap<String, String>,
}

impl Source<'_> {
    /// The values of `path` (dense or sparse), checked against `shape`.
    fn values(&self, path: &str, shape: &[usize]) -> anyhow::Result<Vec<f32>> {
        let numel: usize = shape.iter().product();
        let f = self.file;
        if let Ok(t) = self.st.tensor(path) {
            if t.dtype() != Dtype::F32 {
                bail!("{f}: tensor `{path}` is {:?}, expected F32", t.dtype());
            }
            if t.shape() != shape {
                bail!(
                    "{f}: tensor `{path}` has shape {:?}, the model expects {shape:?}",
                    t.shape()
                );
            }
            return Ok(le_f32(t.data()));
        }
        let (Ok(idx), Ok(val)) = (
            self.st.tensor(&format!("{path}.indices")),
            self.st.tensor(&format!("{path}.values")),
        ) else {
            bail!("{f}: tensor `{path}` is missing (neither dense nor `{path}.indices`/`.values`)");
        };
        let key = format!("shape.{path}");
        let raw = self
            .meta
            .get(&key)
            .with_context(|| format!("{f}: no `{key}` in the metadata"))?;
        let stored: Vec<usize> = serde_json::from_str(raw).map_err(|e| {
            anyhow::anyhow!("{f}: metadata `{key}` = {raw:?} is not a shape like [64, 10] ({e})")
        })?;
        if stored != shape {
            bail!("{f}: tensor `{path}` has shape {stored:?}, the model expects {shape:?}");
        }
        if idx.dtype() != Dtype::U32 || val.dtype() != Dtype::F32 || idx.shape() != val.shape() {
            bail!("{f}: `{path}.indices`/`.values` must be U32/F32 of one length");
        }
        // Indices as export writes them: in range, strictly increasing (so each entry once),
        // no more of them than entries.
        if idx.shape().iter().product::<usize>() > numel {
            bail!(
                "{f}: `{path}.indices` holds {} indices for {numel} entries",
                idx.shape().iter().product::<usize>()
            );
        }
        let mut out = vec![0.0f32; numel];
        let mut previous: Option<usize> = None;
        for (k, (i, v)) in idx
            .data()
            .chunks_exact(4)
            .zip(le_f32(val.data()))
            .enumerate()
        {
            let i = u32::from_le_bytes(i.try_into().expect("4 bytes")) as usize;
            if i >= numel {
                bail!("{f}: `{path}.indices`[{k}] = {i}, past the {numel} entries of {shape:?}");
            }
            if previous.is_some_and(|p| i <= p) {
                bail!(
                    "{f}: `{path}.indices`[{k}] = {i} after {}: indices must be strictly \
                     increasing",
                    previous.unwrap_or(0)
                );
            }
            previous = Some(i);
            out[i] = v;
        }
        Ok(out)
    }
}

fn le_f32(bytes: &[u8]) -> Vec<f32> {
    bytes
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes(b.try_into().expect("4 bytes")))
        .collect()
}

/// `module` with every float parameter replaced by `values(path, shape)` (trainability kept),
/// and the number replaced; the first error, if any, instead.
pub fn load_by_path<B: Backend, M: Module<B>>(
    module: M,
    values: impl FnMut(&str, &[usize]) -> anyhow::Result<Vec<f32>>,
) -> anyhow::Result<(M, usize)> {
    struct Load<F> {
        values: F,
        loaded: usize,
        error: Option<anyhow::Error>,
    }
    impl<B: Backend, F: FnMut(&str, &[usize]) -> anyhow::Result<Vec<f32>>> PathMapper<B> for Load<F> {
        fn map<const D: usize>(
            &mut self,
            path: &str,
            param: Param<Tensor<B, D>>,
        ) -> Param<Tensor<B, D>> {
            let (id, t, mapper) = param.consume();
            let shape = t.shape().dims::<D>().to_vec();
            let t = match (self.values)(path, &shape) {
                Ok(values) => {
                    self.loaded += 1;
                    let rg = t.is_require_grad();
                    Tensor::<B, D>::from_data(TensorData::new(values, shape), &t.device())
                        .set_require_grad(rg)
                }
                Err(e) => {
                    self.error.get_or_insert(e);
                    t
                }
            };
            Param::from_mapped_value(id, t, mapper)
        }
    }
    let mut load = Load {
        values,
        loaded: 0,
        error: None,
    };
    let module = map_with_paths(module, &mut load);
    match load.error {
        Some(e) => Err(e),
        None => Ok((module, load.loaded)),
    }
}

/// Load every tensor of the model from `source`, then evaluate as the training loop does.
fn evaluate<T: Task<Ad>>(
    task: &T,
    config: &TrainConfig,
    source: &Source<'_>,
) -> anyhow::Result<(f64, f64)> {
    let device = Default::default();
    let (model, _) = load_by_path(task.init(config.seed, &device), |path, shape| {
        source.values(path, shape)
    })?;
    let eval_bs = config
        .train
        .eval_batch_size
        .unwrap_or(config.train.batch_size);
    Ok(task.evaluate(&model.valid(), eval_bs, &device))
}
