use crate::error::{shape_err, Result};
use crate::gpu::{AttentionVariant, Gpu, Tensor};

use super::gemm::dispatch_ranges;
use super::{f, u, Out};


/// Largest head dim the kernels support (v1 `attention_wide`, v2 `attention_v2_d512`).
pub const MAX_HEAD_DIM: usize = 512;

/// v2 kernels (shaders/attention_v2.wgsl) by head-dim bucket: (largest D, kernel, query rows
/// per workgroup = the shader's BQ). Any D up to the bucket's is exact (zero padding).
const V2_KERNELS: [(usize, &str, usize); 7] = [
    (8, "attention_v2_d8", 128),
    (16, "attention_v2_d16", 128),
    (40, "attention_v2_d40", 128),
    (64, "attention_v2_d64", 64),
    (80, "attention_v2_d80", 64),
    (160, "attention_v2_d160", 64),
    (512, "attention_v2_d512", 32),
];

/// (file, kernel, query rows per workgroup) of the variant's kernel for head dim `d` (1..=512).
pub fn attention_kernel(variant: AttentionVariant, d: usize) -> (&'static str, &'static str, usize) {
    match variant {
        AttentionVariant::V1 if d <= ROWS_MAX_HEAD_DIM => ("attention.wgsl", "attention", 64),
        AttentionVariant::V1 => ("attention.wgsl", "attention_wide", 32),
        AttentionVariant::V2 => {
            let &(_, kernel, bq) = V2_KERNELS.iter().find(|(max_d, _, _)| d <= *max_d).unwrap_or(&V2_KERNELS[6]);
            ("attention_v2.wgsl", kernel, bq)
        }
    }
}

/// v1: head dims up to this use the `attention` kernel (Q row in registers, 64 query rows per
/// workgroup); larger ones `attention_wide` (score tile summed over head-dim chunks, 32 rows).
const ROWS_MAX_HEAD_DIM: usize = 80;

/// softmax(scale·Q·Kᵀ [+ causal mask]) · V per head, flash-style.
/// q [B, Sq, H·D], k and v [B, Sk, H·D] -> [B, Sq, H·D].
pub fn attention(gpu: &Gpu, q: &Tensor, k: &Tensor, v: &Tensor, heads: usize, causal: bool, scale: f32) -> Result<Tensor> {
    let (qs, ks, vs) = (q.shape(), k.shape(), v.shape());
    if qs.len() != 3 || ks.len() != 3 || ks != vs || qs[0] != ks[0] || qs[2] != ks[2] {
        return shape_err("attention", format!("q {qs:?}, k {ks:?}, v {vs:?}: need [B, Sq, C], [B, Sk, C], [B, Sk, C]"));
    }
    let view = |t| View { t, offset: 0 };
    attention_views(gpu, view(q), view(k), view(v), qs[2], heads, causal, scale)
}

/// A [B, S, stride] tensor read as [B, S, C] starting at column `offset` (e.g. the q, k and
/// v parts of one fused projection).
#[derive(Clone, Copy)]
pub struct View<'a> {
    pub t: &'a Tensor,
    pub offset: usize,
}

/// Attention over views of fused projections: q from `q` ([B, Sq, ·]), k and v from
/// `k` / `v` ([B, Sk, ·]), `c` channels each (`heads` × head dim) -> [B, Sq, C].
pub fn attention_views(gpu: &Gpu, q: View, k: View, v: View, c: usize, heads: usize, causal: bool, scale: f32) -> Result<Tensor> {
    let (qs, ks, vs) = (q.t.shape(), k.t.shape(), v.t.shape());
    if qs.len() != 3 || ks.len() != 3 || ks != vs || qs[0] != ks[0] || q.offset + c > qs[2] || k.offset + c > ks[2] || v.offset + c > vs[2] {
        return shape_err("attention", format!("views q {qs:?}+{}, k {ks:?}+{}, v {vs:?}+{} of {c} channels", q.offset, k.offset, v.offset));
    }
    let (b, sq, sk) = (qs[0], qs[1], ks[1]);
    if heads == 0 || c % heads != 0 {
        return shape_err("attention", format!("{heads} heads do not divide {c} channels"));
    }
    let d = c / heads;
    if d > MAX_HEAD_DIM {
        return shape_err("attention", format!("head dim {d} > {MAX_HEAD_DIM}"));
    }
    let (file, kernel, block_q) = attention_kernel(gpu.attention(), d);
    let (qw, kw, vw) = (qs[2], ks[2], vs[2]);
    let strides = [sq * qw, qw, sk * kw, kw, sk * vw, vw, q.offset, k.offset, v.offset];
    let pairs = d % 2 == 0 && strides.iter().all(|s| s % 2 == 0);
    let out = Out::new(gpu, &[b, sq, c], q.t.dtype(), d % 2 == 0)?;
    let flops = 4.0 * (b * heads * sq) as f64 * (sk * d) as f64;
    let [s0, s1, s2, s3, s4, s5, s6, s7, s8] = strides.map(u);
    let mut params = [u(b), u(heads), u(sq), u(sk), u(d), s0, s1, s2, s3, s4, s5, s6, s7, s8, causal as u32, f(scale), pairs as u32, 0];
    // Query blocks in ranges of at most `max_dispatch_gflop` each (P.tile0 offsets them).
    let workgroups = (b * heads * sq.div_ceil(block_q)) as u64;
    dispatch_ranges(gpu, file, kernel, &mut params, 17, &[q.t, k.t, v.t, &out.t], workgroups, flops)?;
    out.finish(gpu)
}
