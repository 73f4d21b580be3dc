// The body of every attention_v2 kernel (shaders/attention_v2.wgsl, see its header), after
// the kernel's constants DV, L, RQ, WG, BK.
const NC: u32 = DV / L;      // vec4 columns per lane
const ROWS: u32 = WG / L;    // row slots per workgroup
const BQ: u32 = ROWS * RQ;   // query rows per workgroup
//#if f16
var<workgroup> ks: array<vec4<f16>, BK * DV>; // [BK][DV]
var<workgroup> vs: array<vec4<f16>, BK * DV>;
//#else
var<workgroup> ks: array<vec4<f32>, BK * DV>;
var<workgroup> vs: array<vec4<f32>, BK * DV>;
//#endif
// Lane partial dots, [BQ][BK][L] (row-local index slot + ROWS·r); unused (1 element) when L = 1.
var<workgroup> red: array<f32, BQ * BK * L * (1u - 1u / L) + 1u>;

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
    let nqt = (P.sq + BQ - 1u) / BQ;
    let wl = wid.x + wid.y * nwg.x + P.tile0;
    if (wl >= P.batch * P.heads * nqt) {
        return;
    }
    let q0 = (wl % nqt) * BQ;
    let h = (wl / nqt) % P.heads;
    let b = wl / (nqt * P.heads);
    let lane = lid % L;
    let slot = lid / L;
    let D = P.d;
    let nd4 = (D + 3u) / 4u;
    let qscale = P.scale * LOG2E;

    // Q slices (scaled) and output accumulators of rows q0 + slot + ROWS·r: [r·NC + c] holds
    // vec4 column lane + L·c.
    var qr: array<vec4<f32>, RQ * NC>;
    var acc: array<vec4<f32>, RQ * NC>;
    var m: array<f32, RQ>;
    var l: array<f32, RQ>;
    for (var r = 0u; r < RQ; r = r + 1u) {
        let i = q0 + slot + ROWS * r;
        m[r] = NEG;
        l[r] = 0.0;
        for (var c = 0u; c < NC; c = c + 1u) {
            let g = lane + L * c;
            var x = vec4<f32>(0.0);
            if (i < P.sq && g < nd4) {
                x = q_ld4(q_row(b, h, i), 4u * g) * qscale;
            }
            qr[r * NC + c] = x;
            acc[r * NC + c] = vec4<f32>(0.0);
        }
    }
    var kend = P.sk;
    if (P.causal != 0u) {
        kend = min(P.sk, q0 + BQ);
    }
    var s: array<f32, RQ * BK>; // [r·BK + j]: scores, then P of the block
    for (var j0 = 0u; j0 < kend; j0 = j0 + BK) {
        workgroupBarrier(); // the previous block is done with ks / vs / red
        for (var e = lid; e < BK * DV; e = e + WG) {
            let jj = e / DV;
            let g = e % DV;
            var kx = vec4<f32>(0.0);
            var vx = vec4<f32>(0.0);
            if (j0 + jj < kend && g < nd4) {
                kx = k_ld4(k_row(b, h, j0 + jj), 4u * g);
                vx = v_ld4(v_row(b, h, j0 + jj), 4u * g);
            }
//#if f16
            ks[e] = vec4<f16>(kx);
            vs[e] = vec4<f16>(vx);
//#else
            ks[e] = kx;
            vs[e] = vx;
//#endif
        }
        workgroupBarrier();
        for (var j = 0u; j < BK; j = j + 1u) {
            // vec4 partial dots: four independent FMA chains per row instead of one. Zeroed
            // explicitly: with `var d: …;` alone (zero per iteration by the WGSL spec) and
            // `fma`, Chromium + SwiftShader got wrong scores (every case with Sk > 1 failed,
            // Sk = 1 passed) while lavapipe passed.
            var d: array<vec4<f32>, RQ>;
            for (var r = 0u; r < RQ; r = r + 1u) {
                d[r] = vec4<f32>(0.0);
            }
            for (var c = 0u; c < NC; c = c + 1u) {
                let kx = vec4<f32>(ks[j * DV + lane + L * c]);
                for (var r = 0u; r < RQ; r = r + 1u) {
                    d[r] = d[r] + qr[r * NC + c] * kx;
                }
            }
            for (var r = 0u; r < RQ; r = r + 1u) {
                s[r * BK + j] = (d[r].x + d[r].y) + (d[r].z + d[r].w);
            }
        }
        if (L > 1u) {
            for (var r = 0u; r < RQ; r = r + 1u) {
                for (var j = 0u; j < BK; j = j + 1u) {
                    red[((slot + ROWS * r) * BK + j) * L + lane] = s[r * BK + j];
                }
            }
            workgroupBarrier();
            for (var r = 0u; r < RQ; r = r + 1u) {
                for (var j = 0u; j < BK; j = j + 1u) {
                    let base = ((slot + ROWS * r) * BK + j) * L;
                    var t = 0.0;
                    for (var x = 0u; x < L; x = x + 1u) {
                        t = t + red[base + x];
                    }
                    s[r * BK + j] = t;
                }
            }
        }
        // Online softmax per row; s becomes P (0 where masked).
        for (var r = 0u; r < RQ; r = r + 1u) {
            let i = q0 + slot + ROWS * r;
            var mx = m[r];
            for (var j = 0u; j < BK; j = j + 1u) {
                if (visible(j0 + j, i, kend)) {
                    mx = max(mx, s[r * BK + j]);
                }
            }
            let corr = exp2(m[r] - mx);
            m[r] = mx;
            var sum = 0.0;
            for (var j = 0u; j < BK; j = j + 1u) {
                let p = select(0.0, exp2(s[r * BK + j] - mx), visible(j0 + j, i, kend));
                s[r * BK + j] = p;
                sum = sum + p;
            }
            l[r] = l[r] * corr + sum;
            for (var c = 0u; c < NC; c = c + 1u) {
                acc[r * NC + c] = acc[r * NC + c] * corr;
            }
        }
        // acc += P · V
        for (var j = 0u; j < BK; j = j + 1u) {
            for (var c = 0u; c < NC; c = c + 1u) {
                let vx = vec4<f32>(vs[j * DV + lane + L * c]);
                for (var r = 0u; r < RQ; r = r + 1u) {
                    acc[r * NC + c] = acc[r * NC + c] + s[r * BK + j] * vx;
                }
            }
        }
    }
    for (var r = 0u; r < RQ; r = r + 1u) {
        let i = q0 + slot + ROWS * r;
        if (i < P.sq) {
            let inv = 1.0 / l[r];
            let ob = ((b * P.sq + i) * P.heads + h) * D;
            for (var c = 0u; c < NC; c = c + 1u) {
                let g = lane + L * c;
                if (g < nd4) {
                    store4(ob, 4u * g, acc[r * NC + c] * inv);
                }
            }
        }
    }
}
