// Guarded quad loads shared by the GEMM cores gemm_tile.wgsl and gemm_v2.wgsl (an include:
// no kernels); the includer's kernel defines load_a / load_a4 / load_b / load_b4 / b_prep /
// load_b4p (see gemm_tile.wgsl).
// A(bt, m, k .. k + 3), or A(bt, m .. m + 3, k) when mfast; zero past M / K.
fn quad_a(bt: u32, m: u32, k: u32, M: u32, K: u32, mfast: bool) -> vec4<f32> {
    var v = vec4<f32>(0.0);
    if (mfast) {
        if (k < K) {
            if (m + 3u < M) {
                return load_a4(bt, m, k);
            }
            for (var j = 0u; j < 3u; j = j + 1u) {
                if (m + j < M) { v[j] = load_a(bt, m + j, k); }
            }
        }
    } else if (m < M) {
        if (k + 3u < K) {
            return load_a4(bt, m, k);
        }
        for (var j = 0u; j < 3u; j = j + 1u) {
            if (k + j < K) { v[j] = load_a(bt, m, k + j); }
        }
    }
    return v;
}
// B(bt, k .. k + 3, n) when kfast, else B(bt, k, n .. n + 3); zero past N / K. `pre` is
// b_prep(n) of the includer (per-column index math done once, outside the K loop: the
// implicit-GEMM conv's output pixel), passed to load_b4p for quads along n.
fn quad_b(bt: u32, k: u32, n: u32, N: u32, K: u32, kfast: bool, pre: vec4<i32>) -> vec4<f32> {
    var v = vec4<f32>(0.0);
    if (kfast) {
        if (n < N) {
            if (k + 3u < K) {
                return load_b4(bt, k, n);
            }
            for (var j = 0u; j < 3u; j = j + 1u) {
                if (k + j < K) { v[j] = load_b(bt, k + j, n); }
            }
        }
    } else if (k < K) {
        if (n + 3u < N) {
            return load_b4p(bt, k, n, pre);
        }
        for (var j = 0u; j < 3u; j = j + 1u) {
            if (n + j < N) { v[j] = load_b(bt, k, n + j); }
        }
    }
    return v;
}

