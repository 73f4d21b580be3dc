// Softmax over the last dimension of x: [R, L], of scale·x.
//   row_max_sum: x: [R, L] -> stats: [R, 2] f32 (max of scale·x, sum of exp(scale·x - max))
//   apply:       x: [R, L], stats: [R, 2] -> y: [R, L]
const WG: u32 = 256u;
//#include reduce.wgsl

//#kernel row_max_sum x:read stats:write:f32
struct Params { rows: u32, len: u32, scale: f32 }

@compute @workgroup_size(256)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, ln: Lane) {
    let lid = ln.lid;
    let row = wid.x + wid.y * nwg.x;
    if (row >= P.rows) {
        return;
    }
    let base = row * P.len;
    var m = -3.0e38;
    for (var i = lid; i < P.len; i = i + WG) {
        m = max(m, P.scale * x_ld(base + i));
    }
    let mx = wg_max(ln, m);
    var acc = 0.0;
    for (var i = lid; i < P.len; i = i + WG) {
        acc = acc + exp(P.scale * x_ld(base + i) - mx);
    }
    let sum = wg_sum(ln, acc);
    if (lid == 0u) {
        stats_st(2u * row, mx);
        stats_st(2u * row + 1u, sum);
    }
}

//#kernel apply x:read stats:read:f32 y:write
struct Params { numel: u32, len: u32, scale: f32 }
fn compute(i: u32) -> f32 {
    let row = i / P.len;
    return exp(P.scale * x_ld(i) - stats_ld(2u * row)) / stats_ld(2u * row + 1u);
}
