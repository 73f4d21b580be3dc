//! Blocks shared by the UNet and the VAE: ResnetBlock2D, Transformer2DModel, the VAE's
//! spatial self-attention.
use super::nn::{Attention, Conv, Ctx, GroupNorm, LayerNorm, Linear, Vb};
use crate::error::Result;
use crate::gpu::Tensor;
use crate::ops::{self, Act, ConvFuse, LinearFuse};

/// diffusers ResnetBlock2D (output_scale_factor 1, time embedding added after conv1).
pub struct Resnet {
    norm1: GroupNorm,
    conv1: Conv,
    temb: Option<Linear>,
    norm2: GroupNorm,
    conv2: Conv,
    shortcut: Option<Conv>,
}

impl Resnet {
    pub fn new(vb: &Vb, cin: usize, cout: usize, temb: Option<usize>, groups: usize, eps: f32) -> Resnet {
        Resnet {
            norm1: GroupNorm::new(&vb.pp("norm1"), groups, cin, eps),
            conv1: Conv::new(&vb.pp("conv1"), cin, cout, 3, 1, 1),
            temb: temb.map(|t| Linear::new(&vb.pp("time_emb_proj"), t, cout, true)),
            norm2: GroupNorm::new(&vb.pp("norm2"), groups, cout, eps),
            conv2: Conv::new(&vb.pp("conv2"), cout, cout, 3, 1, 1),
            shortcut: (cin != cout).then(|| Conv::new(&vb.pp("conv_shortcut"), cin, cout, 1, 1, 0)),
        }
    }
    /// `temb_silu`: silu(time embedding) [B, T], shared by every resnet of a step.
    /// Group norms and SiLUs run in the convolutions' prologues, the time embedding in
    /// conv1's epilogue and the shortcut in conv2's: 4 dispatches (+1 with a shortcut conv,
    /// +1 with a time embedding).
    pub fn fwd(&self, c: &Ctx, x: &Tensor, temb_silu: Option<&Tensor>) -> Result<Tensor> {
        let a1 = self.norm1.affine(c, x)?;
        let t = match (&self.temb, temb_silu) {
            (Some(lin), Some(t)) => Some(lin.fwd(c, t, Act::None, None)?),
            _ => None,
        };
        let h = self.conv1.fwd_fused(c, x, ConvFuse { input_affine: Some(&a1), input_silu: true, temb: t.as_ref(), ..Default::default() })?;
        let a2 = self.norm2.affine(c, &h)?;
        let sc = match &self.shortcut {
            Some(s) => s.fwd(c, x, Act::None, None)?,
            None => x.clone(),
        };
        self.conv2.fwd_fused(c, &h, ConvFuse { input_affine: Some(&a2), input_silu: true, residual: Some(&sc), ..Default::default() })
    }
}

/// diffusers BasicTransformerBlock: self-attn, cross-attn, GEGLU feed-forward, pre-LayerNorm.
struct BasicBlock {
    norm1: LayerNorm,
    attn1: Attention,
    norm2: LayerNorm,
    attn2: Attention,
    norm3: LayerNorm,
    ff_in: Linear,
    ff_out: Linear,
}

/// diffusers Transformer2DModel (continuous input) with 1×1-conv or linear projections.
pub struct Transformer2D {
    norm: GroupNorm,
    proj_in_conv: Option<Conv>,
    proj_in_lin: Option<Linear>,
    blocks: Vec<BasicBlock>,
    proj_out_conv: Option<Conv>,
    proj_out_lin: Option<Linear>,
}

impl Transformer2D {
    #[allow(clippy::too_many_arguments)]
    pub fn new(vb: &Vb, c: usize, heads: usize, ctx_dim: usize, groups: usize, layers: usize, linear_proj: bool) -> Transformer2D {
        let blocks = (0..layers)
            .map(|i| {
                let b = vb.pp("transformer_blocks").pp(i);
                BasicBlock {
                    norm1: LayerNorm::new(&b.pp("norm1"), c, 1e-5),
                    attn1: Attention::new(&b.pp("attn1"), ["to_q", "to_k", "to_v", "to_out.0"], c, None, heads, false),
                    norm2: LayerNorm::new(&b.pp("norm2"), c, 1e-5),
                    attn2: Attention::new(&b.pp("attn2"), ["to_q", "to_k", "to_v", "to_out.0"], c, Some(ctx_dim), heads, false),
                    norm3: LayerNorm::new(&b.pp("norm3"), c, 1e-5),
                    ff_in: Linear::new(&b.pp("ff.net.0.proj"), c, 8 * c, true),
                    ff_out: Linear::new(&b.pp("ff.net.2"), 4 * c, c, true),
                }
            })
            .collect();
        Transformer2D {
            norm: GroupNorm::new(&vb.pp("norm"), groups, c, 1e-6),
            proj_in_conv: (!linear_proj).then(|| Conv::new(&vb.pp("proj_in"), c, c, 1, 1, 0)),
            proj_in_lin: linear_proj.then(|| Linear::new(&vb.pp("proj_in"), c, c, true)),
            blocks,
            proj_out_conv: (!linear_proj).then(|| Conv::new(&vb.pp("proj_out"), c, c, 1, 1, 0)),
            proj_out_lin: linear_proj.then(|| Linear::new(&vb.pp("proj_out"), c, c, true)),
        }
    }

    /// x [B, C, H, W], ctx [B, S, Cc] -> [B, C, H, W] (with the residual).
    pub fn fwd(&self, c: &Ctx, x: &Tensor, ctx: &Tensor) -> Result<Tensor> {
        let (b, ch, h, w) = (x.shape()[0], x.shape()[1], x.shape()[2], x.shape()[3]);
        let mut t = match (&self.proj_in_conv, &self.proj_in_lin) {
            (Some(conv), _) => {
                // group norm + 1×1 conv + NCHW→tokens in one dispatch (after the statistics).
                let a = self.norm.affine(c, x)?;
                conv.to_tokens(c, x, &a)?
            }
            (_, Some(lin)) => {
                let n = self.norm.fwd(c, x, false)?;
                let tok = ops::transpose_last2(c.gpu, &n.reshape(&[b, ch, h * w])?)?;
                lin.fwd(c, &tok, Act::None, None)?
            }
            _ => unreachable!("one projection kind is always set"),
        };
        // Layer norms run in the next projection's prologue, GEGLU in ff_in's epilogue.
        for blk in &self.blocks {
            let s1 = blk.norm1.stats(c, &t)?;
            t = blk.attn1.fwd(c, &t, Some(blk.norm1.input(c, &s1)?), None, false, Some(&t))?;
            let s2 = blk.norm2.stats(c, &t)?;
            t = blk.attn2.fwd(c, &t, Some(blk.norm2.input(c, &s2)?), Some(ctx), false, Some(&t))?;
            let s3 = blk.norm3.stats(c, &t)?;
            let g = blk.ff_in.fwd_fused(c, &t, LinearFuse { layer_norm: Some(blk.norm3.input(c, &s3)?), geglu: true, ..Default::default() })?;
            t = blk.ff_out.fwd(c, &g, Act::None, Some(&t))?;
        }
        match (&self.proj_out_conv, &self.proj_out_lin) {
            (Some(conv), _) => conv.from_tokens(c, &t, h, w, x),
            (_, Some(lin)) => {
                let o = lin.fwd(c, &t, Act::None, None)?;
                let s = ops::transpose_last2(c.gpu, &o)?.reshape(&[b, ch, h, w])?;
                ops::add(c.gpu, &s, x, 1.0, 1.0)
            }
            _ => unreachable!("one projection kind is always set"),
        }
    }
}

/// The VAE mid-block attention: group norm, one head over all channels, residual.
pub struct SpatialAttention {
    norm: GroupNorm,
    attn: Attention,
}

impl SpatialAttention {
    pub fn new(vb: &Vb, c: usize, groups: usize) -> SpatialAttention {
        SpatialAttention {
            norm: GroupNorm::new(&vb.pp("group_norm"), groups, c, 1e-6),
            attn: Attention::new(vb, ["to_q", "to_k", "to_v", "to_out.0"], c, None, 1, true),
        }
    }
    pub fn fwd(&self, c: &Ctx, x: &Tensor) -> Result<Tensor> {
        let (b, ch, h, w) = (x.shape()[0], x.shape()[1], x.shape()[2], x.shape()[3]);
        let n = self.norm.fwd(c, x, false)?;
        let tok = ops::transpose_last2(c.gpu, &n.reshape(&[b, ch, h * w])?)?;
        let o = self.attn.fwd(c, &tok, None, None, false, None)?;
        let s = ops::transpose_last2(c.gpu, &o)?.reshape(&[b, ch, h, w])?;
        ops::add(c.gpu, &s, x, 1.0, 1.0)
    }
}
