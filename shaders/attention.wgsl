// Multi-head attention, FlashAttention-2 style: a workgroup owns a block of query rows of one
// (batch, head), walks the keys in blocks staged in workgroup memory, computes the score tile,
// keeps a running max / sum per query row (online softmax, base-2 exponentials with log2(e)
// folded into the Q scale), rescales its f32 output accumulators and adds P·V. The Sq×Sk
// score matrix never leaves the workgroup. Any Sq / Sk >= 1, head dims 1..512, optional causal
// mask (key j > query i masked; key blocks past the query block's last row are skipped).
//   q: Q(b, i, h, d) = q[q_off + b·q_sb + i·q_ss + h·D + d]   (likewise k, v with Sk rows)
//   -> o: [B, Sq, H, D] contiguous (= [B, Sq, H·D]);  o = softmax(scale·QKᵀ [+ causal]) V
// Workgroups: linear index = (b, h, query block), query block fastest (blocks of one head
// share K/V in cache); rebuilt as wid.x + wid.y·nwg.x, so more than 65,535 is fine.
// 256 invocations per workgroup, at most 16 KiB of workgroup storage (WebGPU defaults).
//
// Two kernels, picked by head dim on the Rust side (src/ops/attention.rs):
//
// `attention` (D <= 80: SD-1.5 heads 40 / 64 / 80, CLIP 64, small test dims):
//   Bq = 64 query rows, Bk = 16 keys, 4 threads per query row. The scaled Q row lives in
//   registers (20 vec4); K and V blocks are loaded once per block, coalesced, as vec4 (two
//   `_ld2` when D is even), into workgroup memory: K [16][21 vec4] (odd stride: no bank
//   conflicts), V [16][20 vec4], P [64][16], row-max lanes [64][4].
//   Storage 5376 + 5120 + 4096 + 1024 = 15616 bytes (fixed, whatever D <= 80).
//   A thread scores keys t, t+4, t+8, t+12 of its row (full-D dots from registers) and owns
//   output columns 4g..4g+3 for g = t, t+4, .. (5 vec4 accumulators). 4 barriers per block.
//
// `attention_wide` (80 < D <= 512: SD-1.5 head 160, the VAE's single head of 512):
//   Bq = 32 query rows, Bk = 32 keys, 16×16 threads; each thread a 2×2 tile of scores
//   (rows ty, ty+16; keys tx, tx+16) and rows ty, ty+16 × columns 4tx..4tx+3 of every
//   64-column chunk of the output (up to 2×8 vec4 accumulators). The score tile is summed
//   over D in chunks of 32: per chunk the Q chunk (scaled) and K chunk go to workgroup memory
//   [32][9 vec4] each; then P·V in chunks of 64 columns, the V chunk [32][16 vec4] reusing
//   the Q/K space. Storage: Q/K/V space 9216 + P [32][32] 4096 + row lanes [32][16] 2048 =
//   15360 bytes. Barriers per key block: 2·ceil(D/32) + 2·ceil(D/64) (D = 512: 48).
//
// Global-memory traffic per (batch, head), |X| = rows × D elements of X:
//   old kernel (one workgroup per query row): K and V read Sq times each (Sq·|K| + Sq·|V|).
//   `attention`:      K and V read ceil(Sq/64) times each, Q once, O written once.
//   `attention_wide`: K and V read ceil(Sq/32) times each, Q ceil(Sk/32) times (the score
//                     chunks cannot keep a 32×512 Q tile resident in 16 KiB), O written once.
//   With the causal mask, key blocks past a query block's last row are not read at all
//   (about half of the K/V traffic and work for Sq = Sk).

//#include attention_common.wgsl

//#kernel attention q:read k:read v:read o:write
// D <= 80. Thread lid: query row r = lid / 4 of the block, lane t = lid % 4.
const R_BQ: u32 = 64u;  // query rows per workgroup
const R_BK: u32 = 16u;  // keys per block
const R_DV: u32 = 20u;  // max D / 4 (vec4 per row)
const R_KST: u32 = 21u; // K row stride in vec4 (odd: lanes reading different keys hit different banks)
const R_NE: u32 = 5u;   // output vec4 per thread = R_DV / 4
var<workgroup> ks: array<vec4<f32>, 336>; // [R_BK][R_KST]
var<workgroup> vs: array<vec4<f32>, 320>; // [R_BK][R_DV]
var<workgroup> ps: array<vec4<f32>, 256>; // [R_BQ][R_BK / 4]: P of the block
var<workgroup> red: array<vec4<f32>, 64>; // [R_BQ] × 4 lanes: row max, then row sum

@compute @workgroup_size(256)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
    let nqt = (P.sq + R_BQ - 1u) / R_BQ;
    let wl = wid.x + wid.y * nwg.x + P.tile0;
    if (wl >= P.batch * P.heads * nqt) {
        return;
    }
    let q0 = (wl % nqt) * R_BQ;
    let h = (wl / nqt) % P.heads;
    let b = wl / (nqt * P.heads);
    let r = lid / 4u;
    let t = lid % 4u;
    let i = q0 + r;
    let D = P.d;
    let nd4 = (D + 3u) / 4u;

    // This row of Q, scaled by scale·log2(e), in registers.
    var qr: array<vec4<f32>, R_DV>;
    if (i < P.sq) {
        let qb = q_row(b, h, i);
        let qscale = P.scale * LOG2E;
        for (var dv = 0u; dv < R_DV; dv = dv + 1u) {
            if (dv < nd4) {
                qr[dv] = q_ld4(qb, 4u * dv) * qscale;
            }
        }
    }
    var acc: array<vec4<f32>, R_NE>;
    var m = NEG;
    var l = 0.0; // this lane's share of the row sum (keys t, t+4, ..), same scale as m
    var kend = P.sk;
    if (P.causal != 0u) {
        kend = min(P.sk, q0 + R_BQ);
    }
    let nload = R_BK * nd4;
    for (var j0 = 0u; j0 < kend; j0 = j0 + R_BK) {
        workgroupBarrier(); // previous block's P·V is done with ks / vs / ps
        for (var e = lid; e < nload; e = e + 256u) {
            let jj = e / nd4;
            let dv = e % nd4;
            let key = j0 + jj;
            var kx = vec4<f32>(0.0);
            var vx = vec4<f32>(0.0);
            if (key < kend) {
                kx = k_ld4(k_row(b, h, key), 4u * dv);
                vx = v_ld4(v_row(b, h, key), 4u * dv);
            }
            ks[jj * R_KST + dv] = kx;
            vs[jj * R_DV + dv] = vx;
        }
        workgroupBarrier();
        // Scores of keys j0 + t + 4c, c = 0..3.
        var s = vec4<f32>(0.0);
        for (var dv = 0u; dv < R_DV; dv = dv + 1u) {
            if (dv < nd4) {
                let qv = qr[dv];
                s.x = s.x + dot(qv, ks[t * R_KST + dv]);
                s.y = s.y + dot(qv, ks[(t + 4u) * R_KST + dv]);
                s.z = s.z + dot(qv, ks[(t + 8u) * R_KST + dv]);
                s.w = s.w + dot(qv, ks[(t + 12u) * R_KST + dv]);
            }
        }
        var vis = vec4<bool>(false);
        for (var c = 0u; c < 4u; c = c + 1u) {
            vis[c] = visible(j0 + t + 4u * c, i, kend);
        }
        s = select(vec4<f32>(NEG), s, vis);
        red[r][t] = max(max(s.x, s.y), max(s.z, s.w));
        workgroupBarrier();
        let rm = red[r];
        let mnew = max(m, max(max(rm.x, rm.y), max(rm.z, rm.w)));
        let corr = exp2(m - mnew);
        m = mnew;
        let p = select(vec4<f32>(0.0), exp2(s - vec4<f32>(mnew)), vis);
        l = l * corr + (p.x + p.y + p.z + p.w);
        // key t + 4c is element t of vec4 c of the row
        for (var c = 0u; c < 4u; c = c + 1u) {
            ps[r * 4u + c][t] = p[c];
        }
        for (var e = 0u; e < R_NE; e = e + 1u) {
            acc[e] = acc[e] * corr;
        }
        workgroupBarrier();
        // acc[e] += Σ_j P[r, j] · V[j, 4g..4g+3], g = t + 4e
        for (var j4 = 0u; j4 < R_BK / 4u; j4 = j4 + 1u) {
            let pv = ps[r * 4u + j4];
            for (var jj = 0u; jj < 4u; jj = jj + 1u) {
                let pj = pv[jj];
                let vrow = (4u * j4 + jj) * R_DV;
                for (var e = 0u; e < R_NE; e = e + 1u) {
                    let g = t + 4u * e;
                    if (g < nd4) {
                        acc[e] = acc[e] + pj * vs[vrow + g];
                    }
                }
            }
        }
    }
    // Row sum over the 4 lanes (red was last read before the last P·V barrier).
    red[r][t] = l;
    workgroupBarrier();
    if (i < P.sq) {
        let rl = red[r];
        let inv = 1.0 / (rl.x + rl.y + rl.z + rl.w);
        let ob = ((b * P.sq + i) * P.heads + h) * D;
        for (var e = 0u; e < R_NE; e = e + 1u) {
            let g = t + 4u * e;
            if (g < nd4) {
                store4(ob, 4u * g, acc[e] * inv);
            }
        }
    }
}

//#kernel attention_wide q:read k:read v:read o:write
// 80 < D <= 512. Thread lid: tx = lid % 16, ty = lid / 16.
const W_BQ: u32 = 32u;  // query rows per workgroup
const W_BK: u32 = 32u;  // keys per block
const W_DC: u32 = 32u;  // head-dim chunk of the score tile
const W_ST: u32 = 9u;   // Q / K chunk row stride in vec4 (odd)
const W_KOFF: u32 = 288u; // K chunk offset in sm = W_BQ · W_ST
const W_NS: u32 = 16u;  // max score chunks = 512 / W_DC
const W_NV: u32 = 8u;   // max output chunks of 64 columns = 512 / 64
var<workgroup> sm: array<vec4<f32>, 576>; // scores: Q chunk [32][9], K chunk [32][9]; P·V: V chunk [32][16]
var<workgroup> ps: array<vec4<f32>, 256>; // [W_BQ][W_BK / 4]: P of the block
var<workgroup> red: array<vec4<f32>, 128>; // [W_BQ] × 16 lanes: row max, then row sum

@compute @workgroup_size(256)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
    let nqt = (P.sq + W_BQ - 1u) / W_BQ;
    let wl = wid.x + wid.y * nwg.x + P.tile0;
    if (wl >= P.batch * P.heads * nqt) {
        return;
    }
    let q0 = (wl % nqt) * W_BQ;
    let h = (wl / nqt) % P.heads;
    let b = wl / (nqt * P.heads);
    let tx = lid % 16u;
    let ty = lid / 16u;
    let D = P.d;
    let qscale = P.scale * LOG2E;
    // Loader role for a 32-row × 8-vec4 chunk: row lr, vec4 lc.
    let lr = lid / 8u;
    let lc = lid % 8u;
    let i0 = q0 + ty;
    let i1 = q0 + ty + 16u;

    var acc: array<vec4<f32>, 16>; // [a · W_NV + chunk]: rows ty + 16a, columns chunk·64 + 4tx..
    var m = vec2<f32>(NEG);
    var l = vec2<f32>(0.0); // this lane's share of the row sums (keys tx, tx+16)
    var kend = P.sk;
    if (P.causal != 0u) {
        kend = min(P.sk, q0 + W_BQ);
    }
    for (var j0 = 0u; j0 < kend; j0 = j0 + W_BK) {
        // s = (s00, s01, s10, s11): rows ty + 16a, keys j0 + tx + 16c
        var s = vec4<f32>(0.0);
        for (var ch = 0u; ch < W_NS; ch = ch + 1u) {
            if (ch * W_DC >= D) {
                break;
            }
            workgroupBarrier(); // sm free (previous chunk / previous block's P·V)
            let d0 = ch * W_DC + 4u * lc;
            var qx = vec4<f32>(0.0);
            if (q0 + lr < P.sq) {
                qx = q_ld4(q_row(b, h, q0 + lr), d0) * qscale;
            }
            sm[lr * W_ST + lc] = qx;
            var kx = vec4<f32>(0.0);
            if (j0 + lr < kend) {
                kx = k_ld4(k_row(b, h, j0 + lr), d0);
            }
            sm[W_KOFF + lr * W_ST + lc] = kx;
            workgroupBarrier();
            for (var dv = 0u; dv < W_DC / 4u; dv = dv + 1u) {
                let qa = sm[ty * W_ST + dv];
                let qb = sm[(ty + 16u) * W_ST + dv];
                let ka = sm[W_KOFF + tx * W_ST + dv];
                let kb = sm[W_KOFF + (tx + 16u) * W_ST + dv];
                s = s + vec4<f32>(dot(qa, ka), dot(qa, kb), dot(qb, ka), dot(qb, kb));
            }
        }
        let ja = j0 + tx;
        let jb = j0 + tx + 16u;
        let vis = vec4<bool>(visible(ja, i0, kend), visible(jb, i0, kend), visible(ja, i1, kend), visible(jb, i1, kend));
        s = select(vec4<f32>(NEG), s, vis);
        red[ty * 4u + tx / 4u][tx % 4u] = max(s.x, s.y);
        red[(ty + 16u) * 4u + tx / 4u][tx % 4u] = max(s.z, s.w);
        workgroupBarrier(); // also: every thread is done reading the Q / K chunks in sm
        var ra = max(red[ty * 4u], red[ty * 4u + 1u]);
        ra = max(ra, max(red[ty * 4u + 2u], red[ty * 4u + 3u]));
        var rb = max(red[(ty + 16u) * 4u], red[(ty + 16u) * 4u + 1u]);
        rb = max(rb, max(red[(ty + 16u) * 4u + 2u], red[(ty + 16u) * 4u + 3u]));
        let mnew = max(m, vec2<f32>(max(max(ra.x, ra.y), max(ra.z, ra.w)), max(max(rb.x, rb.y), max(rb.z, rb.w))));
        let corr = exp2(m - mnew);
        m = mnew;
        let p = select(vec4<f32>(0.0), exp2(s - vec4<f32>(mnew.x, mnew.x, mnew.y, mnew.y)), vis);
        l = l * corr + vec2<f32>(p.x + p.y, p.z + p.w);
        // key tx + 16c is element tx % 4 of vec4 (tx + 16c) / 4 of the row
        ps[ty * 8u + tx / 4u][tx % 4u] = p.x;
        ps[ty * 8u + 4u + tx / 4u][tx % 4u] = p.y;
        ps[(ty + 16u) * 8u + tx / 4u][tx % 4u] = p.z;
        ps[(ty + 16u) * 8u + 4u + tx / 4u][tx % 4u] = p.w;
        for (var e = 0u; e < W_NV; e = e + 1u) {
            acc[e] = acc[e] * corr.x;
            acc[W_NV + e] = acc[W_NV + e] * corr.y;
        }
        // P·V in chunks of 64 output columns; thread columns 4tx..4tx+3 of the chunk.
        for (var vc = 0u; vc < W_NV; vc = vc + 1u) {
            if (vc * 64u >= D) {
                break;
            }
            if (vc > 0u) {
                workgroupBarrier(); // previous V chunk consumed
            }
            for (var rep = 0u; rep < 2u; rep = rep + 1u) {
                let e = lid + 256u * rep;
                let jj = e / 16u;
                let g = e % 16u;
                var vx = vec4<f32>(0.0);
                if (j0 + jj < kend) {
                    vx = v_ld4(v_row(b, h, j0 + jj), vc * 64u + 4u * g);
                }
                sm[jj * 16u + g] = vx;
            }
            workgroupBarrier();
            if (vc * 64u + 4u * tx < D) {
                var a0 = acc[vc];
                var a1 = acc[W_NV + vc];
                for (var j4 = 0u; j4 < W_BK / 4u; j4 = j4 + 1u) {
                    let pa = ps[ty * 8u + j4];
                    let pb = ps[(ty + 16u) * 8u + j4];
                    for (var jj = 0u; jj < 4u; jj = jj + 1u) {
                        let vv = sm[(4u * j4 + jj) * 16u + tx];
                        a0 = a0 + pa[jj] * vv;
                        a1 = a1 + pb[jj] * vv;
                    }
                }
                acc[vc] = a0;
                acc[W_NV + vc] = a1;
            }
        }
    }
    // Row sums over the 16 lanes (red was last read before the P·V barriers).
    red[ty * 4u + tx / 4u][tx % 4u] = l.x;
    red[(ty + 16u) * 4u + tx / 4u][tx % 4u] = l.y;
    workgroupBarrier();
    let sa = red[ty * 4u] + red[ty * 4u + 1u] + red[ty * 4u + 2u] + red[ty * 4u + 3u];
    let sb = red[(ty + 16u) * 4u] + red[(ty + 16u) * 4u + 1u] + red[(ty + 16u) * 4u + 2u] + red[(ty + 16u) * 4u + 3u];
    let inv = vec2<f32>(1.0 / (sa.x + sa.y + sa.z + sa.w), 1.0 / (sb.x + sb.y + sb.z + sb.w));
    for (var vc = 0u; vc < W_NV; vc = vc + 1u) {
        let d0 = vc * 64u + 4u * tx;
        if (d0 < D) {
            if (i0 < P.sq) {
                store4(((b * P.sq + i0) * P.heads + h) * D, d0, acc[vc] * inv.x);
            }
            if (i1 < P.sq) {
                store4(((b * P.sq + i1) * P.heads + h) * D, d0, acc[W_NV + vc] * inv.y);
            }
        }
    }
}
