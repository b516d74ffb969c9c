//! Optimizer state through burn's record system: save after k steps, load into a FRESH
//! optimizer, continue; the weights equal an uninterrupted run bit for bit (CPU). The record
//! carries the base optimizer's state, each tensor's step count (so p(t) and lambda(t)
//! continue), the non-adiabatic `s`, and the step / skip counters.

mod common;

use std::path::PathBuf;

use burn::optim::record::{AdaptorRecord, AdaptorRecordV1};
use burn::optim::{AdaGradConfig, Adam, Optimizer, RmsPropConfig, SimpleOptimizer};
use burn::record::{
    BinBytesRecorder, BinFileRecorder, FullPrecisionSettings, NamedMpkFileRecorder, Recorder,
};
use common::*;
use padam::{NonFinitePolicy, PAdamConfig, PSgdConfig, PWd, PWdConfig, PWdOptimizer, Schedule};

const K: u64 = 4; // steps before saving
const N: u64 = 9; // steps in all

fn temp_path(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("padam-state-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir.join("optim")
}

/// The configs under test: schedules on p and lambda (the step count matters), the
/// non-adiabatic s (state tensor), momentum/moment states.
fn padam_cfg() -> PAdamConfig {
    PAdamConfig::new()
        .with_p_schedule(Schedule::p_anneal(0.6, 6))
        .with_lambda_schedule(Schedule::Linear {
            from: 0.02,
            to: 0.1,
            steps: 7,
        })
        .with_s_rate(0.4)
}

fn psgd_cfg() -> PSgdConfig {
    PSgdConfig::new()
        .with_momentum(0.9)
        .with_nesterov(true)
        .with_p_schedule(Schedule::p_anneal(0.8, 5))
        .with_lambda(0.05)
        .with_s_rate(0.5)
}

/// Uninterrupted run of N steps.
fn straight<O: SimpleOptimizer<IB>>(mut o: PWdOptimizer<O, Mlp<B>, B>, lr: f64) -> Vec<Vec<f32>> {
    let mut m = mlp(3);
    for k in 0..N {
        let g = mlp_grads(&m, k);
        m = o.step(lr, m, g);
    }
    mlp_values(&m)
}

/// K steps, `save_load` turns the record into a record again (through a recorder), a fresh
/// optimizer loads it and takes the remaining steps.
fn interrupted<O: SimpleOptimizer<IB>>(
    make: impl Fn() -> PWdOptimizer<O, Mlp<B>, B>,
    lr: f64,
    save_load: impl Fn(
        <PWdOptimizer<O, Mlp<B>, B> as Optimizer<Mlp<B>, B>>::Record,
    ) -> <PWdOptimizer<O, Mlp<B>, B> as Optimizer<Mlp<B>, B>>::Record,
) -> Vec<Vec<f32>> {
    let mut o = make();
    let mut m = mlp(3);
    for k in 0..K {
        let g = mlp_grads(&m, k);
        m = o.step(lr, m, g);
    }
    assert_eq!(o.steps(), K as usize);
    let record = save_load(o.to_record());
    assert_eq!(record.steps, K as usize);
    drop(o);
    let mut o = make().load_record(record);
    assert_eq!(o.steps(), K as usize);
    for k in K..N {
        let g = mlp_grads(&m, k);
        m = o.step(lr, m, g);
    }
    assert_eq!(o.steps(), N as usize);
    mlp_values(&m)
}

fn assert_same(a: &[Vec<f32>], b: &[Vec<f32>], ctx: &str) {
    for (i, (x, y)) in a.iter().zip(b).enumerate() {
        assert_eq!(bits(x), bits(y), "{ctx}: parameter {i}");
    }
}

#[test]
fn padam_resumes_bitwise_through_bin_file_recorder() {
    let make = || padam_cfg().init::<B, Mlp<B>>().unwrap();
    let want = straight(make(), 1e-2);
    let path = temp_path("padam-bin");
    let got = interrupted(make, 1e-2, |rec| {
        let recorder = BinFileRecorder::<FullPrecisionSettings>::new();
        Recorder::<B>::record(&recorder, rec, path.clone()).unwrap();
        Recorder::<B>::load(&recorder, path.clone(), &device()).unwrap()
    });
    assert_same(&got, &want, "PAdam bin file");
    let _ = std::fs::remove_dir_all(path.parent().unwrap());
}

#[test]
fn padam_resumes_bitwise_through_named_mpk_file_recorder() {
    let make = || padam_cfg().init::<B, Mlp<B>>().unwrap();
    let want = straight(make(), 1e-2);
    let path = temp_path("padam-mpk");
    let got = interrupted(make, 1e-2, |rec| {
        let recorder = NamedMpkFileRecorder::<FullPrecisionSettings>::new();
        Recorder::<B>::record(&recorder, rec, path.clone()).unwrap();
        Recorder::<B>::load(&recorder, path.clone(), &device()).unwrap()
    });
    assert_same(&got, &want, "PAdam named mpk");
    let _ = std::fs::remove_dir_all(path.parent().unwrap());
}

#[test]
fn psgd_resumes_bitwise_through_bytes_recorder() {
    let make = || psgd_cfg().init::<B, Mlp<B>>().unwrap();
    let want = straight(make(), 0.05);
    let got = interrupted(make, 0.05, |rec| {
        let recorder = BinBytesRecorder::<FullPrecisionSettings>::new();
        let bytes = Recorder::<B>::record(&recorder, rec, ()).unwrap();
        assert!(!bytes.is_empty());
        Recorder::<B>::load(&recorder, bytes, &device()).unwrap()
    });
    assert_same(&got, &want, "pSGD bytes");
}

#[test]
fn wrapped_rmsprop_resumes_bitwise_with_to_record_load_record() {
    let make = || {
        PWdConfig::new()
            .with_p_schedule(Schedule::p_anneal(0.5, 5))
            .with_lambda(0.03)
            .with_s_rate(0.7)
            .init_with::<B, Mlp<B>, _>(RmsPropConfig::new().with_centered(true).build())
            .unwrap()
    };
    let want = straight(make(), 1e-2);
    let got = interrupted(make, 1e-2, |rec| rec.clone());
    assert_same(&got, &want, "RmsProp direct");
}

#[test]
fn wrapped_adagrad_resumes_bitwise_through_bin_file_recorder() {
    let make = || {
        PWdConfig::new()
            .with_p(0.7)
            .with_lambda(0.03)
            .init_with::<B, Mlp<B>, _>(AdaGradConfig::new().build())
            .unwrap()
    };
    let want = straight(make(), 1e-2);
    let path = temp_path("adagrad-bin");
    let got = interrupted(make, 1e-2, |rec| {
        let recorder = BinFileRecorder::<FullPrecisionSettings>::new();
        Recorder::<B>::record(&recorder, rec, path.clone()).unwrap();
        Recorder::<B>::load(&recorder, path.clone(), &device()).unwrap()
    });
    assert_same(&got, &want, "AdaGrad bin file");
    let _ = std::fs::remove_dir_all(path.parent().unwrap());
}

/// The resume tests can fail: continuing with a fresh optimizer (state, step count and `s`
/// lost) gives different weights; so does losing only the step count (schedules restart) or
/// only `s`.
#[test]
fn losing_any_part_of_the_state_changes_the_result() {
    let make = || padam_cfg().init::<B, Mlp<B>>().unwrap();
    let want = straight(make(), 1e-2);
    let fresh = interrupted(make, 1e-2, |mut rec| {
        rec.states.clear();
        rec
    });
    assert_ne!(fresh, want);
    // Step counts reset to 0 inside each tensor's state: p(t) restarts at 2.
    let no_steps = interrupted(make, 1e-2, |rec| {
        let mut rec = rec;
        for r in rec.states.values_mut() {
            reset_step(r);
        }
        rec
    });
    assert_ne!(no_steps, want);
    // s back to 1 everywhere.
    let no_s = interrupted(make, 1e-2, |rec| {
        let mut rec = rec;
        for r in rec.states.values_mut() {
            reset_s(r);
        }
        rec
    });
    assert_ne!(no_s, want);
}

type Rec = AdaptorRecord<PWd<Adam>, B>;

fn reset_step(r: &mut Rec) {
    match r {
        AdaptorRecord::V1(AdaptorRecordV1::Rank1(st)) => st.step = 0,
        AdaptorRecord::V1(AdaptorRecordV1::Rank2(st)) => st.step = 0,
        _ => panic!("Mlp parameters have rank 1 or 2"),
    }
}

fn reset_s(r: &mut Rec) {
    match r {
        AdaptorRecord::V1(AdaptorRecordV1::Rank1(st)) => {
            st.s = Some(st.s.take().expect("s is kept").ones_like())
        }
        AdaptorRecord::V1(AdaptorRecordV1::Rank2(st)) => {
            st.s = Some(st.s.take().expect("s is kept").ones_like())
        }
        _ => panic!("Mlp parameters have rank 1 or 2"),
    }
}

/// The skip counter survives a save / load too.
#[test]
fn skip_counter_is_part_of_the_record() {
    let cfg = PAdamConfig::new().with_non_finite(NonFinitePolicy::SkipTensor);
    let mut o = cfg.init::<B, Vector<B>>().unwrap();
    let m = vector(&[0.5, -0.5]);
    let m = step_vector(&mut o, 1e-2, m, &[f32::NAN, 1.0]);
    let _ = step_vector(&mut o, 1e-2, m, &[0.1, 1.0]);
    assert_eq!((o.steps(), o.skipped_updates()), (2, 1));
    let rec = o.to_record();
    let o2 = cfg.init::<B, Vector<B>>().unwrap().load_record(rec);
    assert_eq!((o2.steps(), o2.skipped_updates()), (2, 1));
}
