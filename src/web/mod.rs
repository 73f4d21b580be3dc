//! The browser layer: the only module that uses wasm-bindgen / web-sys. It runs inside
//! the module Web Worker (`www/sd-webgpu-worker.js`), one model per worker: the worker
//! fetches (or reads from its cache) each file and feeds the bytes here as they arrive;
//! this layer parses, uploads to the GPU and runs the pipeline.
use std::cell::RefCell;
use std::rc::Rc;

use wasm_bindgen::prelude::*;

use crate::gpu::{DType, Gpu, GpuOptions};
use crate::image::{encode_png, Rgb};
use crate::model::config::TinyVaeConfig;
use crate::model::lora::LoraLoader;
use crate::model::taesd::TinyVae;
use crate::model::{Configs, Dtypes, StableDiffusion};
use crate::pipeline::{self, Params, RunOptions};
use crate::tokenizer::ClipTokenizer;
use crate::weights::{source, Layout, Loader};
use crate::Error;

struct Model {
    /// Borrowed shared for a generation; mutably only between generations (tiny VAE attached,
    /// text encoder freed or put back).
    sd: RefCell<StableDiffusion>,
    tok: ClipTokenizer,
    scheduler: Option<String>,
    name: String,
    /// Free the text encoder's weights after each encoding (`load({ evictTextEncoder })`).
    evict_text_encoder: bool,
    /// The last text states (kept only with `evict_text_encoder`: the same prompts then need
    /// no text encoder), with the text-encoder LoRAs merged when they were made.
    text_cache: RefCell<Option<(pipeline::TextStates, TeLoras)>>,
}

/// The LoRAs merged into the text encoder: (name, scale bits, file hash) of each active LoRA
/// that has text-encoder modules. Text states are valid only for the set they were made with.
type TeLoras = Vec<(String, u32, String)>;

/// Active LoRAs as [`StableDiffusion::set_loras`] makes them of `wanted`: scale 0 left out,
/// the last scale of a name wins, first-seen order.
fn effective_loras(wanted: &[(String, f32)]) -> Vec<(String, f32)> {
    let mut out: Vec<(String, f32)> = Vec::new();
    for (n, s) in wanted {
        match out.iter_mut().find(|(m, _)| m == n) {
            Some(e) => e.1 = *s,
            None => out.push((n.clone(), *s)),
        }
    }
    out.retain(|(_, s)| *s != 0.0);
    out
}

fn te_loras(sd: &StableDiffusion, active: &[(String, f32)]) -> TeLoras {
    active
        .iter()
        .filter_map(|(n, s)| sd.loras.get(n).filter(|l| l.counts().1 > 0).map(|l| (n.clone(), s.to_bits(), l.hash.clone())))
        .collect()
}

/// What has been written to the GPU as weights since init(): the e2e tests prove with these
/// that changing LoRAs never reloads the model.
#[derive(Default)]
struct Uploads {
    /// Bytes of weight files streamed into the model's loaders (model, tiny VAE, text encoder
    /// streamed back), and files begun.
    weight_bytes: u64,
    weight_files: u64,
    /// Bytes of LoRA files streamed, and LoRA files loaded.
    lora_bytes: u64,
    lora_files: u64,
    /// LoRA merges run on the GPU and weights rebuilt by them (merge or restore), in all.
    lora_merges: u64,
    lora_tensors: u64,
}

struct State {
    gpu: Gpu,
    dtypes: Dtypes,
    loading: Option<(Configs, Loader)>,
    /// A single-file checkpoint whose configs come from its header: its first bytes are held
    /// here until the header is complete (then `loading` starts with those configs).
    checkpoint: Option<CheckpointStart>,
    /// The model being loaded came from a single-file checkpoint (no tokenizer or scheduler
    /// files: the family's own).
    from_checkpoint: bool,
    model: Option<Rc<Model>>,
    /// A TAESD being loaded; `feeding_tiny`: the current file is one of its files.
    tiny_loading: Option<(TinyVaeConfig, Loader)>,
    feeding_tiny: bool,
    /// A TAESD loaded before its model was ready (attached by finishModel).
    tiny_pending: Option<(TinyVae, String)>,
    /// The text encoder's weights being streamed back (after an eviction).
    te_loading: Option<Loader>,
    /// A LoRA file being streamed (beginLora … finishLora).
    lora_loading: Option<LoraLoader>,
    uploads: Uploads,
}

/// A single-file checkpoint begun without configs: its file (beginFile's name and total) and
/// its first bytes until the header is complete.
#[derive(Default)]
struct CheckpointStart {
    file: Option<(String, Option<u64>)>,
    sniffer: crate::model::CheckpointSniffer,
}

impl State {
    /// The current file is a checkpoint whose header is not complete yet.
    fn feeding_checkpoint(&self) -> bool {
        self.checkpoint.is_some() && !self.feeding_tiny && self.te_loading.is_none()
    }

    /// Feed a checkpoint's first bytes; once its header is complete (or cannot be read), the
    /// model's configs come from it ([`crate::model::checkpoint_configs`]: SD 1.5 / SD 2.x,
    /// a 9-channel inpainting UNet) and the held bytes go to the model's loader.
    fn feed_checkpoint(&mut self, chunk: &[u8], end: bool) -> Result<(), JsValue> {
        let Some(cs) = self.checkpoint.as_mut() else { return Ok(()) };
        let Some((_, total)) = cs.file.clone() else { return Err(invalid("beginFile(name, total, \"checkpoint\") first")) };
        let Some(cfg) = cs.sniffer.push(chunk, total, end) else { return Ok(()) };
        let cs = self.checkpoint.take().expect("checked above");
        let (name, total) = cs.file.expect("checked above");
        let mut loader = StableDiffusion::loader(&self.gpu, &cfg, self.dtypes, &cfg.components());
        loader.begin(&name, total, cfg.single_file_layout());
        loader.feed(&cs.sniffer.into_held()).map_err(js_err)?;
        self.loading = Some((cfg, loader));
        Ok(())
    }
}

thread_local! {
    static STATE: RefCell<Option<State>> = const { RefCell::new(None) };
    static ON_LOST: RefCell<Option<js_sys::Function>> = const { RefCell::new(None) };
}

fn js_err(e: Error) -> JsValue {
    let err = js_sys::Error::new(&e.to_string());
    match e {
        Error::Cancelled => err.set_name("AbortError"),
        Error::DeviceLost(_) => err.set_name("DeviceLostError"),
        _ => {}
    }
    err.into()
}

fn invalid(m: impl Into<String>) -> JsValue {
    js_err(Error::Invalid(m.into()))
}

fn with_state<T>(f: impl FnOnce(&mut State) -> Result<T, JsValue>) -> Result<T, JsValue> {
    STATE.with(|s| match s.borrow_mut().as_mut() {
        Some(st) => f(st),
        None => Err(invalid("the GPU is not open: call init() first")),
    })
}

#[wasm_bindgen(start)]
pub fn start() {
    console_error_panic_hook::set_once();
}

fn parse_dtype(what: &str, s: &str) -> Result<DType, JsValue> {
    match s {
        "f16" => Ok(DType::F16),
        "f32" => Ok(DType::F32),
        other => Err(invalid(format!("{what} must be \"f16\" or \"f32\" (got {other:?})"))),
    }
}

/// Open the GPU for a model: `dtype` "f16" | "f32" (GPU storage of the model), `vae_dtype`
/// the VAE's when it differs; `max_binding`: pretend the adapter allows at most this many
/// bytes per binding (WebGPU's defaults are 128 MiB). Returns the adapter information
/// (JSON). `on_lost(message)` is called if the device is lost.
#[wasm_bindgen]
pub async fn init(dtype: String, vae_dtype: Option<String>, max_binding: Option<f64>, on_lost: Option<js_sys::Function>) -> Result<String, JsValue> {
    let d = parse_dtype("dtype", &dtype)?;
    let vae = match vae_dtype.as_deref() {
        Some(v) => parse_dtype("vaeDtype", v)?,
        None => d,
    };
    let dtypes = Dtypes { vae, ..Dtypes::all(d) };
    let gpu = Gpu::new(GpuOptions { max_binding_override: max_binding.map(|b| b as u64), ..Default::default() }).await.map_err(js_err)?;
    ON_LOST.with(|c| *c.borrow_mut() = on_lost);
    // The callback closure must be Send: it holds nothing, the JS function is thread-local
    // (a worker is single-threaded).
    gpu.on_lost(|m| {
        let m = m.to_string();
        ON_LOST.with(|c| {
            if let Some(f) = c.borrow().as_ref() {
                let _ = f.call1(&JsValue::NULL, &JsValue::from_str(&m));
            }
        });
    });
    let info = serde_json::to_string(gpu.info()).map_err(|e| invalid(e.to_string()))?;
    STATE.with(|s| *s.borrow_mut() = Some(State { gpu, dtypes, loading: None, checkpoint: None, from_checkpoint: false, model: None, tiny_loading: None, feeding_tiny: false, tiny_pending: None, te_loading: None, lora_loading: None, uploads: Uploads::default() }));
    Ok(info)
}

/// The weight files to try in a diffusers component folder, in order: JSON
/// `[[file name, is a sharded index], …]`.
#[wasm_bindgen(js_name = weightCandidates)]
pub fn weight_candidates(component: String, variant: Option<String>) -> String {
    serde_json::to_string(&source::candidates(source::base_of(&component), variant.as_deref())).unwrap_or_default()
}

/// The shard file names listed by a sharded index (`*.safetensors.index.json`).
#[wasm_bindgen(js_name = shardsOfIndex)]
pub fn shards_of_index(file: String, text: String) -> Result<Vec<String>, JsValue> {
    source::shards_of_index(&file, &text).map_err(|e| js_err(e.into()))
}

/// The img2img input limits, for the worker to check an image before its pixels are copied:
/// `{"maxSide": …, "maxPixels": …}`.
#[wasm_bindgen(js_name = inputImageLimits)]
pub fn input_image_limits() -> String {
    format!(r#"{{"maxSide":{},"maxPixels":{}}}"#, crate::image::MAX_INPUT_SIDE, crate::image::MAX_INPUT_PIXELS)
}

/// Refuses pickle checkpoints by name (they can run code when loaded).
#[wasm_bindgen(js_name = refusePickle)]
pub fn refuse_pickle(file: String) -> Result<(), JsValue> {
    source::refuse_pickle(&file).map_err(|e| js_err(e.into()))
}

/// Start loading a model. The configs are the text of each component's `config.json`, or
/// `None` for all three: a single-file checkpoint, whose configs come from its header (SD 1.5,
/// SD 2.x, SDXL, a 9-channel inpainting UNet) when its file is fed. SDXL folders (a UNet with
/// `addition_embed_type: text_time`) also give `text_encoder_2/config.json` and, when the
/// folder has it, `model_index.json` (`force_zeros_for_empty_prompt`, `requires_aesthetics_score`).
#[wasm_bindgen(js_name = beginModel)]
pub fn begin_model(unet: Option<String>, vae: Option<String>, text_encoder: Option<String>, text_encoder_2: Option<String>, model_index: Option<String>) -> Result<(), JsValue> {
    let cfg = match (unet, vae, text_encoder) {
        (Some(u), Some(v), Some(t)) => Some(Configs::from_json_texts(&u, &v, &t, text_encoder_2.as_deref(), model_index.as_deref()).map_err(js_err)?),
        (None, None, None) => None,
        _ => return Err(invalid("give the config.json of all three components, or none (a single-file checkpoint)")),
    };
    with_state(|st| {
        st.model = None;
        st.lora_loading = None;
        st.loading = None;
        st.gpu.trim_pool();
        st.from_checkpoint = cfg.is_none();
        match cfg {
            Some(cfg) => {
                let loader = StableDiffusion::loader(&st.gpu, &cfg, st.dtypes, &cfg.components());
                st.loading = Some((cfg, loader));
                st.checkpoint = None;
            }
            None => st.checkpoint = Some(CheckpointStart::default()),
        }
        Ok(())
    })
}

/// Start a weight file: `component` is "unet" | "vae" | "text_encoder" | "text_encoder_2"
/// (SDXL), or "checkpoint" for an original single-file checkpoint.
#[wasm_bindgen(js_name = beginFile)]
pub fn begin_file(name: String, total: Option<f64>, component: String) -> Result<(), JsValue> {
    source::refuse_pickle(&name).map_err(|e| js_err(e.into()))?;
    with_state(|st| {
        st.uploads.weight_files += 1;
        if let Some(layout) = match component.as_str() {
            "taesd" => Some(Layout::Component("taesd".into())),
            "taesd_encoder" => Some(Layout::TaesdOriginal { decoder: false }),
            "taesd_decoder" => Some(Layout::TaesdOriginal { decoder: true }),
            _ => None,
        } {
            let (_, loader) = st.tiny_loading.as_mut().ok_or_else(|| invalid("beginTinyVae() first"))?;
            loader.begin(&name, total.map(|t| t as u64), layout);
            st.feeding_tiny = true;
            return Ok(());
        }
        st.feeding_tiny = false;
        if let Some(loader) = st.te_loading.as_mut() {
            if component != "text_encoder" && component != "text_encoder_2" {
                return Err(invalid("only text_encoder / text_encoder_2 files go into beginTextEncoder()"));
            }
            loader.begin(&name, total.map(|t| t as u64), Layout::Component(component));
            return Ok(());
        }
        if let Some(cs) = st.checkpoint.as_mut() {
            if component != "checkpoint" || cs.file.is_some() {
                return Err(invalid("a model begun without configs is one single-file checkpoint: beginFile(name, total, \"checkpoint\")"));
            }
            cs.file = Some((name, total.map(|t| t as u64)));
            return Ok(());
        }
        let (cfg, loader) = st.loading.as_mut().ok_or_else(|| invalid("beginModel() first"))?;
        let layout = match component.as_str() {
            "checkpoint" => cfg.single_file_layout(),
            c if cfg.components().contains(&c) => Layout::Component(c.to_string()),
            c => return Err(invalid(format!("unknown component {c:?}"))),
        };
        loader.begin(&name, total.map(|t| t as u64), layout);
        Ok(())
    })
}

impl State {
    /// The loader the current file goes to: the tiny VAE's, the text encoder's (streamed back
    /// after an eviction) or the model's.
    fn current_loader(&mut self) -> Result<&mut Loader, JsValue> {
        let loader = if self.feeding_tiny {
            self.tiny_loading.as_mut().map(|l| &mut l.1)
        } else if self.te_loading.is_some() {
            self.te_loading.as_mut()
        } else {
            self.loading.as_mut().map(|l| &mut l.1)
        };
        loader.ok_or_else(|| invalid("beginModel() first"))
    }
}

/// The next bytes of the current file (parsed and uploaded as tensors complete).
#[wasm_bindgen]
pub fn feed(chunk: &[u8]) -> Result<(), JsValue> {
    with_state(|st| {
        if st.feeding_checkpoint() {
            st.feed_checkpoint(chunk, false)?;
        } else {
            st.current_loader()?.feed(chunk).map_err(js_err)?;
        }
        st.uploads.weight_bytes += chunk.len() as u64;
        Ok(())
    })
}

/// The current file ended (checks that it was complete).
#[wasm_bindgen(js_name = endFile)]
pub fn end_file() -> Result<(), JsValue> {
    with_state(|st| {
        if st.feeding_checkpoint() {
            // A file that ended inside its header: the loader reports it.
            st.feed_checkpoint(&[], true)?;
        }
        st.current_loader()?.end().map_err(js_err)
    })
}

/// All files fed: check that every weight arrived, fuse, and get ready. `tokenizer` is
/// JSON `{vocab, merges, tokenizer_json, config, special_tokens_map}` (texts, each optional)
/// or null for the built-in CLIP tokenizer; `tokenizer_2` the same for SDXL's `tokenizer_2/`
/// (null: CLIP's BPE padded with "!", as stabilityai's). Returns the warnings as JSON.
#[wasm_bindgen(js_name = finishModel)]
pub fn finish_model(name: String, tokenizer: Option<String>, scheduler_config: Option<String>, evict_text_encoder: Option<bool>, tokenizer_2: Option<String>) -> Result<String, JsValue> {
    // A single-file SD 2.x checkpoint has neither tokenizer nor scheduler files: SD-2's
    // tokenizer and SD-2.1's scheduler, as the CLI does.
    let sd2_checkpoint = with_state(|st| Ok(st.from_checkpoint && st.loading.as_ref().is_some_and(|(c, _)| c.is_sd2())))?;
    let tok = match tokenizer_of("tokenizer", tokenizer)? {
        Some(t) => t,
        None if sd2_checkpoint => ClipTokenizer::sd2().map_err(js_err)?,
        None => ClipTokenizer::sd15().map_err(js_err)?,
    };
    // SDXL: without tokenizer_2 files the model's own rule applies (CLIP's BPE padded with "!").
    let tok2 = tokenizer_of("tokenizer_2", tokenizer_2)?;
    // A single-file SDXL checkpoint: SDXL base's scheduler (tokenizer: CLIP's, tokenizer_2: the
    // same BPE padded with "!"), as the CLI does.
    let xl_checkpoint = with_state(|st| Ok(st.from_checkpoint && st.loading.as_ref().is_some_and(|(c, _)| c.is_xl())))?;
    let scheduler_config = match scheduler_config {
        None if sd2_checkpoint => Some(crate::schedulers::SD21_SCHEDULER_CONFIG.to_string()),
        None if xl_checkpoint => Some(crate::schedulers::SDXL_SCHEDULER_CONFIG.to_string()),
        s => s,
    };
    with_state(|st| {
        let (cfg, loader) = st.loading.take().ok_or_else(|| invalid("beginModel() first"))?;
        let mut sd = StableDiffusion::from_loader(cfg, st.dtypes, loader).map_err(js_err)?;
        if sd.cfg.is_xl() {
            sd.tokenizer_2 = tok2;
        }
        if let Some((tiny, _)) = st.tiny_pending.take() {
            sd.tiny_vae = Some(tiny);
        }
        st.gpu.flush().map_err(js_err)?;
        st.gpu.reset_peak();
        let warnings = serde_json::to_string(&sd.warnings).unwrap_or_default();
        st.model = Some(Rc::new(Model { sd: RefCell::new(sd), tok, scheduler: scheduler_config, name, evict_text_encoder: evict_text_encoder.unwrap_or(false), text_cache: RefCell::new(None) }));
        Ok(warnings)
    })
}

/// A tokenizer from the worker's JSON `{vocab, merges, tokenizer_json, config,
/// special_tokens_map}` (texts, each optional; `what` names the folder in errors); `None`
/// without vocabulary files.
fn tokenizer_of(what: &str, json: Option<String>) -> Result<Option<ClipTokenizer>, JsValue> {
    #[derive(serde::Deserialize, Default)]
    struct Tok {
        vocab: Option<String>,
        merges: Option<String>,
        tokenizer_json: Option<String>,
        config: Option<String>,
        special_tokens_map: Option<String>,
    }
    let t: Tok = match json {
        Some(j) => serde_json::from_str(&j).map_err(|e| invalid(format!("{what}: {e}")))?,
        None => return Ok(None),
    };
    let config = crate::tokenizer::merged_tokenizer_config(t.config.as_deref(), t.special_tokens_map.as_deref()).map_err(js_err)?;
    match (t.tokenizer_json, t.vocab, t.merges) {
        (Some(j), _, _) => ClipTokenizer::from_tokenizer_json(&j, config.as_deref()).map(Some),
        (None, Some(v), Some(m)) => ClipTokenizer::from_vocab_merges(&v, &m, config.as_deref()).map(Some),
        _ => Ok(None),
    }
    .map_err(js_err)
}

/// Start loading a tiny autoencoder (TAESD): `config` is its diffusers `config.json`, or
/// null for madebyollin/taesd's (the original taesd_encoder/decoder files). Its files then
/// go through beginFile(name, total, "taesd" | "taesd_encoder" | "taesd_decoder"), feed, endFile.
#[wasm_bindgen(js_name = beginTinyVae)]
pub fn begin_tiny_vae(config: Option<String>) -> Result<(), JsValue> {
    let cfg = match config {
        Some(c) => TinyVaeConfig::from_json("config.json", &c).map_err(|e| js_err(e.into()))?,
        None => TinyVaeConfig::default(),
    };
    with_state(|st| {
        let loader = TinyVae::loader(&st.gpu, &cfg, st.dtypes.vae);
        st.tiny_loading = Some((cfg, loader));
        Ok(())
    })
}

/// The tiny VAE's files are in: check every weight and attach it to the model (for previews,
/// and `decoder: "tiny"`).
#[wasm_bindgen(js_name = finishTinyVae)]
pub fn finish_tiny_vae(name: String) -> Result<(), JsValue> {
    with_state(|st| {
        let (cfg, loader) = st.tiny_loading.take().ok_or_else(|| invalid("beginTinyVae() first"))?;
        st.feeding_tiny = false;
        let tiny = TinyVae::from_loader(cfg, st.dtypes.vae, loader).map_err(|e| invalid(format!("tiny VAE {name}: {e}")))?;
        match st.model.as_ref() {
            Some(m) => match m.sd.try_borrow_mut() {
                Ok(mut sd) => sd.tiny_vae = Some(tiny),
                Err(_) => return Err(invalid("a generation is running: load the tiny VAE when it has finished")),
            },
            None => st.tiny_pending = Some((tiny, name)),
        }
        st.gpu.flush().map_err(js_err)?;
        Ok(())
    })
}

/// What the loaded model is and the settings it expects when none are given (JSON): family
/// (sd15, sd2, sd-turbo, lcm), steps, guidanceScale, sampler, width, height,
/// negativePromptUsed, predictionType; and whether a tiny VAE is loaded.
#[wasm_bindgen(js_name = modelDefaults)]
pub fn model_defaults() -> Result<String, JsValue> {
    with_state(|st| {
        let m = st.model.as_ref().ok_or_else(|| invalid("no model is loaded"))?;
        let sd = m.sd.borrow();
        let d = pipeline::model_defaults(&sd, m.scheduler.as_deref(), &m.name);
        Ok(serde_json::json!({
            "family": d.family.name(), "steps": d.steps, "guidanceScale": d.guidance_scale, "sampler": d.sampler,
            "width": d.width, "height": d.height, "negativePromptUsed": d.negative_prompt_used, "predictionType": d.prediction_type,
            "tinyVae": sd.tiny_vae.is_some(), "samplers": crate::schedulers::SAMPLERS,
        })
        .to_string())
    })
}

#[derive(serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct GenParams {
    prompt: String,
    negative_prompt: Option<String>,
    steps: Option<f64>,
    guidance_scale: Option<f64>,
    seed: f64,
    width: Option<f64>,
    height: Option<f64>,
    sampler: Option<String>,
    strength: Option<f64>,
    batch: Option<f64>,
    batch_pos: Option<f64>,
    resize_mode: Option<String>,
    preview: Option<bool>,
    decoder: Option<String>,
    timestep_spacing: Option<String>,
    prediction_type: Option<String>,
    prompt_weighting: Option<bool>,
    paste_back: Option<bool>,
    /// LoRAs to merge for this generation: `[{name, scale}]` (loaded with beginLora … finishLora);
    /// the prompt's `<lora:name:scale>` tags add to / override these.
    loras: Option<Vec<LoraRequest>>,
    /// SDXL: the second text encoder's prompts and the micro-conditioning.
    prompt2: Option<String>,
    negative_prompt2: Option<String>,
    original_size: Option<SizeRequest>,
    target_size: Option<SizeRequest>,
    crops_coords_top_left: Option<CropRequest>,
}

/// `{ width, height }` of the generate options (SDXL's `originalSize` / `targetSize`).
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct SizeRequest {
    width: f64,
    height: f64,
}

/// `{ top, left }` of the generate options (SDXL's `cropsCoordsTopLeft`).
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct CropRequest {
    top: f64,
    left: f64,
}

/// (height, width) as diffusers orders `original_size` / `target_size`.
fn size_hw(v: Option<SizeRequest>, what: &str) -> Result<Option<(usize, usize)>, JsValue> {
    v.map(|s| {
        let h = count(Some(s.height), 0, &format!("{what}.height"))?;
        let w = count(Some(s.width), 0, &format!("{what}.width"))?;
        if h == 0 || w == 0 || h > 1 << 16 || w > 1 << 16 {
            return Err(invalid(format!("{what} must be 1 to 65536 pixels on a side (got {w}×{h})")));
        }
        Ok((h, w))
    })
    .transpose()
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct LoraRequest {
    name: String,
    #[serde(default = "one")]
    scale: f64,
}

fn one() -> f64 {
    1.0
}

/// The `loras` of the generate options as (name, scale).
fn requested_loras(g: &GenParams) -> Result<Vec<(String, f32)>, JsValue> {
    g.loras
        .iter()
        .flatten()
        .map(|l| {
            if !l.scale.is_finite() || l.scale.abs() > 1e6 {
                return Err(invalid(format!("loras: the scale of LoRA {:?} must be a finite number (got {})", l.name, l.scale)));
            }
            Ok((l.name.clone(), l.scale as f32))
        })
        .collect()
}

fn count(v: Option<f64>, default: usize, what: &str) -> Result<usize, JsValue> {
    match v {
        None => Ok(default),
        Some(x) if x.is_finite() && x >= 0.0 && x.fract() == 0.0 && x <= 1e9 => Ok(x as usize),
        Some(x) => Err(invalid(format!("{what} must be a whole number (got {x})"))),
    }
}

/// The pipeline's parameters for the API's generate options on `model`: what the options
/// leave out is the model's default (steps, guidance, sampler, size) or the pipeline's.
fn params_of(g: GenParams, model: &Model, init_image: Option<Rgb>, mask: Option<Rgb>) -> Result<Params, JsValue> {
    if !(g.seed.is_finite() && g.seed >= 0.0 && g.seed.fract() == 0.0 && g.seed <= 9_007_199_254_740_991.0) {
        return Err(invalid(format!("seed must be a whole number between 0 and 2^53 (got {})", g.seed)));
    }
    let d = Params::default();
    let sd = model.sd.borrow();
    let md = pipeline::model_defaults(&sd, model.scheduler.as_deref(), &model.name);
    let (dw, dh) = pipeline::default_size(&sd, init_image.as_ref());
    let decoder = match g.decoder.as_deref() {
        None => pipeline::Decoder::Vae,
        Some(s) => pipeline::Decoder::parse(s).ok_or_else(|| invalid(format!("decoder must be \"vae\" or \"tiny\" (got {s:?})")))?,
    };
    let timestep_spacing = match g.timestep_spacing.as_deref() {
        None => None,
        Some(s) => Some(crate::schedulers::Spacing::parse(s).ok_or_else(|| invalid(format!("timestepSpacing must be \"leading\", \"linspace\" or \"trailing\" (got {s:?})")))?),
    };
    let prediction_type = match g.prediction_type.as_deref() {
        None => None,
        Some(s) => Some(crate::schedulers::Prediction::parse(s).ok_or_else(|| invalid(format!("predictionType must be \"epsilon\" or \"v_prediction\" (got {s:?})")))?),
    };
    let resize_mode = match g.resize_mode.as_deref() {
        Some(m) => crate::image::ResizeMode::parse(m).map_err(js_err)?,
        None => crate::image::ResizeMode::default(),
    };
    Ok(Params {
        prompt: g.prompt,
        negative_prompt: g.negative_prompt,
        steps: count(g.steps, md.steps, "steps")?,
        guidance_scale: g.guidance_scale.unwrap_or(md.guidance_scale),
        seed: g.seed as u64,
        sampler: g.sampler.unwrap_or_else(|| md.sampler.to_string()),
        width: count(g.width, dw, "width")?,
        height: count(g.height, dh, "height")?,
        batch: count(g.batch, d.batch, "batch")?,
        batch_pos: g.batch_pos.map(|v| count(Some(v), 1, "batchPos")).transpose()?,
        init_image,
        strength: g.strength.unwrap_or(d.strength),
        mask,
        paste_back: g.paste_back.unwrap_or(d.paste_back),
        resize_mode,
        decoder,
        timestep_spacing,
        prediction_type,
        prompt_weighting: g.prompt_weighting.unwrap_or(d.prompt_weighting),
        prompt_2: g.prompt2,
        negative_prompt_2: g.negative_prompt2,
        original_size: size_hw(g.original_size, "originalSize")?,
        target_size: size_hw(g.target_size, "targetSize")?,
        crops_coords_top_left: g
            .crops_coords_top_left
            .map(|c| Ok::<_, JsValue>((count(Some(c.top), 0, "cropsCoordsTopLeft.top")?, count(Some(c.left), 0, "cropsCoordsTopLeft.left")?)))
            .transpose()?,
        ..d
    })
}

/// Generate. `params`: JSON of the API's generate options (seed already chosen);
/// `init_rgba` + size: the img2img image as 8-bit RGBA (any size: fitted to width × height
/// by `resizeMode`); `mask_rgba` + size: the inpainting mask as 8-bit RGBA (any size; white =
/// repaint; its grey level composited on black by alpha). `on_step(step, steps, preview)` is called after each step (preview:
/// `{width, height, rgba}` or null) and returns false to cancel. Resolves to
/// `{images: [{width, height, rgba, png, seed, parameters, batchPos}, …], warnings,
/// droppedTokens: {prompt, negativePrompt}}`. Nothing after the VAE can lose the images: a
/// PNG metadata problem becomes a warning.
#[wasm_bindgen]
pub async fn generate(
    params: String,
    init_rgba: Option<Vec<u8>>,
    init_width: u32,
    init_height: u32,
    mask_rgba: Option<Vec<u8>>,
    mask_width: u32,
    mask_height: u32,
    on_step: js_sys::Function,
) -> Result<js_sys::Object, JsValue> {
    let g: GenParams = serde_json::from_str(&params).map_err(|e| invalid(format!("bad generate options: {e}")))?;
    let requested = requested_loras(&g)?;
    let init_image = match init_rgba {
        Some(px) => {
            if let Some(why) = crate::image::input_size_problem(init_width as u64, init_height as u64) {
                return Err(invalid(why));
            }
            let (w, h) = (init_width as usize, init_height as usize);
            if Some(px.len()) != w.checked_mul(h).and_then(|n| n.checked_mul(4)) {
                return Err(invalid(format!("init image: {} bytes for {w}×{h} RGBA", px.len())));
            }
            let data = px.chunks_exact(4).flat_map(|p| [p[0], p[1], p[2]]).map(|v| v as f32 / 255.0).collect();
            Some(Rgb { width: w, height: h, data })
        }
        None => None,
    };
    let mask = match mask_rgba {
        Some(px) => {
            if let Some(why) = crate::image::input_size_problem(mask_width as u64, mask_height as u64) {
                return Err(invalid(why.replace("start image", "mask")));
            }
            Some(crate::inpaint::mask_from_rgba(&px, mask_width as usize, mask_height as usize).map_err(js_err)?)
        }
        None => None,
    };
    let (gpu, model) = with_state(|st| {
        let m = st.model.clone().ok_or_else(|| invalid("no model is loaded"))?;
        Ok((st.gpu.clone(), m))
    })?;
    let run = RunOptions { preview: g.preview.unwrap_or(false) };
    let p = params_of(g, &model, init_image, mask)?;
    // LoRAs: the requested ones and the prompt's tags (unknown tags are warnings, as in
    // A1111), merged on the GPU from the kept base weights (nothing is reloaded); the tags are
    // taken out of the prompt when it is encoded.
    let (active, lora_warnings) = crate::model::lora::active_set(&requested, &p.prompt, &model.sd.borrow().loras);
    {
        let mut sd = model.sd.try_borrow_mut().map_err(|_| invalid("the model is busy with another generation: wait for it to finish"))?;
        let r = sd.set_loras(&gpu, &active).map_err(js_err)?;
        if r.text_encoder_changed {
            // Text states made with the text encoder as it was are stale.
            model.text_cache.borrow_mut().take();
        }
        with_state(|st| {
            st.uploads.lora_merges += r.merges as u64;
            st.uploads.lora_tensors += r.tensors as u64;
            Ok(())
        })?;
    }
    let (used, te_key): (Vec<(String, f32, String)>, TeLoras) = {
        let sd = model.sd.borrow();
        let used = sd.loras.active().iter().map(|(n, s)| (n.clone(), *s, sd.loras.get(n).map(|l| l.hash.clone()).unwrap_or_default())).collect();
        (used, te_loras(&sd, sd.loras.active()))
    };
    let mut on = |pr: pipeline::Progress| -> bool {
        let preview = match pr.preview {
            Some(pv) => {
                let o = js_sys::Object::new();
                let _ = js_sys::Reflect::set(&o, &"width".into(), &(pv.width as u32).into());
                let _ = js_sys::Reflect::set(&o, &"height".into(), &(pv.height as u32).into());
                let _ = js_sys::Reflect::set(&o, &"rgba".into(), &js_sys::Uint8ClampedArray::from(&pv.rgba[..]).into());
                o.into()
            }
            None => JsValue::NULL,
        };
        match on_step.call3(&JsValue::NULL, &(pr.step as u32).into(), &(pr.steps as u32).into(), &preview) {
            Ok(v) => v.is_truthy(),
            Err(_) => false,
        }
    };
    let out = if model.evict_text_encoder {
        // The text states of these prompts: from the cache, or from the text encoder (put back
        // by the worker beforehand when it was freed), which is then freed again.
        let cached = model.text_cache.borrow_mut().take().filter(|(t, k)| t.is_for(&model.sd.borrow(), &p) && *k == te_key);
        let text = match cached {
            Some((t, _)) => t,
            None => {
                if !model.sd.borrow().has_text_encoder() {
                    return Err(invalid("the text encoder was freed after the last prompt: stream it back first (beginTextEncoder)"));
                }
                let t = pipeline::encode_text(&gpu, &model.sd.borrow(), &model.tok, &p).map_err(js_err)?;
                let mut sd = model.sd.try_borrow_mut().map_err(|_| invalid("the model is busy"))?;
                sd.evict_text_encoder(&gpu);
                t
            }
        };
        let sd = model.sd.borrow();
        let out = pipeline::generate_from_text(&gpu, &sd, &text, model.scheduler.as_deref(), &p, &run, &mut on).await;
        *model.text_cache.borrow_mut() = Some((text, te_key));
        gpu.trim_pool();
        out.map_err(js_err)?
    } else {
        pipeline::generate_with(&gpu, &model.sd.borrow(), &model.tok, model.scheduler.as_deref(), &p, &run, &mut on).await.map_err(js_err)?
    };
    let mut warnings = lora_warnings;
    warnings.extend(pipeline::dropped_token_warnings(&p, out.dropped_tokens));
    warnings.extend(out.warnings.iter().cloned());
    let arr = js_sys::Array::new();
    for (img, &pos) in out.images.iter().zip(&out.batch_positions) {
        let mut params_text = pipeline::a1111_parameters(&p, p.seed, &model.name, pos);
        pipeline::add_lora_parameters(&mut params_text, &p.prompt, &used);
        let png = encode_png(img, Some(&params_text)).map_err(js_err)?;
        if let Some(w) = png.warning {
            warnings.push(w);
        }
        let o = js_sys::Object::new();
        let set = |k: &str, v: JsValue| js_sys::Reflect::set(&o, &k.into(), &v).map(|_| ());
        set("width", (img.width as u32).into())?;
        set("height", (img.height as u32).into())?;
        set("rgba", js_sys::Uint8ClampedArray::from(&img.to_rgba8()[..]).into())?;
        set("png", js_sys::Uint8Array::from(&png.bytes[..]).into())?;
        set("seed", (p.seed as f64).into())?;
        set("parameters", params_text.into())?;
        set("batchPos", ((pos + 1) as u32).into())?;
        arr.push(&o);
    }
    let result = js_sys::Object::new();
    let set = |k: &str, v: JsValue| js_sys::Reflect::set(&result, &k.into(), &v).map(|_| ());
    set("images", arr.into())?;
    let w = js_sys::Array::new();
    for m in &warnings {
        w.push(&JsValue::from_str(m));
    }
    set("warnings", w.into())?;
    let dropped = js_sys::Object::new();
    js_sys::Reflect::set(&dropped, &"prompt".into(), &(out.dropped_tokens.0 as u32).into())?;
    js_sys::Reflect::set(&dropped, &"negativePrompt".into(), &(out.dropped_tokens.1 as u32).into())?;
    set("droppedTokens", dropped.into())?;
    set("vaeUpcast", out.vae_upcast.into())?;
    set("decoder", out.decoder.name().into())?;
    let merged = js_sys::Array::new();
    for (name, scale, _) in &used {
        let o = js_sys::Object::new();
        js_sys::Reflect::set(&o, &"name".into(), &JsValue::from_str(name))?;
        js_sys::Reflect::set(&o, &"scale".into(), &(*scale as f64).into())?;
        merged.push(&o);
    }
    set("loras", merged.into())?;
    Ok(result)
}

/// Whether generating with these options needs the text encoder streamed back first (it was
/// freed after the last encoding and the prompts differ from the cached ones). `params`: the
/// generate options' JSON.
#[wasm_bindgen(js_name = textEncoderNeeded)]
pub fn text_encoder_needed(params: String) -> Result<bool, JsValue> {
    let g: GenParams = serde_json::from_str(&params).map_err(|e| invalid(format!("bad generate options: {e}")))?;
    let requested = requested_loras(&g)?;
    with_state(|st| {
        let m = st.model.as_ref().ok_or_else(|| invalid("no model is loaded"))?;
        let sd = m.sd.borrow();
        if !m.evict_text_encoder || sd.has_text_encoder() {
            return Ok(false);
        }
        drop(sd);
        let p = params_of(g, m, None, None)?;
        let sd = m.sd.borrow();
        // The text-encoder LoRAs this generation will merge (those of a changed set need the
        // text encoder back to be merged into).
        let (active, _) = crate::model::lora::active_set(&requested, &p.prompt, &sd.loras);
        let key = te_loras(&sd, &effective_loras(&active));
        Ok(!m.text_cache.borrow().as_ref().is_some_and(|(t, k)| t.is_for(&sd, &p) && *k == key))
    })
}

/// Start streaming the text encoder's weights back (its files go through beginFile(name,
/// total, "text_encoder"), feed, endFile; then finishTextEncoder()).
#[wasm_bindgen(js_name = beginTextEncoder)]
pub fn begin_text_encoder() -> Result<(), JsValue> {
    with_state(|st| {
        let m = st.model.as_ref().ok_or_else(|| invalid("no model is loaded"))?;
        let sd = m.sd.borrow();
        let components: &[&str] = if sd.cfg.clip2.is_some() { &["text_encoder", "text_encoder_2"] } else { &["text_encoder"] };
        st.te_loading = Some(StableDiffusion::loader(&st.gpu, &sd.cfg, sd.dtypes, components));
        Ok(())
    })
}

#[wasm_bindgen(js_name = finishTextEncoder)]
pub fn finish_text_encoder() -> Result<(), JsValue> {
    with_state(|st| {
        let loader = st.te_loading.take().ok_or_else(|| invalid("beginTextEncoder() first"))?;
        let m = st.model.as_ref().ok_or_else(|| invalid("no model is loaded"))?;
        let mut sd = m.sd.try_borrow_mut().map_err(|_| invalid("a generation is running"))?;
        sd.restore_text_encoder(&st.gpu, loader).map_err(js_err)?;
        st.gpu.flush().map_err(js_err)
    })
}

/// GPU memory figures (JSON): live and peak bytes since the model was ready, weights, LoRAs
/// (their factors and the base copies of the weights they change), and what was written to
/// the GPU as weights since init() (weight and LoRA file bytes streamed, merges run).
#[wasm_bindgen]
pub fn stats() -> Result<String, JsValue> {
    with_state(|st| {
        let s = st.gpu.pool_stats();
        let (weights, lora, lora_base, loaded, active) = match st.model.as_ref() {
            Some(m) => {
                let sd = m.sd.borrow();
                (sd.weights.bytes(), sd.loras.bytes(), sd.loras.base_bytes(), sd.loras.loaded().len(), sd.loras.active().len())
            }
            None => (0, 0, 0, 0, 0),
        };
        let u = &st.uploads;
        Ok(serde_json::json!({
            "gpuLiveBytes": s.live_bytes, "gpuPeakBytes": s.peak_bytes, "gpuTotalBytes": s.total_bytes, "weightsBytes": weights,
            "loraBytes": lora, "loraBaseBytes": lora_base, "lorasLoaded": loaded, "lorasActive": active,
            "weightUploadBytes": u.weight_bytes, "weightUploadFiles": u.weight_files,
            "loraUploadBytes": u.lora_bytes, "loraUploadFiles": u.lora_files,
            "loraMerges": u.lora_merges, "loraMergedTensors": u.lora_tensors,
        })
        .to_string())
    })
}

// ---------------------------------------------------------------- LoRA

fn model_of(st: &State) -> Result<Rc<Model>, JsValue> {
    st.model.clone().ok_or_else(|| invalid("no model is loaded: load a model before its LoRAs"))
}

fn loaded_names(sd: &StableDiffusion) -> String {
    let names: Vec<&str> = sd.loras.loaded().iter().map(|l| l.name.as_str()).collect();
    if names.is_empty() { "none".into() } else { names.join(", ") }
}

/// Start a LoRA file (kohya / A1111 or diffusers / PEFT safetensors) for the loaded model:
/// `name` is what `loras: [{name}]` and the prompt's `<lora:name:scale>` call it, `file` its
/// file name (messages), `total` its size when known. Its bytes then go through feedLora, then
/// finishLora. A LoRA being loaded before is dropped.
#[wasm_bindgen(js_name = beginLora)]
pub fn begin_lora(name: String, file: String, total: Option<f64>) -> Result<(), JsValue> {
    if name.trim().is_empty() {
        return Err(invalid("a LoRA needs a name (the file name without .safetensors by default)"));
    }
    if name.contains(':') || name.contains('>') || name.contains('<') {
        return Err(invalid(format!("LoRA name {name:?}: a name cannot contain ':', '<' or '>' (a prompt's <lora:name:scale> tag could not name it)")));
    }
    source::refuse_pickle(&file).map_err(|e| js_err(e.into()))?;
    with_state(|st| {
        st.lora_loading = None;
        st.gpu.trim_pool();
        let m = model_of(st)?;
        let loader = m.sd.borrow().lora_loader(&st.gpu, &name, &file, total.map(|t| t as u64));
        st.lora_loading = Some(loader);
        Ok(())
    })
}

/// The next bytes of the LoRA file (parsed, its factors uploaded as they complete).
#[wasm_bindgen(js_name = feedLora)]
pub fn feed_lora(chunk: &[u8]) -> Result<(), JsValue> {
    with_state(|st| {
        let loader = st.lora_loading.as_mut().ok_or_else(|| invalid("beginLora() first"))?;
        if let Err(e) = loader.feed(chunk) {
            // A broken file: its factors go now.
            st.lora_loading = None;
            st.gpu.trim_pool();
            return Err(js_err(e));
        }
        st.uploads.lora_bytes += chunk.len() as u64;
        Ok(())
    })
}

/// The LoRA file ended: check it and add it to the model (not merged until a generation asks
/// for it). Returns its summary (JSON: name, file, format, hash, modules {unet, textEncoder},
/// rank, alpha, bytes, warnings). A LoRA of the same name is replaced (deactivated first).
#[wasm_bindgen(js_name = finishLora)]
pub fn finish_lora() -> Result<String, JsValue> {
    with_state(|st| {
        let loader = st.lora_loading.take().ok_or_else(|| invalid("beginLora() first"))?;
        let m = model_of(st)?;
        let lora = match loader.finish() {
            Ok(l) => l,
            Err(e) => {
                st.gpu.trim_pool();
                return Err(js_err(e));
            }
        };
        let info = lora.info().to_string();
        let Ok(mut sd) = m.sd.try_borrow_mut() else {
            drop(lora);
            st.gpu.trim_pool();
            return Err(invalid("a generation is running: load the LoRA when it has finished"));
        };
        if sd.loras.active().iter().any(|(n, _)| n == &lora.name) {
            deactivate(st, &m, &mut sd, &lora.name)?;
        }
        sd.loras.add(lora).map_err(js_err)?;
        st.uploads.lora_files += 1;
        st.gpu.flush().map_err(js_err)?;
        Ok(info)
    })
}

/// Stop merging LoRA `name` (its weights get their base back).
fn deactivate(st: &mut State, m: &Model, sd: &mut StableDiffusion, name: &str) -> Result<(), JsValue> {
    let rest: Vec<(String, f32)> = sd.loras.active().iter().filter(|(n, _)| n != name).cloned().collect();
    let r = sd.set_loras(&st.gpu, &rest).map_err(js_err)?;
    if r.text_encoder_changed {
        m.text_cache.borrow_mut().take();
    }
    st.uploads.lora_merges += r.merges as u64;
    st.uploads.lora_tensors += r.tensors as u64;
    Ok(())
}

/// Drop a LoRA being loaded (a failed or cancelled download): its factors are freed.
#[wasm_bindgen(js_name = abortLora)]
pub fn abort_lora() {
    STATE.with(|s| {
        if let Some(st) = s.borrow_mut().as_mut() {
            if st.lora_loading.take().is_some() {
                st.gpu.trim_pool();
            }
        }
    });
}

/// Remove a loaded LoRA: unmerged first when it is active (its weights get their base back),
/// then its factors and base copies are freed.
#[wasm_bindgen(js_name = removeLora)]
pub fn remove_lora(name: String) -> Result<(), JsValue> {
    with_state(|st| {
        let m = model_of(st)?;
        let mut sd = m.sd.try_borrow_mut().map_err(|_| invalid("a generation is running: remove the LoRA when it has finished"))?;
        if sd.loras.get(&name).is_none() {
            return Err(invalid(format!("LoRA {name:?} is not loaded (loaded: {})", loaded_names(&sd))));
        }
        if sd.loras.active().iter().any(|(n, _)| n == &name) {
            deactivate(st, &m, &mut sd, &name)?;
        }
        sd.loras.remove(&name).map_err(js_err)?;
        st.gpu.trim_pool();
        Ok(())
    })
}

/// The loaded LoRAs (JSON): `[{...finishLora's summary, active: scale merged now or 0}]`.
#[wasm_bindgen]
pub fn loras() -> Result<String, JsValue> {
    with_state(|st| {
        let m = model_of(st)?;
        let sd = m.sd.borrow();
        let list: Vec<serde_json::Value> = sd
            .loras
            .loaded()
            .iter()
            .map(|l| {
                let mut v = l.info();
                let scale = sd.loras.active().iter().find(|(n, _)| n == &l.name).map_or(0.0, |(_, s)| *s);
                v["active"] = serde_json::json!(scale);
                v
            })
            .collect();
        Ok(serde_json::Value::Array(list).to_string())
    })
}

/// Free the model's GPU memory.
#[wasm_bindgen]
pub fn unload() {
    STATE.with(|s| {
        if let Some(st) = s.borrow_mut().as_mut() {
            st.model = None;
            st.loading = None;
            st.checkpoint = None;
            st.tiny_loading = None;
            st.tiny_pending = None;
            st.te_loading = None;
            st.lora_loading = None;
            st.gpu.trim_pool();
        }
    });
}

/// Destroy the GPU device (test hook for device-loss recovery).
#[wasm_bindgen(js_name = loseDevice)]
pub fn lose_device() {
    STATE.with(|s| {
        if let Some(st) = s.borrow().as_ref() {
            st.gpu.destroy();
        }
    });
}
