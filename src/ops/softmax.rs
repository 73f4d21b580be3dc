use crate::error::{shape_err, Result};
use crate::gpu::{DType, Dispatch, Gpu, Tensor};

use super::{f, u};

/// softmax(scale·x) over the last dimension.
pub fn softmax(gpu: &Gpu, x: &Tensor, scale: f32) -> Result<Tensor> {
    let len = x.dim(-1);
    if len == 0 {
        return shape_err("softmax", format!("x {:?}", x.shape()));
    }
    let rows = x.numel() / len;
    let stats = gpu.empty(&[rows, 2], DType::F32)?;
    gpu.dispatch(Dispatch {
        file: "softmax.wgsl",
        kernel: "row_max_sum",
        params: &[u(rows), u(len), f(scale)],
        tensors: &[x, &stats],
        workgroups: rows as u64,
    })?;
    let y = gpu.empty(x.shape(), x.dtype())?;
    gpu.map("softmax.wgsl", "apply", &[u(len), f(scale)], &[x, &stats], &y)?;
    Ok(y)
}
