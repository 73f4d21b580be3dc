//! `sd-webgpu bench`: time the three phases of a generation (text encoder, one CFG UNet
//! step, VAE decode) on this adapter, with synthetic weights of the exact SD-1.5 shapes
//! made in memory (no files) or the weights of a diffusers folder (`--model`).
//!
//! Times are medians over `--steps` repetitions after one warm-up. Where the adapter has
//! `TIMESTAMP_QUERY` they are GPU times from timestamp queries (the sum of every
//! dispatch's own time, see [`Gpu::set_profiling`]), which also give the time per kernel
//! and per op family; elsewhere they are wall-clock times (submit + wait). FLOPs are
//! counted analytically by the conv / matmul / attention ops ([`PoolStats::flops`]).
//! Memory figures come from the warm-up, with the pool trimmed between the phases as
//! [`crate::plan::plan`] does. `--plan` runs the planner only (nothing dispatched).
#![cfg(not(target_arch = "wasm32"))]

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::Instant;

use clap::{Parser, ValueEnum};
use serde::Serialize;

use crate::gpu::{DType, Gpu, GpuOptions, PoolStats, Tensor};
use crate::model::{Configs, StableDiffusion};
use crate::rng::Rng;
use crate::weights::Weights;

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum BenchDtype {
    F16,
    F32,
}

impl BenchDtype {
    pub fn dtype(self) -> DType {
        match self {
            BenchDtype::F16 => DType::F16,
            BenchDtype::F32 => DType::F32,
        }
    }
}

/// The flags of `sd-webgpu bench`.
#[derive(Clone, Debug, clap::Args)]
pub struct BenchArgs {
    /// Image height and width in pixels, a multiple of 64 (latents are size/8).
    #[arg(long, default_value_t = 512)]
    pub size: usize,
    /// Timed repetitions of each phase (median reported) after one warm-up.
    #[arg(long, default_value_t = 3)]
    pub steps: usize,
    /// GPU storage of weights and activations.
    #[arg(long, value_enum, default_value_t = BenchDtype::F16)]
    pub dtype: BenchDtype,
    /// Memory plan only: nothing is dispatched, times are null.
    #[arg(long)]
    pub plan: bool,
    /// Print one JSON object instead of a table.
    #[arg(long)]
    pub json: bool,
    /// Also write the JSON object to this file (the table is still printed).
    #[arg(long)]
    pub json_file: Option<PathBuf>,
    /// A diffusers folder whose configs and weights to use (default: synthetic SD-1.5
    /// weights made in memory).
    #[arg(long)]
    pub model: Option<PathBuf>,
    /// GEMM kernels for matmul / linear / conv ([`crate::gpu::GemmVariant`]).
    #[arg(long, value_enum, default_value_t = BenchGemm::V2)]
    pub gemm: BenchGemm,
    /// Attention kernels ([`crate::gpu::AttentionVariant`]).
    #[arg(long, value_enum, default_value_t = BenchGemm::V2)]
    pub attention: BenchGemm,
    /// Largest GEMM / conv / attention dispatch in GFLOP (larger ones are split).
    #[arg(long, default_value_t = 25.0)]
    pub max_dispatch_gflop: f64,
    /// Most GFLOP per command buffer (a flush with more submits several).
    #[arg(long, default_value_t = 250.0)]
    pub max_command_buffer_gflop: f64,
    /// Norm / softmax reductions without subgroup operations even where the adapter has
    /// them ([`crate::gpu::GpuOptions::subgroups`]), to compare both variants.
    #[arg(long)]
    pub no_subgroups: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum BenchGemm {
    V1,
    V2,
}

impl BenchArgs {
    /// The GPU options these flags ask for.
    pub fn gpu_options(&self) -> GpuOptions {
        GpuOptions {
            gemm: match self.gemm {
                BenchGemm::V1 => crate::gpu::GemmVariant::V1,
                BenchGemm::V2 => crate::gpu::GemmVariant::V2,
            },
            attention: match self.attention {
                BenchGemm::V1 => crate::gpu::AttentionVariant::V1,
                BenchGemm::V2 => crate::gpu::AttentionVariant::V2,
            },
            max_dispatch_gflop: self.max_dispatch_gflop,
            max_command_buffer_gflop: self.max_command_buffer_gflop,
            subgroups: !self.no_subgroups,
            ..Default::default()
        }
    }
}

#[derive(Parser)]
#[command(name = "bench")]
struct Wrap {
    #[command(flatten)]
    args: BenchArgs,
}

impl BenchArgs {
    /// Parse the flags as the CLI does (`args` without the `bench` word).
    pub fn parse_from<S: AsRef<str>>(args: &[S]) -> crate::Result<BenchArgs> {
        let it = std::iter::once("bench".to_string()).chain(args.iter().map(|s| s.as_ref().to_string()));
        Wrap::try_parse_from(it).map(|w| w.args).map_err(|e| crate::Error::Invalid(e.to_string()))
    }
}

/// Share of the UNet step's GPU time per op family (the shader file of each dispatch).
#[derive(Clone, Debug, Default, Serialize)]
pub struct Shares {
    /// conv2d.wgsl
    pub conv: f64,
    /// attention.wgsl
    pub attention: f64,
    /// norm.wgsl + softmax.wgsl
    pub norm: f64,
    /// matmul.wgsl
    pub matmul: f64,
    /// every other shader file
    pub other: f64,
}

/// Time of one kernel (`file:kernel`) in one UNet step.
#[derive(Clone, Debug, Serialize)]
pub struct KernelTime {
    pub kernel: String,
    pub family: &'static str,
    pub ms: f64,
    pub share: f64,
    pub dispatches: u64,
}

#[derive(Clone, Debug, Serialize)]
pub struct BenchReport {
    pub adapter: String,
    pub backend: String,
    pub dtype: &'static str,
    pub size: usize,
    /// `synthetic SD-1.5` or the folder given with `--model`.
    pub model: String,
    pub plan_only: bool,
    /// Timed repetitions per phase (after one warm-up); 0 with `--plan`.
    pub steps: usize,
    /// `gpu-timestamps`, `wall-clock`, or null with `--plan`.
    pub timing: Option<&'static str>,
    /// Text encoder, batch 2 (prompt + negative prompt).
    pub text_encoder_ms: Option<f64>,
    /// One classifier-free-guidance UNet step (batch 2).
    pub unet_step_ms: Option<f64>,
    /// VAE decode of one image.
    pub vae_decode_ms: Option<f64>,
    /// Wall clock of the UNet step (submit + wait; with timestamps on, every dispatch
    /// is in its own pass, which adds overhead).
    pub unet_step_wall_ms: Option<f64>,
    /// FLOPs of one CFG UNet step / `unet_step_ms`, in TFLOP/s.
    pub unet_tflops: Option<f64>,
    /// FLOPs of one CFG UNet step (conv, matmul and attention, counted from the shapes).
    pub unet_gflop_per_step: f64,
    pub dispatches_per_unet_step: u64,
    /// Pool growth during one CFG UNet step (activations).
    pub activation_bytes_per_unet_step: u64,
    pub weights_bytes: u64,
    /// Highest total of GPU buffers (weights included).
    pub peak_bytes: u64,
    pub max_buffer_bytes: u64,
    /// Share of `unet_step_ms` per op family (null without timestamps or with `--plan`).
    pub shares: Option<Shares>,
    /// GPU time of each kernel in one UNet step, most expensive first (empty without
    /// timestamps).
    pub unet_kernels: Vec<KernelTime>,
    /// Seconds to make (or load) and upload the weights; null with `--plan`.
    pub load_s: Option<f64>,
    /// `--plan`: heap allocations of one CFG UNet step after warm-up on the planning GPU
    /// (null without the counting allocator the CLI installs, and without `--plan`).
    pub heap_allocations_per_unet_step: Option<u64>,
    /// `--plan`: CPU time to record one CFG UNet step on the planning GPU, µs (median).
    pub cpu_record_us_per_unet_step: Option<f64>,
    /// `--plan`: the UNet step's and the VAE decode's dispatches and command buffers
    /// ([`crate::plan::Submissions`]), and the larger of their largest dispatch / command
    /// buffer in GFLOP.
    pub unet_step_submissions: Option<crate::plan::Submissions>,
    pub vae_decode_submissions: Option<crate::plan::Submissions>,
    pub largest_dispatch_gflop: Option<f64>,
    pub largest_command_buffer_gflop: Option<f64>,
}

/// Op family of a dispatch label `file:kernel`.
pub fn family(label: &str) -> &'static str {
    match label.split(':').next().unwrap_or("") {
        "conv2d.wgsl" => "conv",
        "attention.wgsl" | "attention_v2.wgsl" => "attention",
        "norm.wgsl" | "softmax.wgsl" => "norm",
        "matmul.wgsl" => "matmul",
        _ => "other",
    }
}

/// Synthetic weights with the shapes of `cfg`, uploaded directly: uniform in
/// ±1/sqrt(fan_in) for weights, 1 for norm scales, small biases
/// (the rule of `sd-webgpu synth`).
pub fn synthetic_weights(gpu: &Gpu, cfg: &Configs, dtype: DType, seed: u64) -> crate::Result<Weights> {
    let (_, _, _, specs) = crate::model::build(cfg);
    let mut rng = Rng::new(seed);
    let mut w = Weights::default();
    for s in specs {
        let (c, scale) = crate::weights::synth::value_scale(&s);
        let n: usize = s.shape.iter().product();
        let mut v = rng.vec(n, -scale, scale);
        if c != 0.0 {
            v.iter_mut().for_each(|x| *x += c);
        }
        let t = gpu.upload(&s.shape, dtype, &v)?;
        w.insert(s.name, t);
    }
    Ok(w)
}

fn median(v: &[f64]) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(|a, b| a.total_cmp(b));
    let n = s.len();
    if n % 2 == 1 {
        s[n / 2]
    } else {
        (s[n / 2 - 1] + s[n / 2]) / 2.0
    }
}

struct PhaseRun {
    wall_s: f64,
    /// Sum of the dispatches' GPU times (profiling on).
    gpu_ns: Option<u64>,
    profile: Vec<(String, u64, u64)>,
    flops: f64,
    dispatches: u64,
    activation_bytes: u64,
    peak_bytes: u64,
}

/// Run one phase to completion. `fresh_pool`: trim the pool and restart the peak first
/// (memory figures as the planner counts them).
async fn phase(gpu: &Gpu, fresh_pool: bool, f: &dyn Fn() -> crate::Result<Tensor>) -> crate::Result<PhaseRun> {
    gpu.sync().await?;
    gpu.take_profile().await?;
    if fresh_pool {
        gpu.trim_pool();
        gpu.reset_peak();
    }
    let s0: PoolStats = gpu.pool_stats();
    let t = Instant::now();
    let out = f()?;
    gpu.sync().await?;
    let wall_s = t.elapsed().as_secs_f64();
    let s1 = gpu.pool_stats();
    drop(out);
    let profiling = gpu.profiling();
    let profile = gpu.take_profile().await?;
    Ok(PhaseRun {
        wall_s,
        gpu_ns: profiling.then(|| profile.iter().map(|p| p.1).sum()),
        profile,
        flops: s1.flops - s0.flops,
        dispatches: s1.dispatches - s0.dispatches,
        activation_bytes: s1.peak_bytes.saturating_sub(s0.total_bytes),
        peak_bytes: s1.peak_bytes,
    })
}

fn configs(args: &BenchArgs) -> crate::Result<Configs> {
    match &args.model {
        Some(dir) => crate::model::read_configs(dir),
        None => Ok(Configs::default()),
    }
}

fn model_name(args: &BenchArgs) -> String {
    match &args.model {
        Some(dir) => dir.display().to_string(),
        None => "synthetic SD-1.5".into(),
    }
}

/// CPU cost of recording one CFG UNet step on the planning GPU (nothing is dispatched,
/// so this is the model code, the ops and the recorder alone): median over
/// [`CPU_STEPS`] steps after [`CPU_WARMUP`] warm-up steps.
#[derive(Clone, Copy, Debug)]
pub struct RecordCost {
    /// Heap allocations of one step (the fewest seen); `None` without the counting
    /// allocator ([`crate::alloc_count`]; the CLI installs it).
    pub allocations: Option<u64>,
    /// Microseconds to record (and flush) one step.
    pub us: f64,
}

pub const CPU_WARMUP: usize = 2;
pub const CPU_STEPS: usize = 7;

/// Record `step` [`CPU_WARMUP`] times, then [`CPU_STEPS`] times measured ([`RecordCost`]).
pub fn record_cost(gpu: &Gpu, step: &dyn Fn() -> crate::Result<Tensor>) -> crate::Result<RecordCost> {
    let run = || -> crate::Result<()> {
        let y = step()?;
        gpu.flush()?;
        drop(y);
        Ok(())
    };
    for _ in 0..CPU_WARMUP {
        run()?;
    }
    let (mut us, mut allocs) = (Vec::new(), None::<u64>);
    us.reserve(CPU_STEPS);
    for _ in 0..CPU_STEPS {
        let a0 = crate::alloc_count::thread_allocations();
        let t = Instant::now();
        run()?;
        let dt = t.elapsed().as_secs_f64() * 1e6;
        if let (Some(a0), Some(a1)) = (a0, crate::alloc_count::thread_allocations()) {
            allocs = Some(allocs.map_or(a1 - a0, |m| m.min(a1 - a0)));
        }
        us.push(dt);
    }
    Ok(RecordCost { allocations: allocs, us: median(&us) })
}

/// FLOPs and dispatches of one CFG UNet step, counted on a planning GPU, and the CPU cost
/// of recording it.
async fn plan_unet_flops(cfg: &Configs, size: usize, dtype: DType, opts: &GpuOptions) -> crate::Result<(Gpu, f64, RecordCost)> {
    let gpu = Gpu::new(GpuOptions { plan_only: true, ..opts.clone() }).await?;
    let weights = crate::plan::placeholder_weights(&gpu, cfg, dtype, &["unet"])?;
    let (clip, unet, vae, _) = crate::model::build(cfg);
    let sd = StableDiffusion { cfg: cfg.clone(), clip, clip2: crate::model::build_clip2(cfg), tokenizer_2: None, unet, vae, weights, dtypes: dtype.into(), warnings: Vec::new(), tiny_vae: None, loras: Default::default() };
    let lat = size / 8;
    let x = gpu.empty(&[2, cfg.unet.in_channels, lat, lat], dtype)?;
    let t = gpu.upload(&[2], DType::F32, &[500.0, 500.0])?;
    let ctx = gpu.empty(&[2, cfg.clip.max_position_embeddings, cfg.unet.cross_attention_dim], dtype)?;
    let s0 = gpu.pool_stats();
    let y = sd.unet.forward(&sd.ctx(&gpu), &x, &t, &ctx)?;
    let s1 = gpu.pool_stats();
    drop(y);
    let c = sd.ctx(&gpu);
    let cost = record_cost(&gpu, &|| sd.unet.forward(&c, &x, &t, &ctx))?;
    Ok((gpu, s1.flops - s0.flops, cost))
}

/// Run the benchmark (or, with `--plan`, the planner) and return its figures.
pub async fn bench(args: &BenchArgs) -> crate::Result<BenchReport> {
    let size = args.size;
    if size == 0 || !size.is_multiple_of(64) {
        return Err(crate::Error::Unsupported { op: "bench", detail: format!("--size {size} must be a positive multiple of 64") });
    }
    let dtype = args.dtype.dtype();
    let cfg = configs(args)?;
    if args.plan {
        let opts = args.gpu_options();
        let gen = crate::pipeline::Params { width: size, height: size, steps: 20, ..Default::default() };
        let p = crate::plan::plan_with_options(&cfg, size, size, dtype, &gen, &opts).await?;
        let (pg, flops, cost) = plan_unet_flops(&cfg, size, dtype, &opts).await?;
        return Ok(BenchReport {
            adapter: p.adapter,
            backend: pg.info().backend.clone(),
            dtype: dtype.name(),
            size,
            model: model_name(args),
            plan_only: true,
            steps: 0,
            timing: None,
            text_encoder_ms: None,
            unet_step_ms: None,
            vae_decode_ms: None,
            unet_step_wall_ms: None,
            unet_tflops: None,
            unet_gflop_per_step: flops / 1e9,
            dispatches_per_unet_step: p.dispatches_per_unet_step,
            activation_bytes_per_unet_step: p.unet_step_activation_peak_bytes,
            weights_bytes: p.weights_bytes,
            peak_bytes: p.peak_bytes,
            max_buffer_bytes: p.max_buffer_bytes,
            shares: None,
            unet_kernels: Vec::new(),
            load_s: None,
            heap_allocations_per_unet_step: cost.allocations,
            cpu_record_us_per_unet_step: Some(cost.us),
            unet_step_submissions: Some(p.unet_step_submissions),
            vae_decode_submissions: Some(p.vae_decode_submissions),
            largest_dispatch_gflop: Some(p.largest_dispatch_gflop),
            largest_command_buffer_gflop: Some(p.largest_command_buffer_gflop),
        });
    }

    let gpu = Gpu::new(args.gpu_options()).await?;
    let t0 = Instant::now();
    let sd = match &args.model {
        Some(dir) => StableDiffusion::load(&gpu, dir, dtype, Some("fp16"))?,
        None => {
            let weights = synthetic_weights(&gpu, &cfg, dtype, 1)?;
            let (clip, unet, vae, _) = crate::model::build(&cfg);
            StableDiffusion { cfg: cfg.clone(), clip, clip2: crate::model::build_clip2(&cfg), tokenizer_2: None, unet, vae, weights, dtypes: dtype.into(), warnings: Vec::new(), tiny_vae: None, loras: Default::default() }
        }
    };
    gpu.sync().await?;
    let load_s = t0.elapsed().as_secs_f64();
    let weights_bytes = sd.weights.bytes();
    let mut peak = gpu.pool_stats().peak_bytes;

    // Inputs.
    let mut rng = Rng::new(7);
    let seq = cfg.clip.max_position_embeddings;
    let vocab = cfg.clip.vocab_size.max(1) as u64;
    let ids: Vec<u32> = (0..2 * seq).map(|_| (rng.next_u64() % vocab) as u32).collect();
    let ids = gpu.upload_u32(&[2, seq], &ids)?;
    let lat = size / 8;
    let xs = [2, cfg.unet.in_channels, lat, lat];
    let x = gpu.upload(&xs, dtype, &rng.vec(xs.iter().product(), -1.0, 1.0))?;
    let t = gpu.upload(&[2], DType::F32, &[500.0, 500.0])?;
    let cs = [2, seq, cfg.unet.cross_attention_dim];
    let ctx = gpu.upload(&cs, dtype, &rng.vec(cs.iter().product(), -1.0, 1.0))?;
    let zs = [1, cfg.vae.latent_channels, lat, lat];
    let z = gpu.upload(&zs, dtype, &rng.vec(zs.iter().product(), -1.0, 1.0))?;

    let c = sd.ctx(&gpu);
    let text = || sd.clip.forward(&c, &ids);
    let unet = || sd.unet.forward(&c, &x, &t, &ctx);
    let vae = || sd.vae.decode(&c, &z);
    let profiling = gpu.set_profiling(true)?;

    // Warm-up (pipelines compiled, pool filled) and the memory figures.
    let wt = phase(&gpu, true, &text).await?;
    let wu = phase(&gpu, true, &unet).await?;
    let wv = phase(&gpu, true, &vae).await?;
    peak = peak.max(wt.peak_bytes).max(wu.peak_bytes).max(wv.peak_bytes);

    let steps = args.steps.max(1);
    let (mut tt, mut tu, mut tv, mut wall_u) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let mut kernels: HashMap<String, (u64, u64)> = HashMap::new();
    let ms = |r: &PhaseRun| r.gpu_ns.map_or(r.wall_s * 1e3, |ns| ns as f64 / 1e6);
    for _ in 0..steps {
        let r = phase(&gpu, false, &text).await?;
        tt.push(ms(&r));
        let r = phase(&gpu, false, &unet).await?;
        tu.push(ms(&r));
        wall_u.push(r.wall_s * 1e3);
        for (k, ns, n) in r.profile {
            let e = kernels.entry(k).or_default();
            e.0 += ns;
            e.1 += n;
        }
        let r = phase(&gpu, false, &vae).await?;
        tv.push(ms(&r));
    }
    gpu.set_profiling(false)?;
    let stats = gpu.pool_stats();

    let total_ns: u64 = kernels.values().map(|v| v.0).sum();
    let (shares, unet_kernels) = if profiling && total_ns > 0 {
        let mut s = Shares::default();
        let mut list = Vec::new();
        for (k, (ns, n)) in &kernels {
            let share = *ns as f64 / total_ns as f64;
            let fam = family(k);
            match fam {
                "conv" => s.conv += share,
                "attention" => s.attention += share,
                "norm" => s.norm += share,
                "matmul" => s.matmul += share,
                _ => s.other += share,
            }
            list.push(KernelTime {
                kernel: k.clone(),
                family: fam,
                ms: *ns as f64 / 1e6 / steps as f64,
                share,
                dispatches: n / steps as u64,
            });
        }
        list.sort_by(|a, b| b.ms.total_cmp(&a.ms).then_with(|| a.kernel.cmp(&b.kernel)));
        (Some(s), list)
    } else {
        (None, Vec::new())
    };
    let unet_ms = median(&tu);
    let info = gpu.info();
    Ok(BenchReport {
        adapter: info.name.clone(),
        backend: info.backend.clone(),
        dtype: dtype.name(),
        size,
        model: model_name(args),
        plan_only: false,
        steps,
        timing: Some(if profiling { "gpu-timestamps" } else { "wall-clock" }),
        text_encoder_ms: Some(median(&tt)),
        unet_step_ms: Some(unet_ms),
        vae_decode_ms: Some(median(&tv)),
        unet_step_wall_ms: Some(median(&wall_u)),
        unet_tflops: (unet_ms > 0.0).then(|| wu.flops / (unet_ms / 1e3) / 1e12),
        unet_gflop_per_step: wu.flops / 1e9,
        dispatches_per_unet_step: wu.dispatches,
        activation_bytes_per_unet_step: wu.activation_bytes,
        weights_bytes,
        peak_bytes: peak,
        max_buffer_bytes: stats.max_buffer_bytes,
        shares,
        unet_kernels,
        load_s: Some(load_s),
        heap_allocations_per_unet_step: None,
        cpu_record_us_per_unet_step: None,
        unet_step_submissions: None,
        vae_decode_submissions: None,
        largest_dispatch_gflop: None,
        largest_command_buffer_gflop: None,
    })
}

fn mib(b: u64) -> String {
    format!("{:.1} MiB", b as f64 / (1u64 << 20) as f64)
}

fn opt_ms(v: Option<f64>) -> String {
    v.map_or_else(|| "—".into(), |v| format!("{v:.2} ms"))
}

/// The readable table of a report.
pub fn table(r: &BenchReport) -> String {
    use std::fmt::Write;
    let mut s = String::new();
    let how = match r.timing {
        Some(t) => format!("{t}, median of {} after 1 warm-up", r.steps),
        None => "plan only: nothing dispatched".into(),
    };
    let _ = writeln!(s, "sd-webgpu bench: {} at {}×{}, {} storage", r.model, r.size, r.size, r.dtype);
    let _ = writeln!(s, "adapter: {} ({}); {how}", r.adapter, r.backend);
    if let Some(l) = r.load_s {
        let _ = writeln!(s, "weights made / loaded and uploaded in {l:.2} s");
    }
    let _ = writeln!(s);
    let _ = writeln!(s, "{:<36} {:>14}", "text encoder (batch 2)", opt_ms(r.text_encoder_ms));
    let tflops = r.unet_tflops.map_or_else(String::new, |t| if t >= 0.1 { format!("  {t:.2} TFLOP/s") } else { format!("  {:.3} GFLOP/s", t * 1e3) });
    let _ = writeln!(s, "{:<36} {:>14}{tflops}", "UNet step (CFG, batch 2)", opt_ms(r.unet_step_ms));
    if r.unet_step_wall_ms.is_some() && r.timing == Some("gpu-timestamps") {
        let _ = writeln!(s, "{:<36} {:>14}", "  wall clock (one pass per dispatch)", opt_ms(r.unet_step_wall_ms));
    }
    let _ = writeln!(s, "{:<36} {:>14}", "VAE decode (batch 1)", opt_ms(r.vae_decode_ms));
    let _ = writeln!(s);
    let _ = writeln!(s, "{:<36} {:>14.3}", "GFLOP per UNet step", r.unet_gflop_per_step);
    let _ = writeln!(s, "{:<36} {:>14}", "dispatches per UNet step", r.dispatches_per_unet_step);
    if let Some(us) = r.cpu_record_us_per_unet_step {
        let _ = writeln!(s, "{:<36} {:>14}", "CPU to record a UNet step", format!("{:.0} µs", us));
    }
    if let Some(n) = r.heap_allocations_per_unet_step {
        let _ = writeln!(s, "{:<36} {:>14}", "heap allocations per UNet step", n);
    }
    for (name, sub) in [("UNet step", &r.unet_step_submissions), ("VAE decode", &r.vae_decode_submissions)] {
        if let Some(x) = sub {
            let _ = writeln!(
                s,
                "{:<36} {:>20}",
                format!("{name}: dispatches / command buffers"),
                format!("{} / {}", x.dispatches, x.command_buffers)
            );
            let _ = writeln!(
                s,
                "{:<36} {:>20}",
                format!("{name}: largest dispatch / cmd buffer"),
                format!("{:.1} / {:.1} GFLOP", x.largest_dispatch_gflop, x.largest_command_buffer_gflop)
            );
        }
    }
    let _ = writeln!(s, "{:<36} {:>14}", "activations per UNet step", mib(r.activation_bytes_per_unet_step));
    let _ = writeln!(s, "{:<36} {:>14}", "weights", mib(r.weights_bytes));
    let _ = writeln!(s, "{:<36} {:>14}", "peak GPU buffers", mib(r.peak_bytes));
    let _ = writeln!(s, "{:<36} {:>14}", "largest buffer", mib(r.max_buffer_bytes));
    if let Some(sh) = &r.shares {
        let _ = writeln!(s);
        let _ = writeln!(
            s,
            "UNet time by op family: conv {:.1}%  attention {:.1}%  norm {:.1}%  matmul {:.1}%  other {:.1}%",
            sh.conv * 100.0,
            sh.attention * 100.0,
            sh.norm * 100.0,
            sh.matmul * 100.0,
            sh.other * 100.0
        );
        let _ = writeln!(s, "{:<40} {:>10} {:>8} {:>11}", "kernel", "ms/step", "share", "dispatches");
        for k in &r.unet_kernels {
            let _ = writeln!(s, "{:<40} {:>10.3} {:>7.1}% {:>11}", k.kernel, k.ms, k.share * 100.0, k.dispatches);
        }
    } else if r.timing == Some("wall-clock") {
        let _ = writeln!(s, "\n(no TIMESTAMP_QUERY on this adapter: no per-kernel times)");
    }
    s
}

/// `sd-webgpu bench`: run and print (JSON or table).
pub async fn run(args: BenchArgs) -> crate::Result<()> {
    let r = bench(&args).await?;
    if let Some(path) = &args.json_file {
        std::fs::write(path, serde_json::to_string(&r).unwrap_or_default())
            .map_err(|e| crate::Error::Invalid(format!("{}: {e}", path.display())))?;
    }
    if args.json {
        println!("{}", serde_json::to_string(&r).unwrap_or_default());
    } else {
        print!("{}", table(&r));
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------
// `sd-webgpu bench-lora`

/// The flags of `sd-webgpu bench-lora`.
#[derive(Clone, Debug, clap::Args)]
pub struct LoraBenchArgs {
    /// The LoRA file (e.g. `sd-webgpu synth --out DIR --lora-rank 64 --lora-only` writes
    /// DIR/lora-rank64.safetensors for SD-1.5).
    #[arg(long)]
    pub lora: PathBuf,
    /// A diffusers folder to load (default: synthetic SD-1.5 weights made in memory).
    #[arg(long)]
    pub model: Option<PathBuf>,
    /// GPU storage of the weights (the LoRA's factors are stored the same way).
    #[arg(long, value_enum, default_value_t = BenchDtype::F16)]
    pub dtype: BenchDtype,
    /// Scale of the re-merge (the first merge is at scale 1).
    #[arg(long, default_value_t = 0.5, allow_negative_numbers = true)]
    pub rescale: f32,
    /// Leave out the last phase, the in-place merge without base copies that the CLI does
    /// (the model is then left as it was loaded).
    #[arg(long)]
    pub no_in_place: bool,
    /// Print one JSON object instead of a table.
    #[arg(long)]
    pub json: bool,
    /// On the planning GPU (allocates exactly as a real run, dispatches nothing): the memory
    /// figures of the real shapes without the merge work (the times then mean nothing).
    #[arg(long, conflicts_with = "model")]
    pub plan: bool,
}

#[derive(Parser)]
#[command(name = "bench-lora")]
struct LoraWrap {
    #[command(flatten)]
    args: LoraBenchArgs,
}

impl LoraBenchArgs {
    /// Parse the flags as the CLI does (`args` without the `bench-lora` word).
    pub fn parse_from<S: AsRef<str>>(args: &[S]) -> crate::Result<LoraBenchArgs> {
        let it = std::iter::once("bench-lora".to_string()).chain(args.iter().map(|s| s.as_ref().to_string()));
        LoraWrap::try_parse_from(it).map(|w| w.args).map_err(|e| crate::Error::Invalid(e.to_string()))
    }
}

/// One timed LoRA phase: the call, then the GPU finished (flush + a one-value readback).
#[derive(Clone, Debug, Serialize)]
pub struct LoraPhase {
    /// What it did: `load`, `merge`, `remerge`, `undo`, `merge_in_place`.
    pub phase: &'static str,
    /// The active LoRA scale after the phase (0: none).
    pub scale: f32,
    /// Wall clock of the call and the GPU work it recorded, in seconds.
    pub wall_s: f64,
    /// Stored weights rebuilt (merged or given back their base).
    pub tensors: usize,
    /// Module merges run on the GPU.
    pub merges: usize,
    pub dispatches: u64,
    /// Floating-point operations of the merges (2 · rows · cols · rank each).
    pub gflop: f64,
    /// GPU buffers held after the phase minus before (bytes; negative: freed).
    pub held_delta_bytes: i64,
    /// Highest total of GPU buffers during the phase minus the total before it.
    pub peak_extra_bytes: u64,
    /// Base copies held after the phase.
    pub base_bytes: u64,
}

#[derive(Clone, Debug, Serialize)]
pub struct LoraBenchReport {
    pub adapter: String,
    pub backend: String,
    pub dtype: &'static str,
    /// `synthetic SD-1.5` or the folder given with `--model`.
    pub model: String,
    pub weights_bytes: u64,
    /// Seconds to make (or load) and upload the model's weights (set by [`bench_lora`]).
    pub model_load_s: Option<f64>,
    pub lora: String,
    pub lora_file_bytes: u64,
    pub format: &'static str,
    pub hash: String,
    pub rank_min: usize,
    pub rank_max: usize,
    pub unet_modules: usize,
    pub text_encoder_modules: usize,
    /// Notes of the LoRA loader (keys matching no module).
    pub warnings: Vec<String>,
    /// GPU bytes of the LoRA's factors (held while it is loaded).
    pub factor_bytes: u64,
    /// The phases in order: load, merge (scale 1), remerge (`--rescale`), undo (no LoRA),
    /// merge_in_place (scale 1, no base copies; left out with `--no-in-place`).
    pub phases: Vec<LoraPhase>,
    /// Base copies held while the LoRA is active (keep_base, exact undo).
    pub base_bytes: u64,
    /// Weights the merge replaced (their buffers changed) and their bytes: what the base
    /// copies should hold.
    pub changed_weights: usize,
    pub changed_weights_bytes: u64,
    /// After the undo every weight is the very buffer it was before the merge.
    pub undo_restored: bool,
    /// Highest total of GPU buffers over the LoRA phases (weights included).
    pub peak_bytes: u64,
}

/// Run a few merges on tiny scratch tensors of each storage type so the timed phases do not
/// include compiling the merge and copy pipelines.
async fn warm_lora_kernels(gpu: &Gpu, dtypes: &[DType]) -> crate::Result<()> {
    for &d in dtypes {
        let w = gpu.upload(&[4, 6], d, &[0.5; 24])?;
        let up = gpu.upload(&[4, 2], d, &[0.25; 8])?;
        let down = gpu.upload(&[2, 6], d, &[0.25; 12])?;
        let c = crate::ops::cast(gpu, &w, d)?;
        crate::ops::lora_merge(gpu, &c, &up, &down, crate::ops::MergeRows::default(), 1.0)?;
        gpu.sync().await?;
    }
    Ok(())
}

/// Every weight's tensor (clones share the buffers: holding them costs no GPU memory while
/// the weights hold them too).
fn weight_map(sd: &StableDiffusion) -> HashMap<String, Tensor> {
    sd.weights.iter().map(|(n, t)| (n.clone(), t.clone())).collect()
}

fn same_buffer(a: &Tensor, b: &Tensor) -> bool {
    a.buffer() == b.buffer()
}

fn signed_delta(after: u64, before: u64) -> i64 {
    if after >= before {
        i64::try_from(after - before).unwrap_or(i64::MAX)
    } else {
        i64::try_from(before - after).map_or(i64::MIN, |d| -d)
    }
}

/// Settle the pool (work finished, free buffers dropped) and start a new peak.
async fn settle(gpu: &Gpu) -> crate::Result<PoolStats> {
    gpu.sync().await?;
    gpu.trim_pool();
    gpu.reset_peak();
    Ok(gpu.pool_stats())
}

/// Time `f` and the GPU work it records (finished: sync), with the pool's figures.
async fn lora_phase(gpu: &Gpu, phase: &'static str, scale: f32, f: impl FnOnce() -> crate::Result<crate::model::lora::MergeReport>) -> crate::Result<(LoraPhase, u64)> {
    let s0 = settle(gpu).await?;
    let t = Instant::now();
    let r = f()?;
    gpu.sync().await?;
    let wall_s = t.elapsed().as_secs_f64();
    eprintln!("bench-lora: {phase} (scale {scale}) in {wall_s:.2} s: {} weights, {} merges", r.tensors, r.merges);
    gpu.trim_pool();
    let s1 = gpu.pool_stats();
    Ok((
        LoraPhase {
            phase,
            scale,
            wall_s,
            tensors: r.tensors,
            merges: r.merges,
            dispatches: s1.dispatches - s0.dispatches,
            gflop: (s1.flops - s0.flops) / 1e9,
            held_delta_bytes: signed_delta(s1.total_bytes, s0.total_bytes),
            peak_extra_bytes: s1.peak_bytes.saturating_sub(s0.total_bytes),
            base_bytes: 0,
        },
        s1.peak_bytes,
    ))
}

/// The LoRA benchmark on a loaded model: load `args.lora`, merge it at scale 1 (base copies
/// kept), re-merge at `args.rescale`, undo (no LoRA), and unless `args.no_in_place` merge it
/// at scale 1 in place (no base copies, as the CLI does; the model keeps it merged).
/// Each phase is timed from the call until the GPU has finished its work.
pub async fn bench_lora_on(gpu: &Gpu, sd: &mut StableDiffusion, model: &str, args: &LoraBenchArgs) -> crate::Result<LoraBenchReport> {
    if !args.rescale.is_finite() || args.rescale == 0.0 || args.rescale == 1.0 {
        return Err(crate::Error::Invalid(format!("--rescale {} must be a number other than 0 and 1 (the merge is at 1; 0 is no LoRA)", args.rescale)));
    }
    let file = args.lora.display().to_string();
    let file_bytes = std::fs::metadata(&args.lora).map_err(|e| crate::weights::WeightError::Io { file: file.clone(), detail: e.to_string() })?.len();
    let name = crate::model::lora::name_of_file(&file);
    let mut dts = vec![sd.dtypes.unet];
    if sd.dtypes.text_encoder != sd.dtypes.unet {
        dts.push(sd.dtypes.text_encoder);
    }
    warm_lora_kernels(gpu, &dts).await?;
    let keep_base = sd.loras.keep_base;
    sd.loras.keep_base = true;
    let mut phases = Vec::new();
    let mut peak = 0u64;

    // Load: file → factors on the GPU.
    let s0 = settle(gpu).await?;
    let t = Instant::now();
    let (format, hash, ranks, counts, warnings, factor_bytes) = {
        let l = sd.load_lora(gpu, &args.lora, &name)?;
        (l.format.name(), l.hash.clone(), l.ranks(), l.counts(), l.warnings.clone(), l.bytes())
    };
    gpu.sync().await?;
    let load_s = t.elapsed().as_secs_f64();
    gpu.trim_pool();
    let s1 = gpu.pool_stats();
    peak = peak.max(s1.peak_bytes);
    eprintln!("bench-lora: loaded {name} in {load_s:.2} s");
    phases.push(LoraPhase {
        phase: "load",
        scale: 0.0,
        wall_s: load_s,
        tensors: 0,
        merges: 0,
        dispatches: s1.dispatches - s0.dispatches,
        gflop: 0.0,
        held_delta_bytes: signed_delta(s1.total_bytes, s0.total_bytes),
        peak_extra_bytes: s1.peak_bytes.saturating_sub(s0.total_bytes),
        base_bytes: sd.loras.base_bytes(),
    });

    let before = weight_map(sd);
    let one = [(name.clone(), 1.0f32)];
    let (mut p, pk) = lora_phase(gpu, "merge", 1.0, || sd.set_loras(gpu, &one)).await?;
    p.base_bytes = sd.loras.base_bytes();
    let base_bytes = p.base_bytes;
    peak = peak.max(pk);
    phases.push(p);
    let after = weight_map(sd);
    let changed: Vec<&String> = after.iter().filter(|(n, t)| before.get(*n).is_none_or(|b| !same_buffer(b, t))).map(|(n, _)| n).collect();
    let changed_weights = changed.len();
    let changed_weights_bytes = changed.iter().map(|n| after[*n].bytes()).sum();
    drop(after);

    let re = [(name.clone(), args.rescale)];
    let (mut p, pk) = lora_phase(gpu, "remerge", args.rescale, || sd.set_loras(gpu, &re)).await?;
    p.base_bytes = sd.loras.base_bytes();
    peak = peak.max(pk);
    phases.push(p);

    let (mut p, pk) = lora_phase(gpu, "undo", 0.0, || sd.set_loras(gpu, &[])).await?;
    p.base_bytes = sd.loras.base_bytes();
    peak = peak.max(pk);
    phases.push(p);
    let now = weight_map(sd);
    let undo_restored = now.len() == before.len() && now.iter().all(|(n, t)| before.get(n).is_some_and(|b| same_buffer(b, t)));
    drop((now, before));

    if !args.no_in_place {
        sd.loras.keep_base = false;
        let (mut p, pk) = lora_phase(gpu, "merge_in_place", 1.0, || sd.set_loras(gpu, &one)).await?;
        p.base_bytes = sd.loras.base_bytes();
        peak = peak.max(pk);
        phases.push(p);
    } else {
        sd.loras.keep_base = keep_base;
    }

    let info = gpu.info();
    Ok(LoraBenchReport {
        adapter: info.name.clone(),
        backend: info.backend.clone(),
        dtype: sd.dtypes.unet.name(),
        model: model.to_string(),
        weights_bytes: sd.weights.bytes(),
        model_load_s: None,
        lora: file,
        lora_file_bytes: file_bytes,
        format,
        hash,
        rank_min: ranks.0,
        rank_max: ranks.1,
        unet_modules: counts.0,
        text_encoder_modules: counts.1,
        warnings,
        factor_bytes,
        phases,
        base_bytes,
        changed_weights,
        changed_weights_bytes,
        undo_restored,
        peak_bytes: peak,
    })
}

/// `sd-webgpu bench-lora`: make (or load) the model, then [`bench_lora_on`].
pub async fn bench_lora(args: &LoraBenchArgs) -> crate::Result<LoraBenchReport> {
    let dtype = args.dtype.dtype();
    let gpu = Gpu::new(GpuOptions { plan_only: args.plan, ..Default::default() }).await?;
    let t0 = Instant::now();
    let mut sd = match &args.model {
        Some(dir) => StableDiffusion::load(&gpu, dir, dtype, Some("fp16"))?,
        None if args.plan => {
            let cfg = Configs::default();
            let weights = crate::plan::placeholder_weights(&gpu, &cfg, dtype, &crate::model::COMPONENTS)?;
            StableDiffusion::new(&gpu, cfg, dtype, weights, Vec::new())?
        }
        None => {
            let cfg = Configs::default();
            let weights = synthetic_weights(&gpu, &cfg, dtype, 1)?;
            // As a loaded model: the q/k/v (and k/v) weights fused.
            StableDiffusion::new(&gpu, cfg, dtype, weights, Vec::new())?
        }
    };
    gpu.sync().await?;
    let load_s = t0.elapsed().as_secs_f64();
    eprintln!("bench-lora: model weights ({:.1} MiB) made / loaded in {load_s:.1} s", sd.weights.bytes() as f64 / (1u64 << 20) as f64);
    let model = match &args.model {
        Some(dir) => dir.display().to_string(),
        None if args.plan => "SD-1.5 shapes on the planning GPU (memory only: nothing dispatched)".into(),
        None => "synthetic SD-1.5".into(),
    };
    let mut r = bench_lora_on(&gpu, &mut sd, &model, args).await?;
    r.model_load_s = Some(load_s);
    Ok(r)
}

fn signed_mib(b: i64) -> String {
    format!("{:+.1} MiB", b as f64 / (1u64 << 20) as f64)
}

/// The readable table of a LoRA report.
pub fn lora_table(r: &LoraBenchReport) -> String {
    use std::fmt::Write;
    let mut s = String::new();
    let rank = if r.rank_min == r.rank_max { r.rank_max.to_string() } else { format!("{}–{}", r.rank_min, r.rank_max) };
    let _ = writeln!(s, "sd-webgpu bench-lora: {} on {}, {} storage", r.lora, r.model, r.dtype);
    let _ = writeln!(s, "adapter: {} ({}); wall clock of each call until the GPU finished (flush + one-value readback), kernels compiled before", r.adapter, r.backend);
    let _ = writeln!(
        s,
        "LoRA: {}, rank {rank}, {} UNet + {} text-encoder modules, file {}, hash {}",
        r.format,
        r.unet_modules,
        r.text_encoder_modules,
        mib(r.lora_file_bytes),
        r.hash
    );
    match r.model_load_s {
        Some(l) => {
            let _ = writeln!(s, "model weights {} (made / loaded and uploaded in {l:.1} s)", mib(r.weights_bytes));
        }
        None => {
            let _ = writeln!(s, "model weights {}", mib(r.weights_bytes));
        }
    }
    for w in &r.warnings {
        let _ = writeln!(s, "warning: {w}");
    }
    let _ = writeln!(s);
    let _ = writeln!(s, "{:<30} {:>10} {:>8} {:>7} {:>8} {:>13} {:>13} {:>12}", "phase", "time", "weights", "merges", "GFLOP", "held after", "peak extra", "base copies");
    for p in &r.phases {
        let what = match p.phase {
            "load" => "load (file → GPU factors)".to_string(),
            "merge" => "merge (scale 1, keep base)".to_string(),
            "remerge" => format!("re-merge (scale {})", p.scale),
            "undo" => "undo (no LoRA)".to_string(),
            "merge_in_place" => "merge in place (scale 1, CLI)".to_string(),
            other => other.to_string(),
        };
        let _ = writeln!(
            s,
            "{:<30} {:>8.2} s {:>8} {:>7} {:>8.2} {:>13} {:>13} {:>12}",
            what,
            p.wall_s,
            p.tensors,
            p.merges,
            p.gflop,
            signed_mib(p.held_delta_bytes),
            mib(p.peak_extra_bytes),
            mib(p.base_bytes)
        );
    }
    let _ = writeln!(s);
    let _ = writeln!(s, "{:<44} {:>12}", "LoRA factors on the GPU (while loaded)", mib(r.factor_bytes));
    let _ = writeln!(s, "{:<44} {:>12}  ({} weights replaced, {})", "base copies (while active, exact undo)", mib(r.base_bytes), r.changed_weights, mib(r.changed_weights_bytes));
    let _ = writeln!(s, "{:<44} {:>12}", "peak GPU buffers (weights included)", mib(r.peak_bytes));
    let _ = writeln!(s, "{:<44} {:>12}", "undo gave back the very base buffers", if r.undo_restored { "yes" } else { "NO" });
    s
}

/// `sd-webgpu bench-lora`: run and print (JSON or table).
pub async fn run_lora(args: LoraBenchArgs) -> crate::Result<()> {
    let r = bench_lora(&args).await?;
    if args.json {
        println!("{}", serde_json::to_string(&r).unwrap_or_default());
    } else {
        print!("{}", lora_table(&r));
    }
    Ok(())
}
