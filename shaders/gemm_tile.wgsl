// Tiled GEMM core (an include: no kernels). C[b, m, n] = sum_k A(b, m, k) · B(b, k, n).
// The including file defines:
//   fn gemm_dims() -> vec4<u32>           (M, N, K, batch)
//   fn load_a(b, m, k) -> f32, fn load_b(b, k, n) -> f32   (in-range indices only)
//   fn load_a4(b, m, k) -> vec4<f32>      A(b, m, k .. k + 3), or A(b, m .. m + 3, k) when
//                                         a_m_fastest(); all four in range (one 4-wide load
//                                         where that run is contiguous in memory)
//   fn load_b4(b, k, n) -> vec4<f32>      B(b, k .. k + 3, n) when b_k_fastest(), else
//                                         B(b, k, n .. n + 3); all four in range
//   fn b_prep(n) -> vec4<i32>             per-column index math for the B quads starting at
//                                         column n, done once outside the K loop
//   fn load_b4p(b, k, n, pre) -> vec4<f32> load_b4 along n given pre = b_prep(n)
//   fn b_k_fastest() -> bool              (B stored [N, K]: its quads run along k, else along n)
//   fn a_m_fastest() -> bool              (A stored [K, M]: its quads run along m, else along k)
//   fn gemm_store(b, m, n, v0, v1, has1)  (writes C[b,m,n] = v0 and, if has1, C[b,m,n+1] = v1)
//   fn gemm_tile0() -> u32                first linear workgroup index of this dispatch (a large
//                                         GEMM is recorded as several dispatches over tile ranges)
// Workgroup: 256 threads, tile 64 (M) × 64 (N) × 16 (K), 4×4 outputs per thread.
// Linear workgroup index = (b, tile_m, tile_n).
// Global -> shared: per K-tile each thread loads one quad (4 consecutive elements) of A and
// one of B along their contiguous dimension, so each thread reads consecutive addresses and
// consecutive threads read consecutive quads (load_a4 / load_b4: one `_ldv4`, i.e. 4 scalar
// loads for f32 and native f16, 2 u32 loads for packed f16, 3 when the quad starts on an odd
// element); quads crossing M, N or K fall back to guarded scalar loads.
// f32 tiles (f32 and packed-f16 storage): [BK][64] f32, 8 KiB, 8-column blocks XOR-swizzled
// by k / 4 (`tix`) so that the quad stores along k (4 threads per tile row) hit 32 banks.
// Native f16 storage (`//#if f16`): the tiles hold f16, four consecutive k per vec4<f16>
// (4 KiB in all; a quad along k is one vec4 store, a quad along m / n four component
// stores), and each 4-term piece of the inner product is a dot(vec4<f16>, vec4<f16>)
// widened to the f32 accumulator.
//#include gemm_quads.wgsl
const BM: u32 = 64u;
const BN: u32 = 64u;
const BK: u32 = 16u;
//#if f16
var<workgroup> As: array<vec4<f16>, 256>; // [BK / 4][BM]: A(m, 4q .. 4q + 3)
var<workgroup> Bs: array<vec4<f16>, 256>; // [BK / 4][BN]: B(4q .. 4q + 3, n)
//#else
var<workgroup> As: array<f32, 1024>; // [BK][BM], swizzled: A(m, k) at tix(k, m)
var<workgroup> Bs: array<f32, 1024>; // [BK][BN], swizzled: B(k, n) at tix(k, n)
// Index of element (k, i) of a [BK][64] f32 tile: the 8-column blocks of row k are XOR-ed
// with k / 4, so groups of 4 columns stay contiguous (16-byte aligned) while the 4 threads
// storing the 4 k-quads of one row land in different banks.
fn tix(k: u32, i: u32) -> u32 { return k * 64u + (i ^ ((k & 12u) << 1u)); }
//#endif
@compute @workgroup_size(256)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
    let dims = gemm_dims();
    let M = dims.x;
    let N = dims.y;
    let K = dims.z;
    let tiles_n = (N + BN - 1u) / BN;
    let tiles_m = (M + BM - 1u) / BM;
    let wl = wid.x + wid.y * nwg.x + gemm_tile0();
    if (wl >= tiles_n * tiles_m * dims.w) {
        return;
    }
    let tn = wl % tiles_n;
    let tm = (wl / tiles_n) % tiles_m;
    let b = wl / (tiles_n * tiles_m);
    let m0 = tm * BM;
    let n0 = tn * BN;
    let tx = lid % 16u;
    let ty = lid / 16u;
    let kfast = b_k_fastest();
    let mfast = a_m_fastest();
    var acc: array<f32, 16>;
    // This thread's quads: A at tile (ma, ka), running along k (k-quads: 4 threads per
    // tile row) or along m (m-quads: 16 threads per tile row); B at (kb, nb) likewise.
    let ma = select(lid / 4u, (lid % 16u) * 4u, mfast);
    let ka = select((lid % 4u) * 4u, lid / 16u, mfast);
    let nb = select((lid % 16u) * 4u, lid / 4u, kfast);
    let kb = select(lid / 16u, (lid % 4u) * 4u, kfast);
    // Quads along m / n are stored element (s + rot) & 3 at step s, so that each store
    // instruction of a 32-thread wave hits distinct banks (the 4 threads whose quads share
    // banks, 32 floats or 16 vec4<f16> apart, start at different elements).
//#if f16
    let rot16 = (lid >> 2u) & 3u;
//#else
    let rot32 = (lid >> 3u) & 3u;
//#endif
    let pre = b_prep(n0 + nb);
    for (var k0 = 0u; k0 < K; k0 = k0 + BK) {
        let qa = quad_a(b, m0 + ma, k0 + ka, M, K, mfast);
        let qb = quad_b(b, k0 + kb, n0 + nb, N, K, kfast, pre);
//#if f16
        {
            let ia = (ka / 4u) * BM + ma;
            if (mfast) {
                let c = ka % 4u;
                for (var s = 0u; s < 4u; s = s + 1u) {
                    let j = (s + rot16) & 3u;
                    As[ia + j][c] = f16(qa[j]);
                }
            } else {
                As[ia] = vec4<f16>(qa);
            }
            let ib = (kb / 4u) * BN + nb;
            if (kfast) {
                Bs[ib] = vec4<f16>(qb);
            } else {
                let c = kb % 4u;
                for (var s = 0u; s < 4u; s = s + 1u) {
                    let j = (s + rot16) & 3u;
                    Bs[ib + j][c] = f16(qb[j]);
                }
            }
        }
        workgroupBarrier();
        for (var kq = 0u; kq < BK / 4u; kq = kq + 1u) {
            let b0 = Bs[kq * BN + tx * 4u];
            let b1 = Bs[kq * BN + tx * 4u + 1u];
            let b2 = Bs[kq * BN + tx * 4u + 2u];
            let b3 = Bs[kq * BN + tx * 4u + 3u];
            for (var r = 0u; r < 4u; r = r + 1u) {
                let a = As[kq * BM + ty * 4u + r];
                acc[r * 4u + 0u] = acc[r * 4u + 0u] + f32(dot(a, b0));
                acc[r * 4u + 1u] = acc[r * 4u + 1u] + f32(dot(a, b1));
                acc[r * 4u + 2u] = acc[r * 4u + 2u] + f32(dot(a, b2));
                acc[r * 4u + 3u] = acc[r * 4u + 3u] + f32(dot(a, b3));
            }
        }
//#else
        if (mfast) {
            let i = tix(ka, ma);
            for (var s = 0u; s < 4u; s = s + 1u) {
                let j = (s + rot32) & 3u;
                As[i + j] = qa[j];
            }
        } else {
            As[tix(ka, ma)] = qa.x;
            As[tix(ka + 1u, ma)] = qa.y;
            As[tix(ka + 2u, ma)] = qa.z;
            As[tix(ka + 3u, ma)] = qa.w;
        }
        if (kfast) {
            Bs[tix(kb, nb)] = qb.x;
            Bs[tix(kb + 1u, nb)] = qb.y;
            Bs[tix(kb + 2u, nb)] = qb.z;
            Bs[tix(kb + 3u, nb)] = qb.w;
        } else {
            let i = tix(kb, nb);
            for (var s = 0u; s < 4u; s = s + 1u) {
                let j = (s + rot32) & 3u;
                Bs[i + j] = qb[j];
            }
        }
        workgroupBarrier();
        for (var kk = 0u; kk < BK; kk = kk + 1u) {
            let ai = tix(kk, ty * 4u);
            let bi = tix(kk, tx * 4u);
            let a = vec4<f32>(As[ai], As[ai + 1u], As[ai + 2u], As[ai + 3u]);
            let bv = vec4<f32>(Bs[bi], Bs[bi + 1u], Bs[bi + 2u], Bs[bi + 3u]);
            for (var r = 0u; r < 4u; r = r + 1u) {
                acc[r * 4u + 0u] = acc[r * 4u + 0u] + a[r] * bv.x;
                acc[r * 4u + 1u] = acc[r * 4u + 1u] + a[r] * bv.y;
                acc[r * 4u + 2u] = acc[r * 4u + 2u] + a[r] * bv.z;
                acc[r * 4u + 3u] = acc[r * 4u + 3u] + a[r] * bv.w;
            }
        }
//#endif
        workgroupBarrier();
    }
    for (var r = 0u; r < 4u; r = r + 1u) {
        let m = m0 + ty * 4u + r;
        if (m < M) {
            for (var c = 0u; c < 4u; c = c + 2u) {
                let n = n0 + tx * 4u + c;
                if (n < N) {
                    gemm_store(b, m, n, acc[r * 4u + c], acc[r * 4u + c + 1u], n + 1u < N);
                }
            }
        }
    }
}
