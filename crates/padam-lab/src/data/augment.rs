//! Image augmentation and normalisation shared by the image datasets.
//!
//! Images are planar `u8` (`[channels, height, width]`, row-major within a plane), as the
//! datasets keep them in memory. Every random choice comes from the crate's seeded
//! [`Rng`], so a seed fixes the augmented batch exactly.

use super::Rng;

/// Per-channel normalisation: a byte `v` of channel `c` becomes `(v / 255 - mean[c]) / std[c]`.
#[derive(Debug, Clone, PartialEq)]
pub struct Normalize {
    /// Mean of each channel, on the `[0, 1]` scale.
    pub mean: Vec<f32>,
    /// Standard deviation of each channel, on the `[0, 1]` scale (all positive).
    pub std: Vec<f32>,
}

impl Normalize {
    /// Normalisation with these per-channel statistics.
    ///
    /// # Panics
    /// When the lengths differ or a standard deviation is not positive.
    pub fn new(mean: &[f32], std: &[f32]) -> Self {
        assert_eq!(mean.len(), std.len(), "Normalize: one std per mean");
        assert!(
            std.iter().all(|&s| s > 0.0),
            "Normalize: std must be positive"
        );
        Self {
            mean: mean.to_vec(),
            std: std.to_vec(),
        }
    }

    /// No shift, no scaling beyond `/ 255` (pixels land in `[0, 1]`).
    pub fn unit(channels: usize) -> Self {
        Self::new(&vec![0.0; channels], &vec![1.0; channels])
    }

    /// Number of channels.
    pub fn channels(&self) -> usize {
        self.mean.len()
    }

    /// Append the normalised values of planar `image` (`channels` equal planes) to `out`.
    pub fn extend(&self, image: &[u8], out: &mut Vec<f32>) {
        let start = out.len();
        out.resize(start + image.len(), 0.0);
        self.write(image, &mut out[start..]);
    }

    /// [`extend`](Self::extend) into `out`, which holds exactly one value per byte of `image`.
    ///
    /// # Panics
    /// When the lengths differ or the image does not split into the channels.
    pub fn write(&self, image: &[u8], out: &mut [f32]) {
        assert_eq!(out.len(), image.len(), "one output value per byte");
        let plane = image.len() / self.channels();
        assert_eq!(
            plane * self.channels(),
            image.len(),
            "image size vs channels"
        );
        for (c, (values, out)) in image
            .chunks_exact(plane)
            .zip(out.chunks_exact_mut(plane))
            .enumerate()
        {
            let scale = 1.0 / (255.0 * self.std[c]);
            let shift = self.mean[c] / self.std[c];
            for (o, &v) in out.iter_mut().zip(values) {
                *o = f32::from(v) * scale - shift;
            }
        }
    }
}

/// Per-channel mean and standard deviation (on the `[0, 1]` scale) of planar images stored
/// back to back in `images`, each with `channels` planes of `plane` pixels.
pub fn channel_stats(images: &[u8], channels: usize, plane: usize) -> (Vec<f32>, Vec<f32>) {
    let mut sum = vec![0u64; channels];
    let mut sum_sq = vec![0u64; channels];
    for image in images.chunks_exact(channels * plane) {
        for (c, values) in image.chunks_exact(plane).enumerate() {
            for &v in values {
                sum[c] += u64::from(v);
                sum_sq[c] += u64::from(v) * u64::from(v);
            }
        }
    }
    let n = (images.len() / channels.max(1)).max(1) as f64;
    let mut mean = Vec::with_capacity(channels);
    let mut std = Vec::with_capacity(channels);
    for c in 0..channels {
        let m = sum[c] as f64 / n;
        let var = (sum_sq[c] as f64 / n - m * m).max(0.0);
        mean.push((m / 255.0) as f32);
        std.push((var.sqrt() / 255.0) as f32);
    }
    (mean, std)
}

/// A random crop of the image zero-padded by `pad` pixels on each side: the output has the
/// input's size and is the input shifted by `dx, dy` drawn uniformly from `-pad..=pad`.
pub fn random_crop(
    image: &[u8],
    channels: usize,
    height: usize,
    width: usize,
    pad: usize,
    rng: &mut Rng,
) -> Vec<u8> {
    let dy = rng.below(2 * pad + 1) as isize - pad as isize;
    let dx = rng.below(2 * pad + 1) as isize - pad as isize;
    shift(image, channels, height, width, dy, dx)
}

/// The image moved so that output pixel `(y, x)` is input pixel `(y + dy, x + dx)`, zero where
/// that falls outside.
pub fn shift(
    image: &[u8],
    channels: usize,
    height: usize,
    width: usize,
    dy: isize,
    dx: isize,
) -> Vec<u8> {
    assert_eq!(image.len(), channels * height * width, "image size");
    let mut out = vec![0u8; image.len()];
    let plane = height * width;
    for c in 0..channels {
        for y in 0..height {
            let sy = y as isize + dy;
            if sy < 0 || sy >= height as isize {
                continue;
            }
            for x in 0..width {
                let sx = x as isize + dx;
                if sx < 0 || sx >= width as isize {
                    continue;
                }
                out[c * plane + y * width + x] =
                    image[c * plane + sy as usize * width + sx as usize];
            }
        }
    }
    out
}

/// Mirror the image left to right, in place.
pub fn hflip(image: &mut [u8], channels: usize, height: usize, width: usize) {
    assert_eq!(image.len(), channels * height * width, "image size");
    for row in image.chunks_exact_mut(width) {
        row.reverse();
    }
}

/// Random rotation and translation, for small grey-scale or colour images.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RandomAffine {
    /// Largest rotation, in degrees (drawn uniformly from `±max_rotation_deg`).
    pub max_rotation_deg: f32,
    /// Largest translation in pixels along each axis (uniform in `±max_shift_px`).
    pub max_shift_px: f32,
}

impl Default for RandomAffine {
    /// ±10 degrees, ±2 pixels.
    fn default() -> Self {
        Self {
            max_rotation_deg: 10.0,
            max_shift_px: 2.0,
        }
    }
}

/// One draw of a [`RandomAffine`]: the rotation and translation it applies.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AffineDraw {
    /// Rotation in radians.
    pub angle: f32,
    /// Translation in pixels, down.
    pub ty: f32,
    /// Translation in pixels, right.
    pub tx: f32,
}

impl AffineDraw {
    /// This transform applied to a planar image (the same for every channel): [`affine`].
    pub fn apply(&self, image: &[u8], channels: usize, height: usize, width: usize) -> Vec<u8> {
        affine(image, channels, height, width, self.angle, self.ty, self.tx)
    }
}

impl RandomAffine {
    /// Draw one transform: three values from `rng` (angle, then `ty`, then `tx`). A batch
    /// draws its images' transforms in order first, so it can apply them on several threads
    /// and still come out as one thread would make it.
    pub fn draw(&self, rng: &mut Rng) -> AffineDraw {
        let max_rot = f64::from(self.max_rotation_deg).to_radians();
        let max_shift = f64::from(self.max_shift_px);
        let angle = rng.uniform(-max_rot, max_rot);
        let ty = rng.uniform(-max_shift, max_shift);
        let tx = rng.uniform(-max_shift, max_shift);
        AffineDraw {
            angle: angle as f32,
            ty: ty as f32,
            tx: tx as f32,
        }
    }

    /// Apply one random draw to a planar image (same transform for every channel).
    pub fn apply(
        &self,
        image: &[u8],
        channels: usize,
        height: usize,
        width: usize,
        rng: &mut Rng,
    ) -> Vec<u8> {
        self.draw(rng).apply(image, channels, height, width)
    }
}

/// Rotate by `angle` radians about the image centre, then translate by `(ty, tx)` pixels,
/// with bilinear sampling and zero outside the source.
pub fn affine(
    image: &[u8],
    channels: usize,
    height: usize,
    width: usize,
    angle: f32,
    ty: f32,
    tx: f32,
) -> Vec<u8> {
    assert_eq!(image.len(), channels * height * width, "image size");
    let plane = height * width;
    let (sin, cos) = angle.sin_cos();
    let cy = (height as f32 - 1.0) / 2.0;
    let cx = (width as f32 - 1.0) / 2.0;
    let at = |c: usize, y: isize, x: isize| -> f32 {
        if y < 0 || x < 0 || y >= height as isize || x >= width as isize {
            0.0
        } else {
            f32::from(image[c * plane + y as usize * width + x as usize])
        }
    };
    let mut out = vec![0u8; image.len()];
    for y in 0..height {
        for x in 0..width {
            // Inverse map: undo the translation, then rotate back by -angle.
            let py = y as f32 - ty - cy;
            let px = x as f32 - tx - cx;
            let sy = -sin * px + cos * py + cy;
            let sx = cos * px + sin * py + cx;
            let y0 = sy.floor();
            let x0 = sx.floor();
            let fy = sy - y0;
            let fx = sx - x0;
            let (y0, x0) = (y0 as isize, x0 as isize);
            for c in 0..channels {
                let v = (1.0 - fy) * ((1.0 - fx) * at(c, y0, x0) + fx * at(c, y0, x0 + 1))
                    + fy * ((1.0 - fx) * at(c, y0 + 1, x0) + fx * at(c, y0 + 1, x0 + 1));
                out[c * plane + y * width + x] = v.round().clamp(0.0, 255.0) as u8;
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identity_affine_and_shift() {
        let img: Vec<u8> = (0..2 * 3 * 4).map(|v| v as u8 * 10).collect();
        assert_eq!(affine(&img, 2, 3, 4, 0.0, 0.0, 0.0), img);
        // Translating by +1 in x moves content right: out(y, x) = in(y, x - 1).
        assert_eq!(
            affine(&img, 2, 3, 4, 0.0, 0.0, 1.0),
            shift(&img, 2, 3, 4, 0, -1)
        );
        let s = shift(&img, 2, 3, 4, 1, 0);
        assert_eq!(&s[..4], &img[4..8]);
        assert_eq!(&s[8..12], &[0, 0, 0, 0]);
    }

    #[test]
    fn rotation_by_90_degrees_moves_corners() {
        // 3x3 with a single bright pixel top-middle; +90° (counter-clockwise in the
        // y-down image frame as implemented) maps it to the middle of a side.
        let mut img = vec![0u8; 9];
        img[1] = 200;
        let r = affine(&img, 1, 3, 3, std::f32::consts::FRAC_PI_2, 0.0, 0.0);
        assert_eq!(r.iter().filter(|&&v| v == 200).count(), 1);
        assert_eq!(r[4], 0);
        assert!(r[3] == 200 || r[5] == 200);
    }

    #[test]
    fn flip_normalise_stats() {
        let mut img = vec![1, 2, 3, 4, 5, 6];
        hflip(&mut img, 1, 2, 3);
        assert_eq!(img, vec![3, 2, 1, 6, 5, 4]);
        let n = Normalize::new(&[0.5, 0.0], &[0.5, 1.0]);
        let mut out = Vec::new();
        n.extend(&[255, 0, 255, 0], &mut out);
        assert_eq!(out, vec![1.0, -1.0, 1.0, 0.0]);
        let (m, s) = channel_stats(&[0, 10, 255, 10], 2, 1);
        assert!((m[0] - 0.5).abs() < 1e-6 && (s[0] - 0.5).abs() < 1e-6);
        assert!((m[1] - 10.0 / 255.0).abs() < 1e-6 && s[1].abs() < 1e-6);
    }

    #[test]
    fn random_crop_is_seeded_and_bounded() {
        let img: Vec<u8> = (0..3 * 8 * 8).map(|v| (v % 251) as u8).collect();
        let a = random_crop(&img, 3, 8, 8, 4, &mut Rng::new(3));
        let b = random_crop(&img, 3, 8, 8, 4, &mut Rng::new(3));
        assert_eq!(a, b);
        assert_eq!(a.len(), img.len());
        let aff = RandomAffine::default().apply(&img, 3, 8, 8, &mut Rng::new(1));
        assert_eq!(
            aff,
            RandomAffine::default().apply(&img, 3, 8, 8, &mut Rng::new(1))
        );
    }
}
