//! The native command line (`sd-webgpu`). Not built for wasm32.
use std::time::Instant;

use clap::{Parser, Subcommand, ValueEnum};

use crate::gpu::{DType, Gpu, GpuOptions};
use crate::rng::Rng;

#[derive(Parser)]
#[command(name = "sd-webgpu", version, about = "Stable Diffusion on WebGPU / wgpu")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Clone, Copy, ValueEnum)]
enum Dt {
    F32,
    F16,
}

#[derive(Clone, Copy, ValueEnum)]
enum ResizeArg {
    Crop,
    Fit,
    Stretch,
}

#[derive(Clone, Copy, ValueEnum)]
enum SamplerArg {
    Ddpm,
    Ddim,
    Pndm,
    Euler,
    #[value(name = "euler_a")]
    EulerA,
    #[value(name = "dpmpp_2m_karras")]
    DpmPP2mKarras,
    Lcm,
}

#[derive(Clone, Copy, ValueEnum)]
enum SpacingArg {
    Leading,
    Linspace,
    Trailing,
}

#[derive(Clone, Copy, ValueEnum)]
enum PredictionArg {
    Epsilon,
    #[value(name = "v_prediction")]
    VPrediction,
}

#[derive(Clone, Copy, ValueEnum)]
enum FamilyArg {
    Sd15,
    Sd2,
    #[value(name = "sd-turbo")]
    SdTurbo,
    Sdxl,
    #[value(name = "sdxl-turbo")]
    SdxlTurbo,
}

#[derive(Clone, Copy, ValueEnum)]
enum DecoderArg {
    Vae,
    Tiny,
}

impl SamplerArg {
    fn name(self) -> &'static str {
        match self {
            SamplerArg::Ddpm => "ddpm",
            SamplerArg::Ddim => "ddim",
            SamplerArg::Pndm => "pndm",
            SamplerArg::Euler => "euler",
            SamplerArg::EulerA => "euler_a",
            SamplerArg::DpmPP2mKarras => "dpmpp_2m_karras",
            SamplerArg::Lcm => "lcm",
        }
    }
}

#[derive(clap::Args)]
struct GenerateArgs {
    /// A diffusers folder (model_index.json, unet/, vae/, text_encoder/, tokenizer/, scheduler/)
    /// or a single original-layout .safetensors checkpoint (its configuration from its tensor
    /// names: SD-1.5, SD-2.x or SDXL base, unless --config).
    #[arg(long)]
    model: std::path::PathBuf,
    /// With a single-file checkpoint: a diffusers folder whose config.json files, tokenizers and
    /// scheduler it uses (as diffusers' `from_single_file(..., config=DIR)`), for checkpoints
    /// whose shapes are not their family's defaults.
    #[arg(long)]
    config: Option<std::path::PathBuf>,
    /// What to draw.
    #[arg(long)]
    prompt: String,
    /// What to steer away from (empty by default).
    #[arg(long)]
    negative_prompt: Option<String>,
    /// Denoising steps (default: the model's: 20; SD-Turbo 1; LCM 4).
    #[arg(long)]
    steps: Option<usize>,
    /// Classifier-free guidance scale (≤ 1 disables guidance and halves the work; default
    /// the model's: 7.5; SD-Turbo 0; LCM-distilled UNets 8 (as their w embedding), LCM 1).
    #[arg(long)]
    guidance: Option<f64>,
    /// Random seed (same seed and settings as diffusers ⇒ same image). Random when omitted.
    #[arg(long)]
    seed: Option<u64>,
    /// Sampler (default: the model's: euler_a; SD-Turbo euler; LCM lcm).
    #[arg(long, value_enum)]
    sampler: Option<SamplerArg>,
    /// Override the model's scheduler config: how timesteps are spread (diffusers' timestep_spacing).
    #[arg(long, value_enum)]
    timestep_spacing: Option<SpacingArg>,
    /// Override the model's scheduler config: what the UNet predicts (diffusers' prediction_type).
    #[arg(long, value_enum)]
    prediction_type: Option<PredictionArg>,
    /// A tiny autoencoder (TAESD): a diffusers AutoencoderTiny folder (e.g. madebyollin/taesd)
    /// or madebyollin's taesd_encoder.safetensors + taesd_decoder.safetensors (the folder or
    /// either file). It then decodes the image and encodes the img2img start (--decoder vae:
    /// the model's VAE still does).
    #[arg(long)]
    tiny_vae: Option<std::path::PathBuf>,
    /// What decodes the latents: the model's VAE, or the tiny VAE (default with --tiny-vae).
    #[arg(long, value_enum)]
    decoder: Option<DecoderArg>,
    /// Image width in pixels, a multiple of 64 (default: the model's, 512 for SD-1.5, 768
    /// for SD-2.1-768; img2img: the init image's width rounded to a multiple of 64).
    #[arg(long)]
    width: Option<usize>,
    /// Image height in pixels, a multiple of 64 (default 512; img2img: the init image's
    /// height rounded to a multiple of 64).
    #[arg(long)]
    height: Option<usize>,
    /// img2img: start from this image (PNG or JPEG, any size; fitted to the output size by
    /// --resize-mode).
    #[arg(long)]
    init_image: Option<std::path::PathBuf>,
    /// img2img: how much to change the init image, in (0, 1].
    #[arg(long, default_value_t = 0.75)]
    strength: f64,
    /// Inpainting (with --init-image): a mask PNG or JPEG (any size, fitted like the init
    /// image; white = repaint, black = keep, binarised at 0.5 as diffusers does). An
    /// inpainting model (9-channel UNet) is conditioned on it; any other model inpaints by
    /// blending the kept region back in after every step.
    #[arg(long)]
    mask: Option<std::path::PathBuf>,
    /// Inpainting: paste the kept pixels of the init image back over the result with the soft
    /// mask (off: the whole image is the VAE's decode, as diffusers).
    #[arg(long)]
    paste_back: bool,
    /// img2img: how the init image is fitted to width × height: crop (scale to cover, crop
    /// the overflow; A1111 "Crop and resize"), fit (scale to fit, fill with the edges; A1111
    /// "Resize and fill") or stretch (A1111 "Just resize").
    #[arg(long, value_enum, default_value_t = ResizeArg::Crop)]
    resize_mode: ResizeArg,
    /// Images to make (one seed, drawn together as diffusers' num_images_per_prompt).
    #[arg(long, default_value_t = 1)]
    batch: usize,
    /// Make only image I (1-based) of the batch: the same image as in the whole batch, without
    /// making the others (a PNG's "Batch pos: P" is --batch-pos P+1).
    #[arg(long)]
    batch_pos: Option<usize>,
    /// GPU storage of weights and activations.
    #[arg(long, value_enum, default_value_t = Dt::F16)]
    dtype: Dt,
    /// GPU storage of the VAE (default: --dtype). An f16 VAE that overflows is re-run in f32
    /// automatically; f32 skips the f16 attempt (A1111's --no-half-vae).
    #[arg(long, value_enum)]
    vae_dtype: Option<Dt>,
    /// Use the `fp16` weight files of a diffusers folder when present (`--no-variant`: the full ones).
    #[arg(long)]
    no_variant: bool,
    /// Encode the prompts as plain diffusers does (brackets are text, cut at 75 tokens) instead
    /// of A1111's syntax (`(word:1.2)`, `[word]`, up to 225 tokens; the default).
    #[arg(long)]
    no_prompt_weighting: bool,
    /// SDXL: the prompt of the second text encoder (default: --prompt).
    #[arg(long = "prompt-2")]
    prompt_2: Option<String>,
    /// SDXL: the negative prompt of the second text encoder (default: --negative-prompt).
    #[arg(long = "negative-prompt-2")]
    negative_prompt_2: Option<String>,
    /// SDXL micro-conditioning: the size the image "was" before cropping, WIDTHxHEIGHT
    /// (default: the output size).
    #[arg(long, value_parser = parse_wxh)]
    original_size: Option<(usize, usize)>,
    /// SDXL micro-conditioning: the size asked for, WIDTHxHEIGHT (default: the output size).
    #[arg(long, value_parser = parse_wxh)]
    target_size: Option<(usize, usize)>,
    /// SDXL micro-conditioning: the crop's top-left corner, TOP,LEFT (default: 0,0).
    #[arg(long, value_parser = parse_top_left)]
    crops_coords_top_left: Option<(usize, usize)>,
    /// A LoRA to merge into the model: FILE[:SCALE] (scale 1 when left out), repeatable; kohya /
    /// A1111 and diffusers / PEFT files. Its name is the file name without `.safetensors`: a
    /// `<lora:NAME:SCALE>` tag in the prompt sets its scale.
    #[arg(long = "lora", value_name = "FILE[:SCALE]")]
    lora: Vec<String>,
    /// Output PNG (with batch > 1: NAME-1.png, NAME-2.png, …).
    #[arg(long)]
    output: std::path::PathBuf,
}

#[derive(Subcommand)]
enum Cmd {
    /// Make an image from a prompt (txt2img), or from an image and a prompt (img2img).
    Generate(GenerateArgs),
    /// Memory plan of a generation (text encoder, one CFG UNet step, VAE decode): weights,
    /// activation peaks, largest buffer. Nothing is dispatched; SD-1.5 shapes unless --model.
    Plan {
        /// Image height and width in pixels (default: the model's, UNet sample_size × 8:
        /// 512 for SD-1.5 / SD-Turbo / SDXL-Turbo, 768 for SD-2.1, 1024 for SDXL).
        #[arg(long)]
        size: Option<usize>,
        #[arg(long, value_enum, default_value_t = Dt::F16)]
        dtype: Dt,
        /// A diffusers folder whose config.json files to use (default: SD-1.5).
        #[arg(long)]
        model: Option<std::path::PathBuf>,
        /// Steps of the whole generation that is planned (default: the family's: 20, SD-Turbo 1).
        #[arg(long)]
        steps: Option<usize>,
        /// Guidance of the planned generation (> 1: CFG, UNet batch 2; default: the family's:
        /// 7.5, SD-Turbo 0).
        #[arg(long)]
        guidance: Option<f64>,
        /// Synthetic full-size shapes of this family (ignored with --model): SD-1.5, SD-2.1
        /// (768² by default), SD-Turbo (SD-2.1 shapes at 512², 1 step, no CFG), SDXL base
        /// (1024², 25 steps, guidance 5, Euler), SDXL-Turbo (SDXL shapes at 512², 1 step, no
        /// CFG, Euler a).
        #[arg(long, value_enum)]
        family: Option<FamilyArg>,
        /// SDXL: plan madebyollin/sdxl-vae-fp16-fix, run in f16 (default: the original SDXL
        /// VAE, which overflows in f16 (force_upcast): decoded from an f32 copy of its weights).
        #[arg(long)]
        vae_fp16_fix: bool,
        /// Decode with a tiny VAE (TAESD, madebyollin/taesd's shapes) instead of the VAE.
        #[arg(long)]
        tiny_vae: bool,
        /// Free the text encoder's weights after encoding (re-streamed from the browser's
        /// cache when the prompt changes); lowers the peak by their size.
        #[arg(long)]
        evict_text_encoder: bool,
        /// Print JSON (the only output format; accepted for scripts).
        #[arg(long)]
        json: bool,
        /// Images per prompt of the planned generation.
        #[arg(long, default_value_t = 1)]
        batch: usize,
        /// Plan img2img (an init image of the output size, strength 0.75) instead of txt2img.
        #[arg(long)]
        img2img: bool,
    },
    /// Write synthetic random weights with the exact SD-1.5 shapes (diffusers layout), and
    /// with --lora-rank a synthetic kohya LoRA for them.
    Synth {
        /// Output folder.
        #[arg(long)]
        out: std::path::PathBuf,
        /// Storage of the files.
        #[arg(long, value_enum, default_value_t = Dt::F16)]
        dtype: Dt,
        /// Also write OUT/lora-rankN.safetensors: a kohya LoRA of rank N (alpha N, f16) over
        /// the UNet's attention, transformer projections, feed-forward, resnet convolutions
        /// (3×3 LoCon), time-embedding projections, shortcuts and down/upsamplers, and the text
        /// encoder's q/k/v/out projections and MLP.
        #[arg(long, value_name = "N")]
        lora_rank: Option<usize>,
        /// With --lora-rank: write only the LoRA (the model files are left as they are).
        #[arg(long, requires = "lora_rank")]
        lora_only: bool,
    },
    /// Time a LoRA on a model: load, merge (scale 1), re-merge at another scale, undo and the
    /// in-place merge the CLI does; the LoRA's GPU memory (factors, base copies, peaks).
    /// Synthetic SD-1.5 weights made in memory unless --model.
    BenchLora(crate::bench::LoraBenchArgs),
    /// Load a model (checking every shape) and run one UNet step on random latents.
    UnetStep {
        /// A diffusers folder (the .fp16 variant is used when present) or a .safetensors checkpoint.
        #[arg(long)]
        model: std::path::PathBuf,
        /// Image size in pixels (latents are size/8).
        #[arg(long, default_value_t = 64)]
        size: usize,
        /// UNet batch (2 = prompt + negative prompt).
        #[arg(long, default_value_t = 1)]
        batch: usize,
        #[arg(long, value_enum, default_value_t = Dt::F16)]
        dtype: Dt,
    },
    /// Time a generation's phases (text encoder, one CFG UNet step, VAE decode) with
    /// synthetic SD-1.5 weights (or --model), per-kernel GPU times where the adapter has
    /// timestamp queries; --plan: memory figures only, nothing dispatched.
    Bench(crate::bench::BenchArgs),
    /// Print the adapter, its features and limits.
    Info,
    /// Throughput of the GEMM / conv / attention shapes of an SD-1.5 UNet step at 512² (CFG),
    /// per GEMM variant and storage dtype (see src/bench_kernels.rs).
    BenchKernels(crate::bench_kernels::BenchKernelsArgs),
}

pub fn main(args: Vec<String>) -> i32 {
    let cli = match Cli::try_parse_from(std::iter::once("sd-webgpu".to_string()).chain(args)) {
        Ok(c) => c,
        Err(e) => {
            let _ = e.print();
            return if e.use_stderr() { 2 } else { 0 };
        }
    };
    match pollster::block_on(run(cli)) {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("error: {e}");
            1
        }
    }
}

fn dt(d: Dt) -> DType {
    match d {
        Dt::F32 => DType::F32,
        Dt::F16 => DType::F16,
    }
}

async fn run(cli: Cli) -> crate::Result<()> {
    match cli.cmd {
        Cmd::Generate(a) => return generate(a).await,
        Cmd::Bench(a) => return crate::bench::run(a).await,
        Cmd::BenchKernels(a) => return crate::bench_kernels::run(a).await,
        Cmd::BenchLora(a) => return crate::bench::run_lora(a).await,
        Cmd::Plan { size, dtype, model, steps, guidance, family, vae_fp16_fix, tiny_vae, evict_text_encoder, json: _, batch, img2img } => {
            let fam = match family {
                Some(FamilyArg::Sd2) => crate::plan::PlanFamily::Sd2,
                Some(FamilyArg::SdTurbo) => crate::plan::PlanFamily::SdTurbo,
                Some(FamilyArg::Sdxl) => crate::plan::PlanFamily::Sdxl,
                Some(FamilyArg::SdxlTurbo) => crate::plan::PlanFamily::SdxlTurbo,
                Some(FamilyArg::Sd15) | None => crate::plan::PlanFamily::Sd15,
            };
            let cfg = match model {
                Some(dir) => crate::model::read_configs(&dir)?,
                None => fam.configs(),
            };
            // A folder's SDXL configs without --family: SDXL's defaults.
            let fam = if family.is_none() && cfg.is_xl() { crate::plan::PlanFamily::Sdxl } else { fam };
            let size = size.unwrap_or(cfg.unet.sample_size * 8);
            if size == 0 || size % 64 != 0 {
                return Err(crate::Error::Unsupported { op: "plan", detail: format!("--size {size} must be a positive multiple of 64") });
            }
            let (d_steps, d_guidance, d_sampler) = fam.defaults();
            let init_image = img2img.then(|| crate::image::Rgb { width: size, height: size, data: vec![0.5; size * size * 3] });
            let gen = crate::pipeline::Params {
                steps: steps.unwrap_or(d_steps),
                guidance_scale: guidance.unwrap_or(d_guidance),
                sampler: d_sampler.into(),
                batch,
                init_image,
                decoder: if tiny_vae { crate::pipeline::Decoder::Tiny } else { crate::pipeline::Decoder::Vae },
                ..Default::default()
            };
            let opts = crate::plan::PlanOptions { family: fam, tiny_vae, evict_text_encoder, vae_fp16_fix };
            let r = crate::plan::plan_family(&cfg, size, size, dt(dtype), &gen, &opts).await?;
            println!("{}", serde_json::to_string_pretty(&r).unwrap_or_default());
            return Ok(());
        }
        Cmd::Synth { out, dtype, lora_rank, lora_only } => {
            let t = Instant::now();
            let cfg = crate::model::Configs::default();
            if !lora_only {
                let files = crate::weights::synth::write_model(&out, &cfg, dt(dtype) == DType::F16)?;
                for (c, n) in &files {
                    println!("{c}: {n} bytes");
                }
            }
            if let Some(rank) = lora_rank {
                std::fs::create_dir_all(&out).map_err(|e| crate::weights::WeightError::Io { file: out.display().to_string(), detail: e.to_string() })?;
                let file = out.join(format!("lora-rank{rank}.safetensors"));
                let l = crate::weights::synth::write_lora(&file, &cfg, rank, 0x10a4 + rank as u64)?;
                println!(
                    "{}: rank {rank}, {} UNet + {} text-encoder modules, {} parameters, {} bytes",
                    file.display(),
                    l.unet_modules,
                    l.text_encoder_modules,
                    l.parameters,
                    l.bytes
                );
            }
            println!("wrote {} in {:.1} s", out.display(), t.elapsed().as_secs_f64());
            return Ok(());
        }
        Cmd::UnetStep { model, size, batch, dtype } => {
            let gpu = Gpu::new(GpuOptions::default()).await?;
            let d = dt(dtype);
            let t0 = Instant::now();
            let src = if model.is_dir() {
                crate::model::Source::Diffusers { dir: model.clone(), variant: Some("fp16".into()) }
            } else {
                crate::model::Source::SingleFile(model.clone(), None)
            };
            let sd = crate::model::StableDiffusion::load_components(&gpu, &src, d, &["unet"], &[])?;
            let load_s = t0.elapsed().as_secs_f64();
            let lat = size / 8;
            let mut rng = Rng::new(7);
            let n = batch * sd.cfg.unet.in_channels * lat * lat;
            let x = gpu.upload(&[batch, sd.cfg.unet.in_channels, lat, lat], d, &rng.vec(n, -1.0, 1.0))?;
            let ctx_n = batch * 77 * sd.cfg.unet.cross_attention_dim;
            let ctx = gpu.upload(&[batch, 77, sd.cfg.unet.cross_attention_dim], d, &rng.vec(ctx_n, -1.0, 1.0))?;
            let t = gpu.upload(&[batch], DType::F32, &vec![500.0; batch])?;
            let s0 = gpu.pool_stats();
            let t1 = Instant::now();
            let y = sd.unet.forward(&sd.ctx(&gpu), &x, &t, &ctx)?;
            let out = gpu.read(&y).await?;
            let step_s = t1.elapsed().as_secs_f64();
            let s1 = gpu.pool_stats();
            let finite = out.iter().all(|v| v.is_finite());
            let mean = out.iter().map(|&v| v as f64).sum::<f64>() / out.len() as f64;
            let std = (out.iter().map(|&v| (v as f64 - mean).powi(2)).sum::<f64>() / out.len() as f64).sqrt();
            println!(
                "{}",
                serde_json::json!({
                    "adapter": gpu.info().name, "model": model.display().to_string(), "dtype": d.name(),
                    "weights": sd.weights.len(), "weights_bytes": sd.weights.bytes(), "load_s": load_s,
                    "latent": [batch, sd.cfg.unet.in_channels, lat, lat], "unet_step_s": step_s,
                    "dispatches": s1.dispatches - s0.dispatches, "activation_peak_bytes": s1.peak_bytes - s0.total_bytes,
                    "output_finite": finite, "output_mean": mean, "output_std": std,
                })
            );
            if !finite {
                return Err(crate::Error::Gpu("the UNet output has non-finite values".into()));
            }
            return Ok(());
        }
        _ => {}
    }
    let gpu = Gpu::new(GpuOptions::default()).await?;
    match cli.cmd {
        Cmd::Plan { .. } | Cmd::Synth { .. } | Cmd::UnetStep { .. } | Cmd::Generate(_) | Cmd::Bench(_) | Cmd::BenchLora(_) | Cmd::BenchKernels(_) => {}
        Cmd::Info => {
            println!("{}", serde_json::to_string_pretty(gpu.info()).unwrap_or_default());
        }
    }
    Ok(())
}

/// `WIDTHxHEIGHT` → (height, width), diffusers' order for SDXL's sizes.
fn parse_wxh(s: &str) -> Result<(usize, usize), String> {
    let (w, h) = s.split_once(['x', 'X', '×']).ok_or_else(|| format!("{s:?}: expected WIDTHxHEIGHT, e.g. 1024x1024"))?;
    let n = |v: &str| v.trim().parse::<usize>().map_err(|e| format!("{s:?}: {e}"));
    Ok((n(h)?, n(w)?))
}

/// `TOP,LEFT` → (top, left).
fn parse_top_left(s: &str) -> Result<(usize, usize), String> {
    let (t, l) = s.split_once(',').ok_or_else(|| format!("{s:?}: expected TOP,LEFT, e.g. 0,0"))?;
    let n = |v: &str| v.trim().parse::<usize>().map_err(|e| format!("{s:?}: {e}"));
    Ok((n(t)?, n(l)?))
}

fn read_opt(p: &std::path::Path) -> Option<String> {
    std::fs::read_to_string(p).ok()
}

async fn generate(a: GenerateArgs) -> crate::Result<()> {
    use crate::model::{Dtypes, Source, StableDiffusion};
    use crate::tokenizer::ClipTokenizer;
    let invalid = |m: String| crate::Error::Invalid(m);
    let t0 = Instant::now();
    let gpu = Gpu::new(GpuOptions::default()).await?;
    let dtypes = Dtypes { vae: dt(a.vae_dtype.unwrap_or(a.dtype)), ..Dtypes::all(dt(a.dtype)) };
    let init_image = match &a.init_image {
        Some(p) => {
            let bytes = std::fs::read(p).map_err(|e| invalid(format!("{}: {e}", p.display())))?;
            Some(crate::image::decode_image(&bytes, &p.display().to_string())?)
        }
        None => None,
    };
    let mask = match &a.mask {
        Some(p) => {
            let bytes = std::fs::read(p).map_err(|e| invalid(format!("{}: {e}", p.display())))?;
            Some(crate::inpaint::decode_mask(&bytes, &p.display().to_string())?)
        }
        None => None,
    };
    let seed = a.seed.unwrap_or_else(|| {
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos() as u64 % 4_294_967_296).unwrap_or(0)
    });
    // Where the configs, tokenizers and scheduler are: the model's folder, or --config's for a
    // single file.
    if a.config.is_some() && a.model.is_dir() {
        return Err(invalid("--config is for a single-file checkpoint (--model is a folder with its own configs)".into()));
    }
    let files_dir = a.config.clone().unwrap_or_else(|| a.model.clone());
    let (src, tok, sched) = if a.model.is_dir() || a.config.is_some() {
        let tdir = files_dir.join("tokenizer");
        let tcfg = crate::tokenizer::merged_tokenizer_config(read_opt(&tdir.join("tokenizer_config.json")).as_deref(), read_opt(&tdir.join("special_tokens_map.json")).as_deref())?;
        let tok = if let Some(j) = read_opt(&tdir.join("tokenizer.json")) {
            ClipTokenizer::from_tokenizer_json(&j, tcfg.as_deref())?
        } else {
            let v = read_opt(&tdir.join("vocab.json")).ok_or_else(|| invalid(format!("{}: no tokenizer/vocab.json or tokenizer.json", files_dir.display())))?;
            let m = read_opt(&tdir.join("merges.txt")).ok_or_else(|| invalid(format!("{}: no tokenizer/merges.txt", files_dir.display())))?;
            ClipTokenizer::from_vocab_merges(&v, &m, tcfg.as_deref())?
        };
        let sched = read_opt(&files_dir.join("scheduler").join("scheduler_config.json"));
        let variant = if a.no_variant { None } else { Some("fp16".to_string()) };
        if a.model.is_dir() {
            (Source::Diffusers { dir: a.model.clone(), variant }, tok, sched)
        } else {
            (Source::SingleFile(a.model.clone(), Some(crate::model::read_configs(&files_dir)?)), tok, sched)
        }
    } else {
        // The configs from the file's header (SD 1.5 / SD 2.x, a 9-channel inpainting UNet).
        let cfg = crate::model::single_file_configs(&a.model)?;
        if cfg.is_xl() {
            eprintln!("SDXL single-file checkpoint (conditioner.embedders.1): SDXL base's configs, tokenizers and scheduler (--config DIR for another model's)");
            (Source::SingleFile(a.model.clone(), Some(cfg)), ClipTokenizer::sd15()?, Some(crate::schedulers::SDXL_SCHEDULER_CONFIG.to_string()))
        } else if cfg.is_sd2() {
            eprintln!("SD-2.x single-file checkpoint (OpenCLIP text encoder): SD-2.1's configs and scheduler (v-prediction; --prediction-type epsilon for 512² base models)");
            (Source::SingleFile(a.model.clone(), Some(cfg)), ClipTokenizer::sd2()?, Some(crate::schedulers::SD21_SCHEDULER_CONFIG.to_string()))
        } else {
            (Source::SingleFile(a.model.clone(), Some(cfg)), ClipTokenizer::sd15()?, None)
        }
    };
    let mut sd = StableDiffusion::load_components(&gpu, &src, dtypes, &crate::model::COMPONENTS, &[])?;
    for w in &sd.warnings {
        eprintln!("warning: {w}");
    }
    // SDXL's second tokenizer from tokenizer_2/ (without it: the same BPE padded with '!').
    let t2dir = files_dir.join("tokenizer_2");
    if sd.cfg.is_xl() && t2dir.is_dir() {
        let tcfg = crate::tokenizer::merged_tokenizer_config(read_opt(&t2dir.join("tokenizer_config.json")).as_deref(), read_opt(&t2dir.join("special_tokens_map.json")).as_deref())?;
        sd.tokenizer_2 = Some(match (read_opt(&t2dir.join("tokenizer.json")), read_opt(&t2dir.join("vocab.json")), read_opt(&t2dir.join("merges.txt"))) {
            (Some(j), _, _) => ClipTokenizer::from_tokenizer_json(&j, tcfg.as_deref())?,
            (None, Some(v), Some(m)) => ClipTokenizer::from_vocab_merges(&v, &m, tcfg.as_deref())?,
            _ => ClipTokenizer::from_vocab_merges(crate::tokenizer::CLIP_VOCAB, crate::tokenizer::CLIP_MERGES, tcfg.as_deref())?,
        });
    }
    if let Some(t) = &a.tiny_vae {
        sd.tiny_vae = Some(crate::model::taesd::TinyVae::load(&gpu, t, dtypes.vae)?);
    }
    // LoRAs: merged once, in place (nothing to undo in one CLI run: no base copies).
    sd.loras.keep_base = false;
    let mut requested = Vec::new();
    for spec in &a.lora {
        let (file, scale) = crate::model::lora::parse_file_scale(spec);
        let name = crate::model::lora::name_of_file(&file);
        let l = sd.load_lora(&gpu, std::path::Path::new(&file), &name)?;
        let (unet, te) = l.counts();
        let (rmin, rmax) = l.ranks();
        eprintln!("LoRA {name}: {} format, {unet} UNet + {te} text-encoder module(s), rank {}, hash {}", l.format.name(), if rmin == rmax { rmin.to_string() } else { format!("{rmin}–{rmax}") }, l.hash);
        for w in &l.warnings {
            eprintln!("warning: {w}");
        }
        requested.push((name, scale));
    }
    let (active, lora_warnings) = crate::model::lora::active_set(&requested, &a.prompt, &sd.loras);
    for w in &lora_warnings {
        eprintln!("warning: {w}");
    }
    if !active.is_empty() {
        let tm = Instant::now();
        let r = sd.set_loras(&gpu, &active)?;
        eprintln!("merged {} LoRA module(s) into {} weight(s) on the GPU in {:.0} ms", r.merges, r.tensors, tm.elapsed().as_secs_f64() * 1000.0);
    }
    let used: Vec<(String, f32, String)> = active.iter().map(|(n, s)| (n.clone(), *s, sd.loras.get(n).map(|l| l.hash.clone()).unwrap_or_default())).collect();
    let decoder = match (a.decoder, a.tiny_vae.is_some()) {
        (Some(DecoderArg::Vae), _) | (None, false) => crate::pipeline::Decoder::Vae,
        (Some(DecoderArg::Tiny), _) | (None, true) => crate::pipeline::Decoder::Tiny,
    };
    let model_name = a.model.file_name().map(|n| n.to_string_lossy().to_string()).unwrap_or_default();
    let defaults = crate::pipeline::model_defaults(&sd, sched.as_deref(), &model_name);
    let (dw, dh) = crate::pipeline::default_size(&sd, init_image.as_ref());
    let params = crate::pipeline::Params {
        prompt: a.prompt.clone(),
        negative_prompt: a.negative_prompt.clone(),
        steps: a.steps.unwrap_or(defaults.steps),
        guidance_scale: a.guidance.unwrap_or(defaults.guidance_scale),
        seed,
        sampler: a.sampler.map(|s| s.name()).unwrap_or(defaults.sampler).into(),
        decoder,
        timestep_spacing: a.timestep_spacing.map(|s| match s {
            SpacingArg::Leading => crate::schedulers::Spacing::Leading,
            SpacingArg::Linspace => crate::schedulers::Spacing::Linspace,
            SpacingArg::Trailing => crate::schedulers::Spacing::Trailing,
        }),
        prediction_type: a.prediction_type.map(|p| match p {
            PredictionArg::Epsilon => crate::schedulers::Prediction::Epsilon,
            PredictionArg::VPrediction => crate::schedulers::Prediction::VPrediction,
        }),
        width: a.width.unwrap_or(dw),
        height: a.height.unwrap_or(dh),
        batch: a.batch,
        batch_pos: a.batch_pos,
        init_image,
        strength: a.strength,
        mask,
        paste_back: a.paste_back,
        resize_mode: match a.resize_mode {
            ResizeArg::Crop => crate::image::ResizeMode::Crop,
            ResizeArg::Fit => crate::image::ResizeMode::Fit,
            ResizeArg::Stretch => crate::image::ResizeMode::Stretch,
        },
        prompt_weighting: !a.no_prompt_weighting,
        prompt_2: a.prompt_2.clone(),
        negative_prompt_2: a.negative_prompt_2.clone(),
        original_size: a.original_size,
        target_size: a.target_size,
        crops_coords_top_left: a.crops_coords_top_left,
        ..Default::default()
    };
    crate::pipeline::validate(&sd, &params)?;
    eprintln!(
        "model family {} (defaults: {} steps, guidance {}, {}, {}×{}); decoder {}",
        defaults.family.name(),
        defaults.steps,
        defaults.guidance_scale,
        defaults.sampler,
        defaults.width,
        defaults.height,
        params.decoder.name()
    );
    eprintln!(
        "loaded {} ({} tensors, {:.2} GiB, {} storage, on {}) in {:.1} s",
        a.model.display(),
        sd.weights.len(),
        sd.weights.bytes() as f64 / (1u64 << 30) as f64,
        sd.dtypes.describe(),
        gpu.info().name,
        t0.elapsed().as_secs_f64()
    );
    let bar = indicatif::ProgressBar::new(params.steps as u64);
    bar.set_style(
        indicatif::ProgressStyle::with_template("{bar:30} {pos}/{len} steps  {elapsed} elapsed, {per_sec}, ETA {eta}")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    let t1 = Instant::now();
    let out = crate::pipeline::generate(&gpu, &sd, &tok, sched.as_deref(), &params, &mut |p| {
        bar.set_length(p.steps as u64);
        bar.set_position(p.step as u64);
        true
    })
    .await?;
    bar.finish_and_clear();
    for w in crate::pipeline::dropped_token_warnings(&params, out.dropped_tokens) {
        eprintln!("warning: {w}");
    }
    for w in &out.warnings {
        eprintln!("warning: {w}");
    }
    let mut failed = Vec::new();
    for (img, &pos) in out.images.iter().zip(&out.batch_positions) {
        let path = if out.images.len() == 1 {
            a.output.clone()
        } else {
            let stem = a.output.file_stem().map(|s| s.to_string_lossy().to_string()).unwrap_or_else(|| "image".into());
            a.output.with_file_name(format!("{stem}-{}.png", pos + 1))
        };
        let mut text = crate::pipeline::a1111_parameters(&params, seed, &model_name, pos);
        crate::pipeline::add_lora_parameters(&mut text, &params.prompt, &used);
        let png = crate::image::encode_png(img, Some(&text))?;
        if let Some(w) = &png.warning {
            eprintln!("warning: {}: {w}", path.display());
        }
        // Nothing after the work may lose it: if the file cannot be written where asked, it
        // goes to the current folder.
        match std::fs::write(&path, &png.bytes) {
            Ok(()) => eprintln!("wrote {} ({}×{}, seed {seed})", path.display(), img.width, img.height),
            Err(e) => {
                let fallback = std::path::PathBuf::from(format!("sd-webgpu-{seed}-{}.png", pos + 1));
                match std::fs::write(&fallback, &png.bytes) {
                    Ok(()) => eprintln!("warning: could not write {}: {e}; wrote {} instead", path.display(), fallback.display()),
                    Err(e2) => failed.push(format!("{}: {e} (and {}: {e2})", path.display(), fallback.display())),
                }
            }
        }
    }
    eprintln!("generation took {:.1} s ({} steps, sampler {}, {})", t1.elapsed().as_secs_f64(), params.steps, params.sampler, gpu.info().name);
    if !failed.is_empty() {
        return Err(invalid(format!("could not write the image(s): {}", failed.join("; "))));
    }
    Ok(())
}
