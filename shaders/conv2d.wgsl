// 2-D convolution as implicit GEMM (no im2col buffer; tiles in gemm_tile.wgsl) with a fused
// prologue and epilogue. Kernel kh×kw, any stride, padding (top, left) given; bottom/right
// padding is implied by oh/ow (the VAE encoder's asymmetric pad: top/left 0).
//   conv2d: x: [N, Cin, Hs, Ws], w: [Cout, Cin, KH, KW], bias: [Cout], res: [N, Cout, OH, OW],
//           temb: [N, Cout], aff: [N, Cin, 2] f32 -> y: [N, Cout, OH, OW]
//   prologue, per input element (padding stays zero):
//           flags bit 5: the input is nearest-upsampled 2× on the fly (H = 2·Hs, W = 2·Ws)
//           flags bit 3: v = v·aff[n, ci, 0] + aff[n, ci, 1]   (a group norm, see norm.wgsl)
//           flags bit 4: v = silu(v)
//   epilogue: + bias[co] (bit 0), + temb[n, co] (bit 2), activation, + res (bit 1)
//   GEMM view: M = Cout, N = OH·OW, K = Cin·KH·KW, batch = N.
//#include gemm_tile.wgsl

//#kernel conv2d x:read w:read bias:read res:read temb:read aff:read:f32 y:write
struct Params { n: u32, cin: u32, h: u32, w: u32, cout: u32, oh: u32, ow: u32, kh: u32, kw: u32,
                stride: u32, pad_t: u32, pad_l: u32, flags: u32, act: u32 }
fn gemm_dims() -> vec4<u32> { return vec4<u32>(P.cout, P.oh * P.ow, P.cin * P.kh * P.kw, P.n); }
fn b_k_fastest() -> bool { return false; }
fn a_m_fastest() -> bool { return false; }
fn load_a(bt: u32, m: u32, k: u32) -> f32 { return w_ld(m * P.cin * P.kh * P.kw + k); }
// Weights [Cout, K]: a quad along k is contiguous.
fn load_a4(bt: u32, m: u32, k: u32) -> vec4<f32> { return w_ldv4(m * P.cin * P.kh * P.kw + k); }
// The input tap of im2col element (k = (ci, ky, kx), output pixel p): channel, output
// column, and input row / column (negative or past the edge in the padding).
struct Tap { ci: u32, ox: u32, iy: i32, ix: i32 }
fn tap(k: u32, p: u32) -> Tap {
    let khw = P.kh * P.kw;
    let r = k % khw;
    let ox = p % P.ow;
    let iy = i32((p / P.ow) * P.stride + r / P.kw) - i32(P.pad_t);
    let ix = i32(ox * P.stride + r % P.kw) - i32(P.pad_l);
    return Tap(k / khw, ox, iy, ix);
}
fn load_b(bt: u32, k: u32, p: u32) -> f32 {
    let t = tap(k, p);
    let ci = t.ci;
    let iy = t.iy;
    let ix = t.ix;
    if (iy < 0 || ix < 0 || iy >= i32(P.h) || ix >= i32(P.w)) {
        return 0.0;
    }
    var sy = u32(iy);
    var sx = u32(ix);
    var sw = P.w;
    var sh = P.h;
    if ((P.flags & 32u) != 0u) {
        sy = sy / 2u;
        sx = sx / 2u;
        sw = P.w / 2u;
        sh = P.h / 2u;
    }
    var v = x_ld(((bt * P.cin + ci) * sh + sy) * sw + sx);
    if ((P.flags & 8u) != 0u) {
        let a = 2u * (bt * P.cin + ci);
        v = v * aff_ld(a) + aff_ld(a + 1u);
    }
    if ((P.flags & 16u) != 0u) {
        v = v * sigmoid_f32(v);
    }
    return v;
}
// Output pixels p .. p + 3 at one k = (ci, ky, kx): with stride 1, the four in one output
// row and their inputs inside the image (no padding), the im2col address math, the affine
// factors and the load are done once for the quad (one 4-wide load; with the 2× upsample
// 2 or 3 source elements); elsewhere (edges, other strides) four scalar load_b.
fn load_b4(bt: u32, k: u32, p: u32) -> vec4<f32> {
    let t = tap(k, p);
    let ci = t.ci;
    let ox = t.ox;
    let iy = t.iy;
    let ix = t.ix;
    if (P.stride != 1u || ox + 3u >= P.ow || iy < 0 || iy >= i32(P.h) || ix < 0 || ix + 3 >= i32(P.w)) {
        return vec4<f32>(load_b(bt, k, p), load_b(bt, k, p + 1u), load_b(bt, k, p + 2u), load_b(bt, k, p + 3u));
    }
    var v: vec4<f32>;
    if ((P.flags & 32u) != 0u) {
        // Source columns ix / 2 .. (ix + 3) / 2 of source row iy / 2.
        let sw = P.w / 2u;
        let row = ((bt * P.cin + ci) * (P.h / 2u) + u32(iy) / 2u) * sw + u32(ix) / 2u;
        let s0 = x_ld(row);
        let s1 = x_ld(row + 1u);
        if ((ix & 1) == 0) {
            v = vec4<f32>(s0, s0, s1, s1);
        } else {
            v = vec4<f32>(s0, s1, s1, x_ld(row + 2u));
        }
    } else {
        v = x_ldv4(((bt * P.cin + ci) * P.h + u32(iy)) * P.w + u32(ix));
    }
    if ((P.flags & 8u) != 0u) {
        let a = 2u * (bt * P.cin + ci);
        v = v * aff_ld(a) + aff_ld(a + 1u);
    }
    if ((P.flags & 16u) != 0u) {
        v = vec4<f32>(v.x * sigmoid_f32(v.x), v.y * sigmoid_f32(v.y), v.z * sigmoid_f32(v.z), v.w * sigmoid_f32(v.w));
    }
    return v;
}
fn epilogue(bt: u32, idx: u32, co: u32, v: f32) -> f32 {
    var o = v;
    if ((P.flags & 1u) != 0u) { o = o + bias_ld(co); }
    if ((P.flags & 4u) != 0u) { o = o + temb_ld(bt * P.cout + co); }
    o = apply_act(o, P.act);
    if ((P.flags & 2u) != 0u) { o = o + res_ld(idx); }
    return o;
}
fn gemm_store(bt: u32, co: u32, p: u32, v0: f32, v1: f32, has1: bool) {
    let idx = (bt * P.cout + co) * P.oh * P.ow + p;
    let o0 = epilogue(bt, idx, co, v0);
    if (has1) {
        y_st2(idx, o0, epilogue(bt, idx + 1u, co, v1));
    } else {
        y_st(idx, o0);
    }
}
