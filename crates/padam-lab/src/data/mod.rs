//! Datasets, one module each, plus the small pieces they share: an in-memory classification
//! split and a seeded random number generator (so shuffles and initial weights are reproducible
//! without touching the backend's global RNG).

pub mod augment;
pub mod cifar10;
pub mod digits;
pub mod fashion_mnist;
pub mod shakespeare;

/// A host batch as tensors: `features` shaped `shape` (`[n, ...]`) and `labels` shaped `[n]`.
/// Every dataset's `batch` ends here.
pub fn batch_to_tensors<B: burn::tensor::backend::Backend, const D: usize>(
    features: Vec<f32>,
    shape: [usize; D],
    labels: Vec<i64>,
    device: &B::Device,
) -> (
    burn::tensor::Tensor<B, D>,
    burn::tensor::Tensor<B, 1, burn::tensor::Int>,
) {
    use burn::tensor::{Tensor, TensorData};
    let n = labels.len();
    (
        Tensor::from_data(TensorData::new(features, shape), device),
        Tensor::from_data(TensorData::new(labels, [n]), device),
    )
}

/// A set of examples for classification, held on the host: `features` is row-major
/// `[len, n_features]`, `labels[i]` is the class of row `i`.
#[derive(Debug, Clone, PartialEq)]
pub struct Split {
    /// Row-major features, `len * n_features` values.
    pub features: Vec<f32>,
    /// Class of each row, in `0..n_classes`.
    pub labels: Vec<i64>,
    /// Number of features per row.
    pub n_features: usize,
}

impl Split {
    /// Number of rows.
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    /// True when the split has no rows.
    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    /// Features of row `i`.
    pub fn row(&self, i: usize) -> &[f32] {
        &self.features[i * self.n_features..(i + 1) * self.n_features]
    }

    /// The rows `indices`, in that order, as a new split.
    pub fn gather(&self, indices: &[usize]) -> Split {
        let mut features = Vec::with_capacity(indices.len() * self.n_features);
        let mut labels = Vec::with_capacity(indices.len());
        for &i in indices {
            features.extend_from_slice(self.row(i));
            labels.push(self.labels[i]);
        }
        Split {
            features,
            labels,
            n_features: self.n_features,
        }
    }
}

/// A train / test pair of splits with the same features and classes.
#[derive(Debug, Clone, PartialEq)]
pub struct Dataset {
    /// Training rows.
    pub train: Split,
    /// Held-out rows.
    pub test: Split,
    /// Number of classes.
    pub n_classes: usize,
}

/// SplitMix64: a tiny, fast, seedable generator (Steele, Lea, Flood 2014). Not cryptographic;
/// here it only makes shuffles and weight initialisation reproducible across runs and threads.
#[derive(Debug, Clone)]
pub struct Rng {
    state: u64,
}

impl Rng {
    /// A generator for `seed`; the same seed gives the same stream.
    pub fn new(seed: u64) -> Self {
        Self { state: seed }
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `[0, 1)` with 53 random bits.
    pub fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }

    /// Uniform in `[low, high)`.
    pub fn uniform(&mut self, low: f64, high: f64) -> f64 {
        low + (high - low) * self.next_f64()
    }

    /// Uniform integer in `0..n` (`n > 0`), without modulo bias.
    pub fn below(&mut self, n: usize) -> usize {
        assert!(n > 0, "Rng::below needs n > 0");
        let n = n as u64;
        let zone = u64::MAX - (u64::MAX % n);
        loop {
            let x = self.next_u64();
            if x < zone {
                return (x % n) as usize;
            }
        }
    }

    /// Fisher-Yates shuffle in place.
    pub fn shuffle<T>(&mut self, items: &mut [T]) {
        for i in (1..items.len()).rev() {
            let j = self.below(i + 1);
            items.swap(i, j);
        }
    }

    /// A derived generator for a sub-task (`stream` picks which), independent of this one's
    /// future draws.
    /// A standard normal draw (Box-Muller), for weight initialisation.
    pub fn normal(&mut self) -> f64 {
        let u1 = 1.0 - self.next_f64();
        let u2 = self.next_f64();
        (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
    }

    pub fn fork(&self, stream: u64) -> Rng {
        let mut r = Rng::new(self.state ^ stream.wrapping_mul(0xD1B5_4A32_D192_ED03));
        r.next_u64();
        r
    }
}

/// Mini-batch features and labels as tensors.
pub fn batch_tensors<B: burn::tensor::backend::Backend>(
    split: &Split,
    indices: &[usize],
    device: &B::Device,
) -> (
    burn::tensor::Tensor<B, 2>,
    burn::tensor::Tensor<B, 1, burn::tensor::Int>,
) {
    let b = split.gather(indices);
    batch_to_tensors(b.features, [indices.len(), b.n_features], b.labels, device)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rng_is_deterministic_and_in_range() {
        let mut a = Rng::new(7);
        let mut b = Rng::new(7);
        for _ in 0..100 {
            assert_eq!(a.next_u64(), b.next_u64());
            let x = a.next_f64();
            assert!((0.0..1.0).contains(&x));
            assert!(a.below(10) < 10);
            b.next_f64();
            b.below(10);
        }
        let mut v: Vec<usize> = (0..50).collect();
        Rng::new(1).shuffle(&mut v);
        let mut sorted = v.clone();
        sorted.sort_unstable();
        assert_eq!(sorted, (0..50).collect::<Vec<_>>());
        assert_ne!(v, sorted);
    }

    #[test]
    fn gather_picks_rows() {
        let s = Split {
            features: vec![0.0, 1.0, 2.0, 3.0, 4.0, 5.0],
            labels: vec![0, 1, 2],
            n_features: 2,
        };
        let g = s.gather(&[2, 0]);
        assert_eq!(g.features, vec![4.0, 5.0, 0.0, 1.0]);
        assert_eq!(g.labels, vec![2, 0]);
        assert_eq!(g.len(), 2);
    }
}
