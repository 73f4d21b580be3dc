// Data movement (map kernels, y is the output).
//   concat_channels: a: [N, C1, S], b: [N, C2, S] -> y: [N, C1 + C2, S]
//   upsample2x:      x: [NC, H, W]                -> y: [NC, 2H, 2W]   (nearest)
//   transpose:       x: [B, R, C]                 -> y: [B, C, R]      (NCHW <-> NHWC with R = C, C = H·W)
//   slice_channels:  x: [N, C, S]                 -> y: [N, len, S]    y[:, c] = x[:, c0 + c]
//   crop2d:          x: [NC, H, W] -> y: [NC, th, tw] = x[:, oy .. oy + th, ox .. ox + tw]
//   blend_tile:      tile: [B·C, th, tw], y: [B·C, H, W] f32 (read-write): y[.., oy + ty, ox + tx] +=
//                    wy(ty)·wx(tx)·tile[.., ty, tx] with linear ramps over the overlaps with the
//                    neighbouring tiles (weights of overlapping tiles sum to 1: a partition of
//                    unity, so no seams and no normalisation pass)

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

//#kernel crop2d x:read y:write
struct Params { numel: u32, h: u32, w: u32, th: u32, tw: u32, oy: u32, ox: u32 }
fn compute(i: u32) -> f32 {
    let tx = i % P.tw;
    let ty = (i / P.tw) % P.th;
    let nc = i / (P.tw * P.th);
    return x_ld((nc * P.h + P.oy + ty) * P.w + P.ox + tx);
}

//#kernel blend_tile tile:read y:write:f32
struct Params { numel: u32, th: u32, tw: u32, h: u32, w: u32, oy: u32, ox: u32,
                ramp_t: u32, ramp_b: u32, ramp_l: u32, ramp_r: u32 }
fn ramp(t: u32, len: u32, lo: u32, hi: u32) -> f32 {
    var v = 1.0;
    if (t < lo) {
        v = (f32(t) + 0.5) / f32(lo);
    }
    if (t + hi >= len) {
        v = min(v, (f32(len - t) - 0.5) / f32(hi));
    }
    return v;
}
@compute @workgroup_size(256)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = gid.x + gid.y * nwg.x * 256u;
    if (i >= P.numel) {
        return;
    }
    let tx = i % P.tw;
    let ty = (i / P.tw) % P.th;
    let bc = i / (P.tw * P.th);
    let wgt = ramp(ty, P.th, P.ramp_t, P.ramp_b) * ramp(tx, P.tw, P.ramp_l, P.ramp_r);
    let idx = (bc * P.h + P.oy + ty) * P.w + P.ox + tx;
    y_st(idx, y_ld(idx) + wgt * tile_ld(i));
}
