//! The image and language models: exact parameter counts, output shapes on tiny batches,
//! seeding, causality of the GPT, and that a backward pass reaches every trainable parameter.

use burn::backend::{Autodiff, Flex};
use burn::module::{AutodiffModule, Module, ModuleVisitor, Param};
use burn::tensor::backend::Backend;
use burn::tensor::{Distribution, Int, Tensor, TensorData};
use padam_lab::models::fashion_cnn::{FashionCnn, FashionCnnConfig};
use padam_lab::models::nanogpt::{embed_tokens, NanoGpt, NanoGptConfig, ONE_HOT_MAX_VOCAB};
use padam_lab::models::resnet::{trainable_params, ResNet, ResNetConfig};

type Ad = Autodiff<Flex>;

/// Scalars in parameters that require gradients (on an autodiff backend: the trainable ones).
fn grad_params<B: Backend, M: Module<B>>(module: &M) -> usize {
    struct Count(usize);
    impl<B: Backend> ModuleVisitor<B> for Count {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
            if param.val().is_require_grad() {
                self.0 += param.val().shape().num_elements();
            }
        }
    }
    let mut c = Count(0);
    module.visit(&mut c);
    c.0
}

#[test]
fn fashion_cnn_count_shape_and_seed() {
    let device = Default::default();
    let config = FashionCnnConfig::default();
    assert_eq!(config.param_count(), 421_642);
    let model: FashionCnn<Flex> = config.init(1, &device);
    assert_eq!(model.num_params(), 421_642);
    assert_eq!(trainable_params::<Flex, _>(&model), 421_642);
    let x = Tensor::<Flex, 4>::random([2, 1, 28, 28], Distribution::Default, &device);
    let y = model.forward(x.clone());
    assert_eq!(y.dims(), [2, 10]);
    let same: FashionCnn<Flex> = config.init(1, &device);
    let other: FashionCnn<Flex> = config.init(2, &device);
    assert_eq!(y.clone().into_data(), same.forward(x.clone()).into_data());
    assert_ne!(y.into_data(), other.forward(x).into_data());
}

#[test]
fn fashion_cnn_backward_reaches_all_parameters() {
    let device = Default::default();
    let model: FashionCnn<Ad> = FashionCnnConfig::default().init(3, &device);
    assert_eq!(grad_params::<Ad, _>(&model), 421_642);
    let x = Tensor::<Ad, 4>::random([2, 1, 28, 28], Distribution::Default, &device);
    let loss = model.forward(x).powi_scalar(2).mean();
    let grads = loss.backward();
    let g = model.conv1.weight.grad(&grads).expect("conv1 gradient");
    assert_eq!(g.dims(), [32, 1, 3, 3]);
    assert!(model.fc2.weight.grad(&grads).is_some());
    // The inference model has the same outputs shape and no dropout.
    let valid = model.valid();
    let x = Tensor::<Flex, 4>::zeros([1, 1, 28, 28], &device);
    assert_eq!(valid.forward(x).dims(), [1, 10]);
}

#[test]
fn resnet18_count_and_shapes() {
    let device = Default::default();
    let config = ResNetConfig::resnet18(10);
    assert_eq!(config, ResNetConfig::default());
    assert_eq!(config.param_count(), 11_173_962);
    let model: ResNet<Flex> = config.init(7, &device);
    assert_eq!(trainable_params::<Flex, _>(&model), 11_173_962);
    // burn's num_params() also counts the running mean and variance of the 4,800 BN channels.
    assert_eq!(model.num_params(), 11_173_962 + 2 * 4_800);
    assert_eq!(model.layer1.len(), 2);
    assert!(model.layer1[0].downsample.is_none());
    assert!(model.layer2[0].downsample.is_some());
    assert!(model.layer2[1].downsample.is_none());
    let x = Tensor::<Flex, 4>::random([2, 3, 32, 32], Distribution::Default, &device);
    assert_eq!(model.forward(x).dims(), [2, 10]);
}

#[test]
fn resnet_training_mode_backward() {
    // A narrow ResNet keeps this fast; the structure is the same as ResNet-18.
    let device = Default::default();
    let config = ResNetConfig {
        in_channels: 3,
        widths: [4, 8, 8, 16],
        blocks: [1, 1, 1, 1],
        n_classes: 10,
    };
    let model: ResNet<Ad> = config.init(1, &device);
    assert_eq!(trainable_params::<Ad, _>(&model), config.param_count());
    assert_eq!(grad_params::<Ad, _>(&model), config.param_count());
    let x = Tensor::<Ad, 4>::random([2, 3, 16, 16], Distribution::Default, &device);
    let y = model.forward(x);
    assert_eq!(y.dims(), [2, 10]);
    let grads = y.powi_scalar(2).mean().backward();
    assert!(model.conv1.weight.grad(&grads).is_some());
    assert!(model.layer4[0].bn2.gamma.grad(&grads).is_some());
    let d = model.layer3[0]
        .downsample
        .as_ref()
        .expect("stride-2 shortcut");
    assert!(d.conv.weight.grad(&grads).is_some());
}

#[test]
fn nanogpt_count_shape_and_loss() {
    let device = Default::default();
    let config = NanoGptConfig::default();
    assert_eq!(config.param_count(), 10_795_776);
    let model: NanoGpt<Flex> = config.init(0, &device);
    assert_eq!(model.num_params(), 10_795_776);
    let idx = Tensor::<Flex, 2, Int>::from_data(
        TensorData::new((0..16).map(|i| (i * 7) % 65).collect::<Vec<i64>>(), [2, 8]),
        &device,
    );
    let logits = model.forward(idx.clone());
    assert_eq!(logits.dims(), [2, 8, 65]);
    let (_, loss) = model.forward_loss(idx.clone(), idx);
    let loss: f32 = loss.into_scalar();
    // Small initial weights: close to uniform over 65 characters.
    assert!((loss - 65f32.ln()).abs() < 0.3, "initial loss {loss}");

    // Without biases (nanoGPT `bias = False`) the count is exact too.
    let no_bias = NanoGptConfig {
        bias: false,
        ..config
    };
    let m: NanoGpt<Flex> = no_bias.init(0, &device);
    assert_eq!(m.num_params(), no_bias.param_count());
}

#[test]
fn nanogpt_is_causal_and_trains() {
    let device = Default::default();
    let config = NanoGptConfig {
        vocab_size: 11,
        block_size: 6,
        n_layer: 2,
        n_head: 2,
        n_embd: 8,
        dropout: 0.0,
        bias: true,
        tie_embeddings: false,
    };
    let model: NanoGpt<Flex> = config.init(4, &device);
    assert_eq!(model.num_params(), config.param_count());
    let a = Tensor::<Flex, 2, Int>::from_data(
        TensorData::new(vec![1i64, 2, 3, 4, 5, 6], [1, 6]),
        &device,
    );
    let b = Tensor::<Flex, 2, Int>::from_data(
        TensorData::new(vec![1i64, 2, 3, 9, 0, 10], [1, 6]),
        &device,
    );
    let la: Vec<f32> = model.forward(a).into_data().to_vec().unwrap();
    let lb: Vec<f32> = model.forward(b).into_data().to_vec().unwrap();
    let v = config.vocab_size;
    for (x, y) in la[..3 * v].iter().zip(&lb[..3 * v]) {
        assert!(
            (x - y).abs() < 1e-5,
            "earlier positions changed: {x} vs {y}"
        );
    }
    assert!(la[3 * v..]
        .iter()
        .zip(&lb[3 * v..])
        .any(|(x, y)| (x - y).abs() > 1e-4));

    let with_dropout = NanoGptConfig {
        dropout: 0.2,
        ..config
    };
    let model: NanoGpt<Ad> = with_dropout.init(4, &device);
    assert_eq!(grad_params::<Ad, _>(&model), with_dropout.param_count());
    let idx = Tensor::<Ad, 2, Int>::from_data(
        TensorData::new(vec![1i64, 2, 3, 4, 5, 6, 7, 8], [2, 4]),
        &device,
    );
    let (logits, loss) = model.forward_loss(idx.clone(), idx);
    assert_eq!(logits.dims(), [2, 4, 11]);
    let grads = loss.backward();
    assert!(model.wte.weight.grad(&grads).is_some());
    assert!(model.wpe.weight.grad(&grads).is_some());
    assert!(model.blocks[1].attn.c_attn.weight.grad(&grads).is_some());
    assert!(model.lm_head.as_ref().unwrap().bias.is_none());
}

/// Tied embeddings (nanoGPT's): no head of its own, the logits are `ln_f(x) @ wte^T`, and the
/// token embedding's gradient gathers both uses. nanoGPT's `shakespeare_char` shape (no biases,
/// tied) has nanoGPT's parameter count: 10.65M without the position embeddings.
#[test]
fn nanogpt_ties_the_head_to_the_token_embedding() {
    let device = Default::default();
    let config = NanoGptConfig {
        vocab_size: 11,
        block_size: 8,
        n_layer: 2,
        n_head: 2,
        n_embd: 8,
        dropout: 0.0,
        bias: false,
        tie_embeddings: true,
    };
    let model: NanoGpt<Ad> = config.init(4, &device);
    assert!(model.lm_head.is_none());
    assert_eq!(model.num_params(), config.param_count());
    let untied = NanoGptConfig {
        tie_embeddings: false,
        ..config.clone()
    };
    assert_eq!(untied.param_count() - config.param_count(), 11 * 8);
    let idx = Tensor::<Ad, 2, Int>::from_data(
        TensorData::new(vec![1i64, 2, 3, 4, 5, 6, 7, 8], [2, 4]),
        &device,
    );
    let logits = model.forward(idx.clone());
    // The head by hand: the final LayerNorm's output times the embedding matrix, transposed.
    let mut x = model
        .wte
        .weight
        .val()
        .select(0, idx.clone().reshape([8]))
        .reshape([2, 4, 8])
        + model.wpe.weight.val().narrow(0, 0, 4).unsqueeze::<3>();
    for block in &model.blocks {
        x = block.forward(x);
    }
    let by_hand = model
        .ln_f
        .forward(x)
        .matmul(model.wte.weight.val().transpose().unsqueeze());
    let a: Vec<f32> = logits.clone().into_data().to_vec().unwrap();
    let b: Vec<f32> = by_hand.into_data().to_vec().unwrap();
    for (x, y) in a.iter().zip(&b) {
        assert!((x - y).abs() <= 1e-5 * (1.0 + y.abs()), "{x} vs {y}");
    }
    let loss = logits.sum();
    let grads = loss.backward();
    assert!(model.wte.weight.grad(&grads).is_some());
    let nanogpt = NanoGptConfig {
        vocab_size: 65,
        bias: false,
        tie_embeddings: true,
        ..NanoGptConfig::default()
    };
    assert_eq!(nanogpt.param_count(), 10_745_088);
    assert_eq!(nanogpt.param_count() - 256 * 384, 10_646_784); // nanoGPT prints 10.65M
}

/// `embed_tokens` against a float64 reference, on both sides of `ONE_HOT_MAX_VOCAB`: the
/// forward picks exactly the rows of the ids, and the weight's gradient of `sum(out * r)` is,
/// per row, the sum of `r` over the positions holding that id (repeated ids included).
#[test]
fn token_lookup_matches_a_float64_reference() {
    let device = Default::default();
    for vocab in [65, ONE_HOT_MAX_VOCAB + 44] {
        let (batch, time, width) = (3, 40, 5);
        let weight =
            Tensor::<Ad, 2>::random([vocab, width], Distribution::Normal(0.0, 1.0), &device)
                .require_grad();
        // Few distinct ids, each repeated: the case where a scatter-add backward collides.
        let ids: Vec<i64> = (0..batch * time)
            .map(|i| ((i * i + 3 * i) % 13) as i64)
            .collect();
        let idx =
            Tensor::<Ad, 2, Int>::from_data(TensorData::new(ids.clone(), [batch, time]), &device);
        let r = Tensor::<Ad, 3>::random(
            [batch, time, width],
            Distribution::Normal(0.0, 1.0),
            &device,
        );
        let out = embed_tokens(weight.clone(), idx);
        assert_eq!(out.dims(), [batch, time, width]);
        let grads = (out.clone() * r.clone()).sum().backward();

        let w: Vec<f32> = weight.clone().into_data().to_vec().unwrap();
        let o: Vec<f32> = out.into_data().to_vec().unwrap();
        let rv: Vec<f32> = r.into_data().to_vec().unwrap();
        let g: Vec<f32> = weight.grad(&grads).unwrap().into_data().to_vec().unwrap();
        let mut want = vec![0f64; vocab * width];
        for (i, &id) in ids.iter().enumerate() {
            let id = id as usize;
            for c in 0..width {
                assert_eq!(
                    o[i * width + c],
                    w[id * width + c],
                    "vocab {vocab}: forward row {i}"
                );
                want[id * width + c] += f64::from(rv[i * width + c]);
            }
        }
        for (k, (got, want)) in g.iter().zip(&want).enumerate() {
            assert!(
                (f64::from(*got) - want).abs() <= 1e-5 * (1.0 + want.abs()),
                "vocab {vocab}: gradient [{}, {}] {got} vs {want}",
                k / width,
                k % width
            );
        }
    }
}

#[test]
#[should_panic(expected = "longer than the context")]
fn nanogpt_rejects_long_sequences() {
    let config = NanoGptConfig {
        vocab_size: 5,
        block_size: 2,
        n_layer: 1,
        n_head: 1,
        n_embd: 4,
        dropout: 0.0,
        bias: false,
        tie_embeddings: false,
    };
    let device = Default::default();
    let model: NanoGpt<Flex> = config.init(0, &device);
    let idx = Tensor::<Flex, 2, Int>::zeros([1, 3], &device);
    let _ = model.forward(idx);
}
