//! `padam bench verify` is the GPU correctness check; here it runs on the CPU backend so the
//! check itself (every case of the library's table `padam::cases::cases()` vs the float64
//! reference) is exercised in CI.

use padam_lab::backend::BackendKind;
use padam_lab::bench::{run, BenchCommand, VerifyArgs};

fn verify_passes_on(backend: BackendKind) {
    let args = VerifyArgs {
        backend,
        numel: 512,
        steps: 3,
        seed: 11,
    };
    run(BenchCommand::Verify(args)).expect("every optimizer matches the float64 reference");
}

#[test]
fn bench_verify_passes_on_cpu() {
    verify_passes_on(BackendKind::Cpu);
}

/// burn's LibTorch backend (a `--features tch` build; here libtorch's CPU kernels).
#[cfg(feature = "tch")]
#[test]
fn bench_verify_passes_on_tch() {
    verify_passes_on(BackendKind::Tch);
}

/// The command prints one row per case of the table (more where a case runs on two paths), so
/// a run on any backend covers exactly the cases the CPU tests cover.
#[test]
fn bench_verify_prints_a_row_for_every_case_of_the_table() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_padam"))
        .args([
            "bench", "verify", "--numel", "512", "--steps", "3", "--seed", "11",
        ])
        .output()
        .expect("padam runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let rows: Vec<&str> = stdout
        .lines()
        .filter(|l| l.ends_with("  ok") || l.ends_with("  FAIL"))
        .collect();
    let table = padam::cases::cases();
    for case in &table {
        let prefix = format!("{} [", case.name);
        assert!(
            rows.iter().any(|r| r.starts_with(&prefix)),
            "no row for case `{}`:\n{stdout}",
            case.name
        );
    }
    assert!(rows.len() >= table.len(), "{stdout}");
    assert!(
        stdout.contains(&format!("{} passed, 0 failed", rows.len())),
        "{stdout}"
    );
}

/// A backend this build lacks is an error that says how to build it.
#[test]
fn backends_missing_from_the_build_are_clear_errors() {
    let missing = [
        (BackendKind::Cuda, cfg!(feature = "cuda"), "--features cuda"),
        (BackendKind::Tch, cfg!(feature = "tch"), "build-tch.sh"),
    ];
    for (backend, built, how) in missing {
        if built {
            continue;
        }
        let args = VerifyArgs {
            backend,
            numel: 8,
            steps: 1,
            seed: 1,
        };
        let err = run(BenchCommand::Verify(args)).unwrap_err().to_string();
        assert!(err.contains(how), "{err}");
    }
}

/// `padam bench step` on the CPU: every row it offers runs and lands in the JSON, with a
/// positive time; an unknown row is refused with the list of known ones.
#[test]
fn bench_step_times_every_row_on_cpu() {
    use padam_lab::bench::StepArgs;
    let dir = std::env::temp_dir().join(format!("padam-bench-step-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let json = dir.join("step.json");
    let optimizers: Vec<String> = [
        "burn_adamw",
        "padam",
        "padam_deferred",
        "padam_unchecked",
        "padam_tensor_ops",
        "psgd_momentum",
        "burn_sgd",
        "walk_only",
    ]
    .map(String::from)
    .to_vec();
    let args = |optimizers: Vec<String>| StepArgs {
        backend: BackendKind::Cpu,
        shapes: vec!["resnet18".into()],
        optimizers,
        iters: 1,
        warmup: 1,
        json: Some(json.clone()),
        host_profile: false,
    };
    run(BenchCommand::Step(args(optimizers.clone()))).expect("every row runs on the CPU");
    let rows: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    let rows = rows.as_array().unwrap();
    let names: Vec<&str> = rows
        .iter()
        .map(|r| r["optimizer"].as_str().unwrap())
        .collect();
    assert_eq!(names, optimizers);
    let params: usize = padam_lab::bench::resnet18_shapes()
        .iter()
        .map(|s| s.iter().product::<usize>())
        .sum();
    for r in rows {
        assert!(r["ms"].as_f64().unwrap() > 0.0, "{r}");
        assert_eq!(r["params"], params, "{r}");
    }
    let err = run(BenchCommand::Step(args(vec!["adamz".into()])))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("`adamz`") && err.contains("walk_only"),
        "{err}"
    );
    std::fs::remove_dir_all(&dir).ok();
}
