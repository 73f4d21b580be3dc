//! Text-to-image and image-to-image, as diffusers' StableDiffusion(Img2Img)Pipeline:
//! prompt → tokens → text states → denoising loop with classifier-free guidance → VAE →
//! RGB. Same seed, same draws from the torch-compatible generator, in the same order.
//! Inside the loop nothing is read back: latents stay on the GPU; each step is one
//! command buffer (flushed once), and the per-step update runs as GPU linear combinations.
use crate::error::{Error, Result};
use crate::gpu::{DType, Gpu, Tensor};
use crate::image::{ResizeMode, Rgb};
use crate::model::nn::Ctx;
use crate::model::unet::AddedCond;
use crate::model::StableDiffusion;
use crate::ops::{self, Term as OpTerm};
use crate::rng::TorchRng;
use crate::schedulers::{self, Combo, Prediction, Spacing, Term};
use crate::tokenizer::ClipTokenizer;

/// What to generate.
#[derive(Clone, Debug)]
pub struct Params {
    pub prompt: String,
    /// `None`: the empty negative prompt (diffusers' default).
    pub negative_prompt: Option<String>,
    pub steps: usize,
    /// ≤ 1 runs the UNet on one batch (no guidance).
    pub guidance_scale: f64,
    pub seed: u64,
    /// One of [`schedulers::SAMPLERS`].
    pub sampler: String,
    /// Output size in pixels (multiples of [`size_multiple`]); for img2img the init image is
    /// fitted to it by `resize_mode` ([`default_size`] gives the usual choice).
    pub width: usize,
    pub height: usize,
    /// Images per prompt (diffusers' num_images_per_prompt: one generator, drawn together).
    pub batch: usize,
    /// Make only image `batch_pos` (1-based) of the batch, exactly as it comes out of the
    /// whole batch: the random draws of the others are made and dropped, the UNet runs
    /// for this image alone.
    pub batch_pos: Option<usize>,
    /// img2img: the input image (any size) and the strength in (0, 1].
    pub init_image: Option<Rgb>,
    pub strength: f64,
    /// Inpainting (with `init_image`): the mask, any size (fitted like the start image), its
    /// grey level in every channel ([`crate::inpaint::mask_from_rgba`]); white = repaint.
    /// An inpainting UNet (9 input channels) is conditioned on it; any other model gets the
    /// kept region re-noised and blended in after every step (diffusers' two paths).
    pub mask: Option<Rgb>,
    /// Inpainting: paste the kept pixels of the start image back over the decoded image with
    /// the soft mask (diffusers' `apply_overlay`). Off by default, as diffusers: the whole
    /// image is the VAE's decode.
    pub paste_back: bool,
    /// How the init image is fitted to width × height.
    pub resize_mode: ResizeMode,
    /// What makes the image from the latents (and the img2img start latents from the init
    /// image): the model's VAE, or the tiny VAE (TAESD) loaded beside it.
    pub decoder: Decoder,
    /// Power users: the model's scheduler config with `timestep_spacing` replaced.
    pub timestep_spacing: Option<Spacing>,
    /// Power users: the model's scheduler config with `prediction_type` replaced.
    pub prediction_type: Option<Prediction>,
    /// A1111's prompt syntax, as diffusers' community `lpw_stable_diffusion.py` implements it
    /// ([`crate::prompt`]): `(word:1.2)` / `(word)` / `[word]` weights and prompts of up to
    /// 225 tokens in chunks of 75 (true, the default, as A1111); false: diffusers' plain
    /// encode (brackets are text, the prompt is cut at 75 tokens). `<lora:…>` tags are taken
    /// out of the prompt either way.
    pub prompt_weighting: bool,
    /// SDXL: the prompt of the second text encoder (OpenCLIP bigG, which also makes the pooled
    /// embedding); `None`: the same as `prompt` (diffusers' `prompt_2`). Ignored by SD 1.x / 2.x.
    pub prompt_2: Option<String>,
    /// SDXL: the negative prompt of the second text encoder; `None`: `negative_prompt`.
    pub negative_prompt_2: Option<String>,
    /// SDXL micro-conditioning, (height, width) as diffusers: the size the image "was" before
    /// any crop; `None`: the output size.
    pub original_size: Option<(usize, usize)>,
    /// SDXL: the size asked for; `None`: the output size.
    pub target_size: Option<(usize, usize)>,
    /// SDXL: (top, left) of the crop the image "was" taken from; `None`: (0, 0).
    pub crops_coords_top_left: Option<(usize, usize)>,
    /// SDXL: the negative row's micro-conditioning (diffusers' `negative_*`). txt2img: used
    /// only when both negative sizes are given (else the negative row is the positive one);
    /// img2img: each size defaults to the positive one.
    pub negative_original_size: Option<(usize, usize)>,
    pub negative_target_size: Option<(usize, usize)>,
    pub negative_crops_coords_top_left: Option<(usize, usize)>,
    /// SDXL refiner-style models (`requires_aesthetics_score` in model_index.json): the
    /// aesthetic score in the time ids (6.0 as diffusers), and the negative row's (2.5).
    pub aesthetic_score: f64,
    pub negative_aesthetic_score: f64,
}

/// The decoder of a generation ([`Params::decoder`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Decoder {
    /// The model's AutoencoderKL.
    #[default]
    Vae,
    /// The tiny autoencoder (TAESD) loaded with [`StableDiffusion::tiny_vae`].
    Tiny,
}

impl Decoder {
    pub fn parse(s: &str) -> Option<Decoder> {
        match s {
            "vae" | "full" => Some(Decoder::Vae),
            "tiny" | "taesd" => Some(Decoder::Tiny),
            _ => None,
        }
    }
    pub fn name(self) -> &'static str {
        match self {
            Decoder::Vae => "vae",
            Decoder::Tiny => "tiny",
        }
    }
}

impl Default for Params {
    fn default() -> Self {
        Params {
            prompt: String::new(),
            negative_prompt: None,
            steps: 20,
            guidance_scale: 7.5,
            seed: 0,
            sampler: "euler_a".into(),
            width: 512,
            height: 512,
            batch: 1,
            batch_pos: None,
            init_image: None,
            strength: 0.75,
            mask: None,
            paste_back: false,
            resize_mode: ResizeMode::Crop,
            decoder: Decoder::Vae,
            timestep_spacing: None,
            prediction_type: None,
            prompt_weighting: true,
            prompt_2: None,
            negative_prompt_2: None,
            original_size: None,
            target_size: None,
            crops_coords_top_left: None,
            negative_original_size: None,
            negative_target_size: None,
            negative_crops_coords_top_left: None,
            aesthetic_score: 6.0,
            negative_aesthetic_score: 2.5,
        }
    }
}

/// Pixels per latent along a side (the VAE's downsampling: 8 for SD).
pub fn latent_factor(sd: &StableDiffusion) -> usize {
    1usize << sd.cfg.vae.block_out_channels.len().saturating_sub(1)
}

/// Image sides must be multiples of this (8 × 2^UNet downsamplings: 64 for SD 1.x).
pub fn size_multiple(sd: &StableDiffusion) -> usize {
    8usize << sd.cfg.unet.downsamplings()
}

/// What a model is, as far as its defaults go ([`model_defaults`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Family {
    /// SD 1.x (CLIP ViT-L text encoder, quick_gelu).
    Sd15,
    /// SD 2.x (OpenCLIP ViT-H as CLIPTextModel: `hidden_act` gelu), 512² or 768² models.
    Sd2,
    /// SD-Turbo and other few-step distilled models: the scheduler config uses `trailing`
    /// spacing with EulerDiscreteScheduler (stabilityai/sd-turbo's file), or the name says turbo.
    Turbo,
    /// Latent consistency models: an LCM-distilled UNet (`time_cond_proj_dim`) or a model
    /// whose scheduler is `LCMScheduler`.
    Lcm,
    /// SDXL (a UNet with `addition_embed_type: text_time`, two text encoders).
    Sdxl,
    /// SDXL-Turbo: an SDXL whose scheduler is EulerAncestral with `trailing` spacing
    /// (stabilityai/sdxl-turbo's file), or whose name says turbo.
    SdxlTurbo,
}

impl Family {
    pub fn name(self) -> &'static str {
        match self {
            Family::Sd15 => "sd15",
            Family::Sd2 => "sd2",
            Family::Turbo => "sd-turbo",
            Family::Lcm => "lcm",
            Family::Sdxl => "sdxl",
            Family::SdxlTurbo => "sdxl-turbo",
        }
    }
}

/// The settings a model's own documentation gives when the user gives none.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct ModelDefaults {
    pub family: Family,
    pub steps: usize,
    pub guidance_scale: f64,
    pub sampler: &'static str,
    pub width: usize,
    pub height: usize,
    /// The model ignores the negative prompt at its default guidance (no CFG).
    pub negative_prompt_used: bool,
    /// `prediction_type` of the scheduler config.
    pub prediction_type: &'static str,
}

/// Per-model defaults, from what the configs (and the folder or repo name, `name`) say:
/// SDXL: 25 steps, guidance 5 (diffusers' default), Euler (its shipped scheduler), 1024²;
/// SDXL-Turbo: 1 step, guidance 0, Euler a (its shipped EulerAncestral, trailing), 512²;
/// SD-Turbo: 1 step, guidance 0, 512², Euler (its shipped EulerDiscreteScheduler); LCM: 4
/// steps, the `lcm` sampler, guidance 8 for an LCM-distilled UNet (w embedding) and 1
/// otherwise; SD 1.x / 2.x: 20 steps, guidance 7.5, Euler a; the size is the UNet's
/// `sample_size` × the VAE factor (512² for SD-1.5 and SD-2.1-base, 768² for SD-2.1).
pub fn model_defaults(sd: &StableDiffusion, scheduler_config: Option<&str>, name: &str) -> ModelDefaults {
    let sched: serde_json::Value = scheduler_config.and_then(|j| serde_json::from_str(j).ok()).unwrap_or(serde_json::Value::Null);
    let class = sched.get("_class_name").and_then(|v| v.as_str()).unwrap_or("");
    let spacing = sched.get("timestep_spacing").and_then(|v| v.as_str()).unwrap_or("");
    let prediction = if sched.get("prediction_type").and_then(|v| v.as_str()) == Some("v_prediction") { "v_prediction" } else { "epsilon" };
    let lower = name.to_ascii_lowercase();
    let (width, height) = default_size(sd, None);
    let family = if sd.cfg.is_xl() {
        if lower.contains("turbo") || (spacing == "trailing" && class == "EulerAncestralDiscreteScheduler") {
            Family::SdxlTurbo
        } else {
            Family::Sdxl
        }
    } else if sd.cfg.unet.time_cond_proj_dim.is_some() || class == "LCMScheduler" || lower.contains("lcm") {
        Family::Lcm
    } else if lower.contains("turbo") || (spacing == "trailing" && class == "EulerDiscreteScheduler") {
        Family::Turbo
    } else if sd.cfg.is_sd2() {
        Family::Sd2
    } else {
        Family::Sd15
    };
    let (steps, guidance_scale, sampler) = match family {
        Family::Turbo => (1, 0.0, "euler"),
        Family::SdxlTurbo => (1, 0.0, "euler_a"),
        Family::Sdxl => (25, 5.0, "euler"),
        Family::Lcm if sd.cfg.unet.time_cond_proj_dim.is_some() => (4, 8.0, "lcm"),
        Family::Lcm => (4, 1.0, "lcm"),
        _ => (20, 7.5, "euler_a"),
    };
    let negative_prompt_used = guidance_scale > 1.0 && sd.cfg.unet.time_cond_proj_dim.is_none();
    ModelDefaults { family, steps, guidance_scale, sampler, width, height, negative_prompt_used, prediction_type: prediction }
}

/// The output size when none is asked for: the model's (its UNet's `sample_size` × the VAE
/// factor: 512×512 for SD-1.5), or for img2img the init image's size rounded to the nearest
/// multiple of [`size_multiple`].
pub fn default_size(sd: &StableDiffusion, init_image: Option<&Rgb>) -> (usize, usize) {
    match init_image {
        None => {
            let side = (sd.cfg.unet.sample_size * latent_factor(sd)).max(size_multiple(sd));
            (side, side)
        }
        Some(img) => {
            let m = size_multiple(sd);
            (crate::image::round_to_multiple(img.width, m), crate::image::round_to_multiple(img.height, m))
        }
    }
}

/// Per-step progress (after the step was submitted to the GPU).
pub struct Progress<'a> {
    pub step: usize,
    pub steps: usize,
    /// The current latents [batch, 4, h, w] (f32, on the GPU) for a preview.
    pub latents: &'a Tensor,
    /// When [`RunOptions::preview`] asked for it: with a tiny VAE loaded, the first image's
    /// denoised estimate (x₀) of the previous step decoded by TAESD at full size; otherwise
    /// the first image's latents as they entered this step, mapped to RGB at latent size.
    /// Read back while the next step runs, so the loop never waits for its newest work.
    pub preview: Option<Preview>,
}

/// A look at the image being made, RGBA 8-bit: a fixed linear map of the 4 latent channels
/// at latent resolution, or the TAESD decode of x₀ at full size.
#[derive(Clone, Debug)]
pub struct Preview {
    pub width: usize,
    pub height: usize,
    pub rgba: Vec<u8>,
}

/// How to run (not what to generate).
#[derive(Clone, Debug, Default)]
pub struct RunOptions {
    /// Read the latents back at each step for [`Progress::preview`] (a small readback into a
    /// reused staging buffer, one step behind the GPU).
    pub preview: bool,
}

/// SD 1.x latent channels → RGB (the linear fit used by AUTOMATIC1111's and ComfyUI's
/// "cheap" previews), rows = latent channels.
const LATENT_RGB: [[f32; 3]; 4] = [[0.3512, 0.2297, 0.3227], [0.3250, 0.4974, 0.2350], [-0.2829, 0.1762, 0.2721], [-0.2120, -0.2616, -0.7177]];

/// The preview of image 0 of latents `[b, 4, h, w]` scaled by `scale`.
pub fn latent_preview(lat: &[f32], h: usize, w: usize, scale: f32) -> Preview {
    let hw = h * w;
    let mut rgba = vec![255u8; hw * 4];
    for i in 0..hw {
        for (c, px) in rgba[i * 4..i * 4 + 3].iter_mut().enumerate() {
            let v: f32 = (0..4).map(|k| lat.get(k * hw + i).copied().unwrap_or(0.0) * scale * LATENT_RGB[k][c]).sum();
            *px = ((v + 1.0) * 127.5).clamp(0.0, 255.0) as u8;
        }
    }
    Preview { width: w, height: h, rgba }
}

pub struct Output {
    /// The images made (the whole batch, or the one at `batch_pos`).
    pub images: Vec<Rgb>,
    /// Position of each image in its batch (0-based, as A1111's `Batch pos`).
    pub batch_positions: Vec<usize>,
    /// Final latents (before the VAE), [images, 4, h, w].
    pub latents: Vec<f32>,
    /// Prompt tokens that were dropped (prompt, negative prompt): beyond 75 (plain encode) or
    /// beyond 225 ([`Params::prompt_weighting`]).
    pub dropped_tokens: (usize, usize),
    /// What the user should know about this image (e.g. the VAE was re-run in f32).
    pub warnings: Vec<String>,
    /// The f16 VAE overflowed and the image was decoded again with the VAE in f32.
    pub vae_upcast: bool,
    /// The decoder that made the images.
    pub decoder: Decoder,
}

/// What to tell the user about the prompt tokens a generation dropped
/// ([`Output::dropped_tokens`]): beyond CLIP's 77 positions (plain encode) or beyond the 225
/// tokens of [`Params::prompt_weighting`]'s 3 chunks.
pub fn dropped_token_warnings(p: &Params, dropped: (usize, usize)) -> Vec<String> {
    let limit = if p.prompt_weighting {
        format!("{} tokens ({} chunks of {})", crate::prompt::MAX_CHUNKS * crate::prompt::CHUNK_TOKENS, crate::prompt::MAX_CHUNKS, crate::prompt::CHUNK_TOKENS)
    } else {
        format!("CLIP's {} tokens", crate::tokenizer::MAX_LEN)
    };
    [("prompt", dropped.0), ("negative prompt", dropped.1)]
        .into_iter()
        .filter(|&(_, n)| n > 0)
        .map(|(what, n)| format!("The {what} is longer than {limit}: {n} token(s) at its end were dropped."))
        .collect()
}

/// Checks the parameters against the model; the message says what to change. Returns the
/// output (width, height).
pub fn validate(sd: &StableDiffusion, p: &Params) -> Result<(usize, usize)> {
    let bad = |m: String| Err(Error::Invalid(m));
    let f = size_multiple(sd);
    let (w, h) = (p.width, p.height);
    if w == 0 || h == 0 || w % f != 0 || h % f != 0 {
        return bad(format!("width and height must be positive multiples of {f} (got {w}×{h})"));
    }
    if w > 2048 || h > 2048 {
        return bad(format!("{w}×{h} is larger than 2048 pixels on a side"));
    }
    if let Some(img) = &p.init_image {
        if let Some(why) = crate::image::input_size_problem(img.width as u64, img.height as u64) {
            return bad(why);
        }
        if img.data.len() != img.width * img.height * 3 {
            return bad(format!("the init image is {}×{} but has {} values (expected 3 per pixel)", img.width, img.height, img.data.len()));
        }
    }
    if p.steps == 0 || p.steps > 1000 {
        return bad(format!("steps must be between 1 and 1000 (got {})", p.steps));
    }
    if !p.guidance_scale.is_finite() || p.guidance_scale < 0.0 || p.guidance_scale > 100.0 {
        return bad(format!("guidance scale must be between 0 and 100 (got {})", p.guidance_scale));
    }
    if p.batch == 0 || p.batch > 16 {
        return bad(format!("batch must be between 1 and 16 (got {})", p.batch));
    }
    let out_px = (p.batch as u64) * (w as u64) * (h as u64);
    if out_px > crate::image::MAX_OUTPUT_PIXELS {
        return bad(format!(
            "batch {} × {w}×{h} is {:.1} megapixels of output: at most {:.1} fit in memory for the readback (e.g. 16 images of 1024×1024 or 4 of 2048×2048); make fewer or smaller images",
            p.batch,
            out_px as f64 / 1e6,
            crate::image::MAX_OUTPUT_PIXELS as f64 / 1e6
        ));
    }
    if let Some(i) = p.batch_pos {
        if i == 0 || i > p.batch {
            return bad(format!("batch position must be between 1 and the batch size {} (got {i})", p.batch));
        }
    }
    if p.init_image.is_some() && !(p.strength > 0.0 && p.strength <= 1.0) {
        return bad(format!("strength must be in (0, 1] (got {})", p.strength));
    }
    if !schedulers::SAMPLERS.contains(&p.sampler.as_str()) {
        return bad(format!("unknown sampler `{}`; use one of {}", p.sampler, schedulers::SAMPLERS.join(", ")));
    }
    if p.decoder == Decoder::Tiny {
        match &sd.tiny_vae {
            None => return bad("the tiny decoder (TAESD) was asked for but none is loaded (--tiny-vae / load({ tinyVae }))".into()),
            Some(t) if t.cfg.latent_channels != sd.cfg.vae.latent_channels => {
                return bad(format!("the tiny VAE has {} latent channels but this model has {}", t.cfg.latent_channels, sd.cfg.vae.latent_channels))
            }
            _ => {}
        }
    }
    if let Some(m) = &p.mask {
        if p.init_image.is_none() {
            return bad("a mask needs a start image to inpaint (--init-image / initImage)".into());
        }
        if let Some(why) = crate::image::input_size_problem(m.width as u64, m.height as u64) {
            return bad(why.replace("start image", "mask"));
        }
        if m.data.len() != m.width * m.height * 3 {
            return bad(format!("the mask is {}×{} but has {} values (expected 3 per pixel)", m.width, m.height, m.data.len()));
        }
    }
    let (uc, lc) = (sd.cfg.unet.in_channels, sd.cfg.vae.latent_channels);
    if crate::inpaint::is_inpainting_unet(uc, lc) {
        if p.mask.is_none() {
            return bad(format!("this is an inpainting model (its UNet takes {uc} input channels: latents, mask, masked image): give a start image and a mask (--init-image and --mask / initImage and mask)"));
        }
    } else if uc != lc {
        return bad(format!("the UNet takes {uc} input channels but the VAE makes {lc} latent channels (an inpainting UNet takes {})", 2 * lc + 1));
    }
    Ok((w, h))
}

fn combo_terms<'a>(c: &Combo, sample: &'a Tensor, eps: &'a Tensor, slots: &'a [Option<Tensor>], noise: Option<&'a Tensor>) -> Result<Vec<OpTerm<'a>>> {
    let mut out = Vec::new();
    for &(t, coef) in &c.0 {
        let tensor = match t {
            Term::Sample => sample,
            Term::ModelOutput => eps,
            Term::Slot(k) => slots.get(k).and_then(|s| s.as_ref()).ok_or_else(|| Error::Invalid(format!("sampler read slot {k} before storing it")))?,
            Term::Noise => noise.ok_or_else(|| Error::Invalid("sampler used noise without drawing it".into()))?,
        };
        out.push(OpTerm { t: tensor, offset: 0, coef });
    }
    if out.is_empty() {
        out.push(OpTerm { t: sample, offset: 0, coef: 0.0 });
    }
    Ok(out)
}

/// Run the pipeline. `on_step` is called after each step; returning false cancels
/// (between steps; everything stays reusable).
pub async fn generate(
    gpu: &Gpu,
    sd: &StableDiffusion,
    tok: &ClipTokenizer,
    scheduler_config: Option<&str>,
    p: &Params,
    on_step: &mut dyn FnMut(Progress) -> bool,
) -> Result<Output> {
    generate_with(gpu, sd, tok, scheduler_config, p, &RunOptions::default(), on_step).await
}

/// The text encoder's output for a generation: [negative × b, prompt × b] with CFG, else
/// [prompt × b], each 77·k positions ([`Params::prompt_weighting`]: k chunks; else 77), in
/// the UNet's storage type ([`encode_text`]). SDXL: both encoders' penultimate states side by
/// side, and the pooled embedding of the second.
pub struct TextStates {
    states: Tensor,
    /// SDXL: text_encoder_2's pooled (projected) embedding per row [rows, P], UNet storage.
    pooled: Option<Tensor>,
    /// Prompt tokens that were dropped (prompt, negative prompt): beyond 75 (plain encode) or
    /// beyond 225 ([`Params::prompt_weighting`]).
    pub dropped_tokens: (usize, usize),
    key: TextKey,
}

#[derive(Clone, Debug, PartialEq)]
struct TextKey {
    prompt: String,
    negative: Option<String>,
    prompt_2: Option<String>,
    negative_2: Option<String>,
    images: usize,
    cfg: bool,
    weighting: bool,
}

impl TextStates {
    /// Whether these states serve a generation of `p` (same prompts, prompt syntax, images
    /// and guidance mode).
    pub fn is_for(&self, sd: &StableDiffusion, p: &Params) -> bool {
        self.key == text_key(sd, p)
    }

    /// The states [rows, 77·k, hidden] (what the UNet's cross-attention gets).
    pub fn states(&self) -> &Tensor {
        &self.states
    }

    /// SDXL: the pooled text embedding [rows, P] (the UNet's `text_embeds`); `None` otherwise.
    pub fn pooled(&self) -> Option<&Tensor> {
        self.pooled.as_ref()
    }
}

fn text_key(sd: &StableDiffusion, p: &Params) -> TextKey {
    let xl = sd.cfg.is_xl();
    TextKey {
        prompt: p.prompt.clone(),
        negative: p.negative_prompt.clone(),
        prompt_2: if xl { p.prompt_2.clone() } else { None },
        negative_2: if xl { p.negative_prompt_2.clone() } else { None },
        images: images_made(p).0,
        cfg: uses_cfg(sd, p),
        weighting: p.prompt_weighting,
    }
}

/// Whether the generation `p` runs classifier-free guidance on `sd` (guidance > 1, and not an
/// LCM-distilled UNet, whose guidance is an embedding: diffusers' LatentConsistencyModelPipeline).
pub fn uses_cfg(sd: &StableDiffusion, p: &Params) -> bool {
    p.guidance_scale > 1.0 && sd.cfg.unet.time_cond_proj_dim.is_none()
}

fn images_made(p: &Params) -> (usize, usize) {
    match p.batch_pos {
        Some(i) => (1, i - 1),
        None => (p.batch, 0),
    }
}

/// The text encoder's input rows of a generation.
struct Rows {
    ids: Vec<Vec<u32>>,
    /// A weight per position of each row; `None` when every weight is 1.
    weights: Option<Vec<Vec<f32>>>,
    /// Positions per row (77·k).
    positions: usize,
    /// Tokens cut (prompt, negative prompt).
    dropped: (usize, usize),
}

/// Run the text encoder for `p` (the first phase of [`generate_with`]). With the states in
/// hand the text encoder's weights may be freed ([`StableDiffusion::evict_text_encoder`]) before
/// [`generate_from_text`] runs the rest, which lowers the peak by their size.
///
/// `<lora:…>` tags are taken out of the prompt ([`crate::prompt::extract_loras`]). With
/// [`Params::prompt_weighting`] the prompts are encoded as diffusers' community
/// `lpw_stable_diffusion.py` does (`max_embeddings_multiples=3`): k ≤ 3 chunks of 75 tokens
/// for the prompt and (with CFG) the negative prompt alike, each chunk one row of the text
/// encoder, then the weights applied with the mean of each row's states kept
/// ([`ops::prompt_weighting`]; skipped when every weight is 1, so a plain prompt gives the
/// plain encode's states). Otherwise as diffusers' StableDiffusionPipeline: 77 tokens.
pub fn encode_text(gpu: &Gpu, sd: &StableDiffusion, tok: &ClipTokenizer, p: &Params) -> Result<TextStates> {
    validate(sd, p)?;
    if sd.cfg.is_xl() {
        return encode_text_xl(gpu, sd, tok, p);
    }
    let c = sd.ctx(gpu);
    let (b, _) = images_made(p);
    let cfg = uses_cfg(sd, p);
    gpu.trim_pool();
    gpu.reset_peak();
    let (prompt, _) = crate::prompt::extract_loras(&p.prompt);
    let negative = p.negative_prompt.as_deref().unwrap_or("");
    let Rows { ids: row_ids, weights: row_weights, positions, dropped } = if p.prompt_weighting {
        let t = crate::prompt::lpw_tokens(tok, &prompt, cfg.then_some(negative))?;
        let k = t.chunks;
        // Without CFG LPW never reads the negative prompt; its cut is reported all the same.
        let neg_dropped = match &t.negative {
            Some(n) => n.dropped,
            None => crate::prompt::WeightedTokens::new(tok, negative)?.dropped,
        };
        let mut rows = Vec::new();
        if let Some(n) = &t.negative {
            rows.extend(std::iter::repeat_n((n.chunk_ids(tok, k), n.chunk_weights(k)), b));
        }
        rows.extend(std::iter::repeat_n((t.prompt.chunk_ids(tok, k), t.prompt.chunk_weights(k)), b));
        let weighted = rows.iter().any(|(_, w)| w.iter().any(|&v| v != 1.0));
        let (ids, weights): (Vec<_>, Vec<_>) = rows.into_iter().unzip();
        Rows { ids, weights: weighted.then_some(weights), positions: crate::prompt::CHUNK_LEN * k, dropped: (t.prompt.dropped, neg_dropped) }
    } else {
        let pos = tok.encode(&prompt)?;
        let neg = tok.encode(negative)?;
        let mut rows = Vec::new();
        if cfg {
            rows.extend(std::iter::repeat_n(neg.ids.clone(), b));
        }
        rows.extend(std::iter::repeat_n(pos.ids.clone(), b));
        Rows { ids: rows, weights: None, positions: pos.ids.len(), dropped: (pos.dropped_tokens, neg.dropped_tokens) }
    };
    let rows = row_ids.len();
    let chunk = crate::tokenizer::MAX_LEN;
    let ids: Vec<u32> = row_ids.concat();
    // Each chunk of 77 is its own sequence for the text encoder; a row's chunks are
    // consecutive, so [rows·k, 77, C] is [rows, 77·k, C] in memory.
    let ids_t = gpu.upload_u32(&[ids.len() / chunk, chunk], &ids)?;
    let text = sd.clip.forward(&c, &ids_t)?;
    drop(ids_t);
    let hidden = text.dim(-1);
    let text = text.reshape(&[rows, positions, hidden])?;
    let states = match row_weights {
        Some(w) => {
            let wt = gpu.upload(&[rows, positions], DType::F32, &w.concat())?;
            ops::prompt_weighting(gpu, &text, &wt, sd.dtypes.unet)?
        }
        None if text.dtype() != sd.dtypes.unet => ops::cast(gpu, &text, sd.dtypes.unet)?,
        None => text,
    };
    gpu.trim_pool();
    Ok(TextStates { states, pooled: None, dropped_tokens: dropped, key: text_key(sd, p) })
}

/// One text's ids and weights for an SDXL text encoder (plain: diffusers' 77 ids; with
/// [`Params::prompt_weighting`]: the A1111-syntax tokens and their weights, up to 225).
struct XlText {
    ids: Vec<u32>,
    weights: Vec<f64>,
    dropped: usize,
}

impl XlText {
    fn new(tok: &ClipTokenizer, text: &str, weighting: bool) -> Result<XlText> {
        if weighting {
            let w = crate::prompt::WeightedTokens::new(tok, text)?;
            Ok(XlText { ids: w.ids, weights: w.weights, dropped: w.dropped })
        } else {
            let e = tok.encode(text)?;
            Ok(XlText { ids: e.ids, weights: Vec::new(), dropped: e.dropped_tokens })
        }
    }

    /// The encoder's input (77·k ids) and one weight per position. Plain: the tokenizer's 77
    /// ids. Weighted: chunk j = start token, tokens 75j … 75j + 74, end token, pad tokens (the
    /// tokenizer's own layout per chunk, as A1111 lays out SDXL's chunks), weight 1 at the
    /// start, end and pad positions; a plain prompt of ≤ 75 tokens gives diffusers' ids.
    fn rows(&self, tok: &ClipTokenizer, weighting: bool, chunks: usize) -> (Vec<u32>, Vec<f32>) {
        if !weighting {
            return (self.ids.clone(), vec![1.0; self.ids.len()]);
        }
        let len = crate::prompt::CHUNK_LEN;
        let per = crate::prompt::CHUNK_TOKENS;
        let (mut ids, mut w) = (Vec::with_capacity(len * chunks), Vec::with_capacity(len * chunks));
        for j in 0..chunks {
            let (a, e) = ((j * per).min(self.ids.len()), ((j + 1) * per).min(self.ids.len()));
            ids.push(tok.start_id());
            w.push(1.0);
            ids.extend(&self.ids[a..e]);
            w.extend(self.weights[a..e].iter().map(|&v| v as f32));
            ids.push(tok.end_id());
            w.push(1.0);
            ids.resize((j + 1) * len, tok.pad_id());
            w.resize((j + 1) * len, 1.0);
        }
        (ids, w)
    }
}

/// The position of each 77-id sequence's first largest id (the end token: diffusers' pooled
/// position `argmax(input_ids)`), computed from the host ids.
fn eos_positions(ids: &[u32]) -> Vec<usize> {
    ids.chunks(crate::tokenizer::MAX_LEN)
        .map(|seq| {
            let mut at = 0;
            for (i, &v) in seq.iter().enumerate() {
                if v > seq[at] {
                    at = i;
                }
            }
            at
        })
        .collect()
}

/// `[a; b]` along the first axis (same trailing shape, same dtype).
fn stack_rows(gpu: &Gpu, a: &Tensor, b: &Tensor) -> Result<Tensor> {
    let mut shape = b.shape().to_vec();
    shape[0] += a.shape()[0];
    ops::concat_channels(gpu, &a.reshape(&[1, a.numel(), 1])?, &b.reshape(&[1, b.numel(), 1])?)?.reshape(&shape)
}

/// SDXL's text conditioning, as diffusers' `StableDiffusionXLPipeline.encode_prompt`:
/// `prompt` through tokenizer / text_encoder, `prompt_2` (default `prompt`) through
/// tokenizer_2 / text_encoder_2, both encoders' penultimate hidden states side by side on
/// the feature axis, and text_encoder_2's pooled projection at each row's end token. With
/// CFG, a negative prompt left out (`None`) and `force_zeros_for_empty_prompt` (the default),
/// the negative states and pooled embedding are zeros; an explicit `""` is encoded.
///
/// [`Params::prompt_weighting`]: A1111's syntax per encoder (each encoder gets the weights
/// of its own prompt, applied to its own states with their mean kept, as
/// [`ops::prompt_weighting`] does for SD) and up to 3 chunks of 75 tokens laid out as the
/// tokenizer lays out one (start, tokens, end, pad); the pooled embedding is the first
/// chunk's. A prompt without weights that fits 75 tokens is encoded exactly as diffusers.
fn encode_text_xl(gpu: &Gpu, sd: &StableDiffusion, tok: &ClipTokenizer, p: &Params) -> Result<TextStates> {
    let clip2 = sd.clip2.as_ref().ok_or_else(|| Error::Invalid("this SDXL model has no second text encoder (text_encoder_2): it cannot encode the prompt".into()))?;
    let tok2_own;
    let tok2 = match &sd.tokenizer_2 {
        Some(t) => t,
        None => {
            tok2_own = ClipTokenizer::sd2()?;
            &tok2_own
        }
    };
    let c = sd.ctx(gpu);
    let dt = sd.dtypes.unet;
    let (b, _) = images_made(p);
    let cfg = uses_cfg(sd, p);
    let force_zeros = sd.cfg.xl.as_ref().is_none_or(|x| x.force_zeros_for_empty_prompt);
    let zero_negative = cfg && p.negative_prompt.is_none() && force_zeros;
    let encode_negative = cfg && !zero_negative;
    gpu.trim_pool();
    gpu.reset_peak();
    let strip = |t: &str| crate::prompt::extract_loras(t).0;
    let weighting = p.prompt_weighting;
    let prompt1 = XlText::new(tok, &strip(&p.prompt), weighting)?;
    let prompt2 = XlText::new(tok2, &strip(p.prompt_2.as_deref().unwrap_or(&p.prompt)), weighting)?;
    let neg1 = XlText::new(tok, &strip(p.negative_prompt.as_deref().unwrap_or("")), weighting)?;
    let neg2 = XlText::new(tok2, &strip(p.negative_prompt_2.as_deref().or(p.negative_prompt.as_deref()).unwrap_or("")), weighting)?;
    let dropped = (prompt1.dropped.max(prompt2.dropped), neg1.dropped.max(neg2.dropped));
    // One chunk count for every row of both encoders (their states sit side by side).
    let chunks = if weighting {
        let mut counts = vec![prompt1.ids.len(), prompt2.ids.len()];
        if encode_negative {
            counts.extend([neg1.ids.len(), neg2.ids.len()]);
        }
        crate::prompt::chunk_count(&counts)
    } else {
        1
    };
    let positions = crate::tokenizer::MAX_LEN * chunks;
    // Rows [negative × b, prompt × b] (negative only when encoded) of one encoder: its
    // penultimate states [rows, positions, D] in the UNet's storage, weighted, and the
    // pooled projection of each row's first chunk [rows, P] when the encoder has one.
    let run = |model: &crate::model::clip::ClipTextModel, t: &ClipTokenizer, pos: &XlText, neg: &XlText| -> Result<(Tensor, Option<Tensor>)> {
        let mut rows = Vec::new();
        if encode_negative {
            rows.extend(std::iter::repeat_n(neg.rows(t, weighting, chunks), b));
        }
        rows.extend(std::iter::repeat_n(pos.rows(t, weighting, chunks), b));
        let n = rows.len();
        let weighted = rows.iter().any(|(_, w)| w.iter().any(|&v| v != 1.0));
        let (ids, weights): (Vec<Vec<u32>>, Vec<Vec<f32>>) = rows.into_iter().unzip();
        let ids = ids.concat();
        let eos = eos_positions(&ids);
        let ids_t = gpu.upload_u32(&[ids.len() / crate::tokenizer::MAX_LEN, crate::tokenizer::MAX_LEN], &ids)?;
        let out = model.encode_xl(&c, &ids_t, &eos)?;
        drop(ids_t);
        let hidden = out.penultimate.dim(-1);
        let x = out.penultimate.reshape(&[n, positions, hidden])?;
        let states = if weighted {
            let wt = gpu.upload(&[n, positions], DType::F32, &weights.concat())?;
            ops::prompt_weighting(gpu, &x, &wt, dt)?
        } else {
            ops::cast(gpu, &x, dt)?
        };
        let pooled = match out.pooled {
            Some(pl) if chunks == 1 => Some(ops::cast(gpu, &pl, dt)?),
            Some(pl) => {
                let width = pl.dim(-1);
                let mut all: Option<Tensor> = None;
                for r in 0..n {
                    let one = ops::lincomb(gpu, &[OpTerm { t: &pl, offset: r * chunks * width, coef: 1.0 }], &[1, width], dt)?;
                    all = Some(match all {
                        Some(a) => stack_rows(gpu, &a, &one)?,
                        None => one,
                    });
                }
                all
            }
            None => None,
        };
        Ok((states, pooled))
    };
    let (s1, _) = run(&sd.clip, tok, &prompt1, &neg1)?;
    let (s2, pooled) = run(clip2, tok2, &prompt2, &neg2)?;
    let pooled = pooled.ok_or_else(|| Error::Invalid("SDXL's second text encoder has no text_projection (its pooled embedding is the UNet's text_embeds)".into()))?;
    let rows = s1.shape()[0];
    let (d1, d2) = (s1.dim(-1), s2.dim(-1));
    let states = ops::concat_channels(gpu, &s1.reshape(&[rows * positions, d1, 1])?, &s2.reshape(&[rows * positions, d2, 1])?)?.reshape(&[rows, positions, d1 + d2])?;
    drop((s1, s2));
    let (states, pooled) = if zero_negative {
        let zs = gpu.upload(states.shape(), dt, &vec![0f32; states.numel()])?;
        let zp = gpu.upload(pooled.shape(), dt, &vec![0f32; pooled.numel()])?;
        (stack_rows(gpu, &zs, &states)?, stack_rows(gpu, &zp, &pooled)?)
    } else {
        (states, pooled)
    };
    gpu.trim_pool();
    Ok(TextStates { states, pooled: Some(pooled), dropped_tokens: dropped, key: text_key(sd, p) })
}

/// SDXL's `add_time_ids` rows (negative, positive) for an output of `w` × `h` of a model with
/// the pipeline config `xl`, as diffusers'
/// `_get_add_time_ids`: original size (h, w) + crop (top, left) + target size (h, w), or, for
/// a model whose pipeline config `requires_aesthetics_score` (the refiner), original size +
/// crop + aesthetic score. The negative row: txt2img uses the `negative_*` sizes only when
/// both are given (with `negative_crops_coords_top_left`, default (0, 0)), else the positive
/// row; img2img defaults each negative size to the positive one and uses the positive crop
/// (the aesthetic rule: the negative crop), as StableDiffusionXLImg2ImgPipeline does.
pub fn xl_time_ids(xl: Option<&crate::model::config::XlPipelineConfig>, p: &Params, w: usize, h: usize) -> (Vec<f32>, Vec<f32>) {
    let pair = |v: (usize, usize)| [v.0 as f32, v.1 as f32];
    let original = p.original_size.unwrap_or((h, w));
    let target = p.target_size.unwrap_or((h, w));
    let crops = p.crops_coords_top_left.unwrap_or((0, 0));
    let neg_crops = p.negative_crops_coords_top_left.unwrap_or((0, 0));
    let aesthetics = xl.is_some_and(|x| x.requires_aesthetics_score);
    let row = |o, c, tail: &[f32]| -> Vec<f32> { pair(o).into_iter().chain(pair(c)).chain(tail.iter().copied()).collect() };
    if aesthetics {
        let neg_original = p.negative_original_size.unwrap_or(original);
        let pos = row(original, crops, &[p.aesthetic_score as f32]);
        let neg = row(neg_original, neg_crops, &[p.negative_aesthetic_score as f32]);
        return (neg, pos);
    }
    let pos = row(original, crops, &pair(target));
    let neg = if p.init_image.is_some() {
        row(p.negative_original_size.unwrap_or(original), crops, &pair(p.negative_target_size.unwrap_or(target)))
    } else {
        match (p.negative_original_size, p.negative_target_size) {
            (Some(o), Some(t)) => row(o, neg_crops, &pair(t)),
            _ => pos.clone(),
        }
    };
    (neg, pos)
}

/// [`generate`] with run options (live preview).
pub async fn generate_with(
    gpu: &Gpu,
    sd: &StableDiffusion,
    tok: &ClipTokenizer,
    scheduler_config: Option<&str>,
    p: &Params,
    run: &RunOptions,
    on_step: &mut dyn FnMut(Progress) -> bool,
) -> Result<Output> {
    let text = encode_text(gpu, sd, tok, p)?;
    let out = generate_from_text(gpu, sd, &text, scheduler_config, p, run, on_step).await;
    // The text states go back to the pool here: trim so that only the weights stay held.
    drop(text);
    gpu.trim_pool();
    out
}

/// Everything after the text encoder ([`encode_text`] made `text` for these parameters).
pub async fn generate_from_text(
    gpu: &Gpu,
    sd: &StableDiffusion,
    text_states: &TextStates,
    scheduler_config: Option<&str>,
    p: &Params,
    run: &RunOptions,
    on_step: &mut dyn FnMut(Progress) -> bool,
) -> Result<Output> {
    let (w, h) = validate(sd, p)?;
    let c = sd.ctx(gpu);
    let dts = sd.dtypes;
    let dt = dts.unet;
    // The images made: the whole batch, or the one at batch_pos (its random draws are the
    // same slices of the same draws as in the whole batch).
    let (b, first) = images_made(p);
    let lcm_w = sd.cfg.unet.time_cond_proj_dim;
    let cfg = uses_cfg(sd, p);
    if !text_states.is_for(sd, p) {
        return Err(Error::Invalid("the text states were encoded for other prompts or another batch".into()));
    }
    let lc = sd.cfg.vae.latent_channels;
    let vf = latent_factor(sd);
    let (lh, lw) = (h / vf, w / vf);
    let lshape = [b, lc, lh, lw];
    let per = lc * lh * lw;
    let ln = b * per;
    let draw = |rng: &mut TorchRng| -> Vec<f32> {
        let all = rng.randn(p.batch * per);
        all[first * per..(first + b) * per].to_vec()
    };
    // Every generation measures its own peak from the text encoder on ([`encode_text`] resets
    // it); the pool is trimmed between the phases (text encoder → [VAE encode →] denoising loop
    // → VAE), so memory used for one size or batch is returned before the next phase.
    let text = text_states.states.clone();

    let mut rng = TorchRng::new(p.seed);
    let overrides = schedulers::Overrides { timestep_spacing: p.timestep_spacing, prediction_type: p.prediction_type };
    let mut s = schedulers::from_config_with(&p.sampler, scheduler_config, p.steps, &overrides)?;
    let timesteps: Vec<f64> = s.timesteps().to_vec();

    // The encoder of start images: the VAE's posterior sample (one random draw of one
    // image's latents) or TAESD's latents (no draw), × the scaling factor; [1, c, h, w].
    // SDXL: a VAE whose config says `force_upcast` runs in f32 when its storage is f16
    // (diffusers' XL pipelines upcast it for the img2img encode and the decode): an f32 copy
    // of its weights is made for the encode / decode and freed right after.
    let vae_dt = if sd.cfg.is_xl() && dts.vae == DType::F16 && sd.cfg.vae.force_upcast { DType::F32 } else { dts.vae };
    let tiny_encodes = matches!((p.decoder, &sd.tiny_vae), (Decoder::Tiny, Some(_)));
    let encode = |chw: &[f32], rng: &mut TorchRng| -> Result<Tensor> {
        match (p.decoder, &sd.tiny_vae) {
            (Decoder::Tiny, Some(tiny)) => {
                let x = gpu.upload(&[1, 3, h, w], tiny.dtype, chw)?;
                let z = tiny.encode(gpu, &x)?;
                ops::affine(gpu, &z, tiny.cfg.scaling_factor, 0.0)
            }
            _ => {
                let w32 = if vae_dt != dts.vae { Some(f32_vae_weights(gpu, sd)?) } else { None };
                let cv = match &w32 {
                    Some(w) => Ctx { gpu, w },
                    None => sd.ctx(gpu),
                };
                let x = gpu.upload(&[1, 3, h, w], vae_dt, chw)?;
                // Tiled when an untiled encode would need a buffer beyond the binding limit.
                let (mean, logvar) = sd.vae.encode_auto(&cv, &x, gpu.max_binding())?;
                let n1 = gpu.upload(&[1, lc, lh, lw], vae_dt, &rng.randn(per))?;
                ops::vae_sample(gpu, &mean, &logvar, &n1, sd.cfg.vae.scaling_factor)
            }
        }
    };
    // One image's tensor [1, …] repeated to `n` along the batch, as `shape`, in `dtype`.
    let repeat = |t: &Tensor, n: usize, shape: &[usize], dtype: DType| -> Result<Tensor> {
        let one = ops::lincomb(gpu, &[OpTerm { t, offset: 0, coef: 1.0 }], &[1, t.numel(), 1], dtype)?;
        let mut all = one.clone();
        for _ in 1..n {
            all = ops::concat_channels(gpu, &all, &one)?;
        }
        all.reshape(shape)
    };
    let inpaint9 = crate::inpaint::is_inpainting_unet(sd.cfg.unet.in_channels, lc);
    let ub = if cfg { 2 * b } else { b };
    // Inpainting: what the loop adds to each step. `cond`: the inpainting UNet's extra input
    // channels [ub, 1 + c, h, w] (latent mask, masked-image latents); `keep`: for other models
    // the kept region's clean latents, the initial noise and the latent mask over every
    // channel, blended in after each step; `paste`: the fitted start image and soft mask.
    let mut cond: Option<Tensor> = None;
    let mut keep: Option<(Tensor, Tensor, Tensor)> = None;
    let mut paste: Option<(Rgb, Vec<f32>)> = None;

    // Initial latents (f32 on the GPU for the whole loop).
    let (begin, mut latents) = match (&p.init_image, &p.mask) {
        (None, _) => {
            let x = gpu.upload(&lshape, DType::F32, &draw(&mut rng))?;
            (0, ops::affine(gpu, &x, s.init_noise_sigma() as f32, 0.0)?)
        }
        (Some(img), None) => {
            let begin = s.img2img_begin(p.strength)?;
            let img = crate::image::resize_to(img, w, h, p.resize_mode);
            // [-1, 1] NCHW, one image; the VAE's latent_dist.sample draws first.
            let init = encode(&crate::inpaint::to_chw(&img), &mut rng)?;
            let init_b = repeat(&init, b, &lshape, DType::F32)?;
            let noise = gpu.upload(&lshape, DType::F32, &draw(&mut rng))?;
            let (a, k) = s.add_noise_coeffs(begin);
            let t = [OpTerm { t: &init_b, offset: 0, coef: a }, OpTerm { t: &noise, offset: 0, coef: k }];
            let latents = ops::lincomb(gpu, &t, &lshape, DType::F32)?;
            drop((init, init_b, noise));
            gpu.trim_pool();
            (begin, latents)
        }
        (Some(img), Some(mask)) => {
            // diffusers' order of draws: the start image's posterior sample (when the
            // latents start from it, or the blending needs it), the noise, then the masked
            // image's posterior sample (drawn also when a 4-channel UNet does not use it).
            let full = p.strength >= 1.0;
            let begin = if full { 0 } else { s.img2img_begin(p.strength)? };
            let prep = crate::inpaint::prepare(img, mask, w, h, vf, p.resize_mode);
            let image_b = if !inpaint9 || !full {
                let z = encode(&prep.image_chw, &mut rng)?;
                Some(repeat(&z, b, &lshape, DType::F32)?)
            } else {
                None
            };
            let noise = gpu.upload(&lshape, DType::F32, &draw(&mut rng))?;
            let latents = match (&image_b, full) {
                (Some(z), false) => {
                    let (a, k) = s.add_noise_coeffs(begin);
                    ops::lincomb(gpu, &[OpTerm { t: z, offset: 0, coef: a }, OpTerm { t: &noise, offset: 0, coef: k }], &lshape, DType::F32)?
                }
                _ => ops::affine(gpu, &noise, s.init_noise_sigma() as f32, 0.0)?,
            };
            if inpaint9 {
                let masked = encode(&prep.masked_chw, &mut rng)?;
                let m = gpu.upload(&[1, 1, lh * lw], DType::F32, &prep.latent)?;
                let masked = ops::lincomb(gpu, &[OpTerm { t: &masked, offset: 0, coef: 1.0 }], &[1, lc, lh * lw], DType::F32)?;
                let one = ops::concat_channels(gpu, &m, &masked)?;
                cond = Some(repeat(&one, ub, &[ub, 1 + lc, lh, lw], dt)?);
                drop((image_b, noise));
            } else {
                if !tiny_encodes {
                    // The masked image's sample is not used by a 4-channel UNet: only its draw.
                    let _ = rng.randn(per);
                }
                let mfull: Vec<f32> = (0..ln).map(|k| prep.latent[k % (lh * lw)]).collect();
                let mt = gpu.upload(&lshape, DType::F32, &mfull)?;
                let z = image_b.ok_or_else(|| Error::Invalid("inpainting without the start image's latents".into()))?;
                keep = Some((z, noise, mt));
            }
            if p.paste_back {
                paste = Some((prep.image, prep.soft));
            }
            gpu.trim_pool();
            (begin, latents)
        }
    };

    // SDXL: the pooled text embeddings and the micro-conditioning time ids, rows as the text
    // states' ([negative × b, prompt × b] with CFG), uploaded once for the whole loop.
    let added = if sd.cfg.is_xl() {
        let pooled = text_states.pooled.as_ref().ok_or_else(|| Error::Invalid("SDXL text states without the pooled embedding".into()))?;
        let (neg, pos) = xl_time_ids(sd.cfg.xl.as_ref(), p, w, h);
        let mut ids = Vec::with_capacity(ub * pos.len());
        if cfg {
            (0..b).for_each(|_| ids.extend(&neg));
        }
        (0..b).for_each(|_| ids.extend(&pos));
        Some(AddedCond { text_embeds: pooled.clone(), time_ids: gpu.upload(&[ub, pos.len()], DType::F32, &ids)? })
    } else {
        None
    };
    // Timestep tensors for every step, made before the loop.
    let t_tensors: Vec<Tensor> = timesteps[begin..].iter().map(|&t| gpu.upload(&[ub], DType::F32, &vec![t as f32; ub])).collect::<Result<_>>()?;
    // LCM: w = guidance − 1 as a sinusoidal embedding, one row per image, in the UNet's
    // storage (as diffusers casts it to the latents' dtype), once for the whole loop.
    let w_cond = match lcm_w {
        Some(d) => {
            let row = guidance_embedding(p.guidance_scale - 1.0, d);
            Some(gpu.upload(&[ub, d], dt, &row.repeat(ub))?)
        }
        None => None,
    };
    // TAESD previews of x₀ when a tiny VAE is loaded and its decode fits the binding limit.
    let tiny_preview = match &sd.tiny_vae {
        Some(t) if run.preview => t.fits(1, h, w, gpu.max_binding()),
        _ => false,
    };
    let mut tiny_read: Option<crate::gpu::Readback> = None;
    let mut slots: Vec<Option<Tensor>> = vec![None; s.slots()];
    let total = timesteps.len() - begin;
    gpu.flush()?;
    // The latents entering the next step, on their way back for the preview.
    let mut preview_read = if run.preview && !tiny_preview { Some(gpu.read_later(&latents)?) } else { None };
    for (k, i) in (begin..timesteps.len()).enumerate() {
        let scale = s.scale_model_input(i);
        let x_in = ops::lincomb(gpu, &[OpTerm { t: &latents, offset: 0, coef: scale }], &lshape, dt)?;
        let x_in = if cfg {
            let flat = x_in.reshape(&[1, ln, 1])?;
            ops::concat_channels(gpu, &flat, &flat)?.reshape(&[2 * b, lc, lh, lw])?
        } else {
            x_in
        };
        let x_in = match &cond {
            Some(cd) => ops::concat_channels(gpu, &x_in, cd)?,
            None => x_in,
        };
        let out = sd.unet.forward_full(&c, &x_in, &t_tensors[k], &text, w_cond.as_ref(), added.as_ref())?;
        drop(x_in);
        let eps = if cfg {
            let g = p.guidance_scale;
            ops::lincomb(gpu, &[OpTerm { t: &out, offset: 0, coef: 1.0 - g }, OpTerm { t: &out, offset: ln, coef: g }], &lshape, DType::F32)?
        } else {
            ops::cast(gpu, &out, DType::F32)?
        };
        drop(out);
        // The preview's x₀ of image 0, decoded by TAESD (read back after the step is submitted).
        let tiny_img = match (&sd.tiny_vae, tiny_preview) {
            (Some(tiny), true) => {
                // Terms start at offset 0: the combination over [1, c, h, w] is image 0's.
                let terms = combo_terms(&s.denoised(i), &latents, &eps, &slots, None)?;
                let x0 = ops::lincomb(gpu, &terms, &[1, lc, lh, lw], tiny.dtype)?;
                Some(tiny.decode(gpu, &x0)?)
            }
            _ => None,
        };
        let plan = s.step(i);
        let noise = if plan.uses_noise { Some(gpu.upload(&lshape, DType::F32, &draw(&mut rng))?) } else { None };
        let mut stored = Vec::new();
        for (slot, combo) in &plan.store {
            let terms = combo_terms(combo, &latents, &eps, &slots, noise.as_ref())?;
            stored.push((*slot, ops::lincomb(gpu, &terms, &lshape, DType::F32)?));
        }
        let next_combo = plan.next_from_old_slots();
        let next = {
            let terms = combo_terms(&next_combo, &latents, &eps, &slots, noise.as_ref())?;
            ops::lincomb(gpu, &terms, &lshape, DType::F32)?
        };
        for (slot, t) in stored {
            if slot >= slots.len() {
                slots.resize(slot + 1, None);
            }
            slots[slot] = Some(t);
        }
        latents = next;
        // A 4-channel model inpainting: the kept region is the start image's latents noised
        // to the next step's level (clean after the last step), as diffusers blends it.
        if let Some((z, noise, m)) = &keep {
            let known = if k + 1 < total {
                let (a, kn) = s.add_noise_coeffs(i + 1);
                ops::lincomb(gpu, &[OpTerm { t: z, offset: 0, coef: a }, OpTerm { t: noise, offset: 0, coef: kn }], &lshape, DType::F32)?
            } else {
                z.clone()
            };
            let d = ops::add(gpu, &latents, &known, 1.0, -1.0)?;
            let md = ops::mul(gpu, m, &d)?;
            latents = ops::add(gpu, &known, &md, 1.0, 1.0)?;
        }
        // Submits the step; in the browser also lets the event loop run (cancel messages)
        // while the GPU works, with at most one step queued ahead.
        gpu.pace().await?;
        // The step's input latents were copied before the step was submitted: this waits at
        // most for that copy. Euler-type samplers keep latents scaled by sigma: show them as
        // the UNet input saw them.
        let preview = match preview_read.take() {
            Some(r) => {
                let p = latent_preview(&r.f32().await?, lh, lw, scale as f32);
                if k + 1 < total {
                    preview_read = Some(gpu.read_later(&latents)?);
                }
                Some(p)
            }
            None => match tiny_read.take() {
                Some(r) => Some(image_preview(&r.f32().await?, h, w)),
                None => None,
            },
        };
        // The x₀ of this step comes with the next step's progress (read while it runs); the
        // last step's is read at once (the loop is over: nothing waits for it).
        let preview = match tiny_img {
            Some(img) if k + 1 == total => Some(image_preview(&gpu.read_later(&img)?.f32().await?, h, w)),
            Some(img) => {
                tiny_read = Some(gpu.read_later(&img)?);
                preview
            }
            None => preview,
        };
        if !on_step(Progress { step: k + 1, steps: total, latents: &latents, preview }) {
            drop((slots, text, t_tensors, w_cond, tiny_read, cond, keep, added));
            gpu.trim_pool();
            return Err(Error::Cancelled);
        }
    }
    drop((slots, text, t_tensors, preview_read, tiny_read, w_cond, cond, keep, added));

    let lat = gpu.read(&latents).await?;
    if let Some(i) = lat.iter().position(|v| !v.is_finite()) {
        drop(latents);
        gpu.trim_pool();
        return Err(Error::NonFinite(format!(
            "the denoising produced non-finite latents ({} at index {i}): the UNet overflowed{}. Nothing was decoded.",
            lat[i],
            if dt == DType::F16 { " in f16; try f32 storage (--dtype f32 / dtype: \"f32\")" } else { "; the weights may be broken" }
        )));
    }
    gpu.trim_pool();
    let mut warnings = Vec::new();
    let mut vae_upcast = false;
    let mut decoder = Decoder::Vae;
    let mut px = Vec::new();
    if let (Decoder::Tiny, Some(tiny)) = (p.decoder, &sd.tiny_vae) {
        if tiny.fits(1, h, w, gpu.max_binding()) {
            px = decode_tiny_pixels(gpu, tiny, &latents, b, [lc, lh, lw]).await?;
            if let Some(i) = px.iter().position(|v| !v.is_finite()) {
                gpu.trim_pool();
                return Err(Error::NonFinite(format!("the tiny VAE (TAESD) decode produced non-finite pixels ({} at index {i}): its weights may be broken", px[i])));
            }
            decoder = Decoder::Tiny;
        } else {
            warnings.push(format!("{w}×{h} is too large for the tiny VAE (TAESD) within this GPU's buffer limit, so the image was decoded by the full VAE"));
        }
    }
    if decoder == Decoder::Vae {
        if vae_dt != dts.vae {
            let w32 = f32_vae_weights(gpu, sd)?;
            px = decode_pixels(gpu, sd, &Ctx { gpu, w: &w32 }, &latents, vae_dt).await?;
            drop(w32);
            gpu.trim_pool();
        } else {
            px = decode_pixels(gpu, sd, &c, &latents, dts.vae).await?;
        }
    }
    if let Some(i) = px.iter().position(|v| !v.is_finite()).filter(|_| decoder == Decoder::Vae) {
        let first_bad = px[i];
        if vae_dt == DType::F32 {
            gpu.trim_pool();
            return Err(Error::NonFinite(format!("the VAE decode produced non-finite pixels ({} at index {i}) with the VAE in f32: the VAE weights may be broken", px[i])));
        }
        // An f16 VAE overflowed (diffusers' force_upcast, A1111's --no-half-vae): decode
        // again with an f32 copy of the VAE weights, freed right after.
        gpu.trim_pool();
        let w32 = f32_vae_weights(gpu, sd)?;
        let c32 = Ctx { gpu, w: &w32 };
        px = decode_pixels(gpu, sd, &c32, &latents, DType::F32).await?;
        drop(w32);
        gpu.trim_pool();
        if let Some(j) = px.iter().position(|v| !v.is_finite()) {
            return Err(Error::NonFinite(format!(
                "the VAE decode produced non-finite pixels in f16 ({first_bad} at index {i}) and again in f32 ({} at index {j}): the VAE weights may be broken",
                px[j]
            )));
        }
        vae_upcast = true;
        warnings.push("the VAE overflowed in f16 (NaN or infinity in the image), so the image was decoded again with the VAE in f32; choose f32 for the VAE (--vae-dtype f32 / vaeDtype: \"f32\") to skip the f16 attempt".to_string());
    }
    drop(latents);
    gpu.trim_pool();
    // [B, 3, H, W] in [-1, 1] → [H, W, 3] in [0, 1] per image, as diffusers' postprocess.
    let hw = h * w;
    let images = (0..b)
        .map(|i| {
            let src = &px[i * 3 * hw..(i + 1) * 3 * hw];
            let mut data = vec![0f32; 3 * hw];
            for (j, v) in data.iter_mut().enumerate() {
                *v = (src[(j % 3) * hw + j / 3] * 0.5 + 0.5).clamp(0.0, 1.0);
            }
            let img = Rgb { width: w, height: h, data };
            match &paste {
                Some((init, soft)) => crate::inpaint::paste_back(&img, init, soft),
                None => img,
            }
        })
        .collect();
    Ok(Output {
        images,
        batch_positions: (first..first + b).collect(),
        latents: lat,
        dropped_tokens: text_states.dropped_tokens,
        warnings,
        vae_upcast,
        decoder,
    })
}

/// diffusers' `LatentConsistencyModelPipeline.get_guidance_scale_embedding` (float32): for
/// w·1000 the `[sin, cos]` of `exp(−ln(10000)·k / (half − 1))`, k < half, zero-padded to `dim`.
pub fn guidance_embedding(w: f64, dim: usize) -> Vec<f32> {
    let half = dim / 2;
    let w = (w * 1000.0) as f32;
    let step = 10000f32.ln() / (half.max(2) - 1) as f32;
    let mut out = vec![0f32; dim];
    for k in 0..half {
        let a = w * (k as f32 * -step).exp();
        out[k] = a.sin();
        out[half + k] = a.cos();
    }
    out
}

/// RGBA 8-bit of image 0 of `px` [B, 3, H, W] in [−1, 1] (as diffusers' postprocess).
fn image_preview(px: &[f32], h: usize, w: usize) -> Preview {
    let hw = h * w;
    let mut rgba = vec![255u8; hw * 4];
    for i in 0..hw {
        for c in 0..3 {
            let v = px.get(c * hw + i).copied().unwrap_or(0.0);
            rgba[i * 4 + c] = ((v * 0.5 + 0.5).clamp(0.0, 1.0) * 255.0).round() as u8;
        }
    }
    Preview { width: w, height: h, rgba }
}

/// The TAESD decode of `latents` [b, c, h, w] (f32), one image at a time, read back as f32
/// [b, 3, H, W] (not clamped).
async fn decode_tiny_pixels(gpu: &Gpu, tiny: &crate::model::taesd::TinyVae, latents: &Tensor, b: usize, [lc, lh, lw]: [usize; 3]) -> Result<Vec<f32>> {
    let per = lc * lh * lw;
    let mut out = Vec::new();
    for i in 0..b {
        let z = ops::lincomb(gpu, &[OpTerm { t: latents, offset: i * per, coef: 1.0 / tiny.cfg.scaling_factor as f64 }], &[1, lc, lh, lw], tiny.dtype)?;
        let img = tiny.decode(gpu, &z)?;
        drop(z);
        out.extend(gpu.read(&img).await?);
        drop(img);
        gpu.trim_pool();
    }
    Ok(out)
}

/// An f32 copy of the VAE's weights (for a VAE run in f32 whose storage is f16).
fn f32_vae_weights(gpu: &Gpu, sd: &StableDiffusion) -> Result<crate::weights::Weights> {
    let mut w = crate::weights::Weights::default();
    for (name, t) in sd.weights.iter().filter(|(n, _)| n.starts_with("vae/")) {
        w.insert(name.clone(), ops::cast(gpu, t, DType::F32)?);
    }
    Ok(w)
}

/// The VAE decode of `latents` [B, 4, h, w] (f32) with the VAE weights of `c` stored as `dt`,
/// read back as f32 [B, 3, H, W] (not clamped, so overflows are visible). Tiled when an
/// untiled decode would need a buffer beyond the adapter's binding limit.
async fn decode_pixels(gpu: &Gpu, sd: &StableDiffusion, c: &Ctx<'_>, latents: &Tensor, dt: DType) -> Result<Vec<f32>> {
    let z = ops::cast(gpu, latents, dt)?;
    let img = sd.vae.decode_auto(c, &z, gpu.max_binding())?;
    drop(z);
    gpu.read(&img).await
}

/// AUTOMATIC1111's `parameters` text for the image at `batch_pos` (0-based, A1111's
/// `Batch pos`) of a generation.
pub fn a1111_parameters(p: &Params, seed: u64, model: &str, batch_pos: usize) -> String {
    let sampler = match p.sampler.as_str() {
        "ddpm" => "DDPM",
        "ddim" => "DDIM",
        "pndm" => "PLMS",
        "euler" => "Euler",
        "euler_a" => "Euler a",
        "dpmpp_2m_karras" => "DPM++ 2M Karras",
        "lcm" => "LCM",
        other => other,
    };
    let mut s = p.prompt.clone();
    if let Some(n) = p.negative_prompt.as_deref().filter(|n| !n.is_empty()) {
        s.push_str(&format!("\nNegative prompt: {n}"));
    }
    s.push_str(&format!("\nSteps: {}, Sampler: {sampler}, CFG scale: {}, Seed: {seed}, Size: {}x{}, Model: {model}", p.steps, p.guidance_scale, p.width, p.height));
    if p.batch > 1 {
        s.push_str(&format!(", Batch size: {}, Batch pos: {batch_pos}", p.batch));
    }
    if p.decoder == Decoder::Tiny {
        s.push_str(", VAE: TAESD");
    }
    if let Some(img) = &p.init_image {
        if p.mask.is_some() {
            s.push_str(", Mask blur: 0");
        }
        s.push_str(&format!(", Denoising strength: {}", p.strength));
        if (img.width, img.height) != (p.width, p.height) {
            s.push_str(&format!(", Resize mode: {}", p.resize_mode.a1111()));
        }
    }
    s
}

/// A1111's record of the LoRAs of a generation in its `parameters` text (made by
/// [`a1111_parameters`] for a prompt `prompt`): a `<lora:name:scale>` tag at the end of the
/// prompt for each LoRA the prompt does not name already, and `Lora hashes: "name: hash, …"`.
/// `loras`: (name, scale, A1111 short hash), in order.
pub fn add_lora_parameters(text: &mut String, prompt: &str, loras: &[(String, f32, String)]) {
    if loras.is_empty() || !text.starts_with(prompt) {
        return;
    }
    let mut tags = String::new();
    for (name, scale, _) in loras {
        if !prompt.contains(&format!("<lora:{name}:")) && !prompt.contains(&format!("<lora:{name}>")) {
            tags.push_str(&format!(" <lora:{name}:{scale}>"));
        }
    }
    text.insert_str(prompt.len(), &tags);
    let hashes: Vec<String> = loras.iter().map(|(n, _, h)| format!("{}: {h}", n.replace([',', ':', '"'], "_"))).collect();
    text.push_str(&format!(", Lora hashes: \"{}\"", hashes.join(", ")));
}
