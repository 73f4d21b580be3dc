//! Synthetic weights with the exact shapes of a model (SD-1.5 by default), written as a
//! diffusers folder of `*.fp16.safetensors` (or fp32) files, tensor by tensor (never the
//! whole file in memory). Values: uniform in ±1/sqrt(fan_in) for weights (keeps
//! activations in range), 1 for norm scales, small for biases. Deterministic per seed.
//! [`write_lora`] writes a synthetic kohya LoRA of any rank for the same shapes (f16).
#![cfg(not(target_arch = "wasm32"))]

use std::io::Write;
use std::path::Path;

use crate::model::{build, Configs};
use crate::weights::{Spec, WeightError};

struct Lcg(u64);
impl Lcg {
    fn next(&mut self) -> f32 {
        self.0 = self.0.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        ((self.0 >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
    }
}

fn io(path: &Path, e: std::io::Error) -> crate::Error {
    WeightError::Io { file: path.display().to_string(), detail: e.to_string() }.into()
}

pub(crate) fn value_scale(s: &Spec) -> (f32, f32) {
    let name = &s.name;
    let is_norm = name.contains("norm") && s.shape.len() == 1;
    if is_norm && name.ends_with(".weight") {
        return (1.0, 0.0); // constant 1
    }
    if name.ends_with(".bias") || s.shape.len() == 1 {
        return (0.0, 0.02);
    }
    if name.contains("embedding") {
        return (0.0, 0.5);
    }
    let fan_in: usize = s.shape[1..].iter().product();
    (0.0, 1.0 / (fan_in.max(1) as f32).sqrt())
}

/// One tensor of a synthetic file: name, shape, and its values `c + scale · u`, u uniform in ±1.
struct Entry {
    name: String,
    shape: Vec<usize>,
    c: f32,
    scale: f32,
}

/// Bytes of `shape` at `es` bytes per element, checked.
fn tensor_bytes(path: &Path, name: &str, shape: &[usize], es: u64) -> crate::Result<u64> {
    shape
        .iter()
        .try_fold(es, |acc, &d| acc.checked_mul(d as u64))
        .ok_or_else(|| WeightError::Format { file: path.display().to_string(), detail: format!("tensor {name} {shape:?}: its size overflows 64 bits") }.into())
}

/// Write `entries` as one safetensors file, header first, then tensor after tensor (one
/// tensor's bytes in memory at a time). Returns the file's length.
fn write_entries(path: &Path, entries: &[Entry], f16: bool, seed: u64, metadata: Option<serde_json::Map<String, serde_json::Value>>) -> crate::Result<u64> {
    let es = if f16 { 2u64 } else { 4 };
    let overflow = || -> crate::Error { WeightError::Format { file: path.display().to_string(), detail: "the file's size overflows 64 bits".into() }.into() };
    let mut header = serde_json::Map::new();
    if let Some(m) = metadata {
        header.insert("__metadata__".into(), serde_json::Value::Object(m));
    }
    let mut off = 0u64;
    for e in entries {
        let n = tensor_bytes(path, &e.name, &e.shape, es)?;
        let end = off.checked_add(n).ok_or_else(overflow)?;
        header.insert(
            e.name.clone(),
            serde_json::json!({"dtype": if f16 { "F16" } else { "F32" }, "shape": e.shape, "data_offsets": [off, end]}),
        );
        off = end;
    }
    let mut h = serde_json::to_vec(&header).map_err(|e| WeightError::Io { file: path.display().to_string(), detail: e.to_string() })?;
    while h.len() % 8 != 0 {
        h.push(b' ');
    }
    let f = std::fs::File::create(path).map_err(|e| io(path, e))?;
    let mut w = std::io::BufWriter::with_capacity(8 << 20, f);
    w.write_all(&(h.len() as u64).to_le_bytes()).map_err(|e| io(path, e))?;
    w.write_all(&h).map_err(|e| io(path, e))?;
    let mut rng = Lcg(seed);
    let mut buf = Vec::new();
    for e in entries {
        let n: usize = e.shape.iter().product();
        buf.clear();
        for _ in 0..n {
            let v = e.c + e.scale * rng.next();
            if f16 {
                buf.extend_from_slice(&half::f16::from_f32(v).to_le_bytes());
            } else {
                buf.extend_from_slice(&v.to_le_bytes());
            }
        }
        w.write_all(&buf).map_err(|e| io(path, e))?;
    }
    w.flush().map_err(|e| io(path, e))?;
    (8 + h.len() as u64).checked_add(off).ok_or_else(overflow)
}

/// Write one safetensors file of `specs` (names without the component prefix).
pub fn write_safetensors(path: &Path, specs: &[(String, Vec<usize>)], f16: bool, seed: u64) -> crate::Result<u64> {
    let entries: Vec<Entry> = specs
        .iter()
        .map(|(name, shape)| {
            let (c, scale) = value_scale(&Spec { name: name.clone(), shape: shape.clone() });
            Entry { name: name.clone(), shape: shape.clone(), c, scale }
        })
        .collect();
    write_entries(path, &entries, f16, seed, None)
}

/// The UNet modules a typical SD-1.x LoRA changes, by the last part of their diffusers name:
/// the attention projections, the transformers' proj_in / proj_out and feed-forward, and
/// (LoCon, kohya's `conv_dim`) the resnets' 3×3 convolutions, time-embedding projections and
/// 1×1 shortcuts and the down/upsampler convolutions — LCM-LoRA's `target_modules`.
pub const LORA_UNET_MODULES: [&str; 14] = [
    "to_q",
    "to_k",
    "to_v",
    "to_out.0",
    "proj_in",
    "proj_out",
    "ff.net.0.proj",
    "ff.net.2",
    "conv1",
    "conv2",
    "time_emb_proj",
    "conv_shortcut",
    "downsamplers.0.conv",
    "upsamplers.0.conv",
];

/// The text-encoder modules a kohya LoRA changes (every CLIP layer's attention and MLP).
pub const LORA_TE_MODULES: [&str; 6] = ["self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.out_proj", "mlp.fc1", "mlp.fc2"];

/// One module of a synthetic LoRA: its kohya key (`lora_unet_…` / `lora_te_text_model_…`),
/// the weight it changes (`unet/….weight`) and that weight's shape.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LoraTarget {
    pub key: String,
    pub weight: String,
    pub shape: Vec<usize>,
}

/// The modules of a synthetic kohya LoRA for `cfg`: every weight of the model's own spec
/// list (linear [out, in] or conv [out, in, kh, kw]) whose module is one of
/// [`LORA_UNET_MODULES`] / [`LORA_TE_MODULES`], in the specs' order.
pub fn lora_targets(cfg: &Configs) -> Vec<LoraTarget> {
    let (_, _, _, specs) = build(cfg);
    let mut out = Vec::new();
    for s in specs {
        if s.shape.len() != 2 && s.shape.len() != 4 {
            continue;
        }
        let Some(full) = s.name.strip_suffix(".weight") else { continue };
        let Some((comp, m)) = full.split_once('/') else { continue };
        let (prefix, kinds): (&str, &[&str]) = match comp {
            "unet" => ("lora_unet_", &LORA_UNET_MODULES),
            "text_encoder" => ("lora_te_text_model_", &LORA_TE_MODULES),
            _ => continue,
        };
        if !kinds.iter().any(|k| m.ends_with(&format!(".{k}"))) {
            continue;
        }
        out.push(LoraTarget { key: format!("{prefix}{}", m.replace('.', "_")), weight: s.name.clone(), shape: s.shape.clone() });
    }
    out
}

/// What [`write_lora`] wrote.
#[derive(Clone, Debug, serde::Serialize)]
pub struct LoraFile {
    pub rank: usize,
    /// Modules of the UNet and of the text encoder.
    pub unet_modules: usize,
    pub text_encoder_modules: usize,
    /// Parameters of the factors (`lora_down` + `lora_up`, alphas left out).
    pub parameters: u64,
    /// Bytes of the file.
    pub bytes: u64,
}

/// Write a synthetic kohya LoRA of `rank` for `cfg` (f16, as LoRA files usually are): for each
/// module of [`lora_targets`] `KEY.lora_down.weight` [rank, in] (3×3 conv: [rank, in, 3, 3]),
/// `KEY.lora_up.weight` [out, rank] (conv: [out, rank, 1, 1]) and `KEY.alpha` = rank.
/// Values (seeded): down uniform in ±1/sqrt(fan_in), up in ±0.1/sqrt(rank), so the merged
/// change is a few per cent of a weight. Streamed: one tensor in memory at a time.
pub fn write_lora(path: &Path, cfg: &Configs, rank: usize, seed: u64) -> crate::Result<LoraFile> {
    if rank == 0 {
        return Err(crate::Error::Invalid("a LoRA needs a rank of at least 1".into()));
    }
    let targets = lora_targets(cfg);
    let mut entries = Vec::with_capacity(3 * targets.len());
    let mut parameters = 0u64;
    let overflow = || crate::Error::Invalid(format!("a LoRA of rank {rank} for this model has more parameters than 64 bits count"));
    for t in &targets {
        let (out, rest) = (t.shape[0], &t.shape[1..]);
        let fan_in: usize = rest.iter().product();
        let conv = t.shape.len() == 4;
        let mut down = vec![rank];
        down.extend_from_slice(rest);
        let up = if conv { vec![out, rank, 1, 1] } else { vec![out, rank] };
        for shape in [&down, &up] {
            let n = shape.iter().try_fold(1u64, |a, &d| a.checked_mul(d as u64)).ok_or_else(overflow)?;
            parameters = parameters.checked_add(n).ok_or_else(overflow)?;
        }
        entries.push(Entry { name: format!("{}.alpha", t.key), shape: Vec::new(), c: rank as f32, scale: 0.0 });
        entries.push(Entry { name: format!("{}.lora_down.weight", t.key), shape: down, c: 0.0, scale: 1.0 / (fan_in.max(1) as f32).sqrt() });
        entries.push(Entry { name: format!("{}.lora_up.weight", t.key), shape: up, c: 0.0, scale: 0.1 / (rank as f32).sqrt() });
    }
    let te = targets.iter().filter(|t| t.weight.starts_with("text_encoder/")).count();
    let mut meta = serde_json::Map::new();
    for (k, v) in [
        ("ss_network_module", "networks.lora".to_string()),
        ("ss_network_dim", rank.to_string()),
        ("ss_network_alpha", rank.to_string()),
        ("sd_webgpu_note", "synthetic random LoRA written by sd-webgpu synth".to_string()),
    ] {
        meta.insert(k.into(), serde_json::Value::String(v));
    }
    let bytes = write_entries(path, &entries, true, seed, Some(meta))?;
    Ok(LoraFile { rank, unet_modules: targets.len() - te, text_encoder_modules: te, parameters, bytes })
}

/// Write a diffusers folder with synthetic weights for `cfg` (SD-1.5 by default; with
/// `cfg.clip2`, an SDXL folder: `text_encoder_2/` and an XL `model_index.json`).
/// Returns the bytes written per component.
pub fn write_model(dir: &Path, cfg: &Configs, f16: bool) -> crate::Result<Vec<(String, u64)>> {
    let (_, _, _, specs) = build(cfg);
    let mk = |p: &Path| std::fs::create_dir_all(p).map_err(|e| io(p, e));
    mk(dir)?;
    let json = |p: &Path, v: serde_json::Value| -> crate::Result<()> {
        std::fs::write(p, serde_json::to_string_pretty(&v).unwrap_or_default()).map_err(|e| io(p, e))
    };
    let index = match (&cfg.clip2, &cfg.xl) {
        (Some(_), xl) => {
            let xl = xl.clone().unwrap_or_default();
            serde_json::json!({"_class_name": "StableDiffusionXLPipeline", "_note": "synthetic random weights written by sd-webgpu synth",
                "force_zeros_for_empty_prompt": xl.force_zeros_for_empty_prompt, "requires_aesthetics_score": xl.requires_aesthetics_score,
                "unet": ["diffusers", "UNet2DConditionModel"], "vae": ["diffusers", "AutoencoderKL"],
                "text_encoder": ["transformers", "CLIPTextModel"], "text_encoder_2": ["transformers", "CLIPTextModelWithProjection"],
                "scheduler": ["diffusers", "EulerDiscreteScheduler"]})
        }
        (None, _) => serde_json::json!({"_class_name": "StableDiffusionPipeline", "_note": "synthetic random weights written by sd-webgpu synth",
            "unet": ["diffusers", "UNet2DConditionModel"], "vae": ["diffusers", "AutoencoderKL"],
            "text_encoder": ["transformers", "CLIPTextModel"], "scheduler": ["diffusers", "PNDMScheduler"]}),
    };
    json(&dir.join("model_index.json"), index)?;
    let mut out = Vec::new();
    let mut comps = vec![
        ("unet", "diffusion_pytorch_model", serde_json::to_value(&cfg.unet)),
        ("vae", "diffusion_pytorch_model", serde_json::to_value(&cfg.vae)),
        ("text_encoder", "model", serde_json::to_value(&cfg.clip)),
    ];
    if let Some(c2) = &cfg.clip2 {
        comps.push(("text_encoder_2", "model", serde_json::to_value(c2)));
    }
    for (comp, base, cfgv) in comps {
        let cdir = dir.join(comp);
        mk(&cdir)?;
        json(&cdir.join("config.json"), cfgv.unwrap_or_default())?;
        let list: Vec<(String, Vec<usize>)> = specs
            .iter()
            .filter_map(|s| s.name.strip_prefix(&format!("{comp}/")).map(|n| (n.to_string(), s.shape.clone())))
            .collect();
        let file = cdir.join(if f16 { format!("{base}.fp16.safetensors") } else { format!("{base}.safetensors") });
        let n = write_safetensors(&file, &list, f16, comp.len() as u64 * 7919)?;
        out.push((comp.to_string(), n));
    }
    let sdir = dir.join("scheduler");
    mk(&sdir)?;
    let sched = if cfg.clip2.is_some() {
        // stabilityai/stable-diffusion-xl-base-1.0's scheduler.
        serde_json::json!({"_class_name": "EulerDiscreteScheduler", "beta_start": 0.00085, "beta_end": 0.012, "beta_schedule": "scaled_linear",
            "num_train_timesteps": 1000, "set_alpha_to_one": false, "skip_prk_steps": true, "steps_offset": 1, "prediction_type": "epsilon",
            "timestep_spacing": "leading", "interpolation_type": "linear", "use_karras_sigmas": false, "clip_sample": false, "sample_max_value": 1.0})
    } else {
        serde_json::json!({"_class_name": "PNDMScheduler", "beta_start": 0.00085, "beta_end": 0.012, "beta_schedule": "scaled_linear",
            "num_train_timesteps": 1000, "set_alpha_to_one": false, "skip_prk_steps": true, "steps_offset": 1, "prediction_type": "epsilon",
            "timestep_spacing": "leading", "clip_sample": false})
    };
    json(&sdir.join("scheduler_config.json"), sched)?;
    Ok(out)
}
