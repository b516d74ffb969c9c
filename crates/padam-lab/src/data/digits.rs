//! The built-in digits dataset: UCI "Optical Recognition of Handwritten Digits" (Alpaydin and
//! Kaynak 1998, CC BY 4.0), as shipped with scikit-learn; see `data/DIGITS-SOURCE.md`.
//!
//! 1797 rows of CSV, each 64 integer pixels (an 8x8 image, values `0..=16`) then the label
//! `0..=9`. The file is embedded in the binary gzip-compressed; [`load`] can also read the same
//! format (gzip or plain text) from a path.

use std::io::Read;
use std::path::Path;

use super::{Dataset, Rng, Split};

/// The embedded `digits.csv.gz`.
pub const EMBEDDED: &[u8] = include_bytes!("../../data/digits.csv.gz");

/// Pixels per image (8x8).
pub const N_PIXELS: usize = 64;
/// Largest pixel value.
pub const MAX_PIXEL: u8 = 16;
/// Number of classes (digits 0..9).
pub const N_CLASSES: usize = 10;
/// Rows of the embedded file.
pub const N_ROWS: usize = 1797;
/// Held-out rows of the default split (about 20%).
pub const DEFAULT_TEST_ROWS: usize = 360;

/// Why digits data could not be read. Rows and columns are 1-based, as an editor shows them.
#[derive(Debug, thiserror::Error)]
pub enum DigitsError {
    /// The input started like gzip but could not be decompressed.
    #[error("digits data: gzip decompression failed: {0}")]
    Gzip(#[source] std::io::Error),
    /// A row is not valid UTF-8.
    #[error("digits data, row {row}: not valid UTF-8 text")]
    NotUtf8 {
        /// 1-based row.
        row: usize,
    },
    /// A row has the wrong number of comma-separated fields.
    #[error("digits data, row {row}: expected {expected} comma-separated values, found {found}")]
    Columns {
        /// 1-based row.
        row: usize,
        /// Fields expected (65).
        expected: usize,
        /// Fields found.
        found: usize,
    },
    /// A field is not a non-negative integer.
    #[error("digits data, row {row}, column {column}: {value:?} is not an integer")]
    NotInteger {
        /// 1-based row.
        row: usize,
        /// 1-based column.
        column: usize,
        /// The offending field.
        value: String,
    },
    /// A pixel or label is outside its range.
    #[error("digits data, row {row}, column {column}: {value} is out of range (0..={max})")]
    OutOfRange {
        /// 1-based row.
        row: usize,
        /// 1-based column.
        column: usize,
        /// The value read.
        value: u64,
        /// Largest allowed value.
        max: u8,
    },
    /// The input holds no rows.
    #[error("digits data: no rows")]
    Empty,
    /// The file could not be read.
    #[error("digits data: cannot read {path}: {source}")]
    Io {
        /// The path given.
        path: String,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
}

/// Parsed digits: `pixels[i]` holds the 64 pixels of image `i`, `labels[i]` its digit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Digits {
    /// Pixel values `0..=16`, one array per image.
    pub pixels: Vec<[u8; N_PIXELS]>,
    /// Digit of each image, `0..=9`.
    pub labels: Vec<u8>,
}

impl Digits {
    /// Number of images.
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    /// True when there are no images.
    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    /// All rows as one [`Split`], pixels scaled to `[0, 1]` (divided by 16).
    pub fn to_split(&self) -> Split {
        let mut features = Vec::with_capacity(self.len() * N_PIXELS);
        for image in &self.pixels {
            features.extend(image.iter().map(|&v| f32::from(v) / f32::from(MAX_PIXEL)));
        }
        Split {
            features,
            labels: self.labels.iter().map(|&l| i64::from(l)).collect(),
            n_features: N_PIXELS,
        }
    }

    /// A seeded random train / test split with `test_rows` held out (capped at all but one
    /// row), features scaled to `[0, 1]`. The same data and seed give the same split.
    pub fn split(&self, test_rows: usize, seed: u64) -> Dataset {
        let all = self.to_split();
        let mut order: Vec<usize> = (0..all.len()).collect();
        Rng::new(seed).shuffle(&mut order);
        let test_rows = test_rows.min(all.len().saturating_sub(1));
        let (test, train) = order.split_at(test_rows);
        Dataset {
            train: all.gather(train),
            test: all.gather(test),
            n_classes: N_CLASSES,
        }
    }
}

/// Parse digits CSV, gzip-compressed (detected by its magic bytes) or plain. Blank lines are
/// skipped; every other line must hold 64 pixels `0..=16` then a label `0..=9`.
pub fn parse(bytes: &[u8]) -> Result<Digits, DigitsError> {
    let decompressed;
    let text: &[u8] = if bytes.starts_with(&[0x1f, 0x8b]) {
        let mut out = Vec::new();
        flate2::read::GzDecoder::new(bytes)
            .read_to_end(&mut out)
            .map_err(DigitsError::Gzip)?;
        decompressed = out;
        &decompressed
    } else {
        bytes
    };
    let mut digits = Digits {
        pixels: Vec::new(),
        labels: Vec::new(),
    };
    for (i, line) in text.split(|&b| b == b'\n').enumerate() {
        let row = i + 1;
        let line = std::str::from_utf8(line).map_err(|_| DigitsError::NotUtf8 { row })?;
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        let fields: Vec<&str> = line.split(',').collect();
        if fields.len() != N_PIXELS + 1 {
            return Err(DigitsError::Columns {
                row,
                expected: N_PIXELS + 1,
                found: fields.len(),
            });
        }
        let mut image = [0u8; N_PIXELS];
        let mut label = 0u8;
        for (j, field) in fields.iter().enumerate() {
            let column = j + 1;
            let field = field.trim();
            let value: u64 = field.parse().map_err(|_| DigitsError::NotInteger {
                row,
                column,
                value: field.to_string(),
            })?;
            let max = if j < N_PIXELS {
                MAX_PIXEL
            } else {
                (N_CLASSES - 1) as u8
            };
            if value > u64::from(max) {
                return Err(DigitsError::OutOfRange {
                    row,
                    column,
                    value,
                    max,
                });
            }
            if j < N_PIXELS {
                image[j] = value as u8;
            } else {
                label = value as u8;
            }
        }
        digits.pixels.push(image);
        digits.labels.push(label);
    }
    if digits.is_empty() {
        return Err(DigitsError::Empty);
    }
    Ok(digits)
}

/// The embedded dataset.
pub fn embedded() -> Result<Digits, DigitsError> {
    parse(EMBEDDED)
}

/// Load from `path` (same format as the embedded file), or the embedded data when `None`.
pub fn load(path: Option<&Path>) -> Result<Digits, DigitsError> {
    match path {
        None => embedded(),
        Some(p) => {
            let bytes = std::fs::read(p).map_err(|source| DigitsError::Io {
                path: p.display().to_string(),
                source,
            })?;
            parse(&bytes)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn row(pixel: u8, label: u8) -> String {
        let mut fields: Vec<String> = (0..N_PIXELS).map(|_| pixel.to_string()).collect();
        fields.push(label.to_string());
        fields.join(",")
    }

    #[test]
    fn parses_plain_and_gzip() {
        let text = format!("{}\n\n{}\n", row(3, 1), row(16, 9));
        let d = parse(text.as_bytes()).unwrap();
        assert_eq!(d.len(), 2);
        assert_eq!(d.labels, vec![1, 9]);
        assert_eq!(d.pixels[1], [16; N_PIXELS]);

        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        gz.write_all(text.as_bytes()).unwrap();
        let d2 = parse(&gz.finish().unwrap()).unwrap();
        assert_eq!(d, d2);

        let s = d.to_split();
        assert_eq!(s.n_features, N_PIXELS);
        assert!((s.row(0)[0] - 3.0 / 16.0).abs() < 1e-7);
        assert_eq!(s.row(1)[63], 1.0);
    }

    #[test]
    fn bad_inputs_name_row_and_column() {
        let good = row(0, 0);
        // Wrong number of fields on row 2.
        let text = format!("{good}\n1,2,3\n");
        let e = parse(text.as_bytes()).unwrap_err();
        assert!(
            matches!(
                e,
                DigitsError::Columns {
                    row: 2,
                    found: 3,
                    ..
                }
            ),
            "{e}"
        );
        assert!(e.to_string().contains("row 2"));

        // Non-integer in column 5 of row 1.
        let mut fields: Vec<String> = good.split(',').map(String::from).collect();
        fields[4] = "x".into();
        let e = parse(fields.join(",").as_bytes()).unwrap_err();
        assert!(
            matches!(
                e,
                DigitsError::NotInteger {
                    row: 1,
                    column: 5,
                    ..
                }
            ),
            "{e}"
        );
        assert!(e.to_string().contains("column 5"));

        // Pixel out of range, and a negative value.
        fields[4] = "17".into();
        let e = parse(fields.join(",").as_bytes()).unwrap_err();
        assert!(matches!(
            e,
            DigitsError::OutOfRange {
                row: 1,
                column: 5,
                value: 17,
                ..
            }
        ));
        fields[4] = "-1".into();
        assert!(matches!(
            parse(fields.join(",").as_bytes()).unwrap_err(),
            DigitsError::NotInteger { column: 5, .. }
        ));

        // Label out of range (column 65).
        let e = parse(row(0, 10).as_bytes()).unwrap_err();
        assert!(
            matches!(
                e,
                DigitsError::OutOfRange {
                    column: 65,
                    value: 10,
                    ..
                }
            ),
            "{e}"
        );

        // Empty, blank-only, truncated gzip, invalid UTF-8.
        assert!(matches!(parse(b"").unwrap_err(), DigitsError::Empty));
        assert!(matches!(parse(b"\n \n").unwrap_err(), DigitsError::Empty));
        assert!(matches!(
            parse(&EMBEDDED[..100]).unwrap_err(),
            DigitsError::Gzip(_)
        ));
        assert!(matches!(
            parse(b"\n\xff\xfe\n").unwrap_err(),
            DigitsError::NotUtf8 { row: 2 }
        ));
    }

    #[test]
    fn load_missing_file_is_an_error() {
        let e = load(Some(Path::new("/nonexistent/digits.csv"))).unwrap_err();
        assert!(e.to_string().contains("/nonexistent/digits.csv"));
    }

    #[test]
    fn embedded_has_1797_rows_and_all_classes() {
        let d = embedded().unwrap();
        assert_eq!(d.len(), N_ROWS);
        for class in 0..N_CLASSES as u8 {
            assert!(d.labels.iter().filter(|&&l| l == class).count() > 150);
        }
    }

    #[test]
    fn split_is_seeded_and_disjoint() {
        let d = embedded().unwrap();
        let a = d.split(DEFAULT_TEST_ROWS, 3);
        let b = d.split(DEFAULT_TEST_ROWS, 3);
        let c = d.split(DEFAULT_TEST_ROWS, 4);
        assert_eq!(a, b);
        assert_ne!(a.test, c.test);
        assert_eq!(a.train.len(), 1437);
        assert_eq!(a.test.len(), 360);
        assert!(a.train.features.iter().all(|v| (0.0..=1.0).contains(v)));
        // Together the two halves hold every row exactly once.
        let mut all: Vec<(Vec<u32>, i64)> = a
            .train
            .labels
            .iter()
            .enumerate()
            .map(|(i, &l)| (a.train.row(i).iter().map(|v| v.to_bits()).collect(), l))
            .chain(
                a.test
                    .labels
                    .iter()
                    .enumerate()
                    .map(|(i, &l)| (a.test.row(i).iter().map(|v| v.to_bits()).collect(), l)),
            )
            .collect();
        let mut full: Vec<(Vec<u32>, i64)> = {
            let s = d.to_split();
            (0..s.len())
                .map(|i| (s.row(i).iter().map(|v| v.to_bits()).collect(), s.labels[i]))
                .collect()
        };
        all.sort();
        full.sort();
        assert_eq!(all, full);
    }
}
