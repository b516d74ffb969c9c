//! pWD wrapped around other burn optimizers (SPEC 3): RmsProp, AdaGrad, Muon, Adam, Adan.
//!
//! Each step, the bare base optimizer takes the same step from the same weights and state
//! (a clone of the wrapped module: same parameter ids, and these bases' states depend on the
//! gradients only), giving `w_hat`. The wrapped optimizer must give
//! `w_new = decay::apply(w_hat, w_old)` bit for bit, and that must be
//! `w_hat * reference::factor(w_old)` (f64) to f32 rounding.

mod common;

use burn::module::AutodiffModule;
use burn::nn::Linear;
use burn::optim::adaptor::OptimizerAdaptor;
use burn::optim::{
    AdaGradConfig, AdamConfig, AdanConfig, GradientsParams, MuonConfig, Optimizer, RmsPropConfig,
    SimpleOptimizer,
};
use common::*;
use padam::decay::{self, DecayStep};
use padam::{reference, PWd, PWdConfig};

fn linear_values(m: &Linear<B>) -> Vec<Vec<f32>> {
    let mut out = vec![read(m.weight.val())];
    if let Some(b) = &m.bias {
        out.push(read(b.val()));
    }
    out
}

struct Setup<M> {
    module: M,
    grads: fn(&M, u64) -> GradientsParams,
    values: fn(&M) -> Vec<Vec<f32>>,
}

fn mlp_setup() -> Setup<Mlp<B>> {
    Setup {
        module: mlp(9),
        grads: mlp_grads,
        values: mlp_values,
    }
}

fn linear_setup() -> Setup<Linear<B>> {
    Setup {
        module: linear_no_bias(9, 6, 4),
        grads: linear_grads,
        values: linear_values,
    }
}

/// Run base and wrapped side by side; returns how many weights were checked.
fn check_wrapper<O, M>(name: &str, base: O, setup: Setup<M>, p: f64, lambda: f64) -> usize
where
    O: SimpleOptimizer<IB> + Clone,
    M: AutodiffModule<B> + Clone,
{
    let lr = 1e-2;
    let mut wrapped = PWdConfig::new()
        .with_p(p)
        .with_lambda(lambda)
        .init_with::<B, M, O>(base.clone())
        .unwrap();
    let mut bare: OptimizerAdaptor<O, M, B> = OptimizerAdaptor::from(base);
    let st = DecayStep {
        lr,
        p,
        lambda,
        lambda2: 0.0,
    };
    let d = DecayModel::new(p, lambda);
    let mut m = setup.module;
    let mut checked = 0;
    let mut moved = false;
    for k in 0..5 {
        let w_old = (setup.values)(&m);
        let w_hat = (setup.values)(&bare.step(lr, m.clone(), (setup.grads)(&m, k)));
        m = wrapped.step(lr, m.clone(), (setup.grads)(&m, k));
        let w_new = (setup.values)(&m);
        for (i, ((old, hat), new)) in w_old.iter().zip(&w_hat).zip(&w_new).enumerate() {
            let ctx = format!("{name} p={p} step {k} param {i}");
            moved |= hat != old;
            // Bit for bit the shared decay step applied to the base's w_hat.
            let want = read(decay::apply(tensor1::<IB>(hat), tensor1::<IB>(old), &st));
            assert_eq!(bits(new), bits(&want), "{ctx}");
            // And the f64 reference factor to f32 rounding.
            let exact = |v: &[f32]| v.iter().map(|&x| F32.exact(x as f64)).collect::<Vec<_>>();
            let model = model_decay_full(&F32, &exact(hat), &exact(old), &mut [], lr, &d);
            for (j, w) in model.w.iter().enumerate() {
                let r = hat[j] as f64 * reference::factor(old[j] as f64, lr, p, lambda, 0.0, None);
                assert!((w.v - r).abs() <= 1e-12 * r.abs());
            }
            assert_decay_within(new, &model, &ctx);
            // Exact zeros stay zero for p < 2.
            if p < 2.0 {
                for (j, o) in old.iter().enumerate() {
                    if *o == 0.0 {
                        assert_eq!(new[j], 0.0, "{ctx}: zero weight {j} moved");
                    }
                }
            }
            checked += new.len();
        }
    }
    assert!(moved, "{name}: the base optimizer must move the weights");
    checked
}

#[test]
fn pwd_around_rmsprop() {
    for p in [0.5, 1.0, 2.0, 3.0] {
        check_wrapper(
            "RmsProp",
            RmsPropConfig::new().build(),
            mlp_setup(),
            p,
            0.05,
        );
    }
    let centered = RmsPropConfig::new()
        .with_centered(true)
        .with_momentum(0.5)
        .build();
    check_wrapper("RmsProp centered", centered, mlp_setup(), 0.8, 0.05);
}

#[test]
fn pwd_around_adagrad() {
    for p in [0.5, 1.0, 2.0, 3.0] {
        check_wrapper(
            "AdaGrad",
            AdaGradConfig::new().build(),
            mlp_setup(),
            p,
            0.05,
        );
    }
}

#[test]
fn pwd_around_muon() {
    for p in [0.5, 1.0, 2.0, 3.0] {
        let n = check_wrapper(
            "Muon",
            MuonConfig::new().build::<IB>(),
            linear_setup(),
            p,
            0.05,
        );
        assert_eq!(n, 5 * 24);
    }
}

#[test]
fn pwd_around_adam() {
    for p in [0.5, 1.0, 2.0, 3.0] {
        check_wrapper(
            "Adam",
            AdamConfig::new().with_epsilon(1e-8).build(),
            mlp_setup(),
            p,
            0.05,
        );
    }
}

#[test]
fn pwd_around_adan() {
    check_wrapper("Adan", AdanConfig::new().build(), mlp_setup(), 0.7, 0.05);
}

/// `PWd<O>` is itself a `SimpleOptimizer`: inside burn's own `OptimizerAdaptor` it gives the
/// same weights as `PWdOptimizer` (default selection and policy), bit for bit.
#[test]
fn pwd_simple_optimizer_inside_burn_adaptor_equals_pwd_optimizer() {
    let cfg = PWdConfig::new().with_p(0.7).with_lambda(0.05);
    let mut ours = cfg
        .init_with::<B, Mlp<B>, _>(RmsPropConfig::new().build())
        .unwrap();
    let pwd = PWd::new(RmsPropConfig::new().build(), cfg.decay.clone()).unwrap();
    assert_eq!(pwd.decay(), &cfg.decay);
    let mut adaptor: OptimizerAdaptor<_, Mlp<B>, B> = OptimizerAdaptor::from(pwd);
    let (mut a, mut b) = (mlp(5), mlp(5));
    for k in 0..4 {
        let (ga, gb) = (mlp_grads(&a, k), mlp_grads(&b, k));
        a = ours.step(1e-2, a, ga);
        b = adaptor.step(1e-2, b, gb);
        for (x, y) in mlp_values(&a).iter().zip(mlp_values(&b)) {
            assert_eq!(bits(x), bits(&y), "step {k}");
        }
    }
}

/// An invalid decay is refused when wrapping, whichever the base.
#[test]
fn pwd_wrapping_validates_decay() {
    let err = PWdConfig::new()
        .with_p(-1.0)
        .init_with::<B, Mlp<B>, _>(AdaGradConfig::new().build())
        .err()
        .expect("p = -1 must be refused");
    assert_eq!(err.field, "p");
    assert!(PWd::new(
        RmsPropConfig::new().build(),
        PWdConfig::new().with_lambda(-0.5).decay
    )
    .is_err());
}
