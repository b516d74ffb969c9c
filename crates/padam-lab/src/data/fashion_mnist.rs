//! Fashion-MNIST (Xiao, Rasul, Vollgraf 2017): 70,000 grey 28x28 images of clothing in 10
//! classes, 60,000 train / 10,000 test, in the IDX format of MNIST.
//!
//! [`load`] reads a folder holding `train-images-idx3-ubyte`, `train-labels-idx1-ubyte`,
//! `t10k-images-idx3-ubyte` and `t10k-labels-idx1-ubyte`, each either raw or gzip-compressed
//! (with or without a `.gz` suffix; gzip is recognised by its magic bytes). Every problem is
//! reported with the file it was found in.

use std::io::Read;
use std::path::{Path, PathBuf};

use burn::tensor::backend::Backend;
use burn::tensor::{Int, Tensor};

use rayon::prelude::*;

use super::augment::{Normalize, RandomAffine};
use super::Rng;

/// Image height.
pub const ROWS: usize = 28;
/// Image width.
pub const COLS: usize = 28;
/// Number of classes.
pub const N_CLASSES: usize = 10;
/// Class names in label order.
pub const CLASSES: [&str; N_CLASSES] = [
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
];
/// Mean pixel of the training set, on the `[0, 1]` scale.
pub const MEAN: f32 = 0.2860;
/// Standard deviation of the training pixels, on the `[0, 1]` scale.
pub const STD: f32 = 0.3530;

/// Magic number of an IDX file of unsigned bytes with 3 dimensions (images).
pub const IMAGES_MAGIC: u32 = 0x0000_0803;
/// Magic number of an IDX file of unsigned bytes with 1 dimension (labels).
pub const LABELS_MAGIC: u32 = 0x0000_0801;

/// Why Fashion-MNIST (or any IDX) data could not be read; each variant names the file.
#[derive(Debug, thiserror::Error)]
pub enum IdxError {
    /// The file could not be opened or read.
    #[error("{}: cannot read: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// The file starts like gzip but does not decompress.
    #[error("{}: gzip decompression failed: {source}", path.display())]
    Gzip {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// The first four bytes are not the expected IDX magic number.
    #[error("{}: bad magic number {found:#010x}, expected {expected:#010x} (IDX {what})", path.display())]
    BadMagic {
        /// The file.
        path: PathBuf,
        /// Magic read.
        found: u32,
        /// Magic expected.
        expected: u32,
        /// What the file should hold ("images" or "labels").
        what: &'static str,
    },
    /// The file ends before the header or the data it announces.
    #[error("{}: truncated: the {what} need {expected} bytes, the file has {found}", path.display())]
    Truncated {
        /// The file.
        path: PathBuf,
        /// Which part is cut short ("header", "pixels", "labels").
        what: &'static str,
        /// Bytes needed.
        expected: u128,
        /// Bytes present.
        found: usize,
    },
    /// The file is longer than its header announces.
    #[error(
        "{}: {extra} bytes after the {count} items of {item} the header announces (does the \
         header misstate the count or the item size?)",
        path.display()
    )]
    TrailingBytes {
        /// The file.
        path: PathBuf,
        /// Items announced.
        count: usize,
        /// One item's shape as the header gives it (`28x28` for an image, `1` for a label).
        item: String,
        /// Extra bytes.
        extra: usize,
    },
    /// The images have other dimensions than expected.
    #[error("{}: images are {rows}x{cols}, expected {expected_rows}x{expected_cols}", path.display())]
    WrongDims {
        /// The file.
        path: PathBuf,
        /// Rows read.
        rows: usize,
        /// Columns read.
        cols: usize,
        /// Rows expected.
        expected_rows: usize,
        /// Columns expected.
        expected_cols: usize,
    },
    /// Image and label files disagree on the number of items.
    #[error("{} holds {n_images} images but {} holds {n_labels} labels", images.display(), labels.display())]
    CountMismatch {
        /// The images file.
        images: PathBuf,
        /// The labels file.
        labels: PathBuf,
        /// Images announced.
        n_images: usize,
        /// Labels announced.
        n_labels: usize,
    },
    /// A label is not a valid class.
    #[error("{}: label {label} of item {index} is not below {n_classes}", path.display())]
    BadLabel {
        /// The file.
        path: PathBuf,
        /// 0-based item.
        index: usize,
        /// The label.
        label: u8,
        /// Number of classes.
        n_classes: usize,
    },
    /// `name` or `name.gz` exists but is a folder (or another non-file).
    #[error("{} is not a file (a folder?); the data files must be plain or gzipped IDX files", path.display())]
    NotAFile {
        /// The path.
        path: PathBuf,
    },
    /// Neither `name` nor `name.gz` exists in the folder.
    #[error("{}: neither {name} nor {name}.gz found", dir.display())]
    Missing {
        /// The folder searched.
        dir: PathBuf,
        /// The base file name.
        name: String,
    },
}

/// Parsed IDX images: `pixels` is `count * rows * cols` bytes, image after image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdxImages {
    /// Number of images.
    pub count: usize,
    /// Rows per image.
    pub rows: usize,
    /// Columns per image.
    pub cols: usize,
    /// Pixels, row-major, image after image.
    pub pixels: Vec<u8>,
}

fn be_u32(bytes: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]])
}

fn check_header(
    bytes: &[u8],
    path: &Path,
    magic: u32,
    what: &'static str,
    dims: usize,
) -> Result<Vec<usize>, IdxError> {
    let header = 4 + 4 * dims;
    if bytes.len() < 4 {
        return Err(IdxError::Truncated {
            path: path.to_path_buf(),
            what: "header",
            expected: header as u128,
            found: bytes.len(),
        });
    }
    let found = be_u32(bytes, 0);
    if found != magic {
        return Err(IdxError::BadMagic {
            path: path.to_path_buf(),
            found,
            expected: magic,
            what,
        });
    }
    if bytes.len() < header {
        return Err(IdxError::Truncated {
            path: path.to_path_buf(),
            what: "header",
            expected: header as u128,
            found: bytes.len(),
        });
    }
    let dims: Vec<usize> = (0..dims)
        .map(|i| be_u32(bytes, 4 + 4 * i) as usize)
        .collect();
    let need = header as u128 + dims.iter().map(|&d| d as u128).product::<u128>();
    if (bytes.len() as u128) < need {
        return Err(IdxError::Truncated {
            path: path.to_path_buf(),
            what,
            expected: need,
            found: bytes.len(),
        });
    }
    if bytes.len() as u128 > need {
        return Err(IdxError::TrailingBytes {
            path: path.to_path_buf(),
            count: dims[0],
            item: if dims.len() > 1 {
                dims[1..]
                    .iter()
                    .map(|d| d.to_string())
                    .collect::<Vec<_>>()
                    .join("x")
            } else {
                "1 byte".to_string()
            },
            extra: (bytes.len() as u128 - need) as usize,
        });
    }
    Ok(dims)
}

/// Parse an IDX3 images file held in memory (`path` is only used in errors).
pub fn parse_images(bytes: &[u8], path: &Path) -> Result<IdxImages, IdxError> {
    let dims = check_header(bytes, path, IMAGES_MAGIC, "images", 3)?;
    Ok(IdxImages {
        count: dims[0],
        rows: dims[1],
        cols: dims[2],
        pixels: bytes[16..].to_vec(),
    })
}

/// Parse an IDX1 labels file held in memory (`path` is only used in errors).
pub fn parse_labels(bytes: &[u8], path: &Path) -> Result<Vec<u8>, IdxError> {
    check_header(bytes, path, LABELS_MAGIC, "labels", 1)?;
    Ok(bytes[8..].to_vec())
}

/// Read a file, gunzipping it when it starts with the gzip magic bytes.
pub fn read_maybe_gz(path: &Path) -> Result<Vec<u8>, IdxError> {
    let raw = std::fs::read(path).map_err(|source| IdxError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    if raw.starts_with(&[0x1f, 0x8b]) {
        let mut out = Vec::new();
        flate2::read::MultiGzDecoder::new(&raw[..])
            .read_to_end(&mut out)
            .map_err(|source| IdxError::Gzip {
                path: path.to_path_buf(),
                source,
            })?;
        Ok(out)
    } else {
        Ok(raw)
    }
}

/// `dir/name.gz` if it exists, else `dir/name` if it exists.
fn find(dir: &Path, name: &str) -> Result<PathBuf, IdxError> {
    let gz = dir.join(format!("{name}.gz"));
    if gz.is_file() {
        return Ok(gz);
    }
    let raw = dir.join(name);
    if raw.is_file() {
        return Ok(raw);
    }
    if let Some(not_file) = [&gz, &raw].into_iter().find(|p| p.exists()) {
        return Err(IdxError::NotAFile {
            path: not_file.clone(),
        });
    }
    Err(IdxError::Missing {
        dir: dir.to_path_buf(),
        name: name.to_string(),
    })
}

/// One split of grey-scale images with labels, held as bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MnistSplit {
    /// Pixels `0..=255`, `rows * cols` per image, image after image.
    pub images: Vec<u8>,
    /// Class of each image, `0..N_CLASSES`.
    pub labels: Vec<u8>,
    /// Image height.
    pub rows: usize,
    /// Image width.
    pub cols: usize,
}

/// How a batch is made from bytes: normalisation and optional random rotation / translation.
#[derive(Debug, Clone, PartialEq)]
pub struct Transform {
    /// Mean subtracted (on the `[0, 1]` scale).
    pub mean: f32,
    /// Standard deviation divided by (on the `[0, 1]` scale).
    pub std: f32,
    /// Random rotation and translation, when set.
    pub augment: Option<RandomAffine>,
}

impl Default for Transform {
    /// Normalise with the training set's mean and std, no augmentation (for evaluation).
    fn default() -> Self {
        Self {
            mean: MEAN,
            std: STD,
            augment: None,
        }
    }
}

impl Transform {
    /// Normalise and augment with ±10° rotations and ±2 px translations (for training).
    pub fn train() -> Self {
        Self {
            augment: Some(RandomAffine::default()),
            ..Self::default()
        }
    }
}

impl MnistSplit {
    /// Build a split from parsed files, checking counts, dimensions and labels.
    pub fn from_parts(
        images: IdxImages,
        images_path: &Path,
        labels: Vec<u8>,
        labels_path: &Path,
        expected_dims: Option<(usize, usize)>,
    ) -> Result<Self, IdxError> {
        if let Some((er, ec)) = expected_dims {
            if (images.rows, images.cols) != (er, ec) {
                return Err(IdxError::WrongDims {
                    path: images_path.to_path_buf(),
                    rows: images.rows,
                    cols: images.cols,
                    expected_rows: er,
                    expected_cols: ec,
                });
            }
        }
        if images.count != labels.len() {
            return Err(IdxError::CountMismatch {
                images: images_path.to_path_buf(),
                labels: labels_path.to_path_buf(),
                n_images: images.count,
                n_labels: labels.len(),
            });
        }
        if let Some(index) = labels.iter().position(|&l| l as usize >= N_CLASSES) {
            return Err(IdxError::BadLabel {
                path: labels_path.to_path_buf(),
                index,
                label: labels[index],
                n_classes: N_CLASSES,
            });
        }
        Ok(Self {
            images: images.pixels,
            labels,
            rows: images.rows,
            cols: images.cols,
        })
    }

    /// Number of images.
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    /// True when there are no images.
    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    /// Pixels of image `i`.
    pub fn image(&self, i: usize) -> &[u8] {
        let n = self.rows * self.cols;
        &self.images[i * n..(i + 1) * n]
    }

    /// Mean and standard deviation of all pixels, on the `[0, 1]` scale.
    pub fn mean_std(&self) -> (f32, f32) {
        let (m, s) = super::augment::channel_stats(&self.images, 1, self.rows * self.cols);
        (m[0], s[0])
    }

    /// The images `indices` as normalised (and, if asked, augmented) values
    /// `[len, 1, rows, cols]` row-major, with their labels.
    pub fn batch_host(
        &self,
        indices: &[usize],
        transform: &Transform,
        rng: &mut Rng,
    ) -> (Vec<f32>, Vec<i64>) {
        let norm = Normalize::new(&[transform.mean], &[transform.std]);
        let n = self.rows * self.cols;
        let mut x = vec![0.0; indices.len() * n];
        let y = indices.iter().map(|&i| i64::from(self.labels[i])).collect();
        match &transform.augment {
            Some(aug) => {
                // The draws in image order from the one rng, then the images on rayon's
                // threads (the affine sampling is most of a batch's host time).
                let draws: Vec<_> = indices.iter().map(|_| aug.draw(rng)).collect();
                // (`max(1)`: images of no pixels make no chunks, and no work)
                x.par_chunks_mut(n.max(1))
                    .zip(indices.par_iter().zip(&draws))
                    .for_each(|(out, (&i, draw))| {
                        let img = draw.apply(self.image(i), 1, self.rows, self.cols);
                        norm.write(&img, out);
                    });
            }
            None => {
                for (out, &i) in x.chunks_exact_mut(n.max(1)).zip(indices) {
                    norm.write(self.image(i), out);
                }
            }
        }
        (x, y)
    }

    /// [`batch_host`](Self::batch_host) as tensors: images `[len, 1, rows, cols]` and labels
    /// `[len]`.
    pub fn batch<B: Backend>(
        &self,
        indices: &[usize],
        transform: &Transform,
        rng: &mut Rng,
        device: &B::Device,
    ) -> (Tensor<B, 4>, Tensor<B, 1, Int>) {
        let (x, y) = self.batch_host(indices, transform, rng);
        let shape = [indices.len(), 1, self.rows, self.cols];
        super::batch_to_tensors(x, shape, y, device)
    }
}

/// Fashion-MNIST train and test splits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FashionMnist {
    /// The 60,000 training images.
    pub train: MnistSplit,
    /// The 10,000 test images.
    pub test: MnistSplit,
}

/// Load one split from `dir`; `prefix` is `"train"` or `"t10k"`. Images must be 28x28.
pub fn load_split(dir: &Path, prefix: &str) -> Result<MnistSplit, IdxError> {
    let images_path = find(dir, &format!("{prefix}-images-idx3-ubyte"))?;
    let labels_path = find(dir, &format!("{prefix}-labels-idx1-ubyte"))?;
    let images = parse_images(&read_maybe_gz(&images_path)?, &images_path)?;
    let labels = parse_labels(&read_maybe_gz(&labels_path)?, &labels_path)?;
    MnistSplit::from_parts(
        images,
        &images_path,
        labels,
        &labels_path,
        Some((ROWS, COLS)),
    )
}

/// Load both splits from a folder of IDX files (raw or gzip).
pub fn load(dir: impl AsRef<Path>) -> Result<FashionMnist, IdxError> {
    let dir = dir.as_ref();
    Ok(FashionMnist {
        train: load_split(dir, "train")?,
        test: load_split(dir, "t10k")?,
    })
}
