// LoRA merge, in place: W[stored row of o, j] += scale · Σ_r up[o, r] · down[r, j] for the
// LoRA's rows o < rows and columns j < cols, accumulated in f32 and stored back in W's
// storage type (f32 or f16).
//   up:   [rows, rank]         `lora_up` / `lora_B` (a 1×1 kernel dimension dropped)
//   down: [rank, cols]         `lora_down` / `lora_A` flattened: cols = in · kh · kw, the
//                              same (in, kh, kw) order as the weight's
//   w:    [total_rows, cols]   the weight (any rank: rows = first dimension). The LoRA's row o
//                              is stored at row_offset + o (a part of a fused q/k/v or k/v
//                              weight starts at its first row), or, with interleave = 1 (GEGLU
//                              projections stored with their halves interleaved), at 2·o for
//                              o < rows/2 and 2·(o − rows/2) + 1 above.
// One thread per pair of consecutive elements of W from element `first` (even), `count`
// pairs: f16 is written in whole words; an element of a pair outside the LoRA's rows is
// written back as it was. Workgroups: linear index wid.x + wid.y·nwg.x (over 65,535 is fine).

//#kernel lora_merge up:read down:read w:write
struct Params { first: u32, count: u32, cols: u32, rank: u32, row_offset: u32, rows: u32, interleave: u32, total: u32, scale: f32 }

fn merged(e: u32) -> f32 {
    let v = w_ld(e);
    let sr = e / P.cols;
    if (sr < P.row_offset || sr >= P.row_offset + P.rows) {
        return v;
    }
    let lr = sr - P.row_offset;
    var o = lr;
    if (P.interleave == 1u) {
        o = select(P.rows / 2u + lr / 2u, lr / 2u, (lr & 1u) == 0u);
    }
    let j = e % P.cols;
    var acc = 0.0;
    for (var r = 0u; r < P.rank; r++) {
        acc += up_ld(o * P.rank + r) * down_ld(r * P.cols + j);
    }
    return v + P.scale * acc;
}

@compute @workgroup_size(256)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let p = gid.x + gid.y * nwg.x * 256u;
    if (p >= P.count) {
        return;
    }
    let e = P.first + 2u * p;
    let a = merged(e);
    if (e + 1u < P.total) {
        w_st2(e, a, merged(e + 1u));
    } else {
        w_st(e, a);
    }
}
