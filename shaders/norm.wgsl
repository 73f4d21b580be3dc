// Normalisation: statistics in one workgroup per row, then a map kernel that
// normalises (+ affine, + optional SiLU).
//   row_stats:        x: [R, L] (contiguous rows) -> stats: [R, 2] f32 (mean, 1/sqrt(var + eps))
//                     group norm: R = N·G rows of (C/G)·H·W; layer norm: R rows of D.
//   group_norm_apply: x: [N, C, HW], stats: [N·G, 2], gamma: [C], beta: [C] -> y: [N, C, HW]
//   layer_norm_apply: x: [R, D], stats: [R, 2], gamma: [D], beta: [D] -> y: [R, D]
const WG: u32 = 256u;

//#kernel row_stats x:read stats:write:f32
struct Params { rows: u32, len: u32, eps: f32 }
var<workgroup> red: array<f32, WG>;

fn wg_sum(lid: u32, v: f32) -> f32 {
    red[lid] = v;
    workgroupBarrier();
    for (var s = WG / 2u; s > 0u; s = s / 2u) {
        if (lid < s) {
            red[lid] = red[lid] + red[lid + s];
        }
        workgroupBarrier();
    }
    let r = red[0];
    workgroupBarrier();
    return r;
}

@compute @workgroup_size(256)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
    let row = wid.x + wid.y * nwg.x;
    if (row >= P.rows) {
        return;
    }
    let base = row * P.len;
    var s = 0.0;
    for (var i = lid; i < P.len; i = i + WG) {
        s = s + x_ld(base + i);
    }
    let mean = wg_sum(lid, s) / f32(P.len);
    var q = 0.0;
    for (var i = lid; i < P.len; i = i + WG) {
        let d = x_ld(base + i) - mean;
        q = q + d * d;
    }
    let var_ = wg_sum(lid, q) / f32(P.len);
    if (lid == 0u) {
        stats_st(2u * row, mean);
        stats_st(2u * row + 1u, inverseSqrt(var_ + P.eps));
    }
}

//#kernel group_norm_apply x:read stats:read:f32 gamma:read beta:read y:write
struct Params { numel: u32, c: u32, hw: u32, groups: u32, silu: u32 }
fn compute(i: u32) -> f32 {
    let ch = (i / P.hw) % P.c;
    let n = i / (P.c * P.hw);
    let row = n * P.groups + ch / (P.c / P.groups);
    var v = (x_ld(i) - stats_ld(2u * row)) * stats_ld(2u * row + 1u) * gamma_ld(ch) + beta_ld(ch);
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
