//! The engine on a real exported run: a digits MLP trained sparse by PAdam, exported, read back
//! from both files and the run directory; the engine (sparse, and compacted) gives burn's
//! argmax on every test image; `padam bench infer` and `padam sample` on it.

use burn::backend::Flex;
use burn::tensor::{Tensor, TensorData};
use padam_lab::bench::{self, BenchCommand, InferBenchArgs};
use padam_lab::infer::{compact, load, model_shape, Engine, Plan, SampleArgs, Shape};
use padam_lab::runs::export::{self, ExportArgs};
use padam_lab::train::{self, config, TrainArgs};

mod common;
use common::tmp;

const DIGITS: &str = r#"
seed = 6
[model]
kind = "mlp"
hidden = [128]
[data]
dataset = "digits"
test_limit = 200
[optimizer]
kind = "padam"
p = 0.8
lambda = 6e-2
[lr]
peak = 3e-2
schedule = "constant"
[train]
batch_size = 32
epochs = 8
eval_every = 45
"#;

#[test]
fn engine_on_a_real_exported_run() {
    let root = tmp("infer-files");
    let run = root.join("run");
    let cfg = config::parse(DIGITS, &[]).unwrap();
    train::run_config(
        &cfg,
        &TrainArgs {
            out: Some(run.clone()),
            quiet: true,
            ..TrainArgs::default()
        },
    )
    .unwrap();
    let files = export::export(&ExportArgs {
        run: run.clone(),
        format: "safetensors".into(),
        out: None,
    })
    .unwrap();

    // The three sources hold the same tensors.
    let sparse = load(&files.sparse.0).unwrap();
    let dense = load(&files.dense.0).unwrap();
    let from_run = load(&run).unwrap();
    assert_eq!(sparse.tensors.map, dense.tensors.map);
    assert_eq!(sparse.tensors.map, from_run.tensors.map);
    assert_eq!(sparse.file_bytes, files.sparse.1);

    // burn's argmax on the digits test rows, on the sparse engine and the compacted model.
    let shape = model_shape(&sparse.config.model, Some(&sparse.tensors)).unwrap();
    let Shape::Mlp(mlp) = &shape else {
        panic!("digits is an MLP")
    };
    let model = sparse
        .tensors
        .load_into(mlp.init::<Flex>(6, &Default::default()))
        .unwrap();
    let digits = padam_lab::data::digits::load(None).unwrap().to_split();
    let n = 300;
    let x = digits.features[..n * 64].to_vec();
    let want: Vec<f32> = model
        .forward(Tensor::from_data(
            TensorData::new(x.clone(), [n, 64]),
            &Default::default(),
        ))
        .into_data()
        .to_vec()
        .unwrap();
    let argmax = |l: &[f32]| -> Vec<usize> {
        l.chunks(10)
            .map(|r| (0..10).fold(0, |b, i| if r[i] > r[b] { i } else { b }))
            .collect()
    };
    // This run's layers (81-86% zeros) are below the CSR threshold, so the default plan keeps
    // them dense; every layer as CSR runs the sparse kernels on the real weights.
    for plan in [Plan::sparse(), Plan::all_sparse()] {
        let engine = Engine::build(&shape, &sparse.tensors, plan).unwrap();
        assert_eq!(
            argmax(&engine.classify(&x, n, [0, 0]).unwrap()),
            argmax(&want)
        );
    }
    let all = Engine::build(&shape, &sparse.tensors, Plan::all_sparse()).unwrap();
    assert!(
        all.layers.iter().all(|l| l.sparse && l.zero_fraction > 0.5),
        "{:?}",
        all.layers
    );
    let c = compact(&shape, &sparse.tensors).unwrap();
    let small = Engine::build(&shape, &c.tensors, Plan::dense()).unwrap();
    assert_eq!(
        argmax(&small.classify(&x, n, [0, 0]).unwrap()),
        argmax(&want)
    );
    assert!(
        small.memory_bytes()
            < Engine::build(&shape, &sparse.tensors, Plan::dense())
                .unwrap()
                .memory_bytes()
    );

    // padam bench infer runs every row and writes its table.
    let md = root.join("table.md");
    bench::run(BenchCommand::Infer(InferBenchArgs {
        models: vec![files.sparse.0.clone()],
        batches: vec![1, 4],
        iters: 2,
        warmup: 0,
        sample_tokens: 5,
        prune_to: None,
        rows: [
            "burn",
            "engine-dense",
            "sparse",
            "compact",
            "compact-sparse",
        ]
        .map(String::from)
        .to_vec(),
        crossover: false,
        markdown: Some(md.clone()),
    }))
    .unwrap();
    let table = std::fs::read_to_string(&md).unwrap();
    assert_eq!(table.lines().count(), 2 + 5 * 2, "{table}");
    assert!(
        table.contains(&files.sparse.1.to_string()),
        "sparse file bytes in {table}"
    );

    // padam sample refuses a model that is not a nanoGPT, naming it.
    let e = padam_lab::infer::sample(&SampleArgs {
        model: files.sparse.0.clone(),
        prompt: "\n".into(),
        tokens: 3,
        temperature: 0.8,
        top_k: 0,
        seed: 1,
        engine: padam_lab::infer::EngineKind::Sparse,
        data: None,
    })
    .unwrap_err()
    .to_string();
    assert!(e.contains("needs a nanoGPT model"), "{e}");
}
