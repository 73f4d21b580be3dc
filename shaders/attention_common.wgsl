// Shared by shaders/attention.wgsl (v1) and shaders/attention_v2.wgsl (v2): the parameters,
// row addressing, vec4 loads (zeros past D), the causal visibility test and the output store.
//   q: Q(b, i, h, d) = q[q_off + b·q_sb + i·q_ss + h·D + d]   (likewise k, v with Sk rows)
//   -> o: [B, Sq, H, D] contiguous (= [B, Sq, H·D])

struct Params { batch: u32, heads: u32, sq: u32, sk: u32, d: u32, q_sb: u32, q_ss: u32,
                k_sb: u32, k_ss: u32, v_sb: u32, v_ss: u32, q_off: u32, k_off: u32,
                v_off: u32, causal: u32, scale: f32, pairs: u32, tile0: u32 }
// P.tile0: first linear workgroup of this dispatch (large attentions are recorded as several
// dispatches over ranges of query blocks, each within the GPU watchdog's budget).
// P.pairs != 0: D and every offset / stride are even, so pairs (2m, 2m+1) can be read with
// `_ld2` (one u32 for packed f16).

const NEG: f32 = -3.0e38;
const LOG2E: f32 = 1.4426950408889634;

fn q_row(b: u32, h: u32, i: u32) -> u32 { return P.q_off + b * P.q_sb + i * P.q_ss + h * P.d; }
fn k_row(b: u32, h: u32, j: u32) -> u32 { return P.k_off + b * P.k_sb + j * P.k_ss + h * P.d; }
fn v_row(b: u32, h: u32, j: u32) -> u32 { return P.v_off + b * P.v_sb + j * P.v_ss + h * P.d; }

// Elements d0..d0+3 of a row starting at `base` (d0 a multiple of 4), zeros past D.
fn q_ld4(base: u32, d0: u32) -> vec4<f32> {
    var r = vec4<f32>(0.0);
    if (P.pairs != 0u) {
        if (d0 + 2u <= P.d) { r = vec4<f32>(q_ld2(base + d0), 0.0, 0.0); }
        if (d0 + 4u <= P.d) { r = vec4<f32>(r.xy, q_ld2(base + d0 + 2u)); }
    } else {
        for (var c = 0u; c < 4u; c = c + 1u) {
            if (d0 + c < P.d) { r[c] = q_ld(base + d0 + c); }
        }
    }
    return r;
}
fn k_ld4(base: u32, d0: u32) -> vec4<f32> {
    var r = vec4<f32>(0.0);
    if (P.pairs != 0u) {
        if (d0 + 2u <= P.d) { r = vec4<f32>(k_ld2(base + d0), 0.0, 0.0); }
        if (d0 + 4u <= P.d) { r = vec4<f32>(r.xy, k_ld2(base + d0 + 2u)); }
    } else {
        for (var c = 0u; c < 4u; c = c + 1u) {
            if (d0 + c < P.d) { r[c] = k_ld(base + d0 + c); }
        }
    }
    return r;
}
fn v_ld4(base: u32, d0: u32) -> vec4<f32> {
    var r = vec4<f32>(0.0);
    if (P.pairs != 0u) {
        if (d0 + 2u <= P.d) { r = vec4<f32>(v_ld2(base + d0), 0.0, 0.0); }
        if (d0 + 4u <= P.d) { r = vec4<f32>(r.xy, v_ld2(base + d0 + 2u)); }
    } else {
        for (var c = 0u; c < 4u; c = c + 1u) {
            if (d0 + c < P.d) { r[c] = v_ld(base + d0 + c); }
        }
    }
    return r;
}

// Is key j visible from query row i?
fn visible(j: u32, i: u32, kend: u32) -> bool {
    return j < kend && (P.causal == 0u || j <= i);
}

// Writes o[ob + d0 .. ob + d0 + 3] (those < D), in pairs where the pair is whole.
fn store4(ob: u32, d0: u32, x: vec4<f32>) {
    let D = P.d;
    if (d0 + 1u < D) {
        o_st2(ob + d0, x.x, x.y);
    } else if (d0 < D) {
        o_st(ob + d0, x.x);
    }
    if (d0 + 3u < D) {
        o_st2(ob + d0 + 2u, x.z, x.w);
    } else if (d0 + 2u < D) {
        o_st(ob + d0 + 2u, x.z);
    }
}

