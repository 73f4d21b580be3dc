// Batched matmul / linear with a fused prologue and epilogue (tiled, see gemm_tile.wgsl).
//   matmul: a: A(b, m, k) = a[b·a_sb + m·a_sm + k·a_sk]
//           b: B(b, k, n) = b[b·b_sb + k·b_sk + n·b_sn]      (linear: weight [N, K], b_sk 1, b_sn K)
//           bias: [N], res: [batch, M, N], stats: [batch·M, 2] f32, gamma, beta: [K]
//           -> y: [batch, M, N] = act(A·B + bias) + res
//   prologue (flags bit 2): layer norm of A's rows on load,
//           A(b, m, k) -> (A - mean[r])·rstd[r]·gamma[k] + beta[k], r = b·M + m (stats from row_stats)
//   prologue (flags bit 4): per-(batch, k) affine on load, A -> A·aff[b, k, 0] + aff[b, k, 1]
//           (a group norm from group_affine; `stats` holds aff [batch, K, 2])
//   flags bit 6: A tiles are loaded walking m first (A stored k-major, e.g. NCHW read as tokens)
//   epilogue: + bias[n] (bit 0), or + bias[m] (bit 5), activation, + res (bit 1);
//           GEGLU (bit 3): B's columns hold (h_j, g_j) interleaved at (2j, 2j + 1) (the loader
//           interleaves the two halves of the feed-forward projection), and
//           y[b, m, j] = (h_j + bias[2j]) · gelu(g_j + bias[2j + 1]) with y: [batch, M, N/2]
//           (the [M, N] projection is never written).
// Kernels: `matmul` (gemm_tile.wgsl, 64×64 tiles), `matmul_v2` / `matmul_v2_n64` (gemm_v2.wgsl,
// 128×128 / 128×64 tiles; with P.splits > 1 they write split-K partial sums to y, an f32
// scratch, and `matmul_reduce` sums them and applies the epilogue). P.tile0: first tile of
// this dispatch (large products are recorded as several dispatches).
//#include activation.wgsl
struct Params { m: u32, n: u32, k: u32, batch: u32, a_sb: u32, a_sm: u32, a_sk: u32,
                b_sb: u32, b_sk: u32, b_sn: u32, flags: u32, act: u32,
                tile0: u32, splits: u32, kchunk: u32, pad0: u32 }
fn gemm_dims() -> vec4<u32> { return vec4<u32>(P.m, P.n, P.k, P.batch); }
fn b_k_fastest() -> bool { return P.b_sk == 1u; }
fn a_m_fastest() -> bool { return (P.flags & 64u) != 0u; }
fn gemm_tile0() -> u32 { return P.tile0; }
fn gemm_splits() -> u32 { return P.splits; }
fn gemm_kchunk() -> u32 { return P.kchunk; }
fn epilogue(idx: u32, n: u32, v: f32) -> f32 {
    var o = v;
    if ((P.flags & 1u) != 0u) { o = o + bias_ld(n); }
    if ((P.flags & 32u) != 0u) { o = o + bias_ld((idx / P.n) % P.m); }
    o = apply_act(o, P.act);
    if ((P.flags & 2u) != 0u) { o = o + res_ld(idx); }
    return o;
}
fn gemm_store(bt: u32, m: u32, n: u32, v0: f32, v1: f32, has1: bool) {
    if ((P.flags & 8u) != 0u) {
        // n is even: v0 = h_j, v1 = g_j with j = n / 2. The same thread writes j and j + 1
        // (its next column pair), so the read-modify-write of packed f16 is race-free.
        var h = v0;
        var g = v1;
        if ((P.flags & 1u) != 0u) {
            h = h + bias_ld(n);
            g = g + bias_ld(n + 1u);
        }
        y_st((bt * P.m + m) * (P.n / 2u) + n / 2u, h * apply_act(g, 2u));
        return;
    }
    let idx = (bt * P.m + m) * P.n + n;
    let o0 = epilogue(idx, n, v0);
    if (has1) {
        y_st2(idx, o0, epilogue(idx + 1u, n + 1u, v1));
    } else {
        y_st(idx, o0);
    }
}

//#kernel matmul a:read b:read bias:read res:read stats:read:f32 gamma:read beta:read y:write
//#include matmul_load.wgsl
//#include gemm_tile.wgsl

//#kernel matmul_v2 a:read b:read bias:read res:read stats:read:f32 gamma:read beta:read y:write
const WN: u32 = 2u;
//#include matmul_load.wgsl
//#include gemm_v2.wgsl

//#kernel matmul_v2_n64 a:read b:read bias:read res:read stats:read:f32 gamma:read beta:read y:write
const WN: u32 = 1u;
//#include matmul_load.wgsl
//#include gemm_v2.wgsl

//#kernel matmul_reduce part:read:f32 bias:read res:read y:write
//#include gemm_reduce.wgsl
