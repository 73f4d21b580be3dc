// Embeddings (map kernels, y is the output).
//   token_position: ids: [B, S] u32, tok: [V, C], pos: [P >= S, C] -> y: [B, S, C]
//                   y[b, s, :] = tok[ids[b, s], :] + pos[s, :]  (ids checked < V on the CPU; clamped here)
//   timestep:       t: [B] f32, freqs: [D/2] f32 -> y: [B, D]  sinusoidal embedding as diffusers'
//                   get_timestep_embedding: arg = t · freq_k (one f32 multiply, as torch), then
//                   [sin, cos] or [cos, sin] when flip_sin_to_cos; odd D ends with a zero.
//                   freq_k = exp(-ln(10000) · k / (D/2 - shift)) comes from the CPU (f32, as torch),
//                   since GPU exp() may be off by many ulps.

//#kernel token_position ids:read:u32 tok:read pos:read y:write
struct Params { numel: u32, c: u32, s: u32, vocab: u32 }
fn compute(i: u32) -> f32 {
    let bs = i / P.c;
    let ch = i % P.c;
    let s = bs % P.s;
    let id = min(ids_ldu(bs), P.vocab - 1u);
    return tok_ld(id * P.c + ch) + pos_ld(s * P.c + ch);
}

//#kernel timestep t:read:f32 freqs:read:f32 y:write
struct Params { numel: u32, dim: u32, flip: u32 }
// sin and cos of x with an explicit reduction to [-pi/4, pi/4] (Cody-Waite, 3 parts of pi/2)
// and cephes' polynomials: GPU sin/cos are only specified to ~1e-3 and timestep arguments
// reach 1000.
fn sincos(x: f32) -> vec2<f32> {
    let k = round(x * 0.63661977236758134);
    let r = ((x - k * 1.5703125) - k * 4.837512969970703125e-4) - k * 7.54978995489188216e-8;
    let z = r * r;
    let s = r + r * z * (-1.6666654611e-1 + z * (8.3321608736e-3 + z * -1.9515295891e-4));
    let c = 1.0 - 0.5 * z + z * z * (4.166664568298827e-2 + z * (-1.388731625493765e-3 + z * 2.443315711809948e-5));
    let q = i32(k) & 3;
    if (q == 0) { return vec2<f32>(s, c); }
    if (q == 1) { return vec2<f32>(c, -s); }
    if (q == 2) { return vec2<f32>(-s, -c); }
    return vec2<f32>(-c, s);
}
fn compute(i: u32) -> f32 {
    let b = i / P.dim;
    let j = i % P.dim;
    let half = P.dim / 2u;
    if (j >= 2u * half) {
        return 0.0;
    }
    let sc = sincos(t_ld(b) * freqs_ld(j % half));
    if ((j < half) != (P.flip != 0u)) {
        return sc.x;
    }
    return sc.y;
}
