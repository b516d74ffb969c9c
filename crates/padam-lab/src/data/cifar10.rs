//! CIFAR-10 (Krizhevsky 2009): 60,000 32x32 colour images in 10 classes, 50,000 train /
//! 10,000 test.
//!
//! Two layouts are read, chosen by [`load`] from what the path holds:
//!
//! * the original **binary batches** `data_batch_1.bin` .. `data_batch_5.bin` and
//!   `test_batch.bin` (optionally inside `cifar-10-batches-bin/`): records of 1 label byte then
//!   3072 bytes, the R, G and B planes of 32x32;
//! * the **image-folder** layout `train/<class>/<file>` and `test/<class>/<file>` of JPEG or PNG
//!   files (the JPEG q75 stand-in), either unpacked or straight from a `.tar.gz` / `.tar`
//!   archive, streamed. Files are decoded in parallel (rayon), once.
//!
//! Images are kept decoded as planar bytes, `[3, 32, 32]` each. [`load_cached`] keeps loaded
//! sets in memory for the process; [`load_with_cache_dir`] also writes them as binary
//! batches so that later runs skip JPEG decoding.

use std::collections::HashMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};

use burn::tensor::backend::Backend;
use burn::tensor::{Int, Tensor};
use rayon::prelude::*;

use super::augment::{hflip, random_crop, Normalize};
use super::Rng;

/// Channels per image.
pub const CHANNELS: usize = 3;
/// Image height.
pub const HEIGHT: usize = 32;
/// Image width.
pub const WIDTH: usize = 32;
/// Bytes per image (`3 * 32 * 32`).
pub const IMAGE_BYTES: usize = CHANNELS * HEIGHT * WIDTH;
/// Bytes per record of the binary format (label then image).
pub const RECORD_BYTES: usize = 1 + IMAGE_BYTES;
/// Number of classes.
pub const N_CLASSES: usize = 10;
/// Class names, in label order; these are also the image-folder names.
pub const CLASSES: [&str; N_CLASSES] = [
    "airplane",
    "automobile",
    "bird",
    "cat",
    "deer",
    "dog",
    "frog",
    "horse",
    "ship",
    "truck",
];
/// Per-channel mean of the training set (R, G, B), on the `[0, 1]` scale.
pub const MEAN: [f32; 3] = [0.4914, 0.4822, 0.4465];
/// Per-channel standard deviation of the training set (R, G, B), on the `[0, 1]` scale.
pub const STD: [f32; 3] = [0.2470, 0.2435, 0.2616];

/// Why CIFAR-10 could not be read; each variant names the file (for archive members,
/// `archive.tar.gz:member/path`).
#[derive(Debug, thiserror::Error)]
pub enum CifarError {
    /// A file or folder could not be read.
    #[error("{}: cannot read: {source}", path.display())]
    Io {
        /// The file or folder.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// A binary batch is not a whole number of 3073-byte records.
    #[error("{}: truncated: {len} bytes is not a whole number of {RECORD_BYTES}-byte records", path.display())]
    Truncated {
        /// The file.
        path: PathBuf,
        /// Its length.
        len: usize,
    },
    /// A binary batch holds no records.
    #[error("{}: no records", path.display())]
    Empty {
        /// The file.
        path: PathBuf,
    },
    /// A record's label is not a class.
    #[error("{}: record {record} has label {label}, not below {N_CLASSES}", path.display())]
    BadLabel {
        /// The file.
        path: PathBuf,
        /// 0-based record.
        record: usize,
        /// The label byte.
        label: u8,
    },
    /// A folder under `train/` or `test/` is not one of [`CLASSES`].
    #[error("{}: unknown class folder {class:?} (expected one of {CLASSES:?})", path.display())]
    UnknownClass {
        /// The offending file or folder.
        path: PathBuf,
        /// The folder name.
        class: String,
    },
    /// A file under `train/` or `test/` is not inside a class folder.
    #[error("{}: not in a <split>/<class>/<file> position", path.display())]
    BadLayout {
        /// The file.
        path: PathBuf,
    },
    /// An image file could not be decoded.
    #[error("{}: cannot decode image: {message}", path.display())]
    Decode {
        /// The file.
        path: PathBuf,
        /// The decoder's message.
        message: String,
    },
    /// An image is not 32x32.
    #[error("{}: image is {width}x{height}, expected {WIDTH}x{HEIGHT}", path.display())]
    WrongSize {
        /// The file.
        path: PathBuf,
        /// Width found.
        width: u32,
        /// Height found.
        height: u32,
    },
    /// A split has no images.
    #[error("{}: no {split} images found", path.display())]
    MissingSplit {
        /// The folder or archive.
        path: PathBuf,
        /// "train" or "test".
        split: &'static str,
    },
    /// The path is neither a CIFAR-10 folder nor an archive.
    #[error("{}: not a CIFAR-10 location (expected data_batch_*.bin + test_batch.bin, train/ and test/ class folders, or a .tar.gz of them)", path.display())]
    UnknownLayout {
        /// The path given.
        path: PathBuf,
    },
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> CifarError + '_ {
    move |source| CifarError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// One split: `images` holds `len * IMAGE_BYTES` bytes, each image as R, G, B planes of 32x32.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CifarSplit {
    /// Planar RGB bytes, image after image.
    pub images: Vec<u8>,
    /// Class of each image, `0..N_CLASSES`.
    pub labels: Vec<u8>,
}

/// How a batch is made: random crop with zero padding, random horizontal flip, per-channel
/// normalisation.
#[derive(Debug, Clone, PartialEq)]
pub struct Transform {
    /// Padding of the random crop (0 = no crop).
    pub crop_pad: usize,
    /// Flip each image left-right with probability 1/2.
    pub flip: bool,
    /// Per-channel normalisation.
    pub normalize: Normalize,
}

impl Default for Transform {
    /// Normalisation only (for evaluation).
    fn default() -> Self {
        Self {
            crop_pad: 0,
            flip: false,
            normalize: Normalize::new(&MEAN, &STD),
        }
    }
}

impl Transform {
    /// The standard training augmentation: crop with padding 4, random flip, normalisation.
    pub fn train() -> Self {
        Self {
            crop_pad: 4,
            flip: true,
            ..Self::default()
        }
    }
}

impl CifarSplit {
    /// Number of images.
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    /// True when there are no images.
    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    /// Planar bytes of image `i`.
    pub fn image(&self, i: usize) -> &[u8] {
        &self.images[i * IMAGE_BYTES..(i + 1) * IMAGE_BYTES]
    }

    /// Per-channel mean and standard deviation, on the `[0, 1]` scale.
    pub fn mean_std(&self) -> (Vec<f32>, Vec<f32>) {
        super::augment::channel_stats(&self.images, CHANNELS, HEIGHT * WIDTH)
    }

    /// The images `indices`, transformed, row-major `[len, 3, 32, 32]`, with their labels.
    pub fn batch_host(
        &self,
        indices: &[usize],
        transform: &Transform,
        rng: &mut Rng,
    ) -> (Vec<f32>, Vec<i64>) {
        let mut x = Vec::with_capacity(indices.len() * IMAGE_BYTES);
        let mut y = Vec::with_capacity(indices.len());
        for &i in indices {
            let src = self.image(i);
            if transform.crop_pad == 0 && !transform.flip {
                transform.normalize.extend(src, &mut x);
            } else {
                let mut img = if transform.crop_pad > 0 {
                    random_crop(src, CHANNELS, HEIGHT, WIDTH, transform.crop_pad, rng)
                } else {
                    src.to_vec()
                };
                if transform.flip && rng.below(2) == 1 {
                    hflip(&mut img, CHANNELS, HEIGHT, WIDTH);
                }
                transform.normalize.extend(&img, &mut x);
            }
            y.push(i64::from(self.labels[i]));
        }
        (x, y)
    }

    /// [`batch_host`](Self::batch_host) as tensors: images `[len, 3, 32, 32]`, labels `[len]`.
    pub fn batch<B: Backend>(
        &self,
        indices: &[usize],
        transform: &Transform,
        rng: &mut Rng,
        device: &B::Device,
    ) -> (Tensor<B, 4>, Tensor<B, 1, Int>) {
        let (x, y) = self.batch_host(indices, transform, rng);
        let shape = [indices.len(), CHANNELS, HEIGHT, WIDTH];
        super::batch_to_tensors(x, shape, y, device)
    }

    /// The split in the binary batch format (label byte + 3072 image bytes per record).
    pub fn to_binary(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.len() * RECORD_BYTES);
        for i in 0..self.len() {
            out.push(self.labels[i]);
            out.extend_from_slice(self.image(i));
        }
        out
    }

    fn append(&mut self, other: CifarSplit) {
        self.images.extend(other.images);
        self.labels.extend(other.labels);
    }
}

/// CIFAR-10 train and test splits.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Cifar10 {
    /// Training images (50,000 for the full set).
    pub train: CifarSplit,
    /// Test images (10,000 for the full set).
    pub test: CifarSplit,
}

impl Cifar10 {
    /// Write the set as binary batches `dir/data_batch_1.bin` (all training records) and
    /// `dir/test_batch.bin`, readable by [`load`].
    pub fn save_binary(&self, dir: &Path) -> Result<(), CifarError> {
        std::fs::create_dir_all(dir).map_err(io_err(dir))?;
        for (name, split) in [
            ("data_batch_1.bin", &self.train),
            ("test_batch.bin", &self.test),
        ] {
            let path = dir.join(name);
            let tmp = dir.join(format!("{name}.partial"));
            std::fs::write(&tmp, split.to_binary()).map_err(io_err(&tmp))?;
            std::fs::rename(&tmp, &path).map_err(io_err(&path))?;
        }
        Ok(())
    }
}

/// Parse one binary batch held in memory (`path` is only used in errors).
pub fn parse_binary(bytes: &[u8], path: &Path) -> Result<CifarSplit, CifarError> {
    if bytes.is_empty() {
        return Err(CifarError::Empty {
            path: path.to_path_buf(),
        });
    }
    if !bytes.len().is_multiple_of(RECORD_BYTES) {
        return Err(CifarError::Truncated {
            path: path.to_path_buf(),
            len: bytes.len(),
        });
    }
    let n = bytes.len() / RECORD_BYTES;
    let mut split = CifarSplit {
        images: Vec::with_capacity(n * IMAGE_BYTES),
        labels: Vec::with_capacity(n),
    };
    for (record, chunk) in bytes.chunks_exact(RECORD_BYTES).enumerate() {
        let label = chunk[0];
        if label as usize >= N_CLASSES {
            return Err(CifarError::BadLabel {
                path: path.to_path_buf(),
                record,
                label,
            });
        }
        split.labels.push(label);
        split.images.extend_from_slice(&chunk[1..]);
    }
    Ok(split)
}

/// Decode one JPEG or PNG file into planar RGB bytes; it must be 32x32.
pub fn decode_image(bytes: &[u8], path: &Path) -> Result<Vec<u8>, CifarError> {
    let img = image::load_from_memory(bytes).map_err(|e| CifarError::Decode {
        path: path.to_path_buf(),
        message: e.to_string(),
    })?;
    let rgb = img.to_rgb8();
    let (width, height) = rgb.dimensions();
    if (width as usize, height as usize) != (WIDTH, HEIGHT) {
        return Err(CifarError::WrongSize {
            path: path.to_path_buf(),
            width,
            height,
        });
    }
    let plane = HEIGHT * WIDTH;
    let mut out = vec![0u8; IMAGE_BYTES];
    for (p, px) in rgb.as_raw().chunks_exact(3).enumerate() {
        out[p] = px[0];
        out[plane + p] = px[1];
        out[2 * plane + p] = px[2];
    }
    Ok(out)
}

/// Where a file of the image-folder layout belongs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Which {
    Train,
    Test,
}

/// Classify `rel` (relative to the layout root, possibly below a prefix folder):
/// `None` for files outside `train/` and `test/` and for hidden files.
fn classify(rel: &Path, shown: &Path) -> Result<Option<(Which, u8)>, CifarError> {
    let parts: Vec<&str> = rel
        .components()
        .filter_map(|c| match c {
            std::path::Component::Normal(s) => s.to_str(),
            _ => None,
        })
        .collect();
    if parts.last().is_none_or(|f| f.starts_with('.')) {
        return Ok(None);
    }
    let Some(at) = parts.iter().position(|&p| p == "train" || p == "test") else {
        return Ok(None);
    };
    let which = if parts[at] == "train" {
        Which::Train
    } else {
        Which::Test
    };
    if parts.len() != at + 3 {
        return Err(CifarError::BadLayout {
            path: shown.to_path_buf(),
        });
    }
    let class = parts[at + 1];
    match CLASSES.iter().position(|&c| c == class) {
        Some(label) => Ok(Some((which, label as u8))),
        None => Err(CifarError::UnknownClass {
            path: shown.to_path_buf(),
            class: class.to_string(),
        }),
    }
}

/// A file of the image-folder layout, read but not decoded.
struct Member {
    shown: PathBuf,
    which: Which,
    label: u8,
    bytes: Vec<u8>,
}

/// Decode members in parallel into a data set, ordered by (split, class, file name).
fn decode_members(mut members: Vec<Member>, root: &Path) -> Result<Cifar10, CifarError> {
    members.sort_by(|a, b| (a.which, a.label, &a.shown).cmp(&(b.which, b.label, &b.shown)));
    let decoded: Vec<Vec<u8>> = members
        .par_iter()
        .map(|m| decode_image(&m.bytes, &m.shown))
        .collect::<Result<_, _>>()?;
    let mut set = Cifar10::default();
    for (m, img) in members.iter().zip(decoded) {
        let split = match m.which {
            Which::Train => &mut set.train,
            Which::Test => &mut set.test,
        };
        split.images.extend(img);
        split.labels.push(m.label);
    }
    for (split, name) in [(&set.train, "train"), (&set.test, "test")] {
        if split.is_empty() {
            return Err(CifarError::MissingSplit {
                path: root.to_path_buf(),
                split: name,
            });
        }
    }
    Ok(set)
}

/// Read the image-folder layout from a `.tar.gz` (or plain `.tar`) archive, streaming.
pub fn load_archive(path: &Path) -> Result<Cifar10, CifarError> {
    let file = std::fs::File::open(path).map_err(io_err(path))?;
    let reader: Box<dyn Read> = if path.extension().is_some_and(|e| e == "tar") {
        Box::new(std::io::BufReader::new(file))
    } else {
        Box::new(flate2::read::MultiGzDecoder::new(std::io::BufReader::new(
            file,
        )))
    };
    let mut archive = tar::Archive::new(reader);
    let mut members = Vec::new();
    for entry in archive.entries().map_err(io_err(path))? {
        let mut entry = entry.map_err(io_err(path))?;
        if !entry.header().entry_type().is_file() {
            continue;
        }
        let rel = entry.path().map_err(io_err(path))?.into_owned();
        let shown = PathBuf::from(format!("{}:{}", path.display(), rel.display()));
        let Some((which, label)) = classify(&rel, &shown)? else {
            continue;
        };
        let mut bytes = Vec::with_capacity(entry.size() as usize);
        entry.read_to_end(&mut bytes).map_err(io_err(&shown))?;
        members.push(Member {
            shown,
            which,
            label,
            bytes,
        });
    }
    decode_members(members, path)
}

/// Read the image-folder layout from an unpacked folder holding `train/` and `test/`.
pub fn load_folder(root: &Path) -> Result<Cifar10, CifarError> {
    let mut files = Vec::new();
    for (split, which) in [("train", Which::Train), ("test", Which::Test)] {
        let dir = root.join(split);
        if !dir.is_dir() {
            continue;
        }
        for class_entry in std::fs::read_dir(&dir).map_err(io_err(&dir))? {
            let class_path = class_entry.map_err(io_err(&dir))?.path();
            let name = class_path
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            if name.starts_with('.') {
                continue;
            }
            if !class_path.is_dir() {
                return Err(CifarError::BadLayout { path: class_path });
            }
            let Some(label) = CLASSES.iter().position(|&c| c == name) else {
                return Err(CifarError::UnknownClass {
                    path: class_path,
                    class: name,
                });
            };
            for file in std::fs::read_dir(&class_path).map_err(io_err(&class_path))? {
                let file = file.map_err(io_err(&class_path))?.path();
                let hidden = file
                    .file_name()
                    .is_some_and(|n| n.to_string_lossy().starts_with('.'));
                if !hidden {
                    files.push((file, which, label as u8));
                }
            }
        }
    }
    let members = files
        .into_par_iter()
        .map(|(file, which, label)| {
            let bytes = std::fs::read(&file).map_err(io_err(&file))?;
            Ok(Member {
                shown: file,
                which,
                label,
                bytes,
            })
        })
        .collect::<Result<Vec<_>, CifarError>>()?;
    decode_members(members, root)
}

/// Read binary batches from `dir`: every `data_batch_<n>.bin` (in order of `n`) for training
/// and `test_batch.bin` for test.
pub fn load_binary_dir(dir: &Path) -> Result<Cifar10, CifarError> {
    let mut batches: Vec<(u32, PathBuf)> = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(io_err(dir))? {
        let path = entry.map_err(io_err(dir))?.path();
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        if let Some(n) = name
            .strip_prefix("data_batch_")
            .and_then(|s| s.strip_suffix(".bin"))
            .and_then(|s| s.parse().ok())
        {
            batches.push((n, path));
        }
    }
    batches.sort();
    if batches.is_empty() {
        return Err(CifarError::MissingSplit {
            path: dir.to_path_buf(),
            split: "train",
        });
    }
    let mut set = Cifar10::default();
    for (_, path) in &batches {
        let bytes = std::fs::read(path).map_err(io_err(path))?;
        set.train.append(parse_binary(&bytes, path)?);
    }
    let test = dir.join("test_batch.bin");
    if !test.is_file() {
        return Err(CifarError::MissingSplit {
            path: dir.to_path_buf(),
            split: "test",
        });
    }
    let bytes = std::fs::read(&test).map_err(io_err(&test))?;
    set.test = parse_binary(&bytes, &test)?;
    Ok(set)
}

fn is_archive(path: &Path) -> bool {
    let name = path.to_string_lossy();
    name.ends_with(".tar.gz") || name.ends_with(".tgz") || name.ends_with(".tar")
}

/// Load CIFAR-10 from any supported location: an archive file; a folder of binary batches
/// (or holding `cifar-10-batches-bin/`); a folder with `train/` and `test/` class folders; or a
/// folder holding exactly one `*.tar.gz` archive (such as `cifar10-jpeg/`).
pub fn load(path: impl AsRef<Path>) -> Result<Cifar10, CifarError> {
    let path = path.as_ref();
    if path.is_file() {
        return if is_archive(path) {
            load_archive(path)
        } else {
            Err(CifarError::UnknownLayout {
                path: path.to_path_buf(),
            })
        };
    }
    if !path.is_dir() {
        return Err(CifarError::Io {
            path: path.to_path_buf(),
            source: std::io::Error::new(std::io::ErrorKind::NotFound, "no such file or folder"),
        });
    }
    if path.join("test_batch.bin").is_file() || path.join("data_batch_1.bin").is_file() {
        return load_binary_dir(path);
    }
    let nested = path.join("cifar-10-batches-bin");
    if nested.is_dir() {
        return load_binary_dir(&nested);
    }
    if path.join("train").is_dir() || path.join("test").is_dir() {
        return load_folder(path);
    }
    let mut archives: Vec<PathBuf> = std::fs::read_dir(path)
        .map_err(io_err(path))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_file() && is_archive(p))
        .collect();
    if archives.len() == 1 {
        return load_archive(&archives.remove(0));
    }
    Err(CifarError::UnknownLayout {
        path: path.to_path_buf(),
    })
}

/// [`load`], remembered for the rest of the process: a second call with the same path returns
/// the same decoded data without reading anything.
pub fn load_cached(path: impl AsRef<Path>) -> Result<Arc<Cifar10>, CifarError> {
    static CACHE: OnceLock<Mutex<HashMap<PathBuf, Arc<Cifar10>>>> = OnceLock::new();
    let path = path.as_ref();
    let key = path.canonicalize().unwrap_or_else(|_| path.to_path_buf());
    let cache = CACHE.get_or_init(Default::default);
    if let Some(hit) = cache.lock().expect("cache lock").get(&key) {
        return Ok(Arc::clone(hit));
    }
    let set = Arc::new(load(path)?);
    cache
        .lock()
        .expect("cache lock")
        .insert(key, Arc::clone(&set));
    Ok(set)
}

/// [`load`] with a file cache: when `cache_dir` already holds binary batches they are read
/// instead of `path`; otherwise `path` is loaded and the result written to `cache_dir`.
pub fn load_with_cache_dir(
    path: impl AsRef<Path>,
    cache_dir: impl AsRef<Path>,
) -> Result<Cifar10, CifarError> {
    let cache_dir = cache_dir.as_ref();
    if cache_dir.join("data_batch_1.bin").is_file() && cache_dir.join("test_batch.bin").is_file() {
        return load_binary_dir(cache_dir);
    }
    let set = load(path)?;
    set.save_binary(cache_dir)?;
    Ok(set)
}
