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
//#include gemm_tile.wgsl

//#kernel matmul a:read b:read bias:read res:read stats:read:f32 gamma:read beta:read y:write
struct Params { m: u32, n: u32, k: u32, batch: u32, a_sb: u32, a_sm: u32, a_sk: u32,
                b_sb: u32, b_sk: u32, b_sn: u32, flags: u32, act: u32 }
fn gemm_dims() -> vec4<u32> { return vec4<u32>(P.m, P.n, P.k, P.batch); }
fn b_k_fastest() -> bool { return P.b_sk == 1u; }
fn a_m_fastest() -> bool { return (P.flags & 64u) != 0u; }
fn a_addr(bt: u32, m: u32, k: u32) -> u32 { return bt * P.a_sb + m * P.a_sm + k * P.a_sk; }
// The prologues applied to a loaded element A(bt, m, k).
fn prologue_a(bt: u32, m: u32, k: u32, x: f32) -> f32 {
    var v = x;
    if ((P.flags & 4u) != 0u) {
        let r = 2u * (bt * P.m + m);
        v = (v - stats_ld(r)) * stats_ld(r + 1u) * gamma_ld(k) + beta_ld(k);
    }
    if ((P.flags & 16u) != 0u) {
        let r = 2u * (bt * P.k + k);
        v = v * stats_ld(r) + stats_ld(r + 1u);
    }
    return v;
}
fn load_a(bt: u32, m: u32, k: u32) -> f32 { return prologue_a(bt, m, k, a_ld(a_addr(bt, m, k))); }
// A quad along k (along m with flags bit 6): one 4-wide load where that stride is 1; the
// prologue per element as in load_a, its per-row (layer norm, along k) or per-k (affine,
// along m) factors loaded once.
fn load_a4(bt: u32, m: u32, k: u32) -> vec4<f32> {
    let mf = a_m_fastest();
    let step = select(P.a_sk, P.a_sm, mf);
    let i = a_addr(bt, m, k);
    var v: vec4<f32>;
    if (step == 1u) {
        v = a_ldv4(i);
    } else {
        v = vec4<f32>(a_ld(i), a_ld(i + step), a_ld(i + 2u * step), a_ld(i + 3u * step));
    }
    if ((P.flags & 20u) == 0u) {
        return v;
    }
    if (!mf && (P.flags & 20u) == 4u) {
        let r = 2u * (bt * P.m + m);
        return (v - stats_ld(r)) * stats_ld(r + 1u) * gamma_ldv4(k) + beta_ldv4(k);
    }
    if (mf && (P.flags & 20u) == 16u) {
        let r = 2u * (bt * P.k + k);
        return v * stats_ld(r) + stats_ld(r + 1u);
    }
    let dm = select(0u, 1u, mf);
    let dk = 1u - dm;
    for (var j = 0u; j < 4u; j = j + 1u) {
        v[j] = prologue_a(bt, m + j * dm, k + j * dk, v[j]);
    }
    return v;
}
fn load_b(bt: u32, k: u32, n: u32) -> f32 { return b_ld(bt * P.b_sb + k * P.b_sk + n * P.b_sn); }
// A quad of B along k (b_sk = 1) or along n: one 4-wide load where that stride is 1.
fn load_b4(bt: u32, k: u32, n: u32) -> vec4<f32> {
    let step = select(P.b_sn, 1u, b_k_fastest());
    let i = bt * P.b_sb + k * P.b_sk + n * P.b_sn;
    if (step == 1u) {
        return b_ldv4(i);
    }
    return vec4<f32>(b_ld(i), b_ld(i + step), b_ld(i + 2u * step), b_ld(i + 3u * step));
}
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
