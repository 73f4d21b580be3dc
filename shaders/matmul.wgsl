// Batched matmul / linear with fused bias, activation and residual (tiled, see gemm_tile.wgsl).
//   matmul: a: A(b, m, k) = a[b·a_sb + m·a_sm + k·a_sk]
//           b: B(b, k, n) = b[b·b_sb + k·b_sk + n·b_sn]      (linear: weight [N, K], b_sk 1, b_sn K)
//           bias: [N] (flags bit 0), res: [batch, M, N] (flags bit 1)
//           -> y: [batch, M, N] = act(A·B + bias) + res
//#include gemm_tile.wgsl

//#kernel matmul a:read b:read bias:read res:read y:write
struct Params { m: u32, n: u32, k: u32, batch: u32, a_sb: u32, a_sm: u32, a_sk: u32,
                b_sb: u32, b_sk: u32, b_sn: u32, flags: u32, act: u32 }
fn gemm_dims() -> vec4<u32> { return vec4<u32>(P.m, P.n, P.k, P.batch); }
fn b_k_fastest() -> bool { return P.b_sk == 1u; }
fn load_a(bt: u32, m: u32, k: u32) -> f32 { return a_ld(bt * P.a_sb + m * P.a_sm + k * P.a_sk); }
fn load_b(bt: u32, k: u32, n: u32) -> f32 { return b_ld(bt * P.b_sb + k * P.b_sk + n * P.b_sn); }
fn epilogue(idx: u32, n: u32, v: f32) -> f32 {
    var o = v;
    if ((P.flags & 1u) != 0u) { o = o + bias_ld(n); }
    o = apply_act(o, P.act);
    if ((P.flags & 2u) != 0u) { o = o + res_ld(idx); }
    return o;
}
fn gemm_store(bt: u32, m: u32, n: u32, v0: f32, v1: f32, has1: bool) {
    let idx = (bt * P.m + m) * P.n + n;
    let o0 = epilogue(idx, n, v0);
    if (has1) {
        y_st2(idx, o0, epilogue(idx + 1u, n + 1u, v1));
    } else {
        y_st(idx, o0);
    }
}
