use crate::error::{shape_err, Result};
use crate::gpu::{DType, Dispatch, Gpu, Tensor};

use super::{f, u};

/// Where a LoRA's rows live in the weight it changes ([`lora_merge`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MergeRows {
    /// First row of the LoRA's part in a fused weight (q/k/v, k/v), 0 otherwise.
    pub offset: usize,
    /// The weight's rows are GEGLU's two halves interleaved (row 2j = h_j, 2j + 1 = gate_j).
    pub interleave: bool,
}

/// `w[rows of the LoRA] += scale · up @ down`, in place, accumulated in f32 and stored back in
/// w's storage: up [rows, rank], down [rank, cols], w [total_rows, …] with cols = numel / total_rows.
pub fn lora_merge(gpu: &Gpu, w: &Tensor, up: &Tensor, down: &Tensor, at: MergeRows, scale: f32) -> Result<()> {
    let (us, ds, ws) = (up.shape(), down.shape(), w.shape());
    let bad = |why: &str| shape_err("lora_merge", format!("weight {ws:?}, up {us:?}, down {ds:?}: {why}"));
    if w.dtype() == DType::U32 || up.dtype() == DType::U32 || down.dtype() == DType::U32 {
        return bad("tensors must be f32 or f16");
    }
    if us.len() != 2 || ds.len() != 2 || ws.is_empty() || ws[0] == 0 {
        return bad("need up [rows, rank], down [rank, cols] and a weight [total_rows, …]");
    }
    let (rows, rank, cols) = (us[0], us[1], ds[1]);
    if ds[0] != rank || rank == 0 || rows == 0 || cols == 0 {
        return bad("up's columns and down's rows must be the same rank (> 0)");
    }
    let total_rows = ws[0];
    if w.numel() != total_rows * cols {
        return bad("the weight's elements per row differ from down's columns");
    }
    if at.offset.checked_add(rows).is_none_or(|end| end > total_rows) {
        return bad(&format!("rows {}..{} are outside the weight", at.offset, at.offset + rows));
    }
    if at.interleave && (at.offset != 0 || rows != total_rows || rows % 2 != 0) {
        return bad("interleaved halves need the LoRA to cover all rows (an even count)");
    }
    let (begin, end) = (at.offset * cols, (at.offset + rows) * cols);
    if end > u32::MAX as usize / 2 {
        return bad("the weight is too large for 32-bit indexing");
    }
    let first = begin & !1;
    let count = (end - first).div_ceil(2);
    gpu.add_flops(2.0 * (rows * cols * rank) as f64);
    gpu.dispatch(Dispatch {
        file: "lora.wgsl",
        kernel: "lora_merge",
        params: &[u(first), u(count), u(cols), u(rank), u(at.offset), u(rows), at.interleave as u32, u(w.numel()), f(scale)],
        tensors: &[up, down, w],
        workgroups: (count as u64).div_ceil(256),
    })
}
