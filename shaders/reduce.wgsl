// Workgroup reductions for one-workgroup-per-row kernels (included by norm.wgsl and
// softmax.wgsl; no kernels of its own). The includer defines `const WG: u32` (the
// workgroup size, a power of two), takes `ln: Lane` in its entry point and calls these
// from every invocation of the workgroup (uniform control flow): each returns the
// reduction of the WG values `v` to every caller.
//
// Two variants (shader.rs, `//#if subgroups`):
// - subgroups: subgroupAdd / subgroupMax within each subgroup, the first active invocation of
//   each subgroup writes a slot (`subgroup_id`), ONE barrier, then every invocation folds the
//   `num_subgroups` slots in slot order (deterministic). Nothing assumes a subgroup size,
//   how invocations map to subgroups, or full subgroups: slots are indexed by the
//   hardware's subgroup id, `num_subgroups <= WG` always. The slots alternate between two
//   halves on successive calls, so no second barrier guards their reuse (a call's writes
//   to one half come after the previous call's barrier, which every reader of the call
//   before it, that used the same half, has passed).
// - otherwise: a shared-memory tree, 2 + log2(WG) barriers per call.
struct Lane {
    @builtin(local_invocation_index) lid: u32,
//#if subgroups
    @builtin(subgroup_id) sg: u32,
    @builtin(num_subgroups) nsg: u32,
//#endif
}

//#if subgroups
var<workgroup> red: array<f32, 2u * WG>;
// Which half of `red` the next call uses (the same in every invocation: all make the
// same calls in the same order).
var<private> red_half: u32 = 0u;

// True in one active invocation of the subgroup (the first; any subgroup size or shape).
fn sg_leader(ln: Lane) -> bool {
    return subgroupBroadcastFirst(ln.lid) == ln.lid;
}

// Publish this subgroup's partial `s` and wait for all subgroups; returns the slot base.
fn wg_publish(ln: Lane, s: f32) -> u32 {
    let base = red_half * WG;
    red_half = 1u - red_half;
    if (sg_leader(ln)) {
        red[base + ln.sg] = s;
    }
    workgroupBarrier();
    return base;
}

fn wg_sum(ln: Lane, v: f32) -> f32 {
    let base = wg_publish(ln, subgroupAdd(v));
    var t = 0.0;
    for (var i = 0u; i < ln.nsg; i = i + 1u) {
        t = t + red[base + i];
    }
    return t;
}

fn wg_max(ln: Lane, v: f32) -> f32 {
    let base = wg_publish(ln, subgroupMax(v));
    var t = red[base];
    for (var i = 1u; i < ln.nsg; i = i + 1u) {
        t = max(t, red[base + i]);
    }
    return t;
}
//#else
var<workgroup> red: array<f32, WG>;

fn wg_sum(ln: Lane, v: f32) -> f32 {
    let lid = ln.lid;
    red[lid] = v;
    workgroupBarrier();
    for (var s = WG / 2u; s > 0u; s = s / 2u) {
        if (lid < s) {
            red[lid] = red[lid] + red[lid + s];
        }
        workgroupBarrier();
    }
    let r = red[0];
    workgroupBarrier();
    return r;
}

fn wg_max(ln: Lane, v: f32) -> f32 {
    let lid = ln.lid;
    red[lid] = v;
    workgroupBarrier();
    for (var s = WG / 2u; s > 0u; s = s / 2u) {
        if (lid < s) {
            red[lid] = max(red[lid], red[lid + s]);
        }
        workgroupBarrier();
    }
    let r = red[0];
    workgroupBarrier();
    return r;
}
//#endif
