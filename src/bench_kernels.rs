//! `sd-webgpu bench-kernels`: throughput of the GEMM / conv / attention shapes that make up
//! most of an SD-1.5 UNet step at 512² with classifier-free guidance (batch 2), for both GEMM
//! kernel variants and both storage dtypes. Times come from GPU timestamp queries where the
//! adapter has them (the sum of the op's dispatches: split-K reduce and watchdog ranges
//! included), else from the wall clock around a submit + sync.
//!
//! The shapes follow the SD-1.5 UNet config (block_out_channels 320/640/1280/1280, 2 layers per
//! block, 8 heads, cross-attention dim 768, 77 context tokens) at latent 64² (image 512²):
//! every 3×3 conv (down, mid, up with their skip-concatenated inputs, upsample convs), the
//! transformer linears (fused QKV, output/cross-query/projection C→C, GEGLU feed-forward
//! C→8C with its 4C→C output, cross-attention K/V from the 77 text tokens) and the attention
//! at 4096/1024/256/64 tokens (head dims 40/80/160/160), self and cross, plus the VAE's
//! single-head attention at 64² tokens (head dim 512; `count` 0: not part of the UNet step).
//! `count` is how often a shape occurs in one UNet step, so `weighted` is the step's
//! GEMM/attention throughput, per (GEMM variant, attention variant, dtype). GEMM shapes are
//! timed per GEMM variant (`--gemm`), attention shapes per attention variant (`--attention`).
use std::time::Instant;

use clap::{Args, ValueEnum};
use serde::Serialize;

use crate::gpu::{AttentionVariant, DType, GemmVariant, Gpu, GpuOptions};
use crate::ops::{self, Act, Conv2d};
use crate::rng::Rng;

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum GemmArg {
    V1,
    V2,
    Both,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum DtypeArg {
    F16,
    F32,
    Both,
}

/// The flags of `sd-webgpu bench-kernels`.
#[derive(Args, Debug, Clone)]
pub struct BenchKernelsArgs {
    /// GEMM kernel variant(s) for matmul / linear / conv.
    #[arg(long, value_enum, default_value_t = GemmArg::Both)]
    pub gemm: GemmArg,
    /// Attention kernel variant(s) (v1: attention.wgsl, v2: attention_v2.wgsl).
    #[arg(long, value_enum, default_value_t = GemmArg::Both)]
    pub attention: GemmArg,
    /// Storage dtype(s) of activations and weights.
    #[arg(long, value_enum, default_value_t = DtypeArg::Both)]
    pub dtype: DtypeArg,
    /// Peak throughput of the GPU in TFLOP/s (for the % of peak column).
    #[arg(long)]
    pub peak_tflops: Option<f64>,
    /// Write the results as JSON to this file.
    #[arg(long)]
    pub json: Option<std::path::PathBuf>,
    /// A few small shapes, one timed run each (a CPU adapter such as lavapipe; CI).
    #[arg(long)]
    pub quick: bool,
    /// Timed runs per shape (median reported) after one warm-up run.
    #[arg(long, default_value_t = 5)]
    pub iters: usize,
}

/// One benchmarked shape.
#[derive(Clone, Copy, Debug)]
enum Shape {
    /// 3×3 conv, stride 1, pad 1: batch, Cin, Cout, H = W.
    Conv { b: usize, cin: usize, cout: usize, hw: usize },
    /// x [M, K] · w [N, K]ᵀ + bias; GEGLU halves the output.
    Linear { m: usize, k: usize, n: usize, geglu: bool },
    /// Attention: batch, query tokens, key tokens, heads, head dim.
    Attn { b: usize, sq: usize, sk: usize, heads: usize, d: usize },
}

impl Shape {
    fn flops(&self) -> f64 {
        match *self {
            Shape::Conv { b, cin, cout, hw } => 2.0 * (b * cout * hw * hw) as f64 * (cin * 9) as f64,
            Shape::Linear { m, k, n, .. } => 2.0 * (m * n) as f64 * k as f64,
            Shape::Attn { b, sq, sk, heads, d } => 4.0 * (b * heads * sq) as f64 * (sk * d) as f64,
        }
    }
    fn kind(&self) -> &'static str {
        match self {
            Shape::Conv { .. } => "conv3x3",
            Shape::Linear { geglu: true, .. } => "linear_geglu",
            Shape::Linear { .. } => "linear",
            Shape::Attn { .. } => "attention",
        }
    }
    fn describe(&self) -> String {
        match *self {
            Shape::Conv { b, cin, cout, hw } => format!("{b}×{cin}×{hw}²→{cout}"),
            Shape::Linear { m, k, n, .. } => format!("[{m},{k}]·[{n},{k}]ᵀ"),
            Shape::Attn { b, sq, sk, heads, d } => format!("B{b} H{heads} Sq{sq} Sk{sk} D{d}"),
        }
    }
}

/// (shape, occurrences per UNet step) of SD-1.5 at 512² with CFG (see the module docs).
fn unet_shapes() -> Vec<(Shape, usize)> {
    let b = 2;
    let conv = |cin, cout, hw, count| (Shape::Conv { b, cin, cout, hw }, count);
    let mut v = vec![
        conv(320, 320, 64, 7),
        conv(640, 320, 64, 2),
        conv(960, 320, 64, 1),
        conv(640, 640, 64, 1),
        conv(640, 640, 32, 6),
        conv(320, 640, 32, 1),
        conv(1280, 640, 32, 1),
        conv(960, 640, 32, 1),
        conv(1920, 640, 32, 1),
        conv(1280, 1280, 32, 1),
        conv(1280, 1280, 16, 7),
        conv(640, 1280, 16, 1),
        conv(2560, 1280, 16, 2),
        conv(1920, 1280, 16, 1),
        conv(1280, 1280, 8, 11),
        conv(2560, 1280, 8, 3),
    ];
    // Transformer blocks: (tokens, channels, blocks per step); 8 heads.
    for (t, c, blocks) in [(4096usize, 320usize, 5usize), (1024, 640, 5), (256, 1280, 5), (64, 1280, 1)] {
        let m = b * t;
        let lin = |k, n, geglu, count| (Shape::Linear { m, k, n, geglu }, count * blocks);
        v.push(lin(c, 3 * c, false, 1));
        // Self-attention output, cross-attention query and output, proj_in / proj_out.
        v.push(lin(c, c, false, 5));
        v.push(lin(c, 8 * c, true, 1));
        v.push(lin(4 * c, c, false, 1));
        v.push((Shape::Linear { m: b * 77, k: 768, n: 2 * c, geglu: false }, blocks));
        v.push((Shape::Attn { b, sq: t, sk: t, heads: 8, d: c / 8 }, blocks));
        v.push((Shape::Attn { b, sq: t, sk: 77, heads: 8, d: c / 8 }, blocks));
    }
    // VAE mid-block attention at latent 64² (one head of 512), not part of the UNet step.
    v.push((Shape::Attn { b: 1, sq: 4096, sk: 4096, heads: 1, d: 512 }, 0));
    v
}

/// Small shapes for a CPU adapter: each kind once, both GEMM tile widths and split-K.
fn quick_shapes() -> Vec<(Shape, usize)> {
    vec![
        (Shape::Conv { b: 2, cin: 32, cout: 64, hw: 16 }, 1),
        (Shape::Linear { m: 256, k: 64, n: 192, geglu: false }, 1),
        (Shape::Linear { m: 128, k: 64, n: 256, geglu: true }, 1),
        (Shape::Linear { m: 128, k: 1024, n: 64, geglu: false }, 1),
        (Shape::Attn { b: 2, sq: 256, sk: 256, heads: 2, d: 40 }, 1),
        (Shape::Attn { b: 2, sq: 64, sk: 77, heads: 2, d: 80 }, 1),
        (Shape::Attn { b: 2, sq: 64, sk: 64, heads: 2, d: 160 }, 1),
        (Shape::Attn { b: 1, sq: 64, sk: 64, heads: 1, d: 512 }, 0),
    ]
}

#[derive(Clone, Debug, Serialize)]
pub struct KernelResult {
    pub kind: &'static str,
    pub shape: String,
    /// GEMM variant (`-` for attention, which does not use the GEMM kernels).
    pub gemm: &'static str,
    /// Attention variant (`-` for the GEMM / conv shapes).
    pub attention: &'static str,
    pub dtype: &'static str,
    /// Occurrences per UNet step.
    pub count: usize,
    pub gflop: f64,
    pub ms: f64,
    pub gflops: f64,
    pub pct_peak: Option<f64>,
}

#[derive(Clone, Debug, Serialize)]
pub struct KernelBench {
    pub adapter: String,
    pub backend: String,
    pub timing: &'static str,
    pub quick: bool,
    pub iters: usize,
    pub peak_tflops: Option<f64>,
    pub results: Vec<KernelResult>,
    /// Per (gemm, dtype): UNet-step-weighted GFLOP/s over all shapes (attention included).
    pub weighted: Vec<Weighted>,
}

#[derive(Clone, Debug, Serialize)]
pub struct Weighted {
    pub gemm: &'static str,
    pub attention: &'static str,
    pub dtype: &'static str,
    pub gflops: f64,
}

/// Seconds of one run of `f` (median of `iters` after a warm-up): the GPU time of its
/// dispatches where timestamps exist, else the wall clock around submit + sync.
async fn time_op(gpu: &Gpu, iters: usize, f: &dyn Fn() -> crate::Result<()>) -> crate::Result<f64> {
    f()?;
    gpu.sync().await?;
    let profiling = gpu.profiling();
    let mut t = Vec::with_capacity(iters);
    for _ in 0..iters.max(1) {
        if profiling {
            gpu.take_profile().await?;
            f()?;
            let ns: u64 = gpu.take_profile().await?.iter().map(|p| p.1).sum();
            t.push(ns as f64 * 1e-9);
        } else {
            let s = Instant::now();
            f()?;
            gpu.sync().await?;
            t.push(s.elapsed().as_secs_f64());
        }
    }
    t.sort_by(|a, b| a.total_cmp(b));
    Ok(t[t.len() / 2])
}

async fn bench_shape(gpu: &Gpu, shape: Shape, dtype: DType, iters: usize) -> crate::Result<f64> {
    let mut rng = Rng::new(7);
    let mut up = |s: &[usize], a: f32| gpu.upload(s, dtype, &rng.vec(s.iter().product(), -a, a));
    match shape {
        Shape::Conv { b, cin, cout, hw } => {
            let x = up(&[b, cin, hw, hw], 1.0)?;
            let w = up(&[cout, cin, 3, 3], 0.02)?;
            let bias = up(&[cout], 0.1)?;
            time_op(gpu, iters, &|| ops::conv2d(gpu, &x, &w, Some(&bias), Conv2d::new(1, 1), Act::None, None).map(drop)).await
        }
        Shape::Linear { m, k, n, geglu } => {
            let x = up(&[m, k], 1.0)?;
            let w = up(&[n, k], 0.05)?;
            let bias = up(&[n], 0.1)?;
            let fz = ops::LinearFuse { bias: Some(&bias), geglu, ..Default::default() };
            time_op(gpu, iters, &|| ops::linear_fused(gpu, &x, &w, fz).map(drop)).await
        }
        Shape::Attn { b, sq, sk, heads, d } => {
            let q = up(&[b, sq, heads * d], 1.0)?;
            let k = up(&[b, sk, heads * d], 1.0)?;
            let v = up(&[b, sk, heads * d], 1.0)?;
            let scale = 1.0 / (d as f32).sqrt();
            time_op(gpu, iters, &|| ops::attention(gpu, &q, &k, &v, heads, false, scale).map(drop)).await
        }
    }
}

/// Run the benchmark (prints one line per shape to stderr as it goes).
pub async fn bench_kernels(args: &BenchKernelsArgs) -> crate::Result<KernelBench> {
    let shapes = if args.quick { quick_shapes() } else { unet_shapes() };
    let iters = if args.quick { 1 } else { args.iters.max(1) };
    let gemms: &[GemmVariant] = match args.gemm {
        GemmArg::V1 => &[GemmVariant::V1],
        GemmArg::V2 => &[GemmVariant::V2],
        GemmArg::Both => &[GemmVariant::V1, GemmVariant::V2],
    };
    let dtypes: &[DType] = match args.dtype {
        DtypeArg::F16 => &[DType::F16],
        DtypeArg::F32 => &[DType::F32],
        DtypeArg::Both => &[DType::F16, DType::F32],
    };
    let attns: &[AttentionVariant] = match args.attention {
        GemmArg::V1 => &[AttentionVariant::V1],
        GemmArg::V2 => &[AttentionVariant::V2],
        GemmArg::Both => &[AttentionVariant::V1, AttentionVariant::V2],
    };
    let vname = |v1: bool| if v1 { "v1" } else { "v2" };
    let mut results: Vec<KernelResult> = Vec::new();
    let (mut adapter, mut backend, mut timing) = (String::new(), String::new(), "wall-clock");
    // GEMM / conv shapes per GEMM variant, then attention shapes per attention variant (each
    // on a GPU opened with that variant), every dtype.
    let runs = gemms.iter().map(|&g| (Some(g), None)).chain(attns.iter().map(|&a| (None, Some(a))));
    for (gemm, attn) in runs {
        let gpu = Gpu::new(GpuOptions { gemm: gemm.unwrap_or_default(), attention: attn.unwrap_or_default(), ..Default::default() }).await?;
        adapter = gpu.info().name.clone();
        backend = gpu.info().backend.clone();
        if gpu.set_profiling(true)? {
            timing = "gpu-timestamps";
        }
        for &dtype in dtypes {
            for &(shape, count) in &shapes {
                if matches!(shape, Shape::Attn { .. }) != attn.is_some() {
                    continue;
                }
                let s = bench_shape(&gpu, shape, dtype, iters).await?;
                let gflops = shape.flops() / s / 1e9;
                let r = KernelResult {
                    kind: shape.kind(),
                    shape: shape.describe(),
                    gemm: gemm.map_or("-", |g| vname(g == GemmVariant::V1)),
                    attention: attn.map_or("-", |a| vname(a == AttentionVariant::V1)),
                    dtype: dtype.name(),
                    count,
                    gflop: shape.flops() / 1e9,
                    ms: s * 1e3,
                    gflops,
                    pct_peak: args.peak_tflops.map(|p| 100.0 * gflops / (p * 1e3)),
                };
                eprintln!("{:<13} {:<26} {:>3} {:>3} {:<4} ×{:<3} {:9.3} GFLOP {:10.3} ms {:10.1} GFLOP/s{}", r.kind, r.shape, r.gemm, r.attention, r.dtype, r.count, r.gflop, r.ms, r.gflops, r.pct_peak.map_or(String::new(), |p| format!(" {p:5.1} %")));
                results.push(r);
            }
        }
    }
    // UNet-step weighted throughput per (GEMM variant, attention variant, dtype).
    let mut weighted = Vec::new();
    for &g in gemms {
        for &a in attns {
            for &dtype in dtypes {
                let (gn, an) = (vname(g == GemmVariant::V1), vname(a == AttentionVariant::V1));
                let (mut fl, mut secs) = (0.0, 0.0);
                for r in results.iter().filter(|r| r.dtype == dtype.name() && (r.gemm == gn || r.attention == an)) {
                    fl += r.gflop * 1e9 * r.count as f64;
                    secs += r.ms * 1e-3 * r.count as f64;
                }
                weighted.push(Weighted { gemm: gn, attention: an, dtype: dtype.name(), gflops: if secs > 0.0 { fl / secs / 1e9 } else { 0.0 } });
            }
        }
    }
    Ok(KernelBench { adapter, backend, timing, quick: args.quick, iters, peak_tflops: args.peak_tflops, results, weighted })
}

/// `sd-webgpu bench-kernels`: run, print a table, write the JSON if asked.
pub async fn run(args: BenchKernelsArgs) -> crate::Result<()> {
    let r = bench_kernels(&args).await?;
    println!("bench-kernels on {} ({}), timing: {}, {} run(s) per shape after a warm-up", r.adapter, r.backend, r.timing, r.iters);
    println!("| kind | shape | gemm | attention | dtype | per step | GFLOP | ms | GFLOP/s | % peak |");
    println!("|---|---|---|---|---|---|---|---|---|---|");
    for x in &r.results {
        println!("| {} | {} | {} | {} | {} | {} | {:.3} | {:.3} | {:.1} | {} |", x.kind, x.shape, x.gemm, x.attention, x.dtype, x.count, x.gflop, x.ms, x.gflops, x.pct_peak.map_or("-".into(), |p| format!("{p:.1}")));
    }
    for w in &r.weighted {
        println!("UNet-step weighted: gemm {}, attention {}, {}: {:.1} GFLOP/s", w.gemm, w.attention, w.dtype, w.gflops);
    }
    if let Some(path) = &args.json {
        let text = serde_json::to_string_pretty(&r).map_err(|e| crate::Error::Invalid(format!("bench-kernels JSON: {e}")))?;
        std::fs::write(path, text).map_err(|e| crate::Error::Invalid(format!("{}: {e}", path.display())))?;
    }
    Ok(())
}
