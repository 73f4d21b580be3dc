// Multi-head attention v2: register-tiled flash attention, one kernel per head-dim bucket.
// Same op, parameters and layout as shaders/attention.wgsl (v1; see its header):
//   o = softmax(scale·QKᵀ [+ causal]) V,  q/k/v strided views, o [B, Sq, H·D] contiguous,
//   online softmax with base-2 exponentials (log2(e) folded into the Q scale), f32 softmax
//   state and accumulators, P.tile0 = first linear workgroup of this dispatch (watchdog ranges).
//
// Design (shared code in attention_v2_core.wgsl, specialised by constants per kernel):
//   DV  vec4 per head row of the bucket (D <= 4·DV; K/V tiles and Q are zero past D, so any
//       D of the bucket is exact: the buckets are a generic fallback for odd dims too),
//   L   threads ("lanes") per query row: lane t owns the vec4 columns t, t+L, t+2L, .. of Q and
//       of the output (NC = DV / L of them), so L lanes read L consecutive vec4 of a K/V row
//       (no bank conflicts) and the rows of a warp read the same address (broadcast),
//   RQ  query rows per thread (rows slot, slot + ROWS, ..): each K/V element read from
//       workgroup memory feeds RQ vec4 FMAs,
//   WG  invocations, BQ = WG / L · RQ query rows per workgroup, BK keys per key block.
// A thread keeps its RQ rows' scaled Q slices and output accumulators in registers
// (2·RQ·NC vec4) and the RQ × BK scores of the block. Per key block: barrier, K and V tile
// (BK × DV vec4 each) loaded coalesced into workgroup memory (vec4<f16> when the kernel is
// assembled for native f16 storage, else f32), barrier, scores from registers × the K tile,
// [L > 1: partial dots to workgroup memory, barrier, summed over the L lanes], softmax update
// and P·V straight from registers (P never goes to workgroup memory).
//   Barriers per key block: 2 (L = 1) or 3 (L > 1); v1: 4 (D <= 80), 2·⌈D/32⌉ + 2·⌈D/64⌉ (D > 80).
//
// Kernel            D        DV   L  RQ  WG   BQ  BK f32/f16  workgroup bytes f32 / f16
// attention_v2_d8    1..8      2  1  2   64  128  32 / 32      2052 / 1028
// attention_v2_d16   9..16     4  1  2   64  128  32 / 32      4100 / 2052
// attention_v2_d40   17..40   10  1  2   64  128  16 / 16      5124 / 2564
// attention_v2_d64   41..64   16  1  1   64   64  16 / 16      8196 / 4100
// attention_v2_d80   65..80   20  1  1   64   64  16 / 16     10244 / 5124
// attention_v2_d160  81..160  40  2  1  128   64   8 / 8      14340 / 9220
// attention_v2_d512  161..512 128 8  1  256   32   3 / 4      15364 / 12292
// (bytes: K/V tiles 2·BK·DV·16 (f32) or 2·BK·DV·8 (f16), + 4·(BQ·BK·L + 1) for the lane sums
//  when L > 1, else 4 for the unused 1-element array; at most 16 KiB.) The Rust side
//  (src/ops/attention.rs, V2_KERNELS) picks the kernel by D and must know BQ (a test in
//  tests/kernels.rs checks it against WG / L · RQ here).

//#include attention_common.wgsl

//#kernel attention_v2_d8 q:read k:read v:read o:write
const DV: u32 = 2u;
const L: u32 = 1u;
const RQ: u32 = 2u;
const WG: u32 = 64u;
const BK: u32 = 32u;
//#include attention_v2_core.wgsl

//#kernel attention_v2_d16 q:read k:read v:read o:write
const DV: u32 = 4u;
const L: u32 = 1u;
const RQ: u32 = 2u;
const WG: u32 = 64u;
const BK: u32 = 32u;
//#include attention_v2_core.wgsl

//#kernel attention_v2_d40 q:read k:read v:read o:write
const DV: u32 = 10u;
const L: u32 = 1u;
const RQ: u32 = 2u;
const WG: u32 = 64u;
const BK: u32 = 16u;
//#include attention_v2_core.wgsl

//#kernel attention_v2_d64 q:read k:read v:read o:write
const DV: u32 = 16u;
const L: u32 = 1u;
const RQ: u32 = 1u;
const WG: u32 = 64u;
const BK: u32 = 16u;
//#include attention_v2_core.wgsl

//#kernel attention_v2_d80 q:read k:read v:read o:write
const DV: u32 = 20u;
const L: u32 = 1u;
const RQ: u32 = 1u;
const WG: u32 = 64u;
const BK: u32 = 16u;
//#include attention_v2_core.wgsl

//#kernel attention_v2_d160 q:read k:read v:read o:write
const DV: u32 = 40u;
const L: u32 = 2u;
const RQ: u32 = 1u;
const WG: u32 = 128u;
const BK: u32 = 8u;
//#include attention_v2_core.wgsl

//#kernel attention_v2_d512 q:read k:read v:read o:write
const DV: u32 = 128u;
const L: u32 = 8u;
const RQ: u32 = 1u;
const WG: u32 = 256u;
//#if f16
const BK: u32 = 4u;
//#else
const BK: u32 = 3u;
//#endif
//#include attention_v2_core.wgsl
