use crate::error::{shape_err, Result};
use crate::gpu::{DType, Dispatch, Gpu, Tensor};

use super::{f, u};

fn row_stats(gpu: &Gpu, x: &Tensor, rows: usize, len: usize, eps: f32) -> Result<Tensor> {
    let stats = gpu.empty(&[rows, 2], DType::F32)?;
    gpu.dispatch(Dispatch {
        file: "norm.wgsl",
        kernel: "row_stats",
        params: &[u(rows), u(len), f(eps)],
        tensors: &[x, &stats],
        workgroups: rows as u64,
    })?;
    Ok(stats)
}

fn check_affine(op: &'static str, x: &Tensor, gamma: &Tensor, beta: &Tensor, c: usize) -> Result<()> {
    if gamma.shape() != [c] || beta.shape() != [c] {
        return shape_err(op, format!("x {:?}: weight {:?} and bias {:?} must be [{c}]", x.shape(), gamma.shape(), beta.shape()));
    }
    Ok(())
}

/// Group norm of x [N, C, ...] as a per-(sample, channel) affine map [N, C, 2] (f32):
/// `x·scale + shift` is the normalised, gamma/beta-scaled value. Convolutions apply it
/// while loading their input (see [`super::conv2d_fused`]), so the normalised tensor is
/// never written.
pub fn group_norm_affine(gpu: &Gpu, x: &Tensor, groups: usize, gamma: &Tensor, beta: &Tensor, eps: f32) -> Result<Tensor> {
    if x.rank() < 2 {
        return shape_err("group_norm", format!("x {:?} needs rank >= 2", x.shape()));
    }
    let (n, c) = (x.shape()[0], x.shape()[1]);
    if groups == 0 || c % groups != 0 {
        return shape_err("group_norm", format!("{c} channels of x {:?} are not divisible into {groups} groups", x.shape()));
    }
    check_affine("group_norm", x, gamma, beta, c)?;
    let hw: usize = x.shape()[2..].iter().product();
    let aff = gpu.empty(&[n, c, 2], DType::F32)?;
    gpu.dispatch(Dispatch {
        file: "norm.wgsl",
        kernel: "group_affine",
        params: &[u(groups), u(c), u(hw), f(eps), u(n * groups)],
        tensors: &[x, gamma, beta, &aff],
        workgroups: (n * groups) as u64,
    })?;
    Ok(aff)
}

/// y = x·scale + shift per (sample, channel) from [`group_norm_affine`], optional SiLU.
pub fn affine_apply(gpu: &Gpu, x: &Tensor, aff: &Tensor, silu: bool) -> Result<Tensor> {
    if x.rank() < 2 || aff.shape() != [x.shape()[0], x.shape()[1], 2] {
        return shape_err("affine_apply", format!("x {:?} with affine {:?}", x.shape(), aff.shape()));
    }
    let hw: usize = x.shape()[2..].iter().product();
    let y = gpu.empty(x.shape(), x.dtype())?;
    gpu.map("norm.wgsl", "affine_apply", &[u(x.shape()[1]), u(hw), silu as u32], &[x, aff], &y)?;
    Ok(y)
}

/// Group norm over x [N, C, ...] with `groups` groups, optional fused SiLU.
pub fn group_norm(gpu: &Gpu, x: &Tensor, groups: usize, gamma: &Tensor, beta: &Tensor, eps: f32, silu: bool) -> Result<Tensor> {
    let aff = group_norm_affine(gpu, x, groups, gamma, beta, eps)?;
    affine_apply(gpu, x, &aff, silu)
}

/// Layer-norm statistics of the rows of x [..., D]: [rows, 2] f32 (mean, rstd), for a
/// linear layer that normalises its input while loading it.
pub fn layer_norm_stats(gpu: &Gpu, x: &Tensor, eps: f32) -> Result<Tensor> {
    let d = x.dim(-1);
    if d == 0 {
        return shape_err("layer_norm", format!("x {:?}", x.shape()));
    }
    row_stats(gpu, x, x.numel() / d, d, eps)
}

/// Layer norm over the last dim of x [..., D].
pub fn layer_norm(gpu: &Gpu, x: &Tensor, gamma: &Tensor, beta: &Tensor, eps: f32) -> Result<Tensor> {
    let d = x.dim(-1);
    if d == 0 {
        return shape_err("layer_norm", format!("x {:?}", x.shape()));
    }
    check_affine("layer_norm", x, gamma, beta, d)?;
    let rows = x.numel() / d;
    let stats = row_stats(gpu, x, rows, d, eps)?;
    let y = gpu.empty(x.shape(), x.dtype())?;
    gpu.map("norm.wgsl", "layer_norm_apply", &[u(d)], &[x, &stats, gamma, beta], &y)?;
    Ok(y)
}

/// Long-prompt weighting (diffusers' `lpw_stable_diffusion.py`, A1111's emphasis): the text
/// states x [R, P, C] multiplied by a weight per position, w [R, P] (f32), then rescaled so
/// that the mean over each row's P·C values is what it was: `y = (x·w)·(mean(x) / mean(x·w))`,
/// in f32, written as `out` (any float dtype: the UNet's storage).
pub fn prompt_weighting(gpu: &Gpu, x: &Tensor, w: &Tensor, out: DType) -> Result<Tensor> {
    if x.rank() != 3 || w.shape() != [x.shape()[0], x.shape()[1]] || x.numel() == 0 || w.dtype() != DType::F32 || out == DType::U32 || x.dtype() == DType::U32 {
        return shape_err("prompt_weighting", format!("x {:?} ({}) and weights {:?} ({}) must be [R, P, C] floats and [R, P] f32, output {}", x.shape(), x.dtype().name(), w.shape(), w.dtype().name(), out.name()));
    }
    let (rows, c) = (x.shape()[0], x.shape()[2]);
    let len = x.numel() / rows;
    let y = super::Out::new(gpu, x.shape(), out, len.is_multiple_of(2))?;
    gpu.dispatch(Dispatch {
        file: "norm.wgsl",
        kernel: "prompt_weighting",
        params: &[u(rows), u(len), u(c)],
        tensors: &[x, w, &y.t],
        workgroups: rows as u64,
    })?;
    y.finish(gpu)
}
