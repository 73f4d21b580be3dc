//! Layers as compositions of ops, named like their PyTorch modules. A layer holds
//! handles ([`WeightId`]) of its weights, resolved once when the model is built; the
//! builder ([`Vb`]) records every name and shape so the loader, the synthetic-weight
//! writer and the memory planner know them. Forward passes index the weights' slot table
//! with the handles ([`Weights::at`]): no name lookup per step.
use std::cell::RefCell;
use std::rc::Rc;

use crate::error::Result;
use crate::gpu::{Gpu, Tensor};
use crate::ops::{self, Act, Conv2d, ConvFuse, LayerNormIn, LinearFuse};
use crate::weights::{Spec, WeightId, Weights};

pub use crate::weights::Fusion;

/// Weight-name builder (like candle's VarBuilder, without the tensors).
#[derive(Clone)]
pub struct Vb {
    prefix: String,
    specs: Rc<RefCell<Vec<Spec>>>,
    fusions: Rc<RefCell<Vec<Fusion>>>,
}

impl Vb {
    pub fn root(component: &str) -> Vb {
        Vb { prefix: format!("{component}/"), specs: Rc::new(RefCell::new(Vec::new())), fusions: Rc::new(RefCell::new(Vec::new())) }
    }
    pub fn pp(&self, s: impl std::fmt::Display) -> Vb {
        Vb { prefix: format!("{}{s}.", self.prefix), specs: self.specs.clone(), fusions: self.fusions.clone() }
    }
    pub fn param(&self, name: &str, shape: &[usize]) -> WeightId {
        let full = format!("{}{name}", self.prefix);
        let id = WeightId::of(&full);
        self.specs.borrow_mut().push(Spec { name: full, shape: shape.to_vec() });
        id
    }
    pub fn specs(&self) -> Vec<Spec> {
        self.specs.borrow().clone()
    }
    /// Register a fused weight `name` (relative) made of the weights `parts`.
    pub fn fuse(&self, name: &str, parts: &[WeightId]) -> WeightId {
        let full = format!("{}{name}", self.prefix);
        let id = WeightId::of(&full);
        self.fusions.borrow_mut().push(Fusion { name: full, parts: parts.iter().map(|p| p.name()).collect() });
        id
    }
    pub fn fusions(&self) -> Vec<Fusion> {
        self.fusions.borrow().clone()
    }
}

/// What a forward pass needs.
pub struct Ctx<'a> {
    pub gpu: &'a Gpu,
    pub w: &'a Weights,
}

pub struct Linear {
    w: WeightId,
    b: Option<WeightId>,
}

/// Concatenate the parts of each fusion (first dimension) into one tensor, in place of the parts.
pub fn apply_fusions(gpu: &Gpu, w: &mut Weights, fusions: &[Fusion]) -> Result<()> {
    for f in fusions {
        if f.parts.iter().any(|p| w.find(p).is_none()) {
            continue;
        }
        let parts: Vec<Tensor> = f.parts.iter().map(|p| w.get(p).cloned()).collect::<Result<_>>()?;
        let rows: usize = parts.iter().map(|t| t.shape()[0]).sum();
        let mut shape = parts[0].shape().to_vec();
        shape[0] = rows;
        let flat = |t: &Tensor| t.reshape(&[1, t.numel(), 1]);
        let mut acc = flat(&parts[0])?;
        for p in &parts[1..] {
            acc = ops::concat_channels(gpu, &acc, &flat(p)?)?;
        }
        w.insert(f.name.clone(), acc.reshape(&shape)?);
        for p in &f.parts {
            w.remove(p);
        }
        drop(parts);
        // Give the parts' memory back at once: the load peak grows by one fusion only.
        gpu.trim_pool();
    }
    Ok(())
}

impl Linear {
    pub fn new(vb: &Vb, inp: usize, out: usize, bias: bool) -> Linear {
        Linear { w: vb.param("weight", &[out, inp]), b: bias.then(|| vb.param("bias", &[out])) }
    }
    pub fn fwd(&self, c: &Ctx, x: &Tensor, act: Act, res: Option<&Tensor>) -> Result<Tensor> {
        let b = match self.b {
            Some(b) => Some(c.w.at(b)?),
            None => None,
        };
        ops::linear(c.gpu, x, c.w.at(self.w)?, b, act, res)
    }
    /// With a fused prologue / epilogue (the layer's own bias is added).
    pub fn fwd_fused(&self, c: &Ctx, x: &Tensor, fz: LinearFuse) -> Result<Tensor> {
        let b = match self.b {
            Some(b) => Some(c.w.at(b)?),
            None => None,
        };
        ops::linear_fused(c.gpu, x, c.w.at(self.w)?, LinearFuse { bias: b, ..fz })
    }
}

pub struct Conv {
    w: WeightId,
    b: Option<WeightId>,
    geo: Conv2d,
}

impl Conv {
    pub fn new(vb: &Vb, cin: usize, cout: usize, k: usize, stride: usize, pad: usize) -> Conv {
        Conv::with_pad(vb, cin, cout, k, stride, [pad; 4])
    }
    pub fn with_pad(vb: &Vb, cin: usize, cout: usize, k: usize, stride: usize, pad: [usize; 4]) -> Conv {
        Conv { w: vb.param("weight", &[cout, cin, k, k]), b: Some(vb.param("bias", &[cout])), geo: Conv2d { stride, pad } }
    }
    /// A convolution without a bias (`bias=False`).
    pub fn no_bias(vb: &Vb, cin: usize, cout: usize, k: usize, stride: usize, pad: usize) -> Conv {
        Conv { w: vb.param("weight", &[cout, cin, k, k]), b: None, geo: Conv2d { stride, pad: [pad; 4] } }
    }
    fn bias<'a>(&self, c: &Ctx<'a>) -> Result<Option<&'a Tensor>> {
        self.b.map(|b| c.w.at(b)).transpose()
    }
    pub fn fwd(&self, c: &Ctx, x: &Tensor, act: Act, res: Option<&Tensor>) -> Result<Tensor> {
        ops::conv2d(c.gpu, x, c.w.at(self.w)?, self.bias(c)?, self.geo, act, res)
    }
    /// A 1×1 conv of x [B, C, H, W] with a group-norm affine on load, written as tokens [B, H·W, Cout].
    pub fn to_tokens(&self, c: &Ctx, x: &Tensor, affine: &Tensor) -> Result<Tensor> {
        ops::conv1x1_to_tokens(c.gpu, x, c.w.at(self.w)?, self.bias(c)?, Some(affine))
    }
    /// A 1×1 conv of tokens [B, H·W, C] back to [B, Cout, H, W], + residual.
    pub fn from_tokens(&self, c: &Ctx, t: &Tensor, h: usize, w: usize, residual: &Tensor) -> Result<Tensor> {
        ops::tokens_to_conv1x1(c.gpu, t, c.w.at(self.w)?, self.bias(c)?, Some(residual), h, w)
    }
    /// With a fused prologue / epilogue (the conv's own bias is added).
    pub fn fwd_fused(&self, c: &Ctx, x: &Tensor, fz: ConvFuse) -> Result<Tensor> {
        ops::conv2d_fused(c.gpu, x, c.w.at(self.w)?, self.geo, ConvFuse { bias: self.bias(c)?, ..fz })
    }
}

pub struct GroupNorm {
    w: WeightId,
    b: WeightId,
    groups: usize,
    eps: f32,
}

impl GroupNorm {
    pub fn new(vb: &Vb, groups: usize, c: usize, eps: f32) -> GroupNorm {
        GroupNorm { w: vb.param("weight", &[c]), b: vb.param("bias", &[c]), groups, eps }
    }
    pub fn fwd(&self, c: &Ctx, x: &Tensor, silu: bool) -> Result<Tensor> {
        ops::group_norm(c.gpu, x, self.groups, c.w.at(self.w)?, c.w.at(self.b)?, self.eps, silu)
    }
    /// The norm as a per-(sample, channel) affine map for a convolution's prologue.
    pub fn affine(&self, c: &Ctx, x: &Tensor) -> Result<Tensor> {
        ops::group_norm_affine(c.gpu, x, self.groups, c.w.at(self.w)?, c.w.at(self.b)?, self.eps)
    }
}

pub struct LayerNorm {
    w: WeightId,
    b: WeightId,
    eps: f32,
}

impl LayerNorm {
    pub fn new(vb: &Vb, d: usize, eps: f32) -> LayerNorm {
        LayerNorm { w: vb.param("weight", &[d]), b: vb.param("bias", &[d]), eps }
    }
    pub fn fwd(&self, c: &Ctx, x: &Tensor) -> Result<Tensor> {
        ops::layer_norm(c.gpu, x, c.w.at(self.w)?, c.w.at(self.b)?, self.eps)
    }
    /// Row statistics of x: the norm then runs in the next linear layer's prologue.
    pub fn stats(&self, c: &Ctx, x: &Tensor) -> Result<Tensor> {
        ops::layer_norm_stats(c.gpu, x, self.eps)
    }
    pub fn input<'a>(&self, c: &Ctx<'a>, stats: &'a Tensor) -> Result<LayerNormIn<'a>> {
        Ok(LayerNormIn { stats, gamma: c.w.at(self.w)?, beta: c.w.at(self.b)? })
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
    /// Fused [3C, ·] q/k/v (self-attention) and [2C, ·] k/v (cross-attention) weights and biases.
    /// None where the layer has no such fusion (cross- or self-attention).
    qkv: Option<(WeightId, Option<WeightId>)>,
    kv: Option<(WeightId, Option<WeightId>)>,
}

impl Attention {
    /// `names`: q, k, v, out module names; `ctx_dim`: Some(width of the context) for
    /// cross-attention; `qkv_bias`: whether q/k/v have biases.
    pub fn new(vb: &Vb, names: [&str; 4], dim: usize, ctx_dim: Option<usize>, heads: usize, qkv_bias: bool) -> Attention {
        let cross = ctx_dim.is_some();
        let ctx_dim = ctx_dim.unwrap_or(dim);
        let q = Linear::new(&vb.pp(names[0]), dim, dim, qkv_bias);
        let k = Linear::new(&vb.pp(names[1]), ctx_dim, dim, qkv_bias);
        let v = Linear::new(&vb.pp(names[2]), ctx_dim, dim, qkv_bias);
        let b = |l: &[&Linear]| l.iter().map(|x| x.b).collect::<Option<Vec<WeightId>>>();
        let (qkv, kv) = if !cross {
            let w = vb.fuse("to_qkv.weight", &[q.w, k.w, v.w]);
            let bias = b(&[&q, &k, &v]).map(|p| vb.fuse("to_qkv.bias", &p));
            (Some((w, bias)), None)
        } else {
            let w = vb.fuse("to_kv.weight", &[k.w, v.w]);
            let bias = b(&[&k, &v]).map(|p| vb.fuse("to_kv.bias", &p));
            (None, Some((w, bias)))
        };
        Attention { q, k, v, out: Linear::new(&vb.pp(names[3]), dim, dim, true), heads, head_dim: dim / heads.max(1), qkv, kv }
    }
    /// x [B, S, C]; `ln`: a layer norm applied to x inside the projections; `ctx`
    /// [B, Sk, Cc] for cross-attention; out-projection + `res`.
    pub fn fwd(&self, c: &Ctx, x: &Tensor, ln: Option<LayerNormIn>, ctx: Option<&Tensor>, causal: bool, res: Option<&Tensor>) -> Result<Tensor> {
        let xq = LinearFuse { layer_norm: ln, ..Default::default() };
        let scale = 1.0 / (self.head_dim as f32).sqrt();
        let dim = self.heads * self.head_dim;
        let bias = |b: Option<WeightId>| -> Result<Option<&Tensor>> { b.map(|n| c.w.at(n)).transpose() };
        // Fused projections: one matmul for q/k/v (or k/v), attention reads the parts in place.
        // `slot`: a miss builds no error (this runs at every step).
        if let (None, Some((w, b))) = (ctx, self.qkv) {
            if let Some(w) = c.w.slot(w) {
                let qkv = ops::linear_fused(c.gpu, x, w, LinearFuse { bias: bias(b)?, ..xq })?;
                let view = |offset| ops::View { t: &qkv, offset };
                let o = ops::attention_views(c.gpu, view(0), view(dim), view(2 * dim), dim, self.heads, causal, scale)?;
                return self.out.fwd(c, &o, Act::None, res);
            }
        }
        if let (Some(cx), Some((w, b))) = (ctx, self.kv) {
            if let Some(w) = c.w.slot(w) {
                let q = self.q.fwd_fused(c, x, xq)?;
                let kv = ops::linear_fused(c.gpu, cx, w, LinearFuse { bias: bias(b)?, ..Default::default() })?;
                let o = ops::attention_views(c.gpu, ops::View { t: &q, offset: 0 }, ops::View { t: &kv, offset: 0 }, ops::View { t: &kv, offset: dim }, dim, self.heads, causal, scale)?;
                return self.out.fwd(c, &o, Act::None, res);
            }
        }
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
