//! `padam bench step --host-profile` on the CPU. Its own test binary: the span timer is the
//! process's global subscriber and counts spans from every thread, so no other test may step
//! an optimizer in this process while it measures.

use padam_lab::backend::BackendKind;
use padam_lab::bench::{run, BenchCommand};

/// `padam bench step --host-profile`: each row carries the host time of padam's step spans per
/// timed step, counted once per step for the whole-step spans and once per tensor for the
/// fused step's (the CPU's fused step has `fused.prepare` and `fused.record`; the queue, launch
/// and allocation spans are the CUDA kernel's); a burn optimizer's row has only the bench's own
/// spans.
#[test]
fn bench_step_host_profile_counts_the_step_spans() {
    use padam_lab::bench::StepArgs;
    let dir = std::env::temp_dir().join(format!("padam-bench-profile-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let json = dir.join("step.json");
    let iters = 3;
    let args = StepArgs {
        backend: BackendKind::Cpu,
        shapes: vec!["resnet18".into()],
        optimizers: vec![
            "padam_tensor_ops".into(),
            "burn_sgd".into(),
            "padam_unchecked".into(),
        ],
        iters,
        warmup: 1,
        json: Some(json.clone()),
        host_profile: true,
    };
    run(BenchCommand::Step(args)).expect("the profiled rows run on the CPU");
    let rows: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    let spans = |row: usize| -> Vec<(String, f64, f64)> {
        rows[row]["host_spans"]
            .as_array()
            .expect("host_spans with --host-profile")
            .iter()
            .map(|h| {
                (
                    h["name"].as_str().unwrap().to_string(),
                    h["calls_per_step"].as_f64().unwrap(),
                    h["ms_per_step"].as_f64().unwrap(),
                )
            })
            .collect()
    };
    let padam = spans(0);
    let names: Vec<&str> = padam.iter().map(|(n, _, _)| n.as_str()).collect();
    assert_eq!(
        names,
        ["bench.step", "bench.sync", "step.read", "step.walk"],
        "{padam:?}"
    );
    for (name, calls, ms) in &padam {
        assert_eq!(*calls, 1.0, "{name}: once per step");
        assert!(*ms > 0.0, "{name}");
    }
    let step_ms = padam[0].2;
    let walk_ms = padam[3].2;
    assert!(walk_ms <= step_ms, "the walk is inside the step: {padam:?}");
    let sgd: Vec<String> = spans(1).into_iter().map(|(n, _, _)| n).collect();
    assert_eq!(sgd, ["bench.step", "bench.sync"]);
    let fused = spans(2);
    let names: Vec<&str> = fused.iter().map(|(n, _, _)| n.as_str()).collect();
    assert_eq!(
        names,
        [
            "bench.step",
            "bench.sync",
            "fused.prepare",
            "fused.record",
            "step.walk"
        ],
        "{fused:?}"
    );
    let tensors = padam_lab::bench::resnet18_shapes().len() as f64;
    for (name, calls, _) in &fused {
        let want = if name.starts_with("fused.") {
            tensors
        } else {
            1.0
        };
        assert_eq!(*calls, want, "{name}");
    }
    std::fs::remove_dir_all(&dir).ok();
}
