//! The weight matrices of the engine and their products with activations: a weight is either a
//! dense row-major matrix (multiplied by the `gemm` crate, the kernel burn-flex's matmul runs) or
//! CSR (compressed sparse rows, our own kernel below).
//!
//! Every product is `out[M, P] = A[M, K] · x[K, P]`, activations feature-major (one row per
//! input feature, one column per sample or pixel), so the CSR kernel's inner loop is an axpy
//! over a contiguous row of `x`, which vectorises; with `P = 1` it is a gathered dot product.

use rayon::prelude::*;

/// Work (multiply-adds) below which a product runs on the calling thread: waking rayon's
/// threads costs tens of microseconds on a busy 2-core machine, more than a sequential pass over
/// this much work (the crossover table showed a CSR product with 40k non-zeros slower in
/// parallel than the dense one, and 3.5x faster with 20k sequentially).
pub(super) const PARALLEL_MIN_WORK: usize = 1 << 18;

/// A weight matrix `[rows, cols]` in compressed sparse rows.
#[derive(Debug, Clone, PartialEq)]
pub struct Csr {
    /// Rows (output features).
    pub rows: usize,
    /// Columns (input features).
    pub cols: usize,
    /// `row_ptr[r]..row_ptr[r + 1]` are row `r`'s entries.
    pub row_ptr: Vec<u32>,
    /// Column of each stored entry, increasing within a row.
    pub col_idx: Vec<u32>,
    /// Value of each stored entry (never 0).
    pub values: Vec<f32>,
}

impl Csr {
    /// The non-zero entries of the row-major `values` `[rows, cols]`.
    pub fn from_dense(rows: usize, cols: usize, values: &[f32]) -> Self {
        assert_eq!(
            values.len(),
            rows * cols,
            "values of a [{rows}, {cols}] matrix"
        );
        assert!(values.len() <= u32::MAX as usize, "CSR indices are u32");
        let mut row_ptr = Vec::with_capacity(rows + 1);
        let mut col_idx = Vec::new();
        let mut vals = Vec::new();
        row_ptr.push(0);
        for row in values.chunks_exact(cols.max(1)).take(rows) {
            for (c, &v) in row.iter().enumerate() {
                if v != 0.0 {
                    col_idx.push(c as u32);
                    vals.push(v);
                }
            }
            row_ptr.push(col_idx.len() as u32);
        }
        // A matrix without columns has no entries but still `rows + 1` pointers.
        row_ptr.resize(rows + 1, 0);
        Self {
            rows,
            cols,
            row_ptr,
            col_idx,
            values: vals,
        }
    }

    /// Stored entries.
    pub fn nnz(&self) -> usize {
        self.values.len()
    }

    /// Bytes held: values, column indices and row pointers.
    pub fn bytes(&self) -> usize {
        4 * (self.values.len() + self.col_idx.len() + self.row_ptr.len())
    }

    /// `out[rows, p] = self · x[cols, p]` (row-major; `out` is overwritten).
    pub fn matmul(&self, x: &[f32], p: usize, out: &mut [f32]) {
        assert_eq!(x.len(), self.cols * p, "x is [{}, {p}]", self.cols);
        assert_eq!(out.len(), self.rows * p, "out is [{}, {p}]", self.rows);
        if p == 0 || self.rows == 0 {
            return;
        }
        let work = self.nnz() * p;
        if work < PARALLEL_MIN_WORK {
            self.rows_into(0, x, p, out);
            return;
        }
        // Bands of rows, several per thread so uneven rows balance out.
        let band = self.rows.div_ceil(rayon::current_num_threads() * 8).max(1);
        if self.rows >= 2 * rayon::current_num_threads() || p < 256 {
            out.par_chunks_mut(band * p)
                .enumerate()
                .for_each(|(b, o)| self.rows_into(b * band, x, p, o));
        } else {
            // Few rows and wide activations (a convolution over many pixels): split the
            // columns instead, each task computing every row for its block of columns.
            let block = p.div_ceil(rayon::current_num_threads() * 4).max(64);
            let blocks = p.div_ceil(block);
            let parts: Vec<(usize, Vec<f32>)> = (0..blocks)
                .into_par_iter()
                .map(|j| {
                    let (c0, c1) = (j * block, ((j + 1) * block).min(p));
                    let w = c1 - c0;
                    let mut o = vec![0.0f32; self.rows * w];
                    for r in 0..self.rows {
                        let orow = &mut o[r * w..(r + 1) * w];
                        for e in self.row_ptr[r] as usize..self.row_ptr[r + 1] as usize {
                            let c = self.col_idx[e] as usize;
                            axpy(self.values[e], &x[c * p + c0..c * p + c1], orow);
                        }
                    }
                    (c0, o)
                })
                .collect();
            for (c0, o) in parts {
                let w = o.len() / self.rows;
                for r in 0..self.rows {
                    out[r * p + c0..r * p + c0 + w].copy_from_slice(&o[r * w..(r + 1) * w]);
                }
            }
        }
    }

    /// Rows `first..` of the product into `out` (as many rows as `out` holds).
    fn rows_into(&self, first: usize, x: &[f32], p: usize, out: &mut [f32]) {
        for (i, orow) in out.chunks_exact_mut(p).enumerate() {
            let r = first + i;
            let (s, e) = (self.row_ptr[r] as usize, self.row_ptr[r + 1] as usize);
            let (cols, vals) = (&self.col_idx[s..e], &self.values[s..e]);
            if p == 1 {
                // A dot product with 4 partial sums, so the adds need not wait on each other.
                let mut acc = [0.0f32; 4];
                let mut cc = cols.chunks_exact(4);
                let mut vv = vals.chunks_exact(4);
                for (c4, v4) in (&mut cc).zip(&mut vv) {
                    for k in 0..4 {
                        acc[k] += v4[k] * x[c4[k] as usize];
                    }
                }
                let mut sum = (acc[0] + acc[1]) + (acc[2] + acc[3]);
                for (&c, &v) in cc.remainder().iter().zip(vv.remainder()) {
                    sum += v * x[c as usize];
                }
                orow[0] = sum;
            } else {
                orow.fill(0.0);
                for (&c, &v) in cols.iter().zip(vals) {
                    let c = c as usize;
                    axpy(v, &x[c * p..(c + 1) * p], orow);
                }
            }
        }
    }
}

/// `y += a·x`, vectorised by the compiler.
#[inline]
pub(super) fn axpy(a: f32, x: &[f32], y: &mut [f32]) {
    for (y, x) in y.iter_mut().zip(x) {
        *y += a * x;
    }
}

/// A dense row-major weight matrix `[rows, cols]`.
#[derive(Debug, Clone, PartialEq)]
pub struct Dense {
    /// Rows (output features).
    pub rows: usize,
    /// Columns (input features).
    pub cols: usize,
    /// Row-major values.
    pub values: Vec<f32>,
}

impl Dense {
    /// `out[rows, p] = self · x[cols, p]` (row-major; `out` is overwritten).
    pub fn matmul(&self, x: &[f32], p: usize, out: &mut [f32]) {
        assert_eq!(x.len(), self.cols * p, "x is [{}, {p}]", self.cols);
        assert_eq!(out.len(), self.rows * p, "out is [{}, {p}]", self.rows);
        let (m, k, n) = (self.rows, self.cols, p);
        // burn-flex's threshold for a parallel gemm (192³ multiply-adds), so the dense rows of
        // the engine and burn split work alike.
        let parallel = m * k * n >= 192 * 192 * 192;
        gemm_f32([m, n, k], out, &self.values, [k, 1], x, [n, 1], parallel);
    }
}

/// `out[m, n] = a · b`, `out` row-major and overwritten, single-threaded: `a` `[m, k]` and `b`
/// `[k, n]` given by their strides (`[row, column]`), so a transposed operand needs no copy
/// (attention's `q · kᵀ`).
pub fn matmul_strided(
    [m, n, k]: [usize; 3],
    a: &[f32],
    a_strides: [usize; 2],
    b: &[f32],
    b_strides: [usize; 2],
    out: &mut [f32],
) {
    gemm_f32([m, n, k], out, a, a_strides, b, b_strides, false);
}

/// The one call of the `gemm` crate: `out[m, n] = a · b` (row-major `out`, overwritten).
fn gemm_f32(
    [m, n, k]: [usize; 3],
    out: &mut [f32],
    a: &[f32],
    [a_rs, a_cs]: [usize; 2],
    b: &[f32],
    [b_rs, b_cs]: [usize; 2],
    parallel: bool,
) {
    assert!(out.len() >= m * n, "out holds [{m}, {n}]");
    if m == 0 || n == 0 {
        return;
    }
    if k == 0 {
        out[..m * n].fill(0.0);
        return;
    }
    let last = |rs: usize, cs: usize, rows: usize, cols: usize| (rows - 1) * rs + (cols - 1) * cs;
    assert!(
        a.len() > last(a_rs, a_cs, m, k),
        "a holds [{m}, {k}] at its strides"
    );
    assert!(
        b.len() > last(b_rs, b_cs, k, n),
        "b holds [{k}, {n}] at its strides"
    );
    let parallelism = if parallel {
        gemm::Parallelism::Rayon(0)
    } else {
        gemm::Parallelism::None
    };
    // SAFETY: `out`, `a` and `b` hold every element the shapes and strides below address
    // (checked above), and `out` is a unique borrow, so it aliases neither input.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            out.as_mut_ptr(),
            1,
            n as isize,
            false,
            a.as_ptr(),
            a_cs as isize,
            a_rs as isize,
            b.as_ptr(),
            b_cs as isize,
            b_rs as isize,
            0.0f32,
            1.0f32,
            false,
            false,
            false,
            parallelism,
        );
    }
}

/// A weight matrix as the engine holds it: dense or CSR, chosen per tensor.
#[derive(Debug, Clone, PartialEq)]
pub enum Matrix {
    /// Dense, multiplied by `gemm`.
    Dense(Dense),
    /// Compressed sparse rows, our kernel.
    Sparse(Csr),
}

impl Matrix {
    /// The row-major `values` `[rows, cols]` as CSR when at least `threshold` of them are
    /// exactly zero, else dense (a `threshold` above 1 keeps every matrix dense).
    pub fn choose(rows: usize, cols: usize, values: Vec<f32>, threshold: f64) -> Self {
        assert_eq!(
            values.len(),
            rows * cols,
            "values of a [{rows}, {cols}] matrix"
        );
        if zero_fraction(&values) >= threshold {
            Matrix::Sparse(Csr::from_dense(rows, cols, &values))
        } else {
            Matrix::Dense(Dense { rows, cols, values })
        }
    }

    /// Rows (output features).
    pub fn rows(&self) -> usize {
        match self {
            Matrix::Dense(d) => d.rows,
            Matrix::Sparse(s) => s.rows,
        }
    }

    /// Columns (input features).
    pub fn cols(&self) -> usize {
        match self {
            Matrix::Dense(d) => d.cols,
            Matrix::Sparse(s) => s.cols,
        }
    }

    /// Bytes the weights occupy in memory.
    pub fn bytes(&self) -> usize {
        match self {
            Matrix::Dense(d) => 4 * d.values.len(),
            Matrix::Sparse(s) => s.bytes(),
        }
    }

    /// True when stored as CSR.
    pub fn is_sparse(&self) -> bool {
        matches!(self, Matrix::Sparse(_))
    }

    /// `self · x[cols, p]`, a new `[rows, p]` matrix.
    pub fn matmul(&self, x: &[f32], p: usize) -> Vec<f32> {
        let mut out = vec![0.0f32; self.rows() * p];
        match self {
            Matrix::Dense(d) => d.matmul(x, p, &mut out),
            Matrix::Sparse(s) => s.matmul(x, p, &mut out),
        }
        out
    }
}

/// Fraction of `values` that are exactly zero (0 for an empty slice).
pub fn zero_fraction(values: &[f32]) -> f64 {
    if values.is_empty() {
        return 0.0;
    }
    values.iter().filter(|v| **v == 0.0).count() as f64 / values.len() as f64
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::Rng;

    use crate::infer::sparse_normal as random;

    fn naive(a: &[f32], m: usize, k: usize, x: &[f32], p: usize) -> Vec<f32> {
        let mut out = vec![0.0f32; m * p];
        for i in 0..m {
            for j in 0..p {
                let mut s = 0.0f64;
                for l in 0..k {
                    s += a[i * k + l] as f64 * x[l * p + j] as f64;
                }
                out[i * p + j] = s as f32;
            }
        }
        out
    }

    #[test]
    fn csr_and_dense_products_equal_the_naive_one() {
        let mut rng = Rng::new(3);
        // Shapes that take every path: sequential, row bands, column blocks, p = 1, empty rows.
        for &(m, k, p, zeros) in &[
            (7, 5, 1, 0.5),
            (300, 200, 1, 0.9),
            (64, 288, 4096, 0.95),
            (3, 400, 2000, 0.3),
            (256, 512, 64, 0.97),
            (5, 0, 3, 0.0),
            (0, 4, 3, 0.0),
        ] {
            let a = random(m * k, zeros, &mut rng);
            let x = random(k * p, 0.0, &mut rng);
            let want = naive(&a, m, k, &x, p);
            for threshold in [0.0, 2.0] {
                let got = Matrix::choose(m, k, a.clone(), threshold).matmul(&x, p);
                let scale = want.iter().fold(1.0f32, |s, v| s.max(v.abs()));
                for (g, w) in got.iter().zip(&want) {
                    assert!(
                        (g - w).abs() <= 1e-5 * scale,
                        "[{m}, {k}] x [{k}, {p}] threshold {threshold}: {g} vs {w}"
                    );
                }
            }
        }
    }

    #[test]
    fn csr_keeps_exactly_the_nonzeros() {
        let a = [0.0, 1.5, 0.0, -2.0, 0.0, 0.0, 0.0, 3.0];
        let c = Csr::from_dense(2, 4, &a);
        assert_eq!(c.row_ptr, vec![0, 2, 3]);
        assert_eq!(c.col_idx, vec![1, 3, 3]);
        assert_eq!(c.values, vec![1.5, -2.0, 3.0]);
        assert_eq!(c.bytes(), 4 * (3 + 3 + 3));
        assert!(Matrix::choose(2, 4, a.to_vec(), 0.6).is_sparse());
        assert!(!Matrix::choose(2, 4, a.to_vec(), 0.7).is_sparse());
        assert_eq!(zero_fraction(&a), 0.625);
    }
}
