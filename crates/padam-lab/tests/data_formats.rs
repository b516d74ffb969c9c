//! Parsers of the dataset formats, on tiny files written here into a fresh temporary folder;
//! plus checks on the real data when `PADAM_DATA` names a folder laid out like the shared data
//! folder (`fashion-mnist/`, `tinyshakespeare/input.txt`, `cifar10-jpeg/`).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use burn::backend::Flex;
use padam_lab::data::augment::Normalize;
use padam_lab::data::cifar10::{self, CifarError};
use padam_lab::data::fashion_mnist::{self, IdxError};
use padam_lab::data::shakespeare::{self, Part, ShakespeareError};
use padam_lab::data::Rng;
use proptest::prelude::*;

mod common;
use common::{encode, rgb_image, tar_gz, TempDir};

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    enc.write_all(bytes).unwrap();
    enc.finish().unwrap()
}

/// The `PADAM_DATA` folder, or `None` (with a note) when unset.
fn real_data(sub: &str) -> Option<PathBuf> {
    match std::env::var_os("PADAM_DATA") {
        Some(root) => Some(PathBuf::from(root).join(sub)),
        None => {
            println!("PADAM_DATA unset: skipping the check on the real {sub} data");
            None
        }
    }
}

// ---------------------------------------------------------------- Fashion-MNIST (IDX)

fn idx_images(count: u32, rows: u32, cols: u32) -> Vec<u8> {
    let mut b = Vec::new();
    b.extend(0x0803u32.to_be_bytes());
    b.extend(count.to_be_bytes());
    b.extend(rows.to_be_bytes());
    b.extend(cols.to_be_bytes());
    b.extend((0..count * rows * cols).map(|i| (i % 256) as u8));
    b
}

fn idx_labels(labels: &[u8]) -> Vec<u8> {
    let mut b = Vec::new();
    b.extend(0x0801u32.to_be_bytes());
    b.extend((labels.len() as u32).to_be_bytes());
    b.extend_from_slice(labels);
    b
}

/// A Fashion-MNIST folder with 3 train images (raw files) and 2 test images (gzip).
fn write_fashion(dir: &TempDir) {
    dir.write("train-images-idx3-ubyte", &idx_images(3, 28, 28));
    dir.write("train-labels-idx1-ubyte", &idx_labels(&[0, 9, 4]));
    dir.write("t10k-images-idx3-ubyte.gz", &gzip(&idx_images(2, 28, 28)));
    dir.write("t10k-labels-idx1-ubyte.gz", &gzip(&idx_labels(&[1, 2])));
}

fn err_text<E: std::fmt::Display>(r: Result<impl std::fmt::Debug, E>) -> String {
    r.expect_err("expected an error").to_string()
}

#[test]
fn idx_good_files_raw_and_gzip() {
    let dir = TempDir::new("idx-good");
    write_fashion(&dir);
    let set = fashion_mnist::load(dir.root()).unwrap();
    assert_eq!((set.train.len(), set.test.len()), (3, 2));
    assert_eq!(set.train.labels, vec![0, 9, 4]);
    assert_eq!(set.test.labels, vec![1, 2]);
    assert_eq!((set.train.rows, set.train.cols), (28, 28));
    assert_eq!(set.train.image(1)[0], (784 % 256) as u8);

    let t = fashion_mnist::Transform::default();
    let mut rng = Rng::new(0);
    let (x, y) = set
        .train
        .batch::<Flex>(&[2, 0], &t, &mut rng, &Default::default());
    assert_eq!(x.dims(), [2, 1, 28, 28]);
    assert_eq!(
        y.into_data().convert::<i64>().to_vec::<i64>().unwrap(),
        vec![4, 0]
    );
    let x: Vec<f32> = x.into_data().to_vec().unwrap();
    let expect =
        (f32::from(set.train.image(2)[5]) / 255.0 - fashion_mnist::MEAN) / fashion_mnist::STD;
    assert!((x[5] - expect).abs() < 1e-5);
}

#[test]
fn idx_augmentation_is_seeded() {
    let dir = TempDir::new("idx-aug");
    write_fashion(&dir);
    let set = fashion_mnist::load(dir.root()).unwrap();
    let t = fashion_mnist::Transform::train();
    let a = set.train.batch_host(&[0, 1, 2], &t, &mut Rng::new(5));
    let b = set.train.batch_host(&[0, 1, 2], &t, &mut Rng::new(5));
    let c = set.train.batch_host(&[0, 1, 2], &t, &mut Rng::new(6));
    let plain = set
        .train
        .batch_host(&[0, 1, 2], &Default::default(), &mut Rng::new(5));
    assert_eq!(a, b);
    assert_ne!(a.0, c.0);
    assert_ne!(a.0, plain.0);
    assert_eq!(a.1, plain.1);
}

/// A batch's images are augmented on several threads and come out as one thread makes them:
/// each image's transform drawn in order from the one rng, then applied and normalised.
#[test]
fn idx_augmented_batch_equals_the_images_one_by_one() {
    let dir = TempDir::new("idx-aug-order");
    write_fashion(&dir);
    let set = fashion_mnist::load(dir.root()).unwrap();
    let t = fashion_mnist::Transform::train();
    let aug = t.augment.expect("train() augments");
    // More images than threads, repeats included.
    let indices: Vec<usize> = (0..40).map(|k| (k * 7) % 3).collect();
    let mut rng = Rng::new(11);
    let (x, _) = set.train.batch_host(&indices, &t, &mut rng);
    let norm = Normalize::new(&[t.mean], &[t.std]);
    let mut one = Rng::new(11);
    let mut expect = Vec::new();
    for &i in &indices {
        let img = aug.apply(set.train.image(i), 1, 28, 28, &mut one);
        norm.extend(&img, &mut expect);
    }
    let bits = |v: &[f32]| v.iter().map(|f| f.to_bits()).collect::<Vec<_>>();
    assert_eq!(bits(&x), bits(&expect));
    // The batch drew what the images one by one draw, no more.
    assert_eq!(rng.below(1 << 30), one.below(1 << 30));
}

#[test]
fn idx_bad_magic_names_file() {
    let dir = TempDir::new("idx-magic");
    write_fashion(&dir);
    let mut bad = idx_labels(&[0, 9, 4]);
    bad[3] = 0x03;
    dir.write("train-labels-idx1-ubyte", &bad);
    let err = fashion_mnist::load(dir.root()).unwrap_err();
    assert!(
        matches!(err, IdxError::BadMagic { found: 0x803, .. }),
        "{err:?}"
    );
    let text = err.to_string();
    assert!(
        text.contains("train-labels-idx1-ubyte") && text.contains("magic"),
        "{text}"
    );
}

#[test]
fn idx_truncated_names_file() {
    let dir = TempDir::new("idx-trunc");
    write_fashion(&dir);
    let full = idx_images(3, 28, 28);
    dir.write("train-images-idx3-ubyte", &full[..full.len() - 1]);
    let text = err_text(fashion_mnist::load(dir.root()));
    assert!(
        text.contains("train-images-idx3-ubyte") && text.contains("truncated"),
        "{text}"
    );
    // A header cut short is truncated too.
    dir.write("train-images-idx3-ubyte", &full[..10]);
    let err = fashion_mnist::load(dir.root()).unwrap_err();
    assert!(
        matches!(err, IdxError::Truncated { what: "header", .. }),
        "{err:?}"
    );
    // Extra bytes are reported as well.
    let mut long = full.clone();
    long.push(0);
    dir.write("train-images-idx3-ubyte", &long);
    let err = fashion_mnist::load(dir.root()).unwrap_err();
    assert!(
        matches!(err, IdxError::TrailingBytes { extra: 1, .. }),
        "{err:?}"
    );
}

#[test]
fn idx_count_mismatch_names_both_files() {
    let dir = TempDir::new("idx-count");
    write_fashion(&dir);
    dir.write("t10k-labels-idx1-ubyte.gz", &gzip(&idx_labels(&[1, 2, 3])));
    let err = fashion_mnist::load(dir.root()).unwrap_err();
    assert!(
        matches!(
            err,
            IdxError::CountMismatch {
                n_images: 2,
                n_labels: 3,
                ..
            }
        ),
        "{err:?}"
    );
    let text = err.to_string();
    assert!(
        text.contains("t10k-images-idx3-ubyte.gz") && text.contains("t10k-labels-idx1-ubyte.gz")
    );
}

#[test]
fn idx_wrong_dims_bad_label_and_missing_file() {
    let dir = TempDir::new("idx-dims");
    write_fashion(&dir);
    dir.write("train-images-idx3-ubyte", &idx_images(3, 27, 28));
    let err = fashion_mnist::load(dir.root()).unwrap_err();
    assert!(
        matches!(
            err,
            IdxError::WrongDims {
                rows: 27,
                cols: 28,
                ..
            }
        ),
        "{err:?}"
    );
    assert!(err.to_string().contains("train-images-idx3-ubyte"));

    write_fashion(&dir);
    dir.write("train-labels-idx1-ubyte", &idx_labels(&[0, 10, 4]));
    let err = fashion_mnist::load(dir.root()).unwrap_err();
    assert!(
        matches!(
            err,
            IdxError::BadLabel {
                index: 1,
                label: 10,
                ..
            }
        ),
        "{err:?}"
    );

    write_fashion(&dir);
    std::fs::remove_file(dir.root().join("t10k-images-idx3-ubyte.gz")).unwrap();
    let text = err_text(fashion_mnist::load(dir.root()));
    assert!(text.contains("t10k-images-idx3-ubyte"), "{text}");

    write_fashion(&dir);
    dir.write("t10k-images-idx3-ubyte.gz", &[0x1f, 0x8b, 1, 2, 3]);
    let err = fashion_mnist::load(dir.root()).unwrap_err();
    assert!(matches!(err, IdxError::Gzip { .. }), "{err:?}");
}

// ---------------------------------------------------------------- Tiny Shakespeare

#[test]
fn shakespeare_vocab_split_and_batches() {
    let text = "First Citizen:\nBefore we proceed any further, hear me speak.\n".repeat(3);
    let set = shakespeare::Shakespeare::from_text(&text).unwrap();
    let mut chars: Vec<char> = text.chars().collect();
    chars.sort_unstable();
    chars.dedup();
    assert_eq!(set.vocab.chars(), &chars[..]);
    let n = text.chars().count();
    assert_eq!(set.train.len(), n * 9 / 10);
    assert_eq!(set.train.len() + set.val.len(), n);
    let all: Vec<u32> = set.train.iter().chain(&set.val).copied().collect();
    assert_eq!(set.vocab.decode(&all), text);
    assert_eq!(
        set.vocab.encode("hear").unwrap(),
        set.vocab.encode("hear").unwrap()
    );
    assert!(matches!(
        set.vocab.encode("hear!"),
        Err(ShakespeareError::UnknownChar { ch: '!' })
    ));

    let (x, y) = set.batch_host(Part::Train, 4, 8, &mut Rng::new(1));
    assert_eq!((x.len(), y.len()), (32, 32));
    for row in 0..4 {
        assert_eq!(&x[row * 8 + 1..row * 8 + 8], &y[row * 8..row * 8 + 7]);
    }
    assert_eq!(
        (x.clone(), y.clone()),
        set.batch_host(Part::Train, 4, 8, &mut Rng::new(1))
    );
    let (xt, yt) = set.batch::<Flex>(Part::Val, 2, 5, &mut Rng::new(2), &Default::default());
    assert_eq!((xt.dims(), yt.dims()), ([2, 5], [2, 5]));
    let xv = xt.into_data().convert::<i64>().to_vec::<i64>().unwrap();
    assert!(xv.iter().all(|&t| (t as usize) < set.vocab.len()));
}

#[test]
fn shakespeare_load_from_folder_and_errors() {
    let dir = TempDir::new("shakespeare");
    dir.write("input.txt", b"abcabcabcabcd\n");
    let set = shakespeare::load(dir.root()).unwrap();
    assert_eq!(set.vocab.len(), 5);
    dir.write("bad.txt", &[b'a', 0xff, b'b']);
    let text = err_text(shakespeare::load(dir.root().join("bad.txt")));
    assert!(text.contains("bad.txt") && text.contains("UTF-8"), "{text}");
    dir.write("one.txt", b"a");
    assert!(matches!(
        shakespeare::load(dir.root().join("one.txt")),
        Err(ShakespeareError::TooShort { chars: 1, .. })
    ));
    let text = err_text(shakespeare::load(dir.root().join("nope.txt")));
    assert!(text.contains("nope.txt"), "{text}");
}

// ---------------------------------------------------------------- CIFAR-10

/// A record: label then 3072 bytes derived from `seed`.
fn record(label: u8, seed: u8) -> Vec<u8> {
    let mut r = vec![label];
    r.extend((0..3072u32).map(|i| (i as u8).wrapping_mul(7).wrapping_add(seed)));
    r
}

#[test]
fn cifar_binary_good_files() {
    let dir = TempDir::new("cifar-bin");
    dir.write("data_batch_1.bin", &[record(3, 1), record(9, 2)].concat());
    dir.write("data_batch_2.bin", &record(0, 3));
    dir.write("test_batch.bin", &record(5, 4));
    dir.write("batches.meta.txt", b"airplane\n");
    let set = cifar10::load(dir.root()).unwrap();
    assert_eq!(set.train.labels, vec![3, 9, 0]);
    assert_eq!(set.test.labels, vec![5]);
    assert_eq!(set.train.image(2), &record(0, 3)[1..]);

    let mut rng = Rng::new(0);
    let (x, y) = set.train.batch::<Flex>(
        &[1, 2],
        &cifar10::Transform::default(),
        &mut rng,
        &Default::default(),
    );
    assert_eq!(x.dims(), [2, 3, 32, 32]);
    assert_eq!(
        y.into_data().convert::<i64>().to_vec::<i64>().unwrap(),
        vec![9, 0]
    );
    let x: Vec<f32> = x.into_data().to_vec().unwrap();
    // Channel 1 (G) of image 0 of the batch, first pixel.
    let v = f32::from(set.train.image(1)[1024]);
    let expect = (v / 255.0 - cifar10::MEAN[1]) / cifar10::STD[1];
    assert!((x[1024] - expect).abs() < 1e-5);

    // Training transform: seeded, same labels, different pixels from the plain batch.
    let t = cifar10::Transform::train();
    let a = set.train.batch_host(&[0, 1, 2], &t, &mut Rng::new(9));
    let b = set.train.batch_host(&[0, 1, 2], &t, &mut Rng::new(9));
    let plain = set
        .train
        .batch_host(&[0, 1, 2], &Default::default(), &mut Rng::new(9));
    assert_eq!(a, b);
    assert_eq!(a.1, plain.1);
    assert_ne!(a.0, plain.0);

    // Nested cifar-10-batches-bin/ is found too.
    let outer = TempDir::new("cifar-nested");
    outer.write("cifar-10-batches-bin/data_batch_1.bin", &record(1, 1));
    outer.write("cifar-10-batches-bin/test_batch.bin", &record(2, 2));
    assert_eq!(cifar10::load(outer.root()).unwrap().train.labels, vec![1]);
}

#[test]
fn cifar_binary_truncated_bad_label_missing_test() {
    let dir = TempDir::new("cifar-bin-bad");
    let full = [record(3, 1), record(9, 2)].concat();
    dir.write("data_batch_1.bin", &full[..full.len() - 5]);
    dir.write("test_batch.bin", &record(5, 4));
    let err = cifar10::load(dir.root()).unwrap_err();
    assert!(matches!(err, CifarError::Truncated { .. }), "{err:?}");
    let text = err.to_string();
    assert!(
        text.contains("data_batch_1.bin") && text.contains("truncated"),
        "{text}"
    );

    dir.write("data_batch_1.bin", &[record(3, 1), record(10, 2)].concat());
    let err = cifar10::load(dir.root()).unwrap_err();
    assert!(
        matches!(
            err,
            CifarError::BadLabel {
                record: 1,
                label: 10,
                ..
            }
        ),
        "{err:?}"
    );

    dir.write("data_batch_1.bin", &record(3, 1));
    std::fs::remove_file(dir.root().join("test_batch.bin")).unwrap();
    let err = cifar10::load(dir.root()).unwrap_err();
    assert!(
        matches!(err, CifarError::MissingSplit { split: "test", .. }),
        "{err:?}"
    );
}

/// An image as CIFAR's planar bytes (all red, then green, then blue).
fn planar(img: &image::RgbImage) -> Vec<u8> {
    let mut out = vec![0u8; 3072];
    for (p, px) in img.pixels().enumerate() {
        for c in 0..3 {
            out[c * 1024 + p] = px[c];
        }
    }
    out
}

/// Members of a tiny image-folder set: (relative path, bytes).
fn folder_members() -> Vec<(String, Vec<u8>)> {
    use image::ImageFormat::{Jpeg, Png};
    vec![
        ("train/cat/0001.png".into(), encode(&rgb_image(1), Png)),
        ("train/cat/0000.png".into(), encode(&rgb_image(0), Png)),
        (
            "train/airplane/0000.jpg".into(),
            encode(&rgb_image(2), Jpeg),
        ),
        ("train/truck/0000.png".into(), encode(&rgb_image(3), Png)),
        ("test/dog/0000.png".into(), encode(&rgb_image(4), Png)),
        ("test/ship/0000.jpg".into(), encode(&rgb_image(5), Jpeg)),
    ]
}

fn check_folder_set(set: &cifar10::Cifar10) {
    // Sorted by class, then file name.
    assert_eq!(set.train.labels, vec![0, 3, 3, 9]);
    assert_eq!(set.test.labels, vec![5, 8]);
    assert_eq!(set.train.image(1), &planar(&rgb_image(0))[..]);
    assert_eq!(set.train.image(2), &planar(&rgb_image(1))[..]);
    assert_eq!(set.test.image(0), &planar(&rgb_image(4))[..]);
    // JPEG is lossy: close, not equal.
    let want = planar(&rgb_image(2));
    let got = set.train.image(0);
    let mean_err: f64 = want
        .iter()
        .zip(got)
        .map(|(&a, &b)| (f64::from(a) - f64::from(b)).abs())
        .sum::<f64>()
        / 3072.0;
    assert!(mean_err < 8.0, "JPEG mean abs error {mean_err}");
}

#[test]
fn cifar_image_folder_good() {
    let dir = TempDir::new("cifar-folder");
    for (rel, bytes) in folder_members() {
        dir.write(&rel, &bytes);
    }
    dir.write("SOURCE.md", b"notes");
    dir.write("train/cat/.DS_Store", b"junk");
    let set = cifar10::load(dir.root()).unwrap();
    check_folder_set(&set);
}

#[test]
fn cifar_tar_gz_good_and_cached() {
    let dir = TempDir::new("cifar-tar");
    let mut members = folder_members();
    members.push(("SOURCE.md".into(), b"notes".to_vec()));
    let archive = dir.write("set/cifar10-jpeg.tar.gz", &tar_gz(&members));
    check_folder_set(&cifar10::load(&archive).unwrap());
    // A folder holding the archive works the same way.
    let from_dir = cifar10::load(dir.root().join("set")).unwrap();
    check_folder_set(&from_dir);

    // In-memory cache: same Arc on the second call.
    let a = cifar10::load_cached(&archive).unwrap();
    let b = cifar10::load_cached(&archive).unwrap();
    assert!(Arc::ptr_eq(&a, &b));

    // File cache: written on first use, read back (even once the source is gone).
    let cache = dir.root().join("cache");
    let first = cifar10::load_with_cache_dir(&archive, &cache).unwrap();
    assert!(cache.join("data_batch_1.bin").is_file());
    std::fs::remove_file(&archive).unwrap();
    let second = cifar10::load_with_cache_dir(&archive, &cache).unwrap();
    assert_eq!(first, second);
    assert_eq!(first, *a);
}

#[test]
fn cifar_unknown_class_folder_names_it() {
    let dir = TempDir::new("cifar-class");
    for (rel, bytes) in folder_members() {
        dir.write(&rel, &bytes);
    }
    dir.write(
        "train/kangaroo/0000.png",
        &encode(&rgb_image(0), image::ImageFormat::Png),
    );
    let err = cifar10::load(dir.root()).unwrap_err();
    assert!(
        matches!(&err, CifarError::UnknownClass { class, .. } if class == "kangaroo"),
        "{err:?}"
    );
    assert!(err.to_string().contains("kangaroo"));

    let mut members = folder_members();
    members.push((
        "test/unicorn/0000.png".into(),
        encode(&rgb_image(0), image::ImageFormat::Png),
    ));
    let archive = dir.write("a.tar.gz", &tar_gz(&members));
    let text = err_text(cifar10::load(&archive));
    assert!(text.contains("a.tar.gz:test/unicorn/0000.png"), "{text}");
}

#[test]
fn cifar_undecodable_or_wrong_size_image_names_file() {
    let dir = TempDir::new("cifar-decode");
    for (rel, bytes) in folder_members() {
        dir.write(&rel, &bytes);
    }
    dir.write("test/dog/0007.jpg", b"\xff\xd8\xff\xe0 this is not a jpeg");
    let err = cifar10::load(dir.root()).unwrap_err();
    assert!(matches!(err, CifarError::Decode { .. }), "{err:?}");
    assert!(err.to_string().contains("0007.jpg"), "{err}");

    let big = image::RgbImage::new(33, 32);
    dir.write("test/dog/0007.jpg", &encode(&big, image::ImageFormat::Png));
    let err = cifar10::load(dir.root()).unwrap_err();
    assert!(
        matches!(err, CifarError::WrongSize { width: 33, .. }),
        "{err:?}"
    );

    let mut members = folder_members();
    members.push(("train/cat/9999.jpg".into(), b"garbage".to_vec()));
    let archive = dir.write("b.tgz", &tar_gz(&members));
    let text = err_text(cifar10::load(&archive));
    assert!(text.contains("b.tgz:train/cat/9999.jpg"), "{text}");

    let empty = TempDir::new("cifar-empty");
    assert!(matches!(
        cifar10::load(empty.root()),
        Err(CifarError::UnknownLayout { .. })
    ));
}

// ---------------------------------------------------------------- no panics on random bytes

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    #[test]
    fn idx_parsers_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
        let p = Path::new("random");
        let _ = fashion_mnist::parse_images(&bytes, p);
        let _ = fashion_mnist::parse_labels(&bytes, p);
    }

    #[test]
    fn idx_parsers_never_panic_past_the_magic(
        dims in proptest::collection::vec(any::<u32>(), 3),
        small in proptest::collection::vec(0u32..6, 3),
        tail in proptest::collection::vec(any::<u8>(), 0..200),
        use_small in any::<bool>(),
    ) {
        let dims = if use_small { small } else { dims };
        let mut b = 0x0803u32.to_be_bytes().to_vec();
        for d in &dims {
            b.extend(d.to_be_bytes());
        }
        b.extend(&tail);
        let p = Path::new("random");
        if let Ok(img) = fashion_mnist::parse_images(&b, p) {
            prop_assert_eq!(img.pixels.len(), img.count * img.rows * img.cols);
        }
        let mut l = 0x0801u32.to_be_bytes().to_vec();
        l.extend(dims[0].to_be_bytes());
        l.extend(&tail);
        if let Ok(labels) = fashion_mnist::parse_labels(&l, p) {
            prop_assert_eq!(labels.len() as u32, dims[0]);
        }
    }

    #[test]
    fn cifar_binary_parser_never_panics(
        bytes in proptest::collection::vec(any::<u8>(), 0..8000),
    ) {
        if let Ok(split) = cifar10::parse_binary(&bytes, Path::new("random")) {
            prop_assert_eq!(split.images.len(), split.len() * cifar10::IMAGE_BYTES);
        }
    }
}

// ---------------------------------------------------------------- real data (PADAM_DATA)

#[test]
fn real_fashion_mnist() {
    let Some(dir) = real_data("fashion-mnist") else {
        return;
    };
    let set = fashion_mnist::load(&dir).unwrap();
    assert_eq!((set.train.len(), set.test.len()), (60_000, 10_000));
    let (mean, std) = set.train.mean_std();
    assert!((mean - fashion_mnist::MEAN).abs() < 1e-3, "mean {mean}");
    assert!((std - fashion_mnist::STD).abs() < 1e-3, "std {std}");
}

#[test]
fn real_tiny_shakespeare() {
    let Some(dir) = real_data("tinyshakespeare") else {
        return;
    };
    let set = shakespeare::load(&dir).unwrap();
    assert_eq!(set.vocab.len(), 65);
    assert_eq!(set.train.len() + set.val.len(), 1_115_394);
}

#[test]
fn real_cifar10_jpeg() {
    let Some(dir) = real_data("cifar10-jpeg") else {
        return;
    };
    let set = cifar10::load(&dir).unwrap();
    assert_eq!((set.train.len(), set.test.len()), (50_000, 10_000));
    for split in [&set.train, &set.test] {
        let mut per_class = [0usize; 10];
        for &l in &split.labels {
            per_class[l as usize] += 1;
        }
        assert!(
            per_class.iter().all(|&n| n == split.len() / 10),
            "{per_class:?}"
        );
    }
    let (mean, _) = set.train.mean_std();
    for c in 0..3 {
        assert!((mean[c] - cifar10::MEAN[c]).abs() < 0.02, "mean {mean:?}");
    }
}

/// Messages that name the real problem (issue 24 item 10): a header that misstates the image
/// size is reported with the size it states, and a folder where a data file should be is
/// called a folder, not a missing file.
#[test]
fn idx_messages_name_the_real_problem() {
    let dir = TempDir::new("idx-msg");
    write_fashion(&dir);
    // 28x28 pixels under a header that says 27 rows
    let mut short_rows = idx_images(3, 28, 28);
    short_rows[8..12].copy_from_slice(&27u32.to_be_bytes());
    dir.write("train-images-idx3-ubyte", &short_rows);
    let text = err_text(fashion_mnist::load(dir.root()));
    assert!(text.contains("27x28") && text.contains("header"), "{text}");

    let dir = TempDir::new("idx-folder");
    write_fashion(&dir);
    std::fs::remove_file(dir.root().join("t10k-images-idx3-ubyte.gz")).unwrap();
    std::fs::create_dir(dir.root().join("t10k-images-idx3-ubyte.gz")).unwrap();
    let text = err_text(fashion_mnist::load(dir.root()));
    assert!(
        text.contains("t10k-images-idx3-ubyte.gz") && text.contains("not a file"),
        "{text}"
    );
}
