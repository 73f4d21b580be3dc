use crate::error::{shape_err, Result};
use crate::gpu::{Gpu, Tensor};

use super::u;

/// [N, C1, ...] ++ [N, C2, ...] -> [N, C1 + C2, ...]
pub fn concat_channels(gpu: &Gpu, a: &Tensor, b: &Tensor) -> Result<Tensor> {
    if a.rank() < 2 || a.rank() != b.rank() || a.shape()[0] != b.shape()[0] || a.shape()[2..] != b.shape()[2..] {
        return shape_err("concat_channels", format!("{:?} ++ {:?}", a.shape(), b.shape()));
    }
    if a.dtype() != b.dtype() {
        return shape_err("concat_channels", format!("dtypes differ: {:?} {:?}", a, b));
    }
    let s: usize = a.shape()[2..].iter().product();
    let mut shape = a.shape().to_vec();
    shape[1] += b.shape()[1];
    let y = gpu.empty(&shape, a.dtype())?;
    gpu.map("layout.wgsl", "concat_channels", &[u(a.shape()[1]), u(b.shape()[1]), u(s)], &[a, b], &y)?;
    Ok(y)
}

/// [..., H, W] -> [..., 2H, 2W], nearest.
pub fn upsample_nearest2x(gpu: &Gpu, x: &Tensor) -> Result<Tensor> {
    if x.rank() < 2 {
        return shape_err("upsample_nearest2x", format!("{:?} needs rank >= 2", x.shape()));
    }
    let r = x.rank();
    let (h, w) = (x.shape()[r - 2], x.shape()[r - 1]);
    let mut shape = x.shape().to_vec();
    shape[r - 2] *= 2;
    shape[r - 1] *= 2;
    let y = gpu.empty(&shape, x.dtype())?;
    gpu.map("layout.wgsl", "upsample2x", &[u(h), u(w)], &[x], &y)?;
    Ok(y)
}

/// [B, R, C] -> [B, C, R] (leading dims folded into B).
pub fn transpose_last2(gpu: &Gpu, x: &Tensor) -> Result<Tensor> {
    if x.rank() < 2 {
        return shape_err("transpose", format!("{:?} needs rank >= 2", x.shape()));
    }
    let k = x.rank();
    let (r, c) = (x.shape()[k - 2], x.shape()[k - 1]);
    let mut shape = x.shape().to_vec();
    shape[k - 2] = c;
    shape[k - 1] = r;
    let y = gpu.empty(&shape, x.dtype())?;
    gpu.map("layout.wgsl", "transpose", &[u(r), u(c)], &[x], &y)?;
    Ok(y)
}

/// x [N, C, ...] -> x[:, c0 .. c0 + len, ...]
pub fn slice_channels(gpu: &Gpu, x: &Tensor, c0: usize, len: usize) -> Result<Tensor> {
    if x.rank() < 2 || len == 0 || c0 + len > x.shape()[1] {
        return shape_err("slice_channels", format!("channels {c0}..{} of {:?}", c0 + len, x.shape()));
    }
    let s: usize = x.shape()[2..].iter().product();
    let mut shape = x.shape().to_vec();
    shape[1] = len;
    let y = gpu.empty(&shape, x.dtype())?;
    gpu.map("layout.wgsl", "slice_channels", &[u(x.shape()[1]), u(c0), u(len), u(s)], &[x], &y)?;
    Ok(y)
}
