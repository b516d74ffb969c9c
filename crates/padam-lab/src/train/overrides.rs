//! From text to a checked [`TrainConfig`]: the TOML file, the `--set key=value` overrides
//! applied to it, and errors that name the dotted key of the offending line.

use anyhow::{bail, Context};

use super::config::TrainConfig;

/// The config text as a TOML table with the `--set` overrides applied, not yet checked.
pub fn overridden_table(text: &str, overrides: &[String]) -> anyhow::Result<toml::Table> {
    let mut value: toml::Table = toml::from_str(text).context("parsing the config TOML")?;
    for o in overrides {
        apply_override(&mut value, o)?;
    }
    Ok(value)
}

/// Parse a TOML text and apply `key=value` overrides (dotted keys; values in TOML syntax,
/// bare words taken as strings).
pub fn parse(text: &str, overrides: &[String]) -> anyhow::Result<TrainConfig> {
    let value = overridden_table(text, overrides)?;
    // Deserialize from text (the file as overridden) so errors point at the offending line.
    let resolved = toml::to_string(&value).context("re-serializing the config")?;
    let config: TrainConfig = toml::from_str(&resolved)
        .map_err(|e| anyhow::anyhow!("invalid config: {}", describe_toml_error(&e, &resolved)))?;
    config.validate()?;
    Ok(config)
}

/// The error message plus the dotted key of the line it points at.
fn describe_toml_error(e: &toml::de::Error, text: &str) -> String {
    let msg = e.message().trim().to_string();
    let Some(span) = e.span().filter(|s| s.start > 0) else {
        return msg; // no position, or the whole document (a missing top-level table)
    };
    // Walk the text up to the error: the last `[table]` header and the key on the error line.
    let before = &text[..span.start.min(text.len())];
    let mut table = String::new();
    for line in before.lines() {
        let t = line.trim();
        if t.starts_with('[') && t.ends_with(']') {
            table = t.trim_matches(|c| c == '[' || c == ']').to_string();
        }
    }
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let line_end = text[line_start..]
        .find('\n')
        .map_or(text.len(), |i| line_start + i);
    let line = &text[line_start..line_end];
    if line.trim_start().starts_with('[') {
        let header = line.trim().trim_matches(|c| c == '[' || c == ']');
        return format!("[{header}]: {msg}");
    }
    let key = line.split_once('=').map(|(k, _)| k.trim()).unwrap_or("");
    let path = match (table.is_empty(), key.is_empty()) {
        (_, true) if table.is_empty() => return msg,
        (_, true) => table,
        (true, false) => key.to_string(),
        (false, false) => format!("{table}.{key}"),
    };
    format!(
        "{path} = {}: {msg}",
        line.split_once('=').map_or("", |(_, v)| v.trim())
    )
}

/// Apply one `a.b.c=value` override to a TOML table.
pub fn apply_override(root: &mut toml::Table, spec: &str) -> anyhow::Result<()> {
    let (key, raw) = spec
        .split_once('=')
        .with_context(|| format!("--set {spec:?}: expected key=value"))?;
    let key = key.trim();
    let raw = raw.trim();
    anyhow::ensure!(!key.is_empty(), "--set {spec:?}: empty key");
    let parts: Vec<&str> = key.split('.').collect();
    if raw.is_empty() {
        // `key=`: remove the key (used by --epochs / --iterations to clear the other).
        let mut table = Some(root);
        for part in &parts[..parts.len() - 1] {
            table = match table.and_then(|t| t.get_mut(*part)) {
                Some(toml::Value::Table(t)) => Some(t),
                _ => None,
            };
        }
        if let Some(t) = table {
            t.remove(parts[parts.len() - 1]);
        }
        return Ok(());
    }
    let value: toml::Value = match toml::from_str::<toml::Table>(&format!("v = {raw}")) {
        Ok(mut t) => t.remove("v").expect("parsed key"),
        Err(_) => toml::Value::String(raw.to_string()),
    };
    let mut table = root;
    for (i, part) in parts[..parts.len() - 1].iter().enumerate() {
        let entry = table
            .entry(part.to_string())
            .or_insert_with(|| toml::Value::Table(toml::Table::new()));
        table = match entry {
            toml::Value::Table(t) => t,
            _ => bail!("--set {spec:?}: `{}` is not a table", parts[..=i].join(".")),
        };
    }
    table.insert(parts[parts.len() - 1].to_string(), value);
    Ok(())
}
