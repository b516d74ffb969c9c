//! A model's weights as named host tensors (module paths as `padam export` writes them), read
//! from an export file, a run directory's newest checkpoint or a burn module, and written back
//! into a burn module (the dense reference forward).

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{bail, Context};
use burn::module::{AutodiffModule, Module, Param};
use burn::tensor::{backend::Backend, Tensor};
use padam::paths::{visit_with_paths, PathVisitor};

use crate::models::fashion_cnn::FashionCnnConfig;
use crate::models::nanogpt::NanoGptConfig;
use crate::models::resnet::ResNetConfig;
use crate::models::MlpConfig;
use crate::train::checkpoint;
use crate::train::config::{self, ModelConfig, TrainConfig};

type Ad = burn::backend::Autodiff<crate::backend::Cpu>;

/// One tensor: shape and row-major values.
#[derive(Debug, Clone, PartialEq)]
pub struct HostTensor {
    /// Shape.
    pub shape: Vec<usize>,
    /// Row-major values.
    pub values: Vec<f32>,
}

/// A model's tensors by module path, and where they came from (for error messages).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Tensors {
    /// Where the tensors were read (a file, a run directory, "model").
    pub source: String,
    /// Tensors by module path (`conv1.weight`).
    pub map: BTreeMap<String, HostTensor>,
}

impl Tensors {
    /// The tensors as a dense f32 safetensors file, with `meta` as its metadata.
    pub fn to_safetensors(
        &self,
        meta: Option<std::collections::HashMap<String, String>>,
    ) -> anyhow::Result<Vec<u8>> {
        use safetensors::tensor::{Dtype, TensorView};
        let bytes: Vec<(&String, &HostTensor, Vec<u8>)> = self
            .map
            .iter()
            .map(|(n, h)| {
                (
                    n,
                    h,
                    h.values.iter().flat_map(|v| v.to_le_bytes()).collect(),
                )
            })
            .collect();
        let views = bytes
            .iter()
            .map(|(n, h, b)| {
                Ok((
                    (*n).clone(),
                    TensorView::new(Dtype::F32, h.shape.clone(), b)?,
                ))
            })
            .collect::<Result<Vec<_>, safetensors::SafeTensorError>>()?;
        Ok(safetensors::serialize(views, meta)?)
    }

    /// The tensor `name`, which must have `rank` dimensions.
    pub fn get(&self, name: &str, rank: usize) -> anyhow::Result<&HostTensor> {
        let t = self
            .map
            .get(name)
            .with_context(|| format!("{}: tensor `{name}` is missing", self.source))?;
        if t.shape.len() != rank {
            bail!(
                "{}: tensor `{name}` has shape {:?}, expected {rank} dimensions",
                self.source,
                t.shape
            );
        }
        Ok(t)
    }

    /// The tensor `name` with exactly `shape`.
    pub fn get_shaped(&self, name: &str, shape: &[usize]) -> anyhow::Result<&HostTensor> {
        let t = self.get(name, shape.len())?;
        if t.shape != shape {
            bail!(
                "{}: tensor `{name}` has shape {:?}, expected {shape:?}",
                self.source,
                t.shape
            );
        }
        Ok(t)
    }

    /// True when `name` is present.
    pub fn has(&self, name: &str) -> bool {
        self.map.contains_key(name)
    }

    /// Every tensor of `module`, by path.
    pub fn from_module<B: Backend, M: Module<B>>(module: &M, source: &str) -> Self {
        struct Collect(BTreeMap<String, HostTensor>);
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
                    .insert(path.to_string(), HostTensor { shape, values });
            }
        }
        let mut c = Collect(BTreeMap::new());
        visit_with_paths(module, &mut c);
        Self {
            source: source.to_string(),
            map: c.0,
        }
    }

    /// `module` with every tensor replaced by the one of the same path here (names and shapes
    /// checked, every tensor here used).
    pub fn load_into<B: Backend, M: Module<B>>(&self, module: M) -> anyhow::Result<M> {
        let (module, used) = crate::runs::export::load_by_path(module, |path, shape| {
            self.get_shaped(path, shape).map(|h| h.values.clone())
        })?;
        if used != self.map.len() {
            bail!(
                "{}: {} tensors, the model has {}",
                self.source,
                self.map.len(),
                used
            );
        }
        Ok(module)
    }
}

/// A trained model ready for inference: its config and tensors.
#[derive(Debug, Clone)]
pub struct Loaded {
    /// The run's config.
    pub config: TrainConfig,
    /// The tensors.
    pub tensors: Tensors,
    /// Bytes of the file read (0 for a run directory).
    pub file_bytes: u64,
}

/// Read `path`: a `padam export` file (dense or sparse) or a run directory (its newest
/// checkpoint).
pub fn load(path: &Path) -> anyhow::Result<Loaded> {
    if path.is_dir() {
        return load_run(path);
    }
    let file = crate::runs::export::read_export(path)?;
    Ok(Loaded {
        config: file.config,
        tensors: Tensors {
            source: path.display().to_string(),
            map: file
                .tensors
                .into_iter()
                .map(|(n, shape, values)| (n, HostTensor { shape, values }))
                .collect(),
        },
        file_bytes: file.bytes,
    })
}

fn load_run(run: &Path) -> anyhow::Result<Loaded> {
    let config_path = run.join("config.toml");
    let text = std::fs::read_to_string(&config_path)
        .with_context(|| format!("reading {}", config_path.display()))?;
    let config = config::parse(&text, &[]).with_context(|| format!("{}", config_path.display()))?;
    let device = Default::default();
    let (path, ckpt) = checkpoint::load_latest(run, config.hash())?;
    let source = path.display().to_string();
    macro_rules! trained {
        ($model:expr) => {{
            let record = checkpoint::decode_record(ckpt.model, &device, &path, "model")?;
            Tensors::from_module(&$model.load_record(record).valid(), &source)
        }};
    }
    let tensors = match model_shape(&config.model, None)? {
        Shape::Mlp(c) => trained!(c.init::<Ad>(config.seed, &device)),
        Shape::Fashion(c) => trained!(c.init::<Ad>(config.seed, &device)),
        Shape::ResNet(c) => trained!(c.init::<Ad>(config.seed, &device)),
        Shape::Gpt(c) => trained!(c.init::<Ad>(config.seed, &device)),
    };
    Ok(Loaded {
        config,
        tensors,
        file_bytes: 0,
    })
}

/// The model a config builds.
#[derive(Debug, Clone, PartialEq)]
pub enum Shape {
    /// Digits MLP.
    Mlp(MlpConfig),
    /// Fashion CNN.
    Fashion(FashionCnnConfig),
    /// ResNet-18.
    ResNet(ResNetConfig),
    /// nanoGPT.
    Gpt(NanoGptConfig),
}

/// The model of `model`; the MLP's input and output widths and nanoGPT's vocabulary come from
/// `tensors` when given (they are the data's, not the config's), else the built-in digits' and
/// Tiny Shakespeare's (65 characters).
pub fn model_shape(model: &ModelConfig, tensors: Option<&Tensors>) -> anyhow::Result<Shape> {
    Ok(match model {
        ModelConfig::Mlp { hidden } => {
            let (d_in, d_out) = match tensors {
                Some(t) => {
                    let first = t.get("layers.0.weight", 2)?;
                    let last = t.get(&format!("layers.{}.weight", hidden.len()), 2)?;
                    (first.shape[0], last.shape[1])
                }
                None => (
                    crate::data::digits::N_PIXELS,
                    crate::data::digits::N_CLASSES,
                ),
            };
            Shape::Mlp(MlpConfig::new(d_in, hidden.clone(), d_out))
        }
        ModelConfig::FashionCnn { dropout } => Shape::Fashion(FashionCnnConfig {
            dropout: *dropout,
            ..FashionCnnConfig::default()
        }),
        ModelConfig::Resnet18 {} => Shape::ResNet(ResNetConfig::resnet18(10)),
        ModelConfig::Nanogpt { .. } => {
            let vocab_size = match tensors {
                Some(t) => t.get("wte.weight", 2)?.shape[0],
                None => 65,
            };
            Shape::Gpt(model.nanogpt(vocab_size).expect("a nanogpt model"))
        }
    })
}
