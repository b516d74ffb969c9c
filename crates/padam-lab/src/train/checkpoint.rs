//! Checkpoint files: written atomically (temp file, fsync, rename, fsync of the folder), the
//! newest K kept, and checked on load (magic, format version, config hash, checksum) so a
//! corrupt or mismatched file is an error, never a silent fresh start.
//!
//! Layout (little endian): magic `PADAMCKP`, format version `u32`, config hash `u64`, step
//! `u64`, then three length-prefixed (`u64`) sections: the loop state as JSON, the model record
//! and the optimizer record (burn `BinBytesRecorder` with full precision), then an FNV-1a
//! checksum `u64` of everything before it.

use std::fs::{self, File};
use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use burn::record::{FullPrecisionSettings, Record};
use burn::tensor::backend::Backend;
use serde::{Deserialize, Serialize};

use super::config::{fnv1a, TrainConfig};

/// File magic.
pub const MAGIC: &[u8; 8] = b"PADAMCKP";
/// Format version written and accepted.
pub const FORMAT_VERSION: u32 = 1;

/// The loop's own state (everything but model and optimizer records).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LoopState {
    /// Optimizer steps done; the data position is `(step / steps_per_epoch, step % ...)`.
    pub step: usize,
    /// Sum of training losses read back since the last evaluation.
    pub loss_sum: f64,
    /// Number of losses in `loss_sum`.
    pub loss_count: usize,
    /// Steps of the current evaluation interval whose loss is still pending (not yet read
    /// back); always 0 in a checkpoint, which reads them back first.
    pub pending: usize,
    /// Training wall time so far, seconds (informational).
    pub train_seconds: f64,
    /// Pruning masks of a magnitude-pruning run (`[prune]`), absent otherwise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub masks: Option<super::prune::MaskState>,
    /// The target-sparsity controller's state (`[sparsity]`), absent otherwise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub controller: Option<padam::ControllerState>,
}

/// A decoded checkpoint.
#[derive(Debug, Clone)]
pub struct Checkpoint {
    /// Hash of the config that wrote it.
    pub config_hash: u64,
    /// Loop state.
    pub state: LoopState,
    /// Model record bytes.
    pub model: Vec<u8>,
    /// Optimizer record bytes.
    pub optim: Vec<u8>,
}

impl Checkpoint {
    /// Serialize.
    pub fn encode(&self) -> Vec<u8> {
        let state = serde_json::to_vec(&self.state).expect("loop state serializes");
        let mut out = Vec::with_capacity(64 + state.len() + self.model.len() + self.optim.len());
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
        out.extend_from_slice(&self.config_hash.to_le_bytes());
        out.extend_from_slice(&(self.state.step as u64).to_le_bytes());
        for section in [&state, &self.model, &self.optim] {
            out.extend_from_slice(&(section.len() as u64).to_le_bytes());
            out.extend_from_slice(section);
        }
        let sum = fnv1a(&out);
        out.extend_from_slice(&sum.to_le_bytes());
        out
    }

    /// Parse and verify; `path` is only for messages.
    pub fn decode(bytes: &[u8], path: &Path) -> anyhow::Result<Self> {
        let p = path.display();
        if bytes.len() < 8 + 4 + 8 + 8 + 3 * 8 + 8 || &bytes[..8] != MAGIC {
            bail!("{p} is not a padam checkpoint (bad magic or truncated)");
        }
        let version = u32::from_le_bytes(bytes[8..12].try_into().expect("4 bytes"));
        if version != FORMAT_VERSION {
            bail!("{p}: checkpoint format version {version}, this build reads {FORMAT_VERSION}");
        }
        let (body, tail) = bytes.split_at(bytes.len() - 8);
        let stored = u64::from_le_bytes(tail.try_into().expect("8 bytes"));
        if fnv1a(body) != stored {
            bail!("{p} is corrupt (checksum mismatch); delete it to resume from an older one");
        }
        let config_hash = u64::from_le_bytes(body[12..20].try_into().expect("8 bytes"));
        let step = u64::from_le_bytes(body[20..28].try_into().expect("8 bytes")) as usize;
        let mut at = 28;
        let mut sections = Vec::with_capacity(3);
        for _ in 0..3 {
            let len_bytes = body
                .get(at..at + 8)
                .with_context(|| format!("{p} is corrupt (truncated section)"))?;
            let len = u64::from_le_bytes(len_bytes.try_into().expect("8 bytes")) as usize;
            at += 8;
            let section = body
                .get(at..at.saturating_add(len))
                .with_context(|| format!("{p} is corrupt (section past the end)"))?;
            sections.push(section.to_vec());
            at += len;
        }
        if at != body.len() {
            bail!("{p} is corrupt (trailing bytes)");
        }
        let optim = sections.pop().expect("3 sections");
        let model = sections.pop().expect("3 sections");
        let state: LoopState = serde_json::from_slice(&sections[0])
            .with_context(|| format!("{p}: unreadable loop state"))?;
        if state.step != step {
            bail!(
                "{p} is corrupt (header step {step} vs state step {})",
                state.step
            );
        }
        Ok(Self {
            config_hash,
            state,
            model,
            optim,
        })
    }
}

/// The most a record section may claim to hold: larger than any model padam trains (GPT-2
/// small with its Adam state is under 2 GB). A forged length beyond it is an error instead of
/// an allocation that aborts the process.
const MAX_RECORD_BYTES: usize = 1 << 31;

/// Decode one record section (`what`: "model" or "optimizer") of the checkpoint at `path`.
///
/// As burn's `BinBytesRecorder` decodes it (bincode, standard configuration, the record in a
/// `BurnRecord`), but with a size limit, so a forged length prefix cannot make the decoder
/// allocate exabytes; and burn's panics on a record that does not fit the module become an
/// error naming the file, without a printed panic.
pub fn decode_record<B: Backend, R: Record<B>>(
    bytes: Vec<u8>,
    device: &B::Device,
    path: &Path,
    what: &str,
) -> anyhow::Result<R> {
    type Item<B, R> = <R as Record<B>>::Item<FullPrecisionSettings>;
    let config = bincode::config::standard().with_limit::<MAX_RECORD_BYTES>();
    let hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(|_| {}));
    let decoded = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        bincode::borrow_decode_from_slice::<
            '_,
            bincode::serde::BorrowCompat<burn::record::BurnRecord<Item<B, R>, B>>,
            _,
        >(&bytes, config)
        .map(|(record, _)| R::from_item(record.0.item, device))
    }));
    std::panic::set_hook(hook);
    match decoded {
        Ok(Ok(record)) => Ok(record),
        Ok(Err(e)) => bail!("{}: unreadable {what} record: {e}", path.display()),
        Err(_) => bail!(
            "{}: the {what} record does not match this {what}",
            path.display()
        ),
    }
}

/// The file name of the checkpoint at `step`.
pub fn file_name(step: usize) -> String {
    format!("ckpt-{step:09}.bin")
}

/// Checkpoints in `dir`, oldest first, by step.
pub fn list(dir: &Path) -> anyhow::Result<Vec<(usize, PathBuf)>> {
    let mut out = Vec::new();
    if !dir.is_dir() {
        return Ok(out);
    }
    for entry in fs::read_dir(dir).with_context(|| format!("listing {}", dir.display()))? {
        let path = entry?.path();
        let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
            continue;
        };
        if let Some(step) = name
            .strip_prefix("ckpt-")
            .and_then(|s| s.strip_suffix(".bin"))
            .and_then(|s| s.parse::<usize>().ok())
        {
            out.push((step, path));
        }
    }
    out.sort();
    Ok(out)
}

/// Write `bytes` to `path` atomically: temp file in the same folder, fsync, rename, fsync of
/// the folder.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let tmp = dir.join(format!(
        ".{}.tmp",
        path.file_name()
            .and_then(|n| n.to_str())
            .unwrap_or("checkpoint")
    ));
    {
        let mut f = File::create(&tmp).with_context(|| format!("creating {}", tmp.display()))?;
        f.write_all(bytes)
            .with_context(|| format!("writing {}", tmp.display()))?;
        f.sync_all()
            .with_context(|| format!("syncing {}", tmp.display()))?;
    }
    fs::rename(&tmp, path)
        .with_context(|| format!("renaming {} to {}", tmp.display(), path.display()))?;
    if let Ok(d) = File::open(dir) {
        // Persist the rename; not all platforms allow syncing a directory.
        let _ = d.sync_all();
    }
    Ok(())
}

/// Remove temp files a killed run left behind (`.ckpt-*.tmp`); they were never renamed, so
/// they are never read.
pub fn remove_stale_temps(dir: &Path) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if name.starts_with(".ckpt-") && name.ends_with(".tmp") {
            let _ = fs::remove_file(entry.path());
        }
    }
}

/// Write the checkpoint into `dir` and delete all but the newest `keep`.
pub fn save(dir: &Path, ckpt: &Checkpoint, keep: usize) -> anyhow::Result<PathBuf> {
    let path = dir.join(file_name(ckpt.state.step));
    write_atomic(&path, &ckpt.encode())?;
    let all = list(dir)?;
    if all.len() > keep {
        for (_, old) in &all[..all.len() - keep] {
            fs::remove_file(old).with_context(|| format!("removing {}", old.display()))?;
        }
    }
    Ok(path)
}

/// Load the newest checkpoint of `dir`, checking it was written for `config`: by the config
/// hash or, for a checkpoint of an older padam whose config serialised differently (so its hash
/// differs), by the run's own `config.toml` (written when the run started) reading back as
/// `config` today.
pub fn load_for(dir: &Path, config: &TrainConfig) -> anyhow::Result<(PathBuf, Checkpoint)> {
    let same_as_saved = || {
        fs::read_to_string(dir.join("config.toml"))
            .ok()
            .and_then(|text| super::overrides::parse(&text, &[]).ok())
            .is_some_and(|saved| saved == *config)
    };
    load_checked(dir, config.hash(), same_as_saved)
}

/// Load the newest checkpoint of `dir`, checking it was written for `config_hash`.
pub fn load_latest(dir: &Path, config_hash: u64) -> anyhow::Result<(PathBuf, Checkpoint)> {
    load_checked(dir, config_hash, || false)
}

fn load_checked(
    dir: &Path,
    config_hash: u64,
    same_config: impl FnOnce() -> bool,
) -> anyhow::Result<(PathBuf, Checkpoint)> {
    let all = list(dir)?;
    let Some((named_step, path)) = all.last() else {
        bail!(
            "no checkpoint (ckpt-*.bin) in {}: the run has not saved one yet",
            dir.display()
        );
    };
    let bytes = fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    let ckpt = Checkpoint::decode(&bytes, path)?;
    if ckpt.config_hash != config_hash && same_config() {
        tracing::warn!(
            "{}: written by an older padam (config hash {:016x}, today {:016x}); the run's \
             config.toml reads as this config, so it resumes",
            path.display(),
            ckpt.config_hash,
            config_hash
        );
    } else if ckpt.config_hash != config_hash {
        bail!(
            "{} was written by a different config (hash {:016x}, this config {:016x}); \
             resume with the run's own config ({}) or start a new run directory",
            path.display(),
            ckpt.config_hash,
            config_hash,
            dir.join("config.toml").display()
        );
    }
    if ckpt.state.step != *named_step {
        bail!(
            "{} holds step {}, not the step {named_step} its name says; delete it to resume \
             from an older checkpoint",
            path.display(),
            ckpt.state.step
        );
    }
    Ok((path.clone(), ckpt))
}

/// The path and shape of every float parameter, in module order.
pub fn param_shapes<B: Backend, M: burn::module::Module<B>>(
    module: &M,
) -> Vec<(String, Vec<usize>)> {
    struct Shapes(Vec<(String, Vec<usize>)>);
    impl<B: Backend> padam::paths::PathVisitor<B> for Shapes {
        fn visit<const D: usize>(
            &mut self,
            path: &str,
            param: &burn::module::Param<burn::tensor::Tensor<B, D>>,
        ) {
            self.0.push((path.to_string(), param.val().dims().to_vec()));
        }
    }
    let mut s = Shapes(Vec::new());
    padam::paths::visit_with_paths(module, &mut s);
    s.0
}

/// An error unless the model restored from `path` has the parameters, by path and shape, of
/// the model this config builds (a checkpoint forged with this config's hash, say).
pub fn check_shapes(
    path: &Path,
    expected: &[(String, Vec<usize>)],
    loaded: &[(String, Vec<usize>)],
) -> anyhow::Result<()> {
    if expected.len() != loaded.len() {
        bail!(
            "{}: the model record has {} parameters, this config's model {}",
            path.display(),
            loaded.len(),
            expected.len()
        );
    }
    for ((p, want), (_, got)) in expected.iter().zip(loaded) {
        if want != got {
            bail!(
                "{}: parameter {p} has shape {got:?} in the checkpoint, {want:?} in this config's \
                 model",
                path.display()
            );
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(step: usize) -> Checkpoint {
        Checkpoint {
            config_hash: 42,
            state: LoopState {
                step,
                loss_sum: 1.5,
                loss_count: 3,
                pending: 0,
                train_seconds: 0.25,
                masks: None,
                controller: None,
            },
            model: vec![1, 2, 3],
            optim: vec![4, 5],
        }
    }

    #[test]
    fn round_trip_and_corruption() {
        let c = sample(7);
        let bytes = c.encode();
        let back = Checkpoint::decode(&bytes, Path::new("x")).unwrap();
        assert_eq!(back.state, c.state);
        assert_eq!(back.model, c.model);
        assert_eq!(back.optim, c.optim);
        for i in [0, 9, 30, bytes.len() - 1] {
            let mut bad = bytes.clone();
            bad[i] ^= 1;
            assert!(
                Checkpoint::decode(&bad, Path::new("x")).is_err(),
                "byte {i}"
            );
        }
        assert!(Checkpoint::decode(&bytes[..bytes.len() - 3], Path::new("x")).is_err());
    }

    #[test]
    fn keeps_last_k_and_checks_hash() {
        let dir = std::env::temp_dir().join(format!("padam-ckpt-unit-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        for s in [10, 20, 30, 40] {
            save(&dir, &sample(s), 2).unwrap();
        }
        let steps: Vec<usize> = list(&dir).unwrap().into_iter().map(|(s, _)| s).collect();
        assert_eq!(steps, vec![30, 40]);
        let (_, c) = load_latest(&dir, 42).unwrap();
        assert_eq!(c.state.step, 40);
        let err = load_latest(&dir, 43).unwrap_err().to_string();
        assert!(err.contains("different config"), "{err}");
        // A config whose hash is not 42: refused, unless the run's config.toml reads as it (a
        // checkpoint of an older padam, whose serialisation hashed differently).
        let text = "[model]\nkind = \"mlp\"\n[data]\ndataset = \"digits\"\n[optimizer]\n\
                    kind = \"padam\"\np = 0.8\nlambda = 1e-3\ndecay_params = \"all\"\n\
                    [lr]\npeak = 0.01\n[train]\nbatch_size = 8\nepochs = 1\n";
        let config = super::super::overrides::parse(text, &[]).unwrap();
        assert_ne!(config.hash(), 42);
        assert!(load_for(&dir, &config).is_err());
        fs::write(dir.join("config.toml"), text).unwrap();
        assert_eq!(load_for(&dir, &config).unwrap().1.state.step, 40);
        let other = super::super::overrides::parse(text, &["optimizer.p=0.7".into()]).unwrap();
        assert!(load_for(&dir, &other).is_err());
        fs::remove_dir_all(&dir).unwrap();
    }
}
