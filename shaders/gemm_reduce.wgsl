// Split-K reduction for gemm_v2.wgsl (an include: no kernels). The including kernel binds
// `part` (f32 [S, batch, M, N], the partial sums of the S = gemm_splits() K ranges) and
// defines gemm_dims, gemm_splits and gemm_store (the epilogue). One thread per 4 columns (two
// gemm_store pairs, as the GEMM cores: with GEGLU the two halved outputs of a thread share one
// packed-f16 word): C[b, m, n .. n + 3] = sum_s part[s, b, m, n .. n + 3], then gemm_store.
@compute @workgroup_size(256)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let d = gemm_dims();
    let nq = (d.y + 3u) / 4u;
    let i = gid.x + gid.y * nwg.x * 256u;
    if (i >= d.w * d.x * nq) {
        return;
    }
    let row = i / nq;
    let m = row % d.x;
    let bt = row / d.x;
    let plane = d.w * d.x * d.y;
    for (var c = 0u; c < 4u; c = c + 2u) {
        let n = (i % nq) * 4u + c;
        if (n < d.y) {
            let has1 = n + 1u < d.y;
            let base = row * d.y + n;
            var v0 = 0.0;
            var v1 = 0.0;
            for (var s = 0u; s < gemm_splits(); s = s + 1u) {
                v0 = v0 + part_ld(s * plane + base);
                if (has1) {
                    v1 = v1 + part_ld(s * plane + base + 1u);
                }
            }
            gemm_store(bt, m, n, v0, v1, has1);
        }
    }
}
