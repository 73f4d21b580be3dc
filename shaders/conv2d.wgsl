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
// Kernels: `conv2d` (gemm_tile.wgsl), `conv2d_v2` / `conv2d_v2_n64` (gemm_v2.wgsl; split-K
// partial sums to an f32 scratch y when P.splits > 1, summed by `conv2d_reduce`).
//#include activation.wgsl
struct Params { n: u32, cin: u32, h: u32, w: u32, cout: u32, oh: u32, ow: u32, kh: u32, kw: u32,
                stride: u32, pad_t: u32, pad_l: u32, flags: u32, act: u32,
                tile0: u32, splits: u32, kchunk: u32, pad0: u32 }
fn gemm_dims() -> vec4<u32> { return vec4<u32>(P.cout, P.oh * P.ow, P.cin * P.kh * P.kw, P.n); }
fn b_k_fastest() -> bool { return false; }
fn a_m_fastest() -> bool { return false; }
fn gemm_tile0() -> u32 { return P.tile0; }
fn gemm_splits() -> u32 { return P.splits; }
fn gemm_kchunk() -> u32 { return P.kchunk; }
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

//#kernel conv2d x:read w:read bias:read res:read temb:read aff:read:f32 y:write
//#include conv2d_load.wgsl
//#include gemm_tile.wgsl

//#kernel conv2d_v2 x:read w:read bias:read res:read temb:read aff:read:f32 y:write
const WN: u32 = 2u;
//#include conv2d_load.wgsl
//#include gemm_v2.wgsl

//#kernel conv2d_v2_n64 x:read w:read bias:read res:read temb:read aff:read:f32 y:write
const WN: u32 = 1u;
//#include conv2d_load.wgsl
//#include gemm_v2.wgsl

//#kernel conv2d_reduce part:read:f32 bias:read res:read temb:read y:write
//#include gemm_reduce.wgsl
