//! Loading the tiny reference model in tests (both runners).
#![allow(dead_code)]
use sd_webgpu::gpu::{DType, Gpu};
use sd_webgpu::model::config::{ClipConfig, UnetConfig, VaeConfig};
use sd_webgpu::model::{Configs, StableDiffusion, COMPONENTS};
use sd_webgpu::tokenizer::ClipTokenizer;
use sd_webgpu::weights::Layout;

use super::fixtures;

pub fn configs() -> Configs {
    let f = |c: &str| fixtures::text(&format!("model/{c}/config.json"));
    Configs {
        unet: UnetConfig::from_json("unet/config.json", &f("unet")).unwrap(),
        vae: VaeConfig::from_json("vae/config.json", &f("vae")).unwrap(),
        clip: ClipConfig::from_json("text_encoder/config.json", &f("text_encoder")).unwrap(),
    }
}

pub fn fp32_files() -> Vec<(&'static str, Layout)> {
    vec![
        ("model/text_encoder/model.safetensors", Layout::Component("text_encoder".into())),
        ("model/unet/diffusion_pytorch_model.safetensors", Layout::Component("unet".into())),
        ("model/vae/diffusion_pytorch_model.safetensors", Layout::Component("vae".into())),
    ]
}

/// Load from in-memory files through the streaming loader (1 MiB chunks), as the
/// browser does with fetch().
pub fn load_bytes(gpu: &Gpu, dtype: DType, files: &[(&str, Layout)]) -> StableDiffusion {
    let cfg = configs();
    let mut loader = StableDiffusion::loader(gpu, &cfg, dtype, &COMPONENTS);
    for (rel, layout) in files {
        let b = fixtures::bytes(rel);
        loader.begin(rel, Some(b.len() as u64), layout.clone());
        for chunk in b.chunks(1 << 20) {
            loader.feed(chunk).unwrap_or_else(|e| panic!("{rel}: {e}"));
        }
        loader.end().unwrap_or_else(|e| panic!("{rel}: {e}"));
    }
    StableDiffusion::from_loader(cfg, dtype, loader).expect("all weights present")
}

pub fn tokenizer() -> ClipTokenizer {
    ClipTokenizer::from_vocab_merges(
        &fixtures::text("model/tokenizer/vocab.json"),
        &fixtures::text("model/tokenizer/merges.txt"),
        Some(&fixtures::text("model/tokenizer/tokenizer_config.json")),
    )
    .expect("tokenizer")
}
