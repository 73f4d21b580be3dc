// Elementwise ops. Map kernels: y[i] = compute(i), y is the output.
//   unary:  x: [n]                     -> y: [n]
//           op 0 copy (also casts f32<->f16), 1 SiLU, 2 GELU(erf), 3 QuickGELU,
//           4 affine alpha*x + beta, 5 clamp to [alpha, beta], 6 fill with beta (x unread),
//           7 ReLU, 8 soft clamp alpha * tanh(x / alpha)
//   binary: a: [n], b: [n / broadcast] -> y: [n]
//           b index = (i / inner) % mid + (i / (inner * mid)) * outer_stride
//           (same shape: inner 1, mid n, outer_stride 0; bias [C] over [N,C,HW]:
//           inner HW, mid C, outer 0; per-sample [N,C] over [N,C,HW]: outer C)
//           op 0: y = alpha * a + beta * b;  op 1: y = a * b
//   geglu:  x: [M, 2D]                 -> y: [M, D]   y = x[:, :D] * gelu(x[:, D:])
//#include activation.wgsl

//#kernel unary x:read y:write
struct Params { numel: u32, op: u32, alpha: f32, beta: f32 }
fn compute(i: u32) -> f32 {
    if (P.op == 6u) {
        return P.beta;
    }
    let v = x_ld(i);
    if (P.op == 4u) {
        return P.alpha * v + P.beta;
    }
    if (P.op == 5u) {
        return clamp(v, P.alpha, P.beta);
    }
    if (P.op == 8u) {
        return P.alpha * tanh_f32(v / P.alpha);
    }
    return apply_act(v, P.op);
}

//#kernel binary a:read b:read y:write
struct Params { numel: u32, op: u32, inner: u32, mid: u32, outer_stride: u32, alpha: f32, beta: f32 }
fn compute(i: u32) -> f32 {
    let bi = (i / P.inner) % P.mid + (i / (P.inner * P.mid)) * P.outer_stride;
    let av = a_ld(i);
    let bv = b_ld(bi);
    if (P.op == 1u) {
        return av * bv;
    }
    return P.alpha * av + P.beta * bv;
}

//#kernel geglu x:read y:write
struct Params { numel: u32, d: u32 }
fn compute(i: u32) -> f32 {
    let m = i / P.d;
    let j = i % P.d;
    let h = x_ld(m * 2u * P.d + j);
    let g = x_ld(m * 2u * P.d + P.d + j);
    return h * apply_act(g, 2u);
}
