//! The three networks of Stable Diffusion 1.x, composed of ops, with diffusers' names.
pub mod blocks;
pub mod clip;
pub mod config;
pub mod lora;
pub mod nn;
pub mod taesd;
pub mod unet;
pub mod vae;

use clip::ClipTextModel;
use config::{ClipConfig, UnetConfig, VaeConfig, XlPipelineConfig};
use nn::{Ctx, Vb};
use unet::Unet;
use vae::Vae;

use crate::gpu::{DType, Gpu};
use crate::weights::keymap::{UnetLayout, VaeLayout};
use crate::weights::{Layout, Loader, Spec, Weights};

/// Every weight component a model may have. `text_encoder_2` (SDXL's second text encoder)
/// exists only when [`Configs::clip2`] is set: [`Configs::components`] lists a model's own.
pub const COMPONENTS: [&str; 4] = ["text_encoder", "unet", "vae", "text_encoder_2"];

/// GPU storage type of each component's weights and activations (A1111's `--no-half-vae`
/// is a VAE in f32 beside an f16 UNet). A plain [`DType`] converts into "all the same".
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Dtypes {
    pub text_encoder: DType,
    pub unet: DType,
    pub vae: DType,
}

impl Dtypes {
    pub fn all(d: DType) -> Self {
        Dtypes { text_encoder: d, unet: d, vae: d }
    }
    /// The storage of `component` (or of a weight name `component/…`); SDXL's
    /// `text_encoder_2` is stored as `text_encoder`.
    pub fn of(&self, component: &str) -> DType {
        match component.split('/').next().unwrap_or("") {
            "text_encoder" | "text_encoder_2" => self.text_encoder,
            "vae" => self.vae,
            _ => self.unet,
        }
    }
    /// `f16`, or `text encoder f16, UNet f16, VAE f32` when they differ.
    pub fn describe(&self) -> String {
        if self.text_encoder == self.unet && self.unet == self.vae {
            self.unet.name().to_string()
        } else {
            format!("text encoder {}, UNet {}, VAE {}", self.text_encoder.name(), self.unet.name(), self.vae.name())
        }
    }
}

impl From<DType> for Dtypes {
    fn from(d: DType) -> Self {
        Dtypes::all(d)
    }
}

#[derive(Clone, Debug, Default)]
pub struct Configs {
    pub unet: UnetConfig,
    pub vae: VaeConfig,
    pub clip: ClipConfig,
    /// SDXL's second text encoder (CLIPTextModelWithProjection, `text_encoder_2/`).
    pub clip2: Option<ClipConfig>,
    /// SDXL's pipeline switches (`model_index.json`); Some on every XL model.
    pub xl: Option<XlPipelineConfig>,
}

impl Configs {
    /// Configs from the texts of a diffusers folder's files: `unet/`, `vae/`, `text_encoder/`
    /// config.json, `text_encoder_2/config.json` and `model_index.json` when the folder has
    /// them. An XL UNet needs `text_encoder_2`; its pipeline switches come from
    /// `model_index.json` (diffusers' defaults without it).
    pub fn from_json_texts(unet: &str, vae: &str, text_encoder: &str, text_encoder_2: Option<&str>, model_index: Option<&str>) -> crate::Result<Configs> {
        Self::from_json_texts_named(
            [("unet/config.json", unet), ("vae/config.json", vae), ("text_encoder/config.json", text_encoder)],
            text_encoder_2.map(|t| ("text_encoder_2/config.json".to_string(), t)),
            model_index,
        )
    }

    /// [`Configs::from_json_texts`] with the files' names for errors.
    fn from_json_texts_named(files: [(&str, &str); 3], text_encoder_2: Option<(String, &str)>, model_index: Option<&str>) -> crate::Result<Configs> {
        let [(uf, u), (vf, v), (tf, t)] = files;
        let unet = UnetConfig::from_json(uf, u)?;
        let vae = VaeConfig::from_json(vf, v)?;
        let clip = ClipConfig::from_json(tf, t)?;
        let clip2 = text_encoder_2.map(|(f, t)| ClipConfig::from_json(&f, t)).transpose()?;
        let xl = if unet.is_xl() {
            if clip2.is_none() {
                return Err(crate::weights::WeightError::Config {
                    file: "text_encoder_2/config.json".into(),
                    detail: "an SDXL UNet (addition_embed_type text_time) needs the second text encoder, text_encoder_2/".into(),
                }
                .into());
            }
            Some(match model_index {
                Some(t) => XlPipelineConfig::from_json("model_index.json", t)?,
                None => XlPipelineConfig::default(),
            })
        } else {
            None
        };
        Ok(Configs { unet, vae, clip, clip2, xl })
    }

    /// An SDXL model: its UNet has `addition_embed_type: text_time`.
    pub fn is_xl(&self) -> bool {
        self.unet.is_xl()
    }

    /// The weight components of this model (a subset of [`COMPONENTS`]).
    pub fn components(&self) -> Vec<&'static str> {
        COMPONENTS.iter().copied().filter(|c| *c != "text_encoder_2" || self.clip2.is_some()).collect()
    }

    /// stabilityai/stable-diffusion-xl-base-1.0's configs (every key that sets a shape, as in
    /// its `unet/`, `vae/`, `text_encoder/`, `text_encoder_2/` config.json): UNet 320/640/1280
    /// with no attention in the first level, transformer depth [1, 2, 10], heads [5, 10, 20]
    /// (head width 64), linear projections, cross-attention 2048 (768 + 1280), text_time
    /// conditioning (time ids 6 × 256 + pooled 1280 = 2816), 1024² (`sample_size` 128); CLIP
    /// ViT-L (12 layers, quick_gelu) and OpenCLIP bigG (1280 wide, 32 layers, 20 heads, gelu,
    /// projection 1280); VAE as SD's with scaling 0.13025 and `force_upcast`.
    pub fn sdxl() -> Configs {
        use config::PerBlock;
        let mut c = Configs::default();
        let u = &mut c.unet;
        u.block_out_channels = vec![320, 640, 1280];
        u.down_block_types = ["DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"].map(String::from).to_vec();
        u.up_block_types = ["CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"].map(String::from).to_vec();
        u.attention_head_dim = PerBlock::Each(vec![5, 10, 20]);
        u.transformer_layers_per_block = PerBlock::Each(vec![1, 2, 10]);
        u.cross_attention_dim = 2048;
        u.use_linear_projection = true;
        u.addition_embed_type = Some("text_time".into());
        u.addition_time_embed_dim = Some(256);
        u.projection_class_embeddings_input_dim = Some(2816);
        u.sample_size = 128;
        c.vae.scaling_factor = 0.13025;
        c.vae.force_upcast = true;
        c.clip.pad_token_id = 1;
        c.clip.bos_token_id = 0;
        c.clip.eos_token_id = 2;
        c.clip.projection_dim = Some(768);
        c.clip2 = Some(ClipConfig {
            hidden_size: 1280,
            intermediate_size: 5120,
            num_hidden_layers: 32,
            num_attention_heads: 20,
            hidden_act: "gelu".into(),
            projection_dim: Some(1280),
            ..c.clip.clone()
        });
        c.xl = Some(XlPipelineConfig::default());
        c
    }

    /// stabilityai/sdxl-turbo: SDXL's shapes at 512² (`sample_size` 64).
    pub fn sdxl_turbo() -> Configs {
        let mut c = Configs::sdxl();
        c.unet.sample_size = 64;
        c
    }

    /// stabilityai/stable-diffusion-2-1's configs (the fields that set shapes): OpenCLIP
    /// ViT-H text encoder as CLIPTextModel (1024 wide, 23 layers, gelu), UNet with linear
    /// projections, head dim 64 (`attention_head_dim` [5, 10, 20, 20]), cross-attention 1024,
    /// `upcast_attention`, 768² (`sample_size` 96).
    pub fn sd21() -> Configs {
        let mut c = Configs::default();
        c.unet.attention_head_dim = config::PerBlock::Each(vec![5, 10, 20, 20]);
        c.unet.cross_attention_dim = 1024;
        c.unet.use_linear_projection = true;
        c.unet.upcast_attention = Some(true);
        c.unet.sample_size = 96;
        c.clip.hidden_size = 1024;
        c.clip.intermediate_size = 4096;
        c.clip.num_attention_heads = 16;
        c.clip.num_hidden_layers = 23;
        c.clip.hidden_act = "gelu".into();
        c
    }

    /// SD 2.x: the text encoder is OpenCLIP's (transformers' `hidden_act: gelu`; CLIP ViT-L,
    /// SD 1.x's, has `quick_gelu`).
    pub fn is_sd2(&self) -> bool {
        !self.is_xl() && self.clip.hidden_act == "gelu"
    }

    /// Layout of an original single-file checkpoint with these configs.
    pub fn single_file_layout(&self) -> Layout {
        Layout::SingleFile { unet: self.unet_layout(), vae: VaeLayout { levels: self.vae.block_out_channels.len() } }
    }

    /// The UNet's block structure as the original SD names number it.
    pub fn unet_layout(&self) -> UnetLayout {
        UnetLayout {
            layers_per_block: self.unet.layers_per_block,
            down_attn: self.unet.down_block_types.iter().map(|t| t.contains("CrossAttn")).collect(),
            up_attn: self.unet.up_block_types.iter().map(|t| t.contains("CrossAttn")).collect(),
        }
    }
}

/// The networks (structure only) plus their weights on the GPU.
pub struct StableDiffusion {
    pub cfg: Configs,
    pub clip: ClipTextModel,
    /// SDXL's second text encoder (`text_encoder_2`, with its text projection).
    pub clip2: Option<ClipTextModel>,
    /// SDXL's second tokenizer (`tokenizer_2/`), set by whoever loads the model; None on an XL
    /// model means [`crate::tokenizer::ClipTokenizer::sd2`] (the same BPE, pad `!`).
    pub tokenizer_2: Option<crate::tokenizer::ClipTokenizer>,
    pub unet: Unet,
    pub vae: Vae,
    pub weights: Weights,
    pub dtypes: Dtypes,
    /// Non-fatal notes from loading (unexpected tensors).
    pub warnings: Vec<String>,
    /// The tiny autoencoder (TAESD) for previews and fast decode/encode, when loaded.
    pub tiny_vae: Option<taesd::TinyVae>,
    /// LoRAs loaded for this model and merged into its weights ([`lora`]).
    pub loras: lora::LoraState,
}

/// Build the networks and list every weight they need (with `text_encoder_2`'s when the
/// configs have it: [`build_clip2`] builds that network).
pub fn build(cfg: &Configs) -> (ClipTextModel, Unet, Vae, Vec<Spec>) {
    let vc = Vb::root("text_encoder");
    let clip = ClipTextModel::new(&vc, &cfg.clip);
    let vu = Vb::root("unet");
    let unet = Unet::new(&vu, &cfg.unet);
    let vv = Vb::root("vae");
    let vae = Vae::new(&vv, &cfg.vae);
    let mut specs = vc.specs();
    specs.extend(vu.specs());
    specs.extend(vv.specs());
    if let Some(c2) = &cfg.clip2 {
        let v2 = Vb::root("text_encoder_2");
        drop(ClipTextModel::with_projection(&v2, c2));
        specs.extend(v2.specs());
    }
    (clip, unet, vae, specs)
}

/// SDXL's second text encoder (CLIPTextModelWithProjection) when the configs have it.
pub fn build_clip2(cfg: &Configs) -> Option<ClipTextModel> {
    cfg.clip2.as_ref().map(|c2| ClipTextModel::with_projection(&Vb::root("text_encoder_2"), c2))
}

/// The weight fusions of the networks (q/k/v projections concatenated after loading).
pub fn build_fusions(cfg: &Configs) -> Vec<nn::Fusion> {
    let mut out = Vec::new();
    for (comp, f) in [("text_encoder", 0), ("unet", 1), ("vae", 2), ("text_encoder_2", 3)] {
        let vb = Vb::root(comp);
        match f {
            0 => drop(ClipTextModel::new(&vb, &cfg.clip)),
            1 => drop(Unet::new(&vb, &cfg.unet)),
            2 => drop(Vae::new(&vb, &cfg.vae)),
            _ => match &cfg.clip2 {
                Some(c2) => drop(ClipTextModel::with_projection(&vb, c2)),
                None => continue,
            },
        }
        out.extend(vb.fusions());
    }
    out
}

/// A weight of a text encoder (`text_encoder/…`, SDXL's `text_encoder_2/…`).
fn is_text_encoder_weight(name: &str) -> bool {
    name.starts_with("text_encoder/") || name.starts_with("text_encoder_2/")
}

impl StableDiffusion {
    /// Networks for `cfg` over loaded (or placeholder) weights; applies the weight fusions.
    pub fn new(gpu: &Gpu, cfg: Configs, dtypes: impl Into<Dtypes>, mut weights: Weights, warnings: Vec<String>) -> crate::Result<StableDiffusion> {
        nn::apply_fusions(gpu, &mut weights, &build_fusions(&cfg))?;
        let (clip, unet, vae, _) = build(&cfg);
        let clip2 = build_clip2(&cfg);
        Ok(StableDiffusion { cfg, clip, clip2, tokenizer_2: None, unet, vae, weights, dtypes: dtypes.into(), warnings, tiny_vae: None, loras: lora::LoraState::default() })
    }

    /// A loader for the weights of `components` (subset of [`COMPONENTS`]), each stored as
    /// `dtypes` says for its component.
    pub fn loader(gpu: &Gpu, cfg: &Configs, dtypes: impl Into<Dtypes>, components: &[&str]) -> Loader {
        let dtypes = dtypes.into();
        let (_, _, _, specs) = build(cfg);
        let specs = specs.into_iter().filter(|s| components.iter().any(|c| s.name.starts_with(&format!("{c}/")))).collect();
        let mut loader = Loader::with_dtypes(gpu, specs, |name| dtypes.of(name));
        loader.accept_fused(&build_fusions(cfg));
        loader
    }

    /// Assemble from a finished loader.
    pub fn from_loader(cfg: Configs, dtypes: impl Into<Dtypes>, loader: Loader) -> crate::Result<StableDiffusion> {
        let gpu = loader.gpu().clone();
        let (weights, warnings) = loader.finish()?;
        Self::new(&gpu, cfg, dtypes, weights, warnings)
    }

    pub fn ctx<'a>(&'a self, gpu: &'a Gpu) -> Ctx<'a> {
        Ctx { gpu, w: &self.weights }
    }

    /// Free the text encoders' weights (after [`crate::pipeline::encode_text`]; SDXL: both);
    /// returns the bytes freed. Load them again ([`StableDiffusion::loader`] with
    /// `["text_encoder"]` (+ `"text_encoder_2"`) and
    /// [`StableDiffusion::restore_text_encoder`]) before encoding another prompt.
    pub fn evict_text_encoder(&mut self, gpu: &Gpu) -> u64 {
        let names: Vec<String> = self.weights.iter().filter(|(n, _)| is_text_encoder_weight(n)).map(|(n, _)| n.clone()).collect();
        let mut freed = 0;
        for n in names {
            if let Some(t) = self.weights.remove(&n) {
                freed += t.bytes();
            }
        }
        // Merged LoRAs' base copies of the text encoder go too (merged again on restore).
        freed += self.loras.base_bytes();
        self.loras.forget_component("text_encoder");
        self.loras.forget_component("text_encoder_2");
        freed -= self.loras.base_bytes();
        gpu.trim_pool();
        freed
    }

    /// Whether the text encoder's weights are loaded.
    pub fn has_text_encoder(&self) -> bool {
        self.weights.iter().any(|(n, _)| n.starts_with("text_encoder/"))
    }

    /// Put back text-encoder weights from a finished loader of `["text_encoder"]` (with the
    /// q/k/v fusions applied as at load time).
    pub fn restore_text_encoder(&mut self, gpu: &Gpu, loader: Loader) -> crate::Result<()> {
        let (mut w, _) = loader.finish()?;
        let fusions: Vec<nn::Fusion> = build_fusions(&self.cfg).into_iter().filter(|f| is_text_encoder_weight(&f.name)).collect();
        nn::apply_fusions(gpu, &mut w, &fusions)?;
        for (n, t) in w.iter() {
            self.weights.insert(n.clone(), t.clone());
        }
        // Fresh base weights: merge the active LoRAs into them again.
        self.loras.forget_component("text_encoder");
        self.loras.forget_component("text_encoder_2");
        self.apply_loras(gpu)?;
        Ok(())
    }
}

#[cfg(not(target_arch = "wasm32"))]
mod native {
    use std::path::{Path, PathBuf};

    use super::*;
    use crate::weights::source::{base_of, component_files, read_text, stream_file};
    use crate::weights::WeightError;

    /// Where each component's files are.
    pub enum Source {
        /// A diffusers folder (`model_index.json`, `unet/`, `vae/`, `text_encoder/`).
        Diffusers { dir: PathBuf, variant: Option<String> },
        /// An original single-file checkpoint; without configs SD-1.5's are assumed
        /// and every shape in the file is checked against them.
        SingleFile(PathBuf, Option<Configs>),
    }


    /// Whether an original single-file checkpoint is SD 2.x (see [`super::checkpoint_configs`]).
    /// Reads the safetensors header only.
    pub fn single_file_is_sd2(path: &Path) -> crate::Result<bool> {
        Ok(single_file_header(path)?.as_deref().is_some_and(super::checkpoint_is_sd2))
    }

    /// The safetensors header of a single file (None when its length field is implausible:
    /// the streaming parser reports that file properly later).
    fn single_file_header(path: &Path) -> crate::Result<Option<String>> {
        use std::io::Read;
        let io = |e: std::io::Error| WeightError::Io { file: path.display().to_string(), detail: e.to_string() };
        let mut f = std::fs::File::open(path).map_err(io)?;
        let mut n = [0u8; 8];
        f.read_exact(&mut n).map_err(io)?;
        let len = f.metadata().map_err(io)?.len();
        let Some(n) = super::checkpoint_header_len(n, Some(len)) else { return Ok(None) };
        let mut h = vec![0u8; n];
        f.read_exact(&mut h).map_err(io)?;
        Ok(Some(String::from_utf8_lossy(&h).into_owned()))
    }

    /// The configs of an original single-file checkpoint (see [`super::checkpoint_configs`]).
    pub fn single_file_configs(path: &Path) -> crate::Result<Configs> {
        Ok(super::checkpoint_configs(single_file_header(path)?.as_deref()))
    }

    /// Configs of a diffusers folder (each component's config.json; SDXL: also
    /// `text_encoder_2/config.json` and `model_index.json`'s switches).
    pub fn read_configs(dir: &Path) -> crate::Result<Configs> {
        let f = |c: &str| dir.join(c).join("config.json");
        let text = |p: &Path| -> crate::Result<Option<String>> { if p.is_file() { Ok(Some(read_text(p)?)) } else { Ok(None) } };
        let te2 = text(&f("text_encoder_2"))?;
        let index = text(&dir.join("model_index.json"))?;
        let file = |c: &str| f(c).display().to_string();
        Configs::from_json_texts_named(
            [(&file("unet"), &read_text(&f("unet"))?), (&file("vae"), &read_text(&f("vae"))?), (&file("text_encoder"), &read_text(&f("text_encoder"))?)],
            te2.as_deref().map(|t| (file("text_encoder_2"), t)),
            index.as_deref(),
        )
    }

    /// The weight files of one component folder.
    pub fn files_of_component(dir: &Path, component: &str, variant: Option<&str>) -> crate::Result<Vec<PathBuf>> {
        let exists = |p: &str| Path::new(p).is_file();
        let read = |p: &str| read_text(Path::new(p));
        let files = component_files(&dir.display().to_string(), base_of(component), variant, &exists, &read)?;
        Ok(files.into_iter().map(PathBuf::from).collect())
    }

    impl StableDiffusion {
        /// Load a model from disk: a diffusers folder or a single `.safetensors` file.
        /// `variant` ("fp16") picks `*.fp16.safetensors` where the folder has them.
        pub fn load(gpu: &Gpu, path: &Path, dtypes: impl Into<Dtypes>, variant: Option<&str>) -> crate::Result<StableDiffusion> {
            crate::weights::source::refuse_pickle(&path.display().to_string())?;
            let src = if path.is_dir() {
                Source::Diffusers { dir: path.to_path_buf(), variant: variant.map(String::from) }
            } else if path.is_file() {
                Source::SingleFile(path.to_path_buf(), None)
            } else {
                return Err(WeightError::Io { file: path.display().to_string(), detail: "no such file or folder".into() }.into());
            };
            Self::load_components(gpu, &src, dtypes, &COMPONENTS, &[])
        }

        /// Load some components; `overrides` gives other folders for components
        /// (e.g. a sharded UNet elsewhere).
        pub fn load_components(gpu: &Gpu, src: &Source, dtypes: impl Into<Dtypes>, components: &[&str], overrides: &[(&str, &Path)]) -> crate::Result<StableDiffusion> {
            let dtype: Dtypes = dtypes.into();
            match src {
                Source::Diffusers { dir, variant } => {
                    let cfg = read_configs(dir)?;
                    let mut loader = Self::loader(gpu, &cfg, dtype, components);
                    let own = cfg.components();
                    for c in components.iter().filter(|c| own.contains(c)) {
                        let cdir = overrides.iter().find(|(n, _)| n == c).map(|(_, p)| p.to_path_buf()).unwrap_or_else(|| dir.join(c));
                        for f in files_of_component(&cdir, c, variant.as_deref())? {
                            stream_file(&mut loader, &f, Layout::Component(c.to_string()))?;
                        }
                    }
                    Self::from_loader(cfg, dtype, loader)
                }
                Source::SingleFile(file, cfgs) => {
                    let cfg = match cfgs {
                        Some(c) => c.clone(),
                        None => single_file_configs(file)?,
                    };
                    let mut loader = Self::loader(gpu, &cfg, dtype, components);
                    stream_file(&mut loader, file, cfg.single_file_layout())?;
                    Self::from_loader(cfg, dtype, loader)
                }
            }
        }
    }
}
#[cfg(not(target_arch = "wasm32"))]
pub use native::*;

/// The UNet's input channels of an original single-file checkpoint, from its safetensors
/// header text (`model.diffusion_model.input_blocks.0.0.weight`'s second dimension: 9 for
/// an inpainting checkpoint); None when the header does not say.
pub fn unet_in_channels_of_header(header: &str) -> Option<usize> {
    let v: serde_json::Value = serde_json::from_str(header).ok()?;
    let shape = v.get("model.diffusion_model.input_blocks.0.0.weight")?.get("shape")?.as_array()?;
    let c = shape.get(1)?.as_u64()?;
    (shape.len() == 4 && (1..=64).contains(&c)).then_some(c as usize)
}

/// Whether a single-file checkpoint's header is SD 2.x's: its text encoder is OpenCLIP's
/// (`cond_stage_model.model.transformer.*`, where SD 1.x has `cond_stage_model.transformer.*`).
pub fn checkpoint_is_sd2(header: &str) -> bool {
    header.contains("\"cond_stage_model.model.transformer.resblocks.")
}

/// Whether a single-file checkpoint's header is SDXL's (Stability's sgm layout: a second text
/// encoder under `conditioner.embedders.1.`; SDXL base and Turbo have the same shapes).
pub fn checkpoint_is_sdxl(header: &str) -> bool {
    header.contains("\"conditioner.embedders.1.")
}

/// The header length of a safetensors file from its first 8 bytes, when it is plausible
/// (at most 100 MiB and, with the file's length known, inside the file); None otherwise (the
/// streaming parser then reports the file properly).
pub fn checkpoint_header_len(first8: [u8; 8], file_len: Option<u64>) -> Option<usize> {
    let n = u64::from_le_bytes(first8);
    let inside = file_len.is_none_or(|len| n <= len.saturating_sub(8));
    (inside && n <= (100 << 20)).then_some(n as usize)
}

/// The first bytes of a single-file checkpoint, held until its safetensors header is complete
/// so that the model's configs come from the header before any tensor is read (the browser
/// streams the file once). Holds the header and at most one chunk more.
#[derive(Debug, Default)]
pub struct CheckpointSniffer {
    held: Vec<u8>,
}

impl CheckpointSniffer {
    /// Add the next bytes (`total`: the file's length when known; `end`: the file ended).
    /// Returns the configs ([`checkpoint_configs`]) once the header is complete, or SD 1.5's
    /// when it cannot be read (the loader then reports the file); None while more is needed.
    pub fn push(&mut self, chunk: &[u8], total: Option<u64>, end: bool) -> Option<Configs> {
        self.held.extend_from_slice(chunk);
        let Some(first8) = self.held.get(..8) else { return end.then(Configs::default) };
        match checkpoint_header_len(first8.try_into().expect("8 bytes"), total) {
            Some(n) if self.held.len() - 8 >= n => Some(checkpoint_configs(Some(&String::from_utf8_lossy(&self.held[8..8 + n])))),
            Some(_) if !end => None,
            _ => Some(Configs::default()),
        }
    }

    /// The bytes pushed so far (the loader gets them first).
    pub fn into_held(self) -> Vec<u8> {
        self.held
    }
}

/// The configs of an original single-file checkpoint from its safetensors header (None: a
/// header that could not be read, SD 1.5's): SDXL base's ([`Configs::sdxl`]) when it has
/// `conditioner.embedders.1.` keys, SD 2.x's when its text encoder is OpenCLIP's,
/// else SD 1.5's; the UNet's input channels from its first convolution (`input_blocks.0.0`
/// [C, 9, 3, 3]: an inpainting checkpoint). The CLI and the browser's worker both use it.
pub fn checkpoint_configs(header: Option<&str>) -> Configs {
    let Some(h) = header else { return Configs::default() };
    let mut cfg = if checkpoint_is_sdxl(h) {
        Configs::sdxl()
    } else if checkpoint_is_sd2(h) {
        Configs::sd21()
    } else {
        Configs::default()
    };
    if let Some(c) = unet_in_channels_of_header(h) {
        cfg.unet.in_channels = c;
    }
    cfg
}
