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
use crate::selftest::Rng;
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
    /// A diffusers folder whose configs and weights to use (default: synthetic SD-1.5
    /// weights made in memory).
    #[arg(long)]
    pub model: Option<PathBuf>,
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
}

/// Op family of a dispatch label `file:kernel`.
pub fn family(label: &str) -> &'static str {
    match label.split(':').next().unwrap_or("") {
        "conv2d.wgsl" => "conv",
        "attention.wgsl" => "attention",
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

/// FLOPs and dispatches of one CFG UNet step, counted on a planning GPU.
async fn plan_unet_flops(cfg: &Configs, size: usize, dtype: DType) -> crate::Result<(Gpu, f64)> {
    let gpu = Gpu::new(GpuOptions { plan_only: true, ..Default::default() }).await?;
    let weights = crate::plan::placeholder_weights(&gpu, cfg, dtype, &["unet"])?;
    let (clip, unet, vae, _) = crate::model::build(cfg);
    let sd = StableDiffusion { cfg: cfg.clone(), clip, unet, vae, weights, dtypes: dtype.into(), warnings: Vec::new(), tiny_vae: None };
    let lat = size / 8;
    let x = gpu.empty(&[2, cfg.unet.in_channels, lat, lat], dtype)?;
    let t = gpu.upload(&[2], DType::F32, &[500.0, 500.0])?;
    let ctx = gpu.empty(&[2, cfg.clip.max_position_embeddings, cfg.unet.cross_attention_dim], dtype)?;
    let s0 = gpu.pool_stats();
    let y = sd.unet.forward(&sd.ctx(&gpu), &x, &t, &ctx)?;
    let s1 = gpu.pool_stats();
    drop(y);
    Ok((gpu, s1.flops - s0.flops))
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
        let p = crate::plan::plan(&cfg, size, size, dtype).await?;
        let (pg, flops) = plan_unet_flops(&cfg, size, dtype).await?;
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
        });
    }

    let gpu = Gpu::new(GpuOptions::default()).await?;
    let t0 = Instant::now();
    let sd = match &args.model {
        Some(dir) => StableDiffusion::load(&gpu, dir, dtype, Some("fp16"))?,
        None => {
            let weights = synthetic_weights(&gpu, &cfg, dtype, 1)?;
            let (clip, unet, vae, _) = crate::model::build(&cfg);
            StableDiffusion { cfg: cfg.clone(), clip, unet, vae, weights, dtypes: dtype.into(), warnings: Vec::new(), tiny_vae: None }
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
    if args.json {
        println!("{}", serde_json::to_string(&r).unwrap_or_default());
    } else {
        print!("{}", table(&r));
    }
    Ok(())
}
