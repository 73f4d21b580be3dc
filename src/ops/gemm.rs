use crate::error::{shape_err, Result};
use crate::gpu::{DType, Dispatch, GemmVariant, Gpu, Tensor};

use super::{u, Act, Out};

/// v1 tile (gemm_tile.wgsl): 64 × 64.
const TILE: usize = 64;

fn tiles(m: usize, n: usize, batch: usize) -> u64 {
    (m.div_ceil(TILE) * n.div_ceil(TILE) * batch) as u64
}

/// Workgroups that keep a large GPU busy (about twice the compute units of a 100+-CU part):
/// below this, v2 takes 128 × 64 tiles, then splits K.
const FILL_WORKGROUPS: usize = 256;
/// Smallest K range of one split-K part.
const MIN_KCHUNK: usize = 256;
const MAX_SPLITS: usize = 16;
/// Products below this many FLOPs (tens of µs on a GPU) are not split: the reduce pass would
/// cost more than the idle units (the time-embedding and text-token projections).
const MIN_SPLIT_FLOPS: f64 = 5e8;

/// The v2 kernel configuration for one GEMM shape (gemm_v2.wgsl).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct V2Choice {
    /// 2: 128 × 128 tiles; 1: 128 × 64.
    pub wn: usize,
    /// K splits (1: none).
    pub splits: usize,
    /// K range per split (a multiple of 8).
    pub kchunk: usize,
}

impl V2Choice {
    pub fn workgroups(&self, [m, n, _, batch]: [usize; 4]) -> u64 {
        (m.div_ceil(128) * n.div_ceil(64 * self.wn) * batch * self.splits) as u64
    }
}

/// Tile and split-K choice from the shape and the adapter's limits; `None` (the v1 kernel):
/// v1 was asked, the adapter cannot run v2 (fewer than 256 invocations or 16 KiB of workgroup
/// storage), or M <= 64 (unless a split-K factor is forced).
pub(crate) fn choose_gemm(gpu: &Gpu, [m, n, k, batch]: [usize; 4], force_splits: Option<usize>) -> Option<V2Choice> {
    let l = gpu.limits();
    if gpu.gemm() == GemmVariant::V1
        || l.max_compute_invocations_per_workgroup < 256
        || l.max_compute_workgroup_size_x < 256
        || l.max_compute_workgroup_storage_size < 16384
        || (m <= TILE && force_splits.is_none())
    {
        // M <= 64 would leave half or more of a 128-row tile idle: v1's 64 × 64 tile fits
        // better (the time embedding, the VAE's narrow convs, small models).
        return None;
    }
    let tm = m.div_ceil(128);
    let wn = if n > 64 && tm * n.div_ceil(128) * batch >= FILL_WORKGROUPS { 2 } else { 1 };
    let tiles = tm * n.div_ceil(64 * wn) * batch;
    let mut splits = force_splits.unwrap_or_else(|| {
        if tiles >= FILL_WORKGROUPS / 2 || 2.0 * (batch * m * n) as f64 * (k as f64) < MIN_SPLIT_FLOPS {
            1
        } else {
            FILL_WORKGROUPS.div_ceil(tiles).min(k / MIN_KCHUNK).clamp(1, MAX_SPLITS)
        }
    });
    // The f32 partial sums must fit one binding.
    while splits > 1 && (splits * batch * m * n * 4) as u64 > gpu.max_binding() {
        splits -= 1;
    }
    let kchunk = k.div_ceil(splits.max(1)).div_ceil(8) * 8;
    let splits = if splits > 1 { k.div_ceil(kchunk) } else { 1 };
    Some(V2Choice { wn, splits, kchunk: if splits > 1 { kchunk } else { 0 } })
}

/// A GEMM kernel family: the v1 kernel, the two v2 tiles and the split-K reduce.
struct Family {
    file: &'static str,
    v1: &'static str,
    v2: &'static str,
    v2_n64: &'static str,
    reduce: &'static str,
}

const MATMUL: Family = Family { file: "matmul.wgsl", v1: "matmul", v2: "matmul_v2", v2_n64: "matmul_v2_n64", reduce: "matmul_reduce" };
const CONV: Family = Family { file: "conv2d.wgsl", v1: "conv2d", v2: "conv2d_v2", v2_n64: "conv2d_v2_n64", reduce: "conv2d_reduce" };

/// Record `workgroups` linear workgroups of one kernel as dispatches of at most
/// `gpu.max_dispatch_gflop()` each (the kernel's `tile0` parameter, at `params[tile0_at]`,
/// offsets each range). Each dispatch's FLOPs are reported just before it.
pub(crate) fn dispatch_ranges(gpu: &Gpu, file: &'static str, kernel: &'static str, params: &mut [u32], tile0_at: usize, tensors: &[&Tensor], workgroups: u64, flops: f64) -> Result<()> {
    let per = flops / workgroups.max(1) as f64;
    let budget = gpu.max_dispatch_gflop() * 1e9;
    let chunk = if per > 0.0 && budget > 0.0 { ((budget / per).floor() as u64).max(1) } else { workgroups.max(1) };
    let mut t0 = 0u64;
    loop {
        let cnt = chunk.min(workgroups - t0);
        params[tile0_at] = t0 as u32;
        gpu.add_flops(per * cnt as f64);
        gpu.dispatch(Dispatch { file, kernel, params, tensors, workgroups: cnt })?;
        t0 += cnt;
        if t0 >= workgroups {
            return Ok(());
        }
    }
}

/// Record one GEMM of `fam`: `main` are the kernel's tensors before its output `y`, `epi` the
/// reduce kernel's between `part` and `y`. The last 4 params are (tile0, splits, kchunk, 0).
fn record_gemm<const P: usize>(gpu: &Gpu, fam: &Family, mut params: [u32; P], main: &[&Tensor], epi: &[&Tensor], out: &Tensor, dims: [usize; 4], force_splits: Option<usize>) -> Result<()> {
    let [m, n, k, batch] = dims;
    let flops = 2.0 * (batch * m) as f64 * n as f64 * k as f64;
    let mut t: [&Tensor; 8] = [out; 8];
    let nm = main.len();
    t[..nm].copy_from_slice(main);
    let Some(c) = choose_gemm(gpu, dims, force_splits) else {
        params[P - 3] = 1;
        params[P - 2] = 0;
        return dispatch_ranges(gpu, fam.file, fam.v1, &mut params, P - 4, &t[..=nm], tiles(m, n, batch), flops);
    };
    let kernel = if c.wn == 2 { fam.v2 } else { fam.v2_n64 };
    params[P - 3] = c.splits as u32;
    params[P - 2] = c.kchunk as u32;
    if c.splits == 1 {
        return dispatch_ranges(gpu, fam.file, kernel, &mut params, P - 4, &t[..=nm], c.workgroups(dims), flops);
    }
    let scratch = gpu.empty(&[c.splits * batch * m * n], DType::F32)?;
    t[nm] = &scratch;
    dispatch_ranges(gpu, fam.file, kernel, &mut params, P - 4, &t[..=nm], c.workgroups(dims), flops)?;
    let mut r: [&Tensor; 8] = [out; 8];
    r[0] = &scratch;
    r[1..=epi.len()].copy_from_slice(epi);
    params[P - 4] = 0;
    gpu.dispatch(Dispatch {
        file: fam.file,
        kernel: fam.reduce,
        params: &params,
        tensors: &r[..epi.len() + 2],
        workgroups: ((batch * m * n.div_ceil(4)) as u64).div_ceil(256),
    })
}

fn flags(bias: Option<&Tensor>, res: Option<&Tensor>) -> u32 {
    bias.is_some() as u32 | ((res.is_some() as u32) << 1)
}

/// Batched matmul: a [B, M, K] (or [M, K]) · b [B, K, N] (or [K, N]) -> [B, M, N].
pub fn matmul(gpu: &Gpu, a: &Tensor, b: &Tensor) -> Result<Tensor> {
    matmul_split_k(gpu, a, b, None)
}

/// [`matmul`] with the v2 split-K factor forced (`Some`: tests of the split-K path).
pub fn matmul_split_k(gpu: &Gpu, a: &Tensor, b: &Tensor, splits: Option<usize>) -> Result<Tensor> {
    let err = || shape_err("matmul", format!("{:?} · {:?}", a.shape(), b.shape()));
    let (ba, m, k) = match a.shape() {
        [m, k] => (1, *m, *k),
        [bb, m, k] => (*bb, *m, *k),
        _ => return err(),
    };
    let (bb, k2, n) = match b.shape() {
        [k, n] => (1, *k, *n),
        [bb, k, n] => (*bb, *k, *n),
        _ => return err(),
    };
    if k != k2 || (ba != bb && bb != 1) {
        return err();
    }
    let out_shape: Vec<usize> = if a.rank() == 3 { vec![ba, m, n] } else { vec![m, n] };
    let b_sb = if bb == 1 { 0 } else { k * n };
    let fz = Fuse { force_splits: splits, ..Default::default() };
    gemm(gpu, a, b, fz, [m, n, k, ba], [m * k, k, 1], [b_sb, n, 1], &out_shape, n % 2 == 0)
}

/// Linear layer: x [..., K] · wᵀ (w [N, K], PyTorch layout) + bias [N], activation,
/// + residual [..., N].
pub fn linear(gpu: &Gpu, x: &Tensor, w: &Tensor, bias: Option<&Tensor>, act: Act, residual: Option<&Tensor>) -> Result<Tensor> {
    linear_fused(gpu, x, w, LinearFuse { bias, act, residual, ..Default::default() })
}

/// A layer norm applied to a linear layer's input rows while loading them.
#[derive(Clone, Copy)]
pub struct LayerNormIn<'a> {
    /// [rows, 2] f32 from `layer_norm_stats`.
    pub stats: &'a Tensor,
    pub gamma: &'a Tensor,
    pub beta: &'a Tensor,
}

/// What a linear layer does besides the product (all optional).
#[derive(Clone, Copy, Default)]
pub struct LinearFuse<'a> {
    /// Prologue: layer norm of the input rows (never written out).
    pub layer_norm: Option<LayerNormIn<'a>>,
    pub bias: Option<&'a Tensor>,
    pub act: Act,
    pub residual: Option<&'a Tensor>,
    /// Epilogue: GEGLU over interleaved (h, gate) column pairs: output [..., N/2].
    pub geglu: bool,
    /// The v2 kernel's split-K factor instead of the shape's choice (tests of that path).
    pub split_k: Option<usize>,
}

/// x [..., K] · wᵀ with a fused layer-norm prologue and bias / activation / residual /
/// GEGLU epilogue: one dispatch.
pub fn linear_fused(gpu: &Gpu, x: &Tensor, w: &Tensor, fz: LinearFuse) -> Result<Tensor> {
    let k = x.dim(-1);
    if w.rank() != 2 || w.shape()[1] != k || k == 0 {
        return shape_err("linear", format!("x {:?} · weight {:?}ᵀ: weight must be [N, {k}]", x.shape(), w.shape()));
    }
    let n = w.shape()[0];
    if let Some(bi) = fz.bias {
        if bi.shape() != [n] {
            return shape_err("linear", format!("bias {:?} must be [{n}]", bi.shape()));
        }
    }
    let m = x.numel() / k;
    if let Some(ln) = fz.layer_norm {
        if ln.stats.shape() != [m, 2] || ln.gamma.shape() != [k] || ln.beta.shape() != [k] {
            return shape_err("linear", format!("layer norm stats {:?} / weight {:?} / bias {:?} do not fit x {:?}", ln.stats.shape(), ln.gamma.shape(), ln.beta.shape(), x.shape()));
        }
    }
    if fz.geglu && (n % 2 != 0 || fz.act != Act::None || fz.residual.is_some()) {
        return shape_err("linear", format!("GEGLU needs an even N (weight {:?}) and no other activation or residual", w.shape()));
    }
    // On the stack (no allocation per call).
    let mut shape_buf = [0usize; crate::gpu::MAX_RANK];
    let out_shape = &mut shape_buf[..x.rank()];
    out_shape.copy_from_slice(x.shape());
    *out_shape.last_mut().unwrap() = if fz.geglu { n / 2 } else { n };
    let out_shape: &[usize] = out_shape;
    if let Some(r) = fz.residual {
        if r.shape() != out_shape {
            return shape_err("linear", format!("residual {:?} must be {:?}", r.shape(), out_shape));
        }
    }
    // With GEGLU each thread writes both halves of its output words: always pair-safe.
    let pairs_ok = n % 2 == 0 && (!fz.geglu || (n / 2) % 2 == 0);
    let g = Fuse { bias: fz.bias, residual: fz.residual, act: fz.act, layer_norm: fz.layer_norm, geglu: fz.geglu, force_splits: fz.split_k, ..Default::default() };
    gemm(gpu, x, w, g, [m, n, k, 1], [0, k, 1], [0, 1, k], out_shape, pairs_ok)
}

/// Everything the matmul kernel can fuse (see shaders/matmul.wgsl).
#[derive(Clone, Copy, Default)]
struct Fuse<'a> {
    bias: Option<&'a Tensor>,
    /// The bias is indexed by the output row (m) instead of the column (n).
    bias_per_row: bool,
    residual: Option<&'a Tensor>,
    act: Act,
    layer_norm: Option<LayerNormIn<'a>>,
    /// Per-(batch, k) affine [batch, K, 2] applied to A on load.
    a_affine: Option<&'a Tensor>,
    geglu: bool,
    /// A is stored k-major: load its tiles walking m.
    a_m_fastest: bool,
    /// Output dtype when it is not A's.
    out_dtype: Option<crate::gpu::DType>,
    /// v2 split-K factor instead of the shape's choice (tests).
    force_splits: Option<usize>,
}

#[allow(clippy::too_many_arguments)]
fn gemm(
    gpu: &Gpu,
    a: &Tensor,
    b: &Tensor,
    fz: Fuse,
    [m, n, k, batch]: [usize; 4],
    [a_sb, a_sm, a_sk]: [usize; 3],
    [b_sb, b_sk, b_sn]: [usize; 3],
    out_shape: &[usize],
    pairs_ok: bool,
) -> Result<Tensor> {
    let out = Out::new(gpu, out_shape, fz.out_dtype.unwrap_or(a.dtype()), pairs_ok)?;
    let stats_dummy;
    let (stats, gamma, beta) = match (fz.layer_norm, fz.a_affine) {
        (Some(ln), _) => (ln.stats, ln.gamma, ln.beta),
        (None, Some(aff)) => (aff, b, b),
        (None, None) => {
            stats_dummy = gpu.empty(&[1], crate::gpu::DType::F32)?;
            (&stats_dummy, b, b)
        }
    };
    let has_bias = fz.bias.is_some();
    let flags = (has_bias && !fz.bias_per_row) as u32
        | (fz.residual.is_some() as u32) << 1
        | (fz.layer_norm.is_some() as u32) << 2
        | (fz.geglu as u32) << 3
        | (fz.a_affine.is_some() as u32) << 4
        | (has_bias && fz.bias_per_row) as u32 * 32
        | (fz.a_m_fastest as u32) << 6;
    let params = [u(m), u(n), u(k), u(batch), u(a_sb), u(a_sm), u(a_sk), u(b_sb), u(b_sk), u(b_sn), flags, fz.act as u32, 0, 1, 0, 0];
    let (bias, res) = (fz.bias.unwrap_or(b), fz.residual.unwrap_or(a));
    record_gemm(gpu, &MATMUL, params, &[a, b, bias, res, stats, gamma, beta], &[bias, res], &out.t, [m, n, k, batch], fz.force_splits)?;
    out.finish(gpu)
}

fn weight_2d(op: &'static str, w: &Tensor, cin: usize) -> Result<usize> {
    match w.shape() {
        [co, ci] | [co, ci, 1, 1] if *ci == cin => Ok(*co),
        s => shape_err(op, format!("weight {s:?} must be [Cout, {cin}] or [Cout, {cin}, 1, 1]")),
    }
}

/// A 1×1 convolution of x [B, C, H, W] written as tokens [B, H·W, Cout] (the transpose
/// is in the load pattern), with an optional group-norm affine [B, C, 2] applied on load.
pub fn conv1x1_to_tokens(gpu: &Gpu, x: &Tensor, w: &Tensor, bias: Option<&Tensor>, affine: Option<&Tensor>) -> Result<Tensor> {
    if x.rank() != 4 {
        return shape_err("conv1x1_to_tokens", format!("x {:?} must be [B, C, H, W]", x.shape()));
    }
    let (b, c, hw) = (x.shape()[0], x.shape()[1], x.shape()[2] * x.shape()[3]);
    let co = weight_2d("conv1x1_to_tokens", w, c)?;
    if let Some(a) = affine {
        if a.shape() != [b, c, 2] {
            return shape_err("conv1x1_to_tokens", format!("affine {:?} must be [{b}, {c}, 2]", a.shape()));
        }
    }
    if bias.is_some_and(|t| t.shape() != [co]) {
        return shape_err("conv1x1_to_tokens", format!("bias must be [{co}]"));
    }
    let fz = Fuse { bias, a_affine: affine, a_m_fastest: true, ..Default::default() };
    gemm(gpu, x, w, fz, [hw, co, c, b], [c * hw, 1, hw], [0, 1, c], &[b, hw, co], co % 2 == 0)
}

/// Tokens t [B, H·W, C] through a 1×1 convolution back to [B, Cout, H, W] (+ bias,
/// + residual [B, Cout, H, W]); the transpose is in the load pattern.
pub fn tokens_to_conv1x1(gpu: &Gpu, t: &Tensor, w: &Tensor, bias: Option<&Tensor>, residual: Option<&Tensor>, h: usize, wd: usize) -> Result<Tensor> {
    if t.rank() != 3 || t.shape()[1] != h * wd {
        return shape_err("tokens_to_conv1x1", format!("tokens {:?} must be [B, {}, C]", t.shape(), h * wd));
    }
    let (b, hw, c) = (t.shape()[0], t.shape()[1], t.shape()[2]);
    let co = weight_2d("tokens_to_conv1x1", w, c)?;
    if bias.is_some_and(|x| x.shape() != [co]) {
        return shape_err("tokens_to_conv1x1", format!("bias must be [{co}]"));
    }
    if residual.is_some_and(|r| r.shape() != [b, co, h, wd]) {
        return shape_err("tokens_to_conv1x1", format!("residual must be [{b}, {co}, {h}, {wd}]"));
    }
    // Bias per output row (= channel).
    let fz = Fuse { bias, bias_per_row: true, residual, out_dtype: Some(t.dtype()), ..Default::default() };
    gemm(gpu, w, t, fz, [co, hw, c, b], [0, c, 1], [hw * c, 1, c], &[b, co, h, wd], hw % 2 == 0)
}

/// Convolution geometry: stride and padding (top, left, bottom, right).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Conv2d {
    pub stride: usize,
    pub pad: [usize; 4],
}

impl Conv2d {
    /// Symmetric padding `p` on all sides.
    pub fn new(stride: usize, p: usize) -> Self {
        Conv2d { stride, pad: [p; 4] }
    }
}

/// What a convolution does besides convolving (all optional).
#[derive(Clone, Copy, Default)]
pub struct ConvFuse<'a> {
    /// Input prologue: x·scale + shift per (sample, channel), [N, Cin, 2] f32 from
    /// `group_norm_affine` (a group norm that never writes the normalised tensor).
    pub input_affine: Option<&'a Tensor>,
    /// Input prologue: SiLU after the affine map.
    pub input_silu: bool,
    /// Input prologue: nearest 2× upsampling of x on the fly.
    pub upsample: bool,
    pub bias: Option<&'a Tensor>,
    /// Epilogue: + temb[n, co] ([N, Cout], the ResNet time embedding).
    pub temb: Option<&'a Tensor>,
    pub act: Act,
    /// Epilogue: + residual [N, Cout, OH, OW] (after the activation).
    pub residual: Option<&'a Tensor>,
    /// The v2 kernel's split-K factor instead of the shape's choice (tests of that path).
    pub split_k: Option<usize>,
}

/// x [N, Cin, H, W] ⊛ w [Cout, Cin, KH, KW] + bias [Cout], activation, + residual [N, Cout, OH, OW].
pub fn conv2d(gpu: &Gpu, x: &Tensor, w: &Tensor, bias: Option<&Tensor>, g: Conv2d, act: Act, residual: Option<&Tensor>) -> Result<Tensor> {
    conv2d_fused(gpu, x, w, g, ConvFuse { bias, act, residual, ..Default::default() })
}

/// Convolution with a fused prologue (group-norm affine, SiLU, 2× upsample of the input)
/// and epilogue (bias, time embedding, activation, residual): one dispatch.
pub fn conv2d_fused(gpu: &Gpu, x: &Tensor, w: &Tensor, g: Conv2d, fz: ConvFuse) -> Result<Tensor> {
    let (xs, ws) = (x.shape(), w.shape());
    if xs.len() != 4 || ws.len() != 4 || xs[1] != ws[1] || g.stride == 0 {
        return shape_err("conv2d", format!("x {xs:?} ⊛ weight {ws:?} (stride {}): need [N, Cin, H, W] and [Cout, Cin, KH, KW]", g.stride));
    }
    let up = if fz.upsample { 2 } else { 1 };
    let (nb, cin, h, wd) = (xs[0], xs[1], xs[2] * up, xs[3] * up);
    let (cout, kh, kw) = (ws[0], ws[2], ws[3]);
    let [pt, pl, pb, pr] = g.pad;
    if h + pt + pb < kh || wd + pl + pr < kw {
        return shape_err("conv2d", format!("kernel {kh}×{kw} larger than padded input {xs:?}"));
    }
    let oh = (h + pt + pb - kh) / g.stride + 1;
    let ow = (wd + pl + pr - kw) / g.stride + 1;
    if let Some(bi) = fz.bias {
        if bi.shape() != [cout] {
            return shape_err("conv2d", format!("bias {:?} must be [{cout}]", bi.shape()));
        }
    }
    if let Some(t) = fz.temb {
        if t.shape() != [nb, cout] {
            return shape_err("conv2d", format!("time embedding {:?} must be [{nb}, {cout}]", t.shape()));
        }
    }
    if let Some(a) = fz.input_affine {
        if a.shape() != [nb, cin, 2] || a.dtype() != crate::gpu::DType::F32 {
            return shape_err("conv2d", format!("input affine {a:?} must be f32 [{nb}, {cin}, 2]"));
        }
    }
    let out_shape = [nb, cout, oh, ow];
    if let Some(r) = fz.residual {
        if r.shape() != out_shape {
            return shape_err("conv2d", format!("residual {:?} must be {:?}", r.shape(), out_shape));
        }
    }
    let flags = flags(fz.bias, fz.residual)
        | (fz.temb.is_some() as u32) << 2
        | (fz.input_affine.is_some() as u32) << 3
        | (fz.input_silu as u32) << 4
        | (fz.upsample as u32) << 5;
    let out = Out::new(gpu, &out_shape, x.dtype(), (oh * ow) % 2 == 0)?;
    // Unused bindings point at a tensor of the right kind (never read).
    let aff_dummy = fz.input_affine.map_or_else(|| gpu.empty(&[1], crate::gpu::DType::F32), |a| Ok(a.clone()))?;
    let params = [
        u(nb), u(cin), u(h), u(wd), u(cout), u(oh), u(ow), u(kh), u(kw), u(g.stride), u(pt), u(pl),
        flags, fz.act as u32, 0, 1, 0, 0,
    ];
    let (bias, res, temb) = (fz.bias.unwrap_or(w), fz.residual.unwrap_or(x), fz.temb.unwrap_or(w));
    record_gemm(gpu, &CONV, params, &[x, w, bias, res, temb, &aff_dummy], &[bias, res, temb], &out.t, [cout, oh * ow, cin * kh * kw, nb], fz.split_k)?;
    out.finish(gpu)
}
