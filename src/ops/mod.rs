//! Ops: shape checks + one recorded dispatch per kernel (see shaders/*.wgsl).
//! Every op returns a new tensor in the dtype of its main input.
mod attention;
mod elementwise;
mod embedding;
mod gemm;
mod layout;
mod lora;
mod norm;
mod sampler;
mod softmax;

pub use attention::{attention, attention_kernel, attention_views, View};
pub use elementwise::{add, add_bcast, affine, cast, clamp, fill, gelu, geglu, mul, quick_gelu, silu, soft_clamp, unary, Act};
pub use embedding::{timestep_embedding, timestep_freqs, token_position_embedding};
pub use gemm::{conv1x1_to_tokens, conv2d, conv2d_fused, linear, linear_fused, matmul, matmul_split_k, tokens_to_conv1x1, Conv2d, ConvFuse, LayerNormIn, LinearFuse};
pub use layout::{blend_tile, concat_channels, crop2d, slice_channels, tile_origins, tile_ramps, transpose_last2, upsample_nearest2x, Ramps};
pub use lora::{lora_merge, MergeRows};
pub use norm::{affine_apply, group_norm, group_norm_affine, layer_norm, layer_norm_stats, prompt_weighting};
pub use sampler::{lincomb, to_image, vae_sample, Term};
pub use softmax::softmax;

use crate::error::Result;
use crate::gpu::{DType, Gpu, Tensor};

/// Output of a kernel that writes f16 in pairs of adjacent elements. When the
/// pairs would not start on even indices and f16 is packed (no `shader-f16`),
/// the kernel writes an f32 temporary that `finish` casts.
pub(crate) struct Out {
    pub t: Tensor,
    want: DType,
}

impl Out {
    pub fn new(gpu: &Gpu, shape: &[usize], dtype: DType, pairs_aligned: bool) -> Result<Out> {
        let kd = if dtype == DType::F16 && !gpu.native_f16() && !pairs_aligned { DType::F32 } else { dtype };
        Ok(Out { t: gpu.empty(shape, kd)?, want: dtype })
    }
    pub fn finish(self, gpu: &Gpu) -> Result<Tensor> {
        if self.t.dtype() == self.want {
            Ok(self.t)
        } else {
            cast(gpu, &self.t, self.want)
        }
    }
}

pub(crate) fn u(v: usize) -> u32 {
    v as u32
}
pub(crate) fn f(v: f32) -> u32 {
    v.to_bits()
}
