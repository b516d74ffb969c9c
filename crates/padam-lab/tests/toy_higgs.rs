//! The Higgs-potential toy (SPEC 7): pWD ends on an exactly sparse point after reaching the
//! ring of minima, plain GD does not; trajectories match the float64 golden file.

use padam_lab::demo::toy::{self, ToyArgs, ToyRun};
use serde_json::Value;

fn default_runs() -> Vec<ToyRun> {
    let a = ToyArgs::default();
    toy::runs(a.steps, a.lr, a.lambda)
}

fn radius(w: [f64; 2]) -> f64 {
    w[0].hypot(w[1])
}

#[test]
fn pwd_reaches_the_circle_then_one_coordinate_is_exactly_zero() {
    let runs = default_runs();
    assert_eq!(runs.len(), 3);
    for run in runs.iter().filter(|r| r.lambda > 0.0) {
        assert_eq!(run.trajectory.len(), toy::DEFAULT_STEPS + 1);
        let reached = run
            .first_on_circle(0.1)
            .unwrap_or_else(|| panic!("{} never reaches |w| ~ 1", run.name));
        let first_zero = run
            .trajectory
            .iter()
            .position(|w| w[0] == 0.0 || w[1] == 0.0)
            .unwrap_or_else(|| panic!("{} never hits an exact zero", run.name));
        assert!(
            reached < first_zero,
            "{}: zero at step {first_zero} before the circle at step {reached}",
            run.name
        );
        // After reaching the ring it slides along it (never far from |w| = 1).
        for (k, w) in run.trajectory.iter().enumerate().skip(reached) {
            assert!(
                (radius(*w) - 1.0).abs() < 0.1,
                "{} step {k}: {w:?}",
                run.name
            );
        }
        // Once exactly zero, it stays exactly zero; the other coordinate does not vanish.
        for w in &run.trajectory[first_zero..] {
            assert_eq!(w[1], 0.0, "{}: {w:?}", run.name);
            assert!(w[0] > 0.9, "{}: {w:?}", run.name);
        }
        let last = run.last();
        assert_eq!(last[1], 0.0, "{}", run.name);
        assert!(last[0] != 0.0);
    }
}

#[test]
fn plain_gd_ends_on_the_circle_with_both_coordinates_nonzero() {
    let runs = default_runs();
    let gd = &runs[0];
    assert_eq!(gd.lambda, 0.0);
    assert!(gd.first_on_circle(0.1).is_some());
    let last = gd.last();
    assert!((radius(last) - 1.0).abs() < 1e-9, "{last:?}");
    assert!(last[0] > 0.5 && last[1] > 0.5, "{last:?}");
    // GD moves radially: the angle of the start is kept.
    let start = gd.trajectory[0];
    assert!((last[1] / last[0] - start[1] / start[0]).abs() < 1e-12);
}

#[test]
fn trajectories_match_the_golden_file() {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../padam/tests/data/higgs_toy.json"
    );
    let golden: Value =
        serde_json::from_str(&std::fs::read_to_string(path).expect("golden file")).unwrap();
    let golden_runs = golden["runs"].as_array().unwrap();
    assert_eq!(golden_runs.len(), 3);
    for g in golden_runs {
        let p = g["p"].as_f64().unwrap();
        let lam = g["lam"].as_f64().unwrap();
        let lr = g["lr"].as_f64().unwrap();
        let start: Vec<f64> = serde_json::from_value(g["start"].clone()).unwrap();
        assert_eq!(start, toy::START.to_vec());
        let expected: Vec<[f64; 2]> = serde_json::from_value(g["trajectory"].clone()).unwrap();
        let steps = expected.len() - 1;
        let ours = toy::runs(steps, lr, if lam == 0.0 { 0.1 } else { lam })
            .into_iter()
            .find(|r| r.lambda == lam && (lam == 0.0 || r.p == p))
            .unwrap_or_else(|| panic!("no run for p={p} lambda={lam}"));
        assert_eq!(ours.trajectory.len(), expected.len());
        for (k, (a, b)) in ours.trajectory.iter().zip(&expected).enumerate() {
            for i in 0..2 {
                assert!(
                    (a[i] - b[i]).abs() <= 1e-12,
                    "p={p} lambda={lam} step {k} coord {i}: {} vs golden {}",
                    a[i],
                    b[i]
                );
            }
        }
    }
}

#[test]
fn csv_has_header_and_one_row_per_point() {
    let runs = toy::runs(5, 0.7, 0.1);
    let csv = toy::to_csv(&runs);
    let lines: Vec<&str> = csv.lines().collect();
    assert_eq!(lines[0], "run,p,lambda,step,w1,w2");
    assert_eq!(lines.len(), 1 + 3 * 6);
    for line in &lines[1..] {
        let f: Vec<&str> = line.split(',').collect();
        assert_eq!(f.len(), 6);
        f[4].parse::<f64>().unwrap();
        f[5].parse::<f64>().unwrap();
    }
    // Values round-trip exactly.
    let w1: f64 = lines[2].split(',').nth(4).unwrap().parse().unwrap();
    assert_eq!(w1, runs[0].trajectory[1][0]);
}

#[test]
fn run_writes_the_csv_to_the_given_path() {
    let dir = std::env::temp_dir().join(format!("padam-toy-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let out = dir.join("toy.csv");
    toy::run(ToyArgs {
        steps: 20,
        out: out.clone(),
        ..ToyArgs::default()
    })
    .unwrap();
    let text = std::fs::read_to_string(&out).unwrap();
    assert_eq!(text.lines().count(), 1 + 3 * 21);
    std::fs::remove_dir_all(&dir).ok();
}
