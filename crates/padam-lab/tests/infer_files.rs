//! The engine on a real exported run: a digits MLP trained sparse by PAdam, exported, read back
//! from both files and the run directory; the engine (sparse, and compacted) gives burn's
//! argmax on every test image; `padam bench infer` and `padam sample` on it.

use burn::backend::Flex;
use burn::tensor::{Tensor, TensorData};
use padam_lab::bench::{self, BenchCommand, InferBenchArgs};
use padam_lab::infer::{compact, load, model_shape, Engine, Plan, SampleArgs, Shape};
use padam_lab::runs::export::{self, ExportArgs};
use padam_lab::train::{self, config};

mod common;
use common::tmp;

use common::SPARSE_DIGITS as DIGITS;

/// The digits run trained quietly into `root/run` and exported: the run directory and its files.
fn exported_run(root: &std::path::Path) -> (std::path::PathBuf, export::Exported) {
    let run = root.join("run");
    let cfg = config::parse(DIGITS, &[]).unwrap();
    train::run_config(&cfg, &common::quiet_args(run.clone(), false)).unwrap();
    let files = export::export(&ExportArgs {
        run: run.clone(),
        format: "safetensors".into(),
        out: None,
    })
    .unwrap();
    (run, files)
}

#[test]
fn engine_on_a_real_exported_run() {
    let root = tmp("infer-files");
    let (run, files) = exported_run(&root);

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

/// A nanoGPT export file over a small text of our own: its config (data.path = the text) and
/// 95%-zero weights, written as `padam export` writes a dense file.
fn nanogpt_export(root: &std::path::Path) -> std::path::PathBuf {
    use padam_lab::data::shakespeare::CharVocab;
    use padam_lab::data::Rng;
    use padam_lab::infer::Tensors;
    use padam_lab::models::nanogpt::NanoGptConfig;

    std::fs::create_dir_all(root).unwrap();
    let text = "to be, or not to be: that is the question.\n".repeat(30);
    std::fs::write(root.join("input.txt"), &text).unwrap();
    let base = std::fs::read_to_string("../../configs/nanogpt-padam-short.toml").unwrap();
    let cfg = config::parse(
        &base,
        &[
            "model.n_layer=1".into(),
            "model.n_embd=16".into(),
            "model.n_head=2".into(),
            "model.block_size=16".into(),
            format!("data.path=\"{}\"", root.display()),
        ],
    )
    .unwrap();
    let gpt = NanoGptConfig {
        vocab_size: CharVocab::from_text(&text).len(),
        block_size: 16,
        n_layer: 1,
        n_head: 2,
        n_embd: 16,
        dropout: 0.1,
        // as configs/nanogpt-padam-short.toml: no biases, the head tied to the embedding
        bias: false,
        tie_embeddings: true,
    };
    let mut tensors = Tensors::from_module(&gpt.init::<Flex>(1, &Default::default()), "gpt");
    let mut rng = Rng::new(4);
    for h in tensors.map.values_mut() {
        if h.shape.len() == 2 {
            for v in h.values.iter_mut() {
                let w = rng.normal() as f32;
                *v = if rng.next_f64() < 0.95 { 0.0 } else { w };
            }
        }
    }
    let meta = [
        ("config".to_string(), cfg.to_toml()),
        ("format".to_string(), "padam-dense-v1".to_string()),
    ]
    .into_iter()
    .collect();
    let file = root.join("model.safetensors");
    std::fs::write(&file, tensors.to_safetensors(Some(meta)).unwrap()).unwrap();
    file
}

#[test]
fn padam_sample_gives_the_same_text_on_both_engines() {
    use padam_lab::infer::{sample, EngineKind};
    let root = tmp("infer-sample");
    let file = nanogpt_export(&root);
    let args = SampleArgs {
        model: file.clone(),
        prompt: "to be".into(),
        tokens: 40,
        temperature: 1.0,
        top_k: 0,
        seed: 5,
        engine: EngineKind::Sparse,
        data: None,
    };
    let sparse = sample(&args).unwrap();
    let dense = sample(&SampleArgs {
        engine: EngineKind::Dense,
        ..args.clone()
    })
    .unwrap();
    assert_eq!(sparse.text, dense.text);
    assert_eq!(sparse.text.chars().count(), 40);
    assert!(
        sparse
            .text
            .chars()
            .all(|c| "to be,rnhaisqu:.\n".contains(c)),
        "{:?}",
        sparse.text
    );
    assert!(sparse.tokens_per_s > 0.0);
    let other = sample(&SampleArgs {
        seed: 6,
        ..args.clone()
    })
    .unwrap();
    assert_ne!(other.text, sparse.text);

    // A prompt character outside the text, and a text with another character set.
    let e = sample(&SampleArgs {
        prompt: "Zebra".into(),
        ..args.clone()
    })
    .unwrap_err()
    .to_string();
    assert!(e.contains("--prompt \"Zebra\"") && e.contains("'Z'"), "{e}");
    let other_text = root.join("other");
    std::fs::create_dir_all(&other_text).unwrap();
    std::fs::write(other_text.join("input.txt"), "abc abc abc\n").unwrap();
    let e = sample(&SampleArgs {
        data: Some(other_text),
        ..args.clone()
    })
    .unwrap_err()
    .to_string();
    assert!(
        e.contains("5 characters") && e.contains("vocabulary of 17"),
        "{e}"
    );
    let e = sample(&SampleArgs {
        temperature: f64::NAN,
        ..args
    })
    .unwrap_err()
    .to_string();
    assert!(e.contains("--temperature NaN"), "{e}");
}

#[test]
fn a_corrupt_sparse_shape_is_an_error_naming_the_file_and_key() {
    use safetensors::tensor::{Dtype, TensorView};
    let root = tmp("infer-corrupt");
    std::fs::create_dir_all(&root).unwrap();
    let idx: Vec<u8> = [0u32, 3].iter().flat_map(|v| v.to_le_bytes()).collect();
    let val: Vec<u8> = [1.0f32, 2.0].iter().flat_map(|v| v.to_le_bytes()).collect();
    for (shape, want) in [
        ("[4294967296, 4294967296]", "more entries than u32 indices"),
        ("[2, x]", "is not a shape like"),
        ("[1, 2]", "past the 2 entries"),
    ] {
        let views = vec![
            (
                "w.indices".to_string(),
                TensorView::new(Dtype::U32, vec![2], &idx).unwrap(),
            ),
            (
                "w.values".to_string(),
                TensorView::new(Dtype::F32, vec![2], &val).unwrap(),
            ),
        ];
        let meta = [
            ("config".to_string(), DIGITS.to_string()),
            ("format".to_string(), "padam-sparse-v1".to_string()),
            ("shape.w".to_string(), shape.to_string()),
        ]
        .into_iter()
        .collect();
        let file = root.join("bad.safetensors");
        std::fs::write(&file, safetensors::serialize(views, Some(meta)).unwrap()).unwrap();
        let e = format!("{:#}", load(&file).unwrap_err());
        assert!(
            e.contains("bad.safetensors") && e.contains(want),
            "{shape}: {e}"
        );
    }
}

#[test]
fn padam_compact_writes_a_smaller_model_with_the_same_outputs() {
    use padam_lab::infer::{compact_run, CompactArgs};
    let root = tmp("infer-compact");
    let (run, files) = exported_run(&root);
    let (out, report) = compact_run(&CompactArgs {
        model: files.sparse.0.clone(),
        out: None,
    })
    .unwrap();
    assert_eq!(out, run.join("export").join("model.compact.safetensors"));
    let hidden = report
        .report
        .iter()
        .find(|r| r.name == "layers.0.weight")
        .unwrap();
    assert!(hidden.fraction() > 0.0, "{hidden:?}");
    assert!(std::fs::metadata(&out).unwrap().len() < files.dense.1);

    let original = load(&files.sparse.0).unwrap();
    let small = load(&out).unwrap();
    let shape = model_shape(&small.config.model, Some(&small.tensors)).unwrap();
    let x = padam_lab::data::digits::load(None)
        .unwrap()
        .to_split()
        .features[..50 * 64]
        .to_vec();
    let logits = |t: &padam_lab::infer::Tensors| {
        Engine::build(&shape, t, Plan::dense())
            .unwrap()
            .classify(&x, 50, [0, 0])
            .unwrap()
    };
    let (want, got) = (logits(&original.tensors), logits(&small.tensors));
    let scale = want.iter().fold(0.0f32, |m, v| m.max(v.abs()));
    let worst = want
        .iter()
        .zip(&got)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0f32, f32::max);
    assert!(worst <= 1e-5 * scale, "{worst} of {scale}");

    // padam eval refuses it, saying what it is.
    let e = export::eval(&padam_lab::runs::export::EvalArgs {
        file: out,
        data: None,
    })
    .unwrap_err()
    .to_string();
    assert!(e.contains("a compacted model"), "{e}");
}
