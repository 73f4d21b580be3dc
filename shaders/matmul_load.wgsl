// A and B loads of the matmul kernels with the layer-norm / affine prologues (an include of
// matmul.wgsl after each kernel line: it reads bindings a, b, stats, gamma, beta).
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
fn b_prep(n: u32) -> vec4<i32> { return vec4<i32>(0); }
fn load_b4p(bt: u32, k: u32, n: u32, pre: vec4<i32>) -> vec4<f32> { return load_b4(bt, k, n); }
