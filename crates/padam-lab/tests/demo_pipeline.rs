//! The demo pipeline on a reduced setting: PAdam is sparser than AdamW at sane accuracy, runs
//! are reproducible, and the JSON output holds the table rows.

use padam_lab::demo::{self, DemoArgs};

fn short() -> DemoArgs {
    DemoArgs {
        epochs: 15,
        hidden: vec![64],
        quiet: true,
        ..DemoArgs::default()
    }
}

#[test]
fn padam_is_sparser_than_adamw_at_sane_accuracy() {
    let report = demo::train_both(&short()).unwrap();
    assert_eq!(report.train_rows, 1437);
    assert_eq!(report.test_rows, 360);
    let [adamw, padam] = &report.rows[..] else {
        panic!("expected two rows, got {:?}", report.rows)
    };
    assert!(adamw.optimizer.starts_with("AdamW"));
    assert!(padam.optimizer.starts_with("PAdam"));
    assert_eq!(adamw.params, 64 * 64 + 64 + 64 * 10 + 10);
    assert_eq!(adamw.params, padam.params);
    assert!(adamw.test_accuracy > 0.8, "{adamw:?}");
    assert!(padam.test_accuracy > 0.8, "{padam:?}");
    assert!(
        padam.zero_fraction > adamw.zero_fraction + 0.3,
        "AdamW {adamw:?}\nPAdam {padam:?}"
    );
    assert!(padam.below_fraction >= padam.zero_fraction);
    let table = demo::render(&report);
    assert!(
        table.contains("AdamW") && table.contains("PAdam"),
        "{table}"
    );
}

/// The claim the demo makes, at its default settings: far sparser, about as accurate.
#[test]
fn default_settings_meet_the_demo_claim() {
    let report = demo::train_both(&DemoArgs {
        quiet: true,
        ..DemoArgs::default()
    })
    .unwrap();
    let (adamw, padam) = (&report.rows[0], &report.rows[1]);
    assert!(padam.zero_fraction > 0.8, "{padam:?}");
    assert!(adamw.zero_fraction < 0.01, "{adamw:?}");
    assert!(
        padam.test_accuracy > adamw.test_accuracy - 0.02,
        "AdamW {adamw:?}\nPAdam {padam:?}"
    );
}

#[test]
fn same_seed_same_result_and_json_written() {
    let dir = std::env::temp_dir().join(format!("padam-demo-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let json = dir.join("demo.json");
    let args = DemoArgs {
        epochs: 3,
        hidden: vec![16],
        json: Some(json.clone()),
        ..short()
    };
    let a = demo::train_both(&args).unwrap();
    let b = demo::train_both(&args).unwrap();
    for (x, y) in a.rows.iter().zip(&b.rows) {
        assert_eq!(x.test_accuracy, y.test_accuracy);
        assert_eq!(x.zeros, y.zeros);
        assert_eq!(x.final_train_loss, y.final_train_loss);
    }
    demo::run(args).unwrap();
    let written: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    let rows = written["rows"].as_array().unwrap();
    assert_eq!(rows.len(), 2);
    for key in [
        "optimizer",
        "test_accuracy",
        "zero_fraction",
        "below_fraction",
        "params",
    ] {
        assert!(rows[1].get(key).is_some(), "missing {key}");
    }
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn bad_data_file_is_an_error_naming_the_row() {
    let dir = std::env::temp_dir().join(format!("padam-demo-bad-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("bad.csv");
    std::fs::write(&path, "1,2,3\n").unwrap();
    let err = demo::train_both(&DemoArgs {
        data: Some(path),
        ..short()
    })
    .unwrap_err();
    assert!(format!("{err:#}").contains("row 1"), "{err:#}");
    std::fs::remove_dir_all(&dir).ok();
}
