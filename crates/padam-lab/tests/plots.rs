//! `padam plot`: every figure is written as PNG and SVG from run directories, the PNGs decode
//! and are not blank, and bad run directories are errors naming the file and line.

use std::path::{Path, PathBuf};

use padam_lab::runs::plot::{self, PlotArgs};

mod common;
use common::tmp;

/// A run directory with `evals` synthetic metrics lines.
fn synthetic_run(dir: &Path, p: Option<f64>, zero_end: f64) {
    std::fs::create_dir_all(dir).unwrap();
    let mut text = String::new();
    for i in 1..=10u32 {
        let t = f64::from(i) / 10.0;
        let zeros = zero_end * t;
        let counts: Vec<u64> = (0..140)
            .map(|b| if (60..110).contains(&b) { 2 } else { 0 })
            .collect();
        let line = serde_json::json!({
            "step": i * 100,
            "epoch": f64::from(i),
            "train_loss": 2.0 / (1.0 + t),
            "val_loss": 2.1 / (1.0 + t),
            "val_accuracy": 0.5 + 0.4 * t,
            "p": p,
            "lambda": p.map(|_| 1e-2),
            "zero_fraction": zeros,
            "below_fraction": zeros,
            "tensors": [
                {"path": "fc1.weight", "numel": 800, "zeros": (800.0 * zeros) as u64, "zero_fraction": zeros},
                {"path": "fc1.bias", "numel": 200, "zeros": 0, "zero_fraction": 0.0}
            ],
            "magnitudes": {
                "log10_edges": (0..=140).map(|e| -12.0 + f64::from(e) / 10.0).collect::<Vec<f64>>(),
                "counts": counts,
                "zeros": (1000.0 * zeros) as u64,
                "underflow": 0,
                "overflow": 0
            }
        });
        text.push_str(&line.to_string());
        text.push('\n');
    }
    std::fs::write(dir.join("metrics.jsonl"), text).unwrap();
}

fn not_blank(png: &Path, has_data: bool) {
    let img = image::open(png).unwrap().to_rgb8();
    assert_eq!(img.dimensions(), (900, 560), "{}", png.display());
    let dark = img
        .pixels()
        .filter(|p| p.0.iter().all(|c| *c < 100))
        .count();
    let colored = img
        .pixels()
        .filter(|p| p.0.iter().max().unwrap() - p.0.iter().min().unwrap() > 80)
        .count();
    assert!(
        dark > 2_000,
        "{}: {dark} dark pixels (axes, text)",
        png.display()
    );
    if has_data {
        assert!(
            colored > 300,
            "{}: {colored} coloured pixels (data)",
            png.display()
        );
    }
}

#[test]
fn every_figure_is_written_and_drawn() {
    let root = tmp("all");
    let (a, b) = (root.join("adamw"), root.join("padam"));
    synthetic_run(&a, None, 0.0);
    synthetic_run(&b, Some(0.8), 0.9);
    let out = root.join("figs");
    let written = plot::run(&PlotArgs {
        runs: vec![a, b],
        out: out.clone(),
        format: vec!["png".into(), "svg".into()],
        score: plot::Score::Auto,
    })
    .unwrap();
    for name in [
        "loss",
        "accuracy",
        "sparsity",
        "magnitude-cdf",
        "tensors-adamw",
        "tensors-padam",
        "tradeoff",
    ] {
        let png = out.join(format!("{name}.png"));
        let svg = out.join(format!("{name}.svg"));
        assert!(written.contains(&png) && written.contains(&svg), "{name}");
        // AdamW has no zeros: its per-tensor bars are all empty
        not_blank(&png, name != "tensors-adamw");
        let text = std::fs::read_to_string(&svg).unwrap();
        assert!(
            text.starts_with("<svg") && text.contains("</svg>"),
            "{name}.svg"
        );
    }
    // labels and units are on the figures
    let cdf = std::fs::read_to_string(out.join("magnitude-cdf.svg")).unwrap();
    assert!(cdf.contains("|w| (log scale)"));
    assert!(
        cdf.contains("90.0% exactly 0"),
        "legend states the exact zeros"
    );
    assert!(cdf.contains("(p·λ)^(1/(2-p))"), "suppression scale marked");
    let acc = std::fs::read_to_string(out.join("accuracy.svg")).unwrap();
    assert!(acc.contains("accuracy (%)") && acc.contains("optimizer step"));
    let _ = std::fs::remove_dir_all(&root);
}

#[test]
fn bad_run_directories_are_errors_naming_the_file() {
    let root = tmp("bad");
    let args = |d: PathBuf| PlotArgs {
        runs: vec![d],
        out: root.join("figs"),
        format: vec!["png".into()],
        score: plot::Score::Auto,
    };
    let e = plot::run(&args(root.join("missing")))
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("missing") && e.contains("not a run directory"),
        "{e}"
    );
    let bad = root.join("bad");
    std::fs::create_dir_all(&bad).unwrap();
    let e = format!("{:#}", plot::run(&args(bad.clone())).unwrap_err());
    assert!(e.contains("metrics.jsonl"), "{e}");
    std::fs::write(bad.join("metrics.jsonl"), "{\"step\": 1}\nnot json\n").unwrap();
    let e = format!("{:#}", plot::run(&args(bad.clone())).unwrap_err());
    assert!(e.contains("metrics.jsonl:2"), "{e}");
    let good = root.join("good");
    synthetic_run(&good, None, 0.0);
    let e = format!(
        "{:#}",
        plot::run(&PlotArgs {
            format: vec!["gif".into()],
            ..args(good)
        })
        .unwrap_err()
    );
    assert!(e.contains("unknown format `gif`"), "{e}");
    let _ = std::fs::remove_dir_all(&root);
}

#[test]
fn archived_runs_are_read_from_gzipped_metrics() {
    use std::io::Write;
    let root = tmp("gz");
    let plain = root.join("plain");
    synthetic_run(&plain, Some(0.8), 0.9);
    let archived = root.join("archived");
    std::fs::create_dir_all(&archived).unwrap();
    let text = std::fs::read(plain.join("metrics.jsonl")).unwrap();
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    gz.write_all(&text).unwrap();
    std::fs::write(archived.join("metrics.jsonl.gz"), gz.finish().unwrap()).unwrap();
    let (a, b) = (
        plot::Run::load(&plain).unwrap(),
        plot::Run::load(&archived).unwrap(),
    );
    assert_eq!(a.lines, b.lines);
    assert_eq!(
        padam_lab::train::metrics_line_at(&archived, 500),
        padam_lab::train::metrics_line_at(&plain, 500)
    );
    assert!(padam_lab::train::metrics_line_at(&archived, 500).is_some());
    let out = root.join("figs");
    plot::run(&PlotArgs {
        runs: vec![archived.clone()],
        out: out.clone(),
        format: vec!["png".into()],
        score: plot::Score::Auto,
    })
    .unwrap();
    assert!(out.join("accuracy.png").exists());
    // A plain file, as a run that trains again writes, is the one read.
    std::fs::write(archived.join("metrics.jsonl"), "{\"step\": 7}\n").unwrap();
    assert_eq!(plot::Run::load(&archived).unwrap().lines.len(), 1);
    // A damaged archive is an error naming it.
    let damaged = root.join("damaged");
    std::fs::create_dir_all(&damaged).unwrap();
    std::fs::write(damaged.join("metrics.jsonl.gz"), b"not gzip").unwrap();
    let e = format!("{:#}", plot::Run::load(&damaged).unwrap_err());
    assert!(e.contains("metrics.jsonl.gz"), "{e}");
    let _ = std::fs::remove_dir_all(&root);
}

/// `--score` picks the trade-off figure's axis; a run without that score is an error naming it.
#[test]
fn tradeoff_score_is_the_one_asked_for_or_an_error_naming_the_run() {
    let root = tmp("score");
    let (sparse, lm) = (root.join("sparse"), root.join("lm"));
    synthetic_run(&sparse, Some(0.8), 0.9);
    synthetic_run(&lm, None, 0.0);
    // A language model's run: loss only.
    let metrics = lm.join("metrics.jsonl");
    let text: String = std::fs::read_to_string(&metrics)
        .unwrap()
        .lines()
        .map(|l| {
            let mut v: serde_json::Value = serde_json::from_str(l).unwrap();
            v.as_object_mut().unwrap().remove("val_accuracy");
            format!("{v}\n")
        })
        .collect();
    std::fs::write(&metrics, text).unwrap();
    let args = |score| PlotArgs {
        runs: vec![sparse.clone(), lm.clone()],
        out: root.join("figs"),
        format: vec!["svg".into()],
        score,
    };
    let e = format!("{:#}", plot::run(&args(plot::Score::Accuracy)).unwrap_err());
    assert!(e.contains("lm") && e.contains("val_accuracy"), "{e}");
    plot::run(&args(plot::Score::Loss)).unwrap();
    let svg = std::fs::read_to_string(root.join("figs/tradeoff.svg")).unwrap();
    assert!(svg.contains("validation loss vs sparsity"), "the loss axis");
    assert!(
        svg.contains("(90.0%, 1.0500)"),
        "the sparse run's final loss"
    );
    let _ = std::fs::remove_dir_all(&root);
}
