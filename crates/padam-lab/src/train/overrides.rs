//! From text to a checked [`TrainConfig`]: the TOML file, the `--set key=value` overrides
//! applied to it, and errors that name the dotted key of the offending line.

use anyhow::{anyhow, bail, Context};
use serde::Deserialize;

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
    let table = overridden_table(text, overrides)?;
    let log_every_default = !table
        .get("optimizer")
        .and_then(toml::Value::as_table)
        .is_some_and(|o| o.contains_key("check_every"));
    let mut config: TrainConfig = strict(table, "", |d| TrainConfig::deserialize(d))
        .map_err(|e| anyhow!("invalid config: {e}"))?;
    if log_every_default {
        if let Some(decay) = config.optimizer.decay.as_mut() {
            decay.check_every = config.train.log_every;
        }
    }
    config.validate()?;
    Ok(config)
}

/// Deserialize with `read` from a TOML table (the keys under `prefix`); an error names the
/// dotted key and its value, e.g. `train.batch_size = "x": invalid type: ...`.
pub(super) fn strict<T>(
    table: toml::Table,
    prefix: &str,
    read: impl for<'a, 'b> FnOnce(
        serde_path_to_error::Deserializer<'a, 'b, toml::Value>,
    ) -> Result<T, toml::de::Error>,
) -> Result<T, String> {
    let mut track = serde_path_to_error::Track::new();
    let result = read(serde_path_to_error::Deserializer::new(
        toml::Value::Table(table.clone()),
        &mut track,
    ));
    result.map_err(|e| {
        let path = track.path();
        let mut key: Vec<String> = (!prefix.is_empty())
            .then(|| prefix.to_string())
            .into_iter()
            .collect();
        let mut value = Some(toml::Value::Table(table));
        for segment in path.iter() {
            let (name, next) = match (segment, value.take()) {
                (serde_path_to_error::Segment::Map { key }, Some(toml::Value::Table(mut t))) => {
                    (key.clone(), t.remove(key))
                }
                (serde_path_to_error::Segment::Seq { index }, Some(toml::Value::Array(mut a))) => {
                    let v = (*index < a.len()).then(|| a.swap_remove(*index));
                    (index.to_string(), v)
                }
                (other, _) => (other.to_string(), None),
            };
            key.push(name);
            value = next;
        }
        let key = key.join(".");
        let message = e.message().trim();
        match value {
            // An error that already names its key below this one (a nested table's own check).
            _ if !key.is_empty() && message.starts_with(&format!("{key}.")) => message.to_string(),
            _ if key.is_empty() => message.to_string(),
            Some(toml::Value::Table(_)) | None => format!("{key}: {message}"),
            Some(v) => format!("{key} = {v}: {message}"),
        }
    })
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
