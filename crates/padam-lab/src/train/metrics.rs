//! The run's `metrics.jsonl`: one JSON line per evaluation, appended; read back by step and
//! cut back to a checkpoint's step on resume.

use std::fs::{self, OpenOptions};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use anyhow::Context;

use super::checkpoint;

/// Append one line to `path` (created if missing).
pub fn append_line(path: &Path, line: &str) -> anyhow::Result<()> {
    let mut f = OpenOptions::new().create(true).append(true).open(path)?;
    writeln!(f, "{line}")?;
    Ok(())
}

/// The text of `run_dir`'s metrics and the file it came from: `metrics.jsonl`, or where there
/// is none `metrics.jsonl.gz` (archived runs, such as those under `results/`, are kept
/// gzipped: a ResNet18 run's 740 KB of per-tensor lines is 70 KB). A run that trains always
/// writes the plain file.
pub fn read_metrics(run_dir: &Path) -> anyhow::Result<(PathBuf, String)> {
    let plain = run_dir.join("metrics.jsonl");
    let gz = run_dir.join("metrics.jsonl.gz");
    if plain.exists() || !gz.exists() {
        let text = fs::read_to_string(&plain)
            .with_context(|| format!("{}: cannot read", plain.display()))?;
        return Ok((plain, text));
    }
    let mut text = String::new();
    let file = fs::File::open(&gz).with_context(|| format!("{}: cannot open", gz.display()))?;
    flate2::read::GzDecoder::new(file)
        .read_to_string(&mut text)
        .with_context(|| format!("{}: not a gzipped text file", gz.display()))?;
    Ok((gz, text))
}

/// The metrics line of `run_dir` recorded at `step`, if any.
pub fn metrics_line_at(run_dir: &Path, step: usize) -> Option<serde_json::Value> {
    read_metrics(run_dir)
        .ok()?
        .1
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find(|v| v["step"].as_u64() == Some(step as u64))
}

/// Make `metrics.jsonl` the history of a run resumed at `step`: the lines of steps `<= step`
/// are kept (lines a killed run wrote after its last checkpoint are replayed by the resumed
/// run), in step order, once each. `expected` are the steps `<= step` the run evaluated at.
/// What cannot be kept is said, never silently dropped: returns a warning when the history
/// lacks some of `expected` (a deleted file, unreadable lines) or when an unreadable file was
/// moved aside (to `metrics.jsonl.unreadable`). A torn last line (a kill mid-write) is normal
/// and needs no warning.
pub fn truncate_metrics(
    path: &Path,
    step: usize,
    expected: &[usize],
) -> anyhow::Result<Option<String>> {
    let text = match fs::read_to_string(path) {
        Ok(t) => t,
        Err(_) if expected.is_empty() => return Ok(None),
        Err(_) => {
            return Ok(Some(format!(
                "{} is missing: the {} evaluations up to step {step} are lost; the lines from \
                 here on are appended to a new file",
                path.display(),
                expected.len()
            )))
        }
    };
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    let mut kept: std::collections::BTreeMap<usize, &str> = std::collections::BTreeMap::new();
    let mut unreadable = 0;
    for (i, line) in lines.iter().enumerate() {
        let at = serde_json::from_str::<serde_json::Value>(line)
            .ok()
            .and_then(|v| v.get("step").and_then(|s| s.as_u64()));
        match at {
            Some(s) if s as usize <= step => {
                kept.entry(s as usize).or_insert(line);
            }
            Some(_) => {}
            None if i + 1 == lines.len() => {} // torn by a kill mid-write
            None => unreadable += 1,
        }
    }
    let mut notes = Vec::new();
    if kept.is_empty() && unreadable > 0 {
        let aside = path.with_extension("jsonl.unreadable");
        fs::rename(path, &aside).with_context(|| format!("moving {} aside", path.display()))?;
        notes.push(format!(
            "{} held no readable metrics line; moved to {}",
            path.display(),
            aside.display()
        ));
    } else if unreadable > 0 {
        notes.push(format!(
            "{unreadable} unreadable lines of {} dropped",
            path.display()
        ));
    }
    let missing: Vec<usize> = expected
        .iter()
        .copied()
        .filter(|s| !kept.contains_key(s))
        .collect();
    if !missing.is_empty() {
        notes.push(format!(
            "the history lacks the evaluations at {} of the {} steps up to {step} ({}): they \
             are lost, the run continues from step {step}",
            missing.len(),
            expected.len(),
            describe_steps(&missing)
        ));
    }
    let mut out = String::new();
    for line in kept.values() {
        out.push_str(line);
        out.push('\n');
    }
    checkpoint::write_atomic(path, out.as_bytes())?;
    Ok((!notes.is_empty()).then(|| notes.join("; ")))
}

/// The steps as a list, shortened to the first three and the last when there are more than
/// four (`steps 1000, 2000, 3000, ... 9000`).
fn describe_steps(steps: &[usize]) -> String {
    let list = |s: &[usize]| {
        s.iter()
            .map(usize::to_string)
            .collect::<Vec<_>>()
            .join(", ")
    };
    match steps {
        [first @ .., last] if steps.len() > 4 => format!("steps {}, ... {last}", list(&first[..3])),
        _ => list(steps),
    }
}
