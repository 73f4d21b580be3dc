use crate::error::{shape_err, Error, Result};
use crate::gpu::{DType, Gpu, Tensor};

use super::{f, u};

/// Activation fused into kernels (codes as in shaders/activation.wgsl).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Act {
    #[default]
    None = 0,
    Silu = 1,
    Gelu = 2,
    QuickGelu = 3,
    /// max(x, 0) (code 7: 4–6 are the unary kernel's own ops).
    Relu = 7,
}

fn float_only(op: &'static str, x: &Tensor) -> Result<()> {
    if x.dtype() == DType::U32 {
        return Err(Error::Unsupported { op, detail: format!("{x:?}: expected f32 or f16") });
    }
    Ok(())
}

fn unary_raw(gpu: &Gpu, x: &Tensor, op: u32, alpha: f32, beta: f32, dtype: DType) -> Result<Tensor> {
    float_only("unary", x)?;
    let y = gpu.empty(x.shape(), dtype)?;
    gpu.map("elementwise.wgsl", "unary", &[op, f(alpha), f(beta)], &[x], &y)?;
    Ok(y)
}

pub fn unary(gpu: &Gpu, x: &Tensor, act: Act) -> Result<Tensor> {
    unary_raw(gpu, x, act as u32, 1.0, 0.0, x.dtype())
}
pub fn silu(gpu: &Gpu, x: &Tensor) -> Result<Tensor> {
    unary(gpu, x, Act::Silu)
}
pub fn gelu(gpu: &Gpu, x: &Tensor) -> Result<Tensor> {
    unary(gpu, x, Act::Gelu)
}
pub fn quick_gelu(gpu: &Gpu, x: &Tensor) -> Result<Tensor> {
    unary(gpu, x, Act::QuickGelu)
}
/// alpha·x + beta
pub fn affine(gpu: &Gpu, x: &Tensor, alpha: f32, beta: f32) -> Result<Tensor> {
    unary_raw(gpu, x, 4, alpha, beta, x.dtype())
}
/// A new tensor of `shape` filled with `value` (`like` only gives a binding; it is not read).
pub fn fill(gpu: &Gpu, like: &Tensor, shape: &[usize], dtype: DType, value: f32) -> Result<Tensor> {
    let y = gpu.empty(shape, dtype)?;
    gpu.map("elementwise.wgsl", "unary", &[6, f(1.0), f(value)], &[like], &y)?;
    Ok(y)
}

/// `m · tanh(x / m)`: TAESD's soft clamp of the latents to (−m, m).
pub fn soft_clamp(gpu: &Gpu, x: &Tensor, m: f32) -> Result<Tensor> {
    unary_raw(gpu, x, 8, m, 0.0, x.dtype())
}
/// Clamp to [lo, hi].
pub fn clamp(gpu: &Gpu, x: &Tensor, lo: f32, hi: f32) -> Result<Tensor> {
    unary_raw(gpu, x, 5, lo, hi, x.dtype())
}
/// Copy into another float dtype.
pub fn cast(gpu: &Gpu, x: &Tensor, dtype: DType) -> Result<Tensor> {
    if dtype == DType::U32 {
        return Err(Error::Unsupported { op: "cast", detail: "cannot cast to u32".into() });
    }
    unary_raw(gpu, x, 0, 1.0, 0.0, dtype)
}

fn binary(gpu: &Gpu, a: &Tensor, b: &Tensor, op: u32, bcast: [usize; 3], alpha: f32, beta: f32) -> Result<Tensor> {
    float_only("binary", a)?;
    float_only("binary", b)?;
    let y = gpu.empty(a.shape(), a.dtype())?;
    gpu.map(
        "elementwise.wgsl",
        "binary",
        &[op, u(bcast[0]), u(bcast[1]), u(bcast[2]), f(alpha), f(beta)],
        &[a, b],
        &y,
    )?;
    Ok(y)
}

/// alpha·a + beta·b, same shapes.
pub fn add(gpu: &Gpu, a: &Tensor, b: &Tensor, alpha: f32, beta: f32) -> Result<Tensor> {
    if a.shape() != b.shape() {
        return shape_err("add", format!("{:?} + {:?}", a.shape(), b.shape()));
    }
    binary(gpu, a, b, 0, [1, a.numel(), 0], alpha, beta)
}

/// a·b, same shapes.
pub fn mul(gpu: &Gpu, a: &Tensor, b: &Tensor) -> Result<Tensor> {
    if a.shape() != b.shape() {
        return shape_err("mul", format!("{:?} * {:?}", a.shape(), b.shape()));
    }
    binary(gpu, a, b, 1, [1, a.numel(), 0], 1.0, 0.0)
}

/// a [N, C, ...] + b broadcast over the trailing dims: b is [C] or [N, C].
pub fn add_bcast(gpu: &Gpu, a: &Tensor, b: &Tensor) -> Result<Tensor> {
    if a.rank() < 2 {
        return shape_err("add_bcast", format!("a {:?} needs rank >= 2", a.shape()));
    }
    let (n, c) = (a.shape()[0], a.shape()[1]);
    let inner: usize = a.shape()[2..].iter().product();
    let outer = if b.shape() == [c] {
        0
    } else if b.shape() == [n, c] {
        c
    } else {
        return shape_err("add_bcast", format!("a {:?} + b {:?}: b must be [{c}] or [{n}, {c}]", a.shape(), b.shape()));
    };
    binary(gpu, a, b, 0, [inner, c, outer], 1.0, 1.0)
}

/// x [..., 2D] -> x[..., :D] · gelu(x[..., D:])
pub fn geglu(gpu: &Gpu, x: &Tensor) -> Result<Tensor> {
    float_only("geglu", x)?;
    let last = x.dim(-1);
    if last % 2 != 0 || last == 0 {
        return shape_err("geglu", format!("last dim of {:?} must be even", x.shape()));
    }
    let mut shape = x.shape().to_vec();
    *shape.last_mut().unwrap() = last / 2;
    let y = gpu.empty(&shape, x.dtype())?;
    gpu.map("elementwise.wgsl", "geglu", &[u(last / 2)], &[x], &y)?;
    Ok(y)
}
