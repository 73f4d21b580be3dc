// Sampler arithmetic on latents (map kernels, y is the output).
//   lincomb:    a, b, c, d: flat tensors -> y: [n]
//               y[i] = ca·a[oa + i] + cb·b[ob + i] + cc·c[oc + i] + cd·d[od + i]
//               (scheduler steps, classifier-free guidance on the two halves of a batch)
//   vae_sample: mean, logvar: [B, C, h, w], noise: [B, C, h, w] -> y = scale · (mean + exp(logvar / 2) · noise)
//   to_image:   x: [B, 3, H, W] in [-1, 1] -> y: [B, H, W, 3] = clamp(x / 2 + 0.5, 0, 1)  (NHWC, as diffusers)

//#kernel lincomb a:read b:read c:read d:read y:write
struct Params { numel: u32, oa: u32, ob: u32, oc: u32, od: u32, ca: f32, cb: f32, cc: f32, cd: f32 }
fn compute(i: u32) -> f32 {
    return P.ca * a_ld(P.oa + i) + P.cb * b_ld(P.ob + i) + P.cc * c_ld(P.oc + i) + P.cd * d_ld(P.od + i);
}

//#kernel vae_sample mean:read logvar:read noise:read y:write
struct Params { numel: u32, scale: f32 }
fn compute(i: u32) -> f32 {
    return P.scale * (mean_ld(i) + exp(0.5 * logvar_ld(i)) * noise_ld(i));
}

//#kernel to_image x:read y:write
struct Params { numel: u32, h: u32, w: u32 }
fn compute(i: u32) -> f32 {
    let ch = i % 3u;
    let p = i / 3u;
    let hw = P.h * P.w;
    let b = p / hw;
    let s = p % hw;
    return clamp(x_ld((b * 3u + ch) * hw + s) * 0.5 + 0.5, 0.0, 1.0);
}
