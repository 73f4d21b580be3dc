// Multi-head attention, flash-style: online softmax over key blocks, the Sq×Sk score
// matrix is never stored. One workgroup of 64 threads per (batch, head, query row);
// head dims up to 512 (the VAE's single head), any Sq / Sk, optional causal mask (CLIP).
//   q: Q(b, i, h, d) = q[q_off + b·q_sb + i·q_ss + h·D + d]   (likewise k, v with Sk rows)
//   -> o: [B, Sq, H, D] contiguous (= [B, Sq, H·D]);  o = softmax(scale·QKᵀ [+ causal]) V
const T: u32 = 64u;
const MAXD: u32 = 512u;

//#kernel attention q:read k:read v:read o:write
struct Params { batch: u32, heads: u32, sq: u32, sk: u32, d: u32, q_sb: u32, q_ss: u32,
                k_sb: u32, k_ss: u32, v_sb: u32, v_ss: u32, q_off: u32, k_off: u32,
                v_off: u32, causal: u32, scale: f32 }
var<workgroup> qs: array<f32, MAXD>;
var<workgroup> sc: array<f32, T>;

@compute @workgroup_size(64)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
    let row = wid.x + wid.y * nwg.x;
    if (row >= P.batch * P.heads * P.sq) {
        return;
    }
    let i = row % P.sq;
    let h = (row / P.sq) % P.heads;
    let b = row / (P.sq * P.heads);
    let D = P.d;
    let qb = P.q_off + b * P.q_sb + i * P.q_ss + h * D;
    for (var d = lid; d < D; d = d + T) {
        qs[d] = q_ld(qb + d) * P.scale;
    }
    workgroupBarrier();
    var kend = P.sk;
    if (P.causal != 0u) {
        kend = min(P.sk, i + 1u);
    }
    let npairs = (D + 1u) / 2u;
    var m = -1.0e30;
    var l = 0.0;
    var acc: array<vec2<f32>, 4>;
    for (var j0 = 0u; j0 < kend; j0 = j0 + T) {
        let j = j0 + lid;
        var s = -1.0e30;
        if (j < kend) {
            let kb = P.k_off + b * P.k_sb + j * P.k_ss + h * D;
            var dot = 0.0;
            for (var d = 0u; d < D; d = d + 1u) {
                dot = dot + qs[d] * k_ld(kb + d);
            }
            s = dot;
        }
        sc[lid] = s;
        workgroupBarrier();
        let cnt = min(T, kend - j0);
        var cmax = m;
        for (var t = 0u; t < cnt; t = t + 1u) {
            cmax = max(cmax, sc[t]);
        }
        let corr = exp(m - cmax);
        l = l * corr;
        for (var jj = 0u; jj < 4u; jj = jj + 1u) {
            acc[jj] = acc[jj] * corr;
        }
        for (var t = 0u; t < cnt; t = t + 1u) {
            let p = exp(sc[t] - cmax);
            l = l + p;
            let vb = P.v_off + b * P.v_sb + (j0 + t) * P.v_ss + h * D;
            for (var jj = 0u; jj < 4u; jj = jj + 1u) {
                let pi = lid + T * jj;
                if (pi < npairs) {
                    let d = 2u * pi;
                    var v1 = 0.0;
                    if (d + 1u < D) {
                        v1 = v_ld(vb + d + 1u);
                    }
                    acc[jj] = acc[jj] + p * vec2<f32>(v_ld(vb + d), v1);
                }
            }
        }
        m = cmax;
        workgroupBarrier();
    }
    let ob = ((b * P.sq + i) * P.heads + h) * D;
    for (var jj = 0u; jj < 4u; jj = jj + 1u) {
        let pi = lid + T * jj;
        if (pi < npairs) {
            let d = 2u * pi;
            let r = acc[jj] / l;
            if (d + 1u < D) {
                o_st2(ob + d, r.x, r.y);
            } else {
                o_st(ob + d, r.x);
            }
        }
    }
}
