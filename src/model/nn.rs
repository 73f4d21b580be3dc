//! Layers as compositions of ops, named like their PyTorch modules. A layer holds the
//! names of its weights; the builder ([`Vb`]) records every name and shape so the
//! loader, the synthetic-weight writer and the memory planner know them.
use std::cell::RefCell;
use std::rc::Rc;

use crate::error::Result;
use crate::gpu::{Gpu, Tensor};
use crate::ops::{self, Act, Conv2d, ConvFuse, LayerNormIn, LinearFuse};
use crate::weights::{Spec, Weights};

/// Weight-name builder (like candle's VarBuilder, without the tensors).
#[derive(Clone)]
pub struct Vb {
    prefix: String,
    specs: Rc<RefCell<Vec<Spec>>>,
}

impl Vb {
    pub fn root(component: &str) -> Vb {
        Vb { prefix: format!("{component}/"), specs: Rc::new(RefCell::new(Vec::new())) }
    }
    pub fn pp(&self, s: impl std::fmt::Display) -> Vb {
        Vb { prefix: format!("{}{s}.", self.prefix), specs: self.specs.clone() }
    }
    pub fn param(&self, name: &str, shape: &[usize]) -> String {
        let full = format!("{}{name}", self.prefix);
        self.specs.borrow_mut().push(Spec { name: full.clone(), shape: shape.to_vec() });
        full
    }
    pub fn specs(&self) -> Vec<Spec> {
        self.specs.borrow().clone()
    }
}

/// What a forward pass needs.
pub struct Ctx<'a> {
    pub gpu: &'a Gpu,
    pub w: &'a Weights,
}

pub struct Linear {
    w: String,
    b: Option<String>,
}

impl Linear {
    pub fn new(vb: &Vb, inp: usize, out: usize, bias: bool) -> Linear {
        Linear { w: vb.param("weight", &[out, inp]), b: bias.then(|| vb.param("bias", &[out])) }
    }
    pub fn fwd(&self, c: &Ctx, x: &Tensor, act: Act, res: Option<&Tensor>) -> Result<Tensor> {
        let b = match &self.b {
            Some(b) => Some(c.w.get(b)?),
            None => None,
        };
        ops::linear(c.gpu, x, c.w.get(&self.w)?, b, act, res)
    }
    /// With a fused prologue / epilogue (the layer's own bias is added).
    pub fn fwd_fused(&self, c: &Ctx, x: &Tensor, fz: LinearFuse) -> Result<Tensor> {
        let b = match &self.b {
            Some(b) => Some(c.w.get(b)?),
            None => None,
        };
        ops::linear_fused(c.gpu, x, c.w.get(&self.w)?, LinearFuse { bias: b, ..fz })
    }
}

pub struct Conv {
    w: String,
    b: String,
    geo: Conv2d,
}

impl Conv {
    pub fn new(vb: &Vb, cin: usize, cout: usize, k: usize, stride: usize, pad: usize) -> Conv {
        Conv::with_pad(vb, cin, cout, k, stride, [pad; 4])
    }
    pub fn with_pad(vb: &Vb, cin: usize, cout: usize, k: usize, stride: usize, pad: [usize; 4]) -> Conv {
        Conv { w: vb.param("weight", &[cout, cin, k, k]), b: vb.param("bias", &[cout]), geo: Conv2d { stride, pad } }
    }
    pub fn fwd(&self, c: &Ctx, x: &Tensor, act: Act, res: Option<&Tensor>) -> Result<Tensor> {
        ops::conv2d(c.gpu, x, c.w.get(&self.w)?, Some(c.w.get(&self.b)?), self.geo, act, res)
    }
    /// A 1×1 conv of x [B, C, H, W] with a group-norm affine on load, written as tokens [B, H·W, Cout].
    pub fn to_tokens(&self, c: &Ctx, x: &Tensor, affine: &Tensor) -> Result<Tensor> {
        ops::conv1x1_to_tokens(c.gpu, x, c.w.get(&self.w)?, Some(c.w.get(&self.b)?), Some(affine))
    }
    /// A 1×1 conv of tokens [B, H·W, C] back to [B, Cout, H, W], + residual.
    pub fn from_tokens(&self, c: &Ctx, t: &Tensor, h: usize, w: usize, residual: &Tensor) -> Result<Tensor> {
        ops::tokens_to_conv1x1(c.gpu, t, c.w.get(&self.w)?, Some(c.w.get(&self.b)?), Some(residual), h, w)
    }
    /// With a fused prologue / epilogue (the conv's own bias is added).
    pub fn fwd_fused(&self, c: &Ctx, x: &Tensor, fz: ConvFuse) -> Result<Tensor> {
        ops::conv2d_fused(c.gpu, x, c.w.get(&self.w)?, self.geo, ConvFuse { bias: Some(c.w.get(&self.b)?), ..fz })
    }
}

pub struct GroupNorm {
    w: String,
    b: String,
    groups: usize,
    eps: f32,
}

impl GroupNorm {
    pub fn new(vb: &Vb, groups: usize, c: usize, eps: f32) -> GroupNorm {
        GroupNorm { w: vb.param("weight", &[c]), b: vb.param("bias", &[c]), groups, eps }
    }
    pub fn fwd(&self, c: &Ctx, x: &Tensor, silu: bool) -> Result<Tensor> {
        ops::group_norm(c.gpu, x, self.groups, c.w.get(&self.w)?, c.w.get(&self.b)?, self.eps, silu)
    }
    /// The norm as a per-(sample, channel) affine map for a convolution's prologue.
    pub fn affine(&self, c: &Ctx, x: &Tensor) -> Result<Tensor> {
        ops::group_norm_affine(c.gpu, x, self.groups, c.w.get(&self.w)?, c.w.get(&self.b)?, self.eps)
    }
}

pub struct LayerNorm {
    w: String,
    b: String,
    eps: f32,
}

impl LayerNorm {
    pub fn new(vb: &Vb, d: usize, eps: f32) -> LayerNorm {
        LayerNorm { w: vb.param("weight", &[d]), b: vb.param("bias", &[d]), eps }
    }
    pub fn fwd(&self, c: &Ctx, x: &Tensor) -> Result<Tensor> {
        ops::layer_norm(c.gpu, x, c.w.get(&self.w)?, c.w.get(&self.b)?, self.eps)
    }
    /// Row statistics of x: the norm then runs in the next linear layer's prologue.
    pub fn stats(&self, c: &Ctx, x: &Tensor) -> Result<Tensor> {
        ops::layer_norm_stats(c.gpu, x, self.eps)
    }
    pub fn input<'a>(&self, c: &Ctx<'a>, stats: &'a Tensor) -> Result<LayerNormIn<'a>> {
        Ok(LayerNormIn { stats, gamma: c.w.get(&self.w)?, beta: c.w.get(&self.b)? })
    }
}

/// Multi-head attention with separate q/k/v/out projections (diffusers `Attention`,
/// transformers `CLIPAttention`).
pub struct Attention {
    q: Linear,
    k: Linear,
    v: Linear,
    out: Linear,
    heads: usize,
    head_dim: usize,
}

impl Attention {
    /// `names`: q, k, v, out module names; `qkv_bias`: whether q/k/v have biases.
    pub fn new(vb: &Vb, names: [&str; 4], dim: usize, ctx_dim: usize, heads: usize, qkv_bias: bool) -> Attention {
        Attention {
            q: Linear::new(&vb.pp(names[0]), dim, dim, qkv_bias),
            k: Linear::new(&vb.pp(names[1]), ctx_dim, dim, qkv_bias),
            v: Linear::new(&vb.pp(names[2]), ctx_dim, dim, qkv_bias),
            out: Linear::new(&vb.pp(names[3]), dim, dim, true),
            heads,
            head_dim: dim / heads.max(1),
        }
    }
    /// x [B, S, C]; `ln`: a layer norm applied to x inside the projections; `ctx`
    /// [B, Sk, Cc] for cross-attention; out-projection + `res`.
    pub fn fwd(&self, c: &Ctx, x: &Tensor, ln: Option<LayerNormIn>, ctx: Option<&Tensor>, causal: bool, res: Option<&Tensor>) -> Result<Tensor> {
        let xq = LinearFuse { layer_norm: ln, ..Default::default() };
        let q = self.q.fwd_fused(c, x, xq)?;
        let (k, v) = match ctx {
            Some(cx) => (self.k.fwd(c, cx, Act::None, None)?, self.v.fwd(c, cx, Act::None, None)?),
            None => (self.k.fwd_fused(c, x, xq)?, self.v.fwd_fused(c, x, xq)?),
        };
        let scale = 1.0 / (self.head_dim as f32).sqrt();
        let o = ops::attention(c.gpu, &q, &k, &v, self.heads, causal, scale)?;
        self.out.fwd(c, &o, Act::None, res)
    }
}
