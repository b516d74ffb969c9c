//! The parsers under generated and mutated input: real files with bits flipped, bytes
//! overwritten, cut short, spliced and grown, and plain random bytes. No input may make one
//! panic (an error is the only allowed refusal). `PADAM_FUZZ_CASES` inputs per parser (default
//! 300, what CI runs); `scripts/fuzz.sh` runs 100,000 per parser (docs/RELIABILITY.md).

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::Path;

use burn::backend::{Autodiff, Flex};
use burn::module::Module;
use padam_lab::data::{cifar10, fashion_mnist, Rng};
use padam_lab::infer;
use padam_lab::models::Mlp;
use padam_lab::runs::export;
use padam_lab::train::{self, checkpoint, config};

mod common;
use common::{encode, rgb_image, tar_gz, TempDir};

type B = Autodiff<Flex>;

fn cases() -> usize {
    std::env::var("PADAM_FUZZ_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(300)
}

/// One mutation of `seed`: a few of the classic byte-level edits, or random bytes.
fn mutate(rng: &mut Rng, seed: &[u8]) -> Vec<u8> {
    let mut b = seed.to_vec();
    let edits = 1 + rng.below(4);
    for _ in 0..edits {
        match rng.below(7) {
            0 if !b.is_empty() => {
                let i = rng.below(b.len());
                b[i] ^= 1 << rng.below(8);
            }
            1 if !b.is_empty() => {
                let i = rng.below(b.len());
                b[i] = rng.next_u64() as u8;
            }
            2 => b.truncate(rng.below(b.len() + 1)),
            3 => {
                let at = rng.below(b.len() + 1);
                let n = 1 + rng.below(16);
                let extra: Vec<u8> = (0..n).map(|_| rng.next_u64() as u8).collect();
                b.splice(at..at, extra);
            }
            4 if !b.is_empty() => {
                // a run of the same interesting value (0, 0xff, 0x7f) somewhere
                let at = rng.below(b.len());
                let v = [0u8, 0xff, 0x7f][rng.below(3)];
                let end = (at + 1 + rng.below(8)).min(b.len());
                b[at..end].fill(v);
            }
            5 if b.len() > 2 => {
                // splice a copy of one part over another
                let (from, to) = (rng.below(b.len()), rng.below(b.len()));
                let n = rng.below(b.len() - from.max(to)).min(64);
                let chunk = b[from..from + n].to_vec();
                b[to..to + n].copy_from_slice(&chunk);
            }
            _ => {
                let n = rng.below(256);
                b = (0..n).map(|_| rng.next_u64() as u8).collect();
            }
        }
    }
    b
}

/// Feed `cases()` mutations of `seeds` to `parse`; count panics (there must be none).
fn fuzz(name: &str, seeds: &[Vec<u8>], parse: impl Fn(&[u8])) {
    let n = cases();
    let mut rng = Rng::new(0xF0220 ^ name.len() as u64);
    let hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(|_| {}));
    let mut panics = Vec::new();
    for i in 0..n {
        let input = mutate(&mut rng, &seeds[i % seeds.len()]);
        if catch_unwind(AssertUnwindSafe(|| parse(&input))).is_err() {
            panics.push(input);
        }
    }
    std::panic::set_hook(hook);
    eprintln!("fuzz {name}: {n} inputs, {} panics", panics.len());
    assert!(
        panics.is_empty(),
        "{name}: {} of {n} inputs panicked; the first: {:?}",
        panics.len(),
        &panics[0][..panics[0].len().min(64)]
    );
}

fn idx(magic: u32, dims: &[u32], body: usize) -> Vec<u8> {
    let mut b = magic.to_be_bytes().to_vec();
    for d in dims {
        b.extend(d.to_be_bytes());
    }
    b.extend((0..body).map(|i| (i * 7 % 256) as u8));
    b
}

#[test]
fn fuzz_idx() {
    let seeds = [
        idx(0x0803, &[3, 28, 28], 3 * 28 * 28),
        idx(0x0803, &[2, 4, 5], 40),
        idx(0x0801, &[5], 5),
    ];
    fuzz("idx", &seeds, |b| {
        let p = Path::new("fuzz");
        let _ = fashion_mnist::parse_images(b, p);
        let _ = fashion_mnist::parse_labels(b, p);
    });
}

#[test]
fn fuzz_cifar_binary() {
    let record: Vec<u8> = (0..cifar10::IMAGE_BYTES + 1)
        .map(|i| if i == 0 { 3 } else { (i % 251) as u8 })
        .collect();
    let seeds = [record.repeat(2), record.clone()];
    fuzz("cifar binary", &seeds, |b| {
        let _ = cifar10::parse_binary(b, Path::new("fuzz"));
    });
}

/// The shipped configs, mutated as text, each with a few `--set` overrides drawn from real
/// keys and mutated values.
#[test]
fn fuzz_config_and_overrides() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../configs");
    let mut seeds: Vec<Vec<u8>> = std::fs::read_dir(&dir)
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "toml"))
        .map(|p| std::fs::read(p).unwrap())
        .collect();
    seeds.sort();
    let keys = [
        "seed",
        "optimizer.lambda",
        "optimizer.p",
        "optimizer.kind",
        "lr.peak",
        "lr.warmup_steps",
        "train.epochs",
        "train.batch_size",
        "train.log_every",
        "model.hidden",
        "data.test_rows",
        "prune.target",
        "sparsity.target",
        "sparsity.every",
    ];
    let values = [
        "0",
        "-1",
        "1e309",
        "nan",
        "\"x\"",
        "[1,2]",
        "{kind=\"linear\"}",
        "",
        "3",
    ];
    let counter = std::cell::Cell::new(0u64);
    fuzz("config", &seeds, |b| {
        let text = String::from_utf8_lossy(b);
        let mut rng = Rng::new(counter.get());
        counter.set(counter.get() + 1);
        let sets: Vec<String> = (0..rng.below(3))
            .map(|_| {
                let v = values[rng.below(values.len())].as_bytes();
                let v = String::from_utf8_lossy(&mutate(&mut rng, v)).into_owned();
                format!("{}={v}", keys[rng.below(keys.len())])
            })
            .collect();
        let _ = config::parse(&text, &sets);
    });
}

/// A real checkpoint of a digits MLP, mutated: the file decoder and burn's record decoder
/// behind it (whose own panics `decode_record` must turn into errors).
#[test]
fn fuzz_checkpoint() {
    let tmp = TempDir::new("fuzz-ckpt");
    let text = "seed = 1\n[model]\nkind = \"mlp\"\nhidden = [8]\n[data]\ndataset = \"digits\"\n\
                test_limit = 50\ntrain_limit = 64\n[optimizer]\nkind = \"padam\"\n[lr]\npeak = 1e-2\n\
                [train]\nbatch_size = 32\niterations = 2\n";
    let cfg = config::parse(text, &[]).unwrap();
    let args = common::quiet_args(tmp.path("run"), false);
    train::run_config(&cfg, &args).unwrap();
    let (_, path) = checkpoint::list(&tmp.path("run")).unwrap().pop().unwrap();
    let file = std::fs::read(path).unwrap();
    let device = Default::default();
    let p = Path::new("fuzz.bin");
    let load = |b: &[u8]| {
        if let Ok(ckpt) = checkpoint::Checkpoint::decode(b, p) {
            let _ = checkpoint::decode_record::<B, <Mlp<B> as Module<B>>::Record>(
                ckpt.model, &device, p, "model",
            );
        }
    };
    fuzz("checkpoint", std::slice::from_ref(&file), load);
    // Forged: the loop state mutated under a recomputed checksum, so the state's own checks
    // see the damage. (A forged model record is not fuzzed here: a huge tensor shape in it
    // makes burn's record decoder abort on the allocation, docs/RELIABILITY.md.)
    let genuine = checkpoint::Checkpoint::decode(&file, p).unwrap();
    let header = 28; // magic, version, config hash, step
    let state_len = u64::from_le_bytes(file[header..header + 8].try_into().unwrap()) as usize;
    let state = file[header + 8..header + 8 + state_len].to_vec();
    fuzz("checkpoint state", &[state], |json| {
        let mut forged = file[..header].to_vec();
        forged.extend((json.len() as u64).to_le_bytes());
        forged.extend(json);
        for section in [&genuine.model, &genuine.optim] {
            forged.extend((section.len() as u64).to_le_bytes());
            forged.extend(section.iter());
        }
        let sum = padam_lab::train::config::fnv1a(&forged);
        forged.extend(sum.to_le_bytes());
        load(&forged);
    });
}

/// `padam eval`, the inference engine and compaction on mutated exports of a digits MLP, dense
/// and sparse: the safetensors header, the metadata (embedded config, shapes), the sparse
/// indices and values.
#[test]
fn fuzz_safetensors_export() {
    let tmp = TempDir::new("fuzz-st");
    let text = "seed = 1\n[model]\nkind = \"mlp\"\nhidden = [8]\n[data]\ndataset = \"digits\"\n\
                test_limit = 20\ntrain_limit = 64\n[optimizer]\nkind = \"padam\"\nlambda = 0.3\n\
                [lr]\npeak = 3e-2\n[train]\nbatch_size = 32\niterations = 40\n";
    let cfg = config::parse(text, &[]).unwrap();
    let run = tmp.path("run");
    let args = common::quiet_args(run.clone(), false);
    train::run_config(&cfg, &args).unwrap();
    let files = export::export(&export::ExportArgs {
        run,
        format: "safetensors".into(),
        out: None,
    })
    .unwrap();
    let seeds = [
        std::fs::read(&files.dense.0).unwrap(),
        std::fs::read(&files.sparse.0).unwrap(),
    ];
    let file = tmp.path("fuzz.safetensors");
    fuzz("safetensors export", &seeds, |b| {
        std::fs::write(&file, b).unwrap();
        let _ = export::eval(&export::EvalArgs {
            file: file.clone(),
            data: None,
        });
        // The inference engine and compaction on whatever the reader accepts.
        if let Ok(l) = infer::load(&file) {
            if let Ok(shape) = infer::model_shape(&l.config.model, Some(&l.tensors)) {
                if let Ok(e) = infer::Engine::build(&shape, &l.tensors, infer::Plan::sparse()) {
                    let _ = e.classify(&[0.5; 2 * 64], 2, [0, 0]);
                }
                let _ = infer::compact(&shape, &l.tensors);
            }
        }
    });
}

/// The CIFAR-10 JPEG/PNG stand-in as a `.tar.gz` of class folders: the archive's members
/// mutated (the tar headers, names and image bytes), then gzipped again so the damage gets
/// past the gzip checksum to the tar reader and the image decoders.
#[test]
fn fuzz_image_tar() {
    use image::ImageFormat::{Jpeg, Png};
    let members: Vec<(String, Vec<u8>)> = vec![
        ("train/cat/0000.png".into(), encode(&rgb_image(0), Png)),
        (
            "train/airplane/0000.jpg".into(),
            encode(&rgb_image(2), Jpeg),
        ),
        ("test/dog/0000.jpg".into(), encode(&rgb_image(4), Jpeg)),
    ];
    let gunzip = |gz: &[u8]| {
        let mut out = Vec::new();
        std::io::Read::read_to_end(&mut flate2::read::GzDecoder::new(gz), &mut out).unwrap();
        out
    };
    let seeds = [gunzip(&tar_gz(&members))];
    let tmp = TempDir::new("fuzz-tar");
    let file = tmp.path("set.tar.gz");
    fuzz("image tar", &seeds, |tar| {
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        std::io::Write::write_all(&mut gz, tar).unwrap();
        std::fs::write(&file, gz.finish().unwrap()).unwrap();
        let _ = cifar10::load(&file);
    });
}
