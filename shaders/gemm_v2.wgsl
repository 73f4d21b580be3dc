// Register-blocked GEMM core v2 (an include: no kernels). C[b, m, n] = sum_k A(b, m, k) · B(b, k, n).
// The including kernel defines everything gemm_tile.wgsl's includer does (gemm_dims, load_a,
// load_a4, load_b, load_b4, b_prep, load_b4p, a_m_fastest, b_k_fastest, gemm_store,
// gemm_tile0) and:
//   const WN: u32                  2: 128 (M) × 128 (N) tiles, 8×8 outputs per thread;
//                                  1: 128 × 64 tiles, 8×4 outputs per thread
//   fn gemm_splits() -> u32        split-K factor S (1: none). With S > 1 workgroup
//                                  (s, b, tile) sums k in [s·kchunk, (s + 1)·kchunk) and writes
//                                  the raw partial sums to y (an f32 scratch [S, batch, M, N]);
//                                  a reduce kernel (gemm_reduce.wgsl) adds them and applies
//                                  the epilogue through gemm_store
//   fn gemm_kchunk() -> u32        K range per split (a multiple of BK2)
// Workgroup: 256 threads (16 × 16), BK2 = 8. Linear workgroup index
// (+ gemm_tile0()) = ((s · batch + b) · tiles_m + tile_m) · tiles_n + tile_n.
// Global -> registers -> shared: per K-tile each thread loads one quad of A (128 × 8) and,
// for WN = 2, one of B (8 × 128; WN = 1: threads 0..127), along the operand's contiguous
// dimension (gemm_quads.wgsl). The quads of tile t + 1 are loaded into registers before the
// FMAs of tile t and stored to the other half of the double-buffered shared tiles after them:
// one barrier per K-tile, global latency hidden behind the FMAs. Shared tiles are f32
// ([2][BK2][BM2] + [2][BK2][BN2] = 16 KiB at WN = 2, WebGPU's default limit), rows of vec4.
// Thread (ty, tx) owns rows 4ty .. 4ty + 3 and 64 + 4ty .. 64 + 4ty + 3 and columns
// 4tx .. 4tx + 3 (and 64 + 4tx .. 64 + 4tx + 3 at WN = 2): per k it reads 2 vec4 of A and WN
// vec4 of B from shared memory (the 16 tx of a row read 16 consecutive vec4: conflict-free;
// the ty are broadcasts) for 8 · 4 · WN FMAs, accumulated as vec4.
//#include gemm_quads.wgsl
const BM2: u32 = 128u;
const BN2: u32 = 64u * WN;
const BK2: u32 = 8u;
// Vec4 per shared tile row.
const RA: u32 = 32u;
const RB: u32 = 16u * WN;
var<workgroup> As2: array<vec4<f32>, 512>; // [2][BK2][RA]: A(4j .. 4j + 3, k) at [buf][k][j]
var<workgroup> Bs2: array<vec4<f32>, 256u * WN>; // [2][BK2][RB]: B(k, 4j .. 4j + 3)

fn v2_part_store(s: u32, bt: u32, m: u32, n: u32, v0: f32, v1: f32, has1: bool) {
    let d = gemm_dims();
    let idx = ((s * d.w + bt) * d.x + m) * d.y + n;
    if (has1) {
        y_st2(idx, v0, v1);
    } else {
        y_st(idx, v0);
    }
}

@compute @workgroup_size(256)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
    let dims = gemm_dims();
    let M = dims.x;
    let N = dims.y;
    let K = dims.z;
    let splits = gemm_splits();
    let tiles_n = (N + BN2 - 1u) / BN2;
    let tiles_m = (M + BM2 - 1u) / BM2;
    let wl = wid.x + wid.y * nwg.x + gemm_tile0();
    if (wl >= tiles_n * tiles_m * dims.w * splits) {
        return;
    }
    let tn = wl % tiles_n;
    let tm = (wl / tiles_n) % tiles_m;
    let sb = wl / (tiles_n * tiles_m);
    let b = sb % dims.w;
    let s = sb / dims.w;
    let kbeg = s * gemm_kchunk();
    let kend = select(K, min(K, kbeg + gemm_kchunk()), splits > 1u);
    let m0 = tm * BM2;
    let n0 = tn * BN2;
    let tx = lid % 16u;
    let ty = lid / 16u;
    let kfast = b_k_fastest();
    let mfast = a_m_fastest();
    // This thread's load quads: A at tile (ma, ka) along k (2 threads per row) or along m
    // (32 threads per k row); B at (kb, nb) likewise.
    let ma = select(lid / 2u, (lid % 32u) * 4u, mfast);
    let ka = select((lid % 2u) * 4u, lid / 32u, mfast);
    let nb = select((lid % RB) * 4u, lid / 2u, kfast);
    let kb = select(lid / RB, (lid % 2u) * 4u, kfast);
    let b_on = lid < 128u * WN;
    let pre = b_prep(n0 + nb);
    var acc: array<vec4<f32>, 8u * WN>;
    var qa = quad_a(b, m0 + ma, kbeg + ka, M, kend, mfast);
    var qb = vec4<f32>(0.0);
    if (b_on) {
        qb = quad_b(b, kbeg + kb, n0 + nb, N, kend, kfast, pre);
    }
    var buf = 0u;
    // Store the quads in registers to shared buffer `buf`.
    {
        if (mfast) {
            As2[ka * RA + ma / 4u] = qa;
        } else {
            for (var j = 0u; j < 4u; j = j + 1u) {
                As2[(ka + j) * RA + ma / 4u][ma % 4u] = qa[j];
            }
        }
        if (b_on) {
            if (kfast) {
                for (var j = 0u; j < 4u; j = j + 1u) {
                    Bs2[(kb + j) * RB + nb / 4u][nb % 4u] = qb[j];
                }
            } else {
                Bs2[kb * RB + nb / 4u] = qb;
            }
        }
    }
    workgroupBarrier();
    for (var k0 = kbeg; k0 < kend; k0 = k0 + BK2) {
        let more = k0 + BK2 < kend;
        if (more) {
            qa = quad_a(b, m0 + ma, k0 + BK2 + ka, M, kend, mfast);
            if (b_on) {
                qb = quad_b(b, k0 + BK2 + kb, n0 + nb, N, kend, kfast, pre);
            }
        }
        let ab = buf * BK2 * RA;
        let bb = buf * BK2 * RB;
        for (var kk = 0u; kk < BK2; kk = kk + 1u) {
            let a0 = As2[ab + kk * RA + ty];
            let a1 = As2[ab + kk * RA + 16u + ty];
            for (var j = 0u; j < WN; j = j + 1u) {
                let bv = Bs2[bb + kk * RB + j * 16u + tx];
                acc[0u * WN + j] = fma(vec4<f32>(a0.x), bv, acc[0u * WN + j]);
                acc[1u * WN + j] = fma(vec4<f32>(a0.y), bv, acc[1u * WN + j]);
                acc[2u * WN + j] = fma(vec4<f32>(a0.z), bv, acc[2u * WN + j]);
                acc[3u * WN + j] = fma(vec4<f32>(a0.w), bv, acc[3u * WN + j]);
                acc[4u * WN + j] = fma(vec4<f32>(a1.x), bv, acc[4u * WN + j]);
                acc[5u * WN + j] = fma(vec4<f32>(a1.y), bv, acc[5u * WN + j]);
                acc[6u * WN + j] = fma(vec4<f32>(a1.z), bv, acc[6u * WN + j]);
                acc[7u * WN + j] = fma(vec4<f32>(a1.w), bv, acc[7u * WN + j]);
            }
        }
        if (more) {
            // The other buffer was last read before the previous barrier: no second barrier.
            let nbuf = 1u - buf;
            let na = nbuf * BK2 * RA;
            let nbb = nbuf * BK2 * RB;
            if (mfast) {
                As2[na + ka * RA + ma / 4u] = qa;
            } else {
                for (var j = 0u; j < 4u; j = j + 1u) {
                    As2[na + (ka + j) * RA + ma / 4u][ma % 4u] = qa[j];
                }
            }
            if (b_on) {
                if (kfast) {
                    for (var j = 0u; j < 4u; j = j + 1u) {
                        Bs2[nbb + (kb + j) * RB + nb / 4u][nb % 4u] = qb[j];
                    }
                } else {
                    Bs2[nbb + kb * RB + nb / 4u] = qb;
                }
            }
        }
        workgroupBarrier();
        buf = 1u - buf;
    }
    for (var r = 0u; r < 8u; r = r + 1u) {
        let m = m0 + (r / 4u) * 64u + ty * 4u + r % 4u;
        if (m < M) {
            for (var j = 0u; j < WN; j = j + 1u) {
                let v = acc[r * WN + j];
                for (var c = 0u; c < 4u; c = c + 2u) {
                    let n = n0 + j * 64u + tx * 4u + c;
                    if (n < N) {
                        if (splits > 1u) {
                            v2_part_store(s, b, m, n, v[c], v[c + 1u], n + 1u < N);
                        } else {
                            gemm_store(b, m, n, v[c], v[c + 1u], n + 1u < N);
                        }
                    }
                }
            }
        }
    }
}
