// Activation functions shared by the elementwise and GEMM families (an include: no kernels).
// act codes: 0 none, 1 SiLU, 2 GELU (erf), 3 QuickGELU (x * sigmoid(1.702 x)), 7 ReLU
// (4-6 are reserved for elementwise.wgsl's unary ops).

// erf, Abramowitz & Stegun 7.1.26 (|error| <= 1.5e-7).
fn erf_f32(x: f32) -> f32 {
    let ax = abs(x);
    let t = 1.0 / (1.0 + 0.3275911 * ax);
    let poly = t * (0.254829592 + t * (-0.284496736 + t * (1.421413741 + t * (-1.453152027 + t * 1.061405429))));
    let r = 1.0 - poly * exp(-ax * ax);
    return select(r, -r, x < 0.0);
}

fn sigmoid_f32(x: f32) -> f32 {
    return 1.0 / (1.0 + exp(-x));
}

// tanh without overflow for large |x| (exp of a non-positive argument only).
fn tanh_f32(x: f32) -> f32 {
    let e = exp(-2.0 * abs(x));
    let t = (1.0 - e) / (1.0 + e);
    return select(t, -t, x < 0.0);
}

fn apply_act(v: f32, act: u32) -> f32 {
    switch act {
        case 1u: { return v * sigmoid_f32(v); }
        case 2u: { return 0.5 * v * (1.0 + erf_f32(v * 0.70710678118654752)); }
        case 3u: { return v * sigmoid_f32(1.702 * v); }
        case 7u: { return max(v, 0.0); }
        default: { return v; }
    }
}
