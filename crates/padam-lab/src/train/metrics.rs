//! The run's `metrics.jsonl`: one JSON line per evaluation, appended; read back by step and
//! cut back to a checkpoint's step on resume.

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::path::Path;

use super::checkpoint;

/// Append one line to `path` (created if missing).
pub fn append_line(path: &Path, line: &str) -> anyhow::Result<()> {
    let mut f = OpenOptions::new().create(true).append(true).open(path)?;
    writeln!(f, "{line}")?;
    Ok(())
}

/// The metrics line of `run_dir` recorded at `step`, if any.
pub fn metrics_line_at(run_dir: &Path, step: usize) -> Option<serde_json::Value> {
    fs::read_to_string(run_dir.join("metrics.jsonl"))
        .ok()?
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find(|v| v["step"].as_u64() == Some(step as u64))
}

/// Truncate `metrics.jsonl` to the lines of steps `<= step` (lines a killed run wrote after
/// its last checkpoint are replayed by the resumed run).
pub fn truncate_metrics(path: &Path, step: usize) -> anyhow::Result<()> {
    let Ok(text) = fs::read_to_string(path) else {
        return Ok(());
    };
    let mut kept = String::new();
    for line in text.lines() {
        let Ok(v) = serde_json::from_str::<serde_json::Value>(line) else {
            break; // a torn last line
        };
        if v.get("step").and_then(|s| s.as_u64()).unwrap_or(u64::MAX) as usize > step {
            break;
        }
        kept.push_str(line);
        kept.push('\n');
    }
    checkpoint::write_atomic(path, kept.as_bytes())
}
