//! `padam plot <run-dir>...`: the figures a paper would show, from run directories written by
//! `padam train` (PNG and SVG, several runs overlaid):
//!
//! - `loss`: train and validation loss against the optimizer step;
//! - `accuracy`: validation accuracy (runs that report one);
//! - `sparsity`: exactly-zero and below-1e-9 fractions over training;
//! - `magnitude-cdf`: the CDF of |w| at the last evaluation on a log axis, with each pWD run's
//!   suppression scale `(p * lambda)^(1 / (2 - p))` marked (the blog post's figure);
//! - `tensors-<run>`: each tensor's exactly-zero fraction at the last evaluation;
//! - `tradeoff`: final accuracy or validation loss (`--score`) against sparsity, one point per
//!   run, marked by how it was made (pWD, pruning, dense), with each method's Pareto front
//!   ([`tradeoff`], also used by sweeps).
//!
//! Reading runs is [`Run::load`]; every figure is a function of loaded runs, drawn once per
//! output format by [`draw_both`].

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Once;

use anyhow::{bail, Context};
use clap::Args;
use plotters::coord::Shift;
use plotters::prelude::*;
use serde_json::Value;

use crate::train::read_metrics;

/// Options of `padam plot`.
#[derive(Args, Debug, Clone)]
pub struct PlotArgs {
    /// Run directories (each with metrics.jsonl and config.toml).
    #[arg(required = true)]
    pub runs: Vec<PathBuf>,
    /// Output folder for the figures.
    #[arg(long, default_value = "plots")]
    pub out: PathBuf,
    /// Formats to write: png, svg.
    #[arg(long, value_delimiter = ',', default_value = "png,svg")]
    pub format: Vec<String>,
    /// What the trade-off figure plots against sparsity: `accuracy`, `loss` (validation), or
    /// `auto` (accuracy when every run reports one, else loss).
    #[arg(long, value_enum, default_value_t = Score::Auto)]
    pub score: Score,
}

/// The trade-off figure's y axis.
#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum Score {
    /// Accuracy when every run reports one, else validation loss.
    Auto,
    /// Final validation accuracy.
    Accuracy,
    /// Final validation loss.
    Loss,
}

/// How a run made its zeros, for the trade-off figure's markers and fronts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    /// pWD (PAdam, pSGD, pWD around any base): the metrics carry its `lambda`.
    PWd,
    /// Magnitude pruning (`[prune]`): the metrics carry its `mask_fraction`.
    Pruning,
    /// Neither (AdamW and other dense baselines).
    Dense,
}

impl Method {
    /// The method of a run from one of its metrics lines.
    pub fn of(line: &Value) -> Self {
        if line["mask_fraction"].as_f64().is_some() {
            Method::Pruning
        } else if line["lambda"].as_f64().is_some() {
            Method::PWd
        } else {
            Method::Dense
        }
    }

    fn name(self) -> &'static str {
        match self {
            Method::PWd => "pWD",
            Method::Pruning => "pruning",
            Method::Dense => "dense",
        }
    }
}

/// One run directory's metrics.
#[derive(Debug, Clone)]
pub struct Run {
    /// Label: the config's `name` and the folder name when they differ.
    pub label: String,
    /// One JSON object per evaluation, in order.
    pub lines: Vec<Value>,
}

impl Run {
    /// Read `dir/metrics.jsonl` (or `metrics.jsonl.gz`); errors name the file and line.
    pub fn load(dir: &Path) -> anyhow::Result<Self> {
        if !dir.is_dir() {
            bail!("{}: not a run directory", dir.display());
        }
        let (path, text) =
            read_metrics(dir).context("no metrics to read (is this a run directory?)")?;
        let mut lines = Vec::new();
        for (i, l) in text
            .lines()
            .enumerate()
            .filter(|(_, l)| !l.trim().is_empty())
        {
            let v: Value = serde_json::from_str(l).with_context(|| {
                format!("{}:{}: not a JSON metrics line", path.display(), i + 1)
            })?;
            if v.get("step").and_then(Value::as_u64).is_none() {
                bail!(
                    "{}:{}: metrics line without a `step`",
                    path.display(),
                    i + 1
                );
            }
            lines.push(v);
        }
        if lines.is_empty() {
            bail!("{}: no evaluations recorded yet", path.display());
        }
        let folder = dir
            .file_name()
            .map(|f| f.to_string_lossy().into_owned())
            .unwrap_or_else(|| dir.display().to_string());
        Ok(Self {
            label: folder,
            lines,
        })
    }

    /// `(step, value)` of a numeric field over the evaluations that have it.
    pub fn series(&self, key: &str) -> Vec<(f64, f64)> {
        self.lines
            .iter()
            .filter_map(|l| Some((l["step"].as_f64()?, l.get(key)?.as_f64()?)))
            .filter(|(_, v)| v.is_finite())
            .collect()
    }

    /// The last evaluation.
    pub fn last(&self) -> &Value {
        self.lines.last().expect("a run has at least one line")
    }

    /// The suppression scale `(p * lambda)^(1 / (2 - p))` of a pWD run at its last evaluation.
    pub fn suppression_scale(&self) -> Option<f64> {
        let p = self.last()["p"].as_f64()?;
        let lambda = self.last()["lambda"].as_f64()?;
        (p < 2.0 && lambda > 0.0).then(|| (p * lambda).powf(1.0 / (2.0 - p)))
    }
}

/// One point of an accuracy-vs-sparsity figure.
#[derive(Debug, Clone, PartialEq)]
pub struct TradeoffPoint {
    /// Legend label.
    pub label: String,
    /// Fraction of weights exactly zero.
    pub sparsity: f64,
    /// Accuracy (higher is better) or validation loss (lower is better).
    pub score: f64,
    /// How the run made its zeros.
    pub method: Method,
}

/// Indices of the points no other point beats in both sparsity and score (the Pareto front),
/// ordered by sparsity.
pub fn pareto_front(points: &[TradeoffPoint], higher_is_better: bool) -> Vec<usize> {
    let better = |a: f64, b: f64| if higher_is_better { a > b } else { a < b };
    let at_least = |a: f64, b: f64| if higher_is_better { a >= b } else { a <= b };
    let mut front: Vec<usize> = (0..points.len())
        .filter(|&i| {
            let p = &points[i];
            !points.iter().any(|q| {
                q.sparsity >= p.sparsity
                    && at_least(q.score, p.score)
                    && (q.sparsity > p.sparsity || better(q.score, p.score))
            })
        })
        .collect();
    front.sort_by(|&a, &b| points[a].sparsity.total_cmp(&points[b].sparsity));
    front
}

const FONT: &str = "sans-serif";
const SIZE: (u32, u32) = (900, 560);

fn register_font() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let bytes: &'static [u8] = include_bytes!("../../assets/DejaVuSans.ttf");
        // A font that fails to parse is a build defect, caught by the tests.
        let _ = plotters::style::register_font(FONT, FontStyle::Normal, bytes);
    });
}

/// The runs steered by `[sparsity]`, each line's `controlled_fraction` (what the controller
/// measured) filled in from `zero_fraction` (all weights) where the run was logged before that
/// key existed: the same number only where pWD decayed every weight.
fn steered_runs(runs: &[Run]) -> Vec<Run> {
    runs.iter()
        .filter(|r| !r.series("target_sparsity").is_empty())
        .map(|r| {
            let mut r = r.clone();
            for line in r.lines.iter_mut().filter_map(Value::as_object_mut) {
                if line.get("controlled_fraction").is_none_or(Value::is_null) {
                    let all = line.get("zero_fraction").cloned().unwrap_or(Value::Null);
                    line.insert("controlled_fraction".into(), all);
                }
            }
            r
        })
        .collect()
}

/// matplotlib's tab10, so ten runs in one figure get ten colours.
fn palette(i: usize) -> RGBColor {
    const C: [RGBColor; 10] = [
        RGBColor(31, 119, 180),
        RGBColor(214, 39, 40),
        RGBColor(44, 160, 44),
        RGBColor(255, 127, 14),
        RGBColor(148, 103, 189),
        RGBColor(140, 86, 75),
        RGBColor(227, 119, 194),
        RGBColor(23, 190, 207),
        RGBColor(127, 127, 127),
        RGBColor(188, 189, 34),
    ];
    C[i % C.len()]
}

type Area<'a, DB> = DrawingArea<DB, Shift>;
type DrawResult = Result<(), Box<dyn std::error::Error>>;

/// A figure, drawable on any plotters backend.
enum Figure<'a> {
    /// Line series per run: (metrics key, legend suffix) pairs, values mapped by `scale`.
    Lines {
        runs: &'a [Run],
        keys: &'a [(&'a str, &'a str)],
        title: &'a str,
        y_label: &'a str,
        scale: YScale,
        legend: SeriesLabelPosition,
    },
    /// Magnitude CDF of each run.
    Cdf(&'a [Run]),
    /// Per-tensor exactly-zero fraction of one run.
    Tensors(&'a Run),
    /// Score against sparsity with the Pareto front.
    Tradeoff {
        points: &'a [TradeoffPoint],
        score_name: &'a str,
        higher_is_better: bool,
    },
}

/// How a line figure maps metric values to its y axis.
#[derive(Clone, Copy)]
enum YScale {
    /// `v * factor` (100 for percentages).
    Times(f64),
    /// `log10 v` (lambda, which a controller moves over decades).
    Log10,
}

impl YScale {
    fn apply(self, v: f64) -> f64 {
        match self {
            YScale::Times(f) => v * f,
            YScale::Log10 => v.log10(),
        }
    }
}

impl Figure<'_> {
    fn draw<DB: DrawingBackend>(&self, root: &Area<'_, DB>) -> DrawResult
    where
        DB::ErrorType: 'static,
    {
        root.fill(&WHITE)?;
        match self {
            Figure::Lines {
                runs,
                keys,
                title,
                y_label,
                scale,
                legend,
            } => lines_figure(root, runs, keys, title, y_label, *scale, legend.clone())?,
            Figure::Cdf(runs) => cdf_figure(root, runs)?,
            Figure::Tensors(run) => tensor_figure(root, run)?,
            Figure::Tradeoff {
                points,
                score_name,
                higher_is_better,
            } => tradeoff_figure(root, points, score_name, *higher_is_better)?,
        }
        root.present()?;
        Ok(())
    }
}

/// `<base>.<format>`, appending: `with_extension` would cut a run label such as
/// `padam-l1.5e-2` at its dot.
fn with_format(base: &Path, format: &str) -> PathBuf {
    let mut name = base.as_os_str().to_owned();
    name.push(".");
    name.push(format);
    PathBuf::from(name)
}

/// Draw `figure` to `<base>.png` and/or `<base>.svg`; returns the files written.
fn draw_both(base: &Path, formats: &[String], figure: &Figure<'_>) -> anyhow::Result<Vec<PathBuf>> {
    register_font();
    let mut written = Vec::new();
    for format in formats {
        let path = with_format(base, format);
        let fail =
            |e: Box<dyn std::error::Error>| anyhow::anyhow!("drawing {}: {e}", path.display());
        match format.as_str() {
            "png" => {
                // drawn into memory, encoded by the `image` crate the data loaders use already
                let (w, h) = SIZE;
                let mut pixels = vec![0u8; (w * h * 3) as usize];
                {
                    let root = BitMapBackend::with_buffer(&mut pixels, SIZE).into_drawing_area();
                    figure.draw(&root).map_err(fail)?;
                }
                image::save_buffer(&path, &pixels, w, h, image::ExtendedColorType::Rgb8)
                    .with_context(|| format!("writing {}", path.display()))?;
            }
            "svg" => {
                let root = SVGBackend::new(&path, SIZE).into_drawing_area();
                figure.draw(&root).map_err(fail)?;
            }
            other => bail!("--format: unknown format `{other}` (known: png, svg)"),
        }
        written.push(path);
    }
    Ok(written)
}

fn range(values: impl Iterator<Item = f64>, pad: f64) -> (f64, f64) {
    let (mut lo, mut hi) = (f64::INFINITY, f64::NEG_INFINITY);
    for v in values.filter(|v| v.is_finite()) {
        lo = lo.min(v);
        hi = hi.max(v);
    }
    if !lo.is_finite() {
        return (0.0, 1.0);
    }
    if hi - lo < 1e-12 {
        return (lo - 0.5, hi + 0.5);
    }
    let d = (hi - lo) * pad;
    (lo - d, hi + d)
}

/// Line figure: one or two series per run (`keys[0]` solid, `keys[1]` dashed-looking thinner),
/// values scaled by `scale`.
fn lines_figure<DB: DrawingBackend>(
    root: &Area<'_, DB>,
    runs: &[Run],
    keys: &[(&str, &str)],
    title: &str,
    y_label: &str,
    scale: YScale,
    legend: SeriesLabelPosition,
) -> DrawResult
where
    DB::ErrorType: 'static,
{
    let all: Vec<(f64, f64)> = runs
        .iter()
        .flat_map(|r| keys.iter().flat_map(move |(k, _)| r.series(k)))
        .map(|(s, v)| (s, scale.apply(v)))
        .filter(|(_, v)| v.is_finite())
        .collect();
    let (x0, x1) = range(all.iter().map(|p| p.0), 0.0);
    let (y0, y1) = range(all.iter().map(|p| p.1), 0.05);
    let mut chart = ChartBuilder::on(root)
        .caption(title, (FONT, 22))
        .margin(12)
        .x_label_area_size(45)
        .y_label_area_size(65)
        .build_cartesian_2d(x0.min(0.0)..x1.max(1.0), y0..y1)?;
    chart
        .configure_mesh()
        .x_desc("optimizer step")
        .x_label_formatter(&|x| format!("{x:.0}"))
        .y_desc(y_label)
        .label_style((FONT, 14))
        .axis_desc_style((FONT, 16))
        .draw()?;
    for (i, run) in runs.iter().enumerate() {
        let color = palette(i);
        for (j, (key, name)) in keys.iter().enumerate() {
            let data: Vec<(f64, f64)> = run
                .series(key)
                .into_iter()
                .map(|(s, v)| (s, scale.apply(v)))
                .filter(|(_, v)| v.is_finite())
                .collect();
            if data.is_empty() {
                continue;
            }
            let style = if j == 0 {
                color.stroke_width(2)
            } else {
                color.mix(0.55).stroke_width(1)
            };
            let label = if keys.len() > 1 {
                format!("{} ({name})", run.label)
            } else {
                run.label.clone()
            };
            chart
                .draw_series(LineSeries::new(data, style))?
                .label(label)
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], style));
        }
    }
    chart
        .configure_series_labels()
        .label_font((FONT, 13))
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .position(legend)
        .draw()?;
    Ok(())
}

/// The CDF of |w| at the last evaluation that recorded magnitudes, per run.
fn magnitude_cdf(run: &Run) -> Option<(Vec<(f64, f64)>, f64)> {
    let m = run.lines.iter().rev().find_map(|l| l.get("magnitudes"))?;
    let edges: Vec<f64> = serde_json::from_value(m.get("log10_edges")?.clone()).ok()?;
    let counts: Vec<f64> = serde_json::from_value(m.get("counts")?.clone()).ok()?;
    let zeros = m.get("zeros")?.as_f64()?;
    let under = m.get("underflow")?.as_f64()?;
    let over = m.get("overflow")?.as_f64()?;
    let total = zeros + under + over + counts.iter().sum::<f64>();
    if total == 0.0 || edges.len() != counts.len() + 1 {
        return None;
    }
    let mut acc = zeros + under;
    let mut points = vec![(10f64.powf(edges[0]), acc / total)];
    for (c, e) in counts.iter().zip(&edges[1..]) {
        acc += c;
        points.push((10f64.powf(*e), acc / total));
    }
    Some((points, zeros / total))
}

fn cdf_figure<DB: DrawingBackend>(root: &Area<'_, DB>, runs: &[Run]) -> DrawResult
where
    DB::ErrorType: 'static,
{
    let mut chart = ChartBuilder::on(root)
        .caption("Weight magnitudes at the end of training (CDF)", (FONT, 22))
        .margin(12)
        .x_label_area_size(45)
        .y_label_area_size(65)
        .build_cartesian_2d((1e-12f64..1e2f64).log_scale(), 0f64..1f64)?;
    chart
        .configure_mesh()
        .x_desc("|w| (log scale)")
        .y_desc("fraction of weights with magnitude <= |w|")
        .x_label_formatter(&|x| format!("{x:.0e}"))
        .label_style((FONT, 14))
        .axis_desc_style((FONT, 16))
        .draw()?;
    for (i, run) in runs.iter().enumerate() {
        let Some((points, zero)) = magnitude_cdf(run) else {
            continue;
        };
        let color = palette(i);
        chart
            .draw_series(LineSeries::new(points, color.stroke_width(2)))?
            .label(format!("{} ({:.1}% exactly 0)", run.label, 100.0 * zero))
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 18, y)], color.stroke_width(2))
            });
        if let Some(s) = run.suppression_scale() {
            let dashed: Vec<(f64, f64)> = (0..20)
                .flat_map(|k| {
                    let y0 = k as f64 / 20.0;
                    [(s, y0), (s, y0 + 0.025)]
                })
                .collect();
            for seg in dashed.chunks(2) {
                chart.draw_series(LineSeries::new(seg.to_vec(), color.mix(0.7)))?;
            }
            chart
                .draw_series(std::iter::once(PathElement::new(
                    vec![(s, 0.0), (s, 0.0)],
                    color,
                )))?
                .label(format!("{}: (p·λ)^(1/(2-p)) = {s:.1e}", run.label))
                .legend(move |(x, y)| {
                    PathElement::new(vec![(x + 9, y - 6), (x + 9, y + 6)], color.mix(0.7))
                });
        }
    }
    chart
        .configure_series_labels()
        .label_font((FONT, 13))
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .position(SeriesLabelPosition::LowerRight)
        .draw()?;
    Ok(())
}

fn tensor_figure<DB: DrawingBackend>(root: &Area<'_, DB>, run: &Run) -> DrawResult
where
    DB::ErrorType: 'static,
{
    let tensors: Vec<(String, f64)> = run.last()["tensors"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|t| {
                    Some((
                        t["path"].as_str()?.to_string(),
                        t["zero_fraction"].as_f64()?,
                    ))
                })
                .collect()
        })
        .unwrap_or_default();
    let n = tensors.len().max(1);
    let names: Vec<String> = tensors.iter().map(|t| t.0.clone()).collect();
    let label_width = names.iter().map(String::len).max().unwrap_or(4) as u32 * 7 + 10;
    let mut chart = ChartBuilder::on(root)
        .caption(
            format!("{}: exactly-zero fraction per tensor", run.label),
            (FONT, 20),
        )
        .margin(12)
        .x_label_area_size(45)
        .y_label_area_size(label_width.min(320))
        .build_cartesian_2d(0f64..100f64, (0..(n - 1).max(1)).into_segmented())?;
    chart
        .configure_mesh()
        .x_desc("weights exactly 0 (%)")
        .x_label_formatter(&|x| format!("{x:.0}"))
        .y_labels(n)
        .y_label_formatter(&|y| match y {
            SegmentValue::CenterOf(i) => names.get(*i).cloned().unwrap_or_default(),
            _ => String::new(),
        })
        .label_style((FONT, 11))
        .axis_desc_style((FONT, 15))
        .disable_y_mesh()
        .draw()?;
    chart.draw_series(tensors.iter().enumerate().map(|(i, (_, z))| {
        let mut bar = Rectangle::new(
            [
                (0.0, SegmentValue::Exact(i)),
                (100.0 * z, SegmentValue::Exact(i + 1)),
            ],
            palette(0).filled(),
        );
        bar.set_margin(2, 2, 0, 0);
        bar
    }))?;
    Ok(())
}

fn tradeoff_figure<DB: DrawingBackend>(
    root: &Area<'_, DB>,
    points: &[TradeoffPoint],
    score_name: &str,
    higher_is_better: bool,
) -> DrawResult
where
    DB::ErrorType: 'static,
{
    let (x0, x1) = range(points.iter().map(|p| 100.0 * p.sparsity), 0.08);
    let (y0, y1) = range(points.iter().map(|p| p.score), 0.15);
    let mut chart = ChartBuilder::on(root)
        .caption(format!("{score_name} vs sparsity"), (FONT, 22))
        .margin(12)
        .x_label_area_size(45)
        .y_label_area_size(65)
        .build_cartesian_2d(x0.max(-1.0)..x1.min(101.0), y0..y1)?;
    chart
        .configure_mesh()
        .x_desc("weights exactly 0 (%)")
        .x_label_formatter(&|x| format!("{x:.0}"))
        .y_desc(score_name)
        .label_style((FONT, 14))
        .axis_desc_style((FONT, 16))
        .draw()?;
    // One front per sparse method with two or more runs, so pruning's stands beside pWD's.
    let fronts = [
        (Method::PWd, BLACK.mix(0.6)),
        (Method::Pruning, RGBColor(214, 120, 0).mix(0.8)),
    ];
    for (method, color) in fronts {
        let own: Vec<TradeoffPoint> = (points.iter())
            .filter(|p| p.method == method)
            .cloned()
            .collect();
        if own.len() < 2 {
            continue;
        }
        let style = color.stroke_width(2);
        chart
            .draw_series(LineSeries::new(
                pareto_front(&own, higher_is_better)
                    .iter()
                    .map(|&i| (100.0 * own[i].sparsity, own[i].score)),
                style,
            ))?
            .label(format!("{} front", method.name()))
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], style));
    }
    // The marker tells the method: circle pWD, triangle pruning, cross dense.
    for (i, p) in points.iter().enumerate() {
        let color = palette(i);
        let at = (100.0 * p.sparsity, p.score);
        let label = format!("{} ({:.1}%, {:.4})", p.label, 100.0 * p.sparsity, p.score);
        match p.method {
            Method::PWd => chart
                .draw_series(std::iter::once(Circle::new(at, 6, color.filled())))?
                .label(label)
                .legend(move |(x, y)| Circle::new((x + 9, y), 5, color.filled())),
            Method::Pruning => chart
                .draw_series(std::iter::once(TriangleMarker::new(at, 8, color.filled())))?
                .label(label)
                .legend(move |(x, y)| TriangleMarker::new((x + 9, y), 6, color.filled())),
            Method::Dense => chart
                .draw_series(std::iter::once(Cross::new(at, 7, color.stroke_width(3))))?
                .label(label)
                .legend(move |(x, y)| Cross::new((x + 9, y), 5, color.stroke_width(3))),
        };
    }
    chart
        .configure_series_labels()
        .label_font((FONT, 12))
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        // Between the dense runs (left) and the sparse ones (right), on the side away from
        // the scores: accuracy falls and loss rises with sparsity.
        .position(if higher_is_better {
            SeriesLabelPosition::LowerMiddle
        } else {
            SeriesLabelPosition::UpperMiddle
        })
        .draw()?;
    Ok(())
}

/// Accuracy (or validation loss) against sparsity with the Pareto front, as `<out_base>.png`
/// and `<out_base>.svg`; returns the files written.
pub fn tradeoff(
    points: &[TradeoffPoint],
    score_name: &str,
    higher_is_better: bool,
    out_base: &Path,
) -> anyhow::Result<Vec<PathBuf>> {
    let formats = ["png".to_string(), "svg".to_string()];
    draw_both(
        out_base,
        &formats,
        &Figure::Tradeoff {
            points,
            score_name,
            higher_is_better,
        },
    )
}

/// One trade-off point per `(label, last metrics line)`: sparsity and the final `score`
/// (`Auto`: accuracy when every run has one, else validation loss). Returns the points, the
/// score's name and whether higher is better; an error naming the run when a score asked for
/// by name is missing from one.
pub fn tradeoff_points<'a>(
    runs: impl Iterator<Item = (String, &'a Value)> + Clone,
    score: Score,
) -> anyhow::Result<(Vec<TradeoffPoint>, &'static str, bool)> {
    let with_acc = match score {
        Score::Auto => runs
            .clone()
            .all(|(_, last)| last["val_accuracy"].as_f64().is_some()),
        Score::Accuracy => true,
        Score::Loss => false,
    };
    let (key, name, higher) = if with_acc {
        ("val_accuracy", "validation accuracy", true)
    } else {
        ("val_loss", "validation loss", false)
    };
    if score != Score::Auto {
        if let Some((label, _)) = runs.clone().find(|(_, last)| last[key].as_f64().is_none()) {
            bail!("--score: run {label} has no {key} in its last evaluation");
        }
    }
    let points = runs
        .filter_map(|(label, last)| {
            Some(TradeoffPoint {
                label,
                sparsity: last["zero_fraction"].as_f64()?,
                score: last[key].as_f64()?,
                method: Method::of(last),
            })
        })
        .collect();
    Ok((points, name, higher))
}

/// Run `padam plot`: every figure for the given runs; returns the files written.
pub fn run(args: &PlotArgs) -> anyhow::Result<Vec<PathBuf>> {
    let runs = args
        .runs
        .iter()
        .map(|d| Run::load(d))
        .collect::<anyhow::Result<Vec<_>>>()?;
    fs::create_dir_all(&args.out).with_context(|| format!("creating {}", args.out.display()))?;
    let f = &args.format;
    let out = |name: &str| args.out.join(name);
    let mut written = Vec::new();
    let loss_keys = [("val_loss", "val"), ("train_loss", "train")];
    written.extend(draw_both(
        &out("loss"),
        f,
        &Figure::Lines {
            runs: &runs,
            keys: &loss_keys,
            title: "Loss",
            y_label: "cross-entropy (nats)",
            scale: YScale::Times(1.0),
            legend: SeriesLabelPosition::UpperRight,
        },
    )?);
    if runs.iter().any(|r| !r.series("val_accuracy").is_empty()) {
        written.extend(draw_both(
            &out("accuracy"),
            f,
            &Figure::Lines {
                runs: &runs,
                keys: &[("val_accuracy", "val")],
                title: "Validation accuracy",
                y_label: "accuracy (%)",
                scale: YScale::Times(100.0),
                legend: SeriesLabelPosition::LowerRight,
            },
        )?);
    }
    let sparsity_keys = [
        ("zero_fraction", "exactly 0"),
        ("below_fraction", "|w| < 1e-9"),
    ];
    written.extend(draw_both(
        &out("sparsity"),
        f,
        &Figure::Lines {
            runs: &runs,
            keys: &sparsity_keys,
            title: "Sparsity over training",
            y_label: "weights (%)",
            scale: YScale::Times(100.0),
            legend: SeriesLabelPosition::LowerRight,
        },
    )?);
    // Target-sparsity runs (`[sparsity]`): measured against target, and the lambda it set.
    let steered = steered_runs(&runs);
    if !steered.is_empty() {
        written.extend(draw_both(
            &out("controller"),
            f,
            &Figure::Lines {
                runs: &steered,
                keys: &[
                    ("controlled_fraction", "measured"),
                    ("target_sparsity", "target"),
                ],
                title: "Target-sparsity controller",
                y_label: "weights exactly 0 (%)",
                scale: YScale::Times(100.0),
                legend: SeriesLabelPosition::LowerRight,
            },
        )?);
        written.extend(draw_both(
            &out("controller-lambda"),
            f,
            &Figure::Lines {
                runs: &steered,
                keys: &[("lambda", "lambda")],
                title: "Lambda set by the controller",
                y_label: "log10 lambda",
                scale: YScale::Log10,
                legend: SeriesLabelPosition::LowerRight,
            },
        )?);
    }
    if runs.iter().any(|r| magnitude_cdf(r).is_some()) {
        written.extend(draw_both(&out("magnitude-cdf"), f, &Figure::Cdf(&runs))?);
    }
    for run in &runs {
        let name = format!("tensors-{}", run.label);
        written.extend(draw_both(&out(&name), f, &Figure::Tensors(run))?);
    }
    if runs.len() > 1 {
        let (points, score_name, higher_is_better) =
            tradeoff_points(runs.iter().map(|r| (r.label.clone(), r.last())), args.score)?;
        written.extend(draw_both(
            &out("tradeoff"),
            f,
            &Figure::Tradeoff {
                points: &points,
                score_name,
                higher_is_better,
            },
        )?);
    }
    Ok(written)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pt(label: &str, sparsity: f64, score: f64) -> TradeoffPoint {
        TradeoffPoint {
            label: label.into(),
            sparsity,
            score,
            method: Method::PWd,
        }
    }

    #[test]
    fn tradeoff_points_tell_the_method_and_take_the_score_asked_for() {
        let lines = [
            serde_json::json!({"zero_fraction": 0.9, "val_loss": 1.45, "val_accuracy": 0.57,
                "lambda": 0.02, "mask_fraction": null}),
            serde_json::json!({"zero_fraction": 0.9, "val_loss": 1.44, "val_accuracy": 0.58,
                "lambda": null, "mask_fraction": 0.9}),
            serde_json::json!({"zero_fraction": 0.0, "val_loss": 1.66, "val_accuracy": 0.57}),
        ];
        let runs = || lines.iter().enumerate().map(|(i, l)| (format!("r{i}"), l));
        let (points, name, higher) = tradeoff_points(runs(), Score::Auto).unwrap();
        assert_eq!((name, higher), ("validation accuracy", true));
        let methods: Vec<Method> = points.iter().map(|p| p.method).collect();
        assert_eq!(methods, [Method::PWd, Method::Pruning, Method::Dense]);
        let (points, name, higher) = tradeoff_points(runs(), Score::Loss).unwrap();
        assert_eq!((name, higher), ("validation loss", false));
        assert_eq!(points[1].score, 1.44);
    }

    #[test]
    fn figure_file_keeps_a_dotted_run_label_whole() {
        let base = Path::new("figs/tensors-nanogpt-padam-l1.5e-2");
        assert_eq!(
            with_format(base, "png"),
            PathBuf::from("figs/tensors-nanogpt-padam-l1.5e-2.png")
        );
        assert_eq!(
            with_format(Path::new("figs/loss"), "svg"),
            PathBuf::from("figs/loss.svg")
        );
    }

    #[test]
    fn pareto_front_keeps_only_undominated_points() {
        let p = vec![
            pt("dense", 0.0, 0.93),
            pt("a", 0.9, 0.92),
            pt("dominated", 0.8, 0.91),
            pt("b", 0.99, 0.89),
            pt("tie-worse", 0.99, 0.85),
        ];
        assert_eq!(pareto_front(&p, true), vec![0, 1, 3]);
        // for a loss, lower is better: "tie-worse" (0.85) beats "b" at equal sparsity
        let front = pareto_front(&p, false);
        assert_eq!(front, vec![4]);
    }

    #[test]
    fn controller_figure_reads_the_controlled_fraction_or_falls_back() {
        let run = |label: &str, lines: Vec<Value>| Run {
            label: label.into(),
            lines,
        };
        let runs = [
            run(
                "new",
                vec![serde_json::json!({"step": 1, "target_sparsity": 0.5,
                    "controlled_fraction": 0.52, "zero_fraction": 0.5})],
            ),
            run(
                "old",
                vec![serde_json::json!({"step": 1, "target_sparsity": 0.5, "zero_fraction": 0.4})],
            ),
            run(
                "fixed-lambda",
                vec![serde_json::json!({"step": 1, "target_sparsity": null, "zero_fraction": 0.3})],
            ),
        ];
        let steered = steered_runs(&runs);
        let labels: Vec<&str> = steered.iter().map(|r| r.label.as_str()).collect();
        assert_eq!(labels, ["new", "old"]);
        assert_eq!(steered[0].series("controlled_fraction"), [(1.0, 0.52)]);
        assert_eq!(steered[1].series("controlled_fraction"), [(1.0, 0.4)]);
    }

    #[test]
    fn suppression_scale_of_a_pwd_run() {
        let run = Run {
            label: "x".into(),
            lines: vec![serde_json::json!({"step": 1, "p": 0.8, "lambda": 1e-2})],
        };
        let s = run.suppression_scale().unwrap();
        assert!((s - (0.8f64 * 1e-2).powf(1.0 / 1.2)).abs() < 1e-15);
        let adamw = Run {
            label: "y".into(),
            lines: vec![serde_json::json!({"step": 1, "p": null, "lambda": null})],
        };
        assert!(adamw.suppression_scale().is_none());
    }
}
