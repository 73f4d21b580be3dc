// 2-D convolution as implicit GEMM (no im2col buffer; tiles in gemm_tile.wgsl), fused
// bias, activation and residual. Kernel kh×kw, any stride, padding (top, left) given;
// bottom/right padding is implied by oh/ow (the VAE encoder's asymmetric pad: top/left 0).
//   conv2d: x: [N, Cin, H, W], w: [Cout, Cin, KH, KW], bias: [Cout] (flags bit 0),
//           res: [N, Cout, OH, OW] (flags bit 1) -> y: [N, Cout, OH, OW]
//   GEMM view: M = Cout, N = OH·OW, K = Cin·KH·KW, batch = N.
//#include gemm_tile.wgsl

//#kernel conv2d x:read w:read bias:read res:read y:write
struct Params { n: u32, cin: u32, h: u32, w: u32, cout: u32, oh: u32, ow: u32, kh: u32, kw: u32,
                stride: u32, pad_t: u32, pad_l: u32, flags: u32, act: u32 }
fn gemm_dims() -> vec4<u32> { return vec4<u32>(P.cout, P.oh * P.ow, P.cin * P.kh * P.kw, P.n); }
fn b_k_fastest() -> bool { return false; }
fn load_a(bt: u32, m: u32, k: u32) -> f32 { return w_ld(m * P.cin * P.kh * P.kw + k); }
fn load_b(bt: u32, k: u32, p: u32) -> f32 {
    let khw = P.kh * P.kw;
    let ci = k / khw;
    let r = k % khw;
    let ky = r / P.kw;
    let kx = r % P.kw;
    let oy = p / P.ow;
    let ox = p % P.ow;
    let iy = i32(oy * P.stride + ky) - i32(P.pad_t);
    let ix = i32(ox * P.stride + kx) - i32(P.pad_l);
    if (iy < 0 || ix < 0 || iy >= i32(P.h) || ix >= i32(P.w)) {
        return 0.0;
    }
    return x_ld(((bt * P.cin + ci) * P.h + u32(iy)) * P.w + u32(ix));
}
fn epilogue(idx: u32, co: u32, v: f32) -> f32 {
    var o = v;
    if ((P.flags & 1u) != 0u) { o = o + bias_ld(co); }
    o = apply_act(o, P.act);
    if ((P.flags & 2u) != 0u) { o = o + res_ld(idx); }
    return o;
}
fn gemm_store(bt: u32, co: u32, p: u32, v0: f32, v1: f32, has1: bool) {
    let idx = (bt * P.cout + co) * P.oh * P.ow + p;
    let o0 = epilogue(idx, co, v0);
    if (has1) {
        y_st2(idx, o0, epilogue(idx + 1u, co, v1));
    } else {
        y_st(idx, o0);
    }
}
