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
use config::{ClipConfig, UnetConfig, VaeConfig};
use nn::{Ctx, Vb};
use unet::Unet;
use vae::Vae;

use crate::gpu::{DType, Gpu};
use crate::weights::keymap::{UnetLayout, VaeLayout};
use crate::weights::{Layout, Loader, Spec, Weights};

pub const COMPONENTS: [&str; 3] = ["text_encoder", "unet", "vae"];

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
    /// The storage of `component` (or of a weight name `component/…`).
    pub fn of(&self, component: &str) -> DType {
        match component.split('/').next().unwrap_or("") {
            "text_encoder" => self.text_encoder,
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
}

impl Configs {
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
        self.clip.hidden_act == "gelu"
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

/// Build the networks and list every weight they need.
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
    (clip, unet, vae, specs)
}

/// The weight fusions of the networks (q/k/v projections concatenated after loading).
pub fn build_fusions(cfg: &Configs) -> Vec<nn::Fusion> {
    let mut out = Vec::new();
    for (comp, f) in [("text_encoder", 0), ("unet", 1), ("vae", 2)] {
        let vb = Vb::root(comp);
        match f {
            0 => drop(ClipTextModel::new(&vb, &cfg.clip)),
            1 => drop(Unet::new(&vb, &cfg.unet)),
            _ => drop(Vae::new(&vb, &cfg.vae)),
        }
        out.extend(vb.fusions());
    }
    out
}

impl StableDiffusion {
    /// Networks for `cfg` over loaded (or placeholder) weights; applies the weight fusions.
    pub fn new(gpu: &Gpu, cfg: Configs, dtypes: impl Into<Dtypes>, mut weights: Weights, warnings: Vec<String>) -> crate::Result<StableDiffusion> {
        nn::apply_fusions(gpu, &mut weights, &build_fusions(&cfg))?;
        let (clip, unet, vae, _) = build(&cfg);
        Ok(StableDiffusion { cfg, clip, unet, vae, weights, dtypes: dtypes.into(), warnings, tiny_vae: None, loras: lora::LoraState::default() })
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

    /// Free the text encoder's weights (after [`crate::pipeline::encode_text`]); returns the
    /// bytes freed. Load them again ([`StableDiffusion::loader`] with `["text_encoder"]` and
    /// [`StableDiffusion::restore_text_encoder`]) before encoding another prompt.
    pub fn evict_text_encoder(&mut self, gpu: &Gpu) -> u64 {
        let names: Vec<String> = self.weights.iter().filter(|(n, _)| n.starts_with("text_encoder/")).map(|(n, _)| n.clone()).collect();
        let mut freed = 0;
        for n in names {
            if let Some(t) = self.weights.remove(&n) {
                freed += t.bytes();
            }
        }
        // Merged LoRAs' base copies of the text encoder go too (merged again on restore).
        freed += self.loras.base_bytes();
        self.loras.forget_component("text_encoder");
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
        let fusions: Vec<nn::Fusion> = build_fusions(&self.cfg).into_iter().filter(|f| f.name.starts_with("text_encoder/")).collect();
        nn::apply_fusions(gpu, &mut w, &fusions)?;
        for (n, t) in w.iter() {
            self.weights.insert(n.clone(), t.clone());
        }
        // Fresh base weights: merge the active LoRAs into them again.
        self.loras.forget_component("text_encoder");
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

    /// Configs of a diffusers folder (each component's config.json).
    pub fn read_configs(dir: &Path) -> crate::Result<Configs> {
        let f = |c: &str| dir.join(c).join("config.json");
        let u = f("unet");
        let v = f("vae");
        let t = f("text_encoder");
        Ok(Configs {
            unet: UnetConfig::from_json(&u.display().to_string(), &read_text(&u)?)?,
            vae: VaeConfig::from_json(&v.display().to_string(), &read_text(&v)?)?,
            clip: ClipConfig::from_json(&t.display().to_string(), &read_text(&t)?)?,
        })
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
                    for c in components {
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
/// header that could not be read, SD 1.5's): SD 2.x's when its text encoder is OpenCLIP's,
/// else SD 1.5's; the UNet's input channels from its first convolution (`input_blocks.0.0`
/// [C, 9, 3, 3]: an inpainting checkpoint). The CLI and the browser's worker both use it.
pub fn checkpoint_configs(header: Option<&str>) -> Configs {
    let Some(h) = header else { return Configs::default() };
    let mut cfg = if checkpoint_is_sd2(h) { Configs::sd21() } else { Configs::default() };
    if let Some(c) = unet_in_channels_of_header(h) {
        cfg.unet.in_channels = c;
    }
    cfg
}
