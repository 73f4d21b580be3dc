use crate::error::{shape_err, Result};
use crate::gpu::{DType, Gpu, Tensor};

use super::{f, u};

/// One operand of [`lincomb`]: coefficient · t[offset .. offset + n].
#[derive(Clone, Copy)]
pub struct Term<'a> {
    pub t: &'a Tensor,
    pub offset: usize,
    pub coef: f64,
}

/// y = Σ coef·t[offset ..] over `shape` (any number of terms; 4 per dispatch).
pub fn lincomb(gpu: &Gpu, terms: &[Term], shape: &[usize], dtype: DType) -> Result<Tensor> {
    let n: usize = shape.iter().product();
    if terms.is_empty() {
        return shape_err("lincomb", "no terms");
    }
    for t in terms {
        if t.offset + n > t.t.numel() {
            return shape_err("lincomb", format!("term {:?} at offset {} has fewer than {n} elements", t.t.shape(), t.offset));
        }
    }
    let mut acc: Option<Tensor> = None;
    let mut rest: Vec<Term> = terms.to_vec();
    while !rest.is_empty() || acc.is_none() {
        let mut group: Vec<Term> = Vec::new();
        if let Some(a) = &acc {
            group.push(Term { t: a, offset: 0, coef: 1.0 });
        }
        let take = (4 - group.len()).min(rest.len());
        group.extend(rest.drain(..take));
        let first = group[0].t;
        let pad = Term { t: first, offset: group[0].offset, coef: 0.0 };
        while group.len() < 4 {
            group.push(pad);
        }
        let y = gpu.empty(shape, dtype)?;
        gpu.map(
            "sampler.wgsl",
            "lincomb",
            &[
                u(group[0].offset), u(group[1].offset), u(group[2].offset), u(group[3].offset),
                f(group[0].coef as f32), f(group[1].coef as f32), f(group[2].coef as f32), f(group[3].coef as f32),
            ],
            &[group[0].t, group[1].t, group[2].t, group[3].t],
            &y,
        )?;
        acc = Some(y);
        if rest.is_empty() {
            break;
        }
    }
    Ok(acc.expect("at least one dispatch"))
}

/// scale · (mean + exp(logvar / 2) · noise): a draw from the VAE's latent distribution.
pub fn vae_sample(gpu: &Gpu, mean: &Tensor, logvar: &Tensor, noise: &Tensor, scale: f32) -> Result<Tensor> {
    if mean.shape() != logvar.shape() || mean.shape() != noise.shape() {
        return shape_err("vae_sample", format!("mean {:?}, logvar {:?}, noise {:?}", mean.shape(), logvar.shape(), noise.shape()));
    }
    let y = gpu.empty(mean.shape(), DType::F32)?;
    gpu.map("sampler.wgsl", "vae_sample", &[f(scale)], &[mean, logvar, noise], &y)?;
    Ok(y)
}

/// [B, 3, H, W] in [-1, 1] -> [B, H, W, 3] in [0, 1] (f32), as diffusers' postprocess.
pub fn to_image(gpu: &Gpu, x: &Tensor) -> Result<Tensor> {
    if x.rank() != 4 || x.shape()[1] != 3 {
        return shape_err("to_image", format!("image {:?} must be [B, 3, H, W]", x.shape()));
    }
    let (b, h, w) = (x.shape()[0], x.shape()[2], x.shape()[3]);
    let y = gpu.empty(&[b, h, w, 3], DType::F32)?;
    gpu.map("sampler.wgsl", "to_image", &[u(h), u(w)], &[x], &y)?;
    Ok(y)
}
