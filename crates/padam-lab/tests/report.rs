//! `padam report`: the HTML file of two real (tiny) runs is rendered by a headless Chromium,
//! and every inlined figure must have been decoded by the browser (a script in the report
//! counts the `<img>` elements with a natural width > 0); a screenshot must not be blank.
//! Without Chromium the test says so and passes, unless `PADAM_REQUIRE_BROWSER=1` (CI sets it
//! after installing Chromium), where a missing browser fails.

use std::path::{Path, PathBuf};
use std::process::Command;

use padam_lab::runs::report::{self, ReportArgs};
use padam_lab::train::{self, config, TrainArgs};

fn digits(optimizer: &str) -> String {
    format!(
        r#"
seed = 4
[model]
kind = "mlp"
hidden = [16]
[data]
dataset = "digits"
test_limit = 100
[optimizer]
{optimizer}
[lr]
peak = 2e-2
schedule = "constant"
[train]
batch_size = 64
epochs = 2
eval_every = 8
"#
    )
}

fn browser() -> Option<PathBuf> {
    ["chromium", "chromium-browser", "google-chrome", "chrome"]
        .iter()
        .find_map(|name| {
            std::env::var_os("PATH").and_then(|paths| {
                std::env::split_paths(&paths)
                    .map(|d| d.join(name))
                    .find(|p| p.is_file())
            })
        })
}

fn headless(browser: &Path, extra: &[&str], file: &Path) -> std::process::Output {
    Command::new(browser)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--virtual-time-budget=5000",
        ])
        .args(extra)
        .arg(format!("file://{}", file.display()))
        .output()
        .expect("start the browser")
}

#[test]
fn report_renders_in_a_headless_browser_with_every_figure() {
    let root = std::env::temp_dir().join(format!("padam-report-test-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&root);
    let mut dirs = Vec::new();
    for (name, opt) in [
        ("adamw", "kind = \"adamw\"\nweight_decay = 0.1"),
        ("padam", "kind = \"padam\"\np = 0.8\nlambda = 3e-2"),
    ] {
        let cfg = config::parse(&digits(opt), &[]).unwrap();
        let dir = root.join(name);
        let args = TrainArgs {
            out: Some(dir.clone()),
            quiet: true,
            ..TrainArgs::default()
        };
        train::run_config(&cfg, &args).unwrap();
        dirs.push(dir);
    }
    let out = root.join("report.html");
    let figures = report::run(&ReportArgs {
        runs: dirs,
        out: out.clone(),
        title: "test <report>".into(),
    })
    .unwrap();
    // loss, accuracy, sparsity, magnitude CDF, 2 per-tensor, trade-off
    assert_eq!(figures, 7);
    let html = std::fs::read_to_string(&out).unwrap();
    assert!(html.contains("test &lt;report&gt;"), "title escaped");
    assert!(!html.contains("src=\"http"), "self-contained");

    let Some(browser) = browser() else {
        assert!(
            std::env::var("PADAM_REQUIRE_BROWSER").as_deref() != Ok("1"),
            "PADAM_REQUIRE_BROWSER=1 but no chromium on PATH"
        );
        eprintln!("no chromium on PATH: the report was written but not rendered");
        return;
    };
    let dom = headless(&browser, &["--dump-dom"], &out);
    let dom_text = String::from_utf8_lossy(&dom.stdout);
    assert!(
        dom_text.contains(&format!("data-figures-decoded=\"{figures}\"")),
        "the browser decoded fewer figures than the report has: {}\nstderr: {}",
        dom_text
            .find("data-figures-decoded")
            .map(|i| &dom_text[i..(i + 40).min(dom_text.len())])
            .unwrap_or("no count (script did not run)"),
        String::from_utf8_lossy(&dom.stderr)
    );
    let shot = root.join("shot.png");
    let _ = headless(
        &browser,
        &[
            &format!("--screenshot={}", shot.display()),
            "--window-size=1000,2000",
        ],
        &out,
    );
    let img = image::open(&shot).expect("screenshot written").to_rgb8();
    let colored = img
        .pixels()
        .filter(|p| p.0.iter().max().unwrap() - p.0.iter().min().unwrap() > 80)
        .count();
    assert!(
        colored > 1_000,
        "screenshot shows no figure ({colored} coloured pixels)"
    );
    let _ = std::fs::remove_dir_all(&root);
}
