//! `padam export` / `padam eval`: a trained run exported dense and sparse reloads to the run's
//! recorded validation loss and accuracy bit for bit (so the weights are identical), the sparse
//! file is smaller, and damaged or mismatched files are errors naming the file and tensor.

use padam_lab::runs::export::{self, EvalArgs, ExportArgs};
use padam_lab::train::{self, config};
use safetensors::tensor::{Dtype, SafeTensors, TensorView};

mod common;
use common::tmp;

use common::SPARSE_DIGITS as DIGITS;

#[test]
fn exported_weights_reproduce_the_run_exactly_in_both_forms() {
    let root = tmp("roundtrip");
    let run = root.join("run");
    let cfg = config::parse(DIGITS, &[]).unwrap();
    let summary = train::run_config(&cfg, &common::quiet_args(run.clone(), false)).unwrap();
    let last = summary.last.unwrap();
    assert!(
        last["zero_fraction"].as_f64().unwrap() > 0.5,
        "PAdam made the MLP sparse"
    );
    let files = export::export(&ExportArgs {
        run: run.clone(),
        format: "safetensors".into(),
        out: None,
    })
    .unwrap();
    assert!(files.sparse.1 * 2 < files.dense.1, "{:?}", files);
    for file in [&files.dense.0, &files.sparse.0] {
        let e = export::eval(&EvalArgs {
            file: file.clone(),
            data: None,
        })
        .unwrap();
        assert_eq!(
            e.val_loss,
            last["val_loss"].as_f64().unwrap(),
            "{}",
            file.display()
        );
        assert_eq!(e.val_accuracy, last["val_accuracy"].as_f64().unwrap());
        assert_eq!(e.recorded_loss, Some(e.val_loss));
        assert_eq!(e.recorded_accuracy, Some(e.val_accuracy));
    }

    // errors name the file and the problem
    let bad = |bytes: Vec<u8>, name: &str| {
        let p = root.join(name);
        std::fs::write(&p, bytes).unwrap();
        format!(
            "{:#}",
            export::eval(&EvalArgs {
                file: p,
                data: None
            })
            .unwrap_err()
        )
    };
    let sparse = std::fs::read(&files.sparse.0).unwrap();
    let e = bad(sparse[..sparse.len() / 2].to_vec(), "truncated.safetensors");
    assert!(
        e.contains("truncated.safetensors") && e.contains("not a safetensors file"),
        "{e}"
    );
    let e = bad(b"garbage".to_vec(), "garbage.safetensors");
    assert!(e.contains("garbage.safetensors"), "{e}");
    // sparse tensors whose indices are not what export writes: all 0, decreasing, past the end
    let rewrite = |change: &dyn Fn(&mut Vec<u32>)| {
        let (_, meta) = SafeTensors::read_metadata(&sparse).unwrap();
        let st = SafeTensors::deserialize(&sparse).unwrap();
        let mut tensors: Vec<(String, Dtype, Vec<usize>, Vec<u8>)> = Vec::new();
        for (name, view) in st.tensors() {
            let mut data = view.data().to_vec();
            if name.ends_with(".indices") {
                let mut idx: Vec<u32> = data
                    .chunks_exact(4)
                    .map(|b| u32::from_le_bytes(b.try_into().unwrap()))
                    .collect();
                change(&mut idx);
                data = idx.iter().flat_map(|i| i.to_le_bytes()).collect();
            }
            tensors.push((name, view.dtype(), view.shape().to_vec(), data));
        }
        let views: Vec<(String, TensorView)> = tensors
            .iter()
            .map(|(n, d, s, b)| (n.clone(), TensorView::new(*d, s.clone(), b).unwrap()))
            .collect();
        safetensors::serialize(views, meta.metadata().clone()).unwrap()
    };
    let e = bad(
        rewrite(&|idx| idx.iter_mut().for_each(|i| *i = 0)),
        "zeros.safetensors",
    );
    assert!(
        e.contains("zeros.safetensors") && e.contains("strictly increasing"),
        "{e}"
    );
    let e = bad(rewrite(&|idx| idx.reverse()), "reversed.safetensors");
    assert!(e.contains("strictly increasing"), "{e}");
    let e = bad(
        rewrite(&|idx| {
            if let Some(last) = idx.last_mut() {
                *last = u32::MAX;
            }
        }),
        "past.safetensors",
    );
    assert!(e.contains("past the") && e.contains("entries"), "{e}");
    // a config whose model is wider: the stored tensors no longer fit
    let mut wider = std::fs::read(&files.dense.0).unwrap();
    let at = wider
        .windows(14)
        .position(|w| w == b"hidden = [128]")
        .expect("config in the header");
    wider[at + 12] = b'9'; // same length: the header stays valid
    let e = bad(wider, "wider.safetensors");
    assert!(
        e.contains("wider.safetensors") && e.contains("shape") && e.contains("layers"),
        "{e}"
    );
    let e = format!(
        "{:#}",
        export::export(&ExportArgs {
            run: root.join("nope"),
            format: "safetensors".into(),
            out: None
        })
        .unwrap_err()
    );
    assert!(e.contains("nope") && e.contains("config.toml"), "{e}");
    // a run that has not saved a checkpoint: said as such, not as a --resume error
    let early = root.join("early");
    std::fs::create_dir_all(&early).unwrap();
    std::fs::copy(run.join("config.toml"), early.join("config.toml")).unwrap();
    let e = format!(
        "{:#}",
        export::export(&ExportArgs {
            run: early.clone(),
            format: "safetensors".into(),
            out: None
        })
        .unwrap_err()
    );
    assert!(
        e.contains("no checkpoint") && !e.contains("--resume"),
        "{e}"
    );
    let _ = std::fs::remove_dir_all(&root);
}
