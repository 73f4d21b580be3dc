//! Inpainting inputs, as diffusers' `StableDiffusionInpaintPipeline` prepares them on the CPU:
//! the mask read as PIL's `convert("L")`, fitted to the output like the start image, binarised
//! at 0.5 (white = repaint); the latent mask taken nearest (`F.interpolate`, pixel (f·i, f·j));
//! the masked image = image × (mask < 0.5). Also the optional paste-back of the kept pixels.
use crate::error::{Error, Result};
use crate::image::{resize_to, ResizeMode, Rgb};

/// The grey level of an 8-bit RGBA mask pixel in [0, 1]: PIL's `convert("L")` luminance
/// (ITU-R 601-2, its fixed-point rounding) composited on black by the alpha, so a mask painted
/// on a transparent canvas reads as "keep" where nothing was painted. Opaque masks read
/// exactly as PIL reads them.
pub fn mask_grey(r: u8, g: u8, b: u8, a: u8) -> f32 {
    let l = (r as u32 * 19595 + g as u32 * 38470 + b as u32 * 7471 + 0x8000) >> 16;
    let v = (l * a as u32 + 127) / 255;
    v as f32 / 255.0
}

/// A mask from 8-bit RGBA (any size): the grey level ([`mask_grey`]) in all three channels
/// of an [`Rgb`], so it is fitted to the output by the same resampling as the start image.
pub fn mask_from_rgba(rgba: &[u8], width: usize, height: usize) -> Result<Rgb> {
    if Some(rgba.len()) != width.checked_mul(height).and_then(|n| n.checked_mul(4)) || width == 0 || height == 0 {
        return Err(Error::Invalid(format!("mask: {} bytes for {width}×{height} RGBA", rgba.len())));
    }
    let data = rgba.chunks_exact(4).flat_map(|p| [mask_grey(p[0], p[1], p[2], p[3]); 3]).collect();
    Ok(Rgb { width, height, data })
}

/// Decode a mask PNG or JPEG (grey, RGB or with alpha; any size) with [`mask_from_rgba`]'s
/// reading. The size is checked before the pixels are allocated.
pub fn decode_mask(bytes: &[u8], name: &str) -> Result<Rgb> {
    let rgba = crate::image::decode_limited(bytes, name, "mask")?.to_rgba8();
    mask_from_rgba(rgba.as_raw(), rgba.width() as usize, rgba.height() as usize)
}

/// Everything the inpainting pipeline takes from the start image and the mask.
pub struct Prepared {
    /// The start image fitted to the output, [3, H, W] in [−1, 1].
    pub image_chw: Vec<f32>,
    /// The soft mask fitted to the output, [H, W] in [0, 1] (for the paste-back).
    pub soft: Vec<f32>,
    /// The binarised mask, [H, W] in {0, 1} (diffusers' `mask_condition`).
    pub binary: Vec<f32>,
    /// The latent mask, [H/f, W/f] in {0, 1}: `binary` at (f·i, f·j).
    pub latent: Vec<f32>,
    /// image × (binary < 0.5), [3, H, W].
    pub masked_chw: Vec<f32>,
    /// The start image fitted to the output (for the paste-back).
    pub image: Rgb,
}

/// [3, H, W] in [−1, 1] of an RGB image (diffusers' `preprocess`: 2x − 1).
pub fn to_chw(img: &Rgb) -> Vec<f32> {
    let hw = img.width * img.height;
    let mut chw = vec![0f32; 3 * hw];
    for (i, px) in img.data.chunks_exact(3).enumerate() {
        for ch in 0..3 {
            chw[ch * hw + i] = 2.0 * px[ch] - 1.0;
        }
    }
    chw
}

/// Fit the start image and the mask to `w`×`h` (`mode`, as img2img) and make the mask inputs;
/// `f`: pixels per latent.
pub fn prepare(init: &Rgb, mask: &Rgb, w: usize, h: usize, f: usize, mode: ResizeMode) -> Prepared {
    let image = resize_to(init, w, h, mode);
    let m = resize_to(mask, w, h, mode);
    let soft: Vec<f32> = m.data.chunks_exact(3).map(|p| p[0]).collect();
    let binary: Vec<f32> = soft.iter().map(|&v| if v >= 0.5 { 1.0 } else { 0.0 }).collect();
    let (lh, lw) = (h / f, w / f);
    let mut latent = vec![0f32; lh * lw];
    for i in 0..lh {
        for j in 0..lw {
            latent[i * lw + j] = binary[(i * f) * w + j * f];
        }
    }
    let image_chw = to_chw(&image);
    let hw = w * h;
    let masked_chw = image_chw.iter().enumerate().map(|(k, &v)| if binary[k % hw] < 0.5 { v } else { 0.0 }).collect();
    Prepared { image_chw, soft, binary, latent, masked_chw, image }
}

/// The kept pixels pasted back over a generated image (diffusers' `apply_overlay`: the start
/// image composited over the result with alpha = 1 − soft mask).
pub fn paste_back(generated: &Rgb, image: &Rgb, soft: &[f32]) -> Rgb {
    let data = generated
        .data
        .iter()
        .enumerate()
        .map(|(k, &g)| {
            let m = soft.get(k / 3).copied().unwrap_or(1.0);
            let o = image.data.get(k).copied().unwrap_or(g);
            o * (1.0 - m) + g * m
        })
        .collect();
    Rgb { width: generated.width, height: generated.height, data }
}

/// Whether a UNet of `in_channels` is an inpainting UNet for `latent_channels`-channel
/// latents ([latents, mask, masked-image latents]: 9 for SD).
pub fn is_inpainting_unet(in_channels: usize, latent_channels: usize) -> bool {
    in_channels == 2 * latent_channels + 1
}
