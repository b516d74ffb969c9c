//! `padam sweep <config> --grid lambda=1e-3,3e-3 --grid optimizer=padam,adamw`: the cartesian
//! grid of config overrides, run one after the other in-process with [`train::run_config`].
//! Each grid point is its own run directory under the sweep folder, so a finished run
//! (`final.json` present) is skipped and an interrupted one resumes from its checkpoint. At the
//! end one table (`sweep.md`, `sweep.csv`) and the accuracy-vs-sparsity figure with the Pareto
//! front (`tradeoff.png`, `.svg`) are written from each run's final metrics.
//!
//! Grid points where the optimizer is not a pWD one drop the pWD keys (`p`, `lambda`, ...), so
//! `--grid optimizer=padam,adamw --grid lambda=...` runs AdamW once, not once per lambda.

use std::fmt::Write as _;
use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use clap::Args;

use super::plot;
use crate::train::config::pwd_keys;
use crate::train::{self, TrainArgs};

/// Options of `padam sweep`.
#[derive(Args, Debug, Clone)]
pub struct SweepArgs {
    /// The base config (TOML).
    pub config: PathBuf,
    /// A grid axis `key=v1,v2,...` (repeatable). Short keys: lambda, p, optimizer, lr, wd,
    /// target (sparsity.target when the config has a `[sparsity]` table, else prune.target),
    /// epochs, iterations; any dotted config key works too.
    #[arg(long = "grid", value_name = "KEY=V1,V2,...", required = true)]
    pub grid: Vec<String>,
    /// Sweep folder (default: runs/<config name>-sweep).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Overrides applied to every run (`--set key=value`, repeatable).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub set: Vec<String>,
    /// Override `backend` (cpu, cuda) for every run.
    #[arg(long)]
    pub backend: Option<String>,
    /// Override `data.path` for every run.
    #[arg(long)]
    pub data: Option<PathBuf>,
    /// Print only the table at the end (no progress bars).
    #[arg(long, short)]
    pub quiet: bool,
}

/// What happened to one grid point.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Status {
    /// Trained from step 0.
    Trained,
    /// Continued from its newest checkpoint.
    Resumed,
    /// Already finished; left as it was.
    Skipped,
}

/// One grid point and its final metrics.
#[derive(Debug, Clone)]
pub struct SweepRun {
    /// Run folder name (the grid values).
    pub name: String,
    /// The grid values applied, `(short key, value)`.
    pub values: Vec<(String, String)>,
    /// What the sweep did with it.
    pub status: Status,
    /// The run's last metrics line.
    pub last: serde_json::Value,
}

/// Config key of a short grid key.
pub fn config_key(short: &str) -> &str {
    match short {
        "lambda" => "optimizer.lambda",
        "p" => "optimizer.p",
        "optimizer" => "optimizer.kind",
        "lr" => "lr.peak",
        "wd" => "optimizer.weight_decay",
        "target" => "prune.target",
        "epochs" => "train.epochs",
        "iterations" => "train.iterations",
        other => other,
    }
}

const PWD_KINDS: [&str; 3] = ["padam", "psgd", "pwd"];

/// `optimizer.<key>` for a key of pWD's settings.
fn is_pwd_key(key: &str) -> bool {
    key.strip_prefix("optimizer.")
        .is_some_and(|k| pwd_keys().iter().any(|p| p == k))
}

/// Parse `key=v1,v2` axes; errors name the axis.
pub fn parse_grid(specs: &[String]) -> anyhow::Result<Vec<(String, Vec<String>)>> {
    let mut axes: Vec<(String, Vec<String>)> = Vec::new();
    for spec in specs {
        let Some((key, values)) = spec.split_once('=') else {
            bail!("--grid {spec:?}: expected KEY=V1,V2,...");
        };
        let key = key.trim();
        let values: Vec<String> = values
            .split(',')
            .map(|v| v.trim().to_string())
            .filter(|v| !v.is_empty())
            .collect();
        if key.is_empty() || values.is_empty() {
            bail!("--grid {spec:?}: expected KEY=V1,V2,... with at least one value");
        }
        if axes.iter().any(|(k, _)| k == key) {
            bail!("--grid {spec:?}: `{key}` is given twice");
        }
        axes.push((key.to_string(), values));
    }
    Ok(axes)
}

/// The grid points: for each, the `(short key, value)` pairs that apply (pWD keys are dropped
/// for non-pWD optimizers, and the duplicates this makes removed).
pub fn grid_points(axes: &[(String, Vec<String>)]) -> Vec<Vec<(String, String)>> {
    let mut points: Vec<Vec<(String, String)>> = vec![Vec::new()];
    for (key, values) in axes {
        points = points
            .into_iter()
            .flat_map(|p| {
                values.iter().map(move |v| {
                    let mut q = p.clone();
                    q.push((key.clone(), v.clone()));
                    q
                })
            })
            .collect();
    }
    let mut out: Vec<Vec<(String, String)>> = Vec::new();
    for p in points {
        let kind = p
            .iter()
            .find(|(k, _)| config_key(k) == "optimizer.kind")
            .map(|(_, v)| v.trim_matches('"').to_string());
        let non_pwd = kind.is_some_and(|k| !PWD_KINDS.contains(&k.as_str()));
        let kept: Vec<(String, String)> = p
            .into_iter()
            .filter(|(k, _)| !(non_pwd && is_pwd_key(config_key(k))))
            .collect();
        if !out.contains(&kept) {
            out.push(kept);
        }
    }
    out
}

/// Folder name of a grid point: `lambda=1e-3_optimizer=padam`.
pub fn run_name(values: &[(String, String)]) -> String {
    let name: Vec<String> = values
        .iter()
        .map(|(k, v)| {
            let clean: String = v
                .chars()
                .map(|c| {
                    if c.is_ascii_alphanumeric() || "-+.".contains(c) {
                        c
                    } else {
                        '-'
                    }
                })
                .collect();
            format!("{k}={clean}")
        })
        .collect();
    if name.is_empty() {
        "base".into()
    } else {
        name.join("_")
    }
}

/// A TOML value for `--set`: numbers and booleans as they are, anything else quoted.
fn toml_value(v: &str) -> String {
    let bare =
        v.parse::<f64>().is_ok() || v == "true" || v == "false" || v.starts_with(['"', '{', '[']);
    if bare {
        v.to_string()
    } else {
        format!("{v:?}")
    }
}

/// Run the sweep; returns every grid point with its final metrics.
pub fn run(args: &SweepArgs) -> anyhow::Result<Vec<SweepRun>> {
    let axes = parse_grid(&args.grid)?;
    let points = grid_points(&axes);
    let stem = args
        .config
        .file_stem()
        .and_then(|s| s.to_str())
        .unwrap_or("sweep")
        .to_string();
    let dir = args
        .out
        .clone()
        .unwrap_or_else(|| PathBuf::from("runs").join(format!("{stem}-sweep")));
    fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    // `target` is the target-sparsity controller's when the config has a `[sparsity]` table,
    // else pruning's. Read from the raw TOML: the base config alone may be incomplete (a grid
    // axis can supply a required key); a broken file is reported by the first run.
    let steered = fs::read_to_string(&args.config)
        .ok()
        .and_then(|text| train::config::overridden_table(&text, &args.set).ok())
        .is_some_and(|table| table.contains_key("sparsity"));
    let key = |k: &str| match k {
        "target" if steered => "sparsity.target".to_string(),
        _ => config_key(k).to_string(),
    };
    let mut runs = Vec::new();
    for (i, values) in points.iter().enumerate() {
        let name = run_name(values);
        let run_dir = dir.join(&name);
        let mut set = args.set.clone();
        let non_pwd = values.iter().any(|(k, v)| {
            config_key(k) == "optimizer.kind" && !PWD_KINDS.contains(&v.trim_matches('"'))
        });
        if non_pwd {
            // the base config's pWD keys do not apply to this optimizer
            set.extend(pwd_keys().iter().map(|k| format!("optimizer.{k}=")));
        }
        set.extend(
            values
                .iter()
                .map(|(k, v)| format!("{}={}", key(k), toml_value(v))),
        );
        let status = if run_dir.join("final.json").is_file() {
            Status::Skipped
        } else if train::checkpoint::list(&run_dir)
            .map(|l| !l.is_empty())
            .unwrap_or(false)
        {
            Status::Resumed
        } else {
            if run_dir.exists() {
                // a run that died before its first checkpoint: start it again
                fs::remove_dir_all(&run_dir)
                    .with_context(|| format!("clearing {}", run_dir.display()))?;
            }
            Status::Trained
        };
        if !args.quiet {
            eprintln!("[{}/{}] {name}: {status:?}", i + 1, points.len());
        }
        let targs = TrainArgs {
            config: args.config.clone(),
            out: Some(run_dir.clone()),
            resume: status == Status::Resumed,
            set,
            backend: args.backend.clone(),
            data: args.data.clone(),
            quiet: true,
            ..TrainArgs::default()
        };
        let last = if status == Status::Skipped {
            final_metrics(&run_dir)?
        } else {
            let config = train::resolve(&targs).with_context(|| format!("sweep run {name}"))?;
            let summary =
                train::run_config(&config, &targs).with_context(|| format!("sweep run {name}"))?;
            summary.last.unwrap_or_default()
        };
        runs.push(SweepRun {
            name,
            values: values.clone(),
            status,
            last,
        });
    }
    let keys: Vec<String> = axes.iter().map(|(k, _)| k.clone()).collect();
    fs::write(dir.join("sweep.md"), table_markdown(&keys, &runs))
        .with_context(|| format!("writing {}", dir.join("sweep.md").display()))?;
    fs::write(dir.join("sweep.csv"), table_csv(&keys, &runs))
        .with_context(|| format!("writing {}", dir.join("sweep.csv").display()))?;
    let (points, score_name, higher) = plot::tradeoff_points(
        runs.iter().map(|r| (r.name.clone(), &r.last)),
        plot::Score::Auto,
    )?;
    plot::tradeoff(&points, score_name, higher, &dir.join("tradeoff"))?;
    print!("{}", table_markdown(&keys, &runs));
    Ok(runs)
}

fn final_metrics(run_dir: &Path) -> anyhow::Result<serde_json::Value> {
    let path = run_dir.join("final.json");
    let text = fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    let v: serde_json::Value =
        serde_json::from_str(&text).with_context(|| format!("{}: not JSON", path.display()))?;
    Ok(v["last"].clone())
}

const COLUMNS: [(&str, &str); 7] = [
    ("val_accuracy", "val accuracy"),
    ("val_loss", "val loss"),
    ("zero_fraction", "exactly 0"),
    ("below_fraction", "|w| < 1e-9"),
    ("params", "params"),
    ("step", "steps"),
    ("elapsed_s", "wall (s)"),
];

fn cell(v: &serde_json::Value, key: &str) -> String {
    match v.get(key) {
        Some(serde_json::Value::Number(n)) => {
            let x = n.as_f64().unwrap_or(f64::NAN);
            match key {
                "params" | "step" => format!("{x:.0}"),
                "elapsed_s" => format!("{x:.1}"),
                _ => format!("{x:.4}"),
            }
        }
        _ => String::new(),
    }
}

fn value_of(run: &SweepRun, key: &str) -> String {
    run.values
        .iter()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.clone())
        .unwrap_or_else(|| "-".into())
}

/// The table's header (`names`: display names, else metric keys) and one row of cells per run.
fn table(keys: &[String], runs: &[SweepRun], names: bool) -> (Vec<String>, Vec<Vec<String>>) {
    let head = keys
        .iter()
        .cloned()
        .chain(
            COLUMNS
                .iter()
                .map(|c| if names { c.1 } else { c.0 }.to_string()),
        )
        .collect();
    let rows = runs
        .iter()
        .map(|r| {
            keys.iter()
                .map(|k| value_of(r, k))
                .chain(COLUMNS.iter().map(|c| cell(&r.last, c.0)))
                .collect()
        })
        .collect();
    (head, rows)
}

/// The sweep table as markdown.
pub fn table_markdown(keys: &[String], runs: &[SweepRun]) -> String {
    let (head, rows) = table(keys, runs, true);
    let mut s = String::new();
    let _ = writeln!(s, "| {} |", head.join(" | ").replace("|w|", "\\|w\\|"));
    let _ = writeln!(s, "|{}", " --- |".repeat(head.len()));
    for cells in rows {
        let _ = writeln!(s, "| {} |", cells.join(" | "));
    }
    s
}

/// The sweep table as CSV (one header line).
pub fn table_csv(keys: &[String], runs: &[SweepRun]) -> String {
    let (head, rows) = table(keys, runs, false);
    let mut s = head.join(",") + "\n";
    for cells in rows {
        s += &(cells.join(",") + "\n");
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grid_drops_pwd_keys_for_other_optimizers() {
        let axes =
            parse_grid(&["lambda=1e-3,3e-3".into(), "optimizer=padam,adamw".into()]).unwrap();
        let pts = grid_points(&axes);
        let names: Vec<String> = pts.iter().map(|p| run_name(p)).collect();
        assert_eq!(
            names,
            vec![
                "lambda=1e-3_optimizer=padam",
                "optimizer=adamw",
                "lambda=3e-3_optimizer=padam"
            ]
        );
    }

    #[test]
    fn bad_grid_specs_are_errors() {
        assert!(parse_grid(&["lambda".into()]).is_err());
        assert!(parse_grid(&["lambda=".into()]).is_err());
        let e = parse_grid(&["p=1".into(), "p=2".into()])
            .unwrap_err()
            .to_string();
        assert!(e.contains("twice"), "{e}");
        assert_eq!(toml_value("1e-3"), "1e-3");
        assert_eq!(toml_value("adamw"), "\"adamw\"");
    }
}
