//! `padam report <run-dir>... --out report.html`: one self-contained HTML file (figures inlined
//! as base64 PNG, no external links) with the final metrics of every run, the figures of
//! `padam plot`, each run's resolved config, and the versions and backend that produced them.

use std::fmt::Write as _;
use std::fs;
use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::Args;

use super::plot::{self, PlotArgs, Run};

/// Options of `padam report`.
#[derive(Args, Debug, Clone)]
pub struct ReportArgs {
    /// Run directories (each with metrics.jsonl and config.toml).
    #[arg(required = true)]
    pub runs: Vec<PathBuf>,
    /// The HTML file to write.
    #[arg(long, default_value = "report.html")]
    pub out: PathBuf,
    /// Report title.
    #[arg(long, default_value = "padam report")]
    pub title: String,
}

/// Standard base64 (RFC 4648, with padding) of `bytes`.
pub fn base64(bytes: &[u8]) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = u32::from(b[0]) << 16 | u32::from(b[1]) << 8 | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(A[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// Escape text for HTML.
pub fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

fn num(v: &serde_json::Value, key: &str, pct: bool) -> String {
    match v.get(key).and_then(serde_json::Value::as_f64) {
        Some(x) if pct => format!("{:.2}%", 100.0 * x),
        Some(x) if key == "params" || key == "step" => format!("{x:.0}"),
        Some(x) => format!("{x:.4}"),
        None => "-".into(),
    }
}

/// Write the report; returns the number of figures inlined.
pub fn run(args: &ReportArgs) -> anyhow::Result<usize> {
    let runs = args
        .runs
        .iter()
        .map(|d| Run::load(d))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let figs = std::env::temp_dir().join(format!("padam-report-{}", std::process::id()));
    let files = plot::run(&PlotArgs {
        runs: args.runs.clone(),
        out: figs.clone(),
        format: vec!["png".into()],
        score: plot::Score::Auto,
    })?;
    let mut html = String::new();
    let title = escape(&args.title);
    let _ = write!(
        html,
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <title>{title}</title>\n<style>body{{font-family:sans-serif;max-width:1000px;margin:2em auto;}}\
         table{{border-collapse:collapse}}td,th{{border:1px solid #999;padding:3px 8px;text-align:right}}\
         th:first-child,td:first-child{{text-align:left}}img{{max-width:100%}}\
         pre{{background:#f4f4f4;padding:8px;overflow-x:auto}}</style></head>\n<body>\n<h1>{title}</h1>\n"
    );
    let _ = writeln!(
        html,
        "<p>Made by padam {} (burn 0.21.0) on {} from {} run(s). Sparsity per SPEC 6: the \
         fraction of weights exactly 0 and with |w| &lt; 1e-9 (batch-norm running statistics \
         not counted).</p>",
        env!("CARGO_PKG_VERSION"),
        escape(&utc_now()),
        runs.len()
    );
    html.push_str(
        "<h2>Final metrics</h2>\n<table><tr><th>run</th><th>backend</th><th>steps</th>\
        <th>val accuracy</th><th>val loss</th><th>exactly 0</th><th>|w| &lt; 1e-9</th>\
        <th>params</th><th>train time (s)</th></tr>\n",
    );
    for (run, dir) in runs.iter().zip(&args.runs) {
        let last = run.last();
        let backend = config_text(dir)
            .ok()
            .and_then(|t| t.parse::<toml::Table>().ok())
            .and_then(|t| {
                t.get("backend")
                    .and_then(|b| b.as_str().map(str::to_string))
            })
            .unwrap_or_else(|| "cpu".into());
        let _ = writeln!(
            html,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td>\
             <td>{}</td><td>{}</td></tr>",
            escape(&run.label),
            escape(&backend),
            num(last, "step", false),
            num(last, "val_accuracy", true),
            num(last, "val_loss", false),
            num(last, "zero_fraction", true),
            num(last, "below_fraction", true),
            num(last, "params", false),
            last.get("elapsed_s")
                .and_then(serde_json::Value::as_f64)
                .map(|s| format!("{s:.1}"))
                .unwrap_or_else(|| "-".into()),
        );
    }
    html.push_str("</table>\n<h2>Figures</h2>\n");
    for f in &files {
        let bytes = fs::read(f).with_context(|| format!("reading {}", f.display()))?;
        let name = f.file_stem().and_then(|s| s.to_str()).unwrap_or("figure");
        let _ = writeln!(
            html,
            "<figure><img class=\"figure\" alt=\"{0}\" src=\"data:image/png;base64,{1}\">\
             <figcaption>{0}</figcaption></figure>",
            escape(name),
            base64(&bytes)
        );
    }
    html.push_str("<h2>Configs</h2>\n");
    for (run, dir) in runs.iter().zip(&args.runs) {
        let text = config_text(dir).unwrap_or_else(|e| format!("({e:#})"));
        let _ = writeln!(
            html,
            "<h3>{}</h3>\n<pre>{}</pre>",
            escape(&run.label),
            escape(&text)
        );
    }
    // Counts the figures the browser decoded; the headless-browser test reads it back.
    html.push_str(
        "<script>window.addEventListener('load',function(){var n=0;\
         document.querySelectorAll('img.figure').forEach(function(i){\
         if(i.complete&&i.naturalWidth>0){n++;}});\
         document.body.setAttribute('data-figures-decoded',String(n));});</script>\n",
    );
    html.push_str("</body></html>\n");
    if let Some(parent) = args.out.parent().filter(|p| !p.as_os_str().is_empty()) {
        fs::create_dir_all(parent).with_context(|| format!("creating {}", parent.display()))?;
    }
    fs::write(&args.out, html).with_context(|| format!("writing {}", args.out.display()))?;
    let _ = fs::remove_dir_all(&figs);
    println!("{} ({} figures)", args.out.display(), files.len());
    Ok(files.len())
}

fn config_text(dir: &Path) -> anyhow::Result<String> {
    let p = dir.join("config.toml");
    fs::read_to_string(&p).with_context(|| format!("reading {}", p.display()))
}

/// The current UTC date and time, `YYYY-MM-DD HH:MM UTC`.
fn utc_now() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let days = (secs / 86_400) as i64;
    // civil-from-days (Howard Hinnant's algorithm)
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    let (h, min) = ((secs % 86_400) / 3600, (secs % 3600) / 60);
    format!("{y:04}-{m:02}-{d:02} {h:02}:{min:02} UTC")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_matches_rfc_4648_vectors() {
        for (input, out) in [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
            ("foobar", "Zm9vYmFy"),
        ] {
            assert_eq!(base64(input.as_bytes()), out, "{input}");
        }
        assert_eq!(escape("<a & \"b\">"), "&lt;a &amp; &quot;b&quot;&gt;");
    }
}
