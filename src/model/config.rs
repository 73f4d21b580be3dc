//! Component configs, read from diffusers' `config.json` (defaults = SD-1.5's).
use serde::{Deserialize, Serialize};

use crate::weights::WeightError;

fn parse<T: for<'de> Deserialize<'de>>(file: &str, text: &str) -> Result<T, WeightError> {
    serde_json::from_str(text).map_err(|e| WeightError::Config { file: file.into(), detail: format!("bad config: {e}") })
}

/// Bounds a config must meet before anything is built from it (a hostile or broken file
/// gets a clear error, never an allocation of its numbers). Generous: far above SD 1.x / 2.x
/// / XL, small enough that every size the kernels index fits in u32.
const MAX_CHANNELS: usize = 8192;
const MAX_BLOCKS: usize = 8;
const MAX_LAYERS: usize = 64;

/// `Err(Config)` with `detail` unless `ok`.
fn require(file: &str, ok: bool, detail: impl FnOnce() -> String) -> Result<(), WeightError> {
    if ok {
        Ok(())
    } else {
        Err(WeightError::Config { file: file.into(), detail: detail() })
    }
}

/// `value` in 1..=max.
fn in_range(file: &str, key: &str, value: usize, max: usize) -> Result<(), WeightError> {
    require(file, (1..=max).contains(&value), || format!("{key} = {value} is out of range (1 to {max})"))
}

/// Channel counts: each in range and divisible by the group norm's groups.
fn channels(file: &str, key: &str, list: &[usize], groups: usize) -> Result<(), WeightError> {
    in_range(file, "norm_num_groups", groups, MAX_CHANNELS)?;
    in_range(file, &format!("number of {key}"), list.len(), MAX_BLOCKS)?;
    for &c in list {
        in_range(file, key, c, MAX_CHANNELS)?;
        require(file, c % groups == 0, || format!("{key} {c} is not divisible by norm_num_groups {groups}"))?;
    }
    Ok(())
}

fn positive(file: &str, key: &str, v: f32) -> Result<(), WeightError> {
    require(file, v.is_finite() && v > 0.0, || format!("{key} = {v} must be a positive number"))
}

/// `attention_head_dim` / `num_attention_heads` / `transformer_layers_per_block`: one number
/// or one per block.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(untagged)]
pub enum PerBlock {
    One(usize),
    Each(Vec<usize>),
}

impl PerBlock {
    /// The last entry (diffusers' mid block uses `transformer_layers_per_block[-1]`).
    pub fn last(&self) -> usize {
        match self {
            PerBlock::One(v) => *v,
            PerBlock::Each(v) => v.last().copied().unwrap_or(1),
        }
    }
    /// Every entry (one number: itself).
    pub fn values(&self) -> Vec<usize> {
        match self {
            PerBlock::One(v) => vec![*v],
            PerBlock::Each(v) => v.clone(),
        }
    }
    pub fn get(&self, i: usize) -> usize {
        match self {
            PerBlock::One(v) => *v,
            PerBlock::Each(v) => v.get(i).copied().unwrap_or(*v.last().unwrap_or(&8)),
        }
    }
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(default)]
pub struct UnetConfig {
    pub in_channels: usize,
    pub out_channels: usize,
    pub block_out_channels: Vec<usize>,
    pub down_block_types: Vec<String>,
    pub up_block_types: Vec<String>,
    pub layers_per_block: usize,
    pub attention_head_dim: PerBlock,
    pub num_attention_heads: Option<PerBlock>,
    pub cross_attention_dim: usize,
    pub norm_num_groups: usize,
    pub norm_eps: f32,
    pub flip_sin_to_cos: bool,
    pub freq_shift: f32,
    pub downsample_padding: usize,
    pub use_linear_projection: bool,
    /// Transformer blocks per attention of each down block (mid block: the last entry; up
    /// block `i`: the entry of down block `n-1-i`, as diffusers reverses the list).
    pub transformer_layers_per_block: PerBlock,
    pub sample_size: usize,
    pub act_fn: String,
    /// LCM-distilled UNets: width of the guidance embedding added to the time embedding
    /// (`time_embedding.cond_proj`).
    pub time_cond_proj_dim: Option<usize>,
    /// SD-2.x: attention scores in f32 (this project's attention always accumulates scores
    /// and softmax in f32, so it is read and kept for the record).
    pub upcast_attention: Option<bool>,
    /// SDXL: `"text_time"` (pooled text embedding + micro-conditioning time ids added to the
    /// time embedding through `add_embedding`). Nothing else is supported.
    pub addition_embed_type: Option<String>,
    /// SDXL: width of the sinusoidal embedding of each of the 6 time ids (`add_time_proj`).
    pub addition_time_embed_dim: Option<usize>,
    /// SDXL: input width of `add_embedding.linear_1` (pooled text width + 6 · addition_time_embed_dim).
    pub projection_class_embeddings_input_dim: Option<usize>,
}

impl Default for UnetConfig {
    /// Stable Diffusion 1.5.
    fn default() -> Self {
        UnetConfig {
            in_channels: 4,
            out_channels: 4,
            block_out_channels: vec![320, 640, 1280, 1280],
            down_block_types: ["CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"].map(String::from).to_vec(),
            up_block_types: ["UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"].map(String::from).to_vec(),
            layers_per_block: 2,
            attention_head_dim: PerBlock::One(8),
            num_attention_heads: None,
            cross_attention_dim: 768,
            norm_num_groups: 32,
            norm_eps: 1e-5,
            flip_sin_to_cos: true,
            freq_shift: 0.0,
            downsample_padding: 1,
            use_linear_projection: false,
            transformer_layers_per_block: PerBlock::One(1),
            sample_size: 64,
            act_fn: "silu".into(),
            time_cond_proj_dim: None,
            upcast_attention: None,
            addition_embed_type: None,
            addition_time_embed_dim: None,
            projection_class_embeddings_input_dim: None,
        }
    }
}

impl UnetConfig {
    pub fn from_json(file: &str, text: &str) -> Result<Self, WeightError> {
        let c: UnetConfig = parse(file, text)?;
        let n = c.block_out_channels.len();
        if n == 0 || c.down_block_types.len() != n || c.up_block_types.len() != n {
            return Err(WeightError::Config { file: file.into(), detail: "block_out_channels, down_block_types and up_block_types must have the same non-zero length".into() });
        }
        if c.act_fn != "silu" {
            return Err(WeightError::Config { file: file.into(), detail: format!("act_fn {} is not supported (SD 1.x uses silu)", c.act_fn) });
        }
        channels(file, "block_out_channels", &c.block_out_channels, c.norm_num_groups)?;
        in_range(file, "in_channels", c.in_channels, 64)?;
        in_range(file, "out_channels", c.out_channels, 64)?;
        in_range(file, "layers_per_block", c.layers_per_block, MAX_LAYERS)?;
        if let PerBlock::Each(v) = &c.transformer_layers_per_block {
            require(file, v.len() == n, || format!("transformer_layers_per_block has {} entries for {n} blocks", v.len()))?;
        }
        for l in c.transformer_layers_per_block.values() {
            in_range(file, "transformer_layers_per_block", l, MAX_LAYERS)?;
        }
        match c.addition_embed_type.as_deref() {
            None => {}
            Some("text_time") => {
                let (Some(d), Some(p)) = (c.addition_time_embed_dim, c.projection_class_embeddings_input_dim) else {
                    return Err(WeightError::Config { file: file.into(), detail: "addition_embed_type text_time needs addition_time_embed_dim and projection_class_embeddings_input_dim".into() });
                };
                in_range(file, "addition_time_embed_dim", d, MAX_CHANNELS)?;
                require(file, d % 2 == 0, || format!("addition_time_embed_dim = {d} must be even"))?;
                in_range(file, "projection_class_embeddings_input_dim", p, 4 * MAX_CHANNELS)?;
                require(file, p > 6 * d, || format!("projection_class_embeddings_input_dim = {p} leaves no room for the pooled text embedding beside 6 × {d} time-id features"))?;
            }
            Some(other) => return Err(WeightError::Config { file: file.into(), detail: format!("addition_embed_type {other} is not supported (SDXL's text_time is)") }),
        }
        in_range(file, "cross_attention_dim", c.cross_attention_dim, MAX_CHANNELS)?;
        in_range(file, "sample_size", c.sample_size, 1024)?;
        if let Some(d) = c.time_cond_proj_dim {
            in_range(file, "time_cond_proj_dim", d, MAX_CHANNELS)?;
        }
        require(file, c.downsample_padding <= 8, || format!("downsample_padding = {} is out of range (0 to 8)", c.downsample_padding))?;
        positive(file, "norm_eps", c.norm_eps)?;
        for (i, (&ch, kind)) in c.block_out_channels.iter().zip(&c.down_block_types).enumerate() {
            let heads = c.heads(i);
            if kind.contains("CrossAttn") {
                require(file, heads >= 1 && ch % heads == 0, || format!("block {i}: {heads} attention heads do not divide its {ch} channels"))?;
            }
        }
        Ok(c)
    }
    /// Heads per block, as diffusers reads SD 1.x configs (`attention_head_dim` is the head count there).
    pub fn heads(&self, block: usize) -> usize {
        self.num_attention_heads.as_ref().unwrap_or(&self.attention_head_dim).get(block)
    }
    /// SDXL's conditioning: `addition_embed_type` is `text_time`.
    pub fn is_xl(&self) -> bool {
        self.addition_embed_type.as_deref() == Some("text_time")
    }
    /// Width of the pooled text embedding an XL UNet takes (`text_embeds` [B, this]) beside
    /// SDXL base's 6 time ids.
    pub fn pooled_text_dim(&self) -> Option<usize> {
        self.pooled_text_dim_for(6)
    }
    /// The same beside `time_ids` time ids (SDXL base: 6 = original size, crop, target size;
    /// the refiner's `requires_aesthetics_score` rule: 5 = original size, crop, aesthetic
    /// score). None when the config leaves no room for them.
    pub fn pooled_text_dim_for(&self, time_ids: usize) -> Option<usize> {
        self.projection_class_embeddings_input_dim?.checked_sub(time_ids.checked_mul(self.addition_time_embed_dim?)?).filter(|&p| p > 0)
    }
    /// Transformer blocks of down block `i`'s attentions.
    pub fn transformer_layers_down(&self, i: usize) -> usize {
        self.transformer_layers_per_block.get(i)
    }
    /// Transformer blocks of up block `i`'s attentions (the reversed list).
    pub fn transformer_layers_up(&self, i: usize) -> usize {
        self.transformer_layers_per_block.get(self.block_out_channels.len() - 1 - i)
    }
    /// Transformer blocks of the mid block's attention (the last entry).
    pub fn transformer_layers_mid(&self) -> usize {
        self.transformer_layers_per_block.last()
    }
    /// Number of 2× downsamplings (latent sizes must be multiples of 2^this).
    pub fn downsamplings(&self) -> usize {
        self.block_out_channels.len() - 1
    }
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(default)]
pub struct VaeConfig {
    pub in_channels: usize,
    pub out_channels: usize,
    pub latent_channels: usize,
    pub block_out_channels: Vec<usize>,
    pub layers_per_block: usize,
    pub norm_num_groups: usize,
    pub scaling_factor: f32,
    pub use_quant_conv: bool,
    pub use_post_quant_conv: bool,
    pub mid_block_add_attention: bool,
    /// diffusers' AutoencoderKL `force_upcast` (default true): the VAE overflows in f16 and
    /// should run in f32 (false for the fp16-fix VAE).
    pub force_upcast: bool,
}

impl Default for VaeConfig {
    fn default() -> Self {
        VaeConfig {
            in_channels: 3,
            out_channels: 3,
            latent_channels: 4,
            block_out_channels: vec![128, 256, 512, 512],
            layers_per_block: 2,
            norm_num_groups: 32,
            scaling_factor: 0.18215,
            use_quant_conv: true,
            use_post_quant_conv: true,
            mid_block_add_attention: true,
            force_upcast: true,
        }
    }
}

impl VaeConfig {
    pub fn from_json(file: &str, text: &str) -> Result<Self, WeightError> {
        let c: VaeConfig = parse(file, text)?;
        if c.block_out_channels.is_empty() {
            return Err(WeightError::Config { file: file.into(), detail: "block_out_channels is empty".into() });
        }
        channels(file, "block_out_channels", &c.block_out_channels, c.norm_num_groups)?;
        in_range(file, "in_channels", c.in_channels, 64)?;
        in_range(file, "out_channels", c.out_channels, 64)?;
        in_range(file, "latent_channels", c.latent_channels, 64)?;
        in_range(file, "layers_per_block", c.layers_per_block, MAX_LAYERS)?;
        positive(file, "scaling_factor", c.scaling_factor)?;
        Ok(c)
    }
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(default)]
pub struct ClipConfig {
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub max_position_embeddings: usize,
    pub layer_norm_eps: f32,
    pub hidden_act: String,
    pub pad_token_id: u32,
    pub bos_token_id: u32,
    pub eos_token_id: u32,
    /// `text_projection` width (CLIPTextModelWithProjection, SDXL's text_encoder_2); kept as
    /// read (CLIPTextModel configs carry it too, unused there).
    pub projection_dim: Option<usize>,
}

impl Default for ClipConfig {
    fn default() -> Self {
        ClipConfig {
            vocab_size: 49408,
            hidden_size: 768,
            intermediate_size: 3072,
            num_hidden_layers: 12,
            num_attention_heads: 12,
            max_position_embeddings: 77,
            layer_norm_eps: 1e-5,
            hidden_act: "quick_gelu".into(),
            pad_token_id: 49407,
            bos_token_id: 49406,
            eos_token_id: 49407,
            projection_dim: None,
        }
    }
}

impl ClipConfig {
    pub fn from_json(file: &str, text: &str) -> Result<Self, WeightError> {
        let c: ClipConfig = parse(file, text)?;
        if c.num_attention_heads == 0 || c.hidden_size % c.num_attention_heads != 0 {
            return Err(WeightError::Config { file: file.into(), detail: format!("{} heads do not divide hidden size {}", c.num_attention_heads, c.hidden_size) });
        }
        if !matches!(c.hidden_act.as_str(), "quick_gelu" | "gelu") {
            return Err(WeightError::Config { file: file.into(), detail: format!("hidden_act {} is not supported", c.hidden_act) });
        }
        in_range(file, "hidden_size", c.hidden_size, MAX_CHANNELS)?;
        in_range(file, "intermediate_size", c.intermediate_size, 4 * MAX_CHANNELS)?;
        in_range(file, "num_hidden_layers", c.num_hidden_layers, MAX_LAYERS)?;
        in_range(file, "max_position_embeddings", c.max_position_embeddings, 4096)?;
        in_range(file, "vocab_size", c.vocab_size, 1 << 19)?;
        for (key, id) in [("pad_token_id", c.pad_token_id), ("bos_token_id", c.bos_token_id), ("eos_token_id", c.eos_token_id)] {
            require(file, (id as usize) < c.vocab_size, || format!("{key} {id} is outside the vocabulary ({})", c.vocab_size))?;
        }
        positive(file, "layer_norm_eps", c.layer_norm_eps)?;
        if let Some(p) = c.projection_dim {
            in_range(file, "projection_dim", p, MAX_CHANNELS)?;
        }
        Ok(c)
    }
}

/// SDXL pipeline switches from `model_index.json` (diffusers' StableDiffusionXLPipeline
/// `register_to_config` values).
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(default)]
pub struct XlPipelineConfig {
    /// With CFG and no negative prompt given, the negative embeddings (and pooled) are zeros.
    pub force_zeros_for_empty_prompt: bool,
    /// img2img: the time ids carry aesthetic scores instead of the target size (refiner).
    pub requires_aesthetics_score: bool,
}

impl Default for XlPipelineConfig {
    fn default() -> Self {
        XlPipelineConfig { force_zeros_for_empty_prompt: true, requires_aesthetics_score: false }
    }
}

impl XlPipelineConfig {
    /// From the text of `model_index.json` (missing keys take diffusers' defaults).
    pub fn from_json(file: &str, text: &str) -> Result<Self, WeightError> {
        parse(file, text)
    }
}

/// diffusers `AutoencoderTiny` (TAESD) config; defaults = `madebyollin/taesd`'s.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(default)]
pub struct TinyVaeConfig {
    pub in_channels: usize,
    pub out_channels: usize,
    pub latent_channels: usize,
    pub encoder_block_out_channels: Vec<usize>,
    pub decoder_block_out_channels: Vec<usize>,
    pub num_encoder_blocks: Vec<usize>,
    pub num_decoder_blocks: Vec<usize>,
    pub act_fn: String,
    pub upsample_fn: String,
    pub upsampling_scaling_factor: usize,
    /// 1.0 for TAESD: the UNet's latents go in as they are.
    pub scaling_factor: f32,
    pub shift_factor: f32,
}

impl Default for TinyVaeConfig {
    fn default() -> Self {
        TinyVaeConfig {
            in_channels: 3,
            out_channels: 3,
            latent_channels: 4,
            encoder_block_out_channels: vec![64; 4],
            decoder_block_out_channels: vec![64; 4],
            num_encoder_blocks: vec![1, 3, 3, 3],
            num_decoder_blocks: vec![3, 3, 3, 1],
            act_fn: "relu".into(),
            upsample_fn: "nearest".into(),
            upsampling_scaling_factor: 2,
            scaling_factor: 1.0,
            shift_factor: 0.0,
        }
    }
}

impl TinyVaeConfig {
    pub fn from_json(file: &str, text: &str) -> Result<Self, WeightError> {
        let c: TinyVaeConfig = parse(file, text)?;
        require(file, c.act_fn == "relu", || format!("act_fn {} is not supported (TAESD uses relu)", c.act_fn))?;
        require(file, c.upsample_fn == "nearest" && c.upsampling_scaling_factor == 2, || {
            format!("upsample_fn {} × {} is not supported (nearest × 2)", c.upsample_fn, c.upsampling_scaling_factor)
        })?;
        in_range(file, "in_channels", c.in_channels, 64)?;
        in_range(file, "out_channels", c.out_channels, 64)?;
        in_range(file, "latent_channels", c.latent_channels, 64)?;
        for (key, ch, blocks) in [
            ("encoder_block_out_channels", &c.encoder_block_out_channels, &c.num_encoder_blocks),
            ("decoder_block_out_channels", &c.decoder_block_out_channels, &c.num_decoder_blocks),
        ] {
            in_range(file, &format!("number of {key}"), ch.len(), MAX_BLOCKS)?;
            require(file, blocks.len() == ch.len(), || format!("{key} has {} entries but its block counts {}", ch.len(), blocks.len()))?;
            for &x in ch {
                in_range(file, key, x, MAX_CHANNELS)?;
            }
            for &n in blocks {
                require(file, n <= MAX_LAYERS, || format!("a block count of {key} is {n} (at most {MAX_LAYERS})"))?;
            }
        }
        // diffusers' DecoderTiny keeps one width through each level and its upsampling conv.
        let d = &c.decoder_block_out_channels;
        require(file, d.windows(2).all(|w| w[0] == w[1]), || format!("decoder_block_out_channels {d:?} must all be equal (as in every TAESD)"))?;
        let e = &c.encoder_block_out_channels;
        require(file, e.windows(2).all(|w| w[0] == w[1]), || format!("encoder_block_out_channels {e:?} must all be equal (as in every TAESD)"))?;
        require(file, c.scaling_factor.is_finite() && c.scaling_factor > 0.0, || format!("scaling_factor {} must be positive", c.scaling_factor))?;
        Ok(c)
    }
    /// Pixels per latent along a side.
    pub fn factor(&self) -> usize {
        1 << (self.decoder_block_out_channels.len() - 1)
    }
}
