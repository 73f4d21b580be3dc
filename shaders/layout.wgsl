// Data movement (map kernels, y is the output).
//   concat_channels: a: [N, C1, S], b: [N, C2, S] -> y: [N, C1 + C2, S]
//   upsample2x:      x: [NC, H, W]                -> y: [NC, 2H, 2W]   (nearest)
//   transpose:       x: [B, R, C]                 -> y: [B, C, R]      (NCHW <-> NHWC with R = C, C = H·W)
//   slice_channels:  x: [N, C, S]                 -> y: [N, len, S]    y[:, c] = x[:, c0 + c]

//#kernel concat_channels a:read b:read y:write
struct Params { numel: u32, c1: u32, c2: u32, s: u32 }
fn compute(i: u32) -> f32 {
    let c = P.c1 + P.c2;
    let n = i / (c * P.s);
    let ch = (i / P.s) % c;
    let p = i % P.s;
    if (ch < P.c1) {
        return a_ld((n * P.c1 + ch) * P.s + p);
    }
    return b_ld((n * P.c2 + (ch - P.c1)) * P.s + p);
}

//#kernel upsample2x x:read y:write
struct Params { numel: u32, h: u32, w: u32 }
fn compute(i: u32) -> f32 {
    let ow = 2u * P.w;
    let ox = i % ow;
    let oy = (i / ow) % (2u * P.h);
    let nc = i / (ow * 2u * P.h);
    return x_ld((nc * P.h + oy / 2u) * P.w + ox / 2u);
}

//#kernel transpose x:read y:write
struct Params { numel: u32, r: u32, c: u32 }
fn compute(i: u32) -> f32 {
    let rc = P.r * P.c;
    let b = i / rc;
    let rem = i % rc;
    let col = rem / P.r;
    let row = rem % P.r;
    return x_ld(b * rc + row * P.c + col);
}

//#kernel slice_channels x:read y:write
struct Params { numel: u32, c: u32, c0: u32, len: u32, s: u32 }
fn compute(i: u32) -> f32 {
    let n = i / (P.len * P.s);
    let ch = (i / P.s) % P.len;
    let p = i % P.s;
    return x_ld((n * P.c + P.c0 + ch) * P.s + p);
}
