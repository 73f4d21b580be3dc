//! Kernel checks against the CPU reference on seeded random inputs with awkward
//! shapes. Shared by the test suites (native and browser) and the page's self-test.
use crate::error::Result;
use crate::gpu::{DType, Gpu, Tensor};
use crate::ops::{self, Act, Conv2d};
use crate::reference as r;

/// Result of comparing one kernel output with its reference.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Check {
    pub kernel: String,
    pub case: String,
    pub dtype: &'static str,
    pub max_abs_err: f64,
    pub max_abs_ref: f64,
    /// max_abs_err / max(|ref|)
    pub rel_err: f64,
    pub tol: f64,
    pub worst_index: usize,
    pub worst_got: f32,
    pub worst_want: f32,
    pub pass: bool,
}

impl std::fmt::Display for Check {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} {:<18} {:<40} {} rel_err={:.3e} (tol {:.0e}) max_abs_err={:.3e} worst[{}]: got {} want {}",
            if self.pass { "PASS" } else { "FAIL" },
            self.kernel,
            self.case,
            self.dtype,
            self.rel_err,
            self.tol,
            self.max_abs_err,
            self.worst_index,
            self.worst_got,
            self.worst_want
        )
    }
}

/// The test inputs' generator (production code owns it: [`crate::rng::Rng`]).
pub use crate::rng::Rng;

/// Round values to what `dtype` storage keeps.
pub fn quantize(v: &mut [f32], dtype: DType) {
    if dtype == DType::F16 {
        for x in v.iter_mut() {
            *x = half::f16::from_f32(*x).to_f32();
        }
    }
}

/// Names of the kernels checked by [`run`].
pub const KERNELS: &[&str] = &[
    "unary", "binary", "geglu", "concat_channels", "slice_channels", "upsample2x", "transpose", "token_position", "timestep",
    "group_norm", "layer_norm", "softmax", "matmul", "linear", "conv2d", "attention", "lincomb", "vae_sample", "to_image", "tiles", "dispatch_split", "lora_merge",
    "prompt_weighting", "gemm_split_k",
];

struct Ctx<'a> {
    gpu: &'a Gpu,
    dtype: DType,
    rng: Rng,
    out: Vec<Check>,
}

impl Ctx<'_> {
    fn input(&mut self, shape: &[usize], lo: f32, hi: f32) -> Result<(Tensor, Vec<f32>)> {
        let n: usize = shape.iter().product();
        let mut v = self.rng.vec(n, lo, hi);
        quantize(&mut v, self.dtype);
        Ok((self.gpu.upload(shape, self.dtype, &v)?, v))
    }

    async fn compare(&mut self, kernel: &str, case: &str, t: &Tensor, want: &[f32], tol_f32: f64) -> Result<()> {
        let got = self.gpu.read(t).await?;
        let tol = if self.dtype == DType::F16 { tol_f32.max(2e-3) } else { tol_f32 };
        let mut c = compare(kernel, case, self.dtype, &got, want, tol);
        if got.len() != want.len() {
            c.pass = false;
            c.case = format!("{case} (length {} != {})", got.len(), want.len());
        }
        self.out.push(c);
        Ok(())
    }
}

/// Compare `got` with `want`: error relative to max |want|, worst element located.
pub fn compare(kernel: &str, case: &str, dtype: DType, got: &[f32], want: &[f32], tol: f64) -> Check {
    let max_ref = want.iter().fold(0f64, |m, &v| m.max((v as f64).abs()));
    let (mut worst, mut wi) = (0f64, 0usize);
    for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
        let e = (g as f64 - w as f64).abs();
        if e > worst || e.is_nan() {
            worst = if e.is_nan() { f64::INFINITY } else { e };
            wi = i;
        }
    }
    let rel = worst / max_ref.max(1e-12);
    Check {
        kernel: kernel.into(),
        case: case.into(),
        dtype: dtype.name(),
        max_abs_err: worst,
        max_abs_ref: max_ref,
        rel_err: rel,
        tol,
        worst_index: wi,
        worst_got: got.get(wi).copied().unwrap_or(f32::NAN),
        worst_want: want.get(wi).copied().unwrap_or(f32::NAN),
        pass: rel <= tol,
    }
}

/// Run the checks of one kernel with tensors stored as `dtype`.
pub async fn run(gpu: &Gpu, kernel: &str, dtype: DType) -> Result<Vec<Check>> {
    let mut c = Ctx { gpu, dtype, rng: Rng::new(0x5D_0000 + kernel.len() as u64), out: Vec::new() };
    match kernel {
        "unary" => {
            let (x, xv) = c.input(&[1001, 999], -6.0, 6.0)?;
            for (name, a) in [("silu", Act::Silu), ("gelu", Act::Gelu), ("quick_gelu", Act::QuickGelu), ("relu", Act::Relu), ("copy", Act::None)] {
                let y = ops::unary(gpu, &x, a)?;
                c.compare("unary", &format!("{name} [1001, 999]"), &y, &r::unary(&xv, a), 2e-6).await?;
            }
            let y = ops::affine(gpu, &x, 0.18215, -0.5)?;
            c.compare("unary", "affine [1001, 999]", &y, &r::affine(&xv, 0.18215, -0.5), 2e-6).await?;
            let (xl, xlv) = c.input(&[37, 53], -40.0, 40.0)?;
            let y = ops::soft_clamp(gpu, &xl, 3.0)?;
            c.compare("unary", "soft clamp 3·tanh(x/3) [37, 53] in [-40, 40]", &y, &r::soft_clamp(&xlv, 3.0), 2e-6).await?;
            let y = ops::clamp(gpu, &x, -30.0, 2.5)?;
            c.compare("unary", "clamp [-30, 2.5] [1001, 999]", &y, &r::clamp(&xv, -30.0, 2.5), 0.0).await?;
            let other = if dtype == DType::F16 { DType::F32 } else { DType::F16 };
            let y = ops::cast(gpu, &x, other)?;
            let mut want = xv.clone();
            quantize(&mut want, other);
            c.compare("unary", &format!("cast to {} [1001, 999]", other.name()), &y, &want, 1e-3).await?;
        }
        "binary" => {
            let (a, av) = c.input(&[3, 5, 7, 9], -2.0, 2.0)?;
            let (b, bv) = c.input(&[3, 5, 7, 9], -2.0, 2.0)?;
            let y = ops::add(gpu, &a, &b, 1.0, 0.7)?;
            c.compare("binary", "a + 0.7 b [3,5,7,9]", &y, &r::binary(&av, &bv, false, 1, av.len(), 0, 1.0, 0.7), 2e-6).await?;
            let y = ops::mul(gpu, &a, &b)?;
            c.compare("binary", "a * b [3,5,7,9]", &y, &r::binary(&av, &bv, true, 1, av.len(), 0, 1.0, 1.0), 2e-6).await?;
            let (bc, bcv) = c.input(&[5], -2.0, 2.0)?;
            let y = ops::add_bcast(gpu, &a, &bc)?;
            c.compare("binary", "a + bias[C] [3,5,7,9]", &y, &r::binary(&av, &bcv, false, 63, 5, 0, 1.0, 1.0), 2e-6).await?;
            let (bn, bnv) = c.input(&[3, 5], -2.0, 2.0)?;
            let y = ops::add_bcast(gpu, &a, &bn)?;
            c.compare("binary", "a + temb[N,C] [3,5,7,9]", &y, &r::binary(&av, &bnv, false, 63, 5, 5, 1.0, 1.0), 2e-6).await?;
        }
        "geglu" => {
            let (x, xv) = c.input(&[2, 7, 26], -4.0, 4.0)?;
            let y = ops::geglu(gpu, &x)?;
            c.compare("geglu", "[2,7,26] -> [2,7,13]", &y, &r::geglu(&xv, 13), 2e-6).await?;
        }
        "concat_channels" => {
            let (a, av) = c.input(&[2, 3, 5, 7], -1.0, 1.0)?;
            let (b, bv) = c.input(&[2, 4, 5, 7], -1.0, 1.0)?;
            let y = ops::concat_channels(gpu, &a, &b)?;
            c.compare("concat_channels", "[2,3,5,7] ++ [2,4,5,7]", &y, &r::concat_channels(&av, &bv, 2, 3, 4, 35), 0.0).await?;
        }
        "slice_channels" => {
            let (x, xv) = c.input(&[3, 8, 5, 7], -1.0, 1.0)?;
            let y = ops::slice_channels(gpu, &x, 3, 4)?;
            c.compare("slice_channels", "[3,8,5,7][:, 3..7]", &y, &r::slice_channels(&xv, 3, 8, 35, 3, 4), 0.0).await?;
        }
        "upsample2x" => {
            let (x, xv) = c.input(&[2, 3, 5, 7], -1.0, 1.0)?;
            let y = ops::upsample_nearest2x(gpu, &x)?;
            c.compare("upsample2x", "[2,3,5,7] -> [2,3,10,14]", &y, &r::upsample_nearest2x(&xv, 6, 5, 7), 0.0).await?;
        }
        "transpose" => {
            let (x, xv) = c.input(&[3, 17, 33], -1.0, 1.0)?;
            let y = ops::transpose_last2(gpu, &x)?;
            c.compare("transpose", "[3,17,33] -> [3,33,17]", &y, &r::transpose(&xv, 3, 17, 33), 0.0).await?;
        }
        "token_position" => {
            for (vocab, s, ch) in [(1000usize, 77usize, 64usize), (49, 5, 33)] {
                let ids: Vec<u32> = (0..2 * s).map(|_| (c.rng.next_u64() % vocab as u64) as u32).collect();
                let idt = gpu.upload_u32(&[2, s], &ids)?;
                let (tok, tv) = c.input(&[vocab, ch], -1.0, 1.0)?;
                let (pos, pv) = c.input(&[s + 3, ch], -1.0, 1.0)?;
                let y = ops::token_position_embedding(gpu, &idt, &tok, &pos)?;
                let want = r::token_position_embedding(&ids, &tv, &pv, s, ch);
                c.compare("token_position", &format!("ids [2,{s}] vocab {vocab} C {ch}"), &y, &want, 2e-7).await?;
            }
        }
        "timestep" => {
            let tv = vec![981.0f32, 500.0, 1.0, 0.0, 999.0];
            let t = gpu.upload(&[5], DType::F32, &tv)?;
            for (dim, flip, shift) in [(320usize, true, 0.0f32), (33, false, 1.0), (128, true, 1.0)] {
                let fv = ops::timestep_freqs(dim, shift);
                let fr = gpu.upload(&[dim / 2], DType::F32, &fv)?;
                let y = ops::timestep_embedding(gpu, &t, &fr, dim, flip, dtype)?;
                let want = r::timestep_embedding(&tv, &fv, dim, flip);
                c.compare("timestep", &format!("dim {dim} flip {flip} shift {shift}"), &y, &want, 2e-6).await?;
            }
        }
        "group_norm" => {
            let gb = |c: &mut Ctx, ch: usize| -> Result<_> { Ok((c.input(&[ch], 0.5, 1.5)?, c.input(&[ch], -0.5, 0.5)?)) };
            // Group lengths (C/G·H·W) 70, 297, 6, then the reductions' awkward sizes: 1, 3, 255
            // (one short of the workgroup), 257 (one over), 3219 (many per invocation).
            for (shape, groups, eps, silu) in [
                ([2usize, 64usize, 5usize, 7usize], 32usize, 1e-5f32, false),
                ([1, 96, 9, 11], 32, 1e-6, true),
                ([3, 6, 3, 1], 3, 1e-5, true),
                // Groups of one value: variance 0, so rstd = 1/sqrt(eps); a large eps keeps the
                // affine form's f32 rounding (x·scale + (beta - mean·scale)) within tolerance.
                ([2, 32, 1, 1], 32, 0.5, false),
                ([2, 9, 1, 3], 9, 1e-5, true),
                ([1, 8, 15, 17], 8, 1e-5, false),
                ([1, 4, 257, 1], 4, 1e-5, false),
                ([1, 12, 37, 29], 4, 1e-6, true),
            ] {
                let (x, xv) = c.input(&shape, -3.0, 5.0)?;
                let ((g, gv), (b, bv)) = gb(&mut c, shape[1])?;
                let y = ops::group_norm(gpu, &x, groups, &g, &b, eps, silu)?;
                let want = r::group_norm(&xv, shape[0], shape[1], shape[2] * shape[3], groups, &gv, &bv, eps, silu);
                c.compare("group_norm", &format!("{shape:?} G{groups} eps {eps} silu {silu}"), &y, &want, 2e-5).await?;
            }
        }
        "layer_norm" => {
            // Row lengths 64, 33, 768 and the reductions' awkward sizes 1, 3, 255, 257, 1283.
            for shape in [[3usize, 77, 64], [1, 5, 33], [2, 3, 768], [2, 3, 1], [4, 1, 3], [3, 2, 255], [1, 3, 257], [2, 1, 1283]] {
                let d = shape[2];
                let (x, xv) = c.input(&shape, -3.0, 5.0)?;
                let (g, gv) = c.input(&[d], 0.5, 1.5)?;
                let (b, bv) = c.input(&[d], -0.5, 0.5)?;
                let y = ops::layer_norm(gpu, &x, &g, &b, 1e-5)?;
                c.compare("layer_norm", &format!("{shape:?}"), &y, &r::layer_norm(&xv, d, &gv, &bv, 1e-5), 2e-5).await?;
            }
        }
        "softmax" => {
            // Row lengths 77, 1000, 3 and 1, 255, 257, 4099 (the reductions' awkward sizes).
            for (rows, len, scale) in [(7usize, 77usize, 1.0f32), (3, 1000, 0.125), (5, 3, 2.0), (4, 1, 1.0), (3, 255, 1.0), (2, 257, 0.5), (2, 4099, 0.125)] {
                let (x, xv) = c.input(&[rows, len], -8.0, 8.0)?;
                let y = ops::softmax(gpu, &x, scale)?;
                c.compare("softmax", &format!("[{rows}, {len}] scale {scale}"), &y, &r::softmax(&xv, len, scale), 2e-5).await?;
            }
        }
        "matmul" => {
            for (batch, m, k, n, bb) in [(3usize, 33usize, 17usize, 45usize, true), (2, 70, 129, 66, false), (1, 1, 5, 2, true)] {
                let (a, av) = c.input(&[batch, m, k], -1.0, 1.0)?;
                let bshape: Vec<usize> = if bb { vec![batch, k, n] } else { vec![k, n] };
                let (b, bv) = c.input(&bshape, -1.0, 1.0)?;
                let y = ops::matmul(gpu, &a, &b)?;
                let want = r::matmul(&av, &bv, batch, m, k, n, bb, None, Act::None, None);
                c.compare("matmul", &format!("[{batch},{m},{k}]·{bshape:?}"), &y, &want, 1e-5).await?;
            }
        }
        "linear" => {
            for (m, k, n, act, bias, res) in [
                (154usize, 65usize, 130usize, Act::Gelu, true, true),
                (77, 64, 33, Act::QuickGelu, true, false),
                (3, 320, 1280, Act::Silu, true, false),
                (5, 7, 9, Act::None, false, true),
            ] {
                let (x, xv) = c.input(&[m, k], -1.0, 1.0)?;
                let (w, wv) = c.input(&[n, k], -0.2, 0.2)?;
                let (bt, btv) = c.input(&[n], -0.5, 0.5)?;
                let (rt, rtv) = c.input(&[m, n], -1.0, 1.0)?;
                let y = ops::linear(gpu, &x, &w, bias.then_some(&bt), act, res.then_some(&rt))?;
                let want = r::linear(&xv, &wv, m, k, n, bias.then_some(&btv[..]), act, res.then_some(&rtv[..]));
                c.compare("linear", &format!("[{m},{k}]·[{n},{k}]ᵀ {act:?} bias {bias} res {res}"), &y, &want, 1e-5).await?;
            }
            // Layer-norm prologue, and the GEGLU epilogue over interleaved (h, gate) columns.
            for (m, k, d, geglu, res) in [(77usize, 64usize, 20usize, false, true), (70, 33, 24, true, false), (9, 40, 6, true, false), (5, 16, 3, true, false)] {
                let (x, xv) = c.input(&[m, k], -2.0, 3.0)?;
                let (g, gv) = c.input(&[k], 0.5, 1.5)?;
                let (be, bev) = c.input(&[k], -0.5, 0.5)?;
                let n = 2 * d;
                let (w, wv) = c.input(&[n, k], -0.2, 0.2)?;
                let (bt, btv) = c.input(&[n], -0.5, 0.5)?;
                let (rt, rtv) = c.input(&[m, n], -1.0, 1.0)?;
                let normed = r::layer_norm(&xv, k, &gv, &bev, 1e-5);
                let stats = ops::layer_norm_stats(gpu, &x, 1e-5)?;
                let ln = ops::LayerNormIn { stats: &stats, gamma: &g, beta: &be };
                let (y, want) = if geglu {
                    // The device weight interleaves the halves: row 2j = h_j, row 2j+1 = gate_j.
                    let wi: Vec<f32> = (0..n).flat_map(|row| { let src = if row % 2 == 0 { row / 2 } else { d + row / 2 }; wv[src * k..(src + 1) * k].to_vec() }).collect();
                    let bi: Vec<f32> = (0..n).map(|row| if row % 2 == 0 { btv[row / 2] } else { btv[d + row / 2] }).collect();
                    let wt = gpu.upload(&[n, k], dtype, &wi)?;
                    let bt2 = gpu.upload(&[n], dtype, &bi)?;
                    let y = ops::linear_fused(gpu, &x, &wt, ops::LinearFuse { layer_norm: Some(ln), bias: Some(&bt2), geglu: true, ..Default::default() })?;
                    (y, r::geglu(&r::linear(&normed, &wv, m, k, n, Some(&btv), Act::None, None), d))
                } else {
                    let y = ops::linear_fused(gpu, &x, &w, ops::LinearFuse { layer_norm: Some(ln), bias: Some(&bt), residual: res.then_some(&rt), ..Default::default() })?;
                    (y, r::linear(&normed, &wv, m, k, n, Some(&btv), Act::None, res.then_some(&rtv[..])))
                };
                c.compare("linear", &format!("layer-norm prologue [{m},{k}]·[{n},{k}]ᵀ geglu {geglu} res {res}"), &y, &want, 1e-5).await?;
            }
            // 1×1 convolutions to and from tokens (the transposes live in the load pattern).
            for (b, ch, h, w, co, gn) in [(2usize, 6usize, 5usize, 7usize, 10usize, true), (1, 8, 4, 4, 8, false), (2, 6, 3, 3, 7, true)] {
                let (x, xv) = c.input(&[b, ch, h, w], -2.0, 3.0)?;
                let (wt, wv) = c.input(&[co, ch, 1, 1], -0.3, 0.3)?;
                let (bt, btv) = c.input(&[co], -0.5, 0.5)?;
                let (g, gv) = c.input(&[ch], 0.5, 1.5)?;
                let (be, bev) = c.input(&[ch], -0.5, 0.5)?;
                let groups = if gn { ch / 2 } else { 1 };
                let aff = ops::group_norm_affine(gpu, &x, groups, &g, &be, 1e-6)?;
                let y = ops::conv1x1_to_tokens(gpu, &x, &wt, Some(&bt), gn.then_some(&aff))?;
                let pre = if gn { r::group_norm(&xv, b, ch, h * w, groups, &gv, &bev, 1e-6, false) } else { xv.clone() };
                let (conv, _) = r::conv2d(&pre, [b, ch, h, w], &wv, [co, ch, 1, 1], Some(&btv), 1, [0; 4], Act::None, None);
                c.compare("linear", &format!("conv1x1 to tokens [{b},{ch},{h},{w}]->[{b},{},{co}] GN {gn}", h * w), &y, &r::transpose(&conv, b, co, h * w), 1e-5).await?;
                let (t, tv) = c.input(&[b, h * w, ch], -1.0, 1.0)?;
                let (res, resv) = c.input(&[b, co, h, w], -1.0, 1.0)?;
                let y = ops::tokens_to_conv1x1(gpu, &t, &wt, Some(&bt), Some(&res), h, w)?;
                let (conv, _) = r::conv2d(&r::transpose(&tv, b, h * w, ch), [b, ch, h, w], &wv, [co, ch, 1, 1], Some(&btv), 1, [0; 4], Act::None, Some(&resv));
                c.compare("linear", &format!("tokens to conv1x1 [{b},{},{ch}]->[{b},{co},{h},{w}] + residual", h * w), &y, &conv, 1e-5).await?;
            }
        }
        "conv2d" => {
            // (x shape, cout, k, stride, pad t/l/b/r, act, bias, residual)
            let cases: [([usize; 4], usize, usize, usize, [usize; 4], Act, bool, bool); 9] = [
                ([2, 5, 9, 11], 7, 3, 1, [1, 1, 1, 1], Act::None, true, false),
                ([1, 8, 6, 6], 12, 1, 1, [0, 0, 0, 0], Act::None, true, true),
                ([1, 4, 9, 9], 6, 3, 2, [1, 1, 1, 1], Act::Silu, true, false),
                ([1, 4, 8, 8], 6, 3, 2, [0, 0, 1, 1], Act::None, true, false),
                ([2, 3, 7, 5], 70, 3, 1, [1, 1, 1, 1], Act::None, false, true),
                ([1, 33, 8, 8], 17, 3, 1, [1, 1, 1, 1], Act::Silu, true, true),
                // TAESD: ReLU epilogue; stride-2 conv without bias, symmetric padding.
                ([1, 16, 10, 6], 16, 3, 1, [1, 1, 1, 1], Act::Relu, true, false),
                ([2, 16, 10, 14], 16, 3, 2, [1, 1, 1, 1], Act::None, false, false),
                // Cout > 64 (the v2 GEMM's 128-row tiles on a v2 GPU): stride 2, asymmetric pad.
                ([1, 4, 9, 9], 70, 3, 2, [0, 0, 1, 1], Act::Silu, true, true),
            ];
            for (xs, cout, ks, stride, pad, act, bias, res) in cases {
                let (x, xv) = c.input(&xs, -1.0, 1.0)?;
                let ws = [cout, xs[1], ks, ks];
                let (w, wv) = c.input(&ws, -0.3, 0.3)?;
                let (bt, btv) = c.input(&[cout], -0.5, 0.5)?;
                let oh = (xs[2] + pad[0] + pad[2] - ks) / stride + 1;
                let ow = (xs[3] + pad[1] + pad[3] - ks) / stride + 1;
                let (rt, rtv) = c.input(&[xs[0], cout, oh, ow], -1.0, 1.0)?;
                let y = ops::conv2d(gpu, &x, &w, bias.then_some(&bt), Conv2d { stride, pad }, act, res.then_some(&rt))?;
                let (want, _) = r::conv2d(&xv, xs, &wv, ws, bias.then_some(&btv[..]), stride, pad, act, res.then_some(&rtv[..]));
                c.compare("conv2d", &format!("{xs:?}->{cout} k{ks} s{stride} pad{pad:?} {act:?}"), &y, &want, 1e-5).await?;
            }
            // Fused prologue (group-norm affine + SiLU, nearest 2x upsample) and time-embedding epilogue.
            for (xs, cout, groups, silu, up, temb) in [([2usize, 6usize, 5usize, 7usize], 9usize, 3usize, true, false, true), ([1, 4, 3, 4], 5, 2, false, true, false), ([2, 8, 4, 4], 6, 4, true, true, true)] {
                let (x, xv) = c.input(&xs, -2.0, 3.0)?;
                let (g, gv) = c.input(&[xs[1]], 0.5, 1.5)?;
                let (be, bev) = c.input(&[xs[1]], -0.5, 0.5)?;
                let ws = [cout, xs[1], 3, 3];
                let (w, wv) = c.input(&ws, -0.3, 0.3)?;
                let (bt, btv) = c.input(&[cout], -0.5, 0.5)?;
                let (te, tev) = c.input(&[xs[0], cout], -1.0, 1.0)?;
                let aff = ops::group_norm_affine(gpu, &x, groups, &g, &be, 1e-5)?;
                let fz = ops::ConvFuse { input_affine: Some(&aff), input_silu: silu, upsample: up, bias: Some(&bt), temb: temb.then_some(&te), ..Default::default() };
                let y = ops::conv2d_fused(gpu, &x, &w, Conv2d::new(1, 1), fz)?;
                let (n, ch, h, wd) = (xs[0], xs[1], xs[2], xs[3]);
                let mut pre = r::group_norm(&xv, n, ch, h * wd, groups, &gv, &bev, 1e-5, silu);
                let (h2, w2) = if up { (2 * h, 2 * wd) } else { (h, wd) };
                if up {
                    pre = r::upsample_nearest2x(&pre, n * ch, h, wd);
                }
                let (mut want, _) = r::conv2d(&pre, [n, ch, h2, w2], &wv, ws, Some(&btv[..]), 1, [1; 4], Act::None, None);
                if temb {
                    want = r::binary(&want, &tev, false, h2 * w2, cout, cout, 1.0, 1.0);
                }
                c.compare("conv2d", &format!("fused GN({groups}) silu {silu} upsample {up} temb {temb} {xs:?}->{cout}"), &y, &want, 1e-5).await?;
            }
        }
        "attention" => {
            // (batch, sq, sk, heads, head dim, causal, scale × √D), run by the GPU's attention
            // variant. v1: `attention` (D <= 80) takes 64 query rows × 16-key blocks,
            // `attention_wide` (D > 80) 32 rows × 32 keys, head dim in chunks of 32 (scores) and
            // 64 (output). v2: one kernel per head-dim bucket (8, 16, 40, 64, 80, 160, 512) with
            // 128 / 128 / 128 / 64 / 64 / 64 / 32 query rows and 32 / 32 / 16 / 16 / 16 / 8 /
            // 3-4 keys per block. The cases cover partial query and key blocks, several query
            // blocks with the causal mask (every v2 bucket with Sq over its query rows), Sk = 1, causal with Sq > Sk and Sq < Sk, every v2
            // bucket at its full D and at odd Ds inside it (1, 5, 23, 47, 72, 97, 130, 200, 333),
            // D ≡ 2 (mod 4), peaked softmax (large scale: the running max moves across key blocks).
            for (b, sq, sk, h, d, causal, sf) in [
                (2usize, 77usize, 77usize, 4usize, 40usize, true, 1.0f32),
                (2, 64, 77, 2, 80, false, 1.0),
                (1, 37, 37, 1, 512, false, 1.0),
                (1, 70, 130, 2, 64, false, 1.0),
                (2, 9, 5, 3, 160, false, 1.0),
                (1, 13, 13, 2, 9, true, 1.0),
                (2, 5, 1, 2, 8, false, 1.0),
                (1, 100, 20, 1, 6, true, 1.0),
                (1, 20, 70, 2, 4, true, 1.0),
                (1, 40, 45, 2, 97, true, 1.0),
                (1, 33, 1, 1, 160, false, 1.0),
                (1, 35, 70, 1, 130, false, 1.0),
                (1, 70, 33, 1, 84, true, 1.0),
                (1, 50, 130, 2, 64, false, 12.0),
                (1, 45, 100, 1, 160, true, 12.0),
                (1, 150, 140, 1, 1, true, 1.0),
                (2, 131, 33, 1, 5, false, 1.0),
                (1, 130, 41, 3, 16, false, 12.0),
                (1, 139, 139, 1, 23, true, 1.0),
                (1, 29, 18, 2, 47, false, 1.0),
                (1, 71, 37, 1, 72, true, 12.0),
                (1, 35, 9, 1, 200, false, 1.0),
                (1, 7, 10, 1, 333, true, 12.0),
                (1, 70, 9, 1, 512, true, 1.0),
            ] {
                let (q, qv) = c.input(&[b, sq, h * d], -1.0, 1.0)?;
                let (k, kv) = c.input(&[b, sk, h * d], -1.0, 1.0)?;
                let (v, vv) = c.input(&[b, sk, h * d], -1.0, 1.0)?;
                let scale = sf / (d as f32).sqrt();
                let y = ops::attention(gpu, &q, &k, &v, h, causal, scale)?;
                let want = r::attention(&qv, &kv, &vv, b, sq, sk, h, d, causal, scale);
                c.compare("attention", &format!("B{b} Sq{sq} Sk{sk} H{h} D{d} causal {causal} scale×{sf}"), &y, &want, 2e-5).await?;
            }
            // Views of fused projections as the models use them (attention_views): self-attention
            // reading q, k, v at column offsets 0, C, 2C of one [B, S, 3C] tensor (+ `pad` unused
            // columns: odd strides / offsets take the unpaired loads), cross-attention with q alone
            // and k, v at offsets 0, C of one [B, Sk, 2C] tensor.
            for (b, sq, sk, h, d, pad, causal, cross) in [
                (2usize, 21usize, 21usize, 2usize, 40usize, 0usize, true, false),
                (1, 19, 19, 2, 5, 1, false, false),
                (1, 33, 13, 1, 160, 3, false, true),
                (2, 9, 14, 2, 16, 0, false, true),
                (1, 12, 12, 1, 80, 1, true, false),
            ] {
                let cc = h * d;
                let sel = |t: &[f32], rows: usize, w: usize, off: usize| -> Vec<f32> {
                    (0..rows).flat_map(|rr| t[rr * w + off..rr * w + off + cc].to_vec()).collect()
                };
                let y;
                let (qv, kv, vv);
                let scale = 1.0 / (d as f32).sqrt();
                if cross {
                    let (q, qa) = c.input(&[b, sq, cc], -1.0, 1.0)?;
                    let w = 2 * cc + pad;
                    let (kvt, kva) = c.input(&[b, sk, w], -1.0, 1.0)?;
                    y = ops::attention_views(gpu, ops::View { t: &q, offset: 0 }, ops::View { t: &kvt, offset: 0 }, ops::View { t: &kvt, offset: cc }, cc, h, causal, scale)?;
                    (qv, kv, vv) = (qa, sel(&kva, b * sk, w, 0), sel(&kva, b * sk, w, cc));
                } else {
                    let w = 3 * cc + pad;
                    let (x, xa) = c.input(&[b, sq, w], -1.0, 1.0)?;
                    let view = |o| ops::View { t: &x, offset: o };
                    y = ops::attention_views(gpu, view(pad), view(pad + cc), view(pad + 2 * cc), cc, h, causal, scale)?;
                    (qv, kv, vv) = (sel(&xa, b * sq, w, pad), sel(&xa, b * sk, w, pad + cc), sel(&xa, b * sk, w, pad + 2 * cc));
                }
                let want = r::attention(&qv, &kv, &vv, b, sq, sk, h, d, causal, scale);
                let kind = if cross { "cross k/v [B, Sk, 2C]" } else { "self q/k/v [B, S, 3C]" };
                c.compare("attention", &format!("views {kind}+{pad} B{b} Sq{sq} Sk{sk} H{h} D{d} causal {causal}"), &y, &want, 2e-5).await?;
            }
        }
        "lincomb" => {
            let n = 3 * 4 * 7 * 9;
            let (a, av) = c.input(&[2 * n], -2.0, 2.0)?;
            let (b, bv) = c.input(&[n], -2.0, 2.0)?;
            let (d, dv) = c.input(&[n], -2.0, 2.0)?;
            // CFG on the two halves of one batch, then a 6-term combination (two dispatches).
            let terms = [ops::Term { t: &a, offset: 0, coef: -6.5 }, ops::Term { t: &a, offset: n, coef: 7.5 }];
            let y = ops::lincomb(gpu, &terms, &[3, 4, 7, 9], DType::F32)?;
            let want = r::lincomb(&[(&av, 0, -6.5), (&av, n, 7.5)], n);
            c.compare("lincomb", "CFG halves of [2·756]", &y, &want, 2e-6).await?;
            let six = [(0.9, &b, &bv), (-0.3, &d, &dv), (0.25, &b, &bv), (1.5, &d, &dv), (-2.0, &b, &bv), (0.125, &d, &dv)];
            let terms: Vec<ops::Term> = six.iter().map(|(k, t, _)| ops::Term { t, offset: 0, coef: *k }).collect();
            let y = ops::lincomb(gpu, &terms, &[n], dtype)?;
            let want = r::lincomb(&six.iter().map(|(k, _, v)| (&v[..], 0usize, *k)).collect::<Vec<_>>(), n);
            c.compare("lincomb", "6 terms [756]", &y, &want, 2e-6).await?;
        }
        "vae_sample" => {
            let (m, mv) = c.input(&[2, 4, 5, 7], -1.0, 1.0)?;
            let (l, lv) = c.input(&[2, 4, 5, 7], -6.0, 2.0)?;
            let (nz, nv) = c.input(&[2, 4, 5, 7], -3.0, 3.0)?;
            let y = ops::vae_sample(gpu, &m, &l, &nz, 0.18215)?;
            c.compare("vae_sample", "[2,4,5,7]", &y, &r::vae_sample(&mv, &lv, &nv, 0.18215), 2e-6).await?;
        }
        "to_image" => {
            let (x, xv) = c.input(&[2, 3, 5, 7], -1.5, 1.5)?;
            let y = ops::to_image(gpu, &x)?;
            c.compare("to_image", "[2,3,5,7] -> [2,5,7,3]", &y, &r::to_image(&xv, 2, 5, 7), 2e-7).await?;
        }
        "tiles" => {
            let (x, xv) = c.input(&[2, 3, 9, 11], -1.0, 1.0)?;
            let y = ops::crop2d(gpu, &x, 2, 3, 5, 7)?;
            c.compare("tiles", "crop2d [2,3,9,11] 5×7 at (2,3)", &y, &r::crop2d(&xv, 6, 9, 11, 2, 3, 5, 7), 0.0).await?;
            // Overlapping tiles across canvases: weights form a partition of unity.
            for (len, tile, overlap) in [(14usize, 8usize, 2usize), (15, 8, 2), (21, 8, 2), (26, 8, 4), (16, 8, 2)] {
                let xs = ops::tile_origins(len, tile, overlap);
                let out = ops::fill(gpu, &x, &[2, 3, 8, len], DType::F32, 0.0)?;
                let ones = ops::fill(gpu, &x, &[1, 1, 8, tile], DType::F32, 1.0)?;
                let canvas = ops::fill(gpu, &x, &[1, 1, 8, len], DType::F32, 0.0)?;
                let mut want = vec![0f32; 2 * 3 * 8 * len];
                for (i, &ox) in xs.iter().enumerate() {
                    let (l0, l1) = ops::tile_ramps(&xs, i, tile);
                    let (t, tv) = c.input(&[2, 3, 8, tile], -1.0, 1.0)?;
                    ops::blend_tile(gpu, &out, &t, 0, ox, [0, 0, l0, l1])?;
                    ops::blend_tile(gpu, &canvas, &ones, 0, ox, [0, 0, l0, l1])?;
                    r::blend_tile(&mut want, &tv, 6, 8, len, 8, tile, 0, ox, [0, 0, l0, l1]);
                }
                c.compare("tiles", &format!("blend tiles {tile} at {xs:?} into width {len}"), &out, &want, 2e-6).await?;
                c.compare("tiles", &format!("partition of unity, width {len}"), &canvas, &vec![1.0; 8 * len], 1e-6).await?;
            }
        }
        "lora_merge" => {
            // (total rows, weight shape after the rows, LoRA rows, rank, row offset, interleave):
            // a part of a fused q/k/v weight starting on an odd element (13 columns), GEGLU's
            // interleaved halves, a 3×3 conv (LoCon), a linear layer covered whole.
            for (total, rest, rows, rank, offset, inter) in [
                (21usize, vec![13usize], 7usize, 3usize, 7usize, false),
                (10, vec![9], 10, 2, 0, true),
                (6, vec![4, 3, 3], 6, 5, 0, false),
                (33, vec![17], 33, 1, 0, false),
            ] {
                let cols: usize = rest.iter().product();
                let mut shape = vec![total];
                shape.extend(&rest);
                let (w, wv) = c.input(&shape, -1.0, 1.0)?;
                let (up, uv) = c.input(&[rows, rank], -0.5, 0.5)?;
                let (down, dv) = c.input(&[rank, cols], -0.5, 0.5)?;
                let scale = 0.7;
                ops::lora_merge(gpu, &w, &up, &down, ops::MergeRows { offset, interleave: inter }, scale)?;
                let want = r::lora_merge(&wv, cols, &uv, &dv, rows, rank, offset, inter, scale);
                c.compare("lora_merge", &format!("{shape:?} rows {offset}..{} rank {rank}{}", offset + rows, if inter { " interleaved" } else { "" }), &w, &want, 1e-6).await?;
            }
        }
        "gemm_split_k" => {
            // The v2 GEMM's split-K path (f32 partial sums, then the reduce kernel applies the
            // epilogue), forced on shapes whose K does not divide evenly; on a v1 GPU (or an
            // adapter below v2's limits) the same calls run the v1 kernel.
            for (batch, m, k, n, bb, splits) in [(2usize, 70usize, 129usize, 45usize, true, 2usize), (1, 130, 300, 66, false, 4), (3, 9, 37, 5, true, 3)] {
                let (a, av) = c.input(&[batch, m, k], -1.0, 1.0)?;
                let bshape: Vec<usize> = if bb { vec![batch, k, n] } else { vec![k, n] };
                let (b, bv) = c.input(&bshape, -1.0, 1.0)?;
                let y = ops::matmul_split_k(gpu, &a, &b, Some(splits))?;
                let want = r::matmul(&av, &bv, batch, m, k, n, bb, None, Act::None, None);
                c.compare("gemm_split_k", &format!("matmul [{batch},{m},{k}]·{bshape:?} split {splits}"), &y, &want, 1e-5).await?;
            }
            // Linear: bias + activation + residual, and layer-norm prologue + GEGLU epilogue.
            {
                let (m, k, n, splits) = (37usize, 100usize, 70usize, 3usize);
                let (x, xv) = c.input(&[m, k], -1.0, 1.0)?;
                let (w, wv) = c.input(&[n, k], -0.2, 0.2)?;
                let (bt, btv) = c.input(&[n], -0.5, 0.5)?;
                let (rt, rtv) = c.input(&[m, n], -1.0, 1.0)?;
                let y = ops::linear_fused(gpu, &x, &w, ops::LinearFuse { bias: Some(&bt), act: Act::Gelu, residual: Some(&rt), split_k: Some(splits), ..Default::default() })?;
                let want = r::linear(&xv, &wv, m, k, n, Some(&btv), Act::Gelu, Some(&rtv));
                c.compare("gemm_split_k", &format!("linear [{m},{k}]·[{n},{k}]ᵀ gelu bias res split {splits}"), &y, &want, 1e-5).await?;
                let (d, k2) = (12usize, 41usize);
                let n2 = 2 * d;
                let (x, xv) = c.input(&[m, k2], -2.0, 3.0)?;
                let (g, gv) = c.input(&[k2], 0.5, 1.5)?;
                let (be, bev) = c.input(&[k2], -0.5, 0.5)?;
                let (_, wv) = c.input(&[n2, k2], -0.2, 0.2)?;
                let (_, btv) = c.input(&[n2], -0.5, 0.5)?;
                let wi: Vec<f32> = (0..n2).flat_map(|row| { let src = if row % 2 == 0 { row / 2 } else { d + row / 2 }; wv[src * k2..(src + 1) * k2].to_vec() }).collect();
                let bi: Vec<f32> = (0..n2).map(|row| if row % 2 == 0 { btv[row / 2] } else { btv[d + row / 2] }).collect();
                let wt = gpu.upload(&[n2, k2], dtype, &wi)?;
                let bt2 = gpu.upload(&[n2], dtype, &bi)?;
                let stats = ops::layer_norm_stats(gpu, &x, 1e-5)?;
                let ln = ops::LayerNormIn { stats: &stats, gamma: &g, beta: &be };
                let y = ops::linear_fused(gpu, &x, &wt, ops::LinearFuse { layer_norm: Some(ln), bias: Some(&bt2), geglu: true, split_k: Some(2), ..Default::default() })?;
                let normed = r::layer_norm(&xv, k2, &gv, &bev, 1e-5);
                let want = r::geglu(&r::linear(&normed, &wv, m, k2, n2, Some(&btv), Act::None, None), d);
                c.compare("gemm_split_k", &format!("layer-norm + GEGLU [{m},{k2}]·[{n2},{k2}]ᵀ split 2"), &y, &want, 1e-5).await?;
            }
            // Convolutions: stride 2 with asymmetric padding, and the fused group-norm / SiLU /
            // upsample prologue with the time-embedding + residual epilogue.
            {
                let (xs, cout, splits) = ([2usize, 5usize, 9usize, 7usize], 11usize, 2usize);
                let (x, xv) = c.input(&xs, -1.0, 1.0)?;
                let ws = [cout, xs[1], 3, 3];
                let (w, wv) = c.input(&ws, -0.3, 0.3)?;
                let (bt, btv) = c.input(&[cout], -0.5, 0.5)?;
                let y = ops::conv2d_fused(gpu, &x, &w, Conv2d { stride: 2, pad: [0, 0, 1, 1] }, ops::ConvFuse { bias: Some(&bt), act: Act::Silu, split_k: Some(splits), ..Default::default() })?;
                let (want, _) = r::conv2d(&xv, xs, &wv, ws, Some(&btv), 2, [0, 0, 1, 1], Act::Silu, None);
                c.compare("gemm_split_k", &format!("conv {xs:?}->{cout} k3 s2 silu split {splits}"), &y, &want, 1e-5).await?;
                let (xs, cout, groups) = ([2usize, 6usize, 5usize, 3usize], 9usize, 3usize);
                let (x, xv) = c.input(&xs, -2.0, 3.0)?;
                let (g, gv) = c.input(&[xs[1]], 0.5, 1.5)?;
                let (be, bev) = c.input(&[xs[1]], -0.5, 0.5)?;
                let ws = [cout, xs[1], 3, 3];
                let (w, wv) = c.input(&ws, -0.3, 0.3)?;
                let (bt, btv) = c.input(&[cout], -0.5, 0.5)?;
                let (te, tev) = c.input(&[xs[0], cout], -1.0, 1.0)?;
                let (n, ch, h, wd) = (xs[0], xs[1], xs[2], xs[3]);
                let (rs, rsv) = c.input(&[n, cout, 2 * h, 2 * wd], -1.0, 1.0)?;
                let aff = ops::group_norm_affine(gpu, &x, groups, &g, &be, 1e-5)?;
                let fz = ops::ConvFuse { input_affine: Some(&aff), input_silu: true, upsample: true, bias: Some(&bt), temb: Some(&te), residual: Some(&rs), split_k: Some(3), ..Default::default() };
                let y = ops::conv2d_fused(gpu, &x, &w, Conv2d::new(1, 1), fz)?;
                let pre = r::upsample_nearest2x(&r::group_norm(&xv, n, ch, h * wd, groups, &gv, &bev, 1e-5, true), n * ch, h, wd);
                let (conv, _) = r::conv2d(&pre, [n, ch, 2 * h, 2 * wd], &wv, ws, Some(&btv[..]), 1, [1; 4], Act::None, None);
                let want = r::binary(&r::binary(&conv, &tev, false, 4 * h * wd, cout, cout, 1.0, 1.0), &rsv, false, 1, rsv.len(), 0, 1.0, 1.0);
                c.compare("gemm_split_k", &format!("conv fused GN silu upsample temb res {xs:?}->{cout} split 3"), &y, &want, 1e-5).await?;
            }
        }
        "prompt_weighting" => {
            // (rows, positions, channels): one chunk of SD-1.5-like states, two chunks with an
            // odd channel count, a row of odd length (f16 pairs cannot start each row), three
            // chunks; the last input is f32 whatever the storage (the text encoder's f32 output
            // written as an f16 UNet's context).
            for (rows, p, ch, f32_in) in [(2usize, 77usize, 64usize, false), (3, 154, 33, false), (3, 5, 7, false), (4, 231, 20, true)] {
                let (x, xv) = if f32_in {
                    let v = c.rng.vec(rows * p * ch, -1.0, 3.0);
                    (gpu.upload(&[rows, p, ch], DType::F32, &v)?, v)
                } else {
                    c.input(&[rows, p, ch], -1.0, 3.0)?
                };
                // Weights in [0.5, 1.5), every third exactly 1 (start / end / padding positions).
                let mut wv = c.rng.vec(rows * p, 0.5, 1.5);
                for (i, v) in wv.iter_mut().enumerate() {
                    if i % 3 == 0 {
                        *v = 1.0;
                    }
                }
                let w = gpu.upload(&[rows, p], DType::F32, &wv)?;
                let y = ops::prompt_weighting(gpu, &x, &w, dtype)?;
                let want = r::prompt_weighting(&xv, &wv, rows, p, ch);
                c.compare("prompt_weighting", &format!("[{rows}, {p}, {ch}] from {}", if f32_in { "f32" } else { dtype.name() }), &y, &want, 1e-5).await?;
            }
        }
        "dispatch_split" => {
            // More than 65,535 workgroups in one dimension: 256 · 70,000 + 77 elements.
            let n = 256 * 70_000 + 77;
            let (x, xv) = c.input(&[n], -4.0, 4.0)?;
            let y = ops::affine(gpu, &x, 2.0, 1.0)?;
            c.compare("dispatch_split", &format!("affine over {n} elements"), &y, &r::affine(&xv, 2.0, 1.0), 2e-7).await?;
        }
        other => {
            return Err(crate::Error::Unsupported { op: "selftest", detail: format!("unknown kernel check `{other}`") });
        }
    }
    Ok(c.out)
}
