//! The sparse inference engine against burn-flex's dense forward of the same model, on every
//! model family, with 95% of each weight matrix exactly zero (and some whole rows zero, as
//! PAdam leaves them): outputs equal within 1e-5 of the output's largest magnitude.

use burn::backend::Flex;
use burn::tensor::{Int, Tensor, TensorData};
use padam_lab::data::Rng;
use padam_lab::infer::{Engine, Plan, Shape, Tensors};
use padam_lab::models::fashion_cnn::FashionCnnConfig;
use padam_lab::models::nanogpt::NanoGptConfig;
use padam_lab::models::resnet::ResNetConfig;
use padam_lab::models::MlpConfig;

/// Zero `zeros` of every matrix and kernel (rank >= 2) at random, and the whole first output
/// row; give vectors and running statistics non-trivial values.
fn sparsify(t: &mut Tensors, zeros: f64, seed: u64) {
    let mut rng = Rng::new(seed);
    for (name, h) in t.map.iter_mut() {
        if h.shape.len() >= 2 {
            for v in h.values.iter_mut() {
                if rng.uniform(0.0, 1.0) < zeros {
                    *v = 0.0;
                }
            }
            // One whole output unit (a column of burn's [in, out] weights, a row of a kernel)
            let out = if name.ends_with("wte.weight") || name.ends_with("wpe.weight") {
                None
            } else if h.shape.len() == 2 {
                Some(h.shape[1])
            } else {
                Some(1)
            };
            if let Some(o) = out {
                let (rank, per_kernel_row) = (h.shape.len(), h.values.len() / h.shape[0]);
                for (i, v) in h.values.iter_mut().enumerate() {
                    let first = if rank == 2 {
                        i % o == 0
                    } else {
                        i < per_kernel_row
                    };
                    if first {
                        *v = 0.0;
                    }
                }
            }
        } else if name.ends_with("running_var") {
            h.values
                .iter_mut()
                .for_each(|v| *v = rng.uniform(0.5, 2.0) as f32);
        } else {
            let base = if name.ends_with("gamma") { 1.0 } else { 0.0 };
            h.values
                .iter_mut()
                .for_each(|v| *v = base + 0.2 * rng.normal() as f32);
        }
    }
}

fn random(n: usize, seed: u64) -> Vec<f32> {
    let mut rng = Rng::new(seed);
    (0..n).map(|_| rng.normal() as f32).collect()
}

/// `got` equals `want` within 1e-5 of `want`'s largest magnitude.
fn assert_close(got: &[f32], want: &[f32], what: &str) {
    assert_eq!(got.len(), want.len(), "{what}: lengths");
    let scale = want.iter().fold(0.0f32, |m, v| m.max(v.abs()));
    assert!(
        scale > 0.0 && scale.is_finite(),
        "{what}: reference output {scale}"
    );
    let worst = got
        .iter()
        .zip(want)
        .map(|(g, w)| (g - w).abs())
        .fold(0.0f32, f32::max);
    assert!(
        worst <= 1e-5 * scale,
        "{what}: max |engine - burn| = {worst:e}, {:e} of the output scale {scale}",
        worst / scale
    );
}

fn plans() -> [(&'static str, Plan); 3] {
    [
        ("sparse", Plan::sparse()),
        ("dense", Plan::dense()),
        // every matrix CSR, however dense
        ("all-csr", Plan::all_sparse()),
    ]
}

#[test]
fn mlp_equals_burn() {
    let device = Default::default();
    let config = MlpConfig::new(64, vec![48, 32], 10);
    let mut tensors = Tensors::from_module(&config.init::<Flex>(1, &device), "mlp");
    sparsify(&mut tensors, 0.95, 2);
    let model = tensors.load_into(config.init::<Flex>(1, &device)).unwrap();
    for n in [1, 5] {
        let x = random(n * 64, 3);
        let want: Vec<f32> = model
            .forward(Tensor::from_data(
                TensorData::new(x.clone(), [n, 64]),
                &device,
            ))
            .into_data()
            .to_vec()
            .unwrap();
        for (label, plan) in plans() {
            let engine = Engine::build(&Shape::Mlp(config.clone()), &tensors, plan).unwrap();
            let got = engine.classify(&x, n, [0, 0]).unwrap();
            assert_close(&got, &want, &format!("mlp n={n} {label}"));
        }
    }
}

#[test]
fn fashion_cnn_equals_burn() {
    let device = Default::default();
    let config = FashionCnnConfig::default();
    let mut tensors = Tensors::from_module(&config.init::<Flex>(1, &device), "cnn");
    sparsify(&mut tensors, 0.95, 4);
    let model = tensors.load_into(config.init::<Flex>(1, &device)).unwrap();
    for n in [1, 3] {
        let x = random(n * 28 * 28, 5);
        let want: Vec<f32> = model
            .forward(Tensor::from_data(
                TensorData::new(x.clone(), [n, 1, 28, 28]),
                &device,
            ))
            .into_data()
            .to_vec()
            .unwrap();
        for (label, plan) in plans() {
            let engine = Engine::build(&Shape::Fashion(config.clone()), &tensors, plan).unwrap();
            let got = engine.classify(&x, n, [28, 28]).unwrap();
            assert_close(&got, &want, &format!("fashion n={n} {label}"));
        }
    }
}

#[test]
fn resnet_equals_burn() {
    // ResNet-18's structure (stem, 4 stages, stride-2 blocks with 1x1 shortcuts, an identity
    // block) at a width a debug test runs in a second.
    let device = Default::default();
    let config = ResNetConfig {
        in_channels: 3,
        widths: [4, 8, 8, 16],
        blocks: [2, 1, 2, 1],
        n_classes: 10,
    };
    let mut tensors = Tensors::from_module(&config.init::<Flex>(1, &device), "resnet");
    sparsify(&mut tensors, 0.95, 6);
    let model = tensors.load_into(config.init::<Flex>(1, &device)).unwrap();
    let n = 2;
    let x = random(n * 3 * 16 * 16, 7);
    let want: Vec<f32> = model
        .forward(Tensor::from_data(
            TensorData::new(x.clone(), [n, 3, 16, 16]),
            &device,
        ))
        .into_data()
        .to_vec()
        .unwrap();
    for (label, plan) in plans() {
        let engine = Engine::build(&Shape::ResNet(config.clone()), &tensors, plan).unwrap();
        let got = engine.classify(&x, n, [16, 16]).unwrap();
        assert_close(&got, &want, &format!("resnet {label}"));
    }
}

/// A small GPT with or without biases; without, its head is tied to the token embedding
/// (nanoGPT's shape), so both head layouts are covered.
fn gpt_config(bias: bool) -> NanoGptConfig {
    NanoGptConfig {
        vocab_size: 11,
        block_size: 16,
        n_layer: 2,
        n_head: 2,
        n_embd: 16,
        dropout: 0.0,
        bias,
        tie_embeddings: !bias,
    }
}

#[test]
fn nanogpt_equals_burn() {
    let device = Default::default();
    for bias in [true, false] {
        let config = gpt_config(bias);
        let mut tensors = Tensors::from_module(&config.init::<Flex>(1, &device), "gpt");
        // nanoGPT's 0.02 init gives near-uniform logits; larger weights test more.
        for (name, h) in tensors.map.iter_mut() {
            if h.shape.len() == 2 {
                let mut rng = Rng::new(name.len() as u64);
                h.values
                    .iter_mut()
                    .for_each(|v| *v = 0.5 * rng.normal() as f32);
            }
        }
        sparsify(&mut tensors, 0.9, 8);
        let model = tensors.load_into(config.init::<Flex>(1, &device)).unwrap();
        let (b, t) = (2, 12);
        let mut rng = Rng::new(9);
        let tokens: Vec<u32> = (0..b * t).map(|_| rng.below(11) as u32).collect();
        let idx: Vec<i64> = tokens.iter().map(|&v| v as i64).collect();
        let want: Vec<f32> = model
            .forward(Tensor::<Flex, 2, Int>::from_data(
                TensorData::new(idx, [b, t]),
                &device,
            ))
            .into_data()
            .to_vec()
            .unwrap();
        for (label, plan) in plans() {
            let engine = Engine::build(&Shape::Gpt(config.clone()), &tensors, plan).unwrap();
            let gpt = engine.gpt().unwrap();
            let got = gpt.forward(&tokens, b, t, false);
            assert_close(&got, &want, &format!("gpt bias={bias} {label}"));
            // The last position alone, as sampling asks for it.
            let last = gpt.forward(&tokens, b, t, true);
            let want_last: Vec<f32> = (0..b)
                .flat_map(|s| want[(s * t + t - 1) * 11..(s * t + t) * 11].to_vec())
                .collect();
            assert_close(&last, &want_last, &format!("gpt last bias={bias} {label}"));
        }
    }
}

#[test]
fn sparse_plan_stores_sparse_matrices_as_csr_and_uses_less_memory() {
    let device = Default::default();
    let config = FashionCnnConfig::default();
    let mut tensors = Tensors::from_module(&config.init::<Flex>(1, &device), "cnn");
    sparsify(&mut tensors, 0.95, 4);
    let shape = Shape::Fashion(config);
    let sparse = Engine::build(&shape, &tensors, Plan::sparse()).unwrap();
    let dense = Engine::build(&shape, &tensors, Plan::dense()).unwrap();
    assert!(sparse
        .layers
        .iter()
        .all(|l| l.sparse && l.zero_fraction >= 0.9));
    assert!(dense.layers.iter().all(|l| !l.sparse));
    assert_eq!(dense.memory_bytes(), 4 * 421_642);
    assert!(sparse.memory_bytes() * 5 < dense.memory_bytes());
}

#[test]
fn bad_tensors_are_refused_with_the_name_and_shape() {
    let device = Default::default();
    let config = FashionCnnConfig::default();
    let mut tensors = Tensors::from_module(&config.init::<Flex>(1, &device), "file.safetensors");
    let shape = Shape::Fashion(config);
    tensors.map.get_mut("fc1.weight").unwrap().shape = vec![3136, 64, 2];
    let e = Engine::build(&shape, &tensors, Plan::sparse())
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("file.safetensors") && e.contains("fc1.weight") && e.contains("[3136, 64, 2]"),
        "{e}"
    );
    tensors.map.remove("fc1.weight");
    let e = Engine::build(&shape, &tensors, Plan::sparse())
        .unwrap_err()
        .to_string();
    assert!(e.contains("`fc1.weight` is missing"), "{e}");
}

#[test]
fn sampling_gives_the_same_text_on_the_sparse_engine_and_burn() {
    use padam_lab::infer::{burn_last_logits, generate, Sampling};
    let device = Default::default();
    let config = gpt_config(true);
    let mut tensors = Tensors::from_module(&config.init::<Flex>(1, &device), "gpt");
    for (name, h) in tensors.map.iter_mut() {
        if h.shape.len() == 2 {
            let mut rng = Rng::new(name.len() as u64 + 100);
            h.values
                .iter_mut()
                .for_each(|v| *v = 0.5 * rng.normal() as f32);
        }
    }
    sparsify(&mut tensors, 0.95, 10);
    let model = tensors.load_into(config.init::<Flex>(1, &device)).unwrap();
    let engine = Engine::build(&Shape::Gpt(config.clone()), &tensors, Plan::sparse()).unwrap();
    assert!(engine.layers.iter().any(|l| l.sparse));
    let net = engine.gpt().unwrap();
    let prompt = [3u32, 1, 4];
    for (temperature, top_k, seed) in [(0.0, 0, 1), (0.8, 0, 2), (1.0, 5, 3), (1.5, 200, 4)] {
        let s = Sampling {
            tokens: 40, // past block_size (16): the context window slides
            temperature,
            top_k,
            seed,
        };
        let sparse = generate(&prompt, 16, &s, |c| net.forward(c, 1, c.len(), true)).unwrap();
        let dense = generate(&prompt, 16, &s, |c| burn_last_logits(&model, c)).unwrap();
        assert_eq!(
            sparse, dense,
            "temperature {temperature} top-k {top_k} seed {seed}"
        );
        assert_eq!(sparse.len(), 40);
        assert!(sparse.iter().all(|&t| t < 11));
        if temperature > 0.0 {
            // another seed, other text (the draws matter)
            let other = generate(
                &prompt,
                16,
                &Sampling {
                    seed: seed + 50,
                    ..s
                },
                |c| net.forward(c, 1, c.len(), true),
            )
            .unwrap();
            assert_ne!(sparse, other);
        }
    }
}

#[test]
fn next_token_follows_temperature_and_top_k_and_refuses_nan() {
    use padam_lab::infer::{next_token, Sampling};
    let logits = [0.0f32, 3.0, 1.0, 2.9];
    let s = |temperature, top_k| Sampling {
        tokens: 1,
        temperature,
        top_k,
        seed: 0,
    };
    let mut rng = Rng::new(1);
    for _ in 0..50 {
        assert_eq!(next_token(&logits, &s(0.0, 0), &mut rng).unwrap(), 1);
        assert_eq!(next_token(&logits, &s(1.0, 1), &mut rng).unwrap(), 1);
        let t = next_token(&logits, &s(1.0, 2), &mut rng).unwrap();
        assert!(t == 1 || t == 3, "top-2 drew {t}");
    }
    // At a high temperature every token comes up.
    let mut seen = [false; 4];
    for _ in 0..400 {
        seen[next_token(&logits, &s(50.0, 0), &mut rng).unwrap() as usize] = true;
    }
    assert_eq!(seen, [true; 4]);
    let e = next_token(&[0.0, f32::NAN], &s(1.0, 0), &mut rng).unwrap_err();
    assert!(e.to_string().contains("token 1 is NaN"), "{e}");
    let e = padam_lab::infer::generate(&[0], 4, &s(-1.0, 0), |_| vec![0.0]).unwrap_err();
    assert!(e.to_string().contains("--temperature -1"), "{e}");
}

/// Zero whole units the way compaction looks for them: for every matrix, a few output units
/// (all their weights) and a few input units (unused), and some biases negative.
fn structured_zeros(t: &mut Tensors) {
    for (name, h) in t.map.iter_mut() {
        match h.shape.len() {
            2 if !name.contains("wte") && !name.contains("wpe") => {
                let (i, o) = (h.shape[0], h.shape[1]);
                for r in 0..i {
                    for c in 0..o {
                        if c % 3 == 1 || r % 4 == 2 {
                            h.values[r * o + c] = 0.0;
                        }
                    }
                }
            }
            4 => {
                let (o, i) = (h.shape[0], h.shape[1]);
                let k = h.values.len() / (o * i);
                for a in 0..o {
                    for b in 0..i {
                        if a % 3 == 1 || b % 4 == 2 {
                            h.values[(a * i + b) * k..(a * i + b + 1) * k].fill(0.0);
                        }
                    }
                }
            }
            1 if name.ends_with("bias") || name.ends_with("beta") => {
                for (j, v) in h.values.iter_mut().enumerate() {
                    if j % 2 == 0 {
                        *v = -v.abs() - 0.1;
                    }
                }
            }
            _ => {}
        }
    }
}

fn assert_shrunk(c: &padam_lab::infer::Compacted, what: &str) {
    let shrunk: Vec<_> = c.report.iter().filter(|r| r.fraction() > 0.0).collect();
    assert!(!shrunk.is_empty(), "{what}: nothing compacted");
    assert!(c.report.iter().all(|r| (0.0..1.0).contains(&r.fraction())));
}

#[test]
fn compacted_models_equal_burn() {
    use padam_lab::infer::compact;
    let device = Default::default();
    // MLP
    let config = MlpConfig::new(64, vec![48, 32], 10);
    let mut tensors = Tensors::from_module(&config.init::<Flex>(1, &device), "mlp");
    sparsify(&mut tensors, 0.5, 2);
    structured_zeros(&mut tensors);
    let model = tensors.load_into(config.init::<Flex>(1, &device)).unwrap();
    let shape = Shape::Mlp(config);
    let c = compact(&shape, &tensors).unwrap();
    assert_shrunk(&c, "mlp");
    let x = random(4 * 64, 3);
    let want: Vec<f32> = model
        .forward(Tensor::from_data(
            TensorData::new(x.clone(), [4, 64]),
            &device,
        ))
        .into_data()
        .to_vec()
        .unwrap();
    let e = Engine::build(&shape, &c.tensors, Plan::dense()).unwrap();
    assert_close(&e.classify(&x, 4, [0, 0]).unwrap(), &want, "mlp compacted");

    // Fashion CNN
    let config = FashionCnnConfig::default();
    let mut tensors = Tensors::from_module(&config.init::<Flex>(1, &device), "cnn");
    sparsify(&mut tensors, 0.5, 4);
    structured_zeros(&mut tensors);
    let model = tensors.load_into(config.init::<Flex>(1, &device)).unwrap();
    let shape = Shape::Fashion(config);
    let c = compact(&shape, &tensors).unwrap();
    assert_shrunk(&c, "fashion");
    let x = random(2 * 784, 5);
    let want: Vec<f32> = model
        .forward(Tensor::from_data(
            TensorData::new(x.clone(), [2, 1, 28, 28]),
            &device,
        ))
        .into_data()
        .to_vec()
        .unwrap();
    for plan in [Plan::dense(), Plan::sparse()] {
        let e = Engine::build(&shape, &c.tensors, plan).unwrap();
        assert_close(
            &e.classify(&x, 2, [28, 28]).unwrap(),
            &want,
            "fashion compacted",
        );
    }

    // ResNet
    let config = ResNetConfig {
        in_channels: 3,
        widths: [4, 8, 8, 16],
        blocks: [2, 1, 1, 1],
        n_classes: 10,
    };
    let mut tensors = Tensors::from_module(&config.init::<Flex>(1, &device), "resnet");
    sparsify(&mut tensors, 0.5, 6);
    structured_zeros(&mut tensors);
    let model = tensors.load_into(config.init::<Flex>(1, &device)).unwrap();
    let shape = Shape::ResNet(config);
    let c = compact(&shape, &tensors).unwrap();
    assert_shrunk(&c, "resnet");
    let x = random(2 * 3 * 16 * 16, 7);
    let want: Vec<f32> = model
        .forward(Tensor::from_data(
            TensorData::new(x.clone(), [2, 3, 16, 16]),
            &device,
        ))
        .into_data()
        .to_vec()
        .unwrap();
    let e = Engine::build(&shape, &c.tensors, Plan::dense()).unwrap();
    assert_close(
        &e.classify(&x, 2, [16, 16]).unwrap(),
        &want,
        "resnet compacted",
    );

    // nanoGPT: a head with zero value weights (folded) and one unused by c_proj (cut)
    for bias in [true, false] {
        let config = NanoGptConfig {
            n_head: 4,
            ..gpt_config(bias)
        };
        let mut tensors = Tensors::from_module(&config.init::<Flex>(1, &device), "gpt");
        for (name, h) in tensors.map.iter_mut() {
            if h.shape.len() == 2 {
                let mut rng = Rng::new(name.len() as u64);
                h.values
                    .iter_mut()
                    .for_each(|v| *v = 0.5 * rng.normal() as f32);
            } else if name.ends_with("bias") {
                let mut rng = Rng::new(name.len() as u64 + 7);
                h.values
                    .iter_mut()
                    .for_each(|v| *v = 0.3 * rng.normal() as f32);
            }
        }
        sparsify(&mut tensors, 0.5, 8);
        structured_zeros(&mut tensors);
        for l in 0..2 {
            let w = tensors
                .map
                .get_mut(&format!("blocks.{l}.attn.c_attn.weight"))
                .unwrap();
            for r in 0..16 {
                for d in 0..4 {
                    w.values[r * 48 + 32 + d] = 0.0; // head 0's values
                }
            }
            let p = tensors
                .map
                .get_mut(&format!("blocks.{l}.attn.c_proj.weight"))
                .unwrap();
            p.values[12 * 16..16 * 16].fill(0.0); // head 3 unused
        }
        let model = tensors.load_into(config.init::<Flex>(1, &device)).unwrap();
        let shape = Shape::Gpt(config);
        let c = compact(&shape, &tensors).unwrap();
        assert_shrunk(&c, "gpt");
        let heads = c.tensors.map["blocks.0.attn.c_attn.weight"].shape[1] / 12;
        // with a value bias the zero-value head folds into c_proj's bias; without, it outputs 0
        assert_eq!(heads, 2, "bias {bias}: heads left");
        let tokens: Vec<u32> = (0..2 * 10).map(|i| (i * 7 % 11) as u32).collect();
        let idx: Vec<i64> = tokens.iter().map(|&v| v as i64).collect();
        let want: Vec<f32> = model
            .forward(Tensor::<Flex, 2, Int>::from_data(
                TensorData::new(idx, [2, 10]),
                &device,
            ))
            .into_data()
            .to_vec()
            .unwrap();
        let e = Engine::build(&shape, &c.tensors, Plan::dense()).unwrap();
        let got = e.gpt().unwrap().forward(&tokens, 2, 10, false);
        assert_close(&got, &want, &format!("gpt compacted bias={bias}"));
    }
}
