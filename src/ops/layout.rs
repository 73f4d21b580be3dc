use crate::error::{shape_err, Result};
use crate::gpu::{DType, Dispatch, Gpu, Tensor};

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
    let mut shape_buf = [0usize; crate::gpu::MAX_RANK];
    let shape = &mut shape_buf[..a.rank()];
    shape.copy_from_slice(a.shape());
    shape[1] += b.shape()[1];
    let y = gpu.empty(shape, a.dtype())?;
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

/// x [N, C, H, W] -> x[:, :, oy .. oy + th, ox .. ox + tw]
pub fn crop2d(gpu: &Gpu, x: &Tensor, oy: usize, ox: usize, th: usize, tw: usize) -> Result<Tensor> {
    let s = x.shape();
    if s.len() != 4 || th == 0 || tw == 0 || oy + th > s[2] || ox + tw > s[3] {
        return shape_err("crop2d", format!("{th}×{tw} at ({oy}, {ox}) of {s:?}"));
    }
    let y = gpu.empty(&[s[0], s[1], th, tw], x.dtype())?;
    gpu.map("layout.wgsl", "crop2d", &[u(s[2]), u(s[3]), u(th), u(tw), u(oy), u(ox)], &[x], &y)?;
    Ok(y)
}

/// Ramps (top, bottom, left, right) of a tile: the overlaps with its neighbours.
pub type Ramps = [usize; 4];

/// y [B, C, H, W] (f32) += ramp-weighted tile [B, C, th, tw] at (oy, ox); see layout.wgsl.
pub fn blend_tile(gpu: &Gpu, y: &Tensor, tile: &Tensor, oy: usize, ox: usize, ramps: Ramps) -> Result<()> {
    let (ys, ts) = (y.shape(), tile.shape());
    if ys.len() != 4 || ts.len() != 4 || ys[..2] != ts[..2] || oy + ts[2] > ys[2] || ox + ts[3] > ys[3] || y.dtype() != DType::F32 {
        return shape_err("blend_tile", format!("tile {ts:?} at ({oy}, {ox}) into {ys:?} (f32)"));
    }
    if ramps[0] + ramps[1] > ts[2] || ramps[2] + ramps[3] > ts[3] {
        return shape_err("blend_tile", format!("ramps {ramps:?} longer than tile {ts:?}"));
    }
    let n = tile.numel();
    gpu.dispatch(Dispatch {
        file: "layout.wgsl",
        kernel: "blend_tile",
        params: &[u(n), u(ts[2]), u(ts[3]), u(ys[2]), u(ys[3]), u(oy), u(ox), u(ramps[0]), u(ramps[1]), u(ramps[2]), u(ramps[3])],
        tensors: &[tile, y],
        workgroups: (n as u64).div_ceil(256),
    })
}

/// Tile origins covering `len` with tiles of `tile`, overlapping by about `overlap` or
/// more (evenly spread; the last tile ends at `len`). No point is covered by more than two
/// tiles, so ramps over the pairwise overlaps form a partition of unity.
pub fn tile_origins(len: usize, tile: usize, overlap: usize) -> Vec<usize> {
    if len <= tile {
        return vec![0];
    }
    let span = len - tile;
    let stride = tile.saturating_sub(overlap).max(1);
    let mut n = span.div_ceil(stride) + 1;
    loop {
        let o: Vec<usize> = (0..n).map(|i| i * span / (n - 1)).collect();
        // Tile i + 2 must start where tile i ends or later.
        if n <= 2 || o.windows(3).all(|w| w[2] >= w[0] + tile) {
            return o;
        }
        n -= 1;
    }
}

/// The overlaps (before, after) of tile `i` with its neighbours along one axis.
pub fn tile_ramps(origins: &[usize], i: usize, tile: usize) -> (usize, usize) {
    let before = if i > 0 { (origins[i - 1] + tile).saturating_sub(origins[i]) } else { 0 };
    let after = origins.get(i + 1).map_or(0, |&o| (origins[i] + tile).saturating_sub(o));
    (before, after)
}
