//! Naive CPU versions of every op (f64 accumulation): the ground truth for the
//! kernel tests and the in-browser self-test. Layouts as in shaders/*.wgsl.
use crate::ops::Act;

pub fn act(v: f64, a: Act) -> f64 {
    match a {
        Act::None => v,
        Act::Silu => v / (1.0 + (-v).exp()),
        Act::Gelu => 0.5 * v * (1.0 + erf(v / std::f64::consts::SQRT_2)),
        Act::QuickGelu => v / (1.0 + (-1.702 * v).exp()),
        Act::Relu => v.max(0.0),
    }
}

/// erf in f64 (W. J. Cody's rational approximations are overkill here; this
/// series / continued-fraction pair is accurate to ~1e-15).
pub fn erf(x: f64) -> f64 {
    let ax = x.abs();
    let r = if ax < 2.5 {
        // Maclaurin series
        let mut sum = ax;
        let mut term = ax;
        let x2 = ax * ax;
        let mut n = 0.0;
        loop {
            n += 1.0;
            term *= -x2 / n;
            let t = term / (2.0 * n + 1.0);
            sum += t;
            if t.abs() < 1e-17 * sum.abs() {
                break;
            }
        }
        sum * 2.0 / std::f64::consts::PI.sqrt()
    } else {
        // continued fraction for erfc
        let mut f = 0.0;
        for k in (1..60).rev() {
            f = (k as f64 / 2.0) / (ax + f);
        }
        1.0 - (-ax * ax).exp() / (ax + f) / std::f64::consts::PI.sqrt()
    };
    if x < 0.0 {
        -r
    } else {
        r
    }
}

pub fn unary(x: &[f32], a: Act) -> Vec<f32> {
    x.iter().map(|&v| act(v as f64, a) as f32).collect()
}

pub fn affine(x: &[f32], alpha: f32, beta: f32) -> Vec<f32> {
    x.iter().map(|&v| (alpha as f64 * v as f64 + beta as f64) as f32).collect()
}

/// alpha·a + beta·b[bidx] (op 0) or a·b[bidx] (op 1); bidx as in elementwise.wgsl.
pub fn binary(a: &[f32], b: &[f32], mul: bool, inner: usize, mid: usize, outer: usize, alpha: f32, beta: f32) -> Vec<f32> {
    (0..a.len())
        .map(|i| {
            let bi = (i / inner) % mid + (i / (inner * mid)) * outer;
            let (av, bv) = (a[i] as f64, b[bi] as f64);
            (if mul { av * bv } else { alpha as f64 * av + beta as f64 * bv }) as f32
        })
        .collect()
}

pub fn geglu(x: &[f32], d: usize) -> Vec<f32> {
    let rows = x.len() / (2 * d);
    let mut y = Vec::with_capacity(rows * d);
    for m in 0..rows {
        for j in 0..d {
            let h = x[m * 2 * d + j] as f64;
            let g = x[m * 2 * d + d + j] as f64;
            y.push((h * act(g, Act::Gelu)) as f32);
        }
    }
    y
}

pub fn concat_channels(a: &[f32], b: &[f32], n: usize, c1: usize, c2: usize, s: usize) -> Vec<f32> {
    let mut y = Vec::with_capacity(n * (c1 + c2) * s);
    for i in 0..n {
        y.extend_from_slice(&a[i * c1 * s..(i + 1) * c1 * s]);
        y.extend_from_slice(&b[i * c2 * s..(i + 1) * c2 * s]);
    }
    y
}

pub fn upsample_nearest2x(x: &[f32], nc: usize, h: usize, w: usize) -> Vec<f32> {
    let mut y = vec![0f32; nc * 4 * h * w];
    for c in 0..nc {
        for oy in 0..2 * h {
            for ox in 0..2 * w {
                y[(c * 2 * h + oy) * 2 * w + ox] = x[(c * h + oy / 2) * w + ox / 2];
            }
        }
    }
    y
}

pub fn transpose(x: &[f32], b: usize, r: usize, c: usize) -> Vec<f32> {
    let mut y = vec![0f32; b * r * c];
    for bi in 0..b {
        for ri in 0..r {
            for ci in 0..c {
                y[bi * r * c + ci * r + ri] = x[bi * r * c + ri * c + ci];
            }
        }
    }
    y
}

pub fn token_position_embedding(ids: &[u32], tok: &[f32], pos: &[f32], s: usize, c: usize) -> Vec<f32> {
    let mut y = Vec::with_capacity(ids.len() * c);
    for (bs, &id) in ids.iter().enumerate() {
        let si = bs % s;
        for ch in 0..c {
            y.push((tok[id as usize * c + ch] as f64 + pos[si * c + ch] as f64) as f32);
        }
    }
    y
}

/// diffusers' get_timestep_embedding given its f32 frequencies: arg = t·freq in f32
/// (as torch), sin / cos in f64.
pub fn timestep_embedding(t: &[f32], freqs: &[f32], dim: usize, flip_sin_to_cos: bool) -> Vec<f32> {
    let half = dim / 2;
    let mut y = vec![0f32; t.len() * dim];
    for (b, &tv) in t.iter().enumerate() {
        for (k, &fr) in freqs.iter().enumerate().take(half) {
            let arg = (tv * fr) as f64;
            let (s, c) = (arg.sin(), arg.cos());
            let (first, second) = if flip_sin_to_cos { (c, s) } else { (s, c) };
            y[b * dim + k] = first as f32;
            y[b * dim + half + k] = second as f32;
        }
    }
    y
}

fn mean_rstd(v: &[f32], eps: f32) -> (f64, f64) {
    let n = v.len() as f64;
    let mean = v.iter().map(|&x| x as f64).sum::<f64>() / n;
    let var = v.iter().map(|&x| (x as f64 - mean).powi(2)).sum::<f64>() / n;
    (mean, 1.0 / (var + eps as f64).sqrt())
}

#[allow(clippy::too_many_arguments)]
pub fn group_norm(x: &[f32], n: usize, c: usize, hw: usize, groups: usize, gamma: &[f32], beta: &[f32], eps: f32, silu: bool) -> Vec<f32> {
    let cg = c / groups;
    let mut y = vec![0f32; x.len()];
    for ni in 0..n {
        for g in 0..groups {
            let base = (ni * c + g * cg) * hw;
            let (mean, rstd) = mean_rstd(&x[base..base + cg * hw], eps);
            for j in 0..cg * hw {
                let ch = g * cg + j / hw;
                let mut v = (x[base + j] as f64 - mean) * rstd * gamma[ch] as f64 + beta[ch] as f64;
                if silu {
                    v = act(v, Act::Silu);
                }
                y[base + j] = v as f32;
            }
        }
    }
    y
}

pub fn layer_norm(x: &[f32], d: usize, gamma: &[f32], beta: &[f32], eps: f32) -> Vec<f32> {
    let mut y = vec![0f32; x.len()];
    for (r, row) in x.chunks(d).enumerate() {
        let (mean, rstd) = mean_rstd(row, eps);
        for j in 0..d {
            y[r * d + j] = ((row[j] as f64 - mean) * rstd * gamma[j] as f64 + beta[j] as f64) as f32;
        }
    }
    y
}

pub fn softmax(x: &[f32], len: usize, scale: f32) -> Vec<f32> {
    let mut y = Vec::with_capacity(x.len());
    for row in x.chunks(len) {
        let m = row.iter().map(|&v| scale as f64 * v as f64).fold(f64::MIN, f64::max);
        let s: f64 = row.iter().map(|&v| (scale as f64 * v as f64 - m).exp()).sum();
        y.extend(row.iter().map(|&v| ((scale as f64 * v as f64 - m).exp() / s) as f32));
    }
    y
}

/// a [batch, M, K] · b [batch or 1, K, N] (+ bias [N], act, + res [batch, M, N]).
#[allow(clippy::too_many_arguments)]
pub fn matmul(a: &[f32], b: &[f32], batch: usize, m: usize, k: usize, n: usize, b_batched: bool, bias: Option<&[f32]>, a_: Act, res: Option<&[f32]>) -> Vec<f32> {
    let mut y = vec![0f32; batch * m * n];
    for bt in 0..batch {
        let bo = if b_batched { bt * k * n } else { 0 };
        for i in 0..m {
            for j in 0..n {
                let mut s = 0f64;
                for kk in 0..k {
                    s += a[(bt * m + i) * k + kk] as f64 * b[bo + kk * n + j] as f64;
                }
                let idx = (bt * m + i) * n + j;
                y[idx] = epilogue(s, j, idx, bias, a_, res);
            }
        }
    }
    y
}

fn epilogue(s: f64, ch: usize, idx: usize, bias: Option<&[f32]>, a_: Act, res: Option<&[f32]>) -> f32 {
    let mut v = s + bias.map_or(0.0, |b| b[ch] as f64);
    v = act(v, a_);
    (v + res.map_or(0.0, |r| r[idx] as f64)) as f32
}

/// x [M, K] · w [N, K]ᵀ (+ bias, act, + res).
pub fn linear(x: &[f32], w: &[f32], m: usize, k: usize, n: usize, bias: Option<&[f32]>, a_: Act, res: Option<&[f32]>) -> Vec<f32> {
    let mut y = vec![0f32; m * n];
    for i in 0..m {
        for j in 0..n {
            let s: f64 = (0..k).map(|kk| x[i * k + kk] as f64 * w[j * k + kk] as f64).sum();
            y[i * n + j] = epilogue(s, j, i * n + j, bias, a_, res);
        }
    }
    y
}

/// x [N, Cin, H, W] ⊛ w [Cout, Cin, KH, KW], padding (top, left, bottom, right).
#[allow(clippy::too_many_arguments)]
pub fn conv2d(x: &[f32], xs: [usize; 4], w: &[f32], ws: [usize; 4], bias: Option<&[f32]>, stride: usize, pad: [usize; 4], a_: Act, res: Option<&[f32]>) -> (Vec<f32>, [usize; 4]) {
    let [n, cin, h, wd] = xs;
    let [cout, _, kh, kw] = ws;
    let oh = (h + pad[0] + pad[2] - kh) / stride + 1;
    let ow = (wd + pad[1] + pad[3] - kw) / stride + 1;
    let mut y = vec![0f32; n * cout * oh * ow];
    for ni in 0..n {
        for co in 0..cout {
            for oy in 0..oh {
                for ox in 0..ow {
                    let mut s = 0f64;
                    for ci in 0..cin {
                        for ky in 0..kh {
                            for kx in 0..kw {
                                let iy = (oy * stride + ky) as isize - pad[0] as isize;
                                let ix = (ox * stride + kx) as isize - pad[1] as isize;
                                if iy < 0 || ix < 0 || iy >= h as isize || ix >= wd as isize {
                                    continue;
                                }
                                s += x[((ni * cin + ci) * h + iy as usize) * wd + ix as usize] as f64
                                    * w[((co * cin + ci) * kh + ky) * kw + kx] as f64;
                            }
                        }
                    }
                    let idx = ((ni * cout + co) * oh + oy) * ow + ox;
                    y[idx] = epilogue(s, co, idx, bias, a_, res);
                }
            }
        }
    }
    (y, [n, cout, oh, ow])
}

/// q [B, Sq, H·D], k, v [B, Sk, H·D] -> [B, Sq, H·D].
#[allow(clippy::too_many_arguments)]
pub fn attention(q: &[f32], k: &[f32], v: &[f32], b: usize, sq: usize, sk: usize, heads: usize, d: usize, causal: bool, scale: f32) -> Vec<f32> {
    let c = heads * d;
    let mut o = vec![0f32; b * sq * c];
    let mut s = vec![0f64; sk];
    for bi in 0..b {
        for h in 0..heads {
            for i in 0..sq {
                let kend = if causal { sk.min(i + 1) } else { sk };
                let mut mx = f64::MIN;
                for (j, sj) in s.iter_mut().enumerate().take(kend) {
                    let mut dot = 0f64;
                    for dd in 0..d {
                        dot += q[(bi * sq + i) * c + h * d + dd] as f64 * k[(bi * sk + j) * c + h * d + dd] as f64;
                    }
                    *sj = dot * scale as f64;
                    mx = mx.max(*sj);
                }
                let mut l = 0f64;
                for sj in s.iter_mut().take(kend) {
                    *sj = (*sj - mx).exp();
                    l += *sj;
                }
                for dd in 0..d {
                    let mut acc = 0f64;
                    for (j, sj) in s.iter().enumerate().take(kend) {
                        acc += sj * v[(bi * sk + j) * c + h * d + dd] as f64;
                    }
                    o[(bi * sq + i) * c + h * d + dd] = (acc / l) as f32;
                }
            }
        }
    }
    o
}

/// `m · tanh(x / m)`.
pub fn soft_clamp(x: &[f32], m: f32) -> Vec<f32> {
    x.iter().map(|&v| (m as f64 * (v as f64 / m as f64).tanh()) as f32).collect()
}

pub fn clamp(x: &[f32], lo: f32, hi: f32) -> Vec<f32> {
    x.iter().map(|&v| v.clamp(lo, hi)).collect()
}

pub fn slice_channels(x: &[f32], n: usize, c: usize, s: usize, c0: usize, len: usize) -> Vec<f32> {
    let mut y = Vec::with_capacity(n * len * s);
    for i in 0..n {
        y.extend_from_slice(&x[(i * c + c0) * s..(i * c + c0 + len) * s]);
    }
    y
}

/// Σ coef·x[offset ..] over n elements.
pub fn lincomb(terms: &[(&[f32], usize, f64)], n: usize) -> Vec<f32> {
    (0..n).map(|i| terms.iter().map(|(x, o, c)| c * x[o + i] as f64).sum::<f64>() as f32).collect()
}

pub fn vae_sample(mean: &[f32], logvar: &[f32], noise: &[f32], scale: f32) -> Vec<f32> {
    (0..mean.len())
        .map(|i| (scale as f64 * (mean[i] as f64 + (0.5 * logvar[i] as f64).exp() * noise[i] as f64)) as f32)
        .collect()
}

/// [B, 3, H, W] -> [B, H, W, 3], clamp(x / 2 + 0.5, 0, 1).
pub fn to_image(x: &[f32], b: usize, h: usize, w: usize) -> Vec<f32> {
    let mut y = vec![0f32; b * h * w * 3];
    for bi in 0..b {
        for c in 0..3 {
            for p in 0..h * w {
                y[(bi * h * w + p) * 3 + c] = (x[(bi * 3 + c) * h * w + p] as f64 * 0.5 + 0.5).clamp(0.0, 1.0) as f32;
            }
        }
    }
    y
}

/// x [NC, H, W] -> [NC, th, tw] at (oy, ox).
pub fn crop2d(x: &[f32], nc: usize, h: usize, w: usize, oy: usize, ox: usize, th: usize, tw: usize) -> Vec<f32> {
    let mut y = Vec::with_capacity(nc * th * tw);
    for c in 0..nc {
        for ty in 0..th {
            let row = (c * h + oy + ty) * w + ox;
            y.extend_from_slice(&x[row..row + tw]);
        }
    }
    y
}

/// y [NC, H, W] += ramp-weighted tile [NC, th, tw] at (oy, ox), ramps (top, bottom, left, right).
#[allow(clippy::too_many_arguments)]
pub fn blend_tile(y: &mut [f32], tile: &[f32], nc: usize, h: usize, w: usize, th: usize, tw: usize, oy: usize, ox: usize, ramps: [usize; 4]) {
    let ramp = |t: usize, len: usize, lo: usize, hi: usize| -> f64 {
        let mut v = 1.0f64;
        if t < lo {
            v = (t as f64 + 0.5) / lo as f64;
        }
        if hi > 0 && t + hi >= len {
            v = v.min(((len - t) as f64 - 0.5) / hi as f64);
        }
        v
    };
    for c in 0..nc {
        for ty in 0..th {
            for tx in 0..tw {
                let wgt = ramp(ty, th, ramps[0], ramps[1]) * ramp(tx, tw, ramps[2], ramps[3]);
                let i = (c * h + oy + ty) * w + ox + tx;
                y[i] = (y[i] as f64 + wgt * tile[(c * th + ty) * tw + tx] as f64) as f32;
            }
        }
    }
}

/// LoRA merge (shaders/lora.wgsl): w [total_rows, cols] with `scale · up @ down` added to the
/// LoRA's rows (up [rows, rank], down [rank, cols]) at `offset`, or interleaved halves.
#[allow(clippy::too_many_arguments)]
pub fn lora_merge(w: &[f32], cols: usize, up: &[f32], down: &[f32], rows: usize, rank: usize, offset: usize, interleave: bool, scale: f32) -> Vec<f32> {
    let mut out = w.to_vec();
    for o in 0..rows {
        let stored = if interleave { if o < rows / 2 { 2 * o } else { 2 * (o - rows / 2) + 1 } } else { offset + o };
        for j in 0..cols {
            let acc: f64 = (0..rank).map(|r| up[o * rank + r] as f64 * down[r * cols + j] as f64).sum();
            let i = stored * cols + j;
            out[i] = (w[i] as f64 + scale as f64 * acc) as f32;
        }
    }
    out
}

/// Long-prompt weighting (shaders/norm.wgsl `prompt_weighting`): x [rows, P, C], w [rows, P]:
/// `(x·w)·(mean(x) / mean(x·w))` per row, means over the row's P·C values.
pub fn prompt_weighting(x: &[f32], w: &[f32], rows: usize, p: usize, c: usize) -> Vec<f32> {
    let len = p * c;
    let mut y = Vec::with_capacity(x.len());
    for r in 0..rows {
        let xr = &x[r * len..(r + 1) * len];
        let wr = &w[r * p..(r + 1) * p];
        let before = xr.iter().map(|&v| v as f64).sum::<f64>() / len as f64;
        let after = xr.iter().enumerate().map(|(i, &v)| v as f64 * wr[i / c] as f64).sum::<f64>() / len as f64;
        y.extend(xr.iter().enumerate().map(|(i, &v)| (v as f64 * wr[i / c] as f64 * (before / after)) as f32));
    }
    y
}
