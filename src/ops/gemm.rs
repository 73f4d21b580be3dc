use crate::error::{shape_err, Result};
use crate::gpu::{Dispatch, Gpu, Tensor};

use super::{u, Act, Out};

const TILE: usize = 64;

fn tiles(m: usize, n: usize, batch: usize) -> u64 {
    (m.div_ceil(TILE) * n.div_ceil(TILE) * batch) as u64
}

fn flags(bias: Option<&Tensor>, res: Option<&Tensor>) -> u32 {
    bias.is_some() as u32 | ((res.is_some() as u32) << 1)
}

/// Batched matmul: a [B, M, K] (or [M, K]) · b [B, K, N] (or [K, N]) -> [B, M, N].
pub fn matmul(gpu: &Gpu, a: &Tensor, b: &Tensor) -> Result<Tensor> {
    let err = || shape_err("matmul", format!("{:?} · {:?}", a.shape(), b.shape()));
    let (ba, m, k) = match a.shape() {
        [m, k] => (1, *m, *k),
        [bb, m, k] => (*bb, *m, *k),
        _ => return err(),
    };
    let (bb, k2, n) = match b.shape() {
        [k, n] => (1, *k, *n),
        [bb, k, n] => (*bb, *k, *n),
        _ => return err(),
    };
    if k != k2 || (ba != bb && bb != 1) {
        return err();
    }
    let out_shape: Vec<usize> = if a.rank() == 3 { vec![ba, m, n] } else { vec![m, n] };
    let b_sb = if bb == 1 { 0 } else { k * n };
    gemm(gpu, a, b, None, None, Act::None, [m, n, k, ba], [m * k, k, 1], [b_sb, n, 1], &out_shape)
}

/// Linear layer: x [..., K] · wᵀ (w [N, K], PyTorch layout) + bias [N], activation,
/// + residual [..., N].
pub fn linear(gpu: &Gpu, x: &Tensor, w: &Tensor, bias: Option<&Tensor>, act: Act, residual: Option<&Tensor>) -> Result<Tensor> {
    let k = x.dim(-1);
    if w.rank() != 2 || w.shape()[1] != k || k == 0 {
        return shape_err("linear", format!("x {:?} · weight {:?}ᵀ: weight must be [N, {k}]", x.shape(), w.shape()));
    }
    let n = w.shape()[0];
    if let Some(bi) = bias {
        if bi.shape() != [n] {
            return shape_err("linear", format!("bias {:?} must be [{n}]", bi.shape()));
        }
    }
    let m = x.numel() / k;
    let mut out_shape = x.shape().to_vec();
    *out_shape.last_mut().unwrap() = n;
    if let Some(r) = residual {
        if r.shape() != out_shape.as_slice() {
            return shape_err("linear", format!("residual {:?} must be {:?}", r.shape(), out_shape));
        }
    }
    gemm(gpu, x, w, bias, residual, act, [m, n, k, 1], [0, k, 1], [0, 1, k], &out_shape)
}

#[allow(clippy::too_many_arguments)]
fn gemm(
    gpu: &Gpu,
    a: &Tensor,
    b: &Tensor,
    bias: Option<&Tensor>,
    res: Option<&Tensor>,
    act: Act,
    [m, n, k, batch]: [usize; 4],
    [a_sb, a_sm, a_sk]: [usize; 3],
    [b_sb, b_sk, b_sn]: [usize; 3],
    out_shape: &[usize],
) -> Result<Tensor> {
    let out = Out::new(gpu, out_shape, a.dtype(), n % 2 == 0)?;
    gpu.dispatch(Dispatch {
        file: "matmul.wgsl",
        kernel: "matmul",
        params: vec![
            u(m), u(n), u(k), u(batch), u(a_sb), u(a_sm), u(a_sk), u(b_sb), u(b_sk), u(b_sn),
            flags(bias, res), act as u32,
        ],
        tensors: vec![a, b, bias.unwrap_or(b), res.unwrap_or(a), &out.t],
        workgroups: tiles(m, n, batch),
    })?;
    out.finish(gpu)
}

/// Convolution geometry: stride and padding (top, left, bottom, right).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Conv2d {
    pub stride: usize,
    pub pad: [usize; 4],
}

impl Conv2d {
    /// Symmetric padding `p` on all sides.
    pub fn new(stride: usize, p: usize) -> Self {
        Conv2d { stride, pad: [p; 4] }
    }
}

/// x [N, Cin, H, W] ⊛ w [Cout, Cin, KH, KW] + bias [Cout], activation, + residual [N, Cout, OH, OW].
pub fn conv2d(gpu: &Gpu, x: &Tensor, w: &Tensor, bias: Option<&Tensor>, g: Conv2d, act: Act, residual: Option<&Tensor>) -> Result<Tensor> {
    let (xs, ws) = (x.shape(), w.shape());
    if xs.len() != 4 || ws.len() != 4 || xs[1] != ws[1] || g.stride == 0 {
        return shape_err("conv2d", format!("x {xs:?} ⊛ weight {ws:?} (stride {}): need [N, Cin, H, W] and [Cout, Cin, KH, KW]", g.stride));
    }
    let (nb, cin, h, wd) = (xs[0], xs[1], xs[2], xs[3]);
    let (cout, kh, kw) = (ws[0], ws[2], ws[3]);
    let [pt, pl, pb, pr] = g.pad;
    if h + pt + pb < kh || wd + pl + pr < kw {
        return shape_err("conv2d", format!("kernel {kh}×{kw} larger than padded input {xs:?}"));
    }
    let oh = (h + pt + pb - kh) / g.stride + 1;
    let ow = (wd + pl + pr - kw) / g.stride + 1;
    if let Some(bi) = bias {
        if bi.shape() != [cout] {
            return shape_err("conv2d", format!("bias {:?} must be [{cout}]", bi.shape()));
        }
    }
    let out_shape = [nb, cout, oh, ow];
    if let Some(r) = residual {
        if r.shape() != out_shape {
            return shape_err("conv2d", format!("residual {:?} must be {:?}", r.shape(), out_shape));
        }
    }
    let out = Out::new(gpu, &out_shape, x.dtype(), (oh * ow) % 2 == 0)?;
    gpu.dispatch(Dispatch {
        file: "conv2d.wgsl",
        kernel: "conv2d",
        params: vec![
            u(nb), u(cin), u(h), u(wd), u(cout), u(oh), u(ow), u(kh), u(kw), u(g.stride), u(pt), u(pl),
            flags(bias, residual), act as u32,
        ],
        tensors: vec![x, w, bias.unwrap_or(w), residual.unwrap_or(x), &out.t],
        workgroups: tiles(cout, oh * ow, nb),
    })?;
    out.finish(gpu)
}
