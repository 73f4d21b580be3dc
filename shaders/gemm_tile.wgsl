// Tiled GEMM core (an include: no kernels). C[b, m, n] = sum_k A(b, m, k) · B(b, k, n).
// The including file defines:
//   fn gemm_dims() -> vec4<u32>           (M, N, K, batch)
//   fn load_a(b, m, k) -> f32, fn load_b(b, k, n) -> f32   (in-range indices only)
//   fn b_k_fastest() -> bool              (B tile loads walk k first: B stored [N, K])
//   fn a_m_fastest() -> bool              (A tile loads walk m first: A stored [K, M])
//   fn gemm_store(b, m, n, v0, v1, has1)  (writes C[b,m,n] = v0 and, if has1, C[b,m,n+1] = v1)
// Workgroup: 256 threads, tile 64 (M) × 64 (N) × 16 (K), 4×4 outputs per thread,
// 8 KiB of workgroup storage. Linear workgroup index = (b, tile_m, tile_n).
// Native f16 storage (`//#if f16`): the tiles hold f16, four consecutive k per vec4<f16>
// (4 KiB in all; each thread stages one quad of A and one of B), and each 4-term piece of
// the inner product is a dot(vec4<f16>, vec4<f16>) widened to the f32 accumulator.
//#include activation.wgsl
const BM: u32 = 64u;
const BN: u32 = 64u;
const BK: u32 = 16u;
//#if f16
var<workgroup> As: array<vec4<f16>, 256>; // [BK / 4][BM]: A(m, 4q .. 4q + 3)
var<workgroup> Bs: array<vec4<f16>, 256>; // [BK / 4][BN]: B(4q .. 4q + 3, n)
// A(b, m, k .. k + 3) and B(b, k .. k + 3, n) as f16, zero past K.
fn quad_a(bt: u32, m: u32, k: u32, K: u32) -> vec4<f16> {
    var v = vec4<f32>(0.0);
    if (k < K) { v.x = load_a(bt, m, k); }
    if (k + 1u < K) { v.y = load_a(bt, m, k + 1u); }
    if (k + 2u < K) { v.z = load_a(bt, m, k + 2u); }
    if (k + 3u < K) { v.w = load_a(bt, m, k + 3u); }
    return vec4<f16>(v);
}
fn quad_b(bt: u32, k: u32, n: u32, K: u32) -> vec4<f16> {
    var v = vec4<f32>(0.0);
    if (k < K) { v.x = load_b(bt, k, n); }
    if (k + 1u < K) { v.y = load_b(bt, k + 1u, n); }
    if (k + 2u < K) { v.z = load_b(bt, k + 2u, n); }
    if (k + 3u < K) { v.w = load_b(bt, k + 3u, n); }
    return vec4<f16>(v);
}
//#else
var<workgroup> As: array<f32, 1024>; // [BK][BM]
var<workgroup> Bs: array<f32, 1024>; // [BK][BN]
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
    let wl = wid.x + wid.y * nwg.x;
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
    for (var k0 = 0u; k0 < K; k0 = k0 + BK) {
//#if f16
        {
            // One quad of A and one of B per thread; the threads walk k first where it
            // is the contiguous dimension, else m (A stored k-major) or n.
            let mm = select(lid / 4u, lid % BM, mfast);
            let ka = select(lid % 4u, lid / BM, mfast);
            var qa = vec4<f16>(0.0h);
            if (m0 + mm < M) {
                qa = quad_a(b, m0 + mm, k0 + ka * 4u, K);
            }
            As[ka * BM + mm] = qa;
            let nn = select(lid % BN, lid / 4u, kfast);
            let kb = select(lid / BN, lid % 4u, kfast);
            var qb = vec4<f16>(0.0h);
            if (n0 + nn < N) {
                qb = quad_b(b, k0 + kb * 4u, n0 + nn, K);
            }
            Bs[kb * BN + nn] = qb;
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
        for (var e = 0u; e < 4u; e = e + 1u) {
            let idx = lid + e * 256u;
            let mm = select(idx / BK, idx % BM, mfast);
            let kk = select(idx % BK, idx / BM, mfast);
            var v = 0.0;
            if (m0 + mm < M && k0 + kk < K) {
                v = load_a(b, m0 + mm, k0 + kk);
            }
            As[kk * BM + mm] = v;
        }
        for (var e = 0u; e < 4u; e = e + 1u) {
            let idx = lid + e * 256u;
            let kk = select(idx / BN, idx % BK, kfast);
            let nn = select(idx % BN, idx / BK, kfast);
            var v = 0.0;
            if (n0 + nn < N && k0 + kk < K) {
                v = load_b(b, k0 + kk, n0 + nn);
            }
            Bs[kk * BN + nn] = v;
        }
        workgroupBarrier();
        for (var kk = 0u; kk < BK; kk = kk + 1u) {
            let a = vec4<f32>(As[kk * BM + ty * 4u], As[kk * BM + ty * 4u + 1u],
                              As[kk * BM + ty * 4u + 2u], As[kk * BM + ty * 4u + 3u]);
            let bv = vec4<f32>(Bs[kk * BN + tx * 4u], Bs[kk * BN + tx * 4u + 1u],
                               Bs[kk * BN + tx * 4u + 2u], Bs[kk * BN + tx * 4u + 3u]);
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
