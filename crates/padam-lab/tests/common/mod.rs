//! Helpers shared by padam-lab's integration tests (each test binary uses some of them).
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

/// A digits MLP made sparse by PAdam (a few seconds of training): the export tests' run.
pub const SPARSE_DIGITS: &str = r#"
seed = 6
[model]
kind = "mlp"
hidden = [128]
[data]
dataset = "digits"
test_limit = 200
[optimizer]
kind = "padam"
p = 0.8
lambda = 6e-2
[lr]
peak = 3e-2
schedule = "constant"
[train]
batch_size = 32
epochs = 8
eval_every = 45
"#;

/// `padam train`'s arguments for a quiet run into `out` (resumed from its checkpoint or not).
pub fn quiet_args(out: impl Into<PathBuf>, resume: bool) -> padam_lab::train::TrainArgs {
    padam_lab::train::TrainArgs {
        out: Some(out.into()),
        resume,
        quiet: true,
        ..Default::default()
    }
}

/// `padam train` in this process, one training at a time: burn's backend RNG (dropout) and its
/// collective are one per process, and two trainings on parallel test threads would re-seed
/// or join them under each other.
pub fn run_locked(
    cfg: &padam_lab::train::config::TrainConfig,
    args: &padam_lab::train::TrainArgs,
) -> anyhow::Result<padam_lab::train::Summary> {
    static TRAINING: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _turn = TRAINING.lock().unwrap_or_else(|e| e.into_inner());
    padam_lab::train::run_config(cfg, args)
}

/// A fresh, empty folder under the system temp dir, removed on drop.
pub struct TempDir(PathBuf);

impl TempDir {
    /// A new folder; `tag` names it, and the process id and a counter keep it unique.
    pub fn new(tag: &str) -> Self {
        Self(fresh(tag))
    }

    /// The folder itself.
    pub fn root(&self) -> &Path {
        &self.0
    }

    /// `name` inside the folder.
    pub fn path(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }

    /// Write `bytes` to `rel` inside the folder (parents created); returns the file's path.
    pub fn write(&self, rel: &str, bytes: &[u8]) -> PathBuf {
        let path = self.0.join(rel);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, bytes).unwrap();
        path
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A fresh, empty folder under the system temp dir that stays after the test (so a failing
/// test leaves its files to look at).
pub fn tmp(tag: &str) -> PathBuf {
    fresh(tag)
}

fn fresh(tag: &str) -> PathBuf {
    static COUNTER: AtomicUsize = AtomicUsize::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let p = std::env::temp_dir().join(format!("padam-lab-{tag}-{}-{n}", std::process::id()));
    let _ = std::fs::remove_dir_all(&p);
    std::fs::create_dir_all(&p).unwrap();
    p
}

/// A run directory's metrics lines without the timing fields (which differ run to run).
pub fn metrics(dir: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(dir.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| {
            let mut v: serde_json::Value = serde_json::from_str(l).unwrap();
            let o = v.as_object_mut().unwrap();
            o.remove("items_per_sec");
            o.remove("elapsed_s");
            o.remove("host");
            v
        })
        .collect()
}

/// A 32x32 test image whose pixels depend on `seed`.
pub fn rgb_image(seed: u8) -> image::RgbImage {
    image::RgbImage::from_fn(32, 32, |x, y| {
        image::Rgb([
            (x * 8) as u8,
            (y * 8) as u8,
            seed.wrapping_mul(40).wrapping_add((x + y) as u8),
        ])
    })
}

/// `img` encoded as `format` (JPEG, PNG).
pub fn encode(img: &image::RgbImage, format: image::ImageFormat) -> Vec<u8> {
    let mut out = std::io::Cursor::new(Vec::new());
    img.write_to(&mut out, format).unwrap();
    out.into_inner()
}

/// A gzipped tar of `(path, bytes)` members.
pub fn tar_gz(members: &[(String, Vec<u8>)]) -> Vec<u8> {
    let enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    let mut builder = tar::Builder::new(enc);
    for (rel, bytes) in members {
        let mut header = tar::Header::new_gnu();
        header.set_size(bytes.len() as u64);
        header.set_mode(0o644);
        header.set_cksum();
        builder.append_data(&mut header, rel, &bytes[..]).unwrap();
    }
    builder.into_inner().unwrap().finish().unwrap()
}
