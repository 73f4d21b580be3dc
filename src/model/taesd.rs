//! AutoencoderTiny (TAESD, madebyollin/taesd): a small conv-only encoder and decoder with
//! the SD latent space, names and sizes as diffusers' `EncoderTiny` / `DecoderTiny`:
//!
//! ```text
//! encoder.layers: conv(3→C) · [block]×n₀ · (conv s2 no-bias · [block]×nᵢ)… · conv(C→4)    input (x+1)/2
//! decoder.layers: conv(4→C) · relu · ([block]×nᵢ · upsample×2 · conv no-bias)… · [block]×n₃ · conv(C→3)
//!                 input 3·tanh(z/3), output 2y−1
//! block = relu(conv(relu(conv(relu(conv(x))))) + x)
//! ```
//! The latents are the UNet's as they are (`scaling_factor` 1) and the encoder draws no
//! random numbers. Weights are its own (component `taesd/`), loaded beside a model.
use super::config::TinyVaeConfig;
use super::nn::{Conv, Ctx, Vb};
use crate::error::{Error, Result};
use crate::gpu::{DType, Gpu, Tensor};
use crate::ops::{self, Act, ConvFuse};
use crate::weights::{Layout, Loader, Spec, Weights};

/// `AutoencoderTinyBlock` (in = out channels: the skip is the identity).
struct Block {
    convs: [Conv; 3],
}

impl Block {
    fn new(vb: &Vb, c: usize) -> Block {
        let v = vb.pp("conv");
        Block { convs: [Conv::new(&v.pp(0), c, c, 3, 1, 1), Conv::new(&v.pp(2), c, c, 3, 1, 1), Conv::new(&v.pp(4), c, c, 3, 1, 1)] }
    }
    fn fwd(&self, c: &Ctx, x: &Tensor) -> Result<Tensor> {
        let h = self.convs[0].fwd(c, x, Act::Relu, None)?;
        let h = self.convs[1].fwd(c, &h, Act::Relu, None)?;
        // The conv epilogue adds the residual after its activation: relu(conv + x) is one more pass.
        let h = self.convs[2].fwd(c, &h, Act::None, Some(x))?;
        ops::unary(c.gpu, &h, Act::Relu)
    }
}

enum Layer {
    /// A convolution; `upsample`: nearest ×2 folded into its input; `relu` after it.
    Conv { conv: Conv, upsample: bool, relu: bool },
    Block(Block),
}

fn run(c: &Ctx, layers: &[Layer], x: &Tensor) -> Result<Tensor> {
    let mut h = x.clone();
    for l in layers {
        h = match l {
            Layer::Conv { conv, upsample, relu } => {
                conv.fwd_fused(c, &h, ConvFuse { upsample: *upsample, act: if *relu { Act::Relu } else { Act::None }, ..Default::default() })?
            }
            Layer::Block(b) => b.fwd(c, &h)?,
        };
    }
    Ok(h)
}

pub struct TinyVae {
    pub cfg: TinyVaeConfig,
    encoder: Vec<Layer>,
    decoder: Vec<Layer>,
    pub weights: Weights,
    /// Storage of the weights and activations.
    pub dtype: DType,
}

/// The layers of encoder and decoder and every weight they need (names `taesd/…`).
fn build(cfg: &TinyVaeConfig) -> (Vec<Layer>, Vec<Layer>, Vec<Spec>) {
    let vb = Vb::root("taesd");
    let e = vb.pp("encoder.layers");
    let mut encoder = Vec::new();
    let mut i = 0;
    for (lvl, (&ch, &n)) in cfg.encoder_block_out_channels.iter().zip(&cfg.num_encoder_blocks).enumerate() {
        let conv = if lvl == 0 { Conv::new(&e.pp(i), cfg.in_channels, ch, 3, 1, 1) } else { Conv::no_bias(&e.pp(i), ch, ch, 3, 2, 1) };
        encoder.push(Layer::Conv { conv, upsample: false, relu: false });
        i += 1;
        for _ in 0..n {
            encoder.push(Layer::Block(Block::new(&e.pp(i), ch)));
            i += 1;
        }
    }
    let last = *cfg.encoder_block_out_channels.last().unwrap_or(&64);
    encoder.push(Layer::Conv { conv: Conv::new(&e.pp(i), last, cfg.latent_channels, 3, 1, 1), upsample: false, relu: false });

    let d = vb.pp("decoder.layers");
    let ch = &cfg.decoder_block_out_channels;
    let mut decoder = vec![Layer::Conv { conv: Conv::new(&d.pp(0), cfg.latent_channels, ch[0], 3, 1, 1), upsample: false, relu: true }];
    // index 1 is the ReLU (no weights)
    let mut i = 2;
    let levels = ch.len();
    for (lvl, (&c, &n)) in ch.iter().zip(&cfg.num_decoder_blocks).enumerate() {
        for _ in 0..n {
            decoder.push(Layer::Block(Block::new(&d.pp(i), c)));
            i += 1;
        }
        let last = lvl + 1 == levels;
        if !last {
            i += 1; // nn.Upsample (folded into the next conv's input)
        }
        let conv = if last { Conv::new(&d.pp(i), c, cfg.out_channels, 3, 1, 1) } else { Conv::no_bias(&d.pp(i), c, c, 3, 1, 1) };
        decoder.push(Layer::Conv { conv, upsample: !last, relu: false });
        i += 1;
    }
    (encoder, decoder, vb.specs())
}

impl TinyVae {
    /// Every weight the config needs.
    pub fn specs(cfg: &TinyVaeConfig) -> Vec<Spec> {
        build(cfg).2
    }

    /// A loader for the weights (files in the diffusers layout: [`Layout::Component`]
    /// `"taesd"`; the original `taesd_encoder/decoder.safetensors`: [`Layout::TaesdOriginal`]).
    pub fn loader(gpu: &Gpu, cfg: &TinyVaeConfig, dtype: DType) -> Loader {
        Loader::with_dtypes(gpu, Self::specs(cfg), move |_| dtype)
    }

    /// Assemble from a finished loader (every weight present, or an error naming the missing).
    pub fn from_loader(cfg: TinyVaeConfig, dtype: DType, loader: Loader) -> Result<TinyVae> {
        let (weights, _warnings) = loader.finish()?;
        Ok(Self::new(cfg, dtype, weights))
    }

    pub fn new(cfg: TinyVaeConfig, dtype: DType, weights: Weights) -> TinyVae {
        let (encoder, decoder, _) = build(&cfg);
        TinyVae { cfg, encoder, decoder, weights, dtype }
    }

    /// Bytes of the largest activation of a decode (or encode) of `b` images of `h`×`w`
    /// pixels: the widest level at full resolution.
    pub fn largest_activation(&self, b: usize, h: usize, w: usize) -> u64 {
        let c = self.cfg.decoder_block_out_channels[0].max(self.cfg.encoder_block_out_channels[0]);
        self.dtype.buffer_bytes(b * c * h * w)
    }

    /// Whether a decode of `b` images of `h`×`w` keeps every buffer within `max_binding`.
    pub fn fits(&self, b: usize, h: usize, w: usize, max_binding: u64) -> bool {
        self.largest_activation(b, h, w) <= max_binding
    }

    pub fn ctx<'a>(&'a self, gpu: &'a Gpu) -> Ctx<'a> {
        Ctx { gpu, w: &self.weights }
    }

    /// Image [B, 3, H, W] in [−1, 1] → latents [B, 4, H/f, W/f] (`AutoencoderTiny.encode(x).latents`).
    pub fn encode(&self, gpu: &Gpu, x: &Tensor) -> Result<Tensor> {
        let f = self.cfg.factor();
        if x.rank() != 4 || x.shape()[1] != self.cfg.in_channels || x.shape()[2] % f != 0 || x.shape()[3] % f != 0 {
            return Err(Error::Shape { op: "taesd encode", detail: format!("image {:?} must be [B, {}, H, W] with H, W multiples of {f}", x.shape(), self.cfg.in_channels) });
        }
        let c = self.ctx(gpu);
        let x01 = ops::affine(gpu, x, 0.5, 0.5)?;
        run(&c, &self.encoder, &x01)
    }

    /// Latents [B, 4, h, w] → image [B, 3, h·f, w·f] in about [−1, 1] (`AutoencoderTiny.decode(z).sample`, not clamped).
    pub fn decode(&self, gpu: &Gpu, z: &Tensor) -> Result<Tensor> {
        if z.rank() != 4 || z.shape()[1] != self.cfg.latent_channels {
            return Err(Error::Shape { op: "taesd decode", detail: format!("latents {:?} must be [B, {}, h, w]", z.shape(), self.cfg.latent_channels) });
        }
        let c = self.ctx(gpu);
        let zc = ops::soft_clamp(gpu, z, 3.0)?;
        let y = run(&c, &self.decoder, &zc)?;
        ops::affine(gpu, &y, 2.0, -1.0)
    }
}

/// The layout of a TAESD weight file: diffusers' (`encoder.layers.*` / `decoder.layers.*`),
/// or the original `taesd_encoder.safetensors` / `taesd_decoder.safetensors` (bare
/// `nn.Sequential` indices; the decoder's start with the clamp, so its index is one more).
pub fn file_layout(file_name: &str) -> Layout {
    let lower = file_name.to_ascii_lowercase();
    let base = lower.rsplit('/').next().unwrap_or(&lower);
    if base.contains("decoder") {
        Layout::TaesdOriginal { decoder: true }
    } else if base.contains("encoder") {
        Layout::TaesdOriginal { decoder: false }
    } else {
        Layout::Component("taesd".into())
    }
}

#[cfg(not(target_arch = "wasm32"))]
mod native {
    use std::path::{Path, PathBuf};

    use super::*;
    use crate::weights::source::{read_text, stream_file};
    use crate::weights::WeightError;

    /// The weight files of a TAESD at `path` and their layouts: a diffusers folder
    /// (`config.json` + `diffusion_pytorch_model[.fp16].safetensors`), a folder with the
    /// original `taesd_encoder.safetensors` + `taesd_decoder.safetensors`, or one of those two
    /// files (the other is looked for beside it).
    pub fn files(path: &Path, variant: Option<&str>) -> crate::Result<(Option<PathBuf>, Vec<(PathBuf, Layout)>)> {
        let missing = |p: &Path, what: &str| -> crate::Error { WeightError::Io { file: p.display().to_string(), detail: what.to_string() }.into() };
        if path.is_dir() {
            let cfg = path.join("config.json");
            if cfg.is_file() {
                let mut tries = Vec::new();
                if let Some(v) = variant {
                    tries.push(path.join(format!("diffusion_pytorch_model.{v}.safetensors")));
                }
                tries.push(path.join("diffusion_pytorch_model.safetensors"));
                let f = tries.into_iter().find(|p| p.is_file()).ok_or_else(|| missing(path, "no diffusion_pytorch_model.safetensors in this TAESD folder"))?;
                return Ok((Some(cfg), vec![(f, Layout::Component("taesd".into()))]));
            }
            let enc = std::fs::read_dir(path)
                .map_err(|e| missing(path, &e.to_string()))?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.file_name().map(|n| n.to_string_lossy().ends_with("encoder.safetensors")).unwrap_or(false))
                .min();
            let enc = enc.ok_or_else(|| missing(path, "not a TAESD folder: no config.json (diffusers AutoencoderTiny) and no taesd_encoder.safetensors / taesd_decoder.safetensors"))?;
            return files(&enc, variant);
        }
        let name = path.file_name().map(|n| n.to_string_lossy().to_string()).unwrap_or_default();
        let (enc, dec) = if name.contains("decoder") {
            (path.with_file_name(name.replacen("decoder", "encoder", 1)), path.to_path_buf())
        } else if name.contains("encoder") {
            (path.to_path_buf(), path.with_file_name(name.replacen("encoder", "decoder", 1)))
        } else {
            return Err(missing(path, "a TAESD file must be taesd_encoder.safetensors or taesd_decoder.safetensors (or give the diffusers folder)"));
        };
        for f in [&enc, &dec] {
            if !f.is_file() {
                return Err(missing(f, "not found: TAESD needs both its encoder and its decoder file"));
            }
        }
        Ok((None, vec![(enc, Layout::TaesdOriginal { decoder: false }), (dec, Layout::TaesdOriginal { decoder: true })]))
    }

    impl TinyVae {
        /// Load a TAESD from disk (see [`files`]), weights stored as `dtype`.
        pub fn load(gpu: &Gpu, path: &Path, dtype: DType) -> crate::Result<TinyVae> {
            let (cfg_file, files) = files(path, Some("fp16"))?;
            let cfg = match cfg_file {
                Some(f) => TinyVaeConfig::from_json(&f.display().to_string(), &read_text(&f)?)?,
                None => TinyVaeConfig::default(),
            };
            let mut loader = Self::loader(gpu, &cfg, dtype);
            for (f, layout) in files {
                stream_file(&mut loader, &f, layout)?;
            }
            Self::from_loader(cfg, dtype, loader)
        }
    }
}
#[cfg(not(target_arch = "wasm32"))]
pub use native::files;
