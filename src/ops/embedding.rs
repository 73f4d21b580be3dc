use crate::error::{shape_err, Error, Result};
use crate::gpu::{DType, Gpu, Tensor};

use super::u;

/// ids [B, S] (u32) -> tok[ids] + pos[s]: [B, S, C]. `tok` [V, C], `pos` [P >= S, C].
pub fn token_position_embedding(gpu: &Gpu, ids: &Tensor, tok: &Tensor, pos: &Tensor) -> Result<Tensor> {
    if ids.dtype() != DType::U32 || ids.rank() != 2 {
        return Err(Error::Unsupported { op: "embedding", detail: format!("ids {ids:?} must be u32 [B, S]") });
    }
    let (b, s) = (ids.shape()[0], ids.shape()[1]);
    if tok.rank() != 2 || pos.rank() != 2 || tok.shape()[1] != pos.shape()[1] || pos.shape()[0] < s {
        return shape_err("embedding", format!("ids {:?}, token table {:?}, position table {:?}", ids.shape(), tok.shape(), pos.shape()));
    }
    let c = tok.shape()[1];
    let y = gpu.empty(&[b, s, c], tok.dtype())?;
    gpu.map("embedding.wgsl", "token_position", &[u(c), u(s), u(tok.shape()[0])], &[ids, tok, pos], &y)?;
    Ok(y)
}

/// Frequencies of diffusers' `get_timestep_embedding` (max period 10000), computed in
/// f32 exactly as torch does: exp(-ln(10000) · k / (dim/2 - shift)), k < dim/2.
pub fn timestep_freqs(dim: usize, shift: f32) -> Vec<f32> {
    let half = dim / 2;
    let ln = 10000f32.ln();
    (0..half).map(|k| ((-ln * k as f32) / (half as f32 - shift)).exp()).collect()
}

/// Sinusoidal timestep embedding: t [B] (f32), freqs [dim/2] (f32, from
/// [`timestep_freqs`]) -> [B, dim].
pub fn timestep_embedding(gpu: &Gpu, t: &Tensor, freqs: &Tensor, dim: usize, flip_sin_to_cos: bool, dtype: DType) -> Result<Tensor> {
    if t.dtype() != DType::F32 || t.rank() != 1 || freqs.dtype() != DType::F32 {
        return Err(Error::Unsupported { op: "timestep_embedding", detail: format!("timesteps {t:?} and freqs {freqs:?} must be f32") });
    }
    if dim < 2 || freqs.shape() != [dim / 2] {
        return shape_err("timestep_embedding", format!("dim {dim} needs freqs [{}], got {:?}", dim / 2, freqs.shape()));
    }
    let y = gpu.empty(&[t.shape()[0], dim], dtype)?;
    gpu.map("embedding.wgsl", "timestep", &[u(dim), flip_sin_to_cos as u32], &[t, freqs], &y)?;
    Ok(y)
}
