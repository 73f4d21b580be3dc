// Weight and implicit-im2col input loads of the conv2d kernels with the group-norm / SiLU /
// upsample prologue (an include of conv2d.wgsl after each kernel line: reads x, w, aff).
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
// The im2col geometry of output pixel p, computed once per thread outside the K loop:
// (top input row, left input column, output column, 0) of its receptive field.
fn b_prep(p: u32) -> vec4<i32> {
    let ox = p % P.ow;
    return vec4<i32>(i32((p / P.ow) * P.stride) - i32(P.pad_t), i32(ox * P.stride) - i32(P.pad_l), i32(ox), 0);
}
fn load_b4(bt: u32, k: u32, p: u32) -> vec4<f32> { return load_b4p(bt, k, p, b_prep(p)); }
// Output pixels p .. p + 3 at one k = (ci, ky, kx), pre = b_prep(p): with stride 1, the four in
// one output row and their inputs inside the image (no padding), the address math, the affine
// factors and the load are done once for the quad (one 4-wide load; with the 2× upsample
// 2 or 3 source elements); elsewhere (edges, other strides) four scalar load_b.
fn load_b4p(bt: u32, k: u32, p: u32, pre: vec4<i32>) -> vec4<f32> {
    let khw = P.kh * P.kw;
    let ci = k / khw;
    let r = k - ci * khw;
    let ky = r / P.kw;
    let iy = pre.x + i32(ky);
    let ix = pre.y + i32(r - ky * P.kw);
    if (P.stride != 1u || u32(pre.z) + 3u >= P.ow || iy < 0 || iy >= i32(P.h) || ix < 0 || ix + 3 >= i32(P.w)) {
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
