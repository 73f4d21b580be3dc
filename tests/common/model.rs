//! Loading the tiny reference model in tests (both runners).
#![allow(dead_code)]
use sd_webgpu::gpu::Gpu;
use sd_webgpu::model::config::{ClipConfig, UnetConfig, VaeConfig};
use sd_webgpu::model::{Configs, Dtypes, StableDiffusion, COMPONENTS};
use sd_webgpu::tokenizer::ClipTokenizer;
use sd_webgpu::weights::Layout;

use super::fixtures;

pub fn configs() -> Configs {
    let f = |c: &str| fixtures::text(&format!("model/{c}/config.json"));
    Configs {
        unet: UnetConfig::from_json("unet/config.json", &f("unet")).unwrap(),
        vae: VaeConfig::from_json("vae/config.json", &f("vae")).unwrap(),
        clip: ClipConfig::from_json("text_encoder/config.json", &f("text_encoder")).unwrap(),
        ..Configs::default()
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
pub fn load_bytes(gpu: &Gpu, dtype: impl Into<Dtypes>, files: &[(&str, Layout)]) -> StableDiffusion {
    let files: Vec<(String, Vec<u8>, Layout)> = files.iter().map(|(rel, l)| (rel.to_string(), fixtures::bytes(rel), l.clone())).collect();
    load_named(gpu, dtype, configs(), &COMPONENTS, files)
}

/// Stream `(name, bytes, layout)` files (1 MiB chunks) into the `components` of a model.
pub fn load_named(gpu: &Gpu, dtypes: impl Into<Dtypes>, cfg: Configs, components: &[&str], files: Vec<(String, Vec<u8>, Layout)>) -> StableDiffusion {
    let dtypes = dtypes.into();
    let mut loader = StableDiffusion::loader(gpu, &cfg, dtypes, components);
    for (name, b, layout) in files {
        loader.begin(&name, Some(b.len() as u64), layout);
        for chunk in b.chunks(1 << 20) {
            loader.feed(chunk).unwrap_or_else(|e| panic!("{name}: {e}"));
        }
        loader.end().unwrap_or_else(|e| panic!("{name}: {e}"));
    }
    StableDiffusion::from_loader(cfg, dtypes, loader).expect("all weights present")
}

/// The `sd15-realconfig` model of the v2 reference: its own text encoder file (keys with the
/// real repos' `text_model.` prefix); its UNet and VAE files are byte-identical to tiny-sd15's
/// (same weights, checked by SHA-256), which are used so the browser tests embed them once.
pub fn load_realconfig(gpu: &Gpu, dtypes: impl Into<Dtypes>) -> StableDiffusion {
    let te = "sd15-realconfig/model/text_encoder/model.safetensors";
    let files = vec![
        (te.to_string(), fixtures::file(te), Layout::Component("text_encoder".into())),
        ("model/unet/diffusion_pytorch_model.safetensors".to_string(), fixtures::bytes("model/unet/diffusion_pytorch_model.safetensors"), Layout::Component("unet".into())),
        ("model/vae/diffusion_pytorch_model.safetensors".to_string(), fixtures::bytes("model/vae/diffusion_pytorch_model.safetensors"), Layout::Component("vae".into())),
    ];
    load_named(gpu, dtypes, configs(), &COMPONENTS, files)
}

/// The real SD-1.5 tokenizer files of `sd15-realconfig` (vocab.json and merges.txt are
/// byte-identical to tiny-sd15's; its tokenizer_config.json has the real repo's AddedToken layout).
pub fn realconfig_tokenizer() -> ClipTokenizer {
    ClipTokenizer::from_vocab_merges(
        &fixtures::text("model/tokenizer/vocab.json"),
        &fixtures::text("model/tokenizer/merges.txt"),
        Some(&fixtures::file_text("sd15-realconfig/model/tokenizer/tokenizer_config.json")),
    )
    .expect("tokenizer")
}

pub fn tokenizer() -> ClipTokenizer {
    ClipTokenizer::from_vocab_merges(
        &fixtures::text("model/tokenizer/vocab.json"),
        &fixtures::text("model/tokenizer/merges.txt"),
        Some(&fixtures::text("model/tokenizer/tokenizer_config.json")),
    )
    .expect("tokenizer")
}
