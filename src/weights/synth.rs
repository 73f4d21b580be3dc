//! Synthetic weights with the exact shapes of a model (SD-1.5 by default), written as a
//! diffusers folder of `*.fp16.safetensors` (or fp32) files, tensor by tensor (never the
//! whole file in memory). Values: uniform in ±1/sqrt(fan_in) for weights (keeps
//! activations in range), 1 for norm scales, small for biases. Deterministic per seed.
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

/// Write one safetensors file of `specs` (names without the component prefix).
pub fn write_safetensors(path: &Path, specs: &[(String, Vec<usize>)], f16: bool, seed: u64) -> crate::Result<u64> {
    let es = if f16 { 2u64 } else { 4 };
    let mut header = serde_json::Map::new();
    let mut off = 0u64;
    for (name, shape) in specs {
        let n: u64 = shape.iter().map(|&d| d as u64).product::<u64>() * es;
        header.insert(
            name.clone(),
            serde_json::json!({"dtype": if f16 { "F16" } else { "F32" }, "shape": shape, "data_offsets": [off, off + n]}),
        );
        off += n;
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
    for (name, shape) in specs {
        let (c, scale) = value_scale(&Spec { name: name.clone(), shape: shape.clone() });
        let n: usize = shape.iter().product();
        buf.clear();
        for _ in 0..n {
            let v = c + scale * rng.next();
            if f16 {
                buf.extend_from_slice(&half::f16::from_f32(v).to_le_bytes());
            } else {
                buf.extend_from_slice(&v.to_le_bytes());
            }
        }
        w.write_all(&buf).map_err(|e| io(path, e))?;
    }
    w.flush().map_err(|e| io(path, e))?;
    Ok(8 + h.len() as u64 + off)
}

/// Write a diffusers folder with synthetic weights for `cfg` (SD-1.5 by default).
/// Returns the bytes written per component.
pub fn write_model(dir: &Path, cfg: &Configs, f16: bool) -> crate::Result<Vec<(String, u64)>> {
    let (_, _, _, specs) = build(cfg);
    let mk = |p: &Path| std::fs::create_dir_all(p).map_err(|e| io(p, e));
    mk(dir)?;
    let json = |p: &Path, v: serde_json::Value| -> crate::Result<()> {
        std::fs::write(p, serde_json::to_string_pretty(&v).unwrap_or_default()).map_err(|e| io(p, e))
    };
    json(
        &dir.join("model_index.json"),
        serde_json::json!({"_class_name": "StableDiffusionPipeline", "_note": "synthetic random weights written by sd-webgpu synth",
            "unet": ["diffusers", "UNet2DConditionModel"], "vae": ["diffusers", "AutoencoderKL"],
            "text_encoder": ["transformers", "CLIPTextModel"], "scheduler": ["diffusers", "PNDMScheduler"]}),
    )?;
    let mut out = Vec::new();
    for (comp, base, cfgv) in [
        ("unet", "diffusion_pytorch_model", serde_json::to_value(&cfg.unet)),
        ("vae", "diffusion_pytorch_model", serde_json::to_value(&cfg.vae)),
        ("text_encoder", "model", serde_json::to_value(&cfg.clip)),
    ] {
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
    json(
        &sdir.join("scheduler_config.json"),
        serde_json::json!({"_class_name": "PNDMScheduler", "beta_start": 0.00085, "beta_end": 0.012, "beta_schedule": "scaled_linear",
            "num_train_timesteps": 1000, "set_alpha_to_one": false, "skip_prk_steps": true, "steps_offset": 1, "prediction_type": "epsilon",
            "timestep_spacing": "leading", "clip_sample": false}),
    )?;
    Ok(out)
}
