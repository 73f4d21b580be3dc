// Normalisation: statistics in one workgroup per row, then a map kernel that
// normalises (+ affine, + optional SiLU).
//   row_stats:        x: [R, L] (contiguous rows) -> stats: [R, 2] f32 (mean, 1/sqrt(var + eps))
//                     (layer norm: R rows of D)
//   layer_norm_apply: x: [R, D], stats: [R, 2], gamma: [D], beta: [D] -> y: [R, D]
//   group_affine:     x: [N, C, HW], gamma: [C], beta: [C] -> aff: [N, C, 2] f32, the group norm
//                     as a per-(sample, channel) affine map: scale = rstd·gamma[c],
//                     shift = beta[c] - mean·scale. One workgroup per (sample, group), one
//                     read of the data (Welford + pairwise merge); the consumer (a
//                     convolution's prologue, or affine_apply) applies it.
//   affine_apply:     x: [N, C, HW], aff: [N, C, 2] -> y = x·scale + shift (+ SiLU)
//   prompt_weighting: x: [R, P, C] (text states), w: [R, P] f32 (a weight per position) ->
//                     y: [R, P, C] (any float dtype, e.g. the UNet's storage), long-prompt
//                     weighting's mean-preserving emphasis: y = (x·w)·(mean(x) / mean(x·w)),
//                     means over a whole row's P·C values in f32. One workgroup per row: the
//                     two sums, then the write (f16 in pairs: rows of even length, or f32).
const WG: u32 = 256u;
//#include reduce.wgsl

//#kernel row_stats x:read stats:write:f32
struct Params { rows: u32, len: u32, eps: f32 }

@compute @workgroup_size(256)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, ln: Lane) {
    let lid = ln.lid;
    let row = wid.x + wid.y * nwg.x;
    if (row >= P.rows) {
        return;
    }
    let base = row * P.len;
    var s = 0.0;
    for (var i = lid; i < P.len; i = i + WG) {
        s = s + x_ld(base + i);
    }
    let mean = wg_sum(ln, s) / f32(P.len);
    var q = 0.0;
    for (var i = lid; i < P.len; i = i + WG) {
        let d = x_ld(base + i) - mean;
        q = q + d * d;
    }
    let var_ = wg_sum(ln, q) / f32(P.len);
    if (lid == 0u) {
        stats_st(2u * row, mean);
        stats_st(2u * row + 1u, inverseSqrt(var_ + P.eps));
    }
}

//#kernel group_affine x:read gamma:read beta:read aff:write:f32
struct Params { groups: u32, c: u32, hw: u32, eps: f32, rows: u32 }
// One pass over the group: each thread keeps a running (count, mean, M2) (Welford), then the
// workgroup merges them — the data is read once, and the variance has no catastrophic
// cancellation. Without subgroups: pairwise (Chan et al.) in a shared-memory tree (1 + log2 WG
// barriers). With subgroups: the k-way form of the same merge, n = Σ nᵢ, mean = Σ nᵢ·meanᵢ / n,
// M2 = Σ (M2ᵢ + nᵢ·(meanᵢ - mean)²) (sums of non-negative terms), first over each subgroup
// (subgroupAdd), then over the subgroups' slots (one barrier; see reduce.wgsl).
// Per invocation (tree) or per subgroup (`subgroup_id < num_subgroups <= WG`).
var<workgroup> wn: array<f32, WG>;
var<workgroup> wmean: array<f32, WG>;
var<workgroup> wm2: array<f32, WG>;
//#if subgroups

// (count, mean, M2) of the parts (nᵢ, meanᵢ, M2ᵢ) of one subgroup.
fn merge_subgroup(n: f32, mean: f32, m2: f32) -> vec3<f32> {
    let nt = subgroupAdd(n);
    let mt = select(0.0, subgroupAdd(n * mean) / nt, nt > 0.0);
    let d = mean - mt;
    return vec3<f32>(nt, mt, subgroupAdd(m2 + n * d * d));
}
//#endif

@compute @workgroup_size(256)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, ln: Lane) {
    let lid = ln.lid;
    let row = wid.x + wid.y * nwg.x;
    if (row >= P.rows) {
        return;
    }
    let cg = P.c / P.groups;
    let len = cg * P.hw;
    let n = row / P.groups;
    let g = row % P.groups;
    let base = (n * P.c + g * cg) * P.hw;
    var cnt = 0.0;
    var mean = 0.0;
    var m2 = 0.0;
    for (var i = lid; i < len; i = i + WG) {
        let v = x_ld(base + i);
        cnt = cnt + 1.0;
        let d = v - mean;
        mean = mean + d / cnt;
        m2 = m2 + d * (v - mean);
    }
//#if subgroups
    let part = merge_subgroup(cnt, mean, m2);
    if (sg_leader(ln)) {
        wn[ln.sg] = part.x;
        wmean[ln.sg] = part.y;
        wm2[ln.sg] = part.z;
    }
    workgroupBarrier();
    var nt = 0.0;
    var sm = 0.0;
    for (var i = 0u; i < ln.nsg; i = i + 1u) {
        nt = nt + wn[i];
        sm = sm + wn[i] * wmean[i];
    }
    let gmean = sm / nt;
    var m2t = 0.0;
    for (var i = 0u; i < ln.nsg; i = i + 1u) {
        let d = wmean[i] - gmean;
        m2t = m2t + wm2[i] + wn[i] * d * d;
    }
    let rstd = inverseSqrt(m2t / f32(len) + P.eps);
//#else
    wn[lid] = cnt;
    wmean[lid] = mean;
    wm2[lid] = m2;
    workgroupBarrier();
    for (var s = WG / 2u; s > 0u; s = s / 2u) {
        if (lid < s) {
            let na = wn[lid];
            let nb = wn[lid + s];
            let nt = na + nb;
            if (nb > 0.0) {
                let d = wmean[lid + s] - wmean[lid];
                wmean[lid] = wmean[lid] + d * nb / nt;
                wm2[lid] = wm2[lid] + wm2[lid + s] + d * d * na * nb / nt;
                wn[lid] = nt;
            }
        }
        workgroupBarrier();
    }
    let gmean = wmean[0];
    let rstd = inverseSqrt(wm2[0] / f32(len) + P.eps);
//#endif
    for (var j = lid; j < cg; j = j + WG) {
        let ch = g * cg + j;
        let scale = rstd * gamma_ld(ch);
        aff_st(2u * (n * P.c + ch), scale);
        aff_st(2u * (n * P.c + ch) + 1u, beta_ld(ch) - gmean * scale);
    }
}

//#kernel affine_apply x:read aff:read:f32 y:write
struct Params { numel: u32, c: u32, hw: u32, silu: u32 }
fn compute(i: u32) -> f32 {
    let nc = i / P.hw;
    var v = x_ld(i) * aff_ld(2u * nc) + aff_ld(2u * nc + 1u);
    if (P.silu != 0u) {
        v = v / (1.0 + exp(-v));
    }
    return v;
}

//#kernel layer_norm_apply x:read stats:read:f32 gamma:read beta:read y:write
struct Params { numel: u32, d: u32 }
fn compute(i: u32) -> f32 {
    let row = i / P.d;
    let col = i % P.d;
    return (x_ld(i) - stats_ld(2u * row)) * stats_ld(2u * row + 1u) * gamma_ld(col) + beta_ld(col);
}

//#kernel prompt_weighting x:read w:read:f32 y:write
struct Params { rows: u32, len: u32, c: u32 }

@compute @workgroup_size(256)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, ln: Lane) {
    let lid = ln.lid;
    let row = wid.x + wid.y * nwg.x;
    if (row >= P.rows) {
        return;
    }
    let base = row * P.len;
    let wbase = row * (P.len / P.c);
    var s = 0.0;
    var sw = 0.0;
    for (var i = lid; i < P.len; i = i + WG) {
        let v = x_ld(base + i);
        s = s + v;
        sw = sw + v * w_ld(wbase + i / P.c);
    }
    let before = wg_sum(ln, s) / f32(P.len);
    let after = wg_sum(ln, sw) / f32(P.len);
    let r = before / after;
    for (var i = 2u * lid; i < P.len; i = i + 2u * WG) {
        let a = (x_ld(base + i) * w_ld(wbase + i / P.c)) * r;
        if (i + 1u < P.len) {
            let b = (x_ld(base + i + 1u) * w_ld(wbase + (i + 1u) / P.c)) * r;
            y_st2(base + i, a, b);
        } else {
            y_st(base + i, a);
        }
    }
}
