//! Tiny Shakespeare (Karpathy's char-rnn corpus, about 1.1 MB of plays), character level as in
//! nanoGPT's `shakespeare_char`: the vocabulary is the sorted set of distinct characters, the
//! first 90% of the text is training data and the last 10% validation.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use burn::tensor::backend::Backend;
use burn::tensor::{Int, Tensor, TensorData};

use super::Rng;

/// Fraction of the text used for training (the rest is validation).
pub const TRAIN_FRACTION: f64 = 0.9;

/// Why the corpus could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ShakespeareError {
    /// The file could not be read.
    #[error("{}: cannot read: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// The file is not UTF-8 text.
    #[error("{}: not valid UTF-8 (byte {at})", path.display())]
    NotUtf8 {
        /// The file.
        path: PathBuf,
        /// Offset of the first bad byte.
        at: usize,
    },
    /// The text is too short to give both splits a token.
    #[error("{}: text too short ({chars} characters)", path.display())]
    TooShort {
        /// The file.
        path: PathBuf,
        /// Characters read.
        chars: usize,
    },
    /// Encoding met a character outside the vocabulary.
    #[error("character {ch:?} is not in the vocabulary")]
    UnknownChar {
        /// The character.
        ch: char,
    },
}

/// A character vocabulary: token `i` is the `i`-th smallest distinct character.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CharVocab {
    chars: Vec<char>,
    index: HashMap<char, u32>,
}

impl CharVocab {
    /// The sorted distinct characters of `text`.
    pub fn from_text(text: &str) -> Self {
        let mut chars: Vec<char> = text.chars().collect();
        chars.sort_unstable();
        chars.dedup();
        let index = chars
            .iter()
            .enumerate()
            .map(|(i, &c)| (c, i as u32))
            .collect();
        Self { chars, index }
    }

    /// Number of tokens.
    pub fn len(&self) -> usize {
        self.chars.len()
    }

    /// True for the empty vocabulary.
    pub fn is_empty(&self) -> bool {
        self.chars.is_empty()
    }

    /// The characters, in token order.
    pub fn chars(&self) -> &[char] {
        &self.chars
    }

    /// Tokens of `text`; fails on a character outside the vocabulary.
    pub fn encode(&self, text: &str) -> Result<Vec<u32>, ShakespeareError> {
        text.chars()
            .map(|ch| {
                self.index
                    .get(&ch)
                    .copied()
                    .ok_or(ShakespeareError::UnknownChar { ch })
            })
            .collect()
    }

    /// Text of `tokens`.
    ///
    /// # Panics
    /// On a token `>= len()`.
    pub fn decode(&self, tokens: &[u32]) -> String {
        tokens.iter().map(|&t| self.chars[t as usize]).collect()
    }
}

/// Which part of the corpus to draw from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Part {
    /// The first 90%.
    Train,
    /// The last 10%.
    Val,
}

/// The encoded corpus.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Shakespeare {
    /// The vocabulary (65 characters for Tiny Shakespeare).
    pub vocab: CharVocab,
    /// Tokens of the first 90% of the text.
    pub train: Vec<u32>,
    /// Tokens of the last 10%.
    pub val: Vec<u32>,
}

impl Shakespeare {
    /// Split and encode `text` (at least 2 characters).
    pub fn from_text(text: &str) -> Option<Self> {
        let vocab = CharVocab::from_text(text);
        let tokens = vocab.encode(text).ok()?;
        if tokens.len() < 2 {
            return None;
        }
        let n_train = ((tokens.len() as f64 * TRAIN_FRACTION) as usize).clamp(1, tokens.len() - 1);
        Some(Self {
            vocab,
            val: tokens[n_train..].to_vec(),
            train: tokens[..n_train].to_vec(),
        })
    }

    /// The tokens of `part`.
    pub fn tokens(&self, part: Part) -> &[u32] {
        match part {
            Part::Train => &self.train,
            Part::Val => &self.val,
        }
    }

    /// `batch` random windows of `part`: inputs `tokens[s..s + block]` and targets
    /// `tokens[s + 1..s + block + 1]`, both row-major `[batch, block]`, start `s` uniform.
    ///
    /// # Panics
    /// When `part` has no more than `block` tokens.
    pub fn batch_host(
        &self,
        part: Part,
        batch: usize,
        block: usize,
        rng: &mut Rng,
    ) -> (Vec<i64>, Vec<i64>) {
        let data = self.tokens(part);
        assert!(
            data.len() > block,
            "{part:?} split has {} tokens, need more than block {block}",
            data.len()
        );
        let starts: Vec<usize> = (0..batch).map(|_| rng.below(data.len() - block)).collect();
        self.windows_host(part, &starts, block)
    }

    /// The windows of `part` starting at `starts`: inputs `tokens[s..s + block]` and targets
    /// `tokens[s + 1..s + block + 1]`, row-major `[starts.len(), block]`.
    ///
    /// # Panics
    /// When a window runs past the end of `part`.
    pub fn windows_host(&self, part: Part, starts: &[usize], block: usize) -> (Vec<i64>, Vec<i64>) {
        let data = self.tokens(part);
        let mut x = Vec::with_capacity(starts.len() * block);
        let mut y = Vec::with_capacity(starts.len() * block);
        for &s in starts {
            x.extend(data[s..s + block].iter().map(|&t| i64::from(t)));
            y.extend(data[s + 1..s + block + 1].iter().map(|&t| i64::from(t)));
        }
        (x, y)
    }

    /// The starts of the non-overlapping windows that tile `part` from its first token (the
    /// tokens after the last whole window are left out): a full, deterministic evaluation.
    pub fn tiled_starts(&self, part: Part, block: usize) -> Vec<usize> {
        let len = self.tokens(part).len();
        (0..len.saturating_sub(block))
            .step_by(block.max(1))
            .collect()
    }

    /// [`windows_host`](Self::windows_host) as `[starts.len(), block]` integer tensors.
    pub fn windows<B: Backend>(
        &self,
        part: Part,
        starts: &[usize],
        block: usize,
        device: &B::Device,
    ) -> (Tensor<B, 2, Int>, Tensor<B, 2, Int>) {
        let (x, y) = self.windows_host(part, starts, block);
        let n = starts.len();
        (
            Tensor::from_data(TensorData::new(x, [n, block]), device),
            Tensor::from_data(TensorData::new(y, [n, block]), device),
        )
    }

    /// [`batch_host`](Self::batch_host) as `[batch, block]` integer tensors (input, target).
    pub fn batch<B: Backend>(
        &self,
        part: Part,
        batch: usize,
        block: usize,
        rng: &mut Rng,
        device: &B::Device,
    ) -> (Tensor<B, 2, Int>, Tensor<B, 2, Int>) {
        let (x, y) = self.batch_host(part, batch, block, rng);
        (
            Tensor::from_data(TensorData::new(x, [batch, block]), device),
            Tensor::from_data(TensorData::new(y, [batch, block]), device),
        )
    }
}

/// Load the corpus from a text file, or from `input.txt` in a folder.
pub fn load(path: impl AsRef<Path>) -> Result<Shakespeare, ShakespeareError> {
    let mut path = path.as_ref().to_path_buf();
    if path.is_dir() {
        path = path.join("input.txt");
    }
    let bytes = std::fs::read(&path).map_err(|source| ShakespeareError::Io {
        path: path.clone(),
        source,
    })?;
    let text = String::from_utf8(bytes).map_err(|e| ShakespeareError::NotUtf8 {
        path: path.clone(),
        at: e.utf8_error().valid_up_to(),
    })?;
    Shakespeare::from_text(&text).ok_or(ShakespeareError::TooShort {
        path,
        chars: text.chars().count(),
    })
}
