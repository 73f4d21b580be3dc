//! Memory planning: run the real model code on a planning GPU (same allocations, same
//! pool, nothing created or dispatched) and report weights, activation peaks and the
//! largest buffer.
use serde::Serialize;

use crate::gpu::{DType, Gpu, GpuOptions, PoolStats};
use crate::model::{Configs, Dtypes, StableDiffusion};
use crate::pipeline::Params;
use crate::weights::Weights;

#[derive(Clone, Debug, Serialize)]
pub struct PlanReport {
    pub adapter: String,
    pub dtype: &'static str,
    pub size: [usize; 2],
    /// Batch of the UNet call (2 with classifier-free guidance).
    pub unet_batch: usize,
    pub weights_bytes: u64,
    pub weights_bytes_unet: u64,
    pub weights_bytes_vae: u64,
    pub weights_bytes_text_encoder: u64,
    /// Pool growth during the text encoder (batch 2), the UNet step and the VAE decode (batch 1).
    pub text_encoder_activation_peak_bytes: u64,
    pub unet_step_activation_peak_bytes: u64,
    pub vae_decode_activation_peak_bytes: u64,
    /// Highest total of GPU buffers over a whole generation (weights included; the pool is
    /// trimmed between the phases).
    pub peak_bytes: u64,
    pub max_buffer_bytes: u64,
    pub dispatches_per_unet_step: u64,
    pub dispatches_text_encoder: u64,
    pub dispatches_vae_decode: u64,
    /// The whole generation (the pipeline itself, planned): its settings and figures.
    pub generation_steps: usize,
    pub generation_batch: usize,
    pub generation_img2img: bool,
    pub generation: GenerationPlan,
    /// Submissions of one CFG UNet step and of one VAE decode (the watchdog's view).
    pub unet_step_submissions: Submissions,
    pub vae_decode_submissions: Submissions,
    /// The larger of the two phases' figures.
    pub largest_dispatch_gflop: f64,
    pub largest_command_buffer_gflop: f64,
}

/// How a phase reaches the GPU: its dispatches and command buffers, and the largest of
/// each in GFLOP (conv / matmul / attention FLOPs counted from the shapes).
#[derive(Clone, Copy, Debug, Serialize)]
pub struct Submissions {
    pub dispatches: u64,
    pub command_buffers: u64,
    pub largest_dispatch_gflop: f64,
    pub largest_command_buffer_gflop: f64,
}

impl Submissions {
    /// Between two statistics, the second taken after a flush and with the largest
    /// figures restarted ([`Gpu::reset_peak`]) before the first.
    pub fn between(a: &PoolStats, b: &PoolStats) -> Submissions {
        Submissions {
            dispatches: b.dispatches - a.dispatches,
            command_buffers: b.submits - a.submits,
            largest_dispatch_gflop: b.largest_dispatch_flops / 1e9,
            largest_command_buffer_gflop: b.largest_command_buffer_flops / 1e9,
        }
    }
}

/// Weights as uninitialised (zeroed on real GPUs) tensors with the model's shapes.
pub fn placeholder_weights(gpu: &Gpu, cfg: &Configs, dtypes: impl Into<Dtypes>, components: &[&str]) -> crate::Result<Weights> {
    let dtypes = dtypes.into();
    let (_, _, _, specs) = crate::model::build(cfg);
    let mut w = Weights::default();
    for s in specs {
        if components.iter().any(|c| s.name.starts_with(&format!("{c}/"))) {
            let t = gpu.empty(&s.shape, dtypes.of(&s.name))?;
            w.insert(s.name, t);
        }
    }
    Ok(w)
}

fn component_bytes(w: &Weights, cfg: &Configs, dtype: DType, c: &str) -> u64 {
    let (_, _, _, specs) = crate::model::build(cfg);
    let _ = w;
    specs
        .iter()
        .filter(|s| s.name.starts_with(&format!("{c}/")))
        .map(|s| dtype.buffer_bytes(s.shape.iter().product()).div_ceil(256) * 256)
        .sum()
}

/// The memory of one whole generation: [`crate::pipeline::generate`] itself run on a planning
/// GPU (every allocation, pool reuse and trim exactly as a real run; nothing dispatched).
#[derive(Clone, Debug, Serialize)]
pub struct GenerationPlan {
    /// GPU buffers of the weights (each rounded to the pool's 256-byte granule).
    pub weights_bytes: u64,
    /// Highest total of GPU buffers during the generation (weights included): what
    /// `stats().gpuPeakBytes` reports after a real run with the same settings.
    pub peak_bytes: u64,
    pub max_buffer_bytes: u64,
    pub dispatches: u64,
    /// Floating-point operations of the whole generation (matmuls, convolutions and attention,
    /// counted from their shapes).
    pub flops: f64,
    /// Bytes held after the generation (the weights: everything else is returned).
    pub after_bytes: u64,
    /// Command buffers submitted, and the largest dispatch / command buffer in GFLOP.
    pub command_buffers: u64,
    pub largest_dispatch_gflop: f64,
    pub largest_command_buffer_gflop: f64,
    /// Of `weights_bytes`: the text encoder's, and the tiny VAE's (0 without one).
    pub weights_bytes_text_encoder: u64,
    pub weights_bytes_tiny_vae: u64,
    /// Of `weights_bytes`: SDXL's second text encoder's (0 for other models), the UNet's and
    /// the VAE's.
    pub weights_bytes_text_encoder_2: u64,
    pub weights_bytes_unet: u64,
    pub weights_bytes_vae: u64,
}

/// What is loaded and done around a planned generation ([`plan_generation_with`]).
#[derive(Clone, Copy, Debug, Default)]
pub struct PlanExtras {
    /// A TAESD (madebyollin/taesd's shapes) beside the model, with live previews.
    pub tiny_vae: bool,
    /// Free the text encoder's weights (SDXL: both text encoders') after encoding.
    pub evict_text_encoder: bool,
}

/// Plan the generation `p` (its init image only gives the size) with the model `cfg` stored
/// as `dtypes`, under a binding limit of `max_binding` bytes (`None`: WebGPU's default,
/// 128 MiB).
pub async fn plan_generation(cfg: &Configs, dtypes: impl Into<Dtypes>, p: &Params, max_binding: Option<u64>) -> crate::Result<GenerationPlan> {
    plan_generation_with(cfg, dtypes, p, max_binding, PlanExtras::default()).await
}

/// [`plan_generation`] with a tiny VAE loaded and / or the text encoder freed after encoding.
pub async fn plan_generation_with(cfg: &Configs, dtypes: impl Into<Dtypes>, p: &Params, max_binding: Option<u64>, x: PlanExtras) -> crate::Result<GenerationPlan> {
    let dtypes = dtypes.into();
    let gpu = Gpu::new(GpuOptions { plan_only: true, max_binding_override: Some(max_binding.unwrap_or(128 << 20)), ..Default::default() }).await?;
    let weights = placeholder_weights(&gpu, cfg, dtypes, &crate::model::COMPONENTS)?;
    let mut sd = StableDiffusion::new(&gpu, cfg.clone(), dtypes, weights, Vec::new())?;
    let weights_bytes_text_encoder = component_bytes(&sd.weights, cfg, dtypes.text_encoder, "text_encoder");
    let weights_bytes_text_encoder_2 = component_bytes(&sd.weights, cfg, dtypes.text_encoder, "text_encoder_2");
    let weights_bytes_unet = component_bytes(&sd.weights, cfg, dtypes.unet, "unet");
    let weights_bytes_vae = component_bytes(&sd.weights, cfg, dtypes.vae, "vae");
    let mut weights_bytes_tiny_vae = 0;
    if x.tiny_vae {
        let tcfg = crate::model::config::TinyVaeConfig::default();
        let mut w = Weights::default();
        for s in crate::model::taesd::TinyVae::specs(&tcfg) {
            let t = gpu.empty(&s.shape, dtypes.vae)?;
            weights_bytes_tiny_vae += t.bytes();
            w.insert(s.name, t);
        }
        sd.tiny_vae = Some(crate::model::taesd::TinyVae::new(tcfg, dtypes.vae, w));
    }
    let tok = crate::tokenizer::ClipTokenizer::sd15()?;
    let s0 = gpu.pool_stats();
    // The pipeline's own phases (crate::pipeline::generate_with is these calls).
    let text = crate::pipeline::encode_text(&gpu, &sd, &tok, p)?;
    if x.evict_text_encoder {
        sd.evict_text_encoder(&gpu);
    }
    let run = crate::pipeline::RunOptions { preview: x.tiny_vae };
    crate::pipeline::generate_from_text(&gpu, &sd, &text, None, p, &run, &mut |_| true).await?;
    drop(text);
    gpu.trim_pool();
    let s1 = gpu.pool_stats();
    Ok(GenerationPlan {
        weights_bytes: s0.total_bytes,
        peak_bytes: s1.peak_bytes,
        max_buffer_bytes: s1.max_buffer_bytes,
        dispatches: s1.dispatches - s0.dispatches,
        flops: s1.flops - s0.flops,
        after_bytes: s1.total_bytes,
        command_buffers: s1.submits - s0.submits,
        largest_dispatch_gflop: s1.largest_dispatch_flops / 1e9,
        largest_command_buffer_gflop: s1.largest_command_buffer_flops / 1e9,
        weights_bytes_text_encoder,
        weights_bytes_tiny_vae,
        weights_bytes_text_encoder_2,
        weights_bytes_unet,
        weights_bytes_vae,
    })
}

/// Plan a generation at `height`×`width` with classifier-free guidance (UNet batch 2), and
/// a whole 20-step txt2img generation (Euler a, CFG 7.5, batch 1).
pub async fn plan(cfg: &Configs, height: usize, width: usize, dtype: DType) -> crate::Result<PlanReport> {
    let p = Params { width, height, steps: 20, ..Default::default() };
    plan_with(cfg, height, width, dtype, &p).await
}

/// [`plan`] with the whole generation `gen` planned (its size is replaced by `height`×`width`).
pub async fn plan_with(cfg: &Configs, height: usize, width: usize, dtype: DType, gen: &Params) -> crate::Result<PlanReport> {
    plan_with_options(cfg, height, width, dtype, gen, &GpuOptions::default()).await
}

/// [`plan_with`] with these GPU options for the UNet step and VAE decode figures (GEMM
/// variant, dispatch and command buffer budgets; the whole generation uses the defaults).
pub async fn plan_with_options(cfg: &Configs, height: usize, width: usize, dtype: DType, gen: &Params, opts: &GpuOptions) -> crate::Result<PlanReport> {
    let gen = Params { width, height, ..gen.clone() };
    let generation = plan_generation(cfg, dtype, &gen, None).await?;
    // WebGPU's default binding limit (128 MiB): the figures hold on any adapter.
    let gpu = Gpu::new(GpuOptions { plan_only: true, max_binding_override: Some(128 << 20), ..opts.clone() }).await?;
    let weights = placeholder_weights(&gpu, cfg, dtype, &crate::model::COMPONENTS)?;
    let sd = StableDiffusion::new(&gpu, cfg.clone(), dtype, weights, Vec::new())?;
    let load_peak = gpu.pool_stats().peak_bytes;
    gpu.reset_peak();
    let c = sd.ctx(&gpu);
    let s0 = gpu.pool_stats();
    let grow = |a: &PoolStats, b: &PoolStats| b.peak_bytes.saturating_sub(a.total_bytes);

    // Text encoder: prompt + negative prompt.
    let seq = cfg.clip.max_position_embeddings;
    let ids = gpu.upload_u32(&[2, seq], &vec![0; 2 * seq])?;
    let text = sd.clip.forward(&c, &ids)?;
    let s1 = gpu.pool_stats();
    let mut overall = s1.peak_bytes;
    gpu.trim_pool();

    // One CFG UNet step.
    let f = 8usize; // VAE factor for SD 1.x
    let (lh, lw) = (height / f, width / f);
    let x = gpu.empty(&[2, cfg.unet.in_channels, lh, lw], dtype)?;
    let t = gpu.upload(&[2], DType::F32, &[500.0, 500.0])?;
    gpu.reset_peak();
    let s2a = gpu.pool_stats();
    let eps = sd.unet.forward(&c, &x, &t, &text)?;
    gpu.flush()?;
    let s2 = gpu.pool_stats();
    overall = overall.max(s2.peak_bytes);
    drop((eps, x, t, text, ids));
    gpu.trim_pool();
    gpu.reset_peak();
    let s2t = gpu.pool_stats();

    // VAE decode of one image.
    let z = gpu.empty(&[1, cfg.vae.latent_channels, lh, lw], dtype)?;
    let img = sd.vae.decode_auto(&c, &z, gpu.max_binding())?;
    gpu.flush()?;
    let s3 = gpu.pool_stats();
    drop((img, z));

    Ok(PlanReport {
        adapter: gpu.info().name.clone(),
        dtype: dtype.name(),
        size: [height, width],
        unet_batch: 2,
        weights_bytes: s0.total_bytes,
        weights_bytes_unet: component_bytes(&sd.weights, cfg, dtype, "unet"),
        weights_bytes_vae: component_bytes(&sd.weights, cfg, dtype, "vae"),
        weights_bytes_text_encoder: component_bytes(&sd.weights, cfg, dtype, "text_encoder"),
        text_encoder_activation_peak_bytes: grow(&s0, &s1),
        unet_step_activation_peak_bytes: grow(&s2a, &s2),
        vae_decode_activation_peak_bytes: grow(&s2t, &s3),
        peak_bytes: overall.max(s3.peak_bytes).max(load_peak).max(generation.peak_bytes),
        max_buffer_bytes: s3.max_buffer_bytes.max(generation.max_buffer_bytes),
        dispatches_per_unet_step: s2.dispatches - s2a.dispatches,
        dispatches_text_encoder: s1.dispatches - s0.dispatches,
        dispatches_vae_decode: s3.dispatches - s2t.dispatches,
        generation_steps: gen.steps,
        generation_batch: gen.batch,
        generation_img2img: gen.init_image.is_some(),
        generation,
        unet_step_submissions: Submissions::between(&s2a, &s2),
        vae_decode_submissions: Submissions::between(&s2t, &s3),
        largest_dispatch_gflop: (s2.largest_dispatch_flops.max(s3.largest_dispatch_flops)) / 1e9,
        largest_command_buffer_gflop: (s2.largest_command_buffer_flops.max(s3.largest_command_buffer_flops)) / 1e9,
    })
}

/// The model families `sd-webgpu plan --family` knows, with synthetic full-size shapes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum PlanFamily {
    /// stable-diffusion-v1-5.
    Sd15,
    /// stabilityai/stable-diffusion-2-1 (OpenCLIP ViT-H text encoder, 23 layers, 1024 wide;
    /// UNet with linear projections, head dim 64, cross-attention 1024; 768²).
    Sd2,
    /// stabilityai/sd-turbo: SD-2.1 shapes at 512², 1 step, guidance 0, Euler (trailing).
    SdTurbo,
    /// stabilityai/stable-diffusion-xl-base-1.0 ([`Configs::sdxl`]): 1024², 25 steps, CFG 5, Euler.
    Sdxl,
    /// stabilityai/sdxl-turbo ([`Configs::sdxl_turbo`]): SDXL's shapes at 512², 1 step,
    /// guidance 0, Euler a (trailing).
    SdxlTurbo,
}

impl PlanFamily {
    pub fn name(self) -> &'static str {
        match self {
            PlanFamily::Sd15 => "sd15",
            PlanFamily::Sd2 => "sd2",
            PlanFamily::SdTurbo => "sd-turbo",
            PlanFamily::Sdxl => "sdxl",
            PlanFamily::SdxlTurbo => "sdxl-turbo",
        }
    }
    /// The configs of the family's real repo (the fields that set shapes).
    pub fn configs(self) -> Configs {
        match self {
            PlanFamily::Sd15 => Configs::default(),
            PlanFamily::Sd2 => Configs::sd21(),
            PlanFamily::SdTurbo => {
                let mut c = Configs::sd21();
                c.unet.upcast_attention = None;
                c.unet.sample_size = 64;
                c
            }
            PlanFamily::Sdxl => Configs::sdxl(),
            PlanFamily::SdxlTurbo => Configs::sdxl_turbo(),
        }
    }
    /// (steps, guidance, sampler) of a default generation (SDXL base: 25 steps at guidance 5
    /// with its shipped Euler, as `pipeline::model_defaults`; SDXL-Turbo: 1 step, no guidance, Euler a as its scheduler file).
    pub fn defaults(self) -> (usize, f64, &'static str) {
        match self {
            PlanFamily::SdTurbo => (1, 0.0, "euler"),
            PlanFamily::Sdxl => (25, 5.0, "euler"),
            PlanFamily::SdxlTurbo => (1, 0.0, "euler_a"),
            _ => (20, 7.5, "euler_a"),
        }
    }
}

/// The VAE of a plan: what its config says (`force_upcast`) and how the pipeline runs it.
/// SDXL's original VAE overflows in f16: its config says `force_upcast`, and the pipeline
/// (as diffusers' XL pipelines) decodes / encodes with an f32 copy of its weights, made for
/// the decode and freed after; with `vae_fp16_fix` (madebyollin's sdxl-vae-fp16-fix, same
/// shapes, `force_upcast: false`) it runs in its storage type. Returns the configs to plan
/// and the VAE's (storage, run) description.
pub fn plan_vae(cfg: &Configs, dtype: DType, vae_fp16_fix: bool) -> (Configs, &'static str) {
    let mut cfg = cfg.clone();
    if vae_fp16_fix {
        cfg.vae.force_upcast = false;
    }
    let what = match (dtype, cfg.is_xl() && cfg.vae.force_upcast) {
        (DType::F32, _) => "f32",
        (_, true) => "f16 storage, run in f32 (force_upcast: SDXL's original VAE overflows in f16; an f32 copy of its weights is made for each VAE decode / encode and freed after; --vae-fp16-fix plans madebyollin/sdxl-vae-fp16-fix in f16)",
        (_, false) if cfg.is_xl() => "f16 (the fp16-fix VAE, madebyollin/sdxl-vae-fp16-fix: force_upcast false)",
        _ => "f16 (an f16 decode that overflows is re-run in f32)",
    };
    (cfg, what)
}

#[derive(Clone, Debug)]
pub struct PlanOptions {
    pub family: PlanFamily,
    /// Plan with a TAESD (madebyollin/taesd shapes) loaded beside the model.
    pub tiny_vae: bool,
    /// Free the text encoder's weights after encoding.
    pub evict_text_encoder: bool,
    /// SDXL: the VAE is madebyollin's sdxl-vae-fp16-fix (run in f16) instead of the
    /// original (run in f32 from an f32 copy of its weights: `force_upcast`).
    pub vae_fp16_fix: bool,
}

/// One whole generation of a family, planned: what `plan --family … --json` prints.
#[derive(Clone, Debug, Serialize)]
pub struct FamilyPlan {
    pub family: &'static str,
    pub size: [usize; 2],
    pub dtype: &'static str,
    pub steps: usize,
    pub guidance: f64,
    pub sampler: String,
    pub decoder: &'static str,
    /// Storage of the VAE, and how it runs ([`plan_vae`]).
    pub vae_dtype: &'static str,
    pub vae_precision: &'static str,
    pub evict_text_encoder: bool,
    /// Floating-point operations of the whole generation per image (matmuls, convolutions
    /// and attention, counted from their shapes).
    pub flops_per_image: f64,
    /// GPU dispatches of the whole generation per image.
    pub dispatches_per_image: f64,
    /// Highest total of GPU buffers (weights included) during the generation.
    pub peak_bytes: u64,
    pub peak_gib: f64,
    pub weights_bytes: u64,
    pub weights_bytes_text_encoder: u64,
    pub weights_bytes_tiny_vae: u64,
    /// SDXL's second text encoder (0 for other models), the UNet and the VAE.
    pub weights_bytes_text_encoder_2: u64,
    pub weights_bytes_unet: u64,
    pub weights_bytes_vae: u64,
    /// With `evict_text_encoder`: the bytes streamed back onto the GPU (from the browser
    /// cache) before a new prompt can be encoded — every text encoder's weights; 0 without.
    pub text_encoder_reload_bytes: u64,
    pub max_buffer_bytes: u64,
    /// The binding limit planned under (WebGPU's default).
    pub max_binding_bytes: u64,
    /// Over the whole generation: command buffers, the largest dispatch and the largest
    /// command buffer in GFLOP.
    pub command_buffers: u64,
    pub largest_dispatch_gflop: f64,
    pub largest_command_buffer_gflop: f64,
}

/// Plan the generation `p` at `height`×`width` of a model `cfg` (a [`PlanFamily`]'s
/// configs or a folder's) on a planning GPU under WebGPU's default binding limit: the real
/// pipeline code, every allocation and dispatch counted, nothing run.
pub async fn plan_family(cfg: &Configs, height: usize, width: usize, dtype: DType, p: &Params, o: &PlanOptions) -> crate::Result<FamilyPlan> {
    let p = Params { width, height, ..p.clone() };
    let max_binding = 128u64 << 20;
    let (cfg, vae_precision) = plan_vae(cfg, dtype, o.vae_fp16_fix);
    let g = plan_generation_with(&cfg, dtype, &p, Some(max_binding), PlanExtras { tiny_vae: o.tiny_vae, evict_text_encoder: o.evict_text_encoder }).await?;
    let images = p.batch_pos.map(|_| 1).unwrap_or(p.batch) as f64;
    Ok(FamilyPlan {
        family: o.family.name(),
        size: [height, width],
        dtype: dtype.name(),
        steps: p.steps,
        guidance: p.guidance_scale,
        sampler: p.sampler.clone(),
        decoder: p.decoder.name(),
        vae_dtype: dtype.name(),
        vae_precision,
        evict_text_encoder: o.evict_text_encoder,
        flops_per_image: g.flops / images,
        dispatches_per_image: g.dispatches as f64 / images,
        peak_bytes: g.peak_bytes,
        peak_gib: g.peak_bytes as f64 / (1u64 << 30) as f64,
        weights_bytes: g.weights_bytes,
        weights_bytes_text_encoder: g.weights_bytes_text_encoder,
        weights_bytes_tiny_vae: g.weights_bytes_tiny_vae,
        weights_bytes_text_encoder_2: g.weights_bytes_text_encoder_2,
        weights_bytes_unet: g.weights_bytes_unet,
        weights_bytes_vae: g.weights_bytes_vae,
        text_encoder_reload_bytes: if o.evict_text_encoder { g.weights_bytes_text_encoder + g.weights_bytes_text_encoder_2 } else { 0 },
        max_buffer_bytes: g.max_buffer_bytes,
        max_binding_bytes: max_binding,
        command_buffers: g.command_buffers,
        largest_dispatch_gflop: g.largest_dispatch_gflop,
        largest_command_buffer_gflop: g.largest_command_buffer_gflop,
    })
}
